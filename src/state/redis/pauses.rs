//! How the run-time pauses are kept in Redis (`RedisState`'s `Pauses`): one set per app,
//! `wxcourier:{APP}:pause:set`, holding `app` for the whole app and `template:ID` per paused
//! template. No expiry: a pause lasts until someone resumes it. A change and the read of the
//! set after it are one script, so what `pause` and `resume` print is what the set held right
//! after their own change.

use super::keys::key;
use crate::state::pauses::{PauseScope, Paused};

/// ARGV[1] `add` or `remove` the member ARGV[2], or `clear` the set; returns the set's
/// members.
pub(super) const CHANGE_PAUSES: &str = r"
if ARGV[1] == 'add' then redis.call('SADD', KEYS[1], ARGV[2])
elseif ARGV[1] == 'remove' then redis.call('SREM', KEYS[1], ARGV[2])
elseif ARGV[1] == 'clear' then redis.call('DEL', KEYS[1]) end
return redis.call('SMEMBERS', KEYS[1])
";

const WHOLE_APP: &str = "app";
const TEMPLATE: &str = "template:";

/// The app's set.
pub(super) fn set_key(app: &str) -> String {
    key(app, "pause", "set")
}

/// The member that stands for `scope`.
pub(super) fn member(scope: &PauseScope) -> String {
    match scope {
        PauseScope::App => WHOLE_APP.to_owned(),
        PauseScope::Template(t) => format!("{TEMPLATE}{t}"),
    }
}

/// The record the set's members describe; a member of no known form is left out.
pub(super) fn from_members(members: Vec<String>) -> Paused {
    let mut paused = Paused::default();
    for m in members {
        if m == WHOLE_APP {
            paused.app = true;
        } else if let Some(t) = m.strip_prefix(TEMPLATE) {
            paused.templates.insert(t.to_owned());
        }
    }
    paused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_name_the_app_or_a_template_and_an_unknown_one_is_ignored() {
        let p = from_members(vec![
            member(&PauseScope::App),
            member(&PauseScope::Template("a:b".into())),
            "something else".into(),
        ]);
        assert!(p.app);
        assert_eq!(p.templates.iter().collect::<Vec<_>>(), ["a:b"]);
        assert_eq!(set_key("shop"), "wxcourier:{shop}:pause:set");
    }
}
