//! Every gRPC handler of the meta service (`Namespace`, `Cluster`, `Locks`)
//! called in process with arbitrary protobuf messages, on a single-node
//! meta group that leads.
//!
//! **Input.** Up to [`CALLS_MAX`] calls, each one selector byte (the handler,
//! modulo [`HANDLERS`]: see `call`), a little-endian `u16` length and that
//! many bytes, decoded with `prost` as the handler's request type (an input
//! that does not decode ends the sequence). Each call goes through the
//! tonic trait (`Namespace::create(&service, Request::new(msg))`), as the
//! server would make it after decoding.
//!
//! **Findings.** A panic anywhere (a handler, openraft's core, the state
//! machine's apply: libfuzzer-sys aborts on any panic, on any thread); a
//! call that has not answered after [`CALL_TIMEOUT`] (no handler here may
//! wait that long: see the clamp below; `trigger_snapshot` waits for a
//! snapshot build, which takes milliseconds on a state this small); and,
//! after every call, a broken state-machine invariant
//! (`FsState::check_invariants`), a stopped Raft core, or a node that no
//! longer leads (a lone voter has no one to lose to).
//! An error answer (`Status`) is not a finding.
//!
//! **Left out or changed, and why.**
//! - `Cluster::add_meta` is left out: it adds a learner at the address in the
//!   request, then waits up to a minute for it to catch up over the network.
//!   The only other handler that changes membership, `remove_meta`, is
//!   called (it refuses to remove the last voter).
//! - `Locks::acquire` gets its `wait_ms` clamped to [`ACQUIRE_WAIT_MAX_MS`]:
//!   a queued acquire legitimately waits that long for a grant (up to 2 s in
//!   the service), which would only slow the run down.
//! - The node's background tasks (session expiry, repair, the sampler) are
//!   not started: repair dials the chunk servers that `heartbeat` registered
//!   at fuzzed addresses, and the others only add timing noise. Nothing here
//!   opens a connection: `add_meta` is the only handler that dials.
//!
//! **State.** The node lives in a temporary directory (on /dev/shm where it
//! exists: every write fsyncs the log) made once per process, and is
//! replaced by a fresh one every [`RESET_EVERY`] inputs so the namespace
//! stays small; the last one is removed at exit (not after a crash). So a finding may depend on the inputs before it since the
//! last reset; the panic message names the call and its request. The
//! service holds a capability key, so `prepare_write` and `layout` sign
//! capabilities as on a TLS cluster.
#![no_main]

#[path = "../common/scratch.rs"]
mod scratch;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use openraft::{BasicNode, ServerState};
use prost::Message;
use shoal_meta::server::{MetaConfig, Started, start};
use shoal_meta::service::MetaService;
use shoal_proto::capability::CapabilityKey;
use shoal_proto::meta as pb;
use shoal_proto::meta::cluster_server::Cluster;
use shoal_proto::meta::locks_server::Locks;
use shoal_proto::meta::namespace_server::Namespace;
use tonic::{Request, Status};

/// Calls in one input, at most.
const CALLS_MAX: usize = 16;
/// Number of handlers the selector byte chooses from.
const HANDLERS: u8 = 35;
/// Longest any call may take before it counts as hung (generous, for a
/// loaded CI machine running two targets at once).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a fuzzed acquire may wait for its grant.
const ACQUIRE_WAIT_MAX_MS: u64 = 5;
/// Inputs served by one node before it is replaced by a fresh one.
const RESET_EVERY: u64 = 2_000;
/// The node's advertised address: nothing dials it (a lone node has no peers).
const ADDR: &str = "127.0.0.1:1";

/// A handler's call, ready to run; its error answer, if any.
type Call = Pin<Box<dyn Future<Output = Option<Status>>>>;

/// The runtime and the current node.
struct Harness {
    rt: tokio::runtime::Runtime,
    node: Option<Node>,
}

/// One single-node meta group and what it has served.
struct Node {
    service: MetaService,
    inputs: u64,
    /// Kept so the directory lives as long as this (removed on drop).
    _dir: tempfile::TempDir,
}

static HARNESS: Mutex<Option<Harness>> = Mutex::new(None);

