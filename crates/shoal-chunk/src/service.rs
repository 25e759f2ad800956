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
//!    A stream that breaks off is rolled back locally (see `store`).
//! 4. Ack only if both the local write and everything downstream succeeded.
//!    On failure, the status names the replica at fault in
//!    `shoal-failed-replica` so the client can route around it.
//!
//! A write that carries a fencing token older than one already seen for the
//! chunk is refused (`PERMISSION_DENIED`) before anything is written.
//!
//! Writes and copies run in their own tasks: when the caller goes away (its
//! call is cancelled), the session still ends through its own `finish`
//! (rolled back). A session dropped anyway is rolled back by its `Drop`.

use std::sync::Arc;

use bytes::Bytes;
use shoal_client::pool::ChannelPool;
use shoal_proto::chunk::chunk_client::ChunkClient;
use shoal_proto::chunk::chunk_server::Chunk;
use shoal_proto::chunk::{
    ChunkErrorKind, ReadReply, ReadRequest, ReplicateReply, ReplicateRequest, WriteHeader, WriteMessage, WriteReply,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
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

    /// One chain write, from its request stream to the ack (see the module doc).
    async fn write_stream(&self, mut stream: Streaming<WriteMessage>) -> Result<Response<WriteReply>, Status> {
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("empty write stream"))?;
        let header = first
            .header
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first write message must carry a header"))?;
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
            match stream.message().await {
                Ok(Some(m)) => data = m.data,
                Ok(None) => break,
                Err(s) => {
                    failure = Some(Status::cancelled(format!("upstream broke off: {}", s.message())));
                    break;
                }
            }
        }
        let local = session.finish(header.truncate_to, failure.is_some()).await;
        let remote = match downstream.take() {
            Some((_, tx, task)) => {
                drop(tx);
                match task.await {
                    Ok(r) => r,
                    Err(e) => Err(Status::internal(format!("forwarding task failed: {e}"))),
                }
            }
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
        let svc = self.clone();
        let task = tokio::spawn(async move { svc.write_stream(req.into_inner()).await });
        task.await.map_err(|e| Status::internal(format!("write task failed: {e}")))?
    }

    type ReadStream = ReceiverStream<Result<ReadReply, Status>>;

    async fn read(&self, req: Request<ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let r = req.into_inner();
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

    async fn replicate(&self, req: Request<ReplicateRequest>) -> Result<Response<ReplicateReply>, Status> {
        let svc = self.clone();
        let task = tokio::spawn(async move { crate::replicate::replicate(&svc, req.into_inner()).await });
        task.await.map_err(|e| Status::internal(format!("copy task failed: {e}")))?.map(Response::new)
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
        // Blaming a replica keeps the kind.
        let blamed = blame(store_status(&StoreError::Fenced { chunk_id: 1, token: 1, newest: 2 }), "h:1");
        assert_eq!(ChunkErrorKind::of(&blamed), Some(ChunkErrorKind::Fenced));
    }
}
