//! Request deduplication: a mutation retried after a lost answer or a leader
//! change applies once.
//!
//! # Invariants kept here
//! - A proposal that carries a [`RequestId`] applies at most once: while its
//!   client has not confirmed the answer (`done_below`), a repeat of the same
//!   id gets the first answer back and changes nothing.
//! - A client keeps answers only for seqs at or above its `done_below`; a
//!   request below it is a stray copy and is refused without effect.
//! - A client silent for [`CLIENT_IDLE_EXPIRY_MS`] of leader time is forgotten.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_core::FsError;

use super::{FsState, Response};

/// Names one client request across retries (see the module invariants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub seq: u64,
    /// The client has the answers of all its requests below this seq.
    pub done_below: u64,
}

/// How long a client may stay silent before meta forgets its request answers.
pub const CLIENT_IDLE_EXPIRY_MS: u64 = 10 * 60 * 1000;
/// How often, in leader time, idle clients are looked for.
const CLIENT_SWEEP_EVERY_MS: u64 = 60 * 1000;

/// The answers meta still keeps for one client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub done_below: u64,
    pub last_ms: u64,
    /// Seq to the answer its first application gave.
    pub replies: BTreeMap<u64, Response>,
}

/// What the dedup table says about a request before it is applied.
pub(super) enum Seen {
    /// Apply it, then [`FsState::remember`] its answer.
    New,
    /// Answer this without applying anything.
    Answered(Box<Response>),
}

impl FsState {
    /// Records that `req` arrived at leader time `now_ms` and says whether it
    /// must be applied.
    pub(super) fn check_request(&mut self, req: RequestId, now_ms: u64) -> Seen {
        self.sweep_idle_clients(now_ms);
        let record = self.clients.entry(req.client).or_default();
        record.last_ms = now_ms;
        if req.done_below > record.done_below {
            record.done_below = req.done_below;
            record.replies = record.replies.split_off(&req.done_below);
        }
        if let Some(first) = record.replies.get(&req.seq) {
            return Seen::Answered(Box::new(first.clone()));
        }
        if req.seq < record.done_below {
            // The client already has this request's answer; this is a stray copy.
            return Seen::Answered(Box::new(Response::Err(FsError::InvalidArgument {
                reason: format!("request {} of client {:x} was already answered", req.seq, req.client),
            })));
        }
        Seen::New
    }

    /// Keeps the first answer to `req`. A conflict changed nothing and is
    /// re-planned under the same id, so it is not kept.
    pub(super) fn remember(&mut self, req: RequestId, response: &Response) {
        if *response != Response::Conflict {
            let record = self.clients.get_mut(&req.client).expect("checked before applying");
            record.replies.insert(req.seq, response.clone());
        }
    }

    pub(super) fn sweep_idle_clients(&mut self, now_ms: u64) {
        if now_ms < self.next_client_sweep_ms {
            return;
        }
        self.clients.retain(|_, c| c.last_ms.saturating_add(CLIENT_IDLE_EXPIRY_MS) > now_ms);
        self.next_client_sweep_ms = now_ms.saturating_add(CLIENT_SWEEP_EVERY_MS);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{p, run};
    use super::super::{NamespaceCmd, Proposal};
    use super::*;

    #[test]
    fn retried_requests_apply_once() {
        let mut st = FsState::default();
        let req = |seq, done_below| Some(RequestId { client: 7, seq, done_below });
        let mkdir = |request| Proposal::new(5, request, NamespaceCmd::Mkdir { path: p("/d"), parents: false });
        let first = st.apply(&mkdir(req(1, 1)));
        assert!(matches!(first, Response::Inode(_)));
        let after_first = st.clone();
        // The same request again (a retry after a lost answer): the first answer, no change.
        assert_eq!(st.apply(&mkdir(req(1, 1))), first);
        assert_eq!(st, after_first);
        // A new request for the same thing is a real second attempt.
        assert_eq!(st.apply(&mkdir(req(2, 1))), Response::Err(FsError::AlreadyExists { path: "/d".into() }));
        // Once the client says it has answers below 3, they are forgotten, and
        // a stray copy of an answered request is refused without effect.
        st.apply(&mkdir(req(3, 3)));
        assert_eq!(st.clients[&7].replies.keys().copied().collect::<Vec<_>>(), vec![3]);
        let before = st.clone();
        assert!(matches!(st.apply(&mkdir(req(1, 3))), Response::Err(FsError::InvalidArgument { .. })));
        assert_eq!(st.clients[&7].replies, before.clients[&7].replies);
        // An idle client is forgotten after the expiry.
        run(&mut st, NamespaceCmd::Mkdir { path: p("/e"), parents: false });
        st.apply(&Proposal::new(
            5 + CLIENT_IDLE_EXPIRY_MS + 1,
            None,
            NamespaceCmd::Mkdir { path: p("/x"), parents: false },
        ));
        assert!(st.clients.is_empty());
    }
}
