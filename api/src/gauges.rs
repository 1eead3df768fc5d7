//! `GET /api/v1/metrics/usage`: the latest committed snapshot of each filesystem as Prometheus
//! gauges, for Grafana and alert rules (`deploy/grafana/`, `deploy/prometheus/`): its size,
//! entries, errors and start; bytes, bytes on disk and files per top-level directory and per
//! user, each with its growth since the filesystem's previous snapshot. Series per family and
//! filesystem are capped (`--metrics-series`, the largest kept, the rest summed as `(other)`),
//! so a filesystem of a million users does not become a million series.
//!
//! A filesystem is a label: its newest committed snapshot, and the snapshot before it of the
//! same root, give the gauges. Snapshot-wide, so an admin token's only. The text is computed
//! once per set of snapshots and kept until another commits: a scrape reads the snapshots'
//! record, and nothing else while they stay the same.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::metrics::{CONTENT_TYPE, Metrics};

use crate::access::Scope;
use crate::query::gauges::{HolderRow, LatestRow};
use crate::{ApiError, AppState};

/// Series per family and filesystem unless `--metrics-series` says otherwise.
pub const DEFAULT_SERIES: usize = 50;

/// The routes of this resource.
pub fn routes() -> crate::resource::Routes {
    crate::resource::Routes::default().get("/api/v1/metrics/usage", usage)
}

/// The snapshots gauges are computed from: each filesystem's newest, and the one before it.
type Snapshots = Vec<(u64, Option<u64>)>;

/// The text last computed, and the snapshots it was computed from.
#[derive(Debug, Default)]
pub struct Cache(std::sync::Mutex<Option<(Snapshots, String)>>);

/// `GET /api/v1/metrics/usage`.
pub(crate) async fn usage(
    State(state): State<AppState>,
    scope: Option<axum::Extension<Scope>>,
) -> Result<Response, ApiError> {
    if let Some(axum::Extension(scope)) = &scope {
        scope.check_all("usage for Prometheus")?;
    }
    let db = &state.database;
    let rows: Vec<LatestRow> = state
        .client
        .query(&crate::query::gauges::latest(db))
        .fetch_all()
        .await?;
    let filesystems = newest_per_label(rows);
    let key: Snapshots = filesystems
        .iter()
        .map(|(now, before)| (now.snapshot_id, before.as_ref().map(|b| b.snapshot_id)))
        .collect();
    let cached = state
        .gauges
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .filter(|(k, _)| *k == key)
        .map(|(_, text)| text.clone());
    let text = match cached {
        Some(text) => text,
        None => {
            let text = render(&state, &filesystems).await?;
            *state.gauges.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, text.clone()));
            text
        }
    };
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response())
}

/// Per label, its newest committed snapshot and the one before it of the same root.
fn newest_per_label(rows: Vec<LatestRow>) -> Vec<(LatestRow, Option<LatestRow>)> {
    // Newest first within each (label, root).
    let mut by_root: BTreeMap<(String, Vec<u8>), Vec<LatestRow>> = BTreeMap::new();
    for row in rows {
        by_root
            .entry((row.label.clone(), row.root_path.clone()))
            .or_default()
            .push(row);
    }
    let mut by_label: BTreeMap<String, Vec<LatestRow>> = BTreeMap::new();
    for ((label, _), rows) in by_root {
        let best = by_label.entry(label).or_default();
        let newer = |a: &LatestRow, b: &LatestRow| {
            (a.started_at_ns, a.snapshot_id) > (b.started_at_ns, b.snapshot_id)
        };
        if best.first().is_none_or(|b| newer(&rows[0], b)) {
            *best = rows;
        }
    }
    by_label
        .into_values()
        .map(|mut rows| {
            let now = rows.remove(0);
            (now, rows.into_iter().next())
        })
        .collect()
}

/// The holders (top-level directories, users) of a filesystem's newest snapshot and of the one
/// before it, if any, by the statement `sql` makes for a snapshot.
async fn now_and_before(
    state: &AppState,
    now: &LatestRow,
    before: Option<&LatestRow>,
    sql: impl Fn(&storage_tracker_proto::ddl::Database, SnapshotId) -> String,
) -> Result<(Vec<HolderRow>, Option<Vec<HolderRow>>), ApiError> {
    let fetch = async |r: &LatestRow| -> Result<Vec<HolderRow>, ApiError> {
        let sql = sql(&state.database, SnapshotId::from(r.snapshot_id));
        Ok(state.client.query(&sql).fetch_all().await?)
    };
    let now = fetch(now).await?;
    let before = match before {
        Some(b) => Some(fetch(b).await?),
        None => None,
    };
    Ok((now, before))
}

