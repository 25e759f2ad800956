//! `shoal admin`: the state of the meta group and of the chunk servers,
//! changes to the meta group's membership, and the health of the data: fsck,
//! decommissioning, rebalancing, and pausing repair.
//!
//! What they print comes from `shoal_client::report`, which the HTTP API
//! serves too, so `--json` and the API give the same fields.
//!
//! `fsck` exits 0 only when every chunk has its factor of good replicas and
//! none is missing or corrupt; 1 otherwise (or when it cannot tell).
//!
//! `top` ([`top`]) renders the same data live, through [`overview`].

mod overview;
mod top;

use std::io::Write;
use std::process::ExitCode;

use shoal_client::{Client, report};

use crate::cli::{AdminCommand, MetaCommand, RepairCommand};

pub async fn run(client: Client, command: AdminCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminCommand::Status { json, digest } => status(&client, json, digest).await,
        AdminCommand::Nodes { json } => nodes(&client, json).await,
        AdminCommand::Locks { json, path } => locks(&client, &path, json).await,
        AdminCommand::Fsck { json } => fsck(&client, json).await,
        AdminCommand::Top { interval, once } => top::run(&client, interval, once).await,
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
    let group = report::meta_group(client, digest).await;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&group)?)?;
    } else {
        let digest_head = if digest { " DIGEST" } else { "" };
        writeln!(out, "{:<4} {:<22} {:<12} {:>6} {:>12}{digest_head}", "ID", "ADDRESS", "ROLE", "TERM", "APPLIED")?;
        let or_dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        for r in &group.nodes {
            let digest = r.state_digest.as_ref().map_or(String::new(), |d| format!(" {d}"));
            writeln!(
                out,
                "{:<4} {:<22} {:<12} {:>6} {:>12}{digest}",
                or_dash(r.id),
                r.addr,
                r.role,
                or_dash(r.term),
                or_dash(r.last_applied)
            )?;
        }
    }
    Ok(if group.leader_id.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The holders of PATH's lock and its queue, in grant order.
async fn locks(client: &Client, path: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let info = report::locks(client, path).await?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "{:<8} {:<8} {:<10} {:>8} {:>8}  BYTES", "STATE", "SESSION", "MODE", "TICKET", "TOKEN")?;
    let all = [
        ("holds", &info.holders),
        ("waits", &info.queue),
        ("holds", &info.ranges_held),
        ("waits", &info.ranges_queued),
    ];
    for (state, entries) in all {
        for e in entries.iter() {
            let token = if e.token == 0 { "-".to_string() } else { e.token.to_string() };
            let bytes = match e.bytes {
                None => "all (whole-path lock)".to_string(),
                Some([start, end]) if end >= i64::MAX as u64 => format!("{start}-"),
                Some([start, end]) => format!("{start}-{end}"),
            };
            writeln!(out, "{state:<8} {:<8} {:<10} {:>8} {:>8}  {bytes}", e.session, e.mode, e.ticket, token)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn fsck(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let r = report::fsck(client).await?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?;
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
        writeln!(out, "status: {}", if r.healthy { "HEALTHY" } else { "UNHEALTHY" })?;
    }
    Ok(if r.healthy { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

async fn nodes(client: &Client, as_json: bool) -> anyhow::Result<ExitCode> {
    let servers = report::chunk_servers(client).await?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&servers)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<22} {:<8} {:>12} {:>12} {:>8} {:>8} {:>10}",
        "ADDRESS", "STATE", "USED", "CAPACITY", "CHUNKS", "LISTED", "HEARD"
    )?;
    for s in &servers {
        let heard = s.last_heartbeat_ms_ago.map_or("never".into(), |ms| format!("{ms}ms ago"));
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
