//! Statements of the duplicate files report: the candidates kept at commit
//! (`dup_candidates`, one row per link) joined with their hashes (`file_hashes`, read grouped
//! by file, so a hash stored twice counts once), each file (device and inode: hard links of
//! one inode are one file) with its status:
//!
//! - `confirmed`: another file of the same size has the same BLAKE3 hash of its whole content;
//! - `false_positive`: hashed, and no other file of its size has its content: it only shared a
//!   size (every file of the size is hashed far enough to tell);
//! - `unverified`: not hashed yet, not far enough (its samples agree with another's and its
//!   whole content is not hashed), or it could not be read; and every file of a size that has
//!   such a file, unless it is a confirmed copy.
//!
//! A confirmed group is the files of one size and content (and name, with `same_name`); its
//! first copy is the file whose first link's path sorts first, and its wasted bytes are the
//! allocated bytes of every other copy. A group of another status is the files of one size (and
//! name) of that status, and wastes nothing (that is known). Every statement reads only these two tables, whose size the
//! candidates' threshold bounds, never `entries`.

use clickhouse::Row;
use serde::Deserialize;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::sql::quote_bytes;

use crate::params::{DuplicateStatus, WastedBy};

/// How many of a group's files [`Groups::page`] names (by their first link's path).
pub const COPIES_LISTED: usize = 50;

/// What the report is asked: which snapshot, which files, how grouped.
#[derive(Debug, Clone, Copy)]
pub struct Groups<'a> {
    pub db: &'a Database,
    pub snapshot_id: SnapshotId,
    /// Only files of at least this size.
    pub min_size: u64,
    /// Groups are of one name too (the name of each file's first link).
    pub same_name: bool,
}

