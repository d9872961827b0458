//! The thread API, shaped like `std::thread`: [`Builder`], [`spawn`] and
//! [`JoinHandle`]. The thread's life itself is `life.rs`'s.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::thread::Result;
use std::time::Duration;

use crate::life::{self, Options, Running, SchedParams};
use crate::region::ThreadLayout;
use crate::scope::{self, Scope, ScopedJoinHandle};

/// Thread factory, as [`std::thread::Builder`], plus [`Builder::guard_size`].
///
/// ```
/// let handle = rawthread::Builder::new().name("worker".into()).stack_size(64 << 10).spawn(|| 6 * 7)?;
/// assert_eq!(handle.join().unwrap(), 42);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Default)]
#[must_use = "must eventually spawn the thread"]
pub struct Builder {
    options: Options,
}

impl Builder {
    /// A builder with the defaults: unnamed, a 2 MiB stack (or
    /// `RUST_MIN_STACK`), a one-page guard.
    ///
    /// ```
    /// let handle = rawthread::Builder::new().spawn(|| ())?;
    /// let layout = handle.layout();
    /// // SAFETY: sysconf has no preconditions.
    /// let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    /// assert_eq!(layout.guard.len(), page);
    /// if std::env::var_os("RUST_MIN_STACK").is_none() {
    ///     assert!(layout.stack.len() >= 2 << 20);
    /// }
    /// handle.join().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the thread. The kernel shows the first 15 bytes in
    /// `/proc/self/task/<tid>/comm` (and so `ps`, `top`, gdb); std's
    /// `Thread` has the whole name (`thread::current().name()` in the
    /// thread, its TLS destructors and panic messages, and
    /// [`JoinHandle::thread`]) wherever rawthread could prove where this
    /// std keeps it (see the README's migration notes).
    ///
    /// ```
    /// let comm = rawthread::Builder::new()
    ///     .name("a-rather-long-thread-name".into())
    ///     .spawn(|| std::fs::read_to_string("/proc/thread-self/comm"))?
    ///     .join()
    ///     .unwrap()?;
    /// assert_eq!(comm, "a-rather-long-t\n"); // the first 15 bytes
    /// let name = rawthread::Builder::new()
    ///     .name("a-rather-long-thread-name".into())
    ///     .spawn(|| std::thread::current().name().map(str::to_owned))?
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(name.as_deref(), Some("a-rather-long-thread-name")); // all of it
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn name(mut self, name: String) -> Builder {
        self.options.name = Some(name);
        self
    }

