//! The Raft state machine host: [`FsState`] in memory, snapshots on disk.
//!
//! Applying an entry only changes memory; durability comes from the Raft log
//! plus the persisted committed index, so after a restart openraft re-applies
//! the log from the last snapshot on. A snapshot is the whole state as JSON,
//! written to `snapshot.json.tmp`, fsynced, renamed over `snapshot.json` and
//! the directory fsynced, so a crash leaves either the old or the new one.
//!
//! The services read the state through [`SharedState`] (a read lock); only
//! `apply` and `install_snapshot` take the write lock, and both then announce
//! the new applied index, so a request can wait for a change (a lock grant)
//! without polling.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::TypeConfig;
use crate::fsm::{FsState, Response};

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

#[derive(Serialize, Deserialize)]
struct PersistedSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    body: SmBody,
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

    /// The last applied index and a CRC32C of the whole file-system state at
    /// it. Two nodes at the same index must give the same digest.
    pub fn digest(&self) -> (u64, u32) {
        let s = self.read();
        let bytes = serde_json::to_vec(&s.fs).expect("the state always serializes");
        (s.last_applied.map_or(0, |l| l.index), shoal_core::checksum::crc32c(&bytes))
    }
}

pub struct StateMachineStore {
    state: SharedState,
    dir: PathBuf,
    snapshot_seq: Arc<AtomicU64>,
}

impl StateMachineStore {
    /// Opens the state machine, starting from `dir/snapshot.json` when present.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let state = SharedState::default();
        if let Some(snap) = read_snapshot_file(dir)? {
            *state.0.write().expect("fresh lock") = snap.body;
        }
        Ok(StateMachineStore { state, dir: dir.to_path_buf(), snapshot_seq: Arc::new(AtomicU64::new(0)) })
    }

    pub fn shared(&self) -> SharedState {
        self.state.clone()
    }
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("snapshot.json")
}

fn read_snapshot_file(dir: &Path) -> anyhow::Result<Option<PersistedSnapshot>> {
    match std::fs::read(snapshot_path(dir)) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn write_snapshot_file(dir: &Path, snap: &PersistedSnapshot) -> std::io::Result<()> {
    let tmp = dir.join("snapshot.json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(snap).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, snapshot_path(dir))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Builds snapshots from a copy of the state taken under the read lock.
pub struct SnapshotBuilder {
    state: SharedState,
    dir: PathBuf,
    seq: Arc<AtomicU64>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let body = self.state.read().clone();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match body.last_applied {
            Some(l) => format!("{}-{}-{seq}", l.leader_id.term, l.index),
            None => format!("0-0-{seq}"),
        };
        let meta =
            SnapshotMeta { last_log_id: body.last_applied, last_membership: body.last_membership.clone(), snapshot_id };
        let data = serde_json::to_vec(&body).map_err(snap_err)?;
        let persisted = PersistedSnapshot { meta: meta.clone(), body };
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_snapshot_file(&dir, &persisted))
            .await
            .map_err(snap_err)?
            .map_err(snap_err)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
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
        let mut s = self.state.0.write().expect("state lock poisoned");
        let mut out = Vec::new();
        for entry in entries {
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
        let applied = s.last_applied;
        drop(s);
        self.state.announce(applied);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { state: self.state.clone(), dir: self.dir.clone(), seq: self.snapshot_seq.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let body: SmBody = serde_json::from_slice(snapshot.get_ref()).map_err(sm_err)?;
        let persisted = PersistedSnapshot { meta: meta.clone(), body: body.clone() };
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || write_snapshot_file(&dir, &persisted))
            .await
            .map_err(snap_err)?
            .map_err(snap_err)?;
        let applied = body.last_applied;
        *self.state.0.write().expect("state lock poisoned") = body;
        self.state.announce(applied);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let dir = self.dir.clone();
        let snap = tokio::task::spawn_blocking(move || read_snapshot_file(&dir))
            .await
            .map_err(snap_err)?
            .map_err(|e| snap_err(std::io::Error::other(e.to_string())))?;
        Ok(match snap {
            Some(s) => {
                let data = serde_json::to_vec(&s.body).map_err(snap_err)?;
                Some(Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(data)) })
            }
            None => None,
        })
    }
}
