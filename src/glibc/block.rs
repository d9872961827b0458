//! The thread block of one region: built in the creator (TLS from every
//! module's image, the TCB header glibc reads), renewed for the next thread
//! when a region is reused, and freed.

use std::alloc::Layout;
use std::ffi::c_void;
use std::io;
use std::mem::ManuallyDrop;
use std::ptr;
use std::sync::atomic::AtomicI32;

use super::handover::{Legacy, legacies};
use super::layout::*;
use crate::region::{Plan, Region, ThreadLayout};
use crate::sys;

/// A region whose glibc thread block is initialised. Dropping it frees the
/// DTV and dynamic TLS, keeps its malloc state for a later thread, and unmaps
/// the region: only do that once the thread is gone (its tid word reads 0)
/// or was never started.
pub(crate) struct Block {
    region: Region,
    glibc: &'static Glibc,
}

impl Block {
    /// Fills the thread block of a freshly mapped (zeroed) region, in the
    /// creating thread, and puts it on glibc's thread list. On error
    /// nothing is left allocated or listed.
    ///
    /// The caller's signals must not be blocked (see `lists.rs`).
    pub(crate) fn new(glibc: &'static Glibc, region: Region) -> io::Result<Block> {
        let tp = region.tp();
        // Every module's TLS from its init image (never a copy of this
        // thread's live TLS, which would share its malloc cache and its
        // `thread::current()`), `.tbss` zeroed, and a fresh DTV.
        // SAFETY: tp has static_size bytes below it and tcb_size above it,
        // all zero, in memory we own; unlisted on failure.
        if unsafe { list_then_allocate_tls(glibc, tp) }.is_err() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        // Adopt the state of a thread whose region was unmapped.
        if let Some(legacy) = legacies().pop() {
            // SAFETY: the words lie inside this region's block.
            unsafe { write_legacy(glibc, tp, &legacy) };
        }
        // SAFETY: the block is ours alone until clone.
        unsafe { write_header(glibc, &region) };
        Ok(Block { region, glibc })
    }

    pub(crate) fn region(&self) -> &Region {
        &self.region
    }

    /// What the block hands on to the next thread ([`Legacy`]), as its
    /// reuse or unmapping will take it.
    ///
    /// The block's thread is gone (its exit word reads 0), or never ran.
    pub(super) fn legacy(&self) -> Legacy {
        // SAFETY: a block no running thread uses.
        unsafe { read_legacy(self.glibc, self.region.tp()) }
    }

    /// The TCB's `tid`, which the kernel sets at clone
    /// (`CLONE_PARENT_SETTID`).
    pub(crate) fn tid_word(&self) -> &AtomicI32 {
        // SAFETY: the block owns its region, mapped while `self` lives.
        unsafe { self.glibc.tid_word(self.region.tp()) }
    }

    /// The word the kernel clears and wakes when the thread has exited
    /// (`CLONE_CHILD_CLEARTID`), as for glibc's own threads: `tid` up to
    /// glibc 2.42, `joinstate` from 2.43. The region is free once it
    /// reads 0.
    pub(crate) fn exit_word(&self) -> &AtomicI32 {
        // SAFETY: the block owns its region, mapped while `self` lives.
        unsafe { self.glibc.exit_word(self.region.tp()) }
    }

    pub(crate) fn layout(&self) -> ThreadLayout {
        self.region.layout(self.glibc.tid, self.glibc.probed.exit_word)
    }

    /// The plan of this block's region for a thread with this guard, stack
    /// size and record, if they fit in it.
    pub(crate) fn replan(&self, guard: usize, stack: usize, record: Layout) -> Option<Plan> {
        self.region.replan(&self.glibc.geometry(), guard, stack, record)
    }

    /// Undoes, for a thread whose `clone` failed, what the block says of a
    /// thread about to exist: glibc's thread count, and the exit word,
    /// which must read "exited" as the kernel would leave it (from glibc
    /// 2.43 it is `joinstate`, written "joinable" at the block's start),
    /// or the pool would wait for the region for ever.
    pub(crate) fn never_started(&self) {
        super::duties::uncount(self.glibc);
        self.exit_word().store(0, std::sync::atomic::Ordering::Release);
    }

