//! The namespace: directories, files and their attributes.
//!
//! Inodes live in [`FsState::inodes`]; a directory maps names to child
//! inodes, and every inode but the root names its parent. Lookups resolve a
//! [`NormalPath`] one component at a time; the changes (mkdir, create,
//! remove, rename) check everything first, so one that fails changes nothing.
//!
//! # Invariants kept here
//! - Inode 1 is the root directory, its own parent, and always exists.
//! - Every inode but the root has exactly one directory entry, in its
//!   `parent`; no directory contains itself, directly or below.
//! - `next_inode` is above every inode id: ids are never reused.
//! - Removing or replacing a file makes its chunks garbage on every holder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_core::{FsError, NormalPath};

use super::{ChunkMeta, Fence, FsState, ROOT_INODE, Response};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File,
    /// A symbolic link: its target is in [`Inode::target`] (format 3).
    Symlink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    pub chunks: BTreeMap<u64, ChunkMeta>,
    /// Directories only: name to inode.
    pub children: BTreeMap<String, u64>,
    /// The newest fencing token a write to this file carried.
    #[serde(default)]
    pub fence: u64,
    /// Extended attributes, name to value (see [`super::xattrs`]). Records
    /// of format 1 and older have no such field: it decodes as empty there
    /// (`format::since_format_2`).
    #[serde(default, deserialize_with = "crate::format::since_format_2")]
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Owner and group. Records of format 2 and older have no such fields
    /// (`format::since_format_3`): they decode as root's (0).
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    pub uid: u32,
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    pub gid: u32,
    /// Access, modification and change times in nanoseconds since the epoch.
    /// 0 (records of format 2 and older) reads as `mtime_ms`: see
    /// [`Inode::times_ns`]. `mtime_ms` is kept equal to `mtime_ns` in ms.
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    pub atime_ns: u64,
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    pub mtime_ns: u64,
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    pub ctime_ns: u64,
    /// Symbolic links only: the target, as given (1 to
    /// [`SYMLINK_TARGET_MAX_BYTES`], no NUL); empty for everything else.
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    pub target: String,
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
    /// Applies a namespace command at leader time `now_ms`.
    pub(super) fn apply_namespace(&mut self, cmd: &NamespaceCmd, now_ms: u64, rules: u16) -> Result<Response, FsError> {
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
        }
    }

    /// Resolves a path to its inode.
    pub fn lookup(&self, path: &NormalPath) -> Result<&Inode, FsError> {
        let mut cur = &self.inodes[&ROOT_INODE];
        for (depth, name) in path.components().iter().enumerate() {
            if cur.kind != Kind::Dir {
                let prefix: Vec<&str> = path.components()[..depth].iter().map(|s| s.as_str()).collect();
                return Err(FsError::NotADirectory { path: format!("/{}", prefix.join("/")) });
            }
            let id = cur.children.get(name).ok_or_else(|| not_found(path))?;
            cur = &self.inodes[id];
        }
        Ok(cur)
    }

    /// Resolves the directory that holds `path`, and the final name.
    pub(super) fn lookup_parent<'p>(&self, path: &'p NormalPath) -> Result<(u64, &'p str), FsError> {
        let (parent, name) = path.split_last().ok_or(FsError::Root)?;
        let dir = self.lookup(&parent)?;
        if dir.kind != Kind::Dir {
            return Err(FsError::NotADirectory { path: parent.to_string() });
        }
        Ok((dir.id, name))
    }

    /// The path of inode `id` (its name is looked up in its parent).
    pub fn path_of(&self, id: u64) -> String {
        let mut names = Vec::new();
        let mut cur = id;
        while cur != ROOT_INODE {
            let Some(inode) = self.inodes.get(&cur) else { break };
            let parent = &self.inodes[&inode.parent];
            let name = parent.children.iter().find(|(_, c)| **c == cur).map_or("?", |(n, _)| n.as_str());
            names.push(name);
            cur = inode.parent;
        }
        names.reverse();
        format!("/{}", names.join("/"))
    }

    pub fn inode(&self, id: u64) -> Result<&Inode, FsError> {
        self.inodes.get(&id).ok_or(FsError::StaleInode { inode: id })
    }

    /// The replication a new file under `parent` inherits (0: cluster default).
    pub fn inherited_replication(&self, path: &NormalPath) -> u32 {
        let mut cur = &self.inodes[&ROOT_INODE];
        let mut rep = cur.replication;
        for name in path.components() {
            match cur.children.get(name).map(|id| &self.inodes[id]) {
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
                chunks: BTreeMap::new(),
                children: BTreeMap::new(),
                fence: 0,
                xattrs: BTreeMap::new(),
                uid,
                gid,
                atime_ns: now_ns,
                mtime_ns: now_ns,
                ctime_ns: now_ns,
                target: String::new(),
            },
        );
        id
    }

    pub(super) fn link(&mut self, dir: u64, name: &str, child: u64, mtime_ms: u64) {
        let d = self.inodes.get_mut(&dir).expect("parent exists");
        d.children.insert(name.to_string(), child);
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
                (true, Kind::Symlink) | (false, _) => Err(FsError::AlreadyExists { path: path.to_string() }),
            };
        }
        let id = self.new_inode(dir, Kind::File, replication, chunk_size, mtime_ms, None);
        self.link(dir, name, id, mtime_ms);
        Ok(Response::Inode(self.inodes[&id].clone()))
    }

    /// Drops an inode and everything below it; their chunks become garbage.
    pub(super) fn drop_tree(&mut self, id: u64) {
        let Some(inode) = self.inodes.remove(&id) else {
            return;
        };
        for child in inode.children.values() {
            self.drop_tree(*child);
        }
        for chunk in inode.chunks.values() {
            self.discard_chunk(chunk.id, &chunk.replicas);
            self.corrupt.remove(&chunk.id);
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
        self.drop_tree(id);
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
        link.target = target.to_string();
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
        if exact == Exact::NoReplace && dst != *src && self.lookup(&dst).is_ok() {
            return Err(FsError::AlreadyExists { path: dst.to_string() });
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
            self.drop_tree(old);
        }
        self.link(dst_dir, dst_name, id, mtime_ms);
        let moved = self.inodes.get_mut(&id).expect("moved inode exists");
        moved.parent = dst_dir;
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
        assert_eq!((l.kind, l.target.as_str(), l.size, l.mode, l.uid), (Kind::Symlink, "../some/where", 13, 0o777, 5));
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
}
