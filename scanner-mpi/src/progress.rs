//! A scan's progress while it runs: what each rank counts ([`RankProgress`], kept by
//! [`ScanStatus`] as the workers go), what rank 0 makes of every rank's counts
//! ([`JobProgress`]), and how it shows them ([`ProgressDisplay`]: a status line on a terminal,
//! log lines otherwise). The counts reach rank 0 through the coordinator's progress messages.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::walk::WalkCounts;
use crate::work::{ScanWork, names_of};

/// One rank's counts so far, sent to rank 0 every progress interval.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RankProgress {
    pub entries: u64,
    pub apparent_bytes: u64,
    pub errors: u64,
}

/// Progress of a run: what each rank counts, and what rank 0 does with everyone's counts.
pub trait Status: Sync {
    /// This rank's counts now.
    fn progress(&self) -> RankProgress;
    /// Rank 0 only, every progress interval: the latest counts of every rank and whether it
    /// has work.
    fn report(&self, ranks: &[RankProgress], busy: &[bool]);
    /// Every rank, every progress interval: says what of its work has been running for longer
    /// than `interval` (a stalled server, a huge directory), if anything.
    fn report_slow(&self, _interval: Duration) {}
}

/// A run that reports nothing.
#[derive(Debug)]
pub struct Silent;

impl Status for Silent {
    fn progress(&self) -> RankProgress {
        RankProgress::default()
    }
    fn report(&self, _: &[RankProgress], _: &[bool]) {}
}

/// What rank 0 shows while a scan runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    pub entries: u64,
    pub apparent_bytes: u64,
    pub errors: u64,
    /// Ranks with work at the last report, and all ranks.
    pub busy_ranks: usize,
    pub ranks: usize,
    pub elapsed: Duration,
}

impl JobProgress {
    pub fn entries_per_second(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The item a worker thread is on, since when.
#[derive(Debug)]
struct Running {
    since: Instant,
    /// What it does, for people: "listing /a/b", "stat of 5 names in /a/b".
    what: String,
}

/// A rank's running totals, shared by its workers, and what each worker is on; rank 0 also
/// reports everyone's totals.
pub struct ScanStatus<'a> {
    entries: AtomicU64,
    apparent_bytes: AtomicU64,
    errors: AtomicU64,
    started: Instant,
    show: &'a (dyn Fn(&JobProgress) + Sync),
    /// One slot per worker thread, set when the rank's workers start.
    running: OnceLock<Box<[Mutex<Option<Running>>]>>,
}

impl<'a> ScanStatus<'a> {
    pub fn new(show: &'a (dyn Fn(&JobProgress) + Sync)) -> Self {
        Self {
            entries: AtomicU64::new(0),
            apparent_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            started: Instant::now(),
            show,
            running: OnceLock::new(),
        }
    }

    /// Makes room to follow `workers` worker threads, numbered from 0.
    pub(crate) fn follow_workers(&self, workers: usize) {
        let _ = self
            .running
            .set((0..workers).map(|_| Mutex::new(None)).collect());
    }

