//! Space accounting: the bytes the server's replicas take, against its
//! capacity (`--capacity`).
//!
//! `used` counts the length of every data file, including the growth of
//! write sessions still open. Growth is reserved before a byte is written:
//! [`Space::reserve`] adds to `used` in one compare-and-swap, only if the sum
//! stays within the capacity, so writers racing each other can never
//! together pass it. A [`Reservation`] that is not kept (the write failed, or
//! its future was dropped) gives its bytes back.
//!
//! Only a rollback may grow `used` without asking ([`Space::restore`]): it
//! puts back bytes an uncommitted truncation cut, which were within the
//! capacity when they were written. So `used` exceeds the capacity only if
//! the capacity was lowered, or a truncation that never committed is undone.

use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;

pub(super) struct Space {
    capacity_bytes: u64,
    used_bytes: AtomicU64,
}

/// Bytes reserved for a write in flight; given back on drop unless kept.
#[must_use = "a reservation is given back when dropped"]
pub(super) struct Reservation<'a> {
    space: &'a Space,
    bytes: u64,
}

impl Reservation<'_> {
    /// The bytes now belong to a replica's length.
    pub fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.space.release(self.bytes);
        }
    }
}

impl Space {
    pub fn new(capacity_bytes: u64, used_bytes: u64) -> Space {
        Space { capacity_bytes, used_bytes: AtomicU64::new(used_bytes) }
    }

    pub fn used(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// Reserves `need` more bytes, or refuses if they do not fit.
    pub fn reserve(&self, need: u64) -> Result<Reservation<'_>, StoreError> {
        if need == 0 {
            // Nothing grows: allowed even when `used` is past the capacity.
            return Ok(Reservation { space: self, bytes: 0 });
        }
        let capacity = self.capacity_bytes;
        self.used_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(need).filter(|total| *total <= capacity)
            })
            .map_err(|used| StoreError::NoSpace { need, used, capacity })?;
        Ok(Reservation { space: self, bytes: need })
    }

    /// Gives back `n` bytes (a replica shrank or went away).
    pub fn release(&self, n: u64) {
        let before = self.used_bytes.fetch_sub(n, Ordering::Relaxed);
        // Releasing more than is used means the accounting is broken: every
        // later quota decision would be wrong.
        assert!(before >= n, "space accounting underflow: releasing {n} of {before} used bytes");
    }

    /// Takes `n` bytes back that a rollback restored (never refused).
    pub fn restore(&self, n: u64) {
        self.used_bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// A rollback or a removal took a replica from `before` to `after` bytes.
    pub fn account(&self, before: u64, after: u64) {
        if after > before {
            self.restore(after - before);
        } else {
            self.release(before - after);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_capacity_and_give_back_what_is_not_kept() {
        let space = Space::new(100, 10);
        space.reserve(60).unwrap().keep();
        assert!(matches!(space.reserve(31), Err(StoreError::NoSpace { need: 31, used: 70, capacity: 100 })));
        assert!(matches!(space.reserve(u64::MAX), Err(StoreError::NoSpace { .. })));
        drop(space.reserve(30).unwrap());
        assert_eq!(space.used(), 70, "a dropped reservation is given back");
        space.restore(40);
        space.reserve(0).unwrap().keep();
        assert!(matches!(space.reserve(1), Err(StoreError::NoSpace { .. })), "past the capacity only 0 fits");
        space.release(40);
        space.account(70, 20);
        assert_eq!(space.used(), 20);
    }

    #[test]
    #[should_panic(expected = "underflow")]
    fn releasing_more_than_is_used_stops_loudly() {
        Space::new(100, 10).release(11);
    }
}
