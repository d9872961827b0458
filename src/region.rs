//! The stack region: one private anonymous mapping per thread holding its
//! guard, its stack, its start record and its glibc thread block.
//!
//! ```text
//!  base                                                                  end
//!  |<- guard ->|<------------- stack ------------>|<- record ->|<- glibc thread block ->|
//!  +-----------+---------------------------------+-------------+-----------+-----+-----+
//!  | PROT_NONE |                   <- grows down  | start data | res_state | TLS | TCB |
//!  |           |                                  | + result   |           |     |     |
//!  +-----------+---------------------------------+-------------+-----------+-----+-----+
//!              ^ stack_low             stack_top ^ ^ record                     ^ tp (%fs)
//! ```
//!
//! * The guard is the lowest `guard_size` bytes, mapped `PROT_NONE`, so an
//!   overflowing stack faults instead of writing into another mapping.
//! * The stack is at least the requested size; its top is 16-byte aligned.
//! * The record holds what the creator hands the child (the closure, the
//!   signal mask, the name) and the slot the child leaves its result in.
//! * The glibc thread block is laid out by [`crate::glibc`]: the resolver
//!   state, the static TLS of every module loaded at start-up, and the TCB
//!   (`struct pthread`), which starts at the thread pointer `tp` and holds
//!   the tid word that the kernel clears at exit.

use std::alloc::Layout;
use std::io;
use std::sync::OnceLock;

use memmap2::{MmapMut, MmapOptions};

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
/// memory, so whoever owns it must know the thread no longer runs there.
pub(crate) struct Region {
    map: MmapMut,
    guard: usize,
    tp: usize,
    record: usize,
    stack_top: usize,
}

pub(crate) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize)
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
        let record_align = record.align().max(16);
        // Everything above the stack, with slack for aligning tp and record.
        let top = [block.above_tp, block.align, block.below_tp, record.size(), record_align]
            .into_iter()
            .try_fold(0usize, usize::checked_add)
            .and_then(|n| round_up(n, page))
            .ok_or_else(too_big)?;
        let len = round_up(stack, page)
            .and_then(|s| s.checked_add(guard))
            .and_then(|n| n.checked_add(top))
            .ok_or_else(too_big)?;

        // MAP_STACK documents intent (and keeps THP off thread stacks);
        // MAP_NORESERVE: a thread that never touches its stack should not
        // count its full size against overcommit.
        let mut map = MmapOptions::new().len(len).stack().no_reserve_swap().map_anon()?;
        let base = map.as_mut_ptr() as usize;
        if guard > 0 {
            // SAFETY: [base, base + guard) lies inside the mapping we own.
            if unsafe { libc::mprotect(base as *mut libc::c_void, guard, libc::PROT_NONE) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }

        let end = base + len;
        let tp = (end - block.above_tp) & !(block.align - 1);
        let record_addr = (tp - block.below_tp - record.size()) & !(record_align - 1);
        let stack_top = record_addr & !15;
        debug_assert!(stack_top - (base + guard) >= stack);
        Ok(Region { map, guard, tp, record: record_addr, stack_top })
    }

    /// The thread pointer: where the TCB starts.
    pub(crate) fn tp(&self) -> usize {
        self.tp
    }

    /// Where the start record lives (aligned as requested in [`Region::map`]).
    pub(crate) fn record(&self) -> usize {
        self.record
    }

    /// Lowest usable stack byte (just above the guard).
    pub(crate) fn stack_low(&self) -> usize {
        self.map.as_ptr() as usize + self.guard
    }

    /// The child's initial stack pointer.
    pub(crate) fn stack_top(&self) -> usize {
        self.stack_top
    }
}
