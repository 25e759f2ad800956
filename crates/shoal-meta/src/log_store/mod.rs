//! The durable Raft log: append-only segment files in `DIR/raftlog/`
//! (docs/formats.md), written without a B-tree's page copies.
//!
//! - [`segment`]: the files. Each entry is one frame (its index, then its
//!   record with a CRC32C), appended to the newest segment; a segment past
//!   [`SEGMENT_BYTES`] is fsynced and followed by a new one, so only the
//!   newest segment can ever hold a torn write.
//! - [`flusher`]: [`LogStore::append`] writes into the page cache and
//!   returns; a flusher thread fsyncs (once for every append waiting) and
//!   only then tells openraft the entries are durable. An fsync that fails
//!   poisons the store.
//! - [`hard`]: the vote and the last purged id, replaced whole and fsynced;
//!   the committed id, in two slots written without an fsync.
//! - [`legacy`]: the log of earlier versions (`raft.redb`), moved into
//!   segments once, at the first start of this version.
//!
//! On disk per entry: its payload plus 28 bytes (the frame's index and the
//! record header). A truncation unlinks later segments (directory fsync),
//! then cuts the segment at a frame boundary and fsyncs, before it returns;
//! a purge records the purged id durably, then deletes the segments wholly
//! below it.
//!
//! Opening reads every segment and checks every record's header and CRC and
//! that indexes follow each other. A torn tail of the newest segment (a
//! partial frame, zeros, or a last frame failing its CRC and ending at the
//! end of the file: what a crash during an append leaves, and such an append
//! was never acknowledged) is cut off, with a warning. Anything else (damage
//! with frames after it, a frame out of sequence, a torn older segment, a
//! newer format) stops the node naming the file and the place.

pub mod flusher;
pub mod hard;
pub mod legacy;
pub mod segment;

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Context;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};

use crate::TypeConfig;
use crate::format::{self, RecordKind};
use hard::{Committed, HardState};
use segment::{Frame, Tail};

/// A segment is closed and a new one started once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// The log's directory under the node's data directory.
pub const LOG_DIR: &str = "raftlog";
/// The log of earlier versions, moved into [`LOG_DIR`] at the first start.
pub const LEGACY_FILE: &str = "raft.redb";
/// In [`LOG_DIR`] when its content was moved from [`LEGACY_FILE`].
pub const MIGRATED_MARK: &str = "migrated-from-raft.redb";

type StorageResult<T> = Result<T, StorageError<u64>>;

fn read_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::error(e.to_string())).into()
}

fn write_err(e: impl std::fmt::Display) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

/// One segment file, open for reads and appends.
pub struct Segment {
    pub first: u64,
    pub path: PathBuf,
    pub file: File,
}

/// Where one entry's frame is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    segment: u64,
    frame: Frame,
}

/// The log's index: every live entry's place, and the newest segment's end.
struct Log {
    segments: BTreeMap<u64, Arc<Segment>>,
    /// Entry `first + i` is at `locs[i]`; consecutive, no holes.
    locs: VecDeque<Loc>,
    first: u64,
    /// The last entry's id, or the purged id when no entry is left.
    last: Option<LogId<u64>>,
    /// Bytes in the newest segment.
    end: u64,
}

