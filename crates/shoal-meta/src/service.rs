//! The gRPC face of meta: namespace operations for clients and the cluster
//! registry for chunk servers and operators.
//!
//! Heartbeats also carry healing: confirmed deletes, corrupt replicas, and
//! chunk reports, reconciled here ([`crate::reconcile`]) into one `Reconcile`
//! command. Operators get `Fsck`, `Decommission`, `Rebalance` and `SetRepair`;
//! the work itself is the leader's healing task ([`crate::repair`]).
//!
//! Every change is a [`Command`] proposed through Raft ([`Node::write`]);
//! this module only validates input, gathers what the pure planning in
//! [`crate::plan`] and [`crate::health`] needs (the state and the leader's
//! view of liveness), and turns answers and errors into gRPC. Reads of the namespace go through
//! a read-index round ([`Node::linearizable`], shared by the reads waiting
//! at that moment), so a client never sees state older than a change it has
//! seen acknowledged.
//!
//! Error mapping: a node that is not the leader answers `UNAVAILABLE` with the
//! leader's address under [`shoal_proto::LEADER_KEY`]; a namespace error answers
//! its own code with the typed [`FsError`] as JSON in the status details.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ServerState};
use shoal_core::{FsError, NormalPath};
use shoal_proto::capability::{self, CapabilityKey, Grant, Mode};
use shoal_proto::meta as pb;
use tonic::{Request, Response as TonicResponse, Status};

use crate::fsm::reserved::RUN_LIFETIME_MS;
use crate::fsm::xattrs;
use crate::fsm::{
    AttrChange, ChunkPlace, Command, Fence, FsState, Inode, Kind, NamespaceCmd, NodeCmd, Owner, Prepared, RULES,
    ReplicaCmd, RequestId, Response, TimeSet, WriteCmd,
};
use crate::node::{Node, not_leader};
use crate::reconcile::{self, Report};
use crate::registry::{Beat, Liveness};
use crate::repair::Healer;
use crate::sessions::SessionClock;
use crate::{bounds, health, plan, repair};

/// How often a PrepareWrite re-plans after losing a race with another writer.
const PREPARE_ATTEMPTS_MAX: usize = 8;
/// How long `admin meta add` waits for the new node to catch up; under the
/// client's per-attempt limit, so the call is not retried half-way.
const LEARNER_CATCH_UP_MAX: std::time::Duration = std::time::Duration::from_millis(2500);
/// Garbage chunks named in one heartbeat reply.
const GARBAGE_PER_BEAT_MAX: usize = 1024;
/// Unhealthy chunks one fsck answer names.
const FSCK_PROBLEMS_MAX: usize = 1000;

/// Settings the services need.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub node_id: u64,
    pub chunk_size_bytes: u64,
    pub replication: u32,
    /// How long a chunk capability is valid after it is signed.
    pub capability_lifetime: std::time::Duration,
}

#[derive(Clone)]
pub struct MetaService {
    pub node: Node,
    pub sessions: Arc<SessionClock>,
    pub settings: Arc<ServiceSettings>,
    pub healer: Arc<Healer>,
    /// Signs chunk capabilities; None on an `--insecure` node (none are
    /// handed out, and chunk servers check none).
    pub capabilities: Option<CapabilityKey>,
    /// Reserved chunk ids this leader hands out to files written before
    /// they are created (`PrepareNew`).
    pub new_ids: Arc<crate::new_ids::IdPool>,
    /// Per chunk server, where the next beat's look through the garbage
    /// records goes on from ([`plan::delete_candidates`]); this process's
    /// own, not replicated (a node leading for the first time starts from
    /// the first record; one leading again goes on from where it was).
    pub garbage_cursors: Arc<std::sync::Mutex<HashMap<u64, u64>>>,
}

type Reply<T> = Result<TonicResponse<T>, Status>;

/// The gRPC status for a namespace error, with the typed error in its details.
pub fn fs_status(e: FsError) -> Status {
    use tonic::Code;
    let code = match &e {
        FsError::InvalidPath(_) | FsError::InvalidArgument { .. } | FsError::BadReplication { .. } => {
            Code::InvalidArgument
        }
        FsError::NotFound { .. } | FsError::StaleInode { .. } | FsError::NoAttribute { .. } => Code::NotFound,
        FsError::AttributeLimit { .. } => Code::InvalidArgument,
        FsError::LinkToDirectory { .. } | FsError::TooManyLinks { .. } => Code::FailedPrecondition,
        FsError::AlreadyExists { .. } => Code::AlreadyExists,
        FsError::NotADirectory { .. }
        | FsError::IsADirectory { .. }
        | FsError::NotEmpty { .. }
        | FsError::RenameIntoSelf { .. }
        | FsError::Root
        | FsError::ChunkChanged { .. } => Code::FailedPrecondition,
        FsError::NotEnoughServers { .. } => Code::ResourceExhausted,
        FsError::NoReplica { .. } => Code::DataLoss,
        FsError::SessionExpired { .. }
        | FsError::NotLocked { .. }
        | FsError::WouldBlock { .. }
        | FsError::LockTimeout { .. }
        | FsError::LockUpgrade { .. }
        | FsError::Deadlock { .. } => Code::FailedPrecondition,
        FsError::TooManyLocks { .. } => Code::ResourceExhausted,
        FsError::Fenced { .. } => Code::PermissionDenied,
    };
    Status::with_details(code, e.to_string(), e.to_bytes().into())
}

pub(crate) fn parse_path(p: &str) -> Result<NormalPath, Status> {
    NormalPath::parse(p).map_err(|e| fs_status(e.into()))
}

/// The wire's kind of special file for `kind`.
fn special_pb(kind: Kind) -> pb::Special {
    match kind {
        Kind::Fifo => pb::Special::Fifo,
        Kind::Socket => pb::Special::Socket,
        Kind::CharDevice => pb::Special::CharDevice,
        Kind::BlockDevice => pb::Special::BlockDevice,
        Kind::Dir | Kind::File | Kind::Symlink => pb::Special::None,
    }
}

/// The state machine's kind for a special file on the wire.
fn special_kind(s: pb::Special) -> Result<Kind, Status> {
    match s {
        pb::Special::Fifo => Ok(Kind::Fifo),
        pb::Special::Socket => Ok(Kind::Socket),
        pb::Special::CharDevice => Ok(Kind::CharDevice),
        pb::Special::BlockDevice => Ok(Kind::BlockDevice),
        pb::Special::None => Err(fs_status(FsError::InvalidArgument {
            reason: "mknod makes FIFOs, sockets and devices; files are made with create".into(),
        })),
    }
}

