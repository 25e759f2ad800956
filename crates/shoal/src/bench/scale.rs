//! `shoal bench scale`: how Shoal scales, the way the prototype claims it
//! does: response time grows gently with more clients, and throughput grows
//! with more servers.
//!
//! For 1 to 4 chunk servers (replication 2, or 1 with a single server) it
//! starts a throw-away local cluster (3 meta nodes), then runs `small-write`
//! and `small-read` with 1, 2, 4, 8 and 16 clients, COUNT files each time.
//! It prints one row per point and the two curves: latency (p50) against
//! clients on the largest cluster, and throughput against servers at the most
//! clients. `--json` prints every point.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use shoal_client::Client;

use super::{Options, Workload, small, summary};
use crate::local::{LocalCluster, Spec};

const META_NODES: usize = 3;
const SERVERS: [usize; 4] = [1, 2, 3, 4];
const CLIENTS: [u32; 5] = [1, 2, 4, 8, 16];
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One measured point.
struct Point {
    servers: usize,
    clients: u32,
    write: serde_json::Value,
    read: serde_json::Value,
}

pub async fn run(args: Options, call_timeout: Duration) -> anyhow::Result<ExitCode> {
    let tmp = tempfile::Builder::new().prefix("shoal-scale-").tempdir().context("creating a temporary directory")?;
    let mut points = Vec::new();
    for servers in SERVERS {
        let mut spec = Spec {
            dir: tmp.path().join(format!("servers-{servers}")),
            meta_addrs: Vec::new(),
            chunk_addrs: Vec::new(),
            meta_http_addrs: Vec::new(),
            chunk_http_addrs: Vec::new(),
            chunk_size_bytes: shoal_core::DEFAULT_CHUNK_SIZE_BYTES,
            replication: servers.min(2) as u32,
            dead_after: Duration::from_secs(10),
            meta_flags: Vec::new(),
            chunk_flags: Vec::new(),
            tls: true,
        };
        let mut cluster = LocalCluster::start_on_free_ports(&mut spec, META_NODES, servers, READY_TIMEOUT).await?;
        let client = Client::connect_with(&spec.meta_addrs, call_timeout, cluster.transport.clone()).await?;
        for clients in CLIENTS {
            eprintln!("scale: {servers} chunk server(s), {clients} client(s)");
            let run = Options { clients, keep: true, ..args.clone() };
            client.mkdir(&run.dir, true).await?;
            let w = small(&client, &Options { workload: Workload::SmallWrite, ..run.clone() }, false).await?;
            let r = small(&client, &Options { workload: Workload::SmallRead, ..run.clone() }, true).await?;
            points.push(Point {
                servers,
                clients,
                write: summary(&Options { workload: Workload::SmallWrite, ..run.clone() }, &w),
                read: summary(&Options { workload: Workload::SmallRead, ..run }, &r),
            });
        }
        cluster.stop();
    }
    print(&args, &points);
    Ok(ExitCode::SUCCESS)
}

fn print(args: &Options, points: &[Point]) {
    let ops = |v: &serde_json::Value| v["ops_per_sec"].as_f64().unwrap_or(0.0);
    let p50 = |v: &serde_json::Value| v["latency_ms"]["p50"].as_f64().unwrap_or(0.0);
    if args.json {
        let all: Vec<_> = points
            .iter()
            .map(|p| json!({"servers": p.servers, "clients": p.clients, "small_write": p.write, "small_read": p.read}))
            .collect();
        let best = points.iter().map(|p| ops(&p.write) + ops(&p.read)).fold(0.0, f64::max);
        println!("{}", json!({"workload": "scale", "points": all, "ops_per_sec": best, "mb_per_sec": 0.0}));
        return;
    }
    println!(
        "{:>7} {:>7} {:>12} {:>10} {:>12} {:>10}",
        "SERVERS", "CLIENTS", "WRITE OPS/S", "WRITE P50", "READ OPS/S", "READ P50"
    );
    for p in points {
        println!(
            "{:>7} {:>7} {:>12.1} {:>8.2}ms {:>12.1} {:>8.2}ms",
            p.servers,
            p.clients,
            ops(&p.write),
            p50(&p.write),
            ops(&p.read),
            p50(&p.read)
        );
    }
    let most_servers = SERVERS[SERVERS.len() - 1];
    let most_clients = CLIENTS[CLIENTS.len() - 1];
    println!("\nlatency against clients ({most_servers} servers): p50 write / read in ms");
    for p in points.iter().filter(|p| p.servers == most_servers) {
        println!("  {:>2} clients: {:>8.2} / {:>8.2}", p.clients, p50(&p.write), p50(&p.read));
    }
    println!("\nthroughput against servers ({most_clients} clients): write / read ops/s");
    for p in points.iter().filter(|p| p.clients == most_clients) {
        println!("  {} servers: {:>8.1} / {:>8.1}", p.servers, ops(&p.write), ops(&p.read));
    }
}
