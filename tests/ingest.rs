//! The ingest service against a real ClickHouse: what is acknowledged is stored exactly once,
//! what is malformed is refused with a message that names it, and a snapshot that fails
//! verification leaves no rows behind.

mod support;

use serde::Deserialize;
use tokio_stream::StreamExt;
use tonic::Code;

use storage_tracker_aggregator::{IngestService, ServiceOptions, Spool, Store};
use storage_tracker_proto::entry::{EntryRef, EntryStat};
use storage_tracker_proto::v1::ingest_client::IngestClient;
use storage_tracker_proto::v1::{
    AbortSnapshotRequest, BeginSnapshotRequest, Chunk, ChunkAck, FinishSnapshotRequest, Principal,
    RankTotals,
};
use storage_tracker_proto::{
    EntryBatchBuilder, EntryKind, SCHEMA_VERSION, SnapshotId, encode_chunk,
};
use support::{Aggregator, TestDatabase};

/// A runtime, a fresh database and an aggregator on it.
fn setup(tag: &str) -> (tokio::runtime::Runtime, TestDatabase, Aggregator) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = TestDatabase::new(&rt, tag);
    let agg = Aggregator::start(&rt, &db);
    (rt, db, agg)
}

fn begin_request(ranks: u32) -> BeginSnapshotRequest {
    BeginSnapshotRequest {
        filesystem_label: "test".into(),
        root_path: b"/r".to_vec(),
        ranks,
        hosts: vec!["h".into()],
        scanner_version: "test".into(),
        schema_version: SCHEMA_VERSION,
        ..Default::default()
    }
}

/// A valid chunk of `rows` files under /r (plus the root row in chunk 0 of rank 0).
fn chunk(snapshot_id: u64, rank: u32, seq: u64, rows: usize) -> Chunk {
    let mut b = EntryBatchBuilder::with_capacity(rows + 1);
    if rank == 0 && seq == 0 {
        b.append(&EntryRef {
            path: b"/r",
            parent: b"/",
            name: b"r",
            depth: 0,
            kind: EntryKind::Dir,
            stat: EntryStat::default(),
            symlink_target: b"",
            error: None,
        });
    }
    for i in 0..rows {
        let name = format!("f{rank}_{seq}_{i}");
        let path = format!("/r/{name}");
        b.append(&EntryRef {
            path: path.as_bytes(),
            parent: b"/r",
            name: name.as_bytes(),
            depth: 1,
            kind: EntryKind::File,
            stat: EntryStat {
                size: 10,
                ..Default::default()
            },
            symlink_target: b"",
            error: None,
        });
    }
    let batch = b.finish();
    Chunk {
        snapshot_id,
        rank,
        seq,
        rows: batch.num_rows() as u64,
        parquet: encode_chunk(&batch).unwrap().into(),
    }
}

/// Begins a snapshot of `ranks` ranks; its id.
async fn begin(c: &mut IngestClient<tonic::transport::Channel>, ranks: u32) -> u64 {
    c.begin_snapshot(begin_request(ranks))
        .await
        .unwrap()
        .into_inner()
        .snapshot_id
}

async fn connect(addr: &str) -> IngestClient<tonic::transport::Channel> {
    IngestClient::connect(addr.to_owned()).await.unwrap()
}

