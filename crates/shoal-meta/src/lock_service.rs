//! The gRPC face of the lock service: sessions, acquire (with a server-side
//! wait), release and inspection. The rules themselves live in [`crate::locks`]
//! inside the replicated state machine; this module proposes commands, keeps
//! the leader's record of keep-alives ([`SessionClock`]) and waits for grants.
//!
//! A blocking acquire first proposes `Acquire` (which grants or queues), then
//! waits on the applied-state announcements until the session holds the lock,
//! the session ends, or the call's wait runs out; then it answers "granted" or
//! "still queued". The client asks again with the same request id: the state
//! machine answers the repeat with its first answer, so the request keeps its
//! place, on this leader or the next.

use std::time::{Duration, Instant};

use shoal_core::FsError;
use shoal_proto::meta as pb;
use tonic::{Request, Response as TonicResponse, Status};

use crate::fsm::LockCmd;
use crate::locks::{Acquired, Grant, Mode, Waiter};
use crate::ranges::{RangeAcquired, RangeWaiter};
use crate::service::{MetaService, fs_status, parse_path, request_id};
use crate::sessions::SessionClock;

/// Shortest and longest TTL a session may ask for.
const TTL_MIN: Duration = Duration::from_millis(500);
const TTL_MAX: Duration = Duration::from_secs(600);
/// Longest a single acquire call waits on the server before answering.
const WAIT_PER_CALL_MAX: Duration = Duration::from_secs(2);
/// How often the leader looks for sessions that went silent.
const EXPIRY_SCAN_EVERY: Duration = Duration::from_millis(100);

type Reply<T> = Result<TonicResponse<T>, Status>;

fn entry(session: u64, mode: Mode, token: u64, ticket: u64) -> pb::LockEntry {
    pb::LockEntry { session, shared: mode == Mode::Shared, token, ticket, range: None }
}

/// The reply for a byte-range request: granted or still queued, with its
/// ticket (no token: byte ranges fence nothing).
fn range_reply(granted: bool, mode: Mode, ticket: u64) -> pb::AcquireReply {
    pb::AcquireReply { granted, token: 0, ticket, shared: Some(mode == Mode::Shared) }
}

/// The reply for a grant, in the mode granted (not necessarily the one asked for).
fn granted(g: Grant) -> pb::AcquireReply {
    pb::AcquireReply { granted: true, token: g.token, ticket: g.ticket, shared: Some(g.mode == Mode::Shared) }
}

fn queued(w: Waiter) -> pb::AcquireReply {
    pb::AcquireReply { granted: false, token: 0, ticket: w.ticket, shared: Some(w.mode == Mode::Shared) }
}

impl MetaService {
    /// Waits on the applied state until `answer` gives the reply (it is
    /// asked at once, then after every apply), or `until`: then the reply is
    /// `still_queued`. A session that ended answers `SessionExpired`.
    async fn wait_on_state(
        &self,
        session: u64,
        until: Instant,
        still_queued: pb::AcquireReply,
        answer: impl Fn(&crate::fsm::FsState) -> Option<Reply<pb::AcquireReply>>,
    ) -> Reply<pb::AcquireReply> {
        let mut changes = self.node.state.subscribe();
        loop {
            {
                let s = self.node.state.read();
                if let Some(reply) = answer(&s.fs) {
                    return reply;
                }
                if !s.fs.sessions.contains_key(&session) {
                    return Err(fs_status(FsError::SessionExpired { session }));
                }
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() {
                    return Err(Status::unavailable("meta node is shutting down"));
                },
                _ = tokio::time::sleep_until(until.into()) => return Ok(TonicResponse::new(still_queued)),
            }
        }
    }

    /// Waits until `session` holds `path`, the session ends, or `until`.
    async fn wait_for_grant(
        &self,
        session: u64,
        path: &str,
        waiter: Waiter,
        until: Instant,
    ) -> Reply<pb::AcquireReply> {
        self.wait_on_state(session, until, queued(waiter), |fs| {
            fs.locks.held(path, session).map(|g| Ok(TonicResponse::new(granted(g))))
        })
        .await
    }

