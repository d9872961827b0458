//! Terminal report

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::burst::{STACK, THREADS, TOUCH};
use crate::growth::{GrowthPoint, SamplesOf, growth_slope};
use crate::live::{CHECKPOINTS, FORKS, Live};
use crate::options::Plan;
use crate::phases::step_label;
use crate::spawners::{SPAWNER_VARIANTS, SPAWNERS};
use crate::stats::{FIGURES, Figure, Sample, Stats, fmt_us, us};
use crate::variants::{
    FLOOR, FLOOR_DUTIES, Group, PTHREAD, RAWTHREAD, RAWTHREAD_SLEEP, STD, Section, VARIANTS, block_medians,
};
use crate::{FIRST_SPAWN_PROCESSES, Meta, Results, THREAD_LIST_PAIRS};

/// The issue-3 goal: a rawthread spawn+join at most this fraction of a
/// `std::thread` one (medians).
const GOAL_RATIO: f64 = 0.65;

pub(crate) fn header(meta: &Meta, plan: &Plan) -> String {
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
        "  method    {} rounds; in each, every variant takes {} samples in a row (after one unrecorded; a new order each round)",
        plan.rounds, plan.block
    );
    let _ = writeln!(
        out,
        "            under load (part 4): {} CPU-bound competitor process(es), CPUs - 1; {} rounds of {}",
        m.cpus_usable.saturating_sub(1),
        plan.load_rounds,
        plan.load_block
    );
    let _ = writeln!(out);
    out
}

/// The tables of one section, one per figure; the round trip's with the
/// CPU time per spawn+join beside it.
fn latency_tables(out: &mut String, section: &Section, figures: &[Figure]) {
    for &figure in figures {
        let median_of = |v: usize| Stats::figure(section.of(v), figure).map(|s| s.median as f64);
        let (base, pthread, floor) = (median_of(RAWTHREAD), median_of(PTHREAD), median_of(FLOOR));
        let floor_duties = median_of(FLOOR_DUTIES);
        let cpu = figure == Figure::RoundTrip;
        let _ = writeln!(
            out,
            "\n{}, µs\n{:<38}{:>6}{:>9}{:>9}{:>9}{:>9}{:>9}{:>11}{:>9}{:>8}{:>9}",
            figure.title(),
            "",
            "n",
            "median",
            "p90",
            "p99",
            "max",
            if cpu { "CPU/op" } else { "" },
            "/rawthread",
            "/pthread",
            "/floor",
            "/floor+"
        );
        let mut group = None;
        for (v, samples) in section.rows() {
            let variant = &VARIANTS[v];
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
            let cpu_col =
                if cpu { section.cpu_per_op(v).map_or("-".into(), |c| fmt_us(c as u64)) } else { String::new() };
            let _ = writeln!(
                out,
                "   {:<35}{:>6}{:>9}{:>9}{:>9}{:>9}{:>9}{:>11}{:>9}{:>8}{:>9}",
                variant.label,
                s.n,
                fmt_us(s.median),
                fmt_us(s.p90),
                fmt_us(s.p99),
                fmt_us(s.max),
                cpu_col,
                ratio(base),
                ratio(pthread),
                ratio(floor),
                ratio(floor_duties)
            );
        }
    }
}

pub(crate) fn report_latency(out: &mut String, r: &Results, plan: &Plan) {
    let _ = writeln!(out, "1. Latency, µs ({} samples per variant; ratios are of medians)", plan.rounds * plan.block);
    let _ = writeln!(
        out,
        "   CPU/op: user + system CPU time of the whole process (every thread; for processes, with the reaped\n   \
         children's) per spawn+join, from getrusage around every block of samples"
    );
    let _ = writeln!(
        out,
        "   /floor: against the bare clone; /floor+: against the floor that also does a glibc thread's kernel\n   \
         duties (CLONE_SETTLS, rseq, robust list), what any real thread must cost"
    );
    latency_tables(out, &r.latency, &FIGURES);
    let _ = writeln!(out, "\nNotes on the variants:");
    for v in &VARIANTS {
        let _ = writeln!(out, "  {}", v.label);
        wrap(out, v.note, "      ", 96);
    }
    let _ = writeln!(out, "  (b) is timed to the first line of the child's own code (its closure or function).");
    let share = thread_list_share(r);
    let _ = writeln!(
        out,
        "\nglibc's thread list: putting a thread on it at spawn and taking it off at exit, both under glibc's\n\
         lock, costs {:.0} ns a thread ({:.2}% of rawthread's spawn+join median; {THREAD_LIST_PAIRS} pairs timed alone).",
        r.thread_list_ns,
        share * 100.0
    );
    let (first, later) = r.first_spawn_ns;
    let _ = writeln!(
        out,
        "The first spawn+join of a process: {:.0} us, a later one {:.0} us (medians of {FIRST_SPAWN_PROCESSES} fresh \
         processes):\nonce per process, {:.0} us for the probe (rawthread's one pthread) and the twin census.",
        first / 1e3,
        later / 1e3,
        (first - later) / 1e3
    );
    let _ = writeln!(out);
}

