//! The background task that turns this node's state into gauges, every
//! [`SAMPLE_EVERY`]: Raft's view (term, leadership, indexes, each
//! follower's lag), the namespace's size and the lock table (one pass over
//! the state, only when the applied index moved), and on the leader the
//! fsck counts (one pass over every chunk, only when the applied index or a
//! chunk server's liveness changed), the chunk servers by state and the
//! repairs in flight.
//!
//! Nothing is computed per scrape: a scrape reads what the last sample set.
//! On a node that does not lead, the leader-only gauges read 0 (see
//! [`crate::metric_names`]).
//!
//! The two whole-state passes work on a copy of the state
//! ([`crate::sm_store::SharedState::fs_copy`], cheap), so applies do not
//! wait for them, except to copy what they change while a copy lives.
//! Their time still grows with the namespace, so a [`Pacer`] keeps each to
//! at most 1/[`crate::pacer::PASS_SHARE_INVERSE`] of the time, for the CPU:
//! a pass that took 20 ms waits a second, one that took 200 ms (millions of
//! files) waits 10 s.
//! The fsck pass is not paced when a chunk server's liveness changed, since
//! that is what an operator watches for. Samples run on a blocking thread,
//! never on a runtime worker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::gauge;
use openraft::ServerState;

use crate::fsm::{FsState, Kind};
use crate::health;
use crate::metric_names as m;
use crate::node::Node;
use crate::pacer::Pacer;
use crate::repair::Healer;

/// Period of the samples (a scrape every 15 s sees values at most this old).
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What one pass over the namespace and the lock table counts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateCounts {
    pub files: u64,
    pub directories: u64,
    pub chunks: u64,
    pub file_bytes: u64,
    pub replica_bytes: u64,
    pub lock_sessions: u64,
    pub lock_holders: u64,
    pub lock_waiters: u64,
}

/// Counts files, directories, committed chunks, bytes and locks (pure).
pub fn count_state(fs: &FsState) -> StateCounts {
    let mut c = StateCounts::default();
    for inode in fs.inodes.values() {
        match inode.kind {
            Kind::Dir => c.directories += 1,
            // Counted as files: a name that is not a directory.
            Kind::Symlink | Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice => c.files += 1,
            Kind::File => {
                c.files += 1;
                c.file_bytes = c.file_bytes.saturating_add(inode.size);
                for (index, chunk) in &inode.chunks {
                    if chunk.committed_version == 0 {
                        continue;
                    }
                    c.chunks += 1;
                    let start = index.saturating_mul(inode.chunk_size);
                    let len = inode.size.saturating_sub(start).min(inode.chunk_size);
                    c.replica_bytes = c.replica_bytes.saturating_add(len.saturating_mul(chunk.replicas.len() as u64));
                }
            }
        }
    }
    c.lock_sessions = fs.sessions.len() as u64;
    for lock in fs.locks.paths.values() {
        c.lock_holders += lock.holders.len() as u64;
        c.lock_waiters += lock.queue.len() as u64;
    }
    c
}

/// What an fsck depends on besides the state's content: the applied index
/// and (server, alive, draining) of every chunk server.
type FsckInputs = (u64, Vec<(u64, bool, bool)>);

/// What the last samples saw, to skip passes whose inputs did not change.
#[derive(Default)]
struct Sampler {
    /// Followers whose lag the last sample reported.
    followers: HashSet<u64>,
    /// The applied index of the last state pass.
    counted_at: Option<u64>,
    /// The inputs of the last fsck.
    checked_at: Option<FsckInputs>,
    count_pacer: Pacer,
    fsck_pacer: Pacer,
}

/// Starts the sampling task of this meta node.
pub fn spawn(node: Node, healer: Arc<Healer>) {
    tokio::spawn(async move {
        let mut sampler = Sampler::default();
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (n, h) = (node.clone(), healer.clone());
            sampler = match tokio::task::spawn_blocking(move || {
                sampler.sample(&n, &h);
                sampler
            })
            .await
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("the metrics sampler failed: {e}");
                    Sampler::default()
                }
            };
        }
    });
}

fn set(name: &'static str, v: u64) {
    gauge!(name).set(v as f64);
}

