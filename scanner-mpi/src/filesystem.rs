//! What kind of filesystem a scan's root is on, from `statfs`, and the worker threads a rank
//! runs by default there.
//!
//! On a local disk a stat costs a microsecond or two of CPU, and threads beyond the cores only
//! queue for them. On a network filesystem (Lustre, GPFS, NFS, BeeGFS, CephFS, and FUSE, where
//! most such clients live) a stat is a round trip to a metadata server of 0.2-2 ms, during
//! which the thread waits and uses no CPU: the scan goes as fast as it has operations in
//! flight, so a rank runs many threads per core.

/// A filesystem as `statfs` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filesystem {
    /// Its usual name (`lustre`, `ext4`, ...), or `unknown`.
    pub name: &'static str,
    /// Whether a metadata operation is a network round trip.
    pub network: bool,
}

/// Worker threads per core on a network filesystem.
pub const THREADS_PER_CORE_ON_NETWORK: usize = 16;
/// Bounds of the default threads per rank on a network filesystem.
pub const NETWORK_THREADS: std::ops::RangeInclusive<usize> = 32..=256;

/// `f_type` magic numbers (linux/magic.h and the filesystems' own headers).
const KNOWN: &[(u64, &str, bool)] = &[
    (0x0BD0_0BD0, "lustre", true),
    (0x4750_4653, "gpfs", true),
    (0x6969, "nfs", true),
    (0x1983_0326, "beegfs", true),
    (0x00C3_6400, "cephfs", true),
    (0x6573_5546, "fuse", true),
    (0xFE53_4D42, "smb2", true),
    (0xFF53_4D42, "cifs", true),
    (0x517B, "smb", true),
    (0x5346_414F, "afs", true),
    (0x6B41_4653, "afs", true),
    (0xAAD7_AAEA, "panfs", true),
    (0x2003_0528, "orangefs", true),
    (0x0102_1997, "9p", true),
    (0xEF53, "ext4", false),
    (0x5846_5342, "xfs", false),
    (0x9123_683E, "btrfs", false),
    (0x2FC1_2FC1, "zfs", false),
    (0x0102_1994, "tmpfs", false),
    (0x794C_7630, "overlayfs", false),
    (0xF2F5_2010, "f2fs", false),
];

impl Filesystem {
    /// The filesystem of a `statfs` `f_type`.
    pub fn from_magic(magic: u64) -> Self {
        KNOWN.iter().find(|(m, ..)| *m == magic).map_or(
            Self {
                name: "unknown",
                network: false,
            },
            |&(_, name, network)| Self { name, network },
        )
    }

    /// The filesystem `path` is on, or `None` when `statfs` fails.
    pub fn of(path: &std::path::Path) -> Option<Self> {
        let st = rustix::fs::statfs(path).ok()?;
        // f_type is signed on some targets; the magic numbers are its bits.
        #[allow(clippy::unnecessary_cast)]
        Some(Self::from_magic(st.f_type as u64 & 0xFFFF_FFFF))
    }

    /// Worker threads per rank when `--threads` is not given, for a rank of `cores` cores:
    /// the cores on a local filesystem, [`THREADS_PER_CORE_ON_NETWORK`] per core (within
    /// [`NETWORK_THREADS`]) on a network one.
    pub fn default_threads(&self, cores: usize) -> usize {
        let cores = cores.max(1);
        if self.network {
            (cores * THREADS_PER_CORE_ON_NETWORK)
                .clamp(*NETWORK_THREADS.start(), *NETWORK_THREADS.end())
        } else {
            cores
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_filesystems_get_many_threads_per_core() {
        let lustre = Filesystem::from_magic(0x0BD0_0BD0);
        assert_eq!(
            lustre,
            Filesystem {
                name: "lustre",
                network: true
            }
        );
        assert_eq!(lustre.default_threads(1), 32);
        assert_eq!(lustre.default_threads(4), 64);
        assert_eq!(lustre.default_threads(64), 256);
        let ext4 = Filesystem::from_magic(0xEF53);
        assert!(!ext4.network);
        assert_eq!(ext4.default_threads(4), 4);
        assert_eq!(Filesystem::from_magic(0x1234).name, "unknown");
        assert_eq!(Filesystem::from_magic(0x6573_5546).name, "fuse");
    }

    #[test]
    fn the_filesystem_of_a_path_is_read_with_statfs() {
        let here = Filesystem::of(std::path::Path::new("/proc")).unwrap();
        assert_eq!(here.name, "unknown", "procfs is in no list");
        assert!(Filesystem::of(std::path::Path::new("/nonexistent/storage-tracker")).is_none());
    }
}
