//! W3C Trace Context on a job (its `traceparent` and `tracestate` AMQP headers), carried over
//! to the job's outcome so a producer's trace reaches the result it reads. Only well-formed
//! values cross: a header from a producer is untrusted, and an outcome must not echo whatever a
//! job carried. The same headers go on the job's delivery report, from its sent record.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

use crate::types::TraceHeaders;

pub(crate) const TRACEPARENT: &str = "traceparent";
pub(crate) const TRACESTATE: &str = "tracestate";

/// The job's trace headers worth echoing ([`TraceHeaders::checked`]).
pub(crate) fn headers_of(properties: &BasicProperties) -> Option<TraceHeaders> {
    let headers = properties.headers().as_ref()?;
    TraceHeaders::checked(text(headers, TRACEPARENT)?, text(headers, TRACESTATE))
}

/// `trace` as the AMQP headers of a message wxcourier publishes.
pub(crate) fn field_table(trace: &TraceHeaders) -> FieldTable {
    let mut out = FieldTable::default();
    out.insert(
        TRACEPARENT.into(),
        AMQPValue::LongString(LongString::from(trace.traceparent.as_str())),
    );
    if let Some(state) = &trace.tracestate {
        out.insert(
            TRACESTATE.into(),
            AMQPValue::LongString(LongString::from(state.as_str())),
        );
    }
    out
}

fn text<'a>(headers: &'a FieldTable, key: &str) -> Option<&'a str> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn trace_of(properties: &BasicProperties) -> Option<FieldTable> {
        headers_of(properties).map(|t| field_table(&t))
    }

    fn props(pairs: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        BasicProperties::default().with_headers(t)
    }

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    #[test]
    fn a_valid_traceparent_and_its_tracestate_are_echoed() {
        let got = trace_of(&props(&[
            (TRACEPARENT, long(PARENT)),
            (TRACESTATE, long("rojo=00f067aa0ba902b7")),
            ("x-other", long("not echoed")),
        ]))
        .unwrap();
        assert_eq!(got.inner().len(), 2);
        assert_eq!(text(&got, TRACEPARENT), Some(PARENT));
        assert_eq!(text(&got, TRACESTATE), Some("rojo=00f067aa0ba902b7"));
    }

    #[test]
    fn hostile_or_malformed_trace_headers_are_not_echoed() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            &"a".repeat(70_000),
        ] {
            assert!(
                trace_of(&props(&[(TRACEPARENT, long(bad))])).is_none(),
                "{bad:.60}"
            );
        }
        assert!(trace_of(&props(&[(TRACEPARENT, AMQPValue::LongLongInt(1))])).is_none());
        assert!(trace_of(&props(&[(TRACESTATE, long("rojo=1"))])).is_none());
        assert!(trace_of(&BasicProperties::default()).is_none());
        // A bad tracestate is dropped; the valid traceparent still crosses.
        for state in [&"k=v,".repeat(200), "bad\nline"] {
            let got = trace_of(&props(&[
                (TRACEPARENT, long(PARENT)),
                (TRACESTATE, long(state)),
            ]))
            .unwrap();
            assert_eq!(got.inner().len(), 1, "{state:.40}");
        }
    }
}
