//! Chunk replicas on local disk, checksummed.
//!
//! Each replica is two files under `DIR/chunks/`, named by chunk id only
//! (a chunk server never knows user paths):
//! - `<id>.data`: the bytes, at their offsets within the chunk;
//! - `<id>.meta`: magic, format, version, length, one CRC32C per 64 KiB block,
//!   and a CRC32C of the meta itself. It is replaced atomically (write a
//!   temporary file, fsync, rename, fsync the directory).
//!
//! - `<id>.undo.<version>`: what the write of that version replaced (see
//!   [`crate::undo`]), kept until the version is known committed.
//!
//! # Write protocol (one write session of version V on base B)
//! 1. Take the chunk's write lock; refuse a version older than the replica's.
//! 2. Roll back every version newer than B (the committed version the writer
//!    built on): meta can never commit them any more. Forget the undo records
//!    of versions up to B: those are committed.
//! 3. Write the data at its offsets (bounded by the capacity quota). Bytes
//!    that existed before the session are first saved in V's undo record.
//! 4. On finish: save what a truncation cuts, make the undo record durable,
//!    cut to `truncate_to` if asked, fsync the data, recompute the checksums
//!    of every touched block, and replace the meta with version V. Only then
//!    does the caller ack.
//! 5. An aborted session is rolled back at once: the replica is exactly as
//!    before it.
//!
//! # Installs (re-replication)
//! A copy of a committed version from another replica replaces whatever
//! unlisted copy this server had (never a newer version), is written like a
//! first write, and gets its meta only if the checksums of what reached the
//! file equal those of what was received; otherwise it is removed.
//!
//! # Scrubbing and corruption
//! [`ChunkStore::scrub`] re-verifies a range of a replica's blocks. Replicas
//! that failed a check (a scrub or a read) are kept in a set the server
//! reports to meta until the replica is deleted or replaced.
//!
//! # Reads are of one exact version
//! A read names the committed version it wants. A replica at that version
//! serves its bytes; a replica at a newer (uncommitted) version lays its undo
//! records over them. So an unacknowledged write is never visible, and every
//! replica of a committed version serves the same bytes.
//!
//! # Invariants
//! - After a session ends, every block's checksum in memory and in `.meta`
//!   matches the data file.
//! - A crash mid-session is undone when the store opens: the undo record of a
//!   version newer than the meta's is restored, and bytes past the meta's
//!   length are cut.
//! - `used_bytes` is the sum of data-file lengths.
//! - Readers take the chunk's read lock, writers its write lock.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shoal_core::checksum::{BLOCK_SIZE_BYTES, blocks_covering, crc32c};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

use crate::undo::{self, UndoWriter};

const META_MAGIC: &[u8; 4] = b"SHCM";
const META_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {chunk_id} not found on this server")]
    NotFound { chunk_id: u64 },
    #[error("chunk {chunk_id} is at version {have}, older than the {want} required (stale replica)")]
    Stale { chunk_id: u64, have: u64, want: u64 },
    #[error("chunk {chunk_id} is at version {have} and no longer holds version {want}: the chunk map is out of date")]
    Moved { chunk_id: u64, have: u64, want: u64 },
    #[error("fenced: write to chunk {chunk_id} carries token {token}, older than the token {newest} already seen")]
    Fenced { chunk_id: u64, token: u64, newest: u64 },
    #[error(
        "chunk {chunk_id} is at version {have} here, not the committed version {base} the write builds on (this replica missed a write)"
    )]
    MissingBase { chunk_id: u64, have: u64, base: u64 },
    #[error("write to chunk {chunk_id} carries version {got}, older than this replica's {have}")]
    OldVersion { chunk_id: u64, got: u64, have: u64 },
    #[error("chunk {chunk_id} block {block} failed its checksum")]
    Corrupt { chunk_id: u64, block: u64 },
    #[error("no space: writing {need} bytes would exceed the capacity of {capacity} bytes ({used} used)")]
    NoSpace { need: u64, used: u64, capacity: u64 },
    #[error("disk full: {0}")]
    DiskFull(std::io::Error),
    #[error("chunk {chunk_id} would grow past the chunk size limit: end offset {end}")]
    TooLarge { chunk_id: u64, end: u64 },
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    pub(crate) fn from_io(e: std::io::Error) -> StoreError {
        // ENOSPC and EDQUOT: the disk (or the user's quota) is full.
        if e.kind() == ErrorKind::StorageFull || e.kind() == ErrorKind::QuotaExceeded {
            StoreError::DiskFull(e)
        } else {
            StoreError::Io(e)
        }
    }
}

/// What the server knows of one replica, mirrored from its `.meta` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaMeta {
    pub version: u64,
    pub len: u64,
    pub crcs: Vec<u32>,
    /// Versions with an undo record, ascending. Not in the `.meta` file: the
    /// store finds the records on disk when it opens.
    pub undo: Vec<u64>,
}

