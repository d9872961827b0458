//! Kernel calls: clone3/clone with the fallback, the futex join, signal masks,
//! rseq and the thread's exit. Everything here is one system call (or the
//! assembly in `asm/x86_64.s` around one) with its errno turned into an
//! [`io::Error`].

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use libc::{c_long, c_void, pid_t};

use crate::lazy::LazyUsize;

std::arch::global_asm!(include_str!("../asm/x86_64.s"));

unsafe extern "C" {
    /// `clone3(args, size)`; the child calls `entry(arg)` on its new stack
    /// and never returns. Returns the tid or `-errno` in the parent.
    fn rawthread_clone3(
        args: *mut CloneArgs,
        size: usize,
        entry: unsafe extern "C" fn(*mut c_void) -> !,
        arg: *mut c_void,
    ) -> c_long;

    /// Legacy `clone(flags, stack, ptid, ctid, tls)` with the same contract.
    fn rawthread_clone(
        flags: u64,
        stack: *mut c_void,
        ptid: *mut pid_t,
        ctid: *mut pid_t,
        tls: usize,
        entry: unsafe extern "C" fn(*mut c_void) -> !,
        arg: *mut c_void,
    ) -> c_long;

    /// Blocks all signals, clears the kernel's tid pointer, unmaps
    /// `[base, base + len)` and exits the thread, touching no memory.
    fn rawthread_unmap_and_exit(base: usize, len: usize) -> !;

    /// Non-zero under valgrind (its client request, which a real CPU runs
    /// as a no-op).
    fn rawthread_running_on_valgrind() -> u64;
}

/// Whether this process runs under valgrind, which replaces glibc's malloc
/// by its own.
pub(crate) fn running_on_valgrind() -> bool {
    // SAFETY: touches only its own stack frame and registers.
    unsafe { rawthread_running_on_valgrind() != 0 }
}

/// The flags of every rawthread thread, by name: the set glibc's
/// `pthread_create` uses, so the kernel treats the thread exactly as it
/// treats a pthread.
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

/// [`THREAD_CLONE_FLAGS`] as one mask.
pub(crate) const THREAD_FLAGS: u64 = {
    let mut mask = 0;
    let mut i = 0;
    while i < THREAD_CLONE_FLAGS.len() {
        mask |= THREAD_CLONE_FLAGS[i].1;
        i += 1;
    }
    mask
};

/// `struct clone_args` (linux/sched.h), the version-0 layout of 64 bytes.
#[repr(C)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
}
static_assertions::const_assert_eq!(size_of::<CloneArgs>(), 64); // CLONE_ARGS_SIZE_VER0

/// What we learned about `clone3`: unknown until the first call answers.
const CLONE3_UNKNOWN: u8 = 0;
const CLONE3_WORKS: u8 = 1;
const CLONE3_REFUSED: u8 = 2;
static CLONE3: AtomicU8 = AtomicU8::new(CLONE3_UNKNOWN);

/// Whether thread creation goes through `clone3` (as opposed to the legacy
/// `clone` fallback). `None` before the first spawn.
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
    /// The word that receives the tid and is cleared at exit, with
    /// CLONE_PARENT_SETTID/CLONE_CHILD_CLEARTID.
    pub tid_word: *mut pid_t,
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
            child_tid: req.tid_word as u64,
            parent_tid: req.tid_word as u64,
            exit_signal: req.exit_signal,
            stack: req.stack_low as u64,
            stack_size: (req.stack_top - req.stack_low) as u64,
            tls: req.tls as u64,
        };
        // SAFETY: `args` is a valid version-0 clone_args; the caller vouches
        // for the stack, the TLS and an entry that never returns.
        let ret = unsafe { rawthread_clone3(&mut args, size_of::<CloneArgs>(), req.entry, req.arg) };
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
    let ret = unsafe {
        rawthread_clone(flags, req.stack_top as *mut c_void, req.tid_word, req.tid_word, req.tls, req.entry, req.arg)
    };
    if ret < 0 { Err(io::Error::from_raw_os_error(-ret as i32)) } else { Ok(ret as pid_t) }
}

/// Blocks every signal in the calling thread and returns the previous mask.
/// A raw `rt_sigprocmask`, not `pthread_sigmask`: glibc's wrapper refuses to
/// block its internal SIGCANCEL/SIGSETXID, and nothing may run in the child
/// before its thread block is live.
pub(crate) fn block_all_signals() -> libc::sigset_t {
    let all = [!0u64; 1];
    // SAFETY: zeroed bytes are a valid (empty) sigset_t.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the kernel's 8-byte sigset.
    let ret = unsafe { libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, all.as_ptr(), &mut old, 8) };
    debug_assert_eq!(ret, 0);
    old
}

