//! Reading duplicate candidates for `storage-scan --hash-duplicates`: the unit of work
//! ([`HashWork`], one file, shared between ranks by the same work stealing as a scan), how a
//! file is hashed (BLAKE3 of a few sampled blocks, or of the whole content), and the worker
//! that hashes files and sends the hashes to the aggregator in batches.
//!
//! A file is read only if it is still the file the snapshot recorded: the same device, inode
//! and size, checked on the open file. One that changed, vanished or cannot be read gets a
//! hash row with the reason instead of a hash, so the report counts it as not verified.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::info;

use storage_tracker_proto::v1::{FileHash, HashBatch};

use crate::pool::{Spawner, Work, Worker};
use crate::progress::{RankProgress, Status};
use crate::upload::{Ingest, UploadError};

/// Bytes of each sampled block.
pub const SAMPLE_BLOCK: u64 = 64 << 10;

/// Blocks sampled from a file: the first, the last, and two between them.
const SAMPLES: u64 = 4;

/// Files up to this size are read whole in the sampled phase: their sample is their content.
pub const WHOLE_AT_ONCE: u64 = SAMPLES * SAMPLE_BLOCK;

/// Hashes a worker sends in one batch.
pub const HASH_BATCH: usize = 1024;

/// One candidate to read: a file of the snapshot, by its first link's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashWork {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    /// The mtime the scan recorded.
    pub mtime_ns: i64,
    pub path: Vec<u8>,
    /// Read the whole content (else the sampled blocks).
    pub full: bool,
}

impl Work for HashWork {
    fn encoded_len(&self) -> usize {
        8 * 4 + 1 + 4 + self.path.len()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.dev, self.ino, self.size, self.mtime_ns as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(u8::from(self.full));
        out.extend_from_slice(&(self.path.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.path);
    }

    fn decode(buf: &mut &[u8]) -> Option<Self> {
        let mut u64s = [0u64; 4];
        for v in &mut u64s {
            let (bytes, rest) = buf.split_first_chunk::<8>()?;
            *v = u64::from_le_bytes(*bytes);
            *buf = rest;
        }
        let (&full, rest) = buf.split_first()?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let path = rest.get(..len)?.to_vec();
        *buf = &rest[len..];
        Some(Self {
            dev: u64s[0],
            ino: u64s[1],
            size: u64s[2],
            mtime_ns: u64s[3] as i64,
            path,
            full: full != 0,
        })
    }
}

/// Why a file was not hashed: what its hash row says.
#[derive(Debug, thiserror::Error)]
enum Unread {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("changed since the scan: {0}")]
    Changed(String),
}

/// The hash of `work`'s file: sampled, or whole (also when the file is small enough to be
/// read whole at once). `no_atime` opens it with `O_NOATIME` where permitted. A whole read that
/// fails keeps the sample taken before it.
pub fn hash_file(work: &HashWork, no_atime: bool) -> FileHash {
    let mut row = FileHash {
        dev: work.dev,
        ino: work.ino,
        size: work.size,
        whole: work.full,
        ..FileHash::default()
    };
    if let Err(e) = read_hashes(work, no_atime, &mut row) {
        row.full.clear();
        row.error = e.to_string();
    }
    row
}

/// The bytes this hash reads of `work`'s file.
pub fn bytes_read(work: &HashWork) -> u64 {
    match (work.size <= WHOLE_AT_ONCE, work.full) {
        (true, _) => work.size,
        // The sample again, so that the row of the whole content carries it.
        (false, true) => work.size + SAMPLES * SAMPLE_BLOCK,
        (false, false) => SAMPLES * SAMPLE_BLOCK,
    }
}

fn open(path: &[u8], no_atime: bool) -> std::io::Result<std::fs::File> {
    let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
    let open = |flags: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | flags)
            .open(path)
    };
    if no_atime {
        match open(libc::O_NOATIME) {
            // O_NOATIME is only for the owner (or CAP_FOWNER); read other files normally.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            other => return other,
        }
    }
    open(0)
}

fn mtime_ns(md: &std::fs::Metadata) -> i64 {
    md.mtime() * 1_000_000_000 + md.mtime_nsec()
}

/// Fills `row`'s sample and whole hash, if `work`'s file is still the one the scan recorded.
fn read_hashes(work: &HashWork, no_atime: bool, row: &mut FileHash) -> Result<(), Unread> {
    let file = open(&work.path, no_atime)?;
    let before = file.metadata()?;
    if (before.dev(), before.ino()) != (work.dev, work.ino) {
        return Err(Unread::Changed(
            "another file is at its path now".to_owned(),
        ));
    }
    if before.len() != work.size {
        return Err(Unread::Changed(format!(
            "{} bytes, not {}",
            before.len(),
            work.size
        )));
    }
    if mtime_ns(&before) != work.mtime_ns {
        return Err(Unread::Changed(format!(
            "modified at {} ns, not {} as the scan saw it",
            mtime_ns(&before),
            work.mtime_ns
        )));
    }
    // A small file's sample is its whole content; a large one's sample is taken in both
    // phases, so that its row of either phase carries it.
    let whole_at_once = work.size <= WHOLE_AT_ONCE;
    if !whole_at_once {
        row.sample = read_samples(&file, work.size)?.to_vec();
    }
    if work.full || whole_at_once {
        let full = read_whole(&file, work.size)?;
        row.full = full.to_vec();
        if whole_at_once {
            row.sample = row.full.clone();
        }
    }
    let after = file.metadata()?;
    if (after.len(), mtime_ns(&after)) != (before.len(), mtime_ns(&before)) {
        row.sample.clear();
        return Err(Unread::Changed("modified while it was read".to_owned()));
    }
    Ok(())
}

