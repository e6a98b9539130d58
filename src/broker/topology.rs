//! Declares every exchange and queue, idempotently, and explains a declaration that clashes
//! with what already exists.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

use super::{DEAD_QUEUE, JOBS_EXCHANGE, RESULTS_EXCHANGE, RETRY_EXCHANGE, UNROUTED, job_queue};
use crate::retry::HEADER_DELAY_TIER;

/// A declaration the broker refused.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(
        "{kind} {name} already exists with other settings ({reason}); it was made by an older \
         version or by hand: move its messages elsewhere, delete it, and start again"
    )]
    Clash {
        kind: &'static str,
        name: String,
        reason: String,
    },
    #[error("cannot declare {kind} {name}: {reason}")]
    Broker {
        kind: &'static str,
        name: String,
        reason: String,
    },
}

/// The name of the delay queue for one tier, e.g. `wxcourier.retry.1000ms`.
pub fn delay_queue(tier: Duration) -> String {
    format!("{RETRY_EXCHANGE}.{}", tier_label(tier))
}

/// The header value that routes a retry copy to its tier.
pub fn tier_label(tier: Duration) -> String {
    format!("{}ms", tier.as_millis())
}

fn string(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

fn quorum() -> (&'static str, AMQPValue) {
    ("x-queue-type", string("quorum"))
}

/// Declares the base exchanges that producers need (`send` uses this alone).
pub async fn declare_exchanges(conn: &Connection) -> Result<(), TopologyError> {
    let ch = fresh_channel(conn).await?;
    exchange(&ch, UNROUTED, ExchangeKind::Fanout, FieldTable::default()).await?;
    let ch = fresh_channel(conn).await?;
    queue(&ch, UNROUTED, table(&[quorum()])).await?;
    bind(&ch, UNROUTED, UNROUTED, "", FieldTable::default()).await?;
    let ch = fresh_channel(conn).await?;
    // Jobs for an app nobody configured go to wxcourier.unrouted instead of vanishing.
    exchange(
        &ch,
        JOBS_EXCHANGE,
        ExchangeKind::Direct,
        table(&[("alternate-exchange", string(UNROUTED))]),
    )
    .await?;
    let ch = fresh_channel(conn).await?;
    exchange(
        &ch,
        RESULTS_EXCHANGE,
        ExchangeKind::Topic,
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Declares everything the worker uses: the base exchanges, one quorum queue per app, the
/// dead-letter queue and one delay queue per retry tier.
pub async fn declare_all(
    conn: &Connection,
    apps: &[String],
    tiers: &[Duration],
) -> Result<(), TopologyError> {
    declare_exchanges(conn).await?;
    // A channel that hits a clash is closed by the broker, so each step gets a fresh one.
    let ch = fresh_channel(conn).await?;
    queue(&ch, DEAD_QUEUE, table(&[quorum()])).await?;
    for app in apps {
        let ch = fresh_channel(conn).await?;
        let name = job_queue(app);
        queue(&ch, &name, table(&[quorum()])).await?;
        bind(&ch, &name, JOBS_EXCHANGE, app, FieldTable::default()).await?;
    }
    let ch = fresh_channel(conn).await?;
    // A headers exchange routes a copy to its tier by header and leaves its routing key
    // alone, so dead-lettering sends it back to the jobs exchange under its app's key.
    exchange(
        &ch,
        RETRY_EXCHANGE,
        ExchangeKind::Headers,
        FieldTable::default(),
    )
    .await?;
    for &tier in tiers {
        let ch = fresh_channel(conn).await?;
        let name = delay_queue(tier);
        let args = table(&[
            quorum(),
            (
                "x-message-ttl",
                AMQPValue::LongLongInt(tier.as_millis() as i64),
            ),
            ("x-dead-letter-exchange", string(JOBS_EXCHANGE)),
            // Classic dead-lettering is at-most-once; quorum at-least-once never drops a
            // retry, and it requires reject-publish overflow.
            ("x-dead-letter-strategy", string("at-least-once")),
            ("x-overflow", string("reject-publish")),
        ]);
        queue(&ch, &name, args).await?;
        let binding = table(&[
            ("x-match", string("all")),
            (HEADER_DELAY_TIER, string(&tier_label(tier))),
        ]);
        bind(&ch, &name, RETRY_EXCHANGE, "", binding).await?;
    }
    Ok(())
}

async fn fresh_channel(conn: &Connection) -> Result<Channel, TopologyError> {
    conn.create_channel()
        .await
        .map_err(|e| TopologyError::Broker {
            kind: "channel",
            name: String::new(),
            reason: e.to_string(),
        })
}

fn classify(kind: &'static str, name: &str, e: lapin::Error) -> TopologyError {
    let reason = e.to_string();
    if reason.contains("PRECONDITION_FAILED") || reason.contains("inequivalent") {
        TopologyError::Clash {
            kind,
            name: name.into(),
            reason,
        }
    } else {
        TopologyError::Broker {
            kind,
            name: name.into(),
            reason,
        }
    }
}

async fn exchange(
    ch: &Channel,
    name: &str,
    kind: ExchangeKind,
    args: FieldTable,
) -> Result<(), TopologyError> {
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    ch.exchange_declare(name.into(), kind, opts, args)
        .await
        .map_err(|e| classify("exchange", name, e))
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), TopologyError> {
    ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args)
        .await
        .map(|_| ())
        .map_err(|e| classify("queue", name, e))
}

async fn bind(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) -> Result<(), TopologyError> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    )
    .await
    .map_err(|e| classify("binding of", queue, e))
}

/// Messages ready in `queue` (a passive declare: it never creates the queue).
pub async fn message_count(ch: &Channel, queue: &str) -> lapin::Result<u32> {
    let opts = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    Ok(ch
        .queue_declare(queue.into(), opts, FieldTable::default())
        .await?
        .message_count())
}
