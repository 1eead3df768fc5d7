//! History and growth: the series of one directory across snapshots, and what changed between
//! two snapshots per directory and per owner. Both read only the rollups, the reports and the
//! children of one directory, all found through the tables' sort keys, so they cost the same
//! whatever the snapshot's size.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Query, State};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::entry::split_path;
use storage_tracker_proto::scan_options::describe;

use crate::access::Scope;
use crate::params::{OwnerBy, Word, query_params};
use crate::paths::{PathParam, Text};
use crate::pattern::refuse_nul;
use crate::query;
use crate::query::growth::{ChangeRow, OwnerChangeRow};
use crate::query::snapshots::SnapshotRow;
use crate::timestamp::Iso;
use crate::{ApiError, AppState};

/// The routes of this resource.
pub fn routes() -> crate::resource::Routes {
    crate::resource::Routes::default()
        .get("/api/v1/history", history)
        .get("/api/v1/growth", growth)
        .get("/api/v1/growth/owners", owner_growth)
}

#[derive(Debug, Row, Deserialize, Serialize)]
pub struct Point {
    pub snapshot_id: SnapshotId,
    pub started_at: u32,
    /// The scan's start to the nanosecond (points a second apart stay in order).
    pub started_at_ns: i64,
    pub bytes: u64,
    pub allocated: u64,
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub max_mtime_ns: i64,
    /// What the scan left out ("" for a full scan).
    pub scan_options: String,
}

/// A point as answered: its newest mtime as an ISO 8601 string too (see [`crate::timestamp`]).
#[derive(Debug, Serialize)]
pub struct ShownPoint {
    #[serde(flatten)]
    point: Point,
    max_mtime: Iso,
}

impl From<Point> for ShownPoint {
    fn from(point: Point) -> Self {
        let max_mtime = Iso(point.max_mtime_ns);
        Self { point, max_mtime }
    }
}

/// What a person should know before comparing these snapshots' totals: the ones whose scans
/// left out different parts of the tree. Empty when every scan covered the same.
fn coverage_warnings<'a>(points: impl IntoIterator<Item = (SnapshotId, &'a str)>) -> Vec<String> {
    let mut by_options: Vec<(&str, Vec<SnapshotId>)> = Vec::new();
    for (id, options) in points {
        match by_options.iter_mut().find(|(o, _)| *o == options) {
            Some((_, ids)) => ids.push(id),
            None => by_options.push((options, vec![id])),
        }
    }
    if by_options.len() < 2 {
        return Vec::new();
    }
    let groups: Vec<String> = by_options
        .iter()
        .map(|(options, ids)| {
            let ids: Vec<String> = ids.iter().map(SnapshotId::to_string).collect();
            let noun = if ids.len() == 1 {
                "snapshot"
            } else {
                "snapshots"
            };
            format!("{noun} {} {}", ids.join(", "), describe(options))
        })
        .collect();
    vec![format!(
        "these scans did not cover the same tree, so their totals differ by more than growth: {}",
        groups.join("; ")
    )]
}

#[derive(Debug, Row, Deserialize, Serialize, Default)]
pub struct ChangeSummary {
    pub changed: u64,
    pub added: u64,
    pub added_bytes: u64,
    pub added_files: u64,
    pub removed: u64,
    pub removed_bytes: u64,
    pub removed_files: u64,
}

#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    path: Option<String>,
    path_b64: Option<String>,
    /// A snapshot of the filesystem whose history is asked; needed when snapshots of more than
    /// one filesystem hold the directory.
    snapshot: Option<SnapshotId>,
    /// The label of that filesystem: another way to pick it.
    label: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct History {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    filesystem_label: String,
    root_path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    root_path_b64: Option<String>,
    points: Vec<ShownPoint>,
    /// Why some points should not be compared as they are (scans with different options).
    warnings: Vec<String>,
}

fn required_path(path: Option<String>, path_b64: Option<String>) -> Result<Vec<u8>, ApiError> {
    PathParam { path, path_b64 }
        .bytes()?
        .ok_or_else(|| ApiError::BadRequest("give the directory as path= or path_b64=".into()))
}

