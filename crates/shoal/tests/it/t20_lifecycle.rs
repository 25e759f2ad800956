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

/// `shoal` with credentials and addresses from a config file only: no
/// `$SHOAL_TLS`, no home folder, no flags but `--config`.
fn configured(file: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(SHOAL);
    cmd.arg("--config")
        .arg(file)
        .args(args)
        .env_remove("SHOAL_TLS")
        .env_remove("SHOAL_META")
        .env("HOME", "/nonexistent");
    cmd
}

#[test]
fn t23_a_config_file_carries_every_flag_and_the_command_line_wins() {
    let c = Cluster::start(Options::default());
    let dir = c.tmp.path();
    let metas: Vec<String> = c.meta_addrs.iter().map(|a| format!("{a:?}")).collect();
    let port = free_port();
    let node_cfg = dir.join("node.toml");
    std::fs::write(
        &node_cfg,
        format!(
            "[global]\nmeta = [{}]\ntls = {:?}\n\n[chunk]\nlisten = \"127.0.0.1:{port}\"\ndir = {:?}\n",
            metas.join(", "),
            pki().node(),
            dir.join("chunk-from-config")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("chunk-from-config.log")).unwrap();
    let _chunk = Reaped::spawn(configured(&node_cfg, &["chunk"]).stdout(log.try_clone().unwrap()).stderr(log));
    // The new server joins: one more alive than the cluster started with.
    c.must_be_ready(c.chunks.len() + 1);
    let nodes = c.must(&["admin", "nodes", "--json"], None);
    assert!(String::from_utf8_lossy(&nodes.stdout).contains(&format!("127.0.0.1:{port}")));

    let client_cfg = dir.join("client.toml");
    std::fs::write(
        &client_cfg,
        format!("[global]\nmeta = [{}]\ntls = {:?}\ntimeout = \"20s\"\n", metas.join(", "), pki().admin()),
    )
    .unwrap();
    let put = configured(&client_cfg, &["put", "-", "/from-config"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            use std::io::Write;
            p.stdin.take().unwrap().write_all(b"configured")?;
            p.wait_with_output()
        })
        .unwrap();
    assert!(put.status.success(), "{}", stderr(&put));
    assert_eq!(c.must_cat("/from-config"), b"configured");

    // The command line wins over the file.
    let out = configured(&client_cfg, &["--meta", "127.0.0.1:1", "--timeout", "1s", "ls", "/"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));

    // A bad file is refused before anything runs, naming the file and why.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[metta]\nid = 1\n").unwrap();
    let out = configured(&bad, &["ls", "/"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown table [metta]") && stderr(&out).contains("bad.toml"), "{}", stderr(&out));
    let out = configured(&dir.join("missing.toml"), &["ls", "/"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));
}
