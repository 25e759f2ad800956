//! Every metric a chunk server records, by name, and [`describe`], which
//! gives each its help text. The values are recorded through the `metrics`
//! facade where they happen: reads, writes, fsyncs and checksum failures in
//! `store`, copies in `replicate`, the scrubber's progress in `scrub`, and
//! the disk and replica gauges once per heartbeat in `server`. Nothing here
//! knows the recorder (see `shoal-metrics`); with none installed, recording
//! costs next to nothing. The gRPC calls a chunk server answers are counted
//! by `shoal_metrics::RpcLayer` (`shoal_rpc_*`).

use metrics::Unit;

pub const READ_BYTES_TOTAL: &str = "shoal_chunk_read_bytes_total";
pub const READ_SECONDS: &str = "shoal_chunk_read_seconds";
pub const WRITTEN_BYTES_TOTAL: &str = "shoal_chunk_written_bytes_total";
pub const WRITE_SECONDS: &str = "shoal_chunk_write_seconds";
pub const FSYNC_SECONDS: &str = "shoal_chunk_fsync_seconds";
pub const CHECKSUM_FAILURES_TOTAL: &str = "shoal_chunk_checksum_failures_total";
pub const CORRUPT_REPLICAS: &str = "shoal_chunk_corrupt_replicas";
pub const DISK_USED_BYTES: &str = "shoal_chunk_disk_used_bytes";
pub const DISK_FREE_BYTES: &str = "shoal_chunk_disk_free_bytes";
pub const DISK_CAPACITY_BYTES: &str = "shoal_chunk_disk_capacity_bytes";
pub const REPLICAS: &str = "shoal_chunk_replicas";
pub const SPARE_FILES: &str = "shoal_chunk_spare_files";
pub const SCRUB_VERIFIED_BYTES_TOTAL: &str = "shoal_chunk_scrub_verified_bytes_total";
pub const SCRUB_PASSES_TOTAL: &str = "shoal_chunk_scrub_passes_total";
pub const SCRUB_PASS_PROGRESS_RATIO: &str = "shoal_chunk_scrub_pass_progress_ratio";
pub const COPIES_TOTAL: &str = "shoal_chunk_copies_total";
pub const COPY_BYTES_TOTAL: &str = "shoal_chunk_copy_bytes_total";
pub const COPY_SECONDS: &str = "shoal_chunk_copy_seconds";
pub const HEARTBEATS_TOTAL: &str = "shoal_chunk_heartbeats_total";
pub const CAPABILITY_REFUSALS_TOTAL: &str = "shoal_chunk_capability_refusals_total";

/// Gives every metric above its help text and unit, and registers the ones
/// without labels, so a scrape lists them (at 0) before anything happened.
pub fn describe() {
    use metrics::{describe_counter as counter, describe_gauge as gauge, describe_histogram as histogram};
    counter!(READ_BYTES_TOTAL, Unit::Bytes, "Bytes read from replicas and verified (client reads and copies served).");
    histogram!(READ_SECONDS, Unit::Seconds, "Time of one verified read from disk (up to 1 MiB).");
    counter!(WRITTEN_BYTES_TOTAL, Unit::Bytes, "Bytes written to replicas (chain writes and copies).");
    histogram!(WRITE_SECONDS, Unit::Seconds, "Time of one write to disk (up to 1 MiB), saving the bytes it replaces.");
    histogram!(FSYNC_SECONDS, Unit::Seconds, "Time of the fsync of a replica's data at the end of a write or copy.");
    counter!(CHECKSUM_FAILURES_TOTAL, "Reads and scrub passes that found a block not matching its checksum.");
    gauge!(CORRUPT_REPLICAS, "Replicas here that failed their checksums and are not deleted yet.");
    gauge!(DISK_USED_BYTES, Unit::Bytes, "Bytes of replicas held here.");
    gauge!(DISK_FREE_BYTES, Unit::Bytes, "Bytes free on the file system holding the replicas.");
    gauge!(DISK_CAPACITY_BYTES, Unit::Bytes, "Bytes this server may hold (--capacity, or used plus free).");
    gauge!(REPLICAS, "Replicas held here.");
    gauge!(
        SPARE_FILES,
        "Emptied files kept under DIR/spare for the next replica files, so making one allocates no inode."
    );
    counter!(SCRUB_VERIFIED_BYTES_TOTAL, Unit::Bytes, "Bytes the scrubber re-verified.");
    counter!(SCRUB_PASSES_TOTAL, "Scrub passes finished.");
    gauge!(SCRUB_PASS_PROGRESS_RATIO, "Share of the replicas the current scrub pass has visited (1 between passes).");
    counter!(COPIES_TOTAL, "Copies of a replica from another server, made for meta, by result (ok, failed).");
    counter!(COPY_BYTES_TOTAL, Unit::Bytes, "Bytes copied from other servers (re-replication and rebalancing).");
    histogram!(COPY_SECONDS, Unit::Seconds, "Time of one copy, from asking the source to the verified replica.");
    counter!(HEARTBEATS_TOTAL, "Heartbeats sent to meta, by result (ok, failed).");
    counter!(
        CAPABILITY_REFUSALS_TOTAL,
        "Reads and writes refused for their capability, by mode (read, write) and reason (expired, invalid: \
         missing, forged, or for another caller, chunk, version or mode)."
    );

    for name in [READ_SECONDS, WRITE_SECONDS, FSYNC_SECONDS, COPY_SECONDS] {
        let _ = metrics::histogram!(name);
    }
    for name in
        [READ_BYTES_TOTAL, WRITTEN_BYTES_TOTAL, CHECKSUM_FAILURES_TOTAL, SCRUB_VERIFIED_BYTES_TOTAL, SCRUB_PASSES_TOTAL]
    {
        let _ = metrics::counter!(name);
    }
    let _ = metrics::counter!(COPY_BYTES_TOTAL);
    for result in ["ok", "failed"] {
        let _ = metrics::counter!(COPIES_TOTAL, "result" => result);
        let _ = metrics::counter!(HEARTBEATS_TOTAL, "result" => result);
    }
}
