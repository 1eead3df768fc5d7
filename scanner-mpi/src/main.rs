//! `storage-scan`: scan a directory tree into a storage-tracker snapshot.
//!
//! Runs as one plain process or as every task of an MPI job (`srun`, `mpiexec`). Here the
//! arguments become a checked [`JobPlan`] that [`MpiJob`] runs on every rank; the process
//! exits with one of the [`Exit`] codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use tracing::{error, info};

use storage_tracker_proto::service::{LogFormat, error_chain, init_logging};
use storage_tracker_scanner::chunks::ChunkLimits;
use storage_tracker_scanner::filesystem::Filesystem;
use storage_tracker_scanner::mpi_job::{HashPlan, LaunchError, MpiJob, Outcome};
use storage_tracker_scanner::plan::{JobPlan, OutputPlan, PlanError, Root, output_directory};
use storage_tracker_scanner::scan::ScanPlan;
use storage_tracker_scanner::upload::{Ingest, parse_address};
use storage_tracker_scanner::walk::{Exclude, WalkOptions};

/// The exit codes of `storage-scan`.
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// The snapshot is committed.
    Committed = 0,
    /// The scan failed; the snapshot is marked failed.
    Failed = 1,
    /// Bad arguments, or the root is missing or not a directory.
    Usage = 2,
    /// The snapshot is committed, but some entries could not be read (recorded as errors).
    CommittedWithErrors = 3,
    /// The MPI world does not match the Slurm step (wrong `--mpi` plugin).
    LaunchMismatch = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Scan a directory tree into a storage-tracker snapshot.
#[derive(Debug, Parser)]
#[command(name = "storage-scan", version, about)]
struct Args {
    /// Root of the scan: a directory. Symlinks below it are recorded, not followed (see -L).
    #[arg(required_unless_present_any = ["abort", "hash_duplicates"])]
    root: Option<PathBuf>,

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

    /// Rank 0 writes the id of the snapshot it begins into this file (one line), so that
    /// whatever runs the job can abort the snapshot with --abort if the job dies without
    /// ending it (a rank killed, a node lost): slurm/scan.sbatch does.
    #[arg(
        long,
        value_name = "FILE",
        env = "STORAGE_TRACKER_SNAPSHOT_FILE",
        requires = "aggregator",
        conflicts_with = "output"
    )]
    snapshot_file: Option<PathBuf>,

    /// Scan nothing: mark the running snapshot ID failed at the aggregator, dropping its rows,
    /// and exit (0 when it is failed now or was already; 1 when it is committed, unknown, or
    /// the aggregator cannot be reached within --retry-for, at most 60 s). For a job that died
    /// before it could abort its own.
    #[arg(long, value_name = "ID", requires = "aggregator", conflicts_with_all = ["root", "output"])]
    abort: Option<u64>,

    /// Scan nothing: read the duplicate candidates of the committed snapshot ID (files of one
    /// size, of at least 1 MiB) and hash them with BLAKE3, sampled blocks first, the whole
    /// content only where the samples agree; the hashes go to the aggregator, as part of the
    /// snapshot, for its duplicates report. Launched like a scan (srun, mpiexec: the ranks
    /// share the files); run again, it reads only what is not hashed yet. Honours --no-atime,
    /// --threads, --retry-for.
    #[arg(
        long,
        value_name = "ID",
        requires = "aggregator",
        conflicts_with_all = [
            "root", "output", "abort", "label", "exclude", "one_file_system", "max_depth",
            "follow_symlinks", "chunk_rows", "snapshot_file", "in_flight",
        ]
    )]
    hash_duplicates: Option<u64>,

    /// With --hash-duplicates: only files of at least this size (bytes, or with K, M, G or T:
    /// 64M, 1G).
    #[arg(long, value_name = "SIZE", requires = "hash_duplicates", value_parser = parse_size)]
    min_size: Option<u64>,

    /// With --hash-duplicates: only files whose name, as well as their size, another file
    /// has.
    #[arg(long, requires = "hash_duplicates")]
    same_name: bool,

    /// Why, with --abort: recorded as the snapshot's error [default: aborted with
    /// storage-scan --abort].
    #[arg(
        long,
        requires = "abort",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    reason: Option<String>,

    /// Name of the filesystem recorded with the snapshot (default: the root path).
    #[arg(long, env = "STORAGE_TRACKER_FS_LABEL")]
    label: Option<String>,

    /// Worker threads per rank [default: the cores (SLURM_CPUS_PER_TASK, else the available
    /// cores) on a local filesystem; 16 per core, from 32 to 256, on a network filesystem:
    /// Lustre, GPFS, NFS, BeeGFS, CephFS, SMB, AFS, PanFS, 9p or FUSE, as statfs names the
    /// root's]. On a network filesystem each stat is a round trip to a metadata server (0.2-2
    /// ms) that waits on the network, not on a core, so a scan goes as fast as it keeps
    /// operations in flight: threads that wait cost no CPU.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,

    /// Rows per Parquet chunk [default: 65536 / threads, from 2048 to 32768, so that a rank's
    /// batches in memory stay about the same whatever its thread count].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    chunk_rows: Option<u32>,

    /// Leave out entries matching this glob, and everything below them (repeatable). A
    /// pattern with a '/' matches whole paths ('*' does not cross '/'), one without matches
    /// names at any depth: --exclude .snapshot --exclude '/scratch/*/tmp'.
    #[arg(long, value_name = "GLOB", value_parser = Exclude::new)]
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

/// A size in bytes, or with a binary unit: 512, 64K, 100M, 1G, 2T.
fn parse_size(given: &str) -> Result<u64, String> {
    let bad =
        || format!("{given:?} is not a size: give bytes, or a number with K, M, G or T (64M)");
    let (digits, shift) = match given.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&given[..given.len() - 1], 10),
        Some(b'M') => (&given[..given.len() - 1], 20),
        Some(b'G') => (&given[..given.len() - 1], 30),
        Some(b'T') => (&given[..given.len() - 1], 40),
        _ => (given, 0),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

