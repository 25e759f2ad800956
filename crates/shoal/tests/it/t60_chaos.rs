//! t60: chaos. A concurrent workload runs while a nemesis kills, stalls and
//! partitions nodes; then the cluster is healed and checked.
//!
//! # Workload
//! Each worker owns a directory and runs creates, small files created and
//! written at once (the create prepares the first chunk in the same Raft
//! entry), appends, overwrites (tiny whole-file ones too), deletes and
//! renames on its own files through the client library, keeping a model of
//! what its directory must hold. Every operation is recorded with its invoke
//! time, completion time and outcome.
//!
//! # Outcomes
//! - Acknowledged: the model takes the operation's effect.
//! - Failed or timed out: the outcome is unknown. The worker first commits a
//!   barrier (a fresh meta write): any earlier proposal is then either applied
//!   or gone for good, and any late copy of the abandoned request is refused
//!   by the state machine, because the barrier's request id tells meta the
//!   abandoned one is done. The worker then reads its files back: they must
//!   match the state before the operation or after it, exactly (fully present
//!   or fully absent), and the model takes what was found. A small file
//!   created and written is two acknowledgements (the create, then the
//!   write), so it may also be found created and empty, never partly written.
//!
//! # Checks after healing
//! - Every worker's directory holds exactly its model: every acknowledged
//!   write reads back byte for byte, and no effect appears twice (appends are
//!   unique records, so a doubled append shows).
//! - Every meta node reaches the same applied index with the same digest of
//!   its whole state.
//!
//! The run is seeded (`SHOAL_CHAOS_SEED`, random by default): the seed picks
//! the operations and the faults, and a failure prints it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::netns::Net;
use crate::common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_client::Client;

const WORKERS: u64 = 4;
/// How long one client call keeps retrying meta before it gives up: patient
/// workers ride through every fault, impatient ones give up during faults and
/// so exercise unknown outcomes.
const CLIENT_TIMEOUT_PATIENT: Duration = Duration::from_secs(4);
const CLIENT_TIMEOUT_IMPATIENT: Duration = Duration::from_millis(700);
/// An operation still running after this is abandoned: its outcome is unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(8);

type Files = BTreeMap<String, Vec<u8>>;

#[derive(Debug, Clone)]
enum Op {
    Create {
        name: String,
    },
    /// Create a new file and write it whole, as `put` does.
    CreateWrite {
        name: String,
        data: Vec<u8>,
    },
    /// Create a new small file with its bytes in one meta entry
    /// (`Client::write_new`): all of it or nothing, never halfway.
    WriteNew {
        name: String,
        data: Vec<u8>,
    },
    Append {
        name: String,
        data: Vec<u8>,
    },
    Overwrite {
        name: String,
        offset: u64,
        data: Vec<u8>,
    },
    Delete {
        name: String,
    },
    Rename {
        from: String,
        to: String,
    },
}

impl Op {
    /// The names whose state the operation can change.
    fn names(&self) -> Vec<&str> {
        match self {
            Op::Create { name }
            | Op::CreateWrite { name, .. }
            | Op::WriteNew { name, .. }
            | Op::Append { name, .. }
            | Op::Overwrite { name, .. }
            | Op::Delete { name } => {
                vec![name]
            }
            Op::Rename { from, to } => vec![from, to],
        }
    }

    /// The model after the operation succeeds.
    fn apply(&self, files: &Files) -> Files {
        let mut f = files.clone();
        match self {
            Op::Create { name } => {
                f.insert(name.clone(), Vec::new());
            }
            Op::CreateWrite { name, data } | Op::WriteNew { name, data } => {
                f.insert(name.clone(), data.clone());
            }
            Op::Append { name, data } => f.get_mut(name).unwrap().extend_from_slice(data),
            Op::Overwrite { name, offset, data } => {
                let body = f.get_mut(name).unwrap();
                let end = *offset as usize + data.len();
                if body.len() < end {
                    body.resize(end, 0);
                }
                body[*offset as usize..end].copy_from_slice(data);
            }
            Op::Delete { name } => {
                f.remove(name);
            }
            Op::Rename { from, to } => {
                let body = f.remove(from).unwrap();
                f.insert(to.clone(), body);
            }
        }
        f
    }

