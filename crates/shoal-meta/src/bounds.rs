//! Bounds on what requests may ask for, checked at the edge (the gRPC
//! handlers, and `plan` where the bound depends on the file) before anything
//! is proposed, so that no size, offset or count from the wire can overflow
//! the arithmetic of the state machine, planning or a chunk server.
//!
//! # Bounds
//! - A file holds at most [`FILE_SIZE_MAX_BYTES`] (2^63 - 1, what a signed
//!   64-bit offset can address): a committed size is at most that, and a
//!   chunk index only so large that the chunk's end,
//!   `(index + 1) * chunk_size`, stays within it.
//! - A chunk is at most [`CHUNK_SIZE_MAX_BYTES`], what a chunk server accepts.
//! - A file has 1 to [`REPLICATION_MAX`] replicas per chunk; a write names at
//!   most [`FAILED_REPLICAS_MAX`] failed replicas.
//! - A chunk server reports at most [`SERVER_BYTES_MAX`] of capacity and
//!   usage, and at most [`SERVER_CHUNKS_MAX`] replicas.
//!
//! - A mode holds at most the bits of [`MODE_BITS_MAX`] (permissions,
//!   setuid, setgid, sticky); a time at most [`crate::fsm::attrs::TIME_NS_MAX`].
//!
//! Each check answers `InvalidArgument` (or `BadReplication`) with a reason
//! for people; none changes anything.

use shoal_core::FsError;

pub use shoal_core::layout::{CHUNK_SIZE_MAX_BYTES, FILE_SIZE_MAX_BYTES, SERVER_BYTES_MAX};
/// Highest replication factor a file may ask for.
pub const REPLICATION_MAX: u32 = 16;
/// Failed replicas one PrepareWrite may name (a chain is at most
/// `REPLICATION_MAX` long; the rest would be noise).
pub const FAILED_REPLICAS_MAX: usize = 4 * REPLICATION_MAX as usize;
/// Most replicas a chunk server may report holding.
pub const SERVER_CHUNKS_MAX: u64 = 1 << 48;

pub use crate::fsm::MODE_BITS_MAX;

/// Permission bits a new inode or a chmod may set.
pub fn check_mode(mode: u32) -> Result<(), FsError> {
    match mode <= MODE_BITS_MAX {
        true => Ok(()),
        false => Err(invalid(format!("mode {mode:o} has bits past {MODE_BITS_MAX:o}"))),
    }
}

fn invalid(reason: String) -> FsError {
    FsError::InvalidArgument { reason }
}

/// Chunk `index` of a file with `chunk_size_bytes` chunks ends within the
/// largest file.
pub fn check_chunk_index(index: u64, chunk_size_bytes: u64) -> Result<(), FsError> {
    let end = index.checked_add(1).and_then(|n| n.checked_mul(chunk_size_bytes));
    match end {
        Some(end) if end <= FILE_SIZE_MAX_BYTES => Ok(()),
        _ => Err(invalid(format!(
            "chunk index {index} (chunks of {chunk_size_bytes} bytes) lies beyond the largest file size, \
             {FILE_SIZE_MAX_BYTES} bytes"
        ))),
    }
}

/// A file size a commit may set.
pub fn check_file_size(size: u64) -> Result<(), FsError> {
    match size <= FILE_SIZE_MAX_BYTES {
        true => Ok(()),
        false => Err(invalid(format!("file size {size} exceeds the largest file size, {FILE_SIZE_MAX_BYTES} bytes"))),
    }
}

/// A replication factor a file may have; 0 only where `zero_inherits`
/// (a create that takes the inherited or default factor).
pub fn check_replication(requested: u32, zero_inherits: bool) -> Result<(), FsError> {
    match requested {
        0 if zero_inherits => Ok(()),
        1..=REPLICATION_MAX => Ok(()),
        _ => Err(FsError::BadReplication { requested, max: REPLICATION_MAX }),
    }
}

