//! The probe: the one pthread rawthread makes, which finds in a thread
//! glibc made what no exported descriptor gives, and checks the hand-over
//! of malloc's state and the place of glibc's thread lists before any raw
//! thread relies on them.

use std::ffi::c_void;
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use memmap2::MmapOptions;

use super::census::{self, Watch};
use super::handover::MALLOC_WORDS_MAX;
use super::layout::*;
use super::lists::Held;

/// The one pthread rawthread ever makes, at the first spawn: it finds, in a
/// thread glibc made, what no exported descriptor gives.
///
/// * Where `struct pthread` keeps `stackblock` and `stackblock_size`: the
///   pthread runs on a stack of ours, and we look for that stack's address
///   and size in its TCB. glibc reads these two words in every thread:
///   `alloca` limits (a quarter of the stack, at most 64 KiB; with 0 there,
///   64 KiB on any stack, and small stacks overflow inside `printf`) and
///   `pthread_getattr_np`.
/// * malloc's per-thread state ([`find_malloc_state`]), and a check that
///   handing it to another thread hands on its cache ([`check_malloc_state`]).
/// * Where `struct pthread` keeps the buffers that `strerror` and
///   `strsignal` allocate for unknown numbers, which glibc frees at a
///   thread's exit: the words of the TCB holding the pointers they return.
/// * That glibc's thread lists are where [`Lists`] says ([`prove_lists`]).
///
/// The same pthread puts glibc in multi-threaded mode the only way that
/// sets *all* of its state (`__libc_single_threaded`, its SIGCANCEL and
/// SIGSETXID handlers, stdio locks, `multiple_threads` in this thread).
/// Writing the public flag by hand would make malloc lock, but would leave
/// a later real `pthread_create` skipping the handler set-up, and the next
/// `setuid()` kills the process with signal 33.
pub(super) fn probe(glibc: &Glibc) -> io::Result<Probed> {
    /// The probe's stack, and the stack of the one thread it starts.
    const SIZE: usize = 256 << 10;
    let mut stacks = MmapOptions::new().len(2 * SIZE).stack().map_anon()?;
    let base = stacks.as_mut_ptr() as usize;
    let watch = Watch::new(glibc)?;
    let probe = Probe {
        glibc,
        watch: &watch,
        own_stack: (base, SIZE),
        creator_tp: current_tp(),
        inner_stack: (base + SIZE, SIZE),
        stage: Mutex::new(Stage::default()),
        turn: Condvar::new(),
    };
    let mut thread: libc::pthread_t = 0;
    let mut stage = Stage::default();
    // SAFETY: a stack of ours that outlives the thread (joined below),
    // attributes initialised and destroyed here, and a start routine that
    // uses only `probe`.
    let err = unsafe {
        let mut attr = stack_attr(base, SIZE);
        let err = libc::pthread_create(&mut thread, &attr, run, (&raw const probe).cast_mut().cast());
        libc::pthread_attr_destroy(&mut attr);
        if err == 0 {
            check_malloc_in_rounds(&probe, check_malloc_state);
            let lists = prove_lists(&probe);
            join(&probe, thread);
            stage = std::mem::take(&mut *probe.lock());
            stage.lists = Some(lists.and(stage.lists.unwrap_or(Err(Failure::Layout("the probe did not run")))));
        }
        err
    };
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    let fail = |what: &str| unsupported(format!("glibc layout check failed: {what}"));
    let (tp, found, _) = stage.report.ok_or_else(|| fail("the probe did not run"))?;
    let mut found = found.map_err(Failure::into_error)?;
    stage.lists.unwrap_or(Err(Failure::Layout("the probe did not run"))).map_err(Failure::into_error)?;
    if !(base..base + SIZE).contains(&tp) {
        return Err(fail("the probe's struct pthread is not on its stack"));
    }
    // SAFETY: the probe has exited and was joined; its TCB lies in our
    // mapping, which nobody else uses.
    unsafe { find_exiting(glibc, &mut found, thread) }.map_err(fail)?;
    // SAFETY: as above.
    unsafe { watch.exit() };
    if watch.short() {
        return Err(io::Error::from_raw_os_error(libc::ENOMEM));
    }
    census::keep_pthread(watch.into_sight());
    Ok(found)
}

/// In the creator, on the probe's `struct pthread` after its join
/// (`thread`): finds `exiting` and `exit_lock`. `pthread_kill(thread, 0)`
/// on a thread that has exited answers 0 without a signal because
/// `exiting` is set; with `exiting` cleared it signals the (cleared) tid
/// and fails. `exiting` is the one byte, set in the dead thread, whose
/// clearing flips that answer; `exit_lock` is the `int` after it.
///
/// # Safety
/// `thread` is a joined pthread whose `struct pthread` lies in memory the
/// caller owns.
unsafe fn find_exiting(glibc: &Glibc, found: &mut Probed, thread: libc::pthread_t) -> Result<(), &'static str> {
    let tp = thread as usize;
    // SAFETY: pthread_kill with signal 0 sends nothing; it reads the
    // dead block's exit_lock, exiting and tid.
    let kill = || unsafe { libc::pthread_kill(thread, 0) };
    if kill() != 0 {
        return Err("pthread_kill(0) on an exited pthread");
    }
    let mut exiting = (0..glibc.tcb_size).filter(|&off| {
        let byte = at::<u8>(tp, off);
        // SAFETY: bytes of the dead TCB, ours; each put back.
        unsafe {
            if *byte != 1 {
                return false;
            }
            *byte = 0;
            let flipped = kill() != 0;
            *byte = 1;
            flipped
        }
    });
    let (Some(exiting), None) = (exiting.next(), exiting.next()) else {
        return Err("struct pthread exiting");
    };
    found.exiting = exiting;
    found.exit_lock = (exiting + 1).next_multiple_of(4);
    // The mask glibc blocks in its thread's last steps, which it builds in
    // the thread's `sigmask`: none where glibc builds it elsewhere.
    let mut mask = (0..glibc.tcb_size).step_by(8).filter(|&off| {
        // SAFETY: words of the dead TCB, ours.
        unsafe { *at::<u64>(tp, off) == EXIT_SIGNAL_MASK }
    });
    found.exit_sigmask = match (mask.next(), mask.next()) {
        (Some(off), None) => off,
        (None, _) => 0,
        _ => return Err("struct pthread sigmask"),
    };
    // SAFETY: as above.
    if found.exit_lock + 4 > glibc.tcb_size || unsafe { *at::<i32>(tp, found.exit_lock) } != 0 {
        return Err("struct pthread exit_lock");
    }
    Ok(())
}

