//! The unit of work of a scan, [`ScanWork`], and its encoding in a work message (what
//! [`Work`] asks of an item that ranks hand each other).
//!
//! An item is a kind byte (0 a directory, 1 a piece of one), the depth as a u32, then its
//! byte strings each as a u32 length and the bytes, then the ancestors as a u32 count and
//! u64s, all little-endian.
//!
//! Within a rank an item also carries an open directory ([`Handle`]): a subdirectory is opened
//! relative to its parent's handle and a piece stats relative to its directory's, so that no
//! path is resolved again from the root (on a network filesystem each component can be a round
//! trip). The handle does not travel: an item another rank takes opens its path again.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use storage_tracker_proto::EntryKind;

use crate::pool::Work;

/// A directory opened by a reader, which the items made from it may share.
#[derive(Debug)]
pub struct OpenDir {
    fd: OwnedFd,
    /// Whether it counts against the rank's budget of shared handles (and so may be shared).
    shared: bool,
}

/// Directories held open by queued work, across the process.
static SHARED_DIRS: AtomicUsize = AtomicUsize::new(0);

/// Most directories queued work may hold open: half of the descriptors the process may open,
/// the rest left for the readers, the chunk files and the connections. Beyond it, items carry
/// no handle and open their path again.
fn shared_dir_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(1 << 20);
        usize::try_from(nofile / 2)
            .unwrap_or(usize::MAX)
            .saturating_sub(256)
            .min(1 << 16)
    })
}

/// Raises the soft limit of open descriptors to the hard one, so that queued work can hold its
/// directories open (the soft limit is often 1,024 while the hard one is far higher).
pub fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        // Refused, the budget is computed from the soft limit as it is.
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