impl Log {
    fn next_index(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    fn newest(&self) -> Option<&Arc<Segment>> {
        self.segments.values().next_back()
    }

    fn loc(&self, index: u64) -> Option<Loc> {
        index.checked_sub(self.first).and_then(|i| self.locs.get(i as usize)).copied()
    }
}

struct Inner {
    dir: PathBuf,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
    log: Mutex<Log>,
    hard: Mutex<HardState>,
    committed: Mutex<(Committed, Option<LogId<u64>>)>,
    flusher: flusher::Flusher,
}

/// The log store; cheap to clone (clones share everything).
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn decode_entry(path: &Path, index: u64, bytes: &[u8]) -> Result<Entry<TypeConfig>, String> {
    let entry: Entry<TypeConfig> = format::decode(RecordKind::LogEntry, bytes, format::upgrade_legacy_entry_json)
        .map_err(|e| format!("{}, log entry {index}: {e}", path.display()))?;
    if entry.log_id.index != index {
        return Err(format!("{}, log entry {index}: holds the entry of index {}", path.display(), entry.log_id.index));
    }
    Ok(entry)
}

fn create_segment(dir: &Path, first: u64) -> std::io::Result<Arc<Segment>> {
    let path = dir.join(segment::file_name(first));
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    file.write_all_at(&segment::header(first), 0)?;
    Ok(Arc::new(Segment { first, path, file }))
}

impl LogStore {
    /// Opens (or creates) the log of the node whose data directory is
    /// `dir`, moving a `raft.redb` of an earlier version into it first.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    /// [`LogStore::open`] with segments of `segment_bytes`.
    pub fn open_with(dir: &Path, segment_bytes: u64) -> anyhow::Result<Self> {
        let log_dir = dir.join(LOG_DIR);
        let legacy = dir.join(LEGACY_FILE);
        if !log_dir.exists() {
            if legacy.exists() {
                migrate(dir, &legacy).with_context(|| format!("moving {} into {LOG_DIR}/", legacy.display()))?;
            } else {
                let tmp = dir.join(format!("{LOG_DIR}.tmp"));
                let _ = std::fs::remove_dir_all(&tmp);
                std::fs::create_dir(&tmp)?;
                hard::sync_dir(&tmp)?;
                std::fs::rename(&tmp, &log_dir)?;
                hard::sync_dir(dir)?;
            }
        }
        let hard = hard::read_hard(&log_dir)?;
        let (committed, saved_committed) = Committed::open(&log_dir)?;
        let log = load(&log_dir, hard.purged)?;
        if legacy.exists() {
            // Moved here by a start that crashed before removing it; any other
            // raft.redb beside a segment log is not ours to delete.
            anyhow::ensure!(
                log_dir.join(MIGRATED_MARK).exists(),
                "{} and {} both exist, and the log was not moved from that file: remove the one that is stale",
                legacy.display(),
                log_dir.display()
            );
            std::fs::remove_file(&legacy)?;
            hard::sync_dir(dir)?;
        }
        // The saved committed id never reaches past the log (it is written
        // without an fsync, and a torn tail may have been cut).
        let committed_id = match (saved_committed, log.last) {
            (Some(c), Some(last)) if c.index > last.index => Some(last),
            (Some(_), None) => None,
            (c, _) => c,
        };
        Ok(LogStore {
            inner: Arc::new(Inner {
                flusher: flusher::Flusher::start(log_dir.clone()),
                dir: log_dir,
                segment_bytes,
                log: Mutex::new(log),
                hard: Mutex::new(hard),
                committed: Mutex::new((committed, committed_id)),
            }),
        })
    }

    /// True when this node has never voted nor logged anything: a pristine node.
    pub fn is_pristine(&self) -> anyhow::Result<bool> {
        // One lock at a time (truncation takes the log's, then the hard state's).
        let nothing_hard = {
            let hard = lock(&self.inner.hard);
            hard.vote.is_none() && hard.purged.is_none()
        };
        Ok(nothing_hard && lock(&self.inner.log).locs.is_empty())
    }

    /// fsync rounds so far: appends that shared one count once.
    pub fn flush_rounds(&self) -> u64 {
        self.inner.flusher.rounds()
    }

    #[cfg(test)]
    fn hold_flusher(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.flusher.hold()
    }

    /// Writes `entries` and has the flusher call `done` once they are
    /// durable (or with the error that stopped them).
    pub fn append_then(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
        done: flusher::Done,
    ) -> StorageResult<()> {
        let mut frames = Vec::new();
        for e in entries {
            match format::encode(RecordKind::LogEntry, &e) {
                Ok(record) => frames.push((e.log_id, record)),
                Err(err) => {
                    done(Err(std::io::Error::other(err.to_string())));
                    return Err(write_err(err));
                }
            }
        }
        if frames.is_empty() {
            done(Ok(()));
            return Ok(());
        }
        if self.inner.flusher.poisoned() {
            let e = "an fsync of the Raft log failed earlier: this node takes no more appends until it restarts";
            done(Err(std::io::Error::other(e)));
            return Err(write_err(e));
        }
        let entries = frames.len() as u64;
        // The job is queued under the log's lock, so the flusher sees jobs
        // in the order their frames were written.
        let queued = write_frames(&self.inner, &frames, |files, sync_dir| {
            self.inner.flusher.submit(flusher::Job { entries, files, sync_dir, done })
        });
        queued.map_err(write_err)
    }

