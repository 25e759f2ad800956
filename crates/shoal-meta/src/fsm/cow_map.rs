//! A map from `u64` to values that shares its values with its copies, so
//! that a copy costs almost nothing.
//!
//! A snapshot build and the whole-state passes (metrics, fsck, repair
//! rounds) copy the state under its lock, and applies wait for that lock.
//! The big maps of the state are keyed by numbers handed out by a counter
//! (inodes, chunks), so they are kept here in pages of [`PAGE`] consecutive
//! keys, each page an `Arc` of slots and each slot an `Arc` of a value. The
//! pages are found through groups of [`GROUP`] consecutive page numbers:
//! a B-tree of group number to an `Arc` of the group's pages (a sorted
//! vector of page number and page). A copy clones the group index (an `Arc`
//! count per 1,024 keys); a change copies its group (at most 64 pointers),
//! its page's slots (not the values in them) and its value, and only while
//! a copy still shares them (`Arc::make_mut`). So the first change to a
//! page after a copy was taken pays for that page and its group once, and
//! the copy stays as it was. With one level only (a B-tree of pages), a
//! copy at ten million inodes cloned 625,000 page pointers: 55 to 100 ms
//! while applies waited for the state's lock.
//!
//! Keys from a counter fill pages; a key left alone in its page (the others
//! removed) costs a page of its own, about 150 bytes, and one alone in its
//! group about 100 more. Pages are that small (16 keys, not 64) because
//! garbage records are sparse, and inode numbers become so as files come
//! and go. The indexes are B-trees and sorted vectors, so sparse keys (or a
//! hostile snapshot) never make a huge array. An empty page, and an empty
//! group, is dropped.
//!
//! It encodes exactly as a `BTreeMap<u64, V>` (a map, in key order), and a
//! decoded map that repeats a key keeps the last value, as the B-tree did.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Consecutive keys per page.
pub const PAGE: u64 = 16;

/// The values of keys `PAGE * n` to `PAGE * n + PAGE - 1`, for a page `n`.
#[derive(Clone)]
struct Page<V> {
    slots: [Option<Arc<V>>; PAGE as usize],
    /// Slots in use (never 0 in a map: an empty page is dropped).
    used: u8,
}

impl<V> Page<V> {
    fn empty() -> Self {
        Page { slots: std::array::from_fn(|_| None), used: 0 }
    }
}

/// Pages per group: the page index is grouped in runs of this many page
/// numbers, so that a copy of the map clones one `Arc` per group.
pub const GROUP: u64 = 64;

/// The pages of page numbers `GROUP * g` to `GROUP * g + GROUP - 1` that
/// hold a key, in page order, for a group `g`. Never empty in a map.
#[derive(Clone)]
struct Group<V> {
    pages: Vec<(u64, Arc<Page<V>>)>,
}

impl<V> Group<V> {
    /// Where page `number` is (Ok) or would go (Err).
    fn find(&self, number: u64) -> Result<usize, usize> {
        self.pages.binary_search_by_key(&number, |(n, _)| *n)
    }

    fn page(&self, number: u64) -> Option<&Page<V>> {
        self.find(number).ok().map(|at| &*self.pages[at].1)
    }
}

/// Page number and slot of `key`.
fn place(key: u64) -> (u64, usize) {
    (key / PAGE, (key % PAGE) as usize)
}

pub struct CowMap<V> {
    groups: BTreeMap<u64, Arc<Group<V>>>,
    len: usize,
}

impl<V> Default for CowMap<V> {
    fn default() -> Self {
        CowMap { groups: BTreeMap::new(), len: 0 }
    }
}

/// A copy: the group index only; groups, pages and values are shared.
impl<V> Clone for CowMap<V> {
    fn clone(&self) -> Self {
        CowMap { groups: self.groups.clone(), len: self.len }
    }
}

impl<V: Clone> CowMap<V> {
    pub fn get(&self, key: &u64) -> Option<&V> {
        let (page, slot) = place(*key);
        self.groups.get(&(page / GROUP))?.page(page)?.slots[slot].as_deref()
    }

    pub fn contains_key(&self, key: &u64) -> bool {
        self.get(key).is_some()
    }

    /// The page `number`, to change in place: its group and its slots are
    /// copied first if a copy of the map still shares them. None if no key
    /// of the page is in the map.
    fn page_mut(&mut self, number: u64) -> Option<&mut Page<V>> {
        let group = Arc::make_mut(self.groups.get_mut(&(number / GROUP))?);
        let at = group.find(number).ok()?;
        Some(Arc::make_mut(&mut group.pages[at].1))
    }

