//! What a valid batch of entry rows is, checked once: [`EntryColumns`] is the typed view of a
//! batch whose schema is the entry schema and whose every enum code (kind, error op) is one the
//! schema defines; [`ValidChunk`](crate::chunk::ValidChunk), a decoded chunk that passed those
//! checks, owns its rows.
//!
//! The checks cost one pass over the two one-byte code columns; the view borrows the batch's
//! arrays, so nothing of a column is copied. A code the schema does not define would be stored
//! as garbage (ClickHouse's `Enum8` takes any byte in RowBinary), so readers that store or
//! count rows take them through this view rather than reading the columns by name.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt8Type, UInt32Type, UInt64Type};
use arrow_array::{
    Array, BinaryArray, Int32Array, Int64Array, RecordBatch, UInt8Array, UInt32Array, UInt64Array,
};

use crate::SCHEMA_VERSION;
use crate::entry::{EntryKind, EntryRef, EntryStat, ErrorOp, col, entry_schema};
use crate::size::{AllocatedBytes, ApparentBytes};

/// Why a batch is not valid entry rows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    /// The columns are not those of the entry schema: `detail` names the first that differs.
    #[error("the chunk's schema is not the entry schema version {version}: {detail}")]
    Schema { version: u32, detail: String },
    /// A row holds an enum code that the schema does not define.
    #[error(
        "row {row} of the chunk has {column} code {code}, which schema version {version} does not define"
    )]
    Code {
        /// The column's name (see [`col`]).
        column: &'static str,
        row: usize,
        code: u8,
        version: u32,
    },
    /// A row's path is not its parent joined with its name: only the parent and the name are
    /// stored, so the path would be lost.
    #[error(
        "row {row} of the chunk has path {path:?}, which is not its parent {parent:?} joined with its name {name:?}"
    )]
    Path {
        row: usize,
        path: String,
        parent: String,
        name: String,
    },
}

/// Whether `path` is `parent` joined with `name` ("/" is the root's parent and its own path).
fn joins(path: &[u8], parent: &[u8], name: &[u8]) -> bool {
    let separator = usize::from(parent != b"/");
    path.len() == parent.len() + separator + name.len()
        && path.starts_with(parent)
        && path.ends_with(name)
        && (separator == 0 || path[parent.len()] == b'/')
}

/// The schema must be the entry schema, field by field (metadata aside).
pub(crate) fn check_schema(schema: &arrow_schema::Schema) -> Result<(), RowError> {
    let expected = entry_schema();
    let mismatch = |detail: String| RowError::Schema {
        version: SCHEMA_VERSION,
        detail,
    };
    if schema.fields().len() != expected.fields().len() {
        return Err(mismatch(format!(
            "{} columns, expected {}",
            schema.fields().len(),
            expected.fields().len()
        )));
    }
    for (got, want) in schema.fields().iter().zip(expected.fields()) {
        if got.name() != want.name()
            || got.data_type() != want.data_type()
            || got.is_nullable() != want.is_nullable()
        {
            return Err(mismatch(format!(
                "column {:?} {} (nullable {}), expected {:?} {} (nullable {})",
                got.name(),
                got.data_type(),
                got.is_nullable(),
                want.name(),
                want.data_type(),
                want.is_nullable()
            )));
        }
    }
    Ok(())
}

/// Every code of `column` must be below `defined` (the codes of [`EntryKind`] and [`ErrorOp`]
/// are 0 up to their `ALL.len()`). The maximum is taken without an early exit, so the pass
/// runs at memory speed; the first bad row is looked for only when there is one.
fn check_codes(column: &'static str, codes: &[u8], defined: usize) -> Result<(), RowError> {
    let max = codes.iter().copied().fold(0, u8::max);
    if usize::from(max) < defined {
        return Ok(());
    }
    let row = codes
        .iter()
        .position(|&c| usize::from(c) >= defined)
        .expect("the maximum is one of the codes");
    Err(RowError::Code {
        column,
        row,
        code: codes[row],
        version: SCHEMA_VERSION,
    })
}

/// The typed columns of a batch of entry rows, checked by [`EntryColumns::new`]. Each accessor
/// takes a row index below [`len`](Self::len) (and panics on one past it, as Arrow's `value`
/// does); byte strings borrow from the batch.
#[derive(Debug, Clone, Copy)]
pub struct EntryColumns<'a> {
    rows: usize,
    path: &'a BinaryArray,
    parent: &'a BinaryArray,
    name: &'a BinaryArray,
    depth: &'a UInt32Array,
    kind: &'a UInt8Array,
    size: &'a UInt64Array,
    allocated: &'a UInt64Array,
    nlink: &'a UInt64Array,
    ino: &'a UInt64Array,
    dev: &'a UInt64Array,
    mode: &'a UInt32Array,
    uid: &'a UInt32Array,
    gid: &'a UInt32Array,
    atime: &'a Int64Array,
    mtime: &'a Int64Array,
    ctime: &'a Int64Array,
    btime: &'a Int64Array,
    target: &'a BinaryArray,
    error_op: &'a UInt8Array,
    errno: &'a Int32Array,
}

