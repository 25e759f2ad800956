//! Group commit: several client requests in one Raft log entry.
//!
//! The leader gathers the proposals that arrive while earlier ones are being
//! replicated (`crate::node`) and proposes them as one
//! [`Command::Batch`], so they share one log append, one fsync per node and
//! one AppendEntries round. Applying the batch applies each request in order
//! exactly as if it were an entry of its own: its own request id (so
//! deduplication is per request), its own answer, and a refusal that changes
//! nothing of its own; the requests do not depend on each other, and one
//! refused does not refuse the others.
//!
//! # Invariants kept here
//! - A batch never holds a batch. Decoding refuses one (so a crafted entry
//!   cannot recurse deeply) and so does apply.
//! - A batch answers with exactly one response per request, in order.

use std::cell::Cell;

use serde::{Deserialize, Deserializer, Serialize};
use shoal_core::FsError;

use super::{Command, RequestId, Response};

/// One request in a [`Command::Batch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batched {
    pub request: Option<RequestId>,
    #[serde(deserialize_with = "unbatched_command")]
    pub cmd: Command,
}

thread_local! {
    /// Whether this thread is decoding the commands inside a batch.
    static IN_BATCH: Cell<bool> = const { Cell::new(false) };
}

/// Clears [`IN_BATCH`] when dropped, also when decoding panics.
struct InBatch;

impl Drop for InBatch {
    fn drop(&mut self) {
        IN_BATCH.with(|b| b.set(false));
    }
}

/// Decodes a command inside a batch, refusing at once to go a level deeper.
fn unbatched_command<'de, D: Deserializer<'de>>(d: D) -> Result<Command, D::Error> {
    if IN_BATCH.with(|b| b.replace(true)) {
        return Err(serde::de::Error::custom("a batch inside a batch"));
    }
    let _clear = InBatch;
    Command::deserialize(d)
}

/// The refusal of a batch found inside a batch.
pub(super) fn nested() -> FsError {
    FsError::InvalidArgument { reason: "a batch cannot hold a batch".into() }
}

/// The refusal of a batch proposed with a request id of its own (its
/// requests carry theirs).
pub(super) fn request_on_batch() -> FsError {
    FsError::InvalidArgument { reason: "a batch carries no request id of its own".into() }
}

/// The answer to each of the `n` requests of a batch, given the batch's
/// answer: its list, or (for a batch refused whole) that refusal for each.
pub fn split(answer: Response, n: usize) -> Vec<Response> {
    match answer {
        Response::Batch(answers) if answers.len() == n => answers,
        Response::Err(e) => vec![Response::Err(e); n],
        other => {
            let reason = format!("a batch of {n} requests answered {other:?}");
            vec![Response::Err(FsError::InvalidArgument { reason }); n]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{create, p, run, with_servers};
    use super::super::{FsState, NamespaceCmd, Proposal};
    use super::*;

    fn mkdir(path: &str) -> Command {
        NamespaceCmd::Mkdir { path: p(path), parents: false }.into()
    }

    fn item(seq: u64, cmd: Command) -> Batched {
        Batched { request: Some(RequestId { client: 9, seq, done_below: 0 }), cmd }
    }

    #[test]
    fn a_batch_applies_each_request_as_its_own_entry() {
        let mut one_by_one = with_servers(&[1, 2]);
        let mut batched = one_by_one.clone();
        let items = vec![item(1, mkdir("/a")), item(2, mkdir("/a")), item(3, mkdir("/a/b"))];
        let singles: Vec<Response> =
            items.iter().map(|i| one_by_one.apply(&Proposal::new(5, i.request, i.cmd.clone()))).collect();
        let answer = batched.apply(&Proposal::new(5, None, Command::Batch(items.clone())));
        // The second mkdir is refused alone; the third still applies.
        assert!(matches!(singles[1], Response::Err(FsError::AlreadyExists { .. })), "{singles:?}");
        assert!(matches!(singles[2], Response::Inode(_)));
        assert_eq!(answer, Response::Batch(singles.clone()));
        assert_eq!(batched, one_by_one);
        // Each request is remembered: the same batch again answers as before
        // and changes nothing.
        let again = batched.apply(&Proposal::new(6, None, Command::Batch(items)));
        assert_eq!(split(again, 3), singles);
        assert_eq!(batched.inodes, one_by_one.inodes);
    }

    #[test]
    fn batches_do_not_nest_and_carry_no_request_of_their_own() {
        let mut st = FsState::default();
        create(&mut st, "/f");
        let before = st.clone();
        let inner = Command::Batch(vec![item(1, mkdir("/x"))]);
        let answer = run(&mut st, Command::Batch(vec![item(2, inner)]));
        assert!(matches!(&split(answer, 1)[0], Response::Err(FsError::InvalidArgument { .. })));
        assert_eq!(st.inodes, before.inodes);
        let with_id = Proposal::new(1, Some(RequestId { client: 3, seq: 1, done_below: 0 }), Command::Batch(vec![]));
        assert!(matches!(st.apply(&with_id), Response::Err(FsError::InvalidArgument { .. })));
        assert_eq!(st.inodes, before.inodes);
    }

    #[test]
    fn decoding_refuses_a_batch_inside_a_batch() {
        let flat = Proposal::new(1, None, Command::Batch(vec![item(1, mkdir("/x"))]));
        let bytes = postcard::to_allocvec(&flat).unwrap();
        assert_eq!(postcard::from_bytes::<Proposal>(&bytes).unwrap(), flat);
        let nested = Proposal::new(1, None, Command::Batch(vec![item(2, flat.cmd.clone())]));
        let bytes = postcard::to_allocvec(&nested).unwrap();
        assert!(postcard::from_bytes::<Proposal>(&bytes).is_err());
        // The refusal leaves this thread able to decode the next entry.
        let bytes = postcard::to_allocvec(&flat).unwrap();
        assert_eq!(postcard::from_bytes::<Proposal>(&bytes).unwrap(), flat);
    }

    #[test]
    fn split_gives_one_answer_per_request() {
        assert_eq!(split(Response::Batch(vec![Response::Ok, Response::Conflict]), 2).len(), 2);
        let refused = split(Response::Err(nested()), 3);
        assert_eq!(refused, vec![Response::Err(nested()); 3]);
        assert!(matches!(&split(Response::Ok, 2)[1], Response::Err(FsError::InvalidArgument { .. })));
    }
}