pub(crate) fn report_loaded(out: &mut String, r: &Results, plan: &Plan) {
    let Some(loaded) = &r.loaded else {
        let _ = writeln!(out, "4. Under load: not measured: {}\n", r.loaded_note);
        return;
    };
    let _ = writeln!(
        out,
        "4. Under load: {} CPU-bound competitor process(es) running, one per CPU but ours; µs ({} samples per\n   \
         variant, interleaved as in 1; load average at the end: {})",
        loaded.competitors,
        plan.load_rounds * plan.load_block,
        loaded.load
    );
    latency_tables(out, &loaded.section, &[Figure::RoundTrip, Figure::ChildStart]);
    let _ = writeln!(out);
}

pub(crate) fn report_phases(out: &mut String, r: &Results, plan: &Plan) {
    let _ = writeln!(
        out,
        "5. Where the time goes: one spawn+join, median per phase, µs ({} armed samples per variant, idle)",
        plan.phase_rounds * plan.phase_block
    );
    let _ = writeln!(
        out,
        "   Each phase runs from one stamped boundary to the next; \"at\": the median time from the spawn call to\n   \
         the phase's end. Medians of phases need not add up to the median round trip."
    );
    for t in &r.phases {
        let _ = writeln!(out, "\n {}", VARIANTS[t.variant].label);
        for step in &t.steps {
            let _ = writeln!(
                out,
                "   {:<58}{:>9}   at {:>8}",
                step_label(step.from, step.to),
                fmt_us(step.median_ns),
                fmt_us(step.at_ns)
            );
        }
        let sum: u64 = t.steps.iter().filter(|s| !s.beside).map(|s| s.median_ns).sum();
        let _ = writeln!(
            out,
            "   {:<58}{:>9}   (sum of the phases' medians {})",
            "round trip (median, armed samples)",
            fmt_us(t.round_trip_ns),
            fmt_us(sum)
        );
    }
    let _ = writeln!(out);
}

pub(crate) fn report_spawners(out: &mut String, r: &Results, plan: &Plan) {
    let _ = writeln!(
        out,
        "6. Spawners at once: spawns+joins per second, all spawners together (each a std thread spawning and\n   \
         joining an empty closure in a loop for {} ms; median of {} pass(es))",
        plan.spawner_ms, plan.spawner_passes
    );
    let _ = write!(out, "   {:<30}", "spawners:");
    for n in SPAWNERS {
        let _ = write!(out, "{n:>10}");
    }
    let _ = writeln!(out, "{:>14}", "8 vs 1");
    for ((_, label, _), rates) in SPAWNER_VARIANTS.iter().zip(&r.spawners) {
        let _ = write!(out, "   {label:<30}");
        for rate in rates {
            let _ = write!(out, "{rate:>10.0}");
        }
        let _ = writeln!(out, "{:>13.2}x", rates[rates.len() - 1] / rates[0]);
    }
    let _ = writeln!(out);
}

