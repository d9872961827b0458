//! The life of one thread, from its creator's call to the joiner's return:
//! the start record in the region, the child's entry and exit, the
//! handshake that decides who frees the region, and the running handle
//! that both the plain API (`thread.rs`) and the scoped one (`scope.rs`)
//! wrap.
//!
//! # Who owns the region, and when
//!
//! 1. **Creator, alone.** `Builder::spawn` takes a finished region from the
//!    pool (one whose tid word the kernel has cleared) or maps a new one (guard
//!    markers or `PROT_NONE`). With its signals open, the creator puts the zeroed block on
//!    glibc's thread list (`glibc/lists.rs`): from now on `setuid()` and
//!    `dlopen` reach the thread, which does not exist yet. Then glibc's loader
//!    fills the static TLS from every module's image and allocates the DTV; the
//!    TCB header is written (`tcb`, `self`, `multiple_threads`, the stack and
//!    pointer guards, rseq, the locale's ctype tables, the resolver); malloc's
//!    per-thread state (its cache and arena) is the one the region's last
//!    thread left, or one kept from an unmapped region, or new. The start
//!    record (closure, the name, the thread's own signal mask if it has one)
//!    goes above the stack. The first spawn in a process also discovers glibc's
//!    private layout once, and starts the one pthread rawthread ever makes: a
//!    probe that finds where glibc keeps a thread's stack bounds, its
//!    `strerror` buffers and malloc's state (and checks that handing that state
//!    on hands on the cache), and puts glibc in multi-threaded mode its own
//!    way; then holds two raw threads against that pthread (the twin census,
//!    `glibc/census.rs`), refusing a glibc whose threads do what rawthread's
//!    do not. Racing first spawns wait for the one probe and census under
//!    way, under a lock `fork()` takes too, and nothing else computed lazily
//!    is ever waited for, so a `fork()` at any instant leaves a child that
//!    can spawn. The block is complete before the thread exists: even the
//!    locale's tables, which glibc's own threads set themselves.
//! 2. **clone.** `clone3` (or `clone`, if the kernel or a seccomp filter
//!    refuses `clone3`) starts the child with `%fs` = `tp` and the
//!    creator's signal mask; the kernel writes the child's tid into the
//!    TCB's `tid` word before either side runs on. A handler may run on
//!    the child from its first instruction, on a complete block. (A child
//!    with a mask of its own, or gated, starts with every signal blocked:
//!    the creator blocks them around the clone.) The creator returns a
//!    `JoinHandle`, which owns the region from now on.
//! 3. **Child, running.** The child owns everything in the region but the
//!    tid word and the record's header. It registers rseq and its signal stack,
//!    waits at its gate if the creator has set-up to do, sets its own mask if
//!    it has one, and runs the closure under `catch_unwind`. It stores the
//!    result in the record, runs `thread_local!` destructors
//!    (`__call_tls_dtors`) and pthread-key destructors, frees what glibc's own
//!    thread exit frees (the resolver's sockets, `strerror`/`strsignal`
//!    buffers, the `dlerror` message; not malloc's state, which is handed on),
//!    blocks every signal but SIGSETXID, as glibc does for its last steps,
//!    takes itself off glibc's thread list (SIGSETXID still open, so that a
//!    `setuid()` under way gets its answer), gives back to the kernel its
//!    stack pages more than 64 KiB below its last frame
//!    (`region::release_stack`) and ends with a raw `SYS_exit`:
//!    this thread only, never the process. (A detached thread blocks all
//!    signals before it gives its region away.) A spawn whose clone failed
//!    takes the block off the list itself.
//! 4. **Exit.** The kernel, done with the thread, writes 0 to the tid word
//!    and futex-wakes it (`CLONE_CHILD_CLEARTID`). Only from then is the
//!    region free: this, not the closure's return, is what `join` waits for.
//! 5. **Joiner.** `JoinHandle::join` sleeps on the tid word at once (a
//!    *shared* futex, as the kernel's wake is shared) until it reads 0, as
//!    `pthread_join` does (why no spin first: `join.rs`). It takes the
//!    result and gives the region back to the pool, which unmaps what
//!    exceeds its limits (freeing the DTV, keeping malloc's state aside).
//!
//! **Detaching.** Dropping a `JoinHandle` first leaves the region's
//! ownership in the record's header, then swaps the header's state from
//! RUNNING to DETACHED; the child, once its result is stored, swaps it to
//! DONE. Whichever swaps second learns who frees the region: a handle that
//! finds DONE gives the region to the pool itself (the pool reuses it only
//! once the tid word is 0); a child that finds DETACHED drops its own
//! result and, after its destructors, gives its region to the pool, or,
//! when the pool is full, unregisters rseq, frees its DTV, hands on malloc's
//! state and unmaps the region it runs on in assembly (`asm/x86_64.s`:
//! signals blocked, `set_tid_address(NULL)` so the kernel's exit write
//! cannot land in a reused mapping, `munmap`, `exit`).
//!
//! **Scoped threads** never detach: an unjoined `ScopedJoinHandle` goes to
//! its scope, and `scope` waits for every closure, then joins every such
//! thread (tid word 0) and drops its result before it returns, until none
//! is left (a result may hold other handles). Only a handle leaked with
//! `mem::forget` escapes the join; its result is leaked with it.
//!

