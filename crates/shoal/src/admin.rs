//! `shoal admin`: the state of the meta group and of the chunk servers.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use shoal_client::Client;

use crate::cli::AdminCommand;

/// How long `admin status` waits for each meta node.
const NODE_STATUS_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(client: Client, command: AdminCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::Status { json } => status(&client, json).await,
        AdminCommand::Nodes { json } => nodes(&client, json).await,
    }
}

/// Asks every meta node for its own role, so a dead node shows as unreachable.
async fn status(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    let mut leader = None;
    for addr in client.meta_addrs() {
        match client.meta_node_status(addr, NODE_STATUS_TIMEOUT).await {
            Ok(reply) => {
                let me = reply.nodes.iter().find(|n| n.id == reply.self_id);
                let role = me.map_or("unknown".to_string(), |n| n.role.clone());
                if role == "leader" {
                    leader = Some(reply.self_id);
                }
                rows.push(json!({"id": reply.self_id, "addr": addr, "role": role,
                                 "term": me.map_or(0, |n| n.term), "last_applied": me.map_or(0, |n| n.last_applied)}));
            }
            Err(e) => rows.push(json!({"id": null, "addr": addr, "role": "unreachable", "error": e.to_string()})),
        }
    }
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&json!({"leader_id": leader, "nodes": rows}))?)?;
    } else {
        writeln!(out, "{:<4} {:<22} {:<12} {:>6} {:>12}", "ID", "ADDRESS", "ROLE", "TERM", "APPLIED")?;
        for r in &rows {
            let id = r["id"].as_u64().map_or("-".to_string(), |i| i.to_string());
            writeln!(
                out,
                "{:<4} {:<22} {:<12} {:>6} {:>12}",
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

async fn nodes(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let servers = client.chunk_servers().await?;
    let mut out = std::io::stdout().lock();
    if as_json {
        let items: Vec<_> = servers
            .iter()
            .map(|s| {
                json!({"id": s.id, "addr": s.addr, "state": s.state, "used_bytes": s.used_bytes,
                       "capacity_bytes": s.capacity_bytes, "chunk_count": s.chunk_count,
                       "last_heartbeat_ms_ago": (s.last_heartbeat_ms_ago != u64::MAX).then_some(s.last_heartbeat_ms_ago)})
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<22} {:<6} {:>12} {:>12} {:>8} {:>10}",
        "ADDRESS", "STATE", "USED", "CAPACITY", "CHUNKS", "HEARD"
    )?;
    for s in &servers {
        let heard = if s.last_heartbeat_ms_ago == u64::MAX {
            "never".into()
        } else {
            format!("{}ms ago", s.last_heartbeat_ms_ago)
        };
        writeln!(
            out,
            "{:<22} {:<6} {:>12} {:>12} {:>8} {:>10}",
            s.addr,
            s.state,
            shoal_core::units::format_size(s.used_bytes),
            shoal_core::units::format_size(s.capacity_bytes),
            s.chunk_count,
            heard
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
