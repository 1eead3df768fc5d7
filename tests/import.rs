//! Offline scans and their import: `storage-scan --output DIR`, then `storage-aggregator
//! import DIR` commits a snapshot equal to the ground truth; importing again changes nothing;
//! a directory with a broken or foreign chunk file is refused by the file's name and leaves
//! nothing behind.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use support::*;

fn aggregator_binary() -> PathBuf {
    support::aggregator_binary(scanner())
}

/// An offline scan of `tree` into `out` with 2048-row chunks.
fn offline_scan(tree: &Path, out: &Path) {
    let scan = Command::new(scanner())
        .arg("--output")
        .arg(out)
        .args(["--chunk-rows", "2048", "--label", "offline"])
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

fn import(db: &TestDatabase, dir: &Path) -> Output {
    Command::new(aggregator_binary())
        .arg("import")
        .arg(dir)
        .env("STORAGE_TRACKER_CLICKHOUSE_URL", &db.url)
        .env("STORAGE_TRACKER_DATABASE", db.database.as_str())
        .output()
        .unwrap()
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Snapshot {
    snapshot_id: u64,
    state_name: String,
    entries: u64,
    /// The scan's start, nanoseconds since the epoch.
    started: i64,
    scan_id: String,
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Count {
    n: u64,
}

fn snapshots(rt: &tokio::runtime::Runtime, db: &TestDatabase) -> Vec<Snapshot> {
    db.query(rt, &format!("SELECT snapshot_id, toString(state) AS state_name, entries, started_at_ns AS started, scan_id FROM {}.snapshots FINAL ORDER BY snapshot_id", db.database))
}

fn rows(rt: &tokio::runtime::Runtime, db: &TestDatabase) -> u64 {
    db.query::<Count>(
        rt,
        &format!("SELECT count() AS n FROM {}.entries", db.database),
    )[0]
    .n
}

#[test]
fn an_offline_scan_imports_once_and_equals_ground_truth() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "import");
    let fixture = Fixture::build();
    let out = tempfile::tempdir().unwrap();
    offline_scan(&fixture.root, out.path());

    let first = import(&db, out.path());
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(said.contains("as snapshot 1"), "{said}");
    let truth = ground_truth(&fixture.root);
    let s = snapshots(&rt, &db);
    assert_eq!(s.len(), 1);
    assert_eq!(
        (s[0].snapshot_id, s[0].state_name.as_str(), s[0].entries),
        (1, "committed", truth.len() as u64)
    );
    assert!(!s[0].scan_id.is_empty());
    assert_eq!(rows(&rt, &db), truth.len() as u64);
    check_reports(&rt, &db, 1, &truth, s[0].started);

    // Again: nothing changes.
    let second = import(&db, out.path());
    let said = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{said}");
    assert!(said.contains("imported before as snapshot 1"), "{said}");
    assert_eq!(snapshots(&rt, &db).len(), 1);
    assert_eq!(rows(&rt, &db), truth.len() as u64);
}

#[test]
fn broken_or_foreign_chunk_files_are_refused_by_name_and_nothing_is_kept() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "import_bad");
    let tree = tempfile::tempdir().unwrap();
    for i in 0..300 {
        std::fs::write(tree.path().join(format!("f{i}")), b"x").unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    offline_scan(tree.path(), out.path());
    let chunk = out.path().join("rank00000-seq000000000.parquet");
    let good = std::fs::read(&chunk).unwrap();

    // A truncated footer.
    std::fs::write(&chunk, &good[..good.len() - 9]).unwrap();
    let o = import(&db, out.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rank00000-seq000000000.parquet is not a valid chunk"),
        "{err}"
    );

    // A Parquet file of another schema.
    let foreign = foreign_parquet(1);
    std::fs::write(&chunk, foreign).unwrap();
    let o = import(&db, out.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("rank00000-seq000000000.parquet is not a valid chunk"),
        "{err}"
    );
    assert!(err.contains("schema"), "{err}");

    // A missing chunk and a missing manifest.
    std::fs::remove_file(&chunk).unwrap();
    let o = import(&db, out.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rank00000-seq000000000.parquet is missing"),
        "{err}"
    );
    std::fs::write(&chunk, &good).unwrap();
    std::fs::remove_file(out.path().join("manifest.pb")).unwrap();
    let o = import(&db, out.path());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("has no manifest.pb"), "{err}");

    assert!(snapshots(&rt, &db).is_empty(), "nothing was begun");
    assert_eq!(rows(&rt, &db), 0);
}

