//! The scrubber: re-verifies the checksum of every block of every replica,
//! in the background, at a bounded rate.
//!
//! A pass walks the replicas in id order and verifies each one in pieces of
//! [`PIECE_BLOCKS`] blocks, each under the replica's read lock (writers wait
//! for one piece at most), pacing itself so that it reads at most
//! `rate_bytes_per_s` on average. A replica that fails is put in the store's
//! corrupt set, which the heartbeat reports to meta until meta has the
//! replica deleted. Passes start at most every `pass_every`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_core::checksum::BLOCK_SIZE_BYTES;

use crate::metric_names;
use crate::store::{ChunkStore, StoreError};

/// Blocks verified under one hold of a replica's read lock (1 MiB).
const PIECE_BLOCKS: u64 = 16;

#[derive(Debug, Clone, Copy)]
pub struct ScrubSettings {
    /// Bytes verified per second, on average; 0 turns the scrubber off.
    pub rate_bytes_per_s: u64,
    /// Shortest time between the starts of two passes.
    pub pass_every: Duration,
}

/// Runs the scrubber until the process ends.
pub async fn run(store: Arc<ChunkStore>, settings: ScrubSettings) {
    if settings.rate_bytes_per_s == 0 {
        tracing::info!("scrubber off");
        return;
    }
    loop {
        let started = Instant::now();
        let (bytes, replicas) = pass(&store, settings.rate_bytes_per_s).await;
        tracing::debug!(bytes, replicas, ms = started.elapsed().as_millis() as u64, "scrub pass done");
        metrics::counter!(metric_names::SCRUB_PASSES_TOTAL).increment(1);
        tokio::time::sleep_until((started + settings.pass_every).into()).await;
    }
}

/// One pass over every replica; returns the bytes verified and the replicas visited.
async fn pass(store: &ChunkStore, rate_bytes_per_s: u64) -> (u64, usize) {
    let started = Instant::now();
    let mut bytes = 0u64;
    let replicas = store.list();
    let progress = metrics::gauge!(metric_names::SCRUB_PASS_PROGRESS_RATIO);
    let verified = metrics::counter!(metric_names::SCRUB_VERIFIED_BYTES_TOTAL);
    for (visited, (id, _)) in replicas.iter().enumerate() {
        progress.set(visited as f64 / replicas.len() as f64);
        let mut block = 0;
        loop {
            match store.scrub(*id, block, PIECE_BLOCKS).await {
                Ok(next) => {
                    bytes += PIECE_BLOCKS * BLOCK_SIZE_BYTES;
                    verified.increment(PIECE_BLOCKS * BLOCK_SIZE_BYTES);
                    let due = started + Duration::from_secs_f64(bytes as f64 / rate_bytes_per_s as f64);
                    tokio::time::sleep_until(due.into()).await;
                    match next {
                        Some(n) => block = n,
                        None => break,
                    }
                }
                // Deleted meanwhile.
                Err(StoreError::NotFound { .. }) => break,
                // Recorded by the store; the next pass looks again.
                Err(StoreError::Corrupt { .. }) => break,
                Err(e) => {
                    tracing::warn!(chunk_id = id, "scrub read failed: {e}");
                    break;
                }
            }
        }
    }
    progress.set(1.0);
    (bytes, replicas.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[tokio::test]
    async fn a_pass_finds_a_flipped_byte_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap());
        for id in [1, 2] {
            let mut w = store.begin_write(id, 1, 0).await.unwrap();
            w.write_at(0, Bytes::from(vec![id as u8; 3_000_000])).await.unwrap();
            w.finish(None, false).await.unwrap();
        }
        assert_eq!(pass(&store, 1 << 40).await.1, 2);
        assert!(store.corrupt_ids().is_empty());
        let path = store.chunk_dir().join(format!("{:016x}.data", 2));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[2_500_000] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        pass(&store, 1 << 40).await;
        assert_eq!(store.corrupt_ids(), vec![2]);
        store.delete(2).await.unwrap();
        assert!(store.corrupt_ids().is_empty(), "a deleted replica is no longer reported");
    }
}
