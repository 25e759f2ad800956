//! Where a meta node's memory per file goes: the heap the state machine
//! holds for a namespace of `FILES` empty files, built the way a cluster
//! builds it (one `Create` proposal per file, with request ids from
//! `CLIENTS` clients, in directories of 1,000), counted by a global
//! allocator that tracks live bytes, and the resident memory (`VmRSS`) of
//! this process beside it, before and after what a snapshot build does to
//! the heap (a clone of the state, encoded, then dropped).
//!
//! The breakdown builds the two maps a file lives in on their own: the
//! inode table (as a plain `BTreeMap<u64, Inode>` for comparison, and as
//! the state's copy-on-write `InodeTable`) and a directory's entries
//! (`BTreeMap<Box<str>, u64>`). It also times the clone a snapshot build
//! takes under the state's lock, alone and with a garbage record per file
//! (as after a large delete; the records name chunk ids past
//! `next_chunk_id`, which only the invariant checks would mind), and
//! measures what one chunk per file adds, and what the first change to a
//! directory of a million names costs after a copy, and what a copy of a
//! table of ten million keys costs. Run with
//! `cargo bench -p shoal-meta --bench state_memory` (release mode); the
//! figures are what `shoal bench meta-scale` measures from outside.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use shoal_core::NormalPath;
use shoal_meta::format::{self, RecordKind};
use shoal_meta::fsm::cow_map::CowMap;
use shoal_meta::fsm::table::InodeTable;
use shoal_meta::fsm::{ChunkMeta, Entries, FsState, Inode, Kind, NamespaceCmd, Proposal, RequestId};
use shoal_meta::sm_store::{PersistedSnapshot, SmBody};

/// Files in the namespace.
const FILES: u64 = 200_000;
/// Files per directory.
const PER_DIR: u64 = 1000;
/// Names in the one big directory measured on its own.
const BIG_DIR: u64 = 1_000_000;
/// Keys in the copy-on-write map whose copy is timed on its own (the
/// inode table at ten million files).
const BIG_TABLE: u64 = 10_000_000;
/// Clients the creates come from, one request in flight each.
const CLIENTS: u64 = 16;

/// The system allocator, counting live bytes and live allocations.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to `System` unchanged; the counters are only read.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live heap bytes and allocations now.
fn live() -> (usize, usize) {
    (LIVE_BYTES.load(Ordering::Relaxed), LIVE_ALLOCS.load(Ordering::Relaxed))
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024
}

fn per_file(bytes: usize) -> f64 {
    bytes as f64 / FILES as f64
}

fn path(s: &str) -> NormalPath {
    NormalPath::parse(s).expect("a valid path")
}

/// The namespace, built through `apply` as a cluster builds it.
fn build() -> FsState {
    let mut st = FsState::default();
    let mut seqs = [0u64; CLIENTS as usize];
    for d in 0..FILES.div_ceil(PER_DIR) {
        st.apply(&Proposal::new(1, None, NamespaceCmd::Mkdir { path: path(&format!("/scale/d{d}")), parents: true }));
    }
    for i in 0..FILES {
        let client = i % CLIENTS;
        seqs[client as usize] += 1;
        let seq = seqs[client as usize];
        let request = RequestId { client: client + 1, seq, done_below: seq };
        let cmd = NamespaceCmd::Create {
            path: path(&format!("/scale/d{}/f{i}", i / PER_DIR)),
            replication: 2,
            chunk_size: 64 << 20,
            open_existing: false,
        };
        st.apply(&Proposal::new(2 + i, Some(request), cmd));
    }
    st
}

/// The entries of `FILES` files in directories of `PER_DIR`, each name
/// inserted on its own, in the order creates make them.
fn directories<M: Default + Extend<(Box<str>, u64)>>() -> Vec<M> {
    (0..FILES / PER_DIR)
        .map(|d| {
            let mut entries = M::default();
            entries.extend((0..PER_DIR).map(|f| (Box::<str>::from(format!("f{}", d * PER_DIR + f)), f)));
            entries
        })
        .collect()
}

/// A directory of [`BIG_DIR`] names: the first change to it after a copy
/// of the state copies its inode, so what copying its entries costs is how
/// long that change makes applies wait; as a `BTreeMap` (every name) and as
/// `Entries` (the page index, then the one page changed).
fn big_directory() {
    let names = || (0..BIG_DIR).map(|i| (Box::<str>::from(format!("f{i}")), i));
    let (b, _) = live();
    let map: BTreeMap<Box<str>, u64> = names().collect();
    let map_bytes = live().0 - b;
    let started = std::time::Instant::now();
    let copy = map.clone();
    let map_ms = started.elapsed().as_secs_f64() * 1e3;
    drop((copy, map));
    let (b, _) = live();
    let mut entries = Entries::default();
    for (name, id) in names() {
        entries.insert(name, id);
    }
    let entries_bytes = live().0 - b;
    let started = std::time::Instant::now();
    let mut copy = entries.clone();
    copy.insert("g".into(), 0);
    let entries_ms = started.elapsed().as_secs_f64() * 1e3;
    assert_eq!((copy.len(), entries.len()), (BIG_DIR as usize + 1, BIG_DIR as usize));
    println!(
        "a directory of {BIG_DIR} names, its first change after a copy: BTreeMap {map_ms:.1} ms ({:.0} bytes/name), \
         Entries {entries_ms:.2} ms ({:.0} bytes/name)",
        map_bytes as f64 / BIG_DIR as f64,
        entries_bytes as f64 / BIG_DIR as f64
    );
}

