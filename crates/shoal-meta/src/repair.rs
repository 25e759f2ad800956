//! The leader's healing task: re-replication, drops of extra replicas and
//! rebalancing moves, and the soft state that chunk reports need.
//!
//! Runs on every meta node and acts only while the node leads. Every
//! [`ROUND_EVERY`] (and whenever a copy ends, pacing allowing) it builds the
//! views, asks [`crate::health`] for a plan and carries it out: drops are proposed at
//! once; copies start within the budget (at most `copies_max` in flight
//! cluster-wide, [`PER_TARGET_MAX`] per target, `rate_bytes_per_s` on average)
//! as a `Replicate` call to the target, which pulls the bytes from a source
//! replica and answers once its copy is durable and verified. A copy that
//! succeeds is proposed as `AddReplica`, which the state machine applies only
//! if the chunk did not change meanwhile. Rebalancing moves (planned by
//! `Rebalance`) use what budget repairs leave, and drop their source.
//!
//! Each round also expires runs of reserved chunk ids past their lifetime
//! (`fsm::reserved`).
//!
//! A new leader waits out the registry's grace period before its first round,
//! so liveness it has not heard yet cannot make it drop or copy replicas.
//!
//! A round costs a pass over every chunk, which runs on a copy of the state
//! and a blocking thread (`SharedState::pass`). A round that found nothing
//! to do is not repeated until something it depends on changes: the applied
//! state, which servers are alive or draining, or the healer's own work. And
//! a [`crate::pacer::Pacer`] keeps the passes to 1/[`ROUND_SHARE_INVERSE`] of
//! the time, except right after a server's liveness changed: at ten million
//! files, where a pass takes hundreds of ms, a round every [`ROUND_EVERY`]
//! while files are created would take a core.
//!
//! Soft state, lost with leadership on purpose: copies in flight, moves still
//! to do, open suspicions from chunk reports, report tokens. A copy the old
//! leader had running ends up unlisted on its target, and the target's next
//! report makes it garbage.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_proto::chunk::ReplicateRequest;
use shoal_proto::chunk::chunk_client::ChunkClient;
use shoal_proto::pool::ChannelPool;
use tokio::sync::Notify;

use crate::fsm::{Applied, ChunkPlace, ReplicaCmd};
use crate::health::{self, Busy, ChunkView, Copy, Limits, Move, MoveStep, RateBudget, ServerView, Task};
use crate::metric_names;
use crate::node::Node;
use crate::pacer::Pacer;
use crate::reconcile::Suspect;

/// Period of planning rounds (a finished copy also starts one, pacing allowing).
pub const ROUND_EVERY: Duration = Duration::from_millis(500);
/// A round's pass over every chunk may take at most this share (1/N) of
/// the time, unless a server's liveness changed (see [`crate::pacer`]).
pub const ROUND_SHARE_INVERSE: u32 = 10;
/// Copies in flight to one server, at most.
pub const PER_TARGET_MAX: usize = 4;
/// How long a chunk whose copy failed waits before it is tried again.
const RETRY_PAUSE: Duration = Duration::from_secs(2);
/// A copy may take this long, plus [`COPY_SLOWEST_BYTES_PER_S`] for its bytes.
const COPY_TIMEOUT_BASE: Duration = Duration::from_secs(10);
const COPY_SLOWEST_BYTES_PER_S: u64 = 4 << 20;
/// Moves one rebalance plans, at most.
pub const MOVES_MAX: usize = 100_000;
/// How long to wait for a TCP connection to a chunk server.
const CHUNK_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// The repair budget.
#[derive(Debug, Clone, Copy)]
pub struct HealSettings {
    /// Copies in flight cluster-wide, at most.
    pub copies_max: usize,
    /// Average bytes per second all copies may move (0: no limit).
    pub rate_bytes_per_s: u64,
}

struct Flight {
    target: u64,
    len_bytes: u64,
}

struct HealState {
    /// Bumped whenever leadership is lost, so work of an old term cannot
    /// touch the state of a new one.
    generation: u64,
    in_flight: HashMap<u64, Flight>,
    /// Chunks whose copy failed, and when they may be tried again.
    cooling: HashMap<u64, Instant>,
    moves: VecDeque<Move>,
    suspects: HashMap<u64, Vec<Suspect>>,
    next_token: u64,
    budget: RateBudget,
}

/// The leader's healing soft state; see the module docs.
pub struct Healer {
    settings: HealSettings,
    state: Mutex<HealState>,
    wake: Notify,
    /// Channels to the chunk servers that copy.
    channels: ChannelPool,
}

