//! Credentials folders, and the TLS settings of gRPC clients and servers.
//!
//! **Server names.** Clients do not check a server's host name or IP
//! address: they check that its certificate chains to the cluster CA and
//! names [`SERVER_NAME`], which only node certificates carry. So a node can
//! be reached by any address (loopback, a NAT'd IP, a new DNS name) without
//! reissuing its certificate, and a stolen admin or user certificate cannot
//! pose as a server. The cost: any node may pose as any other node.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Identity as TonicIdentity, ServerTlsConfig};

use crate::issue::{CA_CERT_FILE, CERT_FILE, CLUSTER_KEY_BYTES, CLUSTER_KEY_FILE, KEY_FILE};
use crate::{Identity, LoadError};

/// The DNS name every node certificate carries, and the only server name
/// clients accept.
pub const SERVER_NAME: &str = "node.shoal";
/// How long a server waits for a client to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where client commands look for credentials when given neither `--tls`
/// nor `$SHOAL_TLS`: `$HOME/.shoal/tls` (`shoal up` writes its admin
/// credentials there).
pub fn default_client_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".shoal").join("tls"))
}

/// The cluster's secret key for chunk capabilities (see `issue`). Its
/// `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub [u8; CLUSTER_KEY_BYTES]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// Parses [`CLUSTER_KEY_FILE`]'s text: the key's bytes in hex, then
    /// optional white space.
    pub fn parse(text: &str) -> Option<ClusterKey> {
        let hex = text.trim();
        if hex.len() != 2 * CLUSTER_KEY_BYTES || !hex.is_ascii() {
            return None;
        }
        let mut key = [0u8; CLUSTER_KEY_BYTES];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ClusterKey(key))
    }
}

/// One credentials folder, read into memory.
pub struct Credentials {
    pub dir: PathBuf,
    /// Who this process is, from its own certificate.
    pub identity: Identity,
    /// The cluster key, if the folder holds one (nodes' folders do).
    pub cluster_key: Option<ClusterKey>,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("dir", &self.dir).field("identity", &self.identity).finish()
    }
}

fn read(path: PathBuf) -> Result<(PathBuf, String), LoadError> {
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok((path, s)),
        Err(source) => Err(LoadError::Io { path, source }),
    }
}

/// The DER bytes of the first certificate in a PEM text.
fn first_pem_certificate(pem: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok().map(|c| c.to_vec())
}

impl Credentials {
    /// Reads `cert.pem`, `key.pem` and `ca.pem` from `dir`, the identity
    /// from the certificate, and `cluster.key` if it is there.
    pub fn load(dir: &Path) -> Result<Credentials, LoadError> {
        let (cert_path, cert_pem) = read(dir.join(CERT_FILE))?;
        let (_, key_pem) = read(dir.join(KEY_FILE))?;
        let (ca_path, ca_pem) = read(dir.join(CA_CERT_FILE))?;
        if first_pem_certificate(&ca_pem).is_none() {
            return Err(LoadError::NoCertificate { path: ca_path });
        }
        let der =
            first_pem_certificate(&cert_pem).ok_or_else(|| LoadError::NoCertificate { path: cert_path.clone() })?;
        let identity =
            Identity::from_cert_der(&der).map_err(|source| LoadError::Identity { path: cert_path, source })?;
        let key_path = dir.join(CLUSTER_KEY_FILE);
        let cluster_key = match std::fs::read_to_string(&key_path) {
            Ok(text) => Some(ClusterKey::parse(&text).ok_or(LoadError::BadClusterKey { path: key_path })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(LoadError::Io { path: key_path, source }),
        };
        Ok(Credentials { dir: dir.to_path_buf(), identity, cluster_key, ca_pem, cert_pem, key_pem })
    }

    /// A client's settings: present our certificate, accept a server whose
    /// certificate chains to our CA and names [`SERVER_NAME`].
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TonicIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(SERVER_NAME)
    }

    /// A server's settings: present our certificate, require a client
    /// certificate that chains to our CA, and give up on a handshake after
    /// [`HANDSHAKE_TIMEOUT`].
    pub fn server_config(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TonicIdentity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// How a process talks to the others: mutual TLS, or plaintext when asked
/// for explicitly (`--insecure`).
#[derive(Clone, Debug)]
pub enum Transport {
    Insecure,
    Tls(Arc<Credentials>),
}

impl Transport {
    pub fn load(dir: &Path) -> Result<Transport, LoadError> {
        Ok(Transport::Tls(Arc::new(Credentials::load(dir)?)))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// Our own identity; None in plaintext.
    pub fn identity(&self) -> Option<&Identity> {
        match self {
            Transport::Tls(c) => Some(&c.identity),
            Transport::Insecure => None,
        }
    }

    /// The cluster key from our credentials; None in plaintext or for a
    /// client's credentials.
    pub fn cluster_key(&self) -> Option<&ClusterKey> {
        match self {
            Transport::Tls(c) => c.cluster_key.as_ref(),
            Transport::Insecure => None,
        }
    }

    /// The URI scheme of endpoints.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_keys_parse_only_from_their_hex() {
        let hex = "0f".repeat(CLUSTER_KEY_BYTES);
        assert_eq!(ClusterKey::parse(&format!("{hex}\n")), Some(ClusterKey([0x0f; CLUSTER_KEY_BYTES])));
        for bad in [&hex[2..], &format!("{hex}00"), &format!("zz{}", &hex[2..]), "", &"é".repeat(32)] {
            assert_eq!(ClusterKey::parse(bad), None, "{bad}");
        }
        assert_eq!(format!("{:?}", ClusterKey([7; CLUSTER_KEY_BYTES])), "ClusterKey(..)");
    }
}
