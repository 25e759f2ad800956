//! The on-disk format of a replica: the names of its files and the encoding
//! of its `.meta` file. Pure: no IO happens here.
//!
//! Each replica is two files under `DIR/chunks/`, named by chunk id only (a
//! chunk server never knows user paths):
//! - `<id>.data`: the bytes, at their offsets within the chunk;
//! - `<id>.meta`: magic `SHCM`, format (u32), version (u64), length (u64),
//!   the number of blocks (u32), one CRC32C per 64 KiB block (u32 each), and
//!   a CRC32C of everything before it. It is replaced atomically through
//!   `<id>.meta.tmp`; an unreadable one is set aside as `<id>.meta.bad`.
//!
//! Undo records (`<id>.undo.<version>`) have their own format, in
//! [`crate::undo`], which embeds a `.meta` encoding.
//!
//! # Invariants
//! - A `ReplicaMeta` has exactly one checksum per block of its length
//!   (`crcs.len() == len.div_ceil(BLOCK_SIZE_BYTES)`): [`ReplicaMeta::encode`]
//!   asserts it before anything reaches the disk, and [`ReplicaMeta::decode`]
//!   refuses bytes that break it.
//! - `undo` is strictly ascending and never names a version above `version`.

use std::path::{Path, PathBuf};

use shoal_core::checksum::{BLOCK_SIZE_BYTES, crc32c};

const META_MAGIC: &[u8; 4] = b"SHCM";
pub const META_FORMAT: u32 = 1;
/// Bytes of a `.meta` file before its checksums: magic, format, version,
/// length and the number of blocks.
const META_HEAD_BYTES: usize = 28;

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

/// The number of checksummed blocks of a replica `len` bytes long.
pub fn blocks_for(len: u64) -> u64 {
    len.div_ceil(BLOCK_SIZE_BYTES)
}

impl ReplicaMeta {
    /// Panics if the meta breaks an invariant of the module doc: such a meta
    /// must never be written, nor trusted after it was read.
    pub fn assert_valid(&self) {
        assert_eq!(
            self.crcs.len() as u64,
            blocks_for(self.len),
            "replica meta v{} of {} bytes has {} block checksums",
            self.version,
            self.len,
            self.crcs.len()
        );
        assert!(self.undo.windows(2).all(|w| w[0] < w[1]), "undo versions out of order: {:?}", self.undo);
        assert!(
            self.undo.last().is_none_or(|v| *v <= self.version),
            "undo record {:?} newer than the replica's version {}",
            self.undo.last(),
            self.version
        );
    }

    pub fn encode(&self) -> Vec<u8> {
        self.assert_valid();
        let mut out = Vec::with_capacity(META_HEAD_BYTES + 4 + 4 * self.crcs.len());
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
        debug_assert_eq!(out.len(), META_HEAD_BYTES + 4 * self.crcs.len() + 4);
        out
    }

    /// The format number of an intact `.meta` newer than this build reads:
    /// magic and checksum hold, but the format is past [`META_FORMAT`]. A
    /// damaged file is never taken for a newer one (the checksum covers the
    /// format number).
    pub fn newer_format(b: &[u8]) -> Option<u32> {
        newer_format(b, META_MAGIC, META_FORMAT, b.len().checked_sub(4)?)
    }

    /// The meta encoded in `b`; None for anything damaged or inconsistent.
    pub fn decode(b: &[u8]) -> Option<ReplicaMeta> {
        let u32_at = |i: usize| b.get(i..i + 4).map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")));
        let u64_at = |i: usize| b.get(i..i + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")));
        if b.len() < META_HEAD_BYTES + 4 || &b[..4] != META_MAGIC || u32_at(4)? != META_FORMAT {
            return None;
        }
        let body = b.len() - 4;
        if crc32c(&b[..body]) != u32_at(body)? {
            return None;
        }
        let n = u32_at(24)? as usize;
        if META_HEAD_BYTES + 4 * n != body {
            return None;
        }
        let crcs = (0..n).map(|i| u32_at(META_HEAD_BYTES + 4 * i)).collect::<Option<Vec<u32>>>()?;
        let meta = ReplicaMeta { version: u64_at(8)?, len: u64_at(16)?, crcs, undo: Vec::new() };
        // A checksum count that does not fit the length was never written by
        // `encode`: the file is not to be trusted.
        (meta.crcs.len() as u64 == blocks_for(meta.len)).then_some(meta)
    }
}

/// The format of a record with `magic` whose CRC32C over `b[..crc_at]` is
/// stored at `crc_at`, if it is intact and newer than `known`.
pub fn newer_format(b: &[u8], magic: &[u8; 4], known: u32, crc_at: usize) -> Option<u32> {
    let format = u32::from_le_bytes(b.get(4..8)?.try_into().expect("4 bytes"));
    let stored = u32::from_le_bytes(b.get(crc_at..crc_at + 4)?.try_into().expect("4 bytes"));
    (b.get(..4)? == magic && format > known && crc32c(b.get(..crc_at)?) == stored).then_some(format)
}

fn hex_id(name: &str, suffix: &str) -> Option<u64> {
    name.strip_suffix(suffix).and_then(|h| u64::from_str_radix(h, 16).ok())
}

pub fn data_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.data"))
}

pub fn meta_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.meta"))
}

/// Where a new `.meta` is written before it is renamed into place.
pub fn meta_tmp_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.meta.tmp"))
}

/// Where an unreadable `.meta` is set aside.
pub fn meta_bad_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016x}.meta.bad"))
}

/// The chunk id of a `<id>.data` file name.
pub fn parse_data_name(name: &str) -> Option<u64> {
    hex_id(name, ".data")
}

/// The chunk id of a `<id>.meta` file name.
pub fn parse_meta_name(name: &str) -> Option<u64> {
    hex_id(name, ".meta")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trip_and_damage() {
        let m = ReplicaMeta { version: 7, len: 70000, crcs: vec![1, 2], undo: Vec::new() };
        let mut b = m.encode();
        assert_eq!(ReplicaMeta::decode(&b), Some(m));
        b[10] ^= 1;
        assert_eq!(ReplicaMeta::decode(&b), None);
    }

    #[test]
    fn a_meta_whose_checksums_do_not_fit_its_length_is_refused() {
        let m = ReplicaMeta { version: 7, len: 70000, crcs: vec![1, 2], undo: Vec::new() };
        let mut b = m.encode();
        // Claim one byte more than two blocks hold, and fix the self-checksum.
        b[16..24].copy_from_slice(&(2 * BLOCK_SIZE_BYTES + 1).to_le_bytes());
        let body = b.len() - 4;
        let own = crc32c(&b[..body]);
        b[body..].copy_from_slice(&own.to_le_bytes());
        assert_eq!(ReplicaMeta::decode(&b), None);
    }

    #[test]
    #[should_panic(expected = "block checksums")]
    fn an_inconsistent_meta_is_never_encoded() {
        ReplicaMeta { version: 1, len: 10, crcs: Vec::new(), undo: Vec::new() }.encode();
    }

    #[test]
    fn names_round_trip() {
        let dir = Path::new("/d");
        let name = |p: PathBuf| p.file_name().unwrap().to_string_lossy().to_string();
        assert_eq!(parse_data_name(&name(data_path(dir, 42))), Some(42));
        assert_eq!(parse_meta_name(&name(meta_path(dir, 42))), Some(42));
        assert_eq!(parse_meta_name(&name(meta_tmp_path(dir, 42))), None);
        assert_eq!(parse_meta_name(&name(meta_bad_path(dir, 42))), None);
    }
}
