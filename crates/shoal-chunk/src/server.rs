//! Starting a chunk server: identity, store, gRPC server and the heartbeat loop.
//!
//! Identity: on first start the server draws a random id and keeps it in
//! `DIR/node-id`, so meta recognizes it across restarts and address changes.
//! The address it actually listens on (useful with port 0) is written to
//! `DIR/listen-addr`. Others reach it at its **advertised** address:
//! `--advertise`, else the address it listens on (which then must not be a
//! wildcard such as `0.0.0.0`).
//!
//! Heartbeat: every `heartbeat_interval` the server tells the meta leader its
//! id, address, capacity, usage and chunk count, the chunks it deleted since
//! the last beat, and the replicas that failed a checksum. The reply names
//! garbage chunks to delete.
//!
//! Chunk report: the first beat after a start, every `report_interval`, and
//! the beat after a reply that asked for one (`report_token`) carry every
//! replica's id and version. A report is built after the previous reply was
//! handled, and carries the last token received, so meta knows which of its
//! own decisions the report already reflects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_client::meta::MetaConn;
use shoal_client::pool::ChannelPool;
use shoal_proto::chunk::chunk_server::ChunkServer;
use shoal_proto::meta::cluster_client::ClusterClient;
use shoal_proto::meta::{ChunkReport, HeartbeatRequest, ReplicaVersion};

use crate::metric_names;
use crate::scrub::ScrubSettings;
use crate::service::ChunkService;
use crate::store::ChunkStore;

/// Largest chunk this server accepts, whatever meta's chunk size.
pub use shoal_core::layout::CHUNK_SIZE_MAX_BYTES;

#[derive(Debug, Clone)]
pub struct ChunkConfig {
    /// Address to serve gRPC on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Every meta node, HOST:PORT.
    pub meta: Vec<String>,
    /// Where replicas live.
    pub dir: PathBuf,
    /// Bytes this server may store; None: whatever the disk has free.
    pub capacity_bytes: Option<u64>,
    /// Period of heartbeats to meta.
    pub heartbeat_interval: Duration,
    /// Period of full chunk reports to meta.
    pub report_interval: Duration,
    /// The background checksum scrubber.
    pub scrub: ScrubSettings,
    /// How this server talks to meta and to other chunk servers and accepts
    /// calls: mutual TLS (`--tls`), or plaintext (`--insecure`).
    pub transport: shoal_proto::Transport,
    /// The address meta, clients and other chunk servers use to reach this
    /// one (`--advertise`); None: `listen`.
    pub advertise: Option<String>,
    /// How long past its expiry a chunk capability is still taken: the
    /// clock skew with meta nodes this server tolerates.
    pub capability_skew: Duration,
}

