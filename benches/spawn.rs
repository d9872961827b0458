//! The spawn benchmark: every way Linux can start a unit of execution,
//! measured side by side in one process.
//!
//! ```text
//! cargo bench                            # this and benches/criterion.rs: about a minute
//! cargo bench --bench spawn -- --quick   # a few seconds: CI smoke
//! cargo bench --bench spawn -- --pin 1   # the whole process (and so every child) on CPU 1
//! ```
//!
//! Three parts:
//!
//! 1. **Latency** of ten variants — rawthread, the bare kernel floor,
//!    `std::thread`, `pthread_create`, and the process makers `fork`,
//!    vfork, `clone(SIGCHLD)`, `clone3` + `CLONE_PIDFD` and `posix_spawn`.
//!    Each sample gives three figures, all from `rawthread::now_ns()`
//!    (CLOCK_MONOTONIC, one clock for parent and child):
//!
//!    ```text
//!    parent:  t0 = now  spawn(...)  t1 = now   join/wait(...)  t2 = now
//!    child:                 tc = now (first thing it runs), stored where the parent can read it
//!
//!    round trip = t2 - t0     child start = tc - t0     call return = t1 - t0
//!    ```
//!
//!    The variants are measured in blocks of samples, round-robin, over many
//!    rounds, with the order rotated each round: on a shared, noisy VM a
//!    burst of noise then lands on every variant alike instead of on
//!    whichever happened to run at that moment, and the medians stay
//!    comparable.
//! 2. **Growth with the parent's memory**: `fork` copies the parent's page
//!    tables, so it grows with the parent's resident memory; a thread shares
//!    them and stays flat. Measured at several sizes of touched memory, with
//!    and without transparent huge pages.
//! 3. **Memory per idle thread**, user (RSS) and kernel (kernel stack, page
//!    tables, slab), for rawthread and `std::thread`.
//!
//! Results go to the terminal, to `target/spawn-bench/results.json` and to
//! `target/spawn-bench/report.svg`. Nothing here asserts a timing: the
//! numbers are reported, never judged by a test.

use std::error::Error;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rawthread::{KernelFloor, PoolLimits, now_ns};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------
// Options and plans
// ---------------------------------------------------------------------------

const USAGE: &str = "\
usage: cargo bench --bench spawn -- [--quick] [--pin CPU]
  --quick    a few seconds: fewer samples, memory sizes 0 and 64 MiB, 100 idle threads
  --pin CPU  pin the whole process to CPU (sched_setaffinity; threads and children inherit it)
Other arguments (such as the --bench that cargo passes) are ignored.";

struct Options {
    quick: bool,
    pin: Option<usize>,
    /// `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    /// then only a smoke run is wanted.
    bench_flag: bool,
}

