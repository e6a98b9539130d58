//! What settling a delivery takes from the broker, as two small traits: a publish that counts
//! once confirmed, and the delivery's own end (ack, or hand it back). The worker settles over
//! them, so every way a delivery can end is tested with fakes and no broker.

use std::future::Future;

use lapin::Acker;
use lapin::options::{BasicAckOptions, BasicRejectOptions};

use super::publish::{Landing, Publication, PublishError, Publisher};

/// Publishes a message and resolves once the broker confirmed it (or did not).
pub(crate) trait Confirmed: Sync {
    fn publish(
        &self,
        msg: Publication<'_>,
    ) -> impl Future<Output = Result<Landing, PublishError>> + Send;
}

impl Confirmed for Publisher {
    fn publish(
        &self,
        msg: Publication<'_>,
    ) -> impl Future<Output = Result<Landing, PublishError>> + Send {
        Publisher::publish(self, msg)
    }
}

/// How one delivery ends at the broker.
pub(crate) trait Acknowledge: Sync {
    /// Acks the delivery: its job is done. False when the ack did not reach the broker (the
    /// channel is gone, so the broker redelivers it).
    fn ack(&self) -> impl Future<Output = bool> + Send;
    /// Gives the delivery back to its queue unchanged, to be delivered again.
    fn hand_back(&self) -> impl Future<Output = ()> + Send;
}

impl Acknowledge for Acker {
    async fn ack(&self) -> bool {
        matches!(Acker::ack(self, BasicAckOptions::default()).await, Ok(true))
    }

    /// The one requeue the worker makes: a `basic.reject`, which counts toward a quorum
    /// queue's delivery limit on every RabbitMQ series (from 4.3 on a `basic.nack` does not),
    /// so past the limit the broker dead-letters the job to `wxcourier.dead`.
    async fn hand_back(&self) {
        let _ = self.reject(BasicRejectOptions { requeue: true }).await;
    }
}
