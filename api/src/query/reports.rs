//! Statements on the per-snapshot reports: usage by owner and by type, the histograms, and the
//! names of a page's uids and gids.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::sql::quote_str;

use super::Principal;
use crate::categories::Categories;
use crate::params::HistogramOf;

/// A user or group name of a snapshot.
#[derive(Debug, Row, Deserialize)]
pub struct PrincipalRow {
    /// 1 user, 2 group.
    pub kind: i8,
    pub id: u32,
    pub name: String,
}

/// Names of the given uids and gids as [`PrincipalRow`]s (numbers only: nothing from the
/// request is spliced).
pub fn principals(db: &Database, snapshot_id: SnapshotId, uids: &[u32], gids: &[u32]) -> String {
    let list = |ids: &[u32]| {
        if ids.is_empty() {
            "0".to_owned()
        } else {
            ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        }
    };
    format!(
        "SELECT kind, id, name FROM {db}.principals WHERE snapshot_id = {snapshot_id} \
         AND ((kind = 'user' AND id IN ({})) OR (kind = 'group' AND id IN ({})))",
        list(uids),
        list(gids)
    )
}

/// Usage per owner, group or file type: the key (a type) or the id and name (an owner).
#[derive(Debug, Row, Deserialize)]
pub struct UsageRow {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub id: u32,
    pub name: String,
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub allocated: u64,
}

/// Usage per user or per group, largest first, as [`UsageRow`]s.
pub fn owner_usage(
    db: &Database,
    snapshot_id: SnapshotId,
    principal: Principal,
    limit: u64,
    offset: u64,
) -> String {
    let principal = principal.literal();
    format!(
        "SELECT '' AS key, id, name, entries, files, bytes, allocated
FROM
(
    SELECT id, sum(entries) AS entries, sum(files) AS files, sum(bytes) AS bytes, sum(allocated) AS allocated
    FROM {db}.owner_usage WHERE snapshot_id = {snapshot_id} AND principal = {principal} GROUP BY id
) AS u
ANY LEFT JOIN
(
    SELECT id, name FROM {db}.principals WHERE snapshot_id = {snapshot_id} AND kind = {principal}
) AS n USING id
ORDER BY bytes DESC, id ASC
LIMIT {limit} OFFSET {offset}"
    )
}

/// How many users or groups (`principal`), or file types (`None`), a snapshot's usage has.
pub fn usage_count(db: &Database, snapshot_id: SnapshotId, principal: Option<Principal>) -> String {
    match principal {
        Some(principal) => format!(
            "SELECT uniqExact(id) FROM {db}.owner_usage WHERE snapshot_id = {snapshot_id} AND principal = {}",
            principal.literal()
        ),
        None => format!("SELECT count() FROM {db}.type_usage WHERE snapshot_id = {snapshot_id}"),
    }
}

/// Usage per file type, largest first, as [`UsageRow`]s.
pub fn type_usage(db: &Database, snapshot_id: SnapshotId, limit: u64, offset: u64) -> String {
    format!(
        "SELECT extension AS key, toUInt32(0) AS id, '' AS name, files AS entries, files, bytes, allocated
FROM {db}.type_usage WHERE snapshot_id = {snapshot_id}
ORDER BY bytes DESC, key ASC
LIMIT {limit} OFFSET {offset}"
    )
}

/// Usage per file category, with its largest types.
#[derive(Debug, Row, Deserialize)]
pub struct CategoryRow {
    pub key: String,
    pub files: u64,
    pub bytes: u64,
    pub allocated: u64,
    /// Bytes and extension of the category's largest types (at most [`CATEGORY_TYPES_SHOWN`]),
    /// largest first.
    pub types: Vec<(u64, serde_bytes::ByteBuf)>,
}

/// How many of a category's types [`category_usage`] names, largest first.
pub const CATEGORY_TYPES_SHOWN: usize = 10;

/// The category of the `extension` column of `type_usage`, as SQL: each type of `categories`
/// to its category, every other to [`crate::categories::OTHER`].
fn category_sql(categories: &Categories) -> String {
    let (types, names) = categories.pairs();
    let other = quote_str(crate::categories::OTHER);
    if types.is_empty() {
        return other;
    }
    let list = |words: &[&str]| {
        words
            .iter()
            .map(|w| quote_str(w))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "transform(extension, [{}], [{}], {other})",
        list(&types),
        list(&names)
    )
}

/// Usage per file category (the snapshot's type report, each type in its category), largest
/// first, as [`CategoryRow`]s.
pub fn category_usage(
    db: &Database,
    snapshot_id: SnapshotId,
    categories: &Categories,
    limit: u64,
    offset: u64,
) -> String {
    format!(
        "SELECT category AS key, sum(f) AS files, sum(b) AS bytes, sum(a) AS allocated,
    arraySlice(arrayReverseSort(groupArray((b, extension))), 1, {CATEGORY_TYPES_SHOWN}) AS types
FROM
(
    SELECT {} AS category, extension, files AS f, bytes AS b, allocated AS a
    FROM {db}.type_usage WHERE snapshot_id = {snapshot_id}
)
GROUP BY category
ORDER BY bytes DESC, key ASC
LIMIT {limit} OFFSET {offset}",
        category_sql(categories)
    )
}

/// How many categories a snapshot's files fall in.
pub fn category_count(db: &Database, snapshot_id: SnapshotId, categories: &Categories) -> String {
    format!(
        "SELECT uniqExact({}) FROM {db}.type_usage WHERE snapshot_id = {snapshot_id}",
        category_sql(categories)
    )
}

/// One bucket of a histogram.
#[derive(Debug, Row, Deserialize)]
pub struct BucketRow {
    pub bucket: u8,
    pub files: u64,
    pub bytes: u64,
    pub allocated: u64,
}

/// The buckets of one histogram as [`BucketRow`]s.
pub fn histogram(db: &Database, snapshot_id: SnapshotId, of: HistogramOf) -> String {
    format!(
        "SELECT bucket, files, bytes, allocated FROM {db}.histograms WHERE snapshot_id = {snapshot_id} AND histogram = {} ORDER BY bucket",
        quote_str(of.word())
    )
}
