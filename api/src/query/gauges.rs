//! Statements of the usage gauges for Prometheus (`/api/v1/metrics/usage`): the latest committed
//! snapshots of each filesystem, and a snapshot's top-level directories and owners. Each reads
//! a per-snapshot report through its sort key, or the snapshots' record: nothing of `entries`.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;

/// A committed snapshot, as the gauges name it.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct LatestRow {
    pub label: String,
    #[serde(with = "serde_bytes")]
    pub root_path: Vec<u8>,
    pub snapshot_id: u64,
    pub started_at_ns: i64,
    pub entries: u64,
    pub errors: u64,
    pub apparent_bytes: u64,
}

/// The two newest committed snapshots of each filesystem (label and root), newest first, as
/// [`LatestRow`]s.
pub fn latest(db: &Database) -> String {
    format!(
        "SELECT filesystem_label AS label, root_path, snapshot_id, started_at_ns, entries, errors, apparent_bytes
FROM {db}.snapshots FINAL WHERE state = 'committed'
ORDER BY label, root_path, started_at_ns DESC, snapshot_id DESC
LIMIT 2 BY label, root_path"
    )
}

/// A top-level directory or an owner of a snapshot, and what it holds.
#[derive(Debug, Row, Deserialize)]
pub struct HolderRow {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub id: u32,
    pub bytes: u64,
    pub allocated: u64,
    pub files: u64,
}

/// The directories just below the root of a snapshot, with their trees' totals, as
/// [`HolderRow`]s keyed by name.
pub fn top_directories(db: &Database, snapshot_id: SnapshotId) -> String {
    format!(
        "SELECT name AS key, toUInt32(0) AS id, bytes, allocated, files FROM {db}.dir_rollups
PREWHERE depth = 1 WHERE snapshot_id = {snapshot_id}"
    )
}

/// Each user's bytes and files in a snapshot, as [`HolderRow`]s keyed by name ('' where the
/// scan resolved none).
pub fn users(db: &Database, snapshot_id: SnapshotId) -> String {
    format!(
        "SELECT name AS key, id, b AS bytes, a AS allocated, f AS files
FROM
(
    SELECT id, sum(bytes) AS b, sum(allocated) AS a, sum(files) AS f
    FROM {db}.owner_usage WHERE snapshot_id = {snapshot_id} AND principal = 'user' GROUP BY id
) AS u
ANY LEFT JOIN
(
    SELECT id, name FROM {db}.principals WHERE snapshot_id = {snapshot_id} AND kind = 'user'
) AS p USING id"
    )
}
