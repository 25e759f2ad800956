//! Making the cluster CA and signing certificates with it.
//!
//! The CA's subject names the CA's key (`Shoal cluster CA <key id>`), so
//! issuing needs only `ca.key`: the issuer name is recomputed from the key
//! and always matches `ca.pem`'s subject. Keys are ECDSA P-256. Private keys
//! are created with mode 0600, and nothing is ever overwritten: a file that
//! exists already is an error, before anything is written.
//!
//! The CA folder also holds the **cluster key** (`cluster.key`, 32 random
//! bytes in hex, mode 0600): the HMAC key meta nodes sign chunk capabilities
//! with and chunk servers check them with. [`issue`] copies it into node
//! credentials folders only, never into an admin's or a user's: a client
//! that held it could sign itself any capability.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use time::{Duration, OffsetDateTime};

use crate::{CertError, Identity, Role, SERVER_NAME};

pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";
/// The cluster key, in the CA folder and in every node's credentials folder.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
/// Bytes of the cluster key.
pub const CLUSTER_KEY_BYTES: usize = 32;
/// How long a CA is valid, in days.
const CA_DAYS: i64 = 3650;
/// How long a certificate is valid unless asked otherwise, in days.
pub const CERT_DAYS_DEFAULT: u32 = 825;
/// Certificates are valid from a little before they are made, so that a
/// peer whose clock is slightly behind accepts them at once.
const BACKDATE: Duration = Duration::minutes(10);

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.to_path_buf(), source }
}

/// Fails if any of `paths` exists.
fn refuse_existing(paths: &[PathBuf]) -> Result<(), CertError> {
    match paths.iter().find(|p| p.exists()) {
        Some(p) => Err(CertError::Exists { path: p.clone() }),
        None => Ok(()),
    }
}

/// Writes a new file; `private` makes it readable by its owner only.
fn write_new(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true).mode(if private { 0o600 } else { 0o644 });
    let mut file = options.open(path).map_err(io_error(path))?;
    file.write_all(contents.as_bytes()).and_then(|_| file.sync_all()).map_err(io_error(path))
}

/// The CA's parameters; its subject depends only on its key.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    let id: String = params.key_identifier(key).iter().take(8).map(|b| format!("{b:02x}")).collect();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "Shoal");
    params.distinguished_name.push(DnType::CommonName, format!("Shoal cluster CA {id}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params
}

/// A fresh cluster key, as written in [`CLUSTER_KEY_FILE`].
fn new_cluster_key_text() -> Result<String, CertError> {
    use ring::rand::SecureRandom;
    let mut key = [0u8; CLUSTER_KEY_BYTES];
    ring::rand::SystemRandom::new().fill(&mut key).map_err(|_| CertError::Random)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{hex}\n"))
}

/// Adds a cluster key to the CA folder `dir` if it has none (a CA made
/// before cluster keys existed); true if it wrote one.
pub fn add_cluster_key(dir: &Path) -> Result<bool, CertError> {
    if !dir.join(CA_CERT_FILE).exists() || !dir.join(CA_KEY_FILE).exists() {
        return Err(CertError::NoCa { dir: dir.to_path_buf() });
    }
    let path = dir.join(CLUSTER_KEY_FILE);
    if path.exists() {
        return Ok(false);
    }
    write_new(&path, &new_cluster_key_text()?, true)?;
    Ok(true)
}

/// Makes a cluster CA in `dir` (created if missing): `ca.pem`, `ca.key`
/// and `cluster.key` (both mode 0600). Refuses if any of them exists.
pub fn init_ca(dir: &Path) -> Result<(), CertError> {
    init_ca_with(dir, None)
}

/// [`init_ca`], keeping the cluster key in the file `cluster_key` instead of
/// making a new one when given: a CA that replaces another keeps the
/// cluster's key, so capabilities signed by nodes with certificates of
/// either CA pass on both. Refuses a file that is not a cluster key.
pub fn init_ca_with(dir: &Path, cluster_key: Option<&Path>) -> Result<(), CertError> {
    let (cert, key) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    refuse_existing(&[cert.clone(), key.clone(), dir.join(CLUSTER_KEY_FILE)])?;
    let cluster_key = match cluster_key {
        None => new_cluster_key_text()?,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(io_error(path))?;
            if crate::ClusterKey::parse(&text).is_none() {
                return Err(CertError::BadClusterKey { path: path.to_path_buf() });
            }
            text
        }
    };
    let ca_key = KeyPair::generate()?;
    let mut params = ca_params(&ca_key);
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_DAYS);
    let ca = params.self_signed(&ca_key)?;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    write_new(&key, &ca_key.serialize_pem(), true)?;
    write_new(&dir.join(CLUSTER_KEY_FILE), &cluster_key, true)?;
    write_new(&cert, &ca.pem(), false)
}

