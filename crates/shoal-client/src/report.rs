//! The cluster's state as operators see it: plain, serializable reports
//! gathered through a [`Client`].
//!
//! One implementation for every front end: `shoal admin status|nodes|fsck|locks
//! --json`, `shoal ls --json` and `shoal stat --json` print these, and the
//! HTTP API (`shoal-http`) serves the very same values, so a script gets the
//! same fields from either; `shoal admin top` renders them live. Fields are
//! only ever added; a renamed or removed field breaks the scripts that read
//! them.
//!
//! Nothing here decides anything: a report is what meta answered, reshaped,
//! and the little derived from it ([`MetaGroupReport::lag`]) is arithmetic.
//! Only [`meta_group`] asks more than one node: it asks every meta node for
//! its own view, so that a dead node shows as unreachable instead of being
//! left out.

use std::time::Duration;

use serde::Serialize;

use crate::client::{ChunkInfo, DirEntry, Stat};
use crate::{Client, Result};

/// How long [`meta_group`] waits for each meta node.
pub const NODE_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Meta nodes [`meta_group`] asks, at most (it learns members from replies).
const META_NODES_MAX: usize = 64;

/// `shoal admin status --json`: every meta node's own view of its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaGroupReport {
    /// The id of a node that says it leads; None when none does.
    pub leader_id: Option<u64>,
    /// Nodes in the order they were found: those given with `--meta` first,
    /// then members the answering nodes named.
    pub nodes: Vec<MetaNodeReport>,
}

/// One meta node in a [`MetaGroupReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetaNodeReport {
    /// None when the node did not answer.
    pub id: Option<u64>,
    pub addr: String,
    /// `leader`, `follower`, `candidate`, `learner`, ... as the node says;
    /// `unreachable` when it did not answer.
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// The node's last applied Raft log index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<u64>,
    /// CRC32C of the node's whole state at `last_applied`, in hex (only when asked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_digest: Option<String>,
    /// Why the node did not answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MetaGroupReport {
    /// The node that says it leads, as it answered; None when none does.
    pub fn leader(&self) -> Option<&MetaNodeReport> {
        let id = self.leader_id?;
        self.nodes.iter().find(|n| n.id == Some(id))
    }

    /// How many entries `node` has yet to apply to catch up with the leader
    /// (or, without a leader, with the furthest node). None if it did not answer.
    pub fn lag(&self, node: &MetaNodeReport) -> Option<u64> {
        let ahead = match self.leader().and_then(|l| l.last_applied) {
            Some(a) => a,
            None => self.nodes.iter().filter_map(|n| n.last_applied).max()?,
        };
        Some(ahead.saturating_sub(node.last_applied?))
    }
}

/// Asks every meta node for its own role: those the client was given, then
/// every member the answers name. The nodes known at each round are asked
/// side by side, each for at most [`NODE_STATUS_TIMEOUT`].
pub async fn meta_group(client: &Client, digest: bool) -> MetaGroupReport {
    let mut addrs: Vec<String> = client.meta_addrs().to_vec();
    let mut nodes = Vec::new();
    let mut leader_id = None;
    let mut asked = 0;
    while asked < addrs.len() && asked < META_NODES_MAX {
        let round: Vec<String> = addrs[asked..addrs.len().min(META_NODES_MAX)].to_vec();
        asked += round.len();
        let answers = futures::future::join_all(
            round.iter().map(|addr| client.meta_node_status(addr, NODE_STATUS_TIMEOUT, digest)),
        )
        .await;
        for (addr, answer) in round.into_iter().zip(answers) {
            let reply = match answer {
                Ok(reply) => reply,
                Err(e) => {
                    nodes.push(MetaNodeReport {
                        id: None,
                        addr,
                        role: "unreachable".into(),
                        term: None,
                        last_applied: None,
                        state_digest: None,
                        error: Some(e.to_string()),
                    });
                    continue;
                }
            };
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
            // One node reached under two addresses (a seed given as a
            // wildcard or an alias, then its group address) is listed once,
            // under the address the group itself names it by.
            let named = me.map(|n| n.addr.clone()).filter(|a| !a.is_empty()).unwrap_or(addr);
            if let Some(seen) = nodes.iter_mut().find(|n| n.id == Some(reply.self_id)) {
                seen.addr = named;
                continue;
            }
            nodes.push(MetaNodeReport {
                id: Some(reply.self_id),
                addr: named,
                role,
                term: Some(me.map_or(0, |n| n.term)),
                last_applied: Some(reply.applied_index),
                state_digest: digest.then(|| format!("{:08x}", reply.state_digest)),
                error: None,
            });
        }
    }
    MetaGroupReport { leader_id, nodes }
}

