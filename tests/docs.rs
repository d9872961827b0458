//! The project's docs agree with each other and stand on their own: the
//! crate docs' known limits are the README's, and neither points at files
//! outside the repository.

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The bullets of a known-limits section, each as one line of words.
fn bullets(lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in lines {
        let line = line.trim();
        if let Some(first) = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")) {
            out.push(first.to_string());
        } else if let Some(last) = out.last_mut().filter(|_| !line.is_empty()) {
            last.push(' ');
            last.push_str(line);
        }
    }
    out
}

#[test]
fn crate_docs_and_readme_list_the_same_known_limits() {
    let readme = read("README.md");
    let readme: Vec<String> = readme
        .lines()
        .skip_while(|l| *l != "## Known limits")
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .map(str::to_string)
        .collect();
    let lib = read("src/lib.rs");
    let crate_docs: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .skip_while(|l| l.trim() != "# Known limits")
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('#'))
        .map(str::to_string)
        .collect();
    let (readme, crate_docs) = (bullets(readme.into_iter()), bullets(crate_docs.into_iter()));
    assert!(readme.len() >= 5, "the README lists its known limits: {readme:#?}");
    assert_eq!(crate_docs, readme, "src/lib.rs and README.md must list the same known limits");
}

#[test]
fn docs_point_at_nothing_outside_the_repository() {
    let mut files = vec!["README.md".to_string()];
    for dir in ["src", "src/glibc", "tests", "benches/spawn", "examples"] {
        for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                files.push(path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display().to_string());
            }
        }
    }
    // Spelt in two halves, so that this file does not match itself.
    let pointers = [concat!("../", "shared"), concat!("shared/", "design"), concat!("design ", "note")];
    for file in files {
        let text = read(&file);
        for pointer in pointers {
            assert!(!text.contains(pointer), "{file} points at {pointer:?}, outside the repository");
        }
    }
}

/// The public items declared in `file`'s text (functions, types, constants,
/// modules: what `pub` without a restriction opens), each with the doc
/// comment above it (attributes skipped), by line number.
fn public_items(text: &str) -> Vec<(usize, String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let kinds = ["pub fn ", "pub unsafe fn ", "pub const fn ", "pub struct ", "pub enum ", "pub const ", "pub static "];
    let mut items = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        if !kinds.iter().any(|k| code.starts_with(k)) {
            continue;
        }
        let mut doc = Vec::new();
        for above in lines[..i].iter().rev().map(|l| l.trim_start()) {
            if let Some(d) = above.strip_prefix("///") {
                doc.push(d);
            } else if !above.starts_with("#[") {
                break;
            }
        }
        doc.reverse();
        items.push((i + 1, code.to_string(), doc.join("\n")));
    }
    items
}

#[test]
fn every_public_item_has_an_example() {
    let mut missing = Vec::new();
    let mut seen = 0;
    for dir in ["src", "src/glibc"] {
        for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let file = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display().to_string();
            for (line, item, doc) in public_items(&read(&file)) {
                seen += 1;
                if !doc.contains("```") {
                    missing.push(format!("{file}:{line}: {item}"));
                }
            }
        }
    }
    assert!(seen > 30, "found only {seen} public items");
    assert!(missing.is_empty(), "public items without a doc example:\n{}", missing.join("\n"));
}
