//! Test harness: real `shoal` processes on loopback, in temporary directories.
//!
//! [`Cluster::start`] launches meta nodes and chunk servers as child processes
//! of the test (killed when the `Cluster` drops) and waits until a leader is
//! elected and every chunk server is heard. Helpers named `must_*` panic with
//! the command's output when it does not succeed.
//!
//! Ports: every node gets a port from [`free_port`], which never hands out the
//! same port twice in this process and picks it outside the kernel's ephemeral
//! range, so neither another test's `bind(:0)` nor any outgoing connection can
//! take it, before the first start or while a killed node waits for its
//! restart. Only another program that binds that very port in between can;
//! the node then exits with EADDRINUSE, and `Cluster::start` starts the whole
//! cluster again on fresh ports (a restart tries the same port again for a
//! while, since the node must keep its address).
//!
//! Tools: the harness runs only `shoal`; signals go through `libc::kill`.
//! What needs more (network namespaces: `ip`, `nft`) asks for it in [`netns`]
//! and is skipped with a message when it is missing, through [`skipping`],
//! which fails the test instead where everything must run (`.ci/run` sets
//! `SHOAL_REQUIRE_ALL=1`).

pub mod mount;
pub mod netns;
pub mod pki;
/// The same port picker the `shoal` binary's local clusters use.
#[path = "../../../src/local/ports.rs"]
pub mod ports;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use pki::{pki, shoal_command};

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// Says loudly that `test` skips `what` because `why`, or panics when
/// `SHOAL_REQUIRE_ALL` is set: in CI a missing tool is a failed install, not
/// a reason to test less.
pub fn skipping(test: &str, what: &str, why: &str) {
    let message = format!("{test}: {what} cannot run: {why}");
    if std::env::var_os("SHOAL_REQUIRE_ALL").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("{message} (SHOAL_REQUIRE_ALL is set, so this fails instead of skipping)");
    }
    eprintln!("\n*** SKIPPED: {message}; .ci/run installs what it needs (as root). ***\n");
}

/// A child process, and the process group it leads, killed and reaped when
/// this drops, also on a panic: what the child started goes with it.
pub struct Reaped(pub Child);

impl Reaped {
    /// Spawns `cmd` as the leader of a process group of its own.
    pub fn spawn(cmd: &mut Command) -> Reaped {
        use std::os::unix::process::CommandExt;
        Reaped(cmd.process_group(0).spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")))
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            // The group has the child's pid when the child leads one (spawn,
            // or setsid); otherwise this finds no group and does nothing.
            signal(-(self.0.id() as i32), libc::SIGKILL).ok();
            self.0.kill().ok();
        }
        self.0.wait().ok();
    }
}

/// SIGKILLs every process whose command line contains `marker` (a path of
/// the test's own), for programs that leave their process group, as browsers
/// do.
pub fn kill_processes_mentioning(marker: &str) {
    let Ok(dir) = std::fs::read_dir("/proc") else { return };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if pid != std::process::id() as i32 && String::from_utf8_lossy(&cmdline).contains(marker) {
            signal(pid, libc::SIGKILL).ok();
        }
    }
}

/// Generous bound on anything that should take a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);
/// Polls `ok` until it holds, every 100 ms; fails the test, naming `what`,
/// once `limit` has passed.
pub fn wait_until_within(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`wait_until_within`] [`PATIENCE`].
pub fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    wait_until_within(PATIENCE, what, ok);
}

/// Whole-cluster starts on fresh ports after a node found its port taken, at most.
const START_ATTEMPTS_MAX: u32 = 5;
/// How long a restarted node keeps trying its own port when something else holds it.
const REBIND_PATIENCE: Duration = Duration::from_secs(10);
/// What a meta node logs once it listens (after its bind, before it serves).
const META_SERVING: &str = "meta node serving";

/// A free loopback port that no other call in this process got (see the module doc).
pub fn free_port() -> u16 {
    ports::free_port().expect("a free loopback port")
}

