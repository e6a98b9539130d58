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
use super::settle::{Original, Settled, settle};
use crate::broker::headers;
use crate::broker::topology::tier_label;
use crate::broker::{BrokerError, Publisher, job_queue};

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
    pub(crate) app: String,
    /// The app's part of the pipeline's context: its gate and metrics.
    pub(crate) deps: Arc<AppDeps>,
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
        loop {
            let round = this.consume_round(&channel, &permits).await?;
            if round == RoundEnd::Paused {
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
        let gate = &self.deps.gate;
        let state = self.ctx.state.health();
        loop {
            state.up().await;
            gate.pause_over().await;
            if state.is_up() {
                return;
            }
        }
    }

    /// One `basic.consume` … `basic.cancel`.
    async fn consume_round(
        self: &Arc<Self>,
        channel: &Channel,
        permits: &Permits,
    ) -> Result<RoundEnd, BrokerError> {
        let tag = format!("wxcourier-{}-{}", self.app, std::process::id());
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
        let gate = &self.deps.gate;
        let state = self.ctx.state.health();
        loop {
            let next = tokio::select! {
                _ = self.stop.cancelled() => {
                    let _ = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                    return Ok(RoundEnd::Stopped);
                }
                _ = async { tokio::select! { _ = gate.paused() => {}, _ = state.down() => {} } } => {
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
            app = %self.app,
            id = tracing::field::Empty,
            attempt = tracing::field::Empty,
        );
        let in_flight = InFlight::enter(&self.ctx.metrics.in_flight);
        self.jobs.spawn(
            async move {
                job.handle(delivery, deciding).await;
                drop((in_flight, unsettled));
            }
            .instrument(span),
        );
    }

    /// Decides with `deciding` held, then settles without it, so the next delivery can start
    /// while this one waits for its confirm.
    async fn handle(&self, delivery: Delivery, deciding: OwnedSemaphorePermit) {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        let incoming = Incoming {
            app: &self.app,
            body: &delivery.data,
            message_id: message_id.as_deref(),
            headers_len: headers::headers_len(&delivery.properties),
            retry: headers::retry_state(&delivery.properties),
            outlet: &self.publisher,
        };
        // Boxed: many jobs at once wait inside `process` for a WeChat slot, and each spawned
        // task is as large as its largest state. Kept inline, the publishing below would make
        // every waiting task carry room for it too (massif: 6.8 KiB a task instead of 2).
        let step = Box::pin(process(&self.ctx.pipeline, incoming)).await;
        drop(deciding);
        let original = Original {
            app: &self.app,
            body: &delivery.data,
            properties: &delivery.properties,
        };
        let metrics = &self.ctx.metrics;
        let failures = &metrics.publish_failures;
        let settled = Box::pin(settle(
            &self.publisher,
            &delivery.acker,
            original,
            &step,
            failures,
        ))
        .await;
        match (&step, &settled) {
            // Counted by `settle` the moment its publish failed; the job is not done.
            (_, Settled::HandedBack) => {}
            (Step::Finish(o) | Step::Reject { outcome: o, .. }, _) => {
                self.deps.metrics.job_finished(o.status);
            }
            (Step::Retry { after, .. }, _) => metrics.retry(&self.app, &tier_label(*after)),
        }
    }
}

impl Outlet for Publisher {
    fn is_open(&self) -> bool {
        Publisher::is_open(self)
    }
}
