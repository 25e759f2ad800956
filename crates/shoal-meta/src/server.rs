//! Starting a meta node: storage, Raft, gRPC server, first-start initialization.
//!
//! A pristine node (empty `--dir`) that was given its peers initializes the
//! group with all of them; every peer doing the same with the same list is
//! safe (openraft accepts identical initial memberships). A node that has any
//! Raft state resumes from it and ignores `--peers`. A pristine node started
//! with `join` initializes nothing: it waits for the leader to add it
//! (`shoal admin meta add`), then catches up from the log or a snapshot.
//!
//! A failed write to the log or the state (a full disk, say) stops openraft's
//! core for good; the node then exits with an error instead of holding its
//! ports without a working core, and resumes from its durable state when
//! started again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use shoal_proto::meta::cluster_server::ClusterServer;
use shoal_proto::meta::locks_server::LocksServer;
use shoal_proto::meta::namespace_server::NamespaceServer;
use shoal_proto::raft::raft_server::RaftServer;

use crate::log_store::LogStore;
use crate::network::{NetworkFactory, RaftService};
use crate::node::Node;
use crate::registry::Registry;
use crate::repair::{HealSettings, Healer};
use crate::service::{MetaService, ServiceSettings};
use crate::sessions::SessionClock;
use crate::sm_store::StateMachineStore;

/// Entries in one AppendEntries, at most (openraft's default is 300; see
/// `group_commit::BATCH_BYTES_MAX`).
pub const RAFT_PAYLOAD_ENTRIES_MAX: u64 = 64;

/// Everything a meta node is configured with.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// This node's Raft id (1, 2, 3, ...).
    pub id: u64,
    /// Address to serve gRPC on.
    pub listen: SocketAddr,
    /// All meta nodes of the initial group, this one included, as id → HOST:PORT.
    pub peers: BTreeMap<u64, String>,
    /// Where the Raft log and snapshots live.
    pub dir: PathBuf,
    /// Size of the chunks new files are cut into.
    pub chunk_size_bytes: u64,
    /// Replication factor for files that do not choose one.
    pub replication: u32,
    /// A chunk server silent this long is dead.
    pub dead_after: Duration,
    /// Raft heartbeat period.
    pub heartbeat_ms: u64,
    /// Raft election timeout range; a follower that hears no leader for this long stands.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Entries between two snapshots.
    pub snapshot_every_entries: u64,
    /// Wait to be added to an existing group instead of forming one.
    pub join: bool,
    /// Re-replication copies in flight cluster-wide, at most.
    pub repair_copies_max: usize,
    /// Average bytes per second all re-replication copies may move (0: no limit).
    pub repair_rate_bytes_per_s: u64,
    /// How this node talks to its peers and chunk servers and accepts
    /// calls: mutual TLS (`--tls`), or plaintext (`--insecure`).
    pub transport: shoal_proto::Transport,
    /// The address others use to reach this node when it forms a group of
    /// its own (no `--peers`); None: `listen`. With `--peers`, this node's
    /// entry there is its address.
    pub advertise: Option<String>,
    /// How long the chunk capabilities this node signs are valid.
    pub capability_lifetime: Duration,
    /// Serve linearizable reads under the leader's lease (see
    /// [`crate::read_rounds`]); off, every read waits for a read-index round.
    pub read_lease: bool,
}

impl MetaConfig {
    pub fn new(id: u64, listen: SocketAddr, dir: PathBuf) -> Self {
        MetaConfig {
            id,
            listen,
            peers: BTreeMap::new(),
            dir,
            chunk_size_bytes: shoal_core::DEFAULT_CHUNK_SIZE_BYTES,
            replication: shoal_core::DEFAULT_REPLICATION,
            dead_after: Duration::from_secs(10),
            heartbeat_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_every_entries: 10_000,
            join: false,
            repair_copies_max: 8,
            repair_rate_bytes_per_s: 256 << 20,
            transport: shoal_proto::Transport::Insecure,
            advertise: None,
            capability_lifetime: shoal_proto::capability::LIFETIME_DEFAULT,
            read_lease: true,
        }
    }

