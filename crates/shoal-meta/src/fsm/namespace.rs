//! The namespace: directories, files, symbolic links, special files and
//! their attributes.
//!
//! Inodes live in [`FsState::inodes`]; a directory maps names to child
//! inodes. Lookups resolve a [`NormalPath`] one component at a time; the
//! changes (mkdir, create, mknod, link, remove, rename) check everything
//! first, so one that fails changes nothing.
//!
//! # Names and hard links
//! A directory has exactly one name. Anything else may have several (hard
//! links, `Link`): one entry in its `parent` (its **first name**), and the
//! others counted per directory in [`Extra::extra_links`]. Removing or
//! renaming away one name keeps the inode while another remains; when the
//! first name goes, `parent` moves to a directory in `extra_links` (the
//! lowest inode number), so `parent` always holds a name. Only the last name's
//! removal drops the inode and makes its chunks garbage.
//!
//! Where an inode must become one path (a stat by inode, a path anchored
//! at an inode: [`FsState::absolute`]), [`FsState::path_of`] takes its first name: the
//! alphabetically first entry naming it in `parent`, and so on up. Locks
//! and fences are by path and by inode as before: a lock is on the path it
//! names (so two names of one file are two locks), a fence binding on the
//! inode (so it fences the file under every name).
//!
//! # Invariants kept here
//! - Inode 1 is the root directory, its own parent, and always exists.
//! - A directory has exactly one directory entry, in its `parent`; no
//!   directory contains itself, directly or below.
//! - Any other inode has, in each directory, exactly as many entries as
//!   `extra_links` counts there (plus one in `parent`); it has at most
//!   [`LINKS_MAX`] names.
//! - `next_inode` is above every inode id: ids are never reused.
//! - Removing or replacing the last name of a file makes its chunks garbage
//!   on every holder.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use shoal_core::{FsError, NormalPath};

use super::rare::Emptiable;
use super::{ChunkMap, Entries, Fence, FsState, ROOT_INODE, Rare, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File,
    /// A symbolic link: its target is in [`Extra::target`] (format 3).
    Symlink,
    /// A named pipe (format 4). Meta keeps only its name and attributes;
    /// the kernel of whoever opens it makes the pipe.
    Fifo,
    /// A Unix domain socket's name (format 4); no data, like a FIFO.
    Socket,
    /// A character device (format 4): its number in [`Extra::rdev`].
    CharDevice,
    /// A block device (format 4): its number in [`Extra::rdev`].
    BlockDevice,
}

impl Kind {
    /// FIFOs, sockets and devices: what mknod(2) makes, with no data.
    pub fn is_special(self) -> bool {
        matches!(self, Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice)
    }

    /// Character and block devices: the kinds with a device number.
    pub fn is_device(self) -> bool {
        matches!(self, Kind::CharDevice | Kind::BlockDevice)
    }
}

/// The names of directories in their parents that [`FsState::path_of`]
/// found, kept so that it need not scan a large parent again for the same
/// one. Only hints: each is checked against the parent's entries before it
/// is used (a directory has exactly one name, so a name that still leads
/// to it is its name), so `path_of` answers the same with or without them,
/// and nothing need forget them on a rename or remove. They are no part of
/// the state: not encoded, equal in every state, and a copy starts empty.
#[derive(Default)]
pub struct DirNames(Mutex<HashMap<u64, Box<str>>>);

/// The most names [`DirNames`] keeps; past it they are all forgotten.
const DIR_NAMES_MAX: usize = 1 << 16;

impl DirNames {
    fn get(&self, dir: u64) -> Option<Box<str>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&dir).cloned()
    }

    fn put(&self, dir: u64, name: &str) {
        let mut names = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if names.len() >= DIR_NAMES_MAX {
            names.clear();
        }
        names.insert(dir, name.into());
    }
}

impl Clone for DirNames {
    fn clone(&self) -> Self {
        DirNames::default()
    }
}

impl PartialEq for DirNames {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for DirNames {}

impl std::fmt::Debug for DirNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirNames")
    }
}

/// The most names (hard links) one inode may have, as ext4 allows.
pub const LINKS_MAX: u32 = 65_000;

/// A file, directory, symbolic link or special file. It encodes as the
/// same record in every format ([`super::inode_wire`]): the fields in
/// [`Extra`] take their places among the others there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub id: u64,
    pub parent: u64,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime_ms: u64,
    /// Replicas per chunk for files; for directories, what new files inherit (0: cluster default).
    pub replication: u32,
    /// Fixed when the file is created.
    pub chunk_size: u64,
    /// Files only: chunk index to chunk. Missing indices are holes that read as zeros.
    pub chunks: ChunkMap,
    /// Directories only: name to inode.
    pub children: Rare<Entries>,
    /// The newest fencing token a write to this file carried.
    pub fence: u64,
    /// Owner and group (root's, 0, in records of format 2 and older).
    pub uid: u32,
    pub gid: u32,
    /// Access, modification and change times in nanoseconds since the epoch.
    /// 0 (records of format 2 and older) reads as `mtime_ms`: see
    /// [`Inode::times_ns`]. `mtime_ms` is kept equal to `mtime_ns` in ms.
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    /// Extended attributes, a symbolic link's target, hard links and a
    /// device number: what most inodes leave empty, behind one pointer.
    pub extra: Rare<Extra>,
}

/// The fields of an [`Inode`] that most inodes leave empty. Together they
/// cost an inode one pointer until one of them is set (see [`Rare`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extra {
    /// Extended attributes, name to value (see [`super::xattrs`]); format 2
    /// added them.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Symbolic links only: the target, as given (1 to
    /// [`SYMLINK_TARGET_MAX_BYTES`], no NUL); empty for everything else.
    pub target: String,
    /// Hard links: the directories holding this inode's names other than
    /// its first one (in `parent`), each with how many it holds (never 0).
    /// Empty for an inode with one name, and always for a directory.
    /// Format 4 added them: every inode of an older record has one name.
    pub extra_links: BTreeMap<u64, u32>,
    /// Device files only: the device number (rdev); 0 for everything else.
    pub rdev: u64,
}

impl Emptiable for Extra {
    fn empty() -> &'static Self {
        static EMPTY: Extra =
            Extra { xattrs: BTreeMap::new(), target: String::new(), extra_links: BTreeMap::new(), rdev: 0 };
        &EMPTY
    }

    fn is_empty_value(&self) -> bool {
        self.xattrs.is_empty() && self.target.is_empty() && self.extra_links.is_empty() && self.rdev == 0
    }
}

/// The longest symbolic link target, in bytes (Linux's PATH_MAX).
pub const SYMLINK_TARGET_MAX_BYTES: usize = 4096;

/// Why `target` cannot be a symbolic link's, if it cannot.
pub fn check_symlink_target(target: &str) -> Result<(), FsError> {
    if target.is_empty() || target.len() > SYMLINK_TARGET_MAX_BYTES || target.contains('\0') {
        return Err(FsError::InvalidArgument {
            reason: format!("a symbolic link's target is 1 to {SYMLINK_TARGET_MAX_BYTES} bytes with no NUL"),
        });
    }
    Ok(())
}

/// The most the permission bits of a mode may hold: rwx for owner, group and
/// others, plus setuid, setgid and sticky.
pub const MODE_BITS_MAX: u32 = 0o7777;

/// Who a new inode belongs to, and its permission bits (at most [`MODE_BITS_MAX`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Inode {
    /// (atime, mtime, ctime) in nanoseconds; a time never set (an inode of
    /// format 2 or older) reads as the modification time in `mtime_ms`.
    pub fn times_ns(&self) -> (u64, u64, u64) {
        let fallback = self.mtime_ms.saturating_mul(1_000_000);
        let or = |t: u64| if t == 0 { fallback } else { t };
        (or(self.atime_ns), if self.mtime_ns == 0 { fallback } else { self.mtime_ns }, or(self.ctime_ns))
    }

    /// The contents changed at `now_ms`: mtime and ctime move.
    pub(super) fn touch_modified(&mut self, now_ms: u64) {
        self.mtime_ms = now_ms;
        self.mtime_ns = now_ms.saturating_mul(1_000_000);
        self.ctime_ns = self.mtime_ns;
    }

    /// How many names this inode has (not for directories: see [`FsState::nlink`]).
    pub fn names(&self) -> u32 {
        self.extra.extra_links.values().fold(1u32, |n, c| n.saturating_add(*c))
    }

    /// The attributes changed at `now_ms`: ctime moves.
    pub(super) fn touch_changed(&mut self, now_ms: u64) {
        let (atime, mtime, _) = self.times_ns();
        (self.atime_ns, self.mtime_ns) = (atime, mtime);
        self.ctime_ns = now_ms.saturating_mul(1_000_000);
    }
}

/// The namespace's commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamespaceCmd {
    Mkdir {
        path: NormalPath,
        parents: bool,
    },
    Create {
        path: NormalPath,
        replication: u32,
        chunk_size: u64,
        open_existing: bool,
    },
    Remove {
        path: NormalPath,
        recursive: bool,
    },
    /// Renames `src` to `dst`. With a fence, only while its token holds the
    /// lock on `dst` (the final path) and is not older than the fences of the
    /// files involved; the lock then guards the moved file.
    Rename {
        src: NormalPath,
        dst: NormalPath,
        #[serde(default)]
        fence: Option<Fence>,
    },
    /// Removes the extended attributes named in `remove` (missing ones are
    /// ignored), then sets those in `set`, all at once ([`super::xattrs`]).
    SetXattrs {
        path: NormalPath,
        remove: Vec<String>,
        set: Vec<(String, Vec<u8>)>,
    },
    /// Removes one extended attribute; refused when it does not exist.
    RemoveXattr {
        path: NormalPath,
        name: String,
    },
    /// Makes one directory or empty file with its owner and mode (the
    /// mount's mkdir and create). A file that exists is answered as it is
    /// unless `exclusive`; a directory that exists is always refused.
    MakeNode {
        path: NormalPath,
        kind: Kind,
        owner: Owner,
        replication: u32,
        chunk_size: u64,
        exclusive: bool,
    },
    /// Changes the mode, owner, group or times of inode `inode` ([`super::attrs`]).
    SetAttr {
        inode: u64,
        change: super::attrs::AttrChange,
    },
    /// Makes a symbolic link at `path` to `target` with its owner (mode 0777).
    Symlink {
        path: NormalPath,
        target: String,
        uid: u32,
        gid: u32,
    },
    /// rename(2): `src` takes exactly the name `dst` (never moving into a
    /// directory there); an empty directory may be replaced by a directory;
    /// with `no_replace`, an existing `dst` is refused.
    RenameExact {
        src: NormalPath,
        dst: NormalPath,
        no_replace: bool,
    },
    /// mknod(2) of a special file (format 4): a FIFO, a socket, or a device
    /// with its number `rdev` (0 for the others). Files and directories are
    /// made with `MakeNode`; an existing name is refused.
    Mknod {
        path: NormalPath,
        kind: Kind,
        owner: Owner,
        rdev: u64,
    },
    /// link(2) (format 4): `dst` becomes one more name of the inode `src`
    /// names (never a directory; never replacing what is at `dst`).
    Link {
        src: NormalPath,
        dst: NormalPath,
    },
    /// renameat2(2) with `RENAME_EXCHANGE` (format 5): the names `a` and
    /// `b`, which must both exist, swap their inodes at once. Either may be
    /// a directory, but neither may lie below the other.
    Exchange {
        a: NormalPath,
        b: NormalPath,
    },
    /// Format 6: unlink(2) (`dir` false: refused with `IsADirectory` for a
    /// directory) or rmdir(2) (`dir` true: refused with `NotADirectory`
    /// for anything else, and `NotEmpty` for a directory with entries),
    /// the kind checked as the remove applies.
    RemoveKind {
        path: NormalPath,
        dir: bool,
    },
}

