//! What the lab counts (operations by type) and how its counts read: one `key value` line each,
//! the format of the `--stats` file and of the summary printed on exit.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::service::Concurrency;

/// A FUSE operation the lab answers; the first eight are delayed (metadata operations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Getattr,
    Opendir,
    Readdir,
    Readlink,
    Open,
    Release,
    Releasedir,
    Read,
    Statfs,
    Forget,
}

impl Op {
    pub const ALL: [Op; 11] = [
        Op::Lookup,
        Op::Getattr,
        Op::Opendir,
        Op::Readdir,
        Op::Readlink,
        Op::Open,
        Op::Release,
        Op::Releasedir,
        Op::Read,
        Op::Statfs,
        Op::Forget,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Readlink => "readlink",
            Op::Open => "open",
            Op::Release => "release",
            Op::Releasedir => "releasedir",
            Op::Read => "read",
            Op::Statfs => "statfs",
            Op::Forget => "forget",
        }
    }
}

/// Operations answered, by type.
#[derive(Debug, Default)]
pub struct Counts([AtomicU64; Op::ALL.len()]);

impl Counts {
    pub fn add(&self, op: Op) {
        self.0[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, op: Op) -> u64 {
        self.0[op as usize].load(Ordering::Relaxed)
    }
}

/// The settings a report states beside its counts.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub latency: Duration,
    pub max_concurrent: usize,
}

/// The report: settings, counts by operation, `metadata_ops` (the delayed ones), the
/// concurrency seen (`in_flight`, `max_in_flight`, `mean_in_flight`, `waiting`,
/// `max_waiting`, `in_flight_hist` as `low:count` for buckets [low, 2 low)), the operations held
/// on a stalled subtree (`stalled` since the start, `stalled_now` held now, `max_stall_ms` the
/// longest hold of one released so far), and the lab's own CPU time (`cpu_ms`, user plus
/// system, all threads).
pub fn report(settings: Settings, counts: &Counts, seen: &Concurrency) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "latency_us {}", settings.latency.as_micros());
    let _ = writeln!(out, "max_concurrent {}", settings.max_concurrent);
    for op in Op::ALL {
        let _ = writeln!(out, "{} {}", op.name(), counts.get(op));
    }
    let _ = writeln!(out, "metadata_ops {}", seen.requests);
    let _ = writeln!(out, "in_flight {}", seen.in_flight);
    let _ = writeln!(out, "max_in_flight {}", seen.max_in_flight);
    let _ = writeln!(out, "mean_in_flight {:.2}", seen.mean_in_flight());
    let _ = writeln!(out, "waiting {}", seen.waiting);
    let _ = writeln!(out, "max_waiting {}", seen.max_waiting);
    let hist: Vec<String> = seen
        .histogram
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n > 0)
        .map(|(b, n)| format!("{}:{n}", 1u64 << b))
        .collect();
    let _ = writeln!(out, "in_flight_hist {}", hist.join(" "));
    let _ = writeln!(out, "stalled {}", seen.holds.total);
    let _ = writeln!(out, "stalled_now {}", seen.held);
    let _ = writeln!(out, "max_stall_ms {}", seen.holds.longest.as_millis());
    let _ = writeln!(out, "cpu_ms {}", cpu_time().as_millis());
    out
}

/// This process's CPU time, user plus system, over all its threads.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given and reads nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::Holds;

    #[test]
    fn the_report_is_one_key_value_line_each() {
        let counts = Counts::default();
        counts.add(Op::Lookup);
        counts.add(Op::Lookup);
        counts.add(Op::Releasedir);
        let seen = Concurrency {
            requests: 3,
            sum_in_flight: 6,
            max_in_flight: 3,
            histogram: [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            held: 1,
            holds: Holds {
                total: 2,
                longest: Duration::from_millis(1500),
            },
            ..Concurrency::default()
        };
        let settings = Settings {
            latency: Duration::from_millis(2),
            max_concurrent: 8,
        };
        let text = report(settings, &counts, &seen);
        for line in [
            "latency_us 2000",
            "lookup 2",
            "releasedir 1",
            "getattr 0",
            "metadata_ops 3",
            "max_in_flight 3",
            "mean_in_flight 2.00",
            "in_flight_hist 1:1 2:2",
            "stalled 2",
            "stalled_now 1",
            "max_stall_ms 1500",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
        assert!(text.lines().all(|l| l.split_once(' ').is_some()));
    }
}
