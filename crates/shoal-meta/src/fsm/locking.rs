//! Lock sessions and the locks they hold, as the state machine applies them.
//!
//! The queues themselves are [`crate::locks::LockTable`] (pure); this module
//! ties them to sessions: a request names a live session, and a session that
//! ends releases its locks and leaves every queue.
//!
//! # Fencing is bound to a file
//! A lock is taken on a path, but its token fences writes to one file: the
//! inode the path named when the lock was granted, or, if it named no file
//! then, the first file a write under the token names through that path.
//! The binding is by inode, so it survives renames of the file, and a token
//! for `/a` never writes `/b` (nor raises `/b`'s fence). A fenced rename onto
//! the locked path (how `put` replaces a file) moves the binding to the
//! file it puts there.
//!
//! # Inode locks (rules 5)
//! A lock named `/.shoal-inode/N` ([`shoal_core::path::inode_lock_name`]) is
//! inode N's lock, whatever N's names are: under rules 5 and later its tokens
//! bind to inode N (when N is a file), not to whatever file that path names.
//! The mount takes these for flock(2) and fcntl(2), so a rename never changes
//! which lock a file has and its fence still guards the file. Entries of an
//! older rules number bind such a name as the path it is, as they did.
//!
//! # Invariants kept here
//! - Every holder and waiter in the lock table belongs to an open session.
//! - `last_session` is at least every session id: ids are never reused.
//! - Every token in `fence_bindings` is held by a current grant.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shoal_core::{FsError, NormalPath};

use super::{FsState, Kind, ROOT_INODE, Response};
use crate::locks::{Acquired, Mode};
use crate::ranges::RangeAcquired;

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

/// The lock service's commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCmd {
    /// Opens a lock session; the leader expires it when it is not kept alive.
    OpenSession { ttl_ms: u64 },
    /// Ends a session (closed by its client, or expired by the leader):
    /// its locks are released and its queued requests removed.
    EndSession { session: u64 },
    /// Asks for a lock; `wait` false is a try-lock.
    Acquire { session: u64, path: NormalPath, mode: Mode, wait: bool },
    /// Gives up a held lock or a place in its queue.
    Release { session: u64, path: NormalPath },
    /// Format 6: asks for bytes `start..=end` of `path` (a POSIX record
    /// lock, [`crate::ranges`]); `wait` false is a try-lock.
    AcquireRange { session: u64, path: NormalPath, mode: Mode, start: u64, end: u64, wait: bool },
    /// Format 6: unlocks bytes `start..=end` of `path` (queued requests stay).
    ReleaseRange { session: u64, path: NormalPath, start: u64, end: u64 },
    /// Format 6: leaves `path`'s range queue: request `ticket`, or with 0
    /// every request of the session there (holds stay).
    CancelRange { session: u64, path: NormalPath, ticket: u64 },
}

/// Refuses a byte range whose start is past its end.
fn byte_range(start: u64, end: u64) -> Result<(), FsError> {
    if start > end {
        return Err(FsError::InvalidArgument { reason: format!("a byte range's start {start} is past its end {end}") });
    }
    Ok(())
}

