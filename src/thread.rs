//! The thread API, shaped like `std::thread`: [`Builder`], [`spawn`] and
//! [`JoinHandle`], and the life of one thread from its creator's call to the
//! joiner's return.

use std::alloc::Layout;
use std::cell::UnsafeCell;
use std::ffi::{CStr, c_void};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::Result;

use crate::glibc::{self, Block, Glibc};
use crate::lazy::LazyUsize;
use crate::region::{Region, ThreadLayout, page_size};
use crate::scope::ScopeData;
use crate::sys;
use crate::{fork, overflow, pool};

/// Why 2 MiB: it is `std::thread`'s default, so swapping `std::thread` for
/// rawthread changes no program's stack budget, and `RUST_MIN_STACK`
/// overrides it the same way. glibc's `RLIMIT_STACK` default (8 MiB) wastes
/// address space under many threads. Smaller stacks work as they do for a
/// pthread of that size: glibc reads the stack's size from the thread
/// block and keeps its `alloca`s (in `printf`, `getaddrinfo`, ...) to a
/// quarter of it, taking the heap beyond that.
const DEFAULT_STACK_SIZE: usize = 2 << 20;

/// The least a requested stack is raised to (glibc's `PTHREAD_STACK_MIN`).
const MIN_STACK_SIZE: usize = libc::PTHREAD_STACK_MIN;

fn default_stack_size() -> usize {
    static SIZE: LazyUsize = LazyUsize::new();
    SIZE.get(|| {
        let size = std::env::var("RUST_MIN_STACK").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_STACK_SIZE);
        size.max(MIN_STACK_SIZE)
    })
}

/// Thread factory, as [`std::thread::Builder`], plus [`Builder::guard_size`].
#[derive(Debug, Default)]
#[must_use = "must eventually spawn the thread"]
pub struct Builder {
    name: Option<String>,
    stack_size: Option<usize>,
    guard_size: Option<usize>,
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
        self.name = Some(name);
        self
    }

    /// The stack size in bytes, rounded up to whole pages and raised to at
    /// least `PTHREAD_STACK_MIN`. TLS and the thread control block are
    /// placed above the stack and do not use it up.
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.stack_size = Some(size);
        self
    }

    /// The `PROT_NONE` guard below the stack, rounded up to whole pages
    /// (default one page; 0 for none).
    pub fn guard_size(mut self, size: usize) -> Builder {
        self.guard_size = Some(size);
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
        let running = unsafe { self.spawn_unchecked(f, None)? };
        Ok(JoinHandle { running, _result: PhantomData })
    }

    /// Spawns `f` without lifetime bounds.
    ///
    /// # Safety
    /// Whatever `f` and its result borrow must outlive the thread's use of
    /// them: the caller joins before they go (as [`crate::scope`] does).
    pub(crate) unsafe fn spawn_unchecked<F, T>(self, f: F, scope: Option<Arc<ScopeData>>) -> io::Result<Running>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        // Before any of rawthread's locks is first taken (see fork.rs).
        fork::install();
        let glibc = glibc::get()?;
        overflow::install();
        let name = kernel_name(self.name.as_deref())?;
        let stack = self.stack_size.unwrap_or_else(default_stack_size).max(MIN_STACK_SIZE);
        let guard = self.guard_size.unwrap_or_else(page_size);
        let layout = Layout::new::<Record<F, T>>();
        let block = match pool::take(guard, stack, layout) {
            Some((block, plan)) => block.renew(plan)?,
            None => glibc.init_block(Region::map(guard, stack, layout, &glibc.geometry())?)?,
        };

        let region = block.region();
        let tp = region.tp();
        let record = region.record() as *mut Record<F, T>;
        let request = sys::CloneRequest {
            flags: sys::THREAD_FLAGS,
            exit_signal: 0,
            stack_low: region.stack().start,
            stack_top: region.stack().end,
            tls: tp,
            tid_word: block.tid_word().as_ptr(),
            pidfd: ptr::null_mut(),
            entry: thread_main::<F, T>,
            arg: record.cast(),
        };
        let (guard, altstack) = (region.guard(), region.altstack());
        // Nothing may run on the child before its thread block is live: it
        // starts with every signal blocked and restores our mask itself.
        let sigmask = sys::block_all_signals();
        let start = Start { f, glibc, tp, sigmask, name, guard, altstack, scope };
        // SAFETY: `record` is aligned room for a Record<F, T> in the region,
        // which nobody else uses yet.
        unsafe { record.write(Record { header: Header::new(), start: MaybeUninit::new(start), result: None }) };
        // SAFETY: the stack is mapped, the thread block initialised, and
        // thread_main never returns; signals are blocked.
        let cloned = unsafe { sys::clone(&request) };
        sys::set_signal_mask(&sigmask);
        match cloned {
            Ok(tid) => Ok(Running {
                block: ManuallyDrop::new(block),
                tid,
                header: record.cast(),
                // SAFETY: a field of the record written above.
                result: unsafe { &raw mut (*record).result }.cast(),
                drop_result: drop_result::<T>,
            }),
            Err(e) => {
                // No thread: take the closure back to drop it here (with
                // what it captured, and the scope's reference); the
                // untouched region goes back to the pool.
                // SAFETY: written above and never read by anyone.
                drop(unsafe { (*record).start.assume_init_read() });
                pool::put(block);
                Err(e)
            }
        }
    }
}

