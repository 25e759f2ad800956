//! flock(2) and fcntl(2) locks on the mount, held as Shoal's cluster locks.
//!
//! # Mapping
//! The mount asks the kernel for flock locks (`FUSE_FLOCK_LOCKS`), and for
//! fcntl locks (`FUSE_POSIX_LOCKS`) only with
//! [`crate::MountOptions::cluster_fcntl_locks`]; by default the kernel keeps
//! fcntl locks, byte-range and local to this mount. Each lock owner the
//! kernel names (a process's file table for fcntl locks, an open file
//! description for flock) gets one Shoal lock session, opened at its first
//! lock and closed once it holds and waits for nothing. A file's lock is
//! named by the inode, `/.shoal-inode/N` ([`shoal_core::path::inode_lock_name`]):
//! renames do not change it. Meta does the conflict checks and the FIFO
//! order, across owners and across mounts.
//!
//! - **flock** (by default): the whole-file lock of that name, whose tokens
//!   fence inode N. A lock on any byte range locks the whole file.
//!   `F_RDLCK` is shared, `F_WRLCK` exclusive, `F_UNLCK` releases. Changing
//!   the mode of a held lock is release, then acquire (as flock does).
//! - **fcntl, with cluster fcntl locks**: meta's byte-range locks of that
//!   name (POSIX semantics, kept in meta's state by its `ranges` module):
//!   the bytes asked for, shared or exclusive; setting a range replaces
//!   what the owner held inside it, atomically (a conversion never passes
//!   through "unlocked"); unlocking part of a range splits it. A request
//!   waits only for the held ranges in its way (waiting requests are
//!   granted in arrival order as those go, not queued behind each other:
//!   that would make deadlocks POSIX has not). They
//!   carry no fencing token (disjoint ranges are held at once, and a file's
//!   fence only grows). `fuser` does not pass the flag that tells flock
//!   from fcntl requests, so in this mode a flock is a byte-range lock of
//!   the whole file, owned by its open file description (it conflicts with
//!   fcntl locks of other owners, as on NFS).
//! - A non-blocking request answers `EAGAIN` when it would wait. A blocking
//!   one waits on meta from a task of the runtime (no kernel worker thread
//!   waits); it ends with `EINTR` when the waiting process has a signal
//!   pending that interrupts it (read from `/proc/PID/status`, since
//!   `fuser` answers the kernel's FUSE_INTERRUPT itself), or when the owner
//!   closes the file; it then leaves the queue.
//! - `F_GETLK` answers a holder of another owner whose mode conflicts: its
//!   bytes (the whole file, for a whole-file lock), its type, and its pid
//!   when it is an owner on this mount (else 0).
//! - After a grant, the kernel's cached pages and attributes of the file
//!   are dropped, so a reader under the lock sees what the last holder wrote
//!   on any mount (as NFS revalidates at a lock).
//! - A blocking request that would close a cycle of waits between owners
//!   (each owner is a session, on this mount or another) fails with
//!   `EDEADLK` and changes nothing (except for a whole-file conversion,
//!   which let go of the owner's bytes of the file before it asked; see
//!   `set_range_lock`): meta checks at the time it would queue (meta's
//!   `ranges` module). Linux does that for process-owned fcntl
//!   locks only; the mount cannot tell OFD locks and flocks from those, so
//!   they are refused too, where Linux would wait forever.
//!
//! # Release
//! As POSIX says: an owner's fcntl locks on a file go when it closes any
//! descriptor of the file (the kernel's `flush` names the owner); flock
//! locks go when the last descriptor of their open file description closes
//! (`release` names the owner). Held writes of the file are sent before a
//! lock is released, so the next holder finds them. When the mount dies its
//! sessions stop beating and meta expires them, releasing their locks.
//!
//! # Fencing
//! An exclusive whole-file grant (flock, without cluster fcntl locks) makes
//! the handle it was asked through carry the lock's token
//! ([`shoal_client::File::set_fence`]) until the lock is released: a mount
//! that was paused past its session TTL, whose lock passed on, has its
//! writes refused by meta and the chunk servers (the flush or fsync fails
//! with `EACCES`) and changes no byte. Byte ranges carry no token, so with
//! cluster fcntl locks nothing fences a paused mount's writes (flock's
//! included): its lost ranges are simply gone, and it asks anew.
//!
//! # One setting per cluster
//! Flocks of a mount with cluster fcntl locks are byte ranges; those of a
//! mount without are whole-file locks, in another table: the two never
//! conflict. Mounts that share files must use the same setting.
//!
//! # State
//! [`Locks`] keeps, per owner, its session (opened lazily), the locks it
//! holds (by inode, with the handle, pid and session: one granted to a
//! session meta expired stays until the owner releases it or closes the
//! file, so its fence stays until then too), the cancel flags of its waits,
//! and how many calls of it are under way (an owner is forgotten and its
//! session closed only when that is 0 and it holds nothing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::Errno;
use shoal_client::{Client, ClientError, Lock, Session};
use shoal_core::FsError;

