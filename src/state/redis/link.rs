//! The connection under the Redis state, in the mode `state.url` names: one node (the `redis`
//! crate's `ConnectionManager`, which reconnects), a Cluster (the crate's async cluster client,
//! which follows `MOVED` and `ASK` and refreshes its slot map), or a primary that Sentinel
//! watches (our own link, which follows a failover: see `sentinel`). The capability code sends
//! commands, pipelines and scripts through a [`LinkConn`] and never asks which mode it is in.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, TlsCertificates, Value,
};

use super::sentinel::{SentinelLink, node_info};
use crate::config::RedisUrl;

/// Each state call gives up after this long: a hung Redis must not hang the worker.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) enum Link {
    Single(ConnectionManager),
    /// Connected on first use: the cluster client starts a task, which needs the runtime.
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceLock<ClusterConnection>,
    },
    Sentinel {
        link: Arc<SentinelLink>,
        db: i64,
    },
}

impl Link {
    /// Sets up the connection without connecting: a Redis that is down at start-up only keeps
    /// the worker from consuming. The error names no credential.
    pub(super) fn open(url: &RedisUrl, ca_pem: Option<Vec<u8>>) -> Result<Self, String> {
        let certificates = |root_cert| TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        };
        match url {
            RedisUrl::Single(single) => {
                let client = match ca_pem {
                    None => redis::Client::open(single.expose()),
                    Some(root) => {
                        redis::Client::build_with_tls(single.expose(), certificates(root))
                    }
                }
                .map_err(|e| format!("state.url is not a Redis URL: {e}"))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CALL_TIMEOUT))
                    .set_response_timeout(Some(CALL_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let conn = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|e| format!("cannot set up Redis: {e}"))?;
                Ok(Link::Single(conn))
            }
            RedisUrl::Cluster { nodes } => {
                let seeds = nodes
                    .hosts
                    .iter()
                    .map(|hp| node_info(hp, nodes.tls))
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|e| format!("state.url: {e}"))?;
                let mut builder = ClusterClientBuilder::new(seeds)
                    .connection_timeout(CALL_TIMEOUT / 2)
                    .response_timeout(CALL_TIMEOUT / 2)
                    // Redirections and a slot-map refresh after a failover are retried inside
                    // one state call, never past its timeout.
                    .overall_response_timeout(Some(CALL_TIMEOUT))
                    .retries(6)
                    .min_retry_wait(10)
                    .max_retry_wait(400);
                if let Some(user) = &nodes.username {
                    builder = builder.username(user);
                }
                if let Some(password) = &nodes.password {
                    builder = builder.password(password.expose());
                }
                if let Some(root) = ca_pem.filter(|_| nodes.tls) {
                    builder = builder.certs(certificates(root));
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("cannot set up Redis Cluster: {e}"))?;
                Ok(Link::Cluster {
                    client: Box::new(client),
                    conn: OnceLock::new(),
                })
            }
            RedisUrl::Sentinel {
                sentinels,
                master,
                db,
            } => {
                let link = SentinelLink::new(sentinels, master, *db, ca_pem, CALL_TIMEOUT)
                    .map_err(|e| format!("cannot set up Redis Sentinel: {e}"))?;
                Ok(Link::Sentinel {
                    link: Arc::new(link),
                    db: *db,
                })
            }
        }
    }

    /// A handle for one call (cheap: every mode shares its connections between handles).
    pub(super) fn conn(&self) -> LinkConn {
        match self {
            Link::Single(c) => LinkConn::Single(c.clone()),
            Link::Cluster { client, conn } => LinkConn::Cluster(
                conn.get_or_init(|| {
                    client.get_pending_async_connection_with_config(
                        redis::cluster::ClusterConfig::new()
                            .set_connection_timeout(CALL_TIMEOUT / 2)
                            .set_response_timeout(CALL_TIMEOUT / 2),
                    )
                })
                .clone(),
            ),
            Link::Sentinel { link, db } => LinkConn::Sentinel(link.clone(), *db),
        }
    }

    /// Whether keys written before every key of an app shared a hash tag may be here: a single
    /// node or a Sentinel primary may hold them; a Cluster never ran the old layout.
    pub(super) fn may_hold_legacy_keys(&self) -> bool {
        !matches!(self, Link::Cluster { .. })
    }

    /// Reaches the deployment and says how: `single node`, `sentinel, primary HOST:PORT of
    /// MASTER`, or `cluster with N masters`.
    pub(super) async fn describe(&self) -> RedisResult<String> {
        match self {
            Link::Single(_) => {
                let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
                Ok("single node".into())
            }
            Link::Sentinel { link, .. } => {
                let _: String = redis::cmd("PING").query_async(&mut self.conn()).await?;
                let primary = link.primary().await?;
                Ok(format!(
                    "sentinel, primary {} of master {}",
                    primary.addr,
                    link.master()
                ))
            }
            Link::Cluster { .. } => {
                let LinkConn::Cluster(mut conn) = self.conn() else {
                    unreachable!("a cluster link hands out cluster handles")
                };
                let info = conn
                    .route_command(
                        redis::cmd("CLUSTER").arg("INFO").clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary),
                    )
                    .await?;
                let info: String = redis::from_redis_value(info)?;
                cluster_summary(&info)
            }
        }
    }
}

