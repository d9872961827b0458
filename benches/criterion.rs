//! The conventional companion of `benches/spawn.rs`: spawn+join of
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
//! cargo bench --bench criterion                 # criterion's own options work after --
//! cargo bench --bench criterion -- --quick      # 0.2 s / 0.5 s, and criterion's quick mode
//! cargo bench --bench criterion -- --pin 1      # pinned, as the spawn bench's --pin
//! ```

use std::hint::black_box;
use std::io;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use criterion::Criterion;
use rawthread::KernelFloor;

fn spawn_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn+join");
    group.bench_function("rawthread::spawn", |b| b.iter(|| rawthread::spawn(|| black_box(1)).join().unwrap()));
    group.bench_function("std::thread::spawn", |b| b.iter(|| std::thread::spawn(|| black_box(1)).join().unwrap()));
    let mut floor = KernelFloor::new().expect("KernelFloor::new");
    let stamp = AtomicU64::new(0);
    group.bench_function("kernel floor", |b| {
        b.iter(|| {
            floor.spawn(&stamp).expect("kernel floor clone");
            floor.join();
        })
    });
    group.finish();
}

/// Pins the calling thread — at startup the only one, so from then on the
/// whole process: threads inherit the mask.
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let pin = args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix("--pin") {
        Some("") => Some(args.get(i + 1).cloned().unwrap_or_default()),
        Some(rest) => rest.strip_prefix('=').map(str::to_string),
        None => None,
    });

    let (warm_up, measurement) = if quick { (0.2, 0.5) } else { (1.0, 2.0) };
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs_f64(warm_up))
        .measurement_time(Duration::from_secs_f64(measurement))
        .without_plots();
    match pin {
        Some(cpu) => {
            let cpu: usize = cpu.parse().unwrap_or_else(|_| {
                eprintln!("criterion bench: --pin needs a CPU number");
                std::process::exit(2)
            });
            if let Err(e) = pin_to(cpu) {
                eprintln!("criterion bench: cannot pin to CPU {cpu}: {e}");
                std::process::exit(2);
            }
            // criterion's own parser would reject --pin, so it is not run:
            // its options (filters, baselines) are not available with --pin.
            println!("criterion bench: pinned to CPU {cpu}; criterion's own options are ignored with --pin");
        }
        None => criterion = criterion.configure_from_args(),
    }
    spawn_join(&mut criterion);
    criterion.final_summary();
}