impl FsState {
    /// Applies a lock command.
    pub(super) fn apply_locks(&mut self, cmd: &LockCmd, now_ms: u64, rules: u16) -> Result<Response, FsError> {
        match cmd {
            LockCmd::OpenSession { ttl_ms } => self.open_session(*ttl_ms),
            LockCmd::EndSession { session } => self.end_session(*session, now_ms, rules),
            LockCmd::Acquire { session, path, mode, wait } => self.acquire(*session, path, *mode, *wait, rules),
            LockCmd::Release { session, path } => self.release(*session, path, rules),
            LockCmd::AcquireRange { session, path, mode, start, end, wait } => {
                self.live_session(*session)?;
                byte_range(*start, *end)?;
                let p = path.to_string();
                if rules >= 7 && *wait && self.ranges.would_deadlock(&p, *session, *mode, *start, *end) {
                    return Err(FsError::Deadlock { path: p });
                }
                match self.ranges.acquire(&p, *session, *mode, *start, *end, *wait) {
                    RangeAcquired::WouldBlock => Err(FsError::WouldBlock { path: p }),
                    RangeAcquired::TooMany => Err(crate::ranges::too_many(path)),
                    a => Ok(Response::Range(a)),
                }
            }
            LockCmd::ReleaseRange { session, path, start, end } => {
                self.live_session(*session)?;
                byte_range(*start, *end)?;
                match self.ranges.release(&path.to_string(), *session, *start, *end) {
                    Some(_) => Ok(Response::Ok),
                    None => Err(crate::ranges::too_many(path)),
                }
            }
            LockCmd::CancelRange { session, path, ticket } => {
                self.live_session(*session)?;
                self.ranges.cancel(&path.to_string(), *session, *ticket);
                Ok(Response::Ok)
            }
        }
    }

    pub(super) fn open_session(&mut self, ttl_ms: u64) -> Result<Response, FsError> {
        self.last_session += 1;
        self.sessions.insert(self.last_session, SessionRecord { ttl_ms });
        Ok(Response::Session { id: self.last_session })
    }

    pub(super) fn end_session(&mut self, session: u64, now_ms: u64, rules: u16) -> Result<Response, FsError> {
        if self.sessions.remove(&session).is_some() {
            let granted = self.locks.drop_session(session);
            self.rebind(granted, rules);
            self.ranges.drop_session(session);
            if rules >= 6 {
                self.drop_unlinked_of(session, now_ms, rules);
            }
        }
        Ok(Response::Ok)
    }

    /// Rules 6: removes the names in `/` that a mount whose keeper session
    /// was `session` kept its open-but-unlinked files under
    /// ([`shoal_core::path::unlinked_name`]: `.shoal-unlinked.S.N` naming
    /// inode N), as a remove of each would. A directory by such a name, or
    /// one naming another inode, is left alone (the mount hides files only,
    /// each under its own inode number).
    fn drop_unlinked_of(&mut self, session: u64, now_ms: u64, rules: u16) {
        let prefix = shoal_core::path::unlinked_session_prefix(session);
        let names: Vec<String> = self.inodes[&ROOT_INODE]
            .children
            .iter_from(&prefix)
            .take_while(|(name, _)| name.starts_with(&prefix))
            // Exactly `.shoal-unlinked.S.N` naming inode N, not a directory.
            .filter(|(name, id)| shoal_core::path::parse_unlinked_name(name) == Some((session, **id)))
            .filter(|(_, id)| self.inodes.get(id).is_some_and(|i| i.kind != Kind::Dir))
            .map(|(name, _)| name.to_string())
            .collect();
        for name in names {
            let removed = self.remove(&NormalPath::root().join(&name), false, now_ms, rules);
            debug_assert_eq!(removed, Ok(Response::Ok), "a file named in the root is removed");
        }
    }

    pub(super) fn acquire(
        &mut self,
        session: u64,
        path: &NormalPath,
        mode: Mode,
        wait: bool,
        rules: u16,
    ) -> Result<Response, FsError> {
        self.live_session(session)?;
        match self.locks.acquire(&path.to_string(), session, mode, wait) {
            Acquired::WouldBlock => Err(FsError::WouldBlock { path: path.to_string() }),
            Acquired::CannotUpgrade => Err(FsError::LockUpgrade { path: path.to_string() }),
            a => {
                if let Acquired::Granted(g) = a
                    && !self.fence_bindings.contains_key(&g.token)
                {
                    self.bind_fence(g.token, path, rules);
                }
                Ok(Response::Lock(a))
            }
        }
    }

    pub(super) fn release(&mut self, session: u64, path: &NormalPath, rules: u16) -> Result<Response, FsError> {
        self.live_session(session)?;
        match self.locks.release(&path.to_string(), session) {
            (true, granted) => {
                self.rebind(granted, rules);
                Ok(Response::Ok)
            }
            (false, _) => Err(FsError::NotLocked { path: path.to_string() }),
        }
    }

