//! Replica-list changes of the state machine: re-replication, drops of extra
//! replicas, chunk reports, corruption, decommissioning and replication factors.
//!
//! The leader decides (it alone knows liveness and what servers hold); these
//! methods of [`FsState`] apply its decisions deterministically, and refuse
//! any that the state has outdated since the leader planned it. Who decides
//! what: `health` plans copies and drops, `reconcile` reads chunk reports,
//! `repair` carries the plans out.
//!
//! # Invariants kept here
//! - A copy is listed only if the chunk's committed and latest versions are
//!   still the ones it was planned for, and the target has no delete pending
//!   for the chunk; a refused copy becomes garbage on its target.
//! - A copy made while a write was in flight (latest version above the
//!   committed one) is `lagging`: the commit of that write drops it, since it
//!   missed that write.
//! - Dropping extra replicas never leaves a chunk without a replica; only a
//!   chunk report that confirms a replica missing or stale may (it serves
//!   nothing anyway).
//! - A corrupt replica is dropped while another replica not known corrupt
//!   remains; the chunk stays in `corrupt` until it has its factor of other
//!   replicas again.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use shoal_core::{FsError, NormalPath};

use crate::fsm::{ChunkMeta, ChunkPlace, FsState, Kind, Response};

/// Healing's commands: the leader's replica-list decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaCmd {
    /// Re-replication (or a move) copied the chunk at `place`, at committed
    /// version `copied`, to `target`: list it. Applies only while the chunk's
    /// committed version is still `copied` and its latest version still
    /// `version` (the state the copy was planned from); otherwise the copy is
    /// garbage and the answer is [`Response::Conflict`]. If the replica list
    /// is still `expect`, the replicas in `drop` leave it (dead or draining
    /// replicas this copy replaces, or a move's source).
    AddReplica { place: ChunkPlace, copied: u64, version: u64, target: u64, expect: Vec<u64>, drop: Vec<u64> },
    /// Drops extra replicas of a chunk (their copies become garbage); never
    /// its last one. Only if the chunk is still at `expect_version`, fully
    /// committed (no write in flight that the dropped replicas may carry).
    DropReplicas {
        place: ChunkPlace,
        nodes: Vec<u64>,
        #[serde(default)]
        expect_version: u64,
    },
    /// What a chunk report of server `node` showed: copies it holds that are
    /// not listed there (`garbage`; `None` place: no file references the
    /// chunk), and listed replicas it confirmed missing or stale (`lost`).
    Reconcile { node: u64, garbage: Vec<(u64, Option<ChunkPlace>)>, lost: Vec<ChunkPlace> },
    /// Server `node`'s replicas of these chunks failed their checksums. Each
    /// is dropped if another replica remains, and recorded as corrupt until
    /// the chunk is back at its factor.
    ReportCorrupt { node: u64, chunks: Vec<ChunkPlace> },
    /// Sets a file's replication factor, or a directory's and everything below it.
    SetReplication { path: NormalPath, replication: u32 },
}

impl FsState {
    /// Applies a replica-list command. A plan the state outdated answers
    /// [`Response::Conflict`].
    pub(crate) fn apply_replicas(&mut self, cmd: &ReplicaCmd, rules: u16) -> Result<Response, FsError> {
        match cmd {
            ReplicaCmd::AddReplica { place, copied, target, expect, drop, .. } => {
                Ok(self.add_replica(*place, *copied, *target, expect, drop))
            }
            ReplicaCmd::DropReplicas { place, nodes, expect_version } => {
                let unchanged = self
                    .chunk_at(*place)
                    .is_some_and(|c| c.version == *expect_version && c.committed_version == *expect_version);
                if !unchanged {
                    return Ok(Response::Conflict);
                }
                self.drop_replicas(*place, nodes);
                Ok(Response::Ok)
            }
            ReplicaCmd::Reconcile { node, garbage, lost } => {
                self.reconcile(*node, garbage, lost, rules);
                Ok(Response::Ok)
            }
            ReplicaCmd::ReportCorrupt { node, chunks } => {
                for place in chunks {
                    self.report_corrupt(*node, *place);
                }
                Ok(Response::Ok)
            }
            ReplicaCmd::SetReplication { path, replication } => self.set_replication(path, *replication),
        }
    }

