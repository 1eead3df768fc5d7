//! The entry row: its Arrow schema (defined once, here) and the builder that fills it.
//!
//! A row describes one path as `lstat` saw it. Paths are raw bytes because Linux names need not
//! be UTF-8. Timestamps are signed nanoseconds since the epoch (files from before 1970 and
//! from the future exist). A problem with an entry is recorded on the entry's own row
//! (`error_op`, `errno`), so an unreadable directory still counts once and is never dropped.

use std::sync::{Arc, OnceLock};

use arrow_array::builder::{
    BinaryBuilder, Int32Builder, Int64Builder, UInt8Builder, UInt32Builder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

/// What kind of filesystem object an entry is. The codes are stored in Parquet and ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// The kind could not be determined (the stat failed).
    Unknown = 0,
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    BlockDevice = 6,
    CharDevice = 7,
}

impl EntryKind {
    pub const ALL: [EntryKind; 8] = [
        Self::Unknown,
        Self::File,
        Self::Dir,
        Self::Symlink,
        Self::Fifo,
        Self::Socket,
        Self::BlockDevice,
        Self::CharDevice,
    ];

    /// The kind of a `st_mode` value.
    pub fn from_mode(mode: u32) -> Self {
        match mode & 0o170000 {
            0o100000 => Self::File,
            0o040000 => Self::Dir,
            0o120000 => Self::Symlink,
            0o010000 => Self::Fifo,
            0o140000 => Self::Socket,
            0o060000 => Self::BlockDevice,
            0o020000 => Self::CharDevice,
            _ => Self::Unknown,
        }
    }

    /// The kind of a stored code; the codes are 0 up to `ALL.len()`, in `ALL`'s order.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The name used in ClickHouse's `Enum8` and in the API.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::File => "file",
            Self::Dir => "dir",
            Self::Symlink => "symlink",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::BlockDevice => "block",
            Self::CharDevice => "char",
        }
    }
}

/// Which operation on an entry failed, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorOp {
    None = 0,
    /// `statx` of the entry failed: the stat columns are zero.
    Stat = 1,
    /// The directory could not be opened: its contents are missing from the snapshot.
    Open = 2,
    /// Reading the directory failed part way: some of its contents may be missing.
    Read = 3,
    /// The symlink's target could not be read.
    Readlink = 4,
}

impl ErrorOp {
    pub const ALL: [ErrorOp; 5] = [
        Self::None,
        Self::Stat,
        Self::Open,
        Self::Read,
        Self::Readlink,
    ];

    /// The operation of a stored code; the codes are 0 up to `ALL.len()`, in `ALL`'s order.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Stat => "stat",
            Self::Open => "open",
            Self::Read => "read",
            Self::Readlink => "readlink",
        }
    }
}

/// Column names, in schema order. Errors name columns by these; readers of a batch take its
/// columns through [`EntryColumns`](crate::rows::EntryColumns).
pub mod col {
    pub const PATH: &str = "path";
    pub const PARENT: &str = "parent";
    pub const NAME: &str = "name";
    pub const DEPTH: &str = "depth";
    pub const KIND: &str = "kind";
    pub const SIZE: &str = "size";
    pub const ALLOCATED: &str = "allocated";
    pub const NLINK: &str = "nlink";
    pub const INO: &str = "ino";
    pub const DEV: &str = "dev";
    pub const MODE: &str = "mode";
    pub const UID: &str = "uid";
    pub const GID: &str = "gid";
    pub const ATIME_NS: &str = "atime_ns";
    pub const MTIME_NS: &str = "mtime_ns";
    pub const CTIME_NS: &str = "ctime_ns";
    pub const BTIME_NS: &str = "btime_ns";
    pub const SYMLINK_TARGET: &str = "symlink_target";
    pub const ERROR_OP: &str = "error_op";
    pub const ERRNO: &str = "errno";
}

