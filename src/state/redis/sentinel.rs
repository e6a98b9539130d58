//! A connection to the primary that Redis Sentinel names, which follows a failover by itself.
//!
//! The `redis` crate's Sentinel client asks for the primary only when it opens a connection, and
//! a live connection stays on a demoted node (redis-rs #1438). Here every call goes to the primary
//! found last; a call that fails for a reason that may mean "this is no longer the primary" (the
//! connection broke, the node did not answer, or it answered `READONLY`) forgets it, and the next
//! call asks the sentinels again: `SENTINEL get-master-addr-by-name`, each sentinel in turn, then
//! `ROLE` on the node it names, which must say `master`. One resolution runs at a time; calls that
//! arrive meanwhile wait for it, and for a short while after a failed one they fail at once
//! instead of asking the sentinels again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, RedisResult, ServerErrorKind, TlsCertificates, Value,
};

use crate::config::{Endpoints, HostPort};

/// How long one sentinel gets to name the primary before the next is asked.
const SENTINEL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long connecting to the named primary and checking its role may take.
const PRIMARY_CONNECT_TIMEOUT: Duration = Duration::from_millis(800);
/// After a failed resolution, calls fail at once for this long rather than ask the sentinels
/// again: while Sentinel is still electing a new primary, asking faster finds nothing new.
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// The primary a resolution found: its address, a multiplexed connection to it, and which
/// resolution found it (so a failure forgets only the primary it happened on).
#[derive(Clone)]
pub(super) struct Primary {
    pub(super) addr: HostPort,
    pub(super) conn: MultiplexedConnection,
    generation: u64,
}

pub(super) struct SentinelLink {
    /// One client per sentinel with the URL's credentials, and one without: a sentinel often
    /// has no password of its own even when the data nodes do.
    sentinels: Vec<(HostPort, Client, Option<Client>)>,
    master: String,
    /// What connecting to a primary needs besides its address.
    primary_auth: RedisConnectionInfo,
    tls: bool,
    ca_pem: Option<Vec<u8>>,
    /// Each response from the primary must come within this, shorter than a state call's own
    /// timeout, so that a primary that stopped answering is noticed here and forgotten.
    response_timeout: Duration,
    current: Mutex<Option<Primary>>,
    /// Held while resolving; holds when and why the last resolution failed.
    resolving: tokio::sync::Mutex<Option<(Instant, RedisError)>>,
    generations: AtomicU64,
    /// The sentinel to ask first: the one that answered last.
    first: AtomicUsize,
}

impl SentinelLink {
    pub(super) fn new(
        sentinels: &Endpoints,
        master: &str,
        db: i64,
        ca_pem: Option<Vec<u8>>,
        call_timeout: Duration,
    ) -> RedisResult<Self> {
        let mut auth = RedisConnectionInfo::default().set_db(db);
        if let Some(user) = &sentinels.username {
            auth = auth.set_username(user);
        }
        if let Some(password) = &sentinels.password {
            auth = auth.set_password(password.expose());
        }
        let has_credentials = sentinels.username.is_some() || sentinels.password.is_some();
        let sentinel_auth = auth.clone().set_db(0);
        let clients = sentinels
            .hosts
            .iter()
            .map(|hp| {
                let with = client(hp, sentinels.tls, &ca_pem, sentinel_auth.clone())?;
                let bare = has_credentials
                    .then(|| client(hp, sentinels.tls, &ca_pem, RedisConnectionInfo::default()))
                    .transpose()?;
                Ok((hp.clone(), with, bare))
            })
            .collect::<RedisResult<_>>()?;
        Ok(Self {
            sentinels: clients,
            master: master.to_owned(),
            primary_auth: auth,
            tls: sentinels.tls,
            ca_pem,
            response_timeout: call_timeout.mul_f32(0.9),
            current: Mutex::new(None),
            resolving: tokio::sync::Mutex::new(None),
            generations: AtomicU64::new(0),
            first: AtomicUsize::new(0),
        })
    }

    pub(super) fn master(&self) -> &str {
        &self.master
    }

