//! Import of an offline scan (`storage-scan --output DIR`) into a committed snapshot.
//!
//! Every file is checked before anything is stored, by [`check`] (which is also all that
//! `import --check` does): the manifest and the scan it describes, that each rank's chunk files
//! are all there, each chunk's footer, schema and rows, that no chunk file is a copy of another,
//! and that each rank's files hold the entries its totals count. The chunks then go through the
//! ingest service exactly as a live scan's would (spool, exactly-once insert, verification,
//! reports, commit); a failure on the way fails the snapshot, so nothing partial is kept. The
//! scan's id makes the import idempotent: a scan already committed is not imported again, and
//! one whose import was interrupted is failed and imported afresh.

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use prost::Message;

use storage_tracker_proto::chunk::decode_chunk_file;
use storage_tracker_proto::service::status_text;
use storage_tracker_proto::v1::{Chunk, OfflineManifest};
use storage_tracker_proto::{
    ChunkError, MANIFEST_FILE, SnapshotId, chunk_file_name, parse_chunk_file_name,
};

use crate::ingest::begin::{BeginRefused, begin_refusal};
use crate::service::IngestService;
use crate::snapshot::{IllegalTransition, SnapshotState, Transition, unix_now};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "{dir} has no {MANIFEST_FILE}: pass the directory an offline scan wrote (storage-scan --output DIR), after the scan finished"
    )]
    NoManifest { dir: PathBuf },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a storage-scan manifest: {fault}")]
    BadManifest { path: PathBuf, fault: ManifestFault },
    #[error("{path} is not a valid chunk: {source}")]
    BadChunk { path: PathBuf, source: ChunkError },
    #[error("{path} holds rows the schema does not define: {source}")]
    BadRows { path: PathBuf, source: StoreError },
    #[error("{dir}: rank {rank} wrote {chunks} chunks, {missing} is missing")]
    MissingChunk {
        dir: PathBuf,
        rank: u32,
        chunks: u64,
        /// The missing file's name.
        missing: String,
    },
    #[error("{dir}: {files} chunk files, the manifest counts {counted}")]
    ChunkFiles {
        dir: PathBuf,
        files: usize,
        counted: u64,
    },
    #[error(
        "{path} is a copy of {original}: no scan writes a chunk twice; a chunk file was copied over another, so the scan cannot be imported"
    )]
    /// `original` is the file's name: it is in the same directory.
    Copied { path: PathBuf, original: PathBuf },
    #[error(
        "{dir} does not match its manifest: rank {rank} scanned {entries} entries, its {chunks} chunk files hold {held}"
    )]
    Mismatch {
        dir: PathBuf,
        rank: u32,
        entries: u64,
        chunks: u64,
        held: u64,
    },
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A snapshot's record could not change state (a bug: only running ones are failed).
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    #[error(
        "the import into snapshot {snapshot_id} failed and was rolled back: {}",
        status_text(status)
    )]
    Ingest {
        /// 0 when the snapshot could not be begun.
        snapshot_id: SnapshotId,
        status: Box<tonic::Status>,
    },
}

