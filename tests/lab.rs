//! The latency lab (`st-lab`) on a real FUSE mount: what `std::fs` reads through it is what the
//! source holds, a stat costs at least the configured latency, many stats at once overlap
//! instead of queueing behind one another, the lab counts them, and SIGTERM unmounts it; and a
//! scan of the mount by `storage-scan` (threads, and two MPI ranks) is the scan of the source
//! directory, entry for entry and directory rollup for directory rollup; and with one subtree
//! stalled (`--stall`), the scans finish the rest of the tree at once, say what is slow while
//! they wait, and commit the whole tree when the stall ends.
//! A machine that cannot mount FUSE fails these tests, saying what is missing.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The tests of this file run one at a time: they time operations on two shared cores.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A mounted lab; dropping it unmounts (SIGTERM, then a lazy unmount if the lab is stuck).
struct Mounted {
    child: Option<Child>,
    mountpoint: PathBuf,
    stats: PathBuf,
}

fn mounted(mountpoint: &Path) -> bool {
    let mountpoint = mountpoint.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| {
            // `... MOUNTPOINT OPTIONS ... - fuse st-lab:SOURCE ...`: the lab names itself.
            let source = l.split(" - ").nth(1).and_then(|t| t.split(' ').nth(1));
            l.split(' ').nth(4) == Some(mountpoint)
                && source.is_some_and(|s| s.starts_with("st-lab:"))
        })
}

impl Mounted {
    fn start(source: &Path, dir: &Path, name: &str, latency_ms: u32) -> Self {
        Self::start_with(source, dir, name, latency_ms, &[])
    }

