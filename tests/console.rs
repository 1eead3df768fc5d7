//! The query console over one real scan of a small tree whose answers are known: statements
//! and their refusals, the read-only user's limits, admin tokens only, downloads as CSV, TSV
//! and Markdown to the byte (a name that is not UTF-8 among them), and every preset against
//! ground truth.

mod support;

use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde_json::{Value, json};

use storage_tracker_api::AppState;
use support::*;

const ADMIN: &str = "admin-token-0123456789abcdef";
const LEAD: &str = "lead-token-0123456789abcdefgh";

struct Api {
    rt: tokio::runtime::Runtime,
    app: axum::Router,
}

impl Api {
    fn get(&self, uri: &str, token: Option<&str>) -> (u16, String, Vec<u8>) {
        api_get(&self.rt, &self.app, uri, token)
    }

    /// The console's answer to `sql` (`more` is the rest of the query string).
    fn console(&self, sql: &str, more: &str) -> (u16, String, Vec<u8>) {
        self.get(
            &format!("/api/v1/console?sql={}{more}", encode(sql)),
            Some(ADMIN),
        )
    }

    fn rows(&self, sql: &str) -> Value {
        let (status, _, body) = self.console(sql, "");
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "{sql}: {answer}");
        answer
    }

    /// The message of a refusal with `status`.
    fn refused(&self, sql: &str, more: &str, status: u16) -> String {
        let (got, _, body) = self.console(sql, more);
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, status, "{sql}: {error}");
        error["message"].as_str().unwrap().to_owned()
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn days_ago(path: &std::path::Path, days: u64) {
    let then = SystemTime::now() - Duration::from_secs(86_400 * days);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_times(
            std::fs::FileTimes::new()
                .set_modified(then)
                .set_accessed(then),
        )
        .unwrap();
}

