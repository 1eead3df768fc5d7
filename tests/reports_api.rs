//! The report endpoints of the API over one real scan of a small tree whose answers are
//! known: an entry, the largest files and directories, usage by owner and type, histograms,
//! stale data (JSON and CSV), and search with every kind of filter.

mod support;

use std::process::Command;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

use storage_tracker_api::AppState;
use support::*;

struct Api {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

impl Api {
    /// (status, content type, body).
    fn raw(&self, uri: &str) -> (u16, String, Vec<u8>) {
        self.raw_as(uri, None)
    }

    /// The same, with `Authorization: Bearer token`.
    fn raw_as(&self, uri: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
        api_get(&self.rt, &self.app, uri, token)
    }

    fn json(&self, uri: &str) -> serde_json::Value {
        let (status, _, body) = self.raw(uri);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "{uri}: {json}");
        json
    }

    fn names(&self, uri: &str) -> Vec<String> {
        self.json(uri)["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn set_times(path: &std::path::Path, mtime_days_ago: u64, atime_days_ago: u64) {
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(
            std::fs::FileTimes::new()
                .set_modified(now - day * mtime_days_ago as u32)
                .set_accessed(now - day * atime_days_ago as u32),
        )
        .unwrap();
}

#[test]
fn report_endpoints_answer_exactly_and_refuse_bad_input() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "reports");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    let write = |p: &str, n: usize| {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'x'; n]).unwrap();
        path
    };
    set_times(&write("big.dat", 5000), 400, 400);
    write("docs/a.txt", 100);
    write("docs/b.TXT", 200);
    set_times(&write("docs/c.md", 50), 10, 10);
    write("src/main.rs", 300);
    write("weird/<i>x<i>.txt", 10);
    set_times(&write("sub/deep/old.bin", 3000), 20, 1000);
    scan(&aggregator, &root);
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db))),
        rt,
    };
    let r = root.to_str().unwrap();
    let s = "/api/v1/snapshots/1";
    let dir_size = |p: &str| std::fs::metadata(root.join(p)).unwrap().len();

    let docs = api.json(&format!("{s}/entry?path={r}/docs"));
    assert_eq!(docs["kind"], "dir");
    assert_eq!(docs["files"], 3);
    assert_eq!(docs["bytes"], dir_size("docs") + 350);
    assert_eq!(
        api.json(&format!("{s}/entry?path={r}/big.dat"))["size"],
        5000
    );
    assert_eq!(api.raw(&format!("{s}/entry?path={r}/nothing")).0, 404);

    assert_eq!(
        api.names(&format!("{s}/top?what=files&limit=2")),
        ["big.dat", "old.bin"]
    );
    assert_eq!(
        api.names(&format!("{s}/top?what=dirs&limit=1"))[0],
        root.file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(
        api.names(&format!("{s}/top?what=files&path={r}/docs")),
        ["b.TXT", "a.txt", "c.md"]
    );
    // Each list's total, whatever its page: the files and directories at or below.
    let total = |uri: String| api.json(&uri)["total"].as_u64();
    assert_eq!(total(format!("{s}/top?what=files&limit=2")), Some(7));
    assert_eq!(total(format!("{s}/top?what=files&path={r}/docs")), Some(3));
    // The root, docs, src, weird, sub and sub/deep.
    assert_eq!(total(format!("{s}/top?what=dirs&limit=1")), Some(6));
    assert_eq!(total(format!("{s}/top?what=dirs&path={r}/sub")), Some(2));
    assert_eq!(total(format!("{s}/usage?by=type&limit=1")), Some(5));
    assert_eq!(total(format!("{s}/usage?by=user")), Some(1));
    assert_eq!(total(format!("{s}/usage?by=group&offset=5")), Some(1));
    // A snapshot counts every entry, its root too; a directory what lies below it.
    let listed = api.json("/api/v1/snapshots");
    let at_root = api.json(&format!("{s}/entry?path={r}"));
    assert_eq!(listed["snapshots"][0]["entries"], 13);
    assert_eq!(at_root["entries"], 12);
    // Search and stale files count their matches, whether the page came from the snapshot's
    // largest entries (a full page), from all of them, or lies past the end.
    for page in ["limit=1", "limit=100", "limit=1&offset=7"] {
        assert_eq!(total(format!("{s}/search?q=txt&{page}")), Some(2), "{page}");
        assert_eq!(
            total(format!("{s}/search?q=txt&ignore_case=true&{page}")),
            Some(3)
        );
        // Every entry at or below the directory: seven files and six directories at the root;
        // docs and its three files.
        assert_eq!(total(format!("{s}/search?{page}")), Some(13), "{page}");
        assert_eq!(total(format!("{s}/search?path={r}/docs&{page}")), Some(4));
        assert_eq!(total(format!("{s}/search?q=none&{page}")), Some(0));
        assert_eq!(total(format!("{s}/stale?{page}")), Some(2), "{page}");
        assert_eq!(
            total(format!("{s}/stale?days=0&min_size=200&{page}")),
            Some(4)
        );
    }

    let types = api.json(&format!("{s}/usage?by=type"));
    let txt = types["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "txt")
        .unwrap();
    assert_eq!(
        (txt["files"].as_u64(), txt["bytes"].as_u64()),
        (Some(3), Some(310))
    );
    let users = api.json(&format!("{s}/usage?by=user"));
    assert_eq!(users["items"][0]["name"], "root");
    assert_eq!(users["items"][0]["files"], 7);

    let sizes = api.json(&format!("{s}/histograms?of=size"));
    let files: u64 = sizes["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["files"].as_u64().unwrap())
        .sum();
    assert_eq!(files, 7);
    let mtimes = api.json(&format!("{s}/histograms?of=mtime"));
    assert!(
        mtimes["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["label"] == "365-730 days"),
        "{mtimes}"
    );

    assert_eq!(
        api.names(&format!("{s}/stale?days=365&min_size=1000")),
        ["big.dat", "old.bin"]
    );
    assert_eq!(
        api.names(&format!("{s}/stale?days=365&by=mtime")),
        ["big.dat"]
    );
    let (status, kind, csv) = api.raw(&format!("{s}/stale?days=365&min_size=1000&format=csv"));
    let csv = String::from_utf8(csv).unwrap();
    assert_eq!((status, kind.as_str()), (200, "text/csv; charset=utf-8"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].starts_with(&format!("\"{r}/big.dat\",5000,")),
        "{csv}"
    );

    let search = |q: &str| api.names(&format!("{s}/search?{q}"));
    assert_eq!(search("q=.txt"), ["a.txt", "<i>x<i>.txt"]);
    assert_eq!(search("q=*.TXT&match=glob"), ["b.TXT"]);
    assert_eq!(search("q=%5E%5Bab%5D%5C.&match=regex"), ["b.TXT", "a.txt"]);
    assert_eq!(search("type=txt"), ["b.TXT", "a.txt", "<i>x<i>.txt"]);
    assert_eq!(search(&format!("q=a&path={r}/docs")), ["a.txt"]);
    // A directory found by search carries its tree's totals.
    let found = api.json(&format!("{s}/search?q=docs&field=name"));
    let docs_found = &found["entries"][0];
    assert_eq!(docs_found["name"], "docs");
    assert_eq!(docs_found["files"], 3);
    assert_eq!(docs_found["bytes"], dir_size("docs") + 350);
    assert_eq!(search("q=docs/&field=path&min_size=60"), ["b.TXT", "a.txt"]);
    let month_ago = {
        let days = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            / 86_400
            - 30;
        let (y, m, d) = storage_tracker_proto::calendar::civil_from_days(days as i64);
        format!("{y:04}-{m:02}-{d:02}")
    };
    assert_eq!(search(&format!("mtime_before={month_ago}")), ["big.dat"]);
    assert_eq!(
        search(&format!("atime_before={month_ago}&min_size=1")),
        ["big.dat", "old.bin"]
    );
    assert_eq!(search("user=root&max_size=60&type=md"), ["c.md"]);
    // The filter builder: several types, one kind, each order (ties by path), the total.
    assert_eq!(search("type=md,rs"), ["main.rs", "c.md"]);
    assert_eq!(search("type=md,.RS&sort=name"), ["c.md", "main.rs"]);
    assert_eq!(total(format!("{s}/search?kind=dir")), Some(6));
    assert_eq!(total(format!("{s}/search?kind=symlink")), Some(0));
    assert_eq!(
        search(&format!("kind=file&path={r}/docs&sort=name&order=asc")),
        ["a.txt", "b.TXT", "c.md"]
    );
    assert_eq!(
        search(&format!("path={r}/docs&sort=path&order=desc")),
        ["c.md", "b.TXT", "a.txt", "docs"]
    );
    assert_eq!(
        search("kind=file&sort=mtime&order=asc&limit=2"),
        ["big.dat", "old.bin"]
    );
    assert_eq!(
        search("kind=file&sort=atime&order=asc&limit=2"),
        ["old.bin", "big.dat"]
    );
    assert_eq!(
        search("kind=file&sort=size&order=asc&limit=1"),
        ["<i>x<i>.txt"]
    );
    assert_eq!(
        total(format!("{s}/search?kind=file&sort=name&limit=1&offset=3")),
        Some(7)
    );
    assert_eq!(search("user=nobody-at-all").len(), 0);

    // Children in any order asked.
    let children = |q: &str| -> Vec<String> {
        api.json(&format!("{s}/children?path={r}&{q}"))["children"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        children("sort=name"),
        ["big.dat", "docs", "src", "sub", "weird"]
    );
    assert_eq!(children("sort=name&order=desc")[0], "weird");
    assert_eq!(children("sort=files")[0], "docs");
    assert_eq!(children("sort=mtime&order=asc")[0], "big.dat");

    // The treemap: the two largest children of the root, the rest folded.
    let tree_bytes = |p: &str| -> u64 { ground_truth(&root.join(p)).iter().map(|e| e.size).sum() };
    let map = api.json(&format!("{s}/treemap?depth=2&max_children=2"));
    let top = &map["root"];
    assert_eq!(top["bytes"], tree_bytes(""));
    let tiles: Vec<&str> = top["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tiles, ["sub", "big.dat", "3 smaller items"], "{map}");
    let other = &top["children"][2];
    assert_eq!(other["kind"], "other");
    assert_eq!(other["count"], 3);
    assert_eq!(
        other["bytes"],
        tree_bytes("docs") + tree_bytes("src") + tree_bytes("weird")
    );
    let sub = &top["children"][0];
    assert_eq!(sub["children"][0]["name"], "deep");
    assert_eq!(sub["children"][0]["bytes"], tree_bytes("sub/deep"));
    assert!(
        sub["children"][0].get("children").is_none(),
        "two levels only: {map}"
    );
    let by_files = api.json(&format!("{s}/treemap?depth=1&size=files&path={r}/docs"));
    assert_eq!(by_files["root"]["children"].as_array().unwrap().len(), 3);

    for bad in [
        format!("{s}/children?sort=colour"),
        format!("{s}/children?order=sideways"),
        format!("{s}/treemap?depth=9"),
        format!("{s}/treemap?max_children=0"),
        format!("{s}/treemap?size=weight"),
        format!("{s}/treemap?path={r}/nothing"),
        format!("{s}/top?what=everything"),
        format!("{s}/usage?by=planet"),
        format!("{s}/histograms?of=color"),
        format!("{s}/stale?format=xml"),
        format!("{s}/stale?days=99999"),
        format!("{s}/stale?min_size=-1"),
        format!("{s}/search?q=(&match=regex"),
        format!("{s}/search?q=x&match=fuzzy"),
        format!("{s}/search?mtime_before=yesterday"),
        format!("{s}/search?limit=0"),
        format!("{s}/search?kind=socketish"),
        format!("{s}/search?sort=colour"),
        format!("{s}/search?order=up"),
        format!("{s}/search?type=h5,,nc"),
        format!("{s}/entry"),
        "/api/v1/snapshots/0/top".to_owned(),
    ] {
        let (status, _, body) = api.raw(&bad);
        assert!(
            (400..500).contains(&status),
            "{bad}: {status} {}",
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn tokens_limit_every_endpoint_to_their_prefixes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "tokens");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    for p in ["team/a.txt", "team/sub/b.txt", "other/secret.txt"] {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"data").unwrap();
    }
    scan(&aggregator, &root);
    let r = root.to_str().unwrap();
    let admin = "admin-token-0123456789abcdef";
    let lead = "lead-token-0123456789abcdefgh";
    let access = storage_tracker_api::access::Access::parse(&format!(
        "admin {admin} *\nlead {lead} {r}/team\n"
    ))
    .unwrap();
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db)).with_access(access)),
        rt,
    };
    let s = "/api/v1/snapshots/1";
    let status = |uri: &str, token: Option<&str>| api.raw_as(uri, token).0;
    let body = |uri: &str, token: Option<&str>| -> serde_json::Value {
        let (status, _, body) = api.raw_as(uri, token);
        assert_eq!(status, 200, "{uri}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    };

    // Public: health and the API's description. Everything else needs a valid token.
    assert_eq!(status("/health", None), 200);
    assert_eq!(status("/api/v1/openapi.json", None), 200);
    assert_eq!(status("/api/v1/snapshots", None), 401);
    assert_eq!(
        status("/api/v1/snapshots", Some("wrong-token-0123456789abcdef")),
        401
    );
    assert_eq!(status(&format!("{s}/children"), Some(admin)), 200);

    // The lead reads the team's directory and below, nothing else.
    let team = format!("path={r}/team");
    for uri in [
        format!("{s}/children?{team}"),
        format!("{s}/entry?path={r}/team/a.txt"),
        format!("{s}/treemap?{team}"),
        format!("{s}/top?{team}"),
        format!("{s}/stale?days=0&{team}"),
        format!("{s}/search?q=txt&{team}"),
        format!("/api/v1/history?{team}"),
    ] {
        assert_eq!(status(&uri, Some(lead)), 200, "{uri}");
    }
    let found = body(&format!("{s}/search?q=.txt&{team}"), Some(lead));
    let names: Vec<&str> = found["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{found}");
    assert!(!names.contains(&"secret.txt"));
    for uri in [
        format!("{s}/children"),
        format!("{s}/children?path={r}/other"),
        format!("{s}/children?path={r}/teamwork"),
        format!("{s}/entry?path={r}/other/secret.txt"),
        format!("{s}/treemap"),
        format!("{s}/top"),
        format!("{s}/stale?days=0"),
        format!("{s}/search?q=secret"),
        format!("{s}/usage"),
        format!("{s}/histograms"),
        format!("/api/v1/history?path={r}"),
        format!("/api/v1/growth?from=1&to=1&path={r}"),
        "/api/v1/growth/owners?from=1&to=1".to_owned(),
    ] {
        assert_eq!(status(&uri, Some(lead)), 403, "{uri}");
    }
    let (_, _, denied) = api.raw_as(&format!("{s}/search?q=secret"), Some(lead));
    let denied = String::from_utf8_lossy(&denied);
    assert!(
        denied.contains(&format!("{r}/team")),
        "names what the token may read: {denied}"
    );
}

/// Sums an ncdu JSON export (as ncdu itself re-exports it) as ncdu counts it: for every
/// directory, by path, the apparent bytes of it and everything below (a hard-linked file,
/// marked `hlnkc`, once per directory), and the entries below it.
fn ncdu_totals(doc: &serde_json::Value) -> std::collections::BTreeMap<String, (u64, u64)> {
    /// Every entry: (path, is a directory, asize, the inode of a hard-linked file).
    fn walk(
        node: &serde_json::Value,
        parent: &str,
        out: &mut Vec<(String, bool, u64, Option<u64>)>,
    ) {
        let (info, children) = match node.as_array() {
            Some(items) => (&items[0], &items[1..]),
            None => (node, &[][..]),
        };
        let name = info["name"].as_str().unwrap();
        let path = if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}/{name}")
        };
        let linked = (info["hlnkc"] == true).then(|| info["ino"].as_u64().unwrap());
        out.push((
            path.clone(),
            node.is_array(),
            info["asize"].as_u64().unwrap_or(0),
            linked,
        ));
        for child in children {
            walk(child, &path, out);
        }
    }
    let mut all = Vec::new();
    walk(&doc[3], "", &mut all);
    let mut out = std::collections::BTreeMap::new();
    for (dir, _, own, _) in all.iter().filter(|e| e.1) {
        let below = format!("{dir}/");
        let mut inodes = std::collections::BTreeSet::new();
        let (mut bytes, mut entries) = (*own, 0);
        for (_, _, size, linked) in all.iter().filter(|e| e.0.starts_with(&below)) {
            entries += 1;
            if linked.is_none_or(|ino| inodes.insert(ino)) {
                bytes += size;
            }
        }
        out.insert(dir.clone(), (bytes, entries));
    }
    out
}

fn tool(name: &str) -> std::path::PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = std::path::Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run ci/install-deps.sh");
}

