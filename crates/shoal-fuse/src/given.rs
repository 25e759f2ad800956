//! What the kernel holds of each inode's attributes, as far as the mount can
//! tell, so that an open drops the kernel's attributes only when meta's
//! fresh ones differ from them.
//!
//! Close-to-open asks every open to fetch meta's attributes and make the
//! kernel use them. FUSE cannot push attributes to the kernel, only drop
//! them, after which the kernel asks again (one more meta call, most often
//! for the very attributes the lookup just before the open gave). So the
//! mount notes every attribute set it answers ([`Given::note`]) with the
//! mount's change count then, and an open skips the drop when
//! ([`Given::holds`]):
//! - the inode's note is one attribute set, equal to meta's fresh one;
//! - this mount made no change since the note, and none is under way (a
//!   write or truncate through this mount also changes the kernel's copy,
//!   without an answer of ours).
//!
//! Two answers of different attributes for one inode may reach the kernel
//! in either order, and an answer may not reach it at all (its caller was
//! killed), so a note that differs from the one before makes the inode
//! *unsure* until the next drop. A read that comes back short before the
//! noted size makes it unsure too: the kernel then cuts its own size to the
//! read's end. An inode not noted, or unsure, is dropped at open, as before.
//!
//! The notes are bounded: past [`GIVEN_MAX`] inodes, new ones are not noted
//! (and are dropped at open); the kernel's forgets remove them.

use std::collections::HashMap;

use fuser::FileAttr;

/// Inodes whose given attributes are noted at most.
pub const GIVEN_MAX: usize = 1 << 18;

/// What the kernel was last given of one inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Note {
    /// These attributes, at the mount's change count `changes`.
    Attr { attr: FileAttr, changes: u64 },
    /// Answers that differ may have reached the kernel in either order.
    Unsure,
}

/// The attributes the kernel was given, per inode.
#[derive(Debug, Default)]
pub struct Given {
    notes: HashMap<u64, Note>,
}

impl Given {
    /// Notes that `attr` is answered to the kernel at change count `changes`.
    pub fn note(&mut self, attr: &FileAttr, changes: u64) {
        let ino = attr.ino.0;
        let next = match self.notes.get(&ino) {
            None if self.notes.len() >= GIVEN_MAX => return,
            None => Note::Attr { attr: *attr, changes },
            Some(Note::Attr { attr: before, .. }) if before == attr => Note::Attr { attr: *attr, changes },
            Some(_) => Note::Unsure,
        };
        self.notes.insert(ino, next);
    }

    /// A read of inode `ino` ended short at `end`: the kernel cuts its size
    /// to `end` if it held more.
    pub fn note_short_read(&mut self, ino: u64, end: u64) {
        if let Some(note) = self.notes.get_mut(&ino)
            && matches!(note, Note::Attr { attr, .. } if attr.size > end)
        {
            *note = Note::Unsure;
        }
    }

    /// Whether the kernel surely holds `fresh` for its inode (or nothing
    /// valid), given the mount's change count `changes` and the number of
    /// changes under way `in_flight` now.
    pub fn holds(&self, fresh: &FileAttr, changes: u64, in_flight: u64) -> bool {
        in_flight == 0
            && matches!(self.notes.get(&fresh.ino.0),
                Some(Note::Attr { attr, changes: at }) if attr == fresh && *at == changes)
    }

    /// The kernel's attributes of `ino` are dropped, or the kernel forgot
    /// the inode: nothing it holds is known.
    pub fn forget(&mut self, ino: u64) {
        self.notes.remove(&ino);
    }

    /// Inodes noted.
    pub fn len(&self) -> usize {
        self.notes.len()
    }

    /// Whether no inode is noted.
    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use fuser::{FileType, INodeNo};

    use super::*;

    fn attr(ino: u64, size: u64) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::RegularFile,
            perm: 0o644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    #[test]
    fn the_same_attributes_at_the_same_count_are_held() {
        let mut g = Given::default();
        assert!(!g.holds(&attr(5, 10), 0, 0), "nothing noted");
        g.note(&attr(5, 10), 3);
        assert!(g.holds(&attr(5, 10), 3, 0));
        assert!(!g.holds(&attr(5, 11), 3, 0), "meta's size differs");
        assert!(!g.holds(&attr(5, 10), 4, 0), "a change since");
        assert!(!g.holds(&attr(5, 10), 3, 1), "a change under way");
        assert!(!g.holds(&attr(6, 10), 3, 0), "another inode");
        // The same answer again moves the count forward.
        g.note(&attr(5, 10), 7);
        assert!(g.holds(&attr(5, 10), 7, 0));
    }

    #[test]
    fn differing_answers_are_unsure_until_forgotten() {
        let mut g = Given::default();
        g.note(&attr(5, 10), 0);
        g.note(&attr(5, 20), 0);
        assert!(!g.holds(&attr(5, 20), 0, 0), "either answer may be the kernel's");
        assert!(!g.holds(&attr(5, 10), 0, 0));
        g.note(&attr(5, 20), 0);
        assert!(!g.holds(&attr(5, 20), 0, 0), "unsure stays unsure");
        g.forget(5);
        g.note(&attr(5, 20), 0);
        assert!(g.holds(&attr(5, 20), 0, 0));
    }

    #[test]
    fn a_short_read_before_the_noted_size_is_unsure() {
        let mut g = Given::default();
        g.note(&attr(5, 100), 0);
        g.note_short_read(5, 100);
        assert!(g.holds(&attr(5, 100), 0, 0), "a read that ends at the size cuts nothing");
        g.note_short_read(5, 50);
        assert!(!g.holds(&attr(5, 100), 0, 0), "the kernel may hold 50");
        g.note_short_read(9, 0);
        assert_eq!(g.len(), 1, "a short read of an inode not noted notes nothing");
    }

    #[test]
    fn notes_are_bounded() {
        let mut g = Given::default();
        for ino in 0..GIVEN_MAX as u64 {
            g.note(&attr(ino, 1), 0);
        }
        g.note(&attr(u64::MAX, 1), 0);
        assert_eq!(g.len(), GIVEN_MAX);
        assert!(!g.holds(&attr(u64::MAX, 1), 0, 0), "past the bound an inode is not noted");
        g.note(&attr(0, 2), 0);
        assert!(!g.holds(&attr(0, 2), 0, 0), "a noted inode still turns unsure");
        g.forget(1);
        g.note(&attr(u64::MAX, 1), 0);
        assert!(g.holds(&attr(u64::MAX, 1), 0, 0), "a forget makes room");
    }
}
