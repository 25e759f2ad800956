//! Certificates and identities for mutual TLS between every Shoal process.
//!
//! A cluster has one certificate authority (CA): [`init_ca`] makes it
//! (`ca.pem`, and `ca.key` readable by its owner only). [`issue`] signs a
//! certificate for one **identity**, a name and a [`Role`]:
//! - `node`: a meta node or a chunk server. Only node certificates may serve
//!   (they alone carry the server name [`SERVER_NAME`] and the server-auth
//!   key usage), and only nodes may call the node-only RPCs (Raft,
//!   heartbeats, chunk copies).
//! - `admin`: an operator's client: every client RPC, the admin ones too.
//! - `user`: a client for files only (see `shoal_proto::authz`).
//!
//! The identity is written in the certificate as one subject alternative
//! name URI, `shoal://ROLE/NAME`, and read back from the peer's certificate
//! by [`Identity::from_cert_der`]; a certificate with no such URI, or more
//! than one, has no identity and is refused.
//!
//! A **credentials folder** (what `--tls DIR` names) holds `cert.pem`,
//! `key.pem` and the cluster's `ca.pem`; [`Credentials::load`] reads it, and
//! [`Transport`] turns it into tonic's client and server TLS settings. A
//! node's folder also holds the cluster key (`cluster.key`, see [`issue`]),
//! which [`Credentials::load`] reads as a [`ClusterKey`].

mod der;
mod issue;
mod transport;

use std::fmt;
use std::path::PathBuf;

pub use issue::{
    CA_CERT_FILE, CA_KEY_FILE, CERT_DAYS_DEFAULT, CERT_FILE, CLUSTER_KEY_BYTES, CLUSTER_KEY_FILE, IssueRequest,
    KEY_FILE, add_cluster_key, ensure, init_ca, init_ca_with, issue,
};
pub use transport::{ClusterKey, Credentials, HANDSHAKE_TIMEOUT, SERVER_NAME, Transport, default_client_dir};

/// Longest identity name.
pub const NAME_MAX_BYTES: usize = 64;

/// What a certificate's holder may do (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Node,
    Admin,
    User,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Node, Role::Admin, Role::User];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who holds a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub name: String,
    pub role: Role,
}

/// The scheme of identity URIs.
const URI_PREFIX: &str = "shoal://";

impl Identity {
    /// An identity, if `name` is a valid one (see [`valid_name`]).
    pub fn new(name: &str, role: Role) -> Result<Identity, CertError> {
        if !valid_name(name) {
            return Err(CertError::BadName { name: name.to_string() });
        }
        Ok(Identity { name: name.to_string(), role })
    }

    /// `shoal://ROLE/NAME`, as written in the certificate.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.role, self.name)
    }

    /// Parses [`Identity::uri`]'s form; anything else is None.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let (role, name) = uri.strip_prefix(URI_PREFIX)?.split_once('/')?;
        let role = Role::parse(role)?;
        valid_name(name).then(|| Identity { name: name.to_string(), role })
    }

    /// The identity in a DER certificate: its one `shoal://` SAN URI.
    pub fn from_cert_der(cert: &[u8]) -> Result<Identity, IdentityError> {
        let uris = der::san_uris(cert).ok_or(IdentityError::Malformed)?;
        let ours: Vec<&[u8]> = uris.into_iter().filter(|u| u.starts_with(URI_PREFIX.as_bytes())).collect();
        match ours.as_slice() {
            [] => Err(IdentityError::Missing),
            [one] => {
                let uri = std::str::from_utf8(one).map_err(|_| IdentityError::Malformed)?;
                Identity::from_uri(uri).ok_or_else(|| IdentityError::BadUri { uri: uri.to_string() })
            }
            _ => Err(IdentityError::Ambiguous),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// 1 to [`NAME_MAX_BYTES`] of ASCII letters, digits, `.`, `_` and `-`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Why a certificate carries no usable identity.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("the certificate is not valid DER")]
    Malformed,
    #[error("the certificate names no shoal:// identity")]
    Missing,
    #[error("the certificate names more than one shoal:// identity")]
    Ambiguous,
    #[error("the certificate's identity {uri:?} is not shoal://node|admin|user/NAME")]
    BadUri { uri: String },
}

/// Why making a CA or a certificate failed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("bad identity name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName { name: String },
    #[error("{path} already exists; remove it first to replace it")]
    Exists { path: PathBuf },
    #[error("{dir} holds no cluster CA (ca.pem and ca.key); make one with `shoal cert init`")]
    NoCa { dir: PathBuf },
    #[error("{dir} holds no cluster key ({CLUSTER_KEY_FILE}); `shoal cert init {dir}` adds one to an existing CA")]
    NoClusterKey { dir: PathBuf },
    #[error("{path} is not a cluster key ({CLUSTER_KEY_BYTES} bytes in hex)")]
    BadClusterKey { path: PathBuf },
    #[error("{path} must hold PEM certificates of certificate authorities (as a CA folder's ca.pem does)")]
    NotCaCertificates { path: PathBuf },
    #[error("the system's random number generator failed")]
    Random,
    #[error("--days must be 1 or more")]
    BadDays,
    #[error("the DNS name {name:?} is reserved for node certificates")]
    ReservedName { name: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("making the certificate failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// Why a credentials folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {source}")]
    Identity { path: PathBuf, source: IdentityError },
    #[error("{path} is not a cluster key ({CLUSTER_KEY_BYTES} bytes in hex)")]
    BadClusterKey { path: PathBuf },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_round_trip_and_junk_is_refused() {
        for role in Role::ALL {
            let id = Identity::new("n-1.a_b", role).unwrap();
            assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        }
        for bad in ["shoal://root/x", "shoal://user/", "shoal://user/a/b", "http://user/x", "shoal://user/a b"] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
        assert!(Identity::new(&"x".repeat(65), Role::User).is_err());
        assert!(Identity::new("", Role::User).is_err());
    }
}