    /// Mounted with more of st-lab's options (`extra`).
    fn start_with(source: &Path, dir: &Path, name: &str, latency_ms: u32, extra: &[&str]) -> Self {
        assert!(
            Path::new("/dev/fuse").exists(),
            "/dev/fuse is missing: the lab needs the fuse kernel module (modprobe fuse) and, \
             in a container, the device passed in (--device /dev/fuse)"
        );
        let mountpoint = dir.join(name);
        std::fs::create_dir(&mountpoint).unwrap();
        let mountpoint = mountpoint.canonicalize().unwrap();
        let stats = dir.join(format!("{name}.stats"));
        let child = Command::new(support::lab_binary())
            .args([
                "--latency-ms",
                &latency_ms.to_string(),
                "--max-concurrent",
                "256",
            ])
            .arg("--stats")
            .arg(&stats)
            .args(["--stats-interval-ms", "20"])
            .args(extra)
            .arg(source)
            .arg(&mountpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting st-lab");
        let mut lab = Mounted {
            child: Some(child),
            mountpoint,
            stats,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !mounted(&lab.mountpoint) {
            if let Some(status) = lab.child.as_mut().unwrap().try_wait().unwrap() {
                let out = lab.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "st-lab exited ({status}) before mounting {}: {}\nIt needs /dev/fuse, the \
                     fuse kernel module and root (or CAP_SYS_ADMIN) to mount",
                    lab.mountpoint.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                Instant::now() < deadline,
                "st-lab did not mount {} within 10 s",
                lab.mountpoint.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        lab
    }

    /// The lab's counts from its stats file, once `ready` holds for them (rewritten every 20 ms).
    fn stats_when(
        &self,
        ready: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> BTreeMap<String, String> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let stats: BTreeMap<String, String> = std::fs::read_to_string(&self.stats)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split_once(' '))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            if ready(&stats) || Instant::now() > deadline {
                return stats;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: the lab unmounts, prints its counts and exits 0.
    fn stop(mut self) -> String {
        let child = self.child.take().unwrap();
        let out = terminate(child);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "st-lab exited {}: {stderr}",
            out.status
        );
        assert!(
            !mounted(&self.mountpoint),
            "{} is still mounted after st-lab exited",
            self.mountpoint.display()
        );
        stderr
    }
}

fn terminate(mut child: Child) -> std::process::Output {
    // SAFETY: kill only sends a signal to the process this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
        if mounted(&self.mountpoint) {
            let path = std::ffi::CString::new(self.mountpoint.to_str().unwrap()).unwrap();
            // SAFETY: a NUL-terminated path; MNT_DETACH unmounts even if the lab hangs.
            unsafe {
                libc::umount2(path.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// A few hundred entries: directories of files of assorted sizes, a nested directory, a
/// symlink, a dangling symlink and a hard link.
fn tree(root: &Path) {
    for d in 0..8 {
        let dir = root.join(format!("d{d}"));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in 0..32 {
            std::fs::write(
                dir.join(format!("f{f}")),
                vec![b'x'; (d * 37 + f * 101) % 5000],
            )
            .unwrap();
        }
        std::fs::write(dir.join("sub/inner"), b"inner").unwrap();
    }
    std::fs::write(root.join("top"), b"the top file\n").unwrap();
    std::os::unix::fs::symlink("d0/f1", root.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    std::fs::hard_link(root.join("d1/f2"), root.join("d2/sub/hard")).unwrap();
}

/// Every entry below `root` by relative path: kind, size, nlink, symlink target.
fn listing(root: &Path) -> BTreeMap<PathBuf, (String, u64, u64, Option<PathBuf>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else {
                "file"
            };
            let target = ft.is_symlink().then(|| std::fs::read_link(&path).unwrap());
            let size = if ft.is_dir() { 0 } else { m.size() };
            out.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                (kind.to_owned(), size, m.nlink(), target),
            );
        }
    }
    out
}

fn count(stats: &BTreeMap<String, String>, key: &str) -> u64 {
    stats
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in the lab's stats: {stats:?}"))
        .parse()
        .unwrap()
}

#[test]
fn reads_through_the_lab_match_the_source_cost_the_latency_and_overlap() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    tree(&source);

    // At 1 ms a serial walk of the whole tree is quick: same names, kinds, sizes, targets.
    let fast = Mounted::start(&source, dir.path(), "fast", 1);
    let want = listing(&source);
    assert!(want.len() > 250, "{} entries", want.len());
    assert_eq!(listing(&fast.mountpoint), want);
    assert_eq!(
        std::fs::read(fast.mountpoint.join("top")).unwrap(),
        b"the top file\n"
    );
    let (a, b) = (
        std::fs::metadata(fast.mountpoint.join("d1/f2")).unwrap(),
        std::fs::metadata(fast.mountpoint.join("d2/sub/hard")).unwrap(),
    );
    assert_eq!(
        (a.ino(), a.nlink()),
        (b.ino(), 2),
        "hard links share one inode"
    );
    let stopped = fast.stop();
    assert!(
        stopped.contains("max_in_flight"),
        "no counts on exit: {stopped}"
    );

    // At 20 ms: one stat costs the latency; 64 at once overlap.
    const LATENCY: Duration = Duration::from_millis(20);
    let slow = Mounted::start(&source, dir.path(), "slow", 20);
    let started = Instant::now();
    std::fs::symlink_metadata(slow.mountpoint.join("top")).unwrap();
    let one = started.elapsed();
    assert!(one >= LATENCY, "a stat took {one:?}, less than the latency");

    let before = slow.stats_when(|s| s.contains_key("lookup"));
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let path = slow.mountpoint.join(format!("d{}/f{}", i % 2, i / 2));
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let started = Instant::now();
                std::fs::symlink_metadata(&path).unwrap();
                started.elapsed()
            })
        })
        .collect();
    let started = Instant::now();
    let each: Vec<Duration> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let all = started.elapsed();
    assert!(
        each.iter().all(|&d| d >= LATENCY),
        "a stat beat the latency: {each:?}"
    );
    assert!(
        all < 64 * LATENCY / 4,
        "64 stats at once took {all:?}: the lab serialises them (64 x 20 ms = 1.28 s)"
    );

    let lookups = count(&before, "lookup");
    let after = slow
        .stats_when(|s| s.get("lookup").and_then(|v| v.parse::<u64>().ok()) >= Some(lookups + 64));
    assert!(
        count(&after, "lookup") >= lookups + 64,
        "64 stats, but lookups went from {lookups} to {}",
        count(&after, "lookup")
    );
    assert!(
        count(&after, "max_in_flight") >= 32,
        "64 stats at once, but at most {} in flight: {after:?}",
        count(&after, "max_in_flight")
    );
    assert_eq!(
        count(&after, "max_waiting"),
        0,
        "under the cap nothing waits"
    );
    eprintln!("one stat {one:?}; 64 at once {all:?}; the lab saw {after:?}");
    slow.stop();
}

/// The awkward cases a scan must get right, a few thousand entries in all: hidden entries, hard
/// links within and across directories, symlinks (to a file, to a directory, dangling, a target
/// that is not UTF-8), a FIFO, a socket, a sparse file, names that are not UTF-8 or hold a
/// newline, odd modes and owners, times before 1970 and in the future, a directory of
/// `BIG_DIR` entries, a chain `DEEP` levels deep, and many small directories.
const BIG_DIR: usize = 3000;
const DEEP: usize = 12;

fn awkward_tree(root: &Path) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileExt, PermissionsExt, chown, lchown, symlink};
    let at = |p: &str| root.join(p);
    let w = |p: &str, bytes: usize| std::fs::write(at(p), vec![b'x'; bytes]).unwrap();
    let d = |p: &str| std::fs::create_dir_all(at(p)).unwrap();
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(at(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    let times = |p: &str, mtime: std::time::SystemTime, atime: std::time::SystemTime| {
        std::fs::File::open(at(p))
            .unwrap()
            .set_times(
                std::fs::FileTimes::new()
                    .set_modified(mtime)
                    .set_accessed(atime),
            )
            .unwrap()
    };
    std::fs::create_dir_all(root).unwrap();

    d(".hidden_dir/.nested");
    w(".hidden_dir/.secret", 1234);
    w(".hidden_dir/.nested/.deeper", 17);
    w(".dotfile", 99);

    // One file with four links: two in its directory, one below it, one in another tree.
    d("links/sub");
    d("other");
    w("links/target.bin", 5000);
    for link in ["links/hard1", "links/sub/hard2", "other/hard3"] {
        std::fs::hard_link(at("links/target.bin"), at(link)).unwrap();
    }
    w("links/pair_a", 700);
    std::fs::hard_link(at("links/pair_a"), at("other/pair_b")).unwrap();
    symlink("target.bin", at("links/to_file")).unwrap();
    symlink("../other", at("links/to_dir")).unwrap();
    symlink("does/not/exist", at("links/dangling")).unwrap();
    symlink(
        std::ffi::OsStr::from_bytes(b"t\xffrget"),
        at("links/odd_target"),
    )
    .unwrap();
    lchown(at("links/dangling"), Some(4242), Some(4343)).unwrap();

    d("odd");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        at("odd/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    drop(std::os::unix::net::UnixListener::bind(at("odd/socket")).unwrap());
    let sparse = std::fs::File::create(at("odd/sparse.img")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    sparse.write_at(b"some data", 1 << 20).unwrap();
    drop(sparse);
    let odd_name = [
        root.join("odd").as_os_str().as_bytes(),
        b"/bad_\xff\xfe.dat",
    ]
    .concat();
    std::fs::write(support::os(&odd_name), vec![0u8; 321]).unwrap();
    w("odd/new\nline.txt", 5);
    w("odd/sp ace 'quoted' \"name\"", 6);
    w("odd/0600", 11);
    mode("odd/0600", 0o600);
    w("odd/none", 12);
    mode("odd/none", 0o000);
    w("odd/setuid", 13);
    mode("odd/setuid", 0o4755);
    w("odd/owned", 14);
    chown(at("odd/owned"), Some(4242), Some(4343)).unwrap();
    d("odd/sticky");
    mode("odd/sticky", 0o1777);
    d("odd/setgid");
    mode("odd/setgid", 0o2750);
    d("odd/closed");
    w("odd/closed/secret", 15);
    mode("odd/closed", 0o700);

    // Times: before 1970 with nanoseconds, in the future, to the nanosecond; a directory whose
    // own mtime is older than its contents'.
    let day = std::time::Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let epoch = std::time::UNIX_EPOCH;
    d("times/old_dir");
    w("times/before_1970", 1);
    times(
        "times/before_1970",
        epoch - day * 3650 + std::time::Duration::from_nanos(123_456_789),
        epoch - day * 10,
    );
    w("times/future", 2);
    times("times/future", now + day * 365 * 70, now - day * 800);
    w("times/nanos", 3);
    times(
        "times/nanos",
        epoch + std::time::Duration::new(1_600_000_000, 987_654_321),
        now - day * 2,
    );
    w("times/old_dir/inside", 4);
    times("times/old_dir", now - day * 400, now - day * 400);

    d("empty");
    let mut p = String::from("deep");
    for level in 1..=DEEP {
        p.push_str(&format!("/l{level}"));
        d(&p);
        w(&format!("{p}/file{level}"), level * 10);
    }
    for i in 0..40 {
        d(&format!("wide/d{i:02}"));
        for j in 0..5 {
            w(&format!("wide/d{i:02}/f{j}"), i * 10 + j);
        }
    }
    d("big");
    for i in 0..BIG_DIR {
        w(&format!("big/f{i:05}"), if i % 100 == 0 { i } else { 0 });
    }
}

/// Reads every directory and symlink below `root` once, so that neither scan changes an
/// access time afterwards: with `relatime` the first read of a directory or a symlink after
/// its change moves its atime, a second read does not.
fn settle_atimes(root: &Path) {
    // The atime set by a read must be later than the mtimes just written (coarse clock ticks).
    std::thread::sleep(Duration::from_millis(50));
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_symlink() {
                std::fs::read_link(entry.path()).unwrap();
            }
        }
    }
}

/// A row of `entries`. [`EntryRow::compared`] is what must be equal in two scans of one tree,
/// through the lab or not, atime included (both scans follow [`settle_atimes`]). Read but not
/// compared: `ino` and `dev` (the lab has inode numbers of its own, one per source inode, and
/// the mount's device; hard-link grouping is compared instead) and `btime_ns` (no birth time
/// passes through FUSE here: fuser answers GETATTR, not FUSE_STATX, so a `statx` through the
/// mount has no STATX_BTIME).
#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct EntryRow {
    #[serde(with = "serde_bytes")]
    path: Vec<u8>,
    depth: u32,
    kind_name: String,
    size: u64,
    allocated: u64,
    nlink: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    atime_ns: i64,
    mtime_ns: i64,
    ctime_ns: i64,
    #[serde(with = "serde_bytes")]
    symlink_target: Vec<u8>,
    error_name: String,
    errno: i32,
    ino: u64,
    dev: u64,
    btime_ns: Option<i64>,
}

