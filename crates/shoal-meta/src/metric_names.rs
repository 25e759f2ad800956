//! Every metric a meta node records, by name, and [`describe`], which gives
//! each its help text. The values are recorded through the `metrics` facade
//! where they happen (proposals in `node`, snapshots in `sm_store`, the
//! committed index and fsync counts in `log_store`, copies in
//! `repair`) or sampled in the background by `sampler`; nothing here knows
//! the recorder (see `shoal-metrics`), and with none installed recording
//! costs next to nothing.
//!
//! Gauges that only the leader knows (replication lag, fsck, chunk servers,
//! repairs) read 0 on any other node, so a sum over every meta node is the
//! cluster's value. The gRPC calls a meta node answers are counted by
//! `shoal_metrics::RpcLayer` (`shoal_rpc_*`).

use metrics::Unit;

pub const RAFT_TERM: &str = "shoal_meta_raft_term";
pub const RAFT_IS_LEADER: &str = "shoal_meta_raft_is_leader";
pub const RAFT_LAST_LOG_INDEX: &str = "shoal_meta_raft_last_log_index";
pub const RAFT_COMMIT_INDEX: &str = "shoal_meta_raft_commit_index";
pub const RAFT_APPLIED_INDEX: &str = "shoal_meta_raft_applied_index";
pub const RAFT_SNAPSHOT_INDEX: &str = "shoal_meta_raft_snapshot_index";
pub const RAFT_REPLICATION_LAG: &str = "shoal_meta_raft_replication_lag_entries";
pub const RAFT_LOG_FSYNCS_TOTAL: &str = "shoal_meta_raft_log_fsyncs_total";
pub const RAFT_LOG_ENTRIES_TOTAL: &str = "shoal_meta_raft_log_entries_total";
pub const PROPOSALS_TOTAL: &str = "shoal_meta_proposals_total";
pub const PROPOSAL_SECONDS: &str = "shoal_meta_proposal_seconds";
pub const PROPOSED_ENTRIES_TOTAL: &str = "shoal_meta_proposed_entries_total";
pub const LINEARIZABLE_READS_TOTAL: &str = "shoal_meta_linearizable_reads_total";
pub const SNAPSHOTS_BUILT_TOTAL: &str = "shoal_meta_snapshots_built_total";
pub const SNAPSHOT_BUILD_SECONDS: &str = "shoal_meta_snapshot_build_seconds";
pub const SNAPSHOTS_INSTALLED_TOTAL: &str = "shoal_meta_snapshots_installed_total";
pub const STALLS_TOTAL: &str = "shoal_meta_stalls_total";
pub const FILES: &str = "shoal_meta_files";
pub const DIRECTORIES: &str = "shoal_meta_directories";
pub const CHUNKS: &str = "shoal_meta_chunks";
pub const FILE_BYTES: &str = "shoal_meta_file_bytes";
pub const REPLICA_BYTES: &str = "shoal_meta_replica_bytes";
pub const CHUNKS_UNDER_REPLICATED: &str = "shoal_meta_chunks_under_replicated";
pub const CHUNKS_MISSING: &str = "shoal_meta_chunks_missing";
pub const CHUNKS_CORRUPT: &str = "shoal_meta_chunks_corrupt";
pub const CHUNKS_OVER_REPLICATED: &str = "shoal_meta_chunks_over_replicated";
pub const CHUNK_SERVERS: &str = "shoal_meta_chunk_servers";
pub const REPAIRS_IN_FLIGHT: &str = "shoal_meta_repairs_in_flight";
pub const REPAIR_MOVES_PENDING: &str = "shoal_meta_repair_moves_pending";
pub const REPAIR_COPIES_TOTAL: &str = "shoal_meta_repair_copies_total";
pub const REPAIR_BYTES_COPIED_TOTAL: &str = "shoal_meta_repair_bytes_copied_total";
pub const LOCK_SESSIONS: &str = "shoal_meta_lock_sessions";
pub const LOCK_HOLDERS: &str = "shoal_meta_lock_holders";
pub const LOCK_WAITERS: &str = "shoal_meta_lock_waiters";

