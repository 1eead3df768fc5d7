//! The ingest service's shared state: the snapshots running in this aggregator, the queue of
//! spooled chunks for the insert workers, and the work under way. Each stage of a snapshot's
//! life is a child module that adds to [`Inner`]; this module uses none of them.
//!
//! - [`begin`]: a scan begins: its record is stored and spooled, the snapshot runs.
//! - [`accept`]: a chunk is decoded and checked, spooled and fsynced, then acknowledged.
//! - [`insert`]: the workers move spooled chunks into ClickHouse, each exactly once.
//! - [`commit`]: finish is spooled; once every chunk is stored, the totals are verified, the
//!   reports computed and the snapshot marked committed.
//! - [`fail`]: an abort, a failed verification or insert, or a scan that went quiet fails the
//!   snapshot and drops its rows, so a query never sees a partial snapshot.
//! - [`recover`]: at start, every snapshot in the spool resumes where it stopped.
//!
//! Beside them, [`memory`]: what is held of chunks in memory, within a budget and one decode
//! per core; and [`space`]: every spool write of the stages goes through it, and a write refused
//! because the spool's filesystem is full is answered as a wait (the scanner sends it again),
//! said once in the log and in the metrics, never as a failed snapshot.

pub(crate) mod accept;
pub(crate) mod begin;
pub(crate) mod commit;
pub(crate) mod fail;
pub(crate) mod hashes;
pub(crate) mod insert;
pub(crate) mod memory;
pub(crate) mod recover;
pub(crate) mod space;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, RwLock, mpsc, watch};
use tonic::Status;
use tracing::{Span, info_span, warn};

use storage_tracker_proto::v1::FinishSnapshotResponse;
use storage_tracker_proto::{SnapshotId, ValidChunk};

use crate::metrics::AggregatorMetrics;
use crate::retention::Retention;
use crate::snapshot::SnapshotRecord;
use crate::spool::Spool;
use crate::store::Store;

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub spool: Spool,
    /// Chunks inserted into ClickHouse at the same time.
    pub insert_workers: usize,
    /// Bytes of decoded chunks kept in memory for the insert workers; beyond it they are read
    /// back from the spool, so a ClickHouse outage costs disk, not memory (see [`memory`]).
    pub memory_budget: usize,
    /// A running snapshot that hears nothing for this long is failed (its scan died).
    pub abandon_after: Duration,
    /// Applied after each commit, to the committed snapshots of the same filesystem label.
    pub retention: Option<Retention>,
    /// Fail running snapshots that ClickHouse knows and the spool does not (on start). Only the
    /// one aggregator serving a database may do this.
    pub fail_unspooled: bool,
    /// Where the service counts chunks, rows, inserts and commits (see `/metrics`).
    pub metrics: AggregatorMetrics,
}

impl ServiceOptions {
    pub fn new(spool: Spool) -> Self {
        Self {
            spool,
            insert_workers: 2,
            memory_budget: DEFAULT_MEMORY_MIB << 20,
            abandon_after: Duration::from_secs(3600),
            retention: None,
            fail_unspooled: true,
            metrics: AggregatorMetrics::default(),
        }
    }
}

/// The default budget of decoded chunks kept for inserting, MiB.
pub const DEFAULT_MEMORY_MIB: usize = 64;

/// A commit's answer to FinishSnapshot, once known.
pub(crate) type Outcome = Option<Result<FinishSnapshotResponse, Status>>;

/// How long an insert whose outcome is unknown may keep running in ClickHouse before it is
/// killed, so that what it stored can be counted.
const SETTLE_PATIENCE: Duration = Duration::from_secs(30);

