//! The simulator's `TEMPLATESENDJOBFINISH` pushes: signed (plain) or sealed (safe mode) as
//! WeChat sends them, retried up to three times like WeChat.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

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

/// One event to push.
pub struct Push {
    pub target: CallbackTarget,
    pub appid: String,
    pub xml: String,
}

/// An event waiting for its time: WeChat reports a delivery after the send's answer, never
/// before it.
pub struct Queued {
    pub push: Push,
    pub at: tokio::time::Instant,
}

/// Counts of pushes, for the stats.
#[derive(Default)]
pub struct PushCounts {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
}

/// How many pushes may be in flight at once.
const PUSHES_IN_FLIGHT: usize = 64;
/// WeChat tries an event up to three times.
const TRIES: u32 = 3;

/// The XML of a `TEMPLATESENDJOBFINISH` event.
pub fn event_xml(appid: &str, touser: &str, msgid: u64, status: &str, created: u64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_{appid}]]></ToUserName><FromUserName><![CDATA[{touser}]]></FromUserName>\
         <CreateTime>{created}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>\
         <Status><![CDATA[{status}]]></Status></xml>"
    )
}

/// The URL and body WeChat would send for `push`, signed now.
pub fn signed_request(push: &Push) -> (String, String) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    signed_request_at(push, now)
}

/// As [`signed_request`], signed as of `timestamp` (Unix seconds), as a replayed or delayed
/// push would be.
pub fn signed_request_at(push: &Push, timestamp: u64) -> (String, String) {
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
pub async fn run(mut queue: mpsc::UnboundedReceiver<Queued>, counts: Arc<PushCounts>) {
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
