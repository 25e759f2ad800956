//! t57: a new small file in one meta log entry (`Client::write_new`:
//! `PrepareNew`, the chain write, `CreateWritten`). Files of every size read
//! back whole; one file costs one entry, counted on the meta node's own
//! metric; an empty file and one bigger than a chunk take the ordinary
//! path; a name that exists is refused and left as it was; a chunk server
//! killed under the writers is routed around, and fsck is healthy after; a
//! writer that stops after writing its bytes, never creating its file,
//! leaves no file, and its copies leave the servers' disks once its id is
//! no longer reserved.

use std::time::Duration;

use shoal_client::{Bytes, Client, Transport};
use shoal_proto::meta::PrepareNewRequest;
use shoal_proto::meta::namespace_client::NamespaceClient;

use crate::common::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Raft log entries the meta node has appended so far.
fn log_entries(c: &Cluster) -> f64 {
    let (_, _, text) = http_get(c.meta_http[0].as_deref().expect("meta has an HTTP port"), "/metrics");
    metric_sum(&text, "shoal_meta_raft_log_entries_total", &[])
}

#[test]
fn t57_new_small_files_take_one_entry_each_and_read_back_whole() {
    let c = Cluster::start(Options {
        meta_nodes: 1,
        chunk_nodes: 3,
        replication: 2,
        chunk_size: "64KiB",
        http: true,
        ..Default::default()
    });
    let rt = runtime();
    rt.block_on(async {
        let client = Client::connect_with_timeout(&c.meta_addrs, PATIENCE).await.unwrap();
        client.mkdir("/s", false).await.unwrap();
        // Warm up: the first file also reserves the leader's run of ids.
        client.write_new("/s/warm", Bytes::from_static(b"w"), None, None).await.unwrap();
        let sizes: Vec<usize> = (0..40).map(|i| [1, 100, 4096, 65_535, 65_536][i % 5]).collect();
        let before = log_entries(&c);
        for (i, size) in sizes.iter().enumerate() {
            let data = Bytes::from(pattern(*size, i as u64));
            let stat = client.write_new(&format!("/s/f{i}"), data, None, None).await.unwrap();
            assert_eq!(stat.size, *size as u64, "f{i}");
        }
        let spent = log_entries(&c) - before;
        // The ordinary path took two entries per file (create with chunk 0
        // prepared, commit); a few more may be the cluster's own (a chunk
        // report, a session sweep).
        assert!(spent <= sizes.len() as f64 + 4.0, "{spent} log entries for {} files", sizes.len());
        for (i, size) in sizes.iter().enumerate() {
            let mut f = client.open(&format!("/s/f{i}")).await.unwrap();
            assert_eq!(f.read_at(0, 1 << 20).await.unwrap(), pattern(*size, i as u64), "f{i} read back");
        }

        // An empty file, and one past a chunk: the ordinary path, same result.
        let empty = client.write_new("/s/empty", Bytes::new(), None, None).await.unwrap();
        assert_eq!(empty.size, 0);
        let big = pattern(200_000, 7);
        let stat = client.write_new("/s/big", Bytes::from(big.clone()), None, None).await.unwrap();
        assert_eq!(stat.size, 200_000);
        assert_eq!(client.open("/s/big").await.unwrap().read_at(0, 1 << 20).await.unwrap(), big);

        // A name that exists is refused, and keeps its bytes.
        let err = client.write_new("/s/f2", Bytes::from_static(b"other"), None, None).await.unwrap_err();
        assert!(err.to_string().contains("exists"), "{err}");
        assert_eq!(client.open("/s/f2").await.unwrap().read_at(0, 1 << 20).await.unwrap(), pattern(4096, 2));
        // So is one with no parent directory, and the root.
        assert!(client.write_new("/nope/f", Bytes::from_static(b"x"), None, None).await.is_err());
        assert!(client.write_new("/", Bytes::from_static(b"x"), None, None).await.is_err());
        let listed = client.list("/s").await.unwrap().len();
        assert_eq!(listed, 1 + sizes.len() + 2, "exactly the files made");
    });
    assert!(c.shoal(&["admin", "fsck"], None).status.success(), "fsck after the writes");
}

