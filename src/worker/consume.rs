//! One app's consumer: takes deliveries, runs the pipeline on each with bounded concurrency,
//! and settles each ([`super::settle`]): what it decided is published with confirms, and only
//! then acked.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::context::Context;
use super::deps::AppDeps;
use super::pipeline::{Incoming, Outlet, Step, process};
use super::record::{Taken, steps_of};
use super::settle::{Original, Settled, settle};
use crate::broker::topology::tier_label;
use crate::broker::{BrokerError, Publisher, job_queue};
use crate::broker::{headers, trace};
use crate::metrics::AppMetrics;
use crate::telemetry;
use crate::types::TraceHeaders;

/// After a cancel, how long to wait for more already-prefetched deliveries.
const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// Why a round of consuming ended.
#[derive(Debug, PartialEq, Eq)]
enum RoundEnd {
    Stopped,
    Paused,
}

/// The two bounds on one app's jobs.
struct Permits {
    /// Delivered and not yet acked or handed back: the channel stays open until all are back.
    unsettled: Arc<Semaphore>,
    /// Being decided (parsed, waiting for the rate limit or a WeChat slot, sent). More of
    /// these than there are WeChat slots in the whole process would only wait for a slot,
    /// each as a task; the rest of the prefetch waits as plain deliveries, a fraction of the
    /// size.
    deciding: Arc<Semaphore>,
}

impl Permits {
    fn new(prefetch: u16, wechat_slots: usize) -> Self {
        let deciding = (prefetch as usize).min(wechat_slots).max(1);
        Self {
            unsettled: Arc::new(Semaphore::new(prefetch as usize)),
            deciding: Arc::new(Semaphore::new(deciding)),
        }
    }
}

/// The jobs of one session: each a task on the worker's tracker, counted per session for the
/// drain, and dropped unsettled once the worker ends (`abandon`).
#[derive(Clone)]
pub(crate) struct Jobs {
    tasks: TaskTracker,
    session: TaskTracker,
    abandon: CancellationToken,
}

impl Jobs {
    pub(crate) fn new(tasks: &TaskTracker, abandon: &CancellationToken) -> Self {
        Self {
            tasks: tasks.clone(),
            session: TaskTracker::new(),
            abandon: abandon.clone(),
        }
    }

    /// Jobs of this session not yet ended.
    pub(crate) fn len(&self) -> usize {
        self.session.len()
    }

    fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let abandon = self.abandon.clone();
        self.tasks.spawn(self.session.track_future(async move {
            tokio::select! {
                _ = abandon.cancelled() => {}
                _ = job => {}
            }
        }));
    }
}

/// Counts a job in the in-flight gauge while it lives, however it ends.
struct InFlight(Gauge);

