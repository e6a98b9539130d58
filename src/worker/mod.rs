//! The worker daemon: given the pipeline's context, keeps a broker session alive — connect,
//! declare, consume every app — reconnecting with backoff until told to stop.

mod bindings;
mod consume;
mod context;
pub(crate) mod deps;
mod kill_switch;
mod peers;
pub(crate) mod pipeline;
pub(crate) mod reconciling;
mod record;
mod settle;

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::platform_queues;
use crate::broker::topology::{self, TopologyError};
use crate::broker::{self, BrokerError, Publisher};
use crate::catalog;
use crate::daily_quota;

pub use context::Context;
pub(crate) use context::{ServedApp, ServedPlatform};
pub(crate) use deps::{AppDeps, Deps};
pub(crate) use kill_switch::KillSwitch;

/// Starts on `tasks` the polls of WeChat beside the sends, until `stop`: each catalog's
/// keeper, and each app's quota gauges (unless its refresh is zero).
fn spawn_lookups(ctx: &Arc<Context>, stop: &CancellationToken, tasks: &TaskTracker) {
    for app in &ctx.apps {
        if app.deps.catalog.is_some() {
            let (ctx, stop, deps) = (ctx.clone(), stop.clone(), app.deps.clone());
            let every = app.catalog_refresh;
            tasks.spawn(async move {
                if let Some(catalog) = &deps.catalog {
                    catalog::keeper::keep(catalog, ctx.lookup(&deps), every, stop).await;
                }
            });
        }
        let every = app.quota_refresh;
        if !every.is_zero() {
            let (ctx, stop, deps) = (ctx.clone(), stop.clone(), app.deps.clone());
            let (name, endpoints) = (app.name.clone(), app.quota_endpoints.clone());
            tasks.spawn(async move {
                let lookup = ctx.lookup(&deps);
                daily_quota::watch(&name, &endpoints, lookup, &ctx.metrics, every, stop).await;
            });
        }
    }
}

/// Why a broker session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("a consumer task ended: {0}")]
    ConsumerEnded(String),
    #[error(transparent)]
    Shared(#[from] peers::SharedPlatform),
}

impl SessionError {
    /// Only a declaration that clashes with what exists needs a person; a channel failure or
    /// a slow broker while declaring is retried like any broker loss.
    fn needs_a_person(&self) -> bool {
        matches!(
            self,
            SessionError::Topology(TopologyError::Clash { .. }) | SessionError::Shared(_)
        )
    }
}

