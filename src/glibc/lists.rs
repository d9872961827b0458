//! glibc's thread list: every raw thread is a member of `_dl_stack_user`,
//! the list glibc keeps of the threads whose stacks it did not allocate
//! (the main thread is on it), so that glibc's own code reaches raw
//! threads as it reaches its own:
//!
//! * `setuid`, `setgid`, `setgroups`, `seteuid`, `setresuid` and their kin
//!   (`__nptl_setxid`) mark every listed thread, signal it with SIGSETXID
//!   and wait until its handler has made the same system call: Linux keeps
//!   credentials per thread, and an unlisted thread keeps the old ones;
//! * `dlopen` of a library with initial-exec TLS (`_dl_init_static_tls`)
//!   initialises the library's block in every listed thread's static TLS;
//! * `dlclose` (`__thread_gscope_wait`) waits for every listed thread that
//!   is inside a symbol lookup before it frees what the lookup reads;
//! * gdb (libthread_db) finds listed threads as threads.
//!
//! All of them walk the lists under `_dl_stack_cache_lock`, reading only
//! fields glibc itself keeps at fixed places, and a thread must stay
//! mapped while it is listed. The protocol, which mirrors nptl's:
//!
//! * **Joining** ([`list`]): the creator adds the child's zeroed block
//!   before it fills its TLS (so that a `dlopen` meanwhile initialises its
//!   library there too) and long before `clone`, under the lock, with its
//!   tid word still 0. A setxid that starts after
//!   that marks the child; while the tid word is 0 its signal cannot be
//!   sent, so it goes on to the next round. It cannot finish without the
//!   creator's acknowledgement (the creator is listed too), and the creator
//!   either acknowledges before `clone`, so the child inherits the new
//!   credentials (a SIGSETXID that arrives during the `clone` aborts it,
//!   and the kernel restarts it after the handler), or after `clone` has
//!   returned, when the kernel has written the tid and the setxid's next
//!   round signals the child, which may take SIGSETXID from its first
//!   instruction. The creator must not have its signals blocked while it
//!   waits for the lock: a setxid holding the lock would wait for it
//!   forever.
//! * **Leaving** ([`unlist`]): the thread, when its last user code has
//!   run, takes the lock with its signals still open. A setxid holds the
//!   lock from its first mark to its last acknowledgement, so the thread
//!   gets the lock only once any setxid under way is done with it (its
//!   SIGSETXID handled while it waited), and it leaves the list before any
//!   other starts. Only then does it exit, or block its signals and give
//!   its region away (detached). glibc's own threads stay listed after
//!   they block their signals, so they flag themselves EXITING and answer
//!   a pending SIGSETXID before that; a raw thread, off the list first,
//!   needs neither. What it runs after leaving touches no credentials and
//!   makes no symbol lookup (every function it calls was bound before).
//!   A signal handler that runs on a joinable thread in that last moment,
//!   before its `SYS_exit`, is on an unlisted thread: a `setuid()` or
//!   `dlopen` that starts meanwhile does not reach it.
//!   A spawn whose `clone` failed takes its block off the list the same
//!   way.
//! * **fork()**: glibc's child re-initialises both lists and re-adds the
//!   forking thread alone, to the list its `user_stack` field names: raw
//!   threads say "user" (written at the block's start), for a thread on
//!   `_dl_stack_used` would be taken for a free glibc stack and reused.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use super::layout::*;
use crate::sys;

/// A glibc low-level lock, held (`_dl_stack_cache_lock`, a thread's
/// `exit_lock`): glibc's `lll_lock` on a private futex (0 free, 1 taken, 2
/// taken with waiters).
pub(super) struct Held<'a>(&'a AtomicI32);

impl Held<'_> {
    /// Takes the lock `word` as glibc's `lll_lock` does.
    pub(super) fn lock(word: &AtomicI32) -> Held<'_> {
        if word.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while word.swap(2, Ordering::Acquire) != 0 {
                sys::futex_wait_private(word, 2);
            }
        }
        Held(word)
    }
}

impl Lists {
    fn lock_word(&self) -> &AtomicI32 {
        // SAFETY: an aligned int in ld.so's data, alive for the process.
        unsafe { AtomicI32::from_ptr(self.lock as *mut i32) }
    }

    /// Frees the lock, in a process child that is the only thread there is,
    /// as glibc's `fork` does in its child (`fork_system_setup_after_fork`).
    pub(super) fn reset_lock(&self) {
        self.lock_word().store(0, Ordering::Relaxed);
    }

