//! A subtree cut into windows of the sort key for a download that reads it all: ranges of
//! `parent_path`, in key order, each holding about [`WINDOW_ENTRIES`] entries or fewer (one
//! directory's own entries, however many), so that a page reads its window and not the rest
//! of the subtree. ClickHouse 18.16 cannot read a table in its sort order: a page of a
//! subtree in key order reads, and sorts, every row of the subtree after the page's first key.
//!
//! Below a directory `B` the keys lie as points and blocks, one of each per subdirectory `c`:
//! the point `B/c` (the parent of `c`'s own entries) and the block `[B/c/, B/c0)` (everything
//! deeper). No other key falls inside a block, since a name holds no '/'. A window is a run of
//! consecutive points and blocks whose sizes (from `dir_rollups`) add up to at most the
//! window; a point larger than that is a piece of its own, and a block larger than that is cut
//! the same way in its turn, when the download gets there. The windows cover the key range
//! whole, whatever the rollups say: sizes only decide where the cuts are.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::entry::split_path;
use storage_tracker_proto::sql::{below_prefix, quote_bytes};

/// About how many entries a window holds at most.
pub const WINDOW_ENTRIES: u64 = 262_144;

/// A range of `parent_path`: from `lo` (itself included or not) up to `hi`, not included. (A
/// bound is never a key with a NUL byte appended: ClickHouse 18.16 compares a column with such a
/// constant as if the NUL were not there.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub lo: Vec<u8>,
    pub lo_included: bool,
    pub hi: Vec<u8>,
}

/// What is left of a subtree to read, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// The directory `dir` itself and its own entries: the first piece of a subtree.
    Top(Vec<u8>),
    /// A window to read.
    Window(KeyRange),
    /// The own entries of the directory at this path: a window of their own, being more than
    /// one.
    Own(Vec<u8>),
    /// Everything strictly below the subdirectories of `dir`, to be cut from `dir`'s
    /// subdirectories once reached.
    Below { dir: Vec<u8>, range: KeyRange },
}

impl Piece {
    /// The pieces of the subtree at `dir`: the directory with its own entries, then the rest.
    pub fn of_subtree(dir: &[u8]) -> Vec<Piece> {
        vec![Piece::Top(dir.to_vec()), Piece::below(dir)]
    }

    /// Everything whose parent lies strictly below `dir`.
    fn below(dir: &[u8]) -> Piece {
        let prefix = below_prefix(dir);
        // The root, "/", is the parent of its own entries: the rest start after it.
        let lo_included = prefix.as_slice() != dir;
        Piece::Below {
            dir: dir.to_vec(),
            range: KeyRange {
                hi: prefix_end(&prefix),
                lo: prefix,
                lo_included,
            },
        }
    }

    /// The condition on `entries` that selects this piece (not for [`Piece::Below`], which is
    /// cut into windows first).
    pub fn condition(&self) -> String {
        match self {
            Piece::Top(dir) => {
                let own = format!("parent_path = {}", quote_bytes(dir));
                if below_prefix(dir).as_slice() == dir.as_slice() {
                    own // The root is its own parent.
                } else {
                    let (parent, name) = split_path(dir);
                    format!(
                        "((parent_path = {} AND name = {}) OR {own})",
                        quote_bytes(parent),
                        quote_bytes(name)
                    )
                }
            }
            Piece::Own(dir) => format!("parent_path = {}", quote_bytes(dir)),
            Piece::Window(range) | Piece::Below { range, .. } => format!(
                "(parent_path {} {} AND parent_path < {})",
                if range.lo_included { ">=" } else { ">" },
                quote_bytes(&range.lo),
                quote_bytes(&range.hi)
            ),
        }
    }
}

/// The first key after every key that starts with `prefix` (which ends in '/').
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("a prefix ends with '/'") = b'0';
    end
}

/// A subdirectory's sizes, from its rollup.
#[derive(Debug, Clone, Row, Deserialize)]
pub struct SubdirRow {
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Its entries, itself included.
    pub entries: u64,
    /// Its own entries.
    pub direct_entries: u64,
}

