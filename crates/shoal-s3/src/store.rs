//! The gateway's IO over the client library: objects written whole or not at
//! all, objects read as streams, bucket trees walked in key order, and
//! ETags looked up or computed.
//!
//! # Writing an object
//! 1. The bytes go to a fresh file under [`keys::TMP_DIR`], in pieces of a
//!    few chunks; a writer task writes one piece while the next arrives. Each
//!    write is replicated and committed before the next starts, and the
//!    whole body is never in memory. A body of known length up to 1 MiB is
//!    taken whole and written as a new file in one meta entry instead.
//! 2. The length and the MD5 are checked against what the request declared.
//! 3. The ETag (with the stamp of the written content) and the metadata are
//!    set as attributes of the temporary file.
//! 4. The target's directories are made, and the file is renamed onto the
//!    object's path: one Raft entry, so readers see the old object or the
//!    new one, whole. Of concurrent PUTs of one key, the last rename wins.
//!
//! Any failure removes the temporary file; a crash leaves it for the
//! janitor ([`crate::multipart::janitor`]), never in a listing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::{Digest, Md5};
use shoal_client::new_file::WRITE_NEW_WHOLE_MAX_BYTES;
use shoal_client::{Client, ClientError, Stat};
use shoal_core::FsError;
use tokio::sync::mpsc;

use crate::keys::{self, TMP_DIR};
use crate::listing::{Pager, Subtree, sibling_order};
use crate::rules::{self, ATTR_ETAG};

/// Largest piece a read hands to the HTTP body at once.
const READ_PIECE_MAX_BYTES: u64 = 8 << 20;
/// Pieces a read fetches ahead of the HTTP body.
const READ_AHEAD_PIECES: usize = 2;
/// Largest piece written at once (a few chunks, written side by side).
const WRITE_PIECE_MAX_BYTES: u64 = 128 << 20;
/// Smallest piece written at once.
const WRITE_PIECE_MIN_BYTES: u64 = 1 << 20;
/// Chunks one piece spans.
const WRITE_PIECE_CHUNKS: u64 = 2;
/// Attempts at putting a finished object in place while a concurrent delete
/// removes the (empty) directories it goes into.
const PLACE_ATTEMPTS_MAX: usize = 4;

/// Buffers for the pieces of one write, used again once a piece is written:
/// a fresh 128 MiB buffer per piece cost a page fault (and a page cleared)
/// for every 4 KiB of every object, about a quarter of the gateway's CPU on
/// a large PUT. At most [`PIECES_KEPT_MAX`] are kept.
#[derive(Default, Clone)]
struct Pieces(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers a [`Pieces`] keeps: one filling, one queued, one being written.
const PIECES_KEPT_MAX: usize = 3;

impl Pieces {
    /// An empty buffer with room for `piece` bytes.
    fn take(&self, piece: usize) -> Vec<u8> {
        let kept = self.0.lock().expect("pieces lock").pop();
        kept.filter(|b| b.capacity() >= piece).unwrap_or_else(|| Vec::with_capacity(piece))
    }

    /// `buf` as bytes that come back here once every slice of them is gone.
    fn lend(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent { buf, home: self.clone() })
    }
}

/// A buffer lent out as [`Bytes`]; dropping it returns the buffer.
struct Lent {
    buf: Vec<u8>,
    home: Pieces,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut kept = self.home.0.lock().expect("pieces lock");
        if kept.len() < PIECES_KEPT_MAX {
            kept.push(buf);
        }
    }
}

/// Why writing an object failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("the body ended after {got} of {declared} bytes")]
    Incomplete { declared: u64, got: u64 },
    #[error("the body's MD5 does not match Content-MD5")]
    BadDigest,
    #[error("reading the request body: {0}")]
    Body(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What a finished write produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub etag: String,
    pub size: u64,
    /// Its binary MD5 (a part's, for the multipart ETag).
    pub md5: [u8; 16],
}

/// An object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub size: u64,
    pub etag: String,
    pub mtime_ms: u64,
}

/// The gateway's handle on the cluster.
#[derive(Clone)]
pub struct Store {
    pub client: Client,
}

fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Fs(FsError::NotFound { .. }))
}

