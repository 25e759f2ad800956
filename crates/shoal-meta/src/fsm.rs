//! The metadata state machine: namespace, chunk map and chunk-server registry.
//!
//! Plain data and one pure entry point, [`FsState::apply`]. Raft feeds it
//! committed [`Command`]s in log order on every meta node, so it must be
//! deterministic: anything that depends on time or on liveness (mtime, which
//! servers get a new replica) is decided by the leader before proposing and
//! travels inside the command.
//!
//! # Invariants
//! - Inode 1 is the root directory and always exists.
//! - Every inode except the root has exactly one directory entry, in its `parent`.
//! - A chunk's replicas are distinct chunk-server ids.
//! - `committed_version <= version` for every chunk; a replica whose version is
//!   older than `committed_version` missed an acknowledged write.
//! - Only the latest prepared version of a chunk can be committed: once a chunk
//!   is prepared again, the versions before it that were not committed never
//!   will be, so chunk servers may roll them back.
//! - A chunk id is never reused: `next_chunk_id` only grows. A chunk never
//!   moves: its (inode, index) is fixed for its life ([`ChunkPlace`]).
//! - Chunks dropped from the namespace (removed files, truncation, dropped
//!   replicas) are listed in `garbage` until their server confirms the delete.
//!   A server never holds a listed replica of a chunk that is garbage on it:
//!   a replica is added only where no delete is pending, and a server is
//!   marked to delete a chunk only where it is not listed.
//! - Every listed replica holds `committed_version`; all but the `lagging`
//!   ones also took part in the write of `version` (see [`crate::replicas`]).
//! - A proposal that carries a [`RequestId`] applies at most once: while its
//!   client has not confirmed the answer (`done_below`), a repeat of the same
//!   id gets the first answer back and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use shoal_core::{FsError, NormalPath};

use crate::locks::{Acquired, LockTable, Mode};

/// The inode number of `/`.
pub const ROOT_INODE: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Dir,
    File,
}

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inode {
    pub id: u64,
    pub parent: u64,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime_ms: u64,
    /// Replicas per chunk for files; for directories, what new files inherit (0: cluster default).
    pub replication: u32,
    /// Fixed when the file is created.
    pub chunk_size: u64,
    /// Files only: chunk index to chunk. Missing indices are holes that read as zeros.
    pub chunks: BTreeMap<u64, ChunkMeta>,
    /// Directories only: name to inode.
    pub children: BTreeMap<String, u64>,
    /// The newest fencing token a write to this file carried.
    #[serde(default)]
    pub fence: u64,
}

/// A registered chunk server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub addr: String,
    /// Being decommissioned: placement avoids it, and its replicas are copied
    /// elsewhere, then dropped.
    #[serde(default)]
    pub draining: bool,
}

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
    Rename {
        src: NormalPath,
        dst: NormalPath,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
    /// The client has the answers of all its requests below this seq.
    pub done_below: u64,
}

/// One Raft log entry: a command, the leader's clock when it proposed it, and
/// the client request it serves, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub now_ms: u64,
    pub request: Option<RequestId>,
    pub cmd: Command,
}

/// How long a client may stay silent before meta forgets its request answers.
pub const CLIENT_IDLE_EXPIRY_MS: u64 = 10 * 60 * 1000;
/// How often, in leader time, idle clients are looked for.
const CLIENT_SWEEP_EVERY_MS: u64 = 60 * 1000;

/// The answers meta still keeps for one client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub done_below: u64,
    pub last_ms: u64,
    /// Seq to the answer its first application gave.
    pub replies: BTreeMap<u64, Response>,
}

/// What applying a command produced.
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

/// The whole replicated metadata.
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
            corrupt: BTreeMap::new(),
            repair_paused: false,
        }
    }
}

fn not_found(path: &NormalPath) -> FsError {
    FsError::NotFound { path: path.to_string() }
}

impl FsState {
    /// Resolves a path to its inode.
    pub fn lookup(&self, path: &NormalPath) -> Result<&Inode, FsError> {
        let mut cur = &self.inodes[&ROOT_INODE];
        for (depth, name) in path.components().iter().enumerate() {
            if cur.kind != Kind::Dir {
                let prefix: Vec<&str> = path.components()[..depth].iter().map(|s| s.as_str()).collect();
                return Err(FsError::NotADirectory { path: format!("/{}", prefix.join("/")) });
            }
            let id = cur.children.get(name).ok_or_else(|| not_found(path))?;
            cur = &self.inodes[id];
        }
        Ok(cur)
    }

