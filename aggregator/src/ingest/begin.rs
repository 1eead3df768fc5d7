//! A scan begins: the request is checked, the snapshot gets the next id, and its first record
//! is spooled and stored in ClickHouse before the snapshot runs. A begin sent again by the
//! same scan (its answer was lost) gets the same snapshot.

use std::time::Instant;

use tonic::Status;
use tracing::{Instrument, info, warn};

use storage_tracker_proto::v1::BeginSnapshotRequest;
use storage_tracker_proto::{SCHEMA_VERSION, SnapshotId};

use super::{Inner, Running, snapshot_span, unavailable};
use crate::metrics::SpoolWrite;
use crate::snapshot::{SnapshotRecord, unix_now_ns};

impl Inner {
    /// Begins a snapshot; its id.
    pub(crate) async fn begin(&self, r: BeginSnapshotRequest) -> Result<SnapshotId, Status> {
        if let Some(refused) = begin_refusal(&r) {
            return Err(refused.status());
        }
        let _allocating = self.begin_lock.lock().await;
        // The same scan asking again (its answer was lost): the same snapshot.
        if !r.scan_id.is_empty()
            && let Some(running) = self
                .running()
                .values_mut()
                .find(|s| s.record.scan_id == r.scan_id)
        {
            running.last_heard = Instant::now();
            return Ok(running.record.snapshot_id);
        }
        // The start as the scanner saw it, to the nanosecond where it says so; now if not at all.
        let started_at_ns = match (r.started_at_ns, r.started_at) {
            (ns, _) if ns > 0 => ns,
            (_, s) if s > 0 => s.saturating_mul(1_000_000_000),
            _ => unix_now_ns(),
        };
        let snapshot_id = self
            .store
            .next_snapshot_id()
            .await
            .map_err(|e| unavailable("allocating a snapshot id", e))?;
        let record = SnapshotRecord::begun(snapshot_id, r, started_at_ns);
        self.run(record)
            .instrument(snapshot_span(snapshot_id))
            .await?;
        Ok(snapshot_id)
    }

    /// Spools and stores the first record of a snapshot, then runs it. Spooled first: a spool
    /// without room refuses the scan before ClickHouse knows of it, so a scanner that waits for
    /// room leaves no failed snapshot behind (a record spooled and not stored is stored when
    /// the spool is recovered).
    async fn run(&self, record: SnapshotRecord) -> Result<(), Status> {
        let snapshot_id = record.snapshot_id;
        let spooled = record.clone();
        if let Err(e) = self
            .spool_write(SpoolWrite::Record, move |spool| spool.begin(&spooled))
            .await
        {
            self.unspool(snapshot_id).await;
            return Err(e.unavailable("BeginSnapshot", "spooling the snapshot's record"));
        }
        if let Err(e) = self.store.record_snapshot(&record).await {
            self.unspool(snapshot_id).await;
            return Err(unavailable("recording the snapshot", e));
        }
        info!(snapshot_id = snapshot_id.get(), ranks = record.ranks, label = %record.filesystem_label, root = %String::from_utf8_lossy(&record.root_path), "snapshot begun");
        self.running().insert(snapshot_id, Running::new(record));
        Ok(())
    }

    /// Removes what the spool holds of a snapshot that did not begin.
    async fn unspool(&self, snapshot_id: SnapshotId) {
        let spool = self.spool().clone();
        if let Err(e) = Self::blocking(move || spool.remove(snapshot_id)).await {
            warn!("{e}");
        }
    }
}

/// Why a scan cannot be begun.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeginRefused {
    #[error(
        "the scanner writes entry schema version {0}, this aggregator stores version {SCHEMA_VERSION}: run matching versions"
    )]
    SchemaVersion(u32),
    #[error("root_path must be an absolute path")]
    RelativeRoot,
    #[error("a scan has at least one rank")]
    NoRanks,
}

impl BeginRefused {
    /// The answer to BeginSnapshot.
    pub fn status(&self) -> Status {
        match self {
            Self::SchemaVersion(_) => Status::failed_precondition(self.to_string()),
            Self::RelativeRoot | Self::NoRanks => Status::invalid_argument(self.to_string()),
        }
    }
}

/// Why a scan described by `r` cannot be begun, if it cannot: another entry schema, a root that
/// is not absolute, no ranks. The import checks an offline scan's manifest with it too.
pub(crate) fn begin_refusal(r: &BeginSnapshotRequest) -> Option<BeginRefused> {
    if r.schema_version != SCHEMA_VERSION {
        return Some(BeginRefused::SchemaVersion(r.schema_version));
    }
    if r.root_path.first() != Some(&b'/') {
        return Some(BeginRefused::RelativeRoot);
    }
    if r.ranks == 0 {
        return Some(BeginRefused::NoRanks);
    }
    None
}
