//! t92: metrics. Every node of a cluster started with HTTP ports answers
//! `GET /metrics` in the Prometheus text format: every line must be one the
//! `prometheus-parse` parser understands (a comment, a type, a help text or
//! a sample with a number), and the families each role promises must be
//! there with their types. A `put` must move the write counters (bytes
//! written and fsyncs on every replica, calls and proposals on the meta
//! leader), the sampled gauges must catch up with the namespace, and a `cat`
//! must move the read counters. Also: `--http` on a taken port or on an
//! address that is not one.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use prometheus_parse::{LineInfo, SampleType, Scrape, Value};

use crate::common::*;

/// One `/metrics` answer, parsed.
struct Metrics {
    /// Family name to its declared type.
    types: HashMap<String, SampleType>,
    scrape: Scrape,
    text: String,
}

/// Fetches and parses `/metrics` of `addr`; panics on any line that is not
/// Prometheus text, and on a histogram whose buckets do not add up.
fn scrape(addr: &str) -> Metrics {
    let (status, content_type, text) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{addr}: {text}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{addr}: content type {content_type}");
    let mut types = HashMap::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Empty | LineInfo::Doc { .. } => {}
            LineInfo::Type { metric_name, metric_alias, sample_type } => {
                let name = metric_alias.unwrap_or(metric_name);
                assert!(types.insert(name.clone(), sample_type).is_none(), "{addr}: {name} is typed twice");
            }
            LineInfo::Sample { value, .. } => {
                let ok = matches!(value, "+Inf" | "-Inf" | "NaN") || value.parse::<f64>().is_ok();
                assert!(ok, "{addr}: a sample's value is not a number: {line:?}");
            }
            LineInfo::Ignored => panic!("{addr}: not a line of Prometheus text: {line:?}"),
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    for s in &scrape.samples {
        if let Value::Histogram(buckets) = &s.value {
            assert!(buckets.windows(2).all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count));
            assert!(
                buckets.last().is_some_and(|b| b.less_than.is_infinite()),
                "{addr}: {} has no +Inf bucket",
                s.metric
            );
        }
    }
    Metrics { types, scrape, text }
}

impl Metrics {
    /// Panics unless family `name` is declared with type `kind`.
    fn must_have(&self, name: &str, kind: SampleType) {
        assert_eq!(self.types.get(name), Some(&kind), "family {name}; the scrape:\n{}", self.text);
    }

    /// The sum of the samples of `name` that carry every label of `labels`
    /// (a histogram's `_count` and `_sum` are samples of their own).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                _ => panic!("{name} is not a single number"),
            })
            .sum()
    }

    /// The label values of `label` among the samples of `name`.
    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| s.labels.get(label).map(str::to_string))
            .collect();
        v.sort();
        v
    }
}

use SampleType::{Counter, Gauge, Histogram};

const PROCESS: &[(&str, SampleType)] = &[
    ("shoal_process_resident_memory_bytes", Gauge),
    ("shoal_process_cpu_seconds_total", Counter),
    ("shoal_process_open_fds", Gauge),
    ("shoal_process_threads", Gauge),
];

const META: &[(&str, SampleType)] = &[
    ("shoal_meta_raft_term", Gauge),
    ("shoal_meta_raft_is_leader", Gauge),
    ("shoal_meta_raft_last_log_index", Gauge),
    ("shoal_meta_raft_commit_index", Gauge),
    ("shoal_meta_raft_log_fsyncs_total", Counter),
    ("shoal_meta_raft_log_entries_total", Counter),
    ("shoal_meta_raft_applied_index", Gauge),
    ("shoal_meta_raft_snapshot_index", Gauge),
    ("shoal_meta_proposals_total", Counter),
    ("shoal_meta_proposal_seconds", Histogram),
    ("shoal_meta_proposed_entries_total", Counter),
    ("shoal_meta_snapshots_built_total", Counter),
    ("shoal_meta_snapshot_build_seconds", Histogram),
    ("shoal_meta_snapshots_installed_total", Counter),
    ("shoal_meta_files", Gauge),
    ("shoal_meta_directories", Gauge),
    ("shoal_meta_chunks", Gauge),
    ("shoal_meta_file_bytes", Gauge),
    ("shoal_meta_replica_bytes", Gauge),
    ("shoal_meta_chunks_under_replicated", Gauge),
    ("shoal_meta_chunks_missing", Gauge),
    ("shoal_meta_chunks_corrupt", Gauge),
    ("shoal_meta_chunks_over_replicated", Gauge),
    ("shoal_meta_chunk_servers", Gauge),
    ("shoal_meta_repairs_in_flight", Gauge),
    ("shoal_meta_repair_moves_pending", Gauge),
    ("shoal_meta_repair_copies_total", Counter),
    ("shoal_meta_repair_bytes_copied_total", Counter),
    ("shoal_meta_lock_sessions", Gauge),
    ("shoal_meta_lock_holders", Gauge),
    ("shoal_meta_lock_waiters", Gauge),
    // Raft's calls reach every follower, clients' the leader.
    ("shoal_rpc_requests_total", Counter),
    ("shoal_rpc_duration_seconds", Histogram),
];