/// Attributes for a pthread on `[base, base + size)`.
///
/// # Safety
/// The caller destroys the attributes.
unsafe fn stack_attr(base: usize, size: usize) -> libc::pthread_attr_t {
    // SAFETY: zeroed storage, initialised before use.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstack(&mut attr, base as *mut c_void, size);
        attr
    }
}

/// What the probe pthread found: its tp, the offsets, the chunks it freed.
type Report = (usize, Result<Probed, Failure>, Freed);

/// Why a step of the probe failed: a layout that is not as expected
/// (`Unsupported`, on every try), or a shortage that kept the step from
/// running (the errno: ENOMEM when malloc or mmap had no memory, EAGAIN
/// when the kernel refused the thread the proof of the lists starts),
/// which says nothing of the layout and may pass.
#[derive(Clone, Copy, Debug)]
enum Failure {
    Layout(&'static str),
    Os(i32),
}

impl Failure {
    fn into_error(self) -> io::Error {
        match self {
            Failure::Layout(what) => unsupported(format!("glibc layout check failed: {what}")),
            Failure::Os(errno) => io::Error::from_raw_os_error(errno),
        }
    }
}

/// A malloc in the probe returned NULL: malloc's state was not exercised.
const NO_MEMORY: Failure = Failure::Os(libc::ENOMEM);

/// The probe's progress, shared by its creator and the probe pthread.
#[derive(Default)]
struct Stage {
    /// The probe's report, once made.
    report: Option<Report>,
    /// The creator has checked the malloc state (until then the probe
    /// waits, keeping that state alive and unused).
    malloc_checked: bool,
    /// The creator's check failed a round: the probe frees new chunks.
    free_again: bool,
    /// The creator holds the lock to prove: the probe may start its thread.
    create: bool,
    /// The probe's `pthread_create` has returned.
    created: bool,
    /// The lists as the probe and its thread saw them, once it looked.
    lists: Option<Result<(), Failure>>,
}

struct Probe<'a> {
    glibc: &'a Glibc,
    /// The census's watch on the probe: the pthread of the twin census.
    watch: &'a Watch<'a>,
    /// The probe's own stack: base and size.
    own_stack: (usize, usize),
    /// The creator's tp: where the probe finds the creator's malloc state
    /// when malloc gives the probe no arena ([`borrow_creators_arena`]).
    creator_tp: usize,
    /// The stack of the thread the probe starts: base and size.
    inner_stack: (usize, usize),
    stage: Mutex<Stage>,
    turn: Condvar,
}

impl Probe<'_> {
    fn lock(&self) -> MutexGuard<'_, Stage> {
        self.stage.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait_for(&self, ready: impl Fn(&Stage) -> bool) -> MutexGuard<'_, Stage> {
        crate::sys::yield_until(|| ready(&self.lock()));
        let mut stage = self.lock();
        while !ready(&stage) {
            stage = self.turn.wait(stage).unwrap_or_else(|e| e.into_inner());
        }
        stage
    }

    fn update(&self, f: impl FnOnce(&mut Stage)) {
        f(&mut self.lock());
        self.turn.notify_all();
    }
}

/// How many times the creator checks the malloc hand-over, each time on
/// chunks the probe has just freed, before it says the words found do not
/// carry the cache: another thread's malloc in the same arena meanwhile
/// (one arena for all, with `glibc.malloc.arena_max=1`) can take a freed
/// chunk, or move the arena's top, once; a hand-over that misses a word
/// fails every round.
const MALLOC_CHECK_ROUNDS: usize = 8;

/// In the creator: `check` ([`check_malloc_state`]) on what the probe
/// found and freed, again on chunks it frees anew after a failed round
/// (see [`answer_malloc_checks`]).
fn check_malloc_in_rounds(probe: &Probe, check: fn(&Probed, usize, Freed) -> bool) {
    for round in 1..=MALLOC_CHECK_ROUNDS {
        let mut st = probe.wait_for(|st| st.report.is_some() && !st.free_again);
        let Some((tp, found, freed)) = &mut st.report else { unreachable!() };
        let passed = match *found {
            Ok(malloc) => check(&malloc, *tp, *freed),
            Err(_) => true,
        };
        if passed || round == MALLOC_CHECK_ROUNDS {
            if !passed {
                *found = Err(Failure::Layout("handing on malloc's per-thread state does not hand on its cache"));
            }
            st.malloc_checked = true;
        } else {
            st.free_again = true;
        }
        probe.turn.notify_all();
        if passed {
            return;
        }
    }
}

/// The probe pthread.
extern "C" fn run(probe: *mut c_void) -> *mut c_void {
    // SAFETY: the creator's `Probe`, alive until it has joined us.
    let probe = unsafe { &*probe.cast::<Probe>() };
    probe.watch.entry();
    let tp = current_tp();
    let (found, freed, borrowed) = match find_malloc_state(probe.glibc, tp, probe.creator_tp) {
        Ok((found, freed, borrowed)) => (Ok(found), freed, borrowed),
        Err(e) => (Err(e), Freed::default(), None),
    };
    probe.update(|st| st.report = Some((tp, found, freed)));
    // Only once the creator has checked may this thread allocate again: the
    // chunks it freed had to stay where they were.
    let mut st = answer_malloc_checks(probe, free_probe_chunks);
    // Give back the creator's arena, if borrowed, before this thread's
    // exit could take it for its own (and detach it).
    drop(borrowed);
    if let Some((_, found, _)) = &mut st.report {
        *found = found.and_then(|mut found| {
            (found.strerror_buf, found.strsignal_buf) = find_strerror_bufs(probe.glibc, tp)?;
            find_live_fields(probe.glibc, tp, &mut found)?;
            find_stack_fields(probe.glibc, tp, probe.own_stack, &mut found)?;
            Ok(found)
        });
    }
    drop(st);
    let glibc = probe.glibc;
    let words = glibc.libc_tls_len / size_of::<usize>();
    let mut inner = Inner { block: glibc.libc_tls_below_tp, words, fresh: [0; LIBC_TLS_MAX / size_of::<usize>()] };
    let started = start_inner(probe, &mut inner);
    // While the inner thread lives, and after the probe's `pthread_create`
    // (a `dlsym` in a program's own `pthread_create` or `pthread_join`
    // clears the `dlerror` message the battery leaves, and is then seen
    // as a change of the join's, outside the battery); the inner thread
    // is joined before the end, so that the thread counts at the end are
    // the probe's own.
    probe.watch.battery();
    let lists = started.and_then(|thread| {
        // SAFETY: our inner thread, on the second half of our mapping,
        // joined once; `inner` is read only after that join.
        unsafe { join(probe, thread) };
        check_inner(probe, &inner, thread)
    });
    probe.update(|st| {
        if let (Ok(flag), Some((_, Ok(found), _))) = (lists, &mut st.report) {
            found.malloc_shut_down = flag;
        }
        st.lists = Some(lists.map(|_| ()));
    });
    probe.watch.end();
    ptr::null_mut()
}

