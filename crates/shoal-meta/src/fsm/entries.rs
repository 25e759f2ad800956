//! A directory's entries, name to inode, in pages that its copies share.
//!
//! A snapshot build copies the state, and the first change to a directory
//! after that copies its inode (`fsm::cow_map`). With the entries in one
//! B-tree, that copied every name of the directory, under the state's lock:
//! a directory of a million files stalled every apply and read for tens of
//! milliseconds after each snapshot. Here the entries are sorted runs of at
//! most [`PAGE_MAX`] names, each run an `Arc`, indexed by its first name in
//! a B-tree. A copy clones the index (a count per page); a change copies
//! the one page it touches, once, while a copy shares it (`Arc::make_mut`).
//!
//! A page that grows past [`PAGE_MAX`] splits in two; an emptied page is
//! dropped; pages are not merged, so a directory that shrinks keeps at most
//! as many pages as it once needed. The runs take less memory than a B-tree
//! of the same names (no node links, and a page's names sit together).
//!
//! It encodes exactly as the `BTreeMap<Box<str>, u64>` it replaced (a map,
//! in name order), and a decoded map that repeats a name keeps the last, as
//! the B-tree did.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::rare::Emptiable;

/// The most entries in a page; a page holds at least one.
pub const PAGE_MAX: usize = 64;

/// How full a decoded page is made: room for a quarter more before a split.
const PAGE_FILLED: usize = PAGE_MAX * 3 / 4;

type Page = Vec<(Box<str>, u64)>;

#[derive(Clone, Default)]
pub struct Entries {
    /// First name of each page to the page, sorted, each non-empty.
    pages: BTreeMap<Arc<str>, Arc<Page>>,
    len: usize,
}

/// Makes room for one more entry in a page that is not full: a quarter more
/// at a time (not the doubling of `Vec`), so a page wastes little.
fn grow(page: &mut Page) {
    if page.len() == page.capacity() {
        page.reserve_exact((page.len() / 4).clamp(1, PAGE_MAX - page.len()));
    }
}

/// Where `name` sits in a page: its index, or where it would go.
fn find(page: &Page, name: &str) -> Result<usize, usize> {
    page.binary_search_by(|(n, _)| (**n).cmp(name))
}

impl Entries {
    /// The page that holds `name` if any does: the last whose first name is
    /// not after it.
    fn page_of(&self, name: &str) -> Option<(&Arc<str>, &Arc<Page>)> {
        self.pages.range::<str, _>((Bound::Unbounded, Bound::Included(name))).next_back()
    }

