//! One rank's part of a scan: worker threads read directories into chunk writers while the
//! coordinator shares work with the other ranks.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::chunks::{ChunkLimits, ChunkSink, ChunkWriter};
use crate::owners::{NotingIds, SeenIds};
use crate::steal::{Spawner, StealConfig, StealStats, Transport, Worker, run_rank};
use std::sync::Arc;

use crate::walk::{DirReader, ScanWork, WalkCounts, WalkOptions, WorkQueue};

/// What one rank did.
#[derive(Debug, Default, Clone)]
pub struct RankReport {
    pub counts: WalkCounts,
    pub steal: StealStats,
    /// The first error that stopped this rank's output, if any.
    pub error: Option<String>,
    /// The uids and gids of this rank's rows.
    pub ids: SeenIds,
}

struct ScanWorker<'a> {
    reader: DirReader,
    writer: ChunkWriter<'a>,
    counts: WalkCounts,
    ids: SeenIds,
    /// Set when any worker of this rank can no longer deliver rows: the rest stop reading.
    failed: &'a AtomicBool,
}

impl WorkQueue for Spawner<'_, ScanWork> {
    fn push(&mut self, work: ScanWork) {
        Spawner::push(self, work);
    }

    fn publish(&mut self) {
        Spawner::publish(self);
    }
}

impl Worker<ScanWork> for ScanWorker<'_> {
    fn process(&mut self, item: ScanWork, spawn: &mut Spawner<'_, ScanWork>) {
        // After a failure the rank drains its work without reading, so that every rank still
        // reaches termination and the failure is reported instead of hanging the job.
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        let mut sink = NotingIds {
            inner: &mut self.writer,
            ids: &mut self.ids,
        };
        self.reader.run(&item, &mut sink, &mut self.counts, spawn);
        if self.writer.error().is_some() {
            self.failed.store(true, Ordering::Relaxed);
        }
    }
}

/// Scans this rank's share of the tree under `root` (which only rank 0 starts with).
pub fn scan_rank<T: Transport>(
    transport: &mut T,
    root: &[u8],
    options: Arc<WalkOptions>,
    threads: usize,
    limits: ChunkLimits,
    sink: &dyn ChunkSink,
) -> RankReport {
    let failed = AtomicBool::new(false);
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| ScanWorker {
            reader: DirReader::new(Arc::clone(&options)),
            writer: ChunkWriter::new(sink, limits),
            counts: WalkCounts::default(),
            ids: SeenIds::default(),
            failed: &failed,
        })
        .collect();
    let initial = if transport.rank() == 0 {
        vec![ScanWork::dir(root, 0)]
    } else {
        Vec::new()
    };
    let (workers, steal) = run_rank(transport, workers, initial, StealConfig::default());
    let mut report = RankReport {
        steal,
        ..Default::default()
    };
    for mut w in workers {
        w.writer.flush();
        if let Some(e) = w.writer.take_error() {
            report.error.get_or_insert_with(|| e.to_string());
        }
        report.counts.entries += w.counts.entries;
        report.counts.errors += w.counts.errors;
        report.counts.apparent_bytes += w.counts.apparent_bytes;
        report.ids.merge(&w.ids);
    }
    report
}
