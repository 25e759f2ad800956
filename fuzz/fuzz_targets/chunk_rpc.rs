//! The chunk service's handlers (`Write`, `Read`, `Replicate`) called in
//! process with arbitrary protobuf messages, on a chunk store in a temporary
//! directory.
//!
//! **Input.** Up to [`CALLS_MAX`] calls. Each starts with one selector byte:
//! its value modulo 3 picks the handler (0 `Write`, 1 `Read`, 2
//! `Replicate`); of the value divided by 3, bit 0 makes the caller a client
//! identity (which must hold a capability) rather than a node (which needs
//! none), and bit 1 has the target sign a valid capability for exactly the
//! chunk, version and mode of the request in place of the fuzzed one, so
//! the checks are passed and the store is reached as a client. `Write` then
//! takes a count byte (up to [`WRITE_MESSAGES_MAX`] messages); every message
//! is a little-endian `u16` length and that many bytes, decoded with `prost`
//! (an input that does not decode ends the sequence).
//!
//! **How the handlers are reached.** The service checks capabilities against
//! the TLS peer's certificate, which an in-process call has none of, so
//! `Write` and `Read` are called one level down, with the caller's identity
//! given: `ChunkService::write_stream` (the whole `Write`, fed the decoded
//! messages as its stream) and `ChunkService::read_as` (the whole `Read`);
//! the read answer is drained. `Replicate` goes through the tonic trait.
//!
//! **Changed, and why.** The service never dials a fuzzed address: a write's
//! `downstream` replicas and a replicate's `sources` are each replaced by
//! 127.0.0.1:1 (where nothing listens, so the connection is refused at
//! once), and at most [`PEERS_MAX`] are kept. So the chain forwarding and
//! the copy are exercised only up to their failure.
//!
//! **Findings.** A panic anywhere (libfuzzer-sys aborts on any panic, on any
//! thread); a call that has not answered after [`CALL_TIMEOUT`] (a refused
//! connection answers at once; the pool's connect timeout is 2 s); a read
//! piece whose checksum does not match its bytes; or a store that counts
//! more bytes used than its capacity. An error answer is not a finding.
//!
//! **State.** The store lives in a temporary directory (on /dev/shm where it
//! exists) and is replaced by a fresh one every [`RESET_EVERY`] inputs, so a
//! finding may depend on the inputs before it since the last reset; the last
//! one is removed at exit (not after a crash).
#![no_main]

#[path = "../common/scratch.rs"]
mod scratch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use shoal_chunk::service::ChunkService;
use shoal_chunk::store::ChunkStore;
use shoal_proto::capability::{self, CapabilityKey, Grant, Mode};
use shoal_proto::chunk::chunk_server::Chunk;
use shoal_proto::chunk::{Capability, ReadRequest, ReplicateRequest, WriteMessage};
use shoal_proto::pool::ChannelPool;
use tokio_stream::StreamExt;
use tonic::{Request, Status};

/// Calls in one input, at most.
const CALLS_MAX: usize = 16;
/// Messages of one write stream, at most.
const WRITE_MESSAGES_MAX: u8 = 8;
/// Longest any call may take before it counts as hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Inputs served by one store before it is replaced by a fresh one.
const RESET_EVERY: u64 = 500;
/// The store's capacity and largest chunk: small, so the space checks are reached.
const CAPACITY_BYTES: u64 = 16 << 20;
const CHUNK_SIZE_MAX_BYTES: u64 = 1 << 20;
/// Where replicas and sources point: a port nothing listens on.
const REFUSING: &str = "127.0.0.1:1";
/// Downstream replicas or copy sources kept from a request, at most.
const PEERS_MAX: usize = 2;
/// The identity a client call is made as.
const CLIENT: &str = "shoal://user/fuzz";

/// The runtime, the capability key and the current store.
struct Harness {
    rt: tokio::runtime::Runtime,
    key: CapabilityKey,
    store: Option<Store>,
}

/// One chunk service on its own store, and what it has served.
struct Store {
    service: ChunkService,
    inputs: u64,
    /// Kept so the directory lives as long as this (removed on drop).
    _dir: tempfile::TempDir,
}

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

fn fresh_store(key: &CapabilityKey) -> Store {
    let dir = scratch::fresh("shoal-fuzz-chunk-");
    let store = ChunkStore::open(dir.path(), CAPACITY_BYTES, CHUNK_SIZE_MAX_BYTES).expect("the store opens");
    let service = ChunkService {
        store: Arc::new(store),
        pool: Arc::new(ChannelPool::with_transport(shoal_proto::Transport::Insecure)),
        self_addr: "127.0.0.1:2".into(),
        capabilities: Some(key.clone()),
    };
    Store { service, inputs: 0, _dir: dir }
}

