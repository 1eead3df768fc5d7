//! End to end on real parts: the scanner (under Slurm's `srun` with MPICH, and as one plain
//! process) streams a fixture tree to an aggregator that stores it in a real ClickHouse; the
//! committed snapshot and the API's answers are compared with ground truth computed
//! independently.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use serde::Deserialize;
use tower::ServiceExt;

use storage_tracker_api::{AppState, ReadConfig};
use support::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct KindCount {
    kind_name: String,
    n: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Count {
    n: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Summary {
    entries: u64,
    distinct_paths: u64,
    apparent_bytes: u64,
    errors: u64,
    ranks: u64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SnapshotState {
    snapshot_id: u64,
    state_name: String,
    ranks: u32,
    entries: u64,
    /// The scan's start, nanoseconds since the epoch.
    started: i64,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Rollup {
    #[serde(with = "serde_bytes")]
    path: Vec<u8>,
    bytes: u64,
    entries: u64,
    files: u64,
    dirs: u64,
}

/// Checks the committed snapshot of `fixture` in `db` and the API's view of it.
fn check_snapshot(
    rt: &tokio::runtime::Runtime,
    db: &TestDatabase,
    fixture: &Fixture,
    expected_ranks: u32,
) {
    let truth = ground_truth(&fixture.root);
    let d = &db.database;

    let states: Vec<SnapshotState> = db.query(
        rt,
        &format!(
            "SELECT snapshot_id, toString(state) AS state_name, ranks, entries, started_at_ns AS started FROM {d}.snapshots FINAL WHERE state != 'failed'"
        ),
    );
    // The one snapshot that is not failed (a test may fail one first).
    assert_eq!(states.len(), 1, "{states:?}");
    let snap = &states[0];
    assert_eq!(
        (snap.state_name.as_str(), snap.ranks, snap.entries),
        ("committed", expected_ranks, truth.len() as u64)
    );
    let id = snap.snapshot_id;

    let kinds: BTreeMap<String, u64> = db
        .query::<KindCount>(rt, &format!("SELECT toString(kind) AS kind_name, count() AS n FROM {d}.entries WHERE snapshot_id = {id} GROUP BY kind"))
        .into_iter()
        .map(|k| (k.kind_name, k.n))
        .collect();
    assert_eq!(kinds, kind_counts(&truth), "entries by kind");

    let summary: Vec<Summary> = db.query(
        rt,
        &format!(
            "SELECT count() AS entries, uniqExact(path) AS distinct_paths, sum(size) AS apparent_bytes, \
             countIf(error_op != 'none') AS errors, uniqExact(rank) AS ranks FROM {d}.entries WHERE snapshot_id = {id}"
        ),
    );
    let s = &summary[0];
    assert_eq!(s.entries, truth.len() as u64, "entry count");
    assert_eq!(s.distinct_paths, s.entries, "no path stored twice");
    assert_eq!(
        s.apparent_bytes,
        truth.iter().map(|e| e.size).sum::<u64>(),
        "total apparent bytes"
    );
    assert_eq!(s.errors, 0);
    // Which ranks end up with work depends on CPU scheduling (tests share two cores), so only
    // the bound is checked here; stealing on uneven work is asserted by the unit tests.
    assert!(
        (1..=u64::from(expected_ranks)).contains(&s.ranks),
        "rows from {} ranks",
        s.ranks
    );

    // Every owner and group is named once per snapshot.
    for (column, kind) in [("uid", "user"), ("gid", "group")] {
        let unnamed: Vec<Count> = db.query(
            rt,
            &format!(
                "SELECT count() AS n FROM (SELECT DISTINCT {column} AS i FROM {d}.entries WHERE snapshot_id = {id}) AS e \
                 WHERE i NOT IN (SELECT id FROM {d}.principals WHERE snapshot_id = {id} AND kind = '{kind}')"
            ),
        );
        assert_eq!(unnamed[0].n, 0, "{column}s without a {kind} row");
    }

    // Recursive totals of the root and every top-level directory.
    let root = fixture.root_bytes();
    let rollups: Vec<Rollup> = db.query(
        rt,
        &format!(
            "SELECT path, bytes, entries, files, dirs FROM {d}.dir_rollups WHERE snapshot_id = {id} AND (parent_path = {p} OR path = {p}) ORDER BY path",
            p = storage_tracker_proto::sql::quote_bytes(root)
        ),
    );
    let truth_dirs: Vec<&TruthEntry> = truth
        .iter()
        .filter(|e| {
            e.kind == "dir"
                && (e.path == root || support::os(&e.path).parent() == Some(&fixture.root))
        })
        .collect();
    assert_eq!(rollups.len(), truth_dirs.len(), "top-level directories");
    for r in &rollups {
        let want = tree_totals(&truth, &r.path);
        let got = TreeTotals {
            bytes: r.bytes,
            entries: r.entries,
            files: r.files,
            dirs: r.dirs,
        };
        assert_eq!(got, want, "rollup of {}", String::from_utf8_lossy(&r.path));
    }

    support::check_reports(rt, db, id, &truth, snap.started);

    // The API, through the read-only user: children of two directories, exactly.
    let state = AppState::new(ReadConfig {
        url: db.url.clone(),
        user: "storage_reader".into(),
        password: String::new(),
        database: d.clone(),
    });
    let app = storage_tracker_api::app(state);
    for dir in [root.to_vec(), [root, b"/mixed"].concat()] {
        let uri = format!(
            "/api/v1/snapshots/{id}/children?limit=1000&path_b64={}",
            percent(&base64::engine::general_purpose::STANDARD.encode(&dir))
        );
        let response = rt
            .block_on(
                app.clone()
                    .oneshot(Request::get(&uri).body(Body::empty()).unwrap()),
            )
            .unwrap();
        assert_eq!(response.status(), 200, "{uri}");
        let body = rt
            .block_on(axum::body::to_bytes(response.into_body(), 16 << 20))
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let got: Vec<(Vec<u8>, String, u64, u64, u64)> = json["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let name = match c.get("name_b64") {
                    Some(b) => base64::engine::general_purpose::STANDARD
                        .decode(b.as_str().unwrap())
                        .unwrap(),
                    None => c["name"].as_str().unwrap().as_bytes().to_vec(),
                };
                (
                    name,
                    c["kind"].as_str().unwrap().to_owned(),
                    c["bytes"].as_u64().unwrap(),
                    c["files"].as_u64().unwrap(),
                    c["dirs"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(Vec<u8>, String, u64, u64, u64)> = expected_children(&truth, &dir)
            .into_iter()
            .map(|(n, k, b, f, dd)| (n, k.to_owned(), b, f, dd))
            .collect();
        assert_eq!(got, want, "children of {}", String::from_utf8_lossy(&dir));
        assert_eq!(json["total"].as_u64().unwrap(), want.len() as u64);
        let me = storage_tracker_scanner::owners::resolve(
            storage_tracker_scanner::owners::IdKind::User,
            // SAFETY: getuid has no preconditions and cannot fail.
            unsafe { libc::getuid() },
        );
        assert!(
            json["children"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["user"].as_str() == me.as_deref()),
            "owners are named"
        );
        let totals = tree_totals(&truth, &dir);
        assert_eq!(json["directory"]["bytes"].as_u64().unwrap(), totals.bytes);
        assert_eq!(
            json["directory"]["entries"].as_u64().unwrap(),
            totals.entries
        );
    }

    // The huge directory pages: its total is exact and a page is bounded.
    let huge = [root, b"/huge"].concat();
    let uri = format!(
        "/api/v1/snapshots/{id}/children?limit=1000&offset=19500&path={}",
        percent(std::str::from_utf8(&huge).unwrap())
    );
    let response = rt
        .block_on(app.oneshot(Request::get(&uri).body(Body::empty()).unwrap()))
        .unwrap();
    let body = rt
        .block_on(axum::body::to_bytes(response.into_body(), 16 << 20))
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["total"].as_u64().unwrap(), HUGE_DIR_ENTRIES as u64);
    assert_eq!(json["children"].as_array().unwrap().len(), 500);
}

/// Percent-encodes a query value.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn slurm_conf() -> String {
    std::env::var("SLURM_CONF").unwrap_or_else(|_| {
        panic!("SLURM_CONF is not set. This test needs a real Slurm: run it with ci/test.sh, or start one with `ci/slurm.sh start` and export SLURM_CONF")
    })
}

#[test]
fn srun_three_ranks_commit_a_snapshot_equal_to_ground_truth() {
    let rt = runtime();
    let db = TestDatabase::new(&rt, "srun");
    let aggregator = Aggregator::start(&rt, &db);
    let fixture = Fixture::build();
    let output = Command::new("srun")
        .env("SLURM_CONF", slurm_conf())
        .args(["--mpi=pmi2", "-n", "3", "--overcommit", "--time=10"])
        .arg(scanner())
        .args([
            "--aggregator",
            &aggregator.addr,
            "--label",
            "e2e",
            "--threads",
            "2",
            "--chunk-rows",
            "4096",
        ])
        .arg(&fixture.root)
        .output()
        .expect("srun runs (is Slurm installed? ci/install-deps.sh)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "srun failed: {:?}\n{stderr}",
        output.status
    );
    assert!(stderr.contains("snapshot committed"), "{stderr}");
    check_snapshot(&rt, &db, &fixture, 3);
}

#[test]
fn plain_process_commits_a_snapshot_equal_to_ground_truth() {
    let rt = runtime();
    let db = TestDatabase::new(&rt, "plain");
    let aggregator = Aggregator::start(&rt, &db);
    let fixture = Fixture::build();
    let output = Command::new(scanner())
        .args(["--aggregator", &aggregator.addr, "--threads", "2"])
        .arg(&fixture.root)
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "scanner failed: {:?}\n{stderr}",
        output.status
    );
    check_snapshot(&rt, &db, &fixture, 1);
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ErrorRow {
    #[serde(with = "serde_bytes")]
    path: Vec<u8>,
    op_name: String,
    errno: i32,
}

#[test]
fn permission_errors_of_an_unprivileged_scan_reach_the_store() {
    use std::os::unix::fs::PermissionsExt;
    let rt = runtime();
    let db = TestDatabase::new(&rt, "denied");
    let aggregator = Aggregator::start(&rt, &db);
    // Root ignores permission bits, so the scan runs as "nobody".
    let base = tempfile::tempdir().unwrap();
    let tree = base.path().join("tree");
    std::fs::create_dir_all(tree.join("closed")).unwrap();
    std::fs::write(tree.join("closed/secret"), b"x").unwrap();
    std::fs::write(tree.join("open.txt"), b"y").unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(tree.join("closed"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let output = as_nobody(scanner(), base.path())
        .args(["--aggregator", &aggregator.addr])
        .arg(&tree)
        .output()
        .expect("setpriv (util-linux) runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "committed with errors: {stderr}"
    );
    let d = &db.database;
    let errors: Vec<ErrorRow> = db.query(
        &rt,
        &format!("SELECT path, toString(error_op) AS op_name, errno FROM {d}.entries WHERE snapshot_id = 1 AND error_op != 'none'"),
    );
    let closed = tree.join("closed");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0].path,
        std::os::unix::ffi::OsStrExt::as_bytes(closed.as_os_str())
    );
    assert_eq!(
        (errors[0].op_name.as_str(), errors[0].errno),
        ("open", libc::EACCES)
    );
    let snapshot: Vec<SnapshotState> = db.query(&rt, &format!("SELECT snapshot_id, toString(state) AS state_name, ranks, entries, started_at_ns AS started FROM {d}.snapshots FINAL"));
    assert_eq!(
        (snapshot[0].state_name.as_str(), snapshot[0].entries),
        ("committed", 3),
        "the tree, closed/ and open.txt"
    );
}

/// The repository's `slurm/scan.sbatch`.
fn batch_script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../slurm/scan.sbatch")
}

/// `sbatch --wait` of the batch script in `dir` (its output files land there); the job's
/// output and error, and whether it succeeded.
fn sbatch_wait(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    options: &[&str],
    script_args: &[&str],
) -> (bool, String) {
    let output = Command::new("sbatch")
        .env("SLURM_CONF", slurm_conf())
        .envs(env.iter().copied())
        .current_dir(dir)
        .args(["--wait", "--output", "job-%j.out", "--error", "job-%j.out"])
        .args(options)
        .arg(batch_script())
        .args(script_args)
        .output()
        .expect("sbatch runs (is Slurm installed? ci/install-deps.sh)");
    (
        output.status.success(),
        format!(
            "{}{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            job_outputs(dir)
        ),
    )
}

/// Every job output file in `dir`, in job order.
fn job_outputs(dir: &std::path::Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "out"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            format!(
                "--- {}\n{}",
                p.display(),
                std::fs::read_to_string(p).unwrap()
            )
        })
        .collect()
}

#[test]
fn sbatch_scan_over_two_nodes_commits_a_snapshot_equal_to_ground_truth() {
    let rt = runtime();
    let db = TestDatabase::new(&rt, "sbatch");
    let aggregator = Aggregator::start(&rt, &db);
    let fixture = Fixture::build();
    let logs = tempfile::tempdir().unwrap();
    let (ok, log) = sbatch_wait(
        logs.path(),
        &[],
        &["--nodes=2", "--time=10"],
        &[
            "--aggregator",
            &aggregator.addr,
            "--label",
            "two-nodes",
            "--scanner",
            scanner(),
            "--duplicates",
            fixture.root.to_str().unwrap(),
        ],
    );
    assert!(ok, "{log}");
    // --duplicates: the committed snapshot's candidates hashed in the same job.
    assert!(
        log.contains("hashing the duplicate candidates of snapshot 1")
            && log.contains("duplicate candidates hashed"),
        "{log}"
    );
    assert!(
        log.contains("on 2 node(s) [n[1-2]]: 2 rank(s), 4 thread(s) each"),
        "{log}"
    );
    assert!(log.contains("storage-scan: snapshot committed"), "{log}");
    check_snapshot(&rt, &db, &fixture, 2);
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct SnapshotOutcome {
    state_name: String,
    entries: u64,
    message: String,
}

/// Every snapshot's state, entries and message.
fn outcomes(rt: &tokio::runtime::Runtime, db: &TestDatabase) -> Vec<SnapshotOutcome> {
    let d = &db.database;
    db.query(
        rt,
        &format!("SELECT toString(state) AS state_name, entries, message FROM {d}.snapshots FINAL"),
    )
}

#[test]
fn weekly_job_resubmits_itself_and_a_failed_run_does_not_stop_the_next() {
    let rt = runtime();
    let db = TestDatabase::new(&rt, "weekly");
    let aggregator = Aggregator::start(&rt, &db);
    let logs = tempfile::tempdir().unwrap();
    let tree = tempfile::tempdir().unwrap();
    // The first run finds no directory to scan and fails; the second, 5 s later, finds it.
    let root = tree.path().join("later");
    let name = format!("st-weekly-{}", std::process::id());
    let (ok, log) = sbatch_wait(
        logs.path(),
        &[],
        &["--nodes=1", "--time=10", "--job-name", &name],
        &[
            "--aggregator",
            &aggregator.addr,
            "--label",
            "weekly",
            "--scanner",
            scanner(),
            "--every",
            "5",
            "--runs",
            "2",
            root.to_str().unwrap(),
            "--",
            "--threads",
            "2",
        ],
    );
    assert!(!ok, "the first run must fail: {log}");
    assert!(
        log.contains("Submitted batch job"),
        "it resubmitted itself: {log}"
    );
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/data.bin"), vec![7u8; 12_345]).unwrap();
    // The second run, submitted by the first.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let queued = Command::new("squeue")
            .env("SLURM_CONF", slurm_conf())
            .args(["-h", "-n", &name, "-o", "%i %T"])
            .output()
            .unwrap();
        let queued = String::from_utf8_lossy(&queued.stdout).trim().to_owned();
        let outputs = job_outputs(logs.path());
        if queued.is_empty() && outputs.contains("the last of the scheduled runs") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second run did not run: queue {queued:?}\n{outputs}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let outputs = job_outputs(logs.path());
    assert_eq!(outputs.matches("--- ").count(), 2, "two runs: {outputs}");
    assert!(
        outputs.contains("storage-scan: snapshot committed"),
        "{outputs}"
    );
    let snapshots = outcomes(&rt, &db);
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(
        (snapshots[0].state_name.as_str(), snapshots[0].entries),
        ("committed", 3)
    );
}

/// 100 directories of 400 one-byte files under `root/many`, so that a scan lasts long enough
/// to be interrupted; returns `root/many`.
fn add_many_files(root: &std::path::Path) -> std::path::PathBuf {
    let many = root.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..100 {
        let d = many.join(format!("d{i}"));
        std::fs::create_dir(&d).unwrap();
        for j in 0..400 {
            std::fs::write(d.join(format!("f{j}")), b"x").unwrap();
        }
    }
    many
}

#[test]
fn sigterm_stops_the_scan_and_fails_its_snapshot() {
    use std::io::BufRead;
    let rt = runtime();
    let db = TestDatabase::new(&rt, "sigterm");
    let aggregator = Aggregator::start(&rt, &db);
    let fixture = Fixture::build();
    // Enough to read that the signal lands while the walk is under way.
    add_many_files(&fixture.root);
    let mut child = Command::new(scanner())
        .args(["--aggregator", &aggregator.addr, "--threads", "1"])
        .arg(&fixture.root)
        .env_remove("SLURM_PROCID")
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert_ne!(
            stderr.read_line(&mut line).unwrap(),
            0,
            "no scan started: {seen}"
        );
        seen.push_str(&line);
        if line.contains("scanning") {
            break;
        }
    }
    // SAFETY: signalling a child process this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    seen.push_str(&rest);
    assert_eq!(status.code(), Some(1), "{seen}");
    assert!(seen.contains("stopped by SIGTERM"), "{seen}");
    let snapshots = outcomes(&rt, &db);
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(snapshots[0].state_name, "failed", "{snapshots:?}");
    assert!(snapshots[0].message.contains("SIGTERM"), "{snapshots:?}");
}

/// The pid of the `storage-scan` process that is task `task` of Slurm job `job`, if it runs.
fn task_pid(job: &str, task: u32) -> Option<i32> {
    let want = [
        format!("SLURM_JOB_ID={job}"),
        format!("SLURM_PROCID={task}"),
    ];
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        if comm.trim() != "storage-scan" {
            return None;
        }
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        want.iter()
            .all(|w| vars.contains(&w.as_bytes()))
            .then_some(pid)
    })
}

