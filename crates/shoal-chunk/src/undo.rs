//! Undo records: what a replica looked like before one version's write.
//!
//! A write of version V changes the replica in place. Before any byte that
//! existed before the write is overwritten, its old content is appended to
//! the undo record of V (`<id>.undo.<V>`) and made durable. The record also
//! holds the replica's meta from before the write (version, length, block
//! checksums), so it can put the replica back exactly as it was.
//!
//! Undo records make an unacknowledged write atomic:
//! - a write that is aborted, or that crashed half-way, is rolled back;
//! - a finished write that meta never committed is rolled back by the next
//!   write, which names the committed version it builds on (its base);
//! - a read of an older committed version, while a newer write is still in
//!   flight, is served by laying the records over the current bytes.
//!
//! A record is no longer needed once its version is known committed (a later
//! write's base is at least its version); the store then deletes it.
//!
//! # Format
//! Header: magic `SHCU`, format (u32), version (u64), length of the old meta
//! (u32, 0 for a replica that did not exist), the old meta's own encoding,
//! and a CRC32C of everything before it. Then segments, each: offset (u64),
//! length (u32), CRC32C of the bytes (u32), the bytes. A torn last segment
//! (crash while appending) fails its CRC and is ignored: its bytes were never
//! overwritten, because the record is synced before the data is written.
//!
//! This module knows only the `.meta` encoding ([`crate::format`]); the store
//! decides when records are made, applied and removed. Its IO errors are
//! plain `std::io::Error`s, which the store classifies.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use shoal_core::checksum::crc32c;

use crate::format::ReplicaMeta;

const UNDO_MAGIC: &[u8; 4] = b"SHCU";
pub const UNDO_FORMAT: u32 = 1;

pub fn undo_path(dir: &Path, id: u64, version: u64) -> PathBuf {
    dir.join(format!("{id:016x}.undo.{version:016x}"))
}

/// Parses `<id>.undo.<version>` into (id, version).
pub fn parse_undo_name(name: &str) -> Option<(u64, u64)> {
    let (id, version) = name.split_once(".undo.")?;
    Some((u64::from_str_radix(id, 16).ok()?, u64::from_str_radix(version, 16).ok()?))
}

/// A loaded undo record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    pub version: u64,
    /// The replica before the write; None if the write created it.
    pub old: Option<ReplicaMeta>,
    /// (offset, old bytes), in the order they were saved.
    pub segments: Vec<(u64, Vec<u8>)>,
}

/// An undo record being written by a session.
pub struct UndoWriter {
    file: File,
    end: u64,
}

impl UndoWriter {
    /// Makes `file` (empty, at [`undo_path`] in `dir`, made by the caller)
    /// the record for `version` with the replica's meta before the write,
    /// durable (file and directory) on return.
    pub fn create(file: File, dir: &Path, version: u64, old: Option<&ReplicaMeta>) -> io::Result<UndoWriter> {
        let mut head = Vec::new();
        head.extend_from_slice(UNDO_MAGIC);
        head.extend_from_slice(&UNDO_FORMAT.to_le_bytes());
        head.extend_from_slice(&version.to_le_bytes());
        let meta = old.map(ReplicaMeta::encode).unwrap_or_default();
        head.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        head.extend_from_slice(&meta);
        let crc = crc32c(&head);
        head.extend_from_slice(&crc.to_le_bytes());
        file.write_all_at(&head, 0)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(UndoWriter { file, end: head.len() as u64 })
    }

    /// Saves the old `bytes` at `offset`; durable on return.
    pub fn append(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut seg = Vec::with_capacity(16 + bytes.len());
        seg.extend_from_slice(&offset.to_le_bytes());
        seg.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        seg.extend_from_slice(&crc32c(bytes).to_le_bytes());
        seg.extend_from_slice(bytes);
        self.file.write_all_at(&seg, self.end)?;
        self.file.sync_data()?;
        self.end += seg.len() as u64;
        Ok(())
    }
}

