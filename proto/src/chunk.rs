//! A chunk: one self-contained Parquet file holding exactly one row group of entry rows.
//!
//! The same bytes travel over gRPC and are what an offline scan writes to disk, so a chunk can
//! be acknowledged, retried, deduplicated by (snapshot, rank, seq) and re-imported later.
//!
//! Decoding checks a chunk's structure (one row group, the entry schema, the declared row
//! count); [`ValidChunk`](ValidChunk) adds the checks of its rows.

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::entry::{col, entry_schema};
use crate::rows::{EntryColumns, RowError, check_schema};

#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("not a readable Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("not a readable Arrow batch: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("a chunk holds exactly one row group, this one has {0}")]
    RowGroups(usize),
    /// The schema is not the entry schema, or (decoded as a
    /// [`ValidChunk`](ValidChunk)) a row holds an enum code the schema does not
    /// define.
    #[error(transparent)]
    Rows(#[from] RowError),
    #[error("the chunk declares {declared} rows but its footer holds {actual}")]
    RowCount { declared: u64, actual: u64 },
    #[error("reading {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn writer_properties(rows: usize) -> WriterProperties {
    WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows.max(1)))
        .set_compression(Compression::LZ4_RAW)
        // Chunks are read whole, once: page statistics would cost time and buy nothing.
        .set_statistics_enabled(EnabledStatistics::None)
        // A dictionary hashes every value; only the parent directory repeats enough to pay
        // for it (all the entries of a directory share it).
        .set_dictionary_enabled(false)
        .set_column_dictionary_enabled(ColumnPath::from(col::PARENT), true)
        .build()
}

/// Encodes a batch of entry rows as one Parquet file with one row group.
pub fn encode_chunk(batch: &RecordBatch) -> Result<Vec<u8>, ChunkError> {
    check_schema(batch.schema().as_ref())?;
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 2);
    let mut writer = ArrowWriter::try_new(
        &mut out,
        entry_schema(),
        Some(writer_properties(batch.num_rows())),
    )?;
    writer.write(batch)?;
    writer.close()?;
    Ok(out)
}

/// Decodes a chunk and checks its structure: one row group, the entry schema, `declared_rows`
/// rows (what the sender said the chunk holds).
/// [`ValidChunk::decode`](ValidChunk::decode) checks its rows as well.
pub fn decode_chunk(parquet: Bytes, declared_rows: u64) -> Result<RecordBatch, ChunkError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(parquet)?;
    let groups = builder.metadata().num_row_groups();
    if groups != 1 {
        return Err(ChunkError::RowGroups(groups));
    }
    check_schema(builder.schema().as_ref())?;
    let actual = builder.metadata().file_metadata().num_rows() as u64;
    if actual != declared_rows {
        return Err(ChunkError::RowCount {
            declared: declared_rows,
            actual,
        });
    }
    let reader = builder.with_batch_size(actual.max(1) as usize).build()?;
    // The batch size is the row count, so one row group reads as one batch.
    let mut batches = reader.collect::<Result<Vec<_>, _>>()?;
    match batches.len() {
        1 => Ok(batches.pop().expect("one batch")),
        n => Err(ChunkError::RowGroups(n)),
    }
}

/// The file an offline scan writes beside its chunk files: the scan's `OfflineManifest`.
pub const MANIFEST_FILE: &str = "manifest.pb";

/// The file name of an offline scan's chunk: sorting names sorts by rank, then sequence.
pub fn chunk_file_name(rank: u32, seq: u64) -> String {
    format!("rank{rank:05}-seq{seq:09}.parquet")
}

/// (rank, seq) of a chunk file name made by [`chunk_file_name`].
pub fn parse_chunk_file_name(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_suffix(".parquet")?.strip_prefix("rank")?;
    let (rank, seq) = rest.split_once("-seq")?;
    Some((rank.parse().ok()?, seq.parse().ok()?))
}

/// Reads a chunk file (an offline scan's output) and checks its structure as [`decode_chunk`]
/// does: the row count is the footer's.
/// [`ValidChunk::read_file`](ValidChunk::read_file) checks its rows as well.
pub fn read_chunk_file(path: &std::path::Path) -> Result<RecordBatch, ChunkError> {
    let data = Bytes::from(std::fs::read(path).map_err(|source| ChunkError::Io {
        path: path.to_owned(),
        source,
    })?);
    decode_chunk_file(data)
}

/// Decodes the bytes of a chunk file and checks their structure as [`decode_chunk`] does: the
/// row count is the footer's.
/// [`ValidChunk::decode_file`](ValidChunk::decode_file) checks its rows as well.
pub fn decode_chunk_file(data: Bytes) -> Result<RecordBatch, ChunkError> {
    use parquet::file::reader::FileReader;
    let rows = parquet::file::serialized_reader::SerializedFileReader::new(data.clone())?
        .metadata()
        .file_metadata()
        .num_rows() as u64;
    decode_chunk(data, rows)
}

/// A decoded chunk whose rows passed [`EntryColumns::new`]'s checks. It owns the batch (whose
/// arrays are shared, not copied) and gives its typed view without checking again.
#[derive(Debug, Clone)]
pub struct ValidChunk {
    batch: RecordBatch,
}

impl ValidChunk {
    /// Checks a batch of entry rows (see [`EntryColumns::new`]).
    pub fn new(batch: RecordBatch) -> Result<Self, RowError> {
        EntryColumns::new(&batch)?;
        Ok(Self { batch })
    }

