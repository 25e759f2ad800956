//! The chunk map: which chunks a file has, their versions and replicas, and
//! the write protocol that changes them (prepare, then commit).
//!
//! # Invariants kept here
//! - A chunk's replicas are distinct chunk-server ids.
//! - `committed_version <= version` for every chunk; a replica whose version
//!   is older than `committed_version` missed an acknowledged write.
//! - Only the latest prepared version of a chunk can be committed: once a
//!   chunk is prepared again, the versions before it that were not committed
//!   never will be, so chunk servers may roll them back.
//! - A chunk id is never reused: `next_chunk_id` only grows. A chunk never
//!   moves: its (inode, index) is fixed for its life ([`ChunkPlace`]).
//! - Chunks dropped from the namespace (removed files, truncation, dropped
//!   replicas) are listed in `garbage` until their server confirms the
//!   delete. A server never holds a listed replica of a chunk that is garbage
//!   on it.
//! - Every listed replica holds `committed_version`; all but the `lagging`
//!   ones also took part in the write of `version` (see [`replicas`]).
//! - A fenced write applies only while its token holds its lock and is not
//!   older than the newest token seen for the file.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use shoal_core::FsError;

use super::{Fence, FsState, Inode, Kind, Response};

/// One replicated chunk of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkMeta {
    pub id: u64,
    /// Version granted to the latest write (bumped by every prepare).
    pub version: u64,
    /// Newest version whose write was acknowledged (committed).
    pub committed_version: u64,
    /// Chunk-server ids, in pipeline order.
    pub replicas: Vec<u64>,
    /// Listed replicas that re-replication added while a write was in flight:
    /// they hold `committed_version` but not `version`, so the commit of
    /// `version` drops them, and the next prepare (whose chain they join) clears them.
    #[serde(default)]
    pub lagging: Vec<u64>,
}

/// Where a chunk lives: file inode, chunk index, and the chunk's id (chunks
/// never move, so a place that no longer holds this id means the chunk is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkPlace {
    pub inode: u64,
    pub index: u64,
    pub chunk: u64,
}

/// The write protocol's commands: prepare a chunk version, then commit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteCmd {
    /// Starts a write on chunk `index`: allocates it (when `expect_id` is None) or
    /// bumps its version, and sets its replicas. `expect_*` is the state the
    /// leader planned from; if the chunk changed since, nothing happens and the
    /// answer is [`Response::Conflict`].
    PrepareWrite {
        inode: u64,
        index: u64,
        expect_id: Option<u64>,
        expect_version: u64,
        replicas: Vec<u64>,
        fence: Option<Fence>,
    },
    /// Makes written chunk versions visible and sets the size.
    CommitWrite { inode: u64, chunks: Vec<(u64, u64, u64)>, size: u64, truncate: bool, fence: Option<Fence> },
    /// Creates a new file and prepares its chunk 0 on `replicas`, in one
    /// entry: what a create followed by a first PrepareWrite would do, for a
    /// writer about to write (one Raft round fewer per small file). `create`
    /// must make a new file (a Create not opening an existing one, or an
    /// exclusive MakeNode of a file); anything else is refused. Answers
    /// [`Response::Created`].
    CreatePrepared { create: super::NamespaceCmd, replicas: Vec<u64> },
    /// Format 7: reserves `count` fresh chunk ids for files written before
    /// they are created (see [`super::reserved`]). Answers
    /// [`Response::Reserved`].
    ReserveChunkIds { count: u64 },
    /// Format 7: creates a new file whose bytes `[0, size)` were already
    /// written, as version 1 of reserved chunk `chunk`, on `replicas`: makes
    /// the file, lists the chunk as its chunk 0 and commits it, in one
    /// entry. `create` must make a new file, as for `CreatePrepared`; a
    /// chunk id not reserved, or already used, is refused as
    /// `ChunkChanged` (the writer writes again under a fresh one). Answers
    /// [`Response::Inode`].
    CreateWritten { create: super::NamespaceCmd, chunk: u64, replicas: Vec<u64>, size: u64 },
    /// Format 7: drops the reserved runs of chunk ids reserved before
    /// leader time `before_ms` (the leader proposes it once a run outlived
    /// `reserved::RUN_LIFETIME_MS`). Answers [`Response::Ok`].
    ExpireReservations { before_ms: u64 },
}

