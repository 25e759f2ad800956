//! The JSON API under `/api/v1/`, every answer read through the client.
//!
//! | endpoint | answers | same as |
//! | --- | --- | --- |
//! | `status` | every meta node: role, term, applied index | `shoal admin status --json` |
//! | `nodes` | every chunk server: state, usage, replicas, last heartbeat | `shoal admin nodes --json` |
//! | `health` | fsck: counts, problems worst first | `shoal admin fsck --json` |
//! | `ls?path=P` | a directory's entries (or the file P) | `shoal ls --json P` |
//! | `stat?path=P` | attributes and chunk locations | `shoal stat --json P` |
//! | `locks?path=P` | holders and queue of P's lock | `shoal admin locks --json P` |
//! | `locks` | every locked path in the cluster (at most 1,000): `{"paths": [...], "truncated": bool}` | |
//! | `locks?dir=D` | the same for D and each name in it, those with holders or waiters | |
//! | `throughput` | samples of the last 10 minutes | |
//! | `download?path=P` | the file's bytes, streamed | `shoal get P -` |
//!
//! `status`, `nodes` and `health` may be up to [`crate::REPORT_TTL`] old.
//! A path must be absolute; a bad or unknown one is a 4xx (see [`crate::error`]).
//! `status` answers 200 also without a leader (`leader_id` is null), and
//! `health` answers 200 also when the cluster is not healthy (`healthy` is
//! false): they report, they do not judge.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State as Extract};
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use shoal_client::report::{self, LockReport};
use shoal_core::{FsError, NormalPath};

use crate::State;
use crate::error::ApiError;

/// Locked paths `locks` (with no parameter) lists, at most.
const LOCKS_LISTED_MAX: u32 = 1_000;
/// Largest piece `download` reads from the cluster at once.
pub const DOWNLOAD_PIECE_MAX_BYTES: u64 = 4 << 20;

type Shared = Extract<Arc<State>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

pub(crate) fn routes() -> axum::Router<Arc<State>> {
    axum::Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/health", get(health))
        .route("/api/v1/ls", get(ls))
        .route("/api/v1/stat", get(stat))
        .route("/api/v1/locks", get(locks))
        .route("/api/v1/throughput", get(throughput))
        .route("/api/v1/download", get(download))
        .route("/api/{*rest}", get(no_route))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PathQuery {
    path: Option<String>,
    dir: Option<String>,
}

/// The query string, or a JSON 400 saying what is wrong with it.
fn query(q: Result<Query<PathQuery>, QueryRejection>) -> Result<PathQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
}

/// `raw` in normal form; a relative or malformed path is a 400.
fn normal(raw: &str) -> Result<String, ApiError> {
    Ok(NormalPath::parse(raw).map_err(FsError::from)?.to_string())
}

fn required(p: Option<String>, what: &str) -> Result<String, ApiError> {
    match p {
        Some(p) => normal(&p),
        None => Err(ApiError::BadRequest(format!("missing ?{what}= (an absolute path)"))),
    }
}

async fn status(Extract(s): Shared) -> ApiResult<report::MetaGroupReport> {
    Ok(Json((*s.status().await).clone()))
}

async fn nodes(Extract(s): Shared) -> ApiResult<Vec<report::ChunkServerReport>> {
    Ok(Json((*s.nodes().await?).clone()))
}

async fn health(Extract(s): Shared) -> ApiResult<report::FsckReport> {
    Ok(Json((*s.health().await?).clone()))
}

async fn throughput(Extract(s): Shared) -> ApiResult<crate::sampler::Throughput> {
    Ok(Json(s.throughput()))
}

/// `?path=` defaults to `/`.
async fn ls(Extract(s): Shared, q: Result<Query<PathQuery>, QueryRejection>) -> ApiResult<Vec<report::EntryReport>> {
    let path = normal(query(q)?.path.as_deref().unwrap_or("/"))?;
    Ok(Json(report::list(&s.client, &path).await?))
}

