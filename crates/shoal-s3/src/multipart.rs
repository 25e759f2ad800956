//! Multipart uploads: staging, the checks of Complete, and the janitor.
//!
//! An upload is a directory `UPLOADS_DIR/<id>` whose attributes hold the
//! object's bucket and key ([`crate::rules::ATTR_UPLOAD_KEY`]) and the
//! metadata given at Create; each part is a file `part-NNNNN` in it, written
//! like any object (temporary file, then rename), with its ETag attribute.
//! Complete copies the parts, in order, into one new temporary file and
//! renames it onto the key: chunks of 64 MiB do not line up with parts of
//! 5 MiB, so the data is copied once more rather than linked. Then the
//! upload's directory is removed.
//!
//! The janitor removes uploads and temporary objects left untouched for the
//! configured age (a directory's mtime moves with every part added).

use std::time::Duration;

use crate::keys::{TMP_DIR, UPLOADS_DIR};
use crate::store::Store;

/// The smallest part but the last, as S3 requires.
pub const PART_MIN_BYTES: u64 = 5 << 20;
/// The highest part number.
pub const PART_NUMBER_MAX: i32 = 10_000;
/// How often the janitor looks at most.
const JANITOR_PERIOD_MAX: Duration = Duration::from_secs(60);

/// The directory of upload `id`; None when `id` is not one we hand out.
pub fn upload_dir(id: &str) -> Option<String> {
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        .then(|| format!("{UPLOADS_DIR}/{id}"))
}

/// A new upload id.
pub fn new_upload_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The file of part `n` in upload directory `dir`.
pub fn part_path(dir: &str, n: i32) -> String {
    format!("{dir}/part-{n:05}")
}

/// The part number of a part file's name.
pub fn part_number(name: &str) -> Option<i32> {
    name.strip_prefix("part-")?.parse().ok().filter(|n| (1..=PART_NUMBER_MAX).contains(n))
}

/// One part as Complete names it, and as it is staged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRef {
    pub number: i32,
    pub etag: String,
}

/// Why a Complete is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompleteError {
    NoParts,
    /// Part numbers must ascend.
    Order,
    /// A named part is missing, or its ETag differs.
    Part {
        number: i32,
    },
    /// A part but the last is under [`PART_MIN_BYTES`].
    TooSmall {
        number: i32,
        size: u64,
    },
}

/// Checks a Complete's part list against the staged parts (number → (etag, size)).
pub fn check_complete(
    asked: &[PartRef],
    staged: &std::collections::BTreeMap<i32, (String, u64)>,
) -> Result<(), CompleteError> {
    if asked.is_empty() {
        return Err(CompleteError::NoParts);
    }
    if asked.windows(2).any(|w| w[0].number >= w[1].number) {
        return Err(CompleteError::Order);
    }
    for (i, p) in asked.iter().enumerate() {
        let Some((etag, size)) = staged.get(&p.number) else { return Err(CompleteError::Part { number: p.number }) };
        if p.etag.trim_matches('"') != etag {
            return Err(CompleteError::Part { number: p.number });
        }
        if i + 1 < asked.len() && *size < PART_MIN_BYTES {
            return Err(CompleteError::TooSmall { number: p.number, size: *size });
        }
    }
    Ok(())
}

/// Removes, every so often, uploads and temporary objects untouched for `max_age`.
pub async fn janitor(store: Store, max_age: Duration) {
    let period = (max_age / 4).clamp(Duration::from_millis(200), JANITOR_PERIOD_MAX);
    loop {
        tokio::time::sleep(period).await;
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        for dir in [UPLOADS_DIR, TMP_DIR] {
            let Ok(entries) = store.client.list(dir).await else { continue };
            for e in entries {
                if now_ms.saturating_sub(e.stat.mtime_ms) > max_age.as_millis() as u64 {
                    let path = format!("{dir}/{}", e.name);
                    match store.client.remove(&path, true).await {
                        Ok(()) => tracing::info!(%path, "removed an abandoned upload or temporary object"),
                        Err(err) => tracing::warn!(%path, "cannot remove an abandoned upload: {err}"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn complete_checks() {
        let staged =
            BTreeMap::from([(1, ("a".to_string(), PART_MIN_BYTES)), (2, ("b".into(), 10)), (3, ("c".into(), 1))]);
        let p = |number, etag: &str| PartRef { number, etag: etag.into() };
        assert_eq!(check_complete(&[p(1, "\"a\""), p(2, "b")], &staged), Ok(()));
        assert_eq!(check_complete(&[], &staged), Err(CompleteError::NoParts));
        assert_eq!(check_complete(&[p(2, "b"), p(1, "a")], &staged), Err(CompleteError::Order));
        assert_eq!(check_complete(&[p(1, "a"), p(1, "a")], &staged), Err(CompleteError::Order));
        assert_eq!(check_complete(&[p(1, "x")], &staged), Err(CompleteError::Part { number: 1 }));
        assert_eq!(check_complete(&[p(4, "d")], &staged), Err(CompleteError::Part { number: 4 }));
        assert_eq!(
            check_complete(&[p(2, "b"), p(3, "c")], &staged),
            Err(CompleteError::TooSmall { number: 2, size: 10 })
        );
        // Only the last may be small; a subset of staged parts is fine.
        assert_eq!(check_complete(&[p(1, "a"), p(3, "c")], &staged), Ok(()));
    }

    #[test]
    fn ids_and_names() {
        let id = new_upload_id();
        assert!(upload_dir(&id).is_some());
        assert!(upload_dir("../x").is_none());
        assert!(upload_dir(&id.to_uppercase()).is_none());
        assert_eq!(part_number("part-00042"), Some(42));
        assert_eq!(part_number(&part_path("/d", 7)[3..]), Some(7));
        assert_eq!(part_number("part-0"), None);
        assert_eq!(part_number("x"), None);
    }
}
