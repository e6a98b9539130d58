//! `process` over fakes with paused time: one table of paths, each row with the step it must
//! decide and the effects the fakes saw (sends and the token and client_msg_id each carried,
//! token fetches and invalidations, what became of the claim); then the paths that need two
//! jobs at once or a look at the quota gate.

mod cancel;
mod fakes;
mod gates;
mod limits;
mod paused;
mod quiet;
mod schedule;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fakes::*;
use tokio::time::Instant;

use super::step::{
    IN_FLIGHT_ELSEWHERE, NO_TOKEN, OUTLET_DOWN, RATE_DOWN, RATE_TAKEN, STATE_DOWN, Wait,
};
use super::*;
use crate::kinds::Kind;
use crate::metrics::Metrics;
use crate::outcome::{OutcomeReason, format_timestamp};
use crate::pause::{Admission, Phase};
use crate::retry::RetryState;
use crate::state::Renewal;
use crate::state::fakes::StoreCall;
use crate::wechat::client::{CallError, SendReply, TokenError};

/// The step a row must end in.
#[derive(Debug)]
enum Want {
    Sent {
        /// None when WeChat accepted it without one.
        msgid: Option<u64>,
        attempts: u32,
    },
    Duplicate {
        msgid: Option<u64>,
    },
    Failed {
        reason: OutcomeReason,
        errcode: Option<i64>,
        attempts: u32,
        /// Words the outcome's `error` must hold.
        error_has: &'static str,
    },
    Expired,
    Retry {
        wait: Wait,
        attempts: u32,
    },
}

/// What became of the claim on the job's id.
#[derive(Debug, PartialEq)]
enum ClaimEnd {
    /// Given back: the job was not sent.
    Released,
    /// Recorded as sent, with this msgid (none when WeChat gave none).
    Recorded(Option<u64>),
    /// Neither: it was never ours, or it already holds a msgid.
    Kept,
}

struct Row {
    name: String,
    job: serde_json::Value,
    retry: RetryState,
    setup: Setup,
    /// Puts the fakes in a state before the job comes.
    before: fn(&World),
    want: Want,
    /// The token each send carried, in order.
    sent_with: Vec<&'static str>,
    token_fetches: usize,
    /// Tokens dropped because WeChat refused them.
    invalidated: u64,
    claim: ClaimEnd,
    /// Words the outcome's `error` must not hold.
    error_lacks: Option<&'static str>,
}

fn row(name: impl Into<String>, job: serde_json::Value, want: Want) -> Row {
    Row {
        name: name.into(),
        job,
        retry: RetryState::default(),
        setup: Setup::default(),
        before: |_| {},
        want,
        sent_with: Vec::new(),
        token_fetches: 0,
        invalidated: 0,
        claim: ClaimEnd::Released,
        error_lacks: None,
    }
}

impl Row {
    fn answers(mut self, sends: Vec<Result<SendReply, CallError>>) -> Self {
        self.setup.sends = sends;
        self
    }

    fn tokens(
        mut self,
        tokens: Vec<Result<crate::wechat::client::TokenGrant, TokenError>>,
    ) -> Self {
        self.setup.tokens = tokens;
        self
    }

