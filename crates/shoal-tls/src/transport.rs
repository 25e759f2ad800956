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

use crate::issue::{CA_CERT_FILE, CERT_FILE, KEY_FILE};
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

/// One credentials folder, read into memory.
pub struct Credentials {
    pub dir: PathBuf,
    /// Who this process is, from its own certificate.
    pub identity: Identity,
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
    /// Reads `cert.pem`, `key.pem` and `ca.pem` from `dir`, and the identity
    /// from the certificate.
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
        Ok(Credentials { dir: dir.to_path_buf(), identity, ca_pem, cert_pem, key_pem })
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

    /// The URI scheme of endpoints.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() { "https" } else { "http" }
    }
}
