//! Making a thread or process: the clone flags of a thread, one comment
//! per flag, and `clone3` with its fallback to the legacy `clone`, which
//! rawthread remembers once the kernel (or a seccomp filter) refuses
//! `clone3`.

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};

use libc::{c_long, c_void, pid_t};

use crate::sys::{self, CloneArgs};

/// The flags of every rawthread thread, by name: the set glibc's
/// `pthread_create` uses, so the kernel treats the thread exactly as it
/// treats a pthread.
///
/// ```
/// let mask = rawthread::THREAD_CLONE_FLAGS.iter().fold(0, |mask, &(_, flag)| mask | flag);
/// assert_eq!(mask.count_ones() as usize, rawthread::THREAD_CLONE_FLAGS.len()); // one bit each
/// assert_ne!(mask & libc::CLONE_VM as u64, 0); // one address space: a thread
/// assert_ne!(mask & libc::CLONE_THREAD as u64, 0); // one thread group: the same pid
/// ```
pub const THREAD_CLONE_FLAGS: [(&str, u64); 9] = [
    // Share the address space: this is what makes it a thread.
    ("CLONE_VM", libc::CLONE_VM as u64),
    // Share cwd, root and umask, as POSIX threads must.
    ("CLONE_FS", libc::CLONE_FS as u64),
    // Share the fd table: a file opened in one thread is usable in all.
    ("CLONE_FILES", libc::CLONE_FILES as u64),
    // Share signal handlers (required by CLONE_THREAD).
    ("CLONE_SIGHAND", libc::CLONE_SIGHAND as u64),
    // Same thread group: same pid, no SIGCHLD, exit_group ends us all.
    ("CLONE_THREAD", libc::CLONE_THREAD as u64),
    // Share System V semaphore undo lists, as POSIX requires of threads.
    ("CLONE_SYSVSEM", libc::CLONE_SYSVSEM as u64),
    // Install the new thread's TCB as its %fs base before it runs.
    ("CLONE_SETTLS", libc::CLONE_SETTLS as u64),
    // Write the tid into the TCB before clone returns, so the creator can
    // see it at once and the child's tid field is valid from instruction one.
    ("CLONE_PARENT_SETTID", libc::CLONE_PARENT_SETTID as u64),
    // At exit the kernel zeroes that same word and futex-wakes it: the join.
    ("CLONE_CHILD_CLEARTID", libc::CLONE_CHILD_CLEARTID as u64),
];

/// The flags of a [`crate::process`] child, by name: no `CLONE_VM` (its
/// memory is a copy-on-write copy), nothing shared but what `fork()` shares.
/// Its exit signal is `SIGCHLD`; where `clone3` is refused, the legacy
/// `clone` is called without `CLONE_PIDFD`.
///
/// ```
/// assert_eq!(rawthread::PROCESS_CLONE_FLAGS.map(|(name, _)| name), ["CLONE_PIDFD"]);
/// let mask = rawthread::PROCESS_CLONE_FLAGS.iter().fold(0, |mask, &(_, flag)| mask | flag);
/// assert_eq!(mask & libc::CLONE_VM as u64, 0); // its own (copied) memory
/// ```
pub const PROCESS_CLONE_FLAGS: [(&str, u64); 1] = [
    // A pidfd to wait on: race-free, unlike a pid that may be reused.
    ("CLONE_PIDFD", libc::CLONE_PIDFD as u64),
];

/// Named flags as one mask.
const fn mask(flags: &[(&str, u64)]) -> u64 {
    let mut mask = 0;
    let mut i = 0;
    while i < flags.len() {
        mask |= flags[i].1;
        i += 1;
    }
    mask
}

/// [`THREAD_CLONE_FLAGS`] as one mask.
pub(crate) const THREAD_FLAGS: u64 = mask(&THREAD_CLONE_FLAGS);

/// [`PROCESS_CLONE_FLAGS`] as one mask.
pub(crate) const PROCESS_FLAGS: u64 = mask(&PROCESS_CLONE_FLAGS);

/// What we learned about `clone3`: unknown until the first call answers.
const CLONE3_UNKNOWN: u8 = 0;
const CLONE3_WORKS: u8 = 1;
const CLONE3_REFUSED: u8 = 2;
static CLONE3: AtomicU8 = AtomicU8::new(CLONE3_UNKNOWN);

