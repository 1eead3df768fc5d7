//! The aggregator's ClickHouse side: schema, chunk inserts, verification, reports, commit.
//!
//! Rows are inserted as RowBinary, built straight from the chunk's Arrow columns without
//! copying a path. Chunks go in INSERTs that ClickHouse takes as one block each, so each is
//! stored whole or not at all; their rows carry (rank, seq), so what landed can be counted when
//! an insert's outcome is unknown. A snapshot's rows live in their own partition of each table,
//! so a failed snapshot is dropped whole, and a query sees a snapshot only once `snapshots`
//! says committed.
//!
//! On a ClickHouse cluster (`StoreConfig::cluster`) every statement that reads or inserts goes
//! to one server, through the `Distributed` tables of the database; a statement that changes
//! parts (a mutation, a dropped partition, the schema) goes to every shard's local tables.

use arrow_array::RecordBatch;
use clickhouse::{Client, Row};
use serde::{Deserialize, Serialize};

use storage_tracker_proto::ddl::{self, Cluster, Database};
use storage_tracker_proto::v1::Principal;
use storage_tracker_proto::{AllocatedBytes, ApparentBytes, EntryColumns, RowError, SnapshotId};

use crate::snapshot::SnapshotRecord;
use crate::sql;
use storage_tracker_proto::sql::quote_str;

mod duplicates;
pub use duplicates::CandidateQuery;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ClickHouse at {url}: {source}")]
    ClickHouse {
        url: String,
        source: clickhouse::error::Error,
    },
    /// A chunk's rows are not entry rows: an enum code the schema does not define, say.
    #[error(transparent)]
    Rows(#[from] RowError),
    #[error("{0}")]
    Export(#[from] storage_tracker_proto::ncdu::NcduError),
    #[error(
        "the database is at schema version {database}, newer than this aggregator's ({ours}): \
         upgrade storage-tracker, or point it at another database"
    )]
    NewerSchema { database: u32, ours: u32 },
    /// The cluster or the database is not laid out as the options say: the shards given are
    /// not the cluster's, or the database was made for one server and is opened as on a
    /// cluster (or the other way round).
    #[error("{0}")]
    Layout(String),
    #[error(
        "ClickHouse at {url} has no database {database}: check --database \
         (STORAGE_TRACKER_DATABASE); only `storage-aggregator serve` and `import` create one"
    )]
    NoDatabase { url: String, database: String },
}

impl StoreError {
    /// Whether ClickHouse could not be reached or did not answer in time (as opposed to
    /// answering with an error); on a cluster, also when the server asked could not reach a
    /// shard.
    pub fn is_transient(&self) -> bool {
        use clickhouse::error::Error;
        match self {
            Self::ClickHouse { source, .. } => match source {
                Error::Network(_) | Error::TimedOut => true,
                Error::BadResponse(answer) => match exception_code(answer) {
                    Some(code) if SHARD_UNREACHABLE.contains(&code) => true,
                    Some(READ_AFTER_EOF) => answer.contains("while receiving packet from"),
                    _ => false,
                },
                _ => false,
            },
            _ => false,
        }
    }
}

/// ClickHouse's exception codes for a server it could not reach (another server of a cluster):
/// SOCKET_TIMEOUT, NETWORK_ERROR, ALL_CONNECTION_TRIES_FAILED.
const SHARD_UNREACHABLE: [u32; 3] = [209, 210, 279];

/// ATTEMPT_TO_READ_AFTER_EOF, which is a server gone away in the middle of an answer when it
/// is said "while receiving packet from" it (and a damaged file, to be refused, otherwise).
const READ_AFTER_EOF: u32 = 32;

/// The code of a ClickHouse exception: "Code: 279, e.displayText() = ..." (18.16) or
/// "Code: 279. DB::Exception: ..." (current releases).
fn exception_code(answer: &str) -> Option<u32> {
    let rest = answer.trim_start().strip_prefix("Code: ")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

/// Where and as whom the aggregator writes.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: Database,
    /// The shards the database lives on, if it lives on a cluster.
    pub cluster: Option<ClusterConfig>,
}

/// A ClickHouse cluster of the servers' `remote_servers`, and how to reach each of its shards.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: Cluster,
    /// The HTTP URL of one server of each shard (the order does not matter).
    pub shards: Vec<String>,
}

