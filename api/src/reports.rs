//! The reports of one snapshot: an entry's details, the largest files and directories, usage by
//! owner, group and file type, the histograms, stale data (JSON or CSV), and search.
//!
//! Every value from a request is checked here and enters SQL through `quote_bytes` or as a
//! number; sort orders and columns come from fixed lists.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use clickhouse::Row;
use serde::{Deserialize, Serialize};

use storage_tracker_proto::calendar::days_from_civil;
use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::entry::split_path;
use storage_tracker_proto::reports::{AGE_BOUNDS_DAYS, extension_sql};
use storage_tracker_proto::sql::{parent_within, quote_bytes, subtree};

use std::collections::{BTreeSet, HashMap};

use crate::extract::{AtDirectory, AtEntry, InSnapshot};
use crate::params::{
    AreaBy, HistogramOf, MatchKind, SearchField, StaleBy, StaleFormat, TopWhat, UsageBy,
};
use crate::paths::Text;
use crate::pattern::{NamePattern, refuse_nul};
use crate::query::{ChildRow, DirTotalsRow};
use crate::routes::{Child, name_owners, page, query_params};
use crate::{ApiError, AppState};

/// Entries of a snapshot matching `condition`, as [`ChildRow`]s with their own sizes.
fn entries_sql(
    db: &Database,
    snapshot_id: u64,
    condition: &str,
    order: &str,
    limit: u64,
    offset: u64,
) -> String {
    format!(
        "SELECT name, path, kind, size, allocated, uid, gid, mode, nlink, mtime_ns, atime_ns, error_op, errno, symlink_target,
    size AS tree_bytes, allocated AS tree_allocated, toUInt64(0) AS tree_entries, toUInt64(0) AS tree_files,
    toUInt64(0) AS tree_dirs, mtime_ns AS tree_max_mtime_ns, atime_ns AS tree_max_atime_ns
FROM {db}.entries
WHERE snapshot_id = {snapshot_id} AND {condition}
ORDER BY {order}
LIMIT {limit} OFFSET {offset}"
    )
}

/// The entries at `paths`, in that order, with their trees' totals (two lookups by key).
async fn entries_at(
    state: &AppState,
    snapshot_id: u64,
    paths: &[Vec<u8>],
) -> Result<Vec<Child>, ApiError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = paths
        .iter()
        .map(|p| {
            let (parent, name) = split_path(p);
            format!("({}, {})", quote_bytes(parent), quote_bytes(name))
        })
        .collect();
    let condition = format!("(parent_path, name) IN ({})", keys.join(", "));
    let sql = entries_sql(
        &state.database,
        snapshot_id,
        &condition,
        "path",
        paths.len() as u64,
        0,
    );
    let mut found = listed(state, snapshot_id, &sql).await?;
    let rank = |c: &Child| paths.iter().position(|p| p.as_slice() == c.path_bytes());
    found.sort_by_key(rank);
    Ok(found)
}

async fn listed(state: &AppState, snapshot_id: u64, sql: &str) -> Result<Vec<Child>, ApiError> {
    let mut rows = state.client.query(sql).fetch_all::<ChildRow>().await?;
    with_tree_totals(state, snapshot_id, &mut rows).await?;
    let mut children: Vec<Child> = rows.into_iter().map(Child::from).collect();
    name_owners(state, snapshot_id, &mut children).await?;
    Ok(children)
}

