//! Test harness: real `shoal` processes on loopback, in temporary directories.
//!
//! [`Cluster::start`] launches meta nodes and chunk servers as child processes
//! of the test (killed when the `Cluster` drops) and waits until a leader is
//! elected and every chunk server is heard. Helpers named `must_*` panic with
//! the command's output when it does not succeed.

#![allow(dead_code)]

pub mod netns;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// Generous bound on anything that should take a second or two.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    /// Known after start for chunk servers (they listen on port 0 the first time).
    pub addr: String,
}

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub metas: Vec<Node>,
    pub chunks: Vec<Node>,
    pub meta_addrs: Vec<String>,
    /// Set when the meta nodes run in network namespaces.
    pub net: Option<netns::Net>,
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
        .env("SHOAL_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn shoal")
}

impl Cluster {
    pub fn start(opts: Options) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let meta_addrs: Vec<String> = (0..opts.meta_nodes)
            .map(|i| match &opts.meta_netns {
                Some(net) => net.addr(i, 7100),
                None => format!("127.0.0.1:{}", free_port()),
            })
            .collect();
        let peers: Vec<String> = meta_addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let mut metas = Vec::new();
        for (i, addr) in meta_addrs.iter().enumerate() {
            let dir = tmp.path().join(format!("meta-{}", i + 1));
            let args: Vec<String> = [
                "meta",
                "--id",
                &(i + 1).to_string(),
                "--listen",
                addr,
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
            let prefix = opts.meta_netns.as_ref().map_or(Vec::new(), |n| n.exec_prefix(i));
            metas.push(Node { name: format!("meta-{}", i + 1), prefix, args, dir, child: None, addr: addr.clone() });
        }
        let mut chunks = Vec::new();
        for j in 0..opts.chunk_nodes {
            let dir = tmp.path().join(format!("chunk-{}", j + 1));
            let mut args: Vec<String> =
                ["chunk", "--listen", "127.0.0.1:0", "--meta", &meta_addrs.join(","), "--dir", dir.to_str().unwrap()]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            if let Some(Some(cap)) = opts.capacities.get(j) {
                args.extend(["--capacity".to_string(), cap.to_string()]);
            }
            args.extend(opts.chunk_args.iter().map(|a| a.to_string()));
            let name = format!("chunk-{}", j + 1);
            chunks.push(Node { name, prefix: Vec::new(), args, dir, child: None, addr: String::new() });
        }
        let mut c = Cluster { tmp, metas, chunks, meta_addrs, net: opts.meta_netns };
        for i in 0..c.metas.len() {
            c.start_meta(i);
        }
        for j in 0..c.chunks.len() {
            c.start_chunk(j);
        }
        c.must_be_ready(c.chunks.len());
        c
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.tmp.path().join(format!("{name}.log"))
    }

    pub fn start_meta(&mut self, i: usize) {
        let log = self.log(&self.metas[i].name);
        self.metas[i].child = Some(spawn(&self.metas[i].prefix, &self.metas[i].args, &log));
    }

    pub fn start_chunk(&mut self, j: usize) {
        let node = &mut self.chunks[j];
        let _ = std::fs::remove_file(node.dir.join("listen-addr"));
        if !node.addr.is_empty() {
            // Come back on the same address.
            let at = node.args.iter().position(|a| a == "--listen").unwrap() + 1;
            node.args[at] = node.addr.clone();
        }
        let log = self.tmp.path().join(format!("{}.log", node.name));
        node.child = Some(spawn(&node.prefix, &node.args, &log));
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(a) = std::fs::read_to_string(node.dir.join("listen-addr")) {
                node.addr = a;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start; log:\n{}",
                node.name,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
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
        let pid = node.child.as_ref().expect("node is running").id().to_string();
        let signal = if stop { "-STOP" } else { "-CONT" };
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
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
    cmd.arg("--meta").arg(meta).args(args).env("SHOAL_TIMEOUT", "20s");
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
            Command::new("kill").args(["-9", &pid.to_string()]).status().ok();
            panic!("shoal {args:?} hung for {:?}", PATIENCE * 2);
        }
    }
}

/// Bytes that differ at every offset, so a misplaced byte cannot go unnoticed.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}
