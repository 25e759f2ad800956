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
//! write protocol), [`replicas`] (replica-list changes from healing),
//! [`nodes`] (chunk servers, garbage, cluster switches), [`locking`] (lock
//! sessions over [`crate::locks`]), [`xattrs`] (extended attributes),
//! [`attrs`] (mode, owner and times), [`reserved`] (chunk ids handed out
//! for files written before they are created) and
//! [`dedup`] (request ids).
//! [`invariants`] checks all of them at once; debug builds and tests run it
//! after every apply while the state is small, and at a pace that keeps its
//! cost per apply bounded once it is large.
//!
//! A command that fails changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_core::FsError;

use crate::locks::{Acquired, LockTable};
use crate::ranges::{RangeAcquired, RangeTable};

pub mod attrs;
pub mod batch;
pub mod chunk_map;
pub mod chunks;
pub mod cow_map;
pub mod dedup;
pub mod entries;
pub mod inode_wire;
pub mod invariants;
pub mod locking;
pub mod namespace;
pub mod nodes;
pub mod rare;
pub mod replicas;
pub mod reserved;
pub mod table;
pub mod xattrs;

pub use attrs::{AttrChange, TimeSet};
pub use batch::Batched;
pub use chunk_map::ChunkMap;
pub use chunks::{ChunkMeta, ChunkPlace, WriteCmd};
pub use dedup::{CLIENT_IDLE_EXPIRY_MS, ClientRecord, RequestId};
pub use entries::Entries;
pub use locking::{Fence, LockCmd, SessionRecord};
pub use namespace::{Extra, Inode, Kind, LINKS_MAX, MODE_BITS_MAX, NamespaceCmd, Owner, SYMLINK_TARGET_MAX_BYTES};
pub use nodes::{NodeCmd, NodeRecord};
pub use rare::Rare;
pub use replicas::ReplicaCmd;
pub use reserved::{RESERVATIONS_KEPT, RESERVE_IDS_MAX, Reservation};
pub use table::InodeTable;

/// The inode number of `/`.
pub const ROOT_INODE: u64 = 1;

/// A change to the metadata, as proposed by the leader: one command of one
/// domain. Each domain's module applies its own commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Namespace(NamespaceCmd),
    Write(WriteCmd),
    Replicas(ReplicaCmd),
    Nodes(NodeCmd),
    Locks(LockCmd),
    /// Several client requests in one log entry (group commit; see
    /// [`batch`]). Each applies as if it were an entry of its own, in order,
    /// under the outer proposal's time and rules. Never nested.
    Batch(Vec<Batched>),
}

macro_rules! domain_into_command {
    ($($domain:ident => $variant:ident),* $(,)?) => {$(
        impl From<$domain> for Command {
            fn from(c: $domain) -> Command {
                Command::$variant(c)
            }
        }
    )*};
}
domain_into_command!(
    NamespaceCmd => Namespace,
    WriteCmd => Write,
    ReplicaCmd => Replicas,
    NodeCmd => Nodes,
    LockCmd => Locks,
);

/// The rules this build proposes under; see [`Proposal::rules`].
pub const RULES: u16 = 10;