impl EntryRow {
    /// The columns compared (everything but the path, inode, device and birth time).
    #[allow(clippy::type_complexity)]
    fn compared(
        &self,
    ) -> (
        u32,
        String,
        (u64, u64, u64),
        (u32, u32, u32),
        (i64, i64, i64),
        Vec<u8>,
        (String, i32),
    ) {
        (
            self.depth,
            self.kind_name.clone(),
            (self.size, self.allocated, self.nlink),
            (self.mode, self.uid, self.gid),
            (self.atime_ns, self.mtime_ns, self.ctime_ns),
            self.symlink_target.clone(),
            (self.error_name.clone(), self.errno),
        )
    }
}

/// A directory's rollup row, every column but the path-derived ones.
#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct RollupRow {
    #[serde(with = "serde_bytes")]
    path: Vec<u8>,
    depth: u32,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    atime_ns: i64,
    bytes: u64,
    allocated: u64,
    entries: u64,
    files: u64,
    dirs: u64,
    max_mtime_ns: i64,
    max_atime_ns: i64,
    direct_bytes: u64,
    direct_allocated: u64,
    direct_entries: u64,
    direct_files: u64,
    direct_dirs: u64,
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct OwnerRow {
    principal_name: String,
    id: u32,
    #[serde(with = "serde_bytes")]
    top: Vec<u8>,
    entries: u64,
    files: u64,
    dirs: u64,
    bytes: u64,
    allocated: u64,
    max_mtime_ns: i64,
    max_atime_ns: i64,
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Deserialize)]
struct TypeRow {
    #[serde(with = "serde_bytes")]
    extension: Vec<u8>,
    files: u64,
    bytes: u64,
    allocated: u64,
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct SnapshotRow {
    snapshot_id: u64,
    state_name: String,
    #[serde(with = "serde_bytes")]
    root_path: Vec<u8>,
    entries: u64,
    errors: u64,
    apparent_bytes: u64,
    directories: u64,
}

/// One committed snapshot's rows, paths relative to its root ("" for the root itself).
struct Scanned {
    snapshot: SnapshotRow,
    entries: BTreeMap<Vec<u8>, EntryRow>,
    rollups: BTreeMap<Vec<u8>, RollupRow>,
    owners: Vec<OwnerRow>,
    types: Vec<TypeRow>,
}

fn relative(root: &[u8], path: &[u8]) -> Vec<u8> {
    if path == root {
        return Vec::new();
    }
    path.strip_prefix(root)
        .and_then(|p| p.strip_prefix(b"/"))
        .unwrap_or_else(|| {
            panic!(
                "{} is not below the root {}",
                String::from_utf8_lossy(path),
                String::from_utf8_lossy(root)
            )
        })
        .to_vec()
}

fn read_snapshot(rt: &tokio::runtime::Runtime, db: &support::TestDatabase, label: &str) -> Scanned {
    let d = &db.database;
    let mut snapshots: Vec<SnapshotRow> = db.query(
        rt,
        &format!(
            "SELECT snapshot_id, toString(state) AS state_name, root_path, entries, errors, \
             apparent_bytes, directories FROM {d}.snapshots FINAL WHERE filesystem_label = '{label}'"
        ),
    );
    assert_eq!(snapshots.len(), 1, "one snapshot labelled {label}");
    let snapshot = snapshots.remove(0);
    assert_eq!(snapshot.state_name, "committed", "{snapshot:?}");
    let (id, root) = (snapshot.snapshot_id, snapshot.root_path.clone());
    let entries: BTreeMap<Vec<u8>, EntryRow> = db
        .query::<EntryRow>(
            rt,
            &format!(
                "SELECT path, depth, toString(kind) AS kind_name, size, allocated, nlink, mode, \
                 uid, gid, atime_ns, mtime_ns, ctime_ns, symlink_target, \
                 toString(error_op) AS error_name, errno, ino, dev, btime_ns \
                 FROM {d}.entries WHERE snapshot_id = {id}"
            ),
        )
        .into_iter()
        .map(|e| (relative(&root, &e.path), e))
        .collect();
    assert_eq!(
        entries.len() as u64,
        snapshot.entries,
        "{label}: one row per path"
    );
    let rollups = db
        .query::<RollupRow>(
            rt,
            &format!(
                "SELECT path, depth, uid, gid, mtime_ns, atime_ns, bytes, allocated, entries, \
                 files, dirs, max_mtime_ns, max_atime_ns, direct_bytes, direct_allocated, \
                 direct_entries, direct_files, direct_dirs FROM {d}.dir_rollups \
                 WHERE snapshot_id = {id}"
            ),
        )
        .into_iter()
        .map(|r| (relative(&root, &r.path), r))
        .collect();
    let owners = db.query(
        rt,
        &format!(
            "SELECT toString(principal) AS principal_name, id, top, entries, files, dirs, bytes, \
             allocated, max_mtime_ns, max_atime_ns FROM {d}.owner_usage WHERE snapshot_id = {id} \
             ORDER BY principal, id, top"
        ),
    );
    let types = db.query(
        rt,
        &format!(
            "SELECT extension, files, bytes, allocated FROM {d}.type_usage \
             WHERE snapshot_id = {id} ORDER BY extension"
        ),
    );
    Scanned {
        snapshot,
        entries,
        rollups,
        owners,
        types,
    }
}

/// Paths that share an inode, as sets of relative paths: one set per inode.
fn link_groups(entries: &BTreeMap<Vec<u8>, EntryRow>) -> std::collections::BTreeSet<Vec<Vec<u8>>> {
    let mut by_inode: BTreeMap<(u64, u64), Vec<Vec<u8>>> = BTreeMap::new();
    for (path, e) in entries {
        by_inode
            .entry((e.dev, e.ino))
            .or_default()
            .push(path.clone());
    }
    by_inode.into_values().collect()
}

fn show(path: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(path))
}

