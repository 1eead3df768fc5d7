//! `st-gen-chunks`: writes a synthetic offline scan (chunk files and manifest, as
//! `storage-scan --output DIR` would) of a project filesystem of any size, without touching
//! the filesystem: for measuring import, commit and queries on snapshots larger than a test
//! machine's inodes allow. Deterministic for a given seed.
//!
//! The tree is shaped like an HPC project filesystem: `projects/pNNNN` (a group each), with a
//! directory per member (one owner below it), holding job runs (Slurm logs, HDF5 outputs,
//! checkpoints), code (sources in nested packages), datasets (parts of one format), and now and
//! then a huge flat directory; and `home/USER` with dot files. Names repeat as they do on real
//! filesystems (`README.md`, `config.yaml`, `slurm-JOBID.out`), sizes follow the file's type,
//! times cluster by directory and spread over eight years, inodes follow creation order, and
//! one file in a few hundred is a second hard link or a symlink.
//!
//! `--snapshot 2` writes the same tree a week later: some runs and datasets removed, some
//! grown, new runs, files modified and read. The base tree is walked in the same order either
//! way, so `--entries` cuts both at the same place.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
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
    /// Entries of the first snapshot's tree (directories, files and symlinks); the second's
    /// differs by its changes.
    #[arg(long, default_value_t = 10_000_000)]
    entries: u64,
    /// 1: the tree; 2: the same tree a week later, changed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    snapshot: u8,
    /// The resolution of the times: whole seconds (as Lustre keeps them) or nanoseconds (as
    /// ext4, XFS and GPFS do).
    #[arg(long, value_enum, default_value_t = Resolution::Seconds)]
    time_resolution: Resolution,
    #[arg(long, default_value_t = 65_536)]
    chunk_rows: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Resolution {
    Seconds,
    Nanoseconds,
}

const USERS: u32 = 800;
const GROUPS: u32 = 120;
const FIRST_UID: u32 = 10_000;
const FIRST_GID: u32 = 5_000;
const DAY: i64 = 86_400;
const WEEK: i64 = 7 * DAY;
/// The first snapshot's time: fixed, so the same seed gives the same bytes.
const FIRST_SCAN: i64 = 1_764_547_200; // 2025-12-01

/// splitmix64: a stream of its own for every directory, from the seed and the directory's
/// place in the walk.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, key: u64, stream: u64) -> Self {
        let mut r = Self(seed ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream << 56);
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// 0..n
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    /// Log-uniform in lo..=hi.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (l, h) = ((lo.max(1) as f64).ln(), (hi.max(1) as f64).ln());
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        (l + (h - l) * u).exp() as u64
    }
}

/// What a directory holds, which decides its names, sizes and subdirectories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    Root,
    Projects,
    Project,
    Member,
    Runs,
    Run,
    Code,
    Package,
    Datasets,
    Dataset,
    Huge,
    Homes,
    Home,
}

/// A directory being generated: where, whose, and when it was made.
#[derive(Clone)]
struct Dir {
    path: Vec<u8>,
    depth: u32,
    area: Area,
    uid: u32,
    gid: u32,
    /// When its files were written (seconds).
    born: i64,
    /// Removed before the second snapshot (with everything below).
    removed: bool,
}

struct Generator {
    args: Args,
    builder: EntryBatchBuilder,
    /// The base tree's entries walked so far (written or, in snapshot 2, removed).
    walked: u64,
    written: u64,
    chunks: u64,
    apparent: u64,
    next_ino: u64,
    /// Directories walked: each one's key for its random streams.
    dirs: u64,
    /// This snapshot's time.
    now: i64,
    /// An earlier file of the current member, for hard links: (ino, size, allocated).
    link_to: Option<(u64, u64, u64)>,
}

/// A file's type: its extension, sizes (log-uniform) and how names are made.
struct Type {
    ext: &'static str,
    min: u64,
    max: u64,
}