/// One Raft log entry: a command, the leader's clock when it proposed it, the
/// client request it serves, if any, and the rules it is applied under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub now_ms: u64,
    pub request: Option<RequestId>,
    pub cmd: Command,
    /// Every node must apply an entry exactly as the version that proposed it
    /// did, or a node replaying an old log after an upgrade would build
    /// another state than the one the old cluster acknowledged. So the rules
    /// travel with the entry:
    /// - 0 (format-0 logs, which lack the field): a fence is checked against
    ///   its path's lock only; commits may name chunks past the end they set;
    ///   chains may name servers not registered.
    /// - 1: a fence is bound to one file ([`locking`]); renames may be
    ///   fenced; commits past the end and chains on unregistered servers are
    ///   refused.
    /// - 2: as 1, and a chunk report's garbage entry is taken
    ///   only with a place that names its chunk. (Under every rules number,
    ///   an id not allocated yet never becomes garbage: see `discard_chunk`.)
    /// - 3: as 2, and a remove or rename moves the times of the
    ///   directories it changes (and a renamed inode's ctime), as POSIX says.
    /// - 4: as 3, with hard links and special files (`Link`,
    ///   `Mknod`): a remove or rename of one name of an inode with several
    ///   keeps the inode and moves its ctime. (No entry of an older rules
    ///   number can name an inode with several names, so older entries apply
    ///   as they did.)
    /// - 5: as 4, and a lock named `/.shoal-inode/N` is inode
    ///   N's lock: its tokens fence inode N, whatever path names it
    ///   ([`locking`]).
    /// - 6: as 5, and the end of session S removes each name
    ///   `/.shoal-unlinked.S.N` that names inode N, not a directory (a
    ///   mount's open-but-unlinked files: [`shoal_core::path::unlinked_name`]);
    ///   a rename onto such a name is refused unless session S is open.
    /// - 7: as 6, and a byte-range request that would wait in a
    ///   cycle of waits is refused (`FsError::Deadlock`, see
    ///   [`crate::ranges::RangeTable::would_deadlock`]).
    /// - 8 (format 9): as 7, and a namespace command's path
    ///   `/.shoal-inode/N/rest` names `rest` under inode N wherever N is as
    ///   the command applies, and `/.shoal-inode/N` inode N itself
    ///   ([`FsState::absolute`]; locks and fences still take their paths
    ///   literally, and so does `ReplicaCmd::SetReplication`): a mount names entries
    ///   by their directory's inode, so another mount's rename of that
    ///   directory, even one applied just before, never sends the change
    ///   to the directory that took its old name.
    /// - 9 (format 10): as 8, and a command that would make one
    ///   of the root's reserved names is refused (`InvalidArgument`):
    ///   `.shoal-inode`, so `/.shoal-inode/N` names inode N for every
    ///   client, the CLI's included; and a name that
    ///   starts with `.shoal-unlinked.`, except by a rename of inode N to
    ///   `.shoal-unlinked.S.N`, a mount hiding an open file
    ///   ([`FsState::refuse_reserved`]; the inode is checked in
    ///   [`FsState::rename`]); such a name is not exchanged; a
    ///   no-replace rename of a file from its own hidden name under a live
    ///   session (a mount putting back a file it hid) may take either.
    /// - 10 ([`RULES`]; format 11): as 9, and a truncating commit that
    ///   shrinks a file to within a chunk holding committed bytes must
    ///   list that chunk (the cut the writer made), else it is refused as
    ///   `ChunkChanged`: bytes committed there past the new end, since the
    ///   truncating writer looked, would come back at a later growth
    ///   ([`FsState::commit_write`]).
    #[serde(default)]
    pub rules: u16,
}

impl Proposal {
    /// A proposal under this build's rules.
    pub fn new(now_ms: u64, request: Option<RequestId>, cmd: impl Into<Command>) -> Self {
        Proposal { now_ms, request, cmd: cmd.into(), rules: RULES }
    }
}

/// What applying a command produced. Each command always answers in one
/// shape (see the `into_*` accessors); only a request id reused for another
/// command could bring back an answer of another shape (see [`dedup`]).
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
    /// The answers of a [`Command::Batch`], one per request, in order.
    Batch(Vec<Response>),
    /// A new file with its chunk 0 prepared ([`WriteCmd::CreatePrepared`]).
    Created {
        inode: Inode,
        chunk: ChunkMeta,
        chunk_size: u64,
    },
    /// Format 6: the answer of a byte-range lock request (granted or queued).
    Range(RangeAcquired),
    /// Format 7: the chunk ids a [`WriteCmd::ReserveChunkIds`] reserved,
    /// `[start, start + count)`.
    Reserved {
        start: u64,
        count: u64,
    },
}

/// The answer to a `PrepareWrite`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The chunk with its new version, and the file's chunk size.
    Chunk { chunk: ChunkMeta, chunk_size: u64 },
    /// The plan was outdated; plan again.
    Conflict,
}

/// The answer to a command that either applied or found its plan outdated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The plan was outdated: nothing changed (a refused copy is garbage).
    Conflict,
}

/// Typed views of a [`Response`], one per answer shape. Every command answers
/// in the shape its accessor expects; a mismatch can only come from a client
/// that reused a request id for another command (the first answer comes
/// back), and is refused as bad input.
impl Response {
    fn mismatch(self) -> FsError {
        FsError::InvalidArgument { reason: format!("this request id already answered another command ({self:?})") }
    }

