//! What the benchmark runners (`st-bench`, `st-scale`) share: a tree's ground truth as
//! st-gen-tree wrote it, the rows and bytes of a scan's Parquet chunks, and the machine line of
//! a results file.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use arrow_array::cast::AsArray;
use arrow_array::types::UInt64Type;
use storage_tracker_proto::entry::col;

/// The totals in `<TREE>.truth.tsv` (made by st-gen-tree), by key.
pub fn read_truth(tree: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut p = tree.as_os_str().to_owned();
    p.push(".truth.tsv");
    let text = std::fs::read_to_string(&p)
        .with_context(|| format!("reading {p:?} (made by st-gen-tree)"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('\t')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect())
}

/// Rows and apparent bytes in the Parquet chunks of a directory.
pub fn parquet_totals(dir: &Path) -> anyhow::Result<(u64, u64)> {
    let (mut rows, mut bytes) = (0, 0);
    for f in std::fs::read_dir(dir)? {
        let path = f?.path();
        if path.extension().is_none_or(|e| e != "parquet") {
            continue; // the manifest
        }
        let batch = storage_tracker_proto::read_chunk_file(&path)?;
        rows += batch.num_rows() as u64;
        bytes += batch
            .column_by_name(col::SIZE)
            .expect("size column")
            .as_primitive::<UInt64Type>()
            .values()
            .iter()
            .sum::<u64>();
    }
    Ok((rows, bytes))
}

/// The machine and date, for the results file.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("Machine: {cores} cores ({cpu}), Linux {kernel}; {date}.")
}
