//! Space accounting: the bytes the server's replicas take, against its
//! capacity (`--capacity`).
//!
//! `used` counts the length of every data file, including the growth of
//! write sessions still open.

use std::sync::atomic::{AtomicU64, Ordering};

pub(super) struct Space {
    capacity_bytes: u64,
    used_bytes: AtomicU64,
}

impl Space {
    pub fn new(capacity_bytes: u64, used_bytes: u64) -> Space {
        Space { capacity_bytes, used_bytes: AtomicU64::new(used_bytes) }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity_bytes
    }

    pub fn used(&self) -> u64 {
        self.used_bytes.load(Ordering::Relaxed)
    }

    /// A replica went from `before` to `after` bytes.
    pub fn account(&self, before: u64, after: u64) {
        if after > before {
            self.used_bytes.fetch_add(after - before, Ordering::Relaxed);
        } else {
            self.used_bytes.fetch_sub(before - after, Ordering::Relaxed);
        }
    }
}
