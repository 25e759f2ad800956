//! The command line, as DESIGN.md fixes it. Parsing and validation only:
//! nothing here touches the network.
//!
//! Modules that do the work take plain data: `cli` names them, never the
//! other way round (for `bench`, [`BenchArgs::options`] builds its
//! [`bench::Options`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::bench::{self, Workload};

/// The meta addresses `shoal up` uses by default.
pub const DEFAULT_META: &str = "127.0.0.1:7100,127.0.0.1:7101,127.0.0.1:7102";

#[derive(Parser, Debug)]
#[command(name = "shoal", version, about = "Shoal: a distributed file system", propagate_version = true)]
pub struct Cli {
    /// Meta nodes to talk to, HOST:PORT[,HOST:PORT...].
    #[arg(long, global = true, env = "SHOAL_META", default_value = DEFAULT_META, value_delimiter = ',')]
    pub meta: Vec<String>,

    /// How long a client command keeps retrying an unreachable cluster, and
    /// waits for a lock [default: 10s; for `lock`, no bound on the wait].
    #[arg(long, global = true, env = "SHOAL_TIMEOUT", value_parser = duration)]
    pub timeout: Option<Duration>,

    /// How log lines on stderr look: text for people, json for machines (one
    /// object per line). Processes this one starts (`up`'s nodes) inherit it.
    #[arg(long, global = true, env = "SHOAL_LOG_FORMAT", value_enum, ignore_case = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Credentials for mutual TLS: a folder with cert.pem, key.pem and ca.pem
    /// (`shoal cert issue` makes one). Default: `$SHOAL_TLS`, then for
    /// client commands `$HOME/.shoal/tls` (written by `shoal up`).
    #[arg(long, global = true, value_name = "DIR")]
    pub tls: Option<PathBuf>,

    /// Plaintext, without TLS or identities: anyone who reaches a port may do
    /// anything. Every node and client of such a cluster must say so.
    #[arg(long, global = true, conflicts_with = "tls")]
    pub insecure: bool,

