//! Errors of the client library, typed by what the caller can do about them.

use shoal_core::FsError;
use shoal_proto::chunk::ChunkErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The namespace said no (not found, exists, not empty, ...). Final.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// No meta node answered in time. Unknown whether a mutation applied.
    #[error("cannot reach meta (tried {addrs}) within {timeout_ms} ms: {last}")]
    MetaUnreachable { addrs: String, timeout_ms: u64, last: String },
    /// Every replica of a chunk failed a read.
    #[error("chunk {chunk_id}: no replica could serve the read ({details})")]
    ChunkUnavailable { chunk_id: u64, details: String },
    /// A replica no longer holds the version the chunk map named: the map is
    /// out of date (a newer write was committed meanwhile). Read again.
    #[error("chunk {chunk_id} changed while it was being read")]
    LayoutChanged { chunk_id: u64 },
    /// A chunk write could not complete on any chain of replicas.
    /// `no_space`: it ran out of chains because replicas had no room for it
    /// (a replica refused it for space, and then meta had no other server
    /// to offer, or the last refusal was for space): the cluster is full.
    #[error("write to chunk {chunk_id} failed after {attempts} attempts: {last}")]
    WriteFailed { chunk_id: u64, attempts: usize, last: String, no_space: bool },
    /// An address that is not HOST:PORT.
    #[error("bad server address {addr:?}: expected HOST:PORT")]
    BadAddress { addr: String },
    /// The caller passed something meaningless (negative offset, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// One replica failed a call; `kind` says why (`Unspecified`: it could
    /// not be reached, or the bytes were damaged in transit).
    #[error("replica {replica}: {message}")]
    Replica { replica: String, kind: ChunkErrorKind, message: String },
    /// Any other answer from a server.
    #[error("{code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
}

impl From<shoal_proto::pool::BadAddress> for ClientError {
    fn from(e: shoal_proto::pool::BadAddress) -> Self {
        ClientError::BadAddress { addr: e.addr }
    }
}

impl ClientError {
    /// Decodes a status from a Shoal server into the most precise error.
    pub fn from_status(s: &tonic::Status) -> ClientError {
        match FsError::from_bytes(s.details()) {
            Some(e) => ClientError::Fs(e),
            None => ClientError::Rpc { code: s.code(), message: s.message().to_string() },
        }
    }

    /// Decodes a status from the chunk server at `replica`.
    pub fn from_chunk_status(replica: &str, s: &tonic::Status) -> ClientError {
        ClientError::Replica {
            replica: replica.to_string(),
            kind: crate::data::error_kind(s),
            message: s.message().to_string(),
        }
    }

    /// What a chunk server said went wrong; `Unspecified` for anything that
    /// is not a replica's answer.
    pub fn chunk_error_kind(&self) -> ChunkErrorKind {
        match self {
            ClientError::Replica { kind, .. } => *kind,
            _ => ChunkErrorKind::Unspecified,
        }
    }
}
