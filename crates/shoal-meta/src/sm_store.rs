//! The Raft state machine host: [`FsState`] in memory, snapshots on disk.
//!
//! Applying an entry only changes memory; durability comes from the Raft log
//! plus the persisted committed index, so after a restart openraft re-applies
//! the log from the last snapshot on.
//!
//! A snapshot is one headed record ([`crate::format`]) holding the snapshot's
//! meta and the whole state, in `snapshot.bin`; the same bytes are what a
//! leader sends to a follower that installs it. Writing one (a build, or an
//! install of a leader's) goes: a temporary file of its own
//! (`snapshot.bin.N.tmp`, N unique in this process), fsync, then, under the
//! [`SnapshotFiles`] lock, a compare of log ids, rename over `snapshot.bin`
//! and a directory fsync. So a crash leaves either the old or the new file,
//! a build and an install that run at once never share a temporary file, and
//! the file's last log id never goes back: a snapshot older than the one on
//! disk is dropped, not renamed over it.
//!
//! A node upgraded from format 0 finds `snapshot.json` (plain JSON) instead:
//! it is read through [`crate::format::upgrade_legacy_snapshot_body_json`],
//! rewritten as `snapshot.bin` at once, and then removed.
//!
//! The services read the state through [`SharedState`] (a read lock); only
//! `apply` and `install_snapshot` take the write lock, and both then announce
//! the new applied index, so a request can wait for a change (a lock grant)
//! without polling. `apply` holds it at most [`APPLY_SLICE`] at a time and
//! yields its runtime worker between slices: openraft hands it every entry
//! committed since the last call, thousands after a restart or a stall. A
//! snapshot build holds the read lock only while it clones the state, which copies the inode table's group index and not the inodes
//! ([`crate::fsm::cow_map`]: 0.3 to 2.4 ms at ten million files, where a
//! full copy took 97 ms at 200,000); it encodes the clone straight into
//! the file without any lock, on a thread of its own at the lowest CPU
//! priority.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use anyhow::Context;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::TypeConfig;
use crate::format::{self, Checked, FormatError, RecordKind};
use crate::fsm::{FsState, Response};
use crate::metric_names;

type StorageResult<T> = Result<T, StorageError<u64>>;

fn sm_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

/// Everything a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmBody {
    pub last_applied: Option<LogId<u64>>,
    pub last_membership: StoredMembership<u64, BasicNode>,
    pub fs: FsState,
}

/// What the snapshot file holds (and a leader sends): the snapshot's meta
/// and the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PersistedSnapshot {
    pub meta: SnapshotMeta<u64, BasicNode>,
    pub body: SmBody,
}

/// Read access to the applied state, shared with the services.
#[derive(Clone)]
pub struct SharedState(Arc<RwLock<SmBody>>, Arc<tokio::sync::watch::Sender<u64>>);

impl Default for SharedState {
    fn default() -> Self {
        SharedState(Arc::default(), Arc::new(tokio::sync::watch::Sender::new(0)))
    }
}

impl SharedState {
    /// A receiver that wakes after every applied batch of entries.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.1.subscribe()
    }

    fn announce(&self, applied: Option<LogId<u64>>) {
        self.1.send_replace(applied.map_or(0, |l| l.index));
    }

    pub fn read(&self) -> RwLockReadGuard<'_, SmBody> {
        self.0.read().expect("state lock poisoned")
    }

    /// A copy of the file-system state, for a pass over all of it without
    /// the lock that applies wait for. The inodes and the garbage records
    /// are shared page by page with the live state (`fsm::cow_map`: the
    /// group index is copied, at most a few ms at ten million files); the rest
    /// (servers, sessions, locks, request answers, corrupt records, the
    /// subdirectory counts) is copied, and is usually small. Not always: a
    /// request answer kept for a retry can hold a whole inode, a directory's
    /// entries included. Applies also pay later, once per page and value
    /// they change or remove while the copy lives: a directory of a million
    /// entries is copied whole by the first change to it.
    pub fn fs_copy(&self) -> FsState {
        self.read().fs.clone()
    }

    /// Runs `f` over a copy of the file-system state ([`Self::fs_copy`]) on
    /// a blocking thread, one such pass at a time in the process. The
    /// handlers' and the healer's passes over the whole namespace go through
    /// here (the metrics sampler runs on a blocking thread of its own). At
    /// millions of files such a pass takes hundreds of milliseconds, and it
    /// may hold none of these that long:
    /// - the state's lock: applies wait for it, and every reader then waits
    ///   behind the waiting apply;
    /// - a runtime worker: the Raft core runs on the same two, and a leader
    ///   whose core stalls past the election timeout is deposed;
    /// - more than one core: passes started together (every chunk server
    ///   reports to a new leader) would otherwise each take one, and the
    ///   memory their results need.
    ///
    /// What `f` returns is dropped on the caller's thread: keep it small.
    pub async fn pass<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FsState) -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        static PASSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);
        let permit = PASSES.acquire().await.expect("the semaphore is never closed");
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let _one_at_a_time = permit;
            f(&state.fs_copy())
        })
        .await
    }

    /// The last applied index and a CRC32C of the whole file-system state at
    /// it. Two nodes at the same index must give the same digest. Linear in
    /// the state, on a copy (the lock is held only to take it): call it off
    /// the runtime.
    pub fn digest(&self) -> (u64, u32) {
        let (applied, fs) = {
            let s = self.read();
            (s.last_applied.map_or(0, |l| l.index), s.fs.clone())
        };
        let bytes = serde_json::to_vec(&fs).expect("the state always serializes");
        (applied, shoal_core::checksum::crc32c(&bytes))
    }
}