/// The wire's form of inode `i`, with `nlink` its link count as
/// [`crate::fsm::FsState::nlink`] counts it in the state `i` came from.
pub fn inode_pb(i: &Inode, nlink: u32) -> pb::Inode {
    let (atime_ns, mtime_ns, ctime_ns) = i.times_ns();
    pb::Inode {
        nlink,
        special: special_pb(i.kind).into(),
        rdev: i.extra.rdev,
        uid: i.uid,
        gid: i.gid,
        atime_ns,
        mtime_ns,
        ctime_ns,
        is_symlink: i.kind == Kind::Symlink,
        target: i.extra.target.clone(),
        id: i.id,
        is_dir: i.kind == Kind::Dir,
        size: i.size,
        mode: i.mode,
        mtime_ms: i.mtime_ms,
        replication: i.replication,
        chunk_size: i.chunk_size,
        chunk_count: i.chunks.len() as u64,
        xattrs: Default::default(),
    }
}

/// [`inode_pb`] with the inode's extended attributes when `with_xattrs`.
fn inode_pb_with(fs: &crate::fsm::FsState, i: &Inode, with_xattrs: bool) -> pb::Inode {
    let mut out = inode_pb(i, fs.nlink(i));
    if with_xattrs {
        out.xattrs = i.extra.xattrs.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    }
    out
}

/// The state machine's form of a new inode's owner, bounded.
fn owner(o: pb::Owner) -> Result<Owner, Status> {
    bounds::check_mode(o.mode).map_err(fs_status)?;
    Ok(Owner { mode: o.mode, uid: o.uid, gid: o.gid })
}

/// The state machine's form of a time to set.
fn time_set(t: Option<pb::TimeSet>) -> Option<TimeSet> {
    t.map(|t| if t.now { TimeSet::Now } else { TimeSet::AtNs(t.ns) })
}

/// The identity URI of a call's TLS peer; None in plaintext.
fn caller_uri<T>(req: &Request<T>) -> Option<String> {
    shoal_proto::authz::peer_identity(req).ok().map(|i| i.uri())
}

/// The state machine's form of a write's fence.
fn fence(f: Option<pb::Fence>) -> Result<Option<Fence>, Status> {
    f.map(|f| Ok(Fence { path: parse_path(&f.path)?, token: f.token })).transpose()
}

/// The state machine's form of a request id; none when the client sent none.
pub(crate) fn request_id(r: Option<pb::RequestId>) -> Option<RequestId> {
    r.map(|r| RequestId { client: r.client, seq: r.seq, done_below: r.done_below })
}

impl MetaService {
    /// The owner a new inode of `kind` at `path` gets when `owner` is asked
    /// for: a set-group-ID parent passes its group on (see
    /// [`crate::fsm::attrs::owner_under`]). Read from this node's state
    /// before proposing, like the replication a new file inherits, once the
    /// state holds every change acknowledged before (a leader that applied
    /// an entry of its own term, or after a read round).
    /// The replication factor a new file at `path` gets when `requested`
    /// (0: inherit from its directories, else the cluster's).
    fn replication_for(&self, path: &NormalPath, requested: u32) -> Result<u32, Status> {
        bounds::check_replication(requested, true).map_err(fs_status)?;
        if requested != 0 {
            return Ok(requested);
        }
        let inherited = {
            let s = self.node.state.read();
            s.fs.inherited_replication(&*s.fs.absolute(path, RULES).map_err(fs_status)?)
        };
        Ok(match inherited {
            0 => self.settings.replication,
            n => n,
        })
    }

    /// The state machine's command for a create request, and the new
    /// file's replication factor.
    async fn create_cmd(&self, r: &pb::CreateRequest) -> Result<(NamespaceCmd, u32), Status> {
        let path = parse_path(&r.path)?;
        let replication = self.replication_for(&path, r.replication)?;
        let chunk_size = self.settings.chunk_size_bytes;
        let cmd = match r.owner {
            Some(o) => NamespaceCmd::MakeNode {
                owner: self.owner_at(&path, owner(o)?, Kind::File).await?,
                path,
                kind: Kind::File,
                replication,
                chunk_size,
                exclusive: !r.open_existing,
            },
            None => NamespaceCmd::Create { path, replication, chunk_size, open_existing: r.open_existing },
        };
        Ok((cmd, replication))
    }

    /// A reserved chunk id for a file written before it is created: from
    /// this leader's run, or from a new run reserved through Raft when that
    /// one is spent or gone (one caller reserves; the others wait for it).
    async fn new_chunk_id(&self) -> Result<u64, Status> {
        // A run is handed out only while an id from it has a write
        // capability's life (and the skew margin) left before the run
        // expires; past that it counts as spent.
        let lifetime_ms =
            self.settings.capability_lifetime.as_millis() as u64 + capability::SKEW_MARGIN_DEFAULT.as_millis() as u64;
        let window_ms = RUN_LIFETIME_MS.saturating_sub(lifetime_ms).max(RUN_LIFETIME_MS / 2);
        let now_ms = capability::now_ms();
        let still_reserved = |start| self.node.state.read().fs.run_handing_out(start, now_ms, window_ms);
        for _ in 0..PREPARE_ATTEMPTS_MAX {
            if let Some(id) = self.new_ids.take(still_reserved) {
                return Ok(id);
            }
            let refill = self.new_ids.refill.clone().lock_owned().await;
            if let Some(id) = self.new_ids.take(still_reserved) {
                return Ok(id);
            }
            // In a task of its own, so a caller that goes away meanwhile
            // does not leave the run reserved and never handed out.
            let (node, pool) = (self.node.clone(), self.new_ids.clone());
            let reserve = tokio::spawn(async move {
                let _refill = refill;
                let cmd = WriteCmd::ReserveChunkIds { count: crate::fsm::RESERVE_IDS_MAX };
                let (start, count) = node.write(cmd, None).await?.into_reserved().map_err(fs_status)?;
                pool.refilled(start, count);
                Ok::<(), Status>(())
            });
            reserve.await.map_err(|e| Status::internal(format!("reserving chunk ids: {e}")))??;
        }
        Err(Status::unavailable("reserved chunk ids keep being pushed out (leaders changing?); retry"))
    }

    async fn owner_at(&self, path: &NormalPath, owner: Owner, kind: Kind) -> Result<Owner, Status> {
        self.node.caught_up().await?;
        let s = self.node.state.read();
        match path.split_last().and_then(|(parent, _)| s.fs.resolve(&parent).ok()) {
            Some(dir) => Ok(crate::fsm::attrs::owner_under(dir, owner, kind)),
            None => Ok(owner),
        }
    }