/// A server and the database on it that holds tables' parts: the one server, or a shard and
/// its local database.
#[derive(Debug, Clone)]
struct PartHolder {
    url: String,
    client: Client,
    database: Database,
}

/// One row of `entries`, borrowing its byte strings from the chunk. The snapshot id and the
/// two sizes are serialized as the bare `UInt64`s they are stored as. The path is not sent:
/// `entries` computes it from the parent and the name (the chunk's rows were checked to agree).
#[derive(Debug, Row, Serialize)]
struct EntryRecord<'a> {
    snapshot_id: SnapshotId,
    rank: u32,
    seq: u64,
    #[serde(with = "serde_bytes")]
    parent_path: &'a [u8],
    #[serde(with = "serde_bytes")]
    name: &'a [u8],
    depth: u32,
    kind: i8,
    size: ApparentBytes,
    allocated: AllocatedBytes,
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
struct PrincipalRecord<'a> {
    snapshot_id: SnapshotId,
    /// 1 user, 2 group (the `Enum8` codes).
    kind: i8,
    id: u32,
    name: &'a str,
}

/// The rows a snapshot holds per chunk, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Row, Deserialize)]
pub struct ChunkCount {
    pub rank: u32,
    pub seq: u64,
    pub rows: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    config: StoreConfig,
    /// Where the parts are; one per shard on a cluster.
    holders: Vec<PartHolder>,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        let connect = |url: &str| {
            Client::default()
                .with_url(url)
                .with_user(&config.user)
                .with_password(&config.password)
                // Validation needs RowBinaryWithNamesAndTypes, which ClickHouse 18.16 lacks.
                .with_validation(false)
        };
        let mut client = connect(&config.url);
        let holders = match &config.cluster {
            None => vec![PartHolder {
                url: config.url.clone(),
                client: client.clone(),
                database: config.database.clone(),
            }],
            Some(cluster) => {
                // An insert returns once every shard has stored its rows (what is acknowledged
                // is stored); a subquery over another distributed table runs once, on this
                // server, its result sent to the shards.
                client = client
                    .with_setting("insert_distributed_sync", "1")
                    .with_setting("distributed_product_mode", "global");
                cluster
                    .shards
                    .iter()
                    .map(|url| PartHolder {
                        url: url.clone(),
                        client: connect(url),
                        database: config.database.local(),
                    })
                    .collect()
            }
        };
        Self {
            client,
            config,
            holders,
        }
    }

    pub fn database(&self) -> &Database {
        &self.config.database
    }

    fn err(&self) -> impl Fn(clickhouse::error::Error) -> StoreError + '_ {
        error_at(&self.config.url)
    }

    async fn execute(&self, sql: &str) -> Result<(), StoreError> {
        self.client.query(sql).execute().await.map_err(self.err())
    }

    /// Whether the database exists.
    pub async fn database_exists(&self) -> Result<bool, StoreError> {
        let n: u64 = self
            .client
            .query(&format!(
                "SELECT count() FROM system.databases WHERE name = {}",
                quote_str(self.config.database.as_str())
            ))
            .fetch_one()
            .await
            .map_err(self.err())?;
        Ok(n > 0)
    }

    /// For the commands that only read or change what is stored: the database must exist
    /// (a mistyped `--database` is an error, not a new empty database); its schema is then
    /// brought up to date as [`Self::migrate`] does.
    pub async fn open_existing(&self) -> Result<(), StoreError> {
        // A server outside the cluster has no database: say what is wrong with it instead.
        if let Some(cluster) = &self.config.cluster {
            self.check_cluster(&cluster.name).await?;
        }
        if !self.database_exists().await? {
            return Err(StoreError::NoDatabase {
                url: self.config.url.clone(),
                database: self.config.database.to_string(),
            });
        }
        self.migrate().await
    }

    /// Creates the database and tables where missing, and brings an older layout up to
    /// date: each step of [`ddl::MIGRATIONS`] after the recorded version that is still to do.
    /// On a cluster, first checks that the shards are the cluster's, then does the same on each
    /// shard, to its local tables and to the distributed ones over them.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let db = &self.config.database;
        // Each server and database whose tables' columns a migration changes.
        let mut schemas: Vec<(PartHolder, Database)> = Vec::new();
        match &self.config.cluster {
            None => {
                self.check_layout().await?;
                for statement in ddl::create_statements(db) {
                    self.execute(&statement).await?;
                }
                schemas.push((self.holders[0].clone(), db.clone()));
            }
            Some(cluster) => {
                self.check_cluster(&cluster.name).await?;
                self.check_layout().await?;
                // Every shard given, and the server written to (a server of one of them, where
                // this changes nothing when it is the one given).
                let written_to = PartHolder {
                    url: self.config.url.clone(),
                    client: self.client.clone(),
                    database: db.local(),
                };
                for server in self.holders.iter().chain([&written_to]) {
                    let local = ddl::create_statements(&server.database);
                    for statement in local
                        .iter()
                        .chain(&ddl::create_distributed_statements(db, &cluster.name))
                    {
                        server.execute(statement).await?;
                    }
                    schemas.push((server.clone(), server.database.clone()));
                    schemas.push((server.clone(), db.clone()));
                }
            }
        }
        // 0: a new database, or one from before versions were recorded; either way each step
        // looks at the columns themselves.
        let at: u32 = self
            .client
            .query(&ddl::schema_version_sql(db))
            .fetch_one()
            .await
            .map_err(self.err())?;
        let ours = ddl::DATABASE_VERSION;
        if at > ours {
            return Err(StoreError::NewerSchema { database: at, ours });
        }
        if at == ours {
            return Ok(());
        }
        // The version is recorded once every step is done: steps left undone by an
        // interruption are found and done at the next start.
        for &(version, steps) in ddl::MIGRATIONS {
            if version <= at || version > ours {
                continue;
            }
            for step in steps {
                for (server, database) in &schemas {
                    let done: u8 = server
                        .client
                        .query(&step.done_sql(database))
                        .fetch_one()
                        .await
                        .map_err(error_at(&server.url))?;
                    if done == 0 {
                        tracing::info!(
                            from = at,
                            to = version,
                            url = server.url,
                            %database,
                            "upgrading the database: {step:?}"
                        );
                        server.execute(&step.sql(database)).await?;
                    }
                }
            }
        }
        self.execute(&ddl::record_schema_version_sql(db, ours))
            .await
    }

    /// Checks that an existing database is laid out as the options say: distributed tables on
    /// a cluster, tables of one server otherwise.
    async fn check_layout(&self) -> Result<(), StoreError> {
        let db = &self.config.database;
        if self.config.cluster.is_some() && db.as_str().ends_with("_local") {
            return Err(StoreError::Layout(format!(
                "the database name {db} ends in _local, as the shards' databases of local \
                 tables do ({} would hold its tables): give another --database",
                db.local()
            )));
        }
        let engines: Vec<String> = self
            .client
            .query(&format!(
                "SELECT engine FROM system.tables WHERE database = {} AND name = 'entries'",
                quote_str(db.as_str())
            ))
            .fetch_all()
            .await
            .map_err(self.err())?;
        let url = &self.config.url;
        match (&self.config.cluster, engines.first().map(String::as_str)) {
            (Some(cluster), Some(engine)) if engine != "Distributed" => {
                Err(StoreError::Layout(format!(
                    "the database {db} at {url} was made for one server (its tables are \
                     {engine}, not distributed over cluster {}): open it without \
                     --clickhouse-cluster and --clickhouse-shard, or give another --database",
                    cluster.name
                )))
            }
            (None, Some("Distributed")) => Err(StoreError::Layout(format!(
                "the database {db} at {url} lives on a ClickHouse cluster (its tables are \
                 distributed): give --clickhouse-cluster and --clickhouse-shard \
                 (STORAGE_TRACKER_CLICKHOUSE_CLUSTER, STORAGE_TRACKER_CLICKHOUSE_SHARDS)"
            ))),
            _ => Ok(()),
        }
    }

    /// Checks that the cluster is defined on the server written to and, the same, on every
    /// shard given; that the server written to is one of its servers; and that the shards given
    /// are its shards, each once.
    async fn check_cluster(&self, cluster: &Cluster) -> Result<(), StoreError> {
        /// A server of the cluster as one server's system.clusters has it.
        #[derive(Debug, PartialEq, Eq, Row, Deserialize)]
        struct Member {
            shard_num: u32,
            replica_num: u32,
            host_name: String,
            port: u16,
            is_local: u8,
        }
        let sql = format!(
            "SELECT shard_num, replica_num, host_name, port, is_local FROM system.clusters \
             WHERE cluster = {} ORDER BY shard_num, replica_num",
            quote_str(cluster.as_str())
        );
        let members = |url: &str, client: &Client| {
            let (url, client, sql) = (url.to_owned(), client.clone(), sql.clone());
            async move {
                client
                    .query(&sql)
                    .fetch_all::<Member>()
                    .await
                    .map_err(error_at(&url))
            }
        };
        let definition = |m: &[Member]| -> Vec<(u32, u32, String, u16)> {
            m.iter()
                .map(|m| (m.shard_num, m.replica_num, m.host_name.clone(), m.port))
                .collect()
        };
        // The shard a server holds, by its own system.clusters.
        let own_shard = |m: &[Member]| -> Option<u32> {
            let mut own = m.iter().filter(|m| m.is_local == 1).map(|m| m.shard_num);
            let first = own.next()?;
            own.all(|n| n == first).then_some(first)
        };
        let url = &self.config.url;
        let written_to = members(url, &self.client).await?;
        if written_to.is_empty() {
            return Err(StoreError::Layout(format!(
                "ClickHouse at {url} has no cluster {cluster} in system.clusters: check \
                 --clickhouse-cluster and the server's remote_servers"
            )));
        }
        let shards = written_to
            .iter()
            .map(|m| m.shard_num)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let given = self.holders.len();
        let fix = "give one --clickhouse-shard per shard of the cluster (see its remote_servers)";
        if shards != given {
            return Err(StoreError::Layout(format!(
                "cluster {cluster} has {shards} shards and {given} were given: {fix}"
            )));
        }
        if own_shard(&written_to).is_none() {
            return Err(StoreError::Layout(format!(
                "ClickHouse at {url} is not a server of cluster {cluster} by its own \
                 system.clusters: give as --clickhouse-url a server of the cluster"
            )));
        }
        let mut seen = std::collections::BTreeMap::new();
        for shard in &self.holders {
            let theirs = members(&shard.url, &shard.client).await?;
            if definition(&theirs) != definition(&written_to) {
                return Err(StoreError::Layout(format!(
                    "ClickHouse at {} defines cluster {cluster} otherwise than {url} does \
                     (system.clusters, from remote_servers): {:?} there, {:?} here; give every \
                     server of the cluster the same remote_servers",
                    shard.url,
                    definition(&theirs),
                    definition(&written_to)
                )));
            }
            let Some(num) = own_shard(&theirs) else {
                return Err(StoreError::Layout(format!(
                    "ClickHouse at {} is not a server of cluster {cluster} by its own \
                     system.clusters: {fix}",
                    shard.url
                )));
            };
            if let Some(other) = seen.insert(num, &shard.url) {
                return Err(StoreError::Layout(format!(
                    "{other} and {} are both servers of shard {num} of cluster {cluster}: {fix}",
                    shard.url
                )));
            }
        }
        Ok(())
    }

    /// The schema version the database is at (0 for a database from before versions were
    /// recorded, or an empty one).
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        self.client
            .query(&ddl::schema_version_sql(&self.config.database))
            .fetch_one()
            .await
            .map_err(self.err())
    }

    /// The next unused snapshot id (ids start at 1).
    pub async fn next_snapshot_id(&self) -> Result<SnapshotId, StoreError> {
        let db = &self.config.database;
        let max: u64 = self
            .client
            .query(&format!("SELECT max(snapshot_id) FROM {db}.snapshots"))
            .fetch_one()
            .await
            .map_err(self.err())?;
        Ok(SnapshotId::new(max + 1))
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

    /// The `query_id` prefix of every insert into a snapshot, so that inserts still running in
    /// ClickHouse (their client gone) can be found.
    fn insert_query_prefix(&self, snapshot_id: SnapshotId) -> String {
        format!(
            "storage-tracker-insert-{}-{snapshot_id}-",
            self.config.database
        )
    }

    /// Begins one INSERT into `entries` of a snapshot, of `rows` rows: chunks' rows are written
    /// to it one chunk at a time ([`EntryInsert::write`]), so a chunk's decoded rows need to
    /// live only while they are sent, and it is stored by [`EntryInsert::end`], whole or not at
    /// all: its block size is set to hold every row, so ClickHouse makes it one block.
    pub async fn begin_insert(
        &self,
        snapshot_id: SnapshotId,
        rows: u64,
    ) -> Result<EntryInsert, StoreError> {
        static ATTEMPT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let query_id = format!(
            "{}{}-{}",
            self.insert_query_prefix(snapshot_id),
            std::process::id(),
            ATTEMPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let client = self
            .client
            .clone()
            .with_database(self.config.database.as_str())
            .with_setting("query_id", query_id)
            .with_setting(
                "max_insert_block_size",
                rows.max(DEFAULT_INSERT_BLOCK_ROWS).to_string(),
            );
        let insert = client
            .insert::<EntryRecord<'static>>("entries")
            .await
            .map_err(self.err())?;
        Ok(EntryInsert {
            insert,
            snapshot_id,
            url: self.config.url.clone(),
        })
    }

    /// Waits until no insert into the snapshot is running in ClickHouse: one whose client went
    /// away (a crash, a timeout) may still commit, so rows are counted only after. One still
    /// running after `patience` is killed (an INSERT of one block is stored whole or not at all).
    pub async fn settle_inserts(
        &self,
        snapshot_id: SnapshotId,
        patience: std::time::Duration,
    ) -> Result<(), StoreError> {
        // On a cluster, the insert a shard runs for one sent to another server carries the
        // first one's id as its initial_query_id.
        let ours = format!(
            "startsWith(initial_query_id, {})",
            quote_str(&self.insert_query_prefix(snapshot_id))
        );
        let running = format!("SELECT count() FROM system.processes WHERE {ours}");
        let start = std::time::Instant::now();
        loop {
            let mut n = 0u64;
            for (url, client) in self.servers() {
                n += client
                    .query(&running)
                    .fetch_one::<u64>()
                    .await
                    .map_err(error_at(url))?;
            }
            if n == 0 {
                return Ok(());
            }
            if start.elapsed() > patience {
                tracing::warn!(
                    snapshot_id = snapshot_id.get(),
                    "killing {n} insert(s) still running"
                );
                for (url, client) in self.servers() {
                    client
                        .query(&format!("KILL QUERY WHERE {ours} SYNC"))
                        .execute()
                        .await
                        .map_err(error_at(url))?;
                }
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Rows stored per (rank, seq) of a snapshot.
    pub async fn chunk_counts(
        &self,
        snapshot_id: SnapshotId,
    ) -> Result<Vec<ChunkCount>, StoreError> {
        let db = &self.config.database;
        self.client
            .query(&format!("SELECT rank, seq, count() AS n FROM {db}.entries WHERE snapshot_id = {snapshot_id} GROUP BY rank, seq"))
            .fetch_all()
            .await
            .map_err(self.err())
    }

    /// Deletes the rows of one chunk and waits until they are gone (a mutation).
    pub async fn delete_chunk_rows(
        &self,
        snapshot_id: SnapshotId,
        rank: u32,
        seq: u64,
    ) -> Result<(), StoreError> {
        for holder in &self.holders {
            let db = &holder.database;
            holder.execute(&format!("ALTER TABLE {db}.entries DELETE WHERE snapshot_id = {snapshot_id} AND rank = {rank} AND seq = {seq}")).await?;
        }
        for holder in &self.holders {
            let db = &holder.database;
            loop {
                let pending: u64 = holder
                    .client
                    .query(&format!("SELECT count() FROM system.mutations WHERE database = '{db}' AND table = 'entries' AND is_done = 0"))
                    .fetch_one()
                    .await
                    .map_err(error_at(&holder.url))?;
                if pending == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// The current record of a snapshot.
    pub async fn snapshot(
        &self,
        snapshot_id: SnapshotId,
    ) -> Result<Option<SnapshotRecord>, StoreError> {
        let db = &self.config.database;
        self.client
            .query(&format!(
                "SELECT ?fields FROM {db}.snapshots FINAL WHERE snapshot_id = {snapshot_id}"
            ))
            .fetch_optional()
            .await
            .map_err(self.err())
    }

    /// Writes `dir` of snapshot `snapshot` and everything below it to `out` in ncdu's JSON
    /// export format, streaming the rows as ClickHouse sends them; the number of entries.
    pub async fn export_ncdu<W: std::io::Write>(
        &self,
        snapshot: &SnapshotRecord,
        dir: &[u8],
        out: W,
    ) -> Result<u64, StoreError> {
        use storage_tracker_proto::ncdu::{
            NcduEntry, NcduError, NcduWriter, export_sql, is_directory_sql,
        };
        let db = &self.config.database;
        let is_directory: u64 = self
            .client
            .query(&is_directory_sql(db, snapshot.snapshot_id.get(), dir))
            .fetch_one()
            .await
            .map_err(self.err())?;
        if is_directory == 0 {
            return Err(NcduError::NoDirectory(format!(
                "snapshot {} has no directory {} (see `storage-aggregator list` for its root)",
                snapshot.snapshot_id,
                String::from_utf8_lossy(dir)
            ))
            .into());
        }
        let mut rows = self
            .client
            .query(&export_sql(db, snapshot.snapshot_id.get(), dir))
            .fetch::<NcduEntry>()
            .map_err(self.err())?;
        let mut writer = NcduWriter::new(
            out,
            dir,
            env!("CARGO_PKG_VERSION"),
            u64::from(snapshot.started_at),
        )
        .map_err(NcduError::Io)?;
        while let Some(row) = rows.next().await.map_err(self.err())? {
            writer.push(&row)?;
        }
        Ok(writer.finish()?.1)
    }

    /// How many snapshots are in each state (`running`, `committed`, ...).
    pub async fn snapshot_states(&self) -> Result<Vec<(String, u64)>, StoreError> {
        #[derive(Row, serde::Deserialize)]
        struct StateCount {
            state: String,
            n: u64,
        }
        let db = &self.config.database;
        let rows: Vec<StateCount> = self
            .client
            .query(&format!(
                "SELECT toString(state) AS state, count() AS n FROM {db}.snapshots FINAL GROUP BY state"
            ))
            .fetch_all()
            .await
            .map_err(self.err())?;
        Ok(rows.into_iter().map(|r| (r.state, r.n)).collect())
    }

    /// The current records of every snapshot, oldest first.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotRecord>, StoreError> {
        let db = &self.config.database;
        self.client
            .query(&format!(
                "SELECT ?fields FROM {db}.snapshots FINAL ORDER BY snapshot_id"
            ))
            .fetch_all()
            .await
            .map_err(self.err())
    }

    /// Stores the names of a snapshot's uids and gids.
    pub async fn insert_principals(
        &self,
        snapshot_id: SnapshotId,
        users: &[Principal],
        groups: &[Principal],
    ) -> Result<(), StoreError> {
        self.drop_partitions(snapshot_id, &["principals"]).await?;
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

    /// Computes every report of a snapshot in ClickHouse: directory rollups, usage by owner
    /// and group, by file type, the histograms, the largest entries, the duplicate candidates
    /// and the top levels.
    /// Returns the number of directories. Run again, it first drops what an interrupted run
    /// left.
    pub async fn compute_reports(
        &self,
        snapshot_id: SnapshotId,
        root: &[u8],
        started_at_ns: i64,
    ) -> Result<u64, StoreError> {
        let db = &self.config.database;
        self.drop_partitions(snapshot_id, &ddl::REPORT_TABLES)
            .await?;
        // Group-bys and sorts spill to disk beyond this, whatever the server's profile says.
        let bounded = self
            .client
            .clone()
            .with_setting(
                "max_bytes_before_external_group_by",
                COMMIT_SPILL_BYTES.to_string(),
            )
            .with_setting(
                "max_bytes_before_external_sort",
                COMMIT_SPILL_BYTES.to_string(),
            );
        for (report, sql) in [
            ("dir_rollups", sql::dir_rollups(db, snapshot_id, root)),
            ("owner_usage", sql::owner_usage(db, snapshot_id, root)),
            ("type_usage", sql::type_usage(db, snapshot_id)),
            (
                "histograms",
                sql::histograms(db, snapshot_id, started_at_ns),
            ),
            ("large_entries", sql::large_entries(db, snapshot_id)),
            ("dup_candidates", sql::duplicate_candidates(db, snapshot_id)),
        ] {
            let start = std::time::Instant::now();
            bounded.query(&sql).execute().await.map_err(self.err())?;
            tracing::debug!(
                snapshot_id = snapshot_id.get(),
                report,
                seconds = start.elapsed().as_secs_f64(),
                "report computed"
            );
        }
        let per_depth: Vec<(u32, u64)> = self
            .client
            .query(&sql::shallow_depths(db, snapshot_id))
            .fetch_all()
            .await
            .map_err(self.err())?;
        let levels = sql::top_levels_kept(&per_depth);
        self.execute(&sql::top_levels(db, snapshot_id, levels))
            .await?;
        self.client
            .query(&format!(
                "SELECT count() FROM {db}.dir_rollups WHERE snapshot_id = {snapshot_id}"
            ))
            .fetch_one()
            .await
            .map_err(self.err())
    }

    async fn drop_partitions(
        &self,
        snapshot_id: SnapshotId,
        tables: &[&str],
    ) -> Result<(), StoreError> {
        for holder in &self.holders {
            let db = &holder.database;
            for table in tables {
                holder
                    .execute(&format!(
                        "ALTER TABLE {db}.{table} DROP PARTITION {snapshot_id}"
                    ))
                    .await?;
            }
        }
        Ok(())
    }

    /// Drops every row of a snapshot from the partitioned tables.
    pub async fn drop_snapshot_rows(&self, snapshot_id: SnapshotId) -> Result<(), StoreError> {
        self.drop_partitions(snapshot_id, &ddl::SNAPSHOT_PARTITIONED_TABLES)
            .await
    }
}

impl Store {
    /// Every server an insert into the database may run on: the one written to and, on a
    /// cluster, each shard's (where the server written to may be one of them again).
    fn servers(&self) -> impl Iterator<Item = (&str, &Client)> {
        let shards = self.config.cluster.is_some().then_some(&self.holders);
        std::iter::once((self.config.url.as_str(), &self.client)).chain(
            shards
                .into_iter()
                .flatten()
                .map(|h| (h.url.as_str(), &h.client)),
        )
    }
}

impl PartHolder {
    async fn execute(&self, sql: &str) -> Result<(), StoreError> {
        self.client
            .query(sql)
            .execute()
            .await
            .map_err(error_at(&self.url))
    }
}

/// The error of a statement sent to the ClickHouse at `url`.
fn error_at(url: &str) -> impl Fn(clickhouse::error::Error) -> StoreError + '_ {
    move |source| StoreError::ClickHouse {
        url: url.to_owned(),
        source,
    }
}

/// Bytes a group-by or a sort of the commit may hold in ClickHouse's memory before it spills
/// to disk. The rest of a commit's memory is its joins' right sides, one row per directory
/// (deploy/README.md, Sizing).
const COMMIT_SPILL_BYTES: u64 = 1 << 30;

/// ClickHouse's default `max_insert_block_size`: an INSERT's rows are cut into blocks of this
/// many, each stored as a part of its own.
const DEFAULT_INSERT_BLOCK_ROWS: u64 = 1_048_576;

/// An INSERT into `entries` under way (see [`Store::begin_insert`]); dropped without
/// [`Self::end`], nothing of it is stored.
pub struct EntryInsert {
    insert: clickhouse::insert::Insert<EntryRecord<'static>>,
    snapshot_id: SnapshotId,
    url: String,
}

impl std::fmt::Debug for EntryInsert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryInsert")
            .field("snapshot_id", &self.snapshot_id)
            .finish_non_exhaustive()
    }
}

impl EntryInsert {
    fn err(&self, source: clickhouse::error::Error) -> StoreError {
        StoreError::ClickHouse {
            url: self.url.clone(),
            source,
        }
    }

    /// Sends the rows of one checked chunk, `(rank, seq)` of the snapshot.
    pub async fn write(
        &mut self,
        rank: u32,
        seq: u64,
        columns: EntryColumns<'_>,
    ) -> Result<(), StoreError> {
        for row in 0..columns.len() {
            let record = entry_record(&columns, self.snapshot_id, rank, seq, row);
            if let Err(e) = self.insert.write(&record).await {
                return Err(self.err(e));
            }
        }
        Ok(())
    }

    /// Ends the INSERT: its rows are stored when this returns `Ok`.
    pub async fn end(self) -> Result<(), StoreError> {
        let url = self.url;
        self.insert
            .end()
            .await
            .map_err(|source| StoreError::ClickHouse { url, source })
    }
}

/// Checks every row of a chunk before anything of it is stored, so a bad row cannot leave part
/// of a chunk: enum codes the schema does not define would be stored as garbage. (See
/// [`EntryColumns::new`]; [`storage_tracker_proto::ValidChunk`] decodes and checks at once.)
pub fn validate_batch(batch: &RecordBatch) -> Result<(), StoreError> {
    EntryColumns::new(batch)?;
    Ok(())
}

/// Row `row` of a checked chunk, as `entries` stores it.
fn entry_record<'a>(
    columns: &EntryColumns<'a>,
    snapshot_id: SnapshotId,
    rank: u32,
    seq: u64,
    row: usize,
) -> EntryRecord<'a> {
    EntryRecord {
        snapshot_id,
        rank,
        seq,
        parent_path: columns.parent(row),
        name: columns.name(row),
        depth: columns.depth(row),
        kind: columns.kind(row) as i8,
        size: columns.size(row),
        allocated: columns.allocated(row),
        nlink: columns.nlink(row),
        ino: columns.ino(row),
        dev: columns.dev(row),
        mode: columns.mode(row),
        uid: columns.uid(row),
        gid: columns.gid(row),
        atime_ns: columns.atime_ns(row),
        mtime_ns: columns.mtime_ns(row),
        ctime_ns: columns.ctime_ns(row),
        btime_ns: columns.btime_ns(row),
        symlink_target: columns.symlink_target(row),
        error_op: columns.error_op(row) as i8,
        errno: columns.errno(row),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::UInt8Type;
    use arrow_array::{ArrayRef, UInt8Array};
    use storage_tracker_proto::entry::{EntryRef, EntryStat, col};
    use storage_tracker_proto::{EntryBatchBuilder, EntryKind, SCHEMA_VERSION};

    use super::*;

    #[test]
    fn a_shard_out_of_reach_is_transient_and_a_refusal_is_not() {
        let answer = |text: &str| StoreError::ClickHouse {
            url: "http://ch:8123".into(),
            source: clickhouse::error::Error::BadResponse(text.into()),
        };
        for reach in [
            "Code: 279, e.displayText() = DB::NetException: All connection tries failed.",
            "Code: 210. DB::NetException: Connection refused (127.0.0.1:19002). (NETWORK_ERROR)",
            "Code: 209, e.displayText() = DB::NetException: Timeout exceeded while reading",
            "Code: 32, e.displayText() = DB::Exception: Attempt to read after eof: while receiving \
             packet from 127.0.0.1:29002, e.what() = DB::Exception",
        ] {
            assert!(answer(reach).is_transient(), "{reach}");
        }
        for refusal in [
            "Code: 60, e.displayText() = DB::Exception: Table st.entries doesn't exist.",
            "Code: 2790, e.displayText() = not a code we know",
            "Code: 32, e.displayText() = DB::Exception: Attempt to read after eof: \
             (while reading column size at /var/lib/clickhouse/data/st/entries/1_2_2_0/)",
            "Code: x",
            "the server said no",
        ] {
            assert!(!answer(refusal).is_transient(), "{refusal}");
        }
        assert_eq!(exception_code("Code: 279, e.displayText()"), Some(279));
    }

    #[test]
    fn a_kind_code_the_schema_does_not_define_is_refused_by_row() {
        let mut b = EntryBatchBuilder::with_capacity(3);
        for name in [&b"a"[..], b"b", b"c"] {
            b.append(&EntryRef {
                path: &[b"/r/", name].concat(),
                parent: b"/r",
                name,
                depth: 1,
                kind: EntryKind::File,
                stat: EntryStat::default(),
                symlink_target: b"",
                error: None,
            });
        }
        let batch = b.finish();
        validate_batch(&batch).unwrap();
        let i = batch.schema().index_of(col::KIND).unwrap();
        let mut kinds = batch
            .column(i)
            .as_primitive::<UInt8Type>()
            .values()
            .to_vec();
        kinds[1] = 9;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[i] = Arc::new(UInt8Array::from(kinds));
        let bad = RecordBatch::try_new(batch.schema(), columns).unwrap();
        let err = validate_batch(&bad).unwrap_err();
        assert!(matches!(
            err,
            StoreError::Rows(RowError::Code { row: 1, .. })
        ));
        assert_eq!(
            err.to_string(),
            format!(
                "row 1 of the chunk has kind code 9, which schema version {SCHEMA_VERSION} does not define"
            )
        );
    }
}
