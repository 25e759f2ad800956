//! `shoal bench meta-scale --files N`: what a namespace of N files costs the
//! meta group, measured on a running cluster (`--meta`).
//!
//! Phases, in order:
//! 1. **Build.** N empty files through the ordinary client API (one `Create`
//!    each, one Raft entry each), spread over directories of
//!    [`FILES_PER_DIR`] files under `DIR/scale` by `--clients` concurrent
//!    clients (16 by default); files/s and the create latency.
//! 2. **Memory.** The resident memory (`VmRSS`) of every meta node before
//!    and after the build, per file. The meta processes are found on this
//!    machine: every process whose command line is `shoal meta ... --listen
//!    ADDR` with ADDR one of `--meta` (so the addresses must be spelled as
//!    the nodes were started, as `shoal up` prints them). A node not found
//!    (a remote cluster) reports no memory.
//! 3. **Snapshot.** While one client stats a file and another creates files,
//!    each one operation at a time, the leader builds a snapshot on request
//!    (`Cluster/TriggerSnapshot`, admins only); the reply gives the build
//!    time and the snapshot's size. The longest gap between two completed
//!    operations of each stream during the build is the stall (target: none
//!    over 50 ms); the same measure over the second before is the baseline.
//! 4. **Restart** (only with `--restart`, which needs the meta nodes on this
//!    machine): a follower is SIGKILLed while [`EXTRA_FILES`] more files are
//!    created and the leader builds another snapshot (so the log the follower
//!    lacks may be purged and it must install the snapshot), then started
//!    again with its own command line, working directory and log file, in a
//!    session of its own. Restart is until it answers with all it had
//!    applied before, catch-up until it reaches the leader's applied index;
//!    its HTTP metrics (when it has `--http`) say whether it installed a
//!    snapshot. The restarted node is no longer a child of `shoal up`: the
//!    report prints its pid, to be stopped by hand.
//!
//! The table and `--json` carry every figure; the JSON keeps the contract of
//! the other workloads (`ops_per_sec` is files/s of the build).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use shoal_client::Client;

use super::{Options, Percentiles, spread};

/// Files per directory of the built namespace.
pub const FILES_PER_DIR: u64 = 1000;
/// Files created while a follower is down, more than the log a snapshot
/// keeps behind it (1,000 entries).
pub const EXTRA_FILES: u64 = 1500;
/// How long the streams run before the snapshot is asked for (the baseline).
const BASELINE: Duration = Duration::from_secs(1);
/// How long the streams run after the snapshot is on disk.
const AFTER: Duration = Duration::from_millis(300);
/// The longest a restarted node may take to answer and to catch up.
const RESTART_WAIT_MAX: Duration = Duration::from_secs(600);
/// The longest a snapshot may take on request.
const SNAPSHOT_WAIT_MAX: Duration = Duration::from_secs(600);

/// The path of file `i` under the namespace's root.
pub fn file_path(root: &str, i: u64) -> String {
    format!("{}/f{i}", dir_path(root, i / FILES_PER_DIR))
}

/// The path of directory `d` under the namespace's root.
pub fn dir_path(root: &str, d: u64) -> String {
    format!("{root}/d{d}")
}

/// Directories needed for `files` files.
pub fn dirs_for(files: u64) -> u64 {
    files.div_ceil(FILES_PER_DIR)
}

/// `VmRSS` in bytes from the text of `/proc/PID/status`.
pub fn parse_vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line.split_whitespace().skip(1);
    let kib: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => Some(kib * 1024),
        _ => None,
    }
}

/// The value of `--flag` in a command line (`--flag V` or `--flag=V`).
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let with_eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| match a.strip_prefix(&with_eq) {
        Some(v) => Some(v),
        None if a == flag => args.get(i + 1).map(String::as_str),
        None => None,
    })
}

/// The address a `shoal meta` process listens on, from its command line
/// (program first); None for any other process.
pub fn meta_listen_addr(cmdline: &[String]) -> Option<&str> {
    match cmdline.get(1).map(String::as_str) {
        Some("meta") => flag_value(cmdline, "--listen"),
        _ => None,
    }
}

/// The longest time without a completed operation from `from_us` to
/// `to_us`: between the window's start, the completions inside it, and the
/// first completion after it (an operation still running at the end counts
/// until it completes). `done_us` is sorted.
pub fn longest_gap_us(done_us: &[u64], from_us: u64, to_us: u64) -> u64 {
    let inside = done_us.iter().copied().filter(|&t| t > from_us && t <= to_us);
    let next = done_us.iter().copied().find(|&t| t > to_us);
    let mut last = from_us;
    let mut longest = 0;
    for t in inside.chain(next) {
        longest = longest.max(t - last);
        last = t;
    }
    if next.is_none() {
        longest = longest.max(to_us.saturating_sub(last));
    }
    longest
}