impl FsState {
    /// Applies a write command at leader time `now_ms`.
    pub(super) fn apply_write(&mut self, cmd: &WriteCmd, now_ms: u64, rules: u16) -> Result<Response, FsError> {
        match cmd {
            WriteCmd::PrepareWrite { inode, index, expect_id, expect_version, replicas, fence } => {
                self.fenced(*inode, fence.as_ref(), rules, |s| {
                    s.prepare_write(*inode, *index, *expect_id, *expect_version, replicas, rules)
                })
            }
            WriteCmd::CommitWrite { inode, chunks, size, truncate, fence } => {
                self.fenced(*inode, fence.as_ref(), rules, |s| {
                    s.commit_write(*inode, chunks, *size, *truncate, now_ms, rules)
                })
            }
            WriteCmd::CreatePrepared { create, replicas } => self.create_prepared(create, replicas, now_ms, rules),
            WriteCmd::ReserveChunkIds { count } => self.reserve_chunk_ids(*count, now_ms),
            WriteCmd::ExpireReservations { before_ms } => Ok(self.expire_reservations(*before_ms)),
            WriteCmd::CreateWritten { create, chunk, replicas, size } => {
                self.create_written(create, *chunk, replicas, *size, now_ms, rules)
            }
        }
    }

    /// See [`WriteCmd::CreatePrepared`]. Everything that could refuse the
    /// prepare is checked before the file is made, so a refusal changes nothing.
    fn create_prepared(
        &mut self,
        create: &super::NamespaceCmd,
        replicas: &[u64],
        now_ms: u64,
        rules: u16,
    ) -> Result<Response, FsError> {
        use super::NamespaceCmd;
        let new_file = match create {
            NamespaceCmd::Create { open_existing, .. } => !open_existing,
            NamespaceCmd::MakeNode { kind, exclusive, .. } => *kind == Kind::File && *exclusive,
            _ => false,
        };
        if !new_file {
            return Err(FsError::InvalidArgument {
                reason: "a create with its first chunk prepared must make a new file".into(),
            });
        }
        self.check_replicas(replicas, rules)?;
        let inode = self.apply_namespace(create, now_ms, rules)?.into_inode()?;
        let prepared = self.prepare_write(inode.id, 0, None, 0, replicas, rules)?;
        let Response::Chunk { chunk, chunk_size } = prepared else {
            unreachable!("a new file's chunk 0 is free and its replicas were checked: {prepared:?}")
        };
        let inode = self.inode(inode.id)?.clone();
        Ok(Response::Created { inode, chunk, chunk_size })
    }

