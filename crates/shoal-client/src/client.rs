//! The entry point: a connection to a Shoal cluster and its namespace operations.
//!
//! Opening files is in [`crate::file`] and lock sessions in [`crate::lock`]
//! (each adds its own `impl Client`), so this module depends on neither.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shoal_proto::chunk::Capability;
use shoal_proto::meta as pb;
use shoal_proto::meta::cluster_client::ClusterClient;
use shoal_proto::meta::namespace_client::NamespaceClient;

use crate::layouts::{Layout, LayoutCache};
use crate::meta::MetaConn;
use crate::pool::ChannelPool;
use crate::request::RequestIds;
use crate::{Result, Transport};

/// How long an operation may keep retrying meta before it gives up.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Attributes of a file or directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub inode: u64,
    pub is_dir: bool,
    pub size: u64,
    pub mode: u32,
    pub mtime_ms: u64,
    pub replication: u32,
    pub chunk_size: u64,
    pub chunk_count: u64,
    /// Extended attributes: filled by [`Client::stat_xattrs`] and
    /// [`Client::list_xattrs`], empty from every other call.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    pub uid: u32,
    pub gid: u32,
    /// Times in nanoseconds since the epoch.
    pub atime_ns: u64,
    pub mtime_ns: u64,
    pub ctime_ns: u64,
    /// A symbolic link, whose target is `target`.
    pub is_symlink: bool,
    pub target: String,
    /// The link count: names for anything but a directory, 2 plus its
    /// subdirectories for a directory. 0 from a meta node too old to say.
    pub nlink: u32,
    /// A FIFO, a socket or a device (neither directory nor link then).
    pub special: Option<Special>,
    /// Devices only: the device number.
    pub rdev: u64,
}

/// The special files mknod(2) makes: no data, only a name and attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Special {
    fn from_pb(s: pb::Special) -> Option<Special> {
        match s {
            pb::Special::None => None,
            pb::Special::Fifo => Some(Special::Fifo),
            pb::Special::Socket => Some(Special::Socket),
            pb::Special::CharDevice => Some(Special::CharDevice),
            pb::Special::BlockDevice => Some(Special::BlockDevice),
        }
    }

    fn to_pb(self) -> pb::Special {
        match self {
            Special::Fifo => pb::Special::Fifo,
            Special::Socket => pb::Special::Socket,
            Special::CharDevice => pb::Special::CharDevice,
            Special::BlockDevice => pb::Special::BlockDevice,
        }
    }
}

impl From<pb::Inode> for Stat {
    fn from(i: pb::Inode) -> Self {
        let special = Special::from_pb(i.special());
        Stat {
            inode: i.id,
            is_dir: i.is_dir,
            size: i.size,
            mode: i.mode,
            mtime_ms: i.mtime_ms,
            replication: i.replication,
            chunk_size: i.chunk_size,
            chunk_count: i.chunk_count,
            xattrs: i.xattrs.into_iter().collect(),
            uid: i.uid,
            gid: i.gid,
            atime_ns: i.atime_ns,
            mtime_ns: i.mtime_ns,
            ctime_ns: i.ctime_ns,
            is_symlink: i.is_symlink,
            special,
            target: i.target,
            nlink: i.nlink,
            rdev: i.rdev,
        }
    }
}

/// The owner and permission bits (at most 0o7777) a new inode gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl From<Owner> for pb::Owner {
    fn from(o: Owner) -> Self {
        pb::Owner { mode: o.mode, uid: o.uid, gid: o.gid }
    }
}

/// A time to set: meta's clock, or nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeSet {
    Now,
    AtNs(u64),
}

impl From<TimeSet> for pb::TimeSet {
    fn from(t: TimeSet) -> Self {
        match t {
            TimeSet::Now => pb::TimeSet { now: true, ns: 0 },
            TimeSet::AtNs(ns) => pb::TimeSet { now: false, ns },
        }
    }
}

/// What [`Client::set_attr`] changes; `None` leaves an attribute as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// One name in a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub stat: Stat,
}

/// Where one chunk of a file lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkInfo {
    pub index: u64,
    pub id: u64,
    /// The committed version: replicas older than this are stale.
    pub version: u64,
    /// Chunk-server addresses.
    pub replicas: Vec<String>,
    /// Meta's capability for this client to read `version` (None from an
    /// `--insecure` cluster, and for a hole). It expires (see
    /// `shoal_proto::capability`): a read refused for that fetches the map again.
    pub capability: Option<Capability>,
}

