//! History and growth through the API, over two real scans of a tree that changed between
//! them, read with the read-only user.

mod support;

use std::process::Command;

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use storage_tracker_api::{AppState, ReadConfig};
use support::*;

const SCANNER: &str = env!("CARGO_BIN_EXE_storage-scan");

fn get(rt: &tokio::runtime::Runtime, app: &axum::Router, uri: &str) -> (u16, serde_json::Value) {
    let response = rt
        .block_on(
            app.clone()
                .oneshot(Request::get(uri).body(Body::empty()).unwrap()),
        )
        .unwrap();
    let status = response.status().as_u16();
    let body = rt
        .block_on(axum::body::to_bytes(response.into_body(), 16 << 20))
        .unwrap();
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
        let o = Command::new(SCANNER)
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

    let app = storage_tracker_api::app(AppState::new(ReadConfig {
        url: db.url.clone(),
        user: "storage_reader".into(),
        password: String::new(),
        database: db.database.clone(),
    }));
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
