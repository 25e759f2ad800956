//! The retry policy of the data path: what the client does after a replica
//! failed a read or a chain write. Plain data in (the typed kind the chunk
//! server sent, see `ChunkErrorKind`, and how many tries were made), a
//! decision out: no sockets, no clocks, so every case is tested below.
//!
//! # Reads (one chunk, replicas in order)
//! - `CORRUPT`: report the replica to meta, try the next one.
//! - `MOVED`: the replica is past the version the chunk map names, so the
//!   map is out of date; try the next one, and if none serves, fetch the
//!   map again (at most [`READ_ATTEMPTS_MAX`] maps in all).
//! - `CAPABILITY_EXPIRED`: the map's read capabilities are too old (a long
//!   read, a file open for long): as `MOVED`, a fresh map brings fresh ones.
//! - anything else (unreachable, stale, damaged in transit): the next one.
//! - when every replica failed and the map came from the client's cache
//!   (see `layouts`), fetch a fresh map and read again before giving up.
//!
//! # Chain writes (one chunk, at most [`WRITE_ATTEMPTS_MAX`] chains)
//! - `FENCED`: give up at once: the writer's lock passed to someone else.
//! - `BAD_REQUEST`: give up at once: any replica would refuse it.
//! - `NO_CAPABILITY`: give up at once: meta's capability was refused for
//!   something other than its age (a cluster key that differs between meta
//!   and the chunk server, say); asking again would get the same.
//! - `CAPABILITY_EXPIRED`: prepare again, blaming nobody: the new grant
//!   comes with a fresh capability.
//! - `NEWER_VERSION`: another writer got there first and the replica is
//!   healthy: prepare again, blaming nobody.
//! - anything else (missing base, no space, corrupt, unreachable): prepare
//!   again naming the failed replica, so meta routes the chain around it.

use shoal_proto::chunk::ChunkErrorKind;

/// How many replica chains one chunk write may try.
pub const WRITE_ATTEMPTS_MAX: usize = 4;
/// How many chunk maps one read may use (it refetches an outdated one).
pub const READ_ATTEMPTS_MAX: usize = 4;

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Try the chunk's next replica.
    NextReplica,
    /// Report the replica to meta as corrupt, then try the next one.
    ReportCorrupt,
    /// The chunk map is out of date: fetch it again and read again (for one
    /// replica's answer: once the other replicas failed too).
    RefreshMap,
    /// Prepare the chunk again for a newer version; with `route_around`,
    /// name the replica as failed so meta drops or replaces it.
    Reprepare { route_around: bool },
    /// Stop, and fail the call.
    GiveUp(GiveUp),
}

/// Why a call stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// The writer's fencing token is no longer the newest.
    Fenced,
    /// The request is one no replica would take.
    Rejected,
    /// Every try the bound allows failed.
    AttemptsExhausted,
    /// No replica could serve the read.
    NoReplica,
    /// The chunk map kept changing under the read.
    MapKeptChanging,
}

/// After one replica failed a read with `kind`.
pub fn on_read_error(kind: ChunkErrorKind) -> Action {
    match kind {
        ChunkErrorKind::Corrupt => Action::ReportCorrupt,
        ChunkErrorKind::Moved | ChunkErrorKind::CapabilityExpired => Action::RefreshMap,
        _ => Action::NextReplica,
    }
}

/// After every replica of a chunk failed read attempt `attempt` (from 1);
/// `map_outdated` if one of them answered `MOVED`.
pub fn after_replicas_failed(map_outdated: bool, attempt: usize) -> Action {
    match (map_outdated, attempt < READ_ATTEMPTS_MAX) {
        (true, true) => Action::RefreshMap,
        (true, false) => Action::GiveUp(GiveUp::MapKeptChanging),
        (false, _) => Action::GiveUp(GiveUp::NoReplica),
    }
}

/// After a read failed as a whole (every replica of a chunk failed) with a
/// map that came from the cache (`from_cache`) or from meta; `moved` if a
/// replica said the map is out of date. A cached map is always replaced by
/// a fresh one (which does not count as an attempt): it may be the reason.
pub fn after_read_failed(from_cache: bool, moved: bool, attempt: usize) -> Action {
    match from_cache {
        true => Action::RefreshMap,
        false => after_replicas_failed(moved, attempt),
    }
}

