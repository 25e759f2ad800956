//! A `shoal mount` child process and its mount point, for the bands that
//! test the FUSE mount through the kernel (t97, t98).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::*;

/// A `shoal mount` process and its mount point, taken down when dropped.
pub struct Mount {
    pub dir: PathBuf,
    pub log: PathBuf,
    pub process: Option<Reaped>,
}

/// True when `dir` is a mount point now.
pub fn is_mounted(dir: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let dir = dir.to_string_lossy();
    mounts.lines().any(|l| l.split_whitespace().nth(1) == Some(&*dir))
}

impl Mount {
    /// Mounts the cluster at a new directory `name` under the cluster's
    /// temporary directory, with `extra` flags, and waits until it is mounted.
    pub fn start(c: &Cluster, name: &str, extra: &[&str]) -> Mount {
        let dir = c.tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let log = c.tmp.path().join(format!("{name}.log"));
        let mut cmd = shoal_command(&["--meta", &c.meta_flag(), "mount"]);
        cmd.arg(&dir).args(extra);
        cmd.env("SHOAL_TIMEOUT", "3s").env("SHOAL_LOG", "info");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        let mut m = Mount { dir, log, process: Some(Reaped::spawn(&mut cmd)) };
        let deadline = Instant::now() + PATIENCE;
        while !is_mounted(&m.dir) {
            let exited = m.process.as_mut().unwrap().0.try_wait().unwrap();
            assert!(exited.is_none(), "shoal mount exited ({exited:?}):\n{}", m.log_text());
            assert!(Instant::now() < deadline, "not mounted in time:\n{}", m.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `shoal mount` process's pid.
    pub fn pid(&self) -> i32 {
        self.process.as_ref().expect("running").0.id() as i32
    }

    /// Unmounts the directory lazily (`umount -l`), as after a mount died.
    pub fn detach(&self) {
        if is_mounted(&self.dir) {
            let c = std::ffi::CString::new(self.dir.to_string_lossy().as_bytes()).unwrap();
            // SAFETY: umount2 reads the NUL-terminated path only.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Sends SIGTERM and waits for the process to exit; answers its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut p = self.process.take().expect("running");
        signal(p.0.id() as i32, libc::SIGTERM).unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = p.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "shoal mount ignored SIGTERM:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        drop(self.process.take());
        self.detach();
    }
}

/// Whether mounts can be made here; skips `test` with a message if not.
pub fn can_mount(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skipping(test, "mounting", "not root");
        return false;
    }
    if !Path::new("/dev/fuse").exists() {
        skipping(test, "mounting", "no /dev/fuse");
        return false;
    }
    true
}