    /// The chunk at `place`, if it is still there.
    pub fn chunk_at(&self, place: ChunkPlace) -> Option<&ChunkMeta> {
        self.inodes.get(&place.inode)?.chunks.get(&place.index).filter(|c| c.id == place.chunk)
    }

    /// The chunk at `place` and its file's replication factor.
    fn chunk_at_mut(&mut self, place: ChunkPlace) -> Option<(&mut ChunkMeta, u32)> {
        let f = self.inodes.get_mut(&place.inode)?;
        let replication = f.replication;
        let c = f.chunks.get_mut(&place.index).filter(|c| c.id == place.chunk)?;
        Some((c, replication))
    }

    /// Every chunk in the namespace, by id.
    pub fn chunk_places(&self) -> HashMap<u64, ChunkPlace> {
        self.every_chunk_place().map(|p| (p.chunk, p)).collect()
    }

    /// Where each chunk of `wanted` is in the namespace (those that are in
    /// it), in one pass and without a map of every chunk.
    pub fn chunk_places_of(&self, wanted: &std::collections::HashSet<u64>) -> Vec<ChunkPlace> {
        if wanted.is_empty() {
            return Vec::new();
        }
        self.every_chunk_place().filter(|p| wanted.contains(&p.chunk)).collect()
    }

