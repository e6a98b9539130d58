//! Settling one delivery once the pipeline decided its step: publish what the step asks for
//! (the outcome, a retry copy, a dead copy), each confirmed by the broker, then ack; when any
//! of them did not count, hand the delivery back unchanged, never ack it. Over the broker's
//! traits ([`Confirmed`], [`Acknowledge`]), so every path is a unit test with fakes.

use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::FieldTable;

use super::pipeline::Step;
use crate::broker::headers;
use crate::broker::publish::{Landing, Publication, Unroutable, result_message};
use crate::broker::returned::count_returned;
use crate::broker::settle::{Acknowledge, Confirmed};
use crate::broker::topology::tier_label;
use crate::broker::trace::field_table;
use crate::broker::{DEAD_QUEUE, PublishError, RETRY_EXCHANGE};
use crate::metrics::Metrics;
use crate::outcome::SendOutcome;
use crate::retry::RetryState;
use crate::types::TraceHeaders;

/// How long a delivery whose outcome could not be published waits before it goes back to
/// its queue, so a broker that refuses publishes is not hammered. Each such return is a
/// `basic.reject` with requeue, which counts toward the queue's delivery limit on every
/// RabbitMQ series, so past the limit the broker dead-letters the job to `wxcourier.dead`.
pub(crate) const HAND_BACK_PAUSE: Duration = Duration::from_millis(500);

/// The delivery as it came: the copies carry its body and properties.
#[derive(Clone, Copy)]
pub(crate) struct Original<'a> {
    pub(crate) app: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) properties: &'a BasicProperties,
    /// The job's checked trace headers, carried on to its outcome.
    pub(crate) trace: Option<&'a TraceHeaders>,
}

/// How a delivery ended.
#[derive(Debug)]
pub(crate) enum Settled {
    /// What the step asked for was published and confirmed, and the delivery acked.
    Acked,
    /// Published and confirmed, but the ack did not reach the broker: after a reconnect the
    /// delivery belongs to a dead channel, so the broker redelivers it and the outcome may be
    /// published twice (consumers dedupe on `id`).
    AckLost,
    /// Something could not be published, so the delivery went back to its queue as it is:
    /// the one requeue left. Bounded by the queue's delivery limit (a dead-letter to
    /// `wxcourier.dead` past it), and a failing publisher channel ends the session, so it is
    /// not a loop.
    HandedBack,
}

/// Publishes what `step` asks for through `publisher`, then acks `delivery`, or hands it back
/// after [`HAND_BACK_PAUSE`] when a publish did not count. A publish that did not count is
/// counted in `publish_failures` at once: the hand-back itself may wait as long as the broker
/// blocks the connection (a memory alarm), and the failure must show while it does. An
/// outcome that no queue took still counts as published (it is counted apart, and the job is
/// acked): handing it back would only publish it again to nobody.
pub(crate) async fn settle(
    publisher: &impl Confirmed,
    delivery: &impl Acknowledge,
    original: Original<'_>,
    step: &Step,
    metrics: &Metrics,
) -> Settled {
    let app = original.app;
    match publish(publisher, original, step, metrics).await {
        Ok(()) if delivery.ack().await => Settled::Acked,
        Ok(()) => {
            tracing::warn!(app = %app, "ack did not reach the broker; the job will be redelivered");
            Settled::AckLost
        }
        Err(e) => {
            metrics.publish_failures.inc();
            tracing::warn!(app = %app, error = %e, "could not publish; handing the job back to the broker");
            tokio::time::sleep(HAND_BACK_PAUSE).await;
            delivery.hand_back().await;
            Settled::HandedBack
        }
    }
}

