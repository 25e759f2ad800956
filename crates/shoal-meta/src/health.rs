//! What the chunks need, decided by pure functions over plain data: their
//! health (fsck), the copies and drops that restore every chunk's factor
//! (re-replication), the moves that even out servers (rebalance), and the
//! bandwidth budget of all of it.
//!
//! The leader builds a [`ServerView`] per chunk server (liveness and usage
//! from heartbeats, draining from the state machine) and a [`ChunkView`] per
//! committed chunk, calls these functions, and carries the plans out
//! (`repair`). Nothing here does IO, reads a clock or keeps state between calls.
//!
//! # Words
//! - A replica is **good** when its server is alive, not draining, and the
//!   replica is not known corrupt. A chunk is healthy when it has at least
//!   its factor of good replicas.
//! - A replica is **readable** (a copy source) when its server is alive and
//!   it is not known corrupt; draining servers still serve.
//! - A chunk is **missing** when no replica is readable: nothing to copy
//!   from. It is reported, never invented.
//!
//! # Rules
//! - The most endangered chunks are copied first: fewest good replicas, then
//!   fewest readable ones.
//! - One copy per chunk at a time; at most `copies_free` new copies per call,
//!   and at most `per_target_max` copies in flight to one server.
//! - A target is alive, not draining, does not list the chunk, has no delete
//!   of it pending and never had a corrupt copy of it; among those, placement
//!   decides (most free space, counting copies already planned).
//! - A copy that brings the chunk to its factor also drops its dead and
//!   draining replicas (they are replaced).
//! - Extra replicas are dropped only when no write is in flight, keeping the
//!   factor's worth of good replicas on the servers with most free space.
//! - Chunks never committed are skipped: nothing acknowledged lives there.

use std::collections::{BTreeMap, HashMap, HashSet};

use shoal_core::placement::{self, Candidate};

use crate::fsm::{ChunkPlace, FsState, Kind};

/// What planning knows of one chunk server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerView {
    pub id: u64,
    pub alive: bool,
    pub draining: bool,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub chunk_count: u64,
}

impl ServerView {
    pub fn free_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.used_bytes)
    }

    /// The server as placement sees it: new replicas never go to a dead or
    /// draining server.
    pub fn candidate(&self) -> Candidate {
        Candidate {
            id: self.id,
            alive: self.alive && !self.draining,
            free_bytes: self.free_bytes(),
            chunk_count: self.chunk_count,
        }
    }
}

/// What planning knows of one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkView {
    pub place: ChunkPlace,
    pub version: u64,
    pub committed: u64,
    /// Bytes in the chunk (from the file size; the last chunk may be short).
    pub len_bytes: u64,
    pub replication: u32,
    /// Listed replicas, in chain order.
    pub replicas: Vec<u64>,
    /// Servers whose copy was found corrupt (listed or not).
    pub corrupt: Vec<u64>,
    /// Servers with a delete of this chunk pending.
    pub pending_delete: Vec<u64>,
}

/// The views of every committed chunk in the namespace, by chunk id.
pub fn chunk_views(fs: &FsState) -> Vec<ChunkView> {
    let mut out = Vec::new();
    for f in fs.inodes.values().filter(|i| i.kind == Kind::File) {
        for (index, c) in &f.chunks {
            if c.committed_version == 0 {
                continue;
            }
            // Saturating: an index beyond the largest file (refused at the
            // edge, see `bounds`) must not take the leader down.
            let start = index.saturating_mul(f.chunk_size);
            out.push(ChunkView {
                place: ChunkPlace { inode: f.id, index: *index, chunk: c.id },
                version: c.version,
                committed: c.committed_version,
                len_bytes: f.size.saturating_sub(start).min(f.chunk_size),
                replication: f.replication,
                replicas: c.replicas.clone(),
                corrupt: fs.corrupt.get(&c.id).map_or_else(Vec::new, |s| s.iter().copied().collect()),
                pending_delete: fs.garbage.get(&c.id).map_or_else(Vec::new, |s| s.iter().copied().collect()),
            });
        }
    }
    out.sort_by_key(|c| c.place.chunk);
    out
}

/// A chunk's standing, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// No readable replica.
    Missing,
    /// A replica failed its checksums and the chunk is not back at its factor.
    Corrupt,
    UnderReplicated,
    Healthy,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Missing => "missing",
            Standing::Corrupt => "corrupt",
            Standing::UnderReplicated => "under-replicated",
            Standing::Healthy => "healthy",
        }
    }
}

