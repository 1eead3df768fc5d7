//! Faults during a scan, with real processes: the aggregator is killed (SIGKILL) in the middle
//! of a scan and started again on its spool, and ClickHouse is restarted in the middle of the
//! inserts. The committed snapshot must still equal the ground truth exactly: nothing the
//! aggregator acknowledged is lost, nothing is stored twice.
//!
//! The test runs a ClickHouse server of its own (through `ci/clickhouse.sh`, on free ports), so
//! restarting it disturbs no other test. It needs the `storage-aggregator` binary beside
//! `storage-scan` (`cargo test --workspace` builds both).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use support::*;

fn aggregator_binary() -> PathBuf {
    support::aggregator_binary(scanner())
}

/// A ClickHouse server of this test's own, stopped when dropped.
struct PrivateClickHouse {
    work: tempfile::TempDir,
    http: u16,
    tcp: u16,
}

impl PrivateClickHouse {
    fn start() -> Self {
        let ch = Self {
            work: tempfile::tempdir().unwrap(),
            http: free_port(),
            tcp: free_port(),
        };
        ch.run("start");
        ch
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn run(&self, what: &str) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/clickhouse.sh");
        let out = Command::new("bash")
            .arg(script)
            .args([what, self.work.path().to_str().unwrap()])
            .env("STORAGE_TRACKER_CH_HTTP_PORT", self.http.to_string())
            .env("STORAGE_TRACKER_CH_TCP_PORT", self.tcp.to_string())
            .output()
            .expect("ci/clickhouse.sh runs");
        assert!(
            out.status.success(),
            "ci/clickhouse.sh {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.run("stop");
    }
}

/// A child process killed when dropped, so a failing test leaves none behind (one would hold
/// the test's output open).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `storage-aggregator serve` as a child process.
fn start_aggregator(ch: &PrivateClickHouse, db: &TestDatabase, port: u16, spool: &Path) -> Killed {
    let child = Command::new(aggregator_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--spool")
        .arg(spool)
        .env("STORAGE_TRACKER_CLICKHOUSE_URL", ch.url())
        .env("STORAGE_TRACKER_DATABASE", db.database.as_str())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_for(Duration::from_secs(30), "the aggregator listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Count {
    n: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Committed {
    snapshot_id: u64,
    state_name: String,
    entries: u64,
    /// The scan's start, nanoseconds since the epoch.
    started: i64,
    rows: u64,
    distinct_paths: u64,
    bytes: u64,
}

/// Rows stored so far, or None while ClickHouse is down.
fn stored_rows(rt: &tokio::runtime::Runtime, db: &TestDatabase) -> Option<u64> {
    let client = clickhouse::Client::default()
        .with_url(&db.url)
        .with_validation(false);
    let sql = format!("SELECT count() AS n FROM {}.entries", db.database);
    rt.block_on(client.query(&sql).fetch_one::<Count>())
        .ok()
        .map(|c| c.n)
}

#[test]
fn aggregator_killed_and_clickhouse_restarted_mid_scan_lose_and_duplicate_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ch = PrivateClickHouse::start();
    let db = TestDatabase::on(&rt, &ch.url(), "faults");
    let fixture = Fixture::build();
    let spool = tempfile::tempdir().unwrap();
    let port = free_port();
    let aggregator = start_aggregator(&ch, &db, port, spool.path());

    // Small chunks, one in flight: hundreds of chunks, each acknowledged before the next.
    let scanner = Command::new(scanner())
        .args(["--aggregator", &format!("http://127.0.0.1:{port}")])
        .args(["--threads", "2", "--chunk-rows", "64", "--in-flight", "1"])
        .args(["--retry-for", "120"])
        .arg(&fixture.root)
        .env_remove("SLURM_PROCID")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // 1. Some chunks are in ClickHouse, more are acknowledged: kill the aggregator.
    wait_for(Duration::from_secs(60), "some chunks are stored", || {
        stored_rows(&rt, &db).is_some_and(|n| n >= 5 * 64)
    });
    drop(aggregator);
    let before_restart = stored_rows(&rt, &db).unwrap();

    // 2. Start it again on its spool; once inserts flow again, restart ClickHouse under them.
    let aggregator = start_aggregator(&ch, &db, port, spool.path());
    wait_for(Duration::from_secs(60), "inserts resume", || {
        stored_rows(&rt, &db).is_some_and(|n| n > before_restart)
    });
    ch.run("stop");
    std::thread::sleep(Duration::from_millis(500));
    ch.run("start");

    // 3. The scan finishes by itself and the snapshot commits.
    let output = scanner.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the scan failed: {:?}\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains("retrying in"),
        "the scanner had to retry: {stderr}"
    );
    assert!(stderr.contains("snapshot committed"), "{stderr}");
    drop(aggregator);

    let truth = ground_truth(&fixture.root);
    let d = &db.database;
    let committed: Vec<Committed> = db.query(&rt, &format!(
        "SELECT snapshot_id, toString(state) AS state_name, entries, started_at_ns AS started, \
         (SELECT count() FROM {d}.entries) AS rows, (SELECT uniqExact(path) FROM {d}.entries) AS distinct_paths, \
         (SELECT sum(size) FROM {d}.entries) AS bytes FROM {d}.snapshots FINAL"
    ));
    assert_eq!(committed.len(), 1, "{committed:?}");
    let c = &committed[0];
    assert_eq!(c.state_name, "committed");
    let n = truth.len() as u64;
    assert_eq!(
        (c.entries, c.rows, c.distinct_paths),
        (n, n, n),
        "every entry exactly once"
    );
    assert_eq!(c.bytes, truth.iter().map(|e| e.size).sum::<u64>());
    check_reports(&rt, &db, c.snapshot_id, &truth, c.started);
    assert!(
        std::fs::read_dir(spool.path().join("snapshots"))
            .unwrap()
            .next()
            .is_none(),
        "the spool is empty after the commit"
    );
}
