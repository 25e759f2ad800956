//! When a pass over the whole namespace may run again, from what the last
//! one cost.
//!
//! Such a pass (the metrics' counts and fsck, the healer's planning round)
//! takes time in proportion to the namespace: microseconds for a test
//! cluster, hundreds of milliseconds at ten million files. Run at a fixed
//! period, it would take a meta node's CPU away from Raft and the clients
//! as the namespace grows. A [`Pacer`] keeps a pass to a share of the time
//! instead: after a pass that took `t`, the next waits `t × share_inverse`.
//! A cheap pass is never held back by more than its own period.

use std::time::Instant;

/// The share (1/N) of the time the metrics' passes may take.
pub const PASS_SHARE_INVERSE: u32 = 50;

/// See the module docs. Pure but for the clock it is given.
#[derive(Debug, Clone, Copy)]
pub struct Pacer {
    share_inverse: u32,
    next: Option<Instant>,
}

impl Default for Pacer {
    /// A pacer at [`PASS_SHARE_INVERSE`].
    fn default() -> Self {
        Pacer::with_share_inverse(PASS_SHARE_INVERSE)
    }
}

impl Pacer {
    /// A pacer whose passes take at most 1/`share_inverse` of the time.
    pub fn with_share_inverse(share_inverse: u32) -> Self {
        Pacer { share_inverse: share_inverse.max(1), next: None }
    }

    /// Whether a pass may run at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// When the next pass may run (None: now).
    pub fn next_due(&self) -> Option<Instant> {
        self.next
    }

    /// Records a pass that ran from `started` to `ended`.
    pub fn ran(&mut self, started: Instant, ended: Instant) {
        let cost = ended.saturating_duration_since(started);
        self.next = Some(ended + cost * self.share_inverse);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_pass_waits_fifty_times_its_cost() {
        let mut pacer = Pacer::default();
        let t0 = Instant::now();
        assert!(pacer.due(t0));
        pacer.ran(t0, t0 + Duration::from_millis(200));
        let end = t0 + Duration::from_millis(200);
        assert!(!pacer.due(end + Duration::from_secs(9)));
        assert!(pacer.due(end + Duration::from_secs(10)));
        assert_eq!(pacer.next_due(), Some(end + Duration::from_secs(10)));
        // A cheap pass may run again at the next sample.
        pacer.ran(end, end + Duration::from_micros(100));
        assert!(pacer.due(end + Duration::from_millis(6)));
    }

    #[test]
    fn the_share_is_the_pacers_own() {
        let mut pacer = Pacer::with_share_inverse(10);
        let t0 = Instant::now();
        let end = t0 + Duration::from_millis(300);
        pacer.ran(t0, end);
        assert!(!pacer.due(end + Duration::from_millis(2_999)));
        assert!(pacer.due(end + Duration::from_secs(3)));
        // A share of zero is read as one: the pass waits its own cost.
        let mut whole = Pacer::with_share_inverse(0);
        whole.ran(t0, end);
        assert!(!whole.due(end + Duration::from_millis(299)));
        assert!(whole.due(end + Duration::from_millis(300)));
    }
}
