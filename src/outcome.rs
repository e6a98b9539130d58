//! The outcome and report wire formats (CONTRACT §2: send outcomes, delivery reports, and the
//! preference and follow reports of WeChat's user events) and their routing keys.

pub(crate) mod cancel;
mod routing;
#[cfg(test)]
mod schema;

pub(crate) use routing::routing_key;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// The final status of a send job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SendStatus {
    Sent,
    Failed,
    Rejected,
    Expired,
    /// A cancel for its id came before it was sent; no WeChat call was made.
    Cancelled,
    /// A delivery policy held it back (its `reason` says which); no quota was spent and no
    /// WeChat call was made.
    Suppressed,
}

impl SendStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SendStatus::Sent => "sent",
            SendStatus::Failed => "failed",
            SendStatus::Rejected => "rejected",
            SendStatus::Expired => "expired",
            SendStatus::Cancelled => "cancelled",
            SendStatus::Suppressed => "suppressed",
        }
    }
}

/// Why a `failed` job failed (decided by [`crate::wechat::reason`]) or why a `suppressed` one
/// was held back, for a producer to act on without an errcode table. The first eleven are the
/// reasons of `failed`; `recipient_refused`, `not_following` and the last four are those of
/// `suppressed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OutcomeReason {
    RecipientRefused,
    NotFollowing,
    InvalidRecipient,
    TemplateInvalid,
    ContentRejected,
    /// The account may not call this API: not authorised, banned, or not granted to the
    /// platform that sends for it.
    NotPermitted,
    /// The account withdrew the platform's authorisation.
    AuthorizationRevoked,
    QuotaExhausted,
    RetriesExhausted,
    ConfigError,
    Other,
    /// Suppressed: it came during the app's quiet hours, with `quiet_mode = "drop"`.
    QuietHours,
    /// Suppressed: the recipient had its `apps.NAME.recipient_limit` of sends in the window.
    FrequencyCap,
    /// Suppressed: the same template, recipient and data were sent within
    /// `apps.NAME.content_dedup`.
    ContentDuplicate,
    /// Suppressed: its template is paused, with the pause set to drop.
    Paused,
}

/// One job's final outcome, published to `wxcourier.results` as `STATUS.APP`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SendOutcome {
    pub(crate) kind: String,
    pub(crate) id: Option<String>,
    pub(crate) app: String,
    pub(crate) status: SendStatus,
    pub(crate) touser: Option<String>,
    pub(crate) template_id: Option<String>,
    pub(crate) msgid: Option<u64>,
    pub(crate) errcode: Option<i64>,
    pub(crate) errmsg: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) duplicate: bool,
    pub(crate) error: Option<String>,
    /// Set on every `failed` and `suppressed` outcome, null otherwise.
    #[serde(default)]
    pub(crate) reason: Option<OutcomeReason>,
    /// The job's kind, on outcomes of every kind but `template` (whose outcomes keep the
    /// original field set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) message_kind: Option<String>,
    /// What WeChat will not show as the job asked, or what was changed to send it; absent when
    /// there is none, so an outcome without warnings keeps the original field set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) warnings: Vec<String>,
    pub(crate) meta: Option<Value>,
    pub(crate) finished_at: String,
}

impl SendOutcome {
    /// An outcome with every optional field empty; the callers fill in what they know.
    /// `finished` comes from the caller's clock: this wire format reads no clock of its own.
    pub(crate) fn new(app: &str, status: SendStatus, finished: OffsetDateTime) -> Self {
        Self {
            kind: "send".into(),
            id: None,
            app: app.into(),
            status,
            touser: None,
            template_id: None,
            msgid: None,
            errcode: None,
            errmsg: None,
            attempts: 0,
            duplicate: false,
            error: None,
            reason: None,
            message_kind: None,
            warnings: Vec::new(),
            meta: None,
            finished_at: format_timestamp(finished),
        }
    }

    pub(crate) fn routing_key(&self) -> String {
        routing_key(self.status.as_str(), &self.app)
    }
}

/// What WeChat reported about a message it had accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeliveryStatus {
    Delivered,
    Blocked,
    DeliveryFailed,
}

impl DeliveryStatus {
    /// Maps WeChat's `Status` text: `success`, `failed:user block`, any other `failed…`.
    pub(crate) fn from_wechat(status: &str) -> Self {
        let s = status.trim();
        if s == "success" {
            DeliveryStatus::Delivered
        } else if s
            .strip_prefix("failed")
            .map(|r| r.trim_start_matches(':').trim())
            == Some("user block")
        {
            DeliveryStatus::Blocked
        } else {
            DeliveryStatus::DeliveryFailed
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Blocked => "blocked",
            DeliveryStatus::DeliveryFailed => "delivery_failed",
        }
    }
}

