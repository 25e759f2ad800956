//! The write buffer of one open file: the bytes written through the handle
//! and not sent yet, as ranges of the file.
//!
//! While the held bytes are one run without gaps, a write that touches or
//! overlaps the run joins it, across chunks (a sequential writer builds
//! one large piece). Writes elsewhere join too while every held range lies
//! in one chunk and the bytes between them (the filler) stay within
//! [`FILL_MAX_BYTES`]: a random writer such as a database or fsx then
//! sends several writes as one piece, which the client writes as one new
//! version of the chunk, the filler read from that chunk's version the
//! write builds on (`File::write_ranges`). A write that cannot join sends
//! what is held first. Ranges that touch are joined into one as they are
//! taken ([`WriteBuffer::take`]).
//!
//! The mount sends the held ranges when they reach
//! [`WRITE_BUFFER_MAX_BYTES`] (or [`LARGE_BUFFER_MAX_BYTES`] for a handle
//! that holds one of the mount's [`LARGE_BUFFERS`]), when the oldest byte
//! has waited [`FLUSH_AFTER`] (see [`due`]), on flush (close), fsync (of any
//! handle of the file), release, a truncate, fallocate or setattr of the
//! file, a lock grant or release on it, and when another handle of the
//! file writes within the held span or reads from before its end. A read
//! through the handle itself sends nothing: it answers the held bytes laid
//! over the cluster's ([`WriteBuffer::overlay`]).
//!
//! Each piece sent costs the replicas' fsyncs and a commit in meta, so a
//! sequential writer goes faster with larger pieces (measured through the
//! mount, `fio` 1 GiB in 1 MiB blocks: 105-172 MB/s with 8 MiB pieces,
//! 192-195 MB/s with 32 MiB). Memory is bounded all the same: a handle
//! whose range reaches the usual bound takes a large buffer if one is free
//! (at most [`LARGE_BUFFERS`] per mount), else sends at the usual bound.
//!
//! # Invariants
//! - The ranges are sorted, never overlap, and none is empty; there are at
//!   most [`RANGES_MAX`] of them.
//! - Ranges with gaps between them lie in one chunk, with at most
//!   [`FILL_MAX_BYTES`] of filler between the first start and the last end.
//! - What is held is at most its bound plus one write (a write is at most
//!   the kernel's `max_write`), and is sent as soon as it is more.
//! - Later bytes win: a write over held bytes replaces them in place.

/// When a handle sends what it holds (8 MiB: large pieces, bounded memory).
pub const WRITE_BUFFER_MAX_BYTES: usize = 8 << 20;
/// When a handle with a large buffer sends what it holds.
pub const LARGE_BUFFER_MAX_BYTES: usize = 32 << 20;
/// Handles of one mount that may hold a large buffer at once, from when
/// their range passes the usual bound until its piece is sent (so large
/// pieces, held or in flight, take at most 256 MiB per mount).
pub const LARGE_BUFFERS: usize = 8;
/// How long written bytes may wait in a handle before the mount sends them
/// on its own (a writer that never closes still reaches the cluster).
pub const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_secs(1);
/// The most bytes between held ranges that one piece may fill from the
/// stored chunk (1 MiB: reading and rewriting it costs about what the
/// commit it saves does).
pub const FILL_MAX_BYTES: u64 = 1 << 20;
/// The most ranges one handle holds at once.
pub const RANGES_MAX: usize = 1024;

/// True when a range held since `since` (None: nothing held) is due to be
/// sent at `now`.
pub fn due(since: Option<std::time::Instant>, now: std::time::Instant) -> bool {
    since.is_some_and(|t| now.saturating_duration_since(t) >= FLUSH_AFTER)
}

/// Bytes written and not sent yet.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    ranges: Vec<(u64, Vec<u8>)>,
    /// The bytes the ranges hold together.
    held: usize,
}

/// A piece to send: ranges of the file (offset, bytes), sorted, apart, and
/// never empty.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece {
    pub ranges: Vec<(u64, Vec<u8>)>,
}

impl Piece {
    /// One range.
    pub fn one(offset: u64, bytes: Vec<u8>) -> Piece {
        Piece { ranges: vec![(offset, bytes)] }
    }

    /// Where the first range starts.
    pub fn start(&self) -> u64 {
        self.ranges.first().map_or(0, |r| r.0)
    }

