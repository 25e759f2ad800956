//! The metadata state machine: namespace, chunk map, chunk-server registry,
//! lock sessions and request deduplication.
//!
//! Plain data and one pure entry point, [`FsState::apply`]. Raft feeds it
//! committed [`Command`]s in log order on every meta node, so it must be
//! deterministic: anything that depends on time or on liveness (mtime, which
//! servers get a new replica) is decided by the leader before proposing and
//! travels inside the command.
//!
//! One domain per module, each opening with the invariants it keeps:
//! [`namespace`] (directories and files), [`chunks`] (the chunk map and the
//! write protocol), [`crate::replicas`] (replica-list changes from healing),
//! [`nodes`] (chunk servers, garbage, cluster switches), [`locking`] (lock
//! sessions over [`crate::locks`]) and [`dedup`] (request ids).
//! [`invariants`] checks all of them at once; debug builds and tests run it
//! after every apply.
//!
//! A command that fails changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_core::{FsError, NormalPath};

use crate::locks::{Acquired, LockTable, Mode};

pub mod chunks;
pub mod dedup;
pub mod invariants;
pub mod locking;
pub mod namespace;
pub mod nodes;

pub use chunks::{ChunkMeta, ChunkPlace};
pub use dedup::{CLIENT_IDLE_EXPIRY_MS, ClientRecord, RequestId};
pub use locking::{Fence, SessionRecord};
pub use namespace::{Inode, Kind};
pub use nodes::NodeRecord;

/// The inode number of `/`.
pub const ROOT_INODE: u64 = 1;

/// A change to the metadata, as proposed by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Mkdir {
        path: NormalPath,
        parents: bool,
    },
    Create {
        path: NormalPath,
        replication: u32,
        chunk_size: u64,
        open_existing: bool,
    },
    Remove {
        path: NormalPath,
        recursive: bool,
    },
    /// Renames `src` to `dst`. With a fence, only while its token holds the
    /// lock on `dst` (the final path) and is not older than the fences of the
    /// files involved; the lock then guards the moved file.
    Rename {
        src: NormalPath,
        dst: NormalPath,
        #[serde(default)]
        fence: Option<Fence>,
    },
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
    CommitWrite {
        inode: u64,
        chunks: Vec<(u64, u64, u64)>,
        size: u64,
        truncate: bool,
        fence: Option<Fence>,
    },
    /// Registers a chunk server or records its new address.
    RegisterNode {
        id: u64,
        addr: String,
    },
    /// A chunk server confirmed it deleted these garbage chunks.
    ForgetGarbage {
        node: u64,
        chunks: Vec<u64>,
    },
    /// Opens a lock session; the leader expires it when it is not kept alive.
    OpenSession {
        ttl_ms: u64,
    },
    /// Ends a session (closed by its client, or expired by the leader):
    /// its locks are released and its queued requests removed.
    EndSession {
        session: u64,
    },
    /// Asks for a lock; `wait` false is a try-lock.
    Acquire {
        session: u64,
        path: NormalPath,
        mode: Mode,
        wait: bool,
    },
    /// Gives up a held lock or a place in its queue.
    Release {
        session: u64,
        path: NormalPath,
    },
    /// Re-replication (or a move) copied the chunk at `place`, at committed
    /// version `copied`, to `target`: list it. Applies only while the chunk's
    /// committed version is still `copied` and its latest version still
    /// `version` (the state the copy was planned from); otherwise the copy is
    /// garbage and the answer is [`Response::Conflict`]. If the replica list
    /// is still `expect`, the replicas in `drop` leave it (dead or draining
    /// replicas this copy replaces, or a move's source).
    AddReplica {
        place: ChunkPlace,
        copied: u64,
        version: u64,
        target: u64,
        expect: Vec<u64>,
        drop: Vec<u64>,
    },
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
    Reconcile {
        node: u64,
        garbage: Vec<(u64, Option<ChunkPlace>)>,
        lost: Vec<ChunkPlace>,
    },
    /// Server `node`'s replicas of these chunks failed their checksums. Each
    /// is dropped if another replica remains, and recorded as corrupt until
    /// the chunk is back at its factor.
    ReportCorrupt {
        node: u64,
        chunks: Vec<ChunkPlace>,
    },
    /// Starts (or cancels) decommissioning a chunk server.
    SetDraining {
        node: u64,
        draining: bool,
    },
    /// Sets a file's replication factor, or a directory's and everything below it.
    SetReplication {
        path: NormalPath,
        replication: u32,
    },
    /// Pauses or resumes re-replication, drops of extra replicas and moves.
    SetRepairPaused {
        paused: bool,
    },
}

