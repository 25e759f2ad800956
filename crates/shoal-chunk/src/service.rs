//! The chunk service: pipelined writes and verified ranged reads over gRPC,
//! and `Replicate`, meta's request to copy a replica here (see
//! [`crate::replicate`]). Every read piece carries the CRC32C of its bytes.
//!
//! # Chain write, as seen by one replica
//! 1. Read the header; if there are replicas downstream, open a write stream
//!    to the next one with the rest of the chain.
//! 2. For every data message: forward it downstream, then write it locally.
//! 3. At the end of the stream: close the downstream stream, make the local
//!    write durable (fsync, checksums, meta), and wait for downstream's ack.
//!    Closing first lets every replica of the chain sync at once. A stream
//!    that breaks off is rolled back locally (see `store`) before the
//!    downstream stream is closed.
//! 4. Ack only if both the local write and everything downstream succeeded.
//!    On failure, the status names the replica at fault in
//!    `shoal-failed-replica` so the client can route around it.
//!
//! A write that carries a fencing token older than one already seen for the
//! chunk is refused (`PERMISSION_DENIED`) before anything is written.
//!
//! # Capabilities
//! On a TLS server, a `Write` or `Read` from a client (an admin or user
//! identity) must carry meta's capability for exactly that chunk, version
//! and mode, given to the caller's own identity and not expired (see
//! `shoal_proto::capability`). Otherwise it is refused with
//! `PERMISSION_DENIED` and the kind `CAPABILITY_EXPIRED` or `NO_CAPABILITY`,
//! before anything is read, written or forwarded. Node identities (a replica
//! forwarding a chain, a repair copy reading its source) need none. An
//! `--insecure` server checks nothing.
//!
//! Writes and copies run in their own tasks: when the caller goes away (its
//! call is cancelled), the session still ends through its own `finish`
//! (rolled back). A session dropped anyway is rolled back by its `Drop`.

use std::sync::Arc;

use bytes::Bytes;
use shoal_client::pool::ChannelPool;
use shoal_proto::capability::{self, Ask, CapabilityKey, Mode, Refusal};
use shoal_proto::chunk::chunk_client::ChunkClient;
use shoal_proto::chunk::chunk_server::Chunk;
use shoal_proto::chunk::{
    Capability, ChunkErrorKind, ReadReply, ReadRequest, ReplicateReply, ReplicateRequest, WriteHeader, WriteMessage,
    WriteReply,
};
use shoal_tls::Role;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::store::{ChunkStore, StoreError};

/// Messages buffered toward the next replica before the upstream is slowed.
const FORWARD_QUEUE_MAX: usize = 8;
/// Largest piece of a read answer.
const READ_PIECE_BYTES: u64 = 1024 * 1024;
/// Read answers buffered ahead of the network.
const READ_QUEUE_MAX: usize = 4;

#[derive(Clone)]
pub struct ChunkService {
    pub store: Arc<ChunkStore>,
    pub pool: Arc<ChannelPool>,
    /// This server's address as meta and the other replicas know it.
    pub self_addr: String,
    /// Checks chunk capabilities; None on an `--insecure` server.
    pub capabilities: Option<CapabilityKey>,
}

/// Whose capability a call must carry (an identity URI): None when none is
/// needed.
pub type Holder = Option<String>;

/// The `PERMISSION_DENIED` answer to a refused capability.
fn refusal_status(refusal: &Refusal, chunk_id: u64) -> Status {
    let mut status = Status::permission_denied(format!("chunk {chunk_id}: {refusal}"));
    let kind = if refusal.is_expired() { ChunkErrorKind::CapabilityExpired } else { ChunkErrorKind::NoCapability };
    kind.attach(&mut status);
    status
}