use std::alloc::Layout;
use std::cell::UnsafeCell;
use std::ffi::{CStr, c_void};
use std::io;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::thread::Result;

use crate::glibc::{self, Block, Glibc};
use crate::lazy::LazyUsize;
use crate::name::{self, ThreadName};
use crate::region::{self, Region, ThreadLayout, page_size};
use crate::{clone, fork, join, overflow, pool, sys};

/// A thread's settings, as the builders take them.
#[derive(Debug, Default)]
pub(crate) struct Options {
    pub name: Option<String>,
    pub stack_size: Option<usize>,
    pub guard_size: Option<usize>,
    /// The signals the thread starts with blocked, as the kernel's 64-bit
    /// mask; the creator's mask if `None`.
    pub signal_mask: Option<u64>,
    /// The CPUs the thread may run on, as the kernel's mask (bit n: CPU n);
    /// the creator's if `None`.
    pub affinity: Option<Vec<u64>>,
    /// The thread's scheduling policy; the creator's if `None`.
    pub scheduling: Option<SchedParams>,
    /// Whether the handle carries a pidfd for the thread.
    pub pidfd: bool,
}

impl Options {
    /// Whether the creator has set-up to do on the child after `clone`,
    /// before the child may run user code.
    fn gated(&self) -> bool {
        self.affinity.is_some() || self.scheduling.is_some() || self.pidfd
    }
}

/// A scheduling policy as `sched_setattr(2)` takes it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SchedParams {
    pub policy: libc::c_int,
    /// For `SCHED_OTHER` and `SCHED_BATCH`: -20 to 19.
    pub nice: i32,
    /// For `SCHED_FIFO` and `SCHED_RR`: 1 to 99.
    pub priority: u32,
}

/// The nice values there are; the kernel would clamp others silently.
const NICE_RANGE: std::ops::RangeInclusive<i32> = -20..=19;

/// glibc's internal SIGCANCEL (32) and SIGSETXID (33), which no thread may
/// block (glibc's own `pthread_sigmask` refuses to): `setuid()` waits for
/// every thread to take SIGSETXID.
const GLIBC_INTERNAL_SIGNALS: u64 = (1 << (32 - 1)) | (1 << (33 - 1));

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

/// Counts a scope's threads whose closures have not returned, and wakes
/// the scope's owner when the last one does.
pub(crate) struct Latch {
    running: AtomicUsize,
    owner: std::thread::Thread,
}

impl Latch {
    /// A latch whose owner is the calling thread.
    pub(crate) fn new() -> Latch {
        Latch { running: AtomicUsize::new(0), owner: std::thread::current() }
    }

    /// One more thread to wait for (undone by [`Latch::thread_done`]).
    pub(crate) fn add(&self) {
        self.running.fetch_add(1, Ordering::Relaxed);
    }

    /// Called by a thread once its closure returned and its result is
    /// stored (or by its spawner, if the spawn failed); after this it
    /// touches nothing the scope borrows.
    pub(crate) fn thread_done(&self) {
        if self.running.fetch_sub(1, Ordering::Release) == 1 {
            self.owner.unpark();
        }
    }

