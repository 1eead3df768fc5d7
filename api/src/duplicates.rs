//! The duplicate files report of a snapshot: groups of candidates (files of one size, kept at
//! commit) by status — confirmed copies, candidates not verified yet, candidates that proved
//! different — each with every copy's links, and the bytes confirmed copies waste per directory
//! and per owner. Hashes come from `storage-scan --hash-duplicates`; before it has run, every
//! candidate is unverified. Snapshot-wide, so an admin token's only.

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use storage_tracker_proto::SnapshotId;

use crate::extract::{Check, Checked, InSnapshot, Route};
use crate::listing::OwnerNames;
use crate::params::{DuplicateStatus, WastedBy, Word, page};
use crate::paths::Text;
use crate::query::duplicates::{
    FileRow, Group as GroupKey, GroupRow, Groups, LinkRow, StatusRow, WastedRow,
};
use crate::timestamp::Iso;
use crate::{ApiError, AppState};

/// The routes of this resource.
pub fn routes() -> crate::resource::Routes {
    crate::resource::Routes::default()
        .get("/api/v1/snapshots/{snapshot_id}/duplicates", duplicates)
        .get("/api/v1/snapshots/{snapshot_id}/duplicates/wasted", wasted)
        .get("/api/v1/snapshots/{snapshot_id}/duplicates/copies", copies)
}

/// Which candidates, as every route of the report takes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked {
    min_size: u64,
    same_name: bool,
    limit: u64,
    offset: u64,
}