const CHUNK: &[(&str, SampleType)] = &[
    ("shoal_chunk_read_bytes_total", Counter),
    ("shoal_chunk_read_seconds", Histogram),
    ("shoal_chunk_written_bytes_total", Counter),
    ("shoal_chunk_write_seconds", Histogram),
    ("shoal_chunk_fsync_seconds", Histogram),
    ("shoal_chunk_checksum_failures_total", Counter),
    ("shoal_chunk_corrupt_replicas", Gauge),
    ("shoal_chunk_disk_used_bytes", Gauge),
    ("shoal_chunk_disk_free_bytes", Gauge),
    ("shoal_chunk_disk_capacity_bytes", Gauge),
    ("shoal_chunk_replicas", Gauge),
    ("shoal_chunk_spare_files", Gauge),
    ("shoal_chunk_scrub_verified_bytes_total", Counter),
    ("shoal_chunk_scrub_passes_total", Counter),
    ("shoal_chunk_scrub_pass_progress_ratio", Gauge),
    ("shoal_chunk_copies_total", Counter),
    ("shoal_chunk_copy_bytes_total", Counter),
    ("shoal_chunk_copy_seconds", Histogram),
    ("shoal_chunk_heartbeats_total", Counter),
];

fn addrs(v: &[Option<String>]) -> Vec<String> {
    v.iter().map(|a| a.clone().expect("the node has an HTTP port")).collect()
}

/// Scrapes every address until `done` holds for all of them, patiently.
fn scrape_until(addrs: &[String], what: &str, done: impl Fn(usize, &Metrics) -> bool) -> Vec<Metrics> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let all: Vec<Metrics> = addrs.iter().map(|a| scrape(a)).collect();
        if all.iter().enumerate().all(|(i, m)| done(i, m)) {
            return all;
        }
        assert!(Instant::now() < deadline, "{what}: never true; the last scrapes:\n{}", all[0].text);
        std::thread::sleep(Duration::from_millis(200));
    }
}

const PREPARE_WRITE: &str = "shoal.meta.v1.Namespace/PrepareWrite";
const CHUNK_WRITE: &str = "shoal.chunk.v1.Chunk/Write";

