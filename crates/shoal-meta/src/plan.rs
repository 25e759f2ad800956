//! What the leader decides for client and chunk-server requests before it
//! proposes anything, as pure functions over plain data: where a write's
//! chunk goes (`PrepareWrite`), whether a filling write's base is still the
//! chunk's committed one (`check_base`), and which garbage a heartbeat reply
//! names.
//!
//! The caller (`service`) reads the applied state and builds the server views
//! (liveness and usage are the leader's soft state); nothing here does IO,
//! reads a clock or keeps state between calls. The state machine re-checks
//! every plan when it applies it (the state may have moved on in between);
//! the base is not in the command, so its re-check is the writer's, against
//! the base version the prepare answers.

use std::collections::HashSet;

use shoal_core::FsError;
use shoal_core::layout;
use shoal_core::placement::{self, Candidate};

use crate::bounds;
use crate::fsm::{Fence, FsState, Kind, WriteCmd};
use crate::health::ServerView;

/// Whether chunk `index` of file `inode` is still at `base`, the (chunk id,
/// committed version) a writer read bytes of to fill between its ranges
/// (version 0: no committed bytes, whatever the id). Else `ChunkChanged`,
/// before anything is prepared: a writer with a stale map then bumps no
/// version, which would abort another writer's write in flight. The state
/// may move on before the prepare applies, so the writer checks the base
/// the prepare answers as well.
pub fn check_base(fs: &FsState, inode: u64, index: u64, base: (u64, u64)) -> Result<(), FsError> {
    let f = fs.inode(inode)?;
    let now = f.chunks.get(&index).map_or((0, 0), |c| (c.id, c.committed_version));
    if !layout::same_base(base, now) {
        return Err(FsError::ChunkChanged { inode, index });
    }
    Ok(())
}

/// Plans the `PrepareWrite` of chunk `index` of file `inode`.
///
/// The chunk must end within the largest file ([`bounds::check_chunk_index`]).
/// A new chunk gets `replication` distinct alive, not draining servers, none
/// of them in `failed` (addresses of replicas that failed the writer's last
/// attempt). An existing chunk keeps its replicas that are alive and did not
/// fail (draining ones still take writes); a chunk that was never committed
/// may also get fresh replicas for the ones it lost, never on a server that
/// is about to delete its copy. The command expects the chunk as it is in
/// `fs`, so a plan that another write overtook is refused, not applied.
pub fn plan_prepare(
    fs: &FsState,
    servers: &[ServerView],
    inode: u64,
    index: u64,
    failed: &[String],
    fence: Option<Fence>,
) -> Result<WriteCmd, FsError> {
    let f = fs.inode(inode)?;
    if f.kind != Kind::File {
        return Err(FsError::IsADirectory { path: format!("inode {inode}") });
    }
    bounds::check_chunk_index(index, f.chunk_size)?;
    let candidates: Vec<Candidate> = servers.iter().map(ServerView::candidate).collect();
    let failed_ids: Vec<u64> = fs.nodes.values().filter(|n| failed.contains(&n.addr)).map(|n| n.id).collect();
    let alive: HashSet<u64> = servers.iter().filter(|s| s.alive).map(|s| s.id).collect();
    let usable = |id: &u64| !failed_ids.contains(id) && alive.contains(id);
    let not_enough = |e: placement::NotEnoughServers| FsError::NotEnoughServers { needed: e.needed, alive: e.alive };
    Ok(match f.chunks.get(&index) {
        None => {
            let replicas = place_new_chunk(servers, f.replication, &failed_ids)?;
            WriteCmd::PrepareWrite { inode, index, expect_id: None, expect_version: 0, replicas, fence }
        }
        Some(c) => {
            let mut replicas: Vec<u64> = c.replicas.iter().copied().filter(usable).collect();
            if c.committed_version == 0 && replicas.len() < f.replication as usize {
                // Nothing was ever acknowledged on this chunk: lost replicas can be
                // replaced by fresh, empty ones.
                let mut exclude = replicas.clone();
                exclude.extend(&failed_ids);
                // A server about to delete its copy must not get a new one.
                exclude.extend(fs.garbage.get(&c.id).into_iter().flatten());
                let need = f.replication - replicas.len() as u32;
                replicas.extend(placement::place(&candidates, need, &exclude).map_err(not_enough)?);
            }
            if replicas.is_empty() {
                return Err(FsError::NoReplica { chunk_id: c.id });
            }
            WriteCmd::PrepareWrite { inode, index, expect_id: Some(c.id), expect_version: c.version, replicas, fence }
        }
    })
}