/// One chunk server in `shoal admin nodes --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkServerReport {
    pub id: u64,
    pub addr: String,
    /// `alive`, `dead` or `draining`, as the meta leader sees it.
    pub state: String,
    pub used_bytes: u64,
    pub capacity_bytes: u64,
    /// Replicas the server says it holds.
    pub chunk_count: u64,
    /// Replicas the chunk map lists on it.
    pub listed_chunks: u64,
    pub draining: bool,
    /// None when the current leader has not heard it yet.
    pub last_heartbeat_ms_ago: Option<u64>,
    /// Bytes the server read (served) and wrote since it started, as of its
    /// last heartbeat: counters, for rates.
    pub read_bytes_total: u64,
    pub written_bytes_total: u64,
}

/// Every registered chunk server, as the meta leader sees it.
pub async fn chunk_servers(client: &Client) -> Result<Vec<ChunkServerReport>> {
    Ok(client
        .chunk_servers()
        .await?
        .into_iter()
        .map(|s| ChunkServerReport {
            id: s.id,
            addr: s.addr,
            state: s.state,
            used_bytes: s.used_bytes,
            capacity_bytes: s.capacity_bytes,
            chunk_count: s.chunk_count,
            listed_chunks: s.listed_chunks,
            draining: s.draining,
            last_heartbeat_ms_ago: (s.last_heartbeat_ms_ago != u64::MAX).then_some(s.last_heartbeat_ms_ago),
            read_bytes_total: s.read_bytes_total,
            written_bytes_total: s.written_bytes_total,
        })
        .collect())
}

/// `shoal admin fsck --json`: the health of every chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsckReport {
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
    /// Most endangered first, at most a bound meta sets.
    pub problems: Vec<FsckProblemReport>,
    /// Problems beyond the bound, counted.
    pub problems_left_out: u64,
}

/// One chunk that is not healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsckProblemReport {
    pub path: String,
    pub chunk_index: u64,
    pub chunk_id: u64,
    /// `missing`, `corrupt` or `under-replicated`.
    pub state: String,
    pub good_replicas: u32,
    pub replication: u32,
}

/// The health of every chunk, as the meta leader sees it.
pub async fn fsck(client: &Client) -> Result<FsckReport> {
    let r = client.fsck().await?;
    Ok(FsckReport {
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
        problems: r
            .problems
            .into_iter()
            .map(|p| FsckProblemReport {
                path: p.path,
                chunk_index: p.chunk_index,
                chunk_id: p.chunk_id,
                state: p.state,
                good_replicas: p.good_replicas,
                replication: p.replication,
            })
            .collect(),
        problems_left_out: r.problems_left_out,
    })
}

/// `shoal admin locks --json PATH`: who holds a path's lock and who waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockReport {
    pub path: String,
    /// In grant order.
    pub holders: Vec<LockEntryReport>,
    /// In arrival order.
    pub queue: Vec<LockEntryReport>,
    /// Byte ranges held (POSIX record locks, the mount's cluster fcntl
    /// locks), by session then first byte.
    pub ranges_held: Vec<LockEntryReport>,
    /// Byte-range requests waiting, in arrival order.
    pub ranges_queued: Vec<LockEntryReport>,
}

/// One holder or waiter of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockEntryReport {
    pub session: u64,
    /// `shared` or `exclusive`.
    pub mode: &'static str,
    /// The fencing token; 0 while queued, and for byte ranges.
    pub token: u64,
    pub ticket: u64,
    /// A byte range's first and last byte (inclusive; the last is
    /// 18446744073709551615, or the kernel's 9223372036854775807, when it
    /// runs to the end of the file); absent for a whole-path lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<[u64; 2]>,
}

/// The holders and the queue of `path`'s lock.
pub async fn locks(client: &Client, path: &str) -> Result<LockReport> {
    Ok(lock_report(path.to_string(), client.lock_info(path).await?))
}

/// Every locked path in the cluster (holders or waiters) that starts with
/// `prefix`, in path order, at most `limit` (0: the server's bound), and
/// whether more were left out.
pub async fn all_locks(client: &Client, prefix: &str, limit: u32) -> Result<(Vec<LockReport>, bool)> {
    let list = client.lock_table(prefix, limit).await?;
    let reports = list.paths.into_iter().map(|p| lock_report(p.path, p.info.unwrap_or_default())).collect();
    Ok((reports, list.truncated))
}

fn lock_report(path: String, info: crate::LockInfo) -> LockReport {
    let rows = |entries: Vec<crate::LockEntry>| -> Vec<LockEntryReport> {
        entries
            .into_iter()
            .map(|e| LockEntryReport {
                session: e.session,
                mode: if e.shared { "shared" } else { "exclusive" },
                token: e.token,
                ticket: e.ticket,
                bytes: e.range.map(|r| [r.start, r.end]),
            })
            .collect()
    };
    LockReport {
        path,
        holders: rows(info.holders),
        queue: rows(info.queue),
        ranges_held: rows(info.range_holders),
        ranges_queued: rows(info.range_queue),
    }
}

