//! `shoal meta` and `shoal chunk`: run one server until SIGINT or SIGTERM.
//!
//! With `--http HOST:PORT` a server also serves HTTP: the metrics recorder is
//! installed before the server starts recording, the port is bound before
//! the gRPC one (a taken port stops the start at once), and the app of its
//! role ([`meta_http_app`]: metrics and the dashboard; [`chunk_http_app`]:
//! metrics) is served by [`serve_http`] in the background for as long as the
//! process runs.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;

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

pub async fn meta(args: MetaArgs, transport: shoal_client::Transport) -> anyhow::Result<ExitCode> {
    let mut config = MetaConfig::new(args.id, args.listen, args.dir);
    config.transport = transport;
    config.advertise = args.advertise;
    config.peers = args.peers.into_iter().collect();
    config.chunk_size_bytes = args.chunk_size;
    config.replication = args.replication;
    config.dead_after = args.dead_after;
    config.join = args.join;
    config.snapshot_every_entries = args.snapshot_every;
    config.read_lease = !args.no_read_lease;
    config.repair_copies_max = args.repair_copies as usize;
    config.repair_rate_bytes_per_s = args.repair_rate;
    config.capability_lifetime = args.capability_lifetime;
    if let Err(e) = config.validate() {
        eprintln!("shoal meta: {e}");
        return Ok(ExitCode::from(2));
    }
    if let Some(addr) = args.http {
        shoal_metrics::install()?;
        // The dashboard asks the whole group through a client, which follows
        // the leader: a follower serves the leader's data.
        // `--peers` names every voter, this node included, by the address
        // the others use; the listen address (maybe a wildcard) only stands
        // in for a node started alone.
        let mut group: Vec<String> = config.peers.values().cloned().collect();
        if !config.peers.contains_key(&config.id) {
            group.insert(0, config.advertised());
        }
        let client = shoal_client::Client::connect(&group).await?;
        serve_http(addr, meta_http_app(client)).await?;
    }
    shoal_meta::run(config, terminated()).await?;
    Ok(ExitCode::SUCCESS)
}

/// `meta` is the global `--meta` list: the chunk server is a client of meta too.
pub async fn chunk(args: ChunkArgs, meta: Vec<String>, transport: shoal_client::Transport) -> anyhow::Result<ExitCode> {
    let mut config = ChunkConfig::new(args.listen, meta, args.dir);
    config.transport = transport;
    config.advertise = args.advertise;
    config.capacity_bytes = args.capacity;
    config.heartbeat_interval = args.heartbeat;
    config.scrub.rate_bytes_per_s = args.scrub_rate;
    config.scrub.pass_every = args.scrub_every;
    config.capability_skew = args.capability_skew;
    if let Err(e) = config.validate() {
        eprintln!("shoal chunk: {e}");
        return Ok(ExitCode::from(2));
    }
    if let Some(addr) = args.http {
        shoal_metrics::install()?;
        serve_http(addr, chunk_http_app()).await?;
    }
    shoal_chunk::run(config, terminated()).await?;
    Ok(ExitCode::SUCCESS)
}

/// What a meta node's HTTP port serves: `GET /metrics`, and the web
/// dashboard with its JSON API (`shoal_http`) over `client`.
pub fn meta_http_app(client: shoal_client::Client) -> axum::Router {
    shoal_metrics::router().merge(shoal_http::router(client))
}

/// What a chunk server's HTTP port serves: `GET /metrics`.
pub fn chunk_http_app() -> axum::Router {
    shoal_metrics::router()
}

/// Binds `addr` now (so a taken port or a foreign address fails the start
/// with a clear error) and serves `app` on it in the background until the
/// process ends.
pub async fn serve_http(addr: SocketAddr, app: axum::Router) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the HTTP port {addr}"))?;
    tracing::info!(%addr, "serving HTTP");
    tokio::spawn(async move {
        if let Err(e) =
            shoal_http::serve::serve(listener, app, shoal_http::serve::Limits::HTTP, std::future::pending()).await
        {
            tracing::error!("the HTTP server at {addr} failed: {e}");
        }
    });
    Ok(())
}
