//! # wxcourier — a WeChat message delivery worker (template, subscription and subscribe messages)
//!
//! # Layout
//!
//! Dependencies run one way: a module uses only the layers above it in this list, never one
//! below. `tests/imports.rs` holds the allowed edges, checks every `crate::…` path against them,
//! and checks that they have no cycle.
//!
//! Plain values, used by every layer:
//! - [`text`]: bounding untrusted text before it is echoed into headers, logs and outcomes.
//! - [`types`]: `Secret`, `Span` (durations), the `Class` of a WeChat answer, the
//!   EncodingAESKey form.
//!
//! What the service says and is told:
//! - [`outcome`]: the outcome and delivery-report wire formats and their routing keys.
//! - [`kinds`]: each message kind (template, subscription notification, mini-program subscribe
//!   message) in its own folder: its fields, its WeChat request, its errcodes, its outcome.
//! - [`config`]: typed settings from the TOML file and `WXCOURIER_…` variables, validated,
//!   with every default (the errcode and reason code sets too). The base of the running parts:
//!   they read their settings from it, it reads none of them.
//! - [`job`]: the job envelope and its validation into a `Job` or a `Rejection`.
//!
//! The parts the pipeline is built from:
//! - [`retry`]: the backoff schedule, delay tiers and the retry state carried in headers.
//! - [`state`]: idempotency (sent ids and their msgids), msgid → job, and the shared tokens,
//!   in memory or in Redis shared by every instance.
//! - [`limiter`]: per-app send rate and the global cap on WeChat calls in flight.
//! - [`quota`]: the per-app pause after WeChat says the quota is spent (45009).
//! - [`metrics`]: the Prometheus families behind `/metrics`.
//! - [`telemetry`]: logging and the readiness flag.
//! - [`wechat`]: HTTP calls, the errcode table, the reason rule, the token keeper (shared
//!   through [`state`] when that is Redis), callback crypto.
//! - [`broker`]: RabbitMQ topology, confirmed publishing, the publisher of the session in
//!   force, the retry and dead-letter copies, and the start-up report of job queues whose app
//!   is no longer configured.
//!
//! The running parts, each with its own state:
//! - [`callback`]: the receiver of WeChat's delivery reports (in the form `callback_mode`
//!   allows), publishing on the broker session in force.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`; `http::server` is the accept loop with the
//!   connection cap and the timeouts that keep slow clients off the port.
//! - [`worker`]: one job's pipeline (`process`) and the consumers that run it; with memory
//!   state, a watch for other consumers of the same queues.
//! - [`sim`]: the WeChat API simulator used by tests, the demo and benchmarks.
//!
//! Putting them together:
//! - [`startup`]: builds the pipeline's context, the callback's state and the HTTP state from
//!   the settings, and runs them under one stop signal.
//! - [`cli`]: the `run`, `sim`, `send`, `demo`, `check` and `dead` verbs.

#![forbid(unsafe_code)]

pub mod broker;
pub mod callback;
pub mod cli;
pub mod config;
pub mod http;
pub mod job;
pub mod kinds;
pub mod limiter;
pub mod metrics;
pub mod outcome;
pub mod quota;
pub mod retry;
pub mod sim;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod text;
pub mod types;
pub mod wechat;
pub mod worker;
