//! Duplicate files of a committed snapshot: the candidates `storage-scan --hash-duplicates`
//! asks for, phase by phase, and the hashes it sends back, each batch answered once it is in
//! ClickHouse. A batch sent again (its answer lost) is stored again and counts once: readers
//! group `file_hashes` by file.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tracing::{Instrument, info, warn};

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::v1::{
    CandidateBatch, CandidatesRequest, FileHash, HashAck, HashBatch, HashPhase,
};

use super::{Inner, snapshot_span, unavailable};
use crate::snapshot::SnapshotState;
use crate::store::CandidateQuery;

/// Candidates per message: a few hundred KiB.
const CANDIDATE_BATCH: usize = 2048;

/// Most hashes in one batch.
pub const MAX_HASH_BATCH: usize = 65_536;

/// The length of a BLAKE3 hash.
const HASH_BYTES: usize = 32;

impl Inner {
    /// Refuses anything but a committed snapshot: only those have candidates, and only their
    /// rows are read.
    async fn committed(&self, snapshot_id: SnapshotId) -> Result<(), Status> {
        match self.store.snapshot(snapshot_id).await {
            Ok(Some(r)) if r.state() == SnapshotState::Committed => Ok(()),
            Ok(Some(r)) => Err(Status::failed_precondition(format!(
                "snapshot {snapshot_id} is {}: only a committed snapshot's duplicates are hashed",
                r.state()
            ))),
            Ok(None) => Err(Status::not_found(format!(
                "there is no snapshot {snapshot_id} (storage-aggregator list shows them)"
            ))),
            Err(e) => Err(unavailable("reading the snapshot's state", e)),
        }
    }

    /// The candidates of a phase, streamed as ClickHouse answers them.
    pub(crate) async fn candidates(
        self: std::sync::Arc<Self>,
        request: CandidatesRequest,
    ) -> Result<ReceiverStream<Result<CandidateBatch, Status>>, Status> {
        let snapshot_id = request.snapshot();
        self.committed(snapshot_id).await?;
        let query = CandidateQuery {
            snapshot_id,
            full: request.phase() == HashPhase::Full,
            min_size: request.min_size,
            same_name: request.same_name,
        };
        let (tx, rx) = mpsc::channel(4);
        let inner = std::sync::Arc::clone(&self);
        tokio::spawn(
            async move {
                let sent = inner
                    .store
                    .candidates_to_hash(query, CANDIDATE_BATCH, &tx)
                    .await;
                match sent {
                    Ok(n) => info!(candidates = n, full = query.full, "candidates sent"),
                    Err(e) => {
                        warn!("reading the candidates: {e}");
                        let _ = tx.send(Err(unavailable("reading the candidates", e))).await;
                    }
                }
            }
            .instrument(snapshot_span(snapshot_id)),
        );
        Ok(ReceiverStream::new(rx))
    }

    /// Stores one batch of hashes, after checking each.
    pub(crate) async fn put_hashes(&self, batch: HashBatch) -> Result<HashAck, Status> {
        let snapshot_id = batch.snapshot();
        if batch.hashes.len() > MAX_HASH_BATCH {
            return Err(Status::invalid_argument(format!(
                "a batch holds {} hashes, more than {MAX_HASH_BATCH}: send smaller batches",
                batch.hashes.len()
            )));
        }
        if let Some((i, problem)) = batch
            .hashes
            .iter()
            .enumerate()
            .find_map(|(i, h)| malformed(h).map(|p| (i, p)))
        {
            return Err(Status::invalid_argument(format!(
                "hash {i} of the batch (device {}, inode {}): {problem}",
                batch.hashes[i].dev, batch.hashes[i].ino
            )));
        }
        self.committed(snapshot_id).await?;
        self.store
            .insert_hashes(snapshot_id, batch.rank, &batch.hashes)
            .instrument(snapshot_span(snapshot_id))
            .await
            .map_err(|e| unavailable("storing the hashes", e))?;
        Ok(HashAck {
            stored: batch.hashes.len() as u64,
        })
    }
}

/// What is wrong with a hash, if anything.
fn malformed(h: &FileHash) -> Option<String> {
    match (h.sample.len(), h.full.len(), h.error.is_empty()) {
        (HASH_BYTES, 0 | HASH_BYTES, true) => None,
        (0 | HASH_BYTES, 0, false) => None,
        (s, f, true) => Some(format!(
            "a sample of {s} bytes and a full hash of {f}: each is {HASH_BYTES} bytes (BLAKE3), \
             the full hash may be absent, the sample only with an error"
        )),
        (_, f, false) => Some(format!(
            "an error with a full hash of {f} bytes: a file that could not be read has none"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_checked() {
        let h = |sample: usize, full: usize, error: &str| FileHash {
            dev: 1,
            ino: 2,
            size: 3,
            sample: vec![0; sample],
            full: vec![0; full],
            error: error.into(),
            whole: false,
        };
        assert!(malformed(&h(32, 0, "")).is_none());
        assert!(malformed(&h(32, 32, "")).is_none());
        assert!(malformed(&h(0, 0, "changed since the scan")).is_none());
        assert!(malformed(&h(32, 0, "changed while read")).is_none());
        assert!(
            malformed(&h(16, 0, ""))
                .unwrap()
                .contains("a sample of 16 bytes")
        );
        assert!(malformed(&h(0, 0, "")).is_some());
        assert!(malformed(&h(32, 32, "oops")).unwrap().contains("has none"));
    }
}
