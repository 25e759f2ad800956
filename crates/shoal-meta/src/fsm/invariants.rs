//! Every invariant the state machine promises, checked at once.
//!
//! [`FsState::check_invariants`] walks the whole state and names the first
//! broken invariant it finds. Debug builds and tests run it after applies
//! (see [`FsState::apply`]), so every unit, property and integration test
//! checks it continuously; release builds skip it, since it is linear in the
//! size of the state. Up to [`WHOLE_CHECK_EACH_APPLY_UP_TO`] inodes it runs
//! after every apply; above, after one apply in every `inodes / that`, so
//! that its cost per apply stays bounded instead of growing with the state
//! (a test that makes thousands of files would otherwise spend most of its
//! time here). [`Counters`] checks what must hold between two states, after
//! every apply: ids and tokens only grow.

use std::collections::{BTreeMap, BTreeSet};

use super::{FsState, Kind, ROOT_INODE};
use crate::locks::Mode;

/// The longest file or directory name, in bytes (as `NormalPath` allows).
const NAME_MAX_BYTES: usize = 255;

/// Up to this many inodes, the whole state is checked after every apply.
pub const WHOLE_CHECK_EACH_APPLY_UP_TO: usize = 256;

/// After how many applies the whole state is checked again, for a state of
/// `inodes` inodes: 1 for small states, then growing with the state, so the
/// check costs about as much per apply as checking a state of
/// [`WHOLE_CHECK_EACH_APPLY_UP_TO`] inodes every time.
pub fn whole_check_every(inodes: usize) -> u64 {
    inodes.div_ceil(WHOLE_CHECK_EACH_APPLY_UP_TO).max(1) as u64
}

/// Counts applies (on this thread, so one test's count is its own) and
/// says whether this one is due a whole-state check when checks come
/// `every` applies.
pub fn whole_check_due(every: u64) -> bool {
    thread_local! {
        static APPLIES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    every <= 1
        || APPLIES.with(|n| {
            let due = n.get() % every == 0;
            n.set(n.get().wrapping_add(1));
            due
        })
}

/// The counters that never go back: ids are never reused, and fencing tokens
/// and tickets only grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub next_inode: u64,
    pub next_chunk_id: u64,
    pub last_session: u64,
    pub last_token: u64,
    pub last_ticket: u64,
}

impl Counters {
    pub fn of(s: &FsState) -> Self {
        Counters {
            next_inode: s.next_inode,
            next_chunk_id: s.next_chunk_id,
            last_session: s.last_session,
            last_token: s.locks.last_token,
            last_ticket: s.locks.last_ticket,
        }
    }

    /// Checks that no counter went back from `self` to `after`.
    pub fn check_growth(&self, after: &Counters) -> Result<(), String> {
        let pairs = [
            ("next_inode", self.next_inode, after.next_inode),
            ("next_chunk_id", self.next_chunk_id, after.next_chunk_id),
            ("last_session", self.last_session, after.last_session),
            ("last_token", self.last_token, after.last_token),
            ("last_ticket", self.last_ticket, after.last_ticket),
        ];
        match pairs.iter().find(|(_, before, now)| now < before) {
            Some((name, before, now)) => Err(format!("{name} went back from {before} to {now}")),
            None => Ok(()),
        }
    }
}

fn fail(msg: String) -> Result<(), String> {
    Err(msg)
}

