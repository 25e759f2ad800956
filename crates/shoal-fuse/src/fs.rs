//! The kernel's FUSE requests, answered through the client library.
//!
//! # Inodes and paths
//! Meta's inode numbers are the FUSE inode numbers (the root is 1 in both).
//! Attributes are read by inode (`stat_inode`), so they never depend on a
//! path. Meta's namespace calls take paths, and the kernel names an entry
//! by its directory's inode and its name, so the mount sends the path
//! anchored at that inode, `/.shoal-inode/D/name` ([`inode_path`]; the root
//! is plain `/`). Meta resolves the anchor as the call applies (rules 8),
//! so a call always reaches the directory the kernel meant, even one
//! another mount renamed a moment before, and never the directory that
//! took its old name. The mount keeps no paths of its own.
//!
//! # Open files and the write buffer
//! An open is answered after meta's current attributes and chunk map are
//! fetched (close-to-open: a file closed on another mount is read whole and
//! new by a later open here), and without `FOPEN_KEEP_CACHE`, so the kernel
//! drops what it cached of the file, and its cached attributes are dropped
//! too (a notification), so a size that grew elsewhere is asked for again;
//! unless the attributes the kernel was last given surely equal the fresh
//! ones ([`crate::given`]).
//! Writes are held per handle
//! ([`crate::buffer`]) and sent in large pieces; each piece is one client
//! `write_ranges`, which returns only once every replica has the bytes
//! durable and meta has committed them. So `fsync` and `close` (flush) return only
//! when everything written through the handle is acknowledged. A piece that
//! fails (`EIO`, or `ENOSPC` when the cluster has no room) is reported
//! much as Linux reports a lost writeback, but per open file rather than
//! per inode: once by the next flush (close) of the holding handle unless
//! its fsync said it first, and once by its next fsync (which says it
//! even after a close of a copy of the descriptor, such as a child of a
//! multithreaded program makes at `exec`, has heard it); and once by the
//! next fsync through each other handle of the file open then (not one
//! opened later). Later writes go on. A write that must
//! first send the ranges held before (it cannot join them) publishes
//! both spans as held until that send ends, so other handles' writes and
//! reads over either wait for it; if the send fails, the write fails and
//! its own bytes are dropped. Data ends within the last whole chunk before
//! 2^63 - 1: a write across it is short, one from past it `EFBIG`. What is
//! held for [`crate::buffer::FLUSH_AFTER`] is sent by a background task. A
//! write through one handle first sends what the file's other handles hold
//! in a span (first held byte to last) it meets, and a read what they
//! hold from where it reads on, so no two handles hold the same bytes and
//! later bytes win whatever order handles close in; an fsync sends what
//! every handle of the file holds. A read answers its own handle's held
//! bytes laid over the cluster's, without sending them (a process reads
//! its own writes, and a read-modify-write loop such as a database's costs
//! no commit per read).
//!
//! # Read-ahead
//! A handle read sequentially fetches the next piece in the background
//! ([`crate::readahead`] decides which), and answers later reads from it.
//! Every change this mount makes to a file's bytes or size (a piece sent, a
//! truncate) moves the file's epoch before and after it (`epochs`, striped
//! by inode); read-ahead fetched under another epoch is dropped, and so is a
//! handle's on a write through it or a seek. So a read never answers bytes
//! older than the last local change.
//!
//! # Unlinked open files
//! POSIX keeps a file's data while it is open, after its last name is
//! removed. Meta frees a file with its last name, so an unlink of a file's
//! last name while this mount has it open (or a rename that replaces it:
//! then first, so the name is absent for a moment, and put back if the
//! rename fails) renames it instead, to a hidden
//! name in the root ([`hidden_path`], unique per mount and inode, left out
//! of listings), as NFS clients do; `stat` reports it with no links, and
//! the hidden name is removed when this mount's last handle of it is
//! released (or at unmount). Hidden names carry the id of the mount's
//! keeper session (a lock session opened at the first, kept alive like the
//! lock sessions, with its own TTL, `--unlinked-ttl`), and meta removes a session's hidden names
//! when it ends. So a mount that dies, or that stays cut off from meta past
//! its session's TTL, leaves nothing behind once meta expires the session
//! (and a cut-off mount's handles of them then fail). Meta refuses to hide
//! a file under a session it already ended, and the mount then hides it
//! under a new keeper. (Hidden names from before rules 6 have no session.)
//! Another mount's open handles are not seen: its reads of a file unlinked
//! here fail. A hidden name is never a user's target (a rename onto one is
//! `EINVAL`), and a hide that meta refuses because another client replaced
//! the name since it was looked up counts as the name being gone: an
//! unlink then looks at the name anew.
//!
//! # Locks
//! flock(2) (and, if asked for, fcntl(2)) locks are Shoal's cluster locks, one per inode, one
//! session per lock owner; see [`crate::locks`].
//!
//! # Time limits
//! Every call has a limit (the client's timeout for namespace calls, a
//! longer one for data); past it the call fails with `EIO`, never hangs.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use shoal_client::{AttrChange, Client, ClientError, File, Lock, Owner, Special, Stat, TimeSet};
use shoal_core::path::inode_lock_name;

use crate::MountOptions;
use crate::attr::{self, file_attr};
use crate::buffer::{Piece, WriteBuffer};
use crate::errno::errno;
use crate::given::Given;
use crate::locks::{Held, Locks, Step, Want};
use crate::readahead::ReadAhead;

/// Open files one mount keeps at once; more fail with `EMFILE`.
pub const OPEN_FILES_MAX: usize = 1 << 16;
/// Open directories one mount keeps at once; more fail with `EMFILE`.
pub const OPEN_DIRS_MAX: usize = 1 << 14;
/// The extended attributes the mount shows and sets: `user.*` only.
const XATTR_PREFIX: &str = "user.";
/// How often the mount looks for held writes that are due ([`Inner::send_due`]).
pub const FLUSH_TICK: Duration = Duration::from_millis(250);
/// Stripes of the files' change epochs (files whose inodes share a stripe
/// drop each other's read-ahead: harmless, and the memory stays fixed).
const EPOCH_STRIPES: usize = 256;
/// The zeros of a hole punched or a range zeroed go in writes of this size.
const ZERO_PIECE_BYTES: u64 = 4 << 20;

/// One open file: its client handle and the bytes written and not sent yet.
struct Handle {
    ino: u64,
    /// Where the held ranges start (meaningful while `held_end` is not 0),
    /// readable without the lock.
    held_start: AtomicU64,
    /// Where the held ranges end (0: nothing held), readable without the lock.
    held_end: AtomicU64,
    /// The errno of a piece of this file that another handle lost since
    /// this handle's last fsync (0: none): its next fsync reports it, once.
    lost_elsewhere: AtomicI32,
    state: tokio::sync::Mutex<OpenState>,
}

