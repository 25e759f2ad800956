//! The durable Raft log and vote, in one redb database (`raft.redb`).
//!
//! Tables: `log` maps a log index to its entry; `state` holds the vote, the
//! last purged log id and the committed log id. Every value is a headed record
//! ([`crate::format`]: magic, format number, CRC32C, postcard body); values
//! written before formats had numbers are plain JSON and still read. Opening
//! the store checks every value's header and CRC, so a node whose log holds a
//! newer format or a damaged entry refuses to start instead of running on it.
//!
//! Every write is one redb transaction committed with fsync (redb's default
//! durability) before openraft is told it is durable, and writes are issued
//! one at a time, in the order openraft asks, so the log never has a hole.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TypeConfig;
use crate::format::{self, FormatError, RecordKind};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const KEY_VOTE: &str = "vote";
const KEY_PURGED: &str = "last_purged";
const KEY_COMMITTED: &str = "committed";

type StorageResult<T> = Result<T, StorageError<u64>>;

fn read_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

/// Which value of `raft.redb` a [`RecordError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    LogEntry(u64),
    State(&'static str),
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Record::LogEntry(index) => write!(f, "log entry {index}"),
            Record::State(key) => write!(f, "state value `{key}`"),
        }
    }
}

/// A value of `raft.redb` that cannot be read, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{}, {record}: {error}", file.display())]
pub struct RecordError {
    pub file: PathBuf,
    pub record: Record,
    pub error: FormatError,
}

