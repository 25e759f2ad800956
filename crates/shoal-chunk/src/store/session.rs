//! A write session: one version's write on one replica, from its first byte
//! to its durable meta (finish) or its rollback (abort).
//!
//! The session holds the chunk's write lock for its whole life, so nobody
//! else reads or writes the replica meanwhile. Bytes that existed before the
//! session are saved in the version's undo record before they are
//! overwritten (see [`crate::undo`]). A session that creates the replica
//! (there was no meta before it) makes no record at all: its rollback is
//! the replica's removal, and its finish costs one fsync of the data and
//! one of the new meta, made at the same time, then one of the directory.
//!
//! # How a session ends
//! - `finish` makes it durable at its version;
//! - `finish(.., abort = true)`, or a failure inside `finish`, rolls it back;
//! - a session dropped before it ended (its task was cancelled, or panicked)
//!   is rolled back too. Drop cannot await, so the rollback is spawned on the
//!   runtime and **takes the chunk's write lock with it**: no reader or
//!   writer gets in before the replica is as it was. Without a runtime the
//!   rollback runs inline. If the process dies first, the next open rolls
//!   the session back from its undo record (see `recovery`).
//!
//! # States
//! `guard` is `Some` while the session is open and `None` once it ended
//! (finished, rolled back, or handed to a rollback): a dropped session with
//! `guard == None` has nothing left to do.
//!
//! A future dropped mid-call leaves its blocking IO running (blocking
//! threads cannot be cancelled). So every IO of a session passes its `gate`,
//! which a rollback closes first: an IO that had started ends before the
//! rollback touches a file, and one that had not never runs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use shoal_core::checksum::{BLOCK_SIZE_BYTES, blocks_covering};
use tokio::sync::OwnedRwLockWriteGuard;

use super::files::{crcs_from_file, publish_meta, roll_back, stage_meta};
use super::spare::Disk;
use super::{ChunkStore, StoreError, blocking};
use crate::format::ReplicaMeta;
use crate::metric_names;
use crate::undo::{self, UndoWriter};

/// An open write on one replica; holds the chunk's write lock until it ends.
pub struct WriteSession {
    store: Arc<ChunkStore>,
    id: u64,
    version: u64,
    /// The chunk's write lock and the replica's meta as the session found
    /// it; None once the session ended.
    guard: Option<OwnedRwLockWriteGuard<Option<ReplicaMeta>>>,
    file: Arc<File>,
    start_len: u64,
    len: u64,
    /// Byte range written so far, as (start, end).
    touched: Option<(u64, u64)>,
    /// This version's undo record, made when first needed.
    undo: Option<Arc<Mutex<UndoWriter>>>,
    /// Open (true) until a rollback begins; held by each IO of the session.
    gate: Arc<Mutex<bool>>,
}

impl WriteSession {
    pub(super) fn new(
        store: Arc<ChunkStore>,
        id: u64,
        version: u64,
        guard: OwnedRwLockWriteGuard<Option<ReplicaMeta>>,
        file: File,
        start_len: u64,
    ) -> WriteSession {
        WriteSession {
            store,
            id,
            version,
            guard: Some(guard),
            file: Arc::new(file),
            start_len,
            len: start_len,
            touched: None,
            undo: None,
            gate: Arc::new(Mutex::new(true)),
        }
    }