#[test]
fn ncdu_export_loads_in_ncdu_and_gdu_and_matches_the_tree() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "ncdu");
    let aggregator = Aggregator::start(&rt, &db);
    let fixture = Fixture::build();
    scan(&aggregator, &fixture.root);
    let truth = ground_truth(&fixture.root);
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db))),
        rt,
    };
    let s = "/api/v1/snapshots/1";
    let (status, kind, from_api) = api.raw(&format!("{s}/export/ncdu"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&from_api));
    // The fixture has names that are not UTF-8: bytes, not JSON (see the test below).
    assert_eq!(kind, "application/octet-stream");

    // The command line writes the same bytes.
    let out = tempfile::tempdir().unwrap();
    let exported = out.path().join("export.json");
    let cli = Command::new(sibling_binary(
        scanner(),
        "storage-aggregator",
        "storage-tracker-aggregator",
    ))
    .args([
        "--clickhouse-url",
        &db.url,
        "--database",
        db.database.as_str(),
    ])
    .args(["export-ncdu", "1", "--output"])
    .arg(&exported)
    .output()
    .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(std::fs::read(&exported).unwrap(), from_api);
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains(&format!("exported {} entries", truth.len()))
    );

    // ncdu reads it and writes it back out; every directory's totals match the tree's.
    let again = out.path().join("ncdu.json");
    let ncdu = Command::new(tool("ncdu"))
        .arg("-f")
        .arg(&exported)
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(
        ncdu.status.success(),
        "ncdu: {}",
        String::from_utf8_lossy(&ncdu.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&String::from_utf8_lossy(&std::fs::read(&again).unwrap())).unwrap();
    assert_eq!(doc[2]["progname"], "ncdu");
    let totals = ncdu_totals(&doc);
    let dirs: Vec<&TruthEntry> = truth.iter().filter(|e| e.kind == "dir").collect();
    assert_eq!(totals.len(), dirs.len());
    for d in dirs {
        let key = String::from_utf8_lossy(&d.path).into_owned();
        let want = tree_totals(&truth, &d.path);
        assert_eq!(totals.get(&key), Some(&(want.bytes, want.entries)), "{key}");
    }

    // gdu reads it too.
    let gdu = Command::new(tool("gdu"))
        .args(["--non-interactive", "--no-progress", "--input-file"])
        .arg(&exported)
        .output()
        .unwrap();
    assert!(
        gdu.status.success(),
        "gdu: {}",
        String::from_utf8_lossy(&gdu.stderr)
    );
    assert!(String::from_utf8_lossy(&gdu.stdout).contains("mixed"));

    // A subdirectory exports alone; a path outside the snapshot is a 404.
    let r = fixture.root.to_str().unwrap();
    let (status, _, mixed) = api.raw(&format!("{s}/export/ncdu?path={r}/mixed"));
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&mixed);
    assert!(
        text.contains(&format!("[{{\"name\":\"{r}/mixed\"")),
        "{text}"
    );
    assert!(
        text.contains("\"hlnkc\":true"),
        "hard links are marked: {text}"
    );
    assert!(
        text.contains("\"notreg\":true"),
        "symlinks and the FIFO are marked"
    );
    assert_eq!(api.raw(&format!("{s}/export/ncdu?path=/nowhere")).0, 404);
    // Above the root there are entries below but no directory to start at (found by
    // schemathesis: the export began and broke off).
    assert_eq!(api.raw(&format!("{s}/export/ncdu?path=/")).0, 404);
    assert_eq!(
        api.raw(&format!("{s}/export/ncdu?path={r}/mixed/target.bin"))
            .0,
        404
    );
}