/// The subdirectories of `dir` as [`SubdirRow`]s: a lookup on the sort key.
pub fn subdirectories(db: &Database, snapshot_id: SnapshotId, dir: &[u8]) -> String {
    format!(
        "SELECT name, entries, direct_entries FROM {db}.dir_rollups \
         WHERE snapshot_id = {snapshot_id} AND parent_path = {} AND name != ''",
        quote_bytes(dir)
    )
}

/// `range`, everything strictly below the subdirectories of `dir`, cut at its subdirectories
/// into windows of at most `window` entries, and pieces below those subdirectories too large
/// for one, in key order.
pub fn cut(dir: &[u8], range: &KeyRange, subdirs: &[SubdirRow], window: u64) -> Vec<Piece> {
    let prefix = below_prefix(dir);
    // Every point and block, with its size and, for a block, its directory.
    let mut parts: Vec<(Vec<u8>, u64, Option<Vec<u8>>)> = Vec::with_capacity(2 * subdirs.len());
    for s in subdirs {
        let path = [prefix.as_slice(), &s.name].concat();
        let deeper = s.entries.saturating_sub(s.direct_entries + 1);
        parts.push((below_prefix(&path), deeper, Some(path.clone())));
        parts.push((path, s.direct_entries, None));
    }
    parts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    parts.retain(|(key, ..)| {
        (*key > range.lo || (range.lo_included && *key == range.lo)) && *key < range.hi
    });

    let mut pieces = Vec::new();
    let (mut lo, mut lo_included) = (range.lo.clone(), range.lo_included);
    let mut held = 0u64;
    for (key, size, below) in parts {
        if size <= window && held + size <= window {
            held += size;
            continue;
        }
        // This part does not fit: the window so far ends where it starts.
        if key > lo {
            pieces.push(Piece::Window(KeyRange {
                lo: std::mem::replace(&mut lo, key.clone()),
                lo_included: std::mem::replace(&mut lo_included, true),
                hi: key.clone(),
            }));
        }
        held = 0;
        if size <= window {
            held = size; // It starts the next window.
        } else if let Some(dir) = below {
            // A block too large for a window: cut from its own subdirectories when reached.
            let hi = prefix_end(&key);
            pieces.push(Piece::Below {
                dir,
                range: KeyRange {
                    lo: key,
                    lo_included: true,
                    hi: hi.clone(),
                },
            });
            (lo, lo_included) = (hi, true);
        } else {
            // A directory's own entries, more than a window: a piece of their own.
            pieces.push(Piece::Own(key.clone()));
            (lo, lo_included) = (key, false);
        }
    }
    if range.hi > lo {
        pieces.push(Piece::Window(KeyRange {
            lo,
            lo_included,
            hi: range.hi.clone(),
        }));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subdir(name: &str, entries: u64, direct: u64) -> SubdirRow {
        SubdirRow {
            name: name.as_bytes().to_vec(),
            entries,
            direct_entries: direct,
        }
    }

    fn range(lo: &str, hi: &str) -> KeyRange {
        KeyRange {
            lo: lo.as_bytes().to_vec(),
            lo_included: true,
            hi: hi.as_bytes().to_vec(),
        }
    }

    fn after(lo: &str, hi: &str) -> KeyRange {
        KeyRange {
            lo_included: false,
            ..range(lo, hi)
        }
    }

    /// Whether `pieces` tile `whole` in order, without gap or overlap.
    fn tiles(pieces: &[Piece], whole: &KeyRange) -> bool {
        let mut at = (whole.lo.clone(), whole.lo_included);
        for p in pieces {
            match p {
                Piece::Window(r) | Piece::Below { range: r, .. } => {
                    if (r.lo.clone(), r.lo_included) != at || r.hi <= r.lo {
                        return false;
                    }
                    at = (r.hi.clone(), true);
                }
                // A directory's own entries: the key itself, then what follows it.
                Piece::Own(key) => {
                    if (key.clone(), true) != at {
                        return false;
                    }
                    at = (key.clone(), false);
                }
                Piece::Top(_) => return false,
            }
        }
        at == (whole.hi.clone(), true)
    }

    #[test]
    fn a_subtree_starts_with_its_directory_and_its_own_entries() {
        assert_eq!(
            Piece::of_subtree(b"/a/b")[0].condition(),
            "((parent_path = '/a' AND name = 'b') OR parent_path = '/a/b')"
        );
        assert_eq!(
            Piece::of_subtree(b"/a/b")[1].condition(),
            "(parent_path >= '/a/b/' AND parent_path < '/a/b0')"
        );
        // The root's own entries have the parent "/", itself included; the rest come after.
        let root = Piece::of_subtree(b"/");
        assert_eq!(root[0].condition(), "parent_path = '/'");
        assert_eq!(
            root[1].condition(),
            "(parent_path > '/' AND parent_path < '0')"
        );
    }

    #[test]
    fn small_subdirectories_share_a_window() {
        let whole = range("/d/", "/d0");
        let pieces = cut(b"/d", &whole, &[subdir("a", 10, 4), subdir("b", 7, 6)], 100);
        assert_eq!(pieces, vec![Piece::Window(whole.clone())]);
    }

    #[test]
    fn a_large_subdirectory_is_cut_when_reached_and_the_windows_tile_the_range() {
        let whole = range("/d/", "/d0");
        let subdirs = [
            subdir("a", 60, 10),
            subdir("a-x", 30, 29),
            subdir("big", 1000, 3),
            subdir("c", 50, 49),
            subdir("flat", 500, 499),
        ];
        let pieces = cut(b"/d", &whole, &subdirs, 100);
        assert!(tiles(&pieces, &whole), "{pieces:?}");
        let below: Vec<_> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Below { dir, range } => Some((dir.clone(), range.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            below,
            vec![(b"/d/big".to_vec(), range("/d/big/", "/d/big0"))]
        );
        // The flat directory's own entries are a piece of their own, and the next window
        // starts after them.
        assert!(pieces.contains(&Piece::Own(b"/d/flat".to_vec())));
        assert!(pieces.contains(&Piece::Window(after("/d/flat", "/d0"))));
        // "a-x" sorts between "/d/a" and "/d/a/", yet every window is a run of whole parts.
        assert!(pieces.contains(&Piece::Window(range("/d/", "/d/big/"))));
    }

    #[test]
    fn every_window_holds_at_most_a_window_but_a_directory_of_its_own() {
        let whole = range("/d/", "/d0");
        let subdirs: Vec<_> = (0..50)
            .map(|i| subdir(&format!("s{i:02}"), 30, 10))
            .collect();
        let pieces = cut(b"/d", &whole, &subdirs, 100);
        assert!(tiles(&pieces, &whole));
        // 50 subdirectories of 30 entries (10 own, 19 deeper): windows of at most 100.
        let mut sizes = Vec::new();
        for p in &pieces {
            let Piece::Window(r) = p else { panic!("{p:?}") };
            let held: u64 = subdirs
                .iter()
                .flat_map(|s| {
                    let path = [b"/d/".as_slice(), &s.name].concat();
                    [(below_prefix(&path), 19), (path, 10)]
                })
                .filter(|(k, _)| (*k > r.lo || (r.lo_included && *k == r.lo)) && *k < r.hi)
                .map(|(_, n)| n)
                .sum();
            sizes.push(held);
        }
        assert!(sizes.iter().all(|&n| n <= 100), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<u64>(), 50 * 29);
    }

    #[test]
    fn subdirectories_outside_the_range_are_ignored() {
        // The root's range starts after its own entries.
        let whole = after("/", "0");
        let pieces = cut(b"/", &whole, &[subdir("home", 500, 2)], 100);
        assert!(tiles(&pieces, &whole), "{pieces:?}");
        assert!(pieces.contains(&Piece::Below {
            dir: b"/home".to_vec(),
            range: range("/home/", "/home0")
        }));
    }
}