impl InFlight {
    fn enter(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub(crate) struct AppConsumer {
    pub(crate) ctx: Arc<Context>,
    /// The app whose queue this is, or the platform whose authorizers share it.
    pub(crate) app: String,
    /// The app's part of the pipeline's context: its gate and metrics. `None` for a platform's
    /// shared queue: each delivery's account is its routing key (`NAME:APPID`), and an
    /// account's quota pause parks its own jobs in the delay tiers instead of stopping the
    /// consumer the others share.
    pub(crate) deps: Option<Arc<AppDeps>>,
    pub(crate) publisher: Publisher,
    pub(crate) stop: CancellationToken,
    pub(crate) jobs: Jobs,
    /// Given one permit each time this consumer is registered with the broker, so the session
    /// can tell when every app is consuming.
    pub(crate) registered: Arc<Semaphore>,
}

impl AppConsumer {
    /// Consumes until `stop` or until the channel fails; while the app is paused for its
    /// quota, or shared state is unreachable, its consumer is cancelled and the jobs wait in
    /// the broker.
    pub(crate) async fn run(self, channel: Channel) -> Result<(), BrokerError> {
        let prefetch = self.ctx.amqp.prefetch.get();
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| BrokerError::channel("setting the prefetch (basic.qos)", e))?;
        let permits = Permits::new(prefetch, self.ctx.wechat_slots);
        let this = Arc::new(self);
        let mut round = 0u64;
        loop {
            round += 1;
            let ended = this.consume_round(&channel, &permits, round).await?;
            if ended == RoundEnd::Paused {
                tracing::info!(app = %this.app, "consumer cancelled; jobs wait in the broker");
                tokio::select! {
                    _ = this.stop.cancelled() => {}
                    _ = this.resumable() => continue,
                }
            }
            // The channel must outlive the jobs in flight, or their acks are lost and finished
            // jobs come back. Prefetched deliveries not yet taken go back to the queue when it
            // closes.
            let _ = permits.unsettled.acquire_many(prefetch as u32).await;
            let _ = channel.close(200, "consumer stopped".into()).await;
            return Ok(());
        }
    }

    /// Resolves once the app may consume again: its quota pause is over and shared state is up.
    async fn resumable(&self) {
        let state = self.ctx.state.health();
        loop {
            state.up().await;
            if let Some(deps) = &self.deps {
                deps.gate.pause_over().await;
            }
            if state.is_up() {
                return;
            }
        }
    }

    /// Resolves when the app's quota pause starts; never for a platform's shared queue.
    async fn quota_paused(&self) {
        match &self.deps {
            Some(deps) => deps.gate.paused().await,
            None => std::future::pending().await,
        }
    }

    /// One `basic.consume` … `basic.cancel`, the `round`th on this channel.
    async fn consume_round(
        self: &Arc<Self>,
        channel: &Channel,
        permits: &Permits,
        round: u64,
    ) -> Result<RoundEnd, BrokerError> {
        // A tag of its own per round: deliveries of the round before may still be unacked when
        // this one starts, and a quorum queue on RabbitMQ 3.10 delivers every unacked message
        // of a cancelled consumer again when a consumer comes back under the same tag on the
        // same channel (rabbitmq-server #5927, fixed in 3.11): each became a second delivery
        // and a second outcome after a shared-state outage.
        let tag = format!("wxcourier-{}-{}-{round}", self.app, std::process::id());
        let mut consumer = channel
            .basic_consume(
                job_queue(&self.app).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| BrokerError::channel("starting the consumer (basic.consume)", e))?;
        self.registered.add_permits(1);
        let state = self.ctx.state.health();
        loop {
            let next = tokio::select! {
                _ = self.stop.cancelled() => {
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    return Ok(RoundEnd::Stopped);
                }
                _ = async { tokio::select! { _ = self.quota_paused() => {}, _ = state.down() => {} } } => {
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    // Deliveries prefetched before the cancel must not sit here for the whole
                    // pause (the broker closes channels that hold one too long): each goes back
                    // through the retry path.
                    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(DRAIN_IDLE, consumer.next()).await {
                        self.dispatch(delivery, permits).await;
                    }
                    return Ok(RoundEnd::Paused);
                }
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => self.dispatch(delivery, permits).await,
                Some(Err(e)) => {
                    return Err(BrokerError::ConsumerFailed {
                        app: self.app.clone(),
                        reason: e.to_string(),
                    });
                }
                None => {
                    return Err(BrokerError::ConsumerClosed {
                        app: self.app.clone(),
                    });
                }
            }
        }
    }

    /// Runs one delivery as a job of its own, within the app's bounds.
    async fn dispatch(self: &Arc<Self>, delivery: Delivery, permits: &Permits) {
        let unsettled = permits.unsettled.clone().acquire_owned().await;
        let unsettled = unsettled.expect("never closed");
        let deciding = permits.deciding.clone().acquire_owned().await;
        let deciding = deciding.expect("never closed");
        let job = self.clone();
        let span = tracing::info_span!(
            "job",
            app = %self.account_of(&delivery),
            id = tracing::field::Empty,
            attempt = tracing::field::Empty,
        );
        let trace = trace::headers_of(&delivery.properties);
        if let Some(trace) = &trace {
            telemetry::adopt_parent(&span, trace);
        }
        let in_flight = InFlight::enter(&self.ctx.metrics.in_flight);
        self.jobs.spawn(
            async move {
                job.handle(delivery, trace, deciding).await;
                drop((in_flight, unsettled));
            }
            .instrument(span),
        );
    }

    /// The account a delivery is for: the app, or on a platform's shared queue the routing
    /// key it was published (or sent back from a delay tier) with.
    fn account_of<'a>(&'a self, delivery: &'a Delivery) -> &'a str {
        match &self.deps {
            Some(_) => &self.app,
            None => delivery.routing_key.as_str(),
        }
    }

    /// Decides with `deciding` held, then settles without it, so the next delivery can start
    /// while this one waits for its confirm.
    async fn handle(
        &self,
        delivery: Delivery,
        trace: Option<TraceHeaders>,
        deciding: OwnedSemaphorePermit,
    ) {
        let account = self.account_of(&delivery);
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        let retry = headers::retry_state(&delivery.properties);
        let taken = Taken {
            body: &delivery.data,
            message_id: message_id.as_deref(),
            returning: headers::text(&delivery.properties, headers::HEADER_DELAY_TIER).is_some(),
            attempts_before: retry.attempts,
            at: time::OffsetDateTime::now_utc(),
        };
        let incoming = Incoming {
            app: account,
            body: &delivery.data,
            message_id: message_id.as_deref(),
            headers_len: headers::headers_len(&delivery.properties),
            retry,
            outlet: &self.publisher,
            trace: trace.as_ref(),
        };
        // Boxed: many jobs at once wait inside `process` for a WeChat slot, and each spawned
        // task is as large as its largest state. Kept inline, the publishing below would make
        // every waiting task carry room for it too (massif: 6.8 KiB a task instead of 2).
        let step = Box::pin(process(&self.ctx.pipeline, incoming)).await;
        drop(deciding);
        let original = Original {
            app: account,
            body: &delivery.data,
            properties: &delivery.properties,
            trace: trace.as_ref(),
        };
        let metrics = &self.ctx.metrics;
        // The story is kept beside the settling, not before it: it costs the job no time, and
        // a step that cannot be kept is only counted.
        let story = steps_of(&taken, &step, time::OffsetDateTime::now_utc());
        let keep = async {
            if let Some((id, steps)) = &story {
                self.ctx.trails.keep(account, id, steps).await;
            }
        };
        let settling = Box::pin(settle(
            &self.publisher,
            &delivery.acker,
            original,
            &step,
            metrics,
        ));
        let (settled, ()) = tokio::join!(settling, keep);
        match (&step, &settled) {
            // Counted by `settle` the moment its publish failed; the job is not done.
            (_, Settled::HandedBack) => {}
            (Step::Finish(o) | Step::Reject { outcome: o, .. }, _) => {
                let app = match &self.deps {
                    Some(deps) => Some(deps.clone()),
                    None => self.ctx.pipeline.app(account),
                };
                match app {
                    Some(app) => app.metrics.job_finished(o.status),
                    // No such account (its job was rejected): counted under the platform.
                    None => {
                        AppMetrics::new(self.ctx.metrics.clone(), &self.app).job_finished(o.status)
                    }
                }
            }
            (Step::Retry { after, wait, .. }, _) => {
                metrics.retry(account, &tier_label(*after), wait.cause())
            }
            // A cancel is no job: the job it ends is counted when it ends `cancelled`.
            (Step::Answer { .. }, _) => {}
        }
    }
}

impl Outlet for Publisher {
    fn is_open(&self) -> bool {
        Publisher::is_open(self)
    }
}