    /// The model if the operation was cut between its two acknowledged
    /// steps, for the operations that have two.
    fn halfway(&self, files: &Files) -> Option<Files> {
        match self {
            Op::CreateWrite { name, .. } => Some(Op::Create { name: name.clone() }.apply(files)),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Op::Create { name } => format!("create {name}"),
            Op::CreateWrite { name, data } => format!("create and write {name} +{}", data.len()),
            Op::WriteNew { name, data } => format!("write new {name} +{}", data.len()),
            Op::Append { name, data } => format!("append {name} +{}", data.len()),
            Op::Overwrite { name, offset, data } => format!("overwrite {name} @{offset} +{}", data.len()),
            Op::Delete { name } => format!("delete {name}"),
            Op::Rename { from, to } => format!("rename {from} -> {to}"),
        }
    }
}

/// One operation in the history.
#[derive(Debug)]
struct Record {
    worker: u64,
    op: String,
    invoke_ms: u128,
    complete_ms: u128,
    outcome: String,
}

struct Shared {
    start: Instant,
    stop: AtomicBool,
    history: Mutex<Vec<Record>>,
}

fn choose(rng: &mut StdRng, files: &Files, next: &mut u64, worker: u64) -> Op {
    let mut fresh = || {
        *next += 1;
        format!("f{next}")
    };
    if files.len() < 3 || rng.random_bool(0.15) {
        let data = pattern(rng.random_range(1..=4096), rng.random());
        return match rng.random_range(0..3) {
            0 => Op::Create { name: fresh() },
            1 => Op::CreateWrite { name: fresh(), data },
            _ => Op::WriteNew { name: fresh(), data },
        };
    }
    let names: Vec<&String> = files.keys().collect();
    let name = names[rng.random_range(0..names.len())].clone();
    let len = files[&name].len() as u64;
    match rng.random_range(0..100) {
        0..45 => {
            // A unique record, so a doubled append cannot go unnoticed.
            let size = rng.random_range(1..40_000);
            let mut data = format!("<w{worker} {name} {next}>").into_bytes();
            *next += 1;
            data.extend(pattern(size, rng.random()));
            Op::Append { name, data }
        }
        45..55 if len <= 4096 => {
            // A tiny file rewritten from its start (often whole, sometimes a prefix).
            Op::Overwrite { name, offset: 0, data: pattern(rng.random_range(1..=4096), rng.random()) }
        }
        45..75 => {
            let offset = rng.random_range(0..=len);
            Op::Overwrite { name, offset, data: pattern(rng.random_range(1..20_000), rng.random()) }
        }
        75..88 => Op::Delete { name },
        _ => Op::Rename { from: name, to: fresh() },
    }
}

async fn execute(client: &Client, dir: &str, op: &Op) -> Result<(), String> {
    let path = |n: &str| format!("{dir}/{n}");
    let r = match op {
        Op::Create { name } => client.create(&path(name), None).await.map(|_| ()),
        Op::CreateWrite { name, data } => match client.create_for_writing(&path(name), None).await {
            Ok(mut f) => f.write_at(0, data).await,
            Err(e) => Err(e),
        },
        Op::WriteNew { name, data } => {
            client.write_new(&path(name), shoal_client::Bytes::copy_from_slice(data), None, None).await.map(|_| ())
        }
        Op::Append { name, data } => match client.open(&path(name)).await {
            Ok(mut f) => f.append(data).await.map(|_| ()),
            Err(e) => Err(e),
        },
        Op::Overwrite { name, offset, data } => match client.open(&path(name)).await {
            Ok(mut f) => f.write_at(*offset, data).await,
            Err(e) => Err(e),
        },
        Op::Delete { name } => client.remove(&path(name), false).await,
        Op::Rename { from, to } => client.rename(&path(from), &path(to)).await,
    };
    r.map_err(|e| e.to_string())
}

