//! The store on a ClickHouse cluster: two ClickHouse servers as the two shards of cluster
//! `st_test` (ci/test.sh starts them), local tables on each and distributed tables over them.
//! Two offline scans of the fixture, imported into the cluster and into one server: the
//! cluster's reports equal ground truth, its rows lie on both shards, the API answers every
//! question as it does over one server, and dropping a snapshot or a chunk's rows leaves nothing
//! of it on any shard. Shards given wrongly are refused, naming what is wrong, before anything
//! is created, and the health check names a reader whose profile would read each shard alone.
//! A shard killed in the middle of an import's inserts, or of its commit, and started again
//! loses and duplicates nothing.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use serde::Deserialize;
use storage_tracker_aggregator::Store;
use storage_tracker_api::AppState;
use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;
use support::*;

/// An offline scan of `tree` into `out`, in 4096-row chunks (several per rank).
fn offline_scan(tree: &Path, out: &Path) {
    let scan = Command::new(scanner())
        .arg("--output")
        .arg(out)
        .args(["--chunk-rows", "4096", "--label", "cluster"])
        .arg(tree)
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );
}

/// `storage-aggregator ARGS` against `db`, on its cluster if it has one.
fn aggregator(db: &TestDatabase, args: &[&std::ffi::OsStr]) -> Output {
    let mut command = Command::new(aggregator_binary(scanner()));
    command
        .args(args)
        .env("STORAGE_TRACKER_CLICKHOUSE_URL", &db.url)
        .env("STORAGE_TRACKER_DATABASE", db.database.as_str());
    if let Some(cluster) = &db.cluster {
        command
            .env("STORAGE_TRACKER_CLICKHOUSE_CLUSTER", cluster.name.as_str())
            .env(
                "STORAGE_TRACKER_CLICKHOUSE_SHARDS",
                cluster.shards.join(","),
            );
    }
    command.output().unwrap()
}

fn import(db: &TestDatabase, dir: &Path) {
    let o = aggregator(db, &["import".as_ref(), dir.as_os_str()]);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Started {
    started: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize, PartialEq, Eq)]
struct TableRows {
    table: String,
    rows: u64,
}

/// Rows of snapshot `id` in each table of `db`'s local tables on the shard at `url`.
fn shard_rows(rt: &tokio::runtime::Runtime, url: &str, db: &TestDatabase, id: u64) -> Vec<u64> {
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false);
    storage_tracker_proto::ddl::SNAPSHOT_PARTITIONED_TABLES
        .iter()
        .map(|table| {
            let sql = format!(
                "SELECT count() FROM {}.{table} WHERE snapshot_id = {id}",
                db.database.local()
            );
            rt.block_on(client.query(&sql).fetch_one::<u64>())
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
        })
        .collect()
}

/// A JSON answer without what differs between two imports of one scan: when the commit ended
/// and how long it took.
fn comparable(body: &[u8], content_type: &str) -> String {
    if !content_type.starts_with("application/json") {
        return String::from_utf8_lossy(body).into_owned();
    }
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("commit_seconds");
                map.remove("finished_at");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut json: serde_json::Value = serde_json::from_slice(body).unwrap();
    strip(&mut json);
    serde_json::to_string_pretty(&json).unwrap()
}

