//! t61: meta membership. A follower that fell behind the leader's compacted
//! log catches up from a snapshot and counts in the majority again; a dead
//! meta node is removed and replaced by a new one (`meta --join`, then
//! `admin meta add`) while the group keeps serving, and the replacement
//! carries the group through the loss of the leader. Bad membership requests
//! fail clearly and change nothing.
//!
//! Agreement is checked with `admin status --json --digest`: every reachable
//! node reports its applied index and a checksum of its whole state there.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;
use shoal_client::Client;

/// `--snapshot-every` of every meta node: Raft entries between snapshots; a
/// node also keeps only this many entries of log before its snapshot.
const SNAPSHOT_EVERY: &str = "50";
/// Files created while a follower is down: enough entries for several
/// snapshots, so the leader's log no longer reaches back to the follower.
const FILES_WHILE_DOWN: usize = 200;

fn snapshot_every() -> u64 {
    SNAPSHOT_EVERY.parse().unwrap()
}

/// `admin status --json --digest` against the meta nodes in `meta`; the
/// command also asks every member the nodes know of.
fn status(meta: &str) -> serde_json::Value {
    let out = run_shoal(meta, &["admin", "status", "--json", "--digest"], None);
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("admin status printed no JSON ({e}); stderr: {}", stderr(&out)))
}

