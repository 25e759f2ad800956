//! The inode table: inode number to inode, each inode in a box of its own.
//!
//! A `BTreeMap<u64, Inode>` keeps the inodes themselves (192 bytes) inside
//! its nodes, and nodes filled in id order, as creates fill them, end up
//! about half full: 370 heap bytes per file there. With each inode boxed the
//! nodes hold pointers and a file costs about 226 (`cargo bench -p shoal-meta
//! --bench state_memory`). Lookups go through one more pointer.
//!
//! The table serializes exactly as the map it replaces (a map of inode
//! number to inode; a box is encoded as what it holds), so snapshots, their
//! digests and every record on disk or on the wire are unchanged. The
//! methods are the map's, with `&Inode` where the map would give the box.

use std::collections::BTreeMap;
use std::ops::Index;

use serde::{Deserialize, Serialize};

use super::Inode;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InodeTable(BTreeMap<u64, Box<Inode>>);

impl InodeTable {
    pub fn get(&self, id: &u64) -> Option<&Inode> {
        self.0.get(id).map(|b| &**b)
    }

    pub fn get_mut(&mut self, id: &u64) -> Option<&mut Inode> {
        self.0.get_mut(id).map(|b| &mut **b)
    }

    /// Puts `inode` at `id`; returns the inode that was there.
    pub fn insert(&mut self, id: u64, inode: Inode) -> Option<Inode> {
        self.0.insert(id, Box::new(inode)).map(|b| *b)
    }

    pub fn remove(&mut self, id: &u64) -> Option<Inode> {
        self.0.remove(id).map(|b| *b)
    }

    pub fn contains_key(&self, id: &u64) -> bool {
        self.0.contains_key(id)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &u64> + ExactSizeIterator + Clone + '_ {
        self.0.keys()
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &Inode> + ExactSizeIterator + Clone + '_ {
        self.0.values().map(|b| &**b)
    }

    pub fn values_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut Inode> + ExactSizeIterator + '_ {
        self.0.values_mut().map(|b| &mut **b)
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &Inode)> + ExactSizeIterator + Clone + '_ {
        self.0.iter().map(|(id, b)| (id, &**b))
    }
}

impl Index<&u64> for InodeTable {
    type Output = Inode;

    fn index(&self, id: &u64) -> &Inode {
        &self.0[id]
    }
}

impl<'a> IntoIterator for &'a InodeTable {
    type Item = (&'a u64, &'a Inode);
    type IntoIter = std::iter::Map<
        std::collections::btree_map::Iter<'a, u64, Box<Inode>>,
        fn((&'a u64, &'a Box<Inode>)) -> (&'a u64, &'a Inode),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(id, b)| (id, &**b))
    }
}

impl FromIterator<(u64, Inode)> for InodeTable {
    fn from_iter<I: IntoIterator<Item = (u64, Inode)>>(iter: I) -> Self {
        InodeTable(iter.into_iter().map(|(id, inode)| (id, Box::new(inode))).collect())
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
        let map: BTreeMap<u64, Inode> = st.inodes.iter().map(|(id, i)| (*id, i.clone())).collect();
        assert_eq!(postcard::to_allocvec(&st.inodes).unwrap(), postcard::to_allocvec(&map).unwrap());
        assert_eq!(serde_json::to_string(&st.inodes).unwrap(), serde_json::to_string(&map).unwrap());
        let bytes = postcard::to_allocvec(&map).unwrap();
        let back: InodeTable = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, st.inodes);
        assert_eq!(back[&ROOT_INODE].children.len(), 1);
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
