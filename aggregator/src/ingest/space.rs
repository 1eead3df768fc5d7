//! The spool's filesystem runs out of room. Every spool write of the stages (a chunk, a
//! snapshot's first record, a finish request) goes through [`Inner::spool_write`]: a write
//! refused for lack of space (ENOSPC, or the quota) keeps nothing of itself and is answered
//! RESOURCE_EXHAUSTED, which the scanner takes as a wait: it sends the call again, with what
//! was not acknowledged, for up to its `--retry-for`. No snapshot fails for it: a full disk is
//! a condition of this aggregator, not a fault of the scan. The log says so when the spool
//! becomes full (what is full, its free space, what to do), again every [`REMIND_EVERY`] while
//! writes are refused, and once when a write succeeds again, without a line per chunk when a
//! spool near full fills and drains; `/metrics` has the state, the free bytes and the
//! refusals.

use std::io;
use std::time::{Duration, Instant};

use tonic::Status;
use tracing::{error, info, warn};

use super::{Inner, unavailable};
use crate::metrics::SpoolWrite;
use crate::spool::{Space, Spool, is_out_of_space};

/// How often a spool that stays full is said so again in the log.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// How long a spool is full before the log says so, whatever it said lately.
const LASTING: Duration = Duration::from_secs(5);

/// Why a spool write did not happen.
#[derive(Debug)]
pub(crate) enum SpoolError {
    /// The spool's filesystem has no room: nothing of the write is kept. Holds the reason as
    /// the scanner reads it.
    Full(String),
    /// Any other failure of the spool's disk.
    Io(io::Error),
}

impl SpoolError {
    /// The answer to the call whose `what` (e.g. "chunk (snapshot 3, rank 0, seq 7)") was not
    /// spooled: RESOURCE_EXHAUSTED when the spool is full, else what `io` makes of the error.
    pub(crate) fn status(self, what: &str, io: impl FnOnce(io::Error) -> Status) -> Status {
        match self {
            Self::Full(why) => Status::resource_exhausted(format!("{what} refused: {why}")),
            Self::Io(e) => io(e),
        }
    }

    /// As [`Self::status`], with any other failure UNAVAILABLE: "`doing`: the error".
    pub(crate) fn unavailable(self, what: &str, doing: &str) -> Status {
        self.status(what, |e| unavailable(doing, e))
    }
}

/// `bytes` for a reader: "812 KiB", "3.2 GiB".
fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} bytes"),
        _ if value < 10.0 => format!("{value:.1} {}", UNITS[unit]),
        _ => format!("{value:.0} {}", UNITS[unit]),
    }
}

/// The room left, for a reader: "12 KiB free of 16 MiB".
fn room(space: Option<Space>) -> String {
    match space {
        Some(s) => format!("{} free of {}", human(s.free), human(s.total)),
        None => "its free space could not be read".to_owned(),
    }
}

impl Inner {
    /// Runs `write` on the spool off the async threads. A write refused for lack of space marks
    /// the spool full (logged and counted as `what`); one that succeeds marks it as having
    /// room again.
    pub(crate) async fn spool_write<T: Send + 'static>(
        &self,
        what: SpoolWrite,
        write: impl FnOnce(&Spool) -> io::Result<T> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let spool = self.spool().clone();
        match Self::blocking(move || write(&spool)).await {
            Ok(value) => {
                self.spool_has_room();
                Ok(value)
            }
            Err(e) if is_out_of_space(&e) => Err(SpoolError::Full(self.spool_full(what, &e))),
            Err(e) => Err(SpoolError::Io(e)),
        }
    }

    /// Whether the last spool write was refused for lack of space.
    pub(crate) fn spool_is_full(&self) -> bool {
        self.space().full_since.is_some()
    }

    fn space(&self) -> std::sync::MutexGuard<'_, super::SpoolSpace> {
        self.space.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A write of `what` was refused with `e` for lack of space: counts it, says so in the
    /// log (see [`Self::say_full`]), and returns the reason the scanner is given.
    fn spool_full(&self, what: SpoolWrite, e: &io::Error) -> String {
        self.options.metrics.spool_full_refusal(what);
        let root = self.spool().root().display().to_string();
        let space = self.spool().space().ok();
        let room = room(space);
        self.say_full(&root, space, &room, e);
        format!(
            "the aggregator's spool {root} is full ({room} on its filesystem); send it again once \
             an admin frees space there"
        )
    }

    /// Says in the log that the spool is full, when that is news: at the first refusal, unless
    /// the spool was said full less than [`REMIND_EVERY`] ago (a spool near full fills and
    /// drains as chunks come and are stored: one line, not one per chunk); once it has been
    /// full for [`LASTING`] anyway; and again every [`REMIND_EVERY`] while it stays full.
    fn say_full(&self, root: &str, space: Option<Space>, room: &str, e: &io::Error) {
        let now = Instant::now();
        let mut state = self.space();
        let since = *state.full_since.get_or_insert(now);
        state.refused += 1;
        state.refused_unsaid += 1;
        let said_lately = state.said_at.is_some_and(|t| now - t < REMIND_EVERY);
        let free_bytes = space.map(|s| s.free);
        if !state.said_full && (!said_lately || now - since >= LASTING) {
            error!(
                spool = %root,
                free_bytes,
                "the spool is full: {e}; {room} on the spool's filesystem. Chunks are refused, \
                 not acknowledged, until there is room: scanners wait and send them again (for \
                 up to their --retry-for), and no snapshot fails for it. Free space on that \
                 filesystem, or give the spool (--spool) a larger one"
            );
        } else if state.said_full && !said_lately {
            warn!(
                spool = %root,
                free_bytes,
                "the spool is still full after {} s ({} writes refused since the last line; \
                 {room}): free space on its filesystem",
                (now - since).as_secs(),
                state.refused_unsaid
            );
        } else {
            return;
        }
        state.said_full = true;
        state.said_at = Some(now);
        state.refused_unsaid = 0;
    }

    /// A spool write succeeded: if the spool was full, it has room again, and the log says so
    /// if it said it was full.
    fn spool_has_room(&self) {
        let mut state = self.space();
        let Some(since) = state.full_since.take() else {
            return;
        };
        let refused = std::mem::take(&mut state.refused);
        state.refused_unsaid = 0;
        if !std::mem::take(&mut state.said_full) {
            return;
        }
        drop(state);
        let space = self.spool().space().ok();
        info!(
            spool = %self.spool().root().display(),
            free_bytes = space.map(|s| s.free),
            "the spool has room again ({}) after {} s full and {refused} writes refused; chunks \
             are acknowledged again",
            room(space),
            since.elapsed().as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_units() {
        assert_eq!(human(0), "0 bytes");
        assert_eq!(human(1023), "1023 bytes");
        assert_eq!(human(12 << 10), "12 KiB");
        assert_eq!(human((3 << 30) + (1 << 29)), "3.5 GiB");
        assert_eq!(
            room(Some(Space {
                free: 4096,
                total: 16 << 20
            })),
            "4.0 KiB free of 16 MiB"
        );
    }
}
