//! The filesystem: a read-only passthrough of a source directory whose metadata operations
//! (lookup, getattr, opendir, readdir, readlink, open, release, releasedir) are answered
//! through the [`Timer`]: the source is read at once, on the request loop's thread, and the
//! reply is sent when the modelled server has served it. Data reads and statfs are answered
//! at once. Every attribute and entry is given a zero TTL so the kernel caches nothing and
//! every `stat` by name reaches the lab as a LOOKUP. An operation on a stalled subtree
//! ([`Stalls`]) is handed to the timer with a hold: its reply is ready at once, like the others,
//! and sent after the hold and the latency.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};

use crate::service::Timer;
use crate::stall::{Stall, Stalls};
use crate::stats::{Counts, Op};

/// Zero: the kernel keeps no entry or attribute, so every operation reaches the lab.
const TTL: Duration = Duration::ZERO;

/// The lab's node table: node id `i + 1` is `nodes[i]` (the root is 1), and one node per
/// source inode (`(dev, ino)`), so hard links share a node and an inode number. Nodes are never
/// forgotten: memory grows with the distinct entries looked up or listed (a path each).
#[derive(Debug, Default)]
struct Nodes {
    nodes: Vec<Node>,
    ids: HashMap<(u64, u64), u64>,
}

#[derive(Debug)]
struct Node {
    path: PathBuf,
    parent: u64,
}

impl Nodes {
    fn path(&self, id: INodeNo) -> Result<PathBuf, Errno> {
        let index = id.0.checked_sub(1).ok_or(Errno::ENOENT)?;
        self.nodes
            .get(index as usize)
            .map(|n| n.path.clone())
            .ok_or(Errno::ENOENT)
    }

    fn parent(&self, id: u64) -> u64 {
        self.nodes
            .get(id.saturating_sub(1) as usize)
            .map_or(1, |n| n.parent)
    }

    /// The node of source inode `(dev, ino)`, made with `path` if it is new.
    fn intern(&mut self, dev: u64, ino: u64, path: impl FnOnce() -> PathBuf, parent: u64) -> u64 {
        if let Some(&id) = self.ids.get(&(dev, ino)) {
            return id;
        }
        self.nodes.push(Node {
            path: path(),
            parent,
        });
        let id = self.nodes.len() as u64;
        self.ids.insert((dev, ino), id);
        id
    }
}

#[derive(Debug)]
enum Handle {
    /// A directory's listing, read whole at opendir: (node, kind, name) after "." and "..".
    Dir(Vec<(u64, FileType, OsString)>),
    File(File),
}

/// Open files and directories by handle.
#[derive(Debug, Default)]
struct Handles {
    open: HashMap<u64, Handle>,
    next: u64,
}

/// The lab's filesystem.
#[derive(Debug)]
pub struct Lab {
    source: PathBuf,
    nodes: Mutex<Nodes>,
    handles: Mutex<Handles>,
    timer: Timer,
    counts: Arc<Counts>,
    stalls: Stalls,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn errno(e: &io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn time(secs: i64, nsec: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn kind(ft: std::fs::FileType) -> FileType {
    FileType::from_std(ft).unwrap_or(FileType::RegularFile)
}

fn attr(id: u64, m: &Metadata) -> FileAttr {
    FileAttr {
        ino: INodeNo(id),
        size: m.size(),
        blocks: m.blocks(),
        atime: time(m.atime(), m.atime_nsec()),
        mtime: time(m.mtime(), m.mtime_nsec()),
        ctime: time(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind(m.file_type()),
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: m.blksize() as u32,
        flags: 0,
    }
}

impl Lab {
    /// The lab over `source`, its delays served by `timer`, its operations counted in `counts`.
    pub fn new(source: PathBuf, timer: Timer, counts: Arc<Counts>) -> io::Result<Self> {
        let root = std::fs::metadata(&source)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", source.display()),
            ));
        }
        let mut nodes = Nodes::default();
        nodes.intern(root.dev(), root.ino(), || source.clone(), 1);
        Ok(Self {
            stalls: Stalls::new(&source, &[], Instant::now()),
            source,
            nodes: Mutex::new(nodes),
            handles: Mutex::new(Handles::default()),
            timer,
            counts,
        })
    }

    /// The lab with `stalls` (subtrees of the source whose operations are held until the mount
    /// is as old as each says).
    pub fn with_stalls(mut self, stalls: &[Stall]) -> Self {
        self.stalls = Stalls::new(&self.source, stalls, Instant::now());
        self
    }

    pub fn timer(&self) -> &Timer {
        &self.timer
    }

    /// Counts `op` and sends its reply once the modelled server has served it, after holding
    /// it until `hold` if it is on a stalled subtree.
    fn later(&self, op: Op, hold: Option<Instant>, reply: impl FnOnce() + Send + 'static) {
        self.counts.add(op);
        self.timer.delay_after(hold, Box::new(reply));
    }

    fn path(&self, id: INodeNo) -> Result<PathBuf, Errno> {
        lock(&self.nodes).path(id)
    }

    /// Until when an operation on node `id` is held (a stalled subtree holds it).
    fn hold_of(&self, id: INodeNo) -> Option<Instant> {
        if self.stalls.is_empty() {
            return None;
        }
        self.path(id).ok().and_then(|p| self.stalls.until(&p))
    }

    fn getattr_of(&self, id: INodeNo) -> Result<FileAttr, Errno> {
        let path = self.path(id)?;
        let m = std::fs::symlink_metadata(path).map_err(|e| errno(&e))?;
        Ok(attr(id.0, &m))
    }

    /// The attributes of `name` in `parent`, and until when the lookup is held: a lookup is on
    /// the inode it answers with, so the name of a stalled directory, or any name below one, is
    /// held (found or not).
    fn lookup_of(
        &self,
        parent: INodeNo,
        name: &OsStr,
    ) -> (Result<FileAttr, Errno>, Option<Instant>) {
        let path = match self.path(parent) {
            Ok(p) => p.join(name),
            Err(e) => return (Err(e), None),
        };
        let hold = self.stalls.until(&path);
        let found = std::fs::symlink_metadata(&path).map_err(|e| errno(&e));
        let result = found.map(|m| {
            let id = lock(&self.nodes).intern(m.dev(), m.ino(), || path, parent.0);
            attr(id, &m)
        });
        (result, hold)
    }

    fn list(&self, dir: INodeNo) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        let path = self.path(dir)?;
        let dev = std::fs::symlink_metadata(&path)
            .map_err(|e| errno(&e))?
            .dev();
        let mut listing = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(|e| errno(&e))? {
            let entry = entry.map_err(|e| errno(&e))?;
            let ft = entry.file_type().map_err(|e| errno(&e))?;
            listing.push((entry.ino(), kind(ft), entry.file_name()));
        }
        // Names come with the directory's device: a mount point below is a name like any other.
        let mut nodes = lock(&self.nodes);
        let parent = nodes.parent(dir.0);
        let mut out = Vec::with_capacity(listing.len() + 2);
        out.push((dir.0, FileType::Directory, OsString::from(".")));
        out.push((parent, FileType::Directory, OsString::from("..")));
        for (ino, kind, name) in listing {
            let id = nodes.intern(dev, ino, || path.join(&name), dir.0);
            out.push((id, kind, name));
        }
        Ok(out)
    }

