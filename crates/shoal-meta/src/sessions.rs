//! When lock sessions were last heard from: the leader's soft state.
//!
//! Keep-alives are not replicated (that would cost a Raft entry per client
//! per beat). Only the leader tracks them; when a session stays silent for
//! its TTL, the leader proposes its end through Raft, so every node agrees on
//! which sessions are gone. A node that becomes leader knows no keep-alives
//! yet, so it counts every session as heard when it first looks at it: at the
//! moment it took over for the sessions that existed then (a leader change
//! never expires a live session early, it only delays expiry by at most one
//! TTL), and for a session opened since, before the handler that opened it
//! records it (the state machine holds the session before that handler runs
//! again, and the expiry scan may look in between).

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
        let mut c = self.inner.lock().expect("session clock");
        let Some(since) = c.leader_since else { return false };
        let heard = *c.heard.entry(session).or_insert(now);
        now.saturating_duration_since(heard.max(since)) > ttl
    }

    /// Forgets every session that `live` says has ended. The expiry scan
    /// calls it with the state machine's sessions, rather than forgetting a
    /// session when its own end is answered: an end can be applied without
    /// its proposer hearing so (an "outcome unknown" answer), a session
    /// can be ended by its owner, and a keep-alive can come after the end.
    /// `live` runs under the clock's lock: it must take no lock itself (the
    /// scan passes a lookup in the state it already holds).
    pub fn retain(&self, live: impl Fn(u64) -> bool) {
        self.inner.lock().expect("session clock").heard.retain(|session, _| live(*session));
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
        c.set_leader_since(Some(t0 + Duration::from_secs(20)));
        assert!(!c.expired(1, ttl, t0 + Duration::from_secs(29)));
    }

    #[test]
    fn ended_sessions_are_forgotten_and_live_ones_kept() {
        let c = SessionClock::default();
        let t0 = Instant::now();
        for session in 1..=3 {
            c.touch(session, t0);
        }
        c.retain(|session| session == 2);
        let heard = c.inner.lock().unwrap().heard.clone();
        assert_eq!(heard.into_keys().collect::<Vec<_>>(), vec![2]);
    }

    /// Regression: a session opened more than a TTL after the takeover used to
    /// count as silent since the takeover until its opener's touch landed, so
    /// an expiry scan in between ended it at once (t83 saw puts fail with
    /// "lock session has expired").
    #[test]
    fn a_session_not_heard_yet_counts_from_when_the_leader_first_looks() {
        let c = SessionClock::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        c.set_leader_since(Some(t0));
        assert!(!c.expired(2, ttl, t0 + Duration::from_secs(30)), "first seen long after the takeover");
        assert!(!c.expired(2, ttl, t0 + Duration::from_secs(39)));
        assert!(c.expired(2, ttl, t0 + Duration::from_secs(41)), "silent for a TTL since it was first seen");
        assert!(!c.expired(3, ttl, t0 + Duration::from_millis(100)), "existing at the takeover: a full TTL from it");
        assert!(c.expired(3, ttl, t0 + Duration::from_secs(11)));
    }
}
