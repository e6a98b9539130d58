//! # wxcourier — a WeChat message delivery worker (template, subscription and subscribe messages)
//!
//! # Layout
//!
//! Jobs flow through the modules in this order, and data only moves forward:
//!
//! - [`config`]: typed settings from the TOML file and `WXCOURIER_…` variables, validated.
//! - [`job`]: the job envelope and its validation into a `Job` or a `Rejection`.
//! - [`catalog`]: an app's template list from WeChat, against which template jobs are checked
//!   before any quota is spent (`apps.NAME.catalog`).
//! - [`kinds`]: each message kind (template, subscription notification, mini-program subscribe
//!   message) in its own folder: its fields, its WeChat request, its errcodes, its outcome.
//! - [`outcome`]: the outcome and delivery-report wire formats and their routing keys.
//! - [`retry`]: the backoff schedule, delay tiers and the retry state carried in headers.
//! - [`state`]: idempotency (sent ids and their msgids) and msgid → job, in memory or in
//!   Redis shared by every instance; idempotency, the shared token and the shared rate are
//!   capabilities (traits) a backend declares, checked at start.
//! - [`limiter`]: per-app send rate and the global cap on WeChat calls in flight.
//! - [`quota`]: the per-app pause after WeChat says the quota is spent (45009).
//! - [`daily_quota`]: the daily quota WeChat reports per API, polled into gauges.
//! - [`wechat`]: HTTP calls, the errcode table, the token keeper, callback crypto, and the
//!   read-only lookups beside the sends.
//! - [`broker`]: RabbitMQ topology, confirmed publishing, the retry and dead-letter copies,
//!   and the start-up report of job queues whose app is no longer configured.
//! - [`worker`]: one job's pipeline (`process`, over the seams in `worker::deps`: WeChat,
//!   idempotency, rate, token, clock) and the consumers that run it; with memory state, a
//!   watch for other consumers of the same queues.
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`, and [`callback`], the receiver of WeChat's
//!   delivery reports and users' subscription and follow events (in the form `callback_mode`
//!   allows); `http::server` is the accept loop with the connection cap and the timeouts that
//!   keep slow clients off the port.
//! - [`metrics`]: the Prometheus families behind `/metrics`.
//! - [`sim`]: the WeChat API simulator used by tests, the demo and benchmarks.
//! - [`telemetry`]: logging and the readiness flag.
//! - [`text`]: bounding untrusted text before it is echoed into headers, logs and outcomes.
//! - [`cli`]: the `run`, `sim`, `send`, `demo`, `check` and `dead` verbs.

#![forbid(unsafe_code)]

pub mod broker;
pub mod callback;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod daily_quota;
pub mod http;
pub mod job;
pub mod kinds;
pub mod limiter;
pub mod metrics;
pub mod outcome;
pub mod quota;
pub mod retry;
pub mod sim;
pub mod state;
pub mod telemetry;
pub mod text;
pub mod wechat;
pub mod worker;
