//! Ordinary Rust and libc code behaves on rawthread threads as on
//! `std::thread` threads: stdio, the allocator, `thread_local!`, panics,
//! errno, CPU affinity, `thread::current`, parking, the `std::sync`
//! primitives, nested spawning, signals, pthread keys, locale, fork and
//! the resolver.
//!
//! Every test runs the code under test on rawthread threads. None uses
//! sleeps or time bounds: waits are joins, channels, barriers or
//! `yield_now` polling loops.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::ffi::c_void;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex, RwLock};
use std::thread;

mod common;

use common::{EXPECTED, gettid, in_child, quiet_expected_panics, run_child};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The payload of `panic_any` in [`panic_any_custom_payload`].
#[derive(Debug, PartialEq)]
struct CustomPayload {
    code: u32,
    text: String,
}

fn pthread_self() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().expect("an OS error")
}

fn set_errno(value: i32) {
    // SAFETY: __errno_location returns the calling thread's errno slot,
    // valid for the life of the thread.
    unsafe { *libc::__errno_location() = value };
}

/// Spins (yielding the CPU) until `phase` reaches `at_least`. No syscall in
/// the loop may fail, so errno is left alone.
fn wait_for_phase(phase: &AtomicUsize, at_least: usize) {
    while phase.load(Ordering::Acquire) < at_least {
        thread::yield_now();
    }
}

// ---------------------------------------------------------------------------
// stdio
// ---------------------------------------------------------------------------

const LINE_MARK: &str = "rawthread-line";
const PRINT_THREADS: usize = 8;
const STDOUT_LINES: usize = 200;
const STDERR_LINES: usize = 50;

/// One distinctive, fairly long line: a torn or interleaved write cannot
/// reproduce it.
fn line_for(stream: &str, t: usize, n: usize) -> String {
    let fill = char::from(b'a' + t as u8).to_string().repeat(64);
    format!("{LINE_MARK} {stream} t={t:02} n={n:03} {fill} end")
}

/// Every line of `text` that carries the marker must be exactly one whole
/// line from [`line_for`], each `(t, n)` exactly once.
fn check_lines(text: &str, stream: &str, threads: usize, lines: usize) {
    let mut seen = HashSet::new();
    for line in text.lines().filter(|l| l.contains(LINE_MARK)) {
        let fields: Vec<&str> = line.split(' ').collect();
        let parsed = (|| {
            let t: usize = fields.get(2)?.strip_prefix("t=")?.parse().ok()?;
            let n: usize = fields.get(3)?.strip_prefix("n=")?.parse().ok()?;
            Some((t, n))
        })();
        let Some((t, n)) = parsed else { panic!("malformed {stream} line {line:?}") };
        assert!(t < threads && n < lines, "out-of-range {stream} line {line:?}");
        assert_eq!(line, line_for(stream, t, n), "torn or interleaved {stream} line");
        assert!(seen.insert((t, n)), "duplicate {stream} line {line:?}");
    }
    assert_eq!(seen.len(), threads * lines, "{stream} lines");
}

