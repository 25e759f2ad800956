//! A tower layer that counts and times every gRPC call a server answers:
//! `shoal_rpc_requests_total{method, code}` and
//! `shoal_rpc_duration_seconds{method}`.
//!
//! `method` is the call's path without its leading slash
//! (`shoal.meta.Namespace/Create`); `code` is the gRPC status name (`OK`,
//! `UNAVAILABLE`, ...). A call ends, for these metrics, when its response
//! headers are ready: for a unary or client-streaming call that is the whole
//! call; for a server-streaming one (a chunk read) it is the first piece. The
//! code is the `grpc-status` of those headers, which every error returned by
//! a handler carries; a streamed answer that fails part-way, whose status
//! comes in the trailers, counts as `OK`.
//!
//! Cost per call: one read lock on the method table and the updates of one
//! counter and one histogram; label strings are made once per method and
//! code, when first seen. Paths come from the network, so a path enters the
//! table only once the server has answered it with something other than
//! `UNIMPLEMENTED` (so garbage paths never take a place), the table holds at
//! most [`METHODS_MAX`] methods, and calls of any further path count as
//! `other`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use metrics::{Counter, Histogram};

pub const REQUESTS_TOTAL: &str = "shoal_rpc_requests_total";
pub const DURATION_SECONDS: &str = "shoal_rpc_duration_seconds";

/// Distinct methods one server keeps metrics for, at most.
pub const METHODS_MAX: usize = 64;
/// The label of calls to methods past [`METHODS_MAX`].
const OTHER_METHOD: &str = "other";

/// gRPC status names by code (0 to 16).
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CODE_UNKNOWN: usize = 2;

/// Describes the layer's metrics to the recorder (their `# HELP` lines).
pub fn describe() {
    metrics::describe_counter!(REQUESTS_TOTAL, "gRPC calls answered, by method and status code.");
    metrics::describe_histogram!(
        DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from a gRPC call's arrival to its response headers, by method."
    );
}

/// The status code of a response, as an index into [`CODE_NAMES`]: its
/// `grpc-status` header, or OK for a plain 200 (the status then follows in
/// the trailers), or UNKNOWN.
pub fn code_of(headers: &HeaderMap, status: StatusCode) -> usize {
    match headers.get("grpc-status") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|c| *c < CODE_NAMES.len())
            .unwrap_or(CODE_UNKNOWN),
        None if status == StatusCode::OK => 0,
        None => CODE_UNKNOWN,
    }
}

/// The name of code index `code` (see [`code_of`]).
pub fn code_name(code: usize) -> &'static str {
    CODE_NAMES.get(code).copied().unwrap_or(CODE_NAMES[CODE_UNKNOWN])
}

/// The metrics of one method; counters are registered per code on first use.
struct MethodStats {
    name: String,
    duration: Histogram,
    requests: [OnceLock<Counter>; CODE_NAMES.len()],
}

impl MethodStats {
    fn new(name: &str) -> MethodStats {
        MethodStats {
            name: name.to_string(),
            duration: metrics::histogram!(DURATION_SECONDS, "method" => name.to_string()),
            requests: Default::default(),
        }
    }

    fn record(&self, code: usize, elapsed: Duration) {
        let code = code.min(CODE_NAMES.len() - 1);
        self.requests[code]
            .get_or_init(
                || metrics::counter!(REQUESTS_TOTAL, "method" => self.name.clone(), "code" => CODE_NAMES[code]),
            )
            .increment(1);
        self.duration.record(elapsed.as_secs_f64());
    }
}

/// The methods seen so far, by path.
struct Table {
    methods: RwLock<HashMap<String, Arc<MethodStats>>>,
    other: OnceLock<Arc<MethodStats>>,
}

/// `UNIMPLEMENTED`: the server has no such method.
const CODE_UNIMPLEMENTED: usize = 12;