/// Reads the record of `version`; None if it is missing or its header is torn.
pub fn load(dir: &Path, id: u64, version: u64) -> io::Result<Option<Undo>> {
    let bytes = match std::fs::read(undo_path(dir, id, version)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(decode(&bytes).filter(|u| u.version == version))
}

/// The format number of an intact undo record newer than this build reads.
pub fn newer_format(b: &[u8]) -> Option<u32> {
    let meta_len = b.get(16..20).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")) as usize)?;
    crate::format::newer_format(b, UNDO_MAGIC, UNDO_FORMAT, 20usize.checked_add(meta_len)?)
}

/// An undo record's content, if `b` is a sound one of this format (a torn
/// tail of segments ends the list; a torn header gives None).
pub fn decode(b: &[u8]) -> Option<Undo> {
    let u32_at = |i: usize| b.get(i..i + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")));
    let u64_at = |i: usize| b.get(i..i + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")));
    if b.get(..4)? != UNDO_MAGIC || u32_at(4)? != UNDO_FORMAT {
        return None;
    }
    let version = u64_at(8)?;
    let meta_len = u32_at(16)? as usize;
    let head_end = 20 + meta_len;
    if crc32c(b.get(..head_end)?) != u32_at(head_end)? {
        return None;
    }
    let old = if meta_len == 0 { None } else { Some(ReplicaMeta::decode(&b[20..head_end])?) };
    let mut segments = Vec::new();
    let mut at = head_end + 4;
    while let (Some(offset), Some(len), Some(crc)) = (u64_at(at), u32_at(at + 8), u32_at(at + 12)) {
        let Some(bytes) = b.get(at + 16..at + 16 + len as usize) else { break };
        if crc32c(bytes) != crc {
            break;
        }
        segments.push((offset, bytes.to_vec()));
        at += 16 + len as usize;
    }
    Some(Undo { version, old, segments })
}

/// Puts the data file back as it was before `undo`'s write: old bytes
/// restored, old length, synced. The caller rewrites (or removes) the meta.
pub fn restore(data: &File, undo: &Undo) -> io::Result<()> {
    // Newest saves last: a range saved twice keeps its oldest content.
    for (offset, bytes) in undo.segments.iter().rev() {
        data.write_all_at(bytes, *offset)?;
    }
    data.set_len(undo.old.as_ref().map_or(0, |m| m.len))?;
    data.sync_all()?;
    Ok(())
}

/// Lays `undo` over `buf`, which holds the replica's bytes `[first, first +
/// buf.len())` as of the record's version: afterwards it holds them as of the
/// version before.
pub fn overlay(buf: &mut [u8], first: u64, undo: &Undo) {
    let end = first + buf.len() as u64;
    for (offset, bytes) in undo.segments.iter().rev() {
        let (s, e) = ((*offset).max(first), (offset + bytes.len() as u64).min(end));
        if s < e {
            buf[(s - first) as usize..(e - first) as usize]
                .copy_from_slice(&bytes[(s - offset) as usize..(e - offset) as usize]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let old = ReplicaMeta { version: 3, len: 10, crcs: vec![9], undo: Vec::new() };
        let file = File::create(undo_path(d.path(), 1, 4)).unwrap();
        let mut w = UndoWriter::create(file, d.path(), 4, Some(&old)).unwrap();
        w.append(2, b"abc").unwrap();
        w.append(0, b"xy").unwrap();
        let u = load(d.path(), 1, 4).unwrap().unwrap();
        assert_eq!(u, Undo { version: 4, old: Some(old), segments: vec![(2, b"abc".to_vec()), (0, b"xy".to_vec())] });
        // A torn last segment is dropped; a torn header loses the record.
        let path = undo_path(d.path(), 1, 4);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(d.path(), 1, 4).unwrap().unwrap().segments.len(), 1);
        bytes[9] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(d.path(), 1, 4).unwrap(), None);
        assert_eq!(parse_undo_name("000000000000000a.undo.0000000000000004"), Some((10, 4)));
    }

    #[test]
    fn overlay_takes_the_oldest_save() {
        let u = Undo { version: 2, old: None, segments: vec![(2, b"AB".to_vec()), (3, b"zz".to_vec())] };
        let mut buf = *b"0123456";
        overlay(&mut buf, 1, &u);
        // Offset 3 was saved twice; the first save ("B") is the content before the write.
        assert_eq!(&buf, b"0ABz456");
    }
}
