//! RabbitMQ: names, connecting, topology and confirmed publishing.

pub(crate) mod current;
pub(crate) mod error;
pub mod headers;
pub(crate) mod management;
mod names;
pub mod orphans;
pub mod platform_queues;
pub mod publish;
pub(crate) mod results_bindings;
pub mod results_policy;
pub(crate) mod returned;
pub(crate) mod settle;
pub mod tap;
pub mod topology;
pub(crate) mod trace;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};

use crate::config::AmqpSettings;

pub(crate) use current::CurrentPublisher;
pub use error::BrokerError;
pub(crate) use headers::HEADER_APP;
pub use headers::HEADER_ERROR;
/// Where outcomes and reports go (`check` reads its bindings; the settlement's tests look
/// there).
pub(crate) use names::RESULTS_EXCHANGE;
pub(crate) use names::RETRY_EXCHANGE;
pub use names::{DEAD_QUEUE, JOBS_EXCHANGE, RESULTS_UNROUTED, UNROUTED, job_queue};
pub use publish::{PublishError, Publisher};

/// Opens a connection named after this process to the first node of `amqp.url` that answers,
/// with the custom CA for `amqps://` if set. Every verb connects through here.
pub async fn connect(settings: &AmqpSettings, name: &str) -> Result<Connection, BrokerError> {
    connect_from(settings, name, 0).await.map(|(conn, _)| conn)
}

/// As [`connect`], trying the nodes in turn from the `first`-th (wrapping round), so a worker
/// that lost its node starts with the next one. Returns the connection and its node's index.
pub(crate) async fn connect_from(
    settings: &AmqpSettings,
    name: &str,
    first: usize,
) -> Result<(Connection, usize), BrokerError> {
    let mut tls = lapin::tcp::OwnedTLSConfig::default();
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read_to_string(path).map_err(|e| BrokerError::CaFile {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        tls.cert_chain = Some(pem);
    }
    let nodes = settings.nodes();
    let mut failures = Vec::new();
    for i in (0..nodes.len()).map(|k| (first + k) % nodes.len()) {
        let uri = broker_uri(nodes[i])?;
        let node = NodeName::new(&uri, i, nodes.len());
        match connect_one(uri, name, tls.clone()).await {
            Ok(conn) => {
                tracing::info!(node = %node, "connected to RabbitMQ");
                return Ok((conn, i));
            }
            Err(e) if nodes.len() == 1 => return Err(e),
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "RabbitMQ node did not answer; trying the next");
                failures.push(format!("{node}: {e}"));
            }
        }
    }
    Err(BrokerError::NoNode(failures))
}

/// A node as logs and errors show it: its place in `amqp.url` and `host:port`, never the URL
/// (it holds the password).
struct NodeName(String);

impl NodeName {
    fn new(uri: &AMQPUri, index: usize, of: usize) -> Self {
        let at = format!("{}:{}", uri.authority.host, uri.authority.port);
        Self(if of == 1 {
            at
        } else {
            format!("node {} of {of} ({at})", index + 1)
        })
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

async fn connect_one(
    uri: AMQPUri,
    name: &str,
    tls: lapin::tcp::OwnedTLSConfig,
) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let runtime =
        lapin::runtime::default_runtime().map_err(|e| BrokerError::Connect(e.to_string()))?;
    let connecting = Connection::connect_uri_with_config(uri, props, tls, runtime);
    match tokio::time::timeout(CONNECT_LIMIT, connecting).await {
        Ok(result) => result.map_err(|e| describe_connect_error(&e)),
        Err(_) => Err(BrokerError::NoHandshake(CONNECT_LIMIT)),
    }
}

/// The frame size is the broker's own (RabbitMQ: 128 KiB) unless the URL's `frame_max` says
/// otherwise. A smaller one saves memory, but the broker delivers a message's headers in one
/// frame of whatever size the producer could publish, and lapin closes the whole connection
/// on a frame larger than it agreed to: one job with large headers would cut off every app.
///
/// Parses one node of `amqp.url`, never echoing it: it holds the password.
fn broker_uri(url: &str) -> Result<AMQPUri, BrokerError> {
    url.parse().map_err(|_| BrokerError::BadUrl)
}

/// A broker that accepts TCP but never finishes the AMQP (or TLS) handshake must not hang the
/// caller: the worker retries with backoff and the CLI verbs exit with an error.
const CONNECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connection errors without the URL (it holds the broker password).
fn describe_connect_error(e: &lapin::Error) -> BrokerError {
    match e.kind() {
        lapin::ErrorKind::IOError(io) => BrokerError::Unreachable(io.to_string()),
        lapin::ErrorKind::ProtocolError(p) => BrokerError::Refused(p.to_string()),
        other => BrokerError::Connect(format!("{other:?}")),
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
    fn a_node_is_named_by_place_and_address_only() {
        let uri = broker_uri("amqp://u:hunter2@mq2.internal:5682/%2f").unwrap();
        assert_eq!(
            NodeName::new(&uri, 1, 3).to_string(),
            "node 2 of 3 (mq2.internal:5682)"
        );
        assert_eq!(NodeName::new(&uri, 0, 1).to_string(), "mq2.internal:5682");
    }

    #[tokio::test]
    async fn when_no_node_answers_each_is_named_without_its_password() {
        // A port just freed: nothing listens there.
        let dead = || {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            format!("amqp://u:hunter2@127.0.0.1:{port}/%2f")
        };
        let settings = AmqpSettings {
            url: crate::types::Secret::new(format!("{},{}", dead(), dead())),
            ..AmqpSettings::default()
        };
        let err = connect_from(&settings, "test", 1)
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("no RabbitMQ node answered"), "{err}");
        // Tried from the second node, then round to the first.
        let second = err.find("node 2 of 2").expect("node 2 named");
        let first = err.find("node 1 of 2").expect("node 1 named");
        assert!(second < first, "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_bad_url_is_refused_without_echoing_it() {
        let err = broker_uri("amqp://user:hunter2@host:notaport/")
            .unwrap_err()
            .to_string();
        assert!(err.contains("amqp.url"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}
