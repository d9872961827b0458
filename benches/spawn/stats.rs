//! Samples and statistics

use serde_json::{Value, json};

/// One spawn, in nanoseconds from the parent's clock read just before the
/// spawn call.
#[derive(Clone, Copy)]
pub(crate) struct Sample {
    /// Until the join/wait returned.
    round_trip: u64,
    /// Until the child's first stamp; `None` where it has none (exec).
    child_start: Option<u64>,
    /// Until the spawn call returned to the parent.
    call_return: u64,
}

impl Sample {
    /// From the parent's three clock reads and the child's stamp.
    pub(crate) fn new(t0: u64, returned: u64, joined: u64, child: Option<u64>) -> Sample {
        Sample {
            round_trip: joined - t0,
            // Same clock on both sides; saturating only in case a child
            // stamped on a CPU whose clock read lags by a few ns.
            child_start: child.map(|tc| {
                assert!(tc != 0, "the child did not stamp the clock");
                tc.saturating_sub(t0)
            }),
            call_return: returned - t0,
        }
    }
}

/// The three figures of a sample.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Figure {
    RoundTrip,
    ChildStart,
    CallReturn,
}

pub(crate) const FIGURES: [Figure; 3] = [Figure::RoundTrip, Figure::ChildStart, Figure::CallReturn];

impl Figure {
    pub(crate) fn id(self) -> &'static str {
        match self {
            Figure::RoundTrip => "round_trip",
            Figure::ChildStart => "child_start",
            Figure::CallReturn => "call_return",
        }
    }

    pub(crate) fn title(self) -> &'static str {
        match self {
            Figure::RoundTrip => "(a) spawn + join round trip",
            Figure::ChildStart => "(b) spawn call -> child's first instruction",
            Figure::CallReturn => "(c) spawn call -> call returns in the parent",
        }
    }

    fn of(self, s: &Sample) -> Option<u64> {
        match self {
            Figure::RoundTrip => Some(s.round_trip),
            Figure::ChildStart => s.child_start,
            Figure::CallReturn => Some(s.call_return),
        }
    }
}

/// Order statistics of one figure, in nanoseconds. Percentiles are nearest
/// rank: every value reported is one that was measured.
#[derive(Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) n: usize,
    min: u64,
    pub(crate) p10: u64,
    pub(crate) median: u64,
    pub(crate) p90: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
}

impl Stats {
    fn of(values: impl Iterator<Item = u64>) -> Option<Stats> {
        let mut v: Vec<u64> = values.collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Stats {
            n: v.len(),
            min: v[0],
            p10: rank(10.0),
            median: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        })
    }

    pub(crate) fn figure(samples: &[Sample], figure: Figure) -> Option<Stats> {
        Stats::of(samples.iter().filter_map(|s| figure.of(s)))
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "unit": "us",
            "samples": self.n,
            "median": us(self.median),
            "p90": us(self.p90),
            "p99": us(self.p99),
            "max": us(self.max),
            "min": us(self.min),
            "p10": us(self.p10),
        })
    }
}

pub(crate) fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// Least-squares slope of y over x.
pub(crate) fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// A duration in µs with as many decimals as are meaningful.
pub(crate) fn fmt_us(ns: u64) -> String {
    let v = us(ns);
    if v < 100.0 {
        format!("{v:.2}")
    } else if v < 10_000.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// User + system CPU time of this whole process (every thread, live or
/// exited), and with `children` that of its reaped children too, ns.
pub(crate) fn cpu_ns(children: bool) -> u64 {
    fn of(who: libc::c_int) -> u64 {
        // SAFETY: a zeroed rusage is valid, and getrusage fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: a valid rusage to fill, for a valid `who`.
        unsafe { libc::getrusage(who, &mut usage) };
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
        ns(usage.ru_utime) + ns(usage.ru_stime)
    }
    of(libc::RUSAGE_SELF) + if children { of(libc::RUSAGE_CHILDREN) } else { 0 }
}
