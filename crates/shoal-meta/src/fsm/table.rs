//! The inode table: inode number to inode, shared page by page with its
//! copies, so that a copy costs almost nothing.
//!
//! A snapshot build copies the state under its lock, and applies wait for
//! that lock. With a map of a million inodes the copy took about 0.9 s (a
//! stall of every write), so the table is copy-on-write instead: inode
//! numbers are grouped in pages of [`PAGE`] consecutive numbers, each page
//! an `Arc` holding an `Arc` per inode. A clone copies the page index (one
//! entry per page, an `Arc` count each); a change to an inode copies its
//! page's slots (not the inodes in it) and the inode itself, and only when
//! a copy still shares them (`Arc::make_mut`). So the first change to each
//! page after a snapshot build began pays for that page, once, and the
//! build's copy stays as it was. A directory's entries live in its inode, so
//! the first change to a directory after a build copies its entries.
//!
//! Inode numbers come from one counter, so pages fill; the index is a
//! B-tree, so a sparse numbering (or a hostile snapshot) costs a page per
//! inode at worst, never a huge array. An empty page is dropped.
//!
//! The table serializes exactly as the map it replaces (a map of inode
//! number to inode, in order), so snapshots, their digests and every record
//! on disk or on the wire are unchanged. The methods are the map's, with
//! `&Inode` where the map would give the box, and inode numbers by value.
//!
//! It also counts each directory's subdirectories (`subdirs`, derived,
//! never encoded: counted again when a table is decoded), for a directory's
//! link count, which would otherwise look at every entry of the directory
//! at every stat of it. A directory has one name, so its subdirectories are
//! the directories whose `parent` it is: the count moves when the table
//! gains or loses a directory, or moves one ([`InodeTable::set_parent`], the
//! one way to change a directory's `parent`; a file's, whose names are not
//! counted, may change in place). The invariant checks count again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Index;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Inode, Kind};

/// Consecutive inode numbers per page.
pub const PAGE: u64 = 64;

/// The inodes numbered `PAGE * n` to `PAGE * n + PAGE - 1`, for a page `n`.
#[derive(Clone)]
struct Page {
    slots: [Option<Arc<Inode>>; PAGE as usize],
    /// Slots in use (never 0 in a table: an empty page is dropped).
    used: u8,
}

impl Page {
    fn empty() -> Self {
        Page { slots: std::array::from_fn(|_| None), used: 0 }
    }
}

/// Page number and slot of inode `id`.
fn place(id: u64) -> (u64, usize) {
    (id / PAGE, (id % PAGE) as usize)
}

#[derive(Clone, Default)]
pub struct InodeTable {
    pages: BTreeMap<u64, Arc<Page>>,
    len: usize,
    /// Directory to how many directories name it their parent (none: 0).
    subdirs: HashMap<u64, u32>,
}

