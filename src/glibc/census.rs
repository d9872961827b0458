//! The twin census: a pthread and raw threads run the same battery of
//! libc calls, and what glibc leaves in each is compared, so that a duty
//! the next glibc gives its threads, and rawthread does not do, makes the
//! first spawn fail with `Unsupported` instead of going unseen.
//!
//! The pthread is the probe's ([`super::probe`]): no `pthread_create` is
//! added. It runs the battery after the probe's own experiments, while the
//! thread it starts to prove glibc's lists lives (joined before the end
//! picture). The raw threads are spawned by the
//! first spawn's caller (`life.rs`, through [`check`]), by the path every
//! raw thread takes, and run the same battery: two of them, the second on
//! the region the first gave back to the pool, where the first left a mark
//! in its rseq area, beyond the kernel's fields, that the second must not
//! find; the second is also given its creator's scheduling explicitly.
//! Both take the stack and guard the first spawn asks for (at least what
//! the battery needs), so that the spawn's own thread takes their region
//! from the pool in turn.
//!
//! What is compared, in each thread's own block: `struct pthread`, libc's
//! static TLS block and the rseq area, word by word, each word normalised
//! ([`Kind`]: zero, a pointer into the thread's own block (by offset), into
//! its own stack, another address, a small integer (by value), another
//! number (by value)); at the raw block's creation, just before its clone
//! (against the pthread's entry), at the thread's entry, when its start
//! routine returns ("end"), and once it has exited ("exit"); and what the
//! kernel holds for it (the clear-tid address, the robust list, the rseq
//! registration) at entry and end. The rules:
//!
//! * **C** the two agree at creation, at entry and at end (a raw block
//!   that does not is never started; a raw thread that does not at entry
//!   skips the battery, which could crash on a duty left undone);
//! * **K** the kernel holds the same registrations for both;
//! * **X** every word a pthread's exit changes also changes for the raw
//!   thread;
//! * **P** no pointer the raw thread's calls made survives its exit where
//!   the pthread's does not, unless rawthread hands it on (the values of
//!   its legacy, as the real hand-over reads them: `Block::legacy`);
//! * **G** a word of libc's or the loader's writable data that is up by 1
//!   to 4 from the pthread's entry to its end and back after its join (a
//!   count of threads) is up, and back, around each raw thread too;
//!
//! and what `pthread_getattr_np` reports of a raw thread is its region's
//! stack and guard.
//!
//! Only words found by descriptors or by the probe are excused, each for a
//! reason ([`excuses`]); never a word named by a number. A refusal names
//! the word (which block, which offset), the rule and the battery step
//! after which the word first changed. Other threads may move glibc's
//! counts meanwhile: rule G is tried again, up to [`G_ROUNDS`] times, and
//! one census or probe runs at a time.
//!
//! What the census cannot see: duties that calls outside the battery
//! trigger; state kept in other libraries, or in the heap behind a pointer
//! (only the pointer is compared); counts that a call raises rather than
//! the thread's creation (an arena's count of attached threads, which
//! rawthread keeps, with malloc's state, for the next thread, by design);
//! what a duty writes where a pthread and a raw thread differ on purpose
//! (the excused words); and the paths of options the census's threads do
//! not take (affinity, signal masks, names), which their own tests guard.
//! (The second raw thread is given its creator's scheduling explicitly, so
//! `Builder::scheduling`'s record is held to what the pthread inherited,
//! but where the creator may not set its own policy on a thread.)

use std::ffi::c_void;
use std::io;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::block::Block;
use super::handover::Legacy;
use super::layout::*;

