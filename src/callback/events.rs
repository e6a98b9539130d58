//! WeChat's pushed events mapped to the reports wxcourier publishes (CONTRACT §2, §5): which
//! events count, what each report says, and what names it for de-duplication. No I/O here:
//! the job behind a MsgID is looked up, and the reports published, by [`super::report`].

use std::collections::HashMap;

use serde::Serialize;

use super::xml::{CallbackXml, Item};
use crate::outcome::{
    DeliveryReport, DeliveryStatus, FollowReport, FollowStatus, PreferenceReport, PreferenceStatus,
};
use crate::state::ReportKey;
use crate::text::bounded;

/// A template message's final result.
pub(crate) const TEMPLATE_SEND_JOB_FINISH: &str = "TEMPLATESENDJOBFINISH";
/// The final result of each subscription message (service account or mini program).
pub(crate) const SUBSCRIBE_MSG_SENT: &str = "subscribe_msg_sent_event";
/// A user's answer to a subscription popup, per template.
pub(crate) const SUBSCRIBE_MSG_POPUP: &str = "subscribe_msg_popup_event";
/// A user's change in the message settings (WeChat pushes refusals only).
pub(crate) const SUBSCRIBE_MSG_CHANGE: &str = "subscribe_msg_change_event";
/// A user follows the account.
pub(crate) const SUBSCRIBE: &str = "subscribe";
/// A user stops following the account.
pub(crate) const UNSUBSCRIBE: &str = "unsubscribe";

/// Longest OpenID echoed into a report (WeChat's are 28 characters; a longer one is cut).
const MAX_OPENID: usize = 128;
/// Longest template id echoed (CONTRACT §1 allows 128).
const MAX_TEMPLATE_ID: usize = 128;
/// Longest WeChat status text echoed.
const MAX_WECHAT_STATUS: usize = 256;
/// Longest unknown value repeated in a log line.
const MAX_LOGGED: usize = 64;

/// One report to publish.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub(crate) enum Report {
    Delivery(DeliveryReport),
    Preference(PreferenceReport),
    Follow(FollowReport),
}

impl Report {
    pub(crate) fn routing_key(&self) -> String {
        match self {
            Report::Delivery(r) => r.routing_key(),
            Report::Preference(r) => r.routing_key(),
            Report::Follow(r) => r.routing_key(),
        }
    }

    /// The status it is counted under in `wxcourier_callback_events_total`.
    pub(crate) fn status(&self) -> &'static str {
        match self {
            Report::Delivery(r) => r.status.as_str(),
            Report::Preference(r) => r.status.as_str(),
            Report::Follow(r) => r.status.as_str(),
        }
    }

    /// The job id, the AMQP `correlation_id` of a delivery report tied to its job.
    pub(crate) fn job_id(&self) -> Option<&str> {
        match self {
            Report::Delivery(r) => r.id.as_deref(),
            Report::Preference(_) | Report::Follow(_) => None,
        }
    }
}

/// A report and what names it for de-duplication (WeChat repeats a push up to three times).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Pending {
    pub(crate) report: Report,
    /// `None` when nothing usable names it (MsgID 0 or missing, no CreateTime): such a report
    /// is published every time it comes.
    pub(crate) seen: Option<ReportKey>,
}

/// The reports of one push, and the parts of it that were left out, in words for the log.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Event {
    pub(crate) reports: Vec<Pending>,
    pub(crate) ignored: Vec<String>,
}

/// Why a push that names a known event cannot be read as one (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct EventError(pub(crate) String);

fn missing(what: &str) -> EventError {
    EventError(format!("{what} is missing"))
}