/// Resident bytes per file, from the memory before and after `files` files.
pub fn bytes_per_file(before: u64, after: u64, files: u64) -> f64 {
    after.saturating_sub(before) as f64 / files.max(1) as f64
}

/// A counter's value in a Prometheus text exposition (the sum over its labels).
pub fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        found = Some(found.unwrap_or(0.0) + value);
    }
    found
}

/// One meta process on this machine.
#[derive(Debug, Clone)]
struct MetaProc {
    addr: String,
    pid: u32,
    cmdline: Vec<String>,
}

fn read_cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect())
}

/// The live `shoal meta` processes listening on `addrs`, by scanning `/proc`.
fn find_meta_procs(addrs: &[String]) -> Vec<MetaProc> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Some(cmdline) = read_cmdline(pid) else { continue };
        if let Some(addr) = meta_listen_addr(&cmdline)
            && addrs.iter().any(|a| a == addr)
            && !is_zombie(pid)
        {
            found.push(MetaProc { addr: addr.to_string(), pid, cmdline });
        }
    }
    found.sort_by(|a, b| a.addr.cmp(&b.addr));
    found
}

fn is_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

fn rss_bytes(pid: u32) -> Option<u64> {
    parse_vm_rss_bytes(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The meta nodes' resident memory, by address.
fn rss_of(procs: &[MetaProc]) -> Vec<(String, u32, Option<u64>)> {
    procs.iter().map(|p| (p.addr.clone(), p.pid, rss_bytes(p.pid))).collect()
}

/// The leader's address, as the group reports it.
async fn leader_addr(client: &Client) -> anyhow::Result<String> {
    let s = client.meta_status().await?;
    s.nodes
        .iter()
        .find(|n| n.id == s.leader_id)
        .map(|n| n.addr.clone())
        .with_context(|| format!("no leader in the meta status ({} nodes)", s.nodes.len()))
}

/// Completion times (µs since `t0`) of one stream of operations run one at
/// a time until `stop`.
fn stream<F, Fut>(t0: Instant, stop: Arc<AtomicBool>, op: F) -> tokio::task::JoinHandle<anyhow::Result<Vec<u64>>>
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    tokio::spawn(async move {
        let mut done = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            op(i).await?;
            done.push(t0.elapsed().as_micros() as u64);
            i += 1;
        }
        Ok(done)
    })
}

/// A snapshot built on request, as the node answered.
struct Snap {
    index: u64,
    build_ms: u64,
    size_bytes: u64,
}

/// What one snapshot under load measured.
struct Stall {
    snapshot: Snap,
    window_ms: f64,
    stat_gap_ms: f64,
    create_gap_ms: f64,
    stat_baseline_gap_ms: f64,
    create_baseline_gap_ms: f64,
}

async fn snapshot_under_load(client: &Client, root: &str) -> anyhow::Result<Stall> {
    let leader = leader_addr(client).await?;
    let (stat_client, create_client) = (client.reconnect().await?, client.reconnect().await?);
    let stalldir = format!("{root}/stall");
    client.mkdir(&stalldir, true).await?;
    let probe = file_path(root, 0);
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = stream(t0, stop.clone(), move |_| {
        let (c, path) = (stat_client.clone(), probe.clone());
        async move {
            c.stat(&path).await?;
            Ok(())
        }
    });
    let creates = stream(t0, stop.clone(), move |i| {
        let (c, path) = (create_client.clone(), format!("{stalldir}/s{i}"));
        async move {
            c.create(&path, None).await?;
            Ok(())
        }
    });
    tokio::time::sleep(BASELINE).await;
    let from = t0.elapsed();
    let r = client.trigger_snapshot(&leader, SNAPSHOT_WAIT_MAX).await.context("building a snapshot on the leader")?;
    let snapshot = Snap { index: r.index, build_ms: r.build_ms, size_bytes: r.size_bytes };
    let to = t0.elapsed();
    tokio::time::sleep(AFTER).await;
    stop.store(true, Ordering::Relaxed);
    let (stats, creates) = (stats.await??, creates.await??);
    let us = |d: Duration| d.as_micros() as u64;
    let gap_ms = |done: &[u64], a: u64, b: u64| longest_gap_us(done, a, b) as f64 / 1000.0;
    let base_from = us(from).saturating_sub(us(BASELINE)) + us(BASELINE) / 10;
    Ok(Stall {
        snapshot,
        window_ms: (to - from).as_secs_f64() * 1000.0,
        stat_gap_ms: gap_ms(&stats, us(from), us(to)),
        create_gap_ms: gap_ms(&creates, us(from), us(to)),
        stat_baseline_gap_ms: gap_ms(&stats, base_from, us(from)),
        create_baseline_gap_ms: gap_ms(&creates, base_from, us(from)),
    })
}