/// Where a chunk not written yet goes: `replication` distinct live servers,
/// none of `exclude`.
pub fn place_new_chunk(servers: &[ServerView], replication: u32, exclude: &[u64]) -> Result<Vec<u64>, FsError> {
    let candidates: Vec<Candidate> = servers.iter().map(ServerView::candidate).collect();
    placement::place(&candidates, replication, exclude)
        .map_err(|e| FsError::NotEnoughServers { needed: e.needed, alive: e.alive })
}

/// The garbage chunks a heartbeat reply tells server `node` to delete, of
/// the `candidates` [`delete_candidates`] found: those still pending on it,
/// never one the chunk map lists there (defence in depth: the state machine
/// never marks those). Runs in a pass (it looks at every file).
pub fn heartbeat_deletes(fs: &FsState, node: u64, candidates: &[u64]) -> Vec<u64> {
    let mut delete: Vec<u64> =
        candidates.iter().copied().filter(|c| fs.garbage.get(c).is_some_and(|h| h.contains(&node))).collect();
    let listed = fs.chunks_listed_on(node, &delete);
    delete.retain(|c| !listed.contains(c));
    delete
}

/// Garbage records [`delete_candidates`] looks at in one call, at most: it
/// runs under the state's lock on every beat of every server, and garbage
/// can be millions of records (a big delete, a dead server's share).
pub const GARBAGE_SCAN_MAX: usize = 65_536;

