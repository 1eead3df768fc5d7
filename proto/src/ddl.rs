//! The ClickHouse layout: one database, twelve tables. Every statement runs on ClickHouse 18.16
//! and on current releases (no CTEs, codecs, TTLs, secondary indexes or LowCardinality).
//!
//! - `snapshots`: one row per state change of a snapshot; `FINAL` gives the current state.
//! - `entries`: one row per path, partitioned by snapshot so a snapshot drops as a whole.
//!   A path is stored once, as its parent directory and its name (the sort key, where a
//!   directory's children lie together and its path compresses to nearly nothing); `path` is
//!   an `ALIAS` column computed from them when read.
//! - `dir_rollups`: per directory, recursive and direct totals, computed once at commit; its
//!   `path` is an alias too.
//! - `owner_usage`: per user and per group, per top-level directory, computed at commit.
//! - `type_usage`: per file name extension, computed at commit.
//! - `histograms`: files by size, by mtime age and by atime age, computed at commit.
//! - `large_entries`: the rows of `entries` of the snapshot's largest entries, every entry at
//!   least as large as its [`LARGE_ENTRIES`]th largest, computed at commit: a list largest first
//!   under any directory, by any filter, comes from here when it holds a page of it.
//! - `top_levels`: the rows of `entries` of the first [`TOP_LEVELS`] levels below the root (fewer
//!   where they would hold more than [`TOP_LEVEL_ENTRIES`]), computed at commit: the treemaps
//!   near the root read these, not every entry of the snapshot.
//! - `principals`: the names of the uids and gids of a snapshot, resolved once per id.
//! - `dup_candidates`: the links of every file that shares its size with another file (other
//!   than its own hard links), of at least [`crate::reports::DUPLICATE_MIN_SIZE`], computed at
//!   commit: the candidates of the duplicate files report.
//! - `file_hashes`: BLAKE3 hashes of candidates (sampled blocks, then the whole content where
//!   the samples agree), one row per file (device and inode), written by `storage-scan
//!   --hash-duplicates` after the commit, `whole` saying which phase read it. A
//!   `ReplacingMergeTree`: a file hashed again (a batch sent again, the whole content after the
//!   sample, a retry of a file that could not be read) is one row once merged, the last
//!   stored, which holds all that is known of the file (a whole-content row carries its sample);
//!   every reader groups by the file, so the answers are the same before the merge.
//!
//! On a ClickHouse cluster ([`Cluster`]) the same tables are created in `{db}_local` on every
//! shard, and `{db}` holds on every shard a `Distributed` table of the same name over each:
//! every statement that reads or inserts names `{db}.{table}` on either layout. Statements that
//! change parts (`ALTER`, `DROP PARTITION`) go to each shard's local table.

use std::fmt;

/// A ClickHouse database name that is safe to splice into SQL: `[A-Za-z_][A-Za-z0-9_]*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Database(String);

#[derive(Debug, thiserror::Error)]
#[error("invalid database name {0:?}: use letters, digits and '_', not starting with a digit")]
pub struct InvalidDatabaseName(String);

