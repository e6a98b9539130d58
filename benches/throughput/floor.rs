//! `wxcourier-floor`: the benchmark's ceiling, a minimal consumer of wxcourier's job queues.
//!
//! For each app it consumes `wxcourier.jobs.APP` on a channel of its own with the worker's
//! prefetch, POSTs the body to the WeChat (simulator) template send, publishes a small outcome
//! with a publisher confirm and acks: no validation, limiter, idempotency or token logic. With
//! `--broker-only` it skips the HTTP call, which leaves what the broker alone costs. It runs
//! until it is killed. Only `cargo bench --bench throughput` starts it; it is not installed
//! with wxcourier (see docs/performance.md).

use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use wxcourier::broker::{self, Publisher, job_queue};
use wxcourier::config::Settings;
use wxcourier::sim::{DEFAULT_APPID, DEFAULT_SECRET};
use wxcourier::types::Secret;

/// How long an outcome's publish waits for its confirm, as the worker's default.
const CONFIRM_LIMIT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "wxcourier-floor",
    about = "The benchmark's floor: consume, POST, publish, ack"
)]
struct Args {
    /// The broker.
    #[arg(long)]
    amqp_url: String,
    /// The WeChat API root (the simulator); required unless --broker-only.
    #[arg(long, required_unless_present = "broker_only")]
    base_url: Option<String>,
    /// Consume, publish the outcome and ack, with no HTTP call.
    #[arg(long)]
    broker_only: bool,
    /// Unacknowledged deliveries per app, as the worker's `amqp.prefetch`.
    #[arg(long, default_value_t = 256)]
    prefetch: u16,
    /// The apps whose job queues to consume.
    #[arg(required = true)]
    apps: Vec<String>,
}

/// Whether a job is POSTed before its outcome is published, and where.
#[derive(Clone)]
enum Post {
    /// POST to the template send URL (with its access token).
    Http {
        client: reqwest::Client,
        url: String,
    },
    /// No HTTP call: the outcome is published at once.
    BrokerOnly,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut settings = Settings::default();
    settings.amqp.url = Secret::new(args.amqp_url.clone());
    let conn = broker::connect(&settings.amqp, "wxcourier floor").await?;
    let post = match (&args.base_url, args.broker_only) {
        (Some(base), false) => Post::Http {
            url: format!(
                "{base}/cgi-bin/message/template/send?access_token={}",
                token(base).await?
            ),
            client: reqwest::Client::new(),
        },
        _ => Post::BrokerOnly,
    };
    // One confirm channel for every app's outcomes, as the worker has.
    let publisher = Publisher::open(&conn, CONFIRM_LIMIT).await?;
    let mut consumers = tokio::task::JoinSet::new();
    for app in args.apps {
        // A channel per app, as the worker has.
        let channel = conn.create_channel().await?;
        consumers.spawn(consume(
            channel,
            app,
            args.prefetch,
            post.clone(),
            publisher.clone(),
        ));
    }
    // A consumer only ends when its channel fails: then so does the floor.
    while let Some(ended) = consumers.join_next().await {
        ended??;
    }
    Ok(())
}

/// The simulator's access token for its one account.
async fn token(base: &str) -> anyhow::Result<String> {
    let reply: Value = reqwest::Client::new()
        .post(format!("{base}/cgi-bin/stable_token"))
        .json(&json!({"grant_type": "client_credential", "appid": DEFAULT_APPID, "secret": DEFAULT_SECRET}))
        .send()
        .await?
        .json()
        .await?;
    reply["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no access_token in {reply}"))
}

/// Consumes one app's queue on its own channel, each delivery in its own task.
async fn consume(
    ch: Channel,
    app: String,
    prefetch: u16,
    post: Post,
    publisher: Publisher,
) -> anyhow::Result<()> {
    ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let mut deliveries = ch
        .basic_consume(
            job_queue(&app).as_str().into(),
            "floor".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let key = format!("sent.{app}");
    while let Some(delivery) = deliveries.next().await {
        let (post, publisher, key, app) =
            (post.clone(), publisher.clone(), key.clone(), app.clone());
        let delivery = delivery?;
        tokio::spawn(async move {
            if let Err(e) = handle(delivery, &post, &publisher, &key, &app).await {
                eprintln!("wxcourier-floor: {e}");
            }
        });
    }
    Ok(())
}

/// POST (unless broker-only) → confirmed outcome → ack. A job whose outcome was not confirmed
/// goes back to its queue, as the worker hands such a job back, so every job still ends with an
/// outcome when the broker is slow.
async fn handle(
    d: Delivery,
    post: &Post,
    publisher: &Publisher,
    key: &str,
    app: &str,
) -> anyhow::Result<()> {
    match forward(&d, post, publisher, key, app).await {
        Ok(()) => {
            d.ack(BasicAckOptions::default()).await?;
        }
        Err(e) => {
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            d.nack(requeue).await?;
            return Err(e);
        }
    }
    Ok(())
}

/// The POST (unless broker-only) and the outcome's confirmed publish.
async fn forward(
    d: &Delivery,
    post: &Post,
    publisher: &Publisher,
    key: &str,
    app: &str,
) -> anyhow::Result<()> {
    let reply = match post {
        Post::Http { client, url } => {
            let body = client
                .post(url)
                .body(d.data.clone())
                .send()
                .await?
                .bytes()
                .await?;
            serde_json::from_slice::<Value>(&body).ok()
        }
        Post::BrokerOnly => None,
    };
    let id = d.properties.message_id().as_ref().map(|m| m.to_string());
    let outcome = json!({"kind": "send", "app": app, "id": id, "reply": reply});
    publisher.publish_result(key, &outcome, None).await?;
    Ok(())
}
