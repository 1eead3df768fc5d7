//! Directories and their trees' totals: entries joined with the rollups of those that are
//! directories (`with_totals`, the one join of `entries` with `dir_rollups`, over one of the
//! key ranges of `Rows`), a directory's children and one entry as list rows, a directory's
//! rollup, the rollups of a page of directories, and the largest directories.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::entry::split_path;
use storage_tracker_proto::sql::{parent_within, quote_bytes, subtree};

use super::at_path;
use crate::params::ChildSort;

/// Which entries a join with their rollups reads: the same range of the sort key on both
/// tables, so each side reads only that part.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rows<'a> {
    /// The children of a directory (not the directory itself: the root is its own parent).
    ChildrenOf(&'a [u8]),
    /// The entry at this path.
    Entry(&'a [u8]),
    /// The entries `levels` deep below `dir`, which lies at depth `base_depth`. The depth test
    /// goes first (PREWHERE): a small column that drops most rows before a path is read.
    Below {
        dir: &'a [u8],
        base_depth: u32,
        levels: u32,
        from: EntriesOf,
    },
}

/// Which table holds the entries read: all of a snapshot's, or only its top levels (those a
/// treemap near the root needs, computed at commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntriesOf {
    All,
    TopLevels,
}

impl EntriesOf {
    fn table(self) -> &'static str {
        match self {
            Self::All => "entries",
            Self::TopLevels => "top_levels",
        }
    }
}

impl Rows<'_> {
    /// What follows `FROM entries` and `FROM dir_rollups`.
    fn conditions(self, snapshot_id: SnapshotId) -> (String, String) {
        match self {
            Self::ChildrenOf(dir) => {
                let dir = quote_bytes(dir);
                let rollups = format!("WHERE snapshot_id = {snapshot_id} AND parent_path = {dir}");
                (format!("{rollups} AND path != {dir}"), rollups)
            }
            Self::Entry(path) => {
                let both = format!("WHERE snapshot_id = {snapshot_id} AND {}", at_path(path));
                (both.clone(), both)
            }
            Self::Below {
                dir,
                base_depth,
                levels,
                ..
            } => {
                let both = format!(
                    "PREWHERE depth <= {} AND depth > {base_depth} WHERE snapshot_id = {snapshot_id} AND {}",
                    base_depth + levels,
                    parent_within(dir)
                );
                (both.clone(), both)
            }
        }
    }

    /// The table of the entries' side.
    fn table(self) -> &'static str {
        match self {
            Self::Below { from, .. } => from.table(),
            Self::ChildrenOf(_) | Self::Entry(_) => EntriesOf::All.table(),
        }
    }

    /// The columns the two sides are joined by: a name within one directory, else the key.
    fn key(self) -> (&'static str, &'static str) {
        match self {
            Self::ChildrenOf(_) | Self::Entry(_) => ("name", "name"),
            Self::Below { .. } => ("parent_path, name", "(parent_path, name)"),
        }
    }
}

/// `SELECT columns` from the entries `rows` (their `entry_columns`) with the `rollup_columns`
/// of those that are directories (zeros for the rest): one join, each side by the key.
pub(super) fn with_totals(
    db: &Database,
    snapshot_id: SnapshotId,
    rows: Rows<'_>,
    columns: &str,
    entry_columns: &str,
    rollup_columns: &str,
) -> String {
    let (entries, rollups) = rows.conditions(snapshot_id);
    let (key_columns, using) = rows.key();
    let table = rows.table();
    format!(
        "SELECT {columns}
FROM
(
    SELECT {entry_columns}
    FROM {db}.{table}
    {entries}
) AS e
ANY LEFT JOIN
(
    SELECT {key_columns}, {rollup_columns}
    FROM {db}.dir_rollups
    {rollups}
) AS r USING {using}"
    )
}

