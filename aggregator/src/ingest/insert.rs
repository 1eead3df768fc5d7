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

/// Most rows in one INSERT of several chunks (a chunk larger than this goes alone): ClickHouse
/// sorts and writes each INSERT as one part, so larger ones leave fewer parts to merge, but it
/// holds each in memory while it sorts it, about 200 bytes a row per insert worker (at 2^20
/// rows ClickHouse's peak RSS over an import of 10^7 entries went from 1.0 to 1.7 GB, for no
/// time saved). Each is one block, stored whole or not at all
/// ([`crate::store::Store::begin_insert`]).
const INSERT_ROWS: u64 = 1 << 18;

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
            let Some(jobs) = next_jobs(&queue, &mut carried).await else {
                return;
            };
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
        let rows = pending.iter().map(|&i| jobs[i].rows).sum();
        let mut insert = self.store.begin_insert(snapshot_id, rows).await?;
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

/// A worker's next INSERT: the job it carried over from its last take, or the next job in the
/// queue, with the jobs of the same snapshot queued right behind it, up to [`INSERT_ROWS`]
/// rows; the first job of another snapshot, or the one that would take the rows past that, is
/// carried over to the next take. `None` once the queue is closed.
///
/// A worker carrying a job never waits for the queue: the worker holding it may be waiting for
/// a job that never comes (every scan has sent its last chunk), and the carried one, perhaps
/// the last chunk a commit waits for, would wait with it.
async fn next_jobs(queue: &JobQueue, carried: &mut Option<Job>) -> Option<Vec<Job>> {
    let (first, mut queue) = match carried.take() {
        Some(job) => (job, queue.try_lock().ok()),
        None => {
            let mut queue = queue.lock().await;
            (queue.recv().await?, Some(queue))
        }
    };
    let mut rows = first.rows;
    let mut jobs = vec![first];
    let Some(queue) = queue.as_mut() else {
        return Some(jobs);
    };
    while rows < INSERT_ROWS {
        match queue.try_recv() {
            Ok(job) if job.snapshot_id == jobs[0].snapshot_id && rows + job.rows <= INSERT_ROWS => {
                rows += job.rows;
                jobs.push(job);
            }
            Ok(job) => {
                *carried = Some(job);
                break;
            }
            Err(_) => break,
        }
    }
    Some(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn job(snapshot: u64, seq: u64) -> Job {
        Job {
            snapshot_id: SnapshotId::new(snapshot),
            rank: 0,
            seq,
            rows: 10,
            path: PathBuf::from(format!("{snapshot}-{seq}")),
            batch: None,
        }
    }

    fn seqs(jobs: &[Job]) -> Vec<(u64, u64)> {
        jobs.iter().map(|j| (j.snapshot_id.get(), j.seq)).collect()
    }

    #[tokio::test]
    async fn a_take_stops_at_another_snapshot_and_carries_its_job_over() {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue: JobQueue = Arc::new(tokio::sync::Mutex::new(rx));
        for j in [job(1, 0), job(1, 1), job(2, 0), job(2, 1)] {
            tx.send(j).unwrap();
        }
        let mut carried = None;
        let first = next_jobs(&queue, &mut carried).await.unwrap();
        assert_eq!(seqs(&first), [(1, 0), (1, 1)]);
        assert_eq!(carried.as_ref().map(|j| j.seq), Some(0));
        let second = next_jobs(&queue, &mut carried).await.unwrap();
        assert_eq!(seqs(&second), [(2, 0), (2, 1)]);
        assert!(carried.is_none());
        drop(tx);
        assert!(next_jobs(&queue, &mut carried).await.is_none());
    }

    #[tokio::test]
    async fn a_take_stops_before_the_rows_would_pass_the_insert_size() {
        let (tx, rx) = mpsc::unbounded_channel();
        let queue: JobQueue = Arc::new(tokio::sync::Mutex::new(rx));
        let sized = |seq, rows| Job {
            rows,
            ..job(1, seq)
        };
        for j in [
            sized(0, INSERT_ROWS / 2),
            sized(1, INSERT_ROWS / 2),
            sized(2, 1),
            sized(3, 2 * INSERT_ROWS),
        ] {
            tx.send(j).unwrap();
        }
        let mut carried = None;
        let first = next_jobs(&queue, &mut carried).await.unwrap();
        assert_eq!(seqs(&first), [(1, 0), (1, 1)]);
        assert!(carried.is_none());
        let second = next_jobs(&queue, &mut carried).await.unwrap();
        assert_eq!(seqs(&second), [(1, 2)]);
        assert_eq!(carried.as_ref().map(|j| j.seq), Some(3));
        // A chunk larger than an insert goes alone.
        let third = next_jobs(&queue, &mut carried).await.unwrap();
        assert_eq!(seqs(&third), [(1, 3)]);
    }

    /// Another worker holds the queue, waiting for a job that never comes: a worker carrying
    /// one goes on with it.
    #[tokio::test]
    async fn a_carried_job_goes_while_another_worker_waits_on_the_queue() {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let queue: JobQueue = Arc::new(tokio::sync::Mutex::new(rx));
        let waiting = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.lock().await.recv().await.map(|j| j.seq) })
        };
        while queue.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        let mut carried = Some(job(1, 7));
        let jobs = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            next_jobs(&queue, &mut carried),
        )
        .await
        .expect("a worker carrying a job does not wait for the queue")
        .unwrap();
        assert_eq!(seqs(&jobs), [(1, 7)]);
        drop(tx);
        assert_eq!(waiting.await.unwrap(), None);
    }
}