impl PartialEq for InodeTable {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for InodeTable {}

impl fmt::Debug for InodeTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for InodeTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len))?;
        for (id, inode) in self.iter() {
            map.serialize_entry(&id, inode)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for InodeTable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TableVisitor;
        impl<'de> Visitor<'de> for TableVisitor {
            type Value = InodeTable;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of inode number to inode")
            }

            /// Each inode goes to its page as it is read (a repeated number
            /// keeps the last, as a map would).
            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<InodeTable, A::Error> {
                let mut table = InodeTable::default();
                while let Some((id, inode)) = entries.next_entry::<u64, Inode>()? {
                    table.put(id, inode);
                }
                table.subdirs = count_subdirs(table.values());
                Ok(table)
            }
        }
        d.deserialize_map(TableVisitor)
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
        let (page, slot) = place(*id);
        self.pages.get(&page)?.slots[slot].as_deref()
    }

    /// The inode at `id`, to change in place: anything but its kind and a
    /// directory's `parent` ([`InodeTable::set_parent`] moves it). Copies
    /// its page's slots and the inode first if a copy of the table still
    /// shares them.
    pub fn get_mut(&mut self, id: &u64) -> Option<&mut Inode> {
        if !self.contains_key(id) {
            return None;
        }
        let (page, slot) = place(*id);
        let page = Arc::make_mut(self.pages.get_mut(&page)?);
        page.slots[slot].as_mut().map(Arc::make_mut)
    }

    /// Makes `parent` the parent of inode `id` (if it exists).
    pub fn set_parent(&mut self, id: u64, parent: u64) {
        let Some(inode) = self.get_mut(&id) else { return };
        let before = subdir_of(inode);
        inode.parent = parent;
        let after = subdir_of(inode);
        self.recount(before, after);
    }

    /// Puts `inode` at `id` without counting subdirectories; returns the
    /// inode that was there.
    fn put(&mut self, id: u64, inode: Inode) -> Option<Inode> {
        let (page, slot) = place(id);
        let page = Arc::make_mut(self.pages.entry(page).or_insert_with(|| Arc::new(Page::empty())));
        let old = page.slots[slot].replace(Arc::new(inode)).map(Arc::unwrap_or_clone);
        if old.is_none() {
            page.used += 1;
            self.len += 1;
        }
        old
    }

    /// Puts `inode` at `id`; returns the inode that was there.
    pub fn insert(&mut self, id: u64, inode: Inode) -> Option<Inode> {
        let after = subdir_of(&inode);
        let old = self.put(id, inode);
        self.recount(old.as_ref().and_then(subdir_of), after);
        old
    }

    pub fn remove(&mut self, id: &u64) -> Option<Inode> {
        if !self.contains_key(id) {
            return None;
        }
        let (number, slot) = place(*id);
        let page = Arc::make_mut(self.pages.get_mut(&number)?);
        let old = page.slots[slot].take().map(Arc::unwrap_or_clone);
        page.used -= 1;
        if page.used == 0 {
            self.pages.remove(&number);
        }
        self.len -= 1;
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

    /// Pages whose slot counts disagree with their slots, and whether the
    /// table's length disagrees with its pages, for the invariant checks.
    pub fn miscounted_pages(&self) -> (Vec<u64>, bool) {
        let wrong = self
            .pages
            .iter()
            .filter(|(_, p)| p.used == 0 || p.slots.iter().flatten().count() != p.used as usize)
            .map(|(n, _)| *n)
            .collect();
        (wrong, self.iter().count() != self.len)
    }

    pub fn contains_key(&self, id: &u64) -> bool {
        self.get(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every inode with its number, in number order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Inode)> + Clone + '_ {
        self.pages.iter().flat_map(|(number, page)| {
            page.slots
                .iter()
                .enumerate()
                .filter_map(move |(slot, inode)| inode.as_deref().map(|inode| (number * PAGE + slot as u64, inode)))
        })
    }

    pub fn keys(&self) -> impl Iterator<Item = u64> + Clone + '_ {
        self.iter().map(|(id, _)| id)
    }

    pub fn values(&self) -> impl Iterator<Item = &Inode> + Clone + '_ {
        self.iter().map(|(_, inode)| inode)
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

    /// A copy shares every inode until one side changes it; then each side
    /// sees only its own changes, and what neither changed stays shared.
    #[test]
    fn a_copy_shares_inodes_until_either_side_changes_them() {
        let root = FsState::default().inodes[&ROOT_INODE].clone();
        let inode = |id: u64, size: u64| Inode { id, size, ..root.clone() };
        // Two full pages and a sparse number far away.
        let ids: Vec<u64> = (0..2 * PAGE).chain([u64::MAX - 1]).collect();
        let mut a: InodeTable = ids.iter().map(|id| (*id, inode(*id, 1))).collect();
        let b = a.clone();
        let same = |x: &InodeTable, y: &InodeTable, id: u64| std::ptr::eq(x.get(&id).unwrap(), y.get(&id).unwrap());
        assert!(ids.iter().all(|id| same(&a, &b, *id)), "a copy shares every inode");
        a.get_mut(&3).unwrap().size = 30;
        a.insert(PAGE + 1, inode(PAGE + 1, 65));
        a.remove(&(u64::MAX - 1));
        a.insert(5 * PAGE, inode(5 * PAGE, 320));
        assert_eq!((a[&3].size, b[&3].size), (30, 1));
        assert_eq!((a[&(PAGE + 1)].size, b[&(PAGE + 1)].size), (65, 1));
        assert!(!a.contains_key(&(u64::MAX - 1)) && b.contains_key(&(u64::MAX - 1)));
        assert!(a.contains_key(&(5 * PAGE)) && !b.contains_key(&(5 * PAGE)));
        assert!(same(&a, &b, 4) && same(&a, &b, PAGE + 2), "unchanged inodes stay shared, even on copied pages");
        assert!(!same(&a, &b, 3));
        assert_eq!((a.len(), b.len()), (ids.len(), ids.len()));
        assert_eq!(a.miscounted_pages(), (vec![], false));
        assert_eq!(b.miscounted_pages(), (vec![], false));
        // Order and encoding are the map's, on both sides.
        for t in [&a, &b] {
            let map: BTreeMap<u64, Inode> = t.iter().map(|(id, i)| (id, i.clone())).collect();
            assert!(t.keys().eq(map.keys().copied()));
            assert_eq!(postcard::to_allocvec(t).unwrap(), postcard::to_allocvec(&map).unwrap());
            let back: InodeTable = postcard::from_bytes(&postcard::to_allocvec(t).unwrap()).unwrap();
            assert_eq!(&back, t);
        }
        // A page emptied is dropped.
        for id in 0..PAGE {
            a.remove(&id);
        }
        assert!(a.get(&0).is_none() && b.get(&0).is_some());
        assert_eq!(a.pages.len(), 2, "pages 1 and 5 are left");
        assert_eq!(a.miscounted_pages(), (vec![], false));
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
