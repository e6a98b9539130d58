//! RabbitMQ: names, connecting, topology and confirmed publishing.

pub mod headers;
pub mod orphans;
pub mod publish;
pub mod tap;
pub mod topology;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::config::AmqpSettings;

pub use headers::{HEADER_APP, HEADER_ERROR};
pub use publish::{PublishError, Publisher};

/// Jobs come in here, routed by app name.
pub const JOBS_EXCHANGE: &str = "wxcourier.jobs";
/// Every outcome and delivery report goes out here, as `STATUS.APP`.
pub const RESULTS_EXCHANGE: &str = "wxcourier.results";
/// Rejected jobs, unchanged, with `x-wxcourier-error`.
pub const DEAD_QUEUE: &str = "wxcourier.dead";
/// Jobs whose routing key names no configured app (the jobs exchange's alternate exchange).
pub const UNROUTED: &str = "wxcourier.unrouted";
/// Retry copies go here and wait in the delay tier their header names.
pub const RETRY_EXCHANGE: &str = "wxcourier.retry";

/// `wxcourier.jobs.NAME`: one queue per app so one account never blocks another.
pub fn job_queue(app: &str) -> String {
    format!("{JOBS_EXCHANGE}.{app}")
}

/// Opens a connection named after this process, with the custom CA for `amqps://` if set.
pub async fn connect(settings: &AmqpSettings, name: &str) -> Result<Connection, String> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let mut tls = lapin::tcp::OwnedTLSConfig::default();
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read amqp.ca_file {path}: {e}"))?;
        tls.cert_chain = Some(pem);
    }
    let uri = broker_uri(settings.url.expose())?;
    let connecting = Connection::connect_uri_with_config(uri, props, tls, runtime);
    match tokio::time::timeout(CONNECT_LIMIT, connecting).await {
        Ok(result) => result.map_err(|e| describe_connect_error(&e)),
        Err(_) => Err(format!(
            "cannot connect to RabbitMQ (no handshake within {}s)",
            CONNECT_LIMIT.as_secs()
        )),
    }
}

/// The frame size is the broker's own (RabbitMQ: 128 KiB) unless the URL's `frame_max` says
/// otherwise. A smaller one saves memory, but the broker delivers a message's headers in one
/// frame of whatever size the producer could publish, and lapin closes the whole connection
/// on a frame larger than it agreed to: one job with large headers would cut off every app.
///
/// Parses `amqp.url`, never echoing it: it holds the password.
fn broker_uri(url: &str) -> Result<AMQPUri, String> {
    url.parse()
        .map_err(|_| "amqp.url is not a valid amqp:// or amqps:// URL".to_owned())
}

/// A broker that accepts TCP but never finishes the AMQP (or TLS) handshake must not hang the
/// caller: the worker retries with backoff and the CLI verbs exit with an error.
const CONNECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connection errors without the URL (it holds the broker password).
fn describe_connect_error(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::IOError(io) => format!("cannot reach RabbitMQ ({io})"),
        lapin::ErrorKind::ProtocolError(p) => format!("RabbitMQ refused the connection ({p})"),
        other => format!("cannot connect to RabbitMQ ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_the_brokers_unless_the_url_says_otherwise() {
        let uri = broker_uri("amqp://u:p@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(uri.query.frame_max, None);
        let uri = broker_uri("amqps://u:p@mq:5671/prod?frame_max=65536").unwrap();
        assert_eq!(uri.query.frame_max, Some(65_536_u32));
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let err = broker_uri("amqp://user:hunter2@host:notaport/").unwrap_err();
        assert!(err.contains("amqp.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
