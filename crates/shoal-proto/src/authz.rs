//! Who may call what: the authorization rule of every gRPC server, and the
//! tower layer that applies it.
//!
//! The caller's identity comes from its TLS client certificate (checked
//! against the cluster CA by the handshake; see `shoal_tls`). [`access`] is
//! the table: each RPC is open to everyone (files, locks, reads and writes
//! of chunks), to admins (cluster changes and whole-cluster views), or to
//! nodes only (Raft, heartbeats, chunk copies). Nodes may call everything.
//! A client's chunk `Write` or `Read` must also carry meta's capability,
//! which the chunk server checks itself (see [`crate::capability`]): this
//! table only says who may knock.
//! An RPC missing from the table is open to nodes only, so a new RPC is
//! closed to clients until someone decides otherwise here.
//!
//! A server started `--insecure` has no identities and lets every call in.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use shoal_tls::{Identity, Role};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// Who may call an RPC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every identity of the cluster: admins, users and nodes.
    Everyone,
    /// Admins and nodes.
    Admins,
    /// Nodes only.
    Nodes,
}

const RAFT: &str = "shoal.raft.v1.Raft";
const NAMESPACE: &str = "shoal.meta.v1.Namespace";
const CLUSTER: &str = "shoal.meta.v1.Cluster";
const LOCKS: &str = "shoal.meta.v1.Locks";
const CHUNK: &str = "shoal.chunk.v1.Chunk";

/// The rule for one RPC, by its gRPC path (`/package.Service/Method`);
/// None for a path not in the table.
pub fn access(path: &str) -> Option<Access> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    use Access::*;
    Some(match (service, method) {
        (RAFT, "AppendEntries" | "Vote" | "InstallSnapshot") => Nodes,
        (CLUSTER, "Heartbeat") => Nodes,
        (CHUNK, "Replicate") => Nodes,

        (
            CLUSTER,
            "AddMeta" | "RemoveMeta" | "Decommission" | "Rebalance" | "SetRepair" | "ReportCorrupt" | "TriggerSnapshot",
        ) => Admins,
        (CLUSTER, "Nodes" | "Fsck") => Admins,
        (NAMESPACE, "SetReplication") => Admins,
        (LOCKS, "List") => Admins,

        (CLUSTER, "Status") => Everyone,
        (
            NAMESPACE,
            "Mkdir" | "Create" | "Stat" | "List" | "Remove" | "Rename" | "Layout" | "PrepareWrite" | "CommitWrite"
            | "PrepareNew" | "CreateWritten" | "SetXattrs" | "RemoveXattr" | "SetAttr" | "Symlink" | "Mknod" | "Link",
        ) => Everyone,
        (LOCKS, "OpenSession" | "KeepAlive" | "CloseSession" | "Acquire" | "Release" | "Inspect") => Everyone,
        (CHUNK, "Write" | "Read") => Everyone,
        _ => return None,
    })
}

/// Whether `role` may call the RPC at `path`.
pub fn allowed(role: Role, path: &str) -> bool {
    match (role, access(path).unwrap_or(Access::Nodes)) {
        (Role::Node, _) => true,
        (Role::Admin, Access::Everyone | Access::Admins) => true,
        (Role::User, Access::Everyone) => true,
        _ => false,
    }
}

/// The identity of a request's TLS peer, or why it has none.
fn caller<B>(req: &http::Request<B>) -> Result<Identity, String> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .ok_or_else(|| "no client certificate".to_string())?;
    let first = certs.first().ok_or_else(|| "no client certificate".to_string())?;
    Identity::from_cert_der(first).map_err(|e| e.to_string())
}

/// The identity of a gRPC call's TLS peer (for handlers that decide by
/// who is asking, like chunk capabilities), or why it has none.
pub fn peer_identity<T>(req: &tonic::Request<T>) -> Result<Identity, String> {
    let certs = req.peer_certs().ok_or_else(|| "no client certificate".to_string())?;
    let first = certs.first().ok_or_else(|| "no client certificate".to_string())?;
    Identity::from_cert_der(first).map_err(|e| e.to_string())
}