/// The reports one message makes for `app`: none for messages and events wxcourier does not
/// report, one per `<List>` item for the subscription events.
pub(crate) fn map(app: &str, message: &CallbackXml) -> Result<Event, EventError> {
    let f = &message.fields;
    if f.get("MsgType").map(String::as_str) != Some("event") {
        return Ok(Event::default());
    }
    let event = f.get("Event").map(String::as_str).unwrap_or_default();
    let push = EventFields { app, fields: f };
    match event {
        TEMPLATE_SEND_JOB_FINISH => Ok(Event {
            reports: vec![push.template_finished()?],
            ignored: Vec::new(),
        }),
        SUBSCRIBE_MSG_SENT => push.each(&message.items, |item| push.subscribe_sent(item)),
        SUBSCRIBE_MSG_POPUP | SUBSCRIBE_MSG_CHANGE => push.preferences(event, &message.items),
        SUBSCRIBE => Ok(Event {
            reports: vec![push.follow(event, FollowStatus::Subscribe)?],
            ignored: Vec::new(),
        }),
        UNSUBSCRIBE => Ok(Event {
            reports: vec![push.follow(event, FollowStatus::Unsubscribe)?],
            ignored: Vec::new(),
        }),
        _ => Ok(Event::default()),
    }
}

/// The flat fields of one push, read for one app.
struct EventFields<'a> {
    app: &'a str,
    fields: &'a HashMap<String, String>,
}

