//! t56: every `shoal bench` workload that runs against a cluster keeps its
//! `--json` contract: one JSON object with the workload, `ops_per_sec`,
//! `mb_per_sec` and latency percentiles, for the number of operations asked.
//! Figures are not judged here (no test passes or fails on speed).

use crate::common::*;

#[test]
fn t56_bench_workloads_print_their_json_contract() {
    let c = Cluster::start(Options::default());
    let runs: [(&str, &[&str], u64); 9] = [
        ("seq-write", &["--size", "3MiB"], 2),
        ("seq-read", &["--size", "3MiB", "--keep"], 1),
        ("small-write", &["--clients", "2", "--count", "20", "--size", "4KiB", "--keep"], 20),
        ("small-read", &["--clients", "2", "--count", "20", "--size", "4KiB", "--keep"], 20),
        ("mixed", &["--clients", "2", "--count", "20", "--size", "4KiB"], 20),
        ("meta", &["--clients", "2", "--count", "10"], 50),
        ("lock", &["--clients", "3", "--count", "12"], 12),
        ("meta-scale", &["--clients", "4", "--files", "1200"], 1200),
        ("rand-read", &["--clients", "2", "--count", "30", "--span", "2MiB"], 30),
    ];
    let mut scale = serde_json::Value::Null;
    for (workload, flags, ops) in runs {
        let mut args = vec!["bench", workload, "--json"];
        args.extend_from_slice(flags);
        let out = c.must(&args, None);
        let text = String::from_utf8(out.stdout).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("{workload}: not one JSON object ({e}): {text}"));
        assert_eq!(v["workload"], workload, "{text}");
        assert_eq!(v["ops"].as_u64(), Some(ops), "{workload}: {text}");
        assert!(v["ops_per_sec"].as_f64().is_some_and(|x| x > 0.0), "{workload}: {text}");
        assert!(v["mb_per_sec"].as_f64().is_some(), "{workload}: {text}");
        let lat = &v["latency_ms"];
        let (p50, p99, max) =
            (lat["p50"].as_f64().unwrap(), lat["p99"].as_f64().unwrap(), lat["max"].as_f64().unwrap());
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{workload}: percentiles out of order: {text}");
        if workload == "meta-scale" {
            scale = v;
        }
    }
    // meta-scale found the meta node by its address and read its memory, and
    // timed a snapshot of the 1,200 files (2 directories) it made.
    let memory = scale["memory"].as_array().unwrap();
    assert_eq!(memory.len(), 1, "{scale}");
    assert!(memory[0]["after_bytes"].as_u64().is_some_and(|b| b > 1 << 20), "{scale}");
    assert!(memory[0]["bytes_per_file"].as_f64().is_some(), "{scale}");
    // Group commit may put several creates into one log entry, so the
    // snapshot's index is not bounded below by the number of files; its size is.
    let snapshot = &scale["snapshot"];
    assert!(snapshot["index"].as_u64().is_some_and(|i| i > 2), "{scale}");
    assert!(snapshot["size_bytes"].as_u64().is_some_and(|b| b > 1200 * 8), "{scale}");
    assert!(scale["stall"]["stat_longest_gap_ms"].as_f64().is_some_and(|g| g > 0.0), "{scale}");
    assert!(scale["stall"]["create_longest_gap_ms"].as_f64().is_some_and(|g| g > 0.0), "{scale}");
    assert!(scale["restart"].is_null(), "{scale}");
    // Without --keep it removed its namespace.
    let out = c.shoal(&["ls", "/.bench/scale"], None);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // The last run had no --keep: it removed the bench directory.
    let out = c.shoal(&["ls", "/.bench"], None);
    assert!(!out.status.success() && stderr(&out).contains("no such file"), "{}", stderr(&out));
}