    /// Where the last range ends.
    pub fn end(&self) -> u64 {
        self.ranges.last().map_or(0, |(s, d)| s + d.len() as u64)
    }
}

impl WriteBuffer {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Where the first held range starts (0 when empty).
    pub fn start(&self) -> u64 {
        self.ranges.first().map_or(0, |r| r.0)
    }

    /// Where the last held range ends (0 when empty).
    pub fn end(&self) -> u64 {
        self.ranges.last().map_or(0, |(s, d)| s + d.len() as u64)
    }

    /// Holds `bytes` written at `offset` in a file of `chunk_size`-byte
    /// chunks. Answers the piece to send before them when they cannot join
    /// what is held (see the module's doc).
    pub fn push(&mut self, offset: u64, bytes: &[u8], chunk_size: u64) -> Option<Piece> {
        if bytes.is_empty() {
            return None;
        }
        let end = offset.saturating_add(bytes.len() as u64);
        let bytes = &bytes[..(end - offset) as usize];
        let out = if self.joins(offset, end, chunk_size) { None } else { self.take() };
        self.insert(offset, bytes);
        debug_assert!(self.well_formed(chunk_size), "{:?}", self.spans());
        out
    }

    /// True when bytes at `[offset, end)` may join the held ranges.
    fn joins(&self, offset: u64, end: u64, chunk_size: u64) -> bool {
        if self.ranges.is_empty() {
            return true;
        }
        let (start, held_end) = (self.start(), self.end());
        let parts = self.uncovered(offset, end);
        // Each part adds a range at most.
        if self.ranges.len() + parts.len() > RANGES_MAX {
            return false;
        }
        if self.contiguous() && offset <= held_end && end >= start {
            return true;
        }
        let (lo, hi) = (start.min(offset), held_end.max(end));
        let cs = chunk_size.max(1);
        if lo / cs != (hi - 1) / cs {
            return false;
        }
        let held_after = self.held as u64 + parts.iter().map(|(a, b)| b - a).sum::<u64>();
        hi - lo - held_after <= FILL_MAX_BYTES
    }

    /// True when the held bytes are one run without gaps.
    fn contiguous(&self) -> bool {
        self.held as u64 == self.end() - self.start()
    }

    /// The parts of `[offset, end)` that no held range covers, in order.
    fn uncovered(&self, offset: u64, end: u64) -> Vec<(u64, u64)> {
        let mut parts = Vec::new();
        let mut at = offset;
        for (s, d) in &self.ranges {
            let e = s + d.len() as u64;
            if e <= at {
                continue;
            }
            if *s >= end {
                break;
            }
            if *s > at {
                parts.push((at, *s));
            }
            at = e;
        }
        if at < end {
            parts.push((at, end));
        }
        parts
    }

    /// Lays `bytes` at `offset` over the held ranges, and holds the rest as
    /// new ranges or at the end of the range just before them.
    fn insert(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        let parts = self.uncovered(offset, end);
        for (s, d) in &mut self.ranges {
            let (a, b) = ((*s).max(offset), (*s + d.len() as u64).min(end));
            if a < b {
                d[(a - *s) as usize..(b - *s) as usize]
                    .copy_from_slice(&bytes[(a - offset) as usize..(b - offset) as usize]);
            }
        }
        for (a, b) in parts {
            let part = &bytes[(a - offset) as usize..(b - offset) as usize];
            let i = self.ranges.partition_point(|(s, _)| *s < a);
            match self.ranges.get_mut(i.wrapping_sub(1)) {
                Some((s, d)) if *s + d.len() as u64 == a => d.extend_from_slice(part),
                _ => self.ranges.insert(i, (a, part.to_vec())),
            }
            self.held += part.len();
        }
    }

    /// The held ranges as (start, end), for checks and messages.
    fn spans(&self) -> Vec<(u64, u64)> {
        self.ranges.iter().map(|(s, d)| (*s, s + d.len() as u64)).collect()
    }

    /// The invariants of the module's doc.
    fn well_formed(&self, chunk_size: u64) -> bool {
        let spans = self.spans();
        let apart = spans.iter().all(|(a, b)| a < b) && spans.windows(2).all(|w| w[0].1 <= w[1].0);
        let held = spans.iter().map(|(a, b)| b - a).sum::<u64>() == self.held as u64;
        let (lo, hi) = (self.start(), self.end());
        let cs = chunk_size.max(1);
        let grouped = self.contiguous() || (lo / cs == (hi - 1) / cs && hi - lo - self.held as u64 <= FILL_MAX_BYTES);
        apart && held && grouped && spans.len() <= RANGES_MAX
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.held
    }

