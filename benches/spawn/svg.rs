//! report.svg

use std::error::Error;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use rawthread::bench::Phase;

use crate::Results;
use crate::growth::{SamplesOf, growth_slope};
use crate::idle::Footprint;
use crate::live::CHECKPOINTS;
use crate::spawners::{SPAWNER_VARIANTS, SPAWNERS};
use crate::stats::{Figure, Sample, Stats, fmt_us, us};
use crate::variants::{Group, Section, VARIANTS};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The frame of the idle, phase and live-thread panels: a chart of `rows`
/// horizontal bars over `0..x_max`, top row first, its mesh drawn. (A
/// macro: as a function, plotters' chart would tie the area's borrow to
/// the backend's lifetime.)
macro_rules! bar_chart {
    ($area:expr, $caption:expr, $x_max:expr, $rows:expr, $x_desc:expr) => {{
        let mut chart = ChartBuilder::on($area)
            .caption($caption, (FONT, 24))
            .margin(15)
            .x_label_area_size(50)
            .y_label_area_size(270)
            .build_cartesian_2d(0.0..$x_max, -0.6..$rows as f64 - 0.4)?;
        chart
            .configure_mesh()
            .y_labels(0)
            .disable_y_mesh()
            .x_desc($x_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        chart
    }};
}
type Res = Result<(), Box<dyn Error>>;

const THREAD: RGBColor = RGBColor(31, 119, 180);
const PROCESS: RGBColor = RGBColor(230, 120, 20);
const EXEC: RGBColor = RGBColor(130, 130, 130);
const FONT: &str = "sans-serif";

pub(crate) fn write(path: &Path, r: &Results) -> Res {
    let loaded_h = if r.loaded.is_some() { 480 } else { 0 };
    let root = SVGBackend::new(path, (1200, 3700 - (480 - loaded_h))).into_drawing_area();
    root.fill(&WHITE)?;
    let (latency, rest) = root.split_vertically(700);
    let (loaded, rest) = rest.split_vertically(loaded_h);
    let (phases, rest) = rest.split_vertically(520);
    let (spawners, rest) = rest.split_vertically(420);
    let (growth, rest) = rest.split_vertically(540);
    let (idle, rest) = rest.split_vertically(320);
    let (live, scale) = rest.split_vertically(440);
    draw_latency(&root, &latency, &r.latency, "Spawn + join round trip, per variant, idle")?;
    if let Some(l) = &r.loaded {
        let caption = format!("The thread variants under load: {} CPU-bound competitor(s) running", l.competitors);
        draw_latency(&root, &loaded, &l.section, &caption)?;
    }
    draw_phases(&root, &phases, r)?;
    draw_spawners(&spawners, r)?;
    draw_growth(&growth, r)?;
    draw_idle(&root, &idle, r)?;
    draw_live(&root, &live, r)?;
    draw_scale(&root, &scale, r)?;
    root.present()?;
    Ok(())
}

fn group_color(group: Group) -> RGBColor {
    match group {
        Group::Thread => THREAD,
        Group::Process => PROCESS,
        Group::Exec => EXEC,
    }
}

/// The powers of ten around `[lo, hi]`, for a log axis.
fn decades(lo: f64, hi: f64) -> (f64, f64) {
    (10f64.powf(lo.log10().floor()), 10f64.powf(hi.log10().ceil()))
}

fn axis_label(v: f64) -> String {
    if v >= 1.0 { format!("{v:.0}") } else { format!("{v}") }
}

/// The legend box every panel draws, at `position`.
fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
) -> Res {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

/// A row label left of the plot, at the pixel where `(x, y)` lands.
fn row_label(root: &Area, at: (i32, i32), text: &str) -> Res {
    let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    root.draw(&Text::new(text.to_string(), (at.0 - 10, at.1), style))?;
    Ok(())
}

/// Round trip of every variant: box p10-p90, median bar, whisker to
/// p99, circle at the max.
fn draw_latency(root: &Area, area: &Area, section: &Section, caption: &str) -> Res {
    let rows: Vec<_> = section
        .rows()
        .filter_map(|(v, s)| Some((&VARIANTS[v], Stats::figure(s, Figure::RoundTrip)?, section.cpu_per_op(v))))
        .collect();
    let n = rows.len();
    let (lo, hi) = decades(
        rows.iter().map(|(_, s, _)| us(s.p10)).fold(f64::INFINITY, f64::min),
        rows.iter().map(|(_, s, _)| us(s.max)).fold(0.0, f64::max) * 1.5,
    );
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{caption} ({} samples each)", rows[0].1.n), (FONT, 24))
        .margin(15)
        .x_label_area_size(50)
        .y_label_area_size(270)
        .build_cartesian_2d((lo..hi).log_scale(), -0.6..n as f64 - 0.4)?;
    chart
        .configure_mesh()
        .y_labels(0)
        .disable_y_mesh()
        .x_desc("µs, log scale  —  box: p10 to p90, black bar: median (value above), whisker: to p99, circle: max")
        .x_label_formatter(&|v| axis_label(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (i, (v, s, cpu)) in rows.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let color = group_color(v.group);
        let (p10, median, p90, p99, max) = (us(s.p10), us(s.median), us(s.p90), us(s.p99), us(s.max));
        chart.draw_series([
            PathElement::new(vec![(p90, y), (p99, y)], color.stroke_width(2)),
            PathElement::new(vec![(p99, y - 0.15), (p99, y + 0.15)], color.stroke_width(2)),
        ])?;
        chart.draw_series([Rectangle::new([(p10, y - 0.25), (p90, y + 0.25)], color.mix(0.45).filled())])?;
        chart.draw_series([PathElement::new(vec![(median, y - 0.3), (median, y + 0.3)], BLACK.stroke_width(3))])?;
        chart.draw_series([Circle::new((max, y), 4, color.stroke_width(2))])?;
        let label = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        let cpu = cpu.map_or(String::new(), |c| format!(", CPU {} µs", fmt_us(c as u64)));
        chart.draw_series([Text::new(format!("{} µs{cpu}", fmt_us(s.median)), (median, y + 0.32), label)])?;
        row_label(root, chart.backend_coord(&(lo, y)), v.label)?;
    }
    // Only threads (the loaded section): no legend needed.
    if rows.iter().all(|(v, _, _)| v.group == Group::Thread) {
        return Ok(());
    }
    for (name, color) in [("threads", THREAD), ("processes", PROCESS), ("process + exec", EXEC)] {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.mix(0.45).filled()));
    }
    legend(&mut chart, SeriesLabelPosition::LowerLeft)
}