/// Runs the worker until `stop` fires, then drains and returns. Errors only for problems a
/// retry cannot fix (a topology clash). Every task it starts goes on `tasks` and ends on
/// `stop`, or, for a job still unsettled past the drain deadline, once it returns.
pub(crate) async fn run(
    ctx: Arc<Context>,
    stop: CancellationToken,
    tasks: &TaskTracker,
) -> anyhow::Result<()> {
    {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        tasks.spawn(async move { ctx.state.watch(stop).await });
    }
    {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        tasks.spawn(async move {
            let switches: Vec<_> = ctx
                .apps
                .iter()
                .map(|a| (a.name.as_str(), &a.deps.switch))
                .collect();
            kill_switch::keep(ctx.state.as_ref(), &switches, stop).await;
        });
    }
    spawn_lookups(&ctx, &stop, tasks);
    // A session that ends on a broker loss leaves its jobs running (each may still record
    // what WeChat answered, so a redelivery is not sent twice); whatever is left when the
    // worker ends, past the drain deadline, is dropped unacked and goes back to its queue, as
    // it would if the process ended.
    let abandon = CancellationToken::new();
    let _abandon_at_end = abandon.clone().drop_guard();
    let mut delays = reconnect_backoff();
    let mut first = true;
    // Whether a session got past the check for another instance serving a platform: until one
    // does, this process consumes no platform queue, so any consumer there is another's.
    let mut peers_checked = false;
    // The node of `amqp.url` to try first; after a loss, the next one in turn.
    let mut node = 0;
    loop {
        if !std::mem::take(&mut first) {
            ctx.metrics.broker_reconnects.inc();
        }
        let started = tokio::time::Instant::now();
        let result = session(&ctx, &stop, &mut node, tasks, &abandon, &mut peers_checked).await;
        ctx.health.set_ready(false);
        match result {
            Ok(()) => return Ok(()),
            Err(e) if e.needs_a_person() => return Err(e.into()),
            Err(e) => {
                node += 1;
                if started.elapsed() > Duration::from_secs(30) {
                    delays = reconnect_backoff();
                }
                let wait = delays.next().unwrap_or(Duration::from_secs(30));
                tracing::warn!(error = %e, retry_in = ?wait, "broker session ended; reconnecting");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

fn reconnect_backoff() -> backon::ExponentialBackoff {
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times()
        .build()
}

/// One broker session: connect, declare, consume every app, and on stop drain in-flight jobs.
/// Connects to the first node that answers from `node` on, and leaves its index there.
///
/// Every connection it opened is closed however it ends: one left open would keep its
/// consumers registered, and the jobs prefetched to them, with nobody to work on them.
async fn session(
    ctx: &Arc<Context>,
    stop: &CancellationToken,
    node: &mut usize,
    tasks: &TaskTracker,
    abandon: &CancellationToken,
    peers_checked: &mut bool,
) -> Result<(), SessionError> {
    const NAME: &str = "wxcourier worker";
    let (conn, connected) = broker::connect_from(&ctx.amqp, NAME, *node).await?;
    *node = connected;
    let per_connection = consumers_per_connection(
        conn.configuration().channel_max(),
        ctx.amqp.consumers_per_connection.get(),
    );
    let needed = consumed(ctx).len().div_ceil(per_connection).max(1);
    let mut conns = vec![conn];
    let mut result = Ok(());
    while conns.len() < needed && result.is_ok() {
        match broker::connect_from(&ctx.amqp, NAME, connected).await {
            Ok((extra, _)) => conns.push(extra),
            Err(e) => result = Err(e.into()),
        }
    }
    if result.is_ok() {
        result = serve(
            ctx,
            stop,
            &conns,
            per_connection,
            tasks,
            abandon,
            peers_checked,
        )
        .await;
    }
    for conn in &conns {
        let closing = conn.close(200, "wxcourier stopping".into());
        let _ = tokio::time::timeout(CLOSE_LIMIT, closing).await;
    }
    result
}

/// How long closing one connection may take at the end of a session.
const CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// Channels each connection keeps free of consumers: the publisher, the watchers and the
/// declaration lanes use the first connection's.
const RESERVED_CHANNELS: usize = 64;

/// App consumers per connection: `configured`, kept [`RESERVED_CHANNELS`] under the broker's
/// `channel_max` (2047 by default; 0 means no limit). More apps than that are spread over
/// further connections.
fn consumers_per_connection(channel_max: u16, configured: u16) -> usize {
    let channel_max = match channel_max {
        0 => usize::from(u16::MAX),
        n => usize::from(n),
    };
    channel_max
        .saturating_sub(RESERVED_CHANNELS)
        .min(usize::from(configured))
        .max(1)
}

/// Declares and consumes on `conns` (the first carries the publisher; app `i`'s consumer
/// goes on connection `i / per_connection`) until stop or a failure. The consumers, their
/// jobs and the watchers run on `tasks`; only jobs may still run when it returns, until
/// `abandon`.
async fn serve(
    ctx: &Arc<Context>,
    stop: &CancellationToken,
    conns: &[lapin::Connection],
    per_connection: usize,
    tasks: &TaskTracker,
    abandon: &CancellationToken,
    peers_checked: &mut bool,
) -> Result<(), SessionError> {
    let conn = &conns[0];
    let legacy =
        topology::declare_all(conn, &ctx.app_names(), ctx.pipeline.schedule.tiers()).await?;
    for queue in legacy {
        tracing::warn!("{queue}");
    }
    let platform_names: Vec<String> = ctx.platforms.iter().map(|p| p.name.clone()).collect();
    for queue in platform_queues::declare(conn, &platform_names).await? {
        tracing::warn!("{queue}");
    }
    if ctx.keep_unrouted {
        topology::declare_kept_results(conn).await?;
    }
    if !*peers_checked
        && !ctx.state.capabilities().shared_ids
        && let Some(shared) = peers::platform_served_elsewhere(ctx, conn).await?
    {
        return Err(shared.into());
    }
    *peers_checked = true;
    let publisher = Publisher::open(conn, ctx.amqp.publish_timeout.get())
        .await
        .map_err(|e| BrokerError::channel("opening the publishing channel", e))?;
    let consumers_stop = stop.child_token();
    let jobs = consume::Jobs::new(tasks, abandon);
    let registered = Arc::new(tokio::sync::Semaphore::new(0));
    let mut consumers = FuturesUnordered::new();
    // Channels are opened a few at a time: one after another, thousands of apps spend start-up
    // waiting for round trips.
    let queues = consumed(ctx);
    let mut apps = queues.iter().enumerate();
    let mut opening = FuturesUnordered::new();
    loop {
        while opening.len() < CHANNELS_OPENING {
            let Some((i, app)) = apps.next() else { break };
            opening.push(consumer_channel(&conns[i / per_connection], app));
        }
        let Some(((name, deps), channel)) = opening.next().await else {
            break;
        };
        let channel = channel.map_err(|e| BrokerError::channel("opening a consumer channel", e))?;
        let consumer = consume::AppConsumer {
            ctx: ctx.clone(),
            app: name.clone(),
            deps: deps.clone(),
            publisher: publisher.clone(),
            stop: consumers_stop.clone(),
            jobs: jobs.clone(),
            registered: registered.clone(),
        };
        consumers.push(tasks.spawn(consumer.run(channel)));
    }
    ctx.results.set(Some(publisher.clone()));
    let watcher = match conn.create_channel().await {
        Ok(channel) => Some(tasks.spawn(watch_side_queues(
            ctx.clone(),
            channel,
            consumers_stop.clone(),
        ))),
        Err(_) => None,
    };
    // With state for one instance, another consumer on our queues means a second rate and a
    // second idempotency store: say so.
    let peers = match ctx.state.capabilities().shared_ids {
        false => match conn.create_channel().await {
            Ok(channel) => {
                Some(tasks.spawn(peers::watch(ctx.clone(), channel, consumers_stop.clone())))
            }
            Err(_) => None,
        },
        true => None,
    };
    // Each platform's queue bound to its active authorizers, now and as they change.
    for i in 0..ctx.platforms.len() {
        let mut channels = Vec::with_capacity(bindings::CHANNELS);
        for _ in 0..bindings::CHANNELS {
            if let Ok(channel) = conn.create_channel().await {
                channels.push(channel);
            }
        }
        if !channels.is_empty() {
            let (ctx, stop) = (ctx.clone(), consumers_stop.clone());
            tasks.spawn(async move {
                bindings::keep(channels, &ctx.platforms[i], &ctx.amqp, &ctx.metrics, stop).await
            });
        }
    }
    // Ready means every app's consumer is registered, not merely that it was asked for.
    let apps = u32::try_from(queues.len()).unwrap_or(u32::MAX);
    let all_registered = async {
        let _ = registered.acquire_many(apps).await;
        ctx.health.set_ready(true);
        tracing::info!(apps, "consuming");
        std::future::pending::<()>().await
    };
    let ended = tokio::select! {
        _ = all_registered => unreachable!("never resolves"),
        _ = stop.cancelled() => Ok(()),
        Some(first) = consumers.next() => Err(match first {
            Ok(Err(e)) => SessionError::Broker(e),
            Ok(Ok(())) => SessionError::ConsumerEnded("it stopped".into()),
            Err(e) => SessionError::ConsumerEnded(e.to_string()),
        }),
        // Without its publisher no outcome can be published, so nothing may be sent: start
        // a new session (readiness is off until then).
        _ = publisher_lost(&publisher) => Err(BrokerError::PublisherClosed.into()),
    };
    ctx.health.set_ready(false);
    ctx.results.set(None);
    consumers_stop.cancel();
    if ended.is_ok() {
        // Each consumer returns once its jobs in flight are settled.
        tracing::info!(in_flight = jobs.len(), "draining");
        let drained = async { while consumers.next().await.is_some() {} };
        if tokio::time::timeout(ctx.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = jobs.len(),
                "drain deadline passed; unfinished jobs stay in the broker"
            );
        }
    }
    for consumer in &consumers {
        consumer.abort();
    }
    while consumers.next().await.is_some() {}
    // Wait for the side-queue watcher to close its channel, then close ours: closing the
    // connection under open channels only makes lapin log errors.
    for watch in [watcher, peers].into_iter().flatten() {
        let _ = watch.await;
    }
    let _ = publisher.close().await;
    ended
}

/// A queue the session consumes: an app's, with its part of the pipeline's context, or a
/// platform's, shared by its authorizers (no context of its own).
type Consumed = (String, Option<Arc<AppDeps>>);

/// Every queue the session consumes: the apps', then the platforms'.
fn consumed(ctx: &Context) -> Vec<Consumed> {
    let apps = ctx
        .apps
        .iter()
        .map(|a| (a.name.clone(), Some(a.deps.clone())));
    let platforms = ctx.platforms.iter().map(|p| (p.name.clone(), None));
    apps.chain(platforms).collect()
}

/// Opens `app`'s consumer channel (a named function, not a closure, keeps the session `Send`).
async fn consumer_channel<'a>(
    conn: &lapin::Connection,
    app: &'a Consumed,
) -> (&'a Consumed, lapin::Result<lapin::Channel>) {
    (app, conn.create_channel().await)
}

/// Consumer channels being opened at once.
const CHANNELS_OPENING: usize = 32;

/// How often the publishing channel is checked.
const PUBLISHER_POLL: Duration = Duration::from_millis(250);

/// Resolves once the publisher's channel no longer takes publishes.
async fn publisher_lost(publisher: &Publisher) {
    while publisher.is_open() {
        tokio::time::sleep(PUBLISHER_POLL).await;
    }
}

/// How often the dead-letter and unrouted queues are counted.
const SIDE_QUEUE_POLL: Duration = Duration::from_secs(15);

/// Counts `wxcourier.dead`, `wxcourier.unrouted` and (when kept) `wxcourier.results.unrouted`
/// for the metrics, and warns while jobs for unknown apps keep arriving. Kept results are not
/// returned by the broker, so their queue's depth is what counts them.
async fn watch_side_queues(ctx: Arc<Context>, ch: lapin::Channel, stop: CancellationToken) {
    let mut last_unrouted: Option<u32> = None;
    let mut queues = vec![broker::DEAD_QUEUE, broker::UNROUTED];
    if ctx.keep_unrouted {
        queues.push(broker::RESULTS_UNROUTED);
    }
    loop {
        for &queue in &queues {
            let Ok(count) = topology::message_count(&ch, queue).await else {
                return;
            };
            ctx.metrics.set_queue_messages(queue, count);
            if queue == broker::UNROUTED {
                if count > last_unrouted.unwrap_or(0) {
                    let what = if last_unrouted.is_none() {
                        "jobs for apps nobody configured wait in wxcourier.unrouted (see `wxcourier dead list --from unrouted`)"
                    } else {
                        "jobs are arriving for an app nobody configured (check the producers' routing keys)"
                    };
                    tracing::warn!(queue, count, "{what}");
                }
                last_unrouted = Some(count);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = ch.close(200, "stopping".into()).await;
                return;
            }
            _ = tokio::time::sleep(SIDE_QUEUE_POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumers_spread_over_connections_under_the_channel_limit() {
        assert_eq!(consumers_per_connection(2047, 1000), 1000);
        assert_eq!(consumers_per_connection(0, 1000), 1000);
        assert_eq!(consumers_per_connection(2047, 5000), 1983);
        assert_eq!(consumers_per_connection(128, 1000), 64);
        assert_eq!(consumers_per_connection(10, 1000), 1);
        assert_eq!(consumers_per_connection(2047, 1), 1);
    }

    #[test]
    fn only_a_topology_clash_ends_the_worker() {
        let clash = SessionError::Topology(TopologyError::Clash {
            kind: "queue",
            name: "q".into(),
            reason: "PRECONDITION_FAILED".into(),
        });
        let slow = SessionError::Topology(TopologyError::Broker {
            kind: "queue",
            name: "q".into(),
            reason: "no answer within 30s".into(),
        });
        assert!(clash.needs_a_person());
        assert!(!slow.needs_a_person());
        let lost = BrokerError::Unreachable("connection reset".into());
        assert!(!SessionError::Broker(lost).needs_a_person());
    }
}
