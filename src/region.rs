//! The stack region: one private anonymous mapping per thread holding its
//! signal stack, guard, stack, start record and glibc thread block.
//!
//! ```text
//!  base                                                                                    end
//!  |<- altstack ->|<- guard ->|<--------- stack --------->|<- record ->|<- glibc thread block ->|
//!  +--------------+-----------+---------------------------+------------+-----------+-----+------+
//!  | SIGSEGV      | PROT_NONE |             <- grows down | start data | res_state | TLS | TCB  |
//!  | handler's    |           |                           | + result   |           |     |      |
//!  +--------------+-----------+---------------------------+------------+-----------+-----+------+
//!                             ^ stack_low       stack_top ^ ^ record                     ^ tp (%fs)
//! ```
//!
//! * The alternate signal stack is where the overflow handler runs when
//!   the stack itself is exhausted ([`crate::overflow`]).
//! * The guard is `guard_size` bytes mapped `PROT_NONE`, so an overflowing
//!   stack faults instead of writing into the signal stack or beyond.
//! * The stack is at least the requested size; its top is 16-byte aligned.
//! * The record holds what the creator hands the child (the closure, the
//!   signal mask, the name) and the slot the child leaves its result in.
//! * The glibc thread block is laid out by [`crate::glibc`]: the resolver
//!   state, the static TLS of every module loaded at start-up, and the TCB
//!   (`struct pthread`), which starts at the thread pointer `tp` and holds
//!   the tid word that the kernel clears at exit.
//!
//! A region outlives its thread: after the tid word reads 0 it can be
//! given to the next thread ([`crate::pool`]), with the record re-placed for
//! that thread's closure ([`Region::refit`]).

use std::alloc::Layout;
use std::io;
use std::ops::Range;

use memmap2::{MmapMut, MmapOptions};

use crate::lazy::LazyUsize;

/// Where a thread's pieces lie in its region: addresses in this process,
/// low to high, as in the diagram of [`crate`]'s documentation. For people
/// studying how a thread is made (see `examples/anatomy.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadLayout {
    /// The whole mapping.
    pub region: Range<usize>,
    /// The alternate signal stack the overflow report runs on.
    pub altstack: Range<usize>,
    /// The `PROT_NONE` guard.
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
    /// The tid word inside the TCB: the kernel's CLONE_PARENT_SETTID and
    /// CLONE_CHILD_CLEARTID target, and the futex `join` sleeps on.
    pub tid_word: usize,
}

/// How much room the glibc thread block needs around the thread pointer.
pub(crate) struct BlockGeometry {
    /// Bytes below `tp` (static TLS and the resolver state).
    pub below_tp: usize,
    /// Bytes from `tp` up (the TCB).
    pub above_tp: usize,
    /// Alignment of `tp` (the largest TLS alignment).
    pub align: usize,
}

/// One thread's mapping and the addresses inside it. Dropping it unmaps the
/// memory, so whoever owns it must know no thread runs there.
pub(crate) struct Region {
    map: MmapMut,
    guard: usize,
    tp: usize,
    below_tp: usize,
    record: usize,
    stack_top: usize,
}

pub(crate) fn page_size() -> usize {
    static PAGE: LazyUsize = LazyUsize::new();
    // SAFETY: sysconf has no preconditions.
    PAGE.get(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize)
}

/// The alternate signal stack: room for the kernel's signal frame (which
/// `AT_MINSIGSTKSZ` sizes; it grows with AVX-512 and AMX state) and the
/// handler, at least 16 KiB. Untouched pages cost only address space.
pub(crate) fn altstack_size() -> usize {
    static SIZE: LazyUsize = LazyUsize::new();
    SIZE.get(|| {
        // SAFETY: getauxval has no preconditions (0 when the entry is absent).
        let min = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
        round_up((4 * min).max(16 << 10), page_size()).unwrap_or(16 << 10)
    })
}

fn round_up(n: usize, to: usize) -> Option<usize> {
    Some(n.checked_add(to - 1)? & !(to - 1))
}

/// A size no mapping can have is reported the way mmap reports one.
fn too_big() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOMEM)
}

