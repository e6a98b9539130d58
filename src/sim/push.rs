//! The simulator's pushes to a callback: the result of each accepted send
//! (`TEMPLATESENDJOBFINISH`, `subscribe_msg_sent_event`) and the user events tests ask for
//! (subscription popups and changes, follows), signed (plain) or sealed (safe mode) as WeChat
//! sends them, and retried up to three times like WeChat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::callback::events::{
    SUBSCRIBE_MSG_CHANGE, SUBSCRIBE_MSG_POPUP, SUBSCRIBE_MSG_SENT, TEMPLATE_SEND_JOB_FINISH,
};
use crate::outcome::PreferenceStatus;
use crate::wechat::crypto::{self, Envelope};

/// Where and how to push one app's events.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CallbackTarget {
    /// The server address set in the console, e.g. `http://127.0.0.1:8080/wechat/callback/shop`.
    pub url: String,
    /// The callback Token.
    pub token: String,
    /// The EncodingAESKey: when set, events are pushed in safe mode.
    #[serde(default)]
    pub aes_key: Option<String>,
}

/// One event to push to an app's callback.
pub struct CallbackPush {
    pub target: CallbackTarget,
    pub appid: String,
    pub xml: String,
}

/// An event waiting for its time: WeChat reports a delivery after the send's answer, never
/// before it; a user event goes at once.
pub(crate) struct Queued {
    pub(crate) push: CallbackPush,
    pub(crate) at: tokio::time::Instant,
}

/// Counts of pushes (results and user events alike), for the stats.
#[derive(Default)]
pub(crate) struct PushCounts {
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
}

/// How many pushes may be in flight at once.
const PUSHES_IN_FLIGHT: usize = 64;
/// WeChat tries an event up to three times.
const TRIES: u32 = 3;

/// `text` as XML character data: a CDATA section, split where the text itself holds `]]>`.
fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

/// The fields every event starts with.
fn event_head(appid: &str, touser: &str, created: u64, event: &str) -> String {
    format!(
        "<ToUserName>{}</ToUserName><FromUserName>{}</FromUserName>\
         <CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event>{}</Event>",
        cdata(&format!("gh_{appid}")),
        cdata(touser),
        cdata(event)
    )
}

/// The XML of a `TEMPLATESENDJOBFINISH` event.
pub fn event_xml(appid: &str, touser: &str, msgid: u64, status: &str, created: u64) -> String {
    format!(
        "<xml>{}<MsgID>{msgid}</MsgID><Status>{}</Status></xml>",
        event_head(appid, touser, created, TEMPLATE_SEND_JOB_FINISH),
        cdata(status)
    )
}

/// The XML of a `subscribe_msg_sent_event` for one message: `errcode` 0 with `success`, or a
/// failure.
pub fn sent_event_xml(
    appid: &str,
    touser: &str,
    template_id: &str,
    msgid: u64,
    errcode: i64,
    status: &str,
    created: u64,
) -> String {
    format!(
        "<xml>{}<SubscribeMsgSentEvent><List><TemplateId>{}</TemplateId><MsgID>{msgid}</MsgID>\
         <ErrorCode>{errcode}</ErrorCode><ErrorStatus>{}</ErrorStatus></List></SubscribeMsgSentEvent></xml>",
        event_head(appid, touser, created, SUBSCRIBE_MSG_SENT),
        cdata(template_id),
        cdata(status)
    )
}

/// What a user decided about one template.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub template_id: String,
    /// `accept` or `reject`.
    pub status: PreferenceStatus,
    /// A popup's scene (1 a web page, 2 a message, 0 a mini-program page); not in a change.
    #[serde(default)]
    pub scene: Option<u32>,
}

/// A user event the simulator can push on request, named as WeChat names it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum UserEvent {
    /// The user answered a subscription popup.
    SubscribeMsgPopupEvent { templates: Vec<Decision> },
    /// The user changed templates in the message settings (WeChat pushes refusals only).
    SubscribeMsgChangeEvent { templates: Vec<Decision> },
    /// The user followed the account.
    Subscribe,
    /// The user stopped following the account.
    Unsubscribe,
}

