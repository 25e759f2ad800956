//! t80: self-healing storage on real processes: re-replication after a
//! SIGKILL, stale copies removed when their server returns, corrupt replicas
//! found by reads and by the scrubber and replaced, garbage collection of
//! deleted files, setrep, decommissioning and rebalancing.

use crate::common::*;
use serde_json::Value;

/// Meta declares a silent chunk server dead after this long.
const DEAD_AFTER: &str = "2s";

fn healing_cluster(chunk_nodes: usize, chunk_args: Vec<&'static str>) -> Cluster {
    Cluster::start(Options {
        chunk_nodes,
        meta_args: vec!["--dead-after", DEAD_AFTER],
        chunk_args,
        ..Default::default()
    })
}

/// `admin fsck --json`: whether it exited 0, and what it said.
fn fsck(c: &Cluster) -> (bool, Value) {
    let out = c.shoal(&["admin", "fsck", "--json"], None);
    (out.status.success(), serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

/// The `admin nodes --json` entry of the server at `addr`.
fn node(c: &Cluster, addr: &str) -> Value {
    let out = c.must(&["admin", "nodes", "--json"], None);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    all.as_array().unwrap().iter().find(|n| n["addr"] == addr).cloned().unwrap_or(Value::Null)
}

/// Puts every file from a few threads at once.
fn put_all(c: &Cluster, files: &[(String, Vec<u8>)]) {
    let local = tempfile::tempdir().unwrap();
    std::thread::scope(|s| {
        for part in files.chunks(files.len().div_ceil(4)) {
            let local = local.path();
            s.spawn(move || {
                for (path, data) in part {
                    let src = local.join(path.replace('/', "_"));
                    std::fs::write(&src, data).unwrap();
                    c.must_put(&src, path);
                }
            });
        }
    });
}

/// Every chunk of `path` as (id, replica addresses).
fn chunks(c: &Cluster, path: &str) -> Vec<(u64, Vec<String>)> {
    let st = c.must_stat_json(path);
    st["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ch| {
            let replicas = ch["replicas"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
            (ch["id"].as_u64().unwrap(), replicas)
        })
        .collect()
}

/// Asserts that every chunk of every file has exactly `factor` distinct
/// replicas, none on `not_on`, and that every file reads back byte for byte.
fn must_be_intact(c: &Cluster, files: &[(String, Vec<u8>)], factor: usize, not_on: Option<&str>) {
    for (path, data) in files {
        for (id, replicas) in chunks(c, path) {
            let distinct: std::collections::HashSet<&String> = replicas.iter().collect();
            assert_eq!((replicas.len(), distinct.len()), (factor, factor), "{path} chunk {id}: {replicas:?}");
            assert!(
                not_on.is_none_or(|v| !replicas.iter().any(|r| r == v)),
                "{path} chunk {id} is still on {not_on:?}"
            );
        }
        assert!(c.must_cat(path) == *data, "{path} reads back changed");
    }
}

fn make_files(prefix: &str, count: usize, size: impl Fn(usize) -> usize) -> Vec<(String, Vec<u8>)> {
    (0..count).map(|i| (format!("{prefix}/f{i}"), pattern(size(i), 1000 + i as u64))).collect()
}

#[test]
fn t80_a_killed_server_is_replaced_and_its_copies_go_when_it_returns() {
    let mut c = healing_cluster(4, Vec::new());
    c.must(&["mkdir", "/d"], None);
    let files = make_files("/d", 50, |i| 50_000 + i * 47_000);
    put_all(&c, &files);

    // SIGKILL the server holding the most replicas.
    let j = (0..4).max_by_key(|j| c.chunk_files(*j).len()).unwrap();
    let held = c.chunk_files(j);
    assert!(!held.is_empty());
    let victim = c.chunks[j].addr.clone();
    c.kill_chunk(j);

    // Meta notices, copies every chunk it held from the survivors, and says so.
    wait_until("the killed server is dead", || node(&c, &victim)["state"] == "dead");
    wait_until("fsck is healthy again", || fsck(&c).0);
    let (_, report) = fsck(&c);
    assert_eq!((report["files"].as_u64(), report["dead_servers"].as_u64()), (Some(50), Some(1)), "{report}");
    must_be_intact(&c, &files, 2, Some(&victim));

    // The server returns: every copy it holds was replaced, so all become
    // garbage, and its space is reclaimed.
    assert_eq!(c.chunk_files(j), held, "a dead server's disk is as it was");
    c.start_chunk(j);
    wait_until("the returning server deleted its replaced copies", || c.chunk_files(j).is_empty());
    wait_until("its space is reclaimed", || node(&c, &victim)["used_bytes"] == 0);
    assert!(fsck(&c).0);
    must_be_intact(&c, &files[..5], 2, Some(&victim));
}

#[test]
fn t81_a_read_that_hits_a_corrupt_replica_is_served_elsewhere_and_the_replica_replaced() {
    // The scrubber is off: only the read can find the damage.
    let c = healing_cluster(3, vec!["--scrub-rate", "0"]);
    // Paused repair lets the test see the damage before it is repaired.
    c.must(&["admin", "repair", "pause"], None);
    let files = make_files("", 1, |_| 3_000_000);
    put_all(&c, &files);
    let (id, replicas) = chunks(&c, "/f0").remove(0);
    let (bad, good) = (replicas[0].clone(), replicas[1].clone());
    let j = c.server_index(&bad);
    c.flip_byte(j, id, 1000);

    // The first replica fails its checksum; the read is served by the second.
    assert!(c.must_cat("/f0") == files[0].1, "the read returned the right bytes");
    let (healthy, report) = fsck(&c);
    assert!(!healthy, "fsck must fail while a chunk is corrupt: {report}");
    assert_eq!(report["corrupt"], 1, "{report}");
    let problem = &report["problems"][0];
    assert_eq!((problem["path"].as_str(), problem["state"].as_str()), (Some("/f0"), Some("corrupt")), "{report}");
    // The bad copy is kept (as a last resort) until a good copy replaces it.
    assert!(c.chunk_files(j).contains(&data_file(id)), "nothing is deleted before the repair");
    assert!(c.must_cat("/f0") == files[0].1, "reads keep going around the corrupt replica");

    // Repair resumes: a good copy replaces it, and the bad copy is deleted.
    c.must(&["admin", "repair", "resume"], None);
    wait_until("fsck is healthy again", || fsck(&c).0);
    let replicas = &chunks(&c, "/f0")[0].1;
    assert!(replicas.len() == 2 && replicas.contains(&good) && !replicas.contains(&bad), "{replicas:?}");
    wait_until("the corrupt copy is deleted", || !c.chunk_files(j).contains(&data_file(id)));
    must_be_intact(&c, &files, 2, None);
}

#[test]
fn t82_the_scrubber_finds_a_flipped_byte_nobody_reads() {
    let c = healing_cluster(3, vec!["--scrub-rate", "1GiB/s", "--scrub-every", "300ms"]);
    c.must(&["admin", "repair", "pause"], None);
    let files = make_files("", 1, |_| 2_500_000);
    put_all(&c, &files);
    let (id, replicas) = chunks(&c, "/f0").remove(1);
    c.flip_byte(c.server_index(&replicas[1]), id, 70_000);

    wait_until("fsck reports the corrupt chunk", || fsck(&c).1["corrupt"] == 1);
    let (healthy, report) = fsck(&c);
    assert!(!healthy && report["problems"][0]["chunk_id"] == id, "{report}");

    c.must(&["admin", "repair", "resume"], None);
    wait_until("fsck is healthy again", || fsck(&c).0);
    assert!(!chunks(&c, "/f0")[1].1.contains(&replicas[1]), "the corrupt replica was replaced");
    must_be_intact(&c, &files, 2, None);
}

#[test]
fn t83_setrep_adds_and_drops_replicas_and_deleted_files_leave_every_disk() {
    let c = healing_cluster(3, Vec::new());
    c.must(&["mkdir", "/gc"], None);
    let keep = make_files("/keep", 1, |_| 1_500_000);
    c.must(&["mkdir", "/keep"], None);
    put_all(&c, &keep);
    let doomed = make_files("/gc", 100, |i| 20_000 + (i % 7) * 200_000);
    put_all(&c, &doomed);

    // A directory's factor goes to 3: every file below it gets a third replica.
    c.must(&["setrep", "3", "/gc"], None);
    assert_eq!(c.must_stat_json("/gc/f1")["replication"], 3);
    wait_until("every chunk has 3 replicas", || fsck(&c).0);
    must_be_intact(&c, &doomed[..10], 3, None);
    // One file down to 1: its extra replicas are dropped and their copies deleted.
    c.must(&["setrep", "1", "/gc/f6"], None);
    wait_until("the extra replicas are dropped", || chunks(&c, "/gc/f6").iter().all(|(_, r)| r.len() == 1));
    let kept: Vec<(u64, Vec<String>)> = chunks(&c, "/gc/f6");
    wait_until("the dropped copies are deleted", || {
        kept.iter().all(|(id, _)| (0..3).filter(|j| c.chunk_files(*j).contains(&data_file(*id))).count() == 1)
    });

    // Delete the 100 files: their chunk files leave every disk; the kept file's stay.
    let keep_files: Vec<String> = chunks(&c, "/keep/f0").iter().map(|(id, _)| data_file(*id)).collect();
    c.must(&["rm", "-r", "/gc"], None);
    wait_until("only the kept file's chunks are left on disk", || {
        (0..3).all(|j| c.chunk_files(j).iter().all(|f| keep_files.contains(f)))
    });
    let on_disk: usize = (0..3).map(|j| c.chunk_files(j).len()).sum();
    assert_eq!(on_disk, keep_files.len() * 2, "the kept file still has both replicas of each chunk");
    must_be_intact(&c, &keep, 2, None);
}

#[test]
fn t84_a_decommissioned_server_ends_empty_without_losing_data() {
    let c = healing_cluster(4, Vec::new());
    c.must(&["mkdir", "/d"], None);
    let files = make_files("/d", 20, |i| 100_000 + i * 90_000);
    put_all(&c, &files);
    let j = (0..4).max_by_key(|j| c.chunk_files(*j).len()).unwrap();
    let leaving = c.chunks[j].addr.clone();
    assert!(!c.chunk_files(j).is_empty());

    let out = c.must(&["admin", "decommission", &leaving], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains("draining"));
    assert_eq!(node(&c, &leaving)["state"], "draining");
    // New data avoids it at once.
    let extra = make_files("/new", 1, |_| 2_500_000);
    c.must(&["mkdir", "/new"], None);
    put_all(&c, &extra);
    assert!(chunks(&c, "/new/f0").iter().all(|(_, r)| !r.contains(&leaving)));

    wait_until("the chunk map lists nothing on it", || node(&c, &leaving)["listed_chunks"] == 0);
    wait_until("its disk holds no chunk", || c.chunk_files(j).is_empty());
    assert!(fsck(&c).0, "{}", fsck(&c).1);
    must_be_intact(&c, &files, 2, Some(&leaving));
    must_be_intact(&c, &extra, 2, Some(&leaving));
}

#[test]
fn t85_an_added_empty_server_takes_replicas_after_rebalance() {
    let mut c = healing_cluster(3, Vec::new());
    c.must(&["mkdir", "/d"], None);
    let files = make_files("/d", 24, |i| 300_000 + i * 60_000);
    put_all(&c, &files);
    let total: usize = (0..3).map(|j| c.chunk_files(j).len()).sum();

    // A fourth, empty server joins.
    let j = c.chunks.len();
    let mut args = c.chunks[0].args.clone();
    let dir = c.tmp.path().join(format!("chunk-{}", j + 1));
    let at = |args: &[String], flag: &str| args.iter().position(|a| a == flag).unwrap() + 1;
    let (l, d) = (at(&args, "--listen"), at(&args, "--dir"));
    let addr = format!("127.0.0.1:{}", free_port());
    args[l] = addr.clone();
    args[d] = dir.to_str().unwrap().into();
    c.chunks.push(Node { name: format!("chunk-{}", j + 1), prefix: Vec::new(), args, dir, child: None, addr });
    c.start_chunk(j);
    c.must_be_ready(4);
    assert!(c.chunk_files(j).is_empty());

    let out = c.must(&["admin", "rebalance"], None);
    assert!(
        !String::from_utf8_lossy(&out.stdout).starts_with("rebalance: 0 "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let added = c.chunks[j].addr.clone();
    wait_until("the moves are done", || {
        let (healthy, report) = fsck(&c);
        healthy && report["moves_pending"] == 0 && report["repairs_in_flight"] == 0 && report["over_replicated"] == 0
    });
    let listed = node(&c, &added)["listed_chunks"].as_u64().unwrap() as usize;
    assert!(listed * 5 >= total, "the new server took {listed} of {total} replicas");
    wait_until("moved sources are deleted", || (0..4).map(|j| c.chunk_files(j).len()).sum::<usize>() == total);
    assert_eq!(c.chunk_files(j).len(), listed);
    must_be_intact(&c, &files, 2, None);
}
