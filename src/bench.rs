//! The benchmark's fixtures, built only with the `bench` feature (which
//! the crate's own benchmarks enable): the kernel floor, the least a thread
//! can cost — one `clone` on a stack made once, no TLS, no thread block, no
//! signal masking — whose child stamps the clock and exits, and that clock;
//! and a second floor, which adds what the kernel must do for any glibc
//! thread (a TLS pointer, rseq and robust-list registration).
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
    /// Whether its threads do a glibc thread's kernel duties (see
    /// [`KernelFloor::with_thread_duties`]).
    duties: bool,
}

/// The second floor's thread block, at the top of its stack mapping as
/// glibc puts a thread's TCB: the `%fs` base (CLONE_SETTLS), the rseq area
/// and the robust-list head, renewed at every spawn.
#[repr(C, align(64))]
struct DutiesBlock {
    /// Points to itself, as the first word of an x86_64 TCB does
    /// (`tcbhead_t.tcb`); nothing in the floor thread reads `%fs`.
    tcb: *mut DutiesBlock,
    /// Where the thread stamps the clock.
    stamp: *const AtomicU64,
    rseq: RseqArea,
    robust: RobustHead,
}

/// The kernel's `struct rseq` in its original 32-byte size, the one every
/// kernel with rseq accepts (it must then be 32-byte aligned).
#[repr(C, align(32))]
struct RseqArea {
    cpu_id_start: u32,
    cpu_id: u32,
    /// No critical section: the kernel reads it on preemption.
    rseq_cs: u64,
    flags: u32,
    _reserved: [u32; 3],
}

/// The kernel's `struct robust_list_head`.
#[repr(C)]
struct RobustHead {
    /// An empty list points to itself: the kernel's walk at exit ends at once.
    next: *const RobustHead,
    futex_offset: isize,
    pending: *const u8,
}

/// glibc's rseq signature for x86_64: the kernel checks it only before
/// aborting a critical section, of which the floor has none.
const RSEQ_SIG: u32 = 0x5305_3053;

/// The floor thread: runs on the creator's TLS, so it touches none.
unsafe extern "C" fn floor_main(stamp: *mut libc::c_void) -> ! {
    crate::bench::stamp(Phase::ChildFirst);
    // SAFETY: a 'static AtomicU64 (see KernelFloor::spawn).
    unsafe { (*stamp.cast::<AtomicU64>()).store(now_ns(), Ordering::Release) };
    crate::bench::stamp(Phase::ChildExit);
    sys::exit_thread()
}

/// A system call made without libc: `syscall()` stores `errno` in TLS on
/// a failure, and the second floor's thread has no TLS behind `%fs`. The
/// result is not looked at: a kernel that refuses rseq or the robust list
/// makes glibc go without them too (it registers a thread's rseq only if
/// the main thread's registration succeeded).
///
/// # Safety
/// As the system call `nr` with these arguments.
unsafe fn syscall_without_errno(nr: libc::c_long, args: [usize; 4]) {
    // SAFETY: the caller vouches for the call; `syscall` clobbers rcx and
    // r11 and writes rax, all declared; it does not touch our stack.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => _,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        )
    };
}

