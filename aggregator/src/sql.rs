//! The statements that compute a snapshot's reports from its entries, at commit.
//!
//! Each runs on ClickHouse 18.16 and on current releases: one join per SELECT, every subquery
//! aliased, no CTEs. Hard-linked files (not directories, `nlink > 1`) have their apparent and
//! allocated bytes counted once, as `du` and ncdu count them: per directory once for every
//! directory holding one of the links, and in the per-snapshot reports once, on the link with
//! the smallest path.

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::{Database, LARGE_ENTRIES, TOP_LEVEL_ENTRIES, TOP_LEVELS};
use storage_tracker_proto::reports::{
    DUPLICATE_MIN_SIZE, age_bucket_sql, extension_sql, size_bucket_sql,
};
use storage_tracker_proto::sql::{below_prefix, quote_bytes};

/// Every directory holding `dir` ("/" included), e.g. "/a/b" -> ["/", "/a", "/a/b"].
fn ancestors(dir: &str) -> String {
    format!(
        "if({dir} = '/', ['/'], arrayPushFront(arrayMap(i -> arrayStringConcat(arraySlice(splitByChar('/', {dir}), 1, i), '/'), arraySlice(arrayEnumerate(splitByChar('/', {dir})), 2)), '/'))"
    )
}

const HARD_LINKED: &str = "kind != 'dir' AND nlink > 1";

/// Fills `dir_rollups`. Three parts, so the expansion to ancestors runs over directories, not
/// entries: (1) entries below the root (depth > 0: no string compared) summed per parent directory; (2) those sums spread to every ancestor
/// within the root; (3) hard-linked files (left out of (1)), spread per distinct (dev, ino,
/// directory), so that each counts once in every directory holding one of its links.
pub fn dir_rollups(db: &Database, snapshot_id: SnapshotId, root: &[u8]) -> String {
    let root_lit = quote_bytes(root);
    let below_lit = quote_bytes(&below_prefix(root));
    let within = format!("(dir = {root_lit} OR startsWith(dir, {below_lit}))");
    let of_snapshot = format!("{db}.entries WHERE snapshot_id = {snapshot_id}");
    let parents = ancestors("parent_path");
    format!(
        "INSERT INTO {db}.dir_rollups (snapshot_id, parent_path, name, depth, uid, gid, mtime_ns, atime_ns,
    bytes, allocated, entries, files, dirs, max_mtime_ns, max_atime_ns,
    direct_bytes, direct_allocated, direct_entries, direct_files, direct_dirs)
SELECT
    {snapshot_id}, parent_path, name, depth, uid, gid, own_mtime, own_atime,
    own_size + below_bytes + linked_bytes, own_allocated + below_allocated + linked_allocated, below_entries, below_files, below_dirs,
    if(below_entries = 0, own_mtime, greatest(own_mtime, below_mtime)),
    if(below_entries = 0, own_atime, greatest(own_atime, below_atime)),
    direct_bytes + direct_linked_bytes, direct_allocated + direct_linked_allocated, direct_entries, direct_files, direct_dirs
FROM
(
    SELECT path, parent_path, name, depth, uid, gid, own_size, own_allocated, own_mtime, own_atime,
        below_bytes, below_allocated, below_entries, below_files, below_dirs, below_mtime, below_atime,
        direct_bytes, direct_allocated, direct_entries, direct_files, direct_dirs
    FROM
    (
        SELECT path, parent_path, name, depth, uid, gid, size AS own_size, allocated AS own_allocated,
            mtime_ns AS own_mtime, atime_ns AS own_atime
        FROM {of_snapshot} AND kind = 'dir'
    ) AS d
    ANY LEFT JOIN
    (
        SELECT dir AS path, sum(b) AS below_bytes, sum(a) AS below_allocated, sum(n) AS below_entries,
            sum(f) AS below_files, sum(dd) AS below_dirs, max(mt) AS below_mtime, max(at) AS below_atime,
            sumIf(b, dir = parent_path) AS direct_bytes, sumIf(a, dir = parent_path) AS direct_allocated,
            sumIf(n, dir = parent_path) AS direct_entries, sumIf(f, dir = parent_path) AS direct_files,
            sumIf(dd, dir = parent_path) AS direct_dirs
        FROM
        (
            SELECT parent_path, sum(if({HARD_LINKED}, 0, size)) AS b, sum(if({HARD_LINKED}, 0, allocated)) AS a, count() AS n,
                countIf(kind = 'file') AS f, countIf(kind = 'dir') AS dd, max(mtime_ns) AS mt, max(atime_ns) AS at
            FROM {of_snapshot} AND depth > 0
            GROUP BY parent_path
        ) AS g
        ARRAY JOIN {parents} AS dir
        WHERE {within}
        GROUP BY dir
    ) AS below USING path
) AS totals
ANY LEFT JOIN
(
    SELECT dir AS path, sum(alloc) AS linked_allocated, sum(direct_alloc) AS direct_linked_allocated,
        sum(apparent) AS linked_bytes, sum(direct_apparent) AS direct_linked_bytes
    FROM
    (
        SELECT dev, ino, dir, any(allocated) AS alloc, if(max(dir = parent_path) = 1, any(allocated), 0) AS direct_alloc,
            any(size) AS apparent, if(max(dir = parent_path) = 1, any(size), 0) AS direct_apparent
        FROM
        (
            SELECT dev, ino, size, allocated, parent_path
            FROM {of_snapshot} AND {HARD_LINKED} AND depth > 0
        ) AS h
        ARRAY JOIN {parents} AS dir
        WHERE {within}
        GROUP BY dev, ino, dir
    ) AS per_inode
    GROUP BY dir
) AS links USING path"
    )
}

