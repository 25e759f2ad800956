//! t35: mutual TLS and identities. Every gRPC port of a TLS cluster refuses
//! a peer with no certificate, one from another CA and an expired one, and
//! nothing changes; a user certificate reads and writes files but is refused
//! every admin and node-only call; a cluster started `--insecure` works end
//! to end in plaintext and says so in its logs; and the cluster's CA is
//! replaced by a new one, one process at a time, without losing a file.

use std::path::Path;
use std::time::Duration;

use shoal_client::{Client, Transport};
use shoal_proto::chunk::ReadRequest;
use shoal_proto::chunk::chunk_client::ChunkClient;
use shoal_proto::meta::cluster_client::ClusterClient;
use shoal_proto::meta::namespace_client::NamespaceClient;
use shoal_proto::meta::{HeartbeatRequest, MkdirRequest, StatusRequest};
use shoal_proto::raft::RaftPayload;
use shoal_proto::raft::raft_client::RaftClient;
use shoal_tls::{Identity, IssueRequest, Role};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::common::pki::make_pki;
use crate::common::*;

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A channel to `addr` through `transport`.
fn channel(addr: &str, transport: &Transport) -> Channel {
    shoal_proto::endpoint(addr, Duration::from_secs(2), transport).unwrap().connect_lazy()
}

/// A TLS channel that trusts the cluster CA but presents no certificate.
fn channel_without_certificate(addr: &str, ca_pem: &str) -> Channel {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(shoal_tls::SERVER_NAME);
    Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect_lazy()
}

/// One call that every port answers for a good client: meta's `Status`,
/// a chunk server's `Read` of `read`; for meta also a mutation (`Mkdir
/// /intruder`), which must never apply.
async fn probe(channel: Channel, meta: bool, read: &ReadRequest) -> Result<(), tonic::Status> {
    let call = async {
        if meta {
            NamespaceClient::new(channel.clone())
                .mkdir(MkdirRequest { path: "/intruder".into(), parents: true, ..Default::default() })
                .await
                .ok();
            ClusterClient::new(channel).status(StatusRequest { digest: false }).await.map(|_| ())
        } else {
            let mut stream = ChunkClient::new(channel).read(read.clone()).await?.into_inner();
            stream.message().await.map(|_| ())
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, call).await.unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("probe")))
}

/// Credentials signed by the test CA that expired yesterday.
fn expired_credentials(dir: &Path) -> Transport {
    let mut req = IssueRequest::new(Identity::new("late", Role::Admin).unwrap(), dir.to_path_buf());
    let now = time::OffsetDateTime::now_utc();
    req.not_before = now - time::Duration::days(3);
    req.not_after = now - time::Duration::days(1);
    shoal_tls::issue(&pki().ca(), &req).unwrap();
    Transport::load(dir).unwrap()
}

