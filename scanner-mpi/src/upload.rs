//! The scanner's side of the ingest service: begin, stream chunks with per-chunk
//! acknowledgements, finish or abort.
//!
//! gRPC runs on a small tokio runtime of its own; the walk's threads hand chunks over through a
//! bounded channel, so a slow aggregator slows the walk instead of filling memory.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use storage_tracker_proto::v1::ingest_client::IngestClient;
use storage_tracker_proto::v1::{
    AbortSnapshotRequest, BeginSnapshotRequest, Chunk, FinishSnapshotRequest,
    FinishSnapshotResponse,
};

use crate::chunks::{ChunkSink, SinkError};

/// Largest gRPC message either side accepts; a chunk is far smaller.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "the aggregator address {addr:?} is not a valid URL (expected e.g. http://host:50051): {source}"
    )]
    BadAddress {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error(
        "cannot reach the aggregator at {addr}: {source}; is storage-aggregator running there?"
    )]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("the aggregator refused {call}: {status}")]
    Rpc {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("chunk acknowledgements out of order: expected seq {expected}, got {got}")]
    AckOrder { expected: u64, got: u64 },
    #[error("the aggregator acknowledged {acked} of {sent} chunks")]
    Unacknowledged { acked: u64, sent: u64 },
    #[error("the upload task failed: {0}")]
    Task(String),
}

fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> UploadError {
    move |status| UploadError::Rpc {
        call,
        status: Box::new(status),
    }
}

/// A connection to the aggregator, usable from plain (non-async) threads.
#[derive(Debug)]
pub struct Ingest {
    runtime: tokio::runtime::Runtime,
    client: IngestClient<Channel>,
}

impl Ingest {
    pub fn connect(addr: &str) -> Result<Self, UploadError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("grpc")
            .enable_all()
            .build()
            .map_err(|e| UploadError::Task(e.to_string()))?;
        let endpoint = Endpoint::from_shared(addr.to_owned())
            .map_err(|source| UploadError::BadAddress {
                addr: addr.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        let channel =
            runtime
                .block_on(endpoint.connect())
                .map_err(|source| UploadError::Connect {
                    addr: addr.to_owned(),
                    source,
                })?;
        let client = IngestClient::new(channel)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { runtime, client })
    }

    pub fn begin(&self, request: BeginSnapshotRequest) -> Result<u64, UploadError> {
        let mut client = self.client.clone();
        let response = self
            .runtime
            .block_on(client.begin_snapshot(request))
            .map_err(rpc("BeginSnapshot"))?;
        Ok(response.into_inner().snapshot_id)
    }

    pub fn finish(
        &self,
        request: FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, UploadError> {
        let mut client = self.client.clone();
        let response = self
            .runtime
            .block_on(client.finish_snapshot(request))
            .map_err(rpc("FinishSnapshot"))?;
        Ok(response.into_inner())
    }

    pub fn abort(&self, snapshot_id: u64, reason: String) -> Result<(), UploadError> {
        let mut client = self.client.clone();
        self.runtime
            .block_on(client.abort_snapshot(AbortSnapshotRequest {
                snapshot_id,
                reason,
            }))
            .map_err(rpc("AbortSnapshot"))?;
        Ok(())
    }

    /// Opens this rank's chunk stream. At most `in_flight` chunks wait to be sent.
    pub fn upload(&self, snapshot_id: u64, rank: u32, in_flight: usize) -> Upload {
        let (tx, rx) = mpsc::channel::<Chunk>(in_flight.max(1));
        let mut client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let mut acks = client
                .stream_chunks(ReceiverStream::new(rx))
                .await
                .map_err(rpc("StreamChunks"))?
                .into_inner();
            let mut expected = 0u64;
            while let Some(ack) = acks.message().await.map_err(rpc("StreamChunks"))? {
                if ack.seq != expected {
                    return Err(UploadError::AckOrder {
                        expected,
                        got: ack.seq,
                    });
                }
                expected += 1;
            }
            Ok(expected)
        });
        Upload {
            snapshot_id,
            rank,
            sender: Mutex::new(Some((tx, 0))),
            task,
            handle: self.runtime.handle().clone(),
        }
    }
}

/// One rank's stream of chunks to the aggregator.
#[derive(Debug)]
pub struct Upload {
    snapshot_id: u64,
    rank: u32,
    /// The sender and the next sequence number, under one lock so numbers go out in order.
    sender: Mutex<Option<(mpsc::Sender<Chunk>, u64)>>,
    task: tokio::task::JoinHandle<Result<u64, UploadError>>,
    handle: tokio::runtime::Handle,
}

impl ChunkSink for Upload {
    fn submit(&self, rows: u64, parquet: Vec<u8>) -> Result<(), SinkError> {
        let mut guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        let Some((tx, seq)) = guard.as_mut() else {
            return Err(SinkError::UploadClosed("the stream was closed".into()));
        };
        let chunk = Chunk {
            snapshot_id: self.snapshot_id,
            rank: self.rank,
            seq: *seq,
            rows,
            parquet: parquet.into(),
        };
        tx.blocking_send(chunk).map_err(|_| {
            SinkError::UploadClosed(
                "the aggregator ended the stream; see the error at the end of the scan".into(),
            )
        })?;
        *seq += 1;
        Ok(())
    }
}

impl Upload {
    /// Closes the stream and waits until every chunk sent is acknowledged. Returns the count.
    pub fn close(self) -> Result<u64, UploadError> {
        let sent = self
            .sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map_or(0, |(_, seq)| seq);
        let acked = self
            .handle
            .block_on(self.task)
            .map_err(|e| UploadError::Task(e.to_string()))??;
        if acked != sent {
            return Err(UploadError::Unacknowledged { acked, sent });
        }
        Ok(acked)
    }
}
