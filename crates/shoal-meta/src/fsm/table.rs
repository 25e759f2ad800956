//! The inode table: inode number to inode, copy-on-write.
//!
//! The inodes are a [`CowMap`]: a copy of the table (a snapshot build, a
//! whole-state pass) copies a page index and shares the inodes, where a
//! copy of a million boxed inodes took about 0.9 s while applies waited. A
//! change copies its page's slots and its inode, once, while a copy still
//! shares them; a directory's entries live in its inode, so the first change
//! to a directory after a copy was taken copies its entries.
//!
//! The table serializes exactly as the map it replaces (a map of inode
//! number to inode, in order), so snapshots, their digests and every record
//! on disk or on the wire are unchanged. The methods are the map's, with
//! inode numbers by value.
//!
//! It also counts each directory's subdirectories (`subdirs`, derived,
//! never encoded: counted again when a table is decoded), for a directory's
//! link count, which would otherwise look at every entry of the directory
//! at every stat of it. A directory has one name, so its subdirectories are
//! the directories whose `parent` it is: the count moves when the table
//! gains or loses a directory, or moves one ([`InodeTable::set_parent`], the
//! one way to change a directory's `parent`; a file's, whose names are not
//! counted, may change in place). The invariant checks count again.

use std::collections::HashMap;
use std::ops::Index;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::cow_map::CowMap;
use super::{Inode, Kind};

#[derive(Clone, Default)]
pub struct InodeTable {
    map: CowMap<Inode>,
    /// Directory to how many directories name it their parent (none: 0).
    subdirs: HashMap<u64, u32>,
}

impl PartialEq for InodeTable {
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl Eq for InodeTable {}

/// As the map of inodes (the subdirectory counts are derived).
impl std::fmt::Debug for InodeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.map.fmt(f)
    }
}

impl Serialize for InodeTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.map.serialize(s)
    }
}

impl<'de> Deserialize<'de> for InodeTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = CowMap::deserialize(d)?;
        let subdirs = count_subdirs(map.values());
        Ok(InodeTable { map, subdirs })
    }
}

/// The directory that counts `inode` among its subdirectories: its parent,
/// for a directory other than the root (its own parent); none otherwise.
fn subdir_of(inode: &Inode) -> Option<u64> {
    (inode.kind == Kind::Dir && inode.parent != inode.id).then_some(inode.parent)
}

/// Every directory's subdirectories, counted from the inodes (no entry for
/// none).
fn count_subdirs<'a>(inodes: impl Iterator<Item = &'a Inode>) -> HashMap<u64, u32> {
    let mut counts = HashMap::new();
    for dir in inodes.filter_map(subdir_of) {
        *counts.entry(dir).or_insert(0) += 1;
    }
    counts
}

impl InodeTable {
    /// An inode counted as a subdirectory of `before` is now one of `after`.
    fn recount(&mut self, before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        if let Some(dir) = before
            && let Some(n) = self.subdirs.get_mut(&dir)
        {
            *n -= 1;
            if *n == 0 {
                self.subdirs.remove(&dir);
            }
        }
        if let Some(dir) = after {
            *self.subdirs.entry(dir).or_insert(0) += 1;
        }
    }

    /// The directories whose parent is `dir`.
    pub fn subdirs(&self, dir: u64) -> u32 {
        self.subdirs.get(&dir).copied().unwrap_or(0)
    }

    pub fn get(&self, id: &u64) -> Option<&Inode> {
        self.map.get(id)
    }

    /// The inode at `id`, to change in place: anything but its kind and a
    /// directory's `parent` ([`InodeTable::set_parent`] moves it).
    pub fn get_mut(&mut self, id: &u64) -> Option<&mut Inode> {
        self.map.get_mut(id)
    }

    /// Makes `parent` the parent of inode `id` (if it exists).
    pub fn set_parent(&mut self, id: u64, parent: u64) {
        let Some(inode) = self.map.get_mut(&id) else { return };
        let before = subdir_of(inode);
        inode.parent = parent;
        let after = subdir_of(inode);
        self.recount(before, after);
    }

    /// Puts `inode` at `id`; returns the inode that was there.
    pub fn insert(&mut self, id: u64, inode: Inode) -> Option<Inode> {
        let after = subdir_of(&inode);
        let old = self.map.insert(id, inode);
        self.recount(old.as_ref().and_then(subdir_of), after);
        old
    }

    pub fn remove(&mut self, id: &u64) -> Option<Inode> {
        let old = self.map.remove(id);
        self.recount(old.as_ref().and_then(subdir_of), None);
        old
    }

    /// Every directory's subdirectories counted again from the inodes, for
    /// the invariant checks: (directory, kept count, count now) where the
    /// two differ.
    pub fn miscounted_subdirs(&self) -> Vec<(u64, u32, u32)> {
        let again = count_subdirs(self.values());
        let mut dirs: Vec<u64> = again.keys().chain(self.subdirs.keys()).copied().collect();
        dirs.sort_unstable();
        dirs.dedup();
        let counted = |d: u64| again.get(&d).copied().unwrap_or(0);
        dirs.into_iter().filter(|d| counted(*d) != self.subdirs(*d)).map(|d| (d, self.subdirs(d), counted(d))).collect()
    }

    /// See [`CowMap::miscounted_pages`].
    pub fn miscounted_pages(&self) -> (Vec<u64>, bool) {
        self.map.miscounted_pages()
    }