/// A copy of a [`CowMap`] of [`BIG_TABLE`] keys, as a snapshot build or a
/// whole-state pass takes of the inode table under the state's lock at ten
/// million files (the values are shared, so their type does not matter);
/// the best of three.
fn big_table() {
    let map: CowMap<u64> = (0..BIG_TABLE).map(|k| (k, k)).collect();
    let best = (0..3)
        .map(|_| {
            let started = std::time::Instant::now();
            let copy = map.clone();
            let ms = started.elapsed().as_secs_f64() * 1e3;
            drop(copy);
            ms
        })
        .fold(f64::INFINITY, f64::min);
    println!("a copy of a table of {BIG_TABLE} keys (applies wait this long): {best:.2} ms");
}

fn main() {
    println!("sizes: Inode {} bytes, (u64, Inode) {} bytes", size_of::<Inode>(), size_of::<(u64, Inode)>());
    let (b0, a0) = live();
    let r0 = rss_bytes();
    let st = build();
    assert_eq!(st.inodes.len() as u64, 2 + FILES + FILES.div_ceil(PER_DIR), "every create applied");
    let (b1, a1) = live();
    let r1 = rss_bytes();
    println!(
        "state of {FILES} files: heap {:.0} bytes/file in {:.2} allocations/file; RSS {:.0} bytes/file",
        per_file(b1 - b0),
        (a1 - a0) as f64 / FILES as f64,
        (r1 - r0) as f64 / FILES as f64
    );

    // The two maps a file lives in, alone.
    let template = st.inodes.values().find(|i| i.children.is_empty()).expect("a file").clone();
    let (b, _) = live();
    // Inserted one at a time in id order, as creates do (not bulk-built,
    // which would fill every node).
    let mut table = BTreeMap::new();
    for id in 0..FILES {
        table.insert(id, Inode { id, ..template.clone() });
    }
    println!("  inode table BTreeMap<u64, Inode>: {:.0} bytes/file", per_file(live().0 - b));
    drop(table);
    let (b, _) = live();
    let mut table = InodeTable::default();
    for id in 0..FILES {
        table.insert(id, Inode { id, ..template.clone() });
    }
    println!("  (as the state keeps it, InodeTable: {:.0} bytes/file)", per_file(live().0 - b));
    drop(table);
    let (b, _) = live();
    let dirs: Vec<BTreeMap<Box<str>, u64>> = directories();
    println!("  directory entries BTreeMap<Box<str>, u64>: {:.0} bytes/file", per_file(live().0 - b));
    drop(dirs);
    let (b, _) = live();
    let dirs: Vec<Entries> = directories();
    println!("  (as the state keeps them, Entries: {:.0} bytes/file)", per_file(live().0 - b));
    drop(dirs);
    let dedup: usize = st.clients.values().map(|c| c.replies.len()).sum();
    println!("  request answers kept: {dedup} (for {} clients)", st.clients.len());

    // What a snapshot build does to the heap: a clone, encoded into a file,
    // then dropped. The clone is taken under the state's lock, so its time is
    // how long applies wait.
    let body = SmBody { fs: st, ..Default::default() };
    let r2 = rss_bytes();
    let started = std::time::Instant::now();
    let copy = body.clone();
    println!("clone of the state (applies wait this long): {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    let snap = PersistedSnapshot {
        meta: openraft::storage::SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "x".into(),
        },
        body: copy,
    };
    // Encoded as a build does: straight into a file, not in memory.
    let file = tempfile::tempfile().expect("a temporary file");
    let started = std::time::Instant::now();
    let written = format::encode_to_file(RecordKind::Snapshot, &snap, &file).expect("encodes");
    let encode_ms = started.elapsed().as_secs_f64() * 1e3;
    let r3 = rss_bytes();
    drop((snap, file));
    let r4 = rss_bytes();
    println!("snapshot encoded to a file: {:.1} MiB in {encode_ms:.0} ms", written as f64 / (1 << 20) as f64);
    println!(
        "snapshot build: RSS {:.0} → {:.0} bytes/file with the copy while it is encoded, {:.0} after it is dropped",
        (r2 - r0) as f64 / FILES as f64,
        (r3 - r0) as f64 / FILES as f64,
        (r4 - r0) as f64 / FILES as f64
    );
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
    println!("  after malloc_trim(0): RSS {:.0} bytes/file", (rss_bytes() - r0) as f64 / FILES as f64);

    // Files with data: one chunk each, as a small file has.
    let mut fs = body.fs;
    // After a large delete, a garbage record per chunk until servers confirm.
    for chunk in 1..=FILES {
        fs.garbage.get_or_insert_default(chunk).extend([1, 2]);
    }
    let started = std::time::Instant::now();
    let copy = fs.clone();
    println!(
        "  with a garbage record per file (after a large delete): clone {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    drop(copy);
    fs.garbage = Default::default();
    let files: Vec<u64> = fs.inodes.values().filter(|i| i.kind == Kind::File).map(|i| i.id).collect();
    let (b, _) = live();
    for (n, id) in files.iter().enumerate() {
        let chunk =
            ChunkMeta { id: n as u64 + 1, version: 1, committed_version: 1, replicas: vec![1, 2], lagging: vec![] };
        fs.inodes.get_mut(id).expect("a file").chunks.insert(0, chunk);
    }
    println!("  one chunk (2 replicas) in each file: {:.0} more heap bytes/file", per_file(live().0 - b));
    drop(fs);
    println!("state dropped: heap {} bytes live, RSS {:.1} MiB", live().0, rss_bytes() as f64 / (1 << 20) as f64);
    big_directory();
    big_table();
}
