//! One trace from the producer to the delivery report, as an OpenTelemetry collector sees it:
//! the real `wxcourier` binary with `log.otlp` on exports to a local OTLP/HTTP receiver, which
//! decodes each request with the protocol's own types. The job's span is the child of the
//! producer's span, the WeChat call is the job span's child with its errcode, and the delivery
//! report's span links back to the producer's span; the outcome and the report carry the
//! producer's `traceparent` and `tracestate`. A collector that never answers stops nothing:
//! every job still ends, and the spans it did not take are counted.

mod common;

use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::process::Binary;
use common::*;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Consumer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message;
use serde_json::Value;
use wxcourier::broker::{Publisher, job_queue};
use wxcourier::sim::push::CallbackTarget;
use wxcourier::sim::{DEFAULT_APPID, SimOptions, Simulator};

const CALLBACK_TOKEN: &str = "cb-token";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7";

/// Spans as a collector received them.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    /// Serves OTLP/HTTP on a free port; returns its base URL.
    async fn start(&self) -> String {
        async fn take(State(c): State<Collector>, body: Bytes) -> Vec<u8> {
            let request = ExportTraceServiceRequest::decode(body).expect("an OTLP request");
            let mut spans = c.spans.lock();
            for resource in request.resource_spans {
                for scope in resource.scope_spans {
                    spans.extend(scope.spans);
                }
            }
            // An empty ExportTraceServiceResponse.
            Vec::new()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/v1/traces", post(take))
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn named(&self, name: &str) -> Vec<Span> {
        self.spans
            .lock()
            .iter()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }
}

fn int_attribute(span: &Span, key: &str) -> Option<i64> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Any::IntValue(v) => Some(*v),
            _ => None,
        }
    })
}

fn string_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes.iter().find(|a| a.key == key).and_then(|a| {
        match a.value.as_ref()?.value.as_ref()? {
            Any::StringValue(v) => Some(v.as_str()),
            _ => None,
        }
    })
}