    /// The value at `key`, to change in place. Copies its group, its page's
    /// slots and the value first if a copy of the map still shares them.
    pub fn get_mut(&mut self, key: &u64) -> Option<&mut V> {
        if !self.contains_key(key) {
            return None;
        }
        let (page, slot) = place(*key);
        self.page_mut(page)?.slots[slot].as_mut().map(Arc::make_mut)
    }

    /// The value at `key`, made the default first if there is none (as
    /// `entry(key).or_default()`).
    pub fn get_or_insert_default(&mut self, key: u64) -> &mut V
    where
        V: Default,
    {
        if !self.contains_key(&key) {
            self.insert(key, V::default());
        }
        self.get_mut(&key).expect("just inserted")
    }

    /// Puts `value` at `key`; returns the value that was there.
    pub fn insert(&mut self, key: u64, value: V) -> Option<V> {
        let (number, slot) = place(key);
        let group =
            self.groups.entry(number / GROUP).or_insert_with(|| Arc::new(Group { pages: Vec::with_capacity(1) }));
        let group = Arc::make_mut(group);
        let at = group.find(number).unwrap_or_else(|at| {
            group.pages.insert(at, (number, Arc::new(Page::empty())));
            at
        });
        let page = Arc::make_mut(&mut group.pages[at].1);
        let old = page.slots[slot].replace(Arc::new(value)).map(Arc::unwrap_or_clone);
        if old.is_none() {
            page.used += 1;
            self.len += 1;
        }
        old
    }

    pub fn remove(&mut self, key: &u64) -> Option<V> {
        if !self.contains_key(key) {
            return None;
        }
        let (number, slot) = place(*key);
        let page = self.page_mut(number)?;
        let old = page.slots[slot].take().map(Arc::unwrap_or_clone);
        page.used -= 1;
        if page.used == 0 {
            let g = number / GROUP;
            let group = Arc::make_mut(self.groups.get_mut(&g)?);
            if let Ok(at) = group.find(number) {
                group.pages.remove(at);
            }
            if group.pages.is_empty() {
                self.groups.remove(&g);
            }
        }
        self.len -= 1;
        old
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every page with its number, in order, from group `first` on.
    fn pages_from(&self, first: u64) -> impl Iterator<Item = (u64, &Page<V>)> + Clone + '_ {
        self.groups.range(first..).flat_map(|(_, group)| group.pages.iter().map(|(number, page)| (*number, &**page)))
    }

    /// Every value with its key, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &V)> + Clone + '_ {
        self.iter_from(0)
    }

    /// Every value with a key of `from` or more, with its key, in key order
    /// (starting at `from`'s group: no walk over the keys before it).
    pub fn iter_from(&self, from: u64) -> impl Iterator<Item = (u64, &V)> + Clone + '_ {
        self.pages_from(from / PAGE / GROUP)
            .flat_map(|(number, page)| {
                page.slots
                    .iter()
                    .enumerate()
                    .filter_map(move |(slot, value)| value.as_deref().map(|value| (number * PAGE + slot as u64, value)))
            })
            .skip_while(move |(key, _)| *key < from)
    }

    pub fn keys(&self) -> impl Iterator<Item = u64> + Clone + '_ {
        self.iter().map(|(key, _)| key)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> + Clone + '_ {
        self.iter().map(|(_, value)| value)
    }

    /// Pages whose slot counts disagree with their slots, or that sit out
    /// of order or in the wrong group (a group with no page is named by its
    /// first page number), and whether the map's length disagrees with its
    /// pages, for the invariant checks.
    pub fn miscounted_pages(&self) -> (Vec<u64>, bool) {
        let mut wrong = Vec::new();
        for (g, group) in &self.groups {
            if group.pages.is_empty() {
                wrong.push(g * GROUP);
            }
            let mut previous = None;
            for (number, page) in &group.pages {
                let misplaced = number / GROUP != *g || previous.is_some_and(|p| p >= *number);
                if misplaced || page.used == 0 || page.slots.iter().flatten().count() != page.used as usize {
                    wrong.push(*number);
                }
                previous = Some(*number);
            }
        }
        (wrong, self.iter().count() != self.len)
    }

    /// Whether the value at `key` is the very one `other` holds there (shared,
    /// not copied).
    #[cfg(test)]
    pub fn shares(&self, other: &Self, key: u64) -> bool {
        matches!((self.get(&key), other.get(&key)), (Some(a), Some(b)) if std::ptr::eq(a, b))
    }

    #[cfg(test)]
    pub fn page_count(&self) -> usize {
        self.pages_from(0).count()
    }

    #[cfg(test)]
    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The groups `other` holds as the very same `Arc`s (not copies).
    #[cfg(test)]
    pub fn shared_groups(&self, other: &Self) -> usize {
        self.groups.iter().filter(|(g, group)| other.groups.get(g).is_some_and(|o| Arc::ptr_eq(o, group))).count()
    }
}