type Servers = HashMap<u64, ServerView>;

fn servers_by_id(servers: &[ServerView]) -> Servers {
    servers.iter().map(|s| (s.id, s.clone())).collect()
}

fn is_good(c: &ChunkView, servers: &Servers, r: u64) -> bool {
    servers.get(&r).is_some_and(|s| s.alive && !s.draining) && !c.corrupt.contains(&r)
}

fn is_readable(c: &ChunkView, servers: &Servers, r: u64) -> bool {
    servers.get(&r).is_some_and(|s| s.alive) && !c.corrupt.contains(&r)
}

fn good(c: &ChunkView, servers: &Servers) -> Vec<u64> {
    c.replicas.iter().copied().filter(|r| is_good(c, servers, *r)).collect()
}

/// Copy sources: good replicas first, then readable ones on draining servers.
fn sources(c: &ChunkView, servers: &Servers) -> Vec<u64> {
    let mut out = good(c, servers);
    let draining: Vec<u64> =
        c.replicas.iter().copied().filter(|r| is_readable(c, servers, *r) && !out.contains(r)).collect();
    out.extend(draining);
    out
}

fn standing(c: &ChunkView, servers: &Servers) -> (Standing, usize) {
    let good = good(c, servers).len();
    let s = if !c.replicas.iter().any(|r| is_readable(c, servers, *r)) {
        Standing::Missing
    } else if !c.corrupt.is_empty() {
        Standing::Corrupt
    } else if good < c.replication as usize {
        Standing::UnderReplicated
    } else {
        Standing::Healthy
    };
    (s, good)
}

/// One chunk that is not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub place: ChunkPlace,
    pub standing: Standing,
    pub good: u32,
    pub replication: u32,
}

/// The health of every chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fsck {
    pub chunks: u64,
    pub under_replicated: u64,
    pub missing: u64,
    pub corrupt: u64,
    pub over_replicated: u64,
    /// Worst first, at most `problems_max`.
    pub problems: Vec<Problem>,
    pub problems_left_out: u64,
}

impl Fsck {
    pub fn healthy(&self) -> bool {
        self.under_replicated == 0 && self.missing == 0 && self.corrupt == 0
    }
}

/// Classifies every chunk. Under-replicated counts chunks short of their
/// factor that still have a readable replica; a corrupt chunk may be
/// under-replicated as well.
pub fn fsck(chunks: &[ChunkView], servers: &[ServerView], problems_max: usize) -> Fsck {
    let servers = servers_by_id(servers);
    let mut out = Fsck { chunks: chunks.len() as u64, ..Fsck::default() };
    let mut problems = Vec::new();
    for c in chunks {
        let (s, good) = standing(c, &servers);
        match s {
            Standing::Missing => out.missing += 1,
            Standing::Corrupt => out.corrupt += 1,
            _ => {}
        }
        if s != Standing::Missing && good < c.replication as usize {
            out.under_replicated += 1;
        }
        if good > c.replication as usize {
            out.over_replicated += 1;
        }
        if s != Standing::Healthy {
            problems.push(Problem { place: c.place, standing: s, good: good as u32, replication: c.replication });
        }
    }
    problems.sort_by_key(|p| (p.standing, p.good, p.place.chunk));
    out.problems_left_out = problems.len().saturating_sub(problems_max) as u64;
    problems.truncate(problems_max);
    out.problems = problems;
    out
}

/// A copy of one chunk to a new server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub place: ChunkPlace,
    /// The committed version to copy.
    pub copied: u64,
    /// The chunk's latest version when planned.
    pub version: u64,
    pub len_bytes: u64,
    /// Replicas to copy from, in the order to try them.
    pub sources: Vec<u64>,
    pub target: u64,
    /// The replica list the plan was made from.
    pub expect: Vec<u64>,
    /// Replicas the copy replaces (dead, draining, or a move's source).
    pub drop: Vec<u64>,
}

impl Copy {
    /// A copy of `c`'s committed version, planned from `c` as it is now.
    fn of(c: &ChunkView, sources: Vec<u64>, target: u64, drop: Vec<u64>) -> Copy {
        Copy {
            place: c.place,
            copied: c.committed,
            version: c.version,
            len_bytes: c.len_bytes,
            sources,
            target,
            expect: c.replicas.clone(),
            drop,
        }
    }
}