impl EventFields<'_> {
    /// `CreateTime` as a number, 0 when missing or unreadable.
    fn event_time(&self) -> i64 {
        self.created().unwrap_or(0)
    }

    /// `CreateTime` when it is a positive number: only then can it name an event.
    fn created(&self) -> Option<i64> {
        self.fields
            .get("CreateTime")
            .and_then(|t| t.trim().parse().ok())
            .filter(|&t: &i64| t > 0)
    }

    /// The user, required by every user event.
    fn openid(&self) -> Result<String, EventError> {
        match self.fields.get("FromUserName").map(|u| u.trim()) {
            None | Some("") => Err(missing("FromUserName")),
            Some(user) => Ok(bounded(user, MAX_OPENID)),
        }
    }

    /// The de-duplication key of a user event: `parts` after the time, or none without a
    /// time. JSON, so no part can run into the next.
    fn event_key(&self, event: &str, parts: &[&str]) -> Option<ReportKey> {
        match self.created() {
            Some(t) => {
                let t = t.to_string();
                let mut all = vec![event, t.as_str()];
                all.extend_from_slice(parts);
                Some(ReportKey::Event(
                    serde_json::to_string(&all).expect("strings serialize"),
                ))
            }
            None => None,
        }
    }

    /// One report per item, by `one`.
    fn each(
        &self,
        items: &[Item],
        one: impl Fn(&Item) -> Result<Pending, EventError>,
    ) -> Result<Event, EventError> {
        Ok(Event {
            reports: items.iter().map(one).collect::<Result<_, _>>()?,
            ignored: Vec::new(),
        })
    }

    fn delivery(
        &self,
        status: DeliveryStatus,
        msgid: Option<u64>,
        wechat_status: &str,
    ) -> DeliveryReport {
        DeliveryReport {
            kind: "delivery".into(),
            app: self.app.to_owned(),
            status,
            msgid: msgid.unwrap_or(0),
            touser: bounded(
                self.fields.get("FromUserName").map_or("", |u| u.trim()),
                MAX_OPENID,
            ),
            wechat_status: bounded(wechat_status, MAX_WECHAT_STATUS),
            id: None,
            meta: None,
            event_time: self.event_time(),
            template_id: None,
            errcode: None,
        }
    }

    /// `TEMPLATESENDJOBFINISH`: `Status` is `success`, `failed:user block` or another failure.
    fn template_finished(&self) -> Result<Pending, EventError> {
        let msgid = usable_msgid(self.fields.get("MsgID"))?;
        let wechat_status = self.fields.get("Status").ok_or_else(|| missing("Status"))?;
        let report = self.delivery(
            DeliveryStatus::from_wechat(wechat_status),
            msgid,
            wechat_status,
        );
        Ok(Pending {
            report: Report::Delivery(report),
            seen: msgid.map(ReportKey::MsgId),
        })
    }

    /// One item of `subscribe_msg_sent_event`: `ErrorCode` 0 is delivered; any other code is a
    /// failure, `blocked` when its `ErrorStatus` reads as a block like a template report's.
    fn subscribe_sent(&self, item: &Item) -> Result<Pending, EventError> {
        let msgid = usable_msgid(item.get("MsgID"))?;
        let code: i64 = item
            .get("ErrorCode")
            .ok_or_else(|| missing("ErrorCode"))?
            .trim()
            .parse()
            .map_err(|_| EventError("ErrorCode is not a number".into()))?;
        let wechat_status = item.get("ErrorStatus").map_or("", String::as_str);
        let status = match (code, DeliveryStatus::from_wechat(wechat_status)) {
            (0, _) => DeliveryStatus::Delivered,
            (_, DeliveryStatus::Delivered) => DeliveryStatus::DeliveryFailed,
            (_, failed) => failed,
        };
        let mut report = self.delivery(status, msgid, wechat_status);
        report.template_id = item
            .get("TemplateId")
            .map(|t| bounded(t.trim(), MAX_TEMPLATE_ID));
        report.errcode = Some(code);
        Ok(Pending {
            report: Report::Delivery(report),
            seen: msgid.map(ReportKey::MsgId),
        })
    }

    /// `subscribe_msg_popup_event` and `subscribe_msg_change_event`: one report per template.
    fn preferences(&self, event: &str, items: &[Item]) -> Result<Event, EventError> {
        let openid = self.openid()?;
        let mut mapped = Event::default();
        for item in items {
            let template_id = match item.get("TemplateId").map(|t| t.trim()) {
                None | Some("") => return Err(missing("a <List> item's TemplateId")),
                Some(t) => bounded(t, MAX_TEMPLATE_ID),
            };
            let said = item
                .get("SubscribeStatusString")
                .ok_or_else(|| missing("a <List> item's SubscribeStatusString"))?;
            let Some(status) = PreferenceStatus::from_wechat(said) else {
                mapped.ignored.push(format!(
                    "{event}: SubscribeStatusString {:?} is neither accept nor reject",
                    bounded(said, MAX_LOGGED)
                ));
                continue;
            };
            let seen = self.event_key(event, &[&openid, &template_id, status.as_str()]);
            mapped.reports.push(Pending {
                report: Report::Preference(PreferenceReport {
                    kind: "preference".into(),
                    app: self.app.to_owned(),
                    openid: openid.clone(),
                    template_id,
                    status,
                    event: event.to_owned(),
                    scene: item.get("PopupScene").and_then(|s| s.trim().parse().ok()),
                    event_time: self.event_time(),
                }),
                seen,
            });
        }
        Ok(mapped)
    }

    /// `subscribe` and `unsubscribe`.
    fn follow(&self, event: &str, status: FollowStatus) -> Result<Pending, EventError> {
        let openid = self.openid()?;
        let seen = self.event_key(event, &[&openid]);
        Ok(Pending {
            report: Report::Follow(FollowReport {
                kind: "follow".into(),
                app: self.app.to_owned(),
                openid,
                status,
                event_time: self.event_time(),
            }),
            seen,
        })
    }
}

