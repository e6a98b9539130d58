//! `wxcourier demo`: the whole flow on this machine, with the simulator in-process.

use std::num::NonZeroU32;
use std::process::ExitCode;
use std::time::Duration;

use lapin::options::QueuePurgeOptions;
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::broker::tap::ResultsTap;
use crate::broker::{self, JOBS_EXCHANGE, Publisher, job_queue, topology};
use crate::clock::{Clock, SystemClock};
use crate::config::{AppSettings, NonZeroSpan, Settings};
use crate::kinds::Kind;
use crate::outcome::PreferenceStatus;
use crate::quiet_hours::{QuietWindow, Zone};
use crate::sim::{
    Answer, CallbackTarget, DEFAULT_APPID, DEFAULT_SECRET, Decision, SimOptions, Simulator,
    UserEvent,
};
use crate::startup::Application;
use crate::types::{Secret, Span};
use time::format_description::well_known::Rfc3339;

const APP: &str = "demo";
/// An app in quiet hours for the whole demo (a window around now, in UTC): its job is held,
/// then cancelled.
const NIGHT_APP: &str = "demo_night";
const TEMPLATE: &str = "ngqIpbwh8bUfcSsECmogfXcV14J0tQlEpBO27izEYtY";
const ALICE: &str = "oia2TjuEGTNoeX76QEjQNrcURxG8";
const BOB: &str = "oBobXXXXXXXXXXXXXXXXXXXXXXX1";
/// A user who refuses the demo's template in a subscription popup: WeChat answers 43101.
const CAROL: &str = "oCarolXXXXXXXXXXXXXXXXXXXXX2";
/// A user who stops following the account.
const DAVE: &str = "oDaveXXXXXXXXXXXXXXXXXXXXXX3";
/// The user events the simulated WeChat pushes: Carol's popup answer and Dave's unfollow. The
/// demo app honours them: later jobs to Carol (that template) and to Dave are suppressed.
const USER_EVENTS: usize = 2;

#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// The broker to use.
    #[arg(
        long,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        env = "WXCOURIER_AMQP__URL"
    )]
    amqp_url: String,
}

/// The callback Token and EncodingAESKey the demo's simulated WeChat console shares with it.
const CALLBACK_TOKEN: &str = "demo-token";
const CALLBACK_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// How long a sample job's publish waits for the broker's confirm.
const CONFIRM_LIMIT: Duration = Duration::from_secs(10);
/// The demo stops reading results once none has come for this long.
const RESULTS_QUIET_LIMIT: Duration = Duration::from_secs(20);

/// How far ahead the demo's scheduled job is due.
const SCHEDULED_IN: Duration = Duration::from_secs(3);

/// A quiet window of whole minutes, in UTC, from a minute before `now` to two after it.
fn quiet_window_around(now: time::OffsetDateTime) -> String {
    let minute = |t: time::OffsetDateTime| format!("{:02}:{:02}", t.hour(), t.minute());
    let start = now - time::Duration::minutes(1);
    let end = now + time::Duration::minutes(3);
    format!("{}-{}", minute(start), minute(end))
}

fn demo_settings(amqp_url: &str, base_url: String, http_listen: String) -> Settings {
    let mut s = Settings::default();
    s.amqp.url = Secret::new(amqp_url);
    s.wechat.base_url = base_url;
    s.retry.initial_delay = NonZeroSpan::new(Duration::from_millis(500)).expect("above 0");
    s.retry.max_delay = Span(Duration::from_secs(2));
    s.retry.pause = NonZeroSpan::new(Duration::from_secs(1)).expect("above 0");
    s.retry.max_pause = Span(Duration::from_secs(2));
    s.retry.max_attempts = NonZeroU32::new(3).expect("above 0");
    s.worker.drain_timeout = Span(Duration::from_secs(5));
    s.http.listen = Some(http_listen);
    s.apps.insert(
        APP.into(),
        AppSettings {
            callback_token: Some(Secret::new(CALLBACK_TOKEN)),
            encoding_aes_key: Some(Secret::new(CALLBACK_AES_KEY)),
            kinds: Kind::ALL.into_iter().collect(),
            honor_preferences: true,
            ..AppSettings::new(DEFAULT_APPID, Secret::new(DEFAULT_SECRET))
        },
    );
    let window = quiet_window_around(SystemClock.now());
    s.apps.insert(
        NIGHT_APP.into(),
        AppSettings {
            quiet_hours: Some(QuietWindow::parse(&window).expect("a window of whole minutes")),
            timezone: Zone::named("UTC").expect("UTC is a zone"),
            ..AppSettings::new(DEFAULT_APPID, Secret::new(DEFAULT_SECRET))
        },
    );
    s
}

