//! Ordered acknowledgement for log-like sources: the position up to which everything is
//! recorded, per stream (a Kafka partition, a replication slot, a Pulsar topic partition, an
//! Event Hubs partition).
//!
//! A log-like source confirms a *position* (Kafka commits an offset, PostgreSQL gets the
//! flushed LSN, Pulsar a cumulative ack), never one event: it may confirm only what lies below
//! the smallest position whose execution is not recorded yet. Outcomes arrive in any order
//! (executions are created concurrently); positions may have gaps (compaction, transaction
//! markers, several rows per LSN). Each assignment of a stream has an epoch: an
//! acknowledgement from an earlier assignment (the stream was revoked meanwhile) is ignored,
//! since the next owner re-reads from the confirmed position.
//!
//! No I/O and no clock: the source decides when to confirm (after each settled event, on a
//! timer, on revoke) and calls [`OrderedAcks::take_advanced`].

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// How far a stream got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<P> {
    /// Every position handed out up to and including this one is recorded.
    pub through: Option<P>,
    /// The smallest position handed out and not recorded yet; `None` when nothing is
    /// outstanding.
    pub first_pending: Option<P>,
}

impl<P: Copy> Progress<P> {
    /// Kafka's "next offset to read": the first pending position, or the one after `through`.
    pub fn next_to_read(&self, successor: impl Fn(P) -> P) -> Option<P> {
        self.first_pending.or(self.through.map(successor))
    }
}

#[derive(Debug)]
struct Stream<P> {
    epoch: u64,
    /// Positions handed out and not yet folded into `through`: `true` once recorded.
    outstanding: BTreeMap<P, bool>,
    through: Option<P>,
    /// The progress last returned by `take_advanced` (the source is confirming it).
    taken: Option<Progress<P>>,
}

impl<P: Ord + Copy> Stream<P> {
    fn progress(&self) -> Progress<P> {
        Progress {
            through: self.through,
            first_pending: self.outstanding.keys().next().copied(),
        }
    }

    fn advanced(&self) -> Option<Progress<P>> {
        let progress = self.progress();
        if progress.through.is_none() && progress.first_pending.is_none() {
            return None;
        }
        (self.taken != Some(progress)).then_some(progress)
    }
}

/// Positions handed out, recorded and confirmed, per stream.
#[derive(Debug)]
pub struct OrderedAcks<S, P> {
    streams: HashMap<S, Stream<P>>,
    next_epoch: u64,
}

impl<S, P> Default for OrderedAcks<S, P> {
    fn default() -> Self {
        OrderedAcks {
            streams: HashMap::new(),
            next_epoch: 0,
        }
    }
}

impl<S: Hash + Eq + Clone + Ord, P: Ord + Copy> OrderedAcks<S, P> {
    pub fn new() -> Self {
        Self::default()
    }

    fn stream(&mut self, stream: &S) -> &mut Stream<P> {
        let next_epoch = &mut self.next_epoch;
        self.streams.entry(stream.clone()).or_insert_with(|| {
            *next_epoch += 1;
            Stream {
                epoch: *next_epoch,
                outstanding: BTreeMap::new(),
                through: None,
                taken: None,
            }
        })
    }

    /// The stream is assigned to this consumer (a no-op when it already is); returns its epoch.
    pub fn assign(&mut self, stream: &S) -> u64 {
        self.stream(stream).epoch
    }

    /// The stream is assigned and everything up to `through` is known to be confirmed (where
    /// a replication slot or a checkpoint says the stream starts).
    pub fn assign_from(&mut self, stream: &S, through: P) -> u64 {
        let state = self.stream(stream);
        if state.outstanding.is_empty() && state.through.is_none() {
            state.through = Some(through);
            state.taken = Some(state.progress());
        }
        state.epoch
    }

    /// `position` was read and is being handed out; returns the epoch to give back with its
    /// acknowledgement.
    pub fn handed_out(&mut self, stream: &S, position: P) -> u64 {
        let state = self.stream(stream);
        state.outstanding.entry(position).or_insert(false);
        state.epoch
    }

    /// `position` is recorded. Returns false when the acknowledgement was ignored: the stream
    /// was revoked since (its epoch is gone), or the position was not outstanding.
    pub fn ack(&mut self, stream: &S, position: P, epoch: u64) -> bool {
        let Some(state) = self.streams.get_mut(stream).filter(|s| s.epoch == epoch) else {
            return false;
        };
        match state.outstanding.get_mut(&position) {
            Some(recorded) if !*recorded => *recorded = true,
            _ => return false,
        }
        while let Some(entry) = state.outstanding.first_entry() {
            if !*entry.get() {
                break;
            }
            let (position, _) = entry.remove_entry();
            state.through = Some(position);
        }
        true
    }

    /// How far the stream got, if anything was handed out (or assigned from a position).
    pub fn progress(&self, stream: &S) -> Option<Progress<P>> {
        self.streams
            .get(stream)
            .map(Stream::progress)
            .filter(|p| p.through.is_some() || p.first_pending.is_some())
    }