async fn render(
    state: &AppState,
    filesystems: &[(LatestRow, Option<LatestRow>)],
) -> Result<String, ApiError> {
    let m = Metrics::new();
    for (now, before) in filesystems {
        let root = String::from_utf8_lossy(&now.root_path).into_owned();
        let fs = [("label", now.label.as_str())];
        m.set(
            "storage_tracker_snapshot_bytes",
            "Apparent bytes of the latest committed snapshot of each filesystem (label).",
            &fs,
            now.apparent_bytes as f64,
        );
        m.set(
            "storage_tracker_snapshot_entries",
            "Entries of the latest committed snapshot of each filesystem.",
            &fs,
            now.entries as f64,
        );
        m.set(
            "storage_tracker_snapshot_errors",
            "Entries the latest committed snapshot of each filesystem could not read.",
            &fs,
            now.errors as f64,
        );
        m.set(
            "storage_tracker_snapshot_started_seconds",
            "Unix time at which the latest committed snapshot of each filesystem started.",
            &[("label", now.label.as_str()), ("root", root.as_str())],
            now.started_at_ns as f64 / 1e9,
        );
        if let Some(before) = before {
            m.set(
                "storage_tracker_snapshot_growth_bytes",
                "Apparent bytes the filesystem gained since its previous committed snapshot (negative: lost).",
                &fs,
                now.apparent_bytes as f64 - before.apparent_bytes as f64,
            );
        }
        let (dirs_now, dirs_before) = now_and_before(
            state,
            now,
            before.as_ref(),
            crate::query::gauges::top_directories,
        )
        .await?;
        let path_of = |h: &HolderRow| {
            let name = String::from_utf8_lossy(&h.key);
            if root.ends_with('/') {
                format!("{root}{name}")
            } else {
                format!("{root}/{name}")
            }
        };
        gauge_family(
            &m,
            &now.label,
            "path",
            capped(
                dirs_now.iter().map(|h| (path_of(h), h)),
                state.metrics_series,
            ),
            dirs_before.map(|b| sums(b.iter().map(|h| (path_of(h), h)))),
            Family {
                bytes: "storage_tracker_directory_bytes",
                bytes_help: "Apparent bytes below each top-level directory of the latest snapshot (the largest, the rest as path=\"(other)\").",
                allocated: "storage_tracker_directory_allocated_bytes",
                allocated_help: "Bytes on disk below each top-level directory of the latest snapshot.",
                files: "storage_tracker_directory_files",
                files_help: "Files below each top-level directory of the latest snapshot.",
                growth: "storage_tracker_directory_growth_bytes",
                growth_help: "Apparent bytes each top-level directory gained since the previous snapshot of its filesystem (negative: lost).",
            },
        );
        let user_of = |h: &HolderRow| {
            if h.key.is_empty() {
                format!("uid {}", h.id)
            } else {
                String::from_utf8_lossy(&h.key).into_owned()
            }
        };
        let (users_now, users_before) =
            now_and_before(state, now, before.as_ref(), crate::query::gauges::users).await?;
        gauge_family(
            &m,
            &now.label,
            "user",
            capped(
                users_now.iter().map(|h| (user_of(h), h)),
                state.metrics_series,
            ),
            users_before.map(|b| sums(b.iter().map(|h| (user_of(h), h)))),
            Family {
                bytes: "storage_tracker_owner_bytes",
                bytes_help: "Apparent bytes of each user in the latest snapshot (the largest, the rest as user=\"(other)\").",
                allocated: "storage_tracker_owner_allocated_bytes",
                allocated_help: "Bytes on disk of each user in the latest snapshot.",
                files: "storage_tracker_owner_files",
                files_help: "Files of each user in the latest snapshot.",
                growth: "storage_tracker_owner_growth_bytes",
                growth_help: "Apparent bytes each user gained since the previous snapshot of the filesystem (negative: lost).",
            },
        );
    }
    Ok(m.render())
}

