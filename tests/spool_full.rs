//! The aggregator's spool fills its disk in the middle of a scan, with real processes: the
//! spool is a small tmpfs, mostly taken by a ballast file, and a real `storage-scan` of a
//! generated tree sends more than fits; once chunks are acknowledged, another writer takes
//! whatever is freed there. The aggregator stops acknowledging and says why (its log and
//! `/metrics`), the scanner waits and sends again (its log says why), nothing fails; once the
//! ballast is deleted the scan finishes and the snapshot commits once, equal to the ground
//! truth. A spool that stays full past the scanner's `--retry-for` ends the scan then,
//! and no sooner.
//!
//! The tests mount tmpfs, so they run as root, and they need ClickHouse
//! (`STORAGE_TRACKER_TEST_CLICKHOUSE_URL`) and the `storage-aggregator` binary beside
//! `storage-scan` (`cargo build --workspace --bins`). Anything missing fails them.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use support::*;

/// Pages of the tmpfs (its block size).
const PAGE: u64 = 4096;

/// A tmpfs of `size_mib` mounted on a directory of its own, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m")])
            .arg("tmpfs")
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs on {} failed (this test runs as root): {}",
            dir.path().display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes that may still be written.
    fn free(&self) -> u64 {
        let s = rustix::fs::statvfs(self.path()).unwrap();
        s.f_bavail * s.f_frsize
    }

    /// Writes a ballast file that leaves about `leave` bytes free; its path.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let ballast = self.path().join("ballast");
        let size = self.free().saturating_sub(leave) / PAGE * PAGE;
        let mut f = fs::File::create(&ballast).unwrap();
        let block = vec![0xa5u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
        f.sync_all().unwrap();
        ballast
    }
}