/// Every result for `app` with its AMQP headers, from a queue of the test's own.
async fn results_with_headers(conn: &lapin::Connection, app: &str) -> Consumer {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().as_str().into(),
        "wxcourier.results".into(),
        format!("*.{app}").as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_consume(
        q.name().as_str().into(),
        "otlp-test".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// The next result of `kind` (`delivery`, or any other for an outcome) for the job `id`.
async fn next_result(results: &mut Consumer, id: &str, delivery: bool) -> (Value, BasicProperties) {
    loop {
        let d = tokio::time::timeout(Duration::from_secs(20), results.next())
            .await
            .unwrap_or_else(|_| panic!("no result for {id}"))
            .unwrap()
            .unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        let v: Value = serde_json::from_slice(&d.data).unwrap();
        if v["id"] == id && (v["kind"] == "delivery") == delivery {
            return (v, d.properties);
        }
    }
}

fn header<'a>(p: &'a BasicProperties, key: &str) -> Option<&'a str> {
    match p.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

struct Running {
    sim: Simulator,
    binary: Binary,
    worker: Child,
    harness: Harness,
    metrics: String,
}

/// The worker with `log.otlp` on, exporting to `endpoint` with `env`, its callback known to
/// the simulator.
async fn start(prefix: &str, endpoint: &str, env: &[(&str, &str)]) -> Running {
    let sim = Simulator::start("127.0.0.1:0", SimOptions::default())
        .await
        .unwrap();
    let app = unique_app(prefix);
    let http = free_port();
    let binary = Binary::with(
        &app,
        &sim.base_url(),
        &format!("rate_per_second = 500\nburst = 50\ncallback_token = \"{CALLBACK_TOKEN}\""),
        &format!("[http]\nlisten = \"127.0.0.1:{http}\"\n[log]\notlp = true\n"),
    );
    let harness = Harness::new(&app, &settings(&app, &sim)).await;
    let mut command = binary.command("run");
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    for (k, v) in env {
        command.env(k, v);
    }
    let worker = command.spawn().unwrap();
    wait_for_consumer(&harness.conn, &job_queue(&app), Duration::from_secs(30)).await;
    sim.set_callback(
        DEFAULT_APPID,
        Some(CallbackTarget {
            url: format!("http://127.0.0.1:{http}/wechat/callback/{app}"),
            token: CALLBACK_TOKEN.into(),
            aes_key: None,
        }),
    );
    Running {
        sim,
        binary,
        worker,
        harness,
        metrics: format!("http://127.0.0.1:{http}/metrics"),
    }
}

impl Running {
    async fn publish_traced(&self, id: &str, n: usize) {
        let mut headers = FieldTable::default();
        let parent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
        headers.insert("traceparent".into(), AMQPValue::LongString(parent.into()));
        headers.insert(
            "tracestate".into(),
            AMQPValue::LongString(TRACESTATE.into()),
        );
        let body = serde_json::to_vec(&job(id, &openid(n))).unwrap();
        let publisher: &Publisher = &self.harness.publisher;
        publisher
            .publish_job(&self.binary.app, id, &body, headers)
            .await
            .unwrap();
    }

    async fn metrics(&self) -> String {
        reqwest::get(&self.metrics)
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        signal(&self.worker, "TERM");
        assert!(wait_exit(&mut self.worker, Duration::from_secs(20)).is_some());
        self.harness.cleanup().await;
        self.sim.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_sees_one_trace_from_the_producer_through_the_wechat_call_to_the_report() {
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let r = start("otlp", &endpoint, &[]).await;
    let mut results = results_with_headers(&r.harness.conn, &r.binary.app).await;
    let id = format!("{}-traced", r.binary.app);
    r.publish_traced(&id, 1).await;

    let (outcome, outcome_props) = next_result(&mut results, &id, false).await;
    assert_eq!(outcome["status"], "sent", "{outcome}");
    let parent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    assert_eq!(header(&outcome_props, "traceparent"), Some(parent.as_str()));
    assert_eq!(header(&outcome_props, "tracestate"), Some(TRACESTATE));
    let (report, props) = next_result(&mut results, &id, true).await;
    assert_eq!(report["status"], "delivered", "{report}");
    assert_eq!(
        header(&props, "traceparent"),
        Some(parent.as_str()),
        "the report carries its job's trace on"
    );
    assert_eq!(header(&props, "tracestate"), Some(TRACESTATE));
    for props in [&outcome_props, &props] {
        let headers = serde_json::json!({
            "traceparent": header(props, "traceparent"),
            "tracestate": header(props, "tracestate"),
        });
        schemas::assert_valid("trace-headers", &headers);
    }

    // Spans go out within about a second of their end.
    let started = Instant::now();
    let (job, call, reported) = loop {
        let (jobs, calls, reports) = (
            collector.named("job"),
            collector.named("wechat_call"),
            collector.named("delivery_report"),
        );
        if let (Some(j), Some(c), Some(d)) = (jobs.first(), calls.first(), reports.first()) {
            break (j.clone(), c.clone(), d.clone());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "spans seen: {:?}",
            collector
                .spans
                .lock()
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(hex::encode(&job.trace_id), TRACE_ID, "the producer's trace");
    assert_eq!(
        hex::encode(&job.parent_span_id),
        PARENT_ID,
        "the producer's span"
    );
    assert_eq!(string_attribute(&job, "id"), Some(id.as_str()));
    assert_eq!(hex::encode(&call.trace_id), TRACE_ID);
    assert_eq!(
        call.parent_span_id, job.span_id,
        "the call is the job's child"
    );
    assert_eq!(int_attribute(&call, "errcode"), Some(0), "{call:?}");
    let link = reported
        .links
        .iter()
        .find(|l| hex::encode(&l.trace_id) == TRACE_ID)
        .unwrap_or_else(|| panic!("the report links to the job's trace: {reported:?}"));
    assert_eq!(hex::encode(&link.span_id), PARENT_ID);
    let metrics = r.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wxcourier_trace_spans_exported_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    r.stop().await;
}

/// A collector that takes the connection and never answers.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut kept = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            kept.push(socket);
        }
    });
    (url, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_slows_no_job_and_its_lost_spans_are_counted() {
    let (endpoint, held) = black_hole().await;
    let r = start(
        "otlp_bh",
        &endpoint,
        &[("OTEL_EXPORTER_OTLP_TIMEOUT", "300")],
    )
    .await;
    let mut results = results_with_headers(&r.harness.conn, &r.binary.app).await;
    // Every job ends while the collector holds every request: nothing waits for it. (The
    // benchmark's `otlp` section shows the throughput is the same as without export.)
    let n = 200;
    for i in 0..n {
        r.publish_traced(&format!("{}-{i}", r.binary.app), i).await;
    }
    let mut sent = std::collections::HashSet::new();
    while sent.len() < n {
        let d = tokio::time::timeout(Duration::from_secs(20), results.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} jobs ended", sent.len()))
            .unwrap()
            .unwrap();
        d.ack(BasicAckOptions::default()).await.unwrap();
        let o: Value = serde_json::from_slice(&d.data).unwrap();
        if o["kind"] != "delivery" {
            assert_eq!(o["status"], "sent", "{o}");
            sent.insert(o["id"].as_str().unwrap().to_owned());
        }
    }
    let started = Instant::now();
    loop {
        let metrics = r.metrics().await;
        if metrics.lines().any(|l| {
            l.starts_with("wxcourier_trace_spans_dropped_total{cause=\"export_failed\"}")
                && !l.ends_with(" 0")
        }) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no failed export counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    r.stop().await;
    held.abort();
}

#[test]
fn an_endpoint_that_is_no_url_exits_2_naming_the_export() {
    let binary = Binary::new("otlp_bad", "http://127.0.0.1:9", "[log]\notlp = true\n");
    let out = binary
        .command("run")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url\u{7f}")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("log.otlp"), "{err}");
}