#[test]
fn t35_without_a_good_certificate_every_port_refuses_and_nothing_changes() {
    let c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 2, replication: 2, ..Default::default() });
    c.must(&["put", "-", "/kept"], Some(b"kept bytes"));
    let rt = runtime();
    // Lazy channels are made inside the runtime.
    let _entered = rt.enter();
    let admin = Transport::load(&pki().admin()).unwrap();
    let (_, chunks) = rt.block_on(async {
        let client = Client::connect_with(&c.meta_addrs, PATIENCE, admin.clone()).await.unwrap();
        client.chunks("/kept").await.unwrap()
    });
    // The admin's own capability, so only the certificate can make a probe fail.
    let read = ReadRequest {
        chunk_id: chunks[0].id,
        offset: 0,
        length: 4,
        version: chunks[0].version,
        capability: chunks[0].capability.clone(),
    };
    let ports: Vec<(String, bool)> = c
        .meta_addrs
        .iter()
        .map(|a| (a.clone(), true))
        .chain(c.chunks.iter().map(|n| (n.addr.clone(), false)))
        .collect();

    // The good credentials get answers on every port (so a refusal below is the certificate's doing).
    for (addr, meta) in &ports {
        rt.block_on(probe(channel(addr, &admin), *meta, &read)).unwrap_or_else(|e| panic!("{addr} refused admin: {e}"));
    }
    c.must(&["rm", "-r", "/intruder"], None);

    let other = tempfile::tempdir().unwrap();
    make_pki(other.path());
    let foreign = Transport::load(&other.path().join("admin")).unwrap();
    let foreign_node = Transport::load(&other.path().join("node")).unwrap();
    let expired = expired_credentials(&other.path().join("expired"));
    let ca_pem = std::fs::read_to_string(pki().ca().join(shoal_tls::CA_CERT_FILE)).unwrap();

    let listing_before = c.must(&["ls", "-R", "/"], None).stdout;
    for (addr, meta) in &ports {
        let attempts: Vec<(&str, Channel)> = vec![
            ("plaintext", channel(addr, &Transport::Insecure)),
            ("TLS without a certificate", channel_without_certificate(addr, &ca_pem)),
            ("another CA's admin", channel(addr, &foreign)),
            ("another CA's node", channel(addr, &foreign_node)),
            ("an expired certificate", channel(addr, &expired)),
        ];
        for (what, ch) in attempts {
            let result = rt.block_on(probe(ch, *meta, &read));
            assert!(result.is_err(), "{addr} ({}) answered {what}", if *meta { "meta" } else { "chunk" });
        }
    }
    // Through the CLI too, with nothing changed afterwards.
    for flags in [vec!["--insecure"], vec!["--tls", other.path().join("admin").to_str().unwrap()]] {
        let out = c.shoal(&[&flags[..], &["--timeout", "3s", "mkdir", "/intruder"]].concat(), None);
        assert!(!out.status.success(), "{flags:?} made a directory");
    }
    // A certificate problem is named as one.
    let out = c.shoal(&["--tls", other.path().join("admin").to_str().unwrap(), "--timeout", "3s", "ls", "/"], None);
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    assert_eq!(c.must(&["ls", "-R", "/"], None).stdout, listing_before, "the namespace changed");
    assert_eq!(c.must_cat("/kept"), b"kept bytes");
}

#[test]
fn t35_a_user_reads_and_writes_files_but_no_admin_or_node_call() {
    let c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 2, replication: 2, ..Default::default() });
    let user_dir = pki().user();
    let user = user_dir.to_str().unwrap();
    let as_user = |args: &[&str], stdin: Option<&[u8]>| c.shoal(&[&["--tls", user], args].concat(), stdin);

    // Files: all of it works.
    let out = as_user(&["mkdir", "-p", "/u/dir"], None);
    assert!(out.status.success(), "user mkdir: {}", stderr(&out));
    let data = pattern(300_000, 35);
    let out = as_user(&["put", "-", "/u/file"], Some(&data));
    assert!(out.status.success(), "user put: {}", stderr(&out));
    let out = as_user(&["cat", "/u/file"], None);
    assert!(out.status.success() && out.stdout == data, "user cat: {}", stderr(&out));
    let out = as_user(&["append", "/u/file"], Some(b"tail"));
    assert!(out.status.success(), "user append: {}", stderr(&out));

    // Admin calls: refused, and nothing changes.
    let chunk = c.chunks[0].addr.clone();
    let refused: Vec<Vec<&str>> = vec![
        vec!["admin", "decommission", &chunk],
        vec!["admin", "rebalance"],
        vec!["admin", "repair", "pause"],
        vec!["admin", "meta", "remove", "1"],
        vec!["admin", "meta", "add", "7", "127.0.0.1:1"],
        vec!["admin", "nodes"],
        vec!["admin", "fsck"],
        vec!["setrep", "1", "/u/file"],
    ];
    for args in &refused {
        let out = as_user(args, None);
        assert!(!out.status.success(), "a user ran {args:?}");
        assert!(stderr(&out).contains("may not call"), "{args:?}: {}", stderr(&out));
    }
    let nodes: serde_json::Value = serde_json::from_slice(&c.must(&["admin", "nodes", "--json"], None).stdout).unwrap();
    assert!(nodes.as_array().unwrap().iter().all(|n| n["state"] == "alive"), "a user's decommission took: {nodes}");
    assert_eq!(c.must_stat_json("/u/file")["replication"], 2, "a user's setrep took");
    let status = c.must(&["admin", "status"], None);
    assert_eq!(String::from_utf8_lossy(&status.stdout).lines().count(), 2, "the meta group changed");

    // Node-only calls: refused for users and admins alike, allowed for nodes.
    let rt = runtime();
    let _entered = rt.enter();
    let meta = &c.meta_addrs[0];
    for (who, dir) in [("user", pki().user()), ("admin", pki().admin())] {
        let t = Transport::load(&dir).unwrap();
        let beat = rt.block_on(ClusterClient::new(channel(meta, &t)).heartbeat(HeartbeatRequest::default()));
        assert_eq!(beat.unwrap_err().code(), tonic::Code::PermissionDenied, "{who} heartbeat");
        let vote = rt.block_on(RaftClient::new(channel(meta, &t)).vote(RaftPayload { json: b"{}".to_vec() }));
        assert_eq!(vote.unwrap_err().code(), tonic::Code::PermissionDenied, "{who} raft vote");
    }
    let node = Transport::load(&pki().node()).unwrap();
    let vote = rt.block_on(RaftClient::new(channel(meta, &node)).vote(RaftPayload { json: b"{}".to_vec() }));
    assert_ne!(vote.err().map(|e| e.code()), Some(tonic::Code::PermissionDenied), "a node's vote was refused");
}

