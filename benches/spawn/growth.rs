//! Part 2: cost against the parent's memory

use std::io;

use crate::machine::{anon_huge_kib, rss_bytes};
use crate::mapping::Mapping;
use crate::options::Plan;
use crate::progress::Progress;
use crate::stats::{Figure, Sample, Stats, slope};
use crate::variants::{Ctx, fork, rawthread_default};
use crate::{MIB, PAGE};

pub(crate) struct GrowthPoint {
    pub(crate) thp: bool,
    pub(crate) size_mib: usize,
    /// Measured with the buffer in place.
    pub(crate) rss_mib: f64,
    pub(crate) huge_mib: f64,
    pub(crate) fork: Vec<Sample>,
    pub(crate) thread: Vec<Sample>,
}

/// Maps `size_mib` of private anonymous memory, asks for huge pages or
/// forbids them, and writes one byte per 4 KiB page so it is all resident.
fn touched_buffer(size_mib: usize, thp: bool) -> Option<Mapping> {
    if size_mib == 0 {
        return None;
    }
    let buf = Mapping::new(size_mib * MIB, libc::MAP_PRIVATE);
    let advice = if thp { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE };
    // SAFETY: advice on our own mapping; it changes no contents.
    let rc = unsafe { libc::madvise(buf.ptr.cast(), buf.len, advice) };
    assert_eq!(rc, 0, "madvise: {}", io::Error::last_os_error());
    for offset in (0..buf.len).step_by(PAGE) {
        // SAFETY: inside our writable mapping, which nothing else refers to.
        unsafe { buf.ptr.add(offset).write_volatile(1) };
    }
    Some(buf)
}

/// Fork and rawthread samples at every size, with and without THP. The
/// sweep is done `growth_passes` times, each with freshly touched buffers,
/// and the samples pooled: a burst of noise then hits one pass of a size,
/// not the whole size.
pub(crate) fn measure_growth(ctx: &mut Ctx, plan: &Plan, thp_series: &[bool], progress: &Progress) -> Vec<GrowthPoint> {
    let mut points: Vec<GrowthPoint> = thp_series
        .iter()
        .flat_map(|&thp| plan.growth_mib.iter().map(move |&size_mib| (thp, size_mib)))
        .map(|(thp, size_mib)| GrowthPoint {
            thp,
            size_mib,
            rss_mib: 0.0,
            huge_mib: 0.0,
            fork: Vec::new(),
            thread: Vec::new(),
        })
        .collect();
    for pass in 0..plan.growth_passes {
        for point in &mut points {
            progress.show(format_args!(
                "memory growth: pass {}/{}, {} MiB, THP {}",
                pass + 1,
                plan.growth_passes,
                point.size_mib,
                if point.thp { "on" } else { "off" }
            ));
            let buffer = touched_buffer(point.size_mib, point.thp);
            point.rss_mib = rss_bytes() as f64 / MIB as f64;
            point.huge_mib = anon_huge_kib() as f64 / 1024.0;
            // Untimed: the first fork after the buffer was written
            // write-protects every page of it in the parent, which the
            // later forks find done.
            fork(ctx);
            rawthread_default(ctx);
            for round in 0..plan.growth_rounds {
                let fork_first = round % 2 == 0;
                for half in 0..2 {
                    for _ in 0..plan.growth_block {
                        if (half == 0) == fork_first {
                            point.fork.push(fork(ctx));
                        } else {
                            point.thread.push(rawthread_default(ctx));
                        }
                    }
                }
            }
            drop(buffer);
        }
    }
    points
}

/// Picks one series of samples (fork's or the thread's) out of a point.
pub(crate) type SamplesOf = fn(&GrowthPoint) -> &[Sample];

/// ns per 4 KiB page of buffer, fitted to the medians of one series.
pub(crate) fn growth_slope(points: &[GrowthPoint], thp: bool, figure: Figure, of: SamplesOf) -> Option<f64> {
    let xy: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.thp == thp)
        .filter_map(|p| Some(((p.size_mib * MIB / PAGE) as f64, Stats::figure(of(p), figure)?.median as f64)))
        .collect();
    (xy.len() >= 2).then(|| slope(&xy))
}
