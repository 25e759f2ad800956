//! Reading the Raft log of earlier versions: `raft.redb`, one redb database
//! with a `log` table (index → entry) and a `state` table (the vote, the last
//! purged log id, the committed log id). [`LogStore::open`](super::LogStore)
//! moves its content into the segment log once and removes it.
//!
//! Every value is a headed record ([`crate::format`]), or plain JSON from
//! before records had headers; both are read. Every value is checked (and
//! every entry decoded), so a newer format or a damaged value stops the
//! migration, and with it the node, naming the file and the value.

use std::path::{Path, PathBuf};

use openraft::{Entry, LogId, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;

use crate::TypeConfig;
use crate::format::{self, FormatError, RecordKind};

pub(super) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(super) const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
pub(super) const KEY_VOTE: &str = "vote";
pub(super) const KEY_PURGED: &str = "last_purged";
pub(super) const KEY_COMMITTED: &str = "committed";

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

/// Everything `raft.redb` held, every entry decoded.
#[derive(Debug)]
pub struct Legacy {
    pub vote: Option<Vote<u64>>,
    pub purged: Option<LogId<u64>>,
    pub committed: Option<LogId<u64>>,
    pub entries: Vec<Entry<TypeConfig>>,
}

/// Reads the whole of `path` (a `raft.redb`).
pub fn read(path: &Path) -> anyhow::Result<Legacy> {
    let db = Database::open(path)?;
    let txn = db.begin_read()?;
    let err = |record, error| RecordError { file: path.to_path_buf(), record, error };
    let state = txn.open_table(STATE)?;
    for item in state.iter()? {
        let (key, _) = item?;
        if ![KEY_VOTE, KEY_PURGED, KEY_COMMITTED].contains(&key.value()) {
            anyhow::bail!("{}: unknown state key `{}`", path.display(), key.value());
        }
    }
    fn value<T: DeserializeOwned>(
        table: &redb::ReadOnlyTable<&str, &[u8]>,
        key: &'static str,
    ) -> anyhow::Result<Result<Option<T>, FormatError>> {
        Ok(match table.get(key)? {
            Some(v) => format::decode(RecordKind::StateValue, v.value(), format::legacy_state_json).map(Some),
            None => Ok(None),
        })
    }
    let vote = value::<Vote<u64>>(&state, KEY_VOTE)?.map_err(|e| err(Record::State(KEY_VOTE), e))?;
    let purged = value::<LogId<u64>>(&state, KEY_PURGED)?.map_err(|e| err(Record::State(KEY_PURGED), e))?;
    let committed = value::<Option<LogId<u64>>>(&state, KEY_COMMITTED)?
        .map_err(|e| err(Record::State(KEY_COMMITTED), e))?
        .flatten();
    let log = txn.open_table(LOG)?;
    let mut entries = Vec::new();
    for item in log.iter()? {
        let (index, bytes) = item?;
        let index = index.value();
        let entry: Entry<TypeConfig> =
            format::decode(RecordKind::LogEntry, bytes.value(), format::upgrade_legacy_entry_json)
                .map_err(|e| err(Record::LogEntry(index), e))?;
        if entry.log_id.index != index {
            anyhow::bail!("{}, log entry {index}: holds the entry of index {}", path.display(), entry.log_id.index);
        }
        entries.push(entry);
    }
    Ok(Legacy { vote, purged, committed, entries })
}

/// Test support: a `raft.redb` holding exactly these raw values, as some
/// writer (an older Shoal, or a damaged disk) left them.
#[cfg(test)]
pub fn write_raw(path: &Path, log: &[(u64, Vec<u8>)], state: &[(&str, Vec<u8>)]) {
    let db = Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
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
