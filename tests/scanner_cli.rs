//! The scanner's command line: bad input gets a clear message and a documented exit code.

mod support;
use support::scanner;

use std::process::{Command, Output};

fn scan(args: &[&str]) -> Output {
    Command::new(scanner())
        .args(args)
        .env_remove("SLURM_PROCID")
        .env_remove("STORAGE_TRACKER_AGGREGATOR")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_missing_root_exits_2_and_says_so() {
    let o = scan(&[
        "--output",
        "/tmp/unused-storage-tracker",
        "/nonexistent/storage-tracker",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot scan /nonexistent/storage-tracker"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_file_as_root_exits_2() {
    let o = scan(&["--output", "/tmp/unused-storage-tracker", "/etc/hostname"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is not a directory"), "{}", stderr(&o));
}

#[test]
fn an_unreachable_aggregator_is_retried_then_exits_1_and_names_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = format!("http://{closed}");
    let o = scan(&["--aggregator", &addr, "--retry-for", "1", "/etc"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach the aggregator at {addr}")),
        "{err}"
    );
    assert!(err.contains("retrying in"), "{err}");
}

#[test]
fn flags_are_checked_before_anything_runs() {
    for args in [
        &["/etc"][..],
        &["--aggregator", "http://x:1", "--output", "/tmp/x", "/etc"],
        &["--threads", "0", "--output", "/tmp/x", "/etc"],
        &["--bogus"],
        // Hashing options without --hash-duplicates, and scan options with it.
        &["--aggregator", "http://x:1", "--same-name", "/etc"],
        &["--aggregator", "http://x:1", "--min-size", "64M", "/etc"],
        &[
            "--aggregator",
            "http://x:1",
            "--hash-duplicates",
            "1",
            "--exclude",
            "x",
        ],
        &[
            "--aggregator",
            "http://x:1",
            "--hash-duplicates",
            "1",
            "/etc",
        ],
        &[
            "--aggregator",
            "http://x:1",
            "--hash-duplicates",
            "1",
            "--min-size",
            "1.5G",
        ],
    ] {
        let o = scan(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn a_bad_aggregator_url_is_a_usage_error_exit_2() {
    for bad in ["not a url", "node1:50051", "https://node1:50051", "http://"] {
        let o = scan(&["--aggregator", bad, "/etc"]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
        assert!(stderr(&o).contains("http://host:50051"), "{}", stderr(&o));
    }
    // From the environment too.
    let o = Command::new(scanner())
        .arg("/etc")
        .env_remove("SLURM_PROCID")
        .env("STORAGE_TRACKER_AGGREGATOR", "not a url")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a valid URL"), "{}", stderr(&o));
}

#[test]
fn retry_for_retries_until_its_time_is_spent() {
    // --retry-for 5 gave up after 3 s: the next doubled wait (3.2 s) no longer fitted in it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let addr = format!("http://{closed}");
    let started = std::time::Instant::now();
    let o = scan(&["--aggregator", &addr, "--retry-for", "5", "/etc"]);
    let took = started.elapsed();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        took >= std::time::Duration::from_secs(5),
        "gave up after {took:?}: {err}"
    );
    assert!(err.contains("for up to 5 s in all"), "{err}");
}

#[test]
fn an_offline_scan_writes_whole_chunks_holding_every_entry() {
    let tree = tempfile::tempdir().unwrap();
    for i in 0..50 {
        std::fs::create_dir_all(tree.path().join(format!("d{}/sub", i % 7))).unwrap();
        std::fs::write(
            tree.path().join(format!("d{}/sub/f{i}", i % 7)),
            vec![1u8; i],
        )
        .unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let o = scan(&[
        "--output",
        out.path().to_str().unwrap(),
        "--chunk-rows",
        "16",
        tree.path().to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut rows = 0;
    let mut bytes = 0;
    let manifest = std::fs::read(out.path().join("manifest.pb")).expect("the manifest is written");
    let manifest =
        <storage_tracker_proto::v1::OfflineManifest as prost::Message>::decode(&manifest[..])
            .unwrap();
    let totals = &manifest.finish.unwrap().ranks;
    assert_eq!(
        totals.iter().map(|t| t.entries).sum::<u64>(),
        1 + 7 + 7 + 50
    );
    assert!(!manifest.begin.unwrap().scan_id.is_empty());
    for f in std::fs::read_dir(out.path()).unwrap() {
        let f = f.unwrap().path();
        if f.ends_with("manifest.pb") {
            continue;
        }
        assert_eq!(
            f.extension().unwrap(),
            "parquet",
            "no temporary file is left: {f:?}"
        );
        let batch = storage_tracker_proto::read_chunk_file(&f).unwrap();
        rows += batch.num_rows();
        let sizes = arrow_array::cast::AsArray::as_primitive::<arrow_array::types::UInt64Type>(
            batch.column_by_name("size").unwrap(),
        );
        bytes += sizes.values().iter().sum::<u64>();
    }
    // The root, 7 d*, 7 sub, 50 files.
    assert_eq!(rows, 1 + 7 + 7 + 50);
    let mut dirs = std::fs::metadata(tree.path()).unwrap().len();
    for i in 0..7 {
        let d = tree.path().join(format!("d{i}"));
        dirs +=
            std::fs::metadata(&d).unwrap().len() + std::fs::metadata(d.join("sub")).unwrap().len();
    }
    assert_eq!(bytes, (0..50u64).sum::<u64>() + dirs);
}

/// (path, error op code, errno) of every row in the chunk files of `dir`.
fn rows_with_errors(dir: &std::path::Path) -> Vec<(String, u8, i32)> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, UInt8Type};
    let mut rows = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let batch = storage_tracker_proto::read_chunk_file(&f).unwrap();
        let path = batch.column_by_name("path").unwrap().as_binary::<i32>();
        let op = batch
            .column_by_name("error_op")
            .unwrap()
            .as_primitive::<UInt8Type>();
        let errno = batch
            .column_by_name("errno")
            .unwrap()
            .as_primitive::<Int32Type>();
        for i in 0..batch.num_rows() {
            rows.push((
                String::from_utf8_lossy(path.value(i)).into_owned(),
                op.value(i),
                errno.value(i),
            ));
        }
    }
    rows.sort();
    rows
}

#[test]
fn permission_denied_is_recorded_as_data_for_an_unprivileged_scan() {
    // Root ignores permission bits, so the scan runs as "nobody".
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let (tree, out) = (base.path().join("tree"), base.path().join("out"));
    for d in ["open", "closed", "listonly"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::create_dir(&out).unwrap();
    std::fs::write(tree.join("open/f"), b"x").unwrap();
    std::fs::write(tree.join("closed/secret"), b"y").unwrap();
    std::fs::write(tree.join("listonly/g"), b"z").unwrap();
    let mode = |p: &std::path::Path, m| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    mode(base.path(), 0o755);
    mode(&tree.join("closed"), 0o700);
    // Names can be listed, but not stat'ed.
    mode(&tree.join("listonly"), 0o744);
    mode(&out, 0o777);
    let o = support::as_nobody(scanner(), base.path())
        .arg("--output")
        .arg(&out)
        .arg(&tree)
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(
        o.status.code(),
        Some(3),
        "finished with errors: {}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("errors=2"), "{}", stderr(&o));
    let t = tree.display().to_string();
    let eacces = rustix::io::Errno::ACCESS.raw_os_error();
    assert_eq!(
        rows_with_errors(&out),
        [
            (t.clone(), 0, 0),
            (format!("{t}/closed"), 2, eacces),
            (format!("{t}/listonly"), 0, 0),
            (format!("{t}/listonly/g"), 1, eacces),
            (format!("{t}/open"), 0, 0),
            (format!("{t}/open/f"), 0, 0),
        ]
    );
}

#[test]
fn an_offline_scan_into_a_directory_holding_one_exits_2_and_leaves_it_whole() {
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("f"), b"data").unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("scan");
    let first = scan(&[
        "--output",
        dir.to_str().unwrap(),
        tree.path().to_str().unwrap(),
    ]);
    assert!(first.status.success(), "{}", stderr(&first));
    let files = |d: &std::path::Path| {
        let mut v: Vec<(std::ffi::OsString, Vec<u8>)> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let before = files(&dir);
    let o = scan(&["--output", dir.to_str().unwrap(), "/etc"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("already holds an offline scan (manifest.pb and 1 chunk file(s))"),
        "{}",
        stderr(&o)
    );
    assert_eq!(files(&dir), before, "the first scan is untouched");
}