    /// Like [`Node::write`], with namespace errors turned into statuses.
    pub(crate) async fn write_ok(
        &self,
        cmd: impl Into<Command>,
        request: Option<RequestId>,
    ) -> Result<Response, Status> {
        match self.node.write(cmd, request).await? {
            Response::Err(e) => Err(fs_status(e)),
            r => Ok(r),
        }
    }

    async fn write_inode(&self, cmd: impl Into<Command>, request: Option<RequestId>) -> Reply<pb::InodeReply> {
        let inode = self.node.write(cmd, request).await?.into_inode().map_err(fs_status)?;
        // A directory's link count depends on its entries, which the answer
        // does not carry: it is counted in the state as it is now. Anything
        // else's is the answer's own.
        let nlink = match inode.kind {
            Kind::Dir => {
                let s = self.node.state.read();
                s.fs.inodes.get(&inode.id).map_or(2, |d| s.fs.nlink(d))
            }
            _ => inode.names(),
        };
        Ok(TonicResponse::new(pb::InodeReply { inode: Some(inode_pb(&inode, nlink)), ..Default::default() }))
    }

    /// An encoded capability for `caller` (the TLS peer's identity URI) to
    /// `mode` `version` of chunk `chunk_id`; empty without a key or a caller.
    fn capability(&self, caller: Option<&str>, chunk_id: u64, version: u64, mode: Mode) -> Vec<u8> {
        let (Some(key), Some(identity)) = (&self.capabilities, caller) else { return Vec::new() };
        let grant = Grant {
            chunk_id,
            version,
            identity: identity.to_string(),
            mode,
            expires_at_ms: capability::expiry_from(capability::now_ms(), self.settings.capability_lifetime),
        };
        capability::encode(&key.sign(&grant))
    }

    /// The answer to a writer granted `chunk` (chunk `index` of its file):
    /// where it goes, the version granted, and a capability to write that
    /// version only (a writer fenced out or overtaken by a newer version
    /// holds none for that one).
    fn granted(
        &self,
        index: u64,
        chunk: &crate::fsm::ChunkMeta,
        chunk_size: u64,
        caller: Option<&str>,
    ) -> pb::PrepareWriteReply {
        for r in &chunk.replicas {
            self.node.registry.note_placed(*r);
        }
        let mut loc = self.location(index, chunk, None);
        // The writer needs the version it was granted, not the committed one.
        loc.version = chunk.version;
        loc.capability = self.capability(caller, chunk.id, chunk.version, Mode::Write);
        pb::PrepareWriteReply { chunk: Some(loc), chunk_size, base_version: chunk.committed_version }
    }

    /// Where chunk `c` (at `index`) is, with a capability for `caller` to
    /// read its committed version.
    fn location(&self, index: u64, c: &crate::fsm::ChunkMeta, caller: Option<&str>) -> pb::ChunkLocation {
        let capability = match c.committed_version {
            0 => Vec::new(), // Never committed: a hole, nothing to read.
            v => self.capability(caller, c.id, v, Mode::Read),
        };
        let s = self.node.state.read();
        pb::ChunkLocation {
            capability,
            index,
            id: c.id,
            version: c.committed_version,
            replicas: c
                .replicas
                .iter()
                .map(|r| s.fs.nodes.get(r).map_or_else(|| format!("unknown-node-{r}"), |n| n.addr.clone()))
                .collect(),
        }
    }
}

#[tonic::async_trait]
impl pb::namespace_server::Namespace for MetaService {
    async fn mkdir(&self, req: Request<pb::MkdirRequest>) -> Reply<pb::InodeReply> {
        let r = req.into_inner();
        let path = parse_path(&r.path)?;
        if let Some(o) = r.owner {
            if r.parents {
                return Err(fs_status(FsError::InvalidArgument {
                    reason: "a mkdir with an owner makes one directory (no parents)".into(),
                }));
            }
            let owner = self.owner_at(&path, owner(o)?, Kind::Dir).await?;
            let cmd =
                NamespaceCmd::MakeNode { path, kind: Kind::Dir, owner, replication: 0, chunk_size: 0, exclusive: true };
            return self.write_inode(cmd, request_id(r.request)).await;
        }
        self.write_inode(NamespaceCmd::Mkdir { path, parents: r.parents }, request_id(r.request)).await
    }

    async fn create(&self, req: Request<pb::CreateRequest>) -> Reply<pb::InodeReply> {
        let caller = caller_uri(&req);
        let r = req.into_inner();
        let (cmd, replication) = self.create_cmd(&r).await?;
        // A new file for a writer: its chunk 0 is prepared in the same entry.
        // Without servers enough to place it, the file is made alone and the
        // write's own prepare says what is missing.
        let first = match r.prepare_first_chunk && !r.open_existing {
            true => plan::place_new_chunk(&self.node.server_views(Instant::now()), replication, &[]).ok(),
            false => None,
        };
        let cmd: Command = match first {
            Some(replicas) => WriteCmd::CreatePrepared { create: cmd, replicas }.into(),
            None => cmd.into(),
        };
        // A retry may take the other way than its first attempt (a server
        // died in between) and still gets the first answer: take either shape.
        let (inode, prepared) = self.node.write(cmd, request_id(r.request)).await?.into_created().map_err(fs_status)?;
        let first_chunk = match prepared {
            Some(Prepared::Chunk { chunk, chunk_size }) => Some(self.granted(0, &chunk, chunk_size, caller.as_deref())),
            _ => None,
        };
        Ok(TonicResponse::new(pb::InodeReply {
            inode: Some(inode_pb(&inode, inode.names())),
            path: String::new(),
            first_chunk,
        }))
    }

    async fn stat(&self, req: Request<pb::PathRequest>) -> Reply<pb::InodeReply> {
        let r = req.into_inner();
        let by_inode = r.path.is_empty() && r.inode != 0;
        let path = if by_inode { NormalPath::root() } else { parse_path(&r.path)? };
        self.node.linearizable().await?;
        let s = self.node.state.read();
        if by_inode {
            let inode = s.fs.inode(r.inode).map_err(fs_status)?;
            let path = s.fs.path_of(inode.id);
            return Ok(TonicResponse::new(pb::InodeReply {
                inode: Some(inode_pb_with(&s.fs, inode, r.xattrs)),
                path,
                first_chunk: None,
            }));
        }
        let inode = s.fs.resolve(&path).map_err(fs_status)?;
        Ok(TonicResponse::new(pb::InodeReply {
            inode: Some(inode_pb_with(&s.fs, inode, r.xattrs)),
            ..Default::default()
        }))
    }

