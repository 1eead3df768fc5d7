//! The aggregator's command line against a real ClickHouse: what a user types wrong is said
//! once and plainly, nothing is created by a command that only reads, and a file it writes is
//! whole or absent.

mod support;

use std::process::{Command, Output};

use serde::Deserialize;

use storage_tracker_aggregator::Store;
use storage_tracker_aggregator::snapshot::{CommitTotals, SnapshotRecord, Transition};
use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::v1::BeginSnapshotRequest;
use support::{TestDatabase, clickhouse_url};

/// The storage-aggregator binary of this build.
fn aggregator_bin() -> std::path::PathBuf {
    support::aggregator_binary(support::scanner())
}

/// The aggregator on `url` and `database`, with `args`.
fn aggregator(url: &str, database: &str, args: &[&str]) -> Output {
    Command::new(aggregator_bin())
        .args(["--clickhouse-url", url, "--database", database])
        .args(args)
        .env_remove("STORAGE_TRACKER_CONFIG")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct Count {
    n: u64,
}

fn databases_named(rt: &tokio::runtime::Runtime, name: &str) -> u64 {
    let client = clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_validation(false);
    rt.block_on(
        client
            .query("SELECT count() AS n FROM system.databases WHERE name = ?")
            .bind(name)
            .fetch_one::<Count>(),
    )
    .unwrap()
    .n
}

/// A committed snapshot record (no entries) started at `started_at`.
fn commit_record(rt: &tokio::runtime::Runtime, db: &TestDatabase, id: u64, started_at: u32) {
    let store = Store::new(db.store_config());
    let mut record = SnapshotRecord::begun(
        SnapshotId::new(id),
        BeginSnapshotRequest {
            scan_id: format!("scan-{id}"),
            filesystem_label: "fs".into(),
            root_path: b"/data".to_vec(),
            ranks: 1,
            schema_version: storage_tracker_proto::SCHEMA_VERSION,
            ..Default::default()
        },
        i64::from(started_at) * 1_000_000_000,
    );
    record
        .transition(Transition::Commit(CommitTotals::default()), started_at + 60)
        .unwrap();
    rt.block_on(store.record_snapshot(&record)).unwrap();
}

#[test]
fn a_mistyped_database_is_not_created_by_list_or_any_command_but_serve_and_import() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = clickhouse_url();
    let typo = format!("st_test_typo_{}", std::process::id());
    for args in [
        &["list"][..],
        &["drop", "1"],
        &[
            "retention",
            "--label",
            "fs",
            "--keep-last",
            "1",
            "--dry-run",
        ],
        &["export-ncdu", "1"],
    ] {
        let o = aggregator(&url, &typo, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("has no database {typo}: check --database")),
            "{args:?}: {err}"
        );
        assert!(o.stdout.is_empty(), "{args:?} printed nothing");
        assert_eq!(databases_named(&rt, &typo), 0, "{args:?} created {typo}");
    }
}

#[test]
fn list_prints_utc_dates_not_epoch_seconds() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "cli_list");
    // 2026-03-04 01:02:03 UTC.
    commit_record(&rt, &db, 1, 1_772_582_400 + 3_723);
    let o = aggregator(&db.url, db.database.as_str(), &["list"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    let row = out.lines().nth(1).expect("one snapshot");
    assert_eq!(
        row.split('\t').nth(4),
        Some("2026-03-04 01:02:03 UTC"),
        "{out}"
    );
    assert!(!out.contains("1772586123"), "{out}");
}

#[test]
fn export_ncdu_of_a_missing_path_leaves_no_file_behind() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "cli_export");
    commit_record(&rt, &db, 1, 1_700_000_000);
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.json");
    let kept = dir.path().join("kept.json");
    std::fs::write(&kept, b"an earlier export").unwrap();
    for file in [&fresh, &kept] {
        let o = aggregator(
            &db.url,
            db.database.as_str(),
            &[
                "export-ncdu",
                "1",
                "--path",
                "/missing",
                "-o",
                file.to_str().unwrap(),
            ],
        );
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("has no directory /missing"), "{err}");
    }
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["kept.json"], "no empty file, no temporary file");
    assert_eq!(std::fs::read(&kept).unwrap(), b"an earlier export");
}

#[test]
fn error_messages_say_their_cause_once() {
    // ClickHouse down: the client's message, hyper's and the socket's were each said twice.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = aggregator(&format!("http://{closed}"), "storage_tracker", &["list"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("ClickHouse at http://{closed}")),
        "{err}"
    );
    for once in [
        "http://127.0.0.1",
        "client error (Connect)",
        "Connection refused",
    ] {
        assert_eq!(err.matches(once).count(), 1, "{once:?} once: {err}");
    }
    // Bad options are usage errors (2), named by clap, before anything runs.
    for args in [
        &["--clickhouse-url", "not a url", "list"][..],
        &["export-ncdu", "1", "--path", "relative/dir"],
        &[
            "serve",
            "--spool",
            "/tmp/unused",
            "--metrics-listen",
            "nowhere",
        ],
    ] {
        let o = Command::new(aggregator_bin()).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("invalid value"), "{}", stderr(&o));
    }
}

#[test]
fn list_into_a_reader_that_stops_early_is_not_a_panic() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "cli_pipe");
    commit_record(&rt, &db, 1, 1_772_582_400);
    let mut child = Command::new(aggregator_bin())
        .args([
            "--clickhouse-url",
            &db.url,
            "--database",
            db.database.as_str(),
            "list",
        ])
        .env_remove("STORAGE_TRACKER_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // As `| head -0` does: the reader is gone before anything is written.
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn retention_without_a_policy_is_a_usage_error_and_drops_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "cli_retention");
    commit_record(&rt, &db, 1, 1_700_000_000);
    commit_record(&rt, &db, 2, 1_700_086_400);
    for args in [
        &["retention", "--label", "fs"][..],
        &["retention", "--label", "fs", "--keep-last", "0"],
    ] {
        let o = aggregator(&db.url, db.database.as_str(), args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o)
                .contains("retention needs a policy: --keep-last, --keep-weekly or --keep-monthly"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = aggregator(&db.url, db.database.as_str(), &["list"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        out.matches("committed").count(),
        2,
        "nothing was dropped: {out}"
    );
    let o = aggregator(
        &db.url,
        db.database.as_str(),
        &[
            "retention",
            "--label",
            "fs",
            "--keep-last",
            "1",
            "--dry-run",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "would drop 1 snapshot(s) of fs: [1]"
    );
}