impl<'a> EntryColumns<'a> {
    /// Checks that `batch` has the entry schema and that every kind and error code is defined
    /// (the first bad row is the error), and gives the typed view of its columns.
    pub fn new(batch: &'a RecordBatch) -> Result<Self, RowError> {
        check_schema(batch.schema_ref())?;
        let columns = Self::of_checked_schema(batch);
        check_codes(col::KIND, columns.kind.values(), EntryKind::ALL.len())?;
        check_codes(col::ERROR_OP, columns.error_op.values(), ErrorOp::ALL.len())?;
        columns.check_paths()?;
        Ok(columns)
    }

    /// The view of a batch whose schema was checked: the columns in schema order.
    pub(crate) fn of_checked_schema(batch: &'a RecordBatch) -> Self {
        let c = |i: usize| batch.column(i);
        Self {
            rows: batch.num_rows(),
            path: c(0).as_binary(),
            parent: c(1).as_binary(),
            name: c(2).as_binary(),
            depth: c(3).as_primitive::<UInt32Type>(),
            kind: c(4).as_primitive::<UInt8Type>(),
            size: c(5).as_primitive::<UInt64Type>(),
            allocated: c(6).as_primitive::<UInt64Type>(),
            nlink: c(7).as_primitive::<UInt64Type>(),
            ino: c(8).as_primitive::<UInt64Type>(),
            dev: c(9).as_primitive::<UInt64Type>(),
            mode: c(10).as_primitive::<UInt32Type>(),
            uid: c(11).as_primitive::<UInt32Type>(),
            gid: c(12).as_primitive::<UInt32Type>(),
            atime: c(13).as_primitive::<Int64Type>(),
            mtime: c(14).as_primitive::<Int64Type>(),
            ctime: c(15).as_primitive::<Int64Type>(),
            btime: c(16).as_primitive::<Int64Type>(),
            target: c(17).as_binary(),
            error_op: c(18).as_primitive::<UInt8Type>(),
            errno: c(19).as_primitive::<Int32Type>(),
        }
    }

    /// Every row's path must be its parent joined with its name.
    fn check_paths(&self) -> Result<(), RowError> {
        for row in 0..self.rows {
            let (path, parent, name) = (self.path(row), self.parent(row), self.name(row));
            if !joins(path, parent, name) {
                let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                return Err(RowError::Path {
                    row,
                    path: text(path),
                    parent: text(parent),
                    name: text(name),
                });
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The entry's absolute path.
    pub fn path(&self, row: usize) -> &'a [u8] {
        self.path.value(row)
    }

    /// The path of the directory holding the entry.
    pub fn parent(&self, row: usize) -> &'a [u8] {
        self.parent.value(row)
    }

    /// The path's last component (empty only for the root "/").
    pub fn name(&self, row: usize) -> &'a [u8] {
        self.name.value(row)
    }

    /// 0 for the scan root.
    pub fn depth(&self, row: usize) -> u32 {
        self.depth.value(row)
    }

    pub fn kind(&self, row: usize) -> EntryKind {
        EntryKind::ALL[usize::from(self.kind.value(row))]
    }

    /// The apparent size, `st_size`.
    pub fn size(&self, row: usize) -> ApparentBytes {
        ApparentBytes::new(self.size.value(row))
    }

    /// The bytes the entry's blocks take, `st_blocks × 512`.
    pub fn allocated(&self, row: usize) -> AllocatedBytes {
        AllocatedBytes::new(self.allocated.value(row))
    }

    pub fn nlink(&self, row: usize) -> u64 {
        self.nlink.value(row)
    }

    pub fn ino(&self, row: usize) -> u64 {
        self.ino.value(row)
    }

    pub fn dev(&self, row: usize) -> u64 {
        self.dev.value(row)
    }

    /// `st_mode`: the kind bits and the permissions.
    pub fn mode(&self, row: usize) -> u32 {
        self.mode.value(row)
    }

    pub fn uid(&self, row: usize) -> u32 {
        self.uid.value(row)
    }

    pub fn gid(&self, row: usize) -> u32 {
        self.gid.value(row)
    }

    /// Signed nanoseconds since the epoch, as are the other times.
    pub fn atime_ns(&self, row: usize) -> i64 {
        self.atime.value(row)
    }

    pub fn mtime_ns(&self, row: usize) -> i64 {
        self.mtime.value(row)
    }

    pub fn ctime_ns(&self, row: usize) -> i64 {
        self.ctime.value(row)
    }

