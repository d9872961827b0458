//! The OS-course "sum_array" lab, written with rawthread: one large array
//! summed by N threads that share it, then by N processes that each get a
//! copy-on-write copy of it and hand their partial sums back through a
//! `MAP_SHARED` page, for N = 1, 2, 4, 8; then the same with a tiny array,
//! where the time is what making the threads or processes costs.
//!
//!     cargo run --release --example sum_array
//!     cargo run --release --example sum_array -- ELEMENTS   # another size
//!
//! A debug build sums a smaller array by default, so that it too ends in
//! seconds; the first line of the output says which size and build ran.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The exit signal of a `rawthread::process` child.
const PROCESS_EXIT_SIGNAL: (&str, libc::c_int) = ("SIGCHLD", libc::SIGCHLD);

const WORKERS: [usize; 4] = [1, 2, 4, 8];

/// Runs of the empty process, of which the fastest counts.
const EMPTY_RUNS: usize = 5;

/// The tiny array: small enough that summing it should cost far less than
/// making one worker.
const SMALL_LEN: usize = 1024;

/// One `MAP_SHARED | MAP_ANONYMOUS` page, unmapped on drop. memmap2's
/// `MmapMut::map_anon` maps `MAP_PRIVATE`, which a child would copy on its
/// first write, so the parent would never see the sum: hence `libc::mmap`.
struct SharedPage {
    ptr: *mut libc::c_void,
}

impl SharedPage {
    const LEN: usize = 4096;

    fn new() -> io::Result<SharedPage> {
        // SAFETY: a new anonymous mapping at an address the kernel picks
        // overlaps nothing that exists.
        let ptr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED { Err(io::Error::last_os_error()) } else { Ok(SharedPage { ptr }) }
    }

    /// The page as one partial-sum slot per worker.
    fn slots(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned, zero-filled (valid
        // AtomicU64s), LEN bytes long, and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), Self::LEN / size_of::<AtomicU64>()) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no borrow from `slots` outlives `self`.
        unsafe { libc::munmap(self.ptr, Self::LEN) };
    }
}

/// The work itself, the same for all: widen to u64 so no sum overflows.
fn sum(part: &[u32]) -> u64 {
    part.iter().map(|&x| u64::from(x)).sum()
}

/// Splits `array` into `n` slices (the last one shorter if `n` does not
/// divide its length; `max(1)` because `chunks(0)`, which an empty array
/// would ask for, panics).
fn slices(array: &[u32], n: usize) -> std::slice::Chunks<'_, u32> {
    array.chunks(array.len().div_ceil(n).max(1))
}

/// (a) N raw threads in one address space: each borrows its slice of the
/// one array, and returns its partial sum through `join`.
fn by_threads(array: &[u32], n: usize) -> u64 {
    rawthread::scope(|s| {
        let handles: Vec<_> = slices(array, n).map(|part| s.spawn(move || sum(part))).collect();
        handles.into_iter().map(|h| h.join().expect("a summing thread panicked")).sum()
    })
}

/// (b) N processes: each reads its slice in its copy-on-write copy of our
/// memory, and can return a u64 only through the shared page (an exit code
/// carries 8 bits).
fn by_processes(array: &[u32], n: usize, page: &SharedPage) -> io::Result<u64> {
    let slots = page.slots();
    let mut children = Vec::with_capacity(n);
    for (part, slot) in slices(array, n).zip(slots) {
        // The child only sums and stores: no allocation, no lock, nothing
        // that a copy of a multi-threaded process must avoid (src/process.rs).
        children.push(rawthread::process::spawn(move || {
            slot.store(sum(part), Ordering::Relaxed);
            0
        })?);
    }
    for child in &mut children {
        // The child's store precedes its exit, which its reaping waits
        // for: after `wait` the slot holds its sum.
        assert_eq!(child.wait()?.code(), Some(0), "a summing process failed");
    }
    Ok(slots[..children.len()].iter().map(|slot| slot.load(Ordering::Relaxed)).sum())
}

/// One run of `f`, timed, its result checked.
fn timed<T: PartialEq + std::fmt::Debug>(expected: T, f: impl FnOnce() -> io::Result<T>) -> io::Result<Duration> {
    let start = Instant::now();
    let result = f()?;
    let elapsed = start.elapsed();
    assert_eq!(result, expected, "wrong result");
    Ok(elapsed)
}

/// Making and reaping one process that does nothing: what a process costs
/// before any work. The fastest of EMPTY_RUNS: a single run on a shared VM
/// measures the neighbours as much as the work.
fn empty_process() -> io::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..EMPTY_RUNS {
        best = best.min(timed(Some(0), || rawthread::process::spawn(|| 0)?.wait().map(|status| status.code()))?);
    }
    Ok(best)
}

