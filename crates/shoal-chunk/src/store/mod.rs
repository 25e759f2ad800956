//! Chunk replicas on local disk, checksummed.
//!
//! Each replica is a data file and a `.meta` file under `DIR/chunks/` (see
//! [`crate::format`]), plus `<id>.undo.<version>`: what the write of that
//! version replaced (see [`crate::undo`]), kept until the version is known
//! committed.
//!
//! Submodules: [`files`] (IO on one replica's files and the one rollback
//! function), [`recovery`] (what happens at open), [`session`] (a write
//! session), [`space`] (used bytes against the capacity) and [`spare`] (the
//! directory, whose removed files are kept as spare inodes for new ones). Layers go one
//! way: `format` ← `undo` ← `store`.
//!
//! # Write protocol (one write session of version V on base B)
//! 1. Take the chunk's write lock; refuse a version older than the replica's.
//! 2. Roll back every version newer than B (the committed version the writer
//!    built on): meta can never commit them any more. Forget the undo records
//!    of versions up to B: those are committed. On B = 0 that means removing
//!    the replica whole (meta first, then data and records, then a directory
//!    fsync), record or not.
//! 3. Write the data at its offsets (growth reserved within the capacity). Bytes
//!    that existed before the session are first saved in V's undo record. A
//!    session that creates the replica makes no record: it has nothing to
//!    save, and its rollback is the removal in step 2 or in `files::roll_back`.
//! 4. On finish: save what a truncation cuts, make the undo record durable,
//!    cut to `truncate_to` if asked, recompute the checksums of every touched
//!    block, fsync the data while the new meta (version V) is written to
//!    its temporary file and fsynced beside it, and only once both are
//!    durable rename it over the old meta (then a directory fsync). Only
//!    then does the caller ack.
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
//! - A first write (no record) crashed at any step leaves no meta without its
//!   data: until the meta's rename is durable there is no meta and the open
//!   removes the data; the directory fsync that makes the rename durable comes
//!   after the data's fsync and before the ack. If a crash loses the data's
//!   entry but keeps the renamed meta, that write never acked (so it is not
//!   committed) and the replica reads as corrupt, never as other bytes; the
//!   next write on base 0 removes it. See docs/formats.md.
//! - `used_bytes` is the sum of data-file lengths (with the growth of open
//!   sessions). Growth, by a write or by a cut past the end, is reserved
//!   atomically before it is made and refused past the capacity (see
//!   [`space`]); only a rollback may take `used_bytes` past it.
//! - Readers take the chunk's read lock, writers its write lock.
//! - A session's version is past its base and past the replica's version;
//!   the undo stack is strictly ascending and never past the replica's
//!   version; every record leads to an older version; a meta has one
//!   checksum per block of its length; used bytes never go below zero.
//!   These are asserted where they are made or relied on (`assert!` where a
//!   breach would reach the disk or loop, `debug_assert!` for the rest): a
//!   server with a broken invariant stops rather than write a meta that
//!   lies about its data. Input from the network is refused with an error
//!   instead (`BadVersion`, `TooLarge`).

mod files;
mod recovery;
mod session;
mod space;
mod spare;

use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shoal_core::checksum::BLOCK_SIZE_BYTES;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

pub use crate::format::ReplicaMeta;
use crate::format::{data_path, meta_path};
use crate::metric_names;
use crate::undo;
use files::{read_verified, roll_back};
pub use session::WriteSession;
use space::Space;
use spare::Disk;

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
    #[error("write to chunk {chunk_id} carries version {version}, not newer than the version {base} it builds on")]
    BadVersion { chunk_id: u64, version: u64, base: u64 },
    #[error("chunk {chunk_id} block {block} failed its checksum")]
    Corrupt { chunk_id: u64, block: u64 },
    #[error("no space: writing {need} bytes would exceed the capacity of {capacity} bytes ({used} used)")]
    NoSpace { need: u64, used: u64, capacity: u64 },
    #[error("disk full: {0}")]
    DiskFull(std::io::Error),
    #[error("chunk {chunk_id} would grow past the chunk size limit: end offset {end}")]
    TooLarge { chunk_id: u64, end: u64 },
    #[error("storage error: {0}")]
    Io(std::io::Error),
    #[error("{}: format {found} is newer than this build of shoal reads (up to {known}); run a newer shoal", path.display())]
    NewerFormat { path: std::path::PathBuf, found: u32, known: u32 },
}

