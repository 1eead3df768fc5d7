//! The ingest gRPC service: the tonic surface of the snapshot lifecycle, and the handle that
//! starts the service, stops it and calls it in process (as the import does). The stages
//! themselves, and the state they share, are the `ingest` module's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{Instrument, debug, warn};

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::v1::ingest_server::Ingest;
use storage_tracker_proto::v1::{
    AbortSnapshotRequest, AbortSnapshotResponse, BeginSnapshotRequest, BeginSnapshotResponse,
    CandidateBatch, CandidatesRequest, Chunk, ChunkAck, FinishSnapshotRequest,
    FinishSnapshotResponse, HashAck, HashBatch,
};

pub use crate::ingest::begin::BeginRefused;
pub use crate::ingest::recover::StartError;
pub use crate::ingest::{DEFAULT_MEMORY_MIB, ServiceOptions};
use crate::ingest::{Inner, chunk_span};
use crate::metrics::AggregatorMetrics;
use crate::store::Store;

/// The tonic service; cheap to clone.
#[derive(Debug, Clone)]
pub struct IngestService {
    inner: Arc<Inner>,
}

impl IngestService {
    /// Starts the service: resumes every snapshot in the spool, starts the insert workers and
    /// the watch for abandoned snapshots. Needs ClickHouse to answer.
    pub async fn start(store: Store, options: ServiceOptions) -> Result<Self, StartError> {
        let workers = options.insert_workers.max(1);
        let (inner, queue) = Inner::new(store, options);
        inner.recover().await?;
        for _ in 0..workers {
            tokio::spawn(Arc::clone(&inner).insert_worker(Arc::clone(&queue)));
        }
        tokio::spawn(Arc::clone(&inner).watch_abandoned());
        Ok(Self { inner })
    }

    /// The ids of the snapshots running now.
    pub fn running_snapshots(&self) -> Vec<SnapshotId> {
        self.inner.running_ids()
    }

    /// Begins a snapshot (as the BeginSnapshot call).
    pub async fn begin(&self, r: BeginSnapshotRequest) -> Result<SnapshotId, Status> {
        self.inner.begin(r).await
    }

    /// Stores one chunk (as one message of StreamChunks).
    pub async fn chunk(&self, chunk: Chunk) -> Result<ChunkAck, Status> {
        let span = chunk_span(chunk.snapshot(), chunk.rank, chunk.seq);
        self.inner.receive_chunk(chunk).instrument(span).await
    }

    /// The service's metrics, with the spool depth brought up to date.
    pub fn metrics(&self) -> &AggregatorMetrics {
        self.inner.metrics()
    }

    /// Stops taking work: inserts and commits under way may finish within `grace`; everything
    /// acknowledged and not yet stored stays in the spool for the next start. Whether all work
    /// under way finished.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.inner.stop();
        let deadline = Instant::now() + grace;
        while self.inner.is_busy() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Finishes a snapshot (as the FinishSnapshot call).
    pub async fn finish(
        &self,
        request: FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, Status> {
        Arc::clone(&self.inner).finish(request).await
    }

    /// Fails a running snapshot (as the AbortSnapshot call).
    pub async fn abort(&self, snapshot_id: SnapshotId, reason: String) -> Result<(), Status> {
        self.inner.abort(snapshot_id, reason).await
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn begin_snapshot(
        &self,
        request: Request<BeginSnapshotRequest>,
    ) -> Result<Response<BeginSnapshotResponse>, Status> {
        let snapshot_id = self.begin(request.into_inner()).await?;
        Ok(Response::new(BeginSnapshotResponse {
            snapshot_id: snapshot_id.get(),
        }))
    }

    type StreamChunksStream = ReceiverStream<Result<ChunkAck, Status>>;

    async fn stream_chunks(
        &self,
        request: Request<Streaming<Chunk>>,
    ) -> Result<Response<Self::StreamChunksStream>, Status> {
        let mut inbound = request.into_inner();
        let (acks, rx) = mpsc::channel(16);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            // Dropped when this task ends, which stops the watcher below.
            let (_reading, read_ended) = tokio::sync::oneshot::channel::<()>();
            let mut read_ended = Some(read_ended);
            loop {
                match inbound.message().await {
                    Ok(Some(chunk)) => {
                        if let Some(read_ended) = read_ended.take() {
                            tokio::spawn(end_when_failed(
                                Arc::clone(&inner),
                                chunk.snapshot(),
                                acks.clone(),
                                read_ended,
                            ));
                        }
                        let span = chunk_span(chunk.snapshot(), chunk.rank, chunk.seq);
                        let result = inner.receive_chunk(chunk).instrument(span.clone()).await;
                        let failed = result.is_err();
                        match &result {
                            // A full spool is said once by the spool, not per chunk refused.
                            Err(status) if status.code() == Code::ResourceExhausted => {
                                span.in_scope(|| debug!("{}", status.message()));
                            }
                            Err(status) => span.in_scope(|| warn!("{}", status.message())),
                            Ok(_) => {}
                        }
                        if acks.send(result).await.is_err() || failed {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        warn!(
                            "a scanner's chunk stream broke: {}",
                            storage_tracker_proto::service::status_text(&status)
                        );
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn finish_snapshot(
        &self,
        request: Request<FinishSnapshotRequest>,
    ) -> Result<Response<FinishSnapshotResponse>, Status> {
        Ok(Response::new(self.finish(request.into_inner()).await?))
    }

    async fn abort_snapshot(
        &self,
        request: Request<AbortSnapshotRequest>,
    ) -> Result<Response<AbortSnapshotResponse>, Status> {
        let request = request.into_inner();
        self.abort(request.snapshot(), request.reason).await?;
        Ok(Response::new(AbortSnapshotResponse {}))
    }

    type DuplicateCandidatesStream = ReceiverStream<Result<CandidateBatch, Status>>;

    async fn duplicate_candidates(
        &self,
        request: Request<CandidatesRequest>,
    ) -> Result<Response<Self::DuplicateCandidatesStream>, Status> {
        let stream = Arc::clone(&self.inner)
            .candidates(request.into_inner())
            .await?;
        Ok(Response::new(stream))
    }

    async fn put_hashes(&self, request: Request<HashBatch>) -> Result<Response<HashAck>, Status> {
        Ok(Response::new(
            self.inner.put_hashes(request.into_inner()).await?,
        ))
    }
}

/// Ends a chunk stream with an error as soon as its snapshot stops running while the stream is
/// open (an abort from another process, a failed insert, `--abandon-after`), so that the
/// scanner stops walking now instead of at its next chunk. A stream closes before its
/// snapshot is committed, so only a failure meets an open stream.
async fn end_when_failed(
    inner: Arc<Inner>,
    snapshot_id: SnapshotId,
    acks: mpsc::Sender<Result<ChunkAck, Status>>,
    read_ended: tokio::sync::oneshot::Receiver<()>,
) {
    tokio::select! {
        () = inner.left_running(snapshot_id) => {
            let _ = acks
                .send(Err(Status::aborted(format!(
                    "snapshot {snapshot_id} is no longer running: it was aborted or failed \
                     (storage-aggregator list shows why); the scan stops"
                ))))
                .await;
        }
        () = acks.closed() => {}
        _ = read_ended => {}
    }
}
