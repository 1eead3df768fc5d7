//! A snapshot's record and its life: the states it passes through, and
//! [`SnapshotRecord::transition`], the one way from one state to the next.
//!
//! ```text
//!            commit                 drop
//! running -----------> committed ----------> deleted <--+
//!    |                                        ^     |    | drop again
//!    | fail: aborted, verification,           |     +----+
//!    |       an insert, abandoned       drop  |
//!    +-------------------> failed ------------+
//! ```
//!
//! A record is begun running ([`SnapshotRecord::begun`]); every change after that is a
//! [`Transition`], which raises the version (the `snapshots` table keeps the highest) and sets
//! what the new state records. A transition that the diagram does not draw (committed back to
//! running, a failed snapshot committed, ...) is refused with [`IllegalTransition`] and leaves
//! the record as it was, so the caller decides what a refusal means (the ingest service only
//! ever moves the running records it holds, for which every drawn transition is legal).
//!
//! The record is stored as it always was: the state is its `Enum8` code, and every column
//! keeps its name, order and type, so databases and spools written before read back as today.

use std::time::{SystemTime, UNIX_EPOCH};

use clickhouse::Row;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use storage_tracker_proto::v1::BeginSnapshotRequest;
use storage_tracker_proto::{ApparentBytes, SnapshotId};

/// Where a snapshot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SnapshotState {
    /// Being scanned, or being committed.
    Running,
    /// Verified, its reports computed: queries see it.
    Committed,
    /// Aborted, failed verification or storage, or abandoned; its rows are dropped.
    Failed,
    /// Dropped (retention or `storage-aggregator drop`); the record stays, so the id is never
    /// reused.
    Deleted,
}

impl SnapshotState {
    /// Every state, in the order of their codes.
    pub const ALL: [Self; 4] = [Self::Running, Self::Committed, Self::Failed, Self::Deleted];

    /// The `Enum8` code in ClickHouse (and the number in a spooled record).
    pub const fn code(self) -> i8 {
        match self {
            Self::Running => 1,
            Self::Committed => 2,
            Self::Failed => 3,
            Self::Deleted => 4,
        }
    }

    pub const fn from_code(code: i8) -> Option<Self> {
        match code {
            1 => Some(Self::Running),
            2 => Some(Self::Committed),
            3 => Some(Self::Failed),
            4 => Some(Self::Deleted),
            _ => None,
        }
    }

    /// The name, as the `Enum8` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Committed => "committed",
            Self::Failed => "failed",
            Self::Deleted => "deleted",
        }
    }
}

impl std::fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for SnapshotState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_i8(self.code())
    }
}

impl<'de> Deserialize<'de> for SnapshotState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = i8::deserialize(deserializer)?;
        Self::from_code(code).ok_or_else(|| {
            serde::de::Error::custom(format!("{code} is not a snapshot state's code"))
        })
    }
}

/// What a committed snapshot holds, as its commit verified it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommitTotals {
    pub entries: u64,
    pub errors: u64,
    /// The apparent bytes the ranks counted.
    pub apparent_bytes: ApparentBytes,
    pub directories: u64,
    /// Time the reports took.
    pub commit_seconds: f64,
}

/// A change of state, with what the new state records.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Running to committed.
    Commit(CommitTotals),
    /// Running to failed, and why.
    Fail(String),
    /// Committed, failed or deleted to deleted: the rows are gone (dropping a deleted snapshot
    /// again drops nothing more and records it again).
    Delete,
}

impl Transition {
    /// The state it leads to.
    pub fn to(&self) -> SnapshotState {
        match self {
            Self::Commit(_) => SnapshotState::Committed,
            Self::Fail(_) => SnapshotState::Failed,
            Self::Delete => SnapshotState::Deleted,
        }
    }
}

/// A transition the life of a snapshot does not have; the record is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("snapshot {snapshot_id} is {from}; it cannot become {to}")]
pub struct IllegalTransition {
    pub snapshot_id: SnapshotId,
    pub from: SnapshotState,
    pub to: SnapshotState,
}