/// Gives the directories of a page of entries their trees' totals (one lookup by key).
async fn with_tree_totals(
    state: &AppState,
    snapshot_id: u64,
    rows: &mut [ChildRow],
) -> Result<(), ApiError> {
    let dir_code = storage_tracker_proto::EntryKind::Dir as i8;
    let keys: Vec<(u64, &[u8])> = rows
        .iter()
        .filter(|r| r.kind == dir_code && r.tree_entries == 0)
        .map(|r| (snapshot_id, r.path.as_slice()))
        .collect();
    let Some(sql) = crate::query::dir_totals(&state.database, &keys) else {
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

/// `GET /api/v1/snapshots/{id}/entry?path=…`: one entry, with its tree's totals when a
/// directory.
pub(crate) async fn entry(
    State(state): State<AppState>,
    AtEntry { snapshot, path }: AtEntry,
) -> Result<Json<Child>, ApiError> {
    let (parent, name) = split_path(&path);
    let db = &state.database;
    let sql = format!(
        "SELECT name, path, kind, size, allocated, uid, gid, mode, nlink, mtime_ns, atime_ns, error_op, errno, symlink_target,
    if(kind = 'dir', dir_bytes, size) AS tree_bytes, if(kind = 'dir', dir_allocated, allocated) AS tree_allocated,
    tree_entries, tree_files, tree_dirs, if(kind = 'dir', dir_max_mtime_ns, mtime_ns) AS tree_max_mtime_ns,
    if(kind = 'dir', dir_max_atime_ns, atime_ns) AS tree_max_atime_ns
FROM
(
    SELECT name, path, kind, size, allocated, uid, gid, mode, nlink, mtime_ns, atime_ns, error_op, errno, symlink_target
    FROM {db}.entries WHERE snapshot_id = {id} AND parent_path = {parent} AND name = {name}
) AS e
ANY LEFT JOIN
(
    SELECT name, bytes AS dir_bytes, allocated AS dir_allocated, entries AS tree_entries, files AS tree_files,
        dirs AS tree_dirs, max_mtime_ns AS dir_max_mtime_ns, max_atime_ns AS dir_max_atime_ns
    FROM {db}.dir_rollups WHERE snapshot_id = {id} AND parent_path = {parent} AND name = {name}
) AS r USING name
LIMIT 1",
        id = snapshot.snapshot_id,
        parent = quote_bytes(parent),
        name = quote_bytes(name)
    );
    listed(&state, snapshot.snapshot_id, &sql)
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no entry {:?} in snapshot {}",
                String::from_utf8_lossy(&path),
                snapshot.snapshot_id
            ))
        })
}

