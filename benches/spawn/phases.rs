//! Part 5: where the time goes. The stamps of armed spawns (see
//! `rawthread::bench::Phase`) cut one spawn+join into phases: the
//! boundaries a variant stamps, in the order they happen on the way from
//! the creator's call through the child to the joiner's return, and two
//! on the creator's side beside that path.

use rawthread::bench::Phase;

use crate::variants::Stamps;

/// The child's path, in order: a variant's phases are the steps between
/// the consecutive boundaries of this list that it stamps.
const PATH: [Phase; 10] = [
    Phase::Call,
    Phase::Entry,
    Phase::BlockReady,
    Phase::BeforeClone,
    Phase::ChildFirst,
    Phase::ClosureStart,
    Phase::ClosureEnd,
    Phase::ChildExit,
    Phase::Woken,
    Phase::Joined,
];

/// The creator's side, beside the path: (from, to).
const SIDE: [(Phase, Phase); 2] = [(Phase::BeforeClone, Phase::CloneReturned), (Phase::Call, Phase::Returned)];

/// What a step between two boundaries is.
pub(crate) fn step_label(from: Phase, to: Phase) -> String {
    use Phase::*;
    match (from, to) {
        (Call, Entry) => "builder, until spawn's own code".into(),
        (Entry, BlockReady) => "region taken or mapped, thread block renewed".into(),
        (BlockReady, BeforeClone) => "glibc's thread list, start record (signals blocked if gated)".into(),
        (Call, BeforeClone) => "creator's work before clone".into(),
        (BeforeClone, ChildFirst) => "clone until the child's first instruction".into(),
        (ChildFirst, ClosureStart) => "child's set-up until the closure".into(),
        (ClosureStart, ClosureEnd) => "the closure (a clock stamp)".into(),
        (ClosureEnd, ChildExit) => "child's exit duties".into(),
        (ChildFirst, ChildExit) => "the child's body (a clock stamp)".into(),
        (ChildExit, Woken) => "SYS_exit until the joiner wakes".into(),
        (Woken, Joined) => "join's return after the wake".into(),
        (Call, ClosureStart) => "spawn call until the closure starts (unseen inside)".into(),
        (ClosureEnd, Joined) => "closure's end until join returns (unseen inside)".into(),
        (BeforeClone, CloneReturned) => "beside: clone until it returns in the creator".into(),
        (Call, Returned) => "beside: spawn call until it returns".into(),
        (from, to) => format!("{} -> {}", from.name(), to.name()),
    }
}

pub(crate) struct Step {
    pub(crate) from: Phase,
    pub(crate) to: Phase,
    /// On the creator's side, not on the path.
    pub(crate) beside: bool,
    pub(crate) median_ns: u64,
    /// Median time from the call to `to`.
    pub(crate) at_ns: u64,
}

pub(crate) struct Timeline {
    /// Index into `VARIANTS`.
    pub(crate) variant: usize,
    pub(crate) samples: usize,
    pub(crate) steps: Vec<Step>,
    /// Median of call -> join returned.
    pub(crate) round_trip_ns: u64,
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[(v.len() - 1) / 2]
}

/// The median of `to - from` over the samples that stamped both.
fn median_between(stamps: &[Stamps], from: Phase, to: Phase) -> u64 {
    median(stamps.iter().filter_map(|s| Some(s[to as usize]?.saturating_sub(s[from as usize]?))).collect())
}

pub(crate) fn timeline(variant: usize, stamps: &[Stamps]) -> Timeline {
    // The boundaries this variant stamps: those in most of its samples.
    let present = |p: Phase| stamps.iter().filter(|s| s[p as usize].is_some()).count() * 2 > stamps.len();
    let path: Vec<Phase> = PATH.into_iter().filter(|&p| present(p)).collect();
    let mut steps: Vec<Step> = path
        .windows(2)
        .map(|w| Step {
            from: w[0],
            to: w[1],
            beside: false,
            median_ns: median_between(stamps, w[0], w[1]),
            at_ns: median_between(stamps, Phase::Call, w[1]),
        })
        .collect();
    for (from, to) in SIDE {
        if present(from) && present(to) {
            steps.push(Step {
                from,
                to,
                beside: true,
                median_ns: median_between(stamps, from, to),
                at_ns: median_between(stamps, Phase::Call, to),
            });
        }
    }
    Timeline {
        variant,
        samples: stamps.len(),
        steps,
        round_trip_ns: median_between(stamps, Phase::Call, Phase::Joined),
    }
}