    /// How many closures are still running.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// In the owner: parks until every closure has returned.
    pub(crate) fn wait(&self) {
        while self.running() != 0 {
            std::thread::park();
        }
    }
}

/// Spawns `f` without lifetime bounds; `latch`, if any, is told once
/// the closure has returned and its result is stored.
///
/// # Safety
/// Whatever `f` and its result borrow must outlive the thread's use of
/// them: the caller joins before they go (as [`crate::scope`] does).
pub(crate) unsafe fn spawn<F, T>(options: Options, f: F, latch: Option<Arc<Latch>>) -> io::Result<Running>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    #[cfg(feature = "bench")]
    crate::bench::stamp(crate::bench::Phase::Entry);
    // First, as std's spawn: a NUL in the name panics before anything.
    let name = ThreadName::new(options.name.as_deref());
    // Before any of rawthread's locks is first taken (see fork.rs).
    fork::install();
    let glibc = glibc::get()?;
    overflow::install();
    let (stack, guard) = (options.stack_size, options.guard_size);
    glibc::census(glibc, &|scheduling, created, body, exited| {
        census_twin(glibc, stack, guard, scheduling, created, body, exited)
    })?;
    // SAFETY: the caller's contract.
    unsafe { spawn_on(glibc, options, name, f, latch, None) }
}

/// A raw thread of the twin census (`glibc/census.rs`): spawned by the
/// path every thread takes, with the `stack` and `guard` sizes the first
/// spawn asks for and `scheduling` if given, with `created` seeing its
/// block just before its clone, running `body`; `exited` sees its block
/// after its exit, before the join gives the region back.
fn census_twin(
    glibc: &'static Glibc,
    stack: Option<usize>,
    guard: Option<usize>,
    scheduling: Option<glibc::Scheduling>,
    created: glibc::Created,
    body: &(dyn Fn() + Sync),
    exited: &mut dyn FnMut(&Block),
) -> io::Result<()> {
    // The room of the thread that the first spawn makes next, which then
    // takes the region from the pool, as the census's second thread takes
    // its first's; at least the room the battery needs. Where the pool
    // would not keep a region that large (its limits), the census's own
    // small room instead: its second thread must run on a reused region.
    let stack = stack.unwrap_or_else(default_stack_size).max(CENSUS_STACK_SIZE);
    let guard = guard.unwrap_or_else(page_size);
    let limits = pool::pool_limits();
    let kept = limits.regions > 0 && stack.saturating_add(guard).saturating_add(REGION_BESIDE_STACK) <= limits.bytes;
    let (stack, guard) = if kept { (stack, guard) } else { (CENSUS_STACK_SIZE, page_size()) };
    let scheduling = scheduling.map(|(policy, nice, priority)| SchedParams { policy, nice, priority });
    let options = Options { stack_size: Some(stack), guard_size: Some(guard), scheduling, ..Options::default() };
    // SAFETY: joined below, while `body` lives.
    let running = unsafe { spawn_on(glibc, options, ThreadName::new(None), body, None, Some(created)) }?;
    crate::sys::yield_until(|| running.block.exit_word().load(Ordering::Acquire) == 0);
    running.wait();
    exited(&running.block);
    running.join_and_discard();
    Ok(())
}

/// The least stack of the census's threads: room for glibc's `dlopen` and
/// the rest of the battery.
const CENSUS_STACK_SIZE: usize = 128 << 10;

/// More than a region holds beside its stack and guard (the signal stack,
/// TLS, thread block and start record), for [`census_twin`]'s guess of
/// whether the pool keeps a region.
const REGION_BESIDE_STACK: usize = 1 << 20;

