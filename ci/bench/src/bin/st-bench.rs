//! `st-bench`: time storage-scan against other tools on the same warm tree, in one run.
//!
//! Every tool runs `--runs` times, round robin (so drift in the machine's load spreads over all
//! of them); the table gives medians, entries per second, the ratio to the raw floor at the same
//! thread count and to storage-scan, and each run's peak RSS (from `wait4`). storage-scan writes
//! full rows to Parquet; its rows are checked against the tree's ground truth, as are `find`'s
//! lines and `du`'s total.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use storage_tracker_bench::runner::{machine, parquet_totals, read_truth};
use storage_tracker_proto::entry::col;

/// Benchmark storage-scan against peers on a tree made by st-gen-tree.
#[derive(Debug, Parser)]
struct Args {
    /// The tree (with `<TREE>.truth.tsv` beside it).
    tree: Option<PathBuf>,
    /// Runs of each tool; the table shows medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// The storage-scan binary.
    #[arg(long, default_value = "target/release/storage-scan")]
    scan_bin: PathBuf,
    /// Where tools write their output (Parquet chunks, find's lines, ncdu's export).
    #[arg(long, default_value = "/tmp/st-bench-out")]
    scratch: PathBuf,
    /// Only these tools (by name, repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Append the table to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead of timing: check storage-scan's totals for every directory against `du`.
    #[arg(long)]
    verify: bool,
    /// Internal: run the floor walk on the tree with this many threads and exit.
    #[arg(long, hide = true)]
    floor: Option<usize>,
    /// Internal: print the rows and apparent bytes of the Parquet chunks in this directory.
    #[arg(long, hide = true)]
    count_parquet: Option<PathBuf>,
    /// Also time ingest end to end: storage-scan streaming to storage-aggregator into the
    /// ClickHouse at this URL, from the scan's start to the committed snapshot with its reports.
    #[arg(long)]
    ingest: Option<String>,
    /// The storage-aggregator binary (for --ingest).
    #[arg(long, default_value = "target/release/storage-aggregator")]
    aggregator_bin: PathBuf,
    /// Internal: run one ingest into the ClickHouse at this URL and print "seconds entries".
    #[arg(long, hide = true)]
    ingest_run: Option<String>,
    /// With --ingest: also time `storage-aggregator import` of this offline scan (e.g. one
    /// written by st-gen-chunks) into a fresh database, import and commit with reports.
    #[arg(long, value_name = "DIR", requires = "ingest")]
    import: Option<PathBuf>,
    /// Internal: run one import into the ClickHouse at this URL and print "seconds entries".
    #[arg(long, hide = true)]
    import_run: Option<String>,
    /// Also time an earlier build of storage-scan (and, with --ingest, of storage-aggregator):
    /// the directory holding its binaries. Its rows run in the same round robin as the current
    /// build's, so the two compare within one run.
    #[arg(long, value_name = "DIR")]
    baseline: Option<PathBuf>,
    /// The name the baseline's rows carry (e.g. the commit it was built from).
    #[arg(long, default_value = "baseline", requires = "baseline")]
    baseline_label: String,
}

struct Tool {
    name: String,
    /// The tool prints its own seconds (and entries) on stdout: the time that counts.
    self_timed: bool,
    /// Ranks x threads, as shown.
    parallel: String,
    threads: usize,
    argv: Vec<String>,
    /// Output file for stdout, if any.
    stdout: Option<PathBuf>,
    check: Check,
}

#[derive(Clone, Copy, PartialEq)]
enum Check {
    None,
    ParquetRows,
    Lines,
    DuAllocated,
    Committed,
    /// An import: the entries it committed (the offline scan is not the tree).
    Imported,
}

struct Run {
    seconds: f64,
    max_rss_kib: i64,
}

