//! The snapshots resource: the committed snapshots a caller may read something of, one of
//! them, and the children of one of its directories.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use serde::{Deserialize, Serialize};

use storage_tracker_proto::SnapshotId;

use crate::access::Scope;
use crate::extract::{AtDirectory, Check, Checked, InSnapshot, Route};
use crate::listing::{Child, name_owners};
use crate::params::{ChildSort, Order, Word, page, query_params};
use crate::paths::Text;
use crate::pattern::refuse_nul;
use crate::query;
use crate::query::snapshots::{Committed, SnapshotRow};
use crate::query::tree::{ChildRow, DirTotalsRow};
use crate::timestamp::Iso;
use crate::{ApiError, AppState};

/// The routes of this resource.
pub fn routes() -> crate::resource::Routes {
    crate::resource::Routes::default()
        .get("/api/v1/snapshots", list_snapshots)
        .get("/api/v1/snapshots/{snapshot_id}", one_snapshot)
        .get("/api/v1/snapshots/{snapshot_id}/children", children)
}

#[derive(Debug, Serialize)]
struct Snapshot {
    snapshot_id: SnapshotId,
    filesystem_label: String,
    root_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_path_b64: Option<String>,
    hosts: Vec<String>,
    ranks: u32,
    scanner_version: String,
    started_at: u32,
    /// The same instant in nanoseconds.
    started_at_ns: i64,
    finished_at: u32,
    /// What the scan left out: "" for a full scan, else its options (e.g. `--max-depth=2`).
    scan_options: String,
    /// Entries and apparent bytes (hard links once) of what the caller may read.
    entries: u64,
    /// Entries that could not be read; for admin tokens only.
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<u64>,
    apparent_bytes: u64,
}

impl From<SnapshotRow> for Snapshot {
    fn from(r: SnapshotRow) -> Self {
        let root = Text::of(&r.root_path);
        Self {
            snapshot_id: r.snapshot_id,
            filesystem_label: r.filesystem_label,
            root_path: root.text,
            root_path_b64: root.b64,
            hosts: r.hosts,
            ranks: r.ranks,
            scanner_version: r.scanner_version,
            started_at: r.started_at,
            started_at_ns: r.started_at_ns,
            finished_at: r.finished_at,
            scan_options: r.scan_options,
            entries: r.entries,
            errors: Some(r.errors),
            apparent_bytes: r.apparent_bytes,
        }
    }
}

#[derive(Debug, Serialize)]
struct SnapshotList {
    total: u64,
    limit: u64,
    offset: u64,
    snapshots: Vec<Snapshot>,
}

