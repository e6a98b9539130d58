//! One app's consumer: takes deliveries, runs the pipeline on each with bounded concurrency,
//! publishes what it decided with confirms, and only then acks.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::Context;
use super::pipeline::{Incoming, Outlet, Step, process};
use crate::broker::headers;
use crate::broker::publish::Publication;
use crate::broker::topology::tier_label;
use crate::broker::{BrokerError, DEAD_QUEUE, PublishError, Publisher, RETRY_EXCHANGE, job_queue};
use crate::outcome::SendOutcome;
use crate::retry::RetryState;

/// How long a delivery whose outcome could not be published waits before it goes back to
/// its queue, so a broker that refuses publishes is not hammered. Each such return is a
/// `basic.reject` with requeue, which counts toward the queue's delivery limit on every
/// RabbitMQ series (from 4.3 on a `basic.nack` does not), so past the limit the broker
/// dead-letters the job to `wxcourier.dead`.
const HAND_BACK_PAUSE: Duration = Duration::from_millis(500);

/// After a cancel, how long to wait for more already-prefetched deliveries.
const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// How a delivery ends once its step has been carried out.
#[derive(Debug)]
enum Settlement {
    /// What the step asked for was published and confirmed: ack.
    Ack,
    /// Nothing could be published, so the delivery goes back to its queue as it is: the one
    /// requeue left. Bounded by the queue's delivery limit (a dead-letter to wxcourier.dead
    /// past it), and a failing publisher channel ends the session, so it is not a loop.
    HandBack(PublishError),
}

impl From<Result<(), PublishError>> for Settlement {
    fn from(published: Result<(), PublishError>) -> Self {
        match published {
            Ok(()) => Settlement::Ack,
            Err(e) => Settlement::HandBack(e),
        }
    }
}

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

pub(crate) struct AppConsumer {
    pub(crate) ctx: Arc<Context>,
    pub(crate) app: String,
    pub(crate) publisher: Publisher,
    pub(crate) stop: CancellationToken,
    pub(crate) jobs: TaskTracker,
    /// Given one permit each time this consumer is registered with the broker, so the session
    /// can tell when every app is consuming.
    pub(crate) registered: Arc<Semaphore>,
}

impl AppConsumer {
    /// Consumes until `stop` or until the channel fails; while the app is paused for its
    /// quota, or shared state is unreachable, its consumer is cancelled and the jobs wait in
    /// the broker.
    pub(crate) async fn run(self, channel: Channel) -> Result<(), BrokerError> {
        let prefetch = self.ctx.settings.amqp.prefetch.get();
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| BrokerError::channel("setting the prefetch (basic.qos)", e))?;
        let permits = Permits::new(prefetch, self.ctx.settings.wechat.max_in_flight.get());
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
        let gate = &self.ctx.app(&self.app).gate;
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
        let gate = &self.ctx.app(&self.app).gate;
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
        self.jobs.spawn(
            async move {
                let in_flight = &job.ctx.metrics.in_flight;
                in_flight.inc();
                job.handle(delivery, deciding).await;
                in_flight.dec();
                drop(unsettled);
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
        let settled = Box::pin(self.settle(&delivery, &step)).await;
        let metrics = &self.ctx.metrics;
        match (&step, &settled) {
            (Step::Finish(o) | Step::Reject { outcome: o, .. }, Settlement::Ack) => {
                self.ctx.app(&self.app).metrics.job_finished(o.status);
            }
            (Step::Retry { after, .. }, Settlement::Ack) => {
                metrics.retry(&self.app, &tier_label(*after));
            }
            (_, Settlement::HandBack(_)) => {
                metrics.publish_failures.inc();
            }
        }
        match settled {
            Settlement::Ack => match delivery.ack(BasicAckOptions::default()).await {
                Ok(true) => {}
                // After a reconnect the delivery belongs to a dead channel: the broker
                // redelivers it, and the outcome may be published twice (consumers dedupe).
                Ok(false) | Err(_) => {
                    tracing::warn!(app = %self.app, "ack did not reach the broker; the job will be redelivered")
                }
            },
            Settlement::HandBack(e) => {
                tracing::warn!(app = %self.app, error = %e, "could not publish; handing the job back to the broker");
                tokio::time::sleep(HAND_BACK_PAUSE).await;
                let _ = delivery.reject(BasicRejectOptions { requeue: true }).await;
            }
        }
    }

    /// Publishes what the pipeline decided, with confirms, and says how the delivery ends.
    async fn settle(&self, delivery: &Delivery, step: &Step) -> Settlement {
        let published = match step {
            Step::Finish(outcome) => self.publish_outcome(outcome).await,
            Step::Reject { outcome, reason } => {
                tracing::warn!(app = %self.app, id = ?outcome.id, %reason, "job rejected");
                let dead = self.publish_dead(delivery, reason);
                let out = self.publish_outcome(outcome);
                let (dead, out) = tokio::join!(dead, out);
                dead.and(out)
            }
            Step::Retry { after, state, wait } => {
                tracing::debug!(attempts = state.attempts, ?after, ?wait, "retry scheduled");
                self.publish_retry(delivery, state, *after).await
            }
        };
        published.into()
    }

    async fn publish_outcome(&self, outcome: &SendOutcome) -> Result<(), PublishError> {
        self.publisher
            .publish_result(&outcome.routing_key(), outcome, outcome.id.as_deref())
            .await
    }

    /// The original message, unchanged, plus the reason, in `wxcourier.dead`.
    async fn publish_dead(&self, delivery: &Delivery, reason: &str) -> Result<(), PublishError> {
        let headers = headers::dead_copy(delivery.properties.headers().as_ref(), reason, &self.app);
        self.publish_copy(delivery, "", DEAD_QUEUE, headers).await
    }

    /// The original body with the retry state in headers, into the delay tier `after`.
    async fn publish_retry(
        &self,
        delivery: &Delivery,
        state: &RetryState,
        after: Duration,
    ) -> Result<(), PublishError> {
        let headers = headers::retry_copy(
            delivery.properties.headers().as_ref(),
            state,
            &tier_label(after),
        );
        self.publish_copy(delivery, RETRY_EXCHANGE, &self.app, headers)
            .await
    }

    /// The delivery's body and properties with `headers`, persistent, to a queue that must
    /// take it.
    async fn publish_copy(
        &self,
        delivery: &Delivery,
        exchange: &str,
        routing_key: &str,
        headers: FieldTable,
    ) -> Result<(), PublishError> {
        self.publisher
            .publish(Publication {
                exchange,
                routing_key,
                body: &delivery.data,
                properties: delivery
                    .properties
                    .clone()
                    .with_headers(headers)
                    .with_delivery_mode(2),
                must_route: true,
            })
            .await
    }
}

impl Outlet for Publisher {
    fn is_open(&self) -> bool {
        Publisher::is_open(self)
    }
}