fn sample_jobs(run: u64, now: time::OffsetDateTime) -> Vec<(String, Value)> {
    let id = |n: &str| format!("demo-{run}-{n}");
    let job = |n: &str, to: &str, extra: Value| {
        let mut j = json!({
            "id": id(n), "touser": to, "template_id": TEMPLATE,
            "data": {"first.DATA": {"value": "Your order has shipped"}, "keyword1": {"value": n, "color": "#173177"}},
            "meta": {"sample": n}
        });
        if let (Some(obj), Value::Object(more)) = (j.as_object_mut(), extra) {
            obj.extend(more);
        }
        (id(n), j)
    };
    vec![
        job(
            "paid",
            ALICE,
            json!({"url": "https://example.com/orders/1"}),
        ),
        job("busy-once", BOB, json!({})),
        job("unknown-user", "oNotAnOpenID", json!({})),
        job("bad-color", ALICE, json!({"topcolor": "red"})),
        job(
            "too-late",
            ALICE,
            json!({"not_after": "2020-01-01T00:00:00Z"}),
        ),
        job("refused", CAROL, json!({})),
        job("unfollowed", DAVE, json!({})),
        job(
            "scheduled",
            ALICE,
            json!({"not_before": (now + SCHEDULED_IN).format(&Rfc3339).expect("a time")}),
        ),
        subscribe(
            id("notice"),
            Kind::Subscribe,
            json!({"page": "pages/order?id=1"}),
        ),
        subscribe(
            id("mini"),
            Kind::MiniprogramSubscribe,
            json!({"miniprogram_state": "formal", "lang": "en_US"}),
        ),
    ]
}

/// A subscription message of `kind`, its data typed as WeChat wants it.
fn subscribe(id: String, kind: Kind, extra: Value) -> (String, Value) {
    let mut j = json!({
        "id": id, "kind": kind, "touser": ALICE, "template_id": TEMPLATE,
        "data": {
            "thing1": {"value": "Order shipped"},
            "character_string2": {"value": "SF1234567890"},
            "time3": {"value": "2026-11-28 15:01"}
        },
        "meta": {"sample": kind}
    });
    if let (Some(obj), Value::Object(more)) = (j.as_object_mut(), extra) {
        obj.extend(more);
    }
    (id, j)
}

