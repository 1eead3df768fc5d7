//! The reports of one snapshot: an entry's details, the largest files and directories, usage by
//! owner, group, file type and file category, the histograms, and stale data (JSON pages or a
//! streamed CSV); and the file categories themselves.
//!
//! Every value from a request is checked here and handed to [`crate::query`] typed (a filter,
//! a word of a fixed list, a number).

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::reports::AGE_BOUNDS_DAYS;

use crate::extract::{AtDirectory, AtEntry, Check, Checked, InSnapshot, Route};
use crate::listing::{Child, Listing, OwnerNames, entries_at, listed, listed_largest};
use crate::params::{HistogramOf, StaleBy, StaleFormat, TopWhat, UsageBy, Word, page};
use crate::paths::Text;
use crate::query::entries::{DownloadRow, EntryFilter, Time};
use crate::query::reports::{BucketRow, CategoryRow, UsageRow};
use crate::query::tree::PathRow;
use crate::query::{self, Principal};
use crate::stream::CutShort;
use crate::timestamp::Iso;
use crate::{ApiError, AppState};

/// The routes of this resource.
pub fn routes() -> crate::resource::Routes {
    crate::resource::Routes::default()
        .get("/api/v1/snapshots/{snapshot_id}/entry", entry)
        .get("/api/v1/snapshots/{snapshot_id}/top", top)
        .get("/api/v1/snapshots/{snapshot_id}/usage", usage)
        .get("/api/v1/snapshots/{snapshot_id}/histograms", histograms)
        .get("/api/v1/snapshots/{snapshot_id}/stale", stale)
        .get("/api/v1/categories", categories)
}

/// The entry's path, read with the query string: one must be given (checked before the snapshot
/// is; [`AtEntry`] checks the path itself).
#[derive(Debug, Deserialize)]
pub(crate) struct EntryParams {
    path: Option<String>,
    path_b64: Option<String>,
}

impl Check for EntryParams {
    type Checked = ();

    fn check(self, _: &Route) -> Result<(), ApiError> {
        if self.path.is_none() && self.path_b64.is_none() {
            return Err(ApiError::BadRequest(
                "give the entry as path= or path_b64=".into(),
            ));
        }
        Ok(())
    }
}

