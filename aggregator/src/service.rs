//! The ingest gRPC service: the snapshot lifecycle as the scanner drives it.
//!
//! A chunk is acknowledged only after its rows and its record in `chunks` are stored; a chunk
//! sent again is acknowledged without a second insert. Finish verifies every rank's totals
//! against what was stored before computing rollups and committing; any mismatch fails the
//! snapshot and drops its rows, so a query never sees a partial snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use storage_tracker_proto::v1::ingest_server::Ingest;
use storage_tracker_proto::v1::{
    AbortSnapshotRequest, AbortSnapshotResponse, BeginSnapshotRequest, BeginSnapshotResponse,
    Chunk, ChunkAck, FinishSnapshotRequest, FinishSnapshotResponse,
};
use storage_tracker_proto::{SCHEMA_VERSION, decode_chunk};

use crate::store::{STATE_COMMITTED, STATE_FAILED, STATE_RUNNING, SnapshotRecord, Store, unix_now};

/// What the aggregator knows of a snapshot that is still running.
#[derive(Debug)]
struct Running {
    record: SnapshotRecord,
    /// Per rank: the sequence numbers stored and the rows they held.
    ranks: BTreeMap<u32, RankProgress>,
}

#[derive(Debug, Default)]
struct RankProgress {
    seqs: BTreeSet<u64>,
    rows: u64,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    running: Mutex<HashMap<u64, Running>>,
    /// Serializes id allocation with the insert of the snapshot's first record.
    begin_lock: tokio::sync::Mutex<()>,
}

/// The tonic service; cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestService {
    inner: Arc<Inner>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{what}: {e}"))
}

impl IngestService {
    pub fn new(store: Store) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                running: Mutex::new(HashMap::new()),
                begin_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Stores one chunk and returns its acknowledgement.
    async fn store_chunk(&self, chunk: Chunk) -> Result<ChunkAck, Status> {
        let Chunk {
            snapshot_id,
            rank,
            seq,
            rows,
            parquet,
        } = chunk;
        let what = format!("chunk (snapshot {snapshot_id}, rank {rank}, seq {seq})");
        let ack = |stored| ChunkAck {
            snapshot_id,
            rank,
            seq,
            stored,
        };
        {
            let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            let Some(snapshot) = running.get(&snapshot_id) else {
                return Err(Status::failed_precondition(format!(
                    "{what}: snapshot {snapshot_id} is not running (never begun, committed or failed)"
                )));
            };
            if rank >= snapshot.record.ranks {
                return Err(Status::invalid_argument(format!(
                    "{what}: the snapshot has {} ranks",
                    snapshot.record.ranks
                )));
            }
            if snapshot
                .ranks
                .get(&rank)
                .is_some_and(|r| r.seqs.contains(&seq))
            {
                return Ok(ack(false));
            }
        }
        let parquet_bytes = parquet.len() as u64;
        let batch = tokio::task::spawn_blocking(move || decode_chunk(parquet, rows))
            .await
            .map_err(|e| Status::internal(format!("{what}: decoding task failed: {e}")))?
            .map_err(|e| Status::invalid_argument(format!("{what} rejected: {e}")))?;
        self.store
            .insert_chunk(snapshot_id, rank, seq, &batch, parquet_bytes)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::ClickHouse { .. } => {
                    unavailable(&format!("{what} was not stored, send it again"), e)
                }
                other => Status::invalid_argument(format!("{what} rejected: {other}")),
            })?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let Some(snapshot) = running.get_mut(&snapshot_id) else {
            // Aborted while this chunk was being inserted; the abort drops its rows.
            return Err(Status::failed_precondition(format!(
                "{what}: snapshot {snapshot_id} was aborted"
            )));
        };
        let progress = snapshot.ranks.entry(rank).or_default();
        if progress.seqs.insert(seq) {
            progress.rows += batch.num_rows() as u64;
        }
        Ok(ack(true))
    }

    /// Marks a snapshot failed and drops its rows.
    async fn fail(&self, mut record: SnapshotRecord, message: String) -> Result<(), Status> {
        warn!(
            snapshot_id = record.snapshot_id,
            "snapshot failed: {message}"
        );
        record.version += 1;
        record.state = STATE_FAILED;
        record.finished_at = unix_now();
        record.message = message;
        self.store
            .record_snapshot(&record)
            .await
            .map_err(|e| unavailable("recording the failure", e))?;
        self.store
            .drop_snapshot_rows(record.snapshot_id)
            .await
            .map_err(|e| unavailable("dropping the failed snapshot's rows", e))
    }

    /// Fails the snapshot and returns the status that tells the scanner so.
    async fn refuse(&self, record: SnapshotRecord, message: String, code: tonic::Code) -> Status {
        let snapshot_id = record.snapshot_id;
        match self.fail(record, message.clone()).await {
            Ok(()) => Status::new(
                code,
                format!("snapshot {snapshot_id}: {message}; it is marked failed"),
            ),
            Err(status) => status,
        }
    }
}