    /// Refuses a replica list that is empty, repeats a server, or (rules 1
    /// and later) names one not registered.
    pub(super) fn check_replicas(&self, replicas: &[u64], rules: u16) -> Result<(), FsError> {
        if replicas.is_empty() || replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return Err(FsError::InvalidArgument {
                reason: format!("replicas must be distinct and non-empty: {replicas:?}"),
            });
        }
        if let Some(r) = replicas.iter().find(|r| rules >= 1 && !self.nodes.contains_key(r)) {
            return Err(FsError::InvalidArgument { reason: format!("chunk server {r} is not registered") });
        }
        Ok(())
    }

    /// Runs a write unless its fence is stale: its token no longer holds its
    /// lock, or is older than one already seen for the file. A write that
    /// applies records its token.
    pub(super) fn fenced(
        &mut self,
        inode: u64,
        fence: Option<&Fence>,
        rules: u16,
        write: impl FnOnce(&mut Self) -> Result<Response, FsError>,
    ) -> Result<Response, FsError> {
        let Some(f) = fence else { return write(self) };
        self.file_mut(inode)?;
        // A refused write changes nothing: bind only once the write applies.
        let bindings = self.fence_bindings.clone();
        self.check_fence(inode, f, rules)?;
        let r = match write(self) {
            Ok(r) => r,
            Err(e) => {
                self.fence_bindings = bindings;
                return Err(e);
            }
        };
        if r == Response::Conflict {
            self.fence_bindings = bindings;
        }
        if r != Response::Conflict {
            self.file_mut(inode)?.fence = f.token;
        }
        Ok(r)
    }

    pub(crate) fn discard_chunk(&mut self, chunk_id: u64, holders: &[u64]) {
        // An id not allocated yet is held by nobody in this cluster (a
        // server's files from another one, a bogus plan): listing it as
        // garbage would delete the real chunk's replicas once it is
        // allocated. (Under every rules number: such an entry broke the
        // garbage invariant, so no log that kept it holds one.)
        if chunk_id >= self.next_chunk_id {
            return;
        }
        if !holders.is_empty() {
            self.garbage.get_or_insert_default(chunk_id).extend(holders.iter().copied());
        }
    }

    pub(crate) fn file_mut(&mut self, inode: u64) -> Result<&mut Inode, FsError> {
        let f = self.inodes.get_mut(&inode).ok_or(FsError::StaleInode { inode })?;
        if f.kind != Kind::File {
            return Err(FsError::IsADirectory { path: format!("inode {inode}") });
        }
        Ok(f)
    }

    pub(super) fn prepare_write(
        &mut self,
        inode: u64,
        index: u64,
        expect_id: Option<u64>,
        expect_version: u64,
        replicas: &[u64],
        rules: u16,
    ) -> Result<Response, FsError> {
        self.check_replicas(replicas, rules)?;
        let next_id = self.next_chunk_id;
        let f = self.file_mut(inode)?;
        let chunk_size = f.chunk_size;
        let current = f.chunks.get(&index).map(|c| (c.id, c.version, c.committed_version, c.replicas.clone()));
        if current.as_ref().map(|c| c.0) != expect_id || current.as_ref().map_or(0, |c| c.1) != expect_version {
            return Ok(Response::Conflict);
        }
        // A plan made before a replica was dropped (by repair, a report or a
        // move) must not list it again: it may be deleting its copy. Once a
        // write was acknowledged, a chain only ever keeps listed replicas.
        if let Some((id, _, committed, listed)) = &current {
            let stale_plan = replicas.iter().any(|r| self.garbage.get(id).is_some_and(|h| h.contains(r)))
                || (*committed > 0 && !replicas.iter().all(|r| listed.contains(r)));
            if stale_plan {
                return Ok(Response::Conflict);
            }
        }
        let f = self.file_mut(inode)?;
        let dropped: Vec<u64>;
        let chunk = match f.chunks.get_mut(&index) {
            Some(c) => {
                dropped = c.replicas.iter().copied().filter(|r| !replicas.contains(r)).collect();
                c.version += 1;
                c.replicas = replicas.to_vec();
                // Every replica in the chain takes this version's write.
                c.lagging.clear();
                c.clone()
            }
            None => {
                dropped = Vec::new();
                let c = ChunkMeta {
                    id: next_id,
                    version: 1,
                    committed_version: 0,
                    replicas: replicas.to_vec(),
                    lagging: Vec::new(),
                };
                f.chunks.insert(index, c.clone());
                c
            }
        };
        if expect_id.is_none() {
            self.next_chunk_id += 1;
        }
        // A replica dropped from the chain holds a copy that is now stale.
        self.discard_chunk(chunk.id, &dropped);
        Ok(Response::Chunk { chunk, chunk_size })
    }

    pub(super) fn commit_write(
        &mut self,
        inode: u64,
        chunks: &[(u64, u64, u64)],
        size: u64,
        truncate: bool,
        mtime_ms: u64,
        rules: u16,
    ) -> Result<Response, FsError> {
        let f = self.file_mut(inode)?;
        // Rules 10: a shrink to within a chunk that holds committed bytes
        // must cut that chunk: list a version of it (only `File::set_len`
        // truncates, and it lists only the version that cut). A writer may
        // have committed bytes there past the new end since the truncating
        // client fetched its map: kept, they would come back at a later
        // growth. Refused as a lost race, the client looks again and cuts.
        let cut = size / f.chunk_size.max(1);
        if rules >= 10
            && truncate
            && size < f.size
            && !size.is_multiple_of(f.chunk_size.max(1))
            && f.chunks.get(&cut).is_some_and(|c| c.committed_version > 0)
            && !chunks.iter().any(|(index, _, _)| *index == cut)
        {
            return Err(FsError::ChunkChanged { inode, index: cut });
        }
        let new_size = if truncate { size } else { f.size.max(size) };
        let end_chunk = shoal_core::layout::chunk_count(new_size, f.chunk_size);
        if let Some((index, _, _)) = chunks.iter().find(|(index, _, _)| rules >= 1 && *index >= end_chunk) {
            return Err(FsError::InvalidArgument {
                reason: format!("chunk {index} lies past the end of the file this commit sets ({new_size} bytes)"),
            });
        }
        for (index, id, version) in chunks {
            match f.chunks.get(index) {
                // At least one listed replica must hold the write (not all lagging).
                Some(c)
                    if c.id == *id && c.version == *version && c.replicas.iter().any(|r| !c.lagging.contains(r)) => {}
                _ => {
                    return Err(FsError::ChunkChanged { inode, index: *index });
                }
            }
        }
        // Replicas that missed the committed version's write leave the list.
        let mut missed: Vec<(u64, Vec<u64>)> = Vec::new();
        for (index, _, version) in chunks {
            let c = f.chunks.get_mut(index).expect("checked above");
            c.committed_version = c.committed_version.max(*version);
            if !c.lagging.is_empty() {
                let lagging = std::mem::take(&mut c.lagging);
                c.replicas.retain(|r| !lagging.contains(r));
                missed.push((c.id, lagging));
            }
        }
        let mut dropped = Vec::new();
        if truncate {
            f.size = size;
            let keep = shoal_core::layout::chunk_count(size, f.chunk_size);
            dropped = f.chunks.split_off(&keep).into_values().collect();
        } else {
            f.size = f.size.max(size);
        }
        f.touch_modified(mtime_ms);
        let view = f.clone();
        for (id, lagging) in missed {
            self.discard_chunk(id, &lagging);
        }
        for c in dropped {
            self.discard_chunk(c.id, &c.replicas);
            self.corrupt.remove(&c.id);
        }
        Ok(Response::Inode(view))
    }

    /// Those of `chunks` whose replica list names `node` (a linear scan).
    pub fn chunks_listed_on(&self, node: u64, chunks: &[u64]) -> Vec<u64> {
        if chunks.is_empty() {
            return Vec::new();
        }
        let wanted: BTreeSet<u64> = chunks.iter().copied().collect();
        self.inodes
            .values()
            .flat_map(|i| i.chunks.values())
            .filter(|c| wanted.contains(&c.id) && c.replicas.contains(&node))
            .map(|c| c.id)
            .collect()
    }

    /// Garbage chunks that server `node` should delete, at most `max`.
    pub fn garbage_for(&self, node: u64, max: usize) -> Vec<u64> {
        self.garbage.iter().filter(|(_, holders)| holders.contains(&node)).map(|(c, _)| c).take(max).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{create, p, prepare, run, with_servers};
    use super::super::{NamespaceCmd, NodeCmd};
    use super::*;

    #[test]
    fn write_lifecycle_and_garbage() {
        let mut st = with_servers(&[10, 11, 12]);
        let f = create(&mut st, "/f");
        let Response::Chunk { chunk, .. } = prepare(&mut st, f.id, 0, &[10, 11]) else { panic!() };
        assert_eq!((chunk.version, chunk.committed_version), (1, 0));
        // A stale plan is refused.
        let stale = run(
            &mut st,
            WriteCmd::PrepareWrite {
                inode: f.id,
                index: 0,
                expect_id: None,
                expect_version: 0,
                replicas: vec![12],
                fence: None,
            },
        );
        assert_eq!(stale, Response::Conflict);
        let Response::Inode(after) = run(
            &mut st,
            WriteCmd::CommitWrite {
                inode: f.id,
                chunks: vec![(0, chunk.id, 1)],
                size: 150,
                truncate: false,
                fence: None,
            },
        ) else {
            panic!()
        };
        assert_eq!(after.size, 150);
        assert_eq!(after.chunks[&0].committed_version, 1);
        // Dropping replica 11 makes its copy garbage.
        let Response::Chunk { chunk: c2, .. } = prepare(&mut st, f.id, 0, &[10]) else { panic!() };
        assert_eq!(c2.version, 2);
        assert_eq!(st.garbage_for(11, 10), vec![chunk.id]);
        run(&mut st, NodeCmd::ForgetGarbage { node: 11, chunks: vec![chunk.id] });
        assert!(st.garbage.is_empty());
        // Truncate drops whole chunks past the end; remove drops the rest.
        prepare(&mut st, f.id, 1, &[10, 11]);
        let c1 = st.inodes[&f.id].chunks[&1].id;
        let cut = WriteCmd::CommitWrite { inode: f.id, chunks: vec![], size: 100, truncate: true, fence: None };
        assert!(matches!(run(&mut st, cut), Response::Inode(_)));
        assert_eq!(st.garbage_for(11, 10), vec![c1]);
        run(&mut st, NamespaceCmd::Remove { path: p("/f"), recursive: false });
        assert_eq!(st.garbage_for(10, 10), vec![chunk.id, c1]);
    }

    /// Rules 10: a truncating commit that shrinks a file to within a chunk
    /// with committed bytes, without the cut of that chunk, lost a race
    /// with a writer there and is refused (changing nothing); entries of
    /// older rules apply as they did.
    #[test]
    fn a_shrink_within_a_written_chunk_must_cut_it() {
        use super::super::Proposal;
        let mut st = with_servers(&[10, 11, 12]);
        let f = create(&mut st, "/f"); // 100-byte chunks
        let commit = |chunks: Vec<(u64, u64, u64)>, size: u64, truncate: bool| WriteCmd::CommitWrite {
            inode: f.id,
            chunks,
            size,
            truncate,
            fence: None,
        };
        let Response::Chunk { chunk, .. } = prepare(&mut st, f.id, 1, &[10, 11]) else { panic!() };
        assert!(matches!(run(&mut st, commit(vec![(1, chunk.id, 1)], 180, false)), Response::Inode(_)));
        // A writer's view from before chunk 1 held bytes: no cut listed.
        let before = st.clone();
        let refused = run(&mut st, commit(vec![], 150, true));
        assert_eq!(refused, Response::Err(FsError::ChunkChanged { inode: f.id, index: 1 }));
        assert!(st == before, "a refusal changes nothing");
        let older = Proposal { rules: 9, ..Proposal::new(1, None, commit(vec![], 150, true)) };
        assert!(matches!(before.clone().apply(&older), Response::Inode(_)), "rules 9 took it");
        // Not a shrink, a shrink to a chunk's start, or into a hole: no cut needed.
        for (size, truncate) in [(180, true), (190, true), (100, true), (50, true)] {
            let mut st = before.clone();
            assert!(matches!(run(&mut st, commit(vec![], size, truncate)), Response::Inode(_)), "{size}");
        }
        // A chunk only prepared holds no committed bytes: no cut needed.
        let mut only_prepared = with_servers(&[10, 11, 12]);
        let g = create(&mut only_prepared, "/g");
        prepare(&mut only_prepared, g.id, 0, &[10, 11]);
        let grow = WriteCmd::CommitWrite { inode: g.id, chunks: vec![], size: 90, truncate: false, fence: None };
        assert!(matches!(run(&mut only_prepared, grow), Response::Inode(_)));
        let shrink = WriteCmd::CommitWrite { inode: g.id, chunks: vec![], size: 40, truncate: true, fence: None };
        assert!(matches!(run(&mut only_prepared, shrink), Response::Inode(_)));
        // With the cut listed, it applies.
        let Response::Chunk { chunk: cut, .. } = prepare(&mut st, f.id, 1, &[10, 11]) else { panic!() };
        let Response::Inode(after) = run(&mut st, commit(vec![(1, cut.id, cut.version)], 150, true)) else { panic!() };
        assert_eq!((after.size, after.chunks[&1].committed_version), (150, cut.version));
    }

    fn new_file(path: &str) -> NamespaceCmd {
        NamespaceCmd::Create { path: p(path), replication: 2, chunk_size: 100, open_existing: false }
    }

    #[test]
    fn create_prepared_is_a_create_then_a_first_prepare() {
        let mut apart = with_servers(&[10, 11, 12]);
        let mut together = apart.clone();
        let f = create(&mut apart, "/f");
        let Response::Chunk { chunk, chunk_size } = prepare(&mut apart, f.id, 0, &[11, 12]) else { panic!() };
        let answer = run(&mut together, WriteCmd::CreatePrepared { create: new_file("/f"), replicas: vec![11, 12] });
        let (inode, prepared) = answer.into_created().unwrap();
        assert_eq!(prepared, Some(super::super::Prepared::Chunk { chunk: chunk.clone(), chunk_size }));
        assert_eq!((chunk.version, chunk.committed_version), (1, 0));
        assert_eq!(inode, apart.inodes[&f.id]);
        assert_eq!(together, apart);
        // The granted version commits like any other.
        let committed = run(
            &mut together,
            WriteCmd::CommitWrite {
                inode: inode.id,
                chunks: vec![(0, chunk.id, 1)],
                size: 5,
                truncate: false,
                fence: None,
            },
        );
        assert_eq!(committed.into_inode().unwrap().size, 5);
    }

    #[test]
    fn create_prepared_refusals_change_nothing() {
        let mut st = with_servers(&[10, 11]);
        create(&mut st, "/old");
        let before = st.clone();
        let refused = [
            // Not a new file: an open-existing create, a directory, an existing path.
            WriteCmd::CreatePrepared {
                create: NamespaceCmd::Create { path: p("/g"), replication: 2, chunk_size: 100, open_existing: true },
                replicas: vec![10, 11],
            },
            WriteCmd::CreatePrepared {
                create: NamespaceCmd::Mkdir { path: p("/d"), parents: false },
                replicas: vec![10],
            },
            WriteCmd::CreatePrepared { create: new_file("/old"), replicas: vec![10, 11] },
            // Bad replicas: none, repeated, not registered.
            WriteCmd::CreatePrepared { create: new_file("/g"), replicas: vec![] },
            WriteCmd::CreatePrepared { create: new_file("/g"), replicas: vec![10, 10] },
            WriteCmd::CreatePrepared { create: new_file("/g"), replicas: vec![10, 99] },
        ];
        for cmd in refused {
            assert!(matches!(run(&mut st, cmd.clone()), Response::Err(_)), "{cmd:?}");
            assert_eq!(st, before, "{cmd:?} changed the state");
        }
    }
}