#[derive(Debug, Deserialize)]
pub(crate) struct TopParams {
    /// files (default) or dirs.
    #[serde(default)]
    what: TopWhat,
    limit: Option<u64>,
    offset: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Listing {
    snapshot_id: u64,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    limit: u64,
    offset: u64,
    entries: Vec<Child>,
}

impl Listing {
    fn new(snapshot_id: u64, dir: &[u8], (limit, offset): (u64, u64), entries: Vec<Child>) -> Self {
        let shown = Text::of(dir);
        Self {
            snapshot_id,
            path: shown.text,
            path_b64: shown.b64,
            limit,
            offset,
            entries,
        }
    }
}

/// `GET /api/v1/snapshots/{id}/top?what=files|dirs&path=…`: the largest files (by size) or
/// directories (by recursive bytes) under a directory.
pub(crate) async fn top(
    State(state): State<AppState>,
    AtDirectory { snapshot, dir, .. }: AtDirectory,
    q: Result<Query<TopParams>, QueryRejection>,
) -> Result<Json<Listing>, ApiError> {
    let p = query_params(q)?;
    let (limit, offset) = page(p.limit, p.offset)?;
    let db = &state.database;
    let snapshot_id = snapshot.snapshot_id;
    let sql = match p.what {
        TopWhat::Files => entries_sql(
            db,
            snapshot_id,
            &format!("kind = 'file' AND {}", subtree(&dir)),
            "size DESC, path ASC",
            limit,
            offset,
        ),
        TopWhat::Dirs => {
            // The largest trees from the rollups, then their entries' own rows (mode, size,
            // links) by key, in the same order: one description of an entry for every list.
            #[derive(Row, Deserialize)]
            struct PathRow {
                #[serde(with = "serde_bytes")]
                path: Vec<u8>,
            }
            let largest: Vec<PathRow> = state
                .client
                .query(&format!(
                    "SELECT path FROM {db}.dir_rollups WHERE snapshot_id = {snapshot_id} AND {}
ORDER BY bytes DESC, path ASC
LIMIT {limit} OFFSET {offset}",
                    subtree(&dir)
                ))
                .fetch_all()
                .await?;
            let largest: Vec<Vec<u8>> = largest.into_iter().map(|r| r.path).collect();
            let entries = entries_at(&state, snapshot_id, &largest).await?;
            return Ok(Json(Listing::new(
                snapshot_id,
                &dir,
                (limit, offset),
                entries,
            )));
        }
    };
    let entries = listed(&state, snapshot_id, &sql).await?;
    Ok(Json(Listing::new(
        snapshot_id,
        &dir,
        (limit, offset),
        entries,
    )))
}

#[derive(Debug, Deserialize)]
pub(crate) struct UsageParams {
    /// user (default), group or type.
    #[serde(default)]
    by: UsageBy,
    limit: Option<u64>,
    offset: Option<u64>,
}

#[derive(Debug, Row, Deserialize)]
struct UsageRow {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    id: u32,
    name: String,
    entries: u64,
    files: u64,
    bytes: u64,
    allocated: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct UsageItem {
    /// The uid or gid (absent for file types).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    /// The user or group name, or the extension ("" for files without one).
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_b64: Option<String>,
    entries: u64,
    files: u64,
    bytes: u64,
    allocated: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Usage {
    snapshot_id: u64,
    by: &'static str,
    limit: u64,
    offset: u64,
    items: Vec<UsageItem>,
}

/// `GET /api/v1/snapshots/{id}/usage?by=user|group|type`: usage, largest first.
pub(crate) async fn usage(
    State(state): State<AppState>,
    InSnapshot { snapshot, access }: InSnapshot,
    q: Result<Query<UsageParams>, QueryRejection>,
) -> Result<Json<Usage>, ApiError> {
    let p = query_params(q)?;
    let (limit, offset) = page(p.limit, p.offset)?;
    access.check_all("usage")?;
    let snapshot_id = snapshot.snapshot_id;
    let db = &state.database;
    let by = p.by.word();
    let sql = match p.by {
        UsageBy::User | UsageBy::Group => {
            format!(
                "SELECT '' AS key, id, name, entries, files, bytes, allocated
FROM
(
    SELECT id, sum(entries) AS entries, sum(files) AS files, sum(bytes) AS bytes, sum(allocated) AS allocated
    FROM {db}.owner_usage WHERE snapshot_id = {snapshot_id} AND principal = '{by}' GROUP BY id
) AS u
ANY LEFT JOIN
(
    SELECT id, name FROM {db}.principals WHERE snapshot_id = {snapshot_id} AND kind = '{by}'
) AS n USING id
ORDER BY bytes DESC, id ASC
LIMIT {limit} OFFSET {offset}"
            )
        }
        UsageBy::Type => format!(
            "SELECT extension AS key, toUInt32(0) AS id, '' AS name, files AS entries, files, bytes, allocated
FROM {db}.type_usage WHERE snapshot_id = {snapshot_id}
ORDER BY bytes DESC, key ASC
LIMIT {limit} OFFSET {offset}"
        ),
    };
    let rows = state.client.query(&sql).fetch_all::<UsageRow>().await?;
    let items = rows
        .into_iter()
        .map(|r| {
            let (id, name) = if by == "type" {
                (None, Text::of(&r.key))
            } else {
                (Some(r.id), Text::of(r.name.as_bytes()))
            };
            UsageItem {
                id,
                name: name.text,
                name_b64: name.b64,
                entries: r.entries,
                files: r.files,
                bytes: r.bytes,
                allocated: r.allocated,
            }
        })
        .collect();
    Ok(Json(Usage {
        snapshot_id,
        by,
        limit,
        offset,
        items,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistogramParams {
    /// size (default), mtime or atime.
    #[serde(default)]
    of: HistogramOf,
}

#[derive(Debug, Row, Deserialize)]
struct BucketRow {
    bucket: u8,
    files: u64,
    bytes: u64,
    allocated: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Bucket {
    bucket: u8,
    /// What the bucket holds, e.g. "[4 KiB, 8 KiB)" or "1-7 days".
    label: String,
    files: u64,
    bytes: u64,
    allocated: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Histogram {
    snapshot_id: u64,
    of: &'static str,
    buckets: Vec<Bucket>,
}

fn size_label(bucket: u8) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let human = |exp: u32| format!("{} {}", 1u64 << (exp % 10), UNITS[(exp / 10) as usize]);
    match bucket {
        0 => "empty".into(),
        b => format!(
            "[{}, {})",
            human(u32::from(b) - 1),
            human(u32::from(b).min(63))
        ),
    }
}

fn age_label(bucket: u8) -> String {
    let bounds = AGE_BOUNDS_DAYS;
    match bucket as usize {
        0 => "in the future".into(),
        1 => format!("under {} day", bounds[0]),
        b if b <= bounds.len() => format!("{}-{} days", bounds[b - 2], bounds[b - 1]),
        _ => format!("{} days or more", bounds[bounds.len() - 1]),
    }
}

/// `GET /api/v1/snapshots/{id}/histograms?of=size|mtime|atime`: files per bucket.
pub(crate) async fn histograms(
    State(state): State<AppState>,
    InSnapshot { snapshot, access }: InSnapshot,
    q: Result<Query<HistogramParams>, QueryRejection>,
) -> Result<Json<Histogram>, ApiError> {
    let p = query_params(q)?;
    let snapshot_id = snapshot.snapshot_id;
    let of = p.of.word();
    access.check_all("a histogram")?;
    let sql = format!(
        "SELECT bucket, files, bytes, allocated FROM {}.histograms WHERE snapshot_id = {snapshot_id} AND histogram = '{of}' ORDER BY bucket",
        state.database
    );
    let rows = state.client.query(&sql).fetch_all::<BucketRow>().await?;
    let buckets = rows
        .into_iter()
        .map(|r| Bucket {
            bucket: r.bucket,
            label: if of == "size" {
                size_label(r.bucket)
            } else {
                age_label(r.bucket)
            },
            files: r.files,
            bytes: r.bytes,
            allocated: r.allocated,
        })
        .collect();
    Ok(Json(Histogram {
        snapshot_id,
        of,
        buckets,
    }))
}

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

#[derive(Debug, Deserialize)]
pub(crate) struct StaleParams {
    /// Not accessed (or modified, with by=mtime) for this many days before the scan.
    days: Option<u32>,
    /// Only files at least this large (bytes).
    min_size: Option<u64>,
    #[serde(default)]
    by: StaleBy,
    /// json (default) or csv.
    #[serde(default)]
    format: StaleFormat,
    limit: Option<u64>,
    offset: Option<u64>,
}

/// Rows per query of a CSV download: each page stays far below the read-only profile's
/// `max_result_rows` and `max_execution_time`, however many rows the download has.
pub(crate) const CSV_PAGE_ROWS: u64 = 10_000;

/// `GET /api/v1/snapshots/{id}/stale?days=180&min_size=…&by=atime|mtime&format=json|csv`: large
/// files untouched for a while, largest first (JSON pages), or every one of them in path order
/// (CSV, streamed).
pub(crate) async fn stale(
    State(state): State<AppState>,
    at: AtDirectory,
    q: Result<Query<StaleParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = query_params(q)?;
    let csv = p.format == StaleFormat::Csv;
    let (limit, offset) = if csv {
        // Every row unless the caller asks for fewer.
        if p.limit == Some(0) {
            return Err(ApiError::BadRequest("limit must be at least 1".into()));
        }
        (p.limit.unwrap_or(u64::MAX), page(Some(1), p.offset)?.1)
    } else {
        page(p.limit, p.offset)?
    };
    let column = p.by.column();
    let days = p.days.unwrap_or(180);
    if days > 36_500 {
        return Err(ApiError::BadRequest(format!(
            "days must be at most 36500, got {days}"
        )));
    }
    let AtDirectory { snapshot, dir, .. } = at;
    let cutoff = snapshot.started_at_ns - i64::from(days) * NS_PER_DAY;
    let condition = format!(
        "kind = 'file' AND {column} < {cutoff} AND size >= {} AND {}",
        p.min_size.unwrap_or(0),
        subtree(&dir)
    );
    if csv {
        let name = format!("stale-snapshot{}-{days}d.csv", snapshot.snapshot_id);
        let body = stale_csv(state, snapshot.snapshot_id, condition, limit, offset);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
            ],
            body,
        )
            .into_response());
    }
    let sql = entries_sql(
        &state.database,
        snapshot.snapshot_id,
        &condition,
        "size DESC, path ASC",
        limit,
        offset,
    );
    let entries = listed(&state, snapshot.snapshot_id, &sql).await?;
    Ok(Json(Listing::new(
        snapshot.snapshot_id,
        &dir,
        (limit, offset),
        entries,
    ))
    .into_response())
}

/// One row of a CSV download.
#[derive(Debug, Row, Deserialize)]
struct CsvRow {
    #[serde(with = "serde_bytes")]
    parent_path: Vec<u8>,
    #[serde(with = "serde_bytes")]
    name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    path: Vec<u8>,
    size: u64,
    allocated: u64,
    uid: u32,
    gid: u32,
    mtime_ns: i64,
    atime_ns: i64,
}

/// The header of a CSV download. `path` is text (bytes that are not UTF-8 become U+FFFD);
/// `path_b64` holds the raw bytes in base64 for such paths, and is empty otherwise.
const CSV_HEADER: &str = "path,size,allocated,user,group,uid,gid,mtime_ns,atime_ns,path_b64\n";

/// Every entry matching `condition`, skipping `offset` and stopping after `limit`, as CSV in
/// key order: pages of [`CSV_PAGE_ROWS`], each starting after the last key of the one before.
/// A failed page aborts the body, so a client sees a cut transfer, never a short file that
/// looks whole. On a current ClickHouse each page reads only its own rows (the order is the
/// table's sort key); 18.16 reads the rest of the subtree for every page.
fn stale_csv(
    state: AppState,
    snapshot_id: u64,
    condition: String,
    limit: u64,
    offset: u64,
) -> axum::body::Body {
    crate::stream::spawned_body(move |tx| async move {
        let db = &state.database;
        let mut after: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut left = limit;
        let mut out = String::from(CSV_HEADER);
        while left > 0 {
            let keyset = after.as_ref().map_or(String::new(), |(parent, name)| {
                let parent = quote_bytes(parent);
                format!(
                    " AND parent_path >= {parent} AND (parent_path > {parent} OR name > {})",
                    quote_bytes(name)
                )
            });
            let page_rows = left.min(CSV_PAGE_ROWS);
            let skip = if after.is_none() { offset } else { 0 };
            let sql = format!(
                "SELECT parent_path, name, path, size, allocated, uid, gid, mtime_ns, atime_ns
FROM {db}.entries
WHERE snapshot_id = {snapshot_id} AND {condition}{keyset}
ORDER BY snapshot_id, parent_path, name
LIMIT {page_rows} OFFSET {skip}"
            );
            let page = match state.client.query(&sql).fetch_all::<CsvRow>().await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(snapshot_id, "CSV download failed: {e}");
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            let names = match owner_names(&state, snapshot_id, &page).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
            for r in &page {
                let text = Text::of(&r.path);
                let (user, group) = (
                    names.get(&(1, r.uid)).map_or("", String::as_str),
                    names.get(&(2, r.gid)).map_or("", String::as_str),
                );
                out.push_str(&format!(
                    "{},{},{},{},{},{},{},{},{},{}\n",
                    csv_field(&text.text),
                    r.size,
                    r.allocated,
                    csv_field(user),
                    csv_field(group),
                    r.uid,
                    r.gid,
                    r.mtime_ns,
                    r.atime_ns,
                    text.b64.unwrap_or_default()
                ));
            }
            if tx.send(Ok(std::mem::take(&mut out).into())).await.is_err() {
                return; // The client went away.
            }
            left -= page.len() as u64;
            match page.into_iter().last() {
                Some(last) if left > 0 && page_rows == CSV_PAGE_ROWS => {
                    after = Some((last.parent_path, last.name));
                }
                _ => break,
            }
        }
    })
}

/// A CSV field, quoted.
fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The user (1) and group (2) names of a page of rows, by (kind, id).
async fn owner_names(
    state: &AppState,
    snapshot_id: u64,
    rows: &[CsvRow],
) -> Result<HashMap<(i8, u32), String>, ApiError> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let uids: Vec<u32> = rows
        .iter()
        .map(|r| r.uid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let gids: Vec<u32> = rows
        .iter()
        .map(|r| r.gid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let sql = crate::query::principals(&state.database, snapshot_id, &uids, &gids);
    Ok(state
        .client
        .query(&sql)
        .fetch_all::<crate::query::PrincipalRow>()
        .await?
        .into_iter()
        .filter(|p| !p.name.is_empty())
        .map(|p| ((p.kind, p.id), p.name))
        .collect())
}

#[derive(Debug, Deserialize)]
pub(crate) struct SearchParams {
    /// What to look for.
    q: Option<String>,
    /// substring (default), glob or regex.
    #[serde(rename = "match")]
    #[serde(default)]
    how: MatchKind,
    /// Match without regard to case (default false).
    ignore_case: Option<bool>,
    /// name (default) or path.
    #[serde(default)]
    field: SearchField,
    min_size: Option<u64>,
    max_size: Option<u64>,
    /// Owner or group, by name or number.
    user: Option<String>,
    group: Option<String>,
    /// File type: the extension, without the dot.
    #[serde(rename = "type")]
    extension: Option<String>,
    /// Dates as YYYY-MM-DD (UTC).
    mtime_before: Option<String>,
    mtime_after: Option<String>,
    atime_before: Option<String>,
    atime_after: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

/// A `YYYY-MM-DD` date as nanoseconds since the epoch (midnight UTC).
fn date_ns(name: &str, value: &str) -> Result<i64, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "{name} must be a date as YYYY-MM-DD, got {value:?}"
        ))
    };
    let parts: Vec<&str> = value.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d): (i64, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    days_from_civil(y, m, d)
        .checked_mul(NS_PER_DAY)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name} must lie between 1678-01-01 and 2262-04-11 (nanosecond timestamps), got {value:?}"
            ))
        })
}