impl ReplicaMeta {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 4 * self.crcs.len());
        out.extend_from_slice(META_MAGIC);
        out.extend_from_slice(&META_FORMAT.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&(self.crcs.len() as u32).to_le_bytes());
        for c in &self.crcs {
            out.extend_from_slice(&c.to_le_bytes());
        }
        let own = crc32c(&out);
        out.extend_from_slice(&own.to_le_bytes());
        out
    }

    pub(crate) fn decode(b: &[u8]) -> Option<ReplicaMeta> {
        let u32_at = |i: usize| b.get(i..i + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")));
        let u64_at = |i: usize| b.get(i..i + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")));
        if b.len() < 32 || &b[..4] != META_MAGIC || u32_at(4)? != META_FORMAT {
            return None;
        }
        let body = b.len() - 4;
        if crc32c(&b[..body]) != u32_at(body)? {
            return None;
        }
        let n = u32_at(24)? as usize;
        if 28 + 4 * n != body {
            return None;
        }
        let crcs = (0..n).map(|i| u32_at(28 + 4 * i)).collect::<Option<Vec<u32>>>()?;
        Some(ReplicaMeta { version: u64_at(8)?, len: u64_at(16)?, crcs, undo: Vec::new() })
    }
}

struct Replica {
    lock: Arc<RwLock<Option<ReplicaMeta>>>,
    /// The version of the replica's durable meta (0: none yet), readable
    /// without waiting for a write session to end.
    version: u64,
}

/// The chunk replicas of one server.
pub struct ChunkStore {
    dir: PathBuf,
    capacity_bytes: u64,
    chunk_size_max_bytes: u64,
    used_bytes: AtomicU64,
    replicas: Mutex<HashMap<u64, Replica>>,
    /// The newest fencing token a write to each chunk carried (in memory:
    /// after a restart meta's own check still fences stale writers).
    fences: Mutex<HashMap<u64, u64>>,
    /// Replicas that failed a checksum, until deleted or replaced.
    corrupt: Mutex<BTreeSet<u64>>,
}

fn data_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.data"))
}

fn meta_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.meta"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Io(std::io::Error::other(e)))?
}

fn write_meta(dir: &Path, id: u64, meta: &ReplicaMeta) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{id:016x}.meta.tmp"));
    let f = File::create(&tmp).map_err(StoreError::from_io)?;
    f.write_all_at(&meta.encode(), 0).map_err(StoreError::from_io)?;
    f.sync_all().map_err(StoreError::from_io)?;
    std::fs::rename(&tmp, meta_path(dir, id))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Checksums of blocks `[first, last)` read back from the data file.
fn crcs_from_file(f: &File, len: u64, blocks: std::ops::Range<u64>) -> Result<Vec<u32>, StoreError> {
    let mut buf = vec![0u8; BLOCK_SIZE_BYTES as usize];
    let mut out = Vec::new();
    for b in blocks {
        let start = b * BLOCK_SIZE_BYTES;
        let n = (len.saturating_sub(start)).min(BLOCK_SIZE_BYTES) as usize;
        f.read_exact_at(&mut buf[..n], start)?;
        out.push(crc32c(&buf[..n]));
    }
    Ok(out)
}

/// Removes a file, ignoring that it is already gone.
fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Undoes the newest version of a replica (whose record is `u`), on disk:
/// data restored, then the old meta written back (or the replica removed if
/// the write created it), then the record removed. Returns the replica as it
/// was before that version.
fn roll_back(dir: &Path, id: u64, mut undo_left: Vec<u64>, u: &undo::Undo) -> Result<Option<ReplicaMeta>, StoreError> {
    let data = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(data_path(dir, id))?;
    undo::restore(&data, u)?;
    let old = match &u.old {
        Some(m) => {
            write_meta(dir, id, m)?;
            undo_left.retain(|v| *v < u.version);
            Some(ReplicaMeta { undo: undo_left, ..m.clone() })
        }
        None => {
            remove_if_present(&meta_path(dir, id))?;
            remove_if_present(&data_path(dir, id))?;
            None
        }
    };
    remove_if_present(&undo::undo_path(dir, id, u.version))?;
    Ok(old)
}

/// Brings one replica to a consistent state when the store opens: rolls back
/// a session that crashed before its finish and cuts bytes past the meta's
/// length. `undo` lists the versions with a record on disk.
fn recover(
    dir: &Path,
    id: u64,
    meta: Option<ReplicaMeta>,
    mut undo: Vec<u64>,
) -> Result<Option<ReplicaMeta>, StoreError> {
    undo.sort_unstable();
    let current = meta.as_ref().map_or(0, |m| m.version);
    let mut meta = meta;
    for v in undo.iter().rev().filter(|v| **v > current) {
        match undo::load(dir, id, *v)? {
            Some(u) => {
                tracing::warn!(chunk_id = id, version = v, "rolling back a write that did not finish");
                let data =
                    std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(data_path(dir, id))?;
                undo::restore(&data, &u)?;
                if u.old.is_none() {
                    remove_if_present(&data_path(dir, id))?;
                }
            }
            None => tracing::warn!(chunk_id = id, version = v, "dropping a torn undo record"),
        }
        remove_if_present(&undo::undo_path(dir, id, *v))?;
    }
    if let Some(m) = meta.as_mut() {
        m.undo = undo.into_iter().filter(|v| *v <= current).collect();
        // A missing data file reads as corruption (see `read_verified`).
        if let Ok(data) = std::fs::OpenOptions::new().write(true).open(data_path(dir, id))
            && data.metadata()?.len() > m.len
        {
            data.set_len(m.len)?;
            data.sync_all()?;
        }
    } else {
        // A data file without meta is what a crashed first write leaves.
        remove_if_present(&data_path(dir, id))?;
    }
    Ok(meta)
}