/// A report's source for the links of hard-linked files: every entry of a snapshot, each
/// with the first link of its file when it is hard-linked (the link with the smallest path),
/// so that [`once`] counts its bytes once. The report's own WHERE picks the snapshot
/// (`snapshot_id = ...`). The entries are the query's own table, not a subquery: on a cluster
/// each shard joins and sums its entries, and only the sums travel (the first links, few, go
/// to every shard).
fn entries_with_first_links(db: &Database, snapshot_id: SnapshotId) -> String {
    format!(
        "{db}.entries
ANY LEFT JOIN
(
    SELECT dev, ino, argMin(parent_path, path) AS first_parent, argMin(name, path) AS first_name
    FROM {db}.entries PREWHERE {HARD_LINKED} WHERE snapshot_id = {snapshot_id}
    GROUP BY dev, ino
) AS first_links USING (dev, ino)"
    )
}

/// `column` (bytes) of an entry of [`entries_with_first_links`], or 0 on every link of a
/// hard-linked file but its first.
fn once(column: &str) -> String {
    format!(
        "if({HARD_LINKED} AND (parent_path != first_parent OR name != first_name), 0, {column})"
    )
}

/// A report's partial sums: the snapshot's entries that `filter` keeps (a condition on
/// columns read first, or "1"), grouped by `keys` (`expression AS name, ...`, grouped by the
/// names), with the aggregates `sums(size, allocated)` makes from the bytes to count. Two
/// parts, whose rows the report sums again: the entries that are not links of a hard-linked
/// file, nearly all, are summed as they are, without a join and reading no path where the
/// keys need none; the links, few, are joined to their file's first link, whose bytes alone
/// count ([`once`]).
fn summed_once(
    db: &Database,
    snapshot_id: SnapshotId,
    filter: &str,
    keys: &[(&str, &str)],
    sums: impl Fn(&str, &str) -> String,
) -> String {
    let select: Vec<String> = keys
        .iter()
        .map(|(e, name)| format!("{e} AS {name}"))
        .collect();
    let (select, group) = (
        select.join(", "),
        keys.iter()
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(", "),
    );
    let (plain, linked) = (
        sums("size", "allocated"),
        sums(&once("size"), &once("allocated")),
    );
    let first_links = entries_with_first_links(db, snapshot_id);
    format!(
        "SELECT {select}, {plain}
    FROM {db}.entries PREWHERE NOT ({HARD_LINKED}) AND {filter} WHERE snapshot_id = {snapshot_id}
    GROUP BY {group}
    UNION ALL
    SELECT {select}, {linked}
    FROM {first_links}
    PREWHERE {HARD_LINKED} AND {filter} WHERE snapshot_id = {snapshot_id}
    GROUP BY {group}"
    )
}

/// Fills `owner_usage`: per user and per group, per top-level directory below the root.
pub fn owner_usage(db: &Database, snapshot_id: SnapshotId, root: &[u8]) -> String {
    let skip = below_prefix(root).len() + 1;
    let top = format!(
        "if(depth = 0, '', if(depth = 1, name, arrayElement(splitByChar('/', substring(parent_path, {skip})), 1)))"
    );
    let parts = summed_once(
        db,
        snapshot_id,
        "1",
        &[("uid", "uid"), ("gid", "gid"), (&top, "top")],
        |size, alloc| {
            format!(
                "count() AS n, countIf(kind = 'file') AS f, countIf(kind = 'dir') AS d, \
                 sum({size}) AS b, sum({alloc}) AS a, max(mtime_ns) AS mt, max(atime_ns) AS at"
            )
        },
    );
    format!(
        "INSERT INTO {db}.owner_usage (snapshot_id, principal, id, top, entries, files, dirs, bytes, allocated, max_mtime_ns, max_atime_ns)
SELECT {snapshot_id}, principal, if(principal = 'user', uid, gid) AS id, top,
    sum(n), sum(f), sum(d), sum(b), sum(a), max(mt), max(at)
FROM
(
    {parts}
) AS parts
ARRAY JOIN ['user', 'group'] AS principal
GROUP BY principal, id, top"
    )
}