/// Up to `max` garbage records pending on `node`, none of them one a copy in
/// flight to it is writing (`copying_in`: that copy's listing decides).
/// Looks at no more than `scan` records: from key `*cursor` on, then from
/// the first key (once round), and leaves `*cursor` after the last one it
/// looked at. So a server with few records among many pending on others
/// finds them over a few beats, each cheap, rather than in a pass over all
/// of them under the lock on every beat.
pub fn delete_candidates(
    fs: &FsState,
    node: u64,
    copying_in: &HashSet<u64>,
    max: usize,
    cursor: &mut u64,
    scan: usize,
) -> Vec<u64> {
    let from = *cursor;
    let records = fs.garbage.iter_from(from).chain(fs.garbage.iter().take_while(move |(c, _)| *c < from));
    let mut found = Vec::new();
    for (c, holders) in records.take(scan) {
        *cursor = c.saturating_add(1);
        // Copies in flight are skipped before they count, so they never use up `max`.
        if holders.contains(&node) && !copying_in.contains(&c) {
            found.push(c);
            if found.len() >= max {
                break;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::testing::{p, run};
    use crate::fsm::{ChunkPlace, NamespaceCmd, NodeRecord, Response, WriteCmd};

    fn server(id: u64, alive: bool, draining: bool, used_bytes: u64) -> ServerView {
        ServerView { id, alive, draining, capacity_bytes: 1000, used_bytes, chunk_count: 0 }
    }

    /// Servers 1..=5 registered (at h:1 .. h:5) and an empty file /f with factor 2.
    fn state() -> (FsState, u64) {
        let mut st = FsState::default();
        for id in 1..=5 {
            st.nodes.insert(id, NodeRecord { id, addr: format!("h:{id}"), draining: false });
        }
        let create = NamespaceCmd::Create { path: p("/f"), replication: 2, chunk_size: 100, open_existing: false };
        let Response::Inode(f) = run(&mut st, create) else { panic!() };
        (st, f.id)
    }

    fn replicas(cmd: &WriteCmd) -> Vec<u64> {
        match cmd {
            WriteCmd::PrepareWrite { replicas, .. } => replicas.clone(),
            other => panic!("not a prepare: {other:?}"),
        }
    }

    #[test]
    fn a_new_chunk_goes_to_the_emptiest_alive_servers_that_did_not_fail() {
        let (st, inode) = state();
        let servers = [
            server(1, true, false, 0),
            server(2, false, false, 0),
            server(3, true, true, 0),
            server(4, true, false, 500),
            server(5, true, false, 100),
        ];
        let cmd = plan_prepare(&st, &servers, inode, 0, &[], None).unwrap();
        assert_eq!(
            cmd,
            WriteCmd::PrepareWrite {
                inode,
                index: 0,
                expect_id: None,
                expect_version: 0,
                replicas: vec![1, 5],
                fence: None,
            }
        );
        let cmd = plan_prepare(&st, &servers, inode, 0, &["h:1".into()], None).unwrap();
        assert_eq!(replicas(&cmd), vec![5, 4]);
        let e = plan_prepare(&st, &servers, inode, 0, &["h:1".into(), "h:5".into()], None);
        assert!(matches!(e, Err(FsError::NotEnoughServers { .. })), "{e:?}");
        assert!(matches!(plan_prepare(&st, &servers, 1, 0, &[], None), Err(FsError::IsADirectory { .. })));
        assert!(matches!(plan_prepare(&st, &servers, 99, 0, &[], None), Err(FsError::StaleInode { .. })));
    }

    #[test]
    fn a_prepare_on_a_base_that_moved_is_refused_before_it_bumps_anything() {
        let (mut st, inode) = state();
        let all = [1, 2, 3].map(|id| server(id, true, false, 0));
        // No chunk yet: only version 0 (no committed bytes) holds.
        assert_eq!(check_base(&st, inode, 0, (0, 0)), Ok(()));
        assert_eq!(check_base(&st, inode, 0, (7, 0)), Ok(()), "no committed bytes: the id is not compared");
        assert_eq!(check_base(&st, inode, 0, (7, 1)), Err(FsError::ChunkChanged { inode, index: 0 }));
        let first = plan_prepare(&st, &all, inode, 0, &[], None).unwrap();
        let Response::Chunk { chunk, .. } = run(&mut st, first) else { panic!() };
        // Prepared, not committed: still no committed bytes.
        assert_eq!(check_base(&st, inode, 0, (0, 0)), Ok(()));
        let commit =
            WriteCmd::CommitWrite { inode, chunks: vec![(0, chunk.id, 1)], size: 10, truncate: false, fence: None };
        run(&mut st, commit);
        assert_eq!(check_base(&st, inode, 0, (chunk.id, 1)), Ok(()));
        for stale in [(0, 0), (chunk.id, 0), (chunk.id + 1, 1), (chunk.id, 2)] {
            assert_eq!(check_base(&st, inode, 0, stale), Err(FsError::ChunkChanged { inode, index: 0 }), "{stale:?}");
        }
        assert!(matches!(check_base(&st, 99, 0, (0, 0)), Err(FsError::StaleInode { .. })));
    }

    /// Regression (review): the chunk index was not bounded, so a request
    /// could allocate a chunk whose offset (`index * chunk_size`) overflows.
    #[test]
    fn a_chunk_beyond_the_largest_file_is_refused() {
        let (st, inode) = state();
        let servers = [1, 2].map(|id| server(id, true, false, 0));
        let last = bounds::FILE_SIZE_MAX_BYTES / 100 - 1;
        assert!(plan_prepare(&st, &servers, inode, last, &[], None).is_ok());
        for index in [last + 1, u64::MAX / 100, u64::MAX] {
            let e = plan_prepare(&st, &servers, inode, index, &[], None);
            assert!(matches!(e, Err(FsError::InvalidArgument { .. })), "index {index}: {e:?}");
        }
    }

    #[test]
    fn an_existing_chunk_keeps_its_usable_replicas_and_refills_only_before_its_first_commit() {
        let (mut st, inode) = state();
        let all = [1, 2, 3, 4, 5].map(|id| server(id, true, false, 0));
        let first = plan_prepare(&st, &all, inode, 0, &[], None).unwrap();
        let Response::Chunk { chunk, .. } = run(&mut st, first) else { panic!() };
        assert_eq!(chunk.replicas, vec![1, 2]);
        // Replica 2 failed a write that never committed: it is replaced, but
        // not by server 3, which is deleting an old copy of the chunk.
        st.garbage.get_or_insert_default(chunk.id).insert(3);
        let cmd = plan_prepare(&st, &all, inode, 0, &["h:2".into()], None).unwrap();
        assert_eq!(
            cmd,
            WriteCmd::PrepareWrite {
                inode,
                index: 0,
                expect_id: Some(chunk.id),
                expect_version: 1,
                replicas: vec![1, 4],
                fence: None,
            }
        );
        // Once committed, a failed replica is only dropped; a draining one stays.
        let commit =
            WriteCmd::CommitWrite { inode, chunks: vec![(0, chunk.id, 1)], size: 10, truncate: false, fence: None };
        run(&mut st, commit);
        let cmd = plan_prepare(&st, &all, inode, 0, &["h:2".into()], None).unwrap();
        assert_eq!(replicas(&cmd), vec![1]);
        let draining = [server(1, true, true, 0), server(2, false, false, 0)];
        assert_eq!(replicas(&plan_prepare(&st, &draining, inode, 0, &[], None).unwrap()), vec![1]);
        let dead = [server(1, false, false, 0), server(2, false, false, 0)];
        assert_eq!(
            plan_prepare(&st, &dead, inode, 0, &[], None).unwrap_err(),
            FsError::NoReplica { chunk_id: chunk.id }
        );
    }

    #[test]
    fn a_heartbeat_never_deletes_a_listed_replica_or_a_copy_in_flight() {
        let (mut st, inode) = state();
        let all = [1, 2, 3, 4, 5].map(|id| server(id, true, false, 0));
        let prep = plan_prepare(&st, &all, inode, 0, &[], None).unwrap();
        let Response::Chunk { chunk, .. } = run(&mut st, prep) else { panic!() };
        let place = ChunkPlace { inode, index: 0, chunk: chunk.id };
        for gone in [70, 71, 72] {
            st.garbage.get_or_insert_default(gone).insert(3);
        }
        // Made up: garbage on a server that lists the chunk (the state machine never does this).
        st.garbage.get_or_insert_default(place.chunk).insert(1);
        let deletes = |node, copying: HashSet<u64>, max| {
            let candidates = delete_candidates(&st, node, &copying, max, &mut 0, GARBAGE_SCAN_MAX);
            heartbeat_deletes(&st, node, &candidates)
        };
        assert_eq!(deletes(3, HashSet::new(), 10), vec![70, 71, 72]);
        assert_eq!(deletes(3, HashSet::from([71]), 10), vec![70, 72]);
        assert_eq!(deletes(3, HashSet::new(), 2), vec![70, 71]);
        // A copy in flight does not use up the budget.
        assert_eq!(deletes(3, HashSet::from([70]), 2), vec![71, 72]);
        assert!(deletes(1, HashSet::new(), 10).is_empty());
        // A candidate no longer pending on the server (confirmed meanwhile,
        // or pending only on another) is not sent.
        st.garbage.get_or_insert_default(80).insert(2);
        assert_eq!(heartbeat_deletes(&st, 3, &[70, 80, 99]), vec![70]);
    }

    #[test]
    fn each_beat_looks_at_a_bounded_run_of_garbage_and_the_next_goes_on_from_there() {
        let mut st = FsState::default();
        // 1,000 records pending on server 2, and three on server 3 among them.
        for c in 0..1000 {
            st.garbage.get_or_insert_default(c).insert(2);
        }
        for c in [100, 500, 900] {
            st.garbage.get_or_insert_default(c).insert(3);
        }
        let none = HashSet::new();
        let mut cursor = 0;
        let mut beats = Vec::new();
        for _ in 0..4 {
            beats.push(delete_candidates(&st, 3, &none, 10, &mut cursor, 300));
        }
        // Records 0-299, 300-599, 600-899, then 900-999 and round to 0-199.
        assert_eq!(beats, [vec![100], vec![500], vec![], vec![900, 100]], "300 records a beat, going round");
        assert_eq!(cursor, 200, "after 0..1000 the scan went round to the start");
        // Found enough: the cursor stops just after the last one taken.
        let mut cursor = 950;
        assert_eq!(delete_candidates(&st, 3, &none, 1, &mut cursor, 300), vec![100]);
        assert_eq!(cursor, 101);
        // With a scan as large as the garbage, one beat sees everything, whatever the start.
        let mut cursor = 600;
        assert_eq!(delete_candidates(&st, 3, &none, 10, &mut cursor, 2000), vec![900, 100, 500]);
        let mut cursor = u64::MAX;
        assert_eq!(delete_candidates(&st, 2, &none, 3, &mut cursor, 2000), vec![0, 1, 2]);
    }
}
