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
//! restarts forgets when it last heard the leader and would vote at once,
//! and openraft's leader itself grants a vote to a candidate whose log is
//! as long as its own. [`VoteGate`] keeps the argument true in both cases:
//! a freshly started node refuses votes for `election_timeout_max`, and a
//! node refuses them while it holds a lease.
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

/// A waiting reader, or None for a renewal nobody waits on.
type Waiter = Option<oneshot::Sender<Result<(), Unapplied>>>;

/// The queue into the task that runs the rounds, and the lease. Cloned with
/// the node.
#[derive(Clone)]
pub struct ReadRounds {
    raft: Raft<TypeConfig>,
    queue: mpsc::UnboundedSender<Waiter>,
    lease: Arc<Mutex<Option<Lease>>>,
    /// A background renewal is queued or running.
    renewing: Arc<AtomicBool>,
    length: Duration,
}

impl ReadRounds {
    /// Starts the task for `raft`; it ends when every `ReadRounds` is
    /// dropped. Each successful round grants a lease of `length` (zero
    /// turns leases off).
    pub fn start(raft: Raft<TypeConfig>, length: Duration) -> ReadRounds {
        let (queue, waiting) = mpsc::unbounded_channel();
        let rounds = ReadRounds {
            raft,
            queue,
            lease: Arc::new(Mutex::new(None)),
            renewing: Arc::new(AtomicBool::new(false)),
            length,
        };
        tokio::spawn(round_loop(rounds.clone(), waiting));
        rounds
    }

    /// The gate for this node's incoming vote requests, shut for `quiet`
    /// (the followers' vote lease, `election_timeout_max`) from now and
    /// while this node holds a lease.
    pub fn vote_gate(&self, quiet: Duration) -> VoteGate {
        VoteGate { started: Instant::now(), quiet, lease: self.lease.clone() }
    }

    /// Returns once this node may serve a linearizable read: at once under
    /// a lease, otherwise after a round that began after this call confirmed
    /// leadership and the state machine applied what was committed when it
    /// began.
    pub async fn wait(&self) -> Result<(), Unapplied> {
        let now = Instant::now();
        if let Some(until) = self.held(now) {
            if until.saturating_duration_since(now) < self.length / 2 && !self.renewing.swap(true, Ordering::AcqRel) {
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
        let lease = *self.lease.lock().unwrap_or_else(|p| p.into_inner());
        let m = self.raft.metrics();
        let m = m.borrow();
        let leading = m.state == ServerState::Leader;
        let applied_term = m.last_applied.map(|l| l.leader_id.term);
        lease_holds(lease, now, leading, m.current_term, applied_term).then(|| lease.map(|l| l.until)).flatten()
    }

    fn current_term(&self) -> (u64, bool) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_term, m.state == ServerState::Leader)
    }
}

async fn round_loop(rounds: ReadRounds, mut waiting: mpsc::UnboundedReceiver<Waiter>) {
    while let Some(first) = waiting.recv().await {
        let mut readers = vec![first];
        while let Ok(next) = waiting.try_recv() {
            readers.push(next);
        }
        // Every reader taken above arrived before this round begins.
        let began = Instant::now();
        let (term, _) = rounds.current_term();
        let outcome = match tokio::time::timeout(ROUND_TIMEOUT, rounds.raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(Unapplied::NotLeader(f.leader_node))
            }
            Ok(Err(e)) => Err(Unapplied::Failed(e.to_string())),
            Err(_) => Err(Unapplied::Failed("no quorum confirmed this leader in time".into())),
        };
        let mut lease = rounds.lease.lock().unwrap_or_else(|p| p.into_inner());
        // The round confirmed the leader of `term` only if the term did not
        // move while it ran (terms only grow).
        *lease = match (&outcome, rounds.current_term()) {
            (Ok(()), (now_term, true)) if now_term == term && !rounds.length.is_zero() => {
                Some(Lease { term, until: began + rounds.length })
            }
            _ => None,
        };
        drop(lease);
        rounds.renewing.store(false, Ordering::Release);
        for reader in readers.into_iter().flatten() {
            let _ = reader.send(outcome.clone());
        }
    }
}

/// Decides whether this node may grant a Raft vote now. It may not:
/// - for `election_timeout_max` after this process started: a node that
///   restarts has forgotten when it last heard its leader, and a vote given
///   at once could elect a new leader inside the old leader's read lease;
/// - while this node holds a read lease itself: openraft's leader would
///   grant a vote to a candidate with a log as long as its own, and step
///   down a moment later than its reads notice.
#[derive(Clone)]
pub struct VoteGate {
    started: Instant,
    quiet: Duration,
    lease: Arc<Mutex<Option<Lease>>>,
}

impl VoteGate {
    /// Whether this node may vote at `now`.
    pub fn open(&self, now: Instant) -> bool {
        let leased = self.lease.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|l| now < l.until);
        now.saturating_duration_since(self.started) >= self.quiet && !leased
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
    fn a_node_votes_only_after_its_quiet_time_and_outside_its_own_lease() {
        let lease = Arc::new(Mutex::new(None));
        let gate = VoteGate { started: Instant::now(), quiet: Duration::from_millis(300), lease: lease.clone() };
        let t = gate.started;
        assert!(!gate.open(t));
        assert!(!gate.open(t + Duration::from_millis(299)));
        assert!(gate.open(t + Duration::from_millis(300)));
        *lease.lock().unwrap() = Some(Lease { term: 2, until: t + Duration::from_millis(500) });
        assert!(!gate.open(t + Duration::from_millis(400)), "inside its own lease");
        assert!(gate.open(t + Duration::from_millis(500)));
    }
}