impl ChunkStore {
    /// Opens the store under `dir/chunks`, loading every replica's meta and
    /// undoing writes that a crash interrupted. A replica whose meta is
    /// unreadable is set aside as `*.bad`.
    pub fn open(dir: &Path, capacity_bytes: u64, chunk_size_max_bytes: u64) -> Result<ChunkStore, StoreError> {
        let dir = dir.join("chunks");
        std::fs::create_dir_all(&dir)?;
        let mut found: HashMap<u64, (Option<ReplicaMeta>, Vec<u64>, bool)> = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if let Some((id, version)) = undo::parse_undo_name(&name) {
                found.entry(id).or_default().1.push(version);
            } else if let Some(id) = name.strip_suffix(".data").and_then(|h| u64::from_str_radix(h, 16).ok()) {
                found.entry(id).or_default().2 = true;
            } else if let Some(id) = name.strip_suffix(".meta").and_then(|h| u64::from_str_radix(h, 16).ok()) {
                match std::fs::read(meta_path(&dir, id)).ok().and_then(|b| ReplicaMeta::decode(&b)) {
                    Some(meta) => found.entry(id).or_default().0 = Some(meta),
                    None => {
                        tracing::warn!(chunk_id = id, "unreadable replica meta; setting the replica aside");
                        let _ = std::fs::rename(meta_path(&dir, id), dir.join(format!("{id:016x}.meta.bad")));
                    }
                }
            }
        }
        let mut replicas = HashMap::new();
        let mut used = 0;
        for (id, (meta, undo, has_data)) in found {
            if meta.is_none() && undo.is_empty() && !has_data {
                continue;
            }
            if let Some(meta) = recover(&dir, id, meta, undo)? {
                used += meta.len;
                let version = meta.version;
                replicas.insert(id, Replica { lock: Arc::new(RwLock::new(Some(meta))), version });
            }
        }
        Ok(ChunkStore {
            dir,
            capacity_bytes,
            chunk_size_max_bytes,
            used_bytes: AtomicU64::new(used),
            replicas: Mutex::new(replicas),
            fences: Mutex::default(),
            corrupt: Mutex::default(),
        })
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    pub fn chunk_count(&self) -> u64 {
        self.replicas.lock().expect("store lock").len() as u64
    }

    /// Every replica with a durable meta, as (chunk id, version), by id.
    pub fn list(&self) -> Vec<(u64, u64)> {
        let map = self.replicas.lock().expect("store lock");
        let mut out: Vec<(u64, u64)> =
            map.iter().filter(|(_, r)| r.version > 0).map(|(id, r)| (*id, r.version)).collect();
        out.sort_unstable();
        out
    }

    /// Records the version of replica `id`'s durable meta (0: none).
    fn note_version(&self, id: u64, version: u64) {
        if let Some(r) = self.replicas.lock().expect("store lock").get_mut(&id) {
            r.version = version;
        }
    }

    /// Remembers that replica `id` failed a checksum.
    pub fn note_corrupt(&self, id: u64) {
        if self.corrupt.lock().expect("corrupt lock").insert(id) {
            tracing::warn!(chunk_id = id, "replica failed its checksums");
        }
    }

    /// Replicas that failed a checksum and are still here.
    pub fn corrupt_ids(&self) -> Vec<u64> {
        self.corrupt.lock().expect("corrupt lock").iter().copied().collect()
    }

    fn slot(&self, id: u64) -> Arc<RwLock<Option<ReplicaMeta>>> {
        let mut map = self.replicas.lock().expect("store lock");
        map.entry(id).or_insert_with(|| Replica { lock: Arc::new(RwLock::new(None)), version: 0 }).lock.clone()
    }

    /// The chunk's write lock. A delete or an aborted first write removes
    /// the slot while holding it, so a task that waited on a removed slot
    /// takes the current one instead of working on an orphan.
    async fn write_slot(&self, id: u64) -> OwnedRwLockWriteGuard<Option<ReplicaMeta>> {
        loop {
            let slot = self.slot(id);
            let guard = slot.clone().write_owned().await;
            let map = self.replicas.lock().expect("store lock");
            if map.get(&id).is_some_and(|r| Arc::ptr_eq(&r.lock, &slot)) {
                return guard;
            }
        }
    }

    fn existing_slot(&self, id: u64) -> Result<Arc<RwLock<Option<ReplicaMeta>>>, StoreError> {
        let map = self.replicas.lock().expect("store lock");
        map.get(&id).map(|r| r.lock.clone()).ok_or(StoreError::NotFound { chunk_id: id })
    }

    /// Refuses a fencing token older than the newest one seen for chunk `id`,
    /// and remembers a newer one.
    pub fn admit_token(&self, id: u64, token: u64) -> Result<(), StoreError> {
        let mut fences = self.fences.lock().expect("fences lock");
        let newest = fences.entry(id).or_insert(0);
        if token < *newest {
            return Err(StoreError::Fenced { chunk_id: id, token, newest: *newest });
        }
        *newest = token;
        Ok(())
    }

