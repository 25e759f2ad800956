//! Chunk capabilities: meta's signed permission for one identity to write
//! or read one version of one chunk, for a short while. Pure: encoding,
//! signing and checking, with the clock passed in.
//!
//! A [`Grant`] is the plain data (chunk, version, holder's identity URI,
//! [`Mode`], expiry in Unix milliseconds). [`CapabilityKey::sign`] encodes
//! it as a `CapabilityBody` and tags those bytes with HMAC-SHA256 under the
//! cluster key; [`CapabilityKey::check`] verifies the tag over the bytes as
//! received (before decoding them), then that the grant is for this
//! request: same chunk, version, mode and identity, and not expired. Every
//! refusal names its reason ([`Refusal`]).
//!
//! Meta signs a write capability for the version a `PrepareWrite` grants,
//! and a read capability for each committed version a `Layout` hands out.
//! Chunk servers check them on `Write` and `Read` from clients; node
//! identities (replicas forwarding a chain, repair copies) need none.
//!
//! **Time.** Capabilities live [`LIFETIME_DEFAULT`] (meta's
//! `--capability-lifetime`); the checker accepts one up to
//! [`SKEW_MARGIN_DEFAULT`] past its expiry (the chunk server's
//! `--capability-skew`), for clocks of meta and chunk servers that disagree
//! by up to that much. A client that meets an expired one asks meta
//! again (see `shoal_client::retry`), so a slow reader or a big file works.

use prost::Message;
use ring::hmac;

use crate::chunk::{Capability, CapabilityBody, CapabilityMode};

/// How long a capability is valid after meta signs it, unless configured.
pub const LIFETIME_DEFAULT: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// Bounds of a configured lifetime: long enough to get from meta to a chunk
/// server, short enough that a leaked capability soon goes stale.
pub const LIFETIME_MIN: std::time::Duration = std::time::Duration::from_secs(1);
pub const LIFETIME_MAX: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// How far past its expiry a capability is still taken, unless configured:
/// the clock skew between meta nodes and chunk servers this tolerates.
pub const SKEW_MARGIN_DEFAULT: std::time::Duration = std::time::Duration::from_secs(60);
/// Largest configurable skew margin.
pub const SKEW_MARGIN_MAX: std::time::Duration = std::time::Duration::from_secs(3600);
/// Largest encoded body a checker looks at (an identity URI is at most
/// about 80 bytes; the numbers fit in 40).
const BODY_MAX_BYTES: usize = 512;

/// What a capability lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Write,
    Read,
}

impl Mode {
    fn to_pb(self) -> CapabilityMode {
        match self {
            Mode::Write => CapabilityMode::Write,
            Mode::Read => CapabilityMode::Read,
        }
    }
}

/// The plain data of a capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub chunk_id: u64,
    pub version: u64,
    /// `shoal://ROLE/NAME` of the holder's certificate.
    pub identity: String,
    pub mode: Mode,
    pub expires_at_ms: u64,
}

/// What a request asks to do, to check a capability against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask<'a> {
    pub chunk_id: u64,
    pub version: u64,
    /// The TLS peer's identity URI.
    pub identity: &'a str,
    pub mode: Mode,
    /// The checker's clock, Unix milliseconds.
    pub now_ms: u64,
}

/// Why a capability was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no chunk capability: ask meta for the chunk (PrepareWrite or Layout) and send what it answers")]
    Missing,
    #[error("the chunk capability's signature is not meta's (forged or tampered with)")]
    BadTag,
    #[error("the chunk capability cannot be decoded")]
    Malformed,
    #[error("the chunk capability expired at {expires_at_ms} ms (now {now_ms} ms)")]
    Expired { expires_at_ms: u64, now_ms: u64 },
    #[error("the chunk capability is for chunk {granted}, not {asked}")]
    WrongChunk { granted: u64, asked: u64 },
    #[error("the chunk capability is for version {granted}, not {asked}")]
    WrongVersion { granted: u64, asked: u64 },
    #[error("the chunk capability was given to {granted}, not to {asked}")]
    WrongIdentity { granted: String, asked: String },
    #[error("the chunk capability lets its holder {granted:?}, not {asked:?}")]
    WrongMode { granted: Option<Mode>, asked: Mode },
}