/// BLAKE3 of the size and of [`SAMPLES`] blocks of [`SAMPLE_BLOCK`] bytes (each with its
/// offset): the first, the last, and two evenly between them.
fn read_samples(file: &std::fs::File, size: u64) -> Result<[u8; 32], Unread> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&size.to_le_bytes());
    let mut block = vec![0u8; SAMPLE_BLOCK as usize];
    let last = size - SAMPLE_BLOCK;
    for i in 0..SAMPLES {
        let offset = last / (SAMPLES - 1) * i;
        let offset = if i == SAMPLES - 1 { last } else { offset };
        file.read_exact_at(&mut block, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Unread::Changed("shorter than its size".to_owned())
            } else {
                Unread::Io(e)
            }
        })?;
        hasher.update(&offset.to_le_bytes());
        hasher.update(&block);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// BLAKE3 of the whole content, which must be `size` bytes.
fn read_whole(mut file: &std::fs::File, size: u64) -> Result<[u8; 32], Unread> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        hasher.update(&buf[..n]);
    }
    if read != size {
        return Err(Unread::Changed(format!("read {read} bytes, not {size}")));
    }
    Ok(*hasher.finalize().as_bytes())
}

/// What a rank's hashing counts, read by the progress reports.
#[derive(Debug, Default)]
pub struct HashCounts {
    pub files: AtomicU64,
    pub bytes_read: AtomicU64,
    pub errors: AtomicU64,
}

/// The progress of a phase: files hashed as entries, bytes read as bytes; rank 0 logs the
/// job's.
#[derive(Debug)]
pub struct HashStatus<'a> {
    pub counts: &'a HashCounts,
    pub phase: &'static str,
    pub started: Instant,
}

impl Status for HashStatus<'_> {
    fn progress(&self) -> RankProgress {
        RankProgress {
            entries: self.counts.files.load(Ordering::Relaxed),
            apparent_bytes: self.counts.bytes_read.load(Ordering::Relaxed),
            errors: self.counts.errors.load(Ordering::Relaxed),
        }
    }

    fn report(&self, ranks: &[RankProgress], busy: &[bool]) {
        let seconds = self.started.elapsed().as_secs_f64();
        let bytes: u64 = ranks.iter().map(|r| r.apparent_bytes).sum();
        info!(
            phase = self.phase,
            files = ranks.iter().map(|r| r.entries).sum::<u64>(),
            bytes_read = bytes,
            errors = ranks.iter().map(|r| r.errors).sum::<u64>(),
            busy_ranks = busy.iter().filter(|&&b| b).count(),
            mib_per_second = bytes as f64 / (1 << 20) as f64 / seconds.max(1e-9),
            "hashing"
        );
    }
}

/// A worker thread of the hashing: hashes files, sends its hashes in batches of
/// [`HASH_BATCH`]. A batch the aggregator refuses stops this worker's sending; the rank then
/// fails the phase ([`HashWorker::finish`] says why).
#[derive(Debug)]
pub struct HashWorker<'a> {
    pub ingest: &'a Ingest,
    pub snapshot_id: u64,
    pub rank: u32,
    pub no_atime: bool,
    pub counts: &'a HashCounts,
    batch: Vec<FileHash>,
    failed: Option<UploadError>,
}

impl<'a> HashWorker<'a> {
    pub fn new(
        ingest: &'a Ingest,
        snapshot_id: u64,
        rank: u32,
        no_atime: bool,
        counts: &'a HashCounts,
    ) -> Self {
        Self {
            ingest,
            snapshot_id,
            rank,
            no_atime,
            counts,
            batch: Vec::with_capacity(HASH_BATCH),
            failed: None,
        }
    }

    fn send(&mut self) {
        if self.batch.is_empty() || self.failed.is_some() {
            return;
        }
        let batch = HashBatch {
            snapshot_id: self.snapshot_id,
            rank: self.rank,
            hashes: std::mem::take(&mut self.batch),
        };
        if let Err(e) = self.ingest.put_hashes(batch) {
            self.failed = Some(e);
        }
    }

    /// Sends what is left; the error that stopped this worker's sending, if any.
    pub fn finish(mut self) -> Result<(), UploadError> {
        self.send();
        self.failed.map_or(Ok(()), Err)
    }
}

