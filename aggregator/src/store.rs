//! The aggregator's ClickHouse side: schema, chunk inserts, verification, rollups, commit.
//!
//! Rows are inserted as RowBinary, built straight from the chunk's Arrow columns without
//! copying a path. A snapshot's rows live in their own partition of each table, so a failed
//! snapshot is dropped whole, and a query sees a snapshot only once `snapshots` says committed.

use std::time::{SystemTime, UNIX_EPOCH};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt8Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use storage_tracker_proto::ddl::{self, Database};
use storage_tracker_proto::entry::col;
use storage_tracker_proto::sql::{below_prefix, quote_bytes};
use storage_tracker_proto::v1::Principal;
use storage_tracker_proto::{EntryKind, ErrorOp};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ClickHouse at {url}: {source}")]
    ClickHouse {
        url: String,
        source: clickhouse::error::Error,
    },
    #[error(
        "row {row} of the chunk has kind code {code}, which schema version {} does not define",
        storage_tracker_proto::SCHEMA_VERSION
    )]
    BadKind { row: usize, code: u8 },
    #[error(
        "row {row} of the chunk has error code {code}, which schema version {} does not define",
        storage_tracker_proto::SCHEMA_VERSION
    )]
    BadErrorOp { row: usize, code: u8 },
}

/// Where and as whom the aggregator writes.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: Database,
}

/// One row of `entries`, borrowing its byte strings from the chunk.
#[derive(Debug, Row, Serialize)]
struct EntryRecord<'a> {
    snapshot_id: u64,
    rank: u32,
    seq: u64,
    #[serde(with = "serde_bytes")]
    path: &'a [u8],
    #[serde(with = "serde_bytes")]
    parent_path: &'a [u8],
    #[serde(with = "serde_bytes")]
    name: &'a [u8],
    depth: u32,
    kind: i8,
    size: u64,
    allocated: u64,
    nlink: u64,
    ino: u64,
    dev: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    atime_ns: i64,
    mtime_ns: i64,
    ctime_ns: i64,
    btime_ns: Option<i64>,
    #[serde(with = "serde_bytes")]
    symlink_target: &'a [u8],
    error_op: i8,
    errno: i32,
}

#[derive(Debug, Row, Serialize)]
struct ChunkRecord {
    snapshot_id: u64,
    rank: u32,
    seq: u64,
    rows: u64,
    parquet_bytes: u64,
    stored_at: u32,
}

#[derive(Debug, Row, Serialize)]
struct PrincipalRecord<'a> {
    snapshot_id: u64,
    /// 1 user, 2 group (the `Enum8` codes).
    kind: i8,
    id: u32,
    name: &'a str,
}

/// One row of `snapshots`: a state change. The highest `version` is the current state.
#[derive(Debug, Clone, Row, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub snapshot_id: u64,
    pub version: u64,
    /// 1 running, 2 committed, 3 failed (the `Enum8` codes).
    pub state: i8,
    pub filesystem_label: String,
    #[serde(with = "serde_bytes")]
    pub root_path: Vec<u8>,
    pub hosts: Vec<String>,
    pub ranks: u32,
    pub scanner_version: String,
    pub schema_version: u32,
    pub started_at: u32,
    pub finished_at: u32,
    pub entries: u64,
    pub errors: u64,
    pub apparent_bytes: u64,
    pub message: String,
}

pub const STATE_RUNNING: i8 = 1;
pub const STATE_COMMITTED: i8 = 2;
pub const STATE_FAILED: i8 = 3;

pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The rows a snapshot holds per rank, as stored.
#[derive(Debug, Row, Deserialize)]
pub struct RankCount {
    pub rank: u32,
    pub rows: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    config: StoreConfig,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        let client = Client::default()
            .with_url(&config.url)
            .with_user(&config.user)
            .with_password(&config.password)
            // Validation needs RowBinaryWithNamesAndTypes, which ClickHouse 18.16 lacks.
            .with_validation(false);
        Self { client, config }
    }

    pub fn database(&self) -> &Database {
        &self.config.database
    }

    fn err(&self) -> impl Fn(clickhouse::error::Error) -> StoreError + '_ {
        |source| StoreError::ClickHouse {
            url: self.config.url.clone(),
            source,
        }
    }

    async fn execute(&self, sql: &str) -> Result<(), StoreError> {
        self.client.query(sql).execute().await.map_err(self.err())
    }

    /// Creates the database and tables where missing.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        for statement in ddl::create_statements(&self.config.database) {
            self.execute(&statement).await?;
        }
        Ok(())
    }

    /// The next unused snapshot id (ids start at 1).
    pub async fn next_snapshot_id(&self) -> Result<u64, StoreError> {
        let db = &self.config.database;
        let max: u64 = self
            .client
            .query(&format!("SELECT max(snapshot_id) FROM {db}.snapshots"))
            .fetch_one()
            .await
            .map_err(self.err())?;
        Ok(max + 1)
    }

    pub async fn record_snapshot(&self, record: &SnapshotRecord) -> Result<(), StoreError> {
        let client = self
            .client
            .clone()
            .with_database(self.config.database.as_str());
        let mut insert = client
            .insert::<SnapshotRecord>("snapshots")
            .await
            .map_err(self.err())?;
        insert.write(record).await.map_err(self.err())?;
        insert.end().await.map_err(self.err())
    }

    /// Inserts one chunk's rows, then records the chunk. Returns once both are stored.
    pub async fn insert_chunk(
        &self,
        snapshot_id: u64,
        rank: u32,
        seq: u64,
        batch: &RecordBatch,
        parquet_bytes: u64,
    ) -> Result<(), StoreError> {
        let client = self
            .client
            .clone()
            .with_database(self.config.database.as_str());
        let columns = EntryColumns::of(batch);
        // Check every row before the INSERT starts, so a bad row cannot leave part of a chunk.
        columns.validate()?;
        let mut insert = client
            .insert::<EntryRecord<'static>>("entries")
            .await
            .map_err(self.err())?;
        for row in 0..batch.num_rows() {
            let record = columns.record(snapshot_id, rank, seq, row);
            insert.write(&record).await.map_err(self.err())?;
        }
        insert.end().await.map_err(self.err())?;

        let mut insert = client
            .insert::<ChunkRecord>("chunks")
            .await
            .map_err(self.err())?;
        let record = ChunkRecord {
            snapshot_id,
            rank,
            seq,
            rows: batch.num_rows() as u64,
            parquet_bytes,
            stored_at: unix_now(),
        };
        insert.write(&record).await.map_err(self.err())?;
        insert.end().await.map_err(self.err())
    }

    /// Stores the names of a snapshot's uids and gids.
    pub async fn insert_principals(
        &self,
        snapshot_id: u64,
        users: &[Principal],
        groups: &[Principal],
    ) -> Result<(), StoreError> {
        if users.is_empty() && groups.is_empty() {
            return Ok(());
        }
        let client = self
            .client
            .clone()
            .with_database(self.config.database.as_str());
        let mut insert = client
            .insert::<PrincipalRecord<'static>>("principals")
            .await
            .map_err(self.err())?;
        for (kind, list) in [(1, users), (2, groups)] {
            for p in list {
                insert
                    .write(&PrincipalRecord {
                        snapshot_id,
                        kind,
                        id: p.id,
                        name: &p.name,
                    })
                    .await
                    .map_err(self.err())?;
            }
        }
        insert.end().await.map_err(self.err())
    }

    pub async fn rows_per_rank(&self, snapshot_id: u64) -> Result<Vec<RankCount>, StoreError> {
        let db = &self.config.database;
        self.client
            .query(&format!("SELECT rank, count() AS rows FROM {db}.entries WHERE snapshot_id = {snapshot_id} GROUP BY rank ORDER BY rank"))
            .fetch_all()
            .await
            .map_err(self.err())
    }

    /// Computes the recursive totals of every directory of a snapshot, in ClickHouse.
    ///
    /// Two stages keep it fast: entries are first summed per parent directory (one group per
    /// directory), and only those sums are spread to every ancestor, so the expansion is over
    /// directories, not entries. Returns the number of directories.
    pub async fn compute_rollups(&self, snapshot_id: u64, root: &[u8]) -> Result<u64, StoreError> {
        self.execute(&rollup_sql(&self.config.database, snapshot_id, root))
            .await?;
        let db = &self.config.database;
        self.client
            .query(&format!(
                "SELECT count() FROM {db}.dir_rollups WHERE snapshot_id = {snapshot_id}"
            ))
            .fetch_one()
            .await
            .map_err(self.err())
    }

    /// Drops every row of a snapshot from the partitioned tables.
    pub async fn drop_snapshot_rows(&self, snapshot_id: u64) -> Result<(), StoreError> {
        let db = &self.config.database;
        for table in ddl::SNAPSHOT_PARTITIONED_TABLES {
            self.execute(&format!(
                "ALTER TABLE {db}.{table} DROP PARTITION {snapshot_id}"
            ))
            .await?;
        }
        Ok(())
    }
}

