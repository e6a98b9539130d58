//! An outcome nobody takes is never silent: counted by app and status and warned about once,
//! its job acked; kept in `wxcourier.results.unrouted` with `results.keep_unrouted`; and `check`
//! names the routing keys that reach no queue. Each test runs in a vhost of its own, so no
//! other test's (or the benchmark's) binding on `wxcourier.results` takes its results, and its
//! policy touches no other test.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::{Binary, OutputWithin, signal};
use common::*;
use lapin::Connection;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use wxcourier::broker::tap::ResultsTap;
use wxcourier::broker::{self, Publisher, RESULTS_UNROUTED, job_queue, topology};
use wxcourier::config::Settings;
use wxcourier::sim::{Answer, SimOptions, Simulator};
use wxcourier::startup::Application;
use wxcourier::types::Secret;

/// The policy `results.keep_unrouted` sets.
const POLICY: &str = "wxcourier-results-unrouted";

/// A vhost of the test broker, made for one test and deleted when dropped.
struct Vhost {
    name: String,
    /// The management API's root, without credentials.
    api: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

impl Vhost {
    async fn create(prefix: &str) -> Self {
        let name = unique_app(prefix);
        let mut url = reqwest::Url::parse(&management_url()).expect("TEST_MANAGEMENT_URL");
        let (user, password) = (
            url.username().to_owned(),
            url.password().unwrap_or("").to_owned(),
        );
        url.set_username("").unwrap();
        url.set_password(None).unwrap();
        let vhost = Self {
            api: url.as_str().trim_end_matches('/').to_owned(),
            name,
            user,
            password,
            http: reqwest::Client::new(),
        };
        vhost
            .put(&format!("vhosts/{}", vhost.name), json!({}))
            .await;
        let everything = json!({"configure": ".*", "write": ".*", "read": ".*"});
        let grant = format!("permissions/{}/{}", vhost.name, vhost.user);
        vhost.put(&grant, everything).await;
        vhost
    }

    async fn put(&self, path: &str, body: Value) {
        let answer = self
            .http
            .put(format!("{}/api/{path}", self.api))
            .basic_auth(&self.user, Some(&self.password))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "PUT {path}: {answer:?}");
    }

    /// `api/KIND/VHOST/NAME` as JSON; `None` when it does not exist.
    async fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let answer = self
            .http
            .get(format!("{}/api/{kind}/{}/{name}", self.api, self.name))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .unwrap();
        match answer.status().as_u16() {
            404 => None,
            200 => Some(answer.json().await.unwrap()),
            other => panic!("GET {kind}/{name}: HTTP {other}"),
        }
    }

    /// The test broker's URL, on this vhost.
    fn amqp_url(&self) -> String {
        let base = amqp_url();
        let root = base.rfind('/').expect("an AMQP URL has a path");
        format!("{}/{}", &base[..root], self.name)
    }

    /// The test settings for `app`, on this vhost.
    fn settings(&self, app: &str, sim: &Simulator) -> Settings {
        let mut s = settings(app, sim);
        s.amqp.url = Secret::new(self.amqp_url());
        s
    }

    async fn connect(&self) -> Connection {
        let mut s = Settings::default();
        s.amqp.url = Secret::new(self.amqp_url());
        broker::connect(&s.amqp, "wxcourier test").await.unwrap()
    }

    /// Waits until `check` holds for what the API shows of `kind`/`name`, or panics.
    async fn wait_for(&self, kind: &str, name: &str, what: &str, check: impl Fn(&Value) -> bool) {
        let started = Instant::now();
        loop {
            if self.get(kind, name).await.is_some_and(|v| check(&v)) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Deleted however the test ends, a failed assertion included: on a thread of its own with a
/// runtime of its own, since a test's runtime cannot be blocked on from inside.
impl Drop for Vhost {
    fn drop(&mut self) {
        let request = self
            .http
            .delete(format!("{}/api/vhosts/{}", self.api, self.name))
            .basic_auth(&self.user, Some(&self.password));
        let deleting = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = runtime.block_on(request.send());
        });
        let _ = deleting.join();
    }
}

/// A worker process, killed if the test ends before it stopped it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The topology of `app` on `conn`, as a worker with `s` declares it, and a publisher.
async fn declared(conn: &Connection, app: &str, s: &Settings) -> Publisher {
    let schedule = wxcourier::retry::Schedule::new(&s.retry);
    topology::declare_all(conn, &[app.to_owned()], schedule.tiers())
        .await
        .unwrap();
    Publisher::open(conn, Duration::from_secs(5)).await.unwrap()
}

async fn publish(publisher: &Publisher, app: &str, id: &str, touser: &str) {
    let body = serde_json::to_vec(&job(id, touser)).unwrap();
    publisher
        .publish_job(app, id, &body, FieldTable::default())
        .await
        .expect("the broker confirms the job");
}

