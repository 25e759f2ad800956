//! Chunk ids reserved for files written before meta lists them: one Raft
//! entry per small file.
//!
//! A leader reserves a run of chunk ids ([`WriteCmd::ReserveChunkIds`]) and
//! hands them out, one per new file, without a Raft round: the writer
//! streams the file's bytes to the chain as version 1 of that chunk, and
//! then one entry ([`WriteCmd::CreateWritten`]) makes the file, lists the
//! chunk and commits its size together. A writer that dies before that
//! entry leaves a copy no file names, which chunk reports collect once its
//! id is no longer reserved and unused.
//!
//! # Invariants kept here
//! - At most [`RESERVATIONS_KEPT`] runs are reserved, each of at most
//!   [`RESERVE_IDS_MAX`] ids, all below `next_chunk_id`, disjoint, oldest
//!   first. A new run pushes the oldest out, and the leader expires a run
//!   after [`RUN_LIFETIME_MS`]; a run that is gone never comes back, and
//!   nothing can be created with its ids any more.
//! - An id is used at most once: [`WriteCmd::CreateWritten`] marks it, and
//!   refuses one already used or not reserved, one pending deletion
//!   anywhere, and a chain with a draining server. So once an id is not
//!   "reserved and unused", no later entry can make a file name it: a copy
//!   of it that no file names is garbage for good (see `reconcile`).

use serde::{Deserialize, Serialize};
use shoal_core::FsError;

use super::{ChunkMeta, FsState, Kind, NamespaceCmd, Response};

/// Runs of reserved ids kept at once: the newest, and the one before it,
/// whose last ids may still be in flight.
pub const RESERVATIONS_KEPT: usize = 2;
/// The most ids one reservation takes.
pub const RESERVE_IDS_MAX: u64 = 1024;
/// How long a run stays reserved, in leader time: then the leader expires
/// it ([`WriteCmd::ExpireReservations`]), so what writers that died left on
/// the servers is collected even on a cluster that makes no new files. Well
/// past a write capability's life (5 minutes and 1 of skew, by default), so
/// a writer still at work rarely has to start again.
pub const RUN_LIFETIME_MS: u64 = 15 * 60 * 1000;

/// One run of reserved chunk ids, `[start, start + count)`, and which of
/// them a file was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub start: u64,
    pub count: u64,
    /// One bit per id, set once a file was created with it.
    pub used: Vec<u64>,
    /// Leader time of the reservation.
    pub reserved_ms: u64,
}

impl Reservation {
    fn slot(&self, id: u64) -> Option<(usize, u64)> {
        let at = id.checked_sub(self.start).filter(|at| *at < self.count)?;
        Some(((at / 64) as usize, 1u64 << (at % 64)))
    }

    fn is_used(&self, id: u64) -> Option<bool> {
        self.slot(id).map(|(word, bit)| self.used.get(word).is_some_and(|w| w & bit != 0))
    }

