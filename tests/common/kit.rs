//! What the integration tests and the benchmark share: the test broker, free ports, job
//! builders, worker config files, processes and waiting for a consumer. The
//! benchmark includes this file by path, so it uses only the crate and the dependencies every
//! target can see.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use wxcourier::broker;
use wxcourier::config::Settings;
use wxcourier::sim::DEFAULT_APPID;
use wxcourier::types::Secret;

/// The broker when `TEST_AMQP_URL` is unset.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker every test uses: `TEST_AMQP_URL` (e.g. the 4.x broker on 5673), else the 3.x one.
/// Not a `WXCOURIER_…` name: the worker a test spawns inherits the environment and would
/// refuse that as an unknown config key.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned())
}

/// The management API of the test broker: `TEST_MANAGEMENT_URL`, else the 3.x one on 15672.
pub fn management_url() -> String {
    std::env::var("TEST_MANAGEMENT_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "http://guest:guest@127.0.0.1:15672".to_owned())
}

/// `host:port` of [`amqp_url`], for tests that put a proxy in front of the broker.
pub fn amqp_addr() -> String {
    let uri: lapin::uri::AMQPUri = amqp_url().parse().expect("TEST_AMQP_URL is an AMQP URL");
    format!("{}:{}", uri.authority.host, uri.authority.port)
}

/// A connection to the broker at [`amqp_url`], after checking its version (see
/// [`expect_broker_version`]).
pub async fn connect() -> Connection {
    expect_broker_version().await;
    let mut s = Settings::default();
    s.amqp.url = Secret::new(amqp_url());
    broker::connect(&s.amqp, "wxcourier test")
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ at TEST_AMQP_URL or 127.0.0.1:5672: {e}"))
}

/// When `TEST_RABBITMQ_VERSION` is set (e.g. `4.`), the broker at [`amqp_url`] must announce a
/// version starting with it, so a matrix leg cannot silently run against the wrong broker.
/// Checked once per test binary.
async fn expect_broker_version() {
    static CHECKED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let Ok(want) = std::env::var("TEST_RABBITMQ_VERSION") else {
        return;
    };
    CHECKED
        .get_or_init(|| async move {
            let got = broker_version().await;
            assert!(
                got.starts_with(&want),
                "TEST_RABBITMQ_VERSION={want} but the broker at TEST_AMQP_URL is RabbitMQ {got}"
            );
        })
        .await;
}

/// The `version` the broker announces in its Connection.Start (read without logging in).
pub async fn broker_version() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read = async {
        let mut tcp = tokio::net::TcpStream::connect(amqp_addr()).await.ok()?;
        tcp.write_all(b"AMQP\x00\x00\x09\x01").await.ok()?;
        // Frame header: type, channel, payload size; the payload is Connection.Start, whose
        // server-properties table holds `version` as a long string.
        let mut header = [0u8; 7];
        tcp.read_exact(&mut header).await.ok()?;
        let size = u32::from_be_bytes(header[3..7].try_into().ok()?) as usize;
        let mut payload = vec![0u8; size.min(64 * 1024)];
        tcp.read_exact(&mut payload).await.ok()?;
        let key = b"\x07versionS";
        let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
        let len = u32::from_be_bytes(payload.get(at..at + 4)?.try_into().ok()?) as usize;
        let value = payload.get(at + 4..at + 4 + len)?;
        Some(String::from_utf8_lossy(value).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no AMQP Connection.Start from {}", amqp_addr()))
}

/// A free local port for a server the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh app name, so tests never see each other's queues.
pub fn unique_app(prefix: &str) -> String {
    format!("t_{prefix}_{:08x}", rand::random::<u32>())
}

/// A template the simulator knows.
pub const TEMPLATE: &str = "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY";

/// An OpenID the simulator accepts (28 characters starting with `o`).
pub fn openid(n: usize) -> String {
    format!("o{:0>27}", format!("user{n}"))
}

/// A valid template job.
pub fn job(id: &str, touser: &str) -> Value {
    json!({
        "id": id,
        "touser": touser,
        "template_id": TEMPLATE,
        "data": {"first": {"value": "hello"}, "keyword1.DATA": {"value": id}},
        "meta": {"test": id}
    })
}

/// A worker config file, in parts: the broker is [`amqp_url`], and every app has the
/// simulator's AppID.
#[derive(Default)]
pub struct WorkerConfig<'a> {
    /// `wechat.base_url`.
    pub base_url: &'a str,
    /// More keys of `[amqp]`, one per line.
    pub amqp: &'a str,
    /// More keys of `[wechat]`, one per line.
    pub wechat: &'a str,
    /// Other tables, as TOML.
    pub tables: &'a str,
    /// One `[apps.NAME]` table each.
    pub apps: &'a [String],
    /// More keys of every app's table, one per line.
    pub app_keys: &'a str,
    /// Appended last, so it may add keys to the last app's table.
    pub tail: &'a str,
}

impl WorkerConfig<'_> {
    pub fn text(&self) -> String {
        let mut text = format!(
            "[amqp]\nurl = \"{}\"\n{}\n[wechat]\nbase_url = \"{}\"\n{}\n{}\n",
            amqp_url(),
            self.amqp,
            self.base_url,
            self.wechat,
            self.tables
        );
        for app in self.apps {
            text.push_str(&format!(
                "[apps.{app}]\nappid = \"{DEFAULT_APPID}\"\n{}\n",
                self.app_keys
            ));
        }
        text.push_str(self.tail);
        text
    }

    /// Writes the file as `dir/name` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.text()).unwrap();
        path
    }
}

/// Waits until `queue` has a consumer (a passive declare reports the count), or panics after
/// `limit`.
pub async fn wait_for_consumer(conn: &Connection, queue: &str, limit: Duration) {
    let ch = conn.create_channel().await.unwrap();
    let opts = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let started = Instant::now();
    while started.elapsed() < limit {
        let q = ch
            .queue_declare(queue.into(), opts, FieldTable::default())
            .await
            .unwrap();
        if q.consumer_count() > 0 {
            let _ = ch.close(200, "ready".into()).await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing consumed {queue} within {limit:?}");
}

/// Sends `sig` (`TERM`, `KILL`, `STOP`, …) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to `limit` for `child` to exit; kills it and returns `None` if it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