/// A change to one chunk's replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    Copy(Copy),
    /// Drop extra replicas.
    Drop {
        place: ChunkPlace,
        nodes: Vec<u64>,
        /// The chunk's version when planned (fully committed): the drop
        /// applies only while the chunk is still there, so a write that
        /// commits meanwhile, perhaps on a different chain, voids it.
        version: u64,
    },
}

/// Copies already running, as planning must count them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Busy {
    pub chunks: HashSet<u64>,
    /// Per target server: copies in flight and their bytes.
    pub targets: HashMap<u64, (usize, u64)>,
}

/// Limits of one planning round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// New copies this round may start.
    pub copies_free: usize,
    /// Copies in flight to one server, at most.
    pub per_target_max: usize,
}

/// Chooses a target for `c` among `servers`, skipping `busy` targets at their
/// limit; `planned` holds (copies, bytes) already headed to each server.
fn choose_target(
    c: &ChunkView,
    servers: &[ServerView],
    planned: &HashMap<u64, (usize, u64)>,
    per_target_max: usize,
) -> Option<u64> {
    let candidates: Vec<Candidate> = servers
        .iter()
        .map(|s| {
            let (n, bytes) = planned.get(&s.id).copied().unwrap_or_default();
            let c = s.candidate();
            Candidate {
                alive: c.alive && n < per_target_max,
                free_bytes: c.free_bytes.saturating_sub(bytes),
                chunk_count: c.chunk_count.saturating_add(n as u64),
                ..c
            }
        })
        .collect();
    let mut exclude: Vec<u64> = c.replicas.clone();
    exclude.extend(&c.pending_delete);
    exclude.extend(&c.corrupt);
    placement::place(&candidates, 1, &exclude).ok().and_then(|v| v.first().copied())
}

/// Plans the copies that bring chunks back to their factor, most endangered
/// first, and the drops of extra replicas.
pub fn plan_repairs(chunks: &[ChunkView], servers: &[ServerView], busy: &Busy, limits: Limits) -> Vec<Task> {
    let by_id = servers_by_id(servers);
    let mut needy: Vec<(usize, usize, &ChunkView)> = Vec::new();
    let mut tasks = Vec::new();
    for c in chunks.iter().filter(|c| !busy.chunks.contains(&c.place.chunk)) {
        let good = good(c, &by_id);
        let readable = c.replicas.iter().filter(|r| is_readable(c, &by_id, **r)).count();
        if good.len() < c.replication as usize {
            if readable > 0 {
                needy.push((good.len(), readable, c));
            }
        } else if c.version == c.committed {
            let drop = extras(c, &good, &by_id);
            if !drop.is_empty() {
                tasks.push(Task::Drop { place: c.place, nodes: drop, version: c.version });
            }
        }
    }
    needy.sort_by_key(|(good, readable, c)| (*good, *readable, c.place.chunk));
    let mut planned = busy.targets.clone();
    let mut copies = 0;
    for (good, _, c) in needy {
        if copies == limits.copies_free {
            break;
        }
        let Some(target) = choose_target(c, servers, &planned, limits.per_target_max) else { continue };
        let slot = planned.entry(target).or_default();
        slot.0 += 1;
        slot.1 = slot.1.saturating_add(c.len_bytes);
        copies += 1;
        let completes = good + 1 >= c.replication as usize;
        let drop = match completes {
            true => {
                c.replicas.iter().copied().filter(|r| by_id.get(r).is_none_or(|s| !s.alive || s.draining)).collect()
            }
            false => Vec::new(),
        };
        tasks.push(Task::Copy(Copy::of(c, sources(c, &by_id), target, drop)));
    }
    tasks
}

/// The listed replicas of a chunk with enough good ones that are not worth
/// keeping: all but the `replication` good replicas on the emptiest servers.
fn extras(c: &ChunkView, good: &[u64], servers: &Servers) -> Vec<u64> {
    let mut keep = good.to_vec();
    keep.sort_by_key(|r| (std::cmp::Reverse(servers.get(r).map_or(0, ServerView::free_bytes)), *r));
    keep.truncate(c.replication as usize);
    c.replicas.iter().copied().filter(|r| !keep.contains(r)).collect()
}

/// One planned move of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub place: ChunkPlace,
    pub from: u64,
    pub to: u64,
    pub len_bytes: u64,
}

