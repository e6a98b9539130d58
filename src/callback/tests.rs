//! The receiver's whole refusal matrix and its publishing, through its router
//! (`tower::ServiceExt::oneshot`), over fakes of its seams: no broker, no Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::Request;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};
use tower::ServiceExt;

use super::events::Report;
use super::outlet::OutletError;
use super::*;
use crate::broker::publish::Landing;
use crate::clock::FixedClock;
use crate::config::{AppSettings, CallbackMode};
use crate::state::ReportKey;
use crate::state::fakes::{FakeReports, ReportCall};
use crate::types::{Secret, Span, TraceHeaders, decode_aes_key};
use crate::wechat::crypto::{self, Envelope};

mod gating;

const APP: &str = "shop";
const APPID: &str = "wx00000000000000aa";
const TOKEN: &str = "callback-token";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
/// The receiver's time of day in these tests, in Unix seconds, until a test moves its clock.
const NOW: u64 = 1_700_000_000;
/// `http.callback_max_age` in these tests.
const WINDOW: u64 = 300;

/// Reports as the broker would take them, or refuse them, or hold them until let go.
#[derive(Default)]
struct FakeOutlet {
    published: Mutex<Vec<Report>>,
    /// The trace headers each publish carried, in order.
    traces: Mutex<Vec<Option<TraceHeaders>>>,
    failing: AtomicBool,
    /// Confirms each report as returned: no queue takes it.
    unrouted: AtomicBool,
    /// When set, each publish waits for a permit.
    gate: Option<Semaphore>,
    entered: Notify,
}

impl FakeOutlet {
    fn gated() -> Self {
        Self {
            gate: Some(Semaphore::new(0)),
            ..Self::default()
        }
    }

    fn published(&self) -> Vec<Report> {
        self.published.lock().clone()
    }
}

impl ReportOutlet for FakeOutlet {
    fn publish<'a>(
        &'a self,
        report: &'a Report,
        trace: Option<&'a TraceHeaders>,
    ) -> BoxFuture<'a, Result<Landing, OutletError>> {
        Box::pin(async move {
            self.traces.lock().push(trace.cloned());
            self.entered.notify_one();
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("never closed").forget();
            }
            if self.failing.load(Ordering::SeqCst) {
                return Err(OutletError::Disconnected);
            }
            self.published.lock().push(report.clone());
            Ok(match self.unrouted.load(Ordering::SeqCst) {
                true => Landing::Returned(report.routing_key()),
                false => Landing::Taken,
            })
        })
    }
}

/// The instant `secs` seconds after the Unix epoch.
fn at(secs: u64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap()
}

/// A receiver for one app in `mode`, over fakes, on a clock stopped at [`NOW`].
struct Receiver {
    state: Arc<CallbackState>,
    clock: Arc<FixedClock>,
    reports: Arc<FakeReports>,
    outlet: Arc<FakeOutlet>,
    metrics: Arc<Metrics>,
    trails: Arc<Trails>,
    tasks: TaskTracker,
}

impl Receiver {
    fn new(mode: CallbackMode) -> Self {
        Self::with_outlet(mode, FakeOutlet::default())
    }

    fn with_outlet(mode: CallbackMode, outlet: FakeOutlet) -> Self {
        let mut settings = Settings::default();
        let mut app = AppSettings::new(APPID, Secret::new("secret"));
        app.callback_token = Some(Secret::new(TOKEN));
        app.encoding_aes_key = Some(Secret::new(AES_KEY));
        app.callback_mode = Some(mode);
        settings.apps.insert(APP.into(), app);
        settings.http.callback_max_age = Span(Duration::from_secs(WINDOW));
        let reports = Arc::new(FakeReports::default());
        let outlet = Arc::new(outlet);
        let metrics = Arc::new(Metrics::new());
        let tasks = TaskTracker::new();
        let clock = Arc::new(FixedClock::at(at(NOW)));
        let memory = crate::state::State::from_url("memory", WEEK, 10, WEEK).unwrap();
        let trails = Arc::new(Trails::for_state(
            &memory,
            WEEK,
            metrics.trail_failures.clone(),
        ));
        let state = CallbackState::new(
            &settings,
            reports.clone(),
            outlet.clone(),
            metrics.clone(),
            trails.clone(),
            tasks.clone(),
            clock.clone(),
        );
        Self {
            state: Arc::new(state),
            clock,
            reports,
            outlet,
            metrics,
            trails,
            tasks,
        }
    }

