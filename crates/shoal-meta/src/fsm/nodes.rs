//! The chunk-server registry and cluster switches: registered servers and
//! their addresses, decommissioning, confirmed garbage deletes, and the
//! repair pause.
//!
//! # Invariants kept here
//! - A server id is registered once; a new address replaces the old one and
//!   keeps its draining flag.
//! - A garbage entry lists at least one holder; a confirmed delete removes
//!   its holder, and an entry with no holder left is forgotten.

use serde::{Deserialize, Serialize};
use shoal_core::FsError;

use super::{FsState, Response};

/// A registered chunk server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub addr: String,
    /// Being decommissioned: placement avoids it, and its replicas are copied
    /// elsewhere, then dropped.
    #[serde(default)]
    pub draining: bool,
}

/// The registry's commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeCmd {
    /// Registers a chunk server or records its new address.
    RegisterNode { id: u64, addr: String },
    /// A chunk server confirmed it deleted these garbage chunks.
    ForgetGarbage { node: u64, chunks: Vec<u64> },
    /// Starts (or cancels) decommissioning a chunk server.
    SetDraining { node: u64, draining: bool },
    /// Pauses or resumes re-replication, drops of extra replicas and moves.
    SetRepairPaused { paused: bool },
}

impl FsState {
    /// Applies a registry command.
    pub(super) fn apply_nodes(&mut self, cmd: &NodeCmd) -> Result<Response, FsError> {
        match cmd {
            NodeCmd::RegisterNode { id, addr } => self.register_node(*id, addr),
            NodeCmd::SetDraining { node, draining } => self.set_draining(*node, *draining),
            NodeCmd::ForgetGarbage { node, chunks } => self.forget_garbage(*node, chunks),
            NodeCmd::SetRepairPaused { paused } => {
                self.repair_paused = *paused;
                Ok(Response::Ok)
            }
        }
    }

    pub(super) fn register_node(&mut self, id: u64, addr: &str) -> Result<Response, FsError> {
        let draining = self.nodes.get(&id).is_some_and(|n| n.draining);
        self.nodes.insert(id, NodeRecord { id, addr: addr.to_string(), draining });
        Ok(Response::Ok)
    }

    pub(super) fn set_draining(&mut self, node: u64, draining: bool) -> Result<Response, FsError> {
        match self.nodes.get_mut(&node) {
            Some(n) => {
                n.draining = draining;
                Ok(Response::Ok)
            }
            None => Err(FsError::InvalidArgument { reason: format!("no chunk server has id {node}") }),
        }
    }

    pub(super) fn forget_garbage(&mut self, node: u64, chunks: &[u64]) -> Result<Response, FsError> {
        for c in chunks {
            // Only a record that names the node changes (a retry finds none,
            // and `get_mut` would copy a shared page for nothing).
            if !self.garbage.get(c).is_some_and(|holders| holders.contains(&node)) {
                continue;
            }
            if let Some(holders) = self.garbage.get_mut(c) {
                holders.remove(&node);
                if holders.is_empty() {
                    self.garbage.remove(c);
                }
            }
        }
        Ok(Response::Ok)
    }
}