impl OpenDir {
    /// Wraps a directory just opened; it may be shared while the budget allows.
    pub fn new(fd: OwnedFd) -> Arc<Self> {
        let shared = SHARED_DIRS.fetch_add(1, Ordering::Relaxed) < shared_dir_limit();
        if !shared {
            SHARED_DIRS.fetch_sub(1, Ordering::Relaxed);
        }
        Arc::new(Self { fd, shared })
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Drop for OpenDir {
    fn drop(&mut self) {
        if self.shared {
            SHARED_DIRS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The open directory an item works relative to, when its rank has it.
///
/// It is a cache of what the item's path names: two items are equal when they name the same
/// work, whether or not they carry a handle.
#[derive(Debug, Clone, Default)]
pub struct Handle(Option<Arc<OpenDir>>);

impl Handle {
    /// No handle: the item opens its path.
    pub const NONE: Self = Self(None);

    /// A share of `dir`, or none once the budget of shared directories is spent.
    pub fn of(dir: &Arc<OpenDir>) -> Self {
        Self(dir.shared.then(|| Arc::clone(dir)))
    }

    pub fn get(&self) -> Option<&Arc<OpenDir>> {
        self.0.as_ref()
    }
}

impl PartialEq for Handle {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Handle {}

/// One unit of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanWork {
    /// Read a directory: its own row, its entries, its subdirectories as new work.
    Dir {
        path: Vec<u8>,
        /// Depth below the scan root (the root is 0).
        depth: u32,
        /// (dev, ino) of every directory above, flattened; kept only when following symlinks,
        /// to recognize a link back to an ancestor (a loop).
        ancestors: Vec<u64>,
        /// The parent directory, to open this one relative to it.
        parent: Handle,
    },
    /// Stat some entries of a directory: a piece of a huge directory.
    Names {
        dir: Vec<u8>,
        /// Depth of `dir`; the entries are one deeper.
        depth: u32,
        /// The names, each followed by a NUL byte (names cannot contain one) and the kind
        /// the listing reported (an [`EntryKind`] code, `Unknown` without d_type).
        names: Vec<u8>,
        /// As for `Dir`: `dir`'s ancestors and `dir` itself, when following symlinks.
        ancestors: Vec<u64>,
        /// `dir` itself, opened by the reader that listed it.
        handle: Handle,
    },
}

impl ScanWork {
    pub fn dir(path: impl Into<Vec<u8>>, depth: u32) -> Self {
        Self::Dir {
            path: path.into(),
            depth,
            ancestors: Vec::new(),
            parent: Handle::NONE,
        }
    }
}

/// Appends a name and its listed kind to a [`ScanWork::Names`] list.
pub(crate) fn push_name(names: &mut Vec<u8>, name: &[u8], kind: EntryKind) {
    names.extend_from_slice(name);
    names.push(0);
    names.push(kind as u8);
}

/// The (name, listed kind) pairs of a [`ScanWork::Names`] list.
pub(crate) fn names_of(mut names: &[u8]) -> impl Iterator<Item = (&[u8], EntryKind)> {
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

/// `names` (a [`ScanWork::Names`] list) cut into lists of at most `per_piece` names each.
pub(crate) fn cut_names(names: &[u8], per_piece: usize) -> impl Iterator<Item = &[u8]> {
    let per_piece = per_piece.max(1);
    let mut rest = names;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        for _ in 0..per_piece {
            match rest[end..].iter().position(|&b| b == 0) {
                // The name, its NUL and its kind byte.
                Some(nul) => end = (end + nul + 2).min(rest.len()),
                None => {
                    end = rest.len();
                    break;
                }
            }
            if end == rest.len() {
                break;
            }
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
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

fn put_ancestors(out: &mut Vec<u8>, ancestors: &[u64]) {
    out.extend_from_slice(&(ancestors.len() as u32).to_le_bytes());
    ancestors
        .iter()
        .for_each(|a| out.extend_from_slice(&a.to_le_bytes()));
}

fn take_ancestors(buf: &mut &[u8]) -> Option<Vec<u64>> {
    let n = take_u32(buf)? as usize;
    let mut ancestors = Vec::with_capacity(n.min(buf.len() / 8));
    for _ in 0..n {
        let (a, rest) = buf.split_first_chunk::<8>()?;
        ancestors.push(u64::from_le_bytes(*a));
        *buf = rest;
    }
    Some(ancestors)
}

fn take_u32(buf: &mut &[u8]) -> Option<u32> {
    let (v, rest) = buf.split_first_chunk::<4>()?;
    *buf = rest;
    Some(u32::from_le_bytes(*v))
}

impl Work for ScanWork {
    fn encoded_len(&self) -> usize {
        match self {
            Self::Dir {
                path, ancestors, ..
            } => 1 + 4 + 4 + path.len() + 4 + 8 * ancestors.len(),
            Self::Names {
                dir,
                names,
                ancestors,
                ..
            } => 1 + 4 + 4 + dir.len() + 4 + names.len() + 4 + 8 * ancestors.len(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Dir {
                path,
                depth,
                ancestors,
                ..
            } => {
                out.push(0);
                out.extend_from_slice(&depth.to_le_bytes());
                put_bytes(out, path);
                put_ancestors(out, ancestors);
            }
            Self::Names {
                dir,
                depth,
                names,
                ancestors,
                ..
            } => {
                out.push(1);
                out.extend_from_slice(&depth.to_le_bytes());
                put_bytes(out, dir);
                put_bytes(out, names);
                put_ancestors(out, ancestors);
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
                ancestors: take_ancestors(buf)?,
                parent: Handle::NONE,
            }),
            1 => Some(Self::Names {
                dir: take_bytes(buf)?,
                depth,
                names: take_bytes(buf)?,
                ancestors: take_ancestors(buf)?,
                handle: Handle::NONE,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                ancestors: vec![1, 2, 3, 4],
                handle: Handle::NONE,
            },
            ScanWork::Dir {
                path: b"/l".to_vec(),
                depth: 2,
                ancestors: vec![5, 6],
                parent: Handle::NONE,
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
        let pieces: Vec<Vec<_>> = cut_names(&names, 1)
            .map(|piece| names_of(piece).collect())
            .collect();
        assert_eq!(
            pieces,
            [
                vec![(&b"a\xff"[..], EntryKind::File)],
                vec![(&b"b"[..], EntryKind::Unknown)]
            ]
        );
        assert_eq!(cut_names(&names, 2).count(), 1);
        assert_eq!(cut_names(&names, 1024).next(), Some(&names[..]));
        assert_eq!(cut_names(&[], 3).count(), 0);
        let listed: Vec<_> = names_of(&names).collect();
        assert_eq!(
            listed,
            [
                (&b"a\xff"[..], EntryKind::File),
                (&b"b"[..], EntryKind::Unknown)
            ]
        );
    }
}
