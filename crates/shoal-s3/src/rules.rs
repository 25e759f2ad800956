//! The decisions about one object that need no IO: conditional requests,
//! ETags and the attributes an object's metadata is stored in.
//!
//! # ETags
//! The ETag of an object is the MD5 of its bytes, in hex; for an object made
//! by a multipart upload it is the MD5 of the binary MD5s of its parts,
//! followed by `-N` (N parts), as S3 does. It is stored in the attribute
//! [`ATTR_ETAG`] together with a *stamp* of the file it describes
//! ([`stamp`]: inode, size, and the time of the last committed write). A
//! write through any other front end (`shoal write`, the mount) commits a new
//! mtime, so the stamp no longer matches and the gateway computes the MD5
//! again instead of serving a stale one. A file written without the gateway
//! (`shoal put`) has no ETag until it is first needed.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

/// The attribute holding `"<stamp> <etag>"`.
pub const ATTR_ETAG: &str = "user.s3.etag";
/// The attribute holding the Content-Type.
pub const ATTR_CONTENT_TYPE: &str = "user.s3.content-type";
/// User metadata `x-amz-meta-<name>` is stored as `user.s3.meta.<name>`.
pub const ATTR_META_PREFIX: &str = "user.s3.meta.";
/// The attribute of a multipart upload's directory holding its key.
pub const ATTR_UPLOAD_KEY: &str = "user.s3.upload.key";

/// The ETag of an empty object: the MD5 of no bytes.
pub const EMPTY_ETAG: &str = "d41d8cd98f00b204e9800998ecf8427e";

/// The stamp of a file's content: it changes with every committed write.
pub fn stamp(inode: u64, size: u64, mtime_ms: u64) -> String {
    format!("{inode}:{size}:{mtime_ms}")
}

/// The attribute value for `etag` of content stamped `stamp`.
pub fn etag_attr(stamp: &str, etag: &str) -> Vec<u8> {
    format!("{stamp} {etag}").into_bytes()
}

/// The stored ETag, if it was stored for content with this `stamp`.
pub fn stored_etag(xattrs: &BTreeMap<String, Vec<u8>>, stamp: &str) -> Option<String> {
    let v = std::str::from_utf8(xattrs.get(ATTR_ETAG)?).ok()?;
    let (s, etag) = v.split_once(' ')?;
    (s == stamp && !etag.is_empty()).then(|| etag.to_string())
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The ETag of a multipart object from its parts' ETags (hex MD5s).
pub fn multipart_etag(part_etags: &[String]) -> Option<String> {
    let mut h = Md5::new();
    for e in part_etags {
        let e = e.trim_matches('"');
        if e.len() != 32 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..32).step_by(2).map(|i| u8::from_str_radix(&e[i..i + 2], 16).ok()).collect();
        h.update(bytes?);
    }
    Some(format!("{}-{}", hex(&h.finalize()), part_etags.len()))
}

/// The user metadata and content type kept in `xattrs`.
pub fn metadata_of(xattrs: &BTreeMap<String, Vec<u8>>) -> (Option<String>, BTreeMap<String, String>) {
    let content_type = xattrs.get(ATTR_CONTENT_TYPE).and_then(|v| String::from_utf8(v.clone()).ok());
    let meta = xattrs
        .iter()
        .filter_map(|(n, v)| Some((n.strip_prefix(ATTR_META_PREFIX)?.to_string(), String::from_utf8(v.clone()).ok()?)))
        .collect();
    (content_type, meta)
}

/// The attributes for a content type and user metadata.
pub fn metadata_attrs(content_type: Option<&str>, meta: &BTreeMap<String, String>) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = meta
        .iter()
        .map(|(k, v)| (format!("{ATTR_META_PREFIX}{}", k.to_ascii_lowercase()), v.clone().into_bytes()))
        .collect();
    if let Some(ct) = content_type {
        out.insert(ATTR_CONTENT_TYPE.to_string(), ct.as_bytes().to_vec());
    }
    out
}

/// The names of the metadata attributes in `xattrs` (content type and user metadata).
pub fn metadata_names(xattrs: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    xattrs.keys().filter(|n| *n == ATTR_CONTENT_TYPE || n.starts_with(ATTR_META_PREFIX)).cloned().collect()
}

/// An `If-Match` / `If-None-Match` condition: any (`*`) or a list of ETags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtagCondition {
    Any,
    Etag(String),
}

/// The conditional headers of a GET or HEAD (or a copy's source).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    pub if_match: Option<EtagCondition>,
    pub if_none_match: Option<EtagCondition>,
    /// Seconds since the epoch.
    pub if_modified_since: Option<i64>,
    pub if_unmodified_since: Option<i64>,
}

/// What the conditions say about serving the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Proceed,
    /// 304: the client's copy is current.
    NotModified,
    /// 412.
    PreconditionFailed,
}

fn matches(c: &EtagCondition, etag: &str) -> bool {
    match c {
        EtagCondition::Any => true,
        EtagCondition::Etag(e) => e.trim_start_matches("W/").trim_matches('"') == etag,
    }
}

/// RFC 9110 section 13.2.2, as S3 applies it: If-Match, else
/// If-Unmodified-Since; then If-None-Match, else If-Modified-Since. Times
/// compare at whole seconds (`modified` in seconds since the epoch).
pub fn evaluate(c: &Conditions, etag: &str, modified: i64) -> Verdict {
    match &c.if_match {
        Some(m) if !matches(m, etag) => return Verdict::PreconditionFailed,
        Some(_) => {}
        None => {
            if c.if_unmodified_since.is_some_and(|t| modified > t) {
                return Verdict::PreconditionFailed;
            }
        }
    }
    match &c.if_none_match {
        Some(m) if matches(m, etag) => Verdict::NotModified,
        Some(_) => Verdict::Proceed,
        None if c.if_modified_since.is_some_and(|t| modified <= t) => Verdict::NotModified,
        None => Verdict::Proceed,
    }
}