    fn account(&self, before: u64, after: u64) {
        if after > before {
            self.used_bytes.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.used_bytes.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Starts a write of chunk `id` at `version`, on top of committed version
    /// `base`: newer versions on this replica are rolled back first.
    pub async fn begin_write(self: &Arc<Self>, id: u64, version: u64, base: u64) -> Result<WriteSession, StoreError> {
        let mut guard = self.write_slot(id).await;
        if let Some(m) = guard.as_ref()
            && m.version > version
        {
            return Err(StoreError::OldVersion { chunk_id: id, got: version, have: m.version });
        }
        let dir = self.dir.clone();
        let current = guard.clone();
        let before_len = current.as_ref().map_or(0, |m| m.len);
        let (meta, file) = blocking(move || {
            let mut meta = current;
            // Roll back what was never committed, newest first.
            while let Some(m) = meta.as_ref().filter(|m| m.version > base) {
                let Some(newest) = m.undo.last().copied().filter(|v| *v == m.version) else { break };
                match undo::load(&dir, id, newest)? {
                    Some(u) => meta = roll_back(&dir, id, m.undo.clone(), &u)?,
                    None => break,
                }
            }
            // Records of committed versions are no longer needed.
            if let Some(m) = meta.as_mut() {
                for v in m.undo.iter().filter(|v| **v <= base) {
                    remove_if_present(&undo::undo_path(&dir, id, *v))?;
                }
                m.undo.retain(|v| *v > base);
            }
            // A write builds on the committed version: a replica that does not
            // hold exactly that (it missed a write, or lost the chunk) would
            // mix this write with old or missing bytes under valid checksums.
            if meta.as_ref().map_or(0, |m| m.version) != base {
                return Ok((meta, None));
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(data_path(&dir, id))
                .map_err(StoreError::from_io)?;
            Ok((meta, Some(file)))
        })
        .await?;
        let start_len = meta.as_ref().map_or(0, |m| m.len);
        self.account(before_len, start_len);
        let have = meta.as_ref().map_or(0, |m| m.version);
        self.note_version(id, have);
        *guard = meta;
        let Some(file) = file else {
            if guard.is_none() {
                self.replicas.lock().expect("store lock").remove(&id);
            }
            return Err(StoreError::MissingBase { chunk_id: id, have, base });
        };
        Ok(self.session(id, version, guard, file, start_len))
    }

    fn session(
        self: &Arc<Self>,
        id: u64,
        version: u64,
        guard: OwnedRwLockWriteGuard<Option<ReplicaMeta>>,
        file: File,
        start_len: u64,
    ) -> WriteSession {
        WriteSession {
            store: self.clone(),
            id,
            version,
            guard,
            file: Arc::new(file),
            start_len,
            len: start_len,
            touched: None,
            undo: None,
        }
    }

    /// Reads `[offset, offset + len)` of chunk `id` as of `version` (clamped
    /// to the replica's length then), verifying every block it touches.
    pub async fn read(&self, id: u64, offset: u64, len: u64, version: u64) -> Result<Bytes, StoreError> {
        let result = self.read_version(id, offset, len, version).await;
        if let Err(StoreError::Corrupt { .. }) = result {
            self.note_corrupt(id);
        }
        result
    }

    async fn read_version(&self, id: u64, offset: u64, len: u64, version: u64) -> Result<Bytes, StoreError> {
        let slot = self.existing_slot(id)?;
        let guard = slot.read_owned().await;
        let meta = guard.as_ref().ok_or(StoreError::NotFound { chunk_id: id })?.clone();
        if meta.version < version {
            return Err(StoreError::Stale { chunk_id: id, have: meta.version, want: version });
        }
        let dir = self.dir.clone();
        let data = blocking(move || {
            // The records to lay over the current bytes, newest first, down to `version`.
            let mut layers = Vec::new();
            let mut at = meta.version;
            while at > version {
                let u = match meta.undo.contains(&at) {
                    true => undo::load(&dir, id, at)?,
                    false => None,
                };
                let Some(u) = u else {
                    return Err(StoreError::Moved { chunk_id: id, have: meta.version, want: version });
                };
                at = u.old.as_ref().map_or(0, |m| m.version);
                layers.push(u);
            }
            if at != version {
                return Err(StoreError::Moved { chunk_id: id, have: meta.version, want: version });
            }
            let target_len = match layers.last() {
                Some(u) => u.old.as_ref().map_or(0, |m| m.len),
                None => meta.len,
            };
            let end = (offset.saturating_add(len)).min(target_len);
            if offset >= end {
                return Ok(Bytes::new());
            }
            let mut out = vec![0u8; (end - offset) as usize];
            let cur_end = end.min(meta.len);
            if offset < cur_end {
                let current = read_verified(&dir, id, &meta, offset, cur_end)?;
                out[..current.len()].copy_from_slice(&current);
            }
            for u in &layers {
                undo::overlay(&mut out, offset, u);
            }
            Ok(Bytes::from(out))
        })
        .await?;
        drop(guard);
        Ok(data)
    }

    /// Deletes the replica of chunk `id`, if this server has one.
    pub async fn delete(&self, id: u64) -> Result<(), StoreError> {
        if self.existing_slot(id).is_err() {
            return Ok(());
        }
        // The current lock: a slot removed while this waited belongs to nothing.
        let mut guard = self.write_slot(id).await;
        self.remove_replica(id, &mut guard).await?;
        self.replicas.lock().expect("store lock").remove(&id);
        Ok(())
    }

    /// Removes a replica's files (under its write lock) and forgets its meta.
    async fn remove_replica(&self, id: u64, guard: &mut Option<ReplicaMeta>) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        let undo = guard.as_ref().map(|m| m.undo.clone()).unwrap_or_default();
        blocking(move || {
            for v in undo {
                remove_if_present(&undo::undo_path(&dir, id, v))?;
            }
            remove_if_present(&meta_path(&dir, id))?;
            remove_if_present(&data_path(&dir, id))
        })
        .await?;
        if let Some(m) = guard.take() {
            self.used_bytes.fetch_sub(m.len, Ordering::Relaxed);
        }
        self.note_version(id, 0);
        self.corrupt.lock().expect("corrupt lock").remove(&id);
        self.fences.lock().expect("fences lock").remove(&id);
        Ok(())
    }

    /// Starts installing a copy of chunk `id` at committed `version`, in
    /// place of any copy this server has (which must not be newer). Finish
    /// it with [`WriteSession::finish_install`].
    pub async fn begin_install(self: &Arc<Self>, id: u64, version: u64) -> Result<WriteSession, StoreError> {
        let mut guard = self.write_slot(id).await;
        if let Some(m) = guard.as_ref()
            && m.version > version
        {
            return Err(StoreError::OldVersion { chunk_id: id, got: version, have: m.version });
        }
        self.remove_replica(id, &mut guard).await?;
        let dir = self.dir.clone();
        let file = blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(data_path(&dir, id))
                .map_err(StoreError::from_io)
        })
        .await?;
        Ok(self.session(id, version, guard, file, 0))
    }

