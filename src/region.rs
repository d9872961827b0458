//! The region: one private anonymous mapping per thread holding its guards,
//! signal stack, stack, start record and glibc thread block. [`Plan::new`]
//! computes where everything goes, and nothing else does.
//!
//! A region outlives its thread: after the tid word reads 0 it can be given
//! to the next thread ([`crate::pool`]), with the record re-placed for that
//! thread's closure ([`Region::refit`]).

use std::alloc::Layout;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use memmap2::{MmapMut, MmapOptions};

use crate::lazy::LazyUsize;

/// Where a thread's pieces lie in its region: addresses in this process,
/// low to high, as drawn beside `Plan::new` in `src/region.rs`. For people studying how a
/// thread is made (see `examples/anatomy.rs`).
///
/// ```
/// let handle = rawthread::spawn(|| {
///     let local = 0u8;
///     std::hint::black_box(&local) as *const u8 as usize
/// });
/// let layout = handle.layout();
/// assert!(layout.stack.contains(&handle.join().unwrap())); // the local lived on the stack
/// assert_eq!(layout.guard.end, layout.stack.start); // the guard lies right under it
/// assert!(layout.region.start <= layout.altstack_guard.start && layout.tcb.end <= layout.region.end);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadLayout {
    /// The whole mapping.
    pub region: Range<usize>,
    /// The guard page under the alternate signal stack (guard markers, or
    /// `PROT_NONE` where the kernel has none; see `install_guard` in
    /// `src/region.rs`): a handler
    /// that overruns the signal stack faults here instead of writing into
    /// whatever mapping lies below the region.
    pub altstack_guard: Range<usize>,
    /// The alternate signal stack the overflow report runs on.
    pub altstack: Range<usize>,
    /// The guard under the stack (guard markers, or `PROT_NONE`).
    pub guard: Range<usize>,
    /// The stack; the thread starts with its stack pointer at the end.
    pub stack: Range<usize>,
    /// The start record: closure in, result out.
    pub record: Range<usize>,
    /// The thread's resolver state (`struct __res_state`).
    pub resolver: Range<usize>,
    /// The static TLS blocks of every module loaded at start-up.
    pub static_tls: Range<usize>,
    /// glibc's `struct pthread`; its start is the thread pointer (`%fs`).
    pub tcb: Range<usize>,
    /// The tid word inside the TCB: the kernel's CLONE_PARENT_SETTID
    /// target.
    pub tid_word: usize,
    /// The word inside the TCB that the kernel clears and futex-wakes when
    /// the thread has exited (CLONE_CHILD_CLEARTID), and that `join` sleeps
    /// on: where glibc has it for its own threads, the tid word up to glibc
    /// 2.42 and `joinstate` from 2.43.
    pub exit_word: usize,
}

/// The sizes the glibc thread block needs, from [`crate::glibc`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockGeometry {
    /// The static TLS of every module, just below the thread pointer.
    pub static_tls: usize,
    /// The resolver state below that.
    pub resolver: usize,
    /// `struct pthread`, from the thread pointer up.
    pub tcb: usize,
    /// Alignment of the thread pointer (the largest TLS alignment).
    pub align: usize,
}

/// What a region is made of besides the glibc block: its page size, the
/// signal stack's and the stack guard's sizes, and the stack wanted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub page: usize,
    pub altstack: usize,
    pub guard: usize,
    pub stack: usize,
}

/// Every offset of a region, from its base, as [`Plan::new`] computes them:
/// the boundaries between its pieces, low to high (they are contiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    bounds: [usize; 9],
    len: usize,
}

macro_rules! pieces {
    ($($i:literal $name:ident: $what:literal),* $(,)?) => {
        impl Plan {
            $(
                #[doc = $what]
                pub(crate) fn $name(&self) -> Range<usize> {
                    self.bounds[$i]..self.bounds[$i + 1]
                }
            )*
        }
    };
}
pieces! {
    0 altstack_guard: "The guard page under the signal stack.",
    1 altstack: "The alternate signal stack.",
    2 guard: "The guard under the stack.",
    3 stack: "The stack.",
    4 record: "The start record.",
    5 resolver: "The resolver state.",
    6 static_tls: "The static TLS.",
    7 tcb: "The TCB; it starts at the thread pointer.",
}