use crate::errno::errno;

/// Lock owners one mount keeps at once; more fail with `ENOLCK`.
pub const OWNERS_MAX: usize = 1 << 14;

/// What a lock request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Unlock,
    Shared,
    Exclusive,
}

impl Want {
    /// The request of an `l_type` (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`).
    pub fn of_type(typ: i32) -> Option<Want> {
        match typ {
            libc::F_RDLCK => Some(Want::Shared),
            libc::F_WRLCK => Some(Want::Exclusive),
            libc::F_UNLCK => Some(Want::Unlock),
            _ => None,
        }
    }
}

/// What a request needs done, given what its owner holds on the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// It holds what it asks for already (or unlocks what it does not hold).
    Nothing,
    Release,
    Acquire,
    /// It holds the other mode: release, then acquire.
    Convert,
}

/// The step for `want` when the owner holds `held` (`Some(shared)`).
pub fn step(held: Option<bool>, want: Want) -> Step {
    match (held, want) {
        (None, Want::Unlock) => Step::Nothing,
        (Some(_), Want::Unlock) => Step::Release,
        (None, _) => Step::Acquire,
        (Some(true), Want::Shared) | (Some(false), Want::Exclusive) => Step::Nothing,
        (Some(_), _) => Step::Convert,
    }
}

/// Whether a holder in mode `holder_shared` keeps another owner from a lock
/// in mode `want_shared`.
pub fn conflicts(holder_shared: bool, want_shared: bool) -> bool {
    !(holder_shared && want_shared)
}

/// The first byte range held by a session other than `mine` that overlaps
/// `range` (inclusive) and conflicts with a request in mode `want_shared`
/// (getlk with byte ranges).
pub fn range_conflict(
    holders: &[shoal_proto::meta::LockEntry],
    mine: Option<u64>,
    want_shared: bool,
    range: (u64, u64),
) -> Option<shoal_proto::meta::LockEntry> {
    holders.iter().copied().find(|h| {
        let overlaps = h.range.is_some_and(|r| r.start <= range.1 && range.0 <= r.end);
        Some(h.session) != mine && overlaps && conflicts(h.shared, want_shared)
    })
}

/// Signals that end a wait unless caught otherwise: the ones whose default
/// action ends the process (bit `n - 1` for signal `n`).
const FATAL_BY_DEFAULT: u64 = {
    let signals = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGKILL,
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGTERM,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    let mut mask = 0u64;
    let mut i = 0;
    while i < signals.len() {
        mask |= 1 << (signals[i] - 1);
        i += 1;
    }
    mask
};

/// Whether the process whose `/proc/PID/status` is `status` has a signal
/// pending that would interrupt a blocking call: pending, not blocked, not
/// ignored, and caught or fatal.
pub fn interrupted(status: &str) -> bool {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    let deliverable = pending & !field("SigBlk:") & !field("SigIgn:");
    deliverable & (field("SigCgt:") | FATAL_BY_DEFAULT) != 0
}

/// Whether process `pid`'s wait for a lock should end: it has an
/// interrupting signal pending. A process this mount cannot see (pid 0: in
/// a pid namespace the mount's does not show) is never taken as interrupted;
/// its wait ends when its owner closes the file.
pub fn process_interrupted(pid: u32) -> bool {
    pid != 0 && std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| interrupted(&s))
}

/// A lock an owner holds on one file.
#[derive(Debug, Clone)]
pub struct Held {
    pub lock: Lock,
    /// The session it was granted to (a later one, after an expiry, holds
    /// nothing of it).
    pub session: u64,
    /// The handle it was asked through (the one it fences, if exclusive).
    pub fh: u64,
    pub pid: u32,
}