/// `dir` or `file`.
pub fn kind(s: &Stat) -> &'static str {
    if s.is_dir { "dir" } else { "file" }
}

/// One name in `shoal ls --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryReport {
    /// The full path.
    pub path: String,
    pub name: String,
    /// `dir` or `file`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub size: u64,
    pub replication: u32,
    pub mtime_ms: u64,
    pub inode: u64,
}

impl EntryReport {
    /// The entry `e`, found at `path`.
    pub fn new(path: String, e: &DirEntry) -> EntryReport {
        EntryReport {
            path,
            name: e.name.clone(),
            kind: kind(&e.stat),
            size: e.stat.size,
            replication: e.stat.replication,
            mtime_ms: e.stat.mtime_ms,
            inode: e.stat.inode,
        }
    }
}

/// `dir/name`, with one slash between them.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") }
}

/// One level of `shoal ls --json PATH`: a directory's entries, or a file
/// itself, sorted by path.
pub async fn list(client: &Client, path: &str) -> Result<Vec<EntryReport>> {
    let top = client.stat(path).await?;
    if !top.is_dir {
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        return Ok(vec![EntryReport::new(path.to_string(), &DirEntry { name, stat: top })]);
    }
    let mut rows: Vec<EntryReport> =
        client.list(path).await?.iter().map(|e| EntryReport::new(join(path, &e.name), e)).collect();
    rows.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(rows)
}

/// `shoal stat --json PATH`: attributes and where each chunk lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatReport {
    /// The path in normal form (as given when it does not parse).
    pub path: String,
    /// `dir` or `file`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub inode: u64,
    pub size: u64,
    /// Permission bits, in octal.
    pub mode: String,
    pub mtime_ms: u64,
    pub replication: u32,
    pub chunk_size: u64,
    pub chunks: Vec<ChunkReport>,
}

/// Where one chunk of a file lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkReport {
    pub index: u64,
    pub id: u64,
    /// The committed version.
    pub version: u64,
    /// Chunk-server addresses, in write-chain order.
    pub replicas: Vec<String>,
}

impl From<&ChunkInfo> for ChunkReport {
    fn from(c: &ChunkInfo) -> Self {
        ChunkReport { index: c.index, id: c.id, version: c.version, replicas: c.replicas.clone() }
    }
}

/// A file's or directory's attributes and chunk locations.
pub async fn stat(client: &Client, path: &str) -> Result<StatReport> {
    let (s, chunks) = client.chunks(path).await?;
    Ok(StatReport {
        path: shoal_core::NormalPath::parse(path).map(|p| p.to_string()).unwrap_or_else(|_| path.to_string()),
        kind: kind(&s),
        inode: s.inode,
        size: s.size,
        mode: format!("{:o}", s.mode),
        mtime_ms: s.mtime_ms,
        replication: s.replication,
        chunk_size: s.chunk_size,
        chunks: chunks.iter().map(ChunkReport::from).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, role: &str, applied: Option<u64>) -> MetaNodeReport {
        MetaNodeReport {
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
        let g = MetaGroupReport {
            leader_id: Some(2),
            nodes: vec![node(1, "follower", Some(90)), node(2, "leader", Some(100)), node(3, "unreachable", None)],
        };
        assert_eq!(g.leader().map(|l| l.addr.as_str()), Some("10.0.0.2:7100"));
        let lags: Vec<Option<u64>> = g.nodes.iter().map(|n| g.lag(n)).collect();
        assert_eq!(lags, [Some(10), Some(0), None]);
        let leaderless =
            MetaGroupReport { leader_id: None, nodes: vec![node(1, "candidate", Some(7)), node(2, "x", Some(9))] };
        assert!(leaderless.leader().is_none());
        assert_eq!(leaderless.lag(&leaderless.nodes[0]), Some(2));
    }

    #[test]
    fn unreachable_nodes_serialize_without_the_fields_they_lack() {
        let mut n = node(1, "unreachable", None);
        n.error = Some("refused".into());
        let v = serde_json::to_value(&n).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"id": null, "addr": "10.0.0.1:7100", "role": "unreachable", "error": "refused"})
        );
        let mut ok = node(2, "leader", Some(5));
        ok.state_digest = Some(format!("{:08x}", 0xab));
        let v = serde_json::to_value(&ok).unwrap();
        assert_eq!(v["state_digest"], "000000ab");
        assert_eq!(v["last_applied"], 5);
        assert!(v.get("error").is_none());
    }
}
