//! t40: bad input gets a clear one-line error, exit 1 (2 for bad usage), and
//! changes nothing: paths and arguments, an unreachable cluster, a full disk,
//! garbage on the ports, and bad certificates, credentials and addresses.

use std::time::{Duration, Instant};

use crate::common::*;

fn must_fail(c: &Cluster, args: &[&str], stdin: Option<&[u8]>, code: i32, says: &str) {
    let out = c.shoal(args, stdin);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "shoal {args:?}: {err}");
    assert!(err.contains(says), "shoal {args:?} should say {says:?}, said: {err}");
    if code == 1 {
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

/// Every path with its type and size (not its mtime: a failed put creates and
/// removes a temporary name, which touches the directory's mtime).
fn listing(c: &Cluster) -> Vec<(String, String, u64)> {
    let v: serde_json::Value = serde_json::from_slice(&c.must(&["ls", "-R", "--json", "/"], None).stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().into(), e["type"].as_str().unwrap().into(), e["size"].as_u64().unwrap()))
        .collect()
}

#[test]
fn t40_bad_paths_and_arguments_change_nothing() {
    let c = Cluster::start(Options::default());
    c.must(&["mkdir", "-p", "/dir/sub"], None);
    c.must(&["put", "-", "/dir/file"], Some(b"content"));
    let before = listing(&c);

    must_fail(&c, &["cat", "/missing"], None, 1, "no such file or directory: /missing");
    must_fail(&c, &["stat", "/dir/missing/deeper"], None, 1, "no such file or directory");
    must_fail(&c, &["write", "--offset", "0", "/missing"], Some(b"x"), 1, "no such file");
    must_fail(&c, &["append", "/missing"], Some(b"x"), 1, "no such file");
    must_fail(&c, &["rm", "/missing"], None, 1, "no such file");
    must_fail(&c, &["mv", "/missing", "/other"], None, 1, "no such file");
    must_fail(&c, &["mkdir", "/dir/../etc"], None, 1, "'..'");
    must_fail(&c, &["create", "/dir//x"], None, 1, "empty component");
    must_fail(&c, &["create", "relative"], None, 1, "must be absolute");
    let long = format!("/{}", "n".repeat(256));
    must_fail(&c, &["create", &long], None, 1, "longer than the 255 allowed");
    must_fail(&c, &["create", "/dir/file"], None, 1, "already exists: /dir/file");
    must_fail(&c, &["mkdir", "/dir"], None, 1, "already exists: /dir");
    must_fail(&c, &["rm", "/dir"], None, 1, "directory not empty: /dir");
    must_fail(&c, &["cat", "/dir"], None, 1, "is a directory");
    must_fail(&c, &["create", "/dir/file/below"], None, 1, "not a directory");
    must_fail(&c, &["mv", "/dir", "/dir/sub/inside"], None, 1, "into itself");
    must_fail(&c, &["put", "--replication", "4", "-", "/dir/wide"], Some(b"x"), 1, "need 4 alive, 3 alive");
    // Bad usage: exit 2.
    must_fail(&c, &["cat", "--offset", "-5", "/dir/file"], None, 2, "");
    must_fail(&c, &["write", "--offset", "ten", "/dir/file"], Some(b"x"), 2, "not a byte offset");
    must_fail(&c, &["cat", "--length", "1.5", "/dir/file"], None, 2, "not a byte offset");
    must_fail(&c, &["frobnicate"], None, 2, "unrecognized subcommand");
    must_fail(&c, &["put", "--replication", "0", "-", "/x"], Some(b"x"), 2, "not a replication factor");

    assert_eq!(listing(&c), before, "no failed command changed the namespace");
    assert_eq!(c.must_cat("/dir/file"), b"content");
}

#[test]
fn t41_unreachable_meta_fails_in_bounded_time_naming_the_addresses() {
    let dead = format!("127.0.0.1:{}", free_port());
    let other = format!("127.0.0.1:{}", free_port());
    let meta = format!("{dead},{other}");
    let started = Instant::now();
    let out = run_shoal(&meta, &["--timeout", "2s", "ls", "/"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot reach meta") && err.contains(&dead) && err.contains(&other), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "gave up in bounded time, took {:?}", started.elapsed());
}

#[test]
fn t42_full_disk_fails_the_write_cleanly() {
    // Two servers, replication 2, and one of them can hold only one chunk.
    let c = Cluster::start(Options { chunk_nodes: 2, capacities: vec![Some("1MiB"), None], ..Options::default() });
    c.must(&["put", "-", "/before"], Some(b"kept"));
    let before = listing(&c);
    let big = pattern(3_000_000, 5);
    let out = c.shoal(&["put", "-", "/big"], Some(&big));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("no space") && err.contains("need 3 alive, 2 alive"), "says why: {err}");
    assert_eq!(listing(&c), before, "a failed put leaves nothing behind");

    // Appending past the room left fails too, and commits no size.
    let out = c.shoal(&["append", "/before"], Some(&big));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(c.must_stat_json("/before")["size"], 4, "no half-written size was committed");
    assert_eq!(c.must_cat("/before"), b"kept");
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok());
    kb.unwrap_or(0) * 1024
}

