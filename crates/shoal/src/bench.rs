//! `shoal bench`: throughput and latency of a running cluster, measured the
//! same way every time.
//!
//! Workloads: `seq-write` and `seq-read` (one large file, one client),
//! `small-write` and `small-read` (COUNT files of SIZE bytes over CLIENTS
//! concurrent clients), `meta` (mkdir, stat, ls, rename, rm) and `lock`
//! (CLIENTS sessions take and release one exclusive lock COUNT times in all;
//! the latency is acquire to grant, so with one client it is the uncontended
//! grant latency and with more the wait in the queue), `rand-read` (COUNT
//! reads of SIZE bytes, 4 KiB by default, at random aligned offsets of one
//! file of `--span` bytes, 256 MiB by default) and `mixed` (COUNT operations on COUNT small files: half
//! reads, a quarter overwrites, then stats and listings), all against a
//! running cluster; `meta-scale` (see [`meta_scale`]: a namespace of
//! `--files` files, and what it costs the meta nodes), also against a
//! running cluster; and `failover` (see [`failover`]) and `scale` (see
//! [`scale`]), which start clusters of their own. Each prints a table, or one
//! JSON object with `--json` that always has `ops_per_sec` and `mb_per_sec`.
//! Latency percentiles come from an HDR histogram (3 significant digits).
//! Files live under `--dir` and are removed afterwards unless `--keep`.

pub mod failover;
pub mod meta_scale;
pub mod scale;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use indicatif::ProgressBar;
use serde_json::json;
use shoal_client::Client;

/// The workloads. The enum derives `clap::ValueEnum` so the command line can
/// name them, and the JSON output uses the same names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    SeqWrite,
    SeqRead,
    SmallWrite,
    SmallRead,
    Meta,
    MetaRead,
    Lock,
    RandRead,
    Mixed,
    Failover,
    Scale,
    MetaScale,
}

impl Workload {
    /// Its name on the command line and in the JSON output (`small-write`).
    pub fn name(self) -> String {
        self.to_possible_value().expect("every workload is named").get_name().to_string()
    }

    /// Whether it runs on a cluster it starts itself (with its own
    /// certificates) rather than on the one `--meta` names.
    pub fn starts_its_own_cluster(self) -> bool {
        matches!(self, Workload::Failover | Workload::Scale)
    }
}