    /// Records in the block the scheduling the creator gives the thread
    /// (`policy`, `priority`), as `pthread_create` records an explicit
    /// one: `pthread_getattr_np` and `pthread_getschedparam` report it.
    pub(crate) fn record_scheduling(&self, policy: i32, priority: i32) {
        let (g, tp) = (self.glibc, self.region.tp());
        // SAFETY: the block is ours alone until clone.
        unsafe {
            *at::<i32>(tp, g.schedpolicy) = policy;
            *at::<i32>(tp, g.sched_priority) = priority;
            *at::<i32>(tp, g.flags) |= ATTR_FLAG_NOTINHERITSCHED | ATTR_FLAG_SCHED_SET | ATTR_FLAG_POLICY_SET;
        }
    }

    /// Makes the block of a finished thread new for the next one, laid out
    /// by `plan` (from [`Block::replan`]): fresh TLS for every module, a
    /// zeroed TCB, the thread's legacy ([`Legacy`]) kept in place. On error
    /// the region is unmapped.
    pub(crate) fn renew(self, plan: Plan) -> io::Result<Block> {
        let this = ManuallyDrop::new(self);
        let glibc = this.glibc;
        let tp = this.region.tp();
        // SAFETY: the thread that used this block has exited (tid word 0);
        // its DTV and dynamic TLS are freed as glibc frees a cached stack's.
        let kept = unsafe {
            let kept = read_legacy(glibc, tp);
            (glibc.deallocate_tls)(tp as *mut c_void, false);
            ptr::write_bytes(tp as *mut u8, 0, glibc.tcb_size);
            ptr::write_bytes(this.region.resolver() as *mut u8, 0, RES_STATE_SIZE);
            kept
        };
        // SAFETY: moved out of a ManuallyDrop that is not used again.
        let mut region = unsafe { ptr::read(&this.region) };
        region.refit(plan);
        // SAFETY: as in Block::new: zeroed TCB, static TLS ours alone.
        if unsafe { list_then_allocate_tls(glibc, tp) }.is_err() {
            // Keep the legacy for a later thread, then unmap.
            legacies().push(kept);
            drop(region);
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        // SAFETY: the block is ours alone until clone.
        unsafe {
            write_legacy(glibc, tp, &kept);
            write_header(glibc, &region);
        }
        Ok(Block { region, glibc })
    }

    /// The last act of a detached thread that frees its own region: frees
    /// its DTV, leaves its legacy for a later thread and unmaps the region
    /// it runs on. After the malloc state is handed over this thread must
    /// not allocate: the next owner may already use that cache.
    ///
    /// # Safety
    /// The caller is the thread this block belongs to, with every
    /// destructor already run, and nobody else owns the block.
    pub(crate) unsafe fn unmap_and_exit(self) -> ! {
        let this = ManuallyDrop::new(self);
        let glibc = this.glibc;
        let tp = this.region.tp();
        if glibc.rseq_len != 0 {
            sys::rseq_unregister(glibc.rseq_area(tp) as *mut c_void, glibc.rseq_len);
        }
        let mut states = legacies();
        // Allocate now, while this thread still owns its malloc cache.
        states.reserve(1);
        // SAFETY: our own block; from here on only static TLS is used.
        unsafe {
            (glibc.deallocate_tls)(tp as *mut c_void, false);
            states.push(read_legacy(glibc, tp));
        }
        drop(states);
        // SAFETY: moved out of a ManuallyDrop that is not used again.
        let (base, len) = unsafe { ptr::read(&this.region) }.into_raw();
        // SAFETY: our own region, which nobody else owns.
        unsafe { sys::unmap_and_exit(base, len) }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let tp = self.region.tp();
        // SAFETY: the owner guarantees the thread is gone. glibc re-reads
        // the DTV from the TCB (the thread may have grown it) and frees it
        // with every dynamic TLS block; `false`: the TCB is not malloc'd.
        unsafe { (self.glibc.deallocate_tls)(tp as *mut c_void, false) };
        // SAFETY: as above.
        let legacy = unsafe { read_legacy(self.glibc, tp) };
        if legacy != (Legacy { malloc: self.glibc.probed.malloc.fresh, getrandom: 0 }) {
            legacies().push(legacy);
        }
    }
}

/// The legacy ([`Legacy`]) of the thread block at `tp`.
///
/// # Safety
/// `tp` is a thread block no running thread uses, or the caller's own.
unsafe fn read_legacy(g: &Glibc, tp: usize) -> Legacy {
    // SAFETY: per the contract; the words lie in its TLS and TCB.
    unsafe {
        Legacy {
            malloc: g.probed.malloc.read(tp),
            getrandom: if g.probed.getrandom_buf == 0 { 0 } else { *at::<usize>(tp, g.probed.getrandom_buf) },
        }
    }
}

/// Gives the thread block at `tp` this legacy.
///
/// # Safety
/// As [`read_legacy`].
unsafe fn write_legacy(g: &Glibc, tp: usize, legacy: &Legacy) {
    // SAFETY: as in read_legacy.
    unsafe {
        g.probed.malloc.write(tp, &legacy.malloc);
        if g.probed.getrandom_buf != 0 {
            *at::<usize>(tp, g.probed.getrandom_buf) = legacy.getrandom;
        }
    }
}

/// Puts the zeroed block at `tp` on glibc's thread list, then fills its
/// TLS and DTV: listed first, so that a `dlopen` of a library with
/// initial-exec TLS that runs meanwhile initialises that library's block
/// here too (it does so in listed threads only), whether it comes before
/// `_dl_allocate_tls` reads the modules or after. Nothing glibc's list
/// walkers read of a listed thread is amiss in a zeroed block without a
/// thread: no tid (a `setuid()` skips it for now), no symbol lookup under
/// way, nothing of `fork()`'s. On failure the block is unlisted again.
///
/// # Safety
/// `tp` is a zeroed thread block in memory the caller owns, on no list;
/// the caller's signals are not blocked.
unsafe fn list_then_allocate_tls(glibc: &Glibc, tp: usize) -> Result<(), ()> {
    // SAFETY: per the contract; the block stays mapped until unlisted
    // (by the thread, by a failed spawn, or below).
    unsafe {
        // Not a glibc stack, as every thread on `_dl_stack_user` says
        // (and the first spawn's probe, perhaps running now in another
        // thread, checks): fork() in this thread puts it back on that list
        // in the child, never among glibc's stacks.
        glibc.lists.user_stack.mark_user(tp);
        super::lists::list(glibc, tp);
    }
    // SAFETY: per the contract.
    if unsafe { (glibc.allocate_tls)(tp as *mut c_void) }.is_null() {
        // SAFETY: listed above; no thread runs on the block.
        unsafe { super::lists::unlist(glibc, tp) };
        return Err(());
    }
    Ok(())
}

/// The TCB header and the fields glibc reads from a running thread.
///
/// # Safety
/// The region's TCB has initialised TLS and is ours alone until clone.
unsafe fn write_header(glibc: &Glibc, region: &Region) {
    let tp = region.tp();
    let me = current_tp();
    // SAFETY: `tp` and `me` are both TCBs of at least tcb_size bytes.
    unsafe {
        // tcb and self must be tp: TLS access and pthread_self read them.
        *at::<usize>(tp, TCB_TCB) = tp;
        *at::<usize>(tp, TCB_SELF) = tp;
        // Makes the thread's own atomics take the lock prefix (malloc's
        // fastbins read it).
        *at::<i32>(tp, TCB_MULTIPLE_THREADS) = 1;
        // Process-wide secrets every thread carries: the stack-protector
        // canary, the pointer-mangling key (setjmp, atexit), CET state.
        *at::<usize>(tp, TCB_STACK_GUARD) = *at::<usize>(me, TCB_STACK_GUARD);
        *at::<usize>(tp, TCB_POINTER_GUARD) = *at::<usize>(me, TCB_POINTER_GUARD);
        *at::<u32>(tp, TCB_FEATURE_1) = *at::<u32>(me, TCB_FEATURE_1);
        // pthread_{get,set}specific use the in-TCB first block directly,
        // but destructors reach it through specific[0].
        *at::<usize>(tp, glibc.specific) = tp + glibc.specific - KEY_L2 * size_of::<KeyData>();
        // sched_getcpu() reads rseq's cpu_id: "not yet" if we will
        // register, "never" if glibc itself does not use rseq. The rest of
        // the area starts zeroed, as glibc clears it before registering:
        // since glibc 2.41 it lies below tp, outside the TCB that renewal
        // zeroes, and a reused region would hand the kernel the last
        // thread's `rseq_cs` and `flags`.
        if glibc.rseq_offset != 0 {
            ptr::write_bytes(glibc.rseq_area(tp) as *mut u8, 0, glibc.rseq_len.max(RSEQ_MIN_LEN) as usize);
            let state = if glibc.rseq_len != 0 { RSEQ_CPU_ID_UNINITIALIZED } else { RSEQ_CPU_ID_REGISTRATION_FAILED };
            *((glibc.rseq_area(tp) + RSEQ_CPU_ID) as *mut i32) = state;
        }
        // The locale's ctype tables, which a new thread's TLS has null
        // (isalpha() and friends would fault): glibc's start_thread sets
        // them before it lets signals in; here they are set before the
        // thread exists, so that even a handler at its first instruction
        // finds them.
        for (offset, table) in glibc.ctype.iter().zip(global_ctype_tables(glibc)) {
            *(tp.wrapping_add_signed(*offset) as *mut usize) = table;
        }
        // The resolver's per-thread state (glibc keeps it in struct
        // pthread at an unexported offset; ours sits below the TLS).
        *glibc.resp_slot(tp) = region.resolver();
        // The stack and its guard, as glibc records a stack it allocated:
        // `stackblock` from the guard's start, and the guard's size twice
        // (`guardsize`, `reported_guardsize`). glibc's alloca limit reads
        // the block's size; pthread_getattr_np reports the stack as
        // [stackblock + guardsize, stackblock + size) and the guard.
        let p = &glibc.probed;
        let (guard, stack) = (region.guard(), region.stack());
        *at::<usize>(tp, p.stackblock) = guard.start;
        *at::<usize>(tp, p.stackblock + 8) = stack.end - guard.start;
        *at::<usize>(tp, p.stackblock + 16) = guard.len();
        *at::<usize>(tp, p.stackblock + 24) = guard.len();
        // An empty robust-mutex list, which the thread registers with the
        // kernel at its start (duties.rs): `robust_head.list` and
        // `robust_prev` point at the head, `futex_offset` as glibc has it.
        let head = tp + p.robust_head;
        *at::<usize>(tp, p.robust_head - 8) = head;
        *at::<usize>(tp, p.robust_head) = head;
        *at::<isize>(tp, p.robust_head + 8) = p.robust_futex_offset;
        // Since glibc 2.43 the kernel clears `joinstate`, not `tid`, at
        // exit; glibc's calls on a thread (pthread_getschedparam, ...)
        // take a thread whose `joinstate` reads 0 for gone.
        if p.exit_word != glibc.tid {
            *at::<u32>(tp, p.exit_word) = THREAD_STATE_JOINABLE;
        }
        // The scheduling the thread inherits, as pthread_create records it:
        // the creator's recorded policy and priority, if recorded, and
        // whether rseq is registered.
        let inherited = *at::<i32>(me, glibc.flags) & (ATTR_FLAG_SCHED_SET | ATTR_FLAG_POLICY_SET);
        *at::<i32>(tp, glibc.flags) = inherited | if glibc.rseq_len != 0 { ATTR_FLAG_DO_RSEQ } else { 0 };
        *at::<i32>(tp, glibc.schedpolicy) = *at::<i32>(me, glibc.schedpolicy);
        *at::<i32>(tp, glibc.sched_priority) = *at::<i32>(me, glibc.sched_priority);
    }
}
