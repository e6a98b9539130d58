//! One app's consumer: takes deliveries, runs the pipeline on each with bounded concurrency,
//! publishes what it decided with confirms, and only then acks.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::Context;
use super::pipeline::{Incoming, Step, process};
use crate::broker::publish::Message;
use crate::broker::topology::tier_label;
use crate::broker::{
    DEAD_QUEUE, HEADER_APP, HEADER_ERROR, PublishError, Publisher, RETRY_EXCHANGE, job_queue,
};
use crate::outcome::SendOutcome;
use crate::retry::{
    HEADER_ATTEMPTS, HEADER_DELAY_TIER, HEADER_FIRST_TRY, HEADER_QUOTA_STRIKES, RetryState,
};

/// How long a delivery that cannot be settled waits before it is handed back, so a broker
/// that refuses publishes is not hammered.
const HAND_BACK_PAUSE: Duration = Duration::from_millis(500);

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

pub struct AppConsumer {
    pub ctx: Arc<Context>,
    pub app: String,
    pub publisher: Publisher,
    pub stop: CancellationToken,
    pub jobs: TaskTracker,
}

impl AppConsumer {
    /// Consumes until `stop` or until the channel fails; while the app is paused for its
    /// quota, or shared state is unreachable, its consumer is cancelled and the jobs wait in
    /// the broker.
    pub async fn run(self, channel: Channel) -> Result<(), String> {
        let prefetch = self.ctx.settings.amqp.prefetch;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let permits = Permits::new(prefetch, self.ctx.settings.wechat.max_in_flight);
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
    ) -> Result<RoundEnd, String> {
        let tag = format!("wxcourier-{}-{}", self.app, std::process::id());
        let mut consumer = channel
            .basic_consume(
                job_queue(&self.app).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
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
                Some(Err(e)) => return Err(format!("consumer of {} failed: {e}", self.app)),
                None => return Err(format!("consumer of {} was closed by the broker", self.app)),
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
        let retry = retry_state(&delivery.properties);
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        let incoming = Incoming {
            app: &self.app,
            body: &delivery.data,
            message_id: message_id.as_deref(),
            retry,
        };
        // Boxed: many jobs at once wait inside `process` for a WeChat slot, and each spawned
        // task is as large as its largest state. Kept inline, the publishing below would make
        // every waiting task carry room for it too (massif: 6.8 KiB a task instead of 2).
        let step = Box::pin(process(&self.ctx, incoming)).await;
        drop(deciding);
        let settled = Box::pin(self.settle(&delivery, &step)).await;
        let metrics = &self.ctx.metrics;
        if settled.is_err() && !matches!(step, Step::HandBack) {
            metrics.publish_failures.inc();
        }
        match &step {
            Step::Finish(o) | Step::Reject { outcome: o, .. } if settled.is_ok() => {
                self.ctx.app(&self.app).metrics.job_finished(o.status);
            }
            Step::Retry { after, .. } if settled.is_ok() => {
                metrics.retry(&self.app, &tier_label(*after));
            }
            _ => {}
        }
        match settled {
            Ok(()) => match delivery.ack(BasicAckOptions::default()).await {
                Ok(true) => {}
                // After a reconnect the delivery belongs to a dead channel: the broker
                // redelivers it, and the outcome may be published twice (consumers dedupe).
                Ok(false) | Err(_) => {
                    tracing::warn!(app = %self.app, "ack did not reach the broker; the job will be redelivered")
                }
            },
            Err(e) => {
                if !matches!(step, Step::HandBack) {
                    tracing::warn!(app = %self.app, error = %e, "could not publish; handing the job back to the broker");
                }
                tokio::time::sleep(HAND_BACK_PAUSE).await;
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await;
            }
        }
    }

    /// Publishes what the pipeline decided, with confirms; `Ok` means the delivery may be acked.
    async fn settle(&self, delivery: &Delivery, step: &Step) -> Result<(), PublishError> {
        match step {
            Step::Finish(outcome) => self.publish_outcome(outcome).await,
            Step::Reject { outcome, reason } => {
                tracing::warn!(app = %self.app, id = ?outcome.id, %reason, "job rejected");
                let dead = self.publish_dead(delivery, reason);
                let out = self.publish_outcome(outcome);
                let (dead, out) = tokio::join!(dead, out);
                dead.and(out)
            }
            Step::Retry {
                after,
                state,
                quota,
            } => {
                tracing::debug!(attempts = state.attempts, ?after, quota, "retry scheduled");
                self.publish_retry(delivery, state, *after).await
            }
            Step::HandBack => Err(PublishError::Channel(
                "the same id is being sent by another delivery".into(),
            )),
        }
    }

    async fn publish_outcome(&self, outcome: &SendOutcome) -> Result<(), PublishError> {
        self.publisher
            .publish_result(&outcome.routing_key(), outcome, outcome.id.as_deref())
            .await
    }

    /// The original message, unchanged, plus the reason, in `wxcourier.dead`.
    async fn publish_dead(&self, delivery: &Delivery, reason: &str) -> Result<(), PublishError> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(
            HEADER_ERROR.into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        headers.insert(
            HEADER_APP.into(),
            AMQPValue::LongString(LongString::from(self.app.as_str())),
        );
        self.publisher
            .publish(Message {
                exchange: "",
                routing_key: DEAD_QUEUE,
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

    /// The original body with the retry state in headers, into the delay tier `after`.
    async fn publish_retry(
        &self,
        delivery: &Delivery,
        state: &RetryState,
        after: Duration,
    ) -> Result<(), PublishError> {
        let mut headers = FieldTable::default();
        if let Some(original) = delivery.properties.headers() {
            for (k, v) in original.inner() {
                // The broker's own dead-letter history would only grow with every round.
                if !k.as_str().starts_with("x-death")
                    && !k.as_str().starts_with("x-first-death")
                    && !k.as_str().starts_with("x-last-death")
                {
                    headers.insert(k.clone(), v.clone());
                }
            }
        }
        headers.insert(
            HEADER_ATTEMPTS.into(),
            AMQPValue::LongLongInt(state.attempts as i64),
        );
        headers.insert(
            HEADER_QUOTA_STRIKES.into(),
            AMQPValue::LongLongInt(state.quota_strikes as i64),
        );
        if let Some(first) = state.first_try_ms {
            headers.insert(
                HEADER_FIRST_TRY.into(),
                AMQPValue::LongLongInt(first as i64),
            );
        }
        headers.insert(
            HEADER_DELAY_TIER.into(),
            AMQPValue::LongString(LongString::from(tier_label(after))),
        );
        self.publisher
            .publish(Message {
                exchange: RETRY_EXCHANGE,
                routing_key: &self.app,
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

/// Reads the retry state a previous try left in the headers (none on a first delivery).
pub fn retry_state(props: &BasicProperties) -> RetryState {
    let Some(headers) = props.headers() else {
        return RetryState::default();
    };
    let get = |key: &str| headers.inner().get(key).and_then(as_u64);
    RetryState {
        attempts: get(HEADER_ATTEMPTS).unwrap_or(0).min(u32::MAX as u64) as u32,
        first_try_ms: get(HEADER_FIRST_TRY),
        quota_strikes: get(HEADER_QUOTA_STRIKES).unwrap_or(0).min(64) as u32,
    }
}

fn as_u64(v: &AMQPValue) -> Option<u64> {
    match v {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n as u64),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(*n as u64),
        AMQPValue::Timestamp(n) => Some(*n),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}
