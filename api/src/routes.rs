//! The HTTP routes. Every list is paged with `limit` (1..=1000, default 100) and `offset`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use storage_tracker_proto::{EntryKind, ErrorOp};

use crate::paths::Text;
use std::collections::BTreeSet;

use crate::access::Scope;
use crate::extract::{AtDirectory, InSnapshot};
use crate::params::{ChildSort, Order};
use crate::query::{self, ChildRow, DirTotalsRow, PrincipalRow, SnapshotRow};
use crate::{ApiError, AppState};

pub const MAX_PAGE: u64 = 1000;
const DEFAULT_PAGE: u64 = 100;
const MAX_OFFSET: u64 = 100_000_000;

/// The router of the whole API and the UI.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(crate::ui::serve))
        .route("/assets/{*file}", get(crate::ui::serve))
        .route("/health", get(health))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/access", get(crate::access::describe))
        .route("/api/v1/snapshots", get(list_snapshots))
        .route("/api/v1/snapshots/{snapshot_id}", get(one_snapshot))
        .route("/api/v1/snapshots/{snapshot_id}/children", get(children))
        .route(
            "/api/v1/snapshots/{snapshot_id}/entry",
            get(crate::reports::entry),
        )
        .route(
            "/api/v1/snapshots/{snapshot_id}/top",
            get(crate::reports::top),
        )
        .route(
            "/api/v1/snapshots/{snapshot_id}/usage",
            get(crate::reports::usage),
        )
        .route(
            "/api/v1/snapshots/{snapshot_id}/histograms",
            get(crate::reports::histograms),
        )
        .route(
            "/api/v1/snapshots/{snapshot_id}/stale",
            get(crate::reports::stale),
        )
        .route(
            "/api/v1/snapshots/{snapshot_id}/search",
            get(crate::reports::search),
        )
        .route(
            "/api/v1/snapshots/{snapshot_id}/treemap",
            get(crate::reports::treemap),
        )
        .route(
            "/api/v1/snapshots/{snapshot_id}/export/ncdu",
            get(crate::export::ncdu),
        )
        .route("/api/v1/history", get(crate::history::history))
        .route("/api/v1/growth", get(crate::history::growth))
        .route("/api/v1/growth/owners", get(crate::history::owner_growth))
        .fallback(|| async {
            ApiError::NotFound("no such route; the API lives under /api/v1".into())
        })
        // Route layers see the matched route; the later one runs first, so refusals by
        // `authorize` are counted too. The fallback (404) needs neither.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::access::authorize,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::record,
        ))
        .with_state(state)
}

async fn openapi() -> Json<serde_json::Value> {
    Json(crate::openapi::document())
}

#[derive(Debug, Deserialize)]
struct Page {
    limit: Option<u64>,
    offset: Option<u64>,
}

impl Page {
    fn checked(&self) -> Result<(u64, u64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}, got {limit}"
            )));
        }
        let offset = self.offset.unwrap_or(0);
        if offset > MAX_OFFSET {
            return Err(ApiError::BadRequest(format!(
                "offset must be at most {MAX_OFFSET}, got {offset}"
            )));
        }
        Ok((limit, offset))
    }
}

/// `limit` and `offset` checked.
pub(crate) fn page(limit: Option<u64>, offset: Option<u64>) -> Result<(u64, u64), ApiError> {
    Page { limit, offset }.checked()
}

pub(crate) fn query_params<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    clickhouse: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

/// Ok only when the routes can answer: ClickHouse answers, and the database and its tables
/// are there for the API's user.
async fn health(State(state): State<AppState>) -> (axum::http::StatusCode, Json<Health>) {
    let version = state
        .client
        .query("SELECT version()")
        .fetch_one::<String>()
        .await;
    let tables = match &version {
        Ok(_) => state
            .client
            .query(&query::count_committed_snapshots(&state.database, None))
            .fetch_one::<u64>()
            .await
            .map(|_| ()),
        Err(_) => Ok(()),
    };
    match (version, tables) {
        (Ok(version), Err(e)) => {
            tracing::warn!(
                "health check: the database {} cannot be read: {e}",
                state.database
            );
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable",
                    clickhouse: version,
                    problem: Some(format!(
                        "the database {} or its tables cannot be read by the API's user; \
                         has the aggregator created it (storage-aggregator serve)?",
                        state.database
                    )),
                }),
            )
        }
        (Ok(version), Ok(())) => (
            axum::http::StatusCode::OK,
            Json(Health {
                status: "ok",
                clickhouse: version,
                problem: None,
            }),
        ),
        (Err(e), _) => {
            tracing::warn!("health check: ClickHouse unreachable: {e}");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable",
                    clickhouse: "unreachable".into(),
                    problem: Some("ClickHouse does not answer".into()),
                }),
            )
        }
    }
}

