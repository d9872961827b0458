//! The anatomy of one raw thread: where its guard, stack, TLS, TCB and tid
//! word lie, and the clone flags that made it. Read it beside the kernel's
//! view of the same spawn:
//!
//!     cargo run --example anatomy
//!     strace -f -e clone3,clone,rseq,sigaltstack cargo run --example anatomy

use std::ops::Range;
use std::sync::mpsc;

fn row(name: &str, r: &Range<usize>, what: &str) {
    println!("  {:#014x}..{:#014x}  {:>9} B  {name:<11} {what}", r.start, r.end, r.end - r.start);
}

/// How the page at `addr` is guarded: a guard marker shows in
/// /proc/self/pagemap (bit 58, PM_GUARD_REGION), not in /proc/self/maps.
fn guard_kind(addr: usize) -> &'static str {
    use std::os::unix::fs::FileExt;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut entry = [0u8; 8];
    let pagemap =
        std::fs::File::open("/proc/self/pagemap").and_then(|f| f.read_exact_at(&mut entry, (addr / page * 8) as u64));
    match pagemap {
        Ok(()) if u64::from_ne_bytes(entry) & (1 << 58) != 0 => "guard marker",
        _ => "PROT_NONE",
    }
}

/// The mappings of /proc/self/maps that overlap `r`.
fn mappings(r: &Range<usize>) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let bounds = |line: &str| {
        let (start, rest) = line.split_once('-')?;
        let end = rest.split(' ').next()?;
        Some((usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?))
    };
    maps.lines().filter_map(bounds).filter(|&(start, end)| start < r.end && r.start < end).count()
}

pub fn main() {
    let (tx, rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let handle = rawthread::Builder::new()
        .name("anatomy".into())
        .stack_size(256 << 10)
        .spawn(move || {
            let local = 0u8;
            // SAFETY: pthread_self has no preconditions; on x86_64 glibc it
            // returns the thread pointer (%fs base).
            let tp = unsafe { libc::pthread_self() } as usize;
            tx.send((std::ptr::from_ref(&local) as usize, tp)).unwrap();
            done_rx.recv().unwrap();
        })
        .unwrap();
    let (a_local, tp) = rx.recv().unwrap();
    let layout = handle.layout();

    println!("thread tid {} (named \"anatomy\"), made with:", handle.tid());
    let flags: Vec<&str> = rawthread::THREAD_CLONE_FLAGS.iter().map(|(name, _)| *name).collect();
    println!("  {}", flags.join("|"));
    println!("  via {}", if rawthread::uses_clone3() == Some(true) { "clone3" } else { "clone (clone3 refused)" });
    let region = &layout.region;
    println!(
        "\nits region, one mmap of {} B, now {} mapping(s) in /proc/self/maps, low to high addresses:",
        region.end - region.start,
        mappings(region)
    );
    let what = |kind: &str, faults: &str| format!("{kind}: {faults} faults here");
    let kind = guard_kind(layout.guard.start);
    row("guard", &layout.altstack_guard, &what(kind, "a handler overrunning the signal stack"));
    row("altstack", &layout.altstack, "alternate signal stack for the overflow report");
    row("guard", &layout.guard, &what(kind, "a stack overflow"));
    row("stack", &layout.stack, "grows down from its end");
    row("record", &layout.record, "start record: closure in, result out");
    row("resolver", &layout.resolver, "struct __res_state for this thread");
    row("static TLS", &layout.static_tls, "every module's TLS block, from its init image");
    row("TCB", &layout.tcb, "glibc's struct pthread; starts at the thread pointer");
    let tid_offset = layout.tid_word - layout.tcb.start;
    println!(
        "\n  tid word    {:#014x}  (TCB + {tid_offset}): CLONE_PARENT_SETTID writes the tid here,",
        layout.tid_word
    );
    let exit_offset = layout.exit_word - layout.tcb.start;
    println!(
        "  exit word   {:#014x}  (TCB + {exit_offset}): CLONE_CHILD_CLEARTID zeroes it at exit; join sleeps on it",
        layout.exit_word
    );
    println!("                             (the tid word itself up to glibc 2.42, `joinstate` from 2.43)");
    println!("  %fs base    {tp:#014x}  (read in the thread: pthread_self())");
    println!("  a local     {a_local:#014x}  ({} B below the stack's top)", layout.stack.end - a_local);
    println!(
        "\n  guards: {kind}s{}",
        if kind == "guard marker" {
            " (madvise MADV_GUARD_INSTALL: the region stays one mapping; /proc/self/pagemap bit 58 shows them)"
        } else {
            " (guard markers refused: each guard is a mapping of its own)"
        }
    );
    assert_eq!(tp, layout.tcb.start);
    assert!(layout.stack.contains(&a_local));

    done_tx.send(()).unwrap();
    handle.join().unwrap();
}
