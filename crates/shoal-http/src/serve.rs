//! Serving HTTP with bounded resources, on every port a Shoal process opens
//! for HTTP (a node's `--http` port, `shoal http`).
//!
//! A plain `axum::serve` accepts every connection and keeps it as long as the
//! peer likes, so a peer that opens connections and says nothing (or trickles
//! a byte now and then) uses up the process's file descriptors, and with them
//! the node's gRPC port. [`serve`] bounds that:
//! - at most [`Limits::max_connections`] at once; further peers wait in the
//!   kernel's accept queue, holding no descriptor of ours;
//! - a connection on which no byte moves either way for [`Limits::idle`] is
//!   closed;
//! - a connection lives at most [`Limits::lifetime`], busy or not, so a slow
//!   trickle cannot hold a slot for ever (a browser simply opens a new one).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// What one HTTP port may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Close a connection on which nothing was read or written for this long.
    pub idle: Duration,
    /// Close a connection this long after it was accepted.
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 256, idle: Duration::from_secs(30), lifetime: Duration::from_secs(300) }
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves
/// (then finishes the requests in flight) or the process ends.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = Bounded { inner: listener, permits: Arc::new(Semaphore::new(limits.max_connections)), limits };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// A listener that hands out at most `max_connections` live connections.
struct Bounded {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    limits: Limits,
}

impl axum::serve::Listener for Bounded {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self.permits.clone().acquire_owned().await.expect("the connection semaphore is never closed");
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let now = Instant::now();
        let guarded = Guarded {
            io,
            _permit: permit,
            idle: self.limits.idle,
            idle_timer: Box::pin(tokio::time::sleep_until(now + self.limits.idle)),
            end_timer: Box::pin(tokio::time::sleep_until(now + self.limits.lifetime)),
        };
        (guarded, addr)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// One accepted connection: gives its slot back when dropped, and fails its
/// reads and writes once it has been idle or alive too long, which makes the
/// HTTP server drop it.
struct Guarded {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    end_timer: Pin<Box<Sleep>>,
}

impl Guarded {
    /// `Ready(Err)` once a limit has passed; registers for the wakeups otherwise.
    fn poll_limits(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.idle_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle HTTP connection closed"));
        }
        if self.end_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "HTTP connection reached its lifetime"));
        }
        Poll::Pending
    }

    /// Called when bytes moved: the idle clock starts again.
    fn moved(&mut self) {
        let next = Instant::now() + self.idle;
        self.idle_timer.as_mut().reset(next);
    }

    /// Wraps one IO poll: progress resets the idle clock, waiting is cut
    /// short by the limits.
    fn guard<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.moved();
                Poll::Ready(result)
            }
            Poll::Pending => {
                let error = ready!(self.poll_limits(cx));
                Poll::Ready(Err(error))
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.guard(cx, polled)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.guard(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.guard(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
        let limits = Limits { max_connections: 4, idle: Duration::from_millis(300), lifetime: Duration::from_secs(60) };
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
        let limits = Limits { max_connections: 1, idle: Duration::from_secs(60), lifetime: Duration::from_millis(500) };
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