pub struct StateMachineStore {
    state: SharedState,
    files: Arc<SnapshotFiles>,
    snapshot_seq: Arc<AtomicU64>,
}

impl StateMachineStore {
    /// Opens the state machine, starting from the snapshot in `dir` when there
    /// is one (and rewriting a legacy `snapshot.json` in the current format).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let (files, snap) = SnapshotFiles::open(dir)?;
        let state = SharedState::default();
        if let Some(snap) = snap {
            *state.0.write().expect("fresh lock") = snap.body;
        }
        Ok(StateMachineStore { state, files: Arc::new(files), snapshot_seq: Arc::new(AtomicU64::new(0)) })
    }

    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }
}

/// Applies entries from `entries` under the state's write lock, for at most
/// [`APPLY_SLICE`] (at least one entry), their answers pushed to `out`;
/// returns the last applied id.
fn apply_slice(
    state: &SharedState,
    entries: &mut std::iter::Peekable<impl Iterator<Item = Entry<TypeConfig>>>,
    out: &mut Vec<Response>,
) -> Option<LogId<u64>> {
    let mut s = state.0.write().expect("state lock poisoned");
    // The slice's clock starts once the lock is held, and its first entry
    // is always applied: a wait for the lock must not stop progress.
    let started = Instant::now();
    let mut first = true;
    while let Some(entry) = entries.next_if(|_| std::mem::take(&mut first) || started.elapsed() < APPLY_SLICE) {
        s.last_applied = Some(entry.log_id);
        out.push(match entry.payload {
            EntryPayload::Blank => Response::Ok,
            EntryPayload::Normal(cmd) => s.fs.apply(&cmd),
            EntryPayload::Membership(m) => {
                s.last_membership = StoredMembership::new(Some(entry.log_id), m);
                Response::Ok
            }
        });
    }
    s.last_applied
}

/// The longest an apply holds the state's lock at once: a batch of entries
/// that takes longer (a restart replaying thousands of entries, a follower
/// catching up) lets go of the lock and of its runtime worker between
/// slices, so readers and the Raft core are not held up for all of it.
pub const APPLY_SLICE: Duration = Duration::from_millis(5);

/// The snapshot file's name.
pub const SNAPSHOT_FILE: &str = "snapshot.bin";
/// Where format 0 kept the snapshot, as JSON.
pub const LEGACY_SNAPSHOT_FILE: &str = "snapshot.json";

/// A snapshot that cannot be read, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", file.display())]
pub struct SnapshotFileError {
    pub file: PathBuf,
    pub error: FormatError,
}

/// What [`SnapshotFiles::publish`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// The new snapshot is now the file.
    Replaced,
    /// The file already held a snapshot at least as new (at `on_disk`); the
    /// new one was dropped.
    Superseded { on_disk: Option<LogId<u64>> },
}

/// A snapshot written and fsynced under a name of its own, not yet published.
#[derive(Debug)]
pub struct TempSnapshot {
    path: PathBuf,
    meta: SnapshotMeta<u64, BasicNode>,
}