#[test]
fn t43_garbage_on_every_port_leaves_the_servers_working() {
    use std::io::Write;
    use std::net::TcpStream;
    let c = Cluster::start(Options { meta_nodes: 3, chunk_nodes: 2, replication: 2, http: true, ..Options::default() });
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("f");
    let data = pattern(300_000, 43);
    std::fs::write(&src, &data).unwrap();
    c.must_put(&src, "/before");
    let before = listing(&c);
    let pids: Vec<u32> = c.metas.iter().chain(&c.chunks).map(|n| n.child.as_ref().unwrap().id()).collect();
    let rss_before: Vec<u64> = pids.iter().map(|&p| rss(p)).collect();

    let mut ports: Vec<String> = c.metas.iter().chain(&c.chunks).map(|n| n.addr.clone()).collect();
    ports.extend(c.meta_http.iter().chain(&c.chunk_http).flatten().cloned());
    let mut silent = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        // Peers that connect and say nothing, held open through what follows.
        for _ in 0..40 {
            silent.push(TcpStream::connect(port).unwrap());
        }
        // Random bytes; the first bytes of a TLS handshake, then silence; an
        // HTTP/1 request (on a gRPC port); an endless header (on an HTTP port).
        let garbage: Vec<Vec<u8>> = vec![
            pattern(64 * 1024, 4300 + i as u64),
            vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03],
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 200_000]].concat(),
        ];
        for bytes in garbage {
            let mut s = TcpStream::connect(port).unwrap();
            // The server may close on us part-way: that is a fine answer.
            let _ = s.write_all(&bytes);
            silent.push(s);
        }
    }

    // Every node is alive, and the cluster works, with all of that still open.
    for (node, pid) in c.metas.iter().chain(&c.chunks).zip(&pids) {
        assert!(std::fs::metadata(format!("/proc/{pid}")).is_ok(), "{} died", node.addr);
    }
    assert_eq!(c.must_cat("/before"), data);
    c.must_put(&src, "/after");
    assert_eq!(c.must_cat("/after"), data);
    let mut want = before.clone();
    want.push(("/after".into(), "file".into(), data.len() as u64));
    want.sort();
    let mut got = listing(&c);
    got.sort();
    assert_eq!(got, want, "the garbage changed nothing");
    for (i, &pid) in pids.iter().enumerate() {
        let grew = rss(pid).saturating_sub(rss_before[i]);
        assert!(grew < 256 << 20, "node {i} grew by {grew} bytes of memory");
    }
    drop(silent);
}

/// `shoal ARGS` with no credentials in the environment.
fn bare(args: &[&str]) -> std::process::Output {
    std::process::Command::new(SHOAL).args(args).env_remove("SHOAL_TLS").env("HOME", "/nonexistent").output().unwrap()
}

fn must_fail_bare(args: &[&str], code: i32, says: &str) {
    let out = bare(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "shoal {args:?}: {err}");
    assert!(err.contains(says), "shoal {args:?} should say {says:?}, said: {err}");
}

