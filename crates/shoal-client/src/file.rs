//! An open file: a position plus read, write, seek, append and set_len.
//!
//! # Write protocol (per call to [`File::write_at`])
//! 1. Cut the range into per-chunk spans.
//! 2. For each span (up to four at a time): ask meta to prepare the chunk (allocate it, or bump its
//!    version), stream the bytes through the replica chain, and wait for the
//!    chain's ack (every replica durable). If a replica fails, ask meta again
//!    naming it: meta drops or replaces it and grants a newer version, and the
//!    span is written again (writes are positional, so this is idempotent).
//! 3. Commit the new chunk versions and the new size to meta in one entry.
//!    Only then does the call return: a returned write is acknowledged. If
//!    another writer prepared one of the chunks in between, the commit is
//!    refused (that version can never be committed) and the whole call is
//!    written again on fresh versions.
//!
//! A call that fails part-way changes nothing that readers can see: replicas
//! serve only committed versions, and roll uncommitted ones back.
//!
//! # Read protocol
//! Take the file's chunk map from this client's cache (filled when the file
//! was opened; see [`crate::layouts`]) or else from meta, then read each
//! span, as of its committed version, from the first replica that answers
//! with verified data. Holes (chunks never committed) read as zeros. A
//! replica that has moved past the version asked for means the map is out of
//! date: fetch it again and retry; so does any failed read with a cached map.
//! A replica whose blocks fail their checksums (typed `CORRUPT`) is reported
//! to meta, which replaces it; the read goes on with the next replica. What
//! to do after each failure is decided by [`crate::retry`].
//!
//! Opening a file (`Client::create`, `open`, `open_or_create`) lives here
//! too, so this module depends on `client` and never the reverse.

use std::io::SeekFrom as StdSeekFrom;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use shoal_core::layout::{Span, spans};
use shoal_proto::chunk::{ChunkErrorKind, WriteHeader};
use shoal_proto::meta as pb;

use crate::client::{ChunkInfo, Client, Stat, inode_of};
use crate::data::{read_replica, write_chain};
use crate::layouts::Layout;
use crate::retry::{self, Action, GiveUp};
use crate::{ClientError, Result};

pub use std::io::SeekFrom;