    /// The answer of mkdir, create and commit: an inode.
    pub fn into_inode(self) -> Result<Inode, FsError> {
        match self {
            Response::Inode(i) => Ok(i),
            Response::Err(e) => Err(e),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of a create, with its first chunk prepared or not: the
    /// file, and what preparing its chunk 0 gave, if that was asked for. Both
    /// shapes are taken, since a retried request gets its first answer even
    /// when the retry took the other way.
    pub fn into_created(self) -> Result<(Inode, Option<Prepared>), FsError> {
        match self {
            Response::Created { inode, chunk, chunk_size } => Ok((inode, Some(Prepared::Chunk { chunk, chunk_size }))),
            Response::Inode(i) => Ok((i, None)),
            Response::Err(e) => Err(e),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of prepare.
    pub fn into_prepared(self) -> Result<Prepared, FsError> {
        match self {
            Response::Chunk { chunk, chunk_size } => Ok(Prepared::Chunk { chunk, chunk_size }),
            Response::Conflict => Ok(Prepared::Conflict),
            Response::Err(e) => Err(e),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of remove, rename, registry, lock-release and replica commands.
    pub fn into_applied(self) -> Result<Applied, FsError> {
        match self {
            Response::Ok => Ok(Applied::Done),
            Response::Conflict => Ok(Applied::Conflict),
            Response::Err(e) => Err(e),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of opening a session: its id.
    pub fn into_session(self) -> Result<u64, FsError> {
        match self {
            Response::Session { id } => Ok(id),
            Response::Err(e) => Err(e),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of a lock request.
    pub fn into_lock(self) -> Result<Acquired, FsError> {
        match self {
            Response::Lock(a) => Ok(a),
            Response::Err(e) => Err(e),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of a chunk-id reservation: its first id and how many.
    pub fn into_reserved(self) -> Result<(u64, u64), FsError> {
        match self {
            Response::Reserved { start, count } => Ok((start, count)),
            Response::Err(e) => Err(e),
            other => Err(other.mismatch()),
        }
    }

    /// The answer of a byte-range lock request.
    pub fn into_range(self) -> Result<RangeAcquired, FsError> {
        match self {
            Response::Range(a) => Ok(a),
            Response::Err(e) => Err(e),
            other => Err(other.mismatch()),
        }
    }
}

/// The whole replicated metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsState {
    /// Every inode by number, copy-on-write ([`table`]).
    pub inodes: InodeTable,
    pub next_inode: u64,
    pub next_chunk_id: u64,
    pub nodes: BTreeMap<u64, NodeRecord>,
    /// Chunk id to the servers that still hold an unwanted copy. A
    /// [`cow_map::CowMap`], like the inodes: after a large delete it holds
    /// an entry per chunk until the servers confirm, and the state's copies
    /// must stay cheap meanwhile.
    pub garbage: cow_map::CowMap<BTreeSet<u64>>,
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
    /// Byte-range (POSIX record) locks, by path; format 6 added them, so
    /// an older body has none (`format::since_format_6`).
    #[serde(default, deserialize_with = "crate::format::since_format_6")]
    pub ranges: RangeTable,
    /// Chunk ids reserved for files written before meta lists them
    /// ([`reserved`]); format 7 added them (`format::since_format_7`).
    #[serde(default, deserialize_with = "crate::format::since_format_7")]
    pub reserved: Vec<Reservation>,
    /// Not state: names [`FsState::path_of`] found, so it need not scan a
    /// large directory for them again (never encoded; see [`namespace::DirNames`]).
    #[serde(skip)]
    pub dir_names: namespace::DirNames,
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
            chunks: ChunkMap::default(),
            children: Default::default(),
            fence: 0,
            uid: 0,
            gid: 0,
            atime_ns: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            extra: Default::default(),
        };
        FsState {
            inodes: InodeTable::from_iter([(ROOT_INODE, root)]),
            next_inode: ROOT_INODE + 1,
            next_chunk_id: 1,
            nodes: BTreeMap::new(),
            garbage: Default::default(),
            clients: BTreeMap::new(),
            next_client_sweep_ms: 0,
            sessions: BTreeMap::new(),
            last_session: 0,
            locks: LockTable::default(),
            fence_bindings: BTreeMap::new(),
            corrupt: BTreeMap::new(),
            repair_paused: false,
            ranges: RangeTable::default(),
            reserved: Vec::new(),
            dir_names: Default::default(),
        }
    }
}

impl FsState {
    /// Applies one committed proposal. Never panics on bad input: a command
    /// that cannot apply answers `Response::Err` and changes nothing. A batch
    /// applies its requests one by one, each answering for itself.
    pub fn apply(&mut self, p: &Proposal) -> Response {
        match &p.cmd {
            Command::Batch(items) => match p.request {
                Some(_) => Response::Err(batch::request_on_batch()),
                None => Response::Batch(
                    items.iter().map(|i| self.apply_one(i.request, &i.cmd, p.now_ms, p.rules)).collect(),
                ),
            },
            cmd => self.apply_one(p.request, cmd, p.now_ms, p.rules),
        }
    }

    /// Applies one command on behalf of `request`, answering a request seen
    /// before with its first answer.
    fn apply_one(&mut self, request: Option<RequestId>, cmd: &Command, now_ms: u64, rules: u16) -> Response {
        #[cfg(any(debug_assertions, test))]
        let before = invariants::Counters::of(self);
        let response = match request {
            None => {
                self.sweep_idle_clients(now_ms);
                self.apply_command(cmd, now_ms, rules)
            }
            Some(req) => match self.check_request(req, now_ms) {
                dedup::Seen::Answered(first) => *first,
                dedup::Seen::New => {
                    let response = self.apply_command(cmd, now_ms, rules);
                    self.remember(req, &response);
                    response
                }
            },
        };
        #[cfg(any(debug_assertions, test))]
        {
            if let Err(broken) = before.check_growth(&invariants::Counters::of(self)) {
                panic!("state machine counter went back after {cmd:?} (request {request:?}): {broken}");
            }
            let every = invariants::whole_check_every(self.inodes.len());
            if invariants::whole_check_due(every)
                && let Err(broken) = self.check_invariants()
            {
                panic!(
                    "state machine invariant broken after {cmd:?} (request {request:?}; the whole state is checked \
                     about every {every} applies at this size, so an earlier command may have broken it): {broken}"
                );
            }
        }
        response
    }

    fn apply_command(&mut self, cmd: &Command, now_ms: u64, rules: u16) -> Response {
        let result = match cmd {
            Command::Namespace(c) => self.apply_namespace(c, now_ms, rules),
            Command::Write(c) => self.apply_write(c, now_ms, rules),
            Command::Replicas(c) => self.apply_replicas(c, rules),
            Command::Nodes(c) => self.apply_nodes(c),
            Command::Locks(c) => self.apply_locks(c, now_ms, rules),
            Command::Batch(_) => Err(batch::nested()),
        };
        result.unwrap_or_else(Response::Err)
    }
}

/// Helpers for the state machine's tests, here and in the modules that extend it.
#[cfg(test)]
pub(crate) mod testing {
    use shoal_core::NormalPath;

    use super::*;

    pub fn p(s: &str) -> NormalPath {
        NormalPath::parse(s).unwrap()
    }

    /// An empty state with chunk servers `ids` registered.
    pub fn with_servers(ids: &[u64]) -> FsState {
        let mut st = FsState::default();
        for id in ids {
            run(&mut st, NodeCmd::RegisterNode { id: *id, addr: format!("127.0.0.1:{}", 7000 + id) });
        }
        st
    }

    /// The prepare of a chunk not written yet: chunk `index` of `inode` on `replicas`.
    pub fn first_prepare(inode: u64, index: u64, replicas: &[u64], fence: Option<Fence>) -> WriteCmd {
        WriteCmd::PrepareWrite { inode, index, expect_id: None, expect_version: 0, replicas: replicas.to_vec(), fence }
    }

    /// Applies a command with no request id at leader time 1.
    pub fn run(st: &mut FsState, cmd: impl Into<Command>) -> Response {
        st.apply(&Proposal::new(1, None, cmd))
    }

    pub fn create(st: &mut FsState, path: &str) -> Inode {
        match run(st, NamespaceCmd::Create { path: p(path), replication: 2, chunk_size: 100, open_existing: false }) {
            Response::Inode(i) => i,
            other => panic!("create {path}: {other:?}"),
        }
    }

    pub fn prepare(st: &mut FsState, inode: u64, index: u64, replicas: &[u64]) -> Response {
        let cur = st.inodes[&inode].chunks.get(&index).cloned();
        run(
            st,
            WriteCmd::PrepareWrite {
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
            Command::from(NamespaceCmd::Mkdir { path: p("/f/x"), parents: true }),
            Command::from(NamespaceCmd::Create {
                path: p("/f"),
                replication: 2,
                chunk_size: 100,
                open_existing: false,
            }),
            Command::from(NamespaceCmd::Remove { path: p("/nope"), recursive: true }),
            Command::from(NamespaceCmd::Rename { src: p("/nope"), dst: p("/x"), fence: None }),
            Command::from(WriteCmd::CommitWrite { inode: 99, chunks: vec![], size: 5, truncate: false, fence: None }),
            Command::from(WriteCmd::PrepareWrite {
                inode: 2,
                index: 0,
                expect_id: None,
                expect_version: 0,
                replicas: vec![1, 1],
                fence: None,
            }),
        ];
        for c in cmds {
            assert!(matches!(run(&mut st, c.clone()), Response::Err(_)), "{c:?}");
            assert_eq!(st, before, "{c:?} changed state");
        }
    }
}
