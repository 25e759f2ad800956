//! Plain data and pure decisions shared by every Shoal role.
//!
//! Nothing here does IO: path rules, human-readable sizes and durations,
//! chunk arithmetic, replica placement, block checksums and the typed error
//! that crosses the wire between meta and clients. Every other crate may
//! depend on this one; it depends on none of them.

pub mod checksum;
pub mod error;
pub mod layout;
pub mod path;
pub mod placement;
pub mod units;

pub use error::FsError;
pub use path::NormalPath;

/// Default chunk size: 64 MiB.
pub const DEFAULT_CHUNK_SIZE_BYTES: u64 = 64 * 1024 * 1024;
/// Default replication factor of a cluster.
pub const DEFAULT_REPLICATION: u32 = 3;