/// Chunks of one write call that are written at the same time.
const CHUNK_WRITES_IN_FLIGHT_MAX: usize = 4;
/// How often a whole write is redone after losing a race to commit.
const COMMIT_ATTEMPTS_MAX: usize = 16;
/// The longest pause before redoing a write that lost a race.
const COMMIT_BACKOFF_MAX_MS: u64 = 400;
/// How long a read waits for meta to take a corruption report.
const CORRUPT_REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Client {
    /// Creates an empty file; fails if the path exists. `replication` None
    /// inherits the directory's or the cluster's factor.
    pub async fn create(&self, path: &str, replication: Option<u32>) -> Result<File> {
        self.create_inner(path, replication, false).await
    }

    /// Opens a file, creating it if it does not exist.
    pub async fn open_or_create(&self, path: &str, replication: Option<u32>) -> Result<File> {
        self.create_inner(path, replication, true).await
    }

    /// [`Client::create`] for a caller about to write: meta prepares the
    /// new file's first chunk in the same Raft entry as the create, and the
    /// first write through the returned handle uses it, which saves a meta
    /// round per small file. (A file left empty keeps that chunk prepared and
    /// never committed: it reads as a hole, and goes when the file does.)
    pub async fn create_for_writing(&self, path: &str, replication: Option<u32>) -> Result<File> {
        let req = pb::CreateRequest { prepare_first_chunk: true, ..create_request(path, replication, false) };
        self.create_with(req).await
    }

    /// A new file with `owner`'s owner, group and mode, opened for a writer
    /// about to write, as [`Client::create_for_writing`]; fails if the path
    /// exists.
    pub async fn create_owned_for_writing(&self, path: &str, owner: crate::Owner) -> Result<File> {
        let req = pb::CreateRequest {
            owner: Some(owner.into()),
            prepare_first_chunk: true,
            ..create_request(path, None, false)
        };
        self.create_with(req).await
    }

    async fn create_inner(&self, path: &str, replication: Option<u32>, open_existing: bool) -> Result<File> {
        self.create_with(create_request(path, replication, open_existing)).await
    }

    pub(crate) async fn create_with(&self, mut req: pb::CreateRequest) -> Result<File> {
        let pending = self.inner.requests.begin();
        req.request = Some(pending.id);
        let path = req.path.clone();
        let mut reply = self
            .ns(|mut c| {
                let req = req.clone();
                async move { c.create(req).await }
            })
            .await?;
        let grant = reply.first_chunk.take();
        let mut file = File::new(self.clone(), path, inode_of(reply));
        file.first_grant = FirstGrant(grant);
        Ok(file)
    }

    /// Opens an existing file. One call to meta fetches its attributes and
    /// chunk map, which reads then use (see [`crate::layouts`]).
    pub async fn open(&self, path: &str) -> Result<File> {
        self.open_with(path, false).await
    }

    /// Opens the file at `path` like [`Client::open`], and its
    /// [`File::cached_stat`] carries the extended attributes too: one meta
    /// call for what `stat_xattrs` and `open` would ask in two.
    pub async fn open_xattrs(&self, path: &str) -> Result<File> {
        self.open_with(path, true).await
    }

    async fn open_with(&self, path: &str, xattrs: bool) -> Result<File> {
        let layout = self.fetch_layout(0, path, xattrs).await?;
        if layout.stat.is_dir {
            return Err(shoal_core::FsError::IsADirectory { path: path.to_string() }.into());
        }
        if layout.stat.is_symlink {
            return Err(crate::ClientError::InvalidArgument(format!("{path} is a symbolic link")));
        }
        Ok(File::new(self.clone(), path.to_string(), layout.stat.clone()))
    }

    /// Opens the file that is inode `inode`, fetching its attributes and
    /// chunk map afresh (close-to-open); `name` is only for messages.
    pub async fn open_inode(&self, inode: u64, name: &str) -> Result<File> {
        if inode == 0 {
            return Err(crate::ClientError::InvalidArgument("inode 0 names no file".into()));
        }
        let layout = self.fetch_layout(inode, "", false).await?;
        if layout.stat.is_dir {
            return Err(shoal_core::FsError::IsADirectory { path: name.to_string() }.into());
        }
        if layout.stat.is_symlink {
            return Err(crate::ClientError::InvalidArgument(format!("{name} is a symbolic link")));
        }
        Ok(File::new(self.clone(), name.to_string(), layout.stat.clone()))
    }
}

fn create_request(path: &str, replication: Option<u32>, open_existing: bool) -> pb::CreateRequest {
    pb::CreateRequest {
        path: path.to_string(),
        replication: replication.unwrap_or(0),
        open_existing,
        ..Default::default()
    }
}

/// The header of a chain write of what `prep` granted, at `offset`.
pub(crate) fn granted_header(
    prep: &pb::PrepareWriteReply,
    offset: u64,
    truncate_to: Option<u64>,
    fence_token: u64,
) -> WriteHeader {
    let loc = prep.chunk.as_ref().cloned().unwrap_or_default();
    WriteHeader {
        chunk_id: loc.id,
        version: loc.version,
        base_version: prep.base_version,
        offset,
        downstream: Vec::new(),
        truncate_to,
        fence_token,
        capability: shoal_proto::capability::decode(&loc.capability),
    }
}

/// Chunk 0 of a new file as meta prepared it with the create, for this
/// handle's first write only. A clone of the handle does not get it: two
/// writers must never write one granted version.
#[derive(Default)]
struct FirstGrant(Option<pb::PrepareWriteReply>);

impl Clone for FirstGrant {
    fn clone(&self) -> Self {
        FirstGrant(None)
    }
}

/// Drops this client's cached map of a file when it goes out of scope.
struct ForgetMap {
    client: Client,
    inode: u64,
}

impl Drop for ForgetMap {
    fn drop(&mut self) {
        self.client.inner.layouts.drop_inode(self.inode);
    }
}

/// A change to a file's bytes or size.
enum Change {
    Write {
        offset: u64,
        end: u64,
        data: Bytes,
    },
    /// Ranges of chunk `index` (sorted, apart, at least two) from `lo` to
    /// `hi`, written as one new version of it.
    Ranges {
        index: u64,
        lo: u64,
        hi: u64,
        ranges: Vec<(u64, Bytes)>,
    },
    SetLen {
        size: u64,
    },
    Extend {
        size: u64,
    },
}