/// Streams `chunks` on one call; returns the acks and the error that ended the call, if any.
async fn stream(
    client: &mut IngestClient<tonic::transport::Channel>,
    chunks: Vec<Chunk>,
) -> (Vec<ChunkAck>, Option<tonic::Status>) {
    let mut acks = Vec::new();
    let mut responses = match client.stream_chunks(tokio_stream::iter(chunks)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return (acks, Some(status)),
    };
    while let Some(item) = responses.next().await {
        match item {
            Ok(ack) => acks.push(ack),
            Err(status) => return (acks, Some(status)),
        }
    }
    (acks, None)
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Named {
    kind_name: String,
    id: u32,
    name: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Count {
    n: u64,
}

fn rows(rt: &tokio::runtime::Runtime, db: &TestDatabase, snapshot_id: u64) -> u64 {
    db.query::<Count>(
        rt,
        &format!(
            "SELECT count() AS n FROM {}.entries WHERE snapshot_id = {snapshot_id}",
            db.database
        ),
    )[0]
    .n
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct State {
    state_name: String,
    message: String,
}

fn state(rt: &tokio::runtime::Runtime, db: &TestDatabase, snapshot_id: u64) -> State {
    db.query::<State>(rt, &format!("SELECT toString(state) AS state_name, message FROM {}.snapshots FINAL WHERE snapshot_id = {snapshot_id}", db.database))
        .pop()
        .expect("the snapshot is recorded")
}

#[test]
fn a_chunk_sent_twice_is_stored_once_and_the_snapshot_commits() {
    let (rt, db, agg) = setup("dup");
    rt.block_on(async {
        let mut c = connect(&agg.addr).await;
        let id = begin(&mut c, 1).await;
        let (acks, err) = stream(
            &mut c,
            vec![
                chunk(id, 0, 0, 100),
                chunk(id, 0, 0, 100),
                chunk(id, 0, 1, 50),
            ],
        )
        .await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            acks.iter().map(|a| (a.seq, a.stored)).collect::<Vec<_>>(),
            [(0, true), (0, false), (1, true)]
        );
        let totals = RankTotals {
            rank: 0,
            chunks: 2,
            entries: 151,
            errors: 0,
            apparent_bytes: 1500,
            host: "h".into(),
        };
        let done = c
            .finish_snapshot(FinishSnapshotRequest {
                snapshot_id: id,
                ranks: vec![totals],
                users: vec![Principal {
                    id: 0,
                    name: "root".into(),
                }],
                groups: vec![
                    Principal {
                        id: 0,
                        name: "root".into(),
                    },
                    Principal {
                        id: 4242,
                        name: String::new(),
                    },
                ],
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((done.entries, done.directories), (151, 1));
        id
    });
    assert_eq!(rows(&rt, &db, 1), 151);
    let names: Vec<Named> = db.query(&rt, &format!("SELECT toString(kind) AS kind_name, id, name FROM {}.principals WHERE snapshot_id = 1 ORDER BY kind, id", db.database));
    let names: Vec<(String, u32, String)> = names
        .into_iter()
        .map(|n| (n.kind_name, n.id, n.name))
        .collect();
    assert_eq!(
        names,
        [
            ("user".into(), 0, "root".into()),
            ("group".into(), 0, "root".into()),
            ("group".into(), 4242, String::new())
        ]
    );
    assert_eq!(state(&rt, &db, 1).state_name, "committed");
}

#[test]
fn a_chunk_with_the_wrong_schema_is_refused_by_name_and_nothing_of_it_is_stored() {
    let (rt, db, agg) = setup("schema");
    let foreign = support::foreign_parquet(3);
    let (acks, err) = rt.block_on(async {
        let mut c = connect(&agg.addr).await;
        let id = begin(&mut c, 1).await;
        let bad = Chunk {
            snapshot_id: id,
            rank: 0,
            seq: 1,
            rows: 3,
            parquet: foreign.into(),
        };
        stream(&mut c, vec![chunk(id, 0, 0, 10), bad, chunk(id, 0, 2, 10)]).await
    });
    assert_eq!(
        acks.len(),
        1,
        "only the valid chunk before it is acknowledged"
    );
    let err = err.expect("the stream ends with an error");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("rank 0, seq 1") && err.message().contains("schema"),
        "{}",
        err.message()
    );
    // Acknowledged means spooled; the insert follows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while rows(&rt, &db, 1) < 11 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        rows(&rt, &db, 1),
        11,
        "the acknowledged chunk is kept, nothing of the bad one"
    );
}

#[test]
fn wrong_totals_fail_the_snapshot_and_drop_its_rows() {
    let (rt, db, agg) = setup("verify");
    let err = rt.block_on(async {
        let mut c = connect(&agg.addr).await;
        let id = begin(&mut c, 1).await;
        let (_, e) = stream(&mut c, vec![chunk(id, 0, 0, 20)]).await;
        assert!(e.is_none());
        let claimed = RankTotals {
            rank: 0,
            chunks: 1,
            entries: 22,
            ..Default::default()
        };
        c.finish_snapshot(FinishSnapshotRequest {
            snapshot_id: id,
            ranks: vec![claimed],
            ..Default::default()
        })
        .await
        .unwrap_err()
    });
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("rank 0 scanned 22 entries; 21 were acknowledged"),
        "{}",
        err.message()
    );
    let s = state(&rt, &db, 1);
    assert_eq!(s.state_name, "failed");
    assert!(s.message.contains("verification failed"), "{}", s.message);
    assert_eq!(rows(&rt, &db, 1), 0);
}

#[test]
fn an_aborted_snapshot_leaves_no_rows_and_refuses_more_chunks() {
    let (rt, db, agg) = setup("abort");
    rt.block_on(async {
        let mut c = connect(&agg.addr).await;
        let id = begin(&mut c, 2).await;
        let (_, e) = stream(&mut c, vec![chunk(id, 1, 0, 30)]).await;
        assert!(e.is_none());
        c.abort_snapshot(AbortSnapshotRequest {
            snapshot_id: id,
            reason: "rank 0 lost its node".into(),
        })
        .await
        .unwrap();
        let (_, e) = stream(&mut c, vec![chunk(id, 0, 0, 5)]).await;
        let e = e.expect("refused");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("is not running"), "{}", e.message());
    });
    assert_eq!(rows(&rt, &db, 1), 0);
    let s = state(&rt, &db, 1);
    assert_eq!(s.state_name, "failed");
    assert!(s.message.contains("rank 0 lost its node"));
}

