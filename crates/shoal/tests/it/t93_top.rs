//! t93: seeing the cluster: `shoal admin top` as one frame (what scripts
//! read) and live under a pseudo-terminal (redraws in place, quits on `q` or
//! Ctrl-C and puts the terminal back), and `--log-format json` (every log
//! line a JSON object, by flag or by `SHOAL_LOG_FORMAT`).
//!
//! The pseudo-terminal is opened with `openpty(3)`, so no tool is needed.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// What a frame of `top` starts with (cursor home).
const FRAME_START: &str = "\x1b[H";
const ALTERNATE_SCREEN_ON: &str = "\x1b[?1049h";
const ALTERNATE_SCREEN_OFF: &str = "\x1b[?1049l";

#[test]
fn t93_top_shows_every_node_once_and_live_under_a_terminal() {
    let c = Cluster::start(Options { meta_nodes: 3, ..Options::default() });
    c.wait_leader();

    // One frame on a pipe: plain text, the whole cluster, exit 0.
    let out = c.must(&["admin", "top", "--once"], None);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains('\x1b'), "no escapes on a pipe:\n{text}");
    assert!(text.contains("Health    healthy"), "{text}");
    let rows = |addr: &String| text.lines().filter(|l| l.contains(addr.as_str())).collect::<Vec<_>>();
    let meta_rows: Vec<&str> = c.meta_addrs.iter().flat_map(rows).collect();
    assert_eq!(meta_rows.len(), 3, "every meta node has its row:\n{text}");
    let roles: Vec<&str> = meta_rows.iter().map(|r| r.split_whitespace().nth(2).unwrap()).collect();
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1, "one leader: {roles:?}\n{text}");
    assert!(text.contains("META NODES (3, leader "), "{text}");
    assert!(text.contains("CHUNK SERVERS (3 alive, 0 dead, 0 draining)"), "{text}");
    for chunk in &c.chunks {
        let row = rows(&chunk.addr);
        assert!(row.len() == 1 && row[0].split_whitespace().nth(1) == Some("alive"), "{}: {row:?}", chunk.addr);
    }

    // Live under a terminal: frames replace each other until a quit key,
    // then the normal screen and the terminal's settings are back.
    for (quit_key, name) in [(b"q", "q"), (b"\x03", "Ctrl-C")] {
        let session = must_run_top_live(&c.meta_flag(), quit_key);
        let frames: Vec<&str> = session.output.split(FRAME_START).skip(1).collect();
        assert!(frames.len() >= 2, "{name}: at least two frames, got {}", frames.len());
        for f in &frames[..2] {
            assert!(
                f.contains("META NODES (3, leader") && f.contains("leader"),
                "{name}: a frame shows the leader:\n{f}"
            );
        }
        let on = session.output.find(ALTERNATE_SCREEN_ON).expect("entered the alternate screen");
        let off = session.output.rfind(ALTERNATE_SCREEN_OFF).expect("left the alternate screen");
        assert!(on < session.output.find(FRAME_START).unwrap(), "{name}: frames are drawn on the alternate screen");
        assert!(off > session.output.rfind(FRAME_START).unwrap(), "{name}: the alternate screen is left at the end");
        assert!(session.output[off..].trim_end_matches(['\r', '\n']).ends_with(ALTERNATE_SCREEN_OFF));
        assert!(session.restored, "{name}: the terminal's settings are back as they were");
    }
}