/// An inclusive byte range request (`bytes=first-last`, `bytes=first-`, `bytes=-suffix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    From { first: u64, last: Option<u64> },
    Suffix { len: u64 },
}

/// The half-open span a range selects in an object of `size` bytes; None when
/// it selects nothing (416 InvalidRange).
pub fn resolve_range(r: ByteRange, size: u64) -> Option<std::ops::Range<u64>> {
    match r {
        ByteRange::From { first, last } => {
            if first >= size || last.is_some_and(|l| l < first) {
                return None;
            }
            Some(first..last.map_or(size, |l| l.saturating_add(1).min(size)))
        }
        ByteRange::Suffix { len } => (len > 0 && size > 0).then(|| size.saturating_sub(len)..size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_requests() {
        let e = "abc";
        let t = 1_000;
        let c = |f: fn(&mut Conditions)| {
            let mut c = Conditions::default();
            f(&mut c);
            evaluate(&c, e, t)
        };
        use EtagCondition::*;
        use Verdict::*;
        assert_eq!(c(|_| {}), Proceed);
        assert_eq!(c(|c| c.if_match = Some(Etag("\"abc\"".into()))), Proceed);
        assert_eq!(c(|c| c.if_match = Some(Etag("\"xyz\"".into()))), PreconditionFailed);
        assert_eq!(c(|c| c.if_match = Some(Any)), Proceed);
        assert_eq!(c(|c| c.if_none_match = Some(Etag("abc".into()))), NotModified);
        assert_eq!(c(|c| c.if_none_match = Some(Any)), NotModified);
        assert_eq!(c(|c| c.if_none_match = Some(Etag("xyz".into()))), Proceed);
        assert_eq!(c(|c| c.if_modified_since = Some(1_000)), NotModified);
        assert_eq!(c(|c| c.if_modified_since = Some(999)), Proceed);
        assert_eq!(c(|c| c.if_unmodified_since = Some(999)), PreconditionFailed);
        assert_eq!(c(|c| c.if_unmodified_since = Some(1_000)), Proceed);
        // If-Match passing overrides If-Unmodified-Since; If-None-Match not
        // matching overrides If-Modified-Since.
        assert_eq!(
            c(|c| {
                c.if_match = Some(Etag("abc".into()));
                c.if_unmodified_since = Some(1);
            }),
            Proceed
        );
        assert_eq!(
            c(|c| {
                c.if_none_match = Some(Etag("xyz".into()));
                c.if_modified_since = Some(5_000);
            }),
            Proceed
        );
        assert_eq!(
            c(|c| {
                c.if_match = Some(Etag("xyz".into()));
                c.if_none_match = Some(Etag("abc".into()));
            }),
            PreconditionFailed
        );
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(resolve_range(From { first: 0, last: Some(0) }, 10), Some(0..1));
        assert_eq!(resolve_range(From { first: 5, last: None }, 10), Some(5..10));
        assert_eq!(resolve_range(From { first: 5, last: Some(100) }, 10), Some(5..10));
        assert_eq!(resolve_range(From { first: 10, last: None }, 10), None);
        assert_eq!(resolve_range(From { first: 6, last: Some(5) }, 10), None);
        assert_eq!(resolve_range(Suffix { len: 3 }, 10), Some(7..10));
        assert_eq!(resolve_range(Suffix { len: 30 }, 10), Some(0..10));
        assert_eq!(resolve_range(Suffix { len: 0 }, 10), None);
        assert_eq!(resolve_range(From { first: 0, last: None }, 0), None);
    }

    #[test]
    fn etags() {
        let a = hex(&Md5::digest(b"hello"));
        assert_eq!(a, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(hex(&Md5::digest(b"")), EMPTY_ETAG);
        let mut x = BTreeMap::new();
        x.insert(ATTR_ETAG.to_string(), etag_attr("7:5:9", &a));
        assert_eq!(stored_etag(&x, "7:5:9").as_deref(), Some(a.as_str()));
        assert_eq!(stored_etag(&x, "7:5:10"), None, "a newer write makes it stale");
        // Two parts of "hello": md5(md5 || md5) + "-2".
        let mut both = Md5::digest(b"hello").to_vec();
        both.extend(Md5::digest(b"hello"));
        assert_eq!(multipart_etag(&[a.clone(), format!("\"{a}\"")]), Some(format!("{}-2", hex(&Md5::digest(&both)))));
        assert_eq!(multipart_etag(&["nothex".into()]), None);
    }

    #[test]
    fn metadata_round_trips() {
        let meta = BTreeMap::from([("Color".to_string(), "blue".to_string())]);
        let attrs = metadata_attrs(Some("text/plain"), &meta);
        let (ct, back) = metadata_of(&attrs);
        assert_eq!(ct.as_deref(), Some("text/plain"));
        assert_eq!(back, BTreeMap::from([("color".to_string(), "blue".to_string())]));
        assert_eq!(metadata_names(&attrs).len(), 2);
    }
}

/// Decodes standard base64 (Content-MD5); None when it is not.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let s = s.trim().trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes() {
        acc = (acc << 6) | u32::from(val(c)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod base64_tests {
    #[test]
    fn content_md5() {
        // md5("hello") in base64, as clients send it.
        let b = super::base64_decode("XUFAKrxLKna5cZ2REBfFkg==").unwrap();
        assert_eq!(super::hex(&b), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(super::base64_decode("!!"), None);
    }
}
