//! Read-ahead of one open file, as plain data: which bytes a handle has
//! fetched ahead of its reader, whether the reader reads sequentially, and
//! which piece to fetch next. The mount ([`crate::fs`]) does the fetching
//! (one piece at a time, in the background) and hands finished pieces here.
//!
//! # States
//! A handle starts with nothing fetched. A read near where the last one
//! ended is sequential; after [`SEQUENTIAL_READS_MIN`] of them in a row the
//! handle asks for the next [`READ_AHEAD_BYTES`] past what it holds, each
//! time less than half of that lies ahead of the reader. A read elsewhere (a seek)
//! drops everything held and starts counting again. The mount drops it all
//! too on a write through the handle, a truncate, and any change to the
//! file's bytes this mount makes (its epoch, see `fs`), so no byte held here
//! is older than the last local change.
//!
//! # Invariants
//! - The pieces held are contiguous: each starts where the one before ends.
//! - At most [`PIECES_MAX`] pieces of at most [`READ_AHEAD_BYTES`] each are
//!   held (older ones are dropped first), so a handle holds at most
//!   `PIECES_MAX * READ_AHEAD_BYTES` bytes.
//! - A read is answered from the pieces only when they hold all of it (or
//!   all of it up to the end of the file, which a short piece marks).

use std::collections::VecDeque;

/// One piece fetched ahead (4 MiB: a few large chunk reads in flight per
/// sequential reader, with bounded memory).
pub const READ_AHEAD_BYTES: u64 = 4 << 20;
/// Pieces held at once: one behind the reader (reads arrive slightly out of
/// order from the kernel's threads), the one it is in, the one ahead.
pub const PIECES_MAX: usize = 3;
/// Sequential reads in a row before the handle starts reading ahead.
pub const SEQUENTIAL_READS_MIN: u32 = 2;
/// How far from where the last read ended a read may start and still count
/// as sequential (the kernel's own read-ahead sends neighbouring requests on
/// several threads at once, so they arrive a little out of order).
pub const NEAR_BYTES: u64 = 1 << 20;

/// What one handle has fetched ahead and how it has been read.
#[derive(Debug, Default)]
pub struct ReadAhead {
    /// Contiguous pieces, oldest first: (offset in the file, bytes).
    pieces: VecDeque<(u64, Vec<u8>)>,
    /// The last piece came back short: the file ends where it ends.
    eof: bool,
    /// The local change epoch of the file the pieces were fetched under.
    epoch: u64,
    /// Where the last read ended.
    next: u64,
    /// Sequential reads in a row.
    streak: u32,
}

/// True when a read at `offset` continues reads that ended at `next`.
pub fn is_sequential(next: u64, offset: u64) -> bool {
    offset.abs_diff(next) <= NEAR_BYTES
}

impl ReadAhead {
    /// Drops every byte held and the sequential count (a seek, a write, a
    /// truncate, a change elsewhere on this mount).
    pub fn clear(&mut self) {
        self.pieces.clear();
        self.eof = false;
        self.streak = 0;
    }

    /// The epoch the held pieces were fetched under.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Drops everything held if the file changed locally since (`epoch` is
    /// the file's epoch now); answers whether it did.
    pub fn check_epoch(&mut self, epoch: u64) -> bool {
        if self.epoch == epoch {
            return false;
        }
        self.clear();
        self.epoch = epoch;
        true
    }

    /// Bytes held, in all pieces.
    pub fn held_bytes(&self) -> u64 {
        self.pieces.iter().map(|(_, b)| b.len() as u64).sum()
    }

    /// The end of what is held (where the next piece starts), if anything is.
    fn held_end(&self) -> Option<u64> {
        self.pieces.back().map(|(start, b)| start + b.len() as u64)
    }

