//! `shoal meta` and `shoal chunk`: run one server until SIGINT or SIGTERM.

use std::process::ExitCode;

use shoal_chunk::ChunkConfig;
use shoal_meta::MetaConfig;

use crate::cli::{ChunkArgs, MetaArgs};

/// Resolves on SIGINT or SIGTERM.
pub async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub async fn meta(args: MetaArgs) -> anyhow::Result<ExitCode> {
    let mut config = MetaConfig::new(args.id, args.listen, args.dir);
    config.peers = args.peers.into_iter().collect();
    config.chunk_size_bytes = args.chunk_size;
    config.replication = args.replication;
    config.dead_after = args.dead_after;
    config.join = args.join;
    config.snapshot_every_entries = args.snapshot_every;
    config.repair_copies_max = args.repair_copies as usize;
    config.repair_rate_bytes_per_s = args.repair_rate;
    if let Err(e) = config.validate() {
        eprintln!("shoal meta: {e}");
        return Ok(ExitCode::from(2));
    }
    shoal_meta::run(config, terminated()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `meta` is the global `--meta` list: the chunk server is a client of meta too.
pub async fn chunk(args: ChunkArgs, meta: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut config = ChunkConfig::new(args.listen, meta, args.dir);
    config.capacity_bytes = args.capacity;
    config.heartbeat_interval = args.heartbeat;
    config.scrub.rate_bytes_per_s = args.scrub_rate;
    config.scrub.pass_every = args.scrub_every;
    if let Err(e) = config.validate() {
        eprintln!("shoal chunk: {e}");
        return Ok(ExitCode::from(2));
    }
    shoal_chunk::run(config, terminated()).await?;
    Ok(ExitCode::SUCCESS)
}
