//! Throughput and operation rates over the last 10 minutes, kept in memory.
//!
//! A background task takes a [`Sample`] every [`SAMPLE_EVERY`] from what the
//! client library can see: the bytes each chunk server stores (from `admin
//! nodes`) and the meta leader's applied Raft index (from `admin status`). A
//! [`Ring`] keeps the last [`SAMPLES_MAX`] of them (10 minutes), oldest first.
//! Rates are differences between consecutive samples ([`rates`], pure):
//!
//! - **stored bytes/s**: how fast the bytes held by chunk servers grow, all
//!   replicas counted (a write of 1 MiB at replication 2 is 2 MiB), per
//!   server and in total. Deletes make it negative; repair copies count.
//! - **meta ops/s**: Raft entries the leader applied per second, which is
//!   every namespace mutation, prepare and commit of a write, lock grant and
//!   repair step. Reads are not entries and are not counted.
//!
//! - **read and written bytes/s**: from the byte counters each chunk server
//!   reports in its heartbeats (`read_bytes_total`, `written_bytes_total`),
//!   per server and in total: client reads and writes, replication chains
//!   and repair copies. A counter that went back (the server restarted)
//!   gives that server no rate for that interval.
//!
//! The task holds only a weak reference to the dashboard's state and ends
//! when the router is dropped. It samples only while the dashboard or its
//! API was asked for within the last [`WINDOW`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Time between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How far back the charts reach.
pub const WINDOW: Duration = Duration::from_secs(600);
/// Samples kept: one window's worth.
pub const SAMPLES_MAX: usize = (WINDOW.as_secs() / SAMPLE_EVERY.as_secs()) as usize;
/// Chunk servers whose bytes one sample records, at most.
const SERVERS_PER_SAMPLE_MAX: usize = 1024;

/// What the cluster looked like at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Wall-clock time, ms since the Unix epoch.
    pub t_ms: u64,
    /// Each chunk server's counters; None when `admin nodes` failed.
    pub servers: Option<Vec<ServerSample>>,
    pub capacity_bytes: Option<u64>,
    /// The meta leader's applied index; None when no leader answered.
    pub applied_index: Option<u64>,
}

/// One chunk server in a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSample {
    pub addr: String,
    pub stored_bytes: u64,
    pub read_bytes_total: u64,
    pub written_bytes_total: u64,
}

impl Sample {
    fn stored_bytes(&self) -> Option<u64> {
        self.servers.as_ref().map(|s| s.iter().map(|x| x.stored_bytes).sum())
    }
}

/// One point of the charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub t_ms: u64,
    pub stored_bytes: Option<u64>,
    pub capacity_bytes: Option<u64>,
    pub applied_index: Option<u64>,
    /// Since the previous sample; None for the first one or when either lacks the data.
    pub stored_bytes_per_s: Option<f64>,
    pub meta_ops_per_s: Option<f64>,
    /// Bytes all chunk servers read and wrote per second.
    pub read_bytes_per_s: Option<f64>,
    pub written_bytes_per_s: Option<f64>,
}

/// A chunk server's rate over the last two samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerRate {
    pub addr: String,
    pub stored_bytes_per_s: f64,
    /// None when the server's counter went back (it restarted).
    pub read_bytes_per_s: Option<f64>,
    pub written_bytes_per_s: Option<f64>,
}

/// `GET /api/v1/throughput`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    pub sample_every_ms: u64,
    pub window_ms: u64,
    /// Oldest first.
    pub points: Vec<Point>,
    /// Per chunk server, from the last two samples that both list it.
    pub servers: Vec<ServerRate>,
}

/// The last [`SAMPLES_MAX`] samples, oldest first.
#[derive(Debug, Default)]
pub struct Ring {
    samples: VecDeque<Sample>,
}