/// Refuses, with `PERMISSION_DENIED`, every call [`allowed`] does not let in
/// (see the module docs). `enforce` is false on an `--insecure` server.
#[derive(Clone, Copy, Debug)]
pub struct AuthorizeLayer {
    pub enforce: bool,
}

impl<S> tower_layer::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize { inner, enforce: self.enforce }
    }
}

/// The service [`AuthorizeLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    enforce: bool,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> tower_service::Service<http::Request<B>> for Authorize<S>
where
    S: tower_service::Service<http::Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if self.enforce {
            let path = req.uri().path();
            let refusal = match caller(&req) {
                Ok(who) if allowed(who.role, path) => None,
                Ok(who) => Some(format!("{who} may not call {path}")),
                Err(why) => Some(format!("{why}: may not call {path}")),
            };
            if let Some(message) = refusal {
                tracing::info!("refused: {message}");
                let denied = tonic::Status::permission_denied(message).into_http();
                return Box::pin(std::future::ready(Ok(denied)));
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every RPC in `proto/*.proto`, as `/package.Service/Method`.
    fn every_rpc() -> Vec<String> {
        let mut paths = Vec::new();
        for text in [
            include_str!("../../../proto/meta.proto"),
            include_str!("../../../proto/chunk.proto"),
            include_str!("../../../proto/raft.proto"),
        ] {
            let package = text.lines().find_map(|l| l.trim().strip_prefix("package ")).unwrap().trim_end_matches(';');
            let mut service = "";
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("service ") {
                    service = rest.split_whitespace().next().unwrap();
                } else if let Some(rest) = line.strip_prefix("rpc ") {
                    let method = rest.split('(').next().unwrap().trim();
                    paths.push(format!("/{package}.{service}/{method}"));
                }
            }
        }
        paths
    }

    #[test]
    fn every_rpc_has_a_rule() {
        let rpcs = every_rpc();
        assert!(rpcs.len() >= 35, "found only {rpcs:?}");
        for path in &rpcs {
            assert!(access(path).is_some(), "{path} is missing from the authorization table");
        }
    }

    #[test]
    fn who_may_call_what() {
        use Role::*;
        let cases: &[(&str, [bool; 3])] = &[
            // path                                     node   admin  user
            ("/shoal.raft.v1.Raft/AppendEntries", [true, false, false]),
            ("/shoal.meta.v1.Cluster/Heartbeat", [true, false, false]),
            ("/shoal.chunk.v1.Chunk/Replicate", [true, false, false]),
            ("/shoal.meta.v1.Cluster/Decommission", [true, true, false]),
            ("/shoal.meta.v1.Cluster/Rebalance", [true, true, false]),
            ("/shoal.meta.v1.Cluster/AddMeta", [true, true, false]),
            ("/shoal.meta.v1.Cluster/RemoveMeta", [true, true, false]),
            ("/shoal.meta.v1.Cluster/SetRepair", [true, true, false]),
            ("/shoal.meta.v1.Cluster/ReportCorrupt", [true, true, false]),
            ("/shoal.meta.v1.Cluster/TriggerSnapshot", [true, true, false]),
            ("/shoal.meta.v1.Namespace/SetReplication", [true, true, false]),
            ("/shoal.meta.v1.Namespace/Create", [true, true, true]),
            ("/shoal.meta.v1.Namespace/PrepareWrite", [true, true, true]),
            ("/shoal.meta.v1.Namespace/PrepareNew", [true, true, true]),
            ("/shoal.meta.v1.Namespace/CreateWritten", [true, true, true]),
            ("/shoal.meta.v1.Locks/Acquire", [true, true, true]),
            ("/shoal.chunk.v1.Chunk/Write", [true, true, true]),
            ("/shoal.chunk.v1.Chunk/Read", [true, true, true]),
            ("/shoal.meta.v1.Cluster/Status", [true, true, true]),
            // Not in the table: nodes only.
            ("/shoal.meta.v1.Cluster/SomethingNew", [true, false, false]),
            ("garbage", [true, false, false]),
        ];
        for (path, expect) in cases {
            let got = [allowed(Node, path), allowed(Admin, path), allowed(User, path)];
            assert_eq!(&got, expect, "{path}");
        }
    }
}