/// A scanned tree of small files written by `files`, with an API over its database.
fn scanned(tag: &str, files: &[(&str, usize)]) -> (Api, TestDatabase, tempfile::TempDir, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, tag);
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    for (p, n) in files {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'x'; *n]).unwrap();
    }
    scan(&aggregator, &root);
    drop(aggregator);
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db))),
        rt,
    };
    (api, db, tree, root.to_str().unwrap().to_owned())
}

#[test]
fn stale_csv_streams_every_row_past_one_page() {
    // More rows than one page of the download, in a few directories, one of them nested and
    // one whose name extends another's ("d0-x" sorts between "d0" and "d0/deep").
    let names: Vec<String> = (0..23_456)
        .map(|i| match i % 9 {
            7 => format!("d0-x/f{i:05}"),
            8 => format!("d0/deep/f{i:05}"),
            k => format!("d{k}/f{i:05}"),
        })
        .collect();
    let files: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let (api, db, _tree, r) = scanned("csvall", &files);
    let s = "/api/v1/snapshots/1";
    let (status, kind, csv) = api.raw(&format!("{s}/stale?days=0&format=csv"));
    assert_eq!((status, kind.as_str()), (200, "text/csv; charset=utf-8"));
    let csv = String::from_utf8(csv).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), names.len(), "every file, once");
    let unique: std::collections::BTreeSet<&str> = rows.iter().copied().collect();
    assert_eq!(unique.len(), names.len());
    assert!(
        rows[0].starts_with(&format!("\"{r}/d0/f00000\",1,")),
        "{}",
        rows[0]
    );
    // An explicit cap is kept; offset skips from the start.
    let (_, _, capped) = api.raw(&format!("{s}/stale?days=0&format=csv&limit=12345&offset=2"));
    let capped = String::from_utf8(capped).unwrap();
    assert_eq!(capped.lines().count(), 1 + 12_345);
    assert_eq!(capped.lines().nth(1).unwrap(), rows[2]);

    // Cut into windows of a few entries, or of one, the downloads are the same bytes.
    for window in [1, 700, 5000] {
        let small = Api {
            app: storage_tracker_api::app(AppState::new(reader(&db)).with_window_entries(window)),
            rt: tokio::runtime::Runtime::new().unwrap(),
        };
        for query in [
            "",
            "&limit=12345&offset=2",
            "&offset=20000",
            &format!("&path={r}/d0"),
        ] {
            let uri = format!("{s}/stale?days=0&format=csv{query}");
            assert!(
                small.raw(&uri) == api.raw(&uri),
                "{uri}: windows of {window} entries change the download"
            );
        }
    }
}