struct OpenState {
    file: File,
    buf: WriteBuffer,
    /// A held piece that could not be sent, for the next flush to report.
    failed: Option<Errno>,
    /// The same, for the next fsync to report (which clears both).
    failed_for_sync: Option<Errno>,
    /// When the held ranges' oldest byte was written (None: nothing held).
    held_since: Option<std::time::Instant>,
    /// Bytes fetched ahead of a sequential reader.
    ahead: ReadAhead,
    /// The read-ahead fetch in flight, if any.
    fetching: Option<Fetch>,
    /// One of the mount's large write buffers, while this handle's held
    /// range is past the usual bound ([`crate::buffer::LARGE_BUFFERS`]).
    large: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A read-ahead fetch running in the background: `len` bytes at `start`,
/// under the file's epoch `epoch`. Dropped, it is stopped.
struct Fetch {
    start: u64,
    len: u64,
    epoch: u64,
    task: tokio::task::JoinHandle<Option<Vec<u8>>>,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An open directory: its entries as last listed (at opendir, or again by
/// readdirplus), when, and the mount's change count just before
/// ([`Inner::changes`]).
struct Listing {
    items: Vec<DirItem>,
    at: std::time::Instant,
    changes: u64,
}

/// One entry of an open directory's listing.
struct DirItem {
    ino: u64,
    kind: FileType,
    name: String,
    /// `.` or `..`.
    dot: bool,
    /// Meta's attributes of the entry as last listed, for readdirplus;
    /// none for a dot entry or a name gone since the opendir.
    stat: Option<shoal_client::Stat>,
}

/// Entries one readdirplus builds at most (more than a batch holds).
const PLUS_ENTRIES_MAX: usize = 1024;

/// The mount's state, shared between the kernel's worker threads and the
/// code that unmounts.
pub struct Inner {
    client: Client,
    rt: tokio::runtime::Handle,
    opts: MountOptions,
    files: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<Listing>>>,
    /// Moves before and after every change this mount makes (a mutating
    /// call, a piece sent): a listing taken at another count may be stale.
    changes: AtomicU64,
    /// Changes under way ([`Changing`] guards alive).
    in_flight: AtomicU64,
    next_fh: AtomicU64,
    /// Local change epochs of files, striped by inode.
    epochs: [AtomicU64; EPOCH_STRIPES],
    /// Reads under way, striped by inode as the epochs are (a short one
    /// cuts the kernel's size: see [`crate::given`]).
    reading: [AtomicU64; EPOCH_STRIPES],
    /// Tells the kernel to drop what it cached (set once the session exists).
    pub(crate) notifier: std::sync::OnceLock<fuser::Notifier>,
    /// Files unlinked while open here: inode to its hidden path.
    unlinked: Mutex<HashMap<u64, String>>,
    /// Inodes hidden by a rename under way (which may put them back): their
    /// hidden names stay until it ends, whatever releases come.
    pinned: Mutex<std::collections::HashSet<u64>>,
    /// The session hidden names belong to (opened at the first): meta
    /// removes them when it ends, so a mount that dies leaks none.
    keeper: Mutex<Option<shoal_client::Session>>,
    /// flock(2) and fcntl(2) locks: their owners, sessions and grants.
    pub(crate) locks: Locks,
    /// The attributes the kernel was given, so an open drops the kernel's
    /// only when meta's differ.
    given: Mutex<Given>,
    /// Permits for large write buffers ([`crate::buffer::LARGE_BUFFERS`]).
    large_buffers: Arc<tokio::sync::Semaphore>,
}

/// The hidden name an open file unlinked through a mount whose keeper
/// session is `session` takes (sessions are unique, so names are per mount).
fn hidden_path(session: u64, ino: u64) -> String {
    format!("/{}", shoal_core::path::unlinked_name(session, ino))
}

/// The stripe of inode `ino` in [`Inner::epochs`] and [`Inner::reading`].
fn stripe(ino: u64) -> usize {
    ino as usize % EPOCH_STRIPES
}

/// Whether the entry `name` of directory `dir` is a hidden unlinked file.
fn is_hidden(dir: u64, name: &str) -> bool {
    dir == 1 && name.starts_with(shoal_core::path::UNLINKED_PREFIX)
}

/// A change under way (a mutating handler, a piece sent): counted in
/// [`Inner::in_flight`] while it lives, and it moves the change count when
/// it ends, as [`Inner::changing`] did when it began.
struct Changing<'a>(&'a Inner);

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.changes.fetch_add(1, Ordering::AcqRel);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A read under way, counted in its stripe of [`Inner::reading`] while it lives.
struct Reading<'a>(&'a AtomicU64);

impl<'a> Reading<'a> {
    fn new(count: &'a AtomicU64) -> Reading<'a> {
        count.fetch_add(1, Ordering::AcqRel);
        Reading(count)
    }
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How [`Inner::resize`] changes a file's size.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resize {
    /// To exactly the size (truncate(2)).
    Set,
    /// To at least the size (fallocate(2)'s growth).
    Grow,
}

/// Who asks [`Inner::send_held_for`]: each hears a lost piece once, and an
/// fsync's answer also stands for the next flush's.
#[derive(Clone, Copy)]
enum Caller {
    Flush,
    Fsync,
}

/// The FUSE filesystem (what the kernel's session calls).
pub struct ShoalFs(pub Arc<Inner>);

type Res<T> = Result<T, Errno>;
/// Whether removing the name `stat` was found under would free the file
/// (its last name, a regular file): one open here is hidden instead.
fn hidden_when_gone(stat: &Stat) -> bool {
    !stat.is_dir && stat.nlink <= 1 && stat.special.is_none()
}

/// A conflicting lock getlk answers: its bytes (start, end), type and pid.
type Conflict = (u64, u64, i32, u32);

/// The path meta takes for inode `ino`: `/` for the root, else the path
/// anchored at the inode (see the module doc), which names it wherever it is.
fn inode_path(ino: u64) -> String {
    match ino {
        1 => "/".to_string(),
        _ => shoal_core::path::inode_path(ino),
    }
}

/// The path of the entry `name` of directory `dir`, wherever `dir` is.
fn entry_path(dir: u64, name: &OsStr) -> Res<String> {
    join(&inode_path(dir), name)
}

fn join(dir: &str, name: &OsStr) -> Res<String> {
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    Ok(if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") })
}

fn ns_since_epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as u64)
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::AtNs(ns_since_epoch(t)),
    }
}

impl Inner {
    pub fn new(client: Client, rt: tokio::runtime::Handle, opts: MountOptions) -> Inner {
        let locks = Locks::new(client.clone(), rt.clone(), opts.lock_ttl);
        Inner {
            client,
            rt,
            opts,
            files: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            changes: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            next_fh: AtomicU64::new(1),
            epochs: std::array::from_fn(|_| AtomicU64::new(0)),
            reading: std::array::from_fn(|_| AtomicU64::new(0)),
            notifier: std::sync::OnceLock::new(),
            unlinked: Mutex::new(HashMap::new()),
            pinned: Mutex::new(std::collections::HashSet::new()),
            keeper: Mutex::new(None),
            locks,
            given: Mutex::new(Given::default()),
            large_buffers: Arc::new(tokio::sync::Semaphore::new(crate::buffer::LARGE_BUFFERS)),
        }
    }

    /// Whether this mount has a handle of inode `ino` open.
    fn is_open(&self, ino: u64) -> bool {
        self.files.lock().expect("files lock").values().any(|h| h.ino == ino)
    }

    /// Removes the hidden name of `ino`, if it has one and no handle of it
    /// is open here any more.
    fn drop_unlinked(&self, ino: u64) {
        if self.is_open(ino) || self.pinned.lock().expect("pinned lock").contains(&ino) {
            return;
        }
        let Some(hidden) = self.unlinked.lock().expect("unlinked lock").remove(&ino) else { return };
        if let Err(e) = self.ns(self.client.remove(&hidden, false)) {
            tracing::warn!(path = hidden, errno = e.code(), "mount: an unlinked file's hidden name stays");
        }
    }

    /// Removes every hidden name this mount made (at unmount).
    pub fn drop_all_unlinked(&self) {
        let inodes: Vec<u64> = self.unlinked.lock().expect("unlinked lock").keys().copied().collect();
        for ino in inodes {
            self.drop_unlinked(ino);
        }
    }

    /// The id of the keeper session, the one hidden names belong to:
    /// opened at the first hidden name, and again if meta expired it (it
    /// then removed the names it had, and their files are gone).
    fn keeper_id(&self) -> Res<u64> {
        // Held while a session opens, so two unlinks never open two.
        let mut slot = self.keeper.lock().expect("keeper lock");
        if let Some(s) = slot.as_ref().filter(|s| s.is_alive()) {
            return Ok(s.id());
        }
        let session = self.ns(self.client.open_session(self.opts.unlinked_ttl))?;
        let id = session.id();
        *slot = Some(session);
        Ok(id)
    }

    /// Renames `path`, the last name of inode `ino` (open here), to its
    /// hidden name under the keeper session; once more under a new keeper
    /// if meta answers that the keeper's session ended (under rules 6 meta
    /// refuses a hidden name of an ended session, whose files it freed).
    /// `ENOENT` when `path` no longer names `ino` (another client removed
    /// or replaced it since it was looked up: under rules 9 meta refuses
    /// to hide another inode under `ino`'s hidden name).
    fn hide(&self, path: &str, ino: u64) -> Res<String> {
        for _ in 0..2 {
            let keeper = self.keeper_id()?;
            let hidden = hidden_path(keeper, ino);
            let taken = self.ns(async {
                match self.client.rename_exact(path, &hidden, true).await {
                    Err(ClientError::Fs(shoal_core::FsError::SessionExpired { .. })) => Ok(Some(false)),
                    Err(refused @ ClientError::Fs(shoal_core::FsError::InvalidArgument { .. })) => {
                        match self.client.stat(path).await {
                            Ok(now) if now.inode != ino => Ok(None),
                            _ => Err(refused),
                        }
                    }
                    other => other.map(|()| Some(true)),
                }
            })?;
            match taken {
                None => return Err(Errno::ENOENT),
                Some(true) => return Ok(hidden),
                Some(false) => {}
            }
            let mut slot = self.keeper.lock().expect("keeper lock");
            if slot.as_ref().is_some_and(|s| s.id() == keeper) {
                *slot = None; // Dead: the next keeper_id opens another.
            }
        }
        Err(Errno::EIO)
    }

    /// Hides `path`, the last name of inode `ino` (open here), under its
    /// hidden name until its last handle here is released.
    fn hide_open(&self, path: &str, ino: u64) -> Res<String> {
        let hidden = self.hide(path, ino)?;
        self.unlinked.lock().expect("unlinked lock").insert(ino, hidden.clone());
        Ok(hidden)
    }

    /// Ends the keeper session (at unmount, after the hidden names went):
    /// meta removes any name left, the one a failed remove kept.
    pub async fn close_keeper(&self) {
        let Some(session) = self.keeper.lock().expect("keeper lock").take() else { return };
        let id = session.id();
        if let Err(e) = session.close().await {
            tracing::debug!(session = id, error = %e, "mount: the keeper session did not close (it expires)");
        }
    }

    /// Runs a namespace call within the client's time limit (plus a margin).
    fn ns<T>(&self, fut: impl Future<Output = Result<T, ClientError>>) -> Res<T> {
        self.within(self.opts.timeout * 2, fut)
    }

    /// Runs a data call within the data time limit.
    fn data<T>(&self, fut: impl Future<Output = Result<T, ClientError>>) -> Res<T> {
        self.within(self.opts.data_timeout, fut)
    }