impl<V: Clone + PartialEq> PartialEq for CowMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<V: Clone + Eq> Eq for CowMap<V> {}

impl<V: Clone + fmt::Debug> fmt::Debug for CowMap<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: Clone> FromIterator<(u64, V)> for CowMap<V> {
    fn from_iter<I: IntoIterator<Item = (u64, V)>>(iter: I) -> Self {
        let mut map = CowMap::default();
        for (key, value) in iter {
            map.insert(key, value);
        }
        map
    }
}

impl<V: Clone + Serialize> Serialize for CowMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len))?;
        for (key, value) in self.iter() {
            map.serialize_entry(&key, value)?;
        }
        map.end()
    }
}

impl<'de, V: Clone + Deserialize<'de>> Deserialize<'de> for CowMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Clone + Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = CowMap<V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of numbers to values")
            }

            /// Each value goes to its page as it is read (a repeated key
            /// keeps the last, as a map would).
            fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<CowMap<V>, A::Error> {
                let mut map = CowMap::default();
                while let Some((key, value)) = entries.next_entry::<u64, V>()? {
                    map.insert(key, value);
                }
                Ok(map)
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

impl<V: Clone> std::ops::Index<u64> for CowMap<V> {
    type Output = V;

    fn index(&self, key: u64) -> &V {
        self.get(&key).unwrap_or_else(|| panic!("no entry {key} in the map"))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A copy shares every value until one side changes it; then each side
    /// sees only its own changes, and what neither changed stays shared.
    /// Both encode as the B-tree they replace.
    #[test]
    fn a_copy_shares_values_until_either_side_changes_them() {
        let keys: Vec<u64> = (0..2 * PAGE).chain([u64::MAX - 1]).collect();
        let mut a: CowMap<BTreeSet<u64>> = keys.iter().map(|k| (*k, BTreeSet::from([*k]))).collect();
        let b = a.clone();
        assert!(keys.iter().all(|k| a.shares(&b, *k)), "a copy shares every value");
        a.get_mut(&3).unwrap().insert(30);
        a.insert(PAGE + 1, BTreeSet::from([65]));
        a.remove(&(u64::MAX - 1));
        a.get_or_insert_default(5 * PAGE).insert(320);
        a.get_or_insert_default(4).insert(40);
        assert_eq!((a[3].len(), b[3].len()), (2, 1));
        assert_eq!(
            (a.get(&(PAGE + 1)), b.get(&(PAGE + 1))),
            (Some(&BTreeSet::from([65])), Some(&BTreeSet::from([PAGE + 1])))
        );
        assert!(!a.contains_key(&(u64::MAX - 1)) && b.contains_key(&(u64::MAX - 1)));
        assert!(a.contains_key(&(5 * PAGE)) && !b.contains_key(&(5 * PAGE)));
        assert!(a.shares(&b, 2) && a.shares(&b, PAGE + 2), "unchanged values stay shared, even on copied pages");
        assert!(!a.shares(&b, 3) && !a.shares(&b, 4));
        assert_eq!((a.len(), b.len()), (keys.len(), keys.len()));
        for m in [&a, &b] {
            assert_eq!(m.miscounted_pages(), (vec![], false));
            let plain: BTreeMap<u64, BTreeSet<u64>> = m.iter().map(|(k, v)| (k, v.clone())).collect();
            assert!(m.keys().eq(plain.keys().copied()));
            assert_eq!(postcard::to_allocvec(m).unwrap(), postcard::to_allocvec(&plain).unwrap());
            assert_eq!(serde_json::to_string(m).unwrap(), serde_json::to_string(&plain).unwrap());
            let back: CowMap<BTreeSet<u64>> = postcard::from_bytes(&postcard::to_allocvec(m).unwrap()).unwrap();
            assert_eq!(&back, m);
            let back: CowMap<BTreeSet<u64>> = serde_json::from_str(&serde_json::to_string(m).unwrap()).unwrap();
            assert_eq!(&back, m);
        }
        // A page emptied is dropped; the other side keeps its own.
        for k in 0..PAGE {
            a.remove(&k);
        }
        assert!(a.get(&0).is_none() && b.get(&0).is_some());
        assert_eq!(a.page_count(), 2, "pages 1 and 5 are left");
        assert_eq!(a.miscounted_pages(), (vec![], false));
        assert_eq!(a.remove(&0), None);
        assert_eq!(a.len(), keys.len() - PAGE as usize);
    }

    /// `iter_from` is `iter` without the keys before its start, wherever
    /// that start falls: in a key, a gap, a page, a group, or past the end.
    #[test]
    fn iter_from_starts_at_the_first_key_not_before_it() {
        let keys: Vec<u64> =
            [0, 3, PAGE, PAGE + 5, GROUP * PAGE - 1, GROUP * PAGE, 3 * GROUP * PAGE + 2, u64::MAX - 1, u64::MAX].into();
        let m: CowMap<u64> = keys.iter().map(|k| (*k, !*k)).collect();
        let starts =
            keys.iter().flat_map(|k| [k.saturating_sub(1), *k, k.saturating_add(1)]).chain([7, 2 * GROUP * PAGE]);
        for from in starts {
            let want: Vec<(u64, u64)> = m.iter().filter(|(k, _)| *k >= from).map(|(k, v)| (k, *v)).collect();
            let got: Vec<(u64, u64)> = m.iter_from(from).map(|(k, v)| (k, *v)).collect();
            assert_eq!(got, want, "from {from}");
        }
        assert_eq!(m.iter_from(0).count(), keys.len());
    }

    /// Random inserts, changes and removes over keys spanning a few groups
    /// (so pages and groups fill, empty and come back), checked against a
    /// B-tree at every step, with copies taken along the way that must stay
    /// as they were.
    #[test]
    fn random_changes_agree_with_a_btree_and_leave_copies_alone() {
        let mut m: CowMap<u64> = CowMap::default();
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut copies = Vec::new();
        let span = 3 * GROUP * PAGE + 7;
        // A fixed-seed xorshift. The first half mostly inserts, the second
        // mostly removes, so pages also empty in the middle of their groups.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..30_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % span;
            let removes = if step < 15_000 { 2 } else { 4 };
            match x % 6 {
                r if r < removes => assert_eq!(m.remove(&key), model.remove(&key), "step {step}"),
                5 => assert_eq!(
                    m.get_mut(&key).map(|v| std::mem::replace(v, step)),
                    model.get_mut(&key).map(|v| std::mem::replace(v, step))
                ),
                _ => assert_eq!(m.insert(key, step), model.insert(key, step), "step {step}"),
            }
            if step.is_multiple_of(997) {
                copies.push((m.clone(), model.clone()));
            }
            assert_eq!(m.miscounted_pages(), (vec![], false), "step {step}");
            assert_eq!(m.len(), model.len());
        }
        assert!(m.iter().map(|(k, v)| (k, *v)).eq(model.clone()));
        for (copy, then) in copies {
            assert_eq!(copy.miscounted_pages(), (vec![], false));
            assert!(copy.iter().map(|(k, v)| (k, *v)).eq(then));
        }
        for key in 0..span {
            m.remove(&key);
        }
        assert_eq!((m.len(), m.page_count(), m.group_count()), (0, 0, 0), "empty pages and groups are dropped");
    }

    /// A change after a copy copies its own group only: values in other
    /// groups, and other values of its own page, stay shared.
    #[test]
    fn a_change_after_a_copy_leaves_other_groups_shared() {
        let keys = 0..4 * GROUP * PAGE;
        let mut a: CowMap<u64> = keys.clone().map(|k| (k, k)).collect();
        assert_eq!((a.group_count(), a.page_count()), (4, 4 * GROUP as usize));
        let b = a.clone();
        *a.get_mut(&(GROUP * PAGE + 3)).unwrap() = 0;
        a.insert(u64::MAX, 1);
        assert!(keys.clone().filter(|k| *k != GROUP * PAGE + 3).all(|k| a.shares(&b, k)));
        assert_eq!((a[GROUP * PAGE + 3], b[GROUP * PAGE + 3]), (0, GROUP * PAGE + 3));
        assert_eq!((a.group_count(), b.group_count()), (5, 4));
        assert_eq!(a.shared_groups(&b), 3, "only the changed group was copied");
        assert_eq!(a.keys().last(), Some(u64::MAX));
        assert_eq!(a.miscounted_pages(), (vec![], false));
    }

    #[test]
    fn a_repeated_key_decodes_as_the_map_did() {
        let json = r#"{"7":[1],"3":[2],"7":[3]}"#;
        let ours: CowMap<BTreeSet<u64>> = serde_json::from_str(json).unwrap();
        let plain: BTreeMap<u64, BTreeSet<u64>> = serde_json::from_str(json).unwrap();
        assert!(ours.iter().map(|(k, v)| (k, v.clone())).eq(plain));
        assert_eq!(ours.len(), 2);
    }
}
