//! Shoal's POSIX mount: an adapter that answers the kernel's FUSE requests
//! through the client library (`shoal-client`), with `fuser` (pure Rust: as
//! root it mounts `/dev/fuse` itself, no libfuse).
//!
//! Modules: [`fs`] (the requests, the inode-to-path memory, open files),
//! [`buffer`] (a handle's write buffer, pure), [`readahead`] (a handle's
//! read-ahead, pure), [`attr`] (meta's attributes as the kernel's),
//! [`errno`] (the one table from client errors to errno), [`locks`]
//! (flock(2) and fcntl(2) as the cluster's locks).
//! [`mount`] mounts and answers a [`Mounted`]; [`serve`] mounts, runs until
//! SIGINT or SIGTERM (or an unmount from outside), then sends every held
//! write and unmounts.
//!
//! The kernel checks permissions (`default_permissions`) against the mode,
//! owner and group meta keeps, and caches attributes and entries for the
//! TTLs of [`MountOptions`].
//!
//! **Does not know:** meta or chunk servers (only the `Client`), Raft, disks.

pub mod attr;
pub mod buffer;
pub mod errno;
pub mod fallocate;
pub mod fs;
pub mod given;
pub mod locks;
pub mod readahead;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL, SessionUnmounter};
use shoal_client::Client;
use shoal_core::FsError;

/// The kernel's worker threads for one mount: calls that wait on the
/// cluster do not hold up the others.
pub const MOUNT_THREADS: usize = 4;
/// How long an unmount waits for the kernel to end the session.
const UNMOUNT_WAIT: Duration = Duration::from_secs(5);

/// The keeper session's TTL unless set: longer than the locks' (data that
/// running programs still read is not freed by a short silence), short
/// enough that a dead mount's files do not linger.
pub const DEFAULT_UNLINKED_TTL: Duration = Duration::from_secs(120);

/// How a mount behaves.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Refuse every change (`EROFS`); mounted read-only.
    pub read_only: bool,
    /// Let users other than the one who mounted use the mount.
    pub allow_other: bool,
    /// How long the kernel may keep an inode's attributes without asking.
    pub attr_ttl: Duration,
    /// How long the kernel may keep a name's lookup without asking.
    pub entry_ttl: Duration,
    /// A namespace call's limit: the client's timeout (it fails with `EIO`
    /// after at most twice this).
    pub timeout: Duration,
    /// A data call's limit (a read, or the sending of a held piece).
    pub data_timeout: Duration,
    /// The TTL of the lock sessions of the mount's cluster locks: a mount
    /// silent this long (dead, paused, cut off) loses its locks.
    pub lock_ttl: Duration,
    /// The TTL of the keeper session, which holds the files unlinked while
    /// open here: a mount silent this long has them freed.
    pub unlinked_ttl: Duration,
    /// fcntl(2) (POSIX) locks are cluster locks too: meta's byte-range
    /// locks, held across mounts (flock(2) locks then become whole-file
    /// byte ranges, without fencing: the kernel's requests do not say which
    /// is which). Else the kernel keeps fcntl locks, byte-range and local to
    /// this mount, and flock(2) locks are fencing whole-file cluster locks.
    pub cluster_fcntl_locks: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            allow_other: false,
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            timeout: shoal_client::client::DEFAULT_TIMEOUT,
            data_timeout: Duration::from_secs(60),
            lock_ttl: shoal_client::lock::DEFAULT_SESSION_TTL,
            unlinked_ttl: DEFAULT_UNLINKED_TTL,
            cluster_fcntl_locks: false,
        }
    }
}

/// Why a mount could not be made or ended badly.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount point is missing or not a directory.
    #[error("mount point {path}: {reason}")]
    MountPoint { path: PathBuf, reason: String },
    /// The kernel refused the mount (not root, no /dev/fuse, ...).
    #[error("mounting {path}: {source}")]
    Mount { path: PathBuf, source: std::io::Error },
    /// The kernel's session ended with an error.
    #[error("the session of {path} ended: {source}")]
    Session { path: PathBuf, source: std::io::Error },
    /// The cluster's meta nodes do not know the calls the mount needs.
    #[error("the cluster cannot serve a mount: {reason}")]
    Cluster { reason: String },
    /// Held writes could not be sent at unmount (they are lost).
    #[error("{failed} open files of {path} had writes that could not be sent")]
    Unsent { path: PathBuf, failed: usize },
}

/// A live mount.
pub struct Mounted {
    path: PathBuf,
    inner: Arc<fs::Inner>,
    unmounter: SessionUnmounter,
    ended: tokio::sync::oneshot::Receiver<std::io::Result<()>>,
}

