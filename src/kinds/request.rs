//! What a kind is given and what it gives the pipeline: the app's reading options, the WeChat
//! request it builds from a valid job (with the warnings it found), and the errcodes it reads
//! differently from the configured code sets.

use crate::outcome::OutcomeReason;
use crate::types::Class;

/// How an app wants its jobs read (`apps.NAME.*`); the default is the contract's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// `apps.NAME.truncate`: shorten an over-long `thing` or `character_string` value instead
    /// of rejecting the job.
    pub truncate: bool,
}

/// The WeChat request a kind builds from a valid job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub(crate) touser: String,
    pub(crate) template_id: String,
    /// The JSON body of the kind's endpoint.
    pub(crate) body: Vec<u8>,
    pub(crate) warnings: Warnings,
}

/// What a job's outcomes warn of, each `field: words`, in the two parts a reader may want
/// apart (`check --jobs` has the display rules from the template catalog already).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Warnings {
    /// Values shortened to be sent (`apps.NAME.truncate`).
    pub(crate) shortened: Vec<String>,
    /// What the job asks that WeChat no longer shows (template jobs).
    pub(crate) display: Vec<String>,
}

/// Most warnings an outcome carries: a job with hundreds of coloured entries gets a bounded
/// outcome, the last warning counting the rest.
pub(crate) const MAX_WARNINGS: usize = 16;

impl Warnings {
    /// The outcome's `warnings`: both parts, at most [`MAX_WARNINGS`], the last one saying how
    /// many more there were.
    pub(crate) fn for_outcome(&self) -> Vec<String> {
        let all = self.shortened.len() + self.display.len();
        let mut out: Vec<String> = self
            .shortened
            .iter()
            .chain(&self.display)
            .cloned()
            .collect();
        if all > MAX_WARNINGS {
            out.truncate(MAX_WARNINGS - 1);
            out.push(format!("… and {} more warnings", all - (MAX_WARNINGS - 1)));
        }
        out
    }
}

/// How one kind reads an errcode differently from `wechat.*_codes` and
/// `wechat.reason_codes`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Override {
    pub(crate) code: i64,
    /// The class to use instead of the configured one, if any.
    pub(crate) class: Option<Class>,
    /// The `reason` of a failed outcome, if any.
    pub(crate) reason: Option<OutcomeReason>,
    /// Words for the `error` field of a failed outcome.
    pub(crate) describe: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_bounded_and_the_last_counts_the_rest() {
        let warnings = |n: usize| Warnings {
            shortened: vec!["s0".into(), "s1".into()],
            display: (0..n - 2).map(|i| format!("d{i}")).collect(),
        };
        let at_limit = warnings(MAX_WARNINGS).for_outcome();
        assert_eq!(at_limit.len(), MAX_WARNINGS);
        assert_eq!(at_limit[..3], ["s0", "s1", "d0"], "shortened values first");
        assert_eq!(at_limit[MAX_WARNINGS - 1], format!("d{}", MAX_WARNINGS - 3));
        let over = warnings(MAX_WARNINGS + 10).for_outcome();
        assert_eq!(over.len(), MAX_WARNINGS);
        assert_eq!(over[MAX_WARNINGS - 2], format!("d{}", MAX_WARNINGS - 4));
        assert_eq!(over[MAX_WARNINGS - 1], "… and 11 more warnings");
        assert!(Warnings::default().for_outcome().is_empty());
    }
}