#[derive(Default)]
struct Owner {
    session: Arc<tokio::sync::Mutex<Option<Arc<Session>>>>,
    /// The session's id, once open (readable without the async lock).
    session_id: Option<u64>,
    held: HashMap<u64, Held>,
    /// Inodes it may hold byte ranges of (fcntl locks with
    /// [`crate::MountOptions::cluster_fcntl_locks`]), with the pid of its
    /// last request there.
    ranged: HashMap<u64, u32>,
    /// Cancel flags of the waits under way, by inode.
    waits: HashMap<u64, Vec<Arc<AtomicBool>>>,
    /// Calls of this owner under way.
    busy: usize,
}

impl Owner {
    fn forget_wait(&mut self, ino: u64, flag: &Arc<AtomicBool>) {
        if let Some(flags) = self.waits.get_mut(&ino) {
            flags.retain(|f| !Arc::ptr_eq(f, flag));
            if flags.is_empty() {
                self.waits.remove(&ino);
            }
        }
    }
}

/// The mount's lock owners and what they hold.
pub struct Locks {
    client: Client,
    rt: tokio::runtime::Handle,
    ttl: Duration,
    owners: Mutex<HashMap<u64, Owner>>,
}

/// An owner's call under way; dropped, the owner may be forgotten.
pub struct Busy<'a> {
    locks: &'a Locks,
    owner: u64,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.locks.leave(self.owner);
    }
}

impl Locks {
    pub fn new(client: Client, rt: tokio::runtime::Handle, ttl: Duration) -> Locks {
        Locks { client, rt, ttl, owners: Mutex::new(HashMap::new()) }
    }

