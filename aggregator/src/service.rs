//! The ingest gRPC service: the snapshot lifecycle as the scanner drives it.
//!
//! - A chunk is decoded and checked, written to the spool and fsynced, and only then
//!   acknowledged. Insert workers move spooled chunks into ClickHouse, retrying while it is
//!   down; a chunk whose insert had an unknown outcome is counted in ClickHouse before it is
//!   sent again, so it is stored exactly once. A chunk sent twice is acknowledged twice and
//!   stored once.
//! - Finish is spooled too. Once every acknowledged chunk is stored, the commit verifies each
//!   rank's totals against ClickHouse, computes the reports and marks the snapshot committed.
//!   A restarted aggregator resumes every spooled snapshot where it stopped.
//! - A snapshot that is aborted, fails verification, or hears nothing for `abandon_after` is
//!   marked failed and its rows are dropped, so a query never sees a partial snapshot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use bytes::Bytes;
use tokio::sync::{Notify, RwLock, mpsc, watch};

use storage_tracker_proto::metrics::{Metrics, SECONDS_BUCKETS};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{error, info, warn};

use storage_tracker_proto::v1::ingest_server::Ingest;
use storage_tracker_proto::v1::{
    AbortSnapshotRequest, AbortSnapshotResponse, BeginSnapshotRequest, BeginSnapshotResponse,
    Chunk, ChunkAck, FinishSnapshotRequest, FinishSnapshotResponse, RankTotals,
};
use storage_tracker_proto::{SCHEMA_VERSION, decode_chunk};

use crate::retention::Retention;
use crate::spool::Spool;
use crate::store::{
    ChunkCount, STATE_COMMITTED, STATE_FAILED, STATE_RUNNING, SnapshotRecord, Store, StoreError,
    state_name, unix_now, unix_now_ns, validate_batch,
};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub spool: Spool,
    /// Chunks inserted into ClickHouse at the same time.
    pub insert_workers: usize,
    /// Decoded chunks kept in memory for the insert workers; beyond it they are read back from
    /// the spool, so a ClickHouse outage costs disk, not memory.
    pub memory_budget: usize,
    /// A running snapshot that hears nothing for this long is failed (its scan died).
    pub abandon_after: Duration,
    /// Applied after each commit, to the committed snapshots of the same filesystem label.
    pub retention: Option<Retention>,
    /// Fail running snapshots that ClickHouse knows and the spool does not (on start). Only the
    /// one aggregator serving a database may do this.
    pub fail_unspooled: bool,
    /// Where the service counts chunks, rows, inserts and commits (see `/metrics`).
    pub metrics: Arc<Metrics>,
}

impl ServiceOptions {
    pub fn new(spool: Spool) -> Self {
        Self {
            spool,
            insert_workers: 2,
            memory_budget: 256 << 20,
            abandon_after: Duration::from_secs(3600),
            retention: None,
            fail_unspooled: true,
            metrics: Arc::default(),
        }
    }
}

type Outcome = Option<Result<FinishSnapshotResponse, Status>>;

/// Most rows in one INSERT: well below ClickHouse's block size (1,048,576 rows), so an INSERT
/// is stored whole or not at all.
const INSERT_ROWS: u64 = 262_144;

/// How long an insert whose outcome is unknown may keep running in ClickHouse before it is
/// killed, so that what it stored can be counted.
const SETTLE_PATIENCE: Duration = Duration::from_secs(30);

/// Times ClickHouse may answer an insert with an error before the snapshot is failed.
const MAX_REFUSED_INSERTS: u32 = 5;

/// What the aggregator knows of a snapshot that is still running.
#[derive(Debug)]
struct Running {
    record: SnapshotRecord,
    /// Per rank: the sequence numbers acknowledged and the rows they held.
    ranks: BTreeMap<u32, RankProgress>,
    /// Chunks acknowledged and not yet stored in ClickHouse.
    unstored: usize,
    last_heard: Instant,
    /// Set once finishing; holds the commit's outcome when known.
    commit: Option<watch::Receiver<Outcome>>,
    /// Inserts hold it shared; failing the snapshot holds it alone, so no insert can land
    /// after the snapshot's rows are dropped.
    gate: Arc<RwLock<()>>,
}

