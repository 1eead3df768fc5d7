//! Retention: which committed snapshots to keep, and dropping the others with everything
//! derived from them.
//!
//! The policy is the one backup tools use: keep the newest `last` snapshots, and the newest
//! snapshot of each of the newest `weekly` ISO weeks (Monday to Sunday, UTC) and `monthly`
//! calendar months that have one. The newest snapshot is always kept. A dropped snapshot's
//! rows leave every table; its record stays, in state `deleted`, so its id is never reused.

use std::collections::BTreeSet;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::calendar::civil_from_days;

use crate::snapshot::{IllegalTransition, SnapshotRecord, SnapshotState, Transition, unix_now};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A running snapshot cannot be dropped: its scan must end first.
    #[error(transparent)]
    Running(#[from] IllegalTransition),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub last: usize,
    pub weekly: usize,
    pub monthly: usize,
}

impl Retention {
    /// Whether the policy keeps anything beyond the newest snapshot.
    pub fn is_set(&self) -> bool {
        self.last + self.weekly + self.monthly > 0
    }
}

const DAY: i64 = 86_400;

/// (year, month) of a day count since 1970-01-01.
fn year_month(days: i64) -> (i64, u32) {
    let (year, month, _) = civil_from_days(days);
    (year, month)
}

/// The index of the ISO week (weeks start on Monday; 1970-01-01 was a Thursday).
fn week(days: i64) -> i64 {
    (days + 3).div_euclid(7)
}

/// The ids to drop from `snapshots` (id, start time in Unix seconds), under `policy`.
pub fn to_drop(snapshots: &[(SnapshotId, i64)], policy: &Retention) -> Vec<SnapshotId> {
    let mut newest_first: Vec<(SnapshotId, i64)> = snapshots.to_vec();
    newest_first.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.cmp(&a.0)));
    let mut keep = BTreeSet::new();
    for &(id, _) in newest_first.iter().take(policy.last.max(1)) {
        keep.insert(id);
    }
    let mut keep_newest_per = |period: &dyn Fn(i64) -> i64, count: usize| {
        let mut seen = BTreeSet::new();
        for &(id, at) in &newest_first {
            if seen.len() == count {
                break;
            }
            if seen.insert(period(at.div_euclid(DAY))) {
                keep.insert(id);
            }
        }
    };
    keep_newest_per(&week, policy.weekly);
    keep_newest_per(
        &|days| {
            let (y, m) = year_month(days);
            y * 12 + i64::from(m)
        },
        policy.monthly,
    );
    let mut drop: Vec<SnapshotId> = newest_first
        .iter()
        .map(|&(id, _)| id)
        .filter(|id| !keep.contains(id))
        .collect();
    drop.sort_unstable();
    drop
}

/// Records a snapshot as deleted, then drops its rows from every table. Queries see it no more
/// from the first step on; a drop interrupted half way (ClickHouse, or a shard, went away) is
/// finished by dropping the snapshot again. A running snapshot is refused, and nothing of it
/// dropped.
pub async fn drop_snapshot(
    store: &Store,
    mut record: SnapshotRecord,
) -> Result<(), RetentionError> {
    record.transition(Transition::Delete, unix_now())?;
    store.record_snapshot(&record).await?;
    Ok(store.drop_snapshot_rows(record.snapshot_id).await?)
}

/// Applies `policy` to the committed snapshots labelled `label`; returns the ids dropped (or,
/// with `dry_run`, that would be).
pub async fn apply(
    store: &Store,
    policy: &Retention,
    label: &str,
    dry_run: bool,
) -> Result<Vec<SnapshotId>, RetentionError> {
    let committed: Vec<SnapshotRecord> = store
        .snapshots()
        .await?
        .into_iter()
        .filter(|r| r.state() == SnapshotState::Committed && r.filesystem_label == label)
        .collect();
    let times: Vec<(SnapshotId, i64)> = committed
        .iter()
        .map(|r| (r.snapshot_id, i64::from(r.started_at)))
        .collect();
    let drop = to_drop(&times, policy);
    if !dry_run {
        for record in committed {
            if drop.contains(&record.snapshot_id) {
                drop_snapshot(store, record).await?;
            }
        }
    }
    Ok(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`to_drop`] over ids given as numbers.
    fn to_drop(snapshots: &[(u64, i64)], policy: &Retention) -> Vec<u64> {
        let snapshots: Vec<(SnapshotId, i64)> = snapshots
            .iter()
            .map(|&(id, at)| (SnapshotId::new(id), at))
            .collect();
        super::to_drop(&snapshots, policy)
            .into_iter()
            .map(SnapshotId::get)
            .collect()
    }

    #[test]
    fn calendar_months_and_weeks() {
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(31), (1970, 2));
        assert_eq!(year_month(20_516), (2026, 3)); // 2026-03-04
        assert_eq!(year_month(-1), (1969, 12));
        // 1970-01-04 was a Sunday, 01-05 a Monday.
        assert_eq!(week(3), week(0));
        assert_eq!(week(4), week(0) + 1);
    }

    #[test]
    fn weekly_snapshots_for_a_year_keep_eight_weeks_and_twelve_months() {
        // Every Sunday 02:00 UTC for 60 weeks, from Sunday 2025-01-05.
        let first = 20_093 * DAY + 2 * 3600;
        let snapshots: Vec<(u64, i64)> = (0..60)
            .map(|i| (i + 1, first + i as i64 * 7 * DAY))
            .collect();
        let policy = Retention {
            last: 1,
            weekly: 8,
            monthly: 12,
        };
        let drop = to_drop(&snapshots, &policy);
        let kept: Vec<u64> = (1..=60).filter(|id| !drop.contains(id)).collect();
        // The newest 8 weeks, and the newest of each of the 12 newest months (some overlap).
        for id in 53..=60 {
            assert!(kept.contains(&id), "{id} is one of the last 8 weeks");
        }
        let months: BTreeSet<(i64, u32)> = kept
            .iter()
            .map(|&id| year_month(snapshots[id as usize - 1].1.div_euclid(DAY)))
            .collect();
        assert!(months.len() >= 12, "{months:?}");
        assert!(kept.len() < 8 + 12, "{kept:?}");
        // Nothing is dropped twice or out of range, and the newest is never dropped.
        assert!(!drop.contains(&60));
        assert_eq!(drop.len() + kept.len(), 60);
    }

    #[test]
    fn the_newest_snapshot_is_always_kept() {
        let drop = to_drop(&[(1, 0), (2, DAY), (3, 2 * DAY)], &Retention::default());
        assert_eq!(drop, [1, 2]);
        assert!(to_drop(&[], &Retention::default()).is_empty());
    }
}
