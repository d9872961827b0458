//! Fork safety. rawthread's two process-wide locks (the region pool and
//! the libc states kept aside) are taken around `fork()`, as glibc takes
//! its own (malloc's, the loader's): a child forked while another thread
//! held one would otherwise find it locked forever, and block in its first
//! spawn.

use std::cell::RefCell;
use std::sync::{MutexGuard, Once};

use crate::{glibc, pool};

type Held = (MutexGuard<'static, pool::Pool>, MutexGuard<'static, Vec<u8>>);

thread_local! {
    /// The locks the forking thread holds from `prepare` to `release`.
    static HELD: RefCell<Option<Held>> = const { RefCell::new(None) };
}

/// Before fork, in the forking thread. Always in this order; no code path
/// holds one of the two while taking the other.
extern "C" fn prepare() {
    let held = (pool::lock(), glibc::libc_states());
    HELD.with_borrow_mut(|h| *h = Some(held));
}

/// After fork, in the parent and in the child (whose only thread is the
/// forking thread's copy, holding the copied locks).
extern "C" fn release() {
    HELD.with_borrow_mut(|h| drop(h.take()));
}

/// Registers the handlers, once per process.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain extern "C" functions without arguments, valid for
        // the life of the process.
        unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
    });
}