/// Sets the calling thread's signal mask.
pub(crate) fn set_signal_mask(mask: &libc::sigset_t) {
    // SAFETY: `mask` is valid for the kernel's 8-byte sigset.
    let ret = unsafe {
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, mask, std::ptr::null_mut::<libc::sigset_t>(), 8)
    };
    debug_assert_eq!(ret, 0);
}

/// CLOCK_MONOTONIC in nanoseconds (the benchmark's one clock, too).
#[doc(hidden)]
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec; CLOCK_MONOTONIC cannot fail. glibc answers
    // from the vDSO without touching TLS, so even a thread with no TLS of
    // its own (the kernel floor's) may call it.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// How long a joiner watches the tid word before it sleeps: about what a
/// futex sleep and wake-up cost (about 9 µs of a spawn+join measured on a
/// 2-vCPU VM, where the joiner's idle vCPU must be woken through the host).
/// Spinning that long first never costs more than twice the better choice
/// (the classic spin-then-block bound), and saves the wake-up whenever the
/// thread ends soon, as short-lived threads do; a long-lived one costs its
/// joiner 10 µs of CPU.
const SPIN_BEFORE_SLEEP_NS: u64 = 10_000;

/// Whether a joiner may spin: not when this process can use a single CPU,
/// where the thread it waits for could not run meanwhile.
fn spinning_pays() -> bool {
    static CPUS: LazyUsize = LazyUsize::new();
    CPUS.get(|| std::thread::available_parallelism().map_or(1, |n| n.get())) > 1
}

/// Waits until the kernel clears a thread's tid word at its exit
/// (CLONE_CHILD_CLEARTID): a short spin (see [`SPIN_BEFORE_SLEEP_NS`]),
/// then a *shared* futex wait: the kernel's wake at thread exit is a
/// shared wake, so a private wait would never see it.
pub(crate) fn wait_for_exit(word: &AtomicI32) {
    if word.load(Ordering::Acquire) == 0 {
        return;
    }
    if spinning_pays() {
        let start = now_ns();
        while now_ns() - start < SPIN_BEFORE_SLEEP_NS {
            for _ in 0..16 {
                if word.load(Ordering::Acquire) == 0 {
                    return;
                }
                std::hint::spin_loop();
            }
        }
    }
    loop {
        match word.load(Ordering::Acquire) {
            0 => return,
            tid => {
                // SAFETY: `word` is a valid, aligned i32 for the duration
                // of the call; EAGAIN/EINTR just mean "look again".
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        word.as_ptr(),
                        libc::FUTEX_WAIT,
                        tid,
                        std::ptr::null::<libc::timespec>(),
                    )
                };
            }
        }
    }
}

/// Registers the calling thread's rseq area. Returns false if the kernel
/// refused (the caller marks the area "registration failed" then).
///
/// # Safety
/// `area` must be the calling thread's own rseq area, live until it exits.
pub(crate) unsafe fn rseq_register(area: *mut c_void, len: u32) -> bool {
    // SAFETY: the caller guarantees `area` lives as long as the thread.
    unsafe { libc::syscall(libc::SYS_rseq, area, len, 0, RSEQ_SIG) == 0 }
}

/// glibc's rseq signature for x86_64.
const RSEQ_SIG: u32 = 0x5305_3053;
const RSEQ_FLAG_UNREGISTER: i32 = 1;

/// Unregisters the calling thread's rseq area, which the kernel would
/// otherwise keep writing to on every return to user space, even after
/// the area is unmapped (SIGSEGV). A no-op error if none was registered.
pub(crate) fn rseq_unregister(area: *mut c_void, len: u32) {
    // SAFETY: unregistering only stops the kernel's writes to `area`.
    unsafe { libc::syscall(libc::SYS_rseq, area, len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG) };
}

/// Sets the calling thread's name (the kernel keeps 15 bytes).
pub(crate) fn set_name(name: &std::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of which the kernel
    // copies at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Frees the region the calling thread runs on and ends the thread.
///
/// # Safety
/// `[base, base + len)` must be the caller's own stack mapping, which
/// nothing else will use or free.
pub(crate) unsafe fn unmap_and_exit(base: usize, len: usize) -> ! {
    // SAFETY: per the contract; the routine touches no memory after munmap.
    unsafe { rawthread_unmap_and_exit(base, len) }
}

/// Ends the calling thread alone: `SYS_exit`, never `exit_group`. The kernel
/// then clears and wakes the tid word, which is the joiner's signal.
pub(crate) fn exit_thread() -> ! {
    loop {
        // SAFETY: SYS_exit takes a status and does not return.
        unsafe { libc::syscall(libc::SYS_exit, 0) };
    }
}
