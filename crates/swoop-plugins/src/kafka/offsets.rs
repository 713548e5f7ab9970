//! Which offsets may be committed: the core of "never commit an offset before its event is
//! acknowledged".
//!
//! Per assigned partition the tracker keeps the offsets handed out and not yet acknowledged.
//! The committable offset (Kafka's "next offset to read") is the smallest pending offset, or the
//! highest offset handed out + 1 when nothing is pending. Acknowledgements may arrive in any
//! order; offsets may have gaps (compaction, transaction markers). Each assignment of a
//! partition has an epoch: an acknowledgement from an earlier assignment (the partition was
//! revoked meanwhile) is ignored, since the new owner re-reads from the committed offset.
//!
//! The positions and epochs are the shared [`OrderedAcks`] every log-like source uses; this
//! adds Kafka's own: which records the runtime has (a revoke waits for them) and the offset
//! last committed.

use std::collections::{BTreeSet, HashMap};

use swoop_core::realtime::ordered_acks::{OrderedAcks, Progress};

/// A partition's identity: topic and partition number.
pub type TopicPartition = (String, i32);

/// What Kafka adds to the shared ordered acknowledgement, per assigned partition.
#[derive(Debug, Default)]
struct PartitionState {
    /// Offsets the runtime has (emitted): their executions are being recorded. The others
    /// wait to be emitted.
    delivered: BTreeSet<i64>,
    /// Being revoked: nothing more is delivered.
    revoking: bool,
    /// The offset last sent in a commit (the next offset to read), if any.
    committed: Option<i64>,
}

/// Kafka's "next offset to read" for a partition's progress.
fn next_offset(progress: Progress<i64>) -> Option<i64> {
    progress.next_to_read(|o| o + 1)
}

/// Offsets handed out, acknowledged and committed, per partition: the shared
/// [`OrderedAcks`] (positions, epochs) plus what is Kafka's own (deliveries for revokes, the
/// committed offset).
#[derive(Debug, Default)]
pub struct OffsetTracker {
    acks: OrderedAcks<TopicPartition, i64>,
    partitions: HashMap<TopicPartition, PartitionState>,
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    (topic.to_string(), partition)
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// The partition was assigned to this consumer (a no-op when it already is).
    pub fn assign(&mut self, topic: &str, partition: i32) -> u64 {
        let key = tp(topic, partition);
        let epoch = self.acks.assign(&key);
        self.partitions.entry(key).or_default();
        epoch
    }

    /// `offset` of the partition was read and is being handed out (to the runtime, or to be
    /// skipped at once). Returns the assignment epoch to give back with the acknowledgement.
    pub fn handed_out(&mut self, topic: &str, partition: i32, offset: i64) -> u64 {
        let key = tp(topic, partition);
        let epoch = self.acks.handed_out(&key, offset);
        self.partitions.entry(key).or_default();
        epoch
    }

    /// `offset` is acknowledged. Returns false when the acknowledgement was ignored: the
    /// partition was revoked since (its epoch is gone) or the offset was not pending.
    pub fn ack(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) -> bool {
        let key = tp(topic, partition);
        if !self.acks.ack(&key, offset, epoch) {
            return false;
        }
        if let Some(state) = self.partitions.get_mut(&key) {
            state.delivered.remove(&offset);
        }
        true
    }

    /// `offset` (handed out in `epoch`) is about to be given to the runtime. Returns false when
    /// it must not be: its partition was revoked (or is being revoked) since.
    pub fn deliver(&mut self, topic: &str, partition: i32, offset: i64, epoch: u64) -> bool {
        let key = tp(topic, partition);
        if self.acks.epoch(&key) != Some(epoch) {
            return false;
        }
        match self.partitions.get_mut(&key) {
            Some(state) if !state.revoking => {
                state.delivered.insert(offset);
                true
            }
            _ => false,
        }
    }

    /// The partition is being revoked: nothing more of it is delivered.
    pub fn begin_revoke(&mut self, topic: &str, partition: i32) {
        if let Some(state) = self.partitions.get_mut(&tp(topic, partition)) {
            state.revoking = true;
        }
    }

    /// Records of the partition the runtime has and has not acknowledged yet.
    pub fn delivered_unacked(&self, topic: &str, partition: i32) -> usize {
        self.partitions
            .get(&tp(topic, partition))
            .map_or(0, |s| s.delivered.len())
    }

    /// The offset that may be committed for the partition now, if anything was handed out.
    pub fn committable(&self, topic: &str, partition: i32) -> Option<i64> {
        self.acks
            .progress(&tp(topic, partition))
            .and_then(next_offset)
    }

    /// The partitions whose committable offset moved since their last commit, with that
    /// offset; they are recorded as committed (call [`OffsetTracker::commit_failed`] when the
    /// commit does not go through).
    pub fn take_commits(&mut self) -> Vec<(String, i32, i64)> {
        let mut out = Vec::new();
        for ((topic, partition), progress) in self.acks.take_advanced() {
            let Some(offset) = next_offset(progress) else {
                continue;
            };
            let state = self
                .partitions
                .entry((topic.clone(), partition))
                .or_default();
            if state.committed.is_some_and(|c| c >= offset) {
                continue;
            }
            state.committed = Some(offset);
            out.push((topic, partition, offset));
        }
        out
    }

    /// A commit of `offset` failed: it will be tried again at the next [`take_commits`].
    ///
    /// [`take_commits`]: OffsetTracker::take_commits
    pub fn commit_failed(&mut self, topic: &str, partition: i32, offset: i64) {
        let key = tp(topic, partition);
        if let Some(state) = self.partitions.get_mut(&key)
            && state.committed == Some(offset)
        {
            state.committed = None;
            if let Some(progress) = self.acks.progress(&key) {
                self.acks.confirm_failed(&key, progress);
            }
        }
    }

    /// The partition was revoked: returns the offset still to commit for it (when it moved
    /// since the last commit) and forgets it. Later acknowledgements for it are ignored.
    pub fn revoke(&mut self, topic: &str, partition: i32) -> Option<i64> {
        let key = tp(topic, partition);
        let committed = self.partitions.remove(&key).and_then(|s| s.committed);
        let offset = self.acks.revoke(&key).and_then(next_offset)?;
        (committed.is_none_or(|c| c < offset)).then_some(offset)
    }

    /// How many offsets are handed out and not acknowledged, over all partitions.
    pub fn pending(&self) -> usize {
        self.acks.pending()
    }

    /// The partitions currently tracked.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.acks.streams()
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