/// What to sign.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    pub identity: Identity,
    /// The credentials folder to write (created if missing).
    pub out: PathBuf,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Extra subject alternative names (for other tools; Shoal's own
    /// clients check [`SERVER_NAME`]).
    pub ips: Vec<IpAddr>,
    pub dns: Vec<String>,
    /// PEM files of more CA certificates for the folder's `ca.pem` to hold
    /// after the issuing CA's: while one CA replaces another, a process
    /// must trust both (README, rotate certificates).
    pub also_trust: Vec<PathBuf>,
}

impl IssueRequest {
    /// Valid from now for [`CERT_DAYS_DEFAULT`] days, no extra names.
    pub fn new(identity: Identity, out: PathBuf) -> IssueRequest {
        let now = OffsetDateTime::now_utc();
        IssueRequest {
            identity,
            out,
            not_before: now - BACKDATE,
            not_after: now + Duration::days(i64::from(CERT_DAYS_DEFAULT)),
            ips: Vec::new(),
            dns: Vec::new(),
            also_trust: Vec::new(),
        }
    }

    /// Valid from now for `days` days.
    pub fn days(mut self, days: u32) -> Result<IssueRequest, CertError> {
        if days == 0 {
            return Err(CertError::BadDays);
        }
        self.not_after = OffsetDateTime::now_utc() + Duration::days(i64::from(days));
        Ok(self)
    }
}

