//! What the cluster looks like, gathered once for every view of it: `shoal
//! admin status`, `nodes` and `fsck` print a part of it as text or JSON, and
//! `admin top` renders all of it as a live frame.
//!
//! Everything here is plain data (serializable as the `--json` outputs) and
//! the calls that fill it; nothing here prints. A part that could not be had
//! carries its error as text, so a view can show it beside what could be had.

use std::time::Duration;

use serde::Serialize;
use shoal_client::{ChunkServer, Client, ClientError};

/// How long `admin status` waits for each meta node.
pub const NODE_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Every meta node's own view of its role (`admin status`).
#[derive(Debug, Clone, Serialize)]
pub struct MetaStatus {
    /// The node that says it leads, if any does.
    pub leader_id: Option<u64>,
    pub nodes: Vec<MetaNodeRow>,
}

/// One meta node, as it answered, or why it did not.
#[derive(Debug, Clone, Serialize)]
pub struct MetaNodeRow {
    /// None when the node did not answer.
    pub id: Option<u64>,
    pub addr: String,
    /// `leader`, `follower`, `candidate`, `learner`, ..., or `unreachable`.
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// The node's last applied log index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<u64>,
    /// A checksum of the node's whole state at `last_applied` (when asked).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex_digest")]
    pub state_digest: Option<u32>,
    /// Why the node did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn hex_digest<S: serde::Serializer>(d: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format!("{d:08x}")),
        None => s.serialize_none(),
    }
}

impl MetaStatus {
    /// How many entries `row` has yet to apply to catch up with the leader
    /// (or, without a leader, with the furthest node). None if it did not answer.
    pub fn lag(&self, row: &MetaNodeRow) -> Option<u64> {
        let leader = self.nodes.iter().find(|n| n.id.is_some() && n.id == self.leader_id);
        let ahead = match leader.and_then(|l| l.last_applied) {
            Some(a) => a,
            None => self.nodes.iter().filter_map(|n| n.last_applied).max()?,
        };
        Some(ahead.saturating_sub(row.last_applied?))
    }
}

/// One chunk server as the meta leader sees it (`admin nodes`).
#[derive(Debug, Clone, Serialize)]
pub struct ChunkServerRow {
    pub id: u64,
    pub addr: String,
    /// `alive`, `dead` or `draining`.
    pub state: String,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    /// Replicas the server reports holding.
    pub chunk_count: u64,
    /// Replicas the chunk map lists on it.
    pub listed_chunks: u64,
    pub draining: bool,
    /// None: never heard since this leader took over.
    pub last_heartbeat_ms_ago: Option<u64>,
}

impl From<ChunkServer> for ChunkServerRow {
    fn from(s: ChunkServer) -> Self {
        ChunkServerRow {
            id: s.id,
            addr: s.addr,
            state: s.state,
            used_bytes: s.used_bytes,
            capacity_bytes: s.capacity_bytes,
            chunk_count: s.chunk_count,
            listed_chunks: s.listed_chunks,
            draining: s.draining,
            last_heartbeat_ms_ago: (s.last_heartbeat_ms_ago != u64::MAX).then_some(s.last_heartbeat_ms_ago),
        }
    }
}

/// The health of every chunk (`admin fsck`).
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Nothing under-replicated, missing or corrupt.
    pub healthy: bool,
    pub files: u64,
    pub chunks: u64,
    pub under_replicated: u64,
    pub missing: u64,
    pub corrupt: u64,
    pub over_replicated: u64,
    pub repairs_in_flight: u64,
    pub moves_pending: u64,
    pub repair_paused: bool,
    pub dead_servers: u64,
    pub draining_servers: u64,
    /// Most endangered first, a bounded number of them.
    pub problems: Vec<Problem>,
    pub problems_left_out: u64,
}

/// One chunk short of good replicas, and the file it belongs to.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub path: String,
    pub chunk_index: u64,
    pub chunk_id: u64,
    /// `missing`, `corrupt` or `under-replicated`.
    pub state: String,
    pub good_replicas: u32,
    pub replication: u32,
}

