//! A pool of lazily connected gRPC channels, one per `HOST:PORT`.
//!
//! A tonic `Channel` multiplexes calls over one HTTP/2 connection and
//! reconnects by itself, so one per peer is enough; the pool only avoids
//! building a new one per call.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tonic::transport::Channel;

use crate::ClientError;

/// How long to wait for a TCP connection to any Shoal server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct ChannelPool {
    channels: Mutex<HashMap<String, Channel>>,
}

impl ChannelPool {
    /// The channel to `addr`, created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut map = self.channels.lock().expect("pool lock");
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = shoal_proto::endpoint(addr, CONNECT_TIMEOUT)
            .map_err(|_| ClientError::BadAddress { addr: addr.to_string() })?;
        let channel = endpoint.connect_lazy();
        map.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}
