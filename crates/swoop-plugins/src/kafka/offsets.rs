//! Which offsets may be committed: the core of "never commit an offset before its event is
//! acknowledged".
//!
//! Per assigned partition the tracker keeps the offsets handed out and not yet acknowledged.
//! The committable offset (Kafka's "next offset to read") is the smallest pending offset, or the
//! highest offset handed out + 1 when nothing is pending. Acknowledgements may arrive in any
//! order; offsets may have gaps (compaction, transaction markers). Each assignment of a
//! partition has an epoch: an acknowledgement from an earlier assignment (the partition was
//! revoked meanwhile) is ignored, since the new owner re-reads from the committed offset.

use std::collections::{BTreeSet, HashMap};

/// A partition's identity: topic and partition number.
pub type TopicPartition = (String, i32);

#[derive(Debug)]
struct PartitionState {
    epoch: u64,
    /// Offsets handed out and not acknowledged yet.
    pending: BTreeSet<i64>,
    /// Those of `pending` the runtime has (delivered by `next()`): their executions are being
    /// stored. The others wait in the connection's channel.
    delivered: BTreeSet<i64>,
    /// Being revoked: nothing more is delivered.
    revoking: bool,
    /// The highest offset handed out in this assignment.
    highest: Option<i64>,
    /// The offset last sent in a commit (the next offset to read), if any.
    committed: Option<i64>,
}

impl PartitionState {
    fn committable(&self) -> Option<i64> {
        match self.pending.first() {
            Some(first) => Some(*first),
            None => self.highest.map(|h| h + 1),
        }
    }

    /// The committable offset when it moved past the last commit.
    fn advanced(&self) -> Option<i64> {
        let committable = self.committable()?;
        match self.committed {
            Some(c) if c >= committable => None,
            _ => Some(committable),
        }
    }
}