impl Worker<HashWork> for HashWorker<'_> {
    fn process(&mut self, item: HashWork, _spawn: &mut Spawner<'_, HashWork>) {
        if self.failed.is_some() || crate::signals::received().is_some() {
            // Nothing more can be delivered, or the job is told to stop: the rest of this
            // rank's share is skipped, and the phase fails (what was hashed is sent and kept).
            return;
        }
        let row = hash_file(&item, self.no_atime);
        let read = if row.error.is_empty() {
            bytes_read(&item)
        } else {
            self.counts.errors.fetch_add(1, Ordering::Relaxed);
            0
        };
        self.counts.files.fetch_add(1, Ordering::Relaxed);
        self.counts.bytes_read.fetch_add(read, Ordering::Relaxed);
        self.batch.push(row);
        if self.batch.len() >= HASH_BATCH {
            self.send();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(path: &std::path::Path, full: bool) -> HashWork {
        let md = std::fs::metadata(path).unwrap();
        HashWork {
            dev: md.dev(),
            ino: md.ino(),
            size: md.len(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            path: path.as_os_str().as_bytes().to_vec(),
            full,
        }
    }

    #[test]
    fn work_round_trips_through_its_encoding() {
        let w = HashWork {
            dev: 1 << 40,
            ino: 7,
            size: 123_456_789,
            mtime_ns: -5,
            path: b"/data/\xffodd".to_vec(),
            full: true,
        };
        let mut buf = Vec::new();
        w.encode(&mut buf);
        w.encode(&mut buf);
        assert_eq!(buf.len(), 2 * w.encoded_len());
        let mut at = &buf[..];
        assert_eq!(HashWork::decode(&mut at), Some(w.clone()));
        assert_eq!(HashWork::decode(&mut at), Some(w));
        assert!(at.is_empty());
        assert_eq!(HashWork::decode(&mut &buf[..10]), None);
    }

    #[test]
    fn samples_agree_where_only_an_unsampled_byte_differs_and_whole_hashes_tell_them_apart() {
        let dir = tempfile::tempdir().unwrap();
        let size = 4 << 20;
        let content: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, &content).unwrap();
        std::fs::write(&b, &content).unwrap();
        let mut near = content.clone();
        // Between the first and the second sampled block.
        near[(SAMPLE_BLOCK + 10) as usize] ^= 1;
        std::fs::write(&c, &near).unwrap();
        let h = |p: &std::path::Path, full| hash_file(&work(p, full), true);
        let (sa, sb, sc) = (h(&a, false), h(&b, false), h(&c, false));
        assert!(sa.error.is_empty(), "{}", sa.error);
        assert_eq!(sa.sample.len(), 32);
        assert!(sa.full.is_empty());
        assert_eq!(sa.sample, sb.sample);
        assert_eq!(sa.sample, sc.sample, "the differing byte is not sampled");
        let (fa, fb, fc) = (h(&a, true), h(&b, true), h(&c, true));
        assert_eq!(fa.sample, sa.sample, "both phases give the same sample");
        assert_eq!(fa.full, fb.full);
        assert_ne!(fa.full, fc.full);
        assert_eq!(fa.full, blake3::hash(&content).as_bytes().to_vec());
        // A byte in a sampled block (the last) changes the sample.
        let mut sampled = content.clone();
        sampled[size - 1] ^= 1;
        std::fs::write(&c, &sampled).unwrap();
        assert_ne!(h(&c, false).sample, sa.sample);
    }

    #[test]
    fn a_small_file_is_read_whole_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("small");
        std::fs::write(&p, b"hello").unwrap();
        let row = hash_file(&work(&p, false), false);
        assert_eq!(row.full, blake3::hash(b"hello").as_bytes().to_vec());
        assert_eq!(row.sample, row.full);
        assert_eq!(bytes_read(&work(&p, false)), 5);
    }

    #[test]
    fn a_file_that_changed_since_the_scan_is_not_hashed_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 1000]).unwrap();
        let mut w = work(&p, true);
        w.size = 999;
        let row = hash_file(&w, false);
        assert!(row.sample.is_empty() && row.full.is_empty());
        assert_eq!(row.error, "changed since the scan: 1000 bytes, not 999");
        let mut w = work(&p, true);
        w.ino += 1;
        assert!(
            hash_file(&w, false)
                .error
                .contains("another file is at its path")
        );
        // Of the same size and inode, but written since the scan.
        let mut w = work(&p, true);
        w.mtime_ns -= 1;
        let row = hash_file(&w, false);
        assert!(
            row.error.contains("changed since the scan: modified at"),
            "{}",
            row.error
        );
        assert!(row.sample.is_empty() && row.full.is_empty());
        std::fs::remove_file(&p).unwrap();
        assert!(
            hash_file(&work_at(&p), false)
                .error
                .contains("No such file")
        );
    }

    fn work_at(path: &std::path::Path) -> HashWork {
        HashWork {
            dev: 0,
            ino: 0,
            size: 1,
            mtime_ns: 0,
            path: path.as_os_str().as_bytes().to_vec(),
            full: false,
        }
    }
}