fn parse_args(args: &[String]) -> Options {
    let mut options = Options { quick: false, pin: None, bench_flag: false };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let pin = match arg.as_str() {
            "--quick" => {
                options.quick = true;
                continue;
            }
            "--bench" => {
                options.bench_flag = true;
                continue;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--pin" => args.next().map(String::as_str),
            other => match other.strip_prefix("--pin=") {
                Some(cpu) => Some(cpu),
                None => {
                    eprintln!("spawn bench: ignoring argument {other:?}");
                    continue;
                }
            },
        };
        match pin.and_then(|cpu| cpu.parse().ok()) {
            Some(cpu) => options.pin = Some(cpu),
            None => {
                eprintln!("spawn bench: --pin needs a CPU number\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    options
}

/// How much of everything to measure.
struct Plan {
    /// Untimed runs of each variant first: the first spawns of each kind
    /// fill caches and pools (rawthread's region pool, glibc's stack cache)
    /// and fault in code.
    warmup: usize,
    /// Latency: `rounds` times, every variant runs `block` samples in a row.
    rounds: usize,
    block: usize,
    /// Growth: the parent's memory sizes; sweeps over them all; and in each
    /// sweep, at each size, rounds of a block of fork and a block of thread
    /// samples.
    growth_mib: &'static [usize],
    growth_passes: usize,
    growth_rounds: usize,
    growth_block: usize,
    /// Idle memory: threads held at once, and repetitions per variant.
    idle_threads: usize,
    idle_reps: usize,
}

const FULL: Plan = Plan {
    warmup: 50,
    rounds: 500,
    block: 20,
    growth_mib: &[0, 64, 256, 1024],
    growth_passes: 5,
    growth_rounds: 2,
    growth_block: 4,
    idle_threads: 1000,
    idle_reps: 5,
};

const QUICK: Plan = Plan {
    warmup: 5,
    rounds: 20,
    block: 10,
    growth_mib: &[0, 64],
    growth_passes: 2,
    growth_rounds: 2,
    growth_block: 3,
    idle_threads: 100,
    idle_reps: 1,
};

/// The issue-3 goal: a rawthread spawn+join at most this fraction of a
/// `std::thread` one (medians).
const GOAL_RATIO: f64 = 0.65;

const PAGE: usize = 4096;
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Samples and statistics
// ---------------------------------------------------------------------------

/// One spawn, in nanoseconds from the parent's clock read just before the
/// spawn call.
#[derive(Clone, Copy)]
struct Sample {
    /// Until the join/wait returned.
    round_trip: u64,
    /// Until the child's first stamp; `None` where it has none (exec).
    child_start: Option<u64>,
    /// Until the spawn call returned to the parent.
    call_return: u64,
}

impl Sample {
    /// From the parent's three clock reads and the child's stamp.
    fn new(t0: u64, returned: u64, joined: u64, child: Option<u64>) -> Sample {
        Sample {
            round_trip: joined - t0,
            // Same clock on both sides; saturating only in case a child
            // stamped on a CPU whose clock read lags by a few ns.
            child_start: child.map(|tc| {
                assert!(tc != 0, "the child did not stamp the clock");
                tc.saturating_sub(t0)
            }),
            call_return: returned - t0,
        }
    }
}

/// The three figures of a sample.
#[derive(Clone, Copy, PartialEq)]
enum Figure {
    RoundTrip,
    ChildStart,
    CallReturn,
}

const FIGURES: [Figure; 3] = [Figure::RoundTrip, Figure::ChildStart, Figure::CallReturn];

impl Figure {
    fn id(self) -> &'static str {
        match self {
            Figure::RoundTrip => "round_trip",
            Figure::ChildStart => "child_start",
            Figure::CallReturn => "call_return",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Figure::RoundTrip => "(a) spawn + join round trip",
            Figure::ChildStart => "(b) spawn call -> child's first instruction",
            Figure::CallReturn => "(c) spawn call -> call returns in the parent",
        }
    }

    fn of(self, s: &Sample) -> Option<u64> {
        match self {
            Figure::RoundTrip => Some(s.round_trip),
            Figure::ChildStart => s.child_start,
            Figure::CallReturn => Some(s.call_return),
        }
    }
}

/// Order statistics of one figure, in nanoseconds. Percentiles are nearest
/// rank: every value reported is one that was measured.
#[derive(Clone, Copy)]
struct Stats {
    n: usize,
    min: u64,
    p10: u64,
    median: u64,
    p90: u64,
    p99: u64,
    max: u64,
}

impl Stats {
    fn of(values: impl Iterator<Item = u64>) -> Option<Stats> {
        let mut v: Vec<u64> = values.collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Stats {
            n: v.len(),
            min: v[0],
            p10: rank(10.0),
            median: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        })
    }

    fn figure(samples: &[Sample], figure: Figure) -> Option<Stats> {
        Stats::of(samples.iter().filter_map(|s| figure.of(s)))
    }

    fn json(&self) -> Value {
        json!({
            "unit": "us",
            "samples": self.n,
            "median": us(self.median),
            "p90": us(self.p90),
            "p99": us(self.p99),
            "max": us(self.max),
            "min": us(self.min),
            "p10": us(self.p10),
        })
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// Appends `text` word-wrapped at `width` columns, each line indented.
fn wrap(out: &mut String, text: &str, indent: &str, width: usize) {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
            let _ = writeln!(out, "{indent}{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{indent}{line}");
    }
}

/// A duration in µs with as many decimals as are meaningful.
fn fmt_us(ns: u64) -> String {
    let v = us(ns);
    if v < 100.0 {
        format!("{v:.2}")
    } else if v < 10_000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

// ---------------------------------------------------------------------------
// Memory the children write to
// ---------------------------------------------------------------------------

/// An anonymous mapping, unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    /// `flags` is `MAP_SHARED` or `MAP_PRIVATE` (plus extras such as
    /// `MAP_STACK`); the mapping is always anonymous, readable and writable.
    fn new(len: usize, flags: c_int) -> Mapping {
        // SAFETY: a new anonymous mapping at an address the kernel picks
        // overlaps nothing that exists.
        let ptr = unsafe {
            libc::mmap(ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags | libc::MAP_ANONYMOUS, -1, 0)
        };
        assert!(ptr != libc::MAP_FAILED, "mmap of {len} bytes: {}", io::Error::last_os_error());
        Mapping { ptr: ptr.cast(), len }
    }

    /// The first 8 bytes as an atomic.
    fn stamp(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, at least 8 bytes and zeroed
        // (a valid AtomicU64), and lives as long as the borrow of `self`.
        unsafe { &*self.ptr.cast::<AtomicU64>() }
    }

    fn end(&self) -> *mut c_void {
        self.ptr.wrapping_add(self.len).cast()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, which no reference outlives (`stamp`
        // borrows `self`).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// What the variants need beyond their code, made once.
struct Ctx {
    /// The kernel floor's reusable stack and tid word.
    floor: KernelFloor,
    /// A `MAP_SHARED` page: a process child's stamp lands in the very page
    /// the parent reads, not in a copy-on-write copy of it.
    shared: Mapping,
    /// The stack of the vfork child, who runs while we are suspended.
    vfork_stack: Mapping,
}

/// Where thread children stamp: threads share our address space, so a
/// plain static will do.
static THREAD_STAMP: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------------------
// The variants: one function each. Every one reads the clock just before the
// spawn call (t0), when it returns (t1) and when the child has been joined or
// reaped (t2); the child stamps the clock first thing.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Group {
    Thread,
    Process,
    /// Also runs a new program: not comparable with the others.
    Exec,
}

struct Variant {
    id: &'static str,
    label: &'static str,
    group: Group,
    note: &'static str,
    run: fn(&mut Ctx) -> Sample,
}

/// The variants the others are compared with, by position in `VARIANTS`.
const RAWTHREAD: usize = 0;
const FLOOR: usize = 2;
const STD: usize = 3;
const _: () = assert!(matches!(VARIANTS[RAWTHREAD].label.as_bytes(), b"rawthread::spawn + join"));
const _: () = assert!(matches!(VARIANTS[FLOOR].label.as_bytes(), b"kernel floor (bare clone)"));
const _: () = assert!(matches!(VARIANTS[STD].label.as_bytes(), b"std::thread::spawn + join"));

const VARIANTS: [Variant; 10] = [
    Variant {
        id: "rawthread",
        label: "rawthread::spawn + join",
        group: Group::Thread,
        note: "default Builder: 2 MiB stack; regions of joined threads are reused from rawthread's pool; \
               join watches the tid word for up to 10 µs before it sleeps on it",
        run: rawthread_default,
    },
    Variant {
        id: "rawthread_64k",
        label: "rawthread, 64 KiB stack",
        group: Group::Thread,
        note: "Builder::new().stack_size(64 << 10)",
        run: rawthread_64k,
    },
    Variant {
        id: "kernel_floor",
        label: "kernel floor (bare clone)",
        group: Group::Thread,
        note: "rawthread::KernelFloor: one clone with thread flags on a reused stack, no TLS, no thread block, \
               rawthread's join (spin, then futex): what the kernel alone charges for a thread",
        run: kernel_floor,
    },
    Variant {
        id: "std_thread",
        label: "std::thread::spawn + join",
        group: Group::Thread,
        note: "pthread_create underneath, 2 MiB stack, plus std's own bookkeeping",
        run: std_thread,
    },
    Variant {
        id: "pthread",
        label: "pthread_create + pthread_join",
        group: Group::Thread,
        note: "libc, default attributes: the stack is RLIMIT_STACK-sized, from glibc's stack cache",
        run: pthread,
    },
    Variant {
        id: "fork",
        label: "fork + waitpid",
        group: Group::Process,
        note: "glibc fork(): atfork handlers and libc locks around clone; the child stamps and _exit(0)s",
        run: fork,
    },
    Variant {
        id: "vfork",
        label: "vfork (clone CLONE_VM|CLONE_VFORK)",
        group: Group::Process,
        note: "libc::clone(CLONE_VM|CLONE_VFORK|SIGCHLD) on a pre-made stack, the kernel path of vfork() \
               and of posix_spawn; vfork() itself cannot be called soundly from Rust (it returns twice \
               on one shared stack)",
        run: vfork,
    },
    Variant {
        id: "clone_sigchld",
        label: "clone(SIGCHLD) + waitpid",
        group: Group::Process,
        note: "the raw clone syscall as fork does it, without glibc's fork bookkeeping",
        run: clone_sigchld,
    },
    Variant {
        id: "clone3_pidfd",
        label: "clone3 + CLONE_PIDFD, pidfd wait",
        group: Group::Process,
        note: "rawthread::process::spawn(..) then Child::wait(): waitid(P_PIDFD)",
        run: clone3_pidfd,
    },
    Variant {
        id: "posix_spawn",
        label: "posix_spawn /bin/true + waitpid",
        group: Group::Exec,
        note: "includes exec and the whole run of /bin/true: reported apart; no child stamp, so no (b)",
        run: posix_spawn,
    },
];

/// Times one thread: `spawn` starts it (its body calls [`stamp`] first),
/// `join` waits for it.
fn time_thread<H>(spawn: impl FnOnce() -> H, join: impl FnOnce(H)) -> Sample {
    THREAD_STAMP.store(0, Ordering::Relaxed);
    let t0 = now_ns();
    let handle = spawn();
    let t1 = now_ns();
    join(handle);
    let t2 = now_ns();
    Sample::new(t0, t1, t2, Some(THREAD_STAMP.load(Ordering::Acquire)))
}

/// The body of every thread variant.
fn stamp() {
    THREAD_STAMP.store(now_ns(), Ordering::Release);
}

fn rawthread_default(_: &mut Ctx) -> Sample {
    time_thread(|| rawthread::spawn(stamp), |h| h.join().expect("rawthread child panicked"))
}

fn rawthread_64k(_: &mut Ctx) -> Sample {
    time_thread(
        || rawthread::Builder::new().stack_size(64 << 10).spawn(stamp).expect("rawthread spawn"),
        |h| h.join().expect("rawthread child panicked"),
    )
}

fn kernel_floor(ctx: &mut Ctx) -> Sample {
    let floor = &mut ctx.floor;
    time_thread(
        || {
            floor.spawn(&THREAD_STAMP).expect("kernel floor clone");
            floor
        },
        |floor| floor.join(),
    )
}

fn std_thread(_: &mut Ctx) -> Sample {
    time_thread(|| std::thread::spawn(stamp), |h| h.join().expect("std child panicked"))
}

extern "C" fn pthread_child(_: *mut c_void) -> *mut c_void {
    stamp();
    ptr::null_mut()
}

fn pthread(_: &mut Ctx) -> Sample {
    time_thread(
        || {
            let mut thread: libc::pthread_t = 0;
            // SAFETY: default attributes (null); pthread_child is a valid
            // start routine that touches only a static.
            let rc = unsafe { libc::pthread_create(&mut thread, ptr::null(), pthread_child, ptr::null_mut()) };
            assert_eq!(rc, 0, "pthread_create: {}", io::Error::from_raw_os_error(rc));
            thread
        },
        |thread| {
            // SAFETY: a joinable thread we created and join once.
            let rc = unsafe { libc::pthread_join(thread, ptr::null_mut()) };
            assert_eq!(rc, 0, "pthread_join: {}", io::Error::from_raw_os_error(rc));
        },
    )
}

/// The child side of every process variant: stamp and leave at once.
/// `_exit`, not `exit`: no atexit handlers, no flushing of stdio buffers
/// inherited from the parent.
fn stamp_and_exit(stamp: &AtomicU64) -> ! {
    stamp.store(now_ns(), Ordering::Release);
    // SAFETY: ends this process only; it touches nothing it shares with
    // the parent.
    unsafe { libc::_exit(0) }
}

/// Reaps `pid` and checks that it exited with 0.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    loop {
        // SAFETY: waiting for a child of ours, into a valid int.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            break;
        }
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), io::ErrorKind::Interrupted, "waitpid({pid}): {e}");
    }
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child {pid} failed: status {status:#x}");
}

/// Times one process made by `make`, which returns the child's pid in the
/// parent and, for the fork-like makers that return twice, 0 in the child,
/// which then stamps and leaves. `what` names the call in errors.
fn time_process(ctx: &mut Ctx, what: &str, make: impl FnOnce(&AtomicU64) -> libc::pid_t) -> Sample {
    let stamp = ctx.shared.stamp();
    stamp.store(0, Ordering::Relaxed);
    let t0 = now_ns();
    let pid = make(stamp);
    if pid == 0 {
        stamp_and_exit(stamp);
    }
    let t1 = now_ns();
    assert!(pid > 0, "{what}: {}", io::Error::last_os_error());
    reap(pid);
    let t2 = now_ns();
    Sample::new(t0, t1, t2, Some(stamp.load(Ordering::Acquire)))
}

fn fork(ctx: &mut Ctx) -> Sample {
    // SAFETY: the child runs on its own copy of our memory and does only
    // async-signal-safe things (a clock read, an atomic store, _exit), as a
    // child of a possibly multi-threaded process must.
    time_process(ctx, "fork", |_| unsafe { libc::fork() })
}

/// The vfork child, on `Ctx::vfork_stack`, in our address space.
extern "C" fn vfork_child(stamp: *mut c_void) -> c_int {
    // SAFETY: the parent's shared stamp, alive while the parent is
    // suspended waiting for us.
    stamp_and_exit(unsafe { &*stamp.cast::<AtomicU64>() })
}

fn vfork(ctx: &mut Ctx) -> Sample {
    let stack_top = ctx.vfork_stack.end();
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    // SAFETY: the child runs on a stack of its own that nobody else uses,
    // and CLONE_VFORK keeps us suspended until it has exited, so nothing it
    // touches in our shared memory (the stamp, our TLS) is touched by us
    // meanwhile. It returns to no frame of ours: it ends with _exit. (A
    // signal handler would run in it on our TLS; posix_spawn blocks signals
    // for that, and this benchmark installs no handler that could fire.)
    time_process(ctx, "clone(CLONE_VM|CLONE_VFORK)", |stamp| unsafe {
        libc::clone(vfork_child, stack_top, flags, ptr::from_ref(stamp).cast_mut().cast())
    })
}

fn clone_sigchld(ctx: &mut Ctx) -> Sample {
    // clone(flags, stack, parent_tid, child_tid, tls): all longs, as the
    // variadic syscall() reads them.
    let (flags, none): (libc::c_long, libc::c_long) = (libc::SIGCHLD.into(), 0);
    // SAFETY: like fork: without CLONE_VM the child returns here on its own
    // copy of our memory and stack (stack 0: the same stack pointer), then
    // stamps and _exits. glibc's record of our tid is stale in the child,
    // which never consults it.
    time_process(ctx, "clone(SIGCHLD)", |_| unsafe {
        libc::syscall(libc::SYS_clone, flags, none, none, none, none) as libc::pid_t
    })
}

fn clone3_pidfd(ctx: &mut Ctx) -> Sample {
    let stamp = ctx.shared.stamp();
    stamp.store(0, Ordering::Relaxed);
    let t0 = now_ns();
    let mut child = rawthread::process::spawn(|| {
        stamp.store(now_ns(), Ordering::Release);
        0
    })
    .expect("rawthread::process::spawn");
    let t1 = now_ns();
    let status = child.wait().expect("Child::wait");
    let t2 = now_ns();
    assert!(status.success(), "clone3 child failed: {status}");
    Sample::new(t0, t1, t2, Some(stamp.load(Ordering::Acquire)))
}

fn posix_spawn(_: &mut Ctx) -> Sample {
    let argv = [c"true".as_ptr().cast_mut(), ptr::null_mut()];
    let envp: [*mut c_char; 1] = [ptr::null_mut()];
    let mut pid = 0;
    let t0 = now_ns();
    // SAFETY: NUL-terminated path, NULL-terminated argv and (empty) envp,
    // default file actions and attributes.
    let rc = unsafe {
        libc::posix_spawn(&mut pid, c"/bin/true".as_ptr(), ptr::null(), ptr::null(), argv.as_ptr(), envp.as_ptr())
    };
    let t1 = now_ns();
    assert_eq!(rc, 0, "posix_spawn /bin/true: {}", io::Error::from_raw_os_error(rc));
    reap(pid);
    let t2 = now_ns();
    Sample::new(t0, t1, t2, None)
}

// ---------------------------------------------------------------------------
// Part 1: latency, interleaved
// ---------------------------------------------------------------------------

/// Samples of every variant (index as in `VARIANTS`), in the order taken:
/// sample `r * block + i` is the `i`th of round `r`.
fn measure_latency(ctx: &mut Ctx, plan: &Plan, progress: &Progress) -> Vec<Vec<Sample>> {
    let mut samples: Vec<Vec<Sample>> = VARIANTS.iter().map(|_| Vec::with_capacity(plan.rounds * plan.block)).collect();
    for round in 0..plan.rounds {
        progress.show(format_args!("latency: round {}/{}", round + 1, plan.rounds));
        // Rotate who goes first: what a variant leaves behind (fork's
        // write-protected pages, a cold cache) falls on a different
        // successor each round.
        for k in 0..VARIANTS.len() {
            let i = (round + k) % VARIANTS.len();
            for _ in 0..plan.block {
                samples[i].push((VARIANTS[i].run)(ctx));
            }
        }
    }
    samples
}

/// The median of each round's block, for per-round ratios.
fn block_medians(samples: &[Sample], block: usize) -> Vec<u64> {
    samples.chunks(block).filter_map(|c| Stats::figure(c, Figure::RoundTrip)).map(|s| s.median).collect()
}

// ---------------------------------------------------------------------------
// Part 2: cost against the parent's memory
// ---------------------------------------------------------------------------

struct GrowthPoint {
    thp: bool,
    size_mib: usize,
    /// Measured with the buffer in place.
    rss_mib: f64,
    huge_mib: f64,
    fork: Vec<Sample>,
    thread: Vec<Sample>,
}

/// The bracketed word of the THP `enabled` file, e.g. `madvise`.
fn thp_mode() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = text.find('[')? + 1;
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_string())
}