    async fn list(&self, req: Request<pb::PathRequest>) -> Reply<pb::ListReply> {
        let r = req.into_inner();
        let with = r.xattrs;
        let by_inode = r.path.is_empty() && r.inode != 0;
        let mut path = if by_inode { NormalPath::root() } else { parse_path(&r.path)? };
        self.node.linearizable().await?;
        let s = self.node.state.read();
        let inode = if by_inode {
            let inode = s.fs.inode(r.inode).map_err(fs_status)?;
            path = parse_path(&s.fs.path_of(inode.id))?;
            inode
        } else {
            path = s.fs.absolute(&path, RULES).map_err(fs_status)?.into_owned();
            s.fs.lookup(&path).map_err(fs_status)?
        };
        let entries = match inode.kind {
            Kind::Dir => inode
                .children
                .iter()
                .map(|(name, id)| pb::DirEntry {
                    name: name.to_string(),
                    inode: Some(inode_pb_with(&s.fs, &s.fs.inodes[id], with)),
                })
                .collect(),
            _ => {
                let name = path.split_last().map_or("/", |(_, n)| n).to_string();
                vec![pb::DirEntry { name, inode: Some(inode_pb_with(&s.fs, inode, with)) }]
            }
        };
        Ok(TonicResponse::new(pb::ListReply { entries }))
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Reply<pb::Empty> {
        let r = req.into_inner();
        let path = parse_path(&r.path)?;
        let request = request_id(r.request);
        // unlink(2) and rmdir(2): the kind is checked as the remove applies.
        if r.recursive && r.only() != pb::RemoveOnly::Any {
            return Err(fs_status(FsError::InvalidArgument {
                reason: "a recursive remove removes any kind (no `only`)".to_string(),
            }));
        }
        let cmd = match r.only() {
            pb::RemoveOnly::Any => NamespaceCmd::Remove { path, recursive: r.recursive },
            pb::RemoveOnly::NotDirectory => NamespaceCmd::RemoveKind { path, dir: false },
            pb::RemoveOnly::Directory => NamespaceCmd::RemoveKind { path, dir: true },
        };
        self.write_ok(cmd, request).await?;
        Ok(TonicResponse::new(pb::Empty {}))
    }

    async fn rename(&self, req: Request<pb::RenameRequest>) -> Reply<pb::Empty> {
        let r = req.into_inner();
        let (src, dst) = (parse_path(&r.src)?, parse_path(&r.dst)?);
        if src.is_root() || dst.is_root() {
            return Err(fs_status(FsError::Root));
        }
        let fence = fence(r.fence)?;
        let cmd = match (r.exact, fence) {
            (true, Some(_)) => {
                return Err(fs_status(FsError::InvalidArgument { reason: "an exact rename takes no fence".into() }));
            }
            // `no_replace` comes with it from clients (see the proto) and means nothing here.
            (true, None) if r.exchange => NamespaceCmd::Exchange { a: src, b: dst },
            (true, None) => NamespaceCmd::RenameExact { src, dst, no_replace: r.no_replace },
            (false, _) if r.exchange => {
                return Err(fs_status(FsError::InvalidArgument { reason: "an exchange is an exact rename".into() }));
            }
            (false, fence) => NamespaceCmd::Rename { src, dst, fence },
        };
        self.write_ok(cmd, request_id(r.request)).await?;
        Ok(TonicResponse::new(pb::Empty {}))
    }

    async fn symlink(&self, req: Request<pb::SymlinkRequest>) -> Reply<pb::InodeReply> {
        let r = req.into_inner();
        let path = parse_path(&r.path)?;
        crate::fsm::namespace::check_symlink_target(&r.target).map_err(fs_status)?;
        let gid = self.owner_at(&path, Owner { mode: 0o777, uid: r.uid, gid: r.gid }, Kind::Symlink).await?.gid;
        let cmd = NamespaceCmd::Symlink { path, target: r.target, uid: r.uid, gid };
        self.write_inode(cmd, request_id(r.request)).await
    }

    async fn mknod(&self, req: Request<pb::MknodRequest>) -> Reply<pb::InodeReply> {
        let r = req.into_inner();
        let path = parse_path(&r.path)?;
        let kind = special_kind(r.kind())?;
        let owner = owner(r.owner.unwrap_or(pb::Owner { mode: 0o644, uid: 0, gid: 0 }))?;
        let owner = self.owner_at(&path, owner, kind).await?;
        self.write_inode(NamespaceCmd::Mknod { path, kind, owner, rdev: r.rdev }, request_id(r.request)).await
    }

    async fn link(&self, req: Request<pb::LinkRequest>) -> Reply<pb::InodeReply> {
        let r = req.into_inner();
        let (src, dst) = (parse_path(&r.src)?, parse_path(&r.dst)?);
        if dst.is_root() {
            return Err(fs_status(FsError::AlreadyExists { path: "/".into() }));
        }
        self.write_inode(NamespaceCmd::Link { src, dst }, request_id(r.request)).await
    }

    async fn set_attr(&self, req: Request<pb::SetAttrRequest>) -> Reply<pb::InodeReply> {
        let r = req.into_inner();
        let change =
            AttrChange { mode: r.mode, uid: r.uid, gid: r.gid, atime: time_set(r.atime), mtime: time_set(r.mtime) };
        crate::fsm::attrs::check_change(&change).map_err(fs_status)?;
        self.write_inode(NamespaceCmd::SetAttr { inode: r.inode, change }, request_id(r.request)).await
    }

    async fn layout(&self, req: Request<pb::LayoutRequest>) -> Reply<pb::LayoutReply> {
        let caller = caller_uri(&req);
        let r = req.into_inner();
        // Inode 0 is never a file's: the request names a path instead.
        let path = match r.inode {
            0 => Some(parse_path(&r.path)?),
            _ => None,
        };
        self.node.linearizable().await?;
        let (inode, chunks) = {
            let s = self.node.state.read();
            let f = match &path {
                Some(p) => s.fs.resolve(p),
                None => s.fs.inode(r.inode),
            }
            .map_err(fs_status)?;
            (
                inode_pb_with(&s.fs, f, r.xattrs),
                f.chunks.iter().map(|(index, c)| (*index, c.clone())).collect::<Vec<_>>(),
            )
        };
        let chunks = chunks.iter().map(|(index, c)| self.location(*index, c, caller.as_deref())).collect();
        Ok(TonicResponse::new(pb::LayoutReply { inode: Some(inode), chunks }))
    }

    async fn prepare_write(&self, req: Request<pb::PrepareWriteRequest>) -> Reply<pb::PrepareWriteReply> {
        let caller = caller_uri(&req);
        let r = req.into_inner();
        let fence = fence(r.fence)?;
        // The chunk index is bounded by `plan_prepare`, against the file's chunk size.
        bounds::check_failed(&r.failed).map_err(fs_status)?;
        // A leader that has applied an entry of its own term has applied
        // everything committed before it led, and every file a client can
        // name was made by then; it plans from its state without a
        // read-index round (a plan that is behind on this term's own entries
        // is refused when it applies, as a Conflict, and planned again). A
        // new leader waits for the round, so a file made under the last
        // leader is never "not found" here. A refusal by the plan (no such
        // file, no servers) could still come from a leader deposed without
        // knowing it: it is only given after a round confirmed this state.
        // So is a refusal of the writer's base (`plan::check_base`).
        let mut confirmed = self.node.caught_up().await?;
        for _ in 0..PREPARE_ATTEMPTS_MAX {
            let servers = self.node.server_views(Instant::now());
            let cmd = {
                let s = self.node.state.read();
                plan::plan_prepare(&s.fs, &servers, r.inode, r.chunk_index, &r.failed, fence.clone()).and_then(|cmd| {
                    match &r.base {
                        Some(b) => plan::check_base(&s.fs, r.inode, r.chunk_index, (b.id, b.version)).map(|()| cmd),
                        None => Ok(cmd),
                    }
                })
            };
            let cmd = match cmd {
                Ok(cmd) => cmd,
                Err(_) if !confirmed => {
                    self.node.linearizable().await?;
                    confirmed = true;
                    continue;
                }
                Err(e) => return Err(fs_status(e)),
            };
            match self.node.write(cmd, request_id(r.request)).await?.into_prepared().map_err(fs_status)? {
                Prepared::Chunk { chunk, chunk_size } => {
                    return Ok(TonicResponse::new(self.granted(r.chunk_index, &chunk, chunk_size, caller.as_deref())));
                }
                Prepared::Conflict => continue,
            }
        }
        Err(Status::aborted("too many concurrent writers on this chunk; retry"))
    }

    async fn commit_write(&self, req: Request<pb::CommitWriteRequest>) -> Reply<pb::InodeReply> {
        let r = req.into_inner();
        bounds::check_file_size(r.size).map_err(fs_status)?;
        // A file that is gone (or a directory) is refused when the commit applies.
        let chunk_size = self.node.state.read().fs.inode(r.inode).map_or(1, |f| f.chunk_size.max(1));
        for c in &r.chunks {
            bounds::check_chunk_index(c.index, chunk_size).map_err(fs_status)?;
        }
        let chunks = r.chunks.iter().map(|c| (c.index, c.id, c.version)).collect();
        let fence = fence(r.fence)?;
        let cmd = WriteCmd::CommitWrite { inode: r.inode, chunks, size: r.size, truncate: r.truncate, fence };
        self.write_inode(cmd, request_id(r.request)).await
    }

    async fn prepare_new(&self, req: Request<pb::PrepareNewRequest>) -> Reply<pb::PrepareWriteReply> {
        let caller = caller_uri(&req);
        let r = req.into_inner();
        let path = parse_path(&r.path)?;
        bounds::check_failed(&r.failed).map_err(fs_status)?;
        // Only the leader hands out ids: of its own run.
        self.node.leader_only()?;
        // A create that would be refused is refused now, before the writer
        // sends its bytes (the create itself checks again as it applies).
        // A leader that has not caught up answers after a read round, so a
        // name (or a directory's replication) set under the last leader is seen.
        self.node.caught_up().await?;
        let replication = self.replication_for(&path, r.replication)?;
        let failed: Vec<u64> = {
            let s = self.node.state.read();
            let path = s.fs.absolute(&path, RULES).map_err(fs_status)?;
            s.fs.refuse_reserved(&path, false).map_err(fs_status)?;
            s.fs.lookup_parent(&path).map_err(fs_status)?;
            if s.fs.lookup(&path).is_ok() {
                return Err(fs_status(FsError::AlreadyExists { path: path.to_string() }));
            }
            s.fs.nodes.values().filter(|n| r.failed.contains(&n.addr)).map(|n| n.id).collect()
        };
        let replicas =
            plan::place_new_chunk(&self.node.server_views(Instant::now()), replication, &failed).map_err(fs_status)?;
        let id = self.new_chunk_id().await?;
        let chunk = crate::fsm::ChunkMeta { id, version: 1, committed_version: 0, replicas, lagging: Vec::new() };
        Ok(TonicResponse::new(self.granted(0, &chunk, self.settings.chunk_size_bytes, caller.as_deref())))
    }

    async fn create_written(&self, req: Request<pb::CreateWrittenRequest>) -> Reply<pb::InodeReply> {
        let caller = caller_uri(&req);
        let r = req.into_inner();
        let invalid = |reason: &str| fs_status(FsError::InvalidArgument { reason: reason.to_string() });
        let create = r.create.ok_or_else(|| invalid("CreateWritten names no file to create"))?;
        if create.open_existing || create.prepare_first_chunk {
            return Err(invalid("a file created with its data is new: no open_existing, no prepare_first_chunk"));
        }
        let loc = r.chunk.ok_or_else(|| invalid("CreateWritten names no chunk"))?;
        if loc.version != 1 || loc.index != 0 {
            return Err(invalid("a file created with its data has version 1 of its chunk 0"));
        }
        bounds::check_file_size(r.size).map_err(fs_status)?;
        if loc.replicas.is_empty() || loc.replicas.len() > bounds::REPLICATION_MAX as usize {
            return Err(invalid(&format!(
                "a chain of 1 to {} servers, not {}",
                bounds::REPLICATION_MAX,
                loc.replicas.len()
            )));
        }
        // The capability PrepareNew granted: this caller was given that chunk
        // to write. Its expiry is not checked: a retry of a create that went
        // through must reach the request's recorded answer, and whether the
        // id may still be used is the state machine's to say.
        if let (Some(key), Some(identity)) = (&self.capabilities, caller.as_deref()) {
            let ask = capability::Ask { chunk_id: loc.id, version: 1, identity, mode: Mode::Write, now_ms: 0 };
            if let Err(e) = key.check(capability::decode(&loc.capability).as_ref(), &ask) {
                return Err(Status::permission_denied(format!("CreateWritten: {e}")));
            }
        }
        // A server that moved since (a new address) means a fresh chain.
        let replicas: Vec<u64> = {
            let s = self.node.state.read();
            let id_of = |addr: &String| s.fs.nodes.values().find(|n| &n.addr == addr).map(|n| n.id);
            let ids: Option<Vec<u64>> = loc.replicas.iter().map(id_of).collect();
            ids.ok_or_else(|| fs_status(FsError::ChunkChanged { inode: 0, index: 0 }))?
        };
        let (create, _) = self.create_cmd(&create).await?;
        let cmd = WriteCmd::CreateWritten { create, chunk: loc.id, replicas, size: r.size };
        self.write_inode(cmd, request_id(r.request)).await
    }

    async fn set_xattrs(&self, req: Request<pb::SetXattrsRequest>) -> Reply<pb::Empty> {
        let r = req.into_inner();
        let path = parse_path(&r.path)?;
        // Bounded before proposing; the state machine checks the sizes.
        if r.remove.len() + r.set.len() > xattrs::XATTR_CHANGES_MAX {
            return Err(fs_status(FsError::AttributeLimit {
                path: path.to_string(),
                limit: format!("one change may name at most {} attributes", xattrs::XATTR_CHANGES_MAX),
            }));
        }
        let set = r.set.into_iter().collect();
        self.write_ok(NamespaceCmd::SetXattrs { path, remove: r.remove, set }, request_id(r.request)).await?;
        Ok(TonicResponse::new(pb::Empty {}))
    }

    async fn remove_xattr(&self, req: Request<pb::RemoveXattrRequest>) -> Reply<pb::Empty> {
        let r = req.into_inner();
        let path = parse_path(&r.path)?;
        self.write_ok(NamespaceCmd::RemoveXattr { path, name: r.name }, request_id(r.request)).await?;
        Ok(TonicResponse::new(pb::Empty {}))
    }

    async fn set_replication(&self, req: Request<pb::SetReplicationRequest>) -> Reply<pb::Empty> {
        let r = req.into_inner();
        let path = parse_path(&r.path)?;
        bounds::check_replication(r.replication, false).map_err(fs_status)?;
        self.write_ok(ReplicaCmd::SetReplication { path, replication: r.replication }, request_id(r.request)).await?;
        self.healer_wake();
        Ok(TonicResponse::new(pb::Empty {}))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for MetaService {
    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Reply<pb::HeartbeatReply> {
        let r = req.into_inner();
        bounds::check_usage(r.capacity_bytes, r.used_bytes, r.chunk_count).map_err(fs_status)?;
        // Only the leader tracks liveness; others send the server on. The
        // read-index makes sure this leader is current and has applied all it
        // committed, so a deposed or lagging leader neither reconciles a report
        // against old state nor hands out an old delete list.
        self.node.leader_only()?;
        self.node.linearizable().await?;
        let known = self.node.state.read().fs.nodes.get(&r.node_id).map(|n| n.addr.clone());
        if known.as_deref() != Some(r.addr.as_str()) {
            self.write_ok(NodeCmd::RegisterNode { id: r.node_id, addr: r.addr.clone() }, None).await?;
        }
        let now = Instant::now();
        // A server this leader has not heard from lately may hold anything.
        let returning = self.node.registry.unheard(r.node_id, now);
        self.node.registry.record(
            r.node_id,
            Beat {
                at: now,
                capacity_bytes: r.capacity_bytes,
                used_bytes: r.used_bytes,
                chunk_count: r.chunk_count,
                read_bytes_total: r.read_bytes_total,
                written_bytes_total: r.written_bytes_total,
            },
        );
        if !r.deleted.is_empty() {
            self.write_ok(NodeCmd::ForgetGarbage { node: r.node_id, chunks: r.deleted }, None).await?;
        }
        if !r.corrupt.is_empty() {
            self.note_corrupt(r.node_id, &r.corrupt).await?;
        }
        let report_token = match r.report {
            Some(report) => self.reconcile_report(r.node_id, report).await?,
            None if returning => self.healer.fresh_token(),
            None => 0,
        };
        let copying_in = self.healer.copying_in(r.node_id);
        let delete = self.heartbeat_deletes(r.node_id, copying_in).await?;
        Ok(TonicResponse::new(pb::HeartbeatReply { delete, report_token }))
    }

    async fn fsck(&self, _req: Request<pb::FsckRequest>) -> Reply<pb::FsckReply> {
        // Liveness is only known to the leader.
        self.node.leader_only()?;
        let servers = self.node.server_views(Instant::now());
        let mut reply = self
            .pass(move |s| {
                let report = health::fsck(&health::chunk_views(s), &servers, FSCK_PROBLEMS_MAX);
                let problems = report
                    .problems
                    .iter()
                    .map(|p| pb::FsckProblem {
                        path: s.path_of(p.place.inode),
                        chunk_index: p.place.index,
                        chunk_id: p.place.chunk,
                        state: p.standing.as_str().into(),
                        good_replicas: p.good,
                        replication: p.replication,
                    })
                    .collect();
                pb::FsckReply {
                    files: s.inodes.values().filter(|i| i.kind == Kind::File).count() as u64,
                    chunks: report.chunks,
                    under_replicated: report.under_replicated,
                    missing: report.missing,
                    corrupt: report.corrupt,
                    over_replicated: report.over_replicated,
                    repairs_in_flight: 0,
                    repair_paused: s.repair_paused,
                    problems,
                    problems_left_out: report.problems_left_out,
                    dead_servers: servers.iter().filter(|v| !v.alive).count() as u64,
                    draining_servers: servers.iter().filter(|v| v.draining).count() as u64,
                    moves_pending: 0,
                }
            })
            .await?;
        reply.repairs_in_flight = self.healer.copies_in_flight() as u64;
        reply.moves_pending = self.healer.moves_pending() as u64;
        Ok(TonicResponse::new(reply))
    }

    async fn report_corrupt(&self, req: Request<pb::ReportCorruptRequest>) -> Reply<pb::Empty> {
        let r = req.into_inner();
        self.node.leader_only()?;
        let node = self.node.state.read().fs.nodes.values().find(|n| n.addr == r.addr).map(|n| n.id);
        match node {
            Some(node) => self.note_corrupt(node, &[r.chunk_id]).await?,
            None => tracing::warn!(addr = %r.addr, "corruption reported on an unknown chunk server"),
        }
        Ok(TonicResponse::new(pb::Empty {}))
    }

    async fn decommission(&self, req: Request<pb::DecommissionRequest>) -> Reply<pb::ChunkServer> {
        let r = req.into_inner();
        self.node.leader_only()?;
        let node = self.node.state.read().fs.nodes.values().find(|n| n.addr == r.addr).map(|n| n.id);
        let Some(node) = node else {
            return Err(fs_status(FsError::InvalidArgument {
                reason: format!("no chunk server is registered at {}", r.addr),
            }));
        };
        self.write_ok(NodeCmd::SetDraining { node, draining: !r.cancel }, None).await?;
        tracing::info!(node, addr = %r.addr, draining = !r.cancel, "decommission");
        self.healer_wake();
        let row = self.server_rows(Instant::now()).await?.into_iter().find(|s| s.id == node);
        row.map(TonicResponse::new).ok_or_else(|| Status::internal("the server vanished"))
    }

    async fn rebalance(&self, _req: Request<pb::Empty>) -> Reply<pb::RebalanceReply> {
        self.node.leader_only()?;
        let servers = self.node.server_views(Instant::now());
        let moves =
            self.pass(move |s| health::plan_rebalance(&health::chunk_views(s), &servers, repair::MOVES_MAX)).await?;
        let reply = pb::RebalanceReply { moves: moves.len() as u64, bytes: moves.iter().map(|m| m.len_bytes).sum() };
        tracing::info!(moves = reply.moves, bytes = reply.bytes, "rebalance planned");
        self.healer.set_moves(moves);
        Ok(TonicResponse::new(reply))
    }

    async fn set_repair(&self, req: Request<pb::SetRepairRequest>) -> Reply<pb::Empty> {
        let paused = req.into_inner().paused;
        self.write_ok(NodeCmd::SetRepairPaused { paused }, None).await?;
        tracing::info!(paused, "repair switched");
        self.healer_wake();
        Ok(TonicResponse::new(pb::Empty {}))
    }

    async fn trigger_snapshot(&self, _req: Request<pb::Empty>) -> Reply<pb::SnapshotReply> {
        let applied = self.node.state.read().last_applied.map_or(0, |l| l.index);
        let built = crate::snapshot_now::build(&self.node.raft, applied).await?;
        tracing::info!(index = built.index, build_ms = built.build.as_millis() as u64, "snapshot built on request");
        Ok(TonicResponse::new(pb::SnapshotReply {
            index: built.index,
            build_ms: built.build.as_millis() as u64,
            size_bytes: built.size_bytes,
        }))
    }

    async fn status(&self, req: Request<pb::StatusRequest>) -> Reply<pb::StatusReply> {
        let mut reply = self.status_reply();
        if req.into_inner().digest {
            let state = self.node.state.clone();
            let digest = tokio::task::spawn_blocking(move || state.digest());
            (reply.applied_index, reply.state_digest) =
                digest.await.map_err(|e| Status::internal(format!("digesting the state: {e}")))?;
        }
        Ok(TonicResponse::new(reply))
    }

    async fn nodes(&self, _req: Request<pb::Empty>) -> Reply<pb::NodesReply> {
        // Liveness is only known to the leader.
        self.node.leader_only()?;
        Ok(TonicResponse::new(pb::NodesReply { servers: self.server_rows(Instant::now()).await? }))
    }

    async fn add_meta(&self, req: Request<pb::AddMetaRequest>) -> Reply<pb::StatusReply> {
        let r = req.into_inner();
        self.node.leader_only()?;
        if r.id == 0 || r.addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(fs_status(FsError::InvalidArgument {
                reason: format!(
                    "a meta node needs an id of 1 or more and a HOST:PORT address, got {} {:?}",
                    r.id, r.addr
                ),
            }));
        }
        let membership = self.node.raft.metrics().borrow().membership_config.membership().clone();
        if membership.voter_ids().any(|v| v == r.id) {
            return Err(Status::already_exists(format!("meta node {} is already a voter", r.id)));
        }
        // Learner first; it becomes a voter only once it has caught up with the
        // log as of its addition, so a node that is not running (or not
        // reachable) never joins the quorum.
        let added =
            self.node.raft.add_learner(r.id, BasicNode::new(r.addr.clone()), false).await.map_err(membership_status)?;
        let target = added.log_id.index;
        let caught_up = self
            .node
            .raft
            .wait(Some(LEARNER_CATCH_UP_MAX))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|rep| rep.get(&r.id).cloned().flatten())
                        .is_some_and(|l| l.index >= target)
                },
                "learner caught up",
            )
            .await;
        if caught_up.is_err() {
            return Err(Status::failed_precondition(format!(
                "meta node {} at {} has not caught up within {LEARNER_CATCH_UP_MAX:?} (is it running, started with \
                 --join?); it stays a learner and does not count for the quorum: run the command again once it runs",
                r.id, r.addr
            )));
        }
        let change = openraft::ChangeMembers::AddVoterIds(std::collections::BTreeSet::from([r.id]));
        self.node.raft.change_membership(change, false).await.map_err(membership_status)?;
        tracing::info!(id = r.id, addr = %r.addr, "meta node added");
        Ok(TonicResponse::new(self.status_reply()))
    }

    async fn remove_meta(&self, req: Request<pb::RemoveMetaRequest>) -> Reply<pb::StatusReply> {
        let id = req.into_inner().id;
        self.node.leader_only()?;
        let membership = self.node.raft.metrics().borrow().membership_config.membership().clone();
        let voters: Vec<u64> = membership.voter_ids().collect();
        if !voters.contains(&id) && membership.get_node(&id).is_none() {
            return Err(Status::not_found(format!("meta node {id} is not in the group")));
        }
        if voters == [id] {
            return Err(fs_status(FsError::InvalidArgument { reason: "cannot remove the last meta voter".into() }));
        }
        let change = if voters.contains(&id) {
            openraft::ChangeMembers::RemoveVoters(std::collections::BTreeSet::from([id]))
        } else {
            openraft::ChangeMembers::RemoveNodes(std::collections::BTreeSet::from([id]))
        };
        self.node.raft.change_membership(change, false).await.map_err(membership_status)?;
        tracing::info!(id, "meta node removed");
        Ok(TonicResponse::new(self.status_reply()))
    }
}

