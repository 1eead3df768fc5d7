//! `storage-aggregator`: the gRPC service that scanners stream their chunks to, and the
//! commands that manage what it stored.
//!
//! Configuration: options, their `STORAGE_TRACKER_*` environment variables, or a file of
//! `KEY=VALUE` lines (`--config`), in that order of precedence.
//!
//! Exit codes: 0 success (for `serve`, a clean shutdown on SIGTERM or Ctrl-C); 1 failure (the
//! address is taken, ClickHouse is unreachable, the database does not exist, an import was
//! refused); 2 a usage error (an option that does not parse).
//!
//! Only `serve` and `import` create the database; the other commands need it to exist.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use tracing::info;

use storage_tracker_aggregator::import::{self, Imported};
use storage_tracker_aggregator::retention::{self, Retention};
use storage_tracker_aggregator::snapshot::SnapshotState;
use storage_tracker_aggregator::{
    ClusterConfig, DEFAULT_MEMORY_MIB, IngestService, ServiceOptions, Spool, Store, StoreConfig,
    StoreError, serve,
};
use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::calendar::utc_datetime;
use storage_tracker_proto::ddl::{Cluster, Database};
use storage_tracker_proto::service::{LogFormat, apply_config_file, error_chain, init_logging};

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
        default_value = "http://127.0.0.1:8123",
        value_parser = parse_clickhouse_url
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

    /// ClickHouse database holding the snapshots; `serve` and `import` create it if missing,
    /// the other commands need it to exist.
    #[arg(
        long,
        global = true,
        env = "STORAGE_TRACKER_DATABASE",
        default_value = "storage_tracker"
    )]
    database: Database,

    /// The database lives on this cluster of the servers' remote_servers: local tables on
    /// every shard, distributed tables over them (deploy/README.md, "A ClickHouse cluster").
    /// --clickhouse-url is then any server of the cluster.
    #[arg(long, global = true, env = "STORAGE_TRACKER_CLICKHOUSE_CLUSTER")]
    clickhouse_cluster: Option<Cluster>,

    /// The HTTP URL of one server of each shard of --clickhouse-cluster (once per shard, or
    /// comma-separated): schema changes and dropped partitions go to each.
    #[arg(
        long,
        global = true,
        env = "STORAGE_TRACKER_CLICKHOUSE_SHARDS",
        value_delimiter = ',',
        value_parser = parse_clickhouse_url
    )]
    clickhouse_shard: Vec<String>,
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
        /// spool. Beside it the aggregator holds one chunk per core being decoded and one chunk
        /// message per open stream, whatever the size of the snapshot.
        #[arg(long, env = "STORAGE_TRACKER_MEMORY_MIB", default_value_t = DEFAULT_MEMORY_MIB)]
        memory_mib: usize,
        /// Seconds without a chunk or call after which a running snapshot is failed (its
        /// scan died).
        #[arg(long, env = "STORAGE_TRACKER_ABANDON_AFTER", default_value_t = 3600)]
        abandon_after: u64,
        /// Address of the Prometheus metrics (`GET /metrics`); "off" for none.
        #[arg(
            long,
            env = "STORAGE_TRACKER_METRICS_LISTEN",
            default_value = "127.0.0.1:9464",
            value_parser = parse_metrics_listen
        )]
        metrics_listen: MetricsListen,
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
        /// MiB of decoded chunks kept in memory for inserting, as for `serve`.
        #[arg(long, env = "STORAGE_TRACKER_MEMORY_MIB", default_value_t = DEFAULT_MEMORY_MIB)]
        memory_mib: usize,
    },
    /// List the snapshots with their state.
    List,
    /// Export a directory of a committed snapshot, with everything below it, in ncdu's JSON
    /// format: `ncdu -f FILE` (or `gdu -f FILE`) browses it.
    ExportNcdu {
        /// The snapshot (see `list`).
        snapshot_id: SnapshotId,
        /// The directory, an absolute path (default: the snapshot's root).
        #[arg(long, value_parser = absolute_path())]
        path: Option<PathBuf>,
        /// Where to write (default: standard output). The file appears when the export is
        /// complete (it is written under a temporary name beside it, then renamed).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Drop snapshots and everything derived from them (their record stays, as deleted).
    Drop {
        #[arg(required = true)]
        snapshot_ids: Vec<SnapshotId>,
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

/// `--metrics-listen`: an address, or none.
#[derive(Debug, Clone, Copy)]
enum MetricsListen {
    Off,
    On(SocketAddr),
}

fn parse_metrics_listen(s: &str) -> Result<MetricsListen, String> {
    if s == "off" {
        return Ok(MetricsListen::Off);
    }
    s.parse()
        .map(MetricsListen::On)
        .map_err(|e| format!("expected ADDRESS:PORT or off: {e}"))
}

/// The ClickHouse URL: `http://HOST[:PORT]` (the client speaks HTTP without TLS).
fn parse_clickhouse_url(s: &str) -> Result<String, String> {
    let expected = "expected e.g. http://127.0.0.1:8123";
    let uri: axum::http::Uri = s
        .parse()
        .map_err(|e| format!("not a valid URL ({expected}): {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("not an http:// URL ({expected})"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("not a valid URL: it names no host ({expected})"));
    }
    Ok(s.to_owned())
}

/// An absolute path (of any bytes), without a trailing '/' (but "/" itself).
fn absolute_path() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    use clap::builder::TypedValueParser;
    use std::os::unix::ffi::OsStrExt;
    clap::builder::PathBufValueParser::new().try_map(|p: PathBuf| {
        let bytes = p.as_os_str().as_bytes();
        if !bytes.starts_with(b"/") {
            return Err(format!("{} is not an absolute path", p.display()));
        }
        let trimmed = bytes
            .strip_suffix(b"/")
            .filter(|t| !t.is_empty())
            .unwrap_or(bytes);
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(trimmed)))
    })
}