#[test]
fn a_rank_killed_mid_scan_fails_the_snapshot_when_the_job_ends_and_the_next_scan_commits() {
    let rt = runtime();
    let db = TestDatabase::new(&rt, "rank_killed");
    let aggregator = Aggregator::start(&rt, &db);
    let fixture = Fixture::build();
    // Enough that the kill lands while the ranks walk (one thread each).
    let many = add_many_files(&fixture.root);
    let logs = tempfile::tempdir().unwrap();
    // The batch script keeps the snapshot's id under TMPDIR, named by the job.
    let tmp = tempfile::tempdir().unwrap();
    let tmpdir = tmp.path().to_str().unwrap().to_owned();
    let args = [
        "--aggregator",
        aggregator.addr.as_str(),
        "--label",
        "killed",
        "--scanner",
        scanner(),
        fixture.root.to_str().unwrap(),
        "--",
        "--threads",
        "1",
    ];
    let job = std::thread::scope(|scope| {
        let waiting = scope.spawn(|| {
            sbatch_wait(
                logs.path(),
                &[("TMPDIR", tmpdir.as_str())],
                &["--nodes=2", "--time=10"],
                &args,
            )
        });
        // The snapshot is begun once rank 0 has written its id; then rank 1 dies outright.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let (job, pid) = loop {
            let begun = std::fs::read_dir(tmp.path()).unwrap().find_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                let job = name
                    .strip_prefix("storage-scan-")?
                    .strip_suffix(".snapshot")?;
                Some(job.to_owned())
            });
            if let Some(job) = begun
                && let Some(pid) = task_pid(&job, 1)
            {
                break (job, pid);
            }
            if waiting.is_finished() {
                let (_, log) = waiting.join().unwrap();
                panic!("the job ended before rank 1 could be killed: {log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the job did not begin a snapshot with rank 1 running"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        // SAFETY: signalling a process of the job this test submitted.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let (ok, log) = waiting.join().unwrap();
        assert!(!ok, "the job must fail when a rank is killed: {log}");
        assert!(log.contains("storage-scan failed (exit"), "{log}");
        assert!(
            log.contains("the snapshot is failed; none of its rows is kept"),
            "the batch script aborts the snapshot: {log}"
        );
        job
    });
    // By the time the job has ended, its snapshot is failed and holds no rows.
    let snapshots = outcomes(&rt, &db);
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(snapshots[0].state_name, "failed", "{snapshots:?}");
    assert!(
        snapshots[0].message.contains(&format!("Slurm job {job}")),
        "the reason names the job: {snapshots:?}"
    );
    let d = &db.database;
    let rows: Vec<Count> = db.query(&rt, &format!("SELECT count() AS n FROM {d}.entries"));
    assert_eq!(rows[0].n, 0, "no row of a failed snapshot is visible");
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "the batch script removes the snapshot's id file"
    );

    // The next scan of the same tree commits.
    std::fs::remove_dir_all(&many).unwrap();
    let (ok, log) = sbatch_wait(
        logs.path(),
        &[("TMPDIR", tmpdir.as_str())],
        &["--nodes=2", "--time=10"],
        &args[..7],
    );
    assert!(ok, "{log}");
    let states: Vec<String> = outcomes(&rt, &db)
        .into_iter()
        .map(|o| o.state_name)
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "committed").count(),
        1,
        "{states:?}"
    );
    check_snapshot(&rt, &db, &fixture, 2);
}