/// Streams `[range)` of the file `opened` gives (with its path, for
/// messages): a task reads ahead while the body is sent. A read that fails
/// part-way ends the stream with an error, so the connection is cut, never
/// ended cleanly.
fn read_ahead(
    opened: impl Future<Output = Result<(shoal_client::File, String), std::io::Error>> + Send + 'static,
    range: std::ops::Range<u64>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD_PIECES);
    tokio::spawn(async move {
        let (mut file, path) = match opened.await {
            Ok(o) => o,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut at = range.start;
        while at < range.end {
            let want = (range.end - at).min(READ_PIECE_MAX_BYTES);
            let piece = match file.read_at(at, want).await {
                Ok(d) if d.len() as u64 == want => Ok(Bytes::from(d)),
                Ok(d) => {
                    Err(std::io::Error::other(format!("{path} ended at {} while being read", at + d.len() as u64)))
                }
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = piece.is_err();
            if failed {
                tracing::warn!(%path, at, "read failed part-way; cutting the response");
            }
            if tx.send(piece).await.is_err() || failed {
                return;
            }
            at += want;
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

impl Store {
    pub fn new(client: Client) -> Self {
        Store { client }
    }

    /// Makes the working area (idempotent).
    pub async fn prepare(&self) -> Result<(), ClientError> {
        self.client.mkdir(TMP_DIR, true).await?;
        self.client.mkdir(keys::UPLOADS_DIR, true).await?;
        Ok(())
    }

    fn tmp_path() -> String {
        format!("{TMP_DIR}/{:032x}", rand::random::<u128>())
    }

    /// Writes `body` as a temporary file; see the module doc. Returns the
    /// temporary path, which the caller renames into place or removes.
    pub async fn write_tmp<S, E>(
        &self,
        body: S,
        declared_len: Option<u64>,
        content_md5: Option<[u8; 16]>,
        attrs: BTreeMap<String, Vec<u8>>,
        etag_override: Option<String>,
    ) -> Result<(String, Written), PutError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = Self::tmp_path();
        let result = async {
            // A small body of known length: the whole of it, then one
            // `write_new` (one meta entry instead of a create and a commit).
            if let Some(declared) = declared_len.filter(|l| (1..=WRITE_NEW_WHOLE_MAX_BYTES).contains(l)) {
                let mut buf = Vec::with_capacity(declared as usize);
                let mut body = body;
                while let Some(data) = body.next().await {
                    let data = data.map_err(|e| PutError::Body(e.to_string()))?;
                    let got = (buf.len() + data.len()) as u64;
                    if got > declared {
                        return Err(PutError::Incomplete { declared, got });
                    }
                    buf.extend_from_slice(&data);
                }
                if buf.len() as u64 != declared {
                    return Err(PutError::Incomplete { declared, got: buf.len() as u64 });
                }
                let digest: [u8; 16] = Md5::digest(&buf).into();
                check_digest(content_md5, digest)?;
                let st = self.client.write_new(&tmp, buf.into(), None, None).await?;
                return self.label(&tmp, &st, digest, etag_override, attrs).await;
            }
            let mut file = match declared_len {
                Some(0) => self.client.create(&tmp, None).await?,
                _ => self.client.create_for_writing(&tmp, None).await?,
            };
            let piece = (file.cached_stat().chunk_size * WRITE_PIECE_CHUNKS)
                .clamp(WRITE_PIECE_MIN_BYTES, WRITE_PIECE_MAX_BYTES) as usize;
            // The writer task writes one piece while the next one arrives.
            let (tx, mut rx) = mpsc::channel::<Bytes>(1);
            let writer = tokio::spawn(async move {
                let mut at = 0u64;
                while let Some(buf) = rx.recv().await {
                    let len = buf.len() as u64;
                    file.write_bytes_at(at, buf).await?;
                    at += len;
                }
                Ok::<_, ClientError>(file)
            });
            let pool = Pieces::default();
            let mut md5 = Md5::new();
            let mut total = 0u64;
            // A small object gets a small buffer.
            let mut buf = pool.take(declared_len.map_or(piece, |l| piece.min(l as usize)));
            let mut body = body;
            let received: Result<(), PutError> = async {
                while let Some(data) = body.next().await {
                    let data = data.map_err(|e| PutError::Body(e.to_string()))?;
                    md5.update(&data);
                    total += data.len() as u64;
                    let mut rest = &data[..];
                    while !rest.is_empty() {
                        let take = rest.len().min(piece - buf.len());
                        buf.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        if buf.len() == piece {
                            let full = std::mem::replace(&mut buf, pool.take(piece));
                            if tx.send(pool.lend(full)).await.is_err() {
                                return Ok(()); // The writer failed; its error is reported below.
                            }
                        }
                    }
                }
                if !buf.is_empty() {
                    let _ = tx.send(pool.lend(std::mem::take(&mut buf))).await;
                }
                Ok(())
            }
            .await;
            drop(tx);
            let written = writer.await.map_err(|e| PutError::Body(format!("writer task: {e}")))?;
            received?;
            let file = written?;
            if let Some(declared) = declared_len
                && declared != total
            {
                return Err(PutError::Incomplete { declared, got: total });
            }
            let digest: [u8; 16] = md5.finalize().into();
            check_digest(content_md5, digest)?;
            self.label(&tmp, file.cached_stat(), digest, etag_override, attrs).await
        }
        .await;
        match result {
            Ok(w) => Ok((tmp, w)),
            Err(e) => {
                self.discard(&tmp).await;
                Err(e)
            }
        }
    }

    /// Sets a written temporary file's ETag (stamped with its content as
    /// `st` shows it) and metadata attributes, and says what was written.
    async fn label(
        &self,
        tmp: &str,
        st: &Stat,
        digest: [u8; 16],
        etag_override: Option<String>,
        mut attrs: BTreeMap<String, Vec<u8>>,
    ) -> Result<Written, PutError> {
        let etag = etag_override.unwrap_or_else(|| rules::hex(&digest));
        attrs.insert(ATTR_ETAG.to_string(), rules::etag_attr(&rules::stamp(st.inode, st.size, st.mtime_ms), &etag));
        self.client.set_xattrs(tmp, &[ATTR_ETAG.to_string()], &attrs).await?;
        Ok(Written { etag, size: st.size, md5: digest })
    }

    /// Removes a temporary file, logging (not failing) when it cannot.
    pub async fn discard(&self, tmp: &str) {
        if let Err(e) = self.client.remove(tmp, false).await
            && !is_not_found(&e)
        {
            tracing::warn!(%tmp, "cannot remove a temporary object (the janitor will): {e}");
        }
    }

    /// Renames a finished temporary file onto `path`, making its directories
    /// when they are missing. The bucket (the first component) must exist.
    pub async fn place(&self, tmp: &str, bucket_dir: &str, path: &str) -> Result<(), ClientError> {
        let result = async {
            for attempt in 1..=PLACE_ATTEMPTS_MAX {
                // rename(2)'s rule (exactly that name): a file onto a
                // directory is refused (`IsADirectory`), in the same Raft
                // entry, so a key that is a prefix of other keys is refused
                // and never moved into that directory.
                match self.client.rename_exact(tmp, path, false).await {
                    // The directories are missing (new, or a delete removed
                    // them as they emptied): make them, and again.
                    Err(e) if is_not_found(&e) && attempt < PLACE_ATTEMPTS_MAX => {
                        let parent = keys::parent_of(path);
                        if parent == bucket_dir {
                            return Err(e); // The bucket itself is gone.
                        }
                        self.client.mkdir(parent, true).await?;
                    }
                    other => return other,
                }
            }
            unreachable!("the loop returns on its last attempt")
        }
        .await;
        if result.is_err() {
            self.discard(tmp).await;
        }
        result
    }

    /// The object's ETag: stored for its current content, or computed from
    /// its bytes and stored (see [`rules`]).
    pub async fn etag(&self, path: &str, st: &Stat) -> Result<String, ClientError> {
        let stamp = rules::stamp(st.inode, st.size, st.mtime_ms);
        if let Some(e) = rules::stored_etag(&st.xattrs, &stamp) {
            return Ok(e);
        }
        if st.size == 0 {
            return Ok(rules::EMPTY_ETAG.to_string()); // Nothing to read, nothing worth storing.
        }
        let mut file = self.client.open(path).await?;
        let mut md5 = Md5::new();
        let mut at = 0;
        while at < st.size {
            let data = file.read_at(at, (st.size - at).min(READ_PIECE_MAX_BYTES)).await?;
            if data.is_empty() {
                break;
            }
            md5.update(&data);
            at += data.len() as u64;
        }
        let etag = rules::hex(&md5.finalize());
        // Stored only if nothing was written meanwhile (the stamp still holds).
        let now = self.client.stat(path).await?;
        if rules::stamp(now.inode, now.size, now.mtime_ms) == stamp {
            let set = BTreeMap::from([(ATTR_ETAG.to_string(), rules::etag_attr(&stamp, &etag))]);
            if let Err(e) = self.client.set_xattrs(path, &[], &set).await {
                tracing::warn!(%path, "cannot store the computed ETag: {e}");
            }
        }
        Ok(etag)
    }

    /// Streams `[range)` of the file at `path`, opened afresh, if it is still
    /// inode `inode` (see [`read_ahead`]).
    pub fn read_stream(
        &self,
        path: &str,
        inode: u64,
        range: std::ops::Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
        let client = self.client.clone();
        let path = path.to_string();
        let opened = async move {
            match client.open(&path).await {
                Ok(f) if f.cached_stat().inode == inode => Ok((f, path)),
                Ok(_) => Err(std::io::Error::other(format!("{path} was replaced while being read"))),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            }
        };
        read_ahead(opened, range)
    }

    /// Streams `[range)` of a file already open, like [`Store::read_stream`].
    pub fn stream_file(
        &self,
        path: &str,
        file: shoal_client::File,
        range: std::ops::Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
        let path = path.to_string();
        read_ahead(async move { Ok((file, path)) }, range)
    }

    /// Visits the objects of the bucket at `dir` in key order, feeding `pager`,
    /// until it is full. ETags are looked up or computed for the objects it keeps.
    pub async fn walk(&self, dir: &str, pager: &mut Pager<ObjectInfo>) -> Result<(), ClientError> {
        // Depth-first with an explicit stack of directories still to visit.
        struct Frame {
            base: String,
            entries: std::vec::IntoIter<shoal_client::DirEntry>,
        }
        let mut stack = vec![Frame { base: String::new(), entries: self.sorted(dir).await?.into_iter() }];
        while let Some(frame) = stack.last_mut() {
            let Some(entry) = frame.entries.next() else {
                stack.pop();
                continue;
            };
            let key = format!("{}{}", frame.base, entry.name);
            if entry.stat.is_dir {
                let sub = format!("{key}/");
                match pager.subtree(&sub) {
                    Subtree::Skip => {}
                    Subtree::Rollup(cp) => {
                        if !pager.push_prefix(cp) {
                            return Ok(());
                        }
                    }
                    Subtree::Descend => {
                        let entries = match self.sorted(&format!("{dir}/{key}")).await {
                            Ok(e) => e,
                            // Removed meanwhile: nothing of it to list.
                            Err(e) if is_not_found(&e) => continue,
                            Err(e) => return Err(e),
                        };
                        stack.push(Frame { base: sub, entries: entries.into_iter() });
                    }
                }
                continue;
            }
            let path = format!("{dir}/{key}");
            let etag = match self.etag(&path, &entry.stat).await {
                Ok(e) => e,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e),
            };
            let info = ObjectInfo { size: entry.stat.size, etag, mtime_ms: entry.stat.mtime_ms };
            if !pager.push(&key, info) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A directory's entries with their attributes, in key order.
    async fn sorted(&self, dir: &str) -> Result<Vec<shoal_client::DirEntry>, ClientError> {
        let mut entries = self.client.list_xattrs(dir).await?;
        entries.sort_by(|a, b| sibling_order((&a.name, a.stat.is_dir), (&b.name, b.stat.is_dir)));
        Ok(entries)
    }

    /// Removes the object at `path` and then the directories it leaves empty,
    /// up to (not including) the bucket's.
    pub async fn delete(&self, bucket_dir: &str, path: &str) -> Result<(), ClientError> {
        match self.client.stat(path).await {
            Ok(st) if st.is_dir => return Ok(()), // A prefix, not an object: nothing to delete.
            Ok(_) => {}
            Err(e) if is_not_found(&e) || matches!(e, ClientError::Fs(FsError::NotADirectory { .. })) => return Ok(()),
            Err(e) => return Err(e),
        }
        match self.client.remove(path, false).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e),
        }
        let mut dir = keys::parent_of(path).to_string();
        while dir != bucket_dir && dir.len() > bucket_dir.len() {
            // Fails (and stops) when something is still in it.
            if self.client.remove(&dir, false).await.is_err() {
                break;
            }
            dir = keys::parent_of(&dir).to_string();
        }
        Ok(())
    }
}

/// Refuses a body whose MD5 is not the one the request declared.
fn check_digest(declared: Option<[u8; 16]>, digest: [u8; 16]) -> Result<(), PutError> {
    match declared.is_some_and(|want| want != digest) {
        true => Err(PutError::BadDigest),
        false => Ok(()),
    }
}
