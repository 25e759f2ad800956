//! `shoal bench failover`: how long the namespace is unavailable after the
//! meta leader is SIGKILLed.
//!
//! The bench owns its cluster, since it must be able to kill its processes:
//! 3 meta nodes and 3 chunk servers, child processes on free loopback ports,
//! with their data and logs in a temporary directory (kept with `--keep` or
//! when the bench fails) or in `--data-dir`. CLIENTS tasks run a steady,
//! closed-loop workload of namespace calls only the leader answers: create an
//! empty file, stat it, remove it. Each call has the client's `--timeout`, and
//! the bench records when each one was invoked, when it ended, and whether it
//! succeeded.
//!
//! With `--files N`, N empty files are made first (as `meta-scale` makes
//! them, by [`BUILD_CLIENTS`] clients), so that the leader changes hands over
//! a namespace of that size; after the last round the bench checks that
//! every one of them is still there.
//!
//! Each of KILLS rounds:
//! 1. Find the leader: every meta node, asked directly, names the same one,
//!    and that node says it leads.
//! 2. SIGKILL it (at t_kill).
//! 3. Wait for the first call invoked after t_kill that succeeds. The
//!    **unavailability window** is its end minus t_kill. A call in flight at
//!    t_kill never counts, even once its retry succeeds, because the old
//!    leader may have answered it just before it died.
//! 4. The survivors must agree on a leader of a newer term. If they don't,
//!    the killed node had already lost the lead, so the round is not counted
//!    and is run again.
//! 5. Restart the killed node with its data, wait until all three agree on a
//!    leader, and let the workload run for [`SETTLE`].
//!
//! Every wait has a bound. When one runs out, the bench fails with an error.
//!
//! The figures are the min, median, p99 and max of the windows, by the
//! nearest-rank method: the smallest window with at least p% of the windows
//! at or below it. With fewer than 100 kills, the p99 is the max.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::ProgressStyle;
use serde_json::json;
use shoal_client::Client;

use super::Options;
use crate::local::{LocalCluster, Spec};

/// Meta nodes of the throw-away cluster (ids 1..=3; node index i has id i+1).
const META_NODES: usize = 3;
/// Chunk servers of the throw-away cluster (the workload writes no data, but
/// they follow every leader change like in a real cluster).
const CHUNK_NODES: usize = 3;
const REPLICATION: u32 = 2;
/// How long the fresh cluster may take to elect a leader and hear every chunk server.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest unavailability window before the bench gives up on a round.
const WINDOW_TIMEOUT: Duration = Duration::from_secs(60);
/// Clients that make the `--files` namespace before the first kill (many, so
/// that group commit puts many creates in each entry).
const BUILD_CLIENTS: u32 = 64;
/// How long the meta nodes may take to agree on a leader.
const AGREE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one meta node may take to answer a status call.
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// Steady workload before the first kill and after each recovery.
const SETTLE: Duration = Duration::from_secs(1);
/// How often the bench looks at the recorded calls.
const POLL_CALLS: Duration = Duration::from_millis(5);
/// How often the bench asks the meta nodes for their status while it waits.
const POLL_STATUS: Duration = Duration::from_millis(50);

/// One namespace call of the workload.
struct Call {
    invoked: Instant,
    ended: Instant,
    ok: bool,
}

/// Every call of the workload, in the order they ended.
#[derive(Default)]
struct CallLog {
    calls: Mutex<Vec<Call>>,
    first_error: Mutex<Option<String>>,
}

impl CallLog {
    /// Runs `call`, records it, and says whether it succeeded.
    async fn time<T, E: std::fmt::Display>(&self, call: impl Future<Output = Result<T, E>>) -> bool {
        let invoked = Instant::now();
        let result = call.await;
        if let Err(e) = &result {
            self.first_error.lock().expect("error lock").get_or_insert_with(|| e.to_string());
        }
        let mut calls = self.calls.lock().expect("call log lock");
        // The end is read under the lock, so the log is in order of `ended`.
        calls.push(Call { invoked, ended: Instant::now(), ok: result.is_ok() });
        calls.last().expect("just pushed").ok
    }

    fn len(&self) -> usize {
        self.calls.lock().expect("call log lock").len()
    }

