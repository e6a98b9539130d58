//! Publishing with publisher confirms and a deadline: a publish counts only once the broker
//! has confirmed it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::time::{Instant, timeout_at};

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

/// Confirm-mode channels shared by every task of one connection.
///
/// The broker sends a `basic.return` before the confirm of a `mandatory` message no queue
/// took, but nothing in the return says which publish it answers, and lapin hands it to
/// whichever confirm it resolves next (a multiple ack resolves its tags in no fixed order).
/// With several mandatory publishes in flight on one channel, a return can come with another
/// publish's confirm. So the two kinds of mandatory publish are kept apart:
/// - [`Unroutable::Reported`] (and [`Unroutable::Unasked`]) publishes are pipelined on one
///   channel, and a return is told by its own routing key ([`Landing::Returned`]), whichever
///   confirm it came with;
/// - [`Unroutable::Refused`] publishes, whose return must fail exactly the publish it answers,
///   go one at a time on each of a few lanes, so a lane's return has one confirm to come with.
#[derive(Clone)]
pub struct Publisher {
    pipelined: Channel,
    lanes: Arc<[Lane]>,
    next_lane: Arc<AtomicUsize>,
    timeout: Duration,
}

/// How many channels take [`Unroutable::Refused`] publishes, each one at a time: retry and dead
/// copies are the exception (a job WeChat turned away), so a few lanes keep a burst of them
/// moving without a channel per job.
const LANES: usize = 4;

/// A channel that carries one publish at a time.
struct Lane {
    channel: Channel,
    /// Held for the whole of a publish. False while a publish on the lane may still await its
    /// confirm: one that timed out, or whose caller went away. The next publish waits for that
    /// confirm first, so a return that answers it cannot come with the next one's.
    settled: tokio::sync::Mutex<bool>,
    /// Set when even that wait ran out: the lane can no longer tell whose return is whose, so
    /// it takes no more publishes and the publisher counts as closed (a new session opens a
    /// new one).
    lost_track: AtomicBool,
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
    /// Published `mandatory`, and a message the broker returns still counts as published:
    /// results, whose consumers bind what they want, and whose caller counts what nobody took
    /// by [`Landing::Returned`].
    Reported,
}

/// What came with a publish's confirm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Landing {
    /// Confirmed, and no returned message came with the confirm.
    Taken,
    /// Confirmed, and a message published [`Unroutable::Reported`] came back with the confirm:
    /// this one, or another in flight at the same time (see [`Publisher`]). The routing key is
    /// the returned message's own, so counting returns by it counts each once, under its key.
    Returned(String),
}

impl Publisher {
    pub async fn open(conn: &Connection, timeout: Duration) -> Result<Self, PublishError> {
        let pipelined = confirm_channel(conn).await?;
        let mut lanes = Vec::with_capacity(LANES);
        for _ in 0..LANES {
            lanes.push(Lane {
                channel: confirm_channel(conn).await?,
                settled: tokio::sync::Mutex::new(true),
                lost_track: AtomicBool::new(false),
            });
        }
        Ok(Self {
            pipelined,
            lanes: lanes.into(),
            next_lane: Arc::new(AtomicUsize::new(0)),
            timeout,
        })
    }

    /// Whether the channels still take publishes. A channel the broker closed (a refused
    /// frame, a failed publish) stays closed: the session must start over.
    pub(crate) fn is_open(&self) -> bool {
        self.pipelined.status().connected()
            && self.lanes.iter().all(|lane| {
                lane.channel.status().connected() && !lane.lost_track.load(Ordering::Relaxed)
            })
    }

    /// Closes the channels once their confirms are in.
    pub async fn close(&self) -> Result<(), PublishError> {
        let closing = self.pipelined.close(200, "done".into()).await;
        for lane in self.lanes.iter() {
            let _alone = lane.settled.lock().await;
            lane.channel
                .close(200, "done".into())
                .await
                .map_err(channel_error)?;
        }
        closing.map_err(channel_error)
    }

    /// Publishes and waits for the broker's confirm, or fails by the deadline. Many calls may
    /// run at once: their confirms are pipelined, except a [`Unroutable::Refused`] publish's,
    /// which waits for a lane of its own.
    pub async fn publish(&self, msg: Publication<'_>) -> Result<Landing, PublishError> {
        let deadline = Instant::now() + self.timeout;
        if msg.unroutable == Unroutable::Refused {
            return self.publish_alone(msg, deadline).await;
        }
        let confirmation = timeout_at(deadline, send(&self.pipelined, msg))
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))??;
        match confirmation {
            Confirmation::Ack(None) => Ok(Landing::Taken),
            Confirmation::Ack(Some(returned)) => {
                Ok(Landing::Returned(returned.delivery.routing_key.to_string()))
            }
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            Confirmation::NotRequested => Err(not_requested()),
        }
    }

    /// A [`Unroutable::Refused`] publish, alone on its lane, so that a return on the lane is
    /// its own.
    async fn publish_alone(
        &self,
        msg: Publication<'_>,
        deadline: Instant,
    ) -> Result<Landing, PublishError> {
        let timed_out = |_| PublishError::Timeout(self.timeout);
        let lane = &self.lanes[self.next_lane.fetch_add(1, Ordering::Relaxed) % LANES];
        let mut settled = timeout_at(deadline, lane.settled.lock())
            .await
            .map_err(timed_out)?;
        if lane.lost_track.load(Ordering::Relaxed) {
            return Err(PublishError::Channel(
                "a publishing lane lost track of its confirms".into(),
            ));
        }
        if !*settled {
            // What an earlier publish's confirm brought back belongs to a caller that already
            // failed (and handed its job back): it is only waited out here. The wait takes the
            // channel's record of that confirm, so a wait that runs out cannot be made again.
            match timeout_at(deadline, lane.channel.wait_for_confirms()).await {
                Ok(waited) => {
                    waited.map_err(channel_error)?;
                }
                Err(elapsed) => {
                    lane.lost_track.store(true, Ordering::Relaxed);
                    return Err(timed_out(elapsed));
                }
            }
        }
        *settled = false;
        let confirmation = timeout_at(deadline, send(&lane.channel, msg))
            .await
            .map_err(timed_out)??;
        *settled = true;
        match confirmation {
            Confirmation::Ack(None) => Ok(Landing::Taken),
            Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            Confirmation::NotRequested => Err(not_requested()),
        }
    }
}

/// A channel in confirm mode.
async fn confirm_channel(conn: &Connection) -> Result<Channel, PublishError> {
    let channel = conn.create_channel().await.map_err(channel_error)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(channel_error)?;
    Ok(channel)
}

/// Publishes `msg` on `channel` and waits for its confirm.
async fn send(channel: &Channel, msg: Publication<'_>) -> Result<Confirmation, PublishError> {
    channel
        .basic_publish(
            msg.exchange.into(),
            msg.routing_key.into(),
            BasicPublishOptions {
                mandatory: msg.unroutable != Unroutable::Unasked,
                ..BasicPublishOptions::default()
            },
            msg.body,
            msg.properties,
        )
        .await
        .map_err(channel_error)?
        .await
        .map_err(channel_error)
}

fn channel_error(e: lapin::Error) -> PublishError {
    PublishError::Channel(e.to_string())
}

fn not_requested() -> PublishError {
    PublishError::Channel("confirms are not enabled".into())
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
    /// [`Landing::Returned`] when a result no queue took came back with its confirm.
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
