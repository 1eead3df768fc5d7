//! One rank's run of a scan job over MPI: the steps the ranks take together on the world
//! communicator, around each rank's scan, in the order they take them. Every rank reaches
//! every collective, in the same order:
//!
//! 1. [`MpiJob::init`]: MPI (funneled), and a check that the world is the whole Slurm step;
//! 2. [`MpiJob::agree`]: the plan is valid on every rank, or every rank stops;
//! 3. the host names are shared, and every rank's output is opened on all ranks or on none;
//! 4. rank 0 begins the snapshot and broadcasts its id;
//! 5. each rank scans its share ([`scan_rank`] over the point-to-point [`MpiTransport`]);
//! 6. every rank's totals and owner ids are gathered;
//! 7. rank 0 commits or aborts the snapshot (or writes an offline scan's manifest) and
//!    broadcasts the verdict, which every rank exits with.
//!
//! One tracing span, `scan`, covers a rank's whole run with its `rank`, `host` and (once
//! begun) `snapshot`, so every log line of a rank says where it comes from.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mpi::Threading;
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use prost::Message;
use tracing::{error, info, warn};

use storage_tracker_proto::service::error_chain;
use storage_tracker_proto::v1::{
    BeginSnapshotRequest, FinishSnapshotRequest, OfflineManifest, Principal, RankTotals,
};

use crate::chunks::{ChunkSink, DirSink};
use crate::mpi_transport::MpiTransport;
use crate::owners::{IdKind, resolve};
use crate::plan::{JobPlan, OutputPlan, PlanError};
use crate::progress::{JobProgress, ProgressDisplay, ScanStatus};
use crate::scan::{RankReport, ScanError, scan_rank};
use crate::upload::{Ingest, Upload, UploadError};
use crate::walk::WalkCounts;

mod duplicates;
pub use duplicates::HashPlan;

/// Why a process cannot take part in a job.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("MPI could not be initialized")]
    Init,
    #[error("the MPI library offers {0:?}; the scanner needs at least Funneled")]
    Threading(Threading),
    #[error(
        "this is one of {tasks} Slurm tasks but the MPI world has {ranks} rank(s): the tasks did not join one MPI job. \
         Launch with the PMI plugin your MPI uses (MPICH: srun --mpi=pmi2, Open MPI: srun --mpi=pmix)"
    )]
    NotOneJob { tasks: i32, ranks: i32 },
}

/// Why a rank's run stopped before the verdict.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("creating the output directory {}", path.display())]
    OutputDirectory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Connect(#[from] UploadError),
    #[error("not every rank could open its output; nothing was scanned")]
    OutputNotEverywhere,
    #[error("the snapshot could not be begun; nothing was scanned")]
    NotBegun,
}

/// Why a rank's part of the scan failed.
#[derive(Debug, thiserror::Error)]
enum RankFailure {
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// The stream's own error names the cause (e.g. the aggregator's refusal of a chunk); the
    /// scan's error only says that the stream stopped.
    #[error(transparent)]
    Upload(#[from] UploadError),
}

/// How a job ended: the same on every rank that reached the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The snapshot is committed, or the offline scan written.
    Complete,
    /// Complete, but some entries could not be read; they are recorded as errors.
    CompleteWithErrors,
    /// The scan failed; a live snapshot is marked failed and none of its rows are visible.
    Failed,
}

/// This process's place in the job: the MPI world, its host, and the span of its run.
pub struct MpiJob {
    // Dropped before the universe, which finalizes MPI (see the Drop below).
    world: SimpleCommunicator,
    _universe: Universe,
    host: String,
    span: tracing::Span,
}

impl Drop for MpiJob {
    /// Finalizing MPI waits for every rank like a collective: arrive asleep first.
    fn drop(&mut self) {
        self.arrive();
    }
}

