//! The HTTP listener beside gRPC (`--http ADDR`, axum on the same runtime): Prometheus metrics
//! at `/metrics`, and health for orchestrators at `/healthz` (the process answers) and
//! `/readyz` (the store is loaded and takes writes). It starts before the store is loaded,
//! so that an orchestrator sees "alive, not ready" during a long load.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::engine::Engine;

/// What the HTTP handlers read: the engine, once the store is loaded.
#[derive(Default)]
pub struct HttpState {
    engine: OnceLock<Arc<Engine>>,
}

impl HttpState {
    /// The store is loaded and the engine runs: from now on the server is ready.
    pub fn loaded(&self, engine: Arc<Engine>) {
        let _ = self.engine.set(engine);
    }
}

/// The routes of the HTTP listener.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let body = match state.engine.get() {
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

async fn readyz(State(state): State<Arc<HttpState>>) -> (StatusCode, &'static str) {
    match state.engine.get() {
        None => (StatusCode::SERVICE_UNAVAILABLE, "loading\n"),
        Some(engine) if !engine.store().writable() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the store refuses writes\n",
        ),
        Some(_) => (StatusCode::OK, "ready\n"),
    }
}
