//! A snapshot built on request (`Cluster/TriggerSnapshot`, admins only), so
//! a benchmark can time one: ask openraft to build it, then wait until the
//! node's metrics show a snapshot covering the index applied at the call.
//!
//! openraft builds at most one snapshot at a time, and drops a request to
//! build one that comes while one is being built. So the request is made
//! again every [`RETRIGGER_EVERY`] until a snapshot covers the index: a
//! request made during a build gets the next one, not only the one being
//! built (which may not cover it; on an idle group nothing else would ever
//! start the next). The wait is bounded by [`SNAPSHOT_WAIT_MAX`].

use std::time::{Duration, Instant};

use openraft::Raft;
use tonic::Status;

use crate::TypeConfig;

/// The longest a request waits for its snapshot.
pub const SNAPSHOT_WAIT_MAX: Duration = Duration::from_secs(600);
/// How often a request that is still waiting asks openraft for a build
/// again (a no-op while one is being built).
pub const RETRIGGER_EVERY: Duration = Duration::from_millis(100);

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
        let mut retrigger = tokio::time::interval_at((Instant::now() + RETRIGGER_EVERY).into(), RETRIGGER_EVERY);
        retrigger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (snapshot, last_applied) = {
                let m = metrics.borrow_and_update();
                (m.snapshot.map(|l| l.index), m.last_applied.map_or(0, |l| l.index))
            };
            // A state with nothing applied has nothing to snapshot.
            if covers(snapshot, applied.min(last_applied)) {
                return Ok(snapshot.unwrap_or(0));
            }
            tokio::select! {
                // A finished build is seen before the next tick can ask
                // for another one.
                biased;
                changed = metrics.changed() => if changed.is_err() {
                    return Err(Status::unavailable("raft stopped"));
                },
                _ = retrigger.tick() => {
                    let covered = {
                        let m = metrics.borrow();
                        covers(m.snapshot.map(|l| l.index), applied.min(m.last_applied.map_or(0, |l| l.index)))
                    };
                    if !covered {
                        raft.trigger().snapshot().await.map_err(|e| Status::unavailable(format!("raft stopped: {e}")))?;
                    }
                }
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
    use std::collections::BTreeMap;

    use openraft::BasicNode;

    use super::*;
    use crate::fsm::NodeCmd;

    /// Regression (found by the `meta_rpc` fuzz target): a request that came
    /// while a snapshot was being built only waited, as openraft dropped its
    /// trigger; the build under way did not cover the entry applied after it
    /// started, and on an idle group nothing started another, so the call
    /// waited the whole [`SNAPSHOT_WAIT_MAX`]. Each round here starts a
    /// build, applies one more entry, and asks for a snapshot covering it;
    /// a round whose request comes before that build is done (most of them:
    /// a build writes and syncs a file) waited forever before the fix.
    #[tokio::test]
    async fn a_request_during_a_build_gets_a_snapshot_that_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let addr = "127.0.0.1:1";
        let config = crate::MetaConfig::new(1, addr.parse().unwrap(), dir.path().to_path_buf());
        let node = crate::server::start(&config).await.unwrap().service.node;
        node.raft.initialize(BTreeMap::from([(1, BasicNode::new(addr))])).await.unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while !node.caught_up_as_leader() {
            assert!(Instant::now() < until, "no leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for round in 0..10 {
            node.raft.trigger().snapshot().await.unwrap();
            node.write(NodeCmd::SetRepairPaused { paused: round % 2 == 0 }, None).await.unwrap();
            let applied = node.state.read().last_applied.expect("an entry").index;
            let built = tokio::time::timeout(Duration::from_secs(10), build(&node.raft, applied))
                .await
                .unwrap_or_else(|_| panic!("round {round}: no snapshot covering {applied} within 10 s"))
                .unwrap();
            assert!(built.index >= applied, "round {round}: {built:?} does not cover {applied}");
        }
        node.raft.shutdown().await.unwrap();
    }

    #[test]
    fn a_snapshot_covers_what_was_applied_before_it() {
        assert!(covers(Some(10), 10));
        assert!(covers(Some(11), 10));
        assert!(!covers(Some(9), 10));
        assert!(!covers(None, 10));
        assert!(covers(None, 0));
    }
}
