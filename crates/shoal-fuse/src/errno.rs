//! The one table from the client library's errors to the errno a system
//! call returns through the mount. Everything the table does not name is
//! `EIO`: the cluster could not be reached in time, no replica could serve
//! a read, a write could not be made durable.

use fuser::Errno;
use shoal_client::ClientError;
use shoal_core::FsError;
use shoal_core::path::PathError;
use shoal_proto::chunk::ChunkErrorKind;

/// The errno for `e`.
pub fn errno(e: &ClientError) -> Errno {
    match e {
        ClientError::Fs(fs) => fs_errno(fs),
        ClientError::InvalidArgument(_) => Errno::EINVAL,
        ClientError::Replica { kind: ChunkErrorKind::NoSpace, .. } => Errno::ENOSPC,
        ClientError::WriteFailed { no_space: true, .. } => Errno::ENOSPC,
        ClientError::Rpc { code: tonic::Code::ResourceExhausted, .. } => Errno::ENOSPC,
        ClientError::MetaUnreachable { .. }
        | ClientError::ChunkUnavailable { .. }
        | ClientError::LayoutChanged { .. }
        | ClientError::WriteFailed { .. }
        | ClientError::BadAddress { .. }
        | ClientError::Replica { .. }
        | ClientError::Rpc { .. } => Errno::EIO,
    }
}

/// The errno for a namespace error.
pub fn fs_errno(e: &FsError) -> Errno {
    match e {
        FsError::NotFound { .. } => Errno::ENOENT,
        // An inode the kernel still names (a cached entry, an open file)
        // that another mount removed: ESTALE makes the kernel walk the path
        // again with fresh lookups (an open or stat of a name now free, or
        // now another file's, then works); through a file handle it says
        // the file is gone, as NFS does.
        FsError::StaleInode { .. } => Errno::ESTALE,
        FsError::AlreadyExists { .. } => Errno::EEXIST,
        FsError::NotADirectory { .. } => Errno::ENOTDIR,
        FsError::IsADirectory { .. } => Errno::EISDIR,
        FsError::NotEmpty { .. } => Errno::ENOTEMPTY,
        FsError::RenameIntoSelf { .. } => Errno::EINVAL,
        FsError::Root => Errno::EBUSY,
        FsError::InvalidPath(PathError::NameTooLong { .. } | PathError::PathTooLong { .. }) => Errno::ENAMETOOLONG,
        FsError::InvalidPath(_) | FsError::InvalidArgument { .. } | FsError::BadReplication { .. } => Errno::EINVAL,
        FsError::NoAttribute { .. } => Errno::NO_XATTR,
        FsError::AttributeLimit { .. } => Errno::E2BIG,
        FsError::LinkToDirectory { .. } => Errno::EPERM,
        FsError::TooManyLinks { .. } => Errno::EMLINK,
        FsError::TooManyLocks { .. } => Errno::ENOLCK,
        FsError::Deadlock { .. } => Errno::EDEADLK,
        // Too few live servers for a new chunk's replicas (running out of
        // room shows as `WriteFailed { no_space }` instead): the cluster
        // cannot take the write now, as when it cannot be reached.
        FsError::NotEnoughServers { .. } => Errno::EIO,
        FsError::Fenced { .. } => Errno::EACCES,
        FsError::WouldBlock { .. } | FsError::LockTimeout { .. } => Errno::EAGAIN,
        FsError::NoReplica { .. }
        | FsError::ChunkChanged { .. }
        | FsError::SessionExpired { .. }
        | FsError::NotLocked { .. }
        | FsError::LockUpgrade { .. } => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(e: FsError) -> i32 {
        errno(&ClientError::Fs(e)).code()
    }

    #[test]
    fn namespace_errors_case_by_case() {
        let p = || "/a".to_string();
        assert_eq!(fs(FsError::NotFound { path: p() }), libc::ENOENT);
        assert_eq!(fs(FsError::StaleInode { inode: 9 }), libc::ESTALE);
        assert_eq!(fs(FsError::AlreadyExists { path: p() }), libc::EEXIST);
        assert_eq!(fs(FsError::NotADirectory { path: p() }), libc::ENOTDIR);
        assert_eq!(fs(FsError::IsADirectory { path: p() }), libc::EISDIR);
        assert_eq!(fs(FsError::NotEmpty { path: p() }), libc::ENOTEMPTY);
        assert_eq!(fs(FsError::RenameIntoSelf { src: p(), dst: p() }), libc::EINVAL);
        let long = PathError::NameTooLong { path: p(), len: 300, max: 255 };
        assert_eq!(fs(FsError::InvalidPath(long)), libc::ENAMETOOLONG);
        assert_eq!(fs(FsError::InvalidPath(PathError::Nul { path: p() })), libc::EINVAL);
        assert_eq!(fs(FsError::NoAttribute { path: p(), name: "user.x".into() }), libc::ENODATA);
        assert_eq!(fs(FsError::AttributeLimit { path: p(), limit: "big".into() }), libc::E2BIG);
        assert_eq!(fs(FsError::NotEnoughServers { needed: 2, alive: 1 }), libc::EIO);
        assert_eq!(fs(FsError::Fenced { path: p(), token: 1 }), libc::EACCES);
        assert_eq!(fs(FsError::NoReplica { chunk_id: 1 }), libc::EIO);
        assert_eq!(fs(FsError::LinkToDirectory { path: p() }), libc::EPERM);
        assert_eq!(fs(FsError::TooManyLinks { path: p(), max: 1 }), libc::EMLINK);
        assert_eq!(fs(FsError::TooManyLocks { path: p(), max: 1 }), libc::ENOLCK);
        assert_eq!(fs(FsError::Deadlock { path: p() }), libc::EDEADLK);
    }

    #[test]
    fn cluster_errors_are_eio_or_enospc() {
        let unreachable = ClientError::MetaUnreachable { addrs: "x".into(), timeout_ms: 1, last: "y".into() };
        assert_eq!(errno(&unreachable).code(), libc::EIO);
        let full = ClientError::Replica { replica: "r".into(), kind: ChunkErrorKind::NoSpace, message: "m".into() };
        assert_eq!(errno(&full).code(), libc::ENOSPC);
        let corrupt = ClientError::Replica { replica: "r".into(), kind: ChunkErrorKind::Corrupt, message: "m".into() };
        assert_eq!(errno(&corrupt).code(), libc::EIO);
        assert_eq!(errno(&ClientError::ChunkUnavailable { chunk_id: 1, details: "d".into() }).code(), libc::EIO);
        let failed = |no_space| ClientError::WriteFailed { chunk_id: 1, attempts: 2, last: "l".into(), no_space };
        assert_eq!(errno(&failed(true)).code(), libc::ENOSPC, "out of chains for lack of room");
        assert_eq!(errno(&failed(false)).code(), libc::EIO, "out of chains for other reasons");
        assert_eq!(errno(&ClientError::InvalidArgument("x".into())).code(), libc::EINVAL);
    }
}
