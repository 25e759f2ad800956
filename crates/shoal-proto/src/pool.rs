//! A pool of lazily connected gRPC channels, one per `HOST:PORT`.
//!
//! A tonic `Channel` multiplexes calls over one HTTP/2 connection and
//! reconnects by itself, so one per peer is enough; the pool only avoids
//! building a new one per call. Every Shoal process that calls others keeps
//! one: clients and chunk servers (for meta and for chunk servers), meta
//! nodes (for Raft peers and for the chunk servers that copy replicas).
//!
//! The pool holds one channel per address it was asked for: the addresses
//! are the cluster's own servers, a bounded set. A caller whose call through
//! a channel got no answer in time may have it replaced ([`ChannelPool::renew`]):
//! a connection can stall while its peer answers new ones (a TCP connection
//! backing off after a partition healed, an HTTP/2 connection out of
//! streams), and keep-alive pings find only a dead peer, after half a minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;

use crate::Transport;

/// How long to wait for a TCP connection unless the pool's owner says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// An address that is not `HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAddress {
    pub addr: String,
}

impl std::fmt::Display for BadAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad server address {:?}: expected HOST:PORT", self.addr)
    }
}

impl std::error::Error for BadAddress {}

/// Channels by address, each connected on first use (see the module docs).
pub struct ChannelPool {
    connect_timeout: Duration,
    transport: Transport,
    channels: Mutex<HashMap<String, Channel>>,
}

impl ChannelPool {
    /// A pool whose channels wait at most `connect_timeout` for a
    /// connection, and speak `transport` (mutual TLS or plaintext).
    pub fn new(connect_timeout: Duration, transport: Transport) -> Self {
        ChannelPool { connect_timeout, transport, channels: Mutex::default() }
    }

    /// A pool whose channels wait [`CONNECT_TIMEOUT`] for a connection.
    pub fn with_transport(transport: Transport) -> Self {
        ChannelPool::new(CONNECT_TIMEOUT, transport)
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The channel to `addr`, created on first use; nothing is dialed here.
    pub fn get(&self, addr: &str) -> Result<Channel, BadAddress> {
        let mut map = self.channels.lock().expect("channel pool lock");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = crate::endpoint(addr, self.connect_timeout, &self.transport)
            .map_err(|_| BadAddress { addr: addr.to_string() })?;
        let channel = endpoint.connect_lazy();
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Makes the next [`ChannelPool::get`] of `addr` answer a new channel,
    /// on a new connection. Calls in flight on the old one go on; it closes
    /// once they are done with it.
    pub fn renew(&self, addr: &str) {
        self.channels.lock().expect("channel pool lock").remove(addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_channel_per_address_and_bad_addresses_are_refused() {
        let pool = ChannelPool::with_transport(Transport::Insecure);
        pool.get("127.0.0.1:1").expect("a HOST:PORT address");
        pool.get("127.0.0.1:1").expect("the same address again");
        assert_eq!(pool.channels.lock().unwrap().len(), 1);
        let e = pool.get("not an address").unwrap_err();
        assert_eq!(e, BadAddress { addr: "not an address".into() });
        assert!(pool.channels.lock().unwrap().len() == 1, "a bad address is not kept");
        pool.renew("127.0.0.1:1");
        assert!(pool.channels.lock().unwrap().is_empty(), "renewed: made again on the next get");
        pool.get("127.0.0.1:1").expect("made again");
        assert_eq!(pool.channels.lock().unwrap().len(), 1);
    }
}