/// A `TEMPLATESENDJOBFINISH` event, or one item of a `subscribe_msg_sent_event`, tied back to
/// its job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeliveryReport {
    pub(crate) kind: String,
    pub(crate) app: String,
    pub(crate) status: DeliveryStatus,
    pub(crate) msgid: u64,
    pub(crate) touser: String,
    pub(crate) wechat_status: String,
    pub(crate) id: Option<String>,
    pub(crate) meta: Option<Value>,
    pub(crate) event_time: i64,
    /// The item's `TemplateId`, on reports of subscription messages only (a template report
    /// keeps the original field set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) template_id: Option<String>,
    /// The item's `ErrorCode` (0 when delivered), on reports of subscription messages only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) errcode: Option<i64>,
}

impl DeliveryReport {
    pub(crate) fn routing_key(&self) -> String {
        routing_key(self.status.as_str(), &self.app)
    }
}

/// What a user decided about a template in a subscription popup or in the message settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreferenceStatus {
    Accept,
    Reject,
}

impl PreferenceStatus {
    /// WeChat's `SubscribeStatusString`: `accept` or `reject`. Mini programs also name an
    /// acceptance with a voice or alert reminder (`acceptWithAudio`, …): still an acceptance.
    /// Anything else is not a decision wxcourier knows.
    pub(crate) fn from_wechat(text: &str) -> Option<Self> {
        let text = text.trim();
        if text == "reject" {
            Some(PreferenceStatus::Reject)
        } else if text.starts_with("accept") {
            Some(PreferenceStatus::Accept)
        } else {
            None
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PreferenceStatus::Accept => "accept",
            PreferenceStatus::Reject => "reject",
        }
    }
}

/// One template a user accepted or refused (`subscribe_msg_popup_event`,
/// `subscribe_msg_change_event`), published as `preference.APP`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct PreferenceReport {
    pub(crate) kind: String,
    pub(crate) app: String,
    pub(crate) openid: String,
    pub(crate) template_id: String,
    pub(crate) status: PreferenceStatus,
    /// The WeChat event it came from.
    pub(crate) event: String,
    /// A popup's `PopupScene` (1 a web page, 2 a message, 0 a mini-program page); null for a
    /// change in the settings.
    pub(crate) scene: Option<u32>,
    pub(crate) event_time: i64,
}

impl PreferenceReport {
    pub(crate) fn routing_key(&self) -> String {
        routing_key(PREFERENCE, &self.app)
    }
}

/// Whether a user now follows the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FollowStatus {
    Subscribe,
    Unsubscribe,
}

impl FollowStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FollowStatus::Subscribe => "subscribe",
            FollowStatus::Unsubscribe => "unsubscribe",
        }
    }
}

/// A user followed (`subscribe`) or unfollowed (`unsubscribe`) the account, published as
/// `follow.APP`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct FollowReport {
    pub(crate) kind: String,
    pub(crate) app: String,
    pub(crate) openid: String,
    pub(crate) status: FollowStatus,
    pub(crate) event_time: i64,
}

impl FollowReport {
    pub(crate) fn routing_key(&self) -> String {
        routing_key(FOLLOW, &self.app)
    }
}

/// The STATUS of every routing key `STATUS.APP` an app's results are published under: its
/// send outcomes (`cancelled` and the answers to cancels, which any producer may send; with
/// `suppresses`, a policy of the app's can suppress, `suppressed`), and with `reports` (it
/// takes WeChat's pushes) its delivery, preference and follow reports.
pub(crate) fn result_statuses(reports: bool, suppresses: bool) -> Vec<&'static str> {
    let mut statuses: Vec<&'static str> = [
        SendStatus::Sent,
        SendStatus::Failed,
        SendStatus::Rejected,
        SendStatus::Expired,
        SendStatus::Cancelled,
    ]
    .map(SendStatus::as_str)
    .to_vec();
    statuses.push(cancel::ANSWER_STATUS);
    if suppresses {
        statuses.push(SendStatus::Suppressed.as_str());
    }
    if reports {
        statuses.extend(
            [
                DeliveryStatus::Delivered,
                DeliveryStatus::Blocked,
                DeliveryStatus::DeliveryFailed,
            ]
            .map(DeliveryStatus::as_str),
        );
        statuses.extend([PREFERENCE, FOLLOW]);
    }
    statuses
}

/// The STATUS of every preference report's routing key.
const PREFERENCE: &str = "preference";
/// The STATUS of every follow report's routing key.
const FOLLOW: &str = "follow";

/// `t` as RFC 3339 in UTC with milliseconds: `2026-11-28T09:12:03.120Z`. Written field by
/// field into one string: every outcome and every step of a story carries one, and the `time`
/// crate's RFC 3339 formatter (which also drops trailing zero fractions) builds it in pieces.
pub(crate) fn format_timestamp(t: OffsetDateTime) -> String {
    use std::fmt::Write;
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut text = String::with_capacity(TIMESTAMP_LEN);
    let _ = write!(
        text,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    );
    text
}

