//! The AMQP headers wxcourier reads and writes, and their bounds: a job's own headers are
//! limited, every header value wxcourier writes is bounded, and the broker's bookkeeping
//! headers never travel with a copy. A content-header frame cannot be split, so one oversized
//! header would make the broker close the whole connection (`FRAME_ERROR`).

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::retry::RetryState;
use crate::text::bounded;

/// On a dead-lettered job: why it was rejected.
pub const HEADER_ERROR: &str = "x-wxcourier-error";
/// On a dead-lettered job: the app (routing key) it came in for.
pub(crate) const HEADER_APP: &str = "x-wxcourier-app";
/// On a retry copy: send calls made for the job so far.
pub(crate) const HEADER_ATTEMPTS: &str = "x-wxcourier-attempts";
/// On a retry copy: how many of those sends WeChat answered with a quota code (45009); they
/// do not count toward `retry.max_attempts`.
pub(crate) const HEADER_QUOTA_SENDS: &str = "x-wxcourier-quota-sends";
/// On a retry copy: when the job was first tried, in milliseconds since the Unix epoch.
pub(crate) const HEADER_FIRST_TRY: &str = "x-wxcourier-first-try";
/// On a retry copy: consecutive 45009 answers the job has seen.
pub(crate) const HEADER_QUOTA_STRIKES: &str = "x-wxcourier-quota-strikes";
/// On a retry copy: the claim holder of the turn that scheduled it (16 hex digits), so the
/// job's next turn can take over a claim that turn left in shared state.
pub(crate) const HEADER_CLAIM: &str = "x-wxcourier-claim";
/// On a retry copy held through quiet hours: when they end for it (Unix milliseconds).
pub(crate) const HEADER_QUIET_UNTIL: &str = "x-wxcourier-quiet-until";
/// On a retry copy: which delay tier queue it waits in (the retry exchange's binding). Not
/// `x-` prefixed: a headers exchange ignores `x-` headers when matching.
pub(crate) const HEADER_DELAY_TIER: &str = "wxcourier-delay";

/// A job whose own headers take more than this (encoded) is rejected: its retry and
/// dead-letter copies must still fit a frame with the headers wxcourier adds, whatever frame
/// size the broker and the producer agreed on.
pub(crate) const MAX_JOB_HEADERS: usize = 16 * 1024;

/// The longest reason wxcourier writes into `x-wxcourier-error` (and an outcome's `error`).
pub(crate) const MAX_REASON_BYTES: usize = 1024;

/// Headers the broker maintains itself. They must not travel with a copy: the dead-letter
/// history would grow with every round, and a delivery count copied onto a fresh message
/// would count the old message's deliveries against the new one.
fn is_broker_bookkeeping(key: &str) -> bool {
    key.starts_with("x-death")
        || key.starts_with("x-first-death")
        || key.starts_with("x-last-death")
        || key == "x-delivery-count"
        || key == "x-acquired-count"
}

/// The size of `table` as encoded on the wire (AMQP 0-9-1 field table, RabbitMQ's types).
pub(crate) fn encoded_len(table: &FieldTable) -> usize {
    4 + table
        .inner()
        .iter()
        .map(|(k, v)| 1 + k.as_str().len() + 1 + value_len(v))
        .sum::<usize>()
}

fn value_len(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::Void => 0,
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        AMQPValue::FieldArray(a) => {
            4 + a.as_slice().iter().map(|v| 1 + value_len(v)).sum::<usize>()
        }
        AMQPValue::FieldTable(t) => encoded_len(t),
    }
}

/// The size of a delivery's headers, 0 when it has none.
pub(crate) fn headers_len(props: &BasicProperties) -> usize {
    props.headers().as_ref().map_or(0, encoded_len)
}

fn long_string(v: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(v))
}

/// The producer's own headers: the original's minus the broker's bookkeeping.
fn carried(original: Option<&FieldTable>) -> FieldTable {
    carried_except(original, &[])
}

fn carried_except(original: Option<&FieldTable>, dropped: &[&str]) -> FieldTable {
    let mut headers = FieldTable::default();
    for (k, v) in original.map(FieldTable::inner).into_iter().flatten() {
        if !is_broker_bookkeeping(k.as_str()) && !dropped.contains(&k.as_str()) {
            headers.insert(k.clone(), v.clone());
        }
    }
    headers
}

