//! Serving HTTP with bounded resources, on every port a Shoal process opens
//! for HTTP (a node's `--http` port, `shoal http`): axum over the
//! connection gate of `shoal_proto::bounded` (at most so many connections,
//! each closed when idle or too old), so peers that connect and say nothing
//! cannot use up the process's file descriptors, and with them the node.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

pub use shoal_proto::bounded::Limits;
use shoal_proto::bounded::{Gate, Guarded};
use tokio::net::TcpListener;

/// Serves `app` on `listener` within `limits` (normally [`Limits::HTTP`])
/// until `shutdown` resolves (then finishes the requests in flight) or the
/// process ends.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(Bounded(Gate::new(listener, limits)), app).with_graceful_shutdown(shutdown).await
}

/// The gate as axum's listener.
struct Bounded(Gate);

impl axum::serve::Listener for Bounded {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok(accepted) => return accepted,
                Err(e) => {
                    tracing::warn!("accepting an HTTP connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        tokio::spawn(serve(listener, app, limits, std::future::pending()));
        addr
    }

    async fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn silent_peers_beyond_the_cap_do_not_stop_service_once_idle() {
        let limits = Limits { max_connections: 4, idle: Duration::from_millis(300), lifetime: None };
        let addr = start(limits).await;
        // Fill every slot with a peer that says nothing.
        let mut silent = Vec::new();
        for _ in 0..8 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        // A real request is answered once the silent ones have been cut.
        let answer = tokio::time::timeout(Duration::from_secs(20), get(addr)).await.expect("served");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The silent peers were closed by the server: reading gives EOF or an error.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(20), silent[0].read(&mut buf)).await.expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }

    #[tokio::test]
    async fn a_trickling_peer_is_cut_at_the_lifetime() {
        let limits =
            Limits { max_connections: 1, idle: Duration::from_secs(60), lifetime: Some(Duration::from_millis(500)) };
        let addr = start(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        // One byte every 100 ms keeps it from being idle, never finishing a request.
        let trickle = tokio::spawn(async move {
            for _ in 0..200 {
                if slow.write_all(b"G").await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        let answer = tokio::time::timeout(Duration::from_secs(20), get(addr)).await.expect("served");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(trickle.await.unwrap(), "the trickling connection was closed");
    }
}
