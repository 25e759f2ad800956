//! Segment files: the Raft log as append-only files of framed records.
//!
//! A segment is `DIR/raftlog/<first index, 16 hex digits>.seg`:
//!
//! ```text
//! header  16 bytes: magic C5 'S' 'E' 'G', u32 segment format (1), u64 first index
//! frame   u64 log index, then one record (crate::format: a 20-byte header
//!         with the body's length and a CRC32C, then the body)
//! frame   ...
//! ```
//!
//! Frames are only ever appended, or cut off at a frame boundary (a Raft
//! truncation). [`scan`] reads a segment back: it checks every record's
//! header and CRC (not its body) and tells where a damaged or partial tail
//! starts, which only the last segment may have (see `LogStore::open`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::format::{self, FormatError, HEADER_BYTES, RecordKind};

pub const MAGIC: [u8; 4] = [0xC5, b'S', b'E', b'G'];
pub const SEGMENT_FORMAT: u32 = 1;
pub const SEGMENT_HEADER_BYTES: u64 = 16;
/// Bytes before a frame's record: its log index.
pub const FRAME_PREFIX_BYTES: usize = 8;

/// The file name of the segment whose first index is `first`.
pub fn file_name(first: u64) -> String {
    format!("{first:016x}.seg")
}

/// The first index a segment's file name gives, if it is a segment's name.
pub fn parse_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

/// The segment header for `first`.
pub fn header(first: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    h[8..16].copy_from_slice(&first.to_le_bytes());
    h
}

/// Appends the frame of the entry at `index` (its record already encoded) to `out`.
pub fn push_frame(out: &mut Vec<u8>, index: u64, record: &[u8]) {
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(record);
}

/// One frame found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub index: u64,
    /// Offset of the frame (its index prefix) in the file.
    pub offset: u64,
    /// Length of the whole frame, prefix included.
    pub len: u32,
}

/// Why a segment's frames end before its file does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The file ends exactly after the last frame.
    Clean,
    /// From `at` to the end of the file, what an append cut short by a crash
    /// leaves: a partial frame, zeros, or one last frame that fails its
    /// checksum and ends exactly at the end of the file. `why` says which.
    Torn { at: u64, why: String },
    /// At `at`, damage that no crash during an append explains: a bad frame
    /// with more bytes after it, or a frame out of sequence.
    Corrupt { at: u64, why: String },
}

/// A segment read back.
#[derive(Debug)]
pub struct Scanned {
    pub first: u64,
    pub frames: Vec<Frame>,
    pub tail: Tail,
    pub file_len: u64,
}

/// Problems that stop a scan at once, whatever the segment's place.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{}: not a Shoal log segment (bad header)", .0.display())]
    BadHeader(PathBuf),
    #[error("{}: segment format {found} is newer than this build of shoal reads (up to {SEGMENT_FORMAT}); run a newer shoal", .path.display())]
    NewerSegment { path: PathBuf, found: u32 },
    #[error("{}, log entry {index}: {error}", .path.display())]
    Newer { path: PathBuf, index: u64, error: FormatError },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Whether the segment at `path` has its header (a file shorter than one, or
/// whose header is zeros, was cut short by a crash while it was created).
pub fn header_written(path: &Path) -> std::io::Result<bool> {
    let mut h = [0u8; SEGMENT_HEADER_BYTES as usize];
    let file = File::open(path)?;
    let mut n = 0;
    while n < h.len() {
        match file.read_at(&mut h[n..], n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n == h.len() && h.iter().any(|&b| b != 0))
}

/// Reads every frame of the segment at `path` whose name says it starts at `first`.
pub fn scan(path: &Path, first: u64) -> Result<Scanned, ScanError> {
    let io = |source| ScanError::Io { path: path.to_path_buf(), source };
    let bytes = std::fs::read(path).map_err(io)?;
    scan_bytes(path, &bytes, first)
}

/// [`scan`] of a segment's bytes (`path` only names it in errors).
pub fn scan_bytes(path: &Path, bytes: &[u8], first: u64) -> Result<Scanned, ScanError> {
    let file_len = bytes.len() as u64;
    if bytes.len() < SEGMENT_HEADER_BYTES as usize || bytes[0..4] != MAGIC {
        return Err(ScanError::BadHeader(path.to_path_buf()));
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("four bytes"));
    if version > SEGMENT_FORMAT {
        return Err(ScanError::NewerSegment { path: path.to_path_buf(), found: version });
    }
    if version != SEGMENT_FORMAT || u64::from_le_bytes(bytes[8..16].try_into().expect("eight bytes")) != first {
        return Err(ScanError::BadHeader(path.to_path_buf()));
    }
    let mut frames = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES as usize;
    let tail = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break Tail::Clean;
        }
        let torn = |why: &str| Tail::Torn { at: at as u64, why: why.to_string() };
        let corrupt = |why: String| Tail::Corrupt { at: at as u64, why };
        if rest.iter().all(|&b| b == 0) {
            break torn("zeros to the end of the file");
        }
        if rest.len() < FRAME_PREFIX_BYTES + HEADER_BYTES {
            break torn("a partial frame header");
        }
        let index = u64::from_le_bytes(rest[..8].try_into().expect("eight bytes"));
        let record = &rest[FRAME_PREFIX_BYTES..];
        let body_len = u64::from_le_bytes(record[8..16].try_into().expect("eight bytes"));
        let Some(record_len) = (HEADER_BYTES as u64).checked_add(body_len).filter(|&l| l <= record.len() as u64) else {
            break torn("a frame longer than the rest of the file");
        };
        let is_last = record_len as usize == record.len();
        let bad = match format::check(RecordKind::LogEntry, &record[..record_len as usize]) {
            Ok(format::Checked::Headed { .. }) => None,
            Ok(format::Checked::LegacyJson(_)) => Some("a record without a header".to_string()),
            Err(error @ FormatError::Newer { .. }) => {
                return Err(ScanError::Newer { path: path.to_path_buf(), index, error });
            }
            Err(e) => Some(e.to_string()),
        };
        match bad {
            Some(why) if is_last => break torn(&why),
            Some(why) => break corrupt(format!("{why}, with more frames after it")),
            None => {}
        }
        // The index is outside the record's checksum: it must be the next in sequence.
        let expected = first + frames.len() as u64;
        if index != expected {
            break corrupt(format!("a frame of log index {index} where index {expected} belongs"));
        }
        let len = FRAME_PREFIX_BYTES as u64 + record_len;
        frames.push(Frame { index, offset: at as u64, len: len as u32 });
        at += len as usize;
    };
    Ok(Scanned { first, frames, tail, file_len })
}

