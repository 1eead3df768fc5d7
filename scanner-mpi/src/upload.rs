//! The scanner's side of the ingest service: begin, stream chunks with per-chunk
//! acknowledgements, finish or abort.
//!
//! gRPC runs on a small tokio runtime of its own; the walk's threads hand chunks over through a
//! bounded channel, so a slow aggregator slows the walk instead of filling memory. Every call
//! retries with backoff while the aggregator is unreachable (restarting, say), for up to the
//! configured time: a broken chunk stream is opened again and the chunks not yet acknowledged
//! are sent again (the aggregator stores each chunk once). A rank holds at most `in_flight`
//! chunks waiting to be sent and `in_flight` sent and not yet acknowledged.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::{Instrument, warn};

use storage_tracker_proto::v1::ingest_client::IngestClient;
use storage_tracker_proto::v1::{
    AbortSnapshotRequest, BeginSnapshotRequest, Candidate, CandidatesRequest, Chunk,
    FinishSnapshotRequest, FinishSnapshotResponse, HashBatch,
};

use storage_tracker_proto::service::{error_chain, status_text};

use crate::chunks::{ChunkSink, SinkError};

pub use storage_tracker_proto::service::MAX_MESSAGE_BYTES;

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
        "cannot reach the aggregator at {addr}: {}; is storage-aggregator running there?",
        error_chain(source)
    )]
    Connect {
        addr: String,
        source: tonic::transport::Error,
    },
    #[error("the aggregator refused {call}: {}", status_text(status))]
    Rpc {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("chunk acknowledgements out of order: expected seq {expected}, got {got}")]
    AckOrder { expected: u64, got: u64 },
    #[error("the aggregator acknowledged {acked} of {sent} chunks")]
    Unacknowledged { acked: u64, sent: u64 },
    #[error("the upload task failed: {0}")]
    Runtime(std::io::Error),
    #[error("the upload task failed: {0}")]
    Task(tokio::task::JoinError),
}

/// Why an aggregator address given on the command line is refused.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("not a valid URL (expected e.g. http://host:50051): {0}")]
    Unparsable(tonic::codegen::http::uri::InvalidUri),
    #[error(
        "https is not supported: the scanner speaks gRPC without TLS (expected e.g. http://host:50051)"
    )]
    Https,
    #[error("not a valid URL: it needs http:// (expected e.g. http://host:50051)")]
    NotHttp,
    #[error("not a valid URL: it names no host (expected e.g. http://host:50051)")]
    NoHost,
    #[error(
        "not a valid URL: port {port:?} is not between 1 and 65535 (expected e.g. http://host:50051)"
    )]
    Port { port: String },
    #[error("not a valid URL (expected e.g. http://host:50051): {0}")]
    Endpoint(tonic::transport::Error),
}

fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> UploadError {
    move |status| UploadError::Rpc {
        call,
        status: Box::new(status),
    }
}

/// Whether a failed call may succeed when sent again: the aggregator or the network failed,
/// not the request.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::ResourceExhausted
            | Code::Internal
    )
}

/// Checks an aggregator address given on the command line: an `http://HOST:PORT` URL (the
/// scanner speaks gRPC without TLS). What clap calls, so that a bad address is a usage error.
pub fn parse_address(addr: &str) -> Result<String, AddressError> {
    let uri: tonic::transport::Uri = addr.parse().map_err(AddressError::Unparsable)?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(AddressError::Https),
        _ => return Err(AddressError::NotHttp),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(AddressError::NoHost);
    }
    // The port as written (the parsed URI drops one that is out of range).
    let port = uri
        .authority()
        .and_then(|a| a.as_str().rsplit_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.contains(']'));
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(n) if n > 0)
    {
        return Err(AddressError::Port {
            port: port.to_owned(),
        });
    }
    Endpoint::from_shared(addr.to_owned()).map_err(AddressError::Endpoint)?;
    Ok(addr.to_owned())
}

/// Exponential backoff from 200 ms to 10 s, within a time budget that starts at the first
/// failure and restarts after a success. The last wait is cut short to end at the budget's
/// end, so the last attempt is made then: retrying lasts the whole budget, not the sum of the
/// doubled waits that fit in it.
#[derive(Debug)]
struct Backoff {
    budget: Duration,
    since: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    fn new(budget: Duration) -> Self {
        Self {
            budget,
            since: None,
            delay: Duration::from_millis(200),
        }
    }

    fn succeeded(&mut self) {
        self.since = None;
        self.delay = Duration::from_millis(200);
    }

    /// The next wait, `elapsed` into the budget: the doubled delay, cut to what is left of the
    /// budget; None once the budget is spent.
    fn next_delay(&mut self, elapsed: Duration) -> Option<Duration> {
        let left = self
            .budget
            .checked_sub(elapsed)
            .filter(|left| !left.is_zero())?;
        let delay = self.delay.min(left);
        self.delay = (self.delay * 2).min(Duration::from_secs(10));
        Some(delay)
    }

