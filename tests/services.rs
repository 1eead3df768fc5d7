//! The aggregator and the API as long-running services: configured by a file, logging JSON
//! lines, serving Prometheus metrics, and stopping cleanly on SIGTERM. The real binaries, a real
//! ClickHouse and a real scan.

mod support;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// A plain HTTP/1.0 GET on loopback: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn wait_for_port(port: u16, service: &mut Service) {
    let child = service.0.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the service exited before listening"
        );
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the metric line that starts with `series` (name and labels).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// A service process, killed if the test fails before it stops it.
struct Service(Option<Child>);

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM and waits for the exit: (exit code, everything it logged).
fn terminate(mut service: Service) -> (Option<i32>, String) {
    let mut child = service.0.take().unwrap();
    // SAFETY: signalling a child process this test started.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    (status.code(), log)
}

#[test]
fn services_take_a_config_file_log_json_serve_metrics_and_stop_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "services");
    let dir = tempfile::tempdir().unwrap();
    let (grpc, agg_metrics, http) = (free_port(), free_port(), free_port());

    // The aggregator, configured by a file only (its ClickHouse URL from the environment).
    let conf = dir.path().join("aggregator.conf");
    std::fs::write(
        &conf,
        format!(
            "# storage-aggregator\nSTORAGE_TRACKER_LISTEN=127.0.0.1:{grpc}\nSTORAGE_TRACKER_SPOOL={}\n\
             STORAGE_TRACKER_DATABASE={}\nSTORAGE_TRACKER_METRICS_LISTEN=127.0.0.1:{agg_metrics}\n\
             STORAGE_TRACKER_LOG_FORMAT=json\nSTORAGE_TRACKER_SHUTDOWN_GRACE=5\n",
            dir.path().join("spool").display(),
            db.database
        ),
    )
    .unwrap();
    let mut aggregator = Service(Some(
        Command::new(sibling_binary(
            scanner(),
            "storage-aggregator",
            "storage-tracker-aggregator",
        ))
        .args(["serve", "--config"])
        .arg(&conf)
        .env("STORAGE_TRACKER_CLICKHOUSE_URL", &db.url)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    ));
    wait_for_port(grpc, &mut aggregator);
    wait_for_port(agg_metrics, &mut aggregator);

    let fixture = Fixture::build();
    let truth = ground_truth(&fixture.root);
    let scan = Command::new(scanner())
        .args(["--aggregator", &format!("http://127.0.0.1:{grpc}")])
        .args(["--threads", "2", "--chunk-rows", "4096"])
        .arg(&fixture.root)
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    assert!(
        scan.status.success(),
        "{}",
        String::from_utf8_lossy(&scan.stderr)
    );

    let (status, text) = get(agg_metrics, "/metrics");
    assert_eq!(status, 200);
    let chunks = metric(
        &text,
        "storage_tracker_chunks_received_total{result=\"accepted\"}",
    );
    assert!(chunks >= 2.0, "{text}");
    assert_eq!(
        metric(&text, "storage_tracker_rows_received_total"),
        truth.len() as f64
    );
    assert_eq!(
        metric(&text, "storage_tracker_rows_inserted_total"),
        truth.len() as f64
    );
    assert!(metric(&text, "storage_tracker_insert_duration_seconds_count") >= 1.0);
    assert_eq!(metric(&text, "storage_tracker_spool_chunks"), 0.0);
    assert_eq!(
        metric(&text, "storage_tracker_snapshots{state=\"committed\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "storage_tracker_commits_total{result=\"committed\"}"),
        1.0
    );
    assert!(text.contains("# TYPE storage_tracker_insert_duration_seconds histogram"));

    let (code, log) = terminate(aggregator);
    assert_eq!(code, Some(0), "{log}");
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(log.contains("\"message\":\"stopped; chunks acknowledged and not yet stored stay in the spool for the next start\""), "{log}");

    // The API, configured by a file, counting requests by route template.
    let conf = dir.path().join("api.conf");
    std::fs::write(
        &conf,
        format!(
            "STORAGE_TRACKER_API_LISTEN=127.0.0.1:{http}\nSTORAGE_TRACKER_DATABASE={}\n\
             STORAGE_TRACKER_CLICKHOUSE_URL={}\nSTORAGE_TRACKER_LOG_FORMAT=json\n",
            db.database, db.url
        ),
    )
    .unwrap();
    let mut api = Service(Some(
        Command::new(sibling_binary(
            scanner(),
            "storage-api",
            "storage-tracker-api",
        ))
        .env("STORAGE_TRACKER_CONFIG", &conf)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    ));
    wait_for_port(http, &mut api);
    for _ in 0..2 {
        assert_eq!(get(http, "/api/v1/snapshots/1/children").0, 200);
    }
    assert_eq!(get(http, "/api/v1/snapshots/99/children").0, 404);
    let (status, text) = get(http, "/metrics");
    assert_eq!(status, 200);
    let children = "route=\"/api/v1/snapshots/{snapshot_id}/children\",method=\"GET\"";
    assert_eq!(
        metric(
            &text,
            &format!("storage_tracker_http_requests_total{{{children},status=\"200\"}}")
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            &format!("storage_tracker_http_requests_total{{{children},status=\"404\"}}")
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "storage_tracker_http_request_duration_seconds_count{route=\"/api/v1/snapshots/{snapshot_id}/children\"}"
        ),
        3.0
    );
    let (code, log) = terminate(api);
    assert_eq!(code, Some(0), "{log}");
    let first = log.lines().next().unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "{first}"
    );
}