    fn keep(&self, handle: Handle) -> u64 {
        let mut handles = lock(&self.handles);
        handles.next += 1;
        let fh = handles.next;
        handles.open.insert(fh, handle);
        fh
    }
}

impl Filesystem for Lab {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Without PARALLEL_DIROPS the kernel serialises lookups and readdirs within one
        // directory, which no parallel filesystem's client does.
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        // Background requests (asynchronous reads) beyond max_background wait in the kernel.
        let _ = config.set_max_background(u16::MAX);
        let _ = config.set_congestion_threshold(u16::MAX);
        // Stalls end relative to the mount's start: now.
        self.stalls.start_at(Instant::now());
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (result, hold) = self.lookup_of(parent, name);
        self.later(Op::Lookup, hold, move || match result {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        });
    }

    fn forget(&self, _req: &Request, _ino: INodeNo, _nlookup: u64) {
        self.counts.add(Op::Forget);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self.getattr_of(ino);
        self.later(Op::Getattr, self.hold_of(ino), move || match result {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let result = self
            .path(ino)
            .and_then(|p| std::fs::read_link(p).map_err(|e| errno(&e)));
        self.later(Op::Readlink, self.hold_of(ino), move || match result {
            Ok(target) => reply.data(target.as_os_str().as_bytes()),
            Err(e) => reply.error(e),
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = if flags.acc_mode() != OpenAccMode::O_RDONLY {
            Err(Errno::EROFS)
        } else {
            self.path(ino)
                .and_then(|p| File::open(p).map_err(|e| errno(&e)))
                .map(|f| self.keep(Handle::File(f)))
        };
        self.later(Op::Open, self.hold_of(ino), move || match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.counts.add(Op::Read);
        let handles = lock(&self.handles);
        let Some(Handle::File(file)) = handles.open.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buf = vec![0; size as usize];
        match file.read_at(&mut buf, offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).open.remove(&fh.0);
        self.later(Op::Release, self.hold_of(ino), move || reply.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let result = self.list(ino).map(|l| self.keep(Handle::Dir(l)));
        self.later(Op::Opendir, self.hold_of(ino), move || match result {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // The reply is filled now (the listing was read at opendir) and sent later.
        let found = {
            let handles = lock(&self.handles);
            match handles.open.get(&fh.0) {
                Some(Handle::Dir(listing)) => {
                    for (i, (id, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
                        if reply.add(INodeNo(*id), i as u64 + 1, *kind, name) {
                            break;
                        }
                    }
                    true
                }
                _ => false,
            }
        };
        self.later(Op::Readdir, self.hold_of(ino), move || {
            if found {
                reply.ok()
            } else {
                reply.error(Errno::EBADF)
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.handles).open.remove(&fh.0);
        self.later(Op::Releasedir, self.hold_of(ino), move || reply.ok());
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.counts.add(Op::Statfs);
        match statvfs(&self.source) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn statvfs(path: &Path) -> io::Result<libc::statvfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a NUL-terminated path and `out` a struct statvfs fills.
    unsafe {
        let mut out: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(c.as_ptr(), &mut out) == 0 {
            Ok(out)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}