/// The condition for an owner or group given by name or number.
fn principal_condition(
    db: &Database,
    snapshot_id: u64,
    column: &str,
    kind: &str,
    who: &str,
) -> String {
    match who.parse::<u32>() {
        Ok(id) => format!("{column} = {id}"),
        Err(_) => format!(
            "{column} IN (SELECT id FROM {db}.principals WHERE snapshot_id = {snapshot_id} AND kind = '{kind}' AND name = {})",
            quote_bytes(who.as_bytes())
        ),
    }
}

/// `GET /api/v1/snapshots/{id}/search?q=…&match=substring|glob|regex&field=name|path&…`:
/// entries matching every filter given, largest first.
pub(crate) async fn search(
    State(state): State<AppState>,
    at: AtDirectory,
    q: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<Listing>, ApiError> {
    let p = query_params(q)?;
    let (limit, offset) = page(p.limit, p.offset)?;
    let field = p.field.word();
    let mut conditions = Vec::new();
    if let Some(text) = p.q.as_deref().filter(|t| !t.is_empty()) {
        let pattern = NamePattern::new(p.how, text, p.ignore_case.unwrap_or(false))?;
        conditions.push(pattern.condition(field));
    }
    for (name, value) in [
        ("user", &p.user),
        ("group", &p.group),
        ("type", &p.extension),
    ] {
        if let Some(v) = value {
            refuse_nul(name, v)?;
        }
    }
    if let Some(min) = p.min_size {
        conditions.push(format!("size >= {min}"));
    }
    if let Some(max) = p.max_size {
        conditions.push(format!("size <= {max}"));
    }
    for (name, value, column, op) in [
        ("mtime_before", &p.mtime_before, "mtime_ns", "<"),
        ("mtime_after", &p.mtime_after, "mtime_ns", ">="),
        ("atime_before", &p.atime_before, "atime_ns", "<"),
        ("atime_after", &p.atime_after, "atime_ns", ">="),
    ] {
        if let Some(v) = value {
            conditions.push(format!("{column} {op} {}", date_ns(name, v)?));
        }
    }
    let AtDirectory { snapshot, dir, .. } = at;
    let db = &state.database;
    let snapshot_id = snapshot.snapshot_id;
    if let Some(who) = &p.user {
        conditions.push(principal_condition(db, snapshot_id, "uid", "user", who));
    }
    if let Some(who) = &p.group {
        conditions.push(principal_condition(db, snapshot_id, "gid", "group", who));
    }
    if let Some(ext) = &p.extension {
        conditions.push(format!(
            "kind = 'file' AND {} = {}",
            extension_sql("name"),
            quote_bytes(ext.to_ascii_lowercase().as_bytes())
        ));
    }
    if dir != snapshot.root_path {
        conditions.push(subtree(&dir));
    }
    let condition = if conditions.is_empty() {
        "1".to_owned()
    } else {
        conditions.join(" AND ")
    };
    let sql = entries_sql(
        db,
        snapshot_id,
        &condition,
        "size DESC, path ASC",
        limit,
        offset,
    );
    let entries = listed(&state, snapshot_id, &sql).await?;
    Ok(Json(Listing::new(
        snapshot_id,
        &dir,
        (limit, offset),
        entries,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_to_utc_midnight() {
        assert_eq!(date_ns("d", "1970-01-01").unwrap(), 0);
        assert_eq!(date_ns("d", "2026-03-04").unwrap(), 20_516 * NS_PER_DAY);
        assert_eq!(date_ns("d", "1969-12-31").unwrap(), -NS_PER_DAY);
        for bad in [
            "2026-13-01",
            "yesterday",
            "2026-1",
            "2026-01-01-01",
            "0-01-01",
        ] {
            assert!(
                date_ns("mtime_before", bad)
                    .unwrap_err()
                    .to_string()
                    .contains("mtime_before")
            );
        }
    }

    #[test]
    fn labels_name_the_bucket_bounds() {
        assert_eq!(size_label(0), "empty");
        assert_eq!(size_label(1), "[1 B, 2 B)");
        assert_eq!(size_label(13), "[4 KiB, 8 KiB)");
        assert_eq!(age_label(0), "in the future");
        assert_eq!(age_label(1), "under 1 day");
        assert_eq!(age_label(2), "1-7 days");
        assert_eq!(age_label(10), "1825 days or more");
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct TreemapParams {
    /// Levels below the directory (1 to 4, default 2).
    depth: Option<u32>,
    /// Children kept per directory (1 to 500, default 40); the rest are folded into one node.
    max_children: Option<u32>,
    /// bytes (default) or files: what the areas are.
    #[serde(default)]
    size: AreaBy,
}

#[derive(Debug, Row, Deserialize)]
struct TileRow {
    #[serde(with = "serde_bytes")]
    parent_path: Vec<u8>,
    #[serde(with = "serde_bytes")]
    name: Vec<u8>,
    kind: String,
    bytes: u64,
    files: u64,
    uid: u32,
    newest_mtime_ns: i64,
    /// The entry's own size (a directory's inode size).
    size: u64,
}

#[derive(Debug, Row, Deserialize)]
struct TotalRow {
    #[serde(with = "serde_bytes")]
    parent_path: Vec<u8>,
    children: u64,
    bytes: u64,
    files: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Tile {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_b64: Option<String>,
    /// dir, file, …, or "other": the smaller children folded into one tile.
    kind: String,
    bytes: u64,
    files: u64,
    /// The owner's uid and, where the snapshot resolved it, name (not on "other").
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// A file's type (see `usage?by=type`); absent for directories and "other".
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    file_type: Option<String>,
    /// Newest mtime: the file's own, or the newest in a directory's tree (not on "other").
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
    /// For "other": how many children it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    children: Vec<Tile>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Treemap {
    snapshot_id: u64,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    depth: u32,
    max_children: u32,
    size: &'static str,
    root: Tile,
}

/// `GET /api/v1/snapshots/{id}/treemap?path=…&depth=2&max_children=40&size=bytes|files`: a
/// directory's tree a few levels deep, the largest children of each directory kept and the
/// rest folded into one "other" tile.
pub(crate) async fn treemap(
    State(state): State<AppState>,
    at: AtDirectory,
    q: Result<Query<TreemapParams>, QueryRejection>,
) -> Result<Json<Treemap>, ApiError> {
    let p = query_params(q)?;
    let depth = p.depth.unwrap_or(2);
    if !(1..=4).contains(&depth) {
        return Err(ApiError::BadRequest(format!(
            "depth must be between 1 and 4, got {depth}"
        )));
    }
    let max_children = p.max_children.unwrap_or(40);
    if !(1..=500).contains(&max_children) {
        return Err(ApiError::BadRequest(format!(
            "max_children must be between 1 and 500, got {max_children}"
        )));
    }
    let size = p.size.word();
    let AtDirectory {
        snapshot,
        dir,
        rollup: top,
        ..
    } = at;
    let snapshot_id = snapshot.snapshot_id;
    let db = &state.database;
    let (parent, name) = split_path(&dir);
    let base_depth = top.depth;
    // Every entry whose parent lies within `depth - 1` levels below the directory. The depth
    // test goes first (PREWHERE): a small column that drops most rows before a path is read;
    // the parent's range is on the sort key.
    let within = format!(
        "PREWHERE depth <= {max_depth} AND depth > {base_depth} WHERE snapshot_id = {snapshot_id} AND {}",
        parent_within(&dir),
        max_depth = base_depth + depth,
    );
    let tiles = format!(
        "(
    SELECT parent_path, name, toString(kind) AS kind, if(kind = 'dir', dir_bytes, size) AS bytes,
        if(kind = 'dir', dir_files, toUInt64(kind = 'file')) AS files, uid,
        if(kind = 'dir', dir_mtime_ns, mtime_ns) AS newest_mtime_ns, size
    FROM (SELECT parent_path, name, kind, size, uid, mtime_ns FROM {db}.entries {within}) AS e
    ANY LEFT JOIN
    (
        SELECT parent_path, name, bytes AS dir_bytes, files AS dir_files, max_mtime_ns AS dir_mtime_ns
        FROM {db}.dir_rollups {within}
    ) AS r USING (parent_path, name)
) AS t"
    );
    let rows: Vec<TileRow> = state
        .client
        .query(&format!(
            "SELECT parent_path, name, kind, bytes, files, uid, newest_mtime_ns, size FROM {tiles} ORDER BY {size} DESC, name ASC LIMIT {max_children} BY parent_path"
        ))
        .fetch_all()
        .await?;
    // What each directory holds, from its rollup alone (no join): its children, and the bytes
    // and files below it. Its tiles' bytes add up to its recursive bytes less its own size.
    let totals: Vec<TotalRow> = state
        .client
        .query(&format!(
            "SELECT path AS parent_path, direct_entries AS children, bytes, files FROM {db}.dir_rollups
PREWHERE depth >= {base_depth} AND depth < {below} WHERE snapshot_id = {snapshot_id} AND {}",
            subtree(&dir),
            below = base_depth + depth,
        ))
        .fetch_all()
        .await?;
    let top_size: u64 = state
        .client
        .query(&format!(
            "SELECT size FROM {db}.entries WHERE snapshot_id = {snapshot_id} AND parent_path = {} AND name = {}",
            quote_bytes(parent),
            quote_bytes(name)
        ))
        .fetch_optional::<u64>()
        .await?
        .unwrap_or(0);
    let uids: Vec<u32> = rows
        .iter()
        .map(|r| r.uid)
        .collect::<BTreeSet<u32>>()
        .into_iter()
        .collect();
    let users: HashMap<u32, String> = if uids.is_empty() {
        Default::default()
    } else {
        state
            .client
            .query(&crate::query::principals(db, snapshot_id, &uids, &[]))
            .fetch_all::<crate::query::PrincipalRow>()
            .await?
            .into_iter()
            .filter(|p| p.kind == 1 && !p.name.is_empty())
            .map(|p| (p.id, p.name))
            .collect()
    };
    let mut by_parent: HashMap<Vec<u8>, Vec<TileRow>> = Default::default();
    for row in rows {
        by_parent
            .entry(row.parent_path.clone())
            .or_default()
            .push(row);
    }
    let totals: HashMap<Vec<u8>, TotalRow> = totals
        .into_iter()
        .map(|t| (t.parent_path.clone(), t))
        .collect();
    /// The tiles of `dir`, whose own (inode) size is `own_size`.
    fn build(
        dir: &[u8],
        own_size: u64,
        by_parent: &mut HashMap<Vec<u8>, Vec<TileRow>>,
        totals: &HashMap<Vec<u8>, TotalRow>,
        users: &HashMap<u32, String>,
    ) -> Vec<Tile> {
        let rows = by_parent.remove(dir).unwrap_or_default();
        let (mut bytes, mut files) = (0u64, 0u64);
        let shown = rows.len() as u64;
        let mut out: Vec<Tile> = rows
            .into_iter()
            .map(|r| {
                bytes += r.bytes;
                files += r.files;
                let mut path = dir.to_vec();
                if path.last() != Some(&b'/') {
                    path.push(b'/');
                }
                path.extend_from_slice(&r.name);
                let children = if r.kind == "dir" {
                    build(&path, r.size, by_parent, totals, users)
                } else {
                    Vec::new()
                };
                let file_type = (r.kind == "file").then(|| {
                    String::from_utf8_lossy(&storage_tracker_proto::reports::extension(&r.name))
                        .into_owned()
                });
                let name = Text::of(&r.name);
                Tile {
                    name: name.text,
                    name_b64: name.b64,
                    kind: r.kind,
                    bytes: r.bytes,
                    files: r.files,
                    uid: Some(r.uid),
                    user: users.get(&r.uid).cloned(),
                    file_type,
                    mtime_ns: Some(r.newest_mtime_ns),
                    count: None,
                    children,
                }
            })
            .collect();
        if let Some(t) = totals.get(dir)
            && t.children > shown
        {
            out.push(Tile {
                name: format!("{} smaller items", t.children - shown),
                name_b64: None,
                kind: "other".into(),
                bytes: t.bytes.saturating_sub(own_size).saturating_sub(bytes),
                files: t.files.saturating_sub(files),
                uid: None,
                user: None,
                file_type: None,
                mtime_ns: None,
                count: Some(t.children - shown),
                children: Vec::new(),
            });
        }
        out
    }
    let children = build(&dir, top_size, &mut by_parent, &totals, &users);
    let shown = Text::of(&dir);
    let name = Text::of(name);
    Ok(Json(Treemap {
        snapshot_id,
        path: shown.text,
        path_b64: shown.b64,
        depth,
        max_children,
        size,
        root: Tile {
            name: name.text,
            name_b64: name.b64,
            kind: "dir".into(),
            bytes: top.bytes,
            files: top.files,
            uid: None,
            user: None,
            file_type: None,
            mtime_ns: Some(top.max_mtime_ns),
            count: None,
            children,
        },
    }))
}