#[test]
fn bad_begin_requests_are_refused_with_a_reason() {
    let (rt, _db, agg) = setup("begin");
    rt.block_on(async {
        let mut c = connect(&agg.addr).await;
        let e = c
            .begin_snapshot(BeginSnapshotRequest {
                schema_version: SCHEMA_VERSION + 1,
                ..begin_request(1)
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("schema version"), "{}", e.message());
        let e = c
            .begin_snapshot(BeginSnapshotRequest {
                root_path: b"relative".to_vec(),
                ..begin_request(1)
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        let e = c.begin_snapshot(begin_request(0)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
    });
}

#[test]
fn clickhouse_down_at_start_is_an_error_naming_the_server() {
    let (rt, db, _agg) = setup("down");
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = db.store_config();
    config.url = format!("http://{closed}");
    let spool = tempfile::tempdir().unwrap();
    let options = ServiceOptions::new(Spool::open(spool.path()).unwrap());
    let e = rt
        .block_on(IngestService::start(Store::new(config), options))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&closed.to_string()), "names the server: {e}");
}

/// Runs one whole snapshot of `rows` files through the service; returns its id.
async fn commit_one(
    c: &mut IngestClient<tonic::transport::Channel>,
    request: BeginSnapshotRequest,
    rows: usize,
) -> u64 {
    let id = c
        .begin_snapshot(request)
        .await
        .unwrap()
        .into_inner()
        .snapshot_id;
    let (_, e) = stream(c, vec![chunk(id, 0, 0, rows)]).await;
    assert!(e.is_none(), "{e:?}");
    let finish = FinishSnapshotRequest {
        snapshot_id: id,
        ranks: vec![RankTotals {
            rank: 0,
            chunks: 1,
            entries: rows as u64 + 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    let first = c
        .finish_snapshot(finish.clone())
        .await
        .unwrap()
        .into_inner();
    // A finish sent again (its answer lost) gets the same answer.
    let again = c.finish_snapshot(finish).await.unwrap().into_inner();
    assert_eq!(
        (first.entries, first.directories),
        (again.entries, again.directories)
    );
    id
}

#[test]
fn a_begin_sent_again_gets_the_same_snapshot() {
    let (rt, _db, agg) = setup("rebegin");
    rt.block_on(async {
        let mut c = connect(&agg.addr).await;
        let request = BeginSnapshotRequest {
            scan_id: "host-1-42".into(),
            ..begin_request(1)
        };
        let a = c
            .begin_snapshot(request.clone())
            .await
            .unwrap()
            .into_inner();
        let b = c.begin_snapshot(request).await.unwrap().into_inner();
        assert_eq!(a.snapshot_id, b.snapshot_id);
        let other = c
            .begin_snapshot(begin_request(1))
            .await
            .unwrap()
            .into_inner();
        assert_ne!(other.snapshot_id, a.snapshot_id);
    });
}

#[test]
fn a_snapshot_that_hears_nothing_is_failed_as_abandoned() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "abandon");
    let agg = Aggregator::start_with(&rt, &db, |o| {
        o.abandon_after = std::time::Duration::from_millis(300);
    });
    rt.block_on(async {
        let mut c = connect(&agg.addr).await;
        let id = begin(&mut c, 2).await;
        let (_, e) = stream(&mut c, vec![chunk(id, 0, 0, 10)]).await;
        assert!(e.is_none());
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    });
    let s = state(&rt, &db, 1);
    assert_eq!(s.state_name, "failed");
    assert!(s.message.contains("abandoned"), "{}", s.message);
    assert_eq!(rows(&rt, &db, 1), 0);
}

#[test]
fn retention_drops_snapshots_and_everything_derived_from_them() {
    let (rt, db, agg) = setup("retention");
    let day = 86_400;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    rt.block_on(async {
        let mut c = connect(&agg.addr).await;
        // Two in one week long ago, one this week; another filesystem is left alone.
        for (label, started_at) in [
            ("fs", now - 60 * day),
            ("fs", now - 60 * day + 60),
            ("fs", now),
            ("other", now - 90 * day),
        ] {
            let request = BeginSnapshotRequest {
                filesystem_label: label.into(),
                started_at,
                ..begin_request(1)
            };
            commit_one(&mut c, request, 20).await;
        }
    });
    let store = Store::new(db.store_config());
    let policy = storage_tracker_aggregator::retention::Retention {
        last: 1,
        weekly: 4,
        monthly: 0,
    };
    let numbers =
        |ids: Vec<SnapshotId>| -> Vec<u64> { ids.into_iter().map(SnapshotId::get).collect() };
    let dry = numbers(
        rt.block_on(storage_tracker_aggregator::retention::apply(
            &store, &policy, "fs", true,
        ))
        .unwrap(),
    );
    assert_eq!(dry, [1], "the older of two snapshots in one week goes");
    assert_eq!(
        state(&rt, &db, 1).state_name,
        "committed",
        "a dry run drops nothing"
    );
    let dropped = numbers(
        rt.block_on(storage_tracker_aggregator::retention::apply(
            &store, &policy, "fs", false,
        ))
        .unwrap(),
    );
    assert_eq!(dropped, [1]);
    assert_eq!(state(&rt, &db, 1).state_name, "deleted");
    for table in storage_tracker_proto::ddl::SNAPSHOT_PARTITIONED_TABLES {
        let left: Vec<Count> = db.query(
            &rt,
            &format!(
                "SELECT count() AS n FROM {}.{table} WHERE snapshot_id = 1",
                db.database
            ),
        );
        assert_eq!(
            left[0].n, 0,
            "{table} keeps nothing of the dropped snapshot"
        );
        let kept: Vec<Count> = db.query(
            &rt,
            &format!(
                "SELECT count() AS n FROM {}.{table} WHERE snapshot_id = 2",
                db.database
            ),
        );
        // Names, duplicate candidates and their hashes: only what the small tree has.
        assert!(
            kept[0].n > 0 || matches!(table, "principals" | "dup_candidates" | "file_hashes"),
            "{table} keeps snapshot 2"
        );
    }
    for id in [2, 3, 4] {
        assert_eq!(state(&rt, &db, id).state_name, "committed");
    }
}

#[test]
fn a_retention_policy_runs_after_each_commit() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "keep");
    let agg = Aggregator::start_with(&rt, &db, |o| {
        o.retention = Some(storage_tracker_aggregator::retention::Retention {
            last: 1,
            weekly: 0,
            monthly: 0,
        });
    });
    rt.block_on(async {
        let mut c = connect(&agg.addr).await;
        commit_one(&mut c, begin_request(1), 5).await;
        commit_one(&mut c, begin_request(1), 5).await;
    });
    assert_eq!(state(&rt, &db, 1).state_name, "deleted");
    assert_eq!(rows(&rt, &db, 1), 0);
    assert_eq!(state(&rt, &db, 2).state_name, "committed");
}

#[test]
fn the_schema_version_is_recorded_once_and_a_newer_database_is_refused() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "schema");
    let store = Store::new(db.store_config());
    // Created by TestDatabase::new; migrating again changes nothing.
    rt.block_on(store.migrate()).unwrap();
    assert_eq!(
        rt.block_on(store.schema_version()).unwrap(),
        storage_tracker_proto::ddl::DATABASE_VERSION
    );
    let d = &db.database;
    assert_eq!(
        db.query::<u64>(&rt, &format!("SELECT count() FROM {d}.schema_version")),
        [1]
    );
    // A database written by a newer storage-tracker.
    rt.block_on(
        clickhouse::Client::default()
            .with_url(&db.url)
            .query(&format!(
                "INSERT INTO {d}.schema_version (version, applied_at) VALUES (99, now())"
            ))
            .execute(),
    )
    .unwrap();
    let err = rt.block_on(store.migrate()).unwrap_err().to_string();
    assert!(
        err.contains("schema version 99, newer than this aggregator's"),
        "{err}"
    );
}

