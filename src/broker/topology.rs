//! Declares every exchange and queue, idempotently, and explains a declaration that clashes
//! with what already exists.
//!
//! Every queue a consumer takes from has an explicit delivery limit, on RabbitMQ 3.x and 4.x
//! alike: a job queue dead-letters (at least once) to `wxcourier.dead` past it, so the broker
//! never silently drops a job (RabbitMQ 4.x's quorum default is to drop after 20).

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};

use super::headers::HEADER_DELAY_TIER;
use super::names::{
    DEAD_QUEUE, JOBS_EXCHANGE, RESULTS_EXCHANGE, RESULTS_UNROUTED, RETRY_EXCHANGE, UNROUTED,
    job_queue,
};

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
pub(crate) fn delay_queue(tier: Duration) -> String {
    format!("{RETRY_EXCHANGE}.{}", tier_label(tier))
}

/// The header value that routes a retry copy to its tier.
pub(crate) fn tier_label(tier: Duration) -> String {
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

/// Deliveries of one job before the broker gives up on it and dead-letters it to
/// `wxcourier.dead`. The worker never requeues in a loop (every "not now" is a fresh retry
/// copy), so only crashes, lost connections and unpublishable outcomes count here; 20 is
/// RabbitMQ 4.x's own default, now explicit and the same on 3.x.
pub const JOB_DELIVERY_LIMIT: i64 = 20;

/// `wxcourier.dead` and `wxcourier.unrouted` are read by `dead list`, which puts messages
/// back: on RabbitMQ 4.x every such return counts, and these queues have nowhere further to
/// dead-letter to, so their limit is as high as the broker takes.
const SIDE_QUEUE_DELIVERY_LIMIT: i64 = i32::MAX as i64;

/// A job queue's arguments: quorum, the delivery limit, and an at-least-once dead-letter
/// route through the default exchange to `wxcourier.dead` (at-least-once requires
/// `reject-publish` overflow; there is no length limit, so it never refuses a job).
pub(crate) fn job_queue_args() -> FieldTable {
    table(&[
        quorum(),
        (
            "x-delivery-limit",
            AMQPValue::LongLongInt(JOB_DELIVERY_LIMIT),
        ),
        ("x-dead-letter-exchange", string("")),
        ("x-dead-letter-routing-key", string(DEAD_QUEUE)),
        ("x-dead-letter-strategy", string("at-least-once")),
        ("x-overflow", string("reject-publish")),
    ])
}

fn side_queue_args() -> FieldTable {
    table(&[
        quorum(),
        (
            "x-delivery-limit",
            AMQPValue::LongLongInt(SIDE_QUEUE_DELIVERY_LIMIT),
        ),
    ])
}

/// A queue made by an older version, before delivery limits: it keeps working, but on
/// RabbitMQ 4.x the broker may drop a job redelivered 20 times instead of dead-lettering it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyQueue(pub String);

impl std::fmt::Display for LegacyQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "queue {} was declared by an older wxcourier without a delivery limit and dead-letter \
             route (see \"Upgrading queues\" in docs/operations.md)",
            self.0
        )
    }
}

/// Declares the base exchanges that producers need (`send` uses this alone).
pub async fn declare_exchanges(conn: &Connection) -> Result<Vec<LegacyQueue>, TopologyError> {
    let mut legacy = Vec::new();
    let ch = fresh_channel(conn).await?;
    exchange(&ch, UNROUTED, ExchangeKind::Fanout, FieldTable::default()).await?;
    legacy.extend(limited_queue(conn, UNROUTED, side_queue_args()).await?);
    let ch = fresh_channel(conn).await?;
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
    Ok(legacy)
}

/// Declares everything the worker uses: the base exchanges, one quorum queue per app, the
/// dead-letter queue and one delay queue per retry tier.
/// Returns the queues an older version declared without delivery limits.
pub async fn declare_all(
    conn: &Connection,
    apps: &[String],
    tiers: &[Duration],
) -> Result<Vec<LegacyQueue>, TopologyError> {
    let mut legacy = declare_exchanges(conn).await?;
    // A channel that hits a clash is closed by the broker, so each step gets a fresh one.
    legacy.extend(limited_queue(conn, DEAD_QUEUE, side_queue_args()).await?);
    legacy.extend(app_queues(conn, apps).await?);
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
    Ok(legacy)
}