/// The paths a [`NamespaceCmd`] names a file or directory by, as
/// references of the command's own kind (a fence's path is a lock's name,
/// not one of them).
macro_rules! paths_of {
    ($cmd:expr) => {
        match $cmd {
            NamespaceCmd::Mkdir { path, .. }
            | NamespaceCmd::Create { path, .. }
            | NamespaceCmd::Remove { path, .. }
            | NamespaceCmd::SetXattrs { path, .. }
            | NamespaceCmd::RemoveXattr { path, .. }
            | NamespaceCmd::MakeNode { path, .. }
            | NamespaceCmd::Symlink { path, .. }
            | NamespaceCmd::Mknod { path, .. }
            | NamespaceCmd::RemoveKind { path, .. } => vec![path],
            NamespaceCmd::Rename { src, dst, .. }
            | NamespaceCmd::RenameExact { src, dst, .. }
            | NamespaceCmd::Link { src, dst } => vec![src, dst],
            NamespaceCmd::Exchange { a, b } => vec![a, b],
            NamespaceCmd::SetAttr { .. } => Vec::new(),
        }
    };
}

impl NamespaceCmd {
    fn paths(&self) -> Vec<&NormalPath> {
        paths_of!(self)
    }

    fn paths_mut(&mut self) -> Vec<&mut NormalPath> {
        paths_of!(self)
    }
}

/// How a rename treats the name it goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exact {
    /// As mv(1): onto a directory means into it.
    No,
    /// As rename(2): exactly that name, replacing what is there if allowed.
    Replace,
    /// As rename(2) with RENAME_NOREPLACE: exactly that name, which must be free.
    NoReplace,
}

fn not_found(path: &NormalPath) -> FsError {
    FsError::NotFound { path: path.to_string() }
}

impl FsState {
    /// Applies a namespace command at leader time `now_ms`. Under rules 8
    /// its anchored paths are first made the paths they name now
    /// ([`FsState::absolute`]), so every check below sees root-based paths.
    pub(super) fn apply_namespace(&mut self, cmd: &NamespaceCmd, now_ms: u64, rules: u16) -> Result<Response, FsError> {
        let cmd = &*self.absolute_cmd(cmd, rules)?;
        if rules >= 9 {
            self.refuse_making_reserved(cmd)?;
        }
        match cmd {
            NamespaceCmd::Mkdir { path, parents } => self.mkdir(path, *parents, now_ms),
            NamespaceCmd::Create { path, replication, chunk_size, open_existing } => {
                self.create(path, *replication, *chunk_size, *open_existing, now_ms)
            }
            NamespaceCmd::Remove { path, recursive } => self.remove(path, *recursive, now_ms, rules),
            // Rules 0 had no fenced rename (format-0 renames carry no fence).
            NamespaceCmd::Rename { src, dst, fence } => {
                self.rename(src, dst, fence.as_ref().filter(|_| rules >= 1), Exact::No, now_ms, rules)
            }
            NamespaceCmd::SetXattrs { path, remove, set } => self.set_xattrs(path, remove, set, now_ms),
            NamespaceCmd::RemoveXattr { path, name } => self.remove_xattr(path, name, now_ms),
            NamespaceCmd::MakeNode { path, kind, owner, replication, chunk_size, exclusive } => {
                self.make_node(path, *kind, *owner, *replication, *chunk_size, *exclusive, now_ms)
            }
            NamespaceCmd::SetAttr { inode, change } => self.set_attr(*inode, change, now_ms),
            NamespaceCmd::Symlink { path, target, uid, gid } => self.symlink(path, target, *uid, *gid, now_ms),
            NamespaceCmd::RenameExact { src, dst, no_replace } => {
                let exact = if *no_replace { Exact::NoReplace } else { Exact::Replace };
                self.rename(src, dst, None, exact, now_ms, rules)
            }
            NamespaceCmd::Mknod { path, kind, owner, rdev } => self.mknod(path, *kind, *owner, *rdev, now_ms),
            NamespaceCmd::Link { src, dst } => self.hard_link(src, dst, now_ms),
            NamespaceCmd::Exchange { a, b } => self.exchange(a, b, now_ms),
            NamespaceCmd::RemoveKind { path, dir } => {
                let is_dir = self.lookup(path)?.kind == Kind::Dir;
                match (dir, is_dir) {
                    (false, true) => Err(FsError::IsADirectory { path: path.to_string() }),
                    (true, false) => Err(FsError::NotADirectory { path: path.to_string() }),
                    _ => self.remove(path, false, now_ms, rules),
                }
            }
        }
    }

