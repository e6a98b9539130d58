//! Users' events and their preference gates, through the receiver: an unsubscribe sets the
//! gate and a subscribe lifts it, a rejected template sets its gate and an accept lifts it,
//! before the report is published; an app that does not honour preferences keeps none; and a
//! gate that cannot be written leaves the push to WeChat's retry.

use super::*;
use crate::preferences::AppGates;
use crate::state::gates::{GateScope, GateWhy, Gates, MemoryGates};

/// A push of `event` (`subscribe`, `unsubscribe`) by `oUser9` at `created`.
fn follow_xml(event: &str, created: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_1]]></ToUserName><FromUserName><![CDATA[oUser9]]></FromUserName>\
         <CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[{event}]]></Event></xml>"
    )
}

/// A receiver for [`APP`] whose gates, kept in `store`, it sets when `honour`.
fn receiver(store: Arc<dyn Gates>, honour: bool) -> Receiver {
    let mut r = Receiver::new(CallbackMode::Plain);
    let mut settings = Settings::default();
    let mut app = AppSettings::new(APPID, Secret::new("secret"));
    app.honor_preferences = honour;
    app.gate_ttl = Span(Duration::from_secs(3600));
    settings.apps.insert(APP.into(), app);
    let state = Arc::try_unwrap(r.state).ok().expect("the only holder");
    r.state = Arc::new(state.with_gates(AppGates::new(&settings, &store)));
    r
}

fn now() -> i64 {
    NOW as i64
}

#[tokio::test]
async fn an_unsubscribe_sets_the_gate_and_a_subscribe_lifts_it() {
    let store: Arc<dyn Gates> = Arc::new(MemoryGates::new(10));
    let r = receiver(store.clone(), true);
    let ok = (200, "success".to_owned());
    assert_eq!(
        r.post(plain(&follow_xml("unsubscribe", NOW - 5), GOOD))
            .await,
        ok
    );
    let gate = store.gate_for(APP, "oUser9", "any", now()).await.unwrap();
    let gate = gate.expect("the unsubscribe set a gate");
    assert_eq!(
        (gate.scope, gate.why, gate.set_at, gate.expires_at),
        (GateScope::All, GateWhy::NotFollowing, now(), now() + 3600)
    );
    assert_eq!(r.outlet.published().len(), 1, "the report is published too");

    assert_eq!(
        r.post(plain(&follow_xml("subscribe", NOW - 2), GOOD)).await,
        ok
    );
    assert_eq!(
        store.gate_for(APP, "oUser9", "any", now()).await.unwrap(),
        None
    );
    assert_eq!(r.outlet.published().len(), 2);
}

#[tokio::test]
async fn a_rejected_template_sets_its_gate_and_an_accept_lifts_it() {
    let store: Arc<dyn Gates> = Arc::new(MemoryGates::new(10));
    let r = receiver(store.clone(), true);
    let ok = (200, "success".to_owned());
    assert_eq!(
        r.post(plain(
            &popup_xml(&[("T1", "reject"), ("T2", "accept")]),
            GOOD
        ))
        .await,
        ok
    );
    let gate = store
        .gate_for(APP, "oUser3", "T1", now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (gate.scope, gate.why),
        (GateScope::Template("T1".into()), GateWhy::Refused)
    );
    assert_eq!(
        store.gate_for(APP, "oUser3", "T2", now()).await.unwrap(),
        None
    );
    assert_eq!(
        r.post(plain(&popup_xml(&[("T1", "accept")]), GOOD)).await,
        ok
    );
    assert_eq!(
        store.gate_for(APP, "oUser3", "T1", now()).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn an_app_that_does_not_honour_preferences_keeps_no_gate() {
    let store: Arc<dyn Gates> = Arc::new(MemoryGates::new(10));
    let r = receiver(store.clone(), false);
    assert_eq!(
        r.post(plain(&follow_xml("unsubscribe", NOW), GOOD)).await.0,
        200
    );
    assert_eq!(
        r.post(plain(&popup_xml(&[("T1", "reject")]), GOOD)).await.0,
        200
    );
    assert!(store.list_gates(APP, None, now()).await.unwrap().is_empty());
    assert_eq!(r.outlet.published().len(), 2);
}

/// Gates whose backend is unreachable.
struct Unreachable;

fn outage<T: Send + 'static>() -> BoxFuture<'static, crate::state::StateResult<T>> {
    Box::pin(async {
        Err(crate::state::StateError::Unavailable(
            "connection refused".into(),
        ))
    })
}

impl Gates for Unreachable {
    fn set_gate<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a GateScope,
        _: GateWhy,
        _: i64,
        _: Duration,
    ) -> BoxFuture<'a, crate::state::StateResult<()>> {
        outage()
    }
    fn lift_gate<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a GateScope,
    ) -> BoxFuture<'a, crate::state::StateResult<()>> {
        outage()
    }
    fn gate_for<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a str,
        _: i64,
    ) -> BoxFuture<'a, crate::state::StateResult<Option<crate::state::Gate>>> {
        outage()
    }
    fn list_gates<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a str>,
        _: i64,
    ) -> BoxFuture<'a, crate::state::StateResult<Vec<crate::state::Gate>>> {
        outage()
    }
    fn clear_gates<'a>(
        &'a self,
        _: &'a str,
        _: Option<&'a str>,
        _: i64,
    ) -> BoxFuture<'a, crate::state::StateResult<usize>> {
        outage()
    }
}

#[tokio::test]
async fn a_gate_that_cannot_be_written_leaves_the_push_to_wechats_retry() {
    let r = receiver(Arc::new(Unreachable), true);
    let (status, _) = r.post(plain(&follow_xml("unsubscribe", NOW), GOOD)).await;
    assert_eq!(status, 503);
    assert!(
        r.outlet.published().is_empty(),
        "not published without its gate"
    );
    let calls = r.reports.calls();
    assert!(
        matches!(calls.as_slice(), [ReportCall::Marked(k), ReportCall::Unmarked(u)] if k == u),
        "marked, then unmarked for the retry: {calls:?}"
    );
}