/// The panic of [`spawn`] and [`crate::Scope::spawn`], which name the
/// limit when the kernel refused for lack of threads.
pub(crate) fn spawn_failed(e: io::Error) -> ! {
    if e.raw_os_error() == Some(libc::EAGAIN) {
        panic!(
            "failed to spawn thread: {e}: a limit on threads was reached \
             (RLIMIT_NPROC, kernel.threads-max, kernel.pid_max or the cgroup's pids.max)"
        );
    }
    panic!("failed to spawn thread: {e}")
}

/// The name as the kernel takes it: at most 15 bytes and a NUL, all NUL
/// when unnamed.
fn kernel_name(name: Option<&str>) -> io::Result<[u8; 16]> {
    let mut out = [0u8; 16];
    if let Some(name) = name {
        if name.contains('\0') {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let n = name.len().min(15);
        out[..n].copy_from_slice(&name.as_bytes()[..n]);
    }
    Ok(out)
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
    Builder::new().spawn(f).unwrap_or_else(|e| spawn_failed(e))
}

/// What the creator hands the child, in the child's region.
struct Start<F> {
    f: F,
    glibc: &'static Glibc,
    tp: usize,
    sigmask: libc::sigset_t,
    name: [u8; 16],
    /// The guard's range and the alternate signal stack, for [`overflow`].
    guard: Range<usize>,
    altstack: Range<usize>,
    scope: Option<Arc<ScopeData>>,
}

/// The thread's side of the handshake in [`Header::state`].
const RUNNING: u8 = 0;
/// The child stored its result: its handle frees the region.
const DONE: u8 = 1;
/// The handle was dropped first: the child frees its own region.
const DETACHED: u8 = 2;

/// The part of the record that does not depend on the closure's types.
#[repr(C)]
struct Header {
    /// RUNNING until the child (DONE) or the handle (DETACHED) swaps it;
    /// whichever swaps second learns who owns the region from then on.
    state: AtomicU8,
    /// Where a detaching handle leaves the region's ownership (`Block`) for
    /// the child, before it swaps in DETACHED. Written by one side and read
    /// by the other, ordered by the swaps, while both hold `&Header`.
    block: UnsafeCell<MaybeUninit<Block>>,
}

impl Header {
    fn new() -> Header {
        Header { state: AtomicU8::new(RUNNING), block: UnsafeCell::new(MaybeUninit::uninit()) }
    }
}

/// The record above the child's stack: `start` is moved out by the child
/// first thing; `result` is written by the child when the closure returns
/// and read by whoever then owns the region.
#[repr(C)]
struct Record<F, T> {
    header: Header,
    start: MaybeUninit<Start<F>>,
    result: Option<Result<T>>,
}

/// The child's Rust entry, called by `rawthread_thread_start` in asm.
///
/// # Safety
/// `record` is the `Record<F, T>` the creator wrote; called once, on the
/// thread whose block it names.
unsafe extern "C" fn thread_main<F, T>(record: *mut c_void) -> !
where
    F: FnOnce() -> T,
{
    let record = record.cast::<Record<F, T>>();
    // SAFETY: written by the creator before clone; read exactly once.
    let Start { f, glibc, tp, sigmask, name, guard, altstack, scope } = unsafe { (*record).start.assume_init_read() };
    // SAFETY: this is the thread `tp` belongs to, and this is its start.
    unsafe { glibc.enter(tp) };
    overflow::enter(altstack, guard, name);
    if name[0] != 0 {
        sys::set_name(CStr::from_bytes_until_nul(&name).unwrap_or_default());
    }
    sys::set_signal_mask(&sigmask);

    let result = panic::catch_unwind(AssertUnwindSafe(f));
    // SAFETY: the slot holds `None` (nothing to drop); only the region's
    // owner reads it, after the state swap below.
    unsafe { (&raw mut (*record).result).write(Some(result)) };
    if let Some(scope) = scope {
        scope.thread_done();
    }

    // SAFETY: the header is ours to read; see Header::state.
    let header = unsafe { &(*record).header };
    if header.state.swap(DONE, Ordering::AcqRel) == RUNNING {
        // The handle owns the region and will free it once we exit.
        // SAFETY: our own block, once, after the closure.
        unsafe { glibc.leave(tp) };
        sys::block_all_signals();
        sys::exit_thread();
    }
    // Detached: nobody will read the result, and the region is ours.
    // SAFETY: the handle wrote the block before swapping in DETACHED, and
    // the result slot is ours alone.
    let block = unsafe {
        ptr::drop_in_place(&raw mut (*record).result);
        (*header.block.get()).assume_init_read()
    };
    // SAFETY: our own block, once, after the closure.
    unsafe { glibc.leave(tp) };
    sys::block_all_signals();
    match pool::adopt(block) {
        // The pool hands the region out again only after our tid word is 0.
        Ok(()) => sys::exit_thread(),
        // SAFETY: our own block, destructors done, owned by nobody else.
        Err(block) => unsafe { block.unmap_and_exit() },
    }
}

/// Drops the result a thread left, unread; says whether it panicked.
///
/// # Safety
/// `slot` is a `Record<_, T>::result` the thread has written.
unsafe fn drop_result<T>(slot: *mut u8) -> bool {
    // SAFETY: per the contract, a written Option<Result<T>>.
    let result = unsafe { slot.cast::<Option<Result<T>>>().read() };
    matches!(result, Some(Err(_)))
}

/// A started thread and the ownership of its region. Dropped unjoined, it
/// detaches the thread: whichever of the two finishes second frees the
/// region (see [`Header::state`]).
pub(crate) struct Running {
    block: ManuallyDrop<Block>,
    tid: libc::pid_t,
    header: *mut Header,
    /// The record's result slot; null once taken.
    result: *mut u8,
    drop_result: unsafe fn(*mut u8) -> bool,
}

// SAFETY: the record is reached only through the single owner of the
// `Running` and the thread itself, ordered by the state handshake.
unsafe impl Send for Running {}
// SAFETY: `&Running` only reads the tid and the atomic tid word.
unsafe impl Sync for Running {}

impl Running {
    pub(crate) fn tid(&self) -> libc::pid_t {
        self.tid
    }

    /// The kernel has cleared the tid word: the thread ran its last
    /// instruction and the region is free.
    pub(crate) fn is_finished(&self) -> bool {
        self.block.tid_word().load(Ordering::Acquire) == 0
    }

    /// A thread joining itself would wait forever: panic as std does
    /// (pthread_join's EDEADLK).
    fn refuse_self_join(&self) {
        if glibc::current_tp() == self.block.region().tp() {
            panic!("failed to join thread: {}", io::Error::from_raw_os_error(libc::EDEADLK));
        }
    }

    pub(crate) fn layout(&self) -> ThreadLayout {
        self.block.layout()
    }

    fn wait(&self) {
        sys::wait_for_exit(self.block.tid_word());
    }

    /// Waits for the thread and returns what it left.
    ///
    /// # Safety
    /// `T` must be the thread's result type.
    pub(crate) unsafe fn join<T>(mut self) -> Result<T> {
        self.refuse_self_join();
        self.wait();
        let slot = std::mem::replace(&mut self.result, ptr::null_mut());
        // SAFETY: the thread exited, so its result was written, and we
        // cleared `self.result` so it is read only here.
        let result = unsafe { slot.cast::<Option<Result<T>>>().read() };
        result.expect("rawthread: a thread exited without leaving a result")
    }

    /// Waits for the thread and drops what it left; says whether it
    /// panicked.
    pub(crate) fn join_and_discard(mut self) -> bool {
        self.wait();
        let slot = std::mem::replace(&mut self.result, ptr::null_mut());
        // SAFETY: the thread exited; the slot is read only here.
        unsafe { (self.drop_result)(slot) }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: `self.block` is not used again after this take.
        let block = unsafe { ManuallyDrop::take(&mut self.block) };
        if self.result.is_null() {
            // Joined: the thread is gone.
            return pool::put(block);
        }
        // SAFETY: the header lives in the region, which is still mapped: we
        // own it until the swap below hands it over.
        let header = unsafe { &*self.header };
        // SAFETY: the child reads the slot only after seeing DETACHED, which
        // our swap below publishes after this write.
        unsafe { (*header.block.get()).write(block) };
        if header.state.swap(DETACHED, Ordering::AcqRel) == DONE {
            // The thread stored its result before we detached, so it will
            // not free the region: we do, with the unread result.
            // SAFETY: the thread is past its swap and touches neither the
            // result nor the block slot again.
            unsafe {
                (self.drop_result)(self.result);
                pool::put((*header.block.get()).assume_init_read());
            }
        }
    }
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
