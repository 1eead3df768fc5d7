//! Duplicate files on real parts: a tree with planted copies, a hard link, a near-duplicate
//! (one byte differs where no sample reads), files that only share a size, a file changed
//! after the scan, and files too small or empty to be candidates; scanned into a real
//! aggregator and ClickHouse, hashed by `storage-scan --hash-duplicates` as two MPI ranks under
//! `mpiexec.mpich`, then again as a Slurm batch job over two nodes (`slurm/duplicates.sbatch`,
//! which reads nothing: everything is hashed); the report through the API against the ground
//! truth.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use storage_tracker_api::AppState;
use support::*;

const MIB: usize = 1 << 20;

/// `size` bytes that differ from file to file with `seed`.
fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| {
            (i as u64)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(u64::from(seed)) as u8
                ^ (i >> 12) as u8
        })
        .collect()
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn allocated(root: &Path, rel: &str) -> u64 {
    std::fs::metadata(root.join(rel)).unwrap().blocks() * 512
}

/// Runs `storage-scan --hash-duplicates` as one process, or under `launcher` (mpiexec, srun).
fn hash(snapshot: u64, aggregator: &Aggregator, launcher: Option<&mut Command>) -> (bool, String) {
    let mut alone = Command::new(scanner());
    alone.env_remove("SLURM_PROCID");
    let launcher = match launcher {
        Some(launcher) => launcher.arg(scanner()),
        None => &mut alone,
    };
    let out = launcher
        .args(["--hash-duplicates", &snapshot.to_string()])
        .args([
            "--aggregator",
            &aggregator.addr,
            "--threads",
            "2",
            "--no-atime",
        ])
        .output()
        .expect("the launcher runs (ci/install-deps.sh installs MPICH and Slurm)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn slurm_conf() -> String {
    std::env::var("SLURM_CONF").unwrap_or_else(|_| {
        panic!("SLURM_CONF is not set. This test needs a real Slurm: run it with ci/test.sh, or start one with `ci/slurm.sh start` and export SLURM_CONF")
    })
}

#[test]
fn hashing_confirms_planted_copies_and_tells_near_duplicates_apart() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDatabase::new(&rt, "duplicates");
    let aggregator = Aggregator::start(&rt, &db);
    let tree = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(tree.path()).unwrap();
    let a = content(2 * MIB, 1);
    // Three copies of a (one of them with a second link), and a near-duplicate of it: one
    // byte differs between the first and the second sampled block.
    write(&root, "a/data.bin", &a);
    std::fs::hard_link(root.join("a/data.bin"), root.join("a/zz-link.bin")).unwrap();
    write(&root, "b/copy.bin", &a);
    write(&root, "c/deep/data.bin", &a);
    std::os::unix::fs::chown(root.join("c/deep/data.bin"), Some(4242), None).unwrap();
    let mut near = a.clone();
    near[MIB + 12_345] ^= 0x5a;
    write(&root, "near/near.bin", &near);
    // Of one size, different from the first byte.
    write(&root, "x/one.dat", &content(3 * MIB, 2));
    write(&root, "y/two.dat", &content(3 * MIB, 3));
    // Equal at the scan; one of them grows before the hashing.
    write(&root, "d1/d.bin", &content(5 * MIB, 4));
    write(&root, "d2/d.bin", &content(5 * MIB, 4));
    // Equal at the scan; one of them is rewritten, keeping its size, before the hashing.
    write(&root, "m1/m.bin", &content(6 * MIB, 6));
    write(&root, "m2/m.bin", &content(6 * MIB, 6));
    // Not candidates: a size of its own, too small, empty.
    write(&root, "z/lonely.bin", &content(4 * MIB, 5));
    write(&root, "s/small-1", &[7; 1000]);
    write(&root, "s/small-2", &[7; 1000]);
    write(&root, "e/empty-1", b"");
    write(&root, "e/empty-2", b"");
    scan(&aggregator, &root);
    let mut grown = content(5 * MIB, 4);
    grown.push(0);
    std::fs::write(root.join("d2/d.bin"), grown).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(root.join("m2/m.bin"), content(6 * MIB, 7)).unwrap();

    let api = storage_tracker_api::app(AppState::new(reader(&db)));
    let get = |uri: &str| {
        let (status, _, body) = api_get(&rt, &api, uri, None);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "{uri}: {json}");
        json
    };
    let r = root.display().to_string();
    let summary = |d: &serde_json::Value, status: &str| -> (u64, u64, u64) {
        let s = d["summary"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["status"] == status)
            .unwrap_or_else(|| panic!("{d}"));
        (
            s["groups"].as_u64().unwrap(),
            s["files"].as_u64().unwrap(),
            s["links"].as_u64().unwrap(),
        )
    };

    // Before any hashing every candidate is unverified: four sizes, ten files (the hard
    // link is a second link of one file), nothing confirmed.
    let before = get("/api/v1/snapshots/1/duplicates?status=unverified");
    assert_eq!(summary(&before, "unverified"), (4, 10, 11), "{before}");
    assert_eq!(summary(&before, "confirmed"), (0, 0, 0));
    assert_eq!(before["total"], 4);
    let sizes: Vec<u64> = before["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["size"].as_u64().unwrap())
        .collect();
    // Nothing is known to be wasted yet: larger files first.
    let mib = |n: usize| (n * MIB) as u64;
    assert_eq!(sizes, [mib(6), mib(5), mib(3), mib(2)], "{before}");
    assert!(
        before["groups"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g["wasted"] == 0)
    );

    // Hashed by two ranks.
    let (ok, log) = hash(
        1,
        &aggregator,
        Some(Command::new("mpiexec.mpich").args(["-n", "2"])),
    );
    // The grown and the rewritten file could not be hashed: the job says so with its exit
    // code (3).
    assert!(!ok, "{log}");
    assert!(
        log.contains("duplicate candidates hashed") && log.contains("unreadable=2"),
        "{log}"
    );
    let rows: Vec<String> = db.query(
        &rt,
        &format!(
            "SELECT error FROM {}.file_hashes WHERE snapshot_id = 1 AND error != '' ORDER BY size",
            db.database
        ),
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows[0],
        format!(
            "changed since the scan: {} bytes, not {}",
            5 * MIB + 1,
            5 * MIB
        )
    );
    assert!(
        rows[1].starts_with("changed since the scan: modified at"),
        "{rows:?}"
    );

    let expected_confirmed = |d: &serde_json::Value| {
        assert_eq!(summary(d, "confirmed"), (1, 3, 4), "{d}");
        let group = &d["groups"][0];
        assert_eq!(group["size"], 2 * MIB);
        assert_eq!(
            group["hash"].as_str().unwrap(),
            blake3::hash(&a).to_hex().as_str()
        );
        assert_eq!(
            (group["files"].as_u64(), group["links"].as_u64()),
            (Some(3), Some(4))
        );
        assert_eq!(
            group["wasted"].as_u64().unwrap(),
            allocated(&root, "b/copy.bin") + allocated(&root, "c/deep/data.bin")
        );
        let copies: Vec<Vec<String>> = group["copies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["links"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["path"].as_str().unwrap().to_owned())
                    .collect()
            })
            .collect();
        assert_eq!(
            copies,
            [
                vec![format!("{r}/a/data.bin"), format!("{r}/a/zz-link.bin")],
                vec![format!("{r}/b/copy.bin")],
                vec![format!("{r}/c/deep/data.bin")],
            ]
        );
        assert_eq!(group["copies"][2]["uid"], 4242);
        // near.bin, one.dat and two.dat only shared a size; d1 and d2, m1 and m2 are not known
        // apart.
        assert_eq!(summary(d, "false_positive"), (2, 3, 3), "{d}");
        assert_eq!(summary(d, "unverified"), (2, 4, 4), "{d}");
    };
    let confirmed = get("/api/v1/snapshots/1/duplicates");
    expected_confirmed(&confirmed);
    // Every file of one group, paged: the confirmed copies of a, by path.
    let content_hash = confirmed["groups"][0]["hash"].as_str().unwrap();
    let copies = format!(
        "/api/v1/snapshots/1/duplicates/copies?size={}&hash={content_hash}",
        2 * MIB
    );
    let page = get(&format!("{copies}&limit=1&offset=1"));
    assert_eq!(page["total"], 3, "{page}");
    assert_eq!(
        page["copies"][0]["links"][0]["path"],
        format!("{r}/b/copy.bin")
    );
    let unverified_m = get(&format!(
        "/api/v1/snapshots/1/duplicates/copies?status=unverified&size={}",
        6 * MIB
    ));
    assert_eq!(unverified_m["total"], 2, "{unverified_m}");
    assert!(
        unverified_m["copies"][1]["problem"]
            .as_str()
            .is_some_and(|p| p.contains("modified at")),
        "{unverified_m}"
    );
    for (bad, said) in [
        ("/api/v1/snapshots/1/duplicates/copies?hash=00", "size="),
        (
            "/api/v1/snapshots/1/duplicates/copies?size=5",
            "size= and hash=",
        ),
        (
            "/api/v1/snapshots/1/duplicates/copies?size=5&hash=zz",
            "64 hex digits",
        ),
        (
            "/api/v1/snapshots/1/duplicates/copies?status=unverified&size=5&hash=00",
            "confirmed group",
        ),
    ] {
        let (status, _, body) = api_get(&rt, &api, bad, None);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains(said), "{bad}: {body}");
    }
    let false_positives = get("/api/v1/snapshots/1/duplicates?status=false_positive");
    let paths = |d: &serde_json::Value| -> Vec<String> {
        let mut all: Vec<String> = d["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["copies"].as_array().unwrap().clone())
            .map(|c| c["links"][0]["path"].as_str().unwrap().to_owned())
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        paths(&false_positives),
        [
            format!("{r}/near/near.bin"),
            format!("{r}/x/one.dat"),
            format!("{r}/y/two.dat")
        ]
    );
    let unverified = get("/api/v1/snapshots/1/duplicates?status=unverified");
    assert_eq!(
        paths(&unverified),
        [
            format!("{r}/d1/d.bin"),
            format!("{r}/d2/d.bin"),
            format!("{r}/m1/m.bin"),
            format!("{r}/m2/m.bin")
        ]
    );
    // Each copy says why it could not be read.
    let problems: Vec<(String, Option<String>)> = unverified["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["copies"].as_array().unwrap().clone())
        .map(|c| {
            (
                c["links"][0]["path"].as_str().unwrap().to_owned(),
                c["problem"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert!(
        problems.iter().any(|(p, why)| p.ends_with("/m2/m.bin")
            && why.as_deref().is_some_and(|w| w.contains("modified at"))),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|(p, why)| p.ends_with("/m1/m.bin") && why.is_none()),
        "{problems:?}"
    );

    // The bytes the copies waste, where they lie and whose they are.
    let by_dir = get("/api/v1/snapshots/1/duplicates/wasted?by=dir");
    let dirs: Vec<(String, u64, u64)> = by_dir["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["path"].as_str().unwrap().to_owned(),
                i["copies"].as_u64().unwrap(),
                i["wasted"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want = vec![
        (format!("{r}/b"), 1, allocated(&root, "b/copy.bin")),
        (
            format!("{r}/c/deep"),
            1,
            allocated(&root, "c/deep/data.bin"),
        ),
    ];
    want.sort_by(|x, y| y.2.cmp(&x.2).then(x.0.cmp(&y.0)));
    assert_eq!(dirs, want, "{by_dir}");
    assert_eq!(by_dir["total"], 2);
    let by_user = get("/api/v1/snapshots/1/duplicates/wasted?by=user");
    let mut users: Vec<(u64, u64)> = by_user["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["uid"].as_u64().unwrap(), i["copies"].as_u64().unwrap()))
        .collect();
    users.sort();
    assert_eq!(users, [(0, 1), (4242, 1)], "{by_user}");

    // By name too: a/data.bin and c/deep/data.bin are copies of one name; b/copy.bin is not.
    let named = get("/api/v1/snapshots/1/duplicates?same_name=true");
    assert_eq!(summary(&named, "confirmed"), (1, 2, 3), "{named}");
    assert_eq!(named["groups"][0]["name"], "data.bin");
    assert_eq!(
        named["groups"][0]["wasted"].as_u64().unwrap(),
        allocated(&root, "c/deep/data.bin")
    );

    // Again as a Slurm batch job over two nodes (slurm/duplicates.sbatch): only the two files
    // that could not be read are read again (and still cannot be: exit 3), nothing changes;
    // a hash stored twice (a batch sent again) counts once.
    let logs = tempfile::tempdir().unwrap();
    let job = Command::new("sbatch")
        .env("SLURM_CONF", slurm_conf())
        .current_dir(logs.path())
        .args([
            "--wait",
            "--nodes=2",
            "--time=10",
            "--output",
            "job.out",
            "--error",
            "job.out",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../slurm/duplicates.sbatch"))
        .args([
            "--aggregator",
            &aggregator.addr,
            "--scanner",
            scanner(),
            "1",
            "--",
            "--no-atime",
        ])
        .output()
        .expect("sbatch runs (is Slurm installed? ci/install-deps.sh)");
    let log = std::fs::read_to_string(logs.path().join("job.out")).unwrap_or_default();
    assert_eq!(
        job.status.code(),
        Some(3),
        "{}\n{log}",
        String::from_utf8_lossy(&job.stderr)
    );
    assert!(log.contains("on 2 node(s)"), "{log}");
    assert!(
        log.contains("duplicate candidates hashed") && log.contains("unreadable=2"),
        "{log}"
    );
    assert!(
        log.contains(r#"phase="sampled" candidates=2"#)
            && log.contains(r#"phase="whole" candidates=0"#),
        "only the unreadable files are read again:\n{log}"
    );
    db.execute(
        &rt,
        &format!(
            "INSERT INTO {db}.file_hashes SELECT * FROM {db}.file_hashes WHERE snapshot_id = 1 AND whole = 1",
            db = db.database
        ),
    );
    expected_confirmed(&get("/api/v1/snapshots/1/duplicates"));
    // Merged, each file keeps its last row, which holds all that is known of it.
    db.execute(
        &rt,
        &format!("OPTIMIZE TABLE {}.file_hashes FINAL", db.database),
    );
    let rows: Vec<u64> = db.query(
        &rt,
        &format!("SELECT count() FROM {}.file_hashes", db.database),
    );
    assert_eq!(rows, [10]);
    expected_confirmed(&get("/api/v1/snapshots/1/duplicates"));

    // Mistakes are said: a snapshot that does not exist.
    let (ok, log) = hash(99, &aggregator, None);
    assert!(!ok);
    assert!(log.contains("there is no snapshot 99"), "{log}");
}
