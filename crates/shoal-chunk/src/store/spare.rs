//! The store's directory, with spare inodes: files the store removes are
//! emptied and kept under `DIR/spare/`, and the next file it makes is one
//! of them renamed into place.
//!
//! Why: every new replica makes two files (its data and its `.meta`), and a
//! busy server removes as many. On ext4 without a journal (this project's
//! machines), making an inode skips, one by one, every inode of its block
//! group freed in the last half minute (the kernel's `recently_deleted`),
//! so with files coming and going each new file costs time in proportion to
//! the files just removed. A profile of `small-write` on a cluster still
//! deleting the previous run's files had a fifth of all CPU there. A
//! renamed spare allocates no inode and frees none.
//!
//! Rules:
//! - A spare is empty (its blocks go back to the file system when it is
//!   retired) and named by a number in `spare/`. Nothing in `spare/` is a
//!   replica: recovery never looks there.
//! - A file made from a spare is opened with `O_TRUNC` at once, so it is as
//!   empty as a new one; a crash between the rename and the open leaves a
//!   file that recovery treats as any other leftover (a data file without a
//!   `.meta`, a `.meta.tmp`) and removes.
//! - At most [`SPARES_MAX`] are kept; past that a removal is an unlink.
//! - A file replaced by a rename ([`Disk::rename_over`]) is kept by a second
//!   name made before the rename, and becomes a spare only after it.
//! - When the store opens, a spare with another name (a crash between that
//!   link and the rename) loses its spare name, and a spare that is not
//!   empty is emptied.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

/// Spares kept at most; each is an inode and a directory entry.
pub(super) const SPARES_MAX: usize = 65_536;

/// The directory of replica files (`DIR/chunks`, which this derefs to) and
/// its spare inodes (`DIR/spare`).
pub(super) struct Disk {
    dir: PathBuf,
    spare_dir: PathBuf,
    /// Names (numbers) of the spares ready in `spare_dir`.
    free: Mutex<Vec<u64>>,
    /// The next number to name a spare by.
    next: AtomicU64,
}

impl std::ops::Deref for Disk {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.dir
    }
}

impl AsRef<Path> for Disk {
    fn as_ref(&self) -> &Path {
        &self.dir
    }
}