    /// True when the held range should be sent now: at the usual bound, or
    /// at the large one when the handle holds a large buffer.
    pub fn full(&self, large: bool) -> bool {
        self.held >= if large { LARGE_BUFFER_MAX_BYTES } else { WRITE_BUFFER_MAX_BYTES }
    }

    /// Takes the held ranges, those that touch joined into one, leaving
    /// the buffer empty.
    pub fn take(&mut self) -> Option<Piece> {
        if self.ranges.is_empty() {
            return None;
        }
        self.held = 0;
        let mut ranges: Vec<(u64, Vec<u8>)> = Vec::new();
        for (s, d) in std::mem::take(&mut self.ranges) {
            match ranges.last_mut() {
                Some((last, bytes)) if *last + bytes.len() as u64 == s => bytes.extend_from_slice(&d),
                _ => ranges.push((s, d)),
            }
        }
        Some(Piece { ranges })
    }

    /// The answer to a read of `len` bytes at `offset`, given `stored`, what
    /// the cluster answered for it (short only at the file's end there): the
    /// held bytes replace the stored ones they cover, and where the held
    /// ranges end past the stored end, the file is that long (a gap before
    /// held bytes reads as zeros, as a hole does).
    pub fn overlay(&self, offset: u64, len: u64, mut stored: Vec<u8>) -> Vec<u8> {
        if self.ranges.is_empty() {
            return stored;
        }
        let wanted_end = offset.saturating_add(len);
        let stored_end = offset + stored.len() as u64;
        let end = if self.end() > stored_end { wanted_end.min(self.end()) } else { stored_end };
        stored.resize((end - offset) as usize, 0);
        for (s, d) in &self.ranges {
            let (from, to) = ((*s).max(offset), (s + d.len() as u64).min(end));
            if from < to {
                stored[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&d[(from - s) as usize..(to - s) as usize]);
            }
        }
        stored
    }