/// The names of a family of gauges.
struct Family {
    bytes: &'static str,
    bytes_help: &'static str,
    allocated: &'static str,
    allocated_help: &'static str,
    files: &'static str,
    files_help: &'static str,
    growth: &'static str,
    growth_help: &'static str,
}

/// Totals (bytes, allocated, files) by key.
type Sums = HashMap<String, (u64, u64, u64)>;

fn sums<'a>(holders: impl Iterator<Item = (String, &'a HolderRow)>) -> Sums {
    let mut out = Sums::new();
    for (key, h) in holders {
        let e = out.entry(key).or_default();
        e.0 += h.bytes;
        e.1 += h.allocated;
        e.2 += h.files;
    }
    out
}

/// The `cap` largest by bytes, and the rest summed as `(other)`.
fn capped<'a>(
    holders: impl Iterator<Item = (String, &'a HolderRow)>,
    cap: usize,
) -> Vec<(String, (u64, u64, u64))> {
    let mut all: Vec<(String, (u64, u64, u64))> = sums(holders).into_iter().collect();
    all.sort_by(|a, b| b.1.0.cmp(&a.1.0).then_with(|| a.0.cmp(&b.0)));
    if all.len() > cap {
        let rest = all.split_off(cap);
        let other = rest
            .iter()
            .fold((0, 0, 0), |s, (_, v)| (s.0 + v.0, s.1 + v.1, s.2 + v.2));
        all.push(("(other)".to_owned(), other));
    }
    all
}

fn gauge_family(
    m: &Metrics,
    label: &str,
    key_name: &str,
    now: Vec<(String, (u64, u64, u64))>,
    before: Option<Sums>,
    names: Family,
) {
    let shown: Vec<&str> = now.iter().map(|(k, _)| k.as_str()).collect();
    for (key, (bytes, allocated, files)) in &now {
        let labels = [("label", label), (key_name, key.as_str())];
        m.set(names.bytes, names.bytes_help, &labels, *bytes as f64);
        m.set(
            names.allocated,
            names.allocated_help,
            &labels,
            *allocated as f64,
        );
        m.set(names.files, names.files_help, &labels, *files as f64);
        if let Some(before) = &before {
            let was = if key == "(other)" {
                // What the previous snapshot held beyond the keys shown now.
                before
                    .iter()
                    .filter(|(k, _)| !shown.contains(&k.as_str()))
                    .map(|(_, v)| v.0)
                    .sum::<u64>()
            } else {
                before.get(key).map_or(0, |v| v.0)
            };
            m.set(
                names.growth,
                names.growth_help,
                &labels,
                *bytes as f64 - was as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, root: &str, id: u64, started: i64) -> LatestRow {
        LatestRow {
            label: label.into(),
            root_path: root.into(),
            snapshot_id: id,
            started_at_ns: started,
            entries: 1,
            errors: 0,
            apparent_bytes: 10,
        }
    }

    #[test]
    fn a_label_is_its_newest_root_with_the_snapshot_before_it_of_that_root() {
        let got = newest_per_label(vec![
            row("home", "/home", 5, 50),
            row("home", "/home", 3, 30),
            row("home", "/home/alice", 6, 20),
            row("scratch", "/scratch", 4, 40),
        ]);
        let ids: Vec<(u64, Option<u64>)> = got
            .iter()
            .map(|(n, b)| (n.snapshot_id, b.as_ref().map(|b| b.snapshot_id)))
            .collect();
        assert_eq!(ids, [(5, Some(3)), (4, None)]);
    }

    #[test]
    fn series_beyond_the_cap_are_summed_as_other() {
        let h = |b: u64| HolderRow {
            key: Vec::new(),
            id: 0,
            bytes: b,
            allocated: b / 2,
            files: 1,
        };
        let rows = [h(5), h(50), h(7), h(1)];
        let named = rows.iter().enumerate().map(|(i, r)| (format!("k{i}"), r));
        let got = capped(named, 2);
        assert_eq!(
            got,
            [
                ("k1".to_owned(), (50, 25, 1)),
                ("k2".to_owned(), (7, 3, 1)),
                ("(other)".to_owned(), (6, 2, 2)),
            ]
        );
    }
}
