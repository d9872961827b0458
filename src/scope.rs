//! Scoped threads, as `std::thread::scope`: threads that may borrow from
//! the caller's stack because [`scope`] joins every one of them before it
//! returns.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::thread::Result;

use crate::life::{self, Latch, Options, Running};

/// What a scope and its threads share.
struct ScopeData {
    /// Threads whose closure has not returned yet; wakes the thread that
    /// waits in [`scope`] when the last one does.
    latch: Arc<Latch>,
    /// Threads whose handles were dropped unjoined: `scope` joins them.
    unjoined: Mutex<Vec<Running>>,
}

/// A scope to spawn scoped threads in, as [`std::thread::Scope`].
///
/// ```
/// let (mut evens, mut odds) = (Vec::new(), Vec::new());
/// rawthread::scope(|s| {
///     s.spawn(|| evens.extend((0..10).filter(|n| n % 2 == 0)));
///     s.spawn(|| odds.extend((0..10).filter(|n| n % 2 == 1)));
/// });
/// assert_eq!((evens.len(), odds.len()), (5, 5));
/// ```
///
/// `'scope` is invariant, as std's: a scoped thread cannot lend what lives
/// on its own stack to a thread that may outlive it. std's own example of
/// that, which must not compile, under each path:
///
/// ```compile_fail,E0373
/// use rawthread as thread;
/// thread::scope(|s| {
///     s.spawn(|| {
///         let a = String::from("abcd");
///         s.spawn(|| println!("{a:?}")); // might run after `a` is dropped
///     });
/// });
/// ```
///
/// ```compile_fail,E0373
/// use std::thread as thread;
/// thread::scope(|s| {
///     s.spawn(|| {
///         let a = String::from("abcd");
///         s.spawn(|| println!("{a:?}")); // might run after `a` is dropped
///     });
/// });
/// ```
pub struct Scope<'scope, 'env: 'scope> {
    data: Arc<ScopeData>,
    /// Invariance over 'scope, as std: a scope cannot be shrunk or grown.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// Creates a scope for spawning scoped threads, as [`std::thread::scope`].
///
/// Before this returns, every closure spawned in it has returned, and every
/// thread has been joined (its handle joined by the caller, or dropped and
/// then joined here) but for those whose handles were leaked with
/// `mem::forget`: their results are leaked with them.
///
/// # Panics
/// If `f` panicked (its panic resumes), or if any thread whose handle was
/// not joined panicked ("a scoped thread panicked").
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// let done = AtomicUsize::new(0);
/// rawthread::scope(|s| {
///     for _ in 0..3 {
///         s.spawn(|| done.fetch_add(1, Ordering::Relaxed)); // handle dropped
///     }
/// });
/// assert_eq!(done.into_inner(), 3); // every thread ran before `scope` returned
/// ```
#[track_caller]
pub fn scope<'env, F, T>(f: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    let scope = Scope {
        data: Arc::new(ScopeData { latch: Arc::new(Latch::new()), unjoined: Mutex::new(Vec::new()) }),
        scope: PhantomData,
        env: PhantomData,
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(&scope)));

    // First every closure (even those whose handles were leaked)...
    scope.data.latch.wait();
    // ...then every thread whose handle was dropped: its result may borrow
    // from 'scope, so it is dropped here, not later. Dropping a result may
    // drop handles it held, which join the list: go on until it is empty.
    // A result whose drop panics does not stop the others' joins; the first
    // such panic is resumed once all are done.
    let mut a_thread_panicked = false;
    let mut drop_panic = None;
    loop {
        let unjoined = std::mem::take(&mut *scope.data.unjoined.lock().unwrap_or_else(|e| e.into_inner()));
        if unjoined.is_empty() {
            break;
        }
        for thread in unjoined {
            match panic::catch_unwind(AssertUnwindSafe(|| thread.join_and_discard())) {
                Ok(panicked) => a_thread_panicked |= panicked,
                Err(payload) => drop(drop_panic.get_or_insert(payload)),
            }
        }
    }

    match (result, drop_panic) {
        (Err(payload), _) | (Ok(_), Some(payload)) => panic::resume_unwind(payload),
        (Ok(_), None) if a_thread_panicked => panic!("a scoped thread panicked"),
        (Ok(value), None) => value,
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns a scoped thread, as [`std::thread::Scope::spawn`].
    ///
    /// # Panics
    /// If the thread cannot be created; [`crate::Builder::spawn_scoped`]
    /// returns the error.
    ///
    /// ```
    /// let data = [1, 2, 3, 4, 5, 6];
    /// let (left, right) = data.split_at(3);
    /// let sum = rawthread::scope(|s| {
    ///     let l = s.spawn(|| left.iter().sum::<i32>());
    ///     let r = s.spawn(|| right.iter().sum::<i32>());
    ///     l.join().unwrap() + r.join().unwrap()
    /// });
    /// assert_eq!(sum, 21);
    /// ```
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        spawn_in(self, Options::default(), f).unwrap_or_else(|e| life::spawn_failed(e))
    }
}