/// Signs a certificate for `req.identity` with the CA in `ca_dir`, and
/// writes `cert.pem`, `key.pem` (mode 0600) and a copy of `ca.pem` into
/// `req.out`, and for a node a copy of the cluster key (mode 0600). Refuses
/// if any of them exists, or, for a node, if the CA folder has no cluster key.
pub fn issue(ca_dir: &Path, req: &IssueRequest) -> Result<(), CertError> {
    if req.identity.role != Role::Node
        && let Some(name) = req.dns.iter().find(|d| d.eq_ignore_ascii_case(SERVER_NAME))
    {
        return Err(CertError::ReservedName { name: name.clone() });
    }
    let (ca_cert_path, ca_key_path) = (ca_dir.join(CA_CERT_FILE), ca_dir.join(CA_KEY_FILE));
    if !ca_cert_path.exists() || !ca_key_path.exists() {
        return Err(CertError::NoCa { dir: ca_dir.to_path_buf() });
    }
    let mut ca_pem = std::fs::read_to_string(&ca_cert_path).map_err(io_error(&ca_cert_path))?;
    for path in &req.also_trust {
        ca_pem.push_str(&ca_certificates_pem(path)?);
    }
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(io_error(&ca_key_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::new(ca_params(&ca_key), ca_key);

    let out = &req.out;
    let files = [out.join(CERT_FILE), out.join(KEY_FILE), out.join(CA_CERT_FILE)];
    refuse_existing(&files)?;
    let cluster_key = match req.identity.role {
        Role::Node => {
            let from = ca_dir.join(CLUSTER_KEY_FILE);
            if !from.exists() {
                return Err(CertError::NoClusterKey { dir: ca_dir.to_path_buf() });
            }
            refuse_existing(&[out.join(CLUSTER_KEY_FILE)])?;
            Some(std::fs::read_to_string(&from).map_err(io_error(&from))?)
        }
        Role::Admin | Role::User => None,
    };

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, format!("Shoal {}", req.identity.role));
    params.distinguished_name.push(DnType::CommonName, req.identity.name.clone());
    params.not_before = req.not_before;
    params.not_after = req.not_after;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.subject_alt_names.push(SanType::URI(req.identity.uri().try_into()?));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if req.identity.role == Role::Node {
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        params.subject_alt_names.push(SanType::DnsName(SERVER_NAME.try_into()?));
    }
    for name in &req.dns {
        params.subject_alt_names.push(SanType::DnsName(name.clone().try_into()?));
    }
    params.subject_alt_names.extend(req.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let cert = params.signed_by(&key, &issuer)?;

    std::fs::create_dir_all(out).map_err(io_error(out))?;
    write_new(&files[1], &key.serialize_pem(), true)?;
    write_new(&files[0], &cert.pem(), false)?;
    if let Some(text) = cluster_key {
        write_new(&out.join(CLUSTER_KEY_FILE), &text, true)?;
    }
    write_new(&files[2], &ca_pem, false)
}

/// The CA certificates in the PEM file `path`, to be trusted beside a
/// folder's own CA: only the certificate blocks are copied (nothing else in
/// the file, which might be secret), and each must be a CA's, since every
/// certificate in `ca.pem` may sign identities.
fn ca_certificates_pem(path: &Path) -> Result<String, CertError> {
    use rustls_pki_types::pem::PemObject;
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let refuse = || CertError::NotCaCertificates { path: path.to_path_buf() };
    let text = std::fs::read_to_string(path).map_err(io_error(path))?;
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let end = rest[start..].find(END).ok_or_else(refuse)? + start + END.len();
        let block = &rest[start..end];
        let der = rustls_pki_types::CertificateDer::from_pem_slice(block.as_bytes()).map_err(|_| refuse())?;
        if !crate::der::is_ca(&der) {
            return Err(refuse());
        }
        out.push_str(block);
        out.push('\n');
        rest = &rest[end..];
    }
    if out.is_empty() {
        return Err(refuse());
    }
    Ok(out)
}

/// Makes the CA in `ca_dir` unless it has one, and a certificate for
/// `identity` in `out` unless one is there: what `shoal up` does on every
/// start, so that a resumed cluster keeps its CA and certificates. A CA or
/// node folder made before cluster keys existed gets the key added.
pub fn ensure(ca_dir: &Path, identity: &Identity, out: &Path) -> Result<(), CertError> {
    if !ca_dir.join(CA_CERT_FILE).exists() {
        init_ca(ca_dir)?;
    }
    add_cluster_key(ca_dir)?;
    if !out.join(CERT_FILE).exists() {
        issue(ca_dir, &IssueRequest::new(identity.clone(), out.to_path_buf()))?;
    } else if identity.role == Role::Node && !out.join(CLUSTER_KEY_FILE).exists() {
        let from = ca_dir.join(CLUSTER_KEY_FILE);
        let text = std::fs::read_to_string(&from).map_err(io_error(&from))?;
        write_new(&out.join(CLUSTER_KEY_FILE), &text, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::{Credentials, IdentityError};

    #[test]
    fn a_ca_issues_certificates_that_carry_their_identity() {
        let t = tempfile::tempdir().unwrap();
        let ca = t.path().join("ca");
        init_ca(&ca).unwrap();
        let mode = std::fs::metadata(ca.join(CA_KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(init_ca(&ca), Err(CertError::Exists { .. })), "a second CA is refused");

        for role in Role::ALL {
            let out = t.path().join(role.as_str());
            let mut req = IssueRequest::new(Identity::new("alice", role).unwrap(), out.clone());
            req.ips.push("10.0.0.7".parse().unwrap());
            issue(&ca, &req).unwrap();
            let mode = std::fs::metadata(out.join(KEY_FILE)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            let creds = Credentials::load(&out).unwrap();
            assert_eq!(creds.identity, Identity { name: "alice".into(), role });
            // The cluster key goes to nodes only, and is the CA folder's.
            assert_eq!(out.join(CLUSTER_KEY_FILE).exists(), role == Role::Node, "{role}");
            assert_eq!(creds.cluster_key.is_some(), role == Role::Node, "{role}");
            if role == Role::Node {
                let mode = std::fs::metadata(out.join(CLUSTER_KEY_FILE)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600);
                let ca_key = std::fs::read(ca.join(CLUSTER_KEY_FILE)).unwrap();
                assert_eq!(std::fs::read(out.join(CLUSTER_KEY_FILE)).unwrap(), ca_key);
            }
            assert!(matches!(issue(&ca, &req), Err(CertError::Exists { .. })), "nothing is overwritten");
        }
    }

    #[test]
    fn a_ca_without_a_cluster_key_gets_one_and_node_folders_get_a_copy() {
        let t = tempfile::tempdir().unwrap();
        let ca = t.path().join("ca");
        init_ca(&ca).unwrap();
        let first = std::fs::read(ca.join(CLUSTER_KEY_FILE)).unwrap();
        assert_eq!(first.len(), 2 * CLUSTER_KEY_BYTES + 1);
        let mode = std::fs::metadata(ca.join(CLUSTER_KEY_FILE)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!add_cluster_key(&ca).unwrap(), "an existing key is kept");
        // A CA (and a node folder) from before cluster keys.
        let node = t.path().join("n1");
        let id = Identity::new("n1", Role::Node).unwrap();
        ensure(&ca, &id, &node).unwrap();
        std::fs::remove_file(ca.join(CLUSTER_KEY_FILE)).unwrap();
        std::fs::remove_file(node.join(CLUSTER_KEY_FILE)).unwrap();
        let other = t.path().join("n2");
        let req = IssueRequest::new(Identity::new("n2", Role::Node).unwrap(), other.clone());
        assert!(matches!(issue(&ca, &req), Err(CertError::NoClusterKey { .. })));
        assert!(!other.exists(), "a refused issue writes nothing");
        ensure(&ca, &id, &node).unwrap();
        let second = std::fs::read(ca.join(CLUSTER_KEY_FILE)).unwrap();
        assert_ne!(first, second, "keys are random");
        assert_eq!(std::fs::read(node.join(CLUSTER_KEY_FILE)).unwrap(), second);
        assert!(Credentials::load(&node).unwrap().cluster_key.is_some());
    }

    #[test]
    fn a_replacing_ca_keeps_the_cluster_key_and_its_folders_can_trust_both() {
        let t = tempfile::tempdir().unwrap();
        let (old, new) = (t.path().join("old"), t.path().join("new"));
        init_ca(&old).unwrap();
        let garbage = t.path().join("garbage");
        std::fs::write(&garbage, "not a key\n").unwrap();
        assert!(matches!(init_ca_with(&new, Some(&garbage)), Err(CertError::BadClusterKey { .. })));
        assert!(!new.join(CA_CERT_FILE).exists(), "a refused init writes nothing");
        init_ca_with(&new, Some(&old.join(CLUSTER_KEY_FILE))).unwrap();
        let key = |dir: &Path| std::fs::read(dir.join(CLUSTER_KEY_FILE)).unwrap();
        assert_eq!(key(&new), key(&old));
        assert_ne!(std::fs::read(new.join(CA_CERT_FILE)).unwrap(), std::fs::read(old.join(CA_CERT_FILE)).unwrap());

        let mut req = IssueRequest::new(Identity::new("n1", Role::Node).unwrap(), t.path().join("n1"));
        // Only CA certificates are trusted: not a key, not junk, not a
        // leaf (whose key could then sign identities).
        let leaf = IssueRequest::new(Identity::new("n0", Role::Node).unwrap(), t.path().join("n0"));
        issue(&old, &leaf).unwrap();
        for bad in [old.join(CA_KEY_FILE), garbage, leaf.out.join(CERT_FILE)] {
            req.also_trust = vec![bad.clone()];
            let refused = issue(&new, &req);
            assert!(matches!(refused, Err(CertError::NotCaCertificates { .. })), "{}: {refused:?}", bad.display());
        }
        assert!(!req.out.exists(), "a refused issue writes nothing");
        // A bundle with the cluster key in it: only the certificate goes in.
        let bundle = t.path().join("bundle.pem");
        let old_ca_text = std::fs::read_to_string(old.join(CA_CERT_FILE)).unwrap();
        let key_text = std::fs::read_to_string(old.join(CLUSTER_KEY_FILE)).unwrap();
        std::fs::write(&bundle, format!("{key_text}{old_ca_text}")).unwrap();
        req.also_trust = vec![bundle];
        issue(&new, &req).unwrap();
        let trusted = std::fs::read_to_string(req.out.join(CA_CERT_FILE)).unwrap();
        let new_pem = std::fs::read_to_string(new.join(CA_CERT_FILE)).unwrap();
        let old_pem = std::fs::read_to_string(old.join(CA_CERT_FILE)).unwrap();
        assert_eq!(trusted, format!("{new_pem}{old_pem}"), "its own CA first, then the old one");
        assert!(!trusted.contains(key_text.trim()), "the cluster key was copied into ca.pem");
        let creds = Credentials::load(&req.out).unwrap();
        assert_eq!(creds.cluster_key.unwrap().0.to_vec(), {
            let text = String::from_utf8(key(&old)).unwrap();
            crate::ClusterKey::parse(&text).unwrap().0.to_vec()
        });
    }

    #[test]
    fn bad_requests_change_nothing() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let req = IssueRequest::new(Identity::new("bob", Role::User).unwrap(), out.clone());
        assert!(matches!(issue(t.path(), &req), Err(CertError::NoCa { .. })));
        init_ca(t.path()).unwrap();
        let mut reserved = req.clone();
        reserved.dns.push(SERVER_NAME.to_string());
        assert!(matches!(issue(t.path(), &reserved), Err(CertError::ReservedName { .. })));
        assert!(matches!(req.clone().days(0), Err(CertError::BadDays)));
        assert!(!out.exists());
    }

    #[test]
    fn a_certificate_without_our_uri_has_no_identity() {
        let key = KeyPair::generate().unwrap();
        let plain = CertificateParams::new(vec!["example.org".to_string()]).unwrap().self_signed(&key).unwrap();
        assert_eq!(Identity::from_cert_der(plain.der()), Err(IdentityError::Missing));
        let mut two = CertificateParams::default();
        for uri in ["shoal://user/a", "shoal://admin/b"] {
            two.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        }
        let two = two.self_signed(&key).unwrap();
        assert_eq!(Identity::from_cert_der(two.der()), Err(IdentityError::Ambiguous));
    }
}