#[test]
fn println_from_many_threads() {
    if in_child("println_from_many_threads") {
        // End libtest's unterminated "test ... " line first.
        println!();
        let barrier = Arc::new(Barrier::new(PRINT_THREADS));
        let handles: Vec<_> = (0..PRINT_THREADS)
            .map(|t| {
                let barrier = barrier.clone();
                rawthread::spawn(move || {
                    barrier.wait();
                    for n in 0..STDOUT_LINES {
                        println!("{}", line_for("out", t, n));
                        if n < STDERR_LINES {
                            eprintln!("{}", line_for("err", t, n));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        return;
    }

    let out = run_child("println_from_many_threads", &[]);
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 stdout");
    let stderr = String::from_utf8(out.stderr).expect("UTF-8 stderr");
    assert!(out.status.success(), "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("1 passed"), "the child did not run the test:\n{stdout}");
    check_lines(&stdout, "out", PRINT_THREADS, STDOUT_LINES);
    assert_eq!(stdout.matches(LINE_MARK).count(), PRINT_THREADS * STDOUT_LINES);
    check_lines(&stderr, "err", PRINT_THREADS, STDERR_LINES);
}

// ---------------------------------------------------------------------------
// The allocator
// ---------------------------------------------------------------------------

/// A heap object whose every byte is determined by its tag, so the thread
/// that frees it can tell whether anyone else wrote into it.
enum Item {
    Bytes(Vec<u8>),
    Words(Box<[u64]>),
    Text(String),
}

struct Parcel {
    tag: u64,
    item: Item,
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

fn byte_of(tag: u64) -> u8 {
    (tag % 251) as u8
}

fn letter_of(tag: u64) -> u8 {
    b'a' + (tag % 26) as u8
}

impl Parcel {
    fn new(tag: u64, rng: &mut u64) -> Parcel {
        let r = xorshift(rng);
        let len = match r % 256 {
            // Above glibc's mmap threshold (128 KiB): mmap'd chunks.
            0 => 128 * 1024 + (r >> 8) as usize % (128 * 1024),
            1..=16 => 4096 + (r >> 8) as usize % 12288,
            _ => 1 + (r >> 8) as usize % 512,
        };
        let item = match (r >> 40) % 3 {
            0 => Item::Bytes(vec![byte_of(tag); len]),
            1 => Item::Words(vec![tag; len / 8 + 1].into_boxed_slice()),
            _ => Item::Text(char::from(letter_of(tag)).to_string().repeat(len)),
        };
        Parcel { tag, item }
    }

    /// The parcel's contribution to the checksum.
    fn weight(&self) -> u64 {
        let len = match &self.item {
            Item::Bytes(v) => v.len(),
            Item::Words(w) => w.len(),
            Item::Text(s) => s.len(),
        };
        self.tag.wrapping_mul(31).wrapping_add(len as u64)
    }

    /// Panics if any byte is not what its tag says.
    fn verify(&self) {
        let intact = match &self.item {
            Item::Bytes(v) => v.iter().all(|&b| b == byte_of(self.tag)),
            Item::Words(w) => w.iter().all(|&x| x == self.tag),
            Item::Text(s) => s.bytes().all(|b| b == letter_of(self.tag)),
        };
        assert!(intact, "parcel {:#x} was overwritten", self.tag);
    }
}

#[test]
fn heavy_allocation_with_cross_thread_frees() {
    const PRODUCERS: usize = 4;
    const CONSUMERS: usize = 3;
    const PARCELS: u64 = 6000;

    let (senders, receivers): (Vec<_>, Vec<_>) = (0..CONSUMERS).map(|_| mpsc::channel::<Parcel>()).unzip();
    let consumers: Vec<_> = receivers
        .into_iter()
        .map(|rx| {
            rawthread::spawn(move || {
                // Hold a window of parcels so that lifetimes vary and frees
                // interleave with other threads' allocations.
                let mut window = VecDeque::new();
                let (mut count, mut sum) = (0u64, 0u64);
                for parcel in rx {
                    parcel.verify();
                    count += 1;
                    sum = sum.wrapping_add(parcel.weight());
                    window.push_back(parcel);
                    if window.len() > 32 {
                        window.pop_front();
                    }
                }
                window.iter().for_each(Parcel::verify);
                (count, sum)
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let senders = senders.clone();
            rawthread::spawn(move || {
                let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (p as u64 + 1);
                let mut sum = 0u64;
                for seq in 0..PARCELS {
                    let parcel = Parcel::new(((p as u64) << 32) | seq, &mut rng);
                    sum = sum.wrapping_add(parcel.weight());
                    senders[(p + seq as usize) % CONSUMERS].send(parcel).unwrap();
                }
                sum
            })
        })
        .collect();
    drop(senders);

    let sent = producers.into_iter().fold(0u64, |acc, h| acc.wrapping_add(h.join().unwrap()));
    let (mut count, mut received) = (0, 0u64);
    for h in consumers {
        let (c, s) = h.join().unwrap();
        count += c;
        received = received.wrapping_add(s);
    }
    assert_eq!(count, PRODUCERS as u64 * PARCELS);
    assert_eq!(received, sent);
}

// ---------------------------------------------------------------------------
// thread_local!
// ---------------------------------------------------------------------------

thread_local! {
    static COUNTER: Cell<u32> = const { Cell::new(7) };
}

#[test]
fn thread_local_starts_fresh_in_each_thread() {
    COUNTER.set(100);
    // A thread that changes its copy...
    let changed = rawthread::spawn(|| {
        let initial = COUNTER.get();
        COUNTER.set(42);
        (initial, COUNTER.get())
    })
    .join()
    .unwrap();
    assert_eq!(changed, (7, 42));
    // ...leaves a later thread's copy at the initial value,
    assert_eq!(rawthread::spawn(|| COUNTER.get()).join().unwrap(), 7);
    // and concurrent threads each keep their own.
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let barrier = barrier.clone();
            rawthread::spawn(move || {
                let initial = COUNTER.get();
                COUNTER.set(1000 + i);
                barrier.wait();
                (initial, COUNTER.get())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), (7, 1000 + i as u32));
    }
    assert_eq!(COUNTER.get(), 100, "the spawner's copy changed");
}

static LAZY_INITS: AtomicUsize = AtomicUsize::new(0);

fn initial_vec() -> Vec<u64> {
    LAZY_INITS.fetch_add(1, Ordering::SeqCst);
    vec![1, 2, 3]
}

thread_local! {
    static LAZY_VEC: RefCell<Vec<u64>> = RefCell::new(initial_vec());
}

#[test]
fn thread_local_with_lazy_initializer() {
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4u64)
        .map(|i| {
            let barrier = barrier.clone();
            rawthread::spawn(move || {
                LAZY_VEC.with_borrow_mut(|v| v.push(10 + i));
                barrier.wait();
                LAZY_VEC.with_borrow_mut(|v| v.push(20 + i));
                LAZY_VEC.with_borrow(Vec::clone)
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(h.join().unwrap(), [1, 2, 3, 10 + i, 20 + i]);
    }
    assert_eq!(LAZY_INITS.load(Ordering::SeqCst), 4, "one initialisation per thread");
}

/// Records, when dropped, the value its thread left in it.
/// (The sink is a function: a `const` initialiser may not hold a reference
/// to a static with interior mutability before Rust 1.89.)
struct Recorder {
    value: Cell<u64>,
    sink: fn() -> &'static Mutex<Vec<u64>>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        (self.sink)().lock().unwrap().push(self.value.get());
    }
}

static CONST_DROPS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static LAZY_DROPS: Mutex<Vec<u64>> = Mutex::new(Vec::new());
static PANIC_DROPS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn const_drops() -> &'static Mutex<Vec<u64>> {
    &CONST_DROPS
}

fn lazy_drops() -> &'static Mutex<Vec<u64>> {
    &LAZY_DROPS
}

fn panic_drops() -> &'static Mutex<Vec<u64>> {
    &PANIC_DROPS
}

thread_local! {
    static CONST_RECORDER: Recorder = const { Recorder { value: Cell::new(0), sink: const_drops } };
    static LAZY_RECORDER: Recorder = Recorder { value: Cell::new(u64::from(COUNTER.get())), sink: lazy_drops };
    static PANIC_RECORDER: Recorder = const { Recorder { value: Cell::new(0), sink: panic_drops } };
}

#[test]
fn thread_local_destructors_have_run_when_join_returns() {
    for i in 1..=3u64 {
        let h = rawthread::spawn(move || {
            CONST_RECORDER.with(|r| r.value.set(i * 11));
            LAZY_RECORDER.with(|r| r.value.set(r.value.get() + i));
        });
        h.join().unwrap();
        assert_eq!(*CONST_DROPS.lock().unwrap(), (1..=i).map(|k| k * 11).collect::<Vec<_>>());
        assert_eq!(*LAZY_DROPS.lock().unwrap(), (1..=i).map(|k| 7 + k).collect::<Vec<_>>());
    }
    // A thread that never touched them registers no destructor.
    rawthread::spawn(|| ()).join().unwrap();
    assert_eq!(CONST_DROPS.lock().unwrap().len(), 3);
}

#[test]
fn thread_local_destructors_run_after_a_panic() {
    quiet_expected_panics();
    let h = rawthread::spawn(|| {
        PANIC_RECORDER.with(|r| r.value.set(99));
        panic!("{EXPECTED}: with a live thread_local");
    });
    assert!(h.join().is_err());
    assert_eq!(*PANIC_DROPS.lock().unwrap(), [99]);
}

// ---------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------

#[test]
fn panic_payloads_str_and_string() {
    quiet_expected_panics();
    let err = rawthread::spawn(|| -> u32 { panic!("expected panic: a static str") }).join().unwrap_err();
    assert_eq!(err.downcast_ref::<&str>(), Some(&"expected panic: a static str"));

    let x = 42;
    let err = rawthread::spawn(move || -> u32 { panic!("{EXPECTED}: formatted {x}") }).join().unwrap_err();
    assert_eq!(*err.downcast::<String>().unwrap(), "expected panic: formatted 42");

    // Panics do not poison the thread machinery: the next thread is fine.
    assert_eq!(rawthread::spawn(|| 5).join().unwrap(), 5);
}

#[test]
fn catch_unwind_inside_a_thread() {
    quiet_expected_panics();
    let h = rawthread::spawn(|| {
        let caught = panic::catch_unwind(|| -> u32 { panic!("expected panic: caught inside") });
        let msg = *caught.unwrap_err().downcast::<&str>().unwrap();
        assert!(!thread::panicking());
        // The thread carries on, and can catch again.
        let again = panic::catch_unwind(|| -> u32 { panic!("{EXPECTED}: caught again {}", 2) });
        let msg2 = *again.unwrap_err().downcast::<String>().unwrap();
        let fine = panic::catch_unwind(|| 40).unwrap();
        (msg, msg2, fine + 2)
    });
    let (msg, msg2, value) = h.join().unwrap();
    assert_eq!(msg, "expected panic: caught inside");
    assert_eq!(msg2, "expected panic: caught again 2");
    assert_eq!(value, 42);
}

#[test]
fn panic_any_custom_payload() {
    quiet_expected_panics();
    let err =
        rawthread::spawn(|| panic::panic_any(CustomPayload { code: 17, text: "custom".into() })).join().unwrap_err();
    assert!(err.downcast_ref::<&str>().is_none() && err.downcast_ref::<String>().is_none());
    assert_eq!(*err.downcast::<CustomPayload>().unwrap(), CustomPayload { code: 17, text: "custom".into() });
}

// ---------------------------------------------------------------------------
// errno
// ---------------------------------------------------------------------------

/// What one thread of [`errno_is_per_thread`] saw: its failing call's
/// return value, errno right after it, errno after the other thread's
/// failing call, errno after writing it directly, and its errno slot.
type ErrnoSeen = (i32, i32, i32, i32, usize);

#[test]
fn errno_is_per_thread() {
    // The threads step through phases on an atomic (no syscall that could
    // set errno): A fails a call, then B fails another, each reads back its
    // own errno; then each writes errno directly. They assert nothing
    // themselves, so a wrong value cannot leave the other one waiting.
    let phase = Arc::new(AtomicUsize::new(0));
    let a = {
        let phase = phase.clone();
        rawthread::spawn(move || -> ErrnoSeen {
            // SAFETY: closing fd -1 is a harmless failing call.
            let ret = unsafe { libc::close(-1) };
            let first = errno();
            phase.store(1, Ordering::Release);
            wait_for_phase(&phase, 2);
            let after_other = errno();
            set_errno(1001);
            phase.store(3, Ordering::Release);
            wait_for_phase(&phase, 4);
            // SAFETY: no preconditions; only the address is used.
            (ret, first, after_other, errno(), unsafe { libc::__errno_location() } as usize)
        })
    };
    let b = {
        let phase = phase.clone();
        rawthread::spawn(move || -> ErrnoSeen {
            wait_for_phase(&phase, 1);
            // SAFETY: a valid NUL-terminated path that does not exist.
            let ret = unsafe { libc::access(c"/nonexistent/rawthread-errno".as_ptr(), libc::F_OK) };
            let first = errno();
            phase.store(2, Ordering::Release);
            wait_for_phase(&phase, 3);
            let after_other = errno();
            set_errno(2002);
            phase.store(4, Ordering::Release);
            // SAFETY: as above.
            (ret, first, after_other, errno(), unsafe { libc::__errno_location() } as usize)
        })
    };
    set_errno(3003);
    wait_for_phase(&phase, 4);
    let spawner = errno();
    // SAFETY: as above.
    let mine = unsafe { libc::__errno_location() } as usize;

    let (a_ret, a_first, a_after_b, a_last, a_loc) = a.join().unwrap();
    let (b_ret, b_first, b_after_a, b_last, b_loc) = b.join().unwrap();
    assert_eq!((a_ret, a_first, a_after_b, a_last), (-1, libc::EBADF, libc::EBADF, 1001), "thread A");
    assert_eq!((b_ret, b_first, b_after_a, b_last), (-1, libc::ENOENT, libc::ENOENT, 2002), "thread B");
    assert_eq!(spawner, 3003, "the spawner's errno changed");
    assert!(a_loc != b_loc && a_loc != mine && b_loc != mine, "errno slots shared");
}

// ---------------------------------------------------------------------------
// CPU affinity, sched_getcpu and rseq
// ---------------------------------------------------------------------------

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: an all-zero cpu_set_t is an empty set; the kernel writes at
    // most size_of::<cpu_set_t>() bytes into it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set), 0);
        set
    };
    // SAFETY: every index is below CPU_SETSIZE, the set's size.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// Pins the calling thread to `cpu` alone.
fn pin_to(cpu: usize) {
    // SAFETY: as in allowed_cpus; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0, "pin to cpu {cpu}");
    }
}

fn sched_getcpu() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::sched_getcpu() }
}

#[test]
fn sched_getcpu_follows_pinning() {
    let cpus = allowed_cpus();
    assert!(!cpus.is_empty());
    // One thread per CPU, each pinned to it.
    for &cpu in &cpus {
        let h = rawthread::spawn(move || {
            pin_to(cpu);
            let seen: Vec<i32> = (0..5)
                .map(|_| {
                    thread::yield_now();
                    sched_getcpu()
                })
                .collect();
            (seen, allowed_cpus())
        });
        let (seen, affinity) = h.join().unwrap();
        assert_eq!(seen, [cpu as i32; 5], "sched_getcpu on a thread pinned to {cpu}");
        assert_eq!(affinity, [cpu]);
    }
    // One thread touring every CPU.
    let tour = cpus.clone();
    let seen = rawthread::spawn(move || {
        tour.iter()
            .map(|&cpu| {
                pin_to(cpu);
                sched_getcpu()
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    assert_eq!(seen, cpus.iter().map(|&c| c as i32).collect::<Vec<_>>());
    assert_eq!(allowed_cpus(), cpus, "pinning a raw thread changed the spawner's affinity");
}

unsafe extern "C" {
    /// glibc >= 2.35 (sys/rseq.h): the rseq area's offset from the thread
    /// pointer, and its registered size (0: glibc does not register rseq).
    static __rseq_offset: isize;
    static __rseq_size: u32;
}

/// The calling thread's rseq `cpu_id`, as the kernel keeps it up to date:
/// >= 0 registered; -1 not yet; -2 registration failed.
fn rseq_cpu_id() -> i32 {
    // SAFETY: glibc's public constants; on x86_64 pthread_self() is the
    // thread pointer, and the rseq area (with cpu_id at offset 4) lives at
    // tp + __rseq_offset in every thread glibc or rawthread set up.
    unsafe {
        let area = (libc::pthread_self() as isize + __rseq_offset) as *const i32;
        std::ptr::read_volatile(area.add(1))
    }
}

#[test]
fn rseq_registered_when_glibc_registers_it() {
    // SAFETY: a glibc constant, set before main.
    if unsafe { __rseq_size } == 0 || rseq_cpu_id() < 0 {
        eprintln!("glibc does not use rseq here (glibc.pthread.rseq=0 or old kernel): nothing to compare");
        return;
    }
    for cpu in allowed_cpus() {
        let (id, getcpu) = rawthread::spawn(move || {
            pin_to(cpu);
            (rseq_cpu_id(), sched_getcpu())
        })
        .join()
        .unwrap();
        assert_eq!(id, cpu as i32, "the raw thread's rseq area is not registered (cpu_id {id})");
        assert_eq!(getcpu, cpu as i32);
    }
}

// ---------------------------------------------------------------------------
// std::thread::current
// ---------------------------------------------------------------------------

#[test]
fn thread_current_is_distinct_and_stable() {
    let spawner = thread::current().id();
    let barrier = Arc::new(Barrier::new(6));
    let concurrent: Vec<_> = (0..6)
        .map(|_| {
            let barrier = barrier.clone();
            rawthread::spawn(move || {
                let first = thread::current();
                barrier.wait();
                let again = thread::current();
                assert_eq!(first.id(), again.id(), "current() changed within a thread");
                assert!(first.name().is_none(), "an unnamed thread has a name");
                (first.id(), pthread_self())
            })
        })
        .collect();
    let mut ids: Vec<_> = concurrent.into_iter().map(|h| h.join().unwrap()).collect();
    // Sequential threads get fresh ids too (ThreadIds are never reused).
    ids.extend((0..4).map(|_| rawthread::spawn(|| (thread::current().id(), pthread_self())).join().unwrap()));

    let distinct: HashSet<_> = ids.iter().map(|(id, _)| *id).collect();
    assert_eq!(distinct.len(), ids.len(), "ThreadIds repeat: {ids:?}");
    assert!(!distinct.contains(&spawner), "a raw thread has the spawner's ThreadId");
    let me = pthread_self();
    assert!(ids[..6].iter().all(|&(_, p)| p != me));
    assert_eq!(ids[..6].iter().map(|&(_, p)| p).collect::<HashSet<_>>().len(), 6, "pthread_self repeats");
    assert_eq!(thread::current().id(), spawner);
}

// ---------------------------------------------------------------------------
// park / unpark
// ---------------------------------------------------------------------------

#[test]
fn spawner_unparks_a_raw_thread() {
    let flag = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let h = {
        let flag = flag.clone();
        rawthread::spawn(move || {
            tx.send(thread::current()).unwrap();
            let mut parks = 0u32;
            while !flag.load(Ordering::Acquire) {
                thread::park();
                parks += 1;
            }
            parks
        })
    };
    let handle = rx.recv().unwrap();
    flag.store(true, Ordering::Release);
    handle.unpark();
    h.join().unwrap();
}

#[test]
fn raw_thread_unparks_the_spawner() {
    let flag = Arc::new(AtomicBool::new(false));
    let me = thread::current();
    let h = {
        let flag = flag.clone();
        rawthread::spawn(move || {
            flag.store(true, Ordering::Release);
            me.unpark();
        })
    };
    while !flag.load(Ordering::Acquire) {
        thread::park();
    }
    h.join().unwrap();
}

#[test]
fn raw_thread_unparks_another_raw_thread() {
    let flag = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let sleeper = {
        let flag = flag.clone();
        rawthread::spawn(move || {
            tx.send(thread::current()).unwrap();
            while !flag.load(Ordering::Acquire) {
                thread::park();
            }
            "woken"
        })
    };
    let waker = rawthread::spawn(move || {
        let sleeper = rx.recv().unwrap();
        flag.store(true, Ordering::Release);
        sleeper.unpark();
    });
    waker.join().unwrap();
    assert_eq!(sleeper.join().unwrap(), "woken");
}

// ---------------------------------------------------------------------------
// Mutex, Condvar, Barrier, RwLock, mpsc
// ---------------------------------------------------------------------------

#[test]
fn mutex_counter() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 2000;
    let counter = Arc::new(Mutex::new(0usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let counter = counter.clone();
            rawthread::spawn(move || {
                for _ in 0..ROUNDS {
                    // A non-atomic read-modify-write: only the lock keeps it right.
                    let mut guard = counter.lock().unwrap();
                    let v = *guard;
                    thread::yield_now();
                    *guard = v + 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(*counter.lock().unwrap(), THREADS * ROUNDS);
}

#[test]
fn condvar_producer_consumer() {
    const ITEMS: u64 = 2000;
    const CAPACITY: usize = 4;
    struct Queue {
        items: Mutex<(VecDeque<u64>, bool)>,
        not_empty: Condvar,
        not_full: Condvar,
    }
    let q = Arc::new(Queue {
        items: Mutex::new((VecDeque::new(), false)),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
    });
    let producer = {
        let q = q.clone();
        rawthread::spawn(move || {
            for i in 1..=ITEMS {
                let mut items = q.not_full.wait_while(q.items.lock().unwrap(), |(d, _)| d.len() == CAPACITY).unwrap();
                items.0.push_back(i);
                q.not_empty.notify_one();
            }
            q.items.lock().unwrap().1 = true;
            q.not_empty.notify_all();
        })
    };
    let consumer = {
        let q = q.clone();
        rawthread::spawn(move || {
            let mut got = Vec::new();
            loop {
                let mut items =
                    q.not_empty.wait_while(q.items.lock().unwrap(), |(d, done)| d.is_empty() && !*done).unwrap();
                match items.0.pop_front() {
                    Some(v) => got.push(v),
                    None => break,
                }
                q.not_full.notify_one();
            }
            got
        })
    };
    producer.join().unwrap();
    let got = consumer.join().unwrap();
    assert_eq!(got, (1..=ITEMS).collect::<Vec<_>>());
}

#[test]
fn barrier_rounds() {
    const THREADS: usize = 6;
    const ROUNDS: usize = 20;
    let barrier = Arc::new(Barrier::new(THREADS));
    let slots: Arc<Vec<AtomicUsize>> = Arc::new((0..THREADS).map(|_| AtomicUsize::new(0)).collect());
    let leaders = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|i| {
            let (barrier, slots, leaders) = (barrier.clone(), slots.clone(), leaders.clone());
            rawthread::spawn(move || {
                // Rounds in which someone passed the barrier before everyone
                // had arrived. Counted, not asserted: a panic here would
                // leave the others waiting at the barrier.
                let mut early = 0;
                for round in 1..=ROUNDS {
                    slots[i].store(round, Ordering::Relaxed);
                    if barrier.wait().is_leader() {
                        leaders.fetch_add(1, Ordering::Relaxed);
                    }
                    if !slots.iter().all(|s| s.load(Ordering::Relaxed) >= round) {
                        early += 1;
                    }
                    barrier.wait();
                }
                early
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 0, "a thread passed the barrier early");
    }
    assert_eq!(leaders.load(Ordering::Relaxed), ROUNDS, "one leader per round");
}

#[test]
fn rwlock_readers_and_writers() {
    let lock = Arc::new(RwLock::new(vec![0u64; 16]));
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let lock = lock.clone();
            rawthread::spawn(move || {
                for _ in 0..500 {
                    let mut v = lock.write().unwrap();
                    for x in v.iter_mut() {
                        *x += 1;
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let lock = lock.clone();
            rawthread::spawn(move || {
                for _ in 0..500 {
                    let v = lock.read().unwrap();
                    // A writer's update is never seen half done.
                    assert!(v.iter().all(|&x| x == v[0]));
                }
            })
        })
        .collect();
    for h in writers.into_iter().chain(readers) {
        h.join().unwrap();
    }
    assert_eq!(*lock.read().unwrap(), vec![1000; 16]);
}

#[test]
fn mpsc_multiple_producers() {
    const PRODUCERS: usize = 6;
    const MESSAGES: usize = 500;
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            rawthread::spawn(move || {
                for n in 0..MESSAGES {
                    tx.send((p, n)).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    // The receiver is a raw thread too; it ends when every sender is gone.
    let receiver = rawthread::spawn(move || rx.into_iter().collect::<Vec<_>>());
    for h in handles {
        h.join().unwrap();
    }
    let got = receiver.join().unwrap();
    assert_eq!(got.len(), PRODUCERS * MESSAGES);
    for p in 0..PRODUCERS {
        let from_p: Vec<usize> = got.iter().filter(|m| m.0 == p).map(|m| m.1).collect();
        assert_eq!(from_p, (0..MESSAGES).collect::<Vec<_>>(), "producer {p}'s messages out of order");
    }
}

#[test]
fn sync_channel_rendezvous() {
    let (tx, rx) = mpsc::sync_channel::<u32>(0);
    let (back_tx, back_rx) = mpsc::sync_channel::<u32>(0);
    let echo = rawthread::spawn(move || {
        for v in rx {
            back_tx.send(v * 2).unwrap();
        }
    });
    let driver = rawthread::spawn(move || {
        (1..=200)
            .map(|v| {
                tx.send(v).unwrap();
                back_rx.recv().unwrap()
            })
            .sum::<u32>()
    });
    assert_eq!(driver.join().unwrap(), 2 * (1..=200).sum::<u32>());
    echo.join().unwrap();
}

// ---------------------------------------------------------------------------
// Threads spawning threads
// ---------------------------------------------------------------------------

/// Spawns `fanout` children down to `depth`, alternating the default spawn
/// and a small-stack Builder; returns every node's tid, checking each
/// child's handle tid against what the child reports.
fn tree(depth: u32, fanout: u32) -> Vec<libc::pid_t> {
    let mut tids = vec![gettid()];
    if depth == 0 {
        return tids;
    }
    let children: Vec<_> = (0..fanout)
        .map(|i| {
            if i % 2 == 0 {
                rawthread::spawn(move || tree(depth - 1, fanout))
            } else {
                rawthread::Builder::new().stack_size(256 << 10).spawn(move || tree(depth - 1, fanout)).unwrap()
            }
        })
        .collect();
    for child in children {
        let tid = child.tid();
        let sub = child.join().unwrap();
        assert_eq!(sub[0], tid, "a child's handle tid differs from its gettid()");
        tids.extend(sub);
    }
    tids
}

#[test]
fn threads_spawning_threads() {
    let tids = rawthread::spawn(|| tree(4, 3)).join().unwrap();
    // 1 + 3 + 9 + 27 + 81 nodes, all distinct threads.
    assert_eq!(tids.len(), 121);
    assert_eq!(tids.iter().collect::<HashSet<_>>().len(), 121);
    assert!(!tids.contains(&gettid()));
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

static SIGNALLED_TID: AtomicI32 = AtomicI32::new(0);

thread_local! {
    static GOT_SIGNAL: AtomicBool = const { AtomicBool::new(false) };
}

extern "C" fn on_sigusr1(_: libc::c_int) {
    // Async-signal-safe: gettid, and atomics in a const thread_local.
    SIGNALLED_TID.store(gettid(), Ordering::SeqCst);
    GOT_SIGNAL.with(|g| g.store(true, Ordering::SeqCst));
}

#[test]
fn signal_handler_runs_on_the_raw_thread() {
    // SAFETY: a zeroed sigaction is valid; the handler is async-signal-safe
    // and SIGUSR1 is used by no other test in this binary.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
    let tgkill = |tid| {
        // SAFETY: a thread-directed signal to a live thread of ours.
        assert_eq!(unsafe { libc::tgkill(libc::getpid(), tid, libc::SIGUSR1) }, 0);
    };

    // SIGUSR1 must not be blocked in the threads (else they would wait
    // for it forever).
    let usr1_blocked = || blocked_signals(&current_mask()).contains(&libc::SIGUSR1);
    assert!(!usr1_blocked(), "SIGUSR1 is blocked in the spawner");

    // A running thread, waiting on its own thread_local flag.
    let (tx, rx) = mpsc::channel();
    let h = rawthread::spawn(move || {
        let blocked = usr1_blocked();
        tx.send((gettid(), blocked)).unwrap();
        while !blocked && !GOT_SIGNAL.with(|g| g.load(Ordering::SeqCst)) {
            thread::yield_now();
        }
        gettid()
    });
    let (tid, blocked) = rx.recv().unwrap();
    assert!(!blocked, "SIGUSR1 is blocked in the raw thread");
    tgkill(tid);
    assert_eq!(h.join().unwrap(), tid);
    assert_eq!(SIGNALLED_TID.load(Ordering::SeqCst), tid);

    // A thread blocked in a futex wait: the handler runs, the wait resumes.
    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<u32>();
    let h = rawthread::spawn(move || {
        tid_tx.send((gettid(), usr1_blocked())).unwrap();
        go_rx.recv().unwrap() + 1
    });
    let (tid, blocked) = tid_rx.recv().unwrap();
    assert!(!blocked, "SIGUSR1 is blocked in the raw thread");
    tgkill(tid);
    while SIGNALLED_TID.load(Ordering::SeqCst) != tid {
        thread::yield_now();
    }
    go_tx.send(41).unwrap();
    assert_eq!(h.join().unwrap(), 42);
}

fn blocked_signals(mask: &libc::sigset_t) -> Vec<i32> {
    // glibc's own SIGCANCEL (32) and SIGSETXID (33) are left out.
    // SAFETY: `mask` is a valid sigset_t.
    (1..=64).filter(|&s| s != 32 && s != 33 && unsafe { libc::sigismember(mask, s) } == 1).collect()
}

fn current_mask() -> libc::sigset_t {
    // SAFETY: a zeroed sigset_t is valid; SIG_BLOCK with no set only reads.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask), 0);
        mask
    }
}

#[test]
fn signal_mask_is_inherited_from_the_spawner() {
    // SAFETY: zeroed sigset_t values are valid; the spawner's mask is
    // restored before anything else runs on this thread.
    let (at_spawn, h) = unsafe {
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGUSR2);
        libc::sigaddset(&mut block, libc::SIGWINCH);
        let mut old: libc::sigset_t = std::mem::zeroed();
        assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old), 0);
        let at_spawn = current_mask();
        let h = rawthread::spawn(|| blocked_signals(&current_mask()));
        assert_eq!(libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()), 0);
        (at_spawn, h)
    };
    let in_thread = h.join().unwrap();
    assert!(in_thread.contains(&libc::SIGUSR2) && in_thread.contains(&libc::SIGWINCH));
    assert_eq!(in_thread, blocked_signals(&at_spawn));
}

// ---------------------------------------------------------------------------
// The thread control block header
// ---------------------------------------------------------------------------

/// The x86_64 `tcbhead_t` fields every glibc thread carries: whether the
/// process is multi-threaded (0x18: glibc's atomics and malloc read it),
/// the stack-protector canary (0x28: compilers read `%fs:0x28`) and the
/// pointer-mangling key (0x30: setjmp, atexit).
fn tcb_header() -> (i32, usize, usize) {
    let tp = pthread_self() as usize;
    // SAFETY: on x86_64 glibc pthread_self() is the thread pointer, where
    // the calling thread's tcbhead_t (over 0x38 bytes) starts.
    unsafe { (*((tp + 0x18) as *const i32), *((tp + 0x28) as *const usize), *((tp + 0x30) as *const usize)) }
}

#[test]
fn tcb_header_matches_a_glibc_thread() {
    let spawner = tcb_header();
    assert_ne!(spawner.0, 0, "the spawner, a pthread, is not marked multi-threaded");
    let raw = rawthread::spawn(tcb_header).join().unwrap();
    assert_eq!(raw, spawner, "(multiple_threads, stack guard, pointer guard)");
}

extern "C" fn at_exit_marker() {
    let msg = b"atexit handler from a raw thread ran\n";
    // SAFETY: writing our own buffer to stdout.
    unsafe { libc::write(1, msg.as_ptr().cast(), msg.len()) };
}

#[test]
fn atexit_registered_on_a_raw_thread_runs_at_exit() {
    // atexit stores the function pointer mangled with the registering
    // thread's pointer guard; exit() demangles it in the main thread.
    if in_child("atexit_registered_on_a_raw_thread_runs_at_exit") {
        // SAFETY: registering a plain extern "C" fn that stays valid.
        let ret = rawthread::spawn(|| unsafe { libc::atexit(at_exit_marker) }).join().unwrap();
        assert_eq!(ret, 0);
        return;
    }
    let out = run_child("atexit_registered_on_a_raw_thread_runs_at_exit", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "child failed: {}\n{stdout}", out.status);
    assert!(stdout.contains("1 passed"), "the child did not run the test:\n{stdout}");
    assert!(stdout.contains("atexit handler from a raw thread ran"), "{stdout}");
}

// ---------------------------------------------------------------------------
// pthread keys (pthread_setspecific destructors)
// ---------------------------------------------------------------------------

static KEY_A: AtomicU32 = AtomicU32::new(0);
static KEY_LOG: Mutex<Vec<usize>> = Mutex::new(Vec::new());

extern "C" fn key_destructor(value: *mut c_void) {
    KEY_LOG.lock().unwrap().push(value as usize);
    if value as usize == 0xA1 {
        // A destructor that sets a new value gets another round.
        // SAFETY: KEY_A is a live key; setspecific in a destructor is allowed.
        unsafe { libc::pthread_setspecific(KEY_A.load(Ordering::SeqCst), 0xA2 as *const c_void) };
    }
}

#[test]
fn pthread_key_destructors_run_at_exit() {
    let create = || {
        let mut key = 0;
        // SAFETY: a valid out-pointer and destructor.
        assert_eq!(unsafe { libc::pthread_key_create(&mut key, Some(key_destructor)) }, 0);
        key
    };
    let key_a = create();
    KEY_A.store(key_a, Ordering::SeqCst);
    // A key past the first 32 lives in a separately allocated block.
    let mut fillers = Vec::new();
    let key_b = loop {
        let k = create();
        if k >= 32 {
            break k;
        }
        fillers.push(k);
    };

    let h = rawthread::spawn(move || {
        // SAFETY: live keys; the values are plain integers, never dereferenced.
        unsafe {
            assert!(libc::pthread_getspecific(key_a).is_null(), "a fresh thread has a value");
            assert!(libc::pthread_getspecific(key_b).is_null(), "a fresh thread has a value");
            assert_eq!(libc::pthread_setspecific(key_a, 0xA1 as *const c_void), 0);
            assert_eq!(libc::pthread_setspecific(key_b, 0xB1 as *const c_void), 0);
            (libc::pthread_getspecific(key_a) as usize, libc::pthread_getspecific(key_b) as usize)
        }
    });
    assert_eq!(h.join().unwrap(), (0xA1, 0xB1));
    let log = KEY_LOG.lock().unwrap().clone();
    // SAFETY: a live key.
    assert!(unsafe { libc::pthread_getspecific(key_a) }.is_null(), "the spawner's value changed");
    for key in fillers.into_iter().chain([key_a, key_b]) {
        // SAFETY: keys created above, no longer used.
        unsafe { libc::pthread_key_delete(key) };
    }
    assert_eq!(log.len(), 3, "destructor calls: {log:x?}");
    assert_eq!(log.iter().collect::<HashSet<_>>(), [0xA1, 0xB1, 0xA2].iter().collect());
    let pos = |v| log.iter().position(|&x| x == v).unwrap();
    assert!(pos(0xA2) > pos(0xA1), "second-round value destroyed first: {log:x?}");
}

// ---------------------------------------------------------------------------
// libc state: locale, strerror, files, fork, processes, the resolver
// ---------------------------------------------------------------------------

#[test]
fn locale_dependent_libc_calls() {
    let h = rawthread::spawn(|| {
        // SAFETY: ctype functions take any value of unsigned char; strtod
        // reads a NUL-terminated string and accepts a null end pointer.
        let (alpha, not_alpha, digit, upper, parsed) = unsafe {
            (
                libc::isalpha(i32::from(b'q')),
                libc::isalpha(i32::from(b'7')),
                libc::isdigit(i32::from(b'7')),
                libc::toupper(i32::from(b'q')),
                libc::strtod(c"2.5".as_ptr(), std::ptr::null_mut()),
            )
        };
        let message = io::Error::from_raw_os_error(libc::ENOENT).to_string();
        (alpha != 0, not_alpha == 0, digit != 0, upper, parsed, message)
    });
    let (alpha, not_alpha, digit, upper, parsed, message) = h.join().unwrap();
    assert!(alpha && not_alpha && digit);
    assert_eq!(upper, i32::from(b'Q'));
    assert_eq!(parsed, 2.5);
    assert!(message.contains("No such file or directory"), "{message}");
}

unsafe extern "C" {
    fn __ctype_b_loc() -> *mut *const u16;
}

/// The calling thread's ctype class table, as `isalpha()` reads it.
fn ctype_table() -> usize {
    // SAFETY: glibc's accessor of the calling thread's slot.
    unsafe { *__ctype_b_loc() as usize }
}

/// `(locale_t) -1`.
const LC_GLOBAL_LOCALE: libc::locale_t = -1isize as libc::locale_t;

/// A raw thread starts in the global locale, with the global locale's
/// tables as they are when it is spawned, whatever locale its creator uses
/// for itself (glibc's own threads: the same); the creator keeps its own.
#[test]
fn raw_threads_start_in_the_global_locale() {
    if in_child("raw_threads_start_in_the_global_locale") {
        let global = || {
            let before = ctype_table();
            // SAFETY: uselocale(0) only reads; the rest as in the test.
            let (child, creator_locale) = (
                rawthread::spawn(|| (ctype_table(), unsafe { libc::uselocale(std::ptr::null_mut()) } as usize))
                    .join()
                    .unwrap(),
                unsafe { libc::uselocale(std::ptr::null_mut()) },
            );
            assert_eq!(child.1, LC_GLOBAL_LOCALE as usize, "the raw thread's locale");
            assert_eq!(ctype_table(), before, "the creator's own tables");
            assert_ne!(creator_locale, std::ptr::null_mut());
            child.0
        };
        let pthread_table = || std::thread::spawn(ctype_table).join().unwrap();
        // The C locale; then C.UTF-8 made global (its tables differ).
        assert_eq!(global(), pthread_table());
        let c_tables = pthread_table();
        // SAFETY: a NUL-terminated locale name; no other thread runs.
        assert!(!unsafe { libc::setlocale(libc::LC_CTYPE, c"C.UTF-8".as_ptr()) }.is_null());
        assert_ne!(pthread_table(), c_tables, "C.UTF-8 has tables of its own");
        assert_eq!(global(), pthread_table(), "after setlocale");
        // The creator in a locale of its own (uselocale): the child is
        // still in the global one, and the creator stays in its own.
        // SAFETY: a valid category mask and name; the locale outlives its use.
        let own = unsafe { libc::newlocale(libc::LC_CTYPE_MASK, c"C".as_ptr(), std::ptr::null_mut()) };
        assert!(!own.is_null());
        // SAFETY: a valid locale object.
        unsafe { libc::uselocale(own) };
        let creators = ctype_table();
        assert_eq!(global(), pthread_table(), "with the creator in its own locale");
        assert_eq!(ctype_table(), creators);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::uselocale(std::ptr::null_mut()) }, own);
        return;
    }
    common::assert_child_passed(&run_child("raw_threads_start_in_the_global_locale", &[]));
}

/// A raw thread may run a signal handler from its first instruction (no
/// signal is blocked around its start): signals sent to the whole process
/// as fast as one thread can, while 3,000 raw threads are made and joined,
/// find every thread's block complete. The handler uses the locale and
/// a thread-local, as a careless handler would.
#[test]
fn signals_from_a_thread_s_first_instruction() {
    if in_child("signals_from_a_thread_s_first_instruction") {
        static HANDLED: AtomicUsize = AtomicUsize::new(0);
        static STOP: AtomicBool = AtomicBool::new(false);
        thread_local!(static SEEN: Cell<usize> = const { Cell::new(0) });
        extern "C" fn handler(_: i32) {
            // SAFETY: any unsigned char value is valid for isalpha.
            assert!(unsafe { libc::isalpha(i32::from(b'x')) } != 0);
            SEEN.with(|seen| seen.set(seen.get() + 1));
            HANDLED.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: a handler that touches only what is set before a thread
        // exists (its TLS, the locale's tables), installed before any thread.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
        }
        // The sender says when it has sent its first signal, and the
        // spawns start only then: signals are on their way from the first
        // spawn on, however late the scheduler first runs the sender.
        let (sending, first_sent) = mpsc::channel();
        let sender = std::thread::spawn(move || {
            // The sender keeps SIGUSR1 blocked: the others take them.
            // SAFETY: a valid set.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            let mut sending = Some(sending);
            while !STOP.load(Ordering::Relaxed) {
                // SAFETY: to this process.
                unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
                if let Some(sending) = sending.take() {
                    sending.send(()).unwrap();
                }
            }
        });
        first_sent.recv().expect("the sender died before its first signal");
        for i in 0..3000 {
            assert_eq!(rawthread::spawn(move || i).join().unwrap(), i);
        }
        STOP.store(true, Ordering::Relaxed);
        sender.join().unwrap();
        // A signal sent is handled once a thread it may go to runs (the
        // kernel hands it on from a thread that exits first). Waited for,
        // not asserted at once: were none ever handled, run_child's bound
        // would end the wait as a failure.
        while HANDLED.load(Ordering::Relaxed) == 0 {
            thread::yield_now();
        }
        println!("{} signals handled", HANDLED.load(Ordering::Relaxed));
        return;
    }
    common::assert_child_passed(&run_child("signals_from_a_thread_s_first_instruction", &[]));
}

#[test]
fn file_io_in_a_raw_thread() {
    let path = std::env::temp_dir().join(format!("rawthread-test-{}-{}", std::process::id(), gettid()));
    let p = path.clone();
    let read_back = rawthread::spawn(move || {
        std::fs::write(&p, b"written on a raw thread").unwrap();
        let back = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        back
    })
    .join()
    .unwrap();
    assert_eq!(read_back, b"written on a raw thread");
    assert!(!path.exists());
}

fn resolve(host: &'static str) -> Result<Vec<SocketAddr>, String> {
    let mut addrs: Vec<_> = (host, 80).to_socket_addrs().map_err(|e| e.to_string())?.collect();
    addrs.sort();
    Ok(addrs)
}

unsafe extern "C" {
    /// glibc: the calling thread's resolver state (`_res` is `(*__res_state())`).
    fn __res_state() -> *mut c_void;
}

fn res_state() -> usize {
    // SAFETY: no preconditions; only the address is used.
    unsafe { __res_state() as usize }
}

#[test]
fn resolver_state_is_per_thread() {
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let barrier = barrier.clone();
            rawthread::spawn(move || {
                let mine = res_state();
                barrier.wait();
                mine
            })
        })
        .collect();
    let mut states: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    states.push(res_state());
    assert_eq!(states.iter().collect::<HashSet<_>>().len(), 4, "resolver states shared: {states:x?}");
}

#[test]
fn resolver_answers_as_on_the_spawner() {
    // getaddrinfo uses the per-thread resolver state; the answer must not
    // depend on which thread asks (localhost comes from /etc/hosts).
    for host in ["localhost", "127.0.0.1"] {
        let here = resolve(host);
        let there = rawthread::spawn(move || resolve(host)).join().unwrap();
        assert_eq!(there, here, "{host}");
    }
}

/// rayon on raw threads: a pool whose workers are rawthread threads (its
/// `spawn_handler`), running a parallel sum and nested joins; and rayon's
/// global pool used from inside a raw thread.
#[test]
fn rayon_runs_on_raw_threads() {
    use rayon::prelude::*;
    let worker_tids = Arc::new(Mutex::new(HashSet::new()));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .spawn_handler(|thread| {
            rawthread::Builder::new().name("rayon-raw".into()).spawn(|| thread.run())?;
            Ok(())
        })
        .build()
        .unwrap();
    let seen = worker_tids.clone();
    let sum: u64 = pool.install(|| {
        (0..100_000u64)
            .into_par_iter()
            .map(|x| {
                seen.lock().unwrap().insert(gettid());
                x * 2
            })
            .sum()
    });
    assert_eq!(sum, 100_000 * 99_999);
    fn fib(n: u64) -> u64 {
        if n < 2 {
            return n;
        }
        let (a, b) = rayon::join(|| fib(n - 1), || fib(n - 2));
        a + b
    }
    assert_eq!(pool.install(|| fib(20)), 6765);
    // Every thread that ran a piece is one of the pool's raw workers
    // (alive until the pool is dropped), named as the handler asked.
    for tid in worker_tids.lock().unwrap().iter() {
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap();
        assert_eq!(comm, "rayon-raw\n", "thread {tid}");
    }
    drop(pool);

    let from_raw = rawthread::spawn(|| (1..=1000u64).into_par_iter().sum::<u64>()).join().unwrap();
    assert_eq!(from_raw, 500_500);
}
