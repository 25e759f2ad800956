//! Lock sessions and locks, as the client sees them.
//!
//! A [`Session`] is opened with a TTL and kept alive by a background task
//! (three beats per TTL). Its locks are held until released, until the session
//! is closed, or until meta expires the session because the beats stopped
//! (the process died or was paused): then its locks pass to the next waiters.
//!
//! A blocking [`Session::lock`] waits on the server: each call waits there up
//! to a couple of seconds and is then asked again under the same request id,
//! so the request keeps its place in the queue across calls and across a
//! change of meta leader. A [`Lock`] carries the fencing token that writes
//! made under it present (see [`crate::File::set_fence`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use shoal_core::FsError;
use shoal_proto::meta as pb;
use shoal_proto::meta::locks_client::LocksClient;
use tokio::task::JoinHandle;

use crate::{Client, ClientError, Result};

/// A session's TTL unless the caller picks one.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(10);
/// How long one acquire call may wait on the server.
const WAIT_PER_CALL: Duration = Duration::from_secs(2);

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub path: String,
    pub shared: bool,
    /// The fencing token: only grows from grant to grant.
    pub token: u64,
    /// The request's place in arrival order.
    pub ticket: u64,
}

impl Lock {
    /// The proof a write under this lock carries.
    pub fn fence(&self) -> pb::Fence {
        pb::Fence { path: self.path.clone(), token: self.token }
    }
}

/// A held byte range of a path (a POSIX record lock): bytes
/// `start..=end`, in its mode. Byte ranges carry no fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeLock {
    pub path: String,
    pub shared: bool,
    pub start: u64,
    /// Inclusive; `u64::MAX` runs to the end of any file.
    pub end: u64,
    /// The request's place in arrival order.
    pub ticket: u64,
}

/// An open lock session; dropping it stops the keep-alives (the session
/// then expires after its TTL), [`Session::close`] ends it at once.
pub struct Session {
    client: Client,
    id: u64,
    alive: Arc<AtomicBool>,
    keepalive: Option<JoinHandle<()>>,
}

impl Client {
    pub(crate) async fn locks<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(LocksClient<tonic::transport::Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        Ok(self.inner.meta.call(|ch| f(LocksClient::new(ch))).await?.into_inner())
    }

    /// Opens a lock session with `ttl` and starts keeping it alive.
    pub async fn open_session(&self, ttl: Duration) -> Result<Session> {
        let pending = self.inner.requests.begin();
        let req = pb::OpenSessionRequest { ttl_ms: ttl.as_millis() as u64, request: Some(pending.id) };
        let reply = self.locks(|mut c| async move { c.open_session(req).await }).await?;
        let alive = Arc::new(AtomicBool::new(true));
        let keepalive = tokio::spawn(keep_alive(self.clone(), reply.session, ttl / 3, alive.clone()));
        Ok(Session { client: self.clone(), id: reply.session, alive, keepalive: Some(keepalive) })
    }

    /// The holders and the queue of `path`'s lock.
    pub async fn lock_info(&self, path: &str) -> Result<pb::LockInfo> {
        let req = pb::PathRequest { path: path.to_string(), xattrs: false, inode: 0 };
        self.locks(|mut c| {
            let req = req.clone();
            async move { c.inspect(req).await }
        })
        .await
    }

    /// Every locked path (holders or waiters) that starts with `prefix`, in
    /// path order, at most `limit` (0: the server's bound).
    pub async fn lock_table(&self, prefix: &str, limit: u32) -> Result<pb::LockList> {
        let req = pb::ListLocksRequest { limit, prefix: prefix.to_string() };
        self.locks(|mut c| {
            let req = req.clone();
            async move { c.list(req).await }
        })
        .await
    }
}

async fn keep_alive(client: Client, session: u64, every: Duration, alive: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let beat =
            client.locks(|mut c| async move { c.keep_alive(pb::SessionRequest { session, request: None }).await });
        match beat.await {
            Ok(_) => {}
            Err(ClientError::Fs(FsError::SessionExpired { .. })) => {
                alive.store(false, Ordering::Relaxed);
                tracing::warn!(session, "lock session expired; its locks are gone");
                return;
            }
            Err(e) => tracing::warn!(session, "keep-alive failed, will retry: {e}"),
        }
    }
}

impl Session {
    pub fn id(&self) -> u64 {
        self.id
    }