    async fn call(&self, method: &str, app: &str, query: &str, body: String) -> (u16, String) {
        let request = Request::builder()
            .method(method)
            .uri(format!("/wechat/callback/{app}?{query}"))
            .body(Body::from(body))
            .unwrap();
        let response = routes(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn post(&self, (query, body): (String, String)) -> (u16, String) {
        self.call("POST", APP, &query, body).await
    }

    fn unmark_failures(&self) -> String {
        self.metrics.render()
    }
}

/// A `TEMPLATESENDJOBFINISH` push.
fn report_xml(msgid: u64, status: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser1]]></FromUserName>\
         <CreateTime>1395658920</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>\
         <Status><![CDATA[{status}]]></Status></xml>"
    )
}

/// How a test signs a push.
#[derive(Clone, Copy, Debug)]
struct Signing {
    /// Signed with the app's token, or another.
    good: bool,
    /// The signed timestamp.
    at: u64,
}

const GOOD: Signing = Signing {
    good: true,
    at: NOW,
};

fn token_for(s: Signing) -> &'static str {
    if s.good { TOKEN } else { "not-the-token" }
}

/// The plain query: `signature` over the token, timestamp and nonce.
fn plain_query(s: Signing) -> String {
    let ts = s.at.to_string();
    let sig = crypto::signature(&[token_for(s), &ts, "n1"]);
    format!("signature={sig}&timestamp={ts}&nonce=n1")
}

fn plain(xml: &str, s: Signing) -> (String, String) {
    (plain_query(s), xml.to_owned())
}

fn envelope(appid: &str) -> Envelope {
    Envelope::new(decode_aes_key(AES_KEY).unwrap(), appid)
}

/// A safe-mode push sealed for `appid`: its plain `signature` is always good (WeChat sends
/// one, and it covers no body); `s` signs the `msg_signature`.
fn sealed_for(appid: &str, xml: &str, s: Signing) -> (String, String) {
    let encrypted = envelope(appid).seal(xml, [7; 16]);
    let ts = s.at.to_string();
    let msg_sig = crypto::signature(&[token_for(s), &ts, "n1", &encrypted]);
    let plain_sig = crypto::signature(&[TOKEN, &ts, "n1"]);
    let query = format!(
        "signature={plain_sig}&timestamp={ts}&nonce=n1&encrypt_type=aes&msg_signature={msg_sig}"
    );
    let body = format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    );
    (query, body)
}

fn sealed(xml: &str, s: Signing) -> (String, String) {
    sealed_for(APPID, xml, s)
}

