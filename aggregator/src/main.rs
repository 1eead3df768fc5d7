//! `storage-aggregator`: the gRPC service that scanners stream their chunks to, and the
//! commands that manage what it stored.
//!
//! Configuration: options, their `STORAGE_TRACKER_*` environment variables, or a file of
//! `KEY=VALUE` lines (`--config`), in that order of precedence.
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
use storage_tracker_proto::service::{LogFormat, apply_config_file, init_logging};

/// Receive scanner chunks over gRPC and store them in ClickHouse; import offline scans; list
/// and drop snapshots.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    /// A file of KEY=VALUE lines setting options by their environment variables (what systemd's
    /// EnvironmentFile= reads); the environment and the command line win.
    #[arg(long, global = true, env = "STORAGE_TRACKER_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text or as JSON objects (for log collectors).
    #[arg(
        long,
        global = true,
        env = "STORAGE_TRACKER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
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
    #[arg(long, env = "STORAGE_TRACKER_KEEP_LAST", default_value_t = 0)]
    keep_last: usize,
    /// Keep the newest snapshot of each of the newest N ISO weeks that have one.
    #[arg(long, env = "STORAGE_TRACKER_KEEP_WEEKLY", default_value_t = 0)]
    keep_weekly: usize,
    /// Keep the newest snapshot of each of the newest N calendar months that have one.
    #[arg(long, env = "STORAGE_TRACKER_KEEP_MONTHLY", default_value_t = 0)]
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
        #[arg(long, env = "STORAGE_TRACKER_INSERT_WORKERS", default_value_t = 2)]
        insert_workers: usize,
        /// MiB of decoded chunks kept in memory for inserting; the rest are read back from the
        /// spool.
        #[arg(long, env = "STORAGE_TRACKER_MEMORY_MIB", default_value_t = 256)]
        memory_mib: usize,
        /// Seconds without a chunk or call after which a running snapshot is failed (its
        /// scan died).
        #[arg(long, env = "STORAGE_TRACKER_ABANDON_AFTER", default_value_t = 3600)]
        abandon_after: u64,
        /// Address of the Prometheus metrics (`GET /metrics`); "off" for none.
        #[arg(
            long,
            env = "STORAGE_TRACKER_METRICS_LISTEN",
            default_value = "127.0.0.1:9464"
        )]
        metrics_listen: String,
        /// Seconds that streams, inserts and commits under way get to finish after SIGTERM;
        /// what is acknowledged and not yet stored stays in the spool either way.
        #[arg(long, env = "STORAGE_TRACKER_SHUTDOWN_GRACE", default_value_t = 20)]
        shutdown_grace: u64,
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

/// `GET /metrics` for Prometheus: the service's counters and the snapshots by state.
async fn serve_metrics(listener: tokio::net::TcpListener, service: IngestService, store: Store) {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let (service, store) = (service.clone(), store.clone());
            async move {
                let metrics = service.metrics();
                match store.snapshot_states().await {
                    Ok(states) => {
                        for state in ["running", "committed", "failed", "deleted"] {
                            let n = states
                                .iter()
                                .find(|(s, _)| s == state)
                                .map_or(0, |(_, n)| *n);
                            metrics.set(
                                "storage_tracker_snapshots",
                                "Snapshots in ClickHouse by state.",
                                &[("state", state)],
                                n as f64,
                            );
                        }
                        metrics.set(
                            "storage_tracker_clickhouse_up",
                            "Whether ClickHouse answered this scrape.",
                            &[],
                            1.0,
                        );
                    }
                    Err(e) => {
                        tracing::warn!("metrics: counting snapshots: {e}");
                        metrics.set(
                            "storage_tracker_clickhouse_up",
                            "Whether ClickHouse answered this scrape.",
                            &[],
                            0.0,
                        );
                    }
                }
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        storage_tracker_proto::metrics::CONTENT_TYPE,
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics server: {e}");
    }
}

fn main() -> ExitCode {
    if let Err(e) = apply_config_file() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    init_logging(cli.log_format);
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
            metrics_listen,
            shutdown_grace,
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
            if metrics_listen != "off" {
                let addr: SocketAddr = metrics_listen.parse().with_context(|| {
                    format!("--metrics-listen {metrics_listen:?}: expected ADDRESS:PORT or off")
                })?;
                let metrics = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!(
                        "listening for metrics on {addr}; is the port taken? (--metrics-listen)"
                    )
                })?;
                info!(%addr, "metrics on http://{addr}/metrics");
                tokio::spawn(serve_metrics(metrics, service.clone(), store.clone()));
            }
            info!(%listen, database = %store.database(), resumed = ?service.running_snapshots(), "aggregator ready");
            let grace = Duration::from_secs(shutdown_grace);
            let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
            let server = serve(listener, service.clone(), async move {
                shutdown_signal().await;
                let _ = stopped_tx.send(());
            });
            tokio::select! {
                served = server => served.context("serving gRPC")?,
                () = async {
                    if stopped_rx.await.is_ok() {
                        tokio::time::sleep(grace).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                } => {
                    tracing::warn!("scanner streams still open after {shutdown_grace} s; closing them (the scanners resend what was not acknowledged)");
                }
            }
            if service.shutdown(grace).await {
                info!(
                    "stopped; chunks acknowledged and not yet stored stay in the spool for the next start"
                );
            } else {
                tracing::warn!(
                    "stopped with inserts or commits under way; they are taken up again from the spool at the next start"
                );
            }
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