#[test]
fn stale_csv_gives_raw_bytes_of_non_utf8_paths_in_base64() {
    use base64::Engine;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "csvb64");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    let odd = root.join(os(b"caf\xe9.dat"));
    std::fs::write(&odd, b"12345").unwrap();
    std::fs::write(root.join("plain.dat"), b"1").unwrap();
    scan(&aggregator, &root);
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db))),
        rt,
    };
    let (_, _, csv) = api.raw("/api/v1/snapshots/1/stale?days=0&format=csv");
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().ends_with(",path_b64"));
    let raw = |line: &str| line.rsplit(',').next().unwrap().to_owned();
    let rows: Vec<&str> = lines.collect();
    let odd_row = rows.iter().find(|l| l.contains("caf\u{fffd}.dat")).unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(raw(odd_row))
        .unwrap();
    use std::os::unix::ffi::OsStrExt;
    assert_eq!(decoded, odd.as_os_str().as_bytes());
    let plain_row = rows.iter().find(|l| l.contains("plain.dat")).unwrap();
    assert_eq!(raw(plain_row), "");
}

#[test]
fn case_insensitive_search_finds_uppercase_patterns() {
    let (api, _db, _tree, _r) = scanned(
        "nocase",
        &[
            ("run/results.csv", 1),
            ("run/RESULTS.old", 2),
            ("run/other", 3),
        ],
    );
    let s = "/api/v1/snapshots/1";
    let search = |q: &str| {
        let mut names = api.names(&format!("{s}/search?{q}"));
        names.sort();
        names
    };
    let both = ["RESULTS.old", "results.csv"];
    // RE2's own flag, which 18.16 ignored on an uppercase literal.
    assert_eq!(search("q=(%3Fi)RESULTS&match=regex"), both);
    assert_eq!(search("q=(%3Fi)results&match=regex"), both);
    assert_eq!(search("q=RESULTS&match=regex&ignore_case=true"), both);
    assert_eq!(
        search("q=%5ERESULTS%5C.&match=regex&ignore_case=true"),
        both
    );
    assert_eq!(search("q=ResultS&ignore_case=true"), both);
    assert_eq!(search("q=RESULTS*&match=glob&ignore_case=true"), both);
    // Without it, case counts.
    assert_eq!(search("q=RESULTS"), ["RESULTS.old"]);
    assert_eq!(search("q=results*&match=glob"), ["results.csv"]);
    assert_eq!(api.raw(&format!("{s}/search?q=x&ignore_case=maybe")).0, 400);
}

