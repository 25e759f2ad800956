//! Linearizable reads: shared read-index rounds, and a leader lease that
//! lets most reads skip the round.
//!
//! # Rounds
//! A linearizable read on the leader can wait for a read-index round: the
//! leader confirms with a quorum that it still leads, then its state machine
//! catches up to the commit index it had when the round began. Every read
//! that needs a round queues; a task takes all the reads waiting and runs
//! one round for them, and reads that arrive while a round is running wait
//! for the next one. A read joins only a round that begins after it
//! arrived, so the round's commit index covers every write acknowledged
//! before the read began, and its quorum check happens after the read began
//! too.
//!
//! # The lease
//! A round that began at `t` and succeeded in term `T` means a quorum of
//! followers accepted this leader's heartbeat at or after `t`. Openraft's
//! followers refuse every vote request for `election_timeout_max` after the
//! last heartbeat they accepted, so no other leader can be elected before
//! `t + election_timeout_max`. Until `t + lease` (a lease shorter than
//! that, see [`lease_for`]), this node, if it still leads in term `T` and
//! has applied an entry of `T`, may serve a read from its state at once:
//! - every write acknowledged before the read began was acknowledged after
//!   being applied here (this node leads, and writes are acknowledged once
//!   applied), or was committed by an earlier leader and so precedes the
//!   applied entry of `T`;
//! - no write can have been committed elsewhere since `t`.
//!
//! Monotonic clocks keep running while a process is stopped, so a leader
//! frozen past its lease finds it expired when it resumes. A follower that
//! restarts counts its last heartbeat as "now" (openraft stamps the vote it
//! loads with the time it starts), so it refuses votes for as long again.
//! Openraft's leader itself would grant a vote to a candidate whose log is
//! as long as its own: [`VoteGate`] refuses vote requests while this node
//! holds a lease, and a round during which a vote reached Raft grants no
//! lease. The term and leadership a round confirms are read from Raft's
//! core before and after it, not from its metrics, which can lag.
//!
//! A read that finds the lease in its last half also asks for a round in
//! the background, so a steady stream of reads renews the lease without
//! waiting for it: about one round per half lease instead of one per read.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{Raft, ServerState};
use tokio::sync::{mpsc, oneshot};

use crate::TypeConfig;
use crate::group_commit::Unapplied;
use crate::metric_names;

/// A round that takes longer fails its readers (they retry), so one stuck
/// round cannot hold every later read.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);

/// The lease a round grants, from Raft's election timeouts: a third below
/// the shortest election timeout, so always well inside the followers'
/// vote lease of `election_timeout_max`.
pub fn lease_for(election_timeout_min_ms: u64) -> Duration {
    Duration::from_millis(election_timeout_min_ms * 2 / 3)
}

/// A lease: reads may be served locally while this node leads in `term`
/// and `Instant::now() < until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lease {
    term: u64,
    until: Instant,
}

/// Whether `lease` lets a read be served locally at `now`, given this
/// node's Raft state: it leads in the lease's term and has applied an entry
/// of that term.
fn lease_holds(lease: Option<Lease>, now: Instant, leading: bool, term: u64, applied_term: Option<u64>) -> bool {
    lease.is_some_and(|l| leading && l.term == term && applied_term == Some(term) && now < l.until)
}