fn show(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// Wall times in `WORKERS` order: threads, then processes.
type Times = [[Duration; WORKERS.len()]; 2];

/// The table for one array: both kinds at every N, each the fastest of
/// `rounds` runs. Returns the time of the one sequential pass too.
fn table(array: &[u32], rounds: usize, page: &SharedPage) -> io::Result<(Duration, Times)> {
    let start = Instant::now();
    let expected = sum(array);
    let one_pass = start.elapsed();
    println!(
        "{} u32 ({} KiB); expected sum, one pass on the main thread: {expected} ({}); fastest of {rounds} runs each",
        array.len(),
        size_of_val(array) / 1024,
        show(one_pass)
    );
    println!("  {:<10} {:>2} {:>11} {:>7}  sum", "kind", "N", "wall time", "vs N=1");
    let mut times: Times = [[Duration::MAX; WORKERS.len()]; 2];
    // Rounds outside, every kind and N inside: a burst of noise from the
    // shared machine, or the first spawn's one-time set-up, then lands on
    // one run of a few of them, not on every run of one.
    for _ in 0..rounds {
        for (i, &n) in WORKERS.iter().enumerate() {
            times[0][i] = times[0][i].min(timed(expected, || Ok(by_threads(array, n)))?);
            times[1][i] = times[1][i].min(timed(expected, || by_processes(array, n, page))?);
        }
    }
    for (kind, name) in ["threads", "processes"].into_iter().enumerate() {
        for (i, &n) in WORKERS.iter().enumerate() {
            let speedup = times[kind][0].as_secs_f64() / times[kind][i].as_secs_f64();
            println!("  {name:<10} {n:>2} {:>11} {speedup:>6.2}x  {expected}", show(times[kind][i]));
        }
    }
    Ok((one_pass, times))
}

pub fn main() -> io::Result<()> {
    // 64 Mi elements (256 MiB) in release; 8 Mi in debug, whose unoptimised
    // loop is many times slower.
    let default_len = if cfg!(debug_assertions) { 8 << 20 } else { 64 << 20 };
    let len = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{arg:?}: {e}")))?,
        None => default_len,
    };
    run(len)
}

/// The whole lab, on an array of `len` elements.
pub fn run(len: usize) -> io::Result<()> {
    let build = if cfg!(debug_assertions) { "debug build (smaller default array)" } else { "release build" };
    let cpus = std::thread::available_parallelism()?;
    println!("sum_array: {build}; available_parallelism: {cpus}\n");

    // Mapped before any child is made, so that every child shares it.
    let page = SharedPage::new()?;

    // Distinct values (the multiplier is odd, so i -> i * m is one-to-one
    // on u32): a slice summed twice or skipped changes the total.
    let array: Vec<u32> = (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761)).collect();
    println!("large array at {:p}:", array.as_ptr());
    let (_, large) = table(&array, 3, &page)?;
    let empty_with_array = empty_process()?;
    // Freed before the small table, so that the processes there do not
    // also pay for copying this array's page tables.
    drop(array);
    let empty_without = empty_process()?;
    println!(
        "an empty process (spawn + wait), fastest of {EMPTY_RUNS}: {} with the large array allocated, {} freed",
        show(empty_with_array),
        show(empty_without)
    );

    let thread_flags: Vec<&str> = rawthread::THREAD_CLONE_FLAGS.iter().map(|(name, _)| *name).collect();
    let thread_mask = rawthread::THREAD_CLONE_FLAGS.iter().fold(0, |mask, (_, flag)| mask | flag);
    let clone3 = rawthread::uses_clone3();
    println!("\nrawthread::uses_clone3() after the first spawn: {clone3:?}");
    let syscall = if clone3 == Some(true) { "clone3" } else { "clone (clone3 refused)" };
    println!("threads:   {syscall}, flags {} ({thread_mask:#x}), no exit signal", thread_flags.join("|"));
    let (signal, signo) = PROCESS_EXIT_SIGNAL;
    if clone3 == Some(true) {
        let process_flags: Vec<&str> = rawthread::PROCESS_CLONE_FLAGS.iter().map(|(name, _)| *name).collect();
        let process_mask = rawthread::PROCESS_CLONE_FLAGS.iter().fold(0, |mask, (_, flag)| mask | flag);
        println!(
            "processes: clone3, flags {} ({process_mask:#x}), exit signal {signal} ({signo})",
            process_flags.join("|")
        );
    } else {
        println!("processes: clone (clone3 refused), flags none, exit signal {signal} ({signo}), no pidfd");
    }

    let small: Vec<u32> = (0..SMALL_LEN).map(|i| (i as u32).wrapping_mul(2_654_435_761)).collect();
    println!("\nsmall array:");
    let (small_pass, small) = table(&small, 20, &page)?;

    let best = |times: &[Duration; WORKERS.len()]| {
        let (i, t) = times.iter().enumerate().min_by_key(|&(_, t)| *t).expect("WORKERS is not empty");
        (WORKERS[i], times[0].as_secs_f64() / t.as_secs_f64())
    };
    let (thread_n, thread_speedup) = best(&large[0]);
    let (process_n, process_speedup) = best(&large[1]);
    let most = WORKERS.len() - 1;
    println!(
        "
What to notice:
* The threads share the array: each summed its slice of the one array
  above in place, with no copy (CLONE_VM: one address space, one set of
  page tables), and handed its sum back through join.
* The processes (no CLONE_VM) each run in a copy-on-write copy of the
  address space: a page is copied only when someone writes it, and these
  children only read. What a child writes to its own memory stays in its
  copy, so each sum came back through the MAP_SHARED page mapped before
  the children were made (an exit code carries only 8 bits).
* What the kernel does copy for each child is the page tables, of the
  whole address space, the large array included, not only of the child's
  slice: an empty process took {} with the array allocated, {} once
  it was freed. A thread copies none.
* Speedup stops at the number of CPUs (available_parallelism: {cpus}): at
  most {cpus} workers run at any instant, more take turns on the same CPUs,
  so a gain past N={cpus} is not parallelism (on a shared VM, it is noise).
  Best speedup over N=1 on the large array: threads {thread_speedup:.2}x at N={thread_n},
  processes {process_speedup:.2}x at N={process_n}.
* On the small array the summing itself took {} on one thread, so the
  times are mostly making and reaping the workers: at N={}, threads {},
  processes {}.",
        show(empty_with_array),
        show(empty_without),
        show(small_pass),
        WORKERS[most],
        show(small[0][most]),
        show(small[1][most])
    );
    Ok(())
}