/// The SQL that fills `dir_rollups` for one snapshot rooted at `root`.
pub fn rollup_sql(db: &Database, snapshot_id: u64, root: &[u8]) -> String {
    let root_lit = quote_bytes(root);
    let below_lit = quote_bytes(&below_prefix(root));
    // Every directory containing an entry whose parent is `parent_path`: the parent and all its
    // ancestors ("/" included), e.g. "/a/b" -> ["/", "/a", "/a/b"].
    let ancestors = "if(parent_path = '/', ['/'], arrayPushFront(arrayMap(i -> arrayStringConcat(arraySlice(splitByChar('/', parent_path), 1, i), '/'), arraySlice(arrayEnumerate(splitByChar('/', parent_path)), 2)), '/'))";
    format!(
        "INSERT INTO {db}.dir_rollups (snapshot_id, path, parent_path, name, depth, bytes, allocated, entries, files, dirs, max_mtime_ns, max_atime_ns)
SELECT
    {snapshot_id}, path, parent_path, name, depth,
    own_size + below_bytes, own_allocated + below_allocated, below_entries, below_files, below_dirs,
    if(below_entries = 0, own_mtime, greatest(own_mtime, below_mtime)),
    if(below_entries = 0, own_atime, greatest(own_atime, below_atime))
FROM
(
    SELECT path, parent_path, name, depth, size AS own_size, allocated AS own_allocated, mtime_ns AS own_mtime, atime_ns AS own_atime
    FROM {db}.entries
    WHERE snapshot_id = {snapshot_id} AND kind = 'dir'
) AS d
ANY LEFT JOIN
(
    SELECT dir AS path, sum(b) AS below_bytes, sum(a) AS below_allocated, sum(n) AS below_entries,
        sum(f) AS below_files, sum(dd) AS below_dirs, max(mt) AS below_mtime, max(at) AS below_atime
    FROM
    (
        SELECT parent_path, sum(size) AS b, sum(allocated) AS a, count() AS n,
            countIf(kind = 'file') AS f, countIf(kind = 'dir') AS dd, max(mtime_ns) AS mt, max(atime_ns) AS at
        FROM {db}.entries
        WHERE snapshot_id = {snapshot_id} AND path != {root_lit}
        GROUP BY parent_path
    ) AS g
    ARRAY JOIN {ancestors} AS dir
    WHERE dir = {root_lit} OR startsWith(dir, {below_lit})
    GROUP BY dir
) AS below USING path"
    )
}

