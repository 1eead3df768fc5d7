//! Reading directories: the units of work of a scan.
//!
//! A directory is opened once; its entries are listed with `getdents64` into a reused buffer
//! and each is `statx`ed relative to the directory's handle, never by full path, so paths longer
//! than `PATH_MAX` are scanned like any other. Symlinks are not followed. Subdirectories become
//! new work items and emit their own row when they are read, so a directory that cannot be
//! opened still has exactly one row, carrying the error.
//!
//! No directory may serialize a scan where a stat is a network round trip: its names are cut
//! into pieces sized by what a stat costs ([`crate::pieces`]), published as work of their own
//! while the directory is still being listed, which any thread of the rank takes and `statx`es
//! relative to the directory's open handle (another rank opens the directory again). Its
//! subdirectories are published as soon as the listing ends, before any of its names is
//! stat'ed, and each is opened relative to its parent's handle.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RawDir, Statx, StatxFlags, StatxTimestamp};
use rustix::io::Errno;
use storage_tracker_proto::entry::{EntryRef, EntryStat, split_path};
use storage_tracker_proto::{EntryKind, ErrorOp};

use crate::pieces::StatCost;
use crate::work::{Handle, OpenDir, ScanWork, cut_names, names_of, push_name};

/// A `--exclude` glob. A pattern with a '/' matches whole paths ('*' stops at '/'); one
/// without matches names, at any depth.
#[derive(Debug, Clone)]
pub struct Exclude {
    pattern: CString,
    whole_path: bool,
}

/// Why a `--exclude` glob is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExcludeError {
    #[error("an empty --exclude pattern matches nothing; remove it")]
    Empty,
    #[error("--exclude {glob:?} contains a NUL byte")]
    Nul { glob: String },
}

impl Exclude {
    pub fn new(glob: &str) -> Result<Self, ExcludeError> {
        if glob.is_empty() {
            return Err(ExcludeError::Empty);
        }
        let pattern = CString::new(glob).map_err(|_| ExcludeError::Nul {
            glob: glob.to_owned(),
        })?;
        Ok(Self {
            whole_path: glob.contains('/'),
            pattern,
        })
    }

    /// The glob as given.
    pub fn glob(&self) -> &str {
        self.pattern.to_str().expect("made from a str")
    }

    /// Whether the entry `name` at `path` (NUL-terminated) is excluded.
    fn matches(&self, name: &CStr, path_nul: &[u8]) -> bool {
        let (subject, flags) = if self.whole_path {
            (path_nul.as_ptr(), libc::FNM_PATHNAME)
        } else {
            (name.as_ptr().cast(), 0)
        };
        debug_assert_eq!(path_nul.last(), Some(&0));
        // SAFETY: both strings are NUL-terminated and outlive the call; fnmatch only reads them.
        unsafe { libc::fnmatch(self.pattern.as_ptr(), subject.cast(), flags) == 0 }
    }
}

/// What a walk records and where it goes.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Entries matching any of these are neither recorded nor read.
    pub exclude: Vec<Exclude>,
    /// Read no directory on another device than this one (the root's): mount points are
    /// recorded, their contents are not.
    pub same_device: Option<u64>,
    /// Record entries down to this depth (the root is 0); read no directory at it.
    pub max_depth: Option<u32>,
    /// Follow symlinks: an entry is recorded as its target; a link back to an ancestor
    /// directory is recorded with ELOOP and not read again.
    pub follow_symlinks: bool,
    /// Open directories with O_NOATIME where permitted, so reading them changes no atime.
    pub no_atime: bool,
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
    options: Arc<WalkOptions>,
    /// What a stat costs, shared by the rank's readers: it sizes the pieces.
    cost: Arc<StatCost>,
    dents: Vec<MaybeUninit<u8>>,
    child_path: Vec<u8>,
    link_target: Vec<u8>,
    /// Names listed but not yet stat'ed, NUL-terminated.
    pending: Vec<u8>,
    pending_count: usize,
    /// The directory of the last piece that came without a handle (from another rank), kept
    /// open for the next pieces of the same directory.
    reopened: Option<(Vec<u8>, Arc<OpenDir>)>,
}