/// The status for a failed membership change.
fn membership_status(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f.leader_node),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => Status::failed_precondition(e.to_string()),
        e => Status::unavailable(format!("meta cannot change its membership now: {e}")),
    }
}

impl MetaService {
    /// Every registered chunk server as operators see it.
    async fn server_rows(&self, now: Instant) -> Result<Vec<pb::ChunkServer>, Status> {
        let (nodes, listed) = self
            .pass(|s| {
                let mut listed: HashMap<u64, u64> = HashMap::new();
                for f in s.inodes.values() {
                    for r in f.chunks.values().flat_map(|c| &c.replicas) {
                        *listed.entry(*r).or_default() += 1;
                    }
                }
                (s.nodes.clone(), listed)
            })
            .await?;
        let rows = nodes
            .values()
            .map(|n| {
                let beat = self.node.registry.last_beat(n.id);
                let state = match self.node.registry.liveness(n.id, now) {
                    Liveness::Alive if n.draining => "draining",
                    Liveness::Alive => "alive",
                    Liveness::Dead => "dead",
                };
                pb::ChunkServer {
                    id: n.id,
                    addr: n.addr.clone(),
                    state: state.into(),
                    capacity_bytes: beat.map_or(0, |b| b.capacity_bytes),
                    used_bytes: beat.map_or(0, |b| b.used_bytes),
                    chunk_count: beat.map_or(0, |b| b.chunk_count),
                    last_heartbeat_ms_ago: beat
                        .map_or(u64::MAX, |b| now.saturating_duration_since(b.at).as_millis() as u64),
                    draining: n.draining,
                    listed_chunks: listed.get(&n.id).copied().unwrap_or(0),
                    read_bytes_total: beat.map_or(0, |b| b.read_bytes_total),
                    written_bytes_total: beat.map_or(0, |b| b.written_bytes_total),
                }
            })
            .collect();
        Ok(rows)
    }

