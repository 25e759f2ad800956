//! The segment log's tests: openraft's storage suite, then what the suite
//! does not reach (reopening, damage, the move from `raft.redb`, segments
//! rolling and being purged, group commit).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership};

use super::*;
use crate::sm_store::StateMachineStore;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        // Small segments, so that the suite's purges and truncations cross them.
        let log = LogStore::open_with(dir.path(), 256).unwrap();
        let sm = StateMachineStore::open(dir.path()).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).unwrap();
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(index: u64) -> Entry<TypeConfig> {
    entry_of(1, index)
}

fn entry_of(term: u64, index: u64) -> Entry<TypeConfig> {
    let payload = if index == 1 {
        let nodes = BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]);
        EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], nodes))
    } else {
        EntryPayload::Blank
    };
    Entry { log_id: log_id(term, index), payload }
}

/// Appends and waits until the flusher says the entries are durable.
fn append(store: &LogStore, entries: Vec<Entry<TypeConfig>>) {
    let (tx, rx) = mpsc::channel();
    store.append_then(entries, Box::new(move |r| tx.send(r).unwrap())).unwrap();
    rx.recv().unwrap().unwrap();
}

async fn all(store: &mut LogStore) -> Vec<u64> {
    store.try_get_log_entries(..).await.unwrap().iter().map(|e| e.log_id.index).collect()
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(LOG_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn entries_votes_and_commits_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open_with(dir.path(), 200).unwrap();
    assert!(store.is_pristine().unwrap());
    append(&store, (1..=10).map(entry).collect());
    store.save_vote(&Vote::new_committed(1, 1)).await.unwrap();
    store.save_committed(Some(log_id(1, 7))).await.unwrap();
    assert!(segments(dir.path()).len() > 1, "small segments roll over: {:?}", segments(dir.path()));
    drop(store);
    let mut store = LogStore::open_with(dir.path(), 200).unwrap();
    assert!(!store.is_pristine().unwrap());
    assert_eq!(all(&mut store).await, (1..=10).collect::<Vec<_>>());
    assert_eq!(store.try_get_log_entries(3..5).await.unwrap(), vec![entry(3), entry(4)]);
    assert_eq!(store.read_vote().await.unwrap(), Some(Vote::new_committed(1, 1)));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 7)));
    assert_eq!(store.get_log_state().await.unwrap().last_log_id, Some(log_id(1, 10)));
}

#[tokio::test]
async fn a_truncation_and_a_purge_hold_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open_with(dir.path(), 200).unwrap();
    append(&store, (1..=20).map(entry).collect());
    let before = segments(dir.path()).len();
    // A new leader's entries replace 15.. (a conflicting suffix).
    store.truncate(log_id(1, 15)).await.unwrap();
    append(&store, (15..=16).map(|i| entry_of(2, i)).collect());
    store.purge(log_id(1, 12)).await.unwrap();
    assert!(segments(dir.path()).len() < before, "purged segments are deleted");
    drop(store);
    let mut store = LogStore::open_with(dir.path(), 200).unwrap();
    assert_eq!(all(&mut store).await, (13..=16).collect::<Vec<_>>());
    assert_eq!(store.try_get_log_entries(15..=15).await.unwrap(), vec![entry_of(2, 15)]);
    let state = store.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 12)), Some(log_id(2, 16))));
    // A purge past the end (a snapshot installed) empties the log; it goes on after it.
    store.purge(log_id(2, 30)).await.unwrap();
    append(&store, (31..=32).map(|i| entry_of(2, i)).collect());
    drop(store);
    let mut store = LogStore::open_with(dir.path(), 200).unwrap();
    assert_eq!(all(&mut store).await, vec![31, 32]);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_damage_before_it_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append(&store, (1..=5).map(entry).collect());
    drop(store);
    let seg = dir.path().join(LOG_DIR).join(segment::file_name(1));
    let full = std::fs::read(&seg).unwrap();
    // A crash in the middle of appending entry 5: it is cut off, 1..=4 stay.
    std::fs::write(&seg, &full[..full.len() - 4]).unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut store).await, vec![1, 2, 3, 4]);
    append(&store, vec![entry(5)]);
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut store).await, vec![1, 2, 3, 4, 5]);
    drop(store);
    // A flipped bit in the body of entry 2, with entries after it: refused,
    // never cut (entries 2..=5 were acknowledged).
    let mut bytes = std::fs::read(&seg).unwrap();
    let at =
        segment::scan(&seg, 1).unwrap().frames[1].offset as usize + segment::FRAME_PREFIX_BYTES + format::HEADER_BYTES;
    bytes[at] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let err = format!("{:#}", LogStore::open(dir.path()).err().expect("refused"));
    assert!(err.contains("CRC32C mismatch") && err.contains("with more frames after it"), "{err}");
    assert_eq!(std::fs::read(&seg).unwrap(), bytes, "nothing was cut");
}

#[tokio::test]
async fn a_saved_committed_id_past_the_log_is_brought_back_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    append(&store, (1..=5).map(entry).collect());
    store.save_committed(Some(log_id(1, 5))).await.unwrap();
    drop(store);
    // The last entry's append was torn (never acknowledged), but the slot
    // written without an fsync already named it.
    let seg = dir.path().join(LOG_DIR).join(segment::file_name(1));
    let full = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &full[..full.len() - 1]).unwrap();
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 4)));
}

#[test]
fn a_raft_redb_beside_a_segment_log_it_did_not_fill_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    drop(LogStore::open(dir.path()).unwrap());
    let one = format::encode(RecordKind::LogEntry, &entry(1)).unwrap();
    legacy::write_raw(&dir.path().join(LEGACY_FILE), &[(1, one)], &[]);
    let err = format!("{:#}", LogStore::open(dir.path()).err().expect("refused"));
    assert!(err.contains("both exist"), "{err}");
    assert!(dir.path().join(LEGACY_FILE).exists());
}