impl Running {
    fn new(record: SnapshotRecord) -> Self {
        Self {
            record,
            ranks: BTreeMap::new(),
            unstored: 0,
            last_heard: Instant::now(),
            commit: None,
            gate: Arc::default(),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct RankProgress {
    seqs: BTreeSet<u64>,
    rows: u64,
}

/// A spooled chunk on its way into ClickHouse.
#[derive(Debug)]
struct Job {
    snapshot_id: u64,
    rank: u32,
    seq: u64,
    rows: u64,
    path: PathBuf,
    /// The decoded rows and their size, when the memory budget allowed keeping them.
    batch: Option<(RecordBatch, usize)>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    options: ServiceOptions,
    running: Mutex<HashMap<u64, Running>>,
    /// Serializes id allocation with the insert of the snapshot's first record.
    begin_lock: tokio::sync::Mutex<()>,
    jobs: mpsc::UnboundedSender<Job>,
    /// Signalled whenever a chunk is stored or a snapshot leaves `running`.
    progressed: Notify,
    held_bytes: AtomicUsize,
    /// Set by [`IngestService::shutdown`]: the workers take no new inserts.
    stopping: AtomicBool,
    /// Inserts and commits under way.
    busy: AtomicUsize,
}

/// Counts an insert or commit as under way while it lives.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The tonic service; cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestService {
    inner: Arc<Inner>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{what}: {e}"))
}

/// Exponential backoff from 100 ms to 10 s.
#[derive(Debug)]
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_millis(100))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Duration::from_secs(10));
    }
}

impl IngestService {
    /// Starts the service: resumes every snapshot in the spool, starts the insert workers and
    /// the watch for abandoned snapshots. Needs ClickHouse to answer.
    pub async fn start(store: Store, options: ServiceOptions) -> Result<Self, StartError> {
        let (jobs, queue) = mpsc::unbounded_channel();
        let workers = options.insert_workers.max(1);
        let inner = Arc::new(Inner {
            store,
            options,
            running: Mutex::new(HashMap::new()),
            begin_lock: tokio::sync::Mutex::new(()),
            jobs,
            progressed: Notify::new(),
            held_bytes: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
        });
        inner.recover().await?;
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..workers {
            tokio::spawn(Arc::clone(&inner).insert_worker(Arc::clone(&queue)));
        }
        tokio::spawn(Arc::clone(&inner).watch_abandoned());
        Ok(Self { inner })
    }