/// Spawns a scoped thread with these settings in `scope` (what
/// [`crate::Builder::spawn_scoped`] does).
pub(crate) fn spawn_in<'scope, F, T>(
    scope: &'scope Scope<'scope, '_>,
    options: Options,
    f: F,
) -> io::Result<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    scope.data.latch.add();
    // A failed spawn may panic, in dropping its closure: the latch is told
    // either way.
    let spawned = panic::catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `scope` waits for this closure and joins this thread
        // before 'scope ends, so nothing it borrows outlives its use.
        unsafe { life::spawn(options, f, Some(scope.data.latch.clone())) }
    }));
    match spawned {
        Ok(Ok(running)) => Ok(ScopedJoinHandle { running: Some(running), scope: &scope.data, _result: PhantomData }),
        Ok(Err(e)) => {
            scope.data.latch.thread_done();
            Err(e)
        }
        Err(panic) => {
            scope.data.latch.thread_done();
            panic::resume_unwind(panic)
        }
    }
}

/// An owned permission to join a scoped thread, as
/// [`std::thread::ScopedJoinHandle`].
///
/// ```
/// let words = ["a", "bbb", "cc"];
/// let longest = rawthread::scope(|s| {
///     let handle: rawthread::ScopedJoinHandle<'_, &str> =
///         s.spawn(|| words.iter().copied().max_by_key(|w| w.len()).unwrap());
///     handle.join().unwrap() // a result borrowed from outside the scope
/// });
/// assert_eq!(longest, "bbb");
/// ```
pub struct ScopedJoinHandle<'scope, T> {
    /// `None` only once joined.
    running: Option<Running>,
    scope: &'scope ScopeData,
    _result: PhantomData<T>,
}

// SAFETY: `&ScopedJoinHandle` only reads the tid and whether the thread
// finished; the `T` is reached through `join(self)` alone.
unsafe impl<T> Sync for ScopedJoinHandle<'_, T> {}

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the thread and returns its result or panic payload.
    ///
    /// ```
    /// rawthread::scope(|s| {
    ///     assert_eq!(s.spawn(|| 6 * 7).join().unwrap(), 42);
    ///     let payload = s.spawn(|| -> i32 { panic!("boom") }).join().unwrap_err();
    ///     assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom"));
    /// }); // the panic was joined, so `scope` does not panic
    /// ```
    pub fn join(mut self) -> Result<T> {
        let running = self.running.take().expect("joined once");
        // SAFETY: spawned with result type T.
        unsafe { running.join() }
    }

    /// Whether the thread has exited.
    ///
    /// ```
    /// let (go, wait) = std::sync::mpsc::channel::<()>();
    /// rawthread::scope(|s| {
    ///     let handle = s.spawn(move || wait.recv().unwrap());
    ///     assert!(!handle.is_finished()); // blocked until `go`
    ///     go.send(()).unwrap();
    ///     while !handle.is_finished() {
    ///         std::thread::yield_now();
    ///     }
    /// });
    /// ```
    pub fn is_finished(&self) -> bool {
        self.running.as_ref().is_some_and(Running::is_finished)
    }

    /// The thread's kernel thread id.
    ///
    /// ```
    /// rawthread::scope(|s| {
    ///     // SAFETY: gettid has no preconditions.
    ///     let handle = s.spawn(|| unsafe { libc::gettid() });
    ///     let tid = handle.tid();
    ///     assert_eq!(handle.join().unwrap(), tid);
    /// });
    /// ```
    pub fn tid(&self) -> libc::pid_t {
        self.running.as_ref().map_or(0, Running::tid)
    }

    /// The thread's pidfd, if it was spawned with [`crate::Builder::pidfd`]
    /// (see [`crate::JoinHandle::pidfd`]).
    ///
    /// ```
    /// rawthread::scope(|s| {
    ///     let handle = rawthread::Builder::new().pidfd(true).spawn_scoped(s, || ()).unwrap();
    ///     assert!(handle.pidfd().is_some());
    /// });
    /// ```
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.running.as_ref().and_then(Running::pidfd)
    }

    /// The thread's [`std::thread::Thread`], as
    /// [`std::thread::ScopedJoinHandle::thread`] (see
    /// [`crate::JoinHandle::thread`]).
    ///
    /// ```
    /// rawthread::scope(|s| {
    ///     let handle = s.spawn(|| std::thread::current().id());
    ///     let id = handle.thread().id();
    ///     assert_eq!(handle.join().unwrap(), id);
    /// });
    /// ```
    pub fn thread(&self) -> &std::thread::Thread {
        self.running.as_ref().expect("not yet joined").thread()
    }
}

impl<T> Drop for ScopedJoinHandle<'_, T> {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.scope.unjoined.lock().unwrap_or_else(|e| e.into_inner()).push(running);
        }
    }
}

impl<T> fmt::Debug for ScopedJoinHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedJoinHandle").field("tid", &self.tid()).finish_non_exhaustive()
    }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope").field("running", &self.data.latch.running()).finish_non_exhaustive()
    }
}
