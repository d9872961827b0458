//! What a raw thread does first and last, on its own stack and TLS: what
//! glibc's `start_thread` does for a pthread around its start routine.

use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};

use super::layout::*;
use super::lists::Held;
use crate::sys;

/// First steps in the new thread, on its own stack and TLS.
///
/// # Safety
/// Must be called by the thread whose block is at `tp`, first thing.
pub(crate) unsafe fn enter(g: &Glibc, tp: usize) {
    // The robust-mutex list the creator made empty (block.rs): the kernel
    // marks the mutexes on it EOWNERDEAD if the thread dies holding them.
    // SAFETY: the head lies in our TCB, which outlives the thread.
    unsafe { libc::syscall(libc::SYS_set_robust_list, tp + g.probed.robust_head, ROBUST_HEAD_LEN) };
    if g.rseq_len != 0 {
        let area = g.rseq_area(tp);
        // SAFETY: the area is inside this thread's TCB, which outlives it.
        if !unsafe { sys::rseq_register(area as *mut c_void, g.rseq_len) } {
            // SAFETY: as above.
            unsafe { *((area + RSEQ_CPU_ID) as *mut i32) = RSEQ_CPU_ID_REGISTRATION_FAILED };
        }
    }
}

/// Last steps in the thread, after its closure: what glibc's
/// `start_thread` does before the thread's exit.
///
/// # Safety
/// Must be called by the thread whose block is at `tp`, once, last.
pub(crate) unsafe fn leave(g: &Glibc, tp: usize) {
    // thread_local! values with Drop (registered through
    // __cxa_thread_atexit_impl).
    // SAFETY: glibc's own exit path calls it the same way.
    unsafe { (g.call_tls_dtors)() };
    // SAFETY: we are that thread, and its keys are ours to run.
    unsafe { run_key_destructors(g, tp) };
    // SAFETY: our own TCB's word, which other threads only read.
    unsafe { AtomicI32::from_ptr(at(tp, g.cancelhandling)).fetch_or(EXITING_BITMASK, Ordering::Relaxed) };
    // The priority-protect buffer, which glibc frees with the thread.
    // SAFETY: our own TCB; the word holds null or glibc's calloc'd buffer,
    // used only by this thread's mutex calls, which are over.
    let tpp = unsafe { std::mem::replace(&mut *at::<*mut c_void>(tp, g.probed.tpp), ptr::null_mut()) };
    if !tpp.is_null() {
        // SAFETY: glibc's calloc'd buffer, now nobody's.
        unsafe { libc::free(tpp) };
    }
    // SAFETY: our own TCB's slot, which write_header pointed at our
    // resolver state.
    let res = unsafe { *g.resp_slot(tp) };
    // SAFETY: our res_state; a non-zero nscount means res_ninit opened
    // sockets and allocated name-server addresses, which glibc's own
    // thread exit closes and frees the same way.
    if unsafe { *((res + RES_NSCOUNT) as *const i32) } != 0 {
        // SAFETY: as above; `true`: free the addresses too.
        unsafe { (g.res_iclose)(res as *mut c_void, true) };
    }
    // The rest of what glibc's thread clean-up frees, but malloc's
    // state, which is handed on: the buffers strerror and strsignal
    // made for unknown numbers, freed as glibc frees them ...
    for buf in [g.probed.strerror_buf, g.probed.strsignal_buf] {
        // SAFETY: our own TCB; the word holds null or a malloc'd string
        // nobody may use after the thread.
        unsafe { libc::free(std::mem::replace(&mut *at::<*mut c_void>(tp, buf), ptr::null_mut())) };
    }
    // ... and the last dlerror() message: a message not yet read is
    // marked read by the first call and freed by the next.
    // SAFETY: dlerror has no preconditions.
    while !unsafe { libc::dlerror() }.is_null() {}
    // One thread fewer, in glibc's count: the last one to leave ends the
    // process, as when `main` has called `pthread_exit`.
    if g.nthreads().fetch_sub(1, Ordering::Relaxed) == 1 {
        // SAFETY: as glibc's start_thread does, with everything of this
        // thread still in place.
        unsafe { libc::exit(0) };
    }
    // No signal from this thread to itself may land in its last steps; a
    // setuid() under way still gets its answer (SIGSETXID stays open). In
    // `sigmask`, as glibc builds it.
    if g.probed.exit_sigmask != 0 {
        // SAFETY: our own TCB's word, which only this thread uses.
        unsafe { *at::<u64>(tp, g.probed.exit_sigmask) = EXIT_SIGNAL_MASK };
    }
    sys::set_signal_mask(&sys::signal_set(EXIT_SIGNAL_MASK));
    // From now on pthread_kill on this thread sends nothing: the tid it
    // would use is about to go. Under `exit_lock`, so that a pthread_kill
    // under way finishes first.
    {
        // SAFETY: our own TCB's lock word and flag.
        let _held = Held::lock(unsafe { AtomicI32::from_ptr(at(tp, g.probed.exit_lock)) });
        // SAFETY: as above.
        unsafe { *at::<bool>(tp, g.probed.exiting) = true };
    }
    // Last: off glibc's thread list, with signals still open (see
    // lists.rs); setuid and dlopen no longer reach this thread.
    // SAFETY: we are that thread, past its last user code.
    unsafe { super::lists::unlist(g, tp) };
    // Where the kernel clears `joinstate` instead (glibc 2.43), glibc
    // clears `tid` itself, last.
    if g.probed.exit_word != g.tid {
        // SAFETY: our own TCB.
        unsafe { g.tid_word(tp).store(0, Ordering::Relaxed) };
    }
}

