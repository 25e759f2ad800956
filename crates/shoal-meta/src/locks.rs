//! The lock table: per-path FIFO queues of shared and exclusive requests.
//!
//! Plain data and pure functions, held inside the replicated state machine,
//! so every meta node has the same holders and queues and a new leader picks
//! them up as they were.
//!
//! # Rules
//! - Requests are served strictly in arrival order. A request is granted at
//!   once only if nobody is queued before it and it is compatible with every
//!   holder (shared with shared; exclusive with nobody). Otherwise it queues,
//!   so a shared request behind a queued exclusive one waits: writers never
//!   starve.
//! - When holders leave, the queue's head is granted while it is compatible:
//!   a run of shared requests is granted together; an exclusive head waits
//!   until there are no holders.
//! - Every grant gets a fencing token from one counter that only grows, and
//!   every request a ticket (its place in arrival order).
//! - A session holds or waits for a path at most once: asking again returns
//!   the existing grant or place, in the mode it has (exclusive covers
//!   shared). A session that holds or waits for a shared lock and asks for
//!   exclusive is refused and nothing changes: there is no upgrade in place
//!   (two shared holders upgrading would wait for each other forever);
//!   release, then ask again.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// A held lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub session: u64,
    pub mode: Mode,
    pub token: u64,
    pub ticket: u64,
}

/// A request waiting in a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub session: u64,
    pub mode: Mode,
    pub ticket: u64,
}

/// Holders and queue of one path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathLock {
    pub holders: Vec<Grant>,
    pub queue: VecDeque<Waiter>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTable {
    /// Only paths with holders or waiters.
    pub paths: BTreeMap<String, PathLock>,
    /// The last fencing token handed out.
    pub last_token: u64,
    /// The last ticket handed out.
    pub last_ticket: u64,
}

/// What an acquire did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acquired {
    Granted(Grant),
    Queued(Waiter),
    /// A try-lock that would have had to wait; nothing changed.
    WouldBlock,
    /// The session holds or waits for the path in shared mode and asked for
    /// exclusive; nothing changed.
    CannotUpgrade,
}

/// Whether having `has` gives a session everything asking for `asked` would.
fn covers(has: Mode, asked: Mode) -> bool {
    has == Mode::Exclusive || asked == Mode::Shared
}

fn compatible(mode: Mode, holders: &[Grant]) -> bool {
    match mode {
        Mode::Shared => holders.iter().all(|h| h.mode == Mode::Shared),
        Mode::Exclusive => holders.is_empty(),
    }
}

impl LockTable {
    /// Asks for `path` in `mode` for `session`; `wait` false is a try-lock.
    pub fn acquire(&mut self, path: &str, session: u64, mode: Mode, wait: bool) -> Acquired {
        if let Some(l) = self.paths.get(path) {
            if let Some(g) = l.holders.iter().find(|g| g.session == session) {
                return if covers(g.mode, mode) { Acquired::Granted(*g) } else { Acquired::CannotUpgrade };
            }
            if let Some(w) = l.queue.iter().find(|w| w.session == session) {
                return if covers(w.mode, mode) { Acquired::Queued(*w) } else { Acquired::CannotUpgrade };
            }
        }
        let free = self.paths.get(path).is_none_or(|l| l.queue.is_empty() && compatible(mode, &l.holders));
        if !free && !wait {
            return Acquired::WouldBlock;
        }
        self.last_ticket += 1;
        let ticket = self.last_ticket;
        let lock = self.paths.entry(path.to_string()).or_default();
        if free {
            self.last_token += 1;
            let g = Grant { session, mode, token: self.last_token, ticket };
            lock.holders.push(g);
            Acquired::Granted(g)
        } else {
            let w = Waiter { session, mode, ticket };
            lock.queue.push_back(w);
            Acquired::Queued(w)
        }
    }

    /// Gives up `session`'s hold on, or place in the queue for, `path`.
    /// Returns whether it had either, and the grants this made.
    pub fn release(&mut self, path: &str, session: u64) -> (bool, Vec<(String, Grant)>) {
        let Some(l) = self.paths.get_mut(path) else { return (false, Vec::new()) };
        let before = l.holders.len() + l.queue.len();
        l.holders.retain(|g| g.session != session);
        l.queue.retain(|w| w.session != session);
        let had = l.holders.len() + l.queue.len() < before;
        (had, self.promote(path))
    }

    /// Removes `session` from every path; returns the grants this made.
    pub fn drop_session(&mut self, session: u64) -> Vec<(String, Grant)> {
        let paths: Vec<String> = self
            .paths
            .iter()
            .filter(|(_, l)| {
                l.holders.iter().any(|g| g.session == session) || l.queue.iter().any(|w| w.session == session)
            })
            .map(|(p, _)| p.clone())
            .collect();
        paths.iter().flat_map(|p| self.release(p, session).1).collect()
    }

