//! A snapshot's id as a type ([`SnapshotId`]), and typed readings of the gRPC messages' bare
//! `snapshot_id` and byte fields, so that an id is never taken for a count or a rank.

use std::str::FromStr;

use crate::size::ApparentBytes;
use crate::v1;

/// A snapshot's id: assigned by the aggregator, from 1 up, the partition key of every
/// per-snapshot table. With the `serde` feature it is (de)serialized as the bare number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct SnapshotId(u64);

impl SnapshotId {
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The id as a number (as the messages and the tables hold it).
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for SnapshotId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

impl From<SnapshotId> for u64 {
    fn from(id: SnapshotId) -> Self {
        id.0
    }
}

/// The bare number, as SQL, logs and messages write it.
impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A decimal number, as command lines and URL paths give it.
impl FromStr for SnapshotId {
    type Err = std::num::ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

macro_rules! snapshot_of {
    ($($message:ident),*) => {
        $(
            impl v1::$message {
                /// The snapshot this message is about.
                pub fn snapshot(&self) -> SnapshotId {
                    SnapshotId(self.snapshot_id)
                }
            }
        )*
    };
}

snapshot_of!(
    BeginSnapshotResponse,
    Chunk,
    ChunkAck,
    FinishSnapshotRequest,
    FinishSnapshotResponse,
    AbortSnapshotRequest,
    CandidatesRequest,
    HashBatch
);

impl v1::RankTotals {
    /// The apparent bytes of the entries the rank scanned.
    pub fn apparent(&self) -> ApparentBytes {
        ApparentBytes::new(self.apparent_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_read_and_print_as_numbers() {
        let id: SnapshotId = "42".parse().unwrap();
        assert_eq!(id, SnapshotId::from(42));
        assert_eq!(id.get(), 42);
        assert_eq!(format!("snapshot {id}"), "snapshot 42");
        assert!("-1".parse::<SnapshotId>().is_err());
        let chunk = v1::Chunk {
            snapshot_id: 7,
            ..Default::default()
        };
        assert_eq!(chunk.snapshot(), SnapshotId::new(7));
        let totals = v1::RankTotals {
            apparent_bytes: 9,
            ..Default::default()
        };
        assert_eq!(totals.apparent().get(), 9);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn ids_and_byte_counts_serialize_as_bare_numbers() {
        use crate::size::AllocatedBytes;
        let value = (
            SnapshotId::new(3),
            ApparentBytes::new(5),
            AllocatedBytes::new(4096),
        );
        let json = serde_json::to_string(&value).unwrap();
        assert_eq!(json, "[3,5,4096]");
        assert_eq!(
            serde_json::from_str::<(SnapshotId, ApparentBytes, AllocatedBytes)>(&json).unwrap(),
            value
        );
    }
}