/// The snapshot file of one directory and the lock that orders its writers.
pub struct SnapshotFiles {
    dir: PathBuf,
    /// Numbers the temporary files.
    tmp_seq: AtomicU64,
    /// The meta of the snapshot in `snapshot.bin` (None: no file yet). Held
    /// from the compare to the rename, and while the file is read.
    published: Mutex<Option<SnapshotMeta<u64, BasicNode>>>,
}

impl SnapshotFiles {
    /// Opens `dir`'s snapshot files: removes temporaries a crash left,
    /// reads the snapshot, and rewrites a legacy one in the current format.
    pub fn open(dir: &Path) -> anyhow::Result<(Self, Option<PersistedSnapshot>)> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snapshot.") && name.ends_with(".tmp") {
                std::fs::remove_file(dir.join(name.as_ref()))?;
            }
        }
        let files = SnapshotFiles { dir: dir.to_path_buf(), tmp_seq: AtomicU64::new(0), published: Mutex::new(None) };
        let path = files.path();
        let legacy = dir.join(LEGACY_SNAPSHOT_FILE);
        let snap = match std::fs::read(&path) {
            Ok(bytes) => Some(decode_file(&bytes).map_err(|error| SnapshotFileError { file: path, error })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read(&legacy) {
                Ok(bytes) => {
                    let snap =
                        decode_file(&bytes).map_err(|error| SnapshotFileError { file: legacy.clone(), error })?;
                    let bytes = format::encode(RecordKind::Snapshot, &snap)?;
                    let tmp = files.write_temporary(&bytes, snap.meta.clone())?;
                    files.publish(tmp)?;
                    tracing::info!(from = %legacy.display(), to = %files.path().display(), "snapshot rewritten in format {}", format::FORMAT_CURRENT);
                    Some(snap)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", legacy.display()))),
            },
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        };
        if let Some(s) = &snap {
            *files.published.lock().expect("snapshot lock poisoned") = Some(s.meta.clone());
        }
        Ok((files, snap))
    }

    fn path(&self) -> PathBuf {
        self.dir.join(SNAPSHOT_FILE)
    }

    /// Writes `bytes` (an encoded [`PersistedSnapshot`] with `meta`) to a new
    /// temporary file and fsyncs it.
    pub fn write_temporary(&self, bytes: &[u8], meta: SnapshotMeta<u64, BasicNode>) -> std::io::Result<TempSnapshot> {
        self.fill_temporary(meta, |mut f| f.write_all(bytes))
    }

    /// Encodes `snapshot` straight into a new temporary file, never whole in
    /// memory (at ten million files the encoding is about 700 MiB), and
    /// fsyncs it.
    pub fn write_temporary_encoded(&self, snapshot: &PersistedSnapshot) -> std::io::Result<TempSnapshot> {
        self.fill_temporary(snapshot.meta.clone(), |f| {
            format::encode_to_file(RecordKind::Snapshot, snapshot, f).map(drop)
        })
    }

    /// A new temporary file, filled by `fill` and fsynced; removed again if
    /// either fails (a full disk gets its room back).
    fn fill_temporary(
        &self,
        meta: SnapshotMeta<u64, BasicNode>,
        fill: impl FnOnce(&std::fs::File) -> std::io::Result<()>,
    ) -> std::io::Result<TempSnapshot> {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{SNAPSHOT_FILE}.{n}.tmp"));
        let f = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
        if let Err(e) = fill(&f).and_then(|()| f.sync_all()) {
            drop(f);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(TempSnapshot { path, meta })
    }

    /// Renames `tmp` over the snapshot file if it is newer than the file,
    /// and fsyncs the directory; otherwise removes it.
    pub fn publish(&self, tmp: TempSnapshot) -> std::io::Result<Published> {
        let mut published = self.published.lock().expect("snapshot lock poisoned");
        let on_disk = published.as_ref().and_then(|m| m.last_log_id);
        if published.is_some() && tmp.meta.last_log_id <= on_disk {
            std::fs::remove_file(&tmp.path)?;
            return Ok(Published::Superseded { on_disk });
        }
        std::fs::rename(&tmp.path, self.path())?;
        // The file is the new one from here on, even if the directory's
        // fsync fails: its reader must pair it with its own meta.
        *published = Some(tmp.meta);
        std::fs::File::open(&self.dir)?.sync_all()?;
        // The legacy file is only read when there is no current one; once the
        // current one is durable, it is just clutter.
        match std::fs::remove_file(self.dir.join(LEGACY_SNAPSHOT_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        Ok(Published::Replaced)
    }

    /// The published snapshot's meta and bytes, checked (header and CRC).
    fn read_current(&self) -> anyhow::Result<Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>> {
        let published = self.published.lock().expect("snapshot lock poisoned");
        let Some(meta) = published.clone() else { return Ok(None) };
        let path = self.path();
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        format::check(RecordKind::Snapshot, &bytes).map_err(|error| SnapshotFileError { file: path, error })?;
        Ok(Some((meta, bytes)))
    }
}

/// The meta of the snapshot in `dir` (None: no snapshot yet), read without
/// changing anything, so it is safe on a running node's directory (for tools
/// and tests).
pub fn read_snapshot_meta(dir: &Path) -> anyhow::Result<Option<SnapshotMeta<u64, BasicNode>>> {
    for name in [SNAPSHOT_FILE, LEGACY_SNAPSHOT_FILE] {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let snap = decode_file(&bytes).map_err(|error| SnapshotFileError { file: path, error })?;
                return Ok(Some(snap.meta));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }
    Ok(None)
}

/// Decodes a snapshot file: current, or legacy JSON through the upgrade hook.
pub fn decode_file(bytes: &[u8]) -> Result<PersistedSnapshot, FormatError> {
    fn upgrade(mut v: serde_json::Value) -> serde_json::Value {
        if let Some(body) = v.get_mut("body") {
            *body = format::upgrade_legacy_snapshot_body_json(body.take());
        }
        v
    }
    format::decode(RecordKind::Snapshot, bytes, upgrade)
}

/// Decodes the bytes a leader sent: the current format is a whole
/// [`PersistedSnapshot`]; a format-0 leader sends its body as JSON.
pub fn decode_received(bytes: &[u8]) -> Result<SmBody, FormatError> {
    match format::check(RecordKind::Snapshot, bytes)? {
        Checked::Headed { .. } => decode_file(bytes).map(|s| s.body),
        Checked::LegacyJson(_) => {
            format::decode(RecordKind::Snapshot, bytes, format::upgrade_legacy_snapshot_body_json)
        }
    }
}

/// Hands the heap's free pages back to the system. A snapshot build drops
/// its copy of the state (and applies meanwhile copied the pages they
/// changed), and an install drops a whole state; glibc's malloc keeps what
/// they freed in its arenas (one per thread that allocated), so without
/// this a node's resident memory stays well above its state after a build
/// (`benches/state_memory.rs` measures both).
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops `value` (a whole state, or a copy of one) on a blocking thread of
/// normal priority, then hands the freed memory back to the system.
fn free_in_background<T: Send + 'static>(value: T) {
    tokio::task::spawn_blocking(move || {
        drop(value);
        return_free_memory();
    });
}

/// Runs `work` on a thread of its own at the lowest CPU priority (nice 19),
/// and answers with its result (an error if it panicked). A snapshot build
/// encodes the whole state, about 0.6 s of one core at a million files; on
/// a small machine at normal priority that takes a core from Raft's own
/// work (appends, replication, applies) and shows as a stall of writes.
/// Niced, it runs on what they leave. The thread ends with the build, so
/// its priority never passes to other work. What runs here should take no
/// lock that applies or requests take, the allocator's included: a niced
/// thread preempted while holding one keeps them waiting until it runs
/// again, which on a busy machine can be a second. (Publishing takes the
/// snapshot file's own lock, which only snapshot reads and installs share.)
fn in_the_background<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new().name("snapshot-build".into()).spawn(move || {
        #[cfg(target_os = "linux")]
        // SAFETY: setpriority on this thread's own id changes only its nice
        // value; gettid has no preconditions.
        unsafe {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19);
        }
        let _ = tx.send(work());
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread for the snapshot build");
    }
    rx
}

/// Builds snapshots from a copy of the state taken under the read lock.
pub struct SnapshotBuilder {
    state: SharedState,
    files: Arc<SnapshotFiles>,
    seq: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let started = std::time::Instant::now();
        // The only time the state is locked: encoding and writing use the copy.
        let body = self.state.read().clone();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match body.last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id.term, l.index),
            None => format!("0-0-{seq}"),
        };
        let meta =
            SnapshotMeta { last_log_id: body.last_applied, last_membership: body.last_membership.clone(), snapshot_id };
        let files = self.files.clone();
        let persisted = PersistedSnapshot { meta: meta.clone(), body };
        let (written, persisted) = in_the_background(move || {
            let written = files.write_temporary_encoded(&persisted).and_then(|tmp| files.publish(tmp));
            (written, persisted)
        })
        .await
        .map_err(|_| snap_err(std::io::Error::other("the snapshot build thread did not start or panicked")))?;
        // The copy is freed at normal priority: freeing takes the allocator's
        // locks, which applies take too, and a niced thread preempted while
        // holding one would make them wait until it ran again.
        free_in_background(persisted);
        if let Published::Superseded { on_disk } = written.map_err(snap_err)? {
            tracing::info!(built = ?meta.last_log_id, ?on_disk, "a newer snapshot was installed meanwhile; keeping it");
        }
        metrics::counter!(metric_names::SNAPSHOTS_BUILT_TOTAL).increment(1);
        metrics::histogram!(metric_names::SNAPSHOT_BUILD_SECONDS).record(started.elapsed().as_secs_f64());
        // openraft 0.9 keeps only the meta of a snapshot it had built; a
        // follower is sent the file (`get_current_snapshot`). So the data
        // is left empty rather than read back: at ten million files it is
        // 700 MiB.
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let s = self.state.read();
        Ok((s.last_applied, s.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut entries = entries.into_iter().peekable();
        let mut out = Vec::new();
        while entries.peek().is_some() {
            let applied = apply_slice(&self.state, &mut entries, &mut out);
            self.state.announce(applied);
            if entries.peek().is_some() {
                // Let the readers waiting on the lock, and the tasks waiting
                // for this worker (the Raft core among them), run.
                tokio::task::yield_now().await;
            }
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { state: self.state.clone(), files: self.files.clone(), seq: self.snapshot_seq.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let files = self.files.clone();
        let meta = meta.clone();
        let body = tokio::task::spawn_blocking(move || -> Result<SmBody, InstallError> {
            let received = snapshot.into_inner();
            let body = decode_received(&received)?;
            if body.last_applied != meta.last_log_id {
                return Err(InstallError::Mismatch { meta: meta.last_log_id, body: body.last_applied });
            }
            // A current-format snapshot is stored as received; a legacy one is
            // stored in the current format.
            let bytes = match format::check(RecordKind::Snapshot, &received)? {
                Checked::Headed { .. } => received,
                Checked::LegacyJson(_) => {
                    let persisted = PersistedSnapshot { meta: meta.clone(), body };
                    let bytes = format::encode(RecordKind::Snapshot, &persisted)?;
                    return files.install_bytes(&bytes, persisted.meta).map(|()| persisted.body);
                }
            };
            files.install_bytes(&bytes, meta)?;
            Ok(body)
        })
        .await
        .map_err(sm_err)?
        .map_err(sm_err)?;
        let applied = body.last_applied;
        let old = std::mem::replace(&mut *self.state.0.write().expect("state lock poisoned"), body);
        self.state.announce(applied);
        // Freeing a large state takes a while: not under the lock, and not
        // on this task's thread.
        free_in_background(old);
        metrics::counter!(metric_names::SNAPSHOTS_INSTALLED_TOTAL).increment(1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let files = self.files.clone();
        let snap = tokio::task::spawn_blocking(move || files.read_current())
            .await
            .map_err(snap_err)?
            .map_err(|e| snap_err(std::io::Error::other(format!("{e:#}"))))?;
        Ok(snap.map(|(meta, bytes)| Snapshot { meta, snapshot: Box::new(Cursor::new(bytes)) }))
    }
}

/// Why a snapshot sent by the leader was not installed.
#[derive(Debug, thiserror::Error)]
enum InstallError {
    #[error("received snapshot: {0}")]
    Format(#[from] FormatError),
    #[error("received snapshot: its meta says last log id {meta:?}, its state {body:?}")]
    Mismatch { meta: Option<LogId<u64>>, body: Option<LogId<u64>> },
    #[error("storing the received snapshot: {0}")]
    Io(#[from] std::io::Error),
}

impl SnapshotFiles {
    /// Writes and publishes an installed snapshot's bytes.
    fn install_bytes(&self, bytes: &[u8], meta: SnapshotMeta<u64, BasicNode>) -> Result<(), InstallError> {
        let tmp = self.write_temporary(bytes, meta)?;
        if let Published::Superseded { on_disk } = self.publish(tmp)? {
            tracing::warn!(?on_disk, "installed a snapshot no newer than the one on disk; kept the file");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    /// A snapshot at `index` whose state is told apart by `next_inode`.
    fn snapshot_at(index: u64) -> PersistedSnapshot {
        let mut body = SmBody { last_applied: Some(log_id(index)), ..Default::default() };
        body.fs.next_inode = 1000 + index;
        let meta = SnapshotMeta {
            last_log_id: body.last_applied,
            last_membership: body.last_membership.clone(),
            snapshot_id: format!("1-{index}-0"),
        };
        PersistedSnapshot { meta, body }
    }

    fn encoded(s: &PersistedSnapshot) -> Vec<u8> {
        format::encode(RecordKind::Snapshot, s).unwrap()
    }

    fn reopen(dir: &Path) -> Option<PersistedSnapshot> {
        SnapshotFiles::open(dir).unwrap().1
    }

    /// Regression (finding 1): a build and an install used to write the same
    /// `snapshot.json.tmp`, and the last rename won even when it was the older
    /// snapshot. Here a build copies the state at index 5 and has written its
    /// temporary file when the install of the leader's snapshot at index 10
    /// runs from start to end; the build renames last. The file must keep the
    /// installed snapshot.
    #[tokio::test]
    async fn a_late_build_does_not_replace_a_newer_install() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let built = snapshot_at(5);
        let build_tmp = sm.files.write_temporary(&encoded(&built), built.meta.clone()).unwrap();

        let installed = snapshot_at(10);
        sm.install_snapshot(&installed.meta, Box::new(Cursor::new(encoded(&installed)))).await.unwrap();
        assert_eq!(sm.shared().read().fs.next_inode, 1010);

        let published = sm.files.publish(build_tmp).unwrap();
        assert_eq!(published, Published::Superseded { on_disk: Some(log_id(10)) });
        let current = sm.get_current_snapshot().await.unwrap().expect("a snapshot");
        assert_eq!(current.meta.last_log_id, Some(log_id(10)));
        let on_disk = reopen(dir.path()).expect("a snapshot file");
        assert_eq!(on_disk.meta.last_log_id, Some(log_id(10)));
        assert_eq!(on_disk.body.fs.next_inode, 1010);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [SNAPSHOT_FILE]);
    }

    /// Two writers in flight at once each keep their own temporary file, and
    /// whichever renames last, the newer snapshot is the one on disk.
    #[test]
    fn concurrent_writers_keep_their_own_files() {
        for newer_first in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (files, _) = SnapshotFiles::open(dir.path()).unwrap();
            let (a, b) = (snapshot_at(7), snapshot_at(8));
            let ta = files.write_temporary(&encoded(&a), a.meta.clone()).unwrap();
            let tb = files.write_temporary(&encoded(&b), b.meta.clone()).unwrap();
            assert_ne!(ta.path, tb.path);
            let (first, second) = if newer_first { (tb, ta) } else { (ta, tb) };
            assert_eq!(files.publish(first).unwrap(), Published::Replaced);
            let second = files.publish(second).unwrap();
            assert_eq!(second == Published::Replaced, !newer_first);
            let on_disk = reopen(dir.path()).unwrap();
            assert_eq!(on_disk.body.fs.next_inode, 1008);
        }
    }

    /// A batch that takes longer than a slice announces (and so releases
    /// the lock and yields) between slices: a task on the same one-thread
    /// runtime sees an index short of the batch's last. Every entry is
    /// applied, in order.
    #[tokio::test]
    async fn a_long_batch_lets_go_between_slices() {
        use crate::fsm::NamespaceCmd;
        use crate::fsm::testing::p;
        const N: u64 = 3_000;
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let mut rx = sm.shared().subscribe();
        let watcher = tokio::spawn(async move {
            let mut seen = Vec::new();
            while rx.changed().await.is_ok() {
                let v = *rx.borrow_and_update();
                seen.push(v);
                if v == N {
                    break;
                }
            }
            seen
        });
        let entries = (1..=N).map(|i| Entry::<TypeConfig> {
            log_id: log_id(i),
            payload: EntryPayload::Normal(crate::fsm::Proposal::new(
                1,
                None,
                NamespaceCmd::Mkdir { path: p(&format!("/d{i}")), parents: false },
            )),
        });
        let started = Instant::now();
        let out = sm.apply(entries).await.unwrap();
        let took = started.elapsed();
        assert_eq!(out.len() as u64, N);
        assert!(out.iter().all(|r| matches!(r, Response::Inode(_))), "every mkdir succeeded");
        assert_eq!(sm.shared().read().last_applied, Some(log_id(N)));
        assert_eq!(sm.shared().read().fs.inodes.len() as u64, N + 1);
        let seen = watcher.await.unwrap();
        assert_eq!(seen.last(), Some(&N));
        if took > APPLY_SLICE * 2 {
            assert!(seen.iter().any(|v| *v < N), "no announcement before the end: {seen:?}");
        }
    }

    #[tokio::test]
    async fn build_then_reopen_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        {
            let mut s = sm.state.0.write().unwrap();
            s.last_applied = Some(log_id(3));
            s.fs.next_inode = 77;
        }
        let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        assert_eq!(built.meta.last_log_id, Some(log_id(3)));
        let snap = sm.get_current_snapshot().await.unwrap().expect("the built snapshot is current");
        assert_eq!(snap.meta, built.meta);
        // What a follower receives installs there.
        let other = tempfile::tempdir().unwrap();
        let mut follower = StateMachineStore::open(other.path()).unwrap();
        follower.install_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        assert_eq!(follower.shared().read().fs.next_inode, 77);
        let sm = StateMachineStore::open(dir.path()).unwrap();
        assert_eq!(sm.shared().read().fs.next_inode, 77);
        assert_eq!(sm.shared().read().last_applied, Some(log_id(3)));
    }

    #[test]
    fn a_legacy_snapshot_is_read_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = snapshot_at(4);
        std::fs::write(dir.path().join(LEGACY_SNAPSHOT_FILE), serde_json::to_vec(&legacy).unwrap()).unwrap();
        std::fs::write(dir.path().join("snapshot.json.tmp"), b"{half a").unwrap();
        let sm = StateMachineStore::open(dir.path()).unwrap();
        assert_eq!(sm.shared().read().fs.next_inode, 1004);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [SNAPSHOT_FILE]);
        let bytes = std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap();
        assert!(matches!(
            format::check(RecordKind::Snapshot, &bytes),
            Ok(Checked::Headed { format: format::FORMAT_CURRENT, .. })
        ));
        assert_eq!(reopen(dir.path()).unwrap().body.fs.next_inode, 1004);
    }

    #[tokio::test]
    async fn a_legacy_leader_snapshot_installs() {
        // A format-0 leader sends its state (not the file) as JSON.
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let s = snapshot_at(6);
        sm.install_snapshot(&s.meta, Box::new(Cursor::new(serde_json::to_vec(&s.body).unwrap()))).await.unwrap();
        assert_eq!(reopen(dir.path()).unwrap().body.fs.next_inode, 1006);
    }

    #[test]
    fn a_newer_snapshot_stops_the_node_with_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = format::with_format(encoded(&snapshot_at(2)), format::FORMAT_CURRENT + 1);
        std::fs::write(dir.path().join(SNAPSHOT_FILE), bytes).unwrap();
        let err = StateMachineStore::open(dir.path()).err().expect("refused");
        assert_eq!(
            format!("{err:#}"),
            format!(
                "{}: format 12 is newer than this build of shoal reads (up to 11); run a newer shoal",
                dir.path().join(SNAPSHOT_FILE).display()
            )
        );
    }

    #[tokio::test]
    async fn a_corrupt_snapshot_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encoded(&snapshot_at(2));
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(dir.path().join(SNAPSHOT_FILE), &bytes).unwrap();
        let err = format!("{:#}", StateMachineStore::open(dir.path()).err().expect("refused"));
        assert!(err.contains("snapshot.bin: corrupt snapshot: CRC32C mismatch (stored"), "{err}");

        // A damaged snapshot from the leader is refused, and nothing changes.
        let dir = tempfile::tempdir().unwrap();
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        let s = snapshot_at(2);
        let err = sm.install_snapshot(&s.meta, Box::new(Cursor::new(bytes))).await.unwrap_err().to_string();
        assert!(err.contains("CRC32C mismatch"), "{err}");
        assert!(sm.get_current_snapshot().await.unwrap().is_none());
        assert_eq!(sm.shared().read().last_applied, None);
    }
}