/// Sends `signal` to `pid` (a negative pid: to that process group).
pub fn signal(pid: i32, signal: libc::c_int) -> std::io::Result<()> {
    // SAFETY: kill(2) has no memory effects; the pid is one of our children.
    if unsafe { libc::kill(pid, signal) } == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

/// A node could not bind its address: another socket held it.
#[derive(Debug)]
pub struct PortTaken {
    pub node: String,
    pub addr: String,
}

pub struct Options {
    pub meta_nodes: usize,
    pub chunk_nodes: usize,
    pub replication: u32,
    pub chunk_size: &'static str,
    /// Per chunk server: `--capacity` (None: the disk's).
    pub capacities: Vec<Option<&'static str>>,
    /// More flags for every meta node.
    pub meta_args: Vec<&'static str>,
    /// More flags for every chunk server.
    pub chunk_args: Vec<&'static str>,
    /// Run each meta node in its own network namespace (see [`netns`]).
    pub meta_netns: Option<netns::Net>,
    /// With `meta_netns`: each chunk server in its own namespace too, the
    /// ones after the meta nodes' (the `Net` needs one per node, and one per
    /// client a test runs inside).
    pub chunk_netns: bool,
    /// For a test of the harness: the first attempt finds meta-1's port
    /// taken, as if another program had bound it between pick and bind.
    pub take_a_meta_port_once: bool,
    /// Give every node an HTTP port (`--http`), in [`Cluster::meta_http`]
    /// and [`Cluster::chunk_http`].
    pub http: bool,
    /// Plaintext: every node and every [`Cluster::shoal`] gets `--insecure`.
    pub insecure: bool,
    /// Every node binds the wildcard address (`--listen 0.0.0.0:PORT`);
    /// others reach it at 127.0.0.1:PORT (its `--peers` entry, or
    /// `--advertise` for chunk servers).
    pub wildcard_listen: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            meta_nodes: 1,
            chunk_nodes: 3,
            replication: 2,
            chunk_size: "1MiB",
            capacities: Vec::new(),
            meta_args: Vec::new(),
            chunk_args: Vec::new(),
            meta_netns: None,
            chunk_netns: false,
            take_a_meta_port_once: false,
            http: false,
            insecure: false,
            wildcard_listen: false,
        }
    }
}

pub struct Node {
    pub name: String,
    /// What runs `shoal` (empty: run it directly), such as `ip netns exec NS`.
    pub prefix: Vec<String>,
    pub args: Vec<String>,
    pub dir: PathBuf,
    pub child: Option<Child>,
    /// HOST:PORT it listens on, also after a restart.
    pub addr: String,
}

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub metas: Vec<Node>,
    pub chunks: Vec<Node>,
    pub meta_addrs: Vec<String>,
    /// Set when the meta nodes run in network namespaces.
    pub net: Option<netns::Net>,
    /// How many starts from scratch it took (1 unless a port was taken).
    pub start_attempts: u32,
    /// Each node's HTTP address, when [`Options::http`] asked for them.
    pub meta_http: Vec<Option<String>>,
    pub chunk_http: Vec<Option<String>>,
    /// Started with [`Options::insecure`].
    pub insecure: bool,
}

fn spawn(prefix: &[String], args: &[String], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let mut cmd = match prefix.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(SHOAL);
            c
        }
        None => Command::new(SHOAL),
    };
    cmd.args(args)
        .env("SHOAL_TLS", pki::credentials_for(args))
        .env("SHOAL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn shoal")
}

/// The length of a log now, to read what a new start adds to it.
fn log_len(log: &Path) -> usize {
    std::fs::metadata(log).map_or(0, |m| m.len() as usize)
}

/// What the log says after byte `from` (what the current start wrote).
fn log_since(log: &Path, from: usize) -> String {
    let bytes = std::fs::read(log).unwrap_or_default();
    String::from_utf8_lossy(bytes.get(from..).unwrap_or_default()).into_owned()
}