/// Writes `file` through `write`, under a temporary name in the same directory that is renamed
/// to `file` once `write` succeeded and removed if it failed: `file` appears whole or not at all.
async fn write_whole<T>(
    file: &Path,
    write: impl AsyncFnOnce(&mut std::io::BufWriter<std::fs::File>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let name = file
        .file_name()
        .with_context(|| format!("{} names no file", file.display()))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = file.with_file_name(temp_name);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .with_context(|| format!("creating {}", temp.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
    let result = async {
        let value = write(&mut out).await?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, file)
            .with_context(|| format!("renaming {} to {}", temp.display(), file.display()))?;
        Ok(value)
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

async fn shutdown_signal() {
    storage_tracker_proto::service::shutdown_signal().await;
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
                    Ok(states) => metrics.set_stored(Some(&states)),
                    Err(e) => {
                        tracing::warn!("metrics: counting snapshots: {e}");
                        metrics.set_stored(None);
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

/// glibc's allocator, told to keep what the aggregator frees from piling up: two arenas, not
/// eight per core (each thread's chunk buffers landing in an arena of its own), and every
/// allocation of 4 MiB or more (a decoded chunk's columns) mapped on its own and unmapped when
/// freed, rather than taken from a heap that glibc's moving threshold lets grow. Measured on an
/// import of 10M entries: peak RSS 205-266 MB with glibc's defaults, 128-140 MB with these.
fn bound_the_allocator() {
    // SAFETY: mallopt only sets allocator parameters; it runs before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

fn main() -> ExitCode {
    bound_the_allocator();
    if let Err(e) = apply_config_file(&<Cli as clap::CommandFactory>::command()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    if let Command::Retention { retention, .. } = &cli.command
        && !retention.policy().is_set()
    {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "retention needs a policy: --keep-last, --keep-weekly or --keep-monthly above 0 \
                 (without one, every snapshot of the label but the newest would be dropped; \
                 --keep-last 1 says that on purpose)",
            )
            .exit();
    }
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
            eprintln!("error: {}", error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Import {
        dir, check: true, ..
    } = &cli.command
    {
        // Reads the files only: no ClickHouse needed.
        let (manifest, files) = import::check(dir)?;
        let rows: u64 = files.values().map(|(_, rows)| rows).sum();
        println!(
            "{}: scan {}, {} chunk files, {rows} entries: valid",
            dir.display(),
            manifest.begin.map(|b| b.scan_id).unwrap_or_default(),
            files.len()
        );
        return Ok(());
    }
    let ch = cli.clickhouse;
    let database = ch.database.clone();
    // Checked here, not by clap: either may come from the command line, the environment or a
    // configuration file.
    let cluster = match (ch.clickhouse_cluster, ch.clickhouse_shard.is_empty()) {
        (Some(name), false) => Some(ClusterConfig {
            name,
            shards: ch.clickhouse_shard,
        }),
        (None, true) => None,
        (Some(_), true) => bail!(
            "--clickhouse-cluster (STORAGE_TRACKER_CLICKHOUSE_CLUSTER) is given without \
             --clickhouse-shard (STORAGE_TRACKER_CLICKHOUSE_SHARDS): give the HTTP URL of one \
             server of each shard of the cluster"
        ),
        (None, false) => bail!(
            "--clickhouse-shard (STORAGE_TRACKER_CLICKHOUSE_SHARDS) is given without \
             --clickhouse-cluster (STORAGE_TRACKER_CLICKHOUSE_CLUSTER): give the cluster's name"
        ),
    };
    let store = Store::new(StoreConfig {
        url: ch.clickhouse_url,
        user: ch.clickhouse_user,
        password: ch.clickhouse_password,
        database: ch.database,
        cluster,
    });
    // The URL is in ClickHouse's errors; the context says what was being done.
    if matches!(cli.command, Command::Serve { .. } | Command::Import { .. }) {
        store.migrate().await.map_err(|e| match e {
            StoreError::Layout(_) => anyhow!(e),
            e => anyhow!(e).context(format!(
                "preparing the database {database} (is ClickHouse running, and may the user write?)"
            )),
        })?;
    } else {
        store.open_existing().await.map_err(|e| match e {
            StoreError::NoDatabase { .. } | StoreError::Layout(_) => anyhow!(e),
            e => anyhow!(e).context(format!(
                "opening the database {database} (is ClickHouse running?)"
            )),
        })?;
    }
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
            if let MetricsListen::On(addr) = metrics_listen {
                let metrics = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!(
                        "listening for metrics on {addr}; is the port taken? (--metrics-listen)"
                    )
                })?;
                info!(%addr, "metrics on http://{addr}/metrics");
                tokio::spawn(serve_metrics(metrics, service.clone(), store.clone()));
            }
            let resumed: Vec<u64> = service
                .running_snapshots()
                .into_iter()
                .map(SnapshotId::get)
                .collect();
            info!(%listen, database = %store.database(), ?resumed, "aggregator ready");
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
        Command::Import {
            dir, memory_mib, ..
        } => {
            let temp = std::env::temp_dir().join(format!("storage-import-{}", std::process::id()));
            let options = ServiceOptions {
                fail_unspooled: false,
                memory_budget: memory_mib << 20,
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
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let mut text =
                String::from("id\tstate\tlabel\troot\tstarted\tentries\terrors\tmessage\n");
            for r in store.snapshots().await? {
                text.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                    r.snapshot_id,
                    r.state(),
                    r.filesystem_label,
                    String::from_utf8_lossy(&r.root_path),
                    utc_datetime(i64::from(r.started_at)),
                    r.totals().entries,
                    r.totals().errors,
                    r.message()
                ));
            }
            // A reader that stops early (`| head`) is not an error.
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(anyhow::Error::new(e).context("writing the list"));
                }
                _ => {}
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
            if snapshot.state() != SnapshotState::Committed {
                bail!(
                    "snapshot {snapshot_id} is {}, not committed: only committed snapshots can be exported",
                    snapshot.state()
                );
            }
            let dir = match &path {
                Some(p) => p.as_os_str().as_encoded_bytes().to_vec(),
                None => snapshot.root_path.clone(),
            };
            let entries = match &output {
                Some(file) => {
                    write_whole(file, async |out| {
                        Ok(store.export_ncdu(&snapshot, &dir, out).await?)
                    })
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
                if record.state() == SnapshotState::Running {
                    bail!(
                        "snapshot {id} is running; abort its scan first, or wait for the aggregator to fail it"
                    );
                }
                retention::drop_snapshot(&store, record.clone())
                    .await
                    .with_context(|| {
                        format!(
                            "snapshot {id} is recorded as deleted, but not all its rows are \
                             dropped: run `storage-aggregator drop {id}` again"
                        )
                    })?;
                println!("dropped snapshot {id}");
            }
        }
        Command::Retention {
            label,
            retention,
            dry_run,
        } => {
            let dropped: Vec<u64> = retention::apply(&store, &retention.policy(), &label, dry_run)
                .await?
                .into_iter()
                .map(SnapshotId::get)
                .collect();
            let verb = if dry_run { "would drop" } else { "dropped" };
            println!(
                "{verb} {} snapshot(s) of {label}: {dropped:?}",
                dropped.len()
            );
        }
    }
    Ok(())
}
