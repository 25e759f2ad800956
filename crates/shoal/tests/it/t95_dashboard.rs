//! t95: the web dashboard and its JSON API (crate `shoal-http`), served by
//! every meta node's `--http` port and by the `shoal http` front end.
//!
//! - The API's answers (through `shoal http`) equal what `shoal admin status|nodes|fsck|locks
//!   --json`, `shoal ls --json` and `shoal stat --json` print (modulo what
//!   moves between two calls), and bad input is a JSON 4xx.
//! - The page in headless Chromium, loaded from a meta follower's HTTP port: `crates/shoal-http/tests/browser/
//!   dashboard.mjs` (playwright-core over Debian's `/usr/bin/chromium`) gets
//!   the URL, the PIDs it may SIGKILL and a file to look for, and checks the
//!   meta and chunk panels, the file browser, a chunk server turning dead
//!   (the time it took is logged), the health panel through repair, and the page
//!   riding out a SIGKILL of the meta leader, all without a reload.
//!
//! `.ci/run` installs chromium and the npm package. Where chromium, node or
//! `node_modules` is missing (a developer machine), the browser test says
//! loudly what is missing and what installs it, and skips; the API test
//! needs nothing but `shoal`. `SHOAL_DASHBOARD_SCREENSHOT=PATH` keeps the
//! browser test's screenshot there (that is how `docs/dashboard.png` is made).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::*;

/// Meta declares a silent chunk server dead after this long.
const DEAD_AFTER: &str = "2s";
const DEAD_AFTER_MS: u64 = 2000;
/// How long the browser driver may run in all.
const BROWSER_RUN_MAX: Duration = Duration::from_secs(240);

/// Kills every browser process run with this profile directory when it drops.
struct BrowserGuard(PathBuf);

impl Drop for BrowserGuard {
    fn drop(&mut self) {
        kill_processes_mentioning(&self.0.to_string_lossy());
    }
}

/// `shoal http` serving the dashboard of a cluster.
struct Front {
    addr: String,
    _child: Reaped,
}

/// Starts `shoal http` on a free port and waits until it answers.
fn must_start_front(c: &Cluster) -> Front {
    for _ in 0..5 {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = c.log(&format!("http-{}", addr.replace(':', "_")));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Reaped::spawn(
            shoal_command(&["--meta", &c.meta_flag(), "http", "--listen", &addr])
                .env("SHOAL_LOG", "info")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out),
        );
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, _)) = try_get(&addr, "/") {
                return Front { addr, _child: child };
            }
            if let Some(status) = child.0.try_wait().unwrap() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(text.contains("cannot listen"), "shoal http exited ({status}):\n{text}");
                eprintln!("shoal http could not bind {addr}; trying another port");
                break;
            }
            assert!(Instant::now() < deadline, "shoal http did not answer on {addr}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("shoal http found every port it tried taken");
}

/// One HTTP/1.1 GET (the front end sends a Content-Length with every body).
fn try_get(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(PATIENCE))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or(std::io::ErrorKind::InvalidData)?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or(std::io::ErrorKind::InvalidData)?;
    Ok((status, raw[end + 4..].to_vec()))
}

fn must_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    try_get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// GET `path`, which must answer 200 with JSON.
fn must_get_json(addr: &str, path: &str) -> Value {
    let (status, body) = must_get(addr, path);
    assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e})"))
}

fn cli_json(c: &Cluster, args: &[&str]) -> Value {
    let out = c.shoal(args, None);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("shoal {args:?}: not JSON ({e}): {}", stderr(&out)))
}

/// `v` without the fields named, at any depth.
fn without(mut v: Value, fields: &[&str]) -> Value {
    match &mut v {
        Value::Object(m) => {
            for f in fields {
                m.remove(*f);
            }
            for x in m.values_mut() {
                *x = without(x.take(), fields);
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                *x = without(x.take(), fields);
            }
        }
        _ => {}
    }
    v
}

/// The API and the CLI agree on `what` (ignoring `moving` fields); asked
/// again a few times, since the cluster may change between the two calls.
fn must_agree(c: &Cluster, front: &Front, api: &str, cli: &[&str], moving: &[&str]) -> Value {
    let mut last = (Value::Null, Value::Null);
    for _ in 0..10 {
        let a = without(must_get_json(&front.addr, api), moving);
        let b = without(cli_json(c, cli), moving);
        if a == b {
            return a;
        }
        last = (a, b);
        // Past the front end's report cache.
        std::thread::sleep(Duration::from_millis(1100));
    }
    panic!("GET {api} and shoal {cli:?} disagree:\n{:#}\n{:#}", last.0, last.1);
}