#[test]
fn t93_top_shows_an_unreachable_cluster_and_exits_0() {
    // Nothing listens there: the frame says so rather than the command failing.
    let nobody = format!("127.0.0.1:{}", free_port());
    let out = run_shoal(&nobody, &["admin", "top", "--once"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Health    unknown: "), "{text}");
    let row = text.lines().find(|l| l.starts_with("-    ") && l.contains(&nobody));
    assert!(row.is_some_and(|r| r.split_whitespace().nth(2) == Some("unreachable")), "{text}");
}

#[test]
fn t93_log_format_json_makes_every_server_line_a_json_object() {
    // By flag: a meta node and a chunk server.
    let c = Cluster::start(Options {
        meta_nodes: 1,
        chunk_nodes: 1,
        replication: 1,
        meta_args: vec!["--log-format", "json"],
        chunk_args: vec!["--log-format", "json"],
        ..Options::default()
    });
    must_be_json_lines(&c.log("meta-1"), "meta node serving");
    must_be_json_lines(&c.log("chunk-1"), "chunk server serving");

    // By environment: a second chunk server started with SHOAL_LOG_FORMAT=json.
    let dir = c.tmp.path().join("chunk-env");
    let log = c.tmp.path().join("chunk-env.log");
    let out = std::fs::File::create(&log).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Reaped::spawn(
        shoal_command(&["chunk", "--listen", &addr, "--meta", &c.meta_flag(), "--dir", dir.to_str().unwrap()])
            .env("SHOAL_LOG", "info")
            .env("SHOAL_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out),
    );
    let deadline = Instant::now() + PATIENCE;
    while !std::fs::read_to_string(&log).unwrap().contains("chunk server serving") {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the chunk server exited:\n{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(Instant::now() < deadline, "the chunk server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(child);
    must_be_json_lines(&log, "chunk server serving");

    // A format that does not exist is bad usage.
    let out = run_shoal(&c.meta_flag(), &["--log-format", "yaml", "ls", "/"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// Every line of `log` is a JSON object with a level and a message, and one
/// message is `expected`.
fn must_be_json_lines(log: &std::path::Path, expected: &str) {
    let text = std::fs::read_to_string(log).unwrap();
    let mut messages = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", log.display()));
        let level = v["level"].as_str().unwrap_or_else(|| panic!("no level: {line}"));
        assert!(["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level), "{line}");
        messages.push(v["message"].as_str().unwrap_or_else(|| panic!("no message: {line}")).to_string());
    }
    assert!(messages.iter().any(|m| m == expected), "{}: no {expected:?} in {messages:?}", log.display());
}

/// What a live `top` session wrote to its terminal, and whether the
/// terminal's settings were as before once it ended.
struct LiveSession {
    output: String,
    restored: bool,
}

/// Runs `shoal admin top` on a fresh pseudo-terminal (as its controlling
/// terminal), waits for two frames, types `quit_key`, and panics unless it
/// exits 0 in time.
fn must_run_top_live(meta: &str, quit_key: &[u8]) -> LiveSession {
    let (master, slave) = open_pty(120, 40);
    let before = termios_of(&slave);
    let mut child = {
        let mut cmd = shoal_command(&["--meta", meta, "admin", "top", "--interval", "200ms"]);
        cmd.env("SHOAL_TIMEOUT", "20s")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave.try_clone().unwrap()));
        // SAFETY: setsid and ioctl are async-signal-safe; the child gets a
        // session of its own with the pseudo-terminal (its stdin) controlling it.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // Killed with its session's group if this test panics.
        Reaped(cmd.spawn().expect("spawn shoal admin top"))
    };

    // Read the terminal from a thread: it ends when the last slave closes.
    let output = Arc::new(Mutex::new(Vec::new()));
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let sink = output.clone();
    let reading = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let text = || String::from_utf8_lossy(&output.lock().unwrap()).into_owned();

    let deadline = Instant::now() + PATIENCE;
    while text().matches(FRAME_START).count() < 2 {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("top exited early ({status}):\n{}", text());
        }
        assert!(Instant::now() < deadline, "top drew fewer than two frames:\n{}", text());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::File::from(master.try_clone().unwrap()).write_all(quit_key).unwrap();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            panic!("top did not quit on {quit_key:?}:\n{}", text());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "top exited with {status}:\n{}", text());
    let after = termios_of(&slave);
    let restored = (before.c_iflag, before.c_oflag, before.c_lflag, before.c_cc)
        == (after.c_iflag, after.c_oflag, after.c_lflag, after.c_cc);
    drop(slave);
    reading.join().unwrap();
    drop(master);
    LiveSession { output: text(), restored }
}

/// A pseudo-terminal pair (master, slave) of `cols`×`rows`.
fn open_pty(cols: u16, rows: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two fds; name and termios may be null.
    let r = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

fn termios_of(fd: &OwnedFd) -> libc::termios {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0, "tcgetattr");
    t
}
