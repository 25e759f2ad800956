//! t37: the cluster as if on separate machines. Each of 3 meta nodes and 4
//! chunk servers runs in a network namespace of its own, with its own
//! address, and the client in another; every packet between them is routed
//! through the test's namespace (see `common::netns`), with mutual TLS on.
//! Over that: the usual operations, a meta leader SIGKILL, a chunk server
//! SIGKILL, and one chunk server's link cut with nftables and restored,
//! checking every file byte for byte and that the cluster heals.

use std::process::{Command, Output, Stdio};

use crate::common::netns::Net;
use crate::common::*;

const METAS: usize = 3;
const CHUNKS: usize = 4;
/// The namespace the client runs in, after the nodes'.
const CLIENT: usize = METAS + CHUNKS;

/// `shoal ARGS` as the admin, run inside the client's namespace.
fn client(c: &Cluster, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let net = c.net.as_ref().expect("the cluster runs in namespaces");
    let prefix = net.exec_prefix(CLIENT);
    let mut cmd = Command::new(&prefix[0]);
    cmd.args(&prefix[1..])
        .arg(SHOAL)
        .args(["--meta", &c.meta_flag(), "--timeout", "30s"])
        .args(args)
        .env("SHOAL_TLS", pki().admin())
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ip netns exec shoal");
    if let Some(bytes) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn must(c: &Cluster, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let out = client(c, args, stdin);
    assert!(out.status.success(), "shoal {args:?} from the client's namespace: {}", stderr(&out));
    out.stdout
}

/// Every file written so far reads back whole from the client's namespace.
fn check_all(c: &Cluster, files: &[(String, Vec<u8>)]) {
    for (path, want) in files {
        let got = must(c, &["cat", path], None);
        assert!(got == *want, "{path}: {} bytes read back, {} written, or different bytes", got.len(), want.len());
    }
}

/// How many chunk servers meta reports alive.
fn alive(c: &Cluster) -> usize {
    let out = client(c, &["admin", "nodes", "--json"], None);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().map(|a| a.iter().filter(|s| s["state"] == "alive").count()))
        .unwrap_or(0)
}

#[test]
fn t37_separate_hosts_with_tls_survive_failover_loss_and_a_cut_link() {
    let net = match Net::create(METAS + CHUNKS + 1) {
        Ok(net) => net,
        Err(why) => return skipping("t37", "the multi-host test", &format!("network namespaces unavailable ({why})")),
    };
    let mut c = Cluster::start(Options {
        meta_nodes: METAS,
        chunk_nodes: CHUNKS,
        replication: 2,
        chunk_size: "256KiB",
        meta_args: vec!["--dead-after", "3s"],
        meta_netns: Some(net),
        chunk_netns: true,
        ..Options::default()
    });
    // Each node is reached at its own address, none on loopback.
    for n in c.metas.iter().chain(&c.chunks) {
        assert!(n.addr.starts_with("10."), "{} is at {}", n.name, n.addr);
    }
    let mut files: Vec<(String, Vec<u8>)> = vec![];
    let put = |c: &Cluster, files: &mut Vec<(String, Vec<u8>)>, path: &str, len: usize, seed: u64| {
        let data = pattern(len, seed);
        must(c, &["put", "-", path], Some(&data));
        files.push((path.to_string(), data));
    };

    // The usual operations.
    must(&c, &["mkdir", "-p", "/hosts/deep"], None);
    put(&c, &mut files, "/hosts/big", 3 << 20, 1);
    put(&c, &mut files, "/hosts/deep/small", 1000, 2);
    must(&c, &["append", "/hosts/deep/small"], Some(b" and more"));
    files[1].1.extend_from_slice(b" and more");
    must(&c, &["write", "--offset", "4", "/hosts/big"], Some(b"PATCH"));
    files[0].1[4..9].copy_from_slice(b"PATCH");
    must(&c, &["mv", "/hosts/deep/small", "/hosts/small"], None);
    files[1].0 = "/hosts/small".into();
    let listing = String::from_utf8(must(&c, &["ls", "/hosts"], None)).unwrap();
    assert!(listing.contains("big") && listing.contains("small") && listing.contains("deep"), "{listing}");
    check_all(&c, &files);

    // The meta leader dies: the cluster elects another and goes on.
    let leader = c.wait_leader();
    c.kill_meta(leader);
    put(&c, &mut files, "/hosts/after-failover", 700 << 10, 3);
    check_all(&c, &files);
    c.start_meta(leader);

    // A chunk server dies: reads and writes go on with the others.
    c.kill_chunk(0);
    put(&c, &mut files, "/hosts/after-loss", 600 << 10, 4);
    check_all(&c, &files);
    c.start_chunk(0);
    wait_until_within(2 * PATIENCE, "every chunk server is alive again", || alive(&c) == CHUNKS);

    // One chunk server's link is cut (nftables drops all its packets), then
    // restored: meanwhile the cluster serves; afterwards it heals.
    let cut = CHUNKS - 1;
    c.net.as_ref().unwrap().isolate(METAS + cut).expect("cut the link");
    wait_until_within(2 * PATIENCE, "meta sees the cut-off server as dead", || alive(&c) == CHUNKS - 1);
    put(&c, &mut files, "/hosts/during-cut", 500 << 10, 5);
    check_all(&c, &files);
    c.net.as_ref().unwrap().heal();
    wait_until_within(2 * PATIENCE, "the cut-off server is alive again", || alive(&c) == CHUNKS);
    wait_until_within(2 * PATIENCE, "fsck reports a healthy cluster", || {
        client(&c, &["admin", "fsck"], None).status.success()
    });
    check_all(&c, &files);
}
