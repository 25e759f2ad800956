//! Just enough DER to read two extensions of a certificate (RFC 5280):
//! Certificate → TBSCertificate → extensions [3] → the extension 2.5.29.17
//! (subject alternative names) → its GeneralNames → each
//! uniformResourceIdentifier [6]; and 2.5.29.19 (basic constraints) → its
//! `cA` flag.
//!
//! The certificate was already verified against the cluster CA by rustls
//! before it gets here; this only reads it. Anything malformed is None,
//! never a panic.

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
/// `[3] EXPLICIT Extensions` in a TBSCertificate.
const EXTENSIONS: u8 = 0xa3;
/// `[6] IMPLICIT IA5String` in a GeneralName.
const URI: u8 = 0x86;
/// 2.5.29.17, subjectAltName.
const SAN_OID: [u8; 3] = [0x55, 0x1d, 0x11];
/// 2.5.29.19, basicConstraints.
const BASIC_CONSTRAINTS_OID: [u8; 3] = [0x55, 0x1d, 0x13];

/// One element: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags never occur in the parts read here
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The contents of an element that must have tag `tag`, and what follows.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, contents, rest) = element(input)?;
    (t == tag).then_some((contents, rest))
}

/// The value (the OCTET STRING's contents) of the certificate's extension
/// `wanted`: Some(None) if it has no such extension; None if the
/// certificate is malformed.
fn extension<'a>(cert: &'a [u8], wanted: &[u8]) -> Option<Option<&'a [u8]>> {
    let (cert, _) = expect(cert, SEQUENCE)?;
    let (mut tbs, _) = expect(cert, SEQUENCE)?;
    while !tbs.is_empty() {
        let (tag, contents, rest) = element(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (mut extensions, _) = expect(contents, SEQUENCE)?;
        while !extensions.is_empty() {
            let (extension, rest) = expect(extensions, SEQUENCE)?;
            extensions = rest;
            let (oid, extension) = expect(extension, OID)?;
            if oid != wanted {
                continue;
            }
            // critical BOOLEAN DEFAULT FALSE, then the value.
            let (mut tag, mut value, after) = element(extension)?;
            if tag == BOOLEAN {
                (tag, value, _) = element(after)?;
            }
            return (tag == OCTET_STRING).then_some(Some(value));
        }
        return Some(None);
    }
    Some(None)
}

/// The URIs among the certificate's subject alternative names (none if it
/// has no such extension); None if the certificate is malformed.
pub fn san_uris(cert: &[u8]) -> Option<Vec<&[u8]>> {
    let Some(value) = extension(cert, &SAN_OID)? else { return Some(Vec::new()) };
    let (mut names, _) = expect(value, SEQUENCE)?;
    let mut uris = Vec::new();
    while !names.is_empty() {
        let (tag, name, rest) = element(names)?;
        names = rest;
        if tag == URI {
            uris.push(name);
        }
    }
    Some(uris)
}

/// Whether the certificate says it is a CA (basic constraints with `cA`
/// true); false for a leaf, and for anything malformed.
pub fn is_ca(cert: &[u8]) -> bool {
    let Some(Some(value)) = extension(cert, &BASIC_CONSTRAINTS_OID) else { return false };
    // BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, ... }
    let Some((constraints, _)) = expect(value, SEQUENCE) else { return false };
    matches!(element(constraints), Some((BOOLEAN, [flag], _)) if *flag != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_and_garbage_input_is_refused_without_panic() {
        assert_eq!(san_uris(&[]), None);
        assert_eq!(san_uris(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(san_uris(&[0x30, 0x05, 0x30]), None);
        assert!(!is_ca(&[]));
        assert!(!is_ca(&[0x30, 0x05, 0x30]));
        // Every prefix of a long element fails cleanly.
        let mut bytes = vec![0x30, 0x82, 0x01, 0x00];
        bytes.extend(std::iter::repeat_n(0x30, 256));
        for n in 0..bytes.len() {
            let _ = san_uris(&bytes[..n]);
            let _ = is_ca(&bytes[..n]);
        }
    }
}