impl Refusal {
    /// Whether asking meta again would help (the capability only expired).
    pub fn is_expired(&self) -> bool {
        matches!(self, Refusal::Expired { .. })
    }
}

/// The cluster key, ready to sign and check, and the checker's skew margin.
#[derive(Clone)]
pub struct CapabilityKey {
    key: hmac::Key,
    skew_margin_ms: u64,
}

impl std::fmt::Debug for CapabilityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CapabilityKey(..)")
    }
}

impl CapabilityKey {
    pub fn new(secret: &shoal_tls::ClusterKey) -> CapabilityKey {
        CapabilityKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret.0),
            skew_margin_ms: SKEW_MARGIN_DEFAULT.as_millis() as u64,
        }
    }

    /// This key, checking expiry with `margin` instead of the default.
    pub fn with_skew_margin(mut self, margin: std::time::Duration) -> CapabilityKey {
        assert!(margin <= SKEW_MARGIN_MAX, "a skew margin of {margin:?}");
        self.skew_margin_ms = margin.as_millis() as u64;
        self
    }

    /// The key of a transport's credentials; None for `--insecure` and for
    /// credentials without a cluster key.
    pub fn of(transport: &crate::Transport) -> Option<CapabilityKey> {
        transport.cluster_key().map(CapabilityKey::new)
    }

    /// Encodes and tags `grant`.
    pub fn sign(&self, grant: &Grant) -> Capability {
        let body = CapabilityBody {
            chunk_id: grant.chunk_id,
            version: grant.version,
            identity: grant.identity.clone(),
            mode: grant.mode.to_pb() as i32,
            expires_at_ms: grant.expires_at_ms,
        }
        .encode_to_vec();
        assert!(body.len() <= BODY_MAX_BYTES, "a capability body of {} bytes", body.len());
        let tag = hmac::sign(&self.key, &body).as_ref().to_vec();
        Capability { body: body.into(), tag: tag.into() }
    }

    /// The grant in `cap` if it lets `ask` happen (see the module docs).
    pub fn check(&self, cap: Option<&Capability>, ask: &Ask<'_>) -> Result<Grant, Refusal> {
        let cap = cap.ok_or(Refusal::Missing)?;
        if cap.body.is_empty() && cap.tag.is_empty() {
            return Err(Refusal::Missing);
        }
        if cap.body.len() > BODY_MAX_BYTES {
            return Err(Refusal::Malformed);
        }
        hmac::verify(&self.key, &cap.body, &cap.tag).map_err(|_| Refusal::BadTag)?;
        let body = CapabilityBody::decode(cap.body.as_ref()).map_err(|_| Refusal::Malformed)?;
        let mode = match CapabilityMode::try_from(body.mode) {
            Ok(CapabilityMode::Write) => Some(Mode::Write),
            Ok(CapabilityMode::Read) => Some(Mode::Read),
            _ => None,
        };
        if body.chunk_id != ask.chunk_id {
            return Err(Refusal::WrongChunk { granted: body.chunk_id, asked: ask.chunk_id });
        }
        if body.version != ask.version {
            return Err(Refusal::WrongVersion { granted: body.version, asked: ask.version });
        }
        if mode != Some(ask.mode) {
            return Err(Refusal::WrongMode { granted: mode, asked: ask.mode });
        }
        if body.identity != ask.identity {
            return Err(Refusal::WrongIdentity { granted: body.identity, asked: ask.identity.to_string() });
        }
        if ask.now_ms > body.expires_at_ms.saturating_add(self.skew_margin_ms) {
            return Err(Refusal::Expired { expires_at_ms: body.expires_at_ms, now_ms: ask.now_ms });
        }
        let mode = mode.expect("checked against the asked mode");
        Ok(Grant {
            chunk_id: body.chunk_id,
            version: body.version,
            identity: body.identity,
            mode,
            expires_at_ms: body.expires_at_ms,
        })
    }
}

