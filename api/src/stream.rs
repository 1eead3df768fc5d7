//! Response bodies streamed from a task of their own, for downloads larger than one answer.

use std::future::Future;

use axum::body::Body;
use axum::body::Bytes;
use tokio::sync::mpsc::Sender;

/// What a producer sends: a piece of the body, or the error that cuts it short.
pub type Piece = Result<Bytes, CutShort>;

/// Why a streamed body stopped short (the client sees a cut transfer; the reason is for logs).
#[derive(Debug, thiserror::Error)]
pub enum CutShort {
    #[error("reading the rows from ClickHouse: {0}")]
    Database(#[from] clickhouse::error::Error),
    #[error("looking up what the rows need: {0}")]
    Lookup(#[from] crate::ApiError),
    #[error("writing the ncdu export: {0}")]
    Export(#[from] storage_tracker_proto::ncdu::NcduError),
}

/// A body fed by `produce`, run on a task of its own with a few pieces of buffer. An `Err`
/// aborts the body: the client sees a broken transfer (curl: exit 18, a browser: a failed
/// download), never a short file that looks whole.
pub fn spawned_body<F, Fut>(produce: F) -> Body
where
    F: FnOnce(Sender<Piece>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(4);
    tokio::spawn(produce(tx));
    Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}
