//! `st-scale`: the scaling curve where metadata is slow. Mounts the latency lab (`st-lab`) over
//! a tree, afresh for every run, and times storage-scan and its peers at C = 1, 2, 4, ... 128
//! operations in flight: storage-scan by threads (one rank), by ranks (`srun` over the local
//! Slurm's nodes, one thread each) and by both (2 ranks x C/2 threads); `dwalk` at the same
//! ranks; `pdu`, `gdu` and `fd` at the same threads; then one huge flat directory by threads and
//! by ranks. Each row gives entries/s, the parallel efficiency E(C) = rate(C) / (C x rate(1)),
//! the operations per entry the lab counted in that run, the latency limit
//! C / (latency x operations per entry) and the rate's share of it, the concurrency the lab
//! saw and its own CPU time. storage-scan writes full rows to Parquet and each run's rows and
//! bytes are checked against the tree's truth.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use storage_tracker_bench::runner::{machine, parquet_totals, read_truth};

/// The scaling curve of storage-scan and its peers on the latency lab.
#[derive(Debug, Parser)]
#[command(name = "st-scale")]
struct Args {
    /// Work directory: the generated trees, the mount point, the tools' output.
    #[arg(long, default_value = "/tmp/st-scale")]
    work: PathBuf,
    /// Scan this tree (with `<TREE>.truth.tsv` beside it, from st-gen-tree) instead of
    /// generating one.
    #[arg(long)]
    tree: Option<PathBuf>,
    /// Entries of the generated tree.
    #[arg(long, default_value_t = 2000)]
    entries: u64,
    /// Entries of the huge flat directory (0: no huge-directory runs).
    #[arg(long, default_value_t = 100_000)]
    huge_entries: u64,
    /// Operations in flight of the curve.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64,128")]
    c: Vec<usize>,
    /// Operations in flight of the huge-directory runs.
    #[arg(long, value_delimiter = ',', default_value = "32,128")]
    huge_c: Vec<usize>,
    /// Latency of each metadata operation in the lab, in milliseconds.
    #[arg(long, default_value_t = 4.0)]
    latency_ms: f64,
    /// Operations the lab serves at once.
    #[arg(long, default_value_t = 256)]
    max_concurrent: usize,
    /// The most ranks `srun` is asked for; larger C by ranks is left out (and said so). 64 is
    /// the most that finish here: on two cores a job of 128 ranks did not end in 90 s.
    #[arg(long, default_value_t = 64)]
    max_ranks: usize,
    /// Nodes of the local Slurm that ranks are spread over.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Seconds a run may take before it is stopped and the series ends there.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
    /// Only the series whose name starts with one of these (repeatable): storage-scan, dwalk,
    /// pdu, gdu, fd, huge.
    #[arg(long)]
    only: Vec<String>,
    /// The storage-scan binary.
    #[arg(long, default_value = "target/release/storage-scan")]
    scan_bin: PathBuf,
    /// The st-lab binary.
    #[arg(long, default_value = "target/release/st-lab")]
    lab_bin: PathBuf,
    /// The st-gen-tree binary.
    #[arg(long, default_value = "target/release/st-gen-tree")]
    gen_bin: PathBuf,
    /// mpiFileUtils' dwalk (default: `dwalk` on PATH), built against MPICH.
    #[arg(long)]
    dwalk: Option<PathBuf>,
    /// Append the results to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Internal: print the rows and apparent bytes of the Parquet chunks in this directory.
    #[arg(long, hide = true)]
    count_parquet: Option<PathBuf>,
}

/// How a run's output is checked.
#[derive(Clone, Copy, PartialEq)]
enum Check {
    /// storage-scan's Parquet rows and apparent bytes against the truth.
    Parquet,
    /// dwalk's "Items: N" against the truth.
    DwalkItems,
    /// fd's lines: every entry but the root.
    Lines,
    None,
}

struct Run {
    series: String,
    tool: String,
    ranks: usize,
    threads: usize,
    c: usize,
    argv: Vec<String>,
    /// The index in `argv` of the tool's binary (after `srun` and its options).
    tool_at: usize,
    env: Vec<(String, String)>,
    check: Check,
    /// The tree the run scans: the curve's or the huge directory's.
    huge: bool,
}

