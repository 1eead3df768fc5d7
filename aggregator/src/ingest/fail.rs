//! A snapshot fails: aborted by its scanner, failed by a stage (verification, an insert, the
//! spool), or abandoned because nothing was heard of its scan for `abandon_after`. Its record
//! says failed and why, its rows are dropped, and the spool forgets it, so a query never sees
//! a partial snapshot. No insert of it runs or starts once it is failing.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use tracing::{Instrument, error, warn};

use storage_tracker_proto::SnapshotId;

use super::{Backoff, Inner, snapshot_span, unavailable};
use crate::snapshot::{SnapshotRecord, SnapshotState, Transition, unix_now};

/// Why this stage fails a snapshot: the message the failed record keeps.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("aborted by the scanner: {0}")]
    Aborted(String),
    #[error(
        "abandoned: nothing was heard of the scan for {} s (a rank died or the job was killed)",
        .0.as_secs()
    )]
    Abandoned(Duration),
}

impl Inner {
    /// Fails a running snapshot (as the AbortSnapshot call); a snapshot failed before is
    /// fine, any other is an error.
    pub(crate) async fn abort(
        &self,
        snapshot_id: SnapshotId,
        reason: String,
    ) -> Result<(), Status> {
        self.abort_running(snapshot_id, reason)
            .instrument(snapshot_span(snapshot_id))
            .await
    }

    async fn abort_running(&self, snapshot_id: SnapshotId, reason: String) -> Result<(), Status> {
        if self.running().contains_key(&snapshot_id) {
            self.fail_running(snapshot_id, Failure::Aborted(reason).to_string())
                .await;
            return Ok(());
        }
        match self.store.snapshot(snapshot_id).await {
            Ok(Some(r)) if r.state() == SnapshotState::Failed => Ok(()),
            Ok(Some(r)) => Err(Status::failed_precondition(format!(
                "snapshot {snapshot_id} is {}, not running",
                r.state()
            ))),
            Ok(None) => Err(Status::not_found(format!(
                "snapshot {snapshot_id} is not running"
            ))),
            Err(e) => Err(unavailable("reading the snapshot's state", e)),
        }
    }

    /// Fails a running snapshot: no insert of it runs or starts afterwards, its record says
    /// failed and why, its rows are dropped, and the spool forgets it.
    pub(crate) async fn fail_running(&self, snapshot_id: SnapshotId, message: String) {
        let Some(gate) = self.gate(snapshot_id) else {
            return;
        };
        let _alone = gate.write().await;
        let Some(record) = self.running().get(&snapshot_id).map(|s| s.record.clone()) else {
            return;
        };
        self.fail_record(record, message).await;
        self.forget(snapshot_id).await;
    }

    /// Records a running snapshot's failure and drops its rows, retrying while ClickHouse
    /// fails. A record that is not running is left as it is (the service holds only running
    /// ones, so that would be a bug), and said so.
    pub(crate) async fn fail_record(&self, mut record: SnapshotRecord, message: String) {
        let snapshot_id = record.snapshot_id;
        warn!(
            snapshot_id = snapshot_id.get(),
            "snapshot failed: {message}"
        );
        if let Err(e) = record.transition(Transition::Fail(message), unix_now()) {
            error!("{e}");
            return;
        }
        let mut backoff = Backoff::new();
        loop {
            let result = async {
                self.store.record_snapshot(&record).await?;
                self.store.drop_snapshot_rows(snapshot_id).await
            }
            .await;
            match result {
                Ok(()) => return,
                Err(e) => {
                    warn!(
                        snapshot_id = snapshot_id.get(),
                        "marking the snapshot failed, will retry: {e}"
                    );
                    backoff.wait().await;
                }
            }
        }
    }

    /// Fails running snapshots that have heard nothing for `abandon_after`.
    pub(crate) async fn watch_abandoned(self: Arc<Self>) {
        let limit = self.options.abandon_after;
        let period = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            tokio::time::sleep(period).await;
            let abandoned: Vec<SnapshotId> = self
                .running()
                .iter()
                .filter(|(_, s)| s.commit.is_none() && s.last_heard.elapsed() > limit)
                .map(|(id, _)| *id)
                .collect();
            for snapshot_id in abandoned {
                self.fail_running(snapshot_id, Failure::Abandoned(limit).to_string())
                    .instrument(snapshot_span(snapshot_id))
                    .await;
            }
        }
    }
}
