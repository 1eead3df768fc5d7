//! storage-tracker's aggregator: receives scanner chunks over gRPC, spools them durably, stores
//! them in ClickHouse, verifies and commits snapshots, computes the reports once per snapshot,
//! imports offline scans and applies retention.

pub mod import;
pub mod retention;
pub mod service;
pub mod spool;
pub mod sql;
pub mod store;

use std::future::Future;

use storage_tracker_proto::v1::ingest_server::IngestServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use service::{IngestService, ServiceOptions};
pub use spool::Spool;
pub use store::{Store, StoreConfig, StoreError};

/// Largest chunk message accepted; chunks are a few MiB, this leaves room for long paths.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

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