/// Plans moves of replicas from servers above their share of the listed
/// bytes to servers below theirs (shares in proportion to capacity), at most
/// `moves_max`. Only healthy chunks without a write in flight move; every
/// move strictly narrows the gap between its two servers.
pub fn plan_rebalance(chunks: &[ChunkView], servers: &[ServerView], moves_max: usize) -> Vec<Move> {
    let usable: Vec<&ServerView> = servers.iter().filter(|s| s.alive && !s.draining).collect();
    if usable.len() < 2 {
        return Vec::new();
    }
    let by_id = servers_by_id(servers);
    let mut load: BTreeMap<u64, i128> = usable.iter().map(|s| (s.id, 0)).collect();
    let mut on: HashMap<u64, Vec<&ChunkView>> = HashMap::new();
    for c in chunks {
        for r in &c.replicas {
            if let Some(l) = load.get_mut(r) {
                *l += c.len_bytes as i128;
                on.entry(*r).or_default().push(c);
            }
        }
    }
    let total_load: i128 = load.values().sum();
    let total_cap: i128 = usable.iter().map(|s| s.capacity_bytes.max(1) as i128).sum();
    // Each server's excess over its share; moves shift it from the most to the least.
    let share = |s: &ServerView| total_load.saturating_mul(s.capacity_bytes.max(1) as i128) / total_cap;
    let mut over: BTreeMap<u64, i128> = usable.iter().map(|s| (s.id, load[&s.id] - share(s))).collect();
    let mut moved: HashSet<u64> = HashSet::new();
    let mut moves = Vec::new();
    'next: while moves.len() < moves_max {
        let (&from, &from_over) = over.iter().max_by_key(|(id, o)| (**o, std::cmp::Reverse(**id))).expect("2 servers");
        let (&to, &to_over) = over.iter().min_by_key(|(id, o)| (**o, **id)).expect("2 servers");
        let gap = from_over - to_over;
        for c in on.get(&from).map_or(&[][..], |v| &v[..]) {
            let eligible = !moved.contains(&c.place.chunk)
                && c.version == c.committed
                && (c.len_bytes as i128) < gap
                && !c.replicas.contains(&to)
                && !c.pending_delete.contains(&to)
                && !c.corrupt.contains(&to)
                && standing(c, &by_id).0 == Standing::Healthy;
            if eligible {
                moved.insert(c.place.chunk);
                *over.get_mut(&from).expect("usable") -= c.len_bytes as i128;
                *over.get_mut(&to).expect("usable") += c.len_bytes as i128;
                moves.push(Move { place: c.place, from, to, len_bytes: c.len_bytes });
                continue 'next;
            }
        }
        break;
    }
    moves
}

/// What to do with the next move of a rebalance queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoveStep {
    /// Its target has `per_target_max` copies in flight: keep the move (and
    /// those behind it) for later.
    Wait,
    /// The move no longer applies (the chunk is gone, changed, being copied
    /// or written, or the target is no longer usable): forget it.
    Skip,
    /// Copy the chunk to the target; the copy drops the move's source.
    Start(Copy),
}

/// Checks a planned move against the chunk as it is now (`chunk`: the view
/// of the chunk with the move's id, if it still exists), the servers and the
/// copies in flight.
pub fn check_move(
    m: &Move,
    chunk: Option<&ChunkView>,
    servers: &[ServerView],
    busy: &Busy,
    per_target_max: usize,
) -> MoveStep {
    if busy.targets.get(&m.to).is_some_and(|t| t.0 >= per_target_max) {
        return MoveStep::Wait;
    }
    let Some(c) = chunk.filter(|c| c.place == m.place) else { return MoveStep::Skip };
    let target_ok = servers.iter().any(|s| s.id == m.to && s.alive && !s.draining);
    let still_valid = target_ok
        && !busy.chunks.contains(&c.place.chunk)
        && c.version == c.committed
        && c.replicas.contains(&m.from)
        && !c.replicas.contains(&m.to)
        && !c.pending_delete.contains(&m.to);
    if !still_valid {
        return MoveStep::Skip;
    }
    // The source first (that is the replica the move relieves), then the
    // other readable replicas.
    let mut sources = vec![m.from];
    sources.extend(c.replicas.iter().copied().filter(|r| *r != m.from && !c.corrupt.contains(r)));
    MoveStep::Start(Copy::of(c, sources, m.to, vec![m.from]))
}