/// `GET /api/v1/snapshots/{id}/entry?path=…`: one entry, with its tree's totals when a
/// directory.
pub(crate) async fn entry(
    State(state): State<AppState>,
    _: Checked<EntryParams>,
    AtEntry { snapshot, path }: AtEntry,
) -> Result<Json<Child>, ApiError> {
    let sql = query::tree::entry(&state.database, snapshot.snapshot_id, &path);
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
    what: Word<TopWhat>,
    /// The directory: read here with the rest of the query string, checked by [`AtDirectory`].
    #[serde(rename = "path")]
    _path: Option<String>,
    #[serde(rename = "path_b64")]
    _path_b64: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

impl Check for TopParams {
    /// The page, and what is listed (checked after the directory).
    type Checked = ((u64, u64), Word<TopWhat>);

    fn check(self, _: &Route) -> Result<Self::Checked, ApiError> {
        Ok((page(self.limit, self.offset)?, self.what))
    }
}

/// `GET /api/v1/snapshots/{id}/top?what=files|dirs&path=…`: the largest files (by size) or
/// directories (by recursive bytes) under a directory.
pub(crate) async fn top(
    State(state): State<AppState>,
    Checked(((limit, offset), what)): Checked<TopParams>,
    AtDirectory {
        snapshot,
        dir,
        rollup,
        ..
    }: AtDirectory,
) -> Result<Json<Listing>, ApiError> {
    let what = what.checked()?;
    let db = &state.database;
    let snapshot_id = snapshot.snapshot_id;
    match what {
        TopWhat::Files => {
            let filter = EntryFilter::default()
                .files()
                .under_unless_root(&dir, &snapshot.root_path);
            // Every file below the directory: its rollup counts them, each link of a file too.
            let (entries, total) = listed_largest(
                &state,
                snapshot_id,
                &filter,
                (limit, offset),
                Some(rollup.files),
            )
            .await?;
            Ok(Json(Listing::new(
                snapshot_id,
                &dir,
                (limit, offset),
                (entries, total),
            )))
        }
        TopWhat::Dirs => {
            // The largest trees from the rollups, then their entries' own rows (mode, size,
            // links) by key, in the same order: one description of an entry for every list.
            let largest: Vec<PathRow> = state
                .client
                .query(&query::tree::largest_directories(
                    db,
                    snapshot_id,
                    &dir,
                    limit,
                    offset,
                ))
                .fetch_all()
                .await?;
            let largest: Vec<Vec<u8>> = largest.into_iter().map(|r| r.path).collect();
            let entries = entries_at(&state, snapshot_id, &largest).await?;
            // The directory itself, and every directory below it.
            let total = rollup.dirs + 1;
            Ok(Json(Listing::new(
                snapshot_id,
                &dir,
                (limit, offset),
                (entries, total),
            )))
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct UsageParams {
    /// user (default), group or type.
    #[serde(default)]
    by: Word<UsageBy>,
    limit: Option<u64>,
    offset: Option<u64>,
}

impl Check for UsageParams {
    /// The page, and what usage is summed by (checked after the snapshot).
    type Checked = ((u64, u64), Word<UsageBy>);

    fn check(self, route: &Route) -> Result<Self::Checked, ApiError> {
        let page = page(self.limit, self.offset)?;
        route.needs_admin("usage")?;
        Ok((page, self.by))
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct UsageItem {
    /// The uid or gid (absent for file types and categories).
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u32>,
    /// The user or group name, the extension ("" for files without one), or the category.
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_b64: Option<String>,
    /// A file type's category (`by=type`).
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    /// A category's largest types, largest first (`by=category`; at most
    /// [`query::reports::CATEGORY_TYPES_SHOWN`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    types: Option<Vec<TypeShare>>,
    entries: u64,
    files: u64,
    bytes: u64,
    allocated: u64,
}

/// One type of a category, and its bytes.
#[derive(Debug, Serialize)]
pub(crate) struct TypeShare {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_b64: Option<String>,
    bytes: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Usage {
    snapshot_id: SnapshotId,
    by: &'static str,
    /// How many owners, groups, types or categories the snapshot has.
    total: u64,
    limit: u64,
    offset: u64,
    items: Vec<UsageItem>,
}

/// `GET /api/v1/snapshots/{id}/usage?by=user|group|type|category`: usage, largest first.
pub(crate) async fn usage(
    State(state): State<AppState>,
    Checked(((limit, offset), by)): Checked<UsageParams>,
    InSnapshot { snapshot, .. }: InSnapshot,
) -> Result<Json<Usage>, ApiError> {
    let usage_by = by.checked()?;
    let snapshot_id = snapshot.snapshot_id;
    let db = &state.database;
    let categories = &state.categories;
    let (items, total_sql) = match (usage_by, Principal::of_usage(usage_by)) {
        (UsageBy::Category, _) => {
            let sql = query::reports::category_usage(db, snapshot_id, categories, limit, offset);
            let rows = state.client.query(&sql).fetch_all::<CategoryRow>().await?;
            let items = rows.into_iter().map(category_item).collect();
            (
                items,
                query::reports::category_count(db, snapshot_id, categories),
            )
        }
        (_, principal) => {
            let sql = match principal {
                Some(p) => query::reports::owner_usage(db, snapshot_id, p, limit, offset),
                None => query::reports::type_usage(db, snapshot_id, limit, offset),
            };
            let rows = state.client.query(&sql).fetch_all::<UsageRow>().await?;
            let items = rows
                .into_iter()
                .map(|r| {
                    let (id, name, category) = match principal {
                        Some(_) => (Some(r.id), Text::of(r.name.as_bytes()), None),
                        None => (
                            None,
                            Text::of(&r.key),
                            Some(categories.of(&r.key).to_owned()),
                        ),
                    };
                    UsageItem {
                        id,
                        name: name.text,
                        name_b64: name.b64,
                        category,
                        types: None,
                        entries: r.entries,
                        files: r.files,
                        bytes: r.bytes,
                        allocated: r.allocated,
                    }
                })
                .collect();
            (
                items,
                query::reports::usage_count(db, snapshot_id, principal),
            )
        }
    };
    let total = state.client.query(&total_sql).fetch_one::<u64>().await?;
    Ok(Json(Usage {
        snapshot_id,
        by: usage_by.word(),
        total,
        limit,
        offset,
        items,
    }))
}

#[derive(Debug, Serialize)]
pub(crate) struct CategoryList {
    categories: Vec<CategoryItem>,
    other: &'static str,
}

#[derive(Debug, Serialize)]
pub(crate) struct CategoryItem {
    name: String,
    types: Vec<String>,
}

/// `GET /api/v1/categories`: the file categories, in the configuration's order.
pub(crate) async fn categories(State(state): State<AppState>) -> Json<CategoryList> {
    Json(CategoryList {
        categories: state
            .categories
            .list()
            .iter()
            .map(|c| CategoryItem {
                name: c.name.clone(),
                types: c.types.clone(),
            })
            .collect(),
        other: crate::categories::OTHER,
    })
}

/// A row of the categories report as the API gives it.
fn category_item(row: CategoryRow) -> UsageItem {
    let types = row
        .types
        .into_iter()
        .map(|(bytes, extension)| {
            let name = Text::of(&extension);
            TypeShare {
                name: name.text,
                name_b64: name.b64,
                bytes,
            }
        })
        .collect();
    UsageItem {
        id: None,
        name: row.key,
        name_b64: None,
        category: None,
        types: Some(types),
        entries: row.files,
        files: row.files,
        bytes: row.bytes,
        allocated: row.allocated,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct HistogramParams {
    /// size (default), mtime or atime.
    #[serde(default)]
    of: Word<HistogramOf>,
}

impl Check for HistogramParams {
    type Checked = HistogramOf;

    fn check(self, route: &Route) -> Result<HistogramOf, ApiError> {
        route.snapshot_id()?;
        let of = self.of.checked()?;
        route.needs_admin("a histogram")?;
        Ok(of)
    }
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
    snapshot_id: SnapshotId,
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
    Checked(histogram): Checked<HistogramParams>,
    InSnapshot { snapshot, .. }: InSnapshot,
) -> Result<Json<Histogram>, ApiError> {
    let snapshot_id = snapshot.snapshot_id;
    let of = histogram.word();
    let sql = query::reports::histogram(&state.database, snapshot_id, histogram);
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

pub(crate) const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;

#[derive(Debug, Deserialize)]
pub(crate) struct StaleParams {
    /// Not accessed (or modified, with by=mtime) for this many days before the scan.
    days: Option<u32>,
    /// Only files at least this large (bytes).
    min_size: Option<u64>,
    #[serde(default)]
    by: Word<StaleBy>,
    /// json (default) or csv.
    #[serde(default)]
    format: Word<StaleFormat>,
    /// The directory: read here with the rest of the query string, checked by [`AtDirectory`].
    #[serde(rename = "path")]
    _path: Option<String>,
    #[serde(rename = "path_b64")]
    _path_b64: Option<String>,
    limit: Option<u64>,
    offset: Option<u64>,
}

/// Which stale files, and how they answer.
#[derive(Debug)]
pub(crate) struct Stale {
    csv: bool,
    limit: u64,
    offset: u64,
    by: StaleBy,
    days: u32,
    min_size: u64,
}

impl Check for StaleParams {
    type Checked = Stale;

    fn check(self, _: &Route) -> Result<Stale, ApiError> {
        let csv = self.format.checked()? == StaleFormat::Csv;
        let (limit, offset) = if csv {
            // Every row unless the caller asks for fewer.
            if self.limit == Some(0) {
                return Err(ApiError::BadRequest("limit must be at least 1".into()));
            }
            (
                self.limit.unwrap_or(u64::MAX),
                page(Some(1), self.offset)?.1,
            )
        } else {
            page(self.limit, self.offset)?
        };
        let by = self.by.checked()?;
        let days = self.days.unwrap_or(180);
        if days > 36_500 {
            return Err(ApiError::BadRequest(format!(
                "days must be at most 36500, got {days}"
            )));
        }
        Ok(Stale {
            csv,
            limit,
            offset,
            by,
            days,
            min_size: self.min_size.unwrap_or(0),
        })
    }
}

/// Rows per query of a CSV download: each page stays far below the read-only profile's
/// `max_result_rows` and `max_execution_time`, however many rows the download has.
pub(crate) const CSV_PAGE_ROWS: u64 = 10_000;

/// `GET /api/v1/snapshots/{id}/stale?days=180&min_size=…&by=atime|mtime&format=json|csv`: large
/// files untouched for a while, largest first (JSON pages), or every one of them in path order
/// (CSV, streamed).
pub(crate) async fn stale(
    State(state): State<AppState>,
    Checked(Stale {
        csv,
        limit,
        offset,
        by,
        days,
        min_size,
    }): Checked<StaleParams>,
    AtDirectory { snapshot, dir, .. }: AtDirectory,
) -> Result<Response, ApiError> {
    let cutoff = snapshot.started_at_ns - i64::from(days) * NS_PER_DAY;
    let filter = EntryFilter::default()
        .files()
        .before(Time::from(by), cutoff)
        .min_size(min_size)
        .under_unless_root(&dir, &snapshot.root_path);
    if csv {
        let name = format!("stale-snapshot{}-{days}d.csv", snapshot.snapshot_id);
        let body = stale_csv(state, snapshot.snapshot_id, dir, filter, limit, offset);
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
    let (entries, total) =
        listed_largest(&state, snapshot.snapshot_id, &filter, (limit, offset), None).await?;
    Ok(Json(Listing::new(
        snapshot.snapshot_id,
        &dir,
        (limit, offset),
        (entries, total),
    ))
    .into_response())
}

/// The header of a CSV download. `path` is text (bytes that are not UTF-8 become U+FFFD);
/// `path_b64` holds the raw bytes in base64 for such paths, and is empty otherwise. Times are
/// given twice: in nanoseconds, and as ISO 8601 in UTC, which a spreadsheet reads as a date
/// (it would round 19 digits).
const CSV_HEADER: &str =
    "path,size,allocated,user,group,uid,gid,mtime_ns,atime_ns,mtime,atime,path_b64\n";

/// Every entry `filter` selects in the subtree at `dir`, skipping `offset` and stopping after
/// `limit`, as CSV in key order. The subtree is read window by window
/// ([`query::windows`]), in pages of [`CSV_PAGE_ROWS`] within a window, each page starting
/// after the last key of the one before: a page reads its window, not the rest of the subtree,
/// so the first rows come as quickly under the root of 10^8 entries as under a small directory,
/// and the whole download costs what reading the subtree once does. A failed query aborts the
/// body, so a client sees a cut transfer, never a short file that looks whole.
fn stale_csv(
    state: AppState,
    snapshot_id: SnapshotId,
    dir: Vec<u8>,
    filter: EntryFilter,
    limit: u64,
    offset: u64,
) -> axum::body::Body {
    crate::stream::spawned_body(move |tx| async move {
        let download = Download {
            state: &state,
            snapshot_id,
            filter: &filter,
            tx: &tx,
        };
        if let Err(e) = download.run(&dir, limit, offset).await {
            tracing::warn!(snapshot_id = snapshot_id.get(), "CSV download failed: {e}");
            let _ = tx.send(Err(e)).await;
        }
    })
}

/// A CSV download under way.
struct Download<'a> {
    state: &'a AppState,
    snapshot_id: SnapshotId,
    filter: &'a EntryFilter,
    tx: &'a tokio::sync::mpsc::Sender<crate::stream::Piece>,
}

impl Download<'_> {
    /// Sends the rows of the subtree at `dir`, window by window, skipping `offset` and stopping
    /// after `limit`; returns early (and well) when the client has gone away.
    async fn run(&self, dir: &[u8], limit: u64, offset: u64) -> Result<(), CutShort> {
        use query::windows::{Piece, SubdirRow, cut, subdirectories};
        let (db, client) = (&self.state.database, &self.state.client);
        let mut pieces = Piece::of_subtree(dir);
        pieces.reverse();
        let (mut left, mut skip) = (limit, offset);
        let mut out = String::from(CSV_HEADER);
        while left > 0 {
            let Some(piece) = pieces.pop() else { break };
            if let Piece::Below { dir, range } = &piece {
                let sql = subdirectories(db, self.snapshot_id, dir);
                let subdirs = client.query(&sql).fetch_all::<SubdirRow>().await?;
                let window = self.state.window_entries;
                pieces.extend(cut(dir, range, &subdirs, window).into_iter().rev());
                continue;
            }
            let window = self.filter.clone().within(piece);
            if skip > 0 {
                let sql = query::entries::count(db, self.snapshot_id, &window);
                let rows: u64 = client.query(&sql).fetch_one().await?;
                if rows <= skip {
                    skip -= rows;
                    continue;
                }
            }
            let mut after: Option<(Vec<u8>, Vec<u8>)> = None;
            while left > 0 {
                let sql = query::entries::page_after(
                    db,
                    self.snapshot_id,
                    &window,
                    after.as_ref().map(|(p, n)| (p.as_slice(), n.as_slice())),
                    left.min(CSV_PAGE_ROWS),
                    std::mem::take(&mut skip),
                );
                let page = client.query(&sql).fetch_all::<DownloadRow>().await?;
                write_csv_rows(self.state, self.snapshot_id, &page, &mut out).await?;
                if !self.send(&mut out).await {
                    return Ok(());
                }
                left -= page.len() as u64;
                let full = page.len() as u64 == CSV_PAGE_ROWS;
                match page.into_iter().last() {
                    Some(last) if full && left > 0 => after = Some((last.parent_path, last.name)),
                    _ => break, // The window is done.
                }
            }
        }
        // The header alone, when no row was sent.
        self.send(&mut out).await;
        Ok(())
    }

    /// Sends what `out` holds, if anything; false when the client has gone away.
    async fn send(&self, out: &mut String) -> bool {
        out.is_empty() || self.tx.send(Ok(std::mem::take(out).into())).await.is_ok()
    }
}

/// `page` as CSV lines appended to `out`, with the names of its owners.
async fn write_csv_rows(
    state: &AppState,
    snapshot_id: SnapshotId,
    page: &[DownloadRow],
    out: &mut String,
) -> Result<(), ApiError> {
    if page.is_empty() {
        return Ok(());
    }
    let names = OwnerNames::of(
        state,
        snapshot_id,
        page.iter().map(|r| r.uid),
        page.iter().map(|r| r.gid),
    )
    .await?;
    for r in page {
        let text = Text::of(&r.path);
        let (user, group) = (
            names.user(r.uid).unwrap_or(""),
            names.group(r.gid).unwrap_or(""),
        );
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            csv_field(&text.text),
            r.size,
            r.allocated,
            csv_field(user),
            csv_field(group),
            r.uid,
            r.gid,
            r.mtime_ns,
            r.atime_ns,
            Iso(r.mtime_ns),
            Iso(r.atime_ns),
            text.b64.unwrap_or_default()
        ));
    }
    Ok(())
}

/// A CSV field, quoted.
fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

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
