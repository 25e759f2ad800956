//! A cluster of `shoal meta` and `shoal chunk` child processes on this
//! machine: what `shoal up` runs, and what `shoal bench failover` kills.
//!
//! Meta node i (0-based) has Raft id i+1 and is named `meta-{i+1}`, chunk
//! server j is `chunk-{j+1}`; each keeps its data in DIR/NAME and appends its
//! output to DIR/NAME.log, so a node restarted with the same arguments
//! resumes with its data. Every child gets SIGTERM if the thread that spawned
//! it exits (PDEATHSIG), so spawn from the main thread or a runtime worker,
//! never from a short-lived blocking thread. Dropping a [`LocalCluster`]
//! stops every child still running.
//!
//! TLS: with [`Spec::tls`], the cluster's CA and every certificate live in
//! DIR/tls (made on the first start, kept on later ones): the CA in
//! DIR/tls/ca, node NAME's credentials in DIR/tls/NAME, and an admin's in
//! DIR/tls/admin, which [`LocalCluster::transport`] uses.
//!
//! Ports: `shoal up` takes the ones it is told. The benches, which need
//! throw-away ports, use [`LocalCluster::start_on_free_ports`]: ports from
//! [`ports`], outside the kernel's ephemeral range, and a fresh start on new
//! ports when a node finds its port taken.

pub mod ports;

use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use shoal_client::{Client, Transport};

/// Starts on fresh ports after a node found its port taken, at most.
const START_ATTEMPTS_MAX: u32 = 5;
/// How long children get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of a node's log quoted when it dies unexpectedly.
const LOG_TAIL_LINES: usize = 5;

/// What to start.
pub struct Spec {
    /// Every node's data directory and log live here.
    pub dir: PathBuf,
    /// One HOST:PORT per meta node.
    pub meta_addrs: Vec<String>,
    /// One HOST:PORT per chunk server.
    pub chunk_addrs: Vec<String>,
    /// The HTTP address (`--http`) of each meta node, and of each chunk
    /// server; nodes past the end of a list serve no HTTP.
    pub meta_http_addrs: Vec<String>,
    pub chunk_http_addrs: Vec<String>,
    pub chunk_size_bytes: u64,
    pub replication: u32,
    pub dead_after: Duration,
    /// More flags for every meta node, and for every chunk server.
    pub meta_flags: Vec<String>,
    pub chunk_flags: Vec<String>,
    /// Mutual TLS (see the module docs); false starts every node `--insecure`.
    pub tls: bool,
}

/// The folder of the cluster's CA and credentials, under its data directory.
pub fn tls_dir(dir: &Path) -> PathBuf {
    dir.join("tls")
}

/// The admin credentials folder of a cluster kept in `dir`.
pub fn admin_tls_dir(dir: &Path) -> PathBuf {
    tls_dir(dir).join("admin")
}

/// Makes (unless they exist) the CA, a node certificate for each of `nodes`
/// and the admin's, and returns the admin's transport.
fn ensure_pki(dir: &Path, nodes: &[String]) -> anyhow::Result<Transport> {
    let tls = tls_dir(dir);
    let ca = tls.join("ca");
    for name in nodes {
        let identity = shoal_tls::Identity::new(name, shoal_tls::Role::Node)?;
        shoal_tls::ensure(&ca, &identity, &tls.join(name))
            .with_context(|| format!("certificates in {}", tls.display()))?;
    }
    let admin = shoal_tls::Identity::new("admin", shoal_tls::Role::Admin)?;
    let admin_dir = admin_tls_dir(dir);
    shoal_tls::ensure(&ca, &admin, &admin_dir).with_context(|| format!("certificates in {}", tls.display()))?;
    Ok(Transport::load(&admin_dir)?)
}

/// One child process, with what it takes to start it again.
pub struct Node {
    pub name: String,
    pub addr: String,
    /// Where it serves HTTP, if it does.
    pub http: Option<String>,
    pub log: PathBuf,
    args: Vec<String>,
    /// None once the node was killed or stopped.
    child: Option<Child>,
}

impl Node {
    fn start(dir: &Path, name: String, addr: String, http: Option<String>, args: Vec<String>) -> anyhow::Result<Node> {
        let log = dir.join(format!("{name}.log"));
        let mut node = Node { name, addr, http, log, args, child: None };
        node.respawn()?;
        Ok(node)
    }