/// Whether thread creation goes through `clone3` (as opposed to the legacy
/// `clone` fallback). `None` before the first spawn.
///
/// ```
/// rawthread::spawn(|| ()).join().unwrap();
/// let clone3 = rawthread::uses_clone3();
/// assert!(clone3.is_some()); // the first spawn found out
/// // Only clone3 gives a process child its pidfd.
/// let mut child = rawthread::process::spawn(|| 0)?;
/// assert_eq!(child.pidfd().is_some(), clone3 == Some(true));
/// child.wait()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn uses_clone3() -> Option<bool> {
    match CLONE3.load(Ordering::Relaxed) {
        CLONE3_WORKS => Some(true),
        CLONE3_REFUSED => Some(false),
        _ => None,
    }
}

/// What to clone and where the child starts.
pub(crate) struct CloneRequest {
    /// CLONE_* flags, without an exit signal.
    pub flags: u64,
    /// The signal the parent gets at the child's exit (SIGCHLD for a
    /// process, 0 for a thread).
    pub exit_signal: u64,
    /// Lowest usable stack address and the stack's initial top; `(0, 0)`
    /// for a process that runs on a copy of the caller's stack.
    pub stack_low: usize,
    pub stack_top: usize,
    /// The child's thread pointer (`%fs` base), with CLONE_SETTLS.
    pub tls: usize,
    /// The word that receives the tid (CLONE_PARENT_SETTID), and the one
    /// the kernel clears and wakes at exit (CLONE_CHILD_CLEARTID): the same
    /// word up to glibc 2.42, `tid` and `joinstate` from 2.43.
    pub tid_word: *mut pid_t,
    pub exit_word: *mut pid_t,
    /// Where CLONE_PIDFD puts the pidfd; -1 is written there if the legacy
    /// `clone` had to be used, which is then called without CLONE_PIDFD.
    pub pidfd: *mut libc::c_int,
    pub entry: unsafe extern "C" fn(*mut c_void) -> !,
    pub arg: *mut c_void,
}

/// Creates a thread or process: `clone3` first, and the legacy `clone`
/// for good once `clone3` answers ENOSYS (old kernels, valgrind,
/// container seccomp profiles) or EPERM (older seccomp profiles).
///
/// # Safety
/// `req` must describe a mapped stack (or none, for a process without
/// CLONE_VM) and, with CLONE_SETTLS, a prepared thread block; `entry` must
/// never return. A thread's creator must have blocked signals.
pub(crate) unsafe fn clone(req: &CloneRequest) -> io::Result<pid_t> {
    if CLONE3.load(Ordering::Relaxed) != CLONE3_REFUSED {
        let mut args = CloneArgs {
            flags: req.flags,
            pidfd: req.pidfd as u64,
            child_tid: req.exit_word as u64,
            parent_tid: req.tid_word as u64,
            exit_signal: req.exit_signal,
            stack: req.stack_low as u64,
            stack_size: (req.stack_top - req.stack_low) as u64,
            tls: req.tls as u64,
        };
        // SAFETY: `args` is a valid version-0 clone_args; the caller vouches
        // for the stack, the TLS and an entry that never returns.
        let ret = unsafe { sys::clone3(&mut args, req.entry, req.arg) };
        match ret {
            tid if tid >= 0 => {
                // Written once, not on every spawn: the line is read by all.
                if CLONE3.load(Ordering::Relaxed) != CLONE3_WORKS {
                    CLONE3.store(CLONE3_WORKS, Ordering::Relaxed);
                }
                return Ok(tid as pid_t);
            }
            err if err == -(libc::ENOSYS as c_long) || err == -(libc::EPERM as c_long) => {
                CLONE3.store(CLONE3_REFUSED, Ordering::Relaxed);
            }
            err => return Err(io::Error::from_raw_os_error(-err as i32)),
        }
    }
    let mut flags = req.flags | req.exit_signal;
    if !req.pidfd.is_null() {
        // Legacy clone would return the pidfd through the tid pointer;
        // keep it simple: no pidfd, the caller waits by pid.
        flags &= !(libc::CLONE_PIDFD as u64);
        // SAFETY: the caller's out-parameter.
        unsafe { *req.pidfd = -1 };
    }
    // SAFETY: as above; the legacy ABI takes the stack's top directly.
    let ret =
        unsafe { sys::clone_legacy(flags, req.stack_top, req.tid_word, req.exit_word, req.tls, req.entry, req.arg) };
    if ret < 0 { Err(io::Error::from_raw_os_error(-ret as i32)) } else { Ok(ret as pid_t) }
}