#[test]
fn a_config_file_with_a_typo_is_refused_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("api.conf");
    std::fs::write(&conf, "STORAGE_TRACKER_API_LISTEN=127.0.0.1:1\nLISTEN=2\n").unwrap();
    let out = Command::new(sibling_binary(
        scanner(),
        "storage-api",
        "storage-tracker-api",
    ))
    .arg("--config")
    .arg(&conf)
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("api.conf:2: unknown key \"LISTEN\""),
        "{stderr}"
    );
}

#[test]
fn a_config_key_no_option_of_the_program_reads_is_refused_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    for (binary, package, args, known) in [
        (
            "storage-api",
            "storage-tracker-api",
            &[][..],
            "STORAGE_TRACKER_API_LISTEN=127.0.0.1:1",
        ),
        (
            "storage-aggregator",
            "storage-tracker-aggregator",
            &["list"][..],
            "STORAGE_TRACKER_DATABASE=st",
        ),
    ] {
        let conf = dir.path().join(format!("{binary}.conf"));
        // A typo of a real key, and a key of the other program.
        for bad in ["STORAGE_TRACKER_DATABSE=st", "STORAGE_TRACKER_BOGUS=1"] {
            std::fs::write(&conf, format!("{known}\n{bad}\n")).unwrap();
            let out = Command::new(sibling_binary(scanner(), binary, package))
                .arg("--config")
                .arg(&conf)
                .args(args)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1), "{binary} {bad}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let key = bad.split('=').next().unwrap();
            assert!(
                stderr.contains(&format!("{binary}.conf:2: unknown key \"{key}\"")),
                "{binary}: {stderr}"
            );
        }
    }
}

#[test]
fn the_example_configurations_use_only_options_the_programs_have() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config");
    for (file, binary, package, args) in [
        (
            "aggregator.conf",
            "storage-aggregator",
            "storage-tracker-aggregator",
            &["serve", "--help"][..],
        ),
        (
            "api.conf",
            "storage-api",
            "storage-tracker-api",
            &["--help"][..],
        ),
    ] {
        let help = Command::new(sibling_binary(scanner(), binary, package))
            .args(args)
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        let text = std::fs::read_to_string(deploy.join(file)).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split('=').next().unwrap())
            .collect();
        assert!(keys.len() > 5, "{file}");
        for key in keys {
            assert!(
                key == "RUST_LOG" || help.contains(&format!("env: {key}")),
                "{file}: {key} is not an option of {binary}"
            );
        }
    }
}

#[test]
fn an_empty_tokens_file_refuses_to_start_and_a_readable_one_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# nobody yet\n\n").unwrap();
    let api = sibling_binary(scanner(), "storage-api", "storage-tracker-api");
    let out = Command::new(&api)
        .arg("--tokens-file")
        .arg(&tokens)
        .args(["--listen", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds no token"), "{stderr}");

    // A malformed line is named by its own line number in its own file.
    std::fs::write(&tokens, "# one\nalice short *\n").unwrap();
    let out = Command::new(&api)
        .arg("--tokens-file")
        .arg(&tokens)
        .env(
            "STORAGE_TRACKER_API_TOKENS",
            "admin aaaaaaaaaaaaaaaaaaaaaaaaaaaa *",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the tokens file {}, line 2:", tokens.display())),
        "{stderr}"
    );

    // Readable by others: it starts, with a warning.
    std::fs::write(&tokens, "admin aaaaaaaaaaaaaaaaaaaaaaaaaaaa *\n").unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = free_port();
    let mut service = Service(Some(
        Command::new(&api)
            .arg("--tokens-file")
            .arg(&tokens)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    wait_for_port(port, &mut service);
    let (_, log) = terminate(service);
    assert!(
        log.contains("can be read by other users (mode 644)"),
        "{log}"
    );
}

#[test]
fn a_malformed_cross_origin_is_refused_at_start_naming_it() {
    let api = sibling_binary(scanner(), "storage-api", "storage-tracker-api");
    for (given, said) in [
        (
            "https://portal.example.org/app",
            "\"https://portal.example.org/app\" is not an origin: give scheme://host[:port] with no path",
        ),
        (
            "*,https://a.org",
            "* allows every origin: give it alone, not with \"https://a.org\"",
        ),
    ] {
        let out = Command::new(&api)
            .args(["--listen", "127.0.0.1:1"])
            .env("STORAGE_TRACKER_API_CORS_ORIGINS", given)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{given}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--cors-origins (STORAGE_TRACKER_API_CORS_ORIGINS)")
                && stderr.contains(said),
            "{stderr}"
        );
    }
}

#[test]
fn a_categories_file_that_cannot_be_used_stops_the_start_naming_its_line() {
    let api = sibling_binary(scanner(), "storage-api", "storage-tracker-api");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("categories.conf");
    for (text, said) in [
        (
            "tabular csv\ntables tsv csv\n",
            "line 2: the type \"csv\" is already in the category \"tabular\"",
        ),
        (
            "# ok\nscience .H5\n",
            "line 2: \"H5\" is not a file type: give extensions in lower case",
        ),
        (
            "other log\n",
            "line 1: \"other\" is every type no category names",
        ),
        ("empty\n", "line 1: the category \"empty\" has no types"),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(&api)
            .arg("--categories")
            .arg(&file)
            .args(["--listen", "127.0.0.1:1"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("the categories file {}, {said}", file.display())),
            "{stderr}"
        );
    }
    let missing = dir.path().join("nowhere.conf");
    let out = Command::new(&api)
        .env("STORAGE_TRACKER_API_CATEGORIES", &missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "reading the categories file {} (--categories, STORAGE_TRACKER_API_CATEGORIES)",
            missing.display()
        )) && stderr.contains("No such file"),
        "{stderr}"
    );
}