fn fresh_state(settings: HealSettings, generation: u64) -> HealState {
    HealState {
        generation,
        in_flight: HashMap::new(),
        cooling: HashMap::new(),
        moves: VecDeque::new(),
        suspects: HashMap::new(),
        // Random, so that a token of an earlier leader cannot confirm this one's suspicions.
        next_token: rand_token(),
        budget: RateBudget::new(settings.rate_bytes_per_s, 0),
    }
}

fn rand_token() -> u64 {
    rand::random_range(1..=u64::MAX >> 1)
}

fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

impl Healer {
    /// `transport` reaches the chunk servers that make the copies.
    pub fn new(settings: HealSettings, transport: shoal_proto::Transport) -> Self {
        Healer {
            settings,
            state: Mutex::new(fresh_state(settings, 0)),
            wake: Notify::new(),
            channels: ChannelPool::new(CHUNK_CONNECT_TIMEOUT, transport),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealState> {
        self.state.lock().expect("healer lock")
    }

    /// Forgets everything (leadership lost).
    fn reset(&self) {
        let mut s = self.lock();
        if !s.in_flight.is_empty() || !s.moves.is_empty() || !s.suspects.is_empty() {
            tracing::info!("not the leader any more: dropping repair soft state");
        }
        let generation = s.generation + 1;
        *s = fresh_state(self.settings, generation);
    }

    /// Chunks being copied to `node`.
    pub fn copying_in(&self, node: u64) -> HashSet<u64> {
        self.lock().in_flight.iter().filter(|(_, f)| f.target == node).map(|(c, _)| *c).collect()
    }

    /// The open suspicions for `node`, which the caller replaces with
    /// [`Self::set_suspects`].
    pub fn take_suspects(&self, node: u64) -> Vec<Suspect> {
        self.lock().suspects.remove(&node).unwrap_or_default()
    }

    pub fn set_suspects(&self, node: u64, suspects: Vec<Suspect>) {
        if !suspects.is_empty() {
            self.lock().suspects.insert(node, suspects);
        }
    }

    /// A token no report has carried yet.
    pub fn fresh_token(&self) -> u64 {
        let mut s = self.lock();
        s.next_token = s.next_token.wrapping_add(1).max(1);
        s.next_token
    }

    pub fn copies_in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }

    pub fn moves_pending(&self) -> usize {
        self.lock().moves.len()
    }

    /// Replaces the rebalancing moves still to do.
    pub fn set_moves(&self, moves: Vec<Move>) {
        self.lock().moves = moves.into();
        self.wake();
    }

    /// Starts a planning round now rather than at the next tick.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn busy(&self, now: Instant) -> Busy {
        let mut s = self.lock();
        s.cooling.retain(|_, until| *until > now);
        let mut busy = Busy::default();
        busy.chunks.extend(s.in_flight.keys());
        busy.chunks.extend(s.cooling.keys());
        for f in s.in_flight.values() {
            let t = busy.targets.entry(f.target).or_default();
            t.0 += 1;
            t.1 += f.len_bytes;
        }
        busy
    }

    /// Reserves a copy if the budget allows; returns its generation.
    fn start(&self, c: &Copy, epoch: Instant) -> Option<u64> {
        let mut s = self.lock();
        if s.in_flight.len() >= self.settings.copies_max || s.in_flight.contains_key(&c.place.chunk) {
            return None;
        }
        if !s.budget.try_take(c.len_bytes, now_ms(epoch)) {
            return None;
        }
        let generation = s.generation;
        s.in_flight.insert(c.place.chunk, Flight { target: c.target, len_bytes: c.len_bytes });
        Some(generation)
    }

    fn finish(&self, chunk: u64, generation: u64, failed: bool) {
        let mut s = self.lock();
        if s.generation != generation {
            return;
        }
        s.in_flight.remove(&chunk);
        if failed {
            s.cooling.insert(chunk, Instant::now() + RETRY_PAUSE);
        }
        drop(s);
        self.wake();
    }
}

/// What the healing task works with.
#[derive(Clone)]
struct Heal {
    node: Node,
    healer: Arc<Healer>,
}

