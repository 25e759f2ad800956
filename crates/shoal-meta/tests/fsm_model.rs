//! Property test of the state machine against a model of the namespace.
//!
//! Random sequences of commands, including many that must be refused (bad
//! paths, missing parents, stale plans, duplicate or unknown servers, ended
//! sessions), are applied to an [`FsState`] and, for the namespace, to a
//! plain map from path to entry. After every step:
//! - `check_invariants` holds (apply also asserts it in test builds);
//! - a command that was refused changed nothing;
//! - the namespace, every file size and every inode's extended attributes
//!   equal the model's (attributes move with a rename, vanish with a remove);
//! - a namespace command succeeded exactly when the model says it must;
//! - a retried request id gets its first answer back and changes nothing;
//! - a granted byte range is held, an unlocked one is not, and an ended
//!   session holds and waits for nothing;
//! - a file written before it is created is made exactly when its chunk id
//!   is reserved and unused (and the create itself may be), with that
//!   chunk committed, and the id is used after;
//! - a truncation that shrinks a file to within a chunk with committed
//!   bytes is refused unless it lists that chunk's cut (rules 10).
//!
//! `PROPTEST_CASES` sets the number of cases (1,000 by default here).

use std::collections::BTreeMap;

use proptest::prelude::*;
use shoal_core::{FsError, NormalPath};
use shoal_meta::fsm::{
    ChunkPlace, Command, Fence, FsState, Kind, LockCmd, NamespaceCmd, NodeCmd, Proposal, ReplicaCmd, RequestId,
    Response, WriteCmd,
};
use shoal_meta::locks::Mode;
use shoal_meta::ranges::RangeAcquired;

/// A byte range in a small space (so ranges meet), sometimes to the end.
fn byte_range() -> impl Strategy<Value = (u64, u64)> {
    (0..12u64, 0..6u64, prop::bool::weighted(0.15))
        .prop_map(|(start, len, to_end)| (start, if to_end { u64::MAX } else { start + len }))
}

const CHUNK_SIZE: u64 = 100;
/// Chunk servers 1..=SERVERS are registered at the start; SERVERS + 1 never is.
const SERVERS: u64 = 4;

/// The model: every path (but the root) to a directory or a file of some size.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { size: u64 },
}

#[derive(Debug, Default, Clone)]
struct Model {
    entries: BTreeMap<String, Entry>,
    /// Path to its extended attributes (only paths that have some).
    xattrs: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

/// The most attribute bytes per inode (names plus values), as the state machine bounds them.
const XATTRS_TOTAL_MAX_BYTES: usize = 256 << 10;

fn parent_of(path: &str) -> String {
    match path.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => path[..i].to_string(),
        None => "/".to_string(),
    }
}

fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

impl Model {
    fn get(&self, path: &str) -> Option<&Entry> {
        if path == "/" { Some(&Entry::Dir) } else { self.entries.get(path) }
    }

    fn is_dir(&self, path: &str) -> bool {
        self.get(path) == Some(&Entry::Dir)
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
        self.entries.keys().any(|k| k.starts_with(&prefix))
    }

    /// Every ancestor of `path` (excluding `/` and itself) is a directory, and its parent exists as one.
    fn parent_is_dir(&self, path: &str) -> bool {
        self.is_dir(&parent_of(path))
    }

    fn mkdir(&mut self, path: &str, parents: bool) -> bool {
        if path == "/" {
            return parents;
        }
        if !parents {
            if !self.parent_is_dir(path) || self.get(path).is_some() {
                return false;
            }
            self.entries.insert(path.to_string(), Entry::Dir);
            return true;
        }
        let mut cur = String::new();
        let mut todo = Vec::new();
        for part in path.trim_start_matches('/').split('/') {
            cur = format!("{cur}/{part}");
            match self.get(&cur) {
                Some(Entry::Dir) => {}
                Some(Entry::File { .. }) => return false,
                None => todo.push(cur.clone()),
            }
        }
        for p in todo {
            self.entries.insert(p, Entry::Dir);
        }
        true
    }

    fn create(&mut self, path: &str, open_existing: bool) -> bool {
        if path == "/" || !self.parent_is_dir(path) {
            return false;
        }
        match self.get(path) {
            Some(Entry::File { .. }) => open_existing,
            Some(Entry::Dir) => false,
            None => {
                self.entries.insert(path.to_string(), Entry::File { size: 0 });
                true
            }
        }
    }

    fn remove(&mut self, path: &str, recursive: bool) -> bool {
        if path == "/" || !self.parent_is_dir(path) {
            return false;
        }
        match self.get(path) {
            None => false,
            Some(Entry::Dir) if self.has_children(path) && !recursive => false,
            Some(_) => {
                self.remove_tree(path);
                true
            }
        }
    }

