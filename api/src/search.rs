//! Search: entries of a snapshot matching a name pattern and filters on kind, size, owner,
//! types and times, under a directory, largest first or in another order. Without a pattern
//! the filters alone select.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;

use storage_tracker_proto::calendar::{civil_from_days, days_from_civil};

use crate::extract::{AtDirectory, Check, Checked, Route};
use crate::listing::{Listing, listed_sorted};
use crate::params::{MatchKind, Order, SearchField, SearchKind, SearchSort, Word, page};
use crate::pattern::{NamePattern, refuse_nul};
use crate::query::Principal;
use crate::query::entries::{EntryFilter, EntryOrder, Time, Who};
use crate::reports::NS_PER_DAY;
use crate::{ApiError, AppState};

/// The routes of this resource.
pub fn routes() -> crate::resource::Routes {
    crate::resource::Routes::default().get("/api/v1/snapshots/{snapshot_id}/search", search)
}

#[derive(Debug, Deserialize)]
pub(crate) struct SearchParams {
    /// What to look for.
    q: Option<String>,
    /// substring (default), glob or regex.
    #[serde(rename = "match")]
    #[serde(default)]
    how: Word<MatchKind>,
    /// Match without regard to case (default false).
    ignore_case: Option<bool>,
    /// name (default) or path.
    #[serde(default)]
    field: Word<SearchField>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    /// Owner or group, by name or number.
    user: Option<String>,
    group: Option<String>,
    /// File types: extensions without the dot, separated by commas (any of them).
    #[serde(rename = "type")]
    extension: Option<String>,
    /// any (default), file, dir or symlink.
    #[serde(default)]
    kind: Word<SearchKind>,
    /// size (default), allocated, name, path, mtime or atime.
    #[serde(default)]
    sort: Word<SearchSort>,
    /// asc or desc; by default ascending for name and path, descending for the rest.
    order: Option<Word<Order>>,
    /// Dates as YYYY-MM-DD (UTC).
    /// The directory: read here with the rest of the query string, checked by [`AtDirectory`].
    #[serde(rename = "path")]
    _path: Option<String>,
    #[serde(rename = "path_b64")]
    _path_b64: Option<String>,
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
    if (y.len(), m.len(), d.len()) != (4, 2, 2) {
        return Err(bad());
    }
    let (y, m, d): (i64, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    // A day the month does not have (2020-02-30) is no date.
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return Err(bad());
    }
    days.checked_mul(NS_PER_DAY)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{name} must lie between 1678-01-01 and 2262-04-11 (nanosecond timestamps), got {value:?}"
            ))
        })
}

/// Most file types one search names.
const MAX_TYPES: usize = 50;

/// The types of `list` ("h5,.nc,fits"): each without its dot, none empty, at most
/// [`MAX_TYPES`]. An empty `list` is the one type of files without one.
fn types(list: &str) -> Result<Vec<&str>, ApiError> {
    if list.is_empty() {
        return Ok(vec![""]);
    }
    let types: Vec<&str> = list
        .split(',')
        // A type holds no dot, and may hold spaces ("nc " is the type of "a.nc ").
        .map(|t| t.trim_start_matches('.'))
        .collect();
    if types.iter().any(|t| t.is_empty()) {
        return Err(ApiError::BadRequest(format!(
            "type must be file types separated by commas, like h5,nc,fits; got {list:?}"
        )));
    }
    if types.len() > MAX_TYPES {
        return Err(ApiError::BadRequest(format!(
            "type names {} types; a search takes at most {MAX_TYPES}",
            types.len()
        )));
    }
    Ok(types)
}

/// The entries a search selects (but for its directory), and its page.
#[derive(Debug)]
pub(crate) struct Search {
    filter: EntryFilter,
    order: EntryOrder,
    limit: u64,
    offset: u64,
}

impl Check for SearchParams {
    type Checked = Search;

    fn check(self, _: &Route) -> Result<Search, ApiError> {
        let p = self;
        let (limit, offset) = page(p.limit, p.offset)?;
        let field = p.field.checked()?;
        let how = p.how.checked()?;
        let kind = p.kind.checked()?;
        let by = p.sort.checked()?;
        let descending = match &p.order {
            Some(order) => order.checked()? == Order::Desc,
            None => !matches!(by, SearchSort::Name | SearchSort::Path),
        };
        let order = EntryOrder { by, descending };
        let mut filter = EntryFilter::default();
        if let Some(text) = p.q.as_deref().filter(|t| !t.is_empty()) {
            let pattern = NamePattern::new(how, text, p.ignore_case.unwrap_or(false))?;
            filter = filter.matching(pattern, field);
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
            filter = filter.min_size(min);
        }
        if let Some(max) = p.max_size {
            filter = filter.max_size(max);
        }
        for (name, value, time, before) in [
            ("mtime_before", &p.mtime_before, Time::Mtime, true),
            ("mtime_after", &p.mtime_after, Time::Mtime, false),
            ("atime_before", &p.atime_before, Time::Atime, true),
            ("atime_after", &p.atime_after, Time::Atime, false),
        ] {
            if let Some(v) = value {
                let ns = date_ns(name, v)?;
                filter = if before {
                    filter.before(time, ns)
                } else {
                    filter.after(time, ns)
                };
            }
        }
        if let Some(who) = &p.user {
            filter = filter.owned_by(Principal::User, Who::parse(who));
        }
        if let Some(who) = &p.group {
            filter = filter.owned_by(Principal::Group, Who::parse(who));
        }
        match kind {
            SearchKind::Any => {}
            SearchKind::File => filter = filter.files(),
            other => filter = filter.of_kind(other.word()),
        }
        if let Some(list) = &p.extension {
            filter = filter.of_types(&types(list)?);
        }
        Ok(Search {
            filter,
            order,
            limit,
            offset,
        })
    }
}

/// `GET /api/v1/snapshots/{id}/search?q=…&match=substring|glob|regex&field=name|path&…`:
/// entries matching every filter given, in the order asked (largest first by default).
pub(crate) async fn search(
    State(state): State<AppState>,
    Checked(Search {
        mut filter,
        order,
        limit,
        offset,
    }): Checked<SearchParams>,
    AtDirectory { snapshot, dir, .. }: AtDirectory,
) -> Result<Json<Listing>, ApiError> {
    let snapshot_id = snapshot.snapshot_id;
    filter = filter.under_unless_root(&dir, &snapshot.root_path);
    let (entries, total) =
        listed_sorted(&state, snapshot_id, &filter, order, (limit, offset), None).await?;
    Ok(Json(Listing::new(
        snapshot_id,
        &dir,
        (limit, offset),
        (entries, total),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_a_list_separated_by_commas() {
        assert_eq!(types("h5").unwrap(), ["h5"]);
        assert_eq!(types("h5,.nc,FITS").unwrap(), ["h5", "nc", "FITS"]);
        assert_eq!(types("nc ,x").unwrap(), ["nc ", "x"]);
        assert_eq!(types("").unwrap(), [""]);
        for bad in ["h5,", ",h5", "h5,,nc", "h5,."] {
            assert!(
                types(bad).unwrap_err().to_string().contains("commas"),
                "{bad:?}"
            );
        }
        assert!(types(&vec!["a"; 51].join(",")).is_err());
    }

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
            "2020-02-30",
            "2021-02-29",
            "2020-1-1",
        ] {
            assert!(
                date_ns("mtime_before", bad)
                    .unwrap_err()
                    .to_string()
                    .contains("mtime_before")
            );
        }
    }
}
