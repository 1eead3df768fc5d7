//! Export of a directory of a snapshot in ncdu's JSON format (ncdu 1.x "export" files, also read
//! by gdu): `ncdu -f FILE` browses it as if the directory had just been scanned.
//!
//! The format is a nested array: `[1, 2, {metadata}, [{dir}, {file}, [{subdir}, ...], ...]]`,
//! each directory an array whose first element describes it. The entries come from ClickHouse
//! in depth-first order ([`export_sql`]) and are written as they arrive ([`NcduWriter`]), so an
//! export of any size needs memory only for the current path.
//!
//! Names are written as their raw bytes (JSON-escaped where JSON needs it), as ncdu itself
//! writes them (`ncdu -o`: a name with byte 0xff holds that byte, not `\u00ff`, which ncdu
//! would read as the two bytes of U+00FF); a name that is not UTF-8 round-trips through ncdu
//! unchanged. An export of such a name is therefore not strictly valid JSON (JSON is UTF-8),
//! and is served as [`CONTENT_TYPE`], not `application/json`.

use std::io::{self, Write};

use crate::ddl::Database;
use crate::sql::subtree;

/// The media type of an export: bytes for ncdu, since a name that is not UTF-8 is written as
/// is (see the module's documentation) and a strict JSON parser would refuse the document.
pub const CONTENT_TYPE: &str = "application/octet-stream";

/// ncdu's export format version.
const MAJOR: u32 = 1;
const MINOR: u32 = 2;

/// One entry of an export, as [`export_sql`] selects it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "clickhouse", derive(clickhouse::Row, serde::Deserialize))]
pub struct NcduEntry {
    #[cfg_attr(feature = "clickhouse", serde(with = "serde_bytes"))]
    pub parent_path: Vec<u8>,
    #[cfg_attr(feature = "clickhouse", serde(with = "serde_bytes"))]
    pub name: Vec<u8>,
    /// `dir`, `file`, `symlink`, ...
    pub kind: String,
    pub size: u64,
    pub allocated: u64,
    pub nlink: u64,
    pub ino: u64,
    pub dev: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    /// The entry could not be read completely (a directory that could not be listed).
    pub read_error: u8,
}

/// The entries of `dir` and everything below it in snapshot `snapshot_id`, in the order
/// [`NcduWriter`] needs: depth first, each directory right before its contents. Sorting the paths
/// with `/` replaced by NUL, the one byte no name holds and lower than any other, keeps each
/// subtree together (`a/b` before `a-b` and `a\x01b`).
pub fn export_sql(db: &Database, snapshot_id: u64, dir: &[u8]) -> String {
    format!(
        "SELECT parent_path, name, toString(kind) AS kind, size, allocated, nlink, ino, dev, mode, uid, gid, mtime_ns,
    toUInt8(error_op != 'none') AS read_error
FROM {db}.entries
WHERE snapshot_id = {snapshot_id} AND {}
ORDER BY replaceAll(path, '/', '\\0')",
        subtree(dir)
    )
}

/// 1 when `dir` is a directory of the snapshot, 0 otherwise (an export must start at one).
pub fn is_directory_sql(db: &Database, snapshot_id: u64, dir: &[u8]) -> String {
    let (parent, name) = crate::entry::split_path(dir);
    format!(
        "SELECT count() FROM {db}.dir_rollups WHERE snapshot_id = {snapshot_id} AND parent_path = {} AND name = {}",
        crate::sql::quote_bytes(parent),
        crate::sql::quote_bytes(name)
    )
}

/// Errors of an export: the output failed, or the rows were not a tree below the root.
#[derive(Debug, thiserror::Error)]
pub enum NcduError {
    #[error("writing the export: {0}")]
    Io(#[from] io::Error),
    #[error("the export is not a tree: {0}")]
    Order(NotATree),
    #[error("{0}")]
    NoDirectory(String),
}

/// How the rows of an export failed to be a tree below its root (paths shown lossily).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotATree {
    #[error("the first entry must be the directory {root}, got {got}")]
    FirstNotRoot { root: String, got: String },
    #[error("{path} is not below {root}")]
    NotBelow { path: String, root: String },
    #[error("no directory {root} in the snapshot")]
    Empty { root: String },
}