    /// The entries (and attributes) at and below `path`, taken out, with
    /// their paths relative to it ("" for `path` itself).
    fn take_tree(&mut self, path: &str) -> (Vec<(String, Entry)>, Vec<(String, BTreeMap<String, Vec<u8>>)>) {
        let prefix = format!("{path}/");
        let rel = |k: &str| if k == path { String::new() } else { k[path.len()..].to_string() };
        let entries = self.entries.iter().filter(|(k, _)| *k == path || k.starts_with(&prefix));
        let entries: Vec<_> = entries.map(|(k, v)| (rel(k), v.clone())).collect();
        let attrs = self.xattrs.iter().filter(|(k, _)| *k == path || k.starts_with(&prefix));
        let attrs: Vec<_> = attrs.map(|(k, v)| (rel(k), v.clone())).collect();
        self.remove_tree(path);
        (entries, attrs)
    }

    /// renameat2(RENAME_EXCHANGE): both must exist, neither below the other.
    fn exchange(&mut self, a: &str, b: &str) -> bool {
        if a == "/" || b == "/" || !self.parent_is_dir(a) || !self.parent_is_dir(b) {
            return false;
        }
        if self.get(a).is_none() || self.get(b).is_none() {
            return false;
        }
        if a == b {
            return true;
        }
        if b.starts_with(&format!("{a}/")) || a.starts_with(&format!("{b}/")) {
            return false;
        }
        let (a_entries, a_attrs) = self.take_tree(a);
        let (b_entries, b_attrs) = self.take_tree(b);
        for (to, (entries, attrs)) in [(b, (a_entries, a_attrs)), (a, (b_entries, b_attrs))] {
            self.entries.extend(entries.into_iter().map(|(rel, e)| (format!("{to}{rel}"), e)));
            self.xattrs.extend(attrs.into_iter().map(|(rel, x)| (format!("{to}{rel}"), x)));
        }
        true
    }

    fn remove_tree(&mut self, path: &str) {
        let prefix = format!("{path}/");
        self.entries.retain(|k, _| k != path && !k.starts_with(&prefix));
        self.xattrs.retain(|k, _| k != path && !k.starts_with(&prefix));
    }

    fn set_xattrs(&mut self, path: &str, remove: &[String], set: &[(String, Vec<u8>)]) -> bool {
        if self.get(path).is_none() || (path != "/" && !self.parent_is_dir(path)) {
            return false;
        }
        let mut next = self.xattrs.get(path).cloned().unwrap_or_default();
        for n in remove {
            next.remove(n);
        }
        for (n, v) in set {
            next.insert(n.clone(), v.clone());
        }
        let valid = next.iter().all(|(n, v)| !n.is_empty() && n.len() <= 255 && !n.contains('\0') && v.len() <= 65536)
            && next.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() <= XATTRS_TOTAL_MAX_BYTES;
        if !valid {
            return false;
        }
        if next.is_empty() {
            self.xattrs.remove(path);
        } else {
            self.xattrs.insert(path.to_string(), next);
        }
        true
    }

    fn remove_xattr(&mut self, path: &str, name: &str) -> bool {
        if self.get(path).is_none() || (path != "/" && !self.parent_is_dir(path)) {
            return false;
        }
        let Some(attrs) = self.xattrs.get_mut(path) else { return false };
        if attrs.remove(name).is_none() {
            return false;
        }
        if attrs.is_empty() {
            self.xattrs.remove(path);
        }
        true
    }

    fn rename(&mut self, src: &str, dst: &str) -> bool {
        if src == "/" || !self.parent_is_dir(src) {
            return false;
        }
        let Some(moved) = self.get(src).cloned() else { return false };
        // Onto an existing directory (not itself): into it, as mv(1) does.
        let dst = match self.get(dst) {
            Some(Entry::Dir) if dst != src => {
                if dst == "/" {
                    format!("/{}", name_of(src))
                } else {
                    format!("{dst}/{}", name_of(src))
                }
            }
            _ => dst.to_string(),
        };
        if dst == src {
            return true;
        }
        if dst.starts_with(&format!("{src}/")) {
            return false;
        }
        if dst == "/" || !self.parent_is_dir(&dst) {
            return false;
        }
        match (&moved, self.get(&dst)) {
            (_, None) | (Entry::File { .. }, Some(Entry::File { .. })) => {}
            (Entry::Dir, Some(Entry::Dir)) if !self.has_children(&dst) => {}
            _ => return false,
        }
        self.remove_tree(&dst);
        let prefix = format!("{src}/");
        let moved_below: Vec<(String, Entry)> = self
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (format!("{dst}/{}", &k[prefix.len()..]), v.clone()))
            .collect();
        let moved_attrs: Vec<(String, BTreeMap<String, Vec<u8>>)> = self
            .xattrs
            .iter()
            .filter(|(k, _)| *k == src || k.starts_with(&prefix))
            .map(|(k, v)| (if k == src { dst.clone() } else { format!("{dst}/{}", &k[prefix.len()..]) }, v.clone()))
            .collect();
        self.remove_tree(src);
        self.entries.insert(dst, moved);
        self.entries.extend(moved_below);
        self.xattrs.extend(moved_attrs);
        true
    }
}

