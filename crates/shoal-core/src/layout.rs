//! Chunk arithmetic: how a byte range of a file maps onto fixed-size chunks,
//! and whether a chunk is still the base a writer read ([`same_base`]).

/// One piece of a file range that falls inside a single chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Chunk index within the file.
    pub index: u64,
    /// Offset of the piece inside the chunk.
    pub offset_in_chunk: u64,
    /// Offset of the piece inside the requested range.
    pub offset_in_range: u64,
    pub len: u64,
}

/// The largest chunk a file may have and a chunk server accepts (1 GiB).
pub const CHUNK_SIZE_MAX_BYTES: u64 = 1 << 30;

/// The most bytes a chunk server may hold or report (2^63 - 1, what a signed
/// 64-bit size can count).
pub const SERVER_BYTES_MAX: u64 = i64::MAX as u64;

/// Cuts `[offset, offset + len)` into per-chunk spans, in order.
pub fn spans(offset: u64, len: u64, chunk_size_bytes: u64) -> Vec<Span> {
    assert!(chunk_size_bytes > 0, "chunk size must be positive");
    let mut out = Vec::new();
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let index = pos / chunk_size_bytes;
        let offset_in_chunk = pos % chunk_size_bytes;
        let take = (chunk_size_bytes - offset_in_chunk).min(end - pos);
        out.push(Span { index, offset_in_chunk, offset_in_range: pos - offset, len: take });
        pos += take;
    }
    out
}

/// The largest file size in bytes: what a signed 64-bit offset (`off_t`)
/// reaches.
pub const FILE_SIZE_MAX_BYTES: u64 = i64::MAX as u64;

/// Where data may end at most in a file of `chunk_size_bytes` chunks: data
/// lives in whole chunks, and the last one must end within
/// [`FILE_SIZE_MAX_BYTES`]. (A size set past it reads as zeros there.)
pub fn data_end_max(chunk_size_bytes: u64) -> u64 {
    let chunk = chunk_size_bytes.max(1);
    FILE_SIZE_MAX_BYTES / chunk * chunk
}

/// Number of chunks a file of `size` bytes spans.
pub fn chunk_count(size: u64, chunk_size_bytes: u64) -> u64 {
    size.div_ceil(chunk_size_bytes)
}

/// Whether a chunk now at `now` (chunk id, committed version) is still
/// `base`, the one a writer read bytes of: the same committed version and,
/// past version 0 (no committed bytes, whatever the id), the same id. Meta's
/// leader checks it before a prepare, and the writer again on the answer.
pub fn same_base(base: (u64, u64), now: (u64, u64)) -> bool {
    base.1 == now.1 && (base.1 == 0 || base.0 == now.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_is_the_committed_version_and_past_zero_the_id() {
        assert!(same_base((0, 0), (7, 0)), "no committed bytes: any id");
        assert!(same_base((7, 3), (7, 3)));
        assert!(!same_base((7, 3), (8, 3)), "another chunk at the same version");
        assert!(!same_base((7, 3), (7, 4)));
        assert!(!same_base((7, 0), (7, 1)));
    }

    #[test]
    fn data_ends_with_the_last_whole_chunk() {
        assert_eq!(data_end_max(1), FILE_SIZE_MAX_BYTES);
        assert_eq!(data_end_max(64 << 20), (1 << 63) - (64 << 20));
        assert_eq!(data_end_max(100) % 100, 0);
        assert!(FILE_SIZE_MAX_BYTES - data_end_max(100) < 100);
    }

    #[test]
    fn spans_cross_boundaries() {
        let s = spans(90, 30, 100);
        assert_eq!(
            s,
            vec![
                Span { index: 0, offset_in_chunk: 90, offset_in_range: 0, len: 10 },
                Span { index: 1, offset_in_chunk: 0, offset_in_range: 10, len: 20 },
            ]
        );
        assert_eq!(spans(0, 300, 100).len(), 3);
        assert!(spans(5, 0, 100).is_empty());
        assert_eq!(chunk_count(0, 100), 0);
        assert_eq!(chunk_count(101, 100), 2);
    }
}
