//! Chunk replicas on local disk, checksummed.
//!
//! Each replica is two files under `DIR/chunks/`, named by chunk id only
//! (a chunk server never knows user paths):
//! - `<id>.data`: the bytes, at their offsets within the chunk;
//! - `<id>.meta`: magic, format, version, length, one CRC32C per 64 KiB block,
//!   and a CRC32C of the meta itself. It is replaced atomically (write a
//!   temporary file, fsync, rename, fsync the directory).
//!
//! # Write protocol (one write session)
//! 1. Take the chunk's write lock; refuse a version older than the replica's.
//! 2. Write the data at its offsets (bounded by the capacity quota).
//! 3. On finish: cut to `truncate_to` if asked, fsync the data, recompute the
//!    checksums of every touched block from the file, and replace the meta with
//!    the new version. Only then does the caller ack.
//! 4. An aborted session still rewrites the checksums of the blocks it touched
//!    (keeping the old version), so the replica stays self-consistent and
//!    readable; its content for that range is unknown, as for any unacked write.
//!
//! # Invariants
//! - After a session ends, every block's checksum in memory and in `.meta`
//!   matches the data file (a crash mid-session can break this for the touched
//!   blocks; reads then report corruption and the client uses another replica).
//! - `used_bytes` is the sum of data-file lengths.
//! - Readers take the chunk's read lock, writers its write lock.

use std::collections::HashMap;
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use shoal_core::checksum::{BLOCK_SIZE_BYTES, blocks_covering, crc32c};
use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

const META_MAGIC: &[u8; 4] = b"SHCM";
const META_FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("chunk {chunk_id} not found on this server")]
    NotFound { chunk_id: u64 },
    #[error("chunk {chunk_id} is at version {have}, older than the {want} required (stale replica)")]
    Stale { chunk_id: u64, have: u64, want: u64 },
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
    fn from_io(e: std::io::Error) -> StoreError {
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
}

impl ReplicaMeta {
    fn encode(&self) -> Vec<u8> {
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

    fn decode(b: &[u8]) -> Option<ReplicaMeta> {
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
        Some(ReplicaMeta { version: u64_at(8)?, len: u64_at(16)?, crcs })
    }
}

struct Replica {
    lock: Arc<RwLock<Option<ReplicaMeta>>>,
}

/// The chunk replicas of one server.
pub struct ChunkStore {
    dir: PathBuf,
    capacity_bytes: u64,
    chunk_size_max_bytes: u64,
    used_bytes: AtomicU64,
    replicas: Mutex<HashMap<u64, Replica>>,
}

fn data_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.data"))
}

fn meta_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.meta"))
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> impl Future<Output = Result<T, StoreError>> {
    async move { tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Io(std::io::Error::other(e)))? }
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

impl ChunkStore {
    /// Opens the store under `dir/chunks`, loading every replica's meta.
    /// A replica whose meta is unreadable is set aside as `*.bad`.
    pub fn open(dir: &Path, capacity_bytes: u64, chunk_size_max_bytes: u64) -> Result<ChunkStore, StoreError> {
        let dir = dir.join("chunks");
        std::fs::create_dir_all(&dir)?;
        let mut replicas = HashMap::new();
        let mut used = 0;
        for entry in std::fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            let Some(hex) = name.strip_suffix(".meta") else { continue };
            let Ok(id) = u64::from_str_radix(hex, 16) else { continue };
            match std::fs::read(meta_path(&dir, id)).ok().and_then(|b| ReplicaMeta::decode(&b)) {
                Some(meta) => {
                    used += meta.len;
                    replicas.insert(id, Replica { lock: Arc::new(RwLock::new(Some(meta))) });
                }
                None => {
                    tracing::warn!(chunk_id = id, "unreadable replica meta; setting the replica aside");
                    let _ = std::fs::rename(meta_path(&dir, id), dir.join(format!("{id:016x}.meta.bad")));
                }
            }
        }
        Ok(ChunkStore {
            dir,
            capacity_bytes,
            chunk_size_max_bytes,
            used_bytes: AtomicU64::new(used),
            replicas: Mutex::new(replicas),
        })
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    pub fn chunk_count(&self) -> u64 {
        self.replicas.lock().expect("store lock").len() as u64
    }

    fn slot(&self, id: u64) -> Arc<RwLock<Option<ReplicaMeta>>> {
        let mut map = self.replicas.lock().expect("store lock");
        map.entry(id).or_insert_with(|| Replica { lock: Arc::new(RwLock::new(None)) }).lock.clone()
    }