    fn update_hard(&self, change: impl FnOnce(&mut HardState)) -> std::io::Result<()> {
        let mut hard = lock(&self.inner.hard);
        let mut next = hard.clone();
        change(&mut next);
        hard::write_hard(&self.inner.dir, &next)?;
        *hard = next;
        Ok(())
    }
}

/// Where entries `indexes` are, with their segments, taken under the log's
/// lock so that they can be read after it is released (a purge may unlink a
/// segment meanwhile: its open file still reads).
fn places(log: &Log, indexes: std::ops::Range<u64>) -> Vec<(u64, Arc<Segment>, Frame)> {
    indexes.map_while(|i| log.loc(i).map(|loc| (i, log.segments[&loc.segment].clone(), loc.frame))).collect()
}

fn read_place(index: u64, segment: &Segment, frame: Frame) -> Result<Entry<TypeConfig>, String> {
    let bytes = segment::read_record(&segment.file, frame)
        .map_err(|e| format!("{}, log entry {index}: {e}", segment.path.display()))?;
    decode_entry(&segment.path, index, &bytes)
}

/// The entry at `index`, which the log must hold, read under its lock.
fn read_at(log: &Log, index: u64) -> Result<Entry<TypeConfig>, String> {
    let (i, segment, frame) = places(log, index..index + 1).pop().ok_or_else(|| format!("no log entry {index}"))?;
    read_place(i, &segment, frame)
}

/// Reads every segment of `dir` into the log's index (see the module doc).
fn load(dir: &Path, purged: Option<LogId<u64>>) -> anyhow::Result<Log> {
    let mut firsts: Vec<u64> = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let name = item?.file_name();
        if let Some(first) = name.to_str().and_then(segment::parse_name) {
            firsts.push(first);
        }
    }
    firsts.sort_unstable();
    let start = purged.map_or(0, |p| p.index + 1);
    let mut log = Log { segments: BTreeMap::new(), locs: VecDeque::new(), first: start, last: purged, end: 0 };
    let newest = firsts.last().copied();
    for first in firsts {
        let path = dir.join(segment::file_name(first));
        if Some(first) == newest && !segment::header_written(&path)? {
            // Created just before a crash, before its header reached the
            // disk: it never held an acknowledged entry.
            tracing::warn!(path = %path.display(), "removing a log segment whose header was never written (a crash while it was created)");
            std::fs::remove_file(&path)?;
            hard::sync_dir(dir)?;
            continue;
        }
        let scanned = segment::scan(&path, first)?;
        let mut file_len = scanned.file_len;
        match &scanned.tail {
            Tail::Clean => {}
            Tail::Corrupt { at, why } => anyhow::bail!("{}: damaged at byte {at}: {why}", path.display()),
            Tail::Torn { at, why } if Some(first) != newest => {
                anyhow::bail!("{}: damaged at byte {at} ({why}), and it is not the newest segment", path.display())
            }
            Tail::Torn { at, why } => {
                tracing::warn!(
                    path = %path.display(),
                    at,
                    cut_bytes = scanned.file_len - at,
                    "the Raft log ends with a partial or damaged entry, what a crash during an append leaves (such an append was never acknowledged): cutting it off ({why})"
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(*at)?;
                f.sync_all()?;
                file_len = *at;
            }
        }
        for frame in scanned.frames {
            if frame.index < start {
                continue;
            }
            if log.locs.is_empty() && purged.is_none() {
                log.first = frame.index;
            }
            if frame.index != log.next_index() {
                anyhow::bail!(
                    "{}: holds log entry {} where entry {} belongs (a hole in the log)",
                    path.display(),
                    frame.index,
                    log.next_index()
                );
            }
            log.locs.push_back(Loc { segment: first, frame });
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        log.segments.insert(first, Arc::new(Segment { first, path, file }));
        log.end = file_len;
    }
    if let Some(last) = log.locs.back() {
        let index = log.next_index() - 1;
        let segment = &log.segments[&last.segment];
        let bytes = segment::read_record(&segment.file, last.frame)?;
        let entry = decode_entry(&segment.path, index, &bytes).map_err(anyhow::Error::msg)?;
        log.last = Some(entry.log_id);
    }
    Ok(log)
}

/// Moves a `raft.redb` into a new segment log: written whole under
/// `raftlog.tmp`, fsynced, renamed into place. The caller removes the old file.
fn migrate(dir: &Path, legacy_path: &Path) -> anyhow::Result<()> {
    let old = legacy::read(legacy_path)?;
    let tmp = dir.join(format!("{LOG_DIR}.tmp"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp)?;
    hard::write_hard(&tmp, &HardState { vote: old.vote, purged: old.purged })?;
    let (mut committed, _) = Committed::open(&tmp)?;
    committed.save(old.committed)?;
    if let Some(first) = old.entries.first() {
        let segment = create_segment(&tmp, first.log_id.index)?;
        let mut bytes = Vec::new();
        for e in &old.entries {
            segment::push_frame(&mut bytes, e.log_id.index, &format::encode(RecordKind::LogEntry, e)?);
        }
        segment.file.write_all_at(&bytes, segment::SEGMENT_HEADER_BYTES)?;
        segment.file.sync_all()?;
    }
    File::open(tmp.join("committed"))?.sync_all()?;
    hard::replace_durably(&tmp, MIGRATED_MARK, b"")?;
    std::fs::rename(&tmp, dir.join(LOG_DIR))?;
    hard::sync_dir(dir)?;
    tracing::info!(entries = old.entries.len(), "moved the Raft log from {} into {LOG_DIR}/", legacy_path.display());
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let places = {
            let log = lock(&self.inner.log);
            let from = match range.start_bound() {
                Bound::Included(&i) => i,
                Bound::Excluded(&i) => i + 1,
                Bound::Unbounded => log.first,
            }
            .max(log.first);
            let to = match range.end_bound() {
                Bound::Included(&i) => i.saturating_add(1),
                Bound::Excluded(&i) => i,
                Bound::Unbounded => log.next_index(),
            }
            .min(log.next_index());
            places(&log, from..to.max(from))
        };
        places.iter().map(|(i, segment, frame)| read_place(*i, segment, *frame).map_err(read_err)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let purged = lock(&self.inner.hard).purged;
        let log = lock(&self.inner.log);
        Ok(LogState { last_purged_log_id: purged, last_log_id: log.last.or(purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let store = self.clone();
        let vote = *vote;
        let saved = while_the_core_waits("saving the vote", move || store.update_hard(|h| h.vote = Some(vote))).await;
        saved.map_err(write_err)?.map_err(|e| StorageIOError::write_vote(AnyError::error(e.to_string())).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        Ok(lock(&self.inner.hard).vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        let mut c = lock(&self.inner.committed);
        c.0.save(committed).map_err(write_err)?;
        c.1 = committed;
        let index = committed.map_or(0, |l| l.index);
        metrics::gauge!(crate::metric_names::RAFT_COMMIT_INDEX).set(index as f64);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(lock(&self.inner.committed).1)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let started = Instant::now();
        let appended = self.append_then(entries, Box::new(move |result| callback.log_io_completed(result)));
        warn_if_slow("writing entries to the log", started);
        appended
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let store = self.clone();
        let truncated = while_the_core_waits("truncating the log", move || truncate_from(&store, log_id.index)).await;
        truncated.map_err(write_err)?.map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let store = self.clone();
        let purged = while_the_core_waits("purging the log", move || purge_to(&store, log_id)).await;
        purged.map_err(write_err)?.map_err(write_err)
    }
}

/// openraft's core waits for a vote to be saved, for entries to be written
/// (not synced: the flusher does that), and for a truncation or a purge,
/// and sends no heartbeat meanwhile: one that takes longer than
/// [`crate::stall_watch::REPORT_LATE`] is logged, since a follower may stand
/// for election when it lasts past the election timeout.
/// Runs `work` on a blocking thread, [`warn_if_slow`] about `what`.
async fn while_the_core_waits<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    let started = Instant::now();
    let done = tokio::task::spawn_blocking(work).await;
    warn_if_slow(what, started);
    done
}

fn warn_if_slow(what: &str, started: Instant) {
    let took = started.elapsed();
    if took >= crate::stall_watch::REPORT_LATE {
        tracing::warn!(took_ms = took.as_millis() as u64, "{what} kept the Raft core waiting");
    }
}

/// Appends `frames` (consecutive entries) to the newest segment, starting a
/// new one when it is full or when the log was emptied by a purge, then
/// hands `queue` the files written and whether a segment was created, still
/// under the log's lock. The in-memory index changes only once every write
/// succeeded; on an error `queue` is not called and the error is returned
/// (openraft treats it as fatal).
fn write_frames(
    inner: &Inner,
    frames: &[(LogId<u64>, Vec<u8>)],
    queue: impl FnOnce(Vec<Arc<Segment>>, bool),
) -> Result<(), String> {
    let Some((first_id, _)) = frames.first() else { return Ok(()) };
    let mut log = lock(&inner.log);
    if !log.locs.is_empty() && first_id.index != log.next_index() {
        return Err(format!("append of entry {} where entry {} belongs", first_id.index, log.next_index()));
    }
    let io = |s: &Segment, e: std::io::Error| format!("{}: {e}", s.path.display());
    // Planned changes, applied to `log` only at the end.
    let mut newest = log.newest().cloned();
    let mut end = log.end;
    let mut live = log.locs.len();
    let mut created: Vec<Arc<Segment>> = Vec::new();
    let mut locs: Vec<Loc> = Vec::with_capacity(frames.len());
    let mut batch: Vec<u8> = Vec::new();
    let mut batch_at = end;
    for (id, record) in frames {
        // A new segment: the first ever, a full one, or after a purge left
        // no live entry (so a segment's frames are always consecutive).
        let full = end >= inner.segment_bytes;
        let stale = live == 0 && end > segment::SEGMENT_HEADER_BYTES;
        if newest.is_none() || full || stale {
            if let Some(old) = &newest {
                if !batch.is_empty() {
                    old.file.write_all_at(&batch, batch_at).map_err(|e| io(old, e))?;
                    batch.clear();
                }
                // The old segment is durable before the next one exists, so
                // only the newest segment can ever have a torn tail.
                old.file.sync_data().map_err(|e| io(old, e))?;
            }
            let s = create_segment(&inner.dir, id.index).map_err(|e| format!("{}: {e}", inner.dir.display()))?;
            created.push(s.clone());
            newest = Some(s);
            end = segment::SEGMENT_HEADER_BYTES;
            batch_at = end;
        }
        let segment = newest.as_ref().expect("a segment to write to");
        let len = (segment::FRAME_PREFIX_BYTES + record.len()) as u32;
        locs.push(Loc { segment: segment.first, frame: Frame { index: id.index, offset: end, len } });
        segment::push_frame(&mut batch, id.index, record);
        end += len as u64;
        live += 1;
    }
    let segment = newest.expect("a segment was written");
    if !batch.is_empty() {
        segment.file.write_all_at(&batch, batch_at).map_err(|e| io(&segment, e))?;
    }
    // Every write succeeded: the index takes the new entries.
    if log.locs.is_empty() {
        log.first = first_id.index;
    }
    for s in &created {
        log.segments.insert(s.first, s.clone());
    }
    log.locs.extend(locs);
    log.end = end;
    log.last = frames.last().map(|(id, _)| *id);
    queue(vec![segment], !created.is_empty());
    Ok(())
}

/// Removes the entries from `index` on, durably, before returning: later
/// segments are unlinked and the directory fsynced first, then the segment
/// holding `index` is cut there and fsynced.
fn truncate_from(store: &LogStore, index: u64) -> Result<(), String> {
    let mut log = lock(&store.inner.log);
    let Some(loc) = log.loc(index) else { return Ok(()) };
    let later: Vec<u64> = log.segments.range(loc.segment + 1..).map(|(k, _)| *k).collect();
    for first in &later {
        let path = log.segments[first].path.clone();
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        log.segments.remove(first);
    }
    if !later.is_empty() {
        hard::sync_dir(&store.inner.dir).map_err(|e| e.to_string())?;
    }
    let segment = log.segments[&loc.segment].clone();
    segment.file.set_len(loc.frame.offset).map_err(|e| format!("{}: {e}", segment.path.display()))?;
    segment.file.sync_all().map_err(|e| format!("{}: {e}", segment.path.display()))?;
    let previous = if index > log.first { Some(read_at(&log, index - 1)?) } else { None };
    let keep = (index - log.first) as usize;
    log.locs.truncate(keep);
    log.end = loc.frame.offset;
    log.last = match previous {
        Some(e) => Some(e.log_id),
        None => lock(&store.inner.hard).purged,
    };
    Ok(())
}

/// Records `upto` as purged, durably, then forgets the entries up to it and
/// deletes the segments that hold nothing after it.
fn purge_to(store: &LogStore, upto: LogId<u64>) -> Result<(), String> {
    store.update_hard(|h| h.purged = Some(upto)).map_err(|e| e.to_string())?;
    let mut log = lock(&store.inner.log);
    while log.first <= upto.index && log.locs.pop_front().is_some() {
        log.first += 1;
    }
    if log.locs.is_empty() {
        log.first = upto.index + 1;
        if log.last.is_none_or(|l| l.index <= upto.index) {
            log.last = Some(upto);
        }
    }
    // A segment other than the newest holds nothing live once the next one
    // starts at or below the first live index.
    let firsts: Vec<u64> = log.segments.keys().copied().collect();
    let mut removed = false;
    for pair in firsts.windows(2) {
        if pair[1] <= log.first {
            let s = log.segments.remove(&pair[0]).expect("listed");
            std::fs::remove_file(&s.path).map_err(|e| format!("{}: {e}", s.path.display()))?;
            removed = true;
        }
    }
    drop(log);
    if removed {
        hard::sync_dir(&store.inner.dir).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
