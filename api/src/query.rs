//! The SQL the API runs. Every value from a request enters through `quote_bytes` or as a
//! number the request parser already checked; nothing else is spliced.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::entry::split_path;
use storage_tracker_proto::sql::{below_prefix, quote_bytes};

use crate::params::ChildSort;

/// A committed snapshot.
#[derive(Debug, Row, Deserialize)]
pub struct SnapshotRow {
    pub snapshot_id: u64,
    pub filesystem_label: String,
    #[serde(with = "serde_bytes")]
    pub root_path: Vec<u8>,
    pub hosts: Vec<String>,
    pub ranks: u32,
    pub scanner_version: String,
    pub started_at: u32,
    pub finished_at: u32,
    pub entries: u64,
    pub errors: u64,
    pub apparent_bytes: u64,
    pub started_at_ns: i64,
    pub scan_options: String,
}

impl SnapshotRow {
    /// Whether growth and history may compare this snapshot with `other`: the same filesystem
    /// (label) scanned from the same root.
    pub fn same_filesystem(&self, other: &Self) -> bool {
        self.filesystem_label == other.filesystem_label && self.root_path == other.root_path
    }

    /// The filesystem, for messages: `label (root /x)`.
    pub fn filesystem(&self) -> String {
        format!(
            "{:?} (root {})",
            self.filesystem_label,
            String::from_utf8_lossy(&self.root_path)
        )
    }
}

// DateTime columns arrive as UInt32 seconds in RowBinary.
const SNAPSHOT_COLUMNS: &str = "snapshot_id, filesystem_label, root_path, hosts, ranks, scanner_version, \
     started_at, finished_at, entries, errors, apparent_bytes, started_at_ns, scan_options";

/// Committed snapshots whose root is related to one of `prefixes` (a prefix at or below the
/// root, or the root below a prefix); every committed snapshot for `None`.
fn committed_covering(prefixes: Option<&[Vec<u8>]>) -> String {
    let mut condition = "state = 'committed'".to_owned();
    if let Some(prefixes) = prefixes {
        let related: Vec<String> = prefixes
            .iter()
            .map(|p| {
                let (lit, below) = (quote_bytes(p), quote_bytes(&below_prefix(p)));
                format!(
                    "root_path = '/' OR root_path = {lit} OR startsWith(root_path, {below}) \
                     OR startsWith({lit}, concat(root_path, '/'))"
                )
            })
            .collect();
        condition.push_str(&format!(" AND ({})", related.join(" OR ")));
    }
    condition
}

/// A page of the committed snapshots (see `committed_covering`), newest first.
pub fn committed_snapshots(
    db: &Database,
    prefixes: Option<&[Vec<u8>]>,
    limit: u64,
    offset: u64,
) -> String {
    format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM {db}.snapshots FINAL WHERE {} \
         ORDER BY snapshot_id DESC LIMIT {limit} OFFSET {offset}",
        committed_covering(prefixes)
    )
}

pub fn count_committed_snapshots(db: &Database, prefixes: Option<&[Vec<u8>]>) -> String {
    format!(
        "SELECT count() FROM {db}.snapshots FINAL WHERE {}",
        committed_covering(prefixes)
    )
}

/// The committed snapshots of one filesystem: the same label and root as `of`.
pub fn same_filesystem_ids(db: &Database, of: &SnapshotRow) -> String {
    format!(
        "SELECT snapshot_id FROM {db}.snapshots FINAL WHERE state = 'committed' \
         AND filesystem_label = {} AND root_path = {}",
        quote_bytes(of.filesystem_label.as_bytes()),
        quote_bytes(&of.root_path)
    )
}

/// The ids of the snapshots whose rollups hold the directory `parent`/`name`.
pub fn directory_in_snapshots(db: &Database, parent: &[u8], name: &[u8]) -> String {
    format!(
        "SELECT snapshot_id FROM {db}.dir_rollups WHERE parent_path = {} AND name = {}",
        quote_bytes(parent),
        quote_bytes(name)
    )
}