/// The second floor's thread: what glibc's `start_thread` asks of the
/// kernel before it runs user code (rseq, then the robust list), then the
/// stamp. It runs only Rust code that touches no TLS, and `clock_gettime`,
/// which reads `%fs` only to set `errno` on a failure that CLOCK_MONOTONIC
/// cannot have.
unsafe extern "C" fn floor_duties_main(block: *mut libc::c_void) -> ! {
    crate::bench::stamp(Phase::ChildFirst);
    let block = block.cast::<DutiesBlock>();
    // SAFETY: the block KernelFloor::spawn wrote, ours until we exit (the
    // next spawn waits for our tid word to clear). Both areas stay mapped
    // past our exit, when the kernel last reads the robust head; rseq
    // needs no unregistering: the kernel writes the area only on a return
    // to user space, which an exiting thread never makes again, so the
    // next floor thread may register it afresh.
    unsafe {
        let rseq = ptr::addr_of_mut!((*block).rseq);
        syscall_without_errno(libc::SYS_rseq, [rseq as usize, size_of::<RseqArea>(), 0, RSEQ_SIG as usize]);
        let robust = ptr::addr_of_mut!((*block).robust);
        syscall_without_errno(libc::SYS_set_robust_list, [robust as usize, size_of::<RobustHead>(), 0, 0]);
    }
    crate::bench::stamp(Phase::ClosureStart);
    // SAFETY: a 'static AtomicU64 (see KernelFloor::spawn).
    unsafe { (*(*block).stamp).store(now_ns(), Ordering::Release) };
    crate::bench::stamp(Phase::ClosureEnd);
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
            duties: false,
        })
    }

    /// The second floor: its threads also do what the kernel must do for
    /// any glibc thread — `CLONE_SETTLS` with a thread block (at the top
    /// of the stack mapping, as glibc's TCB; its first word points to
    /// itself), then, in the child, rseq registration of a 32-byte area
    /// and `set_robust_list` of an empty list, whose head the kernel reads
    /// at exit. Still no signal masking, no glibc bookkeeping: the least a
    /// thread that glibc could run code on must cost.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// static STAMPS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
    /// let mut floor = rawthread::bench::KernelFloor::with_thread_duties()?;
    /// for stamp in &STAMPS {
    ///     // SAFETY: no signal is sent here and the floor thread does not fault: no handler runs on it.
    ///     unsafe { floor.spawn(stamp)? };
    ///     floor.join(); // the stack, rseq area and robust head are free for the next one
    /// }
    /// assert!(STAMPS.iter().all(|stamp| stamp.load(Ordering::Acquire) != 0));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn with_thread_duties() -> io::Result<KernelFloor> {
        let mut floor = KernelFloor::new()?;
        floor.duties = true;
        Ok(floor)
    }

    /// Starts the floor thread, which stores CLOCK_MONOTONIC into `stamp`
    /// and exits; returns when `clone` does. (`'static`: the thread may
    /// outlive any borrow, up to the next `join`.)
    ///
    /// # Safety
    /// The bare floor's thread runs on the caller's thread pointer, sharing
    /// its TLS, and the second floor's on a thread block with no TLS
    /// behind it: no signal handler that touches TLS (or anything else the
    /// caller's thread owns) may run on either, so the caller must keep
    /// every signal with such a handler blocked or away from the process
    /// until [`KernelFloor::join`] returns.
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
        let top = low + self.stack.len();
        let request = if self.duties {
            let block = (top - size_of::<DutiesBlock>()) as *mut DutiesBlock;
            // SAFETY: the top of our mapping, aligned (the mapping is
            // page-aligned, the block's size a multiple of its alignment),
            // and no thread uses it (tid 0); renewed as glibc renews a
            // reused TCB.
            unsafe {
                let robust = ptr::addr_of!((*block).robust);
                block.write(DutiesBlock {
                    tcb: block,
                    stamp,
                    rseq: RseqArea { cpu_id_start: 0, cpu_id: 0, rseq_cs: 0, flags: 0, _reserved: [0; 3] },
                    robust: RobustHead { next: robust, futex_offset: 0, pending: ptr::null() },
                })
            };
            clone::CloneRequest {
                flags: clone::THREAD_FLAGS,
                stack_top: block as usize,
                tls: block as usize,
                entry: floor_duties_main,
                arg: block.cast(),
                ..self.bare_request(low, top, stamp)
            }
        } else {
            self.bare_request(low, top, stamp)
        };
        crate::bench::stamp(Phase::BeforeClone);
        // SAFETY: a mapped stack nobody else uses (tid 0: the last floor
        // thread is gone); floor_main touches neither TLS nor our stack,
        // and the caller keeps TLS-touching handlers off it.
        let cloned = unsafe { clone::clone(&request) }.map(drop);
        crate::bench::stamp(Phase::CloneReturned);
        cloned
    }

    /// The bare floor's clone: a thread like the others, minus
    /// CLONE_SETTLS: it keeps our %fs and must not touch TLS.
    fn bare_request(&self, low: usize, top: usize, stamp: &'static AtomicU64) -> clone::CloneRequest {
        clone::CloneRequest {
            flags: clone::THREAD_FLAGS & !(libc::CLONE_SETTLS as u64),
            exit_signal: 0,
            stack_low: low,
            stack_top: top,
            tls: 0,
            tid_word: self.tid.as_ptr(),
            exit_word: self.tid.as_ptr(),
            pidfd: ptr::null_mut(),
            entry: floor_main,
            arg: ptr::from_ref(stamp).cast_mut().cast(),
        }
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