    pub fn get(&self, name: &str) -> Option<&u64> {
        let (_, page) = self.page_of(name)?;
        find(page, name).ok().map(|at| &page[at].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Names `name` `id`; returns the inode it named before.
    pub fn insert(&mut self, name: Box<str>, id: u64) -> Option<u64> {
        // Into the page it sorts in, or the first page if it sorts first.
        let key = match self.page_of(&name).or_else(|| self.pages.first_key_value()) {
            Some((key, _)) => key.clone(),
            None => {
                self.pages.insert(Arc::from(&*name), Arc::new(vec![(name, id)]));
                self.len = 1;
                return None;
            }
        };
        // In place while the page keeps its first name and has room.
        let edit = Arc::make_mut(self.pages.get_mut(&*key).expect("the page is indexed"));
        let at = match find(edit, &name) {
            Ok(at) => return Some(std::mem::replace(&mut edit[at].1, id)),
            Err(at) => at,
        };
        self.len += 1;
        if at > 0 && edit.len() < PAGE_MAX {
            grow(edit);
            edit.insert(at, (name, id));
            return None;
        }
        let (key, mut page) = self.pages.remove_entry(&*key).expect("the page is indexed");
        let edit = Arc::make_mut(&mut page);
        if edit.len() < PAGE_MAX {
            grow(edit);
            edit.insert(at, (name, id));
            self.index(key, page);
            return None;
        }
        // A full page splits in halves, and the name goes into its half.
        let mut tail = edit.split_off(PAGE_MAX / 2);
        edit.shrink_to(PAGE_MAX / 2 + PAGE_MAX / 8);
        match at.checked_sub(PAGE_MAX / 2) {
            Some(at) => {
                grow(&mut tail);
                tail.insert(at, (name, id));
            }
            None => edit.insert(at, (name, id)),
        }
        self.index(key, page);
        self.index(Arc::from(&*tail[0].0), Arc::new(tail));
        None
    }

    /// Puts `page` back in the index, under its first name (`key` if that
    /// is still it); an empty page is dropped.
    fn index(&mut self, key: Arc<str>, page: Arc<Page>) {
        let Some((first, _)) = page.first() else { return };
        let key = if *key == **first { key } else { Arc::from(&**first) };
        self.pages.insert(key, page);
    }

    pub fn remove(&mut self, name: &str) -> Option<u64> {
        // Found first, so a missing name copies no page.
        let (key, page) = self.page_of(name)?;
        let at = find(page, name).ok()?;
        let key = key.clone();
        let (key, mut page) = self.pages.remove_entry(&*key).expect("the page is indexed");
        let edit = Arc::make_mut(&mut page);
        let (_, id) = edit.remove(at);
        if edit.len() <= edit.capacity() / 4 {
            edit.shrink_to_fit();
        }
        self.len -= 1;
        self.index(key, page);
        Some(id)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &u64)> + Clone + '_ {
        self.pages.values().flat_map(|page| page.iter().map(|(name, id)| (&**name, id)))
    }

    /// The entries from `start` on (`start` included), in name order.
    pub fn iter_from<'a>(&'a self, start: &'a str) -> impl Iterator<Item = (&'a str, &'a u64)> + 'a {
        let first = self.page_of(start).map(|(key, _)| key.clone());
        let pages = match &first {
            Some(key) => self.pages.range::<str, _>((Bound::Included(&**key), Bound::Unbounded)),
            None => self.pages.range::<str, _>(..),
        };
        pages
            .flat_map(|(_, page)| page.iter().map(|(name, id)| (&**name, id)))
            .skip_while(move |(name, _)| *name < start)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(name, _)| name)
    }

    pub fn values(&self) -> impl Iterator<Item = &u64> + '_ {
        self.iter().map(|(_, id)| id)
    }

    /// What is wrong with the pages, if anything, for the invariant checks:
    /// an empty or oversized page, a page indexed under another name than
    /// its first, names out of order or repeated, or a wrong length.
    pub fn check(&self) -> Result<(), String> {
        let mut count = 0;
        let mut last: Option<&str> = None;
        for (key, page) in &self.pages {
            if page.is_empty() || page.len() > PAGE_MAX {
                return Err(format!("a page of {} entries", page.len()));
            }
            if **key != *page[0].0 {
                return Err(format!("the page of {:?} is indexed as {key:?}", page[0].0));
            }
            for (name, _) in page.iter() {
                if last.is_some_and(|l| l >= &**name) {
                    return Err(format!("{name:?} is out of order"));
                }
                last = Some(name);
            }
            count += page.len();
        }
        if count != self.len {
            return Err(format!("{count} entries counted as {}", self.len));
        }
        Ok(())
    }

    /// Whether this map and `other` share the page holding `name`.
    #[cfg(test)]
    fn shares_page(&self, other: &Self, name: &str) -> bool {
        matches!((self.page_of(name), other.page_of(name)), (Some((_, a)), Some((_, b))) if Arc::ptr_eq(a, b))
    }
}

