//! `st-gen-tree`: make a deterministic directory tree for benchmarks and write its ground truth.
//!
//! The tree has a skewed fan-out (most directories small, some large), a few huge flat
//! directories, hard links and symlinks, and sparse files (large apparent sizes that cost no
//! disk), so a million entries need only inodes. The truth is written beside the tree as
//! `<OUT>.truth.tsv`, from an independent by-path walk.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use storage_tracker_bench::{Rng, truth};

/// Make a deterministic tree for benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// Directory to create (must not exist).
    out: PathBuf,
    /// Entries to create, approximately (directories, files and links).
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Seed of the generator: the same seed makes the same tree.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Flat directories that hold `--huge-share` of the entries between them.
    #[arg(long, default_value_t = 2)]
    huge_dirs: u64,
    /// Share of the entries in the huge directories.
    #[arg(long, default_value_t = 0.1)]
    huge_share: f64,
    /// Deepest level of the nested part.
    #[arg(long, default_value_t = 14)]
    max_depth: u32,
}

struct Maker {
    rng: Rng,
    made: u64,
    last_file: Option<PathBuf>,
    started: Instant,
}

impl Maker {
    fn count(&mut self) {
        self.made += 1;
        if self.made % 200_000 == 0 {
            eprintln!(
                "  {} entries, {:.0}/s",
                self.made,
                self.made as f64 / self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn dir(&mut self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir(path)?;
        self.count();
        Ok(())
    }

    /// A file: mostly sparse (an apparent size, no blocks), every 50th with real data; every
    /// 100th also gets a hard link, every 150th a symlink beside it.
    fn file(&mut self, dir: &Path, i: u64) -> std::io::Result<()> {
        let path = dir.join(format!("f{i:05}.dat"));
        let f = std::fs::File::create(&path)?;
        if self.made % 50 == 0 {
            (&f).write_all(&vec![0x5a; 1 + self.rng.below(8192) as usize])?;
        } else {
            f.set_len(
                self.rng.skewed(64 << 10) * (1 + self.rng.below(4) * self.rng.below(4) * 256),
            )?;
        }
        self.count();
        if self.made % 100 == 0
            && let Some(prev) = self.last_file.take()
        {
            std::fs::hard_link(&prev, dir.join(format!("f{i:05}.hardlink")))?;
            self.count();
        }
        if self.made % 150 == 0 {
            std::os::unix::fs::symlink(
                format!("f{i:05}.dat"),
                dir.join(format!("f{i:05}.symlink")),
            )?;
            self.count();
        }
        self.last_file = Some(path);
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.out.exists() {
        bail!("{} exists; give a new directory", args.out.display());
    }
    let started = Instant::now();
    let mut m = Maker {
        rng: Rng::new(args.seed),
        made: 0,
        last_file: None,
        started,
    };
    m.dir(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;

    let huge_entries = (args.entries as f64 * args.huge_share) as u64;
    for h in 0..args.huge_dirs {
        let dir = args.out.join(format!("huge-{h}"));
        m.dir(&dir)?;
        for i in 0..huge_entries / args.huge_dirs.max(1) {
            m.file(&dir, i)?;
        }
    }

    // The nested part, breadth first until the budget is spent.
    let mut queue = VecDeque::from([(args.out.join("tree"), 0u32)]);
    m.dir(&queue[0].0)?;
    while let Some((dir, depth)) = queue.pop_front() {
        if m.made >= args.entries {
            break;
        }
        for i in 0..m.rng.skewed(16) {
            m.file(&dir, i)?;
        }
        if depth < args.max_depth {
            // At least one subdirectory while the queue is short, so the tree keeps growing.
            let subdirs = m.rng.skewed(4) + u64::from(queue.len() < 8);
            for i in 0..subdirs {
                let sub = dir.join(format!("d{i:03}"));
                m.dir(&sub)?;
                queue.push_back((sub, depth + 1));
            }
        }
    }
    eprintln!(
        "made {} entries in {:.1} s; computing the ground truth",
        m.made,
        started.elapsed().as_secs_f64()
    );
    let truth = truth::compute(&args.out)?;
    let mut truth_path = args.out.clone().into_os_string();
    truth_path.push(".truth.tsv");
    std::fs::write(&truth_path, truth.to_text())?;
    eprintln!(
        "{} entries; truth in {}",
        truth.all.entries,
        PathBuf::from(truth_path).display()
    );
    Ok(())
}