/// Typed views of a chunk's columns (the chunk was validated against the entry schema).
struct EntryColumns<'a> {
    path: &'a arrow_array::BinaryArray,
    parent: &'a arrow_array::BinaryArray,
    name: &'a arrow_array::BinaryArray,
    depth: &'a arrow_array::UInt32Array,
    kind: &'a arrow_array::UInt8Array,
    size: &'a arrow_array::UInt64Array,
    allocated: &'a arrow_array::UInt64Array,
    nlink: &'a arrow_array::UInt64Array,
    ino: &'a arrow_array::UInt64Array,
    dev: &'a arrow_array::UInt64Array,
    mode: &'a arrow_array::UInt32Array,
    uid: &'a arrow_array::UInt32Array,
    gid: &'a arrow_array::UInt32Array,
    atime: &'a arrow_array::Int64Array,
    mtime: &'a arrow_array::Int64Array,
    ctime: &'a arrow_array::Int64Array,
    btime: &'a arrow_array::Int64Array,
    target: &'a arrow_array::BinaryArray,
    error_op: &'a arrow_array::UInt8Array,
    errno: &'a arrow_array::Int32Array,
}

impl<'a> EntryColumns<'a> {
    fn of(batch: &'a RecordBatch) -> Self {
        let c = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap_or_else(|| panic!("validated chunk has column {name}"))
        };
        Self {
            path: c(col::PATH).as_binary(),
            parent: c(col::PARENT).as_binary(),
            name: c(col::NAME).as_binary(),
            depth: c(col::DEPTH).as_primitive::<UInt32Type>(),
            kind: c(col::KIND).as_primitive::<UInt8Type>(),
            size: c(col::SIZE).as_primitive::<UInt64Type>(),
            allocated: c(col::ALLOCATED).as_primitive::<UInt64Type>(),
            nlink: c(col::NLINK).as_primitive::<UInt64Type>(),
            ino: c(col::INO).as_primitive::<UInt64Type>(),
            dev: c(col::DEV).as_primitive::<UInt64Type>(),
            mode: c(col::MODE).as_primitive::<UInt32Type>(),
            uid: c(col::UID).as_primitive::<UInt32Type>(),
            gid: c(col::GID).as_primitive::<UInt32Type>(),
            atime: c(col::ATIME_NS).as_primitive::<Int64Type>(),
            mtime: c(col::MTIME_NS).as_primitive::<Int64Type>(),
            ctime: c(col::CTIME_NS).as_primitive::<Int64Type>(),
            btime: c(col::BTIME_NS).as_primitive::<Int64Type>(),
            target: c(col::SYMLINK_TARGET).as_binary(),
            error_op: c(col::ERROR_OP).as_primitive::<UInt8Type>(),
            errno: c(col::ERRNO).as_primitive::<Int32Type>(),
        }
    }

    /// Enum codes the schema does not define would be stored as garbage: refuse them.
    fn validate(&self) -> Result<(), StoreError> {
        if let Some((row, code)) = self
            .kind
            .values()
            .iter()
            .enumerate()
            .find(|(_, c)| EntryKind::from_code(**c).is_none())
        {
            return Err(StoreError::BadKind { row, code: *code });
        }
        if let Some((row, code)) = self
            .error_op
            .values()
            .iter()
            .enumerate()
            .find(|(_, c)| ErrorOp::from_code(**c).is_none())
        {
            return Err(StoreError::BadErrorOp { row, code: *code });
        }
        Ok(())
    }

    fn record(&self, snapshot_id: u64, rank: u32, seq: u64, row: usize) -> EntryRecord<'a> {
        EntryRecord {
            snapshot_id,
            rank,
            seq,
            path: self.path.value(row),
            parent_path: self.parent.value(row),
            name: self.name.value(row),
            depth: self.depth.value(row),
            kind: self.kind.value(row) as i8,
            size: self.size.value(row),
            allocated: self.allocated.value(row),
            nlink: self.nlink.value(row),
            ino: self.ino.value(row),
            dev: self.dev.value(row),
            mode: self.mode.value(row),
            uid: self.uid.value(row),
            gid: self.gid.value(row),
            atime_ns: self.atime.value(row),
            mtime_ns: self.mtime.value(row),
            ctime_ns: self.ctime.value(row),
            btime_ns: self.btime.is_valid(row).then(|| self.btime.value(row)),
            symlink_target: self.target.value(row),
            error_op: self.error_op.value(row) as i8,
            errno: self.errno.value(row),
        }
    }
}