    /// Decodes a chunk as [`decode_chunk`] does (one row group, the entry
    /// schema, `declared_rows` rows) and checks its rows.
    pub fn decode(parquet: Bytes, declared_rows: u64) -> Result<Self, ChunkError> {
        Ok(Self::new(decode_chunk(parquet, declared_rows)?)?)
    }

    /// Decodes the bytes of a chunk file (the row count is the footer's) and checks its rows.
    pub fn decode_file(data: Bytes) -> Result<Self, ChunkError> {
        Ok(Self::new(decode_chunk_file(data)?)?)
    }

    /// Reads a chunk file (an offline scan's output) and checks its rows.
    pub fn read_file(path: &std::path::Path) -> Result<Self, ChunkError> {
        Ok(Self::new(read_chunk_file(path)?)?)
    }

    /// The typed view of the rows.
    pub fn columns(&self) -> EntryColumns<'_> {
        EntryColumns::of_checked_schema(&self.batch)
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    pub fn into_batch(self) -> RecordBatch {
        self.batch
    }
}

impl AsRef<RecordBatch> for ValidChunk {
    fn as_ref(&self) -> &RecordBatch {
        &self.batch
    }
}

impl From<ValidChunk> for RecordBatch {
    fn from(chunk: ValidChunk) -> Self {
        chunk.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_file_names_round_trip() {
        assert_eq!(chunk_file_name(7, 12), "rank00007-seq000000012.parquet");
        assert_eq!(parse_chunk_file_name(&chunk_file_name(3, 4)), Some((3, 4)));
        assert_eq!(
            parse_chunk_file_name("rank00007-seq000000012.parquet.tmp"),
            None
        );
        assert_eq!(parse_chunk_file_name(MANIFEST_FILE), None);
    }
    use crate::entry::{EntryBatchBuilder, EntryKind, EntryRef, EntryStat, ErrorOp};
    use arrow_array::{Array, Int32Array};
    use std::sync::Arc;

    fn sample(rows: usize) -> RecordBatch {
        let mut b = EntryBatchBuilder::with_capacity(rows);
        for i in 0..rows {
            let name = format!("f{i}\u{e9}").into_bytes();
            let mut path = b"/scan/\xfe\xff/".to_vec();
            path.extend_from_slice(&name);
            b.append(&EntryRef {
                path: &path,
                parent: b"/scan/\xfe\xff",
                name: &name,
                depth: 2,
                kind: if i % 7 == 0 {
                    EntryKind::Symlink
                } else {
                    EntryKind::File
                },
                stat: EntryStat {
                    size: i as u64 * 4099,
                    allocated: (i as u64 * 4099).div_ceil(4096) * 4096,
                    nlink: 1 + (i as u64 % 3),
                    ino: 1_000_000 + i as u64,
                    dev: 2049,
                    mode: 0o100640,
                    uid: 1000 + i as u32 % 5,
                    gid: 100,
                    atime_ns: -86_400_000_000_000 + i as i64,
                    mtime_ns: 4_102_444_800_000_000_000,
                    ctime_ns: 1_700_000_000_123_456_789,
                    btime_ns: (i % 2 == 0).then_some(1_600_000_000_000_000_000),
                },
                symlink_target: if i % 7 == 0 { b"../target" } else { b"" },
                error: (i % 11 == 0).then_some((ErrorOp::Stat, 13)),
            });
        }
        b.finish()
    }

    #[test]
    fn chunk_round_trip_is_exact() {
        let batch = sample(5000);
        let bytes = encode_chunk(&batch).unwrap();
        let back = decode_chunk(Bytes::from(bytes), 5000).unwrap();
        assert_eq!(back, batch);
    }

    #[test]
    fn empty_chunk_is_rejected() {
        // Writers never send one: a chunk without rows has no row group.
        let bytes = encode_chunk(&sample(0)).unwrap();
        assert!(matches!(
            decode_chunk(Bytes::from(bytes), 0),
            Err(ChunkError::RowGroups(0))
        ));
    }

    #[test]
    fn wrong_row_count_is_rejected() {
        let bytes = encode_chunk(&sample(10)).unwrap();
        let err = decode_chunk(Bytes::from(bytes), 11).unwrap_err();
        assert!(
            matches!(
                err,
                ChunkError::RowCount {
                    declared: 11,
                    actual: 10
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn foreign_schema_is_rejected_with_the_column_named() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            "x",
            arrow_schema::DataType::Int32,
            false,
        )]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(vec![1, 2]))])
                .unwrap();
        let mut bytes = Vec::new();
        let mut w = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let err = decode_chunk(Bytes::from(bytes), 2).unwrap_err();
        assert!(err.to_string().contains("1 columns, expected"), "{err}");
    }

    #[test]
    fn truncated_footer_is_rejected() {
        let mut bytes = encode_chunk(&sample(10)).unwrap();
        bytes.truncate(bytes.len() - 3);
        assert!(matches!(
            decode_chunk(Bytes::from(bytes), 10),
            Err(ChunkError::Parquet(_))
        ));
    }

    #[test]
    fn nulls_survive_in_birth_time_only() {
        let back = decode_chunk(Bytes::from(encode_chunk(&sample(3)).unwrap()), 3).unwrap();
        let btime = back.column_by_name(col::BTIME_NS).unwrap();
        assert_eq!(btime.null_count(), 1);
    }
}
