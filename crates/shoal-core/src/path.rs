//! Path rules of the namespace.
//!
//! A Shoal path is absolute and `/`-separated. [`NormalPath::parse`] accepts a
//! path only in its plain form (a trailing `/` and `.` components are tolerated
//! and dropped) and rejects, with a reason, anything that could name two
//! places: `..`, empty components (`a//b`), NUL bytes, and names longer than
//! [`NAME_MAX_BYTES`]. The root is the path with no components.

use serde::{Deserialize, Serialize};

/// Longest allowed name of one path component, in bytes (as in POSIX NAME_MAX).
pub const NAME_MAX_BYTES: usize = 255;
/// Longest allowed whole path, in bytes (as in POSIX PATH_MAX).
pub const PATH_MAX_BYTES: usize = 4096;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PathError {
    #[error("path must be absolute (start with '/'): {path:?}")]
    NotAbsolute { path: String },
    #[error("path has an empty component ('//'): {path:?}")]
    EmptyComponent { path: String },
    #[error("path may not contain '..': {path:?}")]
    DotDot { path: String },
    #[error("path contains a NUL byte: {path:?}")]
    Nul { path: String },
    #[error("name is {len} bytes, longer than the {max} allowed: {path:?}")]
    NameTooLong { path: String, len: usize, max: usize },
    #[error("path is {len} bytes, longer than the {max} allowed")]
    PathTooLong { len: usize, max: usize },
    /// Stored components that are not those of any normal path (a name
    /// holding '/', or '.'): only decoding meets these.
    #[error("not a normal path's components: {path:?}")]
    NotNormal { path: String },
}

/// An absolute, validated path, held as its components. Decoding (serde)
/// validates too: a stored path whose components could not come from
/// [`NormalPath::parse`] is refused, not taken as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "StoredPath", into = "StoredPath")]
pub struct NormalPath {
    parts: Vec<String>,
}

/// How a [`NormalPath`] is stored (`{"parts": [...]}`, or in postcard the
/// component list), before it is checked.
#[derive(Serialize, Deserialize)]
struct StoredPath {
    parts: Vec<String>,
}

impl TryFrom<StoredPath> for NormalPath {
    type Error = PathError;

    fn try_from(stored: StoredPath) -> Result<Self, PathError> {
        let path = format!("/{}", stored.parts.join("/"));
        let parsed = NormalPath::parse(&path)?;
        // `parse` drops `.` components and reads `a/b` as two: only a list
        // that parses back to itself is a normal path.
        if parsed.parts != stored.parts {
            return Err(PathError::NotNormal { path });
        }
        Ok(parsed)
    }
}

impl From<NormalPath> for StoredPath {
    fn from(p: NormalPath) -> StoredPath {
        StoredPath { parts: p.parts }
    }
}

impl NormalPath {
    /// The root directory `/`.
    pub fn root() -> Self {
        NormalPath { parts: Vec::new() }
    }

    /// Validates `path` and returns its normal form.
    pub fn parse(path: &str) -> Result<Self, PathError> {
        let owned = || path.to_string();
        if path.len() > PATH_MAX_BYTES {
            return Err(PathError::PathTooLong { len: path.len(), max: PATH_MAX_BYTES });
        }
        if path.contains('\0') {
            return Err(PathError::Nul { path: owned() });
        }
        let Some(rest) = path.strip_prefix('/') else {
            return Err(PathError::NotAbsolute { path: owned() });
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let mut parts = Vec::new();
        if rest.is_empty() {
            return Ok(NormalPath { parts });
        }
        for part in rest.split('/') {
            match part {
                "" => return Err(PathError::EmptyComponent { path: owned() }),
                "." => continue,
                ".." => return Err(PathError::DotDot { path: owned() }),
                name if name.len() > NAME_MAX_BYTES => {
                    return Err(PathError::NameTooLong { path: owned(), len: name.len(), max: NAME_MAX_BYTES });
                }
                name => parts.push(name.to_string()),
            }
        }
        Ok(NormalPath { parts })
    }

    /// The components, root first.
    pub fn components(&self) -> &[String] {
        &self.parts
    }

    pub fn is_root(&self) -> bool {
        self.parts.is_empty()
    }

    /// The parent directory and the last name; `None` for the root.
    pub fn split_last(&self) -> Option<(NormalPath, &str)> {
        let (last, init) = self.parts.split_last()?;
        Some((NormalPath { parts: init.to_vec() }, last.as_str()))
    }

    /// This path with `name` appended (the name must already be valid).
    pub fn join(&self, name: &str) -> NormalPath {
        let mut parts = self.parts.clone();
        parts.push(name.to_string());
        NormalPath { parts }
    }

    /// True when `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &NormalPath) -> bool {
        self.parts.starts_with(&other.parts)
    }
}