    /// Forgets held bytes at or past `size` (a truncate).
    pub fn truncate(&mut self, size: u64) {
        self.ranges.retain(|(s, _)| *s < size);
        if let Some((s, d)) = self.ranges.last_mut()
            && *s + d.len() as u64 > size
        {
            d.truncate((size - *s) as usize);
        }
        self.held = self.ranges.iter().map(|(_, d)| d.len()).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk size larger than any test's offsets.
    const BIG: u64 = 1 << 40;

    fn one(offset: u64, bytes: &[u8]) -> Option<Piece> {
        Some(Piece::one(offset, bytes.to_vec()))
    }

    #[test]
    fn sequential_writes_join_and_overwrites_replace() {
        let mut b = WriteBuffer::default();
        assert_eq!(b.push(10, b"abc", BIG), None);
        assert_eq!(b.push(13, b"def", BIG), None);
        assert_eq!(b.end(), 16);
        // Overlapping the end: replaces then extends.
        assert_eq!(b.push(15, b"XYZ", BIG), None);
        assert_eq!(b.push(10, b"A", BIG), None);
        assert_eq!(b.take(), one(10, b"AbcdeXYZ"));
        assert!(b.is_empty() && b.end() == 0 && b.take().is_none());
    }

    #[test]
    fn a_sequential_writer_crosses_chunks_in_one_range() {
        let mut b = WriteBuffer::default();
        for i in 0..10u64 {
            assert_eq!(b.push(i * 3, b"abc", 4), None);
        }
        assert_eq!(b.take(), one(0, &b"abc".repeat(10)));
        // Backwards too: each write ends where the run starts.
        for i in (0..10u64).rev() {
            assert_eq!(b.push(i * 3, b"xyz", 4), None);
        }
        assert_eq!(b.len(), 30);
        assert_eq!(b.take(), one(0, &b"xyz".repeat(10)), "touching ranges are taken as one");
    }

    #[test]
    fn writes_apart_in_one_chunk_join_and_others_send_first() {
        let mut b = WriteBuffer::default();
        b.push(100, b"xy", 1000);
        // Before it, in the same chunk: joins as a second range.
        assert_eq!(b.push(0, b"ab", 1000), None);
        assert_eq!(b.push(50, b"m", 1000), None);
        assert_eq!((b.start(), b.end(), b.len()), (0, 102, 5));
        // In the next chunk: what is held goes first.
        let sent = b.push(1000, b"c", 1000).expect("sends");
        assert_eq!(sent.ranges, vec![(0, b"ab".to_vec()), (50, b"m".to_vec()), (100, b"xy".to_vec())]);
        assert_eq!((sent.start(), sent.end()), (0, 102));
        assert_eq!(b.take(), one(1000, b"c"));
        assert_eq!(b.push(0, b"", 1000), None, "an empty write holds nothing");
        assert!(b.is_empty());
    }

    #[test]
    fn the_filler_is_bounded() {
        let mut b = WriteBuffer::default();
        let cs = 64 << 20;
        b.push(0, b"a", cs);
        // Exactly the bound of filler between them: joins.
        assert_eq!(b.push(FILL_MAX_BYTES + 1, b"b", cs), None);
        // One more byte of filler: sends first.
        assert_eq!(b.push(2 * FILL_MAX_BYTES + 3, b"c", cs).map(|p| p.ranges.len()), Some(2));
        // Held bytes do not count as filler: a long range and a write past it join.
        b.take();
        b.push(0, &vec![1; 3 << 20], cs);
        b.push((3 << 20) + FILL_MAX_BYTES, b"z", cs);
        assert_eq!(b.spans(), vec![(0, 3 << 20), ((3 << 20) + FILL_MAX_BYTES, (3 << 20) + FILL_MAX_BYTES + 1)]);
    }

    #[test]
    fn at_most_ranges_max_are_held() {
        let mut b = WriteBuffer::default();
        for i in 0..RANGES_MAX as u64 {
            assert_eq!(b.push(i * 2, b"x", BIG), None);
        }
        // A write within a held range adds none: it joins.
        assert_eq!(b.push(10, b"y", BIG), None);
        let sent = b.push(RANGES_MAX as u64 * 2, b"z", BIG).expect("the next range sends them");
        assert_eq!(sent.ranges.len(), RANGES_MAX);
        assert_eq!(sent.ranges[5], (10, b"y".to_vec()));
        assert_eq!(b.spans(), vec![(RANGES_MAX as u64 * 2, RANGES_MAX as u64 * 2 + 1)]);
    }

    #[test]
    fn a_write_over_several_ranges_replaces_them_and_fills_between() {
        let mut b = WriteBuffer::default();
        b.push(2, b"aa", BIG);
        b.push(6, b"bb", BIG);
        b.push(10, b"cc", BIG);
        b.push(3, b"XXXXXXXX", BIG);
        let mut image = vec![b'.'; 12];
        for (s, d) in &b.take().expect("held").ranges {
            image[*s as usize..*s as usize + d.len()].copy_from_slice(d);
        }
        assert_eq!(image, b"..aXXXXXXXXc");
    }

    #[test]
    fn a_read_answers_held_bytes_over_the_stored_ones() {
        let empty = WriteBuffer::default();
        assert_eq!(empty.overlay(3, 10, b"stored".to_vec()), b"stored", "nothing held: the stored bytes");
        let mut b = WriteBuffer::default();
        b.push(4, b"HELD", BIG);
        // Inside a stored range: replaced where covered.
        assert_eq!(b.overlay(2, 8, b"abcdefgh".to_vec()), b"abHELDgh");
        // Overlapping either edge of the read.
        assert_eq!(b.overlay(6, 4, b"wxyz".to_vec()), b"LDyz");
        assert_eq!(b.overlay(0, 6, b"012345".to_vec()), b"0123HE");
        // Held past the stored end: the file is longer, and ends where the
        // held bytes do, or where the read does.
        assert_eq!(b.overlay(0, 100, b"01".to_vec()), b"01\0\0HELD");
        assert_eq!(b.overlay(0, 5, b"01".to_vec()), b"01\0\0H");
        // A read wholly in the gap before the held bytes, past the stored end: zeros.
        assert_eq!(b.overlay(2, 2, Vec::new()), b"\0\0");
        // A read past the held end, where the stored file ends: nothing.
        assert_eq!(b.overlay(8, 4, Vec::new()), b"");
        // A read before the held bytes within the stored file: unchanged.
        assert_eq!(b.overlay(0, 3, b"xyz".to_vec()), b"xyz");
        // A stored file longer than the held end: the stored length stands.
        assert_eq!(b.overlay(6, 6, b"uvwxyz".to_vec()), b"LDwxyz");
        // Two ranges: both laid over, the stored bytes between them kept.
        b.push(0, b"AB", BIG);
        assert_eq!(b.overlay(0, 10, b"0123456789".to_vec()), b"AB23HELD89");
    }

    #[test]
    fn a_range_is_due_once_it_has_waited() {
        let t = std::time::Instant::now();
        assert!(!due(None, t + FLUSH_AFTER * 5), "nothing held");
        assert!(!due(Some(t), t + FLUSH_AFTER / 2));
        assert!(due(Some(t), t + FLUSH_AFTER));
        assert!(!due(Some(t + FLUSH_AFTER), t), "a clock read before: not due");
    }

    #[test]
    fn truncate_and_the_bound() {
        let mut b = WriteBuffer::default();
        b.push(10, b"abcdef", BIG);
        b.truncate(12);
        assert_eq!(b.end(), 12);
        b.truncate(5);
        assert!(b.is_empty());
        b.push(0, b"ab", BIG);
        b.push(10, b"cd", BIG);
        b.push(20, b"ef", BIG);
        b.truncate(11);
        assert_eq!((b.spans(), b.len()), (vec![(0, 2), (10, 11)], 3));
        b.take();
        b.push(0, &vec![7u8; WRITE_BUFFER_MAX_BYTES - 1], BIG);
        assert!(!b.full(false));
        b.push(WRITE_BUFFER_MAX_BYTES as u64 - 1, b"z", BIG);
        assert!(b.full(false));
        assert!(!b.full(true), "a large buffer holds more");
        b.push(WRITE_BUFFER_MAX_BYTES as u64, &vec![8u8; LARGE_BUFFER_MAX_BYTES - WRITE_BUFFER_MAX_BYTES - 1], BIG);
        assert!(!b.full(true));
        b.push(LARGE_BUFFER_MAX_BYTES as u64 - 1, b"z", BIG);
        assert!(b.full(true));
        assert_eq!(b.len(), LARGE_BUFFER_MAX_BYTES);
    }

    /// Random writes, truncates and reads against a plain byte image: what
    /// was sent, applied in order, with what is held laid over it, is
    /// always the image, and every read agrees with it.
    #[test]
    fn random_work_matches_a_plain_image() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..40 {
            let cs = [64, 1000, 4096, 1 << 20][round % 4];
            let (mut b, mut image, mut stored) = (WriteBuffer::default(), Vec::<u8>::new(), Vec::<u8>::new());
            let apply = |stored: &mut Vec<u8>, p: Piece| {
                for (s, d) in p.ranges {
                    let end = s as usize + d.len();
                    if stored.len() < end {
                        stored.resize(end, 0);
                    }
                    stored[s as usize..end].copy_from_slice(&d);
                }
            };
            for step in 0..400u64 {
                match next(10) {
                    0 => {
                        // A truncate: the mount sends what is held first.
                        if let Some(p) = b.take() {
                            apply(&mut stored, p);
                        }
                        let size = next(image.len() as u64 + 1) as usize;
                        image.truncate(size);
                        stored.truncate(size);
                    }
                    1 => {
                        let (offset, len) = (next(image.len() as u64 + 10), next(50));
                        let want_end = (offset + len).min(image.len().max(b.end() as usize) as u64);
                        let from_stored = stored
                            .get(offset as usize..)
                            .map_or(Vec::new(), |s| s[..s.len().min(len as usize)].to_vec());
                        let got = b.overlay(offset, len, from_stored);
                        let want = image.get(offset as usize..want_end.max(offset) as usize).unwrap_or_default();
                        assert_eq!(got, want, "round {round} step {step}: read {offset}+{len}");
                    }
                    _ => {
                        let offset = next(3 * cs.min(5000));
                        let data: Vec<u8> = (0..1 + next(300)).map(|i| (step + i) as u8 | 1).collect();
                        if let Some(p) = b.push(offset, &data, cs) {
                            apply(&mut stored, p);
                        }
                        let end = offset as usize + data.len();
                        if image.len() < end {
                            image.resize(end, 0);
                        }
                        image[offset as usize..end].copy_from_slice(&data);
                    }
                }
                assert!(b.well_formed(cs));
                let mut seen = stored.clone();
                apply(&mut seen, Piece { ranges: b.ranges.clone() });
                assert_eq!(seen, image, "round {round} step {step}");
            }
        }
    }
}