pub(crate) fn report_live(out: &mut String, r: &Results, plan: &Plan) {
    let _ = writeln!(
        out,
        "7. Most threads alive at once, 64 KiB stacks, before the first error (each in a child process; cap {})",
        plan.live_cap
    );
    for l in &r.live {
        let _ = writeln!(out, "   {:<32}{:>8}   {:.1} s", l.label, l.alive, l.seconds);
        wrap(out, &format!("stopped by: {}", l.stopped_by), "      ", 100);
    }
    let _ = writeln!(out, "   on the way up: mappings per live thread, and fork+waitpid (median of {FORKS}), ms");
    let _ = write!(out, "   {:<32}", "threads alive:");
    for n in CHECKPOINTS {
        let _ = write!(out, "{:>24}", n);
    }
    let _ = writeln!(out);
    for l in &r.live {
        let _ = write!(out, "   {:<32}", l.label);
        for n in CHECKPOINTS {
            match l.checkpoints.iter().find(|c| c.threads == n) {
                Some(c) => {
                    let _ = write!(out, "{:>9.3} maps {:>9.2} ms", l.maps_per_thread(c), c.fork_us / 1e3);
                }
                None => {
                    let _ = write!(out, "{:>24}", "-");
                }
            }
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out, "   limits here: {}", limits());
    let _ = writeln!(out);
}

pub(crate) fn report_burst(out: &mut String, r: &Results) {
    let runs = r.burst.first().map_or(0, |b| b.runs);
    let _ = writeln!(
        out,
        "8. Stack memory kept after a burst: {THREADS} threads alive at once, {} MiB stacks, each touching {:.1} MiB\n   \
         of its stack, then all joined; RSS growth, MiB (each in a fresh process; median of {runs} run(s))",
        STACK >> 20,
        TOUCH as f64 / crate::MIB as f64
    );
    let _ = writeln!(out, "   {:<32}{:>10}{:>16}{:>22}", "", "RSS before", "all alive", "all joined (kept)");
    for b in &r.burst {
        let _ = writeln!(
            out,
            "   {:<32}{:>10.1}{:>+16.1}{:>+22.1}",
            b.label,
            b.before_kib / 1024.0,
            b.during_kib / 1024.0,
            b.after_kib / 1024.0
        );
    }
    let _ = writeln!(out);
}

/// The system's limits on threads, as one line.
pub(crate) fn limits() -> String {
    let read = |p: &str| std::fs::read_to_string(p).map_or("?".into(), |s| s.trim().to_string());
    // SAFETY: a zeroed rlimit is valid, and getrlimit fills it.
    let mut nproc: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: a valid rlimit to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut nproc) };
    let nproc = if nproc.rlim_cur == libc::RLIM_INFINITY { "unlimited".into() } else { nproc.rlim_cur.to_string() };
    format!(
        "kernel.pid_max {}, kernel.threads-max {}, vm.max_map_count {}, RLIMIT_NPROC {nproc}",
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
        read("/proc/sys/vm/max_map_count")
    )
}

