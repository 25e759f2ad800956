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
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, ServerState};
use tonic::Status;

use crate::TypeConfig;
use crate::fsm::{Command, Proposal, RequestId, Response};
use crate::health::ServerView;
use crate::metric_names;
use crate::registry::{Liveness, Registry};
use crate::sm_store::SharedState;

/// See the module docs.
#[derive(Clone)]
pub struct Node {
    pub raft: Raft<TypeConfig>,
    pub state: SharedState,
    pub registry: Arc<Registry>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
    /// Proposes a command on behalf of `request` and waits until it is applied.
    /// Counts it in `shoal_meta_proposals_total` and times a committed one.
    pub async fn write(&self, cmd: impl Into<Command>, request: Option<RequestId>) -> Result<Response, Status> {
        let proposal = Proposal::new(now_ms(), request, cmd);
        let started = Instant::now();
        let (result, outcome) = match self.raft.client_write(proposal).await {
            Ok(r) => (Ok(r.data), "ok"),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                (Err(not_leader(f.leader_node)), "not_leader")
            }
            Err(e) => (Err(Status::unavailable(format!("meta cannot commit now: {e}"))), "failed"),
        };
        metrics::counter!(metric_names::PROPOSALS_TOTAL, "result" => outcome).increment(1);
        if result.is_ok() {
            metrics::histogram!(metric_names::PROPOSAL_SECONDS).record(started.elapsed().as_secs_f64());
        }
        result
    }

    /// Waits until this node may serve a linearizable read.
    pub async fn linearizable(&self) -> Result<(), Status> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(not_leader(f.leader_node)),
            Err(e) => Err(Status::unavailable(format!("meta cannot serve a read now: {e}"))),
        }
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