/// A `label=` that names no label: refused, not taken as the label "".
pub(crate) fn refuse_empty_label(label: &str) -> Result<(), ApiError> {
    if label.is_empty() {
        return Err(ApiError::BadRequest(
            "label is empty: give a filesystem label (as the scans gave it, case and all), or leave label out".into(),
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
struct SnapshotsParams {
    limit: Option<u64>,
    offset: Option<u64>,
    /// Only the snapshots of this filesystem label.
    label: Option<String>,
}

/// `GET /api/v1/snapshots?label=…`: the committed snapshots the caller may read something of.
async fn list_snapshots(
    State(state): State<AppState>,
    Extension(access): Extension<Scope>,
    params: Result<Query<SnapshotsParams>, QueryRejection>,
) -> Result<Json<SnapshotList>, ApiError> {
    let params = query_params(params)?;
    let (limit, offset) = page(params.limit, params.offset)?;
    let label = params.label.as_deref();
    if let Some(l) = label {
        refuse_nul("label", l)?;
        refuse_empty_label(l)?;
    }
    let db = &state.database;
    let which = match &access {
        Scope::All => Committed::All,
        Scope::Prefixes(p) => Committed::Covering(p),
    };
    let total = state
        .client
        .query(&query::snapshots::count(db, which, label))
        .fetch_one::<u64>()
        .await?;
    let rows = state
        .client
        .query(&query::snapshots::newest_first(
            db,
            which,
            label,
            (limit, offset),
        ))
        .fetch_all::<SnapshotRow>()
        .await?;
    Ok(Json(SnapshotList {
        total,
        limit,
        offset,
        snapshots: shown_snapshots(&state, &access, rows).await?,
    }))
}

/// Snapshots as the caller may see them: entries and apparent bytes of the directories it may
/// read (from their rollups, so hard links count once), errors for admins only.
async fn shown_snapshots(
    state: &AppState,
    access: &Scope,
    rows: Vec<SnapshotRow>,
) -> Result<Vec<Snapshot>, ApiError> {
    let tops: Vec<(SnapshotId, Vec<u8>)> = rows
        .iter()
        .flat_map(|r| {
            access
                .tops_within(&r.root_path)
                .into_iter()
                .map(|t| (r.snapshot_id, t))
        })
        .collect();
    let keys: Vec<(SnapshotId, &[u8])> = tops.iter().map(|(id, t)| (*id, t.as_slice())).collect();
    let totals = match query::tree::dir_totals(&state.database, &keys) {
        Some(sql) => state.client.query(&sql).fetch_all::<DirTotalsRow>().await?,
        None => Vec::new(),
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let id = r.snapshot_id;
            let mut shown = Snapshot::from(r);
            let mine = totals.iter().filter(|t| t.snapshot_id == id);
            if access != &Scope::All {
                // The directories themselves, and everything below them.
                shown.entries = mine.clone().map(|t| t.entries + 1).sum();
                shown.errors = None;
                shown.apparent_bytes = mine.map(|t| t.bytes).sum();
            } else if let Some(root) = mine.into_iter().next() {
                shown.apparent_bytes = root.bytes;
            }
            shown
        })
        .collect())
}

/// `GET /api/v1/snapshots/{id}`: one snapshot, if the caller may read something of it.
async fn one_snapshot(
    State(state): State<AppState>,
    InSnapshot { snapshot, access }: InSnapshot,
) -> Result<Json<Snapshot>, ApiError> {
    let shown = shown_snapshots(&state, &access, vec![snapshot]).await?;
    Ok(Json(shown.into_iter().next().expect("one row in, one out")))
}

// Flat fields: serde_urlencoded cannot read numbers inside a flattened struct. The directory
// (`path`, `path_b64`) is read with the rest and checked by [`AtDirectory`], after these.
#[derive(Debug, Deserialize)]
struct ChildrenParams {
    /// The directory: read here with the rest of the query string, checked by [`AtDirectory`].
    #[serde(rename = "path")]
    _path: Option<String>,
    #[serde(rename = "path_b64")]
    _path_b64: Option<String>,
    #[serde(default)]
    sort: Word<ChildSort>,
    /// Descending by default, except by name.
    order: Option<Word<Order>>,
    limit: Option<u64>,
    offset: Option<u64>,
}

/// A page of children, in which order.
#[derive(Debug)]
struct ChildrenPage {
    limit: u64,
    offset: u64,
    sort: ChildSort,
    descending: bool,
}

impl Check for ChildrenParams {
    type Checked = ChildrenPage;
    const SNAPSHOT_ID_FIRST: bool = true;

    fn check(self, _: &Route) -> Result<ChildrenPage, ApiError> {
        let (limit, offset) = page(self.limit, self.offset)?;
        let sort = self.sort.checked()?;
        let descending = match self.order.map(|o| o.checked()).transpose()? {
            None => sort != ChildSort::Name,
            Some(order) => order == Order::Desc,
        };
        Ok(ChildrenPage {
            limit,
            offset,
            sort,
            descending,
        })
    }
}

#[derive(Debug, Serialize)]
struct Totals {
    bytes: u64,
    allocated: u64,
    entries: u64,
    files: u64,
    dirs: u64,
    max_mtime_ns: i64,
    max_atime_ns: i64,
    max_mtime: Iso,
    max_atime: Iso,
}

#[derive(Debug, Serialize)]
struct Children {
    snapshot_id: SnapshotId,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    directory: Totals,
    total: u64,
    limit: u64,
    offset: u64,
    children: Vec<Child>,
}

/// `GET /api/v1/snapshots/{id}/children?path=/dir`: a directory's entries, largest first.
async fn children(
    State(state): State<AppState>,
    Checked(ChildrenPage {
        limit,
        offset,
        sort,
        descending,
    }): Checked<ChildrenParams>,
    AtDirectory {
        snapshot,
        dir,
        rollup,
        ..
    }: AtDirectory,
) -> Result<Json<Children>, ApiError> {
    let snapshot_id = snapshot.snapshot_id;
    let db = &state.database;
    let total = state
        .client
        .query(&query::tree::count_children(db, snapshot_id, &dir))
        .fetch_one::<u64>()
        .await?;
    let rows = state
        .client
        .query(&query::tree::children(
            db,
            snapshot_id,
            &dir,
            sort,
            descending,
            limit,
            offset,
        ))
        .fetch_all::<ChildRow>()
        .await?;
    let mut children: Vec<Child> = rows.into_iter().map(Child::from).collect();
    name_owners(&state, snapshot_id, &mut children).await?;
    let shown = Text::of(&dir);
    Ok(Json(Children {
        snapshot_id,
        path: shown.text,
        path_b64: shown.b64,
        directory: Totals {
            bytes: rollup.bytes,
            allocated: rollup.allocated,
            entries: rollup.entries,
            files: rollup.files,
            dirs: rollup.dirs,
            max_mtime_ns: rollup.max_mtime_ns,
            max_atime_ns: rollup.max_atime_ns,
            max_mtime: Iso(rollup.max_mtime_ns),
            max_atime: Iso(rollup.max_atime_ns),
        },
        total,
        limit,
        offset,
        children,
    }))
}