/// Every difference of `got` from `want` by relative path, at most 30 shown.
fn differences<V, C: PartialEq + std::fmt::Debug>(
    what: &str,
    want: &BTreeMap<Vec<u8>, V>,
    got: &BTreeMap<Vec<u8>, V>,
    compared: impl Fn(&V) -> C,
) -> Vec<String> {
    let mut out = Vec::new();
    for (path, w) in want {
        match got.get(path) {
            None => out.push(format!("{what} {}: missing through the lab", show(path))),
            Some(g) if compared(g) != compared(w) => out.push(format!(
                "{what} {}:\n  source {:?}\n  lab    {:?}",
                show(path),
                compared(w),
                compared(g)
            )),
            Some(_) => {}
        }
    }
    for path in got.keys().filter(|p| !want.contains_key(*p)) {
        out.push(format!("{what} {}: only through the lab", show(path)));
    }
    out
}

/// Checks that `lab` (a scan of the mount) equals `source` (a scan of the directory under it).
fn assert_same_scan(source: &Scanned, lab: &Scanned, how: &str) {
    let mut diffs = differences("entry", &source.entries, &lab.entries, EntryRow::compared);
    diffs.extend(differences(
        "rollup",
        &source.rollups,
        &lab.rollups,
        |r: &RollupRow| {
            (
                (r.depth, r.uid, r.gid, r.mtime_ns, r.atime_ns),
                (r.bytes, r.allocated, r.entries, r.files, r.dirs),
                (r.max_mtime_ns, r.max_atime_ns),
                (
                    r.direct_bytes,
                    r.direct_allocated,
                    r.direct_entries,
                    r.direct_files,
                    r.direct_dirs,
                ),
            )
        },
    ));
    let shown: Vec<&str> = diffs.iter().take(30).map(String::as_str).collect();
    assert!(
        diffs.is_empty(),
        "{how}: {} differences from the scan of the source:\n{}",
        diffs.len(),
        shown.join("\n")
    );
    assert_eq!(
        link_groups(&lab.entries),
        link_groups(&source.entries),
        "{how}: paths sharing an inode"
    );
    assert_eq!(lab.owners, source.owners, "{how}: owner_usage");
    assert_eq!(lab.types, source.types, "{how}: type_usage");
    let totals = |s: &SnapshotRow| (s.entries, s.errors, s.apparent_bytes, s.directories);
    assert_eq!(
        totals(&lab.snapshot),
        totals(&source.snapshot),
        "{how}: the snapshot's entries, errors, apparent bytes and directories"
    );
    // The two are different filesystems: the lab's device and inode numbers are its own.
    let (s, l) = (&source.entries[&Vec::new()], &lab.entries[&Vec::new()]);
    assert_ne!(
        l.dev, s.dev,
        "{how}: the scan read the mount, not the source"
    );
}

