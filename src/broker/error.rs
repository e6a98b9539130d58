//! Why talking to RabbitMQ failed, in words that never hold `amqp.url` (it holds the password).

use std::time::Duration;

/// A broker failure: connecting, opening a channel, or a consumer that ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    #[error("amqp.url is not a valid amqp:// or amqps:// URL")]
    BadUrl,
    #[error("cannot read amqp.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("cannot reach RabbitMQ ({0})")]
    Unreachable(String),
    #[error("RabbitMQ refused the connection ({0})")]
    Refused(String),
    #[error("cannot connect to RabbitMQ (no handshake within {}s)", .0.as_secs())]
    NoHandshake(Duration),
    #[error("cannot connect to RabbitMQ ({0})")]
    Connect(String),
    /// Every node of a list failed, each named by place and address.
    #[error("no RabbitMQ node answered ({})", .0.join("; "))]
    NoNode(Vec<String>),
    /// An operation on an open connection failed; `op` says what was being done.
    #[error("{op}: {reason}")]
    Channel { op: String, reason: String },
    /// An operation got no answer in time.
    #[error("{op}: no answer from RabbitMQ in {}s", .after.as_secs())]
    NoAnswer { op: String, after: Duration },
    #[error("consumer of {app} failed: {reason}")]
    ConsumerFailed { app: String, reason: String },
    #[error("consumer of {app} was closed by the broker")]
    ConsumerClosed { app: String },
    #[error("the publishing channel was closed by the broker")]
    PublisherClosed,
}

impl BrokerError {
    /// The failure of `op` (what was being done), for `e`.
    pub(crate) fn channel(op: impl Into<String>, e: impl std::fmt::Display) -> Self {
        BrokerError::Channel {
            op: op.into(),
            reason: e.to_string(),
        }
    }
}
