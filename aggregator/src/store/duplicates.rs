//! The duplicate files of a committed snapshot, on the store's side: the candidates a phase of
//! `storage-scan --hash-duplicates` still has to read, and the hashes it sends back.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::v1::{Candidate, CandidateBatch, FileHash};
use tokio::sync::mpsc::Sender;

use super::{Store, StoreError};
use crate::sql;

/// A candidate as ClickHouse answers it.
#[derive(Debug, Row, Deserialize)]
struct CandidateRow {
    dev: u64,
    ino: u64,
    size: u64,
    #[serde(with = "serde_bytes")]
    path: Vec<u8>,
    mtime_ns: i64,
}

#[derive(Debug, Row, Serialize)]
struct HashRecord<'a> {
    snapshot_id: SnapshotId,
    dev: u64,
    ino: u64,
    size: u64,
    #[serde(with = "serde_bytes")]
    sample: &'a [u8],
    #[serde(with = "serde_bytes")]
    full: &'a [u8],
    error: &'a str,
    rank: u32,
    /// Unix seconds.
    hashed_at: u32,
    /// Read in the whole-content phase.
    whole: u8,
}

/// Which candidates [`Store::candidates_to_hash`] gives.
#[derive(Debug, Clone, Copy)]
pub struct CandidateQuery {
    pub snapshot_id: SnapshotId,
    /// Those whose samples agree, to hash whole (else those not hashed at all).
    pub full: bool,
    pub min_size: u64,
    pub same_name: bool,
}

impl Store {
    /// Sends the candidates `query` asks for to `out`, in batches of `batch` as ClickHouse
    /// streams them (a snapshot's candidates are never all in memory); how many. Stops early
    /// when the receiver goes away.
    pub async fn candidates_to_hash(
        &self,
        query: CandidateQuery,
        batch: usize,
        out: &Sender<Result<CandidateBatch, tonic::Status>>,
    ) -> Result<u64, StoreError> {
        let each = async |candidates| out.send(Ok(CandidateBatch { candidates })).await.is_ok();
        let db = &self.config.database;
        let sql = sql::candidates_to_hash(
            db,
            query.snapshot_id,
            query.full,
            query.min_size,
            query.same_name,
        );
        let mut rows = self
            .client
            .query(&sql)
            .fetch::<CandidateRow>()
            .map_err(self.err())?;
        let (mut sent, mut pending) = (0u64, Vec::with_capacity(batch));
        while let Some(row) = rows.next().await.map_err(self.err())? {
            pending.push(Candidate {
                dev: row.dev,
                ino: row.ino,
                size: row.size,
                path: row.path,
                mtime_ns: row.mtime_ns,
            });
            if pending.len() == batch {
                sent += pending.len() as u64;
                if !each(std::mem::replace(&mut pending, Vec::with_capacity(batch))).await {
                    return Ok(sent);
                }
            }
        }
        if !pending.is_empty() {
            sent += pending.len() as u64;
            each(pending).await;
        }
        Ok(sent)
    }

    /// Stores the hashes of one batch. A file whose hash is stored again (a batch sent again)
    /// is one row once merged, and read grouped by file until then.
    pub async fn insert_hashes(
        &self,
        snapshot_id: SnapshotId,
        rank: u32,
        hashes: &[FileHash],
    ) -> Result<(), StoreError> {
        if hashes.is_empty() {
            return Ok(());
        }
        let hashed_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let client = self
            .client
            .clone()
            .with_database(self.config.database.as_str());
        let mut insert = client
            .insert::<HashRecord<'static>>("file_hashes")
            .await
            .map_err(self.err())?;
        for h in hashes {
            insert
                .write(&HashRecord {
                    snapshot_id,
                    dev: h.dev,
                    ino: h.ino,
                    size: h.size,
                    sample: &h.sample,
                    full: &h.full,
                    error: &h.error,
                    rank,
                    hashed_at,
                    whole: u8::from(h.whole),
                })
                .await
                .map_err(self.err())?;
        }
        insert.end().await.map_err(self.err())
    }
}