    /// Re-verifies up to `count` blocks of replica `id` from block `first`
    /// against its checksums. Returns the first block not yet verified, or
    /// None when the replica has no more blocks.
    pub async fn scrub(&self, id: u64, first: u64, count: u64) -> Result<Option<u64>, StoreError> {
        let slot = self.existing_slot(id)?;
        let guard = slot.read_owned().await;
        let meta = guard.as_ref().ok_or(StoreError::NotFound { chunk_id: id })?.clone();
        let blocks = meta.crcs.len() as u64;
        if first >= blocks {
            return Ok(None);
        }
        let last = (first + count).min(blocks);
        let dir = self.dir.clone();
        let result = blocking(move || {
            let end = (last * BLOCK_SIZE_BYTES).min(meta.len);
            read_verified(&dir, id, &meta, first * BLOCK_SIZE_BYTES, end).map(|_| ())
        })
        .await;
        drop(guard);
        match result {
            Ok(()) => Ok((last < blocks).then_some(last)),
            Err(e) => {
                if let StoreError::Corrupt { .. } = e {
                    self.note_corrupt(id);
                }
                Err(e)
            }
        }
    }

    /// The directory holding the replica files.
    pub fn chunk_dir(&self) -> &Path {
        &self.dir
    }
}

/// Reads `[offset, end)` of the replica's current bytes, checking the
/// checksum of every block it touches.
fn read_verified(dir: &Path, id: u64, meta: &ReplicaMeta, offset: u64, end: u64) -> Result<Vec<u8>, StoreError> {
    let blocks = blocks_covering(offset, end - offset);
    // A replica whose data file is gone is as damaged as one that fails its checksum.
    let f = File::open(data_path(dir, id)).map_err(|e| match e.kind() {
        ErrorKind::NotFound => StoreError::Corrupt { chunk_id: id, block: blocks.start },
        _ => StoreError::Io(e),
    })?;
    let first = blocks.start * BLOCK_SIZE_BYTES;
    let last = (blocks.end * BLOCK_SIZE_BYTES).min(meta.len);
    let mut buf = vec![0u8; (last - first) as usize];
    f.read_exact_at(&mut buf, first).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => StoreError::Corrupt { chunk_id: id, block: blocks.start },
        _ => StoreError::Io(e),
    })?;
    for (i, block) in buf.chunks(BLOCK_SIZE_BYTES as usize).enumerate() {
        if crc32c(block) != meta.crcs[blocks.start as usize + i] {
            return Err(StoreError::Corrupt { chunk_id: id, block: blocks.start + i as u64 });
        }
    }
    buf.drain(..(offset - first) as usize);
    buf.truncate((end - offset) as usize);
    Ok(buf)
}

/// An open write on one replica; holds the chunk's write lock until it ends.
pub struct WriteSession {
    store: Arc<ChunkStore>,
    id: u64,
    version: u64,
    guard: OwnedRwLockWriteGuard<Option<ReplicaMeta>>,
    file: Arc<File>,
    start_len: u64,
    len: u64,
    /// Byte range written so far, as (start, end).
    touched: Option<(u64, u64)>,
    /// This version's undo record, made when first needed.
    undo: Option<Arc<Mutex<UndoWriter>>>,
}

impl WriteSession {
    /// This session's undo record, created (durably) on first use.
    async fn undo_record(&mut self) -> Result<Arc<Mutex<UndoWriter>>, StoreError> {
        if let Some(u) = &self.undo {
            return Ok(u.clone());
        }
        let (dir, id, version, old) = (self.store.dir.clone(), self.id, self.version, self.guard.clone());
        let w = blocking(move || UndoWriter::create(&dir, id, version, old.as_ref())).await?;
        let w = Arc::new(Mutex::new(w));
        self.undo = Some(w.clone());
        Ok(w)
    }

    /// Saves the bytes of `[offset, end)` that existed before the session.
    async fn save_old(&mut self, offset: u64, end: u64) -> Result<(), StoreError> {
        let end = end.min(self.start_len);
        if offset >= end {
            return Ok(());
        }
        let record = self.undo_record().await?;
        let file = self.file.clone();
        blocking(move || {
            let mut old = vec![0u8; (end - offset) as usize];
            file.read_exact_at(&mut old, offset)?;
            record.lock().expect("undo lock").append(offset, &old)
        })
        .await
    }