/// A MsgID when it can name a report: missing, empty or 0 cannot (WeChat has sent 0 when
/// `client_msg_id` was set), and such a report is neither tied to a job nor de-duplicated.
fn usable_msgid(text: Option<&String>) -> Result<Option<u64>, EventError> {
    match text.map(|m| m.trim()) {
        None | Some("") => Ok(None),
        Some(text) => match text.parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(msgid) => Ok(Some(msgid)),
            Err(_) => Err(EventError("MsgID is not a number".into())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::xml::message;

    const USER: &str = "otFpruAK8D-E6EfStSYonYSBZ8_4";

    fn push(event: &str, body: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[gh_123456789abc]]></ToUserName><FromUserName><![CDATA[{USER}]]></FromUserName><CreateTime>1610969440</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[{event}]]></Event>{body}</xml>"
        )
    }

    fn mapped(xml: &str) -> Result<Event, EventError> {
        map("shop", &message(xml).unwrap())
    }

    fn reports(xml: &str) -> Vec<Pending> {
        let m = mapped(xml).unwrap();
        assert!(m.ignored.is_empty(), "{:?}", m.ignored);
        m.reports
    }

    fn item(fields: &[(&str, &str)]) -> String {
        let inner: String = fields
            .iter()
            .map(|(k, v)| format!("<{k}><![CDATA[{v}]]></{k}>"))
            .collect();
        format!("<List>{inner}</List>")
    }

    #[test]
    fn a_popup_makes_one_preference_report_per_template_with_its_scene() {
        let body = format!(
            "<SubscribeMsgPopupEvent>{}{}</SubscribeMsgPopupEvent>",
            item(&[
                ("TemplateId", "T1"),
                ("SubscribeStatusString", "accept"),
                ("PopupScene", "2")
            ]),
            item(&[
                ("TemplateId", "T2"),
                ("SubscribeStatusString", "reject"),
                ("PopupScene", "2")
            ]),
        );
        let r = reports(&push(SUBSCRIBE_MSG_POPUP, &body));
        assert_eq!(r.len(), 2);
        let Report::Preference(first) = &r[0].report else {
            panic!("{:?}", r[0])
        };
        assert_eq!(
            (
                first.openid.as_str(),
                first.template_id.as_str(),
                first.status,
                first.scene
            ),
            (USER, "T1", PreferenceStatus::Accept, Some(2))
        );
        assert_eq!(
            (first.event.as_str(), first.event_time),
            (SUBSCRIBE_MSG_POPUP, 1610969440)
        );
        assert_eq!(r[0].report.routing_key(), "preference.shop");
        assert_eq!(r[1].report.status(), "reject");
        // Each template is its own event for de-duplication.
        assert_ne!(r[0].seen, r[1].seen);
        assert!(
            matches!(&r[0].seen, Some(ReportKey::Event(k)) if k.contains("T1") && k.contains(USER))
        );
    }

    #[test]
    fn a_change_reads_its_items_whatever_element_wraps_them() {
        // WeChat's own page has shown the change event wrapped as a popup event.
        for wrapper in ["SubscribeMsgChangeEvent", "SubscribeMsgPopupEvent"] {
            let body = format!(
                "<{wrapper}>{}</{wrapper}>",
                item(&[("TemplateId", "T9"), ("SubscribeStatusString", "reject")])
            );
            let r = reports(&push(SUBSCRIBE_MSG_CHANGE, &body));
            assert_eq!(r.len(), 1, "{wrapper}");
            let Report::Preference(p) = &r[0].report else {
                panic!()
            };
            assert_eq!((p.status, p.scene), (PreferenceStatus::Reject, None));
            assert_eq!(p.event, SUBSCRIBE_MSG_CHANGE);
        }
    }

    #[test]
    fn the_same_push_twice_has_the_same_keys_and_another_time_or_user_does_not() {
        let body = format!(
            "<SubscribeMsgChangeEvent>{}</SubscribeMsgChangeEvent>",
            item(&[("TemplateId", "T9"), ("SubscribeStatusString", "reject")])
        );
        let xml = push(SUBSCRIBE_MSG_CHANGE, &body);
        let seen = |xml: &str| reports(xml)[0].seen.clone();
        assert_eq!(seen(&xml), seen(&xml));
        assert_ne!(seen(&xml), seen(&xml.replace("1610969440", "1610969441")));
        assert_ne!(seen(&xml), seen(&xml.replace(USER, "oOther")));
        assert_ne!(seen(&xml), seen(&xml.replace("reject", "accept")));
        // Without a usable time nothing names it: published each time it comes.
        for time in ["<CreateTime>1610969440</CreateTime>"] {
            for instead in [
                "",
                "<CreateTime>0</CreateTime>",
                "<CreateTime>x</CreateTime>",
            ] {
                assert_eq!(seen(&xml.replace(time, instead)), None, "{instead}");
            }
        }
    }

    #[test]
    fn unknown_decisions_are_left_out_and_said_so() {
        let body = format!(
            "<SubscribeMsgPopupEvent>{}{}</SubscribeMsgPopupEvent>",
            item(&[("TemplateId", "T1"), ("SubscribeStatusString", "maybe")]),
            item(&[
                ("TemplateId", "T2"),
                ("SubscribeStatusString", "acceptWithAudio")
            ]),
        );
        let m = mapped(&push(SUBSCRIBE_MSG_POPUP, &body)).unwrap();
        assert_eq!(m.reports.len(), 1);
        assert_eq!(m.reports[0].report.status(), "accept");
        assert_eq!(m.ignored.len(), 1);
        assert!(m.ignored[0].contains("\"maybe\""), "{:?}", m.ignored);
    }

    #[test]
    fn user_events_without_a_user_or_a_template_are_errors() {
        let good = item(&[("TemplateId", "T1"), ("SubscribeStatusString", "accept")]);
        let wrapped = |i: &str| format!("<SubscribeMsgPopupEvent>{i}</SubscribeMsgPopupEvent>");
        let no_user =
            push(SUBSCRIBE_MSG_POPUP, &wrapped(&good)).replace(&format!("<![CDATA[{USER}]]>"), "");
        assert_eq!(mapped(&no_user).unwrap_err(), missing("FromUserName"));
        let unfollow = push(UNSUBSCRIBE, "").replace(&format!("<![CDATA[{USER}]]>"), " ");
        assert!(mapped(&unfollow).is_err());
        for bad in [
            item(&[("SubscribeStatusString", "accept")]),
            item(&[("TemplateId", " "), ("SubscribeStatusString", "accept")]),
            item(&[("TemplateId", "T1")]),
            "<List/>".to_owned(),
        ] {
            assert!(
                mapped(&push(SUBSCRIBE_MSG_POPUP, &wrapped(&bad))).is_err(),
                "{bad}"
            );
        }
        // No items at all: nothing to report, not an error.
        assert!(reports(&push(SUBSCRIBE_MSG_POPUP, &wrapped(""))).is_empty());
    }

    #[test]
    fn echoed_text_is_bounded() {
        let long_user = "o".repeat(5000);
        let body = format!(
            "<SubscribeMsgPopupEvent>{}</SubscribeMsgPopupEvent>",
            item(&[
                ("TemplateId", &"t".repeat(5000)),
                ("SubscribeStatusString", "reject")
            ])
        );
        let xml = push(SUBSCRIBE_MSG_POPUP, &body).replace(USER, &long_user);
        let r = reports(&xml);
        let Report::Preference(p) = &r[0].report else {
            panic!()
        };
        assert!(p.openid.len() <= MAX_OPENID && p.template_id.len() <= MAX_TEMPLATE_ID);
        let Some(ReportKey::Event(key)) = &r[0].seen else {
            panic!()
        };
        assert!(key.len() < 400, "{}", key.len());

        let sent = format!(
            "<SubscribeMsgSentEvent>{}</SubscribeMsgSentEvent>",
            item(&[
                ("MsgID", "5"),
                ("ErrorCode", "1"),
                ("ErrorStatus", &"f".repeat(5000))
            ])
        );
        let r = reports(&push(SUBSCRIBE_MSG_SENT, &sent).replace(USER, &long_user));
        let Report::Delivery(d) = &r[0].report else {
            panic!()
        };
        assert!(d.wechat_status.len() <= MAX_WECHAT_STATUS && d.touser.len() <= MAX_OPENID);
    }

    #[test]
    fn sent_items_become_delivery_reports_keyed_by_msgid() {
        let body = format!(
            "<SubscribeMsgSentEvent>{}{}{}</SubscribeMsgSentEvent>",
            item(&[
                ("TemplateId", "T1"),
                ("MsgID", "1700827132819554304"),
                ("ErrorCode", "0"),
                ("ErrorStatus", "success")
            ]),
            item(&[
                ("TemplateId", "T1"),
                ("MsgID", "7"),
                ("ErrorCode", "43101"),
                ("ErrorStatus", "failed:user block")
            ]),
            item(&[
                ("TemplateId", "T1"),
                ("MsgID", "0"),
                ("ErrorCode", "-1"),
                ("ErrorStatus", "success")
            ]),
        );
        let r = reports(&push(SUBSCRIBE_MSG_SENT, &body));
        let delivery = |i: usize| match &r[i].report {
            Report::Delivery(d) => d.clone(),
            other => panic!("{other:?}"),
        };
        let ok = delivery(0);
        assert_eq!(
            (
                ok.status,
                ok.msgid,
                ok.errcode,
                ok.template_id.as_deref(),
                ok.touser.as_str()
            ),
            (
                DeliveryStatus::Delivered,
                1700827132819554304,
                Some(0),
                Some("T1"),
                USER
            )
        );
        assert_eq!(r[0].seen, Some(ReportKey::MsgId(1700827132819554304)));
        assert_eq!(r[0].report.routing_key(), "delivered.shop");
        assert_eq!(delivery(1).status, DeliveryStatus::Blocked);
        // A failure code wins over a text that says success; MsgID 0 names nothing.
        assert_eq!(delivery(2).status, DeliveryStatus::DeliveryFailed);
        assert_eq!(r[2].seen, None);
        for bad in [
            item(&[("MsgID", "x7"), ("ErrorCode", "0")]),
            item(&[("MsgID", "7")]),
            item(&[("MsgID", "7"), ("ErrorCode", "zero")]),
        ] {
            let xml = push(SUBSCRIBE_MSG_SENT, &format!("<W>{bad}</W>"));
            assert!(mapped(&xml).is_err(), "{bad}");
        }
    }

    #[test]
    fn follows_and_template_reports_map_as_before() {
        let r = reports(&push(UNSUBSCRIBE, ""));
        assert_eq!(r[0].report.routing_key(), "follow.shop");
        assert_eq!(r[0].report.status(), "unsubscribe");
        assert!(matches!(&r[0].seen, Some(ReportKey::Event(k)) if k.contains(UNSUBSCRIBE)));
        let sub = reports(&push(
            SUBSCRIBE,
            "<EventKey><![CDATA[qrscene_123]]></EventKey>",
        ));
        assert_eq!(sub[0].report.status(), "subscribe");
        assert_ne!(sub[0].seen, r[0].seen);

        let finished = reports(&push(
            TEMPLATE_SEND_JOB_FINISH,
            "<MsgID>200163836</MsgID><Status><![CDATA[failed:user block]]></Status>",
        ));
        let Report::Delivery(d) = &finished[0].report else {
            panic!()
        };
        assert_eq!(
            (d.status, d.template_id.clone(), d.errcode),
            (DeliveryStatus::Blocked, None, None)
        );
        assert_eq!(finished[0].seen, Some(ReportKey::MsgId(200163836)));
        assert!(mapped(&push(TEMPLATE_SEND_JOB_FINISH, "<MsgID>1</MsgID>")).is_err());
    }

    #[test]
    fn other_messages_and_events_make_no_report() {
        for xml in [
            push("CLICK", "<EventKey>k</EventKey>"),
            push("SCAN", ""),
            push(
                "TemplateSendJobFinish",
                "<MsgID>1</MsgID><Status>success</Status>",
            ),
            push(UNSUBSCRIBE, "").replace("<![CDATA[event]]>", "<![CDATA[text]]>"),
            "<xml><MsgType>event</MsgType></xml>".to_owned(),
        ] {
            assert_eq!(mapped(&xml).unwrap(), Event::default(), "{xml}");
        }
    }
}
