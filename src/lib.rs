//! # sai: stateful async invocations
//!
//! A self-hostable gRPC service implementing the asynchronous-task model of Alibaba Cloud
//! Function Compute: clients invoke named functions asynchronously; sai queues each
//! invocation, hands it to a worker, tracks its status and event history, and lets anyone get,
//! list and watch it live.
//!
//! ## Layout
//!
//! ```text
//!  cli ──> server ──> api ──> engine ──> store ──> model
//!                      │                  ^
//!                      └──── reads ───────┘   (get, list, watch never wait on the engine)
//! ```
//!
//! - [`model`]: invocations, events, the status machine, configs, input rules. Pure.
//! - `store`: the `DashMap` of records, per-function ordered indexes, configs, and the watch
//!   hub. One commit path for every mutation.
//! - `engine`: turns intents (invoke, stop, configure) into store mutations.
//! - `api`: tonic services; proto <-> model conversion; the one error -> `Status` map.
//! - [`server`]: assembles services, health, reflection and graceful shutdown.
//! - [`cli`]: the `sai` command.
//! - [`pb`]: generated code for `proto/sai/v1`.
//!
//! ## What is public
//!
//! The binary is the product; the library exists so that it can be embedded and tested. Its
//! API is [`server`] (configure and run a server, in-process or as `sai serve`), [`clock`]
//! (the time it runs on, controllable in tests), [`model`] (the domain types), [`pb`] (the
//! gRPC messages and clients) and [`cli`] (the `sai` command). Everything else is internal.

mod api;
mod bench;
pub mod cli;
pub mod clock;
mod engine;
mod error_chain;
mod http;
mod metrics;
pub mod model;
pub mod pb;
mod persist;
pub mod server;
mod store;
pub mod telemetry;

/// What the crate's own fuzz targets, data-directory and database tests drive below the
/// server: not an API, and it changes with the code.
#[doc(hidden)]
pub mod internals {
    pub use crate::api::convert;
    pub use crate::engine::Engine;
    pub use crate::persist::{Persist, FORMAT_VERSION};
    pub use crate::store::{page, Backend, Postgres, PurgeStop, Purged, RETENTION_LOCK};
}