#[tokio::test]
async fn a_segment_created_just_before_a_crash_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append(&store, (1..=3).map(entry).collect());
    drop(store);
    // The next segment's file exists, but its header never reached the disk.
    for leftover in [&[][..], &[0u8; 9][..], &[0u8; 16][..]] {
        std::fs::write(dir.path().join(LOG_DIR).join(segment::file_name(4)), leftover).unwrap();
        let mut store = LogStore::open(dir.path()).unwrap();
        assert_eq!(all(&mut store).await, vec![1, 2, 3]);
        assert_eq!(segments(dir.path()), vec![segment::file_name(1)]);
    }
}

#[tokio::test]
async fn damage_in_an_older_segment_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open_with(dir.path(), 100).unwrap();
    append(&store, (1..=6).map(entry).collect());
    drop(store);
    let first = dir.path().join(LOG_DIR).join(segments(dir.path())[0].clone());
    let len = std::fs::metadata(&first).unwrap().len();
    let f = OpenOptions::new().write(true).open(&first).unwrap();
    f.set_len(len - 2).unwrap();
    let err = format!("{:#}", LogStore::open_with(dir.path(), 100).err().expect("refused"));
    assert!(err.contains("not the newest segment"), "{err}");
}

#[test]
fn a_newer_entry_stops_the_node_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(LogStore::open(dir.path()).unwrap());
    let seg_dir = dir.path().join(LOG_DIR);
    let mut bytes = segment::header(1).to_vec();
    let newer =
        format::with_format(format::encode(RecordKind::LogEntry, &entry(1)).unwrap(), format::FORMAT_CURRENT + 1);
    segment::push_frame(&mut bytes, 1, &newer);
    std::fs::write(seg_dir.join(segment::file_name(1)), bytes).unwrap();
    let err = format!("{:#}", LogStore::open(dir.path()).err().expect("refused"));
    assert!(err.contains("log entry 1: format 12 is newer than this build of shoal reads (up to 11)"), "{err}");
}

#[tokio::test]
async fn a_raft_redb_of_an_earlier_version_is_moved_into_segments() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new_committed(1, 1);
    // Format 0 (plain JSON) and format 1 values side by side, as upgrades left them.
    let mut log: Vec<(u64, Vec<u8>)> = (1..=3).map(|i| (i, serde_json::to_vec(&entry(i)).unwrap())).collect();
    log.push((4, format::encode(RecordKind::LogEntry, &entry(4)).unwrap()));
    let state = [
        (legacy::KEY_VOTE, serde_json::to_vec(&vote).unwrap()),
        (legacy::KEY_COMMITTED, format::encode(RecordKind::StateValue, &Some(log_id(1, 3))).unwrap()),
    ];
    legacy::write_raw(&dir.path().join(LEGACY_FILE), &log, &state);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert!(!dir.path().join(LEGACY_FILE).exists(), "the old file is gone once moved");
    assert!(dir.path().join(LOG_DIR).join(MIGRATED_MARK).exists());
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 3)));
    assert_eq!(store.try_get_log_entries(1..=4).await.unwrap(), (1..=4).map(entry).collect::<Vec<_>>());
    append(&store, vec![entry(5)]);
    drop(store);
    let mut store = LogStore::open(dir.path()).unwrap();
    assert_eq!(all(&mut store).await, vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_raft_redb_that_cannot_be_read_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = format::encode(RecordKind::LogEntry, &entry(2)).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0x10;
    let one = format::encode(RecordKind::LogEntry, &entry(1)).unwrap();
    legacy::write_raw(&dir.path().join(LEGACY_FILE), &[(1, one), (2, bad)], &[]);
    let err = format!("{:#}", LogStore::open(dir.path()).err().expect("refused"));
    assert!(err.contains("raft.redb, log entry 2: corrupt log entry: CRC32C mismatch"), "{err}");
    assert!(dir.path().join(LEGACY_FILE).exists() && !dir.path().join(LOG_DIR).exists());
    // A newer state value is refused the same way.
    let dir = tempfile::tempdir().unwrap();
    let vote = format::with_format(
        format::encode(RecordKind::StateValue, &Vote::new_committed(1, 1)).unwrap(),
        format::FORMAT_CURRENT + 1,
    );
    legacy::write_raw(&dir.path().join(LEGACY_FILE), &[], &[(legacy::KEY_VOTE, vote)]);
    let err = format!("{:#}", LogStore::open(dir.path()).err().expect("refused"));
    assert!(err.contains("raft.redb, state value `vote`: format 12 is newer"), "{err}");
}

#[test]
fn appends_waiting_for_an_fsync_share_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    append(&store, vec![entry(1)]);
    let before = store.flush_rounds();
    // 200 appends issued while the flusher is busy (held): one fsync for
    // all of them, and their callbacks come back in order.
    let (tx, rx) = mpsc::channel();
    let held = store.hold_flusher();
    for i in 2..=201 {
        let tx = tx.clone();
        store.append_then(vec![entry(i)], Box::new(move |r| tx.send((i, r.is_ok())).unwrap())).unwrap();
    }
    assert!(rx.try_recv().is_err(), "nothing is acknowledged before its fsync");
    drop(held);
    let done: Vec<(u64, bool)> = (2..=201).map(|_| rx.recv().unwrap()).collect();
    assert_eq!(done, (2..=201).map(|i| (i, true)).collect::<Vec<_>>());
    assert_eq!(store.flush_rounds() - before, 1, "one fsync round for 200 appends");
}