#[test]
fn a_version_1_database_is_migrated_to_keep_the_start_in_nanoseconds_and_the_scan_options() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "migrate1");
    let d = &db.database;
    let client = clickhouse::Client::default().with_url(&db.url);
    let run = |sql: String| rt.block_on(client.query(&sql).execute()).unwrap();
    // The snapshots table as version 1 made it, with one committed snapshot.
    run(format!("DROP TABLE {d}.snapshots"));
    run(format!("DROP TABLE {d}.schema_version"));
    run(format!(
        "CREATE TABLE {d}.schema_version (version UInt32, applied_at DateTime) ENGINE = MergeTree ORDER BY version"
    ));
    run(format!(
        "CREATE TABLE {d}.snapshots (snapshot_id UInt64, version UInt64, state {}, scan_id String, \
         filesystem_label String, root_path String, hosts Array(String), ranks UInt32, scanner_version String, \
         schema_version UInt32, started_at DateTime, finished_at DateTime, entries UInt64, errors UInt64, \
         apparent_bytes UInt64, directories UInt64, commit_seconds Float64, message String) \
         ENGINE = ReplacingMergeTree(version) ORDER BY snapshot_id",
        storage_tracker_proto::ddl::STATE_ENUM
    ));
    run(format!(
        "INSERT INTO {d}.snapshots (snapshot_id, version, state, started_at, finished_at) \
         VALUES (1, 1, 'committed', toDateTime(1700000000), toDateTime(1700000100))"
    ));
    run(format!(
        "INSERT INTO {d}.schema_version (version, applied_at) VALUES (1, now())"
    ));
    let store = Store::new(db.store_config());
    rt.block_on(store.migrate()).unwrap();
    assert_eq!(
        rt.block_on(store.schema_version()).unwrap(),
        storage_tracker_proto::ddl::DATABASE_VERSION
    );
    #[derive(clickhouse::Row, serde::Deserialize)]
    struct Migrated {
        started_at_ns: i64,
        scan_options: String,
    }
    let rows: Vec<Migrated> = db.query(
        &rt,
        &format!("SELECT started_at_ns, scan_options FROM {d}.snapshots FINAL"),
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].started_at_ns, 1_700_000_000_000_000_000);
    assert_eq!(rows[0].scan_options, "");
    // The records read back as the current type.
    assert_eq!(
        rt.block_on(store.snapshots()).unwrap()[0].start_ns(),
        1_700_000_000_000_000_000
    );
}

