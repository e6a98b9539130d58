//! The WeChat callback receiver wired end to end, through the real broker: plain and safe-mode
//! reports tied to their jobs, repeats published once, the HTTP server's limits, and the whole
//! loop with the simulator pushing reports for real sends; the subscription events (sent
//! results, popup and change preferences, follows) the same way. The refusal matrix (mode,
//! signature, age, AppID, size, XML) is unit-tested over fakes in `src/callback/tests.rs`.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::schemas::CheckedTap;
use common::*;
use serde_json::{Value, json};
use wxcourier::config::{CallbackMode, Settings};
use wxcourier::outcome::PreferenceStatus;
use wxcourier::sim::push::{
    CallbackPush, CallbackTarget, event_xml, sent_event_xml, signed_request, user_event_xml,
};
use wxcourier::sim::{DEFAULT_APPID, Decision, Faults, UserEvent, UserEventError};
use wxcourier::types::{Secret, Span};

const TOKEN: &str = "cb-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

/// A receiver with the key set and no mode named: safe mode, the default with a key.
async fn spawn_receiver(prefix: &str) -> (TestApp, String) {
    spawn_receiver_with(prefix, None, None).await
}

/// A receiver in `mode` (None: the default), refusing timestamps further than `window` from
/// now (None: the default window).
async fn spawn_receiver_with(
    prefix: &str,
    mode: Option<CallbackMode>,
    window: Option<Span>,
) -> (TestApp, String) {
    spawn_receiver_tweaked(prefix, |s| {
        if let Some(window) = window {
            s.http.callback_max_age = window;
        }
        for app in s.apps.values_mut() {
            if mode == Some(CallbackMode::Plain) {
                app.encoding_aes_key = None;
            }
            app.callback_mode = mode;
        }
    })
    .await
}