impl Groups<'_> {
    /// Each candidate file: its size, first link (`first`, `first_name`), links (`n_links`),
    /// owner and allocated bytes (of its first link: `owner`, `alloc`), its hashes, why it
    /// could not be read when its latest read failed (`error`: an error that a later read of
    /// the same phase undid is gone), and `status`. (Aliases never reuse a column's name within
    /// one SELECT: ClickHouse would read the alias inside its own aggregate.)
    fn files(&self) -> String {
        let Self {
            db, snapshot_id, ..
        } = *self;
        let with_hashes = format!(
            "SELECT dev, ino, size, count() AS n_links, min(path) AS first, argMin(name, path) AS first_name,
        argMin(uid, path) AS owner, argMin(allocated, path) AS alloc,
        h_sample AS sample, h_full AS full, h_error AS error
    FROM
    (
        SELECT dev, ino, size, name, uid, allocated,
            if(parent_path = '/', concat('/', name), concat(parent_path, '/', name)) AS path
        FROM {db}.dup_candidates WHERE snapshot_id = {snapshot_id} AND size >= {min_size}
    ) AS links
    ANY LEFT JOIN
    (
        SELECT dev, ino, max(sample) AS h_sample, max(full) AS h_full,
            if(max(full) != '', '', if(max(sample) != '', maxIf(error, whole = 1), max(error))) AS h_error
        FROM {db}.file_hashes WHERE snapshot_id = {snapshot_id} GROUP BY dev, ino
    ) AS hashes USING (dev, ino)
    GROUP BY dev, ino, size, sample, full, error",
            min_size = self.min_size
        );
        let key = self.key();
        let files = format!("({with_hashes}) AS f");
        // Keys of (size[, name]) and a hash that more than one file has.
        let shared = |hash: &str| {
            format!(
                "SELECT {key}, {hash} FROM {files} WHERE {hash} != '' AND error = '' \
                 GROUP BY {key}, {hash} HAVING count() > 1"
            )
        };
        // Groups with a file whose content is not known apart from the others' yet: not
        // hashed, not readable, or sampled like another and not hashed whole. Their files that
        // are not confirmed copies are unverified, not false positives.
        let pending = format!(
            "SELECT {key} FROM {files} WHERE error != '' OR sample = '' \
             OR (full = '' AND ({key}, sample) IN ({}))",
            shared("sample")
        );
        let same_name = if self.same_name {
            // Only names another file of the size has too.
            format!(
                " WHERE (size, first_name) IN (SELECT size, first_name FROM {files} \
                 GROUP BY size, first_name HAVING count() > 1)"
            )
        } else {
            String::new()
        };
        format!(
            "SELECT *, multiIf(
        full != '' AND ({key}, full) IN ({confirmed}), 'confirmed',
        error = '' AND sample != '' AND ({key}) NOT IN ({pending}), 'false_positive',
        'unverified') AS status
FROM ({with_hashes}) AS files{same_name}",
            confirmed = shared("full"),
        )
    }

    /// The columns a group is of, before its hash.
    fn key(&self) -> &'static str {
        if self.same_name {
            "size, first_name"
        } else {
            "size"
        }
    }

    /// The columns a group of `status` is of.
    fn group_key(&self, status: DuplicateStatus) -> String {
        match status {
            DuplicateStatus::Confirmed => format!("{}, full", self.key()),
            _ => self.key().to_owned(),
        }
    }

    /// The groups of files of `status`, unordered, as [`GroupRow`] columns (in its order).
    fn groups(&self, status: DuplicateStatus) -> String {
        let key = self.group_key(status);
        let name = if self.same_name { "first_name" } else { "''" };
        let hash = match status {
            DuplicateStatus::Confirmed => "full",
            _ => "''",
        };
        format!(
            "SELECT size, {name} AS group_name, {hash} AS group_hash, count() AS n_files, sum(n_links) AS n_all_links,
    sum(alloc) AS n_allocated, {wasted} AS n_wasted,
    arraySlice(arraySort(groupArray((first, dev, ino, error))), 1, {COPIES_LISTED}) AS copies
FROM ({files}) AS files WHERE status = '{status}'
GROUP BY {key}",
            files = self.files(),
            status = status.word(),
            // Only confirmed copies waste anything.
            wasted = match status {
                DuplicateStatus::Confirmed => "toUInt64(sum(alloc) - argMin(alloc, first))",
                _ => "toUInt64(0)",
            },
        )
    }

    /// A page of the groups of `status`, most wasted bytes first (ties: larger files first,
    /// then by hash and name), as [`GroupRow`]s.
    pub fn page(&self, status: DuplicateStatus, limit: u64, offset: u64) -> String {
        format!(
            "SELECT * FROM ({}) AS groups ORDER BY n_wasted DESC, size DESC, group_hash, group_name \
             LIMIT {limit} OFFSET {offset}",
            self.groups(status)
        )
    }

    /// Files, links, bytes and groups of each status, as [`StatusRow`]s.
    pub fn summary(&self) -> String {
        let per_status = [
            DuplicateStatus::Confirmed,
            DuplicateStatus::FalsePositive,
            DuplicateStatus::Unverified,
        ]
        .map(|status| {
            format!(
                "SELECT '{}' AS status, count() AS groups, sum(n_files) AS files, sum(n_all_links) AS links, \
                 sum(n_allocated) AS allocated, sum(n_wasted) AS wasted FROM ({}) AS g",
                status.word(),
                self.groups(status)
            )
        });
        per_status.join("\nUNION ALL\n")
    }

    /// The condition on [`Self::files`] of one group.
    fn of_group(&self, group: &Group<'_>) -> String {
        let mut condition = format!(
            "status = '{}' AND size = {}",
            group.status.word(),
            group.size
        );
        if group.status == DuplicateStatus::Confirmed {
            condition.push_str(&format!(" AND full = {}", quote_bytes(group.hash)));
        }
        if self.same_name {
            condition.push_str(&format!(" AND first_name = {}", quote_bytes(group.name)));
        }
        condition
    }

    /// A page of the files of one group, by their first link's path, as [`FileRow`]s.
    pub fn group_files(&self, group: &Group<'_>, limit: u64, offset: u64) -> String {
        format!(
            "SELECT dev, ino, error FROM ({}) AS files WHERE {} ORDER BY first, dev, ino \
             LIMIT {limit} OFFSET {offset}",
            self.files(),
            self.of_group(group)
        )
    }

    /// How many files one group has.
    pub fn group_count(&self, group: &Group<'_>) -> String {
        format!(
            "SELECT count() FROM ({}) AS files WHERE {}",
            self.files(),
            self.of_group(group)
        )
    }

    /// Every link of the files given (device, inode), by path, as [`LinkRow`]s (numbers only
    /// are spliced).
    pub fn links(&self, files: &[(u64, u64)]) -> String {
        let Self {
            db, snapshot_id, ..
        } = *self;
        // (0, 0), which is no file, keeps the list a list of tuples when one file is asked.
        let list: String = std::iter::once((0, 0))
            .chain(files.iter().copied())
            .map(|(dev, ino)| format!("({dev}, {ino})"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "SELECT dev, ino, if(parent_path = '/', concat('/', name), concat(parent_path, '/', name)) AS path,
    uid, allocated, mtime_ns
FROM {db}.dup_candidates WHERE snapshot_id = {snapshot_id} AND (dev, ino) IN ({list})
ORDER BY path"
        )
    }

    /// The bytes confirmed copies waste beyond each group's first copy, per directory holding
    /// a copy (its first link's) or per owner of a copy, unordered.
    fn wasted_per(&self, by: WastedBy) -> String {
        let key = self.group_key(DuplicateStatus::Confirmed);
        let copies = format!(
            "SELECT arrayJoin(arraySlice(arraySort(groupArray((first, alloc, owner))), 2)) AS copy
    FROM ({files}) AS files WHERE status = 'confirmed' GROUP BY {key}",
            files = self.files()
        );
        let path = "tupleElement(copy, 1)";
        let (of, id) = match by {
            WastedBy::Dir => (
                format!(
                    "if(length({path}) = position(reverse({path}), '/'), '/', \
                     substring({path}, 1, length({path}) - position(reverse({path}), '/')))"
                ),
                "toUInt32(0)",
            ),
            WastedBy::User => ("''".to_owned(), "tupleElement(copy, 3)"),
        };
        format!(
            "SELECT {of} AS dir, {id} AS uid, count() AS n_copies, sum(tupleElement(copy, 2)) AS n_wasted
FROM ({copies}) AS copies
GROUP BY dir, uid"
        )
    }

    /// A page of [`Self::wasted_per`], most first, as [`WastedRow`]s.
    pub fn wasted(&self, by: WastedBy, limit: u64, offset: u64) -> String {
        format!(
            "SELECT * FROM ({}) AS w ORDER BY n_wasted DESC, dir, uid LIMIT {limit} OFFSET {offset}",
            self.wasted_per(by)
        )
    }

    /// How many directories or owners [`Self::wasted`] has.
    pub fn wasted_count(&self, by: WastedBy) -> String {
        format!("SELECT count() FROM ({}) AS w", self.wasted_per(by))
    }
}

