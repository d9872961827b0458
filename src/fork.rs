//! Fork safety. rawthread's three process-wide locks (the first spawn's
//! census, the region pool and the malloc states kept aside) are taken
//! around `fork()`, as glibc takes
//! its own (malloc's, the loader's): a child forked while another thread
//! held one would otherwise find it locked forever, and block in its first
//! spawn.
//!
//! Every thread registers the handlers (once per process) before it first
//! takes any of them, so a fork that finds a lock taken also runs them.
//! The registration itself is not a `Once`, which a fork could catch
//! half-done: racing threads may both register, and the handlers then run
//! twice per fork, the second time doing nothing.

use std::cell::RefCell;
use std::sync::MutexGuard;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{glibc, pool};

type Held = (MutexGuard<'static, ()>, MutexGuard<'static, pool::Pool>, MutexGuard<'static, Vec<glibc::Legacy>>);

thread_local! {
    /// The locks the forking thread holds from `prepare` to `release`.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Before fork, in the forking thread. Always in this order: the census
/// (which spawns, taking the other two, while it holds its lock), then the
/// pool and the kept states (no code path holds one of those two while
/// taking the other).
extern "C" fn prepare() {
    if HELD.with_borrow(Option::is_none) {
        let held = (glibc::census_lock(), pool::lock(), glibc::legacies());
        HELD.with_borrow_mut(|h| *h = Some(held));
    }
}

/// After fork, in the parent and in the child (whose only thread is the
/// forking thread's copy, holding the copied locks).
extern "C" fn release() {
    HELD.with_borrow_mut(|h| drop(h.take()));
}

/// Registers the handlers, once per process.
pub(crate) fn install() {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if !INSTALLED.load(Ordering::Relaxed) && !INSTALLED.swap(true, Ordering::Relaxed) {
        // SAFETY: plain extern "C" functions without arguments, valid for
        // the life of the process.
        unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
    }
}
