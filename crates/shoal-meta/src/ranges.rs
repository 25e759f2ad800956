//! Byte-range locks: POSIX record locks (fcntl(2) `F_SETLK`), per path,
//! with queues served in arrival order. Plain data and pure functions, held inside the
//! replicated state machine beside the whole-path [`crate::locks`] table,
//! which they never conflict with (as on Linux, where flock(2) and fcntl(2)
//! locks are independent).
//!
//! # Rules
//! - A range is `start..=end` (inclusive, as the kernel passes them; `end`
//!   `u64::MAX` runs to the end of any file). Each session is one lock
//!   owner: its own locks never conflict with each other.
//! - Setting a lock on a range replaces whatever the session held inside it
//!   (splitting a hold that sticks out on either side), atomically: a
//!   shared hold turned exclusive, or the reverse, never passes through
//!   "unlocked". Adjacent or overlapping holds of one session in one mode
//!   merge. Unlocking a range cuts it out of the session's holds the same way.
//! - Two ranges of different sessions conflict when they overlap and one of
//!   them is exclusive.
//! - **Queues.** A request is granted at once when it conflicts with no hold
//!   of another session; otherwise it queues (or, for a try-lock, is refused
//!   and nothing changes). When holds change, queued requests are granted
//!   in arrival order, each as soon as no hold of another session is in its
//!   way.
//! - **Why not stricter FIFO.** A request is not held back by earlier
//!   queued requests it conflicts with (as the whole-path locks are): POSIX
//!   programs extend and convert the locks they hold, and a holder queued
//!   behind a request that waits, directly or through a chain of queued
//!   requests and of locks held on other files, for the holder's own bytes
//!   would wait forever, a deadlock POSIX does not have. Every wait is on a
//!   hold, so every wait cycle is one of holds alone, the program's own (as
//!   on a local file system; refused when it closes, see below). The price is the
//!   one POSIX locks pay everywhere: readers that keep overlapping can keep
//!   a writer waiting (SQLite guards against that itself, with its PENDING
//!   byte).
//! - A session may have several requests queued on one path (threads of one
//!   process share a lock owner); each has its ticket, and a cancel names it.
//! - **Deadlocks.** A request that would wait, on holds of sessions that
//!   themselves wait (through any chain of queued requests, on any paths)
//!   for a hold of its own session, would wait forever: under rules 7 and
//!   later the state machine refuses it (`EDEADLK`, [`RangeTable::would_deadlock`])
//!   and changes nothing, as Linux refuses an `F_SETLKW` that would close
//!   a cycle. Only cycles of sessions are seen, so a session whose threads
//!   wait on one another's behalf can be refused where no thread alone
//!   closes a cycle (as on Linux, where the owner is the process). The
//!   check is made when a request would queue, not again later: a cycle
//!   that a grant closes is not seen. That takes a session that waits and
//!   is granted bytes at the same time, through another of its threads (a
//!   request is granted at once past queued requests, and a queued one is
//!   granted when holds go).
//! - A path's weight, its holds plus twice its queued requests (each may
//!   split a hold when granted), stays at most [`ENTRIES_PER_PATH_MAX`]: a
//!   request or an unlock that would grow it past that is refused
//!   (`ENOLCK`) and changes nothing, so no owner can grow a path's entry
//!   without bound by locking or unlocking every other byte.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::locks::Mode;

/// The most one path weighs: its holds plus twice its queued requests.
pub const ENTRIES_PER_PATH_MAX: usize = 4096;

/// A held byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub session: u64,
    pub mode: Mode,
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

/// A queued request for a byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeWaiter {
    pub session: u64,
    pub mode: Mode,
    pub start: u64,
    /// Inclusive.
    pub end: u64,
    pub ticket: u64,
}

/// Holds (by session, then start) and queue (arrival order) of one path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathRanges {
    pub holds: Vec<Hold>,
    pub queue: VecDeque<RangeWaiter>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeTable {
    /// Only paths with holds or queued requests.
    pub paths: BTreeMap<String, PathRanges>,
    /// The last ticket handed out.
    pub last_ticket: u64,
}

/// What a range request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeAcquired {
    /// Held now; the ticket names the request.
    Granted {
        ticket: u64,
    },
    Queued(RangeWaiter),
    /// A try-lock that would have had to wait; nothing changed.
    WouldBlock,
    /// It would take the path past [`ENTRIES_PER_PATH_MAX`]; nothing changed.
    TooMany,
}