/// Publishes what the pipeline decided, each with confirms.
async fn publish(
    publisher: &impl Confirmed,
    original: Original<'_>,
    step: &Step,
    metrics: &Metrics,
) -> Result<(), PublishError> {
    // The producer's trace goes on with the job's result.
    let trace = original.trace.map(field_table);
    match step {
        Step::Finish(outcome) => publish_outcome(publisher, outcome, trace, metrics).await,
        Step::Reject { outcome, reason } => {
            tracing::warn!(app = %original.app, id = ?outcome.id, %reason, "job rejected");
            let dead = publish_dead(publisher, original, reason);
            let out = publish_outcome(publisher, outcome, trace, metrics);
            let (dead, out) = tokio::join!(dead, out);
            dead.and(out)
        }
        Step::Answer { answer, dead } => {
            let body = serde_json::to_vec(answer).expect("answers always serialize");
            let routing_key = answer.routing_key();
            let out = async {
                let message = traced(
                    result_message(&routing_key, &body, answer.id.as_deref()),
                    trace,
                );
                if let Landing::Returned(returned) = publisher.publish(message).await? {
                    count_returned(metrics, &returned);
                }
                Ok(())
            };
            let Some(reason) = dead else {
                return out.await;
            };
            tracing::warn!(app = %original.app, id = ?answer.id, %reason, "cancel rejected");
            let (dead, out) = tokio::join!(publish_dead(publisher, original, reason), out);
            dead.and(out)
        }
        Step::Retry {
            after, state, wait, ..
        } => {
            tracing::debug!(attempts = state.attempts, ?after, ?wait, "retry scheduled");
            publish_retry(publisher, original, state, *after).await
        }
    }
}