    /// Binds `token` to the file its lock guards now, if there is one.
    fn bind_fence(&mut self, token: u64, path: &NormalPath, rules: u16) {
        if let Some(id) = self.guarded_file(path, rules) {
            self.fence_bindings.insert(token, id);
        }
    }

    /// The file the lock named `path` guards now: under rules 5 and later,
    /// an inode lock's inode; else the file `path` names. `None` when that
    /// is no file.
    fn guarded_file(&self, path: &NormalPath, rules: u16) -> Option<u64> {
        let inode = match shoal_core::path::inode_of_lock_name(&path.to_string()) {
            Some(id) if rules >= 5 => self.inodes.get(&id),
            _ => self.lookup(path).ok(),
        };
        inode.filter(|i| i.kind == Kind::File).map(|i| i.id)
    }

    /// After holders left: forgets the bindings of tokens no longer held and
    /// binds the grants this made.
    fn rebind(&mut self, granted: Vec<(String, crate::locks::Grant)>, rules: u16) {
        let held: BTreeSet<u64> = self.locks.paths.values().flat_map(|l| l.holders.iter().map(|g| g.token)).collect();
        self.fence_bindings.retain(|token, _| held.contains(token));
        for (path, g) in granted {
            if let Ok(path) = NormalPath::parse(&path) {
                self.bind_fence(g.token, &path, rules);
            }
        }
    }

