//! Property test of one file's write path against a model: two writers
//! prepare chunk versions and commit them, grow the file and truncate it,
//! in any interleaving. After every step:
//! - a commit is taken exactly when the model says so: each chunk it lists
//!   is still that chunk (same id) at the version last prepared, lies
//!   within the size it sets, and (rules 10) a shrink to within a chunk
//!   with committed bytes lists that chunk; otherwise it is refused with
//!   the error the model names, and changes nothing;
//! - the file's size, and each chunk's id, prepared and committed
//!   versions, equal the model's;
//! - `check_invariants` holds.
//!
//! A prepare may carry a base, as a filling writer's does: the chunk id and
//! committed version it read. `plan::check_base`, which the leader runs
//! before it proposes, must refuse it with `ChunkChanged` exactly when the
//! model's chunk has another committed version (or, past version 0,
//! another id); a refused prepare is not proposed, so it bumps nothing.
//!
//! This is what a writer that fills the bytes between its ranges
//! (`File::write_ranges`) relies on: a version prepared on a base it read
//! commits only if nobody else prepared the chunk since.
//!
//! `PROPTEST_CASES` sets the number of cases (500 by default here).

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_core::{FsError, NormalPath};
use shoal_meta::fsm::{Command, FsState, NamespaceCmd, NodeCmd, Proposal, Response, WriteCmd};

const CHUNK_SIZE: u64 = 100;

#[derive(Debug, Clone)]
enum Op {
    /// Writer `w` prepares chunk `index`, with no base, with the base it
    /// reads now (always current), or with the base it read at its last
    /// prepare of the chunk (perhaps stale).
    Prepare { w: usize, index: u64, base: Base },
    /// Writer `w` commits: its grant for chunk `index` if it holds one and
    /// `list` says so, with `size` (a write's end, or a truncation's size).
    Commit { w: usize, index: u64, list: bool, size: u64, truncate: bool },
}

#[derive(Debug, Clone, Copy)]
enum Base {
    None,
    Fresh,
    Remembered,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let base = prop_oneof![Just(Base::None), Just(Base::Fresh), Just(Base::Remembered)];
    prop_oneof![
        3 => (0..2usize, 0..4u64, base).prop_map(|(w, index, base)| Op::Prepare { w, index, base }),
        4 => (0..2usize, 0..4u64, prop::bool::weighted(0.8), 0..420u64, prop::bool::weighted(0.3))
            .prop_map(|(w, index, list, size, truncate)| Op::Commit { w, index, list, size, truncate }),
    ]
}

/// The model of one chunk: its id, the version last prepared and the
/// version committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    id: u64,
    version: u64,
    committed: u64,
}

struct Harness {
    st: FsState,
    inode: u64,
    now_ms: u64,
    size: u64,
    chunks: BTreeMap<u64, Chunk>,
    /// Each writer's grants: chunk index → (id, version).
    grants: [BTreeMap<u64, (u64, u64)>; 2],
    /// The base each writer read at its last prepare of a chunk: chunk
    /// index → (id, committed version), (0, 0) for a chunk not there.
    read: [BTreeMap<u64, (u64, u64)>; 2],
}

impl Harness {
    fn new() -> Self {
        let mut h = Harness {
            st: FsState::default(),
            inode: 0,
            now_ms: 1,
            size: 0,
            chunks: BTreeMap::new(),
            grants: [BTreeMap::new(), BTreeMap::new()],
            read: [BTreeMap::new(), BTreeMap::new()],
        };
        for id in 1..=3 {
            h.apply(NodeCmd::RegisterNode { id, addr: format!("127.0.0.1:{}", 7000 + id) });
        }
        let path = NormalPath::parse("/f").unwrap();
        let create = NamespaceCmd::Create { path, replication: 2, chunk_size: CHUNK_SIZE, open_existing: false };
        let Response::Inode(f) = h.apply(create) else { panic!("create") };
        h.inode = f.id;
        h
    }

    /// Applies `cmd` under this build's rules; a refusal must change nothing.
    fn apply(&mut self, cmd: impl Into<Command>) -> Response {
        self.now_ms += 5;
        let p = Proposal::new(self.now_ms, None, cmd);
        let before = self.st.clone();
        let r = self.st.apply(&p);
        if matches!(r, Response::Err(_) | Response::Conflict) {
            assert!(self.st == before, "refused {:?} ({r:?}) changed the state", p.cmd);
        }
        r
    }

