//! Lists of entries, as every list route answers them: an entry's JSON form (`Child`), a page
//! of entries (`Listing`) with the trees' totals of its directories and the names of its
//! owners, each found by key (the statements are in [`crate::query`]).

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use storage_tracker_proto::{EntryKind, ErrorOp, SnapshotId};

use crate::paths::Text;
use crate::query;
use crate::query::entries::{EntryFilter, EntryOrder, SortedPaths};
use crate::query::reports::PrincipalRow;
use crate::query::tree::{ChildRow, DirTotalsRow};
use crate::timestamp::Iso;
use crate::{ApiError, AppState};

#[derive(Debug, Serialize)]
pub(crate) struct EntryError {
    op: &'static str,
    errno: i32,
}

#[derive(Debug, Serialize)]
pub(crate) struct Child {
    pub(crate) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_b64: Option<String>,
    pub(crate) path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    /// The path's raw bytes.
    #[serde(skip)]
    raw_path: Vec<u8>,
    pub(crate) kind: &'static str,
    /// Recursive apparent bytes for a directory (itself included), the size otherwise.
    pub(crate) bytes: u64,
    pub(crate) allocated: u64,
    /// Entries, files and directories below a directory; 0 otherwise.
    pub(crate) entries: u64,
    pub(crate) files: u64,
    pub(crate) dirs: u64,
    /// Newest mtime and atime in a directory's tree; the entry's own otherwise.
    pub(crate) max_mtime_ns: i64,
    pub(crate) max_atime_ns: i64,
    /// The same as ISO 8601 strings (see [`crate::timestamp`]).
    pub(crate) max_mtime: Iso,
    pub(crate) max_atime: Iso,
    pub(crate) size: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
    pub(crate) nlink: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) atime_ns: i64,
    pub(crate) mtime: Iso,
    pub(crate) atime: Iso,
    /// Names of the owner and group, where the scan could resolve them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) symlink_target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<EntryError>,
}

impl Child {
    pub(crate) fn path_bytes(&self) -> &[u8] {
        &self.raw_path
    }
}

impl From<ChildRow> for Child {
    fn from(r: ChildRow) -> Self {
        let (name, path) = (Text::of(&r.name), Text::of(&r.path));
        let kind = EntryKind::from_code(r.kind as u8).unwrap_or(EntryKind::Unknown);
        let error = ErrorOp::from_code(r.error_op as u8)
            .filter(|op| *op != ErrorOp::None)
            .map(|op| EntryError {
                op: op.name(),
                errno: r.errno,
            });
        Self {
            name: name.text,
            name_b64: name.b64,
            path: path.text,
            path_b64: path.b64,
            raw_path: r.path,
            kind: kind.name(),
            bytes: r.tree_bytes,
            allocated: r.tree_allocated,
            entries: r.tree_entries,
            files: r.tree_files,
            dirs: r.tree_dirs,
            max_mtime_ns: r.tree_max_mtime_ns,
            max_atime_ns: r.tree_max_atime_ns,
            max_mtime: Iso(r.tree_max_mtime_ns),
            max_atime: Iso(r.tree_max_atime_ns),
            size: r.size,
            uid: r.uid,
            gid: r.gid,
            mode: r.mode,
            nlink: r.nlink,
            mtime_ns: r.mtime_ns,
            atime_ns: r.atime_ns,
            mtime: Iso(r.mtime_ns),
            atime: Iso(r.atime_ns),
            user: None,
            group: None,
            symlink_target: (kind == EntryKind::Symlink)
                .then(|| String::from_utf8_lossy(&r.symlink_target).into_owned()),
            error,
        }
    }
}

/// User and group names of a snapshot's owners, as the scan resolved them.
#[derive(Debug, Default)]
pub(crate) struct OwnerNames(HashMap<(i8, u32), String>);

