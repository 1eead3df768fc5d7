//! Statements on `snapshots`, and the one condition that makes a snapshot readable:
//! [`Committed`]. A snapshot's row is replaced as its state changes, so every read is `FINAL`.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::sql::{below_prefix, quote_bytes};

use super::at_key;

/// A committed snapshot.
#[derive(Debug, Row, Deserialize)]
pub struct SnapshotRow {
    pub snapshot_id: SnapshotId,
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

/// Which committed snapshots a statement reads. `state = 'committed'` is written here once:
/// running, failed and deleted snapshots are in no answer.
#[derive(Debug, Clone, Copy)]
pub enum Committed<'a> {
    /// Every committed snapshot.
    All,
    /// Those whose root is related to one of the prefixes (a prefix at or below the root, or
    /// the root below a prefix): what a scoped token may read something of.
    Covering(&'a [Vec<u8>]),
    /// The one with this id.
    Id(SnapshotId),
    /// Those of the filesystem of this snapshot: the same label and root.
    OfFilesystem(&'a SnapshotRow),
    /// Those whose rollups hold the directory `parent`/`name`.
    Holding { parent: &'a [u8], name: &'a [u8] },
}

impl Committed<'_> {
    /// `db.snapshots FINAL WHERE …`, to follow `FROM`.
    fn table(self, db: &Database) -> String {
        let narrowed = match self {
            Self::All => String::new(),
            Self::Covering(prefixes) => {
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
                format!(" AND ({})", related.join(" OR "))
            }
            Self::Id(snapshot_id) => format!(" AND snapshot_id = {snapshot_id}"),
            Self::OfFilesystem(of) => format!(
                " AND filesystem_label = {} AND root_path = {}",
                quote_bytes(of.filesystem_label.as_bytes()),
                quote_bytes(&of.root_path)
            ),
            Self::Holding { parent, name } => {
                format!(
                    " AND snapshot_id IN ({})",
                    directory_in_snapshots(db, parent, name)
                )
            }
        };
        format!("{db}.snapshots FINAL WHERE state = 'committed'{narrowed}")
    }
}

/// The condition that keeps the snapshots of one filesystem label, if one is asked.
fn of_label(label: Option<&str>) -> String {
    label.map_or(String::new(), |l| {
        format!(" AND filesystem_label = {}", quote_bytes(l.as_bytes()))
    })
}

/// The first `limit` of `which` (of `label` only, when given), newest first, as
/// [`SnapshotRow`]s.
fn newest(db: &Database, which: Committed<'_>, label: Option<&str>, limit: u64) -> String {
    format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM {}{} ORDER BY snapshot_id DESC LIMIT {limit}",
        which.table(db),
        of_label(label)
    )
}

/// A page of `which` (of `label` only, when given), newest first, as [`SnapshotRow`]s.
pub fn newest_first(
    db: &Database,
    which: Committed<'_>,
    label: Option<&str>,
    (limit, offset): (u64, u64),
) -> String {
    format!("{} OFFSET {offset}", newest(db, which, label, limit))
}

/// The committed snapshots whose rollups hold the directory `parent`/`name`, newest first,
/// as [`SnapshotRow`]s (at most 10000).
pub fn holding_directory(db: &Database, parent: &[u8], name: &[u8]) -> String {
    newest(db, Committed::Holding { parent, name }, None, 10_000)
}

/// How many snapshots `which` holds (of `label` only, when given).
pub fn count(db: &Database, which: Committed<'_>, label: Option<&str>) -> String {
    format!("SELECT count() FROM {}{}", which.table(db), of_label(label))
}

/// The committed snapshot `snapshot_id`, as a [`SnapshotRow`].
pub fn one(db: &Database, snapshot_id: SnapshotId) -> String {
    format!(
        "SELECT {SNAPSHOT_COLUMNS} FROM {}",
        Committed::Id(snapshot_id).table(db)
    )
}

/// The ids of `which`.
pub fn ids(db: &Database, which: Committed<'_>) -> String {
    format!("SELECT snapshot_id FROM {}", which.table(db))
}

/// The snapshot id, the start (in seconds and in nanoseconds) and the scan options of every
/// committed snapshot: the side of a join that dates a series of rollups.
pub(super) fn dates(db: &Database) -> String {
    format!(
        "SELECT snapshot_id, toUInt32(started_at) AS started_at, started_at_ns, scan_options FROM {}",
        Committed::All.table(db)
    )
}

/// The ids of the snapshots whose rollups hold the directory `parent`/`name` (committed or
/// not: [`Committed::Holding`] narrows).
fn directory_in_snapshots(db: &Database, parent: &[u8], name: &[u8]) -> String {
    format!(
        "SELECT snapshot_id FROM {db}.dir_rollups WHERE {}",
        at_key(parent, name)
    )
}

/// How many of the snapshots `ids` hold the directory `parent`/`name`.
pub fn count_holding(db: &Database, ids: [SnapshotId; 2], parent: &[u8], name: &[u8]) -> String {
    format!(
        "SELECT count() FROM ({}) AS d WHERE snapshot_id IN ({}, {})",
        directory_in_snapshots(db, parent, name),
        ids[0],
        ids[1]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_read_of_snapshots_is_of_committed_ones() {
        let db = Database::new("db").unwrap();
        let prefixes = [b"/p/a".to_vec()];
        let row = SnapshotRow {
            snapshot_id: SnapshotId::new(1),
            filesystem_label: "fs".into(),
            root_path: b"/p".to_vec(),
            hosts: Vec::new(),
            ranks: 1,
            scanner_version: String::new(),
            started_at: 0,
            finished_at: 0,
            entries: 0,
            errors: 0,
            apparent_bytes: 0,
            started_at_ns: 0,
            scan_options: String::new(),
        };
        for sql in [
            newest_first(&db, Committed::Covering(&prefixes), Some("fs"), (10, 0)),
            count(&db, Committed::All, None),
            one(&db, SnapshotId::new(7)),
            ids(&db, Committed::OfFilesystem(&row)),
            holding_directory(&db, b"/p", b"a"),
            dates(&db),
        ] {
            assert!(
                sql.contains("FROM db.snapshots FINAL WHERE state = 'committed'"),
                "{sql}"
            );
        }
        assert!(one(&db, SnapshotId::new(7)).ends_with("state = 'committed' AND snapshot_id = 7"));
        assert!(
            ids(&db, Committed::OfFilesystem(&row))
                .ends_with("AND filesystem_label = 'fs' AND root_path = '/p'")
        );
    }
}
