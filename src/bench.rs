//! The benchmark's fixtures, built only with the `bench` feature (which
//! the crate's own benchmarks enable): the kernel floor, the least a thread
//! can cost — one `clone` on a stack made once, no TLS, no thread block, no
//! signal masking — whose child stamps the clock and exits, and that clock.
//! They let `cargo bench` show how far each real way of making a thread is
//! from what the kernel alone charges; and one step of rawthread's own
//! timed apart, its place on glibc's thread list; and the phase stamps, a
//! timeline of one spawn (see [`Phase`]). They are no part of the thread
//! API.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};

use memmap2::{MmapMut, MmapOptions};

use crate::glibc::{self, Block};
use crate::region::{Region, page_size};
use crate::{clone, join, sys};

/// CLOCK_MONOTONIC in nanoseconds: the benchmark's one clock, which the
/// floor thread (with no TLS of its own) can read too.
///
/// ```
/// let before = rawthread::bench::now_ns();
/// let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
/// // SAFETY: a valid timespec.
/// unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
/// let monotonic = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
/// assert!(before <= monotonic && monotonic <= rawthread::bench::now_ns()); // the same clock
/// ```
pub fn now_ns() -> u64 {
    sys::now_ns()
}

/// What keeping its threads on glibc's thread list adds to each rawthread
/// spawn+join: `pairs` times, a thread block is put on the list and taken
/// off again under glibc's lock, as a spawn and the thread's exit do.
/// Returns nanoseconds per pair.
///
/// ```
/// let ns = rawthread::bench::thread_list_cost(1000)?;
/// assert!(ns.is_finite() && ns >= 0.0);
/// // The list is as it was: threads of both kinds still come and go.
/// assert_eq!(rawthread::spawn(|| 1).join().unwrap() + std::thread::spawn(|| 2).join().unwrap(), 3);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn thread_list_cost(pairs: u32) -> io::Result<f64> {
    let glibc = glibc::get()?;
    let block =
        Block::new(glibc, Region::map(page_size(), 64 << 10, std::alloc::Layout::new::<u8>(), &glibc.geometry())?)?;
    let tp = block.region().tp();
    let start = now_ns();
    for _ in 0..pairs {
        // SAFETY: a block of this glibc, listed by Block::new and between
        // the two calls, mapped until `block` drops; no thread ever runs
        // on it.
        unsafe {
            glibc::unlist(glibc, tp);
            glibc::list(glibc, tp);
        }
    }
    let ns = (now_ns() - start) as f64 / f64::from(pairs.max(1));
    // SAFETY: listed; off the list before `block` frees it.
    unsafe { glibc::unlist(glibc, tp) };
    Ok(ns)
}

/// A reusable 64 KiB stack and the tid word of the one floor thread that
/// may run on it at a time. Dropping it joins that thread first.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// static STAMPS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// let mut floor = rawthread::bench::KernelFloor::new()?;
/// for stamp in &STAMPS {
///     // SAFETY: no signal is sent here and the floor thread does not fault: no handler runs on its TLS.
///     unsafe { floor.spawn(stamp)? };
///     floor.join(); // the stack is free for the next one
/// }
/// let [first, second] = STAMPS.each_ref().map(|stamp| stamp.load(Ordering::Acquire));
/// assert!(0 < first && first <= second); // one after the other, on the one stack
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct KernelFloor {
    stack: MmapMut,
    tid: Box<AtomicI32>,
}

/// The floor thread: runs on the creator's TLS, so it touches none.
unsafe extern "C" fn floor_main(stamp: *mut libc::c_void) -> ! {
    crate::bench::stamp(Phase::ChildFirst);
    // SAFETY: a 'static AtomicU64 (see KernelFloor::spawn).
    unsafe { (*stamp.cast::<AtomicU64>()).store(now_ns(), Ordering::Release) };
    crate::bench::stamp(Phase::ChildExit);
    sys::exit_thread()
}

