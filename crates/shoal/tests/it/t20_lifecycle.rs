//! t20: lifecycle: a 3-node meta cluster restarted in full keeps everything,
//! the interactive shell works when driven through stdin, and nodes bound to
//! every interface are reached at the addresses they advertise.

use crate::common::*;

#[test]
fn t20_three_meta_nodes_keep_all_data_across_a_full_restart() {
    let mut c = Cluster::start(Options { meta_nodes: 3, ..Options::default() });
    let local = tempfile::tempdir().unwrap();
    let big = pattern(2_200_000, 11);
    let src = local.path().join("big");
    std::fs::write(&src, &big).unwrap();

    // Write through the leader (the client follows not-leader answers).
    c.must(&["mkdir", "-p", "/keep/deep"], None);
    c.must_put(&src, "/keep/deep/big");
    c.must(&["put", "-", "/keep/small"], Some(b"small file"));
    c.must(&["append", "/keep/small"], Some(b" + more"));
    let before = c.must_stat_json("/keep/deep/big");
    let status: serde_json::Value =
        serde_json::from_slice(&c.must(&["admin", "status", "--json"], None).stdout).unwrap();
    let roles: Vec<&str> = status["nodes"].as_array().unwrap().iter().map(|n| n["role"].as_str().unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "one leader: {roles:?}");
    assert_eq!(roles.iter().filter(|r| **r == "follower").count(), 2, "two followers: {roles:?}");

    // Every process goes down hard, then comes back with the same directories.
    c.kill_all();
    for i in 0..3 {
        c.start_meta(i);
    }
    for j in 0..3 {
        c.start_chunk(j);
    }
    c.must_be_ready(3);

    assert_eq!(c.must_cat("/keep/deep/big"), big);
    assert_eq!(c.must_cat("/keep/small"), b"small file + more");
    assert_eq!(c.must_stat_json("/keep/deep/big")["chunks"], before["chunks"], "same chunk map");
    // And the cluster still takes writes.
    c.must(&["append", "/keep/small"], Some(b"!"));
    assert_eq!(c.must_cat("/keep/small"), b"small file + more!");

    // A client that knows only a follower is sent to the leader and succeeds.
    let status: serde_json::Value =
        serde_json::from_slice(&c.must(&["admin", "status", "--json"], None).stdout).unwrap();
    let follower = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "follower")
        .map(|n| n["addr"].as_str().unwrap().to_string())
        .expect("a follower");
    let out = run_shoal(&follower, &["mkdir", "/via-follower"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(c.must_stat_json("/via-follower")["type"] == "dir");
}

#[test]
fn t21_shell_driven_through_stdin() {
    let c = Cluster::start(Options::default());
    let script = b"create /notes.txt
open /notes.txt
write hello shoal world
seek 6
read 5
seek -5 end
read
seek 0
write HELLO
seek 0 start
read
list /
close
read
delete /notes.txt
list /
bogus
exit
";
    let out = c.must(&["shell"], Some(script));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        "created /notes.txt",
        "opened /notes.txt (0 bytes), locked",
        "wrote 17 bytes; position 17",
        "position 6",
        "shoal",
        "position 12",
        "world",
        "position 0",
        "wrote 5 bytes; position 5",
        "position 0",
        "HELLO shoal world",
    ];
    assert_eq!(&lines[..expected.len()], &expected, "full output:\n{text}");
    let rest = &lines[expected.len()..];
    assert!(rest[0].starts_with("file") && rest[0].ends_with("notes.txt"), "{text}");
    assert_eq!(rest[1], "closed /notes.txt");
    assert!(rest[2].starts_with("error: no file is open"), "{text}");
    assert_eq!(rest[3], "deleted /notes.txt");
    assert!(rest[4].starts_with("error: unknown command"), "an empty list prints nothing: {text}");
}

#[test]
fn t22_nodes_bound_to_every_interface_are_reached_at_their_advertised_addresses() {
    let c = Cluster::start(Options { meta_nodes: 1, chunk_nodes: 2, wildcard_listen: true, ..Options::default() });
    let data = pattern(1_500_000, 22);
    c.must(&["put", "-", "/everywhere"], Some(&data));
    assert_eq!(c.must_cat("/everywhere"), data);
    let nodes: serde_json::Value = serde_json::from_slice(&c.must(&["admin", "nodes", "--json"], None).stdout).unwrap();
    let mut addrs: Vec<String> = nodes.as_array().unwrap().iter().map(|n| n["addr"].as_str().unwrap().into()).collect();
    addrs.sort();
    let mut expected: Vec<String> = c.chunks.iter().map(|n| n.addr.clone()).collect();
    expected.sort();
    assert_eq!(addrs, expected, "chunk servers registered under their advertised addresses");
    assert!(c.chunks[0].args.iter().any(|a| a.starts_with("0.0.0.0:")), "the harness bound a wildcard");
}