/// The filesystem whose history of `dir` is asked: that of `snapshot`, or the one filesystem
/// whose snapshots hold the directory (of `label`, when given).
async fn history_filesystem(
    state: &AppState,
    access: &Scope,
    (snapshot, label): (Option<SnapshotId>, Option<&str>),
    dir: &[u8],
) -> Result<SnapshotRow, ApiError> {
    if let Some(id) = snapshot {
        let of = crate::extract::committed(state, access, id).await?;
        return match label {
            Some(label) if label != of.filesystem_label => Err(ApiError::BadRequest(format!(
                "snapshot {id} is of the filesystem {}, not of the label {label:?}: give one of \
                 snapshot= and label=, or both of one filesystem",
                of.filesystem()
            ))),
            _ => Ok(of),
        };
    }
    let (parent, name) = split_path(dir);
    let holding = state
        .client
        .query(&query::snapshots::holding_directory(
            &state.database,
            parent,
            name,
        ))
        .fetch_all::<SnapshotRow>()
        .await?;
    let mut filesystems: Vec<SnapshotRow> = Vec::new();
    for s in holding {
        let labelled = label.is_none_or(|l| l == s.filesystem_label);
        if labelled && !filesystems.iter().any(|f| f.same_filesystem(&s)) {
            filesystems.push(s);
        }
    }
    match filesystems.len() {
        0 => Err(match label {
            Some(label) => ApiError::NotFound(format!(
                "no committed snapshot of the label {label:?} has a directory {:?}",
                String::from_utf8_lossy(dir)
            )),
            None => no_directory(dir),
        }),
        1 => Ok(filesystems.pop().expect("one")),
        _ => Err(ApiError::BadRequest(format!(
            "{} is in snapshots of {} filesystems ({}); a history follows one: give snapshot= \
             with a snapshot of the one you mean, or label= with its label",
            String::from_utf8_lossy(dir),
            filesystems.len(),
            filesystems
                .iter()
                .map(|f| format!("{} in snapshot {}", f.filesystem(), f.snapshot_id))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn no_directory(dir: &[u8]) -> ApiError {
    ApiError::NotFound(format!(
        "no committed snapshot has a directory {:?}",
        String::from_utf8_lossy(dir)
    ))
}

/// `GET /api/v1/history?path=/dir&snapshot=ID`: the directory's totals in every committed
/// snapshot of one filesystem (the same label and root).
pub async fn history(
    State(state): State<AppState>,
    Extension(access): Extension<Scope>,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Json<History>, ApiError> {
    let p = query_params(params)?;
    let dir = required_path(p.path, p.path_b64)?;
    access.check(&dir)?;
    if let Some(label) = &p.label {
        refuse_nul("label", label)?;
        crate::snapshots::refuse_empty_label(label)?;
    }
    let filesystem =
        history_filesystem(&state, &access, (p.snapshot, p.label.as_deref()), &dir).await?;
    let points = state
        .client
        .query(&query::growth::history(&state.database, &filesystem, &dir))
        .fetch_all::<Point>()
        .await?;
    if points.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no committed snapshot of {} has a directory {:?}",
            filesystem.filesystem(),
            String::from_utf8_lossy(&dir)
        )));
    }
    let warnings = coverage_warnings(
        points
            .iter()
            .map(|p| (p.snapshot_id, p.scan_options.as_str())),
    );
    let (shown, root) = (Text::of(&dir), Text::of(&filesystem.root_path));
    Ok(Json(History {
        path: shown.text,
        path_b64: shown.b64,
        filesystem_label: filesystem.filesystem_label,
        root_path: root.text,
        root_path_b64: root.b64,
        points: points.into_iter().map(ShownPoint::from).collect(),
        warnings,
    }))
}

#[derive(Debug, Deserialize)]
pub struct GrowthParams {
    from: Option<SnapshotId>,
    to: Option<SnapshotId>,
    path: Option<String>,
    path_b64: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Change {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_b64: Option<String>,
    /// added, removed or changed.
    status: &'static str,
    kind: String,
    bytes_from: u64,
    bytes_to: u64,
    files_from: u64,
    files_to: u64,
}

#[derive(Debug, Serialize)]
pub struct Growth {
    from: SnapshotId,
    to: SnapshotId,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    /// Why the changes may not all be growth (scans with different options).
    warnings: Vec<String>,
    summary: ChangeSummary,
    /// How many children changed in all: added, removed or changed in place.
    total: u64,
    limit: u64,
    offset: u64,
    changes: Vec<Change>,
}

/// Both snapshots, committed, of the same filesystem; `from` before `to` is not required.
async fn two_committed(
    state: &AppState,
    access: &Scope,
    from: Option<SnapshotId>,
    to: Option<SnapshotId>,
) -> Result<(SnapshotRow, SnapshotRow), ApiError> {
    let (Some(from), Some(to)) = (from, to) else {
        return Err(ApiError::BadRequest(
            "give both snapshots: from= and to=".into(),
        ));
    };
    let (a, b) = (
        crate::extract::committed(state, access, from).await?,
        crate::extract::committed(state, access, to).await?,
    );
    if !a.same_filesystem(&b) {
        return Err(ApiError::BadRequest(format!(
            "snapshot {from} is of {} and snapshot {to} of {}: a comparison needs two snapshots of \
             the same filesystem (the same label and root; see GET /api/v1/snapshots)",
            a.filesystem(),
            b.filesystem()
        )));
    }
    Ok((a, b))
}

/// The warnings of comparing `a` with `b`.
fn comparison_warnings(a: &SnapshotRow, b: &SnapshotRow) -> Vec<String> {
    coverage_warnings([
        (a.snapshot_id, a.scan_options.as_str()),
        (b.snapshot_id, b.scan_options.as_str()),
    ])
}

/// `GET /api/v1/growth?from=A&to=B&path=/dir`: what changed below the directory's children.
pub async fn growth(
    State(state): State<AppState>,
    Extension(access): Extension<Scope>,
    params: Result<Query<GrowthParams>, QueryRejection>,
) -> Result<Json<Growth>, ApiError> {
    let p = query_params(params)?;
    let (limit, offset) = crate::params::page(p.limit, p.offset)?;
    let dir = required_path(p.path, p.path_b64)?;
    access.check(&dir)?;
    let (a, b) = two_committed(&state, &access, p.from, p.to).await?;
    let (from, to) = (a.snapshot_id, b.snapshot_id);
    let db = &state.database;
    let (parent, name) = split_path(&dir);
    let found = state
        .client
        .query(&query::snapshots::count_holding(
            db,
            [from, to],
            parent,
            name,
        ))
        .fetch_one::<u64>()
        .await?;
    if found == 0 {
        return Err(ApiError::NotFound(format!(
            "neither snapshot {from} nor snapshot {to} has a directory {:?}",
            String::from_utf8_lossy(&dir)
        )));
    }
    let summary = state
        .client
        .query(&query::growth::growth_summary(db, from, to, &dir))
        .fetch_optional::<ChangeSummary>()
        .await?
        .unwrap_or_default();
    let rows = state
        .client
        .query(&query::growth::growth(db, from, to, &dir, limit, offset))
        .fetch_all::<ChangeRow>()
        .await?;
    let changes = rows
        .into_iter()
        .map(|r| {
            let shown = Text::of(&r.name);
            let (status, kind) = match (r.in_a, r.in_b) {
                (0, _) => ("added", r.b_kind),
                (_, 0) => ("removed", r.a_kind),
                _ => ("changed", r.b_kind),
            };
            Change {
                name: shown.text,
                name_b64: shown.b64,
                status,
                kind,
                bytes_from: r.a_bytes,
                bytes_to: r.b_bytes,
                files_from: r.a_files,
                files_to: r.b_files,
            }
        })
        .collect();
    let shown = Text::of(&dir);
    Ok(Json(Growth {
        from,
        to,
        path: shown.text,
        path_b64: shown.b64,
        warnings: comparison_warnings(&a, &b),
        total: summary.changed + summary.added + summary.removed,
        summary,
        limit,
        offset,
        changes,
    }))
}

#[derive(Debug, Deserialize)]
pub struct OwnerGrowthParams {
    from: Option<SnapshotId>,
    to: Option<SnapshotId>,
    #[serde(default)]
    by: Word<OwnerBy>,
}

#[derive(Debug, Serialize)]
pub struct OwnerChange {
    id: u32,
    name: String,
    status: &'static str,
    bytes_from: u64,
    bytes_to: u64,
    files_from: u64,
    files_to: u64,
}

#[derive(Debug, Serialize)]
pub struct OwnerGrowth {
    from: SnapshotId,
    to: SnapshotId,
    by: &'static str,
    warnings: Vec<String>,
    owners: Vec<OwnerChange>,
}

/// `GET /api/v1/growth/owners?from=A&to=B&by=user|group`: bytes and files per owner in both.
pub async fn owner_growth(
    State(state): State<AppState>,
    Extension(access): Extension<Scope>,
    params: Result<Query<OwnerGrowthParams>, QueryRejection>,
) -> Result<Json<OwnerGrowth>, ApiError> {
    let p = query_params(params)?;
    access.check_all("growth per owner")?;
    let owner_by = p.by.checked()?;
    let by = owner_by.word();
    let (a, b) = two_committed(&state, &access, p.from, p.to).await?;
    let (from, to) = (a.snapshot_id, b.snapshot_id);
    let rows = state
        .client
        .query(&query::growth::owner_growth(
            &state.database,
            from,
            to,
            owner_by.into(),
        ))
        .fetch_all::<OwnerChangeRow>()
        .await?;
    let owners = rows
        .into_iter()
        .map(|r| OwnerChange {
            id: r.id,
            name: r.name,
            status: match (r.in_a, r.in_b) {
                (0, _) => "added",
                (_, 0) => "removed",
                _ if r.a_bytes == r.b_bytes && r.a_files == r.b_files => "unchanged",
                _ => "changed",
            },
            bytes_from: r.a_bytes,
            bytes_to: r.b_bytes,
            files_from: r.a_files,
            files_to: r.b_files,
        })
        .collect();
    Ok(Json(OwnerGrowth {
        from,
        to,
        by,
        warnings: comparison_warnings(&a, &b),
        owners,
    }))
}