/// An open file. A clone is another handle on the same file (same position,
/// fence and cached attributes, sharing the client's chunk maps): one can
/// read ahead while the other serves reads.
#[derive(Clone)]
pub struct File {
    client: Client,
    path: String,
    stat: Stat,
    pos: u64,
    /// Carried by every write: the lock it is made under.
    fence: Option<pb::Fence>,
    /// Taken by the first change through this handle.
    first_grant: FirstGrant,
}

impl File {
    pub(crate) fn new(client: Client, path: String, stat: Stat) -> File {
        File { client, path, stat, pos: 0, fence: None, first_grant: FirstGrant(None) }
    }

    /// Makes every later write through this handle carry `lock`'s fencing
    /// token: meta and the chunk servers refuse them once the lock has passed
    /// to someone else.
    pub fn set_fence(&mut self, lock: &crate::Lock) {
        self.fence = Some(lock.fence());
    }

    /// Makes later writes through this handle carry no fencing token again
    /// (after its lock was released).
    pub fn clear_fence(&mut self) {
        self.fence = None;
    }

    /// The token later writes through this handle carry, if any.
    pub fn fence_token(&self) -> Option<u64> {
        self.fence.as_ref().map(|f| f.token)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The attributes as of open or the last write through this handle.
    pub fn cached_stat(&self) -> &Stat {
        &self.stat
    }

    /// The current position.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The file's size as meta knows it now.
    pub async fn len(&mut self) -> Result<u64> {
        let (stat, _) = self.client.layout(self.stat.inode).await?;
        self.stat = stat;
        Ok(self.stat.size)
    }

    /// Moves the position; past the end is allowed (a later write leaves a hole).
    pub async fn seek(&mut self, to: SeekFrom) -> Result<u64> {
        let (base, delta) = match to {
            StdSeekFrom::Start(n) => (0, n as i128),
            StdSeekFrom::Current(d) => (self.pos, d as i128),
            StdSeekFrom::End(d) => (self.len().await?, d as i128),
        };
        let target = base as i128 + delta;
        if target < 0 || target > u64::MAX as i128 {
            return Err(ClientError::InvalidArgument(format!("seek to {target} is outside the file")));
        }
        self.pos = target as u64;
        Ok(self.pos)
    }

    /// Reads up to `buf.len()` bytes at the position and advances it; 0 at EOF.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let data = self.read_at(self.pos, buf.len() as u64).await?;
        buf[..data.len()].copy_from_slice(&data);
        self.pos += data.len() as u64;
        Ok(data.len())
    }

    /// Reads up to `len` bytes at `offset`; fewer at EOF, none past it.
    ///
    /// Uses this client's cached chunk map of the file when it has one
    /// (see [`crate::layouts`]); a read that fails with it, or that a replica
    /// refuses because the map is out of date, fetches the map again.
    pub async fn read_at(&mut self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read_at_by_map(offset, len).await.map(|(_, bytes)| bytes)
    }

    /// As [`File::read_at`], with the chunk map the bytes were read by.
    async fn read_at_by_map(&mut self, offset: u64, len: u64) -> Result<(Arc<Layout>, Vec<u8>)> {
        let mut cached = self.client.inner.layouts.get(self.stat.inode);
        let mut attempt = 1;
        loop {
            let from_cache = cached.is_some();
            let layout = match cached.take() {
                Some(l) => l,
                None => self.client.fetch_layout(self.stat.inode, "", false).await?,
            };
            let result = self.read_with(&layout, offset, len, attempt).await;
            let moved = match &result {
                Err(ClientError::LayoutChanged { .. }) => true,
                Err(ClientError::ChunkUnavailable { .. }) => false,
                _ => return result.map(|bytes| (layout, bytes)),
            };
            match retry::after_read_failed(from_cache, moved, attempt) {
                Action::RefreshMap => {
                    self.client.inner.layouts.drop_inode(self.stat.inode);
                    if !from_cache {
                        attempt += 1;
                    }
                }
                _ => return result.map(|bytes| (layout, bytes)),
            }
        }
    }

