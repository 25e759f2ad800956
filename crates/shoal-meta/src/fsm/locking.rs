//! Lock sessions and the locks they hold, as the state machine applies them.
//!
//! The queues themselves are [`crate::locks::LockTable`] (pure); this module
//! ties them to sessions: a request names a live session, and a session that
//! ends releases its locks and leaves every queue.
//!
//! # Invariants kept here
//! - Every holder and waiter in the lock table belongs to an open session.
//! - `last_session` is at least every session id: ids are never reused.

use serde::{Deserialize, Serialize};
use shoal_core::{FsError, NormalPath};

use super::{FsState, Response};
use crate::locks::{Acquired, Mode};

/// A write's proof of holding a lock: the locked path and the grant's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub path: NormalPath,
    pub token: u64,
}

/// An open lock session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub ttl_ms: u64,
}

impl FsState {
    pub(super) fn open_session(&mut self, ttl_ms: u64) -> Result<Response, FsError> {
        self.last_session += 1;
        self.sessions.insert(self.last_session, SessionRecord { ttl_ms });
        Ok(Response::Session { id: self.last_session })
    }

    pub(super) fn end_session(&mut self, session: u64) -> Result<Response, FsError> {
        if self.sessions.remove(&session).is_some() {
            self.locks.drop_session(session);
        }
        Ok(Response::Ok)
    }

    pub(super) fn acquire(
        &mut self,
        session: u64,
        path: &NormalPath,
        mode: Mode,
        wait: bool,
    ) -> Result<Response, FsError> {
        self.live_session(session)?;
        match self.locks.acquire(&path.to_string(), session, mode, wait) {
            Acquired::WouldBlock => Err(FsError::WouldBlock { path: path.to_string() }),
            a => Ok(Response::Lock(a)),
        }
    }

    pub(super) fn release(&mut self, session: u64, path: &NormalPath) -> Result<Response, FsError> {
        self.live_session(session)?;
        match self.locks.release(&path.to_string(), session) {
            (true, _) => Ok(Response::Ok),
            (false, _) => Err(FsError::NotLocked { path: path.to_string() }),
        }
    }

    fn live_session(&self, session: u64) -> Result<(), FsError> {
        match self.sessions.contains_key(&session) {
            true => Ok(()),
            false => Err(FsError::SessionExpired { session }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Command;
    use super::super::testing::{create, p, run};
    use super::*;

    #[test]
    fn sessions_hold_locks_and_fence_writes() {
        let mut st = FsState::default();
        let f = create(&mut st, "/f");
        let Response::Session { id: a } = run(&mut st, Command::OpenSession { ttl_ms: 1000 }) else { panic!() };
        let Response::Session { id: b } = run(&mut st, Command::OpenSession { ttl_ms: 1000 }) else { panic!() };
        let acquire = |session| Command::Acquire { session, path: p("/f"), mode: Mode::Exclusive, wait: true };
        let Response::Lock(Acquired::Granted(ga)) = run(&mut st, acquire(a)) else { panic!() };
        assert!(matches!(run(&mut st, acquire(b)), Response::Lock(Acquired::Queued(_))));
        let fence = |token| Some(Fence { path: p("/f"), token });
        let commit =
            |token| Command::CommitWrite { inode: f.id, chunks: vec![], size: 1, truncate: false, fence: fence(token) };
        assert!(matches!(run(&mut st, commit(ga.token)), Response::Inode(_)));
        // A's session ends (expired): B is granted and A's token no longer writes.
        run(&mut st, Command::EndSession { session: a });
        let gb = st.locks.held("/f", b).expect("b was granted");
        assert!(gb.token > ga.token);
        let before = st.clone();
        assert_eq!(
            run(&mut st, commit(ga.token)),
            Response::Err(FsError::Fenced { path: "/f".into(), token: ga.token })
        );
        assert_eq!(st, before, "a fenced write changes nothing");
        assert!(matches!(run(&mut st, commit(gb.token)), Response::Inode(_)));
        assert_eq!(run(&mut st, acquire(a)), Response::Err(FsError::SessionExpired { session: a }));
        // Release, then a try-lock by another session succeeds at once.
        assert_eq!(run(&mut st, Command::Release { session: b, path: p("/f") }), Response::Ok);
        let Response::Session { id: c } = run(&mut st, Command::OpenSession { ttl_ms: 1000 }) else { panic!() };
        let try_lock = Command::Acquire { session: c, path: p("/f"), mode: Mode::Shared, wait: false };
        assert!(matches!(run(&mut st, try_lock), Response::Lock(Acquired::Granted(_))));
    }
}