impl KernelFloor {
    /// Maps the stack.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// static A: AtomicU64 = AtomicU64::new(0);
    /// static B: AtomicU64 = AtomicU64::new(0);
    /// let (mut a, mut b) = (rawthread::bench::KernelFloor::new()?, rawthread::bench::KernelFloor::new()?);
    /// // SAFETY: no signal is sent here and the floor threads do not fault: no handler runs on their TLS.
    /// unsafe { a.spawn(&A).and_then(|()| b.spawn(&B))? }; // two at once, each on its own stack
    /// drop((a, b)); // dropping joins
    /// assert!(A.load(Ordering::Acquire) != 0 && B.load(Ordering::Acquire) != 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn new() -> io::Result<KernelFloor> {
        Ok(KernelFloor {
            stack: MmapOptions::new().len(64 << 10).stack().map_anon()?,
            tid: Box::new(AtomicI32::new(0)),
        })
    }

    /// Starts the floor thread, which stores CLOCK_MONOTONIC into `stamp`
    /// and exits; returns when `clone` does. (`'static`: the thread may
    /// outlive any borrow, up to the next `join`.)
    ///
    /// # Safety
    /// The floor thread runs on the caller's thread pointer, sharing its
    /// TLS: no signal handler that touches TLS (or anything else the
    /// caller's thread owns) may run on it, so the caller must keep every
    /// signal with such a handler blocked or away from the process until
    /// [`KernelFloor::join`] returns.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// static STAMP: AtomicU64 = AtomicU64::new(0);
    /// let mut floor = rawthread::bench::KernelFloor::new()?;
    /// let before = rawthread::bench::now_ns();
    /// // SAFETY: no signal is sent here and the floor thread does not fault: no handler runs on its TLS.
    /// unsafe { floor.spawn(&STAMP)? };
    /// floor.join();
    /// let stamp = STAMP.load(Ordering::Acquire);
    /// assert!(before <= stamp && stamp <= rawthread::bench::now_ns()); // stamped while it ran
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub unsafe fn spawn(&mut self, stamp: &'static AtomicU64) -> io::Result<()> {
        assert_eq!(self.tid.load(Ordering::Acquire), 0, "join the floor thread before the next spawn");
        let low = self.stack.as_mut_ptr() as usize;
        let request = clone::CloneRequest {
            // A thread like the others, minus CLONE_SETTLS: it keeps our
            // %fs and must not touch TLS.
            flags: clone::THREAD_FLAGS & !(libc::CLONE_SETTLS as u64),
            exit_signal: 0,
            stack_low: low,
            stack_top: low + self.stack.len(),
            tls: 0,
            tid_word: self.tid.as_ptr(),
            exit_word: self.tid.as_ptr(),
            pidfd: ptr::null_mut(),
            entry: floor_main,
            arg: ptr::from_ref(stamp).cast_mut().cast(),
        };
        crate::bench::stamp(Phase::BeforeClone);
        // SAFETY: a mapped stack nobody else uses (tid 0: the last floor
        // thread is gone); floor_main touches neither TLS nor our stack,
        // and the caller keeps TLS-touching handlers off it.
        let cloned = unsafe { clone::clone(&request) }.map(drop);
        crate::bench::stamp(Phase::CloneReturned);
        cloned
    }

    /// Waits until the floor thread has exited.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// static STAMP: AtomicU64 = AtomicU64::new(0);
    /// let mut floor = rawthread::bench::KernelFloor::new()?;
    /// // SAFETY: no signal is sent here and the floor thread does not fault: no handler runs on its TLS.
    /// unsafe { floor.spawn(&STAMP)? };
    /// floor.join();
    /// assert_ne!(STAMP.load(Ordering::Acquire), 0); // it stamped before it exited
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn join(&self) {
        join::wait_for_exit(&self.tid);
        crate::bench::stamp(Phase::Woken);
    }
}

impl Drop for KernelFloor {
    fn drop(&mut self) {
        // The stack and the tid word must outlive the thread.
        self.join();
    }
}

// ---------------------------------------------------------------------------
// Phase stamps
// ---------------------------------------------------------------------------

/// The boundaries of one spawn's timeline, in the order they happen on the
/// way from the creator's call to the joiner's return (two, `CloneReturned`
/// and `Returned`, are on the creator's side, beside the child's path).
/// rawthread's own code stamps most of them (`life.rs`, built with the
/// `bench` feature); the benchmark stamps the rest around its calls, and
/// the kernel floor stamps its own. Each is recorded only while the
/// benchmark has [`arm`]ed the stamps, and only its first stamp counts.
///
/// ```
/// use rawthread::bench::Phase;
/// assert_eq!(Phase::ALL.len(), Phase::COUNT);
/// assert_eq!(Phase::ALL[Phase::ChildFirst as usize], Phase::ChildFirst);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The benchmark calls spawn (its clock read `t0`).
    Call,
    /// rawthread's spawn is entered, past the builder.
    Entry,
    /// The region is taken from the pool (or mapped) and its thread block
    /// renewed (or made).
    BlockReady,
    /// Just before the `clone`/`clone3` system call.
    BeforeClone,
    /// The system call has returned in the creator.
    CloneReturned,
    /// The child's first instruction in Rust (the floor's: its first).
    ChildFirst,
    /// The child is about to run the closure.
    ClosureStart,
    /// The closure has returned.
    ClosureEnd,
    /// The child's last step before its final `SYS_exit`.
    ChildExit,
    /// The joiner's wait on the tid word has returned.
    Woken,
    /// The spawn call has returned to the benchmark.
    Returned,
    /// The join has returned to the benchmark.
    Joined,
}

