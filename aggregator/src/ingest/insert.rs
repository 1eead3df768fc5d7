//! The insert workers: they move spooled chunks into ClickHouse, each exactly once. Chunks of
//! one snapshot waiting together go in one INSERT; an insert whose outcome is unknown is
//! followed by counting what landed per chunk before anything is sent again. A chunk leaves
//! the spool once its rows are stored.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use tracing::{Instrument, warn};

use storage_tracker_proto::{ChunkError, SnapshotId, ValidChunk};

use super::memory::Kept;
use super::{Backoff, Busy, Inner, Job, JobQueue, SETTLE_PATIENCE, snapshot_span};
use crate::store::StoreError;

/// Most rows in one INSERT: well below ClickHouse's block size (1,048,576 rows), so an INSERT
/// is stored whole or not at all.
const INSERT_ROWS: u64 = 262_144;

/// Times ClickHouse may answer an insert with an error before the snapshot is failed.
const MAX_REFUSED_INSERTS: u32 = 5;

/// Why one attempt at an insert did not store its chunks.
#[derive(Debug, thiserror::Error)]
enum InsertError {
    /// ClickHouse failed or refused: count what landed, and try again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing to try again: the snapshot fails.
    #[error(transparent)]
    Failure(#[from] InsertFailure),
}

/// Why a spooled chunk could not be read back.
#[derive(Debug, thiserror::Error)]
enum SpoolReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Decode(#[from] ChunkError),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// Why an insert fails its snapshot: the message the failed record keeps.
#[derive(Debug, thiserror::Error)]
enum InsertFailure {
    #[error("the spooled chunk {} cannot be read: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: SpoolReadError,
    },
    #[error("ClickHouse refused an insert {MAX_REFUSED_INSERTS} times: {0}")]
    Refused(StoreError),
}

impl Inner {
    /// Moves spooled chunks into ClickHouse until the service stops. Chunks of one snapshot
    /// waiting together go in one INSERT of up to [`INSERT_ROWS`] rows: fewer, larger parts
    /// for ClickHouse to merge.
    pub(crate) async fn insert_worker(self: Arc<Self>, queue: JobQueue) {
        let mut carried: Option<Job> = None;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let mut jobs = Vec::new();
            {
                let mut queue = queue.lock().await;
                let first = match carried.take() {
                    Some(job) => job,
                    None => match queue.recv().await {
                        Some(job) => job,
                        None => return,
                    },
                };
                let mut rows = first.rows;
                jobs.push(first);
                while rows < INSERT_ROWS {
                    match queue.try_recv() {
                        Ok(job) if job.snapshot_id == jobs[0].snapshot_id => {
                            rows += job.rows;
                            jobs.push(job);
                        }
                        Ok(job) => {
                            carried = Some(job);
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            // Taken while stopping: left in the spool, queued again at the next start.
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let snapshot_id = jobs[0].snapshot_id;
            self.insert_jobs(jobs)
                .instrument(snapshot_span(snapshot_id))
                .await;
        }
    }

    /// Stores chunks of one snapshot, then takes them out of the spool; fails the snapshot
    /// when they cannot be stored.
    async fn insert_jobs(&self, mut jobs: Vec<Job>) {
        let _busy = Busy::new(&self.busy);
        let snapshot_id = jobs[0].snapshot_id;
        // Kept chunks hold their share of the budget until they are stored.
        let kept: Vec<Option<(ValidChunk, _)>> =
            jobs.iter_mut().map(|job| job.batch.take()).collect();
        let Some(gate) = self.gate(snapshot_id) else {
            return;
        };
        let shared = gate.read().await;
        if !self.running().contains_key(&snapshot_id) {
            return;
        }
        let started = Instant::now();
        let outcome = self.insert_exactly_once(snapshot_id, &jobs, &kept).await;
        drop(kept);
        if outcome.is_ok() {
            self.options.metrics.inserted(
                jobs.iter().map(|j| j.rows).sum::<u64>(),
                started.elapsed().as_secs_f64(),
            );
        }
        drop(shared);
        if let Err(failure) = outcome {
            self.fail_running(snapshot_id, failure.to_string()).await;
            return;
        }
        for job in &jobs {
            if let Err(e) = self.spool().remove_chunk(&job.path) {
                warn!("{e}");
            }
        }
        if let Some(s) = self.running().get_mut(&snapshot_id) {
            s.unstored -= jobs.len();
        }
        self.progressed.notify_waiters();
    }

    /// Sends the `pending` chunks as one INSERT: a kept chunk as it is, another read back from
    /// the spool (one decode at a time) and dropped once sent.
    async fn insert_once(
        &self,
        snapshot_id: SnapshotId,
        jobs: &[Job],
        kept: &[Option<(ValidChunk, Kept)>],
        pending: &[usize],
    ) -> Result<(), InsertError> {
        let mut insert = self.store.begin_insert(snapshot_id).await?;
        for &i in pending {
            let job = &jobs[i];
            let read;
            let chunk = match &kept[i] {
                Some((chunk, _)) => chunk,
                None => {
                    let decoding = self.memory.decoding().await;
                    read = read_spooled(job.path.clone(), job.rows)
                        .await
                        .map_err(|source| InsertFailure::Unreadable {
                            path: job.path.clone(),
                            source,
                        })?;
                    drop(decoding);
                    &read
                }
            };
            insert.write(job.rank, job.seq, chunk.columns()).await?;
        }
        Ok(insert.end().await?)
    }

    /// Inserts chunks as one INSERT, retrying while ClickHouse fails. After a failed insert it
    /// counts what landed, per chunk: a chunk stored whole (the answer was lost) is done, one
    /// not stored goes again, and a part of one is deleted before it goes again. ClickHouse
    /// refusing the insert (rather than failing to answer) several times over is an error, and
    /// so is a spooled chunk that cannot be read.
    async fn insert_exactly_once(
        &self,
        snapshot_id: SnapshotId,
        jobs: &[Job],
        kept: &[Option<(ValidChunk, Kept)>],
    ) -> Result<(), InsertFailure> {
        let mut pending: Vec<usize> = (0..jobs.len()).collect();
        let mut backoff = Backoff::new();
        let mut refused = 0;
        loop {
            let e = match self.insert_once(snapshot_id, jobs, kept, &pending).await {
                Ok(()) => return Ok(()),
                Err(InsertError::Failure(failure)) => return Err(failure),
                Err(InsertError::Store(e)) => e,
            };
            if !e.is_transient() {
                refused += 1;
                if refused == MAX_REFUSED_INSERTS {
                    return Err(InsertFailure::Refused(e));
                }
            }
            warn!(
                snapshot_id = snapshot_id.get(),
                chunks = pending.len(),
                "storing chunks failed, will retry: {e}"
            );
            // Find out what landed, once ClickHouse answers again and the failed insert (which
            // may outlive its connection) has finished.
            let stored = loop {
                backoff.wait().await;
                let settled = self
                    .store
                    .settle_inserts(snapshot_id, SETTLE_PATIENCE)
                    .await;
                match settled.and(Ok(())) {
                    Ok(()) => match self.store.chunk_counts(snapshot_id).await {
                        Ok(counts) => break counts,
                        Err(e) => warn!(
                            snapshot_id = snapshot_id.get(),
                            "ClickHouse is still failing: {e}"
                        ),
                    },
                    Err(e) => warn!(
                        snapshot_id = snapshot_id.get(),
                        "ClickHouse is still failing: {e}"
                    ),
                }
            };
            let mut again = Vec::new();
            for &i in &pending {
                let job = &jobs[i];
                let landed = stored
                    .iter()
                    .find(|c| (c.rank, c.seq) == (job.rank, job.seq))
                    .map_or(0, |c| c.rows);
                if landed == job.rows {
                    continue;
                }
                if landed > 0 {
                    warn!(
                        snapshot_id = snapshot_id.get(),
                        rank = job.rank,
                        seq = job.seq,
                        "{landed} of {} rows landed; deleting them before inserting again",
                        job.rows
                    );
                    while let Err(e) = self
                        .store
                        .delete_chunk_rows(snapshot_id, job.rank, job.seq)
                        .await
                    {
                        warn!("deleting a partial chunk: {e}");
                        backoff.wait().await;
                    }
                }
                again.push(i);
            }
            if again.is_empty() {
                return Ok(());
            }
            pending = again;
        }
    }
}

/// Decodes a chunk from the spool (and checks its rows again: the spool is a file like any
/// other).
async fn read_spooled(path: PathBuf, rows: u64) -> Result<ValidChunk, SpoolReadError> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path)?;
        Ok(ValidChunk::decode(Bytes::from(bytes), rows)?)
    })
    .await?
}
