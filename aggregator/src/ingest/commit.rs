//! A scan finishes: the ranks' chunk counts are checked against what was acknowledged, the
//! finish request is spooled, and once every acknowledged chunk is stored each rank's totals
//! are verified against ClickHouse, the reports computed and the snapshot marked committed
//! (then retention runs). A finish sent again waits for, or gets, the same answer; a snapshot
//! whose totals do not match is failed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tonic::Status;
use tracing::{Instrument, Span, error, info, warn};

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::v1::{FinishSnapshotRequest, FinishSnapshotResponse, RankTotals};

use super::{Backoff, Busy, Inner, Outcome, RankProgress, snapshot_span, unavailable};
use crate::metrics::SpoolWrite;
use crate::snapshot::{
    CommitTotals, IllegalTransition, SnapshotRecord, SnapshotState, Transition, unix_now,
};
use crate::store::StoreError;

/// How the ranks' totals differ from what was acknowledged and stored: the first difference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum VerifyError {
    #[error("{reported} rank totals reported, the snapshot has {ranks} ranks")]
    RankCount { reported: usize, ranks: u32 },
    #[error("rank {rank} sent {sent} chunks, {stored} were stored (contiguous: {contiguous})")]
    Chunks {
        rank: u32,
        sent: u64,
        stored: u64,
        contiguous: bool,
    },
    #[error(
        "rank {rank} scanned {scanned} entries; {acknowledged} were acknowledged and {stored} are stored"
    )]
    Entries {
        rank: u32,
        scanned: u64,
        acknowledged: u64,
        stored: u64,
    },
}

/// Why a commit fails its snapshot: the message the failed record keeps.
#[derive(Debug, thiserror::Error)]
enum CommitFailure {
    #[error("verification failed: {0}")]
    Verification(VerifyError),
    #[error("ClickHouse refused the commit: {0}")]
    Refused(StoreError),
}

/// Why a commit attempt did not commit.
#[derive(Debug, thiserror::Error)]
enum CommitError {
    /// The snapshot is wrong: fail it.
    #[error(transparent)]
    Refused(VerifyError),
    /// ClickHouse did not answer, or refused: try again, or fail the snapshot.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The record was not running: a bug, nothing is stored.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
}