/// [`spawn`] on a discovered glibc, past the census, with the thread's
/// `name` made from `options`; `created`, if given, sees the block just
/// before the clone, and may refuse it (the census).
///
/// # Safety
/// As [`spawn`].
unsafe fn spawn_on<F, T>(
    glibc: &'static Glibc,
    options: Options,
    name: ThreadName,
    f: F,
    latch: Option<Arc<Latch>>,
    created: Option<glibc::Created>,
) -> io::Result<Running>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    if options.scheduling.is_some_and(|s| !NICE_RANGE.contains(&s.nice)) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let stack = options.stack_size.unwrap_or_else(default_stack_size).max(MIN_STACK_SIZE);
    let guard = options.guard_size.unwrap_or_else(page_size);
    let layout = Layout::new::<Record<F, T>>();
    let block = match pool::take(guard, stack, layout) {
        Some((block, plan)) => block.renew(plan)?,
        None => Block::new(glibc, Region::map(guard, stack, layout, &glibc.geometry())?)?,
    };
    if let Some(SchedParams { policy, priority, .. }) = options.scheduling {
        block.record_scheduling(policy, priority as i32);
    }
    #[cfg(feature = "bench")]
    crate::bench::stamp(crate::bench::Phase::BlockReady);

    let region = block.region();
    let tp = region.tp();
    let record = region.record() as *mut Record<F, T>;
    let request = clone::CloneRequest {
        flags: clone::THREAD_FLAGS,
        exit_signal: 0,
        stack_low: region.stack().start,
        stack_top: region.stack().end,
        tls: tp,
        tid_word: block.tid_word().as_ptr(),
        exit_word: block.exit_word().as_ptr(),
        pidfd: ptr::null_mut(),
        entry: thread_main::<F, T>,
        arg: record.cast(),
    };
    let (guard, altstack) = (region.guard(), region.altstack());
    // The block is on glibc's thread list already, since before its TLS
    // was filled (glibc/block.rs): a setuid() or dlopen racing with this
    // spawn reaches the thread, which does not exist yet.
    // The thread block is live before the child exists (TLS, TCB, the
    // locale's tables), so a signal handler may run on the child from its
    // first instruction, as on any thread with our mask: the child simply
    // inherits it, and no system call is spent on masks. Only a child
    // that must not run a handler before a given point starts with every
    // signal blocked: one with a mask of its own (it may block what we do
    // not), or one the creator sets up after clone (not a line of user
    // code before it is done).
    let creator_mask = (options.signal_mask.is_some() || options.gated()).then(sys::block_all_signals);
    let sigmask = match options.signal_mask {
        Some(mask) => Some(sys::signal_set(mask & !GLIBC_INTERNAL_SIGNALS)),
        None => creator_mask,
    };
    let start = Start { f, glibc, tp, sigmask, name, guard, altstack, latch };
    // SAFETY: `record` is aligned room for a Record<F, T> in the region,
    // which nobody else uses yet.
    unsafe {
        record.write(Record { header: Header::new(options.gated()), start: MaybeUninit::new(start), result: None })
    };
    #[cfg(feature = "bench")]
    crate::bench::stamp(crate::bench::Phase::BeforeClone);
    glibc::count(glibc);
    let refused = created.map_or(Ok(()), |created| created(&block));
    // SAFETY: the stack is mapped, the thread block initialised, and
    // thread_main never returns.
    let cloned = refused.and_then(|()| unsafe { clone::clone(&request) });
    #[cfg(feature = "bench")]
    crate::bench::stamp(crate::bench::Phase::CloneReturned);
    if let Some(mask) = &creator_mask {
        sys::set_signal_mask(mask);
    }
    match cloned {
        Ok(tid) => {
            // SAFETY: the header lives as long as the region, which we own.
            let gate = unsafe { &(*record).header.gate };
            let pidfd = match options.gated().then(|| set_up(&options, tid)) {
                None => None,
                Some(Ok(pidfd)) => {
                    gate.set(OPEN);
                    pidfd
                }
                Some(Err(e)) => {
                    // The child exits without running any user code; once
                    // it has, its record and region are ours again.
                    gate.set(CANCELLED);
                    join::wait_for_exit(block.exit_word());
                    // SAFETY: the child never read the start; it is gone.
                    return unsafe { fail(record, block, e) };
                }
            };
            Ok(Running {
                block: ManuallyDrop::new(block),
                tid,
                header: record.cast(),
                // SAFETY: a field of the record written above.
                result: unsafe { &raw mut (*record).result }.cast(),
                drop_result: drop_result::<T>,
                pidfd,
            })
        }
        Err(e) => {
            // No thread (the clone failed, or the census refused the
            // block): uncounted, off the list, and the closure back.
            block.never_started();
            // SAFETY: listed above; no thread ever ran on the block.
            unsafe { glibc::unlist(glibc, tp) };
            // SAFETY: written above and never read by anyone.
            unsafe { fail(record, block, e) }
        }
    }
}