/// Committed snapshots whose rollups hold the directory `parent`/`name`, newest first.
pub fn snapshots_with_directory(db: &Database, parent: &[u8], name: &[u8]) -> String {
    format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM {db}.snapshots FINAL WHERE state = 'committed' AND snapshot_id IN ({}) \
         ORDER BY snapshot_id DESC LIMIT 10000",
        directory_in_snapshots(db, parent, name)
    )
}

/// Recursive totals of directories given by (snapshot, path), looked up by the sort key.
#[derive(Debug, Row, Deserialize)]
pub struct DirTotalsRow {
    pub snapshot_id: u64,
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

/// The rollups of `dirs`, each `(snapshot_id, path)`; `None` when there are none to look up.
pub fn dir_totals(db: &Database, dirs: &[(u64, &[u8])]) -> Option<String> {
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

pub fn committed_snapshot(db: &Database, snapshot_id: u64) -> String {
    format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM {db}.snapshots FINAL WHERE state = 'committed' AND snapshot_id = {snapshot_id}"
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

/// The rollup of the directory `parent`/`name`, looked up by the table's sort key.
pub fn directory_rollup(db: &Database, snapshot_id: u64, parent: &[u8], name: &[u8]) -> String {
    format!(
        "SELECT bytes, allocated, entries, files, dirs, max_mtime_ns, max_atime_ns, depth FROM {db}.dir_rollups \
         WHERE snapshot_id = {snapshot_id} AND parent_path = {} AND name = {}",
        quote_bytes(parent),
        quote_bytes(name)
    )
}

pub fn count_children(db: &Database, snapshot_id: u64, dir: &[u8]) -> String {
    let dir = quote_bytes(dir);
    format!(
        "SELECT count() FROM {db}.entries WHERE snapshot_id = {snapshot_id} AND parent_path = {dir} AND path != {dir}"
    )
}

/// One child of a directory with its recursive totals (zero for non-directories).
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

/// Children of `dir` in the order asked, then by name.
pub fn children(
    db: &Database,
    snapshot_id: u64,
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
    let dir = quote_bytes(dir);
    format!(
        "SELECT name, path, kind, size, allocated, uid, gid, mode, nlink, mtime_ns, atime_ns, error_op, errno, symlink_target,
    if(kind = 'dir', dir_bytes, size) AS tree_bytes,
    if(kind = 'dir', dir_allocated, allocated) AS tree_allocated,
    tree_entries, tree_files, tree_dirs,
    if(kind = 'dir', dir_max_mtime_ns, mtime_ns) AS tree_max_mtime_ns,
    if(kind = 'dir', dir_max_atime_ns, atime_ns) AS tree_max_atime_ns
FROM
(
    SELECT name, path, kind, size, allocated, uid, gid, mode, nlink, mtime_ns, atime_ns, error_op, errno, symlink_target
    FROM {db}.entries
    WHERE snapshot_id = {snapshot_id} AND parent_path = {dir} AND path != {dir}
) AS e
ANY LEFT JOIN
(
    SELECT name, bytes AS dir_bytes, allocated AS dir_allocated, entries AS tree_entries, files AS tree_files,
        dirs AS tree_dirs, max_mtime_ns AS dir_max_mtime_ns, max_atime_ns AS dir_max_atime_ns
    FROM {db}.dir_rollups
    WHERE snapshot_id = {snapshot_id} AND parent_path = {dir}
) AS r USING name
ORDER BY {order}
LIMIT {limit} OFFSET {offset}"
    )
}

/// A user or group name of a snapshot.
#[derive(Debug, Row, Deserialize)]
pub struct PrincipalRow {
    /// 1 user, 2 group.
    pub kind: i8,
    pub id: u32,
    pub name: String,
}

/// Names of the given uids and gids (numbers only: nothing from the request is spliced).
pub fn principals(db: &Database, snapshot_id: u64, uids: &[u32], gids: &[u32]) -> String {
    let list = |ids: &[u32]| {
        if ids.is_empty() {
            "0".to_owned()
        } else {
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    format!(
        "SELECT kind, id, name FROM {db}.principals WHERE snapshot_id = {snapshot_id} \
         AND ((kind = 'user' AND id IN ({})) OR (kind = 'group' AND id IN ({})))",
        list(uids),
        list(gids)
    )
}
