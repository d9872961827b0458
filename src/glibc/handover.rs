//! The per-thread state glibc frees only in its own thread exit, handed
//! from thread to thread instead: malloc's (where it lies) and the vDSO
//! `getrandom` state; and the states of threads whose regions were
//! unmapped, kept for the next fresh regions.

use std::sync::{Mutex, MutexGuard};

/// The most words malloc's per-thread state may take (2: the tcache and
/// the arena, in glibc 2.35 to 2.43).
pub(super) const MALLOC_WORDS_MAX: usize = 4;

/// A thread's malloc state (see [`MallocWords`]): its tcache, with
/// the chunks cached there, and its arena binding. glibc frees the cache
/// and unbinds the arena only in its private thread clean-up
/// (`__libc_thread_freeres`), so rawthread hands the state on to the next
/// thread instead of leaking it with every thread: kept in place when a
/// region is reused, kept in [`MALLOC_STATES`] when one is unmapped.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MallocState(pub(super) [usize; MALLOC_WORDS_MAX]);

/// Where a thread's malloc state lies: how far below tp lie the words of
/// libc's TLS that a thread's first malloc writes (found by the probe), and
/// their values in a thread that has not used malloc yet.
#[derive(Clone, Copy, Default)]
pub(crate) struct MallocWords {
    pub(super) count: usize,
    pub(super) below_tp: [usize; MALLOC_WORDS_MAX],
    pub(super) fresh: MallocState,
}

impl MallocWords {
    /// The malloc state of the thread block at `tp`.
    ///
    /// # Safety
    /// `tp` is a thread block no running thread uses, or the caller's own.
    pub(super) unsafe fn read(&self, tp: usize) -> MallocState {
        let mut state = MallocState::default();
        for (value, &below) in state.0.iter_mut().zip(&self.below_tp[..self.count]) {
            // SAFETY: per the contract; the words are inside libc's TLS.
            *value = unsafe { *((tp - below) as *const usize) };
        }
        state
    }

    /// Gives the thread block at `tp` this malloc state.
    ///
    /// # Safety
    /// As [`MallocWords::read`].
    pub(super) unsafe fn write(&self, tp: usize, state: &MallocState) {
        for (&value, &below) in state.0.iter().zip(&self.below_tp[..self.count]) {
            // SAFETY: as in read.
            unsafe { *((tp - below) as *mut usize) = value };
        }
    }
}

/// What a thread leaves the next one: its malloc state and its vDSO
/// `getrandom` state (`struct pthread`'s `getrandom_buf`, glibc 2.41 and
/// later), which glibc puts back in its pool only in its own thread exit
/// (`__getrandom_vdso_release`, which it does not export). Handed on, each
/// state is reused by the next thread, so the process keeps one per
/// thread alive at once, as glibc's pool does; dropped, every raw thread
/// that called `getrandom()` would leave one behind.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Legacy {
    pub(super) malloc: MallocState,
    pub(super) getrandom: usize,
}

/// Legacies (see [`Legacy`]) of threads whose regions were unmapped, for
/// the next fresh regions. It holds at most one per thread that was alive
/// at once, since every fresh region takes one.
static LEGACIES: Mutex<Vec<Legacy>> = Mutex::new(Vec::new());

/// [`LEGACIES`], locked (a panic while it was held leaves plain words).
pub(crate) fn legacies() -> MutexGuard<'static, Vec<Legacy>> {
    LEGACIES.lock().unwrap_or_else(|e| e.into_inner())
}
