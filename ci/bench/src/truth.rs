//! Ground truth of a tree, computed by the simplest possible walk (std's `read_dir` and
//! by-path `symlink_metadata`, one thread): independent of the scanner's code.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Totals of a tree or a subtree (the directory itself included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub entries: u64,
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub other: u64,
    pub apparent_bytes: u64,
    /// st_blocks * 512 of every path.
    pub allocated_bytes: u64,
    /// st_blocks * 512 with each (dev, ino) counted once, as `du` does.
    pub allocated_unique: u64,
}

/// The totals of the whole tree and of each top-level directory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Truth {
    pub all: Totals,
    pub top: BTreeMap<Vec<u8>, Totals>,
}

/// Visits every entry under (and including) `root` with its by-path `symlink_metadata`: a
/// directory before its children, siblings in reverse `read_dir` order (a stack). This is the
/// one ground-truth walk: the benchmarks' totals and the integration tests' expected rows are
/// both computed from it.
pub fn walk(root: &Path, mut visit: impl FnMut(&Path, &std::fs::Metadata)) -> std::io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path)?;
        if md.file_type().is_dir() {
            for e in std::fs::read_dir(&path)? {
                stack.push(e?.path());
            }
        }
        visit(&path, &md);
    }
    Ok(())
}

/// The totals of the tree at `root` and of each of its top-level directories.
pub fn compute(root: &Path) -> std::io::Result<Truth> {
    let mut truth = Truth::default();
    let mut seen = HashSet::new();
    walk(root, |path, md| {
        let t = md.file_type();
        let top = path
            .strip_prefix(root)
            .ok()
            .and_then(|below| below.components().next())
            .map(|c| c.as_os_str().as_bytes().to_vec());
        let first_link = seen.insert((md.dev(), md.ino()));
        let add = |x: &mut Totals| {
            x.entries += 1;
            x.dirs += u64::from(t.is_dir());
            x.files += u64::from(t.is_file());
            x.symlinks += u64::from(t.is_symlink());
            x.other += u64::from(!t.is_dir() && !t.is_file() && !t.is_symlink());
            x.apparent_bytes += md.size();
            x.allocated_bytes += md.blocks() * 512;
            if first_link {
                x.allocated_unique += md.blocks() * 512;
            }
        };
        add(&mut truth.all);
        if let Some(top) = top {
            add(truth.top.entry(top).or_default());
        }
    })?;
    Ok(truth)
}

impl Totals {
    fn write(&self, out: &mut String, prefix: &str) {
        let fields = [
            ("entries", self.entries),
            ("dirs", self.dirs),
            ("files", self.files),
            ("symlinks", self.symlinks),
            ("other", self.other),
            ("apparent_bytes", self.apparent_bytes),
            ("allocated_bytes", self.allocated_bytes),
            ("allocated_unique", self.allocated_unique),
        ];
        for (k, v) in fields {
            writeln!(out, "{prefix}{k}\t{v}").expect("writing to a String");
        }
    }
}

impl Truth {
    /// A plain text form: `key<TAB>value` lines; top-level directories as `top/NAME/key`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.all.write(&mut out, "");
        for (name, t) in &self.top {
            t.write(&mut out, &format!("top/{}/", String::from_utf8_lossy(name)));
        }
        out
    }
}
