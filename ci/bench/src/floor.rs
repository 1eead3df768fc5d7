//! The floor: the least work a metadata walk can do. `getdents64` into a buffer and one
//! `statx` per entry relative to the directory's handle, with N threads sharing a stack of
//! directories; nothing is recorded. A scanner's speed is quoted as a share of this.

use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::sync::{Condvar, Mutex};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RawDir, StatxFlags};

struct Shared {
    stack: Vec<Vec<u8>>,
    busy: usize,
}

/// Walks `root` with `threads` threads; returns the number of entries (the root included).
pub fn walk(root: &[u8], threads: usize) -> u64 {
    let state = Mutex::new(Shared {
        stack: vec![root.to_vec()],
        busy: 0,
    });
    let cv = Condvar::new();
    let total: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 10];
                    let mut found = Vec::new();
                    let mut count = 0u64;
                    loop {
                        let dir = {
                            let mut g = state.lock().unwrap();
                            loop {
                                if let Some(d) = g.stack.pop() {
                                    g.busy += 1;
                                    break Some(d);
                                }
                                if g.busy == 0 {
                                    break None;
                                }
                                g = cv.wait(g).unwrap();
                            }
                        };
                        let Some(dir) = dir else {
                            cv.notify_all();
                            return count;
                        };
                        count += read(&dir, &mut buf, &mut found);
                        let mut g = state.lock().unwrap();
                        g.stack.append(&mut found);
                        g.busy -= 1;
                        drop(g);
                        cv.notify_all();
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    total + 1
}

/// Lists and stats one directory; subdirectories go to `found`. Returns the entries seen.
fn read(dir: &[u8], buf: &mut [MaybeUninit<u8>], found: &mut Vec<Vec<u8>>) -> u64 {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let Ok(fd) = rustix::fs::openat(CWD, dir, flags, Mode::empty()) else {
        return 0;
    };
    let mut n = 0;
    let mut entries = RawDir::new(fd.as_fd(), buf);
    while let Some(Ok(e)) = entries.next() {
        let name = e.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        n += 1;
        let st = rustix::fs::statx(
            &fd,
            name,
            AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS,
        );
        let is_dir = e.file_type() == FileType::Directory
            || (e.file_type() == FileType::Unknown
                && st.is_ok_and(|s| {
                    FileType::from_raw_mode(s.stx_mode.into()) == FileType::Directory
                }));
        if is_dir {
            let mut p = dir.to_vec();
            p.push(b'/');
            p.extend_from_slice(name.to_bytes());
            found.push(p);
        }
    }
    n
}