impl From<std::io::Error> for StoreError {
    /// ENOSPC and EDQUOT mean the disk (or the user's quota) is full; any
    /// other IO error is a storage failure.
    fn from(e: std::io::Error) -> StoreError {
        if e.kind() == ErrorKind::StorageFull || e.kind() == ErrorKind::QuotaExceeded {
            StoreError::DiskFull(e)
        } else {
            StoreError::Io(e)
        }
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
    dir: Arc<Disk>,
    chunk_size_max_bytes: u64,
    space: Space,
    replicas: Mutex<HashMap<u64, Replica>>,
    /// The newest fencing token a write to each chunk carried (in memory:
    /// after a restart meta's own check still fences stale writers).
    fences: Mutex<HashMap<u64, u64>>,
    /// Replicas that failed a checksum, until deleted or replaced.
    corrupt: Mutex<BTreeSet<u64>>,
    /// Bytes served and written since the store opened (heartbeats carry
    /// them, so meta and the dashboard can tell each server's rates).
    read_bytes: std::sync::atomic::AtomicU64,
    written_bytes: std::sync::atomic::AtomicU64,
}

/// Reads up to this long run on the calling worker (see [`short_read`]).
const SHORT_READ_BYTES_MAX: u64 = 2 * BLOCK_SIZE_BYTES;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Io(std::io::Error::other(e)))?
}

/// Runs a short read (a few blocks, most likely in the page cache) on this
/// worker thread when the runtime can hand the worker's other tasks to
/// another thread meanwhile; else like [`blocking`]. Saves the two thread
/// switches of a hop to the blocking pool and back.
async fn short_read<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => blocking(f).await,
    }
}

impl ChunkStore {
    /// Opens the store under `dir/chunks`, loading every replica's meta and
    /// undoing writes that a crash interrupted (see [`recovery`]). A replica
    /// whose meta is unreadable is set aside as `*.bad`.
    pub fn open(dir: &Path, capacity_bytes: u64, chunk_size_max_bytes: u64) -> Result<ChunkStore, StoreError> {
        let dir = Arc::new(Disk::open(dir)?);
        let recovered = recovery::recover_dir(&dir)?;
        let used = recovered.values().map(|m| m.len).sum();
        let replicas = recovered
            .into_iter()
            .map(|(id, meta)| {
                let version = meta.version;
                (id, Replica { lock: Arc::new(RwLock::new(Some(meta))), version })
            })
            .collect();
        Ok(ChunkStore {
            dir,
            chunk_size_max_bytes,
            space: Space::new(capacity_bytes, used),
            replicas: Mutex::new(replicas),
            fences: Mutex::default(),
            corrupt: Mutex::default(),
            read_bytes: Default::default(),
            written_bytes: Default::default(),
        })
    }