impl From<pb::ChunkLocation> for ChunkInfo {
    fn from(c: pb::ChunkLocation) -> Self {
        let capability = shoal_proto::capability::decode(&c.capability);
        ChunkInfo { index: c.index, id: c.id, version: c.version, replicas: c.replicas, capability }
    }
}

pub(crate) struct Inner {
    pub meta: MetaConn,
    pub data: ChannelPool,
    pub requests: RequestIds,
    /// Chunk maps by inode (see [`crate::layouts`] for what they may miss).
    pub layouts: LayoutCache,
}

/// A handle to a cluster; cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn inode_of(reply: pb::InodeReply) -> Stat {
    reply.inode.unwrap_or_default().into()
}

impl Client {
    /// A client for the meta nodes at `meta_addrs` (HOST:PORT each), giving up
    /// on an unreachable cluster after [`DEFAULT_TIMEOUT`], speaking the
    /// process's transport ([`crate::transport::process`]).
    pub async fn connect(meta_addrs: &[String]) -> Result<Client> {
        Self::connect_with_timeout(meta_addrs, DEFAULT_TIMEOUT).await
    }

    /// [`Client::connect`] with another timeout.
    pub async fn connect_with_timeout(meta_addrs: &[String], timeout: Duration) -> Result<Client> {
        Self::connect_with(meta_addrs, timeout, crate::transport::process()).await
    }

    /// A client that reaches meta and chunk servers through `transport`
    /// (mutual TLS with its credentials, or plaintext).
    pub async fn connect_with(meta_addrs: &[String], timeout: Duration, transport: Transport) -> Result<Client> {
        let meta = MetaConn::new(meta_addrs.to_vec(), timeout, transport.clone())?;
        Ok(Client {
            inner: Arc::new(Inner {
                meta,
                data: ChannelPool::with_transport(transport),
                requests: RequestIds::new(),
                layouts: LayoutCache::default(),
            }),
        })
    }

    /// A new client with connections of its own to the same meta nodes, with
    /// the same timeout and transport (identity) as this one.
    pub async fn reconnect(&self) -> Result<Client> {
        self.with_transport(self.inner.data.transport().clone()).await
    }

    /// A new client for the same meta nodes, with the same timeout, that
    /// speaks `transport` instead (so another identity: the S3 gateway's
    /// keys each reach the cluster as their own).
    pub async fn with_transport(&self, transport: Transport) -> Result<Client> {
        let (addrs, timeout) = self.inner.meta.settings();
        Self::connect_with(addrs, timeout, transport).await
    }

    pub(crate) async fn ns<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(NamespaceClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let r = self
            .inner
            .meta
            .call(|ch| f(NamespaceClient::new(ch).max_decoding_message_size(shoal_proto::MESSAGE_SIZE_MAX_BYTES)))
            .await?;
        Ok(r.into_inner())
    }

    async fn cluster<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(ClusterClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        Ok(self.inner.meta.call(|ch| f(ClusterClient::new(ch))).await?.into_inner())
    }

    /// Creates a directory (with `parents`, also its missing ancestors, and no
    /// error if it exists).
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<Stat> {
        let pending = self.inner.requests.begin();
        let req = pb::MkdirRequest { path: path.to_string(), parents, owner: None, request: Some(pending.id) };
        Ok(inode_of(
            self.ns(|mut c| {
                let req = req.clone();
                async move { c.mkdir(req).await }
            })
            .await?,
        ))
    }

    pub async fn stat(&self, path: &str) -> Result<Stat> {
        self.stat_inner(path, false).await
    }

    /// [`Client::stat`] with the extended attributes.
    pub async fn stat_xattrs(&self, path: &str) -> Result<Stat> {
        self.stat_inner(path, true).await
    }

    /// The attributes of inode `inode` (with its extended attributes when
    /// `xattrs`) and its current path.
    pub async fn stat_inode(&self, inode: u64, xattrs: bool) -> Result<(Stat, String)> {
        let req = pb::PathRequest { path: String::new(), xattrs, inode };
        let reply = self
            .ns(|mut c| {
                let req = req.clone();
                async move { c.stat(req).await }
            })
            .await?;
        let path = reply.path.clone();
        Ok((inode_of(reply), path))
    }

