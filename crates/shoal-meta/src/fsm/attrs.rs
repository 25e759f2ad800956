//! POSIX attributes of an inode: permission bits (with setuid, setgid and
//! sticky), owner, group and times, and the one command that changes them
//! (`NamespaceCmd::SetAttr`: chmod, chown, utimens).
//!
//! Who may change what is the kernel's business (the mount runs with
//! `default_permissions`, which checks ownership before it asks); here the
//! change is applied as Linux applies it: a chown of anything but a
//! directory clears setuid, and setgid where group execution is allowed,
//! unless the same change sets the mode; every change moves ctime.
//!
//! # Invariants kept here
//! - A mode holds no bit past [`MODE_BITS_MAX`].
//! - A time is at most [`TIME_NS_MAX`] (what a signed 64-bit count of
//!   nanoseconds holds).
//!
//! [`plan_change`] is pure: it computes the new attributes, or refuses the
//! change whole, so a refusal changes nothing.

use serde::{Deserialize, Serialize};
use shoal_core::FsError;

use super::namespace::{Inode, Kind, MODE_BITS_MAX, Owner};
use super::{FsState, Response};

/// The latest time an inode may carry, in nanoseconds since the epoch.
pub const TIME_NS_MAX: u64 = i64::MAX as u64;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o0010;

/// A time to set: the leader's clock, or a given one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    Now,
    AtNs(u64),
}

/// What one SetAttr changes; `None` leaves an attribute as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChange {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
}

/// Checks the bounds of a change (also at the RPC edge).
pub fn check_change(change: &AttrChange) -> Result<(), FsError> {
    let invalid = |reason: String| FsError::InvalidArgument { reason };
    if let Some(mode) = change.mode.filter(|m| *m > MODE_BITS_MAX) {
        return Err(invalid(format!("mode {mode:o} has bits past {MODE_BITS_MAX:o}")));
    }
    for t in [change.atime, change.mtime].into_iter().flatten() {
        if let TimeSet::AtNs(ns) = t
            && ns > TIME_NS_MAX
        {
            return Err(invalid(format!("time {ns} ns lies past the latest, {TIME_NS_MAX} ns")));
        }
    }
    Ok(())
}

/// The owner a new inode of `kind` gets in directory `parent`, asked for as
/// `owner`. Under a set-group-ID directory (as Linux does) it takes the
/// directory's group, and a new directory is set-group-ID too; a new file
/// asking for set-group-ID with group execution keeps it only if the
/// creator is root or the group is the creator's own (supplementary groups
/// are not known here).
pub fn owner_under(parent: &Inode, owner: Owner, kind: Kind) -> Owner {
    if parent.kind != Kind::Dir || parent.mode & S_ISGID == 0 {
        return owner;
    }
    let mut out = Owner { gid: parent.gid, ..owner };
    if kind == Kind::Dir {
        out.mode |= S_ISGID;
    } else if out.mode & (S_ISGID | S_IXGRP) == S_ISGID | S_IXGRP && owner.uid != 0 && owner.gid != parent.gid {
        out.mode &= !S_ISGID;
    }
    out
}

/// The attributes of `inode` after `change` at leader time `now_ms`.
pub fn plan_change(inode: &Inode, change: &AttrChange, now_ms: u64) -> Result<Inode, FsError> {
    check_change(change)?;
    let now_ns = now_ms.saturating_mul(1_000_000);
    let mut next = inode.clone();
    let (atime, mtime, _) = inode.times_ns();
    (next.atime_ns, next.mtime_ns) = (atime, mtime);
    let owner_changes = change.uid.is_some() || change.gid.is_some();
    if let Some(uid) = change.uid {
        next.uid = uid;
    }
    if let Some(gid) = change.gid {
        next.gid = gid;
    }
    if owner_changes && change.mode.is_none() && inode.kind != Kind::Dir {
        next.mode &= !S_ISUID;
        if next.mode & S_IXGRP != 0 {
            next.mode &= !S_ISGID;
        }
    }
    if let Some(mode) = change.mode {
        next.mode = mode;
    }
    let resolve = |t: TimeSet| match t {
        TimeSet::Now => now_ns,
        TimeSet::AtNs(ns) => ns,
    };
    if let Some(t) = change.atime {
        next.atime_ns = resolve(t);
    }
    if let Some(t) = change.mtime {
        next.mtime_ns = resolve(t);
        next.mtime_ms = next.mtime_ns / 1_000_000;
    }
    next.ctime_ns = now_ns;
    Ok(next)
}

impl FsState {
    pub(super) fn set_attr(&mut self, id: u64, change: &AttrChange, now_ms: u64) -> Result<Response, FsError> {
        let next = plan_change(self.inode(id)?, change, now_ms)?;
        self.inodes.insert(id, next.clone());
        Ok(Response::Inode(next))
    }
}