impl Database {
    pub fn new(name: &str) -> Result<Self, InvalidDatabaseName> {
        let mut chars = name.chars();
        let valid_start = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if valid_start && name.len() <= 64 && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidDatabaseName(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Database {
    type Err = InvalidDatabaseName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Database {
    /// The database that holds a cluster's local tables on each shard: `{db}_local`.
    pub fn local(&self) -> Self {
        Self(format!("{}_local", self.0))
    }
}

/// A cluster of the servers' `remote_servers`, its name checked like a database name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cluster(String);

#[derive(Debug, thiserror::Error)]
#[error("invalid cluster name {0:?}: use letters, digits and '_', not starting with a digit")]
pub struct InvalidClusterName(String);

impl Cluster {
    pub fn new(name: &str) -> Result<Self, InvalidClusterName> {
        Database::new(name)
            .map(|db| Self(db.0))
            .map_err(|_| InvalidClusterName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Cluster {
    type Err = InvalidClusterName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `Enum8` of entry kinds; codes match [`crate::EntryKind`].
pub const KIND_ENUM: &str = "Enum8('unknown' = 0, 'file' = 1, 'dir' = 2, 'symlink' = 3, 'fifo' = 4, \
     'socket' = 5, 'block' = 6, 'char' = 7)";

/// The `Enum8` of failed operations; codes match [`crate::ErrorOp`].
pub const ERROR_OP_ENUM: &str =
    "Enum8('none' = 0, 'stat' = 1, 'open' = 2, 'read' = 3, 'readlink' = 4)";

/// The `Enum8` of principal kinds.
pub const PRINCIPAL_ENUM: &str = "Enum8('user' = 1, 'group' = 2)";

/// The `Enum8` of snapshot states.
pub const STATE_ENUM: &str = "Enum8('running' = 1, 'committed' = 2, 'failed' = 3, 'deleted' = 4)";

/// The `Enum8` of histograms; codes match [`crate::reports::Histogram`].
pub const HISTOGRAM_ENUM: &str = "Enum8('size' = 1, 'mtime' = 2, 'atime' = 3)";

/// The version of the database layout this build creates and reads. (The chunks' entry
/// schema has its own version, [`crate::SCHEMA_VERSION`].)
pub const DATABASE_VERSION: u32 = 5;

/// How many of a snapshot's largest entries `large_entries` holds at least (more where sizes
/// tie). A list largest first is read from there when it holds the whole page, else from
/// `entries` under the directory asked (its range of the sort key).
pub const LARGE_ENTRIES: u64 = 131_072;

/// How many levels below the root `top_levels` holds at most: a treemap's deepest (4) from the
/// root.
pub const TOP_LEVELS: u32 = 4;

/// How many entries `top_levels` holds at most: the deepest levels that would take it past
/// this are left out.
pub const TOP_LEVEL_ENTRIES: u64 = 1 << 20;

/// One change of a table's columns. ClickHouse 18.16 has no `IF EXISTS` for columns, so each
/// step is applied only when `system.columns` shows it is still to do: a migration that
/// stopped half way is finished by running it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Adds `column` with `definition` (type and default) unless the table has it.
    AddColumn {
        table: &'static str,
        column: &'static str,
        definition: &'static str,
    },
    /// Drops `column`, and its data, if the table stores it (not when it is an alias).
    DropStoredColumn {
        table: &'static str,
        column: &'static str,
    },
}

impl Step {
    /// A query answering 1 when the step is done, else 0.
    pub fn done_sql(&self, db: &Database) -> String {
        let (table, column, done) = match *self {
            Self::AddColumn { table, column, .. } => (table, column, "count() > 0"),
            Self::DropStoredColumn { table, column } => {
                (table, column, "countIf(default_kind != 'ALIAS') = 0")
            }
        };
        format!(
            "SELECT toUInt8({done}) FROM system.columns \
             WHERE database = '{db}' AND table = '{table}' AND name = '{column}'"
        )
    }

    /// The statement that applies the step.
    pub fn sql(&self, db: &Database) -> String {
        match *self {
            Self::AddColumn {
                table,
                column,
                definition,
            } => format!("ALTER TABLE {db}.{table} ADD COLUMN {column} {definition}"),
            Self::DropStoredColumn { table, column } => {
                format!("ALTER TABLE {db}.{table} DROP COLUMN {column}")
            }
        }
    }
}

/// The `path` column of `entries` and `dir_rollups`: computed from the parent and the name
/// when read ("/" for the root "/", whose parent is itself and whose name is empty).
const PATH_ALIAS: &str =
    "String ALIAS if(parent_path = '/', concat('/', name), concat(parent_path, '/', name))";

/// How to bring a database from one version to the next: the steps that take it from
/// `version - 1` to `version`, for every version after the first. The aggregator applies the
/// missing ones in order at start and records each version in `schema_version`; it refuses a
/// database whose version is newer than its own [`DATABASE_VERSION`].
pub const MIGRATIONS: &[(u32, &[Step])] = &[
    (
        2,
        &[
            // The scan's start to the nanosecond (ages are measured from it), and what it
            // covered.
            Step::AddColumn {
                table: "snapshots",
                column: "started_at_ns",
                definition: "Int64 DEFAULT toInt64(started_at) * 1000000000",
            },
            Step::AddColumn {
                table: "snapshots",
                column: "scan_options",
                definition: "String",
            },
        ],
    ),
    (
        3,
        // A path is stored once: the stored copy of it goes, an alias takes its place.
        &[
            Step::DropStoredColumn {
                table: "entries",
                column: "path",
            },
            Step::AddColumn {
                table: "entries",
                column: "path",
                definition: PATH_ALIAS,
            },
            Step::DropStoredColumn {
                table: "dir_rollups",
                column: "path",
            },
            Step::AddColumn {
                table: "dir_rollups",
                column: "path",
                definition: PATH_ALIAS,
            },
        ],
    ),
    // `large_entries` and `top_levels`, created with the other tables. Snapshots committed before
    // them have no rows there, and are read from `entries`.
    (4, &[]),
    // `dup_candidates` and `file_hashes`, created with the other tables. Snapshots committed
    // before them have no duplicate candidates.
    (5, &[]),
];

/// The version a database is at: the highest recorded.
pub fn schema_version_sql(db: &Database) -> String {
    format!("SELECT max(version) FROM {db}.schema_version")
}

/// Records that the database is at `version`.
pub fn record_schema_version_sql(db: &Database, version: u32) -> String {
    format!("INSERT INTO {db}.schema_version (version, applied_at) VALUES ({version}, now())")
}

/// Statements that create the database and its tables; each is idempotent.
pub fn create_statements(db: &Database) -> Vec<String> {
    let per_snapshot = |table: &str, columns: &str, order: &str| {
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{table} (\n    snapshot_id UInt64,\n{columns}\n) \
             ENGINE = MergeTree PARTITION BY snapshot_id ORDER BY (snapshot_id, {order})"
        )
    };
    let entry_columns = format!(
        "    rank UInt32,
    seq UInt64,
    parent_path String,
    name String,
    path {PATH_ALIAS},
    depth UInt32,
    kind {KIND_ENUM},
    size UInt64,
    allocated UInt64,
    nlink UInt64,
    ino UInt64,
    dev UInt64,
    mode UInt32,
    uid UInt32,
    gid UInt32,
    atime_ns Int64,
    mtime_ns Int64,
    ctime_ns Int64,
    btime_ns Nullable(Int64),
    symlink_target String,
    error_op {ERROR_OP_ENUM},
    errno Int32"
    );
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        // One row per schema version the database was brought to (see [`MIGRATIONS`]).
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.schema_version (version UInt32, applied_at DateTime) \
             ENGINE = MergeTree ORDER BY version"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.snapshots (
    snapshot_id UInt64,
    version UInt64,
    state {STATE_ENUM},
    scan_id String,
    filesystem_label String,
    root_path String,
    hosts Array(String),
    ranks UInt32,
    scanner_version String,
    schema_version UInt32,
    started_at DateTime,
    finished_at DateTime,
    entries UInt64,
    errors UInt64,
    apparent_bytes UInt64,
    directories UInt64,
    commit_seconds Float64,
    message String,
    started_at_ns Int64,
    scan_options String
) ENGINE = ReplacingMergeTree(version) ORDER BY snapshot_id"
        ),
        per_snapshot("entries", &entry_columns, "parent_path, name"),
        // The same columns as `entries`, for the rows of the largest files only.
        per_snapshot("large_entries", &entry_columns, "parent_path, name"),
        per_snapshot("top_levels", &entry_columns, "parent_path, name"),
        // Recursive totals include the directory itself; direct ones count its children only.
        // Allocated bytes count a hard-linked file once per directory, however many links it
        // has below it.
        per_snapshot(
            "dir_rollups",
            &format!(
                "    parent_path String,
    name String,
    path {PATH_ALIAS},
    depth UInt32,
    uid UInt32,
    gid UInt32,
    mtime_ns Int64,
    atime_ns Int64,
    bytes UInt64,
    allocated UInt64,
    entries UInt64,
    files UInt64,
    dirs UInt64,
    max_mtime_ns Int64,
    max_atime_ns Int64,
    direct_bytes UInt64,
    direct_allocated UInt64,
    direct_entries UInt64,
    direct_files UInt64,
    direct_dirs UInt64"
            ),
            "parent_path, name",
        ),
        // `top` is the name of the top-level directory below the root ('' for the root entry);
        // the snapshot's totals per owner are the sums over `top`.
        per_snapshot(
            "owner_usage",
            &format!(
                "    principal {PRINCIPAL_ENUM},
    id UInt32,
    top String,
    entries UInt64,
    files UInt64,
    dirs UInt64,
    bytes UInt64,
    allocated UInt64,
    max_mtime_ns Int64,
    max_atime_ns Int64"
            ),
            "principal, id, top",
        ),
        per_snapshot(
            "type_usage",
            "    extension String,
    files UInt64,
    bytes UInt64,
    allocated UInt64",
            "extension",
        ),
        per_snapshot(
            "histograms",
            &format!(
                "    histogram {HISTOGRAM_ENUM},
    bucket UInt8,
    files UInt64,
    bytes UInt64,
    allocated UInt64"
            ),
            "histogram, bucket",
        ),
        per_snapshot(
            "principals",
            &format!(
                "    kind {PRINCIPAL_ENUM},
    id UInt32,
    name String"
            ),
            "kind, id",
        ),
        per_snapshot(
            "dup_candidates",
            "    size UInt64,
    dev UInt64,
    ino UInt64,
    parent_path String,
    name String,
    uid UInt32,
    gid UInt32,
    allocated UInt64,
    mtime_ns Int64",
            "size, dev, ino, parent_path, name",
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.file_hashes (
    snapshot_id UInt64,
    dev UInt64,
    ino UInt64,
    size UInt64,
    sample String,
    full String,
    error String,
    rank UInt32,
    hashed_at DateTime,
    whole UInt8
) ENGINE = ReplacingMergeTree PARTITION BY snapshot_id ORDER BY (snapshot_id, dev, ino)"
        ),
    ]
}

/// Every table of the database, in the order [`create_statements`] creates them.
pub const TABLES: [&str; 12] = [
    "schema_version",
    "snapshots",
    "entries",
    "large_entries",
    "top_levels",
    "dir_rollups",
    "owner_usage",
    "type_usage",
    "histograms",
    "principals",
    "dup_candidates",
    "file_hashes",
];

/// Which shard of a cluster holds a row of `table`. The entries of one directory (and the
/// rollups of its subdirectories) lie on one shard, so a group by parent directory merges
/// nothing across shards; a snapshot's record, every version of it, lies on one shard, so
/// `FINAL` sees them together. One huge directory lies on one shard too.
pub fn sharding_key(table: &str) -> &'static str {
    match table {
        "entries" | "large_entries" | "top_levels" | "dir_rollups" => "cityHash64(parent_path)",
        "schema_version" => "version",
        _ => "snapshot_id",
    }
}

/// Statements that create, on one shard of `cluster`, the database of `Distributed` tables
/// over the local ones (which [`create_statements`] of [`Database::local`] makes first, on the
/// same shard); each is idempotent.
pub fn create_distributed_statements(db: &Database, cluster: &Cluster) -> Vec<String> {
    let local = db.local();
    std::iter::once(format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .chain(TABLES.iter().map(|table| {
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{table} AS {local}.{table} \
                 ENGINE = Distributed({cluster}, {local}, {table}, {})",
                sharding_key(table)
            )
        }))
        .collect()
}

/// Tables whose rows belong to one snapshot partition (everything but `snapshots`).
pub const SNAPSHOT_PARTITIONED_TABLES: [&str; 10] = [
    "entries",
    "large_entries",
    "top_levels",
    "dir_rollups",
    "owner_usage",
    "type_usage",
    "histograms",
    "principals",
    "dup_candidates",
    "file_hashes",
];

/// The reports computed from `entries` at commit: dropped and computed again if a commit is
/// retried. (`principals` is filled at commit too, from the ids the snapshot holds.)
pub const REPORT_TABLES: [&str; 7] = [
    "dir_rollups",
    "owner_usage",
    "type_usage",
    "histograms",
    "large_entries",
    "top_levels",
    "dup_candidates",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_validated() {
        for ok in ["storage_tracker", "_x", "db2"] {
            assert!(Database::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "2db", "a-b", "a.b", "a b", "x`;DROP", "ä"] {
            assert!(Database::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn statements_name_the_database() {
        let db = Database::new("st_test").unwrap();
        let stmts = create_statements(&db);
        assert!(stmts.iter().all(|s| s.contains("st_test")));
        // The database, schema_version, snapshots, and the per-snapshot tables.
        assert_eq!(stmts.len(), 3 + SNAPSHOT_PARTITIONED_TABLES.len());
        assert!(stmts[1].contains(&format!("{db}.schema_version (")));
        for table in SNAPSHOT_PARTITIONED_TABLES {
            assert!(stmts.iter().any(|s| s.contains(&format!("{db}.{table} ("))));
        }
        for (table, stmt) in TABLES.iter().zip(&stmts[1..]) {
            assert!(stmt.contains(&format!("{db}.{table} (")), "{table}");
        }
    }

    #[test]
    fn a_cluster_has_a_distributed_table_over_each_local_one() {
        let db = Database::new("st").unwrap();
        let cluster = Cluster::new("two_shards").unwrap();
        let stmts = create_distributed_statements(&db, &cluster);
        assert_eq!(stmts[0], "CREATE DATABASE IF NOT EXISTS st");
        assert_eq!(
            stmts[3],
            "CREATE TABLE IF NOT EXISTS st.entries AS st_local.entries \
             ENGINE = Distributed(two_shards, st_local, entries, cityHash64(parent_path))"
        );
        assert_eq!(stmts.len(), 1 + TABLES.len());
        assert!(Cluster::new("a-b").is_err());
    }
}
