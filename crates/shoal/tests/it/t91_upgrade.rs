//! t91: upgrade from format 0. The data directories that the unversioned-JSON
//! meta code wrote (`tests/fixtures/v0`, see its README: a snapshot, log
//! entries past it, two chunk servers) open with this build: every directory,
//! file, size, time and byte is as the old cluster listed it. The node
//! rewrites the legacy snapshot in the current format, writes new entries in
//! it beside the legacy ones, and still has everything after a restart that
//! replays both. A damaged snapshot stops the node with a message naming it.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Instant;

use crate::common::*;

/// The fixture, relative to this crate.
const FIXTURE: &str = "tests/fixtures/v0";
/// Files the fixture's `expected/files` holds, as Shoal paths.
const FILES: [&str; 7] = [
    "/docs/readme.txt",
    "/docs/empty",
    "/data/big.bin",
    "/data/deep/er/new.txt",
    "/after-snapshot/tail.txt",
    // In the log tail: a put whose temporary file was written under the
    // target's fence, and a file whose chunk id comes after the put's.
    "/after-snapshot/put-tail.bin",
    "/after-snapshot/next.bin",
];

/// One meta node and two chunk servers on a copy of the fixture; killed on drop.
struct Upgraded {
    dir: tempfile::TempDir,
    meta_addr: String,
    meta: Option<Child>,
    chunks: Vec<Child>,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

fn spawn_logged(args: &[String], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    shoal_command(args)
        .env("SHOAL_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("spawn shoal")
}

impl Upgraded {
    /// Copies the fixture to a temporary directory (nothing else).
    fn copy() -> Upgraded {
        let dir = tempfile::tempdir().unwrap();
        for d in ["meta-1", "chunk-1", "chunk-2"] {
            copy_dir(&fixture().join(d), &dir.path().join(d));
        }
        Upgraded { dir, meta_addr: format!("127.0.0.1:{}", free_port()), meta: None, chunks: Vec::new() }
    }

    fn meta_dir(&self) -> PathBuf {
        self.dir.path().join("meta-1")
    }

    fn meta_args(&self) -> Vec<String> {
        let dir = self.meta_dir();
        let args = ["meta", "--id", "1", "--listen", &self.meta_addr, "--dir", dir.to_str().unwrap()];
        let settings = ["--chunk-size", "64KiB", "--replication", "2", "--snapshot-every", "20"];
        args.iter().chain(&settings).map(|s| s.to_string()).collect()
    }

    fn start_meta(&mut self) {
        let log = self.dir.path().join("meta-1.log");
        self.meta = Some(spawn_logged(&self.meta_args(), &log));
    }

    fn stop_meta(&mut self) {
        if let Some(mut c) = self.meta.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    fn start_chunks(&mut self) {
        for j in 1..=2 {
            let dir = self.dir.path().join(format!("chunk-{j}"));
            let args: Vec<String> = ["chunk", "--listen", "127.0.0.1:0", "--meta", &self.meta_addr, "--dir"]
                .iter()
                .map(|s| s.to_string())
                .chain([dir.to_str().unwrap().to_string()])
                .collect();
            let log = self.dir.path().join(format!("chunk-{j}.log"));
            self.chunks.push(spawn_logged(&args, &log));
        }
    }

    fn shoal(&self, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
        run_shoal(&self.meta_addr, args, stdin)
    }

    fn must(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.shoal(args, stdin);
        assert!(out.status.success(), "shoal {args:?} failed: {}\nmeta log:\n{}", stderr(&out), self.meta_log());
        out.stdout
    }

    fn meta_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("meta-1.log")).unwrap_or_default()
    }

    /// Waits until meta serves and hears both chunk servers.
    fn must_be_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = self.shoal(&["admin", "nodes", "--json"], None);
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                if v.as_array().unwrap().iter().filter(|s| s["state"] == "alive").count() == 2 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "not ready: {}\nmeta log:\n{}", stderr(&out), self.meta_log());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Every listing entry and every file's bytes are as the format-0 cluster had them.
    fn must_match_fixture(&self) {
        let listing: serde_json::Value =
            serde_json::from_slice(&self.must(&["ls", "-R", "--json", "/"], None)).unwrap();
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(fixture().join("expected/ls-R.json")).unwrap()).unwrap();
        assert_eq!(listing, expected, "the listing changed");
        for f in FILES {
            let want = std::fs::read(fixture().join(format!("expected/files{f}"))).unwrap();
            let got = self.must(&["cat", f], None);
            assert!(got == want, "{f}: {} bytes read, {} expected, or different bytes", got.len(), want.len());
        }
    }
}

impl Drop for Upgraded {
    fn drop(&mut self) {
        self.stop_meta();
        for c in &mut self.chunks {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

#[test]
fn format_0_directories_open_with_every_file_and_byte() {
    let mut up = Upgraded::copy();
    // The fixture really is format 0 with log past its snapshot.
    assert!(up.meta_dir().join("snapshot.json").exists());
    assert!(!up.meta_dir().join("snapshot.bin").exists());

    // Phase 1: the upgraded node starts on the old data and serves it as it was.
    up.start_meta();
    up.start_chunks();
    up.must_be_ready();
    up.must_match_fixture();
    // The legacy snapshot was rewritten in the current format.
    assert!(!up.meta_dir().join("snapshot.json").exists());
    let snap = std::fs::read(up.meta_dir().join("snapshot.bin")).unwrap();
    assert_eq!(snap[0..4], [0xC5, b'S', b'N', b'P'], "snapshot.bin is headed");
    assert_eq!(u16::from_le_bytes([snap[4], snap[5]]), 11, "snapshot.bin is format 11 (the current one)");

    // Phase 2: new writes go into the same log, after the legacy entries.
    let extra = pattern(70_000, 91);
    up.must(&["append", "/docs/readme.txt"], Some(&extra));
    up.must(&["mkdir", "/after-upgrade"], None);

    // Phase 3: a restart replays legacy and current entries alike.
    up.stop_meta();
    up.start_meta();
    up.must_be_ready();
    let mut readme = std::fs::read(fixture().join("expected/files/docs/readme.txt")).unwrap();
    readme.extend_from_slice(&extra);
    assert!(up.must(&["cat", "/docs/readme.txt"], None) == readme, "readme after upgrade and restart");
    for f in &FILES[1..] {
        let want = std::fs::read(fixture().join(format!("expected/files{f}"))).unwrap();
        assert!(up.must(&["cat", f], None) == want, "{f} after restart");
    }
    let root = String::from_utf8(up.must(&["ls", "/"], None)).unwrap();
    assert!(root.contains("after-upgrade"), "{root}");
}

#[test]
fn a_damaged_snapshot_stops_the_node_naming_it() {
    let mut up = Upgraded::copy();
    let snap = up.meta_dir().join("snapshot.json");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] = b'\x00';
    std::fs::write(&snap, bytes).unwrap();
    up.start_meta();
    let status = up.meta.as_mut().unwrap().wait().unwrap();
    assert!(!status.success());
    let log = up.meta_log();
    let line = log.lines().last().unwrap_or_default();
    assert!(
        line.starts_with("shoal: opening the snapshot: ") && line.contains("snapshot.json: legacy JSON snapshot"),
        "{log}"
    );
}