    /// The place of every chunk in the namespace, file by file.
    fn every_chunk_place(&self) -> impl Iterator<Item = ChunkPlace> + '_ {
        self.inodes
            .values()
            .filter(|i| i.kind == Kind::File)
            .flat_map(|f| f.chunks.iter().map(move |(index, c)| ChunkPlace { inode: f.id, index: *index, chunk: c.id }))
    }

    fn delete_pending(&self, chunk: u64, node: u64) -> bool {
        self.garbage.get(&chunk).is_some_and(|h| h.contains(&node))
    }

    pub(crate) fn add_replica(
        &mut self,
        place: ChunkPlace,
        copied: u64,
        target: u64,
        expect: &[u64],
        drop: &[u64],
    ) -> Response {
        let pending = self.delete_pending(place.chunk, target);
        let known = self.nodes.contains_key(&target);
        let Some((c, _)) = self.chunk_at_mut(place) else {
            // The chunk left the namespace meanwhile.
            self.discard_chunk(place.chunk, &[target]);
            return Response::Conflict;
        };
        if c.replicas.contains(&target) {
            return Response::Conflict;
        }
        // The copy holds the committed version it copied. If that is still the
        // committed one, it is good (or, while a write is in flight, lagging);
        // if a write was committed since, it is garbage. (The command's
        // `version`, seen when the copy was planned, is only for the log.)
        if c.committed_version != copied || pending || !known {
            self.discard_chunk(place.chunk, &[target]);
            return Response::Conflict;
        }
        let as_planned = c.replicas == expect;
        c.replicas.push(target);
        if c.version > copied {
            c.lagging.push(target);
        }
        let mut dropped = Vec::new();
        // A lagging copy (a write is in flight) replaces nothing: if that write
        // commits, the copy leaves the list, and the replicas it would have
        // replaced are the ones holding the write.
        if as_planned && c.version == copied {
            dropped = drop.iter().copied().filter(|d| *d != target && c.replicas.contains(d)).collect();
            c.replicas.retain(|r| !dropped.contains(r));
            c.lagging.retain(|r| !dropped.contains(r));
        }
        self.discard_chunk(place.chunk, &dropped);
        self.settle_corrupt(place);
        Response::Ok
    }

    pub(crate) fn drop_replicas(&mut self, place: ChunkPlace, nodes: &[u64]) {
        let Some((c, _)) = self.chunk_at_mut(place) else { return };
        let dropped: Vec<u64> = c.replicas.iter().copied().filter(|r| nodes.contains(r)).collect();
        if dropped.len() == c.replicas.len() {
            return;
        }
        c.replicas.retain(|r| !dropped.contains(r));
        c.lagging.retain(|r| !dropped.contains(r));
        self.discard_chunk(place.chunk, &dropped);
        self.settle_corrupt(place);
    }

    pub(crate) fn reconcile(
        &mut self,
        node: u64,
        garbage: &[(u64, Option<ChunkPlace>)],
        lost: &[ChunkPlace],
        rules: u16,
    ) {
        for (chunk, place) in garbage {
            // (`discard_chunk` ignores ids not allocated yet.)
            let unwanted = match place {
                // A place naming another chunk says nothing of this one.
                Some(p) if rules >= 2 => {
                    p.chunk == *chunk && self.chunk_at(*p).is_none_or(|c| !c.replicas.contains(&node))
                }
                Some(p) => self.chunk_at(*p).is_none_or(|c| !c.replicas.contains(&node)),
                // Unreferenced chunks stay unreferenced (ids are never
                // reused), but for reserved ids not used yet: a file may yet
                // be created with one (`fsm::reserved`).
                None => !self.reserved_unused(*chunk),
            };
            if unwanted {
                self.discard_chunk(*chunk, &[node]);
            }
        }
        for place in lost {
            let Some((c, _)) = self.chunk_at_mut(*place) else { continue };
            if c.replicas.contains(&node) {
                c.replicas.retain(|r| *r != node);
                c.lagging.retain(|r| *r != node);
                self.discard_chunk(place.chunk, &[node]);
            }
        }
    }

    pub(crate) fn report_corrupt(&mut self, node: u64, place: ChunkPlace) {
        if !self.chunk_at(place).is_some_and(|c| c.replicas.contains(&node)) {
            return;
        }
        // Only recorded: the replica is no longer good, so repair copies the
        // chunk from a good one, and `settle_corrupt` drops the bad copy once
        // the factor of good replicas is back. Dropping it now could throw away
        // the only readable copy (one bad block, the other holder dead).
        self.corrupt.entry(place.chunk).or_default().insert(node);
    }

    /// Forgets a chunk's corruption once it has its factor of good replicas
    /// again; corrupt replicas kept as a last resort are dropped then.
    fn settle_corrupt(&mut self, place: ChunkPlace) {
        let Some(bad) = self.corrupt.get(&place.chunk).cloned() else { return };
        let Some((c, replication)) = self.chunk_at_mut(place) else {
            self.corrupt.remove(&place.chunk);
            return;
        };
        let good = c.replicas.iter().filter(|r| !bad.contains(r)).count();
        if good < replication as usize {
            return;
        }
        let dropped: Vec<u64> = c.replicas.iter().copied().filter(|r| bad.contains(r)).collect();
        c.replicas.retain(|r| !bad.contains(r));
        c.lagging.retain(|r| !bad.contains(r));
        self.discard_chunk(place.chunk, &dropped);
        self.corrupt.remove(&place.chunk);
    }

    pub(crate) fn set_replication(&mut self, path: &NormalPath, replication: u32) -> Result<Response, FsError> {
        if replication == 0 {
            return Err(FsError::InvalidArgument { reason: "the replication factor must be positive".into() });
        }
        let mut todo = vec![self.lookup(path)?.id];
        let mut settle = Vec::new();
        while let Some(id) = todo.pop() {
            let inode = self.inodes.get_mut(&id).expect("listed inodes exist");
            inode.replication = replication;
            todo.extend(inode.children.values());
            settle.extend(inode.chunks.iter().map(|(index, c)| ChunkPlace { inode: id, index: *index, chunk: c.id }));
        }
        for place in settle {
            self.settle_corrupt(place);
        }
        Ok(Response::Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::testing::{p, run};
    use crate::fsm::{NamespaceCmd, NodeCmd, NodeRecord, WriteCmd};

    /// A state with servers 1..=4 and file /f whose chunk 0 is on `replicas`,
    /// committed at version 1 (and prepared again when `in_flight`).
    fn state(replicas: &[u64], in_flight: bool) -> (FsState, ChunkPlace) {
        let mut st = FsState::default();
        for id in 1..=4 {
            st.nodes.insert(id, NodeRecord { id, addr: format!("h:{id}"), draining: false });
        }
        let Response::Inode(f) =
            run(&mut st, NamespaceCmd::Create { path: p("/f"), replication: 2, chunk_size: 100, open_existing: false })
        else {
            panic!()
        };
        let prep = |st: &mut FsState, expect_id, expect_version| {
            run(
                st,
                WriteCmd::PrepareWrite {
                    inode: f.id,
                    index: 0,
                    expect_id,
                    expect_version,
                    replicas: replicas.to_vec(),
                    fence: None,
                },
            )
        };
        let Response::Chunk { chunk, .. } = prep(&mut st, None, 0) else { panic!() };
        let place = ChunkPlace { inode: f.id, index: 0, chunk: chunk.id };
        assert!(matches!(run(&mut st, commit(place, 1)), Response::Inode(_)));
        if in_flight {
            prep(&mut st, Some(chunk.id), 1);
        }
        (st, place)
    }

    /// Commits chunk 0's `version` with size 50.
    fn commit(place: ChunkPlace, version: u64) -> WriteCmd {
        WriteCmd::CommitWrite {
            inode: place.inode,
            chunks: vec![(0, place.chunk, version)],
            size: 50,
            truncate: false,
            fence: None,
        }
    }

    fn add(place: ChunkPlace, copied: u64, version: u64, target: u64, expect: &[u64], drop: &[u64]) -> ReplicaCmd {
        ReplicaCmd::AddReplica { place, copied, version, target, expect: expect.to_vec(), drop: drop.to_vec() }
    }

    #[test]
    fn the_places_of_some_chunks_agree_with_the_map_of_all() {
        let (st, place) = state(&[1, 2], false);
        let all = st.chunk_places();
        assert_eq!(all.get(&place.chunk), Some(&place));
        let wanted: std::collections::HashSet<u64> = [place.chunk, place.chunk + 1000].into();
        assert_eq!(st.chunk_places_of(&wanted), vec![place], "an unknown id has no place");
        assert!(st.chunk_places_of(&Default::default()).is_empty());
    }

    #[test]
    fn a_copy_is_listed_only_if_the_chunk_did_not_change() {
        let (mut st, place) = state(&[1, 2], false);
        // A copy of a version that is no longer the committed one is garbage.
        let stale = add(place, 0, 1, 3, &[1, 2], &[]);
        assert_eq!(run(&mut st, stale), Response::Conflict);
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 2]);
        assert_eq!(st.garbage_for(3, 10), vec![place.chunk]);
        // A target with a delete pending is refused too.
        assert_eq!(run(&mut st, add(place, 1, 1, 3, &[1, 2], &[])), Response::Conflict);
        run(&mut st, NodeCmd::ForgetGarbage { node: 3, chunks: vec![place.chunk] });
        // As planned: listed, and the dead replica it replaces is dropped.
        assert_eq!(run(&mut st, add(place, 1, 1, 3, &[1, 2], &[2])), Response::Ok);
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 3]);
        assert_eq!(st.garbage_for(2, 10), vec![place.chunk]);
        // The list changed since planning: the copy is added, nothing dropped.
        assert_eq!(run(&mut st, add(place, 1, 1, 4, &[1, 2], &[1])), Response::Ok);
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 3, 4]);
    }

    /// Regression (review): a lagging copy used to drop the replicas it was
    /// planned to replace, which hold the write in flight; its commit then
    /// removed the copy too, leaving the acknowledged write on no listed replica.
    #[test]
    fn a_lagging_copy_replaces_nothing() {
        let (mut st, place) = state(&[1, 2], true);
        assert_eq!(run(&mut st, add(place, 1, 2, 3, &[1, 2], &[1, 2])), Response::Ok);
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 2, 3], "the writers' replicas stay");
        assert!(st.garbage_for(1, 10).is_empty() && st.garbage_for(2, 10).is_empty());
        assert!(matches!(run(&mut st, commit(place, 2)), Response::Inode(_)));
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 2], "the committed write is on its chain");
    }

    /// Regression (review): a plan made before a replica was dropped must not
    /// list it again while its copy is being deleted.
    #[test]
    fn a_stale_plan_cannot_relist_a_dropped_replica() {
        let (mut st, place) = state(&[1, 2], false);
        run(&mut st, ReplicaCmd::DropReplicas { place, nodes: vec![2], expect_version: 1 });
        let prep = WriteCmd::PrepareWrite {
            inode: place.inode,
            index: 0,
            expect_id: Some(place.chunk),
            expect_version: 1,
            replicas: vec![1, 2],
            fence: None,
        };
        assert_eq!(run(&mut st, prep), Response::Conflict);
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1]);
    }

    /// Regression (review): a drop planned before a write was prepared could
    /// take away a replica of that write's chain.
    #[test]
    fn a_drop_does_not_apply_once_a_write_is_in_flight() {
        let (mut st, place) = state(&[1, 2], true);
        let drop = ReplicaCmd::DropReplicas { place, nodes: vec![2], expect_version: 1 };
        assert_eq!(run(&mut st, drop), Response::Conflict);
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 2]);
    }

    #[test]
    fn a_copy_made_during_a_write_is_dropped_by_its_commit() {
        let (mut st, place) = state(&[1, 2], true);
        assert_eq!(run(&mut st, add(place, 1, 2, 3, &[1, 2], &[])), Response::Ok);
        assert_eq!(st.chunk_at(place).unwrap().lagging, vec![3]);
        run(&mut st, commit(place, 2));
        let c = st.chunk_at(place).unwrap();
        assert_eq!((c.replicas.clone(), c.lagging.is_empty()), (vec![1, 2], true));
        assert_eq!(st.garbage_for(3, 10), vec![place.chunk], "the copy missed version 2");
        // Had the next write prepared first, the copy would have joined its chain.
        let (mut st, place) = state(&[1, 2], true);
        run(&mut st, add(place, 1, 2, 3, &[1, 2], &[]));
        let prep = WriteCmd::PrepareWrite {
            inode: place.inode,
            index: 0,
            expect_id: Some(place.chunk),
            expect_version: 2,
            replicas: vec![1, 2, 3],
            fence: None,
        };
        run(&mut st, prep);
        assert!(st.chunk_at(place).unwrap().lagging.is_empty());
    }

    #[test]
    fn drops_never_empty_a_chunk_but_lost_replicas_may() {
        let (mut st, place) = state(&[1, 2], false);
        run(&mut st, ReplicaCmd::DropReplicas { place, nodes: vec![1, 2], expect_version: 1 });
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 2]);
        run(&mut st, ReplicaCmd::DropReplicas { place, nodes: vec![2], expect_version: 1 });
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1]);
        run(&mut st, ReplicaCmd::Reconcile { node: 1, garbage: vec![], lost: vec![place] });
        assert!(st.chunk_at(place).unwrap().replicas.is_empty());
        assert_eq!(st.garbage_for(1, 10), vec![place.chunk]);
    }

    #[test]
    fn reports_mark_only_unlisted_copies_as_garbage() {
        let (mut st, place) = state(&[1, 2], false);
        let never_allocated = st.next_chunk_id + 5;
        let garbage = vec![(place.chunk, Some(place)), (77, None), (never_allocated, None)];
        run(&mut st, ReplicaCmd::Reconcile { node: 1, garbage: garbage.clone(), lost: vec![] });
        assert_eq!(st.garbage_for(1, 10), Vec::<u64>::new(), "server 1 is listed; 77 is not below next_chunk_id");
        // Chunk 0 was allocated, and is gone from the place it had.
        let gone = ChunkPlace { chunk: 0, ..place };
        run(
            &mut st,
            ReplicaCmd::Reconcile { node: 3, garbage: vec![(place.chunk, Some(place)), (0, Some(gone))], lost: vec![] },
        );
        assert_eq!(st.garbage_for(3, 10), vec![0, place.chunk]);
    }

    /// Found by the `fsm_apply` fuzz target: a report (or a copy) naming an
    /// id not yet allocated put the id on the garbage list (and broke an
    /// invariant).
    #[test]
    fn a_report_of_an_id_not_allocated_yet_is_not_garbage() {
        let (mut st, place) = state(&[1, 2], false);
        let future = st.next_chunk_id + 3;
        let elsewhere = ChunkPlace { inode: 0, index: 0, chunk: 2 };
        let report = vec![(future, Some(elsewhere)), (future + 1, Some(ChunkPlace { chunk: future + 1, ..place }))];
        run(&mut st, ReplicaCmd::Reconcile { node: 3, garbage: report.clone(), lost: vec![] });
        assert!(st.garbage_for(3, 10).is_empty());
        // Nor is a copy made for a place of a chunk not allocated yet.
        let ghost = ChunkPlace { chunk: future + 10, ..place };
        assert_eq!(run(&mut st, add(ghost, 0, 0, 3, &[], &[])), Response::Conflict);
        assert!(st.garbage_for(3, 10).is_empty());
        // A place that names another chunk than the id is not taken either.
        let mismatched = vec![(0, Some(place))];
        run(&mut st, ReplicaCmd::Reconcile { node: 3, garbage: mismatched, lost: vec![] });
        assert!(st.garbage_for(3, 10).is_empty());
        st.check_invariants().unwrap();
    }

    #[test]
    fn corrupt_replicas_stay_listed_until_good_copies_replace_them() {
        let (mut st, place) = state(&[1, 2], false);
        run(&mut st, ReplicaCmd::ReportCorrupt { node: 1, chunks: vec![place] });
        // Only recorded: the other holder may be dead, and one bad block does
        // not make the rest of this copy worthless.
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 2]);
        assert!(st.garbage_for(1, 10).is_empty());
        run(&mut st, ReplicaCmd::ReportCorrupt { node: 2, chunks: vec![place] });
        assert_eq!(st.corrupt[&place.chunk].len(), 2);
        // One good copy does not settle it below the factor...
        assert_eq!(run(&mut st, add(place, 1, 1, 3, &[1, 2], &[])), Response::Ok);
        assert!(st.corrupt.contains_key(&place.chunk));
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 2, 3]);
        // ...two good ones do, and the corrupt copies go.
        assert_eq!(run(&mut st, add(place, 1, 1, 4, &[1, 2, 3], &[])), Response::Ok);
        assert!(st.corrupt.is_empty());
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![3, 4]);
        assert_eq!((st.garbage_for(1, 10), st.garbage_for(2, 10)), (vec![place.chunk], vec![place.chunk]));
    }

    #[test]
    fn setrep_reaches_everything_below_a_directory() {
        let mut st = FsState::default();
        run(&mut st, NamespaceCmd::Mkdir { path: p("/d/e"), parents: true });
        run(&mut st, NamespaceCmd::Create { path: p("/d/e/f"), replication: 2, chunk_size: 100, open_existing: false });
        assert_eq!(run(&mut st, ReplicaCmd::SetReplication { path: p("/d"), replication: 3 }), Response::Ok);
        assert_eq!(st.lookup(&p("/d/e/f")).unwrap().replication, 3);
        assert_eq!(st.inherited_replication(&p("/d/e/g")), 3);
        let before = st.clone();
        assert!(matches!(run(&mut st, ReplicaCmd::SetReplication { path: p("/x"), replication: 3 }), Response::Err(_)));
        assert!(matches!(run(&mut st, ReplicaCmd::SetReplication { path: p("/d"), replication: 0 }), Response::Err(_)));
        assert_eq!(st, before);
    }
}