impl Sampler {
    fn sample(&mut self, node: &Node, healer: &Healer) {
        let raft = node.raft.metrics().borrow().clone();
        let leading = raft.state == ServerState::Leader;
        set(m::RAFT_TERM, raft.current_term);
        set(m::RAFT_IS_LEADER, leading as u64);
        let last_log = raft.last_log_index.unwrap_or(0);
        set(m::RAFT_LAST_LOG_INDEX, last_log);
        set(m::RAFT_APPLIED_INDEX, raft.last_applied.map_or(0, |l| l.index));
        set(m::RAFT_SNAPSHOT_INDEX, raft.snapshot.map_or(0, |l| l.index));

        let mut seen = HashSet::new();
        for (id, matched) in raft.replication.iter().flatten() {
            if *id == raft.id {
                continue;
            }
            let lag = last_log.saturating_sub(matched.map_or(0, |l| l.index));
            gauge!(m::RAFT_REPLICATION_LAG, "follower" => id.to_string()).set(lag as f64);
            seen.insert(*id);
        }
        // A follower no longer replicated to (leadership lost, node removed) reads 0.
        for id in self.followers.difference(&seen) {
            gauge!(m::RAFT_REPLICATION_LAG, "follower" => id.to_string()).set(0.0);
        }
        self.followers = seen;

        let applied = node.state.read().last_applied.map_or(0, |l| l.index);
        if self.counted_at != Some(applied) && self.count_pacer.due(Instant::now()) {
            let started = Instant::now();
            let c = count_state(&node.state.fs_copy());
            self.count_pacer.ran(started, Instant::now());
            set(m::FILES, c.files);
            set(m::DIRECTORIES, c.directories);
            set(m::CHUNKS, c.chunks);
            set(m::FILE_BYTES, c.file_bytes);
            set(m::REPLICA_BYTES, c.replica_bytes);
            set(m::LOCK_SESSIONS, c.lock_sessions);
            set(m::LOCK_HOLDERS, c.lock_holders);
            set(m::LOCK_WAITERS, c.lock_waiters);
            self.counted_at = Some(applied);
        }

        if !leading {
            for name in [
                m::CHUNKS_UNDER_REPLICATED,
                m::CHUNKS_MISSING,
                m::CHUNKS_CORRUPT,
                m::CHUNKS_OVER_REPLICATED,
                m::REPAIRS_IN_FLIGHT,
                m::REPAIR_MOVES_PENDING,
            ] {
                set(name, 0);
            }
            for state in ["alive", "dead", "draining"] {
                gauge!(m::CHUNK_SERVERS, "state" => state).set(0.0);
            }
            self.checked_at = None;
            return;
        }
        let servers = node.server_views(Instant::now());
        let (mut alive, mut dead, mut draining) = (0, 0, 0);
        for s in &servers {
            match (s.alive, s.draining) {
                (false, _) => dead += 1,
                (true, true) => draining += 1,
                (true, false) => alive += 1,
            }
        }
        gauge!(m::CHUNK_SERVERS, "state" => "alive").set(alive as f64);
        gauge!(m::CHUNK_SERVERS, "state" => "dead").set(dead as f64);
        gauge!(m::CHUNK_SERVERS, "state" => "draining").set(draining as f64);
        set(m::REPAIRS_IN_FLIGHT, healer.copies_in_flight() as u64);
        set(m::REPAIR_MOVES_PENDING, healer.moves_pending() as u64);
        let inputs: FsckInputs = (applied, servers.iter().map(|s| (s.id, s.alive, s.draining)).collect());
        let liveness_changed = self.checked_at.as_ref().is_none_or(|(_, seen)| *seen != inputs.1);
        if self.checked_at.as_ref() != Some(&inputs) && (liveness_changed || self.fsck_pacer.due(Instant::now())) {
            let started = Instant::now();
            let chunks = health::chunk_views(&node.state.fs_copy());
            let f = health::fsck(&chunks, &servers, 0);
            self.fsck_pacer.ran(started, Instant::now());
            set(m::CHUNKS_UNDER_REPLICATED, f.under_replicated);
            set(m::CHUNKS_MISSING, f.missing);
            set(m::CHUNKS_CORRUPT, f.corrupt);
            set(m::CHUNKS_OVER_REPLICATED, f.over_replicated);
            self.checked_at = Some(inputs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::testing::{first_prepare, p, run, with_servers};
    use crate::fsm::{NamespaceCmd, Response, WriteCmd};

    #[test]
    fn counts_follow_the_namespace() {
        let mut st = with_servers(&[1, 2]);
        assert_eq!(count_state(&st), StateCounts { directories: 1, ..StateCounts::default() });
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        let create = NamespaceCmd::Create { path: p("/d/f"), replication: 2, chunk_size: 100, open_existing: false };
        let Response::Inode(f) = run(&mut st, create) else { panic!() };
        let prep = first_prepare(f.id, 1, &[1, 2], None);
        let Response::Chunk { chunk, .. } = run(&mut st, prep) else { panic!() };
        let before_commit = count_state(&st);
        assert_eq!((before_commit.files, before_commit.chunks), (1, 0), "an uncommitted chunk is not counted");
        let commit = WriteCmd::CommitWrite {
            inode: f.id,
            chunks: vec![(1, chunk.id, chunk.version)],
            size: 150,
            truncate: false,
            fence: None,
        };
        run(&mut st, commit);
        let c = count_state(&st);
        assert_eq!((c.files, c.directories, c.chunks), (1, 2, 1));
        assert_eq!(c.file_bytes, 150);
        assert_eq!(c.replica_bytes, 50 * 2, "chunk 1 holds bytes 100..150, on two replicas");
    }
}