/// Starts the healing task of this meta node.
pub fn spawn(node: Node, healer: Arc<Healer>) {
    let svc = Heal { node, healer };
    tokio::spawn(async move {
        let epoch = Instant::now();
        let mut leading = false;
        // What the last round that found nothing to do saw.
        let mut idle_at: Option<RoundInputs> = None;
        // The servers' liveness the last round saw.
        let mut servers_at: Option<Vec<(u64, bool, bool)>> = None;
        let mut pacer = Pacer::with_share_inverse(ROUND_SHARE_INVERSE);
        // Whether the last turn skipped a round for the pacer: this one waits
        // only until the pacer allows it.
        let mut paced = false;
        loop {
            let wait = match pacer.next_due() {
                Some(due) if paced => due.saturating_duration_since(Instant::now()).min(ROUND_EVERY),
                _ => ROUND_EVERY,
            };
            paced = false;
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = svc.healer.wake.notified() => {}
            }
            let now_leading = svc.node.leader_only().is_ok();
            if now_leading != leading {
                svc.healer.reset();
                leading = now_leading;
                idle_at = None;
                servers_at = None;
            }
            if !leading {
                continue;
            }
            let now = Instant::now();
            if svc.node.registry.in_grace(now) {
                continue;
            }
            expire_reservations(&svc).await;
            let inputs = round_inputs(&svc, now);
            if idle_at.as_ref() == Some(&inputs) {
                continue;
            }
            // A server that died or came back is planned for at once; the
            // rest (new entries, copies that ended) waits for the pacer.
            let liveness_changed = servers_at.as_ref() != Some(&inputs.servers);
            if !liveness_changed && !pacer.due(now) {
                paced = true;
                continue;
            }
            servers_at = Some(inputs.servers.clone());
            let busy = round(&svc, now, epoch, &mut pacer).await;
            idle_at = (!busy).then_some(inputs);
        }
    });
}

/// Proposes the expiry of reserved chunk-id runs that outlived their
/// lifetime (see `fsm::reserved`): what writers that died left under their
/// ids becomes garbage at the servers' next reports.
async fn expire_reservations(svc: &Heal) {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let Some(before_ms) = svc.node.state.read().fs.reservations_to_expire(now_ms) else { return };
    if let Err(e) = svc.node.write(crate::fsm::WriteCmd::ExpireReservations { before_ms }, None).await {
        tracing::warn!("cannot expire reserved chunk ids: {}", e.message());
    }
}

/// Everything a round's plan depends on, besides the state's content.
#[derive(Debug, PartialEq, Eq)]
struct RoundInputs {
    applied: u64,
    /// (server, alive, draining) of every server.
    servers: Vec<(u64, bool, bool)>,
    /// Copies in flight and moves still to do.
    work: (usize, usize),
}

fn round_inputs(svc: &Heal, now: Instant) -> RoundInputs {
    let applied = svc.node.state.read().last_applied.map_or(0, |l| l.index);
    let servers = svc.node.server_views(now).into_iter().map(|s| (s.id, s.alive, s.draining)).collect();
    let work = (svc.healer.copies_in_flight(), svc.healer.moves_pending());
    RoundInputs { applied, servers, work }
}

/// One planning round. Returns whether anything is under way or left to do
/// (false: the same inputs would plan nothing again).
async fn round(svc: &Heal, now: Instant, epoch: Instant, pacer: &mut Pacer) -> bool {
    let servers = svc.node.server_views(now);
    let busy = svc.healer.busy(now);
    let limits = Limits {
        copies_free: svc.healer.settings.copies_max.saturating_sub(busy.chunks.len()),
        per_target_max: PER_TARGET_MAX,
    };
    // The pass over every chunk: off the runtime and the state's lock. It
    // keeps only the views queued moves need: freeing one view per chunk
    // (millions) on a runtime worker would stall it.
    let (servers_c, busy_c) = (servers.clone(), busy.clone());
    let moving: HashSet<u64> = svc.healer.lock().moves.iter().map(|m| m.place.chunk).collect();
    let moving_c = moving.clone();
    let pass = svc
        .node
        .state
        .pass(move |s| {
            // Timed here, not around the call: waiting for another pass
            // to end is not this round's cost.
            let started = Instant::now();
            if s.repair_paused {
                return (started, None);
            }
            let mut chunks = health::chunk_views(s);
            let tasks = health::plan_repairs(&chunks, &servers_c, &busy_c, limits);
            chunks.retain(|c| moving_c.contains(&c.place.chunk));
            chunks.shrink_to_fit();
            (started, Some((chunks, tasks)))
        })
        .await;
    let (chunks, tasks) = match pass {
        Ok((started, planned)) => {
            pacer.ran(started, Instant::now());
            match planned {
                Some(planned) => planned,
                None => return false,
            }
        }
        Err(e) => {
            tracing::error!("the repair round's pass failed: {e}");
            return true;
        }
    };
    let mut budget_left = true;
    let planned = !tasks.is_empty();
    for task in tasks {
        match task {
            Task::Drop { place, nodes, version } => {
                tracing::info!(chunk_id = place.chunk, ?nodes, "dropping extra replicas");
                if let Err(e) = svc.node.write(drop_command(place, nodes, version), None).await {
                    tracing::warn!(chunk_id = place.chunk, "cannot drop extra replicas: {}", e.message());
                    return true;
                }
            }
            Task::Copy(c) if budget_left => budget_left = launch(svc, c, epoch),
            Task::Copy(_) => {}
        }
    }
    if budget_left {
        launch_moves(svc, &chunks, &moving, &servers, now, epoch);
    }
    planned || !busy.chunks.is_empty() || svc.healer.copies_in_flight() > 0 || svc.healer.moves_pending() > 0
}

