//! One rank's part of a scan: worker threads read directories into chunk writers while the
//! coordinator shares work with the other ranks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::chunks::{ChunkLimits, ChunkSink, ChunkWriter};
use crate::owners::{NotingIds, SeenIds};
use crate::steal::{
    Counters, Spawner, Status, StealConfig, StealStats, Transport, Worker, run_rank,
};
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

/// What rank 0 shows while a scan runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    pub entries: u64,
    pub apparent_bytes: u64,
    pub errors: u64,
    /// Ranks with work at the last report, and all ranks.
    pub busy_ranks: usize,
    pub ranks: usize,
    pub elapsed: Duration,
}

impl Progress {
    pub fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A rank's running totals, shared by its workers; rank 0 also reports everyone's.
pub struct ScanStatus<'a> {
    entries: AtomicU64,
    apparent_bytes: AtomicU64,
    errors: AtomicU64,
    started: Instant,
    show: &'a (dyn Fn(&Progress) + Sync),
}

impl<'a> ScanStatus<'a> {
    pub fn new(show: &'a (dyn Fn(&Progress) + Sync)) -> Self {
        Self {
            entries: AtomicU64::new(0),
            apparent_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            started: Instant::now(),
            show,
        }
    }

    fn add(&self, before: WalkCounts, after: WalkCounts) {
        self.entries
            .fetch_add(after.entries - before.entries, Ordering::Relaxed);
        self.apparent_bytes.fetch_add(
            after.apparent_bytes - before.apparent_bytes,
            Ordering::Relaxed,
        );
        self.errors
            .fetch_add(after.errors - before.errors, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ScanStatus<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanStatus")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl Status for ScanStatus<'_> {
    fn counters(&self) -> Counters {
        [
            self.entries.load(Ordering::Relaxed),
            self.apparent_bytes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            0,
        ]
    }

    fn report(&self, ranks: &[Counters], busy: &[bool]) {
        let sum = |i: usize| ranks.iter().map(|c| c[i]).sum();
        (self.show)(&Progress {
            entries: sum(0),
            apparent_bytes: sum(1),
            errors: sum(2),
            busy_ranks: busy.iter().filter(|&&b| b).count(),
            ranks: ranks.len(),
            elapsed: self.started.elapsed(),
        });
    }
}

struct ScanWorker<'a> {
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
        let before = self.counts;
        let mut sink = NotingIds {
            inner: &mut self.writer,
            ids: &mut self.ids,
        };
        self.reader.run(&item, &mut sink, &mut self.counts, spawn);
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
    pub root: Vec<u8>,
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
    let workers: Vec<_> = (0..plan.threads.max(1))
        .map(|_| ScanWorker {
            reader: DirReader::new(Arc::clone(&plan.options)),
            writer: ChunkWriter::new(sink, plan.limits),
            counts: WalkCounts::default(),
            ids: SeenIds::default(),
            failed: &failed,
            status,
        })
        .collect();
    let initial = if transport.rank() == 0 {
        vec![ScanWork::dir(plan.root.as_slice(), 0)]
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
        report.error = Some(format!(
            "stopped by {signal} (a Slurm time limit, scancel or Ctrl-C): the snapshot is aborted"
        ));
    }
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