impl Emptiable for Entries {
    fn empty() -> &'static Self {
        static EMPTY: Entries = Entries { pages: BTreeMap::new(), len: 0 };
        &EMPTY
    }

    fn is_empty_value(&self) -> bool {
        self.is_empty()
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for Entries {}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// From entries in name order (as a `BTreeMap` gives them), in pages
/// [`PAGE_FILLED`] full.
impl From<BTreeMap<Box<str>, u64>> for Entries {
    fn from(sorted: BTreeMap<Box<str>, u64>) -> Self {
        let len = sorted.len();
        let mut pages = BTreeMap::new();
        let mut page: Page = Vec::with_capacity(PAGE_FILLED);
        for entry in sorted {
            page.push(entry);
            if page.len() == PAGE_FILLED {
                let full = std::mem::replace(&mut page, Vec::with_capacity(PAGE_FILLED));
                pages.insert(Arc::from(&*full[0].0), Arc::new(full));
            }
        }
        if !page.is_empty() {
            page.shrink_to_fit();
            pages.insert(Arc::from(&*page[0].0), Arc::new(page));
        }
        Entries { pages, len }
    }
}

impl FromIterator<(Box<str>, u64)> for Entries {
    fn from_iter<I: IntoIterator<Item = (Box<str>, u64)>>(iter: I) -> Self {
        Entries::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl Extend<(Box<str>, u64)> for Entries {
    fn extend<I: IntoIterator<Item = (Box<str>, u64)>>(&mut self, iter: I) {
        for (name, id) in iter {
            self.insert(name, id);
        }
    }
}

impl Serialize for Entries {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len))?;
        for (name, id) in self.iter() {
            map.serialize_entry(name, id)?;
        }
        map.end()
    }
}

