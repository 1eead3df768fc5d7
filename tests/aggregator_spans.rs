//! The aggregator's log lines say which snapshot (and, for a chunk, which rank and seq) they
//! are about: the work on a snapshot runs in a `snapshot{id}` span, a chunk's in a
//! `chunk{rank, seq}` span within it. A test binary of its own, so that its subscriber is the
//! process's.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use tokio_stream::StreamExt;

use storage_tracker_proto::SCHEMA_VERSION;
use storage_tracker_proto::v1::ingest_client::IngestClient;
use storage_tracker_proto::v1::{AbortSnapshotRequest, BeginSnapshotRequest, Chunk};
use support::{Aggregator, TestDatabase};

/// Log output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn log_lines_carry_the_snapshot_and_the_chunks_rank() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(move || writer.clone())
        .init();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "spans");
    let agg = Aggregator::start(&rt, &db);
    let id = rt.block_on(async {
        let mut c = IngestClient::connect(agg.addr.clone()).await.unwrap();
        let id = c
            .begin_snapshot(BeginSnapshotRequest {
                filesystem_label: "test".into(),
                root_path: b"/r".to_vec(),
                ranks: 1,
                schema_version: SCHEMA_VERSION,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .snapshot_id;
        // A rank the snapshot does not have: refused, and said so in the log.
        let bad = Chunk {
            snapshot_id: id,
            rank: 5,
            seq: 3,
            rows: 0,
            parquet: Default::default(),
        };
        let mut acks = c
            .stream_chunks(tokio_stream::iter(vec![bad]))
            .await
            .unwrap()
            .into_inner();
        assert!(acks.next().await.unwrap().is_err());
        c.abort_snapshot(AbortSnapshotRequest {
            snapshot_id: id,
            reason: "the test is over".into(),
        })
        .await
        .unwrap();
        id
    });
    let text = captured.text();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?}:\n{text}"))
            .to_owned()
    };
    let snapshot = format!("snapshot{{id={id}}}");
    assert!(line("snapshot begun").contains(&snapshot), "{text}");
    assert!(
        line("the snapshot has 1 ranks").contains(&format!("{snapshot}:chunk{{rank=5 seq=3}}")),
        "{text}"
    );
    assert!(
        line("snapshot failed: aborted by the scanner: the test is over").contains(&snapshot),
        "{text}"
    );
}