/// What to run, as plain data: `cli` builds it from the command line (and
/// `scale` from its own plan), so this module knows nothing of argument parsing.
#[derive(Debug, Clone)]
pub struct Options {
    pub workload: Workload,
    /// Concurrent clients (tasks, each with its own connection).
    pub clients: u32,
    /// Files (small-*) or operation rounds (meta, meta-read).
    pub count: u64,
    /// Bytes per file or read (None: the workload's default).
    pub size: Option<u64>,
    /// Replication of the files written (None: the cluster's).
    pub replication: Option<u32>,
    /// Remote directory for the benchmark's files.
    pub dir: String,
    /// Leave the files in place; failover keeps its cluster's directory.
    pub keep: bool,
    pub json: bool,
    /// rand-read: size of the file the reads are spread over.
    pub span_bytes: u64,
    /// failover: leader kills measured.
    pub kills: u32,
    /// failover: where its own cluster keeps data and logs (None: a temporary directory).
    pub data_dir: Option<PathBuf>,
    /// meta-scale: files in the namespace it builds; failover: files made
    /// before the first kill (0: none).
    pub files: u64,
    /// meta-scale: also kill a follower meta node and time its restart.
    pub restart: bool,
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
pub async fn run(args: Options, meta_addrs: &[String], timeout: Duration) -> anyhow::Result<ExitCode> {
    match args.workload {
        // They start (and kill) clusters of their own.
        Workload::Failover => return failover::run(args, timeout).await,
        Workload::Scale => return scale::run(args, timeout).await,
        _ => {}
    }
    let client = Client::connect_with_timeout(meta_addrs, timeout).await?;
    client.mkdir(&args.dir, true).await?;
    if args.workload == Workload::MetaScale {
        // Its report is its own; it removes its files unless --keep.
        meta_scale::run(&client, &args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let outcome = match args.workload {
        Workload::SeqWrite => seq_write(&client, &args).await?,
        Workload::SeqRead => seq_read(&client, &args).await?,
        Workload::SmallWrite => small(&client, &args, false).await?,
        Workload::SmallRead => small(&client, &args, true).await?,
        Workload::Meta => meta(&client, &args).await?,
        Workload::MetaRead => meta_read(&client, &args).await?,
        Workload::Lock => lock(&client, &args).await?,
        Workload::RandRead => rand_read(&client, &args).await?,
        Workload::Mixed => mixed(&client, &args).await?,
        Workload::Failover | Workload::Scale => unreachable!("they run on clusters of their own, above"),
        Workload::MetaScale => unreachable!("it reports on its own, above"),
    };
    if !args.keep {
        client.remove(&args.dir, true).await.ok();
    }
    report(&args, outcome)?;
    Ok(ExitCode::SUCCESS)
}

/// Latency percentiles (ms) of samples in microseconds, from an HDR histogram.
pub struct Percentiles {
    hist: hdrhistogram::Histogram<u64>,
}

impl Percentiles {
    pub fn of(samples_us: &[u64]) -> Percentiles {
        // 1 µs to an hour, 3 significant digits.
        let mut hist = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        for s in samples_us {
            hist.saturating_record((*s).max(1));
        }
        Percentiles { hist }
    }

    /// The `p`th percentile in ms (0 with no samples); 100 is the max.
    pub fn ms(&self, p: f64) -> f64 {
        match self.hist.len() {
            0 => 0.0,
            _ if p >= 100.0 => self.hist.max() as f64 / 1000.0,
            _ => self.hist.value_at_quantile(p / 100.0) as f64 / 1000.0,
        }
    }
}

/// The figures of one run: ops/s, MB/s and latency, as JSON.
fn summary(args: &Options, o: &Outcome) -> serde_json::Value {
    let pct = Percentiles::of(&o.latencies_us);
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    json!({
        "workload": args.workload.name(), "clients": args.clients, "ops": o.ops, "bytes": o.bytes,
        "seconds": secs, "ops_per_sec": o.ops as f64 / secs, "mb_per_sec": o.bytes as f64 / secs / 1e6,
        "latency_ms": {"p50": pct.ms(50.0), "p90": pct.ms(90.0), "p99": pct.ms(99.0), "max": pct.ms(100.0)},
    })
}

fn report(args: &Options, o: Outcome) -> anyhow::Result<()> {
    let v = summary(args, &o);
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let lat = |k: &str| v["latency_ms"][k].as_f64().unwrap_or(0.0);
    writeln!(
        out,
        "{:<12} {:>7} {:>9} {:>11} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "WORKLOAD", "CLIENTS", "OPS", "OPS/S", "MB/S", "P50 ms", "P90 ms", "P99 ms", "MAX ms"
    )?;
    writeln!(
        out,
        "{:<12} {:>7} {:>9} {:>11.1} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
        v["workload"].as_str().unwrap_or(""),
        args.clients,
        o.ops,
        v["ops_per_sec"].as_f64().unwrap_or(0.0),
        v["mb_per_sec"].as_f64().unwrap_or(0.0),
        lat("p50"),
        lat("p90"),
        lat("p99"),
        lat("max")
    )?;
    Ok(())
}

const SEQ_FILE: &str = "seq";

async fn seq_write(client: &Client, args: &Options) -> anyhow::Result<Outcome> {
    let total = args.size.unwrap_or(1 << 30);
    let path = format!("{}/{SEQ_FILE}", args.dir);
    client.remove(&path, false).await.ok();
    let mut f = client.create_for_writing(&path, args.replication).await?;
    // Two chunks per call, as `put` does: they are written side by side.
    let piece = (f.cached_stat().chunk_size * 2).min(128 << 20);
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

async fn seq_read(client: &Client, args: &Options) -> anyhow::Result<Outcome> {
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
async fn spread<F, Fut>(client: &Client, args: &Options, bytes_per_op: u64, op: F) -> anyhow::Result<Outcome>
where
    F: Fn(Client, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    per_client(
        client,
        args,
        bytes_per_op,
        |_c: Client| async { Ok(()) },
        move |c, (), i, _roll| {
            let one = op(c, i);
            async move {
                one.await?;
                Ok(((), None))
            }
        },
    )
    .await
}

async fn small(client: &Client, args: &Options, read: bool) -> anyhow::Result<Outcome> {
    let size = args.size.unwrap_or(4096);
    let dir = format!("{}/small", args.dir);
    let data = shoal_client::Bytes::from(pattern(size as usize, 3));
    let replication = args.replication;
    if read {
        let present = client.list(&dir).await.map(|l| l.len() as u64).unwrap_or(0);
        if present < args.count {
            let write_args = Options { keep: true, ..args.clone() };
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
            c.write_new(&path, data, replication, None).await?;
            Ok(())
        }
    })
    .await
}

async fn meta(client: &Client, args: &Options) -> anyhow::Result<Outcome> {
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

/// Entries in the directory `meta-read` stats and lists.
const META_READ_ENTRIES: u64 = 100;

/// Namespace reads alone: each round stats one of [`META_READ_ENTRIES`]
/// files and lists their directory (two operations).
async fn meta_read(client: &Client, args: &Options) -> anyhow::Result<Outcome> {
    let dir = format!("{}/meta-read", args.dir);
    client.remove(&dir, true).await.ok();
    client.mkdir(&dir, true).await?;
    for i in 0..META_READ_ENTRIES {
        client.create(&format!("{dir}/f{i}"), args.replication).await?;
    }
    let mut o = spread(client, args, 0, move |c, i| {
        let (file, dir) = (format!("{dir}/f{}", i % META_READ_ENTRIES), dir.clone());
        async move {
            c.stat(&file).await?;
            let listed = c.list(&dir).await?;
            anyhow::ensure!(listed.len() as u64 == META_READ_ENTRIES, "listed {} entries", listed.len());
            Ok(())
        }
    })
    .await?;
    o.ops *= 2;
    Ok(o)
}

async fn lock(client: &Client, args: &Options) -> anyhow::Result<Outcome> {
    let path = format!("{}/lock", args.dir);
    per_client(
        client,
        args,
        0,
        |c: Client| async move { Ok(c.open_session(shoal_client::DEFAULT_SESSION_TTL).await?) },
        move |_c, session: shoal_client::Session, _i, _roll| {
            let path = path.clone();
            async move {
                // Only the wait for the grant counts; the release does not.
                let t = Instant::now();
                let held = session.lock(&path, false, None).await?;
                let waited = t.elapsed();
                session.unlock(&held).await?;
                Ok((session, Some(waited)))
            }
        },
    )
    .await
}

/// A small, fast, seeded generator for offsets and choices (xorshift64*).
struct Dice(u64);

impl Dice {
    fn new(seed: u64) -> Dice {
        Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Runs `count` operations over `clients` tasks, each with its own client and
/// state made once by `setup`. `op(client, state, i, roll)` does operation
/// number `i` (each number once; `roll` is a seeded random number for its
/// choices), hands the state back, and may say which part of it is its
/// latency (None: all of it).
async fn per_client<S, Setup, SetupFut, Op, OpFut>(
    client: &Client,
    args: &Options,
    bytes_per_op: u64,
    setup: Setup,
    op: Op,
) -> anyhow::Result<Outcome>
where
    S: Send + 'static,
    Setup: Fn(Client) -> SetupFut + Send + Sync + 'static,
    SetupFut: Future<Output = anyhow::Result<S>> + Send,
    Op: Fn(Client, S, u64, u64) -> OpFut + Send + Sync + 'static,
    OpFut: Future<Output = anyhow::Result<(S, Option<Duration>)>> + Send,
{
    let (setup, op) = (Arc::new(setup), Arc::new(op));
    let clients = u64::from(args.clients);
    let progress = bar(args.count);
    let mut tasks = Vec::new();
    let mut ready = Vec::new();
    for _ in 0..clients {
        // Its own connections, with the caller's timeout and identity.
        let client = client.reconnect().await?;
        ready.push((client.clone(), setup(client).await?));
    }
    let start = Instant::now();
    for (c, (client, mut state)) in ready.into_iter().enumerate() {
        let (op, progress, count) = (op.clone(), progress.clone(), args.count);
        tasks.push(tokio::spawn(async move {
            let mut dice = Dice::new(c as u64 + 1);
            let mut lat = Vec::new();
            for i in (c as u64..count).step_by(clients as usize) {
                let t = Instant::now();
                let (back, measured) = op(client.clone(), state, i, dice.below(u64::MAX)).await?;
                state = back;
                lat.push(measured.unwrap_or_else(|| t.elapsed()).as_micros() as u64);
                progress.inc(1);
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

async fn rand_read(client: &Client, args: &Options) -> anyhow::Result<Outcome> {
    let span = args.span_bytes.max(1);
    let size = args.size.unwrap_or(4096).clamp(1, span);
    let path = format!("{}/rand", args.dir);
    if client.stat(&path).await.map(|s| s.size != span).unwrap_or(true) {
        client.remove(&path, false).await.ok();
        let mut f = client.create_for_writing(&path, args.replication).await?;
        let piece = pattern((64 << 20).min(span) as usize, 11);
        let mut at = 0;
        while at < span {
            let n = (span - at).min(piece.len() as u64) as usize;
            f.write_at(at, &piece[..n]).await?;
            at += n as u64;
        }
    }
    let slots = span / size;
    let open_path = path.clone();
    per_client(
        client,
        args,
        size,
        move |c: Client| {
            let path = open_path.clone();
            async move { Ok(c.open(&path).await?) }
        },
        move |_c, mut f: shoal_client::File, _i, roll| {
            let at = roll % slots * size;
            async move {
                let got = f.read_at(at, size).await?;
                anyhow::ensure!(got.len() as u64 == size, "short read at {at}: {} of {size}", got.len());
                Ok((f, None))
            }
        },
    )
    .await
}

async fn mixed(client: &Client, args: &Options) -> anyhow::Result<Outcome> {
    let size = args.size.unwrap_or(4096);
    let dir = format!("{}/small", args.dir);
    let present = client.list(&dir).await.map(|l| l.len() as u64).unwrap_or(0);
    if present < args.count {
        let write_args = Options { keep: true, ..args.clone() };
        Box::pin(small(client, &write_args, false)).await?;
    }
    let data = Arc::new(pattern(size as usize, 5));
    let count = args.count;
    per_client(
        client,
        args,
        size,
        |_c: Client| async { Ok(()) },
        move |c, (), _i, roll| {
            let (dir, data) = (dir.clone(), data.clone());
            let (roll, i) = (roll % 100, (roll >> 8) % count.max(1));
            let path = format!("{dir}/f{i}");
            async move {
                match roll {
                    0..50 => {
                        c.open(&path).await?.read_at(0, size).await?;
                    }
                    50..75 => c.open(&path).await?.write_at(0, &data).await?,
                    75..90 => {
                        c.stat(&path).await?;
                    }
                    _ => {
                        c.list(&dir).await?;
                    }
                }
                Ok(((), None))
            }
        },
    )
    .await
}
