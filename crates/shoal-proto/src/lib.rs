//! The gRPC schema of Shoal, generated from `proto/*.proto` at build time.
//!
//! `raft` frames openraft traffic between meta nodes, `meta` is the metadata
//! service for clients and chunk servers, `chunk` is the data path. Besides
//! the schema: the gRPC [`endpoint`] every component dials with, the
//! [`pool`] of channels built from it, the [`bounded`] accepting of
//! connections every server port uses, the [`authz`] rule of who may
//! call what, and the chunk [`capability`] meta signs and chunk servers check.

pub mod authz;
pub mod bounded;
pub mod capability;
pub mod pool;

pub use shoal_tls::Transport;

/// Raft transport between meta nodes.
#[allow(clippy::all)]
pub mod raft {
    tonic::include_proto!("shoal.raft.v1");
}

/// Namespace and cluster services of the meta nodes.
#[allow(clippy::all)]
pub mod meta {
    tonic::include_proto!("shoal.meta.v1");
}

/// Chunk servers: pipelined writes and verified ranged reads.
#[allow(clippy::all)]
pub mod chunk {
    tonic::include_proto!("shoal.chunk.v1");
}

/// Metadata key naming the current leader's address on a not-leader answer.
pub const LEADER_KEY: &str = "shoal-leader";
/// Metadata key carrying a typed error as JSON.
pub const ERROR_KEY: &str = "shoal-error";
/// Metadata key naming the replica that broke a write chain.
pub const FAILED_REPLICA_KEY: &str = "shoal-failed-replica";
/// Metadata key carrying a chunk server's [`chunk::ChunkErrorKind`], by name.
pub const CHUNK_ERROR_KEY: &str = "shoal-chunk-error";

impl chunk::ChunkErrorKind {
    /// Marks `status` with this kind (the first mark wins: a status passed up
    /// a write chain keeps the kind of the replica that failed).
    pub fn attach(self, status: &mut tonic::Status) {
        if !status.metadata().contains_key(CHUNK_ERROR_KEY) {
            status
                .metadata_mut()
                .insert(CHUNK_ERROR_KEY, tonic::metadata::MetadataValue::from_static(self.as_str_name()));
        }
    }

    /// The kind `status` carries; None if it carries none (it did not come
    /// from a chunk server's refusal) or one this build does not know.
    pub fn of(status: &tonic::Status) -> Option<chunk::ChunkErrorKind> {
        let name = status.metadata().get(CHUNK_ERROR_KEY)?.to_str().ok()?;
        chunk::ChunkErrorKind::from_str_name(name)
    }
}
/// HTTP/2 flow-control window per stream: large enough that a bulk transfer
/// is not throttled to a round trip per 64 KiB (the protocol default).
pub const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
/// HTTP/2 flow-control window per connection.
pub const CONNECTION_WINDOW_BYTES: u32 = 32 * 1024 * 1024;
/// Largest gRPC message any Shoal service accepts.
pub const MESSAGE_SIZE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The gRPC endpoint every Shoal component uses to reach `addr` (HOST:PORT):
/// mutual TLS unless `transport` is insecure, wide flow-control windows, no
/// Nagle delay, keep-alive pings, and a bounded connect time. Connect it
/// lazily with `connect_lazy`.
pub fn endpoint(
    addr: &str,
    connect_timeout: std::time::Duration,
    transport: &Transport,
) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{}://{addr}", transport.scheme()))?;
    if let Transport::Tls(credentials) = transport {
        endpoint = endpoint.tls_config(credentials.client_config())?;
    }
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_keep_alive_interval(std::time::Duration::from_secs(10)))
}

/// Whether `addr` is `HOST:PORT` that others can dial: a non-empty host
/// that is not a wildcard (`0.0.0.0`, `[::]`), and a port above 0.
pub fn dialable(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else { return false };
    let wildcard = matches!(host, "0.0.0.0" | "[::]" | "::");
    !host.is_empty() && !wildcard && port.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The gRPC server every Shoal server starts from: with mutual TLS (a
/// client certificate from the cluster CA is required, the handshake is
/// bounded by `shoal_tls::HANDSHAKE_TIMEOUT`), or, for an `--insecure`
/// node, plaintext and a loud warning in the log. Add
/// [`authz::AuthorizeLayer`] to it.
pub fn server_builder(transport: &Transport, what: &str) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let builder = tonic::transport::Server::builder();
    match transport {
        Transport::Tls(credentials) => {
            tracing::info!(identity = %credentials.identity, "{what}: mutual TLS on");
            builder.tls_config(credentials.server_config())
        }
        Transport::Insecure => {
            tracing::warn!(
                "INSECURE: {what} runs WITHOUT TLS (--insecure): anyone who can reach its port can read and change \
                 everything, nothing it sends is encrypted, and chunk capabilities are neither signed nor checked"
            );
            Ok(builder)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::chunk::ChunkErrorKind;

    #[test]
    fn only_addresses_others_can_dial_are_dialable() {
        for good in ["127.0.0.1:7100", "node-3.example:7110", "[::1]:7100"] {
            assert!(super::dialable(good), "{good}");
        }
        for bad in ["0.0.0.0:7100", "[::]:7100", ":7100", "host", "host:0", "host:99999", "host:x"] {
            assert!(!super::dialable(bad), "{bad}");
        }
    }

    #[test]
    fn chunk_error_kinds_cross_in_metadata_by_name() {
        let kinds: Vec<ChunkErrorKind> = (0..64).filter_map(|i| ChunkErrorKind::try_from(i).ok()).collect();
        assert!(kinds.len() >= 11);
        for kind in kinds {
            let mut s = tonic::Status::data_loss("refused");
            kind.attach(&mut s);
            assert_eq!(ChunkErrorKind::of(&s), Some(kind));
        }
        // The first mark wins; no mark or an unknown name is no kind.
        let mut s = tonic::Status::data_loss("refused");
        ChunkErrorKind::MissingBase.attach(&mut s);
        ChunkErrorKind::Io.attach(&mut s);
        assert_eq!(ChunkErrorKind::of(&s), Some(ChunkErrorKind::MissingBase));
        assert_eq!(ChunkErrorKind::of(&tonic::Status::unavailable("down")), None);
        let mut s = tonic::Status::internal("x");
        s.metadata_mut().insert(super::CHUNK_ERROR_KEY, "CHUNK_ERROR_KIND_FROM_THE_FUTURE".parse().unwrap());
        assert_eq!(ChunkErrorKind::of(&s), None);
    }
}
