//! t36: chunk capabilities. A client with a valid certificate that calls
//! `Chunk.Write` or `Chunk.Read` on a chunk server directly, without meta's
//! capability, with another identity's, a tampered, an expired one or one
//! for another version or mode, is refused with `PERMISSION_DENIED`, and no
//! byte on any chunk server's disk changes; nodes need none; the same
//! client's own capabilities work, and so do put and cat through the client.
//! A write capability names one version; one meta signed expires (a short
//! `--capability-lifetime`, no `--capability-skew`), and a reader holding an
//! old chunk map asks meta again by itself. A file written before it is
//! created is created only by its writer, with meta's capability, once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use shoal_client::{Client, Transport};
use shoal_proto::capability::{self, CapabilityKey, Grant, Mode};
use shoal_proto::chunk::chunk_client::ChunkClient;
use shoal_proto::chunk::{Capability, ChunkErrorKind, ReadRequest, WriteHeader};
use shoal_proto::meta::namespace_client::NamespaceClient;
use shoal_proto::meta::{CreateRequest, CreateWrittenRequest, PrepareNewRequest, PrepareWriteRequest, RequestId};
use shoal_tls::{Identity, IssueRequest, Role};
use tonic::Status;

use crate::common::*;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// One direct read, all of its pieces.
async fn read_direct(addr: &str, who: &Transport, req: ReadRequest) -> Result<Vec<u8>, Status> {
    let call = async {
        let mut stream = ChunkClient::new(channel(addr, who)).read(req).await?.into_inner();
        let mut out = Vec::new();
        while let Some(piece) = stream.message().await? {
            out.extend_from_slice(&piece.data);
        }
        Ok(out)
    };
    tokio::time::timeout(CALL_TIMEOUT, call).await.unwrap_or_else(|_| Err(Status::deadline_exceeded("read")))
}