/// The key a server signs or checks capabilities with: none for an
/// `--insecure` server (nothing is checked), and an error for TLS
/// credentials without a cluster key (a server must not run unchecked by
/// accident).
pub fn server_key(transport: &crate::Transport) -> Result<Option<CapabilityKey>, String> {
    match transport {
        crate::Transport::Insecure => Ok(None),
        crate::Transport::Tls(c) => match &c.cluster_key {
            Some(k) => Ok(Some(CapabilityKey::new(k))),
            None => Err(format!(
                "{} holds no cluster key ({}), which signs and checks chunk capabilities: issue the node's \
                 credentials again with `shoal cert issue --role node` (`shoal cert init` adds a key to an older CA \
                 folder), or copy the CA folder's {} there",
                c.dir.display(),
                shoal_tls::CLUSTER_KEY_FILE,
                shoal_tls::CLUSTER_KEY_FILE
            )),
        },
    }
}

/// A capability as it crosses in meta's answers (`ChunkLocation.capability`).
pub fn encode(cap: &Capability) -> Vec<u8> {
    cap.encode_to_vec()
}

/// [`encode`]'s reverse; None for no bytes or bytes that do not decode (the
/// chunk server then refuses the call, saying why).
pub fn decode(bytes: &[u8]) -> Option<Capability> {
    if bytes.is_empty() {
        return None;
    }
    Capability::decode(bytes).ok()
}

/// When a capability signed at `now_ms` to live `lifetime` expires.
pub fn expiry_from(now_ms: u64, lifetime: std::time::Duration) -> u64 {
    now_ms.saturating_add(lifetime.as_millis() as u64)
}

