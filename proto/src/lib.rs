//! The contract between storage-tracker's parts, and the few pieces its services share. Every
//! crate takes these from here, so a change to the row layout is made once and bumps
//! [`SCHEMA_VERSION`].
//!
//! The contract:
//! - [`v1`]: the gRPC ingest service `storage_tracker.v1` (generated from
//!   `proto/storage_tracker/v1/ingest.proto`); [`snapshot`] adds typed readings of its fields.
//! - [`entry`]: the entry row: its Arrow schema (defined once), its enum codes
//!   ([`EntryKind`], [`ErrorOp`]) and the builder that fills a batch.
//! - [`rows`]: what valid entry rows are: [`EntryColumns`], the checked, typed view of a batch's
//!   columns that readers store and count rows through.
//! - [`chunk`]: the chunk format, one Parquet file of one row group, as sent over gRPC and
//!   written by offline scans; decoding checks its structure, and a [`ValidChunk`] its rows.
//! - [`size`] and [`snapshot`]: [`ApparentBytes`], [`AllocatedBytes`] and [`SnapshotId`], where a
//!   bare integer could be taken for another.
//! - [`ddl`]: the ClickHouse tables, their migrations and the schema version they record.
//! - [`sql`]: SQL literals for ClickHouse, built so that no input can leave the literal.
//! - [`reports`]: how the per-snapshot reports bucket files by size and age and what a file's
//!   type is, each rule in Rust and in SQL.
//! - [`ncdu`]: the export of a directory in ncdu's JSON format, streamed from stored rows.
//! - [`scan_options`]: the canonical text of what a scan covered.
//! - [`metrics`]: Prometheus metrics and their text format, for both services' `/metrics`.
//! - [`calendar`]: dates as day counts, for parameters, retention and reports by age.
//!
//! Shared by the programs (feature `service`):
//! - `service`: configuration files, logging, how errors print, the servers' shutdown signal
//!   and the gRPC message size limit.

pub mod calendar;
pub mod chunk;
pub mod ddl;
pub mod entry;
pub mod metrics;
pub mod ncdu;
pub mod reports;
pub mod rows;
pub mod scan_options;
#[cfg(feature = "service")]
pub mod service;
pub mod size;
pub mod snapshot;
pub mod sql;

/// Version of the entry schema: the columns of a chunk. The aggregator refuses scanners that
/// write another version, and records it in every snapshot. (The ClickHouse layout has its
/// own, [`ddl::DATABASE_VERSION`].)
pub const SCHEMA_VERSION: u32 = 2;

/// Generated gRPC code for `storage_tracker.v1`.
pub mod v1 {
    #![allow(missing_debug_implementations, clippy::all)]
    tonic::include_proto!("storage_tracker.v1");
}

pub use chunk::{
    ChunkError, MANIFEST_FILE, ValidChunk, chunk_file_name, decode_chunk, encode_chunk,
    parse_chunk_file_name, read_chunk_file,
};
pub use entry::{EntryBatchBuilder, EntryKind, ErrorOp, entry_schema};
pub use rows::{EntryColumns, RowError};
pub use size::{AllocatedBytes, ApparentBytes};
pub use snapshot::SnapshotId;
