//! Block checksums: CRC32C over every [`BLOCK_SIZE_BYTES`] block of a chunk.
//!
//! The last block of a replica may be short; its checksum covers only the bytes
//! that exist. Readers verify every block they touch before returning data.

/// Checksummed block size: 64 KiB.
pub const BLOCK_SIZE_BYTES: u64 = 64 * 1024;

/// CRC32C (Castagnoli) of `data`.
///
/// Never inlined: crc-fast's entry points are `#[inline(always)]`, so the
/// CRC code is compiled in whichever crate calls them. Kept here, it is
/// compiled once, in this crate, which even debug builds optimize (see the
/// workspace's `[profile.dev.package.shoal-core]`).
#[inline(never)]
pub fn crc32c(data: &[u8]) -> u32 {
    crc_fast::crc32_iscsi(data)
}

/// CRC32C of `a` followed by `b`, from `crc32c(a)`, `crc32c(b)` and the
/// length of `b`: for bytes checksummed piece by piece as they are written.
/// Never inlined, like [`crc32c`].
#[inline(never)]
pub fn crc32c_combine(a: u32, b: u32, b_len: u64) -> u32 {
    crc_fast::checksum_combine(crc_fast::CrcAlgorithm::Crc32Iscsi, a as u64, b as u64, b_len) as u32
}

/// CRC32C of the concatenation of `parts`, without copying them together.
/// Never inlined, like [`crc32c`].
#[inline(never)]
pub fn crc32c_parts(parts: &[&[u8]]) -> u32 {
    let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
    for p in parts {
        digest.update(p);
    }
    digest.finalize() as u32
}

/// The checksums of `data` cut into blocks, the last one possibly short.
pub fn block_crcs(data: &[u8]) -> Vec<u32> {
    data.chunks(BLOCK_SIZE_BYTES as usize).map(crc32c).collect()
}

/// The range of block indices that cover bytes `[offset, offset + len)`.
pub fn blocks_covering(offset: u64, len: u64) -> std::ops::Range<u64> {
    if len == 0 {
        return offset / BLOCK_SIZE_BYTES..offset / BLOCK_SIZE_BYTES;
    }
    offset / BLOCK_SIZE_BYTES..(offset + len).div_ceil(BLOCK_SIZE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_pieces_are_the_whole() {
        let whole = b"123456789";
        for cut in 0..=whole.len() {
            let (a, b) = whole.split_at(cut);
            assert_eq!(crc32c_combine(crc32c(a), crc32c(b), b.len() as u64), crc32c(whole), "cut at {cut}");
        }
    }

    #[test]
    fn known_vector() {
        // The standard CRC32C check value of "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_parts(&[b"1234", b"", b"56789"]), 0xE306_9283);
    }

    #[test]
    fn covering() {
        assert_eq!(blocks_covering(0, 1), 0..1);
        assert_eq!(blocks_covering(0, BLOCK_SIZE_BYTES), 0..1);
        assert_eq!(blocks_covering(BLOCK_SIZE_BYTES - 1, 2), 0..2);
        assert_eq!(blocks_covering(5, 0), 0..0);
        assert_eq!(block_crcs(&vec![0u8; 65536 + 1]).len(), 2);
    }
}