    /// The stack size in bytes, rounded up to whole pages and raised to at
    /// least `PTHREAD_STACK_MIN`. TLS and the thread control block are
    /// placed above the stack and do not use it up.
    ///
    /// ```
    /// let handle = rawthread::Builder::new().stack_size(100_000).spawn(|| ())?;
    /// assert!(handle.layout().stack.len() >= 100_000);
    /// let tiny = rawthread::Builder::new().stack_size(1).spawn(|| ())?;
    /// assert!(tiny.layout().stack.len() >= libc::PTHREAD_STACK_MIN); // raised to the minimum
    /// assert!(tiny.layout().static_tls.start >= tiny.layout().stack.end); // TLS lies above the stack
    /// handle.join().unwrap();
    /// tiny.join().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.options.stack_size = Some(size);
        self
    }

    /// The guard below the stack (guard markers, or `PROT_NONE`), rounded up to whole pages
    /// (default one page; 0 for none).
    ///
    /// ```
    /// // SAFETY: sysconf has no preconditions.
    /// let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    /// let three = rawthread::Builder::new().guard_size(2 * page + 1).spawn(|| ())?;
    /// assert_eq!(three.layout().guard.len(), 3 * page);
    /// assert_eq!(three.layout().guard.end, three.layout().stack.start);
    /// let none = rawthread::Builder::new().guard_size(0).spawn(|| ())?;
    /// assert!(none.layout().guard.is_empty());
    /// three.join().unwrap();
    /// none.join().unwrap();
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn guard_size(mut self, size: usize) -> Builder {
        self.options.guard_size = Some(size);
        self
    }

    /// The signals the thread starts with blocked, instead of the
    /// creator's mask (glibc's `pthread_attr_setsigmask_np`). glibc's
    /// internal SIGCANCEL and SIGSETXID stay unblocked, as glibc's own
    /// `pthread_sigmask` keeps them: `setuid()` waits for every thread to
    /// take SIGSETXID.
    ///
    /// ```
    /// // SAFETY: zeroed bytes are a valid sigset_t, which the calls fill.
    /// let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    /// // SAFETY: a valid sigset_t.
    /// unsafe { libc::sigemptyset(&mut mask) };
    /// // SAFETY: a valid sigset_t and signal.
    /// unsafe { libc::sigaddset(&mut mask, libc::SIGUSR1) };
    /// let blocked = rawthread::Builder::new()
    ///     .signal_mask(&mask)
    ///     .spawn(|| {
    ///         // SAFETY: as above.
    ///         let mut now: libc::sigset_t = unsafe { std::mem::zeroed() };
    ///         // SAFETY: reads the calling thread's mask into a valid set.
    ///         unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now) };
    ///         // SAFETY: a valid sigset_t and signal.
    ///         unsafe { libc::sigismember(&now, libc::SIGUSR1) == 1 }
    ///     })
    ///     .unwrap()
    ///     .join()
    ///     .unwrap();
    /// assert!(blocked);
    /// ```
    pub fn signal_mask(mut self, mask: &libc::sigset_t) -> Builder {
        self.options.signal_mask = Some(crate::sys::signal_bits(mask));
        self
    }

    /// The CPUs the thread may run on (`sched_setaffinity`, glibc's
    /// `pthread_attr_setaffinity_np`), instead of the creator's: its first
    /// line of user code already runs on one of them. A set with no CPU
    /// this thread may use (empty, offline, or outside its cpuset) makes
    /// `spawn` fail with `EINVAL`; CPU numbers beyond the kernel's count
    /// are ignored, as the kernel ignores them.
    ///
    /// ```
    /// // SAFETY: sched_getcpu has no preconditions.
    /// let here = unsafe { libc::sched_getcpu() } as usize; // a CPU we may use
    /// let cpu = rawthread::Builder::new()
    ///     .affinity([here])
    ///     // SAFETY: as above.
    ///     .spawn(|| unsafe { libc::sched_getcpu() } as usize)
    ///     .unwrap()
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(cpu, here);
    /// assert!(rawthread::Builder::new().affinity([]).spawn(|| ()).is_err());
    /// ```
    pub fn affinity(mut self, cpus: impl IntoIterator<Item = usize>) -> Builder {
        let mut mask = vec![0u64];
        for cpu in cpus.into_iter().filter(|&cpu| cpu < MAX_CPUS) {
            if mask.len() <= cpu / 64 {
                mask.resize(cpu / 64 + 1, 0);
            }
            mask[cpu / 64] |= 1 << (cpu % 64);
        }
        self.options.affinity = Some(mask);
        self
    }

    /// The thread's scheduling policy, instead of the creator's (glibc's
    /// `pthread_attr_setschedpolicy` and `_setschedparam` with
    /// `PTHREAD_EXPLICIT_SCHED`, plus a nice value): set before its first
    /// line of user code. The kernel's refusal comes back from `spawn`:
    /// `EPERM` for a real-time policy or a lower nice value than the
    /// creator's without the right (`CAP_SYS_NICE`, `RLIMIT_RTPRIO`,
    /// `RLIMIT_NICE`), `EINVAL` for a priority or nice value out of range.
    ///
    /// ```
    /// use rawthread::Scheduling;
    /// let policy = rawthread::Builder::new()
    ///     .scheduling(Scheduling::Batch { nice: 5 })
    ///     // SAFETY: sched_getscheduler has no preconditions.
    ///     .spawn(|| unsafe { libc::sched_getscheduler(0) })
    ///     .unwrap()
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(policy, libc::SCHED_BATCH);
    /// let too_high = rawthread::Builder::new().scheduling(Scheduling::Fifo { priority: 100 }).spawn(|| ());
    /// assert_eq!(too_high.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    /// ```
    pub fn scheduling(mut self, scheduling: Scheduling) -> Builder {
        let (policy, nice, priority) = match scheduling {
            Scheduling::Other { nice } => (libc::SCHED_OTHER, nice, 0),
            Scheduling::Batch { nice } => (libc::SCHED_BATCH, nice, 0),
            Scheduling::Idle => (libc::SCHED_IDLE, 0, 0),
            Scheduling::Fifo { priority } => (libc::SCHED_FIFO, 0, priority),
            Scheduling::RoundRobin { priority } => (libc::SCHED_RR, 0, priority),
        };
        self.options.scheduling = Some(SchedParams { policy, nice, priority });
        self
    }

    /// Whether the [`JoinHandle`] carries a pidfd for the thread
    /// ([`JoinHandle::pidfd`]), which an event loop can wait on for the
    /// thread's exit. Needs Linux 6.9 (`PIDFD_THREAD`): where `pidfd_open`
    /// refuses that flag (`EINVAL`) or is missing (`ENOSYS`), `spawn` fails
    /// with [`io::ErrorKind::Unsupported`] (an error without an errno);
    /// other refusals come back as they are (`EMFILE` for a full fd table,
    /// or a seccomp filter's `EPERM`).
    ///
    /// ```
    /// let handle = rawthread::Builder::new().pidfd(true).spawn(|| 7).unwrap();
    /// let mut poll = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
    /// poll.fd = std::os::fd::AsRawFd::as_raw_fd(&handle.pidfd().unwrap());
    /// // SAFETY: one valid pollfd.
    /// assert_eq!(unsafe { libc::poll(&mut poll, 1, 600_000) }, 1); // the thread exited
    /// assert!(handle.is_finished());
    /// assert_eq!(handle.join().unwrap(), 7);
    /// ```
    pub fn pidfd(mut self, pidfd: bool) -> Builder {
        self.options.pidfd = pidfd;
        self
    }

    /// Spawns a thread running `f`, as [`std::thread::Builder::spawn`].
    ///
    /// Errors carry the kernel's errno: `EAGAIN` at a thread limit,
    /// `ENOMEM` when the stack cannot be mapped (or its size overflows);
    /// `Unsupported` if this glibc lacks what rawthread needs; the kernel's
    /// refusal of an affinity, a scheduling policy or a pidfd. A failed spawn frees everything it
    /// made, and drops `f` unrun, in the caller, as std does (a panic in
    /// that drop unwinds from here, once everything is freed): if the
    /// thread was already made, no user code ever runs on it.
    ///
    /// # Panics
    /// If the name has a NUL byte, with std's message (std's panics too).
    ///
    /// ```
    /// let handle = rawthread::Builder::new().spawn(|| "ran")?;
    /// assert_eq!(handle.join().unwrap(), "ran");
    /// let token = std::sync::Arc::new(());
    /// let held = token.clone();
    /// let err = rawthread::Builder::new().stack_size(usize::MAX).spawn(move || drop(held)).unwrap_err();
    /// assert_eq!(err.raw_os_error(), Some(libc::ENOMEM));
    /// assert_eq!(std::sync::Arc::strong_count(&token), 1); // the closure was dropped unrun
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // SAFETY: F and T are 'static, so the thread may outlive this call.
        unsafe { self.spawn_unchecked(f) }
    }

    /// Spawns a thread running `f` without `'static` bounds, as
    /// [`std::thread::Builder::spawn_unchecked`].
    ///
    /// ```
    /// let answer = 42;
    /// let r = &answer;
    /// // SAFETY: joined below, before `answer` goes.
    /// let handle = unsafe { rawthread::Builder::new().spawn_unchecked(move || *r) }.unwrap();
    /// assert_eq!(handle.join().unwrap(), 42);
    /// ```
    ///
    /// # Safety
    /// As std's: whatever `f` and its result borrow must outlive the
    /// thread's use of them; join the thread before they go (a handle
    /// dropped unjoined detaches it, which then may outlive them).
    pub unsafe fn spawn_unchecked<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        // SAFETY: the caller's promise, as above.
        let running = unsafe { life::spawn(self.options, f, None)? };
        Ok(JoinHandle { running, _result: PhantomData })
    }

    /// Spawns a scoped thread with this builder's settings, as
    /// [`std::thread::Builder::spawn_scoped`].
    ///
    /// ```
    /// let mut counts = [0; 2];
    /// rawthread::scope(|s| {
    ///     for (i, count) in counts.iter_mut().enumerate() {
    ///         rawthread::Builder::new().name(format!("counter-{i}")).spawn_scoped(s, || *count += 1)?;
    ///     }
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// assert_eq!(counts, [1, 1]);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_scoped<'scope, 'env, F, T>(
        self,
        scope: &'scope Scope<'scope, 'env>,
        f: F,
    ) -> io::Result<ScopedJoinHandle<'scope, T>>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        scope::spawn_in(scope, self.options, f)
    }
}

