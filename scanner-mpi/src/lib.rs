//! storage-tracker's scanner: MPI ranks split a directory tree by work stealing, `statx` every
//! entry, and stream the rows as Parquet chunks to the aggregator (or write them to disk).
//!
//! The walk ([`walk`]), the work stealing ([`steal`]) and the chunking ([`chunks`]) run without
//! MPI; [`mpi_transport`] plugs the real MPI in, and the binary `storage-scan` ties it together.

pub mod chunks;
pub mod mpi_transport;
pub mod owners;
pub mod scan;
pub mod signals;
pub mod steal;
pub mod upload;
pub mod walk;
