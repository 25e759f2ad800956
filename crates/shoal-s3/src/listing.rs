//! One page of a bucket listing: prefix, delimiter, start-after / marker /
//! continuation token, and max-keys, in UTF-8 byte order as S3 sorts.
//!
//! The walker (in [`crate::store`]) visits a bucket's tree so that keys come
//! out in byte order: siblings are sorted with a directory `d` counting as
//! `d/` (see [`sibling_order`]), which puts every key below it exactly where
//! byte order wants it. It feeds each key to a [`Pager`], asks it before
//! entering a directory whether that subtree matters ([`Pager::subtree`]),
//! and stops when the pager is full. The pager is plain data: no IO.
//!
//! Continuation tokens are the last key or common prefix returned, in hex,
//! so they are opaque to clients and carry any bytes safely.

use std::cmp::Ordering;

/// The longest page S3 returns (and the default).
pub const MAX_KEYS_DEFAULT: usize = 1000;

/// What a listing asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Only keys strictly after this (start-after, marker, or a token).
    pub after: Option<String>,
    pub max_keys: usize,
}

/// One entry of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<T> {
    Object { key: String, info: T },
    Prefix(String),
}

impl<T> Item<T> {
    fn marker(&self) -> &str {
        match self {
            Item::Object { key, .. } => key,
            Item::Prefix(p) => p,
        }
    }
}

/// What the walker should do with a directory's subtree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subtree {
    /// Nothing below it can be on this page.
    Skip,
    /// Visit it.
    Descend,
    /// Everything below it rolls up into this common prefix: push it with
    /// [`Pager::push_prefix`] instead of visiting.
    Rollup(String),
}

/// Collects one page.
#[derive(Debug)]
pub struct Pager<T> {
    q: Query,
    items: Vec<Item<T>>,
    truncated: bool,
}

/// A finished page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<Item<T>>,
    pub truncated: bool,
    /// Where the next page starts (after this), when truncated.
    pub next_marker: Option<String>,
}

/// The order of two names in one directory, each flagged as a directory or
/// not: a directory `d` sorts as `d/`.
pub fn sibling_order(a: (&str, bool), b: (&str, bool)) -> Ordering {
    let key = |(n, dir): (&str, bool)| (n.as_bytes().to_vec(), dir);
    let (mut ka, da) = key(a);
    let (mut kb, db) = key(b);
    if da {
        ka.push(b'/');
    }
    if db {
        kb.push(b'/');
    }
    ka.cmp(&kb)
}

impl<T> Pager<T> {
    pub fn new(mut q: Query) -> Self {
        if q.delimiter.as_deref() == Some("") {
            q.delimiter = None;
        }
        Pager { q, items: Vec::new(), truncated: false }
    }

    /// True once the page is full and one more item was seen.
    pub fn is_full(&self) -> bool {
        self.truncated
    }

    /// Whether the keys below `dir` (a key prefix ending in `/`) matter.
    pub fn subtree(&self, dir: &str) -> Subtree {
        let prefix = self.q.prefix.as_str();
        if !(dir.starts_with(prefix) || prefix.starts_with(dir)) {
            return Subtree::Skip;
        }
        // Every key below `dir` is at most `after` when `after` sorts after
        // `dir` without starting with it.
        let after_all = self.q.after.as_deref().is_some_and(|a| a > dir && !a.starts_with(dir));
        if after_all {
            return Subtree::Skip;
        }
        if let Some(d) = self.q.delimiter.as_deref()
            && dir.len() > prefix.len()
            && dir.starts_with(prefix)
            && let Some(i) = dir[prefix.len()..].find(d)
            && self.q.after.as_deref().is_none_or(|a| a < dir)
        {
            return Subtree::Rollup(dir[..prefix.len() + i + d.len()].to_string());
        }
        Subtree::Descend
    }

    /// Offers the next key (in byte order); false once the page is full.
    pub fn push(&mut self, key: &str, info: T) -> bool {
        if self.truncated {
            return false;
        }
        if self.q.after.as_deref().is_some_and(|a| key <= a) || !key.starts_with(self.q.prefix.as_str()) {
            return true;
        }
        if let Some(d) = self.q.delimiter.as_deref()
            && let Some(i) = key[self.q.prefix.len()..].find(d)
        {
            let cp = key[..self.q.prefix.len() + i + d.len()].to_string();
            return self.push_prefix(cp);
        }
        self.add(Item::Object { key: key.to_string(), info })
    }

    /// Offers a common prefix (from [`Subtree::Rollup`] or a rolled-up key).
    pub fn push_prefix(&mut self, cp: String) -> bool {
        if self.truncated {
            return false;
        }
        // Keys arrive in order, so a repeated prefix is the one just added;
        // one at or before `after` was on an earlier page.
        let repeated = matches!(self.items.last(), Some(Item::Prefix(p)) if *p == cp);
        if repeated || self.q.after.as_deref().is_some_and(|a| cp.as_str() <= a) {
            return true;
        }
        self.add(Item::Prefix(cp))
    }

    fn add(&mut self, item: Item<T>) -> bool {
        if self.items.len() >= self.q.max_keys {
            self.truncated = true;
            return false;
        }
        self.items.push(item);
        true
    }

    pub fn finish(self) -> Page<T> {
        let next_marker = self.truncated.then(|| self.items.last().map(|i| i.marker().to_string())).flatten();
        Page { items: self.items, truncated: self.truncated, next_marker }
    }
}

