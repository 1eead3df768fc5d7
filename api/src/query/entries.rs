//! Which entries of a snapshot a list reads ([`EntryFilter`]), a page of them by path or
//! largest first as list rows, the pages of a download after a key, an entry's own size, and
//! the ncdu export. A search pattern's condition ([`NamePattern::condition`]) is written here.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::entry::split_path;
use storage_tracker_proto::reports::extension_is_sql;
use storage_tracker_proto::sql::{quote_bytes, subtree};

use super::windows::Piece;
use super::{Principal, at_key};
use crate::params::{MatchKind, SearchField, SearchSort, StaleBy};
use crate::pattern::{NamePattern, glob_to_like, glob_to_regex};

/// The time columns a filter compares, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Time {
    Mtime,
    Atime,
}

impl Time {
    fn column(self) -> &'static str {
        match self {
            Self::Mtime => "mtime_ns",
            Self::Atime => "atime_ns",
        }
    }
}

impl From<StaleBy> for Time {
    fn from(by: StaleBy) -> Self {
        match by {
            StaleBy::Atime => Self::Atime,
            StaleBy::Mtime => Self::Mtime,
        }
    }
}

/// A user or group as a request names it: by number, or by a name the snapshot resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Id(u32),
    Name(String),
}

impl Who {
    /// A number is an id; anything else a name.
    pub fn parse(text: &str) -> Self {
        match text.parse::<u32>() {
            Ok(id) => Self::Id(id),
            Err(_) => Self::Name(text.to_owned()),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    /// Strictly before.
    Before,
    /// At or after.
    After,
}

/// Which entries of a snapshot: every condition given must hold (no condition: every entry),
/// in the order given. Built from what a request asked; each kind of condition is rendered in
/// one place, `EntryFilter::condition`.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter(Vec<Condition>);

#[derive(Debug, Clone)]
enum Condition {
    Files,
    Pattern(NamePattern, SearchField),
    MinSize(u64),
    MaxSize(u64),
    Time(Time, Bound, i64),
    Owner(Principal, Who),
    /// Of this kind (a word of the `kind` column's enum).
    Kind(&'static str),
    /// Regular files of one of these types, lowercased as `type_usage` stores them.
    Types(Vec<String>),
    Under(Vec<u8>),
    At(Vec<Vec<u8>>),
    Within(Piece),
}

impl EntryFilter {
    fn and(mut self, condition: Condition) -> Self {
        self.0.push(condition);
        self
    }

    /// Regular files only.
    pub fn files(self) -> Self {
        self.and(Condition::Files)
    }

    /// Whose name or path (`field`) matches `pattern`.
    pub fn matching(self, pattern: NamePattern, field: SearchField) -> Self {
        self.and(Condition::Pattern(pattern, field))
    }

    /// At least `bytes` large.
    pub fn min_size(self, bytes: u64) -> Self {
        self.and(Condition::MinSize(bytes))
    }

    /// At most `bytes` large.
    pub fn max_size(self, bytes: u64) -> Self {
        self.and(Condition::MaxSize(bytes))
    }

    /// Whose `time` is before `ns`.
    pub fn before(self, time: Time, ns: i64) -> Self {
        self.and(Condition::Time(time, Bound::Before, ns))
    }

    /// Whose `time` is at or after `ns`.
    pub fn after(self, time: Time, ns: i64) -> Self {
        self.and(Condition::Time(time, Bound::After, ns))
    }

    /// Owned by this user, or of this group.
    pub fn owned_by(self, principal: Principal, who: Who) -> Self {
        self.and(Condition::Owner(principal, who))
    }

    /// Regular files of this type: the extension, without the dot, in any case.
    pub fn of_type(self, extension: &str) -> Self {
        self.of_types(&[extension])
    }

    /// Regular files of any of these types (extensions, without the dot, in any case).
    pub fn of_types(self, extensions: &[&str]) -> Self {
        let types = extensions.iter().map(|e| e.to_ascii_lowercase()).collect();
        self.and(Condition::Types(types))
    }

    /// Of this kind: `file`, `dir`, `symlink`, … (the `kind` column's words).
    pub fn of_kind(self, kind: &'static str) -> Self {
        self.and(Condition::Kind(kind))
    }

    /// At `dir` or below it.
    pub fn under(self, dir: &[u8]) -> Self {
        self.and(Condition::Under(dir.to_vec()))
    }

    /// At `dir` or below it, in a snapshot of `root`: no condition at the root itself, below
    /// which every entry lies, so that a list of the whole snapshot reads no path.
    pub fn under_unless_root(self, dir: &[u8], root: &[u8]) -> Self {
        if dir == root { self } else { self.under(dir) }
    }

    /// At one of `paths`.
    pub fn at(self, paths: &[Vec<u8>]) -> Self {
        self.and(Condition::At(paths.to_vec()))
    }

    /// In one piece of a subtree cut for a download (not a [`Piece::Below`], which is cut into
    /// windows first).
    pub fn within(self, piece: Piece) -> Self {
        self.and(Condition::Within(piece))
    }

    /// The condition on `entries` of snapshot `snapshot_id` (owner names are looked up in its
    /// `principals`).
    fn condition(&self, db: &Database, snapshot_id: SnapshotId) -> String {
        if self.0.is_empty() {
            return "1".to_owned();
        }
        let all: Vec<String> = self
            .0
            .iter()
            .map(|condition| match condition {
                Condition::Files => "kind = 'file'".to_owned(),
                Condition::Pattern(pattern, field) => pattern.condition(match field {
                    SearchField::Name => "name",
                    SearchField::Path => "path",
                }),
                Condition::MinSize(min) => format!("size >= {min}"),
                Condition::MaxSize(max) => format!("size <= {max}"),
                Condition::Time(time, bound, ns) => {
                    let op = match bound {
                        Bound::Before => "<",
                        Bound::After => ">=",
                    };
                    format!("{} {op} {ns}", time.column())
                }
                Condition::Owner(principal, Who::Id(id)) => {
                    format!("{} = {id}", principal.id_column())
                }
                Condition::Owner(principal, Who::Name(name)) => format!(
                    "{} IN (SELECT id FROM {db}.principals WHERE snapshot_id = {snapshot_id} AND kind = {} AND name = {})",
                    principal.id_column(),
                    principal.literal(),
                    quote_bytes(name.as_bytes())
                ),
                Condition::Kind(kind) => format!("kind = '{kind}'"),
                Condition::Types(types) => match types.as_slice() {
                    [one] => format!("kind = 'file' AND {}", extension_is_sql("name", one.as_bytes())),
                    _ => {
                        let any: Vec<String> = types
                            .iter()
                            .map(|t| format!("({})", extension_is_sql("name", t.as_bytes())))
                            .collect();
                        format!("kind = 'file' AND ({})", any.join(" OR "))
                    }
                },
                Condition::Under(dir) => subtree(dir),
                Condition::At(paths) => {
                    let keys: Vec<String> = paths
                        .iter()
                        .map(|p| {
                            let (parent, name) = split_path(p);
                            format!("({}, {})", quote_bytes(parent), quote_bytes(name))
                        })
                        .collect();
                    format!("(parent_path, name) IN ({})", keys.join(", "))
                }
                Condition::Within(piece) => piece.condition(),
            })
            .collect();
        all.join(" AND ")
    }
}

impl NamePattern {
    /// The condition on `column` (`name` or `path`). Without regard to case both sides are
    /// lowercased (see [`crate::pattern`]).
    pub fn condition(&self, column: &str) -> String {
        let (kind, text, ignore_case) = self.matched();
        let haystack = if ignore_case {
            format!("lowerUTF8({column})")
        } else {
            column.to_owned()
        };
        match kind {
            MatchKind::Substring => {
                format!("position({haystack}, {}) > 0", quote_bytes(text.as_bytes()))
            }
            MatchKind::Glob => match glob_to_regex(&text) {
                // A bracket expression: LIKE has none, RE2 has the same classes.
                Some(regex) => format!("match({haystack}, {})", quote_bytes(regex.as_bytes())),
                None => format!(
                    "{haystack} LIKE {}",
                    quote_bytes(&glob_to_like(text.as_bytes()))
                ),
            },
            MatchKind::Regex => {
                let flag = if ignore_case { "(?i)" } else { "" };
                format!(
                    "match({haystack}, {})",
                    quote_bytes(format!("{flag}{text}").as_bytes())
                )
            }
        }
    }
}

/// The order of a page largest first: by size, ties by path.
const LARGEST_FIRST: &str = "size DESC, path ASC";

/// An order of a list of entries: a column, up or down, ties by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryOrder {
    pub by: SearchSort,
    pub descending: bool,
}

impl EntryOrder {
    /// Largest first.
    pub const LARGEST: Self = Self {
        by: SearchSort::Size,
        descending: true,
    };

    /// The `ORDER BY` clause's text.
    fn sql(self) -> String {
        let direction = if self.descending { "DESC" } else { "ASC" };
        let column = match self.by {
            SearchSort::Size => "size",
            SearchSort::Allocated => "allocated",
            SearchSort::Name => "name",
            SearchSort::Path => return format!("path {direction}"),
            SearchSort::Mtime => "mtime_ns",
            SearchSort::Atime => "atime_ns",
        };
        format!("{column} {direction}, path ASC")
    }
}

/// The columns of a [`super::tree::ChildRow`] of `entries` (or `large_entries`), with its own
/// sizes and times for its tree's.
const LIST_COLUMNS: &str = "name, path, kind, size, allocated, uid, gid, mode, nlink, mtime_ns, atime_ns, error_op, errno, symlink_target,
    size AS tree_bytes, allocated AS tree_allocated, toUInt64(0) AS tree_entries, toUInt64(0) AS tree_files,
    toUInt64(0) AS tree_dirs, mtime_ns AS tree_max_mtime_ns, atime_ns AS tree_max_atime_ns";

/// A page of the entries `filter` selects in `table` (`entries` or `large_entries`), in
/// `order`, as [`super::tree::ChildRow`]s with their own sizes (a list gives its directories
/// their trees' totals after, by key).
fn rows_of(
    db: &Database,
    table: &str,
    snapshot_id: SnapshotId,
    filter: &EntryFilter,
    order: &str,
    (limit, offset): (u64, u64),
) -> String {
    format!(
        "SELECT {LIST_COLUMNS}
FROM {db}.{table}
WHERE snapshot_id = {snapshot_id} AND {}
ORDER BY {order}
LIMIT {limit} OFFSET {offset}",
        filter.condition(db, snapshot_id)
    )
}

/// A page of the entries `filter` selects, by path.
pub fn list(
    db: &Database,
    snapshot_id: SnapshotId,
    filter: &EntryFilter,
    limit: u64,
    offset: u64,
) -> String {
    rows_of(db, "entries", snapshot_id, filter, "path", (limit, offset))
}

/// A page of the entries `filter` selects among the snapshot's largest (`large_entries`),
/// largest first.
pub fn list_large(
    db: &Database,
    snapshot_id: SnapshotId,
    filter: &EntryFilter,
    limit: u64,
    offset: u64,
) -> String {
    rows_of(
        db,
        "large_entries",
        snapshot_id,
        filter,
        LARGEST_FIRST,
        (limit, offset),
    )
}

/// The paths of a page of the entries `filter` selects, in `order`, in hexadecimal (read as
/// [`SORTED_PATHS_FORMAT`], whose `rows_before_limit_at_least` is how many entries the filter
/// selects: the statement sorts them all): their rows are looked up by key after. The filter
/// is the PREWHERE, so that the parents (and the rest) are read only in granules that hold a
/// match, not for every entry of the range; what the page shows is read for its rows alone.
pub fn sorted_paths(
    db: &Database,
    snapshot_id: SnapshotId,
    filter: &EntryFilter,
    order: EntryOrder,
    limit: u64,
    offset: u64,
) -> String {
    format!(
        "SELECT hex(path) FROM {db}.entries
PREWHERE {}
WHERE snapshot_id = {snapshot_id}
ORDER BY {}
LIMIT {limit} OFFSET {offset}",
        filter.condition(db, snapshot_id),
        order.sql()
    )
}

/// The format [`sorted_paths`] is read in: JSON, with the count of the rows before the limit.
pub const SORTED_PATHS_FORMAT: &str = "JSONCompact";

/// What [`sorted_paths`] answers in [`SORTED_PATHS_FORMAT`].
#[derive(Debug, Deserialize)]
pub struct SortedPaths {
    /// One path per row, in hexadecimal.
    pub data: Vec<(String,)>,
    /// The entries the filter selects: exact on one server, where every one of them is sorted;
    /// through a `Distributed` table, the rows the shards sent (at most the page's end each).
    pub rows_before_limit_at_least: Option<u64>,
}

/// One row of a download: an entry's key, path, sizes, owners and times.
#[derive(Debug, Row, Deserialize)]
pub struct DownloadRow {
    #[serde(with = "serde_bytes")]
    pub parent_path: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub size: u64,
    pub allocated: u64,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub atime_ns: i64,
}

/// A page of the entries `filter` selects in key order, after the key `after` (the last of the
/// page before), as [`DownloadRow`]s: what a streamed download reads, page by page.
pub fn page_after(
    db: &Database,
    snapshot_id: SnapshotId,
    filter: &EntryFilter,
    after: Option<(&[u8], &[u8])>,
    rows: u64,
    skip: u64,
) -> String {
    let keyset = after.map_or(String::new(), |(parent, name)| {
        let parent = quote_bytes(parent);
        format!(
            " AND parent_path >= {parent} AND (parent_path > {parent} OR name > {})",
            quote_bytes(name)
        )
    });
    format!(
        "SELECT parent_path, name, path, size, allocated, uid, gid, mtime_ns, atime_ns
FROM {db}.entries
WHERE snapshot_id = {snapshot_id} AND {}{keyset}
ORDER BY snapshot_id, parent_path, name
LIMIT {rows} OFFSET {skip}",
        filter.condition(db, snapshot_id)
    )
}

/// How many entries `filter` selects.
pub fn count(db: &Database, snapshot_id: SnapshotId, filter: &EntryFilter) -> String {
    format!(
        "SELECT count() FROM {db}.entries WHERE snapshot_id = {snapshot_id} AND {}",
        filter.condition(db, snapshot_id)
    )
}

/// The own size and allocated bytes of the entry at `path`.
pub fn entry_size(db: &Database, snapshot_id: SnapshotId, path: &[u8]) -> String {
    let (parent, name) = split_path(path);
    format!(
        "SELECT size, allocated FROM {db}.entries WHERE snapshot_id = {snapshot_id} AND {}",
        at_key(parent, name)
    )
}

/// The ncdu export of `dir` and everything below it, as
/// [`storage_tracker_proto::ncdu::NcduEntry`] rows in the order its writer needs (written in
/// `proto`, since `storage-aggregator export-ncdu` runs it too).
pub fn ncdu_export(db: &Database, snapshot_id: SnapshotId, dir: &[u8]) -> String {
    storage_tracker_proto::ncdu::export_sql(db, snapshot_id.get(), dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Database {
        Database::new("db").unwrap()
    }

    #[test]
    fn an_empty_filter_selects_every_entry() {
        assert_eq!(
            EntryFilter::default().condition(&db(), SnapshotId::new(1)),
            "1"
        );
    }

    #[test]
    fn a_filter_renders_its_conditions_in_the_order_given() {
        let pattern = NamePattern::new(MatchKind::Glob, "*.TXT", true).unwrap();
        let filter = EntryFilter::default()
            .matching(pattern, SearchField::Path)
            .min_size(2)
            .max_size(9)
            .before(Time::Mtime, -3)
            .after(Time::Atime, 5)
            .owned_by(Principal::User, Who::parse("o'neil"))
            .owned_by(Principal::Group, Who::parse("7"))
            .of_type("TXT")
            .under(b"/a");
        assert_eq!(
            filter.condition(&db(), SnapshotId::new(4)),
            format!(
                "lowerUTF8(path) LIKE '%.txt' AND size >= 2 AND size <= 9 AND mtime_ns < -3 \
                 AND atime_ns >= 5 AND uid IN (SELECT id FROM db.principals WHERE snapshot_id = 4 \
                 AND kind = 'user' AND name = 'o\\'neil') AND gid = 7 AND kind = 'file' AND {} AND {}",
                extension_is_sql("name", b"txt"),
                subtree(b"/a")
            )
        );
    }

    #[test]
    fn paths_are_looked_up_by_key() {
        let filter = EntryFilter::default().at(&[b"/a/b".to_vec(), b"/c".to_vec()]);
        assert_eq!(
            filter.condition(&db(), SnapshotId::new(1)),
            "(parent_path, name) IN (('/a', 'b'), ('/', 'c'))"
        );
        let sql = list(&db(), SnapshotId::new(3), &filter, 2, 0);
        assert!(sql.contains("WHERE snapshot_id = 3 AND (parent_path, name) IN"));
        assert!(sql.ends_with("ORDER BY path\nLIMIT 2 OFFSET 0"), "{sql}");
    }

    #[test]
    fn orders_break_ties_by_path_and_kinds_and_types_are_conditions() {
        let order = |by, descending| EntryOrder { by, descending }.sql();
        assert_eq!(order(SearchSort::Mtime, false), "mtime_ns ASC, path ASC");
        assert_eq!(order(SearchSort::Path, true), "path DESC");
        assert_eq!(order(SearchSort::Name, true), "name DESC, path ASC");
        let filter = EntryFilter::default().of_kind("dir");
        assert_eq!(filter.condition(&db(), SnapshotId::new(1)), "kind = 'dir'");
        let filter = EntryFilter::default().of_types(&["H5", "nc"]);
        let sql = filter.condition(&db(), SnapshotId::new(1));
        assert!(sql.starts_with("kind = 'file' AND ("), "{sql}");
        assert!(sql.contains(" OR "), "{sql}");
        assert!(sql.contains("'.h5'") && !sql.contains("H5"), "{sql}");
    }

    #[test]
    fn largest_first_filters_in_prewhere_and_reads_paths_only() {
        let filter = EntryFilter::default().files().under(b"/a");
        let sql = sorted_paths(
            &db(),
            SnapshotId::new(3),
            &filter,
            EntryOrder::LARGEST,
            10,
            20,
        );
        let condition = filter.condition(&db(), SnapshotId::new(3));
        assert_eq!(
            sql,
            format!(
                "SELECT hex(path) FROM db.entries\nPREWHERE {condition}\nWHERE snapshot_id = 3\n\
                 ORDER BY size DESC, path ASC\nLIMIT 10 OFFSET 20"
            )
        );
        // The largest entries kept at commit are read with the same filter and order.
        let kept = list_large(&db(), SnapshotId::new(3), &filter, 10, 20);
        assert!(kept.contains(&format!(
            "FROM db.large_entries\nWHERE snapshot_id = 3 AND {condition}\n\
             ORDER BY size DESC, path ASC\nLIMIT 10 OFFSET 20"
        )));
    }

    #[test]
    fn a_download_page_starts_after_the_last_key() {
        let filter = EntryFilter::default().files();
        let sql = page_after(
            &db(),
            SnapshotId::new(3),
            &filter,
            Some((b"/a", b"x")),
            10,
            0,
        );
        assert!(sql.contains(
            "WHERE snapshot_id = 3 AND kind = 'file' AND parent_path >= '/a' AND (parent_path > '/a' OR name > 'x')"
        ));
    }
}
