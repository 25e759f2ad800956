//! Fields most inodes leave empty, kept behind one pointer.
//!
//! A directory's entries ([`super::Entries`]) and the inode fields
//! gathered in [`super::Extra`] (extended attributes, a symbolic link's
//! target, hard links, a device number) are empty on most inodes: a file
//! has no entries, and few have links or attributes. A [`Rare`] field
//! takes 8 bytes: none while empty, a box once written. It reads as the
//! value (an empty one when there is none) and is changed in place through
//! `DerefMut`, which makes the box on first write. It encodes and compares
//! as the value itself, so no record on disk or on the wire changes, and a
//! box left empty by a change is the same as none.

use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value type with an empty value that lives for the whole program.
pub trait Emptiable: Default + 'static {
    fn empty() -> &'static Self;
    fn is_empty_value(&self) -> bool;
}

/// A value of `T` that costs one pointer while it is empty.
#[derive(Clone, Default)]
pub struct Rare<T: Emptiable>(Option<Box<T>>);

impl<T: Emptiable> Rare<T> {
    /// Makes `value` the field's, as an assignment would.
    pub fn set(&mut self, value: T) {
        self.0 = (!value.is_empty_value()).then(|| Box::new(value));
    }

    /// Drops the box if its value is empty (after a change that emptied it).
    pub fn drop_if_empty(&mut self) {
        if self.0.as_deref().is_some_and(T::is_empty_value) {
            self.0 = None;
        }
    }

    /// Whether a box is held (a value once written, even if emptied since).
    pub fn is_allocated(&self) -> bool {
        self.0.is_some()
    }
}

impl<T: Emptiable> From<T> for Rare<T> {
    fn from(value: T) -> Self {
        let mut r: Rare<T> = Rare(None);
        r.set(value);
        r
    }
}

impl<T: Emptiable> Deref for Rare<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.0.as_deref().unwrap_or_else(|| T::empty())
    }
}

impl<T: Emptiable> DerefMut for Rare<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.get_or_insert_with(Default::default)
    }
}

impl<T: Emptiable + PartialEq> PartialEq for Rare<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Emptiable + Eq> Eq for Rare<T> {}

impl<T: Emptiable + fmt::Debug> fmt::Debug for Rare<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: Emptiable + Serialize> Serialize for Rare<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(s)
    }
}

impl<'de, T: Emptiable + Deserialize<'de>> Deserialize<'de> for Rare<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Rare::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rare_field_reads_writes_encodes_and_compares_as_its_value() {
        use crate::fsm::Entries;
        use std::collections::BTreeMap;
        let mut r: Rare<Entries> = Rare::default();
        assert!(r.is_empty() && !r.is_allocated());
        assert_eq!(size_of::<Rare<Entries>>(), 8);
        let plain: BTreeMap<Box<str>, u64> = BTreeMap::new();
        assert_eq!(postcard::to_allocvec(&r).unwrap(), postcard::to_allocvec(&plain).unwrap());
        r.insert("a".into(), 1);
        assert_eq!(r.get("a"), Some(&1));
        let full: BTreeMap<Box<str>, u64> = BTreeMap::from([("a".into(), 1)]);
        assert_eq!(postcard::to_allocvec(&r).unwrap(), postcard::to_allocvec(&full).unwrap());
        assert_eq!(serde_json::to_string(&r).unwrap(), serde_json::to_string(&full).unwrap());
        let back: Rare<Entries> = postcard::from_bytes(&postcard::to_allocvec(&full).unwrap()).unwrap();
        let full = Entries::from(full);
        assert_eq!(back, r);
        // Emptied in place, it equals none and encodes as empty.
        r.remove("a");
        assert!(r.is_allocated());
        assert_eq!(r, Rare::default());
        assert_eq!(postcard::to_allocvec(&r).unwrap(), postcard::to_allocvec(&plain).unwrap());
        let decoded: Rare<Entries> = postcard::from_bytes(&postcard::to_allocvec(&r).unwrap()).unwrap();
        assert!(!decoded.is_allocated(), "an empty value decodes to none");
        let mut t: Rare<Entries> = full.clone().into();
        assert_eq!(*t, full);
        t.set(Entries::default());
        assert!(!t.is_allocated());
    }
}