/// Maps `size_mib` of private anonymous memory, asks for huge pages or
/// forbids them, and writes one byte per 4 KiB page so it is all resident.
fn touched_buffer(size_mib: usize, thp: bool) -> Option<Mapping> {
    if size_mib == 0 {
        return None;
    }
    let buf = Mapping::new(size_mib * MIB, libc::MAP_PRIVATE);
    let advice = if thp { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE };
    // SAFETY: advice on our own mapping; it changes no contents.
    let rc = unsafe { libc::madvise(buf.ptr.cast(), buf.len, advice) };
    assert_eq!(rc, 0, "madvise: {}", io::Error::last_os_error());
    for offset in (0..buf.len).step_by(PAGE) {
        // SAFETY: inside our writable mapping, which nothing else refers to.
        unsafe { buf.ptr.add(offset).write_volatile(1) };
    }
    Some(buf)
}

/// Fork and rawthread samples at every size, with and without THP. The
/// sweep is done `growth_passes` times, each with freshly touched buffers,
/// and the samples pooled: a burst of noise then hits one pass of a size,
/// not the whole size.
fn measure_growth(ctx: &mut Ctx, plan: &Plan, thp_series: &[bool], progress: &Progress) -> Vec<GrowthPoint> {
    let mut points: Vec<GrowthPoint> = thp_series
        .iter()
        .flat_map(|&thp| plan.growth_mib.iter().map(move |&size_mib| (thp, size_mib)))
        .map(|(thp, size_mib)| GrowthPoint {
            thp,
            size_mib,
            rss_mib: 0.0,
            huge_mib: 0.0,
            fork: Vec::new(),
            thread: Vec::new(),
        })
        .collect();
    for pass in 0..plan.growth_passes {
        for point in &mut points {
            progress.show(format_args!(
                "memory growth: pass {}/{}, {} MiB, THP {}",
                pass + 1,
                plan.growth_passes,
                point.size_mib,
                if point.thp { "on" } else { "off" }
            ));
            let buffer = touched_buffer(point.size_mib, point.thp);
            point.rss_mib = rss_bytes() as f64 / MIB as f64;
            point.huge_mib = anon_huge_kib() as f64 / 1024.0;
            // Untimed: the first fork after the buffer was written
            // write-protects every page of it in the parent, which the
            // later forks find done.
            fork(ctx);
            rawthread_default(ctx);
            for round in 0..plan.growth_rounds {
                let fork_first = round % 2 == 0;
                for half in 0..2 {
                    for _ in 0..plan.growth_block {
                        if (half == 0) == fork_first {
                            point.fork.push(fork(ctx));
                        } else {
                            point.thread.push(rawthread_default(ctx));
                        }
                    }
                }
            }
            drop(buffer);
        }
    }
    points
}

