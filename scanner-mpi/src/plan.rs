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
        /// Where rank 0 writes the id of the snapshot it begins.
        snapshot_file: Option<PathBuf>,
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
    #[error(
        "--output {} already holds an offline scan ({what}); a new scan would overwrite it. \
         Import or remove it first, or give a new or empty directory",
        path.display()
    )]
    OutputHoldsAScan { path: PathBuf, what: String },
    #[error("cannot read the --output directory {}: {source}", path.display())]
    OutputUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An offline scan's directory, checked: missing (it is created), or holding no offline scan's
/// files (a manifest or chunk files), so that a scan never overwrites one it does not own.
pub fn output_directory(dir: PathBuf) -> Result<PathBuf, PlanError> {
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(dir),
        Err(source) => return Err(PlanError::OutputUnreadable { path: dir, source }),
    };
    let (mut manifest, mut chunks) = (false, 0usize);
    for entry in entries {
        let entry = entry.map_err(|source| PlanError::OutputUnreadable {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == storage_tracker_proto::MANIFEST_FILE {
            manifest = true;
        } else if storage_tracker_proto::parse_chunk_file_name(&name).is_some() {
            chunks += 1;
        }
    }
    if !manifest && chunks == 0 {
        return Ok(dir);
    }
    let what = match (manifest, chunks) {
        (true, 0) => storage_tracker_proto::MANIFEST_FILE.to_owned(),
        (true, n) => format!(
            "{} and {n} chunk file(s)",
            storage_tracker_proto::MANIFEST_FILE
        ),
        (false, n) => format!("{n} chunk file(s)"),
    };
    Err(PlanError::OutputHoldsAScan { path: dir, what })
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

    #[test]
    fn an_output_directory_holding_an_offline_scan_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        assert!(
            output_directory(dir.clone()).is_ok(),
            "a missing directory is created"
        );
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), b"").unwrap();
        assert!(
            output_directory(dir.clone()).is_ok(),
            "other files are not a scan"
        );
        std::fs::write(dir.join(storage_tracker_proto::chunk_file_name(0, 0)), b"").unwrap();
        let e = output_directory(dir.clone()).unwrap_err().to_string();
        assert!(
            e.contains("already holds an offline scan (1 chunk file(s))"),
            "{e}"
        );
        std::fs::write(dir.join(storage_tracker_proto::MANIFEST_FILE), b"").unwrap();
        let e = output_directory(dir).unwrap_err().to_string();
        assert!(e.contains("(manifest.pb and 1 chunk file(s))"), "{e}");
    }
}