    /// Takes the lock as glibc's `lll_lock` does.
    pub(super) fn lock(&self) -> Held<'_> {
        Held::lock(self.lock_word())
    }

    /// Takes the lock if it is free now (the probe's first step, on a
    /// word not yet proven to be the lock).
    pub(super) fn try_lock(&self) -> Option<Held<'_>> {
        let word = self.lock_word();
        // `then`, not `then_some`: a `Held` made on failure would release,
        // as it drops, the lock somebody else holds.
        word.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok().then(|| Held(word))
    }

    /// Whether a thread waits for the lock we hold: `lll_lock` writes 2
    /// before it sleeps.
    pub(super) fn has_waiter(&self, _held: &Held<'_>) -> bool {
        self.lock_word().load(Ordering::Relaxed) == 2
    }

    /// Every thread on both lists, as `struct pthread` addresses, with
    /// whether it is on `_dl_stack_user`; `None` if a list is not a sound
    /// doubly linked ring.
    pub(super) fn threads(&self, list_field: usize, _held: &Held<'_>) -> Option<Vec<(usize, bool)>> {
        let mut threads = Vec::new();
        for (head, user) in [(self.used, false), (self.user, true)] {
            for node in ring(head)? {
                threads.push((node - list_field, user));
            }
        }
        ring(self.cache)?;
        Some(threads)
    }

    /// `_dl_in_flight_stack`: non-zero while glibc is in a list operation.
    pub(super) fn in_flight(&self, _held: &Held<'_>) -> usize {
        // SAFETY: a word of ld.so's data; under the lock nobody writes it.
        unsafe { *(self.in_flight as *const usize) }
    }
}

/// The nodes of the ring whose head is at `head`, if every link is
/// mirrored (`next.prev == node`) and it closes within a million nodes.
fn ring(head: usize) -> Option<Vec<usize>> {
    let next = |node: usize| {
        // SAFETY: `node` is a list head or a node reached from one under
        // the lock; glibc keeps every listed thread mapped.
        unsafe { *(node as *const usize) }
    };
    let prev = |node: usize| {
        // SAFETY: as above; `prev` is the node's second word.
        unsafe { *((node + 8) as *const usize) }
    };
    let mut nodes = Vec::new();
    let mut node = head;
    loop {
        let following = next(node);
        if following == 0 || prev(following) != node || nodes.len() > 1 << 20 {
            return None;
        }
        if following == head {
            return Some(nodes);
        }
        nodes.push(following);
        node = following;
    }
}

impl Drop for Held<'_> {
    /// Releases the lock as glibc's `lll_unlock` does.
    fn drop(&mut self) {
        if self.0.swap(0, Ordering::Release) == 2 {
            sys::futex_wake_private(self.0, 1);
        }
    }
}

/// The `list_t` node inside the `struct pthread` at `tp`.
fn node(g: &Glibc, tp: usize) -> *mut [usize; 2] {
    at(tp, g.list)
}

/// Adds the thread block at `tp` to `_dl_stack_user`, as glibc's
/// `allocate_stack` adds a thread on a stack of the user's.
///
/// # Safety
/// `tp` is a thread block of this glibc, not on any list, that stays
/// mapped until [`unlist`] takes it off; the caller is a thread
/// glibc lists, with signals not blocked.
pub(crate) unsafe fn list(g: &Glibc, tp: usize) {
    let lists = &g.lists;
    let new = node(g, tp);
    let head = lists.user as *mut [usize; 2];
    let _held = lists.lock();
    // SAFETY: under the lock the head and its first node are ours to
    // link; `new` is the caller's block. As glibc's `list_add`: link the
    // new node fully, then publish it at the head.
    unsafe {
        let first = (*head)[0] as *mut [usize; 2];
        *new = [first as usize, head as usize];
        (*first)[1] = new as usize;
        AtomicUsize::from_ptr(&raw mut (*head)[0]).store(new as usize, Ordering::Release);
    }
}

/// Takes the block at `tp` off the list again: in the thread itself, after
/// its last user code, or in its creator if `clone` failed.
///
/// # Safety
/// `tp` is on the list by [`list`]; the caller is its thread (with
/// signals not blocked) or the creator of a thread that never ran.
pub(crate) unsafe fn unlist(g: &Glibc, tp: usize) {
    let node = node(g, tp);
    let _held = g.lists.lock();
    // SAFETY: under the lock; the neighbours are listed, hence mapped.
    unsafe {
        let [next, prev] = *node;
        (*(next as *mut [usize; 2]))[1] = prev;
        (*(prev as *mut [usize; 2]))[0] = next;
        *node = [node as usize, node as usize];
    }
}