/// Offsets handed out, acknowledged and committed, per partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionState>,
    next_epoch: u64,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&mut self, topic: &str, partition: i32) -> &mut PartitionState {
        let key = (topic.to_string(), partition);
        let next_epoch = &mut self.next_epoch;
        self.partitions.entry(key).or_insert_with(|| {
            *next_epoch += 1;
            PartitionState {
                epoch: *next_epoch,
                pending: BTreeSet::new(),
                delivered: BTreeSet::new(),
                revoking: false,
                highest: None,
                committed: None,
            }
        })
    }

    /// The partition was assigned to this consumer (a no-op when it already is).
    pub fn assign(&mut self, topic: &str, partition: i32) -> u64 {
        self.state(topic, partition).epoch
    }

    /// `offset` of the partition was read and is being handed out (to the runtime, or to be
    /// skipped at once). Returns the assignment epoch to give back with the acknowledgement.
    pub fn handed_out(&mut self, topic: &str, partition: i32, offset: i64) -> u64 {
        let state = self.state(topic, partition);
        state.pending.insert(offset);
        state.highest = Some(state.highest.map_or(offset, |h| h.max(offset)));
        state.epoch
    }

    /// `offset` is acknowledged. Returns false when the acknowledgement was ignored: the
    /// partition was revoked since (its epoch is gone) or the offset was not pending.
    pub fn ack(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) -> bool {
        match self.partitions.get_mut(&(topic.to_string(), partition)) {
            Some(state) if state.epoch == epoch => {
                state.delivered.remove(&offset);
                state.pending.remove(&offset)
            }
            _ => false,
        }
    }

    /// `offset` (handed out in `epoch`) is about to be given to the runtime. Returns false when
    /// it must not be: its partition was revoked (or is being revoked) since.
    pub fn deliver(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) -> bool {
        match self.partitions.get_mut(&(topic.to_string(), partition)) {
            Some(state) if state.epoch == epoch && !state.revoking => {
                state.delivered.insert(offset);
                true
            }
            _ => false,
        }
    }

    /// The partition is being revoked: nothing more of it is delivered.
    pub fn begin_revoke(&mut self, topic: &str, partition: i32) {
        if let Some(state) = self.partitions.get_mut(&(topic.to_string(), partition)) {
            state.revoking = true;
        }
    }

    /// Records of the partition the runtime has and has not acknowledged yet.
    pub fn delivered_unacked(&self, topic: &str, partition: i32) -> usize {
        self.partitions
            .get(&(topic.to_string(), partition))
            .map_or(0, |s| s.delivered.len())
    }

    /// The offset that may be committed for the partition now, if anything was handed out.
    pub fn committable(&self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions
            .get(&(topic.to_string(), partition))
            .and_then(PartitionState::committable)
    }

    /// The partitions whose committable offset moved since their last commit, with that
    /// offset; they are recorded as committed (call [`OffsetTracker::commit_failed`] when the
    /// commit does not go through).
    pub fn take_commits(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for ((topic, partition), state) in &mut self.partitions {
            if let Some(offset) = state.advanced() {
                state.committed = Some(offset);
                out.push((topic.clone(), *partition, offset));
            }
        }
        out.sort();
        out
    }

    /// A commit of `offset` failed: it will be tried again at the next [`take_commits`].
    ///
    /// [`take_commits`]: OffsetTracker::take_commits
    pub fn commit_failed(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&(topic.to_string(), partition))
            && state.committed == Some(offset)
        {
            state.committed = None;
        }
    }

    /// The partition was revoked: returns the offset still to commit for it (when it moved
    /// since the last commit) and forgets it. Later acknowledgements for it are ignored.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<i64> {
        self.partitions
            .remove(&(topic.to_string(), partition))
            .and_then(|state| state.advanced())
    }

    /// How many offsets are handed out and not acknowledged, over all partitions.
    pub fn pending(&self) -> usize {
        self.partitions.values().map(|s| s.pending.len()).sum()
    }

    /// The partitions currently tracked.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        let mut out: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_handed_out_nothing_to_commit() {
        let mut t = OffsetTracker::new();
        t.assign("orders", 0);
        assert_eq!(t.committable("orders", 0), None);
        assert!(t.take_commits().is_empty());
        assert_eq!(t.committable("other", 3), None);
    }

    #[test]
    fn in_order_acks_advance_one_by_one() {
        let mut t = OffsetTracker::new();
        let e = t.handed_out("orders", 0, 10);
        t.handed_out("orders", 0, 11);
        assert_eq!(t.committable("orders", 0), Some(10));
        assert!(t.ack("orders", 0, 10, e));
        assert_eq!(t.committable("orders", 0), Some(11));
        assert!(t.ack("orders", 0, 11, e));
        assert_eq!(t.committable("orders", 0), Some(12));
        assert_eq!(t.take_commits(), vec![("orders".to_string(), 0, 12)]);
        // Nothing moved: nothing to commit again.
        assert!(t.take_commits().is_empty());
    }

    #[test]
    fn out_of_order_acks_hold_at_the_smallest_pending() {
        let mut t = OffsetTracker::new();
        let e = t.handed_out("orders", 0, 0);
        t.handed_out("orders", 0, 1);
        t.handed_out("orders", 0, 2);
        assert!(t.ack("orders", 0, 2, e));
        assert!(t.ack("orders", 0, 1, e));
        assert_eq!(t.committable("orders", 0), Some(0));
        // The first commit records offset 0 (nothing acknowledged before it).
        assert_eq!(t.take_commits(), vec![("orders".to_string(), 0, 0)]);
        assert!(t.ack("orders", 0, 0, e));
        assert_eq!(t.take_commits(), vec![("orders".to_string(), 0, 3)]);
    }

    #[test]
    fn gaps_in_offsets_are_skipped() {
        let mut t = OffsetTracker::new();
        let e = t.handed_out("orders", 1, 5);
        // 6 is a transaction marker, 7..9 were compacted away.
        t.handed_out("orders", 1, 10);
        assert!(t.ack("orders", 1, 10, e));
        assert_eq!(t.committable("orders", 1), Some(5));
        assert!(t.ack("orders", 1, 5, e));
        assert_eq!(t.committable("orders", 1), Some(11));
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::new();
        let a = t.handed_out("orders", 0, 3);
        let b = t.handed_out("orders", 1, 7);
        let c = t.handed_out("payments", 0, 1);
        assert!(t.ack("orders", 1, 7, b));
        assert!(t.ack("payments", 0, 1, c));
        assert_eq!(
            t.take_commits(),
            vec![
                ("orders".to_string(), 0, 3),
                ("orders".to_string(), 1, 8),
                ("payments".to_string(), 0, 2),
            ]
        );
        assert!(t.ack("orders", 0, 3, a));
        assert_eq!(t.take_commits(), vec![("orders".to_string(), 0, 4)]);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn double_or_unknown_acks_are_ignored() {
        let mut t = OffsetTracker::new();
        let e = t.handed_out("orders", 0, 1);
        assert!(t.ack("orders", 0, 1, e));
        assert!(!t.ack("orders", 0, 1, e));
        assert!(!t.ack("orders", 0, 99, e));
        assert!(!t.ack("nope", 0, 1, e));
        assert_eq!(t.committable("orders", 0), Some(2));
    }

    #[test]
    fn revoke_returns_the_last_commit_and_ignores_later_acks() {
        let mut t = OffsetTracker::new();
        let old = t.handed_out("orders", 0, 0);
        t.handed_out("orders", 0, 1);
        t.handed_out("orders", 0, 2);
        assert!(t.ack("orders", 0, 0, old));
        assert_eq!(t.revoke("orders", 0), Some(1));
        assert_eq!(t.partitions(), vec![]);
        // Acks for the revoked assignment do nothing, even once it is assigned again.
        let new = t.assign("orders", 0);
        assert_ne!(old, new);
        assert!(!t.ack("orders", 0, 1, old));
        assert_eq!(t.committable("orders", 0), None);
        let e = t.handed_out("orders", 0, 1);
        assert_eq!(e, new);
        assert!(t.ack("orders", 0, 1, e));
        assert_eq!(t.committable("orders", 0), Some(2));
    }

    #[test]
    fn revoke_after_commit_has_nothing_more() {
        let mut t = OffsetTracker::new();
        let e = t.handed_out("orders", 0, 4);
        assert!(t.ack("orders", 0, 4, e));
        assert_eq!(t.take_commits().len(), 1);
        assert_eq!(t.revoke("orders", 0), None);
        assert_eq!(t.revoke("never", 0), None);
    }

    #[test]
    fn failed_commit_is_retried() {
        let mut t = OffsetTracker::new();
        let e = t.handed_out("orders", 0, 4);
        assert!(t.ack("orders", 0, 4, e));
        assert_eq!(t.take_commits(), vec![("orders".to_string(), 0, 5)]);
        t.commit_failed("orders", 0, 5);
        assert_eq!(t.take_commits(), vec![("orders".to_string(), 0, 5)]);
        // A failure of an older commit does not undo a newer one.
        let e = t.handed_out("orders", 0, 5);
        assert!(t.ack("orders", 0, 5, e));
        assert_eq!(t.take_commits(), vec![("orders".to_string(), 0, 6)]);
        t.commit_failed("orders", 0, 5);
        assert!(t.take_commits().is_empty());
    }

    #[test]
    fn a_revoke_commits_below_what_was_never_delivered() {
        let mut t = OffsetTracker::new();
        let epoch = t.assign("t", 0);
        for offset in 10..15 {
            t.handed_out("t", 0, offset);
        }
        assert!(t.deliver("t", 0, 10, epoch));
        assert!(t.deliver("t", 0, 11, epoch));
        t.begin_revoke("t", 0);
        // 12.. were still in the channel: not delivered any more.
        assert!(!t.deliver("t", 0, 12, epoch));
        assert_eq!(t.delivered_unacked("t", 0), 2);
        assert!(t.ack("t", 0, 10, epoch));
        assert!(t.ack("t", 0, 11, epoch));
        assert_eq!(t.delivered_unacked("t", 0), 0);
        // The next owner starts at 12.
        assert_eq!(t.revoke("t", 0), Some(12));
        assert!(!t.deliver("t", 0, 13, epoch));
    }
}