/// `entries` and `dir_rollups` as database version 2 created them: the path stored beside its
/// parent and name.
const VERSION_2_TABLES: [(&str, &str); 2] = [
    (
        "entries",
        "rank UInt32, seq UInt64, path String, parent_path String, name String, depth UInt32, \
         kind {kind}, size UInt64, allocated UInt64, nlink UInt64, ino UInt64, dev UInt64, mode UInt32, \
         uid UInt32, gid UInt32, atime_ns Int64, mtime_ns Int64, ctime_ns Int64, btime_ns Nullable(Int64), \
         symlink_target String, error_op {error_op}, errno Int32",
    ),
    (
        "dir_rollups",
        "path String, parent_path String, name String, depth UInt32, uid UInt32, gid UInt32, \
         mtime_ns Int64, atime_ns Int64, bytes UInt64, allocated UInt64, entries UInt64, files UInt64, \
         dirs UInt64, max_mtime_ns Int64, max_atime_ns Int64, direct_bytes UInt64, direct_allocated UInt64, \
         direct_entries UInt64, direct_files UInt64, direct_dirs UInt64",
    ),
];

#[test]
fn a_version_2_database_is_migrated_to_store_each_path_once_and_answers_the_same() {
    use storage_tracker_proto::ddl::{self, DATABASE_VERSION};
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The same scan in a database of this version and in one of version 2.
    let current = TestDatabase::new(&rt, "migrate2_now");
    let aggregator = Aggregator::start(&rt, &current);
    let fixture = support::Fixture::build();
    support::scan(&aggregator, &fixture.root);
    let old = TestDatabase::new(&rt, "migrate2_old");
    let (now, was) = (&current.database, &old.database);
    let client = clickhouse::Client::default().with_url(&old.url);
    let run = |sql: String| rt.block_on(client.query(&sql).execute()).unwrap();
    for (table, template) in VERSION_2_TABLES {
        let columns = template
            .replace("{kind}", ddl::KIND_ENUM)
            .replace("{error_op}", ddl::ERROR_OP_ENUM);
        run(format!("DROP TABLE {was}.{table}"));
        run(format!(
            "CREATE TABLE {was}.{table} (snapshot_id UInt64, {columns}) ENGINE = MergeTree \
             PARTITION BY snapshot_id ORDER BY (snapshot_id, parent_path, name)"
        ));
        let names: Vec<&str> = template
            .split(", ")
            .map(|c| c.split(' ').next().unwrap())
            .collect();
        let names = format!("snapshot_id, {}", names.join(", "));
        run(format!(
            "INSERT INTO {was}.{table} ({names}) SELECT {names} FROM {now}.{table}"
        ));
    }
    for table in [
        "snapshots",
        "owner_usage",
        "type_usage",
        "histograms",
        "principals",
    ] {
        run(format!(
            "INSERT INTO {was}.{table} SELECT * FROM {now}.{table}"
        ));
    }
    run(format!("DROP TABLE {was}.schema_version"));
    run(format!(
        "CREATE TABLE {was}.schema_version (version UInt32, applied_at DateTime) ENGINE = MergeTree ORDER BY version"
    ));
    run(format!(
        "INSERT INTO {was}.schema_version (version, applied_at) VALUES (2, now())"
    ));
    let path_column = |db: &TestDatabase| -> Vec<(String, String, u64)> {
        db.query(
            &rt,
            &format!(
                "SELECT table, default_kind, data_compressed_bytes FROM system.columns \
                 WHERE database = '{}' AND name = 'path' AND table IN ('entries', 'dir_rollups') ORDER BY table",
                db.database
            ),
        )
    };
    let stored = path_column(&old);
    assert!(
        stored
            .iter()
            .all(|(_, kind, bytes)| kind.is_empty() && *bytes > 0),
        "{stored:?}"
    );

    let store = Store::new(old.store_config());
    rt.block_on(store.migrate()).unwrap();
    assert_eq!(
        rt.block_on(store.schema_version()).unwrap(),
        DATABASE_VERSION
    );
    for (table, kind, bytes) in path_column(&old) {
        assert_eq!((kind.as_str(), bytes), ("ALIAS", 0), "{table}");
    }
    // Migrating again changes nothing.
    rt.block_on(store.migrate()).unwrap();
    assert_eq!(
        old.query::<u32>(
            &rt,
            &format!("SELECT version FROM {was}.schema_version ORDER BY version")
        ),
        [2, DATABASE_VERSION]
    );

    // The API answers every question the same from both.
    let apps = [&current, &old].map(|db| {
        storage_tracker_api::app(storage_tracker_api::AppState::new(support::reader(db)))
    });
    let r = fixture.root.to_str().unwrap();
    for uri in [
        "/api/v1/snapshots/1".to_owned(),
        format!("/api/v1/snapshots/1/children?path={r}&sort=bytes&limit=50"),
        format!("/api/v1/snapshots/1/children?path={r}/huge&sort=name&limit=1000&offset=19000"),
        format!("/api/v1/snapshots/1/entry?path={r}"),
        format!("/api/v1/snapshots/1/treemap?path={r}&depth=3"),
        format!("/api/v1/snapshots/1/top?path={r}&what=files&limit=20"),
        format!("/api/v1/snapshots/1/top?path={r}&what=dirs&limit=20"),
        "/api/v1/snapshots/1/usage?by=user".to_owned(),
        "/api/v1/snapshots/1/usage?by=type".to_owned(),
        "/api/v1/snapshots/1/histograms?of=size".to_owned(),
        format!("/api/v1/snapshots/1/stale?path={r}&days=0&limit=30"),
        "/api/v1/snapshots/1/stale?days=0&format=csv".to_owned(),
        "/api/v1/snapshots/1/search?q=f1&limit=40".to_owned(),
        "/api/v1/snapshots/1/search?q=*.txt&match=glob&field=path&limit=40".to_owned(),
        format!("/api/v1/history?path={r}"),
        format!("/api/v1/snapshots/1/export/ncdu?path={r}"),
    ] {
        let [a, b] = apps
            .each_ref()
            .map(|app| support::api_get(&rt, app, &uri, None));
        assert_eq!(a.0, 200, "{uri}: {}", String::from_utf8_lossy(&a.2));
        assert!(a == b, "{uri}: the migrated database answers differently");
    }
}

