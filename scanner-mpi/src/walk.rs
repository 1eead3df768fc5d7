//! Reading directories: the units of work of a scan.
//!
//! A directory is opened once; its entries are listed with `getdents64` into a reused buffer
//! and each is `statx`ed relative to the directory's handle, never by full path, so paths longer
//! than `PATH_MAX` are scanned like any other. Symlinks are not followed. Subdirectories become
//! new work items and emit their own row when they are read, so a directory that cannot be
//! opened still has exactly one row, carrying the error.
//!
//! A huge directory must not serialize a scan: while it is listed, its names are cut into
//! pieces of [`NAMES_PER_PIECE`] that are published as work of their own, which any thread or
//! rank can take, open the directory and `statx` relative to it.

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RawDir, Statx, StatxFlags, StatxTimestamp};
use rustix::io::Errno;
use storage_tracker_proto::entry::{EntryRef, EntryStat, split_path};
use storage_tracker_proto::{EntryKind, ErrorOp};

use crate::steal::Work;

/// Names of one directory stat'ed as one piece of work.
pub const NAMES_PER_PIECE: usize = 1024;

/// One unit of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanWork {
    /// Read a directory: its own row, its entries, its subdirectories as new work.
    Dir {
        path: Vec<u8>,
        /// Depth below the scan root (the root is 0).
        depth: u32,
    },
    /// Stat some entries of a directory: a piece of a huge directory.
    Names {
        dir: Vec<u8>,
        /// Depth of `dir`; the entries are one deeper.
        depth: u32,
        /// The names, each followed by a NUL byte (names cannot contain one) and the kind
        /// the listing reported (an [`EntryKind`] code, `Unknown` without d_type).
        names: Vec<u8>,
    },
}

impl ScanWork {
    pub fn dir(path: impl Into<Vec<u8>>, depth: u32) -> Self {
        Self::Dir {
            path: path.into(),
            depth,
        }
    }
}

/// Appends a name and its listed kind to a [`ScanWork::Names`] list.
fn push_name(names: &mut Vec<u8>, name: &[u8], kind: EntryKind) {
    names.extend_from_slice(name);
    names.push(0);
    names.push(kind as u8);
}

/// The (name, listed kind) pairs of a [`ScanWork::Names`] list.
fn names_of(mut names: &[u8]) -> impl Iterator<Item = (&[u8], EntryKind)> {
    std::iter::from_fn(move || {
        let end = names.iter().position(|&b| b == 0)?;
        let name = &names[..end];
        let kind = names
            .get(end + 1)
            .and_then(|&k| EntryKind::from_code(k))
            .unwrap_or(EntryKind::Unknown);
        names = names.get(end + 2..).unwrap_or_default();
        Some((name, kind))
    })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take_bytes(buf: &mut &[u8]) -> Option<Vec<u8>> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return None;
    }
    let (bytes, rest) = rest.split_at(len);
    *buf = rest;
    Some(bytes.to_vec())
}

fn take_u32(buf: &mut &[u8]) -> Option<u32> {
    let (v, rest) = buf.split_first_chunk::<4>()?;
    *buf = rest;
    Some(u32::from_le_bytes(*v))
}