impl Region {
    /// Maps a region with a `guard`-byte guard (rounded up to pages), a stack
    /// of at least `stack` bytes, room for `record` and for the glibc block.
    pub(crate) fn map(guard: usize, stack: usize, record: Layout, block: &BlockGeometry) -> io::Result<Region> {
        let page = page_size();
        let guard = round_up(guard, page).ok_or_else(too_big)?;
        // Everything above the stack, with slack for aligning tp and record.
        let top = [block.above_tp, block.align, block.below_tp, record.size(), record.align().max(16)]
            .into_iter()
            .try_fold(0usize, usize::checked_add)
            .and_then(|n| round_up(n, page))
            .ok_or_else(too_big)?;
        let len = round_up(stack, page)
            .and_then(|s| s.checked_add(altstack_size() + guard))
            .and_then(|n| n.checked_add(top))
            .ok_or_else(too_big)?;

        // MAP_STACK documents intent (and keeps THP off thread stacks);
        // MAP_NORESERVE: a thread that never touches its stack should not
        // count its full size against overcommit.
        let mut map = MmapOptions::new().len(len).stack().no_reserve_swap().map_anon()?;
        let base = map.as_mut_ptr() as usize;
        if guard > 0 {
            // SAFETY: the guard lies inside the mapping we own.
            if unsafe { libc::mprotect((base + altstack_size()) as *mut libc::c_void, guard, libc::PROT_NONE) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let tp = (base + len - block.above_tp) & !(block.align - 1);
        let mut region = Region { map, guard, tp, below_tp: block.below_tp, record: 0, stack_top: 0 };
        let fits = region.refit(stack, record);
        debug_assert!(fits, "a new region is sized for its record");
        Ok(region)
    }

    /// Where a record of layout `record` and the stack top below it would
    /// go, if the stack keeps at least `stack` bytes.
    fn placement(&self, stack: usize, record: Layout) -> Option<(usize, usize)> {
        let room = (self.tp - self.below_tp).checked_sub(record.size())?;
        let record_addr = room & !(record.align().max(16) - 1);
        let stack_top = record_addr & !15;
        (stack_top.checked_sub(self.stack_low())? >= stack).then_some((record_addr, stack_top))
    }

    /// Whether a thread with this stack size and record can use the region.
    pub(crate) fn fits(&self, guard: usize, stack: usize, record: Layout) -> bool {
        round_up(guard, page_size()) == Some(self.guard) && self.placement(stack, record).is_some()
    }

    /// Places a record of layout `record` below the thread block and the
    /// stack below it; says whether the stack keeps at least `stack` bytes.
    pub(crate) fn refit(&mut self, stack: usize, record: Layout) -> bool {
        let Some((record, stack_top)) = self.placement(stack, record) else { return false };
        self.record = record;
        self.stack_top = stack_top;
        true
    }

    /// The thread pointer: where the TCB starts.
    pub(crate) fn tp(&self) -> usize {
        self.tp
    }

    /// Where the start record lives.
    pub(crate) fn record(&self) -> usize {
        self.record
    }

    /// Lowest usable stack byte (just above the guard).
    pub(crate) fn stack_low(&self) -> usize {
        self.base() + altstack_size() + self.guard
    }

    /// The child's initial stack pointer.
    pub(crate) fn stack_top(&self) -> usize {
        self.stack_top
    }

    /// The guard's bytes: `[stack_low - guard_len, stack_low)`.
    pub(crate) fn guard_len(&self) -> usize {
        self.guard
    }

    /// The alternate signal stack: `(lowest address, size)`.
    pub(crate) fn altstack(&self) -> (usize, usize) {
        (self.base(), altstack_size())
    }

    pub(crate) fn base(&self) -> usize {
        self.map.as_ptr() as usize
    }

    /// The whole mapping's length.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Gives up ownership without unmapping: `(base, len)`, for a thread
    /// that unmaps its own region as its last act.
    pub(crate) fn into_raw(self) -> (usize, usize) {
        let span = (self.base(), self.len());
        std::mem::forget(self.map);
        span
    }
}