    fn within<T>(&self, limit: Duration, fut: impl Future<Output = Result<T, ClientError>>) -> Res<T> {
        // The timer is made inside the runtime (this thread is the kernel's, not tokio's).
        match self.rt.block_on(async { tokio::time::timeout(limit, fut).await }) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "mount call failed");
                Err(errno(&e))
            }
            Err(_) => {
                tracing::warn!(limit_ms = limit.as_millis() as u64, "mount call timed out");
                Err(Errno::EIO)
            }
        }
    }

    /// The local change epoch of inode `ino` now.
    fn epoch(&self, ino: u64) -> u64 {
        self.epochs[stripe(ino)].load(Ordering::Acquire)
    }

    /// Moves the epoch of inode `ino`: before and after each change to its
    /// bytes or size, so a fetch that overlapped the change is dropped.
    fn bump(&self, ino: u64) {
        self.epochs[stripe(ino)].fetch_add(1, Ordering::AcqRel);
        self.changes.fetch_add(1, Ordering::AcqRel);
    }

    /// `EROFS` on a read-only mount; else a guard that moves the change
    /// count now and again when the calling handler ends (drops it).
    fn writable(&self) -> Res<Changing<'_>> {
        self.refuse_if_read_only()?;
        Ok(self.changing())
    }

    /// `EROFS` on a read-only mount.
    fn refuse_if_read_only(&self) -> Res<()> {
        if self.opts.read_only { Err(Errno::EROFS) } else { Ok(()) }
    }

    /// A change begins; it ends when the guard drops.
    fn changing(&self) -> Changing<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changes.fetch_add(1, Ordering::AcqRel);
        Changing(self)
    }

    /// Whether `listing` is as new as a lookup now would be: taken within
    /// the attribute TTL, with no change by this mount since or under way.
    fn fresh(&self, listing: &Listing) -> bool {
        listing.changes == self.changes.load(Ordering::Acquire)
            && self.in_flight.load(Ordering::Acquire) == 0
            && listing.at.elapsed() < self.opts.attr_ttl
    }

    /// Lists directory `ino` (open as `fh`) again: `old`'s entries in the
    /// same order (offsets stay valid), each with its attributes now, and
    /// none for a name gone; kept as `fh`'s listing.
    fn relist(&self, ino: u64, fh: u64, old: &Listing) -> Res<Arc<Listing>> {
        let changes = self.changes.load(Ordering::Acquire);
        let at = std::time::Instant::now();
        let mut now: HashMap<String, Stat> =
            self.ns(self.client.list_inode(ino))?.into_iter().map(|e| (e.name, e.stat)).collect();
        let items = old
            .items
            .iter()
            .map(|item| {
                let stat = if item.dot { None } else { now.remove(&item.name) };
                let (ino, kind) = stat.as_ref().map_or((item.ino, item.kind), |s| (s.inode, attr::kind(s)));
                DirItem { ino, kind, name: item.name.clone(), dot: item.dot, stat }
            })
            .collect();
        let listing = Arc::new(Listing { items, at, changes });
        if let Some(slot) = self.dirs.lock().expect("dirs lock").get_mut(&fh) {
            *slot = listing.clone();
        }
        Ok(listing)
    }

    /// The kernel's view of a file's size: meta's, or past it where a handle
    /// holds bytes not sent yet.
    fn known_size(&self, stat: &Stat) -> u64 {
        let files = self.files.lock().expect("files lock");
        files
            .values()
            .filter(|h| h.ino == stat.inode)
            .map(|h| h.held_end.load(Ordering::Acquire))
            .fold(stat.size, u64::max)
    }

    /// The attributes to give the kernel for `stat`, noted as given: every
    /// answer with attributes is built here.
    fn attr_of(&self, stat: &Stat) -> fuser::FileAttr {
        self.give(self.attr_now(stat), false)
    }

    /// The kernel's view of `stat` (not noted as given).
    fn attr_now(&self, stat: &Stat) -> fuser::FileAttr {
        let mut attr = file_attr(stat, self.known_size(stat));
        if self.unlinked.lock().expect("unlinked lock").contains_key(&stat.inode) {
            // Its one name is the hidden one: to the kernel it has none.
            attr.nlink = 0;
        }
        attr
    }

    /// [`Inner::attr_of`] for an entry given to the kernel (a lookup, a
    /// create): its lookup count grows too.
    fn entry_attr_of(&self, stat: &Stat) -> fuser::FileAttr {
        self.give(self.attr_now(stat), true)
    }

    /// Notes `attr` as given to the kernel (as an `entry`: its lookup count
    /// grows too) and answers it.
    fn give(&self, attr: fuser::FileAttr, entry: bool) -> fuser::FileAttr {
        let changes = self.changes.load(Ordering::Acquire);
        let mut given = self.given.lock().expect("given lock");
        if entry {
            given.looked_up(attr.ino.0);
        }
        given.note(&attr, changes);
        attr
    }

    /// Whether no change is under way on this mount, and no read of `ino`.
    fn quiet(&self, ino: u64) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.reading[stripe(ino)].load(Ordering::Acquire) == 0
    }

    /// Makes the kernel use meta's fresh attributes `fresh` (close-to-open):
    /// drops what it holds unless that surely equals them. Offset -1 in the
    /// notification: attributes only.
    fn drop_attrs_unless_held(&self, fresh: &fuser::FileAttr) {
        {
            let mut given = self.given.lock().expect("given lock");
            let changes = self.changes.load(Ordering::Acquire);
            let quiet = self.quiet(fresh.ino.0);
            if given.holds(fresh, changes, quiet) {
                return;
            }
            given.dropped(fresh.ino.0, quiet);
        }
        if let Some(n) = self.notifier.get()
            && let Err(e) = n.inval_inode(fresh.ino, -1, 0)
        {
            tracing::debug!(error = %e, ino = fresh.ino.0, "mount: attribute invalidation refused");
        }
    }

    fn stat_path(&self, path: &str) -> Res<Stat> {
        self.ns(self.client.stat(path))
    }

    fn handle(&self, fh: FileHandle) -> Res<Arc<Handle>> {
        self.files.lock().expect("files lock").get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn new_handle(&self, ino: u64, file: File) -> Res<u64> {
        let mut files = self.files.lock().expect("files lock");
        if files.len() >= OPEN_FILES_MAX {
            return Err(Errno::EMFILE);
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let state = OpenState {
            file,
            buf: WriteBuffer::default(),
            failed: None,
            failed_for_sync: None,
            held_since: None,
            ahead: ReadAhead::default(),
            fetching: None,
            large: None,
        };
        files.insert(
            fh,
            Arc::new(Handle {
                ino,
                held_start: AtomicU64::new(0),
                held_end: AtomicU64::new(0),
                lost_elsewhere: AtomicI32::new(0),
                state: tokio::sync::Mutex::new(state),
            }),
        );
        Ok(fh)
    }

    /// Sends what `h` holds (a flush); answers a failure of this or an
    /// earlier piece that no flush or fsync has answered yet.
    fn send_held(&self, h: &Handle) -> Res<()> {
        self.send_held_for(h, Caller::Flush)
    }

    /// Sends what `h` holds (an fsync); answers a failure of this or an
    /// earlier piece that no fsync has answered yet.
    fn sync_held(&self, h: &Handle) -> Res<()> {
        self.send_held_for(h, Caller::Fsync)
    }

    fn send_held_for(&self, h: &Handle, caller: Caller) -> Res<()> {
        self.rt.block_on(async {
            let mut st = h.state.lock().await;
            self.send_piece(h, &mut st).await;
            let failed = match caller {
                Caller::Flush => st.failed.take(),
                Caller::Fsync => {
                    st.failed = None;
                    st.failed_for_sync.take()
                }
            };
            failed.map_or(Ok(()), Err)
        })
    }

    /// Sends the piece `h` holds, if any; a failure is kept as
    /// [`Inner::lost`] says, and answered.
    async fn send_piece(&self, h: &Handle, st: &mut OpenState) -> Option<Errno> {
        st.held_since = None;
        // The large buffer is given back once its piece is sent (so the
        // memory it bounds includes pieces in flight).
        let _large = st.large.take();
        if let Some(piece) = st.buf.take() {
            let sent = self.send(&mut st.file, piece).await;
            if let Err(e) = sent {
                self.lost(h, st, e);
            }
            h.held_end.store(0, Ordering::Release);
            return sent.err();
        }
        None
    }

    async fn send(&self, file: &mut File, piece: Piece) -> Res<()> {
        let _changing = self.changing();
        let ino = file.cached_stat().inode;
        self.bump(ino);
        let (offset, end, ranges) = (piece.start(), piece.end(), piece.ranges.len());
        // The ranges move into the write as they are, without a copy (a
        // piece of several is copied once more, into the span it fills).
        let bytes = piece.ranges.into_iter().map(|(at, bytes)| (at, bytes.into())).collect();
        let sent = tokio::time::timeout(self.opts.data_timeout, file.write_ranges(bytes)).await;
        self.bump(ino);
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, offset, end, ranges, "mount: a write failed");
                Err(errno(&e))
            }
            Err(_) => Err(Errno::EIO),
        }
    }

    /// Sends what every handle of inode `ino` holds; answers the first
    /// failure of those sends (which is also reported as [`Inner::lost`]
    /// says).
    fn send_inode(&self, ino: u64) -> Res<()> {
        match self.rt.block_on(self.send_others(ino, None, None)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends what each handle has held for [`crate::buffer::FLUSH_AFTER`] or
    /// longer (a handle busy with a call is left to that call). Runs on the
    /// runtime, every [`FLUSH_TICK`].
    pub async fn send_due(&self) {
        let handles: Vec<Arc<Handle>> = {
            let files = self.files.lock().expect("files lock");
            files.values().filter(|h| h.held_end.load(Ordering::Acquire) != 0).cloned().collect()
        };
        for h in handles {
            let Ok(mut st) = h.state.try_lock() else { continue };
            if !crate::buffer::due(st.held_since, std::time::Instant::now()) {
                continue;
            }
            self.send_piece(&h, &mut st).await;
        }
    }

    /// Sends what every handle holds (before an unmount); answers how many
    /// of these sends failed.
    pub fn send_all(&self) -> usize {
        let handles: Vec<Arc<Handle>> = self.files.lock().expect("files lock").values().cloned().collect();
        self.rt.block_on(async {
            let mut failed = 0;
            for h in handles {
                let mut st = h.state.lock().await;
                failed += usize::from(self.send_piece(&h, &mut st).await.is_some());
            }
            failed
        })
    }

    fn owner(req: &Request, mode: u32, umask: u32) -> Owner {
        Owner { mode: mode & !umask & 0o7777, uid: req.uid(), gid: req.gid() }
    }

    fn truncate(&self, ino: u64, fh: Option<FileHandle>, size: u64) -> Res<()> {
        self.resize(ino, fh, size, Resize::Set)
    }

    /// Sets `ino`'s size to `size` ([`Resize::Set`]) or to at least `size`
    /// ([`Resize::Grow`]), through handle `fh` if it is one of `ino`'s.
    fn resize(&self, ino: u64, fh: Option<FileHandle>, size: u64, how: Resize) -> Res<()> {
        self.send_inode(ino)?;
        let handle = fh.and_then(|fh| self.handle(fh).ok()).filter(|h| h.ino == ino);
        let change = async |file: &mut shoal_client::File| match how {
            Resize::Set => file.set_len(size).await,
            Resize::Grow => file.extend_to(size).await,
        };
        match handle {
            Some(h) => self.rt.block_on(async {
                let mut st = h.state.lock().await;
                if how == Resize::Set {
                    // Bytes a write made since the send above: cut, and
                    // published as cut (the size shown counts held bytes).
                    st.buf.truncate(size);
                    h.held_end.store(st.buf.end(), Ordering::Release);
                    if st.buf.is_empty() {
                        st.held_since = None;
                        st.large = None;
                    }
                }
                st.ahead.clear();
                st.fetching = None;
                self.bump(ino);
                let done = tokio::time::timeout(self.opts.data_timeout, change(&mut st.file)).await;
                self.bump(ino);
                match done {
                    Ok(r) => r.map_err(|e| errno(&e)),
                    Err(_) => Err(Errno::EIO),
                }
            }),
            None => {
                let mut file = self.data(self.client.open_inode(ino, &format!("inode {ino}")))?;
                self.bump(ino);
                let done = self.data(change(&mut file));
                self.bump(ino);
                done
            }
        }
    }

    /// fallocate(2) on handle `fh` of `ino`, by [`crate::fallocate::plan`]:
    /// held writes go first, then the zeros (in pieces, like writes), then
    /// the new length.
    fn fallocate(&self, ino: u64, fh: FileHandle, offset: u64, length: u64, mode: i32) -> Res<()> {
        let h = self.handle(fh)?;
        // Held bytes of every handle, this one's too, go first (a piece lost
        // earlier is for flush and fsync to report, as for writes).
        self.send_inode(ino)?;
        let (stat, _) = self.ns(self.client.stat_inode(ino, false))?;
        let plan = crate::fallocate::plan(mode, offset, length, stat.size)?;
        if let Some(range) = plan.zero {
            self.rt.block_on(async {
                let mut st = h.state.lock().await;
                st.ahead.clear();
                st.fetching = None;
                let mut at = range.start;
                while at < range.end {
                    let n = (range.end - at).min(ZERO_PIECE_BYTES);
                    self.send(&mut st.file, Piece::one(at, vec![0; n as usize])).await?;
                    at += n;
                }
                Ok::<(), Errno>(())
            })?;
        }
        match plan.grow_to {
            // Grow only: a writer elsewhere may have made the file longer
            // since the size the plan read.
            Some(len) => self.resize(ino, Some(fh), len, Resize::Grow),
            None => Ok(()),
        }
    }

    /// Reads `len` bytes at `offset` through handle `h`: from its
    /// read-ahead when that holds them, else from the cluster; then starts
    /// the next read-ahead fetch if the reader is sequential.
    async fn read_through(&self, h: &Handle, offset: u64, len: u64) -> Res<Vec<u8>> {
        let mut st = h.state.lock().await;
        let st = &mut *st;
        let epoch = self.epoch(h.ino);
        if st.ahead.check_epoch(epoch) {
            st.fetching = None;
        }
        // A finished fetch joins what is held; so does a running one that
        // this read needs (waiting for it beats asking for the same bytes).
        let needed = st.fetching.as_ref().is_some_and(|f| {
            st.ahead.take(offset, len).is_none() && f.start < offset.saturating_add(len) && offset < f.start + f.len
        });
        if st.fetching.as_ref().is_some_and(|f| needed || f.task.is_finished()) {
            let mut f = st.fetching.take().expect("a fetch is in flight");
            let got = tokio::time::timeout(self.opts.data_timeout, &mut f.task).await;
            // The epoch is read again: a change that ended while the fetch ran drops it.
            if let Ok(Ok(Some(bytes))) = got
                && f.epoch == st.ahead.epoch()
                && self.epoch(h.ino) == f.epoch
            {
                st.ahead.add_piece(f.start, bytes, f.len);
            }
        }
        let stored = match st.ahead.take(offset, len) {
            Some(data) => data,
            None => match tokio::time::timeout(self.opts.data_timeout, st.file.read_at(offset, len)).await {
                Ok(r) => r.map_err(|e| errno(&e))?,
                Err(_) => return Err(Errno::EIO),
            },
        };
        let data = st.buf.overlay(offset, len, stored);
        if !st.ahead.note_read(offset, data.len() as u64) {
            st.fetching = None;
        }
        if let Some((start, len)) = st.ahead.wanted(st.fetching.is_some()) {
            let mut file = st.file.clone();
            let limit = self.opts.data_timeout;
            let task = self.rt.spawn(async move {
                match tokio::time::timeout(limit, file.read_at(start, len)).await {
                    Ok(Ok(bytes)) => Some(bytes),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, start, len, "mount: a read-ahead fetch failed");
                        None
                    }
                    Err(_) => None,
                }
            });
            st.fetching = Some(Fetch { start, len, epoch: st.ahead.epoch(), task });
        }
        Ok(data)
    }

    /// Sends what every handle of inode `ino` holds, from the runtime (a
    /// failure is reported as [`Inner::lost`] says).
    async fn send_inode_async(&self, ino: u64) {
        self.send_others(ino, None, None).await;
    }

    /// Sends what the handles of inode `ino` other than `except` hold, of
    /// those whose held span meets `within` (a range of the file; None:
    /// all). Answers the first failure of these sends, which is also
    /// reported as [`Inner::lost`] says.
    ///
    /// A handle calls this before it writes (`within`: the bytes it
    /// writes) or reads (from where it reads on, since held bytes past the
    /// read may make the file longer than it), without its own lock (two
    /// handles that did this under their own locks could wait for each
    /// other). So no two handles hold the same bytes, later bytes land
    /// last, and a read answers its own handle's held bytes over the
    /// cluster's. (Two calls on different handles at the same moment may
    /// both pass this before either holds its bytes: their order is then
    /// the one they are sent in, as for any two writes at once.)
    async fn send_others(&self, ino: u64, except: Option<&Handle>, within: Option<(u64, u64)>) -> Option<Errno> {
        let handles: Vec<Arc<Handle>> = {
            let files = self.files.lock().expect("files lock");
            files
                .values()
                .filter(|h| h.ino == ino && !except.is_some_and(|e| std::ptr::eq(h.as_ref(), e)))
                .filter(|h| {
                    let end = h.held_end.load(Ordering::Acquire);
                    end != 0 && within.is_none_or(|(from, to)| end > from && h.held_start.load(Ordering::Acquire) < to)
                })
                .cloned()
                .collect()
        };
        let mut failed = None;
        for h in handles {
            let mut st = h.state.lock().await;
            let sent = self.send_piece(&h, &mut st).await;
            failed = failed.or(sent);
        }
        failed
    }

    /// Notes that a piece `h` held was lost with `e`: `h`'s next flush and
    /// its next fsync report it (an fsync first: then the flush does not),
    /// and so does the next fsync through each other handle of the file
    /// open now (once each, as Linux reports a lost writeback to each open
    /// file). Called before `h` says it holds nothing, so a call that sees
    /// that finds the failure noted.
    fn lost(&self, h: &Handle, st: &mut OpenState, e: Errno) {
        st.failed = Some(e);
        st.failed_for_sync = Some(e);
        let files = self.files.lock().expect("files lock");
        for o in files.values().filter(|o| o.ino == h.ino && !std::ptr::eq(o.as_ref(), h)) {
            o.lost_elsewhere.store(e.code(), Ordering::Release);
        }
    }

    /// Makes handle `fh` (if it is still open on `ino`) carry `lock`'s token.
    async fn fence_handle(&self, fh: u64, ino: u64, lock: &Lock) {
        let Ok(h) = self.handle(FileHandle(fh)) else { return };
        if h.ino == ino {
            h.state.lock().await.file.set_fence(lock);
        }
    }

    /// Makes the handles of `ino` that carry token `token` carry none.
    async fn unfence(&self, ino: u64, token: u64) {
        let handles: Vec<Arc<Handle>> =
            self.files.lock().expect("files lock").values().filter(|h| h.ino == ino).cloned().collect();
        for h in handles {
            let mut st = h.state.lock().await;
            if st.file.fence_token() == Some(token) {
                st.file.clear_fence();
            }
        }
    }

    /// Releases what `owner` holds on `ino`: held writes of the file are
    /// sent first (under the lock, so the next holder finds them), then its
    /// handles stop carrying the token. A lock meta already took away (an
    /// expired session) is only forgotten.
    async fn unlock(&self, owner: u64, ino: u64) {
        let Some(held) = self.locks.take(owner, ino) else { return };
        self.send_inode_async(ino).await;
        self.unfence(ino, held.lock.token).await;
        let Some(session) = self.locks.current(owner).await.filter(|s| s.id() == held.session) else { return };
        let released = tokio::time::timeout(self.opts.timeout * 2, session.unlock(&held.lock)).await;
        if !matches!(released, Ok(Ok(()))) {
            tracing::debug!(ino, token = held.lock.token, "mount: a lock was gone already or could not be released");
        }
    }

    /// After a lock request that failed without an answer, lets go of
    /// whatever it may have left in meta (a place in the queue, a grant),
    /// unless `owner` holds `ino`'s lock already (then it is that lock).
    async fn abandon(&self, owner: u64, ino: u64, session: &shoal_client::Session, name: &str) {
        if self.locks.held(owner, ino).is_some() {
            return;
        }
        if !matches!(tokio::time::timeout(self.opts.timeout * 2, session.abandon(name)).await, Ok(Ok(()))) {
            tracing::debug!(ino, "mount: a failed lock request could not be withdrawn; its session's end will");
        }
    }

    /// setlk: takes, changes or releases `owner`'s lock on `ino` through
    /// handle `fh`; with `sleep`, waits for it in FIFO order.
    async fn set_lock(&self, ino: u64, fh: u64, owner: u64, want: Want, pid: u32, sleep: bool) -> Res<()> {
        let _busy = self.locks.enter(owner)?;
        let held = self.locks.held(owner, ino);
        let lost = match &held {
            Some(h) => !self.locks.still_held(owner, h).await,
            None => false,
        };
        match crate::locks::step(held.map(|h| h.lock.shared), want) {
            Step::Nothing if want == Want::Unlock => return Ok(()),
            Step::Release => {
                self.unlock(owner, ino).await;
                return Ok(());
            }
            Step::Convert => self.unlock(owner, ino).await,
            // A lock meta took away (its session expired) is forgotten and
            // asked for anew.
            Step::Nothing | Step::Acquire if lost => self.unlock(owner, ino).await,
            // Held in this mode already: meta answers the same grant (and
            // "session expired" if it took the lock away unnoticed yet).
            Step::Nothing | Step::Acquire => {}
        }
        let shared = want == Want::Shared;
        let name = inode_lock_name(ino);
        let cancel = sleep.then(|| self.locks.start_wait(owner, ino));
        let mut dead = None;
        let (session, got) = loop {
            let session = match self.locks.session(owner, dead).await {
                Ok(s) => s,
                Err(e) => {
                    if let Some(flag) = &cancel {
                        self.locks.end_wait(owner, ino, flag);
                    }
                    return Err(e);
                }
            };
            let got = match &cancel {
                Some(flag) => {
                    let keep_waiting =
                        || !flag.load(std::sync::atomic::Ordering::Acquire) && !crate::locks::process_interrupted(pid);
                    session.lock_while(&name, shared, keep_waiting).await
                }
                None => match tokio::time::timeout(self.opts.timeout * 2, session.try_lock(&name, shared)).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(ino, "mount: a try-lock timed out");
                        self.abandon(owner, ino, &session, &name).await;
                        return Err(Errno::EIO);
                    }
                },
            };
            match got {
                // Meta expired the session (the mount was paused): once more
                // with a new one. A lock held through the expired session is
                // lost: its held writes go out first, under its old (now
                // refused) token, so a new grant never carries them.
                Err(e) if crate::locks::session_expired(&e) && dead.is_none() => {
                    if self.locks.held(owner, ino).is_some_and(|h| h.session == session.id()) {
                        self.unlock(owner, ino).await;
                    }
                    dead = Some(session.id());
                }
                got => break (session, got),
            }
        };
        let lock = match got {
            Ok(Some(lock)) => lock,
            other => {
                if let Some(flag) = &cancel {
                    self.locks.end_wait(owner, ino, flag);
                }
                return match other {
                    Ok(_) if sleep => Err(Errno::EINTR),
                    Ok(_) => Err(Errno::EAGAIN),
                    Err(e) => {
                        self.abandon(owner, ino, &session, &name).await;
                        Err(errno(&e))
                    }
                };
            }
        };
        if !lock.shared {
            self.fence_handle(fh, ino, &lock).await;
        }
        let held = Held { lock: lock.clone(), session: session.id(), fh, pid };
        if self.locks.record(owner, ino, held, cancel.as_ref()) {
            self.after_grant(ino).await;
            return Ok(());
        }
        // The owner closed the file while it waited: nobody would release it.
        self.unfence(ino, lock.token).await;
        session.unlock(&lock).await.ok();
        Err(Errno::EINTR)
    }

    /// After a grant, reads of `ino` see what the last holder wrote (on any
    /// mount): the kernel's pages and attributes, the read-ahead and the
    /// client's chunk map of the file are dropped.
    ///
    /// Dropping pages waits in the kernel for each page's lock, which a read
    /// of the file in flight on this mount holds until the mount answers
    /// it; so that wait happens on a blocking thread, never on a runtime
    /// worker that answering the read may need. (An early build of this
    /// code left a mount stuck in that wait, in `__folio_lock`.)
    async fn after_grant(&self, ino: u64) {
        self.client.forget_layout(ino);
        self.bump(ino);
        let Some(n) = self.notifier.get().cloned() else { return };
        match tokio::task::spawn_blocking(move || n.inval_inode(INodeNo(ino), 0, 0)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, ino, "mount: cache invalidation after a lock grant refused"),
            Err(e) => tracing::debug!(error = %e, ino, "mount: cache invalidation after a lock grant failed"),
        }
    }

    /// Drops `owner`'s lock and byte ranges on `ino` and ends its waits for
    /// them (a close).
    fn drop_locks(&self, owner: u64, ino: u64) {
        let Some(_busy) = self.locks.enter_existing(owner) else { return };
        self.locks.cancel_waits(owner, ino);
        self.rt.block_on(async {
            self.unlock(owner, ino).await;
            if self.locks.take_ranges(owner, ino) {
                self.unlock_ranges(owner, ino, 0, u64::MAX).await.ok();
                // And a request of it whose answer was lost, if still queued.
                if let Some(session) = self.locks.current(owner).await {
                    session.cancel_range(&inode_lock_name(ino), 0).await.ok();
                }
            }
        });
    }

    /// Unlocks bytes `start..=end` of `owner`'s byte ranges on `ino`: held
    /// writes of the file are sent first (under the lock, so the next holder
    /// of those bytes finds them).
    async fn unlock_ranges(&self, owner: u64, ino: u64, start: u64, end: u64) -> Res<()> {
        self.send_inode_async(ino).await;
        // No session: it holds nothing.
        let Some(session) = self.locks.current(owner).await else { return Ok(()) };
        match tokio::time::timeout(self.opts.timeout * 2, session.unlock_range(&inode_lock_name(ino), start, end)).await
        {
            Ok(Ok(())) => Ok(()),
            // Meta took them away already.
            Ok(Err(e)) if crate::locks::session_expired(&e) => Ok(()),
            Ok(Err(e)) => Err(errno(&e)),
            Err(_) => {
                tracing::warn!(ino, "mount: a byte-range unlock timed out");
                Err(Errno::EIO)
            }
        }
    }

    /// setlk with cluster fcntl locks: sets `owner`'s lock on bytes
    /// `start..=end` of `ino` to `want` (POSIX: what it held there is
    /// replaced, atomically); with `sleep`, waits until no other owner's range is in the way.
    /// Held writes of the file go out before any change, so whoever the
    /// change lets in finds them.
    ///
    /// The owner is noted as maybe holding bytes of `ino` before it asks,
    /// so a request whose answer is lost (applied all the same) is let go
    /// of at its owner's close. A whole-file request that has to wait, from
    /// an owner holding bytes of the file, first lets go of them: that is
    /// how flock converts (which comes here as a whole-file range, the
    /// kernel's request not saying which kind it is), and two shared holders
    /// both asking for exclusive then do not wait for each other forever.
    async fn set_range_lock(
        &self,
        ino: u64,
        owner: u64,
        want: Want,
        (start, end): (u64, u64),
        pid: u32,
        sleep: bool,
    ) -> Res<()> {
        if start > end {
            return Err(Errno::EINVAL);
        }
        let _busy = self.locks.enter(owner)?;
        if want == Want::Unlock {
            if !self.locks.has_ranges(owner, ino) {
                return Ok(());
            }
            return self.unlock_ranges(owner, ino, start, end).await;
        }
        self.send_inode_async(ino).await;
        let shared = want == Want::Shared;
        let name = inode_lock_name(ino);
        let converting = start == 0 && end >= i64::MAX as u64 && sleep && self.locks.has_ranges(owner, ino);
        if !self.locks.note_ranges(owner, ino, pid) {
            // Gone at unmount.
            return Err(Errno::EINTR);
        }
        let cancel = sleep.then(|| self.locks.start_wait(owner, ino));
        let end_wait = || cancel.as_ref().is_some_and(|flag| self.locks.end_wait_cancelled(owner, ino, flag));
        let mut dead = None;
        let mut try_first = converting;
        let (session, got) = loop {
            let session = match self.locks.session(owner, dead).await {
                Ok(s) => s,
                Err(e) => {
                    end_wait();
                    return Err(e);
                }
            };
            let got = match &cancel {
                Some(flag) if !try_first => {
                    let keep_waiting =
                        || !flag.load(std::sync::atomic::Ordering::Acquire) && !crate::locks::process_interrupted(pid);
                    session.lock_range_while(&name, shared, start, end, keep_waiting).await
                }
                _ => {
                    // A try-lock never queues: nothing to withdraw if it times out.
                    let tried = session.try_lock_range(&name, shared, start, end);
                    match tokio::time::timeout(self.opts.timeout * 2, tried).await {
                        Ok(r) => r,
                        Err(_) => {
                            tracing::warn!(ino, "mount: a byte-range try-lock timed out");
                            end_wait();
                            return Err(Errno::EIO);
                        }
                    }
                }
            };
            match got {
                // Meta expired the session (the mount was paused), and its
                // byte ranges with it: once more with a new one.
                Err(e) if crate::locks::session_expired(&e) && dead.is_none() => dead = Some(session.id()),
                // A whole-file conversion that would wait: let go, then wait.
                Ok(None) if try_first => {
                    try_first = false;
                    if let Err(e) = self.unlock_ranges(owner, ino, 0, u64::MAX).await {
                        end_wait();
                        return Err(e);
                    }
                }
                got => break (session, got),
            }
        };
        let cancelled = end_wait();
        match got {
            // The owner closed the file while it waited (the close let go
            // of its locks on the file): a grant that raced the stop goes
            // too, these bytes only (another thread may have locked others
            // since).
            Ok(_) if cancelled => {
                session.unlock_range(&name, start, end).await.ok();
                Err(Errno::EINTR)
            }
            // Withdrawn by a close (which set the flag too).
            Err(_) if cancelled => Err(Errno::EINTR),
            // Granted, then changed by another thread of the owner before
            // the answer was made: POSIX orders the grant first.
            Ok(Some(_)) | Err(ClientError::Fs(shoal_core::FsError::NotLocked { .. })) => {
                // Noted again: a close between the first note and the grant took it.
                self.locks.note_ranges(owner, ino, pid);
                self.after_grant(ino).await;
                Ok(())
            }
            Ok(None) => Err(if sleep { Errno::EINTR } else { Errno::EAGAIN }),
            Err(e) => Err(errno(&e)),
        }
    }

    /// getlk: a holder of `ino`'s lock, of another owner, whose mode
    /// conflicts with `want` on bytes `start..=end`, as (start, end, type,
    /// pid); `None` if there is none. With cluster fcntl locks, the byte
    /// ranges held; else the whole-file lock.
    fn conflicting_lock(&self, ino: u64, owner: u64, want: Want, range: (u64, u64)) -> Res<Option<Conflict>> {
        let info = self.ns(self.client.lock_info(&inode_lock_name(ino)))?;
        let mine = self.locks.session_id(owner);
        let holder = if self.opts.cluster_fcntl_locks {
            crate::locks::range_conflict(&info.range_holders, mine, want == Want::Shared, range)
        } else {
            info.holders
                .iter()
                .copied()
                .find(|h| Some(h.session) != mine && crate::locks::conflicts(h.shared, want == Want::Shared))
        };
        // A whole-file lock (no range) is 0 to OFFSET_MAX; the kernel takes
        // offsets up to OFFSET_MAX, and a range "to the end" asked for
        // through the client library ends at 2^64-1.
        let offset = |o: u64| o.min(i64::MAX as u64);
        Ok(holder.map(|h| {
            let (start, end) = h.range.map_or((0, u64::MAX), |r| (r.start, r.end));
            let typ = if h.shared { libc::F_RDLCK } else { libc::F_WRLCK };
            (offset(start), offset(end), typ, self.locks.pid_of(h.session, ino).unwrap_or(0))
        }))
    }

    fn user_xattrs(&self, ino: u64) -> Res<BTreeMap<String, Vec<u8>>> {
        let (stat, _) = self.ns(self.client.stat_inode(ino, true))?;
        Ok(stat.xattrs.into_iter().filter(|(n, _)| n.starts_with(XATTR_PREFIX)).collect())
    }
}