    /// Grants the queue's head while it is compatible; forgets an idle path.
    fn promote(&mut self, path: &str) -> Vec<(String, Grant)> {
        let mut granted = Vec::new();
        let Some(l) = self.paths.get_mut(path) else { return granted };
        while let Some(head) = l.queue.front().copied() {
            if !compatible(head.mode, &l.holders) {
                break;
            }
            l.queue.pop_front();
            self.last_token += 1;
            let g = Grant { session: head.session, mode: head.mode, token: self.last_token, ticket: head.ticket };
            l.holders.push(g);
            granted.push((path.to_string(), g));
        }
        if l.holders.is_empty() && l.queue.is_empty() {
            self.paths.remove(path);
        }
        granted
    }

    /// The grant `session` holds on `path`, if any.
    pub fn held(&self, path: &str, session: u64) -> Option<Grant> {
        self.paths.get(path)?.holders.iter().find(|g| g.session == session).copied()
    }

    /// Whether a holder of `path` has exactly fencing token `token`.
    pub fn token_holds(&self, path: &str, token: u64) -> bool {
        self.paths.get(path).is_some_and(|l| l.holders.iter().any(|g| g.token == token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mode::{Exclusive as X, Shared as S};

    fn granted(a: Acquired) -> Grant {
        match a {
            Acquired::Granted(g) => g,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    #[test]
    fn exclusive_is_fifo_and_tokens_grow() {
        let mut t = LockTable::default();
        let g1 = granted(t.acquire("/f", 1, X, true));
        assert!(matches!(t.acquire("/f", 2, X, true), Acquired::Queued(_)));
        assert!(matches!(t.acquire("/f", 3, X, true), Acquired::Queued(_)));
        assert_eq!(t.acquire("/f", 4, X, false), Acquired::WouldBlock);
        // Asking again changes nothing.
        assert_eq!(t.acquire("/f", 1, X, true), Acquired::Granted(g1));
        let (had, next) = t.release("/f", 1);
        assert!(had);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1.session, 2);
        assert!(next[0].1.token > g1.token);
        let (_, next) = t.release("/f", 2);
        assert_eq!(next[0].1.session, 3);
        t.release("/f", 3);
        assert!(t.paths.is_empty(), "an idle path is forgotten");
    }

    #[test]
    fn readers_share_and_a_queued_writer_blocks_later_readers() {
        let mut t = LockTable::default();
        granted(t.acquire("/f", 1, S, true));
        granted(t.acquire("/f", 2, S, true));
        assert!(matches!(t.acquire("/f", 3, X, true), Acquired::Queued(_)));
        // A reader behind the queued writer waits, though the holders are readers.
        assert!(matches!(t.acquire("/f", 4, S, true), Acquired::Queued(_)));
        assert!(matches!(t.acquire("/f", 5, S, true), Acquired::Queued(_)));
        assert!(t.release("/f", 1).1.is_empty(), "the writer waits for the last reader");
        let next = t.release("/f", 2).1;
        assert_eq!(next.iter().map(|g| g.1.session).collect::<Vec<_>>(), vec![3]);
        // The writer leaves: both readers behind it are granted together.
        let next = t.release("/f", 3).1;
        assert_eq!(next.iter().map(|g| g.1.session).collect::<Vec<_>>(), vec![4, 5]);
    }

    /// Regression (review): a session holding a shared lock that asked for
    /// exclusive got its shared grant back, and its client believed it held
    /// the lock exclusive while other readers held it too.
    #[test]
    fn a_shared_lock_is_not_upgraded_in_place() {
        let mut t = LockTable::default();
        let g1 = granted(t.acquire("/f", 1, S, true));
        granted(t.acquire("/f", 2, S, true));
        let before = t.clone();
        assert_eq!(t.acquire("/f", 1, X, true), Acquired::CannotUpgrade);
        assert_eq!(t.acquire("/f", 1, X, false), Acquired::CannotUpgrade);
        assert_eq!(t, before, "a refusal changes nothing");
        // Asking again for what it has returns the grant as it is.
        assert_eq!(t.acquire("/f", 1, S, true), Acquired::Granted(g1));
        // A queued shared request cannot turn exclusive either.
        let g3 = granted(t.acquire("/g", 3, X, true));
        let Acquired::Queued(w) = t.acquire("/g", 1, S, true) else { panic!() };
        assert_eq!(t.acquire("/g", 1, X, true), Acquired::CannotUpgrade);
        assert_eq!(t.acquire("/g", 1, S, true), Acquired::Queued(w));
        // Exclusive covers shared: the grant comes back in the mode held.
        assert_eq!(t.acquire("/g", 3, S, true), Acquired::Granted(g3));
        assert_eq!(g3.mode, X);
    }

    #[test]
    fn a_dropped_session_releases_and_leaves_queues() {
        let mut t = LockTable::default();
        granted(t.acquire("/a", 1, X, true));
        granted(t.acquire("/b", 2, X, true));
        t.acquire("/b", 1, X, true);
        t.acquire("/a", 2, X, true);
        let next = t.drop_session(1);
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].0.as_str(), next[0].1.session), ("/a", 2));
        assert!(t.paths["/b"].queue.is_empty(), "session 1 left the queue of /b");
        assert!(t.token_holds("/a", next[0].1.token));
        assert!(!t.token_holds("/a", 1));
    }
}
