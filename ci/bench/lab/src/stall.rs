//! Stalled subtrees (`--stall REL_PATH=SECONDS`): every metadata operation on a directory of the
//! source or anything below it is held until the mount is SECONDS old, then served as any
//! other; operations elsewhere are not affected. Pure: parsing the option and deciding, from an
//! inode's path in the source, until when an operation on it is held.
//!
//! An operation is on the subtree when the inode it reads or answers with is in it: a lookup
//! whose name resolves to the stalled directory or to anything below it (its answer carries the
//! attributes of that inode), and a getattr, opendir, readdir, readlink, open, release or
//! releasedir of such an inode. A lookup is placed by the name looked up; the other operations
//! by their inode's path, the one the lab first met it at, so the getattr of a file hard-linked
//! both inside and outside a stalled subtree is held at both paths or at neither.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// One `--stall`: the subtree, relative to the source root (empty for the root), and how old
/// the mount must be before its operations are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub path: PathBuf,
    pub until: Duration,
}

impl std::str::FromStr for Stall {
    type Err = String;

    /// `REL_PATH=SECONDS`: the last `=` separates them, so a path may hold one. REL_PATH is
    /// relative to the source root (`.` or an empty path for the root itself) and may not leave
    /// it (`..`); SECONDS is a number of seconds, 0 or more, fractions allowed.
    fn from_str(spec: &str) -> Result<Self, String> {
        let (path, seconds) = spec
            .rsplit_once('=')
            .ok_or_else(|| format!("{spec:?} is not REL_PATH=SECONDS"))?;
        let until = seconds
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                format!("{spec:?}: {seconds:?} is not a number of seconds, 0 or more")
            })?;
        let mut relative = PathBuf::new();
        for part in Path::new(path).components() {
            match part {
                Component::Normal(name) => relative.push(name),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!(
                        "{spec:?}: {path:?} must be relative to the source root"
                    ));
                }
                Component::ParentDir => {
                    return Err(format!("{spec:?}: {path:?} leaves the source root (..)"));
                }
            }
        }
        Ok(Self {
            path: relative,
            until,
        })
    }
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &self.path
        };
        write!(f, "{}={}", path.display(), self.until.as_secs_f64())
    }
}

/// The stalled subtrees of one mount, as paths in the source, and the moment the mount began
/// (the holds end relative to it).
#[derive(Debug, Clone)]
pub struct Stalls {
    subtrees: Vec<(PathBuf, Duration)>,
    origin: Instant,
}

impl Stalls {
    /// `stalls` below `source`, timed from `origin`.
    pub fn new(source: &Path, stalls: &[Stall], origin: Instant) -> Self {
        Self {
            subtrees: stalls
                .iter()
                .map(|s| (source.join(&s.path), s.until))
                .collect(),
            origin,
        }
    }

    /// No subtree is stalled.
    pub fn is_empty(&self) -> bool {
        self.subtrees.is_empty()
    }

    /// The holds end from `origin` on (the mount's start; set once the kernel's INIT arrives).
    pub fn start_at(&mut self, origin: Instant) {
        self.origin = origin;
    }

    /// Until when an operation on the inode at `path` (in the source) is held: the latest end
    /// of the stalled subtrees that hold it (nested stalls: the longer wins), if any. A hold
    /// that has ended is still returned; the service treats it as none.
    pub fn until(&self, path: &Path) -> Option<Instant> {
        self.subtrees
            .iter()
            .filter(|(subtree, _)| path.starts_with(subtree))
            .map(|&(_, until)| until)
            .max()
            .map(|until| self.origin + until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall(spec: &str) -> Stall {
        spec.parse().unwrap()
    }

    #[test]
    fn the_option_is_a_relative_path_and_seconds() {
        assert_eq!(
            stall("a/b=15"),
            Stall {
                path: "a/b".into(),
                until: Duration::from_secs(15)
            }
        );
        assert_eq!(stall("./a//b/=0.5").path, PathBuf::from("a/b"));
        assert_eq!(stall("./a//b/=0.5").until, Duration::from_millis(500));
        // The last `=` splits: a name may hold one.
        assert_eq!(stall("x=y=2").path, PathBuf::from("x=y"));
        assert_eq!(stall(".=1").path, PathBuf::new());
        assert_eq!(stall("=1").path, PathBuf::new());
        assert_eq!(stall(".=1").to_string(), ".=1");
        assert_eq!(stall("a/b=2.5").to_string(), "a/b=2.5");
        for bad in [
            "a/b", "/abs=1", "a/../b=1", "../x=1", "a=-1", "a=soon", "a=inf", "a=",
        ] {
            assert!(bad.parse::<Stall>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn a_stall_holds_its_directory_and_everything_below_it_only() {
        let t0 = Instant::now();
        let source = Path::new("/src");
        let stalls = Stalls::new(source, &[stall("d/slow=10"), stall("d/slow/deeper=20")], t0);
        let s = Duration::from_secs(1);
        assert_eq!(stalls.until(Path::new("/src/d/slow")), Some(t0 + 10 * s));
        assert_eq!(stalls.until(Path::new("/src/d/slow/f")), Some(t0 + 10 * s));
        assert_eq!(
            stalls.until(Path::new("/src/d/slow/deeper/x")),
            Some(t0 + 20 * s)
        );
        // Component by component: a sibling whose name starts alike is not below it.
        assert_eq!(stalls.until(Path::new("/src/d/slower")), None);
        assert_eq!(stalls.until(Path::new("/src/d")), None);
        assert_eq!(stalls.until(Path::new("/src")), None);
        assert!(!stalls.is_empty());

        let mut whole = Stalls::new(source, &[stall(".=3")], t0);
        assert_eq!(whole.until(Path::new("/src")), Some(t0 + 3 * s));
        whole.start_at(t0 + s);
        assert_eq!(whole.until(Path::new("/src/any/thing")), Some(t0 + 4 * s));
        assert!(Stalls::new(source, &[], t0).until(source).is_none());
    }
}