/// Names one client request across retries (see the module invariants).

/// the client request it serves, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub now_ms: u64,
    pub request: Option<RequestId>,
    pub cmd: Command,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Inode(Inode),
    Chunk {
        chunk: ChunkMeta,
        chunk_size: u64,
    },
    /// The plan behind a PrepareWrite was outdated; plan again.
    Conflict,
    Session {
        id: u64,
    },
    Lock(Acquired),
    Err(FsError),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsState {
    pub inodes: BTreeMap<u64, Inode>,
    pub next_inode: u64,
    pub next_chunk_id: u64,
    pub nodes: BTreeMap<u64, NodeRecord>,
    /// Chunk id to the servers that still hold an unwanted copy.
    pub garbage: BTreeMap<u64, BTreeSet<u64>>,
    /// Request answers per client id, for deduplication.
    #[serde(default)]
    pub clients: BTreeMap<u64, ClientRecord>,
    /// Leader time of the next sweep for idle clients.
    #[serde(default)]
    pub next_client_sweep_ms: u64,
    #[serde(default)]
    pub sessions: BTreeMap<u64, SessionRecord>,
    #[serde(default)]
    pub last_session: u64,
    #[serde(default)]
    pub locks: LockTable,
    /// The file each held lock guards, by its grant's fencing token: a
    /// token fences writes to this inode only (see [`locking`]).
    #[serde(default)]
    pub fence_bindings: BTreeMap<u64, u64>,
    /// Chunk id to the servers whose replica failed its checksums; kept until
    /// the chunk has its factor of other replicas again, or leaves the namespace.
    #[serde(default)]
    pub corrupt: BTreeMap<u64, BTreeSet<u64>>,
    /// An operator paused re-replication (maintenance).
    #[serde(default)]
    pub repair_paused: bool,
}

impl Default for FsState {
    fn default() -> Self {
        let root = Inode {
            id: ROOT_INODE,
            parent: ROOT_INODE,
            kind: Kind::Dir,
            size: 0,
            mode: 0o755,
            mtime_ms: 0,
            replication: 0,
            chunk_size: 0,
            chunks: BTreeMap::new(),
            children: BTreeMap::new(),
            fence: 0,
        };
        FsState {
            inodes: BTreeMap::from([(ROOT_INODE, root)]),
            next_inode: ROOT_INODE + 1,
            next_chunk_id: 1,
            nodes: BTreeMap::new(),
            garbage: BTreeMap::new(),
            clients: BTreeMap::new(),
            next_client_sweep_ms: 0,
            sessions: BTreeMap::new(),
            last_session: 0,
            locks: LockTable::default(),
            fence_bindings: BTreeMap::new(),
            corrupt: BTreeMap::new(),
            repair_paused: false,
        }
    }
}

impl FsState {
    /// Applies one committed proposal. Never panics on bad input: a command
    /// that cannot apply answers `Response::Err` and changes nothing.
    pub fn apply(&mut self, p: &Proposal) -> Response {
        #[cfg(any(debug_assertions, test))]
        let before = invariants::Counters::of(self);
        let response = match p.request {
            None => {
                self.sweep_idle_clients(p.now_ms);
                self.apply_command(&p.cmd, p.now_ms)
            }
            Some(req) => match self.check_request(req, p.now_ms) {
                dedup::Seen::Answered(first) => first,
                dedup::Seen::New => {
                    let response = self.apply_command(&p.cmd, p.now_ms);
                    self.remember(req, &response);
                    response
                }
            },
        };
        #[cfg(any(debug_assertions, test))]
        if let Err(broken) = self.check_invariants().and_then(|()| before.check_growth(&invariants::Counters::of(self)))
        {
            panic!("state machine invariant broken after {p:?}: {broken}");
        }
        response
    }

