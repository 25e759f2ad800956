//! Size and speed of a large snapshot in each encoding: format 0 (JSON) and
//! format 1 (postcard, with its header and CRC32C; see `shoal_meta::format`).
//!
//! The state holds `FILES` file inodes in `DIRS` directories, each file with
//! one committed chunk on two replicas, as a busy namespace would. Each
//! measurement runs `RUNS` times and prints the fastest and the median, plus
//! how long the clone takes that a snapshot build makes under the state's
//! read lock (the only time a build blocks applies). Not criterion: one run
//! takes seconds. Run with
//! `cargo bench -p shoal-meta --bench snapshot_formats` (release mode).

use std::time::{Duration, Instant};

use openraft::storage::SnapshotMeta;
use openraft::{CommittedLeaderId, LogId};
use shoal_meta::format::{self, RecordKind};
use shoal_meta::fsm::{ChunkMeta, FsState, Inode, Kind, NodeRecord, ROOT_INODE};
use shoal_meta::sm_store::{PersistedSnapshot, SmBody};

/// File inodes in the state.
const FILES: u64 = 1_000_000;
/// Directories under `/` that hold them (500 files each).
const DIRS: u64 = 2_000;
/// Chunk servers, so replica ids look real.
const SERVERS: u64 = 20;
/// Repetitions of each measurement.
const RUNS: usize = 3;

fn inode(id: u64, parent: u64, kind: Kind) -> Inode {
    Inode {
        id,
        parent,
        kind,
        size: 0,
        mode: 0o644,
        mtime_ms: 1_780_000_000_000 + id,
        replication: 2,
        chunk_size: 64 << 20,
        chunks: Default::default(),
        children: Default::default(),
        fence: 0,
        uid: 0,
        gid: 0,
        atime_ns: 0,
        mtime_ns: 0,
        ctime_ns: 0,
        extra: Default::default(),
    }
}

fn state() -> SmBody {
    let mut fs = FsState::default();
    let mut next = ROOT_INODE + 1;
    let mut chunk = 1;
    for s in 1..=SERVERS {
        fs.nodes.insert(s, NodeRecord { id: s, addr: format!("10.0.0.{s}:7110"), draining: false });
    }
    for d in 0..DIRS {
        let dir_id = next;
        next += 1;
        let mut dir = inode(dir_id, ROOT_INODE, Kind::Dir);
        for f in 0..FILES / DIRS {
            let id = next;
            next += 1;
            let mut file = inode(id, dir_id, Kind::File);
            file.size = 3 << 20;
            let replicas = vec![1 + chunk % SERVERS, 1 + (chunk + 1) % SERVERS];
            let meta = ChunkMeta { id: chunk, version: 2, committed_version: 2, replicas, lagging: Vec::new() };
            file.chunks.insert(0, meta);
            chunk += 1;
            dir.children.insert(format!("file-{f:06}.dat").into(), id);
            fs.inodes.insert(id, file);
        }
        fs.inodes.get_mut(&ROOT_INODE).unwrap().children.insert(format!("dir-{d:05}").into(), dir_id);
        fs.inodes.insert(dir_id, dir);
    }
    fs.next_inode = next;
    fs.next_chunk_id = chunk;
    let last = LogId::new(CommittedLeaderId::new(3, 1), 12_345_678);
    SmBody { last_applied: Some(last), fs, ..Default::default() }
}

/// Runs `f` RUNS times; returns (fastest, median) and the last result.
fn time<T>(mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let mut times = Vec::new();
    let mut out = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let v = std::hint::black_box(f());
        times.push(start.elapsed());
        out = Some(v);
    }
    times.sort();
    (times[0], times[RUNS / 2], out.expect("RUNS > 0"))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to choose.
    let start = Instant::now();
    let body = state();
    println!("state: {} inodes ({FILES} files in {DIRS} dirs), built in {}", body.fs.inodes.len(), ms(start.elapsed()));
    let meta = SnapshotMeta {
        last_log_id: body.last_applied,
        last_membership: body.last_membership.clone(),
        snapshot_id: "3-12345678-0".into(),
    };

    let (fast, median, copy) = time(|| body.clone());
    println!("clone (held under the state read lock by a build): fastest {}, median {}", ms(fast), ms(median));
    let snap = PersistedSnapshot { meta, body: copy };

    let (enc_fast, enc_med, json) = time(|| serde_json::to_vec(&snap).unwrap());
    let (dec_fast, dec_med, back) = time(|| serde_json::from_slice::<PersistedSnapshot>(&json).unwrap());
    assert_eq!(back.body.fs, snap.body.fs);
    drop(back);
    println!(
        "format 0 (JSON):     {:>11} bytes; encode fastest {} (median {}); decode fastest {} (median {})",
        json.len(),
        ms(enc_fast),
        ms(enc_med),
        ms(dec_fast),
        ms(dec_med)
    );
    drop(json);

    let (enc_fast, enc_med, bin) = time(|| format::encode(RecordKind::Snapshot, &snap).unwrap());
    let no_upgrade = |v| v;
    let (dec_fast, dec_med, back) =
        time(|| format::decode::<PersistedSnapshot>(RecordKind::Snapshot, &bin, no_upgrade).unwrap());
    assert_eq!(back.body.fs, snap.body.fs);
    drop(back);
    println!(
        "format 1 (postcard): {:>11} bytes; encode fastest {} (median {}); decode fastest {} (median {}) (with header and CRC32C)",
        bin.len(),
        ms(enc_fast),
        ms(enc_med),
        ms(dec_fast),
        ms(dec_med)
    );
    let (fast, median, _) = time(|| format::check(RecordKind::Snapshot, &bin).map(|_| ()).unwrap());
    println!("format 1 header and CRC32C check alone: fastest {}, median {}", ms(fast), ms(median));
}
