//! The store's directory, with spare inodes: files the store removes are
//! emptied and kept under `DIR/spare/`, and the next data file or staged
//! `.meta` it makes is one of them renamed into place.
//!
//! Why: every new replica makes two files (its data and its `.meta`), and a
//! busy server removes as many. On ext4 without a journal (this project's
//! machines), making an inode skips, one by one, every inode of its block
//! group freed in the last tens of seconds (the kernel's `recently_deleted`),
//! so with files coming and going each new file costs time in proportion to
//! the files just removed. A profile of `small-write` on a cluster still
//! deleting the previous run's files had a fifth of all CPU there. A
//! renamed spare allocates no inode and frees none.
//!
//! The kernel holds freed inodes back for a reason: without a journal, a
//! crash can bring back a directory entry whose removal was not yet on
//! disk, and it must not then name an inode that holds another file's
//! bytes. So a spare follows the same rule, by its own means:
//! - A removed file is renamed into `spare/` and emptied, but becomes ready
//!   for reuse only after the next fsync of `chunks/` ([`Disk::sync`]) that
//!   began after the rename: until then it is *pending*. The fsync that
//!   makes each new `.meta` durable is that sync, so a busy server promotes
//!   its pending spares on every write.
//! - A file replaced by a rename ([`Disk::rename_over`]) is kept by a second
//!   name made before the rename, and is emptied and made ready only after
//!   the rename and the fsync of `chunks/` that makes it durable: before
//!   that, a crash could bring back the old name.
//! - A file made from a spare is opened with `O_TRUNC` at once, so it is as
//!   empty as a new one. Only data files and staged metas are made from
//!   spares, and a crash before they count leaves what recovery removes
//!   anyway (a data file without a `.meta`, a `.meta.tmp`), whatever bytes
//!   it holds; an install first makes its removal of the old copy durable,
//!   so no old `.meta` can come back beside the new data file. Undo records,
//!   which recovery reads, are always new inodes.
//! - Nothing in `spare/` is a replica: recovery never looks there. At most
//!   [`SPARES_MAX`] are kept; past that a removal is an unlink.
//! - When the store opens, it first fsyncs `chunks/`, so whatever the last
//!   run removed or renamed over there is durable. A spare is then used only
//!   if its inode has no other name in `chunks/` or `spare/` and a link
//!   count of 1 (`spare/` is never fsynced, so after a crash an inode may
//!   keep a stale spare name beside its newer one); it is emptied and ready.
//!   A spare name whose inode has other names, all of them counted by its
//!   links, is removed; one whose names and links disagree is left alone,
//!   unused.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
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
    /// Spares whose removal from `chunks/` may not be on disk yet.
    pending: Mutex<Vec<u64>>,
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
        // What the last run removed from `chunks/` or renamed over there may
        // still be only in the page cache: make it durable before any of
        // those inodes is emptied or reused.
        File::open(&dir)?.sync_all()?;
        let mut next = 0;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&spare_dir)? {
            let entry = entry?;
            // Only names this store gives: canonical decimal numbers.
            let Some(n) = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok().filter(|n| n.to_string() == s))
            else {
                continue;
            };
            next = next.max(n.saturating_add(1));
            let meta = std::fs::symlink_metadata(entry.path())?;
            if meta.is_file() && n < u64::MAX {
                found.push((n, meta));
            }
        }
        let mut free = Vec::new();
        if !found.is_empty() {
            // Names per inode, in `chunks/` and `spare/` (directory entries
            // carry the inode number). `spare/` is never fsynced, so after a
            // crash an inode may have a spare name beside its newer one.
            let mut names: HashMap<u64, u64> = HashMap::new();
            for e in std::fs::read_dir(&dir)? {
                *names.entry(e?.ino()).or_default() += 1;
            }
            for (_, meta) in &found {
                *names.entry(meta.ino()).or_default() += 1;
            }
            for (n, meta) in found {
                let path = spare_dir.join(n.to_string());
                let count = names.get_mut(&meta.ino()).expect("counted above");
                if *count == 1 && meta.nlink() == 1 {
                    if free.len() >= SPARES_MAX {
                        std::fs::remove_file(&path)?;
                    } else {
                        if meta.len() > 0 {
                            truncate(&path)?;
                        }
                        free.push(n);
                    }
                } else if *count == meta.nlink() {
                    // Every name is known, so dropping this one frees nothing
                    // another name holds.
                    std::fs::remove_file(&path)?;
                    *count -= 1;
                } else {
                    tracing::warn!(
                        spare = %path.display(),
                        names = *count,
                        links = meta.nlink(),
                        "a spare's inode has other names than its link count says; leaving it unused (fsck the file system)"
                    );
                }
            }
        }
        Ok(Disk { dir, spare_dir, free: Mutex::new(free), pending: Mutex::default(), next: AtomicU64::new(next) })
    }

    /// Spares kept now, ready or pending.
    pub(super) fn spares(&self) -> usize {
        self.free.lock().expect("spare lock").len() + self.pending.lock().expect("spare lock").len()
    }

    /// Makes an empty file at `path` (replacing any file there), for reading
    /// and writing: a ready spare renamed into place when there is one, else
    /// a new file. Only for files recovery removes if a crash finds them
    /// before they count (see the module's rules).
    pub(super) fn create(&self, path: &Path) -> io::Result<File> {
        loop {
            let Some(n) = self.free.lock().expect("spare lock").pop() else { break };
            match std::fs::rename(self.spare_path(n), path) {
                Ok(()) => break,
                // Gone behind our back: try the next one.
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                // Kept for later (a full disk, say); this file is made new.
                Err(e) => {
                    tracing::warn!(spare = n, error = %e, "could not use a spare inode; making a new file");
                    self.free.lock().expect("spare lock").push(n);
                    break;
                }
            }
        }
        OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)
    }

    /// Removes the file at `path`, ignoring that it is already gone: keeps
    /// its inode, emptied, as a pending spare while there is room.
    pub(super) fn remove(&self, path: &Path) -> Result<(), StoreError> {
        let Some(n) = self.reserve_name() else {
            return super::files::remove_if_present(path);
        };
        match std::fs::rename(path, self.spare_path(n)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            // A file the store can't move (another file system, a
            // directory in the way): remove it as before.
            Err(_) => return super::files::remove_if_present(path),
        }
        if self.empty(n) {
            self.pending.lock().expect("spare lock").push(n);
        }
        Ok(())
    }

    /// Fsyncs `chunks/`; the spares pending when it began are then ready.
    pub(super) fn sync(&self) -> io::Result<()> {
        let removed = std::mem::take(&mut *self.pending.lock().expect("spare lock"));
        let synced = File::open(&self.dir).and_then(|d| d.sync_all());
        match &synced {
            Ok(()) => self.free.lock().expect("spare lock").extend(removed),
            // After a failed fsync a later one may succeed without writing
            // what this one lost: never reuse these.
            Err(_) => {
                for n in removed {
                    let _ = std::fs::remove_file(self.spare_path(n));
                }
            }
        }
        synced
    }

    /// Renames `from` over `to` and makes that durable ([`Disk::sync`]),
    /// keeping the inode this frees (if there was a file at `to`) as a spare:
    /// a second name for it is made first, and it is emptied and made ready
    /// only once the synced rename has left that name its only one, so
    /// nothing ever empties or reuses a file a crash could bring back.
    pub(super) fn rename_over(&self, from: &Path, to: &Path) -> io::Result<()> {
        let kept = self.reserve_name().filter(|n| match std::fs::hard_link(to, self.spare_path(*n)) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => {
                tracing::debug!(error = %e, "could not keep a replaced file as a spare");
                false
            }
        });
        let done = std::fs::rename(from, to).and_then(|()| self.sync());
        if let Some(n) = kept {
            match done {
                Ok(()) => {
                    if self.empty(n) {
                        self.free.lock().expect("spare lock").push(n);
                    }
                }
                // Not known durable: drop the second name (the inode stays
                // `to`'s, or goes if the rename is done).
                Err(_) => {
                    let _ = std::fs::remove_file(self.spare_path(n));
                }
            }
        }
        done
    }

    fn spare_path(&self, n: u64) -> PathBuf {
        self.spare_dir.join(n.to_string())
    }

    /// A number for a new spare, or None when the store keeps enough.
    fn reserve_name(&self) -> Option<u64> {
        (self.spares() < SPARES_MAX).then(|| self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Empties spare `n`; one that can't be emptied is removed (false).
    fn empty(&self, n: u64) -> bool {
        let spare = self.spare_path(n);
        match truncate(&spare) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(spare = n, error = %e, "could not empty a spare inode; removing it");
                let _ = std::fs::remove_file(&spare);
                false
            }
        }
    }
}