/// The proposal of a planned drop. It expects the version the plan saw, not
/// the chunk's version when the drop runs: a write committed in between (on a
/// chain without some replica the plan kept) must void the plan.
fn drop_command(place: ChunkPlace, nodes: Vec<u64>, planned_version: u64) -> ReplicaCmd {
    ReplicaCmd::DropReplicas { place, nodes, expect_version: planned_version }
}

/// Starts moves from the rebalance queue while the budget allows.
/// `chunks` holds the views of the chunks of `moving`, the moves queued
/// when the pass ran, in chunk-id order (as [`health::chunk_views`] gives
/// them). A move queued since waits for the next round.
fn launch_moves(
    svc: &Heal,
    chunks: &[ChunkView],
    moving: &HashSet<u64>,
    servers: &[ServerView],
    now: Instant,
    epoch: Instant,
) {
    let by_id = |id: u64| chunks.binary_search_by_key(&id, |c| c.place.chunk).ok().map(|i| &chunks[i]);
    let mut busy = svc.healer.busy(now);
    loop {
        let Some(m) = svc.healer.lock().moves.pop_front() else { return };
        if !moving.contains(&m.place.chunk) {
            svc.healer.lock().moves.push_front(m);
            return;
        }
        let copy = match health::check_move(&m, by_id(m.place.chunk), servers, &busy, PER_TARGET_MAX) {
            MoveStep::Start(copy) => copy,
            MoveStep::Skip => continue,
            MoveStep::Wait => {
                // Back to the queue's head: this target is full for now.
                svc.healer.lock().moves.push_front(m);
                return;
            }
        };
        if !launch(svc, copy, epoch) {
            svc.healer.lock().moves.push_front(m);
            return;
        }
        busy.chunks.insert(m.place.chunk);
        busy.targets.entry(m.to).or_default().0 += 1;
    }
}

/// Starts one copy if the budget allows; false when it does not.
fn launch(svc: &Heal, c: Copy, epoch: Instant) -> bool {
    let Some(generation) = svc.healer.start(&c, epoch) else { return false };
    let svc = svc.clone();
    tokio::spawn(async move {
        let failed = match copy(&svc, &c, generation).await {
            Ok(bytes) => {
                metrics::counter!(metric_names::REPAIR_COPIES_TOTAL, "result" => "ok").increment(1);
                metrics::counter!(metric_names::REPAIR_BYTES_COPIED_TOTAL).increment(bytes);
                false
            }
            Err(e) => {
                metrics::counter!(metric_names::REPAIR_COPIES_TOTAL, "result" => "failed").increment(1);
                tracing::warn!(chunk_id = c.place.chunk, to_server = c.target, "copy failed: {e}");
                true
            }
        };
        svc.healer.finish(c.place.chunk, generation, failed);
    });
    true
}