/// What one run measured.
#[derive(Default, Clone)]
struct Measured {
    seconds: f64,
    failed: Option<String>,
    check: String,
    ops: u64,
    max_in_flight: u64,
    mean_in_flight: f64,
    lab_cpu_s: f64,
    peak_rss_mib: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(dir) = &args.count_parquet {
        let (rows, bytes) = parquet_totals(dir)?;
        println!("{rows} {bytes}");
        return Ok(());
    }
    for bin in [&args.scan_bin, &args.lab_bin] {
        if !bin.exists() {
            bail!(
                "{} is missing: cargo build --release --locked -p storage-tracker-scanner -p storage-tracker-bench -p storage-tracker-lab --bins",
                bin.display()
            );
        }
    }
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    let load_before = loadavg();
    let started = Instant::now();

    let tree = match &args.tree {
        Some(t) => std::fs::canonicalize(t)?,
        None => generate(
            &args,
            &work.join(format!("tree-{}", args.entries)),
            args.entries,
            &[],
        )?,
    };
    let huge = (args.huge_entries > 0 && wanted(&args, "huge"))
        .then(|| {
            generate(
                &args,
                &work.join(format!("huge-{}", args.huge_entries)),
                args.huge_entries,
                &["--huge-dirs", "1", "--huge-share", "1"],
            )
        })
        .transpose()?;
    let truth = read_truth(&tree)?;
    let huge_truth = huge.as_deref().map(read_truth).transpose()?;
    let mount = work.join("mnt");
    std::fs::create_dir_all(&mount)?;
    unmount_stale(&mount);

    let dwalk = find_dwalk(&args);
    let slurm = std::env::var("SLURM_CONF").is_ok() && which("srun").is_some();
    let fd = which("fdfind").or_else(|| which("fd"));
    let runs = plan(&args, &mount, dwalk.as_deref(), slurm, fd.as_deref());

    let mut results: Vec<(usize, Measured)> = Vec::new();
    let mut stopped: BTreeMap<String, String> = BTreeMap::new();
    for (i, run) in runs.iter().enumerate() {
        let key = format!("{} / {}", run.series, run.tool);
        if let Some(why) = stopped.get(&key) {
            let m = Measured {
                failed: Some(format!("not run: {why}")),
                ..Measured::default()
            };
            results.push((i, m));
            continue;
        }
        let (source, t) = if run.huge {
            (
                huge.as_deref().expect("huge tree"),
                huge_truth.as_ref().expect("huge truth"),
            )
        } else {
            (tree.as_path(), &truth)
        };
        let m = measure(&args, &work, source, &mount, run, t)?;
        eprintln!(
            "  {} [{} x {}, C={}]: {}",
            key,
            run.ranks,
            run.threads,
            run.c,
            match &m.failed {
                Some(f) => f.clone(),
                None => format!(
                    "{:.2} s, {:.0} entries/s, {:.2} ops/entry, max {} in flight, lab {:.1} s CPU, {}",
                    m.seconds,
                    t["entries"] as f64 / m.seconds,
                    m.ops as f64 / t["entries"] as f64,
                    m.max_in_flight,
                    m.lab_cpu_s,
                    m.check
                ),
            }
        );
        if let Some(f) = &m.failed {
            stopped.insert(key, format!("C={} {}", run.c, f));
        }
        results.push((i, m));
    }

    let report = render(
        &args,
        &runs,
        &results,
        &truth,
        huge_truth.as_ref(),
        dwalk.as_deref(),
        slurm,
        &command_line,
        &load_before,
        started.elapsed(),
    );
    println!("{report}");
    if let Some(out) = &args.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        writeln!(f, "{report}")?;
    }
    Ok(())
}

fn wanted(args: &Args, series: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|o| series.starts_with(o.as_str()))
}

/// A tree from st-gen-tree at `dir`, made once and reused while its truth file is there.
fn generate(args: &Args, dir: &Path, entries: u64, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let mut truth = dir.as_os_str().to_owned();
    truth.push(".truth.tsv");
    if Path::new(&truth).exists() {
        return Ok(dir.to_path_buf());
    }
    let _ = std::fs::remove_dir_all(dir);
    eprintln!("generating {} ({entries} entries)", dir.display());
    let status = Command::new(&args.gen_bin)
        .arg("--entries")
        .arg(entries.to_string())
        .args(extra)
        .arg(dir)
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("starting {}", args.gen_bin.display()))?;
    if !status.success() {
        bail!("st-gen-tree failed ({status})");
    }
    Ok(dir.to_path_buf())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

