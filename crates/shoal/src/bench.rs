//! `shoal bench`: throughput and latency of a running cluster, measured the
//! same way every time.
//!
//! Workloads: `seq-write` and `seq-read` (one large file, one client),
//! `small-write` and `small-read` (COUNT files of SIZE bytes over CLIENTS
//! concurrent clients), `meta` (mkdir, stat, ls, rename, rm) and `lock`
//! (CLIENTS sessions take and release one exclusive lock COUNT times in all;
//! the latency is acquire to grant, so with one client it is the uncontended
//! grant latency and with more the wait in the queue), all against
//! a running cluster; and `failover` (see [`failover`]), which starts its own
//! cluster to kill its meta leader again and again. Each prints a table, or
//! one JSON object with `--json` that always has `ops_per_sec` and
//! `mb_per_sec`. Files live under `--dir` and are removed afterwards unless
//! `--keep`.

pub mod failover;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use serde_json::json;
use shoal_client::Client;

use crate::cli::size;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    SeqWrite,
    SeqRead,
    SmallWrite,
    SmallRead,
    Meta,
    Lock,
    Failover,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    pub workload: Workload,
    /// Concurrent clients (tasks, each with its own connection) [default: 1; 4 for failover].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub clients: Option<u32>,
    /// Files (small-*) or operation rounds (meta).
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
    /// Bytes per file: 4KiB for small-*, 1GiB for seq-*.
    #[arg(long, value_parser = size)]
    pub size: Option<u64>,
    /// Replication of the files written (default: the cluster's).
    #[arg(long)]
    pub replication: Option<u32>,
    /// Remote directory for the benchmark's files.
    #[arg(long, default_value = "/.bench")]
    pub dir: String,
    /// Leave the files in place (seq-read and small-read reuse them); failover
    /// keeps its cluster's temporary directory.
    #[arg(long)]
    pub keep: bool,
    #[arg(long)]
    pub json: bool,
    /// failover: leader kills measured. The p99 is by nearest rank, so with
    /// fewer than 100 kills it is the max.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub kills: u32,
    /// failover: where the bench's own cluster keeps its data and logs
    /// (default: a temporary directory, removed afterwards unless --keep).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl BenchArgs {
    pub fn clients(&self) -> u32 {
        self.clients.unwrap_or(if self.workload == Workload::Failover { 4 } else { 1 })
    }
}

/// What one run measured.
struct Outcome {
    ops: u64,
    bytes: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len).map(|i| ((i as u64).wrapping_mul(31).wrapping_add(seed) % 251) as u8).collect()
}

fn bar(total: u64) -> ProgressBar {
    if std::io::stderr().is_terminal() { ProgressBar::new(total) } else { ProgressBar::hidden() }
}

/// Runs a workload; all but failover against the cluster at `meta_addrs`, whose
/// calls may each retry for `timeout`.
pub async fn run(args: BenchArgs, meta_addrs: &[String], timeout: Duration) -> anyhow::Result<ExitCode> {
    if args.workload == Workload::Failover {
        // It starts, and kills, a cluster of its own.
        return failover::run(args, timeout).await;
    }
    let client = Client::connect_with_timeout(meta_addrs, timeout).await?;
    client.mkdir(&args.dir, true).await?;
    let outcome = match args.workload {
        Workload::SeqWrite => seq_write(&client, &args).await?,
        Workload::SeqRead => seq_read(&client, &args).await?,
        Workload::SmallWrite => small(&client, &args, false).await?,
        Workload::SmallRead => small(&client, &args, true).await?,
        Workload::Meta => meta(&client, &args).await?,
        Workload::Lock => lock(&client, &args).await?,
        Workload::Failover => unreachable!("failover runs on its own cluster, above"),
    };
    if !args.keep {
        client.remove(&args.dir, true).await.ok();
    }
    report(&args, outcome)?;
    Ok(ExitCode::SUCCESS)
}

fn report(args: &BenchArgs, mut o: Outcome) -> anyhow::Result<()> {
    o.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if o.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((p / 100.0) * (o.latencies_us.len() - 1) as f64).round() as usize;
        o.latencies_us[i] as f64 / 1000.0
    };
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let ops_per_sec = o.ops as f64 / secs;
    let mb_per_sec = o.bytes as f64 / secs / 1e6;
    let workload = args.workload.to_possible_value().expect("named").get_name().to_string();
    let v = json!({
        "workload": workload, "clients": args.clients(), "ops": o.ops, "bytes": o.bytes,
        "seconds": secs, "ops_per_sec": ops_per_sec, "mb_per_sec": mb_per_sec,
        "latency_ms": {"p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0), "max": pct(100.0)},
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "{:<12} {:>7} {:>9} {:>11} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "WORKLOAD", "CLIENTS", "OPS", "OPS/S", "MB/S", "P50 ms", "P90 ms", "P99 ms", "MAX ms"
        )?;
        writeln!(
            out,
            "{:<12} {:>7} {:>9} {:>11.1} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            workload,
            args.clients(),
            o.ops,
            ops_per_sec,
            mb_per_sec,
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(100.0)
        )?;
    }
    Ok(())
}

const SEQ_FILE: &str = "seq";

