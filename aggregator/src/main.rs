//! `storage-aggregator`: the gRPC service that scanners stream their chunks to.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM or Ctrl-C); 1 when it cannot start (the
//! address is taken, ClickHouse is unreachable or refuses the schema).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use tracing::info;

use storage_tracker_aggregator::{Store, StoreConfig, serve};
use storage_tracker_proto::ddl::Database;

/// Receive scanner chunks over gRPC and store them in ClickHouse.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on for scanners.
    #[arg(
        long,
        env = "STORAGE_TRACKER_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    listen: SocketAddr,

    /// ClickHouse HTTP URL.
    #[arg(
        long,
        env = "STORAGE_TRACKER_CLICKHOUSE_URL",
        default_value = "http://127.0.0.1:8123"
    )]
    clickhouse_url: String,

    /// ClickHouse user with write access to the database.
    #[arg(
        long,
        env = "STORAGE_TRACKER_CLICKHOUSE_USER",
        default_value = "default"
    )]
    clickhouse_user: String,

    /// Password of that user (prefer the environment variable to the command line).
    #[arg(
        long,
        env = "STORAGE_TRACKER_CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    clickhouse_password: String,

    /// ClickHouse database holding the snapshots; created if missing.
    #[arg(
        long,
        env = "STORAGE_TRACKER_DATABASE",
        default_value = "storage_tracker"
    )]
    database: Database,
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
    let store = Store::new(StoreConfig {
        url: args.clickhouse_url.clone(),
        user: args.clickhouse_user,
        password: args.clickhouse_password,
        database: args.database,
    });
    store
        .migrate()
        .await
        .with_context(|| format!("preparing the schema in ClickHouse at {}; is it running and is the user allowed to write?", args.clickhouse_url))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "listening on {}; is another aggregator running there? (--listen)",
                args.listen
            )
        })?;
    info!(listen = %args.listen, database = %store.database(), "aggregator ready");
    serve(listener, store, shutdown_signal())
        .await
        .context("serving gRPC")?;
    Ok(())
}