impl FsState {
    /// Checks every invariant of the state; the error names the first broken one.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_namespace()?;
        self.check_chunks()?;
        self.check_locks()?;
        self.check_reserved()?;
        self.check_clients()
    }

    /// The tree: one root; a directory has one entry, in its parent;
    /// anything else has one in its parent and as many more in each
    /// directory as `extra_links` counts; no cycles.
    fn check_namespace(&self) -> Result<(), String> {
        let Some(root) = self.inodes.get(&ROOT_INODE) else { return fail("the root inode is missing".into()) };
        if root.kind != Kind::Dir || root.parent != ROOT_INODE {
            return fail("the root must be a directory that is its own parent".into());
        }
        if let Some((dir, kept, counted)) = self.inodes.miscounted_subdirs().first() {
            return fail(format!("directory {dir} is kept with {kept} subdirectories, and has {counted}"));
        }
        let (pages, length) = self.inodes.miscounted_pages();
        if !pages.is_empty() || length {
            return fail(format!("the inode table miscounts pages {pages:?} (its length too: {length})"));
        }
        // How many directory entries name each inode, per directory.
        let mut entries: BTreeMap<u64, BTreeMap<u64, u32>> = BTreeMap::new();
        for (id, inode) in self.inodes.iter() {
            if inode.id != id {
                return fail(format!("inode {id} is stored with id {}", inode.id));
            }
            if id >= self.next_inode {
                return fail(format!("inode {id} is not below next_inode {}", self.next_inode));
            }
            if let Err(e) = super::xattrs::check_all(&inode.extra.xattrs) {
                return fail(format!("inode {id}: {e}"));
            }
            match inode.kind {
                Kind::Dir => {
                    if !inode.chunks.is_empty() || inode.size != 0 {
                        return fail(format!("directory {id} has chunks or a size"));
                    }
                }
                Kind::File => {
                    if !inode.children.is_empty() {
                        return fail(format!("file {id} has children"));
                    }
                    if inode.chunk_size == 0 || inode.replication == 0 {
                        return fail(format!("file {id} has a zero chunk size or replication"));
                    }
                }
                Kind::Symlink => {
                    if !inode.children.is_empty() || !inode.chunks.is_empty() {
                        return fail(format!("symbolic link {id} has children or chunks"));
                    }
                    if let Err(e) = super::namespace::check_symlink_target(&inode.extra.target) {
                        return fail(format!("symbolic link {id}: {e}"));
                    }
                }
                Kind::Fifo | Kind::Socket | Kind::CharDevice | Kind::BlockDevice => {
                    if !inode.children.is_empty() || !inode.chunks.is_empty() || inode.size != 0 {
                        return fail(format!("special file {id} has children, chunks or a size"));
                    }
                }
            }
            if inode.kind != Kind::Symlink && !inode.extra.target.is_empty() {
                return fail(format!("inode {id} is no symbolic link but has a target"));
            }
            if !inode.kind.is_device() && inode.extra.rdev != 0 {
                return fail(format!("inode {id} is no device but has a device number"));
            }
            if inode.kind == Kind::Dir && !inode.extra.extra_links.is_empty() {
                return fail(format!("directory {id} has hard links"));
            }
            if inode.extra.extra_links.values().any(|n| *n == 0) {
                return fail(format!("inode {id} counts 0 names in a directory"));
            }
            if inode.names() > super::LINKS_MAX {
                return fail(format!("inode {id} has more than {} names", super::LINKS_MAX));
            }
            if let Err(e) = inode.children.check() {
                return fail(format!("the entries of directory {id}: {e}"));
            }
            for (name, child) in inode.children.iter() {
                if name.is_empty() || name.len() > NAME_MAX_BYTES || name.contains('/') || name.contains('\0') {
                    return fail(format!("directory {id} has an invalid entry name {name:?}"));
                }
                if name == "." || name == ".." {
                    return fail(format!("directory {id} has an entry named {name:?}"));
                }
                if !self.inodes.contains_key(child) {
                    return fail(format!("entry {name:?} of directory {id} names missing inode {child}"));
                }
                *entries.entry(*child).or_default().entry(id).or_default() += 1;
            }
        }
        for (id, inode) in self.inodes.iter().filter(|(id, _)| *id != ROOT_INODE) {
            let mut expected = inode.extra.extra_links.clone();
            *expected.entry(inode.parent).or_default() += 1;
            let found = entries.remove(&id).unwrap_or_default();
            if found != expected {
                return fail(format!(
                    "inode {id} has directory entries {found:?} (directory: count), but its parent {} and \
                     hard links {:?} say {expected:?}",
                    inode.parent, inode.extra.extra_links
                ));
            }
        }
        if entries.contains_key(&ROOT_INODE) {
            return fail("the root is listed in a directory".into());
        }
        // Every inode reaches the root going up, so no directory contains itself.
        for id in self.inodes.keys() {
            let mut cur = id;
            let mut steps = 0usize;
            while cur != ROOT_INODE {
                cur = self.inodes[&cur].parent;
                steps += 1;
                if steps > self.inodes.len() {
                    return fail(format!("inode {id} does not reach the root (a cycle)"));
                }
            }
        }
        Ok(())
    }

    /// Chunk versions, replicas, garbage and corruption records.
    fn check_chunks(&self) -> Result<(), String> {
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        for f in self.inodes.values().filter(|i| i.kind == Kind::File) {
            if f.fence > self.locks.last_token {
                return fail(format!("file {} carries fence {} above the last token", f.id, f.fence));
            }
            let committed_chunks = shoal_core::layout::chunk_count(f.size, f.chunk_size);
            for (index, c) in &f.chunks {
                let at = format!("chunk {} (file {}, index {index})", c.id, f.id);
                if c.id == 0 || c.id >= self.next_chunk_id {
                    return fail(format!("{at} is not below next_chunk_id {}", self.next_chunk_id));
                }
                if !seen.insert(c.id) {
                    return fail(format!("{at} appears twice in the namespace"));
                }
                if c.committed_version > c.version {
                    return fail(format!("{at}: committed version {} > version {}", c.committed_version, c.version));
                }
                if c.version == 0 {
                    return fail(format!("{at} was never prepared"));
                }
                if c.committed_version > 0 && *index >= committed_chunks {
                    return fail(format!("{at} is committed past the end of the file (size {})", f.size));
                }
                let distinct: BTreeSet<u64> = c.replicas.iter().copied().collect();
                if distinct.len() != c.replicas.len() {
                    return fail(format!("{at} lists a server twice: {:?}", c.replicas));
                }
                if let Some(r) = c.replicas.iter().find(|r| !self.nodes.contains_key(r)) {
                    return fail(format!("{at} lists unregistered server {r}"));
                }
                if let Some(l) = c.lagging.iter().find(|l| !c.replicas.contains(l)) {
                    return fail(format!("{at}: lagging server {l} is not a listed replica"));
                }
                if !c.lagging.is_empty() && c.version == c.committed_version {
                    return fail(format!("{at} has lagging replicas but no write in flight"));
                }
                if let Some(g) = self.garbage.get(&c.id)
                    && let Some(r) = c.replicas.iter().find(|r| g.contains(r))
                {
                    return fail(format!("{at} is listed on server {r}, which is told to delete it"));
                }
            }
        }
        let (pages, length) = self.garbage.miscounted_pages();
        if !pages.is_empty() || length {
            return fail(format!("the garbage map miscounts pages {pages:?} (its length too: {length})"));
        }
        for (chunk, holders) in self.garbage.iter() {
            if holders.is_empty() {
                return fail(format!("garbage chunk {chunk} has no holder left"));
            }
            if chunk >= self.next_chunk_id {
                return fail(format!("garbage chunk {chunk} was never allocated"));
            }
        }
        for (chunk, bad) in &self.corrupt {
            if bad.is_empty() || !seen.contains(chunk) {
                return fail(format!("corrupt record of chunk {chunk} is empty or outlived its chunk"));
            }
        }
        Ok(())
    }

    /// Lock holders, queues, tickets and tokens, and the sessions they belong to.
    fn check_locks(&self) -> Result<(), String> {
        if let Some(s) = self.sessions.keys().find(|s| **s > self.last_session) {
            return fail(format!("session {s} is above last_session {}", self.last_session));
        }
        let mut tokens = BTreeSet::new();
        for (path, l) in &self.locks.paths {
            if l.holders.is_empty() && l.queue.is_empty() {
                return fail(format!("lock {path} is idle but still listed"));
            }
            let exclusive = l.holders.iter().filter(|g| g.mode == Mode::Exclusive).count();
            if exclusive > 0 && l.holders.len() > 1 {
                return fail(format!("lock {path} has an exclusive holder beside others"));
            }
            let mut sessions = BTreeSet::new();
            for g in &l.holders {
                if g.token == 0 || g.token > self.locks.last_token || !tokens.insert(g.token) {
                    return fail(format!("lock {path}: token {} is zero, too new or given twice", g.token));
                }
                if g.ticket > self.locks.last_ticket {
                    return fail(format!("lock {path}: ticket {} is above the last ticket", g.ticket));
                }
                if !sessions.insert(g.session) || !self.sessions.contains_key(&g.session) {
                    return fail(format!("lock {path}: session {} holds twice or has ended", g.session));
                }
            }
            let mut last = l.holders.iter().map(|g| g.ticket).max().unwrap_or(0);
            for w in &l.queue {
                if w.ticket <= last || w.ticket > self.locks.last_ticket {
                    return fail(format!("lock {path}: ticket {} is out of arrival order", w.ticket));
                }
                last = w.ticket;
                if !sessions.insert(w.session) || !self.sessions.contains_key(&w.session) {
                    return fail(format!("lock {path}: session {} waits twice, holds too, or has ended", w.session));
                }
            }
            // Nobody waits who could hold: the head is incompatible with the holders.
            if let Some(head) = l.queue.front() {
                let compatible = match head.mode {
                    Mode::Shared => l.holders.iter().all(|g| g.mode == Mode::Shared),
                    Mode::Exclusive => l.holders.is_empty(),
                };
                if compatible {
                    return fail(format!("lock {path}: the queue's head could be granted but waits"));
                }
            }
        }
        if let Some(t) = self.fence_bindings.keys().find(|t| !tokens.contains(t)) {
            return fail(format!("fence binding of token {t} outlived its grant"));
        }
        self.ranges.check().map_err(|e| format!("byte-range locks: {e}"))?;
        for (path, p) in &self.ranges.paths {
            let sessions = p.holds.iter().map(|h| h.session).chain(p.queue.iter().map(|w| w.session));
            if let Some(s) = sessions.into_iter().find(|s| !self.sessions.contains_key(s)) {
                return fail(format!("byte-range lock {path}: session {s} has ended"));
            }
        }
        Ok(())
    }

    /// Reserved runs of chunk ids: few, bounded, disjoint, oldest first,
    /// all allocated, with a bit per id and none past the run.
    fn check_reserved(&self) -> Result<(), String> {
        use super::reserved::{RESERVATIONS_KEPT, RESERVE_IDS_MAX};
        if self.reserved.len() > RESERVATIONS_KEPT {
            return fail(format!("{} reserved runs of chunk ids, over {RESERVATIONS_KEPT}", self.reserved.len()));
        }
        let mut floor = 1;
        for r in &self.reserved {
            let end = r.start.saturating_add(r.count);
            if r.start < floor || r.count == 0 || r.count > RESERVE_IDS_MAX || end > self.next_chunk_id {
                return fail(format!("reserved run {}+{} overlaps, is out of order or unallocated", r.start, r.count));
            }
            if r.used.len() as u64 != r.count.div_ceil(64) {
                return fail(format!("reserved run {}+{}: {} words of used bits", r.start, r.count, r.used.len()));
            }
            let spare_bits = r.used.len() as u64 * 64 - r.count;
            if r.used.last().is_some_and(|w| spare_bits > 0 && w >> (64 - spare_bits) != 0) {
                return fail(format!("reserved run {}+{}: its used bits do not fit it", r.start, r.count));
            }
            floor = end;
        }
        // A file names a reserved id only once it was created with it.
        let named = self.inodes.values().flat_map(|i| i.chunks.values()).map(|c| c.id);
        if let Some(id) = named.into_iter().find(|id| self.reserved_unused(*id)) {
            return fail(format!("chunk {id} is named by a file but still reserved and unused"));
        }
        Ok(())
    }

    /// Request answers are kept only for requests the client has not confirmed.
    fn check_clients(&self) -> Result<(), String> {
        for (id, c) in &self.clients {
            if let Some(seq) = c.replies.keys().next()
                && *seq < c.done_below
            {
                return fail(format!("client {id:x} keeps answer {seq} below done_below {}", c.done_below));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_states_are_checked_after_every_apply_and_large_ones_at_a_bounded_cost() {
        assert_eq!(whole_check_every(1), 1);
        assert_eq!(whole_check_every(WHOLE_CHECK_EACH_APPLY_UP_TO), 1);
        assert_eq!(whole_check_every(WHOLE_CHECK_EACH_APPLY_UP_TO + 1), 2);
        assert_eq!(whole_check_every(10 * WHOLE_CHECK_EACH_APPLY_UP_TO), 10);
        assert!((0..100).all(|_| whole_check_due(1)));
        // The count is this thread's own: exactly one in every 10.
        let due = (0..10_000).filter(|_| whole_check_due(10)).count();
        assert_eq!(due, 1_000);
    }
}