/// A continuation token for `marker`.
pub fn token_of(marker: &str) -> String {
    marker.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The marker in a continuation token; None when it is not one of ours.
pub fn marker_of(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok()).collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: S3's rules applied to a sorted list of every key.
    fn model(keys: &[String], q: &Query) -> (Vec<String>, bool) {
        let mut out: Vec<String> = Vec::new();
        for k in keys {
            if q.after.as_deref().is_some_and(|a| k.as_str() <= a) || !k.starts_with(&q.prefix) {
                continue;
            }
            let item = match q.delimiter.as_deref().and_then(|d| k[q.prefix.len()..].find(d).map(|i| (d, i))) {
                Some((d, i)) => {
                    let cp = k[..q.prefix.len() + i + d.len()].to_string();
                    if out.last() == Some(&cp) || q.after.as_deref().is_some_and(|a| cp.as_str() <= a) {
                        continue;
                    }
                    cp
                }
                None => k.clone(),
            };
            if out.len() == q.max_keys {
                return (out, true);
            }
            out.push(item);
        }
        (out, false)
    }

    /// A walk of the keys as a tree, as the store does it, through the pager.
    fn walk(keys: &[String], q: &Query) -> Page<()> {
        #[derive(Default)]
        struct Dir(std::collections::BTreeMap<String, Option<Dir>>);
        let mut root = Dir::default();
        for k in keys {
            let parts: Vec<&str> = k.split('/').collect();
            let mut cur = &mut root;
            for (i, p) in parts.iter().enumerate() {
                if i + 1 == parts.len() {
                    cur.0.insert(p.to_string(), None);
                } else {
                    cur = cur.0.entry(p.to_string()).or_insert_with(|| Some(Dir::default())).as_mut().unwrap();
                }
            }
        }
        fn visit(d: &Dir, base: &str, pager: &mut Pager<()>) -> bool {
            let mut names: Vec<(&String, &Option<Dir>)> = d.0.iter().collect();
            names.sort_by(|a, b| sibling_order((a.0, a.1.is_some()), (b.0, b.1.is_some())));
            for (name, sub) in names {
                let key = format!("{base}{name}");
                let go_on = match sub {
                    None => pager.push(&key, ()),
                    Some(sub) => match pager.subtree(&format!("{key}/")) {
                        Subtree::Skip => true,
                        Subtree::Rollup(cp) => pager.push_prefix(cp),
                        Subtree::Descend => visit(sub, &format!("{key}/"), pager),
                    },
                };
                if !go_on {
                    return false;
                }
            }
            true
        }
        let mut pager = Pager::new(q.clone());
        visit(&root, "", &mut pager);
        pager.finish()
    }

    fn names(p: &Page<()>) -> Vec<String> {
        p.items.iter().map(|i| i.marker().to_string()).collect()
    }

    #[test]
    fn tree_walk_matches_the_sorted_model_page_by_page() {
        let mut keys: Vec<String> = Vec::new();
        for a in ["a", "a-b", "a0", "b", "é", "z z"] {
            for b in ["x", "x-y", "y/z", "y/z0", "1"] {
                keys.push(format!("{a}/{b}"));
            }
            keys.push(format!("top-{a}"));
        }
        keys.sort();
        for prefix in ["", "a", "a/", "a/y", "a/y/", "é/", "zz", "a-"] {
            for delimiter in [None, Some("/"), Some("-"), Some("z")] {
                for max_keys in [1, 2, 3, 7, 1000] {
                    let mut after = None;
                    let mut all_model = Vec::new();
                    let mut all_walk = Vec::new();
                    for _page in 0..200 {
                        let q = Query {
                            prefix: prefix.into(),
                            delimiter: delimiter.map(String::from),
                            after: after.clone(),
                            max_keys,
                        };
                        let (want, truncated) = model(&keys, &q);
                        let got = walk(&keys, &q);
                        assert_eq!(names(&got), want, "{q:?}");
                        assert_eq!(got.truncated, truncated, "{q:?}");
                        all_model.extend(want);
                        all_walk.extend(names(&got));
                        if !got.truncated {
                            break;
                        }
                        after = got.next_marker.clone();
                    }
                    assert_eq!(all_walk, all_model);
                    // Pages never repeat an item.
                    let mut dedup = all_walk.clone();
                    dedup.dedup();
                    assert_eq!(dedup, all_walk, "prefix {prefix:?} delimiter {delimiter:?} max {max_keys}");
                }
            }
        }
    }

    #[test]
    fn slash_delimiter_on_a_folder_tree() {
        let keys: Vec<String> = ["a/1", "a/2", "b", "c/d/e", "c/f"].iter().map(|s| s.to_string()).collect();
        let q = Query { prefix: String::new(), delimiter: Some("/".into()), after: None, max_keys: 1000 };
        assert_eq!(names(&walk(&keys, &q)), ["a/", "b", "c/"]);
        let q = Query { prefix: "c/".into(), delimiter: Some("/".into()), after: None, max_keys: 1000 };
        assert_eq!(names(&walk(&keys, &q)), ["c/d/", "c/f"]);
    }

    #[test]
    fn tokens_round_trip() {
        for m in ["", "a/b", "ünï cøde\u{7f}"] {
            assert_eq!(marker_of(&token_of(m)).as_deref(), Some(m));
        }
        assert_eq!(marker_of("zz"), None);
        assert_eq!(marker_of("abc"), None);
    }
}