/// Ends a spawn that failed after its record was written: takes the start
/// (the closure, with what it captured, and the latch) out of the record,
/// gives the untouched region back to the pool, then drops the closure
/// here, as std drops a failed spawn's in its caller: a panic in that drop
/// unwinds from `spawn`, with nothing left behind.
///
/// # Safety
/// `record` is `block`'s record, written, its start read by no one, and
/// no thread runs on the block.
unsafe fn fail<F, T>(record: *mut Record<F, T>, block: Block, e: io::Error) -> io::Result<Running> {
    // SAFETY: per the contract.
    let start = unsafe { (*record).start.assume_init_read() };
    pool::put(block);
    drop(start);
    Err(e)
}

/// What the creator does to a gated child, which waits at its gate until
/// this is done, so that its first line of user code already runs with
/// them (glibc's `pthread_create` does the same to a thread it holds on
/// its `lock`); the pidfd last, so that an error leaves no fd to close.
fn set_up(options: &Options, tid: libc::pid_t) -> io::Result<Option<OwnedFd>> {
    if let Some(mask) = &options.affinity {
        sys::set_affinity(tid, mask)?;
    }
    if let Some(SchedParams { policy, nice, priority }) = options.scheduling {
        sys::set_scheduling(tid, policy, nice, priority)?;
    }
    if !options.pidfd {
        return Ok(None);
    }
    match sys::thread_pidfd(tid) {
        Ok(pidfd) => Ok(Some(pidfd)),
        // Before Linux 6.9, pidfd_open refuses PIDFD_THREAD (before 5.3,
        // pidfd_open itself).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("rawthread: this kernel gives no pidfd for a thread (Linux 6.9's PIDFD_THREAD): {e}"),
        )),
        Err(e) => Err(e),
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

/// What the creator hands the child, in the child's region.
struct Start<F> {
    f: F,
    glibc: &'static Glibc,
    tp: usize,
    /// The mask the child sets once it may run user code; `None`: it runs
    /// with the one it inherited, ours.
    sigmask: Option<libc::sigset_t>,
    name: ThreadName,
    /// The guard's range and the alternate signal stack, for [`overflow`].
    guard: Range<usize>,
    altstack: Range<usize>,
    latch: Option<Arc<Latch>>,
}

/// The thread's side of the handshake in [`Header::state`].
const RUNNING: u8 = 0;
/// The child stored its result: its handle frees the region.
const DONE: u8 = 1;
/// The handle was dropped first: the child frees its own region.
const DETACHED: u8 = 2;

/// A word set once, which any number of threads may sleep on until it is:
/// [`UNSET`], [`AWAITED`] (unset, and somebody sleeps on it), or the value
/// it was set to.
struct Event(AtomicI32);

const UNSET: i32 = 0;
const AWAITED: i32 = 1;

impl Event {
    fn new(state: i32) -> Event {
        Event(AtomicI32::new(state))
    }

    /// Sets the word to `value` (above [`AWAITED`]), once, and wakes every
    /// sleeper: `&JoinHandle` is `Sync`, so several may wait.
    fn set(&self, value: i32) {
        if self.0.swap(value, Ordering::Release) == AWAITED {
            sys::futex_wake_private(&self.0, i32::MAX);
        }
    }

    /// The value the word was set to, once it is.
    fn wait(&self) -> i32 {
        loop {
            match self.0.load(Ordering::Acquire) {
                UNSET => {
                    let _ = self.0.compare_exchange(UNSET, AWAITED, Ordering::Acquire, Ordering::Acquire);
                }
                AWAITED => sys::futex_wait_private(&self.0, AWAITED),
                value => return value,
            }
        }
    }
}

/// The child's start gate ([`Header::gate`]): it may run user code...
const OPEN: i32 = 2;
/// ...or the creator's set-up failed, and the child must exit at once.
const CANCELLED: i32 = 3;

