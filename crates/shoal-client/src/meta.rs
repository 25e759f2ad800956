//! Calls to the meta group that follow the leader and retry.
//!
//! The caller gives every meta address. A call goes to the last known leader
//! (at first, the first address); an `UNAVAILABLE` answer carrying a leader
//! hint moves it there at once, any other unavailability moves to the next
//! address after a short, doubling backoff (and the next call, while no
//! leader is known, starts there too). The whole call gives up after the
//! configured timeout with an error naming every address tried.
//!
//! Retrying is safe for mutations too: each carries a request id (see
//! `request`) and meta's state machine applies an id at most once.
//!
//! The pauses are short (at most [`BACKOFF_MAX`]) so that a client resumes
//! within a few hundred milliseconds of a new leader being elected, and one
//! attempt may take at most [`ATTEMPT_TIMEOUT_MAX`], so that a stalled (not
//! dead) leader costs a bounded wait before the others are tried.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::pool::ChannelPool;
use crate::{ClientError, Transport};

/// First pause between attempts on different meta nodes.
const BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_millis(100);
/// Longest any single attempt may take.
const ATTEMPT_TIMEOUT_MAX: Duration = Duration::from_secs(3);

pub struct MetaConn {
    addrs: Vec<String>,
    pool: ChannelPool,
    leader: Mutex<Option<String>>,
    /// Where a call starts when no leader is known: the address after the
    /// last one that failed, so calls do not all begin at a node that does
    /// not answer (a short timeout would spend itself there each time).
    next: std::sync::atomic::AtomicUsize,
    timeout: Duration,
}

enum Next {
    Leader(String),
    Another,
}

/// A status's message and the chain of errors under it (for a connection
/// that failed, the cause: refused, a TLS certificate the peer would not
/// take, ...).
fn describe(status: &Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

fn classify(s: &Status) -> Option<Next> {
    match s.code() {
        Code::Unavailable => match s.metadata().get(shoal_proto::LEADER_KEY).and_then(|v| v.to_str().ok()) {
            Some(hint) if !hint.is_empty() => Some(Next::Leader(hint.to_string())),
            _ => Some(Next::Another),
        },
        Code::Unknown | Code::Cancelled | Code::DeadlineExceeded | Code::Aborted => Some(Next::Another),
        _ => None,
    }
}

impl MetaConn {
    /// The meta addresses it was given, and its timeout.
    pub fn settings(&self) -> (&[String], Duration) {
        (&self.addrs, self.timeout)
    }

    /// A connection to the meta group at `addrs` through `transport`;
    /// nothing is dialed yet.
    pub fn new(addrs: Vec<String>, timeout: Duration, transport: Transport) -> Result<MetaConn, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::InvalidArgument("no meta address given".into()));
        }
        let pool = ChannelPool::with_transport(transport);
        for a in &addrs {
            pool.get(a)?;
        }
        Ok(MetaConn { addrs, pool, leader: Mutex::new(None), next: Default::default(), timeout })
    }

    /// The channel pool, for calls that must reach one particular node.
    pub fn pool(&self) -> &ChannelPool {
        &self.pool
    }

    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Forgets the leader after `addr` failed, and starts the next attempt
    /// (of this call or the next) at the address after it.
    fn failed(&self, addr: &str) {
        *self.leader.lock().expect("leader lock") = None;
        if let Some(i) = self.addrs.iter().position(|a| a == addr) {
            self.next.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Runs `f` against the leader, following hints and retrying until the timeout.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = BACKOFF_MIN;
        let mut last = String::new();
        loop {
            let addr = self.leader.lock().expect("leader lock").clone().unwrap_or_else(|| {
                self.addrs[self.next.load(std::sync::atomic::Ordering::Relaxed) % self.addrs.len()].clone()
            });
            let remaining = deadline.saturating_duration_since(Instant::now());
            let channel = self.pool.get(&addr)?;
            let outcome = tokio::time::timeout(remaining.min(ATTEMPT_TIMEOUT_MAX), f(channel)).await;
            let wait = match outcome {
                Ok(Ok(v)) => {
                    *self.leader.lock().expect("leader lock") = Some(addr);
                    return Ok(v);
                }
                Ok(Err(status)) => match classify(&status) {
                    Some(Next::Leader(hint)) if hint != addr => {
                        last = format!("{addr}: {}", describe(&status));
                        *self.leader.lock().expect("leader lock") = Some(hint);
                        false
                    }
                    Some(Next::Leader(_)) | Some(Next::Another) => {
                        last = format!("{addr}: {}", describe(&status));
                        self.failed(&addr);
                        true
                    }
                    None => return Err(ClientError::from_status(&status)),
                },
                Err(_) => {
                    // Keep what this address said before, if it said why.
                    if !last.starts_with(&format!("{addr}: ")) {
                        last = format!("{addr}: no answer in time");
                    }
                    self.failed(&addr);
                    true
                }
            };
            if Instant::now() >= deadline {
                return Err(ClientError::MetaUnreachable {
                    addrs: self.addrs.join(","),
                    timeout_ms: self.timeout.as_millis() as u64,
                    last,
                });
            }
            if wait {
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