    /// Waits before the next attempt; false once the budget is spent.
    async fn wait(&mut self, call: &str, status: &Status) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        let Some(delay) = self.next_delay(since.elapsed()) else {
            return false;
        };
        warn!(
            "{call}: {}; retrying in {:.1} s (for up to {} s in all)",
            status_text(status),
            delay.as_secs_f64(),
            self.budget.as_secs()
        );
        tokio::time::sleep(delay).await;
        true
    }
}

/// A connection to the aggregator, usable from plain (non-async) threads.
#[derive(Debug)]
pub struct Ingest {
    runtime: tokio::runtime::Runtime,
    client: IngestClient<Channel>,
    retry_for: Duration,
}

impl Ingest {
    /// Connects, retrying for up to `retry_for` (which every later call also gets).
    pub fn connect(addr: &str, retry_for: Duration) -> Result<Self, UploadError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("grpc")
            .enable_all()
            .build()
            .map_err(UploadError::Runtime)?;
        let endpoint = Endpoint::from_shared(addr.to_owned())
            .map_err(|source| UploadError::BadAddress {
                addr: addr.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        let channel = runtime.block_on(async {
            let mut backoff = Backoff::new(retry_for);
            loop {
                match endpoint.connect().await {
                    Ok(channel) => return Ok(channel),
                    Err(source) => {
                        let status = Status::unavailable(error_chain(&source));
                        if !backoff
                            .wait(&format!("connecting to {addr}"), &status)
                            .await
                        {
                            return Err(UploadError::Connect {
                                addr: addr.to_owned(),
                                source,
                            });
                        }
                    }
                }
            }
        })?;
        let client = IngestClient::new(channel)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            runtime,
            client,
            retry_for,
        })
    }

    /// Runs a unary call, sending it again while it fails transiently.
    fn call<Req: Clone, Resp, F, Fut>(
        &self,
        call: &'static str,
        request: Req,
        mut send: F,
    ) -> Result<Resp, UploadError>
    where
        F: FnMut(IngestClient<Channel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.runtime.block_on(async {
            let mut backoff = Backoff::new(self.retry_for);
            loop {
                match send(self.client.clone(), request.clone()).await {
                    Ok(response) => return Ok(response.into_inner()),
                    Err(status) if transient(&status) && backoff.wait(call, &status).await => {}
                    Err(status) => return Err(rpc(call)(status)),
                }
            }
        })
    }

    pub fn begin(&self, request: BeginSnapshotRequest) -> Result<u64, UploadError> {
        self.call("BeginSnapshot", request, |mut c, r| async move {
            c.begin_snapshot(r).await
        })
        .map(|r| r.snapshot_id)
    }

    /// Finishes the snapshot. Sent again after a lost answer, it gets the same answer.
    pub fn finish(
        &self,
        request: FinishSnapshotRequest,
    ) -> Result<FinishSnapshotResponse, UploadError> {
        self.call("FinishSnapshot", request, |mut c, r| async move {
            c.finish_snapshot(r).await
        })
    }

    pub fn abort(&self, snapshot_id: u64, reason: String) -> Result<(), UploadError> {
        let request = AbortSnapshotRequest {
            snapshot_id,
            reason,
        };
        self.call("AbortSnapshot", request, |mut c, r| async move {
            c.abort_snapshot(r).await
        })
        .map(|_| ())
    }

    /// The duplicate candidates a phase of the hashing has to read, all of them. A stream
    /// that breaks is asked again from the start.
    pub fn candidates(&self, request: CandidatesRequest) -> Result<Vec<Candidate>, UploadError> {
        const CALL: &str = "DuplicateCandidates";
        self.runtime.block_on(async {
            let mut backoff = Backoff::new(self.retry_for);
            'again: loop {
                let mut stream = match self.client.clone().duplicate_candidates(request).await {
                    Ok(answer) => answer.into_inner(),
                    Err(status) if transient(&status) && backoff.wait(CALL, &status).await => {
                        continue;
                    }
                    Err(status) => return Err(rpc(CALL)(status)),
                };
                let mut all = Vec::new();
                loop {
                    match stream.message().await {
                        Ok(Some(batch)) => all.extend(batch.candidates),
                        Ok(None) => return Ok(all),
                        Err(status) if transient(&status) && backoff.wait(CALL, &status).await => {
                            continue 'again;
                        }
                        Err(status) => return Err(rpc(CALL)(status)),
                    }
                }
            }
        })
    }

    /// Stores a batch of hashes; sent again while it fails transiently (a batch stored twice
    /// counts once).
    pub fn put_hashes(&self, batch: HashBatch) -> Result<u64, UploadError> {
        self.call("PutHashes", batch, |mut c, b| async move {
            c.put_hashes(b).await
        })
        .map(|ack| ack.stored)
    }

    /// Opens this rank's chunk stream. At most `in_flight` chunks wait to be sent, and at most
    /// `in_flight` wait for their acknowledgement.
    pub fn upload(&self, snapshot_id: u64, rank: u32, in_flight: usize) -> Upload {
        let in_flight = in_flight.max(1);
        let (tx, rx) = mpsc::channel::<Chunk>(in_flight);
        // The stream's log lines carry the rank's span, like those of the calls made on the
        // rank's own thread.
        let task = self.runtime.spawn(
            stream_chunks(self.client.clone(), rx, in_flight, self.retry_for)
                .instrument(tracing::Span::current()),
        );
        Upload {
            snapshot_id,
            rank,
            sender: Mutex::new(Some((tx, 0))),
            task,
            handle: self.runtime.handle().clone(),
        }
    }
}