impl Default for DirReader {
    fn default() -> Self {
        Self::new(Arc::default(), Arc::default())
    }
}

impl DirReader {
    pub fn new(options: Arc<WalkOptions>, cost: Arc<StatCost>) -> Self {
        Self {
            options,
            cost,
            dents: vec![MaybeUninit::uninit(); 64 * 1024],
            child_path: Vec::new(),
            link_target: Vec::new(),
            pending: Vec::new(),
            pending_count: 0,
            reopened: None,
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

/// Where a directory is opened from: its parent's handle and its name, or its path.
#[derive(Clone, Copy)]
enum DirAt<'a> {
    Parent(&'a OwnedFd, &'a [u8]),
    Path(&'a [u8]),
}

/// Opens a directory; a final symlink is followed only when `follow`. A path too long for one
/// `open` is opened component by component, each relative to the previous.
fn open_dir(at: DirAt<'_>, follow: bool, no_atime: bool) -> Result<OwnedFd, Errno> {
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    if no_atime {
        match open_dir_with(at, flags | OFlags::NOATIME) {
            // O_NOATIME is only for the owner (or CAP_FOWNER); read other directories normally.
            Err(Errno::PERM) => {}
            other => return other,
        }
    }
    open_dir_with(at, flags)
}

fn open_dir_with(at: DirAt<'_>, flags: OFlags) -> Result<OwnedFd, Errno> {
    let path = match at {
        DirAt::Parent(parent, name) => {
            return rustix::fs::openat(parent, name, flags, Mode::empty());
        }
        DirAt::Path(path) => path,
    };
    match rustix::fs::openat(CWD, path, flags, Mode::empty()) {
        Err(Errno::NAMETOOLONG) => {
            // The components before the last were directories when their parents were read.
            let walk = flags & !OFlags::NOFOLLOW & !OFlags::NOATIME;
            let mut dir = rustix::fs::openat(CWD, "/", walk, Mode::empty())?;
            let components: Vec<&[u8]> = path
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .collect();
            for (i, component) in components.iter().enumerate() {
                let f = if i + 1 == components.len() {
                    flags
                } else {
                    walk
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

/// The directory a reader is working in.
struct InDir<'a> {
    fd: &'a OwnedFd,
    /// What the work made from it carries: a share of `fd`, when the budget allows.
    handle: Handle,
    path: &'a [u8],
    depth: u32,
    /// What a subdirectory's work carries as its ancestors (empty unless following symlinks).
    ancestors: &'a [u64],
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
        let (follow, no_atime) = (self.options.follow_symlinks, self.options.no_atime);
        match work {
            ScanWork::Dir {
                path,
                depth,
                ancestors,
                parent,
            } => self.read_dir(path, *depth, ancestors, parent, sink, counts, queue),
            ScanWork::Names {
                dir,
                depth,
                names,
                ancestors,
                handle,
            } => match self.piece_dir(dir, handle, follow, no_atime) {
                Ok(open) => {
                    let at = InDir {
                        fd: open.fd(),
                        handle: Handle::of(&open),
                        path: dir,
                        depth: *depth,
                        ancestors,
                    };
                    // Cut when the stats were thought faster, or by another rank's measure.
                    let first = self.share_pieces(&at, names, queue);
                    self.stat_names(&at, first, sink, counts, queue);
                }
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

    /// The open directory of a piece: its handle, or the directory opened again.
    fn piece_dir(
        &mut self,
        dir: &[u8],
        handle: &Handle,
        follow: bool,
        no_atime: bool,
    ) -> Result<Arc<OpenDir>, Errno> {
        if let Some(open) = handle.get() {
            return Ok(Arc::clone(open));
        }
        if let Some((path, open)) = &self.reopened
            && path == dir
        {
            return Ok(Arc::clone(open));
        }
        let open = OpenDir::new(open_dir(DirAt::Path(dir), follow, no_atime)?);
        self.reopened = Some((dir.to_vec(), Arc::clone(&open)));
        Ok(open)
    }

    /// Pushes all but the first piece of `names` as work of their own and publishes them with
    /// whatever else this item pushed so far; returns the first, for this thread to stat.
    fn share_pieces<'n>(
        &self,
        at: &InDir<'_>,
        names: &'n [u8],
        queue: &mut impl WorkQueue,
    ) -> &'n [u8] {
        let mut pieces = cut_names(names, self.cost.names_per_piece());
        let first = pieces.next().unwrap_or_default();
        for piece in pieces {
            queue.push(ScanWork::Names {
                dir: at.path.to_vec(),
                depth: at.depth,
                names: piece.to_vec(),
                ancestors: at.ancestors.to_vec(),
                handle: at.handle.clone(),
            });
        }
        queue.publish();
        first
    }

    #[allow(clippy::too_many_arguments)]
    fn read_dir(
        &mut self,
        path: &[u8],
        depth: u32,
        ancestors: &[u64],
        parent_dir: &Handle,
        sink: &mut impl RowSink,
        counts: &mut WalkCounts,
        queue: &mut impl WorkQueue,
    ) {
        let options = Arc::clone(&self.options);
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

        let at = match parent_dir.get() {
            Some(open) if !name.is_empty() => DirAt::Parent(open.fd(), name),
            _ => DirAt::Path(path),
        };
        let dir = match open_dir(at, options.follow_symlinks, options.no_atime) {
            Ok(fd) => OpenDir::new(fd),
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
        let own = match rustix::fs::statx(dir.fd(), "", AtFlags::EMPTY_PATH, STATX_MASK) {
            Ok(st) => entry_stat(&st),
            Err(e) => {
                emit(
                    sink,
                    counts,
                    &own_row(
                        EntryKind::Dir,
                        EntryStat::default(),
                        Some((ErrorOp::Stat, errno_of(e))),
                    ),
                );
                return;
            }
        };
        if options.follow_symlinks && ancestors.chunks(2).any(|a| a == [own.dev, own.ino]) {
            // A symlink led back to a directory above: reading it again would never end.
            emit(
                sink,
                counts,
                &own_row(
                    EntryKind::Dir,
                    own,
                    Some((ErrorOp::Open, Errno::LOOP.raw_os_error())),
                ),
            );
            return;
        }
        let other_device = options.same_device.is_some_and(|dev| dev != own.dev);
        let too_deep = options.max_depth.is_some_and(|max| depth >= max);
        if other_device || too_deep {
            emit(sink, counts, &own_row(EntryKind::Dir, own, None));
            return;
        }
        let below: Vec<u64> = if options.follow_symlinks {
            [ancestors, &[own.dev, own.ino]].concat()
        } else {
            Vec::new()
        };
        let at = InDir {
            fd: dir.fd(),
            handle: Handle::of(&dir),
            path,
            depth,
            ancestors: &below,
        };
        let read_error = self.list(&at, queue);
        // The subdirectories and the names listed last go out now; earlier pieces went out
        // while listing. The first piece of the last names is stat'ed here.
        let names = std::mem::take(&mut self.pending);
        self.pending_count = 0;
        let first = self.share_pieces(&at, &names, queue);
        self.stat_names(&at, first, sink, counts, queue);
        self.pending = names;
        self.pending.clear();
        // The directory's row comes last so that it can carry an error from reading it.
        emit(
            sink,
            counts,
            &own_row(EntryKind::Dir, own, read_error.map(|e| (ErrorOp::Read, e))),
        );
    }

    /// Whether `--exclude` drops the entry `name` of `dir`. The entry's path is built only when
    /// a pattern needs it.
    fn excluded(&mut self, dir: &[u8], name: &CStr) -> bool {
        let exclude = &self.options.exclude;
        if exclude.is_empty() {
            return false;
        }
        if exclude.iter().any(|x| x.whole_path) {
            join(dir, name.to_bytes(), &mut self.child_path);
        } else {
            self.child_path.clear();
        }
        self.child_path.push(0);
        exclude.iter().any(|x| x.matches(name, &self.child_path))
    }

    /// Lists a directory: subdirectories become work, other names collect in `pending`, and
    /// every full piece of names is published as work. Returns the errno of a failed read.
    fn list(&mut self, at: &InDir<'_>, queue: &mut impl WorkQueue) -> Option<i32> {
        let mut dents = std::mem::take(&mut self.dents);
        let mut listing = RawDir::new(at.fd.as_fd(), &mut dents);
        let mut result = None;
        while let Some(next) = listing.next() {
            let dent = match next {
                Ok(d) => d,
                Err(e) => {
                    result = Some(errno_of(e));
                    break;
                }
            };
            let name_c: &CStr = dent.file_name();
            let name = name_c.to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if self.excluded(at.path, name_c) {
                continue;
            }
            // d_type saves a stat for directories: their row comes from the fstat of the
            // opened directory when it is read, so each is stat'ed exactly once.
            if dent.file_type() == FileType::Directory {
                join(at.path, name, &mut self.child_path);
                queue.push(ScanWork::Dir {
                    path: self.child_path.clone(),
                    depth: at.depth + 1,
                    ancestors: at.ancestors.to_vec(),
                    parent: at.handle.clone(),
                });
                continue;
            }
            push_name(&mut self.pending, name, kind_of_dtype(dent.file_type()));
            self.pending_count += 1;
            // A huge directory: its names are stat'ed by others while it is still listed.
            if self.pending_count >= self.cost.names_per_piece() {
                let names = std::mem::take(&mut self.pending);
                self.pending_count = 0;
                queue.push(ScanWork::Names {
                    dir: at.path.to_vec(),
                    depth: at.depth,
                    names,
                    ancestors: at.ancestors.to_vec(),
                    handle: at.handle.clone(),
                });
                queue.publish();
            }
        }
        self.dents = dents;
        result
    }

    /// Stats `names` relative to the directory and emits their rows; a name that turns out to
    /// be a directory (no d_type, or a followed symlink) becomes work instead.
    fn stat_names(
        &mut self,
        at: &InDir<'_>,
        names: &[u8],
        sink: &mut impl RowSink,
        counts: &mut WalkCounts,
        queue: &mut impl WorkQueue,
    ) {
        let follow = self.options.follow_symlinks;
        let (mut seen, mut stats, mut spent) = (0usize, 0usize, Duration::ZERO);
        for (name, listed_kind) in names_of(names) {
            join(at.path, name, &mut self.child_path);
            let mut row = EntryRef {
                path: &self.child_path,
                parent: at.path,
                name,
                depth: at.depth + 1,
                kind: listed_kind,
                stat: EntryStat::default(),
                symlink_target: b"",
                error: None,
            };
            // Every 8th stat is timed (a clock read costs a few percent of a cached stat).
            let timed = seen % 8 == 0;
            seen += 1;
            let started = timed.then(Instant::now);
            let stat = rustix::fs::statx(at.fd, name, AtFlags::SYMLINK_NOFOLLOW, STATX_MASK);
            if let Some(started) = started {
                spent += started.elapsed();
                stats += 1;
            }
            match stat {
                Ok(st) => {
                    row.stat = entry_stat(&st);
                    row.kind = EntryKind::from_mode(row.stat.mode);
                }
                // Vanished since listed, or unreadable: the row records it.
                Err(e) => row.error = Some((ErrorOp::Stat, errno_of(e))),
            }
            let is_link = row.kind == EntryKind::Symlink;
            if is_link {
                match rustix::fs::readlinkat(at.fd, name, std::mem::take(&mut self.link_target)) {
                    Ok(target) => self.link_target = target.into_bytes(),
                    Err(e) => {
                        self.link_target.clear();
                        row.error = Some((ErrorOp::Readlink, errno_of(e)));
                    }
                }
                row.symlink_target = &self.link_target;
                // Followed, a link is its target; a dangling one stays a link. A target that
                // cannot be resolved otherwise (a loop of links, a name too long, no search
                // permission) is recorded on the link's row.
                if follow {
                    match rustix::fs::statx(at.fd, name, AtFlags::empty(), STATX_MASK) {
                        Ok(st) => {
                            row.stat = entry_stat(&st);
                            row.kind = EntryKind::from_mode(row.stat.mode);
                        }
                        Err(Errno::NOENT) => {}
                        Err(e) => row.error = Some((ErrorOp::Stat, errno_of(e))),
                    }
                }
            }
            if row.kind == EntryKind::Dir {
                queue.push(ScanWork::Dir {
                    path: self.child_path.clone(),
                    depth: at.depth + 1,
                    ancestors: at.ancestors.to_vec(),
                    parent: at.handle.clone(),
                });
                continue;
            }
            emit(sink, counts, &row);
        }
        self.cost.record(stats, spent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pieces::MAX_NAMES_PER_PIECE;
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
        walk_with(root, WalkOptions::default())
    }

    fn walk_with(root: &[u8], options: WalkOptions) -> Collect {
        let mut reader = DirReader::new(Arc::new(options), Arc::default());
        let mut sink = Collect::default();
        let mut counts = WalkCounts::default();
        let mut queue = vec![ScanWork::dir(root, 0)];
        while let Some(w) = queue.pop() {
            reader.run(&w, &mut sink, &mut counts, &mut queue);
        }
        assert_eq!(counts.entries as usize, sink.0.len());
        sink
    }

    /// A reader that takes a stat to cost `per_stat` until it measures otherwise.
    fn reader_at(per_stat: Duration) -> DirReader {
        DirReader::new(Arc::default(), Arc::new(StatCost::new(per_stat)))
    }

    #[test]
    fn a_huge_directory_is_cut_into_published_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let n = MAX_NAMES_PER_PIECE * 2 + 7;
        for i in 0..n {
            std::fs::write(tmp.path().join(format!("f{i}")), b"").unwrap();
        }
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        // A local disk's microsecond per stat: the largest pieces.
        let mut reader = reader_at(Duration::from_micros(1));
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
        // A piece taken is cut again when its stats turn out slow (a loaded
        // machine), so run until no work is left.
        while let Some(w) = queue.pop() {
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
    fn where_a_stat_is_slow_a_small_directory_is_cut_too_and_its_work_shares_the_handle() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..23 {
            std::fs::write(tmp.path().join(format!("f{i}")), b"").unwrap();
        }
        std::fs::create_dir(tmp.path().join("sub")).unwrap();
        // 1 ms per stat: 5 names per piece of 5 ms.
        let mut reader = reader_at(Duration::from_millis(1));
        let mut sink = Collect::default();
        let mut counts = WalkCounts::default();
        let mut queue = Vec::new();
        let root = tmp.path().as_os_str().as_bytes();
        reader.run(&ScanWork::dir(root, 0), &mut sink, &mut counts, &mut queue);
        // Every 5 names listed went out as a piece; the last 3 and the directory are done
        // here. The pieces and the subdirectory carry the directory's handle.
        assert_eq!(sink.0.len(), 3 + 1);
        let sizes: Vec<usize> = queue
            .iter()
            .filter_map(|w| match w {
                ScanWork::Names { names, handle, .. } => {
                    assert!(
                        handle.get().is_some(),
                        "a piece stats relative to the handle"
                    );
                    Some(names_of(names).count())
                }
                ScanWork::Dir { parent, .. } => {
                    assert!(
                        parent.get().is_some(),
                        "a subdirectory opens relative to it"
                    );
                    None
                }
            })
            .collect();
        assert_eq!(sizes, [5, 5, 5, 5]);
        // The local disk answers in microseconds: the estimate falls, and so does the cutting.
        while let Some(w) = queue.pop() {
            reader.run(&w, &mut sink, &mut counts, &mut queue);
        }
        assert_eq!(sink.0.len(), 23 + 2);
        assert!(reader.cost.per_stat() < Duration::from_millis(1));
    }

    #[test]
    fn a_piece_from_another_rank_is_cut_again_and_opens_its_directory_once() {
        let tmp = tempfile::tempdir().unwrap();
        let mut names = Vec::new();
        for i in 0..12 {
            let name = format!("f{i}");
            std::fs::write(tmp.path().join(&name), b"").unwrap();
            push_name(&mut names, name.as_bytes(), EntryKind::File);
        }
        let dir = tmp.path().as_os_str().as_bytes().to_vec();
        let mut reader = reader_at(Duration::from_millis(1));
        let (mut sink, mut counts, mut queue) = (Collect::default(), WalkCounts::default(), vec![]);
        let stolen = ScanWork::Names {
            dir: dir.clone(),
            depth: 0,
            names,
            ancestors: Vec::new(),
            handle: Handle::NONE,
        };
        reader.run(&stolen, &mut sink, &mut counts, &mut queue);
        assert_eq!(sink.0.len(), 5);
        assert_eq!(queue.len(), 2, "7 names in pieces of 5 and 2");
        assert!(matches!(&queue[0], ScanWork::Names { handle, .. } if handle.get().is_some()));
        let reopened = Arc::clone(&reader.reopened.as_ref().unwrap().1);
        while let Some(w) = queue.pop() {
            reader.run(&w, &mut sink, &mut counts, &mut queue);
        }
        assert_eq!(sink.0.len(), 12);
        assert!(Arc::ptr_eq(&reopened, &reader.reopened.as_ref().unwrap().1));
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
            ancestors: Vec::new(),
            handle: Handle::NONE,
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

    /// Paths of the rows, relative to `root`, sorted.
    fn relative(rows: &Collect, root: &std::path::Path) -> Vec<String> {
        let root = root.as_os_str().as_bytes();
        let mut v: Vec<String> = rows
            .0
            .iter()
            .map(|r| String::from_utf8_lossy(&r.0[root.len()..]).into_owned())
            .collect();
        v.sort();
        v
    }

    fn tree() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for d in ["a/b/c", "a/cache", "x/cache/deep"] {
            std::fs::create_dir_all(tmp.path().join(d)).unwrap();
        }
        for f in [
            "a/b/c/f.log",
            "a/b/keep.txt",
            "a/cache/junk",
            "x/cache/deep/f",
            "x/y.log",
        ] {
            std::fs::write(tmp.path().join(f), b"data").unwrap();
        }
        tmp
    }

    #[test]
    fn exclude_by_name_or_by_path() {
        let tmp = tree();
        let root = tmp.path().as_os_str().as_bytes();
        let by_name = WalkOptions {
            exclude: vec![
                Exclude::new("cache").unwrap(),
                Exclude::new("*.log").unwrap(),
            ],
            ..Default::default()
        };
        assert_eq!(
            relative(&walk_with(root, by_name), tmp.path()),
            ["", "/a", "/a/b", "/a/b/c", "/a/b/keep.txt", "/x"]
        );
        let pattern = format!("{}/a/*", tmp.path().display());
        let by_path = WalkOptions {
            exclude: vec![Exclude::new(&pattern).unwrap()],
            ..Default::default()
        };
        // '*' does not cross '/': only the children of a/ go, with what is below them.
        assert_eq!(
            relative(&walk_with(root, by_path), tmp.path()),
            [
                "",
                "/a",
                "/x",
                "/x/cache",
                "/x/cache/deep",
                "/x/cache/deep/f",
                "/x/y.log"
            ]
        );
        assert!(Exclude::new("").is_err());
    }

    #[test]
    fn max_depth_records_the_last_level_without_reading_it() {
        let tmp = tree();
        let rows = walk_with(
            tmp.path().as_os_str().as_bytes(),
            WalkOptions {
                max_depth: Some(1),
                ..Default::default()
            },
        );
        assert_eq!(relative(&rows, tmp.path()), ["", "/a", "/x"]);
        let rows = walk_with(
            tmp.path().as_os_str().as_bytes(),
            WalkOptions {
                max_depth: Some(0),
                ..Default::default()
            },
        );
        assert_eq!(relative(&rows, tmp.path()), [""]);
    }

    #[test]
    fn following_symlinks_records_targets_and_stops_at_loops() {
        let tmp = tree();
        std::os::unix::fs::symlink("../x", tmp.path().join("a/to_x")).unwrap();
        std::os::unix::fs::symlink("..", tmp.path().join("a/b/up")).unwrap();
        std::os::unix::fs::symlink("nowhere", tmp.path().join("dangling")).unwrap();
        let root = tmp.path().as_os_str().as_bytes();
        let plain = walk_all(root);
        assert_eq!(plain.0.len(), 8 + 5 + 3, "directories, files, links");
        let followed = walk_with(
            root,
            WalkOptions {
                follow_symlinks: true,
                ..Default::default()
            },
        );
        let paths = relative(&followed, tmp.path());
        // a/to_x is read as a directory: x's four entries appear again below it.
        for p in ["/a/to_x", "/a/to_x/cache/deep/f", "/a/to_x/y.log"] {
            assert!(paths.contains(&p.to_string()), "{p} in {paths:?}");
        }
        // a/b/up leads back to a: recorded once, with ELOOP, and not read.
        let up = followed
            .0
            .iter()
            .find(|r| r.0.ends_with(b"/a/b/up"))
            .unwrap();
        assert_eq!(
            (up.1, up.4),
            (
                EntryKind::Dir,
                Some((ErrorOp::Open, Errno::LOOP.raw_os_error()))
            )
        );
        assert!(!paths.iter().any(|p| p.starts_with("/a/b/up/")));
        // A dangling link stays a link.
        let dangling = followed
            .0
            .iter()
            .find(|r| r.0.ends_with(b"/dangling"))
            .unwrap();
        assert_eq!((dangling.1, dangling.4), (EntryKind::Symlink, None));
    }

    #[test]
    fn unresolvable_link_targets_are_errors_on_the_link_row() {
        let tmp = tempfile::tempdir().unwrap();
        // A target component longer than NAME_MAX: resolving it fails with ENAMETOOLONG.
        let long = "n".repeat(300);
        std::os::unix::fs::symlink(&long, tmp.path().join("long")).unwrap();
        std::os::unix::fs::symlink("self", tmp.path().join("self")).unwrap();
        let root = tmp.path().as_os_str().as_bytes();
        let options = WalkOptions {
            follow_symlinks: true,
            ..Default::default()
        };
        let rows = walk_with(root, options);
        let row = |name: &str| {
            rows.0
                .iter()
                .find(|r| r.0.ends_with(name.as_bytes()))
                .unwrap()
        };
        let long_row = row("/long");
        assert_eq!(
            (long_row.1, long_row.4),
            (
                EntryKind::Symlink,
                Some((ErrorOp::Stat, Errno::NAMETOOLONG.raw_os_error()))
            )
        );
        assert_eq!(long_row.3, long.as_bytes());
        let self_row = row("/self");
        assert_eq!(
            (self_row.1, self_row.4),
            (
                EntryKind::Symlink,
                Some((ErrorOp::Stat, Errno::LOOP.raw_os_error()))
            )
        );
        // Not following, both are plain links without errors.
        let plain = walk_all(root);
        assert!(
            plain
                .0
                .iter()
                .filter(|r| r.1 != EntryKind::Dir)
                .all(|r| r.1 == EntryKind::Symlink && r.4.is_none())
        );
    }

    #[test]
    fn one_file_system_records_mount_points_but_does_not_read_them() {
        let dev = std::fs::metadata("/dev").unwrap().dev();
        let rows = walk_with(
            b"/dev",
            WalkOptions {
                same_device: Some(dev),
                ..Default::default()
            },
        );
        let other: Vec<&Vec<u8>> = rows
            .0
            .iter()
            .filter(|r| r.1 == EntryKind::Dir && r.2.dev != dev)
            .map(|r| &r.0)
            .collect();
        for mount in &other {
            let mut below = (*mount).clone();
            below.push(b'/');
            assert!(
                !rows.0.iter().any(|r| r.0.starts_with(&below)),
                "{} was read",
                String::from_utf8_lossy(mount)
            );
        }
        let all = walk_all(b"/dev");
        assert!(all.0.len() >= rows.0.len());
    }

    #[test]
    fn no_atime_reads_the_same_tree() {
        let tmp = tree();
        let root = tmp.path().as_os_str().as_bytes();
        let rows = walk_with(
            root,
            WalkOptions {
                no_atime: true,
                ..Default::default()
            },
        );
        assert_eq!(
            relative(&rows, tmp.path()),
            relative(&walk_all(root), tmp.path())
        );
    }
}