/// Runs `storage-scan` as "nobody" over `root` into `aggregator`, labelled `label`: it commits
/// with errors (exit 3).
fn scan_as_nobody(aggregator: &support::Aggregator, root: &Path, label: &str, dir: &Path) {
    let out = support::as_nobody(support::scanner(), dir)
        .args(["--aggregator", &aggregator.addr, "--label", label])
        .args(["--threads", "4", "--progress-interval", "86400"])
        .arg(root)
        .output()
        .expect("setpriv (util-linux) runs");
    assert_eq!(
        out.status.code(),
        Some(3),
        "scan {label} as nobody: committed with errors: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `storage-scan` over `root` (as `ranks` MPI ranks under `mpiexec.mpich` if more than
/// one) into `aggregator`, labelled `label`; its wall time.
fn scan(
    aggregator: &support::Aggregator,
    root: &Path,
    label: &str,
    ranks: usize,
    threads: usize,
) -> Duration {
    let mut cmd = if ranks > 1 {
        let mut cmd = Command::new("mpiexec.mpich");
        cmd.args(["-n", &ranks.to_string()]).arg(support::scanner());
        cmd
    } else {
        Command::new(support::scanner())
    };
    cmd.args(["--aggregator", &aggregator.addr, "--label", label])
        .args(["--threads", &threads.to_string()])
        .args(["--progress-interval", "86400"])
        .arg(root)
        .env_remove("SLURM_PROCID");
    let started = Instant::now();
    let out = cmd.output().expect("storage-scan (or mpiexec.mpich) runs");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "scan {label} exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn lookups_and_getattrs(stats: &BTreeMap<String, String>) -> u64 {
    count(stats, "lookup") + count(stats, "getattr")
}

#[test]
fn a_scan_through_the_lab_equals_a_scan_of_the_source() {
    const LATENCY_MS: u32 = 1;
    let _serial = one_at_a_time();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = support::TestDatabase::new(&rt, "lab_scan");
    let aggregator = support::Aggregator::start(&rt, &db);
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let source = dir_path.join("source");
    awkward_tree(&source);
    settle_atimes(&source);
    let truth = support::ground_truth(&source);
    let kinds = support::kind_counts(&truth);
    for kind in ["file", "dir", "symlink", "fifo", "socket"] {
        assert!(kinds.contains_key(kind), "the tree has a {kind}: {kinds:?}");
    }

    let lab = Mounted::start(&source, &dir_path, "lab", LATENCY_MS);
    let latency = Duration::from_millis(LATENCY_MS.into());
    let mut timings = Vec::new();
    for (label, ranks, threads) in [("lab-threads", 1, 8), ("lab-mpi", 2, 8)] {
        let before = lab.stats_when(|s| s.contains_key("lookup"));
        let took = scan(&aggregator, &lab.mountpoint, label, ranks, threads);
        let entries = truth.len() as u64;
        let ops = lookups_and_getattrs(&before) + entries;
        let after = lab.stats_when(|s| s.get("lookup").is_some() && lookups_and_getattrs(s) >= ops);
        // Every entry is a LOOKUP or a GETATTR (a statx by name is both) that the lab served.
        assert!(
            lookups_and_getattrs(&after) >= ops,
            "{label}: {entries} entries, but the lab served {} lookups and getattrs",
            lookups_and_getattrs(&after) - lookups_and_getattrs(&before)
        );
        // Every directory was listed through the lab.
        let opendirs = count(&after, "opendir") - count(&before, "opendir");
        assert!(
            opendirs >= kinds["dir"],
            "{label}: {} directories, but the lab served {opendirs} opendirs",
            kinds["dir"]
        );
        // Each of the ranks x threads workers waits the latency at least once per entry it stats.
        let floor = latency * entries as u32 / (ranks * threads) as u32;
        assert!(
            took >= floor,
            "{label}: {entries} entries in {took:?}, under {floor:?} (entries x latency / \
             workers): the scan did not go through the lab"
        );
        timings.push((label, ranks, threads, took, before, after));
    }
    drop(lab.stop());

    // The directory under the lab, scanned directly.
    let direct = scan(&aggregator, &source, "source", 1, 2);
    let source_scan = read_snapshot(&rt, &db, "source");
    assert_eq!(
        source_scan.entries.len(),
        truth.len(),
        "the scan of the source has every entry"
    );
    assert_eq!(
        source_scan.rollups.len() as u64,
        kinds["dir"],
        "a rollup per directory"
    );
    assert!(
        link_groups(&source_scan.entries)
            .iter()
            .any(|g| g.len() == 4),
        "the file with four links is one inode"
    );
    for (label, ranks, threads, took, before, after) in &timings {
        let lab_scan = read_snapshot(&rt, &db, label);
        assert_same_scan(&source_scan, &lab_scan, label);
        let op = |k: &str| count(after, k) - count(before, k);
        eprintln!(
            "{label} ({ranks} x {threads}): {} entries in {took:?} through the lab ({direct:?} \
             direct); lookup {} getattr {} opendir {} readdir {} readlink {} max_in_flight {}",
            truth.len(),
            op("lookup"),
            op("getattr"),
            op("opendir"),
            op("readdir"),
            op("readlink"),
            count(after, "max_in_flight"),
        );
    }

    // Errors: as "nobody", the directories closed to others fail to open, directly and through
    // a lab that checks permission bits (without --check-permissions the lab, root, opens all).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir_path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let checked = Mounted::start_with(
        &source,
        &dir_path,
        "checked",
        LATENCY_MS,
        &["--check-permissions"],
    );
    scan_as_nobody(
        &aggregator,
        &checked.mountpoint.join("odd"),
        "nobody-lab",
        &dir_path,
    );
    drop(checked.stop());
    scan_as_nobody(&aggregator, &source.join("odd"), "nobody-source", &dir_path);
    let (source_scan, lab_scan) = (
        read_snapshot(&rt, &db, "nobody-source"),
        read_snapshot(&rt, &db, "nobody-lab"),
    );
    let errors: Vec<(String, &str, i32)> = source_scan
        .entries
        .iter()
        .filter(|(_, e)| e.error_name != "none")
        .map(|(p, e)| (show(p), e.error_name.as_str(), e.errno))
        .collect();
    assert_eq!(
        errors,
        [
            (show(b"closed"), "open", libc::EACCES),
            (show(b"setgid"), "open", libc::EACCES)
        ],
        "the directories closed to nobody"
    );
    assert_same_scan(&source_scan, &lab_scan, "as nobody");
}

/// A scan running in the background: its stderr lines, each stamped when it arrived.
struct Running {
    label: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    fn spawn(label: &'static str, mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: starting {cmd:?}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push((Instant::now(), line));
                }
            })
        };
        Self {
            label,
            child,
            lines,
            reader: Some(reader),
        }
    }

    fn log(&self) -> String {
        let lines = self.lines.lock().unwrap();
        let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        text.join("\n")
    }

    /// Waits for the scan to exit successfully by `deadline` (killed and failed otherwise):
    /// when it exited, and its stamped lines.
    fn wait(mut self, deadline: Instant) -> (Instant, Vec<(Instant, String)>) {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{}: the scan did not finish in time; its log:\n{}",
                    self.label,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let exited = Instant::now();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        assert!(
            status.success(),
            "{}: the scan exited {status}:\n{}",
            self.label,
            self.log()
        );
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        (exited, lines)
    }
}