/// The gRPC status for a store error: the typed kind in `shoal-chunk-error`
/// (what clients decide on), and the status code older clients knew.
pub fn store_status(e: &StoreError) -> Status {
    let mut status = match e {
        StoreError::NotFound { .. } => Status::not_found(e.to_string()),
        StoreError::Stale { .. } | StoreError::OldVersion { .. } => Status::failed_precondition(e.to_string()),
        StoreError::Moved { .. } => Status::aborted(e.to_string()),
        // The replica is behind: the client routes the write around it.
        StoreError::MissingBase { .. } => Status::data_loss(e.to_string()),
        StoreError::Fenced { .. } => Status::permission_denied(e.to_string()),
        StoreError::Corrupt { .. } => Status::data_loss(e.to_string()),
        StoreError::NoSpace { .. } | StoreError::DiskFull(_) => Status::resource_exhausted(e.to_string()),
        StoreError::TooLarge { .. } | StoreError::BadVersion { .. } => Status::invalid_argument(e.to_string()),
        StoreError::Io(_) | StoreError::NewerFormat { .. } => Status::internal(e.to_string()),
    };
    error_kind(e).attach(&mut status);
    status
}

/// What a store error means to the other side.
pub fn error_kind(e: &StoreError) -> ChunkErrorKind {
    match e {
        StoreError::NotFound { .. } => ChunkErrorKind::NotFound,
        StoreError::Stale { .. } => ChunkErrorKind::Stale,
        StoreError::OldVersion { .. } => ChunkErrorKind::NewerVersion,
        StoreError::Moved { .. } => ChunkErrorKind::Moved,
        StoreError::MissingBase { .. } => ChunkErrorKind::MissingBase,
        StoreError::Fenced { .. } => ChunkErrorKind::Fenced,
        StoreError::Corrupt { .. } => ChunkErrorKind::Corrupt,
        StoreError::NoSpace { .. } | StoreError::DiskFull(_) => ChunkErrorKind::NoSpace,
        StoreError::TooLarge { .. } | StoreError::BadVersion { .. } => ChunkErrorKind::BadRequest,
        StoreError::Io(_) | StoreError::NewerFormat { .. } => ChunkErrorKind::Io,
    }
}

/// A status that blames `replica` for a failed chain.
fn blame(mut s: Status, replica: &str) -> Status {
    if !s.metadata().contains_key(shoal_proto::FAILED_REPLICA_KEY)
        && let Ok(v) = replica.parse()
    {
        s.metadata_mut().insert(shoal_proto::FAILED_REPLICA_KEY, v);
    }
    s
}

type Downstream = (String, mpsc::Sender<WriteMessage>, tokio::task::JoinHandle<Result<(), Status>>);

impl ChunkService {
    /// Who must hold a capability for `req` (see the module docs): nobody on
    /// an insecure server or for a node, else the TLS peer.
    fn holder<T>(&self, req: &Request<T>) -> Result<Holder, Status> {
        if self.capabilities.is_none() {
            return Ok(None);
        }
        match shoal_proto::authz::peer_identity(req) {
            Ok(who) if who.role == Role::Node => Ok(None),
            Ok(who) => Ok(Some(who.uri())),
            Err(why) => Err(Status::permission_denied(format!("{why}: a chunk capability needs an identity"))),
        }
    }

    /// Checks `cap` for `holder` to `mode` `version` of `chunk_id`.
    fn check_capability(
        &self,
        holder: &Holder,
        cap: Option<&Capability>,
        chunk_id: u64,
        version: u64,
        mode: Mode,
    ) -> Result<(), Status> {
        let (Some(key), Some(identity)) = (&self.capabilities, holder) else { return Ok(()) };
        let ask = Ask { chunk_id, version, identity, mode, now_ms: capability::now_ms() };
        match key.check(cap, &ask) {
            Ok(grant) => {
                debug_assert!(grant.chunk_id == chunk_id && grant.version == version && grant.mode == mode);
                Ok(())
            }
            Err(refusal) => {
                tracing::info!(chunk_id, version, %identity, ?mode, "refused: {refusal}");
                let mode = if mode == Mode::Read { "read" } else { "write" };
                let reason = if refusal.is_expired() { "expired" } else { "invalid" };
                metrics::counter!(crate::metric_names::CAPABILITY_REFUSALS_TOTAL, "mode" => mode, "reason" => reason)
                    .increment(1);
                Err(refusal_status(&refusal, chunk_id))
            }
        }
    }

