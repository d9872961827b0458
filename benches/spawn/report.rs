//! Terminal report

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::growth::{GrowthPoint, SamplesOf, growth_slope};
use crate::options::Plan;
use crate::stats::{FIGURES, Figure, Sample, Stats, fmt_us};
use crate::variants::{FLOOR, Group, RAWTHREAD, STD, VARIANTS, block_medians};
use crate::{Meta, Results, THREAD_LIST_PAIRS};

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
        "  method    {} rounds; in each, every variant takes {} samples in a row (order rotated per round)",
        plan.rounds, plan.block
    );
    let _ = writeln!(out);
    out
}

pub(crate) fn report_latency(out: &mut String, r: &Results, plan: &Plan) {
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
    let share = thread_list_share(r);
    let _ = writeln!(
        out,
        "\nglibc's thread list: putting a thread on it at spawn and taking it off at exit, both under glibc's\n\
         lock, costs {:.0} ns a thread ({:.2}% of rawthread's spawn+join median; {THREAD_LIST_PAIRS} pairs timed alone).",
        r.thread_list_ns,
        share * 100.0
    );
    let _ = writeln!(out);
}

/// The thread-list step's share of rawthread's spawn+join median.
fn thread_list_share(r: &Results) -> f64 {
    let round_trip = Stats::figure(&r.latency[RAWTHREAD], Figure::RoundTrip).map_or(f64::NAN, |s| s.median as f64);
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
    let median = |i: usize| Stats::figure(&r.latency[i], Figure::RoundTrip).map_or(f64::NAN, |s| s.median as f64);
    let overall = median(RAWTHREAD) / median(STD);
    let rounds = block_medians(&r.latency[RAWTHREAD], plan.block);
    let std = block_medians(&r.latency[STD], plan.block);
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

pub(crate) fn results_json(r: &Results, meta: &Meta, plan: &Plan) -> Value {
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
        "thread_list": {
            "what": "a thread put on glibc's _dl_stack_user and taken off, under _dl_stack_cache_lock, \
                     as every rawthread spawn and exit do",
            "pairs": THREAD_LIST_PAIRS, "ns_per_thread": r.thread_list_ns,
            "share_of_rawthread_round_trip_median": thread_list_share(r),
        },
        "memory_growth": { "note": r.thp_note, "points": growth, "slopes": slopes },
        "idle_threads": idle,
    })
}