    /// The bytes `[offset, offset + len)` if the pieces hold all of them
    /// (cut at the end of the file when a short piece marked it).
    pub fn take(&self, offset: u64, len: u64) -> Option<Vec<u8>> {
        let first = self.pieces.front()?.0;
        let held_end = self.held_end()?;
        let mut end = offset.saturating_add(len);
        if self.eof {
            end = end.min(held_end);
        }
        if offset < first || end > held_end {
            return None;
        }
        if offset >= end {
            return Some(Vec::new());
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        for (start, bytes) in &self.pieces {
            let piece_end = start + bytes.len() as u64;
            if piece_end <= offset || *start >= end {
                continue;
            }
            let from = offset.max(*start) - start;
            let to = end.min(piece_end) - start;
            out.extend_from_slice(&bytes[from as usize..to as usize]);
        }
        debug_assert_eq!(out.len() as u64, end - offset);
        Some(out)
    }

    /// Records a read of `got` bytes at `offset`. Answers false when it was
    /// not sequential: then everything held was dropped (the mount drops its
    /// fetch in flight too).
    pub fn note_read(&mut self, offset: u64, got: u64) -> bool {
        let sequential = is_sequential(self.next, offset);
        if sequential {
            self.streak = self.streak.saturating_add(1);
            self.next = self.next.max(offset + got);
        } else {
            self.clear();
            self.streak = 1;
            self.next = offset + got;
        }
        sequential
    }

    /// Holds a fetched piece: `bytes` at `start`, of the `asked` bytes
    /// fetched (fewer: the file ends there). A piece that does not continue
    /// the held ones replaces them.
    pub fn add_piece(&mut self, start: u64, bytes: Vec<u8>, asked: u64) {
        if self.held_end() != Some(start) {
            self.pieces.clear();
        }
        self.eof = (bytes.len() as u64) < asked;
        if !bytes.is_empty() {
            self.pieces.push_back((start, bytes));
        }
        while self.pieces.len() > PIECES_MAX {
            self.pieces.pop_front();
        }
    }

    /// The piece to fetch next, `(offset, length)`, if the reader is
    /// sequential, the file's end has not been reached, and less than half a
    /// piece lies ahead of the reader. `fetching`: a fetch is in flight
    /// (then none, one at a time).
    pub fn wanted(&self, fetching: bool) -> Option<(u64, u64)> {
        if fetching || self.eof || self.streak < SEQUENTIAL_READS_MIN {
            return None;
        }
        let from = match self.held_end() {
            Some(end) if end >= self.next => end,
            _ => self.next,
        };
        (from - self.next < READ_AHEAD_BYTES / 2).then_some((from, READ_AHEAD_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u64 = READ_AHEAD_BYTES;

    fn bytes(start: u64, len: u64) -> Vec<u8> {
        (start..start + len).map(|i| i as u8).collect()
    }

    #[test]
    fn a_sequential_reader_is_read_ahead_one_piece_at_a_time() {
        let mut ra = ReadAhead::default();
        assert!(ra.note_read(0, 1000));
        assert_eq!(ra.wanted(false), None, "one read is not yet a pattern");
        assert!(ra.note_read(1000, 1000));
        assert_eq!(ra.wanted(false), Some((2000, R)));
        assert_eq!(ra.wanted(true), None, "one fetch at a time");
        ra.add_piece(2000, bytes(2000, R), R);
        assert_eq!(ra.take(2000, 10), Some(bytes(2000, 10)));
        assert!(ra.note_read(2000, 10));
        assert_eq!(ra.wanted(false), None, "most of a piece lies ahead");
        // The reader moves through the piece: past its middle, the next one is asked for.
        let mut at = 2010;
        while at <= 2000 + R / 2 {
            assert!(ra.note_read(at, 1 << 19));
            at += 1 << 19;
        }
        assert_eq!(ra.wanted(false), Some((2000 + R, R)));
        ra.add_piece(2000 + R, bytes(2000 + R, R), R);
        // A read across the two pieces is answered whole.
        assert_eq!(ra.take(2000 + R - 5, 10), Some(bytes(2000 + R - 5, 10)));
        assert_eq!(ra.held_bytes(), 2 * R);
    }

    #[test]
    fn reads_not_wholly_held_are_not_answered() {
        let mut ra = ReadAhead::default();
        assert_eq!(ra.take(0, 1), None, "nothing held");
        ra.add_piece(100, bytes(100, 50), 50);
        assert_eq!(ra.take(99, 2), None, "starts before");
        assert_eq!(ra.take(140, 20), None, "ends after, and the file may go on");
        assert_eq!(ra.take(100, 50), Some(bytes(100, 50)));
    }

    #[test]
    fn a_short_piece_marks_the_end_of_the_file() {
        let mut ra = ReadAhead::default();
        ra.note_read(0, 10);
        ra.note_read(10, 10);
        ra.add_piece(20, bytes(20, 30), R);
        assert_eq!(ra.take(40, 100), Some(bytes(40, 10)), "cut at the end");
        assert_eq!(ra.take(50, 100), Some(Vec::new()), "at the end: nothing");
        assert_eq!(ra.wanted(false), None, "nothing past the end to fetch");
    }

    #[test]
    fn a_seek_or_a_change_drops_everything() {
        let mut ra = ReadAhead::default();
        ra.note_read(0, 10);
        ra.note_read(10, 10);
        ra.add_piece(20, bytes(20, 100), 100);
        assert!(!ra.note_read(50 << 20, 10), "far away: not sequential");
        assert_eq!(ra.held_bytes(), 0);
        assert_eq!(ra.wanted(false), None, "counting starts again");
        ra.note_read((50 << 20) + 10, 10);
        ra.add_piece((50 << 20) + 20, bytes(0, 100), 100);
        assert!(!ra.check_epoch(0), "same epoch: kept");
        assert_eq!(ra.held_bytes(), 100);
        assert!(ra.check_epoch(1), "the file changed here: dropped");
        assert_eq!((ra.held_bytes(), ra.epoch()), (0, 1));
    }

    #[test]
    fn memory_is_bounded_and_pieces_stay_contiguous() {
        let mut ra = ReadAhead::default();
        for i in 0..10 {
            ra.add_piece(i * R, bytes(i * R, R), R);
            assert!(ra.held_bytes() <= PIECES_MAX as u64 * R);
        }
        assert_eq!(ra.take(7 * R, 3 * R), Some(bytes(7 * R, 3 * R)));
        assert_eq!(ra.take(7 * R - 1, 1), None, "older pieces were dropped");
        // A piece elsewhere replaces what is held.
        ra.add_piece(100 * R, bytes(0, 5), 5);
        assert_eq!(ra.held_bytes(), 5);
        assert_eq!(ra.take(100 * R, 5), Some(bytes(0, 5)));
    }

    #[test]
    fn slightly_out_of_order_reads_are_sequential() {
        assert!(is_sequential(10 << 20, (10 << 20) - 128 * 1024));
        assert!(is_sequential(10 << 20, (10 << 20) + 128 * 1024));
        assert!(!is_sequential(10 << 20, 0));
    }
}
