//! Scratch directories for the in-process RPC fuzz targets: in memory when
//! the machine has /dev/shm, and the one in use removed when the process
//! exits (libFuzzer ends with `exit`, which drops no statics, so a
//! `TempDir` kept in one would stay behind).

use std::path::PathBuf;
use std::sync::{Mutex, Once};

/// The directory in use now: the one removed at exit.
static CURRENT: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn remove_current() {
    if let Ok(guard) = CURRENT.try_lock()
        && let Some(dir) = guard.as_ref()
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh directory whose name starts with `prefix`; from now on it is the
/// one removed at exit (an earlier one goes when its `TempDir` drops).
pub fn fresh(prefix: &str) -> tempfile::TempDir {
    static REGISTERED: Once = Once::new();
    // SAFETY: registers a plain function with no preconditions.
    REGISTERED.call_once(|| unsafe {
        libc::atexit(remove_current);
    });
    let shm = PathBuf::from("/dev/shm");
    let base = if shm.is_dir() { shm } else { std::env::temp_dir() };
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(base).expect("a temporary directory");
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some(dir.path().to_path_buf());
    dir
}