    /// Bytes read (served) and written since the store opened.
    pub fn io_totals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.read_bytes.load(Relaxed), self.written_bytes.load(Relaxed))
    }

    pub fn used_bytes(&self) -> u64 {
        self.space.used()
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
        metrics::counter!(metric_names::CHECKSUM_FAILURES_TOTAL).increment(1);
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

    /// Starts a write of chunk `id` at `version`, on top of committed version
    /// `base`: newer versions on this replica are rolled back first.
    pub async fn begin_write(self: &Arc<Self>, id: u64, version: u64, base: u64) -> Result<WriteSession, StoreError> {
        // Meta always grants a version past the base. Anything else (from the
        // network) would rewrite the committed version in place.
        if version <= base {
            return Err(StoreError::BadVersion { chunk_id: id, version, base });
        }
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
            // Base 0: no version of the chunk was ever committed, so every
            // version here is uncommitted and rolling them all back leaves
            // nothing. Remove the replica outright: a brand-new replica has
            // no undo record to roll back with (see `session`).
            if base == 0
                && let Some(m) = meta.take()
            {
                remove_replica_files(&dir, id, &m.undo)?;
                dir.sync()?;
            }
            // Roll back what was never committed, newest first.
            while let Some(m) = meta.as_ref().filter(|m| m.version > base) {
                let Some(newest) = m.undo.last().copied().filter(|v| *v == m.version) else { break };
                match undo::load(&dir, id, newest)? {
                    Some(u) => meta = roll_back(&dir, id, &m.undo, &u)?,
                    None => break,
                }
            }
            // Records of committed versions are no longer needed.
            if let Some(m) = meta.as_mut() {
                for v in m.undo.iter().filter(|v| **v <= base) {
                    dir.remove(&undo::undo_path(&dir, id, *v))?;
                }
                m.undo.retain(|v| *v > base);
                // Every record left is of a version past the base, and none is
                // past the replica's own version: so a replica at the base has
                // none left.
                m.assert_valid();
            }
            // A write builds on the committed version: a replica that does not
            // hold exactly that (it missed a write, or lost the chunk) would
            // mix this write with old or missing bytes under valid checksums.
            if meta.as_ref().map_or(0, |m| m.version) != base {
                return Ok((meta, None));
            }
            // A new replica's data file may be a spare inode (see `spare`);
            // the bytes of an existing one are kept.
            let file = match meta {
                None => dir.create(&data_path(&dir, id))?,
                Some(_) => std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(data_path(&dir, id))?,
            };
            Ok((meta, Some(file)))
        })
        .await?;
        let start_len = meta.as_ref().map_or(0, |m| m.len);
        self.space.account(before_len, start_len);
        let have = meta.as_ref().map_or(0, |m| m.version);
        self.note_version(id, have);
        *guard = meta;
        let Some(file) = file else {
            if guard.is_none() {
                self.replicas.lock().expect("store lock").remove(&id);
            }
            return Err(StoreError::MissingBase { chunk_id: id, have, base });
        };
        Ok(WriteSession::new(self.clone(), id, version, guard, file, start_len))
    }

    /// Reads `[offset, offset + len)` of chunk `id` as of `version` (clamped
    /// to the replica's length then), verifying every block it touches.
    pub async fn read(&self, id: u64, offset: u64, len: u64, version: u64) -> Result<Bytes, StoreError> {
        let started = std::time::Instant::now();
        let result = self.read_version(id, offset, len, version).await;
        match &result {
            Ok(bytes) => {
                metrics::histogram!(metric_names::READ_SECONDS).record(started.elapsed().as_secs_f64());
                metrics::counter!(metric_names::READ_BYTES_TOTAL).increment(bytes.len() as u64);
                self.read_bytes.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
            }
            Err(StoreError::Corrupt { .. }) => self.note_corrupt(id),
            Err(_) => {}
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
        let read = move || {
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
                let before = u.old.as_ref().map_or(0, |m| m.version);
                // A record always leads to an older version; anything else would loop.
                assert!(before < at, "undo record of chunk {id} version {at} leads to version {before}");
                at = before;
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
        };
        let data = match len <= SHORT_READ_BYTES_MAX {
            true => short_read(read).await?,
            false => blocking(read).await?,
        };
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
        blocking(move || remove_replica_files(&dir, id, &undo)).await?;
        if let Some(m) = guard.take() {
            self.space.account(m.len, 0);
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
        // The old copy's removal is made durable first: a crash must not
        // bring back its `.meta` beside a data file made from a spare.
        let file = blocking(move || {
            dir.sync()?;
            Ok(dir.create(&data_path(&dir, id))?)
        })
        .await?;
        Ok(WriteSession::new(self.clone(), id, version, guard, file, 0))
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

    /// Checks that `used_bytes` is the sum of the replicas' lengths. Only
    /// when no session is open: an open session's growth has no meta yet.
    #[cfg(test)]
    fn assert_accounting(&self) {
        let map = self.replicas.lock().expect("store lock");
        let sum: u64 =
            map.values().map(|r| r.lock.try_read().expect("no session is open").as_ref().map_or(0, |m| m.len)).sum();
        assert_eq!(self.space.used(), sum, "used bytes against the sum of replica lengths");
    }

    /// Spare inodes kept for the next files made, ready or pending (see
    /// [`spare`]).
    pub fn spare_files(&self) -> usize {
        self.dir.spares()
    }

    /// The directory holding the replica files.
    pub fn chunk_dir(&self) -> &Path {
        &self.dir
    }
}

/// Removes a replica's files: meta first, so a crash part-way leaves a
/// data file or records without a meta, which the next open removes.
fn remove_replica_files(dir: &Disk, id: u64, undo: &[u64]) -> Result<(), StoreError> {
    dir.remove(&meta_path(dir, id))?;
    dir.remove(&data_path(dir, id))?;
    for v in undo {
        dir.remove(&undo::undo_path(dir, id, *v))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store(cap: u64) -> (tempfile::TempDir, Arc<ChunkStore>) {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(ChunkStore::open(d.path(), cap, 4 << 20).unwrap());
        (d, s)
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

    /// Regression: `write_at` checked the capacity, awaited its IO, and only
    /// then added its growth, so concurrent writes all passed the check and
    /// together went past the capacity.
    #[tokio::test]
    async fn concurrent_writes_never_exceed_the_capacity() {
        let (_d, s) = store(100_008).await;
        // Eight replicas of one byte each: the writes below overwrite it, so
        // each first makes its undo record durable (an fsync), and every
        // write is checked while the others are still in flight.
        for id in 1..=8 {
            let mut w = s.begin_write(id, 1, 0).await.unwrap();
            w.write_at(0, Bytes::from_static(b"x")).await.unwrap();
            w.finish(None, false).await.unwrap();
        }
        let mut sessions = Vec::new();
        for id in 1..=8 {
            sessions.push(s.begin_write(id, 2, 1).await.unwrap());
        }
        let writes = sessions.iter_mut().map(|w| w.write_at(0, Bytes::from(vec![1u8; 30_000])));
        let results = futures::future::join_all(writes).await;
        assert!(s.used_bytes() <= 100_008, "{} bytes used of 100008", s.used_bytes());
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3, "{results:?}");
        assert!(results.iter().all(|r| matches!(r, Ok(()) | Err(StoreError::NoSpace { .. }))), "{results:?}");
        for (w, r) in sessions.into_iter().zip(&results) {
            w.finish(None, r.is_err()).await.unwrap();
        }
        assert_eq!(s.used_bytes(), 3 * 30_000 + 5);
        s.assert_accounting();
    }

    /// Regression: growth through `truncate_to` was never checked against
    /// the capacity.
    #[tokio::test]
    async fn a_cut_that_grows_past_the_capacity_is_refused_and_changes_nothing() {
        let (d, s) = committed_v1_with(150_000).await;
        let w = s.begin_write(1, 2, 1).await.unwrap();
        assert!(matches!(w.finish(Some(200_000), false).await, Err(StoreError::NoSpace { need: 100_000, .. })));
        assert_eq!((s.list(), s.used_bytes()), (vec![(1, 1)], 100_000));
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original());
        assert_eq!(std::fs::metadata(data_path(&d.path().join("chunks"), 1)).unwrap().len(), 100_000);
        assert!(undo_files(&d).is_empty(), "{:?}", undo_files(&d));
        // Growth that fits is made.
        let w = s.begin_write(1, 3, 1).await.unwrap();
        w.finish(Some(150_000), false).await.unwrap();
        assert_eq!(s.used_bytes(), 150_000);
        let mut want = original();
        want.resize(150_000, 0);
        assert_eq!(s.read(1, 0, u64::MAX, 3).await.unwrap(), want);
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

    #[tokio::test]
    async fn removed_replica_files_are_reused_for_new_ones_and_read_back_right() {
        use std::os::unix::fs::MetadataExt;
        let (d, s) = store(u64::MAX).await;
        let ino = |name: &str| std::fs::metadata(d.path().join("chunks").join(name)).unwrap().ino();
        let mut w = s.begin_write(3, 1, 0).await.unwrap();
        w.write_at(0, Bytes::from(vec![7u8; 200_000])).await.unwrap();
        w.finish(None, false).await.unwrap();
        let (data3, meta3) = (ino("0000000000000003.data"), ino("0000000000000003.meta"));
        // An overwrite replaces the meta by a rename: the inode it frees is kept.
        let mut w = s.begin_write(3, 2, 1).await.unwrap();
        w.write_at(0, Bytes::from(vec![8u8; 10])).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert_eq!(s.spare_files(), 1, "the old meta");
        s.delete(3).await.unwrap();
        // Data, meta and the overwrite's undo record (version 2 is not known committed).
        assert_eq!(s.spare_files(), 4);
        let spare: Vec<u64> = std::fs::read_dir(d.path().join("spare"))
            .unwrap()
            .map(|e| {
                let m = e.unwrap().metadata().unwrap();
                assert_eq!(m.len(), 0, "a spare holds nothing");
                m.ino()
            })
            .collect();
        assert!(spare.contains(&data3) && spare.contains(&meta3), "{spare:?}");
        assert_eq!(s.used_bytes(), 0);
        // A new replica is made of spares, and holds exactly what was written.
        let mut w = s.begin_write(4, 1, 0).await.unwrap();
        w.write_at(0, Bytes::from(vec![9u8; 5])).await.unwrap();
        w.finish(None, false).await.unwrap();
        // Its data file is the one ready spare (the meta the overwrite
        // replaced); the three files the delete removed were pending until
        // this write's directory sync.
        assert_eq!(ino("0000000000000004.data"), meta3);
        assert_eq!(s.spare_files(), 3);
        assert_eq!(s.read(4, 0, u64::MAX, 1).await.unwrap(), vec![9u8; 5]);
        assert_eq!(std::fs::metadata(d.path().join("chunks/0000000000000004.data")).unwrap().len(), 5);
        s.assert_accounting();
        // And a reopened store sees the same replica and the same spares.
        drop(s);
        let s = ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap();
        assert_eq!(s.list(), vec![(4, 1)]);
        assert_eq!(s.spare_files(), 3);
    }

    fn original() -> Vec<u8> {
        (0..100_000u32).map(|i| (i % 253) as u8).collect()
    }

    /// A replica with `original()` committed at version 1.
    async fn committed_v1() -> (tempfile::TempDir, Arc<ChunkStore>) {
        committed_v1_with(u64::MAX).await
    }

    /// The same, on a store of `capacity` bytes.
    async fn committed_v1_with(capacity: u64) -> (tempfile::TempDir, Arc<ChunkStore>) {
        let (d, s) = store(capacity).await;
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

    /// Regression: a header whose version was not past its base (only bad
    /// input sends one) opened a session that rewrote the committed version
    /// in place, with a record of it as if it were uncommitted.
    #[tokio::test]
    async fn a_version_not_past_its_base_is_refused() {
        let (d, s) = committed_v1().await;
        let records = undo_files(&d);
        assert!(matches!(s.begin_write(1, 1, 1).await, Err(StoreError::BadVersion { version: 1, base: 1, .. })));
        assert!(matches!(s.begin_write(1, 2, 3).await, Err(StoreError::BadVersion { .. })));
        assert_eq!((s.list(), s.read(1, 0, u64::MAX, 1).await.unwrap().to_vec()), (vec![(1, 1)], original()));
        assert_eq!(undo_files(&d), records);
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
        // The process dies here: no finish, and no rollback on drop either.
        std::mem::forget(w);
        drop(s);
        let s = ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap();
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original());
        assert_eq!(s.used_bytes(), 100_000);
        assert!(undo_files(&d).iter().all(|f| !f.ends_with("0002")));
    }

    /// Regression: a session dropped without `finish` (a cancelled task)
    /// left its bytes written under the old checksums, so the replica read as
    /// corrupt until a restart rolled it back.
    #[tokio::test]
    async fn a_dropped_session_is_rolled_back_at_once() {
        let (d, s) = committed_v1().await;
        let mut w = s.begin_write(1, 2, 1).await.unwrap();
        w.write_at(10, Bytes::from(vec![b'z'; 70_000])).await.unwrap();
        w.write_at(100_000, Bytes::from(vec![b'z'; 5000])).await.unwrap();
        drop(w);
        // The read waits for the chunk's lock, which the rollback holds.
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original(), "version 1 is intact and verifies");
        assert!(s.corrupt_ids().is_empty());
        assert_eq!((s.list(), s.used_bytes()), (vec![(1, 1)], 100_000));
        assert!(undo_files(&d).is_empty(), "{:?}", undo_files(&d));
        // A dropped first write leaves no replica.
        let mut w = s.begin_write(2, 1, 0).await.unwrap();
        w.write_at(0, Bytes::from(vec![1u8; 10])).await.unwrap();
        drop(w);
        assert!(matches!(s.read(2, 0, 1, 1).await, Err(StoreError::NotFound { .. })));
        assert_eq!(s.chunk_count(), 1);
        assert!(!data_path(&d.path().join("chunks"), 2).exists());
        s.assert_accounting();
        // The next write builds on version 1 as usual.
        let mut w = s.begin_write(1, 3, 1).await.unwrap();
        w.write_at(0, Bytes::from_static(b"abc")).await.unwrap();
        w.finish(None, false).await.unwrap();
        let mut want = original();
        want[..3].copy_from_slice(b"abc");
        assert_eq!(s.read(1, 0, u64::MAX, 3).await.unwrap(), want);
    }

    /// A finish dropped part-way leaves its blocking IO (fsync, new meta)
    /// running: that IO must end before the rollback touches a file, or
    /// never run, else the new meta could land over the restored one.
    #[tokio::test]
    async fn a_finish_dropped_part_way_never_lands_after_the_rollback() {
        let (d, s) = committed_v1().await;
        let mut w = s.begin_write(1, 2, 1).await.unwrap();
        w.write_at(0, Bytes::from(vec![b'z'; 100_000])).await.unwrap();
        {
            let mut finish = std::pin::pin!(w.finish(None, false));
            assert!(futures::poll!(&mut finish).is_pending(), "the finish waits on its IO");
        }
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original());
        assert_eq!(s.list(), vec![(1, 1)]);
        drop(s);
        let s = ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap();
        assert_eq!(s.list(), vec![(1, 1)], "the meta on disk is version 1's");
        assert_eq!(s.read(1, 0, u64::MAX, 1).await.unwrap(), original());
    }

    /// A session dropped where no runtime runs is rolled back inline.
    #[test]
    fn a_session_dropped_without_a_runtime_is_rolled_back_inline() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (_d, s, w) = rt.block_on(async {
            let (d, s) = committed_v1().await;
            let mut w = s.begin_write(1, 2, 1).await.unwrap();
            w.write_at(50, Bytes::from(vec![b'q'; 1000])).await.unwrap();
            (d, s, w)
        });
        drop(rt);
        drop(w);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        assert_eq!(rt.block_on(s.read(1, 0, u64::MAX, 1)).unwrap(), original());
        s.assert_accounting();
    }

    /// A replica whose meta is unreadable is gone after a restart, records
    /// and all: a record must not bring it back at an older version.
    #[tokio::test]
    async fn a_replica_with_an_unreadable_meta_is_set_aside_whole() {
        let (d, s) = committed_v1().await;
        for (version, base) in [(2, 1), (3, 2)] {
            let mut w = s.begin_write(1, version, base).await.unwrap();
            w.write_at(0, Bytes::from(vec![version as u8; 10])).await.unwrap();
            w.finish(None, false).await.unwrap();
        }
        assert_eq!(undo_files(&d).len(), 1, "only version 3's record is left");
        drop(s);
        let chunks = d.path().join("chunks");
        std::fs::write(chunks.join(format!("{:016x}.meta", 1)), b"garbage").unwrap();
        let s = ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap();
        assert_eq!((s.list(), s.used_bytes()), (vec![], 0));
        assert!(undo_files(&d).is_empty() && !data_path(&chunks, 1).exists());
        assert!(chunks.join(format!("{:016x}.meta.bad", 1)).exists());
    }

    /// Regression: a `.meta` of a newer format was taken for damage, set
    /// aside, and its replica deleted (a downgrade destroyed data). Now the
    /// store refuses to open, naming the file and both formats, and changes
    /// nothing; a torn `.meta.tmp` is cleaned up.
    #[tokio::test]
    async fn a_newer_meta_format_stops_the_open_and_changes_nothing() {
        let (d, s) = committed_v1().await;
        drop(s);
        let chunks = d.path().join("chunks");
        let meta = chunks.join(format!("{:016x}.meta", 1));
        let mut b = std::fs::read(&meta).unwrap();
        b[4..8].copy_from_slice(&(crate::format::META_FORMAT + 1).to_le_bytes());
        let body = b.len() - 4;
        let crc = shoal_core::checksum::crc32c(&b[..body]);
        b[body..].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&meta, &b).unwrap();
        let before: Vec<_> = std::fs::read_dir(&chunks).unwrap().map(|e| e.unwrap().file_name()).collect();
        let err = ChunkStore::open(d.path(), u64::MAX, 4 << 20).err().expect("a newer format must not open");
        assert!(matches!(err, StoreError::NewerFormat { found: 2, known: 1, .. }), "{err}");
        assert!(err.to_string().contains(".meta: format 2 is newer"), "{err}");
        let after: Vec<_> = std::fs::read_dir(&chunks).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(before, after, "nothing was set aside or removed");
        // Back at format 1 (as the newer shoal would leave it after a
        // downgrade-safe step), a leftover temporary meta is removed.
        std::fs::write(chunks.join(format!("{:016x}.meta.tmp", 1)), b"torn").unwrap();
        b[4..8].copy_from_slice(&crate::format::META_FORMAT.to_le_bytes());
        let crc = shoal_core::checksum::crc32c(&b[..body]);
        b[body..].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&meta, &b).unwrap();
        let s = ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap();
        assert_eq!(s.list(), vec![(1, 1)]);
        assert!(!chunks.join(format!("{:016x}.meta.tmp", 1)).exists());
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

    fn chunk_files(d: &tempfile::TempDir, id: u64) -> Vec<String> {
        let prefix = format!("{id:016x}.");
        let mut v: Vec<String> = std::fs::read_dir(d.path().join("chunks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        v.sort();
        v
    }

    /// A first write of chunk 2 at `version`, finished (durable, acked).
    async fn first_write(s: &Arc<ChunkStore>, version: u64, byte: u8) {
        let mut w = s.begin_write(2, version, 0).await.unwrap();
        w.write_at(0, Bytes::from(vec![byte; 70_000])).await.unwrap();
        w.finish(None, false).await.unwrap();
    }

    #[tokio::test]
    async fn a_new_replica_needs_no_undo_record_and_rolls_back_by_removal() {
        let (d, s) = store(u64::MAX).await;
        first_write(&s, 1, b'a').await;
        assert_eq!(chunk_files(&d, 2), vec!["0000000000000002.data", "0000000000000002.meta"], "no undo record");
        assert_eq!(s.read(2, 0, u64::MAX, 1).await.unwrap(), vec![b'a'; 70_000]);
        // Meta never committed version 1 (another replica failed) and grants
        // version 2 on base 0: version 1 goes whole, record or not.
        let mut w = s.begin_write(2, 2, 0).await.unwrap();
        w.write_at(0, Bytes::from_static(b"bb")).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert_eq!(s.read(2, 0, u64::MAX, 2).await.unwrap(), &b"bb"[..], "nothing of version 1 is left");
        assert!(matches!(s.read(2, 0, 1, 1).await, Err(StoreError::Moved { have: 2, want: 1, .. })));
        assert_eq!(s.used_bytes(), 2);
        // A write on committed version 2 keeps a record as before, and
        // rolling it back restores version 2.
        let mut w = s.begin_write(2, 3, 2).await.unwrap();
        w.write_at(0, Bytes::from_static(b"cc")).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert_eq!(chunk_files(&d, 2).len(), 3, "{:?}", chunk_files(&d, 2));
        assert_eq!(s.read(2, 0, u64::MAX, 2).await.unwrap(), &b"bb"[..]);
        // An aborted and a dropped first write leave nothing.
        for drop_it in [false, true] {
            let mut w = s.begin_write(5, 1, 0).await.unwrap();
            w.write_at(0, Bytes::from_static(b"x")).await.unwrap();
            match drop_it {
                true => drop(w),
                false => assert_eq!(w.finish(None, true).await.unwrap(), 0),
            }
            assert!(matches!(s.read(5, 0, 1, 1).await, Err(StoreError::NotFound { .. })));
            assert!(chunk_files(&d, 5).is_empty(), "{:?}", chunk_files(&d, 5));
        }
        s.assert_accounting();
    }

    /// A crash at each step of a first write (no undo record) leaves either
    /// no replica, or one whose meta has its data; never a length or version
    /// without the bytes, and never wrong bytes under valid checksums.
    #[tokio::test]
    async fn a_first_write_crashed_at_any_step_leaves_no_meta_without_its_data() {
        let chunks = |d: &tempfile::TempDir| d.path().join("chunks");
        let reopen = |d: &tempfile::TempDir| Arc::new(ChunkStore::open(d.path(), u64::MAX, 4 << 20).unwrap());

        // 1. Bytes written, no finish: the data file has no meta and goes.
        let (d, s) = store(u64::MAX).await;
        let mut w = s.begin_write(2, 1, 0).await.unwrap();
        w.write_at(0, Bytes::from(vec![b'a'; 70_000])).await.unwrap();
        std::mem::forget(w);
        drop(s);
        let s = reopen(&d);
        assert!(s.list().is_empty() && chunk_files(&d, 2).is_empty(), "{:?}", chunk_files(&d, 2));

        // 2. Data fsynced and the new meta written to its temporary file, not
        //    yet renamed: still no meta, so nothing is left.
        first_write(&s, 1, b'a').await;
        drop(s);
        std::fs::rename(meta_path(&chunks(&d), 2), crate::format::meta_tmp_path(&chunks(&d), 2)).unwrap();
        let s = reopen(&d);
        assert!(s.list().is_empty() && chunk_files(&d, 2).is_empty(), "{:?}", chunk_files(&d, 2));

        // 3. Renamed, but the directory fsync did not finish and the data
        //    file's entry was lost (POSIX allows it; this write was never
        //    acked, so never committed): the replica reads as corrupt, never
        //    as other bytes, and a new first write replaces it.
        first_write(&s, 1, b'a').await;
        drop(s);
        std::fs::remove_file(data_path(&chunks(&d), 2)).unwrap();
        let s = reopen(&d);
        assert!(matches!(s.read(2, 0, 10, 1).await, Err(StoreError::Corrupt { .. })));
        first_write(&s, 2, b'b').await;
        assert_eq!(s.read(2, 0, u64::MAX, 2).await.unwrap(), vec![b'b'; 70_000]);

        // 4. Finished (acked) and the process dies: the replica is there at
        //    its version, verified, with no record, and a write on base 0
        //    after the restart still removes it first.
        drop(s);
        let s = reopen(&d);
        assert_eq!(s.list(), vec![(2, 2)]);
        assert_eq!(s.read(2, 0, u64::MAX, 2).await.unwrap(), vec![b'b'; 70_000]);
        assert_eq!(chunk_files(&d, 2), vec!["0000000000000002.data", "0000000000000002.meta"]);
        first_write(&s, 3, b'c').await;
        assert_eq!(s.read(2, 0, u64::MAX, 3).await.unwrap(), vec![b'c'; 70_000]);

        // 5. That removal crashed after the meta went, before the data: the
        //    data file has no meta and goes.
        drop(s);
        std::fs::remove_file(meta_path(&chunks(&d), 2)).unwrap();
        let s = reopen(&d);
        assert!(s.list().is_empty() && chunk_files(&d, 2).is_empty(), "{:?}", chunk_files(&d, 2));
        s.assert_accounting();
    }

    /// Short reads run on the worker itself on a multi-thread runtime (see
    /// `short_read`), long ones on the blocking pool: the same bytes either way,
    /// including a version served through its undo record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn short_and_long_reads_agree_on_a_multi_thread_runtime() {
        let (_d, s) = committed_v1().await;
        let mut w = s.begin_write(1, 2, 1).await.unwrap();
        w.write_at(4096, Bytes::from(vec![b'n'; 4096])).await.unwrap();
        w.finish(None, false).await.unwrap();
        let mut want = original();
        for (offset, len) in [(4096, 4096), (65_000, 1000), (0, SHORT_READ_BYTES_MAX + 1), (0, u64::MAX)] {
            let end = (offset + len).min(want.len() as u64) as usize;
            assert_eq!(s.read(1, offset, len, 1).await.unwrap(), &want[offset as usize..end], "{offset}+{len} at 1");
        }
        want[4096..8192].fill(b'n');
        for (offset, len) in [(4096, 4096), (0, SHORT_READ_BYTES_MAX + 1)] {
            let end = (offset + len).min(want.len() as u64) as usize;
            assert_eq!(s.read(1, offset, len, 2).await.unwrap(), &want[offset as usize..end], "{offset}+{len} at 2");
        }
    }
}
