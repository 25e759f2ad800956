//! A new small file in one meta log entry: [`Client::write_new`].
//!
//! 1. Ask the meta leader for a chunk to write (`PrepareNew`): a reserved
//!    chunk id, its replica chain and a capability to write version 1 of it.
//!    No log entry is made for this.
//! 2. Stream the bytes through the chain, as [`File::write_at`] does; every
//!    replica holds them durably when the chain acks. A failed replica is
//!    named in the next `PrepareNew`, which plans around it (under a new id).
//! 3. `CreateWritten`: one entry makes the file, lists the chunk as its
//!    chunk 0 and commits the size. Only then does the call return.
//!
//! A call that fails or is dropped part-way leaves no file, or (if its
//! `CreateWritten` went through unseen) the whole file: never a file whose
//! size names bytes its replicas do not hold. What it wrote under an id no
//! file was created with is collected from the servers' chunk reports.
//! A refusal that only means "write again" (the id was pushed out of its
//! reservation, or its capability expired) is retried under a fresh id.

use bytes::Bytes;
use shoal_proto::chunk::ChunkErrorKind;
use shoal_proto::meta as pb;

use crate::client::{Client, Owner, Stat, inode_of};
use crate::data::write_chain;
use crate::file::granted_header;
use crate::retry::{self, Action};
use crate::{ClientError, Result};

/// How often a whole `write_new` is redone after meta asked for a fresh id.
const FRESH_ID_ATTEMPTS_MAX: usize = 8;

/// Callers that have a small body whole (`put`, the S3 gateway's PUT) write
/// it with [`Client::write_new`] up to this size, and stream larger ones.
pub const WRITE_NEW_WHOLE_MAX_BYTES: u64 = 1 << 20;

impl Client {
    /// Creates the file `path` holding `data`; fails if the path exists.
    /// Durable on every replica and committed when it returns. A file of
    /// one chunk or less costs one meta log entry (see the module doc); an
    /// empty one is a plain create, and a bigger one is created and then
    /// written as [`Client::create_for_writing`] would.
    pub async fn write_new(
        &self,
        path: &str,
        data: Bytes,
        replication: Option<u32>,
        owner: Option<Owner>,
    ) -> Result<Stat> {
        if data.is_empty() {
            return self.create_new_then_write(path, data, replication, owner).await;
        }
        for _ in 0..FRESH_ID_ATTEMPTS_MAX {
            let Some(loc) = self.written_new(path, &data, replication).await? else {
                return self.create_new_then_write(path, data, replication, owner).await;
            };
            let pending = self.inner.requests.begin();
            let req = pb::CreateWrittenRequest {
                create: Some(new_file_request(path, replication, owner, false)),
                chunk: Some(loc),
                size: data.len() as u64,
                request: Some(pending.id),
            };
            match self
                .ns(|mut c| {
                    let req = req.clone();
                    async move { c.create_written(req).await }
                })
                .await
            {
                Ok(reply) => return Ok(inode_of(reply)),
                Err(ClientError::Fs(shoal_core::FsError::ChunkChanged { .. })) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::WriteFailed {
            chunk_id: 0,
            attempts: FRESH_ID_ATTEMPTS_MAX,
            last: "meta kept asking for a fresh chunk id (leaders changing?)".into(),
            no_space: false,
        })
    }

    /// Steps 1 and 2: a chunk written with `data` as its version 1; None
    /// when `data` does not fit in one chunk.
    async fn written_new(
        &self,
        path: &str,
        data: &Bytes,
        replication: Option<u32>,
    ) -> Result<Option<pb::ChunkLocation>> {
        let mut failed: Vec<String> = Vec::new();
        let mut last = String::new();
        let mut full = false;
        for attempt in 1.. {
            let req = pb::PrepareNewRequest {
                path: path.to_string(),
                replication: replication.unwrap_or(0),
                failed: failed.clone(),
            };
            let prep = match self
                .ns(|mut c| {
                    let req = req.clone();
                    async move { c.prepare_new(req).await }
                })
                .await
            {
                Ok(p) => p,
                // A namespace refusal (the name exists now) says it all.
                Err(e @ ClientError::Fs(_)) => return Err(e),
                Err(e) if !failed.is_empty() => {
                    return Err(ClientError::WriteFailed {
                        chunk_id: 0,
                        attempts: failed.len(),
                        last: format!("{last}; then {e}"),
                        no_space: full && matches!(e, ClientError::Fs(shoal_core::FsError::NotEnoughServers { .. })),
                    });
                }
                Err(e) => return Err(e),
            };
            if data.len() as u64 > prep.chunk_size {
                return Ok(None);
            }
            let header = granted_header(&prep, 0, None, 0);
            let loc = prep.chunk.unwrap_or_default();
            let e = match write_chain(&self.inner.data, &loc.replicas, header, data.clone()).await {
                Ok(()) => return Ok(Some(loc)),
                Err(e) => e,
            };
            last = format!("{}: {}", e.failed_replica, e.status.message());
            full |= e.kind == ChunkErrorKind::NoSpace;
            match retry::on_write_error(e.kind, attempt) {
                Action::Reprepare { route_around: false } => {}
                Action::Reprepare { route_around: true } => {
                    tracing::warn!(chunk_id = loc.id, replica = %e.failed_replica, "chain write failed: {}", e.status.message());
                    if !failed.contains(&e.failed_replica) {
                        failed.push(e.failed_replica);
                    }
                }
                _ => {
                    let no_space = e.kind == ChunkErrorKind::NoSpace;
                    return Err(ClientError::WriteFailed { chunk_id: loc.id, attempts: attempt, last, no_space });
                }
            }
        }
        unreachable!("the retry policy gives up within its bound")
    }

    /// The fallback: a plain create (the first chunk prepared with it when
    /// `data` is not empty), then a write of `data` through the handle.
    async fn create_new_then_write(
        &self,
        path: &str,
        data: Bytes,
        replication: Option<u32>,
        owner: Option<Owner>,
    ) -> Result<Stat> {
        let req = new_file_request(path, replication, owner, !data.is_empty());
        let mut f = self.create_with(req).await?;
        f.write_bytes_at(0, data).await?;
        Ok(f.cached_stat().clone())
    }
}

/// The create request of a new file at `path`.
fn new_file_request(
    path: &str,
    replication: Option<u32>,
    owner: Option<Owner>,
    prepare_first_chunk: bool,
) -> pb::CreateRequest {
    pb::CreateRequest {
        path: path.to_string(),
        replication: replication.unwrap_or(0),
        owner: owner.map(Into::into),
        prepare_first_chunk,
        ..Default::default()
    }
}