/// One row of `snapshots`: a state change. The highest `version` is the current state.
///
/// The scan's description (id, label, root, ranks, ...) is public and fixed from the begin;
/// the version, the state and what the states record (finish time, message, totals) change
/// only through [`Self::transition`].
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub snapshot_id: SnapshotId,
    version: u64,
    state: SnapshotState,
    pub scan_id: String,
    pub filesystem_label: String,
    #[serde(with = "serde_bytes")]
    pub root_path: Vec<u8>,
    pub hosts: Vec<String>,
    pub ranks: u32,
    pub scanner_version: String,
    pub schema_version: u32,
    pub started_at: u32,
    finished_at: u32,
    entries: u64,
    errors: u64,
    apparent_bytes: ApparentBytes,
    directories: u64,
    commit_seconds: f64,
    message: String,
    /// The scan's start to the nanosecond; ages in the reports are measured from it.
    #[serde(default)]
    pub started_at_ns: i64,
    /// What the scan left out (see `storage_tracker_proto::scan_options`); "" for nothing.
    #[serde(default)]
    pub scan_options: String,
}

impl SnapshotRecord {
    /// The first record of a snapshot: running, version 1, described by the scan's begin
    /// request, started at `started_at_ns` (the request's own start fields are not read).
    pub fn begun(snapshot_id: SnapshotId, r: BeginSnapshotRequest, started_at_ns: i64) -> Self {
        Self {
            snapshot_id,
            version: 1,
            state: SnapshotState::Running,
            scan_id: r.scan_id,
            filesystem_label: r.filesystem_label,
            root_path: r.root_path,
            hosts: r.hosts,
            ranks: r.ranks,
            scanner_version: r.scanner_version,
            schema_version: r.schema_version,
            started_at: started_at_ns.div_euclid(1_000_000_000) as u32,
            finished_at: 0,
            entries: 0,
            errors: 0,
            apparent_bytes: ApparentBytes::ZERO,
            directories: 0,
            commit_seconds: 0.0,
            message: String::new(),
            started_at_ns,
            scan_options: r.scan_options,
        }
    }

    /// Moves the record to its next state at `at` (Unix seconds): the version goes up by one,
    /// and the new state records its own fields (a commit its totals and finish time, a
    /// failure its message and finish time, a deletion "deleted at `at`" as its message).
    /// A transition the snapshot's life does not have is refused and changes nothing.
    pub fn transition(&mut self, change: Transition, at: u32) -> Result<(), IllegalTransition> {
        let to = change.to();
        self.may_become(to)?;
        self.version += 1;
        self.state = to;
        match change {
            Transition::Commit(totals) => {
                self.finished_at = at;
                self.entries = totals.entries;
                self.errors = totals.errors;
                self.apparent_bytes = totals.apparent_bytes;
                self.directories = totals.directories;
                self.commit_seconds = totals.commit_seconds;
            }
            Transition::Fail(message) => {
                self.finished_at = at;
                self.message = message;
            }
            Transition::Delete => self.message = format!("deleted at {at}"),
        }
        Ok(())
    }

    /// Whether the snapshot's life goes from its state to `to` (what [`Self::transition`]
    /// checks first), for a caller that must know before it acts.
    pub fn may_become(&self, to: SnapshotState) -> Result<(), IllegalTransition> {
        use SnapshotState::{Committed, Deleted, Failed, Running};
        let legal = matches!(
            (self.state, to),
            (Running, Committed | Failed) | (Committed | Failed | Deleted, Deleted)
        );
        if legal {
            Ok(())
        } else {
            Err(IllegalTransition {
                snapshot_id: self.snapshot_id,
                from: self.state,
                to,
            })
        }
    }

    pub fn state(&self) -> SnapshotState {
        self.state
    }

    /// How many changes the record has been through (1 when begun).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When it was committed or failed, in Unix seconds; 0 while running.
    pub fn finished_at(&self) -> u32 {
        self.finished_at
    }

    /// Why it failed, or when it was deleted; "" otherwise.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The totals of a committed snapshot (zero before the commit).
    pub fn totals(&self) -> CommitTotals {
        CommitTotals {
            entries: self.entries,
            errors: self.errors,
            apparent_bytes: self.apparent_bytes,
            directories: self.directories,
            commit_seconds: self.commit_seconds,
        }
    }

    /// The scan's start in nanoseconds (a record spooled before it was kept knows seconds only).
    pub fn start_ns(&self) -> i64 {
        if self.started_at_ns != 0 {
            self.started_at_ns
        } else {
            i64::from(self.started_at) * 1_000_000_000
        }
    }
}

