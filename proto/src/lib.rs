//! The contract between storage-tracker's parts: the gRPC ingest service, the Arrow schema of an
//! entry row, the Parquet chunk format, and the ClickHouse DDL. Every crate takes these from
//! here, so a change to the row layout is made once and bumps [`SCHEMA_VERSION`].

pub mod calendar;
pub mod chunk;
pub mod ddl;
pub mod entry;
pub mod metrics;
pub mod ncdu;
pub mod reports;
pub mod scan_options;
#[cfg(feature = "service")]
pub mod service;
pub mod sql;

/// Version of the entry schema and the ClickHouse layout. The aggregator refuses scanners
/// that write another version, and records it in every snapshot.
pub const SCHEMA_VERSION: u32 = 2;

/// Generated gRPC code for `storage_tracker.v1`.
pub mod v1 {
    #![allow(missing_debug_implementations, clippy::all)]
    tonic::include_proto!("storage_tracker.v1");
}

pub use chunk::{
    ChunkError, MANIFEST_FILE, chunk_file_name, decode_chunk, encode_chunk, parse_chunk_file_name,
    read_chunk_file,
};
pub use entry::{EntryBatchBuilder, EntryKind, ErrorOp, entry_schema};
