//! The leader's pool of reserved chunk ids, handed out one per file written
//! before it is created (`PrepareNew`; see `fsm::reserved`).
//!
//! The pool is one run of ids this node reserved through Raft, and a cursor
//! into it. Handing an id out costs no log entry; the next run is reserved
//! when this one is spent, or when the state no longer holds it (pushed out
//! by a newer leader's run). Ids handed out are unique because each run is
//! reserved by one node and each node walks its own run once; whether an id
//! may still be used is decided by the state machine when the file is
//! created, never here.

use std::sync::Mutex;

/// One reserved run and the next id of it to hand out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub start: u64,
    pub end: u64,
    pub next: u64,
}

impl Cursor {
    /// The next id of the run, if any is left.
    pub fn take(&mut self) -> Option<u64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }
}

/// The pool: the current run, and a lock that lets one caller at a time
/// reserve the next one.
#[derive(Debug, Default)]
pub struct IdPool {
    cursor: Mutex<Option<Cursor>>,
    pub refill: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl IdPool {
    /// An id from the current run, if the run is still reserved in the
    /// state (`still_reserved(start)`) and not spent.
    pub fn take(&self, still_reserved: impl FnOnce(u64) -> bool) -> Option<u64> {
        let mut cursor = self.cursor.lock().expect("no panic while the pool is held");
        let c = cursor.as_mut()?;
        if !still_reserved(c.start) {
            *cursor = None;
            return None;
        }
        c.take()
    }

    /// Starts handing out the run `[start, start + count)`.
    pub fn refilled(&self, start: u64, count: u64) {
        *self.cursor.lock().expect("no panic while the pool is held") =
            Some(Cursor { start, end: start + count, next: start });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_once_each_and_only_from_a_run_still_reserved() {
        let pool = IdPool::default();
        assert_eq!(pool.take(|_| true), None, "no run yet");
        pool.refilled(10, 3);
        assert_eq!([pool.take(|_| true), pool.take(|_| true)], [Some(10), Some(11)]);
        assert_eq!(pool.take(|s| s != 10), None, "the run was pushed out");
        assert_eq!(pool.take(|_| true), None, "and is forgotten");
        pool.refilled(20, 1);
        assert_eq!([pool.take(|_| true), pool.take(|_| true)], [Some(20), None]);
    }
}