/// The refusal of a request that would take `path` past its bound.
pub fn too_many(path: &impl std::fmt::Display) -> shoal_core::FsError {
    shoal_core::FsError::TooManyLocks { path: path.to_string(), max: ENTRIES_PER_PATH_MAX as u32 }
}

/// Whether two inclusive ranges share a byte.
fn overlap(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

fn conflict(a: Mode, b: Mode) -> bool {
    a == Mode::Exclusive || b == Mode::Exclusive
}

impl Hold {
    fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }
}

impl RangeWaiter {
    fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }
}

impl PathRanges {
    /// Whether `session` asking `mode` on `range` must wait: a hold of
    /// another session is in its way.
    fn blocked(&self, session: u64, mode: Mode, range: (u64, u64)) -> bool {
        self.blockers(session, mode, range).next().is_some()
    }

    /// The sessions whose holds are in the way of `session` asking `mode`
    /// on `range` (one per hold, so a session may come more than once).
    fn blockers(&self, session: u64, mode: Mode, range: (u64, u64)) -> impl Iterator<Item = u64> + '_ {
        self.holds
            .iter()
            .filter(move |h| h.session != session && conflict(h.mode, mode) && overlap(h.range(), range))
            .map(|h| h.session)
    }

    /// Cuts `range` out of `session`'s holds (splitting those that stick out).
    fn cut(&mut self, session: u64, range: (u64, u64)) {
        let mut kept = Vec::with_capacity(self.holds.len() + 1);
        for h in self.holds.drain(..) {
            if h.session != session || !overlap(h.range(), range) {
                kept.push(h);
                continue;
            }
            if h.start < range.0 {
                kept.push(Hold { end: range.0 - 1, ..h });
            }
            if h.end > range.1 {
                kept.push(Hold { start: range.1 + 1, ..h });
            }
        }
        self.holds = kept;
    }

    /// Makes `session` hold `range` in `mode`, replacing what it held there,
    /// and merges its touching holds of one mode.
    fn set(&mut self, session: u64, mode: Mode, range: (u64, u64)) {
        self.cut(session, range);
        self.holds.push(Hold { session, mode, start: range.0, end: range.1 });
        self.holds.sort_by_key(|h| (h.session, h.start));
        let mut merged: Vec<Hold> = Vec::with_capacity(self.holds.len());
        for h in self.holds.drain(..) {
            match merged.last_mut() {
                Some(last)
                    if last.session == h.session
                        && last.mode == h.mode
                        && (last.end == u64::MAX || h.start <= last.end + 1) =>
                {
                    last.end = last.end.max(h.end);
                }
                _ => merged.push(h),
            }
        }
        self.holds = merged;
    }

    /// Grants queued requests in arrival order while any can be granted.
    /// Returns the grants made (session and ticket).
    fn promote(&mut self) -> Vec<(u64, u64)> {
        let mut granted = Vec::new();
        let mut i = 0;
        while i < self.queue.len() {
            let w = self.queue[i];
            if self.blocked(w.session, w.mode, w.range()) {
                i += 1;
                continue;
            }
            self.queue.remove(i);
            // A grant that replaces holds of its session (a conversion)
            // may free bytes an earlier request waits for: look again from
            // the head. One that only adds a hold frees nothing.
            let converts = self.holds.iter().any(|h| h.session == w.session && overlap(h.range(), w.range()));
            self.set(w.session, w.mode, w.range());
            granted.push((w.session, w.ticket));
            if converts {
                i = 0;
            }
        }
        granted
    }

    /// Holds, and twice the queued requests (each may split a hold when granted).
    fn weight(&self) -> usize {
        self.holds.len() + 2 * self.queue.len()
    }

    /// Whether `change` would take this path past its bound: only asked
    /// when it is within `growth` (the most `change` adds) of it.
    fn would_pass_bound(&self, growth: usize, change: impl FnOnce(&mut PathRanges)) -> bool {
        if self.weight() + growth <= ENTRIES_PER_PATH_MAX {
            return false;
        }
        let mut after = self.clone();
        change(&mut after);
        after.weight() > self.weight()
    }
}