impl Phase {
    /// How many boundaries there are.
    ///
    /// ```
    /// assert_eq!(rawthread::bench::Phase::COUNT, 12);
    /// ```
    pub const COUNT: usize = 12;

    /// Every boundary, in the order of the discriminants.
    ///
    /// ```
    /// use rawthread::bench::Phase;
    /// assert!(Phase::ALL.iter().enumerate().all(|(i, p)| *p as usize == i));
    /// ```
    pub const ALL: [Phase; Phase::COUNT] = [
        Phase::Call,
        Phase::Entry,
        Phase::BlockReady,
        Phase::BeforeClone,
        Phase::CloneReturned,
        Phase::ChildFirst,
        Phase::ClosureStart,
        Phase::ClosureEnd,
        Phase::ChildExit,
        Phase::Woken,
        Phase::Returned,
        Phase::Joined,
    ];

    /// A few words for the boundary.
    ///
    /// ```
    /// assert_eq!(rawthread::bench::Phase::Woken.name(), "joiner wakes");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Phase::Call => "spawn called",
            Phase::Entry => "spawn entered",
            Phase::BlockReady => "region + thread block ready",
            Phase::BeforeClone => "clone called",
            Phase::CloneReturned => "clone returned",
            Phase::ChildFirst => "child's first instruction",
            Phase::ClosureStart => "closure starts",
            Phase::ClosureEnd => "closure ends",
            Phase::ChildExit => "child calls SYS_exit",
            Phase::Woken => "joiner wakes",
            Phase::Returned => "spawn returned",
            Phase::Joined => "join returned",
        }
    }
}

/// Whether stamps are recorded.
static ARMED: AtomicBool = AtomicBool::new(false);
/// CLOCK_MONOTONIC at each boundary of the armed spawn; 0: not stamped.
static SLOTS: [AtomicU64; Phase::COUNT] = [const { AtomicU64::new(0) }; Phase::COUNT];

/// Clears every stamp and starts recording: until [`disarm`], the first
/// [`stamp`] of each boundary is kept. Arm around one spawn+join at a time.
///
/// ```
/// use rawthread::bench::{Phase, arm, disarm, stamp};
/// arm();
/// stamp(Phase::Call);
/// let stamps = disarm();
/// assert!(stamps[Phase::Call as usize].is_some());
/// assert!(stamps[Phase::Joined as usize].is_none());
/// ```
pub fn arm() {
    for slot in &SLOTS {
        slot.store(0, Ordering::Relaxed);
    }
    ARMED.store(true, Ordering::SeqCst);
}

/// Stops recording and returns the stamps taken since [`arm`], by
/// boundary (`Phase as usize`); `None` where there was none.
///
/// ```
/// use rawthread::bench::{Phase, disarm, stamp};
/// stamp(Phase::Call); // not armed: not recorded
/// assert!(disarm().iter().all(Option::is_none));
/// ```
pub fn disarm() -> [Option<u64>; Phase::COUNT] {
    ARMED.store(false, Ordering::SeqCst);
    std::array::from_fn(|i| Some(SLOTS[i].load(Ordering::Acquire)).filter(|&t| t != 0))
}

/// Records CLOCK_MONOTONIC for `phase`, if the stamps are armed and
/// `phase` has no stamp yet; otherwise one relaxed load. Touches no TLS,
/// so any thread may call it, the floor thread and a rawthread child
/// before its thread block is entered included.
///
/// ```
/// use rawthread::bench::{Phase, arm, disarm, stamp};
/// arm();
/// rawthread::spawn(|| ()).join().unwrap();
/// stamp(Phase::Joined);
/// let stamps = disarm();
/// let (first, exit) = (stamps[Phase::ChildFirst as usize], stamps[Phase::ChildExit as usize]);
/// assert!(first.unwrap() <= exit.unwrap());
/// ```
#[inline]
pub fn stamp(phase: Phase) {
    if ARMED.load(Ordering::Relaxed) {
        let slot = &SLOTS[phase as usize];
        if slot.load(Ordering::Relaxed) == 0 {
            slot.store(now_ns(), Ordering::Release);
        }
    }
}
