//! Fields most inodes leave empty, kept behind one pointer.
//!
//! Extended attributes, a symbolic link's target, hard links and a
//! directory's entries are empty on most inodes (a file has no entries, and
//! few have links or attributes), yet each took 24 bytes in every inode. A
//! [`Rare`] field takes 8: none while empty, a box once written. It reads
//! as the value (an empty one when there is none) and is changed in place
//! through `DerefMut`, which makes the box on first write. It encodes and
//! compares as the value itself, so no record on disk or on the wire
//! changes, and a box left empty by a change is the same as none.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value type with an empty value that lives for the whole program.
pub trait Emptiable: Default + 'static {
    fn empty() -> &'static Self;
    fn is_empty_value(&self) -> bool;
}

impl Emptiable for String {
    fn empty() -> &'static Self {
        static EMPTY: String = String::new();
        &EMPTY
    }

    fn is_empty_value(&self) -> bool {
        self.is_empty()
    }
}

/// Implements [`Emptiable`] for a `BTreeMap` type.
macro_rules! emptiable_map {
    ($k:ty, $v:ty) => {
        impl Emptiable for BTreeMap<$k, $v> {
            fn empty() -> &'static Self {
                static EMPTY: BTreeMap<$k, $v> = BTreeMap::new();
                &EMPTY
            }

            fn is_empty_value(&self) -> bool {
                self.is_empty()
            }
        }
    };
}

emptiable_map!(String, Vec<u8>);
emptiable_map!(Box<str>, u64);
emptiable_map!(u64, u32);

/// A value of `T` that costs one pointer while it is empty.
#[derive(Clone, Default)]
pub struct Rare<T: Emptiable>(Option<Box<T>>);

impl<T: Emptiable> Rare<T> {
    /// Makes `value` the field's, as an assignment would.
    pub fn set(&mut self, value: T) {
        self.0 = (!value.is_empty_value()).then(|| Box::new(value));
    }

    /// The value, taken out; the field is left empty.
    pub fn take(&mut self) -> T {
        self.0.take().map(|b| *b).unwrap_or_default()
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

impl<'a, T: Emptiable> IntoIterator for &'a Rare<T>
where
    &'a T: IntoIterator,
{
    type Item = <&'a T as IntoIterator>::Item;
    type IntoIter = <&'a T as IntoIterator>::IntoIter;

    fn into_iter(self) -> Self::IntoIter {
        (**self).into_iter()
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
        let mut r: Rare<BTreeMap<String, Vec<u8>>> = Rare::default();
        assert!(r.is_empty() && r.0.is_none());
        assert_eq!(size_of::<Rare<BTreeMap<String, Vec<u8>>>>(), 8);
        let plain: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        assert_eq!(postcard::to_allocvec(&r).unwrap(), postcard::to_allocvec(&plain).unwrap());
        r.insert("user.a".into(), vec![1]);
        assert_eq!(r.get("user.a"), Some(&vec![1]));
        let full = BTreeMap::from([("user.a".to_string(), vec![1u8])]);
        assert_eq!(postcard::to_allocvec(&r).unwrap(), postcard::to_allocvec(&full).unwrap());
        assert_eq!(serde_json::to_string(&r).unwrap(), serde_json::to_string(&full).unwrap());
        let back: Rare<BTreeMap<String, Vec<u8>>> =
            postcard::from_bytes(&postcard::to_allocvec(&full).unwrap()).unwrap();
        assert_eq!(back, r);
        // Emptied in place, it equals none and encodes as empty.
        r.remove("user.a");
        assert!(r.0.is_some());
        assert_eq!(r, Rare::default());
        assert_eq!(postcard::to_allocvec(&r).unwrap(), postcard::to_allocvec(&plain).unwrap());
        let decoded: Rare<BTreeMap<String, Vec<u8>>> =
            postcard::from_bytes(&postcard::to_allocvec(&r).unwrap()).unwrap();
        assert!(decoded.0.is_none(), "an empty value decodes to none");
        let mut t: Rare<String> = "x".to_string().into();
        assert_eq!(t.as_str(), "x");
        assert_eq!(t.take(), "x");
        assert_eq!(t.as_str(), "");
        t.set(String::new());
        assert!(t.0.is_none());
    }
}