#[derive(Debug, Serialize)]
struct Snapshot {
    snapshot_id: u64,
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

/// `GET /api/v1/snapshots`: the committed snapshots the caller may read something of.
async fn list_snapshots(
    State(state): State<AppState>,
    Extension(access): Extension<Scope>,
    page: Result<Query<Page>, QueryRejection>,
) -> Result<Json<SnapshotList>, ApiError> {
    let (limit, offset) = query_params(page)?.checked()?;
    let db = &state.database;
    let prefixes = match &access {
        Scope::All => None,
        Scope::Prefixes(p) => Some(p.as_slice()),
    };
    let total = state
        .client
        .query(&query::count_committed_snapshots(db, prefixes))
        .fetch_one::<u64>()
        .await?;
    let rows = state
        .client
        .query(&query::committed_snapshots(db, prefixes, limit, offset))
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
    let tops: Vec<(u64, Vec<u8>)> = rows
        .iter()
        .flat_map(|r| {
            access
                .tops_within(&r.root_path)
                .into_iter()
                .map(|t| (r.snapshot_id, t))
        })
        .collect();
    let keys: Vec<(u64, &[u8])> = tops.iter().map(|(id, t)| (*id, t.as_slice())).collect();
    let totals = match query::dir_totals(&state.database, &keys) {
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
// (`path`, `path_b64`) is read by [`AtDirectory`].
#[derive(Debug, Deserialize)]
struct ChildrenParams {
    #[serde(default)]
    sort: ChildSort,
    /// Descending by default, except by name.
    order: Option<Order>,
    limit: Option<u64>,
    offset: Option<u64>,
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
}

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
    pub(crate) size: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
    pub(crate) nlink: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) atime_ns: i64,
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
            size: r.size,
            uid: r.uid,
            gid: r.gid,
            mode: r.mode,
            nlink: r.nlink,
            mtime_ns: r.mtime_ns,
            atime_ns: r.atime_ns,
            user: None,
            group: None,
            symlink_target: (kind == EntryKind::Symlink)
                .then(|| String::from_utf8_lossy(&r.symlink_target).into_owned()),
            error,
        }
    }
}

#[derive(Debug, Serialize)]
struct Children {
    snapshot_id: u64,
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
    at: AtDirectory,
    params: Result<Query<ChildrenParams>, QueryRejection>,
) -> Result<Json<Children>, ApiError> {
    let params = query_params(params)?;
    let (limit, offset) = Page {
        limit: params.limit,
        offset: params.offset,
    }
    .checked()?;
    let sort = params.sort;
    let descending = match params.order {
        None => sort != ChildSort::Name,
        Some(order) => order == Order::Desc,
    };
    let AtDirectory {
        snapshot,
        dir,
        rollup,
        ..
    } = at;
    let snapshot_id = snapshot.snapshot_id;
    let db = &state.database;
    let total = state
        .client
        .query(&query::count_children(db, snapshot_id, &dir))
        .fetch_one::<u64>()
        .await?;
    let rows = state
        .client
        .query(&query::children(
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
        },
        total,
        limit,
        offset,
        children,
    }))
}

/// Fills in the user and group names of a page of entries.
pub(crate) async fn name_owners(
    state: &AppState,
    snapshot_id: u64,
    children: &mut [Child],
) -> Result<(), ApiError> {
    let uids: BTreeSet<u32> = children.iter().map(|c| c.uid).collect();
    let gids: BTreeSet<u32> = children.iter().map(|c| c.gid).collect();
    if children.is_empty() {
        return Ok(());
    }
    let (uids, gids): (Vec<u32>, Vec<u32>) =
        (uids.into_iter().collect(), gids.into_iter().collect());
    let sql = query::principals(&state.database, snapshot_id, &uids, &gids);
    let rows = state.client.query(&sql).fetch_all::<PrincipalRow>().await?;
    let named = |kind, id| {
        rows.iter()
            .find(|p| p.kind == kind && p.id == id && !p.name.is_empty())
            .map(|p| p.name.clone())
    };
    for c in children {
        c.user = named(1, c.uid);
        c.group = named(2, c.gid);
    }
    Ok(())
}