#[test]
fn t35_an_insecure_cluster_works_end_to_end_and_says_so() {
    let c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 2, insecure: true, ..Default::default() });
    let data = pattern(2_500_000, 36);
    c.must(&["put", "-", "/plain"], Some(&data));
    assert_eq!(c.must_cat("/plain"), data);
    for name in ["meta-1", "chunk-1"] {
        let log = std::fs::read_to_string(c.log(name)).unwrap();
        assert!(log.contains("INSECURE"), "{name} did not warn: {log}");
        assert!(log.contains("chunk capabilities are neither signed nor checked"), "{name} did not say: {log}");
    }
    // A TLS client cannot talk to it (it gives up after its timeout).
    let out = run_shoal(&c.meta_flag(), &["--timeout", "3s", "ls", "/"], None);
    assert!(!out.status.success(), "a TLS client listed an insecure cluster");
}

/// `shoal --tls TLS ARGS` against `c`.
fn shoal_as(c: &Cluster, tls: &Path, args: &[&str]) -> std::process::Output {
    run_shoal(&c.meta_flag(), &[&["--tls", tls.to_str().unwrap()], args].concat(), None)
}

/// A copy of the credentials folder `from` at `to`, trusting the CAs in `ca_pems`.
fn copy_credentials(from: &Path, to: &Path, ca_pems: &[&Path]) {
    std::fs::create_dir_all(to).unwrap();
    for f in [shoal_tls::CERT_FILE, shoal_tls::KEY_FILE, shoal_tls::CLUSTER_KEY_FILE] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
    let trusted: String = ca_pems.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    std::fs::write(to.join(shoal_tls::CA_CERT_FILE), trusted).unwrap();
}