impl RangeTable {
    /// Asks for `start..=end` of `path` in `mode` for `session`; `wait`
    /// false is a try-lock. A request whose `start` is past `end` is the
    /// caller's to refuse.
    pub fn acquire(&mut self, path: &str, session: u64, mode: Mode, start: u64, end: u64, wait: bool) -> RangeAcquired {
        debug_assert!(start <= end, "the caller refuses an empty range");
        let range = (start, end);
        let current = self.paths.get(path);
        let blocked = current.is_some_and(|p| p.blocked(session, mode, range));
        if blocked && !wait {
            return RangeAcquired::WouldBlock;
        }
        // A grant adds at most two holds (one split in three), a queued
        // request weighs two; near the bound, only what does not grow it.
        let too_heavy = |p: &PathRanges| match blocked {
            true => p.weight() + 2 > ENTRIES_PER_PATH_MAX,
            false => p.would_pass_bound(2, |after| after.set(session, mode, range)),
        };
        if current.is_some_and(too_heavy) {
            return RangeAcquired::TooMany;
        }
        self.last_ticket += 1;
        let ticket = self.last_ticket;
        let p = self.paths.entry(path.to_string()).or_default();
        if blocked {
            let w = RangeWaiter { session, mode, start, end, ticket };
            p.queue.push_back(w);
            return RangeAcquired::Queued(w);
        }
        p.set(session, mode, range);
        // A hold turned shared, or a smaller one, may let queued requests in.
        p.promote();
        RangeAcquired::Granted { ticket }
    }

