//! Publishing with publisher confirms and a deadline: a publish counts only once the broker
//! has confirmed it.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};

/// Why a publish did not count.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    #[error("the broker did not confirm within {0:?} (is it blocking publishers?)")]
    Timeout(Duration),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue took the message (returned as unroutable)")]
    Unroutable,
    #[error("the channel failed: {0}")]
    Channel(String),
}

/// A confirm-mode channel shared by every task of one connection.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    timeout: Duration,
}

/// One message to publish, with where it goes and what must become of it.
pub struct Publication<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: BasicProperties,
    /// What a message no queue takes comes to.
    pub unroutable: Unroutable,
}

/// What becomes of a message that no queue takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unroutable {
    /// Not asked (no `mandatory`): the exchange's alternate exchange takes it (the jobs
    /// exchange has one), or the broker drops it without a word.
    Unasked,
    /// Published `mandatory`, and a message the broker returns is an error: retry and dead
    /// copies must land in a queue.
    Refused,
    /// Published `mandatory`, and a message the broker returns still counts as published,
    /// told apart as [`Landing::Returned`]: results, whose consumers bind what they want, and
    /// whose caller counts what nobody took.
    Reported,
}

/// Where a confirmed message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Landing {
    /// Confirmed and not returned: a queue or an alternate exchange took it (or, not
    /// published `mandatory`, the broker did not say).
    Taken,
    /// Confirmed, but returned as unroutable ([`Unroutable::Reported`]): no queue took it.
    Returned,
}

impl Publisher {
    pub async fn open(conn: &Connection, timeout: Duration) -> Result<Self, PublishError> {
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| PublishError::Channel(e.to_string()))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| PublishError::Channel(e.to_string()))?;
        Ok(Self { channel, timeout })
    }

    /// Whether the channel still takes publishes. A channel the broker closed (a refused
    /// frame, a failed publish) stays closed: the session must start over.
    pub(crate) fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Closes the channel once its confirms are in.
    pub async fn close(&self) -> Result<(), PublishError> {
        self.channel
            .close(200, "done".into())
            .await
            .map_err(|e| PublishError::Channel(e.to_string()))
    }

    /// Publishes and waits for the broker's confirm, or fails by the deadline. Many calls may
    /// run at once: their confirms are pipelined on the one channel.
    ///
    /// The broker sends a `basic.return` before the confirm of a `mandatory` message no queue
    /// took; lapin hands the returned message back with the confirm (`Ack(Some(_))`), so the
    /// one await tells both.
    pub async fn publish(&self, msg: Publication<'_>) -> Result<Landing, PublishError> {
        let unroutable = msg.unroutable;
        let work = async {
            let confirm = self
                .channel
                .basic_publish(
                    msg.exchange.into(),
                    msg.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: unroutable != Unroutable::Unasked,
                        ..BasicPublishOptions::default()
                    },
                    msg.body,
                    msg.properties,
                )
                .await
                .map_err(|e| PublishError::Channel(e.to_string()))?
                .await
                .map_err(|e| PublishError::Channel(e.to_string()))?;
            match confirm {
                Confirmation::Ack(None) => Ok(Landing::Taken),
                Confirmation::Ack(Some(_)) if unroutable == Unroutable::Reported => {
                    Ok(Landing::Returned)
                }
                Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
                Confirmation::Nack(_) => Err(PublishError::Nacked),
                Confirmation::NotRequested => {
                    Err(PublishError::Channel("confirms are not enabled".into()))
                }
            }
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .unwrap_or(Err(PublishError::Timeout(self.timeout)))
    }
}

impl Publisher {
    /// Publishes one job as a producer would: to the jobs exchange with `app` as the routing
    /// key, `id` as its `message_id` and the given headers ([`job_properties`]), waiting for
    /// the broker's confirm. A job no queue takes is not an error here: the jobs exchange's
    /// alternate exchange (`wxcourier.unrouted`) keeps it.
    pub async fn publish_job(
        &self,
        app: &str,
        id: &str,
        body: &[u8],
        headers: FieldTable,
    ) -> Result<(), PublishError> {
        self.publish(Publication {
            exchange: super::names::JOBS_EXCHANGE,
            routing_key: app,
            body,
            properties: job_properties(id, headers),
            unroutable: Unroutable::Unasked,
        })
        .await
        .map(|_| ())
    }

    /// Publishes an outcome or a delivery report to `wxcourier.results` under `routing_key`;
    /// [`Landing::Returned`] when no queue took it.
    pub async fn publish_result<T: serde::Serialize>(
        &self,
        routing_key: &str,
        result: &T,
        correlation_id: Option<&str>,
    ) -> Result<Landing, PublishError> {
        let body = serde_json::to_vec(result).expect("results always serialize");
        self.publish(result_message(routing_key, &body, correlation_id))
            .await
    }
}

/// An outcome or a delivery report (its JSON `body`) for `wxcourier.results` under
/// `routing_key`, published `mandatory`. Unroutable is not an error (results' consumers bind
/// what they want), but it is reported, so the caller can count what nobody took.
pub(crate) fn result_message<'a>(
    routing_key: &'a str,
    body: &'a [u8],
    correlation_id: Option<&str>,
) -> Publication<'a> {
    Publication {
        exchange: super::names::RESULTS_EXCHANGE,
        routing_key,
        body,
        properties: outcome_properties(correlation_id),
        unroutable: Unroutable::Reported,
    }
}

/// The properties of every message wxcourier publishes itself (CONTRACT §2).
pub(crate) fn outcome_properties(correlation_id: Option<&str>) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_app_id("wxcourier".into());
    match correlation_id {
        Some(id) => props.with_correlation_id(id.into()),
        None => props,
    }
}

/// Properties for a job as a producer publishes it.
pub fn job_properties(id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.into())
        .with_headers(headers)
}