/// One step of a history.
#[derive(Debug, Clone)]
enum Op {
    SetXattrs {
        path: String,
        remove: Vec<String>,
        set: Vec<(String, Vec<u8>)>,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    Mkdir(String, bool),
    Create(String, bool),
    Remove(String, bool),
    /// unlink(2) (false) or rmdir(2) (true).
    RemoveKind(String, bool),
    Rename(String, String),
    Exchange(String, String),
    /// Write chunk `index` of a file on `replicas`, then commit `size` (or a truncation).
    Write {
        path: String,
        index: u64,
        replicas: Vec<u64>,
        size: u64,
        truncate: bool,
        commit: bool,
    },
    OpenSession,
    EndSession(u64),
    Acquire {
        session: u64,
        path: String,
        exclusive: bool,
        wait: bool,
    },
    Release {
        session: u64,
        path: String,
    },
    /// Bytes `start..=end` of `path` (end `u64::MAX`: to the end).
    AcquireRange {
        session: u64,
        path: String,
        exclusive: bool,
        wait: bool,
        start: u64,
        end: u64,
    },
    ReleaseRange {
        session: u64,
        path: String,
        start: u64,
        end: u64,
    },
    CancelRange {
        session: u64,
        path: String,
        ticket: u64,
    },
    Drop {
        file: usize,
        nodes: Vec<u64>,
    },
    Copy {
        file: usize,
        target: u64,
        drop: Vec<u64>,
    },
    Corrupt {
        node: u64,
        file: usize,
    },
    Lost {
        node: u64,
        file: usize,
    },
    Forget {
        node: u64,
    },
    Draining(u64, bool),
    SetReplication(String, u32),
    /// A write (a commit that changes no size) to the file at `path` under
    /// the `grant`th held lock, whose fence names the lock's own path or `path`.
    FencedWrite {
        grant: usize,
        path: String,
        own_path: bool,
    },
    /// Renames `src` onto the `grant`th held lock's path, fenced by it.
    FencedRename {
        grant: usize,
        src: String,
    },
    /// Repeats the last request id, as a client retrying after a lost answer.
    Retry,
    /// Reserve chunk ids for files written before they are created.
    Reserve(u64),
    /// Expire the runs reserved this many milliseconds (of leader time) ago or earlier.
    Expire(u64),
    /// Create `path` holding `size` bytes already written as a reserved
    /// chunk (picked by `pick` among the reserved runs, or just past one).
    WriteNew {
        path: String,
        pick: u64,
        replicas: Vec<u64>,
        size: u64,
    },
}

fn path_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..4)
        .prop_map(|parts| format!("/{}", parts.join("/")))
}