/// The aggregates of a report of files: count, bytes and allocated bytes.
fn file_sums(size: &str, alloc: &str) -> String {
    format!("count() AS n, sum({size}) AS b, sum({alloc}) AS a")
}

/// Fills `type_usage`: files per extension.
pub fn type_usage(db: &Database, snapshot_id: SnapshotId) -> String {
    let extension = extension_sql("name");
    let parts = summed_once(
        db,
        snapshot_id,
        "kind = 'file'",
        &[(&extension, "extension")],
        file_sums,
    );
    format!(
        "INSERT INTO {db}.type_usage (snapshot_id, extension, files, bytes, allocated)
SELECT {snapshot_id}, extension, sum(n), sum(b), sum(a)
FROM
(
    {parts}
) AS parts
GROUP BY extension"
    )
}

/// Fills `dup_candidates`: every link of each file of at least [`DUPLICATE_MIN_SIZE`] whose
/// size another file (another device and inode, not a hard link of it) has too. Reads the
/// `size` column of every entry once, the rest of the rows of the large files only.
pub fn duplicate_candidates(db: &Database, snapshot_id: SnapshotId) -> String {
    let files = format!(
        "PREWHERE size >= {DUPLICATE_MIN_SIZE} AND kind = 'file' \
         WHERE snapshot_id = {snapshot_id} AND error_op = 'none'"
    );
    format!(
        "INSERT INTO {db}.dup_candidates (snapshot_id, size, dev, ino, parent_path, name, uid, gid, allocated, mtime_ns)
SELECT snapshot_id, size, dev, ino, parent_path, name, uid, gid, allocated, mtime_ns
FROM {db}.entries {files}
    AND size IN (SELECT size FROM {db}.entries {files} GROUP BY size HAVING uniqExact(dev, ino) > 1)"
    )
}

/// The duplicate candidates of a snapshot that a phase of the hashing has still to read, as
/// `(dev, ino, size, path, mtime_ns)` rows, one per file (the path of its first link), largest
/// first:
/// - `full == false` (the sampled phase): the candidates with no sample yet (not read, or not
///   readable last time);
/// - `full == true`: those whose sample another candidate of the same size shares, not yet
///   hashed whole (a file hashed whole at once, being small, is not asked again).
///
/// `min_size` keeps only files at least that large; `same_name` only files whose name, as
/// well as their size, another candidate has. `file_hashes` is read grouped by file, so a hash
/// that arrived twice counts once.
pub fn candidates_to_hash(
    db: &Database,
    snapshot_id: SnapshotId,
    full: bool,
    min_size: u64,
    same_name: bool,
) -> String {
    let of_snapshot = format!("snapshot_id = {snapshot_id}");
    let same_name = if same_name {
        format!(
            " AND (size, name) IN (SELECT size, name FROM {db}.dup_candidates WHERE {of_snapshot} \
             GROUP BY size, name HAVING uniqExact(dev, ino) > 1)"
        )
    } else {
        String::new()
    };
    let hashes = format!(
        "(SELECT dev, ino, size, max(sample) AS sample, max(full) AS full \
         FROM {db}.file_hashes WHERE {of_snapshot} GROUP BY dev, ino, size)"
    );
    // A file that could not be read is asked again: it may be readable now.
    let phase = if full {
        format!(
            "(dev, ino) IN (SELECT dev, ino FROM {hashes} WHERE full = '' AND sample != '' \
             AND (size, sample) IN (SELECT size, sample FROM {hashes} WHERE sample != '' \
             GROUP BY size, sample HAVING count() > 1))"
        )
    } else {
        format!(
            "(dev, ino) NOT IN (SELECT dev, ino FROM {db}.file_hashes WHERE {of_snapshot} \
             AND sample != '')"
        )
    };
    format!(
        "SELECT dev, ino, size, min(if(parent_path = '/', concat('/', name), concat(parent_path, '/', name))) AS path,
    any(mtime_ns) AS mtime_ns
FROM {db}.dup_candidates
WHERE {of_snapshot} AND size >= {min_size}{same_name} AND {phase}
GROUP BY dev, ino, size
ORDER BY size DESC, dev, ino"
    )
}

