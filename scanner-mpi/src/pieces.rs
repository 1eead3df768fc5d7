//! How many names of a directory one piece of work stats: as many as take about
//! [`PIECE_TARGET`] at what a stat costs on this filesystem, measured as the scan goes.
//!
//! On a local disk a stat takes a microsecond or two, and a piece is the most names
//! ([`MAX_NAMES_PER_PIECE`]): a work item per thousand names costs nothing. On Lustre or GPFS a
//! stat is a round trip to a metadata server (0.2-2 ms), and a thousand names would be one
//! thread's second or more of serial waiting while other threads sit idle; there pieces shrink
//! to a few names, down to one, so that every name of a directory can be in flight at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The serial stat time one piece should take.
pub const PIECE_TARGET: Duration = Duration::from_millis(5);

/// The most names in one piece, where stats are fast.
pub const MAX_NAMES_PER_PIECE: usize = 1024;

/// What a stat is assumed to cost before any was measured: a network filesystem's round trip,
/// so that the first directory is cut finely where that matters. On a local disk the estimate
/// falls to the measured microseconds within a few dozen pieces.
const FIRST_GUESS: Duration = Duration::from_millis(1);

/// A rank's running estimate of what one stat costs, shared by its workers: an exponentially
/// weighted mean of every piece's mean stat time, each piece weighing a quarter.
#[derive(Debug)]
pub struct StatCost {
    /// Nanoseconds per stat, as the bits of an f64.
    nanos: AtomicU64,
}

impl Default for StatCost {
    fn default() -> Self {
        Self::new(FIRST_GUESS)
    }
}

impl StatCost {
    pub fn new(first_guess: Duration) -> Self {
        Self {
            nanos: AtomicU64::new((first_guess.as_nanos() as f64).to_bits()),
        }
    }

    /// Records that `stats` stats took `spent` in all.
    pub fn record(&self, stats: usize, spent: Duration) {
        if stats == 0 {
            return;
        }
        let sample = spent.as_nanos() as f64 / stats as f64;
        // Concurrent updates may overwrite each other: one sample lost now and then.
        let old = f64::from_bits(self.nanos.load(Ordering::Relaxed));
        let new = old + (sample - old) / 4.0;
        self.nanos.store(new.to_bits(), Ordering::Relaxed);
    }

    /// The current estimate.
    pub fn per_stat(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.nanos.load(Ordering::Relaxed)) as u64)
    }

    /// Names per piece at the current estimate: [`PIECE_TARGET`] of stats, from 1 to
    /// [`MAX_NAMES_PER_PIECE`].
    pub fn names_per_piece(&self) -> usize {
        let per_stat = self.per_stat().as_nanos().max(1);
        usize::try_from(PIECE_TARGET.as_nanos() / per_stat)
            .unwrap_or(usize::MAX)
            .clamp(1, MAX_NAMES_PER_PIECE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_follow_the_measured_cost_of_a_stat() {
        let cost = StatCost::default();
        // Before any measurement: a network round trip of 1 ms, 5 names.
        assert_eq!(cost.names_per_piece(), 5);
        // A local disk: 2 us per stat; the estimate converges within a few dozen pieces.
        for _ in 0..40 {
            cost.record(100, Duration::from_micros(200));
        }
        assert_eq!(cost.names_per_piece(), MAX_NAMES_PER_PIECE);
        // A loaded metadata server: 8 ms per stat, one name per piece.
        for _ in 0..20 {
            cost.record(1, Duration::from_millis(8));
        }
        assert_eq!(cost.names_per_piece(), 1);
        // Lustre on a good day: 0.5 ms, 10 names.
        let lustre = StatCost::new(Duration::from_micros(500));
        assert_eq!(lustre.names_per_piece(), 10);
        cost.record(0, Duration::from_secs(1));
        assert_eq!(
            cost.names_per_piece(),
            1,
            "nothing measured, nothing changes"
        );
    }
}