/// The list of replicas a PrepareWrite says failed.
pub fn check_failed(failed: &[String]) -> Result<(), FsError> {
    match failed.len() <= FAILED_REPLICAS_MAX {
        true => Ok(()),
        false => {
            Err(invalid(format!("a write names {} failed replicas, more than {FAILED_REPLICAS_MAX}", failed.len())))
        }
    }
}

/// What a chunk server's heartbeat reports of its disk.
pub fn check_usage(capacity_bytes: u64, used_bytes: u64, chunk_count: u64) -> Result<(), FsError> {
    if capacity_bytes > SERVER_BYTES_MAX || used_bytes > SERVER_BYTES_MAX {
        return Err(invalid(format!(
            "a chunk server reported {used_bytes} bytes used of {capacity_bytes}; at most {SERVER_BYTES_MAX} is \
             believable"
        )));
    }
    if chunk_count > SERVER_CHUNKS_MAX {
        return Err(invalid(format!(
            "a chunk server reported {chunk_count} replicas; at most {SERVER_CHUNKS_MAX} is believable"
        )));
    }
    Ok(())
}

/// A chunk size a meta node may give new files (its configuration).
pub fn check_chunk_size(chunk_size_bytes: u64) -> Result<(), String> {
    let block = shoal_core::checksum::BLOCK_SIZE_BYTES;
    if chunk_size_bytes < block || !chunk_size_bytes.is_multiple_of(block) || chunk_size_bytes > CHUNK_SIZE_MAX_BYTES {
        return Err(format!(
            "the chunk size must be a multiple of 64KiB and at most {CHUNK_SIZE_MAX_BYTES} bytes, got \
             {chunk_size_bytes} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_indices_end_within_the_largest_file() {
        let size = 64 << 20;
        let last = FILE_SIZE_MAX_BYTES / size - 1;
        assert!(check_chunk_index(0, size).is_ok());
        assert!(check_chunk_index(last, size).is_ok());
        assert!(check_chunk_index(last + 1, size).is_err());
        // Clients refuse data past the end of that last chunk themselves.
        assert_eq!((last + 1) * size, shoal_core::layout::data_end_max(size));
        assert!(check_chunk_index(u64::MAX / size, size).is_err(), "index * size fits u64, the end does not");
        assert!(check_chunk_index(u64::MAX, 1).is_err());
        assert!(check_chunk_index(u64::MAX, size).is_err());
    }

    #[test]
    fn sizes_counts_and_factors() {
        assert!(check_file_size(FILE_SIZE_MAX_BYTES).is_ok());
        assert!(check_file_size(FILE_SIZE_MAX_BYTES + 1).is_err());
        assert!(check_replication(0, true).is_ok());
        assert_eq!(check_replication(0, false), Err(FsError::BadReplication { requested: 0, max: REPLICATION_MAX }));
        assert!(check_replication(REPLICATION_MAX, false).is_ok());
        assert!(check_replication(REPLICATION_MAX + 1, true).is_err());
        assert!(check_failed(&vec![String::new(); FAILED_REPLICAS_MAX]).is_ok());
        assert!(check_failed(&vec![String::new(); FAILED_REPLICAS_MAX + 1]).is_err());
        assert!(check_usage(SERVER_BYTES_MAX, SERVER_BYTES_MAX, SERVER_CHUNKS_MAX).is_ok());
        assert!(check_usage(u64::MAX, 0, 0).is_err());
        assert!(check_usage(10, u64::MAX, 0).is_err());
        assert!(check_usage(10, 0, u64::MAX).is_err());
        assert!(check_chunk_size(64 << 20).is_ok());
        assert!(check_chunk_size(CHUNK_SIZE_MAX_BYTES).is_ok());
        assert!(check_chunk_size(CHUNK_SIZE_MAX_BYTES * 2).is_err());
        assert!(check_chunk_size(1000).is_err());
    }
}