    pub fn contains_key(&self, id: &u64) -> bool {
        self.map.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every inode with its number, in number order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Inode)> + Clone + '_ {
        self.map.iter()
    }

    pub fn keys(&self) -> impl Iterator<Item = u64> + Clone + '_ {
        self.map.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &Inode> + Clone + '_ {
        self.map.values()
    }
}

impl Index<&u64> for InodeTable {
    type Output = Inode;

    fn index(&self, id: &u64) -> &Inode {
        self.get(id).unwrap_or_else(|| panic!("no inode {id} in the table"))
    }
}

impl FromIterator<(u64, Inode)> for InodeTable {
    fn from_iter<I: IntoIterator<Item = (u64, Inode)>>(iter: I) -> Self {
        let mut table = InodeTable::default();
        for (id, inode) in iter {
            table.insert(id, inode);
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::fsm::{FsState, ROOT_INODE};

    #[test]
    fn the_table_encodes_as_the_map_it_replaced() {
        let mut st = FsState::default();
        super::super::testing::create(&mut st, "/f");
        let map: BTreeMap<u64, Inode> = st.inodes.iter().map(|(id, i)| (id, i.clone())).collect();
        assert_eq!(postcard::to_allocvec(&st.inodes).unwrap(), postcard::to_allocvec(&map).unwrap());
        assert_eq!(serde_json::to_string(&st.inodes).unwrap(), serde_json::to_string(&map).unwrap());
        let bytes = postcard::to_allocvec(&map).unwrap();
        let back: InodeTable = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, st.inodes);
        assert_eq!(back[&ROOT_INODE].children.len(), 1);
    }

    /// Directories made, moved between parents, exchanged with files and
    /// with each other, renamed over an empty one and removed (one with a
    /// tree below): the kept subdirectory counts match a count from scratch
    /// after every step, and a decoded table counts them again.
    #[test]
    fn subdirectories_are_counted_through_every_change() {
        use crate::fsm::NamespaceCmd;
        use crate::fsm::testing::{create, p, run};
        let mut st = FsState::default();
        let nlink = |st: &FsState, path: &str| st.nlink(st.lookup(&p(path)).unwrap());
        let steps: Vec<(&str, crate::fsm::Command)> = vec![
            ("mkdir -p /a/b/c", NamespaceCmd::Mkdir { path: p("/a/b/c"), parents: true }.into()),
            ("mkdir /d", NamespaceCmd::Mkdir { path: p("/d"), parents: false }.into()),
            ("mkdir /d/e", NamespaceCmd::Mkdir { path: p("/d/e"), parents: false }.into()),
            ("mv /a/b /d/b", NamespaceCmd::RenameExact { src: p("/a/b"), dst: p("/d/b"), no_replace: false }.into()),
            ("exchange /d/e /f", NamespaceCmd::Exchange { a: p("/d/e"), b: p("/f") }.into()),
            ("exchange /d/b /a", NamespaceCmd::Exchange { a: p("/d/b"), b: p("/a") }.into()),
            ("mkdir /g", NamespaceCmd::Mkdir { path: p("/g"), parents: false }.into()),
            ("mv /f over empty /g", NamespaceCmd::RenameExact { src: p("/f"), dst: p("/g"), no_replace: false }.into()),
            ("rm -r /a", NamespaceCmd::Remove { path: p("/a"), recursive: true }.into()),
        ];
        create(&mut st, "/f");
        for (what, cmd) in steps {
            let r = run(&mut st, cmd);
            assert!(!matches!(r, crate::fsm::Response::Err(_)), "{what}: {r:?}");
            assert_eq!(st.inodes.miscounted_subdirs(), vec![], "after {what}");
        }
        // Now / holds d (with b, an empty directory, and e, a file) and g.
        let names = |st: &FsState, path: &str| {
            st.lookup(&p(path)).unwrap().children.keys().map(|k| k.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(names(&st, "/"), ["d", "g"]);
        assert_eq!(names(&st, "/d"), ["b", "e"]);
        assert_eq!((nlink(&st, "/"), nlink(&st, "/d"), nlink(&st, "/d/b"), nlink(&st, "/g")), (4, 3, 2, 2));
        let bytes = postcard::to_allocvec(&st.inodes).unwrap();
        let back: InodeTable = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.miscounted_subdirs(), vec![]);
        assert_eq!((back.subdirs(ROOT_INODE), back.subdirs(st.lookup(&p("/d")).unwrap().id)), (2, 1));
        // A parent changed in place, past the count, is caught.
        let mut broken = st.inodes.clone();
        let g = st.lookup(&p("/g")).unwrap().id;
        broken.get_mut(&g).unwrap().parent = st.lookup(&p("/d")).unwrap().id;
        assert_eq!(broken.miscounted_subdirs().len(), 2, "both parents miscounted");
    }

    #[test]
    fn the_table_answers_as_a_map() {
        let mut t = InodeTable::default();
        let root = FsState::default().inodes[&ROOT_INODE].clone();
        assert_eq!(t.insert(1, root.clone()), None);
        assert_eq!(t.insert(1, Inode { size: 5, ..root.clone() }), Some(root.clone()));
        assert!(t.contains_key(&1) && !t.contains_key(&2));
        t.get_mut(&1).unwrap().size = 7;
        assert_eq!(t[&1].size, 7);
        assert_eq!(t.values().map(|i| i.size).collect::<Vec<_>>(), vec![7]);
        assert_eq!(t.remove(&1).map(|i| i.size), Some(7));
        assert!(t.is_empty() && t.get(&1).is_none());
    }
}