/// Gives every metric above its help text and unit, and registers the ones
/// without labels, so a scrape lists them (at 0) before anything happened.
pub fn describe() {
    use metrics::{describe_counter as counter, describe_gauge as gauge, describe_histogram as histogram};
    gauge!(RAFT_TERM, "Raft term this node is in.");
    gauge!(RAFT_IS_LEADER, "1 while this node is the Raft leader, else 0.");
    gauge!(RAFT_LAST_LOG_INDEX, "Index of the last entry in this node's Raft log.");
    gauge!(RAFT_COMMIT_INDEX, "Index of the last Raft entry this node knows to be committed.");
    gauge!(RAFT_APPLIED_INDEX, "Index of the last Raft entry applied to this node's state.");
    gauge!(RAFT_SNAPSHOT_INDEX, "Index of the last Raft entry in this node's snapshot.");
    gauge!(
        RAFT_REPLICATION_LAG,
        "Entries a follower's log is behind the leader's, by follower id (on the leader; 0 elsewhere)."
    );
    counter!(
        STALLS_TOTAL,
        "Ticks of the stall watch that came 100 ms or more late, on=\"runtime\" (the async runtime) or \"thread\" (the whole process)."
    );
    counter!(RAFT_LOG_FSYNCS_TOTAL, "fsync rounds of the Raft log: each covers every append waiting.");
    counter!(RAFT_LOG_ENTRIES_TOTAL, "Raft log entries made durable (entries over fsyncs: entries per fsync).");
    counter!(PROPOSALS_TOTAL, "Commands proposed through Raft, by result (ok, not_leader, failed).");
    histogram!(PROPOSAL_SECONDS, Unit::Seconds, "Time from proposing a command to its being applied (committed ones).");
    counter!(
        PROPOSED_ENTRIES_TOTAL,
        "Log entries this node proposed for client requests; proposals over entries is the group-commit batch size."
    );
    counter!(
        LINEARIZABLE_READS_TOTAL,
        "Linearizable reads this node served, by how it knew it still led: lease (at once) or round (a read-index round)."
    );
    counter!(SNAPSHOTS_BUILT_TOTAL, "Snapshots this node built (each compacts the Raft log).");
    histogram!(SNAPSHOT_BUILD_SECONDS, Unit::Seconds, "Time to build and write one snapshot.");
    counter!(SNAPSHOTS_INSTALLED_TOTAL, "Snapshots received from the leader and installed.");
    gauge!(FILES, "Files in the namespace.");
    gauge!(DIRECTORIES, "Directories in the namespace, the root included.");
    gauge!(CHUNKS, "Chunks with a committed version.");
    gauge!(FILE_BYTES, Unit::Bytes, "Sum of the sizes of every file (bytes stored, before replication).");
    gauge!(REPLICA_BYTES, Unit::Bytes, "Sum over committed chunks of their length times their listed replicas.");
    gauge!(CHUNKS_UNDER_REPLICATED, "Chunks with fewer good replicas than their factor, and at least one (leader).");
    gauge!(CHUNKS_MISSING, "Chunks with no good replica left (leader).");
    gauge!(CHUNKS_CORRUPT, "Chunks with a replica that failed its checksums, not yet back at their factor (leader).");
    gauge!(CHUNKS_OVER_REPLICATED, "Chunks with more good replicas than their factor (leader).");
    gauge!(CHUNK_SERVERS, "Registered chunk servers, by state: alive, dead or draining (leader).");
    gauge!(REPAIRS_IN_FLIGHT, "Re-replication and rebalancing copies running now (leader).");
    gauge!(REPAIR_MOVES_PENDING, "Rebalancing moves planned and not yet started (leader).");
    counter!(REPAIR_COPIES_TOTAL, "Copies this node had chunk servers make, by result (ok, failed).");
    counter!(REPAIR_BYTES_COPIED_TOTAL, Unit::Bytes, "Bytes of chunk replicas copied for repairs and moves.");
    gauge!(LOCK_SESSIONS, "Open lock sessions.");
    gauge!(LOCK_HOLDERS, "Locks held (one per holder and path).");
    gauge!(LOCK_WAITERS, "Lock requests waiting in a queue.");

    for name in [PROPOSAL_SECONDS, SNAPSHOT_BUILD_SECONDS] {
        let _ = metrics::histogram!(name);
    }
    for name in [
        SNAPSHOTS_BUILT_TOTAL,
        SNAPSHOTS_INSTALLED_TOTAL,
        REPAIR_BYTES_COPIED_TOTAL,
        RAFT_LOG_FSYNCS_TOTAL,
        RAFT_LOG_ENTRIES_TOTAL,
        PROPOSED_ENTRIES_TOTAL,
    ] {
        let _ = metrics::counter!(name);
    }
    for result in ["ok", "not_leader", "failed"] {
        let _ = metrics::counter!(PROPOSALS_TOTAL, "result" => result);
    }
    for path in ["lease", "round"] {
        let _ = metrics::counter!(LINEARIZABLE_READS_TOTAL, "path" => path);
    }
    for result in ["ok", "failed"] {
        let _ = metrics::counter!(REPAIR_COPIES_TOTAL, "result" => result);
    }
}
