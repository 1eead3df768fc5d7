//! The aggregator's durable spool: what it acknowledged and has not yet stored in ClickHouse.
//!
//! A chunk is acknowledged only after its Parquet bytes are written here and fsynced (file and
//! directory); it leaves the spool once its rows are in ClickHouse. A snapshot's directory also
//! holds its record and, once the scanner asked to finish, the finish request, so a restarted
//! aggregator can finish every snapshot it had acknowledged anything of.
//!
//! ```text
//! SPOOL/snapshots/<id>/snapshot.json              the snapshot's record
//! SPOOL/snapshots/<id>/r<rank>-s<seq>-n<rows>.parquet  an acknowledged chunk
//! SPOOL/snapshots/<id>/finish.pb                  FinishSnapshotRequest, protobuf
//! ```
//!
//! Every file is written to a temporary name of its own, fsynced and renamed, so a crash leaves
//! either the whole file or none (temporary leftovers are removed on open), and a write that
//! fails (the filesystem is full, say) removes what it wrote of its temporary file: a file under
//! its final name is always whole.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;

use storage_tracker_proto::SnapshotId;
use storage_tracker_proto::v1::FinishSnapshotRequest;

use crate::snapshot::SnapshotRecord;

/// One acknowledged chunk waiting in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledChunk {
    pub rank: u32,
    pub seq: u64,
    pub rows: u64,
    pub path: PathBuf,
}

/// Everything the spool holds of one snapshot.
#[derive(Debug)]
pub struct SpooledSnapshot {
    pub record: SnapshotRecord,
    pub chunks: Vec<SpooledChunk>,
    pub finish: Option<FinishSnapshotRequest>,
}

/// The room on the spool's filesystem, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// What the aggregator may still write (an unprivileged user's share: statvfs `f_bavail`).
    pub free: u64,
    pub total: u64,
}

#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

const RECORD: &str = "snapshot.json";
const FINISH: &str = "finish.pb";
const TEMP_SUFFIX: &str = ".tmp";

fn context(what: &str, path: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let message = format!("{what} {}", path.display());
    move |e| io::Error::new(e.kind(), format!("{message}: {e}"))
}

/// Whether `e` says the filesystem has no room: no space left (ENOSPC) or the quota is spent
/// (EDQUOT). A condition of the spool's disk that passes once space is freed, not a fault of
/// what was written.
pub fn is_out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Writes `bytes` to `path` atomically and durably: temporary file, fsync, rename, fsync dir.
/// The temporary name is this write's own (two writes of one chunk at once never share one),
/// and it is removed when the write fails before the rename, so a partial file neither takes
/// up the room that was missing nor lasts until the next start.
fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(
        ".{}{TEMP_SUFFIX}",
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = PathBuf::from(temp);
    let written = File::create(&temp)
        .map_err(context("creating", &temp))
        .and_then(|mut file| {
            file.write_all(bytes).map_err(context("writing", &temp))?;
            file.sync_all().map_err(context("syncing", &temp))
        })
        .and_then(|()| fs::rename(&temp, path).map_err(context("renaming", &temp)));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    sync_dir(path.parent().expect("spool files live in a directory"))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(context("syncing the directory", dir))
}

/// `r<rank>-s<seq>-n<rows>.parquet` parsed.
fn parse_chunk_name(name: &str) -> Option<(u32, u64, u64)> {
    let rest = name.strip_suffix(".parquet")?.strip_prefix('r')?;
    let (rank, rest) = rest.split_once("-s")?;
    let (seq, rows) = rest.split_once("-n")?;
    Some((rank.parse().ok()?, seq.parse().ok()?, rows.parse().ok()?))
}

