//! Process-wide values computed on first use, in a way that survives
//! `fork()`: nothing here is ever waited on.
//!
//! A `Once` or `OnceLock` makes other threads wait while one computes. If
//! some thread forks at that instant, the child inherits the cell as
//! "being computed" by a thread that does not exist in the child, and its
//! first spawn or join waits forever. So every lazily computed value that
//! spawn, join or detach reads is computed by whichever thread needs it
//! first, racing threads each compute it (the same value), and the first
//! to publish wins. A child forked at any instant finds either the
//! published value or nothing, and then computes it itself.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// A non-zero `usize` computed on first use.
pub(crate) struct LazyUsize(AtomicUsize);

impl LazyUsize {
    pub(crate) const fn new() -> LazyUsize {
        LazyUsize(AtomicUsize::new(0))
    }

    /// The value, computing it with `init` (which must give the same
    /// non-zero value every time) if no thread has published it yet.
    pub(crate) fn get(&self, init: impl FnOnce() -> usize) -> usize {
        match self.0.load(Ordering::Relaxed) {
            0 => {
                let value = init();
                debug_assert_ne!(value, 0);
                self.0.store(value, Ordering::Relaxed);
                value
            }
            value => value,
        }
    }
}

/// A `T` computed on first use and kept for the life of the process.
pub(crate) struct LazyBox<T>(AtomicPtr<T>);

impl<T> LazyBox<T> {
    pub(crate) const fn new() -> LazyBox<T> {
        LazyBox(AtomicPtr::new(std::ptr::null_mut()))
    }

    /// The published value, if any.
    pub(crate) fn get(&self) -> Option<&'static T> {
        // SAFETY: a non-null pointer was leaked by `publish` and is never
        // freed; Acquire pairs with its Release.
        unsafe { self.0.load(Ordering::Acquire).as_ref() }
    }

    /// Publishes `value` unless another thread was first; returns the value
    /// that stays and, if ours lost, ours back.
    pub(crate) fn publish(&self, value: T) -> (&'static T, Option<T>) {
        let ours = Box::into_raw(Box::new(value));
        match self.0.compare_exchange(std::ptr::null_mut(), ours, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: leaked just above, never freed.
            Ok(_) => (unsafe { &*ours }, None),
            // SAFETY: `theirs` was leaked by the winner; `ours` was never
            // shared, so we take it back.
            Err(theirs) => unsafe { (&*theirs, Some(*Box::from_raw(ours))) },
        }
    }
}