#[test]
fn top_dirs_carry_their_own_allocated_size_mode_and_nlink() {
    let (api, _db, tree, r) = scanned("topdirs", &[("a/b/c", 5000), ("a/d", 10), ("e/f", 1)]);
    let s = "/api/v1/snapshots/1";
    let top = api.json(&format!("{s}/top?what=dirs&limit=10"));
    let entries = top["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{top}");
    for e in entries {
        let path = e["path"].as_str().unwrap();
        // The same answer as the entry itself gives.
        let one = api.json(&format!("{s}/entry?path={path}"));
        for field in [
            "allocated",
            "size",
            "mode",
            "nlink",
            "bytes",
            "files",
            "uid",
        ] {
            assert_eq!(e[field], one[field], "{field} of {path}");
        }
        assert!(e["nlink"].as_u64().unwrap() >= 2, "{e}");
        assert_ne!(e["mode"], 0, "{e}");
        assert_ne!(e["size"], 0, "{e}");
        // Allocated bytes as du -s -B1 counts them.
        let du = Command::new("du")
            .args(["-s", "-B1"])
            .arg(path)
            .output()
            .unwrap();
        let du: u64 = String::from_utf8_lossy(&du.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(e["allocated"], du, "{path}");
    }
    assert_eq!(entries[0]["path"], r);
    assert_eq!(entries[1]["path"], format!("{r}/a"));
    drop(tree);
}

#[test]
fn regexes_that_re2_refuses_are_400_naming_the_problem() {
    let (api, _db, _tree, _r) = scanned("re2", &[("f1", 1)]);
    let s = "/api/v1/snapshots/1";
    for (pattern, reason) in [
        ("a%7B1001%7D", "repetition"),
        ("(%3F%3Cn%3Ef1)", "perl operator"),
        ("x%7B2%7D%7B2%7D", "repetition"),
        ("(%3Fx)%20f%201", "perl operator"),
    ] {
        let (status, _, body) = api.raw(&format!("{s}/search?q={pattern}&match=regex"));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{pattern}: {body}");
        assert!(
            body.contains("RE2") && body.contains(reason),
            "{pattern}: {body}"
        );
    }
    for how in ["regex", "substring", "glob"] {
        let (status, _, body) = api.raw(&format!("{s}/search?q=f1%00x&match={how}"));
        assert_eq!(status, 400, "{how}: {}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("NUL"));
    }
    assert_eq!(api.raw(&format!("{s}/search?user=ro%00ot")).0, 400);
}

#[test]
fn hard_linked_files_count_once_in_apparent_bytes_as_du_counts_them() {
    let (api, _db, tree, r) = scanned("hardlinks", &[("d/file", 10_000), ("d/sub/other", 3)]);
    let root = std::path::Path::new(&r);
    std::fs::hard_link(root.join("d/file"), root.join("d/link")).unwrap();
    std::fs::hard_link(root.join("d/file"), root.join("d/sub/link")).unwrap();
    // Scan again with the links in place, as snapshot 2.
    let aggregator = Aggregator::start(&api.rt, &_db);
    scan(&aggregator, root);
    let s = "/api/v1/snapshots/2";
    let du_apparent = |p: &std::path::Path| -> u64 {
        let o = Command::new("du")
            .args(["-s", "-b"])
            .arg(p)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    for dir in ["", "/d", "/d/sub"] {
        let path = format!("{r}{dir}");
        let entry = api.json(&format!("{s}/entry?path={path}"));
        assert_eq!(
            entry["bytes"],
            du_apparent(std::path::Path::new(&path)),
            "{path}"
        );
    }
    let listing = api.json(&format!("{s}/children?path={r}"));
    assert_eq!(listing["directory"]["bytes"], du_apparent(root));
    // Per snapshot, the file counts once among its owner's bytes and in its type.
    let users = api.json(&format!("{s}/usage?by=user"));
    let dirs: u64 = ["", "/d", "/d/sub"]
        .iter()
        .map(|d| std::fs::metadata(format!("{r}{d}")).unwrap().len())
        .sum();
    assert_eq!(users["items"][0]["bytes"], dirs + 10_000 + 3);
    // Top files lists every link of the file, and counts each in its total.
    let top = api.json(&format!("{s}/top?what=files"));
    assert_eq!(top["entries"].as_array().unwrap().len(), 4);
    assert_eq!(top["total"], 4);
    drop(tree);
}

#[test]
fn a_file_modified_just_before_the_scan_is_not_in_the_future() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "future");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    let file = root.join("fresh");
    std::fs::write(&file, b"x").unwrap();
    // Late in a second, the file is modified earlier in the same second: a start rounded down
    // to the second lies before it.
    let since_epoch = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
    };
    while since_epoch().subsec_millis() < 600 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let now = since_epoch();
    let modified = SystemTime::UNIX_EPOCH + Duration::new(now.as_secs(), 300_000_000);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_times(std::fs::FileTimes::new().set_modified(modified))
        .unwrap();
    scan(&aggregator, &root);
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db))),
        rt,
    };
    let snapshot = api.json("/api/v1/snapshots/1");
    let started_ns = snapshot["started_at_ns"].as_i64().unwrap();
    assert!(
        started_ns
            > modified
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64
    );
    let mtimes = api.json("/api/v1/snapshots/1/histograms?of=mtime");
    let future: u64 = mtimes["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["bucket"] == 0)
        .map(|b| b["files"].as_u64().unwrap())
        .sum();
    assert_eq!(future, 0, "{mtimes}");
}

