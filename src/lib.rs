//! # wxcourier — a WeChat message delivery worker (template, subscription and subscribe messages)
//!
//! # Layout
//!
//! Dependencies run one way: a module uses only the layers above it in this list, never one
//! below. `tests/imports.rs` holds the allowed edges, checks every `crate::…` path against them,
//! and checks that they have no cycle; it also checks that no file of `src/` takes from a file
//! that takes from it, even inside a folder: what a folder's children share lives in a file of
//! its own (`broker::names`, `cli::shared`, `config::error`, `worker::context`, …), not in the
//! `mod.rs` that uses them.
//!
//! Linked modules are public: the binary, the tests, the benchmark and the fuzz targets use
//! them. Modules in plain code are private, and every item is `pub(crate)` unless one of those
//! users needs it, so the compiler reports what nothing uses (`unreachable_pub`, dead code).
//!
//! Plain values, used by every layer:
//! - `clock`: the time of day behind one `Clock` seam, read by the pipeline, the callback's
//!   replay window and the verbs that stamp what they publish, so a test can set it.
//! - `text`: bounding untrusted text before it is echoed into headers, logs and outcomes.
//! - [`types`]: `Secret`, `Span` (durations), the `Class` of a WeChat answer, the
//!   EncodingAESKey form.
//!
//! What the service says and is told:
//! - [`outcome`]: the outcome and delivery-report wire formats and their routing keys.
//! - [`kinds`]: the message kinds (template, subscription notification, mini-program subscribe
//!   message) as a closed `enum Kind`, each in one file with its fields, its WeChat request and
//!   its errcode overrides. Adding a kind is one file plus one enum arm: every question about a
//!   kind is a `match` on the enum, so the compiler lists each place to extend.
//! - [`quiet_hours`]: an app's quiet hours as time arithmetic (a daily window of local times
//!   in an IANA zone, and the instant it ends), read by `config` and applied by the pipeline.
//! - [`config`]: typed settings from the TOML file and `WXCOURIER_…` variables, validated,
//!   with every default (the errcode and reason code sets too). A value meaningless on its own
//!   (0, NaN) is refused by its type (`NonZero*`, `Rate`, `NonZeroSpan`); former key names are
//!   still read and warned about. The base of the running parts:
//!   they read their settings from it, it reads none of them.
//! - [`job`]: the job envelope and its validation into a `Job` or a `Rejection`.
//!
//! The parts the pipeline is built from:
//! - [`retry`]: the backoff schedule, delay tiers and the retry state carried in headers.
//! - [`state`]: idempotency (sent ids and their msgids, and the cancels decided against them),
//!   and the callback's reports (which were
//!   published, and msgid → job), in memory or in Redis shared by every instance (one node,
//!   Sentinel or Cluster); idempotency, reports, the shared token, the shared rate, the send
//!   limits (per-recipient caps, content de-duplication) and the kill switch's pauses are
//!   capabilities (traits) a backend declares, checked at start.
//! - `limiter`: per-app send rate (shared through [`state`] when it can) and the global cap
//!   on WeChat calls in flight.
//! - `pause`: the per-app pause after WeChat says the quota is spent (45009).
//! - [`metrics`]: the Prometheus families behind `/metrics`, which list themselves from the
//!   registry (`metrics-list`).
//! - `telemetry`: logging and the readiness flag.
//! - [`wechat`]: HTTP calls, the errcode table, the reason rule, the token keeper (shared
//!   through [`state`] when it can), callback crypto, and the read-only lookups beside the
//!   sends.
//! - [`catalog`]: an app's template list from WeChat, against which template jobs are checked
//!   before any quota is spent (`apps.NAME.catalog`).
//! - [`daily_quota`]: the daily quota WeChat reports per API, polled into gauges.
//! - [`broker`]: RabbitMQ topology, confirmed publishing, the publisher of the session in
//!   force, the retry and dead-letter copies, the two traits a delivery is settled through
//!   (a confirmed publish; ack or hand back), and the start-up report of job queues whose app
//!   is no longer configured.
//!
//! - [`trail`]: each job's story by its id (received, each try and its wait, its end, the
//!   delivery report), kept for `state.trail_ttl` in the state backend, best effort.
//!
//! The running parts, each with its own state:
//! - [`callback`]: the receiver of WeChat's delivery reports and users' subscription and
//!   follow events (in the form `callback_mode` allows): a pure `open` holds every check, and
//!   the reports go out through two seams (the reports' state, an outlet that is the broker
//!   session in force) on a task start-up waits for.
//! - [`platform`]: WeChat's third-party platform: its component calls and token, the pushes
//!   to its authorization event URL (verify tickets, merchants authorizing and withdrawing),
//!   checked as the callback checks its pushes, and what they leave in the state (each
//!   authorizer's refresh token and standing).
//! - `http`: `/healthz`, `/readyz`, `/metrics`; `http::server` is the accept loop with the
//!   connection cap and the timeouts that keep slow clients off the port.
//! - [`worker`]: one job's pipeline (`process`, over the seams in `worker::deps`: WeChat,
//!   idempotency, rate, token, `clock`), the settlement of its `Step` (`worker::settle`, over
//!   the broker's traits) and the consumers that run them: one per app's queue, and one per
//!   third-party platform's queue, shared by its authorizers and bound to the active ones as
//!   the state changes (`worker::bindings`); with memory state, a watch for other consumers of
//!   the same queues. Its context holds only settings derived for it; accounts learnt at run
//!   time come through the `Accounts` seam.
//! - `sim`: the WeChat API simulator used by tests, the demo and benchmarks, behind the cargo
//!   feature `sim` (on by default; the production build leaves it out, and with it the `sim` and
//!   `demo` verbs). Its rules are written from WeChat's documentation, not from the worker's.
//!
//! Putting them together:
//! - [`startup`]: builds the pipeline's context (each account's part by one builder,
//!   `startup::accounts`, for the configured apps at start and for platforms' authorizers when
//!   a job first names one), the callback's state and the HTTP state from the settings, and
//!   runs them under one stop signal; one task tracker owns every task they start, and the run
//!   waits for it before it returns.
//! - [`cli`]: the `run`, `sim`, `send`, `demo`, `check`, `dead`, `pause`, `resume` and
//!   `platform` verbs (`sim` and `demo` with the `sim` feature), and `metrics-list` (hidden
//!   from `--help`) for the deploy checks.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod broker;
pub mod callback;
pub mod catalog;
pub mod cli;
mod clock;
pub mod config;
pub mod daily_quota;
mod http;
pub mod job;
pub mod kinds;
mod limiter;
pub mod metrics;
pub mod outcome;
mod pause;
pub mod platform;
mod preferences;
pub mod quiet_hours;
pub mod retry;
#[cfg(feature = "sim")]
pub mod sim;
pub mod startup;
pub mod state;
mod telemetry;
mod text;
pub mod trail;
pub mod types;
pub mod wechat;
pub mod worker;
