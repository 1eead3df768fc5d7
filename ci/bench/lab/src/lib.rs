//! The latency lab: a real filesystem, mounted through FUSE, that passes a source directory
//! through read-only and makes every metadata operation cost what it costs on a parallel
//! filesystem, so that a scanner's behaviour where a `statx` is a network round trip can be
//! measured on one machine.
//!
//! What it models:
//! - a fixed latency per metadata operation (lookup, getattr, opendir, readdir, readlink, open,
//!   release, releasedir), the round trip to a metadata server; failed operations cost it too;
//! - the server's service threads: at most `--max-concurrent` operations are served at once,
//!   the others wait first come first served, so throughput saturates at
//!   `max_concurrent / latency`;
//! - a client that caches nothing: entry and attribute TTLs are zero, so every `stat` by name is
//!   a LOOKUP that reaches the server, and listings are not cached either;
//! - with `--stall REL_PATH=SECONDS`, a server that holds one subtree: a stuck OST or MDT (a
//!   DNE directory whose MDT hangs, a pool whose OSTs fail over) while the rest of the
//!   filesystem answers. Every metadata operation on the directory or below it (a lookup of its
//!   name or of a name below it, a getattr, opendir, readdir, readlink, open, release or
//!   releasedir of an inode in it) is held until the mount is SECONDS old, then arrives at the
//!   server and is served with the latency like any other. A held operation takes no service
//!   thread and no place in the line: the stuck server is another server, and the client's
//!   RPCs to it wait on that server, not on the healthy one's threads, so a stall never starves
//!   the rest of the tree (however many callers pile up on it). The caller blocks, as on a real
//!   mount; only the kernel's own limits bound how many wait.
//!
//! What an operation costs, as the kernel sends them with nothing cached: a `statx` of a name
//! relative to a directory handle is a LOOKUP then a GETATTR (the attributes the lookup
//! returned are already stale), two latencies in a row, where a Lustre client's intent lookup
//! makes it one MDS round trip; a listing is an OPENDIR, a READDIR per reply buffer (about 4
//! KiB of names) plus a last empty one, and a RELEASEDIR. With `--check-permissions` the kernel
//! checks permission bits, and each directory searched costs one more GETATTR.
//!
//! What it does not model: the server's own caches (a repeated operation costs the same), lock
//! contention or any dependence of the cost on the directory or its size (a readdir of a huge
//! directory costs one latency per reply buffer, about 4 KiB of names), the network's
//! bandwidth and queueing, latency jitter and tails, object servers (file sizes come with the
//! getattr, as with Lustre's size-on-MDT; no glimpse), data bandwidth (reads and statfs are
//! answered at once), writes (the mount is read-only), and client-side batching such as
//! READDIRPLUS or statahead. Birth times do not pass through: the lab answers GETATTR, whose
//! attributes have no birth time (fuser has no FUSE_STATX), so a `statx` through the mount
//! returns no STATX_BTIME.
//!
//! Modules, in the order a request passes through them:
//! - `passthrough`: the FUSE filesystem (the node table, reading the source, one reply per
//!   operation handed to the timer);
//! - `stall`: which operations a stalled subtree holds, and until when (pure);
//! - `service`: the model of the server (the queue and its cap, the holds apart from it; pure
//!   and unit-tested) and the timer thread that sends each reply at its deadline, so the
//!   request loop never sleeps;
//! - `stats`: operations by type and the report of the concurrency seen.

pub mod passthrough;
pub mod service;
pub mod stall;
pub mod stats;