    /// Read flags from a TOML file: `[global]` for the flags above, `[meta]`,
    /// `[chunk]`, `[s3]`, `[mount]`, `[http]`, `[up]` for each role's own,
    /// by long name (`listen = "0.0.0.0:7100"`). The command line wins over
    /// the file, the file over environment variables. Example:
    /// deploy/shoal.toml.
    #[arg(long, global = true, env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// The two shapes of log lines.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line: timestamp, level, message, target and fields.
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start a whole cluster on this machine (meta and chunk servers as child processes).
    Up(UpArgs),
    /// Run a meta node.
    Meta(MetaArgs),
    /// Run a chunk server.
    Chunk(ChunkArgs),
    /// List a directory.
    Ls {
        /// Long format: type, size, replication, modification time.
        #[arg(short = 'l')]
        long: bool,
        /// Recurse into subdirectories.
        #[arg(short = 'R')]
        recursive: bool,
        #[arg(long)]
        json: bool,
        #[arg(default_value = "/")]
        path: String,
    },
    /// Create a directory.
    Mkdir {
        /// Create missing parents; no error if it exists.
        #[arg(short = 'p')]
        parents: bool,
        path: String,
    },
    /// Create an empty file.
    Create {
        #[arg(long, value_parser = replication)]
        replication: Option<u32>,
        path: String,
    },
    /// Remove a file or directory.
    Rm {
        /// Remove a directory and everything in it.
        #[arg(short = 'r')]
        recursive: bool,
        path: String,
    },
    /// Rename or move.
    Mv { src: String, dst: String },
    /// Copy a local file (or - for stdin) into Shoal.
    Put {
        #[arg(long, value_parser = replication)]
        replication: Option<u32>,
        local: String,
        remote: String,
    },
    /// Copy a file out of Shoal to a local file (or - for stdout).
    Get { remote: String, local: String },
    /// Print a file, or a range of it.
    Cat {
        #[arg(long, default_value_t = 0, value_parser = offset)]
        offset: u64,
        #[arg(long, value_parser = offset)]
        length: Option<u64>,
        remote: String,
    },
    /// Write stdin into a file at an offset (modify in place).
    Write {
        #[arg(long, value_parser = offset)]
        offset: u64,
        remote: String,
    },
    /// Append stdin to a file.
    Append { remote: String },
    /// Show a file's or directory's attributes and chunk locations.
    Stat {
        #[arg(long)]
        json: bool,
        path: String,
    },
    /// Change the replication factor of a file, or of a directory and
    /// everything below it (new files in it inherit it too). Replicas are
    /// added or dropped in the background; `shoal admin fsck` shows progress.
    Setrep {
        #[arg(value_parser = replication)]
        replication: u32,
        path: String,
    },
    /// An interactive prompt with the prototype's menu.
    Shell,
    /// Cluster administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run COMMAND while holding PATH's lock (like flock(1)); exits with COMMAND's code.
    /// `--timeout` bounds the wait for the lock; without it the wait has no bound.
    Lock {
        /// Take a shared lock (readers) instead of an exclusive one.
        #[arg(long)]
        shared: bool,
        /// The lock session's TTL: if this process dies or stalls, the lock
        /// passes on this long after its last keep-alive.
        #[arg(long, default_value = "10s", value_parser = duration)]
        ttl: Duration,
        path: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Serve the web dashboard and its JSON API (/api/v1/...) for the
    /// cluster given with `--meta`, until Ctrl-C.
    Http {
        /// Address to listen on, HOST:PORT.
        #[arg(long, default_value = "127.0.0.1:7180")]
        listen: SocketAddr,
    },
    /// Serve an S3-compatible gateway for the cluster given with `--meta`,
    /// until Ctrl-C. Buckets are top-level directories, keys paths below.
    S3(S3Args),
    /// Mount the cluster given with `--meta` at MOUNTPOINT (FUSE; as root),
    /// in the foreground until SIGINT or SIGTERM (or `umount MOUNTPOINT`):
    /// then every write still held is sent and the mount is taken down.
    Mount(MountArgs),
    /// Measure throughput and latency against a running cluster (failover: leader failover, on a cluster of its own).
    Bench(BenchArgs),
    /// Certificates for mutual TLS: a cluster CA, and certificates signed by it.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Make a cluster CA: DIR/ca.pem, and DIR/ca.key readable by you only
    /// (keep it off the servers: only `cert issue` needs it), and the cluster
    /// key DIR/cluster.key (readable by you only) that signs chunk
    /// capabilities. On a CA folder without a cluster key, adds one.
    Init {
        dir: PathBuf,
        /// Keep this cluster key (a CA folder's cluster.key) instead of
        /// making one: for a CA that replaces the cluster's current one, so
        /// nodes with certificates of either CA accept each other's chunk
        /// capabilities.
        #[arg(long, value_name = "FILE")]
        cluster_key: Option<PathBuf>,
    },
    /// Sign a certificate with the CA in DIR: writes cert.pem, key.pem
    /// (readable by you only) and a copy of ca.pem into a folder `--tls`
    /// takes; for `--role node` also a copy of the cluster key.
    Issue {
        /// The CA's folder (from `shoal cert init`).
        dir: PathBuf,
        /// Who holds it: 1 to 64 letters, digits, '.', '_' or '-'.
        #[arg(long)]
        name: String,
        /// node: a meta node or chunk server; admin: every client call;
        /// user: files only, no cluster changes.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The folder to write [default: DIR/NAME].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = shoal_tls::CERT_DAYS_DEFAULT, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
        /// IP addresses to add as subject alternative names (for other tools;
        /// Shoal's own clients check the CA and the node role, not addresses).
        #[arg(long, value_delimiter = ',')]
        ip: Vec<std::net::IpAddr>,
        /// DNS names to add as subject alternative names.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// Also trust the CA certificates in FILE (repeatable): the folder's
        /// ca.pem holds DIR's CA and then these. For the time one CA
        /// replaces another, when every process must trust both.
        #[arg(long, value_name = "FILE")]
        trust: Vec<PathBuf>,
    },
}

/// The roles of `shoal cert issue --role`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleArg {
    Node,
    Admin,
    User,
}

