//! `storage-scan`: scan a directory tree into a storage-tracker snapshot.
//!
//! Runs as one plain process or as every task of an MPI job (`srun`, `mpiexec`).
//!
//! Exit codes: 0 the snapshot is committed; 3 it is committed but some entries could not be
//! read (they are recorded as errors); 1 the scan failed and the snapshot is marked failed;
//! 2 bad arguments or root; 4 the MPI world does not match the Slurm step (wrong `--mpi`).

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use mpi::Threading;
use mpi::collective::{CommunicatorCollectives, Root};
use mpi::datatype::PartitionMut;
use mpi::topology::{Communicator, SimpleCommunicator};
use prost::Message;
use tracing::{error, info, warn};

use storage_tracker_proto::scan_options::ScanOptions;
use storage_tracker_proto::service::{LogFormat, error_chain, init_logging};
use storage_tracker_proto::v1::{
    BeginSnapshotRequest, FinishSnapshotRequest, OfflineManifest, Principal, RankTotals,
};
use storage_tracker_scanner::chunks::{ChunkLimits, ChunkSink, DirSink};
use storage_tracker_scanner::mpi_transport::MpiTransport;
use storage_tracker_scanner::owners::{IdKind, resolve};
use storage_tracker_scanner::scan::{Progress, ScanPlan, ScanStatus, scan_rank};
use storage_tracker_scanner::upload::{Ingest, Upload, parse_address};
use storage_tracker_scanner::walk::{Exclude, WalkCounts, WalkOptions};

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_COMPLETED_WITH_ERRORS: u8 = 3;
const EXIT_LAUNCH_MISMATCH: u8 = 4;

/// Scan a directory tree into a storage-tracker snapshot.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Root of the scan: a directory. Symlinks below it are recorded, not followed (see -L).
    root: PathBuf,

    /// gRPC address of the aggregator: http://HOST:PORT.
    #[arg(
        long,
        env = "STORAGE_TRACKER_AGGREGATOR",
        required_unless_present = "output",
        conflicts_with = "output",
        value_parser = parse_address
    )]
    aggregator: Option<String>,

    /// Write the Parquet chunks into this directory instead of sending them (offline scan).
    #[arg(long)]
    output: Option<PathBuf>,

    /// Name of the filesystem recorded with the snapshot (default: the root path).
    #[arg(long, env = "STORAGE_TRACKER_FS_LABEL")]
    label: Option<String>,

    /// Worker threads per rank [default: SLURM_CPUS_PER_TASK, else the available cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    /// Rows per Parquet chunk [default: 65536 / threads, from 2048 to 32768, so that a rank's
    /// batches in memory stay about the same whatever its thread count].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    chunk_rows: Option<u32>,

    /// Leave out entries matching this glob, and everything below them (repeatable). A
    /// pattern with a '/' matches whole paths ('*' does not cross '/'), one without matches
    /// names at any depth: --exclude .snapshot --exclude '/scratch/*/tmp'.
    #[arg(long, value_name = "GLOB", value_parser = parse_exclude)]
    exclude: Vec<Exclude>,

    /// Do not read directories on other filesystems than the root's (mount points are
    /// recorded, their contents are not).
    #[arg(long, short = 'x')]
    one_file_system: bool,

    /// Record entries down to this depth (the root is 0) and read no directory at it.
    #[arg(long)]
    max_depth: Option<u32>,

    /// Follow symlinks: record each as its target and read linked directories. A link back to
    /// a directory above it is recorded with ELOOP and not read again. A dangling link stays
    /// a link; a target that cannot be resolved (a loop of links, a name too long) is an error
    /// on the link's row.
    #[arg(long, short = 'L')]
    follow_symlinks: bool,

    /// Open directories with O_NOATIME where permitted, so the scan changes no access time.
    #[arg(long)]
    no_atime: bool,

    /// Seconds between progress reports of rank 0 (a status line on a terminal, log lines
    /// otherwise).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    progress_interval: u64,

    /// Chunks a rank may have queued for sending before its walk waits (as many again may
    /// wait for their acknowledgement).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    in_flight: u16,

    /// Seconds to keep retrying while the aggregator is unreachable (e.g. restarting), from the
    /// first failure: waits double from 0.2 s to 10 s, the last cut to end then. Chunks not yet
    /// acknowledged are sent again.
    #[arg(long, default_value_t = 600)]
    retry_for: u64,
}