impl Disk {
    /// Opens (making them if needed) `root/chunks` and `root/spare`, and
    /// takes stock of the spares: see the module's rules for what it mends.
    pub(super) fn open(root: &Path) -> io::Result<Disk> {
        let dir = root.join("chunks");
        let spare_dir = root.join("spare");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&spare_dir)?;
        let mut free = Vec::new();
        let mut next = 0;
        for entry in std::fs::read_dir(&spare_dir)? {
            let entry = entry?;
            let path = entry.path();
            let Some(n) = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) else {
                // Not ours (or a number too large): a spare is never anything else.
                continue;
            };
            let meta = std::fs::symlink_metadata(&path)?;
            if !meta.is_file() || meta.nlink() > 1 || free.len() >= SPARES_MAX {
                super::files::remove_if_present(&path).map_err(into_io)?;
                continue;
            }
            if meta.len() > 0 {
                OpenOptions::new().write(true).open(&path)?.set_len(0)?;
            }
            next = next.max(n + 1);
            free.push(n);
        }
        Ok(Disk { dir, spare_dir, free: Mutex::new(free), next: AtomicU64::new(next) })
    }

    /// Spares ready now.
    pub(super) fn spares(&self) -> usize {
        self.free.lock().expect("spare lock").len()
    }

    /// Makes an empty file at `path` (replacing any file there), for reading
    /// and writing: a spare renamed into place when there is one, else a new
    /// file.
    pub(super) fn create(&self, path: &Path) -> io::Result<File> {
        loop {
            let Some(n) = self.free.lock().expect("spare lock").pop() else { break };
            match std::fs::rename(self.spare_dir.join(n.to_string()), path) {
                Ok(()) => break,
                // Gone behind our back: try the next one.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(spare = n, error = %e, "could not use a spare inode; making a new file");
                    break;
                }
            }
        }
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)
    }

    /// Removes the file at `path`, ignoring that it is already gone: keeps
    /// its inode, emptied, as a spare while there is room.
    pub(super) fn remove(&self, path: &Path) -> Result<(), StoreError> {
        let Some(n) = self.reserve_name() else {
            return super::files::remove_if_present(path);
        };
        let spare = self.spare_dir.join(n.to_string());
        match std::fs::rename(path, &spare) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            // A file the store can't move (another file system, a
            // directory in the way): remove it as before.
            Err(_) => return super::files::remove_if_present(path),
        }
        self.settle(n, &spare);
        Ok(())
    }

    /// Renames `from` over `to`, keeping the inode this frees (if there was
    /// a file at `to`) as a spare: a second name for it is made first, and
    /// it becomes a spare (emptied) only once the rename has left that name
    /// its only one, so nothing ever empties or reuses the live file.
    pub(super) fn rename_over(&self, from: &Path, to: &Path) -> io::Result<()> {
        let kept = self.reserve_name().filter(|n| match std::fs::hard_link(to, self.spare_dir.join(n.to_string())) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => {
                tracing::debug!(error = %e, "could not keep a replaced file as a spare");
                false
            }
        });
        let renamed = std::fs::rename(from, to);
        if let Some(n) = kept {
            let spare = self.spare_dir.join(n.to_string());
            match renamed {
                Ok(()) => self.settle(n, &spare),
                // `to` still names the inode: drop only the second name.
                Err(_) => {
                    let _ = std::fs::remove_file(&spare);
                }
            }
        }
        renamed
    }

    /// A number for a new spare, or None when the store keeps enough.
    fn reserve_name(&self) -> Option<u64> {
        (self.spares() < SPARES_MAX).then(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Empties the spare just named `n` and makes it ready; one that can't
    /// be emptied is removed.
    fn settle(&self, n: u64, spare: &Path) {
        if let Err(e) = OpenOptions::new().write(true).open(spare).and_then(|f| f.set_len(0)) {
            tracing::warn!(spare = n, error = %e, "could not empty a spare inode; removing it");
            let _ = std::fs::remove_file(spare);
            return;
        }
        self.free.lock().expect("spare lock").push(n);
    }
}

fn into_io(e: StoreError) -> io::Error {
    match e {
        StoreError::Io(e) | StoreError::DiskFull(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        v.sort();
        v
    }

    #[test]
    fn a_removed_file_comes_back_empty_as_the_next_file_made() {
        let d = tempfile::tempdir().unwrap();
        let disk = Disk::open(d.path()).unwrap();
        let a = disk.join("a");
        std::fs::write(&a, b"some bytes").unwrap();
        let ino = std::fs::metadata(&a).unwrap().ino();
        disk.remove(&a).unwrap();
        assert!(!a.exists());
        assert_eq!(disk.spares(), 1);
        assert_eq!(std::fs::metadata(d.path().join("spare/0")).unwrap().len(), 0, "a spare is empty");
        // Removing what is not there is fine, and changes nothing.
        disk.remove(&a).unwrap();
        assert_eq!(disk.spares(), 1);

        let b = disk.join("b");
        let mut f = disk.create(&b).unwrap();
        assert_eq!(std::fs::metadata(&b).unwrap().ino(), ino, "the spare's inode is reused");
        assert_eq!(f.metadata().unwrap().len(), 0);
        f.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&b).unwrap(), b"new");
        assert_eq!(disk.spares(), 0);
        assert!(names(&d.path().join("spare")).is_empty());
        // With no spare left, a new file is made.
        let c = disk.join("c");
        disk.create(&c).unwrap();
        assert_ne!(std::fs::metadata(&c).unwrap().ino(), ino);
    }

    #[test]
    fn a_file_made_over_another_replaces_it_and_a_replaced_inode_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let disk = Disk::open(d.path()).unwrap();
        let (old, tmp) = (disk.join("x.meta"), disk.join("x.meta.tmp"));
        std::fs::write(&old, b"old meta").unwrap();
        let old_ino = std::fs::metadata(&old).unwrap().ino();
        std::fs::write(&tmp, b"stale").unwrap();
        let mut f = disk.create(&tmp).unwrap();
        f.write_all(b"new meta").unwrap();
        disk.rename_over(&tmp, &old).unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), b"new meta");
        assert_eq!(disk.spares(), 1);
        let spare = d.path().join("spare/0");
        assert_eq!(std::fs::metadata(&spare).unwrap().ino(), old_ino, "the replaced inode became the spare");
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 0);
        // A rename that fails keeps the file it would have replaced whole,
        // and makes no spare of it.
        assert!(disk.rename_over(&disk.join("absent.tmp"), &old).is_err());
        assert_eq!(std::fs::read(&old).unwrap(), b"new meta");
        assert_eq!(disk.spares(), 1);
        assert_eq!(names(&d.path().join("spare")), ["0"]);
        // Nothing at the target: nothing kept.
        std::fs::write(&tmp, b"x").unwrap();
        disk.rename_over(&tmp, &disk.join("fresh.meta")).unwrap();
        assert_eq!(disk.spares(), 1);
    }

    #[test]
    fn open_mends_spares_a_crash_left_and_keeps_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let spare = d.path().join("spare");
        std::fs::create_dir_all(&spare).unwrap();
        std::fs::create_dir_all(d.path().join("chunks")).unwrap();
        std::fs::write(spare.join("3"), b"left full by a crash before it was emptied").unwrap();
        std::fs::write(spare.join("7"), b"").unwrap();
        // A link made just before a rename that never came: the replica's
        // file keeps its bytes, the spare name goes.
        let meta = d.path().join("chunks/0000000000000001.meta");
        std::fs::write(&meta, b"a live meta").unwrap();
        std::fs::hard_link(&meta, spare.join("9")).unwrap();
        std::fs::write(spare.join("not-a-spare"), b"x").unwrap();
        let disk = Disk::open(d.path()).unwrap();
        assert_eq!(disk.spares(), 2);
        assert_eq!(std::fs::read(&meta).unwrap(), b"a live meta");
        assert_eq!(std::fs::metadata(spare.join("3")).unwrap().len(), 0);
        assert_eq!(names(&spare), ["3", "7", "not-a-spare"]);
        // New names never collide with those found.
        disk.remove(&meta).unwrap();
        assert_eq!(names(&spare), ["3", "7", "8", "not-a-spare"]);
    }
}
