//! The typed error of namespace operations.
//!
//! Meta produces it (the state machine returns it from `apply`), sends it in the
//! details of a gRPC status, and the client library decodes it back, so a
//! caller can match on `FsError::NotFound` across processes. The texts are
//! written for people: the CLI prints them as they are.

use serde::{Deserialize, Serialize};

use crate::path::PathError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum FsError {
    #[error("{0}")]
    InvalidPath(#[from] PathError),
    #[error("no such file or directory: {path}")]
    NotFound { path: String },
    #[error("already exists: {path}")]
    AlreadyExists { path: String },
    #[error("not a directory: {path}")]
    NotADirectory { path: String },
    #[error("is a directory: {path}")]
    IsADirectory { path: String },
    #[error("directory not empty: {path} (use -r to remove it and its contents)")]
    NotEmpty { path: String },
    #[error("cannot move {src} into itself ({dst})")]
    RenameIntoSelf { src: String, dst: String },
    #[error("the root directory cannot be removed or renamed")]
    Root,
    #[error("file (inode {inode}) no longer exists: it was removed")]
    StaleInode { inode: u64 },
    #[error(
        "chunk {index} of inode {inode} changed under this write (another writer, a removal or a truncation); retry"
    )]
    ChunkChanged { inode: u64, index: u64 },
    #[error("not enough chunk servers: need {needed} alive, {alive} alive")]
    NotEnoughServers { needed: u32, alive: u32 },
    #[error("chunk {chunk_id} has no usable replica left")]
    NoReplica { chunk_id: u64 },
    #[error("replication factor {requested} is out of range 1..={max}")]
    BadReplication { requested: u32, max: u32 },
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
    #[error("lock session {session} has expired or was closed; its locks were released")]
    SessionExpired { session: u64 },
    #[error("this session holds no lock on {path}")]
    NotLocked { path: String },
    #[error("{path} is locked by another session")]
    WouldBlock { path: String },
    #[error("fenced: token {token} no longer holds the lock on {path} (it passed to another holder); write refused")]
    Fenced { path: String, token: u64 },
    #[error("gave up waiting for the lock on {path} after {waited_ms} ms")]
    LockTimeout { path: String, waited_ms: u64 },
    #[error(
        "this session holds (or waits for) a shared lock on {path}, which cannot be upgraded to exclusive: release \
         it and ask again"
    )]
    LockUpgrade { path: String },
    #[error("{path} has no extended attribute {name:?}")]
    NoAttribute { path: String, name: String },
    #[error("extended attribute on {path} refused: {limit}")]
    AttributeLimit { path: String, limit: String },
    #[error("a directory cannot take another name (hard link): {path}")]
    LinkToDirectory { path: String },
    #[error("{path} already has the most names (hard links) an inode may have ({max})")]
    TooManyLinks { path: String, max: u32 },
    #[error("{path} has the most byte-range locks and queued requests one file may have ({max})")]
    TooManyLocks { path: String, max: u32 },
    #[error(
        "waiting for this lock on {path} would deadlock: a holder in the way waits, directly or through others, for a \
         lock this owner holds"
    )]
    Deadlock { path: String },
}

impl FsError {
    /// Encodes for the wire (gRPC status details).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("FsError always serializes")
    }

    /// Decodes from the wire; `None` when the bytes are not an `FsError`.
    pub fn from_bytes(bytes: &[u8]) -> Option<FsError> {
        serde_json::from_slice(bytes).ok()
    }
}