/// Each worker thread fills its own chunk: fewer rows per chunk with more threads keeps a
/// rank's memory bounded.
fn chunk_rows(given: Option<u32>, threads: usize) -> usize {
    given.map_or_else(
        || (65_536 / threads.max(1)).clamp(2_048, 32_768),
        |n| n as usize,
    )
}

/// The cores of this rank: Slurm's CPUs per task, else what the process may run on.
fn cores() -> usize {
    std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.reason.is_some() && args.abort.is_none() {
        // clap's `requires` does not hold it (the root satisfies the rest of the command).
        Args::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--reason goes with --abort ID: it is recorded as the aborted snapshot's error",
            )
            .exit();
    }
    if (args.min_size.is_some() || args.same_name) && args.hash_duplicates.is_none() {
        Args::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "--min-size and --same-name go with --hash-duplicates ID: they choose which \
                 duplicate candidates are hashed, and change nothing in a scan",
            )
            .exit();
    }
    init_logging(LogFormat::Text);
    if let Some(snapshot_id) = args.abort {
        let address = args
            .aggregator
            .expect("clap requires --aggregator with --abort");
        let reason = args
            .reason
            .unwrap_or_else(|| "aborted with storage-scan --abort".to_owned());
        return abort(&address, snapshot_id, reason, args.retry_for).into();
    }
    let hashing = args.hash_duplicates.map(|snapshot_id| HashPlan {
        address: args
            .aggregator
            .clone()
            .expect("clap requires --aggregator with --hash-duplicates"),
        retry_for: Duration::from_secs(args.retry_for),
        snapshot_id,
        threads: args.threads.map_or_else(cores, usize::from),
        no_atime: args.no_atime,
        min_size: args.min_size.unwrap_or(0),
        same_name: args.same_name,
        progress_interval: Duration::from_secs(args.progress_interval),
    });
    let job = match MpiJob::init() {
        Ok(job) => job,
        Err(e) => {
            error!("{e}");
            return match e {
                LaunchError::NotOneJob { .. } => Exit::LaunchMismatch,
                LaunchError::Init | LaunchError::Threading(_) => Exit::Failed,
            }
            .into();
        }
    };
    if let Some(hashing) = hashing {
        return match job.hash_duplicates(&hashing) {
            Outcome::Complete => Exit::Committed,
            Outcome::CompleteWithErrors => Exit::CommittedWithErrors,
            Outcome::Failed => Exit::Failed,
        }
        .into();
    }
    let Some(plan) = job.agree(plan(args)) else {
        return Exit::Usage.into();
    };
    match job.run(&plan) {
        Outcome::Complete => Exit::Committed,
        Outcome::CompleteWithErrors => Exit::CommittedWithErrors,
        Outcome::Failed => Exit::Failed,
    }
    .into()
}

/// `--abort`: fails a running snapshot at the aggregator, without MPI.
fn abort(address: &str, snapshot_id: u64, reason: String, retry_for: u64) -> Exit {
    let aborted = Ingest::connect(address, Duration::from_secs(retry_for.min(60)))
        .and_then(|ingest| ingest.abort(snapshot_id, reason));
    match aborted {
        Ok(()) => {
            info!(
                snapshot = snapshot_id,
                "the snapshot is failed; none of its rows is kept"
            );
            Exit::Committed
        }
        Err(e) => {
            error!(
                snapshot = snapshot_id,
                "aborting the snapshot: {}",
                error_chain(&e)
            );
            Exit::Failed
        }
    }
}

/// The arguments as a plan for every rank, checked here (clap checked their syntax).
fn plan(args: Args) -> Result<JobPlan, PlanError> {
    let root = Root::check(&args.root.expect("clap requires the root unless --abort"))?;
    let filesystem = Filesystem::of(&root.path);
    let threads = args.threads.map_or_else(
        || filesystem.map_or_else(cores, |fs| fs.default_threads(cores())),
        usize::from,
    );
    let output = match (args.output, args.aggregator) {
        (Some(dir), _) => OutputPlan::Directory(output_directory(dir)?),
        (None, Some(address)) => OutputPlan::Aggregator {
            address,
            in_flight: usize::from(args.in_flight),
            retry_for: Duration::from_secs(args.retry_for),
            snapshot_file: args.snapshot_file,
        },
        (None, None) => unreachable!("clap requires --aggregator or --output"),
    };
    Ok(JobPlan {
        label: args
            .label
            .unwrap_or_else(|| root.path.display().to_string()),
        output,
        scan: ScanPlan {
            options: Arc::new(WalkOptions {
                exclude: args.exclude,
                same_device: args.one_file_system.then_some(root.dev),
                max_depth: args.max_depth,
                follow_symlinks: args.follow_symlinks,
                no_atime: args.no_atime,
            }),
            root: root.path,
            filesystem,
            threads,
            limits: ChunkLimits {
                rows: chunk_rows(args.chunk_rows, threads),
                path_bytes: 64 << 20,
            },
            progress_interval: Duration::from_secs(args.progress_interval),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_binary_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert!(parse_size("1.5G").unwrap_err().contains("is not a size"));
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn chunk_rows_shrink_with_threads_within_bounds() {
        assert_eq!(chunk_rows(None, 1), 32_768);
        assert_eq!(chunk_rows(None, 2), 32_768);
        assert_eq!(chunk_rows(None, 16), 4_096);
        assert_eq!(chunk_rows(None, 128), 2_048);
        assert_eq!(chunk_rows(Some(100), 16), 100);
    }
}