    fn existing_slot(&self, id: u64) -> Result<Arc<RwLock<Option<ReplicaMeta>>>, StoreError> {
        let map = self.replicas.lock().expect("store lock");
        map.get(&id).map(|r| r.lock.clone()).ok_or(StoreError::NotFound { chunk_id: id })
    }

    /// Starts a write of chunk `id` at `version`.
    pub async fn begin_write(self: &Arc<Self>, id: u64, version: u64) -> Result<WriteSession, StoreError> {
        let guard = self.slot(id).write_owned().await;
        if let Some(m) = guard.as_ref()
            && m.version > version
        {
            return Err(StoreError::OldVersion { chunk_id: id, got: version, have: m.version });
        }
        let dir = self.dir.clone();
        let file = blocking(move || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(data_path(&dir, id))
                .map_err(StoreError::from_io)
        })
        .await?;
        let start_len = guard.as_ref().map_or(0, |m| m.len);
        Ok(WriteSession {
            store: self.clone(),
            id,
            version,
            guard,
            file: Arc::new(file),
            start_len,
            len: start_len,
            touched: None,
        })
    }

    /// Reads `[offset, offset + len)` of chunk `id` (clamped to the replica's
    /// length), verifying every block it touches.
    pub async fn read(&self, id: u64, offset: u64, len: u64, min_version: u64) -> Result<Bytes, StoreError> {
        let slot = self.existing_slot(id)?;
        let guard = slot.read_owned().await;
        let meta = guard.as_ref().ok_or(StoreError::NotFound { chunk_id: id })?;
        if meta.version < min_version {
            return Err(StoreError::Stale { chunk_id: id, have: meta.version, want: min_version });
        }
        let end = (offset.saturating_add(len)).min(meta.len);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let blocks = blocks_covering(offset, end - offset);
        let crcs = meta.crcs[blocks.start as usize..blocks.end as usize].to_vec();
        let (dir, chunk_len) = (self.dir.clone(), meta.len);
        let data = blocking(move || {
            let f = File::open(data_path(&dir, id))?;
            let first = blocks.start * BLOCK_SIZE_BYTES;
            let last = (blocks.end * BLOCK_SIZE_BYTES).min(chunk_len);
            let mut buf = vec![0u8; (last - first) as usize];
            f.read_exact_at(&mut buf, first).map_err(|e| match e.kind() {
                ErrorKind::UnexpectedEof => StoreError::Corrupt { chunk_id: id, block: blocks.start },
                _ => StoreError::Io(e),
            })?;
            for (i, block) in buf.chunks(BLOCK_SIZE_BYTES as usize).enumerate() {
                if crc32c(block) != crcs[i] {
                    return Err(StoreError::Corrupt { chunk_id: id, block: blocks.start + i as u64 });
                }
            }
            Ok(Bytes::from(buf).slice((offset - first) as usize..(end - first) as usize))
        })
        .await?;
        drop(guard);
        Ok(data)
    }

    /// Deletes the replica of chunk `id`, if this server has one.
    pub async fn delete(&self, id: u64) -> Result<(), StoreError> {
        let Ok(slot) = self.existing_slot(id) else { return Ok(()) };
        let mut guard = slot.write_owned().await;
        let dir = self.dir.clone();
        blocking(move || {
            for p in [meta_path(&dir, id), data_path(&dir, id)] {
                match std::fs::remove_file(p) {
                    Err(e) if e.kind() != ErrorKind::NotFound => return Err(e.into()),
                    _ => {}
                }
            }
            Ok(())
        })
        .await?;
        if let Some(m) = guard.take() {
            self.used_bytes.fetch_sub(m.len, Ordering::Relaxed);
        }
        self.replicas.lock().expect("store lock").remove(&id);
        Ok(())
    }

    /// The directory holding the replica files.
    pub fn chunk_dir(&self) -> &Path {
        &self.dir
    }
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
}

impl WriteSession {
    /// Writes `data` at `offset` within the chunk.
    pub async fn write_at(&mut self, offset: u64, data: Bytes) -> Result<(), StoreError> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
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