/// The `entries=N` of a progress report of rank 0.
fn progress_entries(line: &str) -> Option<u64> {
    if !line.contains("progress") {
        return None;
    }
    let at = line.find(" entries=")? + " entries=".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct Started {
    started_at_ns: i64,
}

/// A directory the lab stalls for `STALL_S` (one server stuck) while the rest answers at 1 ms:
/// scanned with 8 threads and, at the same time, by 2 ranks under `srun`, every entry outside
/// the stalled subtree is scanned and reported within seconds, the scans name the stalled
/// directory as slow in their progress log, and they commit once the stall ends, equal to the
/// ground truth.
#[test]
fn a_stalled_subtree_holds_up_only_itself_and_the_scan_says_so() {
    const STALL_S: u64 = 15;
    const STUCK: &str = "slow/stuck";
    let _serial = one_at_a_time();
    let slurm_conf = support::slurm_conf();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = support::TestDatabase::new(&rt, "lab_stall");
    let aggregator = support::Aggregator::start(&rt, &db);
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().canonicalize().unwrap();
    let source = dir_path.join("source");
    tree(&source);
    // The stalled subtree, with a sibling file beside it that is not stalled.
    std::fs::create_dir_all(source.join(STUCK).join("inner")).unwrap();
    std::fs::write(source.join("slow/beside"), b"beside").unwrap();
    for f in 0..30 {
        std::fs::write(source.join(format!("{STUCK}/f{f}")), vec![b'y'; f * 10]).unwrap();
    }
    for f in 0..5 {
        std::fs::write(source.join(format!("{STUCK}/inner/g{f}")), b"g").unwrap();
    }
    std::os::unix::fs::symlink("f1", source.join(STUCK).join("link")).unwrap();
    settle_atimes(&source);
    let truth = support::ground_truth(&source);
    let stuck_prefix = source.join(STUCK);
    let stalled_entries = truth
        .iter()
        .filter(|e| support::os(&e.path).starts_with(&stuck_prefix))
        .count() as u64;
    let outside = truth.len() as u64 - stalled_entries;
    assert!(
        outside > 250 && stalled_entries == 38,
        "{outside} entries outside, {stalled_entries} stalled"
    );

    let stall = format!("{STUCK}={STALL_S}");
    let lab = Mounted::start_with(&source, &dir_path, "stalled", 1, &["--stall", &stall]);
    // The stall ends STALL_S after the mount began, which was just now.
    let stall_ends = Instant::now() + Duration::from_secs(STALL_S);
    let mount = lab.mountpoint.clone();
    let stuck = mount.join(STUCK);

    let scan_args = |cmd: &mut Command, label: &str, threads: &str| {
        cmd.args(["--aggregator", &aggregator.addr, "--label", label])
            .args(["--threads", threads, "--progress-interval", "1"])
            .arg(&mount);
    };
    let mut threads = Command::new(support::scanner());
    scan_args(&mut threads, "stalled-threads", "8");
    threads.env_remove("SLURM_PROCID");
    let mut srun = Command::new("srun");
    srun.env("SLURM_CONF", &slurm_conf)
        .args(["--mpi=pmi2", "-n", "2", "--overcommit", "--time=2"])
        .arg(support::scanner());
    scan_args(&mut srun, "stalled-srun", "4");
    let scans = [
        Running::spawn("stalled-threads", threads),
        Running::spawn("stalled-srun", srun),
    ];

    // Well before the stall ends, the lab holds the subtree's operations and nothing else.
    std::thread::sleep(
        (stall_ends - Duration::from_secs(4)).saturating_duration_since(Instant::now()),
    );
    let held = lab.stats_when(|s| s.get("stalled_now").is_some_and(|v| v != "0"));
    assert!(
        Instant::now() < stall_ends,
        "the stall ended before it was seen: {held:?}"
    );
    assert!(
        count(&held, "stalled_now") >= 1 && count(&held, "stalled") >= 1,
        "nothing held by the stall, {} s into it: {held:?}",
        STALL_S - 4
    );
    assert!(
        count(&held, "in_flight") <= 2,
        "the rest of the tree is still being served, {} s into the stall: {held:?}",
        STALL_S - 4
    );

    let deadline = stall_ends + Duration::from_secs(15);
    for scan in scans {
        let label = scan.label;
        let (exited, lines) = scan.wait(deadline);
        let log: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        let log = log.join("\n");
        // (a) Everything outside the stalled subtree was scanned and reported long before the
        // stall ended, and nothing inside it before.
        let early = stall_ends - Duration::from_secs(5);
        let reported_early = lines
            .iter()
            .filter(|(at, _)| *at <= early)
            .filter_map(|(_, l)| progress_entries(l))
            .max();
        assert_eq!(
            reported_early,
            Some(outside),
            "{label}: the {outside} entries outside {STUCK} reported by {} s into the stall \
             ({stalled_entries} are in it):\n{log}",
            STALL_S - 5
        );
        let before_end = stall_ends - Duration::from_millis(300);
        let most_before_end = lines
            .iter()
            .filter(|(at, _)| *at <= before_end)
            .filter_map(|(_, l)| progress_entries(l))
            .max();
        assert_eq!(
            most_before_end,
            Some(outside),
            "{label}: entries of the stalled subtree came through before the stall ended:\n{log}"
        );
        // (b) It finished after the stall ended.
        assert!(
            exited >= stall_ends - Duration::from_millis(300),
            "{label}: finished {:?} before the stall ended:\n{log}",
            stall_ends.saturating_duration_since(exited)
        );
        // (c) The progress log names the stalled directory as slow, while it is held.
        // progress names the slow directory
        let stuck_path = stuck.to_str().unwrap();
        assert!(
            lines
                .iter()
                .any(|(at, l)| *at <= stall_ends && l.contains("slow:") && l.contains(stuck_path)),
            "{label}: no progress line says `slow:` with {stuck_path} during the stall:\n{log}"
        );
        eprintln!(
            "{label}: finished {:?} after the stall ended; progress lines:\n{}",
            exited.saturating_duration_since(stall_ends),
            lines
                .iter()
                .filter(|(_, l)| l.contains("progress") || l.contains("slow:"))
                .map(|(_, l)| l.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let after = lab.stats_when(|s| s.get("stalled_now").is_some_and(|v| v == "0"));
    let stopped = lab.stop();
    assert_eq!(count(&after, "stalled_now"), 0, "{after:?}");
    let longest = Duration::from_millis(count(&after, "max_stall_ms"));
    assert!(
        longest >= Duration::from_secs(STALL_S - 5) && longest <= Duration::from_secs(STALL_S),
        "the longest hold was {longest:?}: {stopped}"
    );
    eprintln!("the lab: {after:?}");

    // (b) Both snapshots equal the ground truth: every entry, every directory's rollup, the
    // usage by owner and type, the histograms.
    let truth = support::rebased(&truth, &source, &mount);
    for label in ["stalled-threads", "stalled-srun"] {
        let scanned = read_snapshot(&rt, &db, label);
        assert_eq!(
            (scanned.snapshot.entries, scanned.snapshot.errors),
            (truth.len() as u64, 0),
            "{label}: entries and errors"
        );
        // Kind, size, nlink, uid, gid and mtime by relative path.
        type Seen<'a> = BTreeMap<Vec<u8>, (&'a str, u64, u64, u32, u32, i64)>;
        let want: Seen = truth
            .iter()
            .map(|e| {
                let path = relative(mount.as_os_str().as_encoded_bytes(), &e.path);
                (path, (e.kind, e.size, e.nlink, e.uid, e.gid, e.mtime_ns))
            })
            .collect();
        let got: Seen = scanned
            .entries
            .iter()
            .map(|(p, e)| {
                let row = (e.kind_name.as_str(), e.size, e.nlink);
                (p.clone(), (row.0, row.1, row.2, e.uid, e.gid, e.mtime_ns))
            })
            .collect();
        assert_eq!(
            got, want,
            "{label}: entries (kind, size, nlink, uid, gid, mtime)"
        );
        let started: Vec<Started> = db.query(
            &rt,
            &format!(
                "SELECT started_at_ns FROM {}.snapshots FINAL WHERE snapshot_id = {}",
                db.database, scanned.snapshot.snapshot_id
            ),
        );
        support::check_reports(
            &rt,
            &db,
            scanned.snapshot.snapshot_id,
            &truth,
            started[0].started_at_ns,
        );
    }
}