/// How bad things are, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Every chunk has a good replica, but some have fewer than their factor.
    Degraded,
    /// Some chunk is missing or corrupt.
    Unhealthy,
}

impl Health {
    pub fn verdict(&self) -> Verdict {
        if self.missing > 0 || self.corrupt > 0 {
            Verdict::Unhealthy
        } else if self.under_replicated > 0 {
            Verdict::Degraded
        } else {
            Verdict::Healthy
        }
    }

    /// The verdict and what it rests on, in words: "healthy", or
    /// "unhealthy: 2 missing, 5 under-replicated".
    pub fn words(&self) -> String {
        let counts: Vec<String> =
            [(self.missing, "missing"), (self.corrupt, "corrupt"), (self.under_replicated, "under-replicated")]
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect();
        match self.verdict() {
            Verdict::Healthy => "healthy".to_string(),
            Verdict::Degraded => format!("degraded: {}", counts.join(", ")),
            Verdict::Unhealthy => format!("unhealthy: {}", counts.join(", ")),
        }
    }
}

/// Bytes over the chunk servers that count for new data (alive, not draining).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub used_bytes: u64,
    pub capacity_bytes: u64,
}

impl Capacity {
    pub fn of(servers: &[ChunkServerRow]) -> Capacity {
        servers.iter().filter(|s| s.state == "alive" && !s.draining).fold(Capacity::default(), |c, s| Capacity {
            used_bytes: c.used_bytes.saturating_add(s.used_bytes),
            capacity_bytes: c.capacity_bytes.saturating_add(s.capacity_bytes),
        })
    }

    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.used_bytes)
    }
}

/// Everything at once (`admin top`).
#[derive(Debug, Clone)]
pub struct Overview {
    pub meta: MetaStatus,
    pub servers: Result<Vec<ChunkServerRow>, String>,
    pub health: Result<Health, String>,
}

/// Asks every meta node for its own role, so a dead node shows as
/// unreachable. The nodes are those given with `--meta` plus every member the
/// group knows.
pub async fn meta_status(client: &Client, digest: bool) -> MetaStatus {
    let mut rows = Vec::new();
    let mut leader_id = None;
    let mut addrs: Vec<String> = client.meta_addrs().to_vec();
    let mut i = 0;
    while i < addrs.len() {
        let addr = addrs[i].clone();
        i += 1;
        match client.meta_node_status(&addr, NODE_STATUS_TIMEOUT, digest).await {
            Ok(reply) => {
                for n in &reply.nodes {
                    if !addrs.contains(&n.addr) {
                        addrs.push(n.addr.clone());
                    }
                }
                let me = reply.nodes.iter().find(|n| n.id == reply.self_id);
                let role = me.map_or("unknown".to_string(), |n| n.role.clone());
                if role == "leader" {
                    leader_id = Some(reply.self_id);
                }
                rows.push(MetaNodeRow {
                    id: Some(reply.self_id),
                    addr,
                    role,
                    term: Some(me.map_or(0, |n| n.term)),
                    last_applied: Some(reply.applied_index),
                    state_digest: digest.then_some(reply.state_digest),
                    error: None,
                });
            }
            Err(e) => rows.push(MetaNodeRow {
                id: None,
                addr,
                role: "unreachable".to_string(),
                term: None,
                last_applied: None,
                state_digest: None,
                error: Some(e.to_string()),
            }),
        }
    }
    MetaStatus { leader_id, nodes: rows }
}

/// The chunk servers the meta leader knows.
pub async fn chunk_servers(client: &Client) -> Result<Vec<ChunkServerRow>, ClientError> {
    Ok(client.chunk_servers().await?.into_iter().map(ChunkServerRow::from).collect())
}

