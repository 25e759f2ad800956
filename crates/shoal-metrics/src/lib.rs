//! Shoal's Prometheus metrics: the process-wide recorder, the process's own
//! metrics, the gRPC request layer, and the `GET /metrics` route.
//!
//! Libraries record through the `metrics` facade (`metrics::counter!` and
//! friends) and never name this crate's recorder; until [`install`] runs,
//! the facade's calls go nowhere and cost next to nothing. A server that
//! serves metrics calls [`install`] once, before it starts its work, and
//! serves [`router`] on its HTTP port (merged with any other routes the port
//! serves: `shoal_metrics::router().merge(other)`).
//!
//! What a scrape costs: rendering what the recorder holds (a walk over every
//! series, no lock on any server state) and reading four small files under
//! `/proc/self` ([`process`]). Values derived from server state (file counts,
//! fsck) are sampled by the servers in the background, never per scrape.
//!
//! Histograms all measure seconds and share [`LATENCY_BUCKETS_SECONDS`].
//!
//! Names follow Prometheus: `shoal_<role>_<what>_<unit>`, counters end in
//! `_total`, units last (`_seconds`, `_bytes`).

pub mod process;
pub mod rpc;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use rpc::RpcLayer;

/// Bucket bounds of every histogram: latencies from 100 µs (a cached read)
/// to 30 s (a copy of a large chunk, a stalled disk).
pub const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// How often histogram samples are folded into their buckets. Without it,
/// samples recorded between two scrapes pile up in memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("the histogram buckets were refused: {0}")]
    Buckets(#[from] metrics_exporter_prometheus::BuildError),
    #[error("another metrics recorder is already installed in this process")]
    RecorderTaken,
    #[error("cannot start the metrics upkeep thread: {0}")]
    Upkeep(std::io::Error),
}

/// Installs the Prometheus recorder as this process's `metrics` recorder
/// (once; later calls return the same handle) and starts the thread that
/// folds histogram samples every [`UPKEEP_EVERY`].
pub fn install() -> Result<&'static PrometheusHandle, InstallError> {
    static INSTALLING: Mutex<()> = Mutex::new(());
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let recorder = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS_SECONDS)?.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| InstallError::RecorderTaken)?;
    rpc::describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        })
        .map_err(InstallError::Upkeep)?;
    Ok(HANDLE.get_or_init(|| handle))
}

/// The whole `/metrics` answer: what the recorder holds, then the process's
/// own metrics. None until [`install`] ran.
pub fn render() -> Option<String> {
    let mut text = HANDLE.get()?.render();
    process::render(&mut text);
    Some(text)
}

/// `GET /metrics` in the Prometheus text format. Installs the recorder if
/// nobody did (a server should [`install`] it earlier, before recording).
pub fn router() -> Router {
    if let Err(e) = install() {
        tracing::warn!("metrics are not recorded: {e}");
    }
    Router::new().route("/metrics", get(scrape))
}

async fn scrape() -> Response {
    match render() {
        Some(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "the metrics recorder is not installed\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_strictly() {
        assert!(LATENCY_BUCKETS_SECONDS.windows(2).all(|w| w[0] < w[1]));
    }

    /// One test for everything that needs the process-wide recorder.
    #[tokio::test]
    async fn the_route_serves_recorded_metrics_and_process_metrics() {
        let first = install().unwrap() as *const PrometheusHandle;
        assert_eq!(install().unwrap() as *const PrometheusHandle, first, "installing twice is harmless");
        metrics::counter!("shoal_test_things_total", "kind" => "a").increment(3);
        metrics::histogram!("shoal_test_wait_seconds").record(0.003);
        let response = scrape().await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], TEXT_FORMAT);
        let text = render().unwrap();
        assert!(text.contains("shoal_test_things_total{kind=\"a\"} 3"), "{text}");
        assert!(text.contains("# TYPE shoal_test_wait_seconds histogram"), "{text}");
        assert!(text.contains("shoal_test_wait_seconds_bucket{le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("# TYPE shoal_process_resident_memory_bytes gauge"), "{text}");
        assert!(text.contains("# TYPE shoal_process_cpu_seconds_total counter"), "{text}");
    }
}