    /// The garbage `node` should delete now ([`plan::heartbeat_deletes`]).
    /// Most beats have none to check, found under the lock; the check of
    /// those there are is a pass.
    async fn heartbeat_deletes(&self, node: u64, copying_in: HashSet<u64>) -> Result<Vec<u64>, Status> {
        // The cursor's lock is not held across the scan: beats of other
        // servers must not queue behind it.
        let mut cursor =
            self.garbage_cursors.lock().unwrap_or_else(|e| e.into_inner()).get(&node).copied().unwrap_or(0);
        let candidates = plan::delete_candidates(
            &self.node.state.read().fs,
            node,
            &copying_in,
            GARBAGE_PER_BEAT_MAX,
            &mut cursor,
            plan::GARBAGE_SCAN_MAX,
        );
        self.garbage_cursors.lock().unwrap_or_else(|e| e.into_inner()).insert(node, cursor);
        if candidates.is_empty() {
            return Ok(candidates);
        }
        self.pass(move |s| plan::heartbeat_deletes(s, node, &candidates)).await
    }

    /// [`crate::sm_store::SharedState::pass`] for a handler.
    async fn pass<T: Send + 'static>(&self, f: impl FnOnce(&FsState) -> T + Send + 'static) -> Result<T, Status> {
        self.node.state.pass(f).await.map_err(|e| Status::internal(format!("a pass over the namespace failed: {e}")))
    }

    /// Starts a repair round now rather than at the next tick.
    pub(crate) fn healer_wake(&self) {
        self.healer.wake();
    }

    /// Records that `node`'s replicas of `chunks` failed their checksums
    /// (only those it is listed for and not already known).
    async fn note_corrupt(&self, node: u64, chunks: &[u64]) -> Result<(), Status> {
        // A server lists every corrupt replica it still holds on every beat:
        // only those not yet recorded need the pass that finds them.
        let wanted: HashSet<u64> = {
            let s = self.node.state.read();
            chunks.iter().copied().filter(|c| !s.fs.corrupt.get(c).is_some_and(|bad| bad.contains(&node))).collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        let places: Vec<ChunkPlace> = self
            .pass(move |s| {
                let newly_bad = |c: &u64| !s.corrupt.get(c).is_some_and(|bad| bad.contains(&node));
                s.chunk_places_of(&wanted)
                    .into_iter()
                    .filter(|p| s.chunk_at(*p).is_some_and(|c| c.replicas.contains(&node)) && newly_bad(&p.chunk))
                    .collect()
            })
            .await?;
        if places.is_empty() {
            return Ok(());
        }
        tracing::warn!(node, chunks = ?places.iter().map(|p| p.chunk).collect::<Vec<_>>(), "corrupt replicas reported");
        self.write_ok(ReplicaCmd::ReportCorrupt { node, chunks: places }, None).await?;
        self.healer_wake();
        Ok(())
    }

    /// Reconciles a chunk report (see [`crate::reconcile`]); returns the
    /// token of the report to ask for next (0: none).
    async fn reconcile_report(&self, node: u64, report: pb::ChunkReport) -> Result<u64, Status> {
        let replicas: Vec<(u64, u64)> = report.replicas.iter().map(|r| (r.id, r.version)).collect();
        let pending = self.healer.take_suspects(node);
        let copying_in = self.healer.copying_in(node);
        let fresh = self.healer.fresh_token();
        let token = report.token;
        let result = self
            .pass(move |s| {
                // The places of the chunks reported, not a map of every chunk.
                let ids = replicas.iter().map(|(id, _)| *id).collect();
                let places = s.chunk_places_of(&ids).into_iter().map(|p| (p.chunk, p)).collect();
                let report = Report { node, replicas: &replicas, token };
                reconcile::reconcile(s, &places, report, &pending, &copying_in, fresh)
            })
            .await?;
        if !result.lost.is_empty() {
            let lost: Vec<u64> = result.lost.iter().map(|p| p.chunk).collect();
            tracing::warn!(node, ?lost, "replicas missing or stale on their server; dropping them");
        }
        if !result.garbage.is_empty() || !result.lost.is_empty() {
            tracing::info!(node, garbage = result.garbage.len(), lost = result.lost.len(), "chunk report reconciled");
            let cmd = ReplicaCmd::Reconcile { node, garbage: result.garbage, lost: result.lost };
            self.write_ok(cmd, None).await?;
            self.healer_wake();
        }
        let ask = if result.suspects.is_empty() { 0 } else { fresh };
        self.healer.set_suspects(node, result.suspects);
        Ok(ask)
    }

    /// This node's view of the meta group; no digest (`state_digest` 0).
    fn status_reply(&self) -> pb::StatusReply {
        let m = self.node.raft.metrics().borrow().clone();
        let leader = m.current_leader.unwrap_or(0);
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let nodes = membership
            .nodes()
            .map(|(id, node)| {
                let role = if *id == self.settings.node_id {
                    match m.state {
                        ServerState::Leader => "leader",
                        ServerState::Candidate => "candidate",
                        ServerState::Learner => "learner",
                        ServerState::Follower => "follower",
                        ServerState::Shutdown => "shutdown",
                    }
                } else if *id == leader {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                let last_applied = if *id == self.settings.node_id {
                    m.last_applied.map_or(0, |l| l.index)
                } else {
                    m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map_or(0, |l| l.index)
                };
                pb::MetaNode { id: *id, addr: node.addr.clone(), role: role.into(), term: m.current_term, last_applied }
            })
            .collect();
        let applied_index = m.last_applied.map_or(0, |l| l.index);
        pb::StatusReply { nodes, leader_id: leader, self_id: self.settings.node_id, applied_index, state_digest: 0 }
    }
}