/// In the probe, once it has reported: frees new chunks with `free_again`
/// ([`free_probe_chunks`]) whenever the creator's check asks for another
/// round, until the creator has decided; returns the stage, locked.
fn answer_malloc_checks<'a>(probe: &'a Probe, free_again: fn() -> Freed) -> MutexGuard<'a, Stage> {
    loop {
        let mut st = probe.wait_for(|st| st.malloc_checked || st.free_again);
        if st.malloc_checked {
            return st;
        }
        if let Some((_, found, freed)) = &mut st.report {
            *freed = free_again();
            if freed.contains(&0) {
                // Nothing to check on: the creator's next round passes
                // this error on.
                *found = Err(NO_MEMORY);
            }
        }
        st.free_again = false;
        probe.turn.notify_all();
    }
}

/// The TCB words that hold the strings `strerror` and `strsignal` return
/// for unknown numbers, in the calling thread (at `tp`). Their buffers
/// come from malloc: without memory `strsignal` returns NULL and `strerror`
/// a fixed "Unknown error" without the number, and that is ENOMEM.
fn find_strerror_bufs(glibc: &Glibc, tp: usize) -> Result<(usize, usize), Failure> {
    // SAFETY: strerror and strsignal have no preconditions; the strings
    // stay ours until this thread calls them again.
    let (strerror, strsignal) = unsafe { (libc::strerror(1000), libc::strsignal(200)) };
    // SAFETY: strerror returns a NUL-terminated string.
    if strsignal.is_null() || !unsafe { std::ffi::CStr::from_ptr(strerror) }.to_bytes().ends_with(b"1000") {
        return Err(NO_MEMORY);
    }
    let once = |p: *mut libc::c_char| {
        let mut words = (tp..tp + glibc.tcb_size).step_by(size_of::<usize>()).filter(|&w| {
            // SAFETY: reading this thread's own TCB.
            unsafe { *(w as *const usize) == p as usize }
        });
        match (words.next(), words.next()) {
            (Some(w), None) => Ok(w - tp),
            _ => Err(Failure::Layout("struct pthread tls_state")),
        }
    };
    Ok((once(strerror)?, once(strsignal)?))
}

/// In the probe pthread (at `tp`, on the stack `own_stack`): finds
/// `stackblock` and proves with glibc's own reader, `pthread_getattr_np`
/// on this thread, the words that follow it and the `flags` word.
///
/// * On a stack it is given, glibc puts the TCB at the top and records the
///   whole stack: {stackblock, stackblock_size} = {base, size}.
/// * `pthread_getattr_np` reports `stackblock_size - guardsize` as the
///   stack's size and `reported_guardsize` as its guard, and copies
///   `flags`, whose "explicit scheduling" bit it reports as the inherit
///   mode: a value written to each candidate word must come back (and the
///   word is put back as it was).
/// * `tpp`, which [`find_live_fields`] saw set by a priority-protect lock,
///   is the word after `reported_guardsize`.
fn find_stack_fields(glibc: &Glibc, tp: usize, own_stack: (usize, usize), found: &mut Probed) -> Result<(), Failure> {
    let (base, size) = own_stack;
    found.stackblock = (0..glibc.tcb_size.saturating_sub(16))
        .step_by(8)
        .find(|&off| {
            // SAFETY: within our own TCB.
            unsafe { *at::<usize>(tp, off) == base && *at::<usize>(tp, off + 8) == size }
        })
        .ok_or(Failure::Layout("struct pthread stackblock"))?;
    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    // pthread_getattr_np allocates (the CPU set): its ENOMEM is a
    // shortage, reported as such, not a layout.
    let short = std::cell::Cell::new(false);
    let getattr = |read: &dyn Fn(&libc::pthread_attr_t) -> usize| {
        // SAFETY: attributes initialised by pthread_getattr_np, destroyed
        // here.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            let err = libc::pthread_getattr_np(me, &mut attr);
            if err != 0 {
                short.set(short.get() || err == libc::ENOMEM);
                return usize::MAX;
            }
            let value = read(&attr);
            libc::pthread_attr_destroy(&mut attr);
            value
        }
    };
    let stack_size = |attr: &libc::pthread_attr_t| {
        let (mut addr, mut len) = (ptr::null_mut(), 0);
        // SAFETY: initialised attributes and two out-pointers.
        unsafe { libc::pthread_attr_getstack(attr, &mut addr, &mut len) };
        len
    };
    let guard_size = |attr: &libc::pthread_attr_t| {
        let mut len = 0;
        // SAFETY: as above.
        unsafe { libc::pthread_attr_getguardsize(attr, &mut len) };
        len
    };
    let inherit = |attr: &libc::pthread_attr_t| {
        let mut mode = 0;
        // SAFETY: as above.
        unsafe { libc::pthread_attr_getinheritsched(attr, &mut mode) };
        mode as usize
    };
    // A value written into a word of our TCB, read back through glibc, and
    // the word put back as it was. Nothing else reads these words meanwhile:
    // they are this thread's record of its own attributes.
    let written = |off: usize, value: usize, read: &dyn Fn(&libc::pthread_attr_t) -> usize| {
        let word = at::<usize>(tp, off);
        // SAFETY: a word of our own TCB.
        let old = unsafe { std::mem::replace(&mut *word, value) };
        let got = getattr(read);
        // SAFETY: as above.
        unsafe { *word = old };
        got
    };
    let guard = found.stackblock + 16;
    let page = crate::region::page_size();
    if written(guard, page, &stack_size) != size - page || written(guard + 8, 3 * page, &guard_size) != 3 * page {
        return Err(if short.get() {
            NO_MEMORY
        } else {
            Failure::Layout("struct pthread guardsize / reported_guardsize")
        });
    }
    if found.tpp != guard + 16 {
        return Err(Failure::Layout("struct pthread tpp"));
    }
    let flags = at::<i32>(tp, glibc.flags);
    // SAFETY: an int of our own TCB.
    let before = unsafe { *flags };
    // SAFETY: as above.
    unsafe { *flags = before | ATTR_FLAG_NOTINHERITSCHED };
    let mode = getattr(&inherit);
    // SAFETY: as above.
    unsafe { *flags = before };
    if before & ATTR_FLAG_STACKADDR == 0 || mode != libc::PTHREAD_EXPLICIT_SCHED as usize {
        return Err(if short.get() { NO_MEMORY } else { Failure::Layout("struct pthread flags") });
    }
    Ok(())
}