    /// Starts a call of `owner` (it is kept until the call ends).
    pub fn enter(&self, owner: u64) -> Result<Busy<'_>, Errno> {
        let mut owners = self.table();
        if !owners.contains_key(&owner) && owners.len() >= OWNERS_MAX {
            return Err(Errno::ENOLCK);
        }
        owners.entry(owner).or_default().busy += 1;
        Ok(Busy { locks: self, owner })
    }

    fn leave(&self, owner: u64) {
        let idle = {
            let mut owners = self.table();
            let Some(o) = owners.get_mut(&owner) else { return };
            o.busy -= 1;
            if o.busy > 0 || !o.held.is_empty() || !o.ranged.is_empty() {
                return;
            }
            owners.remove(&owner)
        };
        if let Some(o) = idle {
            self.rt.spawn(close_session(o.session));
        }
    }

    /// Starts a call of `owner` only if it is known (holds or waits).
    pub fn enter_existing(&self, owner: u64) -> Option<Busy<'_>> {
        let mut owners = self.table();
        owners.get_mut(&owner)?.busy += 1;
        Some(Busy { locks: self, owner })
    }

    /// The owners' table. A panic elsewhere while it was held leaves it
    /// usable (each change to it is one step), so later calls go on.
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Owner>> {
        self.owners.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `owner`'s session cell. An owner that is gone (every session was
    /// closed at unmount while this call ran) gets an empty cell of its own.
    fn cell(&self, owner: u64) -> Arc<tokio::sync::Mutex<Option<Arc<Session>>>> {
        self.table().get(&owner).map(|o| o.session.clone()).unwrap_or_default()
    }

    /// The session `owner` (who must be busy) has open, if any.
    pub async fn current(&self, owner: u64) -> Option<Arc<Session>> {
        self.cell(owner).lock().await.clone()
    }

    /// Whether `held` is still held: its session is `owner`'s (who must be
    /// busy) and meta has not expired it, as far as its keep-alives know.
    pub async fn still_held(&self, owner: u64, held: &Held) -> bool {
        self.current(owner).await.is_some_and(|s| s.is_alive() && s.id() == held.session)
    }

    /// The open session of `owner` (who must be busy), opening one if it has
    /// none, if meta expired it (its locks are gone then), or if it is
    /// `dead` (a call was refused with "session expired").
    pub async fn session(&self, owner: u64, dead: Option<u64>) -> Result<Arc<Session>, Errno> {
        let cell = self.cell(owner);
        let mut slot = cell.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| s.is_alive() && Some(s.id()) != dead) {
            return Ok(s.clone());
        }
        let opened = self.client.open_session(self.ttl).await.map_err(|e| {
            tracing::warn!(error = %e, "mount: a lock session could not be opened");
            errno(&e)
        })?;
        let session = Arc::new(opened);
        *slot = Some(session.clone());
        if let Some(o) = self.table().get_mut(&owner) {
            o.session_id = Some(session.id());
        }
        Ok(session)
    }

    /// What `owner` holds on `ino`.
    pub fn held(&self, owner: u64, ino: u64) -> Option<Held> {
        self.table().get(&owner).and_then(|o| o.held.get(&ino).cloned())
    }

    /// Takes what `owner` holds on `ino` out of the table.
    pub fn take(&self, owner: u64, ino: u64) -> Option<Held> {
        self.table().get_mut(&owner).and_then(|o| o.held.remove(&ino))
    }

    /// A new cancel flag for a wait of `owner` on `ino`.
    pub fn start_wait(&self, owner: u64, ino: u64) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        match self.table().get_mut(&owner) {
            Some(o) => o.waits.entry(ino).or_default().push(flag.clone()),
            // Gone at unmount: the wait is over before it starts.
            None => flag.store(true, Ordering::Release),
        }
        flag
    }

    /// Forgets the cancel flag of a wait that ended without a grant.
    pub fn end_wait(&self, owner: u64, ino: u64, flag: &Arc<AtomicBool>) {
        if let Some(o) = self.table().get_mut(&owner) {
            o.forget_wait(ino, flag);
        }
    }

    /// Ends every wait of `owner` on `ino`.
    pub fn cancel_waits(&self, owner: u64, ino: u64) {
        let mut owners = self.table();
        if let Some(flags) = owners.get_mut(&owner).and_then(|o| o.waits.remove(&ino)) {
            flags.iter().for_each(|f| f.store(true, Ordering::Release));
        }
    }

    /// Records a grant, unless `cancel` was set meanwhile (the owner closed
    /// the file): then answers false and the caller lets the lock go.
    pub fn record(&self, owner: u64, ino: u64, held: Held, cancel: Option<&Arc<AtomicBool>>) -> bool {
        let mut owners = self.table();
        // Gone at unmount: nobody would release it.
        let Some(o) = owners.get_mut(&owner) else { return false };
        if let Some(flag) = cancel {
            o.forget_wait(ino, flag);
            if flag.load(Ordering::Acquire) {
                return false;
            }
        }
        o.held.insert(ino, held);
        true
    }

    /// Notes that `owner` (`pid`) may hold byte ranges of `ino` (before it
    /// asks for some: a request whose answer is lost may hold them all the
    /// same). False when the owner is gone (every session closed at unmount).
    pub fn note_ranges(&self, owner: u64, ino: u64, pid: u32) -> bool {
        let mut owners = self.table();
        let Some(o) = owners.get_mut(&owner) else { return false };
        o.ranged.insert(ino, pid);
        true
    }

    /// Forgets the cancel flag of a wait that ended; whether it was set
    /// (the owner closed the file meanwhile).
    pub fn end_wait_cancelled(&self, owner: u64, ino: u64, flag: &Arc<AtomicBool>) -> bool {
        self.end_wait(owner, ino, flag);
        flag.load(Ordering::Acquire)
    }

    /// Whether `owner` may hold byte ranges of `ino`.
    pub fn has_ranges(&self, owner: u64, ino: u64) -> bool {
        self.table().get(&owner).is_some_and(|o| o.ranged.contains_key(&ino))
    }

    /// Forgets that `owner` holds byte ranges of `ino`; whether it did.
    pub fn take_ranges(&self, owner: u64, ino: u64) -> bool {
        self.table().get_mut(&owner).is_some_and(|o| o.ranged.remove(&ino).is_some())
    }

    /// The session id of `owner`, if it has one open.
    pub fn session_id(&self, owner: u64) -> Option<u64> {
        self.table().get(&owner).and_then(|o| o.session_id)
    }

    /// The pid of the owner on this mount whose session `session` holds `ino`
    /// (or byte ranges of it).
    pub fn pid_of(&self, session: u64, ino: u64) -> Option<u32> {
        let owners = self.table();
        let o = owners.values().find(|o| o.session_id == Some(session))?;
        o.held.get(&ino).map(|h| h.pid).or_else(|| o.ranged.get(&ino).copied())
    }

    /// Ends every session (at unmount): their locks go at once.
    pub async fn close_all(&self) {
        let all: Vec<Owner> = self.table().drain().map(|(_, o)| o).collect();
        for o in all {
            close_session(o.session).await;
        }
    }
}

