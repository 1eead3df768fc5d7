//! Test environment for the integration tests of the whole stack: a real ClickHouse (started by
//! `ci/clickhouse.sh`), a fresh database per test, an in-process aggregator on loopback, a
//! fixture tree, and ground truth computed independently of the scanner (std's by-path
//! `symlink_metadata`, not the scanner's `statx` relative to directory handles).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use storage_tracker_aggregator::{
    ClusterConfig, IngestService, ServiceOptions, Spool, Store, StoreConfig,
};
use storage_tracker_proto::ddl::{Cluster, Database};

/// The ClickHouse the tests use. Missing configuration fails the test: it never skips.
pub fn clickhouse_url() -> String {
    std::env::var("STORAGE_TRACKER_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| {
        panic!(
            "STORAGE_TRACKER_TEST_CLICKHOUSE_URL is not set. Integration tests need a real ClickHouse: \
             run them with ci/test.sh, or start one with `ci/clickhouse.sh start` and export the URL it prints"
        )
    })
}

/// The test cluster: two ClickHouse servers, each a shard of cluster `st_test` (ci/test.sh
/// starts them). Missing configuration fails the test.
pub fn test_cluster() -> ClusterConfig {
    let shards = std::env::var("STORAGE_TRACKER_TEST_CLICKHOUSE_SHARDS").unwrap_or_else(|_| {
        panic!(
            "STORAGE_TRACKER_TEST_CLICKHOUSE_SHARDS is not set. The cluster tests need a real \
             ClickHouse cluster: run them with ci/test.sh, which starts two servers as its shards"
        )
    });
    ClusterConfig {
        name: Cluster::new("st_test").unwrap(),
        shards: shards.split(',').map(str::to_owned).collect(),
    }
}

/// A database that exists for one test and is dropped afterwards.
pub struct TestDatabase {
    pub url: String,
    pub database: Database,
    /// The cluster it lives on, if not on the server at `url` alone.
    pub cluster: Option<ClusterConfig>,
    client: clickhouse::Client,
}

impl TestDatabase {
    pub fn new(runtime: &tokio::runtime::Runtime, tag: &str) -> Self {
        Self::on(runtime, &clickhouse_url(), tag)
    }

    /// A fresh database on the ClickHouse at `url`.
    pub fn on(runtime: &tokio::runtime::Runtime, url: &str, tag: &str) -> Self {
        Self::create(runtime, url, None, tag)
    }

    /// A fresh database on the test cluster, read and written through its first shard.
    pub fn on_cluster(runtime: &tokio::runtime::Runtime, tag: &str) -> Self {
        let cluster = test_cluster();
        Self::create(runtime, &cluster.shards[0].clone(), Some(cluster), tag)
    }

    fn create(
        runtime: &tokio::runtime::Runtime,
        url: &str,
        cluster: Option<ClusterConfig>,
        tag: &str,
    ) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let url = url.to_owned();
        let name = format!(
            "st_test_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let database = Database::new(&name).unwrap();
        let client = clickhouse::Client::default()
            .with_url(&url)
            .with_validation(false);
        let db = Self {
            url,
            database,
            cluster,
            client,
        };
        runtime
            .block_on(Store::new(db.store_config()).migrate())
            .expect("creating the test database");
        db
    }

    pub fn store_config(&self) -> StoreConfig {
        StoreConfig {
            url: self.url.clone(),
            user: "default".into(),
            password: String::new(),
            database: self.database.clone(),
            cluster: self.cluster.clone(),
        }
    }

    /// A statement as the writing user (a test's own change of the data).
    pub fn execute(&self, runtime: &tokio::runtime::Runtime, sql: &str) {
        runtime
            .block_on(self.client.query(sql).execute())
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// A query as the writing user, for checks.
    pub fn query<T>(&self, runtime: &tokio::runtime::Runtime, sql: &str) -> Vec<T>
    where
        T: clickhouse::RowOwned + clickhouse::RowRead,
    {
        runtime
            .block_on(self.client.query(sql).fetch_all::<T>())
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let mut drops = vec![(self.client.clone(), self.database.clone())];
        if let Some(cluster) = &self.cluster {
            drops.clear();
            for shard in &cluster.shards {
                let client = clickhouse::Client::default().with_url(shard);
                drops.push((client.clone(), self.database.clone()));
                drops.push((client, self.database.local()));
            }
        }
        // A runtime of its own: Drop may run while the test's runtime is gone.
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            for (client, database) in drops {
                let sql = format!("DROP DATABASE IF EXISTS {database}");
                let _ = rt.block_on(client.query(&sql).execute());
            }
        }
    }
}

