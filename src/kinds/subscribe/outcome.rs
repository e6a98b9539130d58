//! A subscription notification's outcome says which kind it was.

use crate::outcome::SendOutcome;

pub(crate) fn fill(outcome: &mut SendOutcome) {
    outcome.message_kind = Some("subscribe".into());
}
