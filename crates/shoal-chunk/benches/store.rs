//! Micro-benchmarks of the chunk store on a local disk: a 1 MiB write of a
//! fresh chunk, a 4 KiB overwrite of a committed chunk, and 4 KiB and 1 MiB
//! reads of a committed version.
//!
//! These are real disk operations, fsyncs included: a write session makes its
//! undo record durable (file and directory), syncs the data file and replaces
//! the meta (file and directory synced again), so the write figures are
//! mostly the disk's sync latency. The overwrite also saves the 4 KiB it
//! replaces in the undo record and recomputes the checksum of the 64 KiB
//! block it touched. Reads sync nothing and hit the page cache (the chunk
//! was just written), and a 4 KiB read still reads and verifies its whole
//! 64 KiB block. The store lives in a temporary directory under `TMPDIR`
//! (`/tmp` by default): on a tmpfs the fsyncs would cost nothing.
//!
//! Each operation runs on a current-thread tokio runtime; the store does its
//! file IO on tokio's blocking pool, as in the chunk server. Run with
//! `cargo bench -p shoal-chunk`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shoal_chunk::store::ChunkStore;
use tokio::runtime::Runtime;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The largest chunk the store accepts, as a chunk server's default.
const CHUNK_SIZE_MAX_BYTES: u64 = 64 * MIB;
/// The chunk that the overwrite bench rewrites, version after version.
const OVERWRITE_CHUNK_ID: u64 = 1;
/// The chunk that the read benches read, committed once at version 1.
const READ_CHUNK_ID: u64 = 2;
/// Fresh chunks for the write bench take ids from here up, one per write.
const FRESH_CHUNK_ID_FIRST: u64 = 1_000;

/// `len` bytes that are not all alike.
fn pattern(len: u64, seed: u64) -> Bytes {
    (0..len).map(|i| ((i + seed) % 251) as u8).collect::<Vec<u8>>().into()
}

/// One write session of chunk `id` at `version` on `base`: `data` at offset 0, then commit.
async fn must_write(store: &Arc<ChunkStore>, id: u64, version: u64, base: u64, data: Bytes) {
    let mut session = store.begin_write(id, version, base).await.expect("begin_write");
    session.write_at(0, data).await.expect("write_at");
    assert_eq!(session.finish(None, false).await.expect("finish"), version);
}

fn chunk_store(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(ChunkStore::open(dir.path(), u64::MAX, CHUNK_SIZE_MAX_BYTES).expect("open store"));
    let (one_mib, four_kib) = (pattern(MIB, 0), pattern(4 * KIB, 7));
    rt.block_on(async {
        must_write(&store, OVERWRITE_CHUNK_ID, 1, 0, pattern(MIB, 1)).await;
        must_write(&store, READ_CHUNK_ID, 1, 0, one_mib.clone()).await;
    });

    let mut group = c.benchmark_group("chunk_store");

    // A whole append-only session of a chunk that did not exist. Only the
    // session is timed; the chunk is deleted afterwards, untimed, so the disk
    // holds the same few chunks however long the bench runs.
    group.throughput(Throughput::Bytes(MIB));
    let mut next_id = FRESH_CHUNK_ID_FIRST;
    group.bench_function("write_fresh_1MiB", |b| {
        b.iter_custom(|iters| timed_fresh_writes(&rt, &store, &mut next_id, &one_mib, iters))
    });

    // Each iteration writes the next version on top of the previous one (its
    // base), which also lets the store forget the previous undo record.
    group.throughput(Throughput::Bytes(4 * KIB));
    let mut version = 1;
    group.bench_function("overwrite_4KiB", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    must_write(&store, OVERWRITE_CHUNK_ID, version + 1, version, four_kib.clone()).await;
                    version += 1;
                }
                start.elapsed()
            })
        })
    });

    for len in [4 * KIB, MIB] {
        group.throughput(Throughput::Bytes(len));
        let name = if len == MIB { "read_1MiB" } else { "read_4KiB" };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let got = store.read(READ_CHUNK_ID, 0, len, 1).await.expect("read");
                        assert_eq!(got.len() as u64, len);
                        std::hint::black_box(got);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();

    // The bytes read back are the bytes written, so the reads measured real work.
    let got = rt.block_on(store.read(READ_CHUNK_ID, 0, MIB, 1)).expect("read back");
    assert_eq!(got, one_mib);
}

/// Writes `iters` fresh 1 MiB chunks; returns the time spent in the write sessions alone.
fn timed_fresh_writes(rt: &Runtime, store: &Arc<ChunkStore>, next_id: &mut u64, data: &Bytes, iters: u64) -> Duration {
    rt.block_on(async {
        let mut spent = Duration::ZERO;
        for _ in 0..iters {
            let id = *next_id;
            *next_id += 1;
            let start = Instant::now();
            must_write(store, id, 1, 0, data.clone()).await;
            spent += start.elapsed();
            store.delete(id).await.expect("delete");
        }
        spent
    })
}

criterion_group!(benches, chunk_store);
criterion_main!(benches);
