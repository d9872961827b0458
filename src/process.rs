//! Processes, the counterpart of threads: [`spawn`] runs a closure in a new
//! process made by `clone3` with `CLONE_PIDFD` (or `clone(SIGCHLD)` where
//! `clone3` is refused), and [`Child::wait`] returns its [`ExitStatus`], as
//! [`crate::spawn`] and [`crate::JoinHandle::join`] do for threads.
//!
//! ```
//! let mut child = rawthread::process::spawn(|| 42)?;
//! assert_eq!(child.wait()?.code(), Some(42));
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The child is a copy of the calling thread alone, made by a bare
//! `clone3`: unlike `fork()`, glibc's `pthread_atfork` handlers do not run
//! and its locks are not reset, so if other threads held locks (malloc's,
//! stdio's) when it was made, the child must keep to async-signal-safe
//! calls (or it may deadlock). It ends with `_exit` and the
//! closure's return value, or 101 if the closure panicked: no `atexit`
//! handlers, and no flush of stdio buffers it shares with the parent.

use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::ExitStatus;
use std::ptr;

use libc::{c_int, c_void, pid_t};

use crate::clone;
use crate::glibc::{self, Glibc};

/// Process factory: options for the new process, then [`Builder::spawn`].
///
/// ```
/// let mut child = rawthread::process::Builder::new().process_group(0).spawn(|| 3)?;
/// assert_eq!(child.wait()?.code(), Some(3));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Default)]
#[must_use = "must eventually spawn the process"]
pub struct Builder {
    setsid: bool,
    process_group: Option<pid_t>,
}

impl Builder {
    /// A builder with no options: the child stays in this session and
    /// process group.
    ///
    /// ```
    /// // SAFETY: getsid and getpgid have no preconditions.
    /// let (sid, pgid) = unsafe { (libc::getsid(0), libc::getpgid(0)) };
    /// let mut child = rawthread::process::Builder::new()
    ///     // SAFETY: as above, in the child.
    ///     .spawn(move || i32::from(unsafe { libc::getsid(0) == sid && libc::getpgid(0) == pgid }))?;
    /// assert_eq!(child.wait()?.code(), Some(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Makes the child the leader of a new session (and of a new process
    /// group in it), with no controlling terminal: `setsid()` in the child.
    /// Takes precedence over [`Builder::process_group`].
    ///
    /// ```
    /// let mut child = rawthread::process::Builder::new()
    ///     .setsid(true)
    ///     // SAFETY: getsid and getpid have no preconditions.
    ///     .spawn(|| i32::from(unsafe { libc::getsid(0) == libc::getpid() }))?;
    /// assert_eq!(child.wait()?.code(), Some(1)); // it leads its own session
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn setsid(mut self, setsid: bool) -> Builder {
        self.setsid = setsid;
        self
    }

    /// Puts the child in process group `pgid`, or in a new group it leads
    /// if `pgid` is 0: `setpgid(0, pgid)` in the child.
    ///
    /// ```
    /// let mut child = rawthread::process::Builder::new()
    ///     .process_group(0)
    ///     // SAFETY: getpgid and getpid have no preconditions.
    ///     .spawn(|| i32::from(unsafe { libc::getpgid(0) == libc::getpid() }))?;
    /// assert_eq!(child.wait()?.code(), Some(1)); // it leads a new group
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn process_group(mut self, pgid: pid_t) -> Builder {
        self.process_group = Some(pgid);
        self
    }

