//! SIGTERM and SIGINT stop a scan cleanly. Slurm sends SIGTERM at a job's time limit and on
//! `scancel` (SIGKILL follows after its KillWait, 30 s by default). Each rank then stops reading,
//! sends the chunks it has, and rank 0 aborts the snapshot, so the aggregator marks it failed at
//! once instead of after `--abandon-after`.

use std::sync::atomic::{AtomicI32, Ordering};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note(signal: libc::c_int) {
    // An atomic store is async-signal-safe.
    RECEIVED.store(signal, Ordering::Relaxed);
}

/// Installs the handlers; call once, before the scan starts.
pub fn install() {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: `note` only stores to an atomic, which is async-signal-safe, and the handler
        // stays valid for the life of the process.
        unsafe {
            libc::signal(
                signal,
                note as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// The stopping signal's name, once one arrived.
pub fn received() -> Option<&'static str> {
    name(RECEIVED.load(Ordering::Relaxed))
}

fn name(signal: libc::c_int) -> Option<&'static str> {
    match signal {
        0 => None,
        libc::SIGTERM => Some("SIGTERM"),
        libc::SIGINT => Some("SIGINT"),
        _ => Some("a signal"),
    }
}

// Delivery itself is tested end to end (tests/end_to_end.rs sends SIGTERM to a scan): raising a
// signal here would stop the scans of the other unit tests running in this process.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named() {
        assert_eq!(name(0), None);
        assert_eq!(name(libc::SIGTERM), Some("SIGTERM"));
        assert_eq!(name(libc::SIGINT), Some("SIGINT"));
    }
}
