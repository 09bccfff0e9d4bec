//! The dashboard: one page and its script and style, embedded in the binary (no build step),
//! served at `/`. It reads the JSON API (`api`) and follows changes live over its event
//! stream; with `--auth-tokens` it asks for a token and sends it on every request.

use std::sync::Arc;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::HttpState;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Only the page's own files run, and they talk only to this server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

/// The routes of the page and its assets.
pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // A new binary serves new assets: the browser asks again each time.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