impl std::fmt::Debug for MpiJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiJob")
            .field("rank", &self.world.rank())
            .field("size", &self.world.size())
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// The number of tasks Slurm started for this step, when running as an `srun` task.
fn slurm_step_tasks() -> Option<i32> {
    std::env::var_os("SLURM_PROCID")?;
    ["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// This rank's output: the gRPC stream of a live scan or the chunk files of an offline one.
enum Output {
    Live {
        ingest: Box<Ingest>,
        /// Chunks the stream may queue.
        in_flight: usize,
        upload: Option<Upload>,
    },
    Offline(DirSink),
}

/// Every rank's totals, known on every rank.
struct ScanTotals {
    totals: Vec<RankTotals>,
    failed_ranks: Vec<usize>,
}

impl ScanTotals {
    fn entries(&self) -> u64 {
        self.totals.iter().map(|t| t.entries).sum()
    }
    fn errors(&self) -> u64 {
        self.totals.iter().map(|t| t.errors).sum()
    }
    fn chunks(&self) -> u64 {
        self.totals.iter().map(|t| t.chunks).sum()
    }
}

/// Fixed-width host names, so they travel in one all-gather.
const HOST_BYTES: usize = 64;

impl MpiJob {
    /// Initializes MPI with funneled threading, installs the signal handlers, and checks that
    /// the MPI world is the whole Slurm step (MPICH started with the wrong `--mpi` plugin
    /// silently runs N one-rank jobs).
    pub fn init() -> Result<Self, LaunchError> {
        let (universe, threading) =
            mpi::initialize_with_threading(Threading::Funneled).ok_or(LaunchError::Init)?;
        if threading < Threading::Funneled {
            return Err(LaunchError::Threading(threading));
        }
        // After MPI's own set-up, so that these handlers are the ones in place.
        crate::signals::install();
        let world = universe.world();
        if let Some(tasks) = slurm_step_tasks()
            && tasks != world.size()
        {
            return Err(LaunchError::NotOneJob {
                tasks,
                ranks: world.size(),
            });
        }
        let host = hostname();
        // At error level, so that whatever the filter lets through carries the rank's context.
        let span = tracing::error_span!(
            "scan",
            rank = world.rank(),
            host = %host,
            snapshot = tracing::field::Empty
        );
        Ok(Self {
            world,
            _universe: universe,
            host,
            span,
        })
    }

    fn rank(&self) -> i32 {
        self.world.rank()
    }

    /// Waits, asleep, until every rank has reached this point, so that the collective after it
    /// runs with everyone present. A blocking collective polls the network without sleeping
    /// while it waits for the last rank: where ranks share cores (many ranks on a node, or a
    /// node's cores busy with the walk's threads), the waiting ranks' spinning takes the CPU
    /// from the ones still working. Measured with 64 ranks on 2 cores: a barrier that one
    /// rank reached 200 ms late took 0.93 s blocking, 0.20 s like this.
    fn arrive(&self) {
        let mut barrier = self.world.immediate_barrier();
        let mut nap = Duration::from_micros(50);
        loop {
            match barrier.test() {
                Ok(_) => return,
                Err(pending) => barrier = pending,
            }
            std::thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(2));
        }
    }

    /// The plan, if it is valid on every rank (rank 0 says what is wrong with its own); `None`
    /// on every rank otherwise.
    pub fn agree(&self, plan: Result<JobPlan, PlanError>) -> Option<JobPlan> {
        let _span = self.span.enter();
        if let Err(problem) = &plan
            && self.rank() == 0
        {
            error!("{problem}");
        }
        self.all_agree(plan.is_ok())
            .then(|| plan.expect("checked on every rank"))
    }

    /// Runs this rank's part of the job. A rank that fails before the scan (its output, the
    /// snapshot's beginning) fails with every other rank, each saying why.
    pub fn run(&self, plan: &JobPlan) -> Outcome {
        let _span = self.span.enter();
        self.try_run(plan).unwrap_or_else(|e| {
            error!("{}", error_chain(&e));
            Outcome::Failed
        })
    }

    fn try_run(&self, plan: &JobPlan) -> Result<Outcome, JobError> {
        let started = Instant::now();
        let hosts = self.gather_hosts();
        let mut output = self.open_output(&plan.output)?;
        let described = plan.begin_request(&hosts, &self.host);
        let snapshot_file = match &plan.output {
            OutputPlan::Aggregator { snapshot_file, .. } => snapshot_file.as_deref(),
            OutputPlan::Directory(_) => None,
        };
        let snapshot_id = self.begin_snapshot(&output, &described, snapshot_file)?;
        if snapshot_id != 0 {
            self.span.record("snapshot", snapshot_id);
        }
        info!(
            ranks = self.world.size(),
            threads = plan.scan.threads,
            filesystem = plan.scan.filesystem.map_or("unknown", |fs| fs.name),
            network = plan.scan.filesystem.is_some_and(|fs| fs.network),
            "scanning {}",
            plan.scan.root.display()
        );

        let (report, chunks, failure) = self.scan(plan, &mut output, snapshot_id);
        let c = report.counts;
        info!(
            entries = c.entries,
            errors = c.errors,
            apparent_bytes = c.apparent_bytes,
            chunks,
            items_read = report.steal.items_processed,
            items_stolen = report.steal.items_stolen,
            seconds = started.elapsed().as_secs_f64(),
            "rank finished"
        );
        if let Some(e) = &failure {
            error!("{e}");
        }

        let scan = self.gather_totals(&hosts, failure.is_none(), chunks, c);
        let (uids, gids) = (
            self.gather_ids(&report.ids.uids),
            self.gather_ids(&report.ids.gids),
        );
        let mut failed = !scan.failed_ranks.is_empty();
        if self.rank() == 0 {
            let finish = FinishSnapshotRequest {
                snapshot_id,
                ranks: scan.totals.clone(),
                // Each id is looked up once, here, for the whole snapshot.
                users: principals(IdKind::User, &uids),
                groups: principals(IdKind::Group, &gids),
            };
            let concluded = match &output {
                Output::Live { ingest, .. } => commit_or_abort(
                    ingest,
                    finish,
                    &scan.failed_ranks,
                    failure.as_ref(),
                    started,
                ),
                Output::Offline(dir) => write_manifest(dir, described, finish, &scan),
            };
            failed = !concluded;
        }
        Ok(if self.verdict(failed) {
            Outcome::Failed
        } else if scan.errors() > 0 {
            Outcome::CompleteWithErrors
        } else {
            Outcome::Complete
        })
    }

    /// Scans this rank's share into its output, then closes the output: what the rank did,
    /// the chunks delivered, and why the rank failed if it did.
    fn scan(
        &self,
        plan: &JobPlan,
        output: &mut Output,
        snapshot_id: u64,
    ) -> (RankReport, u64, Option<RankFailure>) {
        let sink: &dyn ChunkSink = match output {
            Output::Live {
                ingest,
                in_flight,
                upload,
            } => upload.insert(ingest.upload(snapshot_id, self.rank() as u32, *in_flight)),
            Output::Offline(dir) => dir,
        };
        let display = ProgressDisplay::new();
        let show = |p: &JobProgress| display.show(p);
        let status = ScanStatus::new(&show);
        let mut report = scan_rank(
            &mut MpiTransport::new(&self.world),
            &plan.scan,
            sink,
            &status,
        );
        display.finish();
        let scan_error = report.error.take().map(RankFailure::from);
        match output {
            Output::Live { upload, .. } => match upload.take().expect("opened above").close() {
                Ok(chunks) => (report, chunks, scan_error),
                Err(e) => (report, 0, Some(e.into())),
            },
            Output::Offline(dir) => (report, dir.chunks_written(), scan_error),
        }
    }

    /// True on every rank iff `ok` is true on every rank.
    fn all_agree(&self, ok: bool) -> bool {
        self.arrive();
        let mut all = vec![0u8; self.world.size() as usize];
        self.world.all_gather_into(&u8::from(ok), &mut all[..]);
        all.iter().all(|&v| v == 1)
    }

    /// Every rank's host name, on every rank.
    fn gather_hosts(&self) -> Vec<String> {
        self.arrive();
        let mut mine = [0u8; HOST_BYTES];
        let n = self.host.len().min(HOST_BYTES);
        mine[..n].copy_from_slice(&self.host.as_bytes()[..n]);
        let mut all = vec![0u8; HOST_BYTES * self.world.size() as usize];
        self.world.all_gather_into(&mine[..], &mut all[..]);
        all.chunks(HOST_BYTES)
            .map(|h| {
                String::from_utf8_lossy(h.split(|&b| b == 0).next().unwrap_or_default())
                    .into_owned()
            })
            .collect()
    }

    /// Every rank's output, opened on every rank or on none.
    fn open_output(&self, plan: &OutputPlan) -> Result<Output, JobError> {
        let output = match plan {
            OutputPlan::Directory(dir) => std::fs::create_dir_all(dir)
                .map_err(|source| JobError::OutputDirectory {
                    path: dir.clone(),
                    source,
                })
                .map(|()| Output::Offline(DirSink::new(dir.clone(), self.rank() as u32))),
            OutputPlan::Aggregator {
                address,
                in_flight,
                retry_for,
                ..
            } => Ingest::connect(address, *retry_for)
                .map(|ingest| Output::Live {
                    ingest: Box::new(ingest),
                    in_flight: *in_flight,
                    upload: None,
                })
                .map_err(JobError::from),
        };
        let ok = output
            .as_ref()
            .map_err(|e| error!("{}", error_chain(e)))
            .is_ok();
        if !self.all_agree(ok) {
            return Err(JobError::OutputNotEverywhere);
        }
        Ok(output.expect("checked on every rank"))
    }

    /// Rank 0 begins a live scan's snapshot and broadcasts its id; 0 for an offline scan.
    fn begin_snapshot(
        &self,
        output: &Output,
        request: &BeginSnapshotRequest,
        snapshot_file: Option<&Path>,
    ) -> Result<u64, JobError> {
        let Output::Live { ingest, .. } = output else {
            return Ok(0);
        };
        let mut snapshot_id = 0u64;
        if self.rank() == 0 {
            match ingest.begin(request.clone()) {
                Ok(id) => {
                    snapshot_id = id;
                    if let Some(file) = snapshot_file {
                        write_snapshot_file(file, id);
                    }
                }
                Err(e) => error!("{e}"),
            }
        }
        self.arrive();
        self.world
            .process_at_rank(0)
            .broadcast_into(&mut snapshot_id);
        if snapshot_id == 0 {
            return Err(JobError::NotBegun);
        }
        Ok(snapshot_id)
    }

    fn gather_totals(&self, hosts: &[String], ok: bool, chunks: u64, c: WalkCounts) -> ScanTotals {
        // [ok, chunks, entries, errors, apparent bytes] per rank.
        let mine = [u64::from(ok), chunks, c.entries, c.errors, c.apparent_bytes];
        self.arrive();
        let mut all = vec![0u64; 5 * self.world.size() as usize];
        self.world.all_gather_into(&mine[..], &mut all[..]);
        let rows = all.chunks(5).enumerate();
        ScanTotals {
            totals: rows
                .clone()
                .map(|(r, t)| RankTotals {
                    rank: r as u32,
                    chunks: t[1],
                    entries: t[2],
                    errors: t[3],
                    apparent_bytes: t[4],
                    host: hosts[r].clone(),
                })
                .collect(),
            failed_ranks: rows.filter(|(_, t)| t[0] == 0).map(|(r, _)| r).collect(),
        }
    }

    /// The union of every rank's ids, on every rank.
    fn gather_ids(&self, mine: &BTreeSet<u32>) -> BTreeSet<u32> {
        let mine: Vec<u32> = mine.iter().copied().collect();
        self.arrive();
        let mut counts = vec![0i32; self.world.size() as usize];
        self.world
            .all_gather_into(&(mine.len() as i32), &mut counts[..]);
        let displs: Vec<i32> = counts
            .iter()
            .scan(0, |at, &n| Some(std::mem::replace(at, *at + n)))
            .collect();
        let mut all = vec![0u32; counts.iter().map(|&n| n as usize).sum()];
        self.world.all_gather_varcount_into(
            &mine[..],
            &mut PartitionMut::new(&mut all[..], counts, displs),
        );
        all.into_iter().collect()
    }

    /// Everyone ends with rank 0's verdict: whether the job failed.
    fn verdict(&self, failed: bool) -> bool {
        let mut verdict = u8::from(failed);
        self.arrive();
        self.world.process_at_rank(0).broadcast_into(&mut verdict);
        verdict != 0
    }
}

/// Each id with its name, looked up once.
fn principals(kind: IdKind, ids: &BTreeSet<u32>) -> Vec<Principal> {
    ids.iter()
        .map(|&id| Principal {
            id,
            name: resolve(kind, id).unwrap_or_default(),
        })
        .collect()
}

/// Writes the id of the snapshot just begun into `file` (through a temporary file and a rename,
/// so a reader never sees half of it). Failing is logged: the scan goes on without it.
fn write_snapshot_file(file: &Path, snapshot_id: u64) {
    let mut temporary = file.as_os_str().to_owned();
    temporary.push(".tmp");
    let written = std::fs::write(&temporary, format!("{snapshot_id}\n"))
        .and_then(|()| std::fs::rename(&temporary, file));
    if let Err(e) = written {
        warn!(
            "writing the snapshot's id to {}: {e}; if this job dies, abort snapshot {snapshot_id} \
             with storage-scan --abort {snapshot_id}",
            file.display()
        );
    }
}

/// Rank 0 of a live scan: commits the snapshot if every rank succeeded, aborts it otherwise.
/// Whether it committed.
fn commit_or_abort(
    ingest: &Ingest,
    request: FinishSnapshotRequest,
    failed_ranks: &[usize],
    own_failure: Option<&RankFailure>,
    started: Instant,
) -> bool {
    let snapshot_id = request.snapshot_id;
    if !failed_ranks.is_empty() {
        let mut reason = format!("scan failed on rank(s) {failed_ranks:?}");
        if let Some(e) = own_failure {
            reason.push_str(&format!(" (rank 0: {e})"));
        }
        if let Err(e) = ingest.abort(snapshot_id, reason) {
            warn!("aborting the snapshot: {e}");
        }
        return false;
    }
    let errors: u64 = request.ranks.iter().map(|t| t.errors).sum();
    match ingest.finish(request) {
        Ok(done) => {
            info!(
                entries = done.entries,
                directories = done.directories,
                errors,
                rollup_seconds = done.rollup_seconds,
                seconds = started.elapsed().as_secs_f64(),
                "snapshot committed"
            );
            true
        }
        Err(e) => {
            error!("{e}");
            false
        }
    }
}

/// Rank 0 of an offline scan: writes the manifest if every rank succeeded. Whether it did.
fn write_manifest(
    dir: &DirSink,
    begin: BeginSnapshotRequest,
    finish: FinishSnapshotRequest,
    scan: &ScanTotals,
) -> bool {
    if !scan.failed_ranks.is_empty() {
        error!(
            "the offline scan failed on rank(s) {:?}; no manifest was written, so it cannot be imported",
            scan.failed_ranks
        );
        return false;
    }
    let manifest = OfflineManifest {
        begin: Some(begin),
        finish: Some(finish),
        finished_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    match dir.write_manifest(&manifest.encode_to_vec()) {
        Ok(path) => {
            info!(
                entries = scan.entries(),
                errors = scan.errors(),
                chunk_files = scan.chunks(),
                "offline scan written; import it with `storage-aggregator import {}`",
                path.parent().unwrap_or(&path).display()
            );
            true
        }
        Err(e) => {
            error!("{e}");
            false
        }
    }
}