/// Takes one length-prefixed message off `rest`; None if the input ended or
/// the bytes do not decode.
fn next<M: Message + Default>(rest: &mut &[u8]) -> Option<M> {
    let [lo, hi, tail @ ..] = *rest else { return None };
    let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
    let (bytes, tail) = tail.split_at(len);
    *rest = tail;
    M::decode(bytes).ok()
}

/// Every fuzzed address replaced by [`REFUSING`], at most [`PEERS_MAX`] kept.
fn refusing(addrs: &mut Vec<String>) {
    addrs.truncate(PEERS_MAX);
    addrs.iter_mut().for_each(|a| *a = REFUSING.into());
}

/// A valid capability for [`CLIENT`] to `mode` `version` of `chunk_id`.
fn valid(key: &CapabilityKey, chunk_id: u64, version: u64, mode: Mode) -> Capability {
    let expires_at_ms = capability::expiry_from(capability::now_ms(), capability::LIFETIME_DEFAULT);
    key.sign(&Grant { chunk_id, version, identity: CLIENT.into(), mode, expires_at_ms })
}

/// Runs `call` within [`CALL_TIMEOUT`]; panics with `what` if it hangs.
fn run<T>(rt: &tokio::runtime::Runtime, what: &str, call: impl Future<Output = T>) -> T {
    match rt.block_on(async { tokio::time::timeout(CALL_TIMEOUT, call).await }) {
        Ok(answer) => answer,
        Err(_) => panic!("{what} did not answer within {CALL_TIMEOUT:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut guard = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    let harness = guard.get_or_insert_with(|| Harness {
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"),
        key: CapabilityKey::new(&shoal_tls::ClusterKey([7; 32])),
        store: None,
    });
    if harness.store.as_ref().is_some_and(|s| s.inputs >= RESET_EVERY) {
        harness.store = None;
    }
    let Harness { rt, key, store } = harness;
    let store = store.get_or_insert_with(|| fresh_store(key));
    store.inputs += 1;
    let svc = &store.service;

    let mut rest = data;
    for _ in 0..CALLS_MAX {
        let [sel, tail @ ..] = rest else { break };
        rest = tail;
        let flags = sel / 3;
        let holder = (flags & 1 != 0).then(|| CLIENT.to_string());
        let sign = flags & 2 != 0;
        let what = match sel % 3 {
            0 => {
                let [count, tail @ ..] = rest else { break };
                rest = tail;
                let mut messages = Vec::new();
                for _ in 0..(*count).min(WRITE_MESSAGES_MAX) {
                    let Some(m) = next::<WriteMessage>(&mut rest) else { break };
                    messages.push(m);
                }
                if let Some(h) = messages.first_mut().and_then(|m| m.header.as_mut()) {
                    refusing(&mut h.downstream);
                    if sign {
                        h.capability = Some(valid(key, h.chunk_id, h.version, Mode::Write));
                    }
                }
                let what = format!("write as {holder:?}: {messages:?}");
                let stream = tokio_stream::iter(messages.into_iter().map(Ok::<_, Status>));
                let _ = run(rt, &what, svc.write_stream(holder, stream));
                what
            }
            1 => {
                let Some(mut r) = next::<ReadRequest>(&mut rest) else { break };
                if sign {
                    r.capability = Some(valid(key, r.chunk_id, r.version, Mode::Read));
                }
                let what = format!("read as {holder:?}: {r:?}");
                run(rt, &what, async {
                    let Ok(answer) = svc.read_as(holder, r).await else { return };
                    let mut pieces = answer.into_inner();
                    while let Some(Ok(piece)) = pieces.next().await {
                        let sum = shoal_core::checksum::crc32c(&piece.data);
                        assert_eq!(piece.crc32c, Some(sum), "a read piece's checksum does not match its bytes");
                    }
                });
                what
            }
            _ => {
                let Some(mut r) = next::<ReplicateRequest>(&mut rest) else { break };
                refusing(&mut r.sources);
                let what = format!("replicate {r:?}");
                let _ = run(rt, &what, Chunk::replicate(svc, Request::new(r)));
                what
            }
        };
        let used = svc.store.used_bytes();
        assert!(used <= CAPACITY_BYTES, "after {what}: {used} bytes used, over the capacity of {CAPACITY_BYTES}");
    }
});