    /// Resolves the directory that holds `path`, and the final name.
    fn lookup_parent<'p>(&self, path: &'p NormalPath) -> Result<(u64, &'p str), FsError> {
        let (parent, name) = path.split_last().ok_or(FsError::Root)?;
        let dir = self.lookup(&parent)?;
        if dir.kind != Kind::Dir {
            return Err(FsError::NotADirectory { path: parent.to_string() });
        }
        Ok((dir.id, name))
    }

    /// The path of inode `id` (its name is looked up in its parent).
    pub fn path_of(&self, id: u64) -> String {
        let mut names = Vec::new();
        let mut cur = id;
        while cur != ROOT_INODE {
            let Some(inode) = self.inodes.get(&cur) else { break };
            let parent = &self.inodes[&inode.parent];
            let name = parent.children.iter().find(|(_, c)| **c == cur).map_or("?", |(n, _)| n.as_str());
            names.push(name);
            cur = inode.parent;
        }
        names.reverse();
        format!("/{}", names.join("/"))
    }

    pub fn inode(&self, id: u64) -> Result<&Inode, FsError> {
        self.inodes.get(&id).ok_or(FsError::StaleInode { inode: id })
    }

    /// The replication a new file under `parent` inherits (0: cluster default).
    pub fn inherited_replication(&self, path: &NormalPath) -> u32 {
        let mut cur = &self.inodes[&ROOT_INODE];
        let mut rep = cur.replication;
        for name in path.components() {
            match cur.children.get(name).map(|id| &self.inodes[id]) {
                Some(next) if next.kind == Kind::Dir => {
                    cur = next;
                    if cur.replication != 0 {
                        rep = cur.replication;
                    }
                }
                _ => break,
            }
        }
        rep
    }

    /// Applies one committed proposal. Never panics on bad input: a command
    /// that cannot apply answers `Response::Err` and changes nothing.
    pub fn apply(&mut self, p: &Proposal) -> Response {
        self.sweep_idle_clients(p.now_ms);
        let Some(req) = p.request else {
            return self.apply_command(&p.cmd, p.now_ms);
        };
        let record = self.clients.entry(req.client).or_default();
        record.last_ms = p.now_ms;
        if req.done_below > record.done_below {
            record.done_below = req.done_below;
            record.replies = record.replies.split_off(&req.done_below);
        }
        if let Some(first) = record.replies.get(&req.seq) {
            return first.clone();
        }
        if req.seq < record.done_below {
            // The client already has this request's answer; this is a stray copy.
            return Response::Err(FsError::InvalidArgument {
                reason: format!("request {} of client {:x} was already answered", req.seq, req.client),
            });
        }
        let response = self.apply_command(&p.cmd, p.now_ms);
        // A conflict changed nothing and is re-planned under the same id.
        if response != Response::Conflict {
            let record = self.clients.get_mut(&req.client).expect("inserted above");
            record.replies.insert(req.seq, response.clone());
        }
        response
    }

    fn sweep_idle_clients(&mut self, now_ms: u64) {
        if now_ms < self.next_client_sweep_ms {
            return;
        }
        self.clients.retain(|_, c| c.last_ms.saturating_add(CLIENT_IDLE_EXPIRY_MS) > now_ms);
        self.next_client_sweep_ms = now_ms.saturating_add(CLIENT_SWEEP_EVERY_MS);
    }

    fn apply_command(&mut self, cmd: &Command, now_ms: u64) -> Response {
        let result = match cmd {
            Command::Mkdir { path, parents } => self.mkdir(path, *parents, now_ms),
            Command::Create { path, replication, chunk_size, open_existing } => {
                self.create(path, *replication, *chunk_size, *open_existing, now_ms)
            }
            Command::Remove { path, recursive } => self.remove(path, *recursive),
            Command::Rename { src, dst } => self.rename(src, dst, now_ms),
            Command::PrepareWrite { inode, index, expect_id, expect_version, replicas, fence } => {
                self.fenced(*inode, fence.as_ref(), |s| {
                    s.prepare_write(*inode, *index, *expect_id, *expect_version, replicas)
                })
            }
            Command::CommitWrite { inode, chunks, size, truncate, fence } => {
                self.fenced(*inode, fence.as_ref(), |s| s.commit_write(*inode, chunks, *size, *truncate, now_ms))
            }
            Command::OpenSession { ttl_ms } => {
                self.last_session += 1;
                self.sessions.insert(self.last_session, SessionRecord { ttl_ms: *ttl_ms });
                Ok(Response::Session { id: self.last_session })
            }
            Command::EndSession { session } => {
                if self.sessions.remove(session).is_some() {
                    self.locks.drop_session(*session);
                }
                Ok(Response::Ok)
            }
            Command::Acquire { session, path, mode, wait } => self.live_session(*session).and_then(|_| {
                match self.locks.acquire(&path.to_string(), *session, *mode, *wait) {
                    Acquired::WouldBlock => Err(FsError::WouldBlock { path: path.to_string() }),
                    a => Ok(Response::Lock(a)),
                }
            }),
            Command::Release { session, path } => {
                self.live_session(*session).and_then(|_| match self.locks.release(&path.to_string(), *session) {
                    (true, _) => Ok(Response::Ok),
                    (false, _) => Err(FsError::NotLocked { path: path.to_string() }),
                })
            }
            Command::RegisterNode { id, addr } => {
                let draining = self.nodes.get(id).is_some_and(|n| n.draining);
                self.nodes.insert(*id, NodeRecord { id: *id, addr: addr.clone(), draining });
                Ok(Response::Ok)
            }
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
            Command::SetDraining { node, draining } => match self.nodes.get_mut(node) {
                Some(n) => {
                    n.draining = *draining;
                    Ok(Response::Ok)
                }
                None => Err(FsError::InvalidArgument { reason: format!("no chunk server has id {node}") }),
            },
            Command::SetReplication { path, replication } => self.set_replication(path, *replication),
            Command::SetRepairPaused { paused } => {
                self.repair_paused = *paused;
                Ok(Response::Ok)
            }
            Command::ForgetGarbage { node, chunks } => {
                for c in chunks {
                    if let Some(holders) = self.garbage.get_mut(c) {
                        holders.remove(node);
                        if holders.is_empty() {
                            self.garbage.remove(c);
                        }
                    }
                }
                Ok(Response::Ok)
            }
        };
        result.unwrap_or_else(Response::Err)
    }

    fn live_session(&self, session: u64) -> Result<(), FsError> {
        match self.sessions.contains_key(&session) {
            true => Ok(()),
            false => Err(FsError::SessionExpired { session }),
        }
    }

    /// Runs a write unless its fence is stale: its token no longer holds its
    /// lock, or is older than one already seen for the file. A write that
    /// applies records its token.
    fn fenced(
        &mut self,
        inode: u64,
        fence: Option<&Fence>,
        write: impl FnOnce(&mut Self) -> Result<Response, FsError>,
    ) -> Result<Response, FsError> {
        let Some(f) = fence else { return write(self) };
        let newest = self.file_mut(inode)?.fence;
        if f.token < newest || !self.locks.token_holds(&f.path.to_string(), f.token) {
            return Err(FsError::Fenced { path: f.path.to_string(), token: f.token });
        }
        let r = write(self)?;
        if r != Response::Conflict {
            self.file_mut(inode)?.fence = f.token;
        }
        Ok(r)
    }

    fn new_inode(&mut self, parent: u64, kind: Kind, replication: u32, chunk_size: u64, mtime_ms: u64) -> u64 {
        let id = self.next_inode;
        self.next_inode += 1;
        let mode = if kind == Kind::Dir { 0o755 } else { 0o644 };
        self.inodes.insert(
            id,
            Inode {
                id,
                parent,
                kind,
                size: 0,
                mode,
                mtime_ms,
                replication,
                chunk_size,
                chunks: BTreeMap::new(),
                children: BTreeMap::new(),
                fence: 0,
            },
        );
        id
    }

    fn link(&mut self, dir: u64, name: &str, child: u64, mtime_ms: u64) {
        let d = self.inodes.get_mut(&dir).expect("parent exists");
        d.children.insert(name.to_string(), child);
        d.mtime_ms = mtime_ms;
    }

    fn mkdir(&mut self, path: &NormalPath, parents: bool, mtime_ms: u64) -> Result<Response, FsError> {
        if path.is_root() {
            return if parents {
                Ok(Response::Inode(self.inodes[&ROOT_INODE].clone()))
            } else {
                Err(FsError::AlreadyExists { path: "/".into() })
            };
        }
        if parents {
            // Check the whole chain first so a failure changes nothing.
            let mut cur = NormalPath::root();
            for name in path.components() {
                cur = cur.join(name);
                match self.lookup(&cur) {
                    Ok(i) if i.kind == Kind::Dir => {}
                    Ok(_) => {
                        return Err(FsError::NotADirectory { path: cur.to_string() });
                    }
                    Err(FsError::NotFound { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
            let mut dir = ROOT_INODE;
            for name in path.components() {
                dir = match self.inodes[&dir].children.get(name.as_str()) {
                    Some(id) => *id,
                    None => {
                        let id = self.new_inode(dir, Kind::Dir, 0, 0, mtime_ms);
                        self.link(dir, name, id, mtime_ms);
                        id
                    }
                };
            }
            return Ok(Response::Inode(self.inodes[&dir].clone()));
        }
        let (dir, name) = self.lookup_parent(path)?;
        if self.inodes[&dir].children.contains_key(name) {
            return Err(FsError::AlreadyExists { path: path.to_string() });
        }
        let id = self.new_inode(dir, Kind::Dir, 0, 0, mtime_ms);
        self.link(dir, name, id, mtime_ms);
        Ok(Response::Inode(self.inodes[&id].clone()))
    }

    fn create(
        &mut self,
        path: &NormalPath,
        replication: u32,
        chunk_size: u64,
        open_existing: bool,
        mtime_ms: u64,
    ) -> Result<Response, FsError> {
        if replication == 0 || chunk_size == 0 {
            return Err(FsError::InvalidArgument { reason: "replication and chunk size must be positive".into() });
        }
        let (dir, name) = self.lookup_parent(path)?;
        if let Some(id) = self.inodes[&dir].children.get(name) {
            let existing = &self.inodes[id];
            return match (open_existing, existing.kind) {
                (true, Kind::File) => Ok(Response::Inode(existing.clone())),
                (true, Kind::Dir) => Err(FsError::IsADirectory { path: path.to_string() }),
                (false, _) => Err(FsError::AlreadyExists { path: path.to_string() }),
            };
        }
        let id = self.new_inode(dir, Kind::File, replication, chunk_size, mtime_ms);
        self.link(dir, name, id, mtime_ms);
        Ok(Response::Inode(self.inodes[&id].clone()))
    }

    /// Drops an inode and everything below it; their chunks become garbage.
    fn drop_tree(&mut self, id: u64) {
        let Some(inode) = self.inodes.remove(&id) else {
            return;
        };
        for child in inode.children.values() {
            self.drop_tree(*child);
        }
        for chunk in inode.chunks.values() {
            self.discard_chunk(chunk.id, &chunk.replicas);
            self.corrupt.remove(&chunk.id);
        }
    }

    pub(crate) fn discard_chunk(&mut self, chunk_id: u64, holders: &[u64]) {
        if !holders.is_empty() {
            self.garbage.entry(chunk_id).or_default().extend(holders.iter().copied());
        }
    }

    fn remove(&mut self, path: &NormalPath, recursive: bool) -> Result<Response, FsError> {
        let (dir, name) = self.lookup_parent(path)?;
        let id = *self.inodes[&dir].children.get(name).ok_or_else(|| not_found(path))?;
        let inode = &self.inodes[&id];
        if inode.kind == Kind::Dir && !inode.children.is_empty() && !recursive {
            return Err(FsError::NotEmpty { path: path.to_string() });
        }
        self.inodes.get_mut(&dir).expect("parent exists").children.remove(name);
        self.drop_tree(id);
        Ok(Response::Ok)
    }

    fn rename(&mut self, src: &NormalPath, dst: &NormalPath, mtime_ms: u64) -> Result<Response, FsError> {
        let (src_dir, src_name) = self.lookup_parent(src)?;
        let id = *self.inodes[&src_dir].children.get(src_name).ok_or_else(|| not_found(src))?;
        // Moving onto an existing directory moves into it, as mv(1) does.
        let dst = match self.lookup(dst) {
            Ok(d) if d.kind == Kind::Dir && d.id != id => dst.join(src_name),
            _ => dst.clone(),
        };
        if dst == *src {
            return Ok(Response::Ok);
        }
        if dst.starts_with(src) {
            return Err(FsError::RenameIntoSelf { src: src.to_string(), dst: dst.to_string() });
        }
        let (dst_dir, dst_name) = self.lookup_parent(&dst)?;
        let src_kind = self.inodes[&id].kind;
        let replaced = self.inodes[&dst_dir].children.get(dst_name).copied();
        if let Some(old) = replaced {
            let old = &self.inodes[&old];
            match (src_kind, old.kind) {
                (Kind::File, Kind::File) => {}
                (Kind::Dir, Kind::Dir) if old.children.is_empty() => {}
                (Kind::Dir, Kind::Dir) => {
                    return Err(FsError::NotEmpty { path: dst.to_string() });
                }
                (Kind::File, Kind::Dir) => {
                    return Err(FsError::IsADirectory { path: dst.to_string() });
                }
                (Kind::Dir, Kind::File) => {
                    return Err(FsError::NotADirectory { path: dst.to_string() });
                }
            }
        }
        self.inodes.get_mut(&src_dir).expect("parent exists").children.remove(src_name);
        if let Some(old) = replaced {
            self.drop_tree(old);
        }
        self.link(dst_dir, dst_name, id, mtime_ms);
        self.inodes.get_mut(&id).expect("moved inode exists").parent = dst_dir;
        Ok(Response::Ok)
    }

    pub(crate) fn file_mut(&mut self, inode: u64) -> Result<&mut Inode, FsError> {
        let f = self.inodes.get_mut(&inode).ok_or(FsError::StaleInode { inode })?;
        if f.kind != Kind::File {
            return Err(FsError::IsADirectory { path: format!("inode {inode}") });
        }
        Ok(f)
    }

    fn prepare_write(
        &mut self,
        inode: u64,
        index: u64,
        expect_id: Option<u64>,
        expect_version: u64,
        replicas: &[u64],
    ) -> Result<Response, FsError> {
        if replicas.is_empty() || replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() {
            return Err(FsError::InvalidArgument {
                reason: format!("replicas must be distinct and non-empty: {replicas:?}"),
            });
        }
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

    fn commit_write(
        &mut self,
        inode: u64,
        chunks: &[(u64, u64, u64)],
        size: u64,
        truncate: bool,
        mtime_ms: u64,
    ) -> Result<Response, FsError> {
        let f = self.file_mut(inode)?;
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
        f.mtime_ms = mtime_ms;
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
        self.garbage.iter().filter(|(_, holders)| holders.contains(&node)).map(|(c, _)| *c).take(max).collect()
    }
}

/// Helpers for the state machine's tests, here and in the modules that extend it.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub fn p(s: &str) -> NormalPath {
        NormalPath::parse(s).unwrap()
    }

    /// Applies a command with no request id at leader time 1.
    pub fn run(st: &mut FsState, cmd: Command) -> Response {
        st.apply(&Proposal { now_ms: 1, request: None, cmd })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{p, run};
    use super::*;

    fn create(st: &mut FsState, path: &str) -> Inode {
        match run(st, Command::Create { path: p(path), replication: 2, chunk_size: 100, open_existing: false }) {
            Response::Inode(i) => i,
            other => panic!("create {path}: {other:?}"),
        }
    }

    fn prepare(st: &mut FsState, inode: u64, index: u64, replicas: &[u64]) -> Response {
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

    #[test]
    fn namespace_basics() {
        let mut st = FsState::default();
        assert_eq!(
            run(&mut st, Command::Mkdir { path: p("/a/b"), parents: false }),
            Response::Err(FsError::NotFound { path: "/a".into() })
        );
        assert!(matches!(run(&mut st, Command::Mkdir { path: p("/a/b"), parents: true }), Response::Inode(_)));
        create(&mut st, "/a/b/f");
        let again =
            run(&mut st, Command::Create { path: p("/a/b/f"), replication: 2, chunk_size: 100, open_existing: false });
        assert_eq!(again, Response::Err(FsError::AlreadyExists { path: "/a/b/f".into() }));
        assert_eq!(
            run(&mut st, Command::Remove { path: p("/a"), recursive: false }),
            Response::Err(FsError::NotEmpty { path: "/a".into() })
        );
        assert!(matches!(st.lookup(&p("/a/b/f/x")), Err(FsError::NotADirectory { .. })));
        assert_eq!(run(&mut st, Command::Remove { path: p("/a"), recursive: true }), Response::Ok);
        assert_eq!(st.inodes.len(), 1, "only the root is left");
    }

    #[test]
    fn failed_commands_change_nothing() {
        let mut st = FsState::default();
        create(&mut st, "/f");
        let before = st.clone();
        let cmds = [
            Command::Mkdir { path: p("/f/x"), parents: true },
            Command::Create { path: p("/f"), replication: 2, chunk_size: 100, open_existing: false },
            Command::Remove { path: p("/nope"), recursive: true },
            Command::Rename { src: p("/nope"), dst: p("/x") },
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

    #[test]
    fn rename_rules() {
        let mut st = FsState::default();
        run(&mut st, Command::Mkdir { path: p("/d/e"), parents: true });
        create(&mut st, "/f");
        create(&mut st, "/g");
        assert_eq!(
            run(&mut st, Command::Rename { src: p("/d"), dst: p("/d/e/x") }),
            Response::Err(FsError::RenameIntoSelf { src: "/d".into(), dst: "/d/e/x".into() })
        );
        // Onto a directory: moves into it.
        assert_eq!(run(&mut st, Command::Rename { src: p("/f"), dst: p("/d") }), Response::Ok);
        assert!(st.lookup(&p("/d/f")).is_ok());
        // Onto a file: replaces it.
        assert_eq!(run(&mut st, Command::Rename { src: p("/g"), dst: p("/d/f") }), Response::Ok);
        assert!(st.lookup(&p("/g")).is_err());
        assert_eq!(st.lookup(&p("/d/f")).unwrap().parent, st.lookup(&p("/d")).unwrap().id);
    }

    #[test]
    fn write_lifecycle_and_garbage() {
        let mut st = FsState::default();
        let f = create(&mut st, "/f");
        let Response::Chunk { chunk, .. } = prepare(&mut st, f.id, 0, &[10, 11]) else { panic!() };
        assert_eq!((chunk.version, chunk.committed_version), (1, 0));
        // A stale plan is refused.
        let stale = run(
            &mut st,
            Command::PrepareWrite {
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
            Command::CommitWrite {
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
        run(&mut st, Command::ForgetGarbage { node: 11, chunks: vec![chunk.id] });
        assert!(st.garbage.is_empty());
        // Truncate drops whole chunks past the end; remove drops the rest.
        prepare(&mut st, f.id, 1, &[10, 11]);
        let c1 = st.inodes[&f.id].chunks[&1].id;
        run(&mut st, Command::CommitWrite { inode: f.id, chunks: vec![], size: 50, truncate: true, fence: None });
        assert_eq!(st.garbage_for(11, 10), vec![c1]);
        run(&mut st, Command::Remove { path: p("/f"), recursive: false });
        assert_eq!(st.garbage_for(10, 10), vec![chunk.id, c1]);
    }

    #[test]
    fn retried_requests_apply_once() {
        let mut st = FsState::default();
        let req = |seq, done_below| Some(RequestId { client: 7, seq, done_below });
        let mkdir = |request| Proposal { now_ms: 5, request, cmd: Command::Mkdir { path: p("/d"), parents: false } };
        let first = st.apply(&mkdir(req(1, 1)));
        assert!(matches!(first, Response::Inode(_)));
        let after_first = st.clone();
        // The same request again (a retry after a lost answer): the first answer, no change.
        assert_eq!(st.apply(&mkdir(req(1, 1))), first);
        assert_eq!(st, after_first);
        // A new request for the same thing is a real second attempt.
        assert_eq!(st.apply(&mkdir(req(2, 1))), Response::Err(FsError::AlreadyExists { path: "/d".into() }));
        // Once the client says it has answers below 3, they are forgotten, and
        // a stray copy of an answered request is refused without effect.
        st.apply(&mkdir(req(3, 3)));
        assert_eq!(st.clients[&7].replies.keys().copied().collect::<Vec<_>>(), vec![3]);
        let before = st.clone();
        assert!(matches!(st.apply(&mkdir(req(1, 3))), Response::Err(FsError::InvalidArgument { .. })));
        assert_eq!(st.clients[&7].replies, before.clients[&7].replies);
        // An idle client is forgotten after the expiry.
        run(&mut st, Command::Mkdir { path: p("/e"), parents: false });
        st.apply(&Proposal {
            now_ms: 5 + CLIENT_IDLE_EXPIRY_MS + 1,
            request: None,
            cmd: Command::Mkdir { path: p("/x"), parents: false },
        });
        assert!(st.clients.is_empty());
    }

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

    #[test]
    fn replication_is_inherited() {
        let mut st = FsState::default();
        run(&mut st, Command::Mkdir { path: p("/d/e"), parents: true });
        assert_eq!(st.inherited_replication(&p("/d/e/f")), 0);
        let d = st.lookup(&p("/d")).unwrap().id;
        st.inodes.get_mut(&d).unwrap().replication = 3;
        assert_eq!(st.inherited_replication(&p("/d/e/f")), 3);
    }
}
