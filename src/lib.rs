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
//! - [`store`]: the `DashMap` of records, per-function ordered indexes, configs, and the watch
//!   hub. One commit path for every mutation.
//! - [`engine`]: turns intents (invoke, stop, configure) into store mutations.
//! - [`api`]: tonic services; proto <-> model conversion; the one error -> `Status` map.
//! - [`server`]: assembles services, health, reflection and graceful shutdown.
//! - [`cli`]: the `sai` command.
//! - [`pb`]: generated code for `proto/sai/v1`.

pub mod api;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pb;
pub mod persist;
pub mod server;
pub mod store;
