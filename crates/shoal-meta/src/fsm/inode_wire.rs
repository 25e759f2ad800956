//! How an [`Inode`] is encoded: as the record it was before its rarely set
//! fields moved into [`Extra`], byte for byte, in every format.
//!
//! In memory, extended attributes, a symbolic link's target, hard links and
//! a device number share one pointer (`Inode::extra`); in a record they
//! stay separate fields among the others, in their old order, so no
//! snapshot, log entry or answer changes. [`Record`] is that record: it
//! decodes every format (the fields an older format lacks decode as their
//! defaults, through the `format::since_format_*` functions), and
//! `Inode`'s own `Serialize` writes the same fields in the same order,
//! which a test below checks against `Record`'s derived encoding.

use std::collections::BTreeMap;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::namespace::{Extra, Inode, Kind};
use super::{ChunkMap, Entries, Rare};

/// An inode as it is encoded, in every format: the struct `Inode` as it
/// was before its rare fields moved into [`Extra`].
#[derive(Serialize, Deserialize)]
#[serde(rename = "Inode")]
struct Record {
    id: u64,
    parent: u64,
    kind: Kind,
    size: u64,
    mode: u32,
    mtime_ms: u64,
    replication: u32,
    chunk_size: u64,
    chunks: ChunkMap,
    children: Rare<Entries>,
    #[serde(default)]
    fence: u64,
    #[serde(default, deserialize_with = "crate::format::since_format_2")]
    xattrs: BTreeMap<String, Vec<u8>>,
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    uid: u32,
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    gid: u32,
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    atime_ns: u64,
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    mtime_ns: u64,
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    ctime_ns: u64,
    #[serde(default, deserialize_with = "crate::format::since_format_3")]
    target: String,
    #[serde(default, deserialize_with = "crate::format::since_format_4")]
    extra_links: BTreeMap<u64, u32>,
    #[serde(default, deserialize_with = "crate::format::since_format_4")]
    rdev: u64,
}

/// How many fields a record has.
const FIELDS: usize = 20;

impl Serialize for Inode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut r = s.serialize_struct("Inode", FIELDS)?;
        r.serialize_field("id", &self.id)?;
        r.serialize_field("parent", &self.parent)?;
        r.serialize_field("kind", &self.kind)?;
        r.serialize_field("size", &self.size)?;
        r.serialize_field("mode", &self.mode)?;
        r.serialize_field("mtime_ms", &self.mtime_ms)?;
        r.serialize_field("replication", &self.replication)?;
        r.serialize_field("chunk_size", &self.chunk_size)?;
        r.serialize_field("chunks", &self.chunks)?;
        r.serialize_field("children", &self.children)?;
        r.serialize_field("fence", &self.fence)?;
        r.serialize_field("xattrs", &self.extra.xattrs)?;
        r.serialize_field("uid", &self.uid)?;
        r.serialize_field("gid", &self.gid)?;
        r.serialize_field("atime_ns", &self.atime_ns)?;
        r.serialize_field("mtime_ns", &self.mtime_ns)?;
        r.serialize_field("ctime_ns", &self.ctime_ns)?;
        r.serialize_field("target", &self.extra.target)?;
        r.serialize_field("extra_links", &self.extra.extra_links)?;
        r.serialize_field("rdev", &self.extra.rdev)?;
        r.end()
    }
}

impl<'de> Deserialize<'de> for Inode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = Record::deserialize(d)?;
        let extra = Extra { xattrs: r.xattrs, target: r.target, extra_links: r.extra_links, rdev: r.rdev };
        Ok(Inode {
            id: r.id,
            parent: r.parent,
            kind: r.kind,
            size: r.size,
            mode: r.mode,
            mtime_ms: r.mtime_ms,
            replication: r.replication,
            chunk_size: r.chunk_size,
            chunks: r.chunks,
            children: r.children,
            fence: r.fence,
            uid: r.uid,
            gid: r.gid,
            atime_ns: r.atime_ns,
            mtime_ns: r.mtime_ns,
            ctime_ns: r.ctime_ns,
            extra: extra.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::ChunkMeta;

    /// The record of `inode`, as the derived code encodes it.
    fn record_of(i: &Inode) -> Record {
        Record {
            id: i.id,
            parent: i.parent,
            kind: i.kind,
            size: i.size,
            mode: i.mode,
            mtime_ms: i.mtime_ms,
            replication: i.replication,
            chunk_size: i.chunk_size,
            chunks: i.chunks.clone(),
            children: i.children.clone(),
            fence: i.fence,
            xattrs: i.extra.xattrs.clone(),
            uid: i.uid,
            gid: i.gid,
            atime_ns: i.atime_ns,
            mtime_ns: i.mtime_ns,
            ctime_ns: i.ctime_ns,
            target: i.extra.target.clone(),
            extra_links: i.extra.extra_links.clone(),
            rdev: i.extra.rdev,
        }
    }

    fn every_field_set() -> Inode {
        let mut chunks = ChunkMap::default();
        chunks.insert(3, ChunkMeta { id: 9, version: 2, committed_version: 1, replicas: vec![1, 2], lagging: vec![2] });
        let mut i = Inode {
            id: 17,
            parent: 5,
            kind: Kind::CharDevice,
            size: 4096,
            mode: 0o4755,
            mtime_ms: 1_700,
            replication: 3,
            chunk_size: 1 << 20,
            chunks,
            children: Entries::from(BTreeMap::from([("a".into(), 18)])).into(),
            fence: 41,
            uid: 1000,
            gid: 100,
            atime_ns: 1,
            mtime_ns: 1_700_000_000,
            ctime_ns: 3,
            extra: Rare::default(),
        };
        i.extra.xattrs.insert("user.k".into(), b"v".to_vec());
        i.extra.target = "../t".into();
        i.extra.extra_links.insert(6, 2);
        i.extra.rdev = 0x0801;
        i
    }

    #[test]
    fn an_inode_encodes_as_its_record_in_both_encodings_and_decodes_back() {
        let bare = Inode { kind: Kind::File, extra: Rare::default(), ..every_field_set() };
        for i in [every_field_set(), bare] {
            let bytes = postcard::to_allocvec(&i).unwrap();
            assert_eq!(bytes, postcard::to_allocvec(&record_of(&i)).unwrap());
            let json = serde_json::to_string(&i).unwrap();
            assert_eq!(json, serde_json::to_string(&record_of(&i)).unwrap());
            assert_eq!(postcard::from_bytes::<Inode>(&bytes).unwrap(), i);
            assert_eq!(serde_json::from_str::<Inode>(&json).unwrap(), i);
        }
    }

    #[test]
    fn an_inode_with_nothing_extra_decodes_without_a_box_and_costs_less() {
        let bare = Inode { kind: Kind::File, extra: Rare::default(), ..every_field_set() };
        let back: Inode = postcard::from_bytes(&postcard::to_allocvec(&bare).unwrap()).unwrap();
        assert!(!back.extra.is_allocated(), "empty extras decode to no box");
        // Four fields (three pointers and a number) became one pointer.
        assert!(size_of::<Inode>() <= 136, "an inode takes {} bytes", size_of::<Inode>());
    }
}