    fn apply_command(&mut self, cmd: &Command, now_ms: u64) -> Response {
        let result = match cmd {
            Command::Mkdir { path, parents } => self.mkdir(path, *parents, now_ms),
            Command::Create { path, replication, chunk_size, open_existing } => {
                self.create(path, *replication, *chunk_size, *open_existing, now_ms)
            }
            Command::Remove { path, recursive } => self.remove(path, *recursive),
            Command::Rename { src, dst, fence } => self.rename(src, dst, fence.as_ref(), now_ms),
            Command::PrepareWrite { inode, index, expect_id, expect_version, replicas, fence } => {
                self.fenced(*inode, fence.as_ref(), |s| {
                    s.prepare_write(*inode, *index, *expect_id, *expect_version, replicas)
                })
            }
            Command::CommitWrite { inode, chunks, size, truncate, fence } => {
                self.fenced(*inode, fence.as_ref(), |s| s.commit_write(*inode, chunks, *size, *truncate, now_ms))
            }
            Command::OpenSession { ttl_ms } => self.open_session(*ttl_ms),
            Command::EndSession { session } => self.end_session(*session),
            Command::Acquire { session, path, mode, wait } => self.acquire(*session, path, *mode, *wait),
            Command::Release { session, path } => self.release(*session, path),
            Command::RegisterNode { id, addr } => self.register_node(*id, addr),
            Command::AddReplica { place, copied, version, target, expect, drop } => {
                Ok(self.add_replica(*place, *copied, *version, *target, expect, drop))
            }
            Command::DropReplicas { place, nodes, expect_version } => {
                let unchanged = self
                    .chunk_at(*place)
                    .is_some_and(|c| c.version == *expect_version && c.committed_version == *expect_version);
                if !unchanged {
                    return Response::Conflict;
                }
                self.drop_replicas(*place, nodes);
                Ok(Response::Ok)
            }
            Command::Reconcile { node, garbage, lost } => {
                self.reconcile(*node, garbage, lost);
                Ok(Response::Ok)
            }
            Command::ReportCorrupt { node, chunks } => {
                for place in chunks {
                    self.report_corrupt(*node, *place);
                }
                Ok(Response::Ok)
            }
            Command::SetDraining { node, draining } => self.set_draining(*node, *draining),
            Command::SetReplication { path, replication } => self.set_replication(path, *replication),
            Command::SetRepairPaused { paused } => {
                self.repair_paused = *paused;
                Ok(Response::Ok)
            }
            Command::ForgetGarbage { node, chunks } => self.forget_garbage(*node, chunks),
        };
        result.unwrap_or_else(Response::Err)
    }
}

/// Helpers for the state machine's tests, here and in the modules that extend it.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn p(s: &str) -> NormalPath {
        NormalPath::parse(s).unwrap()
    }

    /// An empty state with chunk servers `ids` registered.
    pub fn with_servers(ids: &[u64]) -> FsState {
        let mut st = FsState::default();
        for id in ids {
            run(&mut st, Command::RegisterNode { id: *id, addr: format!("127.0.0.1:{}", 7000 + id) });
        }
        st
    }

    /// Applies a command with no request id at leader time 1.
    pub fn run(st: &mut FsState, cmd: Command) -> Response {
        st.apply(&Proposal { now_ms: 1, request: None, cmd })
    }

    pub fn create(st: &mut FsState, path: &str) -> Inode {
        match run(st, Command::Create { path: p(path), replication: 2, chunk_size: 100, open_existing: false }) {
            Response::Inode(i) => i,
            other => panic!("create {path}: {other:?}"),
        }
    }

    pub fn prepare(st: &mut FsState, inode: u64, index: u64, replicas: &[u64]) -> Response {
        let cur = st.inodes[&inode].chunks.get(&index).cloned();
        run(
            st,
            Command::PrepareWrite {
                inode,
                index,
                expect_id: cur.as_ref().map(|c| c.id),
                expect_version: cur.map_or(0, |c| c.version),
                replicas: replicas.to_vec(),
                fence: None,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{create, p, run};
    use super::*;

    #[test]
    fn failed_commands_change_nothing() {
        let mut st = FsState::default();
        create(&mut st, "/f");
        let before = st.clone();
        let cmds = [
            Command::Mkdir { path: p("/f/x"), parents: true },
            Command::Create { path: p("/f"), replication: 2, chunk_size: 100, open_existing: false },
            Command::Remove { path: p("/nope"), recursive: true },
            Command::Rename { src: p("/nope"), dst: p("/x"), fence: None },
            Command::CommitWrite { inode: 99, chunks: vec![], size: 5, truncate: false, fence: None },
            Command::PrepareWrite {
                inode: 2,
                index: 0,
                expect_id: None,
                expect_version: 0,
                replicas: vec![1, 1],
                fence: None,
            },
        ];
        for c in cmds {
            assert!(matches!(run(&mut st, c.clone()), Response::Err(_)), "{c:?}");
            assert_eq!(st, before, "{c:?} changed state");
        }
    }
}
