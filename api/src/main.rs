//! `storage-api`: the HTTP API and web UI over committed snapshots.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C); 1 when it cannot start.

use std::net::SocketAddr;

use anyhow::{Context, bail};
use clap::Parser;
use tracing::info;

use storage_tracker_api::access::Access;
use storage_tracker_api::ui::UiFiles;
use storage_tracker_api::{AppState, ReadConfig, app};
use storage_tracker_proto::ddl::Database;

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

    /// The built web UI to serve at `/` (`ui/dist` after `npm run build` in ui/).
    #[arg(long, env = "STORAGE_TRACKER_UI_DIR")]
    ui_dir: Option<std::path::PathBuf>,
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, () = term => {} }
    info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let mut config = args.tokens.clone().unwrap_or_default();
    if let Some(file) = &args.tokens_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the tokens file {}", file.display()))?;
        config.push('\n');
        config.push_str(&text);
    }
    let access = Access::parse(&config).context("the tokens (--tokens-file, --tokens)")?;
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
    .with_access(access.clone());
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
        "serving on http://{}", args.listen
    );
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving HTTP")?;
    Ok(())
}