/// One group, as a page of its files names it: its status, size, and (confirmed) content hash
/// and (with `same_name`) name.
#[derive(Debug, Clone, Copy)]
pub struct Group<'a> {
    pub status: DuplicateStatus,
    pub size: u64,
    pub hash: &'a [u8],
    pub name: &'a [u8],
}

/// A file of a group, and why it could not be read if its latest read failed.
#[derive(Debug, Row, Deserialize)]
pub struct FileRow {
    pub dev: u64,
    pub ino: u64,
    pub error: String,
}

/// A group of files.
#[derive(Debug, Row, Deserialize)]
pub struct GroupRow {
    pub size: u64,
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub hash: Vec<u8>,
    pub files: u64,
    pub links: u64,
    pub allocated: u64,
    pub wasted: u64,
    /// The first link, device, inode and read error of its first [`COPIES_LISTED`] files, by
    /// first link.
    pub copies: Vec<(serde_bytes::ByteBuf, u64, u64, String)>,
}

/// One link of a file of a group.
#[derive(Debug, Row, Deserialize)]
pub struct LinkRow {
    pub dev: u64,
    pub ino: u64,
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub uid: u32,
    pub allocated: u64,
    pub mtime_ns: i64,
}

/// The files of one status.
#[derive(Debug, Row, Deserialize)]
pub struct StatusRow {
    pub status: String,
    pub groups: u64,
    pub files: u64,
    pub links: u64,
    pub allocated: u64,
    pub wasted: u64,
}

/// Wasted bytes of one directory or owner.
#[derive(Debug, Row, Deserialize)]
pub struct WastedRow {
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    pub id: u32,
    pub copies: u64,
    pub wasted: u64,
}