/// Picks one series of samples (fork's or the thread's) out of a point.
type SamplesOf = fn(&GrowthPoint) -> &[Sample];

/// ns per 4 KiB page of buffer, fitted to the medians of one series.
fn growth_slope(points: &[GrowthPoint], thp: bool, figure: Figure, of: SamplesOf) -> Option<f64> {
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.thp == thp)
        .filter_map(|p| Some(((p.size_mib * MIB / PAGE) as f64, Stats::figure(of(p), figure)?.median as f64)))
        .collect();
    (xy.len() >= 2).then(|| slope(&xy))
}

// ---------------------------------------------------------------------------
// Part 3: memory per idle thread
// ---------------------------------------------------------------------------

/// Where idle threads wait: they count themselves in, then sleep until the
/// gate opens.
struct Gate {
    arrived: AtomicUsize,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        self.arrived.fetch_add(1, Ordering::Release);
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
}

/// Per-thread cost, KiB.
#[derive(Clone, Copy)]
struct Footprint {
    threads: usize,
    /// Resident user memory of this process (`/proc/self/statm`).
    user_rss: f64,
    /// System-wide `KernelStack` (`/proc/meminfo`).
    kernel_stack: f64,
    /// This process's page tables (`VmPTE` in `/proc/self/status`): exact,
    /// unlike the system-wide `PageTables`, which is kept for reference.
    page_tables: f64,
    page_tables_system: f64,
    /// System-wide unreclaimable slab (`SUnreclaim`): task structs and the
    /// like, and the noisiest figure.
    sunreclaim: f64,
}

impl Footprint {
    fn total(&self) -> f64 {
        self.user_rss + self.kernel_stack + self.page_tables + self.sunreclaim
    }
}

/// The memory counters, KiB.
#[derive(Clone, Copy)]
struct Counters {
    rss: f64,
    vm_pte: f64,
    /// `KernelStack`, `PageTables`, `SUnreclaim`.
    system: [f64; 3],
}

impl Counters {
    fn now() -> Counters {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        Counters {
            rss: rss_bytes() as f64 / 1024.0,
            vm_pte: field_kib(&status, "VmPTE:").unwrap_or(0.0),
            system: meminfo_kib(),
        }
    }
}

/// Waits (at most a second) for the system-wide counters to stop falling:
/// the kernel frees the page tables and task structs of exited threads only
/// after an RCU grace period, and the frees of the last run must not land
/// in the next one's deltas.
fn settle() {
    let mut last = meminfo_kib();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        let now = meminfo_kib();
        let falling = now[1] < last[1] - 16.0 || now[2] < last[2] - 256.0;
        last = now;
        if !falling {
            return;
        }
    }
}

/// Starts `n` threads that block at a gate, reads the memory counters
/// while they all wait, then releases and joins them.
fn idle_footprint<H>(n: usize, spawn: impl Fn(Arc<Gate>) -> io::Result<H>, join: impl Fn(H)) -> Footprint {
    let gate = Arc::new(Gate { arrived: AtomicUsize::new(0), open: Mutex::new(false), opened: Condvar::new() });
    let mut handles = Vec::with_capacity(n);
    settle();
    let before = Counters::now();
    for _ in 0..n {
        match spawn(gate.clone()) {
            Ok(h) => handles.push(h),
            // At a thread limit: measure the threads we have.
            Err(e) => {
                eprintln!("idle threads: spawn {} failed: {e}", handles.len() + 1);
                break;
            }
        }
    }
    // Every thread has run and touched its stack before we read.
    while gate.arrived.load(Ordering::Acquire) < handles.len() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = Counters::now();
    *gate.open.lock().unwrap() = true;
    gate.opened.notify_all();
    let threads = handles.len();
    handles.into_iter().for_each(join);
    let per = |after: f64, before: f64| (after - before) / threads.max(1) as f64;
    Footprint {
        threads,
        user_rss: per(after.rss, before.rss),
        kernel_stack: per(after.system[0], before.system[0]),
        page_tables: per(after.vm_pte, before.vm_pte),
        page_tables_system: per(after.system[1], before.system[1]),
        sunreclaim: per(after.system[2], before.system[2]),
    }
}

fn idle_rawthread(n: usize) -> Footprint {
    // Empty rawthread's pool first: its regions are already resident and
    // would hide the memory a new thread costs.
    let limits = rawthread::set_pool_limits(PoolLimits { regions: 0, bytes: 0 });
    rawthread::set_pool_limits(limits);
    idle_footprint(
        n,
        |gate| rawthread::Builder::new().spawn(move || gate.wait()),
        |h| h.join().expect("idle rawthread panicked"),
    )
}

fn idle_std(n: usize) -> Footprint {
    // glibc's stack cache keeps up to 40 MiB of stacks of earlier threads,
    // which no API empties: the first ~20 threads reuse one (a few % here).
    idle_footprint(
        n,
        |gate| std::thread::Builder::new().spawn(move || gate.wait()),
        |h| h.join().expect("idle std thread panicked"),
    )
}

/// The median of each field over repetitions.
fn median_footprint(runs: &[Footprint]) -> Footprint {
    let med = |f: fn(&Footprint) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[(v.len() - 1) / 2]
    };
    Footprint {
        threads: runs.iter().map(|r| r.threads).min().unwrap_or(0),
        user_rss: med(|r| r.user_rss),
        kernel_stack: med(|r| r.kernel_stack),
        page_tables: med(|r| r.page_tables),
        page_tables_system: med(|r| r.page_tables_system),
        sunreclaim: med(|r| r.sunreclaim),
    }
}

// ---------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("statm resident");
    pages * PAGE
}

/// `AnonHugePages` of this process, KiB: how much THP actually backs.
fn anon_huge_kib() -> u64 {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    field_kib(&text, "AnonHugePages:").unwrap_or(0.0) as u64
}