/// In the probe pthread (at `tp`): what the kernel and glibc's own calls
/// show of a live glibc thread.
///
/// * The kernel's clear-tid address (`prctl(PR_GET_TID_ADDRESS)`): the
///   word glibc has the kernel clear at exit, `tid` until 2.42 and
///   `joinstate` (then "joinable", 2) from 2.43. A kernel without that
///   prctl (`CONFIG_CHECKPOINT_RESTORE` off) leaves it unproven: `tid`
///   before glibc 2.43, as glibc's source has it, and `Unsupported` from
///   2.43 on.
/// * The robust-futex list head the kernel holds (`get_robust_list`),
///   which glibc set to an empty list (pointing at itself, with
///   `robust_prev` before it pointing at it too) and its `futex_offset`.
/// * `getrandom_buf`: the one TCB word the thread's first `getrandom()`
///   sets (none where glibc keeps no vDSO state).
/// * `tpp`: the TCB word a priority-protect mutex lock sets to the buffer
///   it allocates (checked against `stackblock` by the creator).
fn find_live_fields(glibc: &Glibc, tp: usize, found: &mut Probed) -> Result<(), Failure> {
    let mut clear_tid: usize = 0;
    // SAFETY: PR_GET_TID_ADDRESS writes one pointer.
    found.exit_word = if unsafe { libc::prctl(libc::PR_GET_TID_ADDRESS, &mut clear_tid) } == 0 {
        let off = clear_tid.wrapping_sub(tp);
        // SAFETY: read only if it lies in our own TCB.
        let joinable = off + 4 <= glibc.tcb_size && unsafe { *at::<u32>(tp, off) } == THREAD_STATE_JOINABLE;
        if off != glibc.tid && !joinable {
            return Err(Failure::Layout("the clear-tid word is neither tid nor a joinable joinstate"));
        }
        off
    } else if glibc_minor() < Ok(43) {
        glibc.tid
    } else {
        return Err(Failure::Layout("the clear-tid word (the kernel refused PR_GET_TID_ADDRESS)"));
    };

    let (mut head, mut len) = (0usize, 0usize);
    // SAFETY: get_robust_list(0) writes the calling thread's head and length.
    if unsafe { libc::syscall(libc::SYS_get_robust_list, 0, &mut head, &mut len) } != 0 || len != ROBUST_HEAD_LEN {
        return Err(Failure::Layout("get_robust_list"));
    }
    found.robust_head = head.wrapping_sub(tp);
    if found.robust_head < 8 || found.robust_head + ROBUST_HEAD_LEN > glibc.tcb_size {
        return Err(Failure::Layout("the robust list head is not in struct pthread"));
    }
    // SAFETY: words of our own TCB (checked just above).
    unsafe {
        if *at::<usize>(tp, found.robust_head) != head || *at::<usize>(tp, found.robust_head - 8) != head {
            return Err(Failure::Layout("robust_head / robust_prev of a new thread"));
        }
        found.robust_futex_offset = *at::<isize>(tp, found.robust_head + 8);
    }

    // On the stack, not the heap: this runs short of memory too.
    const WORDS: usize = TCB_MAX / size_of::<usize>();
    let words = glibc.tcb_size / size_of::<usize>();
    if words > WORDS {
        return Err(Failure::Layout("struct pthread is larger than expected"));
    }
    let snapshot = || {
        let mut s = [0usize; WORDS];
        // SAFETY: our own TCB, tcb_size bytes (checked above).
        unsafe { ptr::copy_nonoverlapping(tp as *const usize, s.as_mut_ptr(), words) };
        s
    };
    // The words that were null and now point into a mapping, as offsets
    // (at most two: more is as wrong as two). Only these: other threads
    // change this thread's list links meanwhile.
    let pointers_set = |before: &[usize; WORDS], after: &[usize; WORDS]| {
        let mut set = (0..words).filter(|&i| before[i] == 0 && after[i] != 0 && in_a_mapped_page(after[i]));
        match (set.next(), set.next()) {
            (None, _) => Ok(None),
            (Some(i), None) => Ok(Some(i * size_of::<usize>())),
            _ => Err(()),
        }
    };
    let before = snapshot();
    let mut bytes = [0u8; 16];
    // SAFETY: a buffer of ours; GRND_NONBLOCK never waits.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    let after = snapshot();
    found.getrandom_buf = match pointers_set(&before, &after) {
        Ok(off) => off.unwrap_or(0),
        Err(()) => return Err(Failure::Layout("struct pthread getrandom_buf")),
    };

    let before = snapshot();
    // The buffer could not be had: a shortage, not a layout.
    if census::mutex(libc::PTHREAD_PRIO_PROTECT, false) == libc::ENOMEM {
        return Err(NO_MEMORY);
    }
    let after = snapshot();
    // The lock also records the thread's scheduling (small numbers);
    // the buffer is the one new pointer.
    match pointers_set(&before, &after) {
        Ok(Some(off)) => found.tpp = off,
        _ => return Err(Failure::Layout("struct pthread tpp")),
    }
    Ok(())
}

/// The largest `struct pthread` the probe compares word by word (2368
/// bytes in glibc 2.36 to 2.43).
const TCB_MAX: usize = 8192;

/// Whether `addr` lies in a mapped page.
fn in_a_mapped_page(addr: usize) -> bool {
    let page = crate::region::page_size();
    let mut vec = 0u8;
    // SAFETY: mincore reads nothing of the page; it fails with ENOMEM if unmapped.
    addr != 0 && unsafe { libc::mincore((addr & !(page - 1)) as *mut c_void, 1, &mut vec) } == 0
}