/// The cluster's tests run one at a time: one of them stops a shard.
static CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    CLUSTER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn a_cluster_store_answers_as_one_server_does() {
    let _cluster = one_at_a_time();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fixture = Fixture::build();
    let root = fixture.root.to_str().unwrap().to_owned();
    // Links of one file in directories on both shards (20 directories: all on one shard once in
    // half a million runs): its bytes count once per snapshot, and once in each directory
    // holding a link.
    for i in 5..25 {
        let link = fixture.root.join(format!("wide/d{i:03}/linked.bin"));
        std::fs::hard_link(fixture.root.join("mixed/target.bin"), link).unwrap();
    }
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    offline_scan(&fixture.root, first.path());
    let truth1 = ground_truth(&fixture.root);
    // A week later: a subtree grown, one removed, a file rewritten.
    std::fs::create_dir_all(fixture.root.join("grown/run1")).unwrap();
    for i in 0..300 {
        std::fs::write(
            fixture.root.join(format!("grown/run1/out{i}.h5")),
            vec![7; i],
        )
        .unwrap();
    }
    std::fs::remove_dir_all(fixture.root.join("deep/l1/l2/l3")).unwrap();
    std::fs::write(fixture.root.join("wide/d007/f3"), vec![1; 9000]).unwrap();
    offline_scan(&fixture.root, second.path());
    let truth2 = ground_truth(&fixture.root);

    let single = TestDatabase::new(&rt, "one_server");
    let cluster = TestDatabase::on_cluster(&rt, "cluster");
    for db in [&single, &cluster] {
        import(db, first.path());
        import(db, second.path());
    }

    // Every report equals ground truth, computed over both shards.
    for (id, truth) in [(1, &truth1), (2, &truth2)] {
        let started: Vec<Started> = cluster.query(
            &rt,
            &format!(
                "SELECT started_at_ns AS started FROM {}.snapshots FINAL WHERE snapshot_id = {id}",
                cluster.database
            ),
        );
        check_reports(&rt, &cluster, id, truth, started[0].started);
    }
    // Both shards hold entries, and together every entry once.
    let shards = &cluster.cluster.as_ref().unwrap().shards;
    let entries: Vec<u64> = shards
        .iter()
        .map(|url| shard_rows(&rt, url, &cluster, 2)[0])
        .collect();
    assert!(
        entries.iter().all(|&n| n > 0),
        "entries per shard: {entries:?}"
    );
    for url in shards {
        let client = clickhouse::Client::default()
            .with_url(url)
            .with_validation(false);
        let sql = format!(
            "SELECT count() FROM {}.entries WHERE name = 'linked.bin'",
            cluster.database.local()
        );
        let links: u64 = rt.block_on(client.query(&sql).fetch_one()).unwrap();
        assert!(links > 0, "no link of the hard-linked file on {url}");
    }
    assert_eq!(entries.iter().sum::<u64>(), truth2.len() as u64);

    // The API over either store gives the same answers, in pages and in windows.
    let s1 = "/api/v1/snapshots/1";
    let s2 = "/api/v1/snapshots/2";
    let uris = [
        "/api/v1/snapshots".to_owned(),
        "/api/v1/snapshots?label=cluster".to_owned(),
        s2.to_owned(),
        format!("{s2}/children?path={root}"),
        format!("{s2}/children?path={root}/huge&limit=50&offset=19000&sort=name"),
        format!("{s2}/children?path={root}/wide&sort=files&limit=20"),
        format!("{s2}/entry?path={root}/mixed/target.bin"),
        format!("{s2}/entry?path={root}/grown"),
        format!("{s2}/top?what=files&limit=20"),
        format!("{s2}/top?what=dirs&limit=20"),
        format!("{s2}/top?what=files&path={root}/wide&limit=7"),
        format!("{s2}/treemap?depth=3"),
        format!("{s2}/treemap?depth=2&size=files&max_children=5&path={root}/wide"),
        format!("{s2}/usage?by=user"),
        format!("{s2}/usage?by=group"),
        format!("{s2}/usage?by=type"),
        format!("{s2}/usage?by=category"),
        format!("{s2}/histograms?of=size"),
        format!("{s2}/histograms?of=mtime"),
        format!("{s2}/histograms?of=atime"),
        format!("{s2}/search?q=f1"),
        format!("{s2}/search?q=out1*.h5&match=glob&limit=30"),
        format!("{s2}/search?q=^f[0-9]+$&match=regex&path={root}/wide&limit=40&offset=100"),
        format!("{s2}/search?min_size=100&type=h5&limit=150"),
        format!("{s1}/stale?days=0&limit=25"),
        format!("{s1}/stale?days=0&format=csv"),
        format!("{s1}/stale?days=365&by=mtime"),
        format!("{s1}/export/ncdu?path={root}/mixed"),
        format!("/api/v1/history?path={root}"),
        format!("/api/v1/history?path={root}/wide"),
        format!("/api/v1/growth?from=1&to=2&path={root}"),
        format!("/api/v1/growth?from=1&to=2&path={root}/deep/l1"),
        "/api/v1/growth/owners?from=1&to=2&by=user".to_owned(),
        "/api/v1/growth/owners?from=1&to=2&by=group".to_owned(),
    ];
    for window in [None, Some(1000)] {
        let app = |db: &TestDatabase| {
            let state = AppState::new(reader(db));
            storage_tracker_api::app(match window {
                Some(entries) => state.with_window_entries(entries),
                None => state,
            })
        };
        let (one, many) = (app(&single), app(&cluster));
        for uri in &uris {
            let (status, content_type, body) = api_get(&rt, &one, uri, None);
            assert_eq!(status, 200, "{uri}: {}", String::from_utf8_lossy(&body));
            let (cluster_status, cluster_type, cluster_body) = api_get(&rt, &many, uri, None);
            assert_eq!(
                (cluster_status, cluster_type.as_str()),
                (status, content_type.as_str()),
                "{uri} on the cluster: {}",
                String::from_utf8_lossy(&cluster_body)
            );
            assert_eq!(
                comparable(&cluster_body, &cluster_type),
                comparable(&body, &content_type),
                "{uri} (window {window:?}) on the cluster, then on one server"
            );
        }
        let (status, _, body) = api_get(&rt, &many, "/health", None);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    // A reader whose profile lets a subquery run on each shard would get wrong answers: the
    // health check says so.
    let mut misread = reader(&cluster);
    misread.user = "default".into();
    let app = storage_tracker_api::app(AppState::new(misread));
    let (status, _, body) = api_get(&rt, &app, "/health", None);
    let said = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{said}");
    assert!(
        said.contains("does not set distributed_product_mode to 'global'"),
        "{said}"
    );

    // A partly stored chunk's rows go from every shard.
    let store = Store::new(cluster.store_config());
    rt.block_on(store.delete_chunk_rows(SnapshotId::new(2), 0, 0))
        .unwrap();
    rt.block_on(store.settle_inserts(SnapshotId::new(2), std::time::Duration::from_secs(5)))
        .unwrap();
    let left: Vec<TableRows> = cluster.query(
        &rt,
        &format!(
            "SELECT 'entries' AS table, count() AS rows FROM {}.entries \
             WHERE snapshot_id = 2 AND rank = 0 AND seq = 0",
            cluster.database
        ),
    );
    assert_eq!(left[0].rows, 0);

    // A dropped snapshot leaves no row on any shard; the other stays whole.
    let o = aggregator(&cluster, &["drop".as_ref(), "1".as_ref()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for url in shards {
        assert!(
            shard_rows(&rt, url, &cluster, 1).iter().all(|&n| n == 0),
            "snapshot 1 on {url}"
        );
    }
    let kept: u64 = shards
        .iter()
        .map(|url| shard_rows(&rt, url, &cluster, 2)[3])
        .sum();
    assert_eq!(
        kept,
        truth2.iter().filter(|e| e.kind == "dir").count() as u64,
        "snapshot 2's rollups"
    );
}

#[test]
fn shards_given_wrongly_are_refused_by_name_before_anything_is_created() {
    let _cluster = one_at_a_time();
    let cluster = test_cluster();
    let url = &cluster.shards[0];
    // `storage-aggregator COMMAND` on `database`, the cluster's name and the shards from the
    // environment ("" for none): refused, its error.
    let refused = |command: &[&str], database: &str, name: &str, shards: &str| {
        let mut aggregator = Command::new(aggregator_binary(scanner()));
        aggregator
            .args(command)
            .env("STORAGE_TRACKER_CLICKHOUSE_URL", url)
            .env("STORAGE_TRACKER_DATABASE", database);
        for (key, value) in [
            ("STORAGE_TRACKER_CLICKHOUSE_CLUSTER", name),
            ("STORAGE_TRACKER_CLICKHOUSE_SHARDS", shards),
        ] {
            if value.is_empty() {
                aggregator.env_remove(key);
            } else {
                aggregator.env(key, value);
            }
        }
        let o = aggregator.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{command:?} {database}: {err}");
        err
    };
    let import = ["import", "/nonexistent-scan"];
    let one = cluster.shards[0].clone();
    let both = cluster.shards.join(",");
    for (name, shards, said) in [
        (
            "st_test",
            one.as_str(),
            "cluster st_test has 2 shards and 1 were given".to_owned(),
        ),
        (
            "st_test",
            &format!("{one},{one}"),
            format!("{one} and {one} are both servers of shard 1 of cluster st_test"),
        ),
        (
            "no_such_cluster",
            both.as_str(),
            format!("ClickHouse at {url} has no cluster no_such_cluster"),
        ),
        (
            "",
            both.as_str(),
            "--clickhouse-shard (STORAGE_TRACKER_CLICKHOUSE_SHARDS) is given without \
             --clickhouse-cluster"
                .to_owned(),
        ),
    ] {
        let err = refused(&import, "st_test_cluster_refused", name, shards);
        assert!(err.contains(&said), "{name} {shards}: {err}");
    }
    // A database of one server opened as on the cluster, one of the cluster opened as of one
    // server, and a new one named as the shards' databases of local tables are: refused
    // before anything is done to them.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let single = TestDatabase::on(&rt, url, "one_server_here");
    let on_cluster = TestDatabase::on_cluster(&rt, "cluster_here");
    let local = Database::new("st_test_cluster_refused_local").unwrap();
    for (command, database, name, shards, said) in [
        (
            &["list"][..],
            &single.database,
            "st_test",
            both.as_str(),
            "was made for one server (its tables are MergeTree".to_owned(),
        ),
        (
            &import,
            &on_cluster.database,
            "",
            "",
            "lives on a ClickHouse cluster (its tables are distributed): give \
             --clickhouse-cluster"
                .to_owned(),
        ),
        (
            &import,
            &local,
            "st_test",
            both.as_str(),
            format!("the database name {local} ends in _local"),
        ),
    ] {
        let err = refused(command, database.as_str(), name, shards);
        assert!(err.contains(&said), "{database}: {err}");
    }
    for shard in &cluster.shards {
        let client = clickhouse::Client::default()
            .with_url(shard)
            .with_validation(false);
        let made: u64 = rt
            .block_on(
                client
                    .query(&format!(
                        "SELECT count() FROM system.databases WHERE name IN ('{}', '{}')",
                        single.database.local(),
                        local.local()
                    ))
                    .fetch_one(),
            )
            .unwrap();
        assert_eq!(made, 0, "{shard}");
    }

    // Nothing was created on any shard.
    for shard in &cluster.shards {
        let client = clickhouse::Client::default()
            .with_url(shard)
            .with_validation(false);
        let n: u64 = rt
            .block_on(
                client
                    .query("SELECT count() FROM system.databases WHERE startsWith(name, 'st_test_cluster_refused')")
                    .fetch_one(),
            )
            .unwrap();
        assert_eq!(n, 0, "{shard}");
    }
}

/// The work directory of the server of shard `shard` (0-based) of the test cluster.
fn shard_dir(shard: usize) -> String {
    let dirs = std::env::var("STORAGE_TRACKER_TEST_CLICKHOUSE_SHARD_DIRS")
        .expect("STORAGE_TRACKER_TEST_CLICKHOUSE_SHARD_DIRS: run the tests with ci/test.sh");
    dirs.split(',')
        .nth(shard)
        .expect("a work directory per shard")
        .to_owned()
}

/// `ci/clickhouse.sh CMD` for the server of shard `shard` (0-based) of the test cluster.
fn shard_server(shard: usize, cmd: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/clickhouse.sh");
    let o = Command::new("bash")
        .arg(script)
        .args([cmd, &shard_dir(shard)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Kills the server of shard `shard` at once (SIGKILL: its queries end in the middle).
fn kill_shard_server(shard: usize) {
    let pid = std::fs::read_to_string(format!("{}/clickhouse/server.pid", shard_dir(shard)))
        .expect("the shard's server.pid");
    let pid: i32 = pid.trim().parse().unwrap();
    // SAFETY: kill(2) with a pid and a signal number; it touches no memory of this process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
}

/// An offline scan of `entries` synthetic entries (snapshot `snapshot` of st-gen-chunks) in
/// 8192-row chunks, into `out`.
fn generated_scan(out: &Path, entries: u64, snapshot: u32) {
    let generate = Command::new(sibling_binary(
        scanner(),
        "st-gen-chunks",
        "storage-tracker-bench",
    ))
    .args(["--entries", &entries.to_string(), "--chunk-rows", "8192"])
    .args(["--snapshot", &snapshot.to_string()])
    .arg(out)
    .output()
    .unwrap();
    assert!(
        generate.status.success(),
        "{}",
        String::from_utf8_lossy(&generate.stderr)
    );
}

/// `storage-aggregator import DIR` into `db` on its cluster, started.
fn start_import(db: &TestDatabase, dir: &Path) -> std::process::Child {
    let cluster = db.cluster.as_ref().unwrap();
    Command::new(aggregator_binary(scanner()))
        .arg("import")
        .arg(dir)
        .env("STORAGE_TRACKER_CLICKHOUSE_URL", &db.url)
        .env("STORAGE_TRACKER_DATABASE", db.database.as_str())
        .env("STORAGE_TRACKER_CLICKHOUSE_CLUSTER", cluster.name.as_str())
        .env(
            "STORAGE_TRACKER_CLICKHOUSE_SHARDS",
            cluster.shards.join(","),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Polls `sql` (a count) on `client` until it is not 0.
fn wait_for(rt: &tokio::runtime::Runtime, client: &clickhouse::Client, sql: &str, what: &str) {
    let start = std::time::Instant::now();
    while rt
        .block_on(client.query(sql).fetch_one::<u64>())
        .unwrap_or(0)
        == 0
    {
        assert!(start.elapsed().as_secs() < 120, "{what} did not happen");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Stored {
    state: String,
    counted: u64,
    rows: u64,
    chunks: u64,
    rollups: u64,
    dirs: u64,
}

/// What the cluster holds of snapshot `id`: its state and entries as recorded, its rows and
/// chunks in `entries`, its rollups and its directories.
fn stored(rt: &tokio::runtime::Runtime, db: &TestDatabase, id: u64) -> Stored {
    let rows: Vec<Stored> = db.query(
        rt,
        &format!(
            "SELECT toString(state) AS state, entries AS counted, \
             (SELECT count() FROM {d}.entries WHERE snapshot_id = {id}) AS rows, \
             (SELECT uniqExact(rank, seq) FROM {d}.entries WHERE snapshot_id = {id}) AS chunks, \
             (SELECT count() FROM {d}.dir_rollups WHERE snapshot_id = {id}) AS rollups, \
             (SELECT count() FROM {d}.entries WHERE snapshot_id = {id} AND kind = 'dir') AS dirs \
             FROM {d}.snapshots FINAL WHERE snapshot_id = {id}",
            d = db.database
        ),
    );
    rows.into_iter().next().expect("the snapshot's record")
}

#[test]
fn a_shard_that_dies_during_an_import_loses_and_duplicates_nothing() {
    let _cluster = one_at_a_time();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::on_cluster(&rt, "shard_down");
    let scans = tempfile::tempdir().unwrap();
    let entries: u64 = 300_000;
    let first = db.cluster.as_ref().unwrap().shards[0].clone();
    let client = clickhouse::Client::default()
        .with_url(&first)
        .with_validation(false);

    // Once the first rows are on the first shard, the second dies (a graceful stop would let
    // the inserts under way finish) and is started again a few seconds later.
    let week1 = scans.path().join("week1");
    generated_scan(&week1, entries, 1);
    let import = start_import(&db, &week1);
    let landed = format!("SELECT count() FROM {}.entries", db.database.local());
    wait_for(&rt, &client, &landed, "rows landing on the first shard");
    kill_shard_server(1);
    std::thread::sleep(std::time::Duration::from_secs(5));
    shard_server(1, "restart");
    let o = import.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("storing chunks failed, will retry"),
        "the import was over before the shard died: {said}"
    );
    let s = stored(&rt, &db, 1);
    assert_eq!(
        (s.state.as_str(), s.counted, s.rows, s.chunks),
        ("committed", entries, entries, entries.div_ceil(8192))
    );
    assert_eq!(s.rollups, s.dirs, "one rollup per directory");

    // The next week's scan: the shard dies in the middle of the commit's reports and comes
    // back; the commit waits for it and is done again.
    let week2 = scans.path().join("week2");
    generated_scan(&week2, entries, 2);
    let import = start_import(&db, &week2);
    let computing = format!(
        "SELECT count() FROM system.processes \
         WHERE startsWith(query, 'INSERT INTO {}.dir_rollups')",
        db.database
    );
    wait_for(&rt, &client, &computing, "the commit's rollups");
    kill_shard_server(1);
    std::thread::sleep(std::time::Duration::from_secs(2));
    shard_server(1, "restart");
    let o = import.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{said}");
    assert!(
        said.contains("committing failed, will retry"),
        "the commit was over before the shard died: {said}"
    );
    let s = stored(&rt, &db, 2);
    assert_eq!((s.state.as_str(), s.rows), ("committed", s.counted));
    assert_eq!(s.rollups, s.dirs, "one rollup per directory");
}