#[test]
fn health_fails_when_the_database_does_not_exist() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut config = reader(&TestDatabase::new(&rt, "health"));
    config.database = "st_no_such_database".parse().unwrap();
    let api = Api {
        app: storage_tracker_api::app(AppState::new(config)),
        rt,
    };
    let (status, _, body) = api.raw("/health");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("st_no_such_database"), "{body}");
    assert_eq!(api.raw("/api/v1/snapshots").0, 503);
}

#[test]
fn health_says_a_database_an_older_aggregator_made_needs_this_one_first() {
    use storage_tracker_proto::ddl::DATABASE_VERSION;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "health_old");
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db))),
        rt,
    };
    assert_eq!(api.raw("/health").0, 200);
    // The layout as an aggregator one version older left it.
    let client = clickhouse::Client::default().with_url(&db.url);
    let d = &db.database;
    for sql in [
        format!("DROP TABLE {d}.schema_version"),
        format!(
            "CREATE TABLE {d}.schema_version (version UInt32, applied_at DateTime) ENGINE = MergeTree ORDER BY version"
        ),
        format!(
            "INSERT INTO {d}.schema_version (version, applied_at) VALUES ({}, now())",
            DATABASE_VERSION - 1
        ),
    ] {
        api.rt.block_on(client.query(&sql).execute()).unwrap();
    }
    let (status, _, body) = api.raw("/health");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(&format!(
            "is at version {} and this API reads version {DATABASE_VERSION}: start the storage-aggregator",
            DATABASE_VERSION - 1
        )),
        "{body}"
    );
}

#[test]
fn scoped_tokens_see_only_snapshots_covering_their_prefixes_and_their_own_totals() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "scopedlist");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    for (p, n) in [
        ("t/team/a", 100),
        ("t/team/sub/b", 20),
        ("t/other/secret", 5000),
        ("u/x", 1),
    ] {
        let path = root.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'x'; n]).unwrap();
    }
    scan(&aggregator, &root.join("t"));
    scan(&aggregator, &root.join("u"));
    scan(&aggregator, &root.join("t/team"));
    let r = root.to_str().unwrap();
    let (admin, lead) = (
        "admin-token-0123456789abcdef",
        "lead-token-0123456789abcdefgh",
    );
    let access = storage_tracker_api::access::Access::parse(&format!(
        "admin {admin} *\nlead {lead} {r}/t/team\n"
    ))
    .unwrap();
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db)).with_access(access)),
        rt,
    };
    let json = |uri: &str, token: &str| -> serde_json::Value {
        let (status, _, body) = api.raw_as(uri, Some(token));
        assert_eq!(status, 200, "{uri}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    };
    let all = json("/api/v1/snapshots", admin);
    assert_eq!(all["total"], 3);
    assert!(all["snapshots"][0]["errors"].is_u64());

    let mine = json("/api/v1/snapshots", lead);
    assert_eq!(mine["total"], 2, "{mine}");
    let ids: Vec<u64> = mine["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [3, 1]);
    let team_dirs = [("t/team", 0), ("t/team/sub", 0)]
        .iter()
        .map(|(d, _)| std::fs::metadata(root.join(d)).unwrap().len())
        .sum::<u64>();
    for s in mine["snapshots"].as_array().unwrap() {
        // team, a, sub, b: nothing of t/other.
        assert_eq!(s["entries"], 4, "{s}");
        assert_eq!(s["apparent_bytes"], team_dirs + 120, "{s}");
        assert!(s.get("errors").is_none(), "{s}");
    }
    assert_eq!(api.raw_as("/api/v1/snapshots/2", Some(lead)).0, 404);
    // Nor do history and growth tell the label or root of a snapshot it may not see.
    for uri in [
        format!("/api/v1/history?path={r}/t/team&snapshot=2"),
        format!("/api/v1/growth?from=1&to=2&path={r}/t/team"),
    ] {
        let (status, _, body) = api.raw_as(&uri, Some(lead));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 404, "{uri}: {body}");
        assert!(!body.contains(&format!("{r}/u")), "{uri}: {body}");
    }
    assert_eq!(api.raw_as("/api/v1/snapshots/1", Some(lead)).0, 200);

    // The token may ask what it may read; the scheme's name is case-insensitive.
    let me = json("/api/v1/access", lead);
    assert_eq!(
        me,
        serde_json::json!({ "name": "lead", "admin": false, "prefixes": [format!("{r}/t/team")], "token_required": true })
    );
    // Asked without a token it says only that one is needed (a page asks for one without a
    // failed request); everything else still answers 401.
    let (status, _, anonymous) = api.raw("/api/v1/access");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&anonymous).unwrap(),
        serde_json::json!({ "name": null, "admin": false, "prefixes": [], "token_required": true })
    );
    let lower = api
        .rt
        .block_on(
            api.app.clone().oneshot(
                Request::get("/api/v1/access")
                    .header("authorization", format!("bearer {admin}"))
                    .body(Body::empty())
                    .unwrap(),
            ),
        )
        .unwrap();
    assert_eq!(lower.status(), 200);
}