/// Joins `thread`, one of the probe's own, on a stack of ours: first
/// yielding the CPU until the kernel has cleared the word it clears at the
/// thread's exit (where the probe's report says it lies: not before the
/// report, nor for a failed probe), so that the join need not sleep.
///
/// # Safety
/// `thread` is a thread the caller made and has not joined, whose `struct
/// pthread` lies in a mapping that outlives the call.
unsafe fn join(probe: &Probe, thread: libc::pthread_t) {
    let exit_word = match probe.lock().report {
        Some((_, Ok(found), _)) if found.exit_word != 0 => {
            Some((thread as usize + found.exit_word) as *const AtomicU32)
        }
        _ => None,
    };
    if let Some(word) = exit_word {
        // SAFETY: a word of the thread's `struct pthread`, which outlives
        // the call (the caller's contract).
        crate::sys::yield_until(|| unsafe { (*word).load(Ordering::Acquire) } == 0);
    }
    // SAFETY: per the contract, joined once.
    unsafe { libc::pthread_join(thread, ptr::null_mut()) };
}

/// What the probe's inner thread saw of its own libc TLS, first thing.
struct Inner {
    block: usize,
    words: usize,
    fresh: [usize; LIBC_TLS_MAX / size_of::<usize>()],
}

/// In the probe pthread: once the creator holds the word [`Lists`] takes
/// for `_dl_stack_cache_lock`, starts a thread (on a stack of ours, so its
/// `struct pthread` stays readable after the join), which glibc adds to
/// `_dl_stack_user` under that lock, and which writes into `inner`.
fn start_inner(probe: &Probe, inner: &mut Inner) -> Result<libc::pthread_t, Failure> {
    extern "C" fn nothing(inner: *mut c_void) -> *mut c_void {
        // SAFETY: the probe's `Inner`, alive until it has joined us.
        let inner = unsafe { &mut *inner.cast::<Inner>() };
        let block = current_tp() - inner.block;
        // SAFETY: this thread's own libc TLS block, `words` long.
        unsafe { ptr::copy_nonoverlapping(block as *const usize, inner.fresh.as_mut_ptr(), inner.words) };
        ptr::null_mut()
    }
    drop(probe.wait_for(|st| st.create));
    let mut thread: libc::pthread_t = 0;
    // SAFETY: the second half of the probe's mapping, used by nobody else,
    // outlives the thread (joined by join_inner); the attributes are
    // destroyed.
    let err = unsafe {
        let mut attr = stack_attr(probe.inner_stack.0, probe.inner_stack.1);
        let err = libc::pthread_create(&mut thread, &attr, nothing, (&raw mut *inner).cast());
        libc::pthread_attr_destroy(&mut attr);
        err
    };
    probe.update(|st| st.created = true);
    match err {
        0 => Ok(thread),
        err => Err(Failure::Os(err)),
    }
}

/// In the probe pthread, once it has joined the thread [`start_inner`]
/// started: checks what glibc wrote in it: its `user_stack`, and in its
/// libc TLS what glibc's exit wrote into that of a thread that made no
/// call (errno aside): malloc's flag that the thread's cache is shut down
/// (glibc 2.36 to 2.41), the one such word, returned (0 for none).
fn check_inner(probe: &Probe, inner: &Inner, thread: libc::pthread_t) -> Result<usize, Failure> {
    let glibc = probe.glibc;
    let lists = &glibc.lists;
    // SAFETY: its `struct pthread` lies in our mapping, which nobody reuses.
    if unsafe { lists.user_stack.read(thread as usize) } != lists.user_stack.user() {
        return Err(Failure::Layout("struct pthread user_stack / stack_mode"));
    }
    let block = thread as usize - glibc.libc_tls_below_tp;
    // SAFETY: __errno_location has no preconditions.
    let errno =
        (unsafe { libc::__errno_location() } as usize - (current_tp() - glibc.libc_tls_below_tp)) / size_of::<usize>();
    let mut written = (0..inner.words).filter(|&i| {
        // SAFETY: the joined thread's libc TLS, in our mapping.
        i != errno && unsafe { *(block as *const usize).add(i) } != inner.fresh[i]
    });
    Ok(match (written.next(), written.next()) {
        (Some(i), None) => glibc.libc_tls_below_tp - i * size_of::<usize>(),
        _ => 0,
    })
}

/// In the creator: proves that [`Lists`] has glibc's thread lists and the
/// lock that guards them. It takes the word it has for the lock and lets
/// the probe start a thread; the lock is the one glibc takes to list the
/// thread if that `pthread_create` waits for it (writing 2, "taken with
/// waiters", into it), and is not if `pthread_create` returns first. While
/// it holds the proven lock it walks the lists: both are sound rings, the
/// probe is on `_dl_stack_user`, no list operation is half done, and
/// `user_stack` says "user" on every thread of that list and nowhere else.
fn prove_lists(probe: &Probe) -> Result<(), Failure> {
    let lists = &probe.glibc.lists;
    let me = current_tp();
    let mut tries = 0;
    let held = loop {
        if let Some(held) = lists.try_lock() {
            break held;
        }
        tries += 1;
        if tries == 1_000_000 {
            // Let the probe finish without waiting for us.
            probe.update(|st| st.create = true);
            return Err(Failure::Layout("_dl_stack_cache_lock is never free"));
        }
        crate::sys::yield_cpu();
    };
    probe.update(|st| st.create = true);
    let proven = loop {
        if lists.has_waiter(&held) {
            break true;
        }
        if probe.lock().created {
            break false;
        }
        crate::sys::yield_cpu();
    };
    let checked = if !proven {
        Err(Failure::Layout("_dl_stack_cache_lock is not the lock pthread_create takes"))
    } else {
        check_lists(probe, me, &held)
    };
    drop(held);
    checked
}