/// Fills `large_entries`: the rows of every entry at least as large as the snapshot's
/// [`LARGE_ENTRIES`]th largest (all of them when it has fewer). The threshold comes from the
/// `size` column alone; only the rows at least that large are read whole.
pub fn large_entries(db: &Database, snapshot_id: SnapshotId) -> String {
    format!(
        "INSERT INTO {db}.large_entries ({ENTRY_COLUMNS})
SELECT {ENTRY_COLUMNS} FROM {db}.entries
PREWHERE size >= (SELECT min(size) FROM (SELECT size FROM {db}.entries WHERE snapshot_id = {snapshot_id} ORDER BY size DESC LIMIT {LARGE_ENTRIES}))
WHERE snapshot_id = {snapshot_id}"
    )
}

/// The stored columns of `entries`, `large_entries` and `top_levels`.
const ENTRY_COLUMNS: &str = "snapshot_id, rank, seq, parent_path, name, depth, kind, size, allocated, nlink, ino, \
     dev, mode, uid, gid, atime_ns, mtime_ns, ctime_ns, btime_ns, symlink_target, error_op, errno";

/// How many entries lie at each depth up to [`TOP_LEVELS`] below the root, as (depth, count)
/// rows: what `top_levels` may hold.
pub fn shallow_depths(db: &Database, snapshot_id: SnapshotId) -> String {
    format!(
        "SELECT depth, count() FROM {db}.entries PREWHERE depth <= {TOP_LEVELS} \
         WHERE snapshot_id = {snapshot_id} GROUP BY depth ORDER BY depth"
    )
}

/// How many levels below the root `top_levels` holds, given the entries per depth: as many as
/// fit in [`TOP_LEVEL_ENTRIES`] in all, at most [`TOP_LEVELS`].
pub fn top_levels_kept(per_depth: &[(u32, u64)]) -> u32 {
    let mut held = 0u64;
    let mut levels = 0;
    for &(depth, count) in per_depth {
        held += count;
        if depth > TOP_LEVELS || held > TOP_LEVEL_ENTRIES {
            break;
        }
        levels = depth;
    }
    levels
}

/// Fills `top_levels`: the rows of every entry at most `levels` below the root.
pub fn top_levels(db: &Database, snapshot_id: SnapshotId, levels: u32) -> String {
    format!(
        "INSERT INTO {db}.top_levels ({ENTRY_COLUMNS})
SELECT {ENTRY_COLUMNS} FROM {db}.entries PREWHERE depth <= {levels} WHERE snapshot_id = {snapshot_id}"
    )
}

/// Fills `histograms`: files by size and by mtime and atime age, ages seen from `now_ns`. The
/// files are summed per (size, mtime, atime) bucket first, each bucket computed once a file,
/// then spread to the three histograms.
pub fn histograms(db: &Database, snapshot_id: SnapshotId, now_ns: i64) -> String {
    let size = size_bucket_sql("size");
    let mtime = age_bucket_sql("mtime_ns", now_ns);
    let atime = age_bucket_sql("atime_ns", now_ns);
    let parts = summed_once(
        db,
        snapshot_id,
        "kind = 'file'",
        &[
            (&size, "size_bucket"),
            (&mtime, "mtime_bucket"),
            (&atime, "atime_bucket"),
        ],
        file_sums,
    );
    format!(
        "INSERT INTO {db}.histograms (snapshot_id, histogram, bucket, files, bytes, allocated)
SELECT {snapshot_id}, histogram, bucket, sum(n), sum(b), sum(a)
FROM
(
    {parts}
) AS parts
ARRAY JOIN ['size', 'mtime', 'atime'] AS histogram, [size_bucket, mtime_bucket, atime_bucket] AS bucket
GROUP BY histogram, bucket"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_levels_keep_the_levels_that_fit() {
        assert_eq!(top_levels_kept(&[(0, 1), (1, 10), (2, 100)]), 2);
        assert_eq!(
            top_levels_kept(&[(0, 1), (1, 10), (2, 100), (3, 1000), (4, 10_000)]),
            TOP_LEVELS
        );
        // The third level would take it past the bound: two are kept.
        assert_eq!(
            top_levels_kept(&[(0, 1), (1, 10), (2, 100), (3, TOP_LEVEL_ENTRIES)]),
            2
        );
        // A root with more children than the bound: the root alone.
        assert_eq!(top_levels_kept(&[(0, 1), (1, TOP_LEVEL_ENTRIES + 1)]), 0);
        assert_eq!(top_levels_kept(&[]), 0);
    }
}