/// System-wide `KernelStack`, `PageTables` and `SUnreclaim`, KiB.
fn meminfo_kib() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    ["KernelStack:", "PageTables:", "SUnreclaim:"].map(|key| field_kib(&text, key).unwrap_or(0.0))
}

fn field_kib(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()
}

struct Machine {
    cpus_online: i64,
    cpus_usable: usize,
    cpu_model: String,
    kernel: String,
    glibc: String,
    thp: Option<String>,
    load: String,
}

fn machine() -> Machine {
    // SAFETY: a zeroed utsname is valid, and uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid utsname to fill.
    unsafe { libc::uname(&mut uts) };
    // SAFETY: uname NUL-terminates its fields.
    let field = |f: &[c_char]| unsafe { CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned();
    // SAFETY: glibc returns a pointer to a static NUL-terminated string.
    let glibc = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy().into_owned();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Machine {
        // SAFETY: sysconf has no preconditions.
        cpus_online: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) },
        cpus_usable: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, m)| m.trim().to_string()))
            .unwrap_or_else(|| "unknown CPU".into()),
        kernel: format!("{} {} {}", field(&uts.sysname), field(&uts.release), field(&uts.machine)),
        glibc,
        thp: thp_mode(),
        load: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    }
}

/// Pins the calling thread — at startup the only one, so from then on the
/// process: threads and children inherit the mask.
fn pin_to(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: a zeroed cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: a valid set of the size we pass, for this thread (0).
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Now, as `YYYY-MM-DD hh:mm:ss UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    // Days to civil date: Howard Hinnant's algorithm (proleptic Gregorian).
    let z = secs.div_euclid(86_400) + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = secs.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// `target/`: `CARGO_TARGET_DIR` if set; else the directory above this
/// executable that cargo marked with `CACHEDIR.TAG` (right for a target
/// dir set in a cargo config, too); else `target/` next to Cargo.toml.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().skip(1).find(|d| d.join("CACHEDIR.TAG").is_file()).map(Path::to_path_buf))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

// ---------------------------------------------------------------------------
// Progress (stderr, only on a terminal)
// ---------------------------------------------------------------------------

struct Progress {
    on: bool,
    start: Instant,
}

impl Progress {
    fn new() -> Progress {
        Progress { on: io::stderr().is_terminal(), start: Instant::now() }
    }

    /// Called between blocks of samples, never inside one.
    fn show(&self, what: std::fmt::Arguments) {
        if self.on {
            eprint!("\r\x1b[2K[{:>4.1} s] {what}", self.start.elapsed().as_secs_f64());
            let _ = io::stderr().flush();
        }
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

struct Results {
    latency: Vec<Vec<Sample>>,
    growth: Vec<GrowthPoint>,
    thp_note: String,
    idle: [Footprint; 2],
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let value = f();
    (value, start.elapsed())
}

/// What the run was: printed first, and kept in results.json.
struct Meta {
    command: String,
    date: String,
    mode: &'static str,
    pin: Option<usize>,
    machine: Machine,
}

fn main() {
    let started = Instant::now();
    let args: Vec<String> = std::env::args().collect();
    let options = parse_args(&args[1..]);
    // Without --bench we were started by `cargo test --benches`: a smoke
    // run is all that is wanted there.
    let (plan, mode) = match (options.quick, options.bench_flag) {
        (true, _) => (&QUICK, "quick (--quick)"),
        (false, false) => (&QUICK, "smoke (no --bench: run as by `cargo test --benches`), quick sizes"),
        (false, true) => (&FULL, "full"),
    };
    if let Some(cpu) = options.pin
        && let Err(e) = pin_to(cpu)
    {
        eprintln!("spawn bench: cannot pin to CPU {cpu}: {e}");
        std::process::exit(2);
    }
    let progress = Progress::new();

    let mut ctx = Ctx {
        floor: KernelFloor::new().expect("KernelFloor::new"),
        shared: Mapping::new(PAGE, libc::MAP_SHARED),
        vfork_stack: Mapping::new(64 << 10, libc::MAP_PRIVATE | libc::MAP_STACK),
    };
    progress.show(format_args!("warming up"));
    for variant in &VARIANTS {
        for _ in 0..plan.warmup {
            (variant.run)(&mut ctx);
        }
    }
    let meta = Meta { command: args.join(" "), date: utc_now(), mode, pin: options.pin, machine: machine() };
    progress.clear();
    print!("{}", header(&meta, plan));
    let _ = io::stdout().flush();

    let (latency, latency_time) = timed(|| measure_latency(&mut ctx, plan, &progress));

    let (thp_series, thp_note) = match meta.machine.thp.as_deref() {
        Some("never") => (vec![false], "THP is `never` on this machine: the THP series is skipped.".to_string()),
        None => (vec![false], "no transparent huge pages on this kernel: the THP series is skipped.".to_string()),
        Some(mode) => (
            vec![false, true],
            format!("THP mode `{mode}`: MADV_NOHUGEPAGE on the buffer for 4 KiB pages, MADV_HUGEPAGE for THP."),
        ),
    };
    let (growth, growth_time) = timed(|| measure_growth(&mut ctx, plan, &thp_series, &progress));

    let (idle, idle_time) = timed(|| {
        let mut runs = [Vec::new(), Vec::new()];
        for run in 0..plan.idle_reps {
            progress.show(format_args!("idle threads: run {}/{}", run + 1, plan.idle_reps));
            runs[0].push(idle_rawthread(plan.idle_threads));
            runs[1].push(idle_std(plan.idle_threads));
        }
        runs.map(|runs| median_footprint(&runs))
    });
    progress.clear();
    let results = Results { latency, growth, thp_note, idle };

    let mut out = String::new();
    report_latency(&mut out, &results, plan);
    report_growth(&mut out, &results);
    report_idle(&mut out, &results, plan);
    out.push_str(&summary(&results, plan));

    // A smoke run (`cargo test --benches`, a debug build) must not
    // overwrite the results of the last real one.
    let dir = target_dir().join(if options.bench_flag || options.quick { "spawn-bench" } else { "spawn-bench/smoke" });
    let (json_path, svg_path) = (dir.join("results.json"), dir.join("report.svg"));
    let written = (|| -> Result<(), Box<dyn Error>> {
        std::fs::create_dir_all(&dir)?;
        let json = results_json(&results, &meta, plan);
        std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")?;
        svg::write(&svg_path, &results)
    })();
    match written {
        Ok(()) => {
            let _ = writeln!(out, "\nWritten: {}\n         {}", json_path.display(), svg_path.display());
        }
        Err(e) => {
            let _ = writeln!(out, "\nCould not write the results to {}: {e}", dir.display());
        }
    }
    let _ = writeln!(
        out,
        "Total time: {:.1} s (latency {:.1} s, memory growth {:.1} s, idle threads {:.1} s)",
        started.elapsed().as_secs_f64(),
        latency_time.as_secs_f64(),
        growth_time.as_secs_f64(),
        idle_time.as_secs_f64()
    );
    print!("{out}");
}

// ---------------------------------------------------------------------------
// Terminal report
// ---------------------------------------------------------------------------

fn header(meta: &Meta, plan: &Plan) -> String {
    let m = &meta.machine;
    let clone3 = match rawthread::uses_clone3() {
        Some(true) => "yes: rawthread makes its threads and processes with clone3",
        Some(false) => "no: clone3 was refused, rawthread fell back to clone",
        None => "unknown (no rawthread spawn yet)",
    };
    let pin = match meta.pin {
        Some(cpu) => format!("pinned to CPU {cpu}"),
        None => "not pinned (--pin CPU to pin)".into(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "rawthread spawn benchmark");
    let _ = writeln!(out, "  command   {}", meta.command);
    let _ = writeln!(out, "  date      {}", meta.date);
    let _ = writeln!(out, "  machine   {} CPUs online ({} usable), {}", m.cpus_online, m.cpus_usable, m.cpu_model);
    let _ = writeln!(out, "            {}, glibc {}, load average {}", m.kernel, m.glibc, m.load);
    let _ = writeln!(out, "  clone3    {clone3}");
    let _ = writeln!(out, "  THP       {}", m.thp.as_deref().unwrap_or("not available"));
    let _ = writeln!(out, "  mode      {}; {pin}", meta.mode);
    let _ = writeln!(
        out,
        "  method    {} rounds; in each, every variant takes {} samples in a row (order rotated per round)",
        plan.rounds, plan.block
    );
    let _ = writeln!(out);
    out
}

fn report_latency(out: &mut String, r: &Results, plan: &Plan) {
    let _ = writeln!(out, "1. Latency, µs ({} samples per variant; ratios are of medians)", plan.rounds * plan.block);
    for figure in FIGURES {
        let base = Stats::figure(&r.latency[RAWTHREAD], figure).map(|s| s.median as f64);
        let floor = Stats::figure(&r.latency[FLOOR], figure).map(|s| s.median as f64);
        let _ = writeln!(
            out,
            "\n{}, µs\n{:<38}{:>6}{:>9}{:>9}{:>9}{:>9}{:>11}{:>8}",
            figure.title(),
            "",
            "n",
            "median",
            "p90",
            "p99",
            "max",
            "/rawthread",
            "/floor"
        );
        let mut group = None;
        for (variant, samples) in VARIANTS.iter().zip(&r.latency) {
            if group != Some(variant.group) {
                group = Some(variant.group);
                let _ = writeln!(
                    out,
                    "{}",
                    match variant.group {
                        Group::Thread => " threads",
                        Group::Process => " processes",
                        Group::Exec => " with exec (apart: not comparable)",
                    }
                );
            }
            let Some(s) = Stats::figure(samples, figure) else {
                let _ = writeln!(out, "   {:<35}{:>6}   no child stamp: the child execs", variant.label, "-");
                continue;
            };
            let ratio = |to: Option<f64>| to.map_or("-".into(), |to| format!("{:.2}", s.median as f64 / to));
            let _ = writeln!(
                out,
                "   {:<35}{:>6}{:>9}{:>9}{:>9}{:>9}{:>11}{:>8}",
                variant.label,
                s.n,
                fmt_us(s.median),
                fmt_us(s.p90),
                fmt_us(s.p99),
                fmt_us(s.max),
                ratio(base),
                ratio(floor)
            );
        }
    }
    let _ = writeln!(out, "\nNotes on the variants:");
    for v in &VARIANTS {
        let _ = writeln!(out, "  {}", v.label);
        wrap(out, v.note, "      ", 96);
    }
    let _ = writeln!(out, "  (b) is timed to the first line of the child's own code (its closure or function).");
    let _ = writeln!(out);
}

/// The rawthread/std::thread round-trip ratio of the medians, and the
/// p10, median and p90 of the same ratio taken round by round (from each
/// round's block medians): how far the noise moved it.
fn goal_ratio(r: &Results, plan: &Plan) -> (f64, Option<[f64; 3]>) {
    let median = |i: usize| Stats::figure(&r.latency[i], Figure::RoundTrip).map_or(f64::NAN, |s| s.median as f64);
    let overall = median(RAWTHREAD) / median(STD);
    let rounds = block_medians(&r.latency[RAWTHREAD], plan.block);
    let std = block_medians(&r.latency[STD], plan.block);
    let mut per_round: Vec<f64> = rounds.iter().zip(&std).map(|(&a, &b)| a as f64 / b as f64).collect();
    per_round.sort_by(f64::total_cmp);
    let rank = |p: f64| per_round[((p * per_round.len() as f64).ceil() as usize).clamp(1, per_round.len()) - 1];
    (overall, (per_round.len() >= 2).then(|| [rank(0.1), rank(0.5), rank(0.9)]))
}

fn report_growth(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "2. Cost against the parent's memory (median µs; the buffer is touched, one write per 4 KiB page)"
    );
    let _ = writeln!(out, "   {}", r.thp_note);
    for thp in [false, true] {
        let points: Vec<&GrowthPoint> = r.growth.iter().filter(|p| p.thp == thp).collect();
        if points.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n {}\n   {:>8}{:>12}{:>12}{:>14}{:>16}{:>18}{:>6}",
            if thp { "THP on (MADV_HUGEPAGE)" } else { "THP off (MADV_NOHUGEPAGE): 4 KiB pages" },
            "buffer",
            "parent RSS",
            "THP-backed",
            "fork+waitpid",
            "fork call ret.",
            "rawthread sp+join",
            "n"
        );
        for p in points {
            let med = |s: &[Sample], f: Figure| Stats::figure(s, f).map_or("-".into(), |s| fmt_us(s.median));
            let _ = writeln!(
                out,
                "   {:>4} MiB{:>8.0} MiB{:>8.0} MiB{:>14}{:>16}{:>18}{:>6}",
                p.size_mib,
                p.rss_mib,
                p.huge_mib,
                med(&p.fork, Figure::RoundTrip),
                med(&p.fork, Figure::CallReturn),
                med(&p.thread, Figure::RoundTrip),
                p.fork.len()
            );
        }
        let fmt_slope = |s: Option<f64>| s.map_or("-".into(), |s| format!("{s:.1}"));
        let _ = writeln!(
            out,
            "   slope, ns per 4 KiB page of buffer: fork+waitpid {}, fork call return {}, rawthread spawn+join {}",
            fmt_slope(growth_slope(&r.growth, thp, Figure::RoundTrip, |p| &p.fork)),
            fmt_slope(growth_slope(&r.growth, thp, Figure::CallReturn, |p| &p.fork)),
            fmt_slope(growth_slope(&r.growth, thp, Figure::RoundTrip, |p| &p.thread)),
        );
    }
    let _ = writeln!(out);
}

fn report_idle(out: &mut String, r: &Results, plan: &Plan) {
    let _ = writeln!(
        out,
        "3. Memory per idle thread, KiB ({} threads blocked at once, median of {} runs)",
        plan.idle_threads, plan.idle_reps
    );
    let _ = writeln!(
        out,
        "   {:<22}{:>8}{:>10}{:>13}{:>12}{:>12}{:>8}  {:>18}",
        "", "threads", "user RSS", "KernelStack", "page tables", "SUnreclaim", "total", "(PageTables, sys)"
    );
    for (label, f) in ["rawthread::spawn", "std::thread::spawn"].iter().zip(&r.idle) {
        let _ = writeln!(
            out,
            "   {:<22}{:>8}{:>10.1}{:>13.1}{:>12.1}{:>12.1}{:>8.1}  {:>18.1}",
            label,
            f.threads,
            f.user_rss,
            f.kernel_stack,
            f.page_tables,
            f.sunreclaim,
            f.total(),
            f.page_tables_system
        );
    }
    let _ =
        writeln!(out, "   user RSS: /proc/self/statm; page tables: VmPTE of /proc/self/status (this process, exact).");
    let _ =
        writeln!(out, "   KernelStack, SUnreclaim (and PageTables, sys): /proc/meminfo deltas, which are system-wide:");
    let _ = writeln!(out, "   whatever else the machine did meanwhile is in them, SUnreclaim most of all.");
    let _ = writeln!(out);
}

fn summary(r: &Results, plan: &Plan) -> String {
    let mut out = String::new();
    let median = |samples: &[Sample]| Stats::figure(samples, Figure::RoundTrip).map_or(f64::NAN, |s| s.median as f64);
    let (ratio, per_round) = goal_ratio(r, plan);
    let _ = writeln!(out, "Summary");
    let _ = writeln!(
        out,
        "  >> rawthread / std::thread, spawn+join median: {ratio:.2}   (the project's target: <= {GOAL_RATIO:.2}: {})",
        if ratio <= GOAL_RATIO { "met" } else { "NOT met" }
    );
    if let Some([p10, p50, p90]) = per_round {
        let _ = writeln!(
            out,
            "     the same ratio round by round ({} rounds): p10 {p10:.2}, median {p50:.2}, p90 {p90:.2}",
            plan.rounds
        );
    }
    let (raw, floor) = (median(&r.latency[RAWTHREAD]), median(&r.latency[FLOOR]));
    let _ = writeln!(
        out,
        "  rawthread spawn+join {:.1} µs = {:.2}x the kernel floor ({:.1} µs); std::thread {:.1} µs",
        raw / 1e3,
        raw / floor,
        floor / 1e3,
        median(&r.latency[STD]) / 1e3
    );
    if let Some((v, m)) = VARIANTS
        .iter()
        .zip(&r.latency)
        .filter(|(v, _)| v.group == Group::Process)
        .map(|(v, s)| (v, median(s)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
    {
        let _ = writeln!(out, "  cheapest process: {} {:.1} µs = {:.1}x rawthread", v.label, m / 1e3, m / raw);
    }
    for thp in [false, true] {
        let fork = growth_slope(&r.growth, thp, Figure::RoundTrip, |p| &p.fork);
        let thread = growth_slope(&r.growth, thp, Figure::RoundTrip, |p| &p.thread);
        if let (Some(fork), Some(thread)) = (fork, thread) {
            let _ = writeln!(
                out,
                "  per 4 KiB page of parent memory{}: fork+waitpid {fork:+.1} ns, rawthread spawn+join {thread:+.1} ns",
                if thp { " (THP on)" } else { " (4 KiB pages)" }
            );
        }
    }
    let _ = writeln!(
        out,
        "  idle thread, user + kernel: rawthread {:.1} KiB, std::thread {:.1} KiB",
        r.idle[0].total(),
        r.idle[1].total()
    );
    out
}

// ---------------------------------------------------------------------------
// results.json
// ---------------------------------------------------------------------------

fn results_json(r: &Results, meta: &Meta, plan: &Plan) -> Value {
    let m = &meta.machine;
    let mut latency = Vec::new();
    for figure in FIGURES {
        let base = Stats::figure(&r.latency[RAWTHREAD], figure).map(|s| s.median as f64);
        let floor = Stats::figure(&r.latency[FLOOR], figure).map(|s| s.median as f64);
        for (v, samples) in VARIANTS.iter().zip(&r.latency) {
            let Some(stats) = Stats::figure(samples, figure) else { continue };
            let mut o = stats.json();
            o["variant"] = json!(v.id);
            o["label"] = json!(v.label);
            o["group"] = json!(match v.group {
                Group::Thread => "thread",
                Group::Process => "process",
                Group::Exec => "exec",
            });
            o["figure"] = json!(figure.id());
            o["figure_title"] = json!(figure.title());
            o["ratio_to_rawthread"] = json!(base.map(|b| stats.median as f64 / b));
            o["ratio_to_floor"] = json!(floor.map(|f| stats.median as f64 / f));
            o["note"] = json!(v.note);
            latency.push(o);
        }
    }
    let (ratio, per_round) = goal_ratio(r, plan);

    let mut growth = Vec::new();
    let mut slopes = Vec::new();
    for p in &r.growth {
        for (variant, samples) in [("fork", &p.fork), ("rawthread", &p.thread)] {
            for figure in FIGURES {
                let Some(stats) = Stats::figure(samples, figure) else { continue };
                let mut o = stats.json();
                o["variant"] = json!(variant);
                o["thp"] = json!(p.thp);
                o["buffer_mib"] = json!(p.size_mib);
                o["parent_rss_mib"] = json!(p.rss_mib);
                o["thp_backed_mib"] = json!(p.huge_mib);
                o["figure"] = json!(figure.id());
                growth.push(o);
            }
        }
    }
    for thp in [false, true] {
        let series: [(&str, Figure, SamplesOf); 3] = [
            ("fork", Figure::RoundTrip, |p| &p.fork),
            ("fork", Figure::CallReturn, |p| &p.fork),
            ("rawthread", Figure::RoundTrip, |p| &p.thread),
        ];
        for (variant, figure, of) in series {
            if let Some(value) = growth_slope(&r.growth, thp, figure, of) {
                slopes.push(json!({
                    "variant": variant, "thp": thp, "figure": figure.id(),
                    "unit": "ns per 4 KiB page", "value": value,
                    "fit": "least squares on the medians",
                }));
            }
        }
    }
    let idle: Vec<Value> = ["rawthread", "std_thread"]
        .iter()
        .zip(&r.idle)
        .map(|(variant, f)| {
            json!({
                "variant": variant, "threads": f.threads, "runs": plan.idle_reps, "unit": "KiB per thread",
                "user_rss": f.user_rss, "kernel_stack": f.kernel_stack, "page_tables": f.page_tables,
                "sunreclaim": f.sunreclaim, "total": f.total(), "page_tables_system": f.page_tables_system,
                "note": "user_rss: /proc/self/statm; page_tables: VmPTE of /proc/self/status; kernel_stack, \
                         sunreclaim and page_tables_system: system-wide /proc/meminfo deltas (KernelStack, \
                         SUnreclaim, PageTables)",
            })
        })
        .collect();

    json!({
        "meta": {
            "command": meta.command,
            "date": meta.date,
            "mode": meta.mode,
            "pinned_cpu": meta.pin,
            "clock": "CLOCK_MONOTONIC (rawthread::now_ns), ns, reported in us",
            "clone3": rawthread::uses_clone3(),
            "machine": {
                "cpus_online": m.cpus_online, "cpus_usable": m.cpus_usable, "cpu_model": m.cpu_model,
                "kernel": m.kernel, "glibc": m.glibc, "thp": m.thp, "load_average_at_start": m.load,
            },
            "plan": {
                "warmup_per_variant": plan.warmup, "rounds": plan.rounds, "block": plan.block,
                "growth_mib": plan.growth_mib, "growth_passes": plan.growth_passes,
                "growth_samples": plan.growth_passes * plan.growth_rounds * plan.growth_block,
                "idle_threads": plan.idle_threads, "idle_runs": plan.idle_reps,
            },
        },
        "goal": {
            "metric": "rawthread / std::thread, spawn+join round trip, ratio of medians",
            "ratio": ratio,
            "target_at_most": GOAL_RATIO,
            "met": ratio <= GOAL_RATIO,
            "per_round": per_round.map(|[p10, p50, p90]| json!({"p10": p10, "median": p50, "p90": p90})),
        },
        "latency": latency,
        "memory_growth": { "note": r.thp_note, "points": growth, "slopes": slopes },
        "idle_threads": idle,
    })
}

// ---------------------------------------------------------------------------
// report.svg
// ---------------------------------------------------------------------------

mod svg {
    use std::error::Error;
    use std::path::Path;

    use plotters::coord::Shift;
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    use super::{Figure, Footprint, Group, Results, SamplesOf, Stats, VARIANTS, us};

    type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
    type Res = Result<(), Box<dyn Error>>;

    const THREAD: RGBColor = RGBColor(31, 119, 180);
    const PROCESS: RGBColor = RGBColor(230, 120, 20);
    const EXEC: RGBColor = RGBColor(130, 130, 130);
    const FONT: &str = "sans-serif";

    pub fn write(path: &Path, r: &Results) -> Res {
        let root = SVGBackend::new(path, (1200, 1500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (latency, rest) = root.split_vertically(640);
        let (growth, idle) = rest.split_vertically(540);
        draw_latency(&root, &latency, r)?;
        draw_growth(&growth, r)?;
        draw_idle(&root, &idle, r)?;
        root.present()?;
        Ok(())
    }

    fn group_color(group: Group) -> RGBColor {
        match group {
            Group::Thread => THREAD,
            Group::Process => PROCESS,
            Group::Exec => EXEC,
        }
    }

    /// The powers of ten around `[lo, hi]`, for a log axis.
    fn decades(lo: f64, hi: f64) -> (f64, f64) {
        (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()))
    }

    fn axis_label(v: f64) -> String {
        if v >= 1.0 { format!("{v:.0}") } else { format!("{v}") }
    }

    /// The legend box every panel draws, at `position`.
    fn legend<'a, CT: CoordTranslate>(
        chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
        position: SeriesLabelPosition,
    ) -> Res {
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 14))
            .draw()?;
        Ok(())
    }

    /// A row label left of the plot, at the pixel where `(x, y)` lands.
    fn row_label(root: &Area, at: (i32, i32), text: &str) -> Res {
        let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        root.draw(&Text::new(text.to_string(), (at.0 - 10, at.1), style))?;
        Ok(())
    }

    /// Round trip of every variant: box p10-p90, median bar, whisker to
    /// p99, circle at the max.
    fn draw_latency(root: &Area, area: &Area, r: &Results) -> Res {
        let rows: Vec<_> = VARIANTS
            .iter()
            .zip(&r.latency)
            .filter_map(|(v, s)| Some((v, Stats::figure(s, Figure::RoundTrip)?)))
            .collect();
        let n = rows.len();
        let (lo, hi) = decades(
            rows.iter().map(|(_, s)| us(s.p10)).fold(f64::INFINITY, f64::min),
            rows.iter().map(|(_, s)| us(s.max)).fold(0.0, f64::max) * 1.5,
        );
        let mut chart = ChartBuilder::on(area)
            .caption(format!("Spawn + join round trip, per variant ({} samples each)", rows[0].1.n), (FONT, 26))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(270)
            .build_cartesian_2d((lo..hi).log_scale(), -0.6..n as f64 - 0.4)?;
        chart
            .configure_mesh()
            .y_labels(0)
            .disable_y_mesh()
            .x_desc("µs, log scale  —  box: p10 to p90, black bar: median (value above), whisker: to p99, circle: max")
            .x_label_formatter(&|v| axis_label(*v))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        for (i, (v, s)) in rows.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let color = group_color(v.group);
            let (p10, median, p90, p99, max) = (us(s.p10), us(s.median), us(s.p90), us(s.p99), us(s.max));
            chart.draw_series([
                PathElement::new(vec![(p90, y), (p99, y)], color.stroke_width(2)),
                PathElement::new(vec![(p99, y - 0.15), (p99, y + 0.15)], color.stroke_width(2)),
            ])?;
            chart.draw_series([Rectangle::new([(p10, y - 0.25), (p90, y + 0.25)], color.mix(0.45).filled())])?;
            chart.draw_series([PathElement::new(vec![(median, y - 0.3), (median, y + 0.3)], BLACK.stroke_width(3))])?;
            chart.draw_series([Circle::new((max, y), 4, color.stroke_width(2))])?;
            let label = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart.draw_series([Text::new(format!("{} µs", super::fmt_us(s.median)), (median, y + 0.32), label)])?;
            row_label(root, chart.backend_coord(&(lo, y)), v.label)?;
        }
        for (name, color) in [("threads", THREAD), ("processes", PROCESS), ("process + exec", EXEC)] {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.mix(0.45).filled()));
        }
        legend(&mut chart, SeriesLabelPosition::LowerLeft)
    }

    /// Median round trip against the parent's touched memory.
    fn draw_growth(area: &Area, r: &Results) -> Res {
        let median = |s: &[super::Sample]| Stats::figure(s, Figure::RoundTrip).map(|s| us(s.median));
        // (legend, THP, colour, samples, label the points: only the growing
        // series, as the flat ones lie on top of each other)
        let series: [(&str, bool, RGBColor, SamplesOf, bool); 4] = [
            ("fork + waitpid, 4 KiB pages", false, RGBColor(200, 40, 40), |p| &p.fork, true),
            ("fork + waitpid, THP", true, RGBColor(240, 150, 40), |p| &p.fork, true),
            ("rawthread spawn + join, 4 KiB pages", false, RGBColor(31, 119, 180), |p| &p.thread, false),
            ("rawthread spawn + join, THP", true, RGBColor(80, 190, 210), |p| &p.thread, false),
        ];
        let values: Vec<f64> = r.growth.iter().flat_map(|p| [median(&p.fork), median(&p.thread)]).flatten().collect();
        let (lo, hi) = decades(
            values.iter().copied().fold(f64::INFINITY, f64::min),
            values.iter().copied().fold(0.0, f64::max) * 1.5,
        );
        // A decade of headroom: the legend goes there, above the curves.
        let hi = hi * 10.0;
        let x_max = r.growth.iter().map(|p| p.size_mib).max().unwrap_or(0).max(1) as f64 * 1.05;
        let mut chart = ChartBuilder::on(area)
            .caption("Cost against the parent's memory: fork copies page tables, a thread shares them", (FONT, 24))
            .margin(15)
            .margin_left(60)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_max, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("memory touched in the parent, MiB")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("median round trip, µs (log scale)")
            .y_label_formatter(&|v| axis_label(*v))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        for (label, thp, color, of, values) in series {
            let points: Vec<(f64, f64)> = r
                .growth
                .iter()
                .filter(|p| p.thp == thp)
                .filter_map(|p| Some((p.size_mib as f64, median(of(p))?)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let slope = super::growth_slope(&r.growth, thp, Figure::RoundTrip, of).unwrap_or(f64::NAN);
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(format!("{label}: {slope:+.1} ns per 4 KiB page"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            if values {
                let above = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
                let below_right = above.pos(Pos::new(HPos::Left, VPos::Top));
                for &(x, y) in &points {
                    let text = format!("{} µs", super::fmt_us((y * 1e3) as u64));
                    // At 0 MiB both fork series start from the same place:
                    // one label, off the axis and below the lines.
                    match (x == 0.0, thp) {
                        (false, _) => chart.draw_series([Text::new(text, (x, y * 1.15), above.clone())])?,
                        (true, false) => {
                            chart.draw_series([Text::new(text, (x_max * 0.01, y / 1.1), below_right.clone())])?
                        }
                        (true, true) => continue,
                    };
                }
            }
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    }

    /// Stacked bars: user and kernel memory per idle thread.
    fn draw_idle(root: &Area, area: &Area, r: &Results) -> Res {
        type Part = (&'static str, RGBColor, fn(&Footprint) -> f64);
        let parts: [Part; 4] = [
            ("user RSS", RGBColor(31, 119, 180), |f| f.user_rss),
            ("KernelStack", RGBColor(230, 120, 20), |f| f.kernel_stack),
            ("PageTables", RGBColor(60, 160, 60), |f| f.page_tables),
            ("SUnreclaim (slab; noisy)", RGBColor(150, 150, 150), |f| f.sunreclaim),
        ];
        let rows = [("rawthread::spawn", &r.idle[0]), ("std::thread::spawn", &r.idle[1])];
        let total = |f: &Footprint| parts.iter().map(|(_, _, of)| of(f).max(0.0)).sum::<f64>();
        let x_max = rows.iter().map(|(_, f)| total(f)).fold(1.0, f64::max) * 1.7;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("Memory per idle thread ({} threads blocked at once)", r.idle[0].threads), (FONT, 24))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(270)
            .build_cartesian_2d(0.0..x_max, -0.6..1.6)?;
        chart
            .configure_mesh()
            .y_labels(0)
            .disable_y_mesh()
            .x_desc("KiB per thread  —  KernelStack, PageTables, SUnreclaim: system-wide /proc/meminfo deltas")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        for (i, (name, f)) in rows.iter().enumerate() {
            let y = (rows.len() - 1 - i) as f64;
            let mut x = 0.0;
            for (_, color, of) in parts {
                let w = of(f).max(0.0);
                chart.draw_series([Rectangle::new([(x, y - 0.3), (x + w, y + 0.3)], color.filled())])?;
                x += w;
            }
            let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
            chart.draw_series([Text::new(format!("{:.1} KiB", total(f)), (x + x_max * 0.01, y), style)])?;
            row_label(root, chart.backend_coord(&(0.0, y)), name)?;
        }
        for (name, color, _) in parts {
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    }
}