/// The system clock in Unix milliseconds (0 if it is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> CapabilityKey {
        CapabilityKey::new(&shoal_tls::ClusterKey([byte; shoal_tls::CLUSTER_KEY_BYTES]))
    }

    const NOW: u64 = 1_800_000_000_000;
    const ALICE: &str = "shoal://user/alice";

    fn grant(mode: Mode) -> Grant {
        Grant {
            chunk_id: 7,
            version: 3,
            identity: ALICE.into(),
            mode,
            expires_at_ms: expiry_from(NOW, LIFETIME_DEFAULT),
        }
    }

    fn ask(mode: Mode) -> Ask<'static> {
        Ask { chunk_id: 7, version: 3, identity: ALICE, mode, now_ms: NOW }
    }

    #[test]
    fn a_signed_grant_checks_for_exactly_its_request() {
        let k = key(1);
        for mode in [Mode::Write, Mode::Read] {
            let cap = k.sign(&grant(mode));
            assert_eq!(k.check(Some(&cap), &ask(mode)), Ok(grant(mode)));
        }
    }

    #[test]
    fn every_mismatch_is_refused_with_its_reason() {
        let k = key(1);
        let cap = k.sign(&grant(Mode::Write));
        let base = ask(Mode::Write);
        let cases: Vec<(Ask<'_>, Refusal)> = vec![
            (Ask { chunk_id: 8, ..base }, Refusal::WrongChunk { granted: 7, asked: 8 }),
            (Ask { version: 4, ..base }, Refusal::WrongVersion { granted: 3, asked: 4 }),
            (Ask { version: 2, ..base }, Refusal::WrongVersion { granted: 3, asked: 2 }),
            (
                Ask { identity: "shoal://user/mallory", ..base },
                Refusal::WrongIdentity { granted: ALICE.into(), asked: "shoal://user/mallory".into() },
            ),
            (
                Ask { identity: "shoal://admin/alice", ..base },
                Refusal::WrongIdentity { granted: ALICE.into(), asked: "shoal://admin/alice".into() },
            ),
            (Ask { mode: Mode::Read, ..base }, Refusal::WrongMode { granted: Some(Mode::Write), asked: Mode::Read }),
        ];
        for (ask, want) in cases {
            assert_eq!(k.check(Some(&cap), &ask), Err(want), "{ask:?}");
        }
        assert_eq!(k.check(None, &base), Err(Refusal::Missing));
        assert_eq!(k.check(Some(&Capability::default()), &base), Err(Refusal::Missing));
    }

    #[test]
    fn a_tampered_or_foreign_capability_is_refused() {
        let k = key(1);
        let cap = k.sign(&grant(Mode::Write));
        // Another cluster's key.
        assert_eq!(key(2).check(Some(&cap), &ask(Mode::Write)), Err(Refusal::BadTag));
        // Every single bit of the body and of the tag matters.
        for i in 0..cap.body.len() * 8 {
            let mut body = cap.body.to_vec();
            body[i / 8] ^= 1 << (i % 8);
            let bad = Capability { body: body.into(), tag: cap.tag.clone() };
            assert_eq!(k.check(Some(&bad), &ask(Mode::Write)), Err(Refusal::BadTag), "body bit {i}");
        }
        for i in 0..cap.tag.len() * 8 {
            let mut tag = cap.tag.to_vec();
            tag[i / 8] ^= 1 << (i % 8);
            let bad = Capability { body: cap.body.clone(), tag: tag.into() };
            assert_eq!(k.check(Some(&bad), &ask(Mode::Write)), Err(Refusal::BadTag), "tag bit {i}");
        }
        // A body re-signed by someone without the key: a truncated tag, no tag.
        let short = Capability { body: cap.body.clone(), tag: cap.tag.slice(..16) };
        assert_eq!(k.check(Some(&short), &ask(Mode::Write)), Err(Refusal::BadTag));
        let none = Capability { body: cap.body.clone(), tag: Default::default() };
        assert_eq!(k.check(Some(&none), &ask(Mode::Write)), Err(Refusal::BadTag));
        // An oversized body is not even hashed.
        let huge = Capability { body: vec![0u8; BODY_MAX_BYTES + 1].into(), tag: cap.tag.clone() };
        assert_eq!(k.check(Some(&huge), &ask(Mode::Write)), Err(Refusal::Malformed));
        // Correctly tagged junk (only a key holder could make it) does not decode.
        let junk = vec![0xffu8; 8];
        let tag = hmac::sign(&k.key, &junk).as_ref().to_vec();
        let junk = Capability { body: junk.into(), tag: tag.into() };
        assert_eq!(k.check(Some(&junk), &ask(Mode::Write)), Err(Refusal::Malformed));
    }

    #[test]
    fn expiry_allows_the_skew_margin_and_no_more() {
        let k = key(1);
        let cap = k.sign(&grant(Mode::Read));
        let expires = expiry_from(NOW, LIFETIME_DEFAULT);
        let margin = SKEW_MARGIN_DEFAULT.as_millis() as u64;
        for now_ms in [NOW, expires, expires + margin] {
            assert!(k.check(Some(&cap), &Ask { now_ms, ..ask(Mode::Read) }).is_ok(), "at {now_ms}");
        }
        let late = expires + margin + 1;
        let refused = k.check(Some(&cap), &Ask { now_ms: late, ..ask(Mode::Read) }).unwrap_err();
        assert_eq!(refused, Refusal::Expired { expires_at_ms: expires, now_ms: late });
        assert!(refused.is_expired());
        assert!(!Refusal::BadTag.is_expired());
        assert!(LIFETIME_DEFAULT > 2 * SKEW_MARGIN_DEFAULT, "the margin is small against the lifetime");
        // With no margin, a capability is refused the moment it expires.
        let strict = key(1).with_skew_margin(std::time::Duration::ZERO);
        assert!(strict.check(Some(&cap), &Ask { now_ms: expires, ..ask(Mode::Read) }).is_ok());
        let refused = strict.check(Some(&cap), &Ask { now_ms: expires + 1, ..ask(Mode::Read) });
        assert!(refused.unwrap_err().is_expired());
    }

    #[test]
    fn capabilities_cross_as_bytes() {
        let cap = key(1).sign(&grant(Mode::Write));
        assert_eq!(decode(&encode(&cap)), Some(cap));
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0xff, 0xff, 0xff]), None);
    }

    #[test]
    fn an_unknown_mode_grants_nothing() {
        let k = key(1);
        let body = CapabilityBody {
            chunk_id: 7,
            version: 3,
            identity: ALICE.into(),
            mode: CapabilityMode::Unspecified as i32,
            expires_at_ms: expiry_from(NOW, LIFETIME_DEFAULT),
        }
        .encode_to_vec();
        let tag = hmac::sign(&k.key, &body).as_ref().to_vec();
        let cap = Capability { body: body.into(), tag: tag.into() };
        for mode in [Mode::Write, Mode::Read] {
            assert_eq!(k.check(Some(&cap), &ask(mode)), Err(Refusal::WrongMode { granted: None, asked: mode }));
        }
    }
}
