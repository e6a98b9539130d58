//! `wxcourier dead list|replay`: look at rejected (or unrouted) jobs and, once the cause is
//! fixed, publish chosen ones to the jobs exchange again.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{BasicProperties, Channel, Connection};

use super::shared::{ConfigArg, bad_config};
use crate::broker::publish::{Publication, Unroutable};
use crate::broker::{
    self, BrokerError, DEAD_QUEUE, HEADER_APP, HEADER_ERROR, JOBS_EXCHANGE, Publisher, UNROUTED,
    headers, topology,
};

#[derive(clap::Args)]
pub(crate) struct DeadArgs {
    #[command(subcommand)]
    command: DeadCommand,
}

#[derive(clap::Subcommand)]
enum DeadCommand {
    /// Shows what is waiting and why, without taking anything out.
    List {
        #[command(flatten)]
        source: Source,
    },
    /// Publishes the chosen messages to the jobs exchange again and removes them.
    Replay {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        filter: Filter,
    },
}

#[derive(clap::Args)]
struct Source {
    #[command(flatten)]
    config: ConfigArg,
    /// Which queue: `dead` (rejected jobs) or `unrouted` (jobs for unknown apps).
    #[arg(long, default_value = "dead", value_parser = ["dead", "unrouted"])]
    from: String,
    /// Most messages to look at.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

impl Source {
    fn queue(&self) -> &'static str {
        if self.from == "unrouted" {
            UNROUTED
        } else {
            DEAD_QUEUE
        }
    }
}

#[derive(clap::Args)]
struct Filter {
    /// Only messages for this app.
    #[arg(long)]
    app: Option<String>,
    /// Only messages whose job id contains this.
    #[arg(long)]
    id: Option<String>,
    /// Only messages whose rejection reason contains this.
    #[arg(long)]
    error: Option<String>,
    /// Every message (required when no other filter is given).
    #[arg(long)]
    all: bool,
}

/// Longest wait for any one broker step. A stalled broker then ends the command with an error
/// instead of a hang; every message not yet acked goes back to its queue when the connection
/// closes, so giving up loses nothing.
const STEP_LIMIT: Duration = Duration::from_secs(30);

/// Runs one broker step under [`STEP_LIMIT`], naming it in the error.
async fn step<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, BrokerError> {
    match tokio::time::timeout(STEP_LIMIT, fut).await {
        Ok(result) => result.map_err(|e| BrokerError::channel(what, e)),
        Err(_) => Err(BrokerError::NoAnswer {
            op: what.into(),
            after: STEP_LIMIT,
        }),
    }
}

/// One waiting message as the commands show it.
struct Entry {
    delivery: Delivery,
    app: String,
    id: String,
    error: String,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.app.is_none() && self.id.is_none() && self.error.is_none()
    }

    fn matches(&self, e: &Entry) -> bool {
        self.app.as_ref().is_none_or(|a| &e.app == a)
            && self.id.as_ref().is_none_or(|i| e.id.contains(i.as_str()))
            && self
                .error
                .as_ref()
                .is_none_or(|x| e.error.contains(x.as_str()))
    }
}

pub(crate) async fn run(args: DeadArgs) -> ExitCode {
    let source = match &args.command {
        DeadCommand::List { source } | DeadCommand::Replay { source, .. } => source,
    };
    if let DeadCommand::Replay { filter, .. } = &args.command
        && filter.is_empty()
        && !filter.all
    {
        eprintln!(
            "wxcourier dead replay: choose messages with --app, --id or --error, or pass --all"
        );
        return ExitCode::from(super::shared::EXIT_USAGE);
    }
    let settings = match source.config.load_for_broker() {
        Ok(s) => s,
        Err(e) => return bad_config(&e),
    };
    let configured: Vec<String> = settings.apps.keys().cloned().collect();
    let conn = match broker::connect(&settings.amqp, "wxcourier dead").await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wxcourier dead: {e}; check amqp.url and that RabbitMQ is running");
            return ExitCode::FAILURE;
        }
    };
    let result = match &args.command {
        DeadCommand::List { source } => list(&conn, source, &configured).await,
        DeadCommand::Replay { source, filter } => replay(&conn, source, filter, &configured).await,
    };
    let _ = step("closing the connection", conn.close(200, "done".into())).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxcourier dead: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Takes up to `limit` messages without acking them: closing the channel puts back every one
/// not acked, in order.
async fn take(
    ch: &Channel,
    queue: &str,
    limit: usize,
    configured: &[String],
) -> Result<Vec<Entry>, BrokerError> {
    let mut out = Vec::new();
    while out.len() < limit {
        let got = step(
            &format!("cannot read {queue}"),
            ch.basic_get(queue.into(), BasicGetOptions::default()),
        )
        .await?;
        let Some(msg) = got else { break };
        let d = msg.delivery;
        let (app, error) = why_dead(&d.properties, &d.routing_key.to_string(), configured);
        let id = d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        out.push(Entry {
            delivery: d,
            app,
            id,
            error,
        });
    }
    Ok(out)
}