/// The thread's [`std::thread::Thread`], which the child publishes before
/// its closure runs, for `JoinHandle::thread`: std makes a thread's
/// `Thread` on its first `thread::current()`, in that thread, and offers
/// no way to hand it one made elsewhere.
struct Published {
    /// Set to [`PUBLISHED`] once `thread` is written.
    state: Event,
    thread: UnsafeCell<MaybeUninit<std::thread::Thread>>,
}

const PUBLISHED: i32 = 2;

impl Published {
    fn new() -> Published {
        Published { state: Event::new(UNSET), thread: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// In the child, once.
    fn publish(&self, thread: std::thread::Thread) {
        // SAFETY: nobody reads the slot before the event says so.
        unsafe { (*self.thread.get()).write(thread) };
        self.state.set(PUBLISHED);
    }

    /// Waits (only until the child has started) for the published thread.
    fn get(&self) -> &std::thread::Thread {
        self.state.wait();
        // SAFETY: published, and dropped only with the record's owner.
        unsafe { (*self.thread.get()).assume_init_ref() }
    }

    /// Drops the published thread.
    ///
    /// # Safety
    /// Called once, by the region's owner, after the child published it
    /// and while no `&Thread` from [`Published::get`] is alive.
    unsafe fn drop_published(&self) {
        debug_assert_eq!(self.state.0.load(Ordering::Acquire), PUBLISHED);
        // SAFETY: per the contract.
        unsafe { (*self.thread.get()).assume_init_drop() };
    }
}

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
    /// The thread's `Thread`, published by the child.
    thread: Published,
    /// [`OPEN`] from the start, unless the creator has set-up to do on the
    /// child first ([`set_up`]): then unset until the creator opens it or
    /// cancels the thread.
    gate: Event,
}

impl Header {
    fn new(gated: bool) -> Header {
        Header {
            state: AtomicU8::new(RUNNING),
            block: UnsafeCell::new(MaybeUninit::uninit()),
            thread: Published::new(),
            gate: Event::new(if gated { UNSET } else { OPEN }),
        }
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
    #[cfg(feature = "bench")]
    crate::bench::stamp(crate::bench::Phase::ChildFirst);
    let record = record.cast::<Record<F, T>>();
    // SAFETY: written by the creator before clone; moved out only below,
    // once the gate is open (or by the creator, after our exit).
    let start = unsafe { (*record).start.assume_init_ref() };
    let (glibc, tp) = (start.glibc, start.tp);
    // SAFETY: this is the thread `tp` belongs to, and this is its start.
    unsafe { glibc::enter(glibc, tp) };
    overflow::enter(start.altstack.clone(), start.guard.clone(), start.name.kernel);
    if start.name.kernel[0] != 0 {
        sys::set_name(CStr::from_bytes_until_nul(&start.name.kernel).unwrap_or_default());
    }
    // SAFETY: the header lives as long as the region, which outlives us.
    let header = unsafe { &(*record).header };
    if header.gate.wait() == CANCELLED {
        // The spawn fails, and the creator takes the closure back once we
        // have exited: no user code runs here. Only glibc's signals are let
        // in, so that a setuid() under way reaches us before we leave
        // glibc's list (it would wait for our answer for ever).
        sys::set_signal_mask(&sys::signal_set(!GLIBC_INTERNAL_SIGNALS));
        // SAFETY: our own block, once; no user code ran on it.
        unsafe { glibc::leave(glibc, tp) };
        sys::exit_thread();
    }
    // SAFETY: the gate is open: the start is ours, read exactly once.
    let Start { f, sigmask, latch, name, guard, .. } = unsafe { (*record).start.assume_init_read() };
    if let Some(mask) = &sigmask {
        sys::set_signal_mask(mask);
    }
    // Named before anyone else can reach the thread's `Thread`, and before
    // user code: the closure, its panics and its TLS destructors read it.
    let thread = std::thread::current();
    if let Some(name) = name.std {
        name::give(&thread, name);
    }
    header.thread.publish(thread);

    #[cfg(feature = "bench")]
    crate::bench::stamp(crate::bench::Phase::ClosureStart);
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    #[cfg(feature = "bench")]
    crate::bench::stamp(crate::bench::Phase::ClosureEnd);
    // SAFETY: the slot holds `None` (nothing to drop); only the region's
    // owner reads it, after the state swap below.
    unsafe { (&raw mut (*record).result).write(Some(result)) };
    if let Some(latch) = latch {
        latch.thread_done();
    }

    if header.state.swap(DONE, Ordering::AcqRel) == RUNNING {
        // The handle owns the region and will free it once we exit. Until
        // then everything the thread has stays in place (its TLS, its DTV,
        // malloc's cache); `leave` blocks all but SIGSETXID for the last
        // steps, as glibc does.
        // SAFETY: our own block, once, after the closure.
        unsafe { glibc::leave(glibc, tp) };
        region::release_stack(guard.end);
        #[cfg(feature = "bench")]
        crate::bench::stamp(crate::bench::Phase::ChildExit);
        sys::exit_thread();
    }
    // Detached: nobody will read the result, and the region is ours.
    // SAFETY: the handle wrote the block before swapping in DETACHED, and
    // the result slot is ours alone.
    let block = unsafe {
        drop_unread(|| ptr::drop_in_place(&raw mut (*record).result));
        header.thread.drop_published();
        (*header.block.get()).assume_init_read()
    };
    // SAFETY: our own block, once, after the closure.
    unsafe { glibc::leave(glibc, tp) };
    region::release_stack(guard.end);
    // From here no handler may run: the region is handed to the pool, or
    // its DTV freed and malloc's cache handed on before it is unmapped.
    sys::block_all_signals();
    #[cfg(feature = "bench")]
    crate::bench::stamp(crate::bench::Phase::ChildExit);
    match pool::adopt(block) {
        // The pool hands the region out again only after our tid word is 0.
        Ok(()) => sys::exit_thread(),
        // SAFETY: our own block, destructors done, owned by nobody else.
        Err(block) => unsafe { block.unmap_and_exit() },
    }
}

/// Drops the result of a detached thread, which nobody will read, as std
/// does: a panic in its `Drop` has nowhere to go, so it ends the process
/// with std's message and SIGABRT.
fn drop_unread(drop: impl FnOnce()) {
    if panic::catch_unwind(AssertUnwindSafe(drop)).is_err() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"fatal runtime error: thread result panicked on drop, aborting\n",
        );
        std::process::abort();
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
    /// The thread's pidfd, if the builder asked for one.
    pidfd: Option<OwnedFd>,
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
        self.block.exit_word().load(Ordering::Acquire) == 0
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