impl ChunkConfig {
    pub fn new(listen: SocketAddr, meta: Vec<String>, dir: PathBuf) -> Self {
        ChunkConfig {
            listen,
            meta,
            dir,
            capacity_bytes: None,
            heartbeat_interval: Duration::from_secs(1),
            report_interval: Duration::from_secs(30),
            scrub: ScrubSettings { rate_bytes_per_s: 32 << 20, pass_every: Duration::from_secs(24 * 3600) },
            transport: shoal_proto::Transport::Insecure,
            advertise: None,
            capability_skew: shoal_proto::capability::SKEW_MARGIN_DEFAULT,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.meta.is_empty() {
            return Err("--meta needs at least one HOST:PORT".into());
        }
        match &self.advertise {
            Some(a) if !shoal_proto::dialable(a) => {
                return Err(format!("--advertise {a}: expected HOST:PORT that others can dial"));
            }
            None if self.listen.ip().is_unspecified() => {
                return Err(format!("--listen {} is a wildcard: say --advertise HOST:PORT too", self.listen));
            }
            _ => {}
        }
        if self.capability_skew > shoal_proto::capability::SKEW_MARGIN_MAX {
            let max = shoal_proto::capability::SKEW_MARGIN_MAX;
            return Err(format!("--capability-skew must be at most {max:?}"));
        }
        if self.heartbeat_interval.is_zero() || self.report_interval.is_zero() {
            return Err("the heartbeat and report intervals must be positive".into());
        }
        // Meta refuses a heartbeat that reports more (its bound on usage).
        if let Some(c) = self.capacity_bytes
            && c > shoal_core::layout::SERVER_BYTES_MAX
        {
            return Err(format!("--capacity must be at most {} bytes", shoal_core::layout::SERVER_BYTES_MAX));
        }
        Ok(())
    }
}

fn load_or_create_id(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().with_context(|| format!("{} is not a node id", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = rand::random::<u64>().max(1);
            let tmp = dir.join("node-id.tmp");
            std::fs::write(&tmp, id.to_string())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory is.
            std::fs::File::open(dir)?.sync_all()?;
            Ok(id)
        }
        Err(e) => Err(e.into()),
    }
}

/// Bytes free on the file system holding `dir`.
fn fs_free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return 0 };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return 0;
    }
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Runs a chunk server until `shutdown` resolves.
pub async fn run(
    config: ChunkConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    // Before anything starts: a TLS node without the cluster key must not run.
    let capabilities = shoal_proto::capability::server_key(&config.transport)
        .map_err(anyhow::Error::msg)?
        .map(|k| k.with_skew_margin(config.capability_skew));
    crate::metric_names::describe();
    std::fs::create_dir_all(&config.dir).with_context(|| format!("creating {}", config.dir.display()))?;
    let node_id = load_or_create_id(&config.dir)?;
    let store = Arc::new(
        ChunkStore::open(&config.dir, config.capacity_bytes.unwrap_or(u64::MAX), CHUNK_SIZE_MAX_BYTES)
            .context("opening the chunk store")?,
    );
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let bound = listener.local_addr()?.to_string();
    std::fs::write(config.dir.join("listen-addr"), &bound)?;
    let addr = config.advertise.clone().unwrap_or(bound);

    let meta = Arc::new(MetaConn::new(config.meta.clone(), Duration::from_secs(5), config.transport.clone())?);
    tokio::spawn(heartbeat_loop(meta, store.clone(), node_id, addr.clone(), config.clone()));
    tokio::spawn(crate::scrub::run(store.clone(), config.scrub));

    let service = ChunkService {
        capabilities,
        store,
        pool: Arc::new(ChannelPool::with_transport(config.transport.clone())),
        self_addr: addr.clone(),
    };
    let max = shoal_proto::MESSAGE_SIZE_MAX_BYTES;
    tracing::info!(node_id, %addr, "chunk server serving");
    shoal_proto::server_builder(&config.transport, "chunk server")?
        // Pings keep healthy idle channels from looking idle to the gate.
        .http2_keepalive_interval(Some(shoal_proto::bounded::GRPC_KEEPALIVE))
        .http2_keepalive_timeout(Some(shoal_proto::bounded::GRPC_KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(shoal_proto::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(shoal_proto::CONNECTION_WINDOW_BYTES)
        // Counts and times every call (`shoal_rpc_*`).
        .layer(shoal_metrics::RpcLayer::new())
        // Who may call what, by the role in the client's certificate.
        .layer(shoal_proto::authz::AuthorizeLayer { enforce: config.transport.is_tls() })
        .add_service(ChunkServer::new(service).max_decoding_message_size(max).max_encoding_message_size(max))
        // Our own listener behind the connection gate: bounded connections,
        // idle ones closed, TCP_NODELAY on each (tonic sets it only on its own).
        .serve_with_incoming_shutdown(
            shoal_proto::bounded::Gate::new(listener, shoal_proto::bounded::Limits::GRPC).incoming(),
            shutdown,
        )
        .await
        .context("gRPC server failed")
}

/// Garbage deletes, run beside the heartbeat loop: a delete waits for the
/// chunk's write lock, which a long write or copy may hold, and heartbeats
/// must not wait with it. Finished ids are confirmed on the next beat.
#[derive(Default)]
struct Deletes {
    running: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    done: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Deletes {
    fn start(&self, store: &Arc<ChunkStore>, ids: Vec<u64>) {
        let fresh: Vec<u64> = {
            let mut running = self.running.lock().expect("deletes lock");
            ids.into_iter().filter(|id| running.insert(*id)).collect()
        };
        if fresh.is_empty() {
            return;
        }
        let (store, running, done) = (store.clone(), self.running.clone(), self.done.clone());
        tokio::spawn(async move {
            for id in fresh {
                match store.delete(id).await {
                    Ok(()) => done.lock().expect("deletes lock").push(id),
                    Err(e) => tracing::warn!(chunk_id = id, "garbage delete failed: {e}"),
                }
                running.lock().expect("deletes lock").remove(&id);
            }
        });
    }
}

async fn heartbeat_loop(meta: Arc<MetaConn>, store: Arc<ChunkStore>, node_id: u64, addr: String, config: ChunkConfig) {
    let deletes = Deletes::default();
    let mut ticker = tokio::time::interval(config.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first beat after a start carries a report.
    let mut report_due = true;
    let mut last_report = tokio::time::Instant::now();
    let mut token = 0;
    loop {
        ticker.tick().await;
        let used = store.used_bytes();
        let free = fs_free_bytes(store.chunk_dir());
        let capacity = config
            .capacity_bytes
            .unwrap_or_else(|| used.saturating_add(free))
            .min(shoal_core::layout::SERVER_BYTES_MAX);
        let corrupt = store.corrupt_ids();
        let replicas = store.chunk_count();
        metrics::gauge!(metric_names::DISK_USED_BYTES).set(used as f64);
        metrics::gauge!(metric_names::DISK_FREE_BYTES).set(free as f64);
        metrics::gauge!(metric_names::DISK_CAPACITY_BYTES).set(capacity as f64);
        metrics::gauge!(metric_names::REPLICAS).set(replicas as f64);
        metrics::gauge!(metric_names::SPARE_FILES).set(store.spare_files() as f64);
        metrics::gauge!(metric_names::CORRUPT_REPLICAS).set(corrupt.len() as f64);
        let report = (report_due || last_report.elapsed() >= config.report_interval).then(|| ChunkReport {
            replicas: store.list().into_iter().map(|(id, version)| ReplicaVersion { id, version }).collect(),
            token,
        });
        let req = HeartbeatRequest {
            node_id,
            addr: addr.clone(),
            capacity_bytes: capacity,
            used_bytes: used,
            chunk_count: replicas,
            deleted: std::mem::take(&mut *deletes.done.lock().expect("deletes lock")),
            report: report.clone(),
            corrupt,
            read_bytes_total: store.io_totals().0,
            written_bytes_total: store.io_totals().1,
        };
        match meta
            .call(|ch| {
                let req = req.clone();
                async move { ClusterClient::new(ch).heartbeat(req).await }
            })
            .await
        {
            Ok(reply) => {
                metrics::counter!(metric_names::HEARTBEATS_TOTAL, "result" => "ok").increment(1);
                let reply = reply.into_inner();
                if report.is_some() {
                    report_due = false;
                    last_report = tokio::time::Instant::now();
                }
                if reply.report_token != 0 {
                    token = reply.report_token;
                    report_due = true;
                }
                deletes.start(&store, reply.delete);
            }
            Err(e) => {
                metrics::counter!(metric_names::HEARTBEATS_TOTAL, "result" => "failed").increment(1);
                tracing::warn!("heartbeat failed: {e}");
                // Confirm them on the next beat (meta ignores a confirmation
                // it already has), rather than wait for meta to ask again.
                deletes.done.lock().expect("deletes lock").extend(req.deleted);
            }
        }
    }
}