    /// Starts the process (again) with the same arguments, data and log.
    fn respawn(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "{} is still running", self.name);
        let exe = std::env::current_exe().context("locating the shoal binary")?;
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(&self.args).stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        // Every flag a node needs is in its arguments; a config file meant
        // for `shoal up` itself must not fill in a node's.
        cmd.env_remove("SHOAL_CONFIG");
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to send
        // SIGTERM to this child when the parent thread exits.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        self.child = Some(cmd.spawn().with_context(|| format!("starting {}", self.name))?);
        Ok(())
    }

    /// The exit status if the process has ended by itself (None while it runs
    /// or after it was killed or stopped).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Whether the node exited because its port was taken.
    fn bind_failed(&self) -> bool {
        ports::bind_failed(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last lines of the node's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

pub struct LocalCluster {
    pub dir: PathBuf,
    /// How to reach the cluster: its admin credentials, or plaintext.
    pub transport: Transport,
    pub meta_addrs: Vec<String>,
    pub metas: Vec<Node>,
    pub chunks: Vec<Node>,
}

impl LocalCluster {
    /// Spawns every node; [`Self::wait_ready`] waits until they form a cluster.
    pub fn start(spec: &Spec) -> anyhow::Result<LocalCluster> {
        std::fs::create_dir_all(&spec.dir).with_context(|| format!("creating {}", spec.dir.display()))?;
        let data = |name: &str| spec.dir.join(name).display().to_string();
        let peers: Vec<String> = spec.meta_addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let names: Vec<String> = (0..spec.meta_addrs.len())
            .map(|i| format!("meta-{}", i + 1))
            .chain((0..spec.chunk_addrs.len()).map(|j| format!("chunk-{}", j + 1)))
            .collect();
        let transport = if spec.tls { ensure_pki(&spec.dir, &names)? } else { Transport::Insecure };
        let security = |name: &str| -> Vec<String> {
            match spec.tls {
                true => vec!["--tls".into(), tls_dir(&spec.dir).join(name).display().to_string()],
                false => vec!["--insecure".into()],
            }
        };
        let mut cluster = LocalCluster {
            dir: spec.dir.clone(),
            transport,
            meta_addrs: spec.meta_addrs.clone(),
            metas: vec![],
            chunks: vec![],
        };
        for (i, addr) in spec.meta_addrs.iter().enumerate() {
            let name = format!("meta-{}", i + 1);
            let mut args: Vec<String> = vec![
                "meta".into(),
                "--id".into(),
                (i + 1).to_string(),
                "--listen".into(),
                addr.clone(),
                "--peers".into(),
                peers.join(","),
                "--dir".into(),
                data(&name),
                "--chunk-size".into(),
                spec.chunk_size_bytes.to_string(),
                "--replication".into(),
                spec.replication.to_string(),
                "--dead-after".into(),
                format!("{}ms", spec.dead_after.as_millis()),
            ];
            let http = spec.meta_http_addrs.get(i).cloned();
            if let Some(h) = &http {
                args.extend(["--http".to_string(), h.clone()]);
            }
            args.extend(security(&name));
            args.extend(spec.meta_flags.iter().cloned());
            // On error, dropping `cluster` stops the nodes already started.
            cluster.metas.push(Node::start(&spec.dir, name, addr.clone(), http, args)?);
        }
        for (j, addr) in spec.chunk_addrs.iter().enumerate() {
            let name = format!("chunk-{}", j + 1);
            let mut args: Vec<String> = vec![
                "chunk".into(),
                "--listen".into(),
                addr.clone(),
                "--meta".into(),
                spec.meta_addrs.join(","),
                "--dir".into(),
                data(&name),
            ];
            let http = spec.chunk_http_addrs.get(j).cloned();
            if let Some(h) = &http {
                args.extend(["--http".to_string(), h.clone()]);
            }
            args.extend(security(&name));
            args.extend(spec.chunk_flags.iter().cloned());
            cluster.chunks.push(Node::start(&spec.dir, name, addr.clone(), http, args)?);
        }
        Ok(cluster)
    }

    /// Starts `meta_nodes` meta nodes and `chunk_servers` chunk servers on
    /// free loopback ports (`spec`'s addresses are replaced) and waits until
    /// they form a cluster. When a node could not bind its port because
    /// something took it after it was picked (see [`ports`]), the attempt is
    /// stopped, its directories and logs are moved to `DIR/failed-start-N`,
    /// and the cluster starts again on fresh ports.
    pub async fn start_on_free_ports(
        spec: &mut Spec,
        meta_nodes: usize,
        chunk_servers: usize,
        ready_timeout: Duration,
    ) -> anyhow::Result<LocalCluster> {
        for attempt in 1.. {
            let addrs = free_loopback_addrs(meta_nodes + chunk_servers)?;
            spec.meta_addrs = addrs[..meta_nodes].to_vec();
            spec.chunk_addrs = addrs[meta_nodes..].to_vec();
            let mut cluster = LocalCluster::start(spec)?;
            let Err(e) = cluster.wait_ready(ready_timeout).await else {
                return Ok(cluster);
            };
            let lost: Vec<String> = cluster.nodes_mut().filter(|n| n.bind_failed()).map(|n| n.addr.clone()).collect();
            if lost.is_empty() || attempt == START_ATTEMPTS_MAX {
                return Err(e);
            }
            cluster.stop();
            let aside = spec.dir.join(format!("failed-start-{attempt}"));
            cluster.move_aside(&aside)?;
            tracing::warn!(?lost, "ports taken before the nodes bound them; starting again on fresh ports");
        }
        unreachable!("the loop returns by its last attempt")
    }

    /// Moves every node's directory and log into `to` (for a failed start).
    fn move_aside(&self, to: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
        for n in self.metas.iter().chain(&self.chunks) {
            for from in [self.dir.join(&n.name), n.log.clone()] {
                let Some(name) = from.file_name() else { continue };
                if from.exists() {
                    std::fs::rename(&from, to.join(name)).with_context(|| format!("moving {}", from.display()))?;
                }
            }
        }
        Ok(())
    }

    pub fn nodes_mut(&mut self) -> impl Iterator<Item = &mut Node> {
        self.metas.iter_mut().chain(self.chunks.iter_mut())
    }

    /// Fails, quoting its log, if any node has ended by itself; `during` says
    /// what was going on.
    pub fn check_running(&mut self, during: &str) -> anyhow::Result<()> {
        for n in self.nodes_mut() {
            if let Some(status) = n.exited() {
                bail!("{} exited {during} ({status}); its log ends with:\n{}", n.name, n.log_tail());
            }
        }
        Ok(())
    }

    /// Waits until meta has a leader that hears every chunk server.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let client = Client::connect_with(&self.meta_addrs, Duration::from_secs(2), self.transport.clone()).await?;
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running("during start-up")?;
            if let Ok(servers) = client.chunk_servers().await
                && servers.iter().filter(|s| s.state == "alive").count() >= self.chunks.len()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster was not ready within {}s; see the logs in {}",
                    timeout.as_secs(),
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGKILLs meta node `i` and returns when the signal was sent; the
    /// process is reaped before this returns.
    pub fn kill_meta(&mut self, i: usize) -> anyhow::Result<Instant> {
        let node = &mut self.metas[i];
        let mut child = node.child.take().with_context(|| format!("{} is not running", node.name))?;
        child.kill().with_context(|| format!("killing {}", node.name))?;
        let at = Instant::now();
        child.wait().with_context(|| format!("reaping {}", node.name))?;
        Ok(at)
    }

    /// Starts meta node `i` again with the same arguments and data.
    pub fn restart_meta(&mut self, i: usize) -> anyhow::Result<()> {
        self.metas[i].respawn()
    }

    /// Stops every running node: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&mut self) {
        let mut running: Vec<Child> = self.nodes_mut().filter_map(|n| n.child.take()).collect();
        for c in &running {
            // SAFETY: sending a signal to our own child's pid.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for c in running.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` distinct free loopback addresses (HOST:PORT), from [`ports`].
pub fn free_loopback_addrs(n: usize) -> anyhow::Result<Vec<String>> {
    (0..n).map(|_| Ok(format!("127.0.0.1:{}", ports::free_port().context("picking a free loopback port")?))).collect()
}

/// The addresses of `addrs` that cannot be bound now (something listens there).
pub fn addrs_in_use<'a>(addrs: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    addrs
        .into_iter()
        .filter(
            |a| matches!(std::net::TcpListener::bind(a.as_str()), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse),
        )
        .cloned()
        .collect()
}