/// `GET /metrics` from a node's plain HTTP port.
fn fetch_metrics(http: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(http).with_context(|| format!("connecting to {http}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {http}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

fn installed_snapshots(http: Option<&str>) -> Option<f64> {
    let text = fetch_metrics(http?).ok()?;
    Some(prometheus_value(&text, "shoal_meta_snapshots_installed_total").unwrap_or(0.0))
}

/// Starts a killed meta node again as it was started, in a session of its
/// own (so it outlives this bench), its output appended to its old log.
fn respawn(p: &MetaProc, exe: &PathBuf, cwd: &PathBuf, log: Option<&PathBuf>) -> anyhow::Result<u32> {
    let mut cmd = std::process::Command::new(exe);
    cmd.args(&p.cmdline[1..]).current_dir(cwd).stdin(std::process::Stdio::null()).env_remove("SHOAL_CONFIG");
    if let Some(log) = log {
        let out =
            std::fs::OpenOptions::new().append(true).open(log).with_context(|| format!("opening {}", log.display()))?;
        cmd.stdout(out.try_clone()?).stderr(out);
    } else {
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    }
    // SAFETY: setsid is async-signal-safe; the child leaves our session and
    // process group, so it outlives the bench.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    Ok(cmd.spawn().with_context(|| format!("starting {} again", p.addr))?.id())
}

async fn wait_applied(client: &Client, addr: &str, at_least: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + RESTART_WAIT_MAX;
    loop {
        if let Ok(s) = client.meta_node_status(addr, Duration::from_secs(1), false).await
            && s.applied_index >= at_least
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr} did not reach index {at_least} within {}s", RESTART_WAIT_MAX.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills a follower, grows the log past what a snapshot keeps, starts it
/// again and times its restart and catch-up.
async fn restart_follower(client: &Client, args: &Options, root: &str) -> anyhow::Result<serde_json::Value> {
    let leader = leader_addr(client).await?;
    let procs = find_meta_procs(client.meta_addrs());
    let p = procs
        .iter()
        .find(|p| p.addr != leader)
        .context("--restart needs a follower meta node running on this machine, found by its --listen address")?
        .clone();
    let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid)).context("reading the node's executable")?;
    let cwd = std::fs::read_link(format!("/proc/{}/cwd", p.pid)).context("reading the node's directory")?;
    let log = std::fs::read_link(format!("/proc/{}/fd/1", p.pid)).ok().filter(|l| l.is_file());
    let http = flag_value(&p.cmdline, "--http").map(str::to_string);
    let before = client.meta_node_status(&p.addr, Duration::from_secs(5), false).await?.applied_index;
    let installed_before = installed_snapshots(http.as_deref());
    // SAFETY: signalling a process this bench found by its command line.
    if unsafe { libc::kill(p.pid as libc::pid_t, libc::SIGKILL) } != 0 {
        bail!("killing meta node {} (pid {}): {}", p.addr, p.pid, std::io::Error::last_os_error());
    }
    while !is_zombie(p.pid) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let extra = format!("{root}/extra");
    client.mkdir(&extra, true).await?;
    let extra_args = Options { count: EXTRA_FILES, ..args.clone() };
    spread(client, &extra_args, 0, move |c, i| {
        let path = format!("{extra}/f{i}");
        async move {
            c.create(&path, None).await?;
            Ok(())
        }
    })
    .await?;
    let snapshot = client.trigger_snapshot(&leader, SNAPSHOT_WAIT_MAX).await?;
    let target = client.meta_node_status(&leader, Duration::from_secs(5), false).await?.applied_index;
    let started = Instant::now();
    let pid = respawn(&p, &exe, &cwd, log.as_ref())?;
    wait_applied(client, &p.addr, before).await?;
    let restart = started.elapsed();
    wait_applied(client, &p.addr, target).await?;
    let caught_up = started.elapsed();
    // The restarted node's memory holds the state without the garbage of building it.
    let rss = rss_bytes(pid);
    let installed = match (installed_before, installed_snapshots(http.as_deref())) {
        (Some(a), Some(b)) => Some(b > a),
        _ => None,
    };
    Ok(json!({
        "addr": p.addr, "old_pid": p.pid, "new_pid": pid, "log_lag_entries": target.saturating_sub(before),
        "restart_ms": restart.as_secs_f64() * 1000.0, "catch_up_ms": caught_up.as_secs_f64() * 1000.0,
        "installed_snapshot": installed, "rss_bytes": rss,
        "leader_snapshot": {"index": snapshot.index, "build_ms": snapshot.build_ms, "size_bytes": snapshot.size_bytes},
    }))
}

/// Makes `files` empty files under `root` (which exists), in directories of
/// [`FILES_PER_DIR`], over `args.clients` clients, one `Create` each; the
/// files' rate and latencies.
pub(super) async fn build(client: &Client, args: &Options, root: &str, files: u64) -> anyhow::Result<super::Outcome> {
    let dir_args = Options { count: dirs_for(files), ..args.clone() };
    let dir_root = root.to_string();
    spread(client, &dir_args, 0, move |c, d| {
        let path = dir_path(&dir_root, d);
        async move {
            c.mkdir(&path, false).await?;
            Ok(())
        }
    })
    .await?;
    let file_args = Options { count: files, ..args.clone() };
    let file_root = root.to_string();
    spread(client, &file_args, 0, move |c, i| {
        let path = file_path(&file_root, i);
        async move {
            c.create(&path, None).await?;
            Ok(())
        }
    })
    .await
}

/// Runs the workload and prints its report.
pub async fn run(client: &Client, args: &Options) -> anyhow::Result<()> {
    let root = format!("{}/scale", args.dir);
    let files = args.files;
    let procs = find_meta_procs(client.meta_addrs());
    client.remove(&root, true).await.ok();
    client.mkdir(&root, true).await?;
    let rss_before = rss_of(&procs);
    // Phase 1: the directories, then the files.
    let built = build(client, args, &root, files).await?;
    // Phase 2: followers apply what the leader committed within moments.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_of(&procs);
    let memory: Vec<_> = rss_before
        .iter()
        .zip(&rss_after)
        .map(|((addr, pid, b), (_, _, a))| {
            let per_file = match (b, a) {
                (Some(b), Some(a)) => Some(bytes_per_file(*b, *a, files)),
                _ => None,
            };
            json!({"addr": addr, "pid": pid, "before_bytes": b, "after_bytes": a, "bytes_per_file": per_file})
        })
        .collect();
    // Phase 3 and 4.
    let stall = snapshot_under_load(client, &root).await?;
    let restart = match args.restart {
        true => Some(restart_follower(client, args, &root).await?),
        false => None,
    };
    if !args.keep {
        client.remove(&root, true).await.ok();
    }
    let pct = Percentiles::of(&built.latencies_us);
    let secs = built.elapsed.as_secs_f64().max(1e-9);
    let snap = &stall.snapshot;
    let v = json!({
        "workload": args.workload.name(), "clients": args.clients, "files": files, "ops": built.ops, "bytes": 0,
        "seconds": secs, "ops_per_sec": built.ops as f64 / secs, "mb_per_sec": 0.0,
        "latency_ms": {"p50": pct.ms(50.0), "p90": pct.ms(90.0), "p99": pct.ms(99.0), "max": pct.ms(100.0)},
        "memory": memory,
        "snapshot": {
            "index": snap.index, "build_ms": snap.build_ms, "size_bytes": snap.size_bytes,
            "bytes_per_file": snap.size_bytes as f64 / files.max(1) as f64,
        },
        "stall": {
            "window_ms": stall.window_ms, "stat_longest_gap_ms": stall.stat_gap_ms,
            "create_longest_gap_ms": stall.create_gap_ms, "stat_baseline_gap_ms": stall.stat_baseline_gap_ms,
            "create_baseline_gap_ms": stall.create_baseline_gap_ms,
        },
        "restart": restart,
    });
    print(args, &v)
}

fn print(args: &Options, v: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{v}")?;
        return Ok(());
    }
    let f = |x: &serde_json::Value| x.as_f64().unwrap_or(0.0);
    let mib = |x: &serde_json::Value| x.as_f64().map_or("-".to_string(), |b| format!("{:.1}", b / (1 << 20) as f64));
    writeln!(out, "meta-scale: {} files, {} clients", v["files"], v["clients"])?;
    writeln!(
        out,
        "  build: {:.1} files/s over {:.1} s; create p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f(&v["ops_per_sec"]),
        f(&v["seconds"]),
        f(&v["latency_ms"]["p50"]),
        f(&v["latency_ms"]["p99"]),
        f(&v["latency_ms"]["max"])
    )?;
    writeln!(out, "  {:<22} {:>8} {:>12} {:>12} {:>14}", "META NODE", "PID", "RSS MiB", "AFTER MiB", "BYTES/FILE")?;
    for m in v["memory"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:<22} {:>8} {:>12} {:>12} {:>14}",
            m["addr"].as_str().unwrap_or(""),
            m["pid"],
            mib(&m["before_bytes"]),
            mib(&m["after_bytes"]),
            m["bytes_per_file"].as_f64().map_or("-".to_string(), |b| format!("{b:.0}"))
        )?;
    }
    let s = &v["snapshot"];
    writeln!(
        out,
        "  snapshot on the leader: {:.1} MiB ({:.0} bytes/file) at index {}, built in {} ms",
        f(&s["size_bytes"]) / (1 << 20) as f64,
        f(&s["bytes_per_file"]),
        s["index"],
        s["build_ms"]
    )?;
    let st = &v["stall"];
    writeln!(
        out,
        "  during the build ({:.0} ms): longest gap of stats {:.1} ms, of creates {:.1} ms (the second before: {:.1} / {:.1} ms; target ≤ 50)",
        f(&st["window_ms"]),
        f(&st["stat_longest_gap_ms"]),
        f(&st["create_longest_gap_ms"]),
        f(&st["stat_baseline_gap_ms"]),
        f(&st["create_baseline_gap_ms"])
    )?;
    let r = &v["restart"];
    if !r.is_null() {
        writeln!(
            out,
            "  restart of {} (SIGKILL, {} entries behind): answering with its own state in {:.0} ms, caught up in {:.0} ms; snapshot installed: {}; RSS then {} MiB",
            r["addr"].as_str().unwrap_or(""),
            r["log_lag_entries"],
            f(&r["restart_ms"]),
            f(&r["catch_up_ms"]),
            r["installed_snapshot"],
            mib(&r["rss_bytes"])
        )?;
        writeln!(out, "  the restarted node runs detached as pid {}: stop it by hand", r["new_pid"])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_spread_over_directories_of_a_thousand() {
        assert_eq!(file_path("/b/scale", 0), "/b/scale/d0/f0");
        assert_eq!(file_path("/b/scale", 999), "/b/scale/d0/f999");
        assert_eq!(file_path("/b/scale", 1000), "/b/scale/d1/f1000");
        assert_eq!(dirs_for(0), 0);
        assert_eq!(dirs_for(1), 1);
        assert_eq!(dirs_for(1000), 1);
        assert_eq!(dirs_for(1001), 2);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tshoal\nVmPeak:\t  200 kB\nVmRSS:\t   14336 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_bytes(status), Some(14336 * 1024));
        assert_eq!(parse_vm_rss_bytes("Name:\tkthreadd\n"), None);
        assert_eq!(parse_vm_rss_bytes("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn meta_processes_are_known_by_their_listen_flag() {
        let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            meta_listen_addr(&args("shoal meta --id 1 --listen 127.0.0.1:18200 --dir d")),
            Some("127.0.0.1:18200")
        );
        assert_eq!(meta_listen_addr(&args("shoal meta --listen=127.0.0.1:1")), Some("127.0.0.1:1"));
        assert_eq!(meta_listen_addr(&args("shoal chunk --listen 127.0.0.1:18210")), None);
        assert_eq!(meta_listen_addr(&args("shoal meta --id 1")), None);
        assert_eq!(flag_value(&args("shoal meta --http 127.0.0.1:18220"), "--http"), Some("127.0.0.1:18220"));
    }

    #[test]
    fn the_longest_gap_counts_the_window_edges() {
        // Completions at 10, 20, 70 and 75; the window is 15..72.
        let done = [10, 20, 70, 75];
        // 15→20, 20→70, 70→75 (the first completion after the window).
        assert_eq!(longest_gap_us(&done, 15, 72), 50);
        // Nothing completes inside 21..69: the gap runs to the next completion.
        assert_eq!(longest_gap_us(&done, 21, 69), 49);
        // A stream that never completes again stalls to the window's end.
        assert_eq!(longest_gap_us(&done, 76, 100), 24);
        assert_eq!(longest_gap_us(&[], 0, 5), 5);
    }

    #[test]
    fn memory_per_file_and_metrics_values() {
        assert_eq!(bytes_per_file(1000, 3000, 10), 200.0);
        assert_eq!(bytes_per_file(3000, 1000, 10), 0.0);
        let text = "# HELP shoal_meta_snapshots_installed_total x\n\
                    shoal_meta_snapshots_installed_total 2\n\
                    shoal_meta_snapshots_installed_total_other 9\n";
        assert_eq!(prometheus_value(text, "shoal_meta_snapshots_installed_total"), Some(2.0));
        assert_eq!(prometheus_value(text, "missing"), None);
    }
}
