//! What fallocate(2) becomes on Shoal, which reserves no space ahead of a
//! write: a pure plan from the call's mode, range and the file's size.
//!
//! - Mode 0 (allocate) makes the file at least `offset + length` long; the
//!   new bytes read as zeros. Space is not reserved, so a later write can
//!   still fail with `ENOSPC`.
//! - `FALLOC_FL_KEEP_SIZE` alone changes nothing.
//! - `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE` and
//!   `FALLOC_FL_ZERO_RANGE` write zeros over the part of the range inside
//!   the file (no space is freed: a punched range holds written zeros);
//!   `ZERO_RANGE` without `KEEP_SIZE` then grows the file to the range's
//!   end, which reads as zeros without writing them.
//! - Collapsing, inserting and unsharing ranges are `EOPNOTSUPP`, as are
//!   unknown flags.

use std::ops::Range;

use fuser::Errno;

/// The flags this module knows (linux/falloc.h).
const KEEP_SIZE: i32 = libc::FALLOC_FL_KEEP_SIZE;
const PUNCH_HOLE: i32 = libc::FALLOC_FL_PUNCH_HOLE;
const ZERO_RANGE: i32 = libc::FALLOC_FL_ZERO_RANGE;

/// What to do: zeros to write over a range, then a length to set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub zero: Option<Range<u64>>,
    pub grow_to: Option<u64>,
}

/// The plan for fallocate(`mode`, `offset`, `length`) on a file of `size`
/// bytes, or the error the call answers.
pub fn plan(mode: i32, offset: u64, length: u64, size: u64) -> Result<Plan, Errno> {
    if length == 0 {
        return Err(Errno::EINVAL);
    }
    let end = offset.checked_add(length).filter(|e| *e <= i64::MAX as u64).ok_or(Errno::EFBIG)?;
    let keep_size = mode & KEEP_SIZE != 0;
    let kept = |r: Range<u64>| Some(r.start..r.end.min(size)).filter(|r| r.start < r.end);
    match mode & !KEEP_SIZE {
        0 if keep_size => Ok(Plan::default()),
        0 => Ok(Plan { zero: None, grow_to: (end > size).then_some(end) }),
        PUNCH_HOLE if keep_size => Ok(Plan { zero: kept(offset..end), grow_to: None }),
        ZERO_RANGE if keep_size => Ok(Plan { zero: kept(offset..end), grow_to: None }),
        // Past the end, growing writes the zeros.
        ZERO_RANGE => Ok(Plan { zero: kept(offset..end), grow_to: (end > size).then_some(end) }),
        // A hole punched must keep the size (Linux refuses it the same way).
        _ => Err(Errno::EOPNOTSUPP),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocating_grows_a_file_only_past_its_end() {
        assert_eq!(plan(0, 100, 50, 120), Ok(Plan { zero: None, grow_to: Some(150) }));
        assert_eq!(plan(0, 0, 50, 120), Ok(Plan::default()));
        assert_eq!(plan(KEEP_SIZE, 100, 1 << 30, 120), Ok(Plan::default()));
    }

    #[test]
    fn punching_and_zeroing_write_zeros_inside_the_size_unless_zeroing_may_grow() {
        let keep = PUNCH_HOLE | KEEP_SIZE;
        assert_eq!(plan(keep, 10, 20, 100), Ok(Plan { zero: Some(10..30), grow_to: None }));
        assert_eq!(plan(keep, 90, 20, 100), Ok(Plan { zero: Some(90..100), grow_to: None }));
        assert_eq!(plan(keep, 100, 20, 100), Ok(Plan::default()), "past the end: nothing to punch");
        assert_eq!(plan(ZERO_RANGE | KEEP_SIZE, 90, 20, 100), Ok(Plan { zero: Some(90..100), grow_to: None }));
        assert_eq!(plan(ZERO_RANGE, 90, 20, 100), Ok(Plan { zero: Some(90..100), grow_to: Some(110) }));
        assert_eq!(plan(ZERO_RANGE, 1 << 40, 1 << 40, 100), Ok(Plan { zero: None, grow_to: Some(2 << 40) }));
    }

    #[test]
    fn bad_calls_are_refused() {
        assert_eq!(plan(0, 0, 0, 10), Err(Errno::EINVAL));
        assert_eq!(plan(0, u64::MAX, 2, 10), Err(Errno::EFBIG));
        assert_eq!(plan(0, i64::MAX as u64, 1, 10), Err(Errno::EFBIG));
        assert_eq!(plan(PUNCH_HOLE, 0, 10, 10), Err(Errno::EOPNOTSUPP), "a punch must keep the size");
        assert_eq!(plan(libc::FALLOC_FL_COLLAPSE_RANGE, 0, 10, 10), Err(Errno::EOPNOTSUPP));
        assert_eq!(plan(libc::FALLOC_FL_INSERT_RANGE, 0, 10, 10), Err(Errno::EOPNOTSUPP));
        assert_eq!(plan(PUNCH_HOLE | ZERO_RANGE | KEEP_SIZE, 0, 10, 10), Err(Errno::EOPNOTSUPP));
    }
}
