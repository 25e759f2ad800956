//! A pool of lazily connected gRPC channels, one per `HOST:PORT`.
//!
//! A tonic `Channel` multiplexes calls over one HTTP/2 connection and
//! reconnects by itself, so one per peer is enough; the pool only avoids
//! building a new one per call. Every Shoal process that calls others keeps
//! one: clients and chunk servers (for meta and for chunk servers), meta
//! nodes (for Raft peers and for the chunk servers that copy replicas).
//!
//! The pool holds one channel per address it was asked for and never forgets
//! one: the addresses are the cluster's own servers, a bounded set.

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
    }
}
