//! How this process reaches the cluster: mutual TLS with a credentials
//! folder, or plaintext when asked for with `--insecure`.
//!
//! [`resolve`] picks the credentials the way every client command does:
//! `--tls DIR`, else `$SHOAL_TLS`, else the default folder
//! (`$HOME/.shoal/tls`, where `shoal up` writes its admin credentials).
//! A front end (the CLI, the mount, the S3 gateway) resolves once at start
//! and installs the result with [`set_process`]; [`crate::Client::connect`]
//! and [`crate::Client::connect_with_timeout`] then use it, so front ends
//! need nothing more. [`crate::Client::connect_with`] takes one explicitly.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use shoal_tls::Transport;

/// The environment variable that names a credentials folder.
pub const TLS_ENV: &str = "SHOAL_TLS";

static PROCESS: OnceLock<Transport> = OnceLock::new();

/// Why no transport could be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("--tls and --insecure exclude each other")]
    Conflict,
    #[error(
        "no TLS credentials: pass --tls DIR, set ${TLS_ENV}, run `shoal up` (it writes {default}), or pass --insecure \
         for a plaintext cluster"
    )]
    NoCredentials { default: String },
    #[error("the credentials in {dir}: {source}")]
    Load { dir: PathBuf, source: shoal_tls::LoadError },
}

/// The transport of a process given `--tls` (`tls`) and `--insecure`; see
/// the module docs for where credentials are looked for.
pub fn resolve(tls: Option<&Path>, insecure: bool) -> Result<Transport, TransportError> {
    let dir = match (tls, insecure) {
        (Some(_), true) => return Err(TransportError::Conflict),
        (None, true) => return Ok(Transport::Insecure),
        (Some(dir), false) => dir.to_path_buf(),
        (None, false) => match std::env::var_os(TLS_ENV).filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let default = shoal_tls::default_client_dir();
                match default.filter(|d| d.exists()) {
                    Some(dir) => dir,
                    None => {
                        let default = shoal_tls::default_client_dir()
                            .map_or_else(|| "$HOME/.shoal/tls".to_string(), |d| d.display().to_string());
                        return Err(TransportError::NoCredentials { default });
                    }
                }
            }
        },
    };
    Transport::load(&dir).map_err(|source| TransportError::Load { dir, source })
}

/// Installs this process's transport, once; a second call is ignored and
/// returns false.
pub fn set_process(transport: Transport) -> bool {
    PROCESS.set(transport).is_ok()
}

/// The transport installed by [`set_process`]; if none was, what
/// [`resolve`] finds without flags, and plaintext if it finds nothing
/// (which a TLS cluster refuses).
pub fn process() -> Transport {
    PROCESS.get_or_init(|| resolve(None, false).unwrap_or(Transport::Insecure)).clone()
}
