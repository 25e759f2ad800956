//! Shoal's client library.
//!
//! [`Client`] talks to the meta group for the namespace and to chunk servers
//! for data; [`File`] is an open file with a position, read, write, seek,
//! append and set_len. Callers name files by path only: where the bytes live
//! is the library's business (location transparency).
//!
//! Layers: [`pool`] (gRPC channels) → [`meta`] (leader-following calls to the
//! meta group, also used by chunk servers) → [`data`] (chunk pipelines and
//! verified reads) → [`client`] (namespace calls) → [`file`] (files, and
//! opening them) → [`new_file`] (a new small file in one meta entry). [`layouts`] caches chunk maps by inode, so reads of an open
//! file need no meta round (close-to-open across clients). `request` numbers mutations so meta applies each once
//! however often it is retried; [`retry`] decides, from plain data, what the
//! data path does after a replica failed. [`report`] reshapes the cluster's
//! state into the serializable reports that `shoal admin --json` prints and
//! the HTTP API serves.

pub mod client;
pub mod data;
pub mod error;
pub mod file;
pub mod layouts;
pub mod lock;
pub mod meta;
pub mod new_file;
pub mod pool;
pub mod report;
mod request;
pub mod retry;
pub mod transport;

pub use bytes::Bytes;
pub use client::{AttrChange, ChunkInfo, Client, DirEntry, Owner, Special, Stat, TimeSet};
pub use error::ClientError;
pub use file::{File, SeekFrom};
pub use lock::{DEFAULT_SESSION_TTL, Lock, RangeLock, Session};
pub use shoal_proto::meta::{ChunkServer, LockEntry, LockInfo, MetaNode};
pub use transport::Transport;

/// Result of client operations.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