pub(crate) async fn run(args: DemoArgs) -> ExitCode {
    let sim = match Simulator::start("127.0.0.1:0", SimOptions::default()).await {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("wxcourier demo: cannot start the simulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    let http_listen = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())
    {
        Ok(addr) => addr.to_string(),
        Err(e) => {
            eprintln!("wxcourier demo: cannot find a free local port: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = demo_settings(&args.amqp_url, sim.base_url(), http_listen.clone());
    let conn = match broker::connect(&settings.amqp, "wxcourier demo").await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "wxcourier demo: RabbitMQ is not reachable ({e}): start it with `rabbitmq-server -detached` \
                 (or `scripts/services.sh`), then run the demo again."
            );
            return ExitCode::FAILURE;
        }
    };
    println!("simulated WeChat API on {}", sim.base_url());
    let schedule = crate::retry::Schedule::new(&settings.retry);
    if let Err(e) =
        topology::declare_all(&conn, &[APP.into(), NIGHT_APP.into()], schedule.tiers()).await
    {
        eprintln!("wxcourier demo: {e}");
        return ExitCode::FAILURE;
    }
    // Leftovers of an interrupted earlier demo would only confuse this one.
    if let Ok(ch) = conn.create_channel().await {
        for app in [APP, NIGHT_APP] {
            let _ = ch
                .queue_purge(job_queue(app).as_str().into(), QueuePurgeOptions::default())
                .await;
        }
    }
    let mut tap =
        match ResultsTap::open_keys(&conn, &[&format!("*.{APP}"), &format!("*.{NIGHT_APP}")]).await
        {
            Ok(t) => t,
            Err(e) => {
                eprintln!("wxcourier demo: cannot subscribe to results: {e}");
                return ExitCode::FAILURE;
            }
        };
    let app = match Application::build(settings.clone()) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("wxcourier demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.run(stop.clone()));

    // The simulated WeChat pushes delivery reports to the worker's callback, in safe mode.
    sim.set_callback(
        DEFAULT_APPID,
        Some(CallbackTarget {
            url: format!("http://{http_listen}/wechat/callback/{APP}"),
            token: CALLBACK_TOKEN.into(),
            aes_key: Some(CALLBACK_AES_KEY.into()),
        }),
    );
    // WeChat answers "system busy" once for Bob, so that job is retried through the broker.
    sim.script(BOB, vec![Answer::Code(-1)]);
    // Carol refuses the template in a subscription popup: WeChat tells the callback (a
    // preference report) and answers 43101 to the send that follows. Dave unfollows.
    let carol_refuses = UserEvent::SubscribeMsgPopupEvent {
        templates: vec![Decision {
            template_id: TEMPLATE.into(),
            status: PreferenceStatus::Reject,
            scene: Some(2),
        }],
    };
    for (user, event) in [(CAROL, carol_refuses), (DAVE, UserEvent::Unsubscribe)] {
        if let Err(e) = sim.push_user_event(DEFAULT_APPID, user, event) {
            eprintln!("wxcourier demo: the simulator cannot push a user event: {e}");
            return ExitCode::FAILURE;
        }
    }
    // The jobs to Carol and Dave must find their gates set: wait for both reports, which go
    // out only after the gate is changed.
    let mut results = Results::default();
    results.read(&mut tap, 0, 0, USER_EVENTS, 0).await;
    let run_id = SystemClock.now_ms();
    let jobs = sample_jobs(run_id, SystemClock.now());
    let night = format!("demo-{run_id}-night");
    let Ok(publisher) = Publisher::open(&conn, CONFIRM_LIMIT).await else {
        eprintln!("wxcourier demo: cannot open a publishing channel");
        return ExitCode::FAILURE;
    };
    let publish_to = |app: &'static str, id: String, body: Vec<u8>| {
        let publisher = publisher.clone();
        async move {
            publisher
                .publish_job(app, &id, &body, FieldTable::default())
                .await
        }
    };
    let publish = |id: String, body: Vec<u8>| publish_to(APP, id, body);
    println!(
        "publishing {} sample jobs to {JOBS_EXCHANGE} (routing key {APP}), one due in {}s",
        jobs.len() + 2,
        SCHEDULED_IN.as_secs()
    );
    // A job for the app in quiet hours: held in the broker until they end, or until the cancel
    // below ends it.
    let night_job = json!({
        "id": night, "touser": ALICE, "template_id": TEMPLATE,
        "data": {"keyword1": {"value": "sent in the morning"}}, "meta": {"sample": "night"}
    });
    if publish_to(
        NIGHT_APP,
        night.clone(),
        serde_json::to_vec(&night_job).expect("json"),
    )
    .await
    .is_err()
    {
        eprintln!("wxcourier demo: the broker did not confirm a sample job");
        return ExitCode::FAILURE;
    }
    for (id, job) in &jobs {
        if publish(id.clone(), serde_json::to_vec(job).expect("json"))
            .await
            .is_err()
        {
            eprintln!("wxcourier demo: the broker did not confirm a sample job");
            return ExitCode::FAILURE;
        }
    }
    let _ = publish("not-json".into(), b"this is not JSON".to_vec()).await;
    results
        .read(&mut tap, jobs.len() + 1, 0, USER_EVENTS, 0)
        .await;
    // The night job is still held; cancelling it ends it without a WeChat call.
    println!("cancelling {night}, held by {NIGHT_APP}'s quiet hours");
    let cancel = json!({"kind": "cancel", "id": night});
    let _ = publish_to(
        NIGHT_APP,
        format!("cancel-{night}"),
        serde_json::to_vec(&cancel).expect("json"),
    )
    .await;
    results
        .read(&mut tap, jobs.len() + 2, 0, USER_EVENTS, 1)
        .await;
    // The same id again after it was sent: a duplicate, not a second message.
    let _ = publish(
        jobs[0].0.clone(),
        serde_json::to_vec(&jobs[0].1).expect("json"),
    )
    .await;
    // WeChat reports what became of every message it accepted, whatever its kind.
    let accepted = || {
        sim.sends()
            .iter()
            .filter(|s| s.errcode == 0 && !s.duplicate)
            .count()
    };
    results
        .read(&mut tap, jobs.len() + 3, accepted(), USER_EVENTS, 1)
        .await;

    stop.cancel();
    let _ = worker.await;
    let accepted = accepted();
    sim.stop();
    let _ = conn.close(200, "demo done".into()).await;

    println!("\noutcomes on wxcourier.results:");
    print_table(
        &results.sends,
        &[
            "id",
            "message_kind",
            "status",
            "reason",
            "attempts",
            "msgid",
            "duplicate",
            "error",
        ],
    );
    println!("\nanswers to cancels (routing key cancel.APP):");
    print_table(&results.cancels, &["app", "id", "status"]);
    println!("\ndelivery reports WeChat pushed to /wechat/callback/{APP}:");
    print_table(
        &results.reports,
        &["id", "status", "msgid", "wechat_status", "template_id"],
    );
    println!("\nusers' choices WeChat pushed (routing keys preference.{APP}, follow.{APP}):");
    print_table(
        &results.users,
        &["kind", "openid", "status", "template_id", "event", "scene"],
    );
    println!(
        "\nthe simulator accepted {accepted} message(s); rejected jobs are kept in wxcourier.dead"
    );
    if results.sends.len() == jobs.len() + 3
        && results.reports.len() == accepted
        && results.users.len() == USER_EVENTS
        && results.cancels.len() == 1
    {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "wxcourier demo: expected {} outcomes, {accepted} delivery reports, {USER_EVENTS} \
             preference or follow reports and 1 answer to a cancel, got {}, {}, {} and {}",
            jobs.len() + 3,
            results.sends.len(),
            results.reports.len(),
            results.users.len(),
            results.cancels.len()
        );
        ExitCode::FAILURE
    }
}

/// What came out on the results exchange, by kind.
#[derive(Default)]
struct Results {
    sends: Vec<Value>,
    reports: Vec<Value>,
    /// Preference and follow reports.
    users: Vec<Value>,
    /// Answers to cancels.
    cancels: Vec<Value>,
}

impl Results {
    /// Reads until there are `sends` outcomes, `reports` delivery reports, `users`
    /// preference or follow reports and `cancels` answers to cancels, or nothing came for
    /// [`RESULTS_QUIET_LIMIT`].
    async fn read(
        &mut self,
        tap: &mut ResultsTap,
        sends: usize,
        reports: usize,
        users: usize,
        cancels: usize,
    ) {
        while self.sends.len() < sends
            || self.reports.len() < reports
            || self.users.len() < users
            || self.cancels.len() < cancels
        {
            let Some(v) = tap.next(RESULTS_QUIET_LIMIT).await else {
                return;
            };
            match v["kind"].as_str() {
                Some("delivery") => self.reports.push(v),
                Some("preference" | "follow") => self.users.push(v),
                Some("cancel") => self.cancels.push(v),
                _ => self.sends.push(v),
            }
        }
    }
}

fn print_table(rows: &[Value], columns: &[&str]) {
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| text(&r[*c])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<String>| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        println!("  {}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in cells {
        line(row);
    }
}