/// A bandwidth budget shared by every copy: a token bucket refilled at
/// `rate_bytes_per_s` and holding at most one second's worth. A copy may
/// start while the bucket is not empty and takes its whole size (the bucket
/// may go negative), so copies of any size start, and the long-run rate stays
/// within the budget. A rate of 0 means no limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RateBudget {
    rate_bytes_per_s: u64,
    tokens: f64,
    last_ms: u64,
}

impl RateBudget {
    pub fn new(rate_bytes_per_s: u64, now_ms: u64) -> Self {
        RateBudget { rate_bytes_per_s, tokens: rate_bytes_per_s as f64, last_ms: now_ms }
    }

    /// Takes `bytes` if the budget allows a copy to start at `now_ms`.
    pub fn try_take(&mut self, bytes: u64, now_ms: u64) -> bool {
        if self.rate_bytes_per_s == 0 {
            return true;
        }
        let elapsed_s = now_ms.saturating_sub(self.last_ms) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(now_ms);
        let cap = self.rate_bytes_per_s as f64;
        self.tokens = (self.tokens + elapsed_s * cap).min(cap);
        if self.tokens <= 0.0 {
            return false;
        }
        self.tokens -= bytes as f64;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: u64, alive: bool, draining: bool, used: u64) -> ServerView {
        ServerView { id, alive, draining, capacity_bytes: 1000, used_bytes: used, chunk_count: 0 }
    }

    fn chunk(id: u64, replicas: &[u64]) -> ChunkView {
        ChunkView {
            place: ChunkPlace { inode: 100 + id, index: 0, chunk: id },
            version: 3,
            committed: 3,
            len_bytes: 10,
            replication: 2,
            replicas: replicas.to_vec(),
            corrupt: Vec::new(),
            pending_delete: Vec::new(),
        }
    }

    fn copies(tasks: &[Task]) -> Vec<&Copy> {
        tasks
            .iter()
            .filter_map(|t| match t {
                Task::Copy(c) => Some(c),
                Task::Drop { .. } => None,
            })
            .collect()
    }

    const ROOMY: Limits = Limits { copies_free: 10, per_target_max: 10 };

    #[test]
    fn fsck_classifies_worst_first() {
        let servers = [server(1, true, false, 0), server(2, true, false, 0), server(3, false, false, 0)];
        let mut corrupt = chunk(4, &[1, 2]);
        corrupt.corrupt = vec![2];
        let chunks = [chunk(1, &[1, 2]), chunk(2, &[1, 3]), chunk(3, &[3]), corrupt, chunk(5, &[1, 2, 3])];
        let r = fsck(&chunks, &servers, 2);
        assert_eq!((r.chunks, r.missing, r.corrupt, r.under_replicated), (5, 1, 1, 2));
        assert!(!r.healthy());
        let worst: Vec<(u64, Standing)> = r.problems.iter().map(|p| (p.place.chunk, p.standing)).collect();
        assert_eq!(worst, vec![(3, Standing::Missing), (4, Standing::Corrupt)]);
        assert_eq!(r.problems_left_out, 1);
        assert!(fsck(&chunks[..1], &servers, 10).healthy());
        assert_eq!(
            fsck(&[chunk(6, &[1, 2])], &[server(1, true, false, 0), server(2, true, true, 0)], 10).under_replicated,
            1
        );
    }

