//! The service starts: every snapshot in the spool resumes where it stopped. What ClickHouse
//! already holds of it is counted per chunk (after the previous process's inserts settle): a
//! chunk stored whole leaves the spool, a part of one is deleted, the rest is queued again, and
//! a spooled finish is committed. A running snapshot that ClickHouse knows and the spool does
//! not is failed (when this aggregator is the one serving the database).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{Instrument, error, info, warn};

use super::{Inner, Job, Running, SETTLE_PATIENCE, snapshot_span};
use crate::snapshot::SnapshotState;
use crate::spool::SpooledSnapshot;
use crate::store::{ChunkCount, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("reading the spool at {path}: {source}")]
    Spool {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("resuming the spooled snapshots: {0}")]
    Store(#[from] StoreError),
}

impl Inner {
    /// Resumes what the spool holds; fails running snapshots it does not hold.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<(), StartError> {
        let spool = self.spool().clone();
        let spooled = Self::blocking(move || spool.load())
            .await
            .map_err(|source| StartError::Spool {
                path: self.spool().root().to_owned(),
                source,
            })?;
        let mut held = BTreeSet::new();
        for s in spooled {
            let snapshot_id = s.record.snapshot_id;
            held.insert(snapshot_id);
            self.resume(s)
                .instrument(snapshot_span(snapshot_id))
                .await?;
        }
        if self.options.fail_unspooled {
            for record in self.store.snapshots().await? {
                if record.state() == SnapshotState::Running && !held.contains(&record.snapshot_id) {
                    let snapshot_id = record.snapshot_id;
                    async {
                        error!(
                            snapshot_id = snapshot_id.get(),
                            "running in ClickHouse but not in this aggregator's spool"
                        );
                        self.fail_record(
                            record,
                            "the aggregator restarted without this snapshot in its spool".into(),
                        )
                        .await;
                    }
                    .instrument(snapshot_span(snapshot_id))
                    .await;
                }
            }
        }
        Ok(())
    }

    /// Resumes one spooled snapshot: runs it again with what is left to store, and commits it
    /// if its finish was spooled.
    async fn resume(self: &Arc<Self>, s: SpooledSnapshot) -> Result<(), StartError> {
        let snapshot_id = s.record.snapshot_id;
        match self.store.snapshot(snapshot_id).await? {
            Some(current) if current.state() != SnapshotState::Running => {
                // Committed or failed just before the stop: nothing left to do.
                self.spool()
                    .remove(snapshot_id)
                    .map_err(|source| StartError::Spool {
                        path: self.spool().root().to_owned(),
                        source,
                    })?;
                return Ok(());
            }
            Some(_) => {}
            None => self.store.record_snapshot(&s.record).await?,
        }
        // Inserts of the previous process may still be running: count after them.
        self.store
            .settle_inserts(snapshot_id, SETTLE_PATIENCE)
            .await?;
        let stored: HashMap<(u32, u64), u64> = self
            .store
            .chunk_counts(snapshot_id)
            .await?
            .into_iter()
            .map(|ChunkCount { rank, seq, rows }| ((rank, seq), rows))
            .collect();
        let mut running = Running::new(s.record);
        for (&(rank, seq), &rows) in &stored {
            let p = running.ranks.entry(rank).or_default();
            p.seqs.insert(seq);
            p.rows += rows;
        }
        let mut jobs = Vec::new();
        for c in s.chunks {
            match stored.get(&(c.rank, c.seq)) {
                Some(&rows) if rows == c.rows => {
                    let _ = self.spool().remove_chunk(&c.path);
                    continue;
                }
                Some(&rows) => {
                    warn!(
                        snapshot_id = snapshot_id.get(),
                        rank = c.rank,
                        seq = c.seq,
                        "{rows} of {} rows landed before the stop; deleting them",
                        c.rows
                    );
                    self.store
                        .delete_chunk_rows(snapshot_id, c.rank, c.seq)
                        .await?;
                    let p = running.ranks.entry(c.rank).or_default();
                    p.rows -= rows;
                    p.rows += c.rows;
                }
                None => {
                    let p = running.ranks.entry(c.rank).or_default();
                    p.seqs.insert(c.seq);
                    p.rows += c.rows;
                }
            }
            running.unstored += 1;
            jobs.push(Job {
                snapshot_id,
                rank: c.rank,
                seq: c.seq,
                rows: c.rows,
                path: c.path,
                batch: None,
            });
        }
        info!(
            snapshot_id = snapshot_id.get(),
            chunks_to_store = jobs.len(),
            finishing = s.finish.is_some(),
            "resuming a spooled snapshot"
        );
        let finish = s.finish;
        let commit = finish.as_ref().map(|_| watch::channel(None));
        running.commit = commit.as_ref().map(|(_, rx)| rx.clone());
        self.running().insert(snapshot_id, running);
        for job in jobs {
            let _ = self.jobs.send(job);
        }
        if let (Some(request), Some((tx, _))) = (finish, commit) {
            let inner = Arc::clone(self);
            tokio::spawn(
                async move {
                    let outcome = inner.commit_spooled(request).await;
                    let _ = tx.send(Some(outcome));
                }
                .instrument(snapshot_span(snapshot_id)),
            );
        }
        Ok(())
    }
}
