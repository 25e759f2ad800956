//! Liveness of chunk servers: soft state kept by the node that receives heartbeats.
//!
//! Which chunk servers exist is replicated (`FsState::nodes`); whether they are
//! alive right now is not: it changes every second and is only meaningful to
//! the leader, which places replicas. A leader that has just taken office has
//! heard nobody yet, so for a short grace period it treats a registered server
//! it has not heard from as alive rather than refusing every write; a
//! pipeline that then fails on that server reports it and the write is
//! re-planned without it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the last heartbeat of a server said.
#[derive(Debug, Clone, Copy)]
pub struct Beat {
    pub at: Instant,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub chunk_count: u64,
    /// Bytes the server read and wrote since it started.
    pub read_bytes_total: u64,
    pub written_bytes_total: u64,
}

/// Longest grace a new leader gives servers it has not heard from yet.
const LEADER_GRACE_MAX: Duration = Duration::from_secs(3);

pub struct Registry {
    dead_after: Duration,
    beats: Mutex<HashMap<u64, Beat>>,
    /// Replicas placed on each server since its last heartbeat, so placement
    /// sees its own decisions before the server reports them.
    placed: Mutex<HashMap<u64, u64>>,
    leader_since: Mutex<Option<Instant>>,
}

/// A server's state as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Dead,
}

impl Registry {
    pub fn new(dead_after: Duration) -> Self {
        Registry {
            dead_after,
            beats: Mutex::new(HashMap::new()),
            placed: Mutex::new(HashMap::new()),
            leader_since: Mutex::new(None),
        }
    }

    pub fn record(&self, id: u64, beat: Beat) {
        self.beats.lock().expect("registry lock").insert(id, beat);
        self.placed.lock().expect("registry lock").remove(&id);
    }

    /// Notes that a new replica was just placed on `id`.
    pub fn note_placed(&self, id: u64) {
        *self.placed.lock().expect("registry lock").entry(id).or_default() += 1;
    }

    /// Chunks on `id`: as last reported, plus those placed since.
    pub fn chunk_count(&self, id: u64) -> u64 {
        let reported = self.last_beat(id).map_or(0, |b| b.chunk_count);
        reported.saturating_add(self.placed.lock().expect("registry lock").get(&id).copied().unwrap_or(0))
    }

    /// Called when this node becomes leader (`Some(now)`) or stops being it (`None`).
    pub fn set_leader_since(&self, since: Option<Instant>) {
        *self.leader_since.lock().expect("registry lock") = since;
    }

    pub fn last_beat(&self, id: u64) -> Option<Beat> {
        self.beats.lock().expect("registry lock").get(&id).copied()
    }

    /// True while this node is a leader so new that servers it has not heard
    /// from yet count as alive.
    pub fn in_grace(&self, now: Instant) -> bool {
        let since = *self.leader_since.lock().expect("registry lock");
        since.is_some_and(|t| now.saturating_duration_since(t) < self.dead_after.min(LEADER_GRACE_MAX))
    }

    /// True when `id` has not been heard for `dead_after` (or never by this leader).
    pub fn unheard(&self, id: u64, now: Instant) -> bool {
        self.last_beat(id).is_none_or(|b| now.saturating_duration_since(b.at) >= self.dead_after)
    }

    pub fn liveness(&self, id: u64, now: Instant) -> Liveness {
        let heard = self.last_beat(id).map(|b| now.saturating_duration_since(b.at) < self.dead_after);
        match heard {
            Some(true) => Liveness::Alive,
            Some(false) => Liveness::Dead,
            None if self.in_grace(now) => Liveness::Alive,
            None => Liveness::Dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_until_dead_after() {
        let r = Registry::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(r.liveness(1, t0), Liveness::Dead, "never heard and not leader");
        r.record(
            1,
            Beat {
                at: t0,
                capacity_bytes: 0,
                used_bytes: 0,
                chunk_count: 0,
                read_bytes_total: 0,
                written_bytes_total: 0,
            },
        );
        assert_eq!(r.liveness(1, t0 + Duration::from_secs(9)), Liveness::Alive);
        assert_eq!(r.liveness(1, t0 + Duration::from_secs(10)), Liveness::Dead);
    }

    #[test]
    fn new_leader_grace() {
        let r = Registry::new(Duration::from_secs(10));
        let t0 = Instant::now();
        r.set_leader_since(Some(t0));
        assert_eq!(r.liveness(7, t0 + Duration::from_secs(1)), Liveness::Alive);
        assert_eq!(r.liveness(7, t0 + LEADER_GRACE_MAX), Liveness::Dead);
    }
}
