//! Network namespaces and nftables, for partitioning nodes in tests and for
//! running nodes and clients as if on separate hosts.
//!
//! Each meta node runs in its own network namespace, joined to the test's
//! namespace by a veth pair on its own /24 (10.X.i.1 on the host side,
//! 10.X.i.2 inside). The host routes between them, so every packet between
//! two meta nodes, and between a meta node and anything on the host (clients,
//! chunk servers), crosses the host's netfilter hooks. A partition is one
//! nftables table on the host that drops everything to and from an isolated
//! node's address; healing deletes the table.
//!
//! Needs root (CAP_NET_ADMIN), `ip` (iproute2) and `nft` (nftables). [`Net::create`]
//! tries both tools before it changes anything; when either is missing or
//! refused, it says why and the caller skips what needs it (CI installs both).
//!
//! Tests run as threads of one process: a `Net` holds a process-wide lock
//! from its creation to its drop, so two tests that partition never overlap,
//! and every `Net` gets names of its own (pid and a counter) and a /16 no
//! interface on the machine uses yet.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Held by the one `Net` that exists in this process at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
/// Numbers the `Net`s of this process, for unique names.
static CREATED: AtomicU32 = AtomicU32::new(0);

pub struct Net {
    tag: String,
    subnet: u8,
    nodes: usize,
    table: String,
    _turn: MutexGuard<'static, ()>,
}

/// Runs a system tool; Err says what failed (also that the tool is missing).
fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// A second octet X in 100..=254 whose 10.X.0.0/16 no interface uses, starting
/// from a pid-derived one, so test processes side by side pick different ones.
fn unused_subnet() -> Result<u8, String> {
    let addrs = run(&["ip", "-4", "-o", "addr", "show"])?;
    let start = std::process::id() as usize;
    (0..155)
        .map(|k| 100 + ((start + k) % 155) as u8)
        .find(|x| !addrs.contains(&format!(" 10.{x}.")))
        .ok_or_else(|| "every 10.X.0.0/16 from X = 100 up is in use".to_string())
}

impl Net {
    /// Namespaces for `nodes` meta nodes, or why they cannot be made here.
    pub fn create(nodes: usize) -> Result<Net, String> {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        // Both tools, and the right to use them, before anything changes.
        run(&["ip", "netns", "list"])?;
        run(&["nft", "list", "tables"])?;
        let pid = std::process::id();
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        let net = Net {
            tag: format!("sh{}x{n}", pid % 100_000),
            subnet: unused_subnet()?,
            nodes,
            table: format!("shoal_test_{pid}_{n}"),
            _turn: turn,
        };
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| format!("enabling IPv4 forwarding: {e}"))?;
        for i in 0..nodes {
            let (ns, host_if, ns_if) = (net.ns(i), net.host_if(i), format!("{}n{i}", net.tag));
            run(&["ip", "netns", "add", &ns])?;
            run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns])?;
            run(&["ip", "addr", "add", &format!("10.{}.{i}.1/24", net.subnet), "dev", &host_if])?;
            run(&["ip", "link", "set", &host_if, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", &ns];
                all.extend_from_slice(args);
                run(&all)
            };
            inside(&["ip", "link", "set", "lo", "up"])?;
            inside(&["ip", "addr", "add", &format!("10.{}.{i}.2/24", net.subnet), "dev", &ns_if])?;
            inside(&["ip", "link", "set", &ns_if, "up"])?;
            inside(&["ip", "route", "add", "default", "via", &format!("10.{}.{i}.1", net.subnet)])?;
        }
        Ok(net)
    }

    fn ns(&self, i: usize) -> String {
        format!("{}-m{i}", self.tag)
    }

    fn host_if(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    /// The address meta node `i` serves on, inside its namespace.
    pub fn addr(&self, i: usize, port: u16) -> String {
        format!("10.{}.{i}.2:{port}", self.subnet)
    }

    /// The command prefix that runs a program inside node `i`'s namespace.
    pub fn exec_prefix(&self, i: usize) -> Vec<String> {
        ["ip", "netns", "exec", &self.ns(i)].iter().map(|s| s.to_string()).collect()
    }

    /// Drops every packet to and from node `i` (other nodes and the host alike).
    pub fn isolate(&self, i: usize) -> Result<(), String> {
        let ip = format!("10.{}.{i}.2", self.subnet);
        let mut rules = format!("table inet {} {{\n", self.table);
        for hook in ["input", "output", "forward"] {
            rules += &format!(
                "  chain {hook} {{ type filter hook {hook} priority -10; policy accept; \
                 ip saddr {ip} drop; ip daddr {ip} drop; }}\n"
            );
        }
        rules += "}\n";
        let path = self.rules_file();
        std::fs::write(&path, rules).map_err(|e| e.to_string())?;
        run(&["nft", "-f", path.to_str().unwrap()]).map(drop)
    }

    /// Where [`Self::isolate`] writes its rules for `nft -f`.
    fn rules_file(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}.nft", self.table))
    }

    /// Removes every partition.
    pub fn heal(&self) {
        let _ = run(&["nft", "delete", "table", "inet", &self.table]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.heal();
        let _ = std::fs::remove_file(self.rules_file());
        for i in 0..self.nodes {
            // Deleting the namespace also deletes its end of the veth pair, and so the pair.
            let _ = run(&["ip", "netns", "delete", &self.ns(i)]);
            let _ = run(&["ip", "link", "delete", &self.host_if(i)]);
        }
    }
}