    fn step(&mut self, op: &Op) {
        match *op {
            Op::Prepare { w, index, base } => {
                let current = self.chunks.get(&index).copied();
                let now = current.map_or((0, 0), |c| (c.id, c.committed));
                let base = match base {
                    Base::None => None,
                    Base::Fresh => Some(now),
                    Base::Remembered => Some(self.read[w].get(&index).copied().unwrap_or((0, 0))),
                };
                if let Some(base) = base {
                    let moved = base.1 != now.1 || (base.1 != 0 && base.0 != now.0);
                    let checked = shoal_meta::plan::check_base(&self.st, self.inode, index, base);
                    if moved {
                        assert_eq!(checked, Err(FsError::ChunkChanged { inode: self.inode, index }), "{op:?}");
                        self.finish(op);
                        return;
                    }
                    assert_eq!(checked, Ok(()), "{op:?}: base {base:?}, chunk {now:?}");
                }
                self.read[w].insert(index, now);
                let r = self.apply(WriteCmd::PrepareWrite {
                    inode: self.inode,
                    index,
                    expect_id: current.map(|c| c.id),
                    expect_version: current.map_or(0, |c| c.version),
                    replicas: vec![1, 2],
                    fence: None,
                });
                let Response::Chunk { chunk, .. } = r else { panic!("prepare of chunk {index} answered {r:?}") };
                match current {
                    Some(c) => assert_eq!((chunk.id, chunk.version), (c.id, c.version + 1)),
                    None => {
                        assert_eq!(chunk.version, 1);
                        let ids = self.grants.iter().flat_map(|g| g.values().map(|(id, _)| *id));
                        assert!(ids.chain(self.chunks.values().map(|c| c.id)).all(|id| id != chunk.id), "a new id");
                    }
                }
                let committed = current.map_or(0, |c| c.committed);
                assert_eq!(chunk.committed_version, committed, "the base is the committed version");
                self.chunks.insert(index, Chunk { id: chunk.id, version: chunk.version, committed });
                self.grants[w].insert(index, (chunk.id, chunk.version));
            }
            Op::Commit { w, index, list, size, truncate } => {
                let listed: Vec<(u64, u64, u64)> = match self.grants[w].get(&index) {
                    Some(&(id, version)) if list => vec![(index, id, version)],
                    _ => vec![],
                };
                let new_size = if truncate { size } else { self.size.max(size) };
                let end_chunk = new_size.div_ceil(CHUNK_SIZE);
                let cut = size / CHUNK_SIZE;
                let uncut = truncate
                    && size < self.size
                    && !size.is_multiple_of(CHUNK_SIZE)
                    && self.chunks.get(&cut).is_some_and(|c| c.committed > 0)
                    && !listed.iter().any(|(i, _, _)| *i == cut);
                let past_end = listed.iter().any(|(i, _, _)| *i >= end_chunk);
                let stale = listed
                    .iter()
                    .any(|(i, id, version)| self.chunks.get(i).is_none_or(|c| (c.id, c.version) != (*id, *version)));
                let want = if uncut {
                    Some(FsError::ChunkChanged { inode: self.inode, index: cut })
                } else if past_end {
                    None // InvalidArgument, checked below
                } else if stale {
                    Some(FsError::ChunkChanged { inode: self.inode, index })
                } else {
                    None
                };
                let r = self.apply(WriteCmd::CommitWrite {
                    inode: self.inode,
                    chunks: listed.clone(),
                    size,
                    truncate,
                    fence: None,
                });
                match (want, past_end && !uncut) {
                    (Some(e), _) => assert_eq!(r, Response::Err(e), "{op:?}"),
                    (None, true) => {
                        assert!(matches!(r, Response::Err(FsError::InvalidArgument { .. })), "{op:?}: {r:?}")
                    }
                    (None, false) => {
                        let Response::Inode(after) = r else { panic!("{op:?} refused: {r:?}") };
                        self.size = new_size;
                        assert_eq!(after.size, new_size);
                        for (i, _, version) in &listed {
                            let c = self.chunks.get_mut(i).expect("listed, so modelled");
                            c.committed = c.committed.max(*version);
                        }
                        if truncate {
                            self.chunks.retain(|i, _| *i < end_chunk);
                        }
                    }
                }
            }
        }
        self.finish(op);
    }

    /// The state equals the model after `op`, and its invariants hold.
    fn finish(&self, op: &Op) {
        let f = &self.st.inodes[&self.inode];
        assert_eq!(f.size, self.size, "size after {op:?}");
        let chunks: BTreeMap<u64, Chunk> = f
            .chunks
            .iter()
            .map(|(i, c)| (*i, Chunk { id: c.id, version: c.version, committed: c.committed_version }))
            .collect();
        assert_eq!(chunks, self.chunks, "chunks after {op:?}");
        self.st.check_invariants().unwrap_or_else(|e| panic!("after {op:?}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(500),
        ..ProptestConfig::default()
    })]

    #[test]
    fn two_writers_and_truncations_match_the_model(ops in prop::collection::vec(op_strategy(), 1..60)) {
        let mut h = Harness::new();
        for op in &ops {
            h.step(op);
        }
    }
}