fn delivered_msgids(outlet: &FakeOutlet) -> Vec<u64> {
    outlet
        .published()
        .iter()
        .map(|r| match r {
            Report::Delivery(d) => d.msgid,
            other => panic!("not a delivery report: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn every_mode_form_signature_and_age_gets_its_answer_and_only_good_pushes_publish() {
    let stale = [NOW - WINDOW - 1, NOW + WINDOW + 1];
    let fresh = [NOW, NOW - WINDOW, NOW + WINDOW];
    for mode in [
        CallbackMode::Plain,
        CallbackMode::Compat,
        CallbackMode::Safe,
    ] {
        for is_sealed in [false, true] {
            for good in [true, false] {
                for at in stale.iter().chain(&fresh).copied() {
                    let r = Receiver::new(mode);
                    let s = Signing { good, at };
                    let xml = report_xml(42, "success");
                    let push = if is_sealed {
                        sealed(&xml, s)
                    } else {
                        plain(&xml, s)
                    };
                    let case = format!("{mode:?} sealed={is_sealed} good={good} at={at}");
                    let expected: (u16, &str) = match (mode, is_sealed) {
                        (CallbackMode::Safe, false) => (403, "Forbidden"),
                        (CallbackMode::Plain, true) => (400, "Bad Request"),
                        _ if !good => (403, "Forbidden"),
                        _ if stale.contains(&at) => {
                            (403, "the timestamp is outside http.callback_max_age")
                        }
                        _ => (200, "success"),
                    };
                    let (status, body) = r.post(push).await;
                    assert_eq!((status, body.as_str()), expected, "{case}");
                    let published = if status == 200 { vec![42] } else { vec![] };
                    assert_eq!(delivered_msgids(&r.outlet), published, "{case}");
                    if status != 200 {
                        assert_eq!(r.reports.calls(), [], "{case}: a refusal marks nothing");
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn a_push_ages_on_the_receivers_clock_not_the_system_time() {
    let r = Receiver::new(CallbackMode::Compat);
    let push = plain(&report_xml(42, "success"), GOOD);
    // The same signed push, replayed once the receiver's clock has moved past the window.
    r.clock.set(at(NOW + WINDOW + 1));
    assert_eq!(
        r.post(push.clone()).await,
        (403, "the timestamp is outside http.callback_max_age".into())
    );
    r.clock.set(at(NOW + WINDOW));
    assert_eq!(r.post(push).await, (200, "success".into()));
    assert_eq!(delivered_msgids(&r.outlet), [42]);
}

#[tokio::test]
async fn without_a_window_any_signed_timestamp_is_taken() {
    let mut r = Receiver::new(CallbackMode::Compat);
    let state = Arc::get_mut(&mut r.state).unwrap();
    for app in state.apps.values_mut() {
        app.max_age = None;
    }
    let old = Signing { good: true, at: 1 };
    assert_eq!(r.post(plain(&report_xml(1, "success"), old)).await.0, 200);
    assert_eq!(r.post(sealed(&report_xml(2, "success"), old)).await.0, 200);
}

#[tokio::test]
async fn a_push_sealed_for_another_appid_is_refused_once_its_signature_holds() {
    let r = Receiver::new(CallbackMode::Safe);
    let push = sealed_for("wx_someone_else", &report_xml(5, "success"), GOOD);
    assert_eq!(
        r.post(push).await,
        (403, "the message is for another AppID".into())
    );
    assert!(r.outlet.published().is_empty());
}

#[tokio::test]
async fn an_unknown_app_is_not_found_for_both_verbs() {
    let r = Receiver::new(CallbackMode::Compat);
    let (query, body) = plain(&report_xml(5, "success"), GOOD);
    for method in ["GET", "POST"] {
        assert_eq!(
            r.call(method, "nobody", &query, body.clone()).await,
            (404, "Not Found".into()),
            "{method}"
        );
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_anything_is_read() {
    let r = Receiver::new(CallbackMode::Compat);
    let padded = report_xml(5, "success").replace(
        "<MsgID>",
        &format!("<Pad>{}</Pad><MsgID>", "x".repeat(MAX_BODY_BYTES)),
    );
    assert_eq!(r.post(plain(&padded, GOOD)).await.0, 413);
    // The pure check holds the same line, whatever the HTTP layer in front of it.
    let app = r.state.apps.get(APP);
    let params: Params = serde_urlencoded_query(&plain_query(GOOD));
    let refusal = open::open(app, &params, padded.as_bytes(), NOW).unwrap_err();
    assert_eq!(refusal, Refusal::TooLarge);
    assert!(r.outlet.published().is_empty());
}

/// A query string read as the router reads it.
fn serde_urlencoded_query(query: &str) -> Params {
    let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
    Query::<Params>::try_from_uri(&uri).unwrap().0
}

#[tokio::test]
async fn bad_xml_is_named_once_signed_and_never_before() {
    let r = Receiver::new(CallbackMode::Compat);
    // Signed: the caller holds the token and is told what is wrong.
    for bad in [
        "not xml",
        "<xml><MsgType>event</MsgType>",
        "<xml>&lol;</xml>",
    ] {
        let (status, why) = r.post(plain(bad, GOOD)).await;
        assert_eq!(status, 400, "{bad}");
        assert_ne!(why, "Bad Request", "{bad}: a signed caller is told why");
    }
    let (status, why) = r
        .post((
            plain_query(GOOD),
            String::from_utf8_lossy(&[0xff, 0xfe]).into(),
        ))
        .await;
    assert_eq!(status, 400, "{why}");
    // A known event missing what it needs.
    let no_status = report_xml(5, "success").replace("<Status><![CDATA[success]]></Status>", "");
    let (status, why) = r.post(plain(&no_status, GOOD)).await;
    assert_eq!((status, why.as_str()), (400, "Status is missing"));
    // Unsigned: the outer body of a sealed push is read before its msg_signature can be
    // checked, and whatever is wrong with it, the answer says nothing.
    let (query, _) = sealed(&report_xml(5, "success"), GOOD);
    for outer in [
        "not xml".to_owned(),
        report_xml(5, "success"),
        "<xml><Encrypt>".to_owned(),
    ] {
        assert_eq!(
            r.post((query.clone(), outer.clone())).await,
            (400, "Bad Request".into()),
            "{outer}"
        );
    }
    // Signed ciphertext that does not decrypt: named.
    let garbage = "AAAA";
    let ts = NOW.to_string();
    let msg_sig = crypto::signature(&[TOKEN, &ts, "n1", garbage]);
    let query = format!("timestamp={ts}&nonce=n1&encrypt_type=aes&msg_signature={msg_sig}");
    let body = format!("<xml><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>");
    let (status, why) = r.post((query, body)).await;
    assert_eq!(status, 400);
    assert_ne!(why, "Bad Request");
    // A forgery with a bad msg_signature over the same garbage is told nothing.
    let query = format!(
        "timestamp={ts}&nonce=n1&encrypt_type=aes&msg_signature={}",
        "0".repeat(40)
    );
    let body = format!("<xml><Encrypt><![CDATA[{garbage}]]></Encrypt></xml>");
    assert_eq!(r.post((query, body)).await, (403, "Forbidden".into()));
    assert!(r.outlet.published().is_empty());
}

#[tokio::test]
async fn the_url_check_echoes_only_a_good_fresh_signature() {
    let r = Receiver::new(CallbackMode::Safe);
    let echo = |s: Signing| format!("{}&echostr=hello", plain_query(s));
    assert_eq!(
        r.call("GET", APP, &echo(GOOD), String::new()).await,
        (200, "hello".into())
    );
    let forged = Signing {
        good: false,
        at: NOW,
    };
    assert_eq!(
        r.call("GET", APP, &echo(forged), String::new()).await,
        (403, "Forbidden".into())
    );
    let old = Signing {
        good: true,
        at: NOW - WINDOW - 1,
    };
    let (status, why) = r.call("GET", APP, &echo(old), String::new()).await;
    assert_eq!(status, 403);
    assert!(why.contains("callback_max_age"), "{why}");
    let (status, _) = r.call("GET", APP, &plain_query(GOOD), String::new()).await;
    assert_eq!(status, 403, "no echostr, nothing to echo");
}

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

#[tokio::test]
async fn a_delivery_report_joins_its_jobs_story_once_and_one_of_no_job_joins_none() {
    let r = Receiver::new(CallbackMode::Compat);
    r.reports.sent(APP, "order-1843", 79, None);
    let xml = report_xml(79, "failed:user block");
    for push in [plain(&xml, GOOD), plain(&xml, GOOD)] {
        assert_eq!(r.post(push).await, (200, "success".into()));
    }
    let story = r.trails.story(APP, "order-1843").await.unwrap().unwrap();
    let [step] = &story.trail[..] else {
        panic!("one delivery step, not one per repeat: {story:?}")
    };
    assert_eq!(step.step, crate::trail::StepName::Delivery);
    assert_eq!(step.detail["status"], "blocked");
    assert_eq!(step.detail["msgid"], 79);
    assert_eq!(story.status, "blocked");
    assert_eq!(r.post(plain(&report_xml(80, "success"), GOOD)).await.0, 200);
    assert_eq!(r.metrics.trail_failures.get(), 0);
}

#[tokio::test]
async fn a_repeated_push_is_published_once_and_tied_to_its_job() {
    let r = Receiver::new(CallbackMode::Compat);
    let meta = serde_json::json!({"order": 1842});
    r.reports.sent(APP, "order-1842", 77, Some(&meta));
    let xml = report_xml(77, "success");
    for push in [plain(&xml, GOOD), sealed(&xml, GOOD), plain(&xml, GOOD)] {
        assert_eq!(r.post(push).await, (200, "success".into()));
    }
    let published = r.outlet.published();
    assert_eq!(published.len(), 1, "{published:?}");
    let Report::Delivery(d) = &published[0] else {
        panic!("{published:?}")
    };
    assert_eq!(
        (d.id.as_deref(), d.meta.as_ref(), d.msgid),
        (Some("order-1842"), Some(&meta), 77)
    );
    // A report no job is known for is published, tied to none.
    assert_eq!(r.post(plain(&report_xml(78, "success"), GOOD)).await.0, 200);
    let Report::Delivery(d) = &r.outlet.published()[1] else {
        panic!()
    };
    assert_eq!((d.id.as_deref(), d.meta.as_ref()), (None, None));
    assert!(
        r.metrics
            .render()
            .contains(r#"wxcourier_callback_events_total{app="shop",status="delivered"} 2"#)
    );
}

#[tokio::test]
async fn a_delivery_report_carries_its_jobs_trace_headers_and_no_other_report_does() {
    let r = Receiver::new(CallbackMode::Compat);
    let trace = TraceHeaders {
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        tracestate: Some("rojo=1".into()),
    };
    r.reports.sent_traced(APP, "order-1850", 90, &trace);
    r.reports.sent(APP, "order-1851", 91, None);
    for msgid in [90, 91, 92] {
        assert_eq!(
            r.post(plain(&report_xml(msgid, "success"), GOOD)).await.0,
            200
        );
    }
    let traces = r.outlet.traces.lock().clone();
    assert_eq!(traces, vec![Some(trace), None, None]);
}

#[tokio::test]
async fn a_report_no_queue_takes_is_answered_success_and_counted_not_retried() {
    let outlet = FakeOutlet::default();
    outlet.unrouted.store(true, Ordering::SeqCst);
    let r = Receiver::with_outlet(CallbackMode::Compat, outlet);
    for (msgid, status) in [(81, "success"), (82, "success"), (83, "failed:user block")] {
        let push = plain(&report_xml(msgid, status), GOOD);
        assert_eq!(r.post(push).await, (200, "success".into()));
    }
    // Published (confirmed) all the same: the marks stay, so WeChat's retries are repeats.
    let unmarked = r.reports.calls();
    assert!(
        !unmarked
            .iter()
            .any(|c| matches!(c, ReportCall::Unmarked(_))),
        "{unmarked:?}"
    );
    let text = r.metrics.render();
    for line in [
        r#"wxcourier_outcomes_unrouted_total{app="shop",status="delivered"} 2"#,
        r#"wxcourier_outcomes_unrouted_total{app="shop",status="blocked"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

#[tokio::test]
async fn a_report_without_a_usable_msgid_is_published_every_time_tied_to_no_job() {
    let r = Receiver::new(CallbackMode::Compat);
    let zero = report_xml(0, "success");
    let missing = zero.replace("<MsgID>0</MsgID>", "");
    let empty = zero.replace("<MsgID>0</MsgID>", "<MsgID></MsgID>");
    for xml in [&zero, &zero, &missing, &empty] {
        assert_eq!(
            r.post(sealed(xml, GOOD)).await,
            (200, "success".into()),
            "{xml}"
        );
    }
    assert_eq!(delivered_msgids(&r.outlet), [0, 0, 0, 0]);
    for report in r.outlet.published() {
        let Report::Delivery(d) = report else {
            panic!()
        };
        assert_eq!((d.id, d.meta), (None, None));
    }
    assert_eq!(r.reports.calls(), [], "nothing to mark, nothing to look up");
}

#[tokio::test]
async fn unsigned_tampered_and_unreadable_posts_are_refused_and_other_messages_acknowledged() {
    let r = Receiver::new(CallbackMode::Compat);
    let event = report_xml(7, "success");
    // No signature at all.
    assert_eq!(
        r.post((String::new(), event.clone())).await,
        (403, "Forbidden".into())
    );
    // Tampered ciphertext, re-signed so only the decryption can catch it.
    let (_, body) = sealed(&event, GOOD);
    let start = body.find("<Encrypt><![CDATA[").unwrap() + 18;
    let mut tampered = body.clone();
    tampered.replace_range(start..start + 4, "AAAA");
    let encrypted = &tampered[start..tampered.find("]]></Encrypt>").unwrap()];
    let ts = NOW.to_string();
    let msg_sig = crypto::signature(&[TOKEN, &ts, "n1", encrypted]);
    let query = format!("timestamp={ts}&nonce=n1&encrypt_type=aes&msg_signature={msg_sig}");
    assert!(matches!(r.post((query, tampered)).await.0, 400 | 403));
    // Unreadable, signed.
    for body in ["<!DOCTYPE x [<!ENTITY e \"e\">]><xml><A>&e;</A></xml>", ""] {
        assert_eq!(r.post(plain(body, GOOD)).await.0, 400, "{body:?}");
    }
    // A report with a msgid that is not a number.
    let (status, why) = r
        .post(plain(&event.replace("<MsgID>7", "<MsgID>x7"), GOOD))
        .await;
    assert_eq!(status, 400, "{why}");
    // Other messages and events are acknowledged, and publish nothing.
    let click = "<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[CLICK]]></Event></xml>";
    assert_eq!(r.post(plain(click, GOOD)).await, (200, "success".into()));
    assert!(r.outlet.published().is_empty());
    // The receiver still works.
    assert_eq!(r.post(plain(&event, GOOD)).await.0, 200);
    assert_eq!(delivered_msgids(&r.outlet), [7]);
}

#[tokio::test]
async fn a_publish_failure_is_503_and_undoes_the_mark_so_the_retry_publishes() {
    let r = Receiver::new(CallbackMode::Safe);
    let push = sealed(&report_xml(9, "failed:user block"), GOOD);
    r.outlet.failing.store(true, Ordering::SeqCst);
    assert_eq!(r.post(push.clone()).await, (503, "try again".into()));
    assert!(r.outlet.published().is_empty());
    let key = ReportKey::MsgId(9);
    assert_eq!(
        r.reports.calls(),
        [
            ReportCall::Marked(key.clone()),
            ReportCall::Looked(9),
            ReportCall::Unmarked(key.clone())
        ]
    );
    // WeChat's retry of the push finds it unmarked.
    r.outlet.failing.store(false, Ordering::SeqCst);
    assert_eq!(r.post(push).await, (200, "success".into()));
    assert_eq!(delivered_msgids(&r.outlet), [9]);
}

#[tokio::test]
async fn a_state_outage_is_503_and_publishes_nothing() {
    let r = Receiver::new(CallbackMode::Compat);
    r.reports.down.store(true, Ordering::SeqCst);
    assert_eq!(
        r.post(plain(&report_xml(3, "success"), GOOD)).await,
        (503, "try again".into())
    );
    assert!(r.outlet.published().is_empty());
    // A push that makes no report needs no state.
    let text = "<xml><MsgType>text</MsgType><Content>hi</Content></xml>";
    assert_eq!(r.post(plain(text, GOOD)).await, (200, "success".into()));
}

#[tokio::test(start_paused = true)]
async fn a_failed_unmark_is_retried_and_counted_only_when_it_never_goes_through() {
    let r = Receiver::new(CallbackMode::Compat);
    r.outlet.failing.store(true, Ordering::SeqCst);
    let counted = r#"wxcourier_callback_unmark_failures_total{app="shop"} 1"#;
    // Two failures: the third try undoes the mark.
    r.reports.unmark_failures.store(2, Ordering::SeqCst);
    assert_eq!(r.post(plain(&report_xml(11, "success"), GOOD)).await.0, 503);
    assert!(
        r.reports
            .calls()
            .contains(&ReportCall::Unmarked(ReportKey::MsgId(11)))
    );
    assert!(!r.unmark_failures().contains(counted));
    // Always failing: given up, and counted.
    r.reports
        .unmark_failures
        .store(usize::MAX, Ordering::SeqCst);
    assert_eq!(r.post(plain(&report_xml(12, "success"), GOOD)).await.0, 503);
    assert!(
        !r.reports
            .calls()
            .contains(&ReportCall::Unmarked(ReportKey::MsgId(12)))
    );
    assert!(
        r.unmark_failures().contains(counted),
        "{}",
        r.unmark_failures()
    );
}

#[tokio::test]
async fn a_push_cut_off_mid_publish_is_still_published_and_a_stop_waits_for_it() {
    let r = Receiver::with_outlet(CallbackMode::Compat, FakeOutlet::gated());
    let push = plain(&report_xml(21, "success"), GOOD);
    let request = r.post(push);
    // The client goes away once the publish has started.
    tokio::select! {
        _ = request => panic!("answered before the broker confirmed"),
        _ = r.outlet.entered.notified() => {}
    }
    r.tasks.close();
    let mut stopped = std::pin::pin!(r.tasks.wait());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut stopped)
            .await
            .is_err(),
        "a stop waits for the publish"
    );
    r.outlet.gate.as_ref().unwrap().add_permits(1);
    stopped.await;
    assert_eq!(delivered_msgids(&r.outlet), [21]);
}

/// A `subscribe_msg_popup_event` with one item per `(template, decision)`.
fn popup_xml(decisions: &[(&str, &str)]) -> String {
    let items: String = decisions
        .iter()
        .map(|(template, decision)| {
            format!(
                "<List><TemplateId><![CDATA[{template}]]></TemplateId>\
                 <SubscribeStatusString><![CDATA[{decision}]]></SubscribeStatusString>\
                 <PopupScene>1</PopupScene></List>"
            )
        })
        .collect();
    format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser3]]></FromUserName>\
         <CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe_msg_popup_event]]></Event>\
         <SubscribeMsgPopupEvent>{items}</SubscribeMsgPopupEvent></xml>"
    )
}

#[tokio::test]
async fn malformed_user_events_are_named_and_publish_nothing_and_the_real_one_publishes_once() {
    let r = Receiver::new(CallbackMode::Compat);
    let real = popup_xml(&[("T1", "reject")]);
    let crowded: Vec<(String, &str)> = (0..17).map(|i| (format!("T{i}"), "reject")).collect();
    let crowded: Vec<(&str, &str)> = crowded.iter().map(|(t, d)| (t.as_str(), *d)).collect();
    for is_sealed in [false, true] {
        let push = |xml: &str| {
            if is_sealed {
                sealed(xml, GOOD)
            } else {
                plain(xml, GOOD)
            }
        };
        let (status, why) = r.post(push(&popup_xml(&crowded))).await;
        assert_eq!(status, 400, "{why}");
        assert!(why.contains("<List> items"), "{why}");
        for bad in [
            real.replacen("</List>", "", 1),
            real.replace("<List>", "<List><List>"),
            real.replace("<![CDATA[reject]]>", "&lol;"),
            real.replace("<TemplateId><![CDATA[T1]]></TemplateId>", ""),
            real.replace("<![CDATA[oUser3]]>", ""),
            real.replace(
                "<SubscribeStatusString><![CDATA[reject]]></SubscribeStatusString>",
                "",
            ),
        ] {
            let (status, why) = r.post(push(&bad)).await;
            assert_eq!(status, 400, "sealed={is_sealed}: {bad}");
            assert_ne!(why, "Bad Request", "a signed caller is told why");
        }
        // A decision wxcourier does not know is answered, and left out.
        let unknown = real.replace("<![CDATA[reject]]>", "<![CDATA[maybe]]>");
        assert_eq!(r.post(push(&unknown)).await, (200, "success".into()));
    }
    assert!(r.outlet.published().is_empty());
    assert_eq!(r.reports.calls(), [], "nothing above was marked");
    // The real push counts, once however often it comes.
    for push in [plain(&real, GOOD), sealed(&real, GOOD)] {
        assert_eq!(r.post(push).await, (200, "success".into()));
    }
    let published = r.outlet.published();
    assert_eq!(published.len(), 1, "{published:?}");
    let Report::Preference(p) = &published[0] else {
        panic!("{published:?}")
    };
    assert_eq!(
        (p.openid.as_str(), p.template_id.as_str(), p.status.as_str()),
        ("oUser3", "T1", "reject")
    );
}
