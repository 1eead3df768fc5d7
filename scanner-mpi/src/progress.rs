//! A scan's progress while it runs: what each rank counts ([`RankProgress`], kept by
//! [`ScanStatus`] as the workers go), what rank 0 makes of every rank's counts
//! ([`JobProgress`]), and how it shows them ([`ProgressDisplay`]: a status line on a terminal,
//! log lines otherwise). The counts reach rank 0 through the coordinator's progress messages.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::info;

use crate::walk::WalkCounts;

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

/// A rank's running totals, shared by its workers; rank 0 also reports everyone's.
pub struct ScanStatus<'a> {
    entries: AtomicU64,
    apparent_bytes: AtomicU64,
    errors: AtomicU64,
    started: Instant,
    show: &'a (dyn Fn(&JobProgress) + Sync),
}

impl<'a> ScanStatus<'a> {
    pub fn new(show: &'a (dyn Fn(&JobProgress) + Sync)) -> Self {
        Self {
            entries: AtomicU64::new(0),
            apparent_bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            started: Instant::now(),
            show,
        }
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
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