    /// Waits until `session`'s byte-range request `waiter` is granted, the
    /// session ends, or `until`. A request that left the queue is granted
    /// if the session holds its bytes in its mode; else it was withdrawn
    /// (by its session: a close, another thread's give-up) and the answer
    /// says so (`NotLocked`).
    async fn wait_for_range(
        &self,
        session: u64,
        path: &str,
        waiter: RangeWaiter,
        until: Instant,
    ) -> Reply<pb::AcquireReply> {
        let still_queued = range_reply(false, waiter.mode, waiter.ticket);
        self.wait_on_state(session, until, still_queued, |fs| {
            if !fs.sessions.contains_key(&session) || fs.ranges.queued(path, session, waiter.ticket) {
                return None;
            }
            Some(if fs.ranges.covers(path, session, waiter.mode, waiter.start, waiter.end) {
                Ok(TonicResponse::new(range_reply(true, waiter.mode, waiter.ticket)))
            } else {
                Err(fs_status(FsError::NotLocked { path: path.to_string() }))
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl pb::locks_server::Locks for MetaService {
    async fn open_session(&self, req: Request<pb::OpenSessionRequest>) -> Reply<pb::SessionReply> {
        let r = req.into_inner();
        let ttl = Duration::from_millis(r.ttl_ms);
        if !(TTL_MIN..=TTL_MAX).contains(&ttl) {
            return Err(fs_status(FsError::InvalidArgument {
                reason: format!("a session TTL must be between {TTL_MIN:?} and {TTL_MAX:?}, got {ttl:?}"),
            }));
        }
        let opened = self.node.write(LockCmd::OpenSession { ttl_ms: r.ttl_ms }, request_id(r.request)).await?;
        let id = opened.into_session().map_err(fs_status)?;
        self.sessions.touch(id, Instant::now());
        Ok(TonicResponse::new(pb::SessionReply { session: id, ttl_ms: r.ttl_ms }))
    }

    async fn keep_alive(&self, req: Request<pb::SessionRequest>) -> Reply<pb::Empty> {
        let session = req.into_inner().session;
        self.node.leader_only()?;
        if !self.node.state.read().fs.sessions.contains_key(&session) {
            return Err(fs_status(FsError::SessionExpired { session }));
        }
        self.sessions.touch(session, Instant::now());
        Ok(TonicResponse::new(pb::Empty {}))
    }

    async fn close_session(&self, req: Request<pb::SessionRequest>) -> Reply<pb::Empty> {
        let r = req.into_inner();
        // The expiry scan forgets its clock entry (a keep-alive racing with
        // this end could make it again).
        self.write_ok(LockCmd::EndSession { session: r.session }, request_id(r.request)).await?;
        Ok(TonicResponse::new(pb::Empty {}))
    }

    async fn acquire(&self, req: Request<pb::AcquireRequest>) -> Reply<pb::AcquireReply> {
        let r = req.into_inner();
        let until = Instant::now() + Duration::from_millis(r.wait_ms).min(WAIT_PER_CALL_MAX);
        let path = parse_path(&r.path)?;
        let mode = if r.shared { Mode::Shared } else { Mode::Exclusive };
        if let Some(range) = r.range {
            let cmd = LockCmd::AcquireRange {
                session: r.session,
                path: path.clone(),
                mode,
                start: range.start,
                end: range.end,
                wait: r.wait,
            };
            let outcome = self.node.write(cmd, request_id(r.request)).await?.into_range().map_err(fs_status)?;
            self.sessions.touch(r.session, Instant::now());
            return match outcome {
                RangeAcquired::Granted { ticket } => Ok(TonicResponse::new(range_reply(true, mode, ticket))),
                RangeAcquired::Queued(w) => self.wait_for_range(r.session, &path.to_string(), w, until).await,
                // The state machine answers these with errors; named here for completeness.
                RangeAcquired::WouldBlock => Err(fs_status(FsError::WouldBlock { path: path.to_string() })),
                RangeAcquired::TooMany => Err(fs_status(crate::ranges::too_many(&path))),
            };
        }
        let cmd = LockCmd::Acquire { session: r.session, path: path.clone(), mode, wait: r.wait };
        let outcome = self.node.write(cmd, request_id(r.request)).await?.into_lock().map_err(fs_status)?;
        // Asking for a lock is a sign of life too.
        self.sessions.touch(r.session, Instant::now());
        match outcome {
            Acquired::Granted(g) => Ok(TonicResponse::new(granted(g))),
            Acquired::Queued(w) => self.wait_for_grant(r.session, &path.to_string(), w, until).await,
            // The state machine answers these with errors; named here for completeness.
            Acquired::WouldBlock => Err(fs_status(FsError::WouldBlock { path: path.to_string() })),
            Acquired::CannotUpgrade => Err(fs_status(FsError::LockUpgrade { path: path.to_string() })),
        }
    }

    async fn release(&self, req: Request<pb::ReleaseRequest>) -> Reply<pb::Empty> {
        let r = req.into_inner();
        let path = parse_path(&r.path)?;
        let session = r.session;
        let cmd = match r.range {
            _ if r.cancel => LockCmd::CancelRange { session, path, ticket: r.ticket },
            Some(range) => LockCmd::ReleaseRange { session, path, start: range.start, end: range.end },
            None => LockCmd::Release { session, path },
        };
        self.write_ok(cmd, request_id(r.request)).await?;
        Ok(TonicResponse::new(pb::Empty {}))
    }

    async fn inspect(&self, req: Request<pb::PathRequest>) -> Reply<pb::LockInfo> {
        let path = parse_path(&req.into_inner().path)?.to_string();
        self.node.linearizable().await?;
        let s = self.node.state.read();
        Ok(TonicResponse::new(path_info(&s.fs, &path)))
    }

    async fn list(&self, req: Request<pb::ListLocksRequest>) -> Reply<pb::LockList> {
        let req = req.into_inner();
        let limit = if req.limit == 0 { LIST_LOCKS_MAX } else { (req.limit as usize).min(LIST_LOCKS_MAX) };
        self.node.linearizable().await?;
        let s = self.node.state.read();
        // Paths with a whole-path lock or byte ranges (or both), in order.
        let prefix = &req.prefix;
        let starts = |p: &&String| p.starts_with(prefix.as_str());
        let mut matching: Vec<String> =
            s.fs.locks.paths.range(prefix.clone()..).map(|(p, _)| p).take_while(starts).cloned().collect();
        matching.extend(s.fs.ranges.paths.range(prefix.clone()..).map(|(p, _)| p).take_while(starts).cloned());
        matching.sort();
        matching.dedup();
        let mut list = pb::LockList::default();
        let mut bytes = 0;
        for path in matching {
            let info = path_info(&s.fs, &path);
            let entries = info.holders.len() + info.queue.len() + info.range_holders.len() + info.range_queue.len();
            // About what the row encodes to: the path, and a few varints per entry.
            bytes += path.len() + 16 + 40 * entries;
            let row = pb::LockedPath { path, info: Some(info) };
            if list.paths.len() == limit || (bytes > LIST_LOCKS_MAX_BYTES && !list.paths.is_empty()) {
                list.truncated = true;
                break;
            }
            list.paths.push(row);
        }
        Ok(TonicResponse::new(list))
    }
}

/// The most locked paths one `List` answers with.
const LIST_LOCKS_MAX: usize = 10_000;
/// About the largest reply of `List` (well under a client's 4 MiB decode
/// limit): long queues make big rows.
const LIST_LOCKS_MAX_BYTES: usize = 2 << 20;

/// A path's whole-path lock and byte ranges: holders and queues.
fn path_info(fs: &crate::fsm::FsState, path: &str) -> pb::LockInfo {
    let mut info = fs.locks.paths.get(path).map(lock_info).unwrap_or_default();
    if let Some(p) = fs.ranges.paths.get(path) {
        let range = |start, end| Some(pb::ByteRange { start, end });
        info.range_holders = p
            .holds
            .iter()
            .map(|h| pb::LockEntry { range: range(h.start, h.end), ..entry(h.session, h.mode, 0, 0) })
            .collect();
        info.range_queue = p
            .queue
            .iter()
            .map(|w| pb::LockEntry { range: range(w.start, w.end), ..entry(w.session, w.mode, 0, w.ticket) })
            .collect();
    }
    info
}

/// A path's holders (in grant order) and queue (in arrival order).
fn lock_info(l: &crate::locks::PathLock) -> pb::LockInfo {
    pb::LockInfo {
        holders: l.holders.iter().map(|g| entry(g.session, g.mode, g.token, g.ticket)).collect(),
        queue: l.queue.iter().map(|w| entry(w.session, w.mode, 0, w.ticket)).collect(),
        ..Default::default()
    }
}

/// On the leader, ends every session that stayed silent past its TTL.
pub fn spawn_session_expiry(service: MetaService, clock: std::sync::Arc<SessionClock>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_SCAN_EVERY);
        loop {
            tick.tick().await;
            let now = Instant::now();
            let silent: Vec<u64> = {
                let s = service.node.state.read();
                clock.retain(|session| s.fs.sessions.contains_key(&session));
                s.fs.sessions
                    .iter()
                    .filter(|(id, rec)| clock.expired(**id, Duration::from_millis(rec.ttl_ms), now))
                    .map(|(id, _)| *id)
                    .collect()
            };
            for session in silent {
                tracing::info!(session, "lock session expired; releasing its locks");
                // Its clock entry goes at the next scan that finds it ended.
                let _ = service.write_ok(LockCmd::EndSession { session }, None).await;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_carry_the_mode_held() {
        let g = Grant { session: 1, mode: Mode::Exclusive, token: 7, ticket: 3 };
        assert_eq!(granted(g), pb::AcquireReply { granted: true, token: 7, ticket: 3, shared: Some(false) });
        let w = Waiter { session: 1, mode: Mode::Shared, ticket: 4 };
        assert_eq!(queued(w), pb::AcquireReply { granted: false, token: 0, ticket: 4, shared: Some(true) });
    }
}
