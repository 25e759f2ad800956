//! Linearizable reads that share read-index rounds.
//!
//! A linearizable read on the leader waits for a read-index round: the
//! leader confirms with a quorum that it still leads, then its state machine
//! catches up to the commit index it had when the round began. Each read
//! used to run a round of its own (two heartbeat RPCs here). Now every read
//! queues; a task takes all the reads waiting and runs one round for them,
//! and reads that arrive while a round is running wait for the next one.
//!
//! Why that is still linearizable: a read joins only a round that begins
//! after it arrived, so the round's commit index covers every write
//! acknowledged before the read began, and its quorum check happens after
//! the read began too.

use openraft::Raft;
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use crate::TypeConfig;
use crate::group_commit::Unapplied;

/// A round that takes longer fails its readers (they retry), so one stuck
/// round cannot hold every later read.
const ROUND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The queue into the task that runs the rounds. Cloned with the node.
#[derive(Clone)]
pub struct ReadRounds {
    queue: mpsc::UnboundedSender<oneshot::Sender<Result<(), Unapplied>>>,
}

impl ReadRounds {
    /// Starts the task for `raft`; it ends when every `ReadRounds` is dropped.
    pub fn start(raft: Raft<TypeConfig>) -> ReadRounds {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(round_loop(raft, waiting));
        ReadRounds { queue }
    }

    /// Waits until a round that began after this call confirmed leadership
    /// and the state machine applied what was committed when it began.
    pub async fn wait(&self) -> Result<(), Unapplied> {
        let (done, round) = oneshot::channel();
        let gone = || Unapplied::Failed("meta is shutting down".into());
        self.queue.send(done).map_err(|_| gone())?;
        round.await.map_err(|_| gone())?
    }
}

async fn round_loop(
    raft: Raft<TypeConfig>,
    mut waiting: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), Unapplied>>>,
) {
    while let Some(first) = waiting.recv().await {
        let mut readers = vec![first];
        while let Ok(next) = waiting.try_recv() {
            readers.push(next);
        }
        // Every reader taken above arrived before this round begins.
        let outcome = match tokio::time::timeout(ROUND_TIMEOUT, raft.ensure_linearizable()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(Unapplied::NotLeader(f.leader_node))
            }
            Ok(Err(e)) => Err(Unapplied::Failed(e.to_string())),
            Err(_) => Err(Unapplied::Failed("no quorum confirmed this leader in time".into())),
        };
        for reader in readers {
            let _ = reader.send(outcome.clone());
        }
    }
}