/// One entry with its recursive totals (its own size and times for a non-directory).
#[derive(Debug, Row, Deserialize)]
pub struct ChildRow {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub kind: i8,
    pub size: u64,
    pub allocated: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub nlink: u64,
    pub mtime_ns: i64,
    pub atime_ns: i64,
    pub error_op: i8,
    pub errno: i32,
    #[serde(with = "serde_bytes")]
    pub symlink_target: Vec<u8>,
    pub tree_bytes: u64,
    pub tree_allocated: u64,
    pub tree_entries: u64,
    pub tree_files: u64,
    pub tree_dirs: u64,
    pub tree_max_mtime_ns: i64,
    pub tree_max_atime_ns: i64,
}

/// The entry columns of a [`ChildRow`].
const ENTRY_COLUMNS: &str = "name, path, kind, size, allocated, uid, gid, mode, nlink, mtime_ns, atime_ns, error_op, errno, symlink_target";

/// A [`ChildRow`] from [`ENTRY_COLUMNS`] and [`CHILD_ROLLUP_COLUMNS`].
const CHILD_COLUMNS: &str = "name, path, kind, size, allocated, uid, gid, mode, nlink, mtime_ns, atime_ns, error_op, errno, symlink_target,
    if(kind = 'dir', dir_bytes, size) AS tree_bytes,
    if(kind = 'dir', dir_allocated, allocated) AS tree_allocated,
    tree_entries, tree_files, tree_dirs,
    if(kind = 'dir', dir_max_mtime_ns, mtime_ns) AS tree_max_mtime_ns,
    if(kind = 'dir', dir_max_atime_ns, atime_ns) AS tree_max_atime_ns";

const CHILD_ROLLUP_COLUMNS: &str =
    "bytes AS dir_bytes, allocated AS dir_allocated, entries AS tree_entries, files AS tree_files,
        dirs AS tree_dirs, max_mtime_ns AS dir_max_mtime_ns, max_atime_ns AS dir_max_atime_ns";

impl ChildSort {
    fn column(self) -> &'static str {
        match self {
            Self::Bytes => "tree_bytes",
            Self::Allocated => "tree_allocated",
            Self::Files => "tree_files",
            Self::Mtime => "tree_max_mtime_ns",
            Self::Atime => "tree_max_atime_ns",
            Self::Name => "name",
        }
    }
}

/// A page of the children of `dir` as [`ChildRow`]s, in the order asked, then by name.
pub fn children(
    db: &Database,
    snapshot_id: SnapshotId,
    dir: &[u8],
    sort: ChildSort,
    descending: bool,
    limit: u64,
    offset: u64,
) -> String {
    let direction = if descending { "DESC" } else { "ASC" };
    let order = match sort {
        ChildSort::Name => format!("name {direction}"),
        other => format!("{} {direction}, name ASC", other.column()),
    };
    format!(
        "{}
ORDER BY {order}
LIMIT {limit} OFFSET {offset}",
        with_totals(
            db,
            snapshot_id,
            Rows::ChildrenOf(dir),
            CHILD_COLUMNS,
            ENTRY_COLUMNS,
            CHILD_ROLLUP_COLUMNS
        )
    )
}

/// How many children `dir` has.
pub fn count_children(db: &Database, snapshot_id: SnapshotId, dir: &[u8]) -> String {
    let dir = quote_bytes(dir);
    format!(
        "SELECT count() FROM {db}.entries WHERE snapshot_id = {snapshot_id} AND parent_path = {dir} AND path != {dir}"
    )
}

/// The entry at `path` as a [`ChildRow`] (no row when the snapshot has none).
pub fn entry(db: &Database, snapshot_id: SnapshotId, path: &[u8]) -> String {
    format!(
        "{}
LIMIT 1",
        with_totals(
            db,
            snapshot_id,
            Rows::Entry(path),
            CHILD_COLUMNS,
            ENTRY_COLUMNS,
            CHILD_ROLLUP_COLUMNS
        )
    )
}

