//! Turning rows into chunks and chunks into somewhere durable.
//!
//! Each worker thread fills its own [`ChunkWriter`]; a full batch is encoded as a Parquet chunk
//! on that thread (encoding is CPU work and parallelizes) and handed to the rank's one
//! [`ChunkSink`], which numbers chunks per rank and bounds how many are in flight.

use std::path::PathBuf;
use std::sync::Mutex;

use storage_tracker_proto::entry::EntryRef;
use storage_tracker_proto::{EntryBatchBuilder, encode_chunk};

use crate::walk::RowSink;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("encoding a chunk failed: {0}")]
    Encode(#[from] storage_tracker_proto::ChunkError),
    #[error("writing chunk {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the upload to the aggregator stopped: the stream was closed")]
    UploadClosed,
    #[error(
        "the upload to the aggregator stopped: the aggregator ended the stream; see the error at the end of the scan"
    )]
    StreamEnded,
}

/// Where a rank's chunks go. Chunks are numbered in the order they are submitted.
pub trait ChunkSink: Send + Sync {
    /// Takes one encoded chunk; blocks while the sink has too many in flight.
    fn submit(&self, rows: u64, parquet: Vec<u8>) -> Result<(), SinkError>;
    /// Whether the sink can take no more chunks (the aggregator ended the stream: the
    /// snapshot was aborted or failed), so that the walk stops before its next chunk is full.
    fn ended(&self) -> bool {
        false
    }
}

/// Limits of one chunk. Rows bound the batch; bytes bound it when paths are long.
#[derive(Debug, Clone, Copy)]
pub struct ChunkLimits {
    pub rows: usize,
    pub path_bytes: usize,
}

/// A worker thread's batch of rows on its way to becoming a chunk.
pub struct ChunkWriter<'s> {
    builder: EntryBatchBuilder,
    path_bytes: usize,
    limits: ChunkLimits,
    sink: &'s dyn ChunkSink,
    error: Option<SinkError>,
}

impl std::fmt::Debug for ChunkWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkWriter")
            .field("rows", &self.builder.len())
            .field("error", &self.error)
            .finish()
    }
}

impl<'s> ChunkWriter<'s> {
    pub fn new(sink: &'s dyn ChunkSink, limits: ChunkLimits) -> Self {
        Self {
            builder: EntryBatchBuilder::with_capacity(limits.rows),
            path_bytes: 0,
            limits,
            sink,
            error: None,
        }
    }

    /// The first error of this writer; once set, rows are dropped.
    pub fn error(&self) -> Option<&SinkError> {
        self.error.as_ref()
    }

    /// Notes that the sink ended (see [`ChunkSink::ended`]); true once this writer has failed.
    pub fn check_sink(&mut self) -> bool {
        if self.error.is_none() && self.sink.ended() {
            self.error = Some(SinkError::StreamEnded);
        }
        self.error.is_some()
    }

    pub fn take_error(&mut self) -> Option<SinkError> {
        self.error.take()
    }

    /// Sends what is buffered as one chunk.
    pub fn flush(&mut self) {
        if self.builder.is_empty() || self.error.is_some() {
            return;
        }
        let batch = self.builder.finish();
        self.path_bytes = 0;
        let result = encode_chunk(&batch)
            .map_err(SinkError::from)
            .and_then(|parquet| self.sink.submit(batch.num_rows() as u64, parquet));
        if let Err(e) = result {
            self.error = Some(e);
        }
    }
}

impl RowSink for ChunkWriter<'_> {
    fn row(&mut self, entry: &EntryRef<'_>) {
        if self.error.is_some() {
            return;
        }
        self.builder.append(entry);
        self.path_bytes += entry.path.len() + entry.parent.len() + entry.name.len();
        if self.builder.len() >= self.limits.rows || self.path_bytes >= self.limits.path_bytes {
            self.flush();
        }
    }
}

/// An offline scan's sink: one Parquet file per chunk in a directory, written to a temporary
/// name and renamed, so a file that exists is whole.
#[derive(Debug)]
pub struct DirSink {
    dir: PathBuf,
    rank: u32,
    next_seq: Mutex<u64>,
}

impl DirSink {
    pub fn new(dir: PathBuf, rank: u32) -> Self {
        Self {
            dir,
            rank,
            next_seq: Mutex::new(0),
        }
    }

    pub fn chunks_written(&self) -> u64 {
        *self.next_seq.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the scan's manifest (rank 0, once every rank finished): `manifest.pb`, which
    /// `storage-aggregator import` reads. Returns its path.
    pub fn write_manifest(&self, encoded: &[u8]) -> Result<PathBuf, SinkError> {
        let path = self.dir.join(storage_tracker_proto::MANIFEST_FILE);
        let tmp = path.with_extension("pb.tmp");
        std::fs::write(&tmp, encoded)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| SinkError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }
}

impl ChunkSink for DirSink {
    fn submit(&self, _rows: u64, parquet: Vec<u8>) -> Result<(), SinkError> {
        let mut seq = self.next_seq.lock().unwrap_or_else(|e| e.into_inner());
        let path = self
            .dir
            .join(storage_tracker_proto::chunk_file_name(self.rank, *seq));
        let tmp = path.with_extension("parquet.tmp");
        let write = || -> std::io::Result<()> {
            std::fs::write(&tmp, &parquet)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| SinkError::Write {
            path: path.clone(),
            source,
        })?;
        *seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_tracker_proto::EntryKind;
    use storage_tracker_proto::entry::EntryStat;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<u64>>);

    impl ChunkSink for Recorded {
        fn submit(&self, rows: u64, parquet: Vec<u8>) -> Result<(), SinkError> {
            let batch =
                storage_tracker_proto::decode_chunk(parquet.into(), rows).expect("valid chunk");
            self.0.lock().unwrap().push(batch.num_rows() as u64);
            Ok(())
        }
    }

    fn row(path: &[u8]) -> EntryRef<'_> {
        EntryRef {
            path,
            parent: b"/",
            name: &path[1..],
            depth: 1,
            kind: EntryKind::File,
            stat: EntryStat::default(),
            symlink_target: b"",
            error: None,
        }
    }

    #[test]
    fn writer_cuts_chunks_by_rows_and_flushes_the_rest() {
        let sink = Recorded::default();
        let mut w = ChunkWriter::new(
            &sink,
            ChunkLimits {
                rows: 4,
                path_bytes: usize::MAX,
            },
        );
        for _ in 0..10 {
            w.row(&row(b"/f"));
        }
        w.flush();
        assert_eq!(*sink.0.lock().unwrap(), vec![4, 4, 2]);
    }

    #[test]
    fn writer_cuts_chunks_by_path_bytes() {
        let sink = Recorded::default();
        let long = [b"/".as_slice(), &[b'x'; 100]].concat();
        let mut w = ChunkWriter::new(
            &sink,
            ChunkLimits {
                rows: 1000,
                path_bytes: 500,
            },
        );
        for _ in 0..5 {
            w.row(&row(&long));
        }
        w.flush();
        assert_eq!(*sink.0.lock().unwrap(), vec![3, 2]);
    }

    #[test]
    fn dir_sink_numbers_files_per_rank() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = DirSink::new(tmp.path().to_path_buf(), 7);
        sink.submit(0, b"a".to_vec()).unwrap();
        sink.submit(0, b"b".to_vec()).unwrap();
        let mut names: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "rank00007-seq000000000.parquet",
                "rank00007-seq000000001.parquet"
            ]
        );
        assert_eq!(sink.chunks_written(), 2);
    }
}
