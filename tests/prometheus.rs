//! Usage for Grafana and alerts, on real parts: a real Prometheus (Debian's `prometheus`)
//! scrapes storage-api's usage gauges (with an admin token), its request metrics, and a
//! storage-aggregator's metrics, after two scans of a tree; every query of every panel of
//! `deploy/grafana/storage-tracker.json` must then return series, the gauges must hold the
//! tree's numbers, and `deploy/prometheus/storage-tracker.rules.yml` must pass `promtool check
//! rules` and its `promtool test rules` suite.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const ADMIN: &str = "admin-token-0123456789abcdef";
const SCOPED: &str = "scoped-token-0123456789abcdef";

/// A process this test started, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(cmd: &mut Command, port: u16, what: &str) -> Running {
    let mut child = Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e} (ci/install-deps.sh installs it)")),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "{what} exited before listening"
        );
        assert!(
            Instant::now() < deadline,
            "{what}: nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// (HTTP status, body) of a GET through curl.
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "-", "-w", "\n%{http_code}"]);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn query(prometheus: u16, expr: &str) -> serde_json::Value {
    let out = Command::new("curl")
        .args(["-sS", "--get", "--data-urlencode"])
        .arg(format!("query={expr}"))
        .arg(format!("http://127.0.0.1:{prometheus}/api/v1/query"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{expr}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn prometheus_scrapes_the_usage_and_every_dashboard_panel_has_series() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "prometheus");
    let work = tempfile::tempdir().unwrap();
    let (grpc, aggregator_metrics, api_port, prometheus_port) =
        (free_port(), free_port(), free_port(), free_port());
    let _aggregator = start(
        Command::new(aggregator_binary(scanner()))
            .args(["serve", "--listen", &format!("127.0.0.1:{grpc}")])
            .arg("--spool")
            .arg(work.path().join("spool"))
            .args([
                "--clickhouse-url",
                &db.url,
                "--database",
                db.database.as_str(),
            ])
            .args([
                "--metrics-listen",
                &format!("127.0.0.1:{aggregator_metrics}"),
            ]),
        grpc,
        "storage-aggregator",
    );
    // Two snapshots of a tree: alpha grows by 3000 bytes between them.
    let tree = work.path().join("fs");
    let write = |rel: &str, n: usize| {
        let p = tree.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, vec![b'x'; n]).unwrap();
    };
    write("alpha/a.dat", 1000);
    write("beta/b.dat", 500);
    let scan = || {
        let o = Command::new(scanner())
            .env_remove("SLURM_PROCID")
            .args([
                "--aggregator",
                &format!("http://127.0.0.1:{grpc}"),
                "--label",
                "lab",
            ])
            .arg(&tree)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    scan();
    write("alpha/more.dat", 3000);
    scan();
    let root = std::fs::canonicalize(&tree).unwrap();
    let root = root.to_str().unwrap();

    let _api = start(
        Command::new(sibling_binary(
            scanner(),
            "storage-api",
            "storage-tracker-api",
        ))
        .args(["--listen", &format!("127.0.0.1:{api_port}")])
        .args([
            "--clickhouse-url",
            &db.url,
            "--database",
            db.database.as_str(),
        ])
        .args(["--clickhouse-user", "storage_reader"])
        .env(
            "STORAGE_TRACKER_API_TOKENS",
            format!("admin {ADMIN} *\nleader {SCOPED} {root}/alpha"),
        ),
        api_port,
        "storage-api",
    );
    let usage = format!("http://127.0.0.1:{api_port}/api/v1/metrics/usage");
    // Snapshot-wide: no token is a 401, a scoped token a 403.
    assert_eq!(get(&usage, None).0, 401);
    let (status, body) = get(&usage, Some(SCOPED));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("needs an admin token"), "{body}");
    let (status, gauges) = get(&usage, Some(ADMIN));
    assert_eq!(status, 200, "{gauges}");
    // A directory's bytes count its own (as du does).
    let alpha = 4000 + std::fs::metadata(tree.join("alpha")).unwrap().len();
    for line in [
        format!("storage_tracker_directory_bytes{{label=\"lab\",path=\"{root}/alpha\"}} {alpha}"),
        format!(
            "storage_tracker_directory_growth_bytes{{label=\"lab\",path=\"{root}/alpha\"}} 3000"
        ),
        format!("storage_tracker_directory_growth_bytes{{label=\"lab\",path=\"{root}/beta\"}} 0"),
        "storage_tracker_owner_growth_bytes{label=\"lab\",user=\"root\"} 3000".to_owned(),
    ] {
        assert!(gauges.contains(&line), "{line} not in:\n{gauges}");
    }

    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:
  scrape_interval: 1s
scrape_configs:
  - job_name: storage-tracker-usage
    metrics_path: /api/v1/metrics/usage
    authorization:
      credentials: {ADMIN}
    static_configs:
      - targets: ['127.0.0.1:{api_port}']
  - job_name: storage-tracker-api
    static_configs:
      - targets: ['127.0.0.1:{api_port}']
  - job_name: storage-tracker-aggregator
    static_configs:
      - targets: ['127.0.0.1:{aggregator_metrics}']
"
        ),
    )
    .unwrap();
    let _prometheus = start(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}")),
        prometheus_port,
        "prometheus",
    );
    // Every target up, and a few requests for the API's request rate.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let _ = get(
            &format!("http://127.0.0.1:{api_port}/api/v1/snapshots"),
            Some(ADMIN),
        );
        let up = query(prometheus_port, "sum(up)");
        let ready = up["data"]["result"][0]["value"][1] == "3"
            && !query(prometheus_port, "storage_tracker_http_requests_total")["data"]["result"]
                .as_array()
                .unwrap()
                .is_empty();
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "targets not up: {up}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Enough samples for a rate.
    std::thread::sleep(Duration::from_secs(3));

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/storage-tracker.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$label", ".*")
                .replace("$__rate_interval", "30s");
            let answer = query(prometheus_port, &expr);
            assert_eq!(answer["status"], "success", "{}: {answer}", panel["title"]);
            assert!(
                !answer["data"]["result"].as_array().unwrap().is_empty(),
                "panel {}: {expr} returned no series",
                panel["title"]
            );
        }
    }
    // The dashboard's variable lists the filesystem.
    let labels = query(
        prometheus_port,
        "count by (label) (storage_tracker_snapshot_bytes)",
    );
    assert_eq!(
        labels["data"]["result"][0]["metric"]["label"], "lab",
        "{labels}"
    );

    // The alert rules: valid, and their unit tests pass.
    let rules = repo().join("deploy/prometheus");
    for args in [
        &["check", "rules", "storage-tracker.rules.yml"][..],
        &["test", "rules", "storage-tracker.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&rules)
            .output()
            .expect("promtool runs (Debian's prometheus package; ci/install-deps.sh)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
