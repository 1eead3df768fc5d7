//! A treemap's statements: its tiles (entries a few levels below a directory with their trees'
//! totals, the largest of each directory) and its directories' totals.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::sql::subtree;

use super::tree::{EntriesOf, Rows, with_totals};
use crate::params::AreaBy;

/// One tile: an entry with its tree's bytes, files and newest mtime.
#[derive(Debug, Row, Deserialize)]
pub struct TileRow {
    #[serde(with = "serde_bytes")]
    pub parent_path: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub kind: String,
    pub bytes: u64,
    /// Allocated bytes (of the tree, for a directory).
    pub on_disk: u64,
    pub files: u64,
    pub uid: u32,
    pub newest_mtime_ns: i64,
    /// The entry's own size and allocated bytes (a directory's inode's).
    pub size: u64,
    pub own_allocated: u64,
}

/// A treemap's tiles as [`TileRow`]s: every entry whose parent lies within `depth - 1` levels
/// below `dir` (at `base_depth`), with its tree's bytes and files, the `max_children` largest
/// by `size` of each directory. The parent's range is on the sort key.
pub fn tiles(
    db: &Database,
    snapshot_id: SnapshotId,
    (dir, base_depth): (&[u8], u32),
    depth: u32,
    size: AreaBy,
    max_children: u32,
    from: EntriesOf,
) -> String {
    let size = match size {
        AreaBy::Bytes => "bytes",
        AreaBy::Allocated => "on_disk",
        AreaBy::Files => "files",
    };
    let tiles = with_totals(
        db,
        snapshot_id,
        Rows::Below {
            dir,
            base_depth,
            levels: depth,
            from,
        },
        "parent_path, name, toString(kind) AS kind, if(kind = 'dir', dir_bytes, size) AS bytes,
        if(kind = 'dir', dir_allocated, allocated) AS on_disk,
        if(kind = 'dir', dir_files, toUInt64(kind = 'file')) AS files, uid,
        if(kind = 'dir', dir_mtime_ns, mtime_ns) AS newest_mtime_ns, size, allocated AS own_allocated",
        "parent_path, name, kind, size, allocated, uid, mtime_ns",
        "bytes AS dir_bytes, allocated AS dir_allocated, files AS dir_files, max_mtime_ns AS dir_mtime_ns",
    );
    format!(
        "SELECT parent_path, name, kind, bytes, on_disk, files, uid, newest_mtime_ns, size, own_allocated FROM
(
{tiles}
) AS t ORDER BY {size} DESC, name ASC LIMIT {max_children} BY parent_path"
    )
}

/// How many entries `top_levels` holds of the snapshot, and the deepest of them: the levels
/// below the root it holds whole (none when it holds nothing: a snapshot committed before it).
pub fn top_levels(db: &Database, snapshot_id: SnapshotId) -> String {
    format!("SELECT count(), max(depth) FROM {db}.top_levels WHERE snapshot_id = {snapshot_id}")
}

/// What a treemap directory holds.
#[derive(Debug, Row, Deserialize)]
pub struct TotalRow {
    #[serde(with = "serde_bytes")]
    pub parent_path: Vec<u8>,
    pub children: u64,
    pub bytes: u64,
    pub allocated: u64,
    pub files: u64,
}

/// What each directory of a treemap holds, from its rollup alone (no join), as [`TotalRow`]s:
/// its children, and the bytes and files below it.
pub fn totals(
    db: &Database,
    snapshot_id: SnapshotId,
    dir: &[u8],
    base_depth: u32,
    depth: u32,
) -> String {
    format!(
        "SELECT path AS parent_path, direct_entries AS children, bytes, allocated, files FROM {db}.dir_rollups
PREWHERE depth >= {base_depth} AND depth < {below} WHERE snapshot_id = {snapshot_id} AND {}",
        subtree(dir),
        below = base_depth + depth,
    )
}