/// What is wrong with an offline scan's manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestFault {
    #[error(transparent)]
    Decode(#[from] prost::DecodeError),
    #[error("it lacks the scan's description or totals")]
    Incomplete,
    #[error("it has no scan id")]
    NoScanId,
    /// What the ingest service refuses in BeginSnapshot.
    #[error(transparent)]
    Refused(#[from] BeginRefused),
    #[error("{totals} rank totals for {ranks} ranks")]
    RankTotals { totals: usize, ranks: u32 },
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// The scan is now snapshot `snapshot_id`.
    Committed {
        snapshot_id: SnapshotId,
        entries: u64,
        chunks: usize,
    },
    /// The scan had been imported before as `snapshot_id`; nothing changed.
    AlreadyCommitted { snapshot_id: SnapshotId },
}

/// An offline scan's chunk files by (rank, seq), with their row counts.
pub type ChunkFiles = BTreeMap<(u32, u64), (PathBuf, u64)>;

/// The manifest and the chunk files of an offline scan, checked as the import checks them
/// (the import runs this first; the ingest service verifies the same totals again at the
/// commit); nothing is stored.
pub fn check(dir: &Path) -> Result<(OfflineManifest, ChunkFiles), ImportError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = match std::fs::read(&manifest_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ImportError::NoManifest {
                dir: dir.to_owned(),
            });
        }
        Err(source) => {
            return Err(ImportError::Io {
                path: manifest_path,
                source,
            });
        }
    };
    let bad = |fault: ManifestFault| ImportError::BadManifest {
        path: manifest_path.clone(),
        fault,
    };
    let manifest = OfflineManifest::decode(&bytes[..]).map_err(|e| bad(e.into()))?;
    let (Some(begin), Some(finish)) = (&manifest.begin, &manifest.finish) else {
        return Err(bad(ManifestFault::Incomplete));
    };
    if begin.scan_id.is_empty() {
        return Err(bad(ManifestFault::NoScanId));
    }
    if let Some(refused) = begin_refusal(begin) {
        return Err(bad(refused.into()));
    }
    if finish.ranks.len() != begin.ranks as usize {
        return Err(bad(ManifestFault::RankTotals {
            totals: finish.ranks.len(),
            ranks: begin.ranks,
        }));
    }

    let mut files = BTreeMap::new();
    let entries = std::fs::read_dir(dir).map_err(|source| ImportError::Io {
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| ImportError::Io {
                path: dir.to_owned(),
                source,
            })?
            .path();
        let Some(key) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_chunk_file_name)
        else {
            continue;
        };
        files.insert(key, (path, 0));
    }
    for t in &finish.ranks {
        for seq in 0..t.chunks {
            if !files.contains_key(&(t.rank, seq)) {
                return Err(ImportError::MissingChunk {
                    dir: dir.to_owned(),
                    rank: t.rank,
                    chunks: t.chunks,
                    missing: chunk_file_name(t.rank, seq),
                });
            }
        }
    }
    let expected: u64 = finish.ranks.iter().map(|t| t.chunks).sum();
    if files.len() as u64 != expected {
        return Err(ImportError::ChunkFiles {
            dir: dir.to_owned(),
            files: files.len(),
            counted: expected,
        });
    }
    // Each file read, hashed, decoded and validated on every core; then, in order, checked
    // against the files before it with the same hash (a file copied over another).
    let paths: Vec<&PathBuf> = files.values().map(|(path, _)| path).collect();
    let read = read_chunk_files(&paths);
    let mut seen: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    let mut entries: BTreeMap<u32, u64> = BTreeMap::new();
    for ((&(rank, _), (path, rows)), read) in files.iter_mut().zip(read) {
        let io = |source| ImportError::Io {
            path: path.clone(),
            source,
        };
        let ReadChunk { hash, rows: held } = read?;
        let same = seen.entry(hash).or_default();
        if !same.is_empty() {
            let data = std::fs::read(&*path).map_err(io)?;
            for original in same.iter() {
                if std::fs::read(original).map_err(io)? == data {
                    return Err(ImportError::Copied {
                        path: path.clone(),
                        original: original
                            .file_name()
                            .map_or_else(|| original.clone(), PathBuf::from),
                    });
                }
            }
        }
        same.push(path.clone());
        let held = held?;
        *rows = held;
        *entries.entry(rank).or_default() += held;
    }
    // What the commit verifies: each rank's rows are the entries it counted.
    for t in &finish.ranks {
        let held = entries.get(&t.rank).copied().unwrap_or(0);
        if held != t.entries {
            return Err(ImportError::Mismatch {
                dir: dir.to_owned(),
                rank: t.rank,
                entries: t.entries,
                chunks: t.chunks,
                held,
            });
        }
    }
    Ok((manifest, files))
}