/// Recursive totals of one directory.
#[derive(Debug, Row, Deserialize)]
pub struct RollupRow {
    pub bytes: u64,
    pub allocated: u64,
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub max_mtime_ns: i64,
    pub max_atime_ns: i64,
    pub depth: u32,
}

/// The rollup of the directory `dir` as a [`RollupRow`], looked up by the table's sort key.
pub fn directory_rollup(db: &Database, snapshot_id: SnapshotId, dir: &[u8]) -> String {
    format!(
        "SELECT bytes, allocated, entries, files, dirs, max_mtime_ns, max_atime_ns, depth FROM {db}.dir_rollups \
         WHERE snapshot_id = {snapshot_id} AND {}",
        at_path(dir)
    )
}

/// Recursive totals of directories given by (snapshot, path), looked up by the sort key.
#[derive(Debug, Row, Deserialize)]
pub struct DirTotalsRow {
    pub snapshot_id: SnapshotId,
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub bytes: u64,
    pub allocated: u64,
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub max_mtime_ns: i64,
    pub max_atime_ns: i64,
}

/// The rollups of `dirs`, each `(snapshot_id, path)`, as [`DirTotalsRow`]s; `None` when there
/// are none to look up.
pub fn dir_totals(db: &Database, dirs: &[(SnapshotId, &[u8])]) -> Option<String> {
    if dirs.is_empty() {
        return None;
    }
    let keys: Vec<String> = dirs
        .iter()
        .map(|(snapshot_id, path)| {
            let (parent, name) = split_path(path);
            format!(
                "({snapshot_id}, {}, {})",
                quote_bytes(parent),
                quote_bytes(name)
            )
        })
        .collect();
    Some(format!(
        "SELECT snapshot_id, path, bytes, allocated, entries, files, dirs, max_mtime_ns, max_atime_ns \
         FROM {db}.dir_rollups WHERE (snapshot_id, parent_path, name) IN ({})",
        keys.join(", ")
    ))
}

/// A directory's path.
#[derive(Debug, Row, Deserialize)]
pub struct PathRow {
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
}

/// The paths of the largest directories at or below `dir`, by recursive bytes, as
/// [`PathRow`]s.
pub fn largest_directories(
    db: &Database,
    snapshot_id: SnapshotId,
    dir: &[u8],
    limit: u64,
    offset: u64,
) -> String {
    format!(
        "SELECT path FROM {db}.dir_rollups WHERE snapshot_id = {snapshot_id} AND {}
ORDER BY bytes DESC, path ASC
LIMIT {limit} OFFSET {offset}",
        subtree(dir)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Database {
        Database::new("db").unwrap()
    }

    #[test]
    fn children_and_an_entry_are_the_same_join_over_different_keys() {
        let id = SnapshotId::new(2);
        let children = children(&db(), id, b"/a", ChildSort::Files, true, 10, 20);
        assert!(children.contains(
            "FROM db.entries\n    WHERE snapshot_id = 2 AND parent_path = '/a' AND path != '/a'\n) AS e\nANY LEFT JOIN"
        ));
        assert!(children.contains(
            "FROM db.dir_rollups\n    WHERE snapshot_id = 2 AND parent_path = '/a'\n) AS r USING name"
        ));
        assert!(children.ends_with("ORDER BY tree_files DESC, name ASC\nLIMIT 10 OFFSET 20"));
        let entry = entry(&db(), id, b"/a/b");
        assert_eq!(
            entry
                .matches("WHERE snapshot_id = 2 AND parent_path = '/a' AND name = 'b'")
                .count(),
            2
        );
        assert!(entry.ends_with(") AS r USING name\nLIMIT 1"));
        let (e, r) = (children.find("(\n").unwrap(), entry.find("(\n").unwrap());
        assert_eq!(children[..e], entry[..r], "the same columns");
    }
}