#[test]
fn t44_bad_certificates_credentials_and_addresses_are_refused_up_front() {
    let t = tempfile::tempdir().unwrap();
    let ca = t.path().join("ca");
    let ca_s = ca.to_str().unwrap();
    assert!(bare(&["cert", "init", ca_s]).status.success());
    let ca_pem = std::fs::read(ca.join("ca.pem")).unwrap();
    must_fail_bare(&["cert", "init", ca_s], 1, "already exists");
    assert_eq!(std::fs::read(ca.join("ca.pem")).unwrap(), ca_pem, "the CA was overwritten");
    must_fail_bare(&["cert", "issue", ca_s, "--name", "two words", "--role", "user"], 2, "bad identity name");
    must_fail_bare(&["cert", "issue", ca_s, "--name", "x", "--role", "root"], 2, "invalid value");
    must_fail_bare(&["cert", "issue", ca_s, "--name", "x", "--role", "user", "--dns", "node.shoal"], 2, "reserved");
    must_fail_bare(&["cert", "issue", ca_s, "--name", "x", "--role", "user", "--days", "0"], 2, "");
    let elsewhere = t.path().join("no-ca");
    must_fail_bare(
        &["cert", "issue", elsewhere.to_str().unwrap(), "--name", "x", "--role", "user"],
        1,
        "no cluster CA",
    );
    assert!(!ca.join("x").exists() && !elsewhere.exists(), "a refused issue wrote something");
    let out = bare(&["cert", "issue", ca_s, "--name", "x", "--role", "user"]);
    assert!(out.status.success(), "{}", stderr(&out));
    must_fail_bare(&["cert", "issue", ca_s, "--name", "x", "--role", "admin"], 1, "already exists");
    // The cluster key goes to nodes only.
    let key = std::fs::read(ca.join("cluster.key")).expect("cert init made no cluster key");
    assert!(!ca.join("x").join("cluster.key").exists(), "a user got the cluster key");
    let out = bare(&["cert", "issue", ca_s, "--name", "n1", "--role", "node"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(ca.join("n1").join("cluster.key")).unwrap(), key);

    // Credentials: none, a folder without them, and both --tls and --insecure.
    must_fail_bare(&["--meta", "127.0.0.1:1", "ls", "/"], 1, "no TLS credentials");
    must_fail_bare(&["--tls", t.path().to_str().unwrap(), "--meta", "127.0.0.1:1", "ls", "/"], 1, "cert.pem");
    must_fail_bare(&["--tls", ca_s, "--insecure", "ls", "/"], 2, "cannot be used with");
    let dir = t.path().join("node");
    let d = dir.to_str().unwrap();
    let port = free_port().to_string();
    let here = format!("127.0.0.1:{port}");
    let wildcard = format!("0.0.0.0:{port}");
    must_fail_bare(&["chunk", "--listen", &here, "--meta", "127.0.0.1:1", "--dir", d], 2, "pass --tls");
    must_fail_bare(&["meta", "--id", "1", "--listen", &here, "--dir", d], 2, "pass --tls");
    // A node whose credentials lack the cluster key does not start.
    let n1 = ca.join("n1");
    std::fs::remove_file(n1.join("cluster.key")).unwrap();
    let n1 = n1.to_str().unwrap();
    must_fail_bare(
        &["chunk", "--tls", n1, "--listen", &here, "--meta", "127.0.0.1:1", "--dir", d],
        1,
        "no cluster key",
    );
    must_fail_bare(&["meta", "--tls", n1, "--id", "1", "--listen", &here, "--dir", d], 1, "no cluster key");
    // `cert init` on a CA folder without one adds a key, and only that.
    std::fs::remove_file(ca.join("cluster.key")).unwrap();
    assert!(bare(&["cert", "init", ca_s]).status.success());
    assert_eq!(std::fs::read(ca.join("ca.pem")).unwrap(), ca_pem, "the CA was replaced");
    assert_ne!(std::fs::read(ca.join("cluster.key")).unwrap(), key, "no new cluster key");
    // Addresses others cannot dial.
    must_fail_bare(&["chunk", "--insecure", "--listen", &wildcard, "--meta", "127.0.0.1:1", "--dir", d], 2, "wildcard");
    must_fail_bare(
        &["chunk", "--insecure", "--listen", &wildcard, "--advertise", &wildcard, "--meta", "127.0.0.1:1", "--dir", d],
        2,
        "--advertise",
    );
    must_fail_bare(&["meta", "--insecure", "--id", "1", "--listen", &wildcard, "--dir", d], 2, "wildcard");
    let peers = format!("1={here}");
    must_fail_bare(
        &[
            "meta",
            "--insecure",
            "--id",
            "1",
            "--listen",
            &wildcard,
            "--peers",
            &peers,
            "--advertise",
            "10.0.0.1:1",
            "--dir",
            d,
        ],
        2,
        "differs",
    );
    assert!(!dir.exists(), "a refused server made its directory");

    // `shoal up` where something already listens (another cluster, say):
    // refused before any node starts, instead of reporting the other one ready.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = taken.local_addr().unwrap().port().to_string();
    let up_dir = t.path().join("up");
    let out = bare(&["up", "--insecure", "--dir", up_dir.to_str().unwrap(), "--base-port", &base]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "shoal up on a taken port: {err}");
    assert!(err.contains("already in use") && err.contains(&format!("127.0.0.1:{base}")), "said: {err}");
    assert!(!up_dir.join("meta-1").exists(), "a refused `shoal up` started a node");
}