/// A chunk file read by [`read_chunk_files`]: a hash of its bytes, and its rows or why they
/// are not valid (reported after a copy of another file, which a copy's rows may also be).
struct ReadChunk {
    hash: u64,
    rows: Result<u64, ImportError>,
}

/// Reads, hashes, decodes and validates each file, on as many threads as there are cores
/// (each a contiguous share of the files): the results in the order of `paths`.
fn read_chunk_files(paths: &[&PathBuf]) -> Vec<Result<ReadChunk, ImportError>> {
    let read = |path: &PathBuf| -> Result<ReadChunk, ImportError> {
        let data = std::fs::read(path).map_err(|source| ImportError::Io {
            path: path.clone(),
            source,
        })?;
        let mut hasher = DefaultHasher::new();
        hasher.write(&data);
        let hash = hasher.finish();
        let rows = decode_chunk_file(Bytes::from(data))
            .map_err(|source| ImportError::BadChunk {
                path: path.clone(),
                source,
            })
            .and_then(|batch| {
                crate::store::validate_batch(&batch).map_err(|source| ImportError::BadRows {
                    path: path.clone(),
                    source,
                })?;
                Ok(batch.num_rows() as u64)
            });
        Ok(ReadChunk { hash, rows })
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = paths.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let readers: Vec<_> = paths
            .chunks(share)
            .map(|part| scope.spawn(move || part.iter().map(|p| read(p)).collect::<Vec<_>>()))
            .collect();
        readers
            .into_iter()
            .flat_map(|r| r.join().expect("a chunk reader panicked"))
            .collect()
    })
}

/// Imports the offline scan in `dir` through `service` (which stores into `store`).
pub async fn import(
    service: &IngestService,
    store: &Store,
    dir: &Path,
) -> Result<Imported, ImportError> {
    let (manifest, files) = check(dir)?;
    let begin = manifest.begin.expect("checked");
    let mut finish = manifest.finish.expect("checked");
    for mut record in store.snapshots().await? {
        if record.scan_id != begin.scan_id {
            continue;
        }
        match record.state() {
            SnapshotState::Committed => {
                return Ok(Imported::AlreadyCommitted {
                    snapshot_id: record.snapshot_id,
                });
            }
            SnapshotState::Running => {
                // An import that was interrupted: its rows go, the import starts afresh.
                store.drop_snapshot_rows(record.snapshot_id).await?;
                record.transition(
                    Transition::Fail("an interrupted import, imported again".into()),
                    unix_now(),
                )?;
                store.record_snapshot(&record).await?;
            }
            SnapshotState::Failed | SnapshotState::Deleted => {}
        }
    }
    let snapshot_id = service
        .begin(begin)
        .await
        .map_err(|status| ImportError::Ingest {
            snapshot_id: SnapshotId::new(0),
            status: Box::new(status),
        })?;
    let fail = |status: tonic::Status| ImportError::Ingest {
        snapshot_id,
        status: Box::new(status),
    };
    let result = async {
        for (&(rank, seq), (path, rows)) in &files {
            let parquet = std::fs::read(path).map_err(|e| {
                tonic::Status::unavailable(format!("reading {}: {e}", path.display()))
            })?;
            service
                .chunk(Chunk {
                    snapshot_id: snapshot_id.get(),
                    rank,
                    seq,
                    rows: *rows,
                    parquet: Bytes::from(parquet),
                })
                .await?;
        }
        finish.snapshot_id = snapshot_id.get();
        service.finish(finish).await
    }
    .await;
    match result {
        Ok(done) => Ok(Imported::Committed {
            snapshot_id,
            entries: done.entries,
            chunks: files.len(),
        }),
        Err(status) => {
            let _ = service
                .abort(snapshot_id, format!("import failed: {}", status.message()))
                .await;
            Err(fail(status))
        }
    }
}