/// Spawns `argv`, waits for it, and samples the peak RSS of it and its descendants (mpiexec's
/// ranks) from `/proc/PID/status` VmHWM. `ru_maxrss` cannot be used: it includes the memory
/// of the process that forked the tool.
fn timed(argv: &[String], stdout: Option<&Path>) -> anyhow::Result<Run> {
    let out = match stdout {
        Some(p) => Stdio::from(std::fs::File::create(p)?),
        None => Stdio::null(),
    };
    let start = Instant::now();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", argv[0]))?;
    let pid = child.id() as i32;
    let done = std::sync::atomic::AtomicBool::new(false);
    let (status, peak) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut peak = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for p in std::iter::once(pid).chain(descendants(pid)) {
                    peak = peak.max(vm_hwm_kib(p).unwrap_or(0));
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peak
        });
        let status = child.wait();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (status, sampler.join().expect("sampler"))
    });
    let seconds = start.elapsed().as_secs_f64();
    let status = status?;
    if !status.success() {
        bail!("{} failed ({status})", argv.join(" "));
    }
    Ok(Run {
        seconds,
        max_rss_kib: peak as i64,
    })
}

fn vm_hwm_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Every process below `root`, from the parent ids in /proc.
fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The field after the command name, which is in parentheses and may hold spaces.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn tools(args: &Args, tree: &str) -> Vec<Tool> {
    let scan = args.scan_bin.display().to_string();
    let chunks = args.scratch.join("chunks").display().to_string();
    let me = std::env::current_exe()
        .expect("own path")
        .display()
        .to_string();
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let scratch = |name: &str| Some(args.scratch.join(name));
    // storage-scan (the binary `scan`, shown as `name`) writing full rows to Parquet, as `ranks`
    // MPI ranks of `threads` threads.
    let build_tool = |scan: &str, name: String, ranks: usize, threads: usize| {
        let (ranks_s, threads_s) = (ranks.to_string(), threads.to_string());
        let mut argv = if ranks > 1 {
            s(&["mpiexec.mpich", "-n", &ranks_s])
        } else {
            Vec::new()
        };
        argv.extend(s(&[
            scan,
            "--threads",
            &threads_s,
            "--output",
            &chunks,
            "--progress-interval",
            "86400",
            tree,
        ]));
        Tool {
            self_timed: false,
            name,
            parallel: format!(
                "{ranks} rank{} x {threads}",
                if ranks > 1 { "s" } else { "" }
            ),
            threads: ranks * threads,
            argv,
            stdout: None,
            check: Check::ParquetRows,
        }
    };
    let scan_tool = |ranks, threads| build_tool(&scan, "storage-scan".into(), ranks, threads);
    let baseline = args.baseline.as_ref().map(|dir| {
        (
            dir.join("storage-scan").display().to_string(),
            dir.join("storage-aggregator").display().to_string(),
            format!("storage-scan @ {}", args.baseline_label),
        )
    });
    let mut t = vec![
        Tool {
            self_timed: false,
            name: "floor (getdents64+statx)".into(),
            parallel: "1".into(),
            threads: 1,
            argv: s(&[&me, "--floor", "1", tree]),
            stdout: None,
            check: Check::None,
        },
        Tool {
            self_timed: false,
            name: "floor (getdents64+statx)".into(),
            parallel: "2".into(),
            threads: 2,
            argv: s(&[&me, "--floor", "2", tree]),
            stdout: None,
            check: Check::None,
        },
        scan_tool(1, 1),
        scan_tool(1, 2),
        scan_tool(2, 1),
    ];
    if let Some((scan, _, name)) = &baseline {
        t.extend([
            build_tool(scan, name.clone(), 1, 1),
            build_tool(scan, name.clone(), 1, 2),
            build_tool(scan, name.clone(), 2, 1),
        ]);
    }
    t.extend([
        Tool {
            self_timed: false,
            name: "find -printf (stat fields)".into(),
            parallel: "1".into(),
            threads: 1,
            argv: s(&[
                "find",
                tree,
                "-printf",
                "%p\\t%s\\t%b\\t%i\\t%n\\t%m\\t%U\\t%G\\t%A@\\t%T@\\t%C@\\n",
            ]),
            stdout: scratch("find.txt"),
            check: Check::Lines,
        },
        Tool {
            self_timed: false,
            name: "du -s".into(),
            parallel: "1".into(),
            threads: 1,
            argv: s(&["du", "-s", "-B1", tree]),
            stdout: scratch("du.txt"),
            check: Check::DuAllocated,
        },
        Tool {
            self_timed: false,
            name: "ncdu -o".into(),
            parallel: "1".into(),
            threads: 1,
            argv: s(&[
                "ncdu",
                "-0",
                "-o",
                &args.scratch.join("ncdu.json").display().to_string(),
                tree,
            ]),
            stdout: None,
            check: Check::None,
        },
        Tool {
            self_timed: false,
            name: "pdu".into(),
            parallel: "2".into(),
            threads: 2,
            argv: s(&["pdu", "--threads=2", "--quantity=apparent-size", tree]),
            stdout: None,
            check: Check::None,
        },
        Tool {
            self_timed: false,
            name: "dust".into(),
            parallel: "2 (all)".into(),
            threads: 2,
            argv: s(&["dust", "-n", "1", tree]),
            stdout: None,
            check: Check::None,
        },
        Tool {
            self_timed: false,
            name: "gdu -n".into(),
            parallel: "2 (all)".into(),
            threads: 2,
            argv: s(&["gdu", "-n", tree]),
            stdout: None,
            check: Check::None,
        },
        Tool {
            self_timed: false,
            name: "fd -uu --size +0b (stats files)".into(),
            parallel: "2".into(),
            threads: 2,
            argv: s(&[
                "fdfind",
                "-uu",
                "--threads",
                "2",
                "--size",
                "+0b",
                ".",
                tree,
            ]),
            stdout: scratch("fd-size.txt"),
            check: Check::None,
        },
        Tool {
            self_timed: false,
            name: "fd -uu (lists only)".into(),
            parallel: "2".into(),
            threads: 2,
            argv: s(&["fdfind", "-uu", "--threads", "2", ".", tree]),
            stdout: scratch("fd.txt"),
            check: Check::None,
        },
    ]);
    if !args.only.is_empty() {
        t.retain(|tool| args.only.iter().any(|o| tool.name.starts_with(o.as_str())));
    }
    if let Some(url) = &args.ingest {
        let ingest_tool = |scan: &str, aggregator: &str, name: &str| Tool {
            self_timed: true,
            name: name.to_owned(),
            parallel: "1 rank x 2".into(),
            threads: 2,
            argv: vec![
                me.clone(),
                "--ingest-run".into(),
                url.clone(),
                "--scan-bin".into(),
                scan.to_owned(),
                "--aggregator-bin".into(),
                aggregator.to_owned(),
                "--scratch".into(),
                args.scratch.display().to_string(),
                tree.to_owned(),
            ],
            stdout: scratch("ingest.txt"),
            check: Check::Committed,
        };
        let name = "storage-scan -> aggregator -> ClickHouse, committed with reports";
        t.push(ingest_tool(
            &scan,
            &args.aggregator_bin.display().to_string(),
            name,
        ));
        if let Some((scan, aggregator, _)) = &baseline {
            let name = format!("{name} @ {}", args.baseline_label);
            t.push(ingest_tool(scan, aggregator, &name));
        }
        if let Some(dir) = &args.import {
            let import_tool = |aggregator: &str, name: String| Tool {
                self_timed: true,
                name,
                parallel: "1".into(),
                threads: 1,
                argv: vec![
                    me.clone(),
                    "--import-run".into(),
                    url.clone(),
                    "--aggregator-bin".into(),
                    aggregator.to_owned(),
                    dir.display().to_string(),
                ],
                stdout: scratch("import.txt"),
                check: Check::Imported,
            };
            let name = "storage-aggregator import, committed with reports";
            t.push(import_tool(
                &args.aggregator_bin.display().to_string(),
                name.into(),
            ));
            if let Some((_, aggregator, _)) = &baseline {
                t.push(import_tool(
                    aggregator,
                    format!("{name} @ {}", args.baseline_label),
                ));
            }
        }
    }
    t
}

