//! A file's chunks: chunk index to chunk, kept as a sorted vector.
//!
//! Most files have one chunk or a few. A `BTreeMap<u64, ChunkMeta>` gives
//! even one chunk a whole B-tree leaf (room for eleven), about 900 heap
//! bytes (`cargo bench -p shoal-meta --bench state_memory`); here a file
//! with one chunk holds one entry's worth. The vector grows by a quarter
//! at a time (at least one entry), so a file of many chunks still appends
//! in amortized constant time and wastes at most a quarter.
//!
//! It encodes exactly as the map it replaces (a map of index to chunk, in
//! index order), so no record on disk or on the wire changes. A decoded map
//! that is out of order or repeats an index is put in order, the last of a
//! repeated index kept, as the map did.

use std::fmt;
use std::ops::Index;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ChunkMeta;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct ChunkMap(Vec<(u64, ChunkMeta)>);

impl ChunkMap {
    fn position(&self, index: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&index, |(i, _)| *i)
    }

    pub fn get(&self, index: &u64) -> Option<&ChunkMeta> {
        self.position(*index).ok().map(|at| &self.0[at].1)
    }

    pub fn get_mut(&mut self, index: &u64) -> Option<&mut ChunkMeta> {
        self.position(*index).ok().map(|at| &mut self.0[at].1)
    }

    /// Puts `chunk` at `index`; returns the chunk that was there.
    pub fn insert(&mut self, index: u64, chunk: ChunkMeta) -> Option<ChunkMeta> {
        match self.position(index) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, chunk)),
            Err(at) => {
                if self.0.len() == self.0.capacity() {
                    self.0.reserve_exact((self.0.len() / 4).max(1));
                }
                self.0.insert(at, (index, chunk));
                None
            }
        }
    }

    /// Splits off the chunks at `index` and above, as `BTreeMap::split_off`.
    pub fn split_off(&mut self, index: &u64) -> ChunkMap {
        let at = self.position(*index).unwrap_or_else(|at| at);
        let tail = ChunkMap(self.0.split_off(at));
        self.0.shrink_to_fit();
        tail
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every chunk with its index, in index order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&u64, &ChunkMeta)> + ExactSizeIterator + Clone + '_ {
        self.0.iter().map(|(i, c)| (i, c))
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &ChunkMeta> + ExactSizeIterator + Clone + '_ {
        self.0.iter().map(|(_, c)| c)
    }

    pub fn into_values(self) -> impl DoubleEndedIterator<Item = ChunkMeta> + ExactSizeIterator {
        self.0.into_iter().map(|(_, c)| c)
    }
}

impl Index<&u64> for ChunkMap {
    type Output = ChunkMeta;

    fn index(&self, index: &u64) -> &ChunkMeta {
        self.get(index).unwrap_or_else(|| panic!("no chunk at index {index}"))
    }
}

impl<'a> IntoIterator for &'a ChunkMap {
    type Item = (&'a u64, &'a ChunkMeta);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (u64, ChunkMeta)>, fn(&'a (u64, ChunkMeta)) -> Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(i, c)| (i, c))
    }
}

impl FromIterator<(u64, ChunkMeta)> for ChunkMap {
    fn from_iter<I: IntoIterator<Item = (u64, ChunkMeta)>>(iter: I) -> Self {
        ChunkMap::from_entries(iter.into_iter().collect())
    }
}

impl ChunkMap {
    /// The map of `entries`, in index order, the last of a repeated index kept.
    fn from_entries(mut entries: Vec<(u64, ChunkMeta)>) -> Self {
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable, so a repeated index keeps its entries in order.
            entries.sort_by_key(|(i, _)| *i);
            let mut kept: Vec<(u64, ChunkMeta)> = Vec::with_capacity(entries.len());
            for e in entries {
                match kept.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => kept.push(e),
                }
            }
            entries = kept;
        }
        entries.shrink_to_fit();
        ChunkMap(entries)
    }
}

