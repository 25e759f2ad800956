//! Shoal's chunk server.
//!
//! Stores checksummed chunk replicas on local disk ([`store`]), serves
//! pipelined writes and verified ranged reads ([`service`]), and keeps meta
//! informed with heartbeats that also carry garbage collection ([`server`]).
//!
//! `shoal-chunk` knows nothing of paths, files or the namespace: only chunk
//! ids, versions and byte ranges.

pub mod server;
pub mod service;
pub mod store;
pub mod undo;

pub use server::{ChunkConfig, run};
