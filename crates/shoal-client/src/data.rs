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
//!
//! Every failure carries a [`ChunkErrorKind`]: what the chunk server said in
//! `shoal-chunk-error`, which the caller's retry policy ([`crate::retry`])
//! decides on.

use bytes::Bytes;
use futures::StreamExt;
use shoal_proto::chunk::chunk_client::ChunkClient;
use shoal_proto::chunk::{Capability, ChunkErrorKind, ReadRequest, WriteHeader, WriteMessage};
use tonic::{Code, Status};

use crate::ClientError;
use crate::pool::ChannelPool;

/// Largest data piece in one write or read message.
pub const PIECE_BYTES: usize = 1024 * 1024;

/// Why a chain write failed, and whose fault it was.
#[derive(Debug)]
pub struct ChainError {
    pub failed_replica: String,
    /// What the failed replica said; `Unspecified` if it said nothing typed.
    pub kind: ChunkErrorKind,
    pub status: Status,
}

/// The kind of a chunk server's failure. A server marks its refusals in
/// `shoal-chunk-error`; a status without the mark came from the network, or
/// from a server older than the mark, whose status codes meant (only) this.
pub fn error_kind(status: &Status) -> ChunkErrorKind {
    if let Some(kind) = ChunkErrorKind::of(status) {
        return kind;
    }
    match status.code() {
        // Older servers said DATA_LOSS for a corrupt replica and for one that
        // missed a write; only reads (where it means corrupt) tell them apart.
        Code::DataLoss => ChunkErrorKind::Corrupt,
        Code::Aborted => ChunkErrorKind::Moved,
        Code::FailedPrecondition => ChunkErrorKind::NewerVersion,
        Code::PermissionDenied => ChunkErrorKind::Fenced,
        _ => ChunkErrorKind::Unspecified,
    }
}

/// Writes `data` as `header` says (chunk, version, base, offset, truncation,
/// and meta's capability to write that version) through `replicas` in
/// order; the header's `downstream` is filled in here.
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
        ChainError { failed_replica: named.unwrap_or_else(|| first.clone()), kind: error_kind(&status), status }
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
/// replica, with meta's `capability` to read it. The answer may be shorter
/// when the chunk holds fewer bytes (the rest reads as zeros).
pub async fn read_replica(
    pool: &ChannelPool,
    replica: &str,
    chunk_id: u64,
    offset: u64,
    len: u64,
    version: u64,
    capability: Option<Capability>,
) -> Result<Vec<u8>, ClientError> {
    let channel = pool.get(replica)?;
    let mut client = ChunkClient::new(channel).max_decoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES);
    let req = ReadRequest { chunk_id, offset, length: len, version, capability };
    let failed = |s: Status| ClientError::from_chunk_status(replica, &s);
    // Not the replica's own verdict: just try another.
    let untyped = |message: &str| ClientError::Replica {
        replica: replica.to_string(),
        kind: ChunkErrorKind::Unspecified,
        message: message.to_string(),
    };
    let mut stream = client.read(req).await.map_err(failed)?.into_inner();
    let mut out = Vec::with_capacity(len.min(64 << 20) as usize);
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(failed)?;
        if msg.crc32c.is_some_and(|c| c != shoal_core::checksum::crc32c(&msg.data)) {
            // Damaged on the way, not on the replica's disk.
            return Err(untyped("the data was damaged in transit"));
        }
        out.extend_from_slice(&msg.data);
    }
    if out.len() as u64 > len {
        return Err(untyped("the replica sent more than asked"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typed_kind_wins_over_the_code() {
        let mut s = Status::data_loss("behind");
        ChunkErrorKind::MissingBase.attach(&mut s);
        assert_eq!(error_kind(&s), ChunkErrorKind::MissingBase);
        // Without a mark: the network, or an older server.
        assert_eq!(error_kind(&Status::data_loss("bad block")), ChunkErrorKind::Corrupt);
        assert_eq!(error_kind(&Status::aborted("moved")), ChunkErrorKind::Moved);
        assert_eq!(error_kind(&Status::unavailable("connection refused")), ChunkErrorKind::Unspecified);
    }
}