const fn t(ext: &'static str, min: u64, max: u64) -> Type {
    Type { ext, min, max }
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const RUN_OUTPUTS: [Type; 6] = [
    t("h5", MIB, 2 * GIB),
    t("nc", MIB, GIB),
    t("dat", KIB, GIB),
    t("npy", 100 * KIB, 2 * GIB),
    t("vtk", MIB, GIB),
    t("csv", KIB, 200 * MIB),
];
const SOURCES: [Type; 10] = [
    t("py", 200, 60 * KIB),
    t("c", 500, 200 * KIB),
    t("h", 200, 40 * KIB),
    t("cpp", 500, 300 * KIB),
    t("f90", 1000, 400 * KIB),
    t("rs", 300, 80 * KIB),
    t("jl", 300, 50 * KIB),
    t("o", 2 * KIB, 2 * MIB),
    t("so", 50 * KIB, 80 * MIB),
    t("ipynb", 2 * KIB, 20 * MIB),
];
const DATASET_PARTS: [Type; 7] = [
    t("parquet", MIB, 2 * GIB),
    t("nc", MIB, 2 * GIB),
    t("fits", 100 * KIB, 500 * MIB),
    t("tif", 100 * KIB, 200 * MIB),
    t("csv.gz", 10 * KIB, 500 * MIB),
    t("tar", 10 * MIB, 8 * GIB),
    t("zst", MIB, 10 * GIB),
];
const HOME_FILES: [&str; 12] = [
    ".bashrc",
    ".bash_history",
    ".profile",
    ".vimrc",
    ".gitconfig",
    ".condarc",
    ".python_history",
    ".viminfo",
    ".lesshst",
    ".Xauthority",
    "notes.txt",
    "todo.md",
];
const CODE_FILES: [&str; 8] = [
    "README.md",
    "Makefile",
    "CMakeLists.txt",
    "setup.py",
    "LICENSE",
    ".gitignore",
    "requirements.txt",
    "environment.yml",
];
const PACKAGE_NAMES: [&str; 12] = [
    "src", "lib", "include", "tests", "utils", "io", "solvers", "models", "kernels", "analysis",
    "scripts", "build",
];
const DATASET_NAMES: [&str; 10] = [
    "raw",
    "processed",
    "era5",
    "cmip6",
    "observations",
    "images",
    "spectra",
    "sequencing",
    "training",
    "validation",
];
const HUGE_NAMES: [&str; 4] = ["frames", "tiles", "samples", "events"];

impl Generator {
    /// `seconds` in nanoseconds, at the chosen resolution; the fraction comes from `salt`
    /// (not from a directory's stream, so both resolutions give the same tree).
    fn time(&self, seconds: i64, salt: u64) -> i64 {
        let ns = match self.args.time_resolution {
            Resolution::Seconds => 0,
            Resolution::Nanoseconds => Rng::new(self.args.seed, salt, 2).below(1_000_000_000),
        };
        seconds * 1_000_000_000 + ns as i64
    }

    fn second(&self) -> bool {
        self.args.snapshot == 2
    }

    fn full(&self) -> bool {
        self.walked >= self.args.entries
    }

    /// One entry of the base tree (counted in `walked`), or a new one of snapshot 2
    /// (`base` false); written unless `removed`.
    fn emit(
        &mut self,
        parent: &Dir,
        name: &[u8],
        kind: EntryKind,
        stat: EntryStat,
        target: &[u8],
        base: bool,
    ) -> anyhow::Result<()> {
        if base {
            if self.full() {
                return Ok(());
            }
            self.walked += 1;
        }
        if parent.removed {
            return Ok(());
        }
        let mut path = parent.path.clone();
        if path != b"/" {
            path.push(b'/');
        }
        path.extend_from_slice(name);
        self.builder.append(&EntryRef {
            path: &path,
            parent: &parent.path,
            name,
            depth: parent.depth + 1,
            kind,
            stat,
            symlink_target: target,
            error: None,
        });
        self.written += 1;
        self.apparent += stat.size;
        if self.builder.len() >= self.args.chunk_rows {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        let batch = self.builder.finish();
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let path = self.args.out.join(chunk_file_name(0, self.chunks));
        std::fs::write(&path, encode_chunk(&batch)?)
            .with_context(|| format!("writing {}", path.display()))?;
        self.chunks += 1;
        Ok(())
    }

    fn ino(&mut self) -> u64 {
        self.next_ino += 1;
        self.next_ino
    }

    /// A directory's own entry, then what it holds.
    fn dir(
        &mut self,
        parent: &Dir,
        name: &str,
        area: Area,
        born: i64,
        uid: u32,
    ) -> anyhow::Result<()> {
        if self.full() {
            return Ok(());
        }
        self.dirs += 1;
        let key = self.dirs;
        let mut rng = Rng::new(self.args.seed, key, 0);
        let mut change = Rng::new(self.args.seed, key, 1);
        let removed = parent.removed
            || (self.second()
                && matches!(area, Area::Run | Area::Dataset | Area::Package)
                && change.chance(20));
        let ino = self.ino();
        let mut path = parent.path.clone();
        if path != b"/" {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        let dir = Dir {
            path,
            depth: parent.depth + 1,
            area,
            uid,
            gid: parent.gid,
            born,
            removed,
        };
        let time = self.time(born + rng.below(DAY as u64) as i64, ino);
        let stat = EntryStat {
            size: 4096,
            allocated: 4096,
            nlink: 2,
            ino,
            dev: 0xfd01,
            mode: if area == Area::Home { 0o40700 } else { 0o42775 },
            uid,
            gid: dir.gid,
            atime_ns: time,
            mtime_ns: time,
            ctime_ns: time,
            btime_ns: None,
        };
        // A removed directory goes with its own entry.
        let holder = Dir {
            removed,
            ..parent.clone()
        };
        self.emit(&holder, name.as_bytes(), EntryKind::Dir, stat, b"", true)?;
        self.fill(&dir, &mut rng, &mut change)
    }

    /// A regular file of `size` bytes written around `at`.
    #[allow(clippy::too_many_arguments)]
    fn file(
        &mut self,
        dir: &Dir,
        name: &[u8],
        size: u64,
        at: i64,
        rng: &mut Rng,
        change: &mut Rng,
        base: bool,
    ) -> anyhow::Result<()> {
        let (mut size, mut mtime) = (size, at);
        let mut atime = (at + rng.log_uniform(1, 200 * DAY as u64) as i64).min(self.base_now());
        if self.second() && base {
            // A week on: some files written again, more of them read.
            if change.chance(30) {
                mtime = self.now - change.below(WEEK as u64) as i64;
                size = size / 2 + change.below(size.max(1));
                atime = mtime;
            } else if change.chance(60) {
                atime = self.now - change.below(WEEK as u64) as i64;
            }
        }
        let (mut ino, mut allocated, mut nlink) = (0, size.div_ceil(4096) * 4096, 1);
        match self.link_to {
            // A second link to an earlier file of the same owner.
            Some((linked, linked_size, linked_allocated)) if rng.chance(3) => {
                (ino, size, allocated, nlink) = (linked, linked_size, linked_allocated, 2);
            }
            _ => {}
        }
        if nlink == 1 {
            ino = self.ino();
            if rng.chance(2) {
                // Sparse: a preallocated output barely written.
                allocated = allocated.min(4096 * rng.below(16));
            }
            if rng.chance(5) {
                self.link_to = Some((ino, size, allocated));
            }
        }
        let mt = self.time(mtime, ino << 2);
        let stat = EntryStat {
            size,
            allocated,
            nlink,
            ino,
            dev: 0xfd01,
            mode: if name.ends_with(b".sh") || name.ends_with(b".so") {
                0o100775
            } else {
                0o100664
            },
            uid: dir.uid,
            gid: dir.gid,
            atime_ns: self.time(atime, ino << 2 | 1).max(mt),
            mtime_ns: mt,
            ctime_ns: mt,
            btime_ns: None,
        };
        self.emit(dir, name, EntryKind::File, stat, b"", base)
    }

    fn symlink(&mut self, dir: &Dir, name: &[u8], target: &[u8]) -> anyhow::Result<()> {
        let ino = self.ino();
        let time = self.time(dir.born, ino);
        let stat = EntryStat {
            size: target.len() as u64,
            allocated: 0,
            nlink: 1,
            ino,
            dev: 0xfd01,
            mode: 0o120777,
            uid: dir.uid,
            gid: dir.gid,
            atime_ns: time,
            mtime_ns: time,
            ctime_ns: time,
            btime_ns: None,
        };
        self.emit(dir, name, EntryKind::Symlink, stat, target, true)
    }

    /// The first snapshot's time, before which every base time lies.
    fn base_now(&self) -> i64 {
        FIRST_SCAN
    }

    /// What a directory holds, by its area.
    fn fill(&mut self, dir: &Dir, rng: &mut Rng, change: &mut Rng) -> anyhow::Result<()> {
        match dir.area {
            Area::Root => {
                let root = Dir {
                    gid: FIRST_GID,
                    ..dir.clone()
                };
                self.dir(&root, "home", Area::Homes, dir.born, 0)?;
                self.dir(&root, "projects", Area::Projects, dir.born, 0)?;
            }
            Area::Projects => {
                for p in 0.. {
                    if self.full() {
                        break;
                    }
                    let gid = FIRST_GID + (p % GROUPS);
                    let born = FIRST_SCAN - 8 * 365 * DAY + rng.below(7 * 365 * DAY as u64) as i64;
                    let group = Dir { gid, ..dir.clone() };
                    let owner = FIRST_UID + rng.below(u64::from(USERS)) as u32;
                    self.dir(&group, &format!("p{p:04}"), Area::Project, born, owner)?;
                }
            }
            Area::Project => {
                for name in ["README.md", "allocation.txt"] {
                    let size = rng.log_uniform(200, 8 * KIB);
                    self.file(dir, name.as_bytes(), size, dir.born, rng, change, true)?;
                }
                let members = 1 + rng.log_uniform(1, 12);
                for _ in 0..members {
                    let uid = FIRST_UID + rng.below(u64::from(USERS)) as u32;
                    let born = dir.born + rng.below((FIRST_SCAN - dir.born).max(1) as u64) as i64;
                    self.link_to = None;
                    self.dir(dir, &format!("user{uid}"), Area::Member, born, uid)?;
                }
            }
            Area::Member => {
                self.dir(dir, "runs", Area::Runs, dir.born, dir.uid)?;
                for i in 0..rng.log_uniform(1, 4) {
                    let name = if i == 0 {
                        "code".to_owned()
                    } else {
                        format!("code{i}")
                    };
                    self.dir(
                        dir,
                        &name,
                        Area::Code,
                        dir.born + rng.below(90 * DAY as u64) as i64,
                        dir.uid,
                    )?;
                }
                if rng.chance(600) {
                    self.dir(dir, "data", Area::Datasets, dir.born, dir.uid)?;
                }
                if rng.chance(3) {
                    let name = HUGE_NAMES[rng.below(4) as usize];
                    self.dir(dir, name, Area::Huge, dir.born, dir.uid)?;
                }
            }
            Area::Runs => {
                let runs = rng.log_uniform(1, 120);
                let span = (FIRST_SCAN - dir.born).max(DAY);
                for i in 0..runs {
                    let born = dir.born + rng.below(span as u64) as i64;
                    self.dir(dir, &format!("run_{i:04}"), Area::Run, born, dir.uid)?;
                }
                if runs > 1 && !dir.removed {
                    let target = format!("run_{:04}", runs - 1);
                    self.symlink(dir, b"latest", target.as_bytes())?;
                }
                if self.second() && change.chance(200) {
                    // New runs this week.
                    for i in runs..runs + 1 + change.below(5) {
                        self.new_run(dir, i, change)?;
                    }
                }
            }
            Area::Run => {
                let job = 1_000_000 + rng.below(40_000_000);
                for (name, size) in [
                    (format!("slurm-{job}.out"), rng.log_uniform(100, 50 * MIB)),
                    (format!("slurm-{job}.err"), rng.log_uniform(1, MIB)),
                    ("config.yaml".to_owned(), rng.log_uniform(300, 8 * KIB)),
                    ("job.sh".to_owned(), rng.log_uniform(300, 4 * KIB)),
                ] {
                    self.file(dir, name.as_bytes(), size, dir.born, rng, change, true)?;
                }
                let outputs = rng.log_uniform(1, 400);
                let ty = &RUN_OUTPUTS[rng.below(RUN_OUTPUTS.len() as u64) as usize];
                for i in 0..outputs {
                    let size = rng.log_uniform(ty.min, ty.max);
                    let at = dir.born + (i as i64) * rng.log_uniform(1, 3600) as i64;
                    let name = format!("output_{i:05}.{}", ty.ext);
                    self.file(dir, name.as_bytes(), size, at, rng, change, true)?;
                }
                for i in 0..rng.below(6).saturating_sub(3) {
                    let size = rng.log_uniform(10 * MIB, 4 * GIB);
                    let name = format!("checkpoint_{i:03}.chk");
                    self.file(dir, name.as_bytes(), size, dir.born, rng, change, true)?;
                }
                self.grow(dir, outputs, ty, change)?;
            }
            Area::Code | Area::Package => {
                if dir.area == Area::Code {
                    for name in CODE_FILES
                        .iter()
                        .take(1 + rng.below(CODE_FILES.len() as u64) as usize)
                    {
                        let size = rng.log_uniform(100, 20 * KIB);
                        self.file(dir, name.as_bytes(), size, dir.born, rng, change, true)?;
                    }
                }
                let ty = &SOURCES[rng.below(SOURCES.len() as u64) as usize];
                for i in 0..rng.log_uniform(1, 60) {
                    let size = rng.log_uniform(ty.min, ty.max);
                    let at = dir.born + rng.below(400 * DAY as u64) as i64;
                    let name = format!("{}_{i}.{}", stem(rng), ty.ext);
                    self.file(
                        dir,
                        name.as_bytes(),
                        size,
                        at.min(FIRST_SCAN),
                        rng,
                        change,
                        true,
                    )?;
                }
                if dir.depth < 12 {
                    let subdirs = if dir.area == Area::Code {
                        1 + rng.below(6)
                    } else {
                        rng.below(3)
                    };
                    for i in 0..subdirs {
                        let name = PACKAGE_NAMES
                            [((i + rng.below(3)) % PACKAGE_NAMES.len() as u64) as usize];
                        let name = if i == 0 {
                            name.to_owned()
                        } else {
                            format!("{name}{i}")
                        };
                        self.dir(dir, &name, Area::Package, dir.born, dir.uid)?;
                    }
                }
            }
            Area::Datasets => {
                for i in 0..rng.log_uniform(1, 12) {
                    let name = DATASET_NAMES[rng.below(DATASET_NAMES.len() as u64) as usize];
                    let name = format!("{name}_{i}");
                    let born = dir.born + rng.below((FIRST_SCAN - dir.born).max(1) as u64) as i64;
                    self.dir(dir, &name, Area::Dataset, born, dir.uid)?;
                }
            }
            Area::Dataset => {
                let ty = &DATASET_PARTS[rng.below(DATASET_PARTS.len() as u64) as usize];
                let parts = rng.log_uniform(1, 3000);
                self.file(
                    dir,
                    b"README.md",
                    rng.log_uniform(100, 4 * KIB),
                    dir.born,
                    rng,
                    change,
                    true,
                )?;
                for i in 0..parts {
                    let size = rng.log_uniform(ty.min, ty.max);
                    let name = format!("part-{i:05}.{}", ty.ext);
                    self.file(dir, name.as_bytes(), size, dir.born, rng, change, true)?;
                }
                self.grow(dir, parts, ty, change)?;
            }
            Area::Huge => {
                // A flat directory of small files: the share of the tree a real one takes.
                let files = (self.args.entries / 400).clamp(20_000, 2_000_000);
                for i in 0..files {
                    let name = format!("{}_{i:07}.png", HUGE_NAMES[(i % 4) as usize]);
                    let size = rng.log_uniform(2 * KIB, 400 * KIB);
                    self.file(dir, name.as_bytes(), size, dir.born, rng, change, true)?;
                }
            }
            Area::Homes => {
                for u in 0..USERS {
                    if self.full() {
                        break;
                    }
                    let uid = FIRST_UID + u;
                    let home = Dir {
                        gid: FIRST_GID + u % GROUPS,
                        ..dir.clone()
                    };
                    let born = FIRST_SCAN - 8 * 365 * DAY + rng.below(8 * 365 * DAY as u64) as i64;
                    self.dir(&home, &format!("user{uid}"), Area::Home, born, uid)?;
                }
            }
            Area::Home => {
                for name in HOME_FILES
                    .iter()
                    .take(3 + rng.below(HOME_FILES.len() as u64 - 3) as usize)
                {
                    let size = rng.log_uniform(20, 200 * KIB);
                    let at = dir.born + rng.below((FIRST_SCAN - dir.born).max(1) as u64) as i64;
                    self.file(dir, name.as_bytes(), size, at, rng, change, true)?;
                }
            }
        }
        Ok(())
    }

    /// Snapshot 2: a run or dataset that grew this week.
    fn grow(&mut self, dir: &Dir, from: u64, ty: &Type, change: &mut Rng) -> anyhow::Result<()> {
        if !self.second() || dir.removed || !change.chance(50) {
            return Ok(());
        }
        let added = 1 + change.below(from.max(4));
        for i in from..from + added {
            let size = change.log_uniform(ty.min, ty.max);
            let at = self.now - change.below(WEEK as u64) as i64;
            let name = format!("output_{i:05}.{}", ty.ext);
            let mut rng = change.clone();
            self.file(dir, name.as_bytes(), size, at, &mut rng, change, false)?;
        }
        Ok(())
    }

    /// Snapshot 2: a run started this week (its entries are new, not the base tree's).
    fn new_run(&mut self, runs: &Dir, i: u64, change: &mut Rng) -> anyhow::Result<()> {
        let name = format!("run_{i:04}");
        let born = self.now - change.below(WEEK as u64) as i64;
        let mut path = runs.path.clone();
        path.push(b'/');
        path.extend_from_slice(name.as_bytes());
        let run = Dir {
            path,
            depth: runs.depth + 1,
            area: Area::Run,
            born,
            removed: false,
            ..runs.clone()
        };
        let ino = self.ino();
        let mut rng = change.clone();
        let time = self.time(born, ino);
        let stat = EntryStat {
            size: 4096,
            allocated: 4096,
            nlink: 2,
            ino,
            dev: 0xfd01,
            mode: 0o42775,
            uid: runs.uid,
            gid: runs.gid,
            atime_ns: time,
            mtime_ns: time,
            ctime_ns: time,
            btime_ns: None,
        };
        self.emit(runs, name.as_bytes(), EntryKind::Dir, stat, b"", false)?;
        let ty = &RUN_OUTPUTS[change.below(RUN_OUTPUTS.len() as u64) as usize];
        for j in 0..change.log_uniform(1, 200) {
            let size = change.log_uniform(ty.min, ty.max);
            let name = format!("output_{j:05}.{}", ty.ext);
            self.file(
                &run,
                name.as_bytes(),
                size,
                born,
                &mut rng,
                &mut Rng(0),
                false,
            )?;
        }
        Ok(())
    }
}

/// A source file's stem: words that repeat across a codebase.
fn stem(rng: &mut Rng) -> &'static str {
    const STEMS: [&str; 16] = [
        "main", "utils", "solver", "mesh", "io", "test", "config", "model", "grid", "fft",
        "parser", "kernel", "common", "types", "plot", "init",
    ];
    STEMS[rng.below(STEMS.len() as u64) as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let now = FIRST_SCAN + WEEK * i64::from(args.snapshot - 1);
    let root = b"/synthetic".to_vec();
    let mut g = Generator {
        builder: EntryBatchBuilder::with_capacity(args.chunk_rows),
        walked: 0,
        written: 0,
        chunks: 0,
        apparent: 0,
        next_ino: 1,
        dirs: 0,
        now,
        link_to: None,
        args,
    };
    let rng = Rng::new(g.args.seed, 0, 0);
    let born = FIRST_SCAN - 8 * 365 * DAY;
    let time = g.time(born, 1);
    let top = Dir {
        path: root.clone(),
        depth: 0,
        area: Area::Root,
        uid: 0,
        gid: 0,
        born,
        removed: false,
    };
    // The root's own entry: its parent is "/", at depth 0.
    g.builder.append(&EntryRef {
        path: &root,
        parent: b"/",
        name: b"synthetic",
        depth: 0,
        kind: EntryKind::Dir,
        stat: EntryStat {
            size: 4096,
            allocated: 4096,
            nlink: 2,
            ino: 1,
            dev: 0xfd01,
            mode: 0o40755,
            atime_ns: time,
            mtime_ns: time,
            ctime_ns: time,
            ..Default::default()
        },
        symlink_target: b"",
        error: None,
    });
    g.walked = 1;
    g.written = 1;
    g.apparent = 4096;
    let (mut keep, mut change) = (rng.clone(), rng);
    g.fill(&top, &mut keep, &mut change)?;
    g.flush()?;
    let principals = |from: u32, n: u32, prefix: &str| -> Vec<Principal> {
        (from..from + n)
            .map(|id| Principal {
                id,
                name: format!("{prefix}{id}"),
            })
            .collect()
    };
    let args = &g.args;
    let manifest = OfflineManifest {
        begin: Some(BeginSnapshotRequest {
            filesystem_label: "synthetic".into(),
            root_path: root,
            ranks: 1,
            hosts: vec!["synthetic".into()],
            scanner_version: "st-gen-chunks".into(),
            schema_version: SCHEMA_VERSION,
            scan_id: format!(
                "st-gen-chunks-{}-{}-{}-{:?}",
                args.entries, args.seed, args.snapshot, args.time_resolution
            ),
            started_at: now,
            started_at_ns: now * 1_000_000_000,
            ..Default::default()
        }),
        finish: Some(FinishSnapshotRequest {
            snapshot_id: 0,
            ranks: vec![RankTotals {
                rank: 0,
                chunks: g.chunks,
                entries: g.written,
                errors: 0,
                apparent_bytes: g.apparent,
                host: "synthetic".into(),
            }],
            users: principals(FIRST_UID, USERS, "user"),
            groups: principals(FIRST_GID, GROUPS, "group"),
        }),
        finished_at: now + 3600,
    };
    std::fs::write(args.out.join(MANIFEST_FILE), manifest.encode_to_vec())?;
    println!(
        "{} entries in {} chunk files, {} apparent bytes, {} directories walked",
        g.written, g.chunks, g.apparent, g.dirs
    );
    Ok(())
}