    fn sent_with(mut self, tokens: &[&'static str]) -> Self {
        self.sent_with = tokens.to_vec();
        self
    }

    fn fetches(mut self, n: usize) -> Self {
        self.token_fetches = n;
        self
    }

    fn invalidated(mut self, n: u64) -> Self {
        self.invalidated = n;
        self
    }

    fn claim(mut self, end: ClaimEnd) -> Self {
        self.claim = end;
        self
    }

    fn retry(mut self, retry: RetryState) -> Self {
        self.retry = retry;
        self
    }

    fn setup(mut self, f: impl FnOnce(&mut Setup)) -> Self {
        f(&mut self.setup);
        self
    }

    fn before(mut self, f: fn(&World)) -> Self {
        self.before = f;
        self
    }

    fn error_lacks(mut self, words: &'static str) -> Self {
        self.error_lacks = Some(words);
        self
    }
}

/// A job first tried 25 hours before [`T0`]: past the default `retry.max_age` (24h).
fn too_old() -> RetryState {
    RetryState {
        first_try_ms: Some(t0_ms() - 25 * 3600 * 1000),
        ..RetryState::default()
    }
}

fn refused_token(errcode: i64) -> Result<crate::wechat::client::TokenGrant, TokenError> {
    Err(TokenError::Refused {
        errcode,
        errmsg: "refused".into(),
    })
}

fn rows() -> Vec<Row> {
    use ClaimEnd::*;
    use OutcomeReason::*;
    let mut rows = vec![
        // errcode 0
        row(
            "0: sent and recorded",
            template("ok"),
            Want::Sent {
                msgid: Some(1001),
                attempts: 1,
            },
        )
        .sent_with(&["t1"])
        .fetches(1)
        .claim(Recorded(Some(1001))),
        row(
            "0 for a subscription notification: sent to its endpoint",
            subscribe("sub-ok"),
            Want::Sent {
                msgid: Some(1001),
                attempts: 1,
            },
        )
        .sent_with(&["t1"])
        .fetches(1)
        .claim(Recorded(Some(1001))),
        row(
            "0 without a msgid: sent with a null msgid, recorded without one",
            subscribe("sub-bare"),
            Want::Sent {
                msgid: None,
                attempts: 1,
            },
        )
        .before(|w| *w.wechat.ok_msgid.lock() = Some(None))
        .sent_with(&["t1"])
        .fetches(1)
        .claim(Recorded(None)),
        row(
            "0 with msgid 0: no msgid, never 0",
            template("zero-msgid"),
            Want::Sent {
                msgid: None,
                attempts: 1,
            },
        )
        .before(|w| *w.wechat.ok_msgid.lock() = Some(Some(0)))
        .sent_with(&["t1"])
        .fetches(1)
        .claim(Recorded(None)),
        row(
            "an id sent before without a msgid: the duplicate, with a null msgid",
            template("dup-bare"),
            Want::Duplicate { msgid: None },
        )
        .before(|w| {
            w.store()
                .memory()
                .record_sent("a", "dup-bare", None, None, None)
        })
        .claim(Kept),
        // transient
        row(
            "-1 system busy: backoff",
            template("busy"),
            Want::Retry {
                wait: Wait::Transient,
                attempts: 1,
            },
        )
        .answers(vec![code(-1)])
        .sent_with(&["t1"])
        .fetches(1),
        row(
            "45011 too frequent: backoff",
            template("freq"),
            Want::Retry {
                wait: Wait::Transient,
                attempts: 1,
            },
        )
        .answers(vec![code(45011)])
        .sent_with(&["t1"])
        .fetches(1),
        row(
            "a timeout: backoff",
            template("timeout"),
            Want::Retry {
                wait: Wait::Transient,
                attempts: 1,
            },
        )
        .answers(vec![Err(CallError::Timeout)])
        .sent_with(&["t1"])
        .fetches(1),
        row(
            "HTTP 503: backoff",
            template("http503"),
            Want::Retry {
                wait: Wait::Transient,
                attempts: 1,
            },
        )
        .answers(vec![Err(CallError::Status(503))])
        .sent_with(&["t1"])
        .fetches(1),
        row(
            "-1 on the last attempt: failed, retries_exhausted",
            template("last"),
            Want::Failed {
                reason: RetriesExhausted,
                errcode: Some(-1),
                attempts: 10,
                error_has: "retries ran out after 10 sends",
            },
        )
        .retry(RetryState {
            attempts: 9,
            ..RetryState::default()
        })
        .answers(vec![code(-1)])
        .sent_with(&["t1"])
        .fetches(1),
        // quota
        row(
            "45009: the job waits out the app's pause",
            template("quota"),
            Want::Retry {
                wait: Wait::Quota,
                attempts: 1,
            },
        )
        .answers(vec![code(45009)])
        .sent_with(&["t1"])
        .fetches(1),
        row(
            "45009 past retry.max_age: failed, quota_exhausted",
            template("quota-old"),
            Want::Failed {
                reason: QuotaExhausted,
                errcode: Some(45009),
                attempts: 1,
                error_has: "retry.max_age",
            },
        )
        .retry(too_old())
        .answers(vec![code(45009)])
        .sent_with(&["t1"])
        .fetches(1),
        row(
            "the app is paused: the job waits, no attempt",
            template("paused"),
            Want::Retry {
                wait: Wait::Quota,
                attempts: 0,
            },
        )
        .before(|w| {
            w.app().gate.quota_spent();
        }),
        // token
        row(
            "token refused twice: backoff after one refresh",
            template("token-twice"),
            Want::Retry {
                wait: Wait::Transient,
                attempts: 2,
            },
        )
        .answers(vec![code(40001), code(42001)])
        .sent_with(&["t1", "t2"])
        .fetches(2)
        .invalidated(2),
        row(
            "token fetch refused: the app pauses, no attempt",
            template("no-token"),
            Want::Retry {
                wait: Wait::NotNow(NO_TOKEN),
                attempts: 0,
            },
        )
        .tokens(vec![refused_token(40164)])
        .fetches(1),
        row(
            "token refused as the authorization is withdrawn (61023): failed at once, no wait",
            template("no-token-revoked"),
            Want::Failed {
                reason: AuthorizationRevoked,
                errcode: Some(61023),
                attempts: 0,
                error_has: "no access token for this account",
            },
        )
        .tokens(vec![refused_token(61023)])
        .fetches(1),
        row(
            "token fetch refused past retry.max_age: failed, config_error",
            template("no-token-old"),
            Want::Failed {
                reason: ConfigError,
                errcode: None,
                attempts: 0,
                error_has: NO_TOKEN,
            },
        )
        .retry(too_old())
        .tokens(vec![refused_token(40125)])
        .fetches(1),
        row(
            "WeChat unreachable for a token past retry.max_age: failed, retries_exhausted",
            template("no-token-call"),
            Want::Failed {
                reason: RetriesExhausted,
                errcode: None,
                attempts: 0,
                error_has: NO_TOKEN,
            },
        )
        .retry(too_old())
        .tokens(vec![Err(CallError::Connect("refused".into()).into())])
        .fetches(1),
        // kind overrides
        row(
            "43108 for a subscription notification: transient for that kind",
            subscribe("sub-busy"),
            Want::Retry {
                wait: Wait::Transient,
                attempts: 1,
            },
        )
        .answers(vec![code(43108)])
        .sent_with(&["t1"])
        .fetches(1),
        row(
            "43107 for a subscription notification: config_error for that kind",
            subscribe("sub-refused"),
            Want::Failed {
                reason: ConfigError,
                errcode: Some(43107),
                attempts: 1,
                error_has: "may not send subscription notifications",
            },
        )
        .answers(vec![code(43107)])
        .sent_with(&["t1"])
        .fetches(1),
        // duplicates and claims
        row(
            "an id sent before: its first msgid, no send",
            template("dup"),
            Want::Duplicate { msgid: Some(77) },
        )
        .before(|w| {
            w.store()
                .memory()
                .record_sent("a", "dup", Some(77), None, None)
        })
        .claim(Kept),
        row(
            "an id sent before, after its not_after: still the duplicate",
            not_after(template("dup-late"), -60),
            Want::Duplicate { msgid: Some(78) },
        )
        .before(|w| {
            w.store()
                .memory()
                .record_sent("a", "dup-late", Some(78), None, None)
        })
        .claim(Kept),
        row(
            "an id in flight elsewhere: waits, no attempt, the other's claim untouched",
            template("busy-id"),
            Want::Retry {
                wait: Wait::NotNow(IN_FLIGHT_ELSEWHERE),
                attempts: 0,
            },
        )
        .before(|w| {
            w.store().memory().claim("a", "busy-id");
        })
        .claim(Kept),
        row(
            "a claim that aged in the limiter is renewed, then sent",
            template("aged"),
            Want::Sent {
                msgid: Some(1001),
                attempts: 1,
            },
        )
        .setup(|s| s.rate_wait = Duration::from_secs(30))
        .sent_with(&["t1"])
        .fetches(1)
        .claim(Recorded(Some(1001))),
        row(
            "a claim that aged and was lost: waits, no attempt",
            template("aged-lost"),
            Want::Retry {
                wait: Wait::NotNow(IN_FLIGHT_ELSEWHERE),
                attempts: 0,
            },
        )
        .setup(|s| s.rate_wait = Duration::from_secs(30))
        .before(|w| *w.store().renewal.lock() = Some(Renewal::Lost))
        .fetches(1),
        row(
            "a claim that aged while another delivery sent the id: the duplicate",
            template("aged-sent"),
            Want::Duplicate { msgid: Some(5) },
        )
        .setup(|s| s.rate_wait = Duration::from_secs(30))
        .before(|w| *w.store().renewal.lock() = Some(Renewal::AlreadySent(Some(5))))
        .fetches(1)
        .claim(Kept),
        // expiry
        row(
            "not_after already passed: expired, no send",
            not_after(template("late"), -1),
            Want::Expired,
        ),
        row(
            "not_after passes during the limiter wait: expired, no send",
            not_after(template("late-in-limiter"), 1),
            Want::Expired,
        )
        .setup(|s| s.rate_wait = Duration::from_secs(2)),
        // shared state
        row(
            "the idempotency store is down: waits, no attempt",
            template("store-down"),
            Want::Retry {
                wait: Wait::NotNow(STATE_DOWN),
                attempts: 0,
            },
        )
        .before(|w| w.store().down.store(true, Ordering::SeqCst))
        .claim(Kept),
        row(
            "the shared rate is down: waits, no attempt",
            template("rate-down"),
            Want::Retry {
                wait: Wait::NotNow(RATE_DOWN),
                attempts: 0,
            },
        )
        .before(|w| w.app().rate.down.store(true, Ordering::SeqCst)),
        row(
            "on a shared queue, the rate taken for longer than a job waits here: waits in the \
             delay tiers, no attempt",
            template("rate-taken"),
            Want::Retry {
                wait: Wait::NotNow(RATE_TAKEN),
                attempts: 0,
            },
        )
        .setup(|s| {
            s.rate_wait = Duration::from_secs(2);
            s.rate_park = Some(Duration::from_millis(250));
        }),
        row(
            "on a shared queue, a short wait for the rate: sent",
            template("rate-short"),
            Want::Sent {
                msgid: Some(1001),
                attempts: 1,
            },
        )
        .setup(|s| {
            s.rate_wait = Duration::from_millis(200);
            s.rate_park = Some(Duration::from_millis(250));
        })
        .sent_with(&["t1"])
        .fetches(1)
        .claim(Recorded(Some(1001))),
        row(
            "sent but the record failed: still sent",
            template("unrecorded"),
            Want::Sent {
                msgid: Some(1001),
                attempts: 1,
            },
        )
        .before(|w| w.store().record_fails.store(true, Ordering::SeqCst))
        .sent_with(&["t1"])
        .fetches(1)
        .claim(Kept),
        row(
            "tokens through a shared store: sent",
            template("shared-token"),
            Want::Sent {
                msgid: Some(1001),
                attempts: 1,
            },
        )
        .setup(|s| s.shared_tokens = Some(true))
        .sent_with(&["t1"])
        .fetches(1)
        .claim(Recorded(Some(1001))),
        row(
            "the shared token store is down: waits as a state outage, WeChat not asked",
            template("token-store-down"),
            Want::Retry {
                wait: Wait::NotNow(STATE_DOWN),
                attempts: 0,
            },
        )
        .setup(|s| s.shared_tokens = Some(false)),
        row(
            "the shared token store down past retry.max_age: failed, naming shared state",
            template("token-store-down-old"),
            Want::Failed {
                reason: RetriesExhausted,
                errcode: None,
                attempts: 0,
                error_has: "shared state is unavailable",
            },
        )
        .retry(too_old())
        .setup(|s| s.shared_tokens = Some(false))
        .error_lacks("WeChat"),
    ];
    for token_code in [40001, 41006, 40014, 42001] {
        rows.push(
            row(
                format!("{token_code}: refresh the token and send again at once"),
                template(&format!("token-{token_code}")),
                Want::Sent {
                    msgid: Some(1002),
                    attempts: 2,
                },
            )
            .answers(vec![code(token_code), code(0)])
            .sent_with(&["t1", "t2"])
            .fetches(2)
            .invalidated(1)
            .claim(Recorded(Some(1002))),
        );
    }
    let permanent = [
        (40003, InvalidRecipient, "invalid OpenID"),
        (43101, RecipientRefused, "refused this message"),
        (43004, NotFollowing, "does not follow"),
        (40037, TemplateInvalid, "invalid template_id"),
        (45168, ContentRejected, "does not allow"),
        (47003, ContentRejected, "argument invalid"),
        (40125, ConfigError, "invalid AppSecret"),
        (40164, ConfigError, "IP whitelist"),
        (40013, ConfigError, "invalid AppID"),
        (43019, RecipientRefused, "blacklist"),
        (40036, TemplateInvalid, "template_id length"),
        (48001, NotPermitted, "not authorised"),
        (48004, NotPermitted, "banned"),
        (61007, NotPermitted, "not granted to the platform"),
        (50002, InvalidRecipient, "limited"),
        (61023, AuthorizationRevoked, "authorisation"),
        (99999, Other, "refused by WeChat"),
    ];
    for (refusal, reason, words) in permanent {
        rows.push(
            row(
                format!("{refusal}: failed at once, {reason:?}"),
                template(&format!("refused-{refusal}")),
                Want::Failed {
                    reason,
                    errcode: Some(refusal),
                    attempts: 1,
                    error_has: words,
                },
            )
            .answers(vec![code(refusal)])
            .sent_with(&["t1"])
            .fetches(1),
        );
    }
    rows
}

fn check_step(name: &str, want: &Want, step: &Step) {
    match (want, step) {
        (Want::Sent { msgid, attempts }, Step::Finish(o)) => {
            assert_eq!(o.status, SendStatus::Sent, "{name}: {o:?}");
            assert_eq!((o.msgid, o.attempts), (*msgid, *attempts), "{name}");
            assert_eq!(o.errcode, Some(0), "{name}: WeChat's own answer");
            assert!(!o.duplicate && o.error.is_none(), "{name}: {o:?}");
        }
        (Want::Duplicate { msgid }, Step::Finish(o)) => {
            assert_eq!(
                (o.status, o.duplicate, o.msgid),
                (SendStatus::Sent, true, *msgid),
                "{name}"
            );
            // No WeChat call answered this delivery: nothing to report of one.
            assert_eq!((o.errcode, &o.errmsg), (None, &None), "{name}: {o:?}");
        }
        (
            Want::Failed {
                reason,
                errcode,
                attempts,
                error_has,
            },
            Step::Finish(o),
        ) => {
            assert_eq!(o.status, SendStatus::Failed, "{name}: {o:?}");
            assert_eq!(o.reason, Some(*reason), "{name}: {o:?}");
            assert_eq!((o.errcode, o.attempts), (*errcode, *attempts), "{name}");
            let error = o.error.as_deref().unwrap_or_default();
            assert!(error.contains(error_has), "{name}: {error}");
        }
        (Want::Expired, Step::Finish(o)) => {
            assert_eq!((o.status, o.attempts), (SendStatus::Expired, 0), "{name}");
        }
        (Want::Retry { wait, attempts }, Step::Retry { state, wait: w, .. }) => {
            assert_eq!((w, state.attempts), (wait, *attempts), "{name}");
            assert!(
                state.first_try_ms.is_some(),
                "{name}: retry.max_age runs from the first try"
            );
        }
        _ => panic!("{name}: wanted {want:?}, got {step:?}"),
    }
}

fn check_claim(name: &str, id: &str, want: &ClaimEnd, calls: &[StoreCall]) {
    let released = calls.contains(&StoreCall::Released(id.into()));
    let recorded = calls.iter().find_map(|c| match c {
        StoreCall::Recorded(i, msgid) if i == id => Some(*msgid),
        _ => None,
    });
    let end = match (released, recorded) {
        (true, None) => ClaimEnd::Released,
        (false, Some(msgid)) => ClaimEnd::Recorded(msgid),
        (false, None) => ClaimEnd::Kept,
        (true, Some(_)) => panic!("{name}: released and recorded: {calls:?}"),
    };
    assert_eq!(&end, want, "{name}: {calls:?}");
}

#[tokio::test(start_paused = true)]
async fn every_path_decides_its_step_and_its_effects() {
    for row in rows() {
        let name = row.name.as_str();
        let world = World::new(row.setup);
        (row.before)(&world);
        let body = serde_json::to_vec(&row.job).unwrap();
        let step = world.process(&body, row.retry).await;
        check_step(name, &row.want, &step);
        if let Step::Finish(o) | Step::Reject { outcome: o, .. } = &step {
            let now = format_timestamp(world.deps.clock.now());
            assert_eq!(
                o.finished_at, now,
                "{name}: finished by the pipeline's clock"
            );
        }
        if let (Step::Finish(o), Some(words)) = (&step, row.error_lacks) {
            let error = o.error.as_deref().unwrap_or_default();
            assert!(!error.contains(words), "{name}: {error}");
        }

        let id = row.job["id"].as_str().unwrap();
        let kind: Kind = serde_json::from_value(row.job["kind"].clone()).unwrap_or_default();
        let received = world.wechat.received();
        let tokens: Vec<&str> = received.iter().map(|r| r.token.as_str()).collect();
        assert_eq!(tokens, row.sent_with, "{name}: the token of each send");
        for r in &received {
            assert_eq!(r.path, kind.endpoint(), "{name}");
            // Every send of a template carries the job id, so WeChat drops a re-send.
            let want_id = (kind == Kind::Template).then(|| id.to_owned());
            assert_eq!(r.client_msg_id, want_id, "{name}");
        }
        assert_eq!(world.wechat.token_fetches(), row.token_fetches, "{name}");
        let invalidated = world
            .deps
            .metrics
            .token_errors
            .get_or_create(&Metrics::app("a"))
            .get();
        assert_eq!(invalidated, row.invalidated, "{name}: tokens invalidated");
        check_claim(name, id, &row.claim, &world.store().calls());
    }
}

fn body(job: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&job).unwrap()
}