/// The lease and the votes let through to Raft, under one lock, so a lease
/// is never installed while a vote it does not know of is being decided.
#[derive(Debug, Default)]
struct Shared {
    lease: Option<Lease>,
    /// Votes let through to Raft since the start.
    votes_admitted: u64,
    /// Of those, the ones Raft has not answered yet.
    votes_deciding: u64,
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A waiting reader, or None for a renewal nobody waits on.
type Waiter = Option<oneshot::Sender<Result<(), Unapplied>>>;

/// The queue into the task that runs the rounds, and what readers and the
/// task share. Cloned with the node.
#[derive(Clone)]
pub struct ReadRounds {
    queue: mpsc::UnboundedSender<Waiter>,
    inner: Arc<Rounder>,
}

/// What the round task needs: everything but the queue's sender, so the
/// task ends once every [`ReadRounds`] is dropped.
struct Rounder {
    raft: Raft<TypeConfig>,
    /// Also the [`VoteGate`]'s.
    shared: Arc<Mutex<Shared>>,
    /// A background renewal is queued or running.
    renewing: AtomicBool,
    length: Duration,
}

impl ReadRounds {
    /// Starts the task for `raft`; it ends when every `ReadRounds` is
    /// dropped. Each successful round grants a lease of `length` (zero
    /// turns leases off).
    pub fn start(raft: Raft<TypeConfig>, length: Duration) -> ReadRounds {
        let (queue, waiting) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let inner = Arc::new(Rounder { raft, shared, renewing: AtomicBool::new(false), length });
        tokio::spawn(round_loop(inner.clone(), waiting));
        ReadRounds { queue, inner }
    }

    /// The gate for this node's incoming vote requests.
    pub fn vote_gate(&self) -> VoteGate {
        VoteGate { shared: self.inner.shared.clone() }
    }

    /// Returns once this node may serve a linearizable read: at once under
    /// a lease, otherwise after a round that began after this call confirmed
    /// leadership and the state machine applied what was committed when it
    /// began.
    pub async fn wait(&self) -> Result<(), Unapplied> {
        let now = Instant::now();
        if let Some(until) = self.held(now) {
            let r = &self.inner;
            if until.saturating_duration_since(now) < r.length / 2 && !r.renewing.swap(true, Ordering::AcqRel) {
                let _ = self.queue.send(None);
            }
            metrics::counter!(metric_names::LINEARIZABLE_READS_TOTAL, "path" => "lease").increment(1);
            return Ok(());
        }
        let (done, round) = oneshot::channel();
        let gone = || Unapplied::Failed("meta is shutting down".into());
        self.queue.send(Some(done)).map_err(|_| gone())?;
        round.await.map_err(|_| gone())??;
        metrics::counter!(metric_names::LINEARIZABLE_READS_TOTAL, "path" => "round").increment(1);
        Ok(())
    }

    /// The end of the lease if it lets a read be served at `now`.
    fn held(&self, now: Instant) -> Option<Instant> {
        let lease = lock(&self.inner.shared).lease;
        let m = self.inner.raft.metrics();
        let m = m.borrow();
        let leading = m.state == ServerState::Leader;
        let applied_term = m.last_applied.map(|l| l.leader_id.term);
        lease_holds(lease, now, leading, m.current_term, applied_term).then(|| lease.map(|l| l.until)).flatten()
    }
}

/// This node's term and whether it leads, from Raft's core itself (its
/// metrics may lag a moment behind); None if Raft stopped.
async fn core_term(raft: &Raft<TypeConfig>) -> Option<(u64, bool)> {
    raft.with_raft_state(|s| (s.vote_ref().leader_id().term, s.server_state == ServerState::Leader)).await.ok()
}

/// A failed round as the readers' error.
fn unapplied(e: RaftError<u64, CheckIsLeaderError<u64, openraft::BasicNode>>) -> Unapplied {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => Unapplied::NotLeader(f.leader_node),
        e => Unapplied::Failed(e.to_string()),
    }
}