/// One thread more in glibc's count, before its `clone` (undone with
/// [`uncount`] if the clone fails), as `pthread_create` counts.
pub(crate) fn count(g: &Glibc) {
    g.nthreads().fetch_add(1, Ordering::Relaxed);
}

/// Undoes [`count`] for a thread that was never made.
pub(super) fn uncount(g: &Glibc) {
    g.nthreads().fetch_sub(1, Ordering::Relaxed);
}

/// pthread-key destructors, as glibc's `__nptl_deallocate_tsd` runs
/// them: nothing if the thread never stored a value (`specific_used`, the
/// common case, which spares reading the 32 block pointers); else clear
/// each value, call its key's destructor if the key is still the one the
/// value was set for, repeat while destructors set new values (at most 4
/// rounds), then free the level-2 blocks.
unsafe fn run_key_destructors(g: &Glibc, tp: usize) {
    // SAFETY: our own TCB's flag, a bool glibc writes only in this thread.
    if !unsafe { *at::<bool>(tp, g.specific_used) } {
        return;
    }
    let specific = at::<[*mut KeyData; KEY_L1]>(tp, g.specific);
    for _ in 0..KEY_DESTRUCTOR_ROUNDS {
        let mut found = false;
        for l1 in 0..KEY_L1 {
            // SAFETY: reading our own TCB.
            let level2 = unsafe { (*specific)[l1] };
            if level2.is_null() {
                continue;
            }
            for l2 in 0..KEY_L2 {
                // SAFETY: level-2 blocks hold KEY_L2 records; glibc's
                // key table holds KEY_L1 * KEY_L2 (checked at start-up).
                unsafe {
                    let slot = &mut *level2.add(l2);
                    if slot.data.is_null() {
                        continue;
                    }
                    let data = std::mem::replace(&mut slot.data, ptr::null_mut());
                    found = true;
                    let key = &*g.keys.add(l1 * KEY_L2 + l2);
                    if slot.seq == key.seq
                        && let Some(destr) = key.destr
                    {
                        destr(data);
                    }
                }
            }
        }
        if !found {
            break;
        }
    }
    // Block 0 is inside the TCB; the others came from glibc's calloc.
    for l1 in 1..KEY_L1 {
        // SAFETY: our own TCB; the blocks were malloc'd by glibc.
        unsafe {
            let level2 = std::mem::replace(&mut (*specific)[l1], ptr::null_mut());
            if !level2.is_null() {
                libc::free(level2.cast());
            }
        }
    }
    // Block 0 cleared, and the thread marked as holding no values, as
    // glibc leaves its own threads.
    // SAFETY: our own TCB: block 0 is what specific[0] points at.
    unsafe {
        ptr::write_bytes((*specific)[0], 0, KEY_L2);
        *at::<bool>(tp, g.specific_used) = false;
    }
}

/// In the child of a bare `clone` of a process, what glibc's `fork` resets
/// there and raw threads use: the calling thread's TCB still holds the
/// parent's tid, which recursive locks and `raise()` use; glibc's
/// thread-list lock may have been held by a parent thread at the clone
/// (every raw spawn and exit takes it), which would leave `setuid()` in the
/// child waiting forever; and the child is the one thread there is.
pub(crate) fn reset_in_process_child(g: &Glibc) {
    // SAFETY: the calling thread's own TCB; gettid has no preconditions.
    unsafe { g.tid_word(current_tp()).store(libc::gettid(), Ordering::Relaxed) };
    g.lists.reset_lock();
    g.nthreads().store(1, Ordering::Relaxed);
}