    fn slot(&self, worker: usize) -> Option<std::sync::MutexGuard<'_, Option<Running>>> {
        let slot = self.running.get()?.get(worker)?;
        Some(slot.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Worker `worker` starts on `item`.
    pub(crate) fn started(&self, worker: usize, item: &ScanWork) {
        if let Some(mut slot) = self.slot(worker) {
            *slot = Some(Running {
                since: Instant::now(),
                what: describe(item),
            });
        }
    }

    /// Worker `worker` is done with its item.
    pub(crate) fn finished(&self, worker: usize) {
        if let Some(mut slot) = self.slot(worker) {
            *slot = None;
        }
    }

    /// The items running for longer than `limit`: how many, and the longest with its age.
    fn slow(&self, limit: Duration) -> Option<(usize, Duration, String)> {
        let now = Instant::now();
        let mut count = 0;
        let mut longest: Option<(Duration, String)> = None;
        for slot in self.running.get()?.iter() {
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            let Some(r) = slot.as_ref() else { continue };
            let age = now.saturating_duration_since(r.since);
            if age > limit {
                count += 1;
                if longest.as_ref().is_none_or(|(l, _)| age > *l) {
                    longest = Some((age, r.what.clone()));
                }
            }
        }
        longest.map(|(age, what)| (count, age, what))
    }

    /// Adds what a worker emitted between two readings of its counts.
    pub(crate) fn add(&self, before: WalkCounts, after: WalkCounts) {
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
    fn progress(&self) -> RankProgress {
        RankProgress {
            entries: self.entries.load(Ordering::Relaxed),
            apparent_bytes: self.apparent_bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    fn report(&self, ranks: &[RankProgress], busy: &[bool]) {
        (self.show)(&JobProgress {
            entries: ranks.iter().map(|r| r.entries).sum(),
            apparent_bytes: ranks.iter().map(|r| r.apparent_bytes).sum(),
            errors: ranks.iter().map(|r| r.errors).sum(),
            busy_ranks: busy.iter().filter(|&&b| b).count(),
            ranks: ranks.len(),
            elapsed: self.started.elapsed(),
        });
    }

    fn report_slow(&self, interval: Duration) {
        if let Some((count, age, what)) = self.slow(interval) {
            if std::io::stderr().is_terminal() {
                // The warning gets a line of its own, not the end of the status line.
                eprint!("\r\x1b[K");
            }
            warn!(
                slow_items = count,
                longest_seconds = age.as_secs(),
                "slow: {count} item(s) running for more than {} s; the longest, for {} s: {what}",
                interval.as_secs_f64(),
                age.as_secs()
            );
        }
    }
}

/// An item of work, for people.
fn describe(item: &ScanWork) -> String {
    match item {
        ScanWork::Dir { path, .. } => format!("listing {}", String::from_utf8_lossy(path)),
        ScanWork::Names { dir, names, .. } => format!(
            "stat of {} name(s) in {}",
            names_of(names).count(),
            String::from_utf8_lossy(dir)
        ),
    }
}

/// Rank 0's progress: a status line rewritten in place on a terminal, log lines otherwise.
#[derive(Debug)]
pub struct ProgressDisplay {
    on_terminal: bool,
    shown: AtomicBool,
}

impl Default for ProgressDisplay {
    fn default() -> Self {
        Self::new()
    }
}

impl ProgressDisplay {
    pub fn new() -> Self {
        Self {
            on_terminal: std::io::stderr().is_terminal(),
            shown: AtomicBool::new(false),
        }
    }

    pub fn show(&self, p: &JobProgress) {
        if self.on_terminal {
            self.shown.store(true, Ordering::Relaxed);
            eprint!(
                "\r{} entries, {}, {:.0} entries/s, {}/{} ranks busy, {} errors   ",
                p.entries,
                human_bytes(p.apparent_bytes),
                p.entries_per_second(),
                p.busy_ranks,
                p.ranks,
                p.errors
            );
        } else {
            info!(
                entries = p.entries,
                apparent_bytes = p.apparent_bytes,
                entries_per_second = p.entries_per_second().round(),
                busy_ranks = p.busy_ranks,
                ranks = p.ranks,
                errors = p.errors,
                "progress"
            );
        }
    }

    /// Ends the status line, if one was shown.
    pub fn finish(&self) {
        if self.shown.load(Ordering::Relaxed) {
            eprintln!();
        }
    }
}

/// Bytes in binary units, for people.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_running_longer_than_the_interval_are_named() {
        let show = |_: &JobProgress| {};
        let status = ScanStatus::new(&show);
        status.follow_workers(3);
        status.started(0, &ScanWork::dir(b"/fast".as_slice(), 1));
        status.started(1, &ScanWork::dir(b"/slow/\xff".as_slice(), 1));
        std::thread::sleep(Duration::from_millis(30));
        status.started(0, &ScanWork::dir(b"/fast/next".as_slice(), 2));
        let (count, age, what) = status.slow(Duration::from_millis(20)).unwrap();
        assert_eq!((count, what.as_str()), (1, "listing /slow/\u{fffd}"));
        assert!(age >= Duration::from_millis(30));
        status.finished(1);
        assert!(status.slow(Duration::from_millis(20)).is_none());
        // A worker outside the slots is not followed.
        status.started(7, &ScanWork::dir(b"/x".as_slice(), 1));
    }

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