/// The current state of `names` in `dir` (absent names are left out).
async fn read_names(client: &Client, dir: &str, names: &[&str]) -> Result<Files, String> {
    let listed: Vec<String> = client.list(dir).await.map_err(|e| e.to_string())?.into_iter().map(|e| e.name).collect();
    let mut out = Files::new();
    for n in names.iter().filter(|n| listed.iter().any(|l| l == *n)) {
        let mut f = client.open(&format!("{dir}/{n}")).await.map_err(|e| e.to_string())?;
        let size = f.len().await.map_err(|e| e.to_string())?;
        out.insert(n.to_string(), f.read_at(0, size).await.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn subset(files: &Files, names: &[&str]) -> Files {
    files.iter().filter(|(k, _)| names.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Settles an operation whose outcome is unknown: barrier, then read back.
/// Returns the model to go on with, or a description of the violation.
async fn resolve(client: &Client, dir: &str, op: &Op, before: &Files, after: &Files) -> Result<Files, String> {
    let deadline = Instant::now() + PATIENCE;
    let names = op.names();
    loop {
        let attempt = async {
            client.mkdir(dir, true).await.map_err(|e| e.to_string())?;
            read_names(client, dir, &names).await
        };
        match tokio::time::timeout(OP_TIMEOUT, attempt).await {
            Ok(Ok(found)) if found == subset(before, &names) => return Ok(before.clone()),
            Ok(Ok(found)) if found == subset(after, &names) => return Ok(after.clone()),
            Ok(Ok(found)) if op.halfway(before).is_some_and(|h| found == subset(&h, &names)) => {
                return Ok(op.halfway(before).unwrap_or_default());
            }
            Ok(Ok(found)) => {
                let show = |f: &Files| f.iter().map(|(k, v)| format!("{k}: {} bytes", v.len())).collect::<Vec<_>>();
                return Err(format!(
                    "{} is neither fully applied nor fully absent: found {:?}, before {:?}, after {:?}",
                    op.describe(),
                    show(&found),
                    show(&subset(before, &names)),
                    show(&subset(after, &names))
                ));
            }
            Ok(Err(_)) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(Err(e)) => return Err(format!("could not read back after {}: {e}", op.describe())),
            Err(_) => return Err(format!("could not read back after {}: timed out", op.describe())),
        }
    }
}

/// Runs one worker until told to stop; returns its model.
async fn worker(id: u64, seed: u64, meta: Vec<String>, shared: Arc<Shared>) -> Result<Files, String> {
    let timeout = if id.is_multiple_of(2) { CLIENT_TIMEOUT_PATIENT } else { CLIENT_TIMEOUT_IMPATIENT };
    let client = Client::connect_with_timeout(&meta, timeout).await.map_err(|e| e.to_string())?;
    let dir = format!("/w{id}");
    let deadline = Instant::now() + PATIENCE;
    while let Err(e) = client.mkdir(&dir, true).await {
        if Instant::now() > deadline {
            return Err(format!("mkdir {dir}: {e}"));
        }
    }
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(id));
    let mut files = Files::new();
    let mut next = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let op = choose(&mut rng, &files, &mut next, id);
        let after = op.apply(&files);
        let invoke = shared.start.elapsed().as_millis();
        let outcome = tokio::time::timeout(OP_TIMEOUT, execute(&client, &dir, &op)).await;
        let complete = shared.start.elapsed().as_millis();
        let text = match outcome {
            Ok(Ok(())) => {
                files = after;
                "ok".to_string()
            }
            Ok(Err(e)) => {
                let settled = resolve(&client, &dir, &op, &files, &after).await;
                let applied = settled.as_ref().is_ok_and(|s| *s == after);
                files = settled.map_err(|v| format!("worker {id}: {v}"))?;
                format!("unknown ({}), found {}: {e}", "error", if applied { "applied" } else { "absent" })
            }
            Err(_) => {
                let settled = resolve(&client, &dir, &op, &files, &after).await;
                let applied = settled.as_ref().is_ok_and(|s| *s == after);
                files = settled.map_err(|v| format!("worker {id}: {v}"))?;
                format!("unknown (timeout), found {}", if applied { "applied" } else { "absent" })
            }
        };
        shared.history.lock().unwrap().push(Record {
            worker: id,
            op: op.describe(),
            invoke_ms: invoke,
            complete_ms: complete,
            outcome: text,
        });
    }
    Ok(files)
}

/// Checks a worker's directory against its model with a patient client.
async fn verify(meta: &[String], id: u64, model: &Files) -> Result<(), String> {
    let client = Client::connect_with_timeout(meta, PATIENCE).await.map_err(|e| e.to_string())?;
    let dir = format!("/w{id}");
    let listed: Vec<String> = client.list(&dir).await.map_err(|e| e.to_string())?.into_iter().map(|e| e.name).collect();
    let expected: Vec<String> = model.keys().cloned().collect();
    if listed != expected {
        return Err(format!("{dir} lists {listed:?}, expected {expected:?}"));
    }
    let names: Vec<&str> = expected.iter().map(|s| s.as_str()).collect();
    let found = read_names(&client, &dir, &names).await?;
    for (name, want) in model {
        let got = &found[name];
        if got != want {
            let first = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
            return Err(format!(
                "{dir}/{name}: {} bytes, expected {}; first difference at byte {first}",
                got.len(),
                want.len()
            ));
        }
    }
    Ok(())
}

/// Waits until every meta node has applied the same index with the same digest.
async fn meta_nodes_agree(meta: &[String]) -> Result<(), String> {
    let client = Client::connect_with_timeout(meta, PATIENCE).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut seen = Vec::new();
        for addr in meta {
            match client.meta_node_status(addr, Duration::from_secs(2), true).await {
                Ok(s) => seen.push((s.applied_index, s.state_digest)),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        if seen.len() == meta.len() && seen.iter().all(|s| s.0 == seen[0].0) {
            if seen.iter().all(|s| s.1 == seen[0].1) {
                return Ok(());
            }
            return Err(format!("meta nodes at index {} disagree on the state: {seen:?}", seen[0].0));
        }
        if !seen.is_empty() {
            last = format!("applied (index, digest) per node: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("meta nodes did not converge: {last}"))
}

/// Logs a nemesis step with the time since the start, to line up with the history.
fn step(shared: &Shared, what: &str) {
    eprintln!("[{:>6} ms] nemesis: {what}", shared.start.elapsed().as_millis());
}

fn pause_ms(rng: &mut StdRng, lo: u64, hi: u64) {
    std::thread::sleep(Duration::from_millis(rng.random_range(lo..hi)));
}

#[derive(Clone, Copy)]
enum Victim {
    Meta(usize),
    Chunk(usize),
}

/// SIGKILLs a node, lets the cluster run without it for a while, restarts it.
fn kill_then_restart(c: &mut Cluster, rng: &mut StdRng, shared: &Shared, role: &str, victim: Victim) {
    let name = match victim {
        Victim::Meta(i) => c.metas[i].name.clone(),
        Victim::Chunk(j) => c.chunks[j].name.clone(),
    };
    step(shared, &format!("SIGKILL {role} {name}"));
    match victim {
        Victim::Meta(i) => c.kill_meta(i),
        Victim::Chunk(j) => c.kill_chunk(j),
    }
    pause_ms(rng, 1500, 3000);
    step(shared, &format!("restart {name}"));
    match victim {
        Victim::Meta(i) => c.start_meta(i),
        Victim::Chunk(j) => c.start_chunk(j),
    }
    pause_ms(rng, 1500, 2500);
}

/// The fault schedule. Runs on the test thread while the workers run.
fn nemesis(c: &mut Cluster, rng: &mut StdRng, shared: &Shared) {
    pause_ms(rng, 1000, 2000);

    let l = c.wait_leader();
    kill_then_restart(c, rng, shared, "meta leader", Victim::Meta(l));
    let l = c.wait_leader();
    let f = (l + rng.random_range(1..c.metas.len())) % c.metas.len();
    kill_then_restart(c, rng, shared, "meta follower", Victim::Meta(f));
    let j = rng.random_range(0..c.chunks.len());
    kill_then_restart(c, rng, shared, "chunk server", Victim::Chunk(j));

    let l = c.wait_leader();
    step(shared, &format!("SIGSTOP meta leader {}", c.metas[l].name));
    Cluster::pause(&c.metas[l], true);
    pause_ms(rng, 2000, 4000);
    step(shared, &format!("SIGCONT {}", c.metas[l].name));
    Cluster::pause(&c.metas[l], false);
    pause_ms(rng, 1500, 2500);

    match &c.net {
        Some(net) => {
            let l = c.wait_leader();
            step(shared, &format!("partition: isolate meta leader {} with nftables", c.metas[l].name));
            net.isolate(l).expect("isolate the leader");
            let deadline = Instant::now() + PATIENCE;
            while c.leader().is_none_or(|now| now == l) {
                assert!(Instant::now() < deadline, "the majority side never elected a new leader");
                std::thread::sleep(Duration::from_millis(100));
            }
            step(shared, &format!("the majority elected {}", c.metas[c.leader().unwrap_or(l)].name));
            pause_ms(rng, 1500, 3000);
            step(shared, "heal the partition");
            net.heal();
            pause_ms(rng, 1500, 2500);
        }
        None => step(shared, "SKIPPED the partition scenario: needs root with ip netns and nft"),
    }
}

#[test]
fn t60_chaos_loses_no_acknowledged_operation() {
    let seed: u64 = std::env::var("SHOAL_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("chaos seed: {seed} (rerun with SHOAL_CHAOS_SEED={seed})");
    let net = match Net::create(3) {
        Ok(net) => Some(net),
        Err(why) => {
            skipping("t60_chaos", "the partition scenario", &format!("network namespaces unavailable ({why})"));
            None
        }
    };
    let mut c = Cluster::start(Options {
        meta_nodes: 3,
        chunk_nodes: 3,
        chunk_size: "64KiB",
        meta_args: vec!["--dead-after", "3s", "--snapshot-every", "300"],
        meta_netns: net,
        ..Options::default()
    });
    let shared = Arc::new(Shared { start: Instant::now(), stop: AtomicBool::new(false), history: Mutex::default() });
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let workers: Vec<_> =
        (0..WORKERS).map(|id| rt.spawn(worker(id, seed, c.meta_addrs.clone(), shared.clone()))).collect();

    let mut rng = StdRng::seed_from_u64(seed);
    nemesis(&mut c, &mut rng, &shared);
    shared.stop.store(true, Ordering::Relaxed);
    step(&shared, "stop the workload; everything is healed");

    let meta = c.meta_addrs.clone();
    let failures: Vec<String> = rt.block_on(async {
        let mut failures = Vec::new();
        for (id, w) in workers.into_iter().enumerate() {
            match w.await.expect("worker task") {
                Ok(model) => {
                    if let Err(e) = verify(&meta, id as u64, &model).await {
                        failures.push(format!("worker {id}: {e}"));
                    }
                }
                Err(e) => failures.push(e),
            }
        }
        if let Err(e) = meta_nodes_agree(&meta).await {
            failures.push(e);
        }
        failures
    });

    let history = shared.history.lock().unwrap();
    let ok = history.iter().filter(|r| r.outcome == "ok").count();
    let applied = history.iter().filter(|r| r.outcome.contains("found applied")).count();
    let absent = history.iter().filter(|r| r.outcome.contains("found absent")).count();
    eprintln!(
        "history: {} operations: {ok} acknowledged, {applied} unknown then found applied, {absent} unknown then found absent",
        history.len()
    );
    for r in history.iter().filter(|r| r.outcome != "ok") {
        eprintln!("  w{} [{} .. {} ms] {}: {}", r.worker, r.invoke_ms, r.complete_ms, r.op, r.outcome);
    }
    assert!(failures.is_empty(), "chaos seed {seed}: {failures:#?}");
    assert!(ok >= 20 * WORKERS as usize, "chaos seed {seed}: only {ok} operations were acknowledged");
}
