//! Group commit on the leader: the proposals that arrive while earlier ones
//! are still being replicated go out together, as one log entry.
//!
//! openraft 0.9 appends one entry at a time and waits for its fsync before
//! the next, so under concurrent clients every request used to cost the
//! leader and each follower one append, one fsync and a share of an
//! AppendEntries round. Here every request goes through one queue; a task
//! takes the first one waiting, then everything queued behind it (up to
//! [`BATCH_REQUESTS_MAX`] requests or [`BATCH_BYTES_MAX`] encoded bytes), and
//! proposes it as one [`Command::Batch`] (a lone request goes as itself, so
//! an idle cluster's log looks as before). At most [`IN_FLIGHT_MAX`] entries
//! are in Raft at once, so while they are, new requests gather into the next
//! batch: batches grow with the load, and a lone request waits for nobody.
//!
//! Each request still gets its own answer, its own deduplication and its own
//! refusal (see [`crate::fsm::batch`]). A Raft error (not the leader, no
//! quorum) answers every request of the batch with that error.
//!
//! A batch still unanswered [`ANSWER_GRACE`] after this node's term moved
//! past the one it was proposed in is answered "outcome unknown" (it may
//! have been applied: clients retry under the same request id, which the
//! state machine applies at most once; the node's own proposals, which carry
//! none, are idempotent or take it as failed). openraft 0.9 can leave such a
//! write unanswered for good: a former leader that catches up by installing
//! a snapshot purges the entries it had not applied (the snapshot may hold
//! them) without answering their writers. Before this, the batch then kept
//! its in-flight slot for the life of the process, and with both slots gone
//! a re-elected leader would serve no write at all (the likely cause of
//! t60's rare stalls after a SIGSTOPped leader was elected again).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::TypeConfig;
use crate::fsm::{Batched, Command, Proposal, RequestId, Response, batch};
use crate::metric_names;

/// Most requests in one log entry.
pub const BATCH_REQUESTS_MAX: usize = 128;
/// A batch is closed once its requests' encoded commands reach this many
/// bytes (a request is never split, so one may pass it by up to one request).
/// Small, because AppendEntries carries up to `RAFT_PAYLOAD_ENTRIES_MAX`
/// entries (`crate::server`) as JSON, which can be 4 times the bytes.
pub const BATCH_BYTES_MAX: usize = 64 * 1024;
/// Log entries proposed and not yet answered, at most (an entry answered
/// "outcome unknown" may still be in Raft).
pub const IN_FLIGHT_MAX: usize = 2;
/// How long a batch proposed in an earlier term may still wait for Raft's
/// own answer (applied, or refused when the log is cut back) once this
/// node's term has moved on.
pub const ANSWER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a request was not served: a batch not applied (nothing of it was,
/// except after [`Unapplied::Failed`] for an unknown outcome), or a read
/// whose round failed ([`crate::read_rounds`]).
#[derive(Debug, Clone)]
pub enum Unapplied {
    /// This node does not lead; the leader, if known.
    NotLeader(Option<BasicNode>),
    /// Raft could not commit it (shutting down, storage failed), or its
    /// outcome is unknown (see the module doc).
    Failed(String),
}

/// One request waiting for its batch.
struct Waiting {
    item: Batched,
    bytes: usize,
    reply: oneshot::Sender<Result<Response, Unapplied>>,
}

/// The queue into the batching task. Cloned with the node.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::UnboundedSender<Waiting>,
}

fn shutting_down() -> Unapplied {
    Unapplied::Failed("meta is shutting down".into())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Proposer {
    /// Starts the batching task for `raft`; it ends when every `Proposer` is dropped.
    pub fn start(raft: Raft<TypeConfig>) -> Proposer {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(batch_loop(raft, waiting));
        Proposer { queue }
    }

    /// Proposes `cmd` on behalf of `request`, in the next batch, and waits
    /// until it is applied.
    pub async fn propose(&self, cmd: Command, request: Option<RequestId>) -> Result<Response, Unapplied> {
        let bytes = postcard::serialize_with_flavor(&cmd, postcard::ser_flavors::Size::default()).unwrap_or(0);
        let (reply, answer) = oneshot::channel();
        let item = Batched { request, cmd };
        self.queue.send(Waiting { item, bytes, reply }).map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }
}

/// Takes batches off the queue while fewer than [`IN_FLIGHT_MAX`] are in Raft.
async fn batch_loop(raft: Raft<TypeConfig>, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    while let Some(first) = waiting.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < BATCH_REQUESTS_MAX && bytes < BATCH_BYTES_MAX {
            let Ok(next) = waiting.try_recv() else { break };
            // A caller that gave up while its request queued is not proposed.
            if next.reply.is_closed() {
                continue;
            }
            bytes += next.bytes;
            batch.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            submit(&raft, batch).await;
            drop(permit);
        });
    }
}

/// Proposes one batch and hands each request its answer.
async fn submit(raft: &Raft<TypeConfig>, batch: Vec<Waiting>) {
    metrics::counter!(metric_names::PROPOSED_ENTRIES_TOTAL).increment(1);
    let (items, replies): (Vec<Batched>, Vec<_>) = batch.into_iter().map(|w| (w.item, w.reply)).unzip();
    let n = items.len();
    let proposal = match <[Batched; 1]>::try_from(items) {
        Ok([one]) => Proposal::new(now_ms(), one.request, one.cmd),
        Err(items) => Proposal::new(now_ms(), None, Command::Batch(items)),
    };
    let term = raft.metrics().borrow().current_term;
    let written = tokio::select! {
        written = raft.client_write(proposal) => written,
        () = async {
            term_passed(raft, term).await;
            tokio::time::sleep(ANSWER_GRACE).await;
        } => {
            tracing::warn!(term, "a batch proposed in an earlier term got no answer: answered as unknown");
            for reply in replies {
                let _ = reply.send(Err(Unapplied::Failed(
                    "the leader's term ended while this was proposed: its outcome is unknown".into(),
                )));
            }
            return;
        }
    };
    match written {
        Ok(r) => {
            let answers = if n == 1 { vec![r.data] } else { batch::split(r.data, n) };
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) => {
            let why = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Unapplied::NotLeader(f.leader_node),
                e => Unapplied::Failed(e.to_string()),
            };
            for reply in replies {
                let _ = reply.send(Err(why.clone()));
            }
        }
    }
}

/// Resolves once `raft`'s term is past `term` (or Raft has shut down).
async fn term_passed(raft: &Raft<TypeConfig>, term: u64) {
    let mut metrics = raft.metrics();
    loop {
        if metrics.borrow_and_update().current_term > term {
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
