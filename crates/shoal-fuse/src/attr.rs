//! What the kernel is told about an inode: meta's attributes as a FUSE
//! `FileAttr`, and which kind of inode a mknod(2) mode asks for. Meta's
//! inode number is the FUSE inode number (the root is 1 in both).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use shoal_client::{Special, Stat};

/// The block size `stat` reports: what a reader should ask for at a time.
pub const BLOCK_SIZE_BYTES: u32 = 1 << 20;

fn time(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

/// The kind of inode a stat describes.
pub fn kind(stat: &Stat) -> FileType {
    match (stat.is_dir, stat.is_symlink, stat.special) {
        (true, _, _) => FileType::Directory,
        (false, true, _) => FileType::Symlink,
        (false, false, Some(Special::Fifo)) => FileType::NamedPipe,
        (false, false, Some(Special::Socket)) => FileType::Socket,
        (false, false, Some(Special::CharDevice)) => FileType::CharDevice,
        (false, false, Some(Special::BlockDevice)) => FileType::BlockDevice,
        (false, false, None) => FileType::RegularFile,
    }
}

/// What a mknod(2) `mode` asks for by its file type bits: a special file,
/// or None for a regular file. A directory is `EPERM` (as Linux answers;
/// mkdir makes them), anything else `EINVAL`.
pub fn mknod_kind(mode: u32) -> Result<Option<Special>, Errno> {
    match mode & libc::S_IFMT {
        libc::S_IFREG | 0 => Ok(None),
        libc::S_IFIFO => Ok(Some(Special::Fifo)),
        libc::S_IFSOCK => Ok(Some(Special::Socket)),
        libc::S_IFCHR => Ok(Some(Special::CharDevice)),
        libc::S_IFBLK => Ok(Some(Special::BlockDevice)),
        libc::S_IFDIR => Err(Errno::EPERM),
        _ => Err(Errno::EINVAL),
    }
}

/// The link count of `stat`; a meta node too old to send one (0) has no
/// hard links: a directory counts "." and its parent's entry, anything else
/// its one name.
fn nlink(stat: &Stat) -> u32 {
    match (stat.nlink, stat.is_dir) {
        (0, true) => 2,
        (0, false) => 1,
        (n, _) => n,
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
        nlink: nlink(stat),
        uid: stat.uid,
        gid: stat.gid,
        // The kernel's encoding of dev_t in 32 bits, as mknod gave it.
        rdev: stat.rdev as u32,
        blksize: BLOCK_SIZE_BYTES,
        flags: 0,
    }
}

/// Attributes for a `.` or `..` entry of a readdirplus answer, which the
/// kernel skips (it neither caches nor counts them): a directory, nothing else.
pub fn dot_attr(ino: u64) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::Directory,
        perm: 0o755,
        nlink: 2,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
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
            nlink: 3,
            special: None,
            rdev: 0,
        };
        let a = file_attr(&stat, 1025);
        assert_eq!((a.ino, a.size, a.blocks, a.perm, a.uid, a.gid), (INodeNo(7), 1025, 3, 0o4755, 1000, 100));
        assert_eq!(a.kind, FileType::RegularFile);
        assert_eq!(a.mtime.duration_since(UNIX_EPOCH).unwrap(), Duration::new(1, 7));
        assert_eq!(a.nlink, 3);
        // Special files keep their kind and device number.
        let dev = Stat { special: Some(Special::CharDevice), rdev: 0x0501, nlink: 1, ..stat.clone() };
        let a = file_attr(&dev, 0);
        assert_eq!((a.kind, a.rdev, a.nlink), (FileType::CharDevice, 0x0501, 1));
        let fifo = Stat { special: Some(Special::Fifo), ..stat.clone() };
        assert_eq!(kind(&fifo), FileType::NamedPipe);
        assert_eq!(kind(&Stat { special: Some(Special::Socket), ..stat.clone() }), FileType::Socket);
        assert_eq!(kind(&Stat { special: Some(Special::BlockDevice), ..stat.clone() }), FileType::BlockDevice);
        // A meta node that sends no link count: one name, or a directory's two.
        assert_eq!(file_attr(&Stat { nlink: 0, ..stat.clone() }, 0).nlink, 1);
        assert_eq!(file_attr(&Stat { nlink: 0, is_dir: true, ..stat }, 0).nlink, 2);
    }

    #[test]
    fn mknod_modes_name_their_kind() {
        assert_eq!(mknod_kind(libc::S_IFREG | 0o644), Ok(None));
        assert_eq!(mknod_kind(0o644), Ok(None), "no type bits: a regular file, as mknod(2) says");
        assert_eq!(mknod_kind(libc::S_IFIFO | 0o600), Ok(Some(Special::Fifo)));
        assert_eq!(mknod_kind(libc::S_IFSOCK | 0o755), Ok(Some(Special::Socket)));
        assert_eq!(mknod_kind(libc::S_IFCHR), Ok(Some(Special::CharDevice)));
        assert_eq!(mknod_kind(libc::S_IFBLK), Ok(Some(Special::BlockDevice)));
        assert_eq!(mknod_kind(libc::S_IFDIR | 0o755), Err(Errno::EPERM));
        assert_eq!(mknod_kind(libc::S_IFLNK), Err(Errno::EINVAL));
    }
}