impl UserEvent {
    /// The templates it decides, accepted or refused.
    pub(crate) fn decisions(&self) -> &[Decision] {
        match self {
            UserEvent::SubscribeMsgPopupEvent { templates }
            | UserEvent::SubscribeMsgChangeEvent { templates } => templates,
            UserEvent::Subscribe | UserEvent::Unsubscribe => &[],
        }
    }
}

/// The XML of `event` from `touser`, as WeChat pushes it.
pub fn user_event_xml(appid: &str, touser: &str, event: &UserEvent, created: u64) -> String {
    let (name, wrapper) = match event {
        UserEvent::SubscribeMsgPopupEvent { .. } => (SUBSCRIBE_MSG_POPUP, "SubscribeMsgPopupEvent"),
        UserEvent::SubscribeMsgChangeEvent { .. } => {
            (SUBSCRIBE_MSG_CHANGE, "SubscribeMsgChangeEvent")
        }
        UserEvent::Subscribe => (crate::callback::events::SUBSCRIBE, ""),
        UserEvent::Unsubscribe => (crate::callback::events::UNSUBSCRIBE, ""),
    };
    let mut xml = format!("<xml>{}", event_head(appid, touser, created, name));
    if !wrapper.is_empty() {
        xml.push_str(&format!("<{wrapper}>"));
        for d in event.decisions() {
            xml.push_str(&format!(
                "<List><TemplateId>{}</TemplateId><SubscribeStatusString>{}</SubscribeStatusString>",
                cdata(&d.template_id),
                cdata(d.status.as_str())
            ));
            if let Some(scene) = d.scene {
                xml.push_str(&format!("<PopupScene>{scene}</PopupScene>"));
            }
            xml.push_str("</List>");
        }
        xml.push_str(&format!("</{wrapper}>"));
    }
    xml.push_str("</xml>");
    xml
}

/// The URL and body WeChat would send for `push`, signed now.
pub fn signed_request(push: &CallbackPush) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    signed_request_at(push, now)
}

/// As [`signed_request`], signed as of `timestamp` (Unix seconds), as a replayed or delayed
/// push would be.
pub fn signed_request_at(push: &CallbackPush, timestamp: u64) -> (String, String) {
    let timestamp = timestamp.to_string();
    let nonce = rand::random::<u32>().to_string();
    let token = push.target.token.as_str();
    let signature = crypto::signature(&[token, &timestamp, &nonce]);
    let sep = if push.target.url.contains('?') {
        '&'
    } else {
        '?'
    };
    let base = format!(
        "{}{sep}signature={signature}&timestamp={timestamp}&nonce={nonce}",
        push.target.url
    );
    let key = push
        .target
        .aes_key
        .as_deref()
        .and_then(crate::types::decode_aes_key);
    match key {
        None => (base, push.xml.clone()),
        Some(key) => {
            let sealed = Envelope::new(key, push.appid.clone()).seal(&push.xml, rand::random());
            let msg_signature = crypto::signature(&[token, &timestamp, &nonce, &sealed]);
            let body = format!(
                "<xml><ToUserName><![CDATA[gh_{}]]></ToUserName><Encrypt><![CDATA[{sealed}]]></Encrypt></xml>",
                push.appid
            );
            (
                format!("{base}&encrypt_type=aes&msg_signature={msg_signature}"),
                body,
            )
        }
    }
}

/// Pushes events from `queue` until it closes.
pub(crate) async fn run(mut queue: mpsc::UnboundedReceiver<Queued>, counts: Arc<PushCounts>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("a plain HTTP client builds");
    let slots = Arc::new(Semaphore::new(PUSHES_IN_FLIGHT));
    while let Some(Queued { push, at }) = queue.recv().await {
        let (client, counts, slots) = (client.clone(), counts.clone(), slots.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let Ok(slot) = slots.acquire_owned().await else {
                return;
            };
            for attempt in 1..=TRIES {
                let (url, body) = signed_request(&push);
                let answered = client.post(url).body(body).send().await;
                if let Ok(resp) = answered
                    && resp.status().is_success()
                    && resp.text().await.is_ok_and(|t| t == "success")
                {
                    counts.delivered.fetch_add(1, Ordering::Relaxed);
                    drop(slot);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 * attempt as u64)).await;
            }
            counts.failed.fetch_add(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}