fn server() -> impl Strategy<Value = u64> {
    1..=SERVERS + 1
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (path_strategy(), any::<bool>()).prop_map(|(p, b)| Op::Mkdir(p, b)),
        4 => (path_strategy(), any::<bool>()).prop_map(|(p, b)| Op::Create(p, b)),
        2 => (path_strategy(), any::<bool>()).prop_map(|(p, b)| Op::Remove(p, b)),
        1 => (path_strategy(), any::<bool>()).prop_map(|(p, dir)| Op::RemoveKind(p, dir)),
        2 => (path_strategy(), path_strategy()).prop_map(|(a, b)| Op::Rename(a, b)),
        1 => (path_strategy(), path_strategy()).prop_map(|(a, b)| Op::Exchange(a, b)),
        5 => (path_strategy(), 0..3u64, prop::collection::vec(server(), 0..4), 0..350u64, prop::bool::weighted(0.2), prop::bool::weighted(0.8))
            .prop_map(|(path, index, replicas, size, truncate, commit)| Op::Write { path, index, replicas, size, truncate, commit }),
        1 => Just(Op::OpenSession),
        1 => (1..5u64).prop_map(Op::EndSession),
        2 => (1..5u64, path_strategy(), any::<bool>(), any::<bool>())
            .prop_map(|(session, path, exclusive, wait)| Op::Acquire { session, path, exclusive, wait }),
        1 => (1..5u64, path_strategy()).prop_map(|(session, path)| Op::Release { session, path }),
        3 => (1..5u64, path_strategy(), any::<bool>(), any::<bool>(), byte_range())
            .prop_map(|(session, path, exclusive, wait, (start, end))| Op::AcquireRange { session, path, exclusive, wait, start, end }),
        2 => (1..5u64, path_strategy(), byte_range())
            .prop_map(|(session, path, (start, end))| Op::ReleaseRange { session, path, start, end }),
        1 => (1..5u64, path_strategy(), 0..20u64)
            .prop_map(|(session, path, ticket)| Op::CancelRange { session, path, ticket }),
        1 => (0..8usize, prop::collection::vec(server(), 0..3)).prop_map(|(file, nodes)| Op::Drop { file, nodes }),
        1 => (0..8usize, server(), prop::collection::vec(server(), 0..2)).prop_map(|(file, target, drop)| Op::Copy { file, target, drop }),
        1 => (server(), 0..8usize).prop_map(|(node, file)| Op::Corrupt { node, file }),
        1 => (server(), 0..8usize).prop_map(|(node, file)| Op::Lost { node, file }),
        1 => server().prop_map(|node| Op::Forget { node }),
        1 => (server(), any::<bool>()).prop_map(|(n, d)| Op::Draining(n, d)),
        1 => (path_strategy(), 0..4u32).prop_map(|(p, r)| Op::SetReplication(p, r)),
        3 => (0..8usize, path_strategy(), any::<bool>())
            .prop_map(|(grant, path, own_path)| Op::FencedWrite { grant, path, own_path }),
        2 => (0..8usize, path_strategy()).prop_map(|(grant, src)| Op::FencedRename { grant, src }),
        2 => Just(Op::Retry),
        3 => (path_strategy(), prop::collection::vec(xattr_name(), 0..2), prop::collection::vec((xattr_name(), xattr_value()), 0..3))
            .prop_map(|(path, remove, set)| Op::SetXattrs { path, remove, set }),
        1 => (path_strategy(), xattr_name()).prop_map(|(path, name)| Op::RemoveXattr { path, name }),
        1 => prop_oneof![Just(0u64), 1..5u64, Just(1025u64)].prop_map(Op::Reserve),
        1 => (0..200u64).prop_map(Op::Expire),
        3 => (path_strategy(), any::<u64>(), prop::collection::vec(server(), 0..3), 0..120u64)
            .prop_map(|(path, pick, replicas, size)| Op::WriteNew { path, pick, replicas, size }),
    ]
}

/// Attribute names: a few valid ones, and some the bounds refuse.
fn xattr_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["user.a", "user.b", "user.s3.etag"]).prop_map(String::from),
        1 => Just(String::new()),
        1 => Just("n".repeat(256)),
        1 => Just("a\0b".to_string()),
    ]
}

/// Attribute values: mostly small, now and then over the bound, or large
/// enough that a few of them pass the per-inode total.
fn xattr_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..4),
        1 => Just(vec![7u8; 65537]),
        1 => Just(vec![9u8; 65536]),
    ]
}

fn np(s: &str) -> NormalPath {
    NormalPath::parse(s).expect("the strategy makes valid paths")
}

/// Drives one history; keeps the last request so `Retry` can repeat it.
struct Harness {
    st: FsState,
    model: Model,
    now_ms: u64,
    seq: u64,
    last: Option<(Proposal, Response, FsState)>,
}

impl Harness {
    fn new() -> Self {
        let mut h = Harness { st: FsState::default(), model: Model::default(), now_ms: 1, seq: 0, last: None };
        for id in 1..=SERVERS {
            h.apply(NodeCmd::RegisterNode { id, addr: format!("127.0.0.1:{}", 7000 + id) });
        }
        h
    }

    /// Applies `cmd` under a fresh request id; checks that a refusal changed nothing.
    fn apply(&mut self, cmd: impl Into<Command>) -> Response {
        let cmd = cmd.into();
        self.now_ms += 7;
        self.seq += 1;
        let request = Some(RequestId { client: 42, seq: self.seq, done_below: self.seq.saturating_sub(2) });
        let p = Proposal::new(self.now_ms, request, cmd);
        let before = self.st.clone();
        let r = self.st.apply(&p);
        if matches!(r, Response::Err(_) | Response::Conflict) {
            // Only the dedup record (its bookkeeping of this client) may differ.
            let mut after = self.st.clone();
            after.clients = before.clients.clone();
            after.next_client_sweep_ms = before.next_client_sweep_ms;
            // A refused copy is garbage on its target (by design).
            if let Command::Replicas(ReplicaCmd::AddReplica { place, target, .. }) = &p.cmd
                && let Some(holders) = after.garbage.get_mut(&place.chunk)
                && !before.garbage.get(&place.chunk).is_some_and(|h| h.contains(target))
            {
                holders.remove(target);
                if holders.is_empty() {
                    after.garbage.remove(&place.chunk);
                }
            }
            assert_eq!(after, before, "refused {:?} ({r:?}) changed the state", p.cmd);
        }
        self.last = Some((p, r.clone(), self.st.clone()));
        r
    }