    /// Writes `data` at `offset` within the chunk.
    pub async fn write_at(&mut self, offset: u64, data: Bytes) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > self.store.chunk_size_max_bytes {
            return Err(StoreError::TooLarge { chunk_id: self.id, end });
        }
        if end > self.len {
            let need = end - self.len;
            let used = self.store.used_bytes.load(Ordering::Relaxed);
            if used + need > self.store.capacity_bytes {
                return Err(StoreError::NoSpace { need, used, capacity: self.store.capacity_bytes });
            }
        }
        self.save_old(offset, end).await?;
        let file = self.file.clone();
        blocking(move || file.write_all_at(&data, offset).map_err(StoreError::from_io)).await?;
        if end > self.len {
            self.store.used_bytes.fetch_add(end - self.len, Ordering::Relaxed);
            self.len = end;
        }
        self.touched = Some(match self.touched {
            Some((s, e)) => (s.min(offset), e.max(end)),
            None => (offset, end),
        });
        Ok(())
    }

    /// Makes the session durable at its version, or with `abort` undoes it.
    /// Returns the replica's version.
    pub async fn finish(mut self, truncate_to: Option<u64>, abort: bool) -> Result<u64, StoreError> {
        if abort {
            return self.abort().await;
        }
        let old = self.guard.clone();
        let len = truncate_to.unwrap_or(self.len);
        if len > self.store.chunk_size_max_bytes {
            // A cut to past the largest chunk is nonsense: undo the session.
            let chunk_id = self.id;
            self.abort().await?;
            return Err(StoreError::TooLarge { chunk_id, end: len });
        }
        if len < self.len {
            self.save_old(len, self.len).await?;
        }
        // The record must be durable before the new meta names this version.
        self.undo_record().await?;
        let mut crcs = old.as_ref().map(|m| m.crcs.clone()).unwrap_or_default();
        // The blocks whose checksums must be recomputed: those written, the
        // block a truncation cuts through, and any blocks the replica grew by.
        let mut dirty: Vec<std::ops::Range<u64>> = Vec::new();
        if let Some((s, e)) = self.touched {
            dirty.push(blocks_covering(s, e - s));
        }
        if len != self.len || len != self.start_len {
            let from = len.min(self.start_len);
            dirty.push(from / BLOCK_SIZE_BYTES..len.div_ceil(BLOCK_SIZE_BYTES));
        }
        let nblocks = len.div_ceil(BLOCK_SIZE_BYTES);
        let first_dirty = dirty.iter().map(|r| r.start).min().unwrap_or(nblocks).min(nblocks);
        let last_dirty = dirty.iter().map(|r| r.end).max().unwrap_or(0).min(nblocks);
        let file = self.file.clone();
        let dir = self.store.dir.clone();
        let (id, version, prev_len) = (self.id, self.version, self.len);
        let mut undo = old.as_ref().map(|m| m.undo.clone()).unwrap_or_default();
        undo.push(version);
        let meta = blocking(move || {
            if len != prev_len {
                file.set_len(len).map_err(StoreError::from_io)?;
            }
            file.sync_all().map_err(StoreError::from_io)?;
            crcs.resize(nblocks as usize, 0);
            if first_dirty < last_dirty {
                let fresh = crcs_from_file(&file, len, first_dirty..last_dirty)?;
                crcs[first_dirty as usize..last_dirty as usize].copy_from_slice(&fresh);
            }
            let meta = ReplicaMeta { version, len, crcs, undo };
            write_meta(&dir, id, &meta)?;
            Ok(meta)
        })
        .await?;
        self.store.account(self.len, len);
        *self.guard = Some(meta);
        self.store.note_version(self.id, version);
        Ok(version)
    }

    /// Ends an install: the replica gets its meta only if the checksums of
    /// its blocks on disk are `expected` (those of the bytes received).
    pub async fn finish_install(self, expected: Vec<u32>) -> Result<u64, StoreError> {
        let (file, len, id) = (self.file.clone(), self.len, self.id);
        let on_disk = blocking(move || {
            file.sync_all().map_err(StoreError::from_io)?;
            crcs_from_file(&file, len, 0..len.div_ceil(BLOCK_SIZE_BYTES))
        })
        .await;
        match on_disk {
            Ok(crcs) if crcs == expected => self.finish(None, false).await,
            Ok(crcs) => {
                let block =
                    crcs.iter().zip(&expected).position(|(a, b)| a != b).unwrap_or(crcs.len().min(expected.len()));
                self.abort().await?;
                Err(StoreError::Corrupt { chunk_id: id, block: block as u64 })
            }
            Err(e) => {
                self.abort().await?;
                Err(e)
            }
        }
    }

    /// Puts the replica back exactly as it was before the session.
    async fn abort(mut self) -> Result<u64, StoreError> {
        let old = self.guard.clone();
        let (dir, id, version, file) = (self.store.dir.clone(), self.id, self.version, self.file.clone());
        let had_record = self.undo.take().is_some();
        blocking(move || {
            match undo::load(&dir, id, version)?.filter(|_| had_record) {
                Some(u) => undo::restore(&file, &u)?,
                None => {
                    file.set_len(old.as_ref().map_or(0, |m| m.len)).map_err(StoreError::from_io)?;
                    file.sync_all().map_err(StoreError::from_io)?;
                }
            }
            if old.is_none() {
                remove_if_present(&data_path(&dir, id))?;
            }
            remove_if_present(&undo::undo_path(&dir, id, version))
        })
        .await?;
        self.store.account(self.len, self.start_len);
        if self.guard.is_none() {
            self.store.replicas.lock().expect("store lock").remove(&self.id);
        }
        Ok(self.guard.as_ref().map_or(0, |m| m.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(cap: u64) -> (tempfile::TempDir, Arc<ChunkStore>) {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(ChunkStore::open(d.path(), cap, 4 << 20).unwrap());
        (d, s)
    }

    #[test]
    fn meta_round_trip_and_damage() {
        let m = ReplicaMeta { version: 7, len: 70000, crcs: vec![1, 2], undo: Vec::new() };
        let mut b = m.encode();
        assert_eq!(ReplicaMeta::decode(&b), Some(m));
        b[10] ^= 1;
        assert_eq!(ReplicaMeta::decode(&b), None);
    }

    #[tokio::test]
    async fn write_read_overwrite_truncate() {
        let (d, s) = store(u64::MAX).await;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = s.begin_write(1, 1, 0).await.unwrap();
        w.write_at(0, Bytes::from(data.clone())).await.unwrap();
        assert_eq!(w.finish(None, false).await.unwrap(), 1);
        assert_eq!(s.read(1, 100, 1000, 1).await.unwrap(), &data[100..1100]);
        // Overwrite across a block boundary.
        let mut w = s.begin_write(1, 2, 1).await.unwrap();
        w.write_at(65530, Bytes::from_static(b"0123456789")).await.unwrap();
        w.finish(None, false).await.unwrap();
        let mut want = data.clone();
        want[65530..65540].copy_from_slice(b"0123456789");
        assert_eq!(s.read(1, 0, 300_000, 2).await.unwrap(), &want[..]);
        // Truncate, then reopen from disk.
        let w = s.begin_write(1, 3, 2).await.unwrap();
        w.finish(Some(70_000), false).await.unwrap();
        assert_eq!(s.used_bytes(), 70_000);
        drop(s);
        let s = ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap();
        assert_eq!(s.read(1, 0, u64::MAX, 3).await.unwrap(), &want[..70_000]);
        assert!(matches!(s.read(1, 0, 1, 4).await, Err(StoreError::Stale { have: 3, want: 4, .. })));
    }

    #[tokio::test]
    async fn old_versions_and_quota_are_refused() {
        let (_d, s) = store(100_000).await;
        let mut w = s.begin_write(1, 5, 0).await.unwrap();
        w.write_at(0, Bytes::from(vec![1u8; 1000])).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert!(matches!(s.begin_write(1, 4, 0).await, Err(StoreError::OldVersion { .. })));
        let mut w = s.begin_write(2, 1, 0).await.unwrap();
        assert!(matches!(w.write_at(0, Bytes::from(vec![1u8; 100_000])).await, Err(StoreError::NoSpace { .. })));
        w.finish(None, true).await.unwrap();
        assert_eq!(s.chunk_count(), 1, "an aborted empty write leaves nothing");
    }

    #[tokio::test]
    async fn flipped_byte_is_detected() {
        let (d, s) = store(u64::MAX).await;
        let mut w = s.begin_write(9, 1, 0).await.unwrap();
        w.write_at(0, Bytes::from(vec![7u8; 150_000])).await.unwrap();
        w.finish(None, false).await.unwrap();
        let path = data_path(&d.path().join("chunks"), 9);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[70_000] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(s.read(9, 0, 10, 1).await.is_ok(), "block 0 is intact");
        assert!(matches!(s.read(9, 69_000, 2000, 1).await, Err(StoreError::Corrupt { block: 1, .. })));
    }

    #[tokio::test]
    async fn delete_frees_space() {
        let (_d, s) = store(u64::MAX).await;
        let mut w = s.begin_write(3, 1, 0).await.unwrap();
        w.write_at(10, Bytes::from(vec![1u8; 10])).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert_eq!(s.read(3, 0, 20, 1).await.unwrap()[..10], [0u8; 10], "the gap reads as zeros");
        s.delete(3).await.unwrap();
        assert_eq!(s.used_bytes(), 0);
        assert!(matches!(s.read(3, 0, 1, 0).await, Err(StoreError::NotFound { .. })));
    }

    fn original() -> Vec<u8> {
        (0..100_000u32).map(|i| (i % 253) as u8).collect()
    }

    /// A replica with `original()` committed at version 1.
    async fn committed_v1() -> (tempfile::TempDir, Arc<ChunkStore>) {
        let (d, s) = store(u64::MAX).await;
        let mut w = s.begin_write(1, 1, 0).await.unwrap();
        w.write_at(0, Bytes::from(original())).await.unwrap();
        w.finish(None, false).await.unwrap();
        (d, s)
    }

    fn undo_files(d: &tempfile::TempDir) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.path().join("chunks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains(".undo."))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn uncommitted_versions_stay_invisible_and_roll_back() {
        let (d, s) = committed_v1().await;
        // Version 2 overwrites and grows; meta never commits it.
        let mut w = s.begin_write(1, 2, 1).await.unwrap();
        w.write_at(1000, Bytes::from(vec![b'b'; 1000])).await.unwrap();
        w.write_at(100_000, Bytes::from(vec![b'g'; 20_000])).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original(), "version 1 is still served");
        assert_eq!(s.read(1, 1500, 10, 2).await.unwrap(), vec![b'b'; 10]);
        // Version 3 builds on committed version 1: version 2 is rolled back first.
        let mut w = s.begin_write(1, 3, 1).await.unwrap();
        w.write_at(5000, Bytes::from(vec![b'c'; 10])).await.unwrap();
        w.finish(None, false).await.unwrap();
        let mut want = original();
        want[5000..5010].fill(b'c');
        assert_eq!(s.read(1, 0, u64::MAX, 3).await.unwrap(), want);
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original());
        assert!(matches!(s.read(1, 0, 1, 2).await, Err(StoreError::Moved { have: 3, want: 2, .. })));
        assert_eq!(s.used_bytes(), 100_000, "the growth of version 2 is gone");
        // Version 4 on base 3: the records up to 3 are no longer needed.
        let w = s.begin_write(1, 4, 3).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert_eq!(undo_files(&d), vec!["0000000000000001.undo.0000000000000004".to_string()]);
        assert!(matches!(s.read(1, 0, 1, 1).await, Err(StoreError::Moved { .. })));
        // The records survive a restart.
        drop(s);
        let s = ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap();
        assert_eq!(s.read(1, 0, u64::MAX, 3).await.unwrap(), want);
    }

    /// Regression (review): a replica that missed a write, or lost the chunk,
    /// used to take the next write on top of old or missing bytes, with valid
    /// checksums over them.
    #[tokio::test]
    async fn a_write_on_a_base_the_replica_lacks_is_refused() {
        let (d, s) = committed_v1().await;
        assert!(matches!(s.begin_write(1, 3, 2).await, Err(StoreError::MissingBase { have: 1, base: 2, .. })));
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original(), "nothing changed");
        assert!(matches!(s.begin_write(7, 4, 3).await, Err(StoreError::MissingBase { have: 0, base: 3, .. })));
        assert!(!d.path().join("chunks").join(format!("{:016x}.data", 7)).exists(), "no empty replica was made");
        assert_eq!(s.chunk_count(), 1);
    }

    /// Bad input from the network gets a clear error and changes nothing.
    #[tokio::test]
    async fn absurd_offsets_and_cuts_are_refused() {
        let (d, s) = committed_v1().await;
        let mut w = s.begin_write(1, 2, 1).await.unwrap();
        assert!(matches!(w.write_at(u64::MAX - 1, Bytes::from_static(b"xyz")).await, Err(StoreError::TooLarge { .. })));
        w.write_at(0, Bytes::from_static(b"xyz")).await.unwrap();
        assert!(matches!(w.finish(Some(u64::MAX), false).await, Err(StoreError::TooLarge { .. })));
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original(), "the session was undone");
        // A replica whose data file vanished reads as corrupt, not as an internal error.
        std::fs::remove_file(data_path(&d.path().join("chunks"), 1)).unwrap();
        assert!(matches!(s.read(1, 0, 10, 1).await, Err(StoreError::Corrupt { .. })));
    }

    #[tokio::test]
    async fn an_aborted_write_leaves_no_trace() {
        let (d, s) = committed_v1().await;
        let mut w = s.begin_write(1, 2, 1).await.unwrap();
        w.write_at(90_000, Bytes::from(vec![b'x'; 30_000])).await.unwrap();
        assert_eq!(w.finish(None, true).await.unwrap(), 1);
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original());
        assert_eq!(s.used_bytes(), 100_000);
        assert!(undo_files(&d).iter().all(|f| !f.ends_with("0002")), "{:?}", undo_files(&d));
        // A first write that aborts leaves no replica at all.
        let mut w = s.begin_write(2, 1, 0).await.unwrap();
        w.write_at(0, Bytes::from(vec![1u8; 10])).await.unwrap();
        w.finish(None, true).await.unwrap();
        assert_eq!(s.chunk_count(), 1);
    }

    #[tokio::test]
    async fn a_write_cut_short_by_a_crash_is_undone_on_open() {
        let (d, s) = committed_v1().await;
        let mut w = s.begin_write(1, 2, 1).await.unwrap();
        w.write_at(10, Bytes::from(vec![b'z'; 70_000])).await.unwrap();
        w.write_at(100_000, Bytes::from(vec![b'z'; 5000])).await.unwrap();
        // The process dies here: no finish.
        drop(w);
        drop(s);
        let s = ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap();
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original());
        assert_eq!(s.used_bytes(), 100_000);
        assert!(undo_files(&d).iter().all(|f| !f.ends_with("0002")));
    }

    #[tokio::test]
    async fn an_install_replaces_an_older_copy_and_checks_what_it_received() {
        let (d, s) = committed_v1().await;
        assert!(matches!(s.begin_install(1, 0).await, Err(StoreError::OldVersion { have: 1, .. })));
        let data = vec![9u8; 70_000];
        let mut w = s.begin_install(1, 3).await.unwrap();
        w.write_at(0, Bytes::from(data.clone())).await.unwrap();
        w.finish_install(shoal_core::checksum::block_crcs(&data)).await.unwrap();
        assert_eq!(s.read(1, 0, u64::MAX, 3).await.unwrap(), data);
        assert_eq!((s.list(), s.used_bytes()), (vec![(1, 3)], 70_000));
        // What reached the disk is not what was received: no replica is left.
        let mut w = s.begin_install(2, 1).await.unwrap();
        w.write_at(0, Bytes::from(data.clone())).await.unwrap();
        assert!(matches!(w.finish_install(vec![0, 0]).await, Err(StoreError::Corrupt { chunk_id: 2, block: 0 })));
        assert_eq!((s.list(), s.used_bytes()), (vec![(1, 3)], 70_000));
        assert!(!d.path().join("chunks").join(format!("{:016x}.data", 2)).exists());
    }

    #[tokio::test]
    async fn a_truncation_rolls_back_whole() {
        let (_d, s) = committed_v1().await;
        let w = s.begin_write(1, 2, 1).await.unwrap();
        w.finish(Some(10), false).await.unwrap();
        assert_eq!(s.read(1, 0, u64::MAX, 2).await.unwrap(), &original()[..10]);
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original(), "version 1 is served from the undo record");
        let w = s.begin_write(1, 3, 1).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert_eq!(s.read(1, 0, u64::MAX, 3).await.unwrap(), original());
    }
}
