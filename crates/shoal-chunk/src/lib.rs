//! Shoal's chunk server.
//!
//! Stores checksummed chunk replicas on local disk ([`store`]), serves
//! pipelined writes and verified ranged reads ([`service`]), copies replicas
//! from other servers when meta asks ([`replicate`]), re-verifies every
//! checksum in the background ([`scrub`]), and keeps meta informed with
//! heartbeats that carry chunk reports and garbage collection ([`server`]).
//! [`metric_names`] names every metric it records through the `metrics`
//! facade.
//!
//! `shoal-chunk` knows nothing of paths, files or the namespace: only chunk
//! ids, versions and byte ranges.

pub mod format;
pub mod metric_names;
pub mod replicate;
pub mod scrub;
pub mod server;
pub mod service;
pub mod store;
pub mod undo;

pub use server::{ChunkConfig, run};