/// Now, in nanoseconds since the epoch.
pub fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Now, in seconds since the epoch (the `DateTime` columns).
pub fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running() -> SnapshotRecord {
        SnapshotRecord::begun(
            SnapshotId::new(7),
            BeginSnapshotRequest {
                root_path: b"/r".to_vec(),
                ranks: 2,
                ..Default::default()
            },
            1_700_000_000_500_000_000,
        )
    }

    #[test]
    fn a_record_begins_running_at_version_1() {
        let r = running();
        assert_eq!((r.state(), r.version()), (SnapshotState::Running, 1));
        assert_eq!(r.started_at, 1_700_000_000);
        assert_eq!(r.start_ns(), 1_700_000_000_500_000_000);
    }

    #[test]
    fn each_transition_raises_the_version_and_records_what_its_state_holds() {
        let mut r = running();
        let totals = CommitTotals {
            entries: 10,
            errors: 1,
            apparent_bytes: ApparentBytes::new(100),
            directories: 2,
            commit_seconds: 0.5,
        };
        r.transition(Transition::Commit(totals), 1_700_000_100)
            .unwrap();
        assert_eq!((r.state(), r.version()), (SnapshotState::Committed, 2));
        assert_eq!((r.finished_at(), r.totals()), (1_700_000_100, totals));
        r.transition(Transition::Delete, 1_700_000_200).unwrap();
        assert_eq!((r.state(), r.version()), (SnapshotState::Deleted, 3));
        assert_eq!(r.message(), "deleted at 1700000200");
        assert_eq!(
            r.finished_at(),
            1_700_000_100,
            "a deletion keeps the finish"
        );
        r.transition(Transition::Delete, 1_700_000_300).unwrap();
        assert_eq!(r.version(), 4);

        let mut f = running();
        f.transition(Transition::Fail("aborted".into()), 5).unwrap();
        assert_eq!(
            (f.state(), f.version(), f.finished_at()),
            (SnapshotState::Failed, 2, 5)
        );
        assert_eq!(f.message(), "aborted");
        f.transition(Transition::Delete, 6).unwrap();
        assert_eq!(f.state(), SnapshotState::Deleted);
    }

    #[test]
    fn a_transition_the_life_does_not_have_is_refused_and_changes_nothing() {
        let mut r = running();
        let before = r.clone();
        let e = r.transition(Transition::Delete, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot 7 is running; it cannot become deleted"
        );
        assert_eq!(r, before);

        r.transition(Transition::Commit(CommitTotals::default()), 1)
            .unwrap();
        let committed = r.clone();
        for change in [
            Transition::Fail("late".into()),
            Transition::Commit(CommitTotals::default()),
        ] {
            assert!(r.transition(change, 2).is_err());
            assert_eq!(r, committed);
        }
        let mut f = running();
        f.transition(Transition::Fail("x".into()), 1).unwrap();
        assert!(
            f.transition(Transition::Commit(CommitTotals::default()), 2)
                .is_err()
        );
        assert!(f.transition(Transition::Fail("again".into()), 2).is_err());
    }

    #[test]
    fn the_state_is_stored_as_its_enum8_code() {
        let mut r = running();
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["state"], 1);
        r.transition(Transition::Fail("x".into()), 1).unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"state\":3"), "{json}");
        let back: SnapshotRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        for s in SnapshotState::ALL {
            assert_eq!(SnapshotState::from_code(s.code()), Some(s));
        }
        assert_eq!(SnapshotState::from_code(0), None);
    }

    #[test]
    fn a_record_spooled_by_the_previous_version_reads_back() {
        // snapshot.json as the aggregator wrote it when the state was a plain i8 field.
        let json = r#"{"snapshot_id":3,"version":1,"state":1,"scan_id":"s","filesystem_label":"fs","root_path":[47,114],"hosts":["h"],"ranks":2,"scanner_version":"v","schema_version":2,"started_at":1700000000,"finished_at":0,"entries":0,"errors":0,"apparent_bytes":0,"directories":0,"commit_seconds":0.0,"message":""}"#;
        let r: SnapshotRecord = serde_json::from_str(json).unwrap();
        assert_eq!(
            (r.snapshot_id.get(), r.state(), r.version()),
            (3, SnapshotState::Running, 1)
        );
        assert_eq!(r.root_path, b"/r");
        assert_eq!(r.start_ns(), 1_700_000_000_000_000_000);
    }
}
