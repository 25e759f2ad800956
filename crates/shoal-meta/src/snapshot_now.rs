//! A snapshot built on request (`Cluster/TriggerSnapshot`, admins only), so
//! a benchmark can time one: ask openraft to build it, then wait until the
//! node's metrics show a snapshot covering the index applied at the call.
//!
//! openraft builds at most one snapshot at a time; a request made while one
//! is being built waits for that one and, if it does not cover the index,
//! for the next. The wait is bounded by [`SNAPSHOT_WAIT_MAX`].

use std::time::{Duration, Instant};

use openraft::Raft;
use tonic::Status;

use crate::TypeConfig;

/// The longest a request waits for its snapshot.
pub const SNAPSHOT_WAIT_MAX: Duration = Duration::from_secs(600);

/// What one requested snapshot cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Built {
    /// The last log index it covers.
    pub index: u64,
    pub build: Duration,
    /// Its encoded size (what a leader sends).
    pub size_bytes: u64,
}

/// Whether a snapshot at `snapshot` covers `applied` (an empty state, at 0,
/// is covered by anything).
pub fn covers(snapshot: Option<u64>, applied: u64) -> bool {
    snapshot.is_some_and(|s| s >= applied) || applied == 0
}

/// Builds a snapshot covering `applied` (this node's applied index now) and
/// answers when it is on disk.
pub async fn build(raft: &Raft<TypeConfig>, applied: u64) -> Result<Built, Status> {
    let started = Instant::now();
    let mut metrics = raft.metrics();
    raft.trigger().snapshot().await.map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
    let waited = tokio::time::timeout(SNAPSHOT_WAIT_MAX, async {
        loop {
            let (snapshot, last_applied) = {
                let m = metrics.borrow_and_update();
                (m.snapshot.map(|l| l.index), m.last_applied.map_or(0, |l| l.index))
            };
            // A state with nothing applied has nothing to snapshot.
            if covers(snapshot, applied.min(last_applied)) {
                return Ok(snapshot.unwrap_or(0));
            }
            if metrics.changed().await.is_err() {
                return Err(Status::unavailable("raft stopped"));
            }
        }
    })
    .await
    .map_err(|_| Status::deadline_exceeded(format!("no snapshot within {}s", SNAPSHOT_WAIT_MAX.as_secs())))??;
    let build = started.elapsed();
    let snapshot = raft.get_snapshot().await.map_err(|e| Status::internal(format!("reading the snapshot: {e}")))?;
    let size_bytes = snapshot.map_or(0, |s| s.snapshot.get_ref().len() as u64);
    Ok(Built { index: waited, build, size_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_covers_what_was_applied_before_it() {
        assert!(covers(Some(10), 10));
        assert!(covers(Some(11), 10));
        assert!(!covers(Some(9), 10));
        assert!(!covers(None, 10));
        assert!(covers(None, 0));
    }
}