/// A running aggregator on 127.0.0.1 with a spool of its own, stopped when dropped.
pub struct Aggregator {
    pub addr: String,
    pub spool: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Aggregator {
    pub fn start(runtime: &tokio::runtime::Runtime, db: &TestDatabase) -> Self {
        Self::start_with(runtime, db, |_| {})
    }

    /// Started with options adjusted by `adjust`.
    pub fn start_with(
        runtime: &tokio::runtime::Runtime,
        db: &TestDatabase,
        adjust: impl FnOnce(&mut ServiceOptions),
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let spool = tempfile::tempdir().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let store = Store::new(db.store_config());
        let mut options = ServiceOptions::new(Spool::open(spool.path()).unwrap());
        // Each test has a database of its own: no other aggregator's snapshots to fail.
        options.fail_unspooled = false;
        adjust(&mut options);
        let service = runtime
            .block_on(IngestService::start(store, options))
            .expect("the aggregator starts");
        runtime.spawn(async move {
            storage_tracker_aggregator::serve(listener, service, async {
                let _ = stopped.await;
            })
            .await
            .expect("aggregator serves");
        });
        Self {
            addr,
            spool,
            stop: Some(stop),
        }
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A valid Parquet file of another schema: one Int32 column named "path" with `rows` rows.
pub fn foreign_parquet(rows: i32) -> Vec<u8> {
    use arrow_array::{Int32Array, RecordBatch};
    use std::sync::Arc;
    let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
        "path",
        arrow_schema::DataType::Int32,
        false,
    )]));
    let values = Int32Array::from((1..=rows).collect::<Vec<_>>());
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
    let mut out = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut out, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// One GET of the API `app` in process (with `Authorization: Bearer token`): the status, the
/// content type and the body.
pub fn api_get(
    rt: &tokio::runtime::Runtime,
    app: &axum::Router,
    uri: &str,
    token: Option<&str>,
) -> (u16, String, Vec<u8>) {
    use tower::ServiceExt;
    let mut request = axum::http::Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = rt
        .block_on(
            app.clone()
                .oneshot(request.body(axum::body::Body::empty()).unwrap()),
        )
        .unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = rt
        .block_on(axum::body::to_bytes(response.into_body(), 64 << 20))
        .unwrap();
    (status, content_type, body.to_vec())
}

/// The API's read-only view of `db`: the `storage_reader` user, as a site runs the API.
pub fn reader(db: &TestDatabase) -> storage_tracker_api::ReadConfig {
    storage_tracker_api::ReadConfig {
        url: db.url.clone(),
        user: "storage_reader".into(),
        password: String::new(),
        database: db.database.clone(),
    }
}

/// Scans `root` into the aggregator's database as one committed snapshot (one process).
pub fn scan(aggregator: &Aggregator, root: &Path) {
    let o = Command::new(scanner())
        .args(["--aggregator", &aggregator.addr])
        .arg(root)
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The `storage-scan` binary of this build (target/<profile>/, beside the test's own `deps/`).
/// Another package's binaries are not built for this package's tests: `cargo build --workspace
/// --bins` (or `cargo test --workspace`) builds them first, as `ci/test.sh` does.
pub fn scanner() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's own path");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test binary lives in target/<profile>/deps");
        let path = profile.join("storage-scan");
        assert!(
            path.exists(),
            "{} is missing: build it with `cargo build --workspace --bins` (cargo test --workspace does)",
            path.display()
        );
        path.to_str().expect("a UTF-8 target directory").to_owned()
    })
}

/// The `storage-aggregator` binary beside `scanner` (`cargo test --workspace` builds both).
/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn aggregator_binary(scanner: &str) -> PathBuf {
    sibling_binary(scanner, "storage-aggregator", "storage-tracker-aggregator")
}

/// The latency lab's `st-lab` binary beside `scanner` (`cargo build -p storage-tracker-lab`;
/// `cargo test --workspace` builds it).
pub fn lab_binary() -> PathBuf {
    sibling_binary(scanner(), "st-lab", "storage-tracker-lab")
}

