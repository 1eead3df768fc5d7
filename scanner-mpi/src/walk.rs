//! Reading one directory: the unit of work of a scan.
//!
//! A directory is opened once; its entries are listed with `getdents64` into a reused buffer
//! and each is `statx`ed relative to the directory's handle, never by full path, so paths longer
//! than `PATH_MAX` are scanned like any other. Symlinks are not followed. Subdirectories become
//! new work items and emit their own row when they are read, so a directory that cannot be
//! opened still has exactly one row, carrying the error.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RawDir, Statx, StatxFlags, StatxTimestamp};
use rustix::io::Errno;
use storage_tracker_proto::entry::{EntryRef, EntryStat, split_path};
use storage_tracker_proto::{EntryKind, ErrorOp};

use crate::steal::Work;

/// A directory to read, by absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirWork {
    pub path: Vec<u8>,
    /// Depth below the scan root (the root is 0).
    pub depth: u32,
}

impl Work for DirWork {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.depth.to_le_bytes());
        out.extend_from_slice(&(self.path.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.path);
    }

    fn decode(buf: &mut &[u8]) -> Option<Self> {
        let (depth, rest) = buf.split_first_chunk::<4>()?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (path, rest) = rest.split_at(len);
        *buf = rest;
        Some(Self {
            path: path.to_vec(),
            depth: u32::from_le_bytes(*depth),
        })
    }
}

/// Where the rows of a walk go.
pub trait RowSink {
    fn row(&mut self, entry: &EntryRef<'_>);
}

/// Everything a worker thread reuses from one directory to the next.
#[derive(Debug)]
pub struct DirReader {
    dents: Vec<MaybeUninit<u8>>,
    child_path: Vec<u8>,
    link_target: Vec<u8>,
}

impl Default for DirReader {
    fn default() -> Self {
        Self {
            dents: vec![MaybeUninit::uninit(); 64 * 1024],
            child_path: Vec::new(),
            link_target: Vec::new(),
        }
    }
}

const STATX_MASK: StatxFlags = StatxFlags::BASIC_STATS.union(StatxFlags::BTIME);

fn ns(t: StatxTimestamp) -> i64 {
    // Saturates instead of wrapping for dates beyond year 2262.
    t.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.tv_nsec))
}

/// `makedev` as glibc defines it, so `dev` equals `st_dev` from `stat(2)`.
fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

fn entry_stat(st: &Statx) -> EntryStat {
    EntryStat {
        size: st.stx_size,
        allocated: st.stx_blocks * 512,
        nlink: u64::from(st.stx_nlink),
        ino: st.stx_ino,
        dev: makedev(st.stx_dev_major, st.stx_dev_minor),
        mode: u32::from(st.stx_mode),
        uid: st.stx_uid,
        gid: st.stx_gid,
        atime_ns: ns(st.stx_atime),
        mtime_ns: ns(st.stx_mtime),
        ctime_ns: ns(st.stx_ctime),
        btime_ns: (st.stx_mask & StatxFlags::BTIME.bits() != 0).then(|| ns(st.stx_btime)),
    }
}

fn errno_of(e: Errno) -> i32 {
    e.raw_os_error()
}

/// Opens a directory without following a final symlink. A path too long for one `open` is
/// opened component by component, each relative to the previous.
fn open_dir(path: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
        Err(Errno::NAMETOOLONG) => {
            let mut dir = rustix::fs::openat(CWD, "/", flags, Mode::empty())?;
            let components: Vec<&[u8]> = path
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            for (i, component) in components.iter().enumerate() {
                // Only the last component must not be a symlink; the ones before it were
                // directories when the parent was read.
                let f = if i + 1 == components.len() {
                    flags
                } else {
                    flags & !OFlags::NOFOLLOW
                };
                dir = rustix::fs::openat(&dir, *component, f, Mode::empty())?;
            }
            Ok(dir)
        }
        other => other,
    }
}

/// The stat of a path that could not be opened as a directory, by full path (or `Errno`).
fn lstat_path(path: &[u8]) -> Result<Statx, Errno> {
    rustix::fs::statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, STATX_MASK)
}

/// Totals of what a reader emitted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkCounts {
    pub entries: u64,
    pub errors: u64,
    pub apparent_bytes: u64,
}

impl DirReader {
    /// Reads one directory: emits its own row and the rows of its non-directory entries, and
    /// pushes its subdirectories to `subdirs`.
    pub fn read(
        &mut self,
        work: &DirWork,
        sink: &mut impl RowSink,
        counts: &mut WalkCounts,
        subdirs: &mut Vec<DirWork>,
    ) {
        let (parent, name) = split_path(&work.path);
        let own_row = |kind, stat, error| EntryRef {
            path: &work.path,
            parent,
            name,
            depth: work.depth,
            kind,
            stat,
            symlink_target: b"",
            error,
        };
        let mut emit = |e: &EntryRef<'_>| {
            counts.entries += 1;
            counts.errors += u64::from(e.error.is_some());
            counts.apparent_bytes += e.stat.size;
            sink.row(e);
        };

