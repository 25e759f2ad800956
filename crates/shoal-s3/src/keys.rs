//! Where buckets and objects live in Shoal's namespace, and which names are refused.
//!
//! A bucket is a directory at the top of the namespace; an object key is a
//! path below it, with `/` as the separator. The gateway's own working area
//! ([`WORK_DIR`]: temporary objects and multipart staging) is a directory
//! whose name is not a valid bucket name, so no bucket can collide with it and
//! [`is_bucket_name`] keeps it out of ListBuckets.
//!
//! Pure functions over strings: no IO.

use std::fmt;

/// The gateway's working area: temporaries and multipart uploads.
pub const WORK_DIR: &str = "/.shoal-s3";
/// Objects being written, before they are renamed into place.
pub const TMP_DIR: &str = "/.shoal-s3/tmp";
/// Multipart uploads being assembled, one directory per upload.
pub const UPLOADS_DIR: &str = "/.shoal-s3/uploads";
/// The longest key S3 allows, in bytes.
pub const KEY_MAX_BYTES: usize = 1024;
/// The longest name of one path component (as Shoal's namespace allows).
pub const COMPONENT_MAX_BYTES: usize = 255;

/// Why a bucket name or key cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Not 3-63 lowercase letters, digits, `-` and `.`, starting and ending
    /// with a letter or digit.
    BadBucket {
        bucket: String,
    },
    Empty,
    KeyTooLong {
        len: usize,
    },
    /// `a//b`, a leading `/` or a trailing `/`: a path has no empty component.
    EmptyComponent {
        key: String,
    },
    /// `.` or `..` as a component.
    DotComponent {
        key: String,
    },
    ComponentTooLong {
        key: String,
        len: usize,
    },
    Nul {
        key: String,
    },
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::BadBucket { bucket } => write!(
                f,
                "bucket name {bucket:?} must be 3-63 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
            ),
            NameError::Empty => write!(f, "the object key is empty"),
            NameError::KeyTooLong { len } => write!(f, "the key is {len} bytes, more than {KEY_MAX_BYTES}"),
            NameError::EmptyComponent { key } => write!(
                f,
                "key {key:?} has an empty path component (a leading or trailing '/', or '//'), which Shoal cannot store"
            ),
            NameError::DotComponent { key } => {
                write!(f, "key {key:?} has a '.' or '..' path component, which Shoal cannot store")
            }
            NameError::ComponentTooLong { key, len } => {
                write!(f, "key {key:?} has a path component of {len} bytes; Shoal allows at most {COMPONENT_MAX_BYTES}")
            }
            NameError::Nul { key } => write!(f, "key {key:?} contains NUL"),
        }
    }
}

/// True for names S3 allows for a bucket (the DNS-compatible rules).
pub fn is_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
}

/// The directory of bucket `bucket`.
pub fn bucket_path(bucket: &str) -> Result<String, NameError> {
    if !is_bucket_name(bucket) {
        return Err(NameError::BadBucket { bucket: bucket.to_string() });
    }
    Ok(format!("/{bucket}"))
}

/// Checks that `key` can be a path: non-empty, at most [`KEY_MAX_BYTES`],
/// components non-empty, not `.` or `..`, at most [`COMPONENT_MAX_BYTES`], no NUL.
pub fn check_key(key: &str) -> Result<(), NameError> {
    if key.is_empty() {
        return Err(NameError::Empty);
    }
    if key.len() > KEY_MAX_BYTES {
        return Err(NameError::KeyTooLong { len: key.len() });
    }
    if key.contains('\0') {
        return Err(NameError::Nul { key: key.to_string() });
    }
    for c in key.split('/') {
        match c {
            "" => return Err(NameError::EmptyComponent { key: key.to_string() }),
            "." | ".." => return Err(NameError::DotComponent { key: key.to_string() }),
            c if c.len() > COMPONENT_MAX_BYTES => {
                return Err(NameError::ComponentTooLong { key: key.to_string(), len: c.len() });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The path of object `key` in bucket `bucket`.
pub fn object_path(bucket: &str, key: &str) -> Result<String, NameError> {
    let dir = bucket_path(bucket)?;
    check_key(key)?;
    Ok(format!("{dir}/{key}"))
}

/// The directory that holds `path` (`/b/x/y` → `/b/x`).
pub fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket", "a.b.c", "0bucket9"] {
            assert!(is_bucket_name(ok), "{ok}");
        }
        for bad in ["ab", "ABC", "-abc", "abc-", "a..b", ".shoal-s3", "a_b", &"a".repeat(64)] {
            assert!(!is_bucket_name(bad), "{bad}");
        }
        assert!(!is_bucket_name(&WORK_DIR[1..]), "the working area is never a bucket");
    }

    #[test]
    fn keys_to_paths() {
        assert_eq!(object_path("b1b", "x/y.txt").unwrap(), "/b1b/x/y.txt");
        assert_eq!(object_path("b1b", "ünï cøde & spaces").unwrap(), "/b1b/ünï cøde & spaces");
        assert_eq!(object_path("b1b", ".hidden/.x").unwrap(), "/b1b/.hidden/.x");
        type Want = fn(&NameError) -> bool;
        let cases: &[(&str, Want)] = &[
            ("", |e| matches!(e, NameError::Empty)),
            ("a//b", |e| matches!(e, NameError::EmptyComponent { .. })),
            ("/a", |e| matches!(e, NameError::EmptyComponent { .. })),
            ("a/", |e| matches!(e, NameError::EmptyComponent { .. })),
            ("a/../b", |e| matches!(e, NameError::DotComponent { .. })),
            ("./a", |e| matches!(e, NameError::DotComponent { .. })),
            ("a\0b", |e| matches!(e, NameError::Nul { .. })),
        ];
        for (key, want) in cases {
            let e = object_path("b1b", key).unwrap_err();
            assert!(want(&e), "{key:?}: {e:?}");
        }
        let long = "x".repeat(256);
        assert!(matches!(check_key(&long), Err(NameError::ComponentTooLong { len: 256, .. })));
        assert!(check_key(&format!("{}/{}", "x".repeat(255), "y")).is_ok());
        assert!(matches!(check_key(&"a/".repeat(513)), Err(NameError::KeyTooLong { .. })));
        assert!(matches!(object_path("B", "k"), Err(NameError::BadBucket { .. })));
        assert_eq!(parent_of("/b/x/y"), "/b/x");
        assert_eq!(parent_of("/b"), "/");
    }
}