/// `/metrics` once it holds `line`, or panics with what it held.
async fn metrics_with(port: u16, line: &str) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        if let Ok(answer) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            text = answer.text().await.unwrap_or_default();
            if text.contains(line) {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{line} in\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outcome_no_queue_takes_is_counted_and_warned_once_and_its_job_acked() {
    let vhost = Vhost::create("unrouted").await;
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("unrouted");
    let conn = vhost.connect().await;
    let publisher = declared(&conn, &app, &vhost.settings(&app, &sim)).await;
    // The producer's consumer binds `sent.APP` only: every failed outcome reaches no queue.
    let mut sent = ResultsTap::open(&conn, &format!("sent.{app}"))
        .await
        .unwrap();
    let refused: Vec<String> = (1..=3).map(openid).collect();
    for user in &refused {
        sim.script(user, vec![Answer::Code(40003)]);
    }
    let port = free_port();
    let bin = Binary::new(
        &app,
        &sim.base_url(),
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n[log]\nformat = \"json\"\n"),
    );
    let mut worker = Running(
        bin.command("run")
            .env("WXCOURIER_AMQP__URL", vhost.amqp_url())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = worker.0.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::BufReader::new(stderr), &mut text).unwrap();
        text
    });
    for (i, user) in refused.iter().enumerate() {
        publish(&publisher, &app, &format!("{app}-failed-{i}"), user).await;
    }
    let sent_id = format!("{app}-sent");
    publish(&publisher, &app, &sent_id, &openid(9)).await;
    let outcome = sent
        .next(Duration::from_secs(20))
        .await
        .expect("the sent outcome reaches the queue bound to sent.APP");
    assert_eq!(outcome["id"], sent_id.as_str());

    let counted = format!("wxcourier_outcomes_unrouted_total{{app=\"{app}\",status=\"failed\"}} 3");
    let text = metrics_with(port, &counted).await;
    let finished = format!("wxcourier_jobs_total{{app=\"{app}\",status=\"failed\"}} 3");
    let text = match text.contains(&finished) {
        true => text,
        false => metrics_with(port, &finished).await,
    };
    assert!(
        text.contains("wxcourier_publish_failures_total 0"),
        "a returned outcome is a confirmed publish: {text}"
    );
    assert!(
        !text.contains(&format!(
            "wxcourier_outcomes_unrouted_total{{app=\"{app}\",status=\"sent\"}}"
        )),
        "a queue took the sent outcome: {text}"
    );
    signal(&worker.0, "TERM");
    assert!(worker.0.wait().unwrap().success());
    // Acked, never handed back: nothing is left in the queue once the worker is gone, and each
    // job reached WeChat once.
    assert_eq!(queue_len(&conn, &job_queue(&app)).await, 0);
    let sends = sim.sends();
    for user in &refused {
        let tries = sends.iter().filter(|s| &s.touser == user).count();
        assert_eq!(tries, 1, "{user} was tried once");
    }
    let log = log.join().unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("no queue takes these results"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning for three outcomes:\n{log}");
    assert!(
        !log.contains("returned us a message"),
        "no line per returned message:\n{log}"
    );
    assert!(
        warnings[0].contains(&format!("failed.{app}")),
        "{}",
        warnings[0]
    );
    drop(sent);
    let _ = conn.close(200, "done".into()).await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keep_unrouted_an_outcome_no_queue_takes_waits_in_the_kept_queue() {
    let vhost = Vhost::create("kept").await;
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("kept");
    let mut s = vhost.settings(&app, &sim);
    s.results.keep_unrouted = true;
    let conn = vhost.connect().await;
    let publisher = declared(&conn, &app, &s).await;
    let worker = Application::build(s.clone()).unwrap();
    let ctx = worker.pipeline.clone();
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    vhost
        .wait_for(
            "exchanges",
            "wxcourier.results",
            "the worker sets the policy",
            |e| e["policy"] == POLICY,
        )
        .await;
    vhost
        .wait_for(
            "queues",
            RESULTS_UNROUTED,
            "the kept queue is declared",
            |_| true,
        )
        .await;
    let queue = vhost.get("queues", RESULTS_UNROUTED).await.unwrap();
    assert_eq!(queue["arguments"]["x-max-length"], 100_000, "{queue}");
    assert_eq!(queue["arguments"]["x-overflow"], "drop-head", "{queue}");

    // No queue binds this app's outcomes at all.
    let id = format!("{app}-kept");
    publish(&publisher, &app, &id, &openid(1)).await;
    let ch = conn.create_channel().await.unwrap();
    let started = Instant::now();
    let kept = loop {
        let got = ch
            .basic_get(RESULTS_UNROUTED.into(), BasicGetOptions::default())
            .await
            .unwrap();
        if let Some(message) = got {
            let body: Value = serde_json::from_slice(&message.delivery.data).unwrap();
            message.ack(BasicAckOptions::default()).await.unwrap();
            if body["id"] == id.as_str() {
                break body;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the outcome is kept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(kept["status"], "sent");
    assert_eq!(kept["app"], app.as_str());
    assert!(
        !ctx.metrics
            .render()
            .contains(&format!("wxcourier_outcomes_unrouted_total{{app=\"{app}\"")),
        "kept, so never returned"
    );
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;

    // With the option off again, the worker removes its policy.
    let worker = Application::build(vhost.settings(&app, &sim)).unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    vhost
        .wait_for(
            "exchanges",
            "wxcourier.results",
            "the worker removes its policy",
            |e| e["policy"].as_str().is_none_or(|p| p != POLICY),
        )
        .await;
    assert!(vhost.get("policies", POLICY).await.is_none());
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), running).await;
    let _ = conn.close(200, "done".into()).await;
    sim.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_statuses_of_an_app_that_no_queue_takes() {
    let vhost = Vhost::create("bound").await;
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app("bound");
    let conn = vhost.connect().await;
    let _ = declared(&conn, &app, &vhost.settings(&app, &sim)).await;
    let sent = ResultsTap::open(&conn, &format!("sent.{app}"))
        .await
        .unwrap();
    let bin = Binary::new(&app, &sim.base_url(), "");
    let check = |keep: bool| {
        let out = bin
            .command("check")
            .env("WXCOURIER_AMQP__URL", vhost.amqp_url())
            .env("WXCOURIER_RESULTS__KEEP_UNROUTED", keep.to_string())
            .output_within(Duration::from_secs(60));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "warnings only:\n{text}");
        text
    };
    let text = check(false);
    let want = format!(
        "results: WARNING: app {app}: no queue takes failed.{app}, rejected.{app}, expired.{app}, \
         cancelled.{app}, cancel.{app}; these results are dropped"
    );
    assert!(text.contains(&want), "{want} in\n{text}");
    // Asked to keep them without the policy in force: said, with the command to run.
    let text = check(true);
    let command = format!("rabbitmqctl set_policy -p '{}'", vhost.name);
    assert!(
        text.contains("results.keep_unrouted is on, but no policy") && text.contains(&command),
        "{text}"
    );
    // Once a queue takes every status, so it says.
    let every = ResultsTap::open(&conn, &format!("*.{app}")).await.unwrap();
    let text = check(false);
    assert!(text.contains("results: ok"), "{text}");
    assert!(!text.contains("results: WARNING"), "{text}");
    drop((sent, every));
    let _ = conn.close(200, "done".into()).await;
    sim.stop();
}

/// The broker's returns name no publish, and lapin hands each to whichever confirm it resolves
/// next. Many results and retry-style copies in flight at once, some to a key a queue takes
/// and some to keys none does: each returned result must be told by its own key, once, and
/// each copy no queue took must fail (and only those), or a job would be acked with its
/// retry copy dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_are_told_apart_with_many_publishes_in_flight() {
    use lapin::options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions};
    use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    use wxcourier::broker::publish::{Landing, Publication, Unroutable};

    const ROUNDS: usize = 5;
    const EACH: usize = 120;
    let conn = connect().await;
    let ch = conn.create_channel().await.unwrap();
    let exchange = unique_app("returns");
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let queue = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        queue.name().clone(),
        exchange.as_str().into(),
        "taken".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let publisher = Publisher::open(&conn, Duration::from_secs(20))
        .await
        .unwrap();

    for round in 0..ROUNDS {
        let publishes = (0..EACH).map(|i| {
            let (publisher, exchange) = (&publisher, exchange.as_str());
            async move {
                // Thirds: a result no queue takes, a result the queue takes, and a copy that
                // must land, to the queue or (every other one) to nowhere.
                let (key, unroutable) = match i % 3 {
                    0 => (format!("lost.{round}.{i}"), Unroutable::Reported),
                    1 => ("taken".to_owned(), Unroutable::Reported),
                    _ if i % 2 == 0 => ("taken".to_owned(), Unroutable::Refused),
                    _ => (format!("dropped.{round}.{i}"), Unroutable::Refused),
                };
                let landed = publisher
                    .publish(Publication {
                        exchange,
                        routing_key: &key,
                        body: b"{}",
                        properties: lapin::BasicProperties::default(),
                        unroutable,
                    })
                    .await;
                (key, unroutable, landed)
            }
        });
        let mut returned = Vec::new();
        let mut expected = Vec::new();
        for (key, unroutable, landed) in futures_util::future::join_all(publishes).await {
            match unroutable {
                Unroutable::Refused if key == "taken" => {
                    assert_eq!(
                        landed.as_ref().ok(),
                        Some(&Landing::Taken),
                        "{key}: {landed:?}"
                    )
                }
                Unroutable::Refused => assert!(
                    matches!(landed, Err(wxcourier::broker::PublishError::Unroutable)),
                    "a copy no queue took must fail: {key}: {landed:?}"
                ),
                _ => {
                    if key != "taken" {
                        expected.push(key);
                    }
                    match landed {
                        Ok(Landing::Returned(key)) => returned.push(key),
                        Ok(Landing::Taken) => {}
                        Err(e) => panic!("a result must be confirmed: {e}"),
                    }
                }
            }
        }
        returned.sort();
        expected.sort();
        assert_eq!(
            returned, expected,
            "round {round}: each return once, by its own key"
        );
    }
    ch.queue_delete(queue.name().clone(), QueueDeleteOptions::default())
        .await
        .unwrap();
    ch.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await
        .unwrap();
}
