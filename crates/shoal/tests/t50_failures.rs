//! t50: failures: reads survive a SIGKILLed chunk server, writes route around it.

mod common;

use common::*;

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