#[test]
fn t95_api_matches_admin_json() {
    let c = Cluster::start(Options { meta_nodes: 3, ..Default::default() });
    let front = must_start_front(&c);

    // A file of three chunks, and a lock someone holds on it.
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("report.bin");
    let data = pattern(2_500_000, 95);
    std::fs::write(&local, &data).unwrap();
    c.must(&["mkdir", "/docs"], None);
    c.must_put(&local, "/docs/report.bin");
    // Its own process group: the `sleep` goes with it.
    let _holder = Reaped::spawn(
        shoal_command(&["--meta", &c.meta_flag(), "lock", "/docs/report.bin", "--", "sleep", "120"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let deadline = Instant::now() + PATIENCE;
    while cli_json(&c, &["admin", "locks", "--json", "/docs/report.bin"])["holders"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the lock was never granted");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The same reports, from the API and from the CLI.
    let status = must_agree(&c, &front, "/api/v1/status", &["admin", "status", "--json"], &[]);
    assert_eq!(status["nodes"].as_array().unwrap().len(), 3);
    assert!(status["leader_id"].is_u64());
    // Every replica of the put is counted as written once its server's next
    // heartbeat carried the counter.
    let written =
        |v: &Value| v.as_array().unwrap().iter().map(|s| s["written_bytes_total"].as_u64().unwrap()).sum::<u64>();
    let deadline = Instant::now() + PATIENCE;
    while written(&cli_json(&c, &["admin", "nodes", "--json"])) < 2 * data.len() as u64 {
        assert!(Instant::now() < deadline, "the chunk servers never reported the put's bytes as written");
        std::thread::sleep(Duration::from_millis(100));
    }
    let moving = ["last_heartbeat_ms_ago", "read_bytes_total", "written_bytes_total"];
    let nodes = must_agree(&c, &front, "/api/v1/nodes", &["admin", "nodes", "--json"], &moving);
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    let health = must_agree(&c, &front, "/api/v1/health", &["admin", "fsck", "--json"], &[]);
    assert_eq!(health["healthy"], true);
    assert_eq!(health["files"], 1);
    must_agree(&c, &front, "/api/v1/ls?path=/docs", &["ls", "--json", "/docs"], &[]);
    must_agree(&c, &front, "/api/v1/ls", &["ls", "--json", "/"], &[]);
    let stat =
        must_agree(&c, &front, "/api/v1/stat?path=/docs/report.bin", &["stat", "--json", "/docs/report.bin"], &[]);
    assert_eq!(stat["chunks"].as_array().unwrap().len(), 3);
    let lock = must_agree(
        &c,
        &front,
        "/api/v1/locks?path=/docs/report.bin",
        &["admin", "locks", "--json", "/docs/report.bin"],
        &[],
    );
    assert_eq!(lock["holders"].as_array().unwrap().len(), 1);
    // locks?dir= lists the busy paths of a directory.
    let busy = must_get_json(&front.addr, "/api/v1/locks?dir=/docs");
    assert_eq!(busy, json!([lock]));
    // Only names directly in the directory: the lock two levels down is not in /'s list.
    assert_eq!(must_get_json(&front.addr, "/api/v1/locks?dir=/"), json!([]));
    // With no parameter: every locked path in the cluster.
    let all = must_get_json(&front.addr, "/api/v1/locks");
    assert_eq!(all, json!({ "paths": [lock], "truncated": false }));

    // The download link streams the bytes.
    let (code, body) = must_get(&front.addr, "/api/v1/download?path=/docs/report.bin");
    assert_eq!(code, 200);
    assert!(body == data, "the download differs from what was put ({} bytes, expected {})", body.len(), data.len());

    // Bad input: a JSON error with a 4xx, never a 5xx.
    for (path, want) in [
        ("/api/v1/stat?path=/docs/nope", 404),
        ("/api/v1/stat?path=docs", 400),
        ("/api/v1/stat?path=/a/../b", 400),
        ("/api/v1/stat", 400),
        ("/api/v1/ls?path=/nope", 404),
        ("/api/v1/ls?path=/docs/report.bin/x", 400),
        ("/api/v1/locks?path=nope", 400),
        ("/api/v1/download?path=/docs", 400),
        ("/api/v1/download?path=/docs/nope", 404),
        ("/api/v1/no-such-thing", 404),
    ] {
        let (code, body) = must_get(&front.addr, path);
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| panic!("{path}: not JSON"));
        assert_eq!(code, want, "GET {path}: {v}");
        assert!(v["error"].is_string() && v["kind"].is_string(), "GET {path}: {v}");
    }
}

/// What the browser test needs, or what is missing.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = PathBuf::from(std::env::var("SHOAL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shoal-http/tests/browser");
    let mut missing = Vec::new();
    if !chromium.exists() {
        missing.push(format!("{} (apt-get install chromium)", chromium.display()));
    }
    if !Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success()) {
        missing.push("node (v20 or later)".to_string());
    }
    if !driver.join("node_modules/playwright-core/package.json").exists() {
        missing.push(format!("playwright-core (npm ci in {})", driver.display()));
    }
    if missing.is_empty() { Ok((chromium, driver)) } else { Err(missing.join(", ")) }
}

#[test]
fn t95_dashboard_in_headless_chromium() {
    let (chromium, driver) = match browser_tools() {
        Ok(t) => t,
        Err(missing) => {
            skipping("t95_dashboard_in_headless_chromium", "the dashboard in a browser", &format!("missing {missing}"));
            return;
        }
    };
    let c = Cluster::start(Options {
        meta_nodes: 3,
        chunk_nodes: 3,
        replication: 2,
        meta_args: vec!["--dead-after", DEAD_AFTER],
        http: true,
        ..Default::default()
    });
    // The page comes from a follower's own HTTP port (every meta node serves
    // the dashboard, with the leader's data), so it must keep working when
    // the driver kills the leader.
    let status = cli_json(&c, &["admin", "status", "--json"]);
    let follower = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "follower")
        .and_then(|n| c.metas.iter().position(|m| m.addr == n["addr"].as_str().unwrap_or_default()))
        .expect("a follower among the meta nodes");
    let page = c.meta_http[follower].clone().expect("meta nodes have HTTP ports");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !try_get(&page, "/api/v1/status").is_ok_and(|(code, _)| code == 200) {
        assert!(Instant::now() < deadline, "the dashboard on {page} did not answer");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A file of three chunks for the file browser to find.
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("report.bin");
    std::fs::write(&local, pattern(2_500_000, 7)).unwrap();
    c.must(&["mkdir", "/docs"], None);
    c.must_put(&local, "/docs/report.bin");
    let stat = c.must_stat_json("/docs/report.bin");

    // The plan: what to look for, and which processes the driver may SIGKILL.
    let pids = |nodes: &[Node]| -> Vec<Value> {
        nodes.iter().map(|n| json!({"addr": n.addr, "pid": n.child.as_ref().unwrap().id()})).collect()
    };
    let screenshot = std::env::var("SHOAL_DASHBOARD_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| c.tmp.path().join("dashboard.png"));
    let shoal_admin = |verb: &str| json!([SHOAL, "--meta", c.meta_flag(), "admin", "repair", verb]);
    let user_data_dir = c.tmp.path().join("chromium-profile");
    let plan = json!({
        "url": format!("http://{page}/"),
        "user_data_dir": user_data_dir,
        "chromium": chromium,
        // Each meta node with the dashboard URL it serves: the driver opens
        // the page from another node when the page's own became leader.
        "metas": pids(&c.metas).into_iter().zip(&c.meta_http).map(|(mut m, http)| {
            m["url"] = json!(format!("http://{}/", http.as_deref().expect("meta nodes have HTTP ports")));
            m
        }).collect::<Vec<_>>(),
        "chunks": pids(&c.chunks),
        "file": {
            "path": "/docs/report.bin", "dir": "/docs", "local": local, "size": stat["size"],
            "replication": stat["replication"],
            "chunks": stat["chunks"].as_array().unwrap().iter()
                .map(|ch| json!({"index": ch["index"], "replicas": ch["replicas"]})).collect::<Vec<_>>(),
        },
        "dead_after_ms": DEAD_AFTER_MS,
        "patience_ms": PATIENCE.as_millis() as u64,
        "screenshot": screenshot,
        "commands": {"pause_repair": shoal_admin("pause"), "resume_repair": shoal_admin("resume")},
    });
    let plan_file = c.tmp.path().join("dashboard-plan.json");
    std::fs::write(&plan_file, serde_json::to_vec_pretty(&plan).unwrap()).unwrap();

    // The driver runs every case in one page; its log says how far it got.
    let log = c.tmp.path().join("dashboard.log");
    let out = std::fs::File::create(&log).unwrap();
    let started = Instant::now();
    // Chromium leaves node's process group; it is found by its profile
    // directory, which is the test's own.
    let _browser = BrowserGuard(user_data_dir.clone());
    let mut node = Reaped::spawn(
        Command::new("node")
            .arg(driver.join("dashboard.mjs"))
            .arg(&plan_file)
            // The script runs `shoal admin ...` itself, as the admin.
            .env("SHOAL_TLS", pki::credentials_for(&["admin"]))
            .current_dir(&driver)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out),
    );
    let status = loop {
        if let Some(s) = node.0.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > BROWSER_RUN_MAX {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("dashboard.mjs ({:.1} s):\n{text}", started.elapsed().as_secs_f64());
    let status = status.unwrap_or_else(|| panic!("dashboard.mjs ran longer than {BROWSER_RUN_MAX:?}"));
    assert!(status.success() && text.contains("PASS"), "dashboard.mjs failed ({status}); see its log above");
}
