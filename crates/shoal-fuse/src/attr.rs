//! What the kernel is told about an inode: meta's attributes as a FUSE
//! `FileAttr`. Meta's inode number is the FUSE inode number (the root is 1
//! in both).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use shoal_client::Stat;

/// The block size `stat` reports: what a reader should ask for at a time.
pub const BLOCK_SIZE_BYTES: u32 = 1 << 20;

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The kind of inode a stat describes.
pub fn kind(stat: &Stat) -> FileType {
    match (stat.is_dir, stat.is_symlink) {
        (true, _) => FileType::Directory,
        (false, true) => FileType::Symlink,
        (false, false) => FileType::RegularFile,
    }
}

/// The attributes of `stat`, with `size` as the mount knows it (bytes this
/// mount holds unsent may lie past meta's size).
pub fn file_attr(stat: &Stat, size: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(stat.inode),
        size,
        blocks: size.div_ceil(512),
        atime: time(stat.atime_ns),
        mtime: time(stat.mtime_ns),
        ctime: time(stat.ctime_ns),
        crtime: time(stat.ctime_ns),
        kind: kind(stat),
        perm: (stat.mode & 0o7777) as u16,
        // Meta has no hard links: a file has one name, a directory its own
        // "." and its parent's entry (subdirectories' ".." are not counted).
        nlink: if stat.is_dir { 2 } else { 1 },
        uid: stat.uid,
        gid: stat.gid,
        rdev: 0,
        blksize: BLOCK_SIZE_BYTES,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_carry_mode_owner_and_nanoseconds() {
        let stat = Stat {
            inode: 7,
            is_dir: false,
            size: 1000,
            mode: 0o4755,
            mtime_ms: 1,
            replication: 2,
            chunk_size: 64,
            chunk_count: 1,
            xattrs: Default::default(),
            uid: 1000,
            gid: 100,
            atime_ns: 1,
            mtime_ns: 1_000_000_007,
            ctime_ns: 3,
            is_symlink: false,
            target: String::new(),
        };
        let a = file_attr(&stat, 1025);
        assert_eq!((a.ino, a.size, a.blocks, a.perm, a.uid, a.gid), (INodeNo(7), 1025, 3, 0o4755, 1000, 100));
        assert_eq!(a.kind, FileType::RegularFile);
        assert_eq!(a.mtime.duration_since(UNIX_EPOCH).unwrap(), Duration::new(1, 7));
        assert_eq!(a.nlink, 1);
    }
}