/// Mounts the cluster of `client` at `mountpoint` (must be a directory).
pub async fn mount(client: Client, mountpoint: &Path, opts: MountOptions) -> Result<Mounted, MountError> {
    let path = mountpoint.to_path_buf();
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(MountError::MountPoint { path, reason: "not a directory".into() }),
        Err(e) => return Err(MountError::MountPoint { path, reason: e.to_string() }),
    }
    // The mount names entries by paths anchored at their directory's inode
    // (`fs`), which a meta node older than this mount takes literally (every
    // call below the root would be ENOENT): refuse to mount rather than fail
    // every call. An unreachable cluster is no reason not to mount (calls
    // fail with EIO until it is back).
    let root = shoal_core::path::inode_path(1);
    let too_old = |why: String| MountError::Cluster {
        reason: format!("its meta nodes do not resolve paths anchored at an inode ({why}); upgrade them first"),
    };
    match tokio::time::timeout(opts.timeout * 2, client.stat(&root)).await {
        Ok(Ok(stat)) if stat.inode != 1 => return Err(too_old(format!("{root} is inode {}", stat.inode))),
        Ok(Err(e @ shoal_client::ClientError::Fs(FsError::NotFound { .. } | FsError::InvalidPath(_)))) => {
            return Err(too_old(e.to_string()));
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "the cluster does not answer yet; mounting anyway"),
        Err(_) => tracing::warn!("the cluster does not answer yet; mounting anyway"),
        Ok(Ok(_)) => {}
    }
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("shoal".into()),
        MountOption::Subtype("shoal".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        if opts.read_only { MountOption::RO } else { MountOption::RW },
    ];
    config.acl = if opts.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(MOUNT_THREADS);
    let inner = Arc::new(fs::Inner::new(client, tokio::runtime::Handle::current(), opts));
    let filesystem = fs::ShoalFs(inner.clone());
    let at = path.clone();
    let session = tokio::task::spawn_blocking(move || fuser::Session::new(filesystem, &at, &config))
        .await
        .expect("the mount task does not panic")
        .map_err(|source| MountError::Mount { path: path.clone(), source })?;
    let mut session = session;
    let _ = inner.notifier.set(session.notifier());
    // Held writes that waited too long are sent in the background, until
    // the mount's state is gone.
    let weak = Arc::downgrade(&inner);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(fs::FLUSH_TICK).await;
            let Some(inner) = weak.upgrade() else { break };
            inner.send_due().await;
        }
    });
    let unmounter = session.unmount_callable();
    let (tx, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shoal-fuse".into())
        .spawn(move || {
            let _ = tx.send(session.run());
        })
        .map_err(|source| MountError::Mount { path: path.clone(), source })?;
    tracing::info!(path = %path.display(), "mounted");
    Ok(Mounted { path, inner, unmounter, ended })
}

impl Mounted {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs until `shutdown` completes or the mount is unmounted from
    /// outside; then sends every held write and unmounts.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), MountError> {
        tokio::select! {
            () = shutdown => {}
            r = &mut self.ended => {
                tracing::info!(path = %self.path.display(), "the session ended (unmounted from outside?)");
                // A session that ended on an error leaves the mount point
                // dead ("transport endpoint is not connected"): take it down.
                let mut unmounter = self.unmounter;
                let _ = tokio::task::spawn_blocking(move || unmounter.unmount()).await;
                self.inner.locks.close_all().await;
                // No handle is served any more: the hidden files go now, not a TTL later.
                let inner = self.inner.clone();
                let _ = tokio::task::spawn_blocking(move || inner.drop_all_unlinked()).await;
                self.inner.close_keeper().await;
                return match r {
                    Ok(Err(source)) => Err(MountError::Session { path: self.path, source }),
                    _ => Ok(()),
                };
            }
        }
        self.unmount().await
    }

    /// Sends every held write, then unmounts (lazily: processes that still
    /// have files open keep them until they close).
    pub async fn unmount(mut self) -> Result<(), MountError> {
        let inner = self.inner.clone();
        let failed = tokio::task::spawn_blocking(move || inner.send_all()).await.unwrap_or(1);
        // The sessions end now rather than a TTL later: other mounts' waiters go on.
        self.inner.locks.close_all().await;
        let mut unmounter = self.unmounter;
        let result = tokio::task::spawn_blocking(move || unmounter.unmount()).await.expect("unmount does not panic");
        match result {
            Ok(()) => {}
            // Files are still open: detach the mount now (lazily), and the
            // kernel ends the session when the last of them is closed or
            // this process exits.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                detach(&self.path).map_err(|source| MountError::Mount { path: self.path.clone(), source })?
            }
            Err(source) => return Err(MountError::Mount { path: self.path, source }),
        }
        let ended = tokio::time::timeout(UNMOUNT_WAIT, &mut self.ended).await.is_ok();
        if !ended {
            tracing::warn!(path = %self.path.display(), "the kernel kept the session after the unmount");
        }
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || inner.drop_all_unlinked()).await;
        // Ending the keeper frees every hidden file left. While the kernel
        // keeps the session, a file may still be open (or being hidden):
        // then the keeper expires once this process exits.
        if ended {
            self.inner.close_keeper().await;
        }
        tracing::info!(path = %self.path.display(), "unmounted");
        match failed {
            0 => Ok(()),
            failed => Err(MountError::Unsent { path: self.path, failed }),
        }
    }
}

/// Unmounts `path` lazily (MNT_DETACH).
fn detach(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: umount2 only reads the NUL-terminated path.
    match unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("a SIGINT handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Mounts, runs until SIGINT or SIGTERM (or an unmount from outside), then
/// sends every held write and unmounts.
pub async fn serve(client: Client, mountpoint: &Path, opts: MountOptions) -> Result<(), MountError> {
    mount(client, mountpoint, opts).await?.run_until(signalled()).await
}
