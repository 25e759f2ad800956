//! Micro-benchmarks of the metadata state machine: [`FsState::apply`] of a
//! Create into a directory that already holds 10,000 files (fresh names each
//! time), with and without a request id, and of a Mkdir there.
//!
//! This is the in-memory apply that every meta node runs for each committed
//! Raft entry: no log write, no fsync, no network, no serialization. Between
//! measured runs of [`BATCH`] applies, the state is reset (untimed) to a
//! clone of the 10,000-file one, so the directory holds 10,000 to 11,000
//! entries while it is measured and the same fresh names can be reused.
//! Run with `cargo bench -p shoal-meta`.

use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use shoal_core::NormalPath;
use shoal_meta::fsm::{FsState, NamespaceCmd, Proposal, RequestId, Response};

/// Files in the directory before the measured applies.
const FILES_BEFORE: u64 = 10_000;
/// Applies measured on one copy of the populated state.
const BATCH: u64 = 1_000;
/// The directory that holds the files.
const DIR: &str = "/bench";
/// Leader time of every proposal: constant, so no idle-client sweep runs.
const NOW_MS: u64 = 1_000;
/// The client that sends the proposals with a request id.
const CLIENT: u64 = 7;

fn path(s: &str) -> NormalPath {
    NormalPath::parse(s).expect("valid path")
}

fn create(name: &str, request: Option<RequestId>) -> Proposal {
    let cmd = NamespaceCmd::Create {
        path: path(&format!("{DIR}/{name}")),
        replication: 2,
        chunk_size: 64 << 20,
        open_existing: false,
    };
    Proposal::new(NOW_MS, request, cmd)
}

/// The state every measured batch starts from: `DIR` with `FILES_BEFORE` files.
fn populated() -> FsState {
    let mut st = FsState::default();
    let mkdir = NamespaceCmd::Mkdir { path: path(DIR), parents: false };
    assert!(matches!(st.apply(&Proposal::new(NOW_MS, None, mkdir)), Response::Inode(_)));
    for i in 0..FILES_BEFORE {
        assert!(matches!(st.apply(&create(&format!("f{i:05}"), None)), Response::Inode(_)));
    }
    assert_eq!(st.lookup(&path(DIR)).expect("dir").children.len() as u64, FILES_BEFORE);
    st
}

/// Benches applying `proposals` (BATCH of them, each valid on `base`) in order.
fn bench_applies(group: &mut BenchmarkGroup<WallTime>, name: &str, base: &FsState, proposals: &[Proposal]) {
    assert_eq!(proposals.len() as u64, BATCH);
    // Every proposal must do the real work once: each one answers an inode.
    let mut check = base.clone();
    for p in proposals {
        assert!(matches!(check.apply(p), Response::Inode(_)), "{name}: {p:?}");
    }
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(BATCH);
                let mut st = base.clone();
                let start = Instant::now();
                for p in &proposals[..n as usize] {
                    std::hint::black_box(st.apply(std::hint::black_box(p)));
                }
                spent += start.elapsed();
                left -= n;
            }
            spent
        })
    });
}

fn apply(c: &mut Criterion) {
    let base = populated();
    let mut group = c.benchmark_group("fsm_apply");
    // One element is one apply, so criterion also reports applies per second.
    group.throughput(Throughput::Elements(1));
    let plain: Vec<Proposal> = (0..BATCH).map(|i| create(&format!("new{i:05}"), None)).collect();
    bench_applies(&mut group, "create_in_10k_dir", &base, &plain);

    // A client that has the answers of all its earlier requests: meta keeps
    // this one's answer and drops the one before.
    let requested: Vec<Proposal> = (0..BATCH)
        .map(|i| {
            let request = RequestId { client: CLIENT, seq: i + 1, done_below: i + 1 };
            create(&format!("new{i:05}"), Some(request))
        })
        .collect();
    bench_applies(&mut group, "create_in_10k_dir_with_request_id", &base, &requested);

    let mkdirs: Vec<Proposal> = (0..BATCH)
        .map(|i| {
            let cmd = NamespaceCmd::Mkdir { path: path(&format!("{DIR}/dir{i:05}")), parents: false };
            Proposal::new(NOW_MS, None, cmd)
        })
        .collect();
    bench_applies(&mut group, "mkdir_in_10k_dir", &base, &mkdirs);
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