        let dir = match open_dir(&work.path) {
            Ok(fd) => fd,
            Err(open_err) => {
                // Unreadable, or no longer a directory (replaced since its parent was listed).
                let row = match lstat_path(&work.path) {
                    Ok(st) => {
                        let stat = entry_stat(&st);
                        let kind = EntryKind::from_mode(stat.mode);
                        let error =
                            (kind == EntryKind::Dir).then_some((ErrorOp::Open, errno_of(open_err)));
                        own_row(kind, stat, error)
                    }
                    Err(e) => own_row(
                        EntryKind::Unknown,
                        EntryStat::default(),
                        Some((ErrorOp::Stat, errno_of(e))),
                    ),
                };
                emit(&row);
                return;
            }
        };
        let own = rustix::fs::statx(&dir, "", AtFlags::EMPTY_PATH, STATX_MASK);
        let read_error = self.read_entries(&dir, work, &mut emit, subdirs);
        // The directory's row comes last so that it can carry an error from reading it.
        let row = match own {
            Ok(st) => own_row(
                EntryKind::Dir,
                entry_stat(&st),
                read_error.map(|e| (ErrorOp::Read, e)),
            ),
            Err(e) => own_row(
                EntryKind::Dir,
                EntryStat::default(),
                Some((ErrorOp::Stat, errno_of(e))),
            ),
        };
        emit(&row);
    }

    /// Lists `dir` and emits its non-directory entries. Returns the errno of a failed read.
    fn read_entries(
        &mut self,
        dir: &OwnedFd,
        work: &DirWork,
        sink: &mut dyn FnMut(&EntryRef<'_>),
        subdirs: &mut Vec<DirWork>,
    ) -> Option<i32> {
        let mut listing = RawDir::new(dir.as_fd(), &mut self.dents);
        let child_depth = work.depth + 1;
        while let Some(next) = listing.next() {
            let dent = match next {
                Ok(d) => d,
                Err(e) => return Some(errno_of(e)),
            };
            let name: &CStr = dent.file_name();
            let name_bytes = name.to_bytes();
            if name_bytes == b"." || name_bytes == b".." {
                continue;
            }
            self.child_path.clear();
            self.child_path.extend_from_slice(&work.path);
            if work.path != b"/" {
                self.child_path.push(b'/');
            }
            self.child_path.extend_from_slice(name_bytes);

            // d_type saves a stat for directories: their row comes from the fstat of the
            // opened directory when it is read, so it is stat'ed exactly once.
            if dent.file_type() == FileType::Directory {
                subdirs.push(DirWork {
                    path: self.child_path.clone(),
                    depth: child_depth,
                });
                continue;
            }
            let st = match rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, STATX_MASK) {
                Ok(st) => st,
                Err(e) => {
                    // Vanished since listed, or unreadable: the row records it.
                    let kind = kind_of_dtype(dent.file_type());
                    sink(&EntryRef {
                        path: &self.child_path,
                        parent: &work.path,
                        name: name_bytes,
                        depth: child_depth,
                        kind,
                        stat: EntryStat::default(),
                        symlink_target: b"",
                        error: Some((ErrorOp::Stat, errno_of(e))),
                    });
                    continue;
                }
            };
            let stat = entry_stat(&st);
            let kind = EntryKind::from_mode(stat.mode);
            if kind == EntryKind::Dir {
                // The filesystem does not fill d_type (DT_UNKNOWN).
                subdirs.push(DirWork {
                    path: self.child_path.clone(),
                    depth: child_depth,
                });
                continue;
            }
            let mut error = None;
            self.link_target.clear();
            if kind == EntryKind::Symlink {
                match rustix::fs::readlinkat(dir, name, std::mem::take(&mut self.link_target)) {
                    Ok(target) => self.link_target = target.into_bytes(),
                    Err(e) => error = Some((ErrorOp::Readlink, errno_of(e))),
                }
            }
            sink(&EntryRef {
                path: &self.child_path,
                parent: &work.path,
                name: name_bytes,
                depth: child_depth,
                kind,
                stat,
                symlink_target: &self.link_target,
                error,
            });
        }
        None
    }
}