    /// The entries of the directory that is inode `inode`.
    pub async fn list_inode(&self, inode: u64) -> Result<Vec<DirEntry>> {
        self.list_request(pb::PathRequest { path: String::new(), xattrs: false, inode }).await
    }

    /// Makes one directory with `owner`'s owner, group and mode.
    pub async fn mkdir_owned(&self, path: &str, owner: Owner) -> Result<Stat> {
        let pending = self.inner.requests.begin();
        let req = pb::MkdirRequest {
            path: path.to_string(),
            parents: false,
            owner: Some(owner.into()),
            request: Some(pending.id),
        };
        Ok(inode_of(
            self.ns(|mut c| {
                let req = req.clone();
                async move { c.mkdir(req).await }
            })
            .await?,
        ))
    }

    /// Makes an empty file with `owner`'s owner, group and mode (inheriting
    /// the replication factor); an existing file is answered as it is unless
    /// `exclusive`.
    pub async fn create_owned(&self, path: &str, owner: Owner, exclusive: bool) -> Result<Stat> {
        let pending = self.inner.requests.begin();
        let req = pb::CreateRequest {
            path: path.to_string(),
            replication: 0,
            open_existing: !exclusive,
            owner: Some(owner.into()),
            request: Some(pending.id),
            prepare_first_chunk: false,
        };
        Ok(inode_of(
            self.ns(|mut c| {
                let req = req.clone();
                async move { c.create(req).await }
            })
            .await?,
        ))
    }

    /// Makes a symbolic link at `path` to `target`, owned by `uid`:`gid`.
    pub async fn symlink(&self, path: &str, target: &str, uid: u32, gid: u32) -> Result<Stat> {
        let pending = self.inner.requests.begin();
        let req = pb::SymlinkRequest {
            path: path.to_string(),
            target: target.to_string(),
            uid,
            gid,
            request: Some(pending.id),
        };
        Ok(inode_of(
            self.ns(|mut c| {
                let req = req.clone();
                async move { c.symlink(req).await }
            })
            .await?,
        ))
    }

    /// Makes a special file at `path` (mknod(2)): a FIFO, a socket, or a
    /// device with number `rdev` (0 for the others).
    pub async fn mknod(&self, path: &str, kind: Special, owner: Owner, rdev: u64) -> Result<Stat> {
        let pending = self.inner.requests.begin();
        let req = pb::MknodRequest {
            path: path.to_string(),
            kind: kind.to_pb().into(),
            owner: Some(owner.into()),
            rdev,
            request: Some(pending.id),
        };
        Ok(inode_of(
            self.ns(|mut c| {
                let req = req.clone();
                async move { c.mknod(req).await }
            })
            .await?,
        ))
    }

    /// Gives the inode at `src` one more name, `dst` (link(2)), and
    /// answers its attributes with the new link count.
    pub async fn link(&self, src: &str, dst: &str) -> Result<Stat> {
        let pending = self.inner.requests.begin();
        let req = pb::LinkRequest { src: src.to_string(), dst: dst.to_string(), request: Some(pending.id) };
        Ok(inode_of(
            self.ns(|mut c| {
                let req = req.clone();
                async move { c.link(req).await }
            })
            .await?,
        ))
    }

    /// Changes the mode, owner, group or times of inode `inode` (chmod,
    /// chown, utimens) and answers its attributes after the change.
    pub async fn set_attr(&self, inode: u64, change: AttrChange) -> Result<Stat> {
        let pending = self.inner.requests.begin();
        let req = pb::SetAttrRequest {
            inode,
            mode: change.mode,
            uid: change.uid,
            gid: change.gid,
            atime: change.atime.map(Into::into),
            mtime: change.mtime.map(Into::into),
            request: Some(pending.id),
        };
        Ok(inode_of(self.ns(|mut c| async move { c.set_attr(req).await }).await?))
    }

    /// rename(2): `src` takes exactly the name `dst` (a directory there is
    /// replaced if empty, never moved into); with `no_replace`, an existing
    /// `dst` is refused.
    pub async fn rename_exact(&self, src: &str, dst: &str, no_replace: bool) -> Result<()> {
        self.rename_exact_with(src, dst, no_replace, false).await
    }