/// Answers a value of `size` bytes at most (0: only its length), as getxattr
/// and listxattr do.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

macro_rules! or_reply {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    };
}

impl Filesystem for ShoalFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // flock(2) locks come to the mount (and so to the cluster); fcntl(2)
        // locks too if asked for, else the kernel keeps them (byte ranges,
        // local). A kernel without these keeps them local, as before.
        let mut wanted = InitFlags::FUSE_FLOCK_LOCKS;
        if self.0.opts.cluster_fcntl_locks {
            wanted |= InitFlags::FUSE_POSIX_LOCKS;
        }
        if let Err(missing) = config.add_capabilities(wanted) {
            tracing::warn!(?missing, "mount: the kernel keeps these locks local to this machine");
            let _ = config.add_capabilities(wanted & !missing);
        }
        // Listings carry attributes (readdirplus) for a directory's first
        // batch and whenever the kernel sees lookups follow (`ls -l`),
        // plain names otherwise.
        let plus = InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO;
        if let Err(missing) = config.add_capabilities(plus) {
            tracing::info!(?missing, "mount: listings without attributes (each entry is looked up)");
        }
        Ok(())
    }

    fn getlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let fs = &self.0;
        let want = match Want::of_type(typ) {
            Some(w @ (Want::Shared | Want::Exclusive)) => w,
            _ => return reply.error(Errno::EINVAL),
        };
        match or_reply!(reply, fs.conflicting_lock(ino.0, lock_owner.0, want, (start, end))) {
            Some((start, end, typ, pid)) => reply.locked(start, end, typ, pid),
            None => reply.locked(start, end, libc::F_UNLCK, 0),
        }
    }

    fn setlk(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let Some(want) = Want::of_type(typ) else { return reply.error(Errno::EINVAL) };
        // Answered from a task: a wait holds no kernel worker thread.
        let fs = self.0.clone();
        self.0.rt.spawn(async move {
            let set = if fs.opts.cluster_fcntl_locks {
                fs.set_range_lock(ino.0, lock_owner.0, want, (start, end), pid, sleep).await
            } else {
                fs.set_lock(ino.0, fh.0, lock_owner.0, want, pid, sleep).await
            };
            match set {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(e),
            }
        });
    }

    fn destroy(&mut self) {
        let failed = self.0.send_all();
        if failed > 0 {
            tracing::error!(failed, "mount: held writes could not be sent at unmount");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let fs = &self.0;
        let path = or_reply!(reply, entry_path(parent.0, name));
        let stat = or_reply!(reply, fs.stat_path(&path));
        reply.entry(&fs.opts.entry_ttl, &fs.entry_attr_of(&stat), Generation(0));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.0.given.lock().expect("given lock").forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let fs = &self.0;
        // A piece of held bytes committed between meta's answer and the
        // look at what handles hold would be in neither (a size too
        // small): the epoch moves before a sent piece leaves its handle,
        // so the answer is taken again then (a few times at most).
        let mut tries = 0;
        let attr = loop {
            tries += 1;
            let before = fs.epoch(ino.0);
            let (stat, _) = or_reply!(reply, fs.ns(fs.client.stat_inode(ino.0, false)));
            let attr = fs.attr_now(&stat);
            if fs.epoch(ino.0) == before || tries == 3 {
                break attr;
            }
        };
        reply.attr(&fs.opts.attr_ttl, &fs.give(attr, false));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        if let Some(size) = size {
            or_reply!(reply, fs.truncate(ino.0, fh, size));
        }
        let change = AttrChange {
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            atime: atime.map(time_set),
            mtime: mtime.map(time_set),
        };
        // Held bytes go first: their commit moves mtime, which must not
        // undo a utimens made after them (tar sets times before it closes).
        if change != AttrChange::default() {
            or_reply!(reply, fs.send_inode(ino.0));
        }
        let stat = if change == AttrChange::default() {
            or_reply!(reply, fs.ns(fs.client.stat_inode(ino.0, false))).0
        } else {
            or_reply!(reply, fs.ns(fs.client.set_attr(ino.0, change)))
        };
        reply.attr(&fs.opts.attr_ttl, &fs.attr_of(&stat));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let path = or_reply!(reply, entry_path(parent.0, name));
        let stat = or_reply!(reply, fs.ns(fs.client.mkdir_owned(&path, Inner::owner(req, mode, umask))));
        reply.entry(&fs.opts.entry_ttl, &fs.entry_attr_of(&stat), Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let path = or_reply!(reply, entry_path(parent.0, name));
        if fs.files.lock().expect("files lock").is_empty() {
            // No file is open here, so none is to be hidden: one call, and
            // meta refuses a directory.
            or_reply!(reply, fs.ns(fs.client.remove_file(&path)));
            return reply.ok();
        }
        // Twice at most: the name may name another file by the time it is
        // hidden (another client replaced it), and that one is looked at anew.
        for _ in 0..2 {
            let stat = or_reply!(reply, fs.stat_path(&path));
            if stat.is_dir {
                return reply.error(Errno::EISDIR);
            }
            if hidden_when_gone(&stat) && fs.is_open(stat.inode) {
                // The last name of a file open here: hidden until released.
                match fs.hide_open(&path, stat.inode) {
                    Err(Errno::ENOENT) => continue,
                    hid => or_reply!(reply, hid),
                };
                // A release that came while the rename was under way found
                // nothing to remove: look again.
                fs.drop_unlinked(stat.inode);
                return reply.ok();
            }
            break;
        }
        or_reply!(reply, fs.ns(fs.client.remove_file(&path)));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let path = or_reply!(reply, entry_path(parent.0, name));
        or_reply!(reply, fs.ns(fs.client.remove_dir(&path)));
        reply.ok();
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let path = or_reply!(reply, entry_path(parent.0, link_name));
        let target = or_reply!(reply, target.to_str().ok_or(Errno::EINVAL));
        let stat = or_reply!(reply, fs.ns(fs.client.symlink(&path, target, req.uid(), req.gid())));
        reply.entry(&fs.opts.entry_ttl, &fs.entry_attr_of(&stat), Generation(0));
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let special = or_reply!(reply, attr::mknod_kind(mode));
        let path = or_reply!(reply, entry_path(parent.0, name));
        let owner = Inner::owner(req, mode, umask);
        let stat = match special {
            // A regular file through mknod: made like create's, left closed.
            None => or_reply!(reply, fs.ns(fs.client.create_owned(&path, owner, true))),
            Some(kind) => {
                let rdev = if matches!(kind, Special::CharDevice | Special::BlockDevice) { u64::from(rdev) } else { 0 };
                or_reply!(reply, fs.ns(fs.client.mknod(&path, kind, owner, rdev)))
            }
        };
        reply.entry(&fs.opts.entry_ttl, &fs.entry_attr_of(&stat), Generation(0));
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let src = inode_path(ino.0);
        let dst = or_reply!(reply, entry_path(newparent.0, newname));
        let stat = or_reply!(reply, fs.ns(fs.client.link(&src, &dst)));
        reply.entry(&fs.opts.entry_ttl, &fs.entry_attr_of(&stat), Generation(0));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let fs = &self.0;
        let (stat, _) = or_reply!(reply, fs.ns(fs.client.stat_inode(ino.0, false)));
        if !stat.is_symlink {
            return reply.error(Errno::EINVAL);
        }
        reply.data(stat.target.as_bytes());
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::EINVAL);
        }
        // A hidden name is this mount's own, never a target (meta, under
        // rules 9, refuses to put another file there; and hiding a file
        // open here onto it would only rename that name onto itself).
        if newname.to_str().is_some_and(|n| is_hidden(newparent.0, n)) {
            return reply.error(Errno::EINVAL);
        }
        let src = or_reply!(reply, entry_path(parent.0, name));
        let dst = or_reply!(reply, entry_path(newparent.0, newname));
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return reply.error(Errno::EINVAL);
            }
            or_reply!(reply, fs.ns(fs.client.exchange(&src, &dst)));
            return reply.ok();
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        // The last name of a file open here, about to be replaced: hidden
        // first, as unlink hides one, so its handles keep its data. Not
        // atomic for others: the name is absent between the two renames
        // (NFS clients do the same); a rename that then fails puts it back.
        let hidden = match !no_replace && src != dst && !fs.files.lock().expect("files lock").is_empty() {
            true => match fs.stat_path(&dst) {
                Ok(stat) if hidden_when_gone(&stat) && fs.is_open(stat.inode) => {
                    // Pinned: a last close meanwhile must not free it while
                    // the rename may still put it back.
                    fs.pinned.lock().expect("pinned lock").insert(stat.inode);
                    match fs.hide_open(&dst, stat.inode) {
                        Ok(hidden) => Some((stat.inode, hidden)),
                        // Gone meanwhile (another mount): nothing to hide.
                        Err(Errno::ENOENT) => {
                            fs.pinned.lock().expect("pinned lock").remove(&stat.inode);
                            None
                        }
                        Err(e) => {
                            fs.pinned.lock().expect("pinned lock").remove(&stat.inode);
                            return reply.error(e);
                        }
                    }
                }
                _ => None,
            },
            false => None,
        };
        let done = fs.ns(fs.client.rename_exact(&src, &dst, no_replace));
        if let Some((ino, hidden)) = hidden {
            if done.is_err() && fs.ns(fs.client.rename_exact(&hidden, &dst, true)).is_ok() {
                fs.unlinked.lock().expect("unlinked lock").remove(&ino);
            }
            fs.pinned.lock().expect("pinned lock").remove(&ino);
            fs.drop_unlinked(ino);
        }
        or_reply!(reply, done);
        reply.ok();
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let fs = &self.0;
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            or_reply!(reply, fs.refuse_if_read_only());
        }
        // Close-to-open: the attributes and the chunk map come fresh from meta.
        let file = or_reply!(reply, fs.ns(fs.client.open_inode(ino.0, &format!("inode {}", ino.0))));
        // The kernel may hold attributes from before another mount's write
        // (a smaller size would cut reads short): they are dropped, unless
        // they surely equal meta's now, so the next stat or read past the old
        // end asks again. Pages are dropped anyway (no FOPEN_KEEP_CACHE).
        fs.drop_attrs_unless_held(&fs.attr_now(file.cached_stat()));
        let fh = or_reply!(reply, fs.new_handle(ino.0, file));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = &self.0;
        let h = or_reply!(reply, fs.handle(fh));
        // Bytes other handles hold here or past here go first; this
        // handle's own are laid over what the cluster answers, unsent.
        fs.rt.block_on(fs.send_others(ino.0, Some(&*h), Some((offset, u64::MAX))));
        let data = {
            // Counted until a short read is noted: an open meanwhile drops
            // the kernel's attributes.
            let _reading = Reading::new(&fs.reading[stripe(ino.0)]);
            let data = or_reply!(reply, fs.rt.block_on(fs.read_through(&h, offset, size as u64)));
            if data.len() < size as usize {
                fs.given.lock().expect("given lock").note_short_read(ino.0, offset + data.len() as u64);
            }
            data
        };
        reply.data(&data);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let h = or_reply!(reply, fs.handle(fh));
        let done: Res<usize> = fs.rt.block_on(async {
            // Older bytes of other handles under these land first, so
            // later bytes win.
            let end = offset.saturating_add(data.len() as u64);
            fs.send_others(h.ino, Some(&*h), Some((offset, end))).await;
            let mut st = h.state.lock().await;
            // Meta takes data only in chunks that end within the largest
            // file: what lies past that is refused here (a short write, or
            // EFBIG from its first byte on), not lost at a later send.
            let limit = shoal_core::layout::data_end_max(st.file.cached_stat().chunk_size);
            if offset >= limit {
                return Err(Errno::EFBIG);
            }
            let data = &data[..(limit - offset).min(data.len() as u64) as usize];
            // Read-ahead of this handle is older than this write.
            st.ahead.clear();
            st.fetching = None;
            let chunk_size = st.file.cached_stat().chunk_size;
            let before = st.buf.push(offset, data, chunk_size);
            if before.is_some() || st.held_since.is_none() {
                st.held_since = Some(std::time::Instant::now());
            }
            if let Some(piece) = before {
                // It could not join: no large buffer for what starts here.
                // While the ranges held before are sent, both count as held
                // (other handles' writes and reads over either wait for
                // this lock, and the size includes both).
                let _large = st.large.take();
                h.held_start.store(piece.start().min(st.buf.start()), Ordering::Release);
                h.held_end.store(piece.end().max(st.buf.end()), Ordering::Release);
                if let Err(e) = fs.send(&mut st.file, piece).await {
                    // This write fails too, and its bytes are not sent.
                    st.buf.take();
                    st.held_since = None;
                    fs.lost(&h, &mut st, e);
                    h.held_end.store(0, Ordering::Release);
                    return Err(e);
                }
            }
            h.held_start.store(st.buf.start(), Ordering::Release);
            h.held_end.store(st.buf.end(), Ordering::Release);
            if st.large.is_none() && st.buf.len() >= crate::buffer::WRITE_BUFFER_MAX_BYTES {
                // A sequential writer: larger pieces if a large buffer is free.
                st.large = fs.large_buffers.clone().try_acquire_owned().ok();
            }
            if st.buf.full(st.large.is_some()) {
                // Earlier writes' bytes are in the piece: if it is lost,
                // the next flush and fsync say so too.
                if let Some(e) = fs.send_piece(&h, &mut st).await {
                    return Err(e);
                }
            }
            Ok(data.len())
        });
        let written = or_reply!(reply, done);
        reply.written(written as u32);
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        let fs = &self.0;
        let h = or_reply!(reply, fs.handle(fh));
        let sent = fs.send_held(&h);
        // A close drops the closing process's fcntl locks on the file (POSIX).
        fs.drop_locks(lock_owner.0, ino.0);
        or_reply!(reply, sent);
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fs = &self.0;
        let h = or_reply!(reply, fs.handle(fh));
        let sent = fs.send_held(&h);
        // The last close of an open file description drops its flock lock
        // (the kernel names the owner only if it had one).
        if let Some(owner) = lock_owner {
            fs.drop_locks(owner.0, ino.0);
        }
        fs.files.lock().expect("files lock").remove(&fh.0);
        fs.drop_unlinked(h.ino);
        or_reply!(reply, sent);
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        or_reply!(reply, fs.fallocate(ino.0, fh, offset, length, mode));
        reply.ok();
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Every piece sent is durable on every replica and committed in meta
        // when `write_at` returns, so sending is all fsync needs: the
        // file's, whichever handle holds its bytes.
        let fs = &self.0;
        let h = or_reply!(reply, fs.handle(fh));
        let others = fs.rt.block_on(fs.send_others(ino.0, Some(&*h), None));
        // The send above noted its failures on this handle too.
        let lost = h.lost_elsewhere.swap(0, Ordering::AcqRel);
        or_reply!(reply, fs.sync_held(&h));
        if let Some(e) = others.or((lost != 0).then(|| Errno::from_i32(lost))) {
            return reply.error(e);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let fs = &self.0;
        let changes = fs.changes.load(Ordering::Acquire);
        let at = std::time::Instant::now();
        let entries = or_reply!(reply, fs.ns(fs.client.list_inode(ino.0)));
        let mut items = vec![
            DirItem { ino: ino.0, kind: FileType::Directory, name: ".".into(), dot: true, stat: None },
            DirItem { ino: ino.0, kind: FileType::Directory, name: "..".into(), dot: true, stat: None },
        ];
        items.extend(entries.into_iter().filter(|e| !is_hidden(ino.0, &e.name)).map(|e| DirItem {
            ino: e.stat.inode,
            kind: attr::kind(&e.stat),
            name: e.name,
            dot: false,
            stat: Some(e.stat),
        }));
        let mut dirs = fs.dirs.lock().expect("dirs lock");
        if dirs.len() >= OPEN_DIRS_MAX {
            return reply.error(Errno::EMFILE);
        }
        let fh = fs.next_fh.fetch_add(1, Ordering::Relaxed);
        dirs.insert(fh, Arc::new(Listing { items, at, changes }));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let items = match self.0.dirs.lock().expect("dirs lock").get(&fh.0) {
            Some(items) => items.clone(),
            None => return reply.error(Errno::EBADF),
        };
        for (i, item) in items.items.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(item.ino), i as u64 + 1, item.kind, &item.name) {
                break;
            }
        }
        reply.ok();
    }

    /// readdir with each entry's attributes, so `ls -l` needs no lookup
    /// per entry. The kernel caches what it is given as if looked up now,
    /// so a listing serves only while it is as new ([`Inner::fresh`]);
    /// otherwise the directory is listed again (and that listing kept), and
    /// once more if a change came while the answer was built. A name gone
    /// since the opendir is left out.
    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let fs = &self.0;
        let mut listing = match fs.dirs.lock().expect("dirs lock").get(&fh.0) {
            Some(listing) => listing.clone(),
            None => return reply.error(Errno::EBADF),
        };
        let mut answer = Vec::new();
        for attempt in 0..3 {
            if attempt > 0 || !fs.fresh(&listing) {
                listing = or_reply!(reply, fs.relist(ino.0, fh.0, &listing));
            }
            answer = listing
                .items
                .iter()
                .enumerate()
                .skip(offset as usize)
                .take(PLUS_ENTRIES_MAX)
                .filter_map(|(i, item)| match (&item.stat, item.dot) {
                    // The kernel ignores a dot entry's attributes.
                    (_, true) => Some((i, item.ino, attr::dot_attr(item.ino), false)),
                    (Some(stat), false) => Some((i, stat.inode, fs.attr_now(stat), true)),
                    (None, false) => None, // Gone since the opendir.
                })
                .collect();
            if fs.fresh(&listing) {
                break;
            }
        }
        // Cached no longer than a lookup made when the listing was.
        let ttl = fs.opts.entry_ttl.min(fs.opts.attr_ttl).saturating_sub(listing.at.elapsed());
        for (i, entry, attr, named) in answer {
            let name = &listing.items[i].name;
            if reply.add(INodeNo(entry), i as u64 + 1, name, &ttl, &attr, Generation(0)) {
                break;
            }
            if named {
                // Only what the answer holds is given.
                fs.give(attr, true);
            }
        }
        reply.ok();
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        self.0.dirs.lock().expect("dirs lock").remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let fs = &self.0;
        let servers = or_reply!(reply, fs.ns(fs.client.chunk_servers()));
        let capacity: u64 = servers.iter().map(|s| s.capacity_bytes).sum();
        let used: u64 = servers.iter().map(|s| s.used_bytes).sum();
        let block = 4096u64;
        let free = capacity.saturating_sub(used) / block;
        // Meta does not bound the number of inodes: report plenty.
        let files = 1u64 << 32;
        reply.statfs(capacity / block, free, free, files, files, block as u32, 255, block as u32);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let name = or_reply!(reply, name.to_str().ok_or(Errno::EINVAL));
        if !name.starts_with(XATTR_PREFIX) {
            return reply.error(Errno::ENOTSUP);
        }
        if flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
            let exists = or_reply!(reply, fs.user_xattrs(ino.0)).contains_key(name);
            if exists && flags & libc::XATTR_CREATE != 0 {
                return reply.error(Errno::EEXIST);
            }
            if !exists && flags & libc::XATTR_REPLACE != 0 {
                return reply.error(Errno::NO_XATTR);
            }
        }
        let path = inode_path(ino.0);
        let set = BTreeMap::from([(name.to_string(), value.to_vec())]);
        or_reply!(reply, fs.ns(fs.client.set_xattrs(&path, &[], &set)));
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let fs = &self.0;
        let name = or_reply!(reply, name.to_str().ok_or(Errno::NO_XATTR));
        if !name.starts_with(XATTR_PREFIX) {
            return reply.error(Errno::NO_XATTR);
        }
        let attrs = or_reply!(reply, fs.user_xattrs(ino.0));
        match attrs.get(name) {
            Some(v) => reply_sized(reply, size, v),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let fs = &self.0;
        let attrs = or_reply!(reply, fs.user_xattrs(ino.0));
        let mut names = Vec::new();
        for n in attrs.keys() {
            names.extend_from_slice(n.as_bytes());
            names.push(0);
        }
        reply_sized(reply, size, &names);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let name = or_reply!(reply, name.to_str().ok_or(Errno::NO_XATTR));
        if !name.starts_with(XATTR_PREFIX) {
            return reply.error(Errno::NO_XATTR);
        }
        let path = inode_path(ino.0);
        or_reply!(reply, fs.ns(fs.client.remove_xattr(&path, name)));
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions itself (`default_permissions`).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let fs = &self.0;
        let _changing = or_reply!(reply, fs.writable());
        let path = or_reply!(reply, entry_path(parent.0, name));
        let exclusive = flags & libc::O_EXCL != 0;
        let owner = Inner::owner(req, mode, umask);
        // The kernel asks to create a name it found missing, so try a new
        // file first: one meta call makes it with its first chunk prepared
        // for the writes to come. Only if the name exists by now (another
        // mount) does a create without O_EXCL open it instead.
        let file = match fs.ns(fs.client.create_owned_for_writing(&path, owner)) {
            Ok(file) => file,
            Err(e) if e != Errno::EEXIST || exclusive => or_reply!(reply, Err(e)),
            Err(_) => {
                let stat = or_reply!(reply, fs.ns(fs.client.create_owned(&path, owner, false)));
                if flags & libc::O_TRUNC != 0 && stat.size > 0 {
                    or_reply!(reply, fs.truncate(stat.inode, None, 0));
                }
                or_reply!(reply, fs.ns(fs.client.open_inode(stat.inode, &path)))
            }
        };
        let stat = file.cached_stat().clone();
        let fh = or_reply!(reply, fs.new_handle(stat.inode, file));
        reply.created(&fs.opts.entry_ttl, &fs.entry_attr_of(&stat), Generation(0), FileHandle(fh), FopenFlags::empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_join_under_their_directory() {
        assert_eq!(join("/", OsStr::new("a")).unwrap(), "/a");
        assert_eq!(join("/a/b", OsStr::new("c")).unwrap(), "/a/b/c");
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(join("/", OsStr::from_bytes(b"\xff")), Err(Errno::EINVAL), "names are UTF-8");
    }

    #[test]
    fn hidden_names_live_in_the_root_only() {
        let hidden = hidden_path(12, 7);
        assert_eq!(hidden, "/.shoal-unlinked.12.7");
        assert!(is_hidden(1, &hidden[1..]));
        assert!(!is_hidden(2, &hidden[1..]), "only the root's entries are hidden");
        assert!(!is_hidden(1, "shoal-unlinked.x"));
        assert_ne!(hidden_path(12, 7), hidden_path(13, 7), "two mounts (sessions) never share one");
    }

    #[test]
    fn times_before_the_epoch_are_the_epoch() {
        assert_eq!(ns_since_epoch(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(time_set(TimeOrNow::SpecificTime(UNIX_EPOCH + Duration::new(2, 3))), TimeSet::AtNs(2_000_000_003));
        assert_eq!(time_set(TimeOrNow::Now), TimeSet::Now);
    }
}
