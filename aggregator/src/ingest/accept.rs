//! A chunk arrives: it is decoded and checked (schema, row count, enum codes), written to the
//! spool and fsynced, and only then acknowledged and queued for the insert workers. A chunk
//! acknowledged before is acknowledged again and not stored again; a malformed one is refused
//! with a message naming it, and nothing of it is kept. A chunk the spool has no room for is
//! refused unacknowledged (RESOURCE_EXHAUSTED, see `space`), and the scanner sends it again.

use std::time::Instant;

use tonic::Status;

use storage_tracker_proto::ValidChunk;
use storage_tracker_proto::v1::{Chunk, ChunkAck};

use super::{Inner, Job, unavailable};
use crate::metrics::{ChunkResult, SpoolWrite};

impl Inner {
    /// Spools one chunk and returns its acknowledgement: [`Self::accept_chunk`], counted in
    /// the metrics.
    pub(crate) async fn receive_chunk(&self, chunk: Chunk) -> Result<ChunkAck, Status> {
        let rows = chunk.rows;
        let outcome = self.accept_chunk(chunk).await;
        let result = match &outcome {
            Ok(ack) if ack.stored => ChunkResult::Accepted,
            Ok(_) => ChunkResult::Duplicate,
            Err(_) => ChunkResult::Refused,
        };
        self.options.metrics.chunk_received(result, rows);
        outcome
    }

    async fn accept_chunk(&self, chunk: Chunk) -> Result<ChunkAck, Status> {
        let snapshot_id = chunk.snapshot();
        let Chunk {
            rank,
            seq,
            rows,
            parquet,
            ..
        } = chunk;
        let what = format!("chunk (snapshot {snapshot_id}, rank {rank}, seq {seq})");
        let ack = |stored| ChunkAck {
            snapshot_id: snapshot_id.get(),
            rank,
            seq,
            stored,
        };
        let not_running = |snapshot_id| {
            Status::failed_precondition(format!(
                "{what}: snapshot {snapshot_id} is not running (never begun, committed or failed)"
            ))
        };
        {
            let mut running = self.running();
            let Some(snapshot) = running.get_mut(&snapshot_id) else {
                return Err(not_running(snapshot_id));
            };
            snapshot.last_heard = Instant::now();
            if rank >= snapshot.record.ranks {
                return Err(Status::invalid_argument(format!(
                    "{what}: the snapshot has {} ranks",
                    snapshot.record.ranks
                )));
            }
            if snapshot
                .ranks
                .get(&rank)
                .is_some_and(|r| r.seqs.contains(&seq))
            {
                return Ok(ack(false));
            }
            if snapshot.commit.is_some() {
                return Err(Status::failed_precondition(format!(
                    "{what}: the snapshot is being committed; no chunk can be added"
                )));
            }
        }
        let decoding = self.memory.decoding().await;
        let (batch, parquet) = tokio::task::spawn_blocking(move || {
            let batch = ValidChunk::decode(parquet.clone(), rows)?;
            Ok::<_, storage_tracker_proto::ChunkError>((batch, parquet))
        })
        .await
        .map_err(|e| Status::internal(format!("{what}: decoding task failed: {e}")))?
        .map_err(|e| Status::invalid_argument(format!("{what} rejected: {e}")))?;
        // Kept while the budget has room; else dropped now and read back for its insert.
        let batch = self
            .memory
            .keep(batch.batch().get_array_memory_size())
            .map(|kept| (batch, kept));
        drop(decoding);
        // A spool without room refuses the chunk, unacknowledged: the scanner sends it again.
        let path = self
            .spool_write(SpoolWrite::Chunk, move |spool| {
                spool.write_chunk(snapshot_id, rank, seq, rows, &parquet)
            })
            .await
            .map_err(|e| {
                e.status(&what, |e| {
                    unavailable(&format!("{what} could not be spooled, send it again"), e)
                })
            })?;

        let mut running = self.running();
        let Some(snapshot) = running.get_mut(&snapshot_id) else {
            // Failed while this chunk was being spooled: the snapshot's spool directory was
            // removed, or its removal found this file and stopped. The file goes, and the
            // directory with the last such file.
            if let Some(dir) = path.parent() {
                let (file, dir) = (path.clone(), dir.to_owned());
                tokio::task::spawn_blocking(move || {
                    let _ = std::fs::remove_file(&file);
                    let _ = std::fs::remove_dir(&dir);
                });
            }
            return Err(not_running(snapshot_id));
        };
        let progress = snapshot.ranks.entry(rank).or_default();
        if !progress.seqs.insert(seq) {
            // The same chunk arrived twice at once; the other copy is on its way.
            return Ok(ack(false));
        }
        progress.rows += rows;
        snapshot.unstored += 1;
        let job = Job {
            snapshot_id,
            rank,
            seq,
            rows,
            path,
            batch,
        };
        // Sent while the service stops: the chunk stays in the spool for the next start.
        let _ = self.jobs.send(job);
        Ok(ack(true))
    }
}