/// A size no mapping can have is reported the way mmap reports one.
fn too_big() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOMEM)
}

fn round_up(n: usize, to: usize) -> Option<usize> {
    Some(n.checked_add(to - 1)? & !(to - 1))
}

impl Plan {
    /// The layout of a region, low to high addresses (`cargo run --example
    /// anatomy` prints a real one):
    ///
    /// ```text
    ///  0      page        page+altstack      stack.start                 stack.end   record.end                 tp          len
    ///  |       |               |                  |                           |       |                          |           |
    ///  +-------+---------------+------------------+---------------------------+-------+-----------+--------------+-----------+
    ///  | guard | altstack      | guard            | stack       <- grows down | record| res_state | static TLS   | TCB       |
    ///  | 1 pg  | (signal stack | guard_size bytes | at least stack_size bytes | (in/  | (resolver)| (every       | (struct   |
    ///  |       |  for overflow |                  |                           |  out) |           |  module)     |  pthread) |
    ///  +-------+---------------+------------------+---------------------------+-------+-----------+--------------+-----------+
    ///                                                                                                            ^ tp = %fs base
    /// ```
    ///
    /// * Both stacks grow down, so each has a guard under it: a stack that
    ///   overflows, or a signal handler that overruns the signal stack,
    ///   faults instead of writing into the signal stack or into the
    ///   mapping below the region (usually another thread's TCB, as mmap
    ///   places regions one under the other). The guards are guard markers
    ///   inside the one mapping where the kernel has them, else `PROT_NONE`
    ///   pages, which split the region into four mappings
    ///   ([`install_guard`]).
    /// * The thread block is at the top: `tp` is aligned down from
    ///   `len - tcb` (the region's base is page-aligned, and the alignment at
    ///   most a page), the static TLS and the resolver state lie under it.
    /// * The record sits right under the block, aligned for its type (and
    ///   16); the stack's top is just under the record, 16-byte aligned.
    ///
    /// With `len: None` the region is as small as whole pages allow. With
    /// `Some(len)`, the length of an existing region, only the record and
    /// the stack's top move, and `None` comes back if the stack would then
    /// be smaller than asked. Sizes no mapping can have are `ENOMEM`.
    pub(crate) fn new(
        block: &BlockGeometry,
        sizes: Sizes,
        record: Layout,
        len: Option<usize>,
    ) -> io::Result<Option<Plan>> {
        let page = sizes.page;
        let altstack = round_up(sizes.altstack, page).ok_or_else(too_big)?;
        let guard = round_up(sizes.guard, page).ok_or_else(too_big)?;
        let stack_low = [page, altstack, guard].into_iter().try_fold(0usize, usize::checked_add).ok_or_else(too_big)?;
        let align = block.align.max(16);
        if align > page {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "rawthread: TLS aligned beyond a page"));
        }
        let record_align = record.align().max(16);
        let len = match len {
            Some(len) => len,
            // Everything above the stack, with slack for aligning tp and
            // the record, in whole pages on top of the stack.
            None => [block.tcb, align, block.static_tls, block.resolver, record.size(), record_align]
                .into_iter()
                .try_fold(0usize, usize::checked_add)
                .and_then(|top| round_up(top, page))
                .and_then(|top| top.checked_add(round_up(sizes.stack, page)?))
                .and_then(|n| n.checked_add(stack_low))
                .ok_or_else(too_big)?,
        };
        let tp = len.checked_sub(block.tcb).ok_or_else(too_big)? & !(align - 1);
        let tls = tp.checked_sub(block.static_tls).ok_or_else(too_big)?;
        let resolver = tls.checked_sub(block.resolver).ok_or_else(too_big)?;
        // No mapping (nor Rust object) may exceed isize::MAX bytes.
        if len > isize::MAX as usize {
            return Err(too_big());
        }
        let record_start = resolver.checked_sub(record.size()).ok_or_else(too_big)? & !(record_align - 1);
        let stack_top = record_start & !15;
        if stack_top < stack_low || stack_top - stack_low < sizes.stack {
            return Ok(None);
        }
        let bounds = [0, page, page + altstack, stack_low, stack_top, resolver, tls, tp, tp + block.tcb];
        Ok(Some(Plan { bounds, len }))
    }

    /// The region's length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// One thread's mapping and its [`Plan`]. Dropping it unmaps the memory, so