impl Table {
    /// The entry of a method already in the table.
    fn known(&self, path: &str) -> Option<Arc<MethodStats>> {
        let name = path.strip_prefix('/').unwrap_or(path);
        self.methods.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    fn other(&self) -> Arc<MethodStats> {
        self.other.get_or_init(|| Arc::new(MethodStats::new(OTHER_METHOD))).clone()
    }

    /// The entry of a path the server answered with `code`: a new one for a
    /// method it has, while there is room; `other` for the rest.
    fn answered(&self, path: &str, code: usize) -> Arc<MethodStats> {
        if code == CODE_UNIMPLEMENTED {
            return self.known(path).unwrap_or_else(|| self.other());
        }
        self.get(path)
    }

    fn get(&self, path: &str) -> Arc<MethodStats> {
        let name = path.strip_prefix('/').unwrap_or(path);
        if let Some(m) = self.known(path) {
            return m;
        }
        let mut methods = self.methods.write().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = methods.get(name) {
            return m.clone();
        }
        if methods.len() >= METHODS_MAX {
            drop(methods);
            return self.other();
        }
        let m = Arc::new(MethodStats::new(name));
        methods.insert(name.to_string(), m.clone());
        m
    }
}

/// See the module docs. Clones share one method table.
#[derive(Clone)]
pub struct RpcLayer {
    table: Arc<Table>,
}

impl RpcLayer {
    /// A layer with its own method table; make it after the recorder is
    /// installed (the metrics register with the recorder of their first use).
    pub fn new() -> RpcLayer {
        RpcLayer { table: Arc::new(Table { methods: RwLock::new(HashMap::new()), other: OnceLock::new() }) }
    }
}

impl Default for RpcLayer {
    fn default() -> Self {
        RpcLayer::new()
    }
}

impl<S> tower_layer::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> RpcService<S> {
        RpcService { inner, table: self.table.clone() }
    }
}

/// The service [`RpcLayer`] wraps around a server's routes.
#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    table: Arc<Table>,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for RpcService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        // A method seen before costs no allocation; a new path is kept until
        // its answer says whether the server has such a method.
        let method = self.table.known(req.uri().path()).ok_or_else(|| req.uri().path().to_string());
        let table = self.table.clone();
        let started = Instant::now();
        let answer = self.inner.call(req);
        Box::pin(async move {
            let result = answer.await;
            let code = match &result {
                Ok(response) => code_of(response.headers(), response.status()),
                Err(_) => CODE_UNKNOWN,
            };
            let method = method.unwrap_or_else(|path| table.answered(&path, code));
            method.record(code, started.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_from_the_grpc_status_header() {
        let mut h = HeaderMap::new();
        assert_eq!(code_name(code_of(&h, StatusCode::OK)), "OK");
        assert_eq!(code_name(code_of(&h, StatusCode::NOT_FOUND)), "UNKNOWN");
        h.insert("grpc-status", "14".parse().unwrap());
        assert_eq!(code_name(code_of(&h, StatusCode::OK)), "UNAVAILABLE");
        h.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(code_name(code_of(&h, StatusCode::OK)), "UNKNOWN");
        h.insert("grpc-status", "x".parse().unwrap());
        assert_eq!(code_name(code_of(&h, StatusCode::OK)), "UNKNOWN");
    }

    #[test]
    fn the_method_table_is_bounded() {
        let layer = RpcLayer::new();
        let a = layer.table.get("/shoal.meta.Namespace/Create");
        assert_eq!(a.name, "shoal.meta.Namespace/Create");
        assert!(Arc::ptr_eq(&a, &layer.table.get("/shoal.meta.Namespace/Create")), "one entry per method");
        for i in 0..METHODS_MAX * 2 {
            layer.table.get(&format!("/junk/{i}"));
        }
        assert_eq!(layer.table.methods.read().unwrap().len(), METHODS_MAX);
        assert_eq!(layer.table.get("/junk/new").name, OTHER_METHOD);
    }

    #[test]
    fn paths_the_server_does_not_have_take_no_place() {
        let layer = RpcLayer::new();
        for i in 0..METHODS_MAX * 2 {
            assert_eq!(layer.table.answered(&format!("/junk/{i}"), CODE_UNIMPLEMENTED).name, OTHER_METHOD);
        }
        assert!(layer.table.methods.read().unwrap().is_empty());
        let real = layer.table.answered("/shoal.meta.Namespace/Stat", 5);
        assert_eq!(real.name, "shoal.meta.Namespace/Stat");
        // A known method that answers UNIMPLEMENTED keeps its own entry.
        assert!(Arc::ptr_eq(&real, &layer.table.answered("/shoal.meta.Namespace/Stat", CODE_UNIMPLEMENTED)));
    }
}
