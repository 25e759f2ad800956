//! Recovery when the store opens: every replica found on disk is brought to
//! a consistent state before anything is served.
//!
//! - An undo record newer than the replica's `.meta` belongs to a session
//!   that never finished (the process died, or died while rolling it back):
//!   it is rolled back ([`super::files::roll_back`]).
//! - Bytes past the meta's length (an appending session that died) are cut.
//! - A data file without a meta (a first write or a copy that died) is removed.
//! - A `.meta` that fails its checksum is set aside as `.meta.bad`, so the
//!   replica is gone and meta re-replicates the chunk.

use std::collections::HashMap;
use std::path::Path;

use super::StoreError;
use super::files::roll_back;
use super::spare::Disk;
use crate::format::{self, ReplicaMeta, data_path, meta_bad_path, meta_path};
use crate::undo;

/// What a directory scan found of one chunk: its meta, the versions with an
/// undo record, and whether a data file exists.
#[derive(Default)]
struct Found {
    meta: Option<ReplicaMeta>,
    undo: Vec<u64>,
    has_data: bool,
}

/// Scans `dir` and recovers every replica in it; returns those that remain.
pub(super) fn recover_dir(dir: &Disk) -> Result<HashMap<u64, ReplicaMeta>, StoreError> {
    let mut found: HashMap<u64, Found> = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if let Some((id, version)) = undo::parse_undo_name(&name) {
            refuse_newer(&undo::undo_path(dir, id, version), undo::newer_format, undo::UNDO_FORMAT)?;
            found.entry(id).or_default().undo.push(version);
        } else if let Some(id) = format::parse_data_name(&name) {
            found.entry(id).or_default().has_data = true;
        } else if name.ends_with(".meta.tmp") {
            // A meta write that died before its rename: the old meta (or
            // none) still stands.
            dir.remove(&dir.join(&name))?;
        } else if let Some(id) = format::parse_meta_name(&name) {
            refuse_newer(&meta_path(dir, id), ReplicaMeta::newer_format, format::META_FORMAT)?;
            match std::fs::read(meta_path(dir, id)).ok().and_then(|b| ReplicaMeta::decode(&b)) {
                Some(meta) => found.entry(id).or_default().meta = Some(meta),
                None => {
                    tracing::warn!(chunk_id = id, "unreadable replica meta; setting the replica aside");
                    let _ = std::fs::rename(meta_path(dir, id), meta_bad_path(dir, id));
                }
            }
        }
    }
    let mut replicas = HashMap::new();
    for (id, f) in found {
        if f.meta.is_none() && f.undo.is_empty() && !f.has_data {
            continue;
        }
        if let Some(meta) = recover(dir, id, f.meta, f.undo)? {
            replicas.insert(id, meta);
        }
    }
    Ok(replicas)
}

/// Stops the store from opening on a file of a format newer than this build
/// reads: treating it as damaged would delete a replica that a newer shoal
/// wrote (a downgrade), so the operator is told instead.
fn refuse_newer(path: &Path, newer: fn(&[u8]) -> Option<u32>, known: u32) -> Result<(), StoreError> {
    match std::fs::read(path) {
        Ok(b) => match newer(&b) {
            Some(found) => Err(StoreError::NewerFormat { path: path.to_path_buf(), found, known }),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Brings one replica to a consistent state: rolls back a session that
/// crashed before its finish and cuts bytes past the meta's length. `undo`
/// lists the versions with a record on disk.
fn recover(
    dir: &Disk,
    id: u64,
    meta: Option<ReplicaMeta>,
    mut undo: Vec<u64>,
) -> Result<Option<ReplicaMeta>, StoreError> {
    undo.sort_unstable();
    undo.dedup();
    let Some(mut meta) = meta else {
        // No readable meta: a first write or a copy that died, or a meta set
        // aside as unreadable. Nothing of the replica is trusted; rolling a
        // record back would bring it back at an older version.
        for v in &undo {
            dir.remove(&undo::undo_path(dir, id, *v))?;
        }
        dir.remove(&data_path(dir, id))?;
        return Ok(None);
    };
    let current = meta.version;
    for v in undo.iter().rev().filter(|v| **v > current) {
        match undo::load(dir, id, *v)? {
            Some(u) => {
                tracing::warn!(chunk_id = id, version = v, "rolling back a write that did not finish");
                match roll_back(dir, id, &undo, &u)? {
                    Some(m) => meta = m,
                    None => {
                        // Only a first write's record has no old meta, and a
                        // replica with a meta had a write before it: the
                        // files contradict each other. The rollback removed
                        // the replica; meta copies the chunk back.
                        tracing::error!(chunk_id = id, version = v, current, "first-write undo record beside a meta");
                        for v in undo.iter().filter(|w| **w < *v) {
                            dir.remove(&undo::undo_path(dir, id, *v))?;
                        }
                        return Ok(None);
                    }
                }
            }
            None => {
                tracing::warn!(chunk_id = id, version = v, "dropping a torn undo record");
                dir.remove(&undo::undo_path(dir, id, *v))?;
            }
        }
    }
    meta.undo = undo.into_iter().filter(|v| *v <= current && *v <= meta.version).collect();
    meta.assert_valid();
    // A missing data file reads as corruption (see `read_verified`).
    if let Ok(data) = std::fs::OpenOptions::new().write(true).open(data_path(dir, id))
        && data.metadata()?.len() > meta.len
    {
        data.set_len(meta.len)?;
        data.sync_all()?;
    }
    Ok(Some(meta))
}