impl OwnerNames {
    /// The names of `uids` and `gids` (one lookup by key; none when both are empty).
    pub(crate) async fn of(
        state: &AppState,
        snapshot_id: SnapshotId,
        uids: impl IntoIterator<Item = u32>,
        gids: impl IntoIterator<Item = u32>,
    ) -> Result<Self, ApiError> {
        let uids: Vec<u32> = uids
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let gids: Vec<u32> = gids
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if uids.is_empty() && gids.is_empty() {
            return Ok(Self::default());
        }
        let sql = query::reports::principals(&state.database, snapshot_id, &uids, &gids);
        let rows = state.client.query(&sql).fetch_all::<PrincipalRow>().await?;
        Ok(Self(
            rows.into_iter()
                .filter(|p| !p.name.is_empty())
                .map(|p| ((p.kind, p.id), p.name))
                .collect(),
        ))
    }

    pub(crate) fn user(&self, uid: u32) -> Option<&str> {
        self.0.get(&(1, uid)).map(String::as_str)
    }

    pub(crate) fn group(&self, gid: u32) -> Option<&str> {
        self.0.get(&(2, gid)).map(String::as_str)
    }
}

/// Fills in the user and group names of a page of entries.
pub(crate) async fn name_owners(
    state: &AppState,
    snapshot_id: SnapshotId,
    children: &mut [Child],
) -> Result<(), ApiError> {
    let names = OwnerNames::of(
        state,
        snapshot_id,
        children.iter().map(|c| c.uid),
        children.iter().map(|c| c.gid),
    )
    .await?;
    for c in children {
        c.user = names.user(c.uid).map(str::to_owned);
        c.group = names.group(c.gid).map(str::to_owned);
    }
    Ok(())
}

/// The entries at `paths`, in that order, with their trees' totals (two lookups by key).
pub(crate) async fn entries_at(
    state: &AppState,
    snapshot_id: SnapshotId,
    paths: &[Vec<u8>],
) -> Result<Vec<Child>, ApiError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let sql = query::entries::list(
        &state.database,
        snapshot_id,
        &EntryFilter::default().at(paths),
        paths.len() as u64,
        0,
    );
    let mut found = listed(state, snapshot_id, &sql).await?;
    let rank = |c: &Child| paths.iter().position(|p| p.as_slice() == c.path_bytes());
    found.sort_by_key(rank);
    Ok(found)
}

/// The entries a statement selects as [`ChildRow`]s, with their directories' totals and
/// their owners' names.
pub(crate) async fn listed(
    state: &AppState,
    snapshot_id: SnapshotId,
    sql: &str,
) -> Result<Vec<Child>, ApiError> {
    let rows = state.client.query(sql).fetch_all::<ChildRow>().await?;
    completed(state, snapshot_id, rows).await
}

/// A page of the entries `filter` selects, largest first, and how many it selects in all
/// (`known` when the caller has it: it is not counted then). The page comes from the
/// snapshot's largest entries when they hold all of it (then it is exact: every entry left out
/// is smaller than each of them), the total counted beside it; else the page's paths come from
/// all its entries, then their rows by key, and on one server that statement's own count of
/// the rows it sorted is the total.
pub(crate) async fn listed_largest(
    state: &AppState,
    snapshot_id: SnapshotId,
    filter: &EntryFilter,
    page: (u64, u64),
    known: Option<u64>,
) -> Result<(Vec<Child>, u64), ApiError> {
    listed_sorted(state, snapshot_id, filter, EntryOrder::LARGEST, page, known).await
}

/// A page of the entries `filter` selects in `order`, and how many it selects in all, as
/// [`listed_largest`] reads them; only a page largest first can come from the largest entries.
pub(crate) async fn listed_sorted(
    state: &AppState,
    snapshot_id: SnapshotId,
    filter: &EntryFilter,
    order: EntryOrder,
    (limit, offset): (u64, u64),
    known: Option<u64>,
) -> Result<(Vec<Child>, u64), ApiError> {
    let db = &state.database;
    let total = async |sorted: Option<u64>| match (known, sorted) {
        (Some(total), _) => Ok(total),
        (None, Some(sorted)) if !state.distributed().await? => Ok(sorted),
        (None, _) => counted(state, snapshot_id, filter).await,
    };
    if order == EntryOrder::LARGEST {
        let sql = query::entries::list_large(db, snapshot_id, filter, limit, offset);
        let rows = state.client.query(&sql).fetch_all::<ChildRow>().await?;
        if rows.len() as u64 == limit {
            return tokio::try_join!(completed(state, snapshot_id, rows), total(None));
        }
    }
    let sql = query::entries::sorted_paths(db, snapshot_id, filter, order, limit, offset);
    let answer = state
        .client
        .query(&sql)
        .fetch_bytes(query::entries::SORTED_PATHS_FORMAT)?
        .collect()
        .await?;
    let unreadable = |e: String| ApiError::Database(clickhouse::error::Error::DataFormat(e.into()));
    let page: SortedPaths =
        serde_json::from_slice(&answer).map_err(|e| unreadable(e.to_string()))?;
    let paths = page
        .data
        .iter()
        .map(|(hex,)| from_hex(hex))
        .collect::<Option<Vec<Vec<u8>>>>()
        .ok_or_else(|| unreadable("a path not in hex".into()))?;
    let entries = entries_at(state, snapshot_id, &paths).await?;
    Ok((entries, total(page.rows_before_limit_at_least).await?))
}