/// A receiver with the callback Token and key set, then `tweak` applied to its settings.
async fn spawn_receiver_tweaked(
    prefix: &str,
    tweak: impl FnOnce(&mut Settings),
) -> (TestApp, String) {
    let port = free_port();
    let t = spawn_app(prefix, |s| {
        s.http.listen = Some(format!("127.0.0.1:{port}"));
        for app in s.apps.values_mut() {
            app.callback_token = Some(Secret::new(TOKEN));
            app.encoding_aes_key = Some(Secret::new(AES_KEY));
        }
        tweak(s);
    })
    .await;
    let url = format!("http://127.0.0.1:{port}/wechat/callback/{}", t.app);
    for _ in 0..200 {
        if t.ctx.health.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(t.ctx.health.is_ready());
    (t, url)
}

fn target(url: &str, safe: bool) -> CallbackTarget {
    CallbackTarget {
        url: url.to_owned(),
        token: TOKEN.to_owned(),
        aes_key: safe.then(|| AES_KEY.to_owned()),
    }
}

async fn post(url: &str, body: String) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(url)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Pushes an event as WeChat would, plain or sealed.
async fn push_event(url: &str, safe: bool, appid: &str, xml: String) -> (u16, String) {
    let (signed_url, body) = signed_request(&CallbackPush {
        target: target(url, safe),
        appid: appid.into(),
        xml,
    });
    post(&signed_url, body).await
}

fn report_xml(msgid: u64, status: &str) -> String {
    event_xml(DEFAULT_APPID, &openid(1), msgid, status, 1_395_658_920)
}

/// Sends one job and returns its msgid.
async fn sent_msgid(t: &mut TestApp, id: &str) -> u64 {
    t.publish(&job(id, &openid(1))).await;
    t.outcome_of(id).await["msgid"].as_u64().unwrap()
}

async fn next_delivery(t: &mut TestApp) -> Option<Value> {
    while let Some(v) = t.tap.next(Duration::from_secs(3)).await {
        if v["kind"] == "delivery" {
            return Some(v);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_safe_events_publish_one_report_tied_to_the_job() {
    let (mut t, url) = spawn_receiver_with("cb_events", Some(CallbackMode::Compat), None).await;
    let plain_msgid = sent_msgid(&mut t, "cb-plain").await;
    assert_eq!(
        push_event(
            &url,
            false,
            DEFAULT_APPID,
            report_xml(plain_msgid, "success")
        )
        .await,
        (200, "success".into())
    );
    let r = next_delivery(&mut t).await.expect("a report");
    assert_eq!(
        (r["status"].as_str(), r["id"].as_str()),
        (Some("delivered"), Some("cb-plain"))
    );
    assert_eq!(r["meta"], serde_json::json!({"test": "cb-plain"}));
    assert_eq!(r["msgid"].as_u64(), Some(plain_msgid));
    assert_eq!(r["app"], t.app.as_str());
    assert_eq!(r["event_time"], 1_395_658_920);
    let counted = format!(
        "wxcourier_callback_events_total{{app=\"{}\",status=\"delivered\"}} 1",
        t.app
    );
    let metrics = t.ctx.metrics.render();
    assert!(metrics.contains(&counted), "{counted} in {metrics}");

    let safe_msgid = sent_msgid(&mut t, "cb-safe").await;
    assert_eq!(
        push_event(
            &url,
            true,
            DEFAULT_APPID,
            report_xml(safe_msgid, "failed:user block")
        )
        .await
        .0,
        200
    );
    let r = next_delivery(&mut t).await.expect("a report");
    assert_eq!(
        (r["status"].as_str(), r["id"].as_str()),
        (Some("blocked"), Some("cb-safe"))
    );
    assert_eq!(r["wechat_status"], "failed:user block");

    // WeChat's retry of the same event: answered, not published again.
    assert_eq!(
        push_event(
            &url,
            true,
            DEFAULT_APPID,
            report_xml(safe_msgid, "failed:user block")
        )
        .await
        .0,
        200
    );
    assert!(next_delivery(&mut t).await.is_none());

    // A msgid the worker never sent: reported with id and meta null.
    assert_eq!(
        push_event(
            &url,
            false,
            DEFAULT_APPID,
            report_xml(42, "failed:freq limit")
        )
        .await
        .0,
        200
    );
    let r = next_delivery(&mut t).await.expect("a report");
    assert_eq!(
        (r["status"].as_str(), r["id"].clone()),
        (Some("delivery_failed"), Value::Null)
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_reports_real_sends_and_each_report_names_its_job() {
    let (mut t, url) = spawn_receiver("cb_e2e").await;
    t.sim.set_faults(Faults {
        report_blocked: 0.3,
        report_failed: 0.3,
        ..Faults::default()
    });
    t.sim.set_callback(DEFAULT_APPID, Some(target(&url, true)));
    let ids = t.publish_numbered(40).await;
    let mut msgid_of: HashMap<u64, String> = HashMap::new();
    let mut reports: Vec<Value> = Vec::new();
    while msgid_of.len() < 40 || reports.len() < 40 {
        let v = t
            .tap
            .next(Duration::from_secs(10))
            .await
            .expect("outcomes and reports keep coming");
        if v["kind"] == "delivery" {
            reports.push(v);
        } else {
            assert_eq!(v["status"], "sent");
            msgid_of.insert(
                v["msgid"].as_u64().unwrap(),
                v["id"].as_str().unwrap().into(),
            );
        }
    }
    let mut statuses = HashMap::new();
    for r in &reports {
        let msgid = r["msgid"].as_u64().unwrap();
        assert_eq!(
            r["id"].as_str(),
            msgid_of.get(&msgid).map(String::as_str),
            "{r}"
        );
        let expected = match r["wechat_status"].as_str().unwrap() {
            "success" => "delivered",
            "failed:user block" => "blocked",
            _ => "delivery_failed",
        };
        assert_eq!(r["status"], expected);
        *statuses.entry(expected).or_insert(0) += 1;
    }
    assert_eq!(
        msgid_of
            .values()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        ids
    );
    assert_eq!(
        statuses.len(),
        3,
        "every report status appeared: {statuses:?}"
    );
    // The simulator counts a push once it has read the `success` answer, just after the worker
    // published the report.
    let sim = t.sim.clone();
    eventually(Duration::from_secs(5), "40 pushes answered success", || {
        sim.stats().reports_delivered == 40
    })
    .await;
    t.stop().await;
}

// The HTTP limits. Each test sets short limits so that it runs in seconds.

/// `host:port` of a receiver URL.
fn addr_of(url: &str) -> String {
    let u = reqwest::Url::parse(url).unwrap();
    format!("{}:{}", u.host_str().unwrap(), u.port().unwrap())
}

fn secs(s: f64) -> Span {
    Span(Duration::from_secs_f64(s))
}

/// What became of a raw connection: how long after it was opened the server closed it (None:
/// still open at the deadline), and what the server sent before closing.
struct Fate {
    closed_after: Option<Duration>,
    answer: String,
}

/// Writes `head` then `slow`, one byte every `every`, until the server closes the connection
/// or `deadline` passes.
async fn trickle(
    addr: String,
    head: Vec<u8>,
    slow: Vec<u8>,
    every: Duration,
    deadline: Duration,
) -> Fate {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let opened = tokio::time::Instant::now();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut rx, mut tx) = stream.into_split();
    let writer = async move {
        if tx.write_all(&head).await.is_err() {
            return;
        }
        for b in slow {
            if tx.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
        std::future::pending::<()>().await
    };
    let reader = async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => return (opened.elapsed(), answer),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::select! {
        (after, answer) = reader => Fate {
            closed_after: Some(after),
            answer: String::from_utf8_lossy(&answer).into_owned(),
        },
        _ = writer => unreachable!("the writer never ends"),
        _ = tokio::time::sleep(deadline) => Fate { closed_after: None, answer: String::new() },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_slowloris_connections_neither_hold_off_a_real_report_nor_stay_open() {
    let header_read = 2.0;
    let (mut t, url) = spawn_receiver_tweaked("edge_slowloris", |s| {
        s.http.header_read_timeout = secs(header_read).try_into().unwrap();
        s.http.request_timeout = secs(2.0).try_into().unwrap();
        s.http.idle_timeout = secs(2.0).try_into().unwrap();
    })
    .await;
    let msgid = sent_msgid(&mut t, "edge-slowloris").await;
    let addr = addr_of(&url);
    let path = reqwest::Url::parse(&url).unwrap().path().to_owned();
    // Each a valid start of a callback POST, one header byte a second, never finished.
    let head = format!("POST {path}?timestamp=1&nonce=2 HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ");
    let slow: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(trickle(
                addr.clone(),
                head.clone().into_bytes(),
                b"abcdefghijklmnopqrstuvwxyz".to_vec(),
                Duration::from_secs(1),
                Duration::from_secs(15),
            ))
        })
        .collect();
    // All 200 are connected and trickling when the real report comes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let started = std::time::Instant::now();
    let answered = push_event(&url, true, DEFAULT_APPID, report_xml(msgid, "success")).await;
    let took = started.elapsed();
    assert_eq!(answered, (200, "success".into()));
    assert!(took < Duration::from_secs(1), "the report took {took:?}");
    let r = next_delivery(&mut t)
        .await
        .expect("the report is published");
    assert_eq!(r["id"], "edge-slowloris");

    let mut closed = Vec::new();
    for handle in slow {
        let fate = handle.await.unwrap();
        let after = fate
            .closed_after
            .expect("every slow connection is closed by the server");
        assert!(
            !fate.answer.starts_with("HTTP/1.1 200"),
            "no slow request was served: {}",
            fate.answer
        );
        closed.push(after);
    }
    closed.sort();
    let (first, last) = (closed[0], closed[closed.len() - 1]);
    // Closed by the header-read timeout: not before it, and soon after it.
    assert!(
        first >= Duration::from_secs_f64(header_read - 0.3),
        "closed early: {first:?}"
    );
    assert!(last < Duration::from_secs(6), "closed late: {last:?}");
    println!(
        "200 slowloris connections closed after {first:?} (first), {:?} (median), {last:?} \
         (last); the real report took {took:?}",
        closed[closed.len() / 2]
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408_and_an_oversized_head_431() {
    let (mut t, url) = spawn_receiver_tweaked("edge_slow_body", |s| {
        s.http.header_read_timeout = secs(5.0).try_into().unwrap();
        s.http.request_timeout = secs(1.0).try_into().unwrap();
    })
    .await;
    let addr = addr_of(&url);
    let path = reqwest::Url::parse(&url).unwrap().path().to_owned();
    let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 1000\r\n\r\n<xml>");
    let fate = trickle(
        addr.clone(),
        head.into_bytes(),
        vec![b' '; 100],
        Duration::from_millis(200),
        Duration::from_secs(8),
    )
    .await;
    let after = fate.closed_after.expect("closed by the request timeout");
    assert!(fate.answer.starts_with("HTTP/1.1 408"), "{}", fate.answer);
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(4)).contains(&after),
        "{after:?}"
    );

    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Big: {}\r\n\r\n",
        "x".repeat(32 * 1024)
    );
    let fate = trickle(
        addr,
        huge.into_bytes(),
        Vec::new(),
        Duration::ZERO,
        Duration::from_secs(5),
    )
    .await;
    assert!(fate.answer.starts_with("HTTP/1.1 431"), "{}", fate.answer);
    assert!(fate.closed_after.is_some());
    assert!(
        next_delivery(&mut t).await.is_none(),
        "nothing was published"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let (t, url) = spawn_receiver_tweaked("edge_idle", |s| {
        s.http.header_read_timeout = secs(10.0).try_into().unwrap();
        s.http.idle_timeout = secs(0.5).try_into().unwrap();
    })
    .await;
    let addr = addr_of(&url);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let fate = trickle(
        addr,
        request.into_bytes(),
        Vec::new(),
        Duration::ZERO,
        Duration::from_secs(8),
    )
    .await;
    assert!(fate.answer.starts_with("HTTP/1.1 200"), "{}", fate.answer);
    assert!(fate.answer.ends_with("ok"), "{}", fate.answer);
    let after = fate.closed_after.expect("closed once idle");
    // Well before the 10 s header-read timeout that would otherwise end it.
    assert!(
        (Duration::from_millis(400)..Duration::from_secs(3)).contains(&after),
        "{after:?}"
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_client_waits_for_a_slot_and_is_then_served() {
    let (t, url) = spawn_receiver_tweaked("edge_cap", |s| {
        s.http.max_connections = common::count(4);
        s.http.header_read_timeout = secs(1.0).try_into().unwrap();
    })
    .await;
    let addr = addr_of(&url);
    // Four connections that say nothing take every slot until the header-read timeout.
    let silent: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(trickle(
                addr.clone(),
                Vec::new(),
                Vec::new(),
                Duration::ZERO,
                Duration::from_secs(8),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(health.status().as_u16(), 200);
    assert!(
        (Duration::from_millis(600)..Duration::from_secs(4)).contains(&waited),
        "served after {waited:?}: it had to wait for a slot"
    );
    for s in silent {
        assert!(s.await.unwrap().closed_after.is_some());
    }
    // With the slots free again, no wait.
    let started = std::time::Instant::now();
    reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    t.stop().await;
}

/// How often a push cut off by a 1 µs request timeout is retried before the test gives up. An
/// answer comes only when the whole push is handled before the timer's first tick, which on a
/// loaded host (many builds on two cores) took more than 50 tries in about one run in three.
const CUT_OFF_TRIES: u32 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_cut_off_by_the_request_timeout_are_still_published_once() {
    // So short that many answers come after it: the client gets 408 and WeChat retries. With
    // Redis the seen-mark and the job lookup are awaited too, so a cut can fall between
    // marking a MsgID seen and publishing its report.
    let (mut t, url) = spawn_receiver_tweaked("edge_cutoff", |s| {
        s.http.request_timeout = Duration::from_micros(1).try_into().unwrap();
        s.state.url = Secret::new("redis://127.0.0.1:6379/");
    })
    .await;
    let ids = t.publish_numbered(20).await;
    let msgids: HashMap<u64, String> = t
        .outcomes(20)
        .await
        .into_iter()
        .map(|o| {
            (
                o["msgid"].as_u64().unwrap(),
                o["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut cut_off = 0;
    for &msgid in msgids.keys() {
        // WeChat tries an event until it is answered `success`.
        let mut tries = 0;
        loop {
            tries += 1;
            let (status, _) =
                push_event(&url, true, DEFAULT_APPID, report_xml(msgid, "success")).await;
            if status == 200 {
                break;
            }
            assert_eq!(status, 408);
            cut_off += 1;
            assert!(tries < CUT_OFF_TRIES, "msgid {msgid} never answered");
        }
    }
    let mut reported: HashMap<u64, usize> = HashMap::new();
    while let Some(r) = next_delivery(&mut t).await {
        *reported.entry(r["msgid"].as_u64().unwrap()).or_default() += 1;
        assert_eq!(
            r["id"].as_str(),
            msgids
                .get(&r["msgid"].as_u64().unwrap())
                .map(String::as_str)
        );
    }
    assert_eq!(reported.len(), 20, "every report published: {reported:?}");
    assert!(
        reported.values().all(|&n| n == 1),
        "once each: {reported:?}"
    );
    assert_eq!(msgids.len(), ids.len());
    println!("{cut_off} answers were cut off; every report was published once");
    t.stop().await;
}

// The subscription events: a sent result per message, a user's preferences, follows.

const TEMPLATE_B: &str = "9nLIlbOQZC5Y89AZteFEux3WCXRRRG5Wfzkpssu4bLI";

fn decision(template_id: &str, status: PreferenceStatus, scene: Option<u32>) -> Decision {
    Decision {
        template_id: template_id.into(),
        status,
        scene,
    }
}

fn popup(decisions: Vec<Decision>) -> UserEvent {
    UserEvent::SubscribeMsgPopupEvent {
        templates: decisions,
    }
}

/// A receiver whose app also sends subscription notifications.
async fn spawn_subscribe_receiver(prefix: &str, mode: Option<CallbackMode>) -> (TestApp, String) {
    spawn_receiver_tweaked(prefix, |s| {
        for app in s.apps.values_mut() {
            app.kinds = [
                wxcourier::kinds::Kind::Template,
                wxcourier::kinds::Kind::Subscribe,
            ]
            .into_iter()
            .collect();
            app.callback_mode = mode;
        }
    })
    .await
}

fn subscribe_job(id: &str, touser: &str) -> Value {
    json!({
        "id": id, "kind": "subscribe", "touser": touser, "template_id": TEMPLATE,
        "data": {"thing1": {"value": "Order shipped"}}, "meta": {"test": id}
    })
}

/// The next result on `tap` within 3 s.
async fn next_on(tap: &mut CheckedTap) -> Option<Value> {
    tap.next(Duration::from_secs(3)).await
}

/// Taps on exactly `preference.APP` and `follow.APP`: what they get was published under that
/// routing key.
async fn user_taps(t: &TestApp) -> (CheckedTap, CheckedTap) {
    let preference = CheckedTap::open(&t.conn, &format!("preference.{}", t.app))
        .await
        .unwrap();
    let follow = CheckedTap::open(&t.conn, &format!("follow.{}", t.app))
        .await
        .unwrap();
    (preference, follow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn popup_change_and_follow_events_publish_preference_and_follow_reports_once_each() {
    let (t, url) = spawn_receiver_with("cb_pref", Some(CallbackMode::Compat), None).await;
    let (mut preferences, mut follows) = user_taps(&t).await;
    for (n, safe) in [(1, false), (2, true)] {
        let user = openid(n);
        let created = 1_610_969_440 + n as u64;
        let decided = popup(vec![
            decision(TEMPLATE, PreferenceStatus::Accept, Some(2)),
            decision(TEMPLATE_B, PreferenceStatus::Reject, Some(2)),
        ]);
        let changed = UserEvent::SubscribeMsgChangeEvent {
            templates: vec![decision(TEMPLATE, PreferenceStatus::Reject, None)],
        };
        for event in [
            &decided,
            &changed,
            &UserEvent::Unsubscribe,
            &UserEvent::Subscribe,
        ] {
            let xml = user_event_xml(DEFAULT_APPID, &user, event, created);
            // WeChat's retry of the same push is answered the same and publishes nothing more.
            for attempt in 1..=2 {
                assert_eq!(
                    push_event(&url, safe, DEFAULT_APPID, xml.clone()).await,
                    (200, "success".into()),
                    "safe={safe} attempt {attempt}: {xml}"
                );
            }
        }
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(
                next_on(&mut preferences)
                    .await
                    .expect("a preference report"),
            );
        }
        assert_eq!(
            got[0],
            json!({"kind": "preference", "app": t.app, "openid": user, "template_id": TEMPLATE,
                   "status": "accept", "event": "subscribe_msg_popup_event", "scene": 2,
                   "event_time": created})
        );
        assert_eq!(
            (got[1]["template_id"].as_str(), got[1]["status"].as_str()),
            (Some(TEMPLATE_B), Some("reject"))
        );
        assert_eq!(
            got[2],
            json!({"kind": "preference", "app": t.app, "openid": user, "template_id": TEMPLATE,
                   "status": "reject", "event": "subscribe_msg_change_event", "scene": null,
                   "event_time": created})
        );
        let unfollowed = next_on(&mut follows).await.expect("a follow report");
        assert_eq!(
            unfollowed,
            json!({"kind": "follow", "app": t.app, "openid": user, "status": "unsubscribe",
                   "event_time": created})
        );
        let followed = next_on(&mut follows).await.expect("a follow report");
        assert_eq!(followed["status"], "subscribe");
        assert!(
            next_on(&mut preferences).await.is_none() && next_on(&mut follows).await.is_none(),
            "safe={safe}: every repeat was recognised"
        );
    }
    let metrics = t.ctx.metrics.render();
    for (status, n) in [
        ("accept", 2),
        ("reject", 4),
        ("unsubscribe", 2),
        ("subscribe", 2),
    ] {
        let counted = format!(
            "wxcourier_callback_events_total{{app=\"{}\",status=\"{status}\"}} {n}",
            t.app
        );
        assert!(metrics.contains(&counted), "{counted} in {metrics}");
    }
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_events_publish_a_delivery_report_per_item_tied_to_its_job() {
    let (mut t, url) = spawn_subscribe_receiver("cb_sent", Some(CallbackMode::Compat)).await;
    t.publish(&subscribe_job("cb-sent", &openid(1))).await;
    let outcome = t.outcome_of("cb-sent").await;
    assert_eq!(outcome["message_kind"], "subscribe");
    let msgid = outcome["msgid"].as_u64().unwrap();
    let sent = sent_event_xml(
        DEFAULT_APPID,
        &openid(1),
        TEMPLATE,
        msgid,
        0,
        "success",
        1_610_969_440,
    );
    // Plain, then sealed: the same MsgID is one report whatever form its repeat takes.
    for safe in [false, true] {
        assert_eq!(
            push_event(&url, safe, DEFAULT_APPID, sent.clone()).await,
            (200, "success".into())
        );
    }
    let r = next_delivery(&mut t).await.expect("a report");
    assert_eq!(
        r,
        json!({"kind": "delivery", "app": t.app, "status": "delivered", "msgid": msgid,
               "touser": openid(1), "wechat_status": "success", "id": "cb-sent",
               "meta": {"test": "cb-sent"}, "event_time": 1_610_969_440,
               "template_id": TEMPLATE, "errcode": 0})
    );
    assert!(next_delivery(&mut t).await.is_none(), "published once");

    // One push, two items: a failure for a msgid nobody sent, and a MsgID of 0.
    let two = sent_event_xml(
        DEFAULT_APPID,
        &openid(1),
        TEMPLATE,
        42,
        -1,
        "failed: system failed",
        1_610_969_441,
    )
    .replace(
        "</List>",
        "</List><List><TemplateId>T0</TemplateId><MsgID>0</MsgID><ErrorCode>43101</ErrorCode>\
             <ErrorStatus>failed:user block</ErrorStatus></List>",
    );
    assert_eq!(
        push_event(&url, true, DEFAULT_APPID, two).await,
        (200, "success".into())
    );
    let failed = next_delivery(&mut t).await.expect("the first item");
    assert_eq!(
        (
            failed["status"].as_str(),
            failed["id"].clone(),
            failed["errcode"].as_i64()
        ),
        (Some("delivery_failed"), Value::Null, Some(-1))
    );
    let blocked = next_delivery(&mut t).await.expect("the second item");
    assert_eq!(
        (
            blocked["status"].as_str(),
            blocked["msgid"].as_u64(),
            blocked["template_id"].as_str()
        ),
        (Some("blocked"), Some(0), Some("T0"))
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_pushes_sent_results_and_user_events_and_then_refuses_a_refused_template() {
    let (mut t, url) = spawn_subscribe_receiver("cb_pref_e2e", None).await;
    let (mut preferences, mut follows) = user_taps(&t).await;
    t.sim.set_callback(DEFAULT_APPID, Some(target(&url, true)));
    let (alice, carol) = (openid(1), openid(2));

    t.publish(&subscribe_job("e2e-sub", &alice)).await;
    let msgid = t.outcome_of("e2e-sub").await["msgid"].as_u64().unwrap();
    let r = next_delivery(&mut t).await.expect("the sent result");
    assert_eq!(
        (
            r["id"].as_str(),
            r["msgid"].as_u64(),
            r["template_id"].as_str(),
            r["errcode"].as_i64()
        ),
        (Some("e2e-sub"), Some(msgid), Some(TEMPLATE), Some(0))
    );

    // Carol refuses the template: a preference report, then her send is refused.
    t.sim
        .push_user_event(
            DEFAULT_APPID,
            &carol,
            popup(vec![decision(TEMPLATE, PreferenceStatus::Reject, Some(2))]),
        )
        .unwrap();
    let p = next_on(&mut preferences).await.expect("Carol's refusal");
    assert_eq!(
        (
            p["openid"].as_str(),
            p["template_id"].as_str(),
            p["status"].as_str()
        ),
        (Some(carol.as_str()), Some(TEMPLATE), Some("reject"))
    );
    t.publish(&subscribe_job("e2e-refused", &carol)).await;
    let refused = t.outcome_of("e2e-refused").await;
    assert_eq!(
        (refused["status"].as_str(), refused["reason"].as_str()),
        (Some("failed"), Some("recipient_refused"))
    );
    // She accepts it again, and it is sent.
    t.sim
        .push_user_event(
            DEFAULT_APPID,
            &carol,
            popup(vec![decision(TEMPLATE, PreferenceStatus::Accept, Some(2))]),
        )
        .unwrap();
    assert_eq!(
        next_on(&mut preferences).await.expect("Carol's acceptance")["status"],
        "accept"
    );
    t.publish(&subscribe_job("e2e-accepted", &carol)).await;
    assert_eq!(t.outcome_of("e2e-accepted").await["status"], "sent");
    assert_eq!(
        next_delivery(&mut t).await.expect("its sent result")["id"],
        "e2e-accepted"
    );

    t.sim
        .push_user_event(DEFAULT_APPID, &alice, UserEvent::Unsubscribe)
        .unwrap();
    let f = next_on(&mut follows).await.expect("Alice unfollows");
    assert_eq!(
        (f["openid"].as_str(), f["status"].as_str()),
        (Some(alice.as_str()), Some("unsubscribe"))
    );

    // What the simulator refuses to push.
    assert!(matches!(
        t.sim
            .push_user_event(DEFAULT_APPID, "not-an-openid", UserEvent::Subscribe),
        Err(UserEventError::Invalid(_))
    ));
    assert!(matches!(
        t.sim.push_user_event(
            DEFAULT_APPID,
            &alice,
            popup(vec![decision("a]]>b", PreferenceStatus::Reject, None)])
        ),
        Err(UserEventError::Invalid(_))
    ));
    assert!(matches!(
        t.sim
            .push_user_event("wxnobody", &alice, UserEvent::Subscribe),
        Err(UserEventError::NoCallback(_))
    ));
    // Two sent results and three user events, each answered `success` once.
    let sim = t.sim.clone();
    eventually(Duration::from_secs(5), "5 pushes answered success", || {
        let s = sim.stats();
        s.reports_delivered == 5 && s.reports_failed == 0
    })
    .await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preference_pushes_cut_off_by_the_request_timeout_publish_each_template_once() {
    // As for delivery reports: some answers come after the 1 µs timeout, WeChat retries, and
    // a push of three templates cut off after its first publish must not repeat that one.
    let (t, url) = spawn_receiver_tweaked("edge_pref_cutoff", |s| {
        s.http.request_timeout = Duration::from_micros(1).try_into().unwrap();
        s.state.url = Secret::new("redis://127.0.0.1:6379/");
    })
    .await;
    let (mut preferences, _) = user_taps(&t).await;
    let templates = [TEMPLATE, TEMPLATE_B, "T3"];
    let mut cut_off = 0;
    for n in 0..10 {
        let event = popup(
            templates
                .iter()
                .map(|id| decision(id, PreferenceStatus::Reject, Some(2)))
                .collect(),
        );
        let xml = user_event_xml(DEFAULT_APPID, &openid(n), &event, 1_610_969_440);
        let mut tries = 0;
        loop {
            tries += 1;
            let (status, _) = push_event(&url, true, DEFAULT_APPID, xml.clone()).await;
            if status == 200 {
                break;
            }
            assert_eq!(status, 408, "user {n}");
            cut_off += 1;
            assert!(tries < CUT_OFF_TRIES, "user {n} never answered");
        }
    }
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    while let Some(r) = next_on(&mut preferences).await {
        let key = (
            r["openid"].as_str().unwrap().to_owned(),
            r["template_id"].as_str().unwrap().to_owned(),
        );
        *seen.entry(key).or_default() += 1;
    }
    assert_eq!(seen.len(), 30, "every template of every user: {seen:?}");
    assert!(seen.values().all(|&n| n == 1), "once each: {seen:?}");
    println!("{cut_off} answers were cut off; every preference was published once");
    t.stop().await;
}