    fn open_downstream(&self, header: &WriteHeader) -> Result<Option<Downstream>, Status> {
        let Some((next, rest)) = header.downstream.split_first() else { return Ok(None) };
        let channel = self.pool.get(next).map_err(|e| blame(Status::invalid_argument(e.to_string()), next))?;
        let mut client = ChunkClient::new(channel)
            .max_decoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES)
            .max_encoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES);
        let (tx, rx) = mpsc::channel(FORWARD_QUEUE_MAX);
        let first = WriteMessage {
            header: Some(WriteHeader { downstream: rest.to_vec(), ..header.clone() }),
            data: Bytes::new(),
        };
        tx.try_send(first).expect("fresh channel has room");
        let next_addr = next.clone();
        let task = tokio::spawn(async move {
            client.write(ReceiverStream::new(rx)).await.map(|_| ()).map_err(|s| blame(s, &next_addr))
        });
        Ok(Some((next.clone(), tx, task)))
    }

    /// One chain write, from its request stream to the ack (see the module
    /// doc), with `holder`'s capability checked. `Write` calls it with the
    /// call's stream; the fuzz targets with messages of their own.
    pub async fn write_stream<S>(&self, holder: Holder, mut stream: S) -> Result<Response<WriteReply>, Status>
    where
        S: Stream<Item = Result<WriteMessage, Status>> + Unpin,
    {
        let first = stream.next().await.transpose()?.ok_or_else(|| Status::invalid_argument("empty write stream"))?;
        let header = first
            .header
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first write message must carry a header"))?;
        // Before anything else: a refused write touches nothing, here or downstream.
        self.check_capability(&holder, header.capability.as_ref(), header.chunk_id, header.version, Mode::Write)?;
        let me = self.self_addr.as_str();
        if header.fence_token != 0 {
            self.store.admit_token(header.chunk_id, header.fence_token).map_err(|e| store_status(&e))?;
        }
        let mut downstream = self.open_downstream(&header)?;
        let mut session = self
            .store
            .begin_write(header.chunk_id, header.version, header.base_version)
            .await
            .map_err(|e| blame(store_status(&e), me))?;
        let mut at = header.offset;
        let mut data = first.data;
        let mut failure: Option<Status> = None;
        loop {
            if !data.is_empty() {
                if let Some((next, tx, _)) = &downstream
                    && tx.send(WriteMessage { header: None, data: data.clone() }).await.is_err()
                {
                    // The downstream call ended early; its own status says why.
                    failure = Some(blame(Status::unavailable(format!("replica {next} stopped taking data")), next));
                    break;
                }
                let len = data.len() as u64;
                if let Err(e) = session.write_at(at, data).await {
                    failure = Some(blame(store_status(&e), me));
                    break;
                }
                at = at.saturating_add(len);
            }
            match stream.next().await.transpose() {
                Ok(Some(m)) => data = m.data,
                Ok(None) => break,
                Err(s) => {
                    failure = Some(Status::cancelled(format!("upstream broke off: {}", s.message())));
                    break;
                }
            }
        }
        // All the data came: end the downstream stream now, so the next
        // replica makes the write durable while this one does, not after it.
        // (A failed write ends it only after its own rollback, as before.)
        let forwarded = match failure {
            None => downstream.take().map(|(_, tx, task)| {
                drop(tx);
                task
            }),
            Some(_) => None,
        };
        let local = session.finish(header.truncate_to, failure.is_some()).await;
        let forwarded = forwarded.or_else(|| {
            downstream.take().map(|(_, tx, task)| {
                drop(tx);
                task
            })
        });
        let remote = match forwarded {
            Some(task) => match task.await {
                Ok(r) => r,
                Err(e) => Err(Status::internal(format!("forwarding task failed: {e}"))),
            },
            None => Ok(()),
        };
        // Report the most specific fault: a downstream replica's own status first.
        remote?;
        if let Some(s) = failure {
            return Err(s);
        }
        let version = local.map_err(|e| blame(store_status(&e), me))?;
        Ok(Response::new(WriteReply { version }))
    }
}

#[tonic::async_trait]
impl Chunk for ChunkService {
    async fn write(&self, req: Request<Streaming<WriteMessage>>) -> Result<Response<WriteReply>, Status> {
        let holder = self.holder(&req)?;
        let svc = self.clone();
        let task = tokio::spawn(async move { svc.write_stream(holder, req.into_inner()).await });
        task.await.map_err(|e| Status::internal(format!("write task failed: {e}")))?
    }