#[test]
fn ncdu_export_of_a_non_utf8_name_is_what_ncdu_writes_and_not_labelled_json() {
    use std::os::unix::ffi::OsStrExt;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "ncdu_bytes");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"a\xffb")), b"x").unwrap();
    std::fs::write(root.join("q\u{1}\"\\.txt"), b"y").unwrap();
    scan(&aggregator, &root);
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db))),
        rt,
    };
    let request = Request::get("/api/v1/snapshots/1/export/ncdu")
        .body(Body::empty())
        .unwrap();
    let response = api.rt.block_on(api.app.clone().oneshot(request)).unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    // Not UTF-8, so not application/json; still a .json download for ncdu -f.
    assert_eq!(header("content-type"), "application/octet-stream");
    assert!(
        header("content-disposition").ends_with(".json\""),
        "{}",
        header("content-disposition")
    );
    let exported = api
        .rt
        .block_on(axum::body::to_bytes(response.into_body(), 16 << 20))
        .unwrap()
        .to_vec();
    assert!(std::str::from_utf8(&exported).is_err());

    // ncdu writes each name the same way: the byte as is, control characters as \u escapes.
    let out = tempfile::tempdir().unwrap();
    let from_ncdu = out.path().join("ncdu.json");
    let o = Command::new(tool("ncdu"))
        .arg("-o")
        .arg(&from_ncdu)
        .arg(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ncdu_wrote = std::fs::read(&from_ncdu).unwrap();
    let has = |doc: &[u8], needle: &[u8]| doc.windows(needle.len()).any(|w| w == needle);
    for name in [
        &b"{\"name\":\"a\xffb\""[..],
        b"{\"name\":\"q\\u0001\\\"\\\\.txt\"",
    ] {
        assert!(
            has(&ncdu_wrote, name),
            "ncdu: {}",
            String::from_utf8_lossy(&ncdu_wrote)
        );
        assert!(
            has(&exported, name),
            "ours: {}",
            String::from_utf8_lossy(&exported)
        );
    }

    // And ncdu loads ours and writes the name back unchanged.
    let file = out.path().join("export.json");
    std::fs::write(&file, &exported).unwrap();
    let again = out.path().join("again.json");
    let o = Command::new(tool("ncdu"))
        .arg("-f")
        .arg(&file)
        .arg("-o")
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(has(
        &std::fs::read(&again).unwrap(),
        b"{\"name\":\"a\xffb\""
    ));
}