/// whoever owns it must know no thread runs there.
pub(crate) struct Region {
    map: MmapMut,
    plan: Plan,
}

pub(crate) fn page_size() -> usize {
    static PAGE: LazyUsize = LazyUsize::new();
    // SAFETY: sysconf has no preconditions.
    PAGE.get(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize)
}

/// The alternate signal stack: room for the kernel's signal frame (which
/// `AT_MINSIGSTKSZ` sizes; it grows with AVX-512 and AMX state) and the
/// handler, at least 16 KiB. Untouched pages cost only address space.
fn altstack_size() -> usize {
    static SIZE: LazyUsize = LazyUsize::new();
    SIZE.get(|| {
        // SAFETY: getauxval has no preconditions (0 when the entry is absent).
        let min = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
        round_up((4 * min).max(16 << 10), page_size()).unwrap_or(16 << 10)
    })
}

/// `madvise` advice (Linux 6.13): the range's pages become guard markers,
/// entries in the page table that fault on any access, inside the mapping
/// rather than as a `PROT_NONE` mapping of their own.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Set once `madvise` has refused guard markers, so that later regions
/// go straight to `mprotect`. Not a [`LazyUsize`]: whichever thread maps a
/// region first learns the answer as a side effect of making its guard.
static NO_GUARD_MARKERS: AtomicBool = AtomicBool::new(false);

