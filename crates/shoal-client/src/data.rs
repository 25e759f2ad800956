//! The data path: pipelined chunk writes and verified chunk reads.
//!
//! A write streams one header and the data, in pieces of at most
//! [`PIECE_BYTES`], to the first replica, which forwards to the rest. The call
//! returns once every replica has made the data durable. A failed chain names
//! the replica at fault (`shoal-failed-replica`), or, when the first replica
//! could not be reached at all, the fault is the first replica's.
//!
//! A read asks one replica for a range; the replica verifies block checksums
//! before sending, and sends a checksum of every piece, checked here. Callers
//! try the replicas in turn.

use bytes::Bytes;
use futures::StreamExt;
use shoal_proto::chunk::chunk_client::ChunkClient;
use shoal_proto::chunk::{ReadRequest, WriteHeader, WriteMessage};
use tonic::Status;

use crate::ClientError;
use crate::pool::ChannelPool;

/// Largest data piece in one write or read message.
pub const PIECE_BYTES: usize = 1024 * 1024;

/// Why a chain write failed, and whose fault it was.
#[derive(Debug)]
pub struct ChainError {
    pub failed_replica: String,
    pub status: Status,
}

/// Writes `data` as `header` says (chunk, version, base, offset, truncation)
/// through `replicas` in order; the header's `downstream` is filled in here.
pub async fn write_chain(
    pool: &ChannelPool,
    replicas: &[String],
    header: WriteHeader,
    data: Bytes,
) -> Result<(), ChainError> {
    let (first, rest) = replicas.split_first().expect("a chain has at least one replica");
    let fault = |status: Status| {
        let named =
            status.metadata().get(shoal_proto::FAILED_REPLICA_KEY).and_then(|v| v.to_str().ok()).map(str::to_string);
        ChainError { failed_replica: named.unwrap_or_else(|| first.clone()), status }
    };
    let channel = pool.get(first).map_err(|e| fault(Status::invalid_argument(e.to_string())))?;
    let mut client = ChunkClient::new(channel)
        .max_decoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES)
        .max_encoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES);
    let header = WriteHeader { downstream: rest.to_vec(), ..header };
    let mut pieces: Vec<Bytes> = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let end = (at + PIECE_BYTES).min(data.len());
        pieces.push(data.slice(at..end));
        at = end;
    }
    let mut messages = Vec::with_capacity(pieces.len().max(1));
    let mut header = Some(header);
    if pieces.is_empty() {
        messages.push(WriteMessage { header: header.take(), data: Bytes::new() });
    }
    for p in pieces {
        messages.push(WriteMessage { header: header.take(), data: p });
    }
    client.write(futures::stream::iter(messages)).await.map_err(fault)?;
    Ok(())
}

/// Reads `[offset, offset + len)` of committed `version` of a chunk from one
/// replica. The answer may be shorter when the chunk holds fewer bytes (the
/// rest reads as zeros).
pub async fn read_replica(
    pool: &ChannelPool,
    replica: &str,
    chunk_id: u64,
    offset: u64,
    len: u64,
    version: u64,
) -> Result<Vec<u8>, ClientError> {
    let channel = pool.get(replica)?;
    let mut client = ChunkClient::new(channel).max_decoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES);
    let req = ReadRequest { chunk_id, offset, length: len, version };
    let mut stream = client.read(req).await.map_err(|s| ClientError::from_status(&s))?.into_inner();
    let mut out = Vec::with_capacity(len.min(64 << 20) as usize);
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|s| ClientError::from_status(&s))?;
        if msg.crc32c.is_some_and(|c| c != shoal_core::checksum::crc32c(&msg.data)) {
            // Damaged on the way, not on the replica's disk: just try another.
            return Err(ClientError::Rpc {
                code: tonic::Code::Unavailable,
                message: format!("data from {replica} was damaged in transit"),
            });
        }
        out.extend_from_slice(&msg.data);
    }
    if out.len() as u64 > len {
        return Err(ClientError::Rpc {
            code: tonic::Code::Internal,
            message: format!("replica {replica} sent more than asked"),
        });
    }
    Ok(out)
}