#[test]
fn t92_every_node_serves_prometheus_text_and_counters_move_after_a_put() {
    let c = Cluster::start(Options { meta_nodes: 3, chunk_nodes: 3, replication: 3, http: true, ..Options::default() });
    let metas = addrs(&c.meta_http);
    let chunks = addrs(&c.chunk_http);
    let leader = c.wait_leader();

    // Every node: parseable text, the families of its role, one leader.
    // (A follower counts a call once it has answered one: Raft's heartbeats
    // reach it within moments of the election.)
    let before_meta =
        scrape_until(&metas, "exactly the leader says it leads, every node has answered a call", |i, m| {
            m.sum("shoal_meta_raft_is_leader", &[]) == f64::from(i == leader)
                && m.sum("shoal_rpc_requests_total", &[]) > 0.0
                // (the sampler's view of the term, once a second)
                && m.sum("shoal_meta_raft_term", &[]) >= 1.0
        });
    let before_chunk = scrape_until(&chunks, "disk gauges after a heartbeat", |_, m| {
        m.sum("shoal_chunk_disk_capacity_bytes", &[]) > 0.0
    });
    for m in &before_meta {
        for (name, kind) in META.iter().chain(PROCESS) {
            m.must_have(name, *kind);
        }
        assert!(m.sum("shoal_meta_raft_term", &[]) >= 1.0);
        assert!(m.sum("shoal_process_resident_memory_bytes", &[]) > 0.0);
        assert!(m.sum("shoal_rpc_requests_total", &[]) > 0.0, "Raft's calls on followers, clients' on the leader");
    }
    for m in &before_chunk {
        for (name, kind) in CHUNK.iter().chain(PROCESS) {
            m.must_have(name, *kind);
        }
        assert!(m.sum("shoal_chunk_heartbeats_total", &[("result", "ok")]) >= 1.0);
    }
    let l = &before_meta[leader];
    assert_eq!(l.sum("shoal_meta_chunk_servers", &[("state", "alive")]), 3.0, "the leader hears every chunk server");
    assert_eq!(l.label_values("shoal_meta_raft_replication_lag_entries", "follower").len(), 2, "a lag per follower");

    // A put of three chunks, each on every chunk server.
    let size = 2_500_000usize;
    let local = tempfile::tempdir().unwrap();
    let src = local.path().join("src");
    std::fs::write(&src, pattern(size, 92)).unwrap();
    c.must(&["mkdir", "/m"], None);
    c.must_put(&src, "/m/data");

    let after_meta = scrape_until(&metas[leader..=leader], "the leader's gauges catch up with the put", |_, m| {
        m.sum("shoal_meta_files", &[]) == 1.0 && m.sum("shoal_meta_chunks", &[]) == 3.0
    });
    let (b, a) = (&before_meta[leader], &after_meta[0]);
    let ok = [("result", "ok")];
    assert!(a.sum("shoal_meta_proposals_total", &ok) > b.sum("shoal_meta_proposals_total", &ok));
    assert!(a.sum("shoal_meta_proposal_seconds_count", &[]) > b.sum("shoal_meta_proposal_seconds_count", &[]));
    // Every entry was made durable by some fsync round, never more rounds than entries.
    let (fsyncs, entries) = ("shoal_meta_raft_log_fsyncs_total", "shoal_meta_raft_log_entries_total");
    assert!(a.sum(entries, &[]) > b.sum(entries, &[]) && a.sum(fsyncs, &[]) > b.sum(fsyncs, &[]));
    assert!(
        a.sum(fsyncs, &[]) <= a.sum(entries, &[]),
        "{} rounds, {} entries",
        a.sum(fsyncs, &[]),
        a.sum(entries, &[])
    );
    // Three chunks: the create prepared the first, PrepareWrite the other two.
    let prepares = [("method", PREPARE_WRITE), ("code", "OK")];
    assert!(a.sum("shoal_rpc_requests_total", &prepares) >= 2.0 + b.sum("shoal_rpc_requests_total", &prepares));
    assert!(a.sum("shoal_rpc_duration_seconds_count", &[("method", PREPARE_WRITE)]) >= 2.0);
    assert_eq!(a.sum("shoal_meta_file_bytes", &[]), size as f64);
    assert_eq!(a.sum("shoal_meta_replica_bytes", &[]), 3.0 * size as f64);
    assert_eq!(a.sum("shoal_meta_directories", &[]), 2.0, "/ and /m");
    assert_eq!(a.sum("shoal_meta_chunks_under_replicated", &[]) + a.sum("shoal_meta_chunks_missing", &[]), 0.0);

    let after_chunk = scrape_until(&chunks, "every chunk server reports its replicas", |_, m| {
        m.sum("shoal_chunk_replicas", &[]) == 3.0
    });
    for (b, a) in before_chunk.iter().zip(&after_chunk) {
        let written = a.sum("shoal_chunk_written_bytes_total", &[]) - b.sum("shoal_chunk_written_bytes_total", &[]);
        assert!(written >= size as f64, "every replica wrote the whole file: {written}");
        assert!(a.sum("shoal_chunk_fsync_seconds_count", &[]) >= 3.0 + b.sum("shoal_chunk_fsync_seconds_count", &[]));
        assert!(a.sum("shoal_chunk_write_seconds_count", &[]) > b.sum("shoal_chunk_write_seconds_count", &[]));
        assert!(a.sum("shoal_rpc_requests_total", &[("method", CHUNK_WRITE), ("code", "OK")]) >= 3.0);
        assert!(a.sum("shoal_chunk_disk_used_bytes", &[]) >= size as f64);
    }

    // The Grafana dashboard in deploy/ names only families the nodes serve.
    let mut families: HashMap<String, SampleType> = HashMap::new();
    for m in after_meta.iter().chain(&after_chunk).chain(&before_meta) {
        families.extend(m.types.iter().map(|(k, v)| (k.clone(), *v)));
    }
    for name in dashboard_metric_names() {
        let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
        let known = match histogram {
            Some(base) if families.get(base) == Some(&Histogram) => true,
            _ => families.contains_key(&name),
        };
        assert!(known, "deploy/grafana-dashboard.json names {name}, which no node serves");
    }

    // A read moves the read counters of the replicas it read from.
    assert_eq!(c.must_cat("/m/data").len(), size);
    let read = |all: &[Metrics]| -> f64 { all.iter().map(|m| m.sum("shoal_chunk_read_bytes_total", &[])).sum() };
    let after_read = scrape_until(&chunks, "reads are counted", |_, _| true);
    assert!(read(&after_read) - read(&after_chunk) >= size as f64, "the cat read every byte once at least");
    let reads: f64 = after_read.iter().map(|m| m.sum("shoal_chunk_read_seconds_count", &[])).sum();
    assert!(reads >= 3.0, "one timed disk read per chunk at least");
}

/// Every `shoal_...` name in the queries of `deploy/grafana-dashboard.json`.
fn dashboard_metric_names() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut names = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("shoal_") {
                let tail = &rest[at..];
                let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
                names.push(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    assert!(names.len() > 30, "the dashboard's queries: {names:?}");
    names
}

/// Runs `shoal ARGS` that must exit on its own within 20 s.
fn must_exit(args: &[&str]) -> std::process::Output {
    let mut child = shoal_command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("shoal {args:?} kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn t92_http_on_a_taken_port_or_a_bad_address_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let data = dir.path().join("meta").display().to_string();
    let meta = ["meta", "--id", "1", "--listen", &listen, "--peers", &format!("1={listen}"), "--dir", &data];

    // An address that is not one is bad usage.
    let out = must_exit(&[&meta[..], &["--http", "nowhere"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--http"), "{}", stderr(&out));

    // A taken port stops the start with the address and the reason.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    for args in [&meta[..], &["chunk", "--listen", &listen, "--dir", &data]] {
        let out = must_exit(&[args, &["--http", &addr]].concat());
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(&format!("binding the HTTP port {addr}")) && err.contains("in use"), "{err}");
    }
}