    #[test]
    fn the_most_endangered_chunks_go_first_within_the_budget() {
        let servers = [
            server(1, true, false, 0),
            server(2, false, false, 0),
            server(3, true, false, 0),
            server(4, true, false, 0),
        ];
        let mut three = chunk(1, &[1, 2, 3]);
        three.replication = 3;
        let chunks = [three, chunk(2, &[1, 2]), chunk(3, &[3, 4])];
        let tasks = plan_repairs(&chunks, &servers, &Busy::default(), Limits { copies_free: 1, per_target_max: 10 });
        let c = copies(&tasks);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].place.chunk, 2, "one good replica left goes before two of three");
        assert_eq!(c[0].sources, vec![1]);
        assert_eq!(c[0].drop, vec![2], "the dead replica is replaced");
        assert!(![1, 2].contains(&c[0].target));
        // With room for more, chunk 1 gets a copy too; it completes the factor, so it replaces the dead replica.
        let tasks = plan_repairs(&chunks, &servers, &Busy::default(), ROOMY);
        let c = copies(&tasks);
        assert_eq!(c.len(), 2);
        assert_eq!((c[1].place.chunk, c[1].target, c[1].drop.clone()), (1, 4, vec![2]));
    }

    #[test]
    fn targets_avoid_pending_deletes_corrupt_copies_draining_and_busy_servers() {
        let servers = [
            server(1, true, false, 0),
            server(2, true, false, 0),
            server(3, true, true, 0),
            server(4, true, false, 0),
            server(5, true, false, 900),
        ];
        let mut c = chunk(1, &[1]);
        c.pending_delete = vec![2];
        c.corrupt = vec![4];
        let busy = Busy { chunks: HashSet::new(), targets: HashMap::from([(5, (1, 10))]) };
        let tasks =
            plan_repairs(std::slice::from_ref(&c), &servers, &busy, Limits { copies_free: 5, per_target_max: 1 });
        assert!(tasks.is_empty(), "no target left: {tasks:?}");
        let tasks = plan_repairs(std::slice::from_ref(&c), &servers, &Busy::default(), ROOMY);
        assert_eq!(copies(&tasks)[0].target, 5);
        // A chunk already being copied is left alone; one with nothing readable is missing, not copied.
        let busy = Busy { chunks: HashSet::from([1]), targets: HashMap::new() };
        assert!(plan_repairs(std::slice::from_ref(&c), &servers, &busy, ROOMY).is_empty());
        let mut gone = chunk(2, &[1]);
        gone.corrupt = vec![1];
        assert!(plan_repairs(&[gone], &servers, &Busy::default(), ROOMY).is_empty());
    }

    #[test]
    fn copies_spread_over_targets_by_free_space() {
        let servers = [server(1, true, false, 0), server(2, true, false, 100), server(3, true, false, 0)];
        let mut chunks: Vec<ChunkView> = (1..=4).map(|i| chunk(i, &[1])).collect();
        for c in &mut chunks {
            c.len_bytes = 100;
        }
        let tasks = plan_repairs(&chunks, &servers, &Busy::default(), ROOMY);
        let targets: Vec<u64> = copies(&tasks).iter().map(|c| c.target).collect();
        assert_eq!(targets, vec![3, 2, 3, 2]);
    }

    #[test]
    fn extra_replicas_are_dropped_but_not_during_a_write() {
        let servers = [
            server(1, true, false, 500),
            server(2, true, false, 0),
            server(3, true, false, 100),
            server(4, true, true, 0),
        ];
        let chunks = [chunk(1, &[1, 2, 3]), chunk(2, &[2, 4, 3])];
        let tasks = plan_repairs(&chunks, &servers, &Busy::default(), ROOMY);
        assert_eq!(
            tasks,
            vec![
                Task::Drop { place: chunks[0].place, nodes: vec![1], version: 3 },
                Task::Drop { place: chunks[1].place, nodes: vec![4], version: 3 },
            ]
        );
        let mut writing = chunk(1, &[1, 2, 3]);
        writing.version = 4;
        assert!(plan_repairs(&[writing], &servers, &Busy::default(), ROOMY).is_empty());
    }

    #[test]
    fn rebalance_fills_an_empty_server_and_stops_when_even() {
        let servers = [server(1, true, false, 0), server(2, true, false, 0), server(3, true, false, 0)];
        let chunks: Vec<ChunkView> = (1..=6).map(|i| chunk(i, &[1, 2])).collect();
        let moves = plan_rebalance(&chunks, &servers, 100);
        // 120 bytes over 3 servers: 40 each; 1 and 2 each give 2 chunks to 3.
        assert_eq!(moves.len(), 4, "{moves:?}");
        assert!(moves.iter().all(|m| m.to == 3));
        assert_eq!(moves.iter().filter(|m| m.from == 1).count(), 2);
        let chunk_ids: HashSet<u64> = moves.iter().map(|m| m.place.chunk).collect();
        assert_eq!(chunk_ids.len(), 4, "a chunk moves once");
        // Already even: nothing to do. Fewer than two usable servers: nothing either.
        let even: Vec<ChunkView> = (1..=3).map(|i| chunk(i, &[i, i % 3 + 1])).collect();
        assert!(plan_rebalance(&even, &servers, 100).is_empty());
        assert!(plan_rebalance(&chunks, &servers[..1], 100).is_empty());
        assert_eq!(plan_rebalance(&chunks, &servers, 1).len(), 1);
    }

    #[test]
    fn a_move_starts_only_while_its_plan_still_holds() {
        let servers = [server(1, true, false, 0), server(2, true, false, 0), server(3, true, false, 0)];
        let mut c = chunk(1, &[1, 2]);
        c.corrupt = vec![2];
        let m = Move { place: c.place, from: 1, to: 3, len_bytes: 10 };
        let idle = Busy::default();
        let MoveStep::Start(copy) = check_move(&m, Some(&c), &servers, &idle, 1) else { panic!() };
        assert_eq!((copy.sources.clone(), copy.target, copy.drop.clone()), (vec![1], 3, vec![1]));
        assert_eq!((copy.copied, copy.version, copy.expect.clone()), (3, 3, vec![1, 2]));
        // A full target keeps the move for later; anything else that changed voids it.
        let full = Busy { chunks: HashSet::new(), targets: HashMap::from([(3, (1, 10))]) };
        assert_eq!(check_move(&m, Some(&c), &servers, &full, 1), MoveStep::Wait);
        assert_eq!(check_move(&m, None, &servers, &idle, 1), MoveStep::Skip);
        let copying = Busy { chunks: HashSet::from([1]), targets: HashMap::new() };
        assert_eq!(check_move(&m, Some(&c), &servers, &copying, 1), MoveStep::Skip);
        let draining = [server(1, true, false, 0), server(2, true, false, 0), server(3, true, true, 0)];
        assert_eq!(check_move(&m, Some(&c), &draining, &idle, 1), MoveStep::Skip);
        let mut writing = c.clone();
        writing.version = 4;
        assert_eq!(check_move(&m, Some(&writing), &servers, &idle, 1), MoveStep::Skip);
        let mut deleting = c.clone();
        deleting.pending_delete = vec![3];
        assert_eq!(check_move(&m, Some(&deleting), &servers, &idle, 1), MoveStep::Skip);
        let mut moved = c.clone();
        moved.replicas = vec![2, 3];
        assert_eq!(check_move(&m, Some(&moved), &servers, &idle, 1), MoveStep::Skip);
        let elsewhere = ChunkView { place: ChunkPlace { index: 1, ..c.place }, ..c.clone() };
        assert_eq!(check_move(&m, Some(&elsewhere), &servers, &idle, 1), MoveStep::Skip);
    }

    /// Regression (review): `index * chunk_size` overflowed (a panic in a
    /// debug build, a wrong length in a release one) for an index far
    /// beyond any real file.
    #[test]
    fn a_chunk_at_an_absurd_index_does_not_overflow() {
        use crate::fsm::testing::{p, run, with_servers};
        use crate::fsm::{NamespaceCmd, WriteCmd};
        let mut st = with_servers(&[1]);
        let create = NamespaceCmd::Create { path: p("/f"), replication: 1, chunk_size: 100, open_existing: false };
        let crate::fsm::Response::Inode(f) = run(&mut st, create) else { panic!() };
        // The last chunk of the largest file the state machine accepts:
        // its end, (index + 1) * chunk_size, is past u64::MAX.
        let index = u64::MAX / 100;
        let prep = WriteCmd::PrepareWrite {
            inode: f.id,
            index,
            expect_id: None,
            expect_version: 0,
            replicas: vec![1],
            fence: None,
        };
        let crate::fsm::Response::Chunk { chunk, .. } = run(&mut st, prep) else { panic!() };
        let commit = WriteCmd::CommitWrite {
            inode: f.id,
            chunks: vec![(index, chunk.id, 1)],
            size: u64::MAX,
            truncate: false,
            fence: None,
        };
        run(&mut st, commit);
        let views = chunk_views(&st);
        assert_eq!((views.len(), views[0].len_bytes), (1, u64::MAX - index * 100));
    }

    #[test]
    fn rate_budget_keeps_the_long_run_rate() {
        let mut b = RateBudget::new(100, 0);
        assert!(b.try_take(250, 0), "a copy larger than the bucket still starts");
        assert!(!b.try_take(1, 1000), "in debt after one second");
        assert!(b.try_take(1, 1600));
        let mut free = RateBudget::new(0, 0);
        assert!((0..100).all(|_| free.try_take(u64::MAX, 0)));
    }
}