impl Cluster {
    /// Starts the cluster and waits until it is ready. When a node finds its
    /// port taken (see the module doc), everything is stopped and started
    /// again from scratch on fresh ports, at most [`START_ATTEMPTS_MAX`] times.
    pub fn start(mut opts: Options) -> Cluster {
        for attempt in 1..=START_ATTEMPTS_MAX {
            let mut c = Cluster::plan(&mut opts);
            c.start_attempts = attempt;
            let _taken = (attempt == 1 && opts.take_a_meta_port_once)
                .then(|| std::net::TcpListener::bind(&c.metas[0].addr).expect("take meta-1's port"));
            match c.start_every_node() {
                Ok(()) => {
                    c.must_be_ready(c.chunks.len());
                    return c;
                }
                Err(taken) => {
                    eprintln!(
                        "attempt {attempt}: {} could not bind {}, which something else took; starting again on fresh ports",
                        taken.node, taken.addr
                    );
                    // Dropping `c` kills what it started and removes its directory.
                    opts.meta_netns = c.net.take();
                }
            }
        }
        panic!("the cluster could not start in {START_ATTEMPTS_MAX} attempts: ports kept being taken");
    }

    /// Addresses, directories and arguments of every node (nothing runs yet).
    fn plan(opts: &mut Options) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        // Certificates first: they also give in-process clients theirs.
        pki();
        let meta_addrs: Vec<String> = (0..opts.meta_nodes)
            .map(|i| match &opts.meta_netns {
                // Each in its own namespace, so a fixed port cannot clash.
                Some(net) => net.addr(i, 7100),
                None => format!("127.0.0.1:{}", free_port()),
            })
            .collect();
        let peers: Vec<String> = meta_addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let http_addr = |i: usize, meta: bool| {
            opts.http.then(|| match (&opts.meta_netns, meta) {
                (Some(net), true) => net.addr(i, 7200),
                _ => format!("127.0.0.1:{}", free_port()),
            })
        };
        let mut metas = Vec::new();
        let mut meta_http = Vec::new();
        let mut chunk_http = Vec::new();
        let bind = |addr: &str| match opts.wildcard_listen {
            true => addr.replace("127.0.0.1:", "0.0.0.0:"),
            false => addr.to_string(),
        };
        for (i, addr) in meta_addrs.iter().enumerate() {
            let dir = tmp.path().join(format!("meta-{}", i + 1));
            let http = http_addr(i, true);
            let mut args: Vec<String> = [
                "meta",
                "--id",
                &(i + 1).to_string(),
                "--listen",
                &bind(addr),
                "--peers",
                &peers.join(","),
                "--dir",
                dir.to_str().unwrap(),
                "--chunk-size",
                opts.chunk_size,
                "--replication",
                &opts.replication.to_string(),
            ]
            .iter()
            .chain(&opts.meta_args)
            .map(|s| s.to_string())
            .collect();
            if opts.insecure {
                args.push("--insecure".to_string());
            }
            if let Some(h) = &http {
                args.extend(["--http".to_string(), h.clone()]);
            }
            meta_http.push(http);
            let prefix = opts.meta_netns.as_ref().map_or(Vec::new(), |n| n.exec_prefix(i));
            metas.push(Node { name: format!("meta-{}", i + 1), prefix, args, dir, child: None, addr: addr.clone() });
        }
        let mut chunks = Vec::new();
        for j in 0..opts.chunk_nodes {
            let dir = tmp.path().join(format!("chunk-{}", j + 1));
            let netns = opts.meta_netns.as_ref().filter(|_| opts.chunk_netns).map(|n| (n, opts.meta_nodes + j));
            let addr = match netns {
                Some((net, i)) => net.addr(i, 7300),
                None => format!("127.0.0.1:{}", free_port()),
            };
            let mut args: Vec<String> =
                ["chunk", "--listen", &bind(&addr), "--meta", &meta_addrs.join(","), "--dir", dir.to_str().unwrap()]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            if opts.wildcard_listen {
                args.extend(["--advertise".to_string(), addr.clone()]);
            }
            if let Some(Some(cap)) = opts.capacities.get(j) {
                args.extend(["--capacity".to_string(), cap.to_string()]);
            }
            args.extend(opts.chunk_args.iter().map(|a| a.to_string()));
            if opts.insecure {
                args.push("--insecure".to_string());
            }
            let http = http_addr(j, false);
            if let Some(h) = &http {
                args.extend(["--http".to_string(), h.clone()]);
            }
            chunk_http.push(http);
            let name = format!("chunk-{}", j + 1);
            let prefix = netns.map_or(Vec::new(), |(net, i)| net.exec_prefix(i));
            chunks.push(Node { name, prefix, args, dir, child: None, addr });
        }
        Cluster {
            tmp,
            metas,
            chunks,
            meta_addrs,
            net: opts.meta_netns.take(),
            start_attempts: 0,
            meta_http,
            chunk_http,
            insecure: opts.insecure,
        }
    }

    /// Spawns every meta node, waits until each listens, then does the same
    /// for every chunk server.
    fn start_every_node(&mut self) -> Result<(), PortTaken> {
        let logs_from: Vec<usize> = (0..self.metas.len()).map(|i| self.spawn_meta(i)).collect();
        for (i, from) in logs_from.into_iter().enumerate() {
            self.await_meta(i, from)?;
        }
        for j in 0..self.chunks.len() {
            self.try_start_chunk(j)?;
        }
        Ok(())
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.tmp.path().join(format!("{name}.log"))
    }

    /// Starts meta node `i` (again, with its data) and waits until it
    /// listens. A port held by something else is tried again for
    /// [`REBIND_PATIENCE`]: the node must keep its address.
    pub fn start_meta(&mut self, i: usize) {
        let deadline = Instant::now() + REBIND_PATIENCE;
        loop {
            let from = self.spawn_meta(i);
            match self.await_meta(i, from) {
                Ok(()) => return,
                Err(taken) if Instant::now() < deadline => {
                    eprintln!("{} cannot bind {} yet; trying again", taken.node, taken.addr);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(taken) => panic!("{} could not bind {}: another socket holds it", taken.node, taken.addr),
            }
        }
    }

    /// Spawns meta node `i`; returns how long its log was before.
    fn spawn_meta(&mut self, i: usize) -> usize {
        let log = self.log(&self.metas[i].name);
        let from = log_len(&log);
        self.metas[i].child = Some(spawn(&self.metas[i].prefix, &self.metas[i].args, &log));
        from
    }

    /// Waits until meta node `i` logs that it serves (it has bound its
    /// port); an exit before that is a taken port, or a failure.
    fn await_meta(&mut self, i: usize, log_from: usize) -> Result<(), PortTaken> {
        let log = self.log(&self.metas[i].name);
        self.await_start(i, true, &log, |_, text| text.contains(META_SERVING), log_from)
    }

    /// Starts chunk server `j` (again, with its data, on its address) and
    /// waits until it listens; a taken port is tried again as in [`Self::start_meta`].
    pub fn start_chunk(&mut self, j: usize) {
        let deadline = Instant::now() + REBIND_PATIENCE;
        loop {
            match self.try_start_chunk(j) {
                Ok(()) => return,
                Err(taken) if Instant::now() < deadline => {
                    eprintln!("{} cannot bind {} yet; trying again", taken.node, taken.addr);
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(taken) => panic!("{} could not bind {}: another socket holds it", taken.node, taken.addr),
            }
        }
    }

    fn try_start_chunk(&mut self, j: usize) -> Result<(), PortTaken> {
        let node = &mut self.chunks[j];
        // The server writes the address it listens on once it has bound it.
        let _ = std::fs::remove_file(node.dir.join("listen-addr"));
        let log = self.tmp.path().join(format!("{}.log", node.name));
        let from = log_len(&log);
        node.child = Some(spawn(&node.prefix, &node.args, &log));
        self.await_start(j, false, &log, |node, _| node.dir.join("listen-addr").exists(), from)
    }

    /// Polls until `started(node, log text since the spawn)` holds, or the
    /// node exits: with [`PortTaken`] if its log says its port was taken,
    /// with a panic quoting the log otherwise.
    fn await_start(
        &mut self,
        index: usize,
        meta: bool,
        log: &Path,
        started: impl Fn(&Node, &str) -> bool,
        log_from: usize,
    ) -> Result<(), PortTaken> {
        let node = if meta { &mut self.metas[index] } else { &mut self.chunks[index] };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = log_since(log, log_from);
            if started(node, &text) {
                return Ok(());
            }
            let exited = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                node.child = None;
                if ports::bind_failed(&text) {
                    return Err(PortTaken { node: node.name.clone(), addr: node.addr.clone() });
                }
                panic!("{} exited during start-up ({status}); log:\n{text}", node.name);
            }
            assert!(Instant::now() < deadline, "{} did not start; log:\n{text}", node.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs a node.
    pub fn kill(node: &mut Node) {
        if let Some(mut c) = node.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    pub fn kill_chunk(&mut self, j: usize) {
        Self::kill(&mut self.chunks[j]);
    }

    pub fn kill_meta(&mut self, i: usize) {
        Self::kill(&mut self.metas[i]);
    }

    /// Sends SIGSTOP (`stop`) or SIGCONT to a running node.
    pub fn pause(node: &Node, stop: bool) {
        let pid = node.child.as_ref().expect("node is running").id() as i32;
        signal(pid, if stop { libc::SIGSTOP } else { libc::SIGCONT }).expect("signal a node");
    }

    /// The index of the meta leader, as the meta nodes report it (None: no leader now).
    pub fn leader(&self) -> Option<usize> {
        let out = self.shoal(&["admin", "status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let id = v["leader_id"].as_u64()?;
        self.metas
            .iter()
            .position(|m| v["nodes"].as_array().unwrap().iter().any(|n| n["id"] == id && n["addr"] == m.addr))
    }

    /// Waits (patiently) for a meta leader and returns its index.
    pub fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(l) = self.leader() {
                return l;
            }
            assert!(Instant::now() < deadline, "no meta leader");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill_all(&mut self) {
        for n in self.metas.iter_mut().chain(self.chunks.iter_mut()) {
            Self::kill(n);
        }
    }

    /// Waits until meta has a leader that hears `alive` chunk servers.
    pub fn must_be_ready(&self, alive: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = self.shoal(&["admin", "nodes", "--json"], None);
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let n = v.as_array().unwrap().iter().filter(|s| s["state"] == "alive").count();
                if n >= alive {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "cluster not ready: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn meta_flag(&self) -> String {
        self.meta_addrs.join(",")
    }

    /// Runs `shoal --meta ... ARGS` with optional stdin.
    pub fn shoal(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        if self.insecure {
            return run_shoal(&self.meta_flag(), &[&["--insecure"], args].concat(), stdin);
        }
        run_shoal(&self.meta_flag(), args, stdin)
    }

    /// Like [`Self::shoal`], and panics unless it succeeds.
    pub fn must(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let out = self.shoal(args, stdin);
        assert!(
            out.status.success(),
            "shoal {args:?} failed ({:?}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn must_put(&self, local: &Path, remote: &str) {
        self.must(&["put", local.to_str().unwrap(), remote], None);
    }

    pub fn must_cat(&self, remote: &str) -> Vec<u8> {
        self.must(&["cat", remote], None).stdout
    }

    pub fn must_stat_json(&self, remote: &str) -> serde_json::Value {
        serde_json::from_slice(&self.must(&["stat", "--json", remote], None).stdout).unwrap()
    }

    /// Flips one byte, at offset `at`, of chunk server `j`'s copy of `chunk_id`.
    pub fn flip_byte(&self, j: usize, chunk_id: u64, at: usize) {
        let path = self.chunks[j].dir.join("chunks").join(data_file(chunk_id));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= 0x5a;
        std::fs::write(&path, bytes).unwrap();
    }

    /// The index in `chunks` of the chunk server at `addr`.
    pub fn server_index(&self, addr: &str) -> usize {
        self.chunks.iter().position(|n| n.addr == addr).unwrap()
    }

    /// Files of chunk replicas held by chunk server `j`.
    pub fn chunk_files(&self, j: usize) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.chunks[j].dir.join("chunks"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .filter(|n| n.ends_with(".data"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in self.metas.iter().chain(&self.chunks) {
            if n.child.is_some() {
                Self::pause(n, false);
            }
        }
        self.kill_all();
    }
}

pub fn run_shoal(meta: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(SHOAL);
    cmd.arg("--meta").arg(meta).args(args).env("SHOAL_TIMEOUT", "20s").env("SHOAL_TLS", pki::credentials_for(args));
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shoal");
    let pid = child.id();
    if let Some(input) = stdin {
        // From a thread, so a large input cannot deadlock against a full stdout
        // pipe; a command that fails early may not read it all (broken pipe).
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || pipe.write_all(&input).ok());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(PATIENCE * 2) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            signal(pid as i32, libc::SIGKILL).ok();
            panic!("shoal {args:?} hung for {:?}", PATIENCE * 2);
        }
    }
}

/// Bytes that differ at every offset, so a misplaced byte cannot go unnoticed.
/// Eight bytes per step of the generator: the tests run unoptimized, and some
/// make a gigabyte of it.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// A plain HTTP/1.0 GET (the server closes the connection after the answer):
/// the status, the content type and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut s, &mut raw).unwrap_or_else(|e| panic!("reading from {addr}: {e}"));
    let raw = String::from_utf8(raw).expect("the answer is UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no end of headers in {raw:?}"));
    let mut lines = head.lines();
    let status: u16 = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap();
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// The sum of every sample of the metric `name` whose labels include all of
/// `labels` (`key="value"` each), in the Prometheus text `text`.
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The calls of gRPC method `method` (`package.Service/Method`) that the
/// nodes serving metrics at `http` (a cluster's `meta_http` or
/// `chunk_http`) have answered so far, summed over nodes and result codes.
pub fn rpc_calls(http: &[Option<String>], method: &str) -> f64 {
    rpc_answers(http, method, None)
}

/// The same, only the calls answered with gRPC status `code` (as the
/// metric names it: `"OK"`, `"FAILED_PRECONDITION"`, ...) when one is given.
pub fn rpc_answers(http: &[Option<String>], method: &str, code: Option<&str>) -> f64 {
    let label = format!("method=\"{method}\"");
    let code = code.map(|c| format!("code=\"{c}\""));
    let labels: Vec<&str> = std::iter::once(label.as_str()).chain(code.as_deref()).collect();
    http.iter()
        .map(|h| {
            let (_, _, text) = http_get(h.as_deref().expect("an HTTP port"), "/metrics");
            metric_sum(&text, "shoal_rpc_requests_total", &labels)
        })
        .sum()
}

/// A lazily connecting gRPC channel to `addr`, as `transport`'s holder.
pub fn channel(addr: &str, transport: &shoal_client::Transport) -> tonic::transport::Channel {
    shoal_proto::endpoint(addr, Duration::from_secs(2), transport).unwrap().connect_lazy()
}

/// One direct chain write of `data` as `header` says, through the chunk
/// server at `addr`, as `who` (no client library: what a writer that
/// stops at any step leaves behind); 10 s at most.
pub async fn write_direct(
    addr: &str,
    who: &shoal_client::Transport,
    header: shoal_proto::chunk::WriteHeader,
    data: Vec<u8>,
) -> Result<(), tonic::Status> {
    use shoal_proto::chunk::chunk_client::ChunkClient;
    let message = shoal_proto::chunk::WriteMessage { header: Some(header), data: data.into() };
    let mut client = ChunkClient::new(channel(addr, who));
    let call = client.write(futures::stream::iter(vec![message]));
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(tonic::Status::deadline_exceeded("write")),
    }
}

/// A chain write of `data` as version 1 of the chunk a `PrepareNew`
/// answered with (`loc`), as `who`: steps 1 and 2 of a new small file
/// without the client library.
pub async fn write_granted(
    who: &shoal_client::Transport,
    loc: &shoal_proto::meta::ChunkLocation,
    data: Vec<u8>,
) -> Result<(), tonic::Status> {
    let header = shoal_proto::chunk::WriteHeader {
        chunk_id: loc.id,
        version: 1,
        base_version: 0,
        offset: 0,
        downstream: loc.replicas[1..].to_vec(),
        truncate_to: None,
        fence_token: 0,
        capability: shoal_proto::capability::decode(&loc.capability),
    };
    write_direct(&loc.replicas[0], who, header, data).await
}

/// The name of a chunk's data file on a chunk server's disk.
pub fn data_file(chunk_id: u64) -> String {
    format!("{chunk_id:016x}.data")
}