/// What the meta leader's fsck says.
pub async fn health(client: &Client) -> Result<Health, ClientError> {
    let r = client.fsck().await?;
    let problems = r
        .problems
        .into_iter()
        .map(|p| Problem {
            path: p.path,
            chunk_index: p.chunk_index,
            chunk_id: p.chunk_id,
            state: p.state,
            good_replicas: p.good_replicas,
            replication: p.replication,
        })
        .collect();
    Ok(Health {
        healthy: r.under_replicated == 0 && r.missing == 0 && r.corrupt == 0,
        files: r.files,
        chunks: r.chunks,
        under_replicated: r.under_replicated,
        missing: r.missing,
        corrupt: r.corrupt,
        over_replicated: r.over_replicated,
        repairs_in_flight: r.repairs_in_flight,
        moves_pending: r.moves_pending,
        repair_paused: r.repair_paused,
        dead_servers: r.dead_servers,
        draining_servers: r.draining_servers,
        problems,
        problems_left_out: r.problems_left_out,
    })
}

/// The three parts at once; a part that fails carries its error.
pub async fn overview(client: &Client) -> Overview {
    let (meta, servers, health) = tokio::join!(meta_status(client, false), chunk_servers(client), health(client));
    Overview { meta, servers: servers.map_err(|e| e.to_string()), health: health.map_err(|e| e.to_string()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64, role: &str, applied: Option<u64>) -> MetaNodeRow {
        MetaNodeRow {
            id: applied.map(|_| id),
            addr: format!("10.0.0.{id}:7100"),
            role: role.to_string(),
            term: applied.map(|_| 3),
            last_applied: applied,
            state_digest: None,
            error: None,
        }
    }

    #[test]
    fn lag_counts_from_the_leader_or_else_the_furthest_node() {
        let s = MetaStatus {
            leader_id: Some(2),
            nodes: vec![row(1, "follower", Some(90)), row(2, "leader", Some(100)), row(3, "unreachable", None)],
        };
        let lags: Vec<Option<u64>> = s.nodes.iter().map(|n| s.lag(n)).collect();
        assert_eq!(lags, [Some(10), Some(0), None]);
        let leaderless =
            MetaStatus { leader_id: None, nodes: vec![row(1, "candidate", Some(7)), row(2, "x", Some(9))] };
        assert_eq!(leaderless.lag(&leaderless.nodes[0]), Some(2));
    }

    #[test]
    fn unreachable_rows_serialize_as_admin_status_always_did() {
        let mut r = row(1, "unreachable", None);
        r.error = Some("refused".into());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": null, "addr": "10.0.0.1:7100", "role": "unreachable", "error": "refused"})
        );
        let mut ok = row(2, "leader", Some(5));
        ok.state_digest = Some(0xab);
        let v = serde_json::to_value(&ok).unwrap();
        assert_eq!(v["state_digest"], "000000ab");
        assert_eq!(v["last_applied"], 5);
        assert!(v.get("error").is_none());
    }

    #[test]
    fn verdicts_and_words() {
        let mut h = Health {
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
        assert_eq!((h.verdict(), h.words().as_str()), (Verdict::Healthy, "healthy"));
        h.under_replicated = 5;
        assert_eq!((h.verdict(), h.words().as_str()), (Verdict::Degraded, "degraded: 5 under-replicated"));
        h.missing = 2;
        assert_eq!((h.verdict(), h.words().as_str()), (Verdict::Unhealthy, "unhealthy: 2 missing, 5 under-replicated"));
    }

    #[test]
    fn capacity_counts_alive_servers_that_are_not_draining() {
        let server = |state: &str, draining: bool, used, cap| ChunkServerRow {
            id: 1,
            addr: String::new(),
            state: state.to_string(),
            used_bytes: used,
            capacity_bytes: cap,
            chunk_count: 0,
            listed_chunks: 0,
            draining,
            last_heartbeat_ms_ago: None,
        };
        let c = Capacity::of(&[
            server("alive", false, 10, 100),
            server("dead", false, 1, 50),
            server("alive", true, 5, 50),
        ]);
        assert_eq!(c, Capacity { used_bytes: 10, capacity_bytes: 100 });
        assert_eq!(c.free_bytes(), 90);
    }
}
