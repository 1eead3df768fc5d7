//! The treemap of a directory: its tree a few levels deep, each directory's largest children
//! kept and the rest folded into one tile, from the rollups and the entries' sort key.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::entry::split_path;

use crate::categories::Categories;
use crate::extract::{AtDirectory, Check, Checked, Route};
use crate::listing::OwnerNames;
use crate::params::{AreaBy, Word};
use crate::paths::Text;
use crate::query;
use crate::query::tree::EntriesOf;
use crate::query::treemap::{TileRow, TotalRow};
use crate::timestamp::Iso;
use crate::{ApiError, AppState};

/// The routes of this resource.
pub fn routes() -> crate::resource::Routes {
    crate::resource::Routes::default().get("/api/v1/snapshots/{snapshot_id}/treemap", treemap)
}

#[derive(Debug, Deserialize)]
pub(crate) struct TreemapParams {
    /// The directory: read here with the rest of the query string, checked by [`AtDirectory`].
    #[serde(rename = "path")]
    _path: Option<String>,
    #[serde(rename = "path_b64")]
    _path_b64: Option<String>,
    /// Levels below the directory (1 to 4, default 2).
    depth: Option<u32>,
    /// Children kept per directory (1 to 500, default 40); the rest are folded into one node.
    max_children: Option<u32>,
    /// bytes (default) or files: what the areas are.
    #[serde(default)]
    size: Word<AreaBy>,
}

/// A treemap's shape: levels, children kept per directory, what the areas are.
#[derive(Debug)]
pub(crate) struct Shape {
    depth: u32,
    max_children: u32,
    size: AreaBy,
}

impl Check for TreemapParams {
    type Checked = Shape;

