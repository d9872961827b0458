//! Stack overflow reports. A raw thread that runs into its guard gets
//! SIGSEGV with the faulting address in the guard; with no help it would
//! die silently (or, with std's handler, with a report naming the wrong
//! thread: std's handler only knows std's threads). Each raw thread gets an
//! alternate signal stack in its region, so a handler can run when the
//! stack is exhausted, and one process-wide handler recognises raw threads'
//! guards. Every other SIGSEGV/SIGBUS goes to the handler that was there
//! before (std's, which handles the main thread and std's threads).

use std::cell::Cell;
use std::ops::Range;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// What the handler needs to know about the thread it runs on: plain data
/// in a const-initialised thread-local, so reading it in a signal handler
/// neither allocates nor registers a destructor.
#[derive(Clone, Copy)]
struct Guard {
    low: usize,
    high: usize,
    name: [u8; 16],
}

thread_local! {
    static GUARD: Cell<Guard> = const { Cell::new(Guard { low: 0, high: 0, name: [0; 16] }) };
}

/// The handlers that were installed before ours (`sa_sigaction`, and
/// whether it takes SA_SIGINFO arguments), for SIGSEGV and SIGBUS.
static PREVIOUS: [(AtomicUsize, AtomicBool); 2] =
    [(AtomicUsize::new(0), AtomicBool::new(false)), (AtomicUsize::new(0), AtomicBool::new(false))];
/// Set once both handlers are in place; only saves later spawns the two
/// `sigaction` calls.
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn slot(signal: libc::c_int) -> usize {
    usize::from(signal == libc::SIGBUS)
}

/// Installs the handler for SIGSEGV and SIGBUS, keeping the previous ones
/// to hand other faults to. Not a `Once` (see [`crate::lazy`]): threads
/// racing here all read the same previous handler, not yet ours, and store
/// the same values; one that finds ours installed leaves them be.
pub(crate) fn install() {
    if INSTALLED.load(Ordering::Relaxed) {
        return;
    }
    for signal in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: zeroed is a valid sigaction for both calls.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fault as *const () as usize;
            // SA_ONSTACK: run on the alternate stack, since the thread's
            // own stack is what ran out.
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            let mut previous: libc::sigaction = std::mem::zeroed();
            libc::sigaction(signal, ptr::null(), &mut previous);
            if previous.sa_sigaction == action.sa_sigaction {
                continue;
            }
            // Stored before ours is installed, so it always finds them.
            let (handler, siginfo) = &PREVIOUS[slot(signal)];
            handler.store(previous.sa_sigaction, Ordering::Relaxed);
            siginfo.store(previous.sa_flags & libc::SA_SIGINFO != 0, Ordering::Relaxed);
            libc::sigaction(signal, &action, ptr::null_mut());
        }
    }
    INSTALLED.store(true, Ordering::Relaxed);
}

/// In a new thread: registers its alternate signal stack and remembers its
/// guard and name for the handler.
pub(crate) fn enter(altstack: Range<usize>, guard: Range<usize>, name: [u8; 16]) {
    let stack = libc::stack_t { ss_sp: altstack.start as *mut libc::c_void, ss_flags: 0, ss_size: altstack.len() };
    // SAFETY: the alternate stack is part of this thread's region, which
    // outlives the thread.
    unsafe { libc::sigaltstack(&stack, ptr::null_mut()) };
    GUARD.set(Guard { low: guard.start, high: guard.end, name });
}

/// Appends `bytes` to `buf` at `*len` (truncating at the end).
fn push(buf: &mut [u8], len: &mut usize, bytes: &[u8]) {
    let n = bytes.len().min(buf.len() - *len);
    buf[*len..*len + n].copy_from_slice(&bytes[..n]);
    *len += n;
}

extern "C" fn on_fault(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
    let addr = unsafe { (*info).si_addr() } as usize;
    let guard = GUARD.get();
    if (guard.low..guard.high).contains(&addr) {
        // Format without allocating: this runs on the alternate stack of a
        // thread whose state is unknown.
        let mut msg = [0u8; 160];
        let mut len = 0;
        let name = match guard.name.iter().position(|&b| b == 0) {
            Some(0) => &b"<unnamed>"[..],
            Some(n) => &guard.name[..n],
            None => &guard.name[..],
        };
        // SAFETY: gettid has no preconditions.
        let mut tid = unsafe { libc::gettid() } as u32;
        let mut digits = [0u8; 10];
        let mut d = digits.len();
        loop {
            d -= 1;
            digits[d] = b'0' + (tid % 10) as u8;
            tid /= 10;
            if tid == 0 {
                break;
            }
        }
        push(&mut msg, &mut len, b"\nthread '");
        push(&mut msg, &mut len, name);
        push(&mut msg, &mut len, b"' (tid ");
        push(&mut msg, &mut len, &digits[d..]);
        push(&mut msg, &mut len, b") has overflowed its stack\nfatal runtime error: stack overflow\n");
        // SAFETY: write(2) and signal(2) are async-signal-safe. With the
        // default action back, returning re-runs the faulting access and
        // the kernel ends the process with SIGSEGV, core dump and all.
        unsafe {
            libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), len);
            libc::signal(signal, libc::SIG_DFL);
        }
        return;
    }
    // Not a raw thread's guard: whoever handled this signal before us does.
    let (handler, siginfo) = &PREVIOUS[slot(signal)];
    match handler.load(Ordering::Relaxed) {
        libc::SIG_DFL | libc::SIG_IGN => {
            // SAFETY: async-signal-safe; the re-run fault then kills.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
        handler if siginfo.load(Ordering::Relaxed) => {
            // SAFETY: the previous handler's own type, with our arguments.
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(handler) };
            handler(signal, info, context);
        }
        handler => {
            // SAFETY: as above, a plain sa_handler.
            let handler: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
            handler(signal);
        }
    }
}