/// Sends the chunks from `rx` and collects their acknowledgements; opens the stream again
/// and resends what was not acknowledged when it breaks. Returns the number acknowledged.
async fn stream_chunks(
    client: IngestClient<Channel>,
    mut rx: mpsc::Receiver<Chunk>,
    in_flight: usize,
    retry_for: Duration,
) -> Result<u64, UploadError> {
    let mut unacked: VecDeque<Chunk> = VecDeque::new();
    let mut more = true;
    let mut acked = 0u64;
    let mut backoff = Backoff::new(retry_for);
    loop {
        let (out, outbound) = mpsc::unbounded_channel::<Chunk>();
        for chunk in &unacked {
            let _ = out.send(chunk.clone());
        }
        let broke = match client
            .clone()
            .stream_chunks(UnboundedReceiverStream::new(outbound))
            .await
        {
            Err(status) => status,
            Ok(response) => {
                let mut acks = response.into_inner();
                loop {
                    if !more && unacked.is_empty() {
                        return Ok(acked);
                    }
                    tokio::select! {
                        chunk = rx.recv(), if more && unacked.len() < in_flight => match chunk {
                            Some(chunk) => {
                                unacked.push_back(chunk.clone());
                                let _ = out.send(chunk);
                            }
                            None => more = false,
                        },
                        ack = acks.message() => match ack {
                            Ok(Some(ack)) => {
                                let expected = unacked.front().map(|c| c.seq);
                                if expected != Some(ack.seq) {
                                    return Err(UploadError::AckOrder {
                                        expected: expected.unwrap_or(u64::MAX),
                                        got: ack.seq,
                                    });
                                }
                                unacked.pop_front();
                                acked += 1;
                                backoff.succeeded();
                            }
                            Ok(None) => break Status::unavailable("the aggregator ended the chunk stream"),
                            Err(status) => break status,
                        },
                    }
                }
            }
        };
        if !(transient(&broke) && backoff.wait("StreamChunks", &broke).await) {
            return Err(rpc("StreamChunks")(broke));
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
            return Err(SinkError::UploadClosed);
        };
        let chunk = Chunk {
            snapshot_id: self.snapshot_id,
            rank: self.rank,
            seq: *seq,
            rows,
            parquet: parquet.into(),
        };
        tx.blocking_send(chunk)
            .map_err(|_| SinkError::StreamEnded)?;
        *seq += 1;
        Ok(())
    }

    fn ended(&self) -> bool {
        self.task.is_finished()
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
            .map_err(UploadError::Task)??;
        if acked != sent {
            return Err(UploadError::Unacknowledged { acked, sent });
        }
        Ok(acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_for_12_s_retries_for_12_s_not_6_2() {
        // The waits double from 200 ms, and the last is cut to end at the budget's end: they
        // add up to the budget (they stopped at 6.2 s of a 12 s budget, where the next doubled
        // wait, 6.4 s, no longer fitted).
        let mut backoff = Backoff::new(Duration::from_secs(12));
        let mut waited = Duration::ZERO;
        let mut waits = Vec::new();
        // As if each attempt failed at once.
        while let Some(delay) = backoff.next_delay(waited) {
            waits.push(delay);
            waited += delay;
        }
        assert_eq!(
            &waits[..5],
            [200, 400, 800, 1600, 3200].map(Duration::from_millis)
        );
        assert_eq!(waits.len(), 6, "{waits:?}");
        assert_eq!(waits[5], Duration::from_millis(5800));
        assert_eq!(waited, Duration::from_secs(12));
    }

    #[test]
    fn aggregator_addresses_are_checked_as_urls() {
        assert_eq!(
            parse_address("http://node1:50051").ok().as_deref(),
            Some("http://node1:50051")
        );
        for bad in [
            "not a url",
            "node1:50051",
            "https://node1:50051",
            "http://",
            "",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:0",
        ] {
            let e = parse_address(bad).unwrap_err().to_string();
            assert!(e.contains("http://host:50051"), "{bad}: {e}");
        }
    }
}