/// Waits until the reachable meta nodes are exactly `ids`, one of them leads,
/// and all report the same applied index (at least `min_applied`) with the
/// same state digest. Returns that status.
fn must_agree(meta: &str, ids: &[u64], min_applied: u64) -> serde_json::Value {
    let want: BTreeSet<u64> = ids.iter().copied().collect();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = status(meta);
        let rows: Vec<&serde_json::Value> =
            s["nodes"].as_array().unwrap().iter().filter(|n| n["role"] != "unreachable").collect();
        let reachable: BTreeSet<u64> = rows.iter().filter_map(|n| n["id"].as_u64()).collect();
        let applied: BTreeSet<u64> = rows.iter().filter_map(|n| n["last_applied"].as_u64()).collect();
        let digests: BTreeSet<&str> = rows.iter().filter_map(|n| n["state_digest"].as_str()).collect();
        let leaders = rows.iter().filter(|n| n["role"] == "leader").count();
        let same_index = applied.len() == 1 && applied.iter().all(|a| *a >= min_applied);
        if reachable == want && leaders == 1 && same_index {
            // Same index: the digests must agree now, not eventually.
            assert_eq!(digests.len(), 1, "meta nodes at the same applied index disagree on the state: {s:#}");
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "meta nodes {want:?} did not agree at index >= {min_applied} within {PATIENCE:?}: {s:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The row of node `id` in a status.
fn row(s: &serde_json::Value, id: u64) -> &serde_json::Value {
    s["nodes"].as_array().unwrap().iter().find(|n| n["id"] == id).unwrap_or_else(|| panic!("no node {id} in {s:#}"))
}

fn applied(s: &serde_json::Value, id: u64) -> u64 {
    row(s, id)["last_applied"].as_u64().unwrap()
}

/// The group's members (voters and learners) as `ID=HOST:PORT`, in the
/// leader's own view.
fn members(c: &Cluster) -> BTreeSet<String> {
    let addr = c.metas[c.wait_leader()].addr.clone();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reply = rt
        .block_on(async {
            let client = Client::connect_with_timeout(std::slice::from_ref(&addr), PATIENCE).await?;
            client.meta_node_status(&addr, Duration::from_secs(5), false).await
        })
        .unwrap_or_else(|e| panic!("status of the leader {addr}: {e}"));
    reply.nodes.iter().map(|n| format!("{}={}", n.id, n.addr)).collect()
}

fn member_set(c: &Cluster, ids: &[u64]) -> BTreeSet<String> {
    ids.iter().map(|id| format!("{id}={}", c.metas[*id as usize - 1].addr)).collect()
}

/// The members an `admin meta add|remove` printed (`meta group: ID=ADDR,...`).
fn group_printed(out: &std::process::Output) -> BTreeSet<String> {
    let text = String::from_utf8_lossy(&out.stdout);
    let list = text.trim().strip_prefix("meta group: ").unwrap_or_else(|| panic!("unexpected output: {text}"));
    list.split(',').map(str::to_string).collect()
}

/// Creates `n` empty files under `dir` through one shell session (one Raft
/// entry each, without a process per file).
fn must_create_files(c: &Cluster, dir: &str, n: usize) {
    c.must(&["mkdir", "-p", dir], None);
    let mut script: String = (0..n).map(|i| format!("create {dir}/f{i:03}\n")).collect();
    script.push_str("exit\n");
    let out = c.must(&["shell"], Some(script.as_bytes()));
    let text = String::from_utf8_lossy(&out.stdout);
    let created = text.lines().filter(|l| l.starts_with("created ")).count();
    assert_eq!(created, n, "every create succeeds; shell output:\n{text}");
}

fn ls_names(meta: &str, dir: &str) -> Vec<String> {
    let out = run_shoal(meta, &["ls", "--json", dir], None);
    assert!(out.status.success(), "ls {dir} via {meta}: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

/// The index of the last entry a node's snapshot file covers (None: no snapshot).
fn snapshot_index(dir: &std::path::Path) -> Option<u64> {
    let meta = shoal_meta::sm_store::read_snapshot_meta(dir).expect("a readable snapshot")?;
    Some(meta.last_log_id.expect("a snapshot names its last log id").index)
}

/// How many snapshots a node received from a leader, going by its log
/// (openraft 0.9 logs `install_full_snapshot` at info; the harness runs every
/// node with `SHOAL_LOG=info`). A node that makes its own snapshots from the
/// log it replayed does not log this.
fn snapshots_received(c: &Cluster, name: &str) -> usize {
    let log = std::fs::read_to_string(c.log(name)).unwrap_or_default();
    log.lines().filter(|l| l.contains("Raft::install_full_snapshot")).count()
}

#[test]
fn t61_lagging_follower_catches_up_from_a_snapshot() {
    let mut c = Cluster::start(Options {
        meta_nodes: 3,
        chunk_nodes: 2,
        replication: 2,
        meta_args: vec!["--snapshot-every", SNAPSHOT_EVERY],
        ..Options::default()
    });
    let all = c.meta_flag();

    // A follower goes down early, before it has made any snapshot.
    let leader = c.wait_leader();
    let f = (leader + 1) % 3;
    let f_id = f as u64 + 1;
    let before = must_agree(&all, &[1, 2, 3], 0);
    let f_index_at_kill = applied(&before, f_id);
    c.kill_meta(f);
    assert_eq!(snapshot_index(&c.metas[f].dir), None, "the follower had no snapshot yet (index {f_index_at_kill})");
    assert_eq!(snapshots_received(&c, &c.metas[f].name), 0);

    // The others commit many entries: several snapshots, and log compaction
    // past everything the follower has.
    must_create_files(&c, "/many", FILES_WHILE_DOWN);
    let up = status(&all);
    let leader_index = applied(&up, leader as u64 + 1);
    assert!(leader_index > f_index_at_kill + 3 * snapshot_every(), "entries made: {up:#}");
    let leader_snapshot = snapshot_index(&c.metas[leader].dir).expect("the leader made a snapshot");
    assert!(
        leader_snapshot > f_index_at_kill + snapshot_every(),
        "the leader's kept log ({SNAPSHOT_EVERY} entries before its snapshot at {leader_snapshot}) \
         no longer reaches the follower's index {f_index_at_kill}"
    );

    // The follower returns and reaches the same state as the others.
    let t = Instant::now();
    c.start_meta(f);
    let agreed = must_agree(&all, &[1, 2, 3], leader_index);
    eprintln!("follower {f_id} caught up to index {} in {:?}", applied(&agreed, f_id), t.elapsed());
    assert_eq!(row(&agreed, f_id)["role"], "follower", "{agreed:#}");
    let f_snapshot = snapshot_index(&c.metas[f].dir).expect("the follower holds a snapshot");
    assert!(f_snapshot > f_index_at_kill + snapshot_every(), "snapshot at {f_snapshot}, killed at {f_index_at_kill}");
    assert!(snapshots_received(&c, &c.metas[f].name) > 0, "the follower caught up from the leader's snapshot");
    let names = ls_names(&c.metas[f].addr, "/many");
    assert_eq!(names.len(), FILES_WHILE_DOWN, "listed via the follower only: {names:?}");
    assert!(names.iter().enumerate().all(|(i, n)| *n == format!("f{i:03}")), "{names:?}");

    // The old leader dies: the restarted follower is now half of the majority.
    c.kill_meta(leader);
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != leader as u64 + 1).collect();
    let agreed = must_agree(&all, &survivors, leader_index);
    c.must_be_ready(2);
    c.must(&["put", "-", "/many/after-leader-loss"], Some(b"written by the new majority"));
    assert_eq!(c.must_cat("/many/after-leader-loss"), b"written by the new majority");
    assert_eq!(ls_names(&all, "/many").len(), FILES_WHILE_DOWN + 1);
    must_agree(&all, &survivors, applied(&agreed, survivors[0]) + 1);
}

#[test]
fn t61_dead_meta_node_is_replaced_without_downtime() {
    let mut c = Cluster::start(Options {
        meta_nodes: 3,
        meta_args: vec!["--snapshot-every", SNAPSHOT_EVERY],
        ..Options::default()
    });
    let local = tempfile::tempdir().unwrap();
    let data = pattern(2_500_000, 61);
    let src = local.path().join("f");
    std::fs::write(&src, &data).unwrap();
    c.must_put(&src, "/keep");

    // A follower dies for good and is removed from the group.
    let leader = c.wait_leader();
    let dead = (leader + 1) % 3;
    let dead_id = dead as u64 + 1;
    c.kill_meta(dead);
    let out = c.must(&["admin", "meta", "remove", &dead_id.to_string()], None);
    let survivors: Vec<u64> = (1..=3).filter(|id| *id != dead_id).collect();
    assert_eq!(group_printed(&out), member_set(&c, &survivors), "{dead_id} left the group");
    // Clients from now on know only the live nodes.
    c.meta_addrs = survivors.iter().map(|id| c.metas[*id as usize - 1].addr.clone()).collect();
    assert_eq!(members(&c), member_set(&c, &survivors), "the dead node is no member");
    c.must(&["put", "-", "/after-remove"], Some(b"two of two"));
    assert_eq!(c.must_cat("/after-remove"), b"two of two");
    // Enough entries that the new node's catch-up needs a snapshot.
    must_create_files(&c, "/filler", 120);
    let leader_snapshot = snapshot_index(&c.metas[c.wait_leader()].dir).expect("the leader made a snapshot");
    assert!(
        leader_snapshot > snapshot_every(),
        "the leader's log no longer starts at 1 (snapshot at {leader_snapshot})"
    );

    // A new, empty node joins as id 4.
    let addr = format!("127.0.0.1:{}", free_port());
    let dir: PathBuf = c.tmp.path().join("meta-4");
    let chunk_size = c.metas[0].args[c.metas[0].args.iter().position(|a| a == "--chunk-size").unwrap() + 1].clone();
    let replication = c.metas[0].args[c.metas[0].args.iter().position(|a| a == "--replication").unwrap() + 1].clone();
    let args: Vec<String> = [
        "meta",
        "--id",
        "4",
        "--listen",
        &addr,
        "--join",
        "--dir",
        dir.to_str().unwrap(),
        "--chunk-size",
        &chunk_size,
        "--replication",
        &replication,
        "--snapshot-every",
        SNAPSHOT_EVERY,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.metas.push(Node {
        name: "meta-4".into(),
        prefix: Vec::new(),
        args,
        dir: dir.clone(),
        child: None,
        addr: addr.clone(),
    });
    c.start_meta(3);
    // Waiting to be added, it forms no group of its own.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let s = status(&addr);
        let me = &s["nodes"][0];
        if me["role"] != "unreachable" {
            assert_eq!(me["id"], 4, "{s:#}");
            assert!(me["role"] != "leader" && me["role"] != "follower", "a joining node waits: {s:#}");
            break;
        }
        assert!(Instant::now() < deadline, "meta-4 does not answer: {s:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let out = c.must(&["admin", "meta", "add", "4", &addr], None);
    eprintln!("admin meta add took {:?}: {}", t.elapsed(), String::from_utf8_lossy(&out.stdout).trim());
    let group: Vec<u64> = survivors.iter().copied().chain([4]).collect();
    assert_eq!(group_printed(&out), member_set(&c, &group), "node 4 joined");
    c.meta_addrs.push(addr.clone());
    let before_applied = applied(&status(&c.meta_flag()), survivors[0]);
    let agreed = must_agree(&c.meta_flag(), &group, before_applied);
    assert_eq!(row(&agreed, 4)["role"], "follower", "{agreed:#}");
    assert!(snapshot_index(&dir).is_some(), "the new node holds a snapshot");
    assert!(snapshots_received(&c, "meta-4") > 0, "the new node was sent the leader's snapshot");

    // Bad requests fail with a reason and leave the group as it is.
    let voter = survivors[0].to_string();
    let bad: [(&[&str], String); 4] = [
        (&["admin", "meta", "remove", "99"], "meta node 99".into()),
        (&["admin", "meta", "add", "0", "x"], "id".into()),
        (&["admin", "meta", "add", "4", &addr], "meta node 4".into()),
        (&["admin", "meta", "add", &voter, "127.0.0.1:1"], format!("meta node {voter}")),
    ];
    for (args, mention) in bad {
        let out = c.shoal(args, None);
        let err = stderr(&out);
        eprintln!("{args:?} -> {:?}: {}", out.status.code(), err.trim());
        match out.status.code() {
            // Refused by meta: one line, as the binary prints every failure.
            Some(1) => {
                assert!(err.starts_with("shoal: ") && err.trim().lines().count() == 1, "{args:?}: one line: {err}")
            }
            // Refused by the argument parser.
            Some(2) => assert!(err.starts_with("error: "), "{args:?}: {err}"),
            other => panic!("{args:?} must fail with exit code 1 or 2, got {other:?}: {err}"),
        }
        assert!(err.contains(&mention), "{args:?}: the error names {mention:?}: {err}");
        assert_eq!(members(&c), member_set(&c, &group), "{args:?} changed nothing");
    }

    // A node that is not running is never made a voter: the add fails, naming
    // why, and leaves it a learner (no part of the quorum) that remove takes out.
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = c.shoal(&["admin", "meta", "add", "5", &nobody], None);
    assert_eq!(out.status.code(), Some(1), "adding a node that does not run must fail: {}", stderr(&out));
    assert!(stderr(&out).contains("has not caught up"), "{}", stderr(&out));
    c.must(&["admin", "meta", "remove", "5"], None);
    assert_eq!(members(&c), member_set(&c, &group), "the failed add left nothing behind");

    // The leader dies; the two left, node 4 one of them, carry on.
    let leader = c.wait_leader();
    let victim = if c.metas[leader].name == "meta-4" {
        // Unexpected but legal: node 4 was elected. Kill another so it stays in the pair.
        eprintln!("node 4 leads; killing another node instead");
        survivors[0] as usize - 1
    } else {
        leader
    };
    c.kill_meta(victim);
    let pair: Vec<u64> = group.iter().copied().filter(|id| *id != victim as u64 + 1).collect();
    let agreed = must_agree(&c.meta_flag(), &pair, 0);
    eprintln!("after the leader's loss: {agreed:#}");
    c.must_be_ready(3);
    assert_eq!(c.must_cat("/keep"), data, "the earlier file reads back byte for byte");
    c.must(&["put", "-", "/after-leader-loss"], Some(b"node 4 votes"));
    assert_eq!(c.must_cat("/after-leader-loss"), b"node 4 votes");
    must_agree(&c.meta_flag(), &pair, applied(&agreed, pair[0]) + 1);
}
