//! The SQL the API runs. Every value from a request enters through `quote_bytes` or as a
//! number the request parser already checked; nothing else is spliced.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::entry::split_path;
use storage_tracker_proto::sql::{below_prefix, parent_within, quote_bytes, subtree};

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

/// Usage per user or per group (`principal`, a word from a fixed list), largest first.
pub fn owner_usage(
    db: &Database,
    snapshot_id: u64,
    principal: &str,
    limit: u64,
    offset: u64,
) -> String {
    format!(
        "SELECT '' AS key, id, name, entries, files, bytes, allocated
FROM
(
    SELECT id, sum(entries) AS entries, sum(files) AS files, sum(bytes) AS bytes, sum(allocated) AS allocated
    FROM {db}.owner_usage WHERE snapshot_id = {snapshot_id} AND principal = '{principal}' GROUP BY id
) AS u
ANY LEFT JOIN
(
    SELECT id, name FROM {db}.principals WHERE snapshot_id = {snapshot_id} AND kind = '{principal}'
) AS n USING id
ORDER BY bytes DESC, id ASC
LIMIT {limit} OFFSET {offset}"
    )
}

/// Usage per file type, largest first, in the rows of [`owner_usage`].
pub fn type_usage(db: &Database, snapshot_id: u64, limit: u64, offset: u64) -> String {
    format!(
        "SELECT extension AS key, toUInt32(0) AS id, '' AS name, files AS entries, files, bytes, allocated
FROM {db}.type_usage WHERE snapshot_id = {snapshot_id}
ORDER BY bytes DESC, key ASC
LIMIT {limit} OFFSET {offset}"
    )
}

/// The buckets of one histogram (`of`, a word from a fixed list).
pub fn histogram(db: &Database, snapshot_id: u64, of: &str) -> String {
    format!(
        "SELECT bucket, files, bytes, allocated FROM {db}.histograms WHERE snapshot_id = {snapshot_id} AND histogram = '{of}' ORDER BY bucket"
    )
}

/// The paths of the largest directories at or below `dir`, by recursive bytes.
pub fn largest_directories(
    db: &Database,
    snapshot_id: u64,
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

/// How many of the snapshots `ids` hold the directory `parent`/`name`.
pub fn count_holding(db: &Database, ids: [u64; 2], parent: &[u8], name: &[u8]) -> String {
    format!(
        "SELECT count() FROM ({}) AS d WHERE snapshot_id IN ({}, {})",
        directory_in_snapshots(db, parent, name),
        ids[0],
        ids[1]
    )
}

/// A page of entries matching `condition` in key order, after the key `after` (the last of the
/// page before): what a streamed download reads, page by page.
pub fn entries_page_after(
    db: &Database,
    snapshot_id: u64,
    condition: &str,
    after: Option<(&[u8], &[u8])>,
    rows: u64,
    skip: u64,
) -> String {
    let keyset = after.map_or(String::new(), |(parent, name)| {
        let parent = quote_bytes(parent);
        format!(
            " AND parent_path >= {parent} AND (parent_path > {parent} OR name > {})",
            quote_bytes(name)
        )
    });
    format!(
        "SELECT parent_path, name, path, size, allocated, uid, gid, mtime_ns, atime_ns
FROM {db}.entries
WHERE snapshot_id = {snapshot_id} AND {condition}{keyset}
ORDER BY snapshot_id, parent_path, name
LIMIT {rows} OFFSET {skip}"
    )
}

/// A treemap's tiles: every entry whose parent lies within `depth - 1` levels below `dir` (at
/// `base_depth`), with its tree's bytes and files, the `max_children` largest by `size` (a
/// column from a fixed list) of each directory. The depth test goes first (PREWHERE): a small
/// column that drops most rows before a path is read; the parent's range is on the sort key.
pub fn treemap_tiles(
    db: &Database,
    snapshot_id: u64,
    dir: &[u8],
    base_depth: u32,
    depth: u32,
    size: &str,
    max_children: u32,
) -> String {
    let within = format!(
        "PREWHERE depth <= {max_depth} AND depth > {base_depth} WHERE snapshot_id = {snapshot_id} AND {}",
        parent_within(dir),
        max_depth = base_depth + depth,
    );
    format!(
        "SELECT parent_path, name, kind, bytes, files, uid, newest_mtime_ns, size FROM
(
    SELECT parent_path, name, toString(kind) AS kind, if(kind = 'dir', dir_bytes, size) AS bytes,
        if(kind = 'dir', dir_files, toUInt64(kind = 'file')) AS files, uid,
        if(kind = 'dir', dir_mtime_ns, mtime_ns) AS newest_mtime_ns, size
    FROM (SELECT parent_path, name, kind, size, uid, mtime_ns FROM {db}.entries {within}) AS e
    ANY LEFT JOIN
    (
        SELECT parent_path, name, bytes AS dir_bytes, files AS dir_files, max_mtime_ns AS dir_mtime_ns
        FROM {db}.dir_rollups {within}
    ) AS r USING (parent_path, name)
) AS t ORDER BY {size} DESC, name ASC LIMIT {max_children} BY parent_path"
    )
}

/// What each directory of a treemap holds, from its rollup alone (no join): its children, and
/// the bytes and files below it.
pub fn treemap_totals(
    db: &Database,
    snapshot_id: u64,
    dir: &[u8],
    base_depth: u32,
    depth: u32,
) -> String {
    format!(
        "SELECT path AS parent_path, direct_entries AS children, bytes, files FROM {db}.dir_rollups
PREWHERE depth >= {base_depth} AND depth < {below} WHERE snapshot_id = {snapshot_id} AND {}",
        subtree(dir),
        below = base_depth + depth,
    )
}

/// The own size of the entry `parent`/`name`.
pub fn entry_size(db: &Database, snapshot_id: u64, parent: &[u8], name: &[u8]) -> String {
    format!(
        "SELECT size FROM {db}.entries WHERE snapshot_id = {snapshot_id} AND parent_path = {} AND name = {}",
        quote_bytes(parent),
        quote_bytes(name)
    )
}
