//! t96: the S3 gateway (`shoal s3`, crate `shoal-s3`) driven by real S3
//! clients against a real cluster.
//!
//! - boto3 (`crates/shoal-s3/tests/s3_suite.py`): every operation with its
//!   errors and conditional requests, a 2,000-key listing against a sorted
//!   model, a 100 MiB multipart upload and its ETag, range reads at 1 MiB
//!   chunk boundaries, presigned URLs, and bad input (wrong secret, expired
//!   URL, short body, Content-MD5 mismatch, garbage on the port); then
//!   nothing is left behind, `shoal put` and S3 PUT interoperate, and an
//!   abandoned multipart upload is cleaned up by the janitor.
//! - The AWS CLI: `aws s3 cp` of 1 GiB up and down (`cmp`) and `aws s3 sync`
//!   of a tree up and back (`diff -r`); rclone: `rclone sync` both ways and
//!   `rclone check`.
//! - Failover: the meta leader is SIGKILLed during an `aws s3 sync` of 500
//!   files; the sync completes (rerun if it reports a failure) and every
//!   object is intact.
//!
//! The clients are Debian's (`python3-boto3`, `awscli`, `rclone`), which
//! `.ci/run` installs; they are called by absolute path (`/usr/bin/...`), so
//! another `python3` or `aws` on PATH does not matter. Missing clients fail
//! the test in CI (`CI` or `SHOAL_REQUIRE_ALL` set) and skip it with a
//! message elsewhere.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const SUITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shoal-s3/tests/s3_suite.py");
const PYTHON: &str = "/usr/bin/python3";
const AWS: &str = "/usr/bin/aws";
const RCLONE: &str = "/usr/bin/rclone";
const ACCESS_KEY: &str = "T96ACCESSKEY";
const SECRET_KEY: &str = "t96-secret-key-0123456789";
/// How long one client command may run at most (the 1 GiB copies included).
const CLIENT_RUN_MAX: Duration = Duration::from_secs(900);