    /// Rejects settings that cannot work, with a reason for people.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("--id must be 1 or more".into());
        }
        if !self.peers.is_empty() && !self.peers.contains_key(&self.id) {
            return Err(format!("--peers must include this node's own id {}", self.id));
        }
        crate::bounds::check_chunk_size(self.chunk_size_bytes).map_err(|e| format!("--chunk-size: {e}"))?;
        if crate::bounds::check_replication(self.replication, false).is_err() {
            return Err(format!("--replication must be 1..={}", crate::bounds::REPLICATION_MAX));
        }
        use shoal_proto::capability::{LIFETIME_MAX, LIFETIME_MIN};
        if !(LIFETIME_MIN..=LIFETIME_MAX).contains(&self.capability_lifetime) {
            return Err(format!("--capability-lifetime must be {LIFETIME_MIN:?} to {LIFETIME_MAX:?}"));
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return Err("election timeouts must exceed the heartbeat and min < max".into());
        }
        match &self.advertise {
            Some(a) if !shoal_proto::dialable(a) => {
                return Err(format!("--advertise {a}: expected HOST:PORT that others can dial"));
            }
            Some(a) if self.peers.get(&self.id).is_some_and(|p| p != a) => {
                return Err(format!("--advertise {a} differs from this node's entry in --peers"));
            }
            None if self.peers.is_empty() && !self.join && self.listen.ip().is_unspecified() => {
                return Err(format!("--listen {} is a wildcard: say --advertise HOST:PORT too", self.listen));
            }
            _ => {}
        }
        if self.repair_copies_max == 0 {
            return Err("--repair-copies must be 1 or more".into());
        }
        Ok(())
    }

    /// The address others use to reach this node.
    pub fn advertised(&self) -> String {
        match (&self.advertise, self.peers.get(&self.id)) {
            (Some(a), _) => a.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => self.listen.to_string(),
        }
    }

    fn members(&self) -> BTreeMap<u64, BasicNode> {
        if self.peers.is_empty() {
            return BTreeMap::from([(self.id, BasicNode::new(self.advertised()))]);
        }
        self.peers.iter().map(|(id, addr)| (*id, BasicNode::new(addr.clone()))).collect()
    }
}

/// A meta node's service, built by [`start`] and not yet serving.
pub struct Started {
    /// The gRPC handlers' state; its `node.raft` is the running Raft core.
    pub service: MetaService,
    /// Whether the node had no Raft state at all (a first start).
    pub pristine: bool,
}

/// Opens the log and the state in `config.dir`, starts the Raft core and
/// builds the service around it, with the task that tells the registry and
/// the session clock about leadership. Binds no port, starts no background
/// task of the service (session expiry, repair, sampler) and initializes no
/// group: [`run`] does those. Fuzz targets call it to drive the handlers in
/// process.
pub async fn start(config: &MetaConfig) -> anyhow::Result<Started> {
    config.validate().map_err(anyhow::Error::msg)?;
    // Before anything starts: a TLS node without the cluster key must not run.
    let capabilities = shoal_proto::capability::server_key(&config.transport).map_err(anyhow::Error::msg)?;
    crate::metric_names::describe();
    std::fs::create_dir_all(&config.dir).with_context(|| format!("creating {}", config.dir.display()))?;
    let log_store = LogStore::open(&config.dir).context("opening the raft log")?;
    let pristine = log_store.is_pristine()?;
    let sm = StateMachineStore::open(&config.dir).context("opening the snapshot")?;
    let state = sm.shared();

    let raft_config = Config {
        cluster_name: "shoal".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every_entries),
        // Keep some log past the snapshot so briefly lagging followers catch up
        // from the log; ones further behind get the snapshot.
        max_in_snapshot_log_to_keep: config.snapshot_every_entries.min(1000),
        // A group-committed entry may hold up to 64 KiB of requests (plus one
        // more request): this many keep one AppendEntries well inside the
        // Raft message limit, in JSON.
        max_payload_entries: RAFT_PAYLOAD_ENTRIES_MAX,
        ..Default::default()
    };
    let raft_config = Arc::new(raft_config.validate()?);
    let raft = Raft::new(config.id, raft_config, NetworkFactory::new(config.transport.clone()), log_store, sm).await?;

    let registry = Arc::new(Registry::new(config.dead_after));
    let sessions = Arc::new(SessionClock::default());
    spawn_leadership_watch(raft.clone(), registry.clone(), sessions.clone());
    let service = MetaService {
        capabilities,
        new_ids: Arc::new(crate::new_ids::IdPool::default()),
        garbage_cursors: Default::default(),
        node: Node::new(raft.clone(), state, registry, config.read_lease),
        sessions,
        settings: Arc::new(ServiceSettings {
            node_id: config.id,
            chunk_size_bytes: config.chunk_size_bytes,
            replication: config.replication,
            capability_lifetime: config.capability_lifetime,
        }),
        healer: Arc::new(Healer::new(
            HealSettings { copies_max: config.repair_copies_max, rate_bytes_per_s: config.repair_rate_bytes_per_s },
            config.transport.clone(),
        )),
    };
    Ok(Started { service, pristine })
}