async fn round_loop(r: Arc<Rounder>, mut waiting: mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = waiting.recv().await {
        let mut readers = vec![first];
        while let Ok(next) = waiting.try_recv() {
            readers.push(next);
        }
        // Every reader taken above arrived before this round begins.
        let began = Instant::now();
        let votes_before = lock(&r.shared).votes_admitted;
        // The whole round, the two looks at the core included, is bounded.
        let round = async {
            let before = core_term(&r.raft).await;
            let outcome = r.raft.ensure_linearizable().await;
            (before, outcome, core_term(&r.raft).await)
        };
        let (outcome, before, after) = match tokio::time::timeout(ROUND_TIMEOUT, round).await {
            Ok((before, outcome, after)) => (outcome.map(|_| ()).map_err(unapplied), before, after),
            Err(_) => (Err(Unapplied::Failed("no quorum confirmed this leader in time".into())), None, None),
        };
        let mut shared = lock(&r.shared);
        // The round confirmed the leader of the term it began in only if
        // the term did not move while it ran (terms only grow), and no vote
        // reached Raft meanwhile: a vote this node granted would depose it
        // whatever the round saw.
        let confirmed = outcome.is_ok()
            && before.is_some_and(|(_, leading)| leading)
            && before == after
            && shared.votes_admitted == votes_before
            && shared.votes_deciding == 0;
        shared.lease = match (confirmed && !r.length.is_zero(), before) {
            (true, Some((term, _))) => Some(Lease { term, until: began + r.length }),
            _ => None,
        };
        drop(shared);
        r.renewing.store(false, Ordering::Release);
        for reader in readers.into_iter().flatten() {
            let _ = reader.send(outcome.clone());
        }
    }
}

/// Lets a Raft vote request through to Raft only while this node holds no
/// read lease: openraft's leader grants a vote to a candidate whose log is
/// as long as its own, and would step down a moment later than its reads
/// notice. A vote let through stops the round running then from granting a
/// lease.
#[derive(Clone)]
pub struct VoteGate {
    shared: Arc<Mutex<Shared>>,
}

/// A vote being decided by Raft; dropping it says Raft answered.
pub struct Deciding(Arc<Mutex<Shared>>);

impl Drop for Deciding {
    fn drop(&mut self) {
        lock(&self.0).votes_deciding -= 1;
    }
}

impl VoteGate {
    /// Lets a vote through at `now` (hold the answer until Raft decided),
    /// or None while this node holds a lease.
    pub fn admit(&self, now: Instant) -> Option<Deciding> {
        let mut shared = lock(&self.shared);
        if shared.lease.is_some_and(|l| now < l.until) {
            return None;
        }
        shared.votes_admitted += 1;
        shared.votes_deciding += 1;
        Some(Deciding(self.shared.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_only_for_the_leader_of_its_term_that_applied_that_term_before_it_ends() {
        let t = Instant::now();
        let lease = Some(Lease { term: 5, until: t + Duration::from_millis(100) });
        assert!(lease_holds(lease, t, true, 5, Some(5)));
        assert!(!lease_holds(lease, t + Duration::from_millis(100), true, 5, Some(5)), "expired");
        assert!(!lease_holds(lease, t, false, 5, Some(5)), "not leading");
        assert!(!lease_holds(lease, t, true, 6, Some(6)), "a later term");
        assert!(!lease_holds(lease, t, true, 5, Some(4)), "nothing of its own term applied");
        assert!(!lease_holds(lease, t, true, 5, None), "nothing applied");
        assert!(!lease_holds(None, t, true, 5, Some(5)), "no lease");
    }

    #[test]
    fn the_lease_is_inside_every_election_timeout() {
        for min in [10, 150, 1_000] {
            assert!(lease_for(min) < Duration::from_millis(min));
        }
    }

    #[test]
    fn a_node_votes_only_outside_its_own_lease_and_counts_the_votes_it_lets_through() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let gate = VoteGate { shared: shared.clone() };
        let t = Instant::now();
        let counts = || {
            let s = lock(&shared);
            (s.votes_admitted, s.votes_deciding)
        };
        let deciding = gate.admit(t).expect("no lease: the vote goes through");
        assert_eq!(counts(), (1, 1));
        drop(deciding);
        assert_eq!(counts(), (1, 0));
        lock(&shared).lease = Some(Lease { term: 2, until: t + Duration::from_millis(500) });
        assert!(gate.admit(t + Duration::from_millis(400)).is_none(), "inside its own lease");
        assert_eq!(lock(&shared).votes_admitted, 1, "a refused vote is not counted");
        assert!(gate.admit(t + Duration::from_millis(500)).is_some());
    }
}