/// The headers of a retry copy: the producer's own, plus the retry state and the tier.
pub(crate) fn retry_copy(
    original: Option<&FieldTable>,
    state: &RetryState,
    tier: &str,
) -> FieldTable {
    // The claim header is this copy's own: the original's names a turn before.
    let mut headers = carried_except(original, &[HEADER_CLAIM]);
    let mut number = |key: &str, n: u64| {
        headers.insert(
            key.into(),
            AMQPValue::LongLongInt(n.min(i64::MAX as u64) as i64),
        );
    };
    number(HEADER_ATTEMPTS, state.attempts.into());
    number(HEADER_QUOTA_SENDS, state.quota_sends.into());
    number(HEADER_QUOTA_STRIKES, state.quota_strikes.into());
    if let Some(first) = state.first_try_ms {
        number(HEADER_FIRST_TRY, first);
    }
    if let Some(until) = state.quiet_until_ms {
        number(HEADER_QUIET_UNTIL, until);
    }
    if let Some(claim) = state.claim {
        headers.insert(HEADER_CLAIM.into(), long_string(&format!("{claim:016x}")));
    }
    headers.insert(HEADER_DELAY_TIER.into(), long_string(tier));
    headers
}

/// The headers of a rejected job's copy in `wxcourier.dead`: the producer's own when they are
/// within [`MAX_JOB_HEADERS`] (otherwise they cannot be kept, and the reason says so), plus
/// the bounded reason and the app.
pub(crate) fn dead_copy(original: Option<&FieldTable>, reason: &str, app: &str) -> FieldTable {
    let size = original.map_or(0, encoded_len);
    let (mut headers, reason) = if size <= MAX_JOB_HEADERS {
        (carried(original), reason.to_owned())
    } else {
        (
            FieldTable::default(),
            format!("{reason} (its {size} bytes of headers were not kept)"),
        )
    };
    headers.insert(
        HEADER_ERROR.into(),
        long_string(&bounded(&reason, MAX_REASON_BYTES)),
    );
    headers.insert(HEADER_APP.into(), long_string(app));
    headers
}

/// The headers a replayed job goes back with: its original ones, without wxcourier's
/// dead-letter notes or the broker's bookkeeping.
pub(crate) fn replayed(original: Option<&FieldTable>) -> FieldTable {
    carried_except(original, &[HEADER_ERROR, HEADER_APP])
}

/// Reads the retry state a previous try left in the headers (none on a first delivery).
pub(crate) fn retry_state(props: &BasicProperties) -> RetryState {
    let Some(headers) = props.headers() else {
        return RetryState::default();
    };
    let get = |key: &str| headers.inner().get(key).and_then(as_u64);
    let small = |key: &str, cap: u64| get(key).unwrap_or(0).min(cap) as u32;
    RetryState {
        attempts: small(HEADER_ATTEMPTS, u32::MAX.into()),
        quota_sends: small(HEADER_QUOTA_SENDS, u32::MAX.into()),
        first_try_ms: get(HEADER_FIRST_TRY),
        quota_strikes: small(HEADER_QUOTA_STRIKES, 64),
        claim: text(props, HEADER_CLAIM).as_deref().and_then(claim_holder),
        quiet_until_ms: get(HEADER_QUIET_UNTIL),
    }
}

