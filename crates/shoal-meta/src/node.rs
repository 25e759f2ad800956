//! This meta node's handles, shared by the gRPC services and the leader's
//! healing task: the Raft group, the applied state and the chunk-server
//! registry, and what both do with them: propose a command and wait until it
//! is applied, check leadership, serve a linearizable read, and describe the
//! chunk servers for planning ([`ServerView`]).
//!
//! Errors are gRPC statuses: a node that is not the leader answers
//! `UNAVAILABLE` with the leader's address under [`shoal_proto::LEADER_KEY`],
//! which clients follow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Raft, ServerState};
use tonic::Status;

use crate::TypeConfig;
use crate::fsm::{Command, RequestId, Response};
use crate::group_commit::{Proposer, Unapplied};
use crate::health::ServerView;
use crate::metric_names;
use crate::read_rounds::{ReadRounds, VoteGate, lease_for};
use crate::registry::{Liveness, Registry};
use crate::sm_store::SharedState;

/// See the module docs.
#[derive(Clone)]
pub struct Node {
    pub raft: Raft<TypeConfig>,
    pub state: SharedState,
    pub registry: Arc<Registry>,
    /// Where proposals queue for group commit ([`crate::group_commit`]).
    proposer: Proposer,
    /// Where linearizable reads queue for a shared read-index round.
    reads: ReadRounds,
}

/// The status of a node that is not the leader, naming the leader if known.
pub fn not_leader(leader: Option<BasicNode>) -> Status {
    let mut s = Status::unavailable(match &leader {
        Some(n) => format!("not the leader; the leader is {}", n.addr),
        None => "not the leader; no leader is elected yet".to_string(),
    });
    if let Some(n) = leader
        && let Ok(v) = n.addr.parse()
    {
        s.metadata_mut().insert(shoal_proto::LEADER_KEY, v);
    }
    s
}

impl Node {
    /// This node's handles, and the tasks that batch its proposals and its
    /// read rounds; reads are served under a leader lease if `read_lease`.
    pub fn new(raft: Raft<TypeConfig>, state: SharedState, registry: Arc<Registry>, read_lease: bool) -> Node {
        let proposer = Proposer::start(raft.clone());
        let lease = if read_lease { lease_for(raft.config().election_timeout_min) } else { Duration::ZERO };
        let reads = ReadRounds::start(raft.clone(), lease);
        Node { raft, state, registry, proposer, reads }
    }

    /// The gate for the vote requests this node receives: shut while this
    /// node holds a read lease (see [`crate::read_rounds`]).
    pub fn vote_gate(&self) -> VoteGate {
        self.reads.vote_gate()
    }

    /// Proposes a command on behalf of `request` (batched with whatever else
    /// is waiting: see [`crate::group_commit`]) and waits until it is
    /// applied. Counts it in `shoal_meta_proposals_total` and times a
    /// committed one.
    pub async fn write(&self, cmd: impl Into<Command>, request: Option<RequestId>) -> Result<Response, Status> {
        let started = Instant::now();
        let (result, outcome) = match self.proposer.propose(cmd.into(), request).await {
            Ok(r) => (Ok(r), "ok"),
            Err(Unapplied::NotLeader(leader)) => (Err(not_leader(leader)), "not_leader"),
            Err(Unapplied::Failed(e)) => (Err(Status::unavailable(format!("meta cannot commit now: {e}"))), "failed"),
        };
        metrics::counter!(metric_names::PROPOSALS_TOTAL, "result" => outcome).increment(1);
        if result.is_ok() {
            metrics::histogram!(metric_names::PROPOSAL_SECONDS).record(started.elapsed().as_secs_f64());
        }
        result
    }

    /// Waits until this node may serve a linearizable read: at once under
    /// its leader lease, otherwise after a read-index round shared with the
    /// reads around it (see [`crate::read_rounds`]).
    pub async fn linearizable(&self) -> Result<(), Status> {
        match self.reads.wait().await {
            Ok(()) => Ok(()),
            Err(Unapplied::NotLeader(leader)) => Err(not_leader(leader)),
            Err(Unapplied::Failed(e)) => Err(Status::unavailable(format!("meta cannot serve a read now: {e}"))),
        }
    }

    /// Waits until this node's state holds every change acknowledged before
    /// (to plan a proposal from it): at once on a leader that has applied
    /// an entry of its own term, else after a read round. Answers whether a
    /// round confirmed the state.
    pub async fn caught_up(&self) -> Result<bool, Status> {
        if self.caught_up_as_leader() {
            return Ok(false);
        }
        self.linearizable().await?;
        Ok(true)
    }

    /// Whether this node leads and has applied an entry of its own term, so
    /// its state holds everything committed under earlier leaders.
    pub fn caught_up_as_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
    }

    /// Fails with a not-leader status unless this node believes it leads.
    pub fn leader_only(&self) -> Result<(), Status> {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            return Ok(());
        }
        let node = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
        Err(not_leader(node))
    }

    /// What planning knows of every registered chunk server at `now`:
    /// draining from the state, liveness and usage from the registry (only
    /// meaningful on the leader).
    pub fn server_views(&self, now: Instant) -> Vec<ServerView> {
        let s = self.state.read();
        s.fs.nodes
            .values()
            .map(|n| {
                let beat = self.registry.last_beat(n.id);
                ServerView {
                    id: n.id,
                    alive: self.registry.liveness(n.id, now) == Liveness::Alive,
                    draining: n.draining,
                    capacity_bytes: beat.map_or(0, |b| b.capacity_bytes),
                    used_bytes: beat.map_or(0, |b| b.used_bytes),
                    chunk_count: self.registry.chunk_count(n.id),
                }
            })
            .collect()
    }
}
