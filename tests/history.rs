//! History and growth through the API, over two real scans of a tree that changed between
//! them, read with the read-only user.

mod support;

use std::process::Command;

use storage_tracker_api::AppState;
use support::*;

fn get(rt: &tokio::runtime::Runtime, app: &axum::Router, uri: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = api_get(rt, app, uri, None);
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn growth_and_history_between_two_scans() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "history");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    let write = |p: &str, n: usize| std::fs::write(root.join(p), vec![b'x'; n]).unwrap();
    std::fs::create_dir_all(root.join("grows")).unwrap();
    std::fs::create_dir_all(root.join("goes/deep")).unwrap();
    write("grows/a", 100);
    write("goes/deep/b", 300);
    write("stays", 7);
    let scan = || {
        let o = Command::new(scanner())
            .args(["--aggregator", &aggregator.addr, "--label", "h"])
            .arg(&root)
            .env_remove("SLURM_PROCID")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    scan();
    write("grows/new", 5000);
    write("grows/a", 150);
    std::fs::remove_dir_all(root.join("goes")).unwrap();
    write("arrives", 40);
    scan();

    let app = storage_tracker_api::app(AppState::new(reader(&db)));
    let r = root.to_str().unwrap();
    let dir_size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();

    let (status, growth) = get(&rt, &app, &format!("/api/v1/growth?from=1&to=2&path={r}"));
    assert_eq!(status, 200, "{growth}");
    let changes = growth["changes"].as_array().unwrap();
    let find = |name: &str| {
        changes
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {growth}"))
    };
    assert_eq!(find("grows")["status"], "changed");
    assert_eq!(find("grows")["files_from"], 1);
    assert_eq!(find("grows")["files_to"], 2);
    let grows = dir_size(&root.join("grows"));
    assert_eq!(find("grows")["bytes_to"], grows + 5000 + 150);
    assert_eq!(find("goes")["status"], "removed");
    assert_eq!(find("goes")["files_from"], 1);
    assert_eq!(find("arrives")["status"], "added");
    assert_eq!(find("arrives")["bytes_to"], 40);
    assert!(
        !changes.iter().any(|c| c["name"] == "stays"),
        "unchanged entries are not listed"
    );
    let summary = &growth["summary"];
    assert_eq!(
        (summary["added"].as_u64(), summary["removed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(summary["added_files"], 1);
    assert_eq!(summary["removed_files"], 1);
    assert_eq!(growth["total"], changes.len());
    let (_, page) = get(
        &rt,
        &app,
        &format!("/api/v1/growth?from=1&to=2&path={r}&limit=1"),
    );
    assert_eq!(
        (
            page["total"].as_u64(),
            page["changes"].as_array().unwrap().len()
        ),
        (Some(3), 1)
    );

    let (status, history) = get(&rt, &app, &format!("/api/v1/history?path={r}/grows"));
    assert_eq!(status, 200, "{history}");
    let points = history["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["files"], 1);
    assert_eq!(points[1]["files"], 2);
    assert_eq!(points[1]["bytes"], grows + 5150);

    let (status, owners) = get(&rt, &app, "/api/v1/growth/owners?from=1&to=2&by=user");
    assert_eq!(status, 200, "{owners}");
    let me = &owners["owners"][0];
    assert_eq!(me["status"], "changed");
    assert_eq!(
        me["files_to"].as_u64().unwrap(),
        me["files_from"].as_u64().unwrap() + 1
    );

    for bad in [
        "/api/v1/growth?from=1&path=/x",
        "/api/v1/growth?from=1&to=99&path=/x",
        "/api/v1/growth?from=1&to=2",
        "/api/v1/growth/owners?from=1&to=2&by=planet",
        "/api/v1/history",
    ] {
        let (status, body) = get(&rt, &app, bad);
        assert!((400..500).contains(&status), "{bad}: {status} {body}");
    }
}

/// A tree with a scanner and an API over its database, for scans with their own options.
struct Lab {
    rt: tokio::runtime::Runtime,
    db: TestDatabase,
    aggregator: Aggregator,
    _tree: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Lab {
    fn new(tag: &str) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = TestDatabase::new(&rt, tag);
        let aggregator = Aggregator::start(&rt, &db);
        let tree = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tree.path()).unwrap();
        for (p, n) in [("proj/a/x", 100), ("proj/b", 20), ("other/y", 7)] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, vec![b'x'; n]).unwrap();
        }
        Self {
            rt,
            db,
            aggregator,
            _tree: tree,
            root,
        }
    }

    /// Scans `dir` (below the root) with the label "fs" and these options.
    fn scan(&self, dir: &str, options: &[&str]) {
        let o = Command::new(scanner())
            .args(["--aggregator", &self.aggregator.addr, "--label", "fs"])
            .args(options)
            .arg(self.root.join(dir))
            .env_remove("SLURM_PROCID")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    fn get(&self, uri: &str) -> (u16, serde_json::Value) {
        let app = storage_tracker_api::app(AppState::new(reader(&self.db)));
        get(&self.rt, &app, uri)
    }

    fn r(&self) -> &str {
        self.root.to_str().unwrap()
    }
}

#[test]
fn growth_between_snapshots_of_different_roots_is_refused_and_history_follows_one_filesystem() {
    let lab = Lab::new("roots");
    lab.scan("", &[]);
    lab.scan("proj", &[]);
    let r = lab.r();
    let (status, body) = lab.get(&format!("/api/v1/growth?from=1&to=2&path={r}"));
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("same filesystem"), "{message}");
    assert!(message.contains(&format!("root {r}/proj")), "{message}");
    let (status, body) = lab.get("/api/v1/growth/owners?from=1&to=2");
    assert_eq!(status, 400, "{body}");

    // Both snapshots hold {r}/proj: a history must say which filesystem it follows.
    let (status, body) = lab.get(&format!("/api/v1/history?path={r}/proj"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("snapshot="),
        "{body}"
    );
    for id in [1, 2] {
        let (status, body) = lab.get(&format!("/api/v1/history?path={r}/proj&snapshot={id}"));
        assert_eq!(status, 200, "{body}");
        let points: Vec<u64> = body["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["snapshot_id"].as_u64().unwrap())
            .collect();
        assert_eq!(points, [id], "{body}");
    }
    // Only one filesystem holds the root: no choice to make.
    let (status, body) = lab.get(&format!("/api/v1/history?path={r}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["root_path"], r);
}

#[test]
fn history_and_growth_warn_when_scans_did_not_cover_the_same_tree() {
    let lab = Lab::new("coverage");
    lab.scan("", &[]);
    lab.scan("", &["--max-depth", "1", "--exclude", "other"]);
    let r = lab.r();
    let (status, list) = lab.get("/api/v1/snapshots");
    assert_eq!(status, 200, "{list}");
    let options: Vec<&str> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scan_options"].as_str().unwrap())
        .collect();
    assert_eq!(options, ["--max-depth=1 --exclude=other", ""]);

    let (status, growth) = lab.get(&format!("/api/v1/growth?from=1&to=2&path={r}"));
    assert_eq!(status, 200, "{growth}");
    let warning = growth["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("did not cover the same tree")
            && warning.contains("snapshot 1 a full scan")
            && warning.contains("snapshot 2 a scan with --max-depth=1 --exclude=other"),
        "{growth}"
    );
    let (status, history) = lab.get(&format!("/api/v1/history?path={r}"));
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["warnings"].as_array().unwrap().len(),
        1,
        "{history}"
    );
    assert_eq!(
        history["points"][1]["scan_options"],
        "--max-depth=1 --exclude=other"
    );

    // Two scans with the same options compare without a warning.
    let (_, same) = lab.get(&format!("/api/v1/growth?from=1&to=1&path={r}"));
    assert_eq!(same["warnings"], serde_json::json!([]), "{same}");
}

#[test]
fn growth_summary_counts_only_entries_changed_in_place_as_changed() {
    let lab = Lab::new("summary");
    lab.scan("", &[]);
    let root = &lab.root;
    std::fs::write(root.join("proj/b"), vec![b'y'; 50]).unwrap(); // changed
    std::fs::write(root.join("proj/new"), b"n").unwrap(); // added
    std::fs::remove_dir_all(root.join("proj/a")).unwrap(); // removed
    lab.scan("", &[]);
    let r = lab.r();
    let (status, growth) = lab.get(&format!("/api/v1/growth?from=1&to=2&path={r}/proj"));
    assert_eq!(status, 200, "{growth}");
    let s = &growth["summary"];
    assert_eq!(
        (
            s["changed"].as_u64(),
            s["added"].as_u64(),
            s["removed"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{growth}"
    );
}

#[test]
fn growth_and_history_of_a_missing_directory_are_404() {
    let lab = Lab::new("missing");
    lab.scan("", &[]);
    let r = lab.r();
    for uri in [
        format!("/api/v1/history?path={r}/nowhere"),
        format!("/api/v1/history?path={r}/nowhere&snapshot=1"),
        format!("/api/v1/growth?from=1&to=1&path={r}/nowhere"),
        // Listings under a directory that is not there, likewise.
        format!("/api/v1/snapshots/1/top?path={r}/nowhere"),
        format!("/api/v1/snapshots/1/stale?path={r}/nowhere"),
        format!("/api/v1/snapshots/1/search?q=x&path={r}/nowhere"),
        format!("/api/v1/snapshots/1/treemap?path={r}/nowhere"),
    ] {
        let (status, body) = lab.get(&uri);
        assert_eq!(status, 404, "{uri}: {body}");
    }
    // The OpenAPI document says that both need a path.
    let (_, doc) = lab.get("/api/v1/openapi.json");
    for route in ["/api/v1/history", "/api/v1/growth"] {
        let path = doc["paths"][route]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "path")
            .unwrap();
        assert_eq!(path["required"], true, "{route}");
    }
}

#[test]
fn history_and_the_snapshot_list_follow_one_label() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "labels");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    std::fs::create_dir(root.join("data")).unwrap();
    std::fs::write(root.join("data/a"), b"x").unwrap();
    // The same tree as two filesystems: "home" twice, then "scratch" once.
    for label in ["home", "home", "scratch"] {
        let o = Command::new(scanner())
            .args(["--aggregator", &aggregator.addr, "--label", label])
            .arg(&root)
            .env_remove("SLURM_PROCID")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let app = storage_tracker_api::app(AppState::new(reader(&db)));
    let r = root.to_str().unwrap();

    let listed = |query: &str| {
        let (status, list) = get(&rt, &app, &format!("/api/v1/snapshots?{query}"));
        assert_eq!(status, 200, "{list}");
        let ids: Vec<u64> = list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["snapshot_id"].as_u64().unwrap())
            .collect();
        (list["total"].as_u64().unwrap(), ids)
    };
    assert_eq!(listed(""), (3, vec![3, 2, 1]));
    assert_eq!(listed("label=home"), (2, vec![2, 1]));
    assert_eq!(listed("label=home&limit=1&offset=1"), (2, vec![1]));
    assert_eq!(listed("label=scratch"), (1, vec![3]));
    assert_eq!(listed("label=nothing%20here"), (0, vec![]));
    // Labels are compared exactly, and an empty one is refused, not taken as "".
    assert_eq!(listed("label=HOME"), (0, vec![]));
    for uri in [
        "/api/v1/snapshots?label=".to_owned(),
        format!("/api/v1/history?path={r}/data&label="),
    ] {
        let (status, refused) = get(&rt, &app, &uri);
        assert_eq!(status, 400, "{uri}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .starts_with("label is empty"),
            "{refused}"
        );
    }

    // Two filesystems hold the directory: a history needs one named, by snapshot or label.
    let (status, refused) = get(&rt, &app, &format!("/api/v1/history?path={r}/data"));
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().ends_with(
            "give snapshot= with a snapshot of the one you mean, or label= with its label"
        ),
        "{refused}"
    );
    let points = |query: &str| {
        let (status, history) = get(&rt, &app, &format!("/api/v1/history?path={r}/data&{query}"));
        assert_eq!(status, 200, "{history}");
        assert_eq!(
            history["filesystem_label"],
            query.rsplit('=').next().unwrap()
        );
        history["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["snapshot_id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(points("label=home"), [1, 2]);
    // Each point's start to the nanosecond, as its snapshot's.
    let (_, list) = get(&rt, &app, "/api/v1/snapshots");
    let (_, history) = get(
        &rt,
        &app,
        &format!("/api/v1/history?path={r}/data&label=home"),
    );
    for point in history["points"].as_array().unwrap() {
        let snapshot = list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["snapshot_id"] == point["snapshot_id"])
            .unwrap();
        assert_eq!(point["started_at_ns"], snapshot["started_at_ns"]);
        assert_eq!(point["started_at"], snapshot["started_at"]);
    }
    assert_eq!(points("label=scratch"), [3]);
    let (status, history) = get(
        &rt,
        &app,
        &format!("/api/v1/history?path={r}/data&snapshot=1&label=home"),
    );
    assert_eq!(
        (status, history["points"].as_array().unwrap().len()),
        (200, 2)
    );
    let (status, refused) = get(
        &rt,
        &app,
        &format!("/api/v1/history?path={r}/data&snapshot=1&label=scratch"),
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .starts_with("snapshot 1 is of the filesystem \"home\""),
        "{refused}"
    );
    let (status, refused) = get(
        &rt,
        &app,
        &format!("/api/v1/history?path={r}/data&label=tape"),
    );
    assert_eq!(status, 404, "{refused}");
    assert_eq!(
        refused["message"],
        format!("no committed snapshot of the label \"tape\" has a directory \"{r}/data\"")
    );
}