/// CPU numbers [`Builder::affinity`] keeps: Linux has at most 8,192 CPUs
/// (`CONFIG_NR_CPUS`), and ignores the bits of any beyond its count.
const MAX_CPUS: usize = 8192;

/// A scheduling policy for [`Builder::scheduling`] (`sched(7)`).
///
/// ```
/// let handle = rawthread::Builder::new()
///     .scheduling(rawthread::Scheduling::Idle)
///     // SAFETY: sched_getscheduler has no preconditions.
///     .spawn(|| unsafe { libc::sched_getscheduler(0) })?;
/// assert_eq!(handle.join().unwrap(), libc::SCHED_IDLE);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheduling {
    /// `SCHED_OTHER`, the default time-sharing policy, at a nice value
    /// from -20 (most CPU) to 19 (least).
    Other {
        /// The nice value.
        nice: i32,
    },
    /// `SCHED_BATCH`: time-sharing for CPU-bound work, which the scheduler
    /// does not let preempt others on wake-up; a nice value as `Other`'s.
    Batch {
        /// The nice value.
        nice: i32,
    },
    /// `SCHED_IDLE`: runs only when the CPU would otherwise idle. The
    /// thread keeps the creator's nice value, which this policy ignores.
    Idle,
    /// `SCHED_FIFO`: real-time, runs until it blocks or yields, at a
    /// priority from 1 to 99.
    Fifo {
        /// The real-time priority.
        priority: u32,
    },
    /// `SCHED_RR`: real-time as `Fifo`, but round-robin among threads of
    /// the same priority.
    RoundRobin {
        /// The real-time priority.
        priority: u32,
    },
}

