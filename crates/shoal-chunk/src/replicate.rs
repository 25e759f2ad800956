//! Re-replication on the target: pull one committed version of a chunk
//! from a source replica and install it here.
//!
//! 1. Ask a source for the whole chunk at exactly the committed version
//!    (the ordinary `Read`: the source verifies its blocks, and lays undo
//!    records over a newer, uncommitted version).
//! 2. Check every piece against the checksum the source sent with it
//!    (damage in transit), and write it into an install session, which
//!    replaced any unlisted copy this server had.
//! 3. Sync, and compare the checksums of the blocks on disk with those of
//!    the bytes received; only then does the replica get its meta (durable),
//!    and the call answer. Any failure removes the partial copy, and the next
//!    source is tried.
//!
//! Meta lists the copy only after this call answers, and only if the chunk
//! did not change meanwhile.

use shoal_core::checksum::{BLOCK_SIZE_BYTES, crc32c};
use shoal_proto::chunk::chunk_client::ChunkClient;
use shoal_proto::chunk::{ReadRequest, ReplicateReply, ReplicateRequest};
use tonic::Status;

use crate::metric_names;
use crate::service::{ChunkService, store_status};

/// Checksums of a byte stream cut into blocks, as it arrives.
#[derive(Default)]
struct BlockCrcs {
    crcs: Vec<u32>,
    partial: Vec<u8>,
}

impl BlockCrcs {
    fn push(&mut self, mut data: &[u8]) {
        let block = BLOCK_SIZE_BYTES as usize;
        while !data.is_empty() {
            let take = (block - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == block {
                self.crcs.push(crc32c(&self.partial));
                self.partial.clear();
            }
        }
    }

    fn finish(mut self) -> Vec<u32> {
        if !self.partial.is_empty() {
            self.crcs.push(crc32c(&self.partial));
        }
        self.crcs
    }
}

pub async fn replicate(svc: &ChunkService, r: ReplicateRequest) -> Result<ReplicateReply, Status> {
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    for source in r.sources.iter().filter(|s| **s != svc.self_addr) {
        match copy_from(svc, source, r.chunk_id, r.version).await {
            Ok(length) => {
                tracing::info!(chunk_id = r.chunk_id, version = r.version, length, %source, "replica installed");
                metrics::counter!(metric_names::COPIES_TOTAL, "result" => "ok").increment(1);
                metrics::counter!(metric_names::COPY_BYTES_TOTAL).increment(length);
                metrics::histogram!(metric_names::COPY_SECONDS).record(started.elapsed().as_secs_f64());
                return Ok(ReplicateReply { length, source: source.clone() });
            }
            Err(s) => {
                tracing::warn!(chunk_id = r.chunk_id, %source, "copy failed: {}", s.message());
                failures.push(format!("{source}: {}", s.message()));
            }
        }
    }
    metrics::counter!(metric_names::COPIES_TOTAL, "result" => "failed").increment(1);
    Err(Status::unavailable(format!(
        "chunk {} version {}: no source could be copied ({})",
        r.chunk_id,
        r.version,
        failures.join("; ")
    )))
}

/// Copies the chunk from `source`; returns the bytes copied.
async fn copy_from(svc: &ChunkService, source: &str, id: u64, version: u64) -> Result<u64, Status> {
    let channel = svc.pool.get(source).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut client = ChunkClient::new(channel).max_decoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES);
    // A node reads without a capability (the source knows us by our certificate).
    let req = ReadRequest { chunk_id: id, offset: 0, length: u64::MAX, version, capability: None };
    let mut stream = client.read(req).await?.into_inner();
    let mut session = svc.store.begin_install(id, version).await.map_err(|e| store_status(&e))?;
    let mut crcs = BlockCrcs::default();
    let mut at = 0u64;
    let received: Result<(), Status> = async {
        while let Some(piece) = stream.message().await? {
            if piece.crc32c.is_some_and(|c| c != crc32c(&piece.data)) {
                return Err(Status::data_loss(format!("a piece at offset {at} was damaged in transit")));
            }
            crcs.push(&piece.data);
            let len = piece.data.len() as u64;
            session.write_at(at, piece.data).await.map_err(|e| store_status(&e))?;
            at += len;
        }
        Ok(())
    }
    .await;
    if let Err(s) = received {
        session.finish(None, true).await.map_err(|e| store_status(&e))?;
        return Err(s);
    }
    session.finish_install(crcs.finish()).await.map_err(|e| store_status(&e))?;
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_crcs_do_not_depend_on_how_the_bytes_arrive() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = BlockCrcs::default();
        whole.push(&data);
        let mut bits = BlockCrcs::default();
        for piece in data.chunks(10_007) {
            bits.push(piece);
        }
        let want = shoal_core::checksum::block_crcs(&data);
        assert_eq!(whole.finish(), want);
        assert_eq!(bits.finish(), want);
    }
}
