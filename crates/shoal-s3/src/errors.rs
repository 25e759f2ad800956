//! The one table from the client library's errors to S3 error codes.
//!
//! Anything that says the cluster could not serve the request now (no meta
//! leader in time, no replica, a write that found no chain) becomes 503
//! `ServiceUnavailable`, which S3 clients retry. Namespace answers become
//! the S3 code they mean for the object or bucket at hand.

use s3s::{S3Error, S3ErrorCode, s3_error};
use shoal_client::ClientError;
use shoal_core::FsError;

use crate::keys::NameError;
use crate::store::PutError;

/// What the failed request was about, to pick NoSuchKey or NoSuchBucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Bucket,
    Object,
}

/// The S3 error for a client-library error.
pub fn from_client(e: &ClientError, subject: Subject) -> S3Error {
    let code = match e {
        ClientError::Fs(fs) => match fs {
            FsError::NotFound { .. } | FsError::StaleInode { .. } => match subject {
                Subject::Bucket => S3ErrorCode::NoSuchBucket,
                Subject::Object => S3ErrorCode::NoSuchKey,
            },
            // A key that runs through an object, or names a "directory"
            // that holds other keys.
            FsError::NotADirectory { .. } | FsError::IsADirectory { .. } => {
                return s3_error!(
                    InvalidArgument,
                    "the key conflicts with another: one key cannot be both an object and a prefix of other keys \
                     followed by '/' ({e})"
                );
            }
            FsError::NotEmpty { .. } => S3ErrorCode::BucketNotEmpty,
            FsError::AlreadyExists { .. } => S3ErrorCode::BucketAlreadyOwnedByYou,
            FsError::AttributeLimit { .. } => S3ErrorCode::MetadataTooLarge,
            FsError::InvalidPath(_) | FsError::InvalidArgument { .. } => S3ErrorCode::InvalidArgument,
            FsError::NotEnoughServers { .. } | FsError::NoReplica { .. } | FsError::ChunkChanged { .. } => {
                S3ErrorCode::ServiceUnavailable
            }
            _ => S3ErrorCode::InternalError,
        },
        ClientError::MetaUnreachable { .. }
        | ClientError::ChunkUnavailable { .. }
        | ClientError::LayoutChanged { .. }
        | ClientError::WriteFailed { .. }
        | ClientError::Replica { .. } => S3ErrorCode::ServiceUnavailable,
        ClientError::Rpc { code, .. } => match code {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted => {
                S3ErrorCode::ServiceUnavailable
            }
            _ => S3ErrorCode::InternalError,
        },
        ClientError::BadAddress { .. } | ClientError::InvalidArgument(_) => S3ErrorCode::InternalError,
    };
    if code == S3ErrorCode::ServiceUnavailable {
        tracing::warn!("cluster unavailable for a request: {e}");
    } else if code == S3ErrorCode::InternalError {
        tracing::error!("internal error: {e}");
    }
    S3Error::with_message(code, e.to_string())
}

/// The S3 error for a name that cannot be a bucket or a path.
pub fn from_name(e: &NameError) -> S3Error {
    let code = match e {
        NameError::BadBucket { .. } => S3ErrorCode::InvalidBucketName,
        NameError::KeyTooLong { .. } => S3ErrorCode::KeyTooLongError,
        _ => S3ErrorCode::InvalidArgument,
    };
    S3Error::with_message(code, e.to_string())
}

/// The S3 error for a failed object write.
pub fn from_put(e: &PutError) -> S3Error {
    match e {
        PutError::Incomplete { .. } | PutError::Body(_) => {
            S3Error::with_message(S3ErrorCode::IncompleteBody, e.to_string())
        }
        PutError::BadDigest => S3Error::with_message(S3ErrorCode::BadDigest, e.to_string()),
        PutError::Client(c) => from_client(c, Subject::Object),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        let fs = |e| ClientError::Fs(e);
        let nf = fs(FsError::NotFound { path: "/b/k".into() });
        assert_eq!(*from_client(&nf, Subject::Object).code(), S3ErrorCode::NoSuchKey);
        assert_eq!(*from_client(&nf, Subject::Bucket).code(), S3ErrorCode::NoSuchBucket);
        let cases = [
            (fs(FsError::NotEmpty { path: "/b".into() }), S3ErrorCode::BucketNotEmpty),
            (fs(FsError::AlreadyExists { path: "/b".into() }), S3ErrorCode::BucketAlreadyOwnedByYou),
            (fs(FsError::IsADirectory { path: "/b/k".into() }), S3ErrorCode::InvalidArgument),
            (fs(FsError::NotADirectory { path: "/b/k".into() }), S3ErrorCode::InvalidArgument),
            (fs(FsError::NotEnoughServers { needed: 2, alive: 1 }), S3ErrorCode::ServiceUnavailable),
            (
                ClientError::MetaUnreachable { addrs: "x".into(), timeout_ms: 1, last: "y".into() },
                S3ErrorCode::ServiceUnavailable,
            ),
            (ClientError::ChunkUnavailable { chunk_id: 1, details: "x".into() }, S3ErrorCode::ServiceUnavailable),
            (ClientError::Rpc { code: tonic::Code::Unavailable, message: "x".into() }, S3ErrorCode::ServiceUnavailable),
            (ClientError::Rpc { code: tonic::Code::Internal, message: "x".into() }, S3ErrorCode::InternalError),
        ];
        for (e, want) in cases {
            assert_eq!(*from_client(&e, Subject::Object).code(), want, "{e}");
        }
        assert_eq!(*from_put(&PutError::BadDigest).code(), S3ErrorCode::BadDigest);
        assert_eq!(*from_put(&PutError::Incomplete { declared: 5, got: 3 }).code(), S3ErrorCode::IncompleteBody);
        assert_eq!(*from_name(&NameError::BadBucket { bucket: "B".into() }).code(), S3ErrorCode::InvalidBucketName);
        assert_eq!(*from_name(&NameError::Empty).code(), S3ErrorCode::InvalidArgument);
        assert_eq!(*from_name(&NameError::KeyTooLong { len: 2000 }).code(), S3ErrorCode::KeyTooLongError);
    }
}