    /// Runs one IO of this session on a blocking thread, unless the session
    /// is being rolled back (see the module doc).
    async fn io<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let gate = self.gate.clone();
        blocking(move || {
            let open = gate.lock().unwrap_or_else(|e| e.into_inner());
            if !*open {
                return Err(StoreError::Io(std::io::Error::other("the write session was rolled back")));
            }
            f()
        })
        .await
    }

    /// The replica's meta as the session found it (its committed state).
    fn old(&self) -> &Option<ReplicaMeta> {
        self.guard.as_ref().expect("an open session holds the chunk's lock")
    }

    /// Takes what a rollback needs out of the session, which thereby ends.
    fn rollback(&mut self) -> Rollback {
        Rollback {
            store: self.store.clone(),
            id: self.id,
            version: self.version,
            had_record: self.undo.take().is_some(),
            start_len: self.start_len,
            len: self.len,
            gate: self.gate.clone(),
            guard: self.guard.take().expect("an open session holds the chunk's lock"),
        }
    }

    /// This session's undo record, created (durably) on first use.
    async fn undo_record(&mut self) -> Result<Arc<Mutex<UndoWriter>>, StoreError> {
        if let Some(u) = &self.undo {
            return Ok(u.clone());
        }
        let (dir, id, version, old) = (self.store.dir.clone(), self.id, self.version, self.old().clone());
        let w = self
            .io(move || {
                // A new inode, never a spare: recovery reads undo records.
                let file = std::fs::File::create(undo::undo_path(&dir, id, version))?;
                Ok(UndoWriter::create(file, &dir, version, old.as_ref())?)
            })
            .await?;
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
        self.io(move || {
            let mut old = vec![0u8; (end - offset) as usize];
            file.read_exact_at(&mut old, offset)?;
            Ok(record.lock().expect("undo lock").append(offset, &old)?)
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
        // The growth is reserved before a byte is written, and given back if
        // the write fails (or this future is dropped) before it is kept.
        let store = self.store.clone();
        let growth = store.space.reserve(end.saturating_sub(self.len))?;
        let started = Instant::now();
        let bytes = data.len() as u64;
        self.save_old(offset, end).await?;
        let file = self.file.clone();
        self.io(move || Ok(file.write_all_at(&data, offset)?)).await?;
        metrics::histogram!(metric_names::WRITE_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::counter!(metric_names::WRITTEN_BYTES_TOTAL).increment(bytes);
        self.store.written_bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        growth.keep();
        self.len = self.len.max(end);
        debug_assert!(self.len >= self.start_len, "a session's length only grows until its finish");
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
        let old = self.old().clone();
        // Versions only grow: `begin_write` refused anything else.
        assert!(
            old.as_ref().is_none_or(|m| m.version < self.version),
            "session of chunk {} version {} over version {:?}",
            self.id,
            self.version,
            old.as_ref().map(|m| m.version)
        );
        let len = truncate_to.unwrap_or(self.len);
        if len > self.store.chunk_size_max_bytes {
            // A cut to past the largest chunk is nonsense: undo the session.
            let chunk_id = self.id;
            self.abort().await?;
            return Err(StoreError::TooLarge { chunk_id, end: len });
        }
        // A cut past the end grows the replica: that needs space like a write.
        let store = self.store.clone();
        let growth = match store.space.reserve(len.saturating_sub(self.len)) {
            Ok(r) => r,
            Err(e) => {
                self.abort().await?;
                return Err(e);
            }
        };
        if len < self.len {
            self.save_old(len, self.len).await?;
        }
        // The record must be durable before the new meta names this version.
        // A brand-new replica needs none: rolling it back means deleting it,
        // which needs no saved bytes (see `ChunkStore::begin_write` for base
        // 0 and the crash argument in the module doc of `store`).
        let fresh = old.is_none();
        if !fresh {
            self.undo_record().await?;
        }
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
        // The undo stack stays in version order, with this version on top
        // when it has a record.
        assert!(undo.last().is_none_or(|v| *v < version), "undo stack {undo:?} under version {version}");
        if !fresh {
            undo.push(version);
        }
        assert!(first_dirty <= last_dirty || first_dirty == nblocks, "dirty blocks {first_dirty}..{last_dirty}");
        let meta = self
            .io(move || {
                if len != prev_len {
                    file.set_len(len)?;
                }
                // The session holds the chunk's write lock, so the bytes read
                // back here (from the page cache) are those the fsync below
                // makes durable.
                crcs.resize(nblocks as usize, 0);
                if first_dirty < last_dirty {
                    let fresh = crcs_from_file(&file, len, first_dirty..last_dirty)?;
                    crcs[first_dirty as usize..last_dirty as usize].copy_from_slice(&fresh);
                }
                let meta = ReplicaMeta { version, len, crcs, undo };
                // The data's fsync and the staged meta's run at once (two
                // flushes in the time of about one; one after the other when
                // no thread can be had); only the rename, after both, makes
                // the new meta count.
                std::thread::scope(|s| {
                    let stage = || stage_meta(&dir, id, &meta);
                    let Ok(staged) = std::thread::Builder::new().spawn_scoped(s, stage) else {
                        timed_sync(&file)?;
                        return stage();
                    };
                    let synced = timed_sync(&file);
                    let staged = staged.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    synced.map_err(StoreError::from).and(staged)
                })?;
                publish_meta(&dir, id)?;
                Ok(meta)
            })
            .await?;
        growth.keep();
        if len < self.len {
            self.store.space.release(self.len - len);
        }
        let mut guard = self.guard.take().expect("an open session holds the chunk's lock");
        *guard = Some(meta);
        self.store.note_version(self.id, version);
        Ok(version)
    }

    /// Ends an install: the replica gets its meta only if the checksums of
    /// its blocks on disk are `expected` (those of the bytes received).
    pub async fn finish_install(self, expected: Vec<u32>) -> Result<u64, StoreError> {
        let (file, len, id) = (self.file.clone(), self.len, self.id);
        let on_disk = self
            .io(move || {
                timed_sync(&file)?;
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
        self.rollback().run().await
    }
}

impl Drop for WriteSession {
    fn drop(&mut self) {
        if self.guard.is_none() {
            return;
        }
        tracing::warn!(
            chunk_id = self.id,
            version = self.version,
            "write session dropped before it ended; rolling back"
        );
        let rollback = self.rollback();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = rollback.run().await;
                });
            }
            Err(_) => {
                let _ = rollback.run_blocking();
            }
        }
    }
}