    /// Whether `session`, asking `mode` on `start..=end` of `path` and
    /// made to wait, would close a cycle of waits: some session whose hold
    /// is in its way waits, directly or through other waiting sessions, for
    /// a hold of `session`'s. False when the request would not wait.
    pub fn would_deadlock(&self, path: &str, session: u64, mode: Mode, start: u64, end: u64) -> bool {
        let Some(p) = self.paths.get(path) else { return false };
        let mut todo: Vec<u64> = p.blockers(session, mode, (start, end)).collect();
        if todo.is_empty() {
            return false;
        }
        // Each session's queued requests, with their paths; a queued request
        // waits on every session whose hold is in its way (those are looked
        // up only for the sessions the search reaches).
        let mut queued: BTreeMap<u64, Vec<(&PathRanges, &RangeWaiter)>> = BTreeMap::new();
        for p in self.paths.values() {
            for w in &p.queue {
                queued.entry(w.session).or_default().push((p, w));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        while let Some(s) = todo.pop() {
            if s == session {
                return true;
            }
            if seen.insert(s) {
                for (p, w) in queued.get(&s).into_iter().flatten() {
                    todo.extend(p.blockers(w.session, w.mode, w.range()));
                }
            }
        }
        false
    }

    /// Unlocks `start..=end` of `path` for `session` (its queued requests
    /// stay). Returns the grants this made (session and ticket), or `None`
    /// when the unlock would split a hold past the path's bound (nothing
    /// changed then).
    pub fn release(&mut self, path: &str, session: u64, start: u64, end: u64) -> Option<Vec<(u64, u64)>> {
        // An unlock splits at most one hold in two.
        if self.paths.get(path).is_some_and(|p| p.would_pass_bound(1, |after| after.cut(session, (start, end)))) {
            return None;
        }
        Some(self.change(path, |p| p.cut(session, (start, end))))
    }

    /// Whether `session`'s holds on `path` cover every byte of `start..=end`
    /// in `mode` (exclusive covers shared).
    pub fn covers(&self, path: &str, session: u64, mode: Mode, start: u64, end: u64) -> bool {
        let Some(p) = self.paths.get(path) else { return false };
        let mut mine: Vec<&Hold> =
            p.holds.iter().filter(|h| h.session == session && (h.mode == mode || h.mode == Mode::Exclusive)).collect();
        mine.sort_by_key(|h| h.start);
        // The first byte not yet covered.
        let mut next = start;
        for h in mine {
            if h.start > next {
                break;
            }
            if h.end >= end {
                return true;
            }
            next = next.max(h.end + 1);
        }
        false
    }

    /// Takes `session`'s queued request `ticket` (0: every one of its
    /// requests queued on `path`) out of the queue; holds stay. Returns the
    /// grants this made.
    pub fn cancel(&mut self, path: &str, session: u64, ticket: u64) -> Vec<(u64, u64)> {
        self.change(path, |p| p.queue.retain(|w| w.session != session || (ticket != 0 && w.ticket != ticket)))
    }

    /// Removes `session` from every path; returns the grants this made (path,
    /// session and ticket).
    pub fn drop_session(&mut self, session: u64) -> Vec<(String, u64, u64)> {
        let paths: Vec<String> = self
            .paths
            .iter()
            .filter(|(_, p)| {
                p.holds.iter().any(|h| h.session == session) || p.queue.iter().any(|w| w.session == session)
            })
            .map(|(path, _)| path.clone())
            .collect();
        let mut granted = Vec::new();
        for path in paths {
            let made = self.change(&path, |p| {
                p.holds.retain(|h| h.session != session);
                p.queue.retain(|w| w.session != session);
            });
            granted.extend(made.into_iter().map(|(s, t)| (path.clone(), s, t)));
        }
        granted
    }

    /// Applies `f` to `path`'s entry, grants what that lets in, and forgets
    /// the path once idle.
    fn change(&mut self, path: &str, f: impl FnOnce(&mut PathRanges)) -> Vec<(u64, u64)> {
        let Some(p) = self.paths.get_mut(path) else { return Vec::new() };
        f(p);
        let granted = p.promote();
        if p.holds.is_empty() && p.queue.is_empty() {
            self.paths.remove(path);
        }
        granted
    }

    /// Whether `session` still has request `ticket` queued on `path`.
    pub fn queued(&self, path: &str, session: u64, ticket: u64) -> bool {
        self.paths.get(path).is_some_and(|p| p.queue.iter().any(|w| w.session == session && w.ticket == ticket))
    }

    /// Checks the table's invariants; the first one broken, named.
    pub fn check(&self) -> Result<(), String> {
        for (path, p) in &self.paths {
            if p.holds.is_empty() && p.queue.is_empty() {
                return Err(format!("{path}: an idle path is kept"));
            }
            if p.weight() > ENTRIES_PER_PATH_MAX {
                return Err(format!("{path}: weighs {} (holds and twice the queue), past the bound", p.weight()));
            }
            for (i, a) in p.holds.iter().enumerate() {
                if a.start > a.end {
                    return Err(format!("{path}: an empty hold {a:?}"));
                }
                for b in &p.holds[i + 1..] {
                    if !overlap(a.range(), b.range()) {
                        continue;
                    }
                    if a.session == b.session {
                        return Err(format!("{path}: holds of one session overlap: {a:?} {b:?}"));
                    }
                    if conflict(a.mode, b.mode) {
                        return Err(format!("{path}: conflicting holds: {a:?} {b:?}"));
                    }
                }
            }
            for w in &p.queue {
                if w.ticket > self.last_ticket || w.start > w.end {
                    return Err(format!("{path}: a bad queued request {w:?}"));
                }
                if !p.blocked(w.session, w.mode, w.range()) {
                    return Err(format!("{path}: {w:?} waits though it could hold"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mode::{Exclusive as X, Shared as S};

    const MAX: u64 = u64::MAX;

    fn holds(t: &RangeTable, path: &str) -> Vec<(u64, Mode, u64, u64)> {
        t.paths.get(path).map_or(Vec::new(), |p| p.holds.iter().map(|h| (h.session, h.mode, h.start, h.end)).collect())
    }

    fn granted(a: RangeAcquired) {
        assert!(matches!(a, RangeAcquired::Granted { .. }), "expected a grant, got {a:?}");
    }

    fn queued(a: RangeAcquired) -> RangeWaiter {
        match a {
            RangeAcquired::Queued(w) => w,
            other => panic!("expected a queued request, got {other:?}"),
        }
    }

    #[test]
    fn disjoint_ranges_are_held_together_and_overlapping_ones_conflict() {
        let mut t = RangeTable::default();
        granted(t.acquire("/f", 1, X, 0, 99, false));
        granted(t.acquire("/f", 2, X, 100, 199, false));
        assert_eq!(t.acquire("/f", 3, S, 50, 149, false), RangeAcquired::WouldBlock);
        granted(t.acquire("/f", 3, S, 200, MAX, false));
        granted(t.acquire("/f", 4, S, 300, 400, false));
        assert_eq!(t.acquire("/f", 4, X, 300, 400, false), RangeAcquired::WouldBlock, "shared with session 3");
        let before = t.clone();
        assert_eq!(t.acquire("/f", 5, X, 0, 0, false), RangeAcquired::WouldBlock);
        assert_eq!(t, before, "a refused try-lock changes nothing");
        t.check().unwrap();
    }

    #[test]
    fn setting_and_unlocking_split_and_merge_one_sessions_holds() {
        let mut t = RangeTable::default();
        granted(t.acquire("/f", 1, S, 0, 99, false));
        // Exclusive in the middle: the shared hold is split around it.
        granted(t.acquire("/f", 1, X, 40, 59, false));
        assert_eq!(holds(&t, "/f"), vec![(1, S, 0, 39), (1, X, 40, 59), (1, S, 60, 99)]);
        // Back to shared: the three pieces merge into one.
        granted(t.acquire("/f", 1, S, 40, 59, false));
        assert_eq!(holds(&t, "/f"), vec![(1, S, 0, 99)]);
        // Adjacent ranges of one mode merge; to the end of the file too.
        granted(t.acquire("/f", 1, S, 100, MAX, false));
        assert_eq!(holds(&t, "/f"), vec![(1, S, 0, MAX)]);
        // Unlocking a middle piece leaves both sides.
        t.release("/f", 1, 10, 19).unwrap();
        assert_eq!(holds(&t, "/f"), vec![(1, S, 0, 9), (1, S, 20, MAX)]);
        t.release("/f", 1, 0, MAX).unwrap();
        assert!(t.paths.is_empty(), "an idle path is forgotten");
        t.check().unwrap();
    }

    #[test]
    fn waiters_are_granted_in_arrival_order_when_the_holder_unlocks() {
        let mut t = RangeTable::default();
        granted(t.acquire("/f", 1, X, 0, 99, true));
        let w2 = queued(t.acquire("/f", 2, X, 50, 60, true));
        // Session 1's hold is in the way of both.
        let w3 = queued(t.acquire("/f", 3, S, 55, 150, true));
        // A request no hold is in the way of is granted at once.
        granted(t.acquire("/f", 4, S, 150, 160, true));
        t.check().unwrap();
        // Unlocking a part no waiter needs grants nothing.
        assert!(t.release("/f", 1, 0, 9).unwrap().is_empty());
        assert_eq!(t.release("/f", 1, 0, MAX).unwrap(), vec![(2, w2.ticket)]);
        assert!(t.queued("/f", 3, w3.ticket), "session 3 waits for session 2");
        assert_eq!(t.release("/f", 2, 0, MAX).unwrap(), vec![(3, w3.ticket)]);
        assert_eq!(holds(&t, "/f"), vec![(3, S, 55, 150), (4, S, 150, 160)]);
        t.check().unwrap();
    }

    /// A holder that extends or converts its lock does not queue behind a
    /// request that waits for that very lock (they would wait for each
    /// other forever).
    #[test]
    fn a_holder_is_not_queued_behind_a_request_waiting_on_it() {
        let mut t = RangeTable::default();
        granted(t.acquire("/f", 1, X, 0, 9, true));
        let w2 = queued(t.acquire("/f", 2, X, 5, 14, true));
        granted(t.acquire("/f", 1, X, 0, 19, true));
        granted(t.acquire("/f", 1, S, 0, 19, true));
        assert!(t.queued("/f", 2, w2.ticket));
        assert_eq!(t.release("/f", 1, 0, MAX).unwrap(), vec![(2, w2.ticket)]);
        t.check().unwrap();
    }

    #[test]
    fn a_downgrade_lets_readers_in() {
        let mut t = RangeTable::default();
        granted(t.acquire("/f", 1, X, 0, MAX, true));
        let w2 = queued(t.acquire("/f", 2, S, 0, 9, true));
        granted(t.acquire("/f", 1, S, 0, MAX, true));
        assert!(!t.queued("/f", 2, w2.ticket), "granted by the downgrade");
        assert_eq!(holds(&t, "/f"), vec![(1, S, 0, MAX), (2, S, 0, 9)]);
        t.check().unwrap();
    }

    #[test]
    fn a_cancel_leaves_the_queue_and_holds_stay() {
        let mut t = RangeTable::default();
        granted(t.acquire("/f", 1, X, 0, 9, true));
        let w2 = queued(t.acquire("/f", 2, X, 0, 9, true));
        let w3 = queued(t.acquire("/f", 3, S, 5, 5, true));
        assert_eq!(t.cancel("/f", 2, 999), vec![], "another ticket: nothing");
        assert_eq!(t.cancel("/f", 2, w2.ticket), vec![], "session 1 still holds the bytes");
        assert!(!t.queued("/f", 2, w2.ticket) && t.queued("/f", 3, w3.ticket));
        assert_eq!(t.release("/f", 1, 0, MAX).unwrap(), vec![(3, w3.ticket)]);
        let w4 = queued(t.acquire("/f", 4, X, 0, 5, true));
        let w4b = queued(t.acquire("/f", 4, X, 5, 9, true));
        t.cancel("/f", 4, 0);
        assert!(!t.queued("/f", 4, w4.ticket) && !t.queued("/f", 4, w4b.ticket), "ticket 0: all of them");
        assert_eq!(holds(&t, "/f"), vec![(3, S, 5, 5)], "holds stay");
        t.check().unwrap();
    }

    #[test]
    fn a_dropped_session_releases_and_leaves_queues() {
        let mut t = RangeTable::default();
        granted(t.acquire("/a", 1, X, 0, MAX, true));
        granted(t.acquire("/b", 2, X, 0, MAX, true));
        let w1 = queued(t.acquire("/b", 1, S, 0, 0, true));
        let w2 = queued(t.acquire("/a", 2, S, 7, 8, true));
        assert_eq!(t.drop_session(1), vec![("/a".to_string(), 2, w2.ticket)]);
        assert!(!t.queued("/b", 1, w1.ticket));
        assert_eq!(holds(&t, "/a"), vec![(2, S, 7, 8)]);
        t.check().unwrap();
    }

    #[test]
    fn a_path_keeps_a_bounded_number_of_entries() {
        let mut t = RangeTable::default();
        for i in 0..(ENTRIES_PER_PATH_MAX as u64 - 1) {
            granted(t.acquire("/f", 1, X, 2 * i, 2 * i, false));
        }
        let before = t.clone();
        assert_eq!(t.acquire("/f", 1, X, 1_000_000, 1_000_000, false), RangeAcquired::TooMany);
        assert_eq!(t, before);
        assert_eq!(t.acquire("/f", 2, X, 1_000_000, 1_000_000, true), RangeAcquired::TooMany, "nor queued");
        // What does not grow the entry is still taken: merging what it holds.
        granted(t.acquire("/f", 1, X, 0, MAX, false));
        assert_eq!(holds(&t, "/f"), vec![(1, X, 0, MAX)]);
        // An unlock that splits a hold past the bound is refused too.
        t.release("/f", 1, 0, MAX).unwrap();
        for i in 0..(ENTRIES_PER_PATH_MAX as u64 - 1) {
            granted(t.acquire("/f", 1, X, 4 * i, 4 * i + 2, false));
        }
        assert!(t.release("/f", 1, 1, 1).is_some(), "up to the bound");
        let before = t.clone();
        assert_eq!(t.release("/f", 1, 5, 5), None, "past it");
        assert_eq!(t, before);
        assert!(t.release("/f", 1, 0, 6).is_some(), "an unlock that shrinks is taken");
        t.check().unwrap();
    }

    /// Review: were requests queued behind earlier conflicting requests
    /// (not only behind holds), session 3 below would queue behind
    /// session 2, which waits for session 1, which waits for session 3's
    /// lock on another file: forever. Waiting only on holds, it is granted.
    #[test]
    fn a_request_waits_only_on_holds_so_no_chain_deadlocks() {
        let mut t = RangeTable::default();
        granted(t.acquire("/q", 1, X, 0, 0, true));
        let w2 = queued(t.acquire("/q", 2, X, 0, 5, true));
        granted(t.acquire("/p", 3, X, 0, 0, true));
        granted(t.acquire("/q", 3, X, 5, 5, true));
        let w1 = queued(t.acquire("/p", 1, X, 0, 0, true));
        t.check().unwrap();
        assert_eq!(t.release("/p", 3, 0, MAX).unwrap(), vec![(1, w1.ticket)]);
        t.release("/q", 3, 0, MAX).unwrap();
        assert_eq!(t.release("/q", 1, 0, MAX).unwrap(), vec![(2, w2.ticket)]);
        t.check().unwrap();
    }

    #[test]
    fn a_wait_that_closes_a_cycle_is_seen_and_others_are_not() {
        let mut t = RangeTable::default();
        granted(t.acquire("/p", 1, X, 0, 0, true));
        granted(t.acquire("/q", 2, S, 0, 9, true));
        granted(t.acquire("/r", 3, X, 0, 0, true));
        // Not waiting at all, or waiting on a session that waits for nobody.
        assert!(!t.would_deadlock("/p", 2, X, 1, 1));
        assert!(!t.would_deadlock("/nowhere", 2, X, 0, 0));
        assert!(!t.would_deadlock("/p", 2, X, 0, 0));
        // 1 waits for 2 (its shared bytes); 2 asking for 1's byte closes
        // the cycle 2 -> 1 -> 2.
        let w1 = queued(t.acquire("/q", 1, X, 5, 5, true));
        assert!(t.would_deadlock("/p", 2, X, 0, 0));
        assert!(!t.would_deadlock("/p", 2, S, 1, 9), "bytes nobody else holds");
        assert!(!t.would_deadlock("/r", 2, X, 0, 0), "3 waits for nobody");
        // A longer chain, through a third path: 3 waits for 1, and 2 asking
        // for 3's byte closes 2 -> 3 -> 1 -> 2.
        queued(t.acquire("/p", 3, S, 0, 0, true));
        assert!(t.would_deadlock("/r", 2, X, 0, 0));
        // Another shared holder of 2's bytes is no way back to 2.
        assert!(!t.would_deadlock("/q", 4, X, 0, 0));
        let before = t.clone();
        assert!(t.would_deadlock("/p", 2, X, 0, 0));
        assert_eq!(t, before, "looking changes nothing");
        // Once 1 stops waiting, the cycle is gone.
        t.cancel("/q", 1, w1.ticket);
        assert!(!t.would_deadlock("/p", 2, X, 0, 0));
        assert!(!t.would_deadlock("/r", 2, X, 0, 0));
        t.check().unwrap();

        // A session waiting on two paths at once (two threads): a way back
        // through either of them is a cycle.
        granted(t.acquire("/a", 10, X, 0, 0, true));
        granted(t.acquire("/b", 11, X, 0, 0, true));
        granted(t.acquire("/c", 12, X, 0, 0, true));
        queued(t.acquire("/b", 10, X, 0, 0, true));
        queued(t.acquire("/c", 10, X, 0, 0, true));
        assert!(t.would_deadlock("/a", 11, X, 0, 0));
        assert!(t.would_deadlock("/a", 12, S, 0, 0));
        assert!(!t.would_deadlock("/a", 13, X, 0, 0));
        t.check().unwrap();
    }

    #[test]
    fn coverage_is_of_every_byte_in_a_mode_at_least_as_strong() {
        let mut t = RangeTable::default();
        granted(t.acquire("/f", 1, S, 0, 9, true));
        granted(t.acquire("/f", 1, X, 10, 19, true));
        granted(t.acquire("/f", 1, S, 30, MAX, true));
        assert!(t.covers("/f", 1, S, 0, 19), "exclusive covers shared");
        assert!(!t.covers("/f", 1, X, 0, 19), "shared does not cover exclusive");
        assert!(t.covers("/f", 1, X, 12, 15));
        assert!(!t.covers("/f", 1, S, 15, 35), "a gap at 20..30");
        assert!(t.covers("/f", 1, S, 40, MAX));
        assert!(!t.covers("/f", 2, S, 0, 0), "another session's");
        assert!(!t.covers("/g", 1, S, 0, 0));
    }

    #[test]
    fn the_check_names_a_broken_table() {
        let mut t = RangeTable::default();
        granted(t.acquire("/f", 1, X, 0, 9, true));
        t.paths.get_mut("/f").unwrap().holds.push(Hold { session: 2, mode: S, start: 9, end: 9 });
        assert!(t.check().unwrap_err().contains("conflicting holds"));
        let mut t = RangeTable::default();
        granted(t.acquire("/f", 1, S, 0, 9, true));
        t.paths.get_mut("/f").unwrap().queue.push_back(RangeWaiter {
            session: 2,
            mode: S,
            start: 0,
            end: 0,
            ticket: 1,
        });
        assert!(t.check().unwrap_err().contains("could hold"));
    }
}
