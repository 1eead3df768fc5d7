//! History and growth read only rollups, reports and the children of one directory, all by the
//! tables' sort keys: a directory's series across one filesystem's snapshots, and what changed
//! between two snapshots per child and per owner (each a full outer join of two sides, one
//! per snapshot).

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;

use super::snapshots::{self, Committed, SnapshotRow};
use super::tree::{Rows, with_totals};
use super::{Principal, at_path};

/// The directory `dir` in every committed snapshot of the filesystem of `of` that has it,
/// oldest first (as `history::Point`s).
pub fn history(db: &Database, of: &SnapshotRow, dir: &[u8]) -> String {
    format!(
        "SELECT snapshot_id, started_at, started_at_ns, bytes, allocated, entries, files, dirs, max_mtime_ns, scan_options
FROM
(
    SELECT snapshot_id, bytes, allocated, entries, files, dirs, max_mtime_ns
    FROM {db}.dir_rollups
    WHERE snapshot_id IN ({ids}) AND {key}
) AS r
ANY LEFT JOIN
(
    {dates}
) AS s USING snapshot_id
ORDER BY snapshot_id
LIMIT 10000",
        ids = snapshots::ids(db, Committed::OfFilesystem(of)),
        key = at_path(dir),
        dates = snapshots::dates(db),
    )
}

/// The two sides of a comparison, and their columns' prefix.
#[derive(Debug, Clone, Copy)]
enum Side {
    A,
    B,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }
}

/// The children of `dir` in one snapshot: name, kind, recursive bytes and files, as
/// `{side}_kind`, `{side}_bytes`, `{side}_files`, with `in_{side}` = 1.
fn children_totals(db: &Database, snapshot_id: SnapshotId, dir: &[u8], side: Side) -> String {
    let side = side.name();
    let totals = with_totals(
        db,
        snapshot_id,
        Rows::ChildrenOf(dir),
        &format!(
            "name, toString(kind) AS {side}_kind, if(kind = 'dir', dir_bytes, size) AS {side}_bytes,
        if(kind = 'dir', dir_files, toUInt64(kind = 'file')) AS {side}_files, toUInt8(1) AS in_{side}"
        ),
        "name, kind, size",
        "bytes AS dir_bytes, files AS dir_files",
    );
    format!("(\n{totals}\n) AS {side}")
}

/// Both snapshots' children of `dir`, side by side: a child in one only has zeros on the other.
fn joined_children(db: &Database, from: SnapshotId, to: SnapshotId, dir: &[u8]) -> String {
    format!(
        "(
    SELECT name, a_kind, b_kind, a_bytes, b_bytes, a_files, b_files, in_a, in_b
    FROM {} ALL FULL OUTER JOIN {} USING name
) AS j",
        children_totals(db, from, dir, Side::A),
        children_totals(db, to, dir, Side::B)
    )
}

/// A child of a directory in two snapshots.
#[derive(Debug, Row, Deserialize)]
pub struct ChangeRow {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    pub a_kind: String,
    pub b_kind: String,
    pub a_bytes: u64,
    pub b_bytes: u64,
    pub a_files: u64,
    pub b_files: u64,
    pub in_a: u8,
    pub in_b: u8,
}

/// The children of `dir` that differ between the snapshots, largest change first, as
/// [`ChangeRow`]s.
pub fn growth(
    db: &Database,
    from: SnapshotId,
    to: SnapshotId,
    dir: &[u8],
    limit: u64,
    offset: u64,
) -> String {
    format!(
        "SELECT name, a_kind, b_kind, a_bytes, b_bytes, a_files, b_files, in_a, in_b
FROM {}
WHERE in_a != in_b OR a_bytes != b_bytes OR a_files != b_files
ORDER BY abs(toInt64(b_bytes) - toInt64(a_bytes)) DESC, name ASC
LIMIT {limit} OFFSET {offset}",
        joined_children(db, from, to, dir)
    )
}

/// Counts of the children changed in place, added and removed (each child in one of these), as
/// a `history::ChangeSummary`.
pub fn growth_summary(db: &Database, from: SnapshotId, to: SnapshotId, dir: &[u8]) -> String {
    format!(
        "SELECT countIf(in_a = 1 AND in_b = 1 AND (a_bytes != b_bytes OR a_files != b_files)) AS changed,
    countIf(in_a = 0) AS added, sumIf(b_bytes, in_a = 0) AS added_bytes, sumIf(b_files, in_a = 0) AS added_files,
    countIf(in_b = 0) AS removed, sumIf(a_bytes, in_b = 0) AS removed_bytes, sumIf(a_files, in_b = 0) AS removed_files
FROM {}",
        joined_children(db, from, to, dir)
    )
}

/// An owner's bytes and files in two snapshots.
#[derive(Debug, Row, Deserialize)]
pub struct OwnerChangeRow {
    pub id: u32,
    pub a_bytes: u64,
    pub b_bytes: u64,
    pub a_files: u64,
    pub b_files: u64,
    pub in_a: u8,
    pub in_b: u8,
    #[serde(default)]
    pub name: String,
}

/// Per user or group: bytes and files in each snapshot, largest change first, as
/// [`OwnerChangeRow`]s.
pub fn owner_growth(
    db: &Database,
    from: SnapshotId,
    to: SnapshotId,
    principal: Principal,
) -> String {
    let principal = principal.literal();
    let side = |id: SnapshotId, side: Side| {
        let s = side.name();
        format!(
            "(SELECT id, sum(bytes) AS {s}_bytes, sum(files) AS {s}_files, toUInt8(1) AS in_{s}
    FROM {db}.owner_usage WHERE snapshot_id = {id} AND principal = {principal} GROUP BY id) AS {s}"
        )
    };
    format!(
        "SELECT id, a_bytes, b_bytes, a_files, b_files, in_a, in_b, name
FROM
(
    SELECT id, a_bytes, b_bytes, a_files, b_files, in_a, in_b
    FROM {} ALL FULL OUTER JOIN {} USING id
) AS j
ANY LEFT JOIN
(
    SELECT id, name FROM {db}.principals WHERE snapshot_id IN ({from}, {to}) AND kind = {principal}
) AS n USING id
ORDER BY abs(toInt64(b_bytes) - toInt64(a_bytes)) DESC, id ASC
LIMIT 10000",
        side(from, Side::A),
        side(to, Side::B)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_of_a_comparison_is_the_children_join_of_its_snapshot() {
        let db = Database::new("db").unwrap();
        let (a, b) = (SnapshotId::new(1), SnapshotId::new(2));
        let sql = growth(&db, a, b, b"/d", 10, 0);
        for (id, side) in [(1, "a"), (2, "b")] {
            assert!(sql.contains(&format!(
                "WHERE snapshot_id = {id} AND parent_path = '/d' AND path != '/d'"
            )));
            assert!(sql.contains(&format!("toUInt8(1) AS in_{side}")));
            assert!(sql.contains(&format!(") AS r USING name\n) AS {side}")));
        }
        assert!(sql.contains(") AS a ALL FULL OUTER JOIN (\n"));
    }
}