    /// Runs `f` in a new process; its return value is the exit code.
    ///
    /// Errors carry the kernel's errno: `EAGAIN` at a process limit,
    /// `EPERM` if `setsid`/`setpgid` failed in the child (which then exits
    /// without running `f`).
    ///
    /// ```
    /// let mut child = rawthread::process::Builder::new().spawn(|| 3)?;
    /// assert_eq!(child.wait()?.code(), Some(3));
    /// // No process group has a pid beyond the kernel's pid_max (at most 2^22).
    /// let err = rawthread::process::Builder::new().process_group(i32::MAX).spawn(|| 0).unwrap_err();
    /// assert_eq!(err.raw_os_error(), Some(libc::EPERM));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F>(self, f: F) -> io::Result<Child>
    where
        F: FnOnce() -> i32,
    {
        let glibc = glibc::get()?;
        // Only when the child has set-up that can fail: a close-on-exec
        // pipe on which it reports the errno (0 for success).
        let report = if self.setsid || self.process_group.is_some() { Some(pipe()?) } else { None };
        let mut start = ManuallyDrop::new(ProcessStart {
            f,
            glibc,
            setsid: self.setsid,
            process_group: self.process_group,
            report: report.as_ref().map(|(_, w)| w.as_raw_fd()),
        });
        let mut pidfd: c_int = -1;
        let request = clone::CloneRequest {
            flags: clone::PROCESS_FLAGS,
            // A process: the parent is told of its end by SIGCHLD, and it
            // runs on a copy-on-write copy of this stack.
            exit_signal: libc::SIGCHLD as u64,
            stack_low: 0,
            stack_top: 0,
            tls: 0,
            tid_word: ptr::null_mut(),
            exit_word: ptr::null_mut(),
            pidfd: &mut pidfd,
            entry: process_main::<F>,
            arg: (&raw mut *start).cast(),
        };
        // SAFETY: no CLONE_VM: the child runs on its own copy of this
        // stack, where `start` is; process_main never returns.
        let cloned = unsafe { clone::clone(&request) };
        // The closure went to the child as a copy; this one is ours to drop.
        // SAFETY: `start` is not used again.
        unsafe { ManuallyDrop::drop(&mut start) };
        let pid = cloned?;
        // SAFETY: the kernel gave us this fd, or -1 on the legacy path.
        let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
        let mut child = Child { pid, pidfd, status: None };
        if let Some((read, write)) = report {
            drop(write);
            // The child always reports (0: set up). EOF is not awaited: a
            // process made meanwhile by another thread may hold the write
            // end for as long as it lives.
            let mut errno = [0u8; 4];
            let n = loop {
                // SAFETY: reading into a 4-byte buffer (4 bytes, one write,
                // are atomic on a pipe).
                let n = unsafe { libc::read(read.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
                if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                    break n;
                }
            };
            let errno = i32::from_ne_bytes(errno);
            // 0 bytes: the child died before reporting; its status says how.
            if n == 4 && errno != 0 {
                child.wait()?;
                return Err(io::Error::from_raw_os_error(errno));
            }
        }
        Ok(child)
    }
}

/// Runs `f` in a new process with the default [`Builder`].
///
/// ```
/// let mut x = 1;
/// let mut child = rawthread::process::spawn(|| {
///     x += 1;
///     x
/// })?;
/// assert_eq!(child.wait()?.code(), Some(2));
/// assert_eq!(x, 1); // the child changed its own copy
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn spawn<F>(f: F) -> io::Result<Child>
where
    F: FnOnce() -> i32,
{
    Builder::new().spawn(f)
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a valid 2-int buffer.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh fds we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

struct ProcessStart<F> {
    f: F,
    glibc: &'static Glibc,
    setsid: bool,
    process_group: Option<pid_t>,
    report: Option<c_int>,
}

/// The child's Rust entry, on its copy of the parent's stack.
///
/// # Safety
/// `start` is the child's copy of the parent's `ProcessStart<F>`.
unsafe extern "C" fn process_main<F: FnOnce() -> i32>(start: *mut c_void) -> ! {
    // SAFETY: the parent's value, copied with its memory; read once.
    let ProcessStart { f, glibc, setsid, process_group, report } = unsafe { start.cast::<ProcessStart<F>>().read() };
    glibc::reset_in_process_child(glibc);
    let failed = if setsid {
        // SAFETY: plain syscall wrapper.
        (unsafe { libc::setsid() }) < 0
    } else if let Some(pgid) = process_group {
        // SAFETY: plain syscall wrapper.
        (unsafe { libc::setpgid(0, pgid) }) != 0
    } else {
        false
    };
    if let Some(fd) = report {
        let errno = if failed { io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL) } else { 0 };
        // SAFETY: 4 bytes to our end of the pipe, which we then close.
        unsafe {
            libc::write(fd, errno.to_ne_bytes().as_ptr().cast(), 4);
            libc::close(fd);
        }
        if failed {
            // SAFETY: ends this process, as below.
            unsafe { libc::_exit(127) };
        }
    }
    let code = panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(101);
    // SAFETY: ends this process without touching what it shares with the
    // parent (stdio buffers, atexit handlers).
    unsafe { libc::_exit(code) }
}

/// A process made by [`spawn`]. Like [`std::process::Child`], dropping it
/// neither waits for nor kills the process.
///
/// ```
/// let mut children: Vec<_> = (0..3).map(|i| rawthread::process::spawn(move || i)).collect::<Result<_, _>>()?;
/// for (i, child) in children.iter_mut().enumerate() {
///     assert_eq!(child.wait()?.code(), Some(i as i32));
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Child {
    pid: pid_t,
    pidfd: Option<OwnedFd>,
    status: Option<ExitStatus>,
}

impl Child {
    /// The child's process id.
    ///
    /// ```
    /// use std::os::unix::process::ExitStatusExt;
    /// let mut child = rawthread::process::spawn(|| -> i32 {
    ///     loop {
    ///         // SAFETY: pause has no preconditions.
    ///         unsafe { libc::pause() };
    ///     }
    /// })?;
    /// // SAFETY: our own child, not yet waited for.
    /// assert_eq!(unsafe { libc::kill(child.pid(), libc::SIGKILL) }, 0);
    /// assert_eq!(child.wait()?.signal(), Some(libc::SIGKILL));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pid(&self) -> pid_t {
        self.pid
    }