fn kind_of_dtype(t: FileType) -> EntryKind {
    match t {
        FileType::RegularFile => EntryKind::File,
        FileType::Directory => EntryKind::Dir,
        FileType::Symlink => EntryKind::Symlink,
        FileType::Fifo => EntryKind::Fifo,
        FileType::Socket => EntryKind::Socket,
        FileType::BlockDevice => EntryKind::BlockDevice,
        FileType::CharacterDevice => EntryKind::CharDevice,
        _ => EntryKind::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    /// (path, kind, stat, symlink target, error) of one row.
    type Row = (
        Vec<u8>,
        EntryKind,
        EntryStat,
        Vec<u8>,
        Option<(ErrorOp, i32)>,
    );

    #[derive(Default)]
    struct Collect(Vec<Row>);

    impl RowSink for Collect {
        fn row(&mut self, e: &EntryRef<'_>) {
            assert_eq!(split_path(e.path), (e.parent, e.name));
            self.0.push((
                e.path.to_vec(),
                e.kind,
                e.stat,
                e.symlink_target.to_vec(),
                e.error,
            ));
        }
    }

    fn walk_all(root: &[u8]) -> Collect {
        let mut reader = DirReader::default();
        let mut sink = Collect::default();
        let mut counts = WalkCounts::default();
        let mut queue = vec![DirWork {
            path: root.to_vec(),
            depth: 0,
        }];
        while let Some(w) = queue.pop() {
            reader.read(&w, &mut sink, &mut counts, &mut queue);
        }
        assert_eq!(counts.entries as usize, sink.0.len());
        sink
    }

    #[test]
    fn dir_work_round_trips() {
        let items = [
            DirWork {
                path: b"/x/\xff".to_vec(),
                depth: 3,
            },
            DirWork {
                path: Vec::new(),
                depth: 0,
            },
        ];
        let mut buf = Vec::new();
        items.iter().for_each(|i| i.encode(&mut buf));
        let mut rest = &buf[..];
        assert_eq!(DirWork::decode(&mut rest).unwrap(), items[0]);
        assert_eq!(DirWork::decode(&mut rest).unwrap(), items[1]);
        assert!(rest.is_empty());
        assert!(DirWork::decode(&mut &buf[..5]).is_none());
    }

    #[test]
    fn rows_match_std_metadata_and_symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join(".hidden")).unwrap();
        std::fs::write(root.join(".hidden/.f"), b"12345").unwrap();
        std::fs::write(root.join("big"), vec![1u8; 10_000]).unwrap();
        std::os::unix::fs::symlink("big", root.join("link")).unwrap();
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        std::fs::hard_link(root.join("big"), root.join("big2")).unwrap();
        let rows = walk_all(root.as_os_str().as_bytes());
        assert_eq!(rows.0.len(), 7);
        for (path, kind, stat, target, error) in &rows.0 {
            let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
            let md = std::fs::symlink_metadata(p).unwrap();
            assert_eq!(error, &None);
            assert_eq!(stat.size, md.size(), "{p:?}");
            assert_eq!(stat.allocated, md.blocks() * 512);
            assert_eq!(
                (stat.ino, stat.dev, stat.nlink),
                (md.ino(), md.dev(), md.nlink())
            );
            assert_eq!(stat.mtime_ns, md.mtime() * 1_000_000_000 + md.mtime_nsec());
            assert_eq!(*kind == EntryKind::Symlink, md.file_type().is_symlink());
            if *kind == EntryKind::Symlink {
                assert_eq!(
                    target.as_slice(),
                    std::fs::read_link(p).unwrap().as_os_str().as_bytes()
                );
            }
        }
    }

    #[test]
    fn vanished_root_is_one_error_row() {
        let rows = walk_all(b"/nonexistent/storage-tracker/test");
        assert_eq!(rows.0.len(), 1);
        assert_eq!(
            rows.0[0].4,
            Some((ErrorOp::Stat, Errno::NOENT.raw_os_error()))
        );
    }

    #[test]
    fn paths_longer_than_path_max_are_scanned() {
        let tmp = tempfile::tempdir().unwrap();
        let component = "d".repeat(200);
        // 25 levels of 201 bytes: over 5000 bytes, past PATH_MAX (4096). Creating them by
        // full path would fail, so each is made relative to its parent's handle.
        let mut cur = std::fs::File::open(tmp.path()).unwrap();
        for _ in 0..25 {
            let fd = cur.as_fd();
            rustix::fs::mkdirat(fd, component.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            let next = rustix::fs::openat(
                fd,
                component.as_str(),
                OFlags::DIRECTORY | OFlags::RDONLY,
                Mode::empty(),
            )
            .unwrap();
            cur = std::fs::File::from(next);
        }
        rustix::fs::openat(
            cur.as_fd(),
            "leaf",
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        let rows = walk_all(tmp.path().as_os_str().as_bytes());
        assert_eq!(rows.0.len(), 1 + 25 + 1);
        assert!(
            rows.0.iter().all(|r| r.4.is_none()),
            "{:?}",
            rows.0.iter().find(|r| r.4.is_some())
        );
        assert!(
            rows.0
                .iter()
                .any(|r| r.0.len() > 5000 && r.0.ends_with(b"/leaf"))
        );
    }
}