    /// `path` as the root-based path it names now. Under rules 8 a path
    /// anchored at an inode (`/.shoal-inode/N/rest`, or `/.shoal-inode/N`
    /// for the inode itself; see [`shoal_core::path::anchor_of`]) is inode
    /// N's path (through its first name) followed by `rest`: inode N gone
    /// is `NotFound` (a name under a removed directory), N not a directory
    /// while `rest` goes on is `NotADirectory`, and a result longer than
    /// [`shoal_core::path::PATH_MAX_BYTES`] is `PathTooLong`. Any other path, and every path under older rules
    /// (which knew no anchors), is itself.
    pub fn absolute<'p>(&self, path: &'p NormalPath, rules: u16) -> Result<Cow<'p, NormalPath>, FsError> {
        let Some((id, rest)) = shoal_core::path::anchor_of(path).filter(|_| rules >= 8) else {
            return Ok(Cow::Borrowed(path));
        };
        let inode = self.inodes.get(&id).ok_or_else(|| not_found(path))?;
        if inode.kind != Kind::Dir && !rest.is_empty() {
            return Err(FsError::NotADirectory { path: self.path_of(id) });
        }
        // Parsed, so a path longer than a path may be is refused here
        // (`PathTooLong`) as a root-based one would be (renames of
        // directories above can make an inode's path that long).
        let dir = self.path_of(id);
        let at = match rest {
            [] => dir,
            _ => format!("{}/{}", dir.trim_end_matches('/'), rest.join("/")),
        };
        Ok(Cow::Owned(NormalPath::parse(&at)?))
    }

    /// Rules 9: refuses (`InvalidArgument`) a command, its paths made
    /// root-based, that would make one of the root's reserved names
    /// ([`FsState::refuse_reserved`]), or exchange a mount's hidden name. A
    /// rename checks the name it ends at in [`FsState::rename`].
    fn refuse_making_reserved(&self, cmd: &NamespaceCmd) -> Result<(), FsError> {
        match cmd {
            NamespaceCmd::Mkdir { path, parents: true } => match path.components().first() {
                Some(first) if path.components().len() > 1 => {
                    self.refuse_reserved(&NormalPath::root().join(first), false)
                }
                _ => self.refuse_reserved(path, false),
            },
            NamespaceCmd::Mkdir { path, .. }
            | NamespaceCmd::Create { path, .. }
            | NamespaceCmd::MakeNode { path, .. }
            | NamespaceCmd::Symlink { path, .. }
            | NamespaceCmd::Mknod { path, .. } => self.refuse_reserved(path, false),
            NamespaceCmd::Link { dst, .. } => self.refuse_reserved(dst, false),
            // A mount's hidden name keeps naming the file it hid.
            NamespaceCmd::Exchange { a, b } => match [a, b].into_iter().find(|p| shoal_core::path::is_unlinked_path(p))
            {
                Some(hidden) => {
                    Err(shoal_core::path::reserved_refusal(hidden, "a mount's hidden file is not exchanged"))
                }
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Refuses making `path` (`renaming`: by a rename) when it is one of
    /// the root's reserved names ([`shoal_core::path::reserved`]) and
    /// nothing is there yet: under rules 9, `/.shoal-inode/N` names inode N
    /// for every client, and only a mount's hiding rename takes a name of
    /// its open-but-unlinked files. A name made before rules 9 is left as
    /// it is, and usable.
    pub fn refuse_reserved(&self, path: &NormalPath, renaming: bool) -> Result<(), FsError> {
        match shoal_core::path::reserved(path, renaming) {
            Some(refusal) if self.lookup(path).is_err() => Err(refusal),
            _ => Ok(()),
        }
    }

    /// `cmd` with each of its paths made root-based ([`FsState::absolute`]).
    fn absolute_cmd<'c>(&self, cmd: &'c NamespaceCmd, rules: u16) -> Result<Cow<'c, NamespaceCmd>, FsError> {
        if rules < 8 || cmd.paths().into_iter().all(|p| shoal_core::path::anchor_of(p).is_none()) {
            return Ok(Cow::Borrowed(cmd));
        }
        let mut owned = cmd.clone();
        for path in owned.paths_mut() {
            if let Cow::Owned(at) = self.absolute(path, rules)? {
                *path = at;
            }
        }
        Ok(Cow::Owned(owned))
    }

    /// What `path`, anchored or not, names now: a read under this build's
    /// rules. An anchored path is walked down from its inode, without
    /// building the inode's path ([`FsState::absolute`] does that, scanning
    /// each directory above for the name that leads down), so a lookup
    /// costs no more under a large directory.
    pub fn resolve(&self, path: &NormalPath) -> Result<&Inode, FsError> {
        match shoal_core::path::anchor_of(path) {
            Some((id, rest)) => {
                let start = self.inodes.get(&id).ok_or_else(|| not_found(path))?;
                self.walk(start, path, path.components().len() - rest.len())
            }
            None => self.lookup(path),
        }
    }

    /// Resolves a path to its inode.
    pub fn lookup(&self, path: &NormalPath) -> Result<&Inode, FsError> {
        self.walk(&self.inodes[&ROOT_INODE], path, 0)
    }

    /// The inode reached from `start` through the components of `path` from
    /// the `from`-th on.
    fn walk<'a>(&'a self, start: &'a Inode, path: &NormalPath, from: usize) -> Result<&'a Inode, FsError> {
        let mut cur = start;
        for (depth, name) in path.components().iter().enumerate().skip(from) {
            if cur.kind != Kind::Dir {
                let prefix: Vec<&str> = path.components()[..depth].iter().map(|s| s.as_str()).collect();
                return Err(FsError::NotADirectory { path: format!("/{}", prefix.join("/")) });
            }
            let id = cur.children.get(name.as_str()).ok_or_else(|| not_found(path))?;
            cur = &self.inodes[id];
        }
        Ok(cur)
    }

    /// Resolves the directory that holds `path`, and the final name.
    pub(crate) fn lookup_parent<'p>(&self, path: &'p NormalPath) -> Result<(u64, &'p str), FsError> {
        let (parent, name) = path.split_last().ok_or(FsError::Root)?;
        let dir = self.lookup(&parent)?;
        if dir.kind != Kind::Dir {
            return Err(FsError::NotADirectory { path: parent.to_string() });
        }
        Ok((dir.id, name))
    }

    /// The path of inode `id` through its first name: the alphabetically
    /// first entry naming it in its `parent`, and so on up (see the module
    /// doc; an inode with hard links has other paths too).
    pub fn path_of(&self, id: u64) -> String {
        let mut names: Vec<Cow<'_, str>> = Vec::new();
        let mut cur = id;
        while cur != ROOT_INODE {
            let Some(inode) = self.inodes.get(&cur) else { break };
            let parent = &self.inodes[&inode.parent];
            // A directory's one name, if the hint still leads to it; else
            // the scan (a directory's found name is kept as the next hint).
            let hinted = (inode.kind == Kind::Dir).then(|| self.dir_names.get(cur)).flatten();
            let name = match hinted.filter(|n| parent.children.get(n) == Some(&cur)) {
                Some(n) => Cow::Owned(n.into_string()),
                None => {
                    let found = parent.children.iter().find(|(_, c)| **c == cur).map_or("?", |(n, _)| n);
                    if inode.kind == Kind::Dir && found != "?" {
                        self.dir_names.put(cur, found);
                    }
                    Cow::Borrowed(found)
                }
            };
            names.push(name);
            cur = inode.parent;
        }
        names.reverse();
        format!("/{}", names.join("/"))
    }

    /// The link count stat reports: a directory's is 2 plus its
    /// subdirectories (its own "." and each child's "..", counted by the
    /// inode table), anything else's is its number of names.
    pub fn nlink(&self, inode: &Inode) -> u32 {
        if inode.kind != Kind::Dir {
            return inode.names();
        }
        2u32.saturating_add(self.inodes.subdirs(inode.id))
    }

    pub fn inode(&self, id: u64) -> Result<&Inode, FsError> {
        self.inodes.get(&id).ok_or(FsError::StaleInode { inode: id })
    }

    /// The replication a new file under `parent` inherits (0: cluster default).
    pub fn inherited_replication(&self, path: &NormalPath) -> u32 {
        let mut cur = &self.inodes[&ROOT_INODE];
        let mut rep = cur.replication;
        for name in path.components() {
            match cur.children.get(name.as_str()).map(|id| &self.inodes[id]) {
                Some(next) if next.kind == Kind::Dir => {
                    cur = next;
                    if cur.replication != 0 {
                        rep = cur.replication;
                    }
                }
                _ => break,
            }
        }
        rep
    }

    pub(super) fn new_inode(
        &mut self,
        parent: u64,
        kind: Kind,
        replication: u32,
        chunk_size: u64,
        mtime_ms: u64,
        owner: Option<Owner>,
    ) -> u64 {
        let id = self.next_inode;
        self.next_inode += 1;
        let default_mode = if kind == Kind::Dir { 0o755 } else { 0o644 };
        let Owner { mode, uid, gid } = owner.unwrap_or(Owner { mode: default_mode, uid: 0, gid: 0 });
        let now_ns = mtime_ms.saturating_mul(1_000_000);
        self.inodes.insert(
            id,
            Inode {
                id,
                parent,
                kind,
                size: 0,
                mode,
                mtime_ms,
                replication,
                chunk_size,
                chunks: ChunkMap::default(),
                children: Default::default(),
                fence: 0,
                uid,
                gid,
                atime_ns: now_ns,
                mtime_ns: now_ns,
                ctime_ns: now_ns,
                extra: Default::default(),
            },
        );
        id
    }

    pub(super) fn link(&mut self, dir: u64, name: &str, child: u64, mtime_ms: u64) {
        let d = self.inodes.get_mut(&dir).expect("parent exists");
        d.children.insert(name.into(), child);
        d.touch_modified(mtime_ms);
    }

    pub(super) fn mkdir(&mut self, path: &NormalPath, parents: bool, mtime_ms: u64) -> Result<Response, FsError> {
        if path.is_root() {
            return if parents {
                Ok(Response::Inode(self.inodes[&ROOT_INODE].clone()))
            } else {
                Err(FsError::AlreadyExists { path: "/".into() })
            };
        }
        if parents {
            // Check the whole chain first so a failure changes nothing.
            let mut cur = NormalPath::root();
            for name in path.components() {
                cur = cur.join(name);
                match self.lookup(&cur) {
                    Ok(i) if i.kind == Kind::Dir => {}
                    Ok(_) => {
                        return Err(FsError::NotADirectory { path: cur.to_string() });
                    }
                    Err(FsError::NotFound { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
            let mut dir = ROOT_INODE;
            for name in path.components() {
                dir = match self.inodes[&dir].children.get(name.as_str()) {
                    Some(id) => *id,
                    None => {
                        let id = self.new_inode(dir, Kind::Dir, 0, 0, mtime_ms, None);
                        self.link(dir, name, id, mtime_ms);
                        id
                    }
                };
            }
            return Ok(Response::Inode(self.inodes[&dir].clone()));
        }
        let (dir, name) = self.lookup_parent(path)?;
        if self.inodes[&dir].children.contains_key(name) {
            return Err(FsError::AlreadyExists { path: path.to_string() });
        }
        let id = self.new_inode(dir, Kind::Dir, 0, 0, mtime_ms, None);
        self.link(dir, name, id, mtime_ms);
        Ok(Response::Inode(self.inodes[&id].clone()))
    }

    pub(super) fn create(
        &mut self,
        path: &NormalPath,
        replication: u32,
        chunk_size: u64,
        open_existing: bool,
        mtime_ms: u64,
    ) -> Result<Response, FsError> {
        if replication == 0 || chunk_size == 0 {
            return Err(FsError::InvalidArgument { reason: "replication and chunk size must be positive".into() });
        }
        let (dir, name) = self.lookup_parent(path)?;
        if let Some(id) = self.inodes[&dir].children.get(name) {
            let existing = &self.inodes[id];
            return match (open_existing, existing.kind) {
                (true, Kind::File) => Ok(Response::Inode(existing.clone())),
                (true, Kind::Dir) => Err(FsError::IsADirectory { path: path.to_string() }),
                _ => Err(FsError::AlreadyExists { path: path.to_string() }),
            };
        }
        let id = self.new_inode(dir, Kind::File, replication, chunk_size, mtime_ms, None);
        self.link(dir, name, id, mtime_ms);
        Ok(Response::Inode(self.inodes[&id].clone()))
    }

    /// Drops an inode and everything below it; their chunks become
    /// garbage. An inode below with a name outside the tree (a hard link)
    /// loses only its names inside and stays.
    pub(super) fn drop_tree(&mut self, id: u64) {
        let Some(inode) = self.inodes.remove(&id) else {
            return;
        };
        for child in inode.children.values() {
            self.drop_name(*child, id, None);
        }
        for chunk in inode.chunks.values() {
            self.discard_chunk(chunk.id, &chunk.replicas);
            self.corrupt.remove(&chunk.id);
        }
    }

    /// Takes one of inode `id`'s names in directory `dir` off its count
    /// (removing the entry itself is the caller's part). Answers whether
    /// the inode still has a name; when it had only this one, nothing
    /// changed and the caller drops it. When its first name goes, `parent`
    /// moves to the lowest directory holding another.
    fn unname(&mut self, id: u64, dir: u64) -> bool {
        let inode = self.inodes.get_mut(&id).expect("a named inode exists");
        let Some((&lowest, _)) = inode.extra.extra_links.iter().next() else { return false };
        let from = if inode.parent == dir && !inode.extra.extra_links.contains_key(&dir) {
            inode.parent = lowest;
            lowest
        } else {
            dir
        };
        let count = inode.extra.extra_links.get_mut(&from).expect("every other name is counted");
        *count -= 1;
        if *count == 0 {
            inode.extra.extra_links.remove(&from);
            inode.extra.drop_if_empty();
        }
        true
    }

    /// Removes one name of `id` held by `dir`: the inode stays while it has
    /// another (its ctime moves, as unlink(2) says), otherwise it goes with
    /// everything below it.
    fn drop_name(&mut self, id: u64, dir: u64, now_ms: Option<u64>) {
        if !self.unname(id, dir) {
            self.drop_tree(id);
        } else if let Some(now_ms) = now_ms {
            self.inodes.get_mut(&id).expect("still named").touch_changed(now_ms);
        }
    }

    pub(super) fn remove(
        &mut self,
        path: &NormalPath,
        recursive: bool,
        now_ms: u64,
        rules: u16,
    ) -> Result<Response, FsError> {
        let (dir, name) = self.lookup_parent(path)?;
        let id = *self.inodes[&dir].children.get(name).ok_or_else(|| not_found(path))?;
        let inode = &self.inodes[&id];
        if inode.kind == Kind::Dir && !inode.children.is_empty() && !recursive {
            return Err(FsError::NotEmpty { path: path.to_string() });
        }
        let parent = self.inodes.get_mut(&dir).expect("parent exists");
        parent.children.remove(name);
        // Rules 3: the directory's times move, as unlink(2) says.
        if rules >= 3 {
            parent.touch_modified(now_ms);
        }
        self.drop_name(id, dir, Some(now_ms));
        Ok(Response::Ok)
    }

    /// Makes a symbolic link to `target`.
    pub(super) fn symlink(
        &mut self,
        path: &NormalPath,
        target: &str,
        uid: u32,
        gid: u32,
        now_ms: u64,
    ) -> Result<Response, FsError> {
        check_symlink_target(target)?;
        let (dir, name) = self.lookup_parent(path)?;
        if self.inodes[&dir].children.contains_key(name) {
            return Err(FsError::AlreadyExists { path: path.to_string() });
        }
        let owner = Owner { mode: 0o777, uid, gid };
        let id = self.new_inode(dir, Kind::Symlink, 0, 0, now_ms, Some(owner));
        let link = self.inodes.get_mut(&id).expect("just made");
        link.extra.target = target.to_string();
        link.size = target.len() as u64;
        self.link(dir, name, id, now_ms);
        Ok(Response::Inode(self.inodes[&id].clone()))
    }

    /// Makes one directory or file with the caller's owner and mode.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn make_node(
        &mut self,
        path: &NormalPath,
        kind: Kind,
        owner: Owner,
        replication: u32,
        chunk_size: u64,
        exclusive: bool,
        now_ms: u64,
    ) -> Result<Response, FsError> {
        if owner.mode > MODE_BITS_MAX {
            return Err(FsError::InvalidArgument { reason: format!("mode {:o} has bits past 0o7777", owner.mode) });
        }
        if kind == Kind::Symlink {
            // A link is made whole, with its target, by the Symlink command.
            return Err(FsError::InvalidArgument {
                reason: "a symbolic link is made with its target (Symlink)".into(),
            });
        }
        if kind.is_special() {
            return Err(FsError::InvalidArgument { reason: "a special file is made by mknod (Mknod)".into() });
        }
        if kind == Kind::File && (replication == 0 || chunk_size == 0) {
            return Err(FsError::InvalidArgument { reason: "replication and chunk size must be positive".into() });
        }
        let (dir, name) = self.lookup_parent(path)?;
        if let Some(id) = self.inodes[&dir].children.get(name) {
            let existing = &self.inodes[id];
            return match (kind, existing.kind, exclusive) {
                (Kind::File, Kind::File, false) => Ok(Response::Inode(existing.clone())),
                (Kind::File, Kind::Dir, false) => Err(FsError::IsADirectory { path: path.to_string() }),
                _ => Err(FsError::AlreadyExists { path: path.to_string() }),
            };
        }
        let (replication, chunk_size) = if kind == Kind::Dir { (0, 0) } else { (replication, chunk_size) };
        let id = self.new_inode(dir, kind, replication, chunk_size, now_ms, Some(owner));
        self.link(dir, name, id, now_ms);
        Ok(Response::Inode(self.inodes[&id].clone()))
    }

    /// mknod(2) of a FIFO, a socket or a device: an inode with no data.
    pub(super) fn mknod(
        &mut self,
        path: &NormalPath,
        kind: Kind,
        owner: Owner,
        rdev: u64,
        now_ms: u64,
    ) -> Result<Response, FsError> {
        if owner.mode > MODE_BITS_MAX {
            return Err(FsError::InvalidArgument { reason: format!("mode {:o} has bits past 0o7777", owner.mode) });
        }
        if !kind.is_special() {
            return Err(FsError::InvalidArgument {
                reason: format!("mknod makes FIFOs, sockets and devices, not {kind:?} (MakeNode, Symlink)"),
            });
        }
        if rdev != 0 && !kind.is_device() {
            return Err(FsError::InvalidArgument { reason: format!("a {kind:?} has no device number") });
        }
        let (dir, name) = self.lookup_parent(path)?;
        if self.inodes[&dir].children.contains_key(name) {
            return Err(FsError::AlreadyExists { path: path.to_string() });
        }
        let id = self.new_inode(dir, kind, 0, 0, now_ms, Some(owner));
        if rdev != 0 {
            self.inodes.get_mut(&id).expect("just made").extra.rdev = rdev;
        }
        self.link(dir, name, id, now_ms);
        Ok(Response::Inode(self.inodes[&id].clone()))
    }

    /// link(2): `dst` becomes one more name of the inode at `src`. The
    /// checks come in Linux's order: `src` must exist, `dst`'s directory
    /// exist and `dst` be free, and only then is a directory refused.
    pub(super) fn hard_link(&mut self, src: &NormalPath, dst: &NormalPath, now_ms: u64) -> Result<Response, FsError> {
        let id = self.lookup(src)?.id;
        let (dir, name) = self.lookup_parent(dst)?;
        if self.inodes[&dir].children.contains_key(name) {
            return Err(FsError::AlreadyExists { path: dst.to_string() });
        }
        let inode = &self.inodes[&id];
        if inode.kind == Kind::Dir {
            return Err(FsError::LinkToDirectory { path: src.to_string() });
        }
        if inode.names() >= LINKS_MAX {
            return Err(FsError::TooManyLinks { path: src.to_string(), max: LINKS_MAX });
        }
        self.link(dir, name, id, now_ms);
        let inode = self.inodes.get_mut(&id).expect("linked inode exists");
        *inode.extra.extra_links.entry(dir).or_default() += 1;
        inode.touch_changed(now_ms);
        Ok(Response::Inode(inode.clone()))
    }

    /// Records that a name of `id` moved from directory `from` to `to`: the
    /// first name's directory is `parent`, and one of several names takes
    /// its count along in `extra_links`.
    fn move_name(&mut self, id: u64, from: u64, to: u64) {
        if self.unname(id, from) {
            *self.inodes.get_mut(&id).expect("moved inode exists").extra.extra_links.entry(to).or_default() += 1;
        } else {
            self.inodes.set_parent(id, to);
        }
    }

    /// Swaps the inodes named `a` and `b` (see [`NamespaceCmd::Exchange`]).
    /// Refused whole, changing nothing, when either is missing or one lies
    /// below the other. Both directories' times and both inodes' ctimes move.
    pub(super) fn exchange(&mut self, a: &NormalPath, b: &NormalPath, now_ms: u64) -> Result<Response, FsError> {
        let (a_dir, a_name) = self.lookup_parent(a)?;
        let a_id = *self.inodes[&a_dir].children.get(a_name).ok_or_else(|| not_found(a))?;
        let (b_dir, b_name) = self.lookup_parent(b)?;
        let b_id = *self.inodes[&b_dir].children.get(b_name).ok_or_else(|| not_found(b))?;
        if a_id == b_id {
            // One inode under both names: nothing to swap (Linux succeeds too).
            return Ok(Response::Ok);
        }
        if b.starts_with(a) || a.starts_with(b) {
            return Err(FsError::RenameIntoSelf { src: a.to_string(), dst: b.to_string() });
        }
        self.link(a_dir, a_name, b_id, now_ms);
        self.link(b_dir, b_name, a_id, now_ms);
        if a_dir != b_dir {
            self.move_name(a_id, a_dir, b_dir);
            self.move_name(b_id, b_dir, a_dir);
        }
        for id in [a_id, b_id] {
            self.inodes.get_mut(&id).expect("exchanged inode exists").touch_changed(now_ms);
        }
        Ok(Response::Ok)
    }

    /// Records that `token`'s lock now guards file `id` (a fenced rename put it there).
    fn guard_with(&mut self, token: u64, id: u64) {
        self.inodes.get_mut(&id).expect("the guarded file exists").fence = token;
        self.fence_bindings.insert(token, id);
    }

    pub(super) fn rename(
        &mut self,
        src: &NormalPath,
        dst: &NormalPath,
        fence: Option<&Fence>,
        exact: Exact,
        mtime_ms: u64,
        rules: u16,
    ) -> Result<Response, FsError> {
        let (src_dir, src_name) = self.lookup_parent(src)?;
        let id = *self.inodes[&src_dir].children.get(src_name).ok_or_else(|| not_found(src))?;
        // Moving onto an existing directory moves into it, as mv(1) does; a
        // fenced rename and rename(2) go to exactly the path named.
        let dst = match self.lookup(dst) {
            Ok(d) if exact == Exact::No && fence.is_none() && d.kind == Kind::Dir && d.id != id => dst.join(src_name),
            _ => dst.clone(),
        };
        // Rules 9: a reserved name is taken only by a mount putting back a
        // file it hid (one named so under older rules, open there) when the
        // rename that was to replace it failed: a no-replace rename of a
        // file from its hidden name under a live session.
        let putting_back = exact == Exact::NoReplace
            && self.inodes[&id].kind != Kind::Dir
            && matches!(src.components(), [name] if shoal_core::path::parse_unlinked_name(name)
                .is_some_and(|(session, inode)| inode == id && self.sessions.contains_key(&session)));
        if rules >= 9 && !putting_back {
            self.refuse_reserved(&dst, true)?;
        }
        if exact == Exact::NoReplace && dst != *src && self.lookup(&dst).is_ok() {
            return Err(FsError::AlreadyExists { path: dst.to_string() });
        }
        // Rules 6: a name in `/` that a session's end removes is taken by a
        // rename only while that session lives (so a mount never hides a
        // file under a session meta already ended; see `locking`).
        if rules >= 6
            && let [name] = dst.components()
            && let Some((session, _)) = shoal_core::path::parse_unlinked_name(name)
            && !self.sessions.contains_key(&session)
        {
            return Err(FsError::SessionExpired { session });
        }
        // Rules 9: `.shoal-unlinked.S.N` is taken only by inode N, so the
        // name a mount removes at its last close never names another file.
        if rules >= 9
            && !putting_back
            && let [name] = dst.components()
            && let Some((_, inode)) = shoal_core::path::parse_unlinked_name(name)
            && inode != id
        {
            return Err(shoal_core::path::reserved_refusal(&dst, &format!("only inode {inode} may take it")));
        }
        if let Some(f) = fence {
            // Only a file, onto exactly the locked path, with a token that
            // holds that lock and is no older than a token that already
            // wrote the file moved or the one it replaces.
            if self.inodes[&id].kind != Kind::File {
                return Err(FsError::IsADirectory { path: src.to_string() });
            }
            let replaced_fence = self.lookup(&dst).map_or(0, |i| i.fence);
            let newest = self.inodes[&id].fence.max(replaced_fence);
            if f.path != dst || f.token < newest || !self.locks.token_holds(&dst.to_string(), f.token) {
                return Err(FsError::Fenced { path: f.path.to_string(), token: f.token });
            }
        }
        if dst == *src {
            if let Some(f) = fence {
                self.guard_with(f.token, id);
            }
            return Ok(Response::Ok);
        }
        if dst.starts_with(src) {
            return Err(FsError::RenameIntoSelf { src: src.to_string(), dst: dst.to_string() });
        }
        let (dst_dir, dst_name) = self.lookup_parent(&dst)?;
        let src_kind = self.inodes[&id].kind;
        let replaced = self.inodes[&dst_dir].children.get(dst_name).copied();
        if replaced == Some(id) {
            // Two names of one inode: rename(2) does nothing and succeeds.
            if let Some(f) = fence {
                self.guard_with(f.token, id);
            }
            return Ok(Response::Ok);
        }
        if let Some(old) = replaced {
            let old = &self.inodes[&old];
            match (src_kind == Kind::Dir, old.kind == Kind::Dir) {
                // Files and symbolic links replace each other.
                (false, false) => {}
                (true, true) if old.children.is_empty() => {}
                (true, true) => {
                    return Err(FsError::NotEmpty { path: dst.to_string() });
                }
                (false, true) => {
                    return Err(FsError::IsADirectory { path: dst.to_string() });
                }
                (true, false) => {
                    return Err(FsError::NotADirectory { path: dst.to_string() });
                }
            }
        }
        self.inodes.get_mut(&src_dir).expect("parent exists").children.remove(src_name);
        if let Some(old) = replaced {
            self.drop_name(old, dst_dir, (rules >= 3).then_some(mtime_ms));
        }
        self.link(dst_dir, dst_name, id, mtime_ms);
        self.move_name(id, src_dir, dst_dir);
        let moved = self.inodes.get_mut(&id).expect("moved inode exists");
        // Rules 3: the source directory's times move too, and the inode's ctime.
        if rules >= 3 {
            moved.touch_changed(mtime_ms);
            self.inodes.get_mut(&src_dir).expect("parent exists").touch_modified(mtime_ms);
        }
        if let Some(f) = fence {
            // The lock on `dst` now guards the file put there.
            self.guard_with(f.token, id);
        }
        Ok(Response::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{create, p, run};
    use super::*;

    #[test]
    fn namespace_basics() {
        let mut st = FsState::default();
        assert_eq!(
            run(&mut st, NamespaceCmd::Mkdir { path: p("/a/b"), parents: false }),
            Response::Err(FsError::NotFound { path: "/a".into() })
        );
        assert!(matches!(run(&mut st, NamespaceCmd::Mkdir { path: p("/a/b"), parents: true }), Response::Inode(_)));
        create(&mut st, "/a/b/f");
        let again = run(
            &mut st,
            NamespaceCmd::Create { path: p("/a/b/f"), replication: 2, chunk_size: 100, open_existing: false },
        );
        assert_eq!(again, Response::Err(FsError::AlreadyExists { path: "/a/b/f".into() }));
        assert_eq!(
            run(&mut st, NamespaceCmd::Remove { path: p("/a"), recursive: false }),
            Response::Err(FsError::NotEmpty { path: "/a".into() })
        );
        assert!(matches!(st.lookup(&p("/a/b/f/x")), Err(FsError::NotADirectory { .. })));
        assert_eq!(run(&mut st, NamespaceCmd::Remove { path: p("/a"), recursive: true }), Response::Ok);
        assert_eq!(st.inodes.len(), 1, "only the root is left");
    }

    #[test]
    fn rename_rules() {
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d/e"), parents: true });
        create(&mut st, "/f");
        create(&mut st, "/g");
        assert_eq!(
            run(&mut st, NamespaceCmd::Rename { src: p("/d"), dst: p("/d/e/x"), fence: None }),
            Response::Err(FsError::RenameIntoSelf { src: "/d".into(), dst: "/d/e/x".into() })
        );
        // Onto a directory: moves into it.
        assert_eq!(run(&mut st, NamespaceCmd::Rename { src: p("/f"), dst: p("/d"), fence: None }), Response::Ok);
        assert!(st.lookup(&p("/d/f")).is_ok());
        // Onto a file: replaces it.
        assert_eq!(run(&mut st, NamespaceCmd::Rename { src: p("/g"), dst: p("/d/f"), fence: None }), Response::Ok);
        assert!(st.lookup(&p("/g")).is_err());
        assert_eq!(st.lookup(&p("/d/f")).unwrap().parent, st.lookup(&p("/d")).unwrap().id);
    }

    #[test]
    fn make_node_takes_the_callers_owner_and_mode() {
        let mut st = FsState::default();
        let owner = Owner { mode: 0o1777, uid: 1000, gid: 100 };
        let mk = |path: &str, kind, exclusive| NamespaceCmd::MakeNode {
            path: p(path),
            kind,
            owner,
            replication: 2,
            chunk_size: 100,
            exclusive,
        };
        let Response::Inode(d) = run(&mut st, mk("/d", Kind::Dir, true)) else { panic!() };
        assert_eq!((d.mode, d.uid, d.gid, d.chunk_size), (0o1777, 1000, 100, 0));
        assert_eq!(d.times_ns(), (1_000_000, 1_000_000, 1_000_000));
        let Response::Inode(f) = run(&mut st, mk("/d/f", Kind::File, true)) else { panic!() };
        assert_eq!((f.kind, f.uid, f.replication), (Kind::File, 1000, 2));
        // An existing file: answered unless exclusive; a directory: refused.
        assert_eq!(run(&mut st, mk("/d/f", Kind::File, false)), Response::Inode(f));
        assert_eq!(
            run(&mut st, mk("/d/f", Kind::File, true)),
            Response::Err(FsError::AlreadyExists { path: "/d/f".into() })
        );
        assert_eq!(
            run(&mut st, mk("/d", Kind::File, false)),
            Response::Err(FsError::IsADirectory { path: "/d".into() })
        );
        assert_eq!(
            run(&mut st, mk("/d", Kind::Dir, false)),
            Response::Err(FsError::AlreadyExists { path: "/d".into() })
        );
        let bad = NamespaceCmd::MakeNode {
            path: p("/x"),
            kind: Kind::File,
            owner: Owner { mode: 0o17777, uid: 0, gid: 0 },
            replication: 2,
            chunk_size: 100,
            exclusive: true,
        };
        assert!(matches!(run(&mut st, bad), Response::Err(FsError::InvalidArgument { .. })));
        // Found by fuzz/fsm_apply: a MakeNode of kind Symlink made a link with
        // no target, which breaks the invariant that every link has one.
        let link = NamespaceCmd::MakeNode {
            path: p("/V"),
            kind: Kind::Symlink,
            owner: Owner { mode: 0, uid: 0, gid: 0 },
            replication: 0,
            chunk_size: 0,
            exclusive: false,
        };
        let before = st.clone();
        assert!(matches!(run(&mut st, link), Response::Err(FsError::InvalidArgument { .. })));
        assert!(st == before, "a refused MakeNode changed the state");
    }

    #[test]
    fn exact_rename_is_rename_2() {
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d/e"), parents: true });
        run(&mut st, NamespaceCmd::Mkdir { path: p("/empty"), parents: false });
        create(&mut st, "/f");
        create(&mut st, "/g");
        let exact =
            |src: &str, dst: &str, no_replace| NamespaceCmd::RenameExact { src: p(src), dst: p(dst), no_replace };
        // A file onto a directory is EISDIR, not a move into it.
        assert_eq!(run(&mut st, exact("/f", "/d", false)), Response::Err(FsError::IsADirectory { path: "/d".into() }));
        // A directory replaces an empty directory, not a full one.
        assert_eq!(run(&mut st, exact("/d", "/empty", false)), Response::Ok);
        assert_eq!(st.lookup(&p("/empty/e")).unwrap().kind, Kind::Dir);
        run(&mut st, NamespaceCmd::Mkdir { path: p("/other"), parents: false });
        assert_eq!(
            run(&mut st, exact("/other", "/empty", false)),
            Response::Err(FsError::NotEmpty { path: "/empty".into() })
        );
        // NOREPLACE refuses an existing name; without it a file is replaced.
        assert_eq!(run(&mut st, exact("/f", "/g", true)), Response::Err(FsError::AlreadyExists { path: "/g".into() }));
        let f = st.lookup(&p("/f")).unwrap().id;
        assert_eq!(run(&mut st, exact("/f", "/g", false)), Response::Ok);
        assert_eq!(st.lookup(&p("/g")).unwrap().id, f);
        // Both directories' times moved (rules 3).
        assert_eq!(st.inodes[&ROOT_INODE].mtime_ms, 1);
    }

    #[test]
    fn symlinks_hold_their_target() {
        let mut st = FsState::default();
        let mk =
            |path: &str, target: &str| NamespaceCmd::Symlink { path: p(path), target: target.into(), uid: 5, gid: 6 };
        let Response::Inode(l) = run(&mut st, mk("/l", "../some/where")) else { panic!() };
        assert_eq!(
            (l.kind, l.extra.target.as_str(), l.size, l.mode, l.uid),
            (Kind::Symlink, "../some/where", 13, 0o777, 5)
        );
        assert_eq!(run(&mut st, mk("/l", "x")), Response::Err(FsError::AlreadyExists { path: "/l".into() }));
        for bad in ["", "a\0b", &"x".repeat(SYMLINK_TARGET_MAX_BYTES + 1)] {
            assert!(matches!(run(&mut st, mk("/m", bad)), Response::Err(FsError::InvalidArgument { .. })));
        }
        // Through a link is not a directory (the kernel resolves links).
        assert!(matches!(st.lookup(&p("/l/x")), Err(FsError::NotADirectory { .. })));
        // A link and a file replace each other; a write to a link is refused.
        create(&mut st, "/f");
        let exact = NamespaceCmd::RenameExact { src: p("/l"), dst: p("/f"), no_replace: false };
        assert_eq!(run(&mut st, exact), Response::Ok);
        assert_eq!(st.lookup(&p("/f")).unwrap().kind, Kind::Symlink);
        let commit =
            super::super::WriteCmd::CommitWrite { inode: l.id, chunks: vec![], size: 1, truncate: true, fence: None };
        assert!(matches!(run(&mut st, commit), Response::Err(_)));
    }

    #[test]
    fn replication_is_inherited() {
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d/e"), parents: true });
        assert_eq!(st.inherited_replication(&p("/d/e/f")), 0);
        let d = st.lookup(&p("/d")).unwrap().id;
        st.inodes.get_mut(&d).unwrap().replication = 3;
        assert_eq!(st.inherited_replication(&p("/d/e/f")), 3);
    }

    fn owner() -> Owner {
        Owner { mode: 0o640, uid: 7, gid: 8 }
    }

    fn mknod(path: &str, kind: Kind, rdev: u64) -> NamespaceCmd {
        NamespaceCmd::Mknod { path: p(path), kind, owner: owner(), rdev }
    }

    fn link(src: &str, dst: &str) -> NamespaceCmd {
        NamespaceCmd::Link { src: p(src), dst: p(dst) }
    }

    /// Applies `cmd`, which must be refused with `want` and change nothing.
    fn refused(st: &mut FsState, cmd: impl Into<super::super::Command>, want: FsError) {
        let before = st.clone();
        assert_eq!(run(st, cmd), Response::Err(want));
        assert!(*st == before, "a refused command changed the state");
    }

    /// A file at `path` with one committed chunk on servers 1 and 2.
    fn file_with_a_chunk(st: &mut FsState, path: &str) -> (u64, u64) {
        let f = create(st, path);
        let Response::Chunk { chunk, .. } = super::super::testing::prepare(st, f.id, 0, &[1, 2]) else { panic!() };
        let commit = super::super::WriteCmd::CommitWrite {
            inode: f.id,
            chunks: vec![(0, chunk.id, 1)],
            size: 10,
            truncate: false,
            fence: None,
        };
        assert!(matches!(run(st, commit), Response::Inode(_)));
        (f.id, chunk.id)
    }

    #[test]
    fn mknod_makes_special_files_without_data() {
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        let made: Vec<Inode> = [
            ("/d/fifo", Kind::Fifo, 0),
            ("/d/sock", Kind::Socket, 0),
            ("/d/tty", Kind::CharDevice, 0x0401),
            ("/d/sda", Kind::BlockDevice, 0x0800),
        ]
        .into_iter()
        .map(|(path, kind, rdev)| run(&mut st, mknod(path, kind, rdev)).into_inode().unwrap())
        .collect();
        let kinds: Vec<(Kind, u64, u32, u32, u64)> =
            made.iter().map(|i| (i.kind, i.extra.rdev, i.mode, i.uid, i.size)).collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Fifo, 0, 0o640, 7, 0),
                (Kind::Socket, 0, 0o640, 7, 0),
                (Kind::CharDevice, 0x0401, 0o640, 7, 0),
                (Kind::BlockDevice, 0x0800, 0o640, 7, 0)
            ]
        );
        assert!(made.iter().all(|i| st.nlink(i) == 1 && i.chunks.is_empty()));
        assert_eq!(st.lookup(&p("/d/fifo")).unwrap().kind, Kind::Fifo);
        // The directory's times moved; through a special file is not a directory.
        assert_eq!(st.lookup(&p("/d")).unwrap().mtime_ms, 1);
        assert!(matches!(st.lookup(&p("/d/fifo/x")), Err(FsError::NotADirectory { .. })));
        // Refusals change nothing.
        refused(&mut st, mknod("/d/fifo", Kind::Socket, 0), FsError::AlreadyExists { path: "/d/fifo".into() });
        refused(&mut st, mknod("/nope/x", Kind::Fifo, 0), FsError::NotFound { path: "/nope".into() });
        for kind in [Kind::File, Kind::Dir, Kind::Symlink] {
            let before = st.clone();
            assert!(matches!(run(&mut st, mknod("/x", kind, 0)), Response::Err(FsError::InvalidArgument { .. })));
            assert!(st == before);
        }
        let before = st.clone();
        assert!(matches!(run(&mut st, mknod("/x", Kind::Fifo, 5)), Response::Err(FsError::InvalidArgument { .. })));
        let big = NamespaceCmd::Mknod {
            path: p("/x"),
            kind: Kind::Fifo,
            owner: Owner { mode: 0o10000, uid: 0, gid: 0 },
            rdev: 0,
        };
        assert!(matches!(run(&mut st, big), Response::Err(FsError::InvalidArgument { .. })));
        // MakeNode makes no special files.
        let make = NamespaceCmd::MakeNode {
            path: p("/x"),
            kind: Kind::Fifo,
            owner: owner(),
            replication: 2,
            chunk_size: 100,
            exclusive: true,
        };
        assert!(matches!(run(&mut st, make), Response::Err(FsError::InvalidArgument { .. })));
        assert!(st == before);
        // Nothing can be written to one.
        let fifo = made[0].id;
        let commit =
            super::super::WriteCmd::CommitWrite { inode: fifo, chunks: vec![], size: 1, truncate: true, fence: None };
        assert!(matches!(run(&mut st, commit), Response::Err(_)));
        // A special file replaces and is replaced by a file; removing it frees its inode.
        create(&mut st, "/f");
        let exact = NamespaceCmd::RenameExact { src: p("/d/fifo"), dst: p("/f"), no_replace: false };
        assert_eq!(run(&mut st, exact), Response::Ok);
        assert_eq!(st.lookup(&p("/f")).unwrap().kind, Kind::Fifo);
        assert_eq!(run(&mut st, NamespaceCmd::Remove { path: p("/f"), recursive: false }), Response::Ok);
        assert!(st.inode(fifo).is_err());
    }

    #[test]
    fn a_file_with_two_names_lives_until_the_last_goes() {
        let mut st = super::super::testing::with_servers(&[1, 2]);
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        let (f, chunk) = file_with_a_chunk(&mut st, "/f");
        let at = |st: &mut FsState, ms: u64, cmd: NamespaceCmd| st.apply(&super::super::Proposal::new(ms, None, cmd));
        let linked = at(&mut st, 50, link("/f", "/d/g")).into_inode().unwrap();
        assert_eq!((linked.id, linked.names(), st.nlink(&linked)), (f, 2, 2));
        // link(2) moves the file's ctime and the new directory's mtime and ctime.
        assert_eq!(linked.times_ns().2, 50_000_000);
        assert_eq!(st.lookup(&p("/d")).unwrap().times_ns().1, 50_000_000);
        assert_eq!(st.lookup(&p("/d/g")).unwrap().id, f);
        assert_eq!(st.path_of(f), "/f", "the first name");
        // Removing the first name keeps the inode, its data, and moves its ctime and first name.
        assert_eq!(at(&mut st, 60, NamespaceCmd::Remove { path: p("/f"), recursive: false }), Response::Ok);
        let left = st.inode(f).unwrap();
        assert_eq!((left.names(), left.size, left.chunks[&0].id, left.times_ns().2), (1, 10, chunk, 60_000_000));
        assert_eq!(left.parent, st.lookup(&p("/d")).unwrap().id);
        assert_eq!(st.path_of(f), "/d/g");
        assert!(st.garbage.is_empty(), "a chunk became garbage while a name remained");
        // Removing the last name frees the chunk on both holders.
        assert_eq!(run(&mut st, NamespaceCmd::Remove { path: p("/d/g"), recursive: false }), Response::Ok);
        assert!(st.inode(f).is_err());
        assert_eq!(st.garbage.get(&chunk).map(|h| h.len()), Some(2));
    }

    #[test]
    fn link_refusals_change_nothing() {
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        create(&mut st, "/f");
        create(&mut st, "/g");
        refused(&mut st, link("/d", "/e"), FsError::LinkToDirectory { path: "/d".into() });
        refused(&mut st, link("/", "/e"), FsError::LinkToDirectory { path: "/".into() });
        refused(&mut st, link("/f", "/g"), FsError::AlreadyExists { path: "/g".into() });
        refused(&mut st, link("/d", "/g"), FsError::AlreadyExists { path: "/g".into() });
        refused(&mut st, link("/nope", "/e"), FsError::NotFound { path: "/nope".into() });
        refused(&mut st, link("/f", "/nope/e"), FsError::NotFound { path: "/nope".into() });
        refused(&mut st, link("/f", "/g/e"), FsError::NotADirectory { path: "/g".into() });
        // At the bound, one more name is refused.
        let f = st.lookup(&p("/f")).unwrap().id;
        let root = st.inodes.get_mut(&ROOT_INODE).unwrap();
        root.children.extend((1..LINKS_MAX).map(|n| (format!("n{n}").into(), f)));
        st.inodes.get_mut(&f).unwrap().extra.extra_links.insert(ROOT_INODE, LINKS_MAX - 1);
        assert_eq!(st.check_invariants(), Ok(()));
        refused(&mut st, link("/f", "/e"), FsError::TooManyLinks { path: "/f".into(), max: LINKS_MAX });
    }

    #[test]
    fn renames_move_one_name_of_several() {
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/a"), parents: false });
        run(&mut st, NamespaceCmd::Mkdir { path: p("/b"), parents: false });
        let f = create(&mut st, "/a/f").id;
        run(&mut st, link("/a/f", "/a/g"));
        run(&mut st, link("/a/f", "/b/h"));
        assert_eq!(st.inode(f).unwrap().names(), 3);
        // Onto another name of the same inode: nothing happens, as rename(2) says.
        let before = st.clone();
        let exact = |src: &str, dst: &str| NamespaceCmd::RenameExact { src: p(src), dst: p(dst), no_replace: false };
        assert_eq!(run(&mut st, exact("/a/f", "/b/h")), Response::Ok);
        assert!(st == before);
        // Moving a name to another directory keeps the others.
        assert_eq!(run(&mut st, exact("/a/f", "/f2")), Response::Ok);
        assert_eq!(st.lookup(&p("/f2")).unwrap().id, f);
        assert_eq!(st.lookup(&p("/a/g")).unwrap().id, f);
        assert!(st.lookup(&p("/a/f")).is_err());
        assert_eq!(st.inode(f).unwrap().names(), 3);
        // A file put over one name leaves the inode with the rest.
        let other = create(&mut st, "/o").id;
        assert_eq!(run(&mut st, exact("/o", "/b/h")), Response::Ok);
        assert_eq!(st.lookup(&p("/b/h")).unwrap().id, other);
        assert_eq!(st.inode(f).unwrap().names(), 2);
        // Removing a directory holding one name keeps the inode; one holding the last drops it.
        assert_eq!(run(&mut st, NamespaceCmd::Remove { path: p("/a"), recursive: true }), Response::Ok);
        assert_eq!(st.inode(f).unwrap().names(), 1);
        assert_eq!(st.path_of(f), "/f2");
        run(&mut st, NamespaceCmd::Mkdir { path: p("/t/u"), parents: true });
        run(&mut st, link("/f2", "/t/u/x"));
        run(&mut st, link("/f2", "/t/y"));
        run(&mut st, NamespaceCmd::Remove { path: p("/f2"), recursive: false });
        assert_eq!(run(&mut st, NamespaceCmd::Remove { path: p("/t"), recursive: true }), Response::Ok);
        assert!(st.inode(f).is_err());
        assert_eq!(st.inodes.len(), 3, "the root, /b and /b/h are left");
    }

    #[test]
    fn a_directory_counts_its_subdirectories() {
        let mut st = FsState::default();
        let nlink = |st: &FsState, path: &str| st.nlink(st.lookup(&p(path)).unwrap());
        run(&mut st, NamespaceCmd::Mkdir { path: p("/a/x"), parents: true });
        run(&mut st, NamespaceCmd::Mkdir { path: p("/a/y"), parents: true });
        run(&mut st, NamespaceCmd::Mkdir { path: p("/b"), parents: false });
        create(&mut st, "/a/f");
        run(&mut st, mknod("/a/p", Kind::Fifo, 0));
        assert_eq!((nlink(&st, "/"), nlink(&st, "/a"), nlink(&st, "/b"), nlink(&st, "/a/x")), (4, 4, 2, 2));
        let exact = NamespaceCmd::RenameExact { src: p("/a/x"), dst: p("/b/x"), no_replace: false };
        assert_eq!(run(&mut st, exact), Response::Ok);
        assert_eq!((nlink(&st, "/a"), nlink(&st, "/b")), (3, 3));
    }

    #[test]
    fn unlink_and_rmdir_check_the_kind_as_they_apply() {
        let mut st = FsState::default();
        create(&mut st, "/f");
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        create(&mut st, "/d/g");
        let unlink = |path: &str| NamespaceCmd::RemoveKind { path: p(path), dir: false };
        let rmdir = |path: &str| NamespaceCmd::RemoveKind { path: p(path), dir: true };
        let before = st.clone();
        assert_eq!(run(&mut st, unlink("/d")), Response::Err(FsError::IsADirectory { path: "/d".into() }));
        assert_eq!(run(&mut st, rmdir("/f")), Response::Err(FsError::NotADirectory { path: "/f".into() }));
        assert_eq!(run(&mut st, rmdir("/d")), Response::Err(FsError::NotEmpty { path: "/d".into() }));
        assert_eq!(run(&mut st, unlink("/nope")), Response::Err(FsError::NotFound { path: "/nope".into() }));
        assert_eq!(st, before, "refusals change nothing");
        assert_eq!(run(&mut st, unlink("/d/g")), Response::Ok);
        assert_eq!(run(&mut st, rmdir("/d")), Response::Ok);
        assert_eq!(run(&mut st, unlink("/f")), Response::Ok);
        assert!(st.lookup(&p("/f")).is_err() && st.lookup(&p("/d")).is_err());
    }

    #[test]
    fn an_exchange_swaps_two_names_or_changes_nothing() {
        let mut st = FsState::default();
        let ex = |a: &str, b: &str| NamespaceCmd::Exchange { a: p(a), b: p(b) };
        let nlink = |st: &FsState, path: &str| st.nlink(st.lookup(&p(path)).unwrap());
        run(&mut st, NamespaceCmd::Mkdir { path: p("/a/sub"), parents: true });
        run(&mut st, NamespaceCmd::Mkdir { path: p("/b"), parents: false });
        let f = create(&mut st, "/a/f").id;
        let g = create(&mut st, "/b/g").id;
        run(&mut st, link("/b/g", "/b/g2"));
        let sub = st.lookup(&p("/a/sub")).unwrap().id;
        // Two files in two directories, one of them with a second name.
        assert_eq!(run(&mut st, ex("/a/f", "/b/g")), Response::Ok);
        assert_eq!((st.lookup(&p("/a/f")).unwrap().id, st.lookup(&p("/b/g")).unwrap().id), (g, f));
        assert_eq!(st.lookup(&p("/b/g2")).unwrap().id, g);
        assert_eq!((st.inode(f).unwrap().names(), st.inode(g).unwrap().names()), (1, 2));
        assert_eq!(st.path_of(f), "/b/g");
        // A directory and a file: the directory moves, and so do the link counts.
        assert_eq!(run(&mut st, ex("/a/sub", "/b/g")), Response::Ok);
        assert_eq!((st.lookup(&p("/b/g")).unwrap().id, st.lookup(&p("/a/sub")).unwrap().id), (sub, f));
        assert_eq!((nlink(&st, "/a"), nlink(&st, "/b")), (2, 3));
        assert_eq!(st.check_invariants(), Ok(()));
        // Refused whole: a name missing, or one below the other.
        refused(&mut st, ex("/a/f", "/nope"), FsError::NotFound { path: "/nope".into() });
        run(&mut st, NamespaceCmd::Mkdir { path: p("/b/g/deep"), parents: false });
        refused(
            &mut st,
            ex("/b/g", "/b/g/deep"),
            FsError::RenameIntoSelf { src: "/b/g".into(), dst: "/b/g/deep".into() },
        );
        refused(
            &mut st,
            ex("/b/g/deep", "/b/g"),
            FsError::RenameIntoSelf { src: "/b/g/deep".into(), dst: "/b/g".into() },
        );
        // One name twice, or two names of one inode: nothing to do.
        let before = st.clone();
        assert_eq!(run(&mut st, ex("/a/sub", "/a/sub")), Response::Ok);
        assert_eq!(st.lookup(&p("/b/g2")).unwrap().id, g);
        run(&mut st, link("/b/g2", "/b/g3"));
        let before_links = st.clone();
        assert_eq!(run(&mut st, ex("/b/g2", "/b/g3")), Response::Ok);
        assert!(st == before_links);
        assert!(before != st, "the link above changed the state, the exchanges did not");
    }

    #[test]
    fn the_invariants_count_every_name() {
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        let f = create(&mut st, "/f").id;
        run(&mut st, link("/f", "/d/g"));
        assert_eq!(st.check_invariants(), Ok(()));
        let mut uncounted = st.clone();
        uncounted.inodes.get_mut(&f).unwrap().extra.extra_links.clear();
        assert!(uncounted.check_invariants().unwrap_err().contains(&format!("inode {f} has directory entries")));
        let mut linked_dir = st.clone();
        let d = st.lookup(&p("/d")).unwrap().id;
        linked_dir.inodes.get_mut(&d).unwrap().extra.extra_links.insert(ROOT_INODE, 1);
        assert!(linked_dir.check_invariants().is_err());
        let mut device = st.clone();
        device.inodes.get_mut(&f).unwrap().extra.rdev = 3;
        assert!(device.check_invariants().unwrap_err().contains("device number"));
    }

    /// Rules 8: a path anchored at a directory's inode names what lies
    /// under that directory wherever it is when the command applies; under
    /// older rules the same path is taken literally.
    #[test]
    fn anchored_paths_follow_their_directory() {
        use shoal_core::path::inode_path;
        let at = |dir: u64, rest: &str| p(&format!("{}/{rest}", inode_path(dir)));
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d/sub"), parents: true });
        let d = st.lookup(&p("/d")).unwrap().id;
        let sub = st.lookup(&p("/d/sub")).unwrap().id;
        // Another client moves d and puts a new directory at its old name.
        run(&mut st, NamespaceCmd::Rename { src: p("/d"), dst: p("/d2"), fence: None });
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        let made = create(&mut st, &at(d, "f").to_string());
        assert_eq!(st.lookup(&p("/d2/f")).unwrap().id, made.id, "made in d's own directory");
        assert!(st.lookup(&p("/d/f")).is_err(), "not in the one that took its old name");
        assert_eq!(st.resolve(&at(d, "f")).unwrap().id, made.id);
        assert_eq!(st.resolve(&p(&inode_path(d))).unwrap().id, d);
        run(&mut st, NamespaceCmd::Mkdir { path: at(d, "e"), parents: false });
        assert!(st.lookup(&p("/d2/e")).is_ok());
        run(&mut st, NamespaceCmd::RenameExact { src: at(d, "f"), dst: at(sub, "g"), no_replace: true });
        assert_eq!(st.lookup(&p("/d2/sub/g")).unwrap().id, made.id);
        assert_eq!(run(&mut st, NamespaceCmd::RemoveKind { path: at(sub, "g"), dir: false }), Response::Ok);
        assert!(st.lookup(&p("/d2/sub/g")).is_err());
        // The checks see the paths the anchors name: a directory into itself.
        refused(
            &mut st,
            NamespaceCmd::RenameExact { src: p(&inode_path(d)), dst: at(sub, "x"), no_replace: false },
            FsError::RenameIntoSelf { src: "/d2".into(), dst: "/d2/sub/x".into() },
        );
        // An anchor that is gone, or a file with names below it, refuses.
        let f = create(&mut st, "/file").id;
        refused(
            &mut st,
            NamespaceCmd::Mkdir { path: at(f, "x"), parents: false },
            FsError::NotADirectory { path: "/file".into() },
        );
        run(&mut st, NamespaceCmd::Remove { path: p("/d2"), recursive: true });
        let gone = at(sub, "x");
        refused(
            &mut st,
            NamespaceCmd::Mkdir { path: gone.clone(), parents: true },
            FsError::NotFound { path: gone.to_string() },
        );
        // The other commands that name paths, and the checks of `/`'s names.
        let mut st = super::super::testing::with_servers(&[1, 2]);
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        let d = st.lookup(&p("/d")).unwrap().id;
        let new_file = |path| NamespaceCmd::Create { path, replication: 2, chunk_size: 100, open_existing: false };
        let prepared = super::super::WriteCmd::CreatePrepared { create: new_file(at(d, "f")), replicas: vec![1, 2] };
        assert!(matches!(run(&mut st, prepared), Response::Created { .. }));
        let f = st.lookup(&p("/d/f")).unwrap().id;
        assert!(matches!(run(&mut st, link(&inode_path(f), &at(d, "g").to_string())), Response::Inode(_)));
        assert_eq!(st.lookup(&p("/d/g")).unwrap().id, f);
        let set = vec![("user.k".to_string(), b"v".to_vec())];
        run(&mut st, NamespaceCmd::SetXattrs { path: p(&inode_path(f)), remove: vec![], set });
        assert_eq!(st.inodes[&f].extra.xattrs.get("user.k").map(|v| &v[..]), Some(&b"v"[..]));
        run(&mut st, NamespaceCmd::Mkdir { path: p("/e"), parents: false });
        let e = st.lookup(&p("/e")).unwrap().id;
        run(&mut st, NamespaceCmd::Exchange { a: p(&inode_path(d)), b: p(&inode_path(e)) });
        assert_eq!(st.lookup(&p("/e/f")).unwrap().id, f, "d and e swapped names");
        let hidden = format!("{}/{}", inode_path(ROOT_INODE), shoal_core::path::unlinked_name(99, f));
        refused(
            &mut st,
            NamespaceCmd::RenameExact { src: at(d, "g"), dst: p(&hidden), no_replace: true },
            FsError::SessionExpired { session: 99 },
        );
        // A path longer than a path may be, once anchored, is refused.
        let mut deep = String::new();
        for c in b'a'..b'q' {
            deep.push('/');
            deep.push_str(&(c as char).to_string().repeat(250));
        }
        run(&mut st, NamespaceCmd::Mkdir { path: p(&deep), parents: true });
        let bottom = st.lookup(&p(&deep)).unwrap().id;
        let long = at(bottom, &"z".repeat(250));
        let too_long = run(&mut st, NamespaceCmd::Mkdir { path: long.clone(), parents: false });
        assert!(
            matches!(too_long, Response::Err(FsError::InvalidPath(shoal_core::path::PathError::PathTooLong { .. }))),
            "{too_long:?}"
        );
        assert!(matches!(st.resolve(&long), Err(FsError::NotFound { .. })), "a read walks down, whatever the length");
        assert_eq!(st.resolve(&p(&inode_path(bottom))).map(|i| i.id), Ok(bottom));
        // A read walks from the anchor to where the command's path leads.
        for path in [p(&inode_path(f)), at(d, "f"), at(ROOT_INODE, "e"), p(&inode_path(e)), at(e, "nothing")] {
            let walked = st.resolve(&path).map(|i| i.id).map_err(|e| std::mem::discriminant(&e));
            let built = st.absolute(&path, super::super::RULES).and_then(|a| st.lookup(&a).map(|i| i.id));
            assert_eq!(walked, built.map_err(|e| std::mem::discriminant(&e)), "{path}");
        }
        assert_eq!(st.resolve(&at(d, "f")).map(|i| i.id), Ok(f), "d, now named /e, holds f");
        assert!(matches!(st.resolve(&at(f, "x")), Err(FsError::NotADirectory { .. })));
        // Rules 7 knew no anchors: the same path is a literal one.
        let mut old = FsState::default();
        run(&mut old, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        let d = old.lookup(&p("/d")).unwrap().id;
        let literal = super::super::Proposal {
            now_ms: 1,
            request: None,
            cmd: NamespaceCmd::Mkdir { path: at(d, "x"), parents: true }.into(),
            rules: 7,
        };
        assert!(matches!(old.apply(&literal), Response::Inode(_)));
        assert!(old.lookup(&at(d, "x")).is_ok(), "made under a real /.shoal-inode");
        assert!(old.lookup(&p("/d/x")).is_err());
    }

    /// Rules 9: no command makes the root's reserved names, whatever path
    /// it names them by (a mount's hiding and put-back aside), nor puts
    /// another inode under a mount's hidden name, nor exchanges one; a
    /// refusal changes nothing; the names elsewhere, and ones made under
    /// older rules, are as any other.
    #[test]
    fn the_root_name_of_anchors_is_reserved() {
        use shoal_core::path::inode_path;
        let mut st = super::super::testing::with_servers(&[1, 2]);
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d/.shoal-inode"), parents: true });
        let d = st.lookup(&p("/d")).unwrap().id;
        let f = create(&mut st, "/d/f").id;
        let reserved = |path: &str| FsError::InvalidArgument {
            reason: format!("{path} is a reserved name: {path}/N names inode N"),
        };
        let new_file =
            |path: &str| NamespaceCmd::Create { path: p(path), replication: 2, chunk_size: 100, open_existing: false };
        let root_anchored = format!("{}/.shoal-inode", inode_path(ROOT_INODE));
        for cmd in [
            NamespaceCmd::Mkdir { path: p("/.shoal-inode"), parents: false },
            NamespaceCmd::Mkdir { path: p("/.shoal-inode"), parents: true },
            NamespaceCmd::Mkdir { path: p("/.shoal-inode/x/y"), parents: true },
            NamespaceCmd::Mkdir { path: p(&root_anchored), parents: false },
            new_file("/.shoal-inode"),
            NamespaceCmd::Create { path: p("/.shoal-inode"), replication: 2, chunk_size: 100, open_existing: true },
            NamespaceCmd::MakeNode {
                path: p("/.shoal-inode"),
                kind: Kind::File,
                owner: owner(),
                replication: 2,
                chunk_size: 100,
                exclusive: false,
            },
            NamespaceCmd::Symlink { path: p("/.shoal-inode"), target: "x".into(), uid: 0, gid: 0 },
            mknod("/.shoal-inode", Kind::Fifo, 0),
            link("/d/f", "/.shoal-inode"),
            NamespaceCmd::RenameExact { src: p("/d/f"), dst: p("/.shoal-inode"), no_replace: false },
            NamespaceCmd::Rename { src: p("/d/f"), dst: p("/.shoal-inode"), fence: None },
            // A move into `/` of a directory of that name ends at it.
            NamespaceCmd::Rename { src: p("/d/.shoal-inode"), dst: p("/"), fence: None },
        ] {
            refused(&mut st, cmd, reserved("/.shoal-inode"));
        }
        let prepared =
            super::super::WriteCmd::CreatePrepared { create: new_file(&root_anchored), replicas: vec![1, 2] };
        refused(&mut st, prepared, reserved("/.shoal-inode"));
        // Names of mounts' hidden open files: only a mount's rename takes one.
        let hidden = format!("/{}", shoal_core::path::unlinked_name(5, f));
        let why = "names in / that start with .shoal-unlinked. hold mounts' open files whose last name was removed";
        let refusal = |path: &str| FsError::InvalidArgument { reason: format!("{path} is a reserved name: {why}") };
        refused(&mut st, new_file(&hidden), refusal(&hidden));
        refused(
            &mut st,
            NamespaceCmd::Mkdir { path: p("/.shoal-unlinked.x/y"), parents: true },
            refusal("/.shoal-unlinked.x"),
        );
        refused(&mut st, link("/d/f", &hidden), refusal(&hidden));
        refused(
            &mut st,
            NamespaceCmd::RenameExact { src: p("/d/f"), dst: p("/.shoal-unlinked.x"), no_replace: false },
            refusal("/.shoal-unlinked.x"),
        );
        refused(
            &mut st,
            NamespaceCmd::RenameExact { src: p("/d/f"), dst: p(&hidden), no_replace: true },
            FsError::SessionExpired { session: 5 },
        );
        let Response::Session { id: session } = run(&mut st, super::super::LockCmd::OpenSession { ttl_ms: 1000 })
        else {
            panic!()
        };
        let hidden = format!("/{}", shoal_core::path::unlinked_name(session, f));
        run(&mut st, NamespaceCmd::RenameExact { src: p("/d/f"), dst: p(&hidden), no_replace: true });
        assert_eq!(st.lookup(&p(&hidden)).unwrap().id, f, "a mount hides an open file");
        run(&mut st, NamespaceCmd::RenameExact { src: p(&hidden), dst: p("/d/f"), no_replace: true });
        // Elsewhere it is a name like any other; an anchor still names its inode.
        run(&mut st, NamespaceCmd::Rename { src: p("/d/f"), dst: p("/d/.shoal-inode/f"), fence: None });
        assert_eq!(st.resolve(&p(&format!("{}/.shoal-inode/f", inode_path(d)))).unwrap().id, f);
        // Made under rules 8, the name stays usable.
        let older = super::super::Proposal {
            now_ms: 1,
            request: None,
            cmd: NamespaceCmd::Mkdir { path: p("/.shoal-inode"), parents: false }.into(),
            rules: 8,
        };
        assert!(matches!(st.apply(&older), Response::Inode(_)));
        run(&mut st, NamespaceCmd::Mkdir { path: p("/.shoal-inode/x/y"), parents: true });
        assert!(st.lookup(&p("/.shoal-inode/x/y")).is_ok());
        assert_eq!(
            run(&mut st, NamespaceCmd::Remove { path: p("/.shoal-inode"), recursive: true }),
            Response::Ok,
            "and removable"
        );
        refused(&mut st, NamespaceCmd::Mkdir { path: p("/.shoal-inode"), parents: false }, reserved("/.shoal-inode"));
        // A mount that hid such a name's open file to replace it, and whose
        // replacing rename was then refused, puts the file back.
        let older =
            super::super::Proposal { now_ms: 1, request: None, cmd: new_file("/.shoal-inode").into(), rules: 8 };
        let Response::Inode(legacy) = st.apply(&older) else { panic!("made under rules 8") };
        let hidden = format!("/{}", shoal_core::path::unlinked_name(session, legacy.id));
        let rename =
            |src: &str, dst: &str, no_replace| NamespaceCmd::RenameExact { src: p(src), dst: p(dst), no_replace };
        assert_eq!(run(&mut st, rename("/.shoal-inode", &hidden, false)), Response::Ok);
        refused(&mut st, rename("/d/.shoal-inode/f", "/.shoal-inode", false), reserved("/.shoal-inode"));
        // Only the put-back: no-replace, of the file the hidden name names.
        refused(&mut st, rename(&hidden, "/.shoal-inode", false), reserved("/.shoal-inode"));
        // A hidden name that names another inode: rules 9 makes none.
        let misnamed = format!("/{}", shoal_core::path::unlinked_name(session, f + 1000));
        let only = shoal_core::path::reserved_refusal(&p(&misnamed), &format!("only inode {} may take it", f + 1000));
        refused(&mut st, rename("/d/.shoal-inode/f", &misnamed, true), only);
        let older = super::super::Proposal {
            now_ms: 1,
            request: None,
            cmd: rename("/d/.shoal-inode/f", &misnamed, true).into(),
            rules: 8,
        };
        assert_eq!(st.apply(&older), Response::Ok);
        refused(&mut st, rename(&misnamed, "/.shoal-inode", true), reserved("/.shoal-inode"));
        assert_eq!(run(&mut st, rename(&misnamed, "/d/.shoal-inode/f", true)), Response::Ok);
        // A mount's hidden name is not exchanged.
        let own = format!("/{}", shoal_core::path::unlinked_name(session, f));
        assert_eq!(run(&mut st, rename("/d/.shoal-inode/f", &own, true)), Response::Ok);
        let no_exchange = shoal_core::path::reserved_refusal(&p(&own), "a mount's hidden file is not exchanged");
        refused(&mut st, NamespaceCmd::Exchange { a: p(&own), b: p(&hidden) }, no_exchange.clone());
        refused(&mut st, NamespaceCmd::Exchange { a: p("/d"), b: p(&own) }, no_exchange);
        // Nor does another file replace it.
        create(&mut st, "/g2");
        let only_f = shoal_core::path::reserved_refusal(&p(&own), &format!("only inode {f} may take it"));
        refused(&mut st, rename("/g2", &own, false), only_f);
        assert_eq!(run(&mut st, rename(&own, "/d/.shoal-inode/f", true)), Response::Ok);
        assert_eq!(run(&mut st, rename(&hidden, "/.shoal-inode", true)), Response::Ok);
        assert_eq!(st.lookup(&p("/.shoal-inode")).unwrap().id, legacy.id);
    }

    /// The names `path_of` keeps are hints it checks: after renames and
    /// swaps it answers what a scan answers, and they are not state.
    #[test]
    fn remembered_directory_names_never_outlive_a_rename() {
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/a/b/c"), parents: true });
        let c = st.lookup(&p("/a/b/c")).unwrap().id;
        let b = st.lookup(&p("/a/b")).unwrap().id;
        assert_eq!(st.path_of(c), "/a/b/c");
        let before = st.clone();
        run(&mut st, NamespaceCmd::Rename { src: p("/a/b"), dst: p("/a/x"), fence: None });
        assert_eq!(st.path_of(c), "/a/x/c");
        run(&mut st, NamespaceCmd::Rename { src: p("/a"), dst: p("/z"), fence: None });
        assert_eq!(st.path_of(c), "/z/x/c");
        run(&mut st, NamespaceCmd::Mkdir { path: p("/b"), parents: false });
        run(&mut st, NamespaceCmd::Exchange { a: p("/z/x"), b: p("/b") });
        assert_eq!(st.path_of(c), "/b/c");
        assert_eq!(st.path_of(b), "/b");
        // Two directories whose names are both kept swap them: each kept
        // name still leads to a directory, but not to its own.
        run(&mut st, NamespaceCmd::Mkdir { path: p("/q/r"), parents: true });
        let (q, r) = (st.lookup(&p("/q")).unwrap().id, st.lookup(&p("/q/r")).unwrap().id);
        assert_eq!((st.path_of(r), st.path_of(c)), ("/q/r".to_string(), "/b/c".to_string()));
        run(&mut st, NamespaceCmd::Exchange { a: p("/q"), b: p("/b") });
        assert_eq!((st.path_of(r), st.path_of(c), st.path_of(q)), ("/b/r".into(), "/q/c".into(), "/b".into()));
        assert_eq!(st.clone().path_of(c), "/q/c", "a copy, with no names kept, answers the same");
        assert_eq!(before.path_of(c), "/a/b/c", "a copy taken earlier answers its own state");
        assert!(before != st && before.clone() == before, "the names kept play no part in equality");
    }
}