    /// Ids of this run used so far.
    pub fn used_count(&self) -> u64 {
        self.used.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

impl FsState {
    /// Reserves `count` fresh chunk ids (1 to [`RESERVE_IDS_MAX`]); the
    /// oldest run goes when more than [`RESERVATIONS_KEPT`] would be kept.
    pub(super) fn reserve_chunk_ids(&mut self, count: u64, now_ms: u64) -> Result<Response, FsError> {
        if !(1..=RESERVE_IDS_MAX).contains(&count) {
            return Err(FsError::InvalidArgument {
                reason: format!("a reservation takes 1 to {RESERVE_IDS_MAX} chunk ids, not {count}"),
            });
        }
        let start = self.next_chunk_id;
        self.next_chunk_id += count;
        let used = vec![0; count.div_ceil(64) as usize];
        self.reserved.push(Reservation { start, count, used, reserved_ms: now_ms });
        while self.reserved.len() > RESERVATIONS_KEPT {
            self.reserved.remove(0);
        }
        Ok(Response::Reserved { start, count })
    }

    /// Drops the runs reserved before leader time `before_ms`.
    pub(super) fn expire_reservations(&mut self, before_ms: u64) -> Response {
        self.reserved.retain(|r| r.reserved_ms >= before_ms);
        Response::Ok
    }

    /// The `before_ms` of an expiry the leader should propose at leader time
    /// `now_ms`, if a run has outlived [`RUN_LIFETIME_MS`].
    pub fn reservations_to_expire(&self, now_ms: u64) -> Option<u64> {
        let before_ms = now_ms.checked_sub(RUN_LIFETIME_MS)?;
        self.reserved.iter().any(|r| r.reserved_ms < before_ms).then_some(before_ms)
    }

    /// Whether `id` is reserved and no file was created with it yet: a copy
    /// of it may belong to a file about to be created.
    pub fn reserved_unused(&self, id: u64) -> bool {
        self.reserved.iter().any(|r| r.is_used(id) == Some(false))
    }

    /// Whether the run starting at `start` is reserved and was reserved less
    /// than `window_ms` before leader time `now_ms`: a leader hands out its
    /// ids only then, so an id handed out is not expired while in use.
    pub fn run_handing_out(&self, start: u64, now_ms: u64, window_ms: u64) -> bool {
        self.reserved.iter().any(|r| r.start == start && now_ms < r.reserved_ms.saturating_add(window_ms))
    }

    /// See [`WriteCmd::CreateWritten`](super::WriteCmd::CreateWritten).
    /// Everything that could refuse is checked before the file is made, so
    /// a refusal changes nothing.
    pub(super) fn create_written(
        &mut self,
        create: &NamespaceCmd,
        chunk: u64,
        replicas: &[u64],
        size: u64,
        now_ms: u64,
        rules: u16,
    ) -> Result<Response, FsError> {
        let chunk_size = match create {
            NamespaceCmd::Create { open_existing: false, chunk_size, .. } => *chunk_size,
            NamespaceCmd::MakeNode { kind: Kind::File, exclusive: true, chunk_size, .. } => *chunk_size,
            _ => {
                return Err(FsError::InvalidArgument {
                    reason: "a file created with its data must be a new file".into(),
                });
            }
        };
        if size == 0 || size > chunk_size {
            return Err(FsError::InvalidArgument {
                reason: format!("a file created with its data holds 1 to {chunk_size} bytes (one chunk), not {size}"),
            });
        }
        self.check_replicas(replicas, rules)?;
        // Used, or its run is gone; or a server of the chain is draining
        // (its decommission may end before this lists the chunk there) or
        // was told to delete a copy of this id: the writer takes a fresh id
        // and a fresh chain, and writes again.
        let draining = replicas.iter().any(|r| self.nodes.get(r).is_some_and(|n| n.draining));
        if !self.reserved_unused(chunk) || draining || self.garbage.contains_key(&chunk) {
            return Err(FsError::ChunkChanged { inode: 0, index: 0 });
        }
        let inode = self.apply_namespace(create, now_ms, rules)?.into_inode()?;
        let f = self.file_mut(inode.id)?;
        f.chunks.insert(
            0,
            ChunkMeta { id: chunk, version: 1, committed_version: 1, replicas: replicas.to_vec(), lagging: Vec::new() },
        );
        f.size = size;
        let view = f.clone();
        let run = self.reserved.iter_mut().find(|r| r.is_used(chunk) == Some(false)).expect("checked above");
        let (word, bit) = run.slot(chunk).expect("in this run");
        run.used[word] |= bit;
        Ok(Response::Inode(view))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::WriteCmd;
    use crate::fsm::testing::{p, run, with_servers};

    fn new_file(path: &str) -> NamespaceCmd {
        NamespaceCmd::Create { path: p(path), replication: 2, chunk_size: 100, open_existing: false }
    }

    fn written(path: &str, chunk: u64, size: u64) -> WriteCmd {
        WriteCmd::CreateWritten { create: new_file(path), chunk, replicas: vec![1, 2], size }
    }

    fn reserve(st: &mut FsState, count: u64) -> u64 {
        match run(st, WriteCmd::ReserveChunkIds { count }) {
            Response::Reserved { start, count: got } if got == count => start,
            other => panic!("reserve {count}: {other:?}"),
        }
    }

    #[test]
    fn a_file_is_made_with_its_chunk_committed_in_one_entry() {
        let mut st = with_servers(&[1, 2, 3]);
        let start = reserve(&mut st, 10);
        assert_eq!(st.next_chunk_id, start + 10);
        let Response::Inode(f) = run(&mut st, written("/f", start + 3, 42)) else { panic!() };
        assert_eq!(f.size, 42);
        let c = &st.inodes[&f.id].chunks[&0];
        assert_eq!((c.id, c.version, c.committed_version, c.replicas.clone()), (start + 3, 1, 1, vec![1, 2]));
        assert!(!st.reserved_unused(start + 3));
        assert!(st.reserved_unused(start + 2));
        assert_eq!(st.reserved[0].used_count(), 1);
    }

    #[test]
    fn refusals_change_nothing() {
        let mut st = with_servers(&[1, 2, 3]);
        let start = reserve(&mut st, 4);
        run(&mut st, written("/taken", start, 1));
        let before = st.clone();
        let refused = [
            written("/g", start, 1),         // id used
            written("/g", start + 4, 1),     // not reserved
            written("/g", 0, 1),             // never an id
            written("/taken", start + 1, 1), // name exists
            written("/g", start + 1, 0),     // empty
            written("/g", start + 1, 101),   // past one chunk
            written("/no/g", start + 1, 1),  // no parent
            WriteCmd::CreateWritten { create: new_file("/g"), chunk: start + 1, replicas: vec![1, 1], size: 1 },
            WriteCmd::CreateWritten { create: new_file("/g"), chunk: start + 1, replicas: vec![9], size: 1 },
            WriteCmd::CreateWritten {
                create: NamespaceCmd::Create { path: p("/g"), replication: 2, chunk_size: 100, open_existing: true },
                chunk: start + 1,
                replicas: vec![1, 2],
                size: 1,
            },
            WriteCmd::ReserveChunkIds { count: 0 },
            WriteCmd::ReserveChunkIds { count: RESERVE_IDS_MAX + 1 },
        ];
        for cmd in refused {
            assert!(matches!(run(&mut st, cmd.clone()), Response::Err(_)), "{cmd:?}");
            assert_eq!(st, before, "{cmd:?} changed the state");
        }
        assert!(matches!(run(&mut st, written("/g", start, 1)), Response::Err(FsError::ChunkChanged { .. })));
    }

    #[test]
    fn a_draining_server_or_a_pending_delete_sends_the_writer_to_a_fresh_id() {
        use crate::fsm::{NodeCmd, ReplicaCmd};
        let mut st = with_servers(&[1, 2, 3]);
        let start = reserve(&mut st, 4);
        run(&mut st, NodeCmd::SetDraining { node: 2, draining: true });
        // A report of a copy of a reserved, unused id does not make it garbage.
        run(&mut st, ReplicaCmd::Reconcile { node: 1, garbage: vec![(start + 1, None)], lost: vec![] });
        assert!(st.garbage.is_empty());
        st.garbage.get_or_insert_default(start + 1).insert(3);
        let before = st.clone();
        for cmd in [written("/f", start, 1), written("/f", start + 1, 1)] {
            assert!(matches!(run(&mut st, cmd), Response::Err(FsError::ChunkChanged { .. })));
            assert_eq!(st, before);
        }
        let cmd = WriteCmd::CreateWritten { create: new_file("/f"), chunk: start, replicas: vec![1, 3], size: 1 };
        assert!(matches!(run(&mut st, cmd), Response::Inode(_)));
    }

    #[test]
    fn an_expired_run_is_dropped_and_its_ids_refused() {
        let mut st = with_servers(&[1, 2, 3]);
        let old = reserve(&mut st, 2); // at leader time 1
        assert_eq!(st.reservations_to_expire(RUN_LIFETIME_MS), None, "not yet");
        let at = RUN_LIFETIME_MS + 2;
        assert_eq!(st.reservations_to_expire(at), Some(2));
        let newer = match st.apply(&crate::fsm::Proposal::new(at, None, WriteCmd::ReserveChunkIds { count: 2 })) {
            Response::Reserved { start, .. } => start,
            other => panic!("{other:?}"),
        };
        assert_eq!(run(&mut st, WriteCmd::ExpireReservations { before_ms: 2 }), Response::Ok);
        assert_eq!(st.reserved.len(), 1);
        assert!(!st.reserved_unused(old) && st.reserved_unused(newer));
        assert!(matches!(run(&mut st, written("/f", old, 1)), Response::Err(FsError::ChunkChanged { .. })));
        assert_eq!(st.reservations_to_expire(at), None);
        // Handed out only within its window.
        assert!(st.run_handing_out(newer, at + 9, 10) && !st.run_handing_out(newer, at + 10, 10));
        assert!(!st.run_handing_out(old, at, u64::MAX));
    }

    #[test]
    fn an_old_run_is_pushed_out_and_its_ids_refused() {
        let mut st = with_servers(&[1, 2, 3]);
        let first = reserve(&mut st, 2);
        let second = reserve(&mut st, 2);
        assert!(st.reserved_unused(first) && st.reserved_unused(second));
        let third = reserve(&mut st, RESERVE_IDS_MAX);
        assert_eq!(st.reserved.len(), RESERVATIONS_KEPT);
        assert!(!st.reserved_unused(first) && st.reserved.iter().all(|r| r.slot(first).is_none()));
        assert!(matches!(run(&mut st, written("/f", first, 1)), Response::Err(FsError::ChunkChanged { .. })));
        assert!(matches!(run(&mut st, written("/f", third + RESERVE_IDS_MAX - 1, 1)), Response::Inode(_)));
        assert!(st.reserved_unused(second));
    }
}