impl Ring {
    pub fn push(&mut self, s: Sample) {
        while self.samples.len() >= SAMPLES_MAX {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The charts' points and the servers' latest rates.
    pub fn throughput(&self) -> Throughput {
        let mut points = Vec::with_capacity(self.samples.len());
        let mut prev: Option<&Sample> = None;
        for s in &self.samples {
            let (stored_bytes_per_s, meta_ops_per_s) = prev.map_or((None, None), |p| rates(p, s));
            let (read_bytes_per_s, written_bytes_per_s) = prev.map_or((None, None), |p| io_rates(p, s));
            points.push(Point {
                t_ms: s.t_ms,
                stored_bytes: s.stored_bytes(),
                capacity_bytes: s.capacity_bytes,
                applied_index: s.applied_index,
                stored_bytes_per_s,
                meta_ops_per_s,
                read_bytes_per_s,
                written_bytes_per_s,
            });
            prev = Some(s);
        }
        let n = self.samples.len();
        let servers = match (n >= 2).then(|| (&self.samples[n - 2], &self.samples[n - 1])) {
            Some((a, b)) => server_rates(a, b),
            None => Vec::new(),
        };
        Throughput {
            sample_every_ms: SAMPLE_EVERY.as_millis() as u64,
            window_ms: WINDOW.as_millis() as u64,
            points,
            servers,
        }
    }
}

/// Per second, the change from `a` to `b`; None when the time did not move forward.
fn per_second(from: u64, to: u64, a: &Sample, b: &Sample) -> Option<f64> {
    let dt_ms = b.t_ms.checked_sub(a.t_ms).filter(|&d| d > 0)?;
    Some((to as f64 - from as f64) * 1000.0 / dt_ms as f64)
}

/// (stored bytes/s, meta ops/s) from `a` to the later sample `b`.
///
/// Stored bytes/s is the sum over the servers listed in both samples, so a
/// server that appears or drops out between them (a new leader that has not
/// heard it yet, a server added) moves the total without making a spike. A
/// leader change may bring an applied index below the last one seen (the new
/// leader had applied less); that interval has no ops rate rather than a
/// negative one.
pub fn rates(a: &Sample, b: &Sample) -> (Option<f64>, Option<f64>) {
    let stored = match (&a.servers, &b.servers) {
        (Some(_), Some(_)) => {
            per_second(0, 0, a, b).map(|_| server_rates(a, b).iter().map(|r| r.stored_bytes_per_s).sum())
        }
        _ => None,
    };
    let ops = match (a.applied_index, b.applied_index) {
        (Some(x), Some(y)) if y >= x => per_second(x, y, a, b),
        _ => None,
    };
    (stored, ops)
}

/// Rates of every server listed in both samples, in `b`'s order.
pub fn server_rates(a: &Sample, b: &Sample) -> Vec<ServerRate> {
    let (Some(sa), Some(sb)) = (&a.servers, &b.servers) else { return Vec::new() };
    let before: HashMap<&str, &ServerSample> = sa.iter().map(|x| (x.addr.as_str(), x)).collect();
    sb.iter()
        .filter_map(|to| {
            let from = before.get(to.addr.as_str())?;
            // A counter only grows; one that went back was reset by a restart.
            let counter = |x: u64, y: u64| (y >= x).then(|| per_second(x, y, a, b)).flatten();
            Some(ServerRate {
                addr: to.addr.clone(),
                stored_bytes_per_s: per_second(from.stored_bytes, to.stored_bytes, a, b)?,
                read_bytes_per_s: counter(from.read_bytes_total, to.read_bytes_total),
                written_bytes_per_s: counter(from.written_bytes_total, to.written_bytes_total),
            })
        })
        .collect()
}

/// (read, written) bytes/s of all chunk servers from `a` to `b`: the sum over
/// the servers that have a rate in both (see [`server_rates`]).
pub fn io_rates(a: &Sample, b: &Sample) -> (Option<f64>, Option<f64>) {
    let rates = server_rates(a, b);
    if rates.is_empty() {
        return (None, None);
    }
    let sum = |f: fn(&ServerRate) -> Option<f64>| Some(rates.iter().filter_map(f).sum::<f64>());
    (sum(|r| r.read_bytes_per_s), sum(|r| r.written_bytes_per_s))
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Builds a sample from the reports the dashboard also serves.
pub fn sample_of(
    t_ms: u64,
    nodes: Option<&[shoal_client::report::ChunkServerReport]>,
    status: Option<&shoal_client::report::MetaGroupReport>,
) -> Sample {
    // A server the leader has not heard yet (a new leader, just after a
    // failover) is reported with zero bytes and counters: it is left out
    // rather than recorded as an empty server.
    let servers = nodes.map(|n| {
        n.iter()
            .filter(|s| s.last_heartbeat_ms_ago.is_some())
            .take(SERVERS_PER_SAMPLE_MAX)
            .map(|s| ServerSample {
                addr: s.addr.clone(),
                stored_bytes: s.used_bytes,
                read_bytes_total: s.read_bytes_total,
                written_bytes_total: s.written_bytes_total,
            })
            .collect::<Vec<_>>()
    });
    let capacity_bytes = nodes.map(|n| n.iter().filter(|s| s.state != "dead").map(|s| s.capacity_bytes).sum());
    let applied_index = status.and_then(|g| g.leader()?.last_applied);
    Sample { t_ms, servers, capacity_bytes, applied_index }
}

/// Takes a sample every [`SAMPLE_EVERY`] until `state` is dropped.
pub(crate) async fn run(state: Weak<crate::State>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else { return };
        // Nobody has looked for a whole window: ask the cluster nothing until
        // someone does (the charts then fill from that moment).
        if !state.viewed_within(WINDOW) {
            continue;
        }
        let (nodes, status) = tokio::join!(state.nodes(), state.status());
        let sample = sample_of(now_ms(), nodes.as_deref().ok().map(|v| v.as_slice()), Some(&*status));
        push(&state.samples, sample);
    }
}

fn push(ring: &Arc<Mutex<Ring>>, s: Sample) {
    ring.lock().expect("sample ring").push(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_ms: u64, servers: &[(&str, u64)], applied: Option<u64>) -> Sample {
        Sample {
            t_ms,
            servers: Some(
                servers
                    .iter()
                    .map(|(a, b)| ServerSample {
                        addr: a.to_string(),
                        stored_bytes: *b,
                        read_bytes_total: 2 * b,
                        written_bytes_total: 3 * b,
                    })
                    .collect(),
            ),
            capacity_bytes: Some(1000),
            applied_index: applied,
        }
    }

    #[test]
    fn rates_are_per_second_between_samples() {
        let a = sample(10_000, &[("x", 100), ("y", 0)], Some(50));
        let b = sample(12_000, &[("x", 300), ("y", 1000)], Some(70));
        assert_eq!(rates(&a, &b), (Some(600.0), Some(10.0)));
        assert_eq!(
            server_rates(&a, &b),
            vec![
                ServerRate {
                    addr: "x".into(),
                    stored_bytes_per_s: 100.0,
                    read_bytes_per_s: Some(200.0),
                    written_bytes_per_s: Some(300.0)
                },
                ServerRate {
                    addr: "y".into(),
                    stored_bytes_per_s: 500.0,
                    read_bytes_per_s: Some(1000.0),
                    written_bytes_per_s: Some(1500.0)
                }
            ]
        );
        assert_eq!(io_rates(&a, &b), (Some(1200.0), Some(1800.0)));
    }

    #[test]
    fn missing_data_gives_no_rate_not_a_wrong_one() {
        let a = sample(10_000, &[("x", 100)], Some(50));
        // A new leader that had applied less: no ops rate.
        let b = sample(12_000, &[("x", 50)], Some(40));
        assert_eq!(rates(&a, &b), (Some(-25.0), None));
        // x's counters went back (it restarted): no read or write rate.
        assert_eq!(server_rates(&a, &b)[0].read_bytes_per_s, None);
        assert_eq!(io_rates(&a, &b), (Some(0.0), Some(0.0)));
        let no_leader = sample(14_000, &[("x", 50)], None);
        assert_eq!(rates(&b, &no_leader).1, None);
        let no_nodes = Sample { servers: None, ..sample(16_000, &[], Some(45)) };
        assert_eq!(rates(&no_leader, &no_nodes).0, None);
        // The clock did not move forward.
        assert_eq!(rates(&b, &a), (None, None));
        // A server that is new in the later sample has no rate yet.
        let c = sample(18_000, &[("x", 50), ("z", 9)], Some(45));
        assert_eq!(server_rates(&b, &c).len(), 1);
        // Nor does it move the stored rate: only servers in both count.
        assert_eq!(rates(&b, &c).0, Some(0.0));
        // A server that drops out of a sample does not make a negative spike.
        let d = sample(20_000, &[("z", 9)], Some(45));
        assert_eq!(rates(&c, &d).0, Some(0.0));
    }

    #[test]
    fn the_ring_keeps_one_window_oldest_first() {
        let mut ring = Ring::default();
        for i in 0..(SAMPLES_MAX as u64 + 10) {
            ring.push(sample(i * 2000 + 1, &[("x", i * 10)], Some(i)));
        }
        assert_eq!(ring.len(), SAMPLES_MAX);
        let t = ring.throughput();
        assert_eq!(t.points.len(), SAMPLES_MAX);
        assert_eq!(t.points[0].t_ms, 10 * 2000 + 1);
        assert_eq!(t.points[0].stored_bytes_per_s, None);
        assert_eq!(t.points[1].stored_bytes_per_s, Some(5.0));
        assert_eq!(t.points[1].meta_ops_per_s, Some(0.5));
        assert_eq!(
            t.servers,
            vec![ServerRate {
                addr: "x".into(),
                stored_bytes_per_s: 5.0,
                read_bytes_per_s: Some(10.0),
                written_bytes_per_s: Some(15.0)
            }]
        );
    }

    #[test]
    fn a_sample_takes_the_leaders_applied_index_and_live_capacity() {
        use shoal_client::report::{ChunkServerReport, MetaGroupReport, MetaNodeReport};
        let node = |id, role: &str, applied| MetaNodeReport {
            id: Some(id),
            addr: format!("m{id}"),
            role: role.into(),
            term: Some(1),
            last_applied: Some(applied),
            state_digest: None,
            error: None,
        };
        let group = MetaGroupReport { leader_id: Some(2), nodes: vec![node(1, "follower", 5), node(2, "leader", 9)] };
        let server = |addr: &str, state: &str| ChunkServerReport {
            id: 1,
            addr: addr.into(),
            state: state.into(),
            used_bytes: 10,
            capacity_bytes: 100,
            chunk_count: 1,
            listed_chunks: 1,
            draining: false,
            last_heartbeat_ms_ago: Some(5),
            read_bytes_total: 30,
            written_bytes_total: 40,
        };
        let s = sample_of(7, Some(&[server("a", "alive"), server("b", "dead")]), Some(&group));
        assert_eq!(s.applied_index, Some(9));
        assert_eq!(s.capacity_bytes, Some(100));
        assert_eq!(s.stored_bytes(), Some(20));
        // A server a new leader has not heard yet is not in the sample.
        let unheard = ChunkServerReport { last_heartbeat_ms_ago: None, used_bytes: 0, ..server("c", "alive") };
        let s = sample_of(7, Some(&[server("a", "alive"), unheard]), Some(&group));
        assert_eq!(s.servers.as_ref().map(|v| v.len()), Some(1));
        assert_eq!(s.stored_bytes(), Some(10));
        let leaderless = MetaGroupReport { leader_id: None, ..group };
        assert_eq!(
            sample_of(7, None, Some(&leaderless)),
            Sample { t_ms: 7, servers: None, capacity_bytes: None, applied_index: None }
        );
    }
}
