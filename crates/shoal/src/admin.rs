//! `shoal admin`: the state of the meta group and of the chunk servers,
//! changes to the meta group's membership, and the health of the data: fsck,
//! decommissioning, rebalancing, and pausing repair.
//!
//! `fsck` exits 0 only when every chunk has its factor of good replicas and
//! none is missing or corrupt; 1 otherwise (or when it cannot tell).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use shoal_client::Client;

use crate::cli::{AdminCommand, MetaCommand, RepairCommand};

/// How long `admin status` waits for each meta node.
const NODE_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(client: Client, command: AdminCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::Status { json, digest } => status(&client, json, digest).await,
        AdminCommand::Nodes { json } => nodes(&client, json).await,
        AdminCommand::Locks { json, path } => locks(&client, &path, json).await,
        AdminCommand::Fsck { json } => fsck(&client, json).await,
        AdminCommand::Decommission { cancel, addr } => {
            let s = client.decommission(&addr, cancel).await?;
            match cancel {
                true => println!("{addr}: no longer draining ({})", s.state),
                false => println!(
                    "{addr}: draining; {} listed replicas to move (watch `shoal admin nodes` until it lists none)",
                    s.listed_chunks
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Rebalance => {
            let r = client.rebalance().await?;
            println!(
                "rebalance: {} replica moves planned ({}); they run in the background",
                r.moves,
                shoal_core::units::format_size(r.bytes)
            );
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Repair { command } => {
            let paused = matches!(command, RepairCommand::Pause);
            client.set_repair_paused(paused).await?;
            println!("repair {}", if paused { "paused" } else { "resumed" });
            Ok(ExitCode::SUCCESS)
        }
        AdminCommand::Meta { command } => {
            let reply = match command {
                MetaCommand::Add { id, addr } => client.add_meta(id, &addr).await?,
                MetaCommand::Remove { id } => client.remove_meta(id).await?,
            };
            let members: Vec<String> = reply.nodes.iter().map(|n| format!("{}={}", n.id, n.addr)).collect();
            println!("meta group: {}", members.join(","));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Asks every meta node for its own role, so a dead node shows as unreachable.
/// The nodes are those given with `--meta` plus every member the group knows.
async fn status(client: &Client, as_json: bool, digest: bool) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let mut leader = None;
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
                    leader = Some(reply.self_id);
                }
                let mut row = json!({"id": reply.self_id, "addr": addr, "role": role,
                                     "term": me.map_or(0, |n| n.term), "last_applied": reply.applied_index});
                if digest {
                    row["state_digest"] = json!(format!("{:08x}", reply.state_digest));
                }
                rows.push(row);
            }
            Err(e) => rows.push(json!({"id": null, "addr": addr, "role": "unreachable", "error": e.to_string()})),
        }
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&json!({"leader_id": leader, "nodes": rows}))?)?;
    } else {
        let digest_head = if digest { " DIGEST" } else { "" };
        writeln!(out, "{:<4} {:<22} {:<12} {:>6} {:>12}{digest_head}", "ID", "ADDRESS", "ROLE", "TERM", "APPLIED")?;
        for r in &rows {
            let id = r["id"].as_u64().map_or("-".to_string(), |i| i.to_string());
            let digest = r["state_digest"].as_str().map_or(String::new(), |d| format!(" {d}"));
            writeln!(
                out,
                "{:<4} {:<22} {:<12} {:>6} {:>12}{digest}",
                id,
                r["addr"].as_str().unwrap_or(""),
                r["role"].as_str().unwrap_or(""),
                r["term"].as_u64().map_or("-".into(), |t| t.to_string()),
                r["last_applied"].as_u64().map_or("-".into(), |t| t.to_string())
            )?;
        }
    }
    Ok(if leader.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The holders of PATH's lock and its queue, in grant order.
async fn locks(client: &Client, path: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let info = client.lock_info(path).await?;
    let mode = |shared: bool| if shared { "shared" } else { "exclusive" };
    let rows = |entries: &[shoal_client::LockEntry]| -> Vec<serde_json::Value> {
        entries
            .iter()
            .map(|e| json!({"session": e.session, "mode": mode(e.shared), "token": e.token, "ticket": e.ticket}))
            .collect()
    };
    let mut out = std::io::stdout().lock();
    if as_json {
        let v = json!({"path": path, "holders": rows(&info.holders), "queue": rows(&info.queue)});
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{:<8} {:<8} {:<10} {:>8} {:>8}", "STATE", "SESSION", "MODE", "TICKET", "TOKEN")?;
    for (state, entries) in [("holds", &info.holders), ("waits", &info.queue)] {
        for e in entries.iter() {
            let token = if e.token == 0 { "-".to_string() } else { e.token.to_string() };
            writeln!(out, "{state:<8} {:<8} {:<10} {:>8} {:>8}", e.session, mode(e.shared), e.ticket, token)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn fsck(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let r = client.fsck().await?;
    let healthy = r.under_replicated == 0 && r.missing == 0 && r.corrupt == 0;
    let mut out = std::io::stdout().lock();
    let problems: Vec<serde_json::Value> = r
        .problems
        .iter()
        .map(|p| {
            json!({"path": p.path, "chunk_index": p.chunk_index, "chunk_id": p.chunk_id, "state": p.state,
                   "good_replicas": p.good_replicas, "replication": p.replication})
        })
        .collect();
    if as_json {
        let v = json!({
            "healthy": healthy, "files": r.files, "chunks": r.chunks,
            "under_replicated": r.under_replicated, "missing": r.missing, "corrupt": r.corrupt,
            "over_replicated": r.over_replicated, "repairs_in_flight": r.repairs_in_flight,
            "moves_pending": r.moves_pending, "repair_paused": r.repair_paused,
            "dead_servers": r.dead_servers, "draining_servers": r.draining_servers,
            "problems": problems, "problems_left_out": r.problems_left_out,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        writeln!(out, "files {}, chunks {}", r.files, r.chunks)?;
        writeln!(
            out,
            "under-replicated {}, missing {}, corrupt {}, over-replicated {}",
            r.under_replicated, r.missing, r.corrupt, r.over_replicated
        )?;
        writeln!(
            out,
            "repairs in flight {}, moves pending {}, dead servers {}, draining servers {}{}",
            r.repairs_in_flight,
            r.moves_pending,
            r.dead_servers,
            r.draining_servers,
            if r.repair_paused { ", REPAIR PAUSED" } else { "" }
        )?;
        if !r.problems.is_empty() {
            writeln!(out, "{:<40} {:>6} {:>10} {:<17} {:>5}", "PATH", "CHUNK", "ID", "STATE", "GOOD")?;
            for p in &r.problems {
                let good = format!("{}/{}", p.good_replicas, p.replication);
                writeln!(out, "{:<40} {:>6} {:>10} {:<17} {:>5}", p.path, p.chunk_index, p.chunk_id, p.state, good)?;
            }
            if r.problems_left_out > 0 {
                writeln!(out, "(+{} more)", r.problems_left_out)?;
            }
        }
        writeln!(out, "status: {}", if healthy { "HEALTHY" } else { "UNHEALTHY" })?;
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn nodes(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let servers = client.chunk_servers().await?;
    let mut out = std::io::stdout().lock();
    if as_json {
        let items: Vec<_> = servers
            .iter()
            .map(|s| {
                json!({"id": s.id, "addr": s.addr, "state": s.state, "used_bytes": s.used_bytes,
                       "capacity_bytes": s.capacity_bytes, "chunk_count": s.chunk_count,
                       "listed_chunks": s.listed_chunks, "draining": s.draining,
                       "last_heartbeat_ms_ago": (s.last_heartbeat_ms_ago != u64::MAX).then_some(s.last_heartbeat_ms_ago)})
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<22} {:<8} {:>12} {:>12} {:>8} {:>8} {:>10}",
        "ADDRESS", "STATE", "USED", "CAPACITY", "CHUNKS", "LISTED", "HEARD"
    )?;
    for s in &servers {
        let heard = if s.last_heartbeat_ms_ago == u64::MAX {
            "never".into()
        } else {
            format!("{}ms ago", s.last_heartbeat_ms_ago)
        };
        writeln!(
            out,
            "{:<22} {:<8} {:>12} {:>12} {:>8} {:>8} {:>10}",
            s.addr,
            s.state,
            shoal_core::units::format_size(s.used_bytes),
            shoal_core::units::format_size(s.capacity_bytes),
            s.chunk_count,
            s.listed_chunks,
            heard
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
