//! Reconciling a chunk server's report of what it holds with the chunk map.
//!
//! A pure function: the state, one report and the suspicions still open for
//! that server in; garbage to mark, lost replicas to drop and new suspicions
//! out. The leader proposes the result as one `Reconcile` command.
//!
//! # Rules
//! - A copy of a chunk no file references is garbage, unless its id is
//!   reserved and unused (a file written before it is created may be about
//!   to name it: see `fsm::reserved`) or not allocated yet (this state may
//!   be behind the entry that reserved it).
//! - A copy on a server the chunk does not list is garbage, unless a copy of
//!   it to that server is in flight (re-replication lists it afterwards).
//! - A listed replica that is missing from the report, or older than the
//!   committed version, is lost and leaves the list; but only once a second
//!   report confirms it (see below). Chunks never committed are skipped: a
//!   new chunk is listed before its first write reaches the servers.
//! - A listed replica at the committed version or newer is fine, even if
//!   older than the latest prepared version: that write is in flight.
//!
//! # Why suspicions wait for a second report
//! A report is a snapshot taken before meta reads it, and meta's state moves
//! on in between: a write may commit a version, or a copy may be listed,
//! after the server built its report. So what looks lost in one report
//! becomes a [`Suspect`] tagged with a fresh token; the heartbeat reply asks
//! the server for a report built after it, carrying that token. Every listed
//! replica held its chunk's committed version durably before meta listed it
//! or committed that version, so a report built after the suspicion that
//! still lacks the chunk (or still shows a version below the committed one
//! recorded with the suspicion) is proof. Suspicions not confirmed by the
//! report that carries their token are forgotten; a fresh report raises them
//! again if they still hold.

use std::collections::{HashMap, HashSet};

use crate::fsm::{ChunkPlace, FsState, Kind};

/// Why a listed replica may be lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspicion {
    /// The report did not list the chunk.
    Missing,
    /// The report showed a version below `committed`, the committed version then.
    Stale { committed: u64 },
}

/// A listed replica that one report showed lost, awaiting confirmation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspect {
    pub place: ChunkPlace,
    pub why: Suspicion,
    /// The token of the report that can confirm it.
    pub token: u64,
}

/// One chunk report of server `node`.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    pub node: u64,
    /// (chunk id, version) of every replica the server holds.
    pub replicas: &'a [(u64, u64)],
    /// The last report token the server had received when it built the report.
    pub token: u64,
}

/// What a report means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Copies to delete: (chunk id, where the chunk lives, if anywhere).
    pub garbage: Vec<(u64, Option<ChunkPlace>)>,
    /// Listed replicas confirmed lost.
    pub lost: Vec<ChunkPlace>,
    /// New suspicions, all with the token the next report must carry.
    pub suspects: Vec<Suspect>,
}

