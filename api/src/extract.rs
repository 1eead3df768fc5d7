//! The one way into a snapshot: extractors that turn `{snapshot_id}`, `path` or `path_b64` and
//! the caller's token into what a handler needs, already checked, so that no handler repeats
//! those steps.
//!
//! - [`InSnapshot`]: a committed snapshot that the caller may read something of.
//! - [`AtDirectory`]: that, and a directory of it (the root when no path is given) that the
//!   caller may read and that the snapshot holds, with its rollup.
//! - [`AtEntry`]: that, and an entry's path (required) that the caller may read.
//!
//! A route's query parameters come before them: [`Checked`] reads them and makes the route's
//! checks ([`Check`]), so that a bad parameter is a 400 whatever the snapshot, the directory or
//! the token (axum runs a handler's extractors in the order of its arguments).

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use storage_tracker_proto::SnapshotId;

use crate::access::Scope;
use crate::paths::PathParam;
use crate::query;
use crate::query::snapshots::SnapshotRow;
use crate::query::tree::RollupRow;
use crate::{ApiError, AppState};

/// The committed snapshot `snapshot_id`, if the caller may read something of it: for a scoped
/// token, a snapshot that does not cover its prefixes is not there (its label and root are not
/// told either).
pub(crate) async fn committed(
    state: &AppState,
    access: &Scope,
    snapshot_id: SnapshotId,
) -> Result<SnapshotRow, ApiError> {
    state
        .client
        .query(&query::snapshots::one(&state.database, snapshot_id))
        .fetch_optional::<SnapshotRow>()
        .await?
        .filter(|s| access.covers(&s.root_path))
        .ok_or_else(|| ApiError::NotFound(format!("no committed snapshot {snapshot_id}")))
}

/// The caller's scope, as the access middleware resolved it.
fn caller(parts: &Parts) -> Result<Scope, ApiError> {
    parts.extensions.get::<Scope>().cloned().ok_or_else(|| {
        ApiError::Forbidden("this route is not open to requests without a token".into())
    })
}

/// The `{snapshot_id}` of the route, checked.
async fn snapshot_id(parts: &mut Parts, state: &AppState) -> Result<SnapshotId, ApiError> {
    let Path(raw) = Path::<String>::from_request_parts(parts, state)
        .await
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    raw.parse::<SnapshotId>()
        .ok()
        .filter(|id| id.get() > 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "snapshot id must be a positive integer, got {raw:?}"
            ))
        })
}

/// The path the query string names, validated; `None` when it names none.
fn requested_path(parts: &Parts) -> Result<Option<Vec<u8>>, ApiError> {
    let Query(p) = Query::<PathParam>::try_from_uri(&parts.uri)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))?;
    p.bytes()
}

/// A route's query parameters, read as one struct and checked in the order the route has always
/// checked them. The struct names every parameter of the route, its directory's too (`path`,
/// `path_b64`, which [`AtDirectory`] checks), so that a query string that does not read (a
/// number that is not one, a parameter given twice) is refused first, as one.
pub trait Check: DeserializeOwned {
    /// What the checks give the handler.
    type Checked;

    /// Whether the route's `{snapshot_id}` is checked before the query string is read.
    const SNAPSHOT_ID_FIRST: bool = false;

    /// The checks; `route` makes the steps between them that are not the parameters' own (the
    /// `{snapshot_id}`, the admin requirement).
    fn check(self, route: &Route) -> Result<Self::Checked, ApiError>;
}

/// The request's `{snapshot_id}` and token, for the checks of [`Check`] that come between the
/// parameters'.
#[derive(Debug)]
pub struct Route {
    snapshot_id: Result<SnapshotId, String>,
    access: Result<Scope, String>,
}

impl Route {
    /// The `{snapshot_id}` of the route, checked (looked up by [`InSnapshot`] and the others).
    pub fn snapshot_id(&self) -> Result<SnapshotId, ApiError> {
        self.snapshot_id.clone().map_err(ApiError::BadRequest)
    }

    /// Refuses a token that may not read the whole snapshot: `what` needs an admin token.
    pub fn needs_admin(&self, what: &str) -> Result<(), ApiError> {
        self.access
            .as_ref()
            .map_err(|e| ApiError::Forbidden(e.clone()))?
            .check_all(what)
    }
}

/// A route's query parameters `P`, read and checked ([`Check`]): what the checks give.
#[derive(Debug)]
pub struct Checked<P: Check>(pub P::Checked);

impl<P: Check> FromRequestParts<AppState> for Checked<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let route = Route {
            snapshot_id: snapshot_id(parts, state).await.map_err(|e| e.to_string()),
            access: caller(parts).map_err(|e| e.to_string()),
        };
        if P::SNAPSHOT_ID_FIRST {
            route.snapshot_id()?;
        }
        let Query(params) = Query::<P>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))?;
        params.check(&route).map(Self)
    }
}

/// A directory's path and nothing else: read with the query string (a 400 if it does not
/// read), checked by [`AtDirectory`].
impl Check for PathParam {
    type Checked = ();

    fn check(self, _: &Route) -> Result<(), ApiError> {
        Ok(())
    }
}

/// A committed snapshot the caller may read something of.
#[derive(Debug)]
pub struct InSnapshot {
    pub snapshot: SnapshotRow,
    pub access: Scope,
}

impl FromRequestParts<AppState> for InSnapshot {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let access = caller(parts)?;
        let id = snapshot_id(parts, state).await?;
        let snapshot = committed(state, &access, id).await?;
        Ok(Self { snapshot, access })
    }
}

/// A directory of a committed snapshot: readable by the caller, held by the snapshot.
#[derive(Debug)]
pub struct AtDirectory {
    pub snapshot: SnapshotRow,
    pub access: Scope,
    /// The directory's raw path.
    pub dir: Vec<u8>,
    /// Its recursive totals.
    pub rollup: RollupRow,
}

impl FromRequestParts<AppState> for AtDirectory {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let access = caller(parts)?;
        let id = snapshot_id(parts, state).await?;
        let requested = requested_path(parts)?;
        let snapshot = committed(state, &access, id).await?;
        let dir = requested.unwrap_or_else(|| snapshot.root_path.clone());
        access.check(&dir)?;
        let rollup = state
            .client
            .query(&query::tree::directory_rollup(&state.database, id, &dir))
            .fetch_optional::<RollupRow>()
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "no directory {:?} in snapshot {id}",
                    String::from_utf8_lossy(&dir)
                ))
            })?;
        Ok(Self {
            snapshot,
            access,
            dir,
            rollup,
        })
    }
}

/// An entry's path in a committed snapshot, readable by the caller (whether the snapshot holds
/// it is the handler's lookup).
#[derive(Debug)]
pub struct AtEntry {
    pub snapshot: SnapshotRow,
    pub path: Vec<u8>,
}

impl FromRequestParts<AppState> for AtEntry {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let access = caller(parts)?;
        let id = snapshot_id(parts, state).await?;
        let path = requested_path(parts)?
            .ok_or_else(|| ApiError::BadRequest("give the entry as path= or path_b64=".into()))?;
        let snapshot = committed(state, &access, id).await?;
        access.check(&path)?;
        Ok(Self { snapshot, path })
    }
}
