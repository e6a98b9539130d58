//! Why a job `failed`, in words a producer can act on (`reason` on a failed outcome), decided
//! from WeChat's last answer and how the job ended. The code sets are configuration
//! (`wechat.reason_codes`), beside the class sets of [`super::errcode`].

use crate::config::ReasonCodes;
use crate::outcome::OutcomeReason;

/// How a failed job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// WeChat refused the send for good with this errcode.
    Refused(i64),
    /// Attempts or `retry.max_age` ran out. `quota_paused`: the job was last turned back
    /// because the app's quota was spent. `errcode`: the last code seen for it, from a send
    /// or a token fetch.
    GaveUp {
        quota_paused: bool,
        errcode: Option<i64>,
    },
}

/// The rule that reads the configured sets.
impl ReasonCodes {
    /// The reason for a failed outcome. A code named in more than one set takes the first
    /// in the order of [`OutcomeReason`]'s table; a refusal no set names is `other`.
    pub(crate) fn decide(&self, ending: Ending) -> OutcomeReason {
        match ending {
            Ending::Refused(code) => self.named(code).unwrap_or(OutcomeReason::Other),
            Ending::GaveUp {
                quota_paused: true, ..
            } => OutcomeReason::QuotaExhausted,
            // A job that waited out a refused token fetch for its whole life says so: no
            // amount of retrying fixes a wrong AppSecret.
            Ending::GaveUp {
                errcode: Some(code),
                ..
            } if self.config_error.contains(&code) => OutcomeReason::ConfigError,
            Ending::GaveUp { .. } => OutcomeReason::RetriesExhausted,
        }
    }

    fn named(&self, code: i64) -> Option<OutcomeReason> {
        let table = [
            (&self.recipient_refused, OutcomeReason::RecipientRefused),
            (&self.not_following, OutcomeReason::NotFollowing),
            (&self.invalid_recipient, OutcomeReason::InvalidRecipient),
            (&self.template_invalid, OutcomeReason::TemplateInvalid),
            (&self.content_rejected, OutcomeReason::ContentRejected),
            (&self.not_permitted, OutcomeReason::NotPermitted),
            (
                &self.authorization_revoked,
                OutcomeReason::AuthorizationRevoked,
            ),
            (&self.config_error, OutcomeReason::ConfigError),
        ];
        table
            .into_iter()
            .find(|(codes, _)| codes.contains(&code))
            .map(|(_, reason)| reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OutcomeReason::*;

    fn gave_up(quota_paused: bool, errcode: Option<i64>) -> Ending {
        Ending::GaveUp {
            quota_paused,
            errcode,
        }
    }

    #[test]
    fn the_default_mapping_matches_the_contract() {
        let codes = ReasonCodes::default();
        let table: &[(Ending, OutcomeReason)] = &[
            (Ending::Refused(43101), RecipientRefused),
            (Ending::Refused(43004), NotFollowing),
            (Ending::Refused(40003), InvalidRecipient),
            (Ending::Refused(40037), TemplateInvalid),
            (Ending::Refused(45168), ContentRejected),
            (Ending::Refused(47003), ContentRejected),
            (Ending::Refused(43019), RecipientRefused),
            (Ending::Refused(40036), TemplateInvalid),
            (Ending::Refused(48001), NotPermitted),
            (Ending::Refused(48004), NotPermitted),
            (Ending::Refused(61007), NotPermitted),
            (Ending::Refused(50002), InvalidRecipient),
            (Ending::Refused(61023), AuthorizationRevoked),
            (Ending::Refused(40125), ConfigError),
            (Ending::Refused(40164), ConfigError),
            (Ending::Refused(40013), ConfigError),
            (Ending::Refused(40001), Other),
            (Ending::Refused(99999), Other),
            (gave_up(true, Some(45009)), QuotaExhausted),
            (gave_up(true, None), QuotaExhausted),
            (gave_up(false, Some(-1)), RetriesExhausted),
            (gave_up(false, None), RetriesExhausted),
            (gave_up(false, Some(40125)), ConfigError),
            (gave_up(false, Some(40164)), ConfigError),
            // A refusal-type code seen on the way does not rename running out of tries.
            (gave_up(false, Some(43101)), RetriesExhausted),
        ];
        for &(ending, reason) in table {
            assert_eq!(codes.decide(ending), reason, "{ending:?}");
        }
    }

    #[test]
    fn the_sets_come_from_config_and_the_first_set_wins() {
        let codes = ReasonCodes {
            recipient_refused: vec![1, 2],
            not_following: vec![2],
            invalid_recipient: vec![],
            template_invalid: vec![],
            content_rejected: vec![],
            not_permitted: vec![],
            authorization_revoked: vec![],
            config_error: vec![3],
        };
        assert_eq!(codes.decide(Ending::Refused(2)), RecipientRefused);
        assert_eq!(codes.decide(Ending::Refused(43101)), Other);
        assert_eq!(codes.decide(gave_up(false, Some(3))), ConfigError);
        assert_eq!(codes.decide(gave_up(false, Some(40125))), RetriesExhausted);
    }

    mod config {
        use super::*;

        use crate::config::tests::load;

        #[test]
        fn the_shipped_config_states_the_default_mapping() {
            let s = load(
                include_str!("../../config/default.toml"),
                &[("WXCOURIER_APPS__DEFAULT__SECRET", "secret")],
            )
            .unwrap();
            assert_eq!(s.wechat.reason_codes, ReasonCodes::default());
        }

        #[test]
        fn a_set_can_be_replaced_in_the_file_or_the_environment() {
            let s = load(
                "[wechat.reason_codes]\nrecipient_refused = [43101, 43102]\n",
                &[(
                    "WXCOURIER_WECHAT__REASON_CODES__NOT_FOLLOWING",
                    "[43004, 43005]",
                )],
            )
            .unwrap();
            let codes = &s.wechat.reason_codes;
            assert_eq!(codes.recipient_refused, vec![43101, 43102]);
            assert_eq!(codes.not_following, vec![43004, 43005]);
            // Sets not named keep their defaults.
            assert_eq!(codes.content_rejected, vec![45168, 47003]);
            assert_eq!(codes.decide(Ending::Refused(43102)), RecipientRefused);
        }

        #[test]
        fn an_unknown_reason_is_a_config_error_naming_it() {
            let err = load("[wechat.reason_codes]\nrecipient_refusd = [1]\n", &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("recipient_refusd"), "{err}");
            let err = load("[wechat.reason_codes]\nother = [1]\n", &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("other"), "{err}");
        }
    }
}