/// As the `BTreeMap` it replaced: in any order, the last of a repeated name kept.
impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<Box<str>, u64>::deserialize(d).map(Entries::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        // Not in name order as inserted ("f10" sorts before "f2").
        (0..n).map(|i| format!("f{i}")).collect()
    }

    #[test]
    fn entries_behave_as_a_sorted_map_through_splits_and_removals() {
        let mut e = Entries::default();
        let mut model: BTreeMap<Box<str>, u64> = BTreeMap::new();
        for (i, name) in names(1000).iter().enumerate() {
            assert_eq!(e.insert(name.as_str().into(), i as u64), model.insert(name.as_str().into(), i as u64));
        }
        // Renaming over an existing name replaces its inode.
        assert_eq!(e.insert("f7".into(), 70_000), model.insert("f7".into(), 70_000));
        // A name before every page's first.
        assert_eq!(e.insert("a".into(), 1), model.insert("a".into(), 1));
        e.check().unwrap();
        assert!(e.pages.len() > 1000 / PAGE_MAX, "pages split");
        for (i, name) in names(1000).iter().enumerate().filter(|(i, _)| i % 3 != 0) {
            assert_eq!(e.remove(name), model.remove(name.as_str()), "{i}");
        }
        assert_eq!(e.remove("missing"), None);
        assert_eq!(e.remove(""), None);
        e.check().unwrap();
        assert_eq!(e.len(), model.len());
        assert!(e.iter().eq(model.iter().map(|(n, i)| (&**n, i))));
        for name in names(1000) {
            assert_eq!(e.get(&name), model.get(name.as_str()));
        }
        let from: Vec<_> = e.iter_from("f5").collect();
        let want: Vec<_> =
            model.range::<str, _>((Bound::Included("f5"), Bound::Unbounded)).map(|(n, i)| (&**n, i)).collect();
        assert_eq!(from, want);
        assert_eq!(e.iter_from("zzz").count(), 0);
        assert_eq!(e.iter_from("").count(), model.len());
        // Emptied whole, no page is left.
        for name in model.keys() {
            e.remove(name);
        }
        assert!(e.is_empty() && e.pages.is_empty());
        e.check().unwrap();
    }

    #[test]
    fn random_changes_keep_the_pages_sound_and_agree_with_a_btree() {
        let mut e = Entries::default();
        let mut model: BTreeMap<Box<str>, u64> = BTreeMap::new();
        let mut copies = Vec::new();
        // A fixed-seed xorshift: names from a small space, so inserts
        // replace, removes hit, and pages split and empty.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let name = format!("n{}", x % 500);
            if x.is_multiple_of(3) {
                assert_eq!(e.remove(&name), model.remove(name.as_str()), "step {step}");
            } else {
                assert_eq!(e.insert(name.as_str().into(), step), model.insert(name.into(), step), "step {step}");
            }
            if step.is_multiple_of(1000) {
                copies.push((e.clone(), model.clone()));
            }
            e.check().unwrap();
            assert_eq!(e.len(), model.len());
        }
        assert!(e.iter().eq(model.iter().map(|(n, i)| (&**n, i))));
        // Every copy is as it was when taken.
        for (copy, then) in copies {
            copy.check().unwrap();
            assert!(copy.iter().eq(then.iter().map(|(n, i)| (&**n, i))));
        }
    }

    #[test]
    fn a_full_page_splits_with_the_name_in_its_half() {
        // Pages of exactly PAGE_MAX names, then a name at each edge.
        let names: Vec<String> = (0..PAGE_MAX).map(|i| format!("m{i:03}")).collect();
        for (new, at) in [("a", 0), ("m031x", PAGE_MAX / 2), ("z", PAGE_MAX), ("m000x", 1)] {
            let mut e = Entries::default();
            for (i, n) in names.iter().enumerate() {
                e.insert(n.as_str().into(), i as u64);
            }
            assert_eq!(e.pages.len(), 1, "one full page");
            assert_eq!(e.pages.values().next().unwrap().len(), PAGE_MAX);
            assert_eq!(e.insert(new.into(), 999), None);
            e.check().unwrap();
            assert_eq!((e.pages.len(), e.get(new), e.len()), (2, Some(&999), PAGE_MAX + 1), "{new} at {at}");
        }
    }

    #[test]
    fn entries_encode_as_the_map_they_replaced_in_both_encodings() {
        let model: BTreeMap<Box<str>, u64> =
            names(300).into_iter().enumerate().map(|(i, n)| (n.into(), i as u64)).collect();
        let e: Entries = model.clone().into_iter().collect();
        e.check().unwrap();
        let bytes = postcard::to_allocvec(&e).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&model).unwrap());
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(json, serde_json::to_string(&model).unwrap());
        let back: Entries = postcard::from_bytes(&bytes).unwrap();
        back.check().unwrap();
        assert_eq!(back, e);
        assert_eq!(serde_json::from_str::<Entries>(&json).unwrap(), e);
        // Out of order and repeated, as a B-tree decodes it.
        let odd: Entries = serde_json::from_str(r#"{"b":2,"a":1,"b":3}"#).unwrap();
        odd.check().unwrap();
        assert_eq!(odd.iter().collect::<Vec<_>>(), vec![("a", &1), ("b", &3)]);
        assert_eq!(
            postcard::to_allocvec(&Entries::default()).unwrap(),
            postcard::to_allocvec(&BTreeMap::<Box<str>, u64>::new()).unwrap()
        );
    }

    #[test]
    fn a_copy_shares_every_page_and_a_change_copies_one() {
        let mut e: Entries = names(2000).into_iter().enumerate().map(|(i, n)| (n.into(), i as u64)).collect();
        let copy = e.clone();
        assert!(e.shares_page(&copy, "f1") && e.shares_page(&copy, "f999"));
        // The second name of a page, and the first beside it.
        let (_, page) = copy.page_of("f5").unwrap();
        let (first, victim) = (page[0].0.to_string(), page[1].0.to_string());
        e.insert("f1x".into(), 5);
        assert_eq!(e.remove(&victim), copy.get(&victim).copied());
        assert!(!e.shares_page(&copy, "f1x") && !e.shares_page(&copy, &first), "the changed pages are copies");
        assert!(e.shares_page(&copy, "f3"), "an untouched page is still shared");
        assert_eq!((copy.get("f1x"), copy.get(&victim).is_some()), (None, true), "the copy is as it was");
        let copy_again = e.clone();
        assert_eq!(e.remove("nope"), None);
        assert!(e.shares_page(&copy_again, "f1x"), "a missing name copies nothing");
        e.check().unwrap();
        copy.check().unwrap();
    }
}
