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