/// What the aggregator knows of a snapshot that is still running.
#[derive(Debug)]
struct Running {
    /// Its record, always in state running: a transition is stored, then the snapshot
    /// leaves `running`.
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

/// Whether the spool's filesystem has room, as the last spool write found (see [`space`]).
#[derive(Debug, Default)]
struct SpoolSpace {
    /// Since the first write refused for lack of space; `None` once a write succeeds again.
    full_since: Option<Instant>,
    /// Whether the log said the spool is full since `full_since`.
    said_full: bool,
    /// When the log last said the spool is full (of this time or an earlier one).
    said_at: Option<Instant>,
    /// Writes refused since `full_since`, and since the last line about it.
    refused: u64,
    refused_unsaid: u64,
}

/// A spooled chunk on its way into ClickHouse.
#[derive(Debug)]
pub(crate) struct Job {
    snapshot_id: SnapshotId,
    rank: u32,
    seq: u64,
    rows: u64,
    path: PathBuf,
    /// The decoded and checked rows and their share of the budget, when it had room for them.
    batch: Option<(ValidChunk, memory::Kept)>,
}

/// The queue the insert workers take [`Job`]s from.
pub(crate) type JobQueue = Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Job>>>;

#[derive(Debug)]
pub(crate) struct Inner {
    store: Store,
    options: ServiceOptions,
    running: Mutex<HashMap<SnapshotId, Running>>,
    /// Serializes id allocation with the insert of the snapshot's first record.
    begin_lock: tokio::sync::Mutex<()>,
    jobs: mpsc::UnboundedSender<Job>,
    /// Signalled whenever a chunk is stored or a snapshot leaves `running`.
    progressed: Notify,
    memory: memory::Memory,
    space: Mutex<SpoolSpace>,
    /// Set by [`Self::stop`]: the workers take no new inserts.
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

fn unavailable(what: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{what}: {e}"))
}

/// The span of work on one snapshot: the log lines within carry its id.
pub(crate) fn snapshot_span(snapshot_id: SnapshotId) -> Span {
    info_span!("snapshot", id = snapshot_id.get())
}

/// The span of handling one chunk, within its snapshot's.
pub(crate) fn chunk_span(snapshot_id: SnapshotId, rank: u32, seq: u64) -> Span {
    info_span!(parent: &snapshot_span(snapshot_id), "chunk", rank, seq)
}

impl Inner {
    /// The state of a service with nothing running yet, and the queue its insert workers
    /// take from.
    pub(crate) fn new(store: Store, options: ServiceOptions) -> (Arc<Self>, JobQueue) {
        let (jobs, queue) = mpsc::unbounded_channel();
        let memory = memory::Memory::new(
            options.memory_budget,
            std::thread::available_parallelism().map_or(2, usize::from),
        );
        let inner = Arc::new(Self {
            store,
            options,
            running: Mutex::new(HashMap::new()),
            begin_lock: tokio::sync::Mutex::new(()),
            jobs,
            progressed: Notify::new(),
            memory,
            space: Mutex::default(),
            stopping: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
        });
        (inner, Arc::new(tokio::sync::Mutex::new(queue)))
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<SnapshotId, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The insert gate of a running snapshot (see [`Running`]'s `gate`); `None` once it is no
    /// longer running.
    fn gate(&self, snapshot_id: SnapshotId) -> Option<Arc<RwLock<()>>> {
        self.running()
            .get(&snapshot_id)
            .map(|s| Arc::clone(&s.gate))
    }

    fn spool(&self) -> &Spool {
        &self.options.spool
    }

    /// The ids of the snapshots running now, in order.
    pub(crate) fn running_ids(&self) -> Vec<SnapshotId> {
        let mut ids: Vec<SnapshotId> = self.running().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// The metrics, with the spool depth and room and the running snapshots brought up to
    /// date.
    pub(crate) fn metrics(&self) -> &AggregatorMetrics {
        {
            let running = self.running();
            let unstored: usize = running.values().map(|s| s.unstored).sum();
            self.options.metrics.set_running(unstored, running.len());
        }
        let free = self.spool().space().ok().map(|s| s.free);
        self.options
            .metrics
            .set_spool_space(self.spool_is_full(), free);
        &self.options.metrics
    }

    /// The workers take no new inserts from now on.
    pub(crate) fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether an insert or a commit is under way.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    /// Runs blocking spool I/O off the async threads.
    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
    }

    /// Returns once `snapshot_id` has left `running` (failed, aborted or committed).
    pub(crate) async fn left_running(&self, snapshot_id: SnapshotId) {
        loop {
            // Registered before the check, so that a notification between the two is not lost.
            let notified = self.progressed.notified();
            if !self.running().contains_key(&snapshot_id) {
                return;
            }
            notified.await;
        }
    }

    /// Removes a snapshot from the spool and from `running`.
    async fn forget(&self, snapshot_id: SnapshotId) {
        let spool = self.spool().clone();
        if let Err(e) = Self::blocking(move || spool.remove(snapshot_id)).await {
            warn!("{e}");
        }
        self.running().remove(&snapshot_id);
        self.progressed.notify_waiters();
    }
}
