//! Micro-benchmark of the block checksum: CRC32C over 4 KiB, 64 KiB (one
//! checksummed block) and 1 MiB buffers.
//!
//! Every chunk write and every verified read pays this per byte, so it is
//! reported as throughput. Run with `cargo bench -p shoal-core`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shoal_core::checksum::crc32c;

/// Buffer sizes, as (label, bytes).
const SIZES: [(&str, usize); 3] = [("4KiB", 4 << 10), ("64KiB", 64 << 10), ("1MiB", 1 << 20)];

fn crc32c_sizes(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for (label, len) in SIZES {
        // Not all zeros, so nothing can take a shortcut on the content.
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &data, |b, data| {
            b.iter(|| crc32c(std::hint::black_box(data)))
        });
    }
    group.finish();
}

criterion_group!(benches, crc32c_sizes);
criterion_main!(benches);