    /// When the first successful call invoked after `after` ended, looking at
    /// the calls recorded from index `from` on.
    fn first_success_after(&self, from: usize, after: Instant) -> Option<Instant> {
        let calls = self.calls.lock().expect("call log lock");
        calls.get(from..)?.iter().find(|c| c.ok && c.invoked > after).map(|c| c.ended)
    }

    /// Successful and failed calls, and the latencies of the successful ones.
    fn summary(&self) -> (u64, u64, Vec<Duration>) {
        let calls = self.calls.lock().expect("call log lock");
        let latencies: Vec<Duration> = calls.iter().filter(|c| c.ok).map(|c| c.ended - c.invoked).collect();
        let ok = latencies.len() as u64;
        (ok, calls.len() as u64 - ok, latencies)
    }
}

/// What the bench measured.
struct Outcome {
    /// One per counted kill, in kill order.
    windows: Vec<Duration>,
    /// Rounds not counted because the killed node no longer led.
    discarded: u32,
    ok_calls: u64,
    failed_calls: u64,
    call_latencies: Vec<Duration>,
    first_error: Option<String>,
    /// How long the workload ran.
    elapsed: Duration,
}

/// The nearest-rank percentile of `sorted` (ascending, not empty): the
/// smallest sample with at least `p` percent of the samples at or below it.
fn nearest_rank(sorted: &[Duration], p: usize) -> Duration {
    assert!(!sorted.is_empty() && (1..=100).contains(&p), "percentile {p} of {} samples", sorted.len());
    let rank = (p * sorted.len()).div_ceil(100);
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the bench; `call_timeout` bounds each workload call.
pub async fn run(args: Options, call_timeout: Duration) -> anyhow::Result<ExitCode> {
    let (dir, tmp) = match &args.data_dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("shoal-failover-")
                .tempdir()
                .context("creating a temporary directory")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let outcome = measure(&args, call_timeout, dir.clone()).await;
    // The temporary directory goes unless it is wanted: `--keep`, or the logs of a failure.
    if let Some(t) = tmp
        && (args.keep || outcome.is_err())
    {
        eprintln!("shoal bench failover: the cluster's data and logs are in {}", t.keep().display());
    }
    report(&args, outcome?)?;
    Ok(ExitCode::SUCCESS)
}

async fn measure(args: &Options, call_timeout: Duration, dir: PathBuf) -> anyhow::Result<Outcome> {
    let mut spec = Spec {
        dir,
        meta_addrs: Vec::new(),
        chunk_addrs: Vec::new(),
        meta_http_addrs: Vec::new(),
        chunk_http_addrs: Vec::new(),
        chunk_size_bytes: shoal_core::DEFAULT_CHUNK_SIZE_BYTES,
        replication: REPLICATION,
        dead_after: Duration::from_secs(10),
        meta_flags: Vec::new(),
        chunk_flags: Vec::new(),
        tls: true,
    };
    let progress = super::bar(u64::from(args.kills));
    progress.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} kills  {msg}").expect("valid template"));
    progress.set_message(format!("starting a cluster in {}", spec.dir.display()));
    // Dropping the cluster, also on an error, stops every node.
    let mut cluster = LocalCluster::start_on_free_ports(&mut spec, META_NODES, CHUNK_NODES, READY_TIMEOUT).await?;
    let probe = Client::connect_with(&spec.meta_addrs, call_timeout, cluster.transport.clone()).await?;
    probe.mkdir(&args.dir, true).await?;
    if args.files > 0 {
        progress.set_message(format!("making {} files", args.files));
        let root = format!("{}/scale", args.dir);
        probe.mkdir(&root, true).await?;
        let builders = Options { clients: BUILD_CLIENTS, ..args.clone() };
        let built = super::meta_scale::build(&probe, &builders, &root, args.files).await?;
        tracing::info!(files = args.files, seconds = built.elapsed.as_secs_f64(), "the namespace is built");
    }

    let calls = Arc::new(CallLog::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let client = Client::connect_with(&spec.meta_addrs, call_timeout, cluster.transport.clone()).await?;
        tasks.push(tokio::spawn(workload(client, args.dir.clone(), c, calls.clone(), stop.clone())));
    }
    progress.set_message("steady workload");
    tokio::time::sleep(SETTLE).await;

    let all: Vec<usize> = (0..META_NODES).collect();
    let mut windows = Vec::new();
    let mut discarded = 0;
    while windows.len() < args.kills as usize {
        let (leader, term) = must_agree(&mut cluster, &probe, &all, "before a kill").await?;
        let name = cluster.metas[leader].name.clone();
        let from = calls.len();
        let t_kill = cluster.kill_meta(leader)?;
        tracing::info!(term, "killed the leader {name}");
        let window = wait_window(&mut cluster, &calls, from, t_kill, &name).await?;
        let survivors: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        let (new_leader, new_term) =
            must_agree(&mut cluster, &probe, &survivors, &format!("after {name} was killed")).await?;
        tracing::info!(
            window_ms = window.as_millis() as u64,
            term = new_term,
            "a call succeeded; the new leader is {}",
            cluster.metas[new_leader].name
        );
        cluster.restart_meta(leader)?;
        if new_term > term {
            windows.push(window);
            progress.inc(1);
            progress.set_message(format!("killed {name}: {:.0} ms", ms(window)));
        } else {
            discarded += 1;
            progress.suspend(|| eprintln!("{name} no longer led when it was killed; this round does not count"));
            if discarded > args.kills {
                bail!("in {discarded} rounds the node killed was no longer the leader");
            }
        }
        must_agree(&mut cluster, &probe, &all, &format!("after {name} was restarted")).await?;
        tokio::time::sleep(SETTLE).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.context("a workload task panicked")?;
    }
    let elapsed = started.elapsed();
    if args.files > 0 {
        // Nothing acknowledged is lost across the kills.
        let root = format!("{}/scale", args.dir);
        let mut found = 0;
        for d in 0..super::meta_scale::dirs_for(args.files) {
            let dir = super::meta_scale::dir_path(&root, d);
            let listed = probe.list(&dir).await.with_context(|| format!("listing {dir} after the kills"))?;
            found += listed.len() as u64;
        }
        if found != args.files {
            bail!("after the kills {root} holds {found} files, not the {} made before them", args.files);
        }
    }
    progress.finish_and_clear();
    cluster.stop();
    let (ok_calls, failed_calls, call_latencies) = calls.summary();
    let first_error = calls.first_error.lock().expect("error lock").clone();
    Ok(Outcome { windows, discarded, ok_calls, failed_calls, call_latencies, first_error, elapsed })
}