#[test]
fn the_console_runs_one_select_as_the_read_only_user_and_its_presets_answer_exactly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "console");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    let write = |p: &[u8], n: usize| {
        let path = root.join(std::ffi::OsStr::from_bytes(p));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![b'x'; n]).unwrap();
        path
    };
    write(b"alice/data.csv", 4000);
    days_ago(&write(b"alice/old/run.log", 3000), 400);
    write(b"alice/empty.txt", 0);
    write(b"bob/data.csv", 500);
    write(b"bob/archive.tar.gz", 2000);
    write(b"bob/caf\xe9, \"x\".csv", 7);
    write(b"bob/none.dat", 0);
    // In alice's directory, a file of someone else's.
    let foreign = write(b"alice/guest.bin", 1000);
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    for n in 0..3 {
        write(format!("bob/many/f{n}").as_bytes(), 1);
    }
    scan(&aggregator, &root);
    let r = root.to_str().unwrap();
    let access = storage_tracker_api::access::Access::parse(&format!(
        "admin {ADMIN} *\nlead {LEAD} {r}/bob\n"
    ))
    .unwrap();
    let api = Api {
        app: storage_tracker_api::app(AppState::new(reader(&db)).with_access(access)),
        rt,
    };

    // Admin tokens only: a scoped token cannot read the whole snapshot, nor can no token.
    let sql = "/api/v1/console?sql=SELECT%201";
    assert_eq!(api.get(sql, None).0, 401);
    let (status, _, body) = api.get(sql, Some(LEAD));
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        api.get("/api/v1/snapshots/1/console/presets", Some(LEAD)).0,
        403
    );

    // One statement, unqualified names, every value as text, NULL as null, the count of rows.
    let answer = api.rows(
        "SELECT name, size, NULL AS nothing FROM entries WHERE snapshot_id = 1 AND kind = 'file' \
         AND parent_path LIKE '%/alice' ORDER BY name;",
    );
    assert_eq!(
        answer["columns"],
        json!([
            {"name": "name", "type": "String"},
            {"name": "size", "type": "UInt64"},
            {"name": "nothing", "type": "Nullable(Nothing)"}
        ])
    );
    assert_eq!(
        answer["rows"],
        json!([
            ["data.csv", "4000", null],
            ["empty.txt", "0", null],
            ["guest.bin", "1000", null]
        ])
    );
    assert_eq!(answer["total_rows"], 3);
    assert_eq!(answer["truncated"], false);
    assert!(answer.get("binary").is_none());
    // A page of the rows, and all of them counted.
    let (status, _, body) = api.console("SELECT name FROM entries ORDER BY name", "&limit=2");
    let page: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["rows"].as_array().unwrap().len(), 2);
    assert_eq!(page["truncated"], true);
    assert_eq!(page["total_rows"], 16);
    // A name that is not UTF-8: its cell with U+FFFD, its bytes beside it.
    let odd = "SELECT name, size FROM entries WHERE snapshot_id = 1 AND name LIKE 'caf%'";
    let answer = api.rows(odd);
    assert_eq!(answer["rows"], json!([["caf\u{fffd}, \"x\".csv", "7"]]));
    let binary = &answer["binary"][0];
    assert_eq!(
        (binary["row"].clone(), binary["column"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(binary["b64"].as_str().unwrap())
            .unwrap(),
        b"caf\xe9, \"x\".csv"
    );

    // Downloads: every row, each format's escaping, the bytes as they are.
    let (status, kind, csv) = api.console(odd, "&format=csv");
    assert_eq!((status, kind.as_str()), (200, "text/csv"));
    assert_eq!(csv, b"name,size\r\n\"caf\xe9, \"\"x\"\".csv\",7\r\n");
    let (status, kind, tsv) = api.console(odd, "&format=tsv");
    assert_eq!((status, kind.as_str()), (200, "text/tab-separated-values"));
    assert_eq!(tsv, b"name\tsize\ncaf\xe9, \"x\".csv\t7\n");
    let (status, kind, md) = api.console(odd, "&format=markdown");
    assert_eq!(
        (status, kind.as_str()),
        (200, "text/markdown; charset=utf-8")
    );
    assert_eq!(
        String::from_utf8(md).unwrap(),
        "| name | size |\n| --- | ---: |\n| caf\\xE9, \"x\".csv | 7 |\n"
    );
    let (_, _, all) = api.console("SELECT name FROM entries", "&format=tsv");
    assert_eq!(all.iter().filter(|&&b| b == b'\n').count(), 1 + 16);

    // What the console refuses, and why.
    for (sql, says) in [
        ("", "empty"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("DROP TABLE entries", "SELECT statements only"),
        ("SELECT 1 FORMAT JSON", "FORMAT"),
        (
            "SELECT nothing_here FROM entries",
            "ClickHouse refused the statement",
        ),
        ("SELECT * FROM numbers(3)", "readonly"),
        ("SELECT 1 SETTINGS max_threads = 1", "readonly"),
    ] {
        let message = api.refused(sql, "", 400);
        assert!(message.contains(says), "{sql}: {message}");
    }
    // A trailing comment does not swallow the format the console asks for; a column may be
    // named format.
    assert_eq!(
        api.rows("SELECT 1 AS format -- the end")["rows"],
        json!([["1"]])
    );
    let long = format!("SELECT '{}'", "x".repeat(17 << 10));
    assert!(api.refused(&long, "", 400).contains("at most"));
    assert!(api.refused("SELECT 1", "&limit=0", 400).contains("limit"));
    assert!(
        api.refused("SELECT 1", "&format=csv&limit=5", 400)
            .contains("every row")
    );
    assert!(
        api.refused("SELECT 1", "&format=xlsx", 400)
            .contains("format")
    );
    // The read-only user's limits hold: more rows than its profile gives is a 503 that says so.
    let message = api.refused("SELECT number FROM system.numbers LIMIT 2000000", "", 503);
    assert!(message.contains("more rows"), "{message}");
    // Nothing was written by any of it.
    assert_eq!(
        api.rows("SELECT count() FROM entries")["rows"],
        json!([["16"]])
    );

    // The presets, written for snapshot 1, each one statement the console takes.
    let (status, _, body) = api.get("/api/v1/snapshots/1/console/presets?days=30", Some(ADMIN));
    assert_eq!(status, 200);
    let presets: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&presets["snapshot_id"], &presets["days"]),
        (&json!(1), &json!(30))
    );
    let presets: Vec<(String, String)> = presets["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["sql"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(presets.len(), 11);
    let run = |id: &str| -> Vec<Vec<Value>> {
        let sql = &presets.iter().find(|(p, _)| p == id).unwrap().1;
        let answer = api.rows(sql);
        answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().clone())
            .collect()
    };
    let first = |rows: &[Vec<Value>], n: usize| -> Vec<String> {
        rows.iter()
            .map(|r| r[n].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let at = |p: &str| format!("{r}/{p}");
    assert_eq!(
        first(&run("largest-files"), 0)[..3],
        [
            at("alice/data.csv"),
            at("alice/old/run.log"),
            at("bob/archive.tar.gz")
        ]
    );
    assert_eq!(run("largest-files")[0][4], "root");
    assert_eq!(first(&run("not-modified"), 0), [at("alice/old/run.log")]);
    assert_eq!(first(&run("not-accessed"), 0), [at("alice/old/run.log")]);
    let types = run("by-type");
    let csv = types.iter().find(|t| t[0] == "csv").unwrap();
    assert_eq!((&csv[1], &csv[2]), (&json!("3"), &json!("4507")));
    // alice holds 1000 bytes of nobody's; bob holds nothing of anyone else's.
    let audit = run("home-audit");
    assert_eq!(audit[0][0], "alice");
    assert_eq!(audit[0][3], "1000");
    assert_eq!(audit[0][4], "1");
    assert_eq!(audit[0][5], "[65534]");
    let bob = audit.iter().find(|a| a[0] == "bob").unwrap();
    assert_eq!((&bob[3], &bob[4]), (&json!("0"), &json!("0")));
    let tops = run("top-level");
    assert_eq!(first(&tops, 0), ["alice", "bob"]);
    let alice_dirs = ["alice", "alice/old"]
        .iter()
        .map(|d| std::fs::metadata(root.join(d)).unwrap().len())
        .sum::<u64>();
    assert_eq!(
        tops[0][1],
        json!((alice_dirs + 4000 + 3000 + 1000).to_string())
    );
    assert_eq!(tops[0][3], "4");
    assert_eq!(
        first(&run("empty-files"), 0),
        [at("alice/empty.txt"), at("bob/none.dat")]
    );
    assert_eq!(
        first(&run("logs-and-archives"), 0),
        [at("alice/old/run.log"), at("bob/archive.tar.gz")]
    );
    let most = run("most-files");
    assert_eq!(
        (most[0][0].as_str(), most[0][1].as_str()),
        (Some(at("bob").as_str()), Some("4"))
    );
    let same = run("same-name");
    assert_eq!(
        same,
        [vec![
            json!("data.csv"),
            json!("2"),
            json!("2"),
            json!("4500")
        ]]
    );
    let tables = run("tables");
    assert!(
        tables
            .iter()
            .any(|t| t[0] == "entries" && t[1] == "parent_path")
    );
    assert!(api.refused("", "", 400).contains("empty"));
    assert_eq!(
        api.get(
            "/api/v1/snapshots/1/console/presets?days=99999",
            Some(ADMIN)
        )
        .0,
        400
    );
    drop(aggregator);
}