/// `message` carrying the job's trace headers, when it had valid ones.
fn traced(mut message: Publication<'_>, trace: Option<FieldTable>) -> Publication<'_> {
    if let Some(trace) = trace {
        message.properties = message.properties.with_headers(trace);
    }
    message
}

/// The outcome on `wxcourier.results`; one that no queue took is counted.
async fn publish_outcome(
    publisher: &impl Confirmed,
    outcome: &SendOutcome,
    trace: Option<FieldTable>,
    metrics: &Metrics,
) -> Result<(), PublishError> {
    let body = serde_json::to_vec(outcome).expect("outcomes always serialize");
    let routing_key = outcome.routing_key();
    let message = traced(
        result_message(&routing_key, &body, outcome.id.as_deref()),
        trace,
    );
    if let Landing::Returned(returned) = publisher.publish(message).await? {
        count_returned(metrics, &returned);
    }
    Ok(())
}

/// The original message, unchanged, plus the reason, in `wxcourier.dead`.
async fn publish_dead(
    publisher: &impl Confirmed,
    original: Original<'_>,
    reason: &str,
) -> Result<(), PublishError> {
    let headers = headers::dead_copy(original.properties.headers().as_ref(), reason, original.app);
    publish_copy(publisher, original, "", DEAD_QUEUE, headers).await
}

/// The original body with the retry state in headers, into the delay tier `after`.
async fn publish_retry(
    publisher: &impl Confirmed,
    original: Original<'_>,
    state: &RetryState,
    after: Duration,
) -> Result<(), PublishError> {
    let headers = headers::retry_copy(
        original.properties.headers().as_ref(),
        state,
        &tier_label(after),
    );
    publish_copy(publisher, original, RETRY_EXCHANGE, original.app, headers).await
}

/// The delivery's body and properties with `headers`, persistent, to a queue that must take
/// it.
async fn publish_copy(
    publisher: &impl Confirmed,
    original: Original<'_>,
    exchange: &str,
    routing_key: &str,
    headers: FieldTable,
) -> Result<(), PublishError> {
    publisher
        .publish(Publication {
            exchange,
            routing_key,
            body: original.body,
            properties: original
                .properties
                .clone()
                .with_headers(headers)
                .with_delivery_mode(2),
            unroutable: Unroutable::Refused,
        })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use lapin::types::{AMQPValue, ShortString};

    use super::*;
    use crate::broker::{HEADER_APP, HEADER_ERROR, RESULTS_EXCHANGE};
    use crate::outcome::SendStatus;
    use crate::worker::pipeline::Wait;

    /// One message as the fake broker took it.
    #[derive(Debug, Clone)]
    struct Published {
        exchange: String,
        routing_key: String,
        body: Vec<u8>,
        properties: BasicProperties,
        unroutable: Unroutable,
    }

    impl Published {
        fn header(&self, key: &str) -> Option<String> {
            let headers = self.properties.headers().as_ref()?;
            match headers.inner().get(key)? {
                AMQPValue::LongString(s) => Some(s.to_string()),
                AMQPValue::LongLongInt(n) => Some(n.to_string()),
                other => Some(format!("{other:?}")),
            }
        }
    }

    /// The fake broker's answer to a publish, by the exchange and routing key it went to.
    type Answer = fn(&str, &str) -> Result<Landing, PublishError>;

    /// A broker that records every publish and answers each by its exchange and routing key.
    struct FakeBroker {
        published: Mutex<Vec<Published>>,
        answer: Answer,
    }

    impl FakeBroker {
        fn confirming() -> Self {
            Self::answering(|_, _| Ok(Landing::Taken))
        }

        fn answering(answer: Answer) -> Self {
            Self {
                published: Mutex::new(Vec::new()),
                answer,
            }
        }

        fn published(&self) -> Vec<Published> {
            self.published.lock().unwrap().clone()
        }
    }

    impl Confirmed for FakeBroker {
        async fn publish(&self, msg: Publication<'_>) -> Result<Landing, PublishError> {
            self.published.lock().unwrap().push(Published {
                exchange: msg.exchange.into(),
                routing_key: msg.routing_key.into(),
                body: msg.body.to_vec(),
                properties: msg.properties,
                unroutable: msg.unroutable,
            });
            (self.answer)(msg.exchange, msg.routing_key)
        }
    }

    /// A delivery that records how it ended.
    struct FakeDelivery {
        ends: Mutex<Vec<&'static str>>,
        ack_reaches_broker: bool,
        /// The hand-back never gets out, as on a connection the broker blocks.
        hand_back_blocks: bool,
    }

    impl FakeDelivery {
        fn new() -> Self {
            Self {
                ends: Mutex::new(Vec::new()),
                ack_reaches_broker: true,
                hand_back_blocks: false,
            }
        }

        fn ends(&self) -> Vec<&'static str> {
            self.ends.lock().unwrap().clone()
        }
    }

    impl Acknowledge for FakeDelivery {
        async fn ack(&self) -> bool {
            self.ends.lock().unwrap().push("ack");
            self.ack_reaches_broker
        }

        async fn hand_back(&self) {
            self.ends.lock().unwrap().push("hand back");
            if self.hand_back_blocks {
                std::future::pending::<()>().await;
            }
        }
    }

    const BODY: &[u8] = br#"{"id":"j1","touser":"u","template_id":"t","data":{}}"#;

    /// A delivery's properties as a producer set them, with a header of its own.
    fn producer_properties() -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            ShortString::from("trace"),
            AMQPValue::LongString("abc".into()),
        );
        BasicProperties::default()
            .with_message_id("j1".into())
            .with_content_type("application/json".into())
            .with_headers(headers)
    }

    fn outcome(status: SendStatus) -> SendOutcome {
        let mut o = SendOutcome::new("shop", status, time::OffsetDateTime::UNIX_EPOCH);
        o.id = Some("j1".into());
        o
    }

    async fn run(broker: &FakeBroker, delivery: &FakeDelivery, step: &Step) -> Settled {
        run_counting(broker, delivery, step, &Metrics::new()).await
    }

    async fn run_counting(
        broker: &FakeBroker,
        delivery: &FakeDelivery,
        step: &Step,
        metrics: &Metrics,
    ) -> Settled {
        let properties = producer_properties();
        let trace = crate::broker::trace::headers_of(&properties);
        let original = Original {
            app: "shop",
            body: BODY,
            properties: &properties,
            trace: trace.as_ref(),
        };
        settle(broker, delivery, original, step, metrics).await
    }

    fn retry_step() -> Step {
        Step::Retry {
            after: Duration::from_secs(5),
            state: RetryState {
                attempts: 3,
                quota_sends: 1,
                first_try_ms: Some(1_700_000_000_000),
                quota_strikes: 2,
                claim: None,
                quiet_until_ms: None,
            },
            wait: Wait::Transient,
            errcode: Some(-1),
        }
    }

    fn reject_step() -> Step {
        Step::Reject {
            outcome: outcome(SendStatus::Rejected),
            reason: "data: missing".into(),
        }
    }

    #[tokio::test]
    async fn a_final_outcome_is_published_to_the_results_then_the_delivery_acked() {
        let (broker, delivery) = (FakeBroker::confirming(), FakeDelivery::new());
        let settled = run(&broker, &delivery, &Step::Finish(outcome(SendStatus::Sent))).await;
        assert!(matches!(settled, Settled::Acked), "{settled:?}");
        let [out] = &broker.published()[..] else {
            panic!("one publish: {:?}", broker.published());
        };
        assert_eq!(out.exchange, RESULTS_EXCHANGE);
        assert_eq!(out.routing_key, "sent.shop");
        assert_eq!(
            out.unroutable,
            Unroutable::Reported,
            "results' consumers bind what they want; what none takes is counted"
        );
        let body: SendOutcome = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body, outcome(SendStatus::Sent));
        let p = &out.properties;
        assert_eq!(p.correlation_id().as_ref().unwrap().as_str(), "j1");
        assert_eq!(p.app_id().as_ref().unwrap().as_str(), "wxcourier");
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(delivery.ends(), ["ack"]);
    }

    #[tokio::test]
    async fn a_job_with_a_traceparent_gets_it_and_its_tracestate_on_its_outcome_only() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut headers = FieldTable::default();
        headers.insert("traceparent".into(), AMQPValue::LongString(parent.into()));
        headers.insert("tracestate".into(), AMQPValue::LongString("rojo=1".into()));
        headers.insert(
            "x-mine".into(),
            AMQPValue::LongString("kept to myself".into()),
        );
        let properties = BasicProperties::default().with_headers(headers);
        let trace = crate::broker::trace::headers_of(&properties);
        let original = Original {
            app: "shop",
            body: BODY,
            properties: &properties,
            trace: trace.as_ref(),
        };
        let (broker, delivery) = (FakeBroker::confirming(), FakeDelivery::new());
        let step = Step::Finish(outcome(SendStatus::Sent));
        settle(&broker, &delivery, original, &step, &Metrics::new()).await;
        let [out] = &broker.published()[..] else {
            panic!("one publish: {:?}", broker.published());
        };
        assert_eq!(out.header("traceparent").as_deref(), Some(parent));
        assert_eq!(out.header("tracestate").as_deref(), Some("rojo=1"));
        assert_eq!(out.header("x-mine"), None, "only the trace crosses");
        // Without a traceparent, an outcome has no headers at all.
        let (broker, delivery) = (FakeBroker::confirming(), FakeDelivery::new());
        run(&broker, &delivery, &step).await;
        assert!(broker.published()[0].properties.headers().is_none());
    }

    #[tokio::test]
    async fn a_retry_copy_carries_the_original_and_the_retry_state_into_its_tier() {
        let (broker, delivery) = (FakeBroker::confirming(), FakeDelivery::new());
        let settled = run(&broker, &delivery, &retry_step()).await;
        assert!(matches!(settled, Settled::Acked), "{settled:?}");
        let [copy] = &broker.published()[..] else {
            panic!("one publish: {:?}", broker.published());
        };
        assert_eq!(copy.exchange, RETRY_EXCHANGE);
        assert_eq!(copy.routing_key, "shop");
        assert_eq!(
            copy.unroutable,
            Unroutable::Refused,
            "a retry copy no queue takes is lost"
        );
        assert_eq!(copy.body, BODY);
        assert_eq!(
            copy.properties.message_id().as_ref().unwrap().as_str(),
            "j1"
        );
        assert_eq!(*copy.properties.delivery_mode(), Some(2));
        assert_eq!(copy.header("trace").as_deref(), Some("abc"));
        assert_eq!(
            copy.header(headers::HEADER_DELAY_TIER).as_deref(),
            Some(tier_label(Duration::from_secs(5)).as_str())
        );
        let state = headers::retry_state(&copy.properties);
        assert_eq!(state.attempts, 3);
        assert_eq!(state.quota_sends, 1);
        assert_eq!(state.first_try_ms, Some(1_700_000_000_000));
        assert_eq!(state.quota_strikes, 2);
        assert_eq!(delivery.ends(), ["ack"]);
    }

    #[tokio::test]
    async fn a_rejected_job_goes_unchanged_to_the_dead_queue_with_its_reason_and_an_outcome() {
        let (broker, delivery) = (FakeBroker::confirming(), FakeDelivery::new());
        let settled = run(&broker, &delivery, &reject_step()).await;
        assert!(matches!(settled, Settled::Acked), "{settled:?}");
        let published = broker.published();
        assert_eq!(published.len(), 2, "{published:?}");
        let dead = published.iter().find(|p| p.routing_key == DEAD_QUEUE);
        let dead = dead.expect("a dead copy");
        assert_eq!(dead.exchange, "", "straight to the queue");
        assert_eq!(dead.unroutable, Unroutable::Refused);
        assert_eq!(dead.body, BODY);
        assert_eq!(dead.header(HEADER_ERROR).as_deref(), Some("data: missing"));
        assert_eq!(dead.header(HEADER_APP).as_deref(), Some("shop"));
        assert_eq!(dead.header("trace").as_deref(), Some("abc"));
        let out = published.iter().find(|p| p.exchange == RESULTS_EXCHANGE);
        assert_eq!(out.expect("an outcome").routing_key, "rejected.shop");
        assert_eq!(delivery.ends(), ["ack"]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unconfirmed_outcome_hands_the_delivery_back_after_a_pause_never_acks() {
        let refusals: [Answer; 4] = [
            |_, _| Err(PublishError::Nacked),
            |_, _| Err(PublishError::Timeout(Duration::from_secs(5))),
            |_, _| Err(PublishError::Unroutable),
            // The publisher's channel is gone.
            |_, _| Err(PublishError::Channel("channel closed".into())),
        ];
        for refuse in refusals {
            for step in [
                Step::Finish(outcome(SendStatus::Failed)),
                retry_step(),
                reject_step(),
            ] {
                let (broker, delivery) = (FakeBroker::answering(refuse), FakeDelivery::new());
                let started = tokio::time::Instant::now();
                let settled = run(&broker, &delivery, &step).await;
                assert!(matches!(settled, Settled::HandedBack), "{step:?}");
                assert_eq!(delivery.ends(), ["hand back"], "{step:?}");
                assert!(started.elapsed() >= HAND_BACK_PAUSE, "not hammered");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_publish_is_counted_before_the_hand_back_even_one_that_never_gets_out() {
        let broker =
            FakeBroker::answering(|_, _| Err(PublishError::Timeout(Duration::from_secs(1))));
        let delivery = FakeDelivery {
            hand_back_blocks: true,
            ..FakeDelivery::new()
        };
        let metrics = Metrics::new();
        let step = Step::Finish(outcome(SendStatus::Sent));
        let settling = run_counting(&broker, &delivery, &step, &metrics);
        let waited = tokio::time::timeout(Duration::from_secs(60), settling).await;
        assert!(waited.is_err(), "the blocked hand-back is still waiting");
        assert_eq!(
            metrics.publish_failures.get(),
            1,
            "counted while the hand-back waits"
        );
        assert_eq!(delivery.ends(), ["hand back"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_job_whose_dead_copy_is_refused_is_handed_back_even_with_its_outcome_out() {
        let broker = FakeBroker::answering(|exchange, _| match exchange {
            "" => Err(PublishError::Unroutable),
            _ => Ok(Landing::Taken),
        });
        let delivery = FakeDelivery::new();
        let settled = run(&broker, &delivery, &reject_step()).await;
        assert!(matches!(settled, Settled::HandedBack));
        assert_eq!(delivery.ends(), ["hand back"]);
        // And the other way round: the dead copy in, the outcome refused.
        let broker = FakeBroker::answering(|exchange, _| match exchange {
            "" => Ok(Landing::Taken),
            _ => Err(PublishError::Nacked),
        });
        let delivery = FakeDelivery::new();
        let settled = run(&broker, &delivery, &reject_step()).await;
        assert!(matches!(settled, Settled::HandedBack));
        assert_eq!(delivery.ends(), ["hand back"]);
    }

    #[tokio::test]
    async fn an_ack_that_does_not_reach_the_broker_is_said_so_and_not_handed_back() {
        let broker = FakeBroker::confirming();
        let delivery = FakeDelivery {
            ack_reaches_broker: false,
            ..FakeDelivery::new()
        };
        let settled = run(&broker, &delivery, &Step::Finish(outcome(SendStatus::Sent))).await;
        assert!(matches!(settled, Settled::AckLost), "{settled:?}");
        assert_eq!(delivery.ends(), ["ack"]);
    }

    #[tokio::test]
    async fn an_outcome_no_queue_took_is_counted_once_per_message_and_the_job_acked() {
        let broker = FakeBroker::answering(|exchange, key| match exchange {
            RESULTS_EXCHANGE => Ok(Landing::Returned(key.to_string())),
            _ => Ok(Landing::Taken),
        });
        let metrics = Metrics::new();
        for step in [Step::Finish(outcome(SendStatus::Failed)), reject_step()] {
            let delivery = FakeDelivery::new();
            let settled = run_counting(&broker, &delivery, &step, &metrics).await;
            assert!(matches!(settled, Settled::Acked), "{settled:?}");
            assert_eq!(delivery.ends(), ["ack"], "not handed back: nothing loops");
        }
        let text = metrics.render();
        for line in [
            "wxcourier_outcomes_unrouted_total{app=\"shop\",status=\"failed\"} 1",
            "wxcourier_outcomes_unrouted_total{app=\"shop\",status=\"rejected\"} 1",
            "wxcourier_publish_failures_total 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[tokio::test]
    async fn a_cancel_is_answered_as_cancel_app_and_a_refused_one_also_goes_to_the_dead_queue() {
        use crate::outcome::cancel::{CancelAnswer, CancelStatus};
        let accepted = Step::Answer {
            answer: CancelAnswer::new("shop", Some("j1".into()), CancelStatus::Accepted),
            dead: None,
        };
        let (broker, delivery) = (FakeBroker::confirming(), FakeDelivery::new());
        assert!(matches!(
            run(&broker, &delivery, &accepted).await,
            Settled::Acked
        ));
        let [out] = &broker.published()[..] else {
            panic!("one publish: {:?}", broker.published());
        };
        assert_eq!(
            (out.exchange.as_str(), out.routing_key.as_str()),
            (RESULTS_EXCHANGE, "cancel.shop")
        );
        let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"kind": "cancel", "app": "shop", "id": "j1", "status": "accepted"})
        );
        assert_eq!(
            out.properties.correlation_id().as_ref().unwrap().as_str(),
            "j1"
        );
        let mut answer = CancelAnswer::new("shop", None, CancelStatus::Rejected);
        answer.error = Some("id: is required".into());
        let refused = Step::Answer {
            answer,
            dead: Some("id: is required".into()),
        };
        let (broker, delivery) = (FakeBroker::confirming(), FakeDelivery::new());
        assert!(matches!(
            run(&broker, &delivery, &refused).await,
            Settled::Acked
        ));
        let published = broker.published();
        let dead = published
            .iter()
            .find(|p| p.routing_key == DEAD_QUEUE)
            .expect("a dead copy");
        assert_eq!(dead.body, BODY);
        assert_eq!(
            dead.header(HEADER_ERROR).as_deref(),
            Some("id: is required")
        );
        assert!(published.iter().any(|p| p.routing_key == "cancel.shop"));
        assert_eq!(delivery.ends(), ["ack"]);
    }
}
