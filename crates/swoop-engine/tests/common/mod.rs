//! Helpers shared by the engine's test binaries: when executions and task runs were running,
//! and how many of them overlapped.

use chrono::{DateTime, Utc};
use swoop_core::State;
use swoop_core::model::StateInfo;

/// When something was RUNNING: from its first RUNNING to its end.
pub fn running_interval(state: &StateInfo) -> (DateTime<Utc>, DateTime<Utc>) {
    let states = || state.histories.iter().map(|h| h.state).collect::<Vec<_>>();
    let start = state
        .histories
        .iter()
        .find(|h| h.state == State::Running)
        .map(|h| h.date)
        .unwrap_or_else(|| panic!("never RUNNING: {:?}", states()));
    let end = state
        .end_date()
        .unwrap_or_else(|| panic!("not ended: {:?}", states()));
    (start, end)
}

/// The most intervals that overlap at one instant (an interval ending when another starts does
/// not overlap it).
pub fn max_overlap(intervals: &[(DateTime<Utc>, DateTime<Utc>)]) -> usize {
    let mut events: Vec<(DateTime<Utc>, i32)> = intervals
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    // At the same instant, ends come first.
    events.sort();
    let mut current = 0i32;
    let mut max = 0i32;
    for (_, delta) in events {
        current += delta;
        max = max.max(current);
    }
    max as usize
}