/// Runs a meta node until `shutdown` resolves.
pub async fn run(
    config: MetaConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Started { service, pristine } = start(&config).await?;
    let raft = service.node.raft.clone();
    let sessions = service.sessions.clone();
    crate::lock_service::spawn_session_expiry(service.clone(), sessions);
    crate::repair::spawn(service.node.clone(), service.healer.clone());
    crate::sampler::spawn(service.node.clone(), service.healer.clone());
    crate::stall_watch::spawn();
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    // Our own listener (bound before serving), behind the connection gate:
    // bounded connections, idle ones closed, TCP_NODELAY on each.
    let incoming = shoal_proto::bounded::Gate::new(listener, shoal_proto::bounded::Limits::GRPC).incoming();
    let max = shoal_proto::MESSAGE_SIZE_MAX_BYTES;
    let server = shoal_proto::server_builder(&config.transport, "meta node")?
        // Pings keep healthy idle channels from looking idle to the gate.
        .http2_keepalive_interval(Some(shoal_proto::bounded::GRPC_KEEPALIVE))
        .http2_keepalive_timeout(Some(shoal_proto::bounded::GRPC_KEEPALIVE_TIMEOUT))
        .initial_stream_window_size(shoal_proto::STREAM_WINDOW_BYTES)
        .initial_connection_window_size(shoal_proto::CONNECTION_WINDOW_BYTES)
        // Counts and times every call, Raft's included (`shoal_rpc_*`).
        .layer(shoal_metrics::RpcLayer::new())
        // Who may call what, by the role in the client's certificate.
        .layer(shoal_proto::authz::AuthorizeLayer { enforce: config.transport.is_tls() })
        .add_service(
            RaftServer::new(RaftService { raft: raft.clone(), votes: service.node.vote_gate() })
                .max_decoding_message_size(max * 4)
                .max_encoding_message_size(max * 4),
        )
        .add_service(NamespaceServer::new(service.clone()).max_decoding_message_size(max))
        // Chunk reports list every replica of a server: up to the message bound (~800k replicas).
        .add_service(ClusterServer::new(service.clone()).max_decoding_message_size(max))
        .add_service(LocksServer::new(service.clone()))
        .serve_with_incoming_shutdown(incoming, shutdown);

    if pristine && config.join {
        tracing::info!("pristine node: waiting to be added to a meta group");
    } else if pristine {
        let members = config.members();
        tracing::info!(?members, "pristine node: initializing the meta group");
        if let Err(e) = raft.initialize(members).await {
            tracing::info!("initialize skipped: {e}");
        }
    }
    tracing::info!(id = config.id, listen = %config.listen, "meta node serving");
    tokio::select! {
        served = server => served.context("gRPC server failed")?,
        fatal = raft_stopped(raft.clone()) => {
            // A node whose Raft core is gone can neither lead nor vote: stop
            // serving at once, so clients and peers turn to the others.
            tracing::error!(
                %fatal,
                "the Raft core stopped (a failed log or state write: is the disk full?); this node stops; \
                 start it again once the cause is fixed (it resumes from its last durable state)"
            );
            anyhow::bail!("the Raft core stopped: {fatal}");
        }
    }
    raft.shutdown().await.ok();
    Ok(())
}

/// Resolves once the Raft core has stopped by itself with a fatal error (a
/// storage write failed, as on a full disk); never while it runs.
async fn raft_stopped(raft: Raft<crate::TypeConfig>) -> openraft::error::Fatal<u64> {
    let mut metrics = raft.metrics();
    loop {
        if let Err(fatal) = &metrics.borrow().running_state {
            return fatal.clone();
        }
        if metrics.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Tells the registry and the session clock when this node gains or loses leadership.
fn spawn_leadership_watch(raft: Raft<crate::TypeConfig>, registry: Arc<Registry>, sessions: Arc<SessionClock>) {
    let mut metrics = raft.metrics();
    tokio::spawn(async move {
        let mut was_leader = false;
        loop {
            let is_leader = metrics.borrow().state == ServerState::Leader;
            if is_leader != was_leader {
                registry.set_leader_since(is_leader.then(Instant::now));
                sessions.set_leader_since(is_leader.then(Instant::now));
                was_leader = is_leader;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}
