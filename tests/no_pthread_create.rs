//! Proves that rawthread never makes a thread with `pthread_create`: this
//! binary defines its own `pthread_create`, which the linker binds every
//! call in the executable to (std's and rawthread's alike), counts the
//! calls and forwards to glibc's. The only calls allowed are the one-time
//! probe's at the first spawn: the probe itself (which finds glibc's stack
//! fields and switches glibc to multi-threaded mode) and the one thread it
//! starts to prove where glibc's thread-list lock is. No test harness: libtest would start
//! pthreads of its own.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};

mod common;

use common::{StartRoutine, glibc_pthread_create, live_tasks, tasks};

static CALLS: AtomicUsize = AtomicUsize::new(0);

/// # Safety
/// The same contract as glibc's `pthread_create`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_create(
    thread: *mut libc::pthread_t,
    attr: *const libc::pthread_attr_t,
    start: StartRoutine,
    arg: *mut c_void,
) -> c_int {
    CALLS.fetch_add(1, Ordering::SeqCst);
    let real = glibc_pthread_create();
    // SAFETY: forwarded unchanged from our caller.
    unsafe { real(thread, attr, start, arg) }
}

fn single_threaded() -> u8 {
    // SAFETY: glibc's public `char __libc_single_threaded`.
    unsafe { *(libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) as *const u8) }
}

fn main() {
    assert_eq!(single_threaded(), 1, "no thread may exist before the first spawn");
    assert_eq!(tasks(), 1);

    // A NUL in a name panics first thing, as std's spawn does: before the
    // first spawn's probe makes a thread.
    let nul = std::panic::catch_unwind(|| rawthread::Builder::new().name("a\0b".into()).spawn(|| ()));
    assert!(nul.is_err(), "a NUL in a name must panic");
    assert_eq!((CALLS.load(Ordering::SeqCst), single_threaded()), (0, 1), "the NUL spawn probed");

    // Plain, nested and scoped raw threads, 64 in all.
    let outer: Vec<_> = (0..16)
        .map(|i| {
            rawthread::spawn(move || {
                let inner = rawthread::spawn(move || i * 2);
                i + inner.join().unwrap()
            })
        })
        .collect();
    let sum: usize = outer.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(sum, (0..16).map(|i| i * 3).sum());
    let mut counts = [0usize; 32];
    rawthread::scope(|s| {
        for c in counts.iter_mut() {
            s.spawn(move || *c += 1);
        }
    });
    assert_eq!(counts, [1; 32]);

    let calls = CALLS.load(Ordering::SeqCst);
    assert_eq!(calls, 2, "pthread_create may be called twice, by the first spawn's probe; saw {calls}");
    assert_eq!(single_threaded(), 0, "glibc must be in multi-threaded mode");
    // Exited, or exiting: a thread just joined may still be listed in
    // /proc/self/task, past its last instruction.
    assert_eq!(live_tasks(), 1, "every raw thread has exited");
    println!("no_pthread_create: 64 raw threads, {calls} pthread_create calls (the first spawn's probe)");
    println!("1 passed, 0 failed");
}