    /// The pidfd from `CLONE_PIDFD` (`None` where the legacy `clone` was
    /// used): pollable, readable when the process has exited.
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    /// let mut child = rawthread::process::spawn(|| 5)?;
    /// if let Some(fd) = child.pidfd() {
    ///     let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    ///     // SAFETY: one valid pollfd.
    ///     assert_eq!(unsafe { libc::poll(&mut poll, 1, 600_000) }, 1); // the child exited
    /// }
    /// assert_eq!(child.wait()?.code(), Some(5));
    /// assert!(child.pidfd().is_none()); // closed once waited for
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Waits for the process to exit (through its pidfd if it has one) and
    /// returns its status; later calls return the same status.
    ///
    /// ```
    /// let mut child = rawthread::process::spawn(|| 9)?;
    /// let status = child.wait()?;
    /// assert_eq!(status.code(), Some(9));
    /// assert_eq!(child.wait()?, status); // reaped once, the same status again
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = match &self.pidfd {
            Some(fd) => loop {
                // SAFETY: zeroed is a valid siginfo_t.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                // SAFETY: a valid pidfd and siginfo buffer.
                if unsafe { libc::waitid(libc::P_PIDFD, fd.as_raw_fd() as libc::id_t, &mut info, libc::WEXITED) } == 0 {
                    // SAFETY: filled in by waitid for an exited child.
                    let code = unsafe { info.si_status() };
                    break match info.si_code {
                        libc::CLD_EXITED => (code & 0xff) << 8,
                        libc::CLD_DUMPED => code | 0x80,
                        _ => code,
                    };
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            },
            None => loop {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                if unsafe { libc::waitpid(self.pid, &mut status, 0) } == self.pid {
                    break status;
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            },
        };
        let status = ExitStatus::from_raw(status);
        self.status = Some(status);
        self.pidfd = None;
        Ok(status)
    }
}