/// A claim holder as [`retry_copy`] writes it: exactly 16 hex digits, else none (a header a
/// producer wrote by hand names no claim).
fn claim_holder(text: &str) -> Option<u64> {
    if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

/// A header as text, whichever string type the sender chose. The one header reader: the
/// worker, `dead` and the integration tests all read headers through it.
pub fn text(props: &BasicProperties, key: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn as_u64(v: &AMQPValue) -> Option<u64> {
    match v {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(*n as u64),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::ShortUInt(n) => Some(*n as u64),
        AMQPValue::Timestamp(n) => Some(*n),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    #[test]
    fn encoded_len_matches_the_wire_encoding() {
        // key "a" (1+1) + type (1) + long string (4+3) = 10, plus the table's own 4 bytes.
        assert_eq!(encoded_len(&table(&[("a", long_string("abc"))])), 14);
        let nested = table(&[(
            "t",
            AMQPValue::FieldTable(table(&[("n", AMQPValue::LongLongInt(1))])),
        )]);
        // outer: 4 + (1+1+1 + inner), inner: 4 + (1+1+1+8) = 15
        assert_eq!(encoded_len(&nested), 4 + 3 + 15);
    }

    #[test]
    fn the_retry_state_round_trips_through_a_copys_headers() {
        let state = RetryState {
            attempts: 7,
            quota_sends: 3,
            first_try_ms: Some(1_764_000_000_123),
            quota_strikes: 2,
            claim: Some(0xfedc_ba98_7654_3210),
            quiet_until_ms: Some(1_764_000_600_000),
        };
        let headers = retry_copy(None, &state, "1000ms");
        let props = BasicProperties::default().with_headers(headers);
        assert_eq!(retry_state(&props), state);
        assert_eq!(text(&props, HEADER_DELAY_TIER).as_deref(), Some("1000ms"));
        assert_eq!(
            text(&props, HEADER_CLAIM).as_deref(),
            Some("fedcba9876543210")
        );
    }

    #[test]
    fn a_claim_header_is_16_hex_digits_or_names_no_claim() {
        for bad in [
            "",
            "fedcba987654321",
            "fedcba98765432100",
            "xedcba9876543210",
            "+edcba987654321",
        ] {
            let props =
                BasicProperties::default().with_headers(table(&[(HEADER_CLAIM, long_string(bad))]));
            assert_eq!(retry_state(&props).claim, None, "{bad:?}");
        }
        let props = BasicProperties::default()
            .with_headers(table(&[(HEADER_CLAIM, AMQPValue::LongLongInt(7))]));
        assert_eq!(
            retry_state(&props).claim,
            None,
            "a number is not the header's form"
        );
    }

    #[test]
    fn a_retry_copy_names_its_own_turns_claim_never_the_originals() {
        let original = table(&[(HEADER_CLAIM, long_string("0000000000000001"))]);
        let props = |state: &RetryState| {
            BasicProperties::default().with_headers(retry_copy(Some(&original), state, "1000ms"))
        };
        let ours = RetryState {
            claim: Some(2),
            ..RetryState::default()
        };
        assert_eq!(retry_state(&props(&ours)).claim, Some(2));
        assert_eq!(retry_state(&props(&RetryState::default())).claim, None);
    }

    #[test]
    fn copies_drop_the_brokers_bookkeeping_and_keep_the_producers_headers() {
        let original = table(&[
            ("x-death", AMQPValue::FieldArray(Default::default())),
            ("x-first-death-reason", long_string("expired")),
            ("x-delivery-count", AMQPValue::LongLongInt(19)),
            ("x-acquired-count", AMQPValue::LongLongInt(19)),
            ("trace", long_string("abc")),
        ]);
        for copy in [
            retry_copy(Some(&original), &RetryState::default(), "1ms"),
            dead_copy(Some(&original), "why", "shop"),
            replayed(Some(&original)),
        ] {
            let keys: Vec<&str> = copy.inner().keys().map(|k| k.as_str()).collect();
            assert!(keys.contains(&"trace"), "{keys:?}");
            assert!(!keys.iter().any(|k| is_broker_bookkeeping(k)), "{keys:?}");
        }
    }

    #[test]
    fn a_dead_copy_bounds_its_reason_and_drops_oversized_headers() {
        let reason = format!("{}: is not a known field", "k".repeat(65_500));
        let copy = dead_copy(None, &reason, "shop");
        let props = BasicProperties::default().with_headers(copy);
        assert!(text(&props, HEADER_ERROR).unwrap().len() <= MAX_REASON_BYTES);

        let big = table(&[("blob", long_string(&"v".repeat(100 * 1024)))]);
        let copy = dead_copy(Some(&big), "headers: too large", "shop");
        assert!(
            encoded_len(&copy) < 2 * MAX_REASON_BYTES,
            "{}",
            encoded_len(&copy)
        );
        let props = BasicProperties::default().with_headers(copy);
        assert!(
            text(&props, HEADER_ERROR)
                .unwrap()
                .contains("were not kept")
        );
        assert_eq!(text(&props, HEADER_APP).as_deref(), Some("shop"));
    }

    #[test]
    fn replay_removes_wxcourier_notes() {
        let dead = dead_copy(
            Some(&table(&[("trace", long_string("abc"))])),
            "why",
            "shop",
        );
        let back = replayed(Some(&dead));
        let keys: Vec<&str> = back.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["trace"]);
    }

    /// What [`dead_copy`] and [`retry_copy`] write, as `docs/schemas/dead-headers.json` (the
    /// contract's form of a dead message's headers) describes it: a change here that the
    /// schema does not know fails.
    #[test]
    fn a_dead_copy_of_a_retry_copy_validates_against_the_contract_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/schemas/dead-headers.json")).unwrap();
        let schema = jsonschema::draft202012::new(&schema).unwrap();
        let state = RetryState {
            attempts: 3,
            quota_sends: 1,
            first_try_ms: Some(1_764_320_000_000),
            quota_strikes: 1,
            claim: Some(0xabc),
            quiet_until_ms: Some(1_764_350_000_000),
        };
        let retry = retry_copy(None, &state, "1000ms");
        let dead = dead_copy(Some(&retry), &"x".repeat(2000), "shop");
        let mut json = serde_json::Map::new();
        for (key, value) in dead.inner() {
            let value = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into(),
                AMQPValue::LongLongInt(n) => (*n).into(),
                other => panic!("{key} is written as {other:?}"),
            };
            json.insert(key.to_string(), value);
        }
        let json = serde_json::Value::Object(json);
        let errors: Vec<String> = schema.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{json:#}");
        assert!(json.get(HEADER_ATTEMPTS).is_some() && json.get(HEADER_ERROR).is_some());
        let mut nameless = json.clone();
        nameless.as_object_mut().unwrap().remove(HEADER_APP);
        assert!(!schema.is_valid(&nameless), "a rejection names its app");
    }
}