impl From<RoleArg> for shoal_tls::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Node => shoal_tls::Role::Node,
            RoleArg::Admin => shoal_tls::Role::Admin,
            RoleArg::User => shoal_tls::Role::User,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct MountArgs {
    /// An existing, empty directory.
    pub mountpoint: PathBuf,
    /// Mount read-only: every change fails with EROFS.
    #[arg(long)]
    pub read_only: bool,
    /// Let users other than the one who mounts use the mount (the kernel
    /// still checks each file's mode, owner and group).
    #[arg(long)]
    pub allow_other: bool,
    /// How long the kernel may keep a file's attributes (size, mode, times)
    /// without asking the cluster, in milliseconds (0 to 60000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub attr_ttl_ms: u64,
    /// How long the kernel may keep a name's lookup without asking the
    /// cluster, in milliseconds (0 to 60000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub entry_ttl_ms: u64,
    /// The TTL of the lock sessions that hold the cluster locks taken
    /// through the mount (flock(2), and fcntl(2) with
    /// --cluster-fcntl-locks), 500ms to 10m: a mount that is silent this
    /// long (dead, paused, cut off) loses its locks to the next waiters, and
    /// its writes under them are refused.
    #[arg(long, default_value = "10s", value_parser = lock_ttl)]
    pub lock_ttl: Duration,
    /// How long files unlinked while open here outlive this mount's
    /// silence, 500ms to 10m: a mount that is dead, paused or cut off this
    /// long has them freed (their data is gone for its open handles too).
    #[arg(long, default_value = "2m", value_parser = lock_ttl)]
    pub unlinked_ttl: Duration,
    /// Make fcntl(2) (POSIX) record locks cluster locks too: byte ranges
    /// held across every mount of the cluster, so programs
    /// on several machines that lock one file (SQLite in rollback-journal
    /// mode) exclude each other. Each lock change is then a round to meta.
    /// flock(2) locks then become whole-file byte ranges and carry no
    /// fencing token (the kernel's requests do not say which kind they
    /// are). Without it the kernel keeps fcntl locks, local to this mount,
    /// and flock(2) locks are fencing cluster locks.
    #[arg(long)]
    pub cluster_fcntl_locks: bool,
}

/// A lock session TTL meta accepts.
fn lock_ttl(s: &str) -> Result<Duration, String> {
    let ttl = duration(s)?;
    if !(Duration::from_millis(500)..=Duration::from_secs(600)).contains(&ttl) {
        return Err(format!("must be between 500ms and 10m, got {s}"));
    }
    Ok(ttl)
}