    async fn read_with(
        &mut self,
        layout: &crate::layouts::Layout,
        offset: u64,
        len: u64,
        attempt: usize,
    ) -> Result<Vec<u8>> {
        self.stat = layout.stat.clone();
        let chunks = &layout.chunks;
        let end = offset.saturating_add(len).min(self.stat.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let spans = spans(offset, end - offset, self.stat.chunk_size);
        if let [span] = spans.as_slice() {
            // Within one chunk: the replica's bytes are the answer, without
            // zeroing a buffer and copying them into it (a seq-read client
            // spent a tenth of its CPU there).
            let mut bytes = self.read_span(chunks, span, attempt).await?.unwrap_or_default();
            bytes.resize(span.len as usize, 0);
            return Ok(bytes);
        }
        let mut out = vec![0u8; (end - offset) as usize];
        for span in &spans {
            if let Some(bytes) = self.read_span(chunks, span, attempt).await? {
                let at = span.offset_in_range as usize;
                out[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        }
        Ok(out)
    }

    /// The bytes of `span` that its chunk holds (fewer where the replica's
    /// copy ends before the span does), or None when the chunk is a hole.
    async fn read_span(&self, chunks: &[ChunkInfo], span: &Span, attempt: usize) -> Result<Option<Vec<u8>>> {
        let Ok(i) = chunks.binary_search_by_key(&span.index, |c| c.index) else { return Ok(None) };
        if chunks[i].version == 0 {
            return Ok(None); // Never committed: a hole.
        }
        self.read_chunk(&chunks[i], span.offset_in_chunk, span.len, attempt).await.map(Some)
    }

    async fn read_chunk(&self, chunk: &ChunkInfo, offset: u64, len: u64, attempt: usize) -> Result<Vec<u8>> {
        let mut errors = Vec::new();
        let mut map_outdated = false;
        let mut corrupt = Vec::new();
        let mut result = None;
        for replica in &chunk.replicas {
            match read_replica(
                &self.client.inner.data,
                replica,
                chunk.id,
                offset,
                len,
                chunk.version,
                chunk.capability.clone(),
            )
            .await
            {
                Ok(bytes) => {
                    result = Some(bytes);
                    break;
                }
                Err(e) => {
                    tracing::warn!(chunk_id = chunk.id, %replica, "replica read failed: {e}");
                    match retry::on_read_error(e.chunk_error_kind()) {
                        Action::ReportCorrupt => corrupt.push(replica.clone()),
                        Action::RefreshMap => map_outdated = true,
                        _ => {}
                    }
                    errors.push(e.to_string());
                }
            }
        }
        for replica in corrupt {
            let report = self.client.report_corrupt(chunk.id, &replica);
            match tokio::time::timeout(CORRUPT_REPORT_TIMEOUT, report).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(chunk_id = chunk.id, %replica, "cannot report the corrupt replica: {e}"),
                Err(_) => tracing::warn!(chunk_id = chunk.id, %replica, "meta took no corruption report in time"),
            }
        }
        if let Some(bytes) = result {
            return Ok(bytes);
        }
        match retry::after_replicas_failed(map_outdated, attempt) {
            Action::RefreshMap | Action::GiveUp(GiveUp::MapKeptChanging) => {
                Err(ClientError::LayoutChanged { chunk_id: chunk.id })
            }
            _ => Err(ClientError::ChunkUnavailable { chunk_id: chunk.id, details: errors.join("; ") }),
        }
    }

    /// Writes `data` at the position and advances it. Durable on return.
    pub async fn write(&mut self, data: &[u8]) -> Result<usize> {
        self.write_at(self.pos, data).await?;
        self.pos += data.len() as u64;
        Ok(data.len())
    }

    /// Appends `data` at the current end of the file; returns the offset it
    /// was written at and leaves the position after it.
    pub async fn append(&mut self, data: &[u8]) -> Result<u64> {
        let at = self.len().await?;
        self.write_at(at, data).await?;
        self.pos = at + data.len() as u64;
        Ok(at)
    }

    /// Writes `data` at `offset`; acknowledged (replicated and committed) on return.
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_bytes_at(offset, Bytes::copy_from_slice(data)).await
    }

    /// [`File::write_at`] for bytes the caller already owns as [`Bytes`]:
    /// they are sliced per chunk, never copied here, so a front end that
    /// fills (and recycles) its own buffers saves a copy of every byte.
    pub async fn write_bytes_at(&mut self, offset: u64, data: Bytes) -> Result<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| ClientError::InvalidArgument("offset + length overflows".into()))?;
        if data.is_empty() {
            return Ok(());
        }
        self.until_committed(&Change::Write { offset, end, data }).await
    }

    /// Writes `ranges` (offset, bytes), sorted and apart. Ranges that lie
    /// in one chunk are written as one new version of it, with one commit:
    /// the bytes between them are read from the version the write builds
    /// on and written back as they were. A writer that changes the chunk
    /// meanwhile makes this commit lose its race, and it is made again,
    /// from a new read, as a write is; if it keeps losing, or the bytes
    /// between cannot be read, nothing of it was committed, and the ranges
    /// are written one after another instead, as are ranges over several
    /// chunks. Durable on return.
    pub async fn write_ranges(&mut self, ranges: Vec<(u64, Bytes)>) -> Result<()> {
        let ranges: Vec<(u64, Bytes)> = ranges.into_iter().filter(|(_, bytes)| !bytes.is_empty()).collect();
        let mut hi = 0;
        for (i, (at, bytes)) in ranges.iter().enumerate() {
            if i > 0 && *at < hi {
                return Err(ClientError::InvalidArgument("ranges to write overlap or are out of order".into()));
            }
            hi = at
                .checked_add(bytes.len() as u64)
                .ok_or_else(|| ClientError::InvalidArgument("offset + length overflows".into()))?;
        }
        let Some(&(lo, _)) = ranges.first() else { return Ok(()) };
        let cs = self.stat.chunk_size.max(1);
        if ranges.len() == 1 || lo / cs != (hi - 1) / cs {
            for (at, bytes) in ranges {
                self.write_bytes_at(at, bytes).await?;
            }
            return Ok(());
        }
        match self.until_committed(&Change::Ranges { index: lo / cs, lo, hi, ranges: ranges.clone() }).await {
            Err(
                ClientError::Fs(shoal_core::FsError::ChunkChanged { .. })
                | ClientError::LayoutChanged { .. }
                | ClientError::ChunkUnavailable { .. },
            ) => {
                for (at, bytes) in ranges {
                    self.write_bytes_at(at, bytes).await?;
                }
                Ok(())
            }
            done => done,
        }
    }

    /// The bytes `[lo, hi)` of chunk `index` with `ranges` laid over them,
    /// and the chunk's id and committed version they were read at (version
    /// 0: a hole). Only the bytes from the first range's end to the last
    /// one's start are read.
    async fn filled(&mut self, index: u64, lo: u64, hi: u64, ranges: &[(u64, Bytes)]) -> Result<((u64, u64), Bytes)> {
        let from = ranges.first().map_or(lo, |(at, data)| at + data.len() as u64);
        let to = ranges.last().map_or(hi, |(at, _)| *at).max(from);
        let (map, stored) = self.read_at_by_map(from, to - from).await?;
        let base = map.chunks.iter().find(|c| c.index == index).map_or((0, 0), |c| (c.id, c.version));
        // Past the file's end, the chunk reads as zeros.
        let mut bytes = vec![0u8; (hi - lo) as usize];
        let at = (from - lo) as usize;
        bytes[at..at + stored.len()].copy_from_slice(&stored);
        for (at, data) in ranges {
            let from = (at - lo) as usize;
            bytes[from..from + data.len()].copy_from_slice(data);
        }
        Ok((base, bytes.into()))
    }

    /// Sets the size: shrinking drops the bytes past it, growing adds zeros.
    pub async fn set_len(&mut self, size: u64) -> Result<()> {
        self.until_committed(&Change::SetLen { size }).await
    }

    /// Grows the file to at least `size` with zeros, never shrinking it:
    /// meta takes the larger of its size and `size` in the commit itself, so
    /// a growth another writer made meanwhile is kept (a `set_len` from this
    /// handle's older view would cut it back). Moves mtime, as a write does.
    pub async fn extend_to(&mut self, size: u64) -> Result<()> {
        self.until_committed(&Change::Extend { size }).await
    }

    /// Makes a change, again on fresh versions while its commit is refused
    /// for a lost race.
    async fn until_committed(&mut self, change: &Change) -> Result<()> {
        // Committed, refused or unknown (even if this future is dropped
        // part-way): this client's map of the file may be out of date now,
        // and its reads must see its own writes.
        let _forget = ForgetMap { client: self.client.clone(), inode: self.stat.inode };
        self.until_committed_inner(change).await
    }

    async fn until_committed_inner(&mut self, change: &Change) -> Result<()> {
        let mut tries = 1;
        loop {
            match self.change_once(change).await {
                Err(ClientError::Fs(shoal_core::FsError::ChunkChanged { .. })) if tries < COMMIT_ATTEMPTS_MAX => {
                    tries += 1;
                    // Step aside for a random, growing while, so racing writers spread out.
                    let cap = (5u64 << tries.min(10)).min(COMMIT_BACKOFF_MAX_MS);
                    let pause = std::time::Duration::from_millis(rand::rng().random_range(0..cap));
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    async fn change_once(&mut self, change: &Change) -> Result<()> {
        // Only the first change may use the chunk prepared with the create
        // (the fence is checked by the prepare; a fenced handle has none).
        let grant = self.first_grant.0.take().filter(|_| self.fence.is_none());
        match change {
            Change::Write { offset, end, data } => {
                // The chunks of one call are written side by side, so one
                // chunk's transfer overlaps another's fsyncs; one commit covers all.
                let this = &*self;
                let writes = spans(*offset, data.len() as u64, self.stat.chunk_size).into_iter().map(|span| {
                    let piece = data.slice(span.offset_in_range as usize..(span.offset_in_range + span.len) as usize);
                    let grant = grant.clone().filter(|_| span.index == 0);
                    this.write_chunk(span.index, span.offset_in_chunk, piece, None, grant, None)
                });
                let written = futures::stream::iter(writes)
                    .buffered(CHUNK_WRITES_IN_FLIGHT_MAX)
                    .collect::<Vec<_>>()
                    .await
                    .into_iter()
                    .collect::<Result<Vec<_>>>()?;
                self.commit(written, *end, false).await
            }
            Change::Ranges { index, lo, hi, ranges } => {
                let (base, bytes) = self.filled(*index, *lo, *hi, ranges).await?;
                let offset = lo % self.stat.chunk_size;
                let grant = grant.filter(|_| *index == 0);
                let written = self.write_chunk(*index, offset, bytes, None, grant, Some(base)).await;
                let done = match written {
                    Ok(w) => self.commit(vec![w], *hi, false).await,
                    Err(e) => Err(e),
                };
                if matches!(done, Err(ClientError::Fs(shoal_core::FsError::ChunkChanged { .. }))) {
                    // The next try reads the bytes between the ranges again, by a fresh map.
                    self.client.inner.layouts.drop_inode(self.stat.inode);
                }
                done
            }
            Change::SetLen { size } => {
                let size = *size;
                let (stat, chunks) = self.client.layout(self.stat.inode).await?;
                self.stat = stat;
                let cs = self.stat.chunk_size;
                let mut written = Vec::new();
                // Cut the chunk the new end falls in, so a later growth reads
                // zeros there. Meta refuses a shrink that leaves a written
                // chunk uncut (rules 10: a writer filled it since this map),
                // and this is made again, by a fresh map.
                if size < self.stat.size && !size.is_multiple_of(cs) && chunks.iter().any(|c| c.index == size / cs) {
                    written.push(self.write_chunk(size / cs, 0, Bytes::new(), Some(size % cs), None, None).await?);
                }
                self.commit(written, size, true).await
            }
            // A commit of no chunk, not a truncation: the size only grows.
            Change::Extend { size } => self.commit(Vec::new(), *size, false).await,
        }
    }

    /// Writes are durable when they return, so there is nothing left to flush.
    pub async fn sync(&self) -> Result<()> {
        Ok(())
    }

    async fn commit(&mut self, written: Vec<(u64, u64, u64)>, size: u64, truncate: bool) -> Result<()> {
        let pending = self.client.inner.requests.begin();
        let req = pb::CommitWriteRequest {
            request: Some(pending.id),
            inode: self.stat.inode,
            chunks: written
                .iter()
                .map(|(index, id, version)| pb::ChunkVersion { index: *index, id: *id, version: *version })
                .collect(),
            size,
            truncate,
            fence: self.fence.clone(),
        };
        let reply = self
            .client
            .ns(|mut c| {
                let req = req.clone();
                async move { c.commit_write(req).await }
            })
            .await?;
        self.stat = reply.inode.unwrap_or_default().into();
        Ok(())
    }

    /// Asks meta to prepare chunk `index` for a write, avoiding the replicas
    /// in `failed`, and (with `base`) refused as `ChunkChanged` unless the
    /// chunk is still at that committed version; `last` and `chunk_id`
    /// describe the failure before, if any, and `full` whether a replica
    /// refused it for space.
    async fn prepare(
        &self,
        index: u64,
        failed: &[String],
        base: Option<(u64, u64)>,
        (last, chunk_id, full): (&str, u64, bool),
    ) -> Result<pb::PrepareWriteReply> {
        let pending = self.client.inner.requests.begin();
        let req = pb::PrepareWriteRequest {
            inode: self.stat.inode,
            chunk_index: index,
            failed: failed.to_vec(),
            fence: self.fence.clone(),
            base: base.map(|(id, version)| pb::ChunkBase { id, version }),
            request: Some(pending.id),
        };
        match self
            .client
            .ns(|mut c| {
                let req = req.clone();
                async move { c.prepare_write(req).await }
            })
            .await
        {
            Ok(p) => Ok(p),
            // A base that moved is a lost race, retried by the caller
            // (`until_committed`), whatever failed before it.
            Err(e @ ClientError::Fs(shoal_core::FsError::ChunkChanged { .. })) => Err(e),
            // Running out of servers after failures: say what failed first.
            Err(e) if !failed.is_empty() => Err(ClientError::WriteFailed {
                chunk_id,
                attempts: failed.len(),
                last: format!("{last}; then {e}"),
                no_space: full && matches!(e, ClientError::Fs(shoal_core::FsError::NotEnoughServers { .. })),
            }),
            Err(e) => Err(e),
        }
    }

    /// Writes one span into chunk `index`, re-planning around failed replicas.
    /// The first attempt uses `grant` (a version meta already prepared) when
    /// given. With `base` (chunk id, version), the write must build on that
    /// committed version of that chunk, or on none when the version is 0
    /// (its bytes were read from it), else it fails as `ChunkChanged`.
    /// Returns (index, chunk id, version written).
    async fn write_chunk(
        &self,
        index: u64,
        offset: u64,
        data: Bytes,
        truncate_to: Option<u64>,
        mut grant: Option<pb::PrepareWriteReply>,
        base: Option<(u64, u64)>,
    ) -> Result<(u64, u64, u64)> {
        let mut failed: Vec<String> = Vec::new();
        let mut last = String::new();
        let mut chunk_id = 0;
        let mut full = false;
        for attempt in 1.. {
            let prep = match grant.take() {
                Some(g) => g,
                None => self.prepare(index, &failed, base, (&last, chunk_id, full)).await?,
            };
            let prepared_id = prep.chunk.as_ref().map_or(0, |c| c.id);
            if let Some(base) = base
                && !shoal_core::layout::same_base(base, (prepared_id, prep.base_version))
            {
                return Err(shoal_core::FsError::ChunkChanged { inode: self.stat.inode, index }.into());
            }
            let fence_token = self.fence.as_ref().map_or(0, |f| f.token);
            let header = granted_header(&prep, offset, truncate_to, fence_token);
            let loc = prep.chunk.unwrap_or_default();
            chunk_id = loc.id;
            let e = match write_chain(&self.client.inner.data, &loc.replicas, header, data.clone()).await {
                Ok(()) => return Ok((index, loc.id, loc.version)),
                Err(e) => e,
            };
            last = format!("{}: {}", e.failed_replica, e.status.message());
            full |= e.kind == ChunkErrorKind::NoSpace;
            match retry::on_write_error(e.kind, attempt) {
                // A replica that already holds a newer version is healthy: another
                // writer got there first. Prepare again for a newer version.
                Action::Reprepare { route_around: false } => {}
                Action::Reprepare { route_around: true } => {
                    tracing::warn!(chunk_id, replica = %e.failed_replica, "chain write failed: {}", e.status.message());
                    if !failed.contains(&e.failed_replica) {
                        failed.push(e.failed_replica);
                    }
                }
                // A replica saw a newer fencing token: this writer's lock has passed on.
                Action::GiveUp(GiveUp::Fenced) => {
                    let f = self.fence.clone().unwrap_or_default();
                    return Err(shoal_core::FsError::Fenced { path: f.path, token: f.token }.into());
                }
                _ => {
                    let no_space = e.kind == ChunkErrorKind::NoSpace;
                    return Err(ClientError::WriteFailed { chunk_id, attempts: attempt, last, no_space });
                }
            }
        }
        unreachable!("the retry policy gives up within its bound")
    }
}