/// The walk of [`prove_lists`], under the proven lock.
fn check_lists(probe: &Probe, me: usize, held: &Held<'_>) -> Result<(), Failure> {
    let glibc = probe.glibc;
    let lists = &glibc.lists;
    let probe_tp = probe.lock().report.as_ref().map(|report| report.0);
    let threads = lists
        .threads(glibc.list, held)
        .ok_or(Failure::Layout("_dl_stack_used / _dl_stack_user / _dl_stack_cache are not lists"))?;
    let on_user_list = |tp| threads.iter().find(|&&(t, _)| Some(t) == tp).map(|&(_, user)| user);
    if on_user_list(probe_tp) != Some(true) {
        return Err(Failure::Layout("the probe pthread is not on _dl_stack_user"));
    }
    if on_user_list(Some(me)).is_none() {
        return Err(Failure::Layout("the spawning thread is on none of glibc's thread lists"));
    }
    if lists.in_flight(held) != 0 {
        return Err(Failure::Layout("_dl_in_flight_stack is set under _dl_stack_cache_lock"));
    }
    // SAFETY: every listed thread is mapped while we hold the lock.
    if threads.iter().any(|&(tp, user)| (unsafe { lists.user_stack.read(tp) } == lists.user_stack.user()) != user) {
        return Err(Failure::Layout("struct pthread user_stack / stack_mode"));
    }
    Ok(())
}

/// The sizes [`find_malloc_state`] frees and [`check_malloc_state`] asks
/// for: one that every glibc since 2.26 keeps in the thread's cache, and
/// one that by default goes back to the thread's arena instead.
const PROBE_CHUNKS: [usize; 2] = [200, 4096];

/// Finds malloc's per-thread state in the calling thread, which glibc made
/// and which has not used malloc yet; returns it, the addresses of the
/// chunks the thread freed into it, and the creator's arena if this thread
/// had to borrow it ([`borrow_creators_arena`]), to give back once the
/// creator has checked the state.
///
/// malloc keeps a thread's cache (the tcache) and its arena in libc's TLS,
/// in variables glibc does not export and has moved between versions (2.42
/// moved the tcache pointer from `.tbss` to `.tdata`). Their words are the
/// words of libc's TLS block that the thread's first malloc and free
/// change: nothing else runs in between.
///
/// A malloc that replaces glibc's keeps its own per-thread state, which
/// glibc does not free at a thread's exit either (allocators free theirs
/// in pthread-key destructors, which raw threads run): nothing to find.
///
/// errno lies in libc's TLS too, and a malloc that runs short of address
/// space sets it (when it cannot reserve a new arena, even if it then
/// gets memory elsewhere): its word is never malloc's. A malloc that
/// returns NULL has not exercised the state: ENOMEM, not a layout.
///
/// A thread's first malloc makes it an arena of its own (glibc 2.26 to
/// 2.43: `arena_get2`), reserving 64 MiB aligned to 64 MiB (a mapping of
/// 128 MiB, trimmed), unless an arena is free or there are already as many
/// as malloc allows. Where that reservation fails (an address-space limit
/// with less to spare), malloc leaves the thread without an arena, serves
/// its every chunk with a mapping of its own (which free unmaps, never
/// caching it), and tries again at the next malloc: only the tcache word
/// changed (glibc 2.36 to 2.41; not even that in 2.43, whose free sets up
/// a thread's tcache only for a chunk it may cache), and no chunk came
/// back to check. Then the arena word is found by lending the thread the
/// creator's arena ([`borrow_creators_arena`]), and the state is exercised
/// again, in that arena: its words are those that differ from the fresh
/// thread's then, and the arena word.
fn find_malloc_state(
    glibc: &Glibc,
    tp: usize,
    creator_tp: usize,
) -> Result<(Probed, Freed, Option<Borrowed>), Failure> {
    const WORDS: usize = LIBC_TLS_MAX / size_of::<usize>();
    if !glibc.glibc_malloc {
        return Ok(Default::default());
    }
    let block = (tp - glibc.libc_tls_below_tp) as *mut usize;
    let words = glibc.libc_tls_len / size_of::<usize>();
    // SAFETY: __errno_location has no preconditions.
    let errno = (unsafe { libc::__errno_location() } as usize).wrapping_sub(block as usize) / size_of::<usize>();
    let snapshot = || {
        let mut s = [0usize; WORDS];
        // SAFETY: this thread's own libc TLS block, `words` long (checked
        // against LIBC_TLS_MAX at discovery).
        unsafe { ptr::copy_nonoverlapping(block, s.as_mut_ptr(), words) };
        s
    };
    let fresh = snapshot();
    let (freed, mapped) = malloc_and_free();
    let used = snapshot();
    if freed.contains(&0) {
        return Err(NO_MEMORY);
    }
    // The words that differ from the fresh thread's in `now`, but errno's
    // and `arena` (the borrowed one, if any), then `arena`.
    let state = |now: &[usize; WORDS], arena: Option<usize>| {
        let mut found = Probed::default();
        let changed = (0..words).filter(|&i| fresh[i] != now[i] && i != errno && Some(i) != arena);
        for i in changed.chain(arena) {
            let words = &mut found.malloc;
            if words.count == MALLOC_WORDS_MAX {
                return Err(Failure::Layout("malloc's per-thread state is larger than expected"));
            }
            words.below_tp[words.count] = glibc.libc_tls_below_tp - i * size_of::<usize>();
            words.fresh.0[words.count] = fresh[i];
            words.count += 1;
        }
        Ok(found)
    };
    if !mapped {
        let found = state(&used, None)?;
        if found.malloc.count == 0 {
            return Err(Failure::Layout("malloc's per-thread state is not in libc's TLS"));
        }
        return Ok((found, freed, None));
    }
    let creator = (creator_tp - glibc.libc_tls_below_tp) as *const usize;
    let unset = (0..words).filter(|&i| fresh[i] == 0 && used[i] == 0 && i != errno);
    // SAFETY: both blocks are `words` long; the creator waits for our
    // report, using no malloc meanwhile.
    let borrowed = unsafe { borrow_creators_arena(block, creator, unset) }?;
    // Exercised again, in the borrowed arena: a tcache that free did not
    // set up for a chunk that was a mapping (glibc 2.42 and later set it
    // up at a thread's first free of a chunk it may cache), or that could
    // not be allocated, is set up now.
    let (freed, mapped) = malloc_and_free();
    if freed.contains(&0) || mapped {
        // The creator's arena had no memory for them either.
        return Err(NO_MEMORY);
    }
    let arena = (borrowed.word as usize - block as usize) / size_of::<usize>();
    Ok((state(&snapshot(), Some(arena))?, freed, Some(borrowed)))
}