    /// The primary found last, or a new one from the sentinels.
    pub(super) async fn primary(&self) -> RedisResult<Primary> {
        if let Some(p) = self.known() {
            return Ok(p);
        }
        let mut last_failure = self.resolving.lock().await;
        // Another call may have resolved while this one waited.
        if let Some(p) = self.known() {
            return Ok(p);
        }
        if let Some((at, e)) = &*last_failure
            && at.elapsed() < RETRY_AFTER
        {
            return Err(e.clone());
        }
        match self.resolve().await {
            Ok(p) => {
                *last_failure = None;
                *self.current.lock().expect("not poisoned") = Some(p.clone());
                tracing::info!(
                    primary = %p.addr,
                    master = %self.master,
                    "shared state (Redis Sentinel): connected to the primary"
                );
                Ok(p)
            }
            Err(e) => {
                *last_failure = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    fn known(&self) -> Option<Primary> {
        self.current.lock().expect("not poisoned").clone()
    }

    /// Called with the outcome of every call made on `used`: an error that may mean the node
    /// is no longer the primary forgets it, so the next call asks the sentinels again.
    pub(super) fn observe<T>(&self, used: &Primary, result: &RedisResult<T>) {
        let Err(e) = result else { return };
        if !may_have_moved(e) {
            return;
        }
        let mut current = self.current.lock().expect("not poisoned");
        if current.as_ref().map(|p| p.generation) == Some(used.generation) {
            tracing::warn!(
                primary = %used.addr,
                master = %self.master,
                error = %e,
                "shared state (Redis Sentinel): the primary failed a call; asking the sentinels again"
            );
            *current = None;
        }
    }

    /// Asks each sentinel in turn, starting with the one that answered last, until one names a
    /// node that answers as the primary.
    async fn resolve(&self) -> RedisResult<Primary> {
        let n = self.sentinels.len();
        let start = self.first.load(Ordering::Relaxed);
        let mut why = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            let (hp, with, bare) = &self.sentinels[at];
            let named =
                match tokio::time::timeout(SENTINEL_TIMEOUT, self.ask(with, bare.as_ref())).await {
                    Ok(Ok(addr)) => addr,
                    Ok(Err(e)) => {
                        why.push(format!("sentinel {hp}: {e}"));
                        continue;
                    }
                    Err(_) => {
                        why.push(format!(
                            "sentinel {hp}: no answer within {SENTINEL_TIMEOUT:?}"
                        ));
                        continue;
                    }
                };
            match tokio::time::timeout(PRIMARY_CONNECT_TIMEOUT, self.connect(&named)).await {
                Ok(Ok(conn)) => {
                    self.first.store(at, Ordering::Relaxed);
                    return Ok(Primary {
                        addr: named,
                        conn,
                        generation: self.generations.fetch_add(1, Ordering::Relaxed) + 1,
                    });
                }
                Ok(Err(e)) => why.push(format!("primary {named} named by sentinel {hp}: {e}")),
                Err(_) => why.push(format!(
                    "primary {named} named by sentinel {hp}: no answer within {PRIMARY_CONNECT_TIMEOUT:?}"
                )),
            }
        }
        Err(RedisError::from((
            ErrorKind::Io,
            "no sentinel named a reachable primary",
            format!("master {}: {}", self.master, why.join("; ")),
        )))
    }

    /// `SENTINEL get-master-addr-by-name`, with the URL's credentials, or without them when the
    /// sentinel refuses them (it has no password of its own).
    async fn ask(&self, with: &Client, bare: Option<&Client>) -> RedisResult<HostPort> {
        match self.ask_one(with).await {
            Err(e) if is_refused_credentials(&e) && bare.is_some() => {
                self.ask_one(bare.expect("checked")).await
            }
            other => other,
        }
    }

    async fn ask_one(&self, sentinel: &Client) -> RedisResult<HostPort> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(SENTINEL_TIMEOUT))
            .set_response_timeout(Some(SENTINEL_TIMEOUT));
        let mut conn = sentinel
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let named: Option<(String, u16)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master)
            .query_async(&mut conn)
            .await?;
        let (host, port) = named.ok_or_else(|| {
            RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "this sentinel watches no master of that name",
                self.master.clone(),
            ))
        })?;
        Ok(HostPort { host, port })
    }

    /// Connects to the node a sentinel named and checks that it says it is the primary: a
    /// sentinel that has not yet seen a failover may name the old one, back as a replica.
    async fn connect(&self, addr: &HostPort) -> RedisResult<MultiplexedConnection> {
        let node = client(addr, self.tls, &self.ca_pem, self.primary_auth.clone())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(PRIMARY_CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.response_timeout));
        let mut conn = node
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut conn).await?;
        let said = role
            .first()
            .and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
        if said.as_deref() != Some("master") {
            return Err(RedisError::from((
                ErrorKind::Io,
                "the node a sentinel named is not the primary",
                format!(
                    "ROLE says {}",
                    said.as_deref().unwrap_or("nothing readable")
                ),
            )));
        }
        Ok(conn)
    }
}

/// A client for one node, over TLS (with the private CA, if set) for `rediss+sentinel://`.
fn client(
    addr: &HostPort,
    tls: bool,
    ca_pem: &Option<Vec<u8>>,
    auth: RedisConnectionInfo,
) -> RedisResult<Client> {
    let info = node_info(addr, tls)?.set_redis_settings(auth);
    match ca_pem {
        Some(root_cert) if tls => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert.clone()),
            },
        ),
        _ => Client::open(info),
    }
}

pub(super) fn node_info(addr: &HostPort, tls: bool) -> RedisResult<ConnectionInfo> {
    let addr = if tls {
        ConnectionAddr::TcpTls {
            host: addr.host.clone(),
            port: addr.port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(addr.host.clone(), addr.port)
    };
    addr.into_connection_info()
}

/// Whether an error may mean the node is no longer the primary (or no longer there): anything
/// but an ordinary error reply, and `READONLY`, which a demoted primary answers to writes.
fn may_have_moved(e: &RedisError) -> bool {
    match e.kind() {
        // MASTERDOWN: a replica that lost its primary. NOREPLICAS: a primary cut off from its
        // replicas (`min-replicas-to-write`), as an old primary is on the losing side of a
        // partition while the sentinels elect another.
        ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown) => true,
        ErrorKind::Extension if e.code() == Some("NOREPLICAS") => true,
        ErrorKind::Server(_)
        | ErrorKind::Extension
        | ErrorKind::UnexpectedReturnType
        | ErrorKind::Parse
        | ErrorKind::Client => false,
        _ => true,
    }
}

/// A sentinel without a password refuses `AUTH` (or `HELLO … AUTH`) with an error reply.
fn is_refused_credentials(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        ErrorKind::AuthenticationFailed | ErrorKind::Server(_) | ErrorKind::Extension
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_that_may_mean_a_failover_forget_the_primary() {
        let readonly = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        assert!(may_have_moved(&readonly));
        let dropped = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(may_have_moved(&dropped));
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert!(may_have_moved(&timeout));
        let script_error = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "ERR Error running script",
        ));
        assert!(!may_have_moved(&script_error));
    }
}
