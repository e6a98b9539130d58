//! What a user's pushed event does to their preference gates (`apps.NAME.honor_preferences`):
//! an unsubscribe sets the gate for every template and a subscribe lifts it; a template
//! rejected in a popup or the message settings sets that template's gate and an accept lifts
//! it. Delivery reports change nothing here: a send's refusal sets its gate in the pipeline.

use super::events::Report;
use crate::outcome::{FollowStatus, PreferenceStatus};
use crate::preferences::GateChange;

/// The user and the change `report` makes to their gates, if it makes one.
pub(crate) fn change_of(report: &Report) -> Option<(&str, GateChange)> {
    match report {
        Report::Follow(f) => {
            let following = f.status == FollowStatus::Subscribe;
            Some((f.openid.as_str(), GateChange::follow(following)))
        }
        Report::Preference(p) => {
            let accepted = p.status == PreferenceStatus::Accept;
            let change = GateChange::preference(&p.template_id, accepted);
            Some((p.openid.as_str(), change))
        }
        Report::Delivery(_) => None,
    }
}
