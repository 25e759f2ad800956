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
//! Two answers of different attributes for one inode may be applied by the
//! kernel in either order (a mutating call's answer is applied without the
//! kernel's check of its age), so a note that differs from the one before
//! makes the inode *unsure* until the next drop. A read that comes back
//! short before the noted size makes it unsure too: the kernel then cuts its
//! own size to the read's end. So does a drop made while a change or a read
//! of the inode is under way (its answer may still land after the drop). An
//! inode not noted, or unsure, is dropped at open, as before.
//!
//! The notes are bounded: past [`GIVEN_MAX`] inodes, new ones are not noted
//! (and are dropped at open). A note goes when the kernel forgets the inode:
//! the mount counts the entries it gives the kernel per inode (its lookup
//! count) and removes the note when the kernel's forgets bring it to zero,
//! so a forget that arrives after a later lookup keeps the later note.
//!
//! What is left: a mutating call's answer that the kernel applies only after
//! the call ended here and after a later drop. Its attributes were true when
//! answered, and they last at most the attribute TTL.

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
    /// Entries given to the kernel and not forgotten yet, per inode.
    lookups: HashMap<u64, u64>,
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
    /// valid), given the mount's change count `changes` now and whether it
    /// is `quiet` (no change under way, and no read of the inode).
    pub fn holds(&self, fresh: &FileAttr, changes: u64, quiet: bool) -> bool {
        quiet
            && matches!(self.notes.get(&fresh.ino.0),
                Some(Note::Attr { attr, changes: at }) if attr == fresh && *at == changes)
    }

    /// The kernel's attributes of `ino` are dropped (a notification): it
    /// holds none valid, unless an answer under way lands after the drop,
    /// which only a `quiet` mount rules out.
    pub fn dropped(&mut self, ino: u64, quiet: bool) {
        if quiet {
            self.notes.remove(&ino);
        } else if let Some(note) = self.notes.get_mut(&ino) {
            *note = Note::Unsure;
        }
    }

    /// An entry of `ino` is given to the kernel (a lookup, a create, a
    /// listing with attributes): its lookup count grows.
    pub fn looked_up(&mut self, ino: u64) {
        *self.lookups.entry(ino).or_insert(0) += 1;
    }

    /// The kernel forgot `n` lookups of `ino`; at none left it holds
    /// nothing of the inode, and the note goes.
    pub fn forget(&mut self, ino: u64, n: u64) {
        let left = self.lookups.get(&ino).map_or(0, |c| c.saturating_sub(n));
        if left == 0 {
            self.lookups.remove(&ino);
            self.notes.remove(&ino);
        } else {
            self.lookups.insert(ino, left);
        }
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
        assert!(!g.holds(&attr(5, 10), 0, true), "nothing noted");
        g.note(&attr(5, 10), 3);
        assert!(g.holds(&attr(5, 10), 3, true));
        assert!(!g.holds(&attr(5, 11), 3, true), "meta's size differs");
        assert!(!g.holds(&attr(5, 10), 4, true), "a change since");
        assert!(!g.holds(&attr(5, 10), 3, false), "a change or a read under way");
        assert!(!g.holds(&attr(6, 10), 3, true), "another inode");
        // The same answer again moves the count forward.
        g.note(&attr(5, 10), 7);
        assert!(g.holds(&attr(5, 10), 7, true));
    }

    #[test]
    fn differing_answers_are_unsure_until_forgotten() {
        let mut g = Given::default();
        g.note(&attr(5, 10), 0);
        g.note(&attr(5, 20), 0);
        assert!(!g.holds(&attr(5, 20), 0, true), "either answer may be the kernel's");
        assert!(!g.holds(&attr(5, 10), 0, true));
        g.note(&attr(5, 20), 0);
        assert!(!g.holds(&attr(5, 20), 0, true), "unsure stays unsure");
        g.dropped(5, false);
        g.note(&attr(5, 20), 0);
        assert!(!g.holds(&attr(5, 20), 0, true), "a drop while not quiet leaves it unsure");
        g.dropped(5, true);
        g.note(&attr(5, 20), 0);
        assert!(g.holds(&attr(5, 20), 0, true));
        g.dropped(5, false);
        assert!(!g.holds(&attr(5, 20), 0, true), "an answer under way may land after the drop");
    }

    #[test]
    fn a_note_goes_when_the_kernel_forgets_every_lookup() {
        let mut g = Given::default();
        g.looked_up(5);
        g.note(&attr(5, 10), 0);
        g.looked_up(5); // a later lookup, before the forget of the first
        g.forget(5, 1);
        assert!(g.holds(&attr(5, 10), 0, true), "one lookup is left: the note stays");
        g.forget(5, 1);
        assert!(!g.holds(&attr(5, 10), 0, true), "all forgotten");
        assert!(g.is_empty());
        g.forget(6, 3);
        assert!(g.is_empty(), "a forget of an inode never given changes nothing");
    }

    #[test]
    fn a_short_read_before_the_noted_size_is_unsure() {
        let mut g = Given::default();
        g.note(&attr(5, 100), 0);
        g.note_short_read(5, 100);
        assert!(g.holds(&attr(5, 100), 0, true), "a read that ends at the size cuts nothing");
        g.note_short_read(5, 50);
        assert!(!g.holds(&attr(5, 100), 0, true), "the kernel may hold 50");
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
        assert!(!g.holds(&attr(u64::MAX, 1), 0, true), "past the bound an inode is not noted");
        g.note(&attr(0, 2), 0);
        assert!(!g.holds(&attr(0, 2), 0, true), "a noted inode still turns unsure");
        g.forget(1, 1);
        g.note(&attr(u64::MAX, 1), 0);
        assert!(g.holds(&attr(u64::MAX, 1), 0, true), "a forget makes room");
    }
}