    /// Makes the session durable at its version (or, with `abort`, only
    /// self-consistent at the old version). Returns the replica's version.
    pub async fn finish(mut self, truncate_to: Option<u64>, abort: bool) -> Result<u64, StoreError> {
        let old = self.guard.clone();
        let mut crcs = old.as_ref().map(|m| m.crcs.clone()).unwrap_or_default();
        let len = match truncate_to {
            Some(t) if !abort => t,
            _ => self.len,
        };
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
        let version = if abort { old.as_ref().map_or(0, |m| m.version) } else { self.version };
        if old.is_none() && abort && self.touched.is_none() {
            // Nothing was ever written: leave no trace.
            let dir = self.store.dir.clone();
            let id = self.id;
            blocking(move || Ok(std::fs::remove_file(data_path(&dir, id))?)).await.ok();
            self.store.replicas.lock().expect("store lock").remove(&self.id);
            return Ok(0);
        }
        let file = self.file.clone();
        let dir = self.store.dir.clone();
        let id = self.id;
        let prev_len = self.len;
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
            let meta = ReplicaMeta { version, len, crcs };
            write_meta(&dir, id, &meta)?;
            Ok(meta)
        })
        .await?;
        if len < self.len {
            self.store.used_bytes.fetch_sub(self.len - len, Ordering::Relaxed);
        } else if len > self.len {
            self.store.used_bytes.fetch_add(len - self.len, Ordering::Relaxed);
        }
        *self.guard = Some(meta);
        Ok(version)
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
        let m = ReplicaMeta { version: 7, len: 70000, crcs: vec![1, 2] };
        let mut b = m.encode();
        assert_eq!(ReplicaMeta::decode(&b), Some(m));
        b[10] ^= 1;
        assert_eq!(ReplicaMeta::decode(&b), None);
    }

    #[tokio::test]
    async fn write_read_overwrite_truncate() {
        let (d, s) = store(u64::MAX).await;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = s.begin_write(1, 1).await.unwrap();
        w.write_at(0, Bytes::from(data.clone())).await.unwrap();
        assert_eq!(w.finish(None, false).await.unwrap(), 1);
        assert_eq!(s.read(1, 100, 1000, 1).await.unwrap(), &data[100..1100]);
        // Overwrite across a block boundary.
        let mut w = s.begin_write(1, 2).await.unwrap();
        w.write_at(65530, Bytes::from_static(b"0123456789")).await.unwrap();
        w.finish(None, false).await.unwrap();
        let mut want = data.clone();
        want[65530..65540].copy_from_slice(b"0123456789");
        assert_eq!(s.read(1, 0, 300_000, 2).await.unwrap(), &want[..]);
        // Truncate, then reopen from disk.
        let w = s.begin_write(1, 3).await.unwrap();
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
        let mut w = s.begin_write(1, 5).await.unwrap();
        w.write_at(0, Bytes::from(vec![1u8; 1000])).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert!(matches!(s.begin_write(1, 4).await, Err(StoreError::OldVersion { .. })));
        let mut w = s.begin_write(2, 1).await.unwrap();
        assert!(matches!(w.write_at(0, Bytes::from(vec![1u8; 100_000])).await, Err(StoreError::NoSpace { .. })));
        w.finish(None, true).await.unwrap();
        assert_eq!(s.chunk_count(), 1, "an aborted empty write leaves nothing");
    }

    #[tokio::test]
    async fn flipped_byte_is_detected() {
        let (d, s) = store(u64::MAX).await;
        let mut w = s.begin_write(9, 1).await.unwrap();
        w.write_at(0, Bytes::from(vec![7u8; 150_000])).await.unwrap();
        w.finish(None, false).await.unwrap();
        let path = data_path(&d.path().join("chunks"), 9);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[70_000] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(s.read(9, 0, 10, 1).await, Ok(_)), "block 0 is intact");
        assert!(matches!(s.read(9, 69_000, 2000, 1).await, Err(StoreError::Corrupt { block: 1, .. })));
    }

    #[tokio::test]
    async fn delete_frees_space() {
        let (_d, s) = store(u64::MAX).await;
        let mut w = s.begin_write(3, 1).await.unwrap();
        w.write_at(10, Bytes::from(vec![1u8; 10])).await.unwrap();
        w.finish(None, false).await.unwrap();
        assert_eq!(s.read(3, 0, 20, 1).await.unwrap()[..10], [0u8; 10], "the gap reads as zeros");
        s.delete(3).await.unwrap();
        assert_eq!(s.used_bytes(), 0);
        assert!(matches!(s.read(3, 0, 1, 0).await, Err(StoreError::NotFound { .. })));
    }
}