/// A word of the calling thread's libc TLS, holding another thread's value
/// until dropped, when it gets back its own.
struct Borrowed {
    word: *mut usize,
    own: usize,
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        // SAFETY: a word of the calling thread's own libc TLS (see new).
        unsafe { *self.word = self.own };
    }
}

impl Borrowed {
    /// # Safety
    /// `word` is a word of the calling thread's libc TLS, and the borrow
    /// is dropped on this thread.
    unsafe fn new(word: *mut usize, theirs: usize) -> Borrowed {
        // SAFETY: per the contract.
        let own = unsafe { word.replace(theirs) };
        Borrowed { word, own }
    }
}

/// In a thread malloc left without an arena (see [`find_malloc_state`]):
/// finds, among the words of its libc TLS (`own`) that are 0 and stayed 0
/// (`unset`), the one malloc takes for the thread's arena, and returns it
/// holding the creator's value (its arena: the creator is glibc's and has
/// used malloc). It tries each word that is not 0 in the creator's block:
/// with the creator's value there, does a malloc in this thread come from
/// an arena rather than a mapping of its own? Exactly one word may do that.
/// Each word gets back its own value at once, with signals blocked
/// meanwhile, and only malloc and free run in between, which read no word
/// of libc's TLS but errno, the tcache and the arena: a wrong word is never
/// read. The borrowed arena is locked by each malloc as any arena is, and
/// its count of attached threads does not count this thread: it must be
/// given back (the [`Borrowed`] dropped) before this thread exits.
///
/// No word found is ENOMEM: the creator has no arena to lend either (it was
/// made under the same limit), or the arena no memory to give.
///
/// # Safety
/// `own` is the calling thread's libc TLS block and `creator` that of a
/// thread that uses no malloc meanwhile; `unset` indexes words of both.
unsafe fn borrow_creators_arena(
    own: *mut usize,
    creator: *const usize,
    unset: impl Iterator<Item = usize>,
) -> Result<Borrowed, Failure> {
    // SAFETY: sigset_t is plain data, filled before use; the mask is this
    // thread's and is restored below.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    let mut hits = Vec::new();
    for i in unset {
        // SAFETY: a word of the creator's libc TLS, which it does not
        // write while it waits (errno, which it may, is not in `unset`).
        let theirs = unsafe { creator.add(i).read_volatile() };
        if theirs == 0 {
            continue;
        }
        // SAFETY: a word of our own libc TLS, given back below.
        let borrowed = unsafe { Borrowed::new(own.add(i), theirs) };
        let (chunk, mapped) = malloc_and_free_one(PROBE_CHUNKS[1]);
        drop(borrowed);
        if chunk != 0 && !mapped {
            hits.push((i, theirs));
        }
    }
    // SAFETY: the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
    match hits[..] {
        // SAFETY: a word of our own libc TLS; the caller drops the borrow.
        [(i, theirs)] => Ok(unsafe { Borrowed::new(own.add(i), theirs) }),
        [] => Err(NO_MEMORY),
        _ => Err(Failure::Layout("more than one word of libc's TLS gives a thread an arena")),
    }
}

/// Allocates a chunk of each of [`PROBE_CHUNKS`] and frees them; returns
/// their addresses (0 for a malloc that returned NULL).
fn free_probe_chunks() -> Freed {
    malloc_and_free().0
}

/// [`free_probe_chunks`], and whether malloc served the small chunk with
/// a mapping of its own (see [`malloc_and_free_one`]).
fn malloc_and_free() -> (Freed, bool) {
    // SAFETY: malloc and free; the addresses are only compared from here
    // on, and a chunk's header word read while it is ours.
    unsafe {
        let chunks = PROBE_CHUNKS.map(|size| libc::malloc(size));
        let mapped = is_mapped(chunks[0]);
        let freed = chunks.map(|p| {
            libc::free(p);
            p as usize
        });
        (freed, mapped)
    }
}

/// Allocates `size` bytes and frees them; returns their address (0 if
/// malloc returned NULL), and whether malloc served them with a mapping of
/// its own (for a size this small: because the thread has no arena).
fn malloc_and_free_one(size: usize) -> (usize, bool) {
    // SAFETY: as in malloc_and_free.
    unsafe {
        let p = libc::malloc(size);
        let mapped = is_mapped(p);
        libc::free(p);
        (p as usize, mapped)
    }
}

/// Whether glibc's malloc made the chunk at `p` (from glibc's malloc, not
/// yet freed; or NULL) a mapping of its own: `IS_MMAPPED` (2) in the size
/// word before it, where every glibc keeps it (`malloc_usable_size` reads
/// it too, but what it answers for such a chunk changed in 2.43).
///
/// The word is read at an address made from the chunk's as a number, and
/// through `black_box`: the compiler knows what `malloc` returned, and an
/// optimised build took a plain read of the word before it for undefined
/// and the bit for clear (a release build's probe missed that a thread had
/// no arena, and refused glibc).
///
/// # Safety
/// As said: a live chunk of glibc's malloc, or NULL.
unsafe fn is_mapped(p: *mut c_void) -> bool {
    if p.is_null() {
        return false;
    }
    let header = std::hint::black_box(p).expose_provenance() - size_of::<usize>();
    // SAFETY: per the contract, the chunk's header word precedes it.
    unsafe { std::ptr::with_exposed_provenance::<usize>(header).read_volatile() & 2 != 0 }
}

/// The chunks [`find_malloc_state`] freed, by size.
type Freed = [usize; PROBE_CHUNKS.len()];