/// A battery step: its name, and its calls.
type Step = (&'static str, fn(&Watch));

/// The battery: each step a few libc calls that leave per-thread state
/// behind in a glibc thread, named for the census's reports.
const BATTERY: [Step; 10] = [
    ("std's thread::current()", |_| {
        let _ = std::thread::current();
    }),
    ("malloc and free", |_| {
        // SAFETY: malloc and free of our own chunks: one the thread's
        // cache keeps, one beyond it that its arena takes back (below
        // malloc's mmap threshold: a mapped chunk's free would raise that
        // threshold for the whole process). Through black_box: an
        // optimised build drops a malloc whose chunk is only freed.
        unsafe {
            let small = std::hint::black_box(libc::malloc(24));
            let large = std::hint::black_box(libc::malloc(64 << 10));
            libc::free(small);
            libc::free(large);
        }
    }),
    ("strerror and strsignal of unknown numbers", |_| {
        // SAFETY: no preconditions; the strings are not used.
        unsafe {
            libc::strerror(1001);
            libc::strsignal(201);
        }
    }),
    ("getrandom", |_| {
        let mut bytes = [0u8; 16];
        // SAFETY: a buffer of ours; GRND_NONBLOCK never waits.
        unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    }),
    ("a failing dlopen", |_| {
        // SAFETY: a path no library has (a path: one failed open, not a
        // search of the library path); the error message is left for
        // the thread's exit to free.
        unsafe { libc::dlopen(c"/librawthread-census-absent.so".as_ptr(), libc::RTLD_NOW) };
    }),
    ("a robust mutex", |_| {
        mutex(libc::PTHREAD_PRIO_NONE, true);
    }),
    ("a priority-protect mutex", |_| {
        mutex(libc::PTHREAD_PRIO_PROTECT, false);
    }),
    ("sched_getcpu", |_| {
        // SAFETY: no preconditions.
        unsafe { libc::sched_getcpu() };
    }),
    ("a pthread key with a destructor", |watch| {
        // SAFETY: the census's key, alive until the census ends; any
        // non-null value has its destructor run at the thread's exit.
        unsafe { libc::pthread_setspecific(watch.key, std::ptr::dangling::<u8>().cast()) };
    }),
    ("a thread_local! with a destructor", |_| {
        thread_local!(static MARK: Mark = const { Mark });
        MARK.with(|_| ());
    }),
];

/// A `thread_local!` value whose destructor glibc must run at exit.
struct Mark;

impl Drop for Mark {
    fn drop(&mut self) {
        TLS_DESTRUCTORS.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many of the census's destructors ran: `thread_local!` ...
static TLS_DESTRUCTORS: AtomicUsize = AtomicUsize::new(0);
/// ... and pthread-key.
static KEY_DESTRUCTORS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn key_destructor(_: *mut c_void) {
    KEY_DESTRUCTORS.fetch_add(1, Ordering::Relaxed);
}

unsafe extern "C" {
    fn pthread_mutexattr_setprioceiling(attr: *mut libc::pthread_mutexattr_t, ceiling: libc::c_int) -> libc::c_int;
    fn pthread_mutexattr_setrobust(attr: *mut libc::pthread_mutexattr_t, robust: libc::c_int) -> libc::c_int;
}

/// A mutex of the given protocol (robust or not) made, locked, unlocked
/// (if locked) and destroyed; returns what the lock returned (ENOMEM for
/// a priority-protect mutex whose buffer could not be had).
pub(super) fn mutex(protocol: libc::c_int, robust: bool) -> libc::c_int {
    // SAFETY: a mutex and attributes of ours, initialised, used and
    // destroyed here; unlocked only if locked.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        let mut mutex: libc::pthread_mutex_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setprotocol(&mut attr, protocol);
        if protocol == libc::PTHREAD_PRIO_PROTECT {
            pthread_mutexattr_setprioceiling(&mut attr, libc::sched_get_priority_min(libc::SCHED_FIFO));
        }
        if robust {
            pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        }
        libc::pthread_mutex_init(&mut mutex, &attr);
        let locked = libc::pthread_mutex_lock(&mut mutex);
        if locked == 0 {
            libc::pthread_mutex_unlock(&mut mutex);
        }
        libc::pthread_mutex_destroy(&mut mutex);
        libc::pthread_mutexattr_destroy(&mut attr);
        locked
    }
}

/// A thread's pictures, by index: at its entry; before the battery (for
/// the pthread, after the probe's own experiments); after the battery's
/// first step; at its end; after its exit. Through the battery, the end's
/// place holds the latest picture, to see which step changed each word (a
/// picture after each step would be three times the memory to fault in,
/// at the first spawn).
const ENTRY: usize = 0;
const BEFORE_BATTERY: usize = 1;
const FIRST_STEP: usize = 2;
const END: usize = 3;
const EXIT: usize = 4;
const LATEST: usize = END;

/// The spans of a thread block the census compares: (name, start from
/// tp, length in bytes); the rseq area's is empty where it lies inside
/// `struct pthread` (before glibc 2.41) or there is none. No allocation:
/// the probe pthread reads them before malloc's first use.
fn spans(g: &Glibc) -> [(&'static str, isize, usize); 3] {
    let rseq = if g.rseq_offset < 0 { g.rseq_len.max(RSEQ_MIN_LEN) as usize } else { 0 };
    [
        ("struct pthread", 0, g.tcb_size),
        ("libc's TLS", -(g.libc_tls_below_tp as isize), g.libc_tls_len),
        ("the rseq area", g.rseq_offset, rseq),
    ]
}

/// What the kernel holds for a thread, as the thread itself asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Kernel {
    /// `PR_GET_TID_ADDRESS`, from tp (None: refused).
    clear_tid: Option<isize>,
    /// `get_robust_list`: head from tp, and length (None: refused).
    robust: Option<(isize, usize)>,
    /// The errno of registering glibc's rseq area again, as glibc would:
    /// EBUSY if that very registration is in place (0: none was, and the
    /// one just made is undone).
    rseq: i32,
}

impl Kernel {
    fn now(g: &Glibc, tp: usize) -> Kernel {
        let mut clear_tid = 0usize;
        // SAFETY: PR_GET_TID_ADDRESS writes one pointer.
        let clear_tid = (unsafe { libc::prctl(libc::PR_GET_TID_ADDRESS, &mut clear_tid) } == 0)
            .then(|| clear_tid.wrapping_sub(tp) as isize);
        let (mut head, mut len) = (0usize, 0usize);
        // SAFETY: get_robust_list(0) writes the calling thread's head and length.
        let robust = (unsafe { libc::syscall(libc::SYS_get_robust_list, 0, &mut head, &mut len) } == 0)
            .then(|| (head.wrapping_sub(tp) as isize, len));
        let rseq = if g.rseq_len == 0 {
            0
        } else {
            let area = g.rseq_area(tp) as *mut c_void;
            // SAFETY: the calling thread's own rseq area, which lives as
            // long as the thread; a registration made here is undone at
            // once.
            if unsafe { crate::sys::rseq_register(area, g.rseq_len) } {
                crate::sys::rseq_unregister(area, g.rseq_len);
                0
            } else {
                io::Error::last_os_error().raw_os_error().unwrap_or(0)
            }
        };
        Kernel { clear_tid, robust, rseq }
    }
}

/// What the census sees of one thread. All of it is allocated by the
/// creator before the thread starts: the thread only writes into it.
pub(super) struct Sight {
    tp: usize,
    /// The thread's stack pointer at entry (roughly: a local's address).
    sp: usize,
    /// The thread's stack, as `pthread_getattr_np` reports it, and the
    /// guard it reports.
    stack: Range<usize>,
    guard: usize,
    /// The block's words: see [`ENTRY`] and what follows it.
    pictures: Vec<Vec<usize>>,
    /// For each word, the battery step (from 1) after which it first
    /// changed, or 0.
    changed_by: Vec<u8>,
    /// Whether the thread has taken its end picture.
    ended: bool,
    /// Whether the thread skipped the battery for want of memory.
    short: bool,
    /// The kernel's registrations at entry and at end.
    kernel: [Kernel; 2],
    /// The globals watched: each read before the thread, at its entry, at
    /// its end and after its join.
    watched: Vec<Watched>,
}

/// A 32-bit word of libc's or the loader's writable data, and what it read
/// before a thread, at its entry, at its end and after its join.
#[derive(Clone, Copy)]
struct Watched {
    addr: usize,
    values: [u32; 4],
}

/// The most globals the census watches: words up by 1 to 4 at the
/// pthread's entry (a count of threads, a lock taken meanwhile by another
/// thread); more are not watched.
const WATCHED_MAX: usize = 64;

/// One census under way: its key, its globals, and the sight of the
/// thread it watches. Its methods that read the watched thread's block
/// (through [`Sight::tp`]) are called while that block is mapped: by the
/// thread itself, by a creator's hook before its clone, or by the creator
/// before its region is given back ([`Watch::exit`], which is unsafe for
/// that).
pub(super) struct Watch<'a> {
    glibc: &'a Glibc,
    key: libc::pthread_key_t,
    /// For the pthread: libc's and the loader's writable data, as (start,
    /// length), and the low byte of each of its words as it was before the
    /// thread, from which its entry picks the globals to watch (a byte, not
    /// the word: a quarter of the memory to fault in and fill, and a word
    /// up by 1 to 4 has its low byte up by as much). For the raw thread:
    /// nothing, as it watches the pthread's counts.
    globals: Vec<(usize, usize)>,
    before: Vec<u8>,
    /// A word of the pictures (by index), and its bits flipped in each
    /// picture taken: where a raw thread differs from the pthread on
    /// purpose (see [`watch_raw`]).
    flipped: Option<(usize, usize)>,
    sight: Mutex<Sight>,
}

/// The census's pthread key (one per process: made once, never deleted,
/// as no thread may be left holding a value of a deleted key).
fn census_key() -> io::Result<libc::pthread_key_t> {
    static KEY: Mutex<Option<libc::pthread_key_t>> = Mutex::new(None);
    let mut key = KEY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(key) = *key {
        return Ok(key);
    }
    let mut new = 0;
    // SAFETY: a key of ours with a destructor that only counts.
    match unsafe { libc::pthread_key_create(&mut new, Some(key_destructor)) } {
        0 => Ok(*key.insert(new)),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Has glibc record the calling thread's scheduling in its `struct
/// pthread`, as `pthread_getschedparam` does, so that a thread it creates
/// inherits it, recorded.
fn record_own_scheduling() {
    let (mut policy, mut param) = (0, libc::sched_param { sched_priority: 0 });
    // SAFETY: our own thread, and two out-pointers.
    unsafe { libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param) };
}

/// A vector of `len` zeroes, or ENOMEM.
fn zeroed<T: Copy + Default>(len: usize) -> io::Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
    v.resize(len, T::default());
    Ok(v)
}

impl<'a> Watch<'a> {
    /// Prepares to watch a thread that the caller creates next: takes the
    /// "before" of the globals. The caller's own scheduling is recorded
    /// first (as `pthread_getschedparam` records it), so that a thread
    /// that inherits it has something to inherit.
    pub(super) fn new(glibc: &'a Glibc) -> io::Result<Watch<'a>> {
        record_own_scheduling();
        let globals = writable_globals(glibc);
        let words: usize = globals.iter().map(|g| g.1 / 4).sum();
        let mut watch = Watch::with(glibc, Vec::new())?;
        watch.before = zeroed(words)?;
        let mut out = watch.before.iter_mut();
        for &(start, len) in &globals {
            for word in (start..start + len).step_by(4) {
                *out.next().unwrap() = read_global(word) as u8;
            }
        }
        watch.globals = globals;
        Ok(watch)
    }

    /// Prepares to watch a raw thread, and the globals `counts` of the
    /// pthread's census; `flipped`, if some, is a word (by index) and the
    /// bits of it flipped in every picture of the thread.
    fn new_raw(glibc: &'a Glibc, counts: &[(usize, u32)], flipped: Option<(usize, usize)>) -> io::Result<Watch<'a>> {
        let watched = counts.iter().map(|&(addr, _)| Watched { addr, values: [read_global(addr), 0, 0, 0] }).collect();
        Ok(Watch { flipped, ..Watch::with(glibc, watched)? })
    }

    /// The part of [`Watch::new`] and [`Watch::new_raw`] they share.
    fn with(glibc: &'a Glibc, mut watched: Vec<Watched>) -> io::Result<Watch<'a>> {
        let key = census_key()?;
        let words: usize = spans(glibc).iter().map(|s| s.2 / size_of::<usize>()).sum();
        let mut pictures = Vec::new();
        for _ in 0..=EXIT {
            pictures.push(zeroed(words)?);
        }
        let changed_by = zeroed(words)?;
        watched.try_reserve(WATCHED_MAX).map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let sight = Sight {
            tp: 0,
            sp: 0,
            stack: 0..0,
            guard: 0,
            pictures,
            changed_by,
            ended: false,
            short: false,
            kernel: [Kernel::default(); 2],
            watched,
        };
        Ok(Watch { glibc, key, globals: Vec::new(), before: Vec::new(), flipped: None, sight: Mutex::new(sight) })
    }

    fn sight(&self) -> std::sync::MutexGuard<'_, Sight> {
        self.sight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads the watched globals into slot `at` (1 entry, 2 end, 3 after);
    /// at entry the pthread's watch first picks them: the words whose low
    /// byte is up by 1 to 4 since before the thread, each taken to have
    /// been that much less before (the rules hold its later readings to
    /// that value), without allocating: the vector has room.
    fn take_globals(&self, at: usize) {
        let mut sight = self.sight();
        if at == 1 && !self.globals.is_empty() {
            let mut before = self.before.iter();
            for &(start, len) in &self.globals {
                for addr in (start..start + len).step_by(4) {
                    let now = read_global(addr);
                    let up = (now as u8).wrapping_sub(*before.next().unwrap());
                    if (1..=4).contains(&up) && sight.watched.len() < WATCHED_MAX {
                        sight.watched.push(Watched { addr, values: [now.wrapping_sub(up.into()), 0, 0, 0] });
                    }
                }
            }
        }
        for watched in &mut sight.watched {
            watched.values[at] = read_global(watched.addr);
        }
    }

    /// The words of the watched thread's block, span after span (with
    /// [`Watch::flipped`]'s bits flipped).
    fn words(&self, tp: usize) -> impl Iterator<Item = usize> {
        let (flipped, bits) = self.flipped.unwrap_or((usize::MAX, 0));
        let words = spans(self.glibc).into_iter().flat_map(move |(_, start, len)| {
            let from = tp.wrapping_add_signed(start);
            (from..from + len).step_by(size_of::<usize>()).map(|word| {
                // SAFETY: a word of the watched thread's block, which is
                // mapped while the census reads it (the caller's contract).
                unsafe { (word as *const usize).read_volatile() }
            })
        });
        words.enumerate().map(move |(i, word)| if i == flipped { word ^ bits } else { word })
    }

    fn take_picture(&self, sight: &mut Sight, at: usize) {
        for (out, word) in sight.pictures[at].iter_mut().zip(self.words(sight.tp)) {
            *out = word;
        }
    }

    /// After battery step `step` (from 1): notes the words it changed
    /// first, in the latest picture, and keeps the first step's picture.
    fn note_step(&self, sight: &mut Sight, step: u8) {
        let Sight { tp, pictures, changed_by, .. } = sight;
        let (kept, latest) = pictures.split_at_mut(LATEST);
        for ((was, changed), now) in latest[0].iter_mut().zip(changed_by.iter_mut()).zip(self.words(*tp)) {
            if now != *was && *changed == 0 {
                *changed = step;
            }
            *was = now;
        }
        if step == 1 {
            kept[FIRST_STEP].copy_from_slice(&latest[0]);
        }
    }

    /// In the watched thread, first thing.
    pub(super) fn entry(&self) {
        self.take_globals(1);
        let tp = current_tp();
        let here = 0u8;
        let mut sight = self.sight();
        sight.tp = tp;
        sight.sp = &raw const here as usize;
        self.take_picture(&mut sight, ENTRY);
        sight.kernel[0] = Kernel::now(self.glibc, tp);
    }

    /// In the watched thread: the battery, a picture before it, and what
    /// each step changed.
    pub(super) fn battery(&self) {
        let mut sight = self.sight();
        self.take_picture(&mut sight, BEFORE_BATTERY);
        self.take_picture(&mut sight, LATEST);
        drop(sight);
        if !has_headroom() {
            self.sight().short = true;
            return;
        }
        for (step, (_, call)) in (1..).zip(BATTERY.iter()) {
            call(self);
            self.note_step(&mut self.sight(), step);
        }
    }

    /// In the watched thread, last thing before its start routine returns.
    pub(super) fn end(&self) {
        let (stack, guard) = own_stack();
        let mut sight = self.sight();
        (sight.stack, sight.guard) = (stack, guard);
        self.take_picture(&mut sight, END);
        sight.kernel[1] = Kernel::now(self.glibc, sight.tp);
        drop(sight);
        self.take_globals(2);
        self.sight().ended = true;
    }

    /// In the creator, once the thread has exited and been joined.
    ///
    /// # Safety
    /// The thread's block is still mapped.
    pub(super) unsafe fn exit(&self) {
        let mut sight = self.sight();
        self.take_picture(&mut sight, EXIT);
        drop(sight);
        self.take_globals(3);
    }

    /// Whether the thread skipped the battery for want of memory.
    pub(super) fn short(&self) -> bool {
        self.sight().short
    }

    pub(super) fn into_sight(self) -> Sight {
        self.sight.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether the process has the room the battery and the census need, in
/// address space: a battery run short of memory would leave other state
/// than glibc's threads leave (or end the process: glibc cannot register
/// a `thread_local!` destructor without memory, nor std allocate without
/// it). A shortage is reported as ENOMEM instead.
fn has_headroom() -> bool {
    /// Far more than the battery and the census take once a thread runs
    /// (a 64 KiB chunk, small buffers, the census's pictures); a census
    /// thread's region is mapped before, by the spawn path, which reports
    /// its own shortage.
    const HEADROOM: usize = 1 << 20;
    // SAFETY: a new mapping of nothing, unmapped at once.
    unsafe {
        let room = libc::mmap(
            std::ptr::null_mut(),
            HEADROOM,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        room != libc::MAP_FAILED && libc::munmap(room, HEADROOM) == 0
    }
}

/// The calling thread's stack and guard, as `pthread_getattr_np` reports
/// them (empty if it fails).
fn own_stack() -> (Range<usize>, usize) {
    // SAFETY: attributes filled by pthread_getattr_np and destroyed here.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return (0..0, 0);
        }
        let (mut addr, mut len, mut guard) = (std::ptr::null_mut(), 0, 0);
        libc::pthread_attr_getstack(&attr, &mut addr, &mut len);
        libc::pthread_attr_getguardsize(&attr, &mut guard);
        libc::pthread_attr_destroy(&mut attr);
        (addr as usize..addr as usize + len, guard)
    }
}

/// A 32-bit word of a loaded object's writable data, read as it is, racily
/// (other threads may write it meanwhile).
fn read_global(addr: usize) -> u32 {
    // SAFETY: an aligned word of a writable segment of a loaded object,
    // mapped for the process's life.
    unsafe { (addr as *const u32).read_volatile() }
}

/// The writable, non-RELRO parts of libc's and the loader's segments, as
/// (start, length), 4-byte aligned: the objects that hold libc's `malloc`
/// and the loader's `_dl_allocate_tls`.
fn writable_globals(g: &Glibc) -> Vec<(usize, usize)> {
    let inside = [libc::malloc as *const () as usize, g.allocate_tls as *const () as usize];
    let mut found = Vec::new();
    each_object(|info, headers| {
        let range = |h: &libc::Elf64_Phdr| {
            let start = info.dlpi_addr as usize + h.p_vaddr as usize;
            start..start + h.p_memsz as usize
        };
        let loads = || headers.iter().filter(|h| h.p_type == libc::PT_LOAD);
        if !loads().any(|h| inside.iter().any(|a| range(h).contains(a))) {
            return false;
        }
        let relro = headers.iter().find(|h| h.p_type == libc::PT_GNU_RELRO).map_or(0..0, range);
        for h in loads().filter(|h| h.p_flags & libc::PF_W != 0) {
            let Range { start, end } = range(h);
            let start = if relro.contains(&start) { relro.end } else { start }.next_multiple_of(4);
            if start < end {
                found.push((start, (end - start) & !3));
            }
        }
        false
    });
    found
}

/// The pthread's sight, kept from the probe for the census of the raw
/// thread (the last probe's, where several raced).
static PTHREAD: Mutex<Option<Sight>> = Mutex::new(None);
/// Whether a census has passed in this process.
static PASSED: AtomicBool = AtomicBool::new(false);

/// The lock a census holds while it runs, which `fork()` takes too (see
/// `fork.rs`), so that a child never finds it held by a thread it lacks.
static CENSUS: Mutex<()> = Mutex::new(());

/// [`CENSUS`], locked (a panic while it was held leaves nothing half done
/// that a later census relies on).
pub(crate) fn lock() -> std::sync::MutexGuard<'static, ()> {
    CENSUS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps the probe pthread's sight for [`check`].
pub(super) fn keep_pthread(sight: Sight) {
    *PTHREAD.lock().unwrap_or_else(|e| e.into_inner()) = Some(sight);
}

/// How a word of a block is normalised for comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Zero,
    /// Into the thread's own block, at this distance from tp.
    Own(isize),
    /// Into the thread's own stack.
    Stack,
    /// Any other user-space address (heap, libc, another thread; mapped
    /// or since freed).
    Address,
    /// A small integer, by value.
    Small(usize),
    /// Any other number (beyond user space: a negative number, a secret),
    /// by value.
    Number(usize),
}

impl Sight {
    /// Whether `value` points into this thread's own block or stack, where
    /// equal values in the two threads mean different things.
    fn holds(&self, g: &Glibc, value: usize) -> bool {
        self.own(g).contains(&value) || self.stack.contains(&value)
    }

    /// The thread's own block: its static TLS and `struct pthread`.
    fn own(&self, g: &Glibc) -> Range<usize> {
        self.tp - (g.static_size - g.tcb_size)..self.tp + g.tcb_size
    }
}

impl Kind {
    fn of(value: usize, g: &Glibc, sight: &Sight) -> Kind {
        if value == 0 {
            Kind::Zero
        } else if sight.own(g).contains(&value) {
            Kind::Own(value.wrapping_sub(sight.tp) as isize)
        } else if sight.stack.contains(&value) {
            Kind::Stack
        } else if value < 1 << 16 {
            Kind::Small(value)
        } else if value < 1 << 47 {
            Kind::Address
        } else {
            Kind::Number(value)
        }
    }
}

/// The bits of each word of the pictures excused from rule C (at entry
/// and end) and from rule X.
struct Excuses {
    c: Vec<usize>,
    x: Vec<usize>,
}

impl Excuses {
    /// Excuses the `len` bytes at `off` from tp (the `bits` of each of
    /// their words) from rule C, and from X if `x`.
    fn add(&mut self, g: &Glibc, off: isize, len: usize, bits: usize, x: bool) {
        let mut index = 0;
        for (_, start, bytes) in spans(g) {
            let (from, to) = (off.max(start), (off + len as isize).min(start + bytes as isize));
            let word_of = |at: isize| index + (at - start) as usize / size_of::<usize>();
            if from < to {
                for word in word_of(from)..=word_of(to - 1) {
                    let base = start + ((word - index) * size_of::<usize>()) as isize;
                    let taken = (0..size_of::<usize>() as isize)
                        .filter(|b| (from..to).contains(&(base + b)))
                        .fold(0, |taken, b| taken | 0xff << (b * 8));
                    self.c[word] |= taken & bits;
                    if x {
                        self.x[word] |= taken & bits;
                    }
                }
            }
            index += bytes / size_of::<usize>();
        }
    }
}

/// Where the word at `index` is, for reports: its span and offset.
fn describe(g: &Glibc, mut index: usize) -> String {
    for (name, start, bytes) in spans(g) {
        let words = bytes / size_of::<usize>();
        if index < words {
            let off = index * size_of::<usize>();
            return format!("{name} + {off:#x} (tp {:+#x})", start + off as isize);
        }
        index -= words;
    }
    format!("word {index}")
}

/// The words excused from rules, each found by a descriptor or by the
/// probe; `p` is the pthread's sight.
fn excuses(g: &Glibc, p: &Sight) -> Excuses {
    let probed = &g.probed;
    let words = p.pictures[ENTRY].len();
    let mut list = Excuses { c: vec![0; words], x: vec![0; words] };
    let mut add = |off: isize, len: usize, rules: &str| list.add(g, off, len, usize::MAX, rules.contains('X'));
    // errno: whatever the thread's last call left.
    // SAFETY: __errno_location has no preconditions.
    add(unsafe { libc::__errno_location() } as isize - current_tp() as isize, 4, "CX");
    // Each thread's own tid.
    add(g.tid as isize, 4, "C");
    // Each thread's own stack and guard (a raw thread's are checked against its region).
    add(probed.stackblock as isize, 32, "C");
    // Rawthread's resolver state lies beside the TLS, not in struct pthread.
    add(g.resp, 8, "C");
    // The neighbours on glibc's thread list.
    add(g.list as isize, 16, "CX");
    // pthread_create's record of the start routine and, beside it, its
    // argument: a raw thread starts at rawthread's entry, from its clone
    // request.
    add(g.start_routine as isize, 16, "C");
    for &below in &probed.malloc.below_tp[..probed.malloc.count] {
        // Malloc's state, handed on to the next thread.
        add(-(below as isize), 8, "CX");
    }
    if g.rseq_len != 0 {
        // What the kernel writes into a registered rseq area, for the CPU
        // the thread last ran on (`struct rseq`, the kernel's ABI:
        // cpu_id_start and cpu_id, node_id, mm_cid); `rseq_cs` and `flags`
        // are compared.
        add(g.rseq_offset, 8, "CX");
        add(g.rseq_offset + 20, 8, "CX");
    }
    if probed.exit_sigmask != 0 {
        // `sigmask`, where pthread_create leaves its creator's mask for
        // the new thread to restore; a raw thread starts with its mask
        // from the clone. (Rule X holds: both build the exit mask there.)
        add(probed.exit_sigmask as isize, 8, "C");
    }
    if probed.malloc_shut_down != 0 {
        // Malloc's shut-down flag: its state is handed on, not shut down.
        add(-(probed.malloc_shut_down as isize), 8, "X");
    }
    if probed.getrandom_buf != 0 {
        // Getrandom's state, handed on to the next thread.
        add(probed.getrandom_buf as isize, 8, "CX");
    }
    // The pthread runs on a stack it was given.
    let shift = g.flags % size_of::<usize>() * 8;
    list.add(g, g.flags as isize, 4, (ATTR_FLAG_STACKADDR as usize) << shift, false);
    // The jump buffer glibc's start_thread keeps in its own frame, above
    // the start routine's, for pthread_exit and cancellation to unwind to:
    // neither is for raw threads.
    for i in 0..g.tcb_size / size_of::<usize>() {
        let value = p.pictures[0][i];
        if Kind::of(value, g, p) == Kind::Stack && value > p.sp {
            list.c[i] = usize::MAX;
        }
    }
    list
}

/// Why the census refused, for `Unsupported`.
fn refused(why: String) -> io::Error {
    unsupported(format!("twin census: {why}"))
}

/// What the census does with a raw thread's block just before its clone:
/// see [`RunRaw`].
pub(crate) type Created<'a> = &'a dyn Fn(&Block) -> io::Result<()>;

/// A scheduling policy as `Builder::scheduling` takes it: policy, nice,
/// real-time priority.
pub(crate) type Scheduling = (libc::c_int, i32, u32);

/// How the census has a raw thread run: spawn one by the path every
/// thread takes, with `scheduling` given explicitly if some, with `created`
/// called on its block just before its clone (the spawn fails with its
/// error, and no thread is made, if it refuses), running `body`; wait for
/// its exit; call `exited` on its block (still the caller's, not yet
/// reused); join it.
pub(crate) type RunRaw<'a> =
    &'a dyn Fn(Option<Scheduling>, Created, &(dyn Fn() + Sync), &mut dyn FnMut(&Block)) -> io::Result<()>;

/// Runs the census, until it passes once in the process (a failed census
/// is run again by the next spawn): compares raw threads, spawned by
/// `run_raw`, with the probe's pthread.
pub(crate) fn check(g: &Glibc, run_raw: RunRaw) -> io::Result<()> {
    if PASSED.load(Ordering::Acquire) {
        return Ok(());
    }
    // One census at a time: racing ones would read each other's threads
    // in the thread count (rule G). The others wait for it, and find it
    // passed.
    let _one = lock();
    if PASSED.load(Ordering::Acquire) {
        return Ok(());
    }
    let pthread = PTHREAD.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = pthread.as_ref() else {
        return Err(refused("the probe's pthread was not watched".into()));
    };
    let excuses = excuses(g, p);
    let counts = counts_of(p);
    // The raw threads inherit this thread's recorded scheduling, as the
    // pthread did its creator's (which may have been another thread).
    record_own_scheduling();
    if !has_headroom() {
        return Err(io::Error::from_raw_os_error(libc::ENOMEM));
    }
    rounds(g, run_raw, p, &excuses, &counts)?;
    PASSED.store(true, Ordering::Release);
    Ok(())
}

/// How many times the census tries its raw threads before it says that a
/// count does not move with them: other threads may create or end
/// threads, or hold a lock, while it looks.
const G_ROUNDS: usize = 8;

/// The census's rounds: in each, two raw threads, the second on the
/// region the first gave back to the pool (as most threads run on a reused
/// region) and given its creator's scheduling explicitly, each held to
/// every rule; a round whose rule G fails is tried again.
fn rounds(g: &Glibc, run_raw: RunRaw, p: &Sight, excuses: &Excuses, counts: &[(usize, u32)]) -> io::Result<()> {
    // The census's own counts of a thread, one per raw thread it may run,
    // held while they live: one that leaves without having been counted
    // would otherwise end the process as its last thread, instead of
    // failing rule G.
    const HELD: u32 = 2 * G_ROUNDS as u32;
    g.nthreads().fetch_add(HELD, Ordering::Relaxed);
    let mut counted = Ok(());
    for _ in 0..G_ROUNDS {
        counted = Ok(());
        for fresh in [true, false] {
            // The second thread is given its creator's scheduling
            // explicitly, to hold `Builder::scheduling`'s record to the
            // pthread's; where the creator may not give it (a real-time
            // policy without the right to set it: EPERM), it inherits it.
            let scheduling = if fresh { None } else { creators_scheduling() };
            let watched = match watch_raw(g, run_raw, p, excuses, counts, fresh, scheduling) {
                Err(e) if scheduling.is_some() && e.raw_os_error() == Some(libc::EPERM) => {
                    watch_raw(g, run_raw, p, excuses, counts, fresh, None)
                }
                watched => watched,
            };
            let r = match watched {
                Ok(r) => r,
                Err(e) => {
                    g.nthreads().fetch_sub(HELD, Ordering::Relaxed);
                    return Err(e);
                }
            };
            counted = counted.and(counts_move(counts, &r));
        }
        if counted.is_ok() {
            break;
        }
    }
    g.nthreads().fetch_sub(HELD, Ordering::Relaxed);
    counted.map_err(refused)
}

/// One raw thread of the census, compared with the pthread `p` (rules C,
/// K, X, P, and what `pthread_getattr_np` reports); returns its sight for
/// rule G. A thread whose block does not agree with the pthread's at its
/// creation is never started; one that does not at its entry skips the
/// battery (which could crash on a duty left undone). With `mark`, the
/// thread leaves a mark in its rseq area beyond what the kernel reads,
/// which the next thread on its region must not find.
fn watch_raw(
    g: &Glibc,
    run_raw: RunRaw,
    p: &Sight,
    excuses: &Excuses,
    counts: &[(usize, u32)],
    mark: bool,
    scheduling: Option<Scheduling>,
) -> io::Result<Sight> {
    // A thread given its creator's scheduling explicitly is recorded as
    // one that does not inherit it, as pthread_create records it; all else
    // of its scheduling is what the pthread inherited. Its pictures are
    // taken with that bit of the flags word flipped: clear where it was
    // recorded, as in the pthread's, and set where it was not.
    let shift = g.flags % size_of::<usize>() * 8;
    let explicit = (g.flags / size_of::<usize>(), (ATTR_FLAG_NOTINHERITSCHED as usize) << shift);
    let watch = Watch::new_raw(g, counts, scheduling.map(|_| explicit))?;
    let mut legacy = Legacy::default();
    let mut region = (0..0, 0);
    let created = |block: &Block| {
        let mut sight = watch.sight();
        sight.tp = block.region().tp();
        sight.stack = block.region().stack();
        watch.take_picture(&mut sight, ENTRY);
        match differ(g, p, &sight, excuses, ENTRY, ENTRY) {
            Some(why) => Err(refused(format!("{why}, at the raw thread's creation"))),
            None => Ok(()),
        }
    };
    let body = || {
        watch.entry();
        // (Its stack is its region's, from its creation.)
        let agrees = differ(g, p, &watch.sight(), excuses, ENTRY, ENTRY).is_none();
        if agrees {
            watch.battery();
        }
        watch.end();
        if mark && g.rseq_len != 0 {
            // SAFETY: the bytes after the kernel's fields (28) in this
            // thread's own rseq area (at least 32 bytes), which nothing reads.
            unsafe { *((g.rseq_area(current_tp()) + RSEQ_MIN_LEN as usize - 4) as *mut u32) = RSEQ_MARK };
        }
    };
    let exited = &mut |block: &Block| {
        // SAFETY: the block is the caller's until it joins.
        unsafe { watch.exit() };
        legacy = block.legacy();
        region = (block.region().stack(), block.region().guard().len());
    };
    run_raw(scheduling, &created, &body, exited)?;
    let r = watch.into_sight();
    if r.short {
        return Err(io::Error::from_raw_os_error(libc::ENOMEM));
    }
    compare(g, p, &r, &legacy, region, excuses).map_err(refused)?;
    Ok(r)
}

/// The calling thread's scheduling, as `Builder::scheduling` would give
/// it (None for a policy it does not offer, such as SCHED_DEADLINE).
fn creators_scheduling() -> Option<Scheduling> {
    // SAFETY: zeroed is a valid sched_param for sched_getparam to fill;
    // the other two calls have no preconditions. (getpriority's -1 is a
    // nice value here; a failure would leave one the spawn refuses.)
    let (policy, param, nice) = unsafe {
        let mut param: libc::sched_param = std::mem::zeroed();
        libc::sched_getparam(0, &mut param);
        (libc::sched_getscheduler(0), param, libc::getpriority(libc::PRIO_PROCESS, 0))
    };
    match policy {
        libc::SCHED_OTHER | libc::SCHED_BATCH | libc::SCHED_IDLE => Some((policy, nice, 0)),
        libc::SCHED_FIFO | libc::SCHED_RR => Some((policy, 0, param.sched_priority as u32)),
        _ => None,
    }
}

/// What a census thread leaves in its rseq area for the next thread on
/// its region to not find.
const RSEQ_MARK: u32 = 0x5a5a_5a5a;

/// Rule C for picture `at` of the raw thread `r` against picture `p_at` of
/// the pthread: the first word that differs, described.
fn differ(g: &Glibc, p: &Sight, r: &Sight, excuses: &Excuses, p_at: usize, at: usize) -> Option<String> {
    (0..p.pictures[p_at].len()).find_map(|i| {
        let c = excuses.c[i];
        let (pv, rv) = (p.pictures[p_at][i], r.pictures[at][i]);
        if pv == rv && !p.holds(g, pv) && !r.holds(g, rv) {
            return None;
        }
        let (pk, rk) = (Kind::of(pv & !c, g, p), Kind::of(rv & !c, g, r));
        let same = match (pk, rk) {
            _ if c != 0 => pv & !c == rv & !c,
            // A raw thread starts in std's runtime (rawthread publishes
            // its `thread::current()` first), which the pthread enters
            // only in the battery's first step: at entry the raw thread
            // may already hold what that step gives the pthread.
            _ if at == ENTRY && pk != rk => {
                let (before, after) = (p.pictures[BEFORE_BATTERY][i], p.pictures[FIRST_STEP][i]);
                before != after && rk == Kind::of(after, g, p)
            }
            _ => pk == rk,
        };
        let when = || if at == ENTRY { "at entry".to_string() } else { format!("at end ({})", step(p, r, i)) };
        (!same).then(|| {
            format!("C: {}: {}, pthread {pk:?} ({pv:#x}), raw thread {rk:?} ({rv:#x})", describe(g, i), when())
        })
    })
}

/// Rules C (at entry and end), K, X and P, and what `pthread_getattr_np`
/// reports of the raw thread against its `region` (stack, guard length).
fn compare(
    g: &Glibc,
    p: &Sight,
    r: &Sight,
    legacy: &Legacy,
    region: (Range<usize>, usize),
    excuses: &Excuses,
) -> Result<(), String> {
    let mut found = Vec::new();
    found.extend(differ(g, p, r, excuses, ENTRY, ENTRY));
    found.extend(differ(g, p, r, excuses, END, END));
    for i in 0..p.pictures[ENTRY].len() {
        let x = excuses.x[i];
        let changed = |s: &Sight| (s.pictures[END][i] ^ s.pictures[EXIT][i]) & !x != 0;
        if changed(p) && !changed(r) {
            found.push(format!(
                "X: {}: the pthread's exit changes it ({:#x} to {:#x}), the raw thread's does not ({:#x})",
                describe(g, i),
                p.pictures[END][i],
                p.pictures[EXIT][i],
                r.pictures[EXIT][i]
            ));
        }
        let (entry, end, exit) = (r.pictures[ENTRY][i], r.pictures[END][i], r.pictures[EXIT][i]);
        let handed_on = legacy.malloc.0.contains(&end) || legacy.getrandom == end;
        let pthread_keeps = p.pictures[EXIT][i] == p.pictures[END][i];
        if entry != end && exit == end && !handed_on && !pthread_keeps && Kind::of(end, g, r) == Kind::Address {
            found.push(format!(
                "P: {}: the pointer {end:#x}, made {}, survives the raw thread's exit and is not handed on",
                describe(g, i),
                step(p, r, i)
            ));
        }
    }
    for (at, name) in [(0, "entry"), (1, "end")] {
        if p.kernel[at] != r.kernel[at] {
            found.push(format!(
                "K: at {name}, the kernel holds {:?} for the pthread, {:?} for the raw thread",
                p.kernel[at], r.kernel[at]
            ));
        }
    }
    let (stack, guard) = region;
    if r.stack != stack || r.guard != guard {
        found.push(format!(
            "pthread_getattr_np reports the raw thread's stack as {:x?} with a guard of {}, its region has {stack:x?} and {guard}",
            r.stack, r.guard
        ));
    }
    match found.len() {
        0 => Ok(()),
        1..=REPORTED => Err(found.join("; ")),
        n => Err(format!("{}; and {} more", found[..REPORTED].join("; "), n - REPORTED)),
    }
}

/// How many differences a refusal names.
const REPORTED: usize = 4;

/// Where word `i` changed, for reports: after the first battery step that
/// changed it in either thread, or before.
fn step(p: &Sight, r: &Sight, i: usize) -> String {
    match [p.changed_by[i], r.changed_by[i]].into_iter().filter(|&k| k != 0).min() {
        Some(k) => format!("after the battery step \"{}\"", BATTERY[usize::from(k) - 1].0),
        None if p.pictures[BEFORE_BATTERY][i] != p.pictures[ENTRY][i] => {
            "before the battery, in the probe's own experiments".into()
        }
        None => "outside the battery".into(),
    }
}

/// The pthread's counts: the globals up by 1 to 4 from its entry to its
/// end, back after its join, as (address, how much).
fn counts_of(p: &Sight) -> Vec<(usize, u32)> {
    p.watched
        .iter()
        .filter(|w| {
            let [before, entry, end, after] = w.values;
            before == after && entry == end && (1..=4).contains(&entry.wrapping_sub(before))
        })
        .map(|w| (w.addr, w.values[1].wrapping_sub(w.values[0])))
        .collect()
}

/// Rule G: the pthread's `counts` move with the raw thread's life: up at
/// its entry, and back after its join.
fn counts_move(counts: &[(usize, u32)], r: &Sight) -> Result<(), String> {
    for (&(addr, up), watched) in counts.iter().zip(&r.watched) {
        let [before, entry, end, after] = watched.values;
        // Up, not by as much: the pthread may have seen another thread
        // counted meanwhile.
        if !(1..=4).contains(&entry.wrapping_sub(before)) || end != entry || after != before {
            return Err(format!(
                "G: {} is up by {up} while a pthread lives, from its entry to its end, and back after its join; \
                 around the raw thread it reads {before}, {entry}, {end}, {after}",
                symbol(addr)
            ));
        }
    }
    Ok(())
}

/// The symbol at or before `addr`, for reports.
fn symbol(addr: usize) -> String {
    // SAFETY: dladdr only reads the loader's tables.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above; dli_sname, if set, is a NUL-terminated name.
    unsafe {
        if libc::dladdr(addr as *const c_void, &mut info) != 0 && !info.dli_sname.is_null() {
            let name = std::ffi::CStr::from_ptr(info.dli_sname).to_string_lossy();
            return format!("{name} + {:#x} ({addr:#x})", addr - info.dli_saddr as usize);
        }
    }
    format!("the global at {addr:#x}")
}
