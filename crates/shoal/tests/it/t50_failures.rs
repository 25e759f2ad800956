//! t50: failures: reads survive a SIGKILLed chunk server, writes route around it.

use crate::common::*;

#[test]
fn t50_reads_survive_a_killed_chunk_server() {
    let mut c = Cluster::start(Options::default());
    let local = tempfile::tempdir().unwrap();
    let data = pattern(3_000_000, 21);
    let src = local.path().join("f");
    std::fs::write(&src, &data).unwrap();
    c.must_put(&src, "/f");

    // Kill the first replica of chunk 0, the one a reader tries first.
    let st = c.must_stat_json("/f");
    let victim = st["chunks"][0]["replicas"][0].as_str().unwrap().to_string();
    let j = c.chunks.iter().position(|n| n.addr == victim).unwrap();
    c.kill_chunk(j);

    assert_eq!(c.must_cat("/f"), data, "every chunk is read from its surviving replica");
    let range = c.must(&["cat", "--offset", "1000000", "--length", "100000", "/f"], None).stdout;
    assert_eq!(range, data[1_000_000..1_100_000]);

    // A write to a chunk that had a replica on the dead server still succeeds.
    c.must(&["write", "--offset", "10", "/f"], Some(b"patched"));
    let mut want = data.clone();
    want[10..17].copy_from_slice(b"patched");
    assert_eq!(c.must_cat("/f"), want);
    let after = c.must_stat_json("/f");
    assert!(
        !after["chunks"][0]["replicas"].as_array().unwrap().iter().any(|r| r == victim.as_str()),
        "the dead replica left the chain: {after}"
    );

    // The server comes back and the data is still right.
    c.start_chunk(j);
    c.must_be_ready(3);
    assert_eq!(c.must_cat("/f"), want);
}

/// Regression: a writer that lost a version race to another writer used to
/// blame, and drop, a healthy replica.
#[test]
fn t51_concurrent_writers_keep_every_write_and_every_replica() {
    let c = Cluster::start(Options::default());
    c.must(&["create", "/shared"], None);
    let writers = 4;
    let rounds = 5;
    std::thread::scope(|s| {
        for w in 0..writers {
            let c = &c;
            s.spawn(move || {
                for r in 0..rounds {
                    let at = (r * writers + w) * 100;
                    let text = format!("w{w}r{r}");
                    c.must(&["write", "--offset", &at.to_string(), "/shared"], Some(text.as_bytes()));
                }
            });
        }
    });
    let content = c.must_cat("/shared");
    for w in 0..writers {
        for r in 0..rounds {
            let at = (r * writers + w) * 100;
            let text = format!("w{w}r{r}");
            assert_eq!(&content[at..at + text.len()], text.as_bytes(), "write of {text} at {at} is there");
        }
    }
    let st = c.must_stat_json("/shared");
    assert_eq!(st["chunks"][0]["replicas"].as_array().unwrap().len(), 2, "no replica was dropped: {st}");
}

/// Runs a system tool; false when it fails or is missing.
fn sh(args: &[&str]) -> bool {
    std::process::Command::new(args[0]).args(&args[1..]).output().is_ok_and(|o| o.status.success())
}

/// Unmounts a tmpfs lazily when dropped, also on a panic.
struct TmpfsAt(std::path::PathBuf);

impl Drop for TmpfsAt {
    fn drop(&mut self) {
        sh(&["umount", "-l", self.0.to_str().unwrap()]);
    }
}

#[test]
fn t52_a_meta_node_whose_disk_fills_stops_cleanly_and_resumes_once_freed() {
    use std::time::{Duration, Instant};
    let mut c = Cluster::start(Options { meta_nodes: 3, chunk_size: "64KiB", ..Options::default() });
    c.must(&["put", "-", "/before"], Some(b"written before the disk filled"));
    // Meta node 3 (a follower or the leader) moves onto a small tmpfs of its own.
    let victim = 2;
    c.kill_meta(victim);
    let dir = c.metas[victim].dir.clone();
    let saved = c.tmp.path().join("meta-3-saved");
    assert!(sh(&["cp", "-a", dir.to_str().unwrap(), saved.to_str().unwrap()]));
    if !sh(&["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", dir.to_str().unwrap()]) {
        return skipping("t52", "the full-disk test", "cannot mount a tmpfs (needs root)");
    }
    let _tmpfs = TmpfsAt(dir.clone());
    assert!(sh(&["cp", "-a", &format!("{}/.", saved.display()), dir.to_str().unwrap()]));
    c.start_meta(victim);
    c.must(&["put", "-", "/caught-up"], Some(b"the node is back on its tmpfs"));

    // Fill the tmpfs, then keep writing to the cluster: the node's next log
    // append fails, and it must exit (not hang on to its ports half-alive)
    // while the other two go on serving.
    let filler = dir.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=1M"])
        .output()
        .unwrap();
    let mut written = vec![];
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut k = 0;
    while c.metas[victim].child.as_mut().unwrap().try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "meta-3 kept running with a full disk");
        let path = format!("/full-{k}");
        let body = pattern(2000, k);
        c.must(&["put", "-", &path], Some(&body));
        written.push((path, body));
        k += 1;
    }
    let log = std::fs::read_to_string(c.log("meta-3")).unwrap();
    assert!(log.contains("the Raft core stopped"), "meta-3 should say why it stopped:\n{log}");
    c.metas[victim].child = None;
    for (path, body) in &written {
        assert_eq!(&c.must_cat(path), body, "{path} was acknowledged while meta-3 was failing");
    }

    // Free the space and start it again: it resumes from what it had made
    // durable and catches up. Then it must be able to form the quorum
    // without the node that led meanwhile: nothing it kept was corrupted.
    std::fs::remove_file(&filler).unwrap();
    c.start_meta(victim);
    c.must(&["put", "-", "/after"], Some(b"after the space came back"));
    let leader = c.wait_leader();
    let other = (0..3).find(|&i| i != victim && i != leader).unwrap();
    // Each node's last applied entry; empty when `admin status` fails (a
    // node still starting may not answer yet: the wait below asks again).
    let applied = |c: &Cluster| -> Vec<(String, u64)> {
        let out = c.shoal(&["admin", "status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let nodes = v["nodes"].as_array().cloned().unwrap_or_default();
        nodes
            .iter()
            .map(|n| (n["addr"].as_str().unwrap_or("").to_string(), n["last_applied"].as_u64().unwrap_or(0)))
            .collect()
    };
    let mut target = None;
    wait_until("admin status answers", || {
        target = applied(&c).iter().map(|(_, a)| *a).max();
        target.is_some()
    });
    let target = target.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !applied(&c).iter().any(|(addr, a)| *addr == c.metas[victim].addr && *a >= target) {
        assert!(Instant::now() < deadline, "meta-3 did not catch up to entry {target}: {:?}", applied(&c));
        std::thread::sleep(Duration::from_millis(200));
    }
    c.kill_meta(leader);
    c.kill_meta(other);
    c.start_meta(other);
    c.wait_leader();
    assert_eq!(c.must_cat("/before"), b"written before the disk filled");
    assert_eq!(c.must_cat("/after"), b"after the space came back");
    for (path, body) in &written {
        assert_eq!(&c.must_cat(path), body, "{path} after meta-3 came back");
    }
}
