//! The client's cache of chunk maps (layouts): a file's attributes and where
//! each of its chunks lives, by inode, so a read does not ask meta (a
//! read-index round on a quorum) every time.
//!
//! # What a cached map may miss, and the rules that bound it
//! - **Opening fetches.** `Client::open` always asks meta and puts the answer
//!   here, so a file opened after a write was acknowledged (by anyone) reads
//!   that write: close-to-open consistency across clients.
//! - **This client's own changes empty their entry.** A write, an append or
//!   a `set_len` through any handle of this client drops the file's map once
//!   it has ended (committed, failed or timed out), and a remove or a rename
//!   drops every map. A map fetched while such a change was in flight is not
//!   kept ([`LayoutCache::epoch`]): it may predate the change. So a client
//!   always reads its own acknowledged writes.
//! - **A replica that no longer holds the version asked for refuses**
//!   (`MOVED`), and a read that every replica failed with a cached map fetches
//!   a fresh one and reads again (see `file`). Either way the map is refetched,
//!   never the answer guessed.
//! - What is left: a handle already open keeps reading the version its map
//!   names while replicas still serve it, so another client's write that was
//!   acknowledged after this client fetched the map may stay unseen until
//!   the next open, `File::len`, or a refusal. Data is never a mix: a version
//!   is read whole or not at all, verified by its checksums.
//!
//! # Bounds
//! At most [`LAYOUTS_CACHED_MAX`] maps; a full cache forgets its oldest entry
//! (by insertion) to take a new one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::client::{ChunkInfo, Stat};

/// How many files' chunk maps one client keeps.
pub const LAYOUTS_CACHED_MAX: usize = 4096;

/// One file's attributes and chunk map, as meta answered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub stat: Stat,
    /// Sorted by chunk index.
    pub chunks: Vec<ChunkInfo>,
}

#[derive(Default)]
struct State {
    /// Each map with the stamp of its insertion.
    maps: HashMap<u64, (Arc<Layout>, u64)>,
    /// (inode, stamp) in insertion order; an entry whose stamp is no longer
    /// its inode's (dropped or replaced since) is skipped.
    order: VecDeque<(u64, u64)>,
    /// Stamps insertions.
    inserted: u64,
    /// Grows with every drop: a map fetched before a drop is not kept.
    epoch: u64,
}

/// Chunk maps by inode, shared by every handle of one client.
#[derive(Default)]
pub struct LayoutCache {
    state: Mutex<State>,
}

impl LayoutCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached map of `inode`, if any.
    pub fn get(&self, inode: u64) -> Option<Arc<Layout>> {
        self.lock().maps.get(&inode).map(|(l, _)| l.clone())
    }

    /// Read before asking meta for a map; pass it to [`LayoutCache::put`].
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Keeps `layout`, fetched when the epoch was `epoch`, unless something
    /// was dropped since (it may predate a change this client made).
    pub fn put(&self, epoch: u64, layout: Arc<Layout>) {
        let mut s = self.lock();
        if s.epoch != epoch {
            return;
        }
        let inode = layout.stat.inode;
        s.inserted += 1;
        let stamp = s.inserted;
        s.maps.insert(inode, (layout, stamp));
        s.order.push_back((inode, stamp));
        let State { maps, order, .. } = &mut *s;
        while maps.len() > LAYOUTS_CACHED_MAX {
            let Some((oldest, stamp)) = order.pop_front() else { break };
            if maps.get(&oldest).is_some_and(|(_, s)| *s == stamp) {
                maps.remove(&oldest);
            }
        }
        // Replaced and dropped entries leave their names behind in `order`;
        // do not let those pile up past the bound either.
        if order.len() > 2 * LAYOUTS_CACHED_MAX {
            order.retain(|(i, stamp)| maps.get(i).is_some_and(|(_, s)| s == stamp));
        }
    }

    /// Forgets the map of `inode` (this client changed the file).
    pub fn drop_inode(&self, inode: u64) {
        let mut s = self.lock();
        s.epoch += 1;
        s.maps.remove(&inode);
    }

    /// Forgets every map (this client removed or renamed something).
    pub fn drop_all(&self) {
        let mut s = self.lock();
        s.epoch += 1;
        s.maps.clear();
        s.order.clear();
    }

    /// Forgets every map when the returned guard goes: at the end of a
    /// remove or rename, whether it succeeded, failed or was cancelled.
    pub fn drop_all_when_done(&self) -> DropAllWhenDone<'_> {
        DropAllWhenDone(self)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().maps.len()
    }
}

/// See [`LayoutCache::drop_all_when_done`].
pub struct DropAllWhenDone<'a>(&'a LayoutCache);

impl Drop for DropAllWhenDone<'_> {
    fn drop(&mut self) {
        self.0.drop_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(inode: u64, version: u64) -> Arc<Layout> {
        let stat = Stat {
            inode,
            is_dir: false,
            size: 4096,
            mode: 0o644,
            mtime_ms: 0,
            replication: 2,
            chunk_size: 64 << 20,
            chunk_count: 1,
            xattrs: Default::default(),
            uid: 0,
            gid: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            is_symlink: false,
            target: String::new(),
            nlink: 1,
            special: None,
            rdev: 0,
        };
        let chunk =
            ChunkInfo { index: 0, id: inode * 10, version, replicas: vec!["127.0.0.1:1".into()], capability: None };
        Arc::new(Layout { stat, chunks: vec![chunk] })
    }

    #[test]
    fn a_map_is_kept_until_this_client_changes_the_file() {
        let c = LayoutCache::default();
        c.put(c.epoch(), layout(7, 1));
        assert_eq!(c.get(7).unwrap().chunks[0].version, 1);
        c.drop_inode(7);
        assert!(c.get(7).is_none(), "a change through this client drops the map");
        c.put(c.epoch(), layout(7, 2));
        assert_eq!(c.get(7).unwrap().chunks[0].version, 2);
        c.drop_all();
        assert!(c.get(7).is_none(), "a remove or rename drops every map");
    }

    #[test]
    fn a_map_fetched_across_a_change_is_not_kept() {
        let c = LayoutCache::default();
        // A read asks meta; meanwhile this client's write to another file ends.
        let before = c.epoch();
        c.drop_inode(8);
        c.put(before, layout(7, 1));
        assert!(c.get(7).is_none(), "the map may predate the change");
        c.put(c.epoch(), layout(7, 1));
        assert!(c.get(7).is_some());
    }

    #[test]
    fn the_cache_stays_within_its_bound() {
        let c = LayoutCache::default();
        for inode in 1..=(LAYOUTS_CACHED_MAX as u64 + 10) {
            c.put(c.epoch(), layout(inode, 1));
        }
        assert_eq!(c.len(), LAYOUTS_CACHED_MAX);
        assert!(c.get(1).is_none(), "the oldest went first");
        assert!(c.get(LAYOUTS_CACHED_MAX as u64 + 10).is_some());
        // Refreshing an entry does not grow the cache.
        c.put(c.epoch(), layout(LAYOUTS_CACHED_MAX as u64 + 10, 2));
        assert_eq!(c.len(), LAYOUTS_CACHED_MAX);
        for inode in 0..(3 * LAYOUTS_CACHED_MAX as u64) {
            c.drop_inode(inode % 50 + 20);
            c.put(c.epoch(), layout(inode % 50 + 20, 1));
        }
        assert!(c.lock().order.len() <= 2 * LAYOUTS_CACHED_MAX);
    }
}