/// Writes an export as entries arrive in [`export_sql`] order.
#[derive(Debug)]
pub struct NcduWriter<W: Write> {
    out: W,
    /// The directories open on the way down from the root, as full paths.
    open: Vec<Vec<u8>>,
    root: Vec<u8>,
    entries: u64,
}

impl<W: Write> NcduWriter<W> {
    /// Starts an export of the directory `root`, scanned at `timestamp` (Unix seconds).
    pub fn new(mut out: W, root: &[u8], progver: &str, timestamp: u64) -> io::Result<Self> {
        write!(
            out,
            "[{MAJOR},{MINOR},{{\"progname\":\"storage-tracker\",\"progver\":"
        )?;
        write_json_string(&mut out, progver.as_bytes())?;
        write!(out, ",\"timestamp\":{timestamp}}}")?;
        Ok(Self {
            out,
            open: Vec::new(),
            root: root.to_vec(),
            entries: 0,
        })
    }

    /// The next entry. The first must be the root itself; every later one must lie in a
    /// directory already written.
    pub fn push(&mut self, e: &NcduEntry) -> Result<(), NcduError> {
        let path = join(&e.parent_path, &e.name);
        if self.entries == 0 {
            if path != self.root || e.kind != "dir" {
                return Err(NcduError::Order(NotATree::FirstNotRoot {
                    root: String::from_utf8_lossy(&self.root).into_owned(),
                    got: String::from_utf8_lossy(&path).into_owned(),
                }));
            }
            self.out.write_all(b",\n[")?;
            // ncdu names the root by its full path.
            self.info(e, &path)?;
            self.open.push(path);
            self.entries = 1;
            return Ok(());
        }
        while self
            .open
            .last()
            .is_some_and(|dir| dir.as_slice() != e.parent_path.as_slice())
        {
            self.open.pop();
            self.out.write_all(b"]")?;
        }
        if self.open.is_empty() {
            return Err(NcduError::Order(NotATree::NotBelow {
                path: String::from_utf8_lossy(&path).into_owned(),
                root: String::from_utf8_lossy(&self.root).into_owned(),
            }));
        }
        if e.kind == "dir" {
            self.out.write_all(b",\n[")?;
            self.info(e, &e.name)?;
            self.open.push(path);
        } else {
            self.out.write_all(b",\n")?;
            self.info(e, &e.name)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// The output written so far, to drain while exporting.
    pub fn output(&mut self) -> &mut W {
        &mut self.out
    }

    /// Closes every open directory and the document; returns the output and the entry count.
    pub fn finish(mut self) -> Result<(W, u64), NcduError> {
        if self.entries == 0 {
            return Err(NcduError::Order(NotATree::Empty {
                root: String::from_utf8_lossy(&self.root).into_owned(),
            }));
        }
        for _ in 0..self.open.len() {
            self.out.write_all(b"]")?;
        }
        self.out.write_all(b"]\n")?;
        self.out.flush()?;
        Ok((self.out, self.entries))
    }

    fn info(&mut self, e: &NcduEntry, name: &[u8]) -> io::Result<()> {
        let out = &mut self.out;
        out.write_all(b"{\"name\":")?;
        write_json_string(out, name)?;
        write!(
            out,
            ",\"asize\":{},\"dsize\":{},\"dev\":{},\"ino\":{}",
            e.size, e.allocated, e.dev, e.ino
        )?;
        // A file with other links: ncdu counts its blocks once per directory.
        if e.kind != "dir" && e.nlink > 1 {
            write!(out, ",\"hlnkc\":true,\"nlink\":{}", e.nlink)?;
        }
        if e.kind != "dir" && e.kind != "file" {
            out.write_all(b",\"notreg\":true")?;
        }
        if e.read_error != 0 {
            out.write_all(b",\"read_error\":true")?;
        }
        write!(
            out,
            ",\"uid\":{},\"gid\":{},\"mode\":{},\"mtime\":{}}}",
            e.uid,
            e.gid,
            e.mode,
            e.mtime_ns.div_euclid(1_000_000_000).max(0)
        )
    }
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = parent.to_vec();
    if !p.ends_with(b"/") {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A JSON string of raw bytes: `"` `\` and control characters escaped, every other byte as is.
fn write_json_string(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(b"\"")?;
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\t' => Some(b"\\t"),
            b'\r' => Some(b"\\r"),
            0..=0x1f | 0x7f => None,
            _ => continue,
        };
        out.write_all(&bytes[start..i])?;
        match escape {
            Some(e) => out.write_all(e)?,
            None => write!(out, "\\u{b:04x}")?,
        }
        start = i + 1;
    }
    out.write_all(&bytes[start..])?;
    out.write_all(b"\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(parent: &str, name: &str, kind: &str, size: u64) -> NcduEntry {
        NcduEntry {
            parent_path: parent.into(),
            name: name.into(),
            kind: kind.into(),
            size,
            allocated: size.div_ceil(4096) * 4096,
            nlink: 1,
            ino: size,
            dev: 7,
            mode: if kind == "dir" { 0o40755 } else { 0o100644 },
            uid: 1,
            gid: 2,
            mtime_ns: 1_700_000_000_500_000_000,
            read_error: 0,
        }
    }

    fn export(root: &str, entries: &[NcduEntry]) -> String {
        let mut w = NcduWriter::new(Vec::new(), root.as_bytes(), "0.1.0", 42).unwrap();
        for e in entries {
            w.push(e).unwrap();
        }
        String::from_utf8(w.finish().unwrap().0).unwrap()
    }

    #[test]
    fn nests_directories_in_depth_first_order() {
        let text = export(
            "/d",
            &[
                entry("/", "d", "dir", 4096),
                entry("/d", "a", "dir", 4096),
                entry("/d/a", "x", "file", 10),
                entry("/d/a", "y", "dir", 4096),
                entry("/d/a/y", "z", "file", 20),
                entry("/d", "a-b", "file", 30),
            ],
        );
        let names: Vec<&str> = text
            .split("\"name\":\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
            .collect();
        assert_eq!(names, ["/d", "a", "x", "y", "z", "a-b"]);
        // Brackets: the document, the root, a, y; y and a close before a-b.
        assert!(text.starts_with("[1,2,{\"progname\":\"storage-tracker\""));
        assert!(text.contains("\"name\":\"z\",\"asize\":20"));
        assert!(text.contains("]],\n{\"name\":\"a-b\""), "{text}");
        assert!(text.trim_end().ends_with("}]]"), "{text}");
        assert_eq!(text.matches('[').count(), text.matches(']').count());
    }

    #[test]
    fn names_keep_their_bytes_and_special_entries_are_marked() {
        let mut odd = entry("/d", "", "file", 5);
        odd.name = b"q\"\\\n\x01\xff".to_vec();
        odd.nlink = 3;
        let mut link = entry("/d", "l", "symlink", 3);
        link.read_error = 1;
        let mut w = NcduWriter::new(Vec::new(), b"/d", "v", 1).unwrap();
        w.push(&entry("/", "d", "dir", 4096)).unwrap();
        w.push(&odd).unwrap();
        w.push(&link).unwrap();
        let (bytes, n) = w.finish().unwrap();
        assert_eq!(n, 3);
        let needle: &[u8] = b"{\"name\":\"q\\\"\\\\\\n\\u0001\xff\",";
        assert!(bytes.windows(needle.len()).any(|w| w == needle));
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("\"hlnkc\":true,\"nlink\":3"));
        assert!(text.contains("\"name\":\"l\",\"asize\":3,\"dsize\":4096,\"dev\":7,\"ino\":3,\"notreg\":true,\"read_error\":true"));
        assert!(text.contains("\"mtime\":1700000000}"));
    }

    #[test]
    fn refuses_rows_that_are_not_a_tree_below_the_root() {
        let mut w = NcduWriter::new(Vec::new(), b"/d", "v", 1).unwrap();
        assert!(matches!(
            w.push(&entry("/d", "x", "file", 1)),
            Err(NcduError::Order(_))
        ));
        let mut w = NcduWriter::new(Vec::new(), b"/d", "v", 1).unwrap();
        w.push(&entry("/", "d", "dir", 4096)).unwrap();
        assert!(matches!(
            w.push(&entry("/e", "x", "file", 1)),
            Err(NcduError::Order(_))
        ));
        let w = NcduWriter::new(Vec::new(), b"/d", "v", 1).unwrap();
        assert!(matches!(w.finish(), Err(NcduError::Order(_))));
    }

    #[test]
    fn the_query_orders_subtrees_together() {
        let sql = export_sql(&Database::new("db").unwrap(), 3, b"/d");
        assert!(sql.contains("ORDER BY replaceAll(path, '/', '\\0')"));
        assert!(sql.contains(&crate::sql::subtree(b"/d")));
    }
}