async fn close_session(cell: Arc<tokio::sync::Mutex<Option<Arc<Session>>>>) {
    let Some(session) = cell.lock().await.take() else { return };
    let id = session.id();
    // Still named by a call that is ending, it is dropped and expires.
    if let Ok(s) = Arc::try_unwrap(session)
        && let Err(e) = s.close().await
    {
        tracing::debug!(session = id, error = %e, "mount: a lock session did not close (it expires)");
    }
}

/// Whether `e` says the session is gone.
pub fn session_expired(e: &ClientError) -> bool {
    matches!(e, ClientError::Fs(FsError::SessionExpired { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_steps() {
        use Step::*;
        use Want::*;
        let table = [
            (None, Unlock, Nothing),
            (Some(true), Unlock, Release),
            (Some(false), Unlock, Release),
            (None, Shared, Acquire),
            (None, Exclusive, Acquire),
            (Some(true), Shared, Nothing),
            (Some(false), Exclusive, Nothing),
            (Some(true), Exclusive, Convert),
            (Some(false), Shared, Convert),
        ];
        for (held, want, expect) in table {
            assert_eq!(step(held, want), expect, "{held:?} {want:?}");
        }
        assert_eq!(Want::of_type(libc::F_RDLCK), Some(Shared));
        assert_eq!(Want::of_type(libc::F_WRLCK), Some(Exclusive));
        assert_eq!(Want::of_type(libc::F_UNLCK), Some(Unlock));
        assert_eq!(Want::of_type(7), None);
    }

    #[test]
    fn getlk_finds_an_overlapping_conflicting_range_of_another_session() {
        let held = |session, shared, start, end| shoal_proto::meta::LockEntry {
            session,
            shared,
            range: Some(shoal_proto::meta::ByteRange { start, end }),
            ..Default::default()
        };
        let holders = [held(1, false, 0, 9), held(2, true, 20, 29), held(3, false, 40, u64::MAX)];
        let found = |mine, shared, range| {
            range_conflict(&holders, mine, shared, range)
                .map(|h| (h.session, h.range.map(|r| (r.start, r.end)).unwrap()))
        };
        assert_eq!(found(None, true, (5, 5)), Some((1, (0, 9))));
        assert_eq!(found(Some(1), true, (5, 5)), None, "its own range");
        assert_eq!(found(None, true, (10, 29)), None, "shared with shared");
        assert_eq!(found(None, false, (10, 29)), Some((2, (20, 29))));
        assert_eq!(found(None, true, (30, 39)), None, "a gap");
        assert_eq!(found(None, true, (1000, 1000)), Some((3, (40, u64::MAX))));
    }

    #[test]
    fn only_shared_with_shared_is_no_conflict() {
        assert!(!conflicts(true, true));
        assert!(conflicts(true, false));
        assert!(conflicts(false, true));
        assert!(conflicts(false, false));
    }

    fn status(pnd: u64, shd: u64, blk: u64, ign: u64, cgt: u64) -> String {
        format!(
            "Name:\tpython3\nSigQ:\t0/100\nSigPnd:\t{pnd:016x}\nShdPnd:\t{shd:016x}\n\
             SigBlk:\t{blk:016x}\nSigIgn:\t{ign:016x}\nSigCgt:\t{cgt:016x}\n"
        )
    }

    #[test]
    fn a_pending_signal_interrupts_only_when_it_would_be_delivered() {
        let bit = |s: i32| 1u64 << (s - 1);
        assert!(!interrupted(&status(0, 0, 0, 0, 0)), "nothing pending");
        assert!(interrupted(&status(0, bit(libc::SIGKILL), 0, 0, 0)), "killed");
        assert!(interrupted(&status(bit(libc::SIGTERM), 0, 0, 0, 0)), "fatal by default");
        assert!(!interrupted(&status(0, bit(libc::SIGTERM), 0, bit(libc::SIGTERM), 0)), "ignored");
        assert!(!interrupted(&status(0, bit(libc::SIGINT), bit(libc::SIGINT), 0, bit(libc::SIGINT))), "blocked");
        assert!(!interrupted(&status(0, bit(libc::SIGCHLD), 0, 0, 0)), "ignored by default");
        assert!(interrupted(&status(0, bit(libc::SIGCHLD), 0, 0, bit(libc::SIGCHLD))), "caught");
        assert!(!interrupted("Name:\tx\n"), "no signal fields: nothing pending");
    }
}
