//! Extended attributes: small named values on an inode (file or directory).
//!
//! They live in [`super::Extra::xattrs`], so they follow their inode through
//! a rename and vanish with it when it is removed or replaced. The S3 gateway
//! keeps an object's ETag, content type and user metadata in them
//! (`user.s3.*`); the mount will show the `user.*` ones.
//!
//! # Invariants kept here
//! - A name is 1 to [`XATTR_NAME_MAX_BYTES`] bytes with no NUL.
//! - A value is at most [`XATTR_VALUE_MAX_BYTES`].
//! - The names and values of one inode add up to at most
//!   [`XATTRS_TOTAL_MAX_BYTES`], which bounds what a stat carries and what one
//!   Raft entry holds.
//!
//! A change that would break one of them is refused whole
//! (`AttributeLimit`), and changes nothing.

use std::collections::BTreeMap;

use shoal_core::{FsError, NormalPath};

use super::{FsState, Response};

/// The longest attribute name, in bytes (as Linux allows).
pub const XATTR_NAME_MAX_BYTES: usize = 255;
/// The largest attribute value (as Linux allows).
pub const XATTR_VALUE_MAX_BYTES: usize = 64 << 10;
/// The most the names and values of one inode may add up to.
pub const XATTRS_TOTAL_MAX_BYTES: usize = 256 << 10;
/// The most attribute changes one command may carry.
pub const XATTR_CHANGES_MAX: usize = 1024;

/// The bytes an inode's attributes count against [`XATTRS_TOTAL_MAX_BYTES`].
pub fn total_bytes(xattrs: &BTreeMap<String, Vec<u8>>) -> usize {
    xattrs.iter().map(|(n, v)| n.len() + v.len()).sum()
}

/// Why a name cannot be an attribute's, if it cannot.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX_BYTES {
        return Err(format!("attribute names are 1 to {XATTR_NAME_MAX_BYTES} bytes, {name:?} is {}", name.len()));
    }
    if name.contains('\0') {
        return Err(format!("attribute name {name:?} contains NUL"));
    }
    Ok(())
}

/// Checks the bounds of one inode's attributes (also used by the invariants).
pub fn check_all(xattrs: &BTreeMap<String, Vec<u8>>) -> Result<(), String> {
    for (name, value) in xattrs {
        check_name(name)?;
        if value.len() > XATTR_VALUE_MAX_BYTES {
            return Err(format!("attribute {name:?} holds {} bytes, more than {XATTR_VALUE_MAX_BYTES}", value.len()));
        }
    }
    let total = total_bytes(xattrs);
    if total > XATTRS_TOTAL_MAX_BYTES {
        return Err(format!("attributes add up to {total} bytes, more than {XATTRS_TOTAL_MAX_BYTES}"));
    }
    Ok(())
}

impl FsState {
    pub(super) fn set_xattrs(
        &mut self,
        path: &NormalPath,
        remove: &[String],
        set: &[(String, Vec<u8>)],
        now_ms: u64,
    ) -> Result<Response, FsError> {
        let limit = |limit: String| FsError::AttributeLimit { path: path.to_string(), limit };
        if remove.len() + set.len() > XATTR_CHANGES_MAX {
            return Err(limit(format!("one change may name at most {XATTR_CHANGES_MAX} attributes")));
        }
        let id = self.lookup(path)?.id;
        // Build the result aside and check it whole, so a refusal changes nothing.
        let mut next = self.inodes[&id].extra.xattrs.clone();
        for name in remove {
            next.remove(name);
        }
        for (name, value) in set {
            next.insert(name.clone(), value.clone());
        }
        check_all(&next).map_err(limit)?;
        let inode = self.inodes.get_mut(&id).expect("looked up");
        if !next.is_empty() || inode.extra.is_allocated() {
            inode.extra.xattrs = next;
            inode.extra.drop_if_empty();
        }
        inode.touch_changed(now_ms);
        Ok(Response::Ok)
    }

