//! storage-tracker's aggregator: receives scanner chunks over gRPC, spools them durably, stores
//! them in ClickHouse, verifies and commits snapshots, computes the reports once per snapshot,
//! imports offline scans and applies retention.
//!
//! The modules, in the order a snapshot's data flows through them:
//!
//! - [`service`]: the gRPC surface (`Ingest`) and [`IngestService`], the handle that starts the
//!   service, stops it, and calls it in process.
//! - `ingest`: the stages of a snapshot's life over the state they share (the running
//!   snapshots, the insert queue): `begin` (the record is spooled and stored), `accept` (a
//!   chunk is decoded, checked, spooled, fsynced, acknowledged), `insert` (the workers store
//!   each spooled chunk exactly once), `commit` (the totals are verified, the reports computed,
//!   the snapshot committed), `fail` (aborted, failed or abandoned snapshots lose their rows) and
//!   `recover` (at start, the spool's snapshots resume); beside them `space` (a spool write
//!   refused for lack of room is a wait for the scanner, logged and counted, never a failure).
//! - [`spool`]: the durable spool on disk: what was acknowledged and is not yet stored.
//! - [`store`]: ClickHouse: the schema, chunk inserts, counts, reports, snapshot records.
//! - [`sql`]: every write-side statement, the reports' SQL among them.
//! - [`snapshot`]: a snapshot's record and its states, changed only by one transition function.
//! - [`retention`]: which committed snapshots to keep, and dropping the others.
//! - [`import`]: an offline scan's files checked, then sent through the same service.
//! - [`metrics`]: the Prometheus metrics the service and `/metrics` count.

pub mod import;
mod ingest;
pub mod metrics;
pub mod retention;
pub mod service;
pub mod snapshot;
pub mod spool;
pub mod sql;
pub mod store;

use std::future::Future;

use storage_tracker_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use service::{DEFAULT_MEMORY_MIB, IngestService, ServiceOptions};
pub use spool::Spool;
pub use store::{ClusterConfig, Store, StoreConfig, StoreError};

pub use storage_tracker_proto::service::MAX_MESSAGE_BYTES;

/// Serves the ingest service on `listener` until `shutdown` completes. What was acknowledged
/// and not yet stored stays in the spool for the next start.
pub async fn serve(
    listener: TcpListener,
    service: IngestService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = IngestServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