/// The binary `name` of package `package`, beside `scanner`.
pub fn sibling_binary(scanner: &str, name: &str, package: &str) -> PathBuf {
    let path = Path::new(scanner).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p {package}` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// `scanner` with the arguments that run it as "nobody" (root ignores permission bits). The
/// binary is copied into `dir` first: the build directory need not be readable by others.
pub fn as_nobody(scanner: &str, dir: &Path) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.join("storage-scan");
    std::fs::copy(scanner, &copy).expect("copying the scanner");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(copy)
        .env_remove("SLURM_PROCID");
    cmd
}

pub fn os(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// The fixture: every case a faithful scan must get right.
pub struct Fixture {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
}

pub const HUGE_DIR_ENTRIES: usize = 20_000;
pub const DEPTH: usize = 12;
pub const WIDE_DIRS: usize = 200;

impl Fixture {
    pub fn build() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let w = |p: &str, bytes: usize| std::fs::write(root.join(p), vec![b'x'; bytes]).unwrap();
        let d = |p: &str| std::fs::create_dir_all(root.join(p)).unwrap();

        // Hidden entries are entries.
        d(".hidden_dir/.nested_hidden");
        w(".hidden_dir/.secret", 1234);
        w(".hidden_dir/.nested_hidden/.deeper", 17);
        w(".dotfile", 99);

        // Symlinks (to a file, to a directory, dangling) are recorded, never followed; hard
        // links appear at each path; a FIFO; a name that is not UTF-8; an HTML-like name.
        d("mixed");
        w("mixed/target.bin", 5000);
        std::os::unix::fs::symlink("target.bin", root.join("mixed/link_to_file")).unwrap();
        std::os::unix::fs::symlink("../wide", root.join("mixed/link_to_dir")).unwrap();
        std::os::unix::fs::symlink("does/not/exist", root.join("mixed/dangling")).unwrap();
        std::fs::hard_link(
            root.join("mixed/target.bin"),
            root.join("mixed/hard_link.bin"),
        )
        .unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("mixed/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        std::fs::write(
            os(&[
                root.join("mixed").as_os_str().as_bytes(),
                b"/bad_\xff\xfe.dat",
            ]
            .concat()),
            vec![0u8; 321],
        )
        .unwrap();
        w("mixed/<img src=x onerror=alert(1)>.txt", 12);
        // A sparse file: a large apparent size, nearly nothing allocated.
        std::fs::File::create(root.join("mixed/sparse.img"))
            .unwrap()
            .set_len(3 << 30)
            .unwrap();

        // Empty directories.
        d("empty");
        d("wide/d000/empty_leaf");

        // Wide: many small directories, so every rank has work to steal.
        for i in 0..WIDE_DIRS {
            d(&format!("wide/d{i:03}"));
            for j in 0..5 {
                w(&format!("wide/d{i:03}/f{j}"), i * 10 + j);
            }
        }

        // Old, pre-1970 and future times, for the age histograms.
        let day = std::time::Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        for (p, mtime, atime) in [
            ("wide/d000/f0", now - day * 400, now - day * 800),
            (
                "wide/d001/f1",
                std::time::UNIX_EPOCH - day * 3650,
                now - day * 2000,
            ),
            ("wide/d002/f2", now + day * 30, now - day * 8),
        ] {
            std::fs::File::options()
                .write(true)
                .open(root.join(p))
                .unwrap()
                .set_times(
                    std::fs::FileTimes::new()
                        .set_modified(mtime)
                        .set_accessed(atime),
                )
                .unwrap();
        }

        // Deep: a chain deeper than 10.
        let mut p = String::from("deep");
        for level in 1..=DEPTH {
            p.push_str(&format!("/l{level}"));
            d(&p);
            w(&format!("{p}/file{level}"), level * 10);
        }

        // One huge directory.
        d("huge");
        for i in 0..HUGE_DIR_ENTRIES {
            std::fs::write(
                root.join(format!("huge/f{i:05}")),
                if i % 1000 == 0 {
                    &b"0123456789"[..]
                } else {
                    &b""[..]
                },
            )
            .unwrap();
        }
        Self { _dir: dir, root }
    }

    pub fn root_bytes(&self) -> &[u8] {
        self.root.as_os_str().as_bytes()
    }
}

/// One entry as std sees it.
#[derive(Debug, Clone)]
pub struct TruthEntry {
    pub path: Vec<u8>,
    pub kind: &'static str,
    pub size: u64,
    pub allocated: u64,
    pub uid: u32,
    pub gid: u32,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime_ns: i64,
    pub atime_ns: i64,
}

impl TruthEntry {
    pub fn name(&self) -> &[u8] {
        let at = self
            .path
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        &self.path[at..]
    }

    fn hard_linked(&self) -> bool {
        self.kind != "dir" && self.nlink > 1
    }
}

fn kind_of(md: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "dir"
    } else if t.is_file() {
        "file"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block"
    } else if t.is_char_device() {
        "char"
    } else {
        "unknown"
    }
}

/// Every entry under (and including) `root`, by the benchmarks' plain walk
/// ([`storage_tracker_bench::truth::walk`]).
pub fn ground_truth(root: &Path) -> Vec<TruthEntry> {
    let mut out = Vec::new();
    storage_tracker_bench::truth::walk(root, |p, md| {
        out.push(TruthEntry {
            path: p.as_os_str().as_bytes().to_vec(),
            kind: kind_of(md),
            size: md.size(),
            allocated: md.blocks() * 512,
            uid: md.uid(),
            gid: md.gid(),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            atime_ns: md.atime() * 1_000_000_000 + md.atime_nsec(),
        })
    })
    .unwrap();
    out
}

/// Recursive totals of a directory by the product's definition: bytes of the directory and
/// everything below it (a hard-linked file once, as `du` counts it); entries, files and
/// directories strictly below it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TreeTotals {
    pub bytes: u64,
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
}

pub fn tree_totals(truth: &[TruthEntry], dir: &[u8]) -> TreeTotals {
    let mut below = dir.to_vec();
    below.push(b'/');
    let mut t = TreeTotals::default();
    let mut inodes = BTreeSet::new();
    for e in truth {
        if e.path == dir {
            t.bytes += e.size;
        } else if e.path.starts_with(&below) {
            if !e.hard_linked() || inodes.insert((e.dev, e.ino)) {
                t.bytes += e.size;
            }
            t.entries += 1;
            t.files += u64::from(e.kind == "file");
            t.dirs += u64::from(e.kind == "dir");
        }
    }
    t
}

/// Expected API children of `dir`: (name bytes, kind, bytes, files, dirs), largest first,
/// then by name bytes.
pub fn expected_children(
    truth: &[TruthEntry],
    dir: &[u8],
) -> Vec<(Vec<u8>, &'static str, u64, u64, u64)> {
    let mut prefix = dir.to_vec();
    prefix.push(b'/');
    let mut children: Vec<_> = truth
        .iter()
        .filter(|e| e.path.starts_with(&prefix) && !e.path[prefix.len()..].contains(&b'/'))
        .map(|e| {
            let name = e.path[prefix.len()..].to_vec();
            if e.kind == "dir" {
                let t = tree_totals(truth, &e.path);
                (name, e.kind, t.bytes, t.files, t.dirs)
            } else {
                (name, e.kind, e.size, 0, 0)
            }
        })
        .collect();
    children.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    children
}

pub fn kind_counts(truth: &[TruthEntry]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for e in truth {
        *m.entry(e.kind.to_owned()).or_insert(0) += 1;
    }
    m
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct FullRollup {
    #[serde(with = "serde_bytes")]
    path: Vec<u8>,
    bytes: u64,
    allocated: u64,
    entries: u64,
    files: u64,
    dirs: u64,
    direct_bytes: u64,
    direct_allocated: u64,
    direct_entries: u64,
    direct_files: u64,
    direct_dirs: u64,
}

/// (bytes, allocated, entries, files, dirs) recursive then direct, by the product's rules:
/// recursive totals include the directory's own bytes; a hard-linked file's apparent and
/// allocated bytes count once per directory.
fn expected_rollup(truth: &[TruthEntry], dir: &TruthEntry) -> [u64; 10] {
    let mut below = dir.path.clone();
    below.push(b'/');
    let mut r = [0u64; 10];
    r[0] = dir.size;
    r[1] = dir.allocated;
    let mut inodes = BTreeSet::new();
    let mut direct_inodes = BTreeSet::new();
    for e in truth.iter().filter(|e| e.path.starts_with(&below)) {
        let direct = !e.path[below.len()..].contains(&b'/');
        let counts = |r: &mut [u64], at: usize, inodes: &mut BTreeSet<(u64, u64)>| {
            if !e.hard_linked() || inodes.insert((e.dev, e.ino)) {
                r[at] += e.size;
                r[at + 1] += e.allocated;
            }
            r[at + 2] += 1;
            r[at + 3] += u64::from(e.kind == "file");
            r[at + 4] += u64::from(e.kind == "dir");
        };
        counts(&mut r, 0, &mut inodes);
        if direct {
            counts(&mut r, 5, &mut direct_inodes);
        }
    }
    // The recursive entry count excludes the directory itself; bytes include it.
    r
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Usage {
    id: u32,
    files: u64,
    bytes: u64,
    allocated: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct TopUsage {
    id: u32,
    #[serde(with = "serde_bytes")]
    top: Vec<u8>,
    entries: u64,
    bytes: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct TypeUsage {
    #[serde(with = "serde_bytes")]
    extension: Vec<u8>,
    files: u64,
    bytes: u64,
    allocated: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Bucket {
    histogram_name: String,
    bucket: u8,
    files: u64,
    bytes: u64,
    allocated: u64,
}

/// Checks every report of committed snapshot `id` against `truth`: the rollups of every
/// directory (recursive and direct), usage per user and group, per file type, and the size and
/// age histograms (ages seen from `started_at_ns`, the snapshot's start in nanoseconds).
pub fn check_reports(
    rt: &tokio::runtime::Runtime,
    db: &TestDatabase,
    id: u64,
    truth: &[TruthEntry],
    started_at_ns: i64,
) {
    use storage_tracker_proto::reports::{age_bucket, extension, size_bucket};
    let d = &db.database;
    let rollups: Vec<FullRollup> = db.query(rt, &format!(
        "SELECT path, bytes, allocated, entries, files, dirs, direct_bytes, direct_allocated, direct_entries, \
         direct_files, direct_dirs FROM {d}.dir_rollups WHERE snapshot_id = {id}"
    ));
    let dirs: BTreeMap<&[u8], &TruthEntry> = truth
        .iter()
        .filter(|e| e.kind == "dir")
        .map(|e| (e.path.as_slice(), e))
        .collect();
    assert_eq!(rollups.len(), dirs.len(), "one rollup per directory");
    for r in &rollups {
        let dir = dirs
            .get(r.path.as_slice())
            .unwrap_or_else(|| panic!("rollup of {}", String::from_utf8_lossy(&r.path)));
        let got = [
            r.bytes,
            r.allocated,
            r.entries,
            r.files,
            r.dirs,
            r.direct_bytes,
            r.direct_allocated,
            r.direct_entries,
            r.direct_files,
            r.direct_dirs,
        ];
        assert_eq!(
            got,
            expected_rollup(truth, dir),
            "rollup of {} (bytes, allocated, entries, files, dirs; then direct)",
            String::from_utf8_lossy(&r.path)
        );
    }

    // Per snapshot, a hard-linked file's bytes count once, on its smallest path.
    let mut first_link: BTreeMap<(u64, u64), &[u8]> = BTreeMap::new();
    for e in truth.iter().filter(|e| e.hard_linked()) {
        let first = first_link.entry((e.dev, e.ino)).or_insert(&e.path);
        if e.path.as_slice() < *first {
            *first = &e.path;
        }
    }
    let counted =
        |e: &TruthEntry| !e.hard_linked() || first_link[&(e.dev, e.ino)] == e.path.as_slice();
    let alloc_once = |e: &TruthEntry| if counted(e) { e.allocated } else { 0 };
    let size_once = |e: &TruthEntry| if counted(e) { e.size } else { 0 };

    // Per user, per top-level directory below the root ('' for the root itself).
    let root_depth = truth.iter().map(|e| e.path.len()).min().unwrap_or(0);
    let top_of = |e: &TruthEntry| -> Vec<u8> {
        if e.path.len() == root_depth {
            return Vec::new();
        }
        let below = &e.path[root_depth + 1..];
        below
            .split(|&b| b == b'/')
            .next()
            .unwrap_or_default()
            .to_vec()
    };
    let mut want: BTreeMap<(u32, Vec<u8>), (u64, u64)> = BTreeMap::new();
    for e in truth {
        let w = want.entry((e.uid, top_of(e))).or_default();
        w.0 += 1;
        w.1 += size_once(e);
    }
    let got: BTreeMap<(u32, Vec<u8>), (u64, u64)> = db
        .query::<TopUsage>(rt, &format!(
            "SELECT id, top, entries, bytes FROM {d}.owner_usage WHERE snapshot_id = {id} AND principal = 'user'"
        ))
        .into_iter()
        .map(|u| ((u.id, u.top), (u.entries, u.bytes)))
        .collect();
    assert_eq!(
        got, want,
        "usage per user and top-level directory (entries, bytes)"
    );

    for (principal, of) in [
        ("user", (|e: &TruthEntry| e.uid) as fn(&TruthEntry) -> u32),
        ("group", |e| e.gid),
    ] {
        let mut want: BTreeMap<u32, (u64, u64, u64)> = BTreeMap::new();
        for e in truth {
            let w = want.entry(of(e)).or_default();
            w.0 += u64::from(e.kind == "file");
            w.1 += size_once(e);
            w.2 += alloc_once(e);
        }
        let got: BTreeMap<u32, (u64, u64, u64)> = db
            .query::<Usage>(rt, &format!(
                "SELECT id, sum(files) AS files, sum(bytes) AS bytes, sum(allocated) AS allocated \
                 FROM {d}.owner_usage WHERE snapshot_id = {id} AND principal = '{principal}' GROUP BY id"
            ))
            .into_iter()
            .map(|u| (u.id, (u.files, u.bytes, u.allocated)))
            .collect();
        assert_eq!(got, want, "usage per {principal} (files, bytes, allocated)");
    }

    let files: Vec<&TruthEntry> = truth.iter().filter(|e| e.kind == "file").collect();
    let mut want: BTreeMap<Vec<u8>, (u64, u64, u64)> = BTreeMap::new();
    for e in &files {
        let w = want.entry(extension(e.name())).or_default();
        w.0 += 1;
        w.1 += size_once(e);
        w.2 += alloc_once(e);
    }
    let got: BTreeMap<Vec<u8>, (u64, u64, u64)> = db
        .query::<TypeUsage>(rt, &format!(
            "SELECT extension, files, bytes, allocated FROM {d}.type_usage WHERE snapshot_id = {id}"
        ))
        .into_iter()
        .map(|t| (t.extension, (t.files, t.bytes, t.allocated)))
        .collect();
    assert_eq!(got, want, "usage per file type (files, bytes, allocated)");

    let now = started_at_ns;
    let mut want: BTreeMap<(String, u8), (u64, u64, u64)> = BTreeMap::new();
    for e in &files {
        for (h, bucket) in [
            ("size", size_bucket(e.size)),
            ("mtime", age_bucket(e.mtime_ns, now)),
            ("atime", age_bucket(e.atime_ns, now)),
        ] {
            let w = want.entry((h.to_owned(), bucket)).or_default();
            w.0 += 1;
            w.1 += size_once(e);
            w.2 += alloc_once(e);
        }
    }
    let got: BTreeMap<(String, u8), (u64, u64, u64)> = db
        .query::<Bucket>(
            rt,
            &format!(
                "SELECT toString(histogram) AS histogram_name, bucket, files, bytes, allocated \
             FROM {d}.histograms WHERE snapshot_id = {id}"
            ),
        )
        .into_iter()
        .map(|b| {
            (
                (b.histogram_name, b.bucket),
                (b.files, b.bytes, b.allocated),
            )
        })
        .collect();
    assert_eq!(got, want, "histograms (files, bytes, allocated)");
}

/// `truth` as seen below `to` instead of `from` (a tree scanned through a mount of it): every
/// path rebased, everything else as std saw it under `from`.
pub fn rebased(truth: &[TruthEntry], from: &Path, to: &Path) -> Vec<TruthEntry> {
    let (from, to) = (from.as_os_str().as_bytes(), to.as_os_str().as_bytes());
    truth
        .iter()
        .map(|e| {
            let below = e.path.strip_prefix(from).unwrap_or_else(|| {
                panic!(
                    "{} is not below {}",
                    String::from_utf8_lossy(&e.path),
                    String::from_utf8_lossy(from)
                )
            });
            TruthEntry {
                path: [to, below].concat(),
                ..e.clone()
            }
        })
        .collect()
}

/// The Slurm the tests use (`ci/slurm.sh start`, as `ci/test.sh` does). Missing configuration
/// fails the test: it never skips.
pub fn slurm_conf() -> String {
    std::env::var("SLURM_CONF").unwrap_or_else(|_| {
        panic!(
            "SLURM_CONF is not set. This test needs a real Slurm: run it with ci/test.sh, or \
             start one with `ci/slurm.sh start` and export SLURM_CONF"
        )
    })
}