async fn stat(Extract(s): Shared, q: Result<Query<PathQuery>, QueryRejection>) -> ApiResult<report::StatReport> {
    let path = required(query(q)?.path, "path")?;
    Ok(Json(report::stat(&s.client, &path).await?))
}

/// `?path=P`: one [`LockReport`], even with nobody in it. `?dir=D`: the
/// lock reports of D and of the names directly in it that have a holder or
/// a waiter, by path, from one listing of the locked paths under D (at most
/// [`LOCKS_LISTED_MAX`] of them, deeper ones included). Neither: every
/// locked path, at most [`LOCKS_LISTED_MAX`].
async fn locks(Extract(s): Shared, q: Result<Query<PathQuery>, QueryRejection>) -> Result<Response, ApiError> {
    let q = query(q)?;
    if q.path.is_some() {
        let path = required(q.path, "path")?;
        return Ok(Json(report::locks(&s.client, &path).await?).into_response());
    }
    let Some(dir) = q.dir else {
        let (paths, truncated) = report::all_locks(&s.client, "", LOCKS_LISTED_MAX).await?;
        return Ok(Json(serde_json::json!({ "paths": paths, "truncated": truncated })).into_response());
    };
    let dir = normal(&dir)?;
    s.client.stat(&dir).await?;
    let (under, _) = report::all_locks(&s.client, &dir, LOCKS_LISTED_MAX).await?;
    let busy: Vec<LockReport> = under.into_iter().filter(|r| r.path == dir || is_child(&dir, &r.path)).collect();
    Ok(Json(busy).into_response())
}

/// Whether `path` names an entry directly in `dir`.
fn is_child(dir: &str, path: &str) -> bool {
    let rest =
        if dir == "/" { path.strip_prefix('/') } else { path.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) };
    rest.is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// Streams a file as it was at open: its size then bounds the body (a file
/// that shrinks meanwhile ends the stream early, and the client sees a short
/// body). A write during the download may land between two pieces.
async fn download(Extract(s): Shared, q: Result<Query<PathQuery>, QueryRejection>) -> Result<Response, ApiError> {
    let path = required(query(q)?.path, "path")?;
    let file = s.client.open(&path).await?;
    let size = file.cached_stat().size;
    let name = path.rsplit('/').next().unwrap_or("download");
    let body = futures::stream::unfold((file, 0u64), move |(mut file, at)| async move {
        if at >= size {
            return None;
        }
        let want = (size - at).min(DOWNLOAD_PIECE_MAX_BYTES);
        match file.read_at(at, want).await {
            Ok(data) if data.is_empty() => None,
            Ok(data) => {
                let n = data.len() as u64;
                Some((Ok(Bytes::from(data)), (file, at + n)))
            }
            Err(e) => {
                tracing::warn!(path = %file.path(), error = %e, "download failed");
                Some((Err(std::io::Error::other(e.to_string())), (file, size)))
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", ascii_name(name))),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// A file name safe inside a quoted header value: printable ASCII but `"` and `\`.
fn ascii_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect()
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_checked() {
        assert_eq!(normal("/a/./b/").unwrap(), "/a/b");
        assert_eq!(normal("/a//b").unwrap_err().status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(normal("/a/../b").unwrap_err().status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(normal("relative").unwrap_err().status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(required(None, "path").unwrap_err().status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_child_is_one_name_below_its_directory() {
        assert!(is_child("/", "/a"));
        assert!(is_child("/d", "/d/a"));
        assert!(!is_child("/d", "/d"));
        assert!(!is_child("/d", "/d/a/b"));
        assert!(!is_child("/d", "/dx/a"));
        assert!(!is_child("/d", "/dx"));
        assert!(!is_child("/", "/a/b"));
    }

    #[test]
    fn download_names_stay_inside_their_quotes() {
        assert_eq!(ascii_name("report 1.bin"), "report 1.bin");
        assert_eq!(ascii_name("a\"b\\c\né"), "a_b_c__");
    }
}