#[test]
fn t57_a_chunk_server_killed_under_new_small_files_is_routed_around() {
    let mut c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 3, replication: 2, ..Default::default() });
    let rt = runtime();
    let client = rt.block_on(Client::connect_with_timeout(&c.meta_addrs, PATIENCE)).unwrap();
    rt.block_on(client.mkdir("/k", false)).unwrap();
    for i in 0..10 {
        rt.block_on(client.write_new(&format!("/k/a{i}"), Bytes::from(pattern(3000, i)), None, None)).unwrap();
    }
    // Meta still counts it alive for a while, and places new chunks on it.
    c.kill_chunk(0);
    for i in 0..30 {
        let name = format!("/k/b{i}");
        let write = client.write_new(&name, Bytes::from(pattern(5000, 100 + i)), None, None);
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(60), write).await })
            .expect("write_new hung")
            .unwrap_or_else(|e| panic!("b{i} with a chunk server down: {e}"));
    }
    rt.block_on(async {
        for i in 0..30 {
            let mut f = client.open(&format!("/k/b{i}")).await.unwrap();
            assert_eq!(f.read_at(0, 1 << 20).await.unwrap(), pattern(5000, 100 + i), "b{i}");
        }
        for i in 0..10 {
            let mut f = client.open(&format!("/k/a{i}")).await.unwrap();
            assert_eq!(f.read_at(0, 1 << 20).await.unwrap(), pattern(3000, i), "a{i} after the kill");
        }
    });
    // Once meta sees it dead, the lost copies are made again.
    wait_until("fsck healthy after the kill", || c.shoal(&["admin", "fsck"], None).status.success());
}

#[test]
fn t57_a_writer_that_never_creates_its_file_leaves_nothing_behind() {
    let c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 2, replication: 2, ..Default::default() });
    let rt = runtime();
    let _entered = rt.enter();
    let alice = Transport::load(&pki().user()).unwrap();
    let mut meta = NamespaceClient::new(channel(&c.meta_addrs[0], &alice));
    let mut prepare_new = |path: &str| {
        let req = PrepareNewRequest { path: path.into(), ..Default::default() };
        rt.block_on(meta.prepare_new(req)).unwrap().into_inner()
    };
    // Steps 1 and 2 of a small file, and then the writer is gone.
    let prep = prepare_new("/orphan");
    let loc = prep.chunk.clone().unwrap();
    rt.block_on(write_granted(&alice, &loc, pattern(5000, 57))).expect("the chain write");
    let data_file = |n: &Node| n.dir.join("chunks").join(format!("{:016x}.data", loc.id));
    assert!(c.chunks.iter().all(|n| data_file(n).exists()), "both replicas hold the bytes");
    // A report while the id is reserved and unused leaves the copies alone:
    // another writer's file may be about to name such an id. (Reports come
    // every 30 s; wait for one past the write, and for the heartbeat that
    // would carry a delete.)
    std::thread::sleep(Duration::from_secs(35));
    assert!(c.chunks.iter().all(|n| data_file(n).exists()), "a reserved id's copies were deleted");
    // Other writers use up the leader's runs: the orphan's run is pushed out.
    for i in 0..2 * 1024 + 1 {
        prepare_new(&format!("/other{i}"));
    }
    // Now nothing can ever create a file with it: the next reports make it garbage.
    wait_until_within(Duration::from_secs(120), "the orphan's copies leave both disks", || {
        c.chunks.iter().all(|n| !data_file(n).exists())
    });
    assert!(c.shoal(&["stat", "/orphan"], None).status.code() != Some(0), "a file appeared");
    assert!(c.shoal(&["admin", "fsck"], None).status.success());
}