/// Has the target copy the chunk, then lists it there; returns the bytes copied.
async fn copy(svc: &Heal, c: &Copy, generation: u64) -> Result<u64, String> {
    let (target, sources) = {
        let s = svc.node.state.read();
        let addr = |id: &u64| s.fs.nodes.get(id).map(|n| n.addr.clone());
        let target = addr(&c.target).ok_or_else(|| format!("server {} is not registered", c.target))?;
        (target, c.sources.iter().filter_map(addr).collect::<Vec<_>>())
    };
    let started = Instant::now();
    let channel = svc.healer.channels.get(&target).map_err(|e| e.to_string())?;
    let req = ReplicateRequest { chunk_id: c.place.chunk, version: c.copied, sources };
    let limit = COPY_TIMEOUT_BASE + Duration::from_secs(c.len_bytes / COPY_SLOWEST_BYTES_PER_S);
    let reply = tokio::time::timeout(limit, ChunkClient::new(channel).replicate(req))
        .await
        .map_err(|_| format!("no answer from {target} within {limit:?}"))?
        .map_err(|s| format!("{target}: {}", s.message()))?
        .into_inner();
    // Leadership lost (and maybe regained) during the copy: another leader
    // may have made this copy garbage meanwhile, so it must not be listed.
    if svc.healer.lock().generation != generation {
        return Err("leadership changed during the copy; the copy is not listed".to_string());
    }
    let cmd = ReplicaCmd::AddReplica {
        place: c.place,
        copied: c.copied,
        version: c.version,
        target: c.target,
        expect: c.expect.clone(),
        drop: c.drop.clone(),
    };
    let applied = svc.node.write(cmd, None).await.map_err(|s| format!("cannot list the copy: {}", s.message()))?;
    match applied.into_applied().map_err(|e| format!("the copy was refused: {e}"))? {
        Applied::Done => {
            tracing::info!(
                chunk_id = c.place.chunk,
                version = c.copied,
                bytes = reply.length,
                from = %reply.source,
                to = %target,
                dropped = ?c.drop,
                ms = started.elapsed().as_millis() as u64,
                "replica copied"
            );
            Ok(reply.length)
        }
        // Failing makes the chunk cool down before another try, so a chunk
        // written to all the time does not keep the copier busy.
        Applied::Conflict => Err("the chunk changed during its copy; the copy is garbage".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::testing::{p, run};
    use crate::fsm::{FsState, NamespaceCmd, NodeRecord, Response, WriteCmd};

    fn server(id: u64, used_bytes: u64) -> ServerView {
        ServerView { id, alive: true, draining: false, capacity_bytes: 1000, used_bytes, chunk_count: 0 }
    }

    fn prepare(st: &mut FsState, place: ChunkPlace, version: u64, replicas: &[u64]) {
        let expect_id = (version > 0).then_some(place.chunk);
        let prep = WriteCmd::PrepareWrite {
            inode: place.inode,
            index: 0,
            expect_id,
            expect_version: version,
            replicas: replicas.to_vec(),
            fence: None,
        };
        assert!(matches!(run(st, prep), Response::Chunk { .. }));
        let commit = WriteCmd::CommitWrite {
            inode: place.inode,
            chunks: vec![(0, place.chunk, version + 1)],
            size: 50,
            truncate: false,
            fence: None,
        };
        assert!(matches!(run(st, commit), Response::Inode(_)));
    }

    /// Regression (review): the drop used to expect the chunk's version when
    /// it ran, not when it was planned. A write committed in between on a
    /// chain without one of the replicas the plan kept then lost the replica
    /// the plan dropped as well, leaving the new version below its factor.
    #[test]
    fn a_drop_planned_before_a_write_commits_is_void() {
        let mut st = FsState::default();
        for id in 1..=3 {
            st.nodes.insert(id, NodeRecord { id, addr: format!("h:{id}"), draining: false });
        }
        let create = NamespaceCmd::Create { path: p("/f"), replication: 2, chunk_size: 100, open_existing: false };
        let Response::Inode(f) = run(&mut st, create) else { panic!() };
        let place = ChunkPlace { inode: f.id, index: 0, chunk: st.next_chunk_id };
        prepare(&mut st, place, 0, &[1, 2, 3]);
        // Server 1 is the fullest: the plan drops its replica and keeps 2 and 3.
        let servers = [server(1, 900), server(2, 0), server(3, 0)];
        let tasks = health::plan_repairs(
            &health::chunk_views(&st),
            &servers,
            &Busy::default(),
            Limits { copies_free: 1, per_target_max: 1 },
        );
        let [Task::Drop { place: planned, nodes, version }] = &tasks[..] else { panic!("{tasks:?}") };
        assert_eq!((*planned, nodes.clone()), (place, vec![1]));
        // Meanwhile server 2 fails a write, which commits on 1 and 3 only.
        prepare(&mut st, place, 1, &[1, 3]);
        assert_eq!(run(&mut st, drop_command(*planned, nodes.clone(), *version)), Response::Conflict);
        assert_eq!(st.chunk_at(place).unwrap().replicas, vec![1, 3], "the new version keeps its factor");
    }
}
