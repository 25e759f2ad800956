//! The dashboard page: HTML, CSS and JavaScript compiled into the binary
//! (`include_str!`), so it works on machines without internet. Nothing is
//! loaded from anywhere else; the page draws its charts on a canvas itself.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");

pub(crate) fn routes() -> axum::Router<Arc<crate::State>> {
    axum::Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard.css", get(|| async { page("text/css; charset=utf-8", DASHBOARD_CSS) }))
        .route("/dashboard.js", get(|| async { page("text/javascript; charset=utf-8", DASHBOARD_JS) }))
}

/// An asset; `no-cache` so a new binary's page is picked up at the next load.
fn page(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body)
}
