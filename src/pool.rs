//! The region pool: regions of finished threads, kept for the next spawns
//! so that a spawn pays no `mmap`, `mprotect` or `munmap` and no first-touch
//! page faults (about 9-10 µs of a 25 µs spawn+join on a small VM).
//!
//! A pooled region is reusable only once the kernel has cleared its tid
//! word: until then its thread may still be running its last instructions
//! on it. Its thread block is renewed for the next thread
//! ([`Block::renew`]): fresh TLS for every module, a zeroed TCB.
//!
//! The pool is bounded by count and by bytes ([`PoolLimits`]); a region that
//! does not fit is unmapped instead.

use std::alloc::Layout;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};

use crate::glibc::Block;
use crate::join;
use crate::region::Plan;

/// Bounds on the regions kept for reuse. Set them with [`set_pool_limits`];
/// `PoolLimits { regions: 0, bytes: 0 }` turns reuse off.
///
/// ```
/// use rawthread::{Builder, PoolLimits};
/// let old = rawthread::set_pool_limits(PoolLimits { regions: 4, bytes: 4 << 20 });
/// let first = Builder::new().stack_size(64 << 10).spawn(|| ())?;
/// let region = first.layout().region;
/// first.join().unwrap(); // its region goes to the pool...
/// let second = Builder::new().stack_size(64 << 10).spawn(|| ())?;
/// assert_eq!(second.layout().region, region); // ...and the next thread gets it
/// second.join().unwrap();
/// rawthread::set_pool_limits(old);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// The most regions kept (default 256).
    pub regions: usize,
    /// The most bytes of address space they may span, guards and TLS
    /// included (default 40 MiB, glibc's stack-cache size: about 19
    /// default 2 MiB regions, or 256 with 64 KiB stacks).
    pub bytes: usize,
}

impl PoolLimits {
    /// 256 regions, 40 MiB.
    ///
    /// ```
    /// use rawthread::PoolLimits;
    /// assert_eq!(PoolLimits::DEFAULT, PoolLimits { regions: 256, bytes: 40 << 20 });
    /// assert_eq!(PoolLimits::default(), PoolLimits::DEFAULT);
    /// ```
    pub const DEFAULT: PoolLimits = PoolLimits { regions: 256, bytes: 40 << 20 };
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits::DEFAULT
    }
}

pub(crate) struct Pool {
    blocks: Vec<Block>,
    bytes: usize,
    limits: PoolLimits,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { blocks: Vec::new(), bytes: 0, limits: PoolLimits::DEFAULT });

/// The pool, locked.
pub(crate) fn lock() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

fn finished(block: &Block) -> bool {
    block.exit_word().load(Ordering::Acquire) == 0
}

/// Sets the pool's bounds, unmapping what no longer fits; returns the old
/// ones. Regions whose threads are still exiting (past their closure,
/// running their `thread_local!` destructors) are waited for, so that when
/// this returns every region beyond the new bounds is unmapped:
/// `PoolLimits { regions: 0, bytes: 0 }` gives back all of them.
///
/// ```
/// use rawthread::PoolLimits;
/// let handle = rawthread::Builder::new().stack_size(64 << 10).spawn(|| ())?;
/// let region = handle.layout().region;
/// handle.join().unwrap();
/// // SAFETY: msync with MS_ASYNC only checks that the (page-aligned) range is mapped.
/// let mapped = || unsafe { libc::msync(region.start as *mut libc::c_void, region.len(), libc::MS_ASYNC) } == 0;
/// assert!(mapped()); // kept in the pool
/// let old = rawthread::set_pool_limits(PoolLimits { regions: 0, bytes: 0 });
/// assert!(!mapped()); // given back before set_pool_limits returned
/// assert_eq!(rawthread::set_pool_limits(old), PoolLimits { regions: 0, bytes: 0 });
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn set_pool_limits(limits: PoolLimits) -> PoolLimits {
    let mut pool = lock();
    let old = std::mem::replace(&mut pool.limits, limits);
    let mut excess = pool.trim();
    while pool.over(0, 0) {
        excess.push(pool.remove(0));
    }
    drop(pool);
    for block in excess {
        join::wait_for_exit(block.exit_word());
        drop(block);
    }
    old
}

/// The pool's current bounds.
///
/// ```
/// use rawthread::PoolLimits;
/// let small = PoolLimits { regions: 2, bytes: 1 << 20 };
/// let old = rawthread::set_pool_limits(small);
/// assert_eq!(rawthread::pool_limits(), small);
/// rawthread::set_pool_limits(old);
/// assert_eq!(rawthread::pool_limits(), old);
/// ```
pub fn pool_limits() -> PoolLimits {
    lock().limits
}

impl Pool {
    fn over(&self, extra_bytes: usize, extra_regions: usize) -> bool {
        self.blocks.len() + extra_regions > self.limits.regions || self.bytes + extra_bytes > self.limits.bytes
    }

    fn remove(&mut self, i: usize) -> Block {
        let block = self.blocks.remove(i);
        self.bytes -= block.region().len();
        block
    }

    /// Takes out finished regions, oldest first, until the pool is within
    /// its limits; the caller drops (unmaps) them outside the lock.
    fn trim(&mut self) -> Vec<Block> {
        let mut excess = Vec::new();
        while self.over(0, 0) {
            match self.blocks.iter().position(finished) {
                Some(i) => excess.push(self.remove(i)),
                // Still exiting: trimmed by a later call.
                None => break,
            }
        }
        excess
    }
}

/// The best-fitting finished region for a thread with this guard, stack and
/// record, if the pool has one, and its plan for that thread. Regions whose
/// stack is more than four times the one asked for are left for bigger
/// requests: the stack, not the whole region, whose signal stack, guards
/// and thread block are the same size whatever the stack (with a 64 KiB
/// guard a 16 KiB stack's region is over six times its stack).
pub(crate) fn take(guard: usize, stack: usize, record: Layout) -> Option<(Block, Plan)> {
    let mut pool = lock();
    // The smallest that fits; a region is planned for only if it is smaller
    // than the best so far, so a full pool costs few plans.
    let mut best: Option<(usize, Plan)> = None;
    for (i, b) in pool.blocks.iter().enumerate() {
        let len = b.region().len();
        if b.region().stack().len() / 4 > stack
            || best.as_ref().is_some_and(|(j, _)| pool.blocks[*j].region().len() <= len)
            || !finished(b)
        {
            continue;
        }
        if let Some(plan) = b.replan(guard, stack, record) {
            best = Some((i, plan));
        }
    }
    let (i, plan) = best?;
    Some((pool.remove(i), plan))
}

/// Gives back the region of a thread that has exited or is exiting; what
/// exceeds the limits is unmapped once its thread is gone.
pub(crate) fn put(block: Block) {
    let mut pool = lock();
    pool.bytes += block.region().len();
    pool.blocks.push(block);
    let excess = pool.trim();
    drop(pool);
    drop(excess);
}

/// A detached thread offers its own region, while still running on it.
/// Returns it if the pool has no room: the thread must unmap it itself.
pub(crate) fn adopt(block: Block) -> Result<(), Block> {
    let mut pool = lock();
    if pool.over(block.region().len(), 1) {
        return Err(block);
    }
    pool.bytes += block.region().len();
    pool.blocks.push(block);
    Ok(())
}