/// Spawns a thread with the default [`Builder`], as [`std::thread::spawn`].
///
/// # Panics
/// If the thread cannot be created; [`Builder::spawn`] returns the error.
///
/// ```
/// // SAFETY: getpid and gettid have no preconditions.
/// let handle = rawthread::spawn(|| unsafe { (libc::getpid(), libc::gettid()) });
/// let (pid, tid) = handle.join().unwrap();
/// assert_eq!(pid as u32, std::process::id()); // a thread of this process...
/// // SAFETY: as above.
/// assert_ne!(tid, unsafe { libc::gettid() }); // ...but not this thread
/// ```
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().spawn(f).unwrap_or_else(|e| life::spawn_failed(e))
}

/// An owned permission to join a thread, as [`std::thread::JoinHandle`].
/// Dropping it detaches the thread.
///
/// ```
/// let (tx, rx) = std::sync::mpsc::channel();
/// drop(rawthread::spawn(move || tx.send(7).unwrap())); // detached, still running
/// assert_eq!(rx.recv().unwrap(), 7);
/// ```
pub struct JoinHandle<T> {
    running: Running,
    _result: PhantomData<T>,
}

// SAFETY: `&JoinHandle` only reads the tid and whether the thread finished;
// the `T` is reached through `join(self)` alone.
unsafe impl<T> Sync for JoinHandle<T> {}

impl<T> JoinHandle<T> {
    /// Waits for the thread to finish and returns its result, or the panic
    /// payload if it panicked. When this returns the thread has exited:
    /// its `thread_local!` destructors have run.
    ///
    /// ```
    /// assert_eq!(rawthread::spawn(|| 6 * 7).join().unwrap(), 42);
    /// let payload = rawthread::spawn(|| -> i32 { panic!("boom") }).join().unwrap_err();
    /// assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    /// ```
    pub fn join(self) -> Result<T> {
        // SAFETY: `running` was spawned with result type T.
        unsafe { self.running.join() }
    }