/// `2026-11-28T09:12:03.120Z`.
const TIMESTAMP_LEN: usize = 24;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The time the outcomes below finished at.
    const T: OffsetDateTime = time::macros::datetime!(2026-11-28 09:12:03.120 UTC);

    #[test]
    fn a_send_outcome_has_exactly_the_contract_fields() {
        let mut o = SendOutcome::new("default", SendStatus::Sent, T);
        o.id = Some("order-1842-paid".into());
        o.touser = Some("oia2TjuEGTNoeX76QEjQNrcURxG8".into());
        o.template_id = Some("tpl".into());
        o.msgid = Some(200228332);
        o.errcode = Some(0);
        o.errmsg = Some("ok".into());
        o.attempts = 1;
        o.meta = Some(json!({"order": 1842}));
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(
            v,
            json!({
                "kind": "send", "id": "order-1842-paid", "app": "default", "status": "sent",
                "touser": "oia2TjuEGTNoeX76QEjQNrcURxG8", "template_id": "tpl",
                "msgid": 200228332, "errcode": 0, "errmsg": "ok", "attempts": 1,
                "duplicate": false, "error": null, "reason": null, "meta": {"order": 1842},
                "finished_at": "2026-11-28T09:12:03.120Z"
            })
        );
        assert_eq!(o.routing_key(), "sent.default");
    }

    #[test]
    fn a_failed_outcome_names_its_reason_in_snake_case() {
        let mut o = SendOutcome::new("a", SendStatus::Failed, T);
        o.reason = Some(OutcomeReason::RecipientRefused);
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(v["reason"], "recipient_refused");
        let back: SendOutcome = serde_json::from_value(v).unwrap();
        assert_eq!(back.reason, Some(OutcomeReason::RecipientRefused));
    }

    #[test]
    fn the_reasons_added_later_keep_their_contract_words() {
        for (reason, word) in [
            (OutcomeReason::NotPermitted, "not_permitted"),
            (OutcomeReason::AuthorizationRevoked, "authorization_revoked"),
            (OutcomeReason::QuietHours, "quiet_hours"),
            (OutcomeReason::FrequencyCap, "frequency_cap"),
            (OutcomeReason::ContentDuplicate, "content_duplicate"),
            (OutcomeReason::Paused, "paused"),
        ] {
            assert_eq!(serde_json::to_value(reason).unwrap(), word);
            assert_eq!(
                serde_json::from_value::<OutcomeReason>(word.into()).unwrap(),
                reason
            );
        }
    }

    #[test]
    fn suppressed_is_a_result_status_only_where_a_policy_can_suppress() {
        let plain = result_statuses(false, false);
        assert_eq!(
            plain,
            [
                "sent",
                "failed",
                "rejected",
                "expired",
                "cancelled",
                "cancel"
            ]
        );
        assert!(result_statuses(false, true).contains(&"suppressed"));
        let all = result_statuses(true, true);
        for s in ["delivered", "preference", "follow", "suppressed"] {
            assert!(all.contains(&s), "{s}");
        }
    }

    #[test]
    fn the_policy_statuses_route_as_their_contract_words() {
        let mut o = SendOutcome::new("shop", SendStatus::Suppressed, T);
        o.reason = Some(OutcomeReason::QuietHours);
        assert_eq!(o.routing_key(), "suppressed.shop");
        let v = serde_json::to_value(&o).unwrap();
        assert_eq!(
            (&v["status"], &v["reason"]),
            (&json!("suppressed"), &json!("quiet_hours"))
        );
        let o = SendOutcome::new("shop", SendStatus::Cancelled, T);
        assert_eq!(o.routing_key(), "cancelled.shop");
        assert_eq!(serde_json::to_value(&o).unwrap()["reason"], Value::Null);
    }

    #[test]
    fn msgid_above_2_pow_53_survives_the_round_trip() {
        let mut o = SendOutcome::new("a", SendStatus::Sent, T);
        o.msgid = Some(u64::MAX - 1);
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains("\"msgid\":18446744073709551614"));
        let back: SendOutcome = serde_json::from_str(&text).unwrap();
        assert_eq!(back.msgid, Some(u64::MAX - 1));
    }

    #[test]
    fn statuses_and_routing_keys() {
        for (s, key) in [
            (SendStatus::Failed, "failed.shop"),
            (SendStatus::Rejected, "rejected.shop"),
            (SendStatus::Expired, "expired.shop"),
        ] {
            assert_eq!(SendOutcome::new("shop", s, T).routing_key(), key);
        }
    }

    #[test]
    fn wechat_delivery_texts_map_to_statuses() {
        assert_eq!(
            DeliveryStatus::from_wechat("success"),
            DeliveryStatus::Delivered
        );
        assert_eq!(
            DeliveryStatus::from_wechat("failed:user block"),
            DeliveryStatus::Blocked
        );
        assert_eq!(
            DeliveryStatus::from_wechat("failed: user block"),
            DeliveryStatus::Blocked
        );
        assert_eq!(
            DeliveryStatus::from_wechat("failed: system failed"),
            DeliveryStatus::DeliveryFailed
        );
        assert_eq!(
            DeliveryStatus::from_wechat("failed:freq limit"),
            DeliveryStatus::DeliveryFailed
        );
        assert_eq!(
            DeliveryStatus::from_wechat("something new"),
            DeliveryStatus::DeliveryFailed
        );
    }

    #[test]
    fn a_delivery_report_pins_its_wire_format() {
        let r = DeliveryReport {
            kind: "delivery".into(),
            app: "default".into(),
            status: DeliveryStatus::DeliveryFailed,
            msgid: 200163836,
            touser: "oia2".into(),
            wechat_status: "failed: system failed".into(),
            id: None,
            meta: None,
            event_time: 1395658920,
            template_id: None,
            errcode: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"kind": "delivery", "app": "default", "status": "delivery_failed",
                   "msgid": 200163836, "touser": "oia2", "wechat_status": "failed: system failed",
                   "id": null, "meta": null, "event_time": 1395658920})
        );
        assert_eq!(r.routing_key(), "delivery_failed.default");
    }

    #[test]
    fn a_subscription_delivery_report_adds_its_template_and_errcode() {
        let r = DeliveryReport {
            kind: "delivery".into(),
            app: "shop".into(),
            status: DeliveryStatus::DeliveryFailed,
            msgid: 1700827132819554304,
            touser: "oia2".into(),
            wechat_status: "failed: system failed".into(),
            id: Some("order-1".into()),
            meta: None,
            event_time: 1610969440,
            template_id: Some("VRR0".into()),
            errcode: Some(-1),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            (v["template_id"].clone(), v["errcode"].clone()),
            (json!("VRR0"), json!(-1))
        );
        assert_eq!(v["msgid"].as_u64(), Some(1700827132819554304));
        let back: DeliveryReport = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_preference_report_pins_its_wire_format() {
        let r = PreferenceReport {
            kind: "preference".into(),
            app: "default".into(),
            openid: "oia2".into(),
            template_id: "VRR0".into(),
            status: PreferenceStatus::Reject,
            event: "subscribe_msg_change_event".into(),
            scene: None,
            event_time: 1610969440,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"kind": "preference", "app": "default", "openid": "oia2",
                   "template_id": "VRR0", "status": "reject",
                   "event": "subscribe_msg_change_event", "scene": null,
                   "event_time": 1610969440})
        );
        assert_eq!(r.routing_key(), "preference.default");
    }

    #[test]
    fn a_follow_report_pins_its_wire_format() {
        let r = FollowReport {
            kind: "follow".into(),
            app: "shop".into(),
            openid: "oia2".into(),
            status: FollowStatus::Unsubscribe,
            event_time: 1610969440,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"kind": "follow", "app": "shop", "openid": "oia2",
                   "status": "unsubscribe", "event_time": 1610969440})
        );
        assert_eq!(r.routing_key(), "follow.shop");
    }

    #[test]
    fn subscribe_status_strings_map_to_decisions() {
        for (text, want) in [
            ("accept", Some(PreferenceStatus::Accept)),
            (" reject ", Some(PreferenceStatus::Reject)),
            ("acceptWithAudio", Some(PreferenceStatus::Accept)),
            ("ban", None),
            ("", None),
            ("REJECT", None),
        ] {
            assert_eq!(PreferenceStatus::from_wechat(text), want, "{text:?}");
        }
    }

    #[test]
    fn timestamps_always_have_three_fraction_digits() {
        let t = OffsetDateTime::from_unix_timestamp(1_764_321_123).unwrap();
        assert_eq!(format_timestamp(t), "2025-11-28T09:12:03.000Z");
        let t = t + time::Duration::milliseconds(120);
        assert_eq!(format_timestamp(t), "2025-11-28T09:12:03.120Z");
        // Another offset is written in UTC, and the text reads back as RFC 3339.
        let east = t.to_offset(time::UtcOffset::from_hms(8, 0, 0).unwrap());
        let text = format_timestamp(east);
        assert_eq!(text, "2025-11-28T09:12:03.120Z");
        assert_eq!(text.len(), TIMESTAMP_LEN);
        let back = OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339);
        let back = back.unwrap();
        assert_eq!(back, t);
    }
}