impl Spool {
    /// Opens (creating) the spool at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        let snapshots = root.join("snapshots");
        fs::create_dir_all(&snapshots).map_err(context("creating the spool", &snapshots))?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The room on the spool's filesystem, as statvfs sees it.
    pub fn space(&self) -> io::Result<Space> {
        let s = rustix::fs::statvfs(&self.root)
            .map_err(|e| context("reading the free space of", &self.root)(io::Error::from(e)))?;
        Ok(Space {
            free: s.f_bavail.saturating_mul(s.f_frsize),
            total: s.f_blocks.saturating_mul(s.f_frsize),
        })
    }

    fn dir(&self, snapshot_id: SnapshotId) -> PathBuf {
        self.root.join("snapshots").join(snapshot_id.to_string())
    }

    /// Records a snapshot that has begun.
    pub fn begin(&self, record: &SnapshotRecord) -> io::Result<()> {
        let dir = self.dir(record.snapshot_id);
        fs::create_dir_all(&dir).map_err(context("creating", &dir))?;
        sync_dir(dir.parent().expect("below the spool root"))?;
        let json = serde_json::to_vec(record).expect("a record serializes");
        write_durably(&dir.join(RECORD), &json)
    }

    /// Writes an acknowledged chunk; returns where it is.
    pub fn write_chunk(
        &self,
        snapshot_id: SnapshotId,
        rank: u32,
        seq: u64,
        rows: u64,
        parquet: &[u8],
    ) -> io::Result<PathBuf> {
        let path = self
            .dir(snapshot_id)
            .join(format!("r{rank}-s{seq}-n{rows}.parquet"));
        write_durably(&path, parquet)?;
        Ok(path)
    }

