//! The conventional companion of `benches/spawn/`: spawn+join of
//! rawthread, `std::thread` and the kernel floor, measured by criterion,
//! whose statistics (bootstrap confidence intervals, comparison with the
//! last run saved under `target/criterion/`) complement the interleaved
//! medians of the spawn benchmark. Criterion estimates the mean time per
//! iteration, which bursts of noise on a shared VM pull up; the medians of
//! the spawn benchmark are the steadier figure there.
//!
//! Short warm-up and measurement (1 s / 2 s each) keep `cargo bench` as a
//! whole at about a minute; no plots, no HTML.
//!
//! ```text
//! cargo bench --bench criterion              # criterion's own options work after --
//! cargo bench --bench criterion -- --quick   # criterion's quick mode
//! taskset -c 1 cargo bench --bench criterion # pinned to one CPU
//! ```

use std::hint::black_box;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use criterion::Criterion;
use rawthread::bench::KernelFloor;

/// Where the kernel floor's thread stamps the clock.
static STAMP: AtomicU64 = AtomicU64::new(0);

fn spawn_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn+join");
    group.bench_function("rawthread::spawn", |b| b.iter(|| rawthread::spawn(|| black_box(1)).join().unwrap()));
    group.bench_function("std::thread::spawn", |b| b.iter(|| std::thread::spawn(|| black_box(1)).join().unwrap()));
    let mut floor = KernelFloor::new().expect("KernelFloor::new");
    group.bench_function("kernel floor", |b| {
        b.iter(|| {
            // SAFETY: the benchmark sends no signal, and the floor thread
            // does not fault, so no handler runs on its borrowed TLS.
            unsafe { floor.spawn(&STAMP) }.expect("kernel floor clone");
            floor.join();
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
        .configure_from_args();
    spawn_join(&mut criterion);
    criterion.final_summary();
}