impl Inner {
    /// Finishes a snapshot: starts its commit, or waits for the one under way; the answer of
    /// a snapshot no longer running is its stored state.
    pub(crate) async fn finish(
        self: Arc<Self>,
        request: FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, Status> {
        let snapshot_id = request.snapshot();
        self.finish_running(request)
            .instrument(snapshot_span(snapshot_id))
            .await
    }

    async fn finish_running(
        self: Arc<Self>,
        request: FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, Status> {
        let snapshot_id = request.snapshot();
        enum Start {
            NotRunning,
            Mismatch(VerifyError),
            Wait(watch::Receiver<Outcome>),
        }
        let start = {
            let mut running = self.running();
            match running.get_mut(&snapshot_id) {
                None => Start::NotRunning,
                Some(s) => {
                    s.last_heard = Instant::now();
                    if let Some(outcome) = &s.commit {
                        Start::Wait(outcome.clone())
                    } else if let Err(mismatch) = verify_chunks(&s.record, &s.ranks, &request.ranks)
                    {
                        Start::Mismatch(mismatch)
                    } else {
                        let (tx, rx) = watch::channel(None);
                        s.commit = Some(rx.clone());
                        tokio::spawn(
                            Arc::clone(&self)
                                .commit(request, tx)
                                .instrument(Span::current()),
                        );
                        Start::Wait(rx)
                    }
                }
            }
        };
        let mut outcome = match start {
            Start::NotRunning => return self.answer_finished(snapshot_id).await,
            Start::Mismatch(mismatch) => {
                return Err(self
                    .fail_commit(snapshot_id, CommitFailure::Verification(mismatch))
                    .await);
            }
            Start::Wait(outcome) => outcome,
        };
        loop {
            if let Some(result) = outcome.borrow_and_update().clone() {
                return result;
            }
            if outcome.changed().await.is_err() {
                return Err(Status::unavailable(format!(
                    "snapshot {snapshot_id}: the commit stopped; ask again"
                )));
            }
        }
    }

    /// Fails the snapshot for `failure`; the answer to its finish.
    async fn fail_commit(&self, snapshot_id: SnapshotId, failure: CommitFailure) -> Status {
        let message = failure.to_string();
        self.fail_running(snapshot_id, message.clone()).await;
        let text = format!("snapshot {snapshot_id}: {message}; it is marked failed");
        match failure {
            CommitFailure::Verification(_) => Status::failed_precondition(text),
            CommitFailure::Refused(_) => Status::internal(text),
        }
    }

    /// The answer to FinishSnapshot for a snapshot that is no longer running.
    async fn answer_finished(
        &self,
        snapshot_id: SnapshotId,
    ) -> Result<FinishSnapshotResponse, Status> {
        let record = self
            .store
            .snapshot(snapshot_id)
            .await
            .map_err(|e| unavailable("reading the snapshot's state", e))?;
        match record {
            Some(r) if r.state() == SnapshotState::Committed => {
                let totals = r.totals();
                Ok(FinishSnapshotResponse {
                    snapshot_id: snapshot_id.get(),
                    entries: totals.entries,
                    directories: totals.directories,
                    rollup_seconds: totals.commit_seconds,
                })
            }
            Some(r) => Err(Status::failed_precondition(format!(
                "snapshot {snapshot_id} is {}: {}",
                r.state(),
                r.message()
            ))),
            None => Err(Status::not_found(format!(
                "snapshot {snapshot_id} was never begun"
            ))),
        }
    }

    /// Spools the finish request, waits for every chunk to be stored, then commits, retrying
    /// while ClickHouse fails. Publishes the outcome on `tx`.
    async fn commit(self: Arc<Self>, request: FinishSnapshotRequest, tx: watch::Sender<Outcome>) {
        let snapshot_id = request.snapshot();
        let spooled = request.clone();
        if let Err(e) = self
            .spool_write(SpoolWrite::Finish, move |spool| {
                spool.write_finish(&spooled)
            })
            .await
        {
            // Not finishing: the scanner sends the finish again (when the spool has room).
            if let Some(s) = self.running().get_mut(&snapshot_id) {
                s.commit = None;
            }
            let status = e.unavailable("FinishSnapshot", "spooling the finish request");
            let _ = tx.send(Some(Err(status)));
            return;
        }
        let _busy = Busy::new(&self.busy);
        let started = Instant::now();
        let outcome = self.commit_spooled(request).await;
        self.options
            .metrics
            .commit_finished(outcome.is_ok().then(|| started.elapsed().as_secs_f64()));
        let _ = tx.send(Some(outcome));
    }

    /// Commits a snapshot whose finish is spooled (also when resumed at start), once every
    /// acknowledged chunk is stored.
    pub(crate) async fn commit_spooled(
        &self,
        request: FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, Status> {
        let snapshot_id = request.snapshot();
        // Every acknowledged chunk stored.
        loop {
            let waiting = self.progressed.notified();
            let unstored = self.running().get(&snapshot_id).map(|s| s.unstored);
            match unstored {
                None => return self.answer_finished(snapshot_id).await,
                Some(0) => break,
                Some(_) => {}
            }
            waiting.await;
        }
        let mut backoff = Backoff::new();
        loop {
            let current = self
                .running()
                .get(&snapshot_id)
                .map(|s| (s.record.clone(), s.ranks.clone()));
            let Some((record, ranks)) = current else {
                return self.answer_finished(snapshot_id).await;
            };
            match self.try_commit(record, &ranks, &request).await {
                Ok(done) => return Ok(done),
                Err(CommitError::Refused(mismatch)) => {
                    return Err(self
                        .fail_commit(snapshot_id, CommitFailure::Verification(mismatch))
                        .await);
                }
                Err(CommitError::Store(e)) if e.is_transient() => {
                    warn!(
                        snapshot_id = snapshot_id.get(),
                        "committing failed, will retry: {e}"
                    );
                    backoff.wait().await;
                }
                Err(CommitError::Store(e)) => {
                    return Err(self
                        .fail_commit(snapshot_id, CommitFailure::Refused(e))
                        .await);
                }
                Err(CommitError::Illegal(e)) => {
                    error!("{e}");
                    return Err(Status::internal(e.to_string()));
                }
            }
        }
    }

    async fn try_commit(
        &self,
        mut record: SnapshotRecord,
        ranks: &BTreeMap<u32, RankProgress>,
        request: &FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, CommitError> {
        let snapshot_id = record.snapshot_id;
        let mut counted: HashMap<u32, u64> = HashMap::new();
        for c in self.store.chunk_counts(snapshot_id).await? {
            *counted.entry(c.rank).or_default() += c.rows;
        }
        verify_totals(&record, ranks, &request.ranks, &counted).map_err(CommitError::Refused)?;
        self.store
            .insert_principals(snapshot_id, &request.users, &request.groups)
            .await?;
        let start = Instant::now();
        let started_at_ns = record.start_ns();
        let directories = self
            .store
            .compute_reports(snapshot_id, &record.root_path, started_at_ns)
            .await?;
        let commit_seconds = start.elapsed().as_secs_f64();
        let totals = CommitTotals {
            entries: request.ranks.iter().map(|t| t.entries).sum(),
            errors: request.ranks.iter().map(|t| t.errors).sum(),
            apparent_bytes: request.ranks.iter().map(RankTotals::apparent).sum(),
            directories,
            commit_seconds,
        };
        record.transition(Transition::Commit(totals), unix_now())?;
        self.store.record_snapshot(&record).await?;
        self.forget(snapshot_id).await;
        info!(
            snapshot_id = snapshot_id.get(),
            entries = totals.entries,
            errors = totals.errors,
            directories,
            commit_seconds,
            "snapshot committed"
        );
        if let Some(policy) = &self.options.retention {
            match crate::retention::apply(&self.store, policy, &record.filesystem_label, false)
                .await
            {
                Ok(dropped) if !dropped.is_empty() => {
                    let dropped: Vec<u64> = dropped.into_iter().map(SnapshotId::get).collect();
                    info!(label = %record.filesystem_label, ?dropped, "retention dropped snapshots")
                }
                Ok(_) => {}
                Err(e) => warn!("applying the retention policy: {e}"),
            }
        }
        Ok(FinishSnapshotResponse {
            snapshot_id: snapshot_id.get(),
            entries: totals.entries,
            directories,
            rollup_seconds: commit_seconds,
        })
    }
}

/// Checks the chunk counts the ranks report against the chunks acknowledged, before waiting for
/// them to be stored: a scan that lost a chunk fails at once.
fn verify_chunks(
    record: &SnapshotRecord,
    stored: &BTreeMap<u32, RankProgress>,
    reported: &[RankTotals],
) -> Result<(), VerifyError> {
    if reported.len() != record.ranks as usize {
        return Err(VerifyError::RankCount {
            reported: reported.len(),
            ranks: record.ranks,
        });
    }
    for t in reported {
        let progress = stored.get(&t.rank);
        let chunks = progress.map_or(0, |p| p.seqs.len() as u64);
        let contiguous = progress.is_none_or(|p| {
            p.seqs
                .last()
                .is_none_or(|&last| last + 1 == p.seqs.len() as u64)
        });
        if chunks != t.chunks || !contiguous {
            return Err(VerifyError::Chunks {
                rank: t.rank,
                sent: t.chunks,
                stored: chunks,
                contiguous,
            });
        }
    }
    Ok(())
}

/// Compares what the ranks say they sent with what was acknowledged and what ClickHouse
/// holds; the first difference, if any.
fn verify_totals(
    record: &SnapshotRecord,
    stored: &BTreeMap<u32, RankProgress>,
    reported: &[RankTotals],
    counted: &HashMap<u32, u64>,
) -> Result<(), VerifyError> {
    verify_chunks(record, stored, reported)?;
    for t in reported {
        let rows = stored.get(&t.rank).map_or(0, |p| p.rows);
        let in_store = counted.get(&t.rank).copied().unwrap_or(0);
        if rows != t.entries || in_store != t.entries {
            return Err(VerifyError::Entries {
                rank: t.rank,
                scanned: t.entries,
                acknowledged: rows,
                stored: in_store,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use storage_tracker_proto::SCHEMA_VERSION;
    use storage_tracker_proto::v1::BeginSnapshotRequest;

    use super::*;

    fn record(ranks: u32) -> SnapshotRecord {
        SnapshotRecord::begun(
            SnapshotId::new(1),
            BeginSnapshotRequest {
                root_path: b"/".to_vec(),
                ranks,
                schema_version: SCHEMA_VERSION,
                ..Default::default()
            },
            0,
        )
    }

    fn totals(rank: u32, chunks: u64, entries: u64) -> RankTotals {
        RankTotals {
            rank,
            chunks,
            entries,
            ..Default::default()
        }
    }

    #[test]
    fn verification_accepts_matching_totals_and_names_the_first_difference() {
        let mut stored = BTreeMap::new();
        stored.insert(
            0,
            RankProgress {
                seqs: [0, 1].into(),
                rows: 10,
            },
        );
        let counted: HashMap<u32, u64> = [(0, 10)].into();
        let r = record(2);
        assert!(verify_totals(&r, &stored, &[totals(0, 2, 10), totals(1, 0, 0)], &counted).is_ok());
        let e = verify_totals(&r, &stored, &[totals(0, 3, 10), totals(1, 0, 0)], &counted)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 0 sent 3 chunks, 2 were stored"), "{e}");
        let e = verify_totals(&r, &stored, &[totals(0, 2, 10)], &counted)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 rank totals reported"), "{e}");
        let doubled: HashMap<u32, u64> = [(0, 20)].into();
        let e = verify_totals(&r, &stored, &[totals(0, 2, 10), totals(1, 0, 0)], &doubled)
            .unwrap_err()
            .to_string();
        assert!(e.contains("20 are stored"), "{e}");
    }

    #[test]
    fn verification_rejects_a_gap_in_sequence_numbers() {
        let mut stored = BTreeMap::new();
        stored.insert(
            0,
            RankProgress {
                seqs: [0, 2].into(),
                rows: 10,
            },
        );
        let counted: HashMap<u32, u64> = [(0, 10)].into();
        let e = verify_totals(&record(1), &stored, &[totals(0, 2, 10)], &counted)
            .unwrap_err()
            .to_string();
        assert!(e.contains("contiguous: false"), "{e}");
    }
}
