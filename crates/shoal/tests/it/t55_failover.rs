//! t55: failover: `shoal bench failover` kills the meta leader of its own
//! cluster, over a namespace it made first (`--files`), and reports one
//! unavailability window per kill.

use crate::common::*;

#[test]
fn t55_bench_failover_measures_a_window_per_leader_kill() {
    // The bench starts (and kills) a cluster of its own; --meta is not used.
    // Its calls may wait 60 s, not the harness's 20: on two cores beside
    // the rest of the suite, a debug build's nodes have been seen to answer
    // nothing for 20 s while the bench built its files, before any kill.
    let data = tempfile::tempdir().unwrap();
    let out = run_shoal(
        "127.0.0.1:1",
        &[
            "--timeout",
            "60s",
            "bench",
            "failover",
            "--kills",
            "3",
            "--files",
            "1500",
            "--json",
            "--data-dir",
            data.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "bench failover failed ({:?}):\n{}", out.status, stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");

    // Three kills, three windows; the bounds are generous, this is no timing test.
    assert_eq!(v["kills"], 3, "{v}");
    // The 1,500 files made first (two directories) were all there after the
    // kills (the bench fails otherwise), and the report says how many.
    assert_eq!(v["files"], 1500, "{v}");
    let windows: Vec<f64> = v["windows_ms"].as_array().unwrap().iter().map(|w| w.as_f64().unwrap()).collect();
    assert_eq!(windows.len(), 3, "{v}");
    for w in &windows {
        assert!(*w > 0.0 && *w < 30_000.0, "a window of {w} ms: {v}");
    }
    let field = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(field("min_ms") <= field("median_ms") && field("median_ms") <= field("p99_ms"), "{v}");
    assert_eq!(field("p99_ms"), field("max_ms"), "p99 of 3 samples by nearest rank is the max: {v}");
    assert!(field("ops_per_sec") > 0.0 && v["ops"].as_u64().unwrap() > 0, "the workload ran: {v}");

    // Every killed leader was started again: 3 first starts, then one per round.
    let starts: usize = (1..=3)
        .map(|i| std::fs::read_to_string(data.path().join(format!("meta-{i}.log"))).unwrap())
        .map(|log| log.matches("meta node serving").count())
        .sum();
    assert_eq!(starts as u64, 3 + 3 + v["discarded"].as_u64().unwrap(), "{v}");
}