    /// renameat2(2)'s `RENAME_EXCHANGE`: the names `a` and `b`, which must
    /// both exist, swap what they name, at once. Neither may lie below the
    /// other.
    pub async fn exchange(&self, a: &str, b: &str) -> Result<()> {
        // With `no_replace` too: a meta node older than exchanges would
        // ignore the flag and replace `b`; this way it refuses instead (`b`
        // always exists for an exchange).
        self.rename_exact_with(a, b, true, true).await
    }

    async fn rename_exact_with(&self, src: &str, dst: &str, no_replace: bool, exchange: bool) -> Result<()> {
        let pending = self.inner.requests.begin();
        let req = pb::RenameRequest {
            src: src.to_string(),
            dst: dst.to_string(),
            fence: None,
            exact: true,
            no_replace,
            exchange,
            request: Some(pending.id),
        };
        let _forget = self.inner.layouts.drop_all_when_done();
        self.ns(|mut c| {
            let req = req.clone();
            async move { c.rename(req).await }
        })
        .await?;
        Ok(())
    }

    async fn stat_inner(&self, path: &str, xattrs: bool) -> Result<Stat> {
        let req = pb::PathRequest { path: path.to_string(), xattrs, inode: 0 };
        Ok(inode_of(
            self.ns(|mut c| {
                let req = req.clone();
                async move { c.stat(req).await }
            })
            .await?,
        ))
    }

    /// Lists a directory (or, for a file, the file itself), sorted by name.
    pub async fn list(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.list_inner(path, false).await
    }

    /// [`Client::list`] with every entry's extended attributes.
    pub async fn list_xattrs(&self, path: &str) -> Result<Vec<DirEntry>> {
        self.list_inner(path, true).await
    }

    async fn list_inner(&self, path: &str, xattrs: bool) -> Result<Vec<DirEntry>> {
        self.list_request(pb::PathRequest { path: path.to_string(), xattrs, inode: 0 }).await
    }

    async fn list_request(&self, req: pb::PathRequest) -> Result<Vec<DirEntry>> {
        let reply = self
            .ns(|mut c| {
                let req = req.clone();
                async move { c.list(req).await }
            })
            .await?;
        Ok(reply
            .entries
            .into_iter()
            .map(|e| DirEntry { name: e.name, stat: e.inode.unwrap_or_default().into() })
            .collect())
    }