#[tokio::test(start_paused = true)]
async fn after_a_pause_one_probe_goes_and_its_answer_reopens_the_app() {
    let w = World::new(Setup::default());
    assert_eq!(w.app().gate.quota_spent(), Duration::from_secs(60));
    tokio::time::sleep(Duration::from_secs(61)).await;
    let step = w
        .process(&body(template("probe")), RetryState::default())
        .await;
    check_step(
        "probe",
        &Want::Sent {
            msgid: Some(1001),
            attempts: 1,
        },
        &step,
    );
    assert_eq!(w.app().gate.phase(), Phase::Open);
}

#[tokio::test(start_paused = true)]
async fn a_45009_to_the_probe_pauses_the_app_again_for_twice_as_long() {
    let w = World::new(Setup {
        sends: vec![code(45009)],
        ..Setup::default()
    });
    w.app().gate.quota_spent();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let step = w
        .process(&body(template("probe")), RetryState::default())
        .await;
    let Step::Retry {
        state, wait, after, ..
    } = step
    else {
        panic!("{step:?}")
    };
    assert_eq!(wait, Wait::Quota);
    assert_eq!((state.attempts, state.quota_sends), (1, 1));
    assert!(after >= Duration::from_secs(120), "{after:?}");
    let Phase::Paused { until } = w.app().gate.phase() else {
        panic!("paused again")
    };
    assert_eq!(until - Instant::now(), Duration::from_secs(120));
    // The quota is not the job's fault: the attempt does not count toward max_attempts.
    assert_eq!(state.counted_attempts(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_probe_without_an_answer_hands_probing_to_the_next_send() {
    let w = World::new(Setup {
        sends: vec![Err(CallError::Timeout)],
        ..Setup::default()
    });
    w.app().gate.quota_spent();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let step = w
        .process(&body(template("probe")), RetryState::default())
        .await;
    assert!(
        matches!(
            step,
            Step::Retry {
                wait: Wait::Transient,
                ..
            }
        ),
        "{step:?}"
    );
    assert_eq!(w.app().gate.admit().await, Admission::Send { probe: true });
}

#[tokio::test(start_paused = true)]
async fn while_the_probe_is_out_the_next_job_waits_for_its_answer_then_sends() {
    let w = World::new(Setup::default());
    *w.wechat.latency.lock() = Duration::from_secs(5);
    w.app().gate.quota_spent();
    tokio::time::sleep(Duration::from_secs(61)).await;
    let started = Instant::now();
    let probe_job = body(template("probe"));
    let (probe, next) = tokio::join!(w.process(&probe_job, RetryState::default()), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let step = w
            .process(&body(template("next")), RetryState::default())
            .await;
        (step, started.elapsed())
    });
    assert!(matches!(probe, Step::Finish(ref o) if o.status == SendStatus::Sent));
    let (next, took) = next;
    assert!(matches!(next, Step::Finish(ref o) if o.status == SendStatus::Sent));
    // Its send began only once the probe's answer came (5 s), and took 5 s of its own.
    assert!(took >= Duration::from_secs(10), "{took:?}");
    assert_eq!(w.wechat.received().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_in_flight_waits_and_after_the_send_gets_the_first_msgid() {
    let w = World::new(Setup::default());
    *w.wechat.latency.lock() = Duration::from_secs(5);
    let job = body(template("twice"));
    let (first, second) = tokio::join!(w.process(&job, RetryState::default()), async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.process(&job, RetryState::default()).await
    });
    check_step(
        "first",
        &Want::Sent {
            msgid: Some(1001),
            attempts: 1,
        },
        &first,
    );
    check_step(
        "second",
        &Want::Retry {
            wait: Wait::NotNow(IN_FLIGHT_ELSEWHERE),
            attempts: 0,
        },
        &second,
    );
    let third = w.process(&job, RetryState::default()).await;
    check_step("third", &Want::Duplicate { msgid: Some(1001) }, &third);
    assert_eq!(w.wechat.received().len(), 1, "one send in all");
}

#[tokio::test(start_paused = true)]
async fn a_claim_that_landed_after_its_call_failed_is_taken_over_by_the_jobs_next_turn() {
    let w = World::new(Setup::default());
    let job = body(template("late"));
    w.store().down.store(true, Ordering::SeqCst);
    let first = w.process(&job, RetryState::default()).await;
    let Step::Retry { state, .. } = &first else {
        panic!("a state outage waits: {first:?}")
    };
    let holder = state.claim.expect("the retry copy names this turn's claim");
    w.store().down.store(false, Ordering::SeqCst);
    w.store()
        .claim_landed_late("a", "late", crate::state::Holder::from_raw(holder));
    // A delivery that names no earlier turn (another copy of the id) still waits behind it.
    let stranger = w.process(&job, RetryState::default()).await;
    check_step(
        "stranger",
        &Want::Retry {
            wait: Wait::NotNow(IN_FLIGHT_ELSEWHERE),
            attempts: 0,
        },
        &stranger,
    );
    let next = w.process(&job, *state).await;
    check_step(
        "next turn",
        &Want::Sent {
            msgid: Some(1001),
            attempts: 1,
        },
        &next,
    );
    assert_eq!(w.wechat.received().len(), 1, "sent once, at once");
}

#[tokio::test(start_paused = true)]
async fn nothing_is_sent_while_the_outcome_could_not_be_published() {
    let w = World::new(Setup::default());
    let closed = FakeOutlet(AtomicBool::new(false));
    let step = w
        .process_via(&body(template("closed")), RetryState::default(), &closed)
        .await;
    check_step(
        "closed",
        &Want::Retry {
            wait: Wait::NotNow(OUTLET_DOWN),
            attempts: 0,
        },
        &step,
    );
    assert!(w.wechat.received().is_empty());
    check_claim("closed", "closed", &ClaimEnd::Released, &w.store().calls());
}

#[tokio::test(start_paused = true)]
async fn headers_over_the_limit_are_a_rejection_naming_them() {
    let w = World::new(Setup::default());
    let job = body(template("j4"));
    let incoming = Incoming {
        app: "a",
        body: &job,
        message_id: None,
        headers_len: MAX_JOB_HEADERS + 1,
        retry: RetryState::default(),
        outlet: &OPEN,
        trace: None,
    };
    let Step::Reject { outcome, reason } = process(&w.deps, incoming).await else {
        panic!()
    };
    assert!(reason.starts_with("headers:"), "{reason}");
    assert_eq!(outcome.id.as_deref(), Some("j4"));
    assert!(w.store().calls().is_empty(), "no claim for a rejected job");
}

#[tokio::test(start_paused = true)]
async fn a_kind_the_app_does_not_send_is_rejected_before_any_claim() {
    let w = World::new(Setup::default());
    let mut job = subscribe("mp");
    job["kind"] = "miniprogram_subscribe".into();
    let Step::Reject { outcome, reason } = w.process(&body(job), RetryState::default()).await
    else {
        panic!()
    };
    assert!(reason.starts_with("kind:"), "{reason}");
    assert!(reason.contains("apps.a.kinds"), "{reason}");
    assert_eq!(outcome.status, SendStatus::Rejected);
    assert!(w.store().calls().is_empty() && w.wechat.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_job_of_an_app_not_configured_is_rejected_not_a_panic() {
    let w = World::new(Setup::default());
    let job = body(template("j5"));
    let incoming = Incoming {
        app: "nobody",
        body: &job,
        message_id: None,
        headers_len: 0,
        retry: RetryState::default(),
        outlet: &OPEN,
        trace: None,
    };
    let Step::Reject { outcome, reason } = process(&w.deps, incoming).await else {
        panic!()
    };
    assert_eq!(reason, "app: \"nobody\" is not a configured app");
    assert_eq!(outcome.app, "nobody");
    assert_eq!(outcome.id.as_deref(), Some("j5"));
    assert!(w.store().calls().is_empty() && w.wechat.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_token_that_cannot_be_had_pauses_the_app_for_the_keepers_backoff() {
    let w = World::new(Setup {
        tokens: vec![refused_token(40164)],
        ..Setup::default()
    });
    w.process(&body(template("j6")), RetryState::default())
        .await;
    assert!(
        matches!(w.app().gate.admit().await, Admission::Wait(_)),
        "paused"
    );
    // Jobs meanwhile are turned back without asking WeChat again.
    let step = w
        .process(&body(template("j7")), RetryState::default())
        .await;
    assert!(matches!(step, Step::Retry { .. }), "{step:?}");
    assert_eq!(w.wechat.token_fetches(), 1);
}

/// Log lines, as the `fmt` layer writes them.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_shared_state_outage_reads_as_state_in_the_log_and_the_outcome() {
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    // With no global subscriber, a callsite another test thread hits first caches "no
    // interest", and a race with that can hide this test's lines from its own subscriber. A
    // global one that takes every event (and writes none) keeps every callsite asking the
    // subscriber in force; this test's, on this thread.
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    });
    let _logging = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    let w = World::new(Setup {
        shared_tokens: Some(false),
        ..Setup::default()
    });
    let Step::Finish(o) = w.process(&body(template("outage")), too_old()).await else {
        panic!("past max_age: failed")
    };
    let error = o.error.unwrap_or_default();
    assert!(error.starts_with("shared state is unavailable;"), "{error}");
    let logged = String::from_utf8(log.0.lock().clone()).unwrap();
    assert!(
        logged.contains("cannot get an access token")
            && logged.contains("shared state (Redis) is unavailable"),
        "{logged}"
    );
    assert!(!logged.contains("WeChat"), "{logged}");
    assert!(w.wechat.received().is_empty() && w.wechat.token_fetches() == 0);
}

/// A category template job whose `thing1` is over 20 characters, and which fills `first`.
fn over_long_thing(id: &str) -> serde_json::Value {
    let mut job = template(id);
    job["data"] = serde_json::json!({
        "first": {"value": "您好"},
        "thing1": {"value": "您的餐品已经备好请尽快到一号窗口取餐谢谢光临"}
    });
    job
}

#[tokio::test(start_paused = true)]
async fn an_over_long_typed_template_value_is_rejected_before_any_claim_or_token() {
    let w = World::new(Setup::default());
    let Step::Reject { outcome, reason } = w
        .process(&body(over_long_thing("long")), RetryState::default())
        .await
    else {
        panic!("rejected")
    };
    assert!(
        reason.starts_with("data.thing1.value: thing: at most 20 characters"),
        "{reason}"
    );
    assert_eq!(outcome.status, SendStatus::Rejected);
    assert!(w.store().calls().is_empty(), "no claim");
    assert!(w.wechat.received().is_empty() && w.wechat.token_fetches() == 0);
}

#[tokio::test(start_paused = true)]
async fn a_truncating_app_sends_the_job_and_every_outcome_carries_its_warnings() {
    let truncating = || Setup {
        reading: crate::kinds::ReadOptions { truncate: true },
        ..Setup::default()
    };
    let w = World::new(truncating());
    let Step::Finish(sent) = w
        .process(&body(over_long_thing("cut")), RetryState::default())
        .await
    else {
        panic!("sent")
    };
    assert_eq!(sent.status, SendStatus::Sent);
    assert_eq!(sent.warnings.len(), 2, "{:?}", sent.warnings);
    assert!(sent.warnings[0].starts_with("data.thing1.value: shortened from 22"));
    assert!(sent.warnings[1].starts_with("data.first: not shown"));
    assert_eq!(w.wechat.received().len(), 1);

    // A refusal keeps them too: the producer learns what was cut whatever the ending.
    let w = World::new(Setup {
        sends: vec![code(43101)],
        ..truncating()
    });
    let Step::Finish(failed) = w
        .process(&body(over_long_thing("cut-refused")), RetryState::default())
        .await
    else {
        panic!("failed")
    };
    assert_eq!(failed.status, SendStatus::Failed);
    assert_eq!(failed.warnings, sent.warnings);

    // A job WeChat shows as sent has none, and its outcome no `warnings` field at all.
    let w = World::new(truncating());
    let Step::Finish(plain) = w
        .process(&body(template("plain")), RetryState::default())
        .await
    else {
        panic!("sent")
    };
    assert!(plain.warnings.is_empty());
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("warnings").is_none(), "{json}");
}