    /// False once a keep-alive learned that meta expired the session.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    async fn acquire(
        &self,
        path: &str,
        shared: bool,
        wait: bool,
        wait_ms: u64,
        request: pb::RequestId,
    ) -> Result<pb::AcquireReply> {
        self.acquire_in(path, shared, None, wait, wait_ms, request).await
    }

    /// An acquire call, of `path`'s lock or (with `range`) of its bytes.
    async fn acquire_in(
        &self,
        path: &str,
        shared: bool,
        range: Option<(u64, u64)>,
        wait: bool,
        wait_ms: u64,
        request: pb::RequestId,
    ) -> Result<pb::AcquireReply> {
        let req = pb::AcquireRequest {
            session: self.id,
            path: path.to_string(),
            shared,
            wait,
            wait_ms,
            range: range.map(|(start, end)| pb::ByteRange { start, end }),
            request: Some(request),
        };
        self.client
            .locks(|mut c| {
                let req = req.clone();
                async move { c.acquire(req).await }
            })
            .await
    }

    /// Waits (FIFO) for `path`'s lock, at most `timeout` if given.
    pub async fn lock(&self, path: &str, shared: bool, timeout: Option<Duration>) -> Result<Lock> {
        let start = Instant::now();
        let pending = self.client.inner.requests.begin();
        loop {
            let left = timeout.map_or(WAIT_PER_CALL, |t| t.saturating_sub(start.elapsed()).min(WAIT_PER_CALL));
            let reply = self.acquire(path, shared, true, left.as_millis() as u64, pending.id).await?;
            if let Some(lock) = granted_lock(path, shared, &reply) {
                return Ok(lock);
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                // Leave the queue (or let go of a grant that raced the timeout).
                self.release(path).await.ok();
                return Err(FsError::LockTimeout {
                    path: path.to_string(),
                    waited_ms: start.elapsed().as_millis() as u64,
                }
                .into());
            }
        }
    }

    /// Waits (FIFO) for `path`'s lock while `keep_waiting` says so: it is
    /// asked between server calls (each waits at most a couple of seconds).
    /// `None` once it said stop: the request then left the queue (a grant
    /// that raced the stop is let go of too).
    pub async fn lock_while(
        &self,
        path: &str,
        shared: bool,
        mut keep_waiting: impl FnMut() -> bool,
    ) -> Result<Option<Lock>> {
        let pending = self.client.inner.requests.begin();
        loop {
            let reply = self.acquire(path, shared, true, WAIT_PER_CALL.as_millis() as u64, pending.id).await?;
            if let Some(lock) = granted_lock(path, shared, &reply) {
                return Ok(Some(lock));
            }
            if !keep_waiting() {
                self.release(path).await.ok();
                return Ok(None);
            }
        }
    }

    /// Takes `path`'s lock only if that needs no wait. `None` when it would
    /// have to wait, or when this session already waits for it (a request
    /// that keeps its place in the queue).
    pub async fn try_lock(&self, path: &str, shared: bool) -> Result<Option<Lock>> {
        let pending = self.client.inner.requests.begin();
        match self.acquire(path, shared, false, 0, pending.id).await {
            Ok(r) => Ok(granted_lock(path, shared, &r)),
            Err(ClientError::Fs(FsError::WouldBlock { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Releases `lock`.
    pub async fn unlock(&self, lock: &Lock) -> Result<()> {
        self.release(&lock.path).await
    }

    /// Leaves `path`'s queue or lets go of its lock, whichever this session
    /// has: for a request whose answer was lost (an error or a timeout),
    /// which may still wait there or have been granted.
    pub async fn abandon(&self, path: &str) -> Result<()> {
        self.release(path).await
    }

    /// Waits (FIFO) for bytes `start..=end` of `path` while `keep_waiting`
    /// says so (asked between server calls, each a couple of seconds at
    /// most): what the session held inside the range is replaced by the new
    /// mode, atomically. `None` once it said stop: the request then left the
    /// queue. (A grant that raced the stop stays held, until the session
    /// unlocks those bytes: letting it go could drop locks held before.) A
    /// call that fails after the request queued withdraws it (its ticket
    /// only: other requests of the session stay).
    pub async fn lock_range_while(
        &self,
        path: &str,
        shared: bool,
        start: u64,
        end: u64,
        mut keep_waiting: impl FnMut() -> bool,
    ) -> Result<Option<RangeLock>> {
        let pending = self.client.inner.requests.begin();
        let mut ticket = None;
        loop {
            let wait_ms = WAIT_PER_CALL.as_millis() as u64;
            let reply = match self.acquire_in(path, shared, Some((start, end)), true, wait_ms, pending.id).await {
                Ok(r) => r,
                Err(e) => {
                    if let Some(t) = ticket {
                        self.cancel_range(path, t).await.ok();
                    }
                    return Err(e);
                }
            };
            ticket = Some(reply.ticket);
            if reply.granted {
                return Ok(Some(RangeLock { path: path.to_string(), shared, start, end, ticket: reply.ticket }));
            }
            if !keep_waiting() {
                self.cancel_range(path, reply.ticket).await.ok();
                return Ok(None);
            }
        }
    }

    /// Takes bytes `start..=end` of `path` only if that needs no wait
    /// (`None` otherwise; nothing changed then).
    pub async fn try_lock_range(&self, path: &str, shared: bool, start: u64, end: u64) -> Result<Option<RangeLock>> {
        let pending = self.client.inner.requests.begin();
        match self.acquire_in(path, shared, Some((start, end)), false, 0, pending.id).await {
            Ok(r) if r.granted => Ok(Some(RangeLock { path: path.to_string(), shared, start, end, ticket: r.ticket })),
            Ok(_) | Err(ClientError::Fs(FsError::WouldBlock { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Unlocks bytes `start..=end` of the session's byte-range locks on `path`.
    pub async fn unlock_range(&self, path: &str, start: u64, end: u64) -> Result<()> {
        self.release_in(path, Some((start, end)), None).await
    }

    /// Leaves `path`'s byte-range queue: request `ticket`, or with 0 every
    /// request of this session queued there (what it holds stays).
    pub async fn cancel_range(&self, path: &str, ticket: u64) -> Result<()> {
        self.release_in(path, None, Some(ticket)).await
    }

    async fn release(&self, path: &str) -> Result<()> {
        self.release_in(path, None, None).await
    }

    async fn release_in(&self, path: &str, range: Option<(u64, u64)>, cancel: Option<u64>) -> Result<()> {
        let pending = self.client.inner.requests.begin();
        let req = pb::ReleaseRequest {
            session: self.id,
            path: path.to_string(),
            range: range.map(|(start, end)| pb::ByteRange { start, end }),
            ticket: cancel.unwrap_or(0),
            cancel: cancel.is_some(),
            request: Some(pending.id),
        };
        self.client
            .locks(|mut c| {
                let req = req.clone();
                async move { c.release(req).await }
            })
            .await
            .map(|_| ())
    }

    /// Ends the session: every lock it holds is released at once.
    pub async fn close(mut self) -> Result<()> {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        let pending = self.client.inner.requests.begin();
        let req = pb::SessionRequest { session: self.id, request: Some(pending.id) };
        self.client.locks(|mut c| async move { c.close_session(req).await }).await.map(|_| ())
    }
}

/// The lock an acquire reply grants, if it grants one, in the mode meta
/// granted: that may be stronger than the one asked for (a session that holds
/// the lock exclusive keeps it so). A server that predates the mode field
/// granted the mode asked for.
fn granted_lock(path: &str, asked_shared: bool, reply: &pb::AcquireReply) -> Option<Lock> {
    reply.granted.then(|| Lock {
        path: path.to_string(),
        shared: reply.shared.unwrap_or(asked_shared),
        token: reply.token,
        ticket: reply.ticket,
    })
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (review): the client stamped the mode it asked for, so a
    /// grant in another mode went unnoticed.
    #[test]
    fn a_lock_has_the_mode_granted() {
        let reply = pb::AcquireReply { granted: true, token: 9, ticket: 2, shared: Some(false) };
        let lock = granted_lock("/f", true, &reply).expect("granted");
        assert_eq!(lock, Lock { path: "/f".into(), shared: false, token: 9, ticket: 2 });
        let old_server = pb::AcquireReply { shared: None, ..reply };
        assert!(granted_lock("/f", true, &old_server).unwrap().shared);
    }

    /// Regression (review): `try_lock` ignored `granted`, so a request this
    /// session already had queued came back as a lock with token 0.
    #[test]
    fn a_queued_request_is_not_a_lock() {
        let reply = pb::AcquireReply { granted: false, token: 0, ticket: 5, shared: Some(true) };
        assert_eq!(granted_lock("/f", true, &reply), None);
    }
}