    fn file_place(&self, pick: usize) -> Option<ChunkPlace> {
        let places: Vec<ChunkPlace> = self
            .st
            .inodes
            .values()
            .flat_map(|i| i.chunks.iter().map(|(index, c)| ChunkPlace { inode: i.id, index: *index, chunk: c.id }))
            .collect();
        (!places.is_empty()).then(|| places[pick % places.len()])
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Mkdir(path, parents) => {
                let ok =
                    matches!(self.apply(NamespaceCmd::Mkdir { path: np(path), parents: *parents }), Response::Inode(_));
                assert_eq!(ok, self.model.mkdir(path, *parents), "mkdir {path} parents={parents}");
            }
            Op::Create(path, open) => {
                let cmd = NamespaceCmd::Create {
                    path: np(path),
                    replication: 2,
                    chunk_size: CHUNK_SIZE,
                    open_existing: *open,
                };
                let ok = matches!(self.apply(cmd), Response::Inode(_));
                assert_eq!(ok, self.model.create(path, *open), "create {path} open_existing={open}");
            }
            Op::Remove(path, recursive) => {
                let ok = self.apply(NamespaceCmd::Remove { path: np(path), recursive: *recursive }) == Response::Ok;
                assert_eq!(ok, self.model.remove(path, *recursive), "remove {path} recursive={recursive}");
            }
            Op::RemoveKind(path, dir) => {
                let kind_ok = path != "/" && self.model.get(path).is_some_and(|e| (*e == Entry::Dir) == *dir);
                let ok = self.apply(NamespaceCmd::RemoveKind { path: np(path), dir: *dir }) == Response::Ok;
                assert_eq!(ok, kind_ok && self.model.remove(path, false), "remove {path} dir={dir}");
            }
            Op::Rename(src, dst) => {
                let ok = self.apply(NamespaceCmd::Rename { src: np(src), dst: np(dst), fence: None }) == Response::Ok;
                assert_eq!(ok, self.model.rename(src, dst), "rename {src} {dst}");
            }
            Op::Exchange(a, b) => {
                let ok = self.apply(NamespaceCmd::Exchange { a: np(a), b: np(b) }) == Response::Ok;
                assert_eq!(ok, self.model.exchange(a, b), "exchange {a} {b}");
            }
            Op::Write { path, index, replicas, size, truncate, commit } => {
                self.write(path, *index, replicas, *size, *truncate, *commit)
            }
            Op::OpenSession => {
                assert!(matches!(self.apply(LockCmd::OpenSession { ttl_ms: 1000 }), Response::Session { .. }));
            }
            Op::EndSession(session) => {
                assert_eq!(self.apply(LockCmd::EndSession { session: *session }), Response::Ok);
                assert!(!self.st.locks.paths.values().any(|l| {
                    l.holders.iter().any(|g| g.session == *session) || l.queue.iter().any(|w| w.session == *session)
                }));
                assert!(!self.st.ranges.paths.values().any(|p| {
                    p.holds.iter().any(|h| h.session == *session) || p.queue.iter().any(|w| w.session == *session)
                }));
            }
            Op::Acquire { session, path, exclusive, wait } => {
                let mode = if *exclusive { Mode::Exclusive } else { Mode::Shared };
                let live = self.st.sessions.contains_key(session);
                let r = self.apply(LockCmd::Acquire { session: *session, path: np(path), mode, wait: *wait });
                if !live {
                    assert!(matches!(r, Response::Err(_)), "an ended session acquired: {r:?}");
                }
            }
            Op::Release { session, path } => {
                self.apply(LockCmd::Release { session: *session, path: np(path) });
            }
            Op::AcquireRange { session, path, exclusive, wait, start, end } => {
                let mode = if *exclusive { Mode::Exclusive } else { Mode::Shared };
                let live = self.st.sessions.contains_key(session);
                let cmd = LockCmd::AcquireRange {
                    session: *session,
                    path: np(path),
                    mode,
                    start: *start,
                    end: *end,
                    wait: *wait,
                };
                let cycle = *wait && self.st.ranges.would_deadlock(path, *session, mode, *start, *end);
                let before = self.st.ranges.clone();
                match self.apply(cmd) {
                    Response::Err(FsError::Deadlock { .. }) => {
                        assert!(cycle && live, "refused as a deadlock: cycle {cycle}, live {live}");
                        assert_eq!(self.st.ranges, before, "a refused wait changes no lock");
                    }
                    Response::Range(RangeAcquired::Granted { .. }) => {
                        assert!(live, "an ended session acquired");
                        assert!(self.st.ranges.covers(path, *session, mode, *start, *end), "granted bytes are held");
                    }
                    Response::Range(RangeAcquired::Queued(w)) => {
                        assert!(live && *wait && !cycle, "queued: live {live}, wait {wait}, cycle {cycle}");
                        assert!(self.st.ranges.queued(path, *session, w.ticket));
                    }
                    Response::Err(_) => {}
                    other => panic!("a byte-range request answered {other:?}"),
                }
            }
            Op::ReleaseRange { session, path, start, end } => {
                let cmd = LockCmd::ReleaseRange { session: *session, path: np(path), start: *start, end: *end };
                if self.apply(cmd) == Response::Ok {
                    let held = self.st.ranges.paths.get(path.as_str()).map_or(Vec::new(), |p| p.holds.clone());
                    assert!(
                        !held.iter().any(|h| h.session == *session && h.start <= *end && *start <= h.end),
                        "unlocked bytes are no longer held"
                    );
                }
            }
            Op::CancelRange { session, path, ticket } => {
                self.apply(LockCmd::CancelRange { session: *session, path: np(path), ticket: *ticket });
            }
            Op::Drop { file, nodes } => {
                if let Some(place) = self.file_place(*file) {
                    let before = self.st.chunk_at(place).expect("listed").clone();
                    self.apply(ReplicaCmd::DropReplicas {
                        place,
                        nodes: nodes.clone(),
                        expect_version: before.version,
                    });
                    let after = self.st.chunk_at(place).expect("a drop keeps the chunk");
                    // Never its last replica.
                    assert!(after.replicas.len() >= before.replicas.len().min(1), "{before:?} -> {after:?}");
                }
            }
            Op::Copy { file, target, drop } => {
                if let Some(place) = self.file_place(*file) {
                    let c = self.st.chunk_at(place).expect("listed").clone();
                    self.apply(ReplicaCmd::AddReplica {
                        place,
                        copied: c.committed_version,
                        version: c.version,
                        target: *target,
                        expect: c.replicas.clone(),
                        drop: drop.clone(),
                    });
                }
            }
            Op::Corrupt { node, file } => {
                if let Some(place) = self.file_place(*file) {
                    self.apply(ReplicaCmd::ReportCorrupt { node: *node, chunks: vec![place] });
                }
            }
            Op::Lost { node, file } => {
                if let Some(place) = self.file_place(*file) {
                    self.apply(ReplicaCmd::Reconcile { node: *node, garbage: vec![], lost: vec![place] });
                }
            }
            Op::Forget { node } => {
                let chunks = self.st.garbage_for(*node, 100);
                self.apply(NodeCmd::ForgetGarbage { node: *node, chunks: chunks.clone() });
                assert!(self.st.garbage_for(*node, 100).is_empty());
            }
            Op::Draining(node, draining) => {
                let known = self.st.nodes.contains_key(node);
                let ok = self.apply(NodeCmd::SetDraining { node: *node, draining: *draining }) == Response::Ok;
                assert_eq!(ok, known);
            }
            Op::SetReplication(path, replication) => {
                let ok = self.apply(ReplicaCmd::SetReplication { path: np(path), replication: *replication })
                    == Response::Ok;
                assert_eq!(ok, *replication > 0 && self.model.get(path).is_some(), "setrep {replication} {path}");
            }
            Op::FencedWrite { grant, path, own_path } => self.fenced_write(*grant, path, *own_path),
            Op::FencedRename { grant, src } => {
                let Some((locked, g)) = self.grant(*grant) else { return };
                let fence = Some(Fence { path: np(&locked), token: g.token });
                let ok = self.apply(NamespaceCmd::Rename { src: np(src), dst: np(&locked), fence }) == Response::Ok;
                if ok {
                    assert!(self.model.rename(src, &locked), "fenced rename {src} -> {locked} has no model");
                    let moved = self.st.lookup(&np(&locked)).expect("renamed into place");
                    assert_eq!((moved.fence, self.st.fence_bindings.get(&g.token)), (g.token, Some(&moved.id)));
                }
            }
            Op::SetXattrs { path, remove, set } => {
                let cmd = NamespaceCmd::SetXattrs { path: np(path), remove: remove.clone(), set: set.clone() };
                let ok = self.apply(cmd) == Response::Ok;
                assert_eq!(ok, self.model.set_xattrs(path, remove, set), "set xattrs on {path}");
            }
            Op::RemoveXattr { path, name } => {
                let ok = self.apply(NamespaceCmd::RemoveXattr { path: np(path), name: name.clone() }) == Response::Ok;
                assert_eq!(ok, self.model.remove_xattr(path, name), "remove xattr {name:?} of {path}");
            }
            Op::Reserve(count) => {
                let next = self.st.next_chunk_id;
                let r = self.apply(WriteCmd::ReserveChunkIds { count: *count });
                let ok = (1..=1024).contains(count);
                assert_eq!(r == (Response::Reserved { start: next, count: *count }), ok, "reserve {count}: {r:?}");
            }
            Op::Expire(ago) => {
                let before_ms = self.now_ms.saturating_sub(*ago);
                let kept: Vec<_> = self.st.reserved.iter().filter(|r| r.reserved_ms >= before_ms).cloned().collect();
                assert_eq!(self.apply(WriteCmd::ExpireReservations { before_ms }), Response::Ok);
                assert_eq!(self.st.reserved, kept, "exactly the runs reserved before {before_ms} go");
            }
            Op::WriteNew { path, pick, replicas, size } => {
                let runs = &self.st.reserved;
                let chunk = match runs.len() {
                    0 => *pick % 4,
                    n => {
                        let r = &runs[(*pick % n as u64) as usize];
                        r.start + (*pick / 2) % (r.count + 1)
                    }
                };
                let mut distinct = replicas.clone();
                distinct.sort();
                distinct.dedup();
                let args_ok = (1..=CHUNK_SIZE).contains(size)
                    && !replicas.is_empty()
                    && distinct.len() == replicas.len()
                    && replicas.iter().all(|r| *r <= SERVERS);
                let draining = replicas.iter().any(|r| self.st.nodes.get(r).is_some_and(|n| n.draining));
                let fresh = self.st.reserved_unused(chunk) && !draining && !self.st.garbage.contains_key(&chunk);
                let create = NamespaceCmd::Create {
                    path: np(path),
                    replication: 2,
                    chunk_size: CHUNK_SIZE,
                    open_existing: false,
                };
                let r = self.apply(WriteCmd::CreateWritten { create, chunk, replicas: replicas.clone(), size: *size });
                let expect = args_ok && fresh && self.model.create(path, false);
                assert_eq!(matches!(r, Response::Inode(_)), expect, "write new {path} as chunk {chunk}: {r:?}");
                if expect {
                    self.model.entries.insert(path.clone(), Entry::File { size: *size });
                    assert!(!self.st.reserved_unused(chunk), "a used id stays reserved and unused");
                    let f = self.st.lookup(&np(path)).expect("made");
                    assert_eq!((f.size, f.chunks[&0].id, f.chunks[&0].committed_version), (*size, chunk, 1));
                }
            }
            Op::Retry => {
                let Some((p, first, state)) = self.last.clone() else { return };
                let again = self.st.apply(&p);
                assert_eq!(again, first, "a retried request got another answer");
                let mut now = self.st.clone();
                now.clients = state.clients.clone();
                assert_eq!(now, state, "a retried request changed the state");
            }
        }
    }

    /// The `pick`th lock holder (by path, then holder order) and its path.
    fn grant(&self, pick: usize) -> Option<(String, shoal_meta::locks::Grant)> {
        let all: Vec<(String, shoal_meta::locks::Grant)> =
            self.st.locks.paths.iter().flat_map(|(p, l)| l.holders.iter().map(move |g| (p.clone(), *g))).collect();
        (!all.is_empty()).then(|| all[pick % all.len()].clone())
    }

    /// A fenced commit; accepted exactly when the fencing rules say so.
    fn fenced_write(&mut self, grant: usize, path: &str, own_path: bool) {
        let Some((locked, g)) = self.grant(grant) else { return };
        let Ok(f) = self.st.lookup(&np(path)) else { return };
        if f.kind != Kind::File {
            return;
        }
        let (inode, size, newest) = (f.id, f.size, f.fence);
        let fence_path = if own_path { locked.clone() } else { path.to_string() };
        // The rules, independently: the token holds the fence's path, is not
        // older than the file's fence, and is bound to this file, or to none
        // that still exists while the fence's path names this file.
        let holds = self.st.locks.token_holds(&fence_path, g.token);
        let bound = self.st.fence_bindings.get(&g.token).copied().filter(|b| self.st.inodes.contains_key(b));
        let names = self.st.lookup(&np(&fence_path)).is_ok_and(|i| i.id == inode);
        let expect = holds && g.token >= newest && bound.map_or(names, |b| b == inode);
        let fence = Some(Fence { path: np(&fence_path), token: g.token });
        let r = self.apply(WriteCmd::CommitWrite { inode, chunks: vec![], size, truncate: false, fence });
        assert_eq!(matches!(r, Response::Inode(_)), expect, "fenced write of {path} under {locked}: {r:?}");
        if expect {
            assert_eq!((self.st.inodes[&inode].fence, self.st.fence_bindings.get(&g.token)), (g.token, Some(&inode)));
        }
    }

    /// Prepares chunk `index` of `path` on `replicas`, then (maybe) commits it.
    fn write(&mut self, path: &str, index: u64, replicas: &[u64], size: u64, truncate: bool, commit: bool) {
        let Ok(f) = self.st.lookup(&np(path)) else { return };
        if f.kind != Kind::File {
            return;
        }
        let inode = f.id;
        let current = f.chunks.get(&index).cloned();
        let prep = WriteCmd::PrepareWrite {
            inode,
            index,
            expect_id: current.as_ref().map(|c| c.id),
            expect_version: current.as_ref().map_or(0, |c| c.version),
            replicas: replicas.to_vec(),
            fence: None,
        };
        let valid = !replicas.is_empty()
            && replicas.iter().all(|r| *r <= SERVERS)
            && replicas.iter().collect::<std::collections::BTreeSet<_>>().len() == replicas.len();
        let r = self.apply(prep);
        let chunk = match r {
            Response::Chunk { chunk, .. } => chunk,
            Response::Err(_) | Response::Conflict => {
                assert!(!valid || current.is_some(), "a valid first prepare was refused: {r:?}");
                return;
            }
            other => panic!("prepare answered {other:?}"),
        };
        assert!(valid, "an invalid chain was accepted: {replicas:?}");
        assert_eq!(chunk.version, current.as_ref().map_or(1, |c| c.version + 1));
        if !commit {
            return;
        }
        // A truncation commits the chunk it prepared when the new end falls
        // in it (a cut), else none; a write commits the one it prepared.
        let (chunks, size) = if truncate {
            let cut = index == size / CHUNK_SIZE && !size.is_multiple_of(CHUNK_SIZE);
            (if cut { vec![(index, chunk.id, chunk.version)] } else { vec![] }, size)
        } else {
            (vec![(index, chunk.id, chunk.version)], size.max(index * CHUNK_SIZE + 1))
        };
        // Rules 10: a shrink to within a chunk with committed bytes, not
        // cut, lost a race with a writer there.
        let file = &self.st.inodes[&inode];
        let end = size / CHUNK_SIZE;
        let uncut = truncate
            && size < file.size
            && !size.is_multiple_of(CHUNK_SIZE)
            && !chunks.iter().any(|(i, _, _)| *i == end)
            && file.chunks.get(&end).is_some_and(|c| c.committed_version > 0);
        let r = self.apply(WriteCmd::CommitWrite { inode, chunks, size, truncate, fence: None });
        if uncut {
            assert_eq!(r, Response::Err(FsError::ChunkChanged { inode, index: end }));
            return;
        }
        let Response::Inode(after) = r else { panic!("commit of a fresh prepare refused: {r:?}") };
        let Some(Entry::File { size: model_size }) = self.model.entries.get_mut(path) else {
            panic!("model lost {path}")
        };
        *model_size = if truncate { size } else { (*model_size).max(size) };
        assert_eq!(after.size, *model_size);
    }

    /// Every path's extended attributes, for paths that have some.
    fn xattrs(&self) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
        let mut out = BTreeMap::new();
        let mut todo = vec![("/".to_string(), shoal_meta::fsm::ROOT_INODE)];
        while let Some((path, id)) = todo.pop() {
            let inode = &self.st.inodes[&id];
            if !inode.extra.xattrs.is_empty() {
                out.insert(path.clone(), inode.extra.xattrs.clone());
            }
            for (name, child) in inode.children.iter() {
                let p = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
                todo.push((p, *child));
            }
        }
        out
    }

    /// The namespace as the model sees it.
    fn snapshot(&self) -> BTreeMap<String, Entry> {
        let mut out = BTreeMap::new();
        let mut todo = vec![("/".to_string(), shoal_meta::fsm::ROOT_INODE)];
        while let Some((path, id)) = todo.pop() {
            let inode = &self.st.inodes[&id];
            for (name, child) in inode.children.iter() {
                let p = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
                let c = &self.st.inodes[child];
                out.insert(p.clone(), if c.kind == Kind::Dir { Entry::Dir } else { Entry::File { size: c.size } });
                todo.push((p, *child));
            }
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_histories_keep_invariants_and_match_the_model(ops in prop::collection::vec(op_strategy(), 1..80)) {
        let mut h = Harness::new();
        for op in &ops {
            h.step(op);
            h.st.check_invariants().map_err(|e| TestCaseError::fail(format!("after {op:?}: {e}")))?;
            prop_assert_eq!(h.snapshot(), h.model.entries.clone(), "after {:?}", op);
            prop_assert_eq!(h.xattrs(), h.model.xattrs.clone(), "after {:?}", op);
        }
    }
}
