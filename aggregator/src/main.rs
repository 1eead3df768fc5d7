//! `storage-aggregator`: the gRPC service that scanners stream their chunks to, and the
//! commands that manage what it stored.
//!
//! Exit codes: 0 success (for `serve`, a clean shutdown on SIGTERM or Ctrl-C); 1 failure (the
//! address is taken, ClickHouse is unreachable, an import was refused); 2 a usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use tracing::info;

use storage_tracker_aggregator::import::{self, Imported};
use storage_tracker_aggregator::retention::{self, Retention};
use storage_tracker_aggregator::store::{STATE_COMMITTED, STATE_RUNNING, state_name};
use storage_tracker_aggregator::{IngestService, ServiceOptions, Spool, Store, StoreConfig, serve};
use storage_tracker_proto::ddl::Database;

/// Receive scanner chunks over gRPC and store them in ClickHouse; import offline scans; list
/// and drop snapshots.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct ClickHouseArgs {
    /// ClickHouse HTTP URL.
    #[arg(
        long,
        global = true,
        env = "STORAGE_TRACKER_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,

    /// ClickHouse user with write access to the database.
    #[arg(
        long,
        global = true,
        env = "STORAGE_TRACKER_CLICKHOUSE_USER",
        default_value = "default"
    )]
    clickhouse_user: String,

    /// Password of that user (prefer the environment variable to the command line).
    #[arg(
        long,
        global = true,
        env = "STORAGE_TRACKER_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    clickhouse_password: String,

    /// ClickHouse database holding the snapshots; created if missing.
    #[arg(
        long,
        global = true,
        env = "STORAGE_TRACKER_DATABASE",
        default_value = "storage_tracker"
    )]
    database: Database,
}

#[derive(Debug, Args)]
struct RetentionArgs {
    /// Keep the newest N snapshots of a filesystem label.
    #[arg(long, default_value_t = 0)]
    keep_last: usize,
    /// Keep the newest snapshot of each of the newest N ISO weeks that have one.
    #[arg(long, default_value_t = 0)]
    keep_weekly: usize,
    /// Keep the newest snapshot of each of the newest N calendar months that have one.
    #[arg(long, default_value_t = 0)]
    keep_monthly: usize,
}