    fn check(self, _: &Route) -> Result<Shape, ApiError> {
        let depth = self.depth.unwrap_or(2);
        if !(1..=4).contains(&depth) {
            return Err(ApiError::BadRequest(format!(
                "depth must be between 1 and 4, got {depth}"
            )));
        }
        let max_children = self.max_children.unwrap_or(40);
        if !(1..=500).contains(&max_children) {
            return Err(ApiError::BadRequest(format!(
                "max_children must be between 1 and 500, got {max_children}"
            )));
        }
        Ok(Shape {
            depth,
            max_children,
            size: self.size.checked()?,
        })
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Tile {
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_b64: Option<String>,
    /// dir, file, …, or "other": the smaller children folded into one tile.
    kind: String,
    bytes: u64,
    /// Bytes on disk (allocated): a sparse file's are few.
    allocated: u64,
    files: u64,
    /// The owner's uid and, where the snapshot resolved it, name (not on "other").
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// A file's type (see `usage?by=type`); absent for directories and "other".
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    file_type: Option<String>,
    /// A file's category ([`crate::categories`]); absent for directories and "other".
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    /// Newest mtime: the file's own, or the newest in a directory's tree (not on "other").
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
    /// The same as an ISO 8601 string (see [`crate::timestamp`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    mtime: Option<Iso>,
    /// For "other": how many children it stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    children: Vec<Tile>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Treemap {
    snapshot_id: SnapshotId,
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    depth: u32,
    max_children: u32,
    size: &'static str,
    root: Tile,
}

/// `GET /api/v1/snapshots/{id}/treemap?path=…&depth=2&max_children=40&size=bytes|allocated|files`: a
/// directory's tree a few levels deep, the largest children of each directory kept and the
/// rest folded into one "other" tile.
pub(crate) async fn treemap(
    State(state): State<AppState>,
    Checked(Shape {
        depth,
        max_children,
        size: area_by,
    }): Checked<TreemapParams>,
    AtDirectory {
        snapshot,
        dir,
        rollup: top,
        ..
    }: AtDirectory,
) -> Result<Json<Treemap>, ApiError> {
    let size = area_by.word();
    let snapshot_id = snapshot.snapshot_id;
    let db = &state.database;
    let (_, name) = split_path(&dir);
    let base_depth = top.depth;
    // Near the root the tiles come from the top levels kept at commit.
    let (kept, deepest): (u64, u32) = state
        .client
        .query(&query::treemap::top_levels(db, snapshot_id))
        .fetch_one()
        .await?;
    let from = if kept > 0 && base_depth + depth <= deepest {
        EntriesOf::TopLevels
    } else {
        EntriesOf::All
    };
    let rows: Vec<TileRow> = state
        .client
        .query(&query::treemap::tiles(
            db,
            snapshot_id,
            (&dir, base_depth),
            depth,
            area_by,
            max_children,
            from,
        ))
        .fetch_all()
        .await?;
    // Its tiles' bytes add up to a directory's recursive bytes less its own size.
    let totals: Vec<TotalRow> = state
        .client
        .query(&query::treemap::totals(
            db,
            snapshot_id,
            &dir,
            base_depth,
            depth,
        ))
        .fetch_all()
        .await?;
    let top_own: (u64, u64) = state
        .client
        .query(&query::entries::entry_size(db, snapshot_id, &dir))
        .fetch_optional::<(u64, u64)>()
        .await?
        .unwrap_or((0, 0));
    let users = OwnerNames::of(&state, snapshot_id, rows.iter().map(|r| r.uid), []).await?;
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
    /// The tiles of `dir`, whose own (inode) size and allocated bytes are `own`.
    fn build(
        dir: &[u8],
        own: (u64, u64),
        by_parent: &mut HashMap<Vec<u8>, Vec<TileRow>>,
        totals: &HashMap<Vec<u8>, TotalRow>,
        users: &OwnerNames,
        categories: &Categories,
    ) -> Vec<Tile> {
        let rows = by_parent.remove(dir).unwrap_or_default();
        let (mut bytes, mut allocated, mut files) = (0u64, 0u64, 0u64);
        let shown = rows.len() as u64;
        let mut out: Vec<Tile> = rows
            .into_iter()
            .map(|r| {
                bytes += r.bytes;
                allocated += r.on_disk;
                files += r.files;
                let mut path = dir.to_vec();
                if path.last() != Some(&b'/') {
                    path.push(b'/');
                }
                path.extend_from_slice(&r.name);
                let children = if r.kind == "dir" {
                    build(
                        &path,
                        (r.size, r.own_allocated),
                        by_parent,
                        totals,
                        users,
                        categories,
                    )
                } else {
                    Vec::new()
                };
                let extension =
                    (r.kind == "file").then(|| storage_tracker_proto::reports::extension(&r.name));
                let category = extension.as_ref().map(|e| categories.of(e).to_owned());
                let file_type = extension.map(|e| String::from_utf8_lossy(&e).into_owned());
                let name = Text::of(&r.name);
                Tile {
                    name: name.text,
                    name_b64: name.b64,
                    kind: r.kind,
                    bytes: r.bytes,
                    allocated: r.on_disk,
                    files: r.files,
                    uid: Some(r.uid),
                    user: users.user(r.uid).map(str::to_owned),
                    file_type,
                    category,
                    mtime_ns: Some(r.newest_mtime_ns),
                    mtime: Some(Iso(r.newest_mtime_ns)),
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
                bytes: t.bytes.saturating_sub(own.0).saturating_sub(bytes),
                allocated: t.allocated.saturating_sub(own.1).saturating_sub(allocated),
                files: t.files.saturating_sub(files),
                uid: None,
                user: None,
                file_type: None,
                category: None,
                mtime_ns: None,
                mtime: None,
                count: Some(t.children - shown),
                children: Vec::new(),
            });
        }
        out
    }
    let children = build(
        &dir,
        top_own,
        &mut by_parent,
        &totals,
        &users,
        &state.categories,
    );
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
            allocated: top.allocated,
            files: top.files,
            uid: None,
            user: None,
            file_type: None,
            category: None,
            mtime_ns: Some(top.max_mtime_ns),
            mtime: Some(Iso(top.max_mtime_ns)),
            count: None,
            children,
        },
    }))
}
