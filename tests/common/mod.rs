//! Shared by the integration tests: running one test in a child process,
//! for what may crash, change process-wide state or measure the process.

#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Command, Output};

const CHILD_ENV: &str = "RAWTHREAD_TEST_CHILD";

/// True in the child process started by [`run_child`] for test `name`.
pub fn in_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// Re-runs this test binary with only test `name`, marked as the child.
pub fn run_child(name: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .expect("re-running the test binary")
}

/// [`run_child`], asserting the child passed; returns its stdout.
pub fn run_child_ok(name: &str) -> String {
    let out = run_child(name);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {name} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Resident set size in bytes.
pub fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Number of mappings.
pub fn maps() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().count()
}

/// Number of open file descriptors.
pub fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Number of tasks (threads) in this process.
pub fn tasks() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}
