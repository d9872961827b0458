//! Joining: waiting until the kernel clears a thread's tid word at its
//! exit (CLONE_CHILD_CLEARTID), by sleeping on it at once, as
//! `pthread_join` does.
//!
//! Why no spin first: a joiner that spins instead of sleeping keeps its
//! vCPU from halting, and on a VM the wake of a halted vCPU goes through
//! the host, so a spin that sees the exit saves wall time; but it is paid
//! in CPU, and lost when the machine is busy. Measured by `cargo bench`
//! against its sleep-at-once variant (December 2026, the 2-vCPU VM of this
//! project): a 10 µs spin before the sleep took 0.77x the wall median idle
//! but 1.05x the CPU, and 1.33x the wall and 1.15x the CPU with the other
//! CPU busy. A spin that each joiner turns on only while its own recent
//! joins caught the exit within the spin (and off after a few misses) was
//! even under load (1.00x wall, 1.01x CPU), but idle it swung from run to
//! run with the host's load: with a 10 µs spin from 0.73x to 1.06x the
//! wall and from 0.97x to 1.08x the CPU; an 8 µs one gained less and still
//! lost in some runs. A join must never cost more than sleeping at once,
//! so it sleeps at once.

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