/// Reads the record of `frame` from `file`.
pub fn read_record(file: &File, frame: Frame) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; frame.len as usize - FRAME_PREFIX_BYTES];
    file.read_exact_at(&mut buf, frame.offset + FRAME_PREFIX_BYTES as u64)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> Vec<u8> {
        format::encode(RecordKind::LogEntry, &vec![n; 10]).unwrap()
    }

    fn segment(dir: &Path, first: u64, frames: &[(u64, Vec<u8>)]) -> PathBuf {
        let mut bytes = header(first).to_vec();
        for (i, r) in frames {
            push_frame(&mut bytes, *i, r);
        }
        let path = dir.join(file_name(first));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(0x2a), "000000000000002a.seg");
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_name("2a.seg"), None);
        assert_eq!(parse_name("000000000000002a.tmp"), None);
    }

    #[test]
    fn a_clean_segment_gives_every_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment(dir.path(), 5, &[(5, record(1)), (6, record(2))]);
        let s = scan(&path, 5).unwrap();
        assert_eq!(s.tail, Tail::Clean);
        assert_eq!(s.frames.iter().map(|f| f.index).collect::<Vec<_>>(), vec![5, 6]);
        let file = File::open(&path).unwrap();
        assert_eq!(read_record(&file, s.frames[1]).unwrap(), record(2));
    }

    #[test]
    fn a_partial_or_damaged_tail_is_found_where_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment(dir.path(), 1, &[(1, record(1)), (2, record(2))]);
        let full = std::fs::read(&path).unwrap();
        let second = scan(&path, 1).unwrap().frames[1].offset;
        // Cut in the middle of the second frame.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let s = scan(&path, 1).unwrap();
        assert_eq!(s.frames.len(), 1);
        assert!(matches!(s.tail, Tail::Torn { at, .. } if at == second), "{:?}", s.tail);
        // Zeros where the second frame was.
        let mut zeroed = full.clone();
        zeroed[second as usize..].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        assert!(matches!(scan(&path, 1).unwrap().tail, Tail::Torn { at, .. } if at == second));
        // A flipped bit in the last record, which ends at the end of the file: torn.
        let mut flipped = full.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let s = scan(&path, 1).unwrap();
        assert!(matches!(&s.tail, Tail::Torn { at, why } if *at == second && why.contains("CRC32C")), "{:?}", s.tail);
    }

    #[test]
    fn damage_with_frames_after_it_or_out_of_sequence_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment(dir.path(), 1, &[(1, record(1)), (2, record(2)), (3, record(3))]);
        let full = std::fs::read(&path).unwrap();
        let frames = scan(&path, 1).unwrap().frames;
        // A flipped bit in the body of the second record.
        let mut flipped = full.clone();
        flipped[frames[1].offset as usize + FRAME_PREFIX_BYTES + HEADER_BYTES + 2] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let s = scan(&path, 1).unwrap();
        let at_second = frames[1].offset;
        assert!(
            matches!(&s.tail, Tail::Corrupt { at, why } if *at == at_second && why.contains("CRC32C")),
            "{:?}",
            s.tail
        );
        assert_eq!(s.frames.len(), 1);
        // A damaged index prefix (outside the CRC): out of sequence.
        let mut bad_index = full.clone();
        bad_index[frames[2].offset as usize] ^= 4;
        std::fs::write(&path, &bad_index).unwrap();
        let s = scan(&path, 1).unwrap();
        assert!(matches!(&s.tail, Tail::Corrupt { why, .. } if why.contains("index 7 where index 3")), "{:?}", s.tail);
    }

    #[test]
    fn newer_formats_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment(dir.path(), 1, &[(1, format::with_format(record(1), format::FORMAT_CURRENT + 1))]);
        assert!(matches!(scan(&path, 1), Err(ScanError::Newer { index: 1, .. })));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4] = 2;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(scan(&path, 1), Err(ScanError::NewerSegment { found: 2, .. })));
        // A header that names another first index is not this segment.
        std::fs::write(&path, header(7)).unwrap();
        assert!(matches!(scan(&path, 1), Err(ScanError::BadHeader(_))));
    }
}