/// The Arrow schema of an entry row: the one definition every crate uses.
pub fn entry_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use DataType::*;
            let f = |name, ty, nullable| Field::new(name, ty, nullable);
            Arc::new(Schema::new(vec![
                // Absolute path of the entry; the scan root's own row has the root path.
                f(col::PATH, Binary, false),
                // Path of the containing directory.
                f(col::PARENT, Binary, false),
                // Last component; empty only for the root "/".
                f(col::NAME, Binary, false),
                // 0 for the scan root.
                f(col::DEPTH, UInt32, false),
                f(col::KIND, UInt8, false),
                // Apparent size, st_size.
                f(col::SIZE, UInt64, false),
                // Allocated bytes, st_blocks * 512.
                f(col::ALLOCATED, UInt64, false),
                f(col::NLINK, UInt64, false),
                f(col::INO, UInt64, false),
                f(col::DEV, UInt64, false),
                f(col::MODE, UInt32, false),
                f(col::UID, UInt32, false),
                f(col::GID, UInt32, false),
                f(col::ATIME_NS, Int64, false),
                f(col::MTIME_NS, Int64, false),
                f(col::CTIME_NS, Int64, false),
                // Birth time where the filesystem reports it.
                f(col::BTIME_NS, Int64, true),
                // Empty unless the entry is a symlink.
                f(col::SYMLINK_TARGET, Binary, false),
                f(col::ERROR_OP, UInt8, false),
                f(col::ERRNO, Int32, false),
            ]))
        })
        .clone()
}

/// Splits an absolute path into (parent, name). The root "/" is its own parent with no name.
pub fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) if path.len() == 1 => (b"/", b""),
        Some(0) => (b"/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// The stat fields of one entry, as the scanner fills them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryStat {
    pub size: u64,
    pub allocated: u64,
    pub nlink: u64,
    pub ino: u64,
    pub dev: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub btime_ns: Option<i64>,
}

/// One row to append. Borrowed, so the walk appends without copying names twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    pub path: &'a [u8],
    pub parent: &'a [u8],
    pub name: &'a [u8],
    pub depth: u32,
    pub kind: EntryKind,
    pub stat: EntryStat,
    pub symlink_target: &'a [u8],
    pub error: Option<(ErrorOp, i32)>,
}

/// Builds one `RecordBatch` of entry rows: one typed builder per column.
#[derive(Debug)]
pub struct EntryBatchBuilder {
    path: BinaryBuilder,
    parent: BinaryBuilder,
    name: BinaryBuilder,
    depth: UInt32Builder,
    kind: UInt8Builder,
    size: UInt64Builder,
    allocated: UInt64Builder,
    nlink: UInt64Builder,
    ino: UInt64Builder,
    dev: UInt64Builder,
    mode: UInt32Builder,
    uid: UInt32Builder,
    gid: UInt32Builder,
    atime_ns: Int64Builder,
    mtime_ns: Int64Builder,
    ctime_ns: Int64Builder,
    btime_ns: Int64Builder,
    symlink_target: BinaryBuilder,
    error_op: UInt8Builder,
    errno: Int32Builder,
    rows: usize,
    capacity: usize,
}