impl std::fmt::Display for NormalPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.parts.is_empty() {
            return f.write_str("/");
        }
        for p in &self.parts {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// What the name of every file the mount keeps for an open handle after its
/// last name was removed starts with (a name in `/`; see [`unlinked_name`]).
pub const UNLINKED_PREFIX: &str = ".shoal-unlinked.";

/// The name in `/` that holds inode `inode`, unlinked while open on a mount
/// whose keeper session is `session`: `.shoal-unlinked.S.N`. Under meta's
/// rules 6, the end of session S (closed, or expired because its mount
/// died) removes every such name of S that names its inode N, so a dead
/// mount's open-but-unlinked files are freed.
pub fn unlinked_name(session: u64, inode: u64) -> String {
    format!("{}{inode}", unlinked_session_prefix(session))
}

/// What the names [`unlinked_name`] gives for `session` start with (the
/// trailing dot keeps session 1's names apart from session 12's).
pub fn unlinked_session_prefix(session: u64) -> String {
    format!("{UNLINKED_PREFIX}{session}.")
}

/// The session and inode of a name of [`unlinked_name`]'s exact form
/// (decimal numbers, no sign or leading zero), else `None`.
pub fn parse_unlinked_name(name: &str) -> Option<(u64, u64)> {
    let (session, inode) = name.strip_prefix(UNLINKED_PREFIX)?.split_once('.')?;
    Some((decimal(session)?, decimal(inode)?))
}

/// A number written as `format!("{n}")` writes it (digits only, no sign,
/// no leading zero), else `None`.
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The directory part of inode lock names (no file need exist there).
pub const INODE_LOCKS_DIR: &str = "/.shoal-inode";

/// The name of inode `inode`'s lock: `/.shoal-inode/N`. A lock by this name
/// is one file's lock whatever its names are (renames do not change it), and
/// under meta's rules 5 its fencing tokens fence inode N (see meta's
/// `fsm::locking`). The mount takes these for flock(2) and fcntl(2).
pub fn inode_lock_name(inode: u64) -> String {
    format!("{INODE_LOCKS_DIR}/{inode}")
}

/// The inode a lock name of [`inode_lock_name`]'s form names: only that
/// exact form (decimal, no sign or leading zero, not 0), else `None`.
pub fn inode_of_lock_name(name: &str) -> Option<u64> {
    decimal(name.strip_prefix(INODE_LOCKS_DIR)?.strip_prefix('/')?).filter(|n| *n != 0)
}

/// The path of inode `inode` wherever it is now: `/.shoal-inode/N`, the
/// same string as its lock name. Under meta's rules 8 a path of a
/// namespace request that starts so (`/.shoal-inode/N/rest`) names `rest`
/// under inode N as the request applies, so a mount can name an entry by
/// its directory's inode and never by a path another mount's rename may
/// have changed since (see [`anchor_of`]).
pub fn inode_path(inode: u64) -> String {
    inode_lock_name(inode)
}

/// The refusal (`InvalidArgument`, saying why) of making `path`, a
/// root-based path, under meta's rules 9, or `None`. Two kinds of names in `/` are Shoal's own:
/// - `.shoal-inode`, which every [`inode_path`] starts with, so that
///   `/.shoal-inode/N` never names a user's file instead of inode N;
/// - names that start with [`UNLINKED_PREFIX`], which hold mounts' open
///   files whose last name was removed (and which the mount leaves out of
///   listings). Only a rename (`renaming`) may take one, and only of
///   [`unlinked_name`]'s exact form: that is how a mount hides such a file
///   (meta also checks that the file is the inode the name says).
///
/// A name made before rules 9 stays, and stays usable.
pub fn reserved(path: &NormalPath, renaming: bool) -> Option<crate::FsError> {
    let [name] = path.components() else {
        return None;
    };
    let why = if INODE_LOCKS_DIR.strip_prefix('/') == Some(name.as_str()) {
        "/.shoal-inode/N names inode N"
    } else if is_unlinked_path(path) && !(renaming && parse_unlinked_name(name).is_some()) {
        "names in / that start with .shoal-unlinked. hold mounts' open files whose last name was removed"
    } else {
        return None;
    };
    Some(reserved_refusal(path, why))
}

/// Whether `path` is a name in `/` that starts with [`UNLINKED_PREFIX`].
pub fn is_unlinked_path(path: &NormalPath) -> bool {
    matches!(path.components(), [name] if name.starts_with(UNLINKED_PREFIX))
}

/// The refusal (`InvalidArgument`) of a change to the reserved name `path`, saying `why`.
pub fn reserved_refusal(path: &NormalPath, why: &str) -> crate::FsError {
    crate::FsError::InvalidArgument { reason: format!("{path} is a reserved name: {why}") }
}

/// The inode a path of [`inode_path`]'s form starts at, and the components
/// below it: `/.shoal-inode/N/rest` gives `(N, rest)` (N of the exact
/// decimal form, not 0). Any other path gives `None`.
pub fn anchor_of(path: &NormalPath) -> Option<(u64, &[String])> {
    match path.components() {
        [dir, n, rest @ ..] if INODE_LOCKS_DIR.strip_prefix('/') == Some(dir.as_str()) => {
            decimal(n).filter(|n| *n != 0).map(|n| (n, rest))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_validates_like_parsing() {
        let ok: NormalPath = serde_json::from_str(r#"{"parts":["a","b"]}"#).unwrap();
        assert_eq!(ok, NormalPath::parse("/a/b").unwrap());
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"parts":["a","b"]}"#, "the stored form is unchanged");
        let nul = format!("a{}", char::from(0));
        let long = "x".repeat(NAME_MAX_BYTES + 1);
        for bad in ["a/b", "", ".", "..", nul.as_str(), long.as_str()] {
            let stored = serde_json::json!({ "parts": [bad] }).to_string();
            assert!(serde_json::from_str::<NormalPath>(&stored).is_err(), "{stored} must be refused");
        }
    }

    #[test]
    fn accepts_plain_paths() {
        let cases = [("/", "/"), ("/a", "/a"), ("/a/b/", "/a/b"), ("/a/./b", "/a/b"), ("/ü/ñ", "/ü/ñ")];
        for (input, want) in cases {
            assert_eq!(NormalPath::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn rejects_ambiguous_paths() {
        let long = format!("/{}", "x".repeat(256));
        let cases: [(&str, fn(&PathError) -> bool); 6] = [
            ("a/b", |e| matches!(e, PathError::NotAbsolute { .. })),
            ("", |e| matches!(e, PathError::NotAbsolute { .. })),
            ("/a//b", |e| matches!(e, PathError::EmptyComponent { .. })),
            ("/a/../b", |e| matches!(e, PathError::DotDot { .. })),
            ("/a\0b", |e| matches!(e, PathError::Nul { .. })),
            (&long, |e| matches!(e, PathError::NameTooLong { len: 256, .. })),
        ];
        for (input, want) in cases {
            let err = NormalPath::parse(input).unwrap_err();
            assert!(want(&err), "{input:?} gave {err:?}");
        }
        assert!(NormalPath::parse(&format!("/{}", "x".repeat(255))).is_ok());
    }

    #[test]
    fn split_and_prefix() {
        let p = NormalPath::parse("/a/b/c").unwrap();
        let (parent, name) = p.split_last().unwrap();
        assert_eq!(parent.to_string(), "/a/b");
        assert_eq!(name, "c");
        assert!(p.starts_with(&parent));
        assert!(!parent.starts_with(&p));
        assert!(NormalPath::root().split_last().is_none());
    }

    #[test]
    fn unlinked_names_carry_their_session() {
        assert_eq!(unlinked_name(12, 7), ".shoal-unlinked.12.7");
        assert!(unlinked_name(12, 7).starts_with(&unlinked_session_prefix(12)));
        assert!(!unlinked_name(12, 7).starts_with(&unlinked_session_prefix(1)), "session 1 is not session 12");
        assert!(unlinked_name(3, 9).starts_with(UNLINKED_PREFIX));
        assert!(NormalPath::parse(&format!("/{}", unlinked_name(u64::MAX, u64::MAX))).is_ok());
        assert_eq!(parse_unlinked_name(&unlinked_name(12, 7)), Some((12, 7)));
        for not in [
            ".shoal-unlinked.12",
            ".shoal-unlinked.12.",
            ".shoal-unlinked.012.7",
            ".shoal-unlinked.1.+7",
            "x.1.2",
            ".shoal-unlinked.1.2.3",
        ] {
            assert_eq!(parse_unlinked_name(not), None, "{not}");
        }
    }

    #[test]
    fn inode_lock_names_round_trip_and_nothing_else_is_one() {
        assert_eq!(inode_lock_name(42), "/.shoal-inode/42");
        assert_eq!(inode_of_lock_name(&inode_lock_name(42)), Some(42));
        assert_eq!(inode_of_lock_name(&inode_lock_name(u64::MAX)), Some(u64::MAX));
        assert!(NormalPath::parse(&inode_lock_name(7)).is_ok(), "a lock name is a path");
        for not in [
            "/.shoal-inode/",
            "/.shoal-inode/0",
            "/.shoal-inode/07",
            "/.shoal-inode/+7",
            "/.shoal-inode/7/x",
            "/.shoal-inode7",
            "/.shoal-inode/18446744073709551616",
            "/a/.shoal-inode/7",
            "/f",
        ] {
            assert_eq!(inode_of_lock_name(not), None, "{not}");
        }
    }

    #[test]
    fn anchored_paths_name_what_lies_under_an_inode() {
        let anchored = |p: &str| {
            let p = NormalPath::parse(p).unwrap();
            anchor_of(&p).map(|(n, rest)| (n, rest.join("/")))
        };
        assert_eq!(anchored(&inode_path(42)), Some((42, String::new())));
        assert_eq!(anchored("/.shoal-inode/42/a/b"), Some((42, "a/b".to_string())));
        let reserved = |path: &str, renaming| reserved(&NormalPath::parse(path).unwrap(), renaming).is_some();
        let hidden = format!("/{}", unlinked_name(12, 7));
        for (path, renaming) in
            [("/.shoal-inode", false), ("/.shoal-inode/", true), (&hidden, false), ("/.shoal-unlinked.x", true)]
        {
            assert!(reserved(path, renaming), "{path} {renaming}");
        }
        let under_d = format!("/d{hidden}");
        for path in ["/", "/.shoal-inode/1", "/d/.shoal-inode", "/.shoal-inodes", "/shoal-inode", &under_d] {
            assert!(!reserved(path, false), "{path}");
        }
        assert!(!reserved(&hidden, true), "a mount hides an open file by a rename");
        assert_eq!(anchored("/.shoal-inode/1/x"), Some((1, "x".to_string())));
        for not in
            ["/", "/.shoal-inode", "/.shoal-inode/0/x", "/.shoal-inode/07/x", "/.shoal-inode/x/7", "/a/.shoal-inode/7"]
        {
            assert_eq!(anchored(not), None, "{not}");
        }
    }
}