    /// The thread's pidfd, if it was spawned with one.
    pub(crate) fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// The thread's `std::thread::Thread`, once it has started.
    pub(crate) fn thread(&self) -> &std::thread::Thread {
        // SAFETY: the header lives in the region we own.
        unsafe { &*self.header }.thread.get()
    }

    fn wait(&self) {
        join::wait_for_exit(self.block.exit_word());
        #[cfg(feature = "bench")]
        crate::bench::stamp(crate::bench::Phase::Woken);
    }

    /// Waits for the thread's exit for at most `timeout_ns`; whether it
    /// has exited.
    pub(crate) fn wait_within(&self, timeout_ns: u64) -> bool {
        self.refuse_self_join();
        join::wait_for_exit_within(self.block.exit_word(), Some(timeout_ns))
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
        // SAFETY: the header lives in the region, which is still mapped: we
        // own it until the swap below hands it over.
        let header = unsafe { &*self.header };
        if self.result.is_null() {
            // Joined: the thread is gone, and published its Thread first.
            // SAFETY: we own the region; no `&Thread` outlives `&self`.
            unsafe { header.thread.drop_published() };
            return pool::put(block);
        }
        // SAFETY: the child reads the slot only after seeing DETACHED, which
        // our swap below publishes after this write.
        unsafe { (*header.block.get()).write(block) };
        if header.state.swap(DETACHED, Ordering::AcqRel) == DONE {
            // The thread stored its result before we detached, so it will
            // not free the region: we do, with the unread result.
            // SAFETY: the thread is past its swap and touches neither the
            // result nor the block slot again.
            unsafe {
                drop_unread(|| {
                    (self.drop_result)(self.result);
                });
                header.thread.drop_published();
                pool::put((*header.block.get()).assume_init_read());
            }
        }
    }
}