#[cfg(test)]
mod tests {
    use super::super::NamespaceCmd;
    use super::super::testing::{create, run};
    use super::*;

    #[test]
    fn a_set_group_id_directory_passes_its_group_on() {
        let dir = |mode: u32| {
            let mut d = FsState::default().inodes[&super::super::ROOT_INODE].clone();
            (d.mode, d.gid) = (mode, 50);
            d
        };
        let asked = Owner { mode: 0o644, uid: 1000, gid: 100 };
        assert_eq!(owner_under(&dir(0o755), asked, Kind::File), asked, "not set-group-ID: as asked");
        assert_eq!(owner_under(&dir(0o2775), asked, Kind::File), Owner { gid: 50, ..asked });
        assert_eq!(
            owner_under(&dir(0o2775), Owner { mode: 0o755, ..asked }, Kind::Dir),
            Owner { mode: 0o2755, uid: 1000, gid: 50 },
            "a directory inherits the bit too"
        );
        // set-group-ID with group execution, in a group not the creator's: dropped, except for root.
        let sgid_exec = Owner { mode: 0o2755, ..asked };
        assert_eq!(owner_under(&dir(0o2775), sgid_exec, Kind::File).mode, 0o755);
        let root = Owner { uid: 0, ..sgid_exec };
        assert_eq!(owner_under(&dir(0o2775), root, Kind::File).mode, 0o2755);
        let own_group = Owner { gid: 50, ..sgid_exec };
        assert_eq!(owner_under(&dir(0o2775), own_group, Kind::File).mode, 0o2755);
    }

    #[test]
    fn chmod_chown_and_times() {
        let mut st = FsState::default();
        let f = create(&mut st, "/f");
        let change = AttrChange { mode: Some(0o4755), ..Default::default() };
        let Response::Inode(i) = run(&mut st, NamespaceCmd::SetAttr { inode: f.id, change }) else { panic!() };
        assert_eq!(i.mode, 0o4755, "setuid is kept by chmod");
        // chown clears setuid (and setgid with group execution), as Linux does.
        st.inodes.get_mut(&f.id).unwrap().mode = 0o6755;
        let change = AttrChange { uid: Some(1000), gid: Some(100), ..Default::default() };
        let Response::Inode(i) = run(&mut st, NamespaceCmd::SetAttr { inode: f.id, change }) else { panic!() };
        assert_eq!((i.uid, i.gid, i.mode), (1000, 100, 0o755));
        // Setgid without group execution (mandatory locking) stays.
        st.inodes.get_mut(&f.id).unwrap().mode = 0o2644;
        let change = AttrChange { uid: Some(7), ..Default::default() };
        let Response::Inode(i) = run(&mut st, NamespaceCmd::SetAttr { inode: f.id, change }) else { panic!() };
        assert_eq!(i.mode, 0o2644);
        // utimens: a given time is kept to the nanosecond; mtime_ms follows.
        let change = AttrChange {
            atime: Some(TimeSet::AtNs(5)),
            mtime: Some(TimeSet::AtNs(1_500_000_123)),
            ..Default::default()
        };
        let Response::Inode(i) = run(&mut st, NamespaceCmd::SetAttr { inode: f.id, change }) else { panic!() };
        assert_eq!((i.atime_ns, i.mtime_ns, i.mtime_ms), (5, 1_500_000_123, 1500));
    }

    #[test]
    fn directories_keep_their_bits_on_chown() {
        let dir = FsState::default().inodes[&super::super::ROOT_INODE].clone();
        let mut d = dir.clone();
        d.mode = 0o2775;
        let next = plan_change(&d, &AttrChange { gid: Some(5), ..Default::default() }, 9).unwrap();
        assert_eq!((next.mode, next.gid, next.ctime_ns), (0o2775, 5, 9_000_000));
    }

    #[test]
    fn bad_changes_are_refused_and_change_nothing() {
        let mut st = FsState::default();
        let f = create(&mut st, "/f");
        let before = st.clone();
        for change in [
            AttrChange { mode: Some(0o10000), ..Default::default() },
            AttrChange { mtime: Some(TimeSet::AtNs(u64::MAX)), ..Default::default() },
        ] {
            let r = run(&mut st, NamespaceCmd::SetAttr { inode: f.id, change });
            assert!(matches!(r, Response::Err(FsError::InvalidArgument { .. })), "{r:?}");
        }
        let r = run(&mut st, NamespaceCmd::SetAttr { inode: 999, change: AttrChange::default() });
        assert_eq!(r, Response::Err(FsError::StaleInode { inode: 999 }));
        assert_eq!(st.inodes, before.inodes);
    }
}