impl RetentionArgs {
    fn policy(&self) -> Retention {
        Retention {
            last: self.keep_last,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve scanners: spool each chunk durably, acknowledge it, store it, commit snapshots.
    Serve {
        /// Address to listen on for scanners.
        #[arg(
            long,
            env = "STORAGE_TRACKER_LISTEN",
            default_value = "127.0.0.1:50051"
        )]
        listen: SocketAddr,
        /// Directory of the durable spool: acknowledged chunks not yet in ClickHouse. Keep it
        /// across restarts; the aggregator finishes what it holds when it starts.
        #[arg(long, env = "STORAGE_TRACKER_SPOOL")]
        spool: PathBuf,
        /// Chunks inserted into ClickHouse at the same time.
        #[arg(long, default_value_t = 2)]
        insert_workers: usize,
        /// MiB of decoded chunks kept in memory for inserting; the rest are read back from the
        /// spool.
        #[arg(long, default_value_t = 256)]
        memory_mib: usize,
        /// Seconds without a chunk or call after which a running snapshot is failed (its
        /// scan died).
        #[arg(long, default_value_t = 3600)]
        abandon_after: u64,
        /// Retention applied after each commit to the snapshots of the same filesystem label
        /// (none unless a --keep option is given).
        #[command(flatten)]
        retention: RetentionArgs,
    },
    /// Import an offline scan (the directory of `storage-scan --output DIR`) as a committed
    /// snapshot. Importing the same scan twice changes nothing.
    Import {
        /// The offline scan's directory.
        dir: PathBuf,
        /// Only check the files; store nothing.
        #[arg(long)]
        check: bool,
    },
    /// List the snapshots with their state.
    List,
    /// Export a directory of a committed snapshot, with everything below it, in ncdu's JSON
    /// format: `ncdu -f FILE` (or `gdu -f FILE`) browses it.
    ExportNcdu {
        /// The snapshot (see `list`).
        snapshot_id: u64,
        /// The directory (default: the snapshot's root).
        #[arg(long)]
        path: Option<PathBuf>,
        /// Where to write (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Drop snapshots and everything derived from them (their record stays, as deleted).
    Drop {
        #[arg(required = true)]
        snapshot_ids: Vec<u64>,
    },
    /// Apply a retention policy to the committed snapshots of a filesystem label.
    Retention {
        /// The filesystem label (as given to storage-scan --label).
        #[arg(long)]
        label: String,
        #[command(flatten)]
        retention: RetentionArgs,
        /// Print what would be dropped; drop nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    info!("shutting down; acknowledged chunks not yet stored stay in the spool");
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let ch = cli.clickhouse;
    let url = ch.clickhouse_url.clone();
    let store = Store::new(StoreConfig {
        url: ch.clickhouse_url,
        user: ch.clickhouse_user,
        password: ch.clickhouse_password,
        database: ch.database,
    });
    store.migrate().await.with_context(|| {
        format!("preparing the schema in ClickHouse at {url}; is it running and is the user allowed to write?")
    })?;
    match cli.command {
        Command::Serve {
            listen,
            spool,
            insert_workers,
            memory_mib,
            abandon_after,
            retention,
        } => {
            let spool = Spool::open(&spool).context("opening the spool (--spool)")?;
            let options = ServiceOptions {
                insert_workers,
                memory_budget: memory_mib << 20,
                abandon_after: Duration::from_secs(abandon_after),
                retention: retention.policy().is_set().then(|| retention.policy()),
                ..ServiceOptions::new(spool)
            };
            let service = IngestService::start(store.clone(), options).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| {
                    format!(
                        "listening on {listen}; is another aggregator running there? (--listen)"
                    )
                })?;
            info!(%listen, database = %store.database(), resumed = ?service.running_snapshots(), "aggregator ready");
            serve(listener, service, shutdown_signal())
                .await
                .context("serving gRPC")?;
        }
        Command::Import { dir, check } => {
            if check {
                let (manifest, files) = import::check(&dir)?;
                let rows: u64 = files.values().map(|(_, rows)| rows).sum();
                println!(
                    "{}: scan {}, {} chunk files, {rows} entries: valid",
                    dir.display(),
                    manifest.begin.map(|b| b.scan_id).unwrap_or_default(),
                    files.len()
                );
                return Ok(());
            }
            let temp = std::env::temp_dir().join(format!("storage-import-{}", std::process::id()));
            let options = ServiceOptions {
                fail_unspooled: false,
                ..ServiceOptions::new(Spool::open(&temp)?)
            };
            let service = IngestService::start(store.clone(), options).await?;
            let outcome = import::import(&service, &store, &dir).await;
            let _ = std::fs::remove_dir_all(&temp);
            match outcome? {
                Imported::Committed {
                    snapshot_id,
                    entries,
                    chunks,
                } => println!(
                    "imported {} as snapshot {snapshot_id}: {entries} entries from {chunks} chunk files",
                    dir.display()
                ),
                Imported::AlreadyCommitted { snapshot_id } => println!(
                    "{} was imported before as snapshot {snapshot_id}; nothing changed",
                    dir.display()
                ),
            }
        }
        Command::List => {
            println!("id\tstate\tlabel\troot\tstarted\tentries\terrors\tmessage");
            for r in store.snapshots().await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.snapshot_id,
                    state_name(r.state),
                    r.filesystem_label,
                    String::from_utf8_lossy(&r.root_path),
                    r.started_at,
                    r.entries,
                    r.errors,
                    r.message
                );
            }
        }
        Command::ExportNcdu {
            snapshot_id,
            path,
            output,
        } => {
            let Some(snapshot) = store.snapshot(snapshot_id).await? else {
                bail!("there is no snapshot {snapshot_id} (see `storage-aggregator list`)");
            };
            if snapshot.state != STATE_COMMITTED {
                bail!(
                    "snapshot {snapshot_id} is {}, not committed: only committed snapshots can be exported",
                    state_name(snapshot.state)
                );
            }
            let dir = match &path {
                Some(p) => {
                    let bytes = p.as_os_str().as_encoded_bytes();
                    if !bytes.starts_with(b"/") {
                        bail!("--path must be absolute, got {}", p.display());
                    }
                    let trimmed = bytes
                        .strip_suffix(b"/")
                        .filter(|t| !t.is_empty())
                        .unwrap_or(bytes);
                    trimmed.to_vec()
                }
                None => snapshot.root_path.clone(),
            };
            let entries = match &output {
                Some(file) => {
                    let f = std::fs::File::create(file)
                        .with_context(|| format!("creating {}", file.display()))?;
                    store
                        .export_ncdu(
                            &snapshot,
                            &dir,
                            std::io::BufWriter::with_capacity(1 << 20, f),
                        )
                        .await?
                }
                None => {
                    store
                        .export_ncdu(
                            &snapshot,
                            &dir,
                            std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock()),
                        )
                        .await?
                }
            };
            eprintln!(
                "exported {entries} entries of {} from snapshot {snapshot_id}",
                String::from_utf8_lossy(&dir)
            );
        }
        Command::Drop { snapshot_ids } => {
            let all = store.snapshots().await?;
            for id in snapshot_ids {
                let Some(record) = all.iter().find(|r| r.snapshot_id == id) else {
                    bail!("there is no snapshot {id} (see `storage-aggregator list`)");
                };
                if record.state == STATE_RUNNING {
                    bail!(
                        "snapshot {id} is running; abort its scan first, or wait for the aggregator to fail it"
                    );
                }
                retention::drop_snapshot(&store, record.clone()).await?;
                println!("dropped snapshot {id}");
            }
        }
        Command::Retention {
            label,
            retention,
            dry_run,
        } => {
            let dropped = retention::apply(&store, &retention.policy(), &label, dry_run).await?;
            let verb = if dry_run { "would drop" } else { "dropped" };
            println!(
                "{verb} {} snapshot(s) of {label}: {dropped:?}",
                dropped.len()
            );
        }
    }
    Ok(())
}