/// Shows, in the calling thread, that the malloc state `found` in another
/// (waiting) thread at `tp` carries that thread's cache and arena: with
/// those words in place of its own, this thread's mallocs of the sizes the
/// other freed get the very chunks it freed, the small one from its cache,
/// the large one from its arena. Had a chunk stayed in state the words do
/// not cover, this thread would get a chunk of its own instead. (Where
/// glibc caches nothing per thread, both went back to the arena, and come
/// back from there.)
fn check_malloc_state(found: &Probed, tp: usize, freed: Freed) -> bool {
    let words = &found.malloc;
    if words.count == 0 {
        return true;
    }
    let me = current_tp();
    // SAFETY: the other thread waits and uses no malloc state meanwhile;
    // ours is swapped out and back around mallocs and frees of our own,
    // with nothing in between that could allocate.
    unsafe {
        let mine = words.read(me);
        words.write(me, &words.read(tp));
        let got = PROBE_CHUNKS.map(|size| libc::malloc(size));
        got.iter().for_each(|&p| libc::free(p));
        words.write(me, &mine);
        got.map(|p| p as usize) == freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs [`find_malloc_state`] in a new pthread (whose malloc state is
    /// fresh), then, while it waits, [`check_malloc_state`] here on what it
    /// found with `keep` applied to it.
    fn check_in_pthread(keep: fn(&mut Probed)) -> bool {
        type Found = (usize, Result<(Probed, Freed), Failure>);
        struct Shared {
            glibc: Glibc,
            creator_tp: usize,
            found: Mutex<Option<Found>>,
            checked: Mutex<bool>,
        }
        extern "C" fn run(shared: *mut c_void) -> *mut c_void {
            // SAFETY: the test's `Shared`, alive until it joins us.
            let shared = unsafe { &*shared.cast::<Shared>() };
            let (found, borrowed) = match find_malloc_state(&shared.glibc, current_tp(), shared.creator_tp) {
                Ok((found, freed, borrowed)) => (Ok((found, freed)), borrowed),
                Err(e) => (Err(e), None),
            };
            *shared.found.lock().unwrap() = Some((current_tp(), found));
            while !*shared.checked.lock().unwrap() {
                std::hint::spin_loop();
            }
            drop(borrowed);
            ptr::null_mut()
        }
        let shared = Shared {
            glibc: crate::glibc::layout::discover().unwrap(),
            creator_tp: current_tp(),
            found: Mutex::new(None),
            checked: Mutex::new(false),
        };
        let mut thread: libc::pthread_t = 0;
        // SAFETY: default attributes; `shared` outlives the thread.
        let err = unsafe { libc::pthread_create(&mut thread, ptr::null(), run, (&raw const shared).cast_mut().cast()) };
        assert_eq!(err, 0);
        let (tp, found) = loop {
            if let Some(found) = shared.found.lock().unwrap().take() {
                break found;
            }
        };
        let (mut found, freed) = found.unwrap();
        keep(&mut found);
        let ok = check_malloc_state(&found, tp, freed);
        *shared.checked.lock().unwrap() = true;
        // SAFETY: our own thread, joined once.
        unsafe { libc::pthread_join(thread, ptr::null_mut()) };
        ok
    }

    /// The creator's rounds and the probe's answers: a check that fails
    /// its first rounds (another thread took a chunk) passes on a later
    /// round's chunks; one that fails every round is refused after
    /// [`MALLOC_CHECK_ROUNDS`]; neither side waits forever for the other.
    #[test]
    fn malloc_check_rounds_retry_on_new_chunks() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static ROUNDS: AtomicUsize = AtomicUsize::new(0);
        static PASS_AT: AtomicUsize = AtomicUsize::new(0);
        fn check(_: &Probed, _: usize, freed: Freed) -> bool {
            let round = ROUNDS.fetch_add(1, Ordering::SeqCst) + 1;
            // Each round must see the chunks freed for it.
            assert_eq!(freed, [round, round]);
            round == PASS_AT.load(Ordering::SeqCst)
        }
        fn free_again() -> Freed {
            let next = ROUNDS.load(Ordering::SeqCst) + 1;
            [next, next]
        }
        let glibc = crate::glibc::layout::discover().unwrap();
        for (pass_at, rounds, ok) in [(1, 1, true), (3, 3, true), (0, MALLOC_CHECK_ROUNDS, false)] {
            ROUNDS.store(0, Ordering::SeqCst);
            PASS_AT.store(pass_at, Ordering::SeqCst);
            let watch = Watch::new(&glibc).unwrap();
            let probe = Probe {
                glibc: &glibc,
                watch: &watch,
                own_stack: (0, 0),
                creator_tp: 0,
                inner_stack: (0, 0),
                stage: Mutex::default(),
                turn: Condvar::new(),
            };
            probe.lock().report = Some((0, Ok(Probed::default()), [1, 1]));
            let found = std::thread::scope(|s| {
                let answers = s.spawn(|| answer_malloc_checks(&probe, free_again).report.as_ref().unwrap().1.is_ok());
                check_malloc_in_rounds(&probe, check);
                answers.join().unwrap()
            });
            assert_eq!((ROUNDS.load(Ordering::SeqCst), found), (rounds, ok), "passing at round {pass_at}");
        }
    }

    /// The check passes on what was found, and fails on any part of it:
    /// a hand-over missing one word would leave a cache behind.
    /// Held by the tests that check malloc's hand-over in a thread: a
    /// probe running meanwhile in another test would allocate from the
    /// same arena, and take a chunk the one-round check looks for.
    static MALLOC_CHECKS: Mutex<()> = Mutex::new(());

    #[test]
    fn malloc_check_refuses_a_partial_state() {
        let _one = MALLOC_CHECKS.lock().unwrap_or_else(|e| e.into_inner());
        assert!(check_in_pthread(|_| {}), "the state as found");
        assert!(!check_in_pthread(|f| f.malloc.count -= 1), "all words but the last");
        assert!(
            !check_in_pthread(|f| {
                f.malloc.below_tp.copy_within(1.., 0);
                f.malloc.count -= 1;
            }),
            "all words but the first"
        );
    }

    /// The probe refuses a lock word that is not glibc's (its
    /// `pthread_create` does not wait on it), and a `_dl_stack_user` head
    /// that does not hold the probe.
    #[test]
    fn probe_refuses_decoy_lists() {
        let _one = MALLOC_CHECKS.lock().unwrap_or_else(|e| e.into_inner());
        use std::sync::atomic::AtomicI32;
        static DECOY: AtomicI32 = AtomicI32::new(0);
        let mut g = crate::glibc::layout::discover().unwrap();
        g.lists.lock = DECOY.as_ptr() as usize;
        let e = probe(&g).err().expect("a decoy lock word was accepted");
        assert!(e.to_string().contains("_dl_stack_cache_lock"), "{e}");
        let mut g = crate::glibc::layout::discover().unwrap();
        let fake: Box<[usize; 2]> = Box::new([0, 0]);
        let head = Box::into_raw(fake);
        // SAFETY: our own leaked box: an empty ring of one head.
        unsafe { *head = [head as usize, head as usize] };
        g.lists.user = head as usize;
        let e = probe(&g).err().expect("a decoy _dl_stack_user was accepted");
        assert!(e.to_string().contains("glibc layout check failed"), "{e}");
    }
}