impl fmt::Debug for ChunkMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for ChunkMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (index, chunk) in &self.0 {
            map.serialize_entry(index, chunk)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ChunkMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = ChunkMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of chunk index to chunk")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChunkMap, A::Error> {
                // The hint is the sender's word: cap what it reserves.
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1024));
                while let Some(entry) = map.next_entry::<u64, ChunkMeta>()? {
                    entries.push(entry);
                }
                Ok(ChunkMap::from_entries(entries))
            }
        }
        d.deserialize_map(MapVisitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn chunk(id: u64) -> ChunkMeta {
        ChunkMeta { id, version: 1, committed_version: 1, replicas: vec![1, 2], lagging: vec![] }
    }

    /// Inserts, replacements and splits answer as a `BTreeMap` does, and
    /// both encode to the same bytes throughout.
    #[test]
    fn the_chunk_map_answers_and_encodes_as_a_btree_map() {
        let mut ours = ChunkMap::default();
        let mut map = BTreeMap::new();
        for (n, index) in [5u64, 1, 9, 1, 0, 7, 12, 3, 5, 100].into_iter().enumerate() {
            assert_eq!(ours.insert(index, chunk(n as u64)), map.insert(index, chunk(n as u64)), "insert {index}");
            assert!(ours.iter().map(|(i, c)| (*i, c.clone())).eq(map.clone()));
            assert_eq!(postcard::to_allocvec(&ours).unwrap(), postcard::to_allocvec(&map).unwrap());
            assert_eq!(serde_json::to_string(&ours).unwrap(), serde_json::to_string(&map).unwrap());
        }
        assert_eq!(ours.get(&9), map.get(&9));
        assert_eq!(ours.get(&2), None);
        ours.get_mut(&7).unwrap().version = 4;
        map.get_mut(&7).unwrap().version = 4;
        assert_eq!(ours[&7].version, 4);
        for cut in [8u64, 7, 200, 0] {
            let (mut a, mut b) = (ours.clone(), map.clone());
            let (ta, tb) = (a.split_off(&cut), b.split_off(&cut));
            assert!(a.iter().map(|(i, c)| (*i, c.clone())).eq(b), "kept below {cut}");
            assert!(ta.into_values().eq(tb.into_values()), "split off at {cut}");
        }
        let back: ChunkMap = postcard::from_bytes(&postcard::to_allocvec(&map).unwrap()).unwrap();
        assert_eq!(back, ours);
        assert_eq!(back.0.capacity(), back.len(), "a decoded map holds no spare room");
    }

    #[test]
    fn a_map_out_of_order_or_with_a_repeat_decodes_as_the_map_did() {
        let json = r#"{"3":{"id":1,"version":1,"committed_version":1,"replicas":[1],"lagging":[]},
                       "1":{"id":2,"version":1,"committed_version":1,"replicas":[1],"lagging":[]},
                       "3":{"id":3,"version":1,"committed_version":1,"replicas":[1],"lagging":[]}}"#;
        let ours: ChunkMap = serde_json::from_str(json).unwrap();
        let map: BTreeMap<u64, ChunkMeta> = serde_json::from_str(json).unwrap();
        assert!(ours.iter().map(|(i, c)| (*i, c.clone())).eq(map));
        assert_eq!(ours[&3].id, 3, "the last of a repeated index is kept");
    }

    #[test]
    fn one_chunk_takes_one_entry_and_growth_is_amortized() {
        let mut m = ChunkMap::default();
        m.insert(0, chunk(1));
        assert_eq!(m.0.capacity(), 1);
        let mut reallocations = 0;
        for i in 1..10_000u64 {
            let before = m.0.capacity();
            m.insert(i, chunk(i));
            reallocations += usize::from(m.0.capacity() != before);
            assert!(m.0.capacity() <= m.len() + m.len() / 4 + 1, "at most a quarter spare");
        }
        assert!(reallocations < 60, "{reallocations} reallocations for 10,000 appends");
    }
}
