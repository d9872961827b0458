//! Options and plans

const USAGE: &str = "\
usage: cargo bench --bench spawn -- [--quick] [--pin CPU]
  --quick    a few seconds: fewer samples, memory sizes 0 and 64 MiB, 100 idle threads,
             live threads capped at 300
  --pin CPU  pin the whole process to CPU (sched_setaffinity; threads and children inherit it)
Other arguments (such as the --bench that cargo passes) are ignored.";

pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) pin: Option<usize>,
    /// `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    /// then only a smoke run is wanted.
    pub(crate) bench_flag: bool,
}

pub(crate) fn parse_args(args: &[String]) -> Options {
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
pub(crate) struct Plan {
    /// Untimed runs of each variant first: the first spawns of each kind
    /// fill caches and pools (rawthread's region pool, glibc's stack cache)
    /// and fault in code.
    pub(crate) warmup: usize,
    /// Latency: `rounds` times, every variant runs `block` samples in a row.
    pub(crate) rounds: usize,
    pub(crate) block: usize,
    /// Growth: the parent's memory sizes; sweeps over them all; and in each
    /// sweep, at each size, rounds of a block of fork and a block of thread
    /// samples.
    pub(crate) growth_mib: &'static [usize],
    pub(crate) growth_passes: usize,
    pub(crate) growth_rounds: usize,
    pub(crate) growth_block: usize,
    /// Idle memory: threads held at once, and repetitions per variant.
    pub(crate) idle_threads: usize,
    pub(crate) idle_reps: usize,
    /// Under load: rounds and block, as for the latency.
    pub(crate) load_rounds: usize,
    pub(crate) load_block: usize,
    /// Phases: rounds and block of armed samples.
    pub(crate) phase_rounds: usize,
    pub(crate) phase_block: usize,
    /// Spawners at once: how long each measurement runs, and how many
    /// passes (the median is reported).
    pub(crate) spawner_ms: u64,
    pub(crate) spawner_passes: usize,
    /// Threads alive at once: where each child stops if nothing failed.
    pub(crate) live_cap: usize,
    /// Stack burst: fresh processes per variant (the median is reported).
    pub(crate) burst_runs: usize,
}

pub(crate) const FULL: Plan = Plan {
    warmup: 50,
    rounds: 500,
    block: 20,
    growth_mib: &[0, 64, 256, 1024],
    growth_passes: 5,
    growth_rounds: 2,
    growth_block: 4,
    idle_threads: 1000,
    idle_reps: 5,
    load_rounds: 500,
    load_block: 20,
    phase_rounds: 100,
    phase_block: 10,
    spawner_ms: 100,
    spawner_passes: 3,
    live_cap: 40_000,
    burst_runs: 5,
};

pub(crate) const QUICK: Plan = Plan {
    warmup: 5,
    rounds: 20,
    block: 10,
    growth_mib: &[0, 64],
    growth_passes: 2,
    growth_rounds: 2,
    growth_block: 3,
    idle_threads: 100,
    idle_reps: 1,
    load_rounds: 10,
    load_block: 10,
    phase_rounds: 10,
    phase_block: 5,
    spawner_ms: 30,
    spawner_passes: 1,
    live_cap: 300,
    burst_runs: 1,
};
