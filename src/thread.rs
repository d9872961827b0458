//! The thread API, shaped like `std::thread`: [`Builder`], [`spawn`] and
//! [`JoinHandle`]. The thread's life itself is `life.rs`'s.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::thread::Result;

use crate::life::{self, Options, Running};
use crate::region::ThreadLayout;
use crate::scope::{self, Scope, ScopedJoinHandle};

/// Thread factory, as [`std::thread::Builder`], plus [`Builder::guard_size`].
#[derive(Debug, Default)]
#[must_use = "must eventually spawn the thread"]
pub struct Builder {
    options: Options,
}

impl Builder {
    /// A builder with the defaults: unnamed, a 2 MiB stack (or
    /// `RUST_MIN_STACK`), a one-page guard.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the thread. The kernel shows the first 15 bytes in
    /// `/proc/self/task/<tid>/comm` (and so `ps`, `top`, gdb).
    pub fn name(mut self, name: String) -> Builder {
        self.options.name = Some(name);
        self
    }

    /// The stack size in bytes, rounded up to whole pages and raised to at
    /// least `PTHREAD_STACK_MIN`. TLS and the thread control block are
    /// placed above the stack and do not use it up.
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.options.stack_size = Some(size);
        self
    }

    /// The `PROT_NONE` guard below the stack, rounded up to whole pages
    /// (default one page; 0 for none).
    pub fn guard_size(mut self, size: usize) -> Builder {
        self.options.guard_size = Some(size);
        self
    }

    /// Spawns a thread running `f`, as [`std::thread::Builder::spawn`].
    ///
    /// Errors carry the kernel's errno: `EAGAIN` at a thread limit,
    /// `ENOMEM` when the stack cannot be mapped (or its size overflows),
    /// `EINVAL` for a name with a NUL byte; `Unsupported` if this glibc
    /// lacks what rawthread needs. A failed spawn frees everything it made.
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

/// Spawns a thread with the default [`Builder`], as [`std::thread::spawn`].
///
/// # Panics
/// If the thread cannot be created; [`Builder::spawn`] returns the error.
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Builder::new().spawn(f).unwrap_or_else(|e| life::spawn_failed(e))
}

/// An owned permission to join a thread, as [`std::thread::JoinHandle`].
/// Dropping it detaches the thread.
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
    pub fn join(self) -> Result<T> {
        // SAFETY: `running` was spawned with result type T.
        unsafe { self.running.join() }
    }

    /// Whether the thread has exited (joining will not block).
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

    /// The thread's kernel thread id (as `gettid()` returns in it).
    pub fn tid(&self) -> libc::pid_t {
        self.running.tid()
    }

    /// Where the thread's guard, stack, TLS, TCB and tid word are.
    pub fn layout(&self) -> ThreadLayout {
        self.running.layout()
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("tid", &self.tid()).finish_non_exhaustive()
    }
}