/// Most results `wxcourier.results.unrouted` keeps; past it the oldest are dropped first. A
/// policy's `max-length` can lower it (the broker applies the lower of the two).
pub const KEPT_RESULTS_MAX: i64 = 100_000;

/// The fanout exchange and the bounded queue that keep results no queue takes
/// (`results.keep_unrouted`). The policy that makes the exchange `wxcourier.results`'
/// alternate exchange is set apart (`broker::results_policy`): an exchange's arguments cannot
/// change once declared, and declaring it again with new ones fails.
pub async fn declare_kept_results(conn: &Connection) -> Result<(), TopologyError> {
    let ch = fresh_channel(conn).await?;
    exchange(
        &ch,
        RESULTS_UNROUTED,
        ExchangeKind::Fanout,
        FieldTable::default(),
    )
    .await?;
    // Drop-head: a full queue keeps the newest results, and never refuses a publish (which
    // would nack the outcome and hand its job back).
    let args = table(&[
        quorum(),
        ("x-max-length", AMQPValue::LongLongInt(KEPT_RESULTS_MAX)),
        ("x-overflow", string("drop-head")),
        (
            "x-delivery-limit",
            AMQPValue::LongLongInt(SIDE_QUEUE_DELIVERY_LIMIT),
        ),
    ]);
    queue(&ch, RESULTS_UNROUTED, args).await?;
    bind(
        &ch,
        RESULTS_UNROUTED,
        RESULTS_UNROUTED,
        "",
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(())
}

/// The queues of `apps` (and the dead and unrouted queues) that an older version declared
/// without delivery limits, found without creating anything: a queue that does not exist yet
/// is skipped (`run` will declare it with its limits).
pub async fn legacy_queues(
    conn: &Connection,
    apps: &[String],
) -> Result<Vec<LegacyQueue>, TopologyError> {
    let mut wanted = vec![
        (DEAD_QUEUE.to_owned(), side_queue_args()),
        (UNROUTED.to_owned(), side_queue_args()),
    ];
    wanted.extend(apps.iter().map(|app| (job_queue(app), job_queue_args())));
    let mut legacy = Vec::new();
    for (name, args) in wanted {
        // A passive declare fails (and closes its channel) when the queue does not exist.
        let ch = fresh_channel(conn).await?;
        if message_count(&ch, &name).await.is_err() {
            continue;
        }
        // It exists: declaring it again with the same arguments changes nothing.
        legacy.extend(limited_queue(conn, &name, args).await?);
    }
    Ok(legacy)
}

/// Channels that declare apps' queues side by side.
const DECLARE_LANES: usize = 16;

/// Apps whose declarations one lane keeps in flight at once.
const DECLARE_DEPTH: usize = 8;

/// Every app's job queue and its binding, on [`DECLARE_LANES`] channels kept open for the
/// whole run, each with up to [`DECLARE_DEPTH`] apps' declarations pipelined: start-up grows
/// with the number of apps, and a channel per app (or one at a time) spends most of it
/// waiting for round trips. `send` declares its app's queue through this too, so a job sent
/// before any worker ran waits in the queue the worker will consume.
pub(crate) async fn app_queues(
    conn: &Connection,
    apps: &[String],
) -> Result<Vec<LegacyQueue>, TopologyError> {
    // Loops rather than closures: a closure over borrowed futures here makes the worker's
    // session future not `Send`.
    let mut lanes = Vec::with_capacity(DECLARE_LANES);
    for lane in apps.chunks(apps.len().div_ceil(DECLARE_LANES).max(1)) {
        lanes.push(lane_queues(conn, lane));
    }
    let declared = futures_util::future::try_join_all(lanes).await?;
    Ok(declared.into_iter().flatten().collect())
}

/// One lane: declares `apps` on one channel. A declaration the broker refuses closes the
/// channel, and with it the others in flight there: those apps are declared again one by
/// one, where a queue an older version made is told apart from a real clash.
async fn lane_queues(
    conn: &Connection,
    apps: &[String],
) -> Result<Vec<LegacyQueue>, TopologyError> {
    let mut legacy = Vec::new();
    let mut ch = fresh_channel(conn).await?;
    for batch in apps.chunks(DECLARE_DEPTH) {
        let mut pipelined = Vec::with_capacity(batch.len());
        for app in batch {
            pipelined.push(app_queue_on(&ch, app));
        }
        let fast = futures_util::future::join_all(pipelined).await;
        if fast.iter().all(Result::is_ok) {
            continue;
        }
        for app in batch {
            legacy.extend(app_queue(conn, app).await?);
        }
        ch = fresh_channel(conn).await?;
    }
    let _ = ch.close(200, "declared".into()).await;
    Ok(legacy)
}

/// One app's job queue, declared with its arguments, and its binding, on `ch`.
async fn app_queue_on(ch: &Channel, app: &str) -> Result<(), TopologyError> {
    let name = job_queue(app);
    queue(ch, &name, job_queue_args()).await?;
    bind(ch, &name, JOBS_EXCHANGE, app, FieldTable::default()).await
}

/// One app's job queue and its binding, each on a channel of its own, telling a queue an
/// older version made apart from a real clash.
async fn app_queue(conn: &Connection, app: &str) -> Result<Option<LegacyQueue>, TopologyError> {
    let name = job_queue(app);
    let legacy = limited_queue(conn, &name, job_queue_args()).await?;
    let ch = fresh_channel(conn).await?;
    bind(&ch, &name, JOBS_EXCHANGE, app, FieldTable::default()).await?;
    let _ = ch.close(200, "declared".into()).await;
    Ok(legacy)
}

/// Declares a quorum queue with `args`. A queue that an older version declared as a plain
/// quorum queue (a clash on the new arguments only) is kept as it is and reported; any other
/// clash is an error.
pub(crate) async fn limited_queue(
    conn: &Connection,
    name: &str,
    args: FieldTable,
) -> Result<Option<LegacyQueue>, TopologyError> {
    let ch = fresh_channel(conn).await?;
    match queue(&ch, name, args).await {
        Ok(()) => Ok(None),
        Err(clash @ TopologyError::Clash { .. }) => {
            let ch = fresh_channel(conn).await?;
            match queue(&ch, name, table(&[quorum()])).await {
                Ok(()) => Ok(Some(LegacyQueue(name.to_owned()))),
                Err(_) => Err(clash),
            }
        }
        Err(other) => Err(other),
    }
}

/// How long one declaration may take before the session gives up and reconnects.
const DECLARE_LIMIT: Duration = Duration::from_secs(30);

/// Runs one broker call under [`DECLARE_LIMIT`].
pub(crate) async fn limited<T>(
    kind: &'static str,
    name: &str,
    call: impl Future<Output = Result<T, TopologyError>>,
) -> Result<T, TopologyError> {
    tokio::time::timeout(DECLARE_LIMIT, call)
        .await
        .unwrap_or_else(|_| {
            Err(TopologyError::Broker {
                kind,
                name: name.into(),
                reason: format!("no answer within {}s", DECLARE_LIMIT.as_secs()),
            })
        })
}

pub(crate) async fn fresh_channel(conn: &Connection) -> Result<Channel, TopologyError> {
    limited("channel", "", async {
        conn.create_channel()
            .await
            .map_err(|e| TopologyError::Broker {
                kind: "channel",
                name: String::new(),
                reason: e.to_string(),
            })
    })
    .await
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
    limited("exchange", name, async {
        ch.exchange_declare(name.into(), kind, opts, args)
            .await
            .map_err(|e| classify("exchange", name, e))
    })
    .await
}

async fn queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), TopologyError> {
    limited("queue", name, async {
        ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args)
            .await
            .map(|_| ())
            .map_err(|e| classify("queue", name, e))
    })
    .await
}

async fn bind(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) -> Result<(), TopologyError> {
    limited("binding of", queue, async {
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            args,
        )
        .await
        .map_err(|e| classify("binding of", queue, e))
    })
    .await
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