/// The log store; cheap to clone (the database is shared).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl LogStore {
    /// Opens or creates `dir/raft.redb`, and checks the header and CRC of every
    /// value in it (see the module doc).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("raft.redb");
        let db = Database::create(&path)?;
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(STATE)?;
        txn.commit()?;
        let store = LogStore { db: Arc::new(db), path: Arc::new(path) };
        store.check_all()?;
        Ok(store)
    }

    /// Checks every value's header and CRC (not its body): a newer format or
    /// a damaged value stops the node here, naming the file and the value.
    fn check_all(&self) -> Result<(), anyhow::Error> {
        let txn = self.db.begin_read()?;
        let state = txn.open_table(STATE)?;
        for item in state.iter()? {
            let (key, value) = item?;
            let record = match key.value() {
                KEY_VOTE => Record::State(KEY_VOTE),
                KEY_PURGED => Record::State(KEY_PURGED),
                KEY_COMMITTED => Record::State(KEY_COMMITTED),
                other => anyhow::bail!("{}: unknown state key `{other}`", self.path.display()),
            };
            format::check(RecordKind::StateValue, value.value()).map_err(|e| self.record_err(record, e))?;
        }
        let log = txn.open_table(LOG)?;
        for item in log.iter()? {
            let (index, value) = item?;
            format::check(RecordKind::LogEntry, value.value())
                .map_err(|e| self.record_err(Record::LogEntry(index.value()), e))?;
        }
        Ok(())
    }

    fn record_err(&self, record: Record, error: FormatError) -> RecordError {
        RecordError { file: self.path.as_ref().clone(), record, error }
    }

    fn decode_entry(&self, index: u64, bytes: &[u8]) -> StorageResult<Entry<TypeConfig>> {
        let entry: Entry<TypeConfig> = format::decode(RecordKind::LogEntry, bytes, format::upgrade_legacy_entry_json)
            .map_err(|e| read_err(self.record_err(Record::LogEntry(index), e)))?;
        if entry.log_id.index != index {
            let e = std::io::Error::other(format!(
                "{}, log entry {index}: holds the entry of index {}",
                self.path.display(),
                entry.log_id.index
            ));
            return Err(read_err(e));
        }
        Ok(entry)
    }

    /// True when this node has never voted nor logged anything: a pristine node.
    pub fn is_pristine(&self) -> anyhow::Result<bool> {
        let txn = self.db.begin_read()?;
        let state = txn.open_table(STATE)?;
        let log = txn.open_table(LOG)?;
        Ok(state.get(KEY_VOTE)?.is_none() && log.first()?.is_none() && state.get(KEY_PURGED)?.is_none())
    }

    fn get_state<T: DeserializeOwned>(&self, key: &'static str) -> StorageResult<Option<T>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(STATE).map_err(read_err)?;
        match table.get(key).map_err(read_err)? {
            Some(v) => Ok(Some(
                format::decode(RecordKind::StateValue, v.value(), format::legacy_state_json)
                    .map_err(|e| read_err(self.record_err(Record::State(key), e)))?,
            )),
            None => Ok(None),
        }
    }

    async fn put_state<T: Serialize>(&self, key: &'static str, value: &T) -> StorageResult<()> {
        let bytes = format::encode(RecordKind::StateValue, value).map_err(write_err)?;
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(STATE)?.insert(key, bytes.as_slice())?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

/// Runs a redb transaction on the blocking pool, mapping its error.
async fn blocking(f: impl FnOnce() -> Result<(), redb::Error> + Send + 'static) -> StorageResult<()> {
    tokio::task::spawn_blocking(f).await.map_err(write_err)?.map_err(write_err)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.range(range).map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            out.push(self.decode_entry(k.value(), v.value())?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<u64>> = self.get_state(KEY_PURGED)?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let last = match table.last().map_err(read_err)? {
            Some((k, v)) => Some(self.decode_entry(k.value(), v.value())?.log_id),
            None => last_purged,
        };
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        self.put_state(KEY_VOTE, vote).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        self.get_state(KEY_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        self.put_state(KEY_COMMITTED, &committed).await?;
        let index = committed.map_or(0, |l| l.index);
        metrics::gauge!(crate::metric_names::RAFT_COMMIT_INDEX).set(index as f64);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        Ok(self.get_state::<Option<LogId<u64>>>(KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push((e.log_id.index, format::encode(RecordKind::LogEntry, &e).map_err(write_err)?));
        }
        let db = self.db.clone();
        let res = blocking(move || {
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
        .await;
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(LOG)?.retain_in(log_id.index.., |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        let bytes = format::encode(RecordKind::StateValue, &log_id).map_err(write_err)?;
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write()?;
            txn.open_table(STATE)?.insert(KEY_PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?.retain_in(..=log_id.index, |_, _| false)?;
            txn.commit()?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership};

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn entry(index: u64) -> Entry<TypeConfig> {
        let payload = if index == 1 {
            let nodes = BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]);
            EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes))
        } else {
            EntryPayload::Blank
        };
        Entry { log_id: log_id(1, index), payload }
    }

    /// Stores raw values, as some writer (an older or newer Shoal, or a disk) left them.
    fn put_raw(store: &LogStore, log: &[(u64, Vec<u8>)], state: &[(&str, Vec<u8>)]) {
        let txn = store.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(LOG).unwrap();
            for (i, v) in log {
                t.insert(*i, v.as_slice()).unwrap();
            }
            let mut t = txn.open_table(STATE).unwrap();
            for (k, v) in state {
                t.insert(*k, v.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }

    fn current(index: u64) -> Vec<u8> {
        format::encode(RecordKind::LogEntry, &entry(index)).unwrap()
    }

    #[tokio::test]
    async fn legacy_json_values_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let vote = Vote::new_committed(1, 1);
        // Format 0: every value plain JSON, `committed` possibly `null`.
        let log: Vec<_> = (1..=3).map(|i| (i, serde_json::to_vec(&entry(i)).unwrap())).collect();
        put_raw(&store, &log, &[(KEY_VOTE, serde_json::to_vec(&vote).unwrap()), (KEY_COMMITTED, b"null".to_vec())]);
        drop(store);
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(store.read_vote().await.unwrap(), Some(vote));
        assert_eq!(store.read_committed().await.unwrap(), None);
        let got = store.try_get_log_entries(1..=3).await.unwrap();
        assert_eq!(got, (1..=3).map(entry).collect::<Vec<_>>());
        // New values are headed, beside the legacy ones.
        store.save_committed(Some(log_id(1, 3))).await.unwrap();
        assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 3)));
        put_raw(&store, &[(4, current(4))], &[]);
        assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 4)));
        assert_eq!(store.try_get_log_entries(3..).await.unwrap(), vec![entry(3), entry(4)]);
    }

    #[test]
    fn a_newer_entry_stops_the_node_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        put_raw(&store, &[(1, current(1)), (2, format::with_format(current(2), 7))], &[]);
        drop(store);
        let err = LogStore::open(dir.path()).err().expect("a newer format must be refused");
        let path = dir.path().join("raft.redb");
        assert_eq!(
            format!("{err:#}"),
            format!(
                "{}, log entry 2: format 7 is newer than this build of shoal reads (up to 2); run a newer shoal",
                path.display()
            )
        );
    }

    #[test]
    fn a_newer_state_value_stops_the_node_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let vote = format::encode(RecordKind::StateValue, &Vote::new_committed(1, 1)).unwrap();
        put_raw(&store, &[], &[(KEY_VOTE, format::with_format(vote, 3))]);
        drop(store);
        let err = format!("{:#}", LogStore::open(dir.path()).err().expect("refused"));
        assert!(err.contains("raft.redb, state value `vote`: format 3 is newer"), "{err}");
    }

    #[tokio::test]
    async fn a_corrupt_entry_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::open(dir.path()).unwrap();
        let mut bad = current(2);
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        put_raw(&store, &[(1, current(1)), (2, bad.clone())], &[]);
        drop(store);
        let err = format!("{:#}", LogStore::open(dir.path()).err().expect("refused"));
        assert!(err.contains("raft.redb, log entry 2: corrupt log entry: CRC32C mismatch"), "{err}");

        // Damage that appears after the node started is an error on read, not an entry.
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        put_raw(&store, &[(1, current(1)), (2, bad)], &[]);
        let err = store.try_get_log_entries(1..=2).await.unwrap_err().to_string();
        assert!(err.contains("CRC32C mismatch"), "{err}");
        // A log entry stored under the wrong index is refused too.
        put_raw(&store, &[(2, current(3))], &[]);
        let err = store.try_get_log_entries(2..=2).await.unwrap_err().to_string();
        assert!(err.contains("holds the entry of index 3"), "{err}");
    }
}