    type ReadStream = ReceiverStream<Result<ReadReply, Status>>;

    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let holder = self.holder(&req)?;
        self.read_as(holder, req.into_inner()).await
    }

    async fn replicate(&self, req: Request<ReplicateRequest>) -> Result<Response<ReplicateReply>, Status> {
        let svc = self.clone();
        let task = tokio::spawn(async move { crate::replicate::replicate(&svc, req.into_inner()).await });
        task.await.map_err(|e| Status::internal(format!("copy task failed: {e}")))?.map(Response::new)
    }
}

impl ChunkService {
    /// A ranged read for `holder`, its capability checked. `Read` calls it
    /// with the call's peer; the fuzz targets with an identity of their own.
    pub async fn read_as(
        &self,
        holder: Holder,
        r: ReadRequest,
    ) -> Result<Response<ReceiverStream<Result<ReadReply, Status>>>, Status> {
        self.check_capability(&holder, r.capability.as_ref(), r.chunk_id, r.version, Mode::Read)?;
        let end = r.offset.saturating_add(r.length);
        // The first piece is read before answering, so a missing, stale or
        // corrupt replica fails the call itself.
        let first_len = r.length.min(READ_PIECE_BYTES);
        let first = self.store.read(r.chunk_id, r.offset, first_len, r.version).await.map_err(|e| store_status(&e))?;
        let (tx, rx) = mpsc::channel(READ_QUEUE_MAX);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut at = r.offset + first.len() as u64;
            let short = (first.len() as u64) < first_len;
            if tx.send(Ok(piece(first))).await.is_err() || short {
                return;
            }
            while at < end {
                let want = (end - at).min(READ_PIECE_BYTES);
                match store.read(r.chunk_id, at, want, r.version).await {
                    Ok(bytes) if bytes.is_empty() => return,
                    Ok(bytes) => {
                        at += bytes.len() as u64;
                        let short = (bytes.len() as u64) < want;
                        if tx.send(Ok(piece(bytes))).await.is_err() || short {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(store_status(&e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// One piece of a read answer, with the checksum of its bytes.
fn piece(data: Bytes) -> ReadReply {
    let crc32c = Some(shoal_core::checksum::crc32c(&data));
    ReadReply { data, crc32c }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: "corrupt" and "missing base" both crossed as a bare
    /// `DATA_LOSS`, so a client could not tell a damaged replica (report it)
    /// from one that missed a write (route around it).
    #[test]
    fn statuses_carry_the_typed_kind() {
        let corrupt = store_status(&StoreError::Corrupt { chunk_id: 1, block: 0 });
        let behind = store_status(&StoreError::MissingBase { chunk_id: 1, have: 1, base: 2 });
        assert_eq!(corrupt.code(), behind.code(), "the codes older clients know are unchanged");
        assert_eq!(ChunkErrorKind::of(&corrupt), Some(ChunkErrorKind::Corrupt));
        assert_eq!(ChunkErrorKind::of(&behind), Some(ChunkErrorKind::MissingBase));
        let full = store_status(&StoreError::NoSpace { need: 1, used: 1, capacity: 1 });
        assert_eq!(ChunkErrorKind::of(&full), Some(ChunkErrorKind::NoSpace));
        let newer = store_status(&StoreError::OldVersion { chunk_id: 1, got: 1, have: 2 });
        assert_eq!(ChunkErrorKind::of(&newer), Some(ChunkErrorKind::NewerVersion));
        // Capability refusals: only an expired one is worth asking meta again for.
        let expired = refusal_status(&Refusal::Expired { expires_at_ms: 1, now_ms: 2 }, 1);
        assert_eq!(expired.code(), tonic::Code::PermissionDenied);
        assert_eq!(ChunkErrorKind::of(&expired), Some(ChunkErrorKind::CapabilityExpired));
        let forged = refusal_status(&Refusal::BadTag, 1);
        assert_eq!(ChunkErrorKind::of(&forged), Some(ChunkErrorKind::NoCapability));
        // Blaming a replica keeps the kind.
        let blamed = blame(store_status(&StoreError::Fenced { chunk_id: 1, token: 1, newest: 2 }), "h:1");
        assert_eq!(ChunkErrorKind::of(&blamed), Some(ChunkErrorKind::Fenced));
    }
}
