//! Joining: waiting until the kernel clears a thread's tid word at its
//! exit, and when a joiner should spin on the word rather than sleep.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::lazy::LazyUsize;
use crate::sys;

/// How long a joiner watches the tid word before it sleeps: about what a
/// futex sleep and wake-up cost (about 9 µs of a spawn+join measured on a
/// 2-vCPU VM, where the joiner's idle vCPU must be woken through the host).
/// Spinning that long first never costs more than twice the better choice
/// (the classic spin-then-block bound), and saves the wake-up whenever the
/// thread ends soon, as short-lived threads do; a long-lived one costs its
/// joiner 10 µs of CPU.
const SPIN_BEFORE_SLEEP_NS: u64 = 10_000;

/// Whether a joiner may spin: not when this process can use a single CPU,
/// where the thread it waits for could not run meanwhile.
fn spinning_pays() -> bool {
    static CPUS: LazyUsize = LazyUsize::new();
    CPUS.get(|| std::thread::available_parallelism().map_or(1, |n| n.get())) > 1
}

/// Waits until the kernel clears a thread's tid word at its exit
/// (CLONE_CHILD_CLEARTID): a short spin (see [`SPIN_BEFORE_SLEEP_NS`]),
/// then a futex sleep until the kernel's wake.
pub(crate) fn wait_for_exit(word: &AtomicI32) {
    wait_for_exit_within(word, None);
}

/// [`wait_for_exit`], giving up after `timeout_ns` if given; returns
/// whether the thread has exited.
pub(crate) fn wait_for_exit_within(word: &AtomicI32, timeout_ns: Option<u64>) -> bool {
    if word.load(Ordering::Acquire) == 0 {
        return true;
    }
    let start = sys::now_ns();
    let left = || timeout_ns.map(|t| t.saturating_sub(sys::now_ns() - start));
    if spinning_pays() {
        let spin = timeout_ns.map_or(SPIN_BEFORE_SLEEP_NS, |t| t.min(SPIN_BEFORE_SLEEP_NS));
        while sys::now_ns() - start < spin {
            for _ in 0..16 {
                if word.load(Ordering::Acquire) == 0 {
                    return true;
                }
                std::hint::spin_loop();
            }
        }
    }
    loop {
        match (word.load(Ordering::Acquire), left()) {
            (0, _) => return true,
            (_, Some(0)) => return false,
            (tid, left) => sys::futex_wait(word, tid, left),
        }
    }
}
