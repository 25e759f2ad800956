//! Accepting connections with bounded resources, for every port a Shoal
//! process serves (gRPC and HTTP).
//!
//! A server that accepts every connection and keeps it as long as the peer
//! likes can be emptied of file descriptors by peers that connect and say
//! nothing, or trickle a byte now and then; with the descriptors goes the
//! node. [`Gate::accept`] bounds that:
//! - at most [`Limits::max_connections`] at once; further peers wait in the
//!   kernel's accept queue, holding no descriptor of ours;
//! - a connection on which no byte moved either way for [`Limits::idle`] is
//!   closed (gRPC servers send HTTP/2 keepalive pings more often than that,
//!   so a healthy idle channel is never cut; a peer that never spoke HTTP/2
//!   is);
//! - with [`Limits::lifetime`], a connection lives at most that long, busy or
//!   not (for HTTP/1, where a slow trickle could otherwise hold a slot).
//!
//! Every accepted socket gets `TCP_NODELAY` (small replies must not wait on
//! Nagle's algorithm).

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

/// What one port may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Close a connection on which nothing was read or written for this long.
    pub idle: Duration,
    /// Close a connection this long after it was accepted.
    pub lifetime: Option<Duration>,
}

impl Limits {
    /// A gRPC port: long-lived channels, kept alive by HTTP/2 pings every
    /// [`GRPC_KEEPALIVE`].
    pub const GRPC: Limits = Limits { max_connections: 768, idle: Duration::from_secs(120), lifetime: None };
    /// An HTTP/1 port (metrics, dashboard): short requests from browsers and scrapers.
    pub const HTTP: Limits =
        Limits { max_connections: 256, idle: Duration::from_secs(30), lifetime: Some(Duration::from_secs(300)) };
}

/// How often a gRPC server pings an idle connection (well under [`Limits::GRPC`]'s idle time).
pub const GRPC_KEEPALIVE: Duration = Duration::from_secs(30);
/// How long a gRPC server waits for a ping's answer before it drops the connection.
pub const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Hands out at most `max_connections` live connections of one listener.
pub struct Gate {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    limits: Limits,
}

impl Gate {
    pub fn new(listener: TcpListener, limits: Limits) -> Gate {
        Gate { listener, permits: Arc::new(Semaphore::new(limits.max_connections)), limits }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, once one of the slots is free.
    pub async fn accept(&self) -> io::Result<(Guarded, SocketAddr)> {
        // The semaphore is never closed, so acquiring only waits.
        let permit = self.permits.clone().acquire_owned().await.expect("the connection semaphore is never closed");
        let (io, addr) = self.listener.accept().await?;
        io.set_nodelay(true)?;
        let now = Instant::now();
        let guarded = Guarded {
            io,
            _permit: permit,
            idle: self.limits.idle,
            idle_timer: Box::pin(tokio::time::sleep_until(now + self.limits.idle)),
            end_timer: self.limits.lifetime.map(|l| Box::pin(tokio::time::sleep_until(now + l))),
        };
        Ok((guarded, addr))
    }

    /// The accepted connections as a stream, for `tonic`'s
    /// `serve_with_incoming`. An accept error (out of descriptors, say) is
    /// logged and retried after a pause rather than ending the server.
    pub fn incoming(self) -> impl futures::Stream<Item = io::Result<Guarded>> + Send + 'static {
        futures::stream::unfold(self, |gate| async move {
            loop {
                match gate.accept().await {
                    Ok((io, _)) => return Some((Ok(io), gate)),
                    Err(e) => {
                        tracing::warn!("accepting a connection failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        })
    }
}

/// One accepted connection: gives its slot back when dropped, and fails its
/// reads and writes once it has been idle or alive too long, which makes the
/// server drop it.
pub struct Guarded {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    end_timer: Option<Pin<Box<Sleep>>>,
}

impl Guarded {
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    /// `Ready(error)` once a limit has passed; registers for the wakeups otherwise.
    fn poll_limits(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if self.idle_timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "idle connection closed"));
        }
        if let Some(end) = self.end_timer.as_mut()
            && end.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, "connection reached its lifetime"));
        }
        Poll::Pending
    }

    /// Wraps one IO poll: progress restarts the idle clock, waiting is cut
    /// short by the limits.
    fn guard<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                let next = Instant::now() + self.idle;
                self.idle_timer.as_mut().reset(next);
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

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server behind a gate.
    async fn echo(limits: Limits) -> SocketAddr {
        let gate = Gate::new(TcpListener::bind("127.0.0.1:0").await.unwrap(), limits);
        let addr = gate.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut io, _) = gate.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = io.read(&mut buf).await {
                        if io.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn closed_by_server(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }

    #[tokio::test]
    async fn silent_peers_are_cut_and_the_cap_lets_the_next_one_in() {
        let limits = Limits { max_connections: 2, idle: Duration::from_millis(300), lifetime: None };
        let addr = echo(limits).await;
        let mut silent = vec![TcpStream::connect(addr).await.unwrap(), TcpStream::connect(addr).await.unwrap()];
        // The third waits for a slot, and is served once the silent ones are cut.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(20), third.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got, b"hi");
        for s in &mut silent {
            assert!(closed_by_server(s).await);
        }
    }

    #[tokio::test]
    async fn a_busy_peer_stays_and_a_lifetime_ends_it() {
        let limits = Limits {
            max_connections: 4,
            idle: Duration::from_millis(300),
            lifetime: Some(Duration::from_millis(1500)),
        };
        let addr = echo(limits).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Talking every 100 ms for 1 s: never idle, still open.
        for _ in 0..10 {
            s.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Then the lifetime ends it, busy or not.
        let mut ended = false;
        for _ in 0..100 {
            let mut b = [0u8; 1];
            if s.write_all(b"x").await.is_err() || !matches!(s.read(&mut b).await, Ok(1)) {
                ended = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ended, "the connection outlived its lifetime");
    }
}