    /// Removes a chunk whose rows are stored. Durability is not needed: a chunk left behind
    /// by a crash is recognised as stored on recovery.
    pub fn remove_chunk(&self, path: &Path) -> io::Result<()> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(context("removing", path)(e)),
            _ => Ok(()),
        }
    }

    pub fn write_finish(&self, request: &FinishSnapshotRequest) -> io::Result<()> {
        let path = self.dir(request.snapshot()).join(FINISH);
        write_durably(&path, &request.encode_to_vec())
    }

    /// Forgets a snapshot that is committed or failed.
    pub fn remove(&self, snapshot_id: SnapshotId) -> io::Result<()> {
        let dir = self.dir(snapshot_id);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(context("removing", &dir)(e)),
            _ => Ok(()),
        }
    }

    /// Every snapshot in the spool, with its chunks in (rank, seq) order.
    pub fn load(&self) -> io::Result<Vec<SpooledSnapshot>> {
        let mut out = Vec::new();
        let snapshots = self.root.join("snapshots");
        for dir in fs::read_dir(&snapshots).map_err(context("reading", &snapshots))? {
            let dir = dir?.path();
            if dir
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<SnapshotId>().ok())
                .is_none()
            {
                continue;
            }
            let record_path = dir.join(RECORD);
            let record = match fs::read(&record_path) {
                Ok(json) => serde_json::from_slice(&json).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}: {e}", record_path.display()),
                    )
                })?,
                // Created, but the record never made it: nothing was acknowledged.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::remove_dir_all(&dir).map_err(context("removing", &dir))?;
                    continue;
                }
                Err(e) => return Err(context("reading", &record_path)(e)),
            };
            let mut chunks = Vec::new();
            let mut finish = None;
            for file in fs::read_dir(&dir).map_err(context("reading", &dir))? {
                let path = file?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.ends_with(TEMP_SUFFIX) {
                    fs::remove_file(&path).map_err(context("removing", &path))?;
                } else if name == FINISH {
                    let bytes = fs::read(&path).map_err(context("reading", &path))?;
                    finish = Some(FinishSnapshotRequest::decode(&bytes[..]).map_err(|e| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{}: {e}", path.display()),
                        )
                    })?);
                } else if let Some((rank, seq, rows)) = parse_chunk_name(name) {
                    chunks.push(SpooledChunk {
                        rank,
                        seq,
                        rows,
                        path,
                    });
                }
            }
            chunks.sort_by_key(|c| (c.rank, c.seq));
            out.push(SpooledSnapshot {
                record,
                chunks,
                finish,
            });
        }
        out.sort_by_key(|s| s.record.snapshot_id);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(snapshot_id: SnapshotId) -> SnapshotRecord {
        SnapshotRecord::begun(
            snapshot_id,
            storage_tracker_proto::v1::BeginSnapshotRequest {
                root_path: b"/r\xff".to_vec(),
                ranks: 2,
                ..Default::default()
            },
            0,
        )
    }

    #[test]
    fn chunk_names_round_trip() {
        assert_eq!(
            parse_chunk_name("r3-s17-n65536.parquet"),
            Some((3, 17, 65536))
        );
        assert_eq!(parse_chunk_name("r3-s17.parquet"), None);
        assert_eq!(parse_chunk_name("r3-s17-n1.parquet.tmp"), None);
    }

    #[test]
    fn a_full_disk_or_quota_is_out_of_space_and_nothing_else_is() {
        // ENOSPC and EDQUOT on Linux.
        assert!(is_out_of_space(&io::Error::from_raw_os_error(28)));
        assert!(is_out_of_space(&io::Error::from_raw_os_error(122)));
        // As the spool's errors carry it: the kind kept, the message extended.
        let e = context("writing", Path::new("/s"))(io::Error::from_raw_os_error(28));
        assert!(is_out_of_space(&e), "{e}");
        assert!(!is_out_of_space(&io::Error::from_raw_os_error(5)));
    }

    #[test]
    fn a_write_that_fails_leaves_no_file_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        let id = SnapshotId::new(3);
        spool.begin(&record(id)).unwrap();
        // The final name is taken by a directory that is not empty: the rename fails, after
        // the bytes were written and synced under the temporary name.
        let dir = tmp.path().join("snapshots/3");
        fs::create_dir_all(dir.join("r0-s0-n2.parquet/x")).unwrap();
        assert!(spool.write_chunk(id, 0, 0, 2, b"rows").is_err());
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["r0-s0-n2.parquet", "snapshot.json"]);
        assert!(spool.space().unwrap().total > 0);
    }

    #[test]
    fn a_spooled_snapshot_is_loaded_back_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path()).unwrap();
        let id = SnapshotId::new(7);
        spool.begin(&record(id)).unwrap();
        let b = spool.write_chunk(id, 1, 0, 5, b"one").unwrap();
        let a = spool.write_chunk(id, 0, 1, 6, b"two").unwrap();
        spool.write_chunk(id, 0, 2, 1, b"three").unwrap();
        // Leftovers of a crash mid-write are dropped; a directory without a record too.
        fs::write(tmp.path().join("snapshots/7/r0-s3-n1.parquet.tmp"), b"x").unwrap();
        fs::create_dir_all(tmp.path().join("snapshots/8")).unwrap();
        spool
            .remove_chunk(&tmp.path().join("snapshots/7/r0-s2-n1.parquet"))
            .unwrap();
        spool
            .write_finish(&FinishSnapshotRequest {
                snapshot_id: 7,
                ..Default::default()
            })
            .unwrap();

        let loaded = Spool::open(tmp.path()).unwrap().load().unwrap();
        assert_eq!(loaded.len(), 1);
        let s = &loaded[0];
        assert_eq!(s.record.root_path, b"/r\xff");
        assert_eq!(s.finish.as_ref().map(|f| f.snapshot_id), Some(7));
        let keys: Vec<_> = s.chunks.iter().map(|c| (c.rank, c.seq, c.rows)).collect();
        assert_eq!(keys, [(0, 1, 6), (1, 0, 5)]);
        assert_eq!((&s.chunks[0].path, &s.chunks[1].path), (&a, &b));
        assert_eq!(fs::read(&a).unwrap(), b"two");
        assert!(!tmp.path().join("snapshots/8").exists());
        assert!(!tmp.path().join("snapshots/7/r0-s3-n1.parquet.tmp").exists());

        spool.remove(id).unwrap();
        assert!(spool.load().unwrap().is_empty());
    }
}
