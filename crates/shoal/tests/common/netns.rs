//! Network namespaces and nftables, for partitioning meta nodes in tests.
//!
//! Each meta node runs in its own network namespace, joined to the test's
//! namespace by a veth pair on its own /24 (10.X.i.1 on the host side,
//! 10.X.i.2 inside). The host routes between them, so every packet between
//! two meta nodes, and between a meta node and anything on the host (clients,
//! chunk servers), crosses the host's netfilter hooks. A partition is one
//! nftables table on the host that drops everything to and from an isolated
//! node's address; healing deletes the table.
//!
//! Needs root (CAP_NET_ADMIN), `ip` (iproute2) and `nft` (nftables); without
//! them [`Net::create`] says why and the caller skips what needs it.

use std::process::Command;

pub struct Net {
    tag: String,
    subnet: u8,
    nodes: usize,
    table: String,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Net {
    /// Namespaces for `nodes` meta nodes, or why they cannot be made here.
    pub fn create(nodes: usize) -> Result<Net, String> {
        let pid = std::process::id();
        let net = Net {
            tag: format!("sh{}", pid % 100_000),
            subnet: 100 + (pid % 100) as u8,
            nodes,
            table: format!("shoal_test_{pid}"),
        };
        run(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
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
        let path = std::env::temp_dir().join(format!("{}.nft", self.table));
        std::fs::write(&path, rules).map_err(|e| e.to_string())?;
        run(&["nft", "-f", path.to_str().unwrap()])
    }

    /// Removes every partition.
    pub fn heal(&self) {
        let _ = run(&["nft", "delete", "table", "inet", &self.table]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.heal();
        for i in 0..self.nodes {
            // Deleting the namespace also deletes its end of the veth pair, and so the pair.
            let _ = run(&["ip", "netns", "delete", &self.ns(i)]);
            let _ = run(&["ip", "link", "delete", &self.host_if(i)]);
        }
    }
}
