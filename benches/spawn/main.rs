//! The spawn benchmark: every way Linux can start a unit of execution,
//! measured side by side in one process.
//!
//! ```text
//! cargo bench                            # this (under two minutes) and benches/criterion.rs
//! cargo bench --bench spawn -- --quick   # a few seconds: CI smoke
//! cargo bench --bench spawn -- --pin 1   # the whole process (and so every child) on CPU 1
//! ```
//!
//! Eight parts:
//!
//! 1. **Latency** of twelve variants — rawthread (also with a 64 KiB stack,
//!    and with a sleep-at-once join), two kernel floors (with rawthread's
//!    join, a plain futex sleep): the bare clone, and one that also does
//!    what the kernel must do for any glibc thread (a TLS pointer, rseq
//!    and robust-list registration), `std::thread`,
//!    `pthread_create`, and the process makers `fork`,
//!    vfork, `clone(SIGCHLD)`, `clone3` + `CLONE_PIDFD` and `posix_spawn`.
//!    Each sample gives three figures, all from `rawthread::bench::now_ns()`
//!    (CLOCK_MONOTONIC, one clock for parent and child):
//!
//!    ```text
//!    parent:  t0 = now  spawn(...)  t1 = now   join/wait(...)  t2 = now
//!    child:                 tc = now (first thing it runs), stored where the parent can read it
//!
//!    round trip = t2 - t0     child start = tc - t0     call return = t1 - t0
//!    ```
//!
//!    Beside them: the CPU time of the whole process (user + system,
//!    `getrusage` around every block of samples; for processes, with the
//!    reaped children's) per spawn+join; and, timed alone, the one step
//!    rawthread adds that no other variant has: a thread put on glibc's
//!    thread list and taken off it.
//!
//!    The variants are measured in blocks of samples, round-robin, over many
//!    rounds, in a new order each round, each block after one unrecorded
//!    sample: on a shared, noisy VM a burst of noise then lands on every
//!    variant alike instead of on whichever happened to run at that
//!    moment, what one variant leaves behind falls on a different one each
//!    round, and the medians stay comparable.
//! 2. **Growth with the parent's memory**: `fork` copies the parent's page
//!    tables, so it grows with the parent's resident memory; a thread shares
//!    them and stays flat. Measured at several sizes of touched memory, with
//!    and without transparent huge pages.
//! 3. **Memory per idle thread**, user (RSS) and kernel (kernel stack, page
//!    tables, slab), for rawthread and `std::thread`.
//! 4. **Under load**: the thread variants again, interleaved the same way,
//!    with (CPUs - 1) CPU-bound competitor processes running (this
//!    executable re-run as a spinner, `load.rs`), started before and killed
//!    after.
//! 5. **Where the time goes**: armed samples, in which rawthread (built
//!    with the `bench` feature), the kernel floors and the benchmark stamp
//!    the clock at the boundaries of one spawn+join
//!    (`rawthread::bench::Phase`); the median of every phase.
//! 6. **Spawners at once**: 1, 2, 4 and 8 threads spawning and joining
//!    concurrently, spawns+joins per second in all.
//! 7. **Most threads alive at once** (64 KiB stacks) before the first error,
//!    each variant in a child process, and what stopped it; on the way up,
//!    with 0, 1,000 and 10,000 threads alive, the mappings per live thread
//!    and the cost of `fork` + `waitpid`.
//! 8. **Stack memory kept after a burst**: 16 threads alive at once, each
//!    touching 1.5 MiB of its 2 MiB stack, then all joined: the growth of
//!    RSS during and after, for rawthread, `std::thread` and
//!    `pthread_create`, each in fresh child processes.
//!
//! Results go to the terminal, to `target/spawn-bench/results.json` and to
//! `target/spawn-bench/report.svg`. Nothing here asserts a timing: the
//! numbers are reported, never judged by a test.

mod burst;
mod first;
mod growth;
mod idle;
mod live;
mod load;
mod machine;
mod mapping;
mod options;
mod phases;
mod progress;
mod report;
mod spawners;
mod stats;
mod svg;
mod variants;

use std::error::Error;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use burst::{Burst, measure_burst};
use growth::{GrowthPoint, measure_growth};
use idle::{Footprint, idle_rawthread, idle_std, median_footprint};
use live::{Live, measure_live};
use load::Competitors;
use machine::{Machine, machine, pin_to, target_dir, utc_now};
use options::{FULL, QUICK, parse_args};
use phases::{Timeline, timeline};
use progress::Progress;
use report::{
    header, report_burst, report_growth, report_idle, report_latency, report_live, report_loaded, report_phases,
    report_spawners, results_json, summary,
};
use spawners::measure_spawners;
use variants::{Ctx, LOADED, Section, VARIANTS, measure_latency, measure_phases};

const PAGE: usize = 4096;
/// How many times the thread-list step is timed.
const THREAD_LIST_PAIRS: u32 = 100_000;
/// How many fresh processes time their first spawn (first.rs).
const FIRST_SPAWN_PROCESSES: usize = 31;
const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

/// The measurements under load.
struct Loaded {
    competitors: usize,
    section: Section,
    /// /proc/loadavg while the competitors ran, at the end.
    load: String,
}

