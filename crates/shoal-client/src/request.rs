//! Request ids for meta mutations, so that a retry never applies twice.
//!
//! Each [`Client`](crate::Client) draws a random client id and numbers its
//! mutations. A mutation keeps its id for every retry (after a timeout, a lost
//! answer or a leader change); meta's state machine answers a repeated id with
//! the first answer. Each id also tells meta the lowest seq still waiting for
//! an answer (`done_below`), so meta can forget the answers below it.

use std::collections::BTreeSet;
use std::sync::Mutex;

use shoal_proto::meta as pb;

/// Hands out request ids and tracks which are still waiting for an answer.
pub(crate) struct RequestIds {
    client: u64,
    state: Mutex<Numbering>,
}

struct Numbering {
    next: u64,
    open: BTreeSet<u64>,
}

/// A request in flight; dropping it (answer or give-up) closes it.
pub(crate) struct Pending<'a> {
    ids: &'a RequestIds,
    pub id: pb::RequestId,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        // A fresh, random client id (from the OS-seeded thread generator).
        let client = rand::random::<u64>();
        RequestIds { client, state: Mutex::new(Numbering { next: 1, open: BTreeSet::new() }) }
    }

    /// Opens a new request.
    pub fn begin(&self) -> Pending<'_> {
        let mut s = self.state.lock().expect("request ids lock");
        let seq = s.next;
        s.next += 1;
        s.open.insert(seq);
        let done_below = *s.open.first().expect("seq was just inserted");
        Pending { ids: self, id: pb::RequestId { client: self.client, seq, done_below } }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.ids.state.lock().expect("request ids lock").open.remove(&self.id.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_below_trails_the_oldest_open_request() {
        let ids = RequestIds::new();
        let a = ids.begin();
        let b = ids.begin();
        assert_eq!((a.id.seq, b.id.done_below), (1, 1));
        drop(a);
        let c = ids.begin();
        assert_eq!((c.id.seq, c.id.done_below), (3, 2));
        drop(b);
        drop(c);
        assert_eq!(ids.begin().id.done_below, 4);
        assert_ne!(RequestIds::new().client, ids.client, "client ids are random");
    }
}