/// Compares what the ranks say they sent with what was stored; the first difference, if any.
fn verify_totals(
    record: &SnapshotRecord,
    stored: &BTreeMap<u32, RankProgress>,
    reported: &[storage_tracker_proto::v1::RankTotals],
    counted: &HashMap<u32, u64>,
) -> Result<(), String> {
    if reported.len() != record.ranks as usize {
        return Err(format!(
            "{} rank totals reported, the snapshot has {} ranks",
            reported.len(),
            record.ranks
        ));
    }
    for t in reported {
        let progress = stored.get(&t.rank);
        let chunks = progress.map_or(0, |p| p.seqs.len() as u64);
        let contiguous = progress.is_none_or(|p| {
            p.seqs
                .last()
                .is_none_or(|&last| last + 1 == p.seqs.len() as u64)
        });
        if chunks != t.chunks || !contiguous {
            return Err(format!(
                "rank {} sent {} chunks, {} were stored (contiguous: {contiguous})",
                t.rank, t.chunks, chunks
            ));
        }
        let rows = progress.map_or(0, |p| p.rows);
        let in_store = counted.get(&t.rank).copied().unwrap_or(0);
        if rows != t.entries || in_store != t.entries {
            return Err(format!(
                "rank {} scanned {} entries; {} were acknowledged and {} are stored",
                t.rank, t.entries, rows, in_store
            ));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn begin_snapshot(
        &self,
        request: Request<BeginSnapshotRequest>,
    ) -> Result<Response<BeginSnapshotResponse>, Status> {
        let r = request.into_inner();
        if r.schema_version != SCHEMA_VERSION {
            return Err(Status::failed_precondition(format!(
                "the scanner writes entry schema version {}, this aggregator stores version {SCHEMA_VERSION}: run matching versions",
                r.schema_version
            )));
        }
        if r.root_path.first() != Some(&b'/') {
            return Err(Status::invalid_argument(
                "root_path must be an absolute path",
            ));
        }
        if r.ranks == 0 {
            return Err(Status::invalid_argument("a scan has at least one rank"));
        }
        let _allocating = self.inner.begin_lock.lock().await;
        let snapshot_id = self
            .inner
            .store
            .next_snapshot_id()
            .await
            .map_err(|e| unavailable("allocating a snapshot id", e))?;
        let record = SnapshotRecord {
            snapshot_id,
            version: 1,
            state: STATE_RUNNING,
            filesystem_label: r.filesystem_label,
            root_path: r.root_path,
            hosts: r.hosts,
            ranks: r.ranks,
            scanner_version: r.scanner_version,
            schema_version: r.schema_version,
            started_at: unix_now(),
            finished_at: 0,
            entries: 0,
            errors: 0,
            apparent_bytes: 0,
            message: String::new(),
        };
        self.inner
            .store
            .record_snapshot(&record)
            .await
            .map_err(|e| unavailable("recording the snapshot", e))?;
        info!(snapshot_id, ranks = record.ranks, label = %record.filesystem_label, root = %String::from_utf8_lossy(&record.root_path), "snapshot begun");
        self.running().insert(
            snapshot_id,
            Running {
                record,
                ranks: BTreeMap::new(),
            },
        );
        Ok(Response::new(BeginSnapshotResponse { snapshot_id }))
    }

    type StreamChunksStream = ReceiverStream<Result<ChunkAck, Status>>;

    async fn stream_chunks(
        &self,
        request: Request<Streaming<Chunk>>,
    ) -> Result<Response<Self::StreamChunksStream>, Status> {
        let mut inbound = request.into_inner();
        let (acks, rx) = mpsc::channel(16);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(chunk)) => {
                        let result = inner.store_chunk(chunk).await;
                        let failed = result.is_err();
                        if let Err(status) = &result {
                            warn!("{}", status.message());
                        }
                        if acks.send(result).await.is_err() || failed {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        warn!("a scanner's chunk stream broke: {status}");
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn finish_snapshot(
        &self,
        request: Request<FinishSnapshotRequest>,
    ) -> Result<Response<FinishSnapshotResponse>, Status> {
        let FinishSnapshotRequest {
            snapshot_id,
            ranks,
            users,
            groups,
        } = request.into_inner();
        let Some(running) = self.running().remove(&snapshot_id) else {
            return Err(Status::failed_precondition(format!(
                "snapshot {snapshot_id} is not running (never begun, committed or failed)"
            )));
        };
        let counted: HashMap<u32, u64> = match self.inner.store.rows_per_rank(snapshot_id).await {
            Ok(rows) => rows.into_iter().map(|c| (c.rank, c.rows)).collect(),
            Err(e) => {
                self.running().insert(snapshot_id, running);
                return Err(unavailable("counting the stored rows", e));
            }
        };
        if let Err(mismatch) = verify_totals(&running.record, &running.ranks, &ranks, &counted) {
            let message = format!("verification failed: {mismatch}");
            return Err(self
                .inner
                .refuse(running.record, message, tonic::Code::FailedPrecondition)
                .await);
        }

        if let Err(e) = self
            .inner
            .store
            .insert_principals(snapshot_id, &users, &groups)
            .await
        {
            let message = format!("storing owner and group names failed: {e}");
            return Err(self
                .inner
                .refuse(running.record, message, tonic::Code::Unavailable)
                .await);
        }

        let start = Instant::now();
        let directories = match self
            .inner
            .store
            .compute_rollups(snapshot_id, &running.record.root_path)
            .await
        {
            Ok(n) => n,
            Err(e) => {
                let message = format!("computing rollups failed: {e}");
                return Err(self
                    .inner
                    .refuse(running.record, message, tonic::Code::Unavailable)
                    .await);
            }
        };
        let rollup_seconds = start.elapsed().as_secs_f64();

        let mut record = running.record;
        record.version += 1;
        record.state = STATE_COMMITTED;
        record.finished_at = unix_now();
        record.entries = ranks.iter().map(|t| t.entries).sum();
        record.errors = ranks.iter().map(|t| t.errors).sum();
        record.apparent_bytes = ranks.iter().map(|t| t.apparent_bytes).sum();
        if let Err(e) = self.inner.store.record_snapshot(&record).await {
            let message = format!("recording the commit failed: {e}");
            return Err(self
                .inner
                .refuse(record, message, tonic::Code::Unavailable)
                .await);
        }
        info!(
            snapshot_id,
            entries = record.entries,
            errors = record.errors,
            directories,
            rollup_seconds,
            "snapshot committed"
        );
        Ok(Response::new(FinishSnapshotResponse {
            snapshot_id,
            entries: record.entries,
            directories,
            rollup_seconds,
        }))
    }

    async fn abort_snapshot(
        &self,
        request: Request<AbortSnapshotRequest>,
    ) -> Result<Response<AbortSnapshotResponse>, Status> {
        let AbortSnapshotRequest {
            snapshot_id,
            reason,
        } = request.into_inner();
        let Some(running) = self.running().remove(&snapshot_id) else {
            return Err(Status::not_found(format!(
                "snapshot {snapshot_id} is not running"
            )));
        };
        self.inner
            .fail(running.record, format!("aborted by the scanner: {reason}"))
            .await?;
        Ok(Response::new(AbortSnapshotResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_tracker_proto::v1::RankTotals;

    fn record(ranks: u32) -> SnapshotRecord {
        SnapshotRecord {
            snapshot_id: 1,
            version: 1,
            state: STATE_RUNNING,
            filesystem_label: String::new(),
            root_path: b"/".to_vec(),
            hosts: Vec::new(),
            ranks,
            scanner_version: String::new(),
            schema_version: SCHEMA_VERSION,
            started_at: 0,
            finished_at: 0,
            entries: 0,
            errors: 0,
            apparent_bytes: 0,
            message: String::new(),
        }
    }

    fn totals(rank: u32, chunks: u64, entries: u64) -> RankTotals {
        RankTotals {
            rank,
            chunks,
            entries,
            ..Default::default()
        }
    }

    #[test]
    fn verification_accepts_matching_totals_and_names_the_first_difference() {
        let mut stored = BTreeMap::new();
        stored.insert(
            0,
            RankProgress {
                seqs: [0, 1].into(),
                rows: 10,
            },
        );
        let counted: HashMap<u32, u64> = [(0, 10)].into();
        let r = record(2);
        assert!(verify_totals(&r, &stored, &[totals(0, 2, 10), totals(1, 0, 0)], &counted).is_ok());
        let e =
            verify_totals(&r, &stored, &[totals(0, 3, 10), totals(1, 0, 0)], &counted).unwrap_err();
        assert!(e.contains("rank 0 sent 3 chunks, 2 were stored"), "{e}");
        let e = verify_totals(&r, &stored, &[totals(0, 2, 10)], &counted).unwrap_err();
        assert!(e.contains("1 rank totals reported"), "{e}");
        let doubled: HashMap<u32, u64> = [(0, 20)].into();
        let e =
            verify_totals(&r, &stored, &[totals(0, 2, 10), totals(1, 0, 0)], &doubled).unwrap_err();
        assert!(e.contains("20 are stored"), "{e}");
    }

    #[test]
    fn verification_rejects_a_gap_in_sequence_numbers() {
        let mut stored = BTreeMap::new();
        stored.insert(
            0,
            RankProgress {
                seqs: [0, 2].into(),
                rows: 10,
            },
        );
        let counted: HashMap<u32, u64> = [(0, 10)].into();
        let e = verify_totals(&record(1), &stored, &[totals(0, 2, 10)], &counted).unwrap_err();
        assert!(e.contains("contiguous: false"), "{e}");
    }
}