/// Starts a node in a fresh directory, initializes a group of just it and
/// waits until it leads and has applied an entry of its term.
fn fresh_node(rt: &tokio::runtime::Runtime) -> Node {
    let dir = scratch::fresh("shoal-fuzz-meta-");
    let mut config = MetaConfig::new(1, ADDR.parse().expect("an address"), dir.path().to_path_buf());
    config.heartbeat_ms = 20;
    config.election_timeout_min_ms = 60;
    config.election_timeout_max_ms = 120;
    // Snapshots get built now and then during a run, not only on request.
    config.snapshot_every_entries = 500;
    let service = rt.block_on(async {
        let Started { mut service, .. } = start(&config).await.expect("the meta node starts");
        service.capabilities = Some(CapabilityKey::new(&shoal_tls::ClusterKey([7; 32])));
        let members = BTreeMap::from([(1, BasicNode::new(ADDR))]);
        service.node.raft.initialize(members).await.expect("a lone node initializes its group");
        let until = Instant::now() + Duration::from_secs(30);
        while !service.node.caught_up_as_leader() {
            assert!(Instant::now() < until, "a lone node did not become leader within 30 s");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        service
    });
    Node { service, inputs: 0, _dir: dir }
}

/// Decodes `bytes` as `$ty` and makes the call of `$trait::$method` with it
/// (after `$fix`, if given); None if the bytes do not decode.
macro_rules! call {
    ($svc:ident, $bytes:ident, $ty:ty, $trait:ident :: $method:ident $(, |$m:ident| $fix:expr)?) => {{
        #[allow(unused_mut)]
        let mut msg = <$ty>::decode($bytes).ok()?;
        $( let $m = &mut msg; $fix; )?
        let what = format!(concat!(stringify!($trait), "::", stringify!($method), " {:?}"), msg);
        let svc = $svc.clone();
        let call: Call = Box::pin(async move { $trait::$method(&svc, Request::new(msg)).await.err() });
        Some((what, call))
    }};
}

/// The call the selector `sel` picks, with the request decoded from `bytes`,
/// and its description; None if the bytes do not decode.
fn call(svc: &MetaService, sel: u8, bytes: &[u8]) -> Option<(String, Call)> {
    match sel % HANDLERS {
        0 => call!(svc, bytes, pb::MkdirRequest, Namespace::mkdir),
        1 => call!(svc, bytes, pb::CreateRequest, Namespace::create),
        2 => call!(svc, bytes, pb::PathRequest, Namespace::stat),
        3 => call!(svc, bytes, pb::PathRequest, Namespace::list),
        4 => call!(svc, bytes, pb::RemoveRequest, Namespace::remove),
        5 => call!(svc, bytes, pb::RenameRequest, Namespace::rename),
        6 => call!(svc, bytes, pb::SymlinkRequest, Namespace::symlink),
        7 => call!(svc, bytes, pb::MknodRequest, Namespace::mknod),
        8 => call!(svc, bytes, pb::LinkRequest, Namespace::link),
        9 => call!(svc, bytes, pb::SetAttrRequest, Namespace::set_attr),
        10 => call!(svc, bytes, pb::LayoutRequest, Namespace::layout),
        11 => call!(svc, bytes, pb::PrepareWriteRequest, Namespace::prepare_write),
        12 => call!(svc, bytes, pb::CommitWriteRequest, Namespace::commit_write),
        13 => call!(svc, bytes, pb::SetXattrsRequest, Namespace::set_xattrs),
        14 => call!(svc, bytes, pb::RemoveXattrRequest, Namespace::remove_xattr),
        15 => call!(svc, bytes, pb::SetReplicationRequest, Namespace::set_replication),
        16 => call!(svc, bytes, pb::HeartbeatRequest, Cluster::heartbeat),
        17 => call!(svc, bytes, pb::FsckRequest, Cluster::fsck),
        18 => call!(svc, bytes, pb::ReportCorruptRequest, Cluster::report_corrupt),
        19 => call!(svc, bytes, pb::DecommissionRequest, Cluster::decommission),
        20 => call!(svc, bytes, pb::Empty, Cluster::rebalance),
        21 => call!(svc, bytes, pb::SetRepairRequest, Cluster::set_repair),
        22 => call!(svc, bytes, pb::Empty, Cluster::trigger_snapshot),
        23 => call!(svc, bytes, pb::StatusRequest, Cluster::status),
        24 => call!(svc, bytes, pb::Empty, Cluster::nodes),
        25 => call!(svc, bytes, pb::RemoveMetaRequest, Cluster::remove_meta),
        26 => call!(svc, bytes, pb::OpenSessionRequest, Locks::open_session),
        27 => call!(svc, bytes, pb::SessionRequest, Locks::keep_alive),
        28 => call!(svc, bytes, pb::SessionRequest, Locks::close_session),
        29 => call!(svc, bytes, pb::AcquireRequest, Locks::acquire, |m| m.wait_ms = m.wait_ms.min(ACQUIRE_WAIT_MAX_MS)),
        30 => call!(svc, bytes, pb::ReleaseRequest, Locks::release),
        31 => call!(svc, bytes, pb::PathRequest, Locks::inspect),
        32 => call!(svc, bytes, pb::ListLocksRequest, Locks::list),
        33 => call!(svc, bytes, pb::PrepareNewRequest, Namespace::prepare_new),
        34 => call!(svc, bytes, pb::CreateWrittenRequest, Namespace::create_written),
        _ => unreachable!("the selector is taken modulo HANDLERS"),
    }
}

/// Panics unless the node is still a healthy leader with a consistent state.
fn check(svc: &MetaService, what: &str, answer: &Option<Status>) {
    if let Err(broken) = svc.node.state.read().fs.check_invariants() {
        panic!("after {what} (answer {answer:?}): invariant broken: {broken}");
    }
    let m = svc.node.raft.metrics().borrow().clone();
    if let Err(fatal) = &m.running_state {
        panic!("after {what} (answer {answer:?}): the Raft core stopped: {fatal}");
    }
    assert_eq!(m.state, ServerState::Leader, "after {what} (answer {answer:?}): the lone node no longer leads");
}

fuzz_target!(|data: &[u8]| {
    let mut guard = HARNESS.lock().unwrap_or_else(|e| e.into_inner());
    let harness = guard.get_or_insert_with(|| Harness {
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"),
        node: None,
    });
    if harness.node.as_ref().is_some_and(|n| n.inputs >= RESET_EVERY)
        && let Some(old) = harness.node.take()
    {
        harness.rt.block_on(old.service.node.raft.shutdown()).expect("the Raft core shuts down");
    }
    let Harness { rt, node } = harness;
    let node = node.get_or_insert_with(|| fresh_node(rt));
    node.inputs += 1;
    let svc = &node.service;

    let mut rest = data;
    for _ in 0..CALLS_MAX {
        let [sel, lo, hi, tail @ ..] = rest else { break };
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, tail) = tail.split_at(len);
        rest = tail;
        let Some((what, call)) = call(svc, *sel, bytes) else { break };
        let answer = match rt.block_on(async { tokio::time::timeout(CALL_TIMEOUT, call).await }) {
            Ok(answer) => answer,
            Err(_) => panic!("{what} did not answer within {CALL_TIMEOUT:?}"),
        };
        check(svc, &what, &answer);
    }
});
