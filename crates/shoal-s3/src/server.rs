//! The listener: one HTTP/1.1 connection per task, accepted through the
//! connection gate every Shoal port uses ([`shoal_proto::bounded`]: a bound
//! on connections, idle ones closed, and `TCP_NODELAY`, without which every
//! small answer waited on Nagle's algorithm and the client's delayed ACK),
//! every request through s3s (SigV4 over headers, presigned URLs and chunked
//! payloads) and the [`crate::gateway::Gateway`]. Credentials are checked by s3s against the
//! configured keys: a request with a wrong signature or an unknown key is
//! refused before any operation runs, so it changes nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use s3s::service::S3ServiceBuilder;
use shoal_client::Client;
use tokio::net::TcpListener;

use crate::auth::Keys;
use crate::gateway::Gateway;
use crate::multipart;
use crate::store::Store;

/// What one gateway port may hold: long uploads keep bytes moving, so only
/// silence ends a connection, never its age.
const LIMITS: shoal_proto::bounded::Limits =
    shoal_proto::bounded::Limits { max_connections: 512, idle: Duration::from_secs(120), lifetime: None };

/// How long a request may take to produce its answer's head (a PUT's whole
/// body included) before it is answered 503, which clients retry.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(120);

/// One user's keys, and whom they act as in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_key: String,
    pub secret_key: String,
    /// A credentials folder (as `--tls` takes): requests signed with this
    /// key reach the cluster with its certificate, so as its identity.
    /// None: as the gateway's own identity.
    pub tls: Option<std::path::PathBuf>,
}

/// What the gateway needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub credentials: Vec<Credential>,
    /// Multipart uploads and temporary objects untouched this long are removed.
    pub upload_max_age: Duration,
}

/// Parses a key file: one `ACCESS_KEY SECRET_KEY [CREDENTIALS_FOLDER]` per
/// line (the folder: whose identity the key acts as); blank lines and lines
/// starting with `#` are ignored. An access key given twice is refused.
pub fn parse_key_file(text: &str) -> Result<Vec<Credential>, String> {
    let mut out: Vec<Credential> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let credential = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(s), tls, None) => {
                Credential { access_key: a.into(), secret_key: s.into(), tls: tls.map(Into::into) }
            }
            _ => return Err(format!("line {}: expected ACCESS_KEY SECRET_KEY [CREDENTIALS_FOLDER]", i + 1)),
        };
        if out.iter().any(|c| c.access_key == credential.access_key) {
            return Err(format!("line {}: the access key {} is given twice", i + 1, credential.access_key));
        }
        out.push(credential);
    }
    Ok(out)
}

/// Checks the gateway's keys before it serves: every access key once (over
/// all the places keys come from), and every credentials folder usable as
/// an identity: it loads, it is no node's (a node's certificate would pass
/// chunk servers without capabilities, and its folder holds the cluster
/// key), and the gateway speaks TLS (`tls`). The transports of the folders,
/// by folder.
pub fn check_credentials(
    credentials: &[Credential],
    tls: bool,
) -> Result<HashMap<std::path::PathBuf, shoal_client::Transport>, String> {
    let mut seen = std::collections::HashSet::new();
    let mut transports = HashMap::new();
    for c in credentials {
        if !seen.insert(c.access_key.as_str()) {
            return Err(format!("the access key {} is given twice", c.access_key));
        }
        let Some(dir) = c.tls.as_deref() else { continue };
        if !tls {
            return Err(format!(
                "the key {} names credentials ({}), but this gateway is --insecure: identities need TLS",
                c.access_key,
                dir.display()
            ));
        }
        if transports.contains_key(dir) {
            continue;
        }
        let transport = shoal_client::Transport::load(dir).map_err(|e| format!("the key {}: {e}", c.access_key))?;
        if transport.identity().is_some_and(|i| i.role == shoal_tls::Role::Node) {
            return Err(format!(
                "the key {} names a node's credentials ({}): give it an admin's or a user's",
                c.access_key,
                dir.display()
            ));
        }
        transports.insert(dir.to_path_buf(), transport);
    }
    Ok(transports)
}

/// The stores of the keys in `credentials` that act as an identity of
/// their own (checked by [`check_credentials`]): one client per credentials
/// folder, for the meta nodes and with the timeout of `client`.
pub async fn key_stores(client: &Client, credentials: &[Credential]) -> Result<HashMap<String, Store>, String> {
    let transports = check_credentials(credentials, shoal_client::transport::process().is_tls())?;
    let mut by_folder: HashMap<&std::path::Path, Store> = HashMap::new();
    let mut out = HashMap::new();
    for c in credentials {
        let Some(dir) = c.tls.as_deref() else { continue };
        if !by_folder.contains_key(dir) {
            let transport = transports[dir].clone();
            let identity = transport.identity().map(|i| i.uri()).unwrap_or_default();
            let keyed = client.with_transport(transport).await.map_err(|e| format!("the key {}: {e}", c.access_key))?;
            tracing::info!(access_key = %c.access_key, %identity, "an S3 key acts as its own identity");
            by_folder.insert(dir, Store::new(keyed));
        }
        out.insert(c.access_key.clone(), by_folder[dir].clone());
    }
    Ok(out)
}