/// The rollback of one session, holding the chunk's write lock until done.
struct Rollback {
    store: Arc<ChunkStore>,
    id: u64,
    version: u64,
    /// Whether the session made an undo record (it overwrote something, or
    /// reached its finish).
    had_record: bool,
    start_len: u64,
    len: u64,
    /// The session's IO gate, closed before anything is undone.
    gate: Arc<Mutex<bool>>,
    guard: OwnedRwLockWriteGuard<Option<ReplicaMeta>>,
}

impl Rollback {
    async fn run(self) -> Result<u64, StoreError> {
        let (dir, id, version, had_record, old) =
            (self.store.dir.clone(), self.id, self.version, self.had_record, self.guard.clone());
        let gate = self.gate.clone();
        let restored = blocking(move || {
            let _closed = close(&gate);
            undo_on_disk(&dir, id, version, had_record, old)
        })
        .await;
        self.settle(restored)
    }

    /// The same, inline (when there is no runtime to run it on).
    fn run_blocking(self) -> Result<u64, StoreError> {
        let closed = close(&self.gate);
        let restored = undo_on_disk(&self.store.dir, self.id, self.version, self.had_record, self.guard.clone());
        drop(closed);
        self.settle(restored)
    }

    /// Brings the store's memory in line with the rolled-back disk, then
    /// releases the chunk's lock. Returns the replica's version.
    fn settle(self, restored: Result<Option<ReplicaMeta>, StoreError>) -> Result<u64, StoreError> {
        let restored = match restored {
            Ok(m) => m,
            Err(e) => {
                // The files are part-way between two versions: keep the
                // replica out of service until meta replaces it.
                tracing::error!(chunk_id = self.id, version = self.version, "rolling back a write failed: {e}");
                self.store.note_corrupt(self.id);
                return Err(e);
            }
        };
        assert_eq!(restored, *self.guard, "a rollback restores the replica exactly as the session found it");
        self.store.space.account(self.len, self.start_len);
        if self.guard.is_none() {
            self.store.replicas.lock().expect("store lock").remove(&self.id);
        }
        Ok(self.guard.as_ref().map_or(0, |m| m.version))
    }
}

/// Closes a session's IO gate, waiting for an IO in flight to end; the gate
/// stays locked while the returned guard lives.
fn close(gate: &Mutex<bool>) -> std::sync::MutexGuard<'_, bool> {
    let mut open = gate.lock().unwrap_or_else(|e| e.into_inner());
    *open = false;
    open
}

/// Undoes a session's version on disk; returns the replica as restored.
fn undo_on_disk(
    dir: &Disk,
    id: u64,
    version: u64,
    had_record: bool,
    old: Option<ReplicaMeta>,
) -> Result<Option<ReplicaMeta>, StoreError> {
    // Without a record of its own the session overwrote nothing: only the
    // length changed.
    let record = if had_record { undo::load(dir, id, version)? } else { None };
    let undo_left = old.as_ref().map(|m| m.undo.clone()).unwrap_or_default();
    let u = record.unwrap_or(undo::Undo { version, old, segments: Vec::new() });
    roll_back(dir, id, &undo_left, &u)
}
/// Fsyncs a replica's data file, timing it (`shoal_chunk_fsync_seconds`).
fn timed_sync(file: &File) -> std::io::Result<()> {
    let started = Instant::now();
    file.sync_all()?;
    metrics::histogram!(metric_names::FSYNC_SECONDS).record(started.elapsed().as_secs_f64());
    Ok(())
}