/// `cluster with N masters` from `CLUSTER INFO`, or an error when the cluster is not serving
/// every slot.
fn cluster_summary(info: &str) -> RedisResult<String> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::to_owned)
    };
    let state = field("cluster_state").unwrap_or_default();
    if state != "ok" {
        return Err(RedisError::from((
            ErrorKind::Io,
            "the Redis Cluster is not serving every slot",
            format!("cluster_state:{state}"),
        )));
    }
    let masters = field("cluster_size").unwrap_or_else(|| "?".into());
    Ok(format!("cluster with {masters} masters"))
}

/// One call's connection, whatever the mode.
pub(super) enum LinkConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelLink>, i64),
}

impl ConnectionLike for LinkConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            LinkConn::Single(c) => c.req_packed_command(cmd),
            LinkConn::Cluster(c) => c.req_packed_command(cmd),
            LinkConn::Sentinel(link, _) => Box::pin(async move {
                let mut refused = false;
                loop {
                    let primary = link.primary().await?;
                    let mut conn = primary.conn.clone();
                    let result = conn.req_packed_command(cmd).await;
                    link.observe(&primary, &result);
                    if refused || !is_readonly(&result) {
                        return result;
                    }
                    refused = true;
                }
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            LinkConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            LinkConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            LinkConn::Sentinel(link, _) => Box::pin(async move {
                let mut refused = false;
                loop {
                    let primary = link.primary().await?;
                    let mut conn = primary.conn.clone();
                    let result = conn.req_packed_commands(pipeline, offset, count).await;
                    link.observe(&primary, &result);
                    if refused || !is_readonly(&result) {
                        return result;
                    }
                    refused = true;
                }
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            LinkConn::Single(c) => c.get_db(),
            LinkConn::Cluster(c) => c.get_db(),
            LinkConn::Sentinel(_, db) => *db,
        }
    }
}

/// A demoted primary refused a write with `READONLY`: nothing was done, so the call is sent
/// once more, to the primary the sentinels name now, and a failover costs it no error. (A
/// pipeline refused part-way is sent whole again: its commands are idempotent sets and reads.)
fn is_readonly<T>(result: &RedisResult<T>) -> bool {
    matches!(result, Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_summed_up_by_its_masters_and_refused_when_not_serving() {
        let ok = "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_size:3\r\n";
        assert_eq!(cluster_summary(ok).unwrap(), "cluster with 3 masters");
        let failing = "cluster_state:fail\r\ncluster_size:3\r\n";
        let err = cluster_summary(failing).unwrap_err().to_string();
        assert!(err.contains("cluster_state:fail"), "{err}");
    }
}