    /// Removes a file or an empty directory (any directory with `recursive`).
    pub async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        self.remove_only(path, recursive, pb::RemoveOnly::Any).await
    }

    /// Removes the file (or symbolic link, or special file) at `path`, as
    /// unlink(2) does: a directory there is refused (`IsADirectory`) and
    /// kept. Meta checks, so no stat is needed first (a meta of before this
    /// check ignores it and removes whatever is there).
    pub async fn remove_file(&self, path: &str) -> Result<()> {
        self.remove_only(path, false, pb::RemoveOnly::NotDirectory).await
    }

    /// Removes the empty directory at `path`, as rmdir(2) does: anything
    /// else there is refused (`NotADirectory`) and kept (by a meta that
    /// knows the check, as for [`Client::remove_file`]).
    pub async fn remove_dir(&self, path: &str) -> Result<()> {
        self.remove_only(path, false, pb::RemoveOnly::Directory).await
    }

    async fn remove_only(&self, path: &str, recursive: bool, only: pb::RemoveOnly) -> Result<()> {
        let pending = self.inner.requests.begin();
        let req = pb::RemoveRequest { path: path.to_string(), recursive, only: only.into(), request: Some(pending.id) };
        // Whatever the outcome, the files below `path` may be gone.
        let _forget = self.inner.layouts.drop_all_when_done();
        self.ns(|mut c| {
            let req = req.clone();
            async move { c.remove(req).await }
        })
        .await?;
        Ok(())
    }

    /// Renames `src` to `dst`; onto an existing directory, moves into it.
    pub async fn rename(&self, src: &str, dst: &str) -> Result<()> {
        self.rename_fenced(src, dst, None).await
    }

    /// Renames `src` to exactly `dst`, under `lock` when given: meta refuses
    /// the rename unless `lock` still holds `dst`, and the lock then fences
    /// writes to the moved file. This is how a file is replaced under its lock.
    pub async fn rename_fenced(&self, src: &str, dst: &str, lock: Option<&crate::Lock>) -> Result<()> {
        let pending = self.inner.requests.begin();
        let req = pb::RenameRequest {
            src: src.to_string(),
            dst: dst.to_string(),
            fence: lock.map(|l| l.fence()),
            exact: false,
            no_replace: false,
            exchange: false,
            request: Some(pending.id),
        };
        // Whatever the outcome, a file may have been replaced at `dst`.
        let _forget = self.inner.layouts.drop_all_when_done();
        self.ns(|mut c| {
            let req = req.clone();
            async move { c.rename(req).await }
        })
        .await?;
        Ok(())
    }

    /// Removes the extended attributes named in `remove` (missing ones are
    /// ignored), then sets those in `set`, in one change.
    pub async fn set_xattrs(&self, path: &str, remove: &[String], set: &BTreeMap<String, Vec<u8>>) -> Result<()> {
        let pending = self.inner.requests.begin();
        let req = pb::SetXattrsRequest {
            path: path.to_string(),
            remove: remove.to_vec(),
            set: set.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
            request: Some(pending.id),
        };
        self.ns(|mut c| {
            let req = req.clone();
            async move { c.set_xattrs(req).await }
        })
        .await?;
        Ok(())
    }

    /// Removes one extended attribute (`NoAttribute` when it is not there).
    pub async fn remove_xattr(&self, path: &str, name: &str) -> Result<()> {
        let pending = self.inner.requests.begin();
        let req = pb::RemoveXattrRequest { path: path.to_string(), name: name.to_string(), request: Some(pending.id) };
        self.ns(|mut c| {
            let req = req.clone();
            async move { c.remove_xattr(req).await }
        })
        .await?;
        Ok(())
    }

    /// A file's attributes and where each of its chunks lives.
    pub async fn chunks(&self, path: &str) -> Result<(Stat, Vec<ChunkInfo>)> {
        let stat = self.stat(path).await?;
        if stat.is_dir {
            return Ok((stat, Vec::new()));
        }
        self.layout(stat.inode).await
    }

    /// Drops this client's cached chunk map of `inode`: the next read asks
    /// meta (after a lock grant, another holder may have written the file).
    pub fn forget_layout(&self, inode: u64) {
        self.inner.layouts.drop_inode(inode);
    }

    pub(crate) async fn layout(&self, inode: u64) -> Result<(Stat, Vec<ChunkInfo>)> {
        let l = self.fetch_layout(inode, "", false).await?;
        Ok((l.stat.clone(), l.chunks.clone()))
    }

    /// Asks meta for the chunk map of `inode`, or (inode 0) of the file at
    /// `path`, in one call (with the extended attributes if `xattrs`), and
    /// caches it (see [`crate::layouts`]).
    pub(crate) async fn fetch_layout(&self, inode: u64, path: &str, xattrs: bool) -> Result<Arc<Layout>> {
        let epoch = self.inner.layouts.epoch();
        let req = pb::LayoutRequest { inode, path: path.to_string(), xattrs };
        let reply = self
            .ns(|mut c| {
                let req = req.clone();
                async move { c.layout(req).await }
            })
            .await?;
        let mut chunks: Vec<ChunkInfo> = reply.chunks.into_iter().map(ChunkInfo::from).collect();
        chunks.sort_by_key(|c| c.index);
        let layout =
            Arc::new(Layout { stat: inode_of(pb::InodeReply { inode: reply.inode, ..Default::default() }), chunks });
        if !layout.stat.is_dir {
            self.inner.layouts.put(epoch, layout.clone());
        }
        Ok(layout)
    }

    /// The meta group as the answering node sees it.
    pub async fn meta_status(&self) -> Result<pb::StatusReply> {
        self.cluster(|mut c| async move { c.status(pb::StatusRequest { digest: false }).await }).await
    }

    /// The meta group as the node at `addr` sees it, asked directly (no
    /// leader following), waiting at most `timeout`. With `digest`, the reply
    /// also carries a checksum of that node's whole state at its applied index.
    pub async fn meta_node_status(&self, addr: &str, timeout: Duration, digest: bool) -> Result<pb::StatusReply> {
        let mut c = ClusterClient::new(self.inner.meta.pool().get(addr)?);
        match tokio::time::timeout(timeout, c.status(pb::StatusRequest { digest })).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(crate::ClientError::from_status(&s)),
            Err(_) => Err(crate::ClientError::Rpc {
                code: tonic::Code::DeadlineExceeded,
                message: format!("{addr}: no answer in time"),
            }),
        }
    }

    /// Has the meta node at `addr` build a snapshot now (admins only) and
    /// answers when it is on disk, waiting at most `timeout`.
    pub async fn trigger_snapshot(&self, addr: &str, timeout: Duration) -> Result<pb::SnapshotReply> {
        let mut c = ClusterClient::new(self.inner.meta.pool().get(addr)?);
        match tokio::time::timeout(timeout, c.trigger_snapshot(pb::Empty {})).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(crate::ClientError::from_status(&s)),
            Err(_) => Err(crate::ClientError::Rpc {
                code: tonic::Code::DeadlineExceeded,
                message: format!("{addr}: no snapshot in time"),
            }),
        }
    }

    /// Adds meta node `id` at `addr` to the group; returns once it is a voter.
    pub async fn add_meta(&self, id: u64, addr: &str) -> Result<pb::StatusReply> {
        let req = pb::AddMetaRequest { id, addr: addr.to_string() };
        self.cluster(|mut c| {
            let req = req.clone();
            async move { c.add_meta(req).await }
        })
        .await
    }

    /// Removes meta node `id` from the group.
    pub async fn remove_meta(&self, id: u64) -> Result<pb::StatusReply> {
        self.cluster(|mut c| async move { c.remove_meta(pb::RemoveMetaRequest { id }).await }).await
    }

    /// Every registered chunk server, with liveness as the leader sees it.
    pub async fn chunk_servers(&self) -> Result<Vec<pb::ChunkServer>> {
        Ok(self.cluster(|mut c| async move { c.nodes(pb::Empty {}).await }).await?.servers)
    }

    /// Sets the replication factor of a file, or of a directory and
    /// everything below it (and what new files in it inherit).
    pub async fn set_replication(&self, path: &str, replication: u32) -> Result<()> {
        let pending = self.inner.requests.begin();
        let req = pb::SetReplicationRequest { path: path.to_string(), replication, request: Some(pending.id) };
        self.ns(|mut c| {
            let req = req.clone();
            async move { c.set_replication(req).await }
        })
        .await?;
        Ok(())
    }

    /// The health of every chunk, as the meta leader sees it.
    pub async fn fsck(&self) -> Result<pb::FsckReply> {
        self.cluster(|mut c| async move { c.fsck(pb::FsckRequest {}).await }).await
    }

    /// Tells meta that the replica of `chunk_id` at `addr` failed its checksums.
    pub async fn report_corrupt(&self, chunk_id: u64, addr: &str) -> Result<()> {
        let req = pb::ReportCorruptRequest { chunk_id, addr: addr.to_string() };
        self.cluster(|mut c| {
            let req = req.clone();
            async move { c.report_corrupt(req).await }
        })
        .await?;
        Ok(())
    }

    /// Starts draining the chunk server at `addr` (or, with `cancel`, stops).
    pub async fn decommission(&self, addr: &str, cancel: bool) -> Result<pb::ChunkServer> {
        let req = pb::DecommissionRequest { addr: addr.to_string(), cancel };
        self.cluster(|mut c| {
            let req = req.clone();
            async move { c.decommission(req).await }
        })
        .await
    }

    /// Plans replica moves toward emptier chunk servers; meta carries them out.
    pub async fn rebalance(&self) -> Result<pb::RebalanceReply> {
        self.cluster(|mut c| async move { c.rebalance(pb::Empty {}).await }).await
    }

    /// Pauses or resumes re-replication, drops of extra replicas and moves.
    pub async fn set_repair_paused(&self, paused: bool) -> Result<()> {
        self.cluster(|mut c| async move { c.set_repair(pb::SetRepairRequest { paused }).await }).await?;
        Ok(())
    }

    /// The meta addresses this client uses.
    pub fn meta_addrs(&self) -> &[String] {
        self.inner.meta.addrs()
    }
}