/// The thread-list step's share of rawthread's spawn+join median.
fn thread_list_share(r: &Results) -> f64 {
    let round_trip = Stats::figure(r.latency.of(RAWTHREAD), Figure::RoundTrip).map_or(f64::NAN, |s| s.median as f64);
    r.thread_list_ns / round_trip
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

/// The rawthread/std::thread round-trip ratio of the medians, and the
/// p10, median and p90 of the same ratio taken round by round (from each
/// round's block medians): how far the noise moved it.
fn goal_ratio(r: &Results, plan: &Plan) -> (f64, Option<[f64; 3]>) {
    let median = |i: usize| Stats::figure(r.latency.of(i), Figure::RoundTrip).map_or(f64::NAN, |s| s.median as f64);
    let overall = median(RAWTHREAD) / median(STD);
    let rounds = block_medians(r.latency.of(RAWTHREAD), plan.block);
    let std = block_medians(r.latency.of(STD), plan.block);
    let mut per_round: Vec<f64> = rounds.iter().zip(&std).map(|(&a, &b)| a as f64 / b as f64).collect();
    per_round.sort_by(f64::total_cmp);
    let rank = |p: f64| per_round[((p * per_round.len() as f64).ceil() as usize).clamp(1, per_round.len()) - 1];
    (overall, (per_round.len() >= 2).then(|| [rank(0.1), rank(0.5), rank(0.9)]))
}

pub(crate) fn report_growth(out: &mut String, r: &Results) {
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

pub(crate) fn report_idle(out: &mut String, r: &Results, plan: &Plan) {
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

pub(crate) fn summary(r: &Results, plan: &Plan) -> String {
    let mut out = String::new();
    let median = |samples: &[Sample]| Stats::figure(samples, Figure::RoundTrip).map_or(f64::NAN, |s| s.median as f64);
    let (ratio, per_round) = goal_ratio(r, plan);
    let _ = writeln!(out, "Summary");
    let _ = writeln!(out, "  >> rawthread / std::thread, spawn+join median: {ratio:.2}");
    if let Some([p10, p50, p90]) = per_round {
        let _ = writeln!(
            out,
            "     the same ratio round by round ({} rounds): p10 {p10:.2}, median {p50:.2}, p90 {p90:.2}",
            plan.rounds
        );
    }
    let (raw, floor) = (median(r.latency.of(RAWTHREAD)), median(r.latency.of(FLOOR)));
    let floor_duties = median(r.latency.of(FLOOR_DUTIES));
    let _ = writeln!(
        out,
        "  rawthread spawn+join {:.1} µs = {:.2}x the kernel floor ({:.1} µs); std::thread {:.1} µs; pthread {:.1} µs",
        raw / 1e3,
        raw / floor,
        floor / 1e3,
        median(r.latency.of(STD)) / 1e3,
        median(r.latency.of(PTHREAD)) / 1e3
    );
    let _ = writeln!(
        out,
        "  rawthread = {:.2}x the floor with a glibc thread's kernel duties ({:.1} µs: + TLS, rseq, robust list)",
        raw / floor_duties,
        floor_duties / 1e3
    );
    if let Some((v, m)) = r
        .latency
        .rows()
        .map(|(v, s)| (&VARIANTS[v], s))
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
    if let [raw, std, pthread] = &r.live[..] {
        let _ = writeln!(
            out,
            "  threads alive at once (64 KiB stacks): rawthread {}, std::thread {}, pthread {}",
            raw.alive, std.alive, pthread.alive
        );
        let at = |l: &Live, n| l.checkpoints.iter().find(|c| c.threads == n).map(|c| (l.maps_per_thread(c), c.fork_us));
        if let (Some((raw_maps, raw_fork)), Some((pthread_maps, pthread_fork))) = (at(raw, 10_000), at(pthread, 10_000))
        {
            let _ = writeln!(
                out,
                "  with 10,000 live threads: mappings per thread rawthread {raw_maps:.3}, pthread {pthread_maps:.3}; \
                 fork+waitpid rawthread {:.2} ms, pthread {:.2} ms ({:.2}x)",
                raw_fork / 1e3,
                pthread_fork / 1e3,
                raw_fork / pthread_fork
            );
        }
    }
    if !r.burst.is_empty() {
        let kept: Vec<String> =
            r.burst.iter().map(|b| format!("{} {:+.1} MiB", b.label, b.after_kib / 1024.0)).collect();
        let _ = writeln!(out, "  stack burst ({THREADS} threads), RSS kept: {}", kept.join(", "));
    }
    // The ratios of the checks behind results.json's `goals`, without
    // their targets: those are the project's own, not a reader's.
    let _ = writeln!(
        out,
        "\nRatios measured in this run, rawthread's figure to another variant's (below 1.00: rawthread's is lower).\n\
         \x20 Those to the sleep-at-once join are the median of the per-round ratios, with its 95% confidence interval"
    );
    for c in goals(r, plan).iter().flat_map(|g| &g.checks) {
        let value = if c.value.is_nan() { "not measured".into() } else { format!("{:.3}", c.value) };
        let interval = c.interval.map_or(String::new(), |[low, high]| format!("  (95% CI {low:.3}-{high:.3})"));
        let _ = writeln!(out, "  {:<84}{:>13}{interval}", c.what, value);
    }
    out
}

// ---------------------------------------------------------------------------
// Goals
// ---------------------------------------------------------------------------

pub(crate) struct Check {
    pub(crate) what: String,
    pub(crate) value: f64,
    pub(crate) target: f64,
    /// For a "not dearer" check (`value` the median of per-round ratios of
    /// two variants): the 95% confidence interval of that median. The
    /// check is met unless the whole interval lies above the target: a
    /// policy that costs what another does measures above it about half
    /// the time, by noise alone, which a plain `<=` would call a loss.
    pub(crate) interval: Option<[f64; 2]>,
}

impl Check {
    fn met(&self) -> bool {
        match self.interval {
            Some([low, _]) => low <= self.target,
            None => self.value <= self.target,
        }
    }
}

/// The median of per-round ratios and its 95% confidence interval (the
/// order statistics `n/2 -+ 0.98 sqrt(n)`, distribution-free); NaN and
/// `None` with fewer than 2 rounds.
fn median_with_interval(mut ratios: Vec<f64>) -> (f64, Option<[f64; 2]>) {
    ratios.retain(|r| r.is_finite());
    if ratios.len() < 2 {
        return (f64::NAN, None);
    }
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len() as f64;
    let half = 0.98 * n.sqrt();
    let at = |rank: f64| ratios[(rank.max(0.0) as usize).min(ratios.len() - 1)];
    (at((n - 1.0) / 2.0), Some([at((n / 2.0 - half).floor()), at((n / 2.0 + half).ceil())]))
}

/// Round by round, `a / b` of two variants of a section: the medians of
/// their blocks (`cpu`: false) or their blocks' CPU times (true).
fn per_round_ratios(section: Option<&Section>, a: usize, b: usize, block: usize, cpu: bool) -> Vec<f64> {
    let Some(s) = section else { return Vec::new() };
    let of = |v: usize| -> Vec<f64> {
        if cpu {
            s.block_cpu(v).iter().map(|&ns| ns as f64).collect()
        } else {
            block_medians(s.of(v), block).into_iter().map(|m| m as f64).collect()
        }
    };
    of(a).iter().zip(&of(b)).map(|(x, y)| x / y).collect()
}

pub(crate) struct Goal {
    pub(crate) id: u32,
    pub(crate) title: &'static str,
    pub(crate) checks: Vec<Check>,
}

/// The conditions, by name, and their sections (the loaded one, if any).
fn conditions(r: &Results) -> [(&'static str, Option<&Section>); 2] {
    [("idle", Some(&r.latency)), ("under load", r.loaded.as_ref().map(|l| &l.section))]
}

/// `a / b` of a statistic of two variants in a section; NaN where missing.
fn ratio_of(section: Option<&Section>, a: usize, b: usize, of: impl Fn(&Section, usize) -> Option<f64>) -> f64 {
    section.and_then(|s| Some(of(s, a)? / of(s, b)?)).unwrap_or(f64::NAN)
}

fn median_of(figure: Figure) -> impl Fn(&Section, usize) -> Option<f64> {
    move |s, v| Stats::figure(s.of(v), figure).map(|s| s.median as f64)
}

fn p99_of(s: &Section, v: usize) -> Option<f64> {
    Stats::figure(s.of(v), Figure::RoundTrip).map(|s| s.p99 as f64)
}

fn cpu_of(s: &Section, v: usize) -> Option<f64> {
    s.cpu_per_op(v)
}

pub(crate) fn goals(r: &Results, plan: &Plan) -> Vec<Goal> {
    let [(_, idle), (_, loaded)] = conditions(r);
    let mut g1 = Vec::new();
    for (name, section, wall_target) in [("idle", idle, 0.85), ("under load", loaded, 1.00)] {
        g1.push(Check {
            what: format!("rawthread / pthread, spawn+join wall median, {name}"),
            value: ratio_of(section, RAWTHREAD, PTHREAD, median_of(Figure::RoundTrip)),
            target: wall_target,
            interval: None,
        });
        g1.push(Check {
            what: format!("rawthread / pthread, CPU per spawn+join, {name}"),
            value: ratio_of(section, RAWTHREAD, PTHREAD, cpu_of),
            target: 1.0,
            interval: None,
        });
        g1.push(Check {
            what: format!("rawthread / pthread, spawn+join p99, {name}"),
            value: ratio_of(section, RAWTHREAD, PTHREAD, p99_of),
            target: 1.0,
            interval: None,
        });
    }
    let g2 = vec![
        Check {
            what: "rawthread / pthread, spawn call -> child's first line of user code, median, idle".into(),
            value: ratio_of(idle, RAWTHREAD, PTHREAD, median_of(Figure::ChildStart)),
            target: 1.0,
            interval: None,
        },
        Check {
            what: "rawthread / kernel floor (both joined by a plain futex sleep), round trip median, idle".into(),
            value: ratio_of(idle, RAWTHREAD, FLOOR, median_of(Figure::RoundTrip)),
            target: 1.10,
            interval: None,
        },
    ];
    // Round by round, so that two measurements of the same cost are
    // judged by their noise (see `Check::interval`).
    let mut g3 = Vec::new();
    for (name, section, block) in [("idle", idle, plan.block), ("under load", loaded, plan.load_block)] {
        for (figure, cpu) in [("wall median", false), ("CPU per spawn+join", true)] {
            let (value, interval) =
                median_with_interval(per_round_ratios(section, RAWTHREAD, RAWTHREAD_SLEEP, block, cpu));
            g3.push(Check {
                what: format!("rawthread / rawthread sleep-at-once join, {figure}, {name}"),
                value,
                target: 1.0,
                interval,
            });
        }
    }
    vec![
        Goal { id: 1, title: "rawthread against pthread, idle and under load", checks: g1 },
        Goal {
            id: 2,
            title: "the child's start against pthread's; the round trip against the kernel floor",
            checks: g2,
        },
        Goal { id: 3, title: "a join policy that pays for itself: never dearer than sleeping at once", checks: g3 },
    ]
}

// ---------------------------------------------------------------------------
// results.json
// ---------------------------------------------------------------------------

/// One object per variant and figure of a section.
fn latency_json(section: &Section) -> Vec<Value> {
    let mut latency = Vec::new();
    for figure in FIGURES {
        let median = |v: usize| Stats::figure(section.of(v), figure).map(|s| s.median as f64);
        let (base, pthread, floor) = (median(RAWTHREAD), median(PTHREAD), median(FLOOR));
        let floor_duties = median(FLOOR_DUTIES);
        for (i, samples) in section.rows() {
            let v = &VARIANTS[i];
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
            o["ratio_to_pthread"] = json!(pthread.map(|b| stats.median as f64 / b));
            o["ratio_to_floor"] = json!(floor.map(|f| stats.median as f64 / f));
            o["ratio_to_floor_with_duties"] = json!(floor_duties.map(|f| stats.median as f64 / f));
            if figure == Figure::RoundTrip {
                o["cpu_per_op"] = json!(section.cpu_per_op(i).map(|ns| ns / 1e3));
                o["cpu_per_op_note"] = json!(
                    "us of user + system CPU time of the whole process per spawn+join (getrusage RUSAGE_SELF around \
                     each block of samples; for processes plus RUSAGE_CHILDREN), summed over the blocks and divided \
                     by the samples"
                );
            }
            o["note"] = json!(v.note);
            latency.push(o);
        }
    }
    latency
}

pub(crate) fn results_json(r: &Results, meta: &Meta, plan: &Plan) -> Value {
    let m = &meta.machine;
    let latency = latency_json(&r.latency);
    let (ratio, per_round) = goal_ratio(r, plan);
    let loaded = match &r.loaded {
        Some(l) => json!({
            "competitors": l.competitors,
            "what": "CPU-bound competitor processes (this executable re-run as a busy loop), one per usable CPU \
                     but one, running through the whole section",
            "load_average_at_end": l.load,
            "rounds": plan.load_rounds, "block": plan.load_block,
            "latency": latency_json(&l.section),
        }),
        None => json!({ "competitors": 0, "skipped": r.loaded_note }),
    };
    let phases: Vec<Value> = r
        .phases
        .iter()
        .map(|t| {
            let steps: Vec<Value> = t
                .steps
                .iter()
                .map(|s| {
                    json!({
                        "from": format!("{:?}", s.from), "to": format!("{:?}", s.to),
                        "from_name": s.from.name(), "to_name": s.to.name(),
                        "label": step_label(s.from, s.to), "beside_the_path": s.beside,
                        "median": us(s.median_ns), "ends_at_median": us(s.at_ns),
                    })
                })
                .collect();
            json!({
                "variant": VARIANTS[t.variant].id, "label": VARIANTS[t.variant].label,
                "samples": t.samples, "unit": "us", "round_trip_median": us(t.round_trip_ns), "phases": steps,
            })
        })
        .collect();
    let spawners: Vec<Value> = SPAWNER_VARIANTS
        .iter()
        .zip(&r.spawners)
        .map(|((id, label, _), rates)| {
            json!({
                "variant": id, "label": label,
                "rates": SPAWNERS.iter().zip(rates).map(|(n, rate)| json!({"spawners": n, "per_second": rate}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let live: Vec<Value> = r
        .live
        .iter()
        .map(|l: &Live| {
            json!({
                "variant": l.id, "label": l.label, "stack_kib": 64, "cap": l.cap,
                "alive_at_once": l.alive, "stopped_by": l.stopped_by, "seconds": l.seconds,
                "checkpoints": l.checkpoints.iter().map(|c| json!({
                    "threads_alive": c.threads, "mappings": c.maps,
                    "mappings_per_live_thread": l.maps_per_thread(c),
                    "fork_waitpid_ms": c.fork_us / 1e3, "fork_samples": FORKS,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let goals: Vec<Value> = goals(r, plan)
        .iter()
        .map(|g| {
            json!({
                "goal": g.id, "title": g.title, "met": g.checks.iter().all(Check::met),
                "checks": g.checks.iter().map(|c| json!({
                    "what": c.what, "ratio": (!c.value.is_nan()).then_some(c.value), "target_at_most": c.target,
                    "ratio_is": if c.interval.is_some() { "median of per-round ratios" } else { "of the run's medians or totals" },
                    "interval_95": c.interval, "met": c.met(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();

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
            "clock": "CLOCK_MONOTONIC (rawthread::bench::now_ns), ns, reported in us",
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
                "load_rounds": plan.load_rounds, "load_block": plan.load_block,
                "phase_rounds": plan.phase_rounds, "phase_block": plan.phase_block,
                "spawner_ms": plan.spawner_ms, "spawner_passes": plan.spawner_passes, "live_cap": plan.live_cap,
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
        "loaded": loaded,
        "phases": phases,
        "spawners_at_once": {
            "what": "spawns+joins per second of all spawners together; each spawner a std thread spawning and \
                     joining an empty closure in a loop",
            "ms_per_measurement": plan.spawner_ms, "passes": plan.spawner_passes, "reported": "median of the passes",
            "variants": spawners,
        },
        "live_threads": { "limits": limits(), "variants": live },
        "goals": {
            "all_met": goals.iter().all(|g| g["met"] == json!(true)),
            "goals": goals,
        },
        "thread_list": {
            "what": "a thread put on glibc's _dl_stack_user and taken off, under _dl_stack_cache_lock, \
                     as every rawthread spawn and exit do",
            "pairs": THREAD_LIST_PAIRS, "ns_per_thread": r.thread_list_ns,
            "share_of_rawthread_round_trip_median": thread_list_share(r),
        },
        "first_spawn": {
            "what": "a fresh process's first spawn+join (the probe and the twin census, once) and its second, \
                     medians over fresh processes",
            "processes": FIRST_SPAWN_PROCESSES, "first_ns": r.first_spawn_ns.0, "later_ns": r.first_spawn_ns.1,
            "one_time_ns": r.first_spawn_ns.0 - r.first_spawn_ns.1,
        },
        "memory_growth": { "note": r.thp_note, "points": growth, "slopes": slopes },
        "idle_threads": idle,
        "stack_burst": {
            "what": "threads alive at once, each touching part of its stack, then all joined; RSS of the process \
                     (/proc/self/statm) before (after one spawn+join that touched nothing), with all alive, and \
                     after all were joined; each run a fresh child process, medians over the runs",
            "threads": THREADS, "stack_kib": STACK >> 10, "touched_kib_per_thread": TOUCH >> 10,
            "unit": "MiB",
            "variants": r.burst.iter().map(|b| json!({
                "variant": b.id, "label": b.label, "runs": b.runs,
                "rss_before": b.before_kib / 1024.0, "growth_all_alive": b.during_kib / 1024.0,
                "growth_after_join": b.after_kib / 1024.0,
            })).collect::<Vec<_>>(),
        },
    })
}