/// The app a dead or unrouted message came in for, and why it is here: wxcourier's own
/// reason for a rejected job, the broker's for a job it dead-lettered (over its delivery
/// limit), or for an unrouted one: no queue yet (the app is `configured`, but no worker had
/// declared its queue when the job was published) or no such app.
fn why_dead(props: &BasicProperties, routing_key: &str, configured: &[String]) -> (String, String) {
    if let Some(error) = headers::text(props, HEADER_ERROR) {
        let app = headers::text(props, HEADER_APP).unwrap_or_else(|| routing_key.to_owned());
        return (app, error);
    }
    if let Some(reason) = headers::text(props, "x-first-death-reason") {
        let queue = headers::text(props, "x-first-death-queue").unwrap_or_default();
        let app = queue
            .strip_prefix(&format!("{JOBS_EXCHANGE}."))
            .unwrap_or(routing_key)
            .to_owned();
        let error = match reason.as_str() {
            "delivery_limit" => format!(
                "the broker gave up on it after {} deliveries (delivery limit of {queue}): \
                 the worker crashed or lost its connection while holding it, or could not \
                 publish its outcome",
                topology::JOB_DELIVERY_LIMIT
            ),
            other => format!("dead-lettered by the broker from {queue} ({other})"),
        };
        return (app, error);
    }
    let why = if configured.iter().any(|a| a == routing_key) {
        "no queue yet: no worker had declared the app's queue when it was published; \
         replay it once `wxcourier run` has started"
    } else {
        "no such app: the config names no app by this routing key"
    };
    (routing_key.to_owned(), why.into())
}

async fn list(
    conn: &Connection,
    source: &Source,
    configured: &[String],
) -> Result<(), BrokerError> {
    let ch = step("opening a channel", conn.create_channel()).await?;
    let entries = take(&ch, source.queue(), source.limit, configured).await?;
    println!("{} message(s) in {}", entries.len(), source.queue());
    for (n, e) in entries.iter().enumerate() {
        let id = if e.id.is_empty() { "-" } else { e.id.as_str() };
        println!(
            "{:>4}  app={}  id={}  bytes={}  why: {}",
            n + 1,
            e.app,
            id,
            e.delivery.data.len(),
            e.error
        );
    }
    let _ = step("closing the channel", ch.close(200, "listed".into())).await;
    Ok(())
}

async fn replay(
    conn: &Connection,
    source: &Source,
    filter: &Filter,
    configured: &[String],
) -> Result<(), BrokerError> {
    let ch = step("opening a channel", conn.create_channel()).await?;
    let publisher = step("opening a publisher", Publisher::open(conn, STEP_LIMIT)).await?;
    let entries = take(&ch, source.queue(), source.limit, configured).await?;
    let mut replayed = 0;
    for e in entries.iter().filter(|e| filter.matches(e)) {
        let headers = headers::replayed(e.delivery.properties.headers().as_ref());
        publisher
            .publish(Publication {
                exchange: JOBS_EXCHANGE,
                routing_key: &e.app,
                body: &e.delivery.data,
                properties: e.delivery.properties.clone().with_headers(headers),
                unroutable: Unroutable::Unasked,
            })
            .await
            .map_err(|err| {
                BrokerError::channel(
                    format!("replaying {} stopped", e.id),
                    format!("{err}; the rest stays in {}", source.queue()),
                )
            })?;
        // Removed only once its copy is confirmed in the jobs exchange.
        step(
            &format!("removing {} after replaying it", e.id),
            e.delivery.ack(BasicAckOptions::default()),
        )
        .await?;
        replayed += 1;
    }
    let _ = step("closing the channel", ch.close(200, "replayed".into())).await;
    println!(
        "replayed {replayed} of {} message(s) from {} to {JOBS_EXCHANGE}",
        entries.len(),
        source.queue()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable, LongString};

    use super::*;

    fn props(entries: &[(&str, &str)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), AMQPValue::LongString(LongString::from(*v)));
        }
        BasicProperties::default().with_headers(t)
    }

    #[test]
    fn each_way_into_the_dead_queue_explains_itself() {
        let rejected = props(&[(HEADER_ERROR, "touser: is required"), (HEADER_APP, "shop")]);
        assert_eq!(
            why_dead(&rejected, "wxcourier.dead", &[]),
            ("shop".into(), "touser: is required".into())
        );
        let over_limit = props(&[
            ("x-first-death-reason", "delivery_limit"),
            ("x-first-death-queue", "wxcourier.jobs.shop"),
        ]);
        let (app, why) = why_dead(&over_limit, "wxcourier.dead", &[]);
        assert_eq!(app, "shop");
        assert!(why.contains("after 20 deliveries"), "{why}");
        let unrouted = props(&[]);
        let (app, why) = why_dead(&unrouted, "ghost", &["shop".into()]);
        assert_eq!(app, "ghost");
        assert!(why.starts_with("no such app"), "{why}");
        let (app, why) = why_dead(&unrouted, "shop", &["shop".into()]);
        assert_eq!(app, "shop");
        assert!(why.starts_with("no queue yet"), "{why}");
    }
}
