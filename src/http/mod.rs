//! The HTTP listener beside gRPC (`--http ADDR`, axum on the same runtime): the dashboard at
//! `/` and the JSON API it reads (`api`), Prometheus metrics at `/metrics`, and health for
//! orchestrators at `/healthz` (the process answers) and `/readyz` (the store is loaded,
//! takes writes, and its writes return). It starts before the store is loaded, so that an
//! orchestrator sees "alive, not ready" during a long load.

mod api;
mod dashboard;
pub mod fc;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::api::{InvocationService, Tokens};
use crate::clock::Clock;
use crate::engine::Engine;

/// A write to the data directory running longer than this makes the server not ready: a
/// sync takes milliseconds, and a flush the keyspace waits on seconds at most.
pub const STALLED_WRITE: Duration = Duration::from_secs(30);

/// What the HTTP handlers read: the tokens and access keys, the clock, and the engine and
/// its gRPC service once the store is loaded.
pub struct HttpState {
    tokens: Option<Arc<Tokens>>,
    access_keys: Option<Arc<fc::access_keys::AccessKeys>>,
    clock: Clock,
    loaded: OnceLock<(Arc<Engine>, InvocationService)>,
}

impl HttpState {
    /// Before the store is loaded; `tokens` guard the JSON API as they guard gRPC, and
    /// `access_keys` FC's REST API (requests must then be signed).
    pub fn new(
        tokens: Option<Arc<Tokens>>,
        access_keys: Option<Arc<fc::access_keys::AccessKeys>>,
        clock: Clock,
    ) -> Self {
        HttpState {
            tokens,
            access_keys,
            clock,
            loaded: OnceLock::new(),
        }
    }

    fn access_keys(&self) -> Option<&fc::access_keys::AccessKeys> {
        self.access_keys.as_deref()
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The store is loaded and the engine runs: from now on the server is ready, and the
    /// JSON API calls `service`, the one gRPC serves (sharing its per-account limits).
    pub fn loaded(&self, engine: Arc<Engine>, service: InvocationService) {
        let _ = self.loaded.set((engine, service));
    }

    fn engine(&self) -> Option<&Arc<Engine>> {
        self.loaded.get().map(|(engine, _)| engine)
    }

    fn service(&self) -> Option<InvocationService> {
        self.loaded.get().map(|(_, service)| service.clone())
    }

    fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_deref()
    }
}

/// The routes of the HTTP listener.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .merge(dashboard::routes())
        .merge(api::routes())
        .merge(fc::routes())
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if let Some(service) = state.service() {
        metrics::gauge!(crate::metrics::names::WATCH_STREAMS).set(service.watch_streams() as f64);
        metrics::gauge!(crate::metrics::names::INVOKE_STREAMS).set(service.invoke_streams() as f64);
    }
    let body = match state.engine() {
        Some(engine) => crate::metrics::render(engine),
        None => crate::metrics::recorder()
            .map(|handle| handle.render())
            .unwrap_or_default(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, String) {
    let (status, why) = match state.engine() {
        None => readiness(false, false, None),
        Some(engine) => readiness(
            true,
            engine.backend().writable(),
            engine.backend().write_running_for(),
        ),
    };
    (status, why)
}

/// Whether the server is ready, and why not: loaded, taking writes, and no write to the data
/// directory stuck for longer than [`STALLED_WRITE`].
fn readiness(
    loaded: bool,
    writable: bool,
    write_running_for: Option<Duration>,
) -> (StatusCode, String) {
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why);
    match write_running_for {
        _ if !loaded => unavailable("loading\n".into()),
        _ if !writable => unavailable("the store refuses writes\n".into()),
        Some(running) if running > STALLED_WRITE => {
            let why = format!(
                "a write to the data directory has not returned for {} s\n",
                running.as_secs()
            );
            tracing::error!(
                seconds = running.as_secs(),
                "a write to the data directory is stuck"
            );
            unavailable(why)
        }
        _ => (StatusCode::OK, "ready\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_loaded_writable_and_no_write_is_stuck() {
        let ready = |loaded, writable, running: Option<u64>| {
            readiness(loaded, writable, running.map(Duration::from_secs)).0
        };
        assert_eq!(ready(true, true, None), StatusCode::OK);
        assert_eq!(ready(true, true, Some(1)), StatusCode::OK);
        assert_eq!(ready(false, false, None), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ready(true, false, None), StatusCode::SERVICE_UNAVAILABLE);
        let stuck = STALLED_WRITE.as_secs() + 1;
        let (status, why) = readiness(true, true, Some(Duration::from_secs(stuck)));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(why.contains(&format!("{stuck} s")), "{why}");
    }
}
