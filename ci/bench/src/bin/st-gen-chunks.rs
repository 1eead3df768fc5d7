//! `st-gen-chunks`: writes a synthetic offline scan (chunk files and manifest, as
//! `storage-scan --output DIR` would) of a tree with any number of entries, without touching
//! the filesystem: for measuring import and commit on snapshots larger than a test machine's
//! inodes allow. Deterministic for a given seed.
//!
//! The tree: directories in levels of `--fan-out` subdirectories, each holding files
//! (`--files-per-dir`) with sizes spread over 0 B to 4 GiB, 40 extensions, 50 owners, times
//! over ten years, and one hard link in a thousand files.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use prost::Message;

use storage_tracker_proto::entry::{EntryRef, EntryStat};
use storage_tracker_proto::v1::{
    BeginSnapshotRequest, FinishSnapshotRequest, OfflineManifest, Principal, RankTotals,
};
use storage_tracker_proto::{
    EntryBatchBuilder, EntryKind, MANIFEST_FILE, SCHEMA_VERSION, chunk_file_name, encode_chunk,
};

#[derive(Debug, Parser)]
struct Args {
    /// Output directory (created).
    out: PathBuf,
    /// Entries to write (directories and files).
    #[arg(long, default_value_t = 10_000_000)]
    entries: u64,
    #[arg(long, default_value_t = 20)]
    fan_out: u64,
    #[arg(long, default_value_t = 60)]
    files_per_dir: u64,
    #[arg(long, default_value_t = 65_536)]
    chunk_rows: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const EXTENSIONS: [&str; 40] = [
    "c", "h", "py", "rs", "txt", "log", "dat", "bin", "h5", "nc", "csv", "json", "gz", "tar",
    "zst", "xz", "out", "err", "o", "so", "a", "mat", "npy", "npz", "pkl", "root", "fits", "png",
    "jpg", "pdf", "md", "sh", "ipynb", "parquet", "sqlite", "vtk", "xdmf", "chk", "rst", "",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let root = b"/synthetic".to_vec();
    let mut builder = EntryBatchBuilder::with_capacity(args.chunk_rows);
    let (mut written, mut seq, mut apparent) = (0u64, 0u64, 0u64);
    let mut ino = 1u64;
    let flush = |builder: &mut EntryBatchBuilder, seq: &mut u64| -> anyhow::Result<()> {
        let batch = builder.finish();
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let path = args.out.join(chunk_file_name(0, *seq));
        std::fs::write(&path, encode_chunk(&batch)?)?;
        *seq += 1;
        Ok(())
    };
    // Breadth first: a queue of (path, depth) directories still to fill.
    let mut queue = std::collections::VecDeque::from([(root.clone(), 0u32)]);
    let mut last_link: Option<(Vec<u8>, u64, u64)> = None;
    while let Some((dir, depth)) = queue.pop_front() {
        if written >= args.entries {
            break;
        }
        let (parent, name) = storage_tracker_proto::entry::split_path(&dir);
        let time = now - (rng.next() % (10 * 365 * 86_400)) as i64;
        let stat = EntryStat {
            size: 4096,
            allocated: 4096,
            nlink: 2,
            ino,
            dev: 42,
            mode: 0o40755,
            uid: 1000 + (rng.next() % 50) as u32,
            gid: 100 + (rng.next() % 10) as u32,
            atime_ns: time * 1_000_000_000,
            mtime_ns: time * 1_000_000_000,
            ctime_ns: time * 1_000_000_000,
            btime_ns: None,
        };
        ino += 1;
        builder.append(&EntryRef {
            path: &dir,
            parent: if depth == 0 { b"/" } else { parent },
            name,
            depth,
            kind: EntryKind::Dir,
            stat,
            symlink_target: b"",
            error: None,
        });
        apparent += 4096;
        written += 1;
        for i in 0..args.fan_out {
            let mut sub = dir.clone();
            sub.extend_from_slice(format!("/d{i:02}").as_bytes());
            queue.push_back((sub, depth + 1));
        }
        for i in 0..args.files_per_dir {
            if written >= args.entries {
                break;
            }
            let r = rng.next();
            let ext = EXTENSIONS[(r % EXTENSIONS.len() as u64) as usize];
            let mut path = dir.clone();
            path.extend_from_slice(format!("/f{i:03}").as_bytes());
            if !ext.is_empty() {
                path.extend_from_slice(format!(".{ext}").as_bytes());
            }
            // Sizes: log-uniform up to 4 GiB, a tenth empty.
            let size = if r % 10 == 0 {
                0
            } else {
                (rng.next() % (1 << 32)) >> (rng.next() % 32)
            };
            let mtime = now - (rng.next() % (10 * 365 * 86_400)) as i64;
            let atime = mtime + (rng.next() % 86_400_000) as i64;
            let (nlink, file_ino) = match &last_link {
                // Every thousandth file is a second link to an earlier one.
                Some((_, linked_ino, _)) if r % 1000 == 7 => (2, *linked_ino),
                _ => (1, ino),
            };
            if nlink == 1 {
                ino += 1;
            }
            let (size, allocated) = match (&last_link, nlink) {
                (Some((_, _, linked_size)), 2) => (*linked_size, linked_size.div_ceil(4096) * 4096),
                _ => (size, size.div_ceil(4096) * 4096),
            };
            let (parent, name) = storage_tracker_proto::entry::split_path(&path);
            builder.append(&EntryRef {
                path: &path,
                parent,
                name,
                depth: depth + 1,
                kind: EntryKind::File,
                stat: EntryStat {
                    size,
                    allocated,
                    nlink,
                    ino: file_ino,
                    dev: 42,
                    mode: 0o100644,
                    uid: 1000 + (rng.next() % 50) as u32,
                    gid: 100 + (rng.next() % 10) as u32,
                    atime_ns: atime * 1_000_000_000,
                    mtime_ns: mtime * 1_000_000_000,
                    ctime_ns: mtime * 1_000_000_000,
                    btime_ns: None,
                },
                symlink_target: b"",
                error: None,
            });
            if r % 997 == 0 {
                last_link = Some((path.clone(), file_ino, size));
            }
            apparent += size;
            written += 1;
            if builder.len() >= args.chunk_rows {
                flush(&mut builder, &mut seq)?;
            }
        }
        if builder.len() >= args.chunk_rows {
            flush(&mut builder, &mut seq)?;
        }
    }
    flush(&mut builder, &mut seq)?;
    let principals = |from: u32, n: u32| -> Vec<Principal> {
        (from..from + n)
            .map(|id| Principal {
                id,
                name: format!("user{id}"),
            })
            .collect()
    };
    let manifest = OfflineManifest {
        begin: Some(BeginSnapshotRequest {
            filesystem_label: "synthetic".into(),
            root_path: root,
            ranks: 1,
            hosts: vec!["synthetic".into()],
            scanner_version: "st-gen-chunks".into(),
            schema_version: SCHEMA_VERSION,
            scan_id: format!("st-gen-chunks-{}-{}-{}", args.entries, args.seed, now),
            started_at: now,
            ..Default::default()
        }),
        finish: Some(FinishSnapshotRequest {
            snapshot_id: 0,
            ranks: vec![RankTotals {
                rank: 0,
                chunks: seq,
                entries: written,
                errors: 0,
                apparent_bytes: apparent,
                host: "synthetic".into(),
            }],
            users: principals(1000, 50),
            groups: principals(100, 10),
        }),
        finished_at: now,
    };
    std::fs::write(args.out.join(MANIFEST_FILE), manifest.encode_to_vec())?;
    println!("{written} entries in {seq} chunk files, {apparent} apparent bytes");
    Ok(())
}