/// One client of the steady workload, until `stop`: create an empty file, stat
/// it, remove it, each a call that only the leader answers.
async fn workload(client: Client, dir: String, id: u32, calls: Arc<CallLog>, stop: Arc<AtomicBool>) {
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let path = format!("{dir}/c{id}-{i}");
        if calls.time(client.create(&path, None)).await {
            calls.time(client.stat(&path)).await;
            calls.time(client.remove(&path, false)).await;
        }
    }
}

/// The unavailability window after `name` was killed at `t_kill`: until the
/// first successful call invoked after it ended (calls recorded from `from` on).
async fn wait_window(
    cluster: &mut LocalCluster,
    calls: &CallLog,
    from: usize,
    t_kill: Instant,
    name: &str,
) -> anyhow::Result<Duration> {
    loop {
        if let Some(end) = calls.first_success_after(from, t_kill) {
            return Ok(end - t_kill);
        }
        cluster.check_running(&format!("after {name} was killed"))?;
        if t_kill.elapsed() > WINDOW_TIMEOUT {
            let last = calls.first_error.lock().expect("error lock").clone().unwrap_or_default();
            bail!(
                "no call succeeded within {}s of killing the leader {name} (first error of the run: {last})",
                WINDOW_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(POLL_CALLS).await;
    }
}

/// Waits until the meta nodes `among` agree on a leader (see
/// [`agreed_leader`]); `during` says when, for the error.
async fn must_agree(
    cluster: &mut LocalCluster,
    probe: &Client,
    among: &[usize],
    during: &str,
) -> anyhow::Result<(usize, u64)> {
    let deadline = Instant::now() + AGREE_TIMEOUT;
    loop {
        cluster.check_running(during)?;
        if let Some(leader) = agreed_leader(probe, &cluster.meta_addrs, among).await {
            return Ok(leader);
        }
        if Instant::now() > deadline {
            bail!("the meta nodes did not agree on a leader within {}s {during}", AGREE_TIMEOUT.as_secs());
        }
        tokio::time::sleep(POLL_STATUS).await;
    }
}

/// The leader's index and term, if every meta node in `among` answers a
/// status call and names the same leader, and that leader is one of them and
/// says that it leads.
async fn agreed_leader(probe: &Client, addrs: &[String], among: &[usize]) -> Option<(usize, u64)> {
    let mut leader = None;
    let mut term = None;
    for &i in among {
        let s = probe.meta_node_status(&addrs[i], STATUS_TIMEOUT, false).await.ok()?;
        if s.leader_id == 0 || leader.is_some_and(|l| l != s.leader_id) {
            return None;
        }
        leader = Some(s.leader_id);
        if s.self_id == s.leader_id {
            let me = s.nodes.iter().find(|n| n.id == s.self_id)?;
            if me.role != "leader" {
                return None;
            }
            term = Some(me.term);
        }
    }
    let index = usize::try_from(leader?).ok()?.checked_sub(1)?;
    Some((index, term?))
}

fn report(args: &Options, mut o: Outcome) -> anyhow::Result<()> {
    let windows_ms: Vec<f64> = o.windows.iter().map(|w| ms(*w)).collect();
    o.windows.sort_unstable();
    o.call_latencies.sort_unstable();
    let w = |p| ms(nearest_rank(&o.windows, p));
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let ops_per_sec = o.ok_calls as f64 / secs;
    let call_p = |p| if o.call_latencies.is_empty() { 0.0 } else { ms(nearest_rank(&o.call_latencies, p)) };
    let v = json!({
        "workload": "failover", "clients": args.clients, "files": args.files, "kills": o.windows.len(),
        "discarded": o.discarded,
        "min_ms": ms(o.windows[0]), "median_ms": w(50), "p99_ms": w(99), "max_ms": w(100),
        "windows_ms": windows_ms, "ops": o.ok_calls, "errors": o.failed_calls, "seconds": secs,
        "ops_per_sec": ops_per_sec, "mb_per_sec": 0.0,
        "op_latency_ms": {"p50": call_p(50), "p99": call_p(99), "max": call_p(100)},
    });
    if let Some(e) = &o.first_error {
        eprintln!("shoal bench failover: {} calls failed; the first: {e}", o.failed_calls);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{v}")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<9} {:>7} {:>5} {:>8} {:>9} {:>8} {:>8} {:>8} {:>6} {:>8}",
        "WORKLOAD", "CLIENTS", "KILLS", "MIN ms", "MEDIAN ms", "P99 ms", "MAX ms", "OPS", "ERRORS", "OPS/S"
    )?;
    writeln!(
        out,
        "{:<9} {:>7} {:>5} {:>8.0} {:>9.0} {:>8.0} {:>8.0} {:>8} {:>6} {:>8.1}",
        "failover",
        args.clients,
        o.windows.len(),
        ms(o.windows[0]),
        w(50),
        w(99),
        w(100),
        o.ok_calls,
        o.failed_calls,
        ops_per_sec
    )?;
    let each: Vec<String> = windows_ms.iter().map(|w| format!("{w:.0}")).collect();
    writeln!(out, "windows in kill order (ms): {}", each.join(" "))?;
    writeln!(out, "call latency over the whole run: p50 {:.1} ms, p99 {:.1} ms", call_p(50), call_p(99))?;
    if args.files > 0 {
        writeln!(out, "namespace: {} files, every one still there after the kills", args.files)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Vec<Duration> {
        ms.iter().map(|m| Duration::from_millis(*m)).collect()
    }

    #[test]
    fn nearest_rank_picks_a_sample() {
        let twenty = samples(&(1..=20).collect::<Vec<_>>());
        assert_eq!(nearest_rank(&twenty, 50), Duration::from_millis(10));
        assert_eq!(nearest_rank(&twenty, 99), Duration::from_millis(20), "below 100 samples p99 is the max");
        assert_eq!(nearest_rank(&twenty, 100), Duration::from_millis(20));
        let hundred = samples(&(1..=100).collect::<Vec<_>>());
        assert_eq!(nearest_rank(&hundred, 99), Duration::from_millis(99));
        assert_eq!(nearest_rank(&samples(&[7]), 1), Duration::from_millis(7));
        assert_eq!(nearest_rank(&samples(&[1, 2, 3]), 50), Duration::from_millis(2));
    }
}
