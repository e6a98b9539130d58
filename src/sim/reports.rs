//! What the simulator pushes to an app's callback: the result of each accepted send (the event
//! its kind's WeChat API pushes) and the user events tests ask for. `push` signs and sends them.

use rand::RngExt;

use super::model::{Faults, Model, SimOptions};
use super::push::{
    CallbackPush, CallbackTarget, Queued, UserEvent, event_xml, sent_event_xml, user_event_xml,
};
use super::rules::{is_openid, is_template_id};
use crate::kinds::Kind;
use crate::outcome::PreferenceStatus;

/// Why a user event was not pushed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserEventError {
    #[error("no callback is set for appid {0}: set one with POST /sim/callback or --callback")]
    NoCallback(String),
    #[error("{0}")]
    Invalid(String),
}

impl Model {
    /// Queues the delivery report WeChat would push for an accepted send, `report_delay` on.
    pub(super) fn queue_report(
        &self,
        options: &SimOptions,
        target: &CallbackTarget,
        appid: &str,
        xml: String,
    ) {
        let _ = self.pushes.send(Queued {
            push: CallbackPush {
                target: target.clone(),
                appid: self.sealed_for(appid),
                xml,
            },
            at: tokio::time::Instant::now() + options.report_delay,
        });
    }

    /// Pushes delivery reports for `appid`'s accepted sends to `target` (or stops, with `None`).
    pub(crate) fn set_callback(&self, appid: &str, target: Option<CallbackTarget>) {
        let mut inner = self.inner.lock();
        match target {
            Some(t) => inner.callbacks.insert(appid.to_owned(), t),
            None => inner.callbacks.remove(appid),
        };
    }

    /// Pushes `event` from `touser` to `appid`'s callback at once. A template refused in it is
    /// refused from then on (sends with it answer 43101), and one accepted is sent again.
    pub(crate) fn user_event(
        &self,
        appid: &str,
        touser: &str,
        event: UserEvent,
    ) -> Result<(), UserEventError> {
        if !is_openid(touser) {
            return Err(UserEventError::Invalid(format!(
                "touser {touser:?} is not an OpenID (28 characters of A-Z a-z 0-9 _ - starting with o)"
            )));
        }
        if let Some(bad) = event
            .decisions()
            .iter()
            .find(|d| !is_template_id(&d.template_id))
        {
            return Err(UserEventError::Invalid(format!(
                "template_id {:?} is not 1-128 of A-Z a-z 0-9 _ -",
                bad.template_id
            )));
        }
        let mut inner = self.inner.lock();
        let Some(target) = inner.callbacks.get(appid).cloned() else {
            return Err(UserEventError::NoCallback(appid.to_owned()));
        };
        for d in event.decisions() {
            let pair = (touser.to_owned(), d.template_id.clone());
            match d.status {
                PreferenceStatus::Reject => inner.refused_templates.insert(pair),
                PreferenceStatus::Accept => inner.refused_templates.remove(&pair),
            };
        }
        let _ = self.pushes.send(Queued {
            push: CallbackPush {
                target,
                appid: self.sealed_for(appid),
                xml: user_event_xml(appid, touser, &event, unix_now()),
            },
            at: tokio::time::Instant::now(),
        });
        Ok(())
    }
}

/// What the delivery report of an accepted send says, by the configured shares: the code a
/// `subscribe_msg_sent_event` carries and the status text both events carry. WeChat documents
/// only `ErrorCode` 0 (success); the failure codes are the simulator's own.
fn delivery_result(faults: &Faults, rng: &mut impl RngExt) -> (i64, &'static str) {
    let roll: f64 = rng.random();
    if roll < faults.report_blocked {
        (43101, "failed:user block")
    } else if roll < faults.report_blocked + faults.report_failed {
        (-1, "failed: system failed")
    } else {
        (0, "success")
    }
}

/// The event WeChat pushes for an accepted send of `kind`, its result drawn by the configured
/// shares.
pub(super) fn delivery_xml(
    faults: &Faults,
    kind: Kind,
    appid: &str,
    touser: &str,
    template_id: &str,
    msgid: u64,
) -> String {
    let (errcode, status) = delivery_result(faults, &mut rand::rng());
    let created = unix_now();
    // Template messages end in `TEMPLATESENDJOBFINISH`; both subscribe APIs report each
    // message in a `subscribe_msg_sent_event`.
    match kind {
        Kind::Template => event_xml(appid, touser, msgid, status, created),
        Kind::Subscribe | Kind::MiniprogramSubscribe => {
            sent_event_xml(appid, touser, template_id, msgid, errcode, status, created)
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
