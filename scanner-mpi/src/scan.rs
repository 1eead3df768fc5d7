//! One rank's part of a scan: worker threads read directories into chunk writers while the
//! coordinator shares work with the other ranks.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::chunks::{ChunkLimits, ChunkSink, ChunkWriter, SinkError};
use crate::filesystem::Filesystem;
use crate::owners::{NotingIds, SeenIds};
use crate::pieces::StatCost;
use crate::pool::{Spawner, StealConfig, StealStats, Worker};
use crate::progress::ScanStatus;
use crate::protocol::Transport;
use crate::steal::run_rank;
use crate::walk::{DirReader, WalkCounts, WalkOptions, WorkQueue};
use crate::work::ScanWork;

/// What one rank did.
#[derive(Debug, Default)]
pub struct RankReport {
    pub counts: WalkCounts,
    pub steal: StealStats,
    /// The first error that stopped this rank's output, if any.
    pub error: Option<ScanError>,
    /// The uids and gids of this rank's rows.
    pub ids: SeenIds,
}

/// Why a rank stopped before reading its share of the tree.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("stopped by {signal} (a Slurm time limit, scancel or Ctrl-C): the snapshot is aborted")]
    Stopped { signal: &'static str },
    /// Its rows could no longer be delivered.
    #[error(transparent)]
    Output(#[from] SinkError),
}

struct ScanWorker<'a> {
    /// This worker's number in the rank, for its slot in `status`.
    index: usize,
    reader: DirReader,
    writer: ChunkWriter<'a>,
    counts: WalkCounts,
    ids: SeenIds,
    /// Set when any worker of this rank can no longer deliver rows: the rest stop reading.
    failed: &'a AtomicBool,
    status: &'a ScanStatus<'a>,
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
        if crate::signals::received().is_some() {
            self.failed.store(true, Ordering::Relaxed);
            return;
        }
        if self.writer.check_sink() {
            self.failed.store(true, Ordering::Relaxed);
            return;
        }
        let before = self.counts;
        let mut sink = NotingIds {
            inner: &mut self.writer,
            ids: &mut self.ids,
        };
        self.status.started(self.index, &item);
        self.reader.run(&item, &mut sink, &mut self.counts, spawn);
        self.status.finished(self.index);
        self.status.add(before, self.counts);
        if self.writer.error().is_some() {
            self.failed.store(true, Ordering::Relaxed);
        }
    }
}

/// What every rank of a scan does.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    /// The root; only rank 0 starts with it, the others steal.
    pub root: PathBuf,
    /// The root's filesystem, as `statfs` names it (it chose the default threads).
    pub filesystem: Option<Filesystem>,
    pub options: Arc<WalkOptions>,
    pub threads: usize,
    pub limits: ChunkLimits,
    pub progress_interval: Duration,
}

/// Scans this rank's share of the tree.
pub fn scan_rank<T: Transport>(
    transport: &mut T,
    plan: &ScanPlan,
    sink: &dyn ChunkSink,
    status: &ScanStatus<'_>,
) -> RankReport {
    let failed = AtomicBool::new(false);
    crate::work::raise_descriptor_limit();
    let cost = Arc::new(StatCost::default());
    let threads = plan.threads.max(1);
    status.follow_workers(threads);
    let workers: Vec<_> = (0..threads)
        .map(|index| ScanWorker {
            index,
            reader: DirReader::new(Arc::clone(&plan.options), Arc::clone(&cost)),
            writer: ChunkWriter::new(sink, plan.limits),
            counts: WalkCounts::default(),
            ids: SeenIds::default(),
            failed: &failed,
            status,
        })
        .collect();
    let initial = if transport.rank() == 0 {
        vec![ScanWork::dir(plan.root.as_os_str().as_bytes(), 0)]
    } else {
        Vec::new()
    };
    let config = StealConfig {
        progress_interval: plan.progress_interval,
        ..StealConfig::default()
    };
    let (workers, steal) = run_rank(transport, workers, initial, config, status);
    let mut report = RankReport {
        steal,
        ..Default::default()
    };
    if let Some(signal) = crate::signals::received() {
        report.error = Some(ScanError::Stopped { signal });
    }
    for mut w in workers {
        w.writer.flush();
        if let Some(e) = w.writer.take_error() {
            report.error.get_or_insert(e.into());
        }
        report.counts.entries += w.counts.entries;
        report.counts.errors += w.counts.errors;
        report.counts.apparent_bytes += w.counts.apparent_bytes;
        report.ids.merge(&w.ids);
    }
    report
}