#[test]
fn with_no_memory_budget_every_chunk_is_read_back_from_the_spool_and_stored_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "no_memory");
    let aggregator = Aggregator::start_with(&rt, &db, |o| o.memory_budget = 0);
    let fixture = support::Fixture::build();
    let o = std::process::Command::new(support::scanner())
        .args(["--aggregator", &aggregator.addr, "--chunk-rows", "2048"])
        .arg(&fixture.root)
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let truth = support::ground_truth(&fixture.root);
    let d = &db.database;
    #[derive(clickhouse::Row, Deserialize, Debug, PartialEq)]
    struct Stored {
        rows: u64,
        paths: u64,
        chunks: u64,
    }
    let stored: Vec<Stored> = db.query(
        &rt,
        &format!(
            "SELECT count() AS rows, uniqExact(path) AS paths, uniqExact(rank, seq) AS chunks \
             FROM {d}.entries WHERE snapshot_id = 1"
        ),
    );
    assert_eq!(stored[0].rows, truth.len() as u64);
    assert_eq!(stored[0].paths, truth.len() as u64);
    assert!(
        stored[0].chunks > 10,
        "{stored:?}: many chunks, all read back"
    );
    assert_eq!(state(&rt, &db, 1).state_name, "committed");
    // Nothing is left in the spool.
    let left: Vec<_> = walk_files(aggregator.spool.path());
    assert!(
        left.iter()
            .all(|p| !p.to_string_lossy().ends_with(".parquet")),
        "{left:?}"
    );
}

/// Every file below `dir`.
fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}
