//! The small durable values beside the log: the vote and the last purged
//! log id (`DIR/raftlog/hard`), and the committed log id
//! (`DIR/raftlog/committed`).
//!
//! `hard` is one record (kind state value) of [`HardState`], replaced whole:
//! written to `hard.tmp`, fsynced, renamed over `hard`, and the directory
//! fsynced. A crash leaves the old value or the new one. It changes on an
//! election (the vote) and on a purge, so its cost does not matter.
//!
//! `committed` changes with every commit, so it is cheap instead: two fixed
//! slots of [`SLOT_BYTES`], written in turn in place and never fsynced. Each
//! holds a record of `(sequence, committed)`; the valid slot with the higher
//! sequence wins, and a torn or lost write leaves the other slot, an older
//! committed id. That is safe: openraft only uses it to re-apply entries at
//! start, and learns the real commit index from the leader.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use openraft::{LogId, Vote};
use serde::{Deserialize, Serialize};

use crate::format::{self, RecordKind};

/// One committed-id slot's size in bytes (a record of at most ~60 bytes, zero padded).
pub const SLOT_BYTES: usize = 128;

/// The values that must survive a crash before openraft is told they are saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub vote: Option<Vote<u64>>,
    pub purged: Option<LogId<u64>>,
}

/// Reads `dir/hard`; a missing file is the default (a new node).
pub fn read_hard(dir: &Path) -> anyhow::Result<HardState> {
    let path = dir.join("hard");
    match std::fs::read(&path) {
        Ok(bytes) => format::decode(RecordKind::StateValue, &bytes, |v| v)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HardState::default()),
        Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
    }
}

/// Replaces `dir/hard` with `state`, durably (see the module doc).
pub fn write_hard(dir: &Path, state: &HardState) -> std::io::Result<()> {
    let bytes = format::encode(RecordKind::StateValue, state).map_err(std::io::Error::other)?;
    replace_durably(dir, "hard", &bytes)
}

/// Writes `bytes` as `dir/name` through a temporary file, a rename and the
/// directory's fsync.
pub fn replace_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The committed log id's two slots (see the module doc).
pub struct Committed {
    file: File,
    path: PathBuf,
    sequence: u64,
}

type Slot = (u64, Option<LogId<u64>>);

impl Committed {
    /// Opens (or creates) `dir/committed` and reads the newest valid slot.
    pub fn open(dir: &Path) -> std::io::Result<(Committed, Option<LogId<u64>>)> {
        let path = dir.join("committed");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut best: Option<Slot> = None;
        for slot in 0..2u64 {
            let mut buf = vec![0u8; SLOT_BYTES];
            let n = read_up_to(&file, &mut buf, slot * SLOT_BYTES as u64)?;
            if let Some(s) = decode_slot(&buf[..n])
                && best.is_none_or(|b| s.0 > b.0)
            {
                best = Some(s);
            }
        }
        let (sequence, committed) = best.unwrap_or((0, None));
        Ok((Committed { file, path, sequence }, committed))
    }

    /// Writes `committed` into the older slot, without an fsync.
    pub fn save(&mut self, committed: Option<LogId<u64>>) -> std::io::Result<()> {
        let sequence = self.sequence + 1;
        let record = format::encode(RecordKind::StateValue, &(sequence, committed)).map_err(std::io::Error::other)?;
        assert!(record.len() <= SLOT_BYTES, "a committed slot holds {} bytes", record.len());
        let mut slot = vec![0u8; SLOT_BYTES];
        slot[..record.len()].copy_from_slice(&record);
        self.file
            .write_all_at(&slot, (sequence % 2) * SLOT_BYTES as u64)
            .map_err(|e| std::io::Error::other(format!("{}: {e}", self.path.display())))?;
        self.sequence = sequence;
        Ok(())
    }
}

/// The slot's value, if it holds a sound record.
fn decode_slot(bytes: &[u8]) -> Option<Slot> {
    if bytes.len() < format::HEADER_BYTES {
        return None;
    }
    let body_len = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let len = (format::HEADER_BYTES as u64).checked_add(body_len).filter(|&l| l <= bytes.len() as u64)?;
    format::decode(RecordKind::StateValue, &bytes[..len as usize], |v| v).ok()
}

fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn id(index: u64) -> Option<LogId<u64>> {
        Some(LogId::new(CommittedLeaderId::new(3, 1), index))
    }

    #[test]
    fn the_hard_state_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_hard(dir.path()).unwrap(), HardState::default());
        let s = HardState { vote: Some(Vote::new_committed(4, 2)), purged: id(9) };
        write_hard(dir.path(), &s).unwrap();
        assert_eq!(read_hard(dir.path()).unwrap(), s);
        assert!(!dir.path().join("hard.tmp").exists());
        // Damage is an error, never a silent default.
        let mut bytes = std::fs::read(dir.path().join("hard")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(dir.path().join("hard"), bytes).unwrap();
        assert!(read_hard(dir.path()).unwrap_err().to_string().contains("CRC32C"));
    }

    #[test]
    fn the_newest_sound_committed_slot_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, got) = Committed::open(dir.path()).unwrap();
        assert_eq!(got, None);
        for i in 1..=5 {
            c.save(id(i)).unwrap();
        }
        drop(c);
        assert_eq!(Committed::open(dir.path()).unwrap().1, id(5));
        // Tear the newest slot (sequence 5 is in slot 1): the other one holds 4.
        let path = dir.path().join("committed");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_BYTES + 17] ^= 0xff; // its CRC
        std::fs::write(&path, &bytes).unwrap();
        let (mut c, got) = Committed::open(dir.path()).unwrap();
        assert_eq!(got, id(4));
        // Saving goes on from there and wins again.
        c.save(id(6)).unwrap();
        assert_eq!(Committed::open(dir.path()).unwrap().1, id(6));
    }
}