    /// The streams whose progress moved since it was last taken, with that progress; it is
    /// recorded as taken (call [`OrderedAcks::confirm_failed`] when confirming it fails).
    pub fn take_advanced(&mut self) -> Vec<(S, Progress<P>)> {
        let mut out = Vec::new();
        for (stream, state) in &mut self.streams {
            if let Some(progress) = state.advanced() {
                state.taken = Some(progress);
                out.push((stream.clone(), progress));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Confirming `progress` failed: the next [`OrderedAcks::take_advanced`] returns it again
    /// (unless a newer one was taken since).
    pub fn confirm_failed(&mut self, stream: &S, progress: Progress<P>) {
        if let Some(state) = self.streams.get_mut(stream)
            && state.taken == Some(progress)
        {
            state.taken = None;
        }
    }

    /// The stream was revoked: returns its progress when it moved since last taken, and
    /// forgets it. Later acknowledgements of this assignment are ignored.
    pub fn revoke(&mut self, stream: &S) -> Option<Progress<P>> {
        self.streams.remove(stream).and_then(|s| s.advanced())
    }

    /// The epoch of the stream's current assignment, if it is assigned.
    pub fn epoch(&self, stream: &S) -> Option<u64> {
        self.streams.get(stream).map(|s| s.epoch)
    }

    /// Positions handed out and not recorded, over all streams.
    pub fn pending(&self) -> usize {
        self.streams
            .values()
            .map(|s| s.outstanding.values().filter(|r| !**r).count())
            .sum()
    }

    /// The streams currently tracked, sorted.
    pub fn streams(&self) -> Vec<S> {
        let mut out: Vec<S> = self.streams.keys().cloned().collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Acks = OrderedAcks<&'static str, (u64, u32)>;

    fn p(through: Option<(u64, u32)>, first_pending: Option<(u64, u32)>) -> Progress<(u64, u32)> {
        Progress {
            through,
            first_pending,
        }
    }

    #[test]
    fn out_of_order_outcomes_confirm_only_below_the_first_pending() {
        let mut acks = Acks::new();
        let e = acks.handed_out(&"slot", (10, 0));
        acks.handed_out(&"slot", (10, 1));
        acks.handed_out(&"slot", (20, 0));
        assert!(acks.ack(&"slot", (20, 0), e));
        assert!(acks.ack(&"slot", (10, 1), e));
        assert_eq!(acks.progress(&"slot"), Some(p(None, Some((10, 0)))));
        assert!(acks.ack(&"slot", (10, 0), e));
        assert_eq!(acks.progress(&"slot"), Some(p(Some((20, 0)), None)));
        assert_eq!(acks.pending(), 0);
    }

    #[test]
    fn take_advanced_returns_each_move_once_and_a_failed_confirm_again() {
        let mut acks = Acks::new();
        assert!(acks.take_advanced().is_empty());
        let e = acks.handed_out(&"a", (1, 0));
        assert_eq!(acks.take_advanced(), vec![("a", p(None, Some((1, 0))))]);
        assert!(acks.take_advanced().is_empty());
        assert!(acks.ack(&"a", (1, 0), e));
        let taken = acks.take_advanced();
        assert_eq!(taken, vec![("a", p(Some((1, 0)), None))]);
        acks.confirm_failed(&"a", taken[0].1);
        assert_eq!(acks.take_advanced(), taken);
        // A failure of an older confirmation does not undo a newer one.
        acks.confirm_failed(&"a", p(None, Some((1, 0))));
        assert!(acks.take_advanced().is_empty());
    }

    #[test]
    fn revoked_assignments_ignore_late_acks() {
        let mut acks = Acks::new();
        let old = acks.handed_out(&"a", (1, 0));
        acks.handed_out(&"a", (2, 0));
        assert!(acks.ack(&"a", (1, 0), old));
        assert_eq!(acks.revoke(&"a"), Some(p(Some((1, 0)), Some((2, 0)))));
        let new = acks.assign(&"a");
        assert_ne!(old, new);
        assert!(!acks.ack(&"a", (2, 0), old));
        assert!(!acks.ack(&"a", (2, 0), new), "not handed out in this epoch");
        assert!(!acks.ack(&"b", (1, 0), old));
        assert_eq!(acks.progress(&"a"), None);
    }

    #[test]
    fn double_acks_are_ignored_and_assign_from_sets_the_floor() {
        let mut acks = Acks::new();
        let e = acks.assign_from(&"slot", (5, 0));
        assert_eq!(acks.progress(&"slot"), Some(p(Some((5, 0)), None)));
        assert!(
            acks.take_advanced().is_empty(),
            "the floor is confirmed already"
        );
        acks.handed_out(&"slot", (6, 0));
        assert!(acks.ack(&"slot", (6, 0), e));
        assert!(!acks.ack(&"slot", (6, 0), e));
        assert_eq!(
            acks.progress(&"slot")
                .and_then(|p| p.next_to_read(|(l, i)| (l, i + 1))),
            Some((6, 1))
        );
        assert_eq!(acks.streams(), vec!["slot"]);
    }
}