/// Restarts node `i` (meta when `meta`, else chunk server) with the
/// credentials in `tls`, and waits until it serves; a meta node also until
/// it knows the leader and has applied what the leader had before the kill.
fn restart_with(c: &mut Cluster, meta: bool, i: usize, tls: &Path, admin: &Path) {
    let applied = |v: &serde_json::Value, id: u64| {
        v["nodes"].as_array().and_then(|ns| ns.iter().find(|n| n["id"] == id)).and_then(|n| n["last_applied"].as_u64())
    };
    let applied_before =
        status_of(&c.meta_flag(), admin).and_then(|v| applied(&v, v["leader_id"].as_u64().unwrap_or(0))).unwrap_or(0);
    let node = if meta { &mut c.metas[i] } else { &mut c.chunks[i] };
    Cluster::kill(node);
    match node.args.iter().position(|a| a == "--tls") {
        Some(k) => node.args[k + 1] = tls.to_str().unwrap().to_string(),
        None => node.args.extend(["--tls".to_string(), tls.to_str().unwrap().to_string()]),
    }
    if !meta {
        c.start_chunk(i);
        return;
    }
    c.start_meta(i);
    let addr = c.metas[i].addr.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = status_of(&addr, admin);
        // Asked alone, the node answers with its own view: a leader known,
        // and its own entry applied as far as the leader was.
        let caught_up = v.as_ref().is_some_and(|v| {
            v["leader_id"].as_u64().unwrap_or(0) != 0 && applied(v, (i + 1) as u64).unwrap_or(0) >= applied_before
        });
        if caught_up {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "meta-{} did not rejoin with {}: {v:?}", i + 1, tls.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// [`restart_with`] for every meta node, then every chunk server.
fn restart_all_with(c: &mut Cluster, tls: &Path, admin: &Path) {
    for i in 0..c.metas.len() {
        restart_with(c, true, i, tls, admin);
    }
    for j in 0..c.chunks.len() {
        restart_with(c, false, j, tls, admin);
    }
}

/// `admin status --json` from the meta nodes `meta`, as `admin`.
fn status_of(meta: &str, admin: &Path) -> Option<serde_json::Value> {
    let out =
        run_shoal(meta, &["--tls", admin.to_str().unwrap(), "--timeout", "3s", "admin", "status", "--json"], None);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// Waits until the leader hears every chunk server, asking as `admin`.
fn ready_as(c: &Cluster, admin: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = shoal_as(c, admin, &["admin", "nodes", "--json"]);
        if out.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if v.as_array().unwrap().iter().filter(|s| s["state"] == "alive").count() == c.chunks.len() {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "not ready as {}: {}", admin.display(), stderr(&out));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes one more file as `tls` and reads every file written so far back,
/// byte for byte.
fn write_and_read_all(c: &Cluster, tls: &Path, files: &mut Vec<(String, Vec<u8>)>) {
    let n = files.len();
    let name = format!("/rotation/f{n}");
    let data = pattern(300_000 + n * 1000, 3500 + n as u64);
    let local = c.tmp.path().join(format!("local-{n}"));
    std::fs::write(&local, &data).unwrap();
    let out = shoal_as(c, tls, &["put", local.to_str().unwrap(), &name]);
    assert!(out.status.success(), "put {name} as {}: {}", tls.display(), stderr(&out));
    files.push((name, data));
    for (name, data) in files.iter() {
        let out = shoal_as(c, tls, &["cat", name]);
        assert!(out.status.success(), "cat {name} as {}: {}", tls.display(), stderr(&out));
        assert!(out.stdout == *data, "{name} read back different bytes as {}", tls.display());
    }
}

#[test]
fn t35_the_ca_is_replaced_one_process_at_a_time_and_no_file_is_lost() {
    let mut c = Cluster::start(Options { meta_nodes: 3, chunk_nodes: 3, ..Default::default() });
    let p = pki();
    let work = c.tmp.path().join("rotation");
    let (old, new) = (p.ca(), work.join("new-ca"));
    let (old_pem, new_pem) = (old.join(shoal_tls::CA_CERT_FILE), new.join(shoal_tls::CA_CERT_FILE));
    let cert = |args: &[&str]| {
        let out = shoal_command(args).output().unwrap();
        assert!(out.status.success(), "shoal {args:?}: {}", stderr(&out));
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    // The new CA keeps the cluster's key (a bad key file is refused first).
    let junk = work.join("junk.key");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(&junk, "0123\n").unwrap();
    let refused = shoal_command(&["cert", "init", &s(&new), "--cluster-key", &s(&junk)]).output().unwrap();
    assert_eq!(refused.status.code(), Some(2), "a junk cluster key: {}", stderr(&refused));
    assert!(!new_pem.exists(), "a refused init wrote a CA");
    cert(&["cert", "init", &s(&new), "--cluster-key", &s(&old.join(shoal_tls::CLUSTER_KEY_FILE))]);
    // Step 1's folders: the old certificates, trusting both CAs.
    let (node_both, admin_both) = (work.join("node-both"), work.join("admin-both"));
    copy_credentials(&p.node(), &node_both, &[&old_pem, &new_pem]);
    copy_credentials(&p.admin(), &admin_both, &[&old_pem, &new_pem]);
    // Step 2's: certificates of the new CA, trusting both.
    let (node_new, admin_new) = (work.join("node-new"), work.join("admin-new"));
    cert(&[
        "cert",
        "issue",
        &s(&new),
        "--name",
        "node-2",
        "--role",
        "node",
        "--out",
        &s(&node_new),
        "--trust",
        &s(&old_pem),
    ]);
    cert(&[
        "cert",
        "issue",
        &s(&new),
        "--name",
        "admin-2",
        "--role",
        "admin",
        "--out",
        &s(&admin_new),
        "--trust",
        &s(&old_pem),
    ]);
    // Step 3's: the new CA alone.
    let (node_only, admin_only) = (work.join("node-only"), work.join("admin-only"));
    copy_credentials(&node_new, &node_only, &[&new_pem]);
    copy_credentials(&admin_new, &admin_only, &[&new_pem]);

    let mut files = Vec::new();
    c.must(&["mkdir", "/rotation"], None);
    write_and_read_all(&c, &p.admin(), &mut files);
    // A client of the new CA is refused while no server trusts it: one that
    // trusts only the new CA refuses the servers, and one that trusts both
    // is refused by the servers themselves.
    for cred in [&admin_only, &admin_new] {
        let early = shoal_as(&c, cred, &["--timeout", "3s", "mkdir", "/early"]);
        assert!(!early.status.success(), "{} was accepted before any server trusted its CA", cred.display());
    }
    assert!(!c.must(&["ls", "/"], None).stdout.windows(5).any(|w| w == b"early"), "a refused client made /early");

    // Step 1: every process trusts both CAs, one restart at a time.
    restart_all_with(&mut c, &node_both, &admin_both);
    ready_as(&c, &admin_both);
    write_and_read_all(&c, &admin_both, &mut files);

    // Step 2: new certificates, one process at a time. Half-way (meta nodes
    // of both CAs, chunk servers of both) clients of either CA work, and
    // capabilities signed by one kind of node pass on the other.
    for i in 0..c.metas.len() {
        restart_with(&mut c, true, i, &node_new, &admin_both);
        if i == 1 {
            restart_with(&mut c, false, 0, &node_new, &admin_both);
            ready_as(&c, &admin_both);
            write_and_read_all(&c, &admin_both, &mut files);
            write_and_read_all(&c, &admin_new, &mut files);
        }
    }
    for j in 1..c.chunks.len() {
        restart_with(&mut c, false, j, &node_new, &admin_new);
    }
    ready_as(&c, &admin_new);
    write_and_read_all(&c, &admin_both, &mut files);

    // Step 3: the old CA is trusted no more.
    restart_all_with(&mut c, &node_only, &admin_new);
    ready_as(&c, &admin_only);
    write_and_read_all(&c, &admin_only, &mut files);
    // Every meta port now refuses the old CA's certificates, and nothing changes.
    for cred in [p.admin(), admin_both.clone()] {
        for addr in &c.meta_addrs {
            let out = run_shoal(addr, &["--tls", &s(&cred), "--timeout", "3s", "mkdir", "/rotation/intruder"], None);
            assert!(!out.status.success(), "{} was accepted by {addr} after the old CA was dropped", cred.display());
        }
    }
    let listing = shoal_as(&c, &admin_only, &["ls", "/rotation"]);
    assert!(listing.status.success(), "{}", stderr(&listing));
    assert!(!String::from_utf8_lossy(&listing.stdout).contains("intruder"), "a refused client changed the namespace");
}
