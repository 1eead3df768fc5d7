//! What the service holds of chunks in memory, bounded by design rather than by the size of a
//! snapshot or the number of ranks streaming:
//!
//! - decoded chunks kept for their insert, within the budget (`--memory-mib`); a chunk that
//!   does not fit is read back from the spool when its turn comes, so an outage of ClickHouse
//!   costs disk, not memory. A kept chunk's share is given back when it is stored.
//! - chunks being decoded, checked on arrival or read back for an insert: at most one per core
//!   at a time ([`Memory::decoding`]), so 64 ranks sending at once decode in turn.
//!
//! Outside them: each open stream's one chunk message as it arrives (its Parquet bytes, a few
//! MiB), and the runtime's own.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// The share of the budget a kept chunk holds until it is stored.
pub(crate) type Kept = OwnedSemaphorePermit;

#[derive(Debug)]
pub(crate) struct Memory {
    /// KiB of decoded chunks kept for inserting.
    kept: Arc<Semaphore>,
    decoders: Semaphore,
}

impl Memory {
    /// A budget of `bytes` for kept chunks, and `decoders` decodes at once.
    pub(crate) fn new(bytes: usize, decoders: usize) -> Self {
        let kib = u32::try_from(bytes >> 10).unwrap_or(u32::MAX);
        Self {
            kept: Arc::new(Semaphore::new(kib as usize)),
            decoders: Semaphore::new(decoders.max(1)),
        }
    }

    /// Holds `bytes` of the budget for a decoded chunk, or `None` when the budget has no room.
    pub(crate) fn keep(&self, bytes: usize) -> Option<Kept> {
        let kib = u32::try_from(bytes.div_ceil(1 << 10)).ok()?;
        Arc::clone(&self.kept).try_acquire_many_owned(kib).ok()
    }

    /// Waits for a turn to decode a chunk.
    pub(crate) async fn decoding(&self) -> SemaphorePermit<'_> {
        self.decoders
            .acquire()
            .await
            .expect("the decoders' semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_chunks_stay_within_the_budget_until_they_are_stored() {
        let memory = Memory::new(10 << 10, 1);
        let a = memory.keep(6 << 10).unwrap();
        assert!(memory.keep(5 << 10).is_none(), "6 + 5 KiB of 10");
        let b = memory.keep(4 << 10).unwrap();
        drop(a);
        assert!(memory.keep(6 << 10).is_some());
        drop(b);
        assert!(
            memory.keep(11 << 10).is_none(),
            "larger than the whole budget"
        );
    }
}
