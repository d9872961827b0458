//! Kernel calls: raw clone3/clone, futexes, signal masks, rseq, the
//! thread's name and its exit, the clock. Everything here is one system
//! call, or the assembly in `asm/x86_64.s` around one (which this file
//! assembles into the crate), and no policy: the fallback from clone3 to
//! clone is `clone.rs`'s, the join's `join.rs`'s.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::AtomicI32;

use libc::{c_int, c_long, c_void, pid_t};

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
}

/// Raw `clone3(args, size)`: the child calls `entry(arg)` on its new stack
/// and never returns. Returns the tid or `-errno`.
///
/// # Safety
/// As for [`crate::clone::clone`].
pub(crate) unsafe fn clone3(
    args: *mut CloneArgs,
    entry: unsafe extern "C" fn(*mut c_void) -> !,
    arg: *mut c_void,
) -> c_long {
    // SAFETY: per the contract.
    unsafe { rawthread_clone3(args, size_of::<CloneArgs>(), entry, arg) }
}

/// Raw legacy `clone(flags, stack_top, ptid, ctid, tls)`, same contract.
///
/// # Safety
/// As for [`crate::clone::clone`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn clone_legacy(
    flags: u64,
    stack_top: usize,
    ptid: *mut pid_t,
    ctid: *mut pid_t,
    tls: usize,
    entry: unsafe extern "C" fn(*mut c_void) -> !,
    arg: *mut c_void,
) -> c_long {
    // SAFETY: per the contract.
    unsafe { rawthread_clone(flags, stack_top as *mut c_void, ptid, ctid, tls, entry, arg) }
}

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

/// A `sigset_t` holding the kernel's 64-bit mask `bits` (bit n-1: signal n).
pub(crate) fn signal_set(bits: u64) -> libc::sigset_t {
    // SAFETY: zeroed bytes are a valid (empty) sigset_t.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a sigset_t starts with the kernel's 64 signal bits.
    unsafe { *(&raw mut set).cast::<u64>() = bits };
    set
}

/// The kernel's 64-bit mask in a `sigset_t`.
pub(crate) fn signal_bits(set: &libc::sigset_t) -> u64 {
    // SAFETY: as above.
    unsafe { *(set as *const libc::sigset_t).cast::<u64>() }
}

/// Sets the calling thread's signal mask.
pub(crate) fn set_signal_mask(mask: &libc::sigset_t) {
    // SAFETY: `mask` is valid for the kernel's 8-byte sigset.
    let ret = unsafe {
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, mask, std::ptr::null_mut::<libc::sigset_t>(), 8)
    };
    debug_assert_eq!(ret, 0);
}

/// CLOCK_MONOTONIC in nanoseconds. glibc answers from the vDSO without
/// touching TLS, so even a thread with no TLS of its own may call it.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec; CLOCK_MONOTONIC cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps while `word` holds `expected`: a *shared* futex wait, since the
/// kernel's wake at a thread's exit (CLONE_CHILD_CLEARTID) is a shared
/// wake, which a private wait would never see. Returns on a wake, a
/// signal, after `timeout_ns` (if any), or at once if the word already
/// differs: the caller looks again.
pub(crate) fn futex_wait(word: &AtomicI32, expected: i32, timeout_ns: Option<u64>) {
    let timeout = timeout_ns.map(|ns| libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    });
    let timeout = timeout.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned i32 and `timeout` null or a valid
    // relative timespec for the duration of the call.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, timeout) };
}

/// A *private* futex wait, as glibc's own locks use: returns on a wake,
/// a signal, or at once if `word` no longer holds `expected`.
pub(crate) fn futex_wait_private(word: &AtomicI32, expected: i32) {
    // SAFETY: `word` is a valid, aligned i32 for the duration of the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// Wakes up to `count` private waiters on `word`.
pub(crate) fn futex_wake_private(word: &AtomicI32, count: i32) {
    // SAFETY: `word` is a valid, aligned i32; a wake only reads its address.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, count) };
}

/// The result of `libc::syscall`: its value, or the errno it left (it
/// returns -1 then).
fn syscall_result(ret: c_long) -> io::Result<c_long> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// Lets thread `tid` run on the CPUs whose bits are set in `mask` (bit n
/// of word n / 64: CPU n), of any length: `sched_setaffinity(2)`.
pub(crate) fn set_affinity(tid: pid_t, mask: &[u64]) -> io::Result<()> {
    // SAFETY: the kernel reads `size_of_val(mask)` bytes from `mask`.
    syscall_result(unsafe { libc::syscall(libc::SYS_sched_setaffinity, tid, size_of_val(mask), mask.as_ptr()) })
        .map(drop)
}

/// `struct sched_attr` (linux/sched/types.h), its first version.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}
static_assertions::const_assert_eq!(size_of::<SchedAttr>(), 48); // SCHED_ATTR_SIZE_VER0

/// Sets thread `tid`'s scheduling policy with its nice value (the fair
/// policies) or its priority (the real-time ones), in one call:
/// `sched_setattr(2)`.
pub(crate) fn set_scheduling(tid: pid_t, policy: c_int, nice: i32, priority: u32) -> io::Result<()> {
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: policy as u32,
        flags: 0,
        nice,
        priority,
        runtime: 0,
        deadline: 0,
        period: 0,
    };
    // SAFETY: `attr` is a valid sched_attr of the size it states.
    syscall_result(unsafe { libc::syscall(libc::SYS_sched_setattr, tid, &attr, 0) }).map(drop)
}

/// `pidfd_open(2)`'s flag for a pidfd of one thread, not of its whole
/// thread group (Linux 6.9; `O_EXCL`'s value).
const PIDFD_THREAD: c_int = libc::O_EXCL;

/// A pidfd for thread `tid` of this process (close-on-exec, as every
/// pidfd is): readable once that thread has exited.
pub(crate) fn thread_pidfd(tid: pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes two integers.
    let fd = syscall_result(unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) })?;
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as c_int) })
}

/// Gives up the CPU.
pub(crate) fn yield_cpu() {
    // SAFETY: sched_yield has no preconditions.
    unsafe { libc::sched_yield() };
}

/// Gives up the CPU until `done` holds, for at most [`YIELD_BOUND_NS`].
/// For the first spawn's waits on its own short-lived threads (the probe's
/// hand-overs, a census thread's whole life: tens to a few hundred
/// microseconds): a waiter asleep on a futex is woken on an idle CPU,
/// which a virtual machine halts (some 10-20 µs to wake it on the machines
/// this was measured on), while one that yields sees the answer at once,
/// and lends its CPU to the thread it waits for if they share one. The
/// caller then sleeps as before if it does not hold. This spends CPU time
/// that sleeping would not, once per process, and is for these waits
/// alone: a join sleeps at once (`join.rs`).
pub(crate) fn yield_until(done: impl Fn() -> bool) {
    let start = now_ns();
    while !done() && now_ns() - start <= YIELD_BOUND_NS {
        yield_cpu();
    }
}

/// How long [`yield_until`] keeps its CPU: far longer than a thread's
/// start or exit takes, far shorter than the first spawn's whole cost.
const YIELD_BOUND_NS: u64 = 200_000;

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