    /// The ids of the snapshots running now.
    pub fn running_snapshots(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.inner.running().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Begins a snapshot (as the BeginSnapshot call).
    pub async fn begin(&self, r: BeginSnapshotRequest) -> Result<u64, Status> {
        self.inner.begin(r).await
    }

    /// Stores one chunk (as one message of StreamChunks).
    pub async fn chunk(&self, chunk: Chunk) -> Result<ChunkAck, Status> {
        self.inner.receive_chunk(chunk).await
    }

    /// The service's metrics, with the spool depth brought up to date.
    pub fn metrics(&self) -> &Metrics {
        let m = &self.inner.options.metrics;
        let running = self.inner.running();
        let unstored: usize = running.values().map(|s| s.unstored).sum();
        m.set(
            "storage_tracker_spool_chunks",
            "Chunks acknowledged and spooled, not yet stored in ClickHouse.",
            &[],
            unstored as f64,
        );
        m.set(
            "storage_tracker_running_snapshots",
            "Snapshots being scanned or committed by this aggregator.",
            &[],
            running.len() as f64,
        );
        m
    }

    /// Stops taking work: inserts and commits under way may finish within `grace`; everything
    /// acknowledged and not yet stored stays in the spool for the next start. Whether all work
    /// under way finished.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        while self.inner.busy.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Finishes a snapshot (as the FinishSnapshot call).
    pub async fn finish(
        &self,
        request: FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, Status> {
        Arc::clone(&self.inner).finish(request).await
    }

    /// Fails a running snapshot (as the AbortSnapshot call).
    pub async fn abort(&self, snapshot_id: u64, reason: String) -> Result<(), Status> {
        self.inner.abort(snapshot_id, reason).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading the spool at {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("resuming the spooled snapshots: {0}")]
    Store(#[from] StoreError),
}

/// Why a commit attempt did not commit.
#[derive(Debug)]
enum CommitError {
    /// The snapshot is wrong: fail it.
    Refused(String),
    /// ClickHouse did not answer: try again.
    Store(StoreError),
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl Inner {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spool(&self) -> &Spool {
        &self.options.spool
    }

    /// Runs blocking spool I/O off the async threads.
    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    }

    async fn begin(&self, r: BeginSnapshotRequest) -> Result<u64, Status> {
        if let Some(refused) = begin_refusal(&r) {
            return Err(refused);
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
        let record = SnapshotRecord {
            snapshot_id,
            version: 1,
            state: STATE_RUNNING,
            scan_id: r.scan_id,
            filesystem_label: r.filesystem_label,
            root_path: r.root_path,
            hosts: r.hosts,
            ranks: r.ranks,
            scanner_version: r.scanner_version,
            schema_version: r.schema_version,
            started_at_ns,
            started_at: (started_at_ns.div_euclid(1_000_000_000)) as u32,
            scan_options: r.scan_options,
            ..SnapshotRecord::default()
        };
        self.store
            .record_snapshot(&record)
            .await
            .map_err(|e| unavailable("recording the snapshot", e))?;
        let spool = self.spool().clone();
        let spooled = record.clone();
        if let Err(e) = Self::blocking(move || spool.begin(&spooled)).await {
            let status = unavailable("spooling the snapshot's record", &e);
            self.fail_record(record, format!("the spool failed: {e}"))
                .await;
            return Err(status);
        }
        info!(snapshot_id, ranks = record.ranks, label = %record.filesystem_label, root = %String::from_utf8_lossy(&record.root_path), "snapshot begun");
        self.running().insert(snapshot_id, Running::new(record));
        Ok(snapshot_id)
    }

    /// Spools one chunk and returns its acknowledgement.
    /// [`Self::accept_chunk`], counted in the metrics.
    async fn receive_chunk(&self, chunk: Chunk) -> Result<ChunkAck, Status> {
        let rows = chunk.rows;
        let outcome = self.accept_chunk(chunk).await;
        let result = match &outcome {
            Ok(ack) if ack.stored => "accepted",
            Ok(_) => "duplicate",
            Err(_) => "refused",
        };
        let m = &self.options.metrics;
        m.inc(
            "storage_tracker_chunks_received_total",
            "Chunks received from scanners: accepted (spooled, then acknowledged), duplicate (acknowledged before) or refused.",
            &[("result", result)],
            1.0,
        );
        if result == "accepted" {
            m.inc(
                "storage_tracker_rows_received_total",
                "Entry rows in accepted chunks.",
                &[],
                rows as f64,
            );
        }
        outcome
    }

    async fn accept_chunk(&self, chunk: Chunk) -> Result<ChunkAck, Status> {
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
        let not_running = |snapshot_id| {
            Status::failed_precondition(format!(
                "{what}: snapshot {snapshot_id} is not running (never begun, committed or failed)"
            ))
        };
        {
            let mut running = self.running();
            let Some(snapshot) = running.get_mut(&snapshot_id) else {
                return Err(not_running(snapshot_id));
            };
            snapshot.last_heard = Instant::now();
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
            if snapshot.commit.is_some() {
                return Err(Status::failed_precondition(format!(
                    "{what}: the snapshot is being committed; no chunk can be added"
                )));
            }
        }
        let (batch, parquet) = tokio::task::spawn_blocking(move || {
            let batch = decode_chunk(parquet.clone(), rows).map_err(|e| e.to_string())?;
            validate_batch(&batch).map_err(|e| e.to_string())?;
            Ok::<_, String>((batch, parquet))
        })
        .await
        .map_err(|e| Status::internal(format!("{what}: decoding task failed: {e}")))?
        .map_err(|e| Status::invalid_argument(format!("{what} rejected: {e}")))?;
        let spool = self.spool().clone();
        let path =
            Self::blocking(move || spool.write_chunk(snapshot_id, rank, seq, rows, &parquet))
                .await
                .map_err(|e| {
                    unavailable(&format!("{what} could not be spooled, send it again"), e)
                })?;

        let size = batch.get_array_memory_size();
        let held = self.held_bytes.fetch_add(size, Ordering::Relaxed) + size;
        let batch = if held <= self.options.memory_budget {
            Some((batch, size))
        } else {
            self.held_bytes.fetch_sub(size, Ordering::Relaxed);
            None
        };
        let mut running = self.running();
        let Some(snapshot) = running.get_mut(&snapshot_id) else {
            // Failed while this chunk was being spooled; its spool directory is gone or going.
            return Err(not_running(snapshot_id));
        };
        let progress = snapshot.ranks.entry(rank).or_default();
        if !progress.seqs.insert(seq) {
            // The same chunk arrived twice at once; the other copy is on its way.
            return Ok(ack(false));
        }
        progress.rows += rows;
        snapshot.unstored += 1;
        let job = Job {
            snapshot_id,
            rank,
            seq,
            rows,
            path,
            batch,
        };
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job)
            && let Some((_, size)) = job.batch
        {
            self.held_bytes.fetch_sub(size, Ordering::Relaxed);
        }
        Ok(ack(true))
    }

    /// Moves spooled chunks into ClickHouse until the service is dropped. Chunks of one
    /// snapshot waiting together go in one INSERT of up to [`INSERT_ROWS`] rows: fewer, larger
    /// parts for ClickHouse to merge.
    async fn insert_worker(
        self: Arc<Self>,
        queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>,
    ) {
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
            let _busy = Busy::new(&self.busy);
            let snapshot_id = jobs[0].snapshot_id;
            let held: Vec<Option<RecordBatch>> = jobs
                .iter_mut()
                .map(|job| {
                    job.batch.take().map(|(batch, size)| {
                        self.held_bytes.fetch_sub(size, Ordering::Relaxed);
                        batch
                    })
                })
                .collect();
            let Some(gate) = self
                .running()
                .get(&snapshot_id)
                .map(|s| Arc::clone(&s.gate))
            else {
                continue;
            };
            let shared = gate.read().await;
            if !self.running().contains_key(&snapshot_id) {
                continue;
            }
            let mut batches = Vec::with_capacity(jobs.len());
            let mut unreadable = None;
            for (job, held) in jobs.iter().zip(held) {
                match held {
                    Some(batch) => batches.push(batch),
                    None => match read_spooled(job.path.clone(), job.rows).await {
                        Ok(batch) => batches.push(batch),
                        Err(e) => {
                            unreadable = Some(format!(
                                "the spooled chunk {} cannot be read: {e}",
                                job.path.display()
                            ));
                            break;
                        }
                    },
                }
            }
            let started = Instant::now();
            let failure = match unreadable {
                Some(message) => Some(message),
                None => self
                    .insert_exactly_once(snapshot_id, &jobs, &batches)
                    .await
                    .err()
                    .map(|e| {
                        format!("ClickHouse refused an insert {MAX_REFUSED_INSERTS} times: {e}")
                    }),
            };
            let m = &self.options.metrics;
            if failure.is_none() {
                m.observe(
                    "storage_tracker_insert_duration_seconds",
                    "Time to store one INSERT of spooled chunks in ClickHouse, retries included.",
                    &[],
                    SECONDS_BUCKETS,
                    started.elapsed().as_secs_f64(),
                );
                m.inc(
                    "storage_tracker_rows_inserted_total",
                    "Entry rows stored in ClickHouse.",
                    &[],
                    jobs.iter().map(|j| j.rows).sum::<u64>() as f64,
                );
            }
            drop(shared);
            if let Some(message) = failure {
                self.fail_running(snapshot_id, message).await;
                continue;
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
    }

    /// Inserts chunks as one INSERT, retrying while ClickHouse fails. After a failed insert it
    /// counts what landed, per chunk: a chunk stored whole (the answer was lost) is done, one
    /// not stored goes again, and a part of one is deleted before it goes again. ClickHouse
    /// refusing the insert (rather than failing to answer) several times over is an error.
    async fn insert_exactly_once(
        &self,
        snapshot_id: u64,
        jobs: &[Job],
        batches: &[RecordBatch],
    ) -> Result<(), StoreError> {
        let mut pending: Vec<usize> = (0..jobs.len()).collect();
        let mut backoff = Backoff::new();
        let mut refused = 0;
        loop {
            let chunks: Vec<(u32, u64, &RecordBatch)> = pending
                .iter()
                .map(|&i| (jobs[i].rank, jobs[i].seq, &batches[i]))
                .collect();
            let Err(e) = self.store.insert_chunks(snapshot_id, &chunks).await else {
                return Ok(());
            };
            if !e.is_transient() {
                refused += 1;
                if refused == MAX_REFUSED_INSERTS {
                    return Err(e);
                }
            }
            warn!(
                snapshot_id,
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
                        Err(e) => warn!(snapshot_id, "ClickHouse is still failing: {e}"),
                    },
                    Err(e) => warn!(snapshot_id, "ClickHouse is still failing: {e}"),
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
                        snapshot_id,
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

    async fn finish(
        self: Arc<Self>,
        request: FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, Status> {
        let snapshot_id = request.snapshot_id;
        enum Start {
            NotRunning,
            Mismatch(String),
            Wait(watch::Receiver<Outcome>),
        }
        let start = {
            let mut running = self.running();
            match running.get_mut(&snapshot_id) {
                None => Start::NotRunning,
                Some(s) => {
                    s.last_heard = Instant::now();
                    if let Some(outcome) = &s.commit {
                        Start::Wait(outcome.clone())
                    } else if let Err(mismatch) = verify_chunks(&s.record, &s.ranks, &request.ranks)
                    {
                        Start::Mismatch(mismatch)
                    } else {
                        let (tx, rx) = watch::channel(None);
                        s.commit = Some(rx.clone());
                        tokio::spawn(Arc::clone(&self).commit(request, tx));
                        Start::Wait(rx)
                    }
                }
            }
        };
        let mut outcome = match start {
            Start::NotRunning => return self.answer_finished(snapshot_id).await,
            Start::Mismatch(mismatch) => {
                let message = format!("verification failed: {mismatch}");
                self.fail_running(snapshot_id, message.clone()).await;
                return Err(Status::failed_precondition(format!(
                    "snapshot {snapshot_id}: {message}; it is marked failed"
                )));
            }
            Start::Wait(outcome) => outcome,
        };
        loop {
            if let Some(result) = outcome.borrow_and_update().clone() {
                return result;
            }
            if outcome.changed().await.is_err() {
                return Err(Status::unavailable(format!(
                    "snapshot {snapshot_id}: the commit stopped; ask again"
                )));
            }
        }
    }

    /// The answer to FinishSnapshot for a snapshot that is no longer running.
    async fn answer_finished(&self, snapshot_id: u64) -> Result<FinishSnapshotResponse, Status> {
        let record = self
            .store
            .snapshot(snapshot_id)
            .await
            .map_err(|e| unavailable("reading the snapshot's state", e))?;
        match record {
            Some(r) if r.state == STATE_COMMITTED => Ok(FinishSnapshotResponse {
                snapshot_id,
                entries: r.entries,
                directories: r.directories,
                rollup_seconds: r.commit_seconds,
            }),
            Some(r) => Err(Status::failed_precondition(format!(
                "snapshot {snapshot_id} is {}: {}",
                state_name(r.state),
                r.message
            ))),
            None => Err(Status::not_found(format!(
                "snapshot {snapshot_id} was never begun"
            ))),
        }
    }

    /// Spools the finish request, waits for every chunk to be stored, then commits, retrying
    /// while ClickHouse fails. Publishes the outcome on `tx`.
    async fn commit(self: Arc<Self>, request: FinishSnapshotRequest, tx: watch::Sender<Outcome>) {
        let snapshot_id = request.snapshot_id;
        let spool = self.spool().clone();
        let spooled = request.clone();
        if let Err(e) = Self::blocking(move || spool.write_finish(&spooled)).await {
            if let Some(s) = self.running().get_mut(&snapshot_id) {
                s.commit = None;
            }
            let _ = tx.send(Some(Err(unavailable("spooling the finish request", e))));
            return;
        }
        let _busy = Busy::new(&self.busy);
        let started = Instant::now();
        let outcome = self.commit_spooled(request).await;
        let m = &self.options.metrics;
        m.inc(
            "storage_tracker_commits_total",
            "Finished snapshots by result: committed, or failed (verification or storage).",
            &[(
                "result",
                if outcome.is_ok() {
                    "committed"
                } else {
                    "failed"
                },
            )],
            1.0,
        );
        if outcome.is_ok() {
            m.observe(
                "storage_tracker_commit_duration_seconds",
                "Time from a spooled finish to the committed snapshot: remaining inserts, verification and reports.",
                &[],
                SECONDS_BUCKETS,
                started.elapsed().as_secs_f64(),
            );
        }
        let _ = tx.send(Some(outcome));
    }

    async fn commit_spooled(
        &self,
        request: FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, Status> {
        let snapshot_id = request.snapshot_id;
        // Every acknowledged chunk stored.
        loop {
            let waiting = self.progressed.notified();
            let unstored = self.running().get(&snapshot_id).map(|s| s.unstored);
            match unstored {
                None => return self.answer_finished(snapshot_id).await,
                Some(0) => break,
                Some(_) => {}
            }
            waiting.await;
        }
        let mut backoff = Backoff::new();
        loop {
            let current = self
                .running()
                .get(&snapshot_id)
                .map(|s| (s.record.clone(), s.ranks.clone()));
            let Some((record, ranks)) = current else {
                return self.answer_finished(snapshot_id).await;
            };
            match self.try_commit(record, &ranks, &request).await {
                Ok(done) => return Ok(done),
                Err(CommitError::Refused(mismatch)) => {
                    let message = format!("verification failed: {mismatch}");
                    self.fail_running(snapshot_id, message.clone()).await;
                    return Err(Status::failed_precondition(format!(
                        "snapshot {snapshot_id}: {message}; it is marked failed"
                    )));
                }
                Err(CommitError::Store(e)) if e.is_transient() => {
                    warn!(snapshot_id, "committing failed, will retry: {e}");
                    backoff.wait().await;
                }
                Err(CommitError::Store(e)) => {
                    let message = format!("ClickHouse refused the commit: {e}");
                    self.fail_running(snapshot_id, message.clone()).await;
                    return Err(Status::internal(format!(
                        "snapshot {snapshot_id}: {message}; it is marked failed"
                    )));
                }
            }
        }
    }

    async fn try_commit(
        &self,
        mut record: SnapshotRecord,
        ranks: &BTreeMap<u32, RankProgress>,
        request: &FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, CommitError> {
        let snapshot_id = record.snapshot_id;
        let mut counted: HashMap<u32, u64> = HashMap::new();
        for c in self.store.chunk_counts(snapshot_id).await? {
            *counted.entry(c.rank).or_default() += c.rows;
        }
        verify_totals(&record, ranks, &request.ranks, &counted).map_err(CommitError::Refused)?;
        self.store
            .insert_principals(snapshot_id, &request.users, &request.groups)
            .await?;
        let start = Instant::now();
        let started_at_ns = record.start_ns();
        let directories = self
            .store
            .compute_reports(snapshot_id, &record.root_path, started_at_ns)
            .await?;
        let commit_seconds = start.elapsed().as_secs_f64();
        record.version += 1;
        record.state = STATE_COMMITTED;
        record.finished_at = unix_now();
        record.entries = request.ranks.iter().map(|t| t.entries).sum();
        record.errors = request.ranks.iter().map(|t| t.errors).sum();
        record.apparent_bytes = request.ranks.iter().map(|t| t.apparent_bytes).sum();
        record.directories = directories;
        record.commit_seconds = commit_seconds;
        self.store.record_snapshot(&record).await?;
        self.forget(snapshot_id).await;
        info!(
            snapshot_id,
            entries = record.entries,
            errors = record.errors,
            directories,
            commit_seconds,
            "snapshot committed"
        );
        if let Some(policy) = &self.options.retention {
            match crate::retention::apply(&self.store, policy, &record.filesystem_label, false)
                .await
            {
                Ok(dropped) if !dropped.is_empty() => {
                    info!(label = %record.filesystem_label, ?dropped, "retention dropped snapshots")
                }
                Ok(_) => {}
                Err(e) => warn!("applying the retention policy: {e}"),
            }
        }
        Ok(FinishSnapshotResponse {
            snapshot_id,
            entries: record.entries,
            directories,
            rollup_seconds: commit_seconds,
        })
    }

    /// Removes a snapshot from the spool and from `running`.
    async fn forget(&self, snapshot_id: u64) {
        let spool = self.spool().clone();
        if let Err(e) = Self::blocking(move || spool.remove(snapshot_id)).await {
            warn!("{e}");
        }
        self.running().remove(&snapshot_id);
        self.progressed.notify_waiters();
    }

    async fn abort(&self, snapshot_id: u64, reason: String) -> Result<(), Status> {
        if self.running().contains_key(&snapshot_id) {
            self.fail_running(snapshot_id, format!("aborted by the scanner: {reason}"))
                .await;
            return Ok(());
        }
        match self.store.snapshot(snapshot_id).await {
            Ok(Some(r)) if r.state == STATE_FAILED => Ok(()),
            Ok(Some(r)) => Err(Status::failed_precondition(format!(
                "snapshot {snapshot_id} is {}, not running",
                state_name(r.state)
            ))),
            Ok(None) => Err(Status::not_found(format!(
                "snapshot {snapshot_id} is not running"
            ))),
            Err(e) => Err(unavailable("reading the snapshot's state", e)),
        }
    }

    /// Fails a running snapshot: no insert of it runs or starts afterwards, its record says
    /// failed and why, its rows are dropped, and the spool forgets it.
    async fn fail_running(&self, snapshot_id: u64, message: String) {
        let Some(gate) = self
            .running()
            .get(&snapshot_id)
            .map(|s| Arc::clone(&s.gate))
        else {
            return;
        };
        let _alone = gate.write().await;
        let Some(record) = self.running().get(&snapshot_id).map(|s| s.record.clone()) else {
            return;
        };
        self.fail_record(record, message).await;
        self.forget(snapshot_id).await;
    }

    /// Records a failure and drops the snapshot's rows, retrying while ClickHouse fails.
    async fn fail_record(&self, mut record: SnapshotRecord, message: String) {
        let snapshot_id = record.snapshot_id;
        warn!(snapshot_id, "snapshot failed: {message}");
        record.version += 1;
        record.state = STATE_FAILED;
        record.finished_at = unix_now();
        record.message = message;
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
                    warn!(snapshot_id, "marking the snapshot failed, will retry: {e}");
                    backoff.wait().await;
                }
            }
        }
    }

    /// Fails running snapshots that have heard nothing for `abandon_after`.
    async fn watch_abandoned(self: Arc<Self>) {
        let limit = self.options.abandon_after;
        let period = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
        loop {
            tokio::time::sleep(period).await;
            let abandoned: Vec<u64> = self
                .running()
                .iter()
                .filter(|(_, s)| s.commit.is_none() && s.last_heard.elapsed() > limit)
                .map(|(id, _)| *id)
                .collect();
            for snapshot_id in abandoned {
                let message = format!(
                    "abandoned: nothing was heard of the scan for {} s (a rank died or the job was killed)",
                    limit.as_secs()
                );
                self.fail_running(snapshot_id, message).await;
            }
        }
    }

    /// Resumes what the spool holds; fails running snapshots it does not hold.
    async fn recover(self: &Arc<Self>) -> Result<(), StartError> {
        let spool = self.spool().clone();
        let spooled = Self::blocking(move || spool.load())
            .await
            .map_err(|source| StartError::Spool {
                path: self.spool().root().to_owned(),
                source,
            })?;
        let mut held = BTreeSet::new();
        for s in spooled {
            let snapshot_id = s.record.snapshot_id;
            held.insert(snapshot_id);
            match self.store.snapshot(snapshot_id).await? {
                Some(current) if current.state != STATE_RUNNING => {
                    // Committed or failed just before the stop: nothing left to do.
                    self.spool()
                        .remove(snapshot_id)
                        .map_err(|source| StartError::Spool {
                            path: self.spool().root().to_owned(),
                            source,
                        })?;
                    continue;
                }
                Some(_) => {}
                None => self.store.record_snapshot(&s.record).await?,
            }
            // Inserts of the previous process may still be running: count after them.
            self.store
                .settle_inserts(snapshot_id, SETTLE_PATIENCE)
                .await?;
            let stored: HashMap<(u32, u64), u64> = self
                .store
                .chunk_counts(snapshot_id)
                .await?
                .into_iter()
                .map(|ChunkCount { rank, seq, rows }| ((rank, seq), rows))
                .collect();
            let mut running = Running::new(s.record);
            for (&(rank, seq), &rows) in &stored {
                let p = running.ranks.entry(rank).or_default();
                p.seqs.insert(seq);
                p.rows += rows;
            }
            let mut jobs = Vec::new();
            for c in s.chunks {
                match stored.get(&(c.rank, c.seq)) {
                    Some(&rows) if rows == c.rows => {
                        let _ = self.spool().remove_chunk(&c.path);
                        continue;
                    }
                    Some(&rows) => {
                        warn!(
                            snapshot_id,
                            rank = c.rank,
                            seq = c.seq,
                            "{rows} of {} rows landed before the stop; deleting them",
                            c.rows
                        );
                        self.store
                            .delete_chunk_rows(snapshot_id, c.rank, c.seq)
                            .await?;
                        let p = running.ranks.entry(c.rank).or_default();
                        p.rows -= rows;
                        p.rows += c.rows;
                    }
                    None => {
                        let p = running.ranks.entry(c.rank).or_default();
                        p.seqs.insert(c.seq);
                        p.rows += c.rows;
                    }
                }
                running.unstored += 1;
                jobs.push(Job {
                    snapshot_id,
                    rank: c.rank,
                    seq: c.seq,
                    rows: c.rows,
                    path: c.path,
                    batch: None,
                });
            }
            info!(
                snapshot_id,
                chunks_to_store = jobs.len(),
                finishing = s.finish.is_some(),
                "resuming a spooled snapshot"
            );
            let finish = s.finish;
            let commit = finish.as_ref().map(|_| watch::channel(None));
            running.commit = commit.as_ref().map(|(_, rx)| rx.clone());
            self.running().insert(snapshot_id, running);
            for job in jobs {
                let _ = self.jobs.send(job);
            }
            if let (Some(request), Some((tx, _))) = (finish, commit) {
                let inner = Arc::clone(self);
                tokio::spawn(async move {
                    let outcome = inner.commit_spooled(request).await;
                    let _ = tx.send(Some(outcome));
                });
            }
        }
        if self.options.fail_unspooled {
            for record in self.store.snapshots().await? {
                if record.state == STATE_RUNNING && !held.contains(&record.snapshot_id) {
                    error!(
                        snapshot_id = record.snapshot_id,
                        "running in ClickHouse but not in this aggregator's spool"
                    );
                    self.fail_record(
                        record,
                        "the aggregator restarted without this snapshot in its spool".into(),
                    )
                    .await;
                }
            }
        }
        Ok(())
    }
}

/// Decodes a chunk from the spool.
async fn read_spooled(path: PathBuf, rows: u64) -> Result<RecordBatch, String> {
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        decode_chunk(Bytes::from(bytes), rows).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Checks the chunk counts the ranks report against the chunks acknowledged, before waiting for
/// them to be stored: a scan that lost a chunk fails at once.
fn verify_chunks(
    record: &SnapshotRecord,
    stored: &BTreeMap<u32, RankProgress>,
    reported: &[RankTotals],
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
    }
    Ok(())
}

/// Compares what the ranks say they sent with what was acknowledged and what ClickHouse
/// holds; the first difference, if any.
fn verify_totals(
    record: &SnapshotRecord,
    stored: &BTreeMap<u32, RankProgress>,
    reported: &[RankTotals],
    counted: &HashMap<u32, u64>,
) -> Result<(), String> {
    verify_chunks(record, stored, reported)?;
    for t in reported {
        let rows = stored.get(&t.rank).map_or(0, |p| p.rows);
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
        let snapshot_id = self.begin(request.into_inner()).await?;
        Ok(Response::new(BeginSnapshotResponse { snapshot_id }))
    }

    type StreamChunksStream = ReceiverStream<Result<ChunkAck, Status>>;

    async fn stream_chunks(
        &self,
        request: Request<Streaming<Chunk>>,
    ) -> Result<Response<Self::StreamChunksStream>, Status> {
        let mut inbound = request.into_inner();
        let (acks, rx) = mpsc::channel(16);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(chunk)) => {
                        let result = inner.receive_chunk(chunk).await;
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
                        warn!(
                            "a scanner's chunk stream broke: {}",
                            storage_tracker_proto::service::status_text(&status)
                        );
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
        Ok(Response::new(self.finish(request.into_inner()).await?))
    }

    async fn abort_snapshot(
        &self,
        request: Request<AbortSnapshotRequest>,
    ) -> Result<Response<AbortSnapshotResponse>, Status> {
        let AbortSnapshotRequest {
            snapshot_id,
            reason,
        } = request.into_inner();
        self.abort(snapshot_id, reason).await?;
        Ok(Response::new(AbortSnapshotResponse {}))
    }
}

/// Why a scan described by `r` cannot be begun, if it cannot: another entry schema, a root that
/// is not absolute, no ranks. The import checks an offline scan's manifest with it too.
pub(crate) fn begin_refusal(r: &BeginSnapshotRequest) -> Option<Status> {
    if r.schema_version != SCHEMA_VERSION {
        return Some(Status::failed_precondition(format!(
            "the scanner writes entry schema version {}, this aggregator stores version {SCHEMA_VERSION}: run matching versions",
            r.schema_version
        )));
    }
    if r.root_path.first() != Some(&b'/') {
        return Some(Status::invalid_argument(
            "root_path must be an absolute path",
        ));
    }
    if r.ranks == 0 {
        return Some(Status::invalid_argument("a scan has at least one rank"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ranks: u32) -> SnapshotRecord {
        SnapshotRecord {
            snapshot_id: 1,
            version: 1,
            state: STATE_RUNNING,
            root_path: b"/".to_vec(),
            ranks,
            schema_version: SCHEMA_VERSION,
            ..SnapshotRecord::default()
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
