//! Raft traffic between meta nodes over gRPC.
//!
//! Both directions live here: [`NetworkFactory`] is openraft's outgoing side
//! (one lazily connected channel per peer address from a
//! [`ChannelPool`], shared by every client openraft asks for: openraft makes
//! a fresh one for each read-index round, which must not cost a new TCP
//! connection), and [`RaftService`] receives the
//! calls and hands them to the local `Raft`. Payloads are openraft's own types
//! as JSON; the response is the JSON of `Result<Response, RaftError>`, so a
//! remote Raft error reaches openraft as a `RemoteError` and a transport
//! failure as `Unreachable` (which makes openraft back off).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{AnyError, BasicNode, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_proto::pool::ChannelPool;
use shoal_proto::raft::RaftPayload;
use shoal_proto::raft::raft_client::RaftClient;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::TypeConfig;
use crate::read_rounds::VoteGate;

/// How long to wait for a TCP connection to a peer.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct NetworkFactory {
    channels: Arc<ChannelPool>,
}

impl NetworkFactory {
    /// Peers are reached through `transport` (mutual TLS, or plaintext).
    pub fn new(transport: shoal_proto::Transport) -> Self {
        NetworkFactory { channels: Arc::new(ChannelPool::new(PEER_CONNECT_TIMEOUT, transport)) }
    }
}

pub struct PeerConnection {
    target: u64,
    client: Option<RaftClient<Channel>>,
    addr: String,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerConnection {
        let client = self.channels.get(&node.addr).ok().map(|ch| {
            RaftClient::new(ch)
                .max_decoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES * 4)
                .max_encoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES * 4)
        });
        PeerConnection { target, client, addr: node.addr.clone() }
    }
}

type RpcResult<T, E> = Result<T, RPCError<u64, BasicNode, E>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, RaftError<u64, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        RaftError<u64, E>: DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            let e = std::io::Error::other(format!("bad peer address {:?}", self.addr));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let json = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = Request::new(RaftPayload { json });
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            RpcKind::Append => client.append_entries(request).await,
            RpcKind::Vote => client.vote(request).await,
            RpcKind::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|s| status_to_rpc_error(&s))?;
        let result: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&reply.into_inner().json).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum RpcKind {
    Append,
    Vote,
    Snapshot,
}

fn status_to_rpc_error<E: std::error::Error>(s: &Status) -> RPCError<u64, BasicNode, E> {
    let err = AnyError::error(format!("{}: {}", s.code(), s.message()));
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => RPCError::Unreachable(Unreachable::new(&err)),
        _ => RPCError::Network(NetworkError::new(&err)),
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.call(RpcKind::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.call(RpcKind::Snapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> RpcResult<VoteResponse<u64>, RaftError<u64>> {
        self.call(RpcKind::Vote, &rpc, &option).await
    }

    /// How long replication to a peer pauses after it was unreachable:
    /// [`unreachable_backoff`].
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(unreachable_backoff())
    }
}

/// The pauses of replication to a peer that stays unreachable: 100 ms, then
/// doubling up to 1 s. openraft's default is 500 ms every time: a follower
/// cut off by one broken connection (a reset, a GOAWAY) then heard nothing
/// for half a second, about what a follower waits before it stands (its
/// election timeout after the leader's lease). A dead peer still sees one
/// connection attempt a second, not ten.
pub fn unreachable_backoff() -> impl Iterator<Item = std::time::Duration> + Send + 'static {
    let first = std::time::Duration::from_millis(100);
    (0u32..).map(move |i| (first * 2u32.pow(i.min(4))).min(std::time::Duration::from_secs(1)))
}

/// Receives Raft calls from peers.
pub struct RaftService {
    pub raft: Raft<TypeConfig>,
    /// Whether a vote request may reach Raft now (see [`crate::read_rounds`]).
    pub votes: VoteGate,
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().json)
        .map_err(|e| Status::invalid_argument(format!("undecodable raft payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<tonic::Response<RaftPayload>, Status> {
    let json = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(RaftPayload { json }))
}

#[tonic::async_trait]
impl shoal_proto::raft::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<tonic::Response<RaftPayload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<tonic::Response<RaftPayload>, Status> {
        let rpc: VoteRequest<u64> = decode(req)?;
        let Some(_deciding) = self.votes.admit(std::time::Instant::now()) else {
            return Err(Status::failed_precondition("this node leads under a read lease and does not vote"));
        };
        encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<tonic::Response<RaftPayload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(req)?;
        encode(&self.raft.install_snapshot(rpc).await)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_pause_after_an_unreachable_peer_doubles_to_a_second() {
        let ms: Vec<u128> = unreachable_backoff().take(7).map(|d: Duration| d.as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000, 1000, 1000]);
    }
}
