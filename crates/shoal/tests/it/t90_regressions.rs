//! t90: regressions. One test per fixed bug, named after what must hold now;
//! its doc comment says what broke and why.

use std::collections::HashSet;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use crate::common::netns::Net;
use crate::common::*;

/// Regression: the harness picked a port by binding port 0, closing it and
/// handing the number to a child. Such a port lies in the kernel's ephemeral
/// range, which every bind to port 0 and every outgoing connection on the
/// machine draw from, so another test (or anything else) could take it
/// before the child bound it; t55 failed once that way. Ports now come from
/// outside that range, and never twice in one process, even when many
/// threads ask at once.
#[test]
fn t90_free_ports_are_unique_and_outside_the_ephemeral_range() {
    let threads = 4;
    let per_thread = 50;
    let picked: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> =
            (0..threads).map(|_| s.spawn(move || (0..per_thread).map(|_| free_port()).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let distinct: HashSet<u16> = picked.iter().copied().collect();
    assert_eq!(distinct.len(), threads * per_thread, "a port was handed out twice: {picked:?}");

    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let bounds: Vec<u16> = range.split_whitespace().map(|n| n.parse().unwrap()).collect();
    let (low, high) = (bounds[0], bounds[1]);
    let inside: Vec<u16> = picked.iter().copied().filter(|p| (low..=high).contains(p)).collect();
    // With a range that leaves no room outside it, ports come from the kernel.
    if low > 11_000 || high < 64_535 {
        assert!(inside.is_empty(), "ports in the ephemeral range {low}-{high}: {inside:?}");
    }
}

/// Regression (same cause): a node that found its port taken anyway exited,
/// and the cluster never became ready. The harness now recognizes the
/// EADDRINUSE the node logs and starts the whole cluster again on fresh
/// ports (meta nodes name each other, so one new port means new peers).
#[test]
fn t90_a_cluster_whose_port_was_taken_starts_again_on_fresh_ports() {
    let c =
        Cluster::start(Options { meta_nodes: 3, chunk_nodes: 2, take_a_meta_port_once: true, ..Options::default() });
    assert_eq!(c.start_attempts, 2, "the first attempt found meta-1's port taken");
    c.must(&["put", "-", "/after-a-second-start"], Some(b"fresh ports"));
    assert_eq!(c.must_cat("/after-a-second-start"), b"fresh ports");
}

/// Regression (same cause): a node restarted on its own port while something
/// else held it exited at once, and the harness waited a minute for it. A
/// restart now tries the same port again until it is free (the node must
/// keep its address).
#[test]
fn t90_a_restarted_node_waits_until_its_port_is_free() {
    let mut c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 2, ..Options::default() });
    c.must(&["put", "-", "/kept"], Some(b"kept"));

    // A chunk server, then the meta node: killed, its port held for a while, restarted.
    let (chunk_addr, meta_addr) = (c.chunks[0].addr.clone(), c.metas[0].addr.clone());
    c.kill_chunk(0);
    hold_for(&chunk_addr, Duration::from_millis(800), || c.start_chunk(0));
    c.kill_meta(0);
    hold_for(&meta_addr, Duration::from_millis(800), || c.start_meta(0));
    assert_eq!((&c.chunks[0].addr, &c.metas[0].addr), (&chunk_addr, &meta_addr), "same addresses");

    for name in ["chunk-1", "meta-1"] {
        let log = std::fs::read_to_string(c.log(name)).unwrap();
        assert!(ports::bind_failed(&log), "{name} met its port taken at least once; log:\n{log}");
    }
    c.must_be_ready(2);
    assert_eq!(c.must_cat("/kept"), b"kept");
}

/// Holds `addr` with a listener for `hold`, running `restart` meanwhile.
fn hold_for(addr: &str, hold: Duration, restart: impl FnOnce()) {
    let squatter = TcpListener::bind(addr).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(hold);
            drop(squatter);
        });
        restart();
    });
}

/// Set in the child process of the test below.
const WITHOUT_NFT: &str = "SHOAL_T90_WITHOUT_NFT";

/// Regression: as root on a machine without `nft`, t60 built its network
/// namespaces (only `ip` was needed for that) and then panicked on the
/// first partition ("nft: No such file or directory") instead of skipping
/// it. `Net::create` now tries `ip` and `nft` before it changes anything
/// and says which is missing. The check runs in a child process (this test
/// binary again) whose PATH holds `ip` and nothing else, since PATH is
/// shared by every test thread.
#[test]
fn t90_network_namespaces_without_nft_are_refused_up_front() {
    if std::env::var_os(WITHOUT_NFT).is_some() {
        let err = Net::create(1).err().expect("no partitions can be made without nft");
        assert!(err.contains("nft: ") || err.contains("ip: "), "the error names the missing tool: {err}");
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(ip) = std::env::split_paths(&path).map(|d| d.join("ip")).find(|p| p.is_file()) {
        std::os::unix::fs::symlink(ip, bin.path().join("ip")).unwrap();
    }
    let name = "t90_regressions::t90_network_namespaces_without_nft_are_refused_up_front";
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--test-threads", "1", "--nocapture"])
        .env("PATH", bin.path())
        .env(WITHOUT_NFT, "1")
        .output()
        .unwrap();
    let (stdout, err) = (String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "the child failed:\n{stdout}\n{err}");
    assert!(stdout.contains("1 passed"), "the child ran the check:\n{stdout}");
}