    pub(super) fn remove_xattr(&mut self, path: &NormalPath, name: &str, now_ms: u64) -> Result<Response, FsError> {
        let found = self.lookup(path)?;
        let id = found.id;
        if !found.extra.xattrs.contains_key(name) {
            // Before any `get_mut`, which would copy a shared inode (or give
            // an empty `Rare` a box) for a change that does not happen.
            return Err(FsError::NoAttribute { path: path.to_string(), name: name.to_string() });
        }
        let inode = self.inodes.get_mut(&id).expect("looked up");
        match inode.extra.xattrs.remove(name) {
            Some(_) => {
                inode.extra.drop_if_empty();
                inode.touch_changed(now_ms);
                Ok(Response::Ok)
            }
            None => Err(FsError::NoAttribute { path: path.to_string(), name: name.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::NamespaceCmd;
    use super::super::testing::{create, p, run};
    use super::*;

    fn set(path: &str, pairs: &[(&str, &[u8])]) -> NamespaceCmd {
        NamespaceCmd::SetXattrs {
            path: p(path),
            remove: vec![],
            set: pairs.iter().map(|(n, v)| (n.to_string(), v.to_vec())).collect(),
        }
    }

    #[test]
    fn attributes_follow_rename_and_vanish_with_remove() {
        let mut st = FsState::default();
        create(&mut st, "/f");
        assert_eq!(run(&mut st, set("/f", &[("user.a", b"1"), ("user.b", b"2")])), Response::Ok);
        assert_eq!(run(&mut st, NamespaceCmd::Rename { src: p("/f"), dst: p("/g"), fence: None }), Response::Ok);
        let g = st.lookup(&p("/g")).unwrap();
        assert_eq!(g.extra.xattrs.get("user.a").map(Vec::as_slice), Some(&b"1"[..]));
        // Remove-then-set in one command.
        let cmd = NamespaceCmd::SetXattrs {
            path: p("/g"),
            remove: vec!["user.a".into(), "user.zz".into()],
            set: vec![("user.c".into(), b"3".to_vec())],
        };
        assert_eq!(run(&mut st, cmd), Response::Ok);
        let names: Vec<_> = st.lookup(&p("/g")).unwrap().extra.xattrs.keys().cloned().collect();
        assert_eq!(names, ["user.b", "user.c"]);
        assert_eq!(
            run(&mut st, NamespaceCmd::RemoveXattr { path: p("/g"), name: "user.a".into() }),
            Response::Err(FsError::NoAttribute { path: "/g".into(), name: "user.a".into() })
        );
        // A file renamed over another takes its own attributes with it.
        create(&mut st, "/h");
        run(&mut st, set("/h", &[("user.h", b"h")]));
        run(&mut st, NamespaceCmd::Rename { src: p("/h"), dst: p("/g"), fence: None });
        let names: Vec<_> = st.lookup(&p("/g")).unwrap().extra.xattrs.keys().cloned().collect();
        assert_eq!(names, ["user.h"]);
        run(&mut st, NamespaceCmd::Remove { path: p("/g"), recursive: false });
        create(&mut st, "/g");
        assert!(st.lookup(&p("/g")).unwrap().extra.xattrs.is_empty(), "a new file starts bare");
    }

    #[test]
    fn bounds_refuse_the_whole_change() {
        let mut st = FsState::default();
        create(&mut st, "/f");
        let before = st.clone();
        let long = "n".repeat(XATTR_NAME_MAX_BYTES + 1);
        let big = vec![0u8; XATTR_VALUE_MAX_BYTES + 1];
        for bad in [
            set("/f", &[("ok", b"1"), ("", b"x")]),
            set("/f", &[("ok", b"1"), (&long, b"x")]),
            set("/f", &[("a\0b", b"x")]),
            set("/f", &[("ok", b"1"), ("big", &big)]),
        ] {
            assert!(matches!(run(&mut st, bad), Response::Err(FsError::AttributeLimit { .. })));
            assert_eq!(st, before);
        }
        // Each value within bounds, the sum over them not.
        let v = vec![1u8; XATTR_VALUE_MAX_BYTES];
        for i in 0..3 {
            assert_eq!(run(&mut st, set("/f", &[(&format!("v{i}"), &v)])), Response::Ok);
        }
        assert!(matches!(run(&mut st, set("/f", &[("v3", &v)])), Response::Err(FsError::AttributeLimit { .. })));
        assert!(matches!(run(&mut st, set("/nope", &[("a", b"1")])), Response::Err(FsError::NotFound { .. })));
    }
}
