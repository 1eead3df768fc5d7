//! The aggregator's Prometheus metrics: every family's name, type and help text in one place,
//! and a method per event the ingest service and `/metrics` count, so no name or label is
//! spelled in the logic.
//!
//! A family appears in `/metrics` once its first event happened (the registry,
//! [`storage_tracker_proto::metrics::Metrics`], creates it then), as it always has.

use std::sync::Arc;

use storage_tracker_proto::metrics::{Metrics, SECONDS_BUCKETS};

use crate::snapshot::SnapshotState;

/// A metric family as `/metrics` shows it.
#[derive(Debug, Clone, Copy)]
struct Family {
    name: &'static str,
    help: &'static str,
}

const CHUNKS_RECEIVED: Family = Family {
    name: "storage_tracker_chunks_received_total",
    help: "Chunks received from scanners: accepted (spooled, then acknowledged), duplicate (acknowledged before) or refused.",
};
const ROWS_RECEIVED: Family = Family {
    name: "storage_tracker_rows_received_total",
    help: "Entry rows in accepted chunks.",
};
const INSERT_DURATION: Family = Family {
    name: "storage_tracker_insert_duration_seconds",
    help: "Time to store one INSERT of spooled chunks in ClickHouse, retries included.",
};
const ROWS_INSERTED: Family = Family {
    name: "storage_tracker_rows_inserted_total",
    help: "Entry rows stored in ClickHouse.",
};
const COMMITS: Family = Family {
    name: "storage_tracker_commits_total",
    help: "Finished snapshots by result: committed, or failed (verification or storage).",
};
const COMMIT_DURATION: Family = Family {
    name: "storage_tracker_commit_duration_seconds",
    help: "Time from a spooled finish to the committed snapshot: remaining inserts, verification and reports.",
};
const SPOOL_CHUNKS: Family = Family {
    name: "storage_tracker_spool_chunks",
    help: "Chunks acknowledged and spooled, not yet stored in ClickHouse.",
};
const SPOOL_FULL: Family = Family {
    name: "storage_tracker_spool_full",
    help: "1 while the spool's filesystem is full: from a spool write refused for lack of space (ENOSPC or quota) to the next one that succeeds. Chunks are not acknowledged meanwhile; scanners wait and send them again.",
};
const SPOOL_FREE_BYTES: Family = Family {
    name: "storage_tracker_spool_free_bytes",
    help: "Bytes the aggregator may still write on the spool's filesystem (statvfs f_bavail), at this scrape.",
};
const SPOOL_FULL_REFUSALS: Family = Family {
    name: "storage_tracker_spool_full_refusals_total",
    help: "Spool writes refused because the spool's filesystem is full, by what was being written: chunk (not acknowledged), record (BeginSnapshot refused) or finish (FinishSnapshot refused). The scanner sends it again.",
};
const RUNNING_SNAPSHOTS: Family = Family {
    name: "storage_tracker_running_snapshots",
    help: "Snapshots being scanned or committed by this aggregator.",
};
const SNAPSHOTS: Family = Family {
    name: "storage_tracker_snapshots",
    help: "Snapshots in ClickHouse by state.",
};
const CLICKHOUSE_UP: Family = Family {
    name: "storage_tracker_clickhouse_up",
    help: "Whether ClickHouse answered this scrape.",
};

/// What became of a chunk a scanner sent (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkResult {
    /// Spooled, then acknowledged.
    Accepted,
    /// Acknowledged before; acknowledged again, not stored again.
    Duplicate,
    Refused,
}

impl ChunkResult {
    fn label(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Refused => "refused",
        }
    }
}

/// What a spool write refused for lack of space was writing (the `write` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpoolWrite {
    /// A chunk, before its acknowledgement.
    Chunk,
    /// A snapshot's first record, at BeginSnapshot.
    Record,
    /// A finish request, at FinishSnapshot.
    Finish,
}

impl SpoolWrite {
    fn label(self) -> &'static str {
        match self {
            Self::Chunk => "chunk",
            Self::Record => "record",
            Self::Finish => "finish",
        }
    }
}

/// The aggregator's metrics; cheap to clone (clones count into the same registry).
#[derive(Debug, Clone, Default)]
pub struct AggregatorMetrics {
    registry: Arc<Metrics>,
}

