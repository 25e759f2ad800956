//! The channel pool the client library (and chunk servers, through it) uses:
//! [`shoal_proto::pool`], re-exported so callers need not name `shoal-proto`.
//! Its [`BadAddress`] converts into [`crate::ClientError::BadAddress`].

pub use shoal_proto::pool::{BadAddress, CONNECT_TIMEOUT, ChannelPool};
