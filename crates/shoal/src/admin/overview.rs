//! What `admin top` shows: the reports `shoal_client::report` gathers for
//! `admin status`, `nodes` and `fsck` (and the dashboard), taken at once, and
//! what `top` derives from them: the verdict of the chunks' health in words,
//! the capacity of the servers that take new data, and the servers in a
//! stable order. Lag behind the leader is `MetaGroupReport::lag`.
//!
//! Nothing here asks the cluster anything but through `report`, and nothing
//! here prints. A part that could not be had carries its error as text, so a
//! view can show it beside what could be had.

use shoal_client::Client;
use shoal_client::report::{self, ChunkServerReport, FsckReport, MetaGroupReport};

/// How bad things are, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Every chunk has a good replica, but some have fewer than their factor.
    Degraded,
    /// Some chunk is missing or corrupt.
    Unhealthy,
}

impl Verdict {
    pub fn of(h: &FsckReport) -> Verdict {
        if h.missing > 0 || h.corrupt > 0 {
            Verdict::Unhealthy
        } else if h.under_replicated > 0 {
            Verdict::Degraded
        } else {
            Verdict::Healthy
        }
    }
}

/// The verdict and what it rests on, in words: "healthy", or
/// "unhealthy: 2 missing, 5 under-replicated".
pub fn health_words(h: &FsckReport) -> String {
    let counts: Vec<String> =
        [(h.missing, "missing"), (h.corrupt, "corrupt"), (h.under_replicated, "under-replicated")]
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
    match Verdict::of(h) {
        Verdict::Healthy => "healthy".to_string(),
        Verdict::Degraded => format!("degraded: {}", counts.join(", ")),
        Verdict::Unhealthy => format!("unhealthy: {}", counts.join(", ")),
    }
}

/// Bytes over the chunk servers that count for new data (alive, not draining).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

impl Capacity {
    pub fn of(servers: &[ChunkServerReport]) -> Capacity {
        servers.iter().filter(|s| s.state == "alive" && !s.draining).fold(Capacity::default(), |c, s| Capacity {
            used_bytes: c.used_bytes.saturating_add(s.used_bytes),
            capacity_bytes: c.capacity_bytes.saturating_add(s.capacity_bytes),
        })
    }

    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.used_bytes)
    }
}

/// `servers` by address, so rows keep their places from frame to frame.
pub fn by_address(servers: &[ChunkServerReport]) -> Vec<&ChunkServerReport> {
    let mut sorted: Vec<_> = servers.iter().collect();
    sorted.sort_by(|a, b| a.addr.cmp(&b.addr));
    sorted
}

/// Everything `admin top` shows, gathered at once.
#[derive(Debug, Clone)]
pub struct Overview {
    pub meta: MetaGroupReport,
    pub servers: Result<Vec<ChunkServerReport>, String>,
    pub health: Result<FsckReport, String>,
}

/// The three reports at once; a part that fails carries its error.
pub async fn overview(client: &Client) -> Overview {
    let (meta, servers, health) =
        tokio::join!(report::meta_group(client, false), report::chunk_servers(client), report::fsck(client));
    Overview { meta, servers: servers.map_err(|e| e.to_string()), health: health.map_err(|e| e.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_and_words() {
        let mut h = FsckReport {
            healthy: true,
            files: 1,
            chunks: 1,
            under_replicated: 0,
            missing: 0,
            corrupt: 0,
            over_replicated: 0,
            repairs_in_flight: 0,
            moves_pending: 0,
            repair_paused: false,
            dead_servers: 0,
            draining_servers: 0,
            problems: Vec::new(),
            problems_left_out: 0,
        };
        assert_eq!((Verdict::of(&h), health_words(&h).as_str()), (Verdict::Healthy, "healthy"));
        h.under_replicated = 5;
        assert_eq!((Verdict::of(&h), health_words(&h).as_str()), (Verdict::Degraded, "degraded: 5 under-replicated"));
        h.missing = 2;
        assert_eq!(
            (Verdict::of(&h), health_words(&h).as_str()),
            (Verdict::Unhealthy, "unhealthy: 2 missing, 5 under-replicated")
        );
    }

    fn server(addr: &str, state: &str, draining: bool, used: u64, cap: u64) -> ChunkServerReport {
        ChunkServerReport {
            id: 1,
            addr: addr.to_string(),
            state: state.to_string(),
            used_bytes: used,
            capacity_bytes: cap,
            chunk_count: 0,
            listed_chunks: 0,
            draining,
            last_heartbeat_ms_ago: None,
            read_bytes_total: 0,
            written_bytes_total: 0,
        }
    }

    #[test]
    fn capacity_counts_alive_servers_that_are_not_draining() {
        let c = Capacity::of(&[
            server("a", "alive", false, 10, 100),
            server("b", "dead", false, 1, 50),
            server("c", "alive", true, 5, 50),
        ]);
        assert_eq!(c, Capacity { used_bytes: 10, capacity_bytes: 100 });
        assert_eq!(c.free_bytes(), 90);
    }

    #[test]
    fn servers_sort_by_address() {
        let servers = [server("b:1", "alive", false, 0, 0), server("a:2", "dead", false, 0, 0)];
        let addrs: Vec<&str> = by_address(&servers).iter().map(|s| s.addr.as_str()).collect();
        assert_eq!(addrs, ["a:2", "b:1"]);
    }
}
