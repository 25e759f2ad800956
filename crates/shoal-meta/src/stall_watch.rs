//! A watch for stalls of this meta node, so that a deposed leader's log
//! says whether it had stopped.
//!
//! A leader keeps its followers only while its Raft core sends them
//! heartbeats every 50 ms; a follower that hears nothing for about half a
//! second (in openraft 0.9, the leader's lease, which is the longest
//! election timeout, plus an election timeout of 150–300 ms) stands for
//! election. Two ticks, every [`TICK`], find out
//! which of two things stopped when a tick comes [`REPORT_LATE`] late:
//! - one on the async runtime, where the Raft core runs: late when both
//!   workers are busy or blocked (a long pass, a lock held too long);
//! - one on a thread of its own: late when the whole process is not
//!   scheduled (the machine's CPU is taken) or is paused (page faults,
//!   the allocator's locks).
//!
//! Each late tick is logged at warn and counted in
//! `shoal_meta_stalls_total{on="runtime"|"thread"}`.

use std::time::{Duration, Instant};

use crate::metric_names;

/// How often each watch ticks.
pub const TICK: Duration = Duration::from_millis(50);
/// A tick this much later than due is a stall.
pub const REPORT_LATE: Duration = Duration::from_millis(100);

/// How late a tick due `period` after the last came, when that is at least
/// [`REPORT_LATE`]; `elapsed` is the time since the last tick.
pub fn stall(period: Duration, elapsed: Duration) -> Option<Duration> {
    let late = elapsed.saturating_sub(period);
    (late >= REPORT_LATE).then_some(late)
}

fn report(on: &'static str, late: Duration) {
    tracing::warn!(on, late_ms = late.as_millis() as u64, "this meta node stalled");
    metrics::counter!(metric_names::STALLS_TOTAL, "on" => on).increment(1);
}

/// Starts both watches, for the life of the process (once, however often
/// it is called).
pub fn spawn() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(start);
}

fn start() {
    tokio::spawn(async {
        let mut last = Instant::now();
        loop {
            tokio::time::sleep(TICK).await;
            let now = Instant::now();
            if let Some(late) = stall(TICK, now - last) {
                report("runtime", late);
            }
            last = now;
        }
    });
    let watch = std::thread::Builder::new().name("stall-watch".into()).spawn(|| {
        let mut last = Instant::now();
        loop {
            std::thread::sleep(TICK);
            let now = Instant::now();
            if let Some(late) = stall(TICK, now - last) {
                report("thread", late);
            }
            last = now;
        }
    });
    if let Err(e) = watch {
        tracing::warn!("cannot start the stall watch thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_tick_late_by_the_threshold_is_a_stall() {
        let ms = Duration::from_millis;
        assert_eq!(stall(TICK, ms(50)), None);
        assert_eq!(stall(TICK, ms(149)), None);
        assert_eq!(stall(TICK, ms(150)), Some(ms(100)));
        assert_eq!(stall(TICK, ms(700)), Some(ms(650)));
        // A clock read early (never with Instant, but harmless) is no stall.
        assert_eq!(stall(TICK, ms(10)), None);
    }
}
