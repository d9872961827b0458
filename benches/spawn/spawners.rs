//! Part 6: spawners at once. `n` std threads each spawn and join an empty
//! closure in a loop for a fixed time; the rate of all of them together
//! shows what the spawn paths share: rawthread's region pool and its
//! locks, glibc's stack cache and thread-list lock, the kernel's
//! `tasklist_lock` and the mm's locks.

use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::progress::Progress;

pub(crate) const SPAWNERS: [usize; 4] = [1, 2, 4, 8];

/// (id, label, one spawn+join).
pub(crate) const SPAWNER_VARIANTS: [(&str, &str, fn()); 3] = [
    ("rawthread", "rawthread::spawn + join", || rawthread::spawn(|| ()).join().expect("rawthread child panicked")),
    ("pthread", "pthread_create + join", pthread_once),
    ("std_thread", "std::thread::spawn + join", || std::thread::spawn(|| ()).join().expect("std child panicked")),
];

extern "C" fn empty(_: *mut libc::c_void) -> *mut libc::c_void {
    ptr::null_mut()
}

fn pthread_once() {
    let mut thread: libc::pthread_t = 0;
    // SAFETY: default attributes; `empty` is a valid start routine.
    let rc = unsafe { libc::pthread_create(&mut thread, ptr::null(), empty, ptr::null_mut()) };
    assert_eq!(rc, 0, "pthread_create: {}", std::io::Error::from_raw_os_error(rc));
    // SAFETY: a joinable thread we made, joined once.
    let rc = unsafe { libc::pthread_join(thread, ptr::null_mut()) };
    assert_eq!(rc, 0, "pthread_join: {}", std::io::Error::from_raw_os_error(rc));
}

/// One measurement: spawns+joins per second of all spawners together.
fn rate(spawners: usize, run: fn(), time: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(spawners + 1));
    let threads: Vec<_> = (0..spawners)
        .map(|_| {
            let (stop, barrier) = (stop.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut count: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    run();
                    count += 1;
                }
                count
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(time);
    stop.store(true, Ordering::Relaxed);
    let total: u64 = threads.into_iter().map(|t| t.join().expect("spawner panicked")).sum();
    // Until the last spawner stopped: its last spawn+join is counted.
    total as f64 / start.elapsed().as_secs_f64()
}

/// `rates[v][s]`: the median over `passes` of variant `v`'s rate with
/// `SPAWNERS[s]` spawners, each pass `time` long; the variants take turns.
pub(crate) fn measure_spawners(time: Duration, passes: usize, progress: &Progress) -> Vec<Vec<f64>> {
    let mut runs = vec![vec![Vec::new(); SPAWNERS.len()]; SPAWNER_VARIANTS.len()];
    for pass in 0..passes {
        for (s, &spawners) in SPAWNERS.iter().enumerate() {
            progress.show(format_args!("spawners at once: pass {}/{passes}, {spawners} spawners", pass + 1));
            for k in 0..SPAWNER_VARIANTS.len() {
                let v = (pass + s + k) % SPAWNER_VARIANTS.len();
                runs[v][s].push(rate(spawners, SPAWNER_VARIANTS[v].2, time));
            }
        }
    }
    runs.into_iter()
        .map(|per| {
            per.into_iter()
                .map(|mut r| {
                    r.sort_by(f64::total_cmp);
                    r[(r.len() - 1) / 2]
                })
                .collect()
        })
        .collect()
}