/// Every file under every chunk server's `chunks` folder, with its bytes.
fn disk_snapshot(c: &Cluster) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for n in &c.chunks {
        for e in std::fs::read_dir(n.dir.join("chunks")).unwrap() {
            let path = e.unwrap().path();
            if path.is_file() {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    assert!(!files.is_empty(), "no chunk files at all");
    files
}

/// `cap` with one bit of its body flipped.
fn tampered(cap: &Capability) -> Capability {
    let mut body = cap.body.to_vec();
    let last = body.len() - 1;
    body[last] ^= 1;
    Capability { body: body.into(), tag: cap.tag.clone() }
}

/// Asserts `result` is a capability refusal of `kind`.
fn assert_refused<T: std::fmt::Debug>(what: &str, result: Result<T, Status>, kind: ChunkErrorKind) {
    let status = result.expect_err(&format!("{what}: let in"));
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{what}: {status:?}");
    assert_eq!(ChunkErrorKind::of(&status), Some(kind), "{what}: {status:?}");
    assert!(status.message().contains("capability"), "{what}: {}", status.message());
}

#[test]
fn t36_chunk_calls_need_the_callers_own_valid_capability_and_refusals_change_nothing() {
    let c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 2, replication: 2, http: true, ..Default::default() });
    let data = pattern(200_000, 36);
    c.must(&["put", "-", "/f"], Some(&data));
    let rt = runtime();
    let _entered = rt.enter();
    let alice = Transport::load(&pki().user()).unwrap();
    let alice_uri = alice.identity().unwrap().uri();
    let admin = Transport::load(&pki().admin()).unwrap();
    let node = Transport::load(&pki().node()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let mallory_dir = other.path().join("mallory");
    let req = IssueRequest::new(Identity::new("mallory", Role::User).unwrap(), mallory_dir.clone());
    shoal_tls::issue(&pki().ca(), &req).unwrap();
    let mallory = Transport::load(&mallory_dir).unwrap();
    assert!(mallory.cluster_key().is_none() && alice.cluster_key().is_none(), "a user holds the cluster key");

    // Alice's capabilities, as meta hands them out: to read the committed
    // version (Layout), and to write a version a PrepareWrite grants (never
    // committed here, so readers never see it).
    let (stat, chunks) = rt.block_on(async {
        let client = Client::connect_with(&c.meta_addrs, PATIENCE, alice.clone()).await.unwrap();
        client.chunks("/f").await.unwrap()
    });
    let chunk = chunks[0].clone();
    let read_cap = chunk.capability.clone().expect("meta gave no read capability");
    let meta = c.meta_addrs[0].clone();
    let prep = rt
        .block_on(NamespaceClient::new(channel(&meta, &alice)).prepare_write(PrepareWriteRequest {
            inode: stat.inode,
            chunk_index: 0,
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    let loc = prep.chunk.unwrap();
    assert_eq!(loc.id, chunk.id);
    assert!(loc.version > chunk.version);
    let write_cap = capability::decode(&loc.capability).expect("meta gave no write capability");
    // Only a holder of the cluster key (a node) can make one that expired.
    let key = CapabilityKey::of(&node).expect("the node credentials hold the cluster key");
    let long_ago = capability::now_ms() - capability::SKEW_MARGIN_MAX.as_millis() as u64 - 60_000;
    let expired = |mode, version| {
        key.sign(&Grant { chunk_id: chunk.id, version, identity: alice_uri.clone(), mode, expires_at_ms: long_ago })
    };
    let before = disk_snapshot(&c);

    // Writes: straight to each chunk server, with the chain to the other one.
    let header = |cap: Option<Capability>, to: usize| WriteHeader {
        chunk_id: loc.id,
        version: loc.version,
        base_version: prep.base_version,
        offset: 0,
        downstream: vec![c.chunks[1 - to].addr.clone()],
        truncate_to: None,
        fence_token: 0,
        capability: cap,
    };
    use ChunkErrorKind::{CapabilityExpired, NoCapability};
    let writes: Vec<(&str, &Transport, Option<Capability>, ChunkErrorKind)> = vec![
        ("a user without a capability", &mallory, None, NoCapability),
        ("a user with another user's write capability", &mallory, Some(write_cap.clone()), NoCapability),
        ("an admin with a user's write capability", &admin, Some(write_cap.clone()), NoCapability),
        ("the holder without it", &alice, None, NoCapability),
        ("the holder with her read capability", &alice, Some(read_cap.clone()), NoCapability),
        ("the holder with a tampered write capability", &alice, Some(tampered(&write_cap)), NoCapability),
        (
            "the holder with an expired write capability",
            &alice,
            Some(expired(Mode::Write, loc.version)),
            CapabilityExpired,
        ),
        ("an empty capability", &alice, Some(Capability::default()), NoCapability),
    ];
    for (what, who, cap, kind) in writes {
        for to in 0..c.chunks.len() {
            let junk = vec![0xa5; 70_000];
            let result = rt.block_on(write_direct(&c.chunks[to].addr, who, header(cap.clone(), to), junk));
            assert_refused(&format!("write by {what} to chunk server {to}"), result, kind);
        }
    }

    // Reads of the committed version.
    let read = |cap: Option<Capability>, version: u64| ReadRequest {
        chunk_id: chunk.id,
        offset: 0,
        length: 4096,
        version,
        capability: cap,
    };
    let v = chunk.version;
    let reads: Vec<(&str, &Transport, ReadRequest, ChunkErrorKind)> = vec![
        ("a user without a capability", &mallory, read(None, v), NoCapability),
        ("a user with another user's read capability", &mallory, read(Some(read_cap.clone()), v), NoCapability),
        ("an admin with a user's read capability", &admin, read(Some(read_cap.clone()), v), NoCapability),
        ("the holder without it", &alice, read(None, v), NoCapability),
        ("the holder with her write capability", &alice, read(Some(write_cap.clone()), loc.version), NoCapability),
        ("the holder for another version", &alice, read(Some(read_cap.clone()), v + 1), NoCapability),
        ("the holder with a tampered read capability", &alice, read(Some(tampered(&read_cap)), v), NoCapability),
        (
            "the holder with an expired read capability",
            &alice,
            read(Some(expired(Mode::Read, v)), v),
            CapabilityExpired,
        ),
    ];
    for (what, who, req, kind) in reads {
        for n in &c.chunks {
            let result = rt.block_on(read_direct(&n.addr, who, req.clone()));
            assert_refused(&format!("read by {what} from {}", n.addr), result, kind);
        }
    }
    assert_eq!(disk_snapshot(&c), before, "a refused call changed a chunk file");

    // Every refusal above is counted, by mode and reason: each case was
    // tried on both servers, and one case of each list is an expired one.
    let scraped: Vec<String> = c
        .chunk_http
        .iter()
        .map(|a| http_get(a.as_deref().expect("chunk servers have HTTP ports"), "/metrics").2)
        .collect();
    let refusals = |mode: &str, reason: &str| -> f64 {
        let labels = [format!("mode=\"{mode}\""), format!("reason=\"{reason}\"")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        scraped.iter().map(|t| metric_sum(t, "shoal_chunk_capability_refusals_total", &labels)).sum()
    };
    assert_eq!(refusals("write", "expired"), 2.0, "{scraped:?}");
    assert_eq!(refusals("write", "invalid"), 14.0, "{scraped:?}");
    assert_eq!(refusals("read", "expired"), 2.0, "{scraped:?}");
    assert_eq!(refusals("read", "invalid"), 14.0, "{scraped:?}");

    // The holder's own capabilities work; nodes need none.
    for n in &c.chunks {
        let got = rt.block_on(read_direct(&n.addr, &alice, read(Some(read_cap.clone()), v))).unwrap();
        assert_eq!(got, data[..4096], "the holder's read from {}", n.addr);
        let got = rt.block_on(read_direct(&n.addr, &node, read(None, v))).unwrap();
        assert_eq!(got, data[..4096], "a node's read from {}", n.addr);
    }
    rt.block_on(write_direct(&c.chunks[0].addr, &alice, header(Some(write_cap.clone()), 0), vec![0x5a; 1000]))
        .expect("the holder's write with her own capability");
    assert_ne!(disk_snapshot(&c), before, "the holder's write changed nothing");
    // It was never committed: readers still see the file as it was.
    assert_eq!(c.must_cat("/f"), data);

    // Through the client, as the user, everything works as before.
    let user = pki().user();
    let as_user =
        |args: &[&str], stdin: Option<&[u8]>| c.shoal(&[&["--tls", user.to_str().unwrap()], args].concat(), stdin);
    let more = pattern(3_000_000, 37);
    let out = as_user(&["put", "-", "/g"], Some(&more));
    assert!(out.status.success(), "user put: {}", stderr(&out));
    let out = as_user(&["cat", "/g"], None);
    assert!(out.status.success() && out.stdout == more, "user cat: {}", stderr(&out));
    let out = as_user(&["write", "--offset", "10", "/f"], Some(b"overwritten"));
    assert!(out.status.success(), "user write: {}", stderr(&out));
    let mut want = data.clone();
    want[10..21].copy_from_slice(b"overwritten");
    assert_eq!(c.must_cat("/f"), want);
}

#[test]
fn t36_a_write_capability_belongs_to_one_version_and_a_superseded_writer_is_refused() {
    let c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 2, replication: 2, ..Default::default() });
    let data = pattern(100_000, 38);
    c.must(&["put", "-", "/h"], Some(&data));
    let rt = runtime();
    let _entered = rt.enter();
    let alice = Transport::load(&pki().user()).unwrap();
    let meta = c.meta_addrs[0].clone();
    let stat = rt.block_on(async {
        let client = Client::connect_with(&c.meta_addrs, PATIENCE, alice.clone()).await.unwrap();
        client.stat("/h").await.unwrap()
    });
    let prepare = || {
        let req = PrepareWriteRequest { inode: stat.inode, chunk_index: 0, ..Default::default() };
        rt.block_on(NamespaceClient::new(channel(&meta, &alice)).prepare_write(req)).unwrap().into_inner()
    };
    // Two grants: the first writer is overtaken by the second.
    let first = prepare();
    let second = prepare();
    let (l1, l2) = (first.chunk.unwrap(), second.chunk.unwrap());
    assert!(l2.version > l1.version);
    let header = |loc: &shoal_proto::meta::ChunkLocation, base: u64, cap: Option<Capability>| WriteHeader {
        chunk_id: loc.id,
        version: loc.version,
        base_version: base,
        offset: 0,
        downstream: vec![c.chunks[1].addr.clone()],
        truncate_to: None,
        fence_token: 0,
        capability: cap,
    };
    let cap1 = capability::decode(&l1.capability).unwrap();
    let cap2 = capability::decode(&l2.capability).unwrap();
    // The first grant's capability does not stretch to the second version.
    let stretched = rt.block_on(write_direct(
        &c.chunks[0].addr,
        &alice,
        header(&l2, second.base_version, Some(cap1.clone())),
        vec![1; 10],
    ));
    assert_refused("a write capability used for another version", stretched, ChunkErrorKind::NoCapability);
    // The second writer writes; then the first one, with its own valid
    // capability, is refused by the replicas as before (an older version).
    rt.block_on(write_direct(&c.chunks[0].addr, &alice, header(&l2, second.base_version, Some(cap2)), vec![2; 10]))
        .expect("the newest grant's write");
    let late =
        rt.block_on(write_direct(&c.chunks[0].addr, &alice, header(&l1, first.base_version, Some(cap1)), vec![3; 10]));
    let status = late.expect_err("a superseded writer wrote");
    assert_eq!(ChunkErrorKind::of(&status), Some(ChunkErrorKind::NewerVersion), "{status:?}");
    // Neither was committed.
    assert_eq!(c.must_cat("/h"), data);
}

/// A file written before it is created (`PrepareNew`, then
/// `CreateWritten`) is created only by the caller its chunk was granted to,
/// with the capability meta signed, once; every refusal makes no file.
#[test]
fn t36_a_file_written_before_it_is_created_is_created_only_by_its_writer_and_once() {
    let c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 2, replication: 2, ..Default::default() });
    let rt = runtime();
    let _entered = rt.enter();
    let alice = Transport::load(&pki().user()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let mallory_dir = other.path().join("mallory");
    let req = IssueRequest::new(Identity::new("mallory", Role::User).unwrap(), mallory_dir.clone());
    shoal_tls::issue(&pki().ca(), &req).unwrap();
    let mallory = Transport::load(&mallory_dir).unwrap();
    let meta = c.meta_addrs[0].clone();
    let prep = rt
        .block_on(
            NamespaceClient::new(channel(&meta, &alice))
                .prepare_new(PrepareNewRequest { path: "/n".into(), ..Default::default() }),
        )
        .unwrap()
        .into_inner();
    let loc = prep.chunk.clone().unwrap();
    assert_eq!((loc.version, prep.base_version, loc.replicas.len()), (1, 0, 2));
    let data = pattern(3000, 39);
    rt.block_on(write_granted(&alice, &loc, data.clone())).expect("the granted chain write");
    let create = |who: &Transport, path: &str, loc: shoal_proto::meta::ChunkLocation, size: u64, seq: u64| {
        let req = CreateWrittenRequest {
            create: Some(CreateRequest { path: path.into(), ..Default::default() }),
            chunk: Some(loc),
            size,
            request: Some(RequestId { client: 0x5736, seq, done_below: 0 }),
        };
        rt.block_on(NamespaceClient::new(channel(&meta, who)).create_written(req)).map(|r| r.into_inner())
    };
    let mut forged = loc.clone();
    forged.capability = capability::encode(&tampered(&capability::decode(&loc.capability).unwrap()));
    let mut later = loc.clone();
    later.version = 2;
    let refusals: Vec<(&str, Result<_, Status>, tonic::Code)> = vec![
        ("by another user", create(&mallory, "/n", loc.clone(), 3000, 1), tonic::Code::PermissionDenied),
        ("with a tampered capability", create(&alice, "/n", forged, 3000, 2), tonic::Code::PermissionDenied),
        ("of another version", create(&alice, "/n", later, 3000, 3), tonic::Code::InvalidArgument),
        ("of no bytes", create(&alice, "/n", loc.clone(), 0, 4), tonic::Code::InvalidArgument),
    ];
    for (what, result, code) in refusals {
        let status = result.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
    }
    assert!(c.shoal(&["stat", "/n"], None).status.code() != Some(0), "a refused create made /n");
    create(&alice, "/n", loc.clone(), 3000, 5).expect("the writer's own create");
    assert_eq!(c.must_cat("/n"), data);
    // The chunk is used: another file cannot be made with it (the writer
    // would write again, under a fresh id).
    let again = create(&alice, "/n2", loc.clone(), 3000, 6).expect_err("a chunk used twice");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    assert!(c.shoal(&["stat", "/n2"], None).status.code() != Some(0), "a second file names the chunk");
    // A retry of the create that went through gets its first answer.
    create(&alice, "/n", loc, 3000, 5).expect("a retried create");
    assert_eq!(c.must_cat("/n"), data);
}

#[test]
fn t36_a_reader_whose_capabilities_expired_asks_meta_again() {
    // Capabilities that live 2 s and are not taken a moment later.
    let c = Cluster::start(Options {
        meta_nodes: 1,
        chunk_nodes: 2,
        replication: 2,
        meta_args: vec!["--capability-lifetime", "2s"],
        chunk_args: vec!["--capability-skew", "0s"],
        ..Default::default()
    });
    let data = pattern(2_500_000, 39);
    c.must(&["put", "-", "/slow"], Some(&data));
    let rt = runtime();
    let alice = Transport::load(&pki().user()).unwrap();
    let meta = c.meta_addrs[0].clone();
    let first_chunk = c.chunks[0].addr.clone();
    rt.block_on(async {
        let client = Client::connect_with(&c.meta_addrs, PATIENCE, alice.clone()).await.unwrap();
        let mut file = client.open("/slow").await.unwrap();
        assert_eq!(file.read_at(0, 1000).await.unwrap(), data[..1000]);
        // A grant whose write waits too long.
        let req = PrepareWriteRequest { inode: file.cached_stat().inode, chunk_index: 0, ..Default::default() };
        let prep = NamespaceClient::new(channel(&meta, &alice)).prepare_write(req).await.unwrap().into_inner();
        let loc = prep.chunk.unwrap();
        // A slow reader: the chunk map it holds outlives its capabilities.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(file.read_at(1000, data.len() as u64).await.unwrap(), data[1000..]);
        let header = WriteHeader {
            chunk_id: loc.id,
            version: loc.version,
            base_version: prep.base_version,
            offset: 0,
            downstream: Vec::new(),
            truncate_to: None,
            fence_token: 0,
            capability: capability::decode(&loc.capability),
        };
        let late = write_direct(&first_chunk, &alice, header, vec![7; 100]).await;
        assert_refused("a write with meta's capability after it expired", late, ChunkErrorKind::CapabilityExpired);
        // And a writer after the pause: its grants come with fresh capabilities.
        file.write_at(5, b"later").await.unwrap();
    });
    let mut want = data.clone();
    want[5..10].copy_from_slice(b"later");
    assert_eq!(c.must_cat("/slow"), want);
    // The chunk servers did refuse the old capabilities: the read was renewed, not waved through.
    let refused = c.chunks.iter().any(|n| std::fs::read_to_string(c.log(&n.name)).unwrap().contains("expired"));
    assert!(refused, "no chunk server saw an expired capability");
}