#[test]
fn openmpi_scan_under_srun_pmix_commits_a_snapshot_equal_to_ground_truth() {
    let scanner = std::env::var("STORAGE_TRACKER_OPENMPI_SCANNER").unwrap_or_else(|_| {
        panic!(
            "STORAGE_TRACKER_OPENMPI_SCANNER is not set: build storage-scan against Open MPI \
             (MPICC=mpicc.openmpi cargo build -p storage-tracker-scanner --bin storage-scan \
             --target-dir target/openmpi, as ci/test.sh does) and point it at the binary"
        )
    });
    assert!(
        std::path::Path::new(&scanner).exists(),
        "{scanner} is missing: build it as ci/test.sh does"
    );
    let rt = runtime();
    let db = TestDatabase::new(&rt, "openmpi");
    let aggregator = Aggregator::start(&rt, &db);
    let fixture = Fixture::build();
    let logs = tempfile::tempdir().unwrap();
    // Open MPI's shared-memory transport between the ranks of one node; nothing on the network.
    let (ok, log) = sbatch_wait(
        logs.path(),
        &[("OMPI_MCA_btl", "self,vader")],
        &[
            "--nodes=1",
            "--ntasks-per-node=2",
            "--cpus-per-task=2",
            "--time=10",
        ],
        &[
            "--aggregator",
            &aggregator.addr,
            "--label",
            "openmpi",
            "--mpi",
            "pmix",
            "--scanner",
            &scanner,
            fixture.root.to_str().unwrap(),
        ],
    );
    assert!(ok, "{log}");
    assert!(
        log.contains("2 rank(s), 2 thread(s) each, srun --mpi=pmix"),
        "{log}"
    );
    check_snapshot(&rt, &db, &fixture, 2);
}
