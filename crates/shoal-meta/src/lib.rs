//! Shoal's metadata service.
//!
//! One Raft group (openraft) replicates a single state machine that holds the
//! namespace (directories, files, attributes), the chunk map (file → chunks →
//! replicas) and the chunk-server registry. Every meta node serves the same
//! gRPC port for Raft traffic, clients and chunk servers.
//!
//! Layers, lowest first; each uses only those before it: [`bounds`] (what
//! requests may ask for), [`locks`] and [`fsm`] (the pure state machine;
//! `fsm` holds one module per domain) → [`health`],
//! [`reconcile`] and [`plan`] (pure decisions) → [`metric_names`] (the
//! names and help of every metric; the values are recorded through the
//! `metrics` facade where they happen) → [`format`] (the framing of
//! records on disk) → [`log_store`] and
//! [`sm_store`] (durability) → [`network`] (Raft over gRPC) → [`registry`],
//! [`sessions`] and [`new_ids`] (leader soft state) → [`node`] (proposing,
//! leadership, server views) → [`repair`] (the leader's healing task) → [`sampler`]
//! (state-derived gauges, sampled every second) → [`service`] and
//! [`lock_service`] (gRPC handlers) → [`server`] (wiring and startup).
//! `shoal-meta` knows nothing of chunk contents or of the disks of chunk servers.

pub mod bounds;
pub mod format;
pub mod fsm;
pub mod group_commit;
pub mod health;
pub mod lock_service;
pub mod locks;
pub mod log_store;
pub mod metric_names;
pub mod network;
pub mod new_ids;
pub mod node;
pub mod pacer;
pub mod plan;
pub mod ranges;
pub mod read_rounds;
pub mod reconcile;
pub mod registry;
pub mod repair;
pub mod sampler;
pub mod server;
pub mod service;
pub mod sessions;
pub mod sm_store;
pub mod snapshot_now;
pub mod stall_watch;

pub use server::{MetaConfig, run};

use std::io::Cursor;

openraft::declare_raft_types!(
    /// openraft's type configuration for Shoal's meta group.
    pub TypeConfig:
        D = fsm::Proposal,
        R = fsm::Response,
);
