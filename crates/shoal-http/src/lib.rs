//! Shoal's web dashboard and its JSON API: an HTTP front end over the client
//! library.
//!
//! [`router`] answers everything from a [`shoal_client::Client`]: it never
//! talks to a meta node or a chunk server on its own, so it works wherever a
//! client does (the `shoal http` command, or mounted on a meta node's HTTP
//! port, where a follower serves data from the leader through the client's
//! leader following).
//!
//! - `GET /` is the dashboard: one HTML page with its CSS and JavaScript
//!   built into the binary ([`assets`]), which polls the API every 2 s.
//! - `GET /api/v1/...` is the JSON API ([`api`]); its bodies are the
//!   `shoal_client::report` values that `shoal admin ... --json` prints.
//!   Errors are JSON with a 4xx or 5xx status ([`error`]).
//! - A background task samples stored bytes and meta operations for the
//!   charts of the last 10 minutes ([`sampler`]).
//! - [`serve::serve`] serves any of Shoal's HTTP apps with a bound on
//!   connections and their idle time and lifetime.
//!
//! Cost to the cluster: the cluster-wide reports (`status`, `nodes`,
//! `health`) are cached for [`REPORT_TTL`] and fetched once for all the
//! requests that arrive meanwhile, so any number of open dashboards cost meta
//! about what one does; the sampler reads through the same cache, and only
//! samples while someone has asked for a page or the API in the last
//! [`sampler::WINDOW`], so a dashboard nobody looks at costs nothing.

pub mod api;
pub mod assets;
pub mod error;
pub mod sampler;
pub mod serve;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_client::report::{self, ChunkServerReport, FsckReport, MetaGroupReport};
use shoal_client::{Client, ClientError};

/// How long a cluster-wide report is served from memory before it is asked again.
pub const REPORT_TTL: Duration = Duration::from_secs(1);

/// The dashboard and the JSON API over `client`.
///
/// Starts the sampler task, so it must be called inside a Tokio runtime; the
/// task ends when the returned router (and every clone of it) is dropped.
pub fn router(client: Client) -> axum::Router {
    let state = Arc::new(State {
        client,
        samples: Arc::new(Mutex::new(sampler::Ring::default())),
        status: Cached::default(),
        nodes: Cached::default(),
        health: Cached::default(),
        viewed_at: Mutex::new(None),
    });
    tokio::spawn(sampler::run(Arc::downgrade(&state)));
    api::routes()
        .merge(assets::routes())
        .layer(axum::middleware::from_fn_with_state(state.clone(), viewed))
        .with_state(state)
}

/// Notes that someone is looking, for the sampler.
async fn viewed(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    *state.viewed_at.lock().expect("viewed_at") = Some(Instant::now());
    next.run(request).await
}

/// What every handler shares.
pub struct State {
    pub client: Client,
    samples: Arc<Mutex<sampler::Ring>>,
    status: Cached<MetaGroupReport>,
    nodes: Cached<Vec<ChunkServerReport>>,
    health: Cached<FsckReport>,
    /// When a page or the API was last asked for.
    viewed_at: Mutex<Option<Instant>>,
}

impl State {
    /// Whether someone asked for a page or the API within `window`.
    pub fn viewed_within(&self, window: Duration) -> bool {
        self.viewed_at.lock().expect("viewed_at").is_some_and(|t| t.elapsed() <= window)
    }

    /// Every meta node's view of itself (never fails: a node that does not
    /// answer is in the report as unreachable).
    pub async fn status(&self) -> Arc<MetaGroupReport> {
        let fetched: Result<_, ClientError> =
            self.status.get(|| async { Ok(report::meta_group(&self.client, false).await) }).await;
        fetched.expect("meta_group never fails")
    }

    pub async fn nodes(&self) -> Result<Arc<Vec<ChunkServerReport>>, ClientError> {
        self.nodes.get(|| report::chunk_servers(&self.client)).await
    }

    pub async fn health(&self) -> Result<Arc<FsckReport>, ClientError> {
        self.health.get(|| report::fsck(&self.client)).await
    }

    pub fn throughput(&self) -> sampler::Throughput {
        self.samples.lock().expect("sample ring").throughput()
    }
}

/// One report, kept for [`REPORT_TTL`]. Callers that arrive while it is
/// being fetched wait for that fetch instead of starting their own. Errors
/// are not kept: the next caller asks again.
struct Cached<T> {
    slot: tokio::sync::Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached { slot: tokio::sync::Mutex::new(None) }
    }
}

impl<T> Cached<T> {
    async fn get<F, Fut>(&self, fetch: F) -> Result<Arc<T>, ClientError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((at, v)) = slot.as_ref()
            && at.elapsed() < REPORT_TTL
        {
            return Ok(v.clone());
        }
        let v = Arc::new(fetch().await?);
        *slot = Some((Instant::now(), v.clone()));
        Ok(v)
    }
}