impl EntryBatchBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        // Path bytes per row are a guess; the builders grow as needed.
        let bin = |avg: usize| BinaryBuilder::with_capacity(rows, rows * avg);
        Self {
            capacity: rows,
            path: bin(64),
            parent: bin(48),
            name: bin(16),
            depth: UInt32Builder::with_capacity(rows),
            kind: UInt8Builder::with_capacity(rows),
            size: UInt64Builder::with_capacity(rows),
            allocated: UInt64Builder::with_capacity(rows),
            nlink: UInt64Builder::with_capacity(rows),
            ino: UInt64Builder::with_capacity(rows),
            dev: UInt64Builder::with_capacity(rows),
            mode: UInt32Builder::with_capacity(rows),
            uid: UInt32Builder::with_capacity(rows),
            gid: UInt32Builder::with_capacity(rows),
            atime_ns: Int64Builder::with_capacity(rows),
            mtime_ns: Int64Builder::with_capacity(rows),
            ctime_ns: Int64Builder::with_capacity(rows),
            btime_ns: Int64Builder::with_capacity(rows),
            symlink_target: BinaryBuilder::with_capacity(rows, 0),
            error_op: UInt8Builder::with_capacity(rows),
            errno: Int32Builder::with_capacity(rows),
            rows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn append(&mut self, e: &EntryRef<'_>) {
        let s = &e.stat;
        self.path.append_value(e.path);
        self.parent.append_value(e.parent);
        self.name.append_value(e.name);
        self.depth.append_value(e.depth);
        self.kind.append_value(e.kind as u8);
        self.size.append_value(s.size);
        self.allocated.append_value(s.allocated);
        self.nlink.append_value(s.nlink);
        self.ino.append_value(s.ino);
        self.dev.append_value(s.dev);
        self.mode.append_value(s.mode);
        self.uid.append_value(s.uid);
        self.gid.append_value(s.gid);
        self.atime_ns.append_value(s.atime_ns);
        self.mtime_ns.append_value(s.mtime_ns);
        self.ctime_ns.append_value(s.ctime_ns);
        self.btime_ns.append_option(s.btime_ns);
        self.symlink_target.append_value(e.symlink_target);
        let (op, errno) = e.error.unwrap_or((ErrorOp::None, 0));
        self.error_op.append_value(op as u8);
        self.errno.append_value(errno);
        self.rows += 1;
    }

    /// Takes the rows appended so far as a batch and leaves the builder empty for reuse, with
    /// its capacity (so the next batch does not grow its buffers from nothing again).
    pub fn finish(&mut self) -> RecordBatch {
        let mut full = std::mem::replace(self, Self::with_capacity(self.capacity));
        full.take_batch()
    }

    fn take_batch(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.path.finish()),
            Arc::new(self.parent.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.depth.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.size.finish()),
            Arc::new(self.allocated.finish()),
            Arc::new(self.nlink.finish()),
            Arc::new(self.ino.finish()),
            Arc::new(self.dev.finish()),
            Arc::new(self.mode.finish()),
            Arc::new(self.uid.finish()),
            Arc::new(self.gid.finish()),
            Arc::new(self.atime_ns.finish()),
            Arc::new(self.mtime_ns.finish()),
            Arc::new(self.ctime_ns.finish()),
            Arc::new(self.btime_ns.finish()),
            Arc::new(self.symlink_target.finish()),
            Arc::new(self.error_op.finish()),
            Arc::new(self.errno.finish()),
        ];
        self.rows = 0;
        RecordBatch::try_new(entry_schema(), columns).expect("builders match entry_schema()")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_codes_round_trip() {
        for kind in EntryKind::ALL {
            assert_eq!(EntryKind::from_code(kind as u8), Some(kind));
        }
        assert_eq!(EntryKind::from_code(8), None);
        // The row checks rely on the codes being 0 up to ALL.len().
        for code in 0..=u8::MAX {
            let defined = usize::from(code);
            assert_eq!(
                EntryKind::from_code(code).is_some(),
                defined < EntryKind::ALL.len()
            );
            assert_eq!(
                ErrorOp::from_code(code).is_some(),
                defined < ErrorOp::ALL.len()
            );
        }
        for op in ErrorOp::ALL {
            assert_eq!(ErrorOp::from_code(op as u8), Some(op));
        }
        assert_eq!(EntryKind::from_mode(0o100644), EntryKind::File);
        assert_eq!(EntryKind::from_mode(0o040755), EntryKind::Dir);
        assert_eq!(EntryKind::from_mode(0o120777), EntryKind::Symlink);
    }

    #[test]
    fn split_path_handles_root_and_nesting() {
        assert_eq!(split_path(b"/"), (&b"/"[..], &b""[..]));
        assert_eq!(split_path(b"/a"), (&b"/"[..], &b"a"[..]));
        assert_eq!(split_path(b"/a/b\xff"), (&b"/a"[..], &b"b\xff"[..]));
    }

    #[test]
    fn builder_matches_schema_and_resets() {
        let mut b = EntryBatchBuilder::with_capacity(4);
        let e = EntryRef {
            path: b"/r/\xff",
            parent: b"/r",
            name: b"\xff",
            depth: 1,
            kind: EntryKind::File,
            stat: EntryStat {
                size: 3,
                mtime_ns: -1_000_000_001,
                ..Default::default()
            },
            symlink_target: b"",
            error: None,
        };
        b.append(&e);
        b.append(&e);
        let batch = b.finish();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema(), entry_schema());
        assert!(b.is_empty());
        assert_eq!(b.finish().num_rows(), 0);
    }
}
