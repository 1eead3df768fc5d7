//! The latency lab (`st-lab`) on a real FUSE mount: what `std::fs` reads through it is what the
//! source holds, a stat costs at least the configured latency, many stats at once overlap
//! instead of queueing behind one another, the lab counts them, and SIGTERM unmounts it.
//! A machine that cannot mount FUSE fails this test, saying what is missing.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

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
