//! IO on one replica's files: the atomic `.meta` replace, checksums and
//! verified reads of the data file, and the rollback of one version.
//!
//! Everything here is synchronous (std::fs) and runs on a blocking thread or,
//! when no runtime is left, inline. The caller holds the chunk's write lock
//! for anything that changes a file, and its read lock for reads.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::Path;

use shoal_core::checksum::{BLOCK_SIZE_BYTES, blocks_covering, crc32c};

use super::StoreError;
use super::spare::Disk;
use crate::format::{ReplicaMeta, data_path, meta_path, meta_tmp_path};
use crate::undo;

/// Replaces the replica's `.meta` atomically: [`stage_meta`], then
/// [`publish_meta`].
pub(super) fn write_meta(dir: &Disk, id: u64, meta: &ReplicaMeta) -> Result<(), StoreError> {
    stage_meta(dir, id, meta)?;
    publish_meta(dir, id)
}

/// Writes `meta` to the replica's temporary `.meta.tmp` and fsyncs it. A
/// staged meta is nothing yet: the store's open removes one left by a crash.
pub(super) fn stage_meta(dir: &Disk, id: u64, meta: &ReplicaMeta) -> Result<(), StoreError> {
    let bytes = meta.encode();
    let f = dir.create(&meta_tmp_path(dir, id))?;
    f.write_all_at(&bytes, 0)?;
    f.sync_all()?;
    Ok(())
}

/// Renames the staged meta over the replica's `.meta` and fsyncs the
/// directory: from then on the replica is at the staged version. The old
/// `.meta`'s inode is kept as a spare (see [`Disk::rename_over`]).
pub(super) fn publish_meta(dir: &Disk, id: u64) -> Result<(), StoreError> {
    dir.rename_over(&meta_tmp_path(dir, id), &meta_path(dir, id))?;
    Ok(())
}

/// Checksums of blocks `[first, last)` read back from the data file.
pub(super) fn crcs_from_file(f: &File, len: u64, blocks: std::ops::Range<u64>) -> Result<Vec<u32>, StoreError> {
    let mut buf = vec![0u8; BLOCK_SIZE_BYTES as usize];
    let mut out = Vec::with_capacity(blocks.end.saturating_sub(blocks.start) as usize);
    for b in blocks {
        let start = b * BLOCK_SIZE_BYTES;
        let n = (len.saturating_sub(start)).min(BLOCK_SIZE_BYTES) as usize;
        assert!(n > 0, "block {b} lies past the replica's end {len}");
        f.read_exact_at(&mut buf[..n], start)?;
        out.push(crc32c(&buf[..n]));
    }
    Ok(out)
}

/// Removes a file, ignoring that it is already gone (an unlink: see
/// [`Disk::remove`] for the removal that keeps the inode).
pub(super) fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Reads `[offset, end)` of the replica's current bytes, checking the
/// checksum of every block it touches.
pub(super) fn read_verified(
    dir: &Path,
    id: u64,
    meta: &ReplicaMeta,
    offset: u64,
    end: u64,
) -> Result<Vec<u8>, StoreError> {
    assert!(offset < end && end <= meta.len, "read of [{offset}, {end}) outside a replica of {} bytes", meta.len);
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

/// Undoes the write of `u.version` on disk and returns the replica as it was
/// before it (None: the write created the replica). Serves every rollback:
/// an aborted or dropped session, an uncommitted version a new write builds
/// past, and a session a crash interrupted.
///
/// The old meta goes back first, then the data, then the record goes. So a
/// crash part-way leaves a record newer than the meta, which the next open
/// applies again (restoring is idempotent), and never a meta whose checksums
/// belong to neither version. `undo_left` lists the replica's records; the
/// result keeps those the old version still has.
pub(super) fn roll_back(
    dir: &Disk,
    id: u64,
    undo_left: &[u64],
    u: &undo::Undo,
) -> Result<Option<ReplicaMeta>, StoreError> {
    assert!(
        u.old.as_ref().is_none_or(|m| m.version < u.version),
        "undo record of version {} holds a meta of version {:?}",
        u.version,
        u.old.as_ref().map(|m| m.version)
    );
    let old = u
        .old
        .as_ref()
        .map(|m| ReplicaMeta { undo: undo_left.iter().copied().filter(|v| *v <= m.version).collect(), ..m.clone() });
    match &old {
        Some(m) => write_meta(dir, id, m)?,
        None => dir.remove(&meta_path(dir, id))?,
    }
    let data = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(data_path(dir, id))?;
    undo::restore(&data, u)?;
    if old.is_none() {
        dir.remove(&data_path(dir, id))?;
        // A meta staged by a finish that failed half-way (see `stage_meta`):
        // harmless, and the next open removes it, so a failure here only
        // warns.
        if let Err(e) = dir.remove(&meta_tmp_path(dir, id)) {
            tracing::warn!(chunk_id = id, error = %e, "could not remove a staged meta; the next open will");
        }
    }
    dir.remove(&undo::undo_path(dir, id, u.version))?;
    Ok(old)
}