    /// Waits at most `timeout` for the thread to finish: its result (or
    /// panic payload) as [`JoinHandle::join`] gives it, or, if the thread
    /// has not exited in time, the handle back to wait again or drop. A
    /// zero `timeout` is a try-join (glibc's `pthread_timedjoin_np` and
    /// `pthread_tryjoin_np`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let (go, wait) = std::sync::mpsc::channel::<()>();
    /// let handle = rawthread::spawn(move || wait.recv().map(|()| 7));
    /// let handle = handle.join_timeout(Duration::ZERO).unwrap_err(); // still waiting
    /// go.send(()).unwrap();
    /// let result = handle.join_timeout(Duration::from_secs(600)).expect("exited");
    /// assert_eq!(result.unwrap(), Ok(7));
    /// ```
    ///
    /// # Panics
    /// If called from the thread itself, as [`JoinHandle::join`].
    #[allow(clippy::result_large_err)] // std-shaped: the handle itself comes back
    pub fn join_timeout(self, timeout: Duration) -> std::result::Result<Result<T>, JoinHandle<T>> {
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        if self.running.wait_within(ns) { Ok(self.join()) } else { Err(self) }
    }

    /// Whether the thread has exited (joining will not block).
    ///
    /// ```
    /// let (go, wait) = std::sync::mpsc::channel::<()>();
    /// let handle = rawthread::spawn(move || wait.recv().unwrap());
    /// assert!(!handle.is_finished()); // blocked until `go`
    /// go.send(()).unwrap();
    /// while !handle.is_finished() {
    ///     std::thread::yield_now();
    /// }
    /// handle.join().unwrap(); // does not block
    /// ```
    pub fn is_finished(&self) -> bool {
        self.running.is_finished()
    }

    /// The thread's [`std::thread::Thread`], as [`std::thread::JoinHandle::thread`]:
    /// its `id()` is the one `thread::current().id()` gives inside the
    /// thread, and its `unpark()` wakes the thread's `park()`. The thread
    /// publishes it before its closure starts; if it has not yet, this
    /// waits for that (microseconds), never for the closure.
    ///
    /// ```
    /// let handle = rawthread::spawn(|| {
    ///     std::thread::park();
    ///     std::thread::current().id()
    /// });
    /// handle.thread().unpark();
    /// let id = handle.thread().id();
    /// assert_eq!(handle.join().unwrap(), id);
    /// ```
    pub fn thread(&self) -> &std::thread::Thread {
        self.running.thread()
    }

    /// The thread's pidfd, if it was spawned with [`Builder::pidfd`]:
    /// readable (`POLLIN`) once the thread has exited, so that an event
    /// loop (`epoll`, mio, tokio's `AsyncFd`) can await the join without
    /// a blocked thread; `join` after that does not block. Closed when the
    /// handle is joined or dropped: take it out of an epoll set first, as
    /// closing removes it only if no copy of the fd lives on (in a process
    /// forked meanwhile). `examples/epoll_join.rs` waits on several.
    ///
    /// ```
    /// use std::os::fd::AsRawFd;
    /// let (go, wait) = std::sync::mpsc::channel::<()>();
    /// let handle = rawthread::Builder::new().pidfd(true).spawn(move || wait.recv().unwrap()).unwrap();
    /// let fd = handle.pidfd().expect("asked for").as_raw_fd();
    /// // The kernel's own account of whose pidfd it is: this thread's tid
    /// // (while it lives; -1 once it has exited).
    /// let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    /// assert!(info.lines().any(|line| line == format!("Pid:\t{}", handle.tid())));
    /// go.send(()).unwrap();
    /// handle.join().unwrap();
    /// assert!(rawthread::spawn(|| ()).pidfd().is_none());
    /// ```
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.running.pidfd()
    }

    /// The thread's kernel thread id (as `gettid()` returns in it).
    ///
    /// ```
    /// // SAFETY: gettid has no preconditions.
    /// let handle = rawthread::spawn(|| unsafe { libc::gettid() });
    /// let tid = handle.tid();
    /// assert_eq!(handle.join().unwrap(), tid);
    /// ```
    pub fn tid(&self) -> libc::pid_t {
        self.running.tid()
    }

    /// Where the thread's guard, stack, TLS, TCB and tid word are.
    ///
    /// ```
    /// // glibc's pthread_self() is the thread pointer: where the TCB starts.
    /// // SAFETY: pthread_self has no preconditions.
    /// let handle = rawthread::spawn(|| unsafe { libc::pthread_self() } as usize);
    /// let layout = handle.layout();
    /// assert_eq!(handle.join().unwrap(), layout.tcb.start);
    /// assert!(layout.tcb.contains(&layout.tid_word));
    /// ```
    pub fn layout(&self) -> ThreadLayout {
        self.running.layout()
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("tid", &self.tid()).finish_non_exhaustive()
    }
}
