//! The API's errors and the one table that maps them to HTTP statuses.
//!
//! Every error leaves as JSON, `{"error": "<message for people>", "kind":
//! "<bad-request|not-found|conflict|unavailable|upstream>"}`. Bad input from
//! the caller (a malformed path, a file that does not exist, a directory where
//! a file is needed) is a 4xx; a cluster that cannot answer now is a 503, to
//! be retried; anything else the cluster said is a 502. The front end itself
//! never answers 500 for what a caller sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use shoal_client::ClientError;
use shoal_core::FsError;

#[derive(Debug)]
pub enum ApiError {
    /// The request itself is wrong (a missing or malformed parameter).
    BadRequest(String),
    /// No such endpoint.
    NoRoute(String),
    /// What the client library answered.
    Client(ClientError),
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        ApiError::Client(e)
    }
}

impl From<FsError> for ApiError {
    fn from(e: FsError) -> Self {
        ApiError::Client(ClientError::Fs(e))
    }
}

/// The HTTP status of a client-library error: the table, case by case.
pub fn status_of(e: &ClientError) -> StatusCode {
    match e {
        ClientError::Fs(fs) => match fs {
            FsError::InvalidPath(_)
            | FsError::InvalidArgument { .. }
            | FsError::NotADirectory { .. }
            | FsError::IsADirectory { .. }
            | FsError::BadReplication { .. }
            | FsError::AttributeLimit { .. }
            | FsError::LinkToDirectory { .. }
            | FsError::TooManyLinks { .. } => StatusCode::BAD_REQUEST,
            FsError::NotFound { .. } | FsError::StaleInode { .. } | FsError::NoAttribute { .. } => {
                StatusCode::NOT_FOUND
            }
            FsError::NotEnoughServers { .. } | FsError::NoReplica { .. } => StatusCode::SERVICE_UNAVAILABLE,
            FsError::AlreadyExists { .. }
            | FsError::NotEmpty { .. }
            | FsError::RenameIntoSelf { .. }
            | FsError::Root
            | FsError::ChunkChanged { .. }
            | FsError::SessionExpired { .. }
            | FsError::NotLocked { .. }
            | FsError::WouldBlock { .. }
            | FsError::Fenced { .. }
            | FsError::LockTimeout { .. }
            | FsError::LockUpgrade { .. }
            | FsError::TooManyLocks { .. }
            | FsError::Deadlock { .. } => StatusCode::CONFLICT,
        },
        ClientError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        ClientError::MetaUnreachable { .. }
        | ClientError::ChunkUnavailable { .. }
        | ClientError::LayoutChanged { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ClientError::Rpc { code, .. } => match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_GATEWAY,
        },
        ClientError::WriteFailed { .. } | ClientError::BadAddress { .. } | ClientError::Replica { .. } => {
            StatusCode::BAD_GATEWAY
        }
    }
}

/// The short, stable name of a status in the error body.
fn kind_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::NOT_FOUND => "not-found",
        StatusCode::CONFLICT => "conflict",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "upstream",
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Client(e) => status_of(e),
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::BadRequest(m) => m.clone(),
            ApiError::NoRoute(path) => format!("no such endpoint: {path}"),
            ApiError::Client(e) => e.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::debug!(status = status.as_u16(), error = %self.message(), "api request failed");
        }
        (status, Json(json!({"error": self.message(), "kind": kind_of(status)}))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(e: FsError) -> StatusCode {
        status_of(&ClientError::Fs(e))
    }

    #[test]
    fn user_errors_are_4xx() {
        let path = || "/x".to_string();
        let bad_path = shoal_core::NormalPath::parse("relative").unwrap_err();
        assert_eq!(fs(FsError::InvalidPath(bad_path)), StatusCode::BAD_REQUEST);
        assert_eq!(fs(FsError::NotFound { path: path() }), StatusCode::NOT_FOUND);
        assert_eq!(fs(FsError::StaleInode { inode: 7 }), StatusCode::NOT_FOUND);
        assert_eq!(fs(FsError::NotADirectory { path: path() }), StatusCode::BAD_REQUEST);
        assert_eq!(fs(FsError::IsADirectory { path: path() }), StatusCode::BAD_REQUEST);
        assert_eq!(fs(FsError::InvalidArgument { reason: "no".into() }), StatusCode::BAD_REQUEST);
        assert_eq!(fs(FsError::BadReplication { requested: 99, max: 16 }), StatusCode::BAD_REQUEST);
        assert_eq!(fs(FsError::AlreadyExists { path: path() }), StatusCode::CONFLICT);
        assert_eq!(fs(FsError::WouldBlock { path: path() }), StatusCode::CONFLICT);
        assert_eq!(status_of(&ClientError::InvalidArgument("x".into())), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::BadRequest("x".into()).status(), StatusCode::BAD_REQUEST);
        assert_eq!(ApiError::NoRoute("/api/v1/x".into()).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_cluster_that_cannot_answer_now_is_503() {
        let unreachable = ClientError::MetaUnreachable { addrs: "a".into(), timeout_ms: 1, last: "b".into() };
        assert_eq!(status_of(&unreachable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status_of(&ClientError::LayoutChanged { chunk_id: 1 }), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status_of(&ClientError::ChunkUnavailable { chunk_id: 1, details: "d".into() }),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(fs(FsError::NoReplica { chunk_id: 1 }), StatusCode::SERVICE_UNAVAILABLE);
        let rpc = |code| status_of(&ClientError::Rpc { code, message: String::new() });
        assert_eq!(rpc(tonic::Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rpc(tonic::Code::DeadlineExceeded), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(rpc(tonic::Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(rpc(tonic::Code::Internal), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn kinds_name_the_status() {
        assert_eq!(kind_of(StatusCode::BAD_REQUEST), "bad-request");
        assert_eq!(kind_of(StatusCode::NOT_FOUND), "not-found");
        assert_eq!(kind_of(StatusCode::SERVICE_UNAVAILABLE), "unavailable");
        assert_eq!(kind_of(StatusCode::BAD_GATEWAY), "upstream");
    }
}