/// Makes `[addr, addr + len)` fault on any access: with guard markers
/// where the kernel has them, else with `PROT_NONE`.
///
/// A marker leaves the region one mapping (and regions mmap places side
/// by side merge into one): with a `PROT_NONE` page under each stack every
/// region is four mappings, which stops a process at `vm.max_map_count`
/// / 4 threads and makes `fork()` copy four VMAs per thread. What the
/// kernel does with the markers afterwards, as Linux 6.18 does it (the
/// first three tested by `guard_markers_survive_reuse_dontneed_and_fork`
/// in `tests/api.rs`):
///
/// * **Reuse.** They stay until the region is unmapped: the pool hands the
///   region on with its guards in place, and `MADV_DONTNEED` (the stack
///   given back at a thread's exit) keeps them, as it zaps pages only.
/// * **fork.** Installing them gives the mapping an `anon_vma`, so `fork()`
///   copies its page tables, markers included: a pooled region reused in
///   the child is still guarded. (Linux 6.19 also marks such mappings
///   `VM_MAYBE_GUARD`, which makes fork copy them whatever the mapping.)
/// * **Core dumps.** A marker holds no page: the region is one segment of
///   the dump and the guard reads as zeros there, as a page never touched
///   does (seen in a core of Linux 6.18). `/proc/PID/maps` does not show
///   the guard; `/proc/PID/pagemap` does (bit 58, `PM_GUARD_REGION`, Linux
///   6.15).
///
/// `madvise` refuses them with `EINVAL` on kernels before 6.13 (unknown
/// advice) and on locked mappings (after `mlockall(MCL_FUTURE)`, as seen
/// on 6.18), and a seccomp filter may refuse it with any errno; every
/// refusal falls back to `mprotect`, remembered for the process. A
/// shortage (`ENOMEM`, `EAGAIN`) or `EINTR` is the spawn's error.
///
/// # Safety
/// The range lies in a private anonymous mapping the caller owns, and
/// nothing in it is in use.
unsafe fn install_guard(addr: usize, len: usize) -> io::Result<()> {
    if !NO_GUARD_MARKERS.load(Ordering::Relaxed) {
        // SAFETY: per the contract; a marker only makes the range fault.
        if unsafe { libc::madvise(addr as *mut libc::c_void, len, MADV_GUARD_INSTALL) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if matches!(e.raw_os_error(), Some(libc::ENOMEM | libc::EAGAIN | libc::EINTR)) {
            return Err(e);
        }
        NO_GUARD_MARKERS.store(true, Ordering::Relaxed);
    }
    // SAFETY: per the contract.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_NONE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How much of its stack right under its last frame an exiting thread
/// keeps for the next thread on its region. glibc keeps
/// `PTHREAD_STACK_MIN` (16 KiB); 64 KiB was measured better. 4,000
/// spawn+join in a row of a closure using `use` bytes of stack, median
/// µs, and the RSS a burst of 16 threads using 1.5 MiB each leaves behind
/// (release build, AMD EPYC, 2 vCPUs, Linux 6.18; median of 9 runs per
/// policy, interleaved):
///
/// ```text
///   kept under the frame   use 0           use 32 KiB      use 128 KiB     burst RSS
///   nothing given back     21.3            19.4            19.9            +24,944 KiB
///   0                      20.0 (0.94x)    38.5 (1.98x)    83.0 (4.17x)       +176 KiB
///   16 KiB (glibc's)       19.4 (0.91x)    31.0 (1.59x)    69.1 (3.48x)       +432 KiB
///   64 KiB                 20.5 (0.96x)    21.2 (1.09x)    52.6 (2.64x)     +1,200 KiB
/// ```
///
/// Giving pages back costs an empty closure nothing measurable; what a
/// thread touched beyond the pages kept it faults in again, zeroed, on the
/// region's next thread. 64 KiB keeps a thread that uses a few dozen KiB
/// at its old cost, for at most 64 KiB per pooled region.
const STACK_KEPT_WARM: usize = 64 << 10;

/// Gives back to the kernel the pages of the calling thread's stack
/// (from `stack_low` up) below its frame, but for [`STACK_KEPT_WARM`]
/// bytes under it, as glibc's `advise_stack_range` does for its threads:
/// a pooled region then keeps only the pages its next thread will touch
/// first (16 threads that each used 1.5 MiB of stack would otherwise keep
/// 24 MiB). The pages read as zeros when touched again; the guards stay
/// (see [`install_guard`]). For a thread about to exit, after its last
/// user code.
///
/// A thread that took no page fault dirtied no page it did not find
/// resident, and the pages a region's earlier threads dirtied below the
/// kept ones were given back by them (each of which faulted them in): it
/// has nothing to give back, and skips the `madvise`, which costs a thread
/// that used little stack (most threads on a pooled region) more than
/// asking the kernel for its count of faults.
pub(crate) fn release_stack(stack_low: usize) {
    let frame = 0u8;
    let here = std::hint::black_box(&frame) as *const u8 as usize;
    let end = here.saturating_sub(STACK_KEPT_WARM) & !(page_size() - 1);
    if end > stack_low && faulted() {
        // SAFETY: [stack_low, end) is the calling thread's own stack, all
        // of it more than STACK_KEPT_WARM under its live frames. A refusal
        // (EINVAL for a locked mapping) only leaves the pages resident.
        unsafe { libc::madvise(stack_low as *mut libc::c_void, end - stack_low, libc::MADV_DONTNEED) };
    }
}

/// Whether the calling thread has taken a page fault (`RUSAGE_THREAD`;
/// true if the kernel will not say).
fn faulted() -> bool {
    // SAFETY: zeroed is a valid rusage for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the calling thread's own counts, into our rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) != 0 || usage.ru_minflt + usage.ru_majflt > 0 }
}

fn sizes(guard: usize, stack: usize) -> Sizes {
    Sizes { page: page_size(), altstack: altstack_size(), guard, stack }
}

impl Region {
    /// Maps a region for a `guard`-byte guard (rounded up to pages), a
    /// stack of at least `stack` bytes, a record of layout `record` and a
    /// glibc block of `block`'s sizes.
    pub(crate) fn map(guard: usize, stack: usize, record: Layout, block: &BlockGeometry) -> io::Result<Region> {
        let sizes = sizes(guard, stack);
        let plan = Plan::new(block, sizes, record, None)?.ok_or_else(too_big)?;
        let len = plan.len();
        // MAP_STACK documents intent (and keeps THP off thread stacks);
        // MAP_NORESERVE: a thread that never touches its stack should not
        // count its full size against overcommit.
        let mut map = MmapOptions::new().len(len).stack().no_reserve_swap().map_anon()?;
        let base = map.as_mut_ptr() as usize;
        for guard in [plan.altstack_guard(), plan.guard()].into_iter().filter(|g| !g.is_empty()) {
            // SAFETY: the guard lies inside the mapping we own, untouched.
            unsafe { install_guard(base + guard.start, guard.len()) }?;
        }
        Ok(Region { map, plan })
    }

    /// The plan for this region's length with a record of layout `record`,
    /// if its guard is `guard` and the stack keeps at least `stack` bytes.
    pub(crate) fn replan(&self, block: &BlockGeometry, guard: usize, stack: usize, record: Layout) -> Option<Plan> {
        let plan = Plan::new(block, sizes(guard, stack), record, Some(self.len())).ok()??;
        (plan.guard() == self.plan.guard()).then_some(plan)
    }

    /// Takes a plan from [`Region::replan`] of this region.
    pub(crate) fn refit(&mut self, plan: Plan) {
        debug_assert_eq!((plan.len(), plan.guard()), (self.plan.len(), self.plan.guard()));
        self.plan = plan;
    }

    pub(crate) fn base(&self) -> usize {
        self.map.as_ptr() as usize
    }

    /// The whole mapping's length.
    pub(crate) fn len(&self) -> usize {
        self.plan.len()
    }

    /// A piece of the plan as addresses.
    fn at(&self, piece: fn(&Plan) -> Range<usize>) -> Range<usize> {
        let r = piece(&self.plan);
        self.base() + r.start..self.base() + r.end
    }

    /// The thread pointer: where the TCB starts.
    pub(crate) fn tp(&self) -> usize {
        self.at(Plan::tcb).start
    }

    /// Where the start record lives.
    pub(crate) fn record(&self) -> usize {
        self.at(Plan::record).start
    }

    /// The stack: the child starts with its stack pointer at the end.
    pub(crate) fn stack(&self) -> Range<usize> {
        self.at(Plan::stack)
    }

    /// The guard under the stack.
    pub(crate) fn guard(&self) -> Range<usize> {
        self.at(Plan::guard)
    }

    /// The alternate signal stack.
    pub(crate) fn altstack(&self) -> Range<usize> {
        self.at(Plan::altstack)
    }

    /// The resolver state's address.
    pub(crate) fn resolver(&self) -> usize {
        self.at(Plan::resolver).start
    }

    /// Every piece's addresses; `tid` is the tid word's offset in the TCB.
    pub(crate) fn layout(&self, tid: usize, exit: usize) -> ThreadLayout {
        ThreadLayout {
            region: self.base()..self.base() + self.len(),
            altstack_guard: self.at(Plan::altstack_guard),
            altstack: self.altstack(),
            guard: self.guard(),
            stack: self.stack(),
            record: self.at(Plan::record),
            resolver: self.at(Plan::resolver),
            static_tls: self.at(Plan::static_tls),
            tcb: self.at(Plan::tcb),
            tid_word: self.tp() + tid,
            exit_word: self.tp() + exit,
        }
    }

    /// Gives up ownership without unmapping: `(base, len)`, for a thread
    /// that unmaps its own region as its last act.
    pub(crate) fn into_raw(self) -> (usize, usize) {
        let span = (self.base(), self.len());
        std::mem::forget(self.map);
        span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc 2.36's block on x86_64: 2,368-byte TCB, 2,048 bytes of other
    /// static TLS, 576 of resolver state, 64-byte alignment.
    const BLOCK: BlockGeometry = BlockGeometry { static_tls: 2048, resolver: 576, tcb: 2368, align: 64 };
    const SIZES: Sizes = Sizes { page: 4096, altstack: 16 << 10, guard: 4096, stack: 64 << 10 };

    fn plan(sizes: Sizes, record: Layout) -> Plan {
        Plan::new(&BLOCK, sizes, record, None).unwrap().unwrap()
    }

    #[test]
    fn pieces_are_in_order_contiguous_and_aligned() {
        let p = plan(SIZES, Layout::from_size_align(200, 8).unwrap());
        let pieces =
            [p.altstack_guard(), p.altstack(), p.guard(), p.stack(), p.record(), p.resolver(), p.static_tls(), p.tcb()];
        assert_eq!(p.altstack_guard(), 0..4096, "a guard page under the signal stack");
        for pair in pieces.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{pair:?}");
        }
        assert!(p.tcb().end <= p.len() && p.len() - p.tcb().end < 64, "the TCB ends within one alignment of the top");
        assert_eq!(p.len() % 4096, 0);
        assert_eq!(p.tcb().start % 64, 0, "tp aligned");
        assert_eq!(p.stack().end % 16, 0, "stack top aligned");
        assert_eq!(p.record().start % 16, 0);
        assert!(p.record().len() >= 200);
        assert_eq!(p.altstack().len(), 16 << 10);
        assert_eq!(p.guard().len(), 4096);
        assert!(p.stack().len() >= 64 << 10);
        // Whole pages: less than a page of slack over what was asked.
        assert!(p.stack().len() - (64 << 10) < 4096 + 64 + 16 + 8);
    }

    #[test]
    fn tp_takes_the_largest_tls_alignment() {
        // A TCB whose size is no multiple of the alignment: aligning tp is
        // then more than rounding.
        for align in [16, 64, 256, 4096] {
            let block = BlockGeometry { tcb: 2368 + 8, align, ..BLOCK };
            let p = Plan::new(&block, SIZES, Layout::new::<u64>(), None).unwrap().unwrap();
            assert_eq!(p.tcb().start % align, 0, "align {align}");
            assert!(p.tcb().end <= p.len());
        }
        let too_big = BlockGeometry { align: 8192, ..BLOCK };
        let err = Plan::new(&too_big, SIZES, Layout::new::<u64>(), None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    }

    #[test]
    fn sizes_round_up_to_pages() {
        let p = plan(Sizes { altstack: 10_000, guard: 1, stack: 5000, ..SIZES }, Layout::new::<u64>());
        assert_eq!(p.altstack().len(), 12288);
        assert_eq!(p.guard().len(), 4096);
        assert!(p.stack().len() >= 5000);
        assert_eq!(p.len() % 4096, 0);
    }

    #[test]
    fn no_stack_guard_keeps_the_altstack_guard() {
        let p = plan(Sizes { guard: 0, ..SIZES }, Layout::new::<u64>());
        assert!(p.guard().is_empty());
        assert_eq!(p.altstack_guard(), 0..4096);
        assert_eq!(p.altstack().end, p.stack().start);
    }

    #[test]
    fn big_records_are_aligned_and_kept_off_the_stack() {
        let record = Layout::from_size_align(10_000, 4096).unwrap();
        let p = plan(SIZES, record);
        assert_eq!(p.record().start % 4096, 0);
        assert!(p.record().len() >= 10_000);
        assert!(p.stack().len() >= 64 << 10);
    }

    #[test]
    fn replanning_keeps_the_length_and_moves_only_record_and_stack_top() {
        let small = plan(SIZES, Layout::new::<u64>());
        let bigger = Layout::from_size_align(3000, 64).unwrap();
        let re = Plan::new(&BLOCK, SIZES, bigger, Some(small.len())).unwrap().unwrap();
        assert_eq!(
            (re.len(), re.tcb(), re.static_tls(), re.guard()),
            (small.len(), small.tcb(), small.static_tls(), small.guard())
        );
        assert!(re.record().start < small.record().start && re.record().len() >= 3000);
        assert!(re.stack().end < small.stack().end);
        // A stack that no longer fits is refused, not shrunk.
        let huge = Layout::from_size_align(small.stack().len(), 16).unwrap();
        assert_eq!(Plan::new(&BLOCK, SIZES, huge, Some(small.len())).unwrap(), None);
        let tall = Sizes { stack: small.stack().len() + 1, ..SIZES };
        assert_eq!(Plan::new(&BLOCK, tall, Layout::new::<u64>(), Some(small.len())).unwrap(), None);
    }

    #[test]
    fn impossible_sizes_are_enomem() {
        let enomem = |sizes, record| Plan::new(&BLOCK, sizes, record, None).unwrap_err().raw_os_error();
        let record = Layout::new::<u64>();
        assert_eq!(enomem(Sizes { stack: usize::MAX, ..SIZES }, record), Some(libc::ENOMEM));
        assert_eq!(enomem(Sizes { stack: usize::MAX - 8192, ..SIZES }, record), Some(libc::ENOMEM));
        assert_eq!(enomem(Sizes { guard: usize::MAX, ..SIZES }, record), Some(libc::ENOMEM));
        assert_eq!(
            enomem(Sizes { altstack: usize::MAX / 2, guard: usize::MAX / 2, ..SIZES }, record),
            Some(libc::ENOMEM)
        );
        let huge = Layout::from_size_align(isize::MAX as usize - 4096, 16).unwrap();
        assert_eq!(enomem(SIZES, huge), Some(libc::ENOMEM));
        // An existing region too small for its own block.
        assert_eq!(Plan::new(&BLOCK, SIZES, record, Some(4096)).unwrap_err().raw_os_error(), Some(libc::ENOMEM));
    }
}