    /// Checks that `fence` may write file `inode`: its token holds the lock
    /// on its path, is bound to this file (or binds now, if its path names
    /// this file and it is bound to none), and is not older than the newest
    /// token that wrote the file. Binds an unbound token. A binding whose
    /// file is gone (removed, or replaced by a rename) counts as none, so a
    /// holder can write the file that now stands at its path. Under rules 0
    /// (see [`super::Proposal::rules`]) only the lock and the age count.
    pub(super) fn check_fence(&mut self, inode: u64, fence: &Fence, rules: u16) -> Result<(), FsError> {
        let fenced = || FsError::Fenced { path: fence.path.to_string(), token: fence.token };
        let newest = self.inode(inode)?.fence;
        if fence.token < newest || !self.locks.token_holds(&fence.path.to_string(), fence.token) {
            return Err(fenced());
        }
        if rules == 0 {
            return Ok(());
        }
        match self.fence_bindings.get(&fence.token).filter(|bound| self.inodes.contains_key(bound)) {
            Some(bound) if *bound == inode => Ok(()),
            Some(_) => Err(fenced()),
            None if self.guarded_file(&fence.path, rules) == Some(inode) => {
                self.fence_bindings.insert(fence.token, inode);
                Ok(())
            }
            None => Err(fenced()),
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
    use super::super::WriteCmd;
    use super::super::testing::{create, p, run};
    use super::*;

    #[test]
    fn sessions_hold_locks_and_fence_writes() {
        let mut st = FsState::default();
        let f = create(&mut st, "/f");
        let Response::Session { id: a } = run(&mut st, LockCmd::OpenSession { ttl_ms: 1000 }) else { panic!() };
        let Response::Session { id: b } = run(&mut st, LockCmd::OpenSession { ttl_ms: 1000 }) else { panic!() };
        let acquire = |session| LockCmd::Acquire { session, path: p("/f"), mode: Mode::Exclusive, wait: true };
        let Response::Lock(Acquired::Granted(ga)) = run(&mut st, acquire(a)) else { panic!() };
        assert!(matches!(run(&mut st, acquire(b)), Response::Lock(Acquired::Queued(_))));
        let fence = |token| Some(Fence { path: p("/f"), token });
        let commit = |token| WriteCmd::CommitWrite {
            inode: f.id,
            chunks: vec![],
            size: 1,
            truncate: false,
            fence: fence(token),
        };
        assert!(matches!(run(&mut st, commit(ga.token)), Response::Inode(_)));
        // A's session ends (expired): B is granted and A's token no longer writes.
        run(&mut st, LockCmd::EndSession { session: a });
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
        assert_eq!(run(&mut st, LockCmd::Release { session: b, path: p("/f") }), Response::Ok);
        let Response::Session { id: c } = run(&mut st, LockCmd::OpenSession { ttl_ms: 1000 }) else { panic!() };
        let try_lock = LockCmd::Acquire { session: c, path: p("/f"), mode: Mode::Shared, wait: false };
        assert!(matches!(run(&mut st, try_lock), Response::Lock(Acquired::Granted(_))));
    }

    /// Rules 6: a session's end removes the files its mount kept unlinked
    /// but open (their chunks become garbage), and nothing else: not another
    /// session's, not a directory by such a name, not a file with another name.
    #[test]
    fn a_sessions_end_frees_its_unlinked_files() {
        use super::super::{NamespaceCmd, Proposal, testing::with_servers};
        use shoal_core::path::unlinked_name;
        let mut st = with_servers(&[1, 2]);
        let session = |st: &mut FsState| {
            let Response::Session { id } = run(st, LockCmd::OpenSession { ttl_ms: 1000 }) else { panic!() };
            id
        };
        let (a, b) = (session(&mut st), session(&mut st));
        // A file with data, hidden for session a (its one name).
        let kept = create(&mut st, "/f");
        let Response::Chunk { chunk, .. } = super::super::testing::prepare(&mut st, kept.id, 0, &[1, 2]) else {
            panic!()
        };
        let commit = WriteCmd::CommitWrite {
            inode: kept.id,
            chunks: vec![(0, chunk.id, 1)],
            size: 10,
            truncate: false,
            fence: None,
        };
        assert!(matches!(run(&mut st, commit), Response::Inode(_)));
        let hidden = |session, inode| p(&format!("/{}", unlinked_name(session, inode)));
        run(&mut st, NamespaceCmd::Rename { src: p("/f"), dst: hidden(a, kept.id), fence: None });
        // One with a second name; one of session b; a directory by a's
        // prefix (names that rules 9 no longer make but older rules did).
        let linked = create(&mut st, "/g");
        let rules_8 = |cmd: NamespaceCmd| Proposal { rules: 8, ..Proposal::new(5, None, cmd) };
        st.apply(&rules_8(NamespaceCmd::Link { src: p("/g"), dst: hidden(a, linked.id) }));
        let other = create(&mut st, "/h");
        run(&mut st, NamespaceCmd::Rename { src: p("/h"), dst: hidden(b, other.id), fence: None });
        st.apply(&rules_8(NamespaceCmd::Mkdir { path: hidden(a, 999), parents: false }));
        assert!(st.lookup(&hidden(a, linked.id)).is_ok() && st.lookup(&hidden(a, 999)).is_ok());
        // A file by a's form of name that names another inode.
        let misnamed = create(&mut st, "/m");
        st.apply(&rules_8(NamespaceCmd::Rename { src: p("/m"), dst: hidden(a, misnamed.id + 1000), fence: None }));

        // Under rules 5 (an entry proposed before this change) nothing goes.
        let mut old = st.clone();
        old.apply(&Proposal { rules: 5, ..Proposal::new(7, None, LockCmd::EndSession { session: a }) });
        assert!(old.lookup(&hidden(a, kept.id)).is_ok() && old.garbage.is_empty(), "rules 5 keep the name");

        run(&mut st, LockCmd::EndSession { session: a });
        assert!(st.lookup(&hidden(a, kept.id)).is_err(), "a's hidden file is gone");
        assert!(!st.inodes.contains_key(&kept.id), "with its inode");
        assert!(st.garbage.contains_key(&chunk.id), "its chunk is garbage: {:?}", st.garbage);
        assert!(st.lookup(&hidden(a, linked.id)).is_err(), "the second name goes");
        assert_eq!(st.lookup(&p("/g")).unwrap().id, linked.id, "the file stays under its first");
        assert!(st.lookup(&hidden(b, other.id)).is_ok(), "b's is b's");
        assert!(st.lookup(&hidden(a, 999)).is_ok(), "a directory is left alone");
        assert_eq!(st.lookup(&hidden(a, misnamed.id + 1000)).unwrap().id, misnamed.id, "so is another inode's");
        // No file can be hidden under the ended session any more.
        let late = create(&mut st, "/late");
        let before = st.clone();
        assert_eq!(
            run(&mut st, NamespaceCmd::Rename { src: p("/late"), dst: hidden(a, late.id), fence: None }),
            Response::Err(FsError::SessionExpired { session: a })
        );
        assert_eq!(st, before, "a refused rename changes nothing");
        // Ending it again (it is gone) changes nothing.
        let before = st.clone();
        run(&mut st, LockCmd::EndSession { session: a });
        assert_eq!(st, before);
    }
}

/// Regression tests: a fence is bound to the file it guards (finding 4 of the
/// correctness review: a token for `/a` was accepted on `/b` and raised its fence).
#[cfg(test)]
mod binding_tests {
    use super::super::testing::{create, p, run};
    use super::super::{Fence, FsState, LockCmd, NamespaceCmd, Response, WriteCmd};
    use crate::locks::{Acquired, Mode};
    use shoal_core::FsError;

    fn lock(st: &mut FsState, path: &str) -> u64 {
        let Response::Session { id } = run(st, LockCmd::OpenSession { ttl_ms: 1000 }) else { panic!() };
        let acquire = LockCmd::Acquire { session: id, path: p(path), mode: Mode::Exclusive, wait: true };
        let Response::Lock(Acquired::Granted(g)) = run(st, acquire) else { panic!() };
        g.token
    }

    fn commit(inode: u64, path: &str, token: u64) -> WriteCmd {
        let fence = Some(Fence { path: p(path), token });
        WriteCmd::CommitWrite { inode, chunks: vec![], size: 1, truncate: false, fence }
    }

    #[test]
    fn a_token_for_one_file_does_not_write_another() {
        let mut st = FsState::default();
        create(&mut st, "/a");
        let b = create(&mut st, "/b");
        let ta = lock(&mut st, "/a");
        let tb = lock(&mut st, "/b");
        let before = st.clone();
        assert_eq!(
            run(&mut st, commit(b.id, "/a", ta)),
            Response::Err(FsError::Fenced { path: "/a".into(), token: ta })
        );
        assert_eq!(st, before, "a refused write raises no fence");
        assert!(matches!(run(&mut st, commit(b.id, "/b", tb)), Response::Inode(_)), "b's holder still writes");
    }

    #[test]
    fn the_binding_survives_a_rename_and_a_late_lock_binds_on_first_write() {
        let mut st = FsState::default();
        let a = create(&mut st, "/a");
        let ta = lock(&mut st, "/a");
        run(&mut st, NamespaceCmd::Rename { src: p("/a"), dst: p("/moved"), fence: None });
        assert!(matches!(run(&mut st, commit(a.id, "/a", ta)), Response::Inode(_)), "still the same file");
        // A lock taken before its file exists binds on the first write through its path.
        let tn = lock(&mut st, "/new");
        let n = create(&mut st, "/new");
        assert!(matches!(run(&mut st, commit(a.id, "/new", tn)), Response::Err(FsError::Fenced { .. })));
        assert!(matches!(run(&mut st, commit(n.id, "/new", tn)), Response::Inode(_)));
        run(&mut st, NamespaceCmd::Rename { src: p("/new"), dst: p("/new2"), fence: None });
        assert!(matches!(run(&mut st, commit(n.id, "/new", tn)), Response::Inode(_)), "bound by inode");
    }

    #[test]
    fn a_fenced_rename_replaces_a_file_and_moves_the_binding() {
        let mut st = FsState::default();
        let old = create(&mut st, "/t");
        let tmp = create(&mut st, "/.t.tmp");
        let t = lock(&mut st, "/t");
        let fence = |token| Some(Fence { path: p("/t"), token });
        // Not onto another path than the locked one.
        let wrong = NamespaceCmd::Rename { src: p("/.t.tmp"), dst: p("/u"), fence: fence(t) };
        assert!(matches!(run(&mut st, wrong), Response::Err(FsError::Fenced { .. })));
        let put = NamespaceCmd::Rename { src: p("/.t.tmp"), dst: p("/t"), fence: fence(t) };
        assert_eq!(run(&mut st, put), Response::Ok);
        assert!(!st.inodes.contains_key(&old.id));
        assert_eq!(st.fence_bindings[&t], tmp.id);
        assert!(matches!(run(&mut st, commit(tmp.id, "/t", t)), Response::Inode(_)));
        // A token that no longer holds the lock renames nothing.
        create(&mut st, "/.t.tmp2");
        run(&mut st, LockCmd::EndSession { session: 1 });
        let late = NamespaceCmd::Rename { src: p("/.t.tmp2"), dst: p("/t"), fence: fence(t) };
        assert!(matches!(run(&mut st, late), Response::Err(FsError::Fenced { .. })));
        assert!(st.fence_bindings.is_empty(), "an ended grant leaves no binding");
    }

    /// Review finding: a lock whose file was removed, or replaced by a plain
    /// rename, could no longer write the file now at its path.
    #[test]
    fn a_binding_to_a_file_that_is_gone_binds_again_through_the_path() {
        let mut st = FsState::default();
        create(&mut st, "/f");
        let t = lock(&mut st, "/f");
        run(&mut st, NamespaceCmd::Remove { path: p("/f"), recursive: false });
        let again = create(&mut st, "/f");
        assert!(matches!(run(&mut st, commit(again.id, "/f", t)), Response::Inode(_)), "rm then write");
        let g = create(&mut st, "/g");
        run(&mut st, NamespaceCmd::Rename { src: p("/g"), dst: p("/f"), fence: None });
        assert!(matches!(run(&mut st, commit(g.id, "/f", t)), Response::Inode(_)), "mv onto it then write");
    }

    /// Review finding (critical): a format-0 log replayed after an upgrade
    /// must apply as the old cluster applied it. Old `put`s wrote their
    /// temporary file under the target's fence; under rules 1 those writes
    /// would be refused (and every later chunk id shifted by one).
    #[test]
    fn format_0_entries_apply_under_the_rules_they_were_written_with() {
        use super::super::{
            Proposal,
            testing::{first_prepare, with_servers},
        };
        for (rules, applies) in [(0, true), (1, false)] {
            let mut st = with_servers(&[1, 2]);
            create(&mut st, "/t");
            let tmp = create(&mut st, "/.t.tmp");
            let t = lock(&mut st, "/t");
            let fence = Some(Fence { path: p("/t"), token: t });
            let prep = first_prepare(tmp.id, 0, &[1, 2], fence);
            let r = st.apply(&Proposal { rules, ..Proposal::new(1, None, prep) });
            assert_eq!(matches!(r, Response::Chunk { .. }), applies, "rules {rules}: {r:?}");
            assert_eq!(st.next_chunk_id, if applies { 2 } else { 1 });
        }
    }

    /// Rules 5: an inode lock (`/.shoal-inode/N`, the mount's flock and
    /// fcntl locks) fences inode N under every name, and only it; under
    /// rules 4 the same entries bind the name as a path (which names no file).
    #[test]
    fn an_inode_lock_fences_its_inode_under_rules_5_only() {
        use super::super::Proposal;
        for rules in [4, 5] {
            let mut st = FsState::default();
            let f = create(&mut st, "/f");
            let g = create(&mut st, "/g");
            let name = shoal_core::path::inode_lock_name(f.id);
            let at = |cmd: super::super::Command| Proposal { rules, ..Proposal::new(1, None, cmd) };
            let Response::Session { id } = st.apply(&at(LockCmd::OpenSession { ttl_ms: 1000 }.into())) else {
                panic!()
            };
            let acquire = LockCmd::Acquire { session: id, path: p(&name), mode: Mode::Exclusive, wait: false };
            let Response::Lock(Acquired::Granted(grant)) = st.apply(&at(acquire.into())) else { panic!() };
            assert_eq!(st.fence_bindings.get(&grant.token), (rules >= 5).then_some(&f.id), "rules {rules}");
            run(&mut st, NamespaceCmd::Rename { src: p("/f"), dst: p("/renamed"), fence: None });
            let write = |inode| {
                at(WriteCmd::CommitWrite {
                    inode,
                    chunks: vec![],
                    size: 1,
                    truncate: false,
                    fence: Some(Fence { path: p(&name), token: grant.token }),
                }
                .into())
            };
            let before = st.clone();
            assert!(matches!(st.apply(&write(g.id)), Response::Err(FsError::Fenced { .. })), "never another file");
            assert_eq!(st, before);
            let r = st.apply(&write(f.id));
            assert_eq!(matches!(r, Response::Inode(_)), rules >= 5, "rules {rules}: {r:?}");
        }
    }
}

/// Byte-range locks through the state machine: sessions, refusals, and a
/// session's end.
#[cfg(test)]
mod range_tests {
    use super::super::testing::{p, run};
    use super::super::{FsState, LockCmd, Response};
    use crate::locks::Mode;
    use crate::ranges::RangeAcquired;
    use shoal_core::FsError;

    fn session(st: &mut FsState) -> u64 {
        let Response::Session { id } = run(st, LockCmd::OpenSession { ttl_ms: 1000 }) else { panic!() };
        id
    }

    fn range(session: u64, mode: Mode, start: u64, end: u64, wait: bool) -> LockCmd {
        LockCmd::AcquireRange { session, path: p("/.shoal-inode/9"), mode, start, end, wait }
    }

    #[test]
    fn ranges_are_refused_clearly_and_go_with_their_session() {
        let mut st = FsState::default();
        let (a, b) = (session(&mut st), session(&mut st));
        assert!(matches!(
            run(&mut st, range(a, Mode::Exclusive, 0, 9, false)),
            Response::Range(RangeAcquired::Granted { .. })
        ));
        let before = st.clone();
        assert_eq!(
            run(&mut st, range(b, Mode::Shared, 9, 20, false)),
            Response::Err(FsError::WouldBlock { path: "/.shoal-inode/9".into() })
        );
        assert!(matches!(
            run(&mut st, range(b, Mode::Shared, 5, 4, true)),
            Response::Err(FsError::InvalidArgument { .. })
        ));
        assert_eq!(
            run(&mut st, range(99, Mode::Shared, 0, 0, true)),
            Response::Err(FsError::SessionExpired { session: 99 })
        );
        assert_eq!(st.ranges, before.ranges, "refusals change nothing");
        let Response::Range(RangeAcquired::Queued(w)) = run(&mut st, range(b, Mode::Shared, 9, 20, true)) else {
            panic!()
        };
        st.check_invariants().unwrap();
        // The holder's session ends: the waiter holds, and nothing of `a` is left.
        run(&mut st, LockCmd::EndSession { session: a });
        assert!(!st.ranges.queued("/.shoal-inode/9", b, w.ticket));
        let holds = &st.ranges.paths["/.shoal-inode/9"].holds;
        assert_eq!(holds.iter().map(|h| (h.session, h.start, h.end)).collect::<Vec<_>>(), vec![(b, 9, 20)]);
        st.check_invariants().unwrap();
        // Unlocking and cancelling are commands of a live session too.
        let release = LockCmd::ReleaseRange { session: b, path: p("/.shoal-inode/9"), start: 0, end: u64::MAX };
        assert_eq!(run(&mut st, release), Response::Ok);
        assert!(st.ranges.paths.is_empty());
        let cancel = LockCmd::CancelRange { session: a, path: p("/.shoal-inode/9"), ticket: 0 };
        assert_eq!(run(&mut st, cancel), Response::Err(FsError::SessionExpired { session: a }));
    }
}