impl AggregatorMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// A chunk was received and `result` became of it; `rows` is what it declared.
    pub fn chunk_received(&self, result: ChunkResult, rows: u64) {
        let m = &self.registry;
        m.inc(
            CHUNKS_RECEIVED.name,
            CHUNKS_RECEIVED.help,
            &[("result", result.label())],
            1.0,
        );
        if result == ChunkResult::Accepted {
            m.inc(ROWS_RECEIVED.name, ROWS_RECEIVED.help, &[], rows as f64);
        }
    }

    /// One INSERT of `rows` rows was stored, in `seconds` with its retries.
    pub fn inserted(&self, rows: u64, seconds: f64) {
        let m = &self.registry;
        m.observe(
            INSERT_DURATION.name,
            INSERT_DURATION.help,
            &[],
            SECONDS_BUCKETS,
            seconds,
        );
        m.inc(ROWS_INSERTED.name, ROWS_INSERTED.help, &[], rows as f64);
    }

    /// A spooled finish ended: committed in `seconds`, or failed (`None`).
    pub fn commit_finished(&self, committed_in: Option<f64>) {
        let m = &self.registry;
        let result = if committed_in.is_some() {
            "committed"
        } else {
            "failed"
        };
        m.inc(COMMITS.name, COMMITS.help, &[("result", result)], 1.0);
        if let Some(seconds) = committed_in {
            m.observe(
                COMMIT_DURATION.name,
                COMMIT_DURATION.help,
                &[],
                SECONDS_BUCKETS,
                seconds,
            );
        }
    }

    /// The spool's depth and the snapshots running, as the service sees them now.
    pub fn set_running(&self, unstored_chunks: usize, running_snapshots: usize) {
        let m = &self.registry;
        m.set(
            SPOOL_CHUNKS.name,
            SPOOL_CHUNKS.help,
            &[],
            unstored_chunks as f64,
        );
        m.set(
            RUNNING_SNAPSHOTS.name,
            RUNNING_SNAPSHOTS.help,
            &[],
            running_snapshots as f64,
        );
    }

    /// A spool write of `what` was refused: the spool's filesystem is full.
    pub fn spool_full_refusal(&self, what: SpoolWrite) {
        self.registry.inc(
            SPOOL_FULL_REFUSALS.name,
            SPOOL_FULL_REFUSALS.help,
            &[("write", what.label())],
            1.0,
        );
    }

    /// Whether the spool is full now, and the bytes free on its filesystem (`None` when they
    /// could not be read).
    pub fn set_spool_space(&self, full: bool, free_bytes: Option<u64>) {
        let m = &self.registry;
        m.set(
            SPOOL_FULL.name,
            SPOOL_FULL.help,
            &[],
            if full { 1.0 } else { 0.0 },
        );
        if let Some(free) = free_bytes {
            m.set(
                SPOOL_FREE_BYTES.name,
                SPOOL_FREE_BYTES.help,
                &[],
                free as f64,
            );
        }
    }

    /// What ClickHouse answered this scrape: the snapshots per state (every state, 0 where
    /// it has none), or nothing when it did not answer.
    pub fn set_stored(&self, states: Option<&[(String, u64)]>) {
        let m = &self.registry;
        let Some(states) = states else {
            m.set(CLICKHOUSE_UP.name, CLICKHOUSE_UP.help, &[], 0.0);
            return;
        };
        for state in SnapshotState::ALL.map(SnapshotState::name) {
            let n = states
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            m.set(
                SNAPSHOTS.name,
                SNAPSHOTS.help,
                &[("state", state)],
                n as f64,
            );
        }
        m.set(CLICKHOUSE_UP.name, CLICKHOUSE_UP.help, &[], 1.0);
    }

    /// The text exposition of `/metrics`.
    pub fn render(&self) -> String {
        self.registry.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events as the service counted them before the metrics had a type of their own,
    /// names and help texts spelled inline: the typed events must render the same bytes.
    fn inline(m: &Metrics) {
        m.inc(
            "storage_tracker_chunks_received_total",
            "Chunks received from scanners: accepted (spooled, then acknowledged), duplicate (acknowledged before) or refused.",
            &[("result", "accepted")],
            1.0,
        );
        m.inc(
            "storage_tracker_rows_received_total",
            "Entry rows in accepted chunks.",
            &[],
            100.0,
        );
        m.inc(
            "storage_tracker_chunks_received_total",
            "Chunks received from scanners: accepted (spooled, then acknowledged), duplicate (acknowledged before) or refused.",
            &[("result", "duplicate")],
            1.0,
        );
        m.inc(
            "storage_tracker_chunks_received_total",
            "Chunks received from scanners: accepted (spooled, then acknowledged), duplicate (acknowledged before) or refused.",
            &[("result", "refused")],
            1.0,
        );
        m.observe(
            "storage_tracker_insert_duration_seconds",
            "Time to store one INSERT of spooled chunks in ClickHouse, retries included.",
            &[],
            SECONDS_BUCKETS,
            0.2,
        );
        m.inc(
            "storage_tracker_rows_inserted_total",
            "Entry rows stored in ClickHouse.",
            &[],
            100.0,
        );
        m.inc(
            "storage_tracker_commits_total",
            "Finished snapshots by result: committed, or failed (verification or storage).",
            &[("result", "committed")],
            1.0,
        );
        m.observe(
            "storage_tracker_commit_duration_seconds",
            "Time from a spooled finish to the committed snapshot: remaining inserts, verification and reports.",
            &[],
            SECONDS_BUCKETS,
            1.5,
        );
        m.inc(
            "storage_tracker_commits_total",
            "Finished snapshots by result: committed, or failed (verification or storage).",
            &[("result", "failed")],
            1.0,
        );
        m.set(
            "storage_tracker_spool_chunks",
            "Chunks acknowledged and spooled, not yet stored in ClickHouse.",
            &[],
            3.0,
        );
        m.set(
            "storage_tracker_running_snapshots",
            "Snapshots being scanned or committed by this aggregator.",
            &[],
            1.0,
        );
        let states = [("committed".to_owned(), 2u64), ("failed".to_owned(), 1)];
        for state in ["running", "committed", "failed", "deleted"] {
            let n = states
                .iter()
                .find(|(s, _)| s == state)
                .map_or(0, |(_, n)| *n);
            m.set(
                "storage_tracker_snapshots",
                "Snapshots in ClickHouse by state.",
                &[("state", state)],
                n as f64,
            );
        }
        m.set(
            "storage_tracker_clickhouse_up",
            "Whether ClickHouse answered this scrape.",
            &[],
            1.0,
        );
    }

    #[test]
    fn the_typed_events_render_what_the_inline_names_rendered() {
        let before = Metrics::new();
        inline(&before);
        let m = AggregatorMetrics::new();
        m.chunk_received(ChunkResult::Accepted, 100);
        m.chunk_received(ChunkResult::Duplicate, 100);
        m.chunk_received(ChunkResult::Refused, 100);
        m.inserted(100, 0.2);
        m.commit_finished(Some(1.5));
        m.commit_finished(None);
        m.set_running(3, 1);
        let states = [("committed".to_owned(), 2u64), ("failed".to_owned(), 1)];
        m.set_stored(Some(&states));
        assert_eq!(m.render(), before.render());

        let down = AggregatorMetrics::new();
        down.set_stored(None);
        assert_eq!(
            down.render(),
            "# HELP storage_tracker_clickhouse_up Whether ClickHouse answered this scrape.\n\
             # TYPE storage_tracker_clickhouse_up gauge\n\
             storage_tracker_clickhouse_up 0\n"
        );
    }

    #[test]
    fn a_full_spool_is_a_gauge_and_its_refusals_are_counted_by_write() {
        let m = AggregatorMetrics::new();
        m.set_spool_space(true, Some(4096));
        m.spool_full_refusal(SpoolWrite::Chunk);
        m.spool_full_refusal(SpoolWrite::Chunk);
        m.spool_full_refusal(SpoolWrite::Finish);
        let text = m.render();
        assert!(text.contains("\nstorage_tracker_spool_full 1\n"), "{text}");
        assert!(
            text.contains("\nstorage_tracker_spool_free_bytes 4096\n"),
            "{text}"
        );
        assert!(
            text.contains("storage_tracker_spool_full_refusals_total{write=\"chunk\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("storage_tracker_spool_full_refusals_total{write=\"finish\"} 1\n"),
            "{text}"
        );
        assert!(!text.contains("write=\"record\""), "{text}");
        m.set_spool_space(false, None);
        let text = m.render();
        assert!(text.contains("\nstorage_tracker_spool_full 0\n"), "{text}");
        assert!(
            text.contains("\nstorage_tracker_spool_free_bytes 4096\n"),
            "{text}"
        );
    }

    #[test]
    fn a_family_appears_only_once_counted() {
        let m = AggregatorMetrics::new();
        m.chunk_received(ChunkResult::Refused, 10);
        let text = m.render();
        assert!(text.contains("result=\"refused\"} 1\n"), "{text}");
        assert!(
            !text.contains("storage_tracker_rows_received_total"),
            "{text}"
        );
    }
}
