//! What a scan job is asked to do, checked on each rank before the job starts: the root, the
//! snapshot's label, where the chunks go, and the [`ScanPlan`] every rank runs; and what
//! BeginSnapshot says about it.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use storage_tracker_proto::scan_options::ScanOptions;
use storage_tracker_proto::v1::BeginSnapshotRequest;

use crate::scan::ScanPlan;

/// A scan job, checked: every rank of the job runs the same plan.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// The filesystem's name recorded with the snapshot.
    pub label: String,
    pub output: OutputPlan,
    pub scan: ScanPlan,
}

/// Where the ranks' chunks go.
#[derive(Debug, Clone)]
pub enum OutputPlan {
    /// Streamed to the aggregator at `address` (checked by [`crate::upload::parse_address`]).
    Aggregator {
        address: String,
        /// Chunks a rank may queue for sending (as many again may wait for their
        /// acknowledgement).
        in_flight: usize,
        /// How long to keep retrying while the aggregator is unreachable.
        retry_for: Duration,
    },
    /// Written into this directory with a manifest: an offline scan, imported later.
    Directory(PathBuf),
}

/// The root of a scan: a directory, by its canonical path.
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
    /// The device it is on, for `--one-file-system`.
    pub dev: u64,
}

/// Why a plan cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot scan {}: {source}; pass an existing directory", given.display())]
    NoRoot {
        given: PathBuf,
        source: std::io::Error,
    },
    #[error("the root {} is not a directory; pass the directory to scan", path.display())]
    RootNotADirectory { path: PathBuf },
}

impl Root {
    /// The canonical path of `given`, if it is a directory.
    pub fn check(given: &Path) -> Result<Self, PlanError> {
        let path = std::fs::canonicalize(given).map_err(|source| PlanError::NoRoot {
            given: given.to_path_buf(),
            source,
        })?;
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(Self { dev: m.dev(), path }),
            _ => Err(PlanError::RootNotADirectory { path }),
        }
    }
}

impl JobPlan {
    /// What BeginSnapshot carries for this plan, from rank 0 on `host`, with `hosts` the host
    /// of every rank. The scan id is unique per scan: host, process and start time.
    pub fn begin_request(&self, hosts: &[String], host: &str) -> BeginSnapshotRequest {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let walk = &self.scan.options;
        BeginSnapshotRequest {
            filesystem_label: self.label.clone(),
            root_path: self.scan.root.as_os_str().as_bytes().to_vec(),
            ranks: hosts.len() as u32,
            hosts: hosts.to_vec(),
            scanner_version: env!("CARGO_PKG_VERSION").to_owned(),
            schema_version: storage_tracker_proto::SCHEMA_VERSION,
            scan_id: format!("{host}-{}-{}", std::process::id(), now.as_nanos()),
            started_at: now.as_secs() as i64,
            started_at_ns: now.as_nanos() as i64,
            scan_options: ScanOptions {
                max_depth: walk.max_depth,
                exclude: walk.exclude.iter().map(|e| e.glob().to_owned()).collect(),
                one_file_system: walk.same_device.is_some(),
                follow_symlinks: walk.follow_symlinks,
            }
            .canonical(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_is_an_existing_directory_by_its_canonical_path() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        let root = Root::check(&tmp.path().join("d/../d")).unwrap();
        assert_eq!(root.path, tmp.path().canonicalize().unwrap().join("d"));
        let not_dir = Root::check(&tmp.path().join("f")).unwrap_err().to_string();
        assert!(not_dir.contains("is not a directory"), "{not_dir}");
        let missing = Root::check(Path::new("/nonexistent/storage-tracker")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot scan /nonexistent/storage-tracker: "),
            "{missing}"
        );
    }
}