/// `storage-aggregator import --check DIR`, with no ClickHouse to reach: it reads files only.
fn check(dir: &Path) -> Output {
    Command::new(aggregator_binary())
        .args(["import", "--check"])
        .arg(dir)
        .env("STORAGE_TRACKER_CLICKHOUSE_URL", "http://127.0.0.1:1")
        .output()
        .unwrap()
}

#[test]
fn import_check_refuses_a_chunk_copied_over_another_as_the_import_does() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "import_check");
    let tree = tempfile::tempdir().unwrap();
    for i in 0..5000 {
        std::fs::write(tree.path().join(format!("f{i}")), b"x").unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    offline_scan(tree.path(), out.path());
    let first = out.path().join("rank00000-seq000000000.parquet");
    let second = out.path().join("rank00000-seq000000001.parquet");
    assert!(second.exists(), "the scan wrote several chunks");
    let o = check(out.path());
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.contains("5001 entries: valid"), "{said}");
    let good = std::fs::read(&second).unwrap();

    // One chunk copied over another: the check says so, as the import does.
    std::fs::copy(&first, &second).unwrap();
    for o in [check(out.path()), import(&db, out.path())] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains(
                "rank00000-seq000000001.parquet is a copy of rank00000-seq000000000.parquet"
            ),
            "{err}"
        );
    }

    // A chunk of another scan in its place: its rows are not what the manifest counts.
    let other_tree = tempfile::tempdir().unwrap();
    std::fs::write(other_tree.path().join("g"), b"y").unwrap();
    let other = tempfile::tempdir().unwrap();
    offline_scan(other_tree.path(), other.path());
    std::fs::copy(other.path().join("rank00000-seq000000000.parquet"), &second).unwrap();
    for o in [check(out.path()), import(&db, out.path())] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("does not match its manifest: rank 0 scanned 5001 entries"),
            "{err}"
        );
    }
    assert!(snapshots(&rt, &db).is_empty(), "nothing was begun");
    assert_eq!(rows(&rt, &db), 0);

    std::fs::write(&second, good).unwrap();
    assert!(check(out.path()).status.success());
}

/// The store-at-scale benchmark (`ci/bench/store_scale.py`, run at 10^8 entries for the
/// committed results) works end to end on a small tree: two synthetic weekly snapshots
/// imported and committed, what each cost, bytes per table, and the API timed through the
/// read-only user.
#[test]
fn the_store_scale_benchmark_runs_on_a_small_tree() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "store_scale");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("results.md");
    let bin = Path::new(scanner()).parent().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/bench/store_scale.py");
    let run = Command::new("python3")
        .arg(script)
        .args([
            "--entries",
            "30000",
            "--clickhouse-url",
            &db.url,
            "--database",
            db.database.as_str(),
        ])
        .arg("--work")
        .arg(work.path())
        .arg("--bin")
        .arg(bin)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let results = std::fs::read_to_string(&out).unwrap();
    for line in [
        "### 30,000 entries per snapshot",
        "| 1 | 30,000 |",
        "| entries |",
        "| all |",
        "| children of a directory (100 per page) | 200 |",
        "| growth 1 -> 2 of a directory | 50 |",
    ] {
        assert!(results.contains(line), "{line:?} missing from\n{results}");
    }
}