/// Median round trip against the parent's touched memory.
fn draw_growth(area: &Area, r: &Results) -> Res {
    let median = |s: &[Sample]| Stats::figure(s, Figure::RoundTrip).map(|s| us(s.median));
    // (legend, THP, colour, samples, label the points: only the growing
    // series, as the flat ones lie on top of each other)
    let series: [(&str, bool, RGBColor, SamplesOf, bool); 4] = [
        ("fork + waitpid, 4 KiB pages", false, RGBColor(200, 40, 40), |p| &p.fork, true),
        ("fork + waitpid, THP", true, RGBColor(240, 150, 40), |p| &p.fork, true),
        ("rawthread spawn + join, 4 KiB pages", false, RGBColor(31, 119, 180), |p| &p.thread, false),
        ("rawthread spawn + join, THP", true, RGBColor(80, 190, 210), |p| &p.thread, false),
    ];
    let values: Vec<f64> = r.growth.iter().flat_map(|p| [median(&p.fork), median(&p.thread)]).flatten().collect();
    let (lo, hi) =
        decades(values.iter().copied().fold(f64::INFINITY, f64::min), values.iter().copied().fold(0.0, f64::max) * 1.5);
    // A decade of headroom: the legend goes there, above the curves.
    let hi = hi * 10.0;
    let x_max = r.growth.iter().map(|p| p.size_mib).max().unwrap_or(0).max(1) as f64 * 1.05;
    let mut chart = ChartBuilder::on(area)
        .caption("Cost against the parent's memory: fork copies page tables, a thread shares them", (FONT, 24))
        .margin(15)
        .margin_left(60)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("memory touched in the parent, MiB")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("median round trip, µs (log scale)")
        .y_label_formatter(&|v| axis_label(*v))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (label, thp, color, of, values) in series {
        let points: Vec<(f64, f64)> = r
            .growth
            .iter()
            .filter(|p| p.thp == thp)
            .filter_map(|p| Some((p.size_mib as f64, median(of(p))?)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let slope = growth_slope(&r.growth, thp, Figure::RoundTrip, of).unwrap_or(f64::NAN);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("{label}: {slope:+.1} ns per 4 KiB page"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        if values {
            let above = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
            let below_right = above.pos(Pos::new(HPos::Left, VPos::Top));
            for &(x, y) in &points {
                let text = format!("{} µs", fmt_us((y * 1e3) as u64));
                // At 0 MiB both fork series start from the same place:
                // one label, off the axis and below the lines.
                match (x == 0.0, thp) {
                    (false, _) => chart.draw_series([Text::new(text, (x, y * 1.15), above.clone())])?,
                    (true, false) => {
                        chart.draw_series([Text::new(text, (x_max * 0.01, y / 1.1), below_right.clone())])?
                    }
                    (true, true) => continue,
                };
            }
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Stacked bars: user and kernel memory per idle thread.
fn draw_idle(root: &Area, area: &Area, r: &Results) -> Res {
    type Part = (&'static str, RGBColor, fn(&Footprint) -> f64);
    let parts: [Part; 4] = [
        ("user RSS", RGBColor(31, 119, 180), |f| f.user_rss),
        ("KernelStack", RGBColor(230, 120, 20), |f| f.kernel_stack),
        ("PageTables", RGBColor(60, 160, 60), |f| f.page_tables),
        ("SUnreclaim (slab; noisy)", RGBColor(150, 150, 150), |f| f.sunreclaim),
    ];
    let rows = [("rawthread::spawn", &r.idle[0]), ("std::thread::spawn", &r.idle[1])];
    let total = |f: &Footprint| parts.iter().map(|(_, _, of)| of(f).max(0.0)).sum::<f64>();
    let x_max = rows.iter().map(|(_, f)| total(f)).fold(1.0, f64::max) * 1.7;
    let mut chart = bar_chart!(
        area,
        format!("Memory per idle thread ({} threads blocked at once)", r.idle[0].threads),
        x_max,
        rows.len(),
        "KiB per thread  —  KernelStack, PageTables, SUnreclaim: system-wide /proc/meminfo deltas"
    );
    for (i, (name, f)) in rows.iter().enumerate() {
        let y = (rows.len() - 1 - i) as f64;
        let mut x = 0.0;
        for (_, color, of) in parts {
            let w = of(f).max(0.0);
            chart.draw_series([Rectangle::new([(x, y - 0.3), (x + w, y + 0.3)], color.filled())])?;
            x += w;
        }
        let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart.draw_series([Text::new(format!("{:.1} KiB", total(f)), (x + x_max * 0.01, y), style)])?;
        row_label(root, chart.backend_coord(&(0.0, y)), name)?;
    }
    for (name, color, _) in parts {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled()));
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// The colour of a phase, by the boundary it ends at.
fn phase_color(to: Phase) -> RGBColor {
    match to {
        Phase::Entry => RGBColor(200, 200, 200),
        Phase::BlockReady => RGBColor(31, 119, 180),
        Phase::BeforeClone => RGBColor(120, 170, 220),
        Phase::ChildFirst => RGBColor(230, 120, 20),
        Phase::ClosureStart => RGBColor(250, 190, 60),
        Phase::ClosureEnd => RGBColor(60, 160, 60),
        Phase::ChildExit => RGBColor(150, 100, 190),
        Phase::Woken => RGBColor(210, 60, 60),
        Phase::Joined => RGBColor(140, 140, 140),
        _ => RGBColor(90, 90, 90),
    }
}

/// A stacked bar per variant: the medians of its phases along the path,
/// in order; a thin line under it for the creator's side.
fn draw_phases(root: &Area, area: &Area, r: &Results) -> Res {
    let n = r.phases.len();
    if n == 0 {
        return Ok(());
    }
    let path_sum = |t: &crate::phases::Timeline| t.steps.iter().filter(|s| !s.beside).map(|s| us(s.median_ns)).sum();
    // Room on the right for the legend.
    let x_max = r.phases.iter().map(path_sum).fold(1.0, f64::max) * 1.8;
    let mut chart = bar_chart!(
        area,
        format!("Where the time goes: median per phase, one spawn + join ({} armed samples each)", r.phases[0].samples),
        x_max,
        n,
        "µs from the spawn call  —  bars: the child's path, phase by phase; thin line: clone until it returns"
    );
    let mut legend_seen: Vec<Phase> = Vec::new();
    for (i, t) in r.phases.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let mut x = 0.0;
        for step in t.steps.iter().filter(|s| !s.beside) {
            let w = us(step.median_ns);
            let color = phase_color(step.to);
            let bar = chart.draw_series([Rectangle::new([(x, y - 0.3), (x + w, y + 0.3)], color.filled())])?;
            if !legend_seen.contains(&step.to) {
                legend_seen.push(step.to);
                bar.label(format!("-> {}", step.to.name()))
                    .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled()));
            }
            x += w;
        }
        if let Some(clone) = t.steps.iter().find(|s| s.beside && s.to == Phase::CloneReturned) {
            let start = us(clone.at_ns.saturating_sub(clone.median_ns));
            chart.draw_series([PathElement::new(
                vec![(start, y - 0.38), (start + us(clone.median_ns), y - 0.38)],
                BLACK.stroke_width(2),
            )])?;
        }
        let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        chart.draw_series([Text::new(format!("{} µs", fmt_us((x * 1e3) as u64)), (x + x_max * 0.005, y), style)])?;
        row_label(root, chart.backend_coord(&(0.0, y)), VARIANTS[t.variant].label)?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Spawns+joins per second against the number of spawners.
fn draw_spawners(area: &Area, r: &Results) -> Res {
    let y_max = r.spawners.iter().flatten().copied().fold(1.0, f64::max) * 1.3;
    let mut chart = ChartBuilder::on(area)
        .caption("Spawners at once: spawns + joins per second, all spawners together", (FONT, 24))
        .margin(15)
        .margin_left(60)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.5..8.5, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("threads spawning and joining at once")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_desc("spawns + joins per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()?;
    let colors = [RGBColor(31, 119, 180), RGBColor(60, 160, 60), RGBColor(230, 120, 20)];
    for (((_, label, _), rates), color) in SPAWNER_VARIANTS.iter().zip(&r.spawners).zip(colors) {
        let points: Vec<(f64, f64)> = SPAWNERS.iter().zip(rates).map(|(&n, &r)| (n as f64, r)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(*label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperRight)
}

/// Bars: the most threads alive at once, with what stopped each.
fn draw_live(root: &Area, area: &Area, r: &Results) -> Res {
    let n = r.live.len();
    if n == 0 {
        return Ok(());
    }
    let x_max = r.live.iter().map(|l| l.alive as f64).fold(1.0, f64::max) * 2.2;
    let mut chart = bar_chart!(
        area,
        "Most threads alive at once (64 KiB stacks), and what stopped each",
        x_max,
        n,
        "threads alive at once, each variant in a child process"
    );
    for (i, l) in r.live.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let w = l.alive as f64;
        chart.draw_series([Rectangle::new([(0.0, y - 0.3), (w, y + 0.3)], THREAD.mix(0.6).filled())])?;
        // The error on one line, the limit (if named) under it.
        let (error, limit) = l.stopped_by.split_once("; ").unwrap_or((&l.stopped_by, ""));
        let clip = |text: &str| {
            let mut text = text.to_string();
            if text.chars().count() > 75 {
                text = text.chars().take(72).collect::<String>() + "...";
            }
            text
        };
        let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        let x = w + x_max * 0.005;
        chart.draw_series([Text::new(format!("{}: {}", l.alive, clip(error)), (x, y + 0.12), style.clone())])?;
        chart.draw_series([Text::new(clip(limit), (x, y - 0.15), style)])?;
        row_label(root, chart.backend_coord(&(0.0, y)), l.label)?;
    }
    Ok(())
}

/// A short name for a variant of parts 7 and 8, under its bars.
fn short_name(id: &str) -> &str {
    match id {
        "std_thread" => "std::thread",
        other => other,
    }
}

/// One series of [`grouped_bars`]: its legend, colour, and a value per
/// category (`None`: not measured, drawn as a dash).
type Series = (String, RGBColor, Vec<Option<f64>>);

/// Vertical bars, one group per category, one bar per series in each,
/// the value above every bar, the category's name under its group.
fn grouped_bars(root: &Area, area: &Area, caption: &str, y_desc: &str, categories: &[&str], series: &[Series]) -> Res {
    let n = categories.len() as f64;
    let highest = series.iter().flat_map(|(_, _, v)| v.iter().flatten()).copied().fold(0.0, f64::max);
    // Room above the bars for the legend; an empty chart (nothing
    // reached, as in a quick run) still gets an axis.
    let y_max = if highest > 0.0 { highest * 2.6 } else { 1.0 };
    let decimals = if y_max >= 10.0 {
        0
    } else if y_max >= 1.0 {
        1
    } else {
        2
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.5..n - 0.5, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_labels(0)
        .disable_x_mesh()
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{v:.decimals$}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .draw()?;
    let width = 0.8 / series.len() as f64;
    let above = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (k, (name, color, values)) in series.iter().enumerate() {
        let color = *color;
        for (i, value) in values.iter().enumerate() {
            let x = i as f64 - 0.4 + width * k as f64;
            let (bar_top, text) = match value {
                Some(v) => (*v, format_value(*v)),
                None => (0.0, "-".to_string()),
            };
            chart.draw_series([Rectangle::new([(x, 0.0), (x + width * 0.9, bar_top)], color.filled())])?;
            chart.draw_series([Text::new(text, (x + width * 0.45, bar_top + y_max * 0.01), above.clone())])?;
        }
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled()));
    }
    let under = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (i, name) in categories.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64, 0.0));
        root.draw(&Text::new(name.to_string(), (x, y + 8), under.clone()))?;
    }
    if highest <= 0.0 {
        let middle = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
        chart.draw_series([Text::new("not reached in this run", ((n - 1.0) / 2.0, 0.5), middle)])?;
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// `n` with a comma every three digits.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Three significant figures or so, for a bar's label.
fn format_value(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// Scale: mappings per live thread and fork + waitpid beside live
/// threads (part 7), and the stack memory kept after a burst (part 8),
/// side by side.
fn draw_scale(root: &Area, area: &Area, r: &Results) -> Res {
    let (title, panels) = area.split_vertically(40);
    let style = TextStyle::from((FONT, 24).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    title.draw(&Text::new(
        "Scale: mappings and fork beside live threads (64 KiB stacks); memory kept after a burst",
        (600, 10),
        style,
    ))?;
    let panels = panels.split_evenly((1, 3));
    let shades = [RGBColor(160, 200, 230), RGBColor(31, 119, 180), RGBColor(15, 60, 100)];
    let live_names: Vec<&str> = r.live.iter().map(|l| short_name(l.id)).collect();
    let at = |n: usize, of: &dyn Fn(&crate::live::Live, &crate::live::Checkpoint) -> f64| -> Vec<Option<f64>> {
        r.live.iter().map(|l| l.checkpoints.iter().find(|c| c.threads == n).map(|c| of(l, c))).collect()
    };
    // At 0 threads there is nothing to divide by: mappings from 1,000 up.
    let maps: Vec<Series> = CHECKPOINTS[1..]
        .iter()
        .zip(&shades[1..])
        .map(|(&n, &color)| (format!("{} alive", thousands(n)), color, at(n, &|l, c| l.maps_per_thread(c))))
        .collect();
    grouped_bars(root, &panels[0], "Mappings per live thread", "mappings (-: not reached)", &live_names, &maps)?;
    let forks: Vec<Series> = CHECKPOINTS
        .iter()
        .zip(&shades)
        .map(|(&n, &color)| (format!("{} alive", thousands(n)), color, at(n, &|_, c| c.fork_us / 1e3)))
        .collect();
    grouped_bars(root, &panels[1], "fork + waitpid beside them", "ms, median (-: not reached)", &live_names, &forks)?;
    let burst_names: Vec<&str> = r.burst.iter().map(|b| short_name(b.id)).collect();
    let mib = |of: fn(&crate::burst::Burst) -> f64| r.burst.iter().map(|b| Some(of(b) / 1024.0)).collect();
    let burst: Vec<Series> = vec![
        ("all alive".into(), shades[0], mib(|b| b.during_kib)),
        ("all joined (kept)".into(), shades[2], mib(|b| b.after_kib)),
    ];
    let caption = format!(
        "RSS growth, {} threads touching {:.1} MiB of stack",
        crate::burst::THREADS,
        crate::burst::TOUCH as f64 / crate::MIB as f64
    );
    grouped_bars(root, &panels[2], &caption, "MiB", &burst_names, &burst)
}
