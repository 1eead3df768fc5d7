//! The API under generated requests: schemathesis (PyPI) reads the OpenAPI document the API
//! serves and sends requests built from it (valid and invalid parameters, odd strings, huge
//! numbers, and chains that follow one answer's ids into the next request) to a real
//! `storage-api` over a scanned fixture. Every answer is checked against the document: no 5xx
//! (`not_a_server_error`), a status the route documents (`status_code_conformance`), a content
//! type documented for that status (`content_type_conformance`), and a body the schema given
//! for them allows (`response_schema_conformance`: required fields, no others, types, bounds,
//! enums, nullable). schemathesis leaves out the route of the document itself;
//! `tests/openapi.rs` checks that one.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn generated_requests_get_answers_the_document_describes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "fuzz");
    let aggregator = Aggregator::start(&rt, &db);
    let fixture = Fixture::build();
    let o = Command::new(scanner())
        .args(["--aggregator", &aggregator.addr])
        .arg(&fixture.root)
        .env_remove("SLURM_PROCID")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut api = Command::new(sibling_binary(
        scanner(),
        "storage-api",
        "storage-tracker-api",
    ))
    .args(["--listen", &format!("127.0.0.1:{port}")])
    .env("STORAGE_TRACKER_CLICKHOUSE_URL", &db.url)
    .env("STORAGE_TRACKER_DATABASE", db.database.as_str())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the API did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = Command::new("schemathesis")
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/api/v1/openapi.json"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-examples", "40", "--workers", "2", "--seed", "1"])
        .env("NO_COLOR", "1")
        .output();
    let _ = api.kill();
    let _ = api.wait();
    let run = run.expect(
        "schemathesis runs (it is installed from PyPI by ci/install-deps.sh: pip install schemathesis)",
    );
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "schemathesis found problems:\n{out}");
}