async fn seq_write(client: &Client, args: &BenchArgs) -> anyhow::Result<Outcome> {
    let total = args.size.unwrap_or(1 << 30);
    let path = format!("{}/{SEQ_FILE}", args.dir);
    client.remove(&path, false).await.ok();
    let mut f = client.create(&path, args.replication).await?;
    let piece = f.cached_stat().chunk_size.min(64 << 20);
    let data = pattern(piece as usize, 7);
    let progress = bar(total);
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut at = 0;
    while at < total {
        let n = (total - at).min(piece) as usize;
        let t = Instant::now();
        f.write_at(at, &data[..n]).await?;
        lat.push(t.elapsed().as_micros() as u64);
        at += n as u64;
        progress.inc(n as u64);
    }
    progress.finish_and_clear();
    Ok(Outcome { ops: lat.len() as u64, bytes: total, elapsed: start.elapsed(), latencies_us: lat })
}

async fn seq_read(client: &Client, args: &BenchArgs) -> anyhow::Result<Outcome> {
    let path = format!("{}/{SEQ_FILE}", args.dir);
    let want = args.size.unwrap_or(1 << 30);
    if client.stat(&path).await.map(|s| s.size != want).unwrap_or(true) {
        seq_write(client, args).await?;
    }
    let mut f = client.open(&path).await?;
    let total = f.cached_stat().size;
    let piece = 8 << 20;
    let progress = bar(total);
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut at = 0;
    while at < total {
        let t = Instant::now();
        let got = f.read_at(at, piece).await?;
        anyhow::ensure!(!got.is_empty(), "short read at {at} of {total}");
        lat.push(t.elapsed().as_micros() as u64);
        at += got.len() as u64;
        progress.inc(got.len() as u64);
    }
    progress.finish_and_clear();
    Ok(Outcome { ops: lat.len() as u64, bytes: total, elapsed: start.elapsed(), latencies_us: lat })
}

/// Runs `count` operations spread over `clients` tasks; `op(client, i)` does one.
async fn spread<F, Fut>(client: &Client, args: &BenchArgs, bytes_per_op: u64, op: F) -> anyhow::Result<Outcome>
where
    F: Fn(Client, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let progress = bar(args.count);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let meta: Vec<String> = client.meta_addrs().to_vec();
    for c in 0..u64::from(args.clients()) {
        let (op, progress, args) = (op.clone(), progress.clone(), args.clone());
        let client = Client::connect(&meta).await?;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while i < args.count {
                let t = Instant::now();
                op(client.clone(), i).await?;
                lat.push(t.elapsed().as_micros() as u64);
                progress.inc(1);
                i += u64::from(args.clients());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    progress.finish_and_clear();
    Ok(Outcome {
        ops: lat.len() as u64,
        bytes: lat.len() as u64 * bytes_per_op,
        elapsed: start.elapsed(),
        latencies_us: lat,
    })
}

async fn small(client: &Client, args: &BenchArgs, read: bool) -> anyhow::Result<Outcome> {
    let size = args.size.unwrap_or(4096);
    let dir = format!("{}/small", args.dir);
    let data = Arc::new(pattern(size as usize, 3));
    let replication = args.replication;
    if read {
        let present = client.list(&dir).await.map(|l| l.len() as u64).unwrap_or(0);
        if present < args.count {
            let write_args = BenchArgs { keep: true, ..args.clone() };
            Box::pin(small(client, &write_args, false)).await?;
        }
        return spread(client, args, size, move |c, i| {
            let path = format!("{dir}/f{i}");
            async move {
                let mut f = c.open(&path).await?;
                let got = f.read_at(0, size).await?;
                anyhow::ensure!(got.len() as u64 == size, "{path}: read {} of {size} bytes", got.len());
                Ok(())
            }
        })
        .await;
    }
    client.remove(&dir, true).await.ok();
    client.mkdir(&dir, true).await?;
    spread(client, args, size, move |c, i| {
        let (path, data) = (format!("{dir}/f{i}"), data.clone());
        async move {
            let mut f = c.create(&path, replication).await?;
            f.write_at(0, &data).await?;
            Ok(())
        }
    })
    .await
}

async fn meta(client: &Client, args: &BenchArgs) -> anyhow::Result<Outcome> {
    let dir = format!("{}/meta", args.dir);
    client.remove(&dir, true).await.ok();
    client.mkdir(&dir, true).await?;
    let mut o = spread(client, args, 0, move |c, i| {
        let (a, b) = (format!("{dir}/d{i}"), format!("{dir}/e{i}"));
        let dir = dir.clone();
        async move {
            c.mkdir(&a, false).await?;
            c.stat(&a).await?;
            c.list(&dir).await?;
            c.rename(&a, &b).await?;
            c.remove(&b, false).await?;
            Ok(())
        }
    })
    .await?;
    // Each round is five operations.
    o.ops *= 5;
    Ok(o)
}

async fn lock(client: &Client, args: &BenchArgs) -> anyhow::Result<Outcome> {
    let path = format!("{}/lock", args.dir);
    let clients = u64::from(args.clients());
    let progress = bar(args.count);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let client = Client::connect(client.meta_addrs()).await?;
        let (path, progress) = (path.clone(), progress.clone());
        let rounds = args.count / clients + u64::from(c < args.count % clients);
        tasks.push(tokio::spawn(async move {
            let session = client.open_session(shoal_client::DEFAULT_SESSION_TTL).await?;
            let mut lat = Vec::new();
            for _ in 0..rounds {
                let t = Instant::now();
                let held = session.lock(&path, false, None).await?;
                lat.push(t.elapsed().as_micros() as u64);
                session.unlock(&held).await?;
                progress.inc(1);
            }
            session.close().await?;
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    progress.finish_and_clear();
    Ok(Outcome { ops: lat.len() as u64, bytes: 0, elapsed: start.elapsed(), latencies_us: lat })
}