impl Work for ScanWork {
    fn encoded_len(&self) -> usize {
        match self {
            Self::Dir { path, .. } => 1 + 4 + 4 + path.len(),
            Self::Names { dir, names, .. } => 1 + 4 + 4 + dir.len() + 4 + names.len(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Dir { path, depth } => {
                out.push(0);
                out.extend_from_slice(&depth.to_le_bytes());
                put_bytes(out, path);
            }
            Self::Names { dir, depth, names } => {
                out.push(1);
                out.extend_from_slice(&depth.to_le_bytes());
                put_bytes(out, dir);
                put_bytes(out, names);
            }
        }
    }

    fn decode(buf: &mut &[u8]) -> Option<Self> {
        let (&tag, rest) = buf.split_first()?;
        *buf = rest;
        let depth = take_u32(buf)?;
        match tag {
            0 => Some(Self::Dir {
                path: take_bytes(buf)?,
                depth,
            }),
            1 => Some(Self::Names {
                dir: take_bytes(buf)?,
                depth,
                names: take_bytes(buf)?,
            }),
            _ => None,
        }
    }
}

/// Where the rows of a walk go.
pub trait RowSink {
    fn row(&mut self, entry: &EntryRef<'_>);
}

/// Where a walk puts the work it finds.
pub trait WorkQueue {
    fn push(&mut self, work: ScanWork);
    /// Offers what was pushed to other threads and ranks now, before the current item ends.
    fn publish(&mut self) {}
}

impl WorkQueue for Vec<ScanWork> {
    fn push(&mut self, work: ScanWork) {
        Vec::push(self, work);
    }
}

/// Everything a worker thread reuses from one directory to the next.
#[derive(Debug)]
pub struct DirReader {
    dents: Vec<MaybeUninit<u8>>,
    child_path: Vec<u8>,
    link_target: Vec<u8>,
    /// Names listed but not yet stat'ed, NUL-terminated.
    pending: Vec<u8>,
    pending_count: usize,
}

impl Default for DirReader {
    fn default() -> Self {
        Self {
            dents: vec![MaybeUninit::uninit(); 64 * 1024],
            child_path: Vec::new(),
            link_target: Vec::new(),
            pending: Vec::new(),
            pending_count: 0,
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

/// Counts a row and hands it on.
fn emit(sink: &mut impl RowSink, counts: &mut WalkCounts, e: &EntryRef<'_>) {
    counts.entries += 1;
    counts.errors += u64::from(e.error.is_some());
    counts.apparent_bytes += e.stat.size;
    sink.row(e);
}

fn join(dir: &[u8], name: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(dir);
    if dir != b"/" {
        out.push(b'/');
    }
    out.extend_from_slice(name);
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

impl DirReader {
    /// Does one unit of work: emits rows to `sink`, new work to `queue`.
    pub fn run(
        &mut self,
        work: &ScanWork,
        sink: &mut impl RowSink,
        counts: &mut WalkCounts,
        queue: &mut impl WorkQueue,
    ) {
        match work {
            ScanWork::Dir { path, depth } => self.read_dir(path, *depth, sink, counts, queue),
            ScanWork::Names { dir, depth, names } => match open_dir(dir) {
                Ok(fd) => self.stat_names(&fd, dir, *depth, names, sink, counts, queue),
                Err(e) => {
                    // The directory went away since it was listed: each entry says so.
                    for (name, kind) in names_of(names) {
                        join(dir, name, &mut self.child_path);
                        let row = EntryRef {
                            path: &self.child_path,
                            parent: dir,
                            name,
                            depth: depth + 1,
                            kind,
                            stat: EntryStat::default(),
                            symlink_target: b"",
                            error: Some((ErrorOp::Stat, errno_of(e))),
                        };
                        emit(sink, counts, &row);
                    }
                }
            },
        }
    }

    fn read_dir(
        &mut self,
        path: &[u8],
        depth: u32,
        sink: &mut impl RowSink,
        counts: &mut WalkCounts,
        queue: &mut impl WorkQueue,
    ) {
        let (parent, name) = split_path(path);
        let own_row = |kind, stat, error| EntryRef {
            path,
            parent,
            name,
            depth,
            kind,
            stat,
            symlink_target: b"",
            error,
        };

        let dir = match open_dir(path) {
            Ok(fd) => fd,
            Err(open_err) => {
                // Unreadable, or no longer a directory (replaced since its parent was listed).
                let row = match lstat_path(path) {
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
                emit(sink, counts, &row);
                return;
            }
        };
        let own = rustix::fs::statx(&dir, "", AtFlags::EMPTY_PATH, STATX_MASK);
        let read_error = self.list(&dir, path, depth, queue);
        // The last names are stat'ed here; earlier full pieces went out as work of their own.
        let names = std::mem::take(&mut self.pending);
        self.pending_count = 0;
        self.stat_names(&dir, path, depth, &names, sink, counts, queue);
        self.pending = names;
        self.pending.clear();
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
        emit(sink, counts, &row);
    }

    /// Lists `dir`: subdirectories become work, other names collect in `pending`, and every
    /// full piece of names is published as work. Returns the errno of a failed read.
    fn list(
        &mut self,
        dir: &OwnedFd,
        path: &[u8],
        depth: u32,
        queue: &mut impl WorkQueue,
    ) -> Option<i32> {
        let mut listing = RawDir::new(dir.as_fd(), &mut self.dents);
        while let Some(next) = listing.next() {
            let dent = match next {
                Ok(d) => d,
                Err(e) => return Some(errno_of(e)),
            };
            let name: &CStr = dent.file_name();
            let name = name.to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            // d_type saves a stat for directories: their row comes from the fstat of the
            // opened directory when it is read, so each is stat'ed exactly once.
            if dent.file_type() == FileType::Directory {
                join(path, name, &mut self.child_path);
                queue.push(ScanWork::dir(self.child_path.as_slice(), depth + 1));
                continue;
            }
            push_name(&mut self.pending, name, kind_of_dtype(dent.file_type()));
            self.pending_count += 1;
            if self.pending_count == NAMES_PER_PIECE {
                let names =
                    std::mem::replace(&mut self.pending, Vec::with_capacity(NAMES_PER_PIECE * 16));
                self.pending_count = 0;
                queue.push(ScanWork::Names {
                    dir: path.to_vec(),
                    depth,
                    names,
                });
                queue.publish();
            }
        }
        None
    }

    /// Stats `names` (NUL-terminated) relative to `dir` and emits their rows; a name that turns
    /// out to be a directory (the filesystem gave no d_type) becomes work instead.
    #[allow(clippy::too_many_arguments)]
    fn stat_names(
        &mut self,
        dir: &OwnedFd,
        dir_path: &[u8],
        depth: u32,
        names: &[u8],
        sink: &mut impl RowSink,
        counts: &mut WalkCounts,
        queue: &mut impl WorkQueue,
    ) {
        for (name, listed_kind) in names_of(names) {
            join(dir_path, name, &mut self.child_path);
            let mut row = EntryRef {
                path: &self.child_path,
                parent: dir_path,
                name,
                depth: depth + 1,
                kind: listed_kind,
                stat: EntryStat::default(),
                symlink_target: b"",
                error: None,
            };
            match rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, STATX_MASK) {
                Ok(st) => {
                    row.stat = entry_stat(&st);
                    row.kind = EntryKind::from_mode(row.stat.mode);
                }
                // Vanished since listed, or unreadable: the row records it.
                Err(e) => row.error = Some((ErrorOp::Stat, errno_of(e))),
            }
            if row.kind == EntryKind::Dir {
                queue.push(ScanWork::dir(self.child_path.as_slice(), depth + 1));
                continue;
            }
            if row.kind == EntryKind::Symlink {
                match rustix::fs::readlinkat(dir, name, std::mem::take(&mut self.link_target)) {
                    Ok(target) => self.link_target = target.into_bytes(),
                    Err(e) => {
                        self.link_target.clear();
                        row.error = Some((ErrorOp::Readlink, errno_of(e)));
                    }
                }
                row.symlink_target = &self.link_target;
            }
            emit(sink, counts, &row);
        }
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
        let mut queue = vec![ScanWork::dir(root, 0)];
        while let Some(w) = queue.pop() {
            reader.run(&w, &mut sink, &mut counts, &mut queue);
        }
        assert_eq!(counts.entries as usize, sink.0.len());
        sink
    }

    #[test]
    fn work_items_round_trip_and_truncation_is_detected() {
        let mut names = Vec::new();
        push_name(&mut names, b"a\xff", EntryKind::File);
        push_name(&mut names, b"b", EntryKind::Unknown);
        let items = [
            ScanWork::dir(b"/x/\xff".as_slice(), 3),
            ScanWork::dir(Vec::new(), 0),
            ScanWork::Names {
                dir: b"/d".to_vec(),
                depth: 1,
                names: names.clone(),
            },
        ];
        let mut buf = Vec::new();
        for item in &items {
            let before = buf.len();
            item.encode(&mut buf);
            assert_eq!(buf.len() - before, item.encoded_len());
        }
        let mut rest = &buf[..];
        for item in &items {
            assert_eq!(&ScanWork::decode(&mut rest).unwrap(), item);
        }
        assert!(rest.is_empty());
        assert!(ScanWork::decode(&mut &buf[..6]).is_none());
        let listed: Vec<_> = names_of(&names).collect();
        assert_eq!(
            listed,
            [
                (&b"a\xff"[..], EntryKind::File),
                (&b"b"[..], EntryKind::Unknown)
            ]
        );
    }

    #[test]
    fn a_huge_directory_is_cut_into_published_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let n = NAMES_PER_PIECE * 2 + 7;
        for i in 0..n {
            std::fs::write(tmp.path().join(format!("f{i}")), b"").unwrap();
        }
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        let mut reader = DirReader::default();
        let mut sink = Collect::default();
        let mut counts = WalkCounts::default();
        let mut queue = Vec::new();
        reader.run(
            &ScanWork::dir(tmp.path().as_os_str().as_bytes(), 0),
            &mut sink,
            &mut counts,
            &mut queue,
        );
        // Two full pieces went out as work; the last 7 names and the directory's row are here.
        let pieces = queue
            .iter()
            .filter(|w| matches!(w, ScanWork::Names { .. }))
            .count();
        assert_eq!(pieces, 2);
        assert_eq!(sink.0.len(), 7 + 1);
        for w in std::mem::take(&mut queue) {
            reader.run(&w, &mut sink, &mut counts, &mut queue);
        }
        assert_eq!(
            sink.0.len(),
            n + 2,
            "every file, the directory and its subdirectory, once"
        );
        let mut paths: Vec<_> = sink.0.iter().map(|r| r.0.clone()).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), n + 2);
    }

    #[test]
    fn a_piece_of_a_vanished_directory_records_every_name_as_an_error() {
        let mut names = Vec::new();
        push_name(&mut names, b"gone", EntryKind::File);
        let mut reader = DirReader::default();
        let mut sink = Collect::default();
        let mut counts = WalkCounts::default();
        let work = ScanWork::Names {
            dir: b"/nonexistent/storage-tracker".to_vec(),
            depth: 2,
            names,
        };
        reader.run(&work, &mut sink, &mut counts, &mut Vec::new());
        assert_eq!(sink.0.len(), 1);
        assert_eq!(sink.0[0].1, EntryKind::File, "the listed kind is kept");
        assert_eq!(
            sink.0[0].4,
            Some((ErrorOp::Stat, Errno::NOENT.raw_os_error()))
        );
        assert_eq!(counts.errors, 1);
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
