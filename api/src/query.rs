//! Every statement the API reads with, and the typed pieces they are built from. Handlers say
//! what they want (a snapshot, a directory, an [`entries::EntryFilter`], an order, a page) and
//! get the SQL from here; no handler writes SQL.
//!
//! A value from a request enters a statement only through [`quote_bytes`] (paths, names, the
//! words of a fixed list) or as a number the request parser checked; column names and orders
//! come from fixed lists, matched here. Like the write side (the aggregator's `sql.rs`), each
//! statement runs on ClickHouse 18.16 and on current releases: one join per SELECT, every
//! subquery aliased, no CTEs. Every read of `entries` and `dir_rollups` names its snapshot and
//! a range of the sort key after it (`parent_path`, then `name`), so what it reads is bounded
//! by the directory asked, not by the snapshot.
//!
//! - [`snapshots`]: the committed-snapshot condition ([`snapshots::Committed`]) and the
//!   statements on `snapshots`: a page of them, one, the ids of one filesystem's, those holding
//!   a directory.
//! - [`entries`]: which entries ([`entries::EntryFilter`]: text match, size, owner, group, type,
//!   times, under a directory, at given paths, in a window), a page of them by path, the
//!   paths of a page largest first, a page of the largest entries kept at commit, the pages of
//!   a download after a key, an entry's own size, the ncdu export.
//! - [`tree`]: entries joined with their trees' totals (the one join of `entries` with
//!   `dir_rollups`, for a directory's children, one entry, or a treemap's levels), a
//!   directory's rollup, the rollups of a page of directories, the largest directories.
//! - [`reports`]: usage by owner and by type, histograms, and the names of uids and gids.
//! - [`duplicates`]: the duplicate files report: groups of candidates by status, their links,
//!   a summary, and the bytes wasted per directory and per owner.
//! - [`gauges`]: the usage gauges for Prometheus: the latest snapshots of each filesystem, a
//!   snapshot's top-level directories and users.
//! - [`growth`]: a directory's history, and what changed between two snapshots per child and
//!   per owner.
//! - [`treemap`]: a treemap's tiles (from `top_levels` near the root) and its directories'
//!   totals.
//! - [`windows`]: a subtree cut into windows of the sort key, for a download that reads it all.

pub mod console;
pub mod duplicates;
pub mod entries;
pub mod gauges;
pub mod growth;
pub mod reports;
pub mod snapshots;
pub mod tree;
pub mod treemap;
pub mod windows;

use storage_tracker_proto::ddl::Database;
use storage_tracker_proto::entry::split_path;
use storage_tracker_proto::sql::{quote_bytes, quote_str};

use crate::params::{OwnerBy, UsageBy};

/// Users or groups: what `owner_usage`, `principals` and an owner filter tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    User,
    Group,
}

impl Principal {
    /// Usage by user or by group; `None` for usage by type.
    pub fn of_usage(by: UsageBy) -> Option<Self> {
        match by {
            UsageBy::User => Some(Self::User),
            UsageBy::Group => Some(Self::Group),
            UsageBy::Type | UsageBy::Category => None,
        }
    }

    /// The `Enum8` value of the `principal` and `kind` columns, as a literal.
    fn literal(self) -> String {
        quote_str(match self {
            Self::User => "user",
            Self::Group => "group",
        })
    }

    /// The entry column holding its id.
    fn id_column(self) -> &'static str {
        match self {
            Self::User => "uid",
            Self::Group => "gid",
        }
    }
}

impl From<OwnerBy> for Principal {
    fn from(by: OwnerBy) -> Self {
        match by {
            OwnerBy::User => Self::User,
            OwnerBy::Group => Self::Group,
        }
    }
}

/// The key of the entry (or rollup) at `path` in a table sorted by `parent_path, name`.
fn at_path(path: &[u8]) -> String {
    let (parent, name) = split_path(path);
    at_key(parent, name)
}

/// `parent_path = … AND name = …`: one row by the sort key.
fn at_key(parent: &[u8], name: &[u8]) -> String {
    format!(
        "parent_path = {} AND name = {}",
        quote_bytes(parent),
        quote_bytes(name)
    )
}

/// The server's version: the health check's first question.
pub fn version() -> &'static str {
    "SELECT version()"
}

/// 1 when the database's `entries` is a cluster's `Distributed` table, 0 when it is a table of
/// this server; no row before the aggregator has made it.
pub fn entries_distributed(db: &Database) -> String {
    format!(
        "SELECT toUInt8(engine = 'Distributed') FROM system.tables WHERE database = {} AND name = 'entries'",
        quote_str(db.as_str())
    )
}

/// 1 when the database's tables are a cluster's distributed tables and the session does not
/// run a subquery over one of them once, on this server (`distributed_product_mode`
/// 'global'): on each shard it would be refused, or read that shard's rows alone.
pub fn cluster_misread(db: &Database) -> String {
    format!(
        "SELECT toUInt8((SELECT count() FROM system.tables WHERE database = {} AND name = 'entries' \
         AND engine = 'Distributed') > 0 AND (SELECT value FROM system.settings \
         WHERE name = 'distributed_product_mode') != 'global')",
        quote_str(db.as_str())
    )
}