#[test]
fn glob_bracket_expressions_match_a_class_of_characters() {
    let (api, _db, _tree, _r) = scanned(
        "globclass",
        &[
            ("f00001.log", 100),
            ("f00002.log", 200),
            ("f00003.log", 300),
            ("f00004.log", 400),
            ("f00005.log", 500),
            ("F00002.LOG", 50),
            ("a[b].txt", 10),
            ("x.log", 5),
        ],
    );
    let search = |q: &str| api.names(&format!("/api/v1/snapshots/1/search?match=glob&{q}"));
    assert_eq!(
        search("q=f0000%5B1-3%5D.log"),
        ["f00003.log", "f00002.log", "f00001.log"]
    );
    assert_eq!(
        search("q=f0000%5B%211-3%5D.log"),
        ["f00005.log", "f00004.log"]
    );
    assert_eq!(
        search("q=F0000%5B2%5D.LOG&ignore_case=true"),
        ["f00002.log", "F00002.LOG"]
    );
    assert_eq!(search("q=*%5B%5B%5Db%5D.txt"), ["a[b].txt"]);
    // A `[` without its `]` is a literal, as before.
    assert_eq!(search("q=a%5Bb*"), ["a[b].txt"]);
    assert_eq!(
        search("q=*.log"),
        [
            "f00005.log",
            "f00004.log",
            "f00003.log",
            "f00002.log",
            "f00001.log",
            "x.log"
        ]
    );
    let (status, _, body) = api.raw("/api/v1/snapshots/1/search?match=glob&q=f%5Bz-a%5D");
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("q is not a valid glob"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn a_search_by_type_finds_the_files_the_type_report_counts() {
    use std::os::unix::ffi::OsStrExt;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "by_type");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    let names: [&[u8]; 22] = [
        b"libfoo.so.1.2.3",
        b"libbar.SO.2",
        b"libbaz.so",
        b"notes.3",
        b".so.1",
        b"libq.so.1a",
        b".nc",
        b"..nc",
        b"a.NC",
        b"b.nc.gz",
        b"nc",
        b"c.Nc",
        b"d.",
        b".hidden.nc",
        b"e.0123456789abcdef",
        b"f.0123456789abcdefg",
        b"g.tar.GZ",
        b"h.\xc3\x84",
        b"i.\xc3\xa4",
        b"j.nc ",
        b"k.n.c",
        b"noext",
    ];
    for name in names {
        std::fs::write(root.join(std::ffi::OsStr::from_bytes(name)), b"x").unwrap();
    }
    std::fs::create_dir(root.join("dir.nc")).unwrap();
    scan(&aggregator, &root);
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db))),
        rt,
    };
    let types = api.json("/api/v1/snapshots/1/usage?by=type");
    let mut asked: Vec<String> = types["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect();
    // Versioned shared libraries are the type "so", not "3" or "2".
    assert!(asked.iter().any(|t| t == "so"), "{types}");
    assert!(!asked.iter().any(|t| t == "2"), "{types}");
    asked.extend(["NC", "n.c", "tar.gz", "0123456789abcdefg", "x", "2"].map(String::from));
    for ext in asked {
        let mut expected: Vec<Vec<u8>> = names
            .iter()
            .filter(|n| {
                storage_tracker_proto::reports::extension(n) == ext.to_ascii_lowercase().as_bytes()
            })
            .map(|n| n.to_vec())
            .collect();
        expected.sort();
        let query: String = ext.bytes().map(|b| format!("%{b:02X}")).collect();
        let found = api.json(&format!(
            "/api/v1/snapshots/1/search?type={query}&limit=100"
        ));
        let mut found: Vec<Vec<u8>> = found["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().as_bytes().to_vec())
            .collect();
        found.sort();
        assert_eq!(found, expected, "type {ext:?}");
    }
}

/// The categories report against a tree whose categories are known: every type in its
/// category, versioned libraries with the rest of the binaries, a hard link's bytes once; the
/// treemap names each file's category; a custom configuration regroups the same snapshot.
#[test]
fn the_categories_report_sums_each_type_in_its_category() {
    use storage_tracker_api::categories::Categories;
    use storage_tracker_proto::reports::extension;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "categories");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    let files: [(&str, usize); 14] = [
        ("data/a.csv", 100),
        ("data/b.TSV", 200),
        ("data/run.h5", 3000),
        ("data/run.nc", 400),
        ("img/plot.png", 50),
        ("lib/libfoo.so.1.2.3", 700),
        ("lib/libbar.so", 800),
        ("lib/tool.py", 60),
        ("notes", 10),
        ("odd.xyz", 20),
        ("logs/run.log", 30),
        ("logs/run.log.1", 35),
        ("ckpt/model.ckpt", 900),
        ("ckpt/old.tar.gz", 1100),
    ];
    for (path, size) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'x'; size]).unwrap();
    }
    // A second link of run.h5: one more file of the type, its bytes not counted again.
    std::fs::hard_link(root.join("data/run.h5"), root.join("data/same-run.h5")).unwrap();
    scan(&aggregator, &root);

    let expected = |categories: &Categories| {
        let mut sums: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
        let links = [("data/same-run.h5", 0)];
        for (path, size) in files.iter().chain(links.iter()) {
            let name = path.rsplit('/').next().unwrap();
            let sum = sums
                .entry(categories.of(&extension(name.as_bytes())).to_owned())
                .or_default();
            sum.0 += 1;
            sum.1 += *size as u64;
        }
        sums
    };
    let answered = |api: &Api| {
        let usage = api.json("/api/v1/snapshots/1/usage?by=category");
        let items = usage["items"].as_array().unwrap();
        assert_eq!(usage["total"].as_u64(), Some(items.len() as u64), "{usage}");
        // Largest first.
        let bytes: Vec<u64> = items.iter().map(|i| i["bytes"].as_u64().unwrap()).collect();
        assert!(bytes.windows(2).all(|w| w[0] >= w[1]), "{usage}");
        let sums: std::collections::BTreeMap<String, (u64, u64)> = items
            .iter()
            .map(|i| {
                assert_eq!(i["entries"], i["files"]);
                let types = i["types"].as_array().unwrap();
                let named: u64 = types.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
                assert_eq!(Some(named), i["bytes"].as_u64(), "{i}");
                (
                    i["name"].as_str().unwrap().to_owned(),
                    (i["files"].as_u64().unwrap(), i["bytes"].as_u64().unwrap()),
                )
            })
            .collect();
        (usage, sums)
    };

    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db))),
        rt,
    };
    let (usage, sums) = answered(&api);
    assert_eq!(sums, expected(&Categories::default()), "{usage}");
    assert_eq!(sums["binaries"], (2, 1500));
    assert_eq!(sums["scientific"], (3, 3400));
    assert_eq!(sums["tabular"], (2, 300));
    // run.log.1 is of the type "1": other, with notes and odd.xyz.
    assert_eq!(sums["other"], (3, 65));
    let binaries = usage["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "binaries")
        .unwrap();
    assert_eq!(
        binaries["types"],
        serde_json::json!([{"name": "so", "bytes": 1500}])
    );
    // The type report names each type's category.
    let types = api.json("/api/v1/snapshots/1/usage?by=type");
    for item in types["items"].as_array().unwrap() {
        let ext = item["name"].as_str().unwrap();
        assert_eq!(
            item["category"].as_str(),
            Some(Categories::default().of(ext.as_bytes())),
            "{item}"
        );
    }
    let listed = api.json("/api/v1/categories");
    assert_eq!(listed["other"], "other");
    assert_eq!(listed["categories"][0]["name"], "tabular");
    // The treemap's file tiles carry their category; directories and the root none.
    let treemap = api.json(&format!(
        "/api/v1/snapshots/1/treemap?path={}/lib&depth=1",
        root.display()
    ));
    let tiles = treemap["root"]["children"].as_array().unwrap();
    assert!(treemap["root"].get("category").is_none());
    for tile in tiles {
        let want = if tile["name"] == "tool.py" {
            "code"
        } else {
            "binaries"
        };
        assert_eq!(tile["category"], want, "{tile}");
    }
    assert_eq!(tiles.len(), 3);

    // The same snapshot under other categories: every snapshot is read by the current ones.
    let custom = Categories::parse(
        "# two groups\nscience h5 nc csv\nsoftware so py\n",
        "a test",
    )
    .unwrap();
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db)).with_categories(custom.clone())),
        rt: api.rt,
    };
    let (usage, sums) = answered(&api);
    assert_eq!(sums, expected(&custom), "{usage}");
    assert_eq!(sums["science"], (4, 3500));
    assert_eq!(sums["software"], (3, 1560));
    assert_eq!(usage["total"], 3);
}
