//! `storage-api`: the HTTP API and web UI over committed snapshots.
//!
//! Configuration: options, their `STORAGE_TRACKER_*` environment variables, or a file of
//! `KEY=VALUE` lines (`--config`), in that order of precedence. Exit codes: 0 after a clean
//! shutdown (SIGTERM or Ctrl-C: requests under way are answered first); 1 when it cannot start.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use clap::Parser;
use tracing::info;

use storage_tracker_api::access::Access;
use storage_tracker_api::categories::Categories;
use storage_tracker_api::cors::Origins;
use storage_tracker_api::ui::UiFiles;
use storage_tracker_api::{AppState, ReadConfig, app};
use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::service::{LogFormat, apply_config_file, init_logging};

/// Serve storage-tracker's HTTP API and web UI.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on. Without tokens configured only loopback addresses are allowed,
    /// since every snapshot is readable through the API.
    #[arg(
        long,
        env = "STORAGE_TRACKER_API_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    listen: SocketAddr,

    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "STORAGE_TRACKER_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,

    /// ClickHouse user; give it a read-only profile (readonly=1, max_execution_time).
    #[arg(
        long,
        env = "STORAGE_TRACKER_API_CLICKHOUSE_USER",
        default_value = "storage_reader"
    )]
    clickhouse_user: String,

    /// Password of that user (prefer the environment variable to the command line).
    #[arg(
        long,
        env = "STORAGE_TRACKER_API_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    clickhouse_password: String,

    /// ClickHouse database holding the snapshots.
    #[arg(
        long,
        env = "STORAGE_TRACKER_DATABASE",
        default_value = "storage_tracker"
    )]
    database: Database,

    /// File of bearer tokens, one a line: NAME TOKEN SCOPE..., the scope `*` (admin) or path
    /// prefixes. Keep it readable by the API's user only.
    #[arg(long, env = "STORAGE_TRACKER_API_TOKENS_FILE")]
    tokens_file: Option<std::path::PathBuf>,

    /// The same lines, in the environment (for service managers that inject secrets).
    #[arg(long, env = "STORAGE_TRACKER_API_TOKENS", hide_env_values = true)]
    tokens: Option<String>,

    /// A file of KEY=VALUE lines setting these options by their environment variables
    /// (what systemd's EnvironmentFile= reads); the environment and the command line win.
    #[arg(long, env = "STORAGE_TRACKER_CONFIG")]
    config: Option<std::path::PathBuf>,

    /// Log lines as text or as JSON objects (for log collectors).
    #[arg(
        long,
        env = "STORAGE_TRACKER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,

    /// Web origins whose pages may call the API from a browser (a portal): scheme://host[:port]
    /// each, comma-separated, or * for any. None by default; the UI served here needs none.
    #[arg(long, env = "STORAGE_TRACKER_API_CORS_ORIGINS", default_value = "")]
    cors_origins: String,

    /// File types grouped into categories, one category a line: NAME TYPE... (the built-in
    /// ones are deploy/config/categories.conf); for the categories report and the treemap.
    #[arg(long, env = "STORAGE_TRACKER_API_CATEGORIES")]
    categories: Option<std::path::PathBuf>,

    /// Series per family and filesystem in the usage gauges for Prometheus
    /// (/api/v1/metrics/usage): the largest directories and users, the rest summed as (other).
    #[arg(
        long,
        env = "STORAGE_TRACKER_API_METRICS_SERIES",
        default_value_t = storage_tracker_api::gauges::DEFAULT_SERIES as u16,
        value_parser = clap::value_parser!(u16).range(1..=10_000)
    )]
    metrics_series: u16,

    /// The built web UI to serve at `/` (`ui/dist` after `npm run build` in ui/).
    #[arg(long, env = "STORAGE_TRACKER_UI_DIR")]
    ui_dir: Option<std::path::PathBuf>,
}

async fn shutdown_signal() {
    storage_tracker_proto::service::shutdown_signal().await;
    info!("shutting down");
}

fn main() -> std::process::ExitCode {
    if let Err(e) = apply_config_file(&<Args as clap::CommandFactory>::command()) {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let args = Args::parse();
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(
                "{}",
                storage_tracker_proto::service::error_chain(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

/// The tokens of `--tokens` and `--tokens-file`. Asking for tokens and giving none is an error,
/// not an open API.
fn tokens(args: &Args) -> anyhow::Result<Access> {
    use std::os::unix::fs::PermissionsExt;
    let mut access = Access::open();
    if let Some(text) = &args.tokens {
        access.add(text, "STORAGE_TRACKER_API_TOKENS (--tokens)")?;
    }
    if let Some(file) = &args.tokens_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the tokens file {}", file.display()))?;
        access.add(&text, &format!("the tokens file {}", file.display()))?;
        if let Ok(meta) = std::fs::metadata(file)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "the tokens file {} can be read by other users (mode {:o}); run chmod 600 on it",
                file.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    if access.is_open() && (args.tokens.is_some() || args.tokens_file.is_some()) {
        bail!(
            "{} holds no token: add lines NAME TOKEN SCOPE... (see deploy/README.md), or give neither \
             --tokens-file nor --tokens to serve loopback only without tokens",
            [
                args.tokens_file
                    .as_ref()
                    .map(|f| format!("the tokens file {}", f.display())),
                args.tokens
                    .as_ref()
                    .map(|_| "STORAGE_TRACKER_API_TOKENS (--tokens)".to_owned()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" with ")
        );
    }
    Ok(access)
}

/// The categories of `--categories`, or the built-in ones.
fn categories(args: &Args) -> anyhow::Result<Categories> {
    let Some(file) = &args.categories else {
        return Ok(Categories::default());
    };
    let text = std::fs::read_to_string(file).with_context(|| {
        format!(
            "reading the categories file {} (--categories, STORAGE_TRACKER_API_CATEGORIES)",
            file.display()
        )
    })?;
    Ok(Categories::parse(
        &text,
        &format!("the categories file {}", file.display()),
    )?)
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let access = tokens(&args)?;
    let cors = Origins::parse(&args.cors_origins)
        .context("--cors-origins (STORAGE_TRACKER_API_CORS_ORIGINS)")?;
    let categories = categories(&args)?;
    if access.is_open() && !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {}: without tokens (--tokens-file) the API serves loopback only",
            args.listen
        );
    }
    let state = AppState::new(ReadConfig {
        url: args.clickhouse_url,
        user: args.clickhouse_user,
        password: args.clickhouse_password,
        database: args.database,
    })
    .with_access(access.clone())
    .with_cors(cors.clone())
    .with_categories(categories)
    .with_metrics_series(usize::from(args.metrics_series));
    let state = match &args.ui_dir {
        Some(dir) => {
            let ui = UiFiles::load(dir).with_context(|| format!("--ui-dir {}", dir.display()))?;
            info!(files = ui.len(), dir = %dir.display(), "serving the web UI");
            state.with_ui(ui)
        }
        None => state,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {}; is another API running there? (--listen)",
                args.listen
            )
        })?;
    info!(
        tokens = if access.is_open() {
            "none (open, loopback only)"
        } else {
            "required"
        },
        cross_origin = ?cors,
        "serving on http://{}", args.listen
    );
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    Ok(())
}