/// Another writer on the spool's filesystem that keeps taking what is freed there, so that
/// at most `leave` bytes stay free, until dropped (then its file stays until deleted).
struct Filler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Filler {
    fn start(tmpfs: &Tmpfs, file: PathBuf, leave: u64) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let root = tmpfs.path().to_owned();
        let stopping = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut f = fs::File::create(&file).unwrap();
            while !stopping.load(Ordering::SeqCst) {
                let s = rustix::fs::statvfs(&root).unwrap();
                let excess = (s.f_bavail * s.f_frsize).saturating_sub(leave) / PAGE * PAGE;
                if excess > 0 {
                    // What the aggregator takes meanwhile makes this fail short: fine.
                    let _ = f.write_all(&vec![0x5a; excess as usize]);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a child not yet reaped): detach it now, it goes when unused.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `storage-aggregator serve` on `spool`, its log in `log`; its gRPC and metrics ports.
struct AggregatorProcess {
    _child: Killed,
    grpc: u16,
    metrics: u16,
    log: PathBuf,
}

impl AggregatorProcess {
    fn start(db: &TestDatabase, spool: &Path, log: PathBuf) -> Self {
        let (grpc, metrics) = (free_port(), free_port());
        let mut child = Command::new(aggregator_binary(scanner()))
            .args(["serve", "--listen", &format!("127.0.0.1:{grpc}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
            .arg("--spool")
            .arg(spool)
            .env("STORAGE_TRACKER_CLICKHOUSE_URL", &db.url)
            .env("STORAGE_TRACKER_DATABASE", db.database.as_str())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", grpc)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", metrics)).is_err()
        {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the aggregator exited before listening: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(Instant::now() < deadline, "the aggregator does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            _child: Killed(child),
            grpc,
            metrics,
            log,
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /metrics`.
    fn metrics(&self) -> String {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default()
    }
}

/// The value of the series `series` (name and labels, as rendered) in a `/metrics` text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The aggregator's last log line about the spool's room.
fn last_spool_line(log: &str) -> Option<&str> {
    log.lines()
        .rfind(|l| l.contains("the spool is full") || l.contains("the spool has room again"))
}

/// `storage-scan` of `root` into the aggregator, its log in `log`.
fn start_scan(aggregator: &AggregatorProcess, root: &Path, retry_for: u64, log: &Path) -> Killed {
    let child = Command::new(scanner())
        .args([
            "--aggregator",
            &format!("http://127.0.0.1:{}", aggregator.grpc),
        ])
        .args(["--threads", "2", "--chunk-rows", &CHUNK_ROWS.to_string()])
        .args(["--in-flight", "2", "--retry-for", &retry_for.to_string()])
        .arg(root)
        .env_remove("SLURM_PROCID")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Killed(child)
}

const CHUNK_ROWS: u64 = 500;

/// A tree of 8 directories of 1,200 files, with long names that do not compress well, so that
/// each chunk of [`CHUNK_ROWS`] rows takes tens of KiB.
fn generate_tree(root: &Path) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for d in 0..8 {
        let dir = root.join(format!("dir{d}"));
        fs::create_dir(&dir).unwrap();
        for i in 0..1200u64 {
            let mut name = String::new();
            for _ in 0..5 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                name.push_str(&format!("{x:016x}"));
            }
            let file = dir.join(format!("{name}-{i}.dat"));
            fs::write(&file, vec![b'x'; (x % 3000) as usize]).unwrap();
        }
    }
}

/// The largest chunk a scan of `root` writes: an offline scan of it with the same options.
fn largest_chunk(root: &Path, out: &Path) -> u64 {
    let o = Command::new(scanner())
        .arg("--output")
        .arg(out)
        .args(["--threads", "2", "--chunk-rows", &CHUNK_ROWS.to_string()])
        .arg(root)
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let sizes: Vec<u64> = fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert!(sizes.len() >= 8, "a scan of many chunks: {sizes:?}");
    sizes.into_iter().max().unwrap()
}

/// The spool's chunk files (acknowledged, not yet stored).
fn spool_chunk_files(spool: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in fs::read_dir(spool.join("snapshots")).unwrap() {
        for f in fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = f.unwrap().path();
            if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found
}

/// Files of the spool whose name says a write under way (`*.tmp`).
fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            found.extend(temporary_files(&e.path()));
        } else if e.file_name().to_string_lossy().ends_with(".tmp") {
            found.push(e.path());
        }
    }
    found
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match done() {
            Ok(()) => return,
            Err(state) => assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting until {what}:\n{state}"
            ),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Snapshot {
    snapshot_id: u64,
    state_name: String,
    message: String,
    entries: u64,
    started: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Stored {
    rows: u64,
    distinct_paths: u64,
    bytes: u64,
}

fn snapshots(rt: &tokio::runtime::Runtime, db: &TestDatabase) -> Vec<Snapshot> {
    db.query(
        rt,
        &format!(
            "SELECT snapshot_id, toString(state) AS state_name, message, entries, \
             started_at_ns AS started FROM {}.snapshots FINAL ORDER BY snapshot_id",
            db.database
        ),
    )
}

/// What a test needs: ClickHouse and a database, the tree and the largest chunk of its scan,
/// a tmpfs spool, and a directory for the logs.
struct Setup {
    rt: tokio::runtime::Runtime,
    db: TestDatabase,
    tree: tempfile::TempDir,
    largest_chunk: u64,
    logs: tempfile::TempDir,
}

impl Setup {
    fn new(tag: &str) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = TestDatabase::new(&rt, tag);
        let tree = tempfile::tempdir().unwrap();
        generate_tree(tree.path());
        let logs = tempfile::tempdir().unwrap();
        let largest_chunk = largest_chunk(tree.path(), &logs.path().join("offline"));
        Self {
            rt,
            db,
            tree,
            largest_chunk,
            logs,
        }
    }
}

#[test]
fn a_full_spool_holds_the_scan_back_until_space_is_freed_then_it_commits_once() {
    let setup = Setup::new("spool_full");
    let Setup { rt, db, tree, .. } = &setup;
    let spool_fs = Tmpfs::mount(16);
    let spool = spool_fs.path().join("spool");
    // Room for the snapshot's record and a chunk and a half: the first chunk is acknowledged,
    // and the spool fills and drains as chunks arrive and are stored.
    let ballast = spool_fs.fill_leaving(setup.largest_chunk * 3 / 2 + 2 * PAGE);
    let aggregator = AggregatorProcess::start(db, &spool, setup.logs.path().join("aggregator.log"));
    let scan_log = setup.logs.path().join("scan.log");
    let mut scan = start_scan(&aggregator, tree.path(), 60, &scan_log);
    let scan_text = || fs::read_to_string(&scan_log).unwrap_or_default();
    let series = |name: &str| metric(&aggregator.metrics(), name);
    wait_until(
        Duration::from_secs(30),
        "chunks are acknowledged and one is refused",
        || match (
            series("storage_tracker_chunks_received_total{result=\"accepted\"}"),
            series("storage_tracker_spool_full_refusals_total{write=\"chunk\"}"),
        ) {
            (Some(_), Some(_)) => Ok(()),
            seen => Err(format!("{seen:?}\n{}", aggregator.log())),
        },
    );
    // 1. Then something else fills the disk: whatever is freed there (by the chunks stored in
    // ClickHouse, which leave the spool) is taken, and less than a chunk stays free.
    let filler_file = spool_fs.path().join("filler");
    let filler = Filler::start(&spool_fs, filler_file.clone(), setup.largest_chunk / 2);
    assert!(
        scan.0.try_wait().unwrap().is_none(),
        "the scan was not over when the disk filled: {}",
        scan_text()
    );

    // The aggregator says so in its log and its metrics; the scanner waits.
    let retries_before = scan_text().matches("retrying in").count();
    wait_until(
        Duration::from_secs(30),
        "the aggregator says the spool is full and the scanner waits",
        || {
            let (log, metrics, scan) = (aggregator.log(), aggregator.metrics(), scan_text());
            // The log says it is full once it stays so.
            let full = last_spool_line(&log).is_some_and(|l| l.contains("the spool is full"))
                && metric(&metrics, "storage_tracker_spool_full") == Some(1.0)
                && metric(&metrics, "storage_tracker_spool_chunks") == Some(0.0)
                && scan.matches("retrying in").count() >= retries_before + 2;
            if full {
                Ok(())
            } else {
                Err(format!(
                    "aggregator:\n{log}\nmetrics:\n{metrics}\nscanner:\n{scan}"
                ))
            }
        },
    );
    let started_waiting = Instant::now();
    assert!(
        scan.0.try_wait().unwrap().is_none(),
        "the scanner waits, it has not ended: {}",
        scan_text()
    );
    let log = aggregator.log();
    let line = last_spool_line(&log).unwrap();
    // What is full, how much room is left, what to do.
    let root = spool.display().to_string();
    for said in [
        root.as_str(),
        "No space left on device",
        "free of",
        "Free space on that filesystem",
        "no snapshot fails",
    ] {
        assert!(line.contains(said), "{said:?} in {line}");
    }
    let metrics = aggregator.metrics();
    let refusals = metric(
        &metrics,
        "storage_tracker_spool_full_refusals_total{write=\"chunk\"}",
    );
    let said = log.matches("the spool is full").count();
    assert!(
        (1..=2).contains(&said) && refusals.is_some_and(|n| n > said as f64),
        "said when it fills, not per chunk refused ({refusals:?}): {log}"
    );
    let accepted = metric(
        &metrics,
        "storage_tracker_chunks_received_total{result=\"accepted\"}",
    );
    assert!(
        metric(
            &metrics,
            "storage_tracker_spool_full_refusals_total{write=\"chunk\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "storage_tracker_spool_free_bytes")
            .is_some_and(|free| (free as u64) < setup.largest_chunk * 2),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "storage_tracker_running_snapshots"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "storage_tracker_snapshots{state=\"failed\"}"),
        Some(0.0),
        "{metrics}"
    );
    let scanned = scan_text();
    let waits = scanned
        .lines()
        .find(|l| l.contains("retrying in") && l.contains("is full"))
        .unwrap_or_else(|| panic!("the scanner says why it waits: {scanned}"));
    assert!(waits.contains(&root), "{waits}");
    assert!(waits.contains("for up to 60 s"), "{waits}");
    // A chunk refused half-written left nothing behind: no temporary file outlives its write
    // (each write has a name of its own), and no chunk file waits in the spool.
    let writing = temporary_files(&spool);
    std::thread::sleep(Duration::from_millis(300));
    let left = temporary_files(&spool);
    assert!(
        writing.iter().all(|f| !left.contains(f)),
        "partial writes left behind: {left:?}"
    );
    assert!(
        spool_chunk_files(&spool).is_empty(),
        "{:?}",
        spool_chunk_files(&spool)
    );
    let states = snapshots(rt, db);
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].state_name, "running", "{states:?}");
    // The scanner sends again, and is refused again: nothing is acknowledged while it is full.
    let retries = scan_text().matches("retrying in").count();
    wait_until(
        Duration::from_secs(20),
        "the scanner sends again",
        || match scan_text().matches("retrying in").count() > retries {
            true => Ok(()),
            false => Err(scan_text()),
        },
    );
    let metrics = aggregator.metrics();
    assert_eq!(
        metric(
            &metrics,
            "storage_tracker_chunks_received_total{result=\"accepted\"}"
        ),
        accepted,
        "nothing acknowledged while the spool is full: {metrics}"
    );
    assert!(scan.0.try_wait().unwrap().is_none(), "{}", scan_text());

    // 2. The admin frees space: the scan goes on by itself and commits.
    drop(filler);
    fs::remove_file(&ballast).unwrap();
    fs::remove_file(&filler_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = scan.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the scan did not finish after space was freed: {}",
            scan_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let scanned = scan_text();
    assert!(status.success(), "the scan failed: {status:?}\n{scanned}");
    assert!(scanned.contains("snapshot committed"), "{scanned}");
    assert!(
        started_waiting.elapsed() < Duration::from_secs(40),
        "within the scanner's retry window"
    );
    let log = aggregator.log();
    assert!(
        last_spool_line(&log).is_some_and(|l| l.contains("the spool has room again")),
        "{log}"
    );
    let metrics = aggregator.metrics();
    assert_eq!(
        metric(&metrics, "storage_tracker_spool_full"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "storage_tracker_commits_total{result=\"committed\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "storage_tracker_commits_total{result=\"failed\"}"),
        None,
        "{metrics}"
    );

    // 3. One snapshot, committed, every entry exactly once, equal to the ground truth.
    let truth = ground_truth(tree.path());
    let states = snapshots(rt, db);
    assert_eq!(
        states.len(),
        1,
        "committed once, nothing failed: {states:?}"
    );
    let s = &states[0];
    assert_eq!(s.state_name, "committed", "{s:?}");
    let d = &db.database;
    let stored: Vec<Stored> = db.query(
        rt,
        &format!(
            "SELECT count() AS rows, uniqExact(path) AS distinct_paths, sum(size) AS bytes \
             FROM {d}.entries WHERE snapshot_id = {}",
            s.snapshot_id
        ),
    );
    let n = truth.len() as u64;
    assert_eq!(
        (s.entries, stored[0].rows, stored[0].distinct_paths),
        (n, n, n),
        "every entry exactly once"
    );
    assert_eq!(stored[0].bytes, truth.iter().map(|e| e.size).sum::<u64>());
    check_reports(rt, db, s.snapshot_id, &truth, s.started);
    assert!(
        fs::read_dir(spool.join("snapshots"))
            .unwrap()
            .next()
            .is_none(),
        "the spool is empty after the commit"
    );
    drop(aggregator);
}

#[test]
fn a_spool_that_stays_full_ends_the_scan_after_its_retry_window_and_no_sooner() {
    let setup = Setup::new("spool_stays_full");
    let Setup { rt, db, tree, .. } = &setup;
    let spool_fs = Tmpfs::mount(8);
    let spool = spool_fs.path().join("spool");
    // Room for the snapshot's record, none for a chunk.
    let _ballast = spool_fs.fill_leaving(setup.largest_chunk / 2);
    assert!(spool_fs.free() < setup.largest_chunk);
    let aggregator = AggregatorProcess::start(db, &spool, setup.logs.path().join("aggregator.log"));
    let scan_log = setup.logs.path().join("scan.log");
    let started = Instant::now();
    let mut scan = start_scan(&aggregator, tree.path(), 4, &scan_log);
    let status = loop {
        if let Some(status) = scan.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the scan outlived its retry window"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = started.elapsed();
    let scanned = fs::read_to_string(&scan_log).unwrap();
    assert!(!status.success(), "{scanned}");
    assert!(
        waited >= Duration::from_secs(4),
        "the scanner gave up after {waited:?}, before its 4 s: {scanned}"
    );
    assert!(waited < Duration::from_secs(25), "{waited:?}: {scanned}");
    assert!(scanned.contains("retrying in"), "{scanned}");
    assert!(scanned.contains("is full"), "{scanned}");
    // The scanner ended its snapshot; the aggregator failed nothing by itself.
    let states = snapshots(rt, db);
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].state_name, "failed", "{states:?}");
    assert!(
        states[0].message.starts_with("aborted by the scanner"),
        "{states:?}"
    );
    let log = aggregator.log();
    assert!(log.contains("the spool is full"), "{log}");
    assert_eq!(temporary_files(&spool), Vec::<PathBuf>::new());
    drop(aggregator);
}

#[test]
fn a_spool_without_room_refuses_the_begin_and_records_no_snapshot() {
    let setup = Setup::new("spool_no_room");
    let Setup { rt, db, tree, .. } = &setup;
    let spool_fs = Tmpfs::mount(4);
    let spool = spool_fs.path().join("spool");
    let aggregator = AggregatorProcess::start(db, &spool, setup.logs.path().join("aggregator.log"));
    let _ballast = spool_fs.fill_leaving(0);
    assert_eq!(spool_fs.free(), 0);
    let scan_log = setup.logs.path().join("scan.log");
    let started = Instant::now();
    let mut scan = start_scan(&aggregator, tree.path(), 3, &scan_log);
    let status = scan.0.wait().unwrap();
    let waited = started.elapsed();
    let scanned = fs::read_to_string(&scan_log).unwrap();
    assert!(!status.success(), "{scanned}");
    assert!(waited >= Duration::from_secs(3), "{waited:?}: {scanned}");
    assert!(
        scanned.contains("BeginSnapshot refused: the aggregator's spool")
            && scanned.contains("retrying in"),
        "{scanned}"
    );
    // Refused before ClickHouse knew of it: no snapshot, failed or other, and nothing spooled.
    let states = snapshots(rt, db);
    assert!(states.is_empty(), "{states:?}");
    let metrics = aggregator.metrics();
    assert!(
        metric(
            &metrics,
            "storage_tracker_spool_full_refusals_total{write=\"record\"}"
        )
        .is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert_eq!(
        fs::read_dir(spool.join("snapshots")).unwrap().count(),
        0,
        "nothing spooled"
    );
    assert!(aggregator.log().contains("the spool is full"));
}
