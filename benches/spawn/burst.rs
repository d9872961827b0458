//! Part 8: stack memory kept after a burst of big-stack threads.
//! [`THREADS`] threads alive at once, each touching [`TOUCH`] of its
//! [`STACK`] stack, then all joined: how much of that memory the process
//! still holds afterwards, for rawthread, `std::thread` and
//! `pthread_create` (glibc gives a cached stack's dirty pages back with
//! `MADV_DONTNEED` when its thread exits).
//!
//! Each run is a fresh child process (this executable, role `burst:<id>`,
//! see `load.rs`), so that no variant's leftovers (a pool, a stack cache,
//! malloc arenas) count against another. The sizes are the same in every
//! mode: one run takes milliseconds, and the figures must be comparable
//! with the target (RSS within 4 MiB of where it started).

use std::io;
use std::ptr;
use std::sync::Barrier;

use crate::load::child_command;

pub(crate) const THREADS: usize = 16;
pub(crate) const STACK: usize = 2 << 20;
pub(crate) const TOUCH: usize = 1536 << 10;

/// The variants: (id, label).
pub(crate) const BURST_VARIANTS: [(&str, &str); 3] =
    [("rawthread", "rawthread::spawn"), ("std_thread", "std::thread::spawn"), ("pthread", "pthread_create")];

/// One variant's medians over its runs, in KiB of RSS.
pub(crate) struct Burst {
    pub(crate) id: &'static str,
    pub(crate) label: &'static str,
    pub(crate) runs: usize,
    /// RSS before the burst (after one spawn+join that touched nothing).
    pub(crate) before_kib: f64,
    /// Growth while every thread is alive, its stack touched.
    pub(crate) during_kib: f64,
    /// Growth once every thread has been joined: the memory kept.
    pub(crate) after_kib: f64,
}

/// Runs `runs` fresh children of each variant.
pub(crate) fn measure_burst(runs: usize, progress: &crate::progress::Progress) -> Vec<Burst> {
    BURST_VARIANTS
        .iter()
        .map(|&(id, label)| {
            progress.show(format_args!("stack burst: {label}, {runs} run(s)"));
            let mut seen: [Vec<f64>; 3] = Default::default();
            for _ in 0..runs {
                let [before, peak, after] = run_child(id).unwrap_or_else(|e| panic!("stack burst, {label}: {e}"));
                for (list, value) in seen.iter_mut().zip([before, peak - before, after - before]) {
                    list.push(value);
                }
            }
            let [before_kib, during_kib, after_kib] = seen.map(|mut v| median(&mut v));
            Burst { id, label, runs, before_kib, during_kib, after_kib }
        })
        .collect()
}

/// One child's RSS before, at the peak and after, KiB.
fn run_child(id: &str) -> io::Result<[f64; 3]> {
    let out = child_command(&format!("burst:{id}"))?.output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let numbers: Vec<f64> = text.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    match (out.status.success(), &numbers[..]) {
        (true, &[before, peak, after]) => Ok([before, peak, after]),
        _ => Err(io::Error::other(format!(
            "the child failed: {}; stderr: {:?}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ---------------------------------------------------------------------------
// The child
// ---------------------------------------------------------------------------

/// Every thread and the child's main thread meet here twice: once every
/// stack is touched (the peak is read), and to let the threads go.
static MEET: Barrier = Barrier::new(THREADS + 1);

/// Dirties `TOUCH` bytes of the calling thread's stack.
#[inline(never)]
fn touch_stack() {
    let mut buf = [0u8; TOUCH];
    std::hint::black_box(&mut buf);
}

/// A thread of the burst: touches its stack, then waits with the others.
fn body() {
    touch_stack();
    MEET.wait();
    MEET.wait();
}

extern "C" fn pthread_body(_: *mut libc::c_void) -> *mut libc::c_void {
    body();
    ptr::null_mut()
}

/// Resident memory of this process, KiB (`/proc/self/statm`).
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm's resident field");
    pages * crate::PAGE as u64 / 1024
}

/// Starts one thread of `id`, a thread of the burst or (`burst` false)
/// one that does nothing; the returned closure joins it.
fn spawn(id: &str, burst: bool) -> Box<dyn FnOnce()> {
    let f: fn() = if burst { body } else { || () };
    match id {
        "rawthread" => {
            let h = rawthread::Builder::new().stack_size(STACK).spawn(f).expect("rawthread spawn");
            Box::new(move || h.join().expect("rawthread join"))
        }
        "std_thread" => {
            let h = std::thread::Builder::new().stack_size(STACK).spawn(f).expect("std spawn");
            Box::new(move || h.join().expect("std join"))
        }
        "pthread" => {
            let start: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void =
                if burst { pthread_body } else { pthread_nothing };
            // SAFETY: a zeroed attr is initialised by pthread_attr_init
            // before use, and destroyed once the create is done; a valid
            // thread out-parameter and start routine.
            let thread = unsafe {
                let mut attr: libc::pthread_attr_t = std::mem::zeroed();
                let mut thread: libc::pthread_t = 0;
                libc::pthread_attr_init(&mut attr);
                libc::pthread_attr_setstacksize(&mut attr, STACK);
                let rc = libc::pthread_create(&mut thread, &attr, start, ptr::null_mut());
                libc::pthread_attr_destroy(&mut attr);
                assert_eq!(rc, 0, "pthread_create: {}", io::Error::from_raw_os_error(rc));
                thread
            };
            Box::new(move || {
                // SAFETY: a joinable thread we created, joined once.
                let rc = unsafe { libc::pthread_join(thread, ptr::null_mut()) };
                assert_eq!(rc, 0, "pthread_join: {}", io::Error::from_raw_os_error(rc));
            })
        }
        other => panic!("unknown variant {other:?}"),
    }
}

extern "C" fn pthread_nothing(_: *mut libc::c_void) -> *mut libc::c_void {
    ptr::null_mut()
}

/// `id`: the variant. Prints RSS before, at the peak and after, KiB.
pub(crate) fn child(id: &str) -> ! {
    // One spawn+join first, touching nothing: what a first spawn sets up
    // once (rawthread's probe and census, std's thread bookkeeping) is
    // not the burst's.
    spawn(id, false)();
    let before = rss_kib();
    let joins: Vec<_> = (0..THREADS).map(|_| spawn(id, true)).collect();
    MEET.wait();
    let peak = rss_kib();
    MEET.wait();
    for join in joins {
        join();
    }
    let after = rss_kib();
    println!("{before} {peak} {after}");
    std::process::exit(0)
}
