//! `st-lab`: mounts the latency lab (see the library's docs for what it models) and serves it
//! until SIGINT or SIGTERM, or until the mount is unmounted; then prints its counts to stderr.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use fuser::{Config, MountOption, Session, SessionACL};
use storage_tracker_lab::passthrough::Lab;
use storage_tracker_lab::service::Timer;
use storage_tracker_lab::stall::Stall;
use storage_tracker_lab::stats::{self, Counts, Settings};

const DEFAULT_LATENCY_MS: f64 = 2.0;
const DEFAULT_MAX_CONCURRENT: usize = 256;
const DEFAULT_LOOP_THREADS: usize = 2;
const DEFAULT_STATS_INTERVAL_MS: u64 = 200;

/// A read-only FUSE passthrough of SOURCE at MOUNTPOINT that adds a latency to every metadata
/// operation and serves at most --max-concurrent of them at once.
#[derive(Debug, Parser)]
#[command(name = "st-lab")]
struct Args {
    /// Latency added to each metadata operation (lookup, getattr, opendir, readdir, readlink,
    /// open, release, releasedir), in milliseconds (fractions allowed).
    #[arg(long, default_value_t = DEFAULT_LATENCY_MS)]
    latency_ms: f64,
    /// Metadata operations served at once (a metadata server's service threads); more wait
    /// in line.
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENT)]
    max_concurrent: usize,
    /// Threads reading requests from the kernel. They never sleep on a latency; more than one
    /// spreads the passthrough's own system calls over the cores.
    #[arg(long, default_value_t = DEFAULT_LOOP_THREADS)]
    loop_threads: usize,
    /// A file the counts are written to (replaced whole) every --stats-interval-ms and on exit,
    /// one `key value` line each.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// How often the --stats file is rewritten, in milliseconds.
    #[arg(long, default_value_t = DEFAULT_STATS_INTERVAL_MS)]
    stats_interval_ms: u64,
    /// Let the kernel check permission bits (the `default_permissions` mount option), as a
    /// network filesystem's client does. With attributes never cached, each check of a
    /// directory searched costs a GETATTR, which a real client would answer from its cache;
    /// without it nothing is checked (every caller acts as the lab's owner, root).
    #[arg(long)]
    check_permissions: bool,
    /// Stall a subtree, as a stuck metadata or object server would (repeatable): every
    /// metadata operation on REL_PATH (relative to SOURCE; `.` for all of it) or below it (a
    /// lookup of its name or of a name below it, a getattr, opendir, readdir, readlink, open,
    /// release or releasedir of an inode in it) is held until the mount is SECONDS old
    /// (fractions allowed), then served with the latency. Held operations take no place among
    /// --max-concurrent: the rest of the tree is served as before. The counts say `stalled`
    /// (held so far), `stalled_now` and `max_stall_ms` (the longest hold).
    #[arg(long = "stall", value_name = "REL_PATH=SECONDS")]
    stalls: Vec<Stall>,
    /// The directory to pass through.
    source: PathBuf,
    /// Where to mount it (an existing directory).
    mountpoint: PathBuf,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("st-lab: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    if !(args.latency_ms >= 0.0 && args.latency_ms.is_finite()) {
        bail!("--latency-ms must be 0 or more, got {}", args.latency_ms);
    }
    if args.max_concurrent == 0 || args.loop_threads == 0 {
        bail!("--max-concurrent and --loop-threads must be at least 1");
    }
    let settings = Settings {
        latency: Duration::from_secs_f64(args.latency_ms / 1000.0),
        max_concurrent: args.max_concurrent,
    };
    // Blocked before any thread starts, so that every thread inherits the mask and the signals
    // reach only the thread that waits for them.
    let signals = block_signals();

    let source = args
        .source
        .canonicalize()
        .with_context(|| format!("source {}", args.source.display()))?;
    for stall in &args.stalls {
        let path = source.join(&stall.path);
        std::fs::symlink_metadata(&path)
            .with_context(|| format!("--stall {stall}: {}", path.display()))?;
    }
    let counts = Arc::new(Counts::default());
    let timer = Timer::start(settings.latency, settings.max_concurrent)?;
    let lab = Lab::new(source.clone(), timer, Arc::clone(&counts))?.with_stalls(&args.stalls);
    let seen = lab.timer().probe();

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(format!("st-lab:{}", source.display())),
        MountOption::Subtype("st-lab".into()),
    ];
    if args.check_permissions {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    config.acl = SessionACL::All;
    config.n_threads = Some(args.loop_threads);
    config.clone_fd = true;
    let mut session = Session::new(lab, &args.mountpoint, &config).with_context(|| {
        format!(
            "mounting {} (needs /dev/fuse, the fuse kernel module and root)",
            args.mountpoint.display()
        )
    })?;
    let mut unmounter = session.unmount_callable();
    let mountpoint = args.mountpoint.clone();
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || {
            let signal = wait_signal(&signals);
            eprintln!(
                "st-lab: signal {signal}, unmounting {}",
                mountpoint.display()
            );
            if let Err(e) = unmounter.unmount() {
                eprintln!("st-lab: unmounting {}: {e}", mountpoint.display());
            }
        })?;

    let done = Arc::new(AtomicBool::new(false));
    let writer = args.stats.clone().map(|path| {
        let (counts, seen, done) = (Arc::clone(&counts), seen.clone(), Arc::clone(&done));
        let interval = Duration::from_millis(args.stats_interval_ms.max(10));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let now = seen.concurrency();
                if let Err(e) = write_stats(&path, &stats::report(settings, &counts, &now)) {
                    eprintln!("st-lab: writing {}: {e}", path.display());
                }
                std::thread::sleep(interval);
            }
        })
    });
    eprintln!(
        "st-lab: {} at {}, {} ms per metadata operation, at most {} at once",
        source.display(),
        args.mountpoint.display(),
        args.latency_ms,
        args.max_concurrent
    );
    for stall in &args.stalls {
        eprintln!(
            "st-lab: {} stalled until the mount is {} s old",
            source.join(&stall.path).display(),
            stall.until.as_secs_f64()
        );
    }
    let served = session.run();
    done.store(true, Ordering::Relaxed);
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let last = seen.concurrency();
    let report = stats::report(settings, &counts, &last);
    if let Some(path) = &args.stats {
        write_stats(path, &report).with_context(|| format!("writing {}", path.display()))?;
    }
    eprint!("{report}");
    served.context("serving the mount")
}

fn write_stats(path: &Path, report: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, report)?;
    std::fs::rename(&tmp, path)
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask changes only
    // this thread's mask (and, through inheritance, that of threads it starts later).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: `set` was filled by block_signals; sigwait writes the signal number.
    unsafe {
        libc::sigwait(set, &mut signal);
    }
    signal
}
