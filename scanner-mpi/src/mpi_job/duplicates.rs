//! One rank's run of `storage-scan --hash-duplicates`: the duplicate candidates of a committed
//! snapshot hashed by every rank, in two phases taken together on the world communicator:
//!
//! 1. every rank connects to the aggregator, or every rank stops;
//! 2. for each phase (sampled blocks of every candidate not hashed yet; then the whole content
//!    of those whose samples agree with another's), rank 0 asks the aggregator for the phase's
//!    candidates and holds them as its initial work; the ranks share them by work stealing
//!    ([`crate::steal::run_rank`]), each worker sending its hashes in batches; every rank's
//!    sending succeeded, or the job fails;
//! 3. the counts are gathered and rank 0 says what was read; everyone ends with its verdict.
//!
//! Hashes already stored are not asked for again, so a job that failed (or was killed) is
//! resumed by running it again.

use std::time::{Duration, Instant};

use mpi::collective::{CommunicatorCollectives, Root};
use mpi::topology::Communicator;
use tracing::{error, info};

use storage_tracker_proto::service::error_chain;
use storage_tracker_proto::v1::{CandidatesRequest, HashPhase};

use super::{MpiJob, Outcome};
use crate::hashing::{HashCounts, HashStatus, HashWork, HashWorker};
use crate::mpi_transport::MpiTransport;
use crate::pool::StealConfig;
use crate::steal::run_rank;
use crate::upload::Ingest;

/// What `--hash-duplicates` is asked to do; every rank runs the same.
#[derive(Debug, Clone)]
pub struct HashPlan {
    /// The aggregator's address (checked by [`crate::upload::parse_address`]).
    pub address: String,
    pub retry_for: Duration,
    pub snapshot_id: u64,
    /// Worker threads per rank.
    pub threads: usize,
    pub no_atime: bool,
    /// Only candidates of at least this size.
    pub min_size: u64,
    /// Only candidates whose name another candidate of the same size has too.
    pub same_name: bool,
    pub progress_interval: Duration,
}

/// The phases, in order: (name, whether whole contents are read).
const PHASES: [(&str, bool); 2] = [("sampled", false), ("whole", true)];

impl MpiJob {
    /// Runs this rank's part of hashing a snapshot's duplicate candidates.
    pub fn hash_duplicates(&self, plan: &HashPlan) -> Outcome {
        let _span = self.span.enter();
        self.span.record("snapshot", plan.snapshot_id);
        let started = Instant::now();
        let ingest = Ingest::connect(&plan.address, plan.retry_for)
            .map_err(|e| error!("{}", error_chain(&e)));
        if !self.all_agree(ingest.is_ok()) {
            error!("not every rank could reach the aggregator; nothing was hashed");
            return Outcome::Failed;
        }
        let ingest = ingest.expect("checked on every rank");
        let mut errors = 0;
        for (phase, full) in PHASES {
            match self.hash_phase(plan, &ingest, phase, full) {
                Some(phase_errors) => errors += phase_errors,
                None => {
                    self.verdict(true);
                    return Outcome::Failed;
                }
            }
        }
        if self.rank() == 0 {
            info!(
                seconds = started.elapsed().as_secs_f64(),
                unreadable = errors,
                "duplicate candidates hashed; the duplicates report has them"
            );
        }
        if self.verdict(false) {
            Outcome::Failed
        } else if errors > 0 {
            Outcome::CompleteWithErrors
        } else {
            Outcome::Complete
        }
    }

    /// One phase on this rank; the files that could not be read, on every rank, or None when
    /// the phase failed (on every rank).
    fn hash_phase(
        &self,
        plan: &HashPlan,
        ingest: &Ingest,
        phase: &'static str,
        full: bool,
    ) -> Option<u64> {
        let started = Instant::now();
        let mut candidates = Vec::new();
        let mut asked = true;
        if self.rank() == 0 {
            let request = CandidatesRequest {
                snapshot_id: plan.snapshot_id,
                phase: if full {
                    HashPhase::Full
                } else {
                    HashPhase::Sample
                } as i32,
                min_size: plan.min_size,
                same_name: plan.same_name,
            };
            match ingest.candidates(request) {
                Ok(found) => candidates = found,
                Err(e) => {
                    error!(
                        "asking for the {phase} phase's candidates: {}",
                        error_chain(&e)
                    );
                    asked = false;
                }
            }
        }
        if !self.all_agree(asked) {
            return None;
        }
        let mut total = candidates.len() as u64;
        self.arrive();
        self.world.process_at_rank(0).broadcast_into(&mut total);
        if self.rank() == 0 {
            info!(phase, candidates = total, "hashing");
        }
        let counts = HashCounts::default();
        let rank = self.rank() as u32;
        let workers = (0..plan.threads.max(1))
            .map(|_| HashWorker::new(ingest, plan.snapshot_id, rank, plan.no_atime, &counts))
            .collect();
        let initial = candidates
            .into_iter()
            .map(|c| HashWork {
                dev: c.dev,
                ino: c.ino,
                size: c.size,
                mtime_ns: c.mtime_ns,
                path: c.path,
                full,
            })
            .collect();
        let config = StealConfig {
            // A file is a long item: give few at a time.
            max_items_per_steal: 64,
            progress_interval: plan.progress_interval,
            ..StealConfig::default()
        };
        let status = HashStatus {
            counts: &counts,
            phase,
            started,
        };
        let (workers, _) = run_rank(
            &mut MpiTransport::new(&self.world),
            workers,
            initial,
            config,
            &status,
        );
        let mut sent = true;
        for worker in workers {
            if let Err(e) = worker.finish() {
                error!("sending hashes: {}", error_chain(&e));
                sent = false;
            }
        }
        if let Some(signal) = crate::signals::received() {
            error!(
                "stopped by {signal}: what was hashed is kept; run the job again to hash the rest"
            );
            sent = false;
        }
        let counts = [
            counts.files.into_inner(),
            counts.bytes_read.into_inner(),
            counts.errors.into_inner(),
        ];
        if !self.all_agree(sent) {
            return None;
        }
        self.arrive();
        let mut all = [0u64; 3];
        self.world.all_reduce_into(
            &counts[..],
            &mut all[..],
            mpi::collective::SystemOperation::sum(),
        );
        if self.rank() == 0 {
            let seconds = started.elapsed().as_secs_f64();
            info!(
                phase,
                files = all[0],
                bytes_read = all[1],
                unreadable = all[2],
                seconds,
                mib_per_second = all[1] as f64 / (1 << 20) as f64 / seconds.max(1e-9),
                "phase done"
            );
        }
        Some(all[2])
    }
}