fn parse_exclude(glob: &str) -> Result<Exclude, String> {
    Exclude::new(glob)
}

/// Each worker thread fills its own chunk: fewer rows per chunk with more threads keeps a
/// rank's memory bounded.
fn chunk_rows(given: Option<u32>, threads: usize) -> usize {
    given.map_or_else(
        || (65_536 / threads.max(1)).clamp(2_048, 32_768),
        |n| n as usize,
    )
}

fn default_threads() -> usize {
    std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The number of tasks Slurm started for this step, when running as an `srun` task.
fn slurm_step_tasks() -> Option<i32> {
    std::env::var_os("SLURM_PROCID")?;
    ["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

/// Bytes in binary units, for people.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// True on every rank iff `ok` is true on every rank.
fn all_agree(world: &SimpleCommunicator, ok: bool) -> bool {
    let mut all = vec![0u8; world.size() as usize];
    world.all_gather_into(&u8::from(ok), &mut all[..]);
    all.iter().all(|&v| v == 1)
}

fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The union of every rank's ids, on every rank.
fn gather_ids(world: &SimpleCommunicator, mine: &BTreeSet<u32>) -> BTreeSet<u32> {
    let mine: Vec<u32> = mine.iter().copied().collect();
    let mut counts = vec![0i32; world.size() as usize];
    world.all_gather_into(&(mine.len() as i32), &mut counts[..]);
    let displs: Vec<i32> = counts
        .iter()
        .scan(0, |at, &n| Some(std::mem::replace(at, *at + n)))
        .collect();
    let mut all = vec![0u32; counts.iter().map(|&n| n as usize).sum()];
    world.all_gather_varcount_into(
        &mine[..],
        &mut PartitionMut::new(&mut all[..], counts, displs),
    );
    all.into_iter().collect()
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

/// Fixed-width host names, so they travel in one all-gather.
const HOST_BYTES: usize = 64;

fn gather_hosts(world: &SimpleCommunicator, host: &str) -> Vec<String> {
    let mut mine = [0u8; HOST_BYTES];
    let n = host.len().min(HOST_BYTES);
    mine[..n].copy_from_slice(&host.as_bytes()[..n]);
    let mut all = vec![0u8; HOST_BYTES * world.size() as usize];
    world.all_gather_into(&mine[..], &mut all[..]);
    all.chunks(HOST_BYTES)
        .map(|h| {
            String::from_utf8_lossy(h.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
        })
        .collect()
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(LogFormat::Text);

    let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Funneled) else {
        error!("MPI could not be initialized");
        return ExitCode::from(EXIT_FAILED);
    };
    if threading < Threading::Funneled {
        error!("the MPI library offers {threading:?}; the scanner needs at least Funneled");
        return ExitCode::from(EXIT_FAILED);
    }
    // After MPI's own set-up, so that these handlers are the ones in place.
    storage_tracker_scanner::signals::install();
    let world = universe.world();
    if let Some(tasks) = slurm_step_tasks()
        && tasks != world.size()
    {
        error!(
            "this is one of {tasks} Slurm tasks but the MPI world has {} rank(s): the tasks did not join one MPI job. \
             Launch with the PMI plugin your MPI uses (MPICH: srun --mpi=pmi2, Open MPI: srun --mpi=pmix)",
            world.size()
        );
        return ExitCode::from(EXIT_LAUNCH_MISMATCH);
    }
    match run(&args, &world) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            error!(rank = world.rank(), "{}", error_chain(e.as_ref()));
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// This rank's output: the gRPC stream of a live scan or the chunk files of an offline one.
enum Output {
    Live {
        ingest: Box<Ingest>,
        upload: Option<Upload>,
    },
    Offline(DirSink),
}

fn run(args: &Args, world: &SimpleCommunicator) -> anyhow::Result<u8> {
    let rank = world.rank();
    let started = Instant::now();
    let Some(root) = agreed_root(args, world) else {
        return Ok(EXIT_USAGE);
    };
    let host = hostname();
    let hosts = gather_hosts(world, &host);
    let mut output = open_output(args, world)?;
    let described = begin_request(args, world, &root, &hosts);
    let snapshot_id = begin_snapshot(world, &output, &described)?;

    let threads = args.threads.map_or_else(default_threads, usize::from);
    let plan = ScanPlan {
        root: root.as_os_str().as_bytes().to_vec(),
        options: Arc::new(WalkOptions {
            exclude: args.exclude.clone(),
            same_device: args
                .one_file_system
                .then(|| std::fs::metadata(&root).map(|m| m.dev()))
                .transpose()?,
            max_depth: args.max_depth,
            follow_symlinks: args.follow_symlinks,
            no_atime: args.no_atime,
        }),
        threads,
        limits: ChunkLimits {
            rows: chunk_rows(args.chunk_rows, threads),
            path_bytes: 64 << 20,
        },
        progress_interval: Duration::from_secs(args.progress_interval),
    };
    if snapshot_id != 0 {
        info!(
            rank,
            snapshot_id,
            ranks = world.size(),
            threads = plan.threads,
            "scanning {}",
            root.display()
        );
    }
    let sink: &dyn ChunkSink = match &mut output {
        Output::Live { ingest, upload } => {
            upload.insert(ingest.upload(snapshot_id, rank as u32, usize::from(args.in_flight)))
        }
        Output::Offline(dir) => dir,
    };
    let display = ProgressDisplay::new();
    let show = |p: &Progress| display.show(p);
    let status = ScanStatus::new(&show);
    let report = scan_rank(&mut MpiTransport::new(world), &plan, sink, &status);
    display.finish();

    let (chunks, failure) = match &mut output {
        Output::Live { upload, .. } => match upload.take().expect("opened above").close() {
            Ok(n) => (n, report.error.clone()),
            // The stream's own error names the cause (e.g. the aggregator's refusal of a
            // chunk); the walk's error only says that the stream stopped.
            Err(e) => (0, Some(e.to_string())),
        },
        Output::Offline(dir) => (dir.chunks_written(), report.error.clone()),
    };
    let c = report.counts;
    info!(
        rank,
        host,
        entries = c.entries,
        errors = c.errors,
        apparent_bytes = c.apparent_bytes,
        chunks,
        dirs_read = report.steal.items_processed,
        dirs_stolen = report.steal.items_stolen,
        seconds = started.elapsed().as_secs_f64(),
        "rank finished"
    );
    if let Some(e) = &failure {
        error!(rank, "{e}");
    }

    let scan = gather_totals(world, &hosts, failure.is_none(), chunks, c);
    let (uids, gids) = (
        gather_ids(world, &report.ids.uids),
        gather_ids(world, &report.ids.gids),
    );
    let mut verdict = if scan.failed_ranks.is_empty() {
        0u8
    } else {
        EXIT_FAILED
    };
    if rank == 0 {
        let finish = FinishSnapshotRequest {
            snapshot_id,
            ranks: scan.totals.clone(),
            // Each id is looked up once, here, for the whole snapshot.
            users: principals(IdKind::User, &uids),
            groups: principals(IdKind::Group, &gids),
        };
        match &output {
            Output::Live { ingest, .. } => {
                verdict = commit_or_abort(
                    ingest,
                    finish,
                    &scan.failed_ranks,
                    failure.as_deref(),
                    started,
                );
            }
            Output::Offline(dir) if verdict == 0 => {
                let manifest = OfflineManifest {
                    begin: Some(described),
                    finish: Some(finish),
                    finished_at: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                };
                match dir.write_manifest(&manifest.encode_to_vec()) {
                    Ok(path) => info!(
                        entries = scan.entries(),
                        errors = scan.errors(),
                        chunk_files = scan.chunks(),
                        "offline scan written; import it with `storage-aggregator import {}`",
                        path.parent().unwrap_or(&path).display()
                    ),
                    Err(e) => {
                        error!("{e}");
                        verdict = EXIT_FAILED;
                    }
                }
            }
            Output::Offline(_) => {
                error!(
                    "the offline scan failed on rank(s) {:?}; no manifest was written, so it cannot be imported",
                    scan.failed_ranks
                );
            }
        }
    }
    // Everyone exits with rank 0's verdict.
    world.process_at_rank(0).broadcast_into(&mut verdict);
    Ok(if verdict == 0 && scan.errors() > 0 {
        EXIT_COMPLETED_WITH_ERRORS
    } else {
        verdict
    })
}

/// The canonical root, if it is a directory on every rank (rank 0 says what is wrong).
fn agreed_root(args: &Args, world: &SimpleCommunicator) -> Option<PathBuf> {
    let root = std::fs::canonicalize(&args.root);
    let problem = match &root {
        Ok(r) if r.is_dir() => None,
        Ok(r) => Some(format!(
            "the root {} is not a directory; pass the directory to scan",
            r.display()
        )),
        Err(e) => Some(format!(
            "cannot scan {}: {e}; pass an existing directory",
            args.root.display()
        )),
    };
    if let Some(problem) = &problem
        && world.rank() == 0
    {
        error!("{problem}");
    }
    all_agree(world, problem.is_none()).then(|| root.expect("checked on every rank"))
}

/// Every rank's output, opened on every rank or on none.
fn open_output(args: &Args, world: &SimpleCommunicator) -> anyhow::Result<Output> {
    let output = match (&args.output, &args.aggregator) {
        (Some(dir), _) => std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the output directory {}", dir.display()))
            .map(|()| Output::Offline(DirSink::new(dir.clone(), world.rank() as u32))),
        (None, Some(addr)) => Ingest::connect(addr, Duration::from_secs(args.retry_for))
            .map(|ingest| Output::Live {
                ingest: Box::new(ingest),
                upload: None,
            })
            .map_err(Into::into),
        (None, None) => unreachable!("clap requires --aggregator or --output"),
    };
    let ok = output
        .as_ref()
        .map_err(|e| error!(rank = world.rank(), "{}", error_chain(e.as_ref())))
        .is_ok();
    if !all_agree(world, ok) {
        bail!("not every rank could open its output; nothing was scanned");
    }
    Ok(output.expect("checked on every rank"))
}

/// What BeginSnapshot carries for this scan (rank 0). The scan id is unique per scan: host,
/// process and start time.
fn begin_request(
    args: &Args,
    world: &SimpleCommunicator,
    root: &Path,
    hosts: &[String],
) -> BeginSnapshotRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    BeginSnapshotRequest {
        filesystem_label: args
            .label
            .clone()
            .unwrap_or_else(|| root.display().to_string()),
        root_path: root.as_os_str().as_bytes().to_vec(),
        ranks: world.size() as u32,
        hosts: hosts.to_vec(),
        scanner_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: storage_tracker_proto::SCHEMA_VERSION,
        scan_id: format!("{}-{}-{}", hostname(), std::process::id(), now.as_nanos()),
        started_at: now.as_secs() as i64,
        started_at_ns: now.as_nanos() as i64,
        scan_options: ScanOptions {
            max_depth: args.max_depth,
            exclude: args.exclude.iter().map(|e| e.glob().to_owned()).collect(),
            one_file_system: args.one_file_system,
            follow_symlinks: args.follow_symlinks,
        }
        .canonical(),
    }
}

/// Rank 0 begins a live scan's snapshot and shares its id; 0 for an offline scan.
fn begin_snapshot(
    world: &SimpleCommunicator,
    output: &Output,
    request: &BeginSnapshotRequest,
) -> anyhow::Result<u64> {
    let Output::Live { ingest, .. } = output else {
        return Ok(0);
    };
    let mut snapshot_id = 0u64;
    if world.rank() == 0 {
        let request = request.clone();
        match ingest.begin(request) {
            Ok(id) => snapshot_id = id,
            Err(e) => error!("{e}"),
        }
    }
    world.process_at_rank(0).broadcast_into(&mut snapshot_id);
    if snapshot_id == 0 {
        bail!("the snapshot could not be begun; nothing was scanned");
    }
    Ok(snapshot_id)
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

fn gather_totals(
    world: &SimpleCommunicator,
    hosts: &[String],
    ok: bool,
    chunks: u64,
    c: WalkCounts,
) -> ScanTotals {
    // [ok, chunks, entries, errors, apparent bytes] per rank.
    let mine = [u64::from(ok), chunks, c.entries, c.errors, c.apparent_bytes];
    let mut all = vec![0u64; 5 * world.size() as usize];
    world.all_gather_into(&mine[..], &mut all[..]);
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

/// Rank 0: commits the snapshot if every rank succeeded, aborts it otherwise. The exit code.
fn commit_or_abort(
    ingest: &Ingest,
    request: FinishSnapshotRequest,
    failed_ranks: &[usize],
    own_failure: Option<&str>,
    started: Instant,
) -> u8 {
    let snapshot_id = request.snapshot_id;
    if !failed_ranks.is_empty() {
        let mut reason = format!("scan failed on rank(s) {failed_ranks:?}");
        if let Some(e) = own_failure {
            reason.push_str(&format!(" (rank 0: {e})"));
        }
        if let Err(e) = ingest.abort(snapshot_id, reason) {
            warn!(snapshot_id, "aborting the snapshot: {e}");
        }
        return EXIT_FAILED;
    }
    let errors: u64 = request.ranks.iter().map(|t| t.errors).sum();
    match ingest.finish(request) {
        Ok(done) => {
            info!(
                snapshot_id,
                entries = done.entries,
                directories = done.directories,
                errors,
                rollup_seconds = done.rollup_seconds,
                seconds = started.elapsed().as_secs_f64(),
                "snapshot committed"
            );
            0
        }
        Err(e) => {
            error!(snapshot_id, "{e}");
            EXIT_FAILED
        }
    }
}

/// Rank 0's progress: a status line rewritten in place on a terminal, log lines otherwise.
struct ProgressDisplay {
    on_terminal: bool,
    shown: AtomicBool,
}

impl ProgressDisplay {
    fn new() -> Self {
        Self {
            on_terminal: std::io::stderr().is_terminal(),
            shown: AtomicBool::new(false),
        }
    }

    fn show(&self, p: &Progress) {
        if self.on_terminal {
            self.shown.store(true, Ordering::Relaxed);
            eprint!(
                "\r{} entries, {}, {:.0} entries/s, {}/{} ranks busy, {} errors   ",
                p.entries,
                human_bytes(p.apparent_bytes),
                p.entries_per_second(),
                p.busy_ranks,
                p.ranks,
                p.errors
            );
        } else {
            info!(
                entries = p.entries,
                apparent_bytes = p.apparent_bytes,
                entries_per_second = p.entries_per_second().round(),
                busy_ranks = p.busy_ranks,
                ranks = p.ranks,
                errors = p.errors,
                "progress"
            );
        }
    }

    /// Ends the status line, if one was shown.
    fn finish(&self) {
        if self.shown.load(Ordering::Relaxed) {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_rows_shrink_with_threads_within_bounds() {
        assert_eq!(chunk_rows(None, 1), 32_768);
        assert_eq!(chunk_rows(None, 2), 32_768);
        assert_eq!(chunk_rows(None, 16), 4_096);
        assert_eq!(chunk_rows(None, 128), 2_048);
        assert_eq!(chunk_rows(Some(100), 16), 100);
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