/// After chain write attempt `attempt` (from 1) failed with `kind`.
pub fn on_write_error(kind: ChunkErrorKind, attempt: usize) -> Action {
    match kind {
        ChunkErrorKind::Fenced => Action::GiveUp(GiveUp::Fenced),
        ChunkErrorKind::BadRequest | ChunkErrorKind::NoCapability => Action::GiveUp(GiveUp::Rejected),
        _ if attempt >= WRITE_ATTEMPTS_MAX => Action::GiveUp(GiveUp::AttemptsExhausted),
        ChunkErrorKind::NewerVersion | ChunkErrorKind::CapabilityExpired => Action::Reprepare { route_around: false },
        _ => Action::Reprepare { route_around: true },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChunkErrorKind as K;

    #[test]
    fn reads_report_corruption_and_refresh_an_outdated_map() {
        let cases = [
            (K::Corrupt, Action::ReportCorrupt),
            (K::Moved, Action::RefreshMap),
            (K::Stale, Action::NextReplica),
            (K::NotFound, Action::NextReplica),
            (K::Io, Action::NextReplica),
            // Unreachable, damaged in transit.
            (K::Unspecified, Action::NextReplica),
            // Never a corruption report for a replica that only missed a write.
            (K::MissingBase, Action::NextReplica),
            // An old map's capabilities: a fresh map has fresh ones.
            (K::CapabilityExpired, Action::RefreshMap),
            (K::NoCapability, Action::NextReplica),
        ];
        for (kind, want) in cases {
            assert_eq!(on_read_error(kind), want, "{kind:?}");
        }
    }

    #[test]
    fn a_read_refetches_the_map_a_bounded_number_of_times() {
        let refreshes = (1..=READ_ATTEMPTS_MAX).take_while(|a| after_replicas_failed(true, *a) == Action::RefreshMap);
        assert_eq!(refreshes.count(), READ_ATTEMPTS_MAX - 1);
        assert_eq!(after_replicas_failed(true, READ_ATTEMPTS_MAX), Action::GiveUp(GiveUp::MapKeptChanging));
        assert_eq!(after_replicas_failed(false, 1), Action::GiveUp(GiveUp::NoReplica));
    }

    #[test]
    fn a_cached_map_is_refreshed_before_a_read_gives_up() {
        // A replica refused the version the cached map names, or every replica
        // failed (the chunk may have moved, the file may be gone): ask meta.
        assert_eq!(after_read_failed(true, true, 1), Action::RefreshMap);
        assert_eq!(after_read_failed(true, false, 1), Action::RefreshMap);
        // With a map fresh from meta, the usual bound applies.
        assert_eq!(after_read_failed(false, false, 1), Action::GiveUp(GiveUp::NoReplica));
        assert_eq!(after_read_failed(false, true, 1), Action::RefreshMap);
        assert_eq!(after_read_failed(false, true, READ_ATTEMPTS_MAX), Action::GiveUp(GiveUp::MapKeptChanging));
    }

    #[test]
    fn writes_route_around_failed_replicas_but_not_healthy_ones() {
        let cases = [
            (K::MissingBase, 1, Action::Reprepare { route_around: true }),
            (K::NoSpace, 2, Action::Reprepare { route_around: true }),
            (K::Corrupt, 1, Action::Reprepare { route_around: true }),
            (K::Unspecified, 3, Action::Reprepare { route_around: true }),
            (K::NewerVersion, 1, Action::Reprepare { route_around: false }),
            (K::Fenced, 1, Action::GiveUp(GiveUp::Fenced)),
            (K::BadRequest, 1, Action::GiveUp(GiveUp::Rejected)),
            (K::NoCapability, 1, Action::GiveUp(GiveUp::Rejected)),
            (K::CapabilityExpired, 1, Action::Reprepare { route_around: false }),
            (K::CapabilityExpired, WRITE_ATTEMPTS_MAX, Action::GiveUp(GiveUp::AttemptsExhausted)),
            (K::Fenced, WRITE_ATTEMPTS_MAX, Action::GiveUp(GiveUp::Fenced)),
            (K::MissingBase, WRITE_ATTEMPTS_MAX, Action::GiveUp(GiveUp::AttemptsExhausted)),
            (K::NewerVersion, WRITE_ATTEMPTS_MAX, Action::GiveUp(GiveUp::AttemptsExhausted)),
        ];
        for (kind, attempt, want) in cases {
            assert_eq!(on_write_error(kind, attempt), want, "{kind:?} on attempt {attempt}");
        }
    }

    #[test]
    fn every_write_stops_within_the_bound() {
        for i in 0..64 {
            let Ok(kind) = K::try_from(i) else { continue };
            let tries = (1..).find(|a| matches!(on_write_error(kind, *a), Action::GiveUp(_))).unwrap();
            assert!(tries <= WRITE_ATTEMPTS_MAX, "{kind:?} tried {tries} chains");
        }
    }
}
