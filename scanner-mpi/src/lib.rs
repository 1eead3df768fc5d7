//! storage-tracker's scanner: MPI ranks split a directory tree by work stealing, `statx` every
//! entry, and stream the rows as Parquet chunks to the aggregator (or write them to disk).
//!
//! The modules, in the order data flows through them:
//!
//! - [`plan`]: what a job is asked to do, checked before it starts (the root, the label,
//!   where the chunks go, the [`scan::ScanPlan`] of every rank); the binary `storage-scan`
//!   turns its arguments into one.
//! - [`mpi_job`]: one rank's run of the job and every step the ranks take together on the MPI
//!   world (agree on the plan, begin the snapshot and broadcast its id, gather the totals,
//!   commit or abort and broadcast the verdict), in one tracing span with the rank, host and
//!   snapshot.
//! - [`scan`]: one rank's scan: worker threads read directories into chunk writers.
//! - [`steal`]: [`steal::run_rank`], which runs a rank's worker threads beside its
//!   coordinator.
//! - [`pool`]: the rank's pool of work, shared by its worker threads and its coordinator, and
//!   the [`pool::Work`] and [`pool::Worker`] traits.
//! - [`coordinator`]: the work-sharing protocol's events on one rank: serving and sending
//!   steal requests, Safra's termination detection, a clean shutdown, progress to rank 0.
//! - [`protocol`]: the messages between ranks, their one codec, and the [`protocol::Transport`]
//!   trait that carries them as bytes.
//! - [`mpi_transport`]: that transport over MPI point-to-point messages.
//! - [`work`]: the unit of work, [`work::ScanWork`] (a directory or a piece of one), the open
//!   directory it shares within a rank, and its encoding in a work message.
//! - [`walk`]: reading one unit of work: `getdents64` and `statx` into rows, subdirectories and
//!   pieces of directories into new work; `--exclude` and the other walk options.
//! - [`pieces`]: how many names a piece holds, from what a stat costs as the scan measures it.
//! - [`filesystem`]: what kind of filesystem the root is on (from `statfs`), and so how many
//!   threads a rank runs by default.
//! - [`owners`]: the uids and gids the rows carry, and their names, looked up once per job.
//! - [`chunks`]: rows into Parquet chunks, and chunks into a sink (a directory for an offline
//!   scan).
//! - [`upload`]: the sink of a live scan: the gRPC stream to the aggregator, with retries, and
//!   the snapshot's begin, finish and abort calls.
//! - [`hashing`]: `--hash-duplicates`: a duplicate candidate as a unit of work, BLAKE3 of its
//!   sampled blocks or whole content, and the worker that sends the hashes to the aggregator
//!   (the job's steps are in [`mpi_job`]).
//! - [`progress`]: each rank's counts, and rank 0's progress display of everyone's.
//! - [`signals`]: SIGTERM and SIGINT, which stop a scan and abort its snapshot.
//!
//! Everything from [`scan`] down runs without MPI (one rank, or many in one process over
//! channels in the tests); only [`mpi_job`] and [`mpi_transport`] call MPI.

pub mod chunks;
pub mod coordinator;
pub mod filesystem;
pub mod hashing;
pub mod mpi_job;
pub mod mpi_transport;
pub mod owners;
pub mod pieces;
pub mod plan;
pub mod pool;
pub mod progress;
pub mod protocol;
pub mod scan;
pub mod signals;
pub mod steal;
pub mod upload;
pub mod walk;
pub mod work;
