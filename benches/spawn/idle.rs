//! Part 3: memory per idle thread

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rawthread::PoolLimits;

use crate::machine::{field_kib, meminfo_kib, rss_bytes};

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
pub(crate) struct Footprint {
    pub(crate) threads: usize,
    /// Resident user memory of this process (`/proc/self/statm`).
    pub(crate) user_rss: f64,
    /// System-wide `KernelStack` (`/proc/meminfo`).
    pub(crate) kernel_stack: f64,
    /// This process's page tables (`VmPTE` in `/proc/self/status`): exact,
    /// unlike the system-wide `PageTables`, which is kept for reference.
    pub(crate) page_tables: f64,
    pub(crate) page_tables_system: f64,
    /// System-wide unreclaimable slab (`SUnreclaim`): task structs and the
    /// like, and the noisiest figure.
    pub(crate) sunreclaim: f64,
}

impl Footprint {
    pub(crate) fn total(&self) -> f64 {
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

pub(crate) fn idle_rawthread(n: usize) -> Footprint {
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

pub(crate) fn idle_std(n: usize) -> Footprint {
    // glibc's stack cache keeps up to 40 MiB of stacks of earlier threads,
    // which no API empties: the first ~20 threads reuse one (a few % here).
    idle_footprint(
        n,
        |gate| std::thread::Builder::new().spawn(move || gate.wait()),
        |h| h.join().expect("idle std thread panicked"),
    )
}

/// The median of each field over repetitions.
pub(crate) fn median_footprint(runs: &[Footprint]) -> Footprint {
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