/// Committed entries of the one committed snapshot of `database`, then drops the database.
fn committed_and_drop(url: &str, database: &str) -> anyhow::Result<String> {
    let sql = |q: String| -> anyhow::Result<String> {
        let out = Command::new("curl")
            .args(["-fsS", url, "--data-binary", &q])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let entries = sql(format!(
        "SELECT entries FROM {database}.snapshots FINAL WHERE state = 'committed'"
    ))?;
    sql(format!("DROP DATABASE IF EXISTS {database}"))?;
    Ok(entries)
}

/// One import of the offline scan `dir` into a fresh database; prints "seconds entries".
fn import_run(args: &Args, url: &str, dir: &Path) -> anyhow::Result<()> {
    let database = format!("st_bench_import_{}", std::process::id());
    let start = Instant::now();
    let status = Command::new(&args.aggregator_bin)
        .arg("import")
        .arg(dir)
        .env("STORAGE_TRACKER_CLICKHOUSE_URL", url)
        .env("STORAGE_TRACKER_DATABASE", &database)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("starting {}", args.aggregator_bin.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    let entries = committed_and_drop(url, &database)?;
    if !status.success() {
        bail!("the import failed ({status})");
    }
    println!("{seconds} {entries}");
    Ok(())
}

/// One ingest: an aggregator on a fresh database, then the scan; prints "seconds entries", the
/// seconds from the scan's start to its exit (after the commit) and the committed entries.
fn ingest_run(args: &Args, url: &str, tree: &Path) -> anyhow::Result<()> {
    let database = format!("st_bench_{}", std::process::id());
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let spool = args.scratch.join("spool");
    let _ = std::fs::remove_dir_all(&spool);
    let mut aggregator = Command::new(&args.aggregator_bin)
        .args(["serve", "--listen", &addr, "--spool"])
        .arg(&spool)
        .env("STORAGE_TRACKER_CLICKHOUSE_URL", url)
        .env("STORAGE_TRACKER_DATABASE", &database)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", args.aggregator_bin.display()))?;
    while std::net::TcpStream::connect(&addr).is_err() {
        if let Some(status) = aggregator.try_wait()? {
            bail!("the aggregator exited ({status})");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let start = Instant::now();
    let status = Command::new(&args.scan_bin)
        .args(["--aggregator", &format!("http://{addr}"), "--threads", "2"])
        .args(["--progress-interval", "86400"])
        .arg(tree)
        .stderr(Stdio::null())
        .status()?;
    let seconds = start.elapsed().as_secs_f64();
    let _ = aggregator.kill();
    let _ = aggregator.wait();
    let entries = committed_and_drop(url, &database)?;
    if !status.success() {
        bail!("the scan failed ({status})");
    }
    println!("{seconds} {entries}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let (Some(url), Some(tree)) = (&args.ingest_run, &args.tree) {
        return ingest_run(&args, url, tree);
    }
    if let (Some(url), Some(dir)) = (&args.import_run, &args.tree) {
        return import_run(&args, url, dir);
    }
    if let Some(dir) = &args.count_parquet {
        let (rows, bytes) = parquet_totals(dir)?;
        println!("{rows} {bytes}");
        return Ok(());
    }
    let Some(tree) = args.tree.clone() else {
        bail!("give the tree to scan (made by st-gen-tree)")
    };
    if args.verify {
        return verify(&args, &std::fs::canonicalize(&tree)?);
    }
    if let Some(threads) = args.floor {
        let n = storage_tracker_bench::floor::walk(
            std::os::unix::ffi::OsStrExt::as_bytes(tree.as_os_str()),
            threads,
        );
        println!("{n}");
        return Ok(());
    }
    let tree = std::fs::canonicalize(&tree)?;
    let truth = read_truth(&tree)?;
    let entries = truth["entries"];
    let tree_s = tree.display().to_string();
    std::fs::create_dir_all(&args.scratch)?;
    let tools = tools(&args, &tree_s);

    // Warm the cache: every tool then reads metadata from memory.
    eprintln!("warming the cache on {entries} entries");
    storage_tracker_bench::floor::walk(std::os::unix::ffi::OsStrExt::as_bytes(tree.as_os_str()), 2);

    let mut runs: Vec<Vec<Run>> = tools.iter().map(|_| Vec::new()).collect();
    let mut checks: Vec<String> = vec![String::new(); tools.len()];
    // Entries each tool handles: the tree's, but an import's are its offline scan's.
    let mut handled: Vec<u64> = vec![entries; tools.len()];
    for round in 0..args.runs {
        for i in 0..tools.len() {
            let i = (i + round) % tools.len();
            let tool = &tools[i];
            let chunks = args.scratch.join("chunks");
            let _ = std::fs::remove_dir_all(&chunks);
            std::fs::create_dir_all(&chunks)?;
            let mut run =
                timed(&tool.argv, tool.stdout.as_deref()).with_context(|| tool.name.clone())?;
            let printed = match &tool.stdout {
                Some(p) if tool.self_timed => std::fs::read_to_string(p)?,
                _ => String::new(),
            };
            if tool.self_timed {
                run.seconds = printed
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("the ingest run printed no time")?;
            }
            eprintln!(
                "  {} [{}]: {:.3} s, {} MiB",
                tool.name,
                tool.parallel,
                run.seconds,
                run.max_rss_kib / 1024
            );
            if round == 0 {
                checks[i] = match tool.check {
                    Check::None => "-".into(),
                    Check::ParquetRows => {
                        // In a child process: the runner stays small, and a child's peak RSS
                        // includes the runner's memory at fork.
                        let out = Command::new(std::env::current_exe()?)
                            .arg("--count-parquet")
                            .arg(&chunks)
                            .output()?;
                        let text = String::from_utf8_lossy(&out.stdout);
                        let mut it = text
                            .split_whitespace()
                            .map(|v| v.parse::<u64>().unwrap_or(0));
                        let (rows, bytes) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                        let ok = rows == entries && bytes == truth["apparent_bytes"];
                        format!(
                            "{} rows, bytes {}",
                            rows,
                            if ok { "exact" } else { "WRONG" }
                        )
                    }
                    Check::Lines => {
                        let lines = std::fs::read(tool.stdout.as_ref().expect("stdout"))?
                            .iter()
                            .filter(|&&b| b == b'\n')
                            .count() as u64;
                        format!(
                            "{lines} lines{}",
                            if lines == entries {
                                ""
                            } else {
                                " (names with newlines split)"
                            }
                        )
                    }
                    Check::Imported => {
                        let committed = printed.split_whitespace().nth(1).unwrap_or("0");
                        handled[i] = committed.parse().unwrap_or(0);
                        format!("{committed} entries committed (offline scan)")
                    }
                    Check::Committed => {
                        let committed = printed.split_whitespace().nth(1).unwrap_or("0");
                        format!(
                            "{committed} entries committed{}",
                            if committed == entries.to_string() {
                                ""
                            } else {
                                " != truth"
                            }
                        )
                    }
                    Check::DuAllocated => {
                        let text = std::fs::read_to_string(tool.stdout.as_ref().expect("stdout"))?;
                        let total: u64 = text.split_whitespace().next().unwrap_or("0").parse()?;
                        format!(
                            "{} allocated bytes{}",
                            total,
                            if total == truth["allocated_unique"] {
                                " = truth"
                            } else {
                                " != truth"
                            }
                        )
                    }
                };
            }
            runs[i].push(run);
        }
    }

    let med: Vec<f64> = runs
        .iter()
        .map(|r| median(r.iter().map(|x| x.seconds).collect()))
        .collect();
    let floor_at = |threads: usize| {
        tools
            .iter()
            .position(|t| t.name.starts_with("floor") && t.threads == threads)
            .map(|i| med[i])
    };
    let scan2 = tools
        .iter()
        .position(|t| t.name == "storage-scan" && t.parallel == "1 rank x 2")
        .map(|i| med[i]);
    // The baseline's row of the same tool and parallelism, for the current build's rows.
    let suffix = format!(" @ {}", args.baseline_label);
    let baseline_of = |t: &Tool| {
        args.baseline.as_ref()?;
        tools.iter().position(|b| {
            b.name.strip_suffix(&suffix) == Some(t.name.as_str()) && b.parallel == t.parallel
        })
    };
    let mut table = String::new();
    let baseline_header = if args.baseline.is_some() {
        format!(" time vs @ {} |", args.baseline_label)
    } else {
        String::new()
    };
    writeln!(
        table,
        "| tool | ranks x threads | median s | entries/s | vs floor (same threads) | storage-scan 1x2 is |{baseline_header} peak RSS MiB | check |"
    )?;
    let baseline_align = if args.baseline.is_some() { "---:|" } else { "" };
    writeln!(
        table,
        "|---|---|---:|---:|---:|---:|{baseline_align}---:|---|"
    )?;
    for (i, t) in tools.iter().enumerate() {
        let rate = handled[i] as f64 / med[i];
        let comparable = t.check != Check::Imported;
        let vs_floor = floor_at(t.threads)
            .filter(|_| comparable)
            .map_or("-".into(), |f| format!("{:.2}x", f / med[i]));
        let vs_scan = scan2
            .filter(|_| comparable)
            .map_or("-".into(), |s| format!("{:.2}x faster", med[i] / s));
        let vs_baseline = match (args.baseline.is_some(), baseline_of(t)) {
            (false, _) => String::new(),
            (true, Some(b)) => format!(" {:.2} |", med[i] / med[b]),
            (true, None) => " - |".into(),
        };
        let rss = runs[i].iter().map(|r| r.max_rss_kib).max().unwrap_or(0) / 1024;
        writeln!(
            table,
            "| {} | {} | {:.3} | {:.0} | {} | {} |{} {} | {} |",
            t.name, t.parallel, med[i], rate, vs_floor, vs_scan, vs_baseline, rss, checks[i]
        )?;
    }
    let header = format!(
        "### {} entries ({} dirs, {} files, {} symlinks), {} runs each, warm cache\n\n{}\n",
        entries,
        truth["dirs"],
        truth["files"],
        truth["symlinks"],
        args.runs,
        machine()
    );
    println!("{header}\n{table}");
    if let Some(out) = &args.out {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        writeln!(f, "{header}\n{table}")?;
    }
    Ok(())
}

/// Recursive totals of a directory: apparent bytes, allocated bytes, entries (itself included).
type DirTotals = [u64; 3];

/// Per-directory totals from storage-scan's Parquet chunks.
fn scanned_dirs(
    chunks: &Path,
    root: &[u8],
) -> anyhow::Result<std::collections::HashMap<Vec<u8>, DirTotals>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{UInt8Type, UInt64Type};
    let mut dirs: std::collections::HashMap<Vec<u8>, DirTotals> = std::collections::HashMap::new();
    for f in std::fs::read_dir(chunks)? {
        let path = f?.path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue; // the manifest
        }
        let batch = storage_tracker_proto::read_chunk_file(&path)?;
        let path = batch
            .column_by_name(col::PATH)
            .expect("path")
            .as_binary::<i32>();
        let size = batch
            .column_by_name(col::SIZE)
            .expect("size")
            .as_primitive::<UInt64Type>();
        let alloc = batch
            .column_by_name(col::ALLOCATED)
            .expect("allocated")
            .as_primitive::<UInt64Type>();
        let kind = batch
            .column_by_name(col::KIND)
            .expect("kind")
            .as_primitive::<UInt8Type>();
        for i in 0..batch.num_rows() {
            let p = path.value(i);
            let add = [size.value(i), alloc.value(i), 1];
            // The entry counts in itself (if a directory) and in every directory above it.
            let mut end = if kind.value(i) == storage_tracker_proto::EntryKind::Dir as u8 {
                p.len()
            } else {
                p.iter().rposition(|&b| b == b'/').unwrap_or(0)
            };
            loop {
                let dir = if end == 0 { &b"/"[..] } else { &p[..end] };
                if dir.len() < root.len() {
                    break;
                }
                match dirs.get_mut(dir) {
                    Some(t) => t.iter_mut().zip(add).for_each(|(a, b)| *a += b),
                    None => {
                        dirs.insert(dir.to_vec(), add);
                    }
                }
                if dir == root || end == 0 {
                    break;
                }
                end = p[..end].iter().rposition(|&b| b == b'/').unwrap_or(0);
            }
        }
    }
    Ok(dirs)
}

/// `du` run with `flags` over `tree`: the number it prints for every directory.
fn du_dirs(tree: &Path, flags: &[&str]) -> anyhow::Result<std::collections::HashMap<Vec<u8>, u64>> {
    let out = Command::new("du").args(flags).arg(tree).output()?;
    if !out.status.success() {
        bail!(
            "du {flags:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out
        .stdout
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let tab = line.iter().position(|&b| b == b'\t')?;
            Some((
                line[tab + 1..].to_vec(),
                std::str::from_utf8(&line[..tab]).ok()?.parse().ok()?,
            ))
        })
        .collect())
}

/// Compares storage-scan's totals of every directory with du's (hard links counted at every
/// path, `-l`, so that each directory's total does not depend on the order of the walk).
fn verify(args: &Args, tree: &Path) -> anyhow::Result<()> {
    let chunks = args.scratch.join("verify-chunks");
    let _ = std::fs::remove_dir_all(&chunks);
    std::fs::create_dir_all(&chunks)?;
    let scan = Command::new(&args.scan_bin)
        .args(["--threads", "2", "--output"])
        .arg(&chunks)
        .arg(tree)
        .stderr(Stdio::null())
        .status()?;
    if !matches!(scan.code(), Some(0 | 3)) {
        bail!("storage-scan failed ({scan})");
    }
    let root = std::os::unix::ffi::OsStrExt::as_bytes(tree.as_os_str());
    let ours = scanned_dirs(&chunks, root)?;
    let checks = [
        ("apparent bytes", vec!["-l", "-B1", "--apparent-size"], 0),
        ("allocated bytes", vec!["-l", "-B1"], 1),
        ("entries", vec!["-l", "--inodes"], 2),
    ];
    let mut failed = false;
    for (what, flags, i) in checks {
        let theirs = du_dirs(tree, &flags)?;
        let wrong: Vec<_> = theirs
            .iter()
            .filter(|(dir, n)| ours.get(*dir).map(|t| t[i]) != Some(**n))
            .collect();
        println!(
            "{what}: {} directories, {} differ from du {}",
            theirs.len(),
            wrong.len(),
            flags.join(" ")
        );
        for (dir, n) in wrong.iter().take(5) {
            println!(
                "  {}: du {n}, storage-scan {:?}",
                String::from_utf8_lossy(dir),
                ours.get(*dir).map(|t| t[i])
            );
        }
        failed |= !wrong.is_empty() || theirs.len() != ours.len();
    }
    if failed {
        bail!("storage-scan and du disagree");
    }
    Ok(())
}