/// How many entries `filter` selects.
async fn counted(
    state: &AppState,
    snapshot_id: SnapshotId,
    filter: &EntryFilter,
) -> Result<u64, ApiError> {
    let sql = query::entries::count(&state.database, snapshot_id, filter);
    Ok(state.client.query(&sql).fetch_one().await?)
}

/// The bytes `hex` spells (two digits a byte, as ClickHouse's `hex` writes them).
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| (c as char).to_digit(16);
    let hex = hex.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|pair| Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect()
}

/// `rows` with their directories' totals and their owners' names.
async fn completed(
    state: &AppState,
    snapshot_id: SnapshotId,
    mut rows: Vec<ChildRow>,
) -> Result<Vec<Child>, ApiError> {
    with_tree_totals(state, snapshot_id, &mut rows).await?;
    let mut children: Vec<Child> = rows.into_iter().map(Child::from).collect();
    name_owners(state, snapshot_id, &mut children).await?;
    Ok(children)
}

/// Gives the directories of a page of entries their trees' totals (one lookup by key).
async fn with_tree_totals(
    state: &AppState,
    snapshot_id: SnapshotId,
    rows: &mut [ChildRow],
) -> Result<(), ApiError> {
    let dir_code = storage_tracker_proto::EntryKind::Dir as i8;
    let keys: Vec<(SnapshotId, &[u8])> = rows
        .iter()
        .filter(|r| r.kind == dir_code && r.tree_entries == 0)
        .map(|r| (snapshot_id, r.path.as_slice()))
        .collect();
    let Some(sql) = query::tree::dir_totals(&state.database, &keys) else {
        return Ok(());
    };
    let totals = state.client.query(&sql).fetch_all::<DirTotalsRow>().await?;
    for r in rows.iter_mut().filter(|r| r.kind == dir_code) {
        if let Some(t) = totals.iter().find(|t| t.path == r.path) {
            r.tree_bytes = t.bytes;
            r.tree_allocated = t.allocated;
            r.tree_entries = t.entries;
            r.tree_files = t.files;
            r.tree_dirs = t.dirs;
            r.tree_max_mtime_ns = t.max_mtime_ns;
            r.tree_max_atime_ns = t.max_atime_ns;
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub(crate) struct Listing {
    snapshot_id: SnapshotId,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    /// How many entries the list holds in all (top files and directories: from the
    /// directory's rollup; search and stale files: counted with the page).
    total: u64,
    limit: u64,
    offset: u64,
    entries: Vec<Child>,
}

impl Listing {
    pub(crate) fn new(
        snapshot_id: SnapshotId,
        dir: &[u8],
        (limit, offset): (u64, u64),
        (entries, total): (Vec<Child>, u64),
    ) -> Self {
        let shown = Text::of(dir);
        Self {
            snapshot_id,
            path: shown.text,
            path_b64: shown.b64,
            total,
            limit,
            offset,
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::from_hex;

    #[test]
    fn hex_paths_decode_to_their_bytes() {
        assert_eq!(from_hex("2F61FF00").unwrap(), b"/a\xff\x00");
        assert_eq!(from_hex("2f61").unwrap(), b"/a");
        assert_eq!(from_hex("").unwrap(), b"");
        for bad in ["2F6", "2G", "é0"] {
            assert_eq!(from_hex(bad), None, "{bad}");
        }
    }
}
