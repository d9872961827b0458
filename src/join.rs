//! Joining: waiting until the kernel clears a thread's tid word at its
//! exit (CLONE_CHILD_CLEARTID), by sleeping on it at once, as
//! `pthread_join` does.
//!
//! Why no spin first: rawthread's join once watched the word for up to
//! 10 µs before it slept, to save the sleep and wake-up. Measured by
//! `cargo bench` against its sleep-at-once variant, interleaved in one run
//! (December 2026), on the 2-vCPU VM the spin took 1.41x the wall median
//! and 1.23x the CPU idle, 1.42x and 1.23x with the other CPU busy. A short-lived thread is rarely
//! done within the spin (it had often not even started), and while the
//! joiner spins it holds the CPU the thread may be queued on. A spin only
//! on a thread already past its closure and on another CPU lost too (1.20x
//! idle, 1.03x busy): the kernel's own exit outlasts it.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::sys;

/// Sleeps until the kernel clears a thread's tid word at its exit.
pub(crate) fn wait_for_exit(word: &AtomicI32) {
    wait_for_exit_within(word, None);
}

/// [`wait_for_exit`], giving up after `timeout_ns` if given; returns
/// whether the thread has exited.
pub(crate) fn wait_for_exit_within(word: &AtomicI32, timeout_ns: Option<u64>) -> bool {
    let start = timeout_ns.map(|_| sys::now_ns());
    loop {
        let left = timeout_ns.zip(start).map(|(t, start)| t.saturating_sub(sys::now_ns() - start));
        match (word.load(Ordering::Acquire), left) {
            (0, _) => return true,
            (_, Some(0)) => return false,
            // A shared wait: the kernel's wake at exit is a shared wake.
            (tid, left) => sys::futex_wait(word, tid, left),
        }
    }
}