/// The S3 service, closing the connection after every error response: an
/// error may come before the request's body was read, and what is left of
/// it must not be taken for the next request on a kept-alive connection.
///
/// It also closes the connection after a request that asked for `Expect:
/// 100-continue` with an empty body: hyper answers it without a `100
/// Continue` (there is no body to ask for), and botocore (Debian's 1.29)
/// then keeps that answer's status line for the connection's next `Expect`
/// request, whose own status line it reads as a header: that answer seems
/// to lack its length, and the client waits for more until its read
/// timeout (README, S3, the fix of 2026-12-01). A fresh connection has no such
/// state.
#[derive(Clone)]
struct CloseOnError(s3s::service::S3Service);

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for CloseOnError {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let inner = self.0.clone();
        let close_after = expects_continue_without_body(&req);
        Box::pin(async move {
            let call = hyper::service::Service::call(&inner, req);
            let mut resp = match tokio::time::timeout(REQUEST_HEAD_TIMEOUT, call).await {
                Ok(r) => r?,
                Err(_) => {
                    tracing::warn!("a request found no answer in {REQUEST_HEAD_TIMEOUT:?}; answering 503");
                    let mut r = http::Response::new(s3s::Body::from(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>ServiceUnavailable</Code>\
                         <Message>the cluster did not answer in time</Message></Error>"
                            .to_string(),
                    ));
                    *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                    r
                }
            };
            if close_after || resp.status().is_client_error() || resp.status().is_server_error() {
                resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok(resp)
        })
    }
}

/// Whether `req` asks for `100 Continue` but declares no body to send after it.
fn expects_continue_without_body<B>(req: &http::Request<B>) -> bool {
    let headers = req.headers();
    let expects = headers
        .get(http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    let length = headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).map(str::trim);
    expects && matches!(length, None | Some("0"))
}

/// Serves S3 on `listener` until the task is dropped.
pub async fn serve(client: Client, listener: TcpListener, config: Config) -> std::io::Result<()> {
    let by_key = key_stores(&client, &config.credentials).await.map_err(std::io::Error::other)?;
    let store = Store::new(client);
    if let Err(e) = store.prepare().await {
        return Err(std::io::Error::other(format!("cannot make the gateway's working area: {e}")));
    }
    let mut builder = S3ServiceBuilder::new(Gateway::with_keys(store.clone(), by_key));
    builder.set_auth(Keys::new(&config.credentials));
    let service = CloseOnError(builder.build());
    tokio::spawn(multipart::janitor(store, config.upload_max_age));
    let gate = shoal_proto::bounded::Gate::new(listener, LIMITS);
    loop {
        let (stream, peer) = match gate.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: wait and go on rather than end.
                tracing::warn!("accepting an S3 connection failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = service.clone();
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expect_without_a_body_is_told_apart() {
        let req = |expect: Option<&str>, length: Option<&str>| {
            let mut b = http::Request::builder().method("PUT").uri("/b/k");
            if let Some(e) = expect {
                b = b.header("expect", e);
            }
            if let Some(l) = length {
                b = b.header("content-length", l);
            }
            b.body(()).unwrap()
        };
        assert!(expects_continue_without_body(&req(Some("100-continue"), Some("0"))));
        assert!(expects_continue_without_body(&req(Some("100-Continue"), None)));
        assert!(!expects_continue_without_body(&req(Some("100-continue"), Some("12"))));
        assert!(!expects_continue_without_body(&req(None, Some("0"))));
    }

    #[test]
    fn key_files() {
        let c = parse_key_file("# users\nAK1 SK1\n\n  AK2   SK2  \n").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1], Credential { access_key: "AK2".into(), secret_key: "SK2".into(), tls: None });
        assert!(parse_key_file("onlyone\n").unwrap_err().contains("line 1"));
        let c = parse_key_file("AK3 SK3 /etc/shoal/tls/bob\n").unwrap();
        assert_eq!(c[0].tls.as_deref(), Some(std::path::Path::new("/etc/shoal/tls/bob")));
        assert!(parse_key_file("a b c d\n").is_err());
        assert!(parse_key_file("a b\na c\n").unwrap_err().contains("line 2"), "a key given twice");
    }
}
