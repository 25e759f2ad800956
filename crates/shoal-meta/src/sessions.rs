//! When lock sessions were last heard from: the leader's soft state.
//!
//! Keep-alives are not replicated (that would cost a Raft entry per client
//! per beat). Only the leader tracks them; when a session stays silent for
//! its TTL, the leader proposes its end through Raft, so every node agrees on
//! which sessions are gone. A node that becomes leader knows no keep-alives
//! yet, so it counts every session as heard at the moment it took over: a
//! leader change never expires a live session early, it only delays expiry
//! by at most one TTL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct SessionClock {
    inner: Mutex<Clock>,
}

#[derive(Default)]
struct Clock {
    heard: HashMap<u64, Instant>,
    leader_since: Option<Instant>,
}

impl SessionClock {
    /// Records a sign of life from `session`.
    pub fn touch(&self, session: u64, now: Instant) {
        self.inner.lock().expect("session clock").heard.insert(session, now);
    }

    /// Called when this node gains (`Some`) or loses (`None`) leadership.
    pub fn set_leader_since(&self, since: Option<Instant>) {
        let mut c = self.inner.lock().expect("session clock");
        c.leader_since = since;
        c.heard.clear();
    }

    /// Whether `session` has been silent longer than `ttl` (only on a leader).
    pub fn expired(&self, session: u64, ttl: Duration, now: Instant) -> bool {
        let c = self.inner.lock().expect("session clock");
        let Some(since) = c.leader_since else { return false };
        let heard = c.heard.get(&session).copied().map_or(since, |h| h.max(since));
        now.saturating_duration_since(heard) > ttl
    }

    /// Forgets a session that has ended.
    pub fn forget(&self, session: u64) {
        self.inner.lock().expect("session clock").heard.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_past_the_ttl_expires_but_a_new_leader_grants_a_full_ttl() {
        let c = SessionClock::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        assert!(!c.expired(1, ttl, t0 + ttl * 5), "a follower expires nothing");
        c.set_leader_since(Some(t0));
        c.touch(1, t0 + Duration::from_secs(5));
        assert!(!c.expired(1, ttl, t0 + Duration::from_secs(14)));
        assert!(c.expired(1, ttl, t0 + Duration::from_secs(16)));
        assert!(c.expired(2, ttl, t0 + Duration::from_secs(11)), "never heard: counted from the takeover");
        c.set_leader_since(Some(t0 + Duration::from_secs(20)));
        assert!(!c.expired(1, ttl, t0 + Duration::from_secs(29)));
    }
}
