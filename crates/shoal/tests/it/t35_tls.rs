//! t35: mutual TLS and identities. Every gRPC port of a TLS cluster refuses
//! a peer with no certificate, one from another CA and an expired one, and
//! nothing changes; a user certificate reads and writes files but is refused
//! every admin and node-only call; a cluster started `--insecure` works end
//! to end in plaintext and says so in its logs.

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
    // A TLS client cannot talk to it.
    let out = run_shoal(&c.meta_flag(), &["ls", "/"], None);
    assert!(!out.status.success(), "a TLS client listed an insecure cluster");
}