struct Results {
    latency: Section,
    /// `None` on a single CPU, where no CPU is left to compete for.
    loaded: Option<Loaded>,
    /// Why there is no loaded section, if there is none.
    loaded_note: String,
    phases: Vec<Timeline>,
    /// `spawners[v][s]`: spawns+joins per second (see spawners.rs).
    spawners: Vec<Vec<f64>>,
    live: Vec<Live>,
    /// ns per put-on + take-off of glibc's thread list (rawthread::bench).
    thread_list_ns: f64,
    /// The first and a later spawn+join of a fresh process, ns (first.rs).
    first_spawn_ns: (f64, f64),
    growth: Vec<GrowthPoint>,
    thp_note: String,
    idle: [Footprint; 2],
    /// Stack burst, one per `burst::BURST_VARIANTS`.
    burst: Vec<Burst>,
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
    // A child of the benchmark (a competitor, a live-threads counter, a
    // first spawn, a stack burst).
    if let Ok(role) = std::env::var(load::ROLE) {
        load::child_main(&role);
    }
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

    let mut ctx = Ctx::new();
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

    let all: Vec<usize> = (0..VARIANTS.len()).collect();
    let (latency, latency_time) =
        timed(|| measure_latency(&mut ctx, &all, plan.rounds, plan.block, "latency", &progress));
    let thread_list_ns = rawthread::bench::thread_list_cost(THREAD_LIST_PAIRS).expect("thread_list_cost");
    progress.show(format_args!("the first spawn, in {FIRST_SPAWN_PROCESSES} fresh processes"));
    let first_spawn_ns = first::measure(FIRST_SPAWN_PROCESSES).expect("first spawn");

    let (thp_series, thp_note) = match meta.machine.thp.as_deref() {
        Some("never") => (vec![false], "THP is `never` on this machine: the THP series is skipped.".to_string()),
        None => (vec![false], "no transparent huge pages on this kernel: the THP series is skipped.".to_string()),
        Some(mode) => (
            vec![false, true],
            format!("THP mode `{mode}`: MADV_NOHUGEPAGE on the buffer for 4 KiB pages, MADV_HUGEPAGE for THP."),
        ),
    };
    let (growth, growth_time) = timed(|| measure_growth(&mut ctx, plan, &thp_series, &progress));

    let ((loaded, loaded_note), loaded_time) = timed(|| {
        let n = meta.machine.cpus_usable.saturating_sub(1);
        if n == 0 {
            return (None, "one usable CPU: no CPU is left for a competitor, so there is no loaded run".to_string());
        }
        progress.show(format_args!("under load: starting {n} competitor(s)"));
        let competitors = match Competitors::start(n) {
            Ok(c) => c,
            Err(e) => return (None, format!("could not start the competitors: {e}")),
        };
        // Untimed: let the scheduler place the competitors first.
        for &v in &LOADED {
            for _ in 0..plan.warmup {
                (VARIANTS[v].run)(&mut ctx);
            }
        }
        let section = measure_latency(&mut ctx, &LOADED, plan.load_rounds, plan.load_block, "under load", &progress);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load = load.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        let competitors_n = competitors.len();
        drop(competitors);
        (Some(Loaded { competitors: competitors_n, section, load }), String::new())
    });

    let (phases, phase_time) = timed(|| {
        let stamps = measure_phases(&mut ctx, &LOADED, plan.phase_rounds, plan.phase_block, &progress);
        LOADED.iter().zip(&stamps).map(|(&v, s)| timeline(v, s)).collect::<Vec<_>>()
    });
    let (spawners, spawner_time) =
        timed(|| measure_spawners(Duration::from_millis(plan.spawner_ms), plan.spawner_passes, &progress));

    let (idle, idle_time) = timed(|| {
        let mut runs = [Vec::new(), Vec::new()];
        for run in 0..plan.idle_reps {
            progress.show(format_args!("idle threads: run {}/{}", run + 1, plan.idle_reps));
            runs[0].push(idle_rawthread(plan.idle_threads));
            runs[1].push(idle_std(plan.idle_threads));
        }
        runs.map(|runs| median_footprint(&runs))
    });
    let (live, live_time) = timed(|| measure_live(plan.live_cap, &progress));
    let (burst, burst_time) = timed(|| measure_burst(plan.burst_runs, &progress));
    progress.clear();
    let results = Results {
        latency,
        loaded,
        loaded_note,
        phases,
        spawners,
        live,
        thread_list_ns,
        first_spawn_ns,
        growth,
        thp_note,
        idle,
        burst,
    };

    let mut out = String::new();
    report_latency(&mut out, &results, plan);
    report_growth(&mut out, &results);
    report_idle(&mut out, &results, plan);
    report_loaded(&mut out, &results, plan);
    report_phases(&mut out, &results, plan);
    report_spawners(&mut out, &results, plan);
    report_live(&mut out, &results, plan);
    report_burst(&mut out, &results);
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
        "Total time: {:.1} s (latency {:.1} s, memory growth {:.1} s, idle threads {:.1} s, under load {:.1} s,\n            \
         phases {:.1} s, spawners at once {:.1} s, threads alive at once {:.1} s, stack burst {:.1} s)",
        started.elapsed().as_secs_f64(),
        latency_time.as_secs_f64(),
        growth_time.as_secs_f64(),
        idle_time.as_secs_f64(),
        loaded_time.as_secs_f64(),
        phase_time.as_secs_f64(),
        spawner_time.as_secs_f64(),
        live_time.as_secs_f64(),
        burst_time.as_secs_f64()
    );
    print!("{out}");
}