    /// The birth time, where the filesystem reports one.
    pub fn btime_ns(&self, row: usize) -> Option<i64> {
        self.btime.is_valid(row).then(|| self.btime.value(row))
    }

    /// Empty unless the entry is a symlink.
    pub fn symlink_target(&self, row: usize) -> &'a [u8] {
        self.target.value(row)
    }

    /// Which operation on the entry failed ([`ErrorOp::None`] if none did).
    pub fn error_op(&self, row: usize) -> ErrorOp {
        ErrorOp::ALL[usize::from(self.error_op.value(row))]
    }

    /// The failed operation's errno (0 if none failed).
    pub fn errno(&self, row: usize) -> i32 {
        self.errno.value(row)
    }

    /// The stat fields of a row.
    pub fn stat(&self, row: usize) -> EntryStat {
        EntryStat {
            size: self.size.value(row),
            allocated: self.allocated.value(row),
            nlink: self.nlink(row),
            ino: self.ino(row),
            dev: self.dev(row),
            mode: self.mode(row),
            uid: self.uid(row),
            gid: self.gid(row),
            atime_ns: self.atime_ns(row),
            mtime_ns: self.mtime_ns(row),
            ctime_ns: self.ctime_ns(row),
            btime_ns: self.btime_ns(row),
        }
    }

    /// A whole row, as [`EntryBatchBuilder::append`](crate::EntryBatchBuilder::append) takes
    /// it. A row without an error reads as `error: None` whatever its errno.
    pub fn row(&self, row: usize) -> EntryRef<'a> {
        let error = match self.error_op(row) {
            ErrorOp::None => None,
            op => Some((op, self.errno(row))),
        };
        EntryRef {
            path: self.path(row),
            parent: self.parent(row),
            name: self.name(row),
            depth: self.depth(row),
            kind: self.kind(row),
            stat: self.stat(row),
            symlink_target: self.symlink_target(row),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::ArrayRef;

    use super::*;
    use bytes::Bytes;

    use crate::chunk::{ChunkError, ValidChunk, encode_chunk};
    use crate::entry::EntryBatchBuilder;

    /// A row's path, kind, stat and error.
    type Row = (Vec<u8>, EntryKind, EntryStat, Option<(ErrorOp, i32)>);

    fn rows() -> Vec<Row> {
        let kinds = EntryKind::ALL;
        (0..40u64)
            .map(|i| {
                let stat = EntryStat {
                    size: i * 1000 + 1,
                    allocated: (i * 1000 + 1).div_ceil(4096) * 4096,
                    nlink: 1 + i % 2,
                    ino: 77 + i,
                    dev: 2049,
                    mode: 0o100600 + i as u32,
                    uid: 1000,
                    gid: 100 + i as u32,
                    atime_ns: -(i as i64),
                    mtime_ns: i as i64 * 1_000_000_007,
                    ctime_ns: 3,
                    btime_ns: (i % 3 == 0).then_some(i as i64),
                };
                let error = match i % 5 {
                    1 => Some((ErrorOp::Stat, 13)),
                    2 => Some((ErrorOp::Readlink, 22)),
                    _ => None,
                };
                (
                    format!("/r/\u{e9}{i}").into_bytes(),
                    kinds[i as usize % kinds.len()],
                    stat,
                    error,
                )
            })
            .collect()
    }

    fn batch() -> RecordBatch {
        let mut b = EntryBatchBuilder::with_capacity(40);
        for (path, kind, stat, error) in &rows() {
            b.append(&EntryRef {
                path,
                parent: b"/r",
                name: &path[3..],
                depth: 1,
                kind: *kind,
                stat: *stat,
                symlink_target: if *kind == EntryKind::Symlink {
                    b"t"
                } else {
                    b""
                },
                error: *error,
            });
        }
        b.finish()
    }

    /// The batch with one value of a one-byte column replaced.
    fn with_code(batch: &RecordBatch, column: &str, row: usize, code: u8) -> RecordBatch {
        let i = batch.schema().index_of(column).unwrap();
        let mut codes = batch
            .column(i)
            .as_primitive::<UInt8Type>()
            .values()
            .to_vec();
        codes[row] = code;
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[i] = Arc::new(UInt8Array::from(codes));
        RecordBatch::try_new(batch.schema(), columns).unwrap()
    }

    #[test]
    fn rows_read_back_as_they_were_appended() {
        let batch = batch();
        let chunk = ValidChunk::decode(Bytes::from(encode_chunk(&batch).unwrap()), 40).unwrap();
        let columns = chunk.columns();
        assert_eq!(columns.len(), 40);
        for (row, (path, kind, stat, error)) in rows().iter().enumerate() {
            let read = columns.row(row);
            assert_eq!(read.path, &path[..]);
            assert_eq!(read.name, &path[3..]);
            assert_eq!(read.parent, b"/r");
            assert_eq!(read.kind, *kind);
            assert_eq!(read.stat, *stat);
            assert_eq!(read.error, *error);
            assert_eq!(columns.size(row).get(), stat.size);
            assert_eq!(columns.allocated(row).get(), stat.allocated);
            assert_eq!(columns.errno(row), error.map_or(0, |e| e.1));
        }
        assert_eq!(chunk.into_batch(), batch);
    }

    #[test]
    fn an_undefined_code_is_refused_with_its_column_row_and_value() {
        let batch = batch();
        let err = EntryColumns::new(&with_code(&batch, col::KIND, 17, 8)).unwrap_err();
        assert_eq!(
            err,
            RowError::Code {
                column: col::KIND,
                row: 17,
                code: 8,
                version: SCHEMA_VERSION
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "row 17 of the chunk has kind code 8, which schema version {SCHEMA_VERSION} does not define"
            )
        );
        let bad = with_code(
            &with_code(&batch, col::ERROR_OP, 39, 255),
            col::ERROR_OP,
            3,
            5,
        );
        assert!(matches!(
            ValidChunk::new(bad),
            Err(RowError::Code {
                column: col::ERROR_OP,
                row: 3,
                code: 5,
                ..
            })
        ));
        // Every defined code passes.
        let last = |all: usize| (all - 1) as u8;
        let edge = with_code(&batch, col::KIND, 0, last(EntryKind::ALL.len()));
        let edge = with_code(&edge, col::ERROR_OP, 0, last(ErrorOp::ALL.len()));
        assert!(EntryColumns::new(&edge).is_ok());
    }

    #[test]
    fn a_path_is_its_parent_joined_with_its_name() {
        for (path, parent, name) in [
            (&b"/"[..], &b"/"[..], &b""[..]),
            (b"/a", b"/", b"a"),
            (b"/a/b\xff", b"/a", b"b\xff"),
        ] {
            assert!(joins(path, parent, name), "{path:?}");
        }
        for (path, parent, name) in [
            (&b"/a/b"[..], &b"/a"[..], &b"c"[..]),
            (b"/ab", b"/a", b"b"),
            (b"/a/b", b"/", b"b"),
            (b"/x/b", b"/a", b"b"),
            (b"//a", b"/", b"a"),
        ] {
            assert!(!joins(path, parent, name), "{path:?}");
        }
        let mut b = EntryBatchBuilder::with_capacity(2);
        for (path, parent) in [(&b"/r/a"[..], &b"/r"[..]), (b"/r/a", b"/s")] {
            b.append(&crate::entry::EntryRef {
                path,
                parent,
                name: b"a",
                depth: 1,
                kind: EntryKind::File,
                stat: EntryStat::default(),
                symlink_target: b"",
                error: None,
            });
        }
        let err = EntryColumns::new(&b.finish()).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"row 1 of the chunk has path "/r/a", which is not its parent "/s" joined with its name "a""#
        );
    }

    #[test]
    fn a_bad_code_in_a_chunk_is_a_chunk_error() {
        let bad = with_code(&batch(), col::KIND, 2, 200);
        let bytes = Bytes::from(encode_chunk(&bad).unwrap());
        // The structure is sound, so the plain decode takes it; the checked one does not.
        assert!(crate::decode_chunk(bytes.clone(), 40).is_ok());
        let err = ValidChunk::decode(bytes, 40).unwrap_err();
        assert!(
            matches!(
                err,
                ChunkError::Rows(RowError::Code {
                    row: 2,
                    code: 200,
                    ..
                })
            ),
            "{err}"
        );
    }

    #[test]
    fn a_foreign_batch_is_refused_by_its_schema() {
        let schema = Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new(
            col::PATH,
            arrow_schema::DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(arrow_array::StringArray::from(vec!["/"]))],
        )
        .unwrap();
        let err = EntryColumns::new(&batch).unwrap_err();
        assert!(matches!(err, RowError::Schema { .. }), "{err}");
        assert!(err.to_string().contains("1 columns, expected 20"), "{err}");
    }

    #[test]
    fn a_sliced_batch_is_checked_and_read_from_its_offset() {
        let batch = batch();
        let bad = with_code(&batch, col::KIND, 5, 9);
        assert!(EntryColumns::new(&bad.slice(6, 30)).is_ok());
        let err = EntryColumns::new(&bad.slice(2, 30)).unwrap_err();
        assert!(matches!(err, RowError::Code { row: 3, .. }), "{err}");
        let sliced = batch.slice(10, 5);
        let columns = EntryColumns::new(&sliced).unwrap();
        assert_eq!(columns.len(), 5);
        assert_eq!(columns.path(0), &rows()[10].0[..]);
    }
}