fn find_dwalk(args: &Args) -> Option<PathBuf> {
    match &args.dwalk {
        Some(p) => p.is_file().then(|| p.clone()),
        None => which("dwalk"),
    }
}

/// Every run, in order: the series of the curve, then the huge directory's.
fn plan(
    args: &Args,
    mount: &Path,
    dwalk: Option<&Path>,
    slurm: bool,
    fd: Option<&Path>,
) -> Vec<Run> {
    let m = mount.display().to_string();
    let scan = args.scan_bin.display().to_string();
    let chunks = args.work.join("chunks").display().to_string();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let srun = |ranks: usize| {
        let nodes = args.nodes.min(ranks).to_string();
        s(&[
            "srun",
            "--mpi=pmi2",
            "-N",
            &nodes,
            "-n",
            &ranks.to_string(),
            "--overcommit",
            "--kill-on-bad-exit=1",
            "--time=30",
        ])
    };
    let scan_run = |series: &str, ranks: usize, threads: usize, huge: bool| {
        let mut argv = if ranks > 1 { srun(ranks) } else { Vec::new() };
        let tool_at = argv.len();
        argv.extend(s(&[
            &scan,
            "--threads",
            &threads.to_string(),
            "--output",
            &chunks,
            "--progress-interval",
            "86400",
            &m,
        ]));
        Run {
            series: series.into(),
            tool: "storage-scan".into(),
            ranks,
            threads,
            c: ranks * threads,
            argv,
            tool_at,
            env: Vec::new(),
            check: Check::Parquet,
            huge,
        }
    };
    let mut runs = Vec::new();
    if wanted(args, "storage-scan") {
        for &c in &args.c {
            runs.push(scan_run("storage-scan by threads", 1, c, false));
        }
        if slurm {
            for &c in args.c.iter().filter(|&&c| c > 1 && c <= args.max_ranks) {
                runs.push(scan_run("storage-scan by ranks", c, 1, false));
            }
            for &c in args.c.iter().filter(|&&c| c >= 4) {
                runs.push(scan_run("storage-scan by both", 2, c / 2, false));
            }
        }
    }
    if wanted(args, "dwalk")
        && let Some(dwalk) = dwalk
        && slurm
    {
        for &c in args.c.iter().filter(|&&c| c <= args.max_ranks) {
            let mut argv = srun(c);
            let tool_at = argv.len();
            argv.extend(s(&[&dwalk.display().to_string(), &m]));
            runs.push(Run {
                series: "dwalk by ranks".into(),
                tool: "dwalk".into(),
                ranks: c,
                threads: 1,
                c,
                argv,
                tool_at,
                env: Vec::new(),
                check: Check::DwalkItems,
                huge: false,
            });
        }
    }
    let by_threads = |series: &str, tool: &str, argv: Vec<String>, env, c, check| Run {
        series: series.into(),
        tool: tool.into(),
        ranks: 1,
        threads: c,
        c,
        argv,
        tool_at: 0,
        env,
        check,
        huge: false,
    };
    for &c in &args.c {
        let cs = c.to_string();
        if wanted(args, "pdu") && which("pdu").is_some() {
            let argv = s(&[
                "pdu",
                &format!("--threads={cs}"),
                "--quantity=apparent-size",
                &m,
            ]);
            runs.push(by_threads(
                "pdu by threads",
                "pdu",
                argv,
                Vec::new(),
                c,
                Check::None,
            ));
        }
        if wanted(args, "gdu") && which("gdu").is_some() {
            // gdu walks in goroutines; GOMAXPROCS bounds the threads that run them.
            let env = vec![("GOMAXPROCS".to_owned(), cs.clone())];
            let argv = s(&["gdu", "-n", "--no-progress", &m]);
            runs.push(by_threads(
                "gdu by threads",
                "gdu -n",
                argv,
                env,
                c,
                Check::None,
            ));
        }
        if wanted(args, "fd")
            && let Some(fd) = fd
        {
            // `--size` makes fd stat every file, as a scan must.
            let fd = fd.display().to_string();
            let argv = s(&[&fd, "-uu", "--threads", &cs, "--size", "+0b", ".", &m]);
            runs.push(by_threads(
                "fd by threads",
                "fd -uu --size +0b",
                argv,
                Vec::new(),
                c,
                Check::Lines,
            ));
        }
    }
    // Group each tool's series together (the loop above interleaves the by-thread tools).
    runs.sort_by_key(|r| {
        [
            "storage-scan by threads",
            "storage-scan by ranks",
            "storage-scan by both",
            "dwalk by ranks",
            "pdu by threads",
            "gdu by threads",
            "fd by threads",
        ]
        .iter()
        .position(|s| *s == r.series)
        .unwrap_or(99)
    });
    if args.huge_entries > 0 && wanted(args, "huge") {
        for &c in &args.huge_c {
            runs.push(scan_run("huge directory by threads", 1, c, true));
        }
        if slurm {
            for &c in args
                .huge_c
                .iter()
                .filter(|&&c| c > 1 && c <= args.max_ranks)
            {
                runs.push(scan_run("huge directory by ranks", c, 1, true));
            }
        }
    }
    runs
}