/// Which of the clients `needed` are missing, with what installs them.
fn missing_clients(needed: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    for n in needed {
        let ok = match *n {
            "boto3" => Command::new(PYTHON)
                .args(["-c", "import boto3"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
            other => Path::new(other).exists(),
        };
        if !ok {
            missing.push(match *n {
                "boto3" => "boto3 for /usr/bin/python3 (apt-get install python3-boto3)".to_string(),
                AWS => "/usr/bin/aws (apt-get install awscli)".to_string(),
                RCLONE => "/usr/bin/rclone (apt-get install rclone)".to_string(),
                other => other.to_string(),
            });
        }
    }
    missing
}

/// True when the test may go on; where everything must run
/// (`SHOAL_REQUIRE_ALL`, or `CI`) a missing client fails it.
fn clients_present(test: &str, needed: &[&str]) -> bool {
    let missing = missing_clients(needed);
    if missing.is_empty() {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{test}: missing {} (.ci/run installs them)", missing.join(", "));
    skipping(test, "the S3 clients", &format!("missing {}", missing.join(", ")));
    false
}

/// `shoal s3` serving a cluster.
struct Gateway {
    endpoint: String,
    /// Where its output goes.
    log: std::path::PathBuf,
    _child: Reaped,
}

/// Starts `shoal s3` on a free port with the test's keys (and `extra` flags)
/// and waits until it accepts connections.
fn must_start_gateway(c: &Cluster, extra: &[&str]) -> Gateway {
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = c.log(&format!("s3-{}", addr.replace(':', "_")));
        let out = std::fs::File::create(&log).unwrap();
        let child = shoal_command(&["--meta", &c.meta_flag(), "s3", "--listen", &addr])
            .args(extra)
            .env("SHOAL_S3_ACCESS_KEY", ACCESS_KEY)
            .env("SHOAL_S3_SECRET_KEY", SECRET_KEY)
            .env("SHOAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn shoal s3");
        let mut child = Reaped(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Shoal S3 gateway: http://") && std::net::TcpStream::connect(&addr).is_ok() {
                return Gateway { endpoint: format!("http://{addr}"), log, _child: child };
            }
            if let Some(status) = child.0.try_wait().unwrap() {
                assert!(text.contains("cannot listen"), "shoal s3 exited ({status}):\n{text}");
                eprintln!("shoal s3 could not bind {addr}; trying another port");
                break;
            }
            assert!(Instant::now() < deadline, "shoal s3 did not start on {addr}:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("shoal s3 found every port it tried taken");
}

/// Runs `cmd` to the end (at most [`CLIENT_RUN_MAX`]), with its output.
fn run(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
    let child = child.unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(CLIENT_RUN_MAX) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            signal(pid, libc::SIGKILL).ok();
            panic!("{what} hung for {CLIENT_RUN_MAX:?}");
        }
    }
}

fn must_run(cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The boto3 suite's command for `scenario`.
fn suite(g: &Gateway, scenario: &str, args: &[&str]) -> Command {
    suite_as(g, (ACCESS_KEY, SECRET_KEY), scenario, args)
}

/// [`suite`] with the access and secret key `keys`.
fn suite_as(g: &Gateway, keys: (&str, &str), scenario: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.args([SUITE, &g.endpoint, keys.0, keys.1, scenario]).args(args);
    cmd
}

/// `aws` with the gateway's endpoint and keys, and no user configuration.
fn aws(g: &Gateway, tmp: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(AWS);
    // A long read timeout: CompleteMultipartUpload copies the parts before
    // it answers (README, S3), which in a debug build on a
    // busy machine takes longer than the CLI's default 60 s for 1 GiB.
    cmd.args(["--endpoint-url", &g.endpoint, "--no-cli-pager", "--cli-read-timeout", "600"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", tmp.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", tmp.join("aws-credentials"))
        .env("HOME", tmp);
    cmd
}

/// `rclone` with a remote `shoal:` on the gateway.
fn rclone(g: &Gateway, args: &[&str]) -> Command {
    let mut cmd = Command::new(RCLONE);
    // The AWS SDK inside rclone fails on a custom CA bundle with its transport.
    cmd.args(args)
        .env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG", "/dev/null")
        .env("RCLONE_CONFIG_SHOAL_TYPE", "s3")
        .env("RCLONE_CONFIG_SHOAL_PROVIDER", "Other")
        .env("RCLONE_CONFIG_SHOAL_ACCESS_KEY_ID", ACCESS_KEY)
        .env("RCLONE_CONFIG_SHOAL_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("RCLONE_CONFIG_SHOAL_ENDPOINT", &g.endpoint)
        .env("RCLONE_CONFIG_SHOAL_REGION", "us-east-1");
    cmd
}

/// A tree of `files` files of assorted sizes (some empty, some over a chunk).
fn make_tree(root: &Path, files: usize, seed: u64) {
    for i in 0..files {
        let dir = root.join(format!("d{}/e{}", i % 5, i % 3));
        std::fs::create_dir_all(&dir).unwrap();
        let len = match i % 10 {
            0 => 0,
            1 => 1_500_000,
            _ => 100 + (i * 997) % 20_000,
        };
        std::fs::write(dir.join(format!("f{i:04}.bin")), pattern(len, seed + i as u64)).unwrap();
    }
}

fn must_diff(a: &Path, b: &Path) {
    let mut cmd = Command::new("diff");
    cmd.arg("-r").arg(a).arg(b);
    must_run(cmd);
}

/// The gateway left no temporary object behind, and no upload.
fn must_be_clean(c: &Cluster) {
    for dir in ["/.shoal-s3/tmp", "/.shoal-s3/uploads"] {
        let out = c.must(&["ls", dir], None);
        assert!(out.stdout.is_empty(), "{dir} is not empty:\n{}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn t96_boto3_suite_interop_and_janitor() {
    if !clients_present("t96_boto3_suite_interop_and_janitor", &["boto3"]) {
        return;
    }
    let c = Cluster::start(Options { chunk_size: "1MiB", ..Options::default() });
    let g = must_start_gateway(&c, &[]);

    // Phase 1: every operation, its errors and bad input, through boto3.
    let out = must_run(suite(&g, "suite", &[]));
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("OK\n"));
    must_be_clean(&c);

    // Phase 2: a file put with `shoal put` is an object (ETag computed on
    // first use, and right); an object PUT through S3 reads back with `shoal cat`.
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("from-shoal.bin");
    std::fs::write(&local, pattern(2_500_000, 961)).unwrap();
    c.must(&["mkdir", "-p", "/alpha/interop"], None);
    c.must_put(&local, "/alpha/interop/from-shoal.bin");
    must_run(suite(&g, "get", &["alpha", "interop/from-shoal.bin", local.to_str().unwrap()]));
    let up = tmp.path().join("from-s3.bin");
    std::fs::write(&up, pattern(1_300_000, 962)).unwrap();
    must_run(suite(&g, "put", &["alpha", "interop/from-s3.bin", up.to_str().unwrap()]));
    assert!(c.must_cat("/alpha/interop/from-s3.bin") == std::fs::read(&up).unwrap(), "shoal cat differs");
    // A write through the native client makes the stored ETag stale; S3 sees the new MD5.
    c.must(&["write", "--offset", "0", "/alpha/interop/from-s3.bin"], Some(b"rewritten"));
    let mut now = std::fs::read(&up).unwrap();
    now[..9].copy_from_slice(b"rewritten");
    std::fs::write(&up, &now).unwrap();
    must_run(suite(&g, "get", &["alpha", "interop/from-s3.bin", up.to_str().unwrap()]));

    // Phase 3: an abandoned multipart upload goes after --upload-max-age.
    let short = must_start_gateway(&c, &["--upload-max-age", "1s"]);
    let id = String::from_utf8(must_run(suite(&short, "upload", &["alpha", "abandoned"])).stdout).unwrap();
    let id = id.lines().next().unwrap().to_string();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let listed = String::from_utf8(must_run(suite(&short, "uploads", &["alpha"])).stdout).unwrap();
        if !listed.contains(&id) {
            break;
        }
        assert!(Instant::now() < deadline, "upload {id} was never cleaned up");
        std::thread::sleep(Duration::from_millis(200));
    }
    must_be_clean(&c);
}

#[test]
fn t96_each_key_acts_as_the_identity_it_maps_to() {
    if !clients_present("t96_each_key_acts_as_the_identity_it_maps_to", &["boto3"]) {
        return;
    }
    let c = Cluster::start(Options { chunk_nodes: 2, ..Options::default() });
    let tmp = tempfile::tempdir().unwrap();
    let foreign = tmp.path().join("foreign");
    crate::common::pki::make_pki(&foreign);
    let user = ("T96USERKEY", "t96-user-secret-0123456789");
    let alien = ("T96ALIENKEY", "t96-alien-secret-0123456789");
    let keys = tmp.path().join("keys");
    let text = format!(
        "# the gateway's own identity\nT96GATEKEY t96-gate-secret-0123456789\n{} {} {}\n{} {} {}\n",
        user.0,
        user.1,
        pki().user().display(),
        alien.0,
        alien.1,
        foreign.join("user").display()
    );
    std::fs::write(&keys, text).unwrap();
    // A short cluster timeout, so the refused identity's answer comes soon.
    let g = must_start_gateway(&c, &["--key-file", keys.to_str().unwrap(), "--timeout", "3s"]);
    c.must(&["mkdir", "/ids"], None);
    let body = tmp.path().join("body.bin");
    std::fs::write(&body, pattern(300_000, 966)).unwrap();

    // The user's key reads and writes as shoal://user/user (what a user may).
    must_run(suite_as(&g, user, "put", &["ids", "by-user", body.to_str().unwrap()]));
    must_run(suite_as(&g, user, "get", &["ids", "by-user", body.to_str().unwrap()]));
    must_run(suite(&g, "get", &["ids", "by-user", body.to_str().unwrap()]));
    // A key whose certificate the cluster does not trust is refused by the
    // cluster, not served as the gateway, and stores nothing.
    must_run(suite_as(&g, alien, "put-refused", &["ids", "by-alien"]));
    must_run(suite(&g, "absent", &["ids", "by-alien"]));
    // Keys without credentials of their own still act as the gateway.
    must_run(suite(&g, "put", &["ids", "by-gateway", body.to_str().unwrap()]));
    let log = std::fs::read_to_string(&g.log).unwrap();
    assert!(
        log.contains("shoal://user/user") && log.contains(user.0),
        "the gateway did not say which identity {} acts as:\n{log}",
        user.0
    );
    // A key file naming a folder that is no credentials folder stops the
    // gateway before it serves.
    // So does a node's folder (its certificate would pass chunk servers
    // without capabilities), and an access key given twice.
    let nowhere = tmp.path().join("nowhere");
    let node = pki().node();
    for (what, line) in [
        ("no credentials folder", format!("K1 s1-0123456789 {}\n", nowhere.display())),
        ("a node's folder", format!("K1 s1-0123456789 {}\n", node.display())),
        ("a key given twice", format!("{ACCESS_KEY} s1-0123456789\n")),
    ] {
        let bad = tmp.path().join("bad-keys");
        std::fs::write(&bad, line).unwrap();
        let mut cmd = shoal_command(&["--meta", &c.meta_flag(), "s3", "--listen", "127.0.0.1:0", "--key-file"]);
        cmd.arg(&bad).env("SHOAL_S3_ACCESS_KEY", ACCESS_KEY).env("SHOAL_S3_SECRET_KEY", SECRET_KEY);
        let out = run(cmd);
        let (said, printed) = (stderr(&out), String::from_utf8_lossy(&out.stdout).to_string());
        assert!(!out.status.success(), "{what}: the gateway started:\n{printed}{said}");
        assert!(said.contains("K1") || said.contains(ACCESS_KEY), "{what}: the error names no key: {said}");
        assert!(!printed.contains("S3 gateway"), "{what}: announced before refusing: {printed}");
    }
}

#[test]
fn t96_aws_cli_and_rclone() {
    if !clients_present("t96_aws_cli_and_rclone", &[AWS, RCLONE]) {
        return;
    }
    let c = Cluster::start(Options { chunk_size: "64MiB", ..Options::default() });
    let g = must_start_gateway(&c, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    must_run(aws(&g, t, &["s3", "mb", "s3://cli"]));

    // Phase 1: 1 GiB up and down with `aws s3 cp` (multipart both ways).
    let big = t.join("big.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        for i in 0..128u64 {
            f.write_all(&pattern(8 << 20, 9600 + i)).unwrap();
        }
    }
    let started = Instant::now();
    must_run(aws(&g, t, &["s3", "cp", big.to_str().unwrap(), "s3://cli/big/1g.bin"]));
    let up = started.elapsed();
    let back = t.join("big.back");
    let started = Instant::now();
    must_run(aws(&g, t, &["s3", "cp", "s3://cli/big/1g.bin", back.to_str().unwrap()]));
    eprintln!("t96: aws s3 cp of 1 GiB: up {up:?}, down {:?}", started.elapsed());
    let mut cmp = Command::new("cmp");
    cmp.arg(&big).arg(&back);
    must_run(cmp);
    std::fs::remove_file(&big).unwrap();
    std::fs::remove_file(&back).unwrap();

    // Phase 2: `aws s3 sync` of a tree up and back.
    let tree = t.join("tree");
    make_tree(&tree, 60, 96);
    must_run(aws(&g, t, &["s3", "sync", tree.to_str().unwrap(), "s3://cli/tree"]));
    let again = t.join("tree.back");
    must_run(aws(&g, t, &["s3", "sync", "s3://cli/tree", again.to_str().unwrap()]));
    must_diff(&tree, &again);
    // A second sync has nothing to do.
    let out = must_run(aws(&g, t, &["s3", "sync", tree.to_str().unwrap(), "s3://cli/tree"]));
    assert!(out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));

    // Phase 3: rclone both ways, then `rclone check` (sizes and MD5s).
    let rtree = t.join("rtree");
    make_tree(&rtree, 40, 196);
    must_run(rclone(&g, &["sync", rtree.to_str().unwrap(), "shoal:cli/rclone"]));
    let rback = t.join("rtree.back");
    must_run(rclone(&g, &["sync", "shoal:cli/rclone", rback.to_str().unwrap()]));
    must_diff(&rtree, &rback);
    must_run(rclone(&g, &["check", rtree.to_str().unwrap(), "shoal:cli/rclone"]));
    must_be_clean(&c);
}

#[test]
fn t96_meta_leader_killed_during_sync() {
    if !clients_present("t96_meta_leader_killed_during_sync", &[AWS]) {
        return;
    }
    let mut c = Cluster::start(Options { meta_nodes: 3, chunk_size: "1MiB", ..Options::default() });
    let g = must_start_gateway(&c, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let tree = t.join("tree");
    for i in 0..500usize {
        let dir = tree.join(format!("p{}", i % 10));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("f{i:03}")), pattern(200 + i * 13, 5000 + i as u64)).unwrap();
    }
    must_run(aws(&g, t, &["s3", "mb", "s3://fail"]));

    // Phase 1: the sync runs; the leader dies once objects are arriving.
    let leader = c.wait_leader();
    let child = aws(&g, t, &["s3", "sync", tree.to_str().unwrap(), "s3://fail/tree"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sync = Reaped(child);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let out = c.shoal(&["ls", "-R", "/fail/tree"], None);
        if String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains('f')).count() >= 50 {
            break;
        }
        assert!(Instant::now() < deadline, "the sync wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill_meta(leader);
    let first = loop {
        if let Some(status) = sync.0.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("t96: the sync during the failover exited {first}");

    // Phase 2: a rerun (allowed) finishes the job; every object is intact.
    let mut rounds = 0;
    while rounds < 3 {
        rounds += 1;
        if run(aws(&g, t, &["s3", "sync", tree.to_str().unwrap(), "s3://fail/tree"])).status.success() {
            break;
        }
    }
    let back = t.join("back");
    must_run(aws(&g, t, &["s3", "sync", "s3://fail/tree", back.to_str().unwrap()]));
    must_diff(&tree, &back);
    must_be_clean(&c);
}