/// Reconciles `report` with the state. `places` maps each reported chunk
/// that is in the namespace to its place (a map of every chunk will do),
/// `pending` holds the suspicions open for this server, `copying_in` the
/// chunks being copied to it, and `fresh_token` tags the new suspicions.
pub fn reconcile(
    fs: &FsState,
    places: &HashMap<u64, ChunkPlace>,
    report: Report,
    pending: &[Suspect],
    copying_in: &HashSet<u64>,
    fresh_token: u64,
) -> Reconciled {
    let node = report.node;
    let confirmable = |place: ChunkPlace| {
        pending.iter().find(|s| report.token != 0 && s.token == report.token && s.place == place).map(|s| s.why)
    };
    let suspect = |place, why| Suspect { place, why, token: fresh_token };
    let mut out = Reconciled::default();
    let mut new_suspects = Vec::new();
    let mut held: HashSet<u64> = HashSet::with_capacity(report.replicas.len());
    for (id, version) in report.replicas {
        held.insert(*id);
        let Some(place) = places.get(id).copied() else {
            // Once neither holds, no later entry can make a file name it.
            if *id < fs.next_chunk_id && !fs.reserved_unused(*id) {
                out.garbage.push((*id, None));
            }
            continue;
        };
        let c = fs.chunk_at(place).expect("places come from this state");
        if !c.replicas.contains(&node) {
            if !copying_in.contains(id) {
                out.garbage.push((*id, Some(place)));
            }
        } else if *version < c.committed_version {
            match confirmable(place) {
                Some(Suspicion::Stale { committed }) if *version < committed => out.lost.push(place),
                _ => new_suspects.push(suspect(place, Suspicion::Stale { committed: c.committed_version })),
            }
        }
    }
    for f in fs.inodes.values().filter(|i| i.kind == Kind::File) {
        for (index, c) in &f.chunks {
            if c.committed_version == 0 || held.contains(&c.id) || !c.replicas.contains(&node) {
                continue;
            }
            let place = ChunkPlace { inode: f.id, index: *index, chunk: c.id };
            match confirmable(place) {
                Some(Suspicion::Missing) => out.lost.push(place),
                _ => new_suspects.push(suspect(place, Suspicion::Missing)),
            }
        }
    }
    out.suspects = new_suspects;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::testing::{first_prepare, p, run, with_servers};
    use crate::fsm::{NamespaceCmd, Response, WriteCmd};

    /// /f with chunk 0 on servers 1 and 2, committed at version `committed`
    /// (prepared once more when `in_flight`), and a never-committed chunk 1 on 1 and 2.
    fn state(committed: u64, in_flight: bool) -> (FsState, ChunkPlace) {
        let mut st = with_servers(&[1, 2, 3, 4]);
        let Response::Inode(f) =
            run(&mut st, NamespaceCmd::Create { path: p("/f"), replication: 2, chunk_size: 100, open_existing: false })
        else {
            panic!()
        };
        let mut id = None;
        for v in 0..committed + u64::from(in_flight) {
            let prep = WriteCmd::PrepareWrite {
                inode: f.id,
                index: 0,
                expect_id: id,
                expect_version: v,
                replicas: vec![1, 2],
                fence: None,
            };
            let Response::Chunk { chunk, .. } = run(&mut st, prep) else { panic!() };
            id = Some(chunk.id);
            if v < committed {
                let commit = WriteCmd::CommitWrite {
                    inode: f.id,
                    chunks: vec![(0, chunk.id, v + 1)],
                    size: 50,
                    truncate: false,
                    fence: None,
                };
                run(&mut st, commit);
            }
        }
        run(&mut st, first_prepare(f.id, 1, &[1, 2], None));
        (st, ChunkPlace { inode: f.id, index: 0, chunk: id.unwrap() })
    }

    fn check(st: &FsState, node: u64, replicas: &[(u64, u64)], token: u64, pending: &[Suspect]) -> Reconciled {
        let places = st.chunk_places();
        reconcile(st, &places, Report { node, replicas, token }, pending, &HashSet::new(), 9)
    }

    #[test]
    fn a_current_replica_is_fine_even_behind_a_write_in_flight() {
        let (st, place) = state(2, true);
        assert_eq!(check(&st, 1, &[(place.chunk, 2)], 0, &[]), Reconciled::default());
        assert_eq!(check(&st, 1, &[(place.chunk, 3)], 0, &[]), Reconciled::default());
    }

    #[test]
    fn unreferenced_and_unlisted_copies_are_garbage_unless_being_copied_in() {
        let (mut st, place) = state(1, false);
        // An id allocated once and named by no file: a run pushed out unused.
        let unnamed = st.next_chunk_id;
        for _ in 0..3 {
            run(&mut st, WriteCmd::ReserveChunkIds { count: 1 });
        }
        let places = st.chunk_places();
        let report = [(place.chunk, 1), (unnamed, 4)];
        let r = reconcile(&st, &places, Report { node: 3, replicas: &report, token: 0 }, &[], &HashSet::new(), 9);
        assert_eq!(r.garbage, vec![(place.chunk, Some(place)), (unnamed, None)]);
        let copying = HashSet::from([place.chunk]);
        let r = reconcile(&st, &places, Report { node: 3, replicas: &report, token: 0 }, &[], &copying, 9);
        assert_eq!(r.garbage, vec![(unnamed, None)]);
    }

    #[test]
    fn reserved_unused_and_unallocated_ids_are_not_garbage_yet() {
        let (mut st, _) = state(1, false);
        let Response::Reserved { start, .. } = run(&mut st, WriteCmd::ReserveChunkIds { count: 4 }) else { panic!() };
        let future = st.next_chunk_id;
        let r = check(&st, 3, &[(start, 1), (future, 1)], 0, &[]);
        assert!(r.garbage.is_empty(), "{r:?}");
        let create = NamespaceCmd::Create { path: p("/w"), replication: 2, chunk_size: 100, open_existing: false };
        let Response::Inode(w) =
            run(&mut st, WriteCmd::CreateWritten { create, chunk: start, replicas: vec![1, 2], size: 3 })
        else {
            panic!()
        };
        run(&mut st, NamespaceCmd::Remove { path: p("/w"), recursive: false });
        assert!(st.inodes.get(&w.id).is_none());
        // Used, then removed: garbage for good.
        let r = check(&st, 3, &[(start, 1), (start + 1, 1)], 0, &[]);
        assert_eq!(r.garbage, vec![(start, None)]);
        // Its run pushed out: garbage too.
        run(&mut st, WriteCmd::ReserveChunkIds { count: 1 });
        run(&mut st, WriteCmd::ReserveChunkIds { count: 1 });
        let r = check(&st, 3, &[(start + 1, 1)], 0, &[]);
        assert_eq!(r.garbage, vec![(start + 1, None)]);
    }

    #[test]
    fn a_missing_replica_is_dropped_only_when_a_later_report_confirms() {
        let (st, place) = state(1, false);
        let first = check(&st, 1, &[], 5, &[]);
        assert!(first.lost.is_empty(), "the never-committed chunk 1 is not suspected");
        assert_eq!(first.suspects, vec![Suspect { place, why: Suspicion::Missing, token: 9 }]);
        // A report built before the suspicion (an older token) proves nothing.
        let stale_report = check(&st, 1, &[], 5, &first.suspects);
        assert!(stale_report.lost.is_empty());
        // The report that carries the token, still without the chunk: lost.
        assert_eq!(check(&st, 1, &[], 9, &first.suspects).lost, vec![place]);
        // With the chunk: fine, nothing left open.
        assert_eq!(check(&st, 1, &[(place.chunk, 1)], 9, &first.suspects), Reconciled::default());
    }

    #[test]
    fn a_stale_replica_is_confirmed_against_the_version_committed_when_suspected() {
        let (st, place) = state(3, false);
        let first = check(&st, 2, &[(place.chunk, 2)], 0, &[]);
        assert_eq!(first.suspects, vec![Suspect { place, why: Suspicion::Stale { committed: 3 }, token: 9 }]);
        assert_eq!(check(&st, 2, &[(place.chunk, 2)], 9, &first.suspects).lost, vec![place]);
        // It caught up with the version committed at the time: not lost, even
        // if a later commit got ahead of it again (that is a new suspicion).
        let older = [Suspect { place, why: Suspicion::Stale { committed: 2 }, token: 9 }];
        let r = check(&st, 2, &[(place.chunk, 2)], 9, &older);
        assert!(r.lost.is_empty());
        assert_eq!(r.suspects, first.suspects);
    }
}