/// A stale lab mount left by an interrupted run is detached first.
fn unmount_stale(mount: &Path) {
    if is_mounted(mount) {
        let _ = Command::new("umount").arg("-l").arg(mount).status();
    }
}

fn is_mounted(mount: &Path) -> bool {
    let m = mount.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| t.lines().any(|l| l.split(' ').nth(4) == Some(m.as_str())))
        .unwrap_or(false)
}

/// One run: a fresh lab over `source`, the tool, the lab stopped and its counts read.
fn measure(
    args: &Args,
    work: &Path,
    source: &Path,
    mount: &Path,
    run: &Run,
    truth: &BTreeMap<String, u64>,
) -> anyhow::Result<Measured> {
    let stats = work.join("lab.stats");
    let _ = std::fs::remove_file(&stats);
    let chunks = args.work.join("chunks");
    let _ = std::fs::remove_dir_all(&chunks);
    std::fs::create_dir_all(&chunks)?;
    let lab_log = std::fs::File::create(work.join("lab.log"))?;
    let mut lab = Command::new(&args.lab_bin)
        .arg("--latency-ms")
        .arg(args.latency_ms.to_string())
        .arg("--max-concurrent")
        .arg(args.max_concurrent.to_string())
        .arg("--stats")
        .arg(&stats)
        .arg(source)
        .arg(mount)
        .stdout(Stdio::null())
        .stderr(lab_log)
        .spawn()
        .with_context(|| format!("starting {}", args.lab_bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_mounted(mount) {
        if let Some(status) = lab.try_wait()? {
            bail!(
                "st-lab exited ({status}): {}",
                std::fs::read_to_string(work.join("lab.log")).unwrap_or_default()
            );
        }
        if Instant::now() > deadline {
            stop_lab(&mut lab, mount);
            bail!("st-lab did not mount {}", mount.display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out_path = work.join("tool.out");
    let result = timed(run, &out_path, Duration::from_secs(args.timeout));
    stop_lab(&mut lab, mount);
    let lab_stats: BTreeMap<String, String> = std::fs::read_to_string(&stats)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let num = |k: &str| {
        lab_stats
            .get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut m = Measured {
        ops: num("metadata_ops") as u64,
        max_in_flight: num("max_in_flight") as u64,
        mean_in_flight: num("mean_in_flight"),
        lab_cpu_s: num("cpu_ms") / 1000.0,
        ..Measured::default()
    };
    match result {
        Err(e) => m.failed = Some(format!("{e:#}")),
        Ok((seconds, rss)) => {
            m.seconds = seconds;
            m.peak_rss_mib = rss / 1024;
            m.check = check(run, &chunks, &out_path, truth)?;
        }
    }
    Ok(m)
}

/// SIGTERM detaches the mount and the lab exits with its counts written; a lab that does not
/// exit is killed and its mount detached.
fn stop_lab(lab: &mut Child, mount: &Path) {
    // SAFETY: kill sends a signal to the lab, a child of this process that has not been reaped.
    unsafe {
        libc::kill(lab.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(_)) = lab.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = Command::new("umount").arg("-l").arg(mount).status();
            let _ = lab.kill();
            let _ = lab.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unmount_stale(mount);
}

/// Runs the tool with its output in `out`; returns the seconds and the peak RSS (KiB) of any
/// one of its processes (the children of `srun` are not its descendants: every process whose
/// command is the tool's binary is sampled).
fn timed(run: &Run, out: &Path, timeout: Duration) -> anyhow::Result<(f64, u64)> {
    // The process name the kernel keeps (15 bytes) of the tool's binary.
    let comm: String = Path::new(&run.argv[run.tool_at])
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(15).collect())
        .unwrap_or_default();
    let start = Instant::now();
    let mut child = Command::new(&run.argv[0])
        .args(&run.argv[1..])
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .stdout(std::fs::File::create(out)?)
        .stderr(std::fs::File::create(out.with_extension("err"))?)
        .spawn()
        .with_context(|| format!("starting {}", run.argv[0]))?;
    let mut peak = 0u64;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > timeout {
            // SAFETY: kill signals our own unreaped child (srun forwards SIGTERM to its step).
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            std::thread::sleep(Duration::from_secs(3));
            let _ = child.kill();
            let _ = child.wait();
            bail!("stopped after {} s", timeout.as_secs());
        }
        peak = peak.max(peak_of(&comm));
        std::thread::sleep(Duration::from_millis(20));
    };
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        let err = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        bail!(
            "failed ({status}): {}",
            last.chars().take(160).collect::<String>()
        );
    }
    Ok((seconds, peak))
}

/// The largest VmHWM (KiB) of the processes whose command is `comm`.
fn peak_of(comm: &str) -> u64 {
    let mut peak = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let dir = e.path();
        let Ok(c) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if c.trim_end() != comm {
            continue;
        }
        if let Ok(status) = std::fs::read_to_string(dir.join("status"))
            && let Some(v) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak = peak.max(v);
        }
    }
    peak
}

fn check(
    run: &Run,
    chunks: &Path,
    out: &Path,
    truth: &BTreeMap<String, u64>,
) -> anyhow::Result<String> {
    let entries = truth["entries"];
    Ok(match run.check {
        Check::None => "-".into(),
        Check::Parquet => {
            // In a child process, so this runner stays small.
            let o = Command::new(std::env::current_exe()?)
                .arg("--count-parquet")
                .arg(chunks)
                .output()?;
            let text = String::from_utf8_lossy(&o.stdout);
            let mut it = text
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            let (rows, bytes) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
            if rows == entries && bytes == truth["apparent_bytes"] {
                format!("{rows} rows = truth")
            } else {
                format!("WRONG: {rows} rows, {bytes} bytes")
            }
        }
        Check::DwalkItems => {
            let text = std::fs::read_to_string(out)?
                + &std::fs::read_to_string(out.with_extension("err"))?;
            let items = text
                .lines()
                .find_map(|l| l.split_once("Items: ").map(|(_, v)| v.trim().to_owned()))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
            match items {
                Some(n) if n == entries => format!("{n} items = truth"),
                Some(n) => format!("{n} items != truth"),
                None => "no item count".into(),
            }
        }
        Check::Lines => {
            let lines = std::fs::read(out)?.iter().filter(|&&b| b == b'\n').count() as u64;
            format!("{lines} lines")
        }
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn render(
    args: &Args,
    runs: &[Run],
    results: &[(usize, Measured)],
    truth: &BTreeMap<String, u64>,
    huge_truth: Option<&BTreeMap<String, u64>>,
    dwalk: Option<&Path>,
    slurm: bool,
    command_line: &str,
    load_before: &str,
    elapsed: Duration,
) -> String {
    let latency = args.latency_ms / 1000.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "### Latency lab: {} ms per metadata operation, at most {} served at once\n",
        args.latency_ms, args.max_concurrent
    );
    let _ = writeln!(o, "{}", machine());
    let _ = writeln!(
        o,
        "Load average before: {load_before}; after: {}. The whole run took {:.0} s.\n",
        loadavg(),
        elapsed.as_secs_f64()
    );
    let _ = writeln!(o, "Command: `{command_line}`\n");
    let _ = writeln!(
        o,
        "Tree: {} entries ({} dirs, {} files, {} symlinks){}.",
        truth["entries"],
        truth["dirs"],
        truth["files"],
        truth["symlinks"],
        huge_truth.map_or(String::new(), |h| format!(
            "; huge directory: {} entries in one directory",
            h["entries"]
        ))
    );
    let _ = writeln!(
        o,
        "dwalk: {}.",
        match (dwalk, slurm) {
            (Some(d), true) => format!("{}", d.display()),
            (Some(_), false) => "found, but no Slurm (SLURM_CONF unset or no srun): NOT RUN".into(),
            (None, _) => "MISSING (not on PATH and no --dwalk): NOT RUN".into(),
        }
    );
    if !slurm {
        let _ = writeln!(
            o,
            "Ranks: no Slurm (SLURM_CONF unset or no srun): the by-ranks series were NOT RUN."
        );
    }
    let capped: Vec<String> = args
        .c
        .iter()
        .chain(&args.huge_c)
        .filter(|&&c| c > args.max_ranks)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    if slurm && !capped.is_empty() {
        let _ = writeln!(
            o,
            "Ranks above --max-ranks {} (C = {}) were not asked of srun.",
            args.max_ranks,
            capped.join(", ")
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "| series | ranks x threads | C | s | entries/s | E(C) | ops/entry | latency limit entries/s | of limit | lab max / mean in flight | lab CPU s (% of run) | peak RSS/process MiB | check |"
    );
    let _ = writeln!(
        o,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    // The rate at C = 1 of each tool on each tree, for E(C).
    let rate_of = |i: usize, m: &Measured| {
        let t = if runs[i].huge {
            huge_truth.unwrap_or(truth)
        } else {
            truth
        };
        t["entries"] as f64 / m.seconds
    };
    let base: BTreeMap<(String, bool), f64> = results
        .iter()
        .filter(|(i, m)| runs[*i].c == 1 && m.failed.is_none())
        .map(|(i, m)| ((runs[*i].tool.clone(), runs[*i].huge), rate_of(*i, m)))
        .collect();
    let mut last_series = String::new();
    for (i, m) in results {
        let r = &runs[*i];
        let series = if r.series == last_series {
            String::new()
        } else {
            last_series = r.series.clone();
            r.series.clone()
        };
        let rxt = format!("{} x {}", r.ranks, r.threads);
        if let Some(f) = &m.failed {
            let _ = writeln!(
                o,
                "| {series} | {rxt} | {} | - | - | - | - | - | - | - | - | - | {} |",
                r.c,
                f.replace('|', "/")
            );
            continue;
        }
        let t = if r.huge {
            huge_truth.unwrap_or(truth)
        } else {
            truth
        };
        let rate = rate_of(*i, m);
        let e = base
            .get(&(r.tool.clone(), r.huge))
            .map_or("-".into(), |b| format!("{:.2}", rate / (r.c as f64 * b)));
        let ope = m.ops as f64 / t["entries"] as f64;
        let limit = r.c as f64 / (latency * ope);
        let _ = writeln!(
            o,
            "| {series} | {rxt} | {} | {:.2} | {:.0} | {e} | {:.2} | {:.0} | {:.2} | {} / {:.1} | {:.1} ({:.0}%) | {} | {} |",
            r.c,
            m.seconds,
            rate,
            ope,
            limit,
            rate / limit,
            m.max_in_flight,
            m.mean_in_flight,
            m.lab_cpu_s,
            100.0 * m.lab_cpu_s / m.seconds,
            if m.peak_rss_mib > 0 {
                m.peak_rss_mib.to_string()
            } else {
                "-".into()
            },
            m.check
        );
    }
    let _ = writeln!(
        o,
        "\nE(C) = rate(C) / (C x rate(1)) against the same tool's C = 1 run on the same tree (the huge \
         directory has none: its E is blank). ops/entry: the lab's metadata operations in that run \
         per entry of the truth. Latency limit: C / (latency x ops/entry), the rate if C operations \
         were always in flight. Lab CPU: the lab's own user + system time over the whole mount, as a \
         share of the run's wall time (100% = one of the cores)."
    );
    o
}