#[derive(clap::Args, Debug, Clone)]
pub struct S3Args {
    /// Address to listen on, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7190")]
    pub listen: SocketAddr,
    /// The access key of the gateway's user.
    #[arg(long, env = "SHOAL_S3_ACCESS_KEY")]
    pub access_key: Option<String>,
    /// Its secret key.
    #[arg(long, env = "SHOAL_S3_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// A file of further users, one `ACCESS_KEY SECRET_KEY` per line.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Multipart uploads (and temporary objects) untouched this long are removed.
    #[arg(long, default_value = "24h", value_parser = duration)]
    pub upload_max_age: Duration,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// The meta nodes, their addresses and roles.
    Status {
        #[arg(long)]
        json: bool,
        /// Also show each node's checksum of its whole state at its applied
        /// index (nodes at the same index must agree); costs a pass over the state.
        #[arg(long)]
        digest: bool,
    },
    /// Change the meta group: add or remove a meta node.
    Meta {
        #[command(subcommand)]
        command: MetaCommand,
    },
    /// The chunk servers, their state and usage.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Who holds PATH's lock and who waits for it, in order.
    Locks {
        #[arg(long)]
        json: bool,
        path: String,
    },
    /// The health of every chunk: under-replicated, missing and corrupt
    /// chunks and the paths affected. Exits 0 only when the cluster is healthy.
    Fsck {
        #[arg(long)]
        json: bool,
    },
    /// Drain a chunk server before removing it: no new replicas go there, and
    /// its replicas are copied elsewhere, then dropped. It is empty when
    /// `shoal admin nodes` lists no chunks for it.
    Decommission {
        /// Stop draining it; its remaining replicas count again.
        #[arg(long)]
        cancel: bool,
        /// The chunk server's address, HOST:PORT.
        addr: String,
    },
    /// Move replicas from fuller to emptier chunk servers (for example onto a
    /// new one), in the background within the repair budget.
    Rebalance,
    /// Pause or resume re-replication, drops of extra replicas and moves
    /// (for maintenance: restarting a server then copies nothing).
    Repair {
        #[command(subcommand)]
        command: RepairCommand,
    },
    /// A live view of the cluster: health, capacity, meta nodes and chunk
    /// servers, redrawn in place until `q` or Ctrl-C. When stdout is not a
    /// terminal (or with --once) it prints one frame and exits.
    Top {
        /// Time between two refreshes (100ms to 1h).
        #[arg(long, default_value = "2s", value_parser = top_interval)]
        interval: Duration,
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum RepairCommand {
    Pause,
    Resume,
}

#[derive(Subcommand, Debug)]
pub enum MetaCommand {
    /// Add a meta node (started with `shoal meta --join`): it catches up as a
    /// learner, then becomes a voter.
    Add {
        id: u64,
        /// Its address, HOST:PORT.
        addr: String,
    },
    /// Remove a meta node from the group (for example a dead one, before replacing it).
    Remove { id: u64 },
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    pub workload: Workload,
    /// Concurrent clients (tasks, each with its own connection) [default: 1; 4 for failover; 16 for meta-scale].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub clients: Option<u32>,
    /// Files (small-*) or operation rounds (meta, meta-read).
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Bytes per file: 4KiB for small-*, 1GiB for seq-*.
    #[arg(long, value_parser = size)]
    pub size: Option<u64>,
    /// Replication of the files written (default: the cluster's).
    #[arg(long)]
    pub replication: Option<u32>,
    /// Remote directory for the benchmark's files.
    #[arg(long, default_value = "/.bench")]
    pub dir: String,
    /// Leave the files in place (seq-read and small-read reuse them); failover
    /// keeps its cluster's temporary directory.
    #[arg(long)]
    pub keep: bool,
    #[arg(long)]
    pub json: bool,
    /// rand-read: size of the file the reads are spread over.
    #[arg(long, default_value = "256MiB", value_parser = size)]
    pub span: u64,
    /// failover: leader kills measured. The p99 is by nearest rank, so with
    /// fewer than 100 kills it is the max.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub kills: u32,
    /// failover: where the bench's own cluster keeps its data and logs
    /// (default: a temporary directory, removed afterwards unless --keep).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// meta-scale: files in the namespace it builds (directories of 1,000;
    /// 100,000 by default). failover: files made first, the same way but by
    /// 64 clients, so that the leader changes hands over a namespace of that
    /// size, and checked after the kills (none by default).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub files: Option<u64>,
    /// meta-scale: also SIGKILL a follower meta node (found on this machine by
    /// its --listen address) and time its restart; it is started again
    /// detached from `shoal up`, and its pid printed.
    #[arg(long)]
    pub restart: bool,
}

impl BenchArgs {
    /// What `bench` runs, with the defaults that depend on the workload filled in.
    pub fn options(self) -> bench::Options {
        let clients = self.clients.unwrap_or(match self.workload {
            Workload::Failover => 4,
            Workload::MetaScale => 16,
            _ => 1,
        });
        bench::Options {
            workload: self.workload,
            clients,
            count: self.count,
            size: self.size,
            replication: self.replication,
            dir: self.dir,
            keep: self.keep,
            json: self.json,
            span_bytes: self.span,
            kills: self.kills,
            data_dir: self.data_dir,
            files: self.files.unwrap_or(match self.workload {
                Workload::MetaScale => 100_000,
                _ => 0,
            }),
            restart: self.restart,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Where every node keeps its data and log.
    #[arg(long, default_value = "shoal-data")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub meta_nodes: u32,
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub chunk_nodes: u32,
    #[arg(long, default_value_t = 2, value_parser = replication)]
    pub replication: u32,
    /// Meta i listens on base-port+i-1, chunk j on base-port+10+j-1; their
    /// HTTP ports (metrics, dashboard) are base-port+20+i-1 and base-port+30+j-1.
    #[arg(long, default_value_t = 7100)]
    pub base_port: u16,
    #[arg(long, default_value = "64MiB", value_parser = size)]
    pub chunk_size: u64,
    /// A chunk server silent this long is dead.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub dead_after: Duration,
    /// Host to bind every node to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Bandwidth all re-replication copies may use together (0: no limit).
    #[arg(long, default_value = "256MiB/s", value_parser = rate)]
    pub repair_rate: u64,
    /// The meta nodes serve every linearizable read after a read-index
    /// round, not under the leader's lease (`shoal meta --no-read-lease`).
    #[arg(long)]
    pub no_read_lease: bool,
    /// How fast each chunk server's scrubber re-verifies checksums (0: off).
    #[arg(long, default_value = "32MiB/s", value_parser = rate)]
    pub scrub_rate: u64,
    /// Also serve the S3 gateway on HOST:PORT (keys from `$SHOAL_S3_ACCESS_KEY`
    /// and `$SHOAL_S3_SECRET_KEY`, or made up and printed).
    #[arg(long)]
    pub s3: Option<SocketAddr>,
    /// Also mount the cluster at DIR (FUSE; as root), with the defaults of
    /// `shoal mount`; it is unmounted before the nodes stop.
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct MetaArgs {
    /// This node's id, 1 or more.
    #[arg(long)]
    pub id: u64,
    /// What to bind, HOST:PORT (0.0.0.0 binds every interface).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The address others use to reach this node, HOST:PORT, when it differs
    /// from --listen (with --peers, this node's entry there must match it).
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Every meta node of the group: ID=HOST:PORT,...
    #[arg(long, value_delimiter = ',', value_parser = peer)]
    pub peers: Vec<(u64, String)>,
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value = "64MiB", value_parser = size)]
    pub chunk_size: u64,
    /// Default replication factor of new files.
    #[arg(long, default_value_t = 3, value_parser = replication)]
    pub replication: u32,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub dead_after: Duration,
    /// Start empty and wait to be added by `shoal admin meta add` instead of
    /// forming a new group (for a new or replacement node).
    #[arg(long, conflicts_with = "peers")]
    pub join: bool,
    /// Serve every linearizable read after a read-index round with the other
    /// meta nodes, instead of from the leader's state under its lease (the
    /// lease assumes the nodes' clocks run at nearly the same rate).
    #[arg(long)]
    pub no_read_lease: bool,
    /// Raft log entries between two snapshots (older entries are then compacted away).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
    /// Re-replication copies in flight cluster-wide, at most.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub repair_copies: u64,
    /// How long the chunk capabilities this node signs are valid (1s to 24h);
    /// clients ask again for expired ones.
    #[arg(long, default_value = "5m", value_parser = duration)]
    pub capability_lifetime: Duration,
    /// Average bandwidth all re-replication copies may use together (0: no limit).
    #[arg(long, default_value = "256MiB/s", value_parser = rate)]
    pub repair_rate: u64,
    /// Serve HTTP on this address: Prometheus metrics at /metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<SocketAddr>,
}

#[derive(Args, Debug, Clone)]
pub struct ChunkArgs {
    /// What to bind, HOST:PORT (0.0.0.0 binds every interface).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The address meta, clients and other chunk servers use to reach this
    /// one, HOST:PORT; needed when --listen is a wildcard.
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    #[arg(long)]
    pub dir: PathBuf,
    /// Most bytes this server may hold (default: the free space of its disk).
    #[arg(long, value_parser = size)]
    pub capacity: Option<u64>,
    /// Period of heartbeats to meta.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub heartbeat: Duration,
    /// How fast the scrubber re-reads replicas to verify their checksums (0: off).
    #[arg(long, default_value = "32MiB/s", value_parser = rate)]
    pub scrub_rate: u64,
    /// Shortest time between the starts of two scrub passes over every replica.
    #[arg(long, default_value = "24h", value_parser = duration)]
    pub scrub_every: Duration,
    /// How long past its expiry a chunk capability is still taken: the clock
    /// skew with meta nodes this server tolerates (at most 1h).
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub capability_skew: Duration,
    /// Serve HTTP on this address: Prometheus metrics at /metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub http: Option<SocketAddr>,
}

pub fn duration(s: &str) -> Result<Duration, String> {
    shoal_core::units::parse_duration(s)
}

pub fn size(s: &str) -> Result<u64, String> {
    shoal_core::units::parse_size(s)
}

pub fn rate(s: &str) -> Result<u64, String> {
    shoal_core::units::parse_rate(s)
}

/// Bounds on `admin top --interval`: faster than 100 ms only loads the
/// leader, slower than an hour is no longer a live view.
const TOP_INTERVAL_MIN: Duration = Duration::from_millis(100);
const TOP_INTERVAL_MAX: Duration = Duration::from_secs(3600);

fn top_interval(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if !(TOP_INTERVAL_MIN..=TOP_INTERVAL_MAX).contains(&d) {
        return Err(format!("{s:?}: the interval must be between 100ms and 1h"));
    }
    Ok(d)
}

fn offset(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| format!("{s:?} is not a byte offset: expected a whole number, 0 or more"))
}

fn replication(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n) if (1..=16).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a replication factor: expected 1 to 16")),
    }
}

fn peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected ID=HOST:PORT"))?;
    let id = id.parse().map_err(|_| format!("{s:?}: the id must be a number"))?;
    if addr.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
        return Err(format!("{s:?}: expected ID=HOST:PORT"));
    }
    Ok((id, addr.to_string()))
}