/// Cuts the file at `path` to nothing.
fn truncate(path: &Path) -> io::Result<()> {
    OpenOptions::new().write(true).open(path)?.set_len(0)
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

    fn ino(p: &Path) -> u64 {
        std::fs::metadata(p).unwrap().ino()
    }

    #[test]
    fn a_removed_file_is_reused_empty_only_after_a_sync_of_its_directory() {
        let d = tempfile::tempdir().unwrap();
        let disk = Disk::open(d.path()).unwrap();
        let a = disk.join("a");
        std::fs::write(&a, b"some bytes").unwrap();
        let a_ino = ino(&a);
        disk.remove(&a).unwrap();
        assert!(!a.exists());
        assert_eq!(disk.spares(), 1);
        assert_eq!(std::fs::metadata(d.path().join("spare/0")).unwrap().len(), 0, "a spare is empty");
        // Removing what is not there is fine, and changes nothing.
        disk.remove(&a).unwrap();
        assert_eq!(disk.spares(), 1);
        // Pending: a crash could still bring `a` back, so it is not reused yet.
        let b = disk.join("b");
        disk.create(&b).unwrap();
        assert_ne!(ino(&b), a_ino, "a pending spare is not reused");
        assert_eq!(disk.spares(), 1);

        disk.sync().unwrap();
        // Even a spare that somehow holds bytes comes back empty.
        std::fs::write(d.path().join("spare/0"), b"stray bytes").unwrap();
        let c = disk.join("c");
        let mut f = disk.create(&c).unwrap();
        assert_eq!(ino(&c), a_ino, "a ready spare is reused");
        assert_eq!(f.metadata().unwrap().len(), 0);
        f.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&c).unwrap(), b"new");
        assert_eq!(disk.spares(), 0);
        assert!(names(&d.path().join("spare")).is_empty());
    }

    #[test]
    fn a_rename_over_a_file_keeps_its_inode_once_the_rename_is_synced() {
        let d = tempfile::tempdir().unwrap();
        let disk = Disk::open(d.path()).unwrap();
        let (old, tmp) = (disk.join("x.meta"), disk.join("x.meta.tmp"));
        std::fs::write(&old, b"old meta").unwrap();
        let old_ino = ino(&old);
        std::fs::write(&tmp, b"stale").unwrap();
        let mut f = disk.create(&tmp).unwrap();
        f.write_all(b"new meta").unwrap();
        disk.rename_over(&tmp, &old).unwrap();
        assert_eq!(std::fs::read(&old).unwrap(), b"new meta");
        let spare = d.path().join("spare/0");
        assert_eq!(ino(&spare), old_ino, "the replaced inode became the spare");
        assert_eq!(std::fs::metadata(&spare).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(&spare).unwrap().nlink(), 1);
        // Synced by the rename itself: ready at once.
        let y = disk.join("y.data");
        disk.create(&y).unwrap();
        assert_eq!(ino(&y), old_ino);
        // A rename that fails keeps the file it would have replaced whole,
        // and makes no spare of it.
        assert!(disk.rename_over(&disk.join("absent.tmp"), &old).is_err());
        assert_eq!(std::fs::read(&old).unwrap(), b"new meta");
        assert_eq!(disk.spares(), 0);
        assert!(names(&d.path().join("spare")).is_empty());
        // Nothing at the target: nothing kept.
        std::fs::write(&tmp, b"x").unwrap();
        disk.rename_over(&tmp, &disk.join("fresh.meta")).unwrap();
        assert_eq!(disk.spares(), 0);
    }

    #[test]
    fn open_mends_spares_a_crash_left_and_touches_nothing_else() {
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
        // Not ours: left alone, never used.
        std::fs::write(spare.join("not-a-spare"), b"x").unwrap();
        std::fs::write(spare.join("+5"), b"x").unwrap();
        std::fs::create_dir(spare.join("11")).unwrap();
        // One inode under two spare names (spare/ is never fsynced, so a
        // crash can leave an old name beside a newer one): never handed out
        // twice; here neither is used, and one name goes.
        std::fs::write(spare.join("14"), b"").unwrap();
        std::fs::hard_link(spare.join("14"), spare.join("15")).unwrap();
        let disk = Disk::open(d.path()).unwrap();
        assert_eq!(disk.spares(), 2);
        assert_eq!(std::fs::read(&meta).unwrap(), b"a live meta");
        assert_eq!(std::fs::metadata(spare.join("3")).unwrap().len(), 0);
        let left = names(&spare);
        assert_eq!(left.iter().filter(|n| *n == "14" || *n == "15").count(), 1, "{left:?}");
        assert!(!left.contains(&"9".to_string()), "{left:?}");
        for kept in ["+5", "11", "3", "7", "not-a-spare"] {
            assert!(left.contains(&kept.to_string()), "{left:?}");
        }
        let mut made = Vec::new();
        for i in 0..3 {
            let p = disk.join(format!("new{i}"));
            disk.create(&p).unwrap();
            made.push(ino(&p));
        }
        assert!(made[0] != made[1] && made[1] != made[2] && made[0] != made[2], "no inode handed out twice");
        // New names never collide with those found.
        disk.remove(&meta).unwrap();
        assert!(spare.join("16").exists());
        assert_eq!(std::fs::read(d.path().join("spare/+5")).unwrap(), b"x");
    }
}