fn asked(
    route: &Route,
    min_size: Option<u64>,
    same_name: Option<bool>,
    limit: Option<u64>,
    offset: Option<u64>,
) -> Result<Asked, ApiError> {
    let (limit, offset) = page(limit, offset)?;
    route.needs_admin("the duplicates report")?;
    Ok(Asked {
        min_size: min_size.unwrap_or(0),
        same_name: same_name.unwrap_or(false),
        limit,
        offset,
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct DuplicatesParams {
    /// confirmed (default), unverified or false_positive.
    #[serde(default)]
    status: Word<DuplicateStatus>,
    /// Only files at least this large (bytes; candidates are at least 1 MiB).
    min_size: Option<u64>,
    /// Group by name as well as by size and content.
    same_name: Option<bool>,
    limit: Option<u64>,
    offset: Option<u64>,
}

impl Check for DuplicatesParams {
    type Checked = (DuplicateStatus, Asked);

    fn check(self, route: &Route) -> Result<Self::Checked, ApiError> {
        let status = self.status.checked()?;
        let asked = asked(
            route,
            self.min_size,
            self.same_name,
            self.limit,
            self.offset,
        )?;
        Ok((status, asked))
    }
}

/// One link of a copy.
#[derive(Debug, Serialize)]
pub(crate) struct LinkPath {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
}

/// One file of a group (hard links of one inode are one file).
#[derive(Debug, Serialize)]
pub(crate) struct FileCopy {
    /// Every link of the file, by path.
    links: Vec<LinkPath>,
    uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    allocated: u64,
    mtime_ns: i64,
    mtime: Iso,
    /// Why the file could not be hashed, when its latest read failed ("changed since the
    /// scan: …").
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

/// A group of files.
#[derive(Debug, Serialize)]
pub(crate) struct Group {
    size: u64,
    /// The shared name (with same_name=true).
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_b64: Option<String>,
    /// BLAKE3 of the content, in hex (confirmed groups).
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<String>,
    files: u64,
    links: u64,
    allocated: u64,
    /// Allocated bytes of every file but the first: what removing the copies frees (0 but in a
    /// confirmed group).
    wasted: u64,
    /// The first files of the group by path (at most 50), the first one first.
    copies: Vec<FileCopy>,
}

/// The files of one status.
#[derive(Debug, Serialize)]
pub(crate) struct StatusSummary {
    status: String,
    groups: u64,
    files: u64,
    links: u64,
    allocated: u64,
    wasted: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Duplicates {
    snapshot_id: SnapshotId,
    status: &'static str,
    min_size: u64,
    same_name: bool,
    /// Every status's groups, files and bytes.
    summary: Vec<StatusSummary>,
    /// How many groups of this status there are.
    total: u64,
    limit: u64,
    offset: u64,
    groups: Vec<Group>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /api/v1/snapshots/{id}/duplicates?status=confirmed|unverified|false_positive`: groups
/// of duplicate candidates, most wasted bytes first, with every copy's links.
pub(crate) async fn duplicates(
    State(state): State<AppState>,
    Checked((status, asked)): Checked<DuplicatesParams>,
    InSnapshot { snapshot, .. }: InSnapshot,
) -> Result<Json<Duplicates>, ApiError> {
    let snapshot_id = snapshot.snapshot_id;
    let groups = Groups {
        db: &state.database,
        snapshot_id,
        min_size: asked.min_size,
        same_name: asked.same_name,
    };
    let client = &state.client;
    let rows: Vec<GroupRow> = client
        .query(&groups.page(status, asked.limit, asked.offset))
        .fetch_all()
        .await?;
    let summary: Vec<StatusRow> = client.query(&groups.summary()).fetch_all().await?;
    let files: Vec<(u64, u64)> = rows
        .iter()
        .flat_map(|g| g.copies.iter().map(|(_, dev, ino, _)| (*dev, *ino)))
        .collect();
    let mut by_file = copies_of(&state, &groups, snapshot_id, &files).await?;
    let groups = rows
        .into_iter()
        .map(|g| {
            let name = (asked.same_name).then(|| Text::of(&g.name));
            Group {
                size: g.size,
                name: name.as_ref().map(|n| n.text.clone()),
                name_b64: name.and_then(|n| n.b64),
                hash: (!g.hash.is_empty()).then(|| hex(&g.hash)),
                files: g.files,
                links: g.links,
                allocated: g.allocated,
                wasted: g.wasted,
                copies: g
                    .copies
                    .iter()
                    .filter_map(|(_, dev, ino, error)| {
                        let mut copy = by_file.remove(&(*dev, *ino))?;
                        copy.problem = (!error.is_empty()).then(|| error.clone());
                        Some(copy)
                    })
                    .collect(),
            }
        })
        .collect();
    // Every status, in the order of the words, present even when it has no files.
    let mut summary: HashMap<String, StatusRow> =
        summary.into_iter().map(|s| (s.status.clone(), s)).collect();
    let summary: Vec<StatusSummary> = DuplicateStatus::WORDS
        .iter()
        .map(|&word| {
            let s = summary.remove(word);
            StatusSummary {
                status: word.to_owned(),
                groups: s.as_ref().map_or(0, |s| s.groups),
                files: s.as_ref().map_or(0, |s| s.files),
                links: s.as_ref().map_or(0, |s| s.links),
                allocated: s.as_ref().map_or(0, |s| s.allocated),
                wasted: s.as_ref().map_or(0, |s| s.wasted),
            }
        })
        .collect();
    // The groups of this status: the summary counted them.
    let total = summary
        .iter()
        .find(|s| s.status == status.word())
        .map_or(0, |s| s.groups);
    Ok(Json(Duplicates {
        snapshot_id,
        status: status.word(),
        min_size: asked.min_size,
        same_name: asked.same_name,
        summary,
        total,
        limit: asked.limit,
        offset: asked.offset,
        groups,
    }))
}

/// The files given (device, inode) with every link of each, by file.
async fn copies_of(
    state: &AppState,
    groups: &Groups<'_>,
    snapshot_id: SnapshotId,
    files: &[(u64, u64)],
) -> Result<HashMap<(u64, u64), FileCopy>, ApiError> {
    let links: Vec<LinkRow> = state.client.query(&groups.links(files)).fetch_all().await?;
    let names = OwnerNames::of(state, snapshot_id, links.iter().map(|l| l.uid), []).await?;
    let mut by_file: HashMap<(u64, u64), FileCopy> = HashMap::new();
    for link in links {
        let path = Text::of(&link.path);
        let copy = by_file
            .entry((link.dev, link.ino))
            .or_insert_with(|| FileCopy {
                links: Vec::new(),
                uid: link.uid,
                user: names.user(link.uid).map(str::to_owned),
                allocated: link.allocated,
                mtime_ns: link.mtime_ns,
                mtime: Iso(link.mtime_ns),
                problem: None,
            });
        copy.links.push(LinkPath {
            path: path.text,
            path_b64: path.b64,
        });
    }
    Ok(by_file)
}

#[derive(Debug, Deserialize)]
pub(crate) struct CopiesParams {
    /// confirmed (default), unverified or false_positive.
    #[serde(default)]
    status: Word<DuplicateStatus>,
    /// The group's size (required).
    size: Option<u64>,
    /// The group's hash, 64 hex digits (required for a confirmed group).
    hash: Option<String>,
    /// The group's name (with same_name=true), as text or as base64 of its bytes.
    name: Option<String>,
    name_b64: Option<String>,
    min_size: Option<u64>,
    same_name: Option<bool>,
    limit: Option<u64>,
    offset: Option<u64>,
}

/// One group, checked.
#[derive(Debug)]
pub(crate) struct GroupAsked {
    status: DuplicateStatus,
    size: u64,
    hash: Vec<u8>,
    name: Vec<u8>,
    asked: Asked,
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..32)
        .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

impl Check for CopiesParams {
    type Checked = GroupAsked;

    fn check(self, route: &Route) -> Result<GroupAsked, ApiError> {
        let status = self.status.checked()?;
        let size = self.size.ok_or_else(|| {
            ApiError::BadRequest("give the group's size= (a group of the duplicates report)".into())
        })?;
        let hash = match (status, &self.hash) {
            (DuplicateStatus::Confirmed, Some(h)) => unhex(h).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "hash must be 64 hex digits (a confirmed group's hash), got {h:?}"
                ))
            })?,
            (DuplicateStatus::Confirmed, None) => {
                return Err(ApiError::BadRequest(
                    "a confirmed group is named by its size= and hash=".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(ApiError::BadRequest(
                    "hash= names a confirmed group; other groups are named by size= (and name=)"
                        .into(),
                ));
            }
            (_, None) => Vec::new(),
        };
        let same_name = self.same_name.unwrap_or(false);
        let name = match (same_name, self.name, self.name_b64) {
            (true, Some(n), None) => n.into_bytes(),
            (true, None, Some(b)) => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(&b)
                    .map_err(|e| ApiError::BadRequest(format!("name_b64 is not base64: {e}")))?
            }
            (true, _, _) => {
                return Err(ApiError::BadRequest(
                    "with same_name=true a group is named by its name= or name_b64= too".into(),
                ));
            }
            (false, None, None) => Vec::new(),
            (false, _, _) => {
                return Err(ApiError::BadRequest(
                    "name= names a group of same_name=true; give that too".into(),
                ));
            }
        };
        let asked = asked(
            route,
            self.min_size,
            Some(same_name),
            self.limit,
            self.offset,
        )?;
        Ok(GroupAsked {
            status,
            size,
            hash,
            name,
            asked,
        })
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct GroupCopies {
    snapshot_id: SnapshotId,
    status: &'static str,
    size: u64,
    /// How many files the group has.
    total: u64,
    limit: u64,
    offset: u64,
    /// A page of its files, by their first link's path.
    copies: Vec<FileCopy>,
}

/// `GET /api/v1/snapshots/{id}/duplicates/copies?status=…&size=…&hash=…`: every file of one
/// group, paged, by their first link's path.
pub(crate) async fn copies(
    State(state): State<AppState>,
    Checked(g): Checked<CopiesParams>,
    InSnapshot { snapshot, .. }: InSnapshot,
) -> Result<Json<GroupCopies>, ApiError> {
    let snapshot_id = snapshot.snapshot_id;
    let groups = Groups {
        db: &state.database,
        snapshot_id,
        min_size: g.asked.min_size,
        same_name: g.asked.same_name,
    };
    let group = GroupKey {
        status: g.status,
        size: g.size,
        hash: &g.hash,
        name: &g.name,
    };
    let rows: Vec<FileRow> = state
        .client
        .query(&groups.group_files(&group, g.asked.limit, g.asked.offset))
        .fetch_all()
        .await?;
    let total: u64 = state
        .client
        .query(&groups.group_count(&group))
        .fetch_one()
        .await?;
    let files: Vec<(u64, u64)> = rows.iter().map(|r| (r.dev, r.ino)).collect();
    let mut by_file = copies_of(&state, &groups, snapshot_id, &files).await?;
    let copies = rows
        .into_iter()
        .filter_map(|r| {
            let mut copy = by_file.remove(&(r.dev, r.ino))?;
            copy.problem = (!r.error.is_empty()).then_some(r.error);
            Some(copy)
        })
        .collect();
    Ok(Json(GroupCopies {
        snapshot_id,
        status: g.status.word(),
        size: g.size,
        total,
        limit: g.asked.limit,
        offset: g.asked.offset,
        copies,
    }))
}

#[derive(Debug, Deserialize)]
pub(crate) struct WastedParams {
    /// dir (default) or user.
    #[serde(default)]
    by: Word<WastedBy>,
    min_size: Option<u64>,
    same_name: Option<bool>,
    limit: Option<u64>,
    offset: Option<u64>,
}

impl Check for WastedParams {
    type Checked = (WastedBy, Asked);

    fn check(self, route: &Route) -> Result<Self::Checked, ApiError> {
        let by = self.by.checked()?;
        let asked = asked(
            route,
            self.min_size,
            self.same_name,
            self.limit,
            self.offset,
        )?;
        Ok((by, asked))
    }
}

/// The bytes confirmed copies waste in one directory or of one owner.
#[derive(Debug, Serialize)]
pub(crate) struct WastedItem {
    /// The directory holding the copies (by=dir).
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    /// The owner of the copies (by=user).
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    /// Copies beyond their group's first.
    copies: u64,
    /// Their allocated bytes.
    wasted: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct Wasted {
    snapshot_id: SnapshotId,
    by: &'static str,
    min_size: u64,
    same_name: bool,
    /// How many directories or owners hold copies.
    total: u64,
    limit: u64,
    offset: u64,
    items: Vec<WastedItem>,
}

/// `GET /api/v1/snapshots/{id}/duplicates/wasted?by=dir|user`: the bytes confirmed copies
/// waste beyond each group's first copy, per directory holding them or per owner, most first.
pub(crate) async fn wasted(
    State(state): State<AppState>,
    Checked((by, asked)): Checked<WastedParams>,
    InSnapshot { snapshot, .. }: InSnapshot,
) -> Result<Json<Wasted>, ApiError> {
    let snapshot_id = snapshot.snapshot_id;
    let groups = Groups {
        db: &state.database,
        snapshot_id,
        min_size: asked.min_size,
        same_name: asked.same_name,
    };
    let rows: Vec<WastedRow> = state
        .client
        .query(&groups.wasted(by, asked.limit, asked.offset))
        .fetch_all()
        .await?;
    let total: u64 = state
        .client
        .query(&groups.wasted_count(by))
        .fetch_one()
        .await?;
    let names = match by {
        WastedBy::User => {
            OwnerNames::of(&state, snapshot_id, rows.iter().map(|r| r.id), []).await?
        }
        WastedBy::Dir => OwnerNames::default(),
    };
    let items = rows
        .into_iter()
        .map(|r| {
            let (path, uid) = match by {
                WastedBy::Dir => (Some(Text::of(&r.path)), None),
                WastedBy::User => (None, Some(r.id)),
            };
            WastedItem {
                path: path.as_ref().map(|p| p.text.clone()),
                path_b64: path.and_then(|p| p.b64),
                uid,
                user: uid.and_then(|u| names.user(u)).map(str::to_owned),
                copies: r.copies,
                wasted: r.wasted,
            }
        })
        .collect();
    Ok(Json(Wasted {
        snapshot_id,
        by: by.word(),
        min_size: asked.min_size,
        same_name: asked.same_name,
        total,
        limit: asked.limit,
        offset: asked.offset,
        items,
    }))
}
