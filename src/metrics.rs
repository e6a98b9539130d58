//! Prometheus metrics, all `wxcourier_`-prefixed, served on `/metrics`; [`listing`] lists their
//! families as the registry itself describes them (`wxcourier metrics-list`).

pub mod listing;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppLabel {
    pub(crate) app: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppStatus {
    pub(crate) app: String,
    pub(crate) status: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppErrcode {
    pub(crate) app: String,
    /// WeChat's errcode, or the transport failure (`timeout`, `http_503`, `connect`, `body`).
    pub(crate) errcode: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppTier {
    pub(crate) app: String,
    pub(crate) tier: String,
    /// Why the copy waits: `transient`, `quota`, `not_now` or `held`.
    pub(crate) cause: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppEndpoint {
    pub(crate) app: String,
    /// The WeChat API path, `/cgi-bin/…`.
    pub(crate) endpoint: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppTemplate {
    pub(crate) app: String,
    /// A template_id, or `*` for the whole app.
    pub(crate) template: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AppAction {
    pub(crate) app: String,
    /// What a pause did to a job: `held` or `dropped`.
    pub(crate) action: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueueLabel {
    pub(crate) queue: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PlatformLabel {
    pub(crate) platform: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PlatformResult {
    pub(crate) platform: String,
    pub(crate) result: String,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PlatformStanding {
    pub(crate) platform: String,
    pub(crate) standing: String,
}

/// Histogram buckets from 1 ms to about 33 s.
#[derive(Clone)]
pub(crate) struct Seconds;

impl MetricConstructor<Histogram> for Seconds {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.001, 2.0, 16))
    }
}

/// Every metric the worker keeps.
pub struct Metrics {
    registry: Registry,
    pub(crate) jobs: Family<AppStatus, Counter>,
    pub(crate) wechat_calls: Family<AppErrcode, Counter>,
    pub(crate) send_latency: Family<AppLabel, Histogram, Seconds>,
    pub(crate) retries: Family<AppTier, Counter>,
    pub(crate) token_refreshes: Family<AppLabel, Counter>,
    pub(crate) token_errors: Family<AppLabel, Counter>,
    pub(crate) token_fetch_failures: Family<AppLabel, Counter>,
    pub(crate) limiter_wait: Family<AppLabel, Histogram, Seconds>,
    pub(crate) app_paused: Family<AppLabel, Gauge>,
    pub(crate) paused: Family<AppTemplate, Gauge>,
    pub(crate) paused_jobs: Family<AppAction, Counter>,
    pub(crate) in_flight: Gauge,
    pub broker_reconnects: Counter,
    pub publish_failures: Counter,
    pub(crate) callback_events: Family<AppStatus, Counter>,
    pub(crate) callback_unmark_failures: Family<AppLabel, Counter>,
    pub(crate) outcomes_unrouted: Family<AppStatus, Counter>,
    pub(crate) queue_messages: Family<QueueLabel, Gauge>,
    pub(crate) orphan_queues: Gauge,
    pub(crate) orphan_queue_messages: Family<QueueLabel, Gauge>,
    pub(crate) foreign_consumers: Family<AppLabel, Gauge>,
    pub(crate) catalog_templates: Family<AppLabel, Gauge>,
    pub(crate) quota_daily_limit: Family<AppEndpoint, Gauge>,
    pub(crate) quota_used: Family<AppEndpoint, Gauge>,
    pub(crate) quota_remaining: Family<AppEndpoint, Gauge>,
    pub(crate) quiet_hours_urgent: Family<AppLabel, Counter>,
    pub(crate) quiet_hours_deferred: Family<AppLabel, Counter>,
    pub(crate) quiet_hours_dropped: Family<AppLabel, Counter>,
    pub trail_failures: Counter,
    pub(crate) platform_ticket_age: Family<PlatformLabel, Gauge>,
    pub(crate) platform_authorizers: Family<PlatformStanding, Gauge>,
    pub(crate) platform_reconciliations: Family<PlatformResult, Counter>,
    pub(crate) platform_tokens_restored: Family<PlatformLabel, Counter>,
    /// The process's span export counts ([`span_export`]), shown by every registry.
    pub(crate) trace_spans_exported: Counter,
    pub(crate) trace_spans_dropped: Family<CauseLabel, Counter>,
}

#[derive(Clone, Debug, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CauseLabel {
    /// `queue_full` (spans ended faster than the collector took them) or `export_failed`.
    pub(crate) cause: String,
}

/// What became of the spans `log.otlp` exports. The exporter is set up for the whole process
/// before any registry exists, so it counts into these, and every registry shows them. Both
/// causes are there from the start (at 0), and each is counted through a handle kept here: a
/// dead collector drops every span, and a label built per drop would cost each of them.
pub(crate) struct SpanExport {
    pub(crate) exported: Counter,
    pub(crate) dropped: Family<CauseLabel, Counter>,
    pub(crate) queue_full: Counter,
    pub(crate) export_failed: Counter,
}

/// The process's span export counts.
pub(crate) fn span_export() -> &'static SpanExport {
    static COUNTS: std::sync::LazyLock<SpanExport> = std::sync::LazyLock::new(|| {
        let dropped = Family::<CauseLabel, Counter>::default();
        let handle = |cause: &str| {
            let label = CauseLabel {
                cause: cause.to_owned(),
            };
            dropped.get_or_create(&label).clone()
        };
        SpanExport {
            exported: Counter::default(),
            queue_full: handle("queue_full"),
            export_failed: handle("export_failed"),
            dropped,
        }
    });
    &COUNTS
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("wxcourier"),
            jobs: Family::default(),
            wechat_calls: Family::default(),
            send_latency: Family::new_with_constructor(Seconds),
            retries: Family::default(),
            token_refreshes: Family::default(),
            token_errors: Family::default(),
            token_fetch_failures: Family::default(),
            limiter_wait: Family::new_with_constructor(Seconds),
            app_paused: Family::default(),
            paused: Family::default(),
            paused_jobs: Family::default(),
            in_flight: Gauge::default(),
            broker_reconnects: Counter::default(),
            publish_failures: Counter::default(),
            callback_events: Family::default(),
            callback_unmark_failures: Family::default(),
            outcomes_unrouted: Family::default(),
            queue_messages: Family::default(),
            orphan_queues: Gauge::default(),
            orphan_queue_messages: Family::default(),
            foreign_consumers: Family::default(),
            catalog_templates: Family::default(),
            quota_daily_limit: Family::default(),
            quota_used: Family::default(),
            quota_remaining: Family::default(),
            quiet_hours_urgent: Family::default(),
            quiet_hours_deferred: Family::default(),
            quiet_hours_dropped: Family::default(),
            trail_failures: Counter::default(),
            platform_ticket_age: Family::default(),
            platform_authorizers: Family::default(),
            platform_reconciliations: Family::default(),
            platform_tokens_restored: Family::default(),
            trace_spans_exported: span_export().exported.clone(),
            trace_spans_dropped: span_export().dropped.clone(),
        };
        let r = &mut m.registry;
        r.register("jobs", "Jobs finished, by final status", m.jobs.clone());
        r.register(
            "wechat_calls",
            "Template send calls, by WeChat errcode or transport failure",
            m.wechat_calls.clone(),
        );
        r.register(
            "send_latency_seconds",
            "Duration of one template send call",
            m.send_latency.clone(),
        );
        r.register(
            "retries",
            "Copies of jobs published to a delay tier, by tier and cause: transient (backoff \
             after a failed send), quota (the app paused by 45009), not_now (the job could not be \
             tried now: shared state down, its id in flight elsewhere, its account's rate taken), \
             held (a delivery policy holds it: not_before, quiet hours, a frequency cap, a pause)",
            m.retries.clone(),
        );
        r.register(
            "token_refreshes",
            "Access tokens fetched",
            m.token_refreshes.clone(),
        );
        r.register(
            "token_errors",
            "Sends refused for a bad access token",
            m.token_errors.clone(),
        );
        r.register(
            "token_fetch_failures",
            "Access-token fetches that failed (the app pauses while fetching backs off)",
            m.token_fetch_failures.clone(),
        );
        r.register(
            "limiter_wait_seconds",
            "Time a job waited for its app's send rate",
            m.limiter_wait.clone(),
        );
        r.register(
            "app_paused",
            "1 while the app is paused (45009, or no access token)",
            m.app_paused.clone(),
        );
        r.register(
            "paused",
            "1 while a template (or the whole app, template *) is paused by the kill switch \
             (apps.NAME.paused_templates, wxcourier pause)",
            m.paused.clone(),
        );
        r.register(
            "paused_jobs",
            "Jobs the kill switch held back (held: they wait) or ended suppressed (dropped)",
            m.paused_jobs.clone(),
        );
        r.register(
            "in_flight_jobs",
            "Jobs being processed now",
            m.in_flight.clone(),
        );
        r.register(
            "broker_reconnects",
            "Broker sessions started after the first",
            m.broker_reconnects.clone(),
        );
        r.register(
            "publish_failures",
            "Publishes not confirmed (nack, timeout, channel error)",
            m.publish_failures.clone(),
        );
        r.register(
            "callback_events",
            "Reports published from WeChat's pushes, by status (delivery, preference and follow statuses)",
            m.callback_events.clone(),
        );
        r.register(
            "callback_unmark_failures",
            "Callback reports not published whose mark could not be undone: WeChat's retries of \
             the push are taken for repeats until the mark expires",
            m.callback_unmark_failures.clone(),
        );
        r.register(
            "outcomes_unrouted",
            "Outcomes and reports that no queue took (returned by wxcourier.results), by app and \
             the status of their routing key STATUS.APP",
            m.outcomes_unrouted.clone(),
        );
        r.register(
            "queue_messages",
            "Messages waiting in wxcourier.dead, wxcourier.unrouted and (with results.keep_unrouted) \
             wxcourier.results.unrouted",
            m.queue_messages.clone(),
        );
        r.register(
            "orphan_queues",
            "Job queues found at start whose app is not configured (their jobs are not sent)",
            m.orphan_queues.clone(),
        );
        r.register(
            "orphan_queue_messages",
            "Messages waiting at start in each job queue whose app is not configured",
            m.orphan_queue_messages.clone(),
        );
        r.register(
            "foreign_consumers",
            "Consumers of the app's job queue besides this worker, counted with memory state \
             (rate and idempotency are then per process)",
            m.foreign_consumers.clone(),
        );
        r.register(
            "catalog_templates",
            "Templates in the app's catalog (apps.NAME.catalog), as last fetched",
            m.catalog_templates.clone(),
        );
        // Three gauges rather than one with a field label: each can be summed or compared on
        // its own (remaining / daily_limit) without selecting a label first.
        r.register(
            "wechat_quota_daily_limit",
            "Calls of this WeChat API the account may make today (openapi/quota/get)",
            m.quota_daily_limit.clone(),
        );
        r.register(
            "wechat_quota_used",
            "Calls of this WeChat API the account made today, as WeChat counts them",
            m.quota_used.clone(),
        );
        r.register(
            "wechat_quota_remaining",
            "Calls of this WeChat API left to the account today",
            m.quota_remaining.clone(),
        );
        r.register(
            "quiet_hours_urgent",
            "Jobs marked urgent let through the app's quiet hours, counted at each try",
            m.quiet_hours_urgent.clone(),
        );
        r.register(
            "quiet_hours_deferred",
            "Jobs held until the end of the app's quiet hours (once per job and night)",
            m.quiet_hours_deferred.clone(),
        );
        r.register(
            "quiet_hours_dropped",
            "Jobs suppressed for coming during the app's quiet hours (quiet_mode = \"drop\")",
            m.quiet_hours_dropped.clone(),
        );
        r.register(
            "trail_failures",
            "Steps of a job's story (wxcourier status) that could not be kept; the job went on",
            m.trail_failures.clone(),
        );
        r.register(
            "platform_ticket_age_seconds",
            "Age of the newest component_verify_ticket a platform keeps (WeChat pushes one every \
             10 minutes and takes it for 12 hours)",
            m.platform_ticket_age.clone(),
        );
        r.register(
            "platform_authorizers",
            "A platform's authorizers by standing (active, revoked, needs_reauthorization)",
            m.platform_authorizers.clone(),
        );
        r.register(
            "platform_reconciliations",
            "Reconciliations of a platform's refresh tokens with WeChat's authorizer list, by \
             result (ok, failed)",
            m.platform_reconciliations.clone(),
        );
        r.register(
            "platform_refresh_tokens_restored",
            "Refresh tokens the state had lost and a reconciliation kept again from WeChat's \
             authorizer list",
            m.platform_tokens_restored.clone(),
        );
        r.register(
            "trace_spans_exported",
            "Spans sent to the OpenTelemetry collector (log.otlp)",
            m.trace_spans_exported.clone(),
        );
        r.register(
            "trace_spans_dropped",
            "Spans not sent to the OpenTelemetry collector (log.otlp), by cause: queue_full \
             (the collector is slower than the worker) or export_failed; sending never waits \
             for it",
            m.trace_spans_dropped.clone(),
        );
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub(crate) fn app(app: &str) -> AppLabel {
        AppLabel {
            app: app.to_owned(),
        }
    }

    fn wechat_call_counter(&self, app: &str, errcode: &str) {
        self.wechat_calls
            .get_or_create(&AppErrcode {
                app: app.into(),
                errcode: errcode.into(),
            })
            .inc();
    }

    pub(crate) fn retry(&self, app: &str, tier: &str, cause: &str) {
        self.retries
            .get_or_create(&AppTier {
                app: app.into(),
                tier: tier.into(),
                cause: cause.into(),
            })
            .inc();
    }

    pub(crate) fn callback_event(&self, app: &str, status: &str) {
        self.callback_events
            .get_or_create(&AppStatus {
                app: app.into(),
                status: status.into(),
            })
            .inc();
    }

    pub(crate) fn callback_unmark_failed(&self, app: &str) {
        self.callback_unmark_failures
            .get_or_create(&Self::app(app))
            .inc();
    }

    /// Counts one result under `STATUS.APP` that no queue took; returns how many of that app
    /// and status were counted before it (0: the first).
    pub(crate) fn result_unrouted(&self, app: &str, status: &str) -> u64 {
        self.outcomes_unrouted
            .get_or_create(&AppStatus {
                app: app.into(),
                status: status.into(),
            })
            .inc()
    }

    pub(crate) fn set_queue_messages(&self, queue: &str, count: u32) {
        self.queue_messages
            .get_or_create(&QueueLabel {
                queue: queue.into(),
            })
            .set(count as i64);
    }

    /// WeChat's daily quota of `endpoint` for `app`, as last read.
    pub(crate) fn set_wechat_quota(
        &self,
        app: &str,
        endpoint: &str,
        daily_limit: u64,
        used: u64,
        remain: u64,
    ) {
        let label = AppEndpoint {
            app: app.into(),
            endpoint: endpoint.into(),
        };
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.quota_daily_limit
            .get_or_create(&label)
            .set(gauge(daily_limit));
        self.quota_used.get_or_create(&label).set(gauge(used));
        self.quota_remaining
            .get_or_create(&label)
            .set(gauge(remain));
    }

    /// The job queues without a configured app, as found at start: each queue's name and
    /// its depth, `None` when it could not be counted.
    pub fn set_orphans<'a>(&self, orphans: impl IntoIterator<Item = (&'a str, Option<u32>)>) {
        let mut found = 0;
        for (queue, messages) in orphans {
            found += 1;
            if let Some(n) = messages {
                self.orphan_queue_messages
                    .get_or_create(&QueueLabel {
                        queue: queue.to_owned(),
                    })
                    .set(n as i64);
            }
        }
        self.orphan_queues.set(found);
    }
}

/// One app's most used metrics, resolved once so the hot path neither allocates labels nor
/// looks them up.
pub(crate) struct AppMetrics {
    app: String,
    family: std::sync::Arc<Metrics>,
    sent: Counter,
    failed: Counter,
    rejected: Counter,
    expired: Counter,
    cancelled: Counter,
    suppressed: Counter,
    calls_ok: Counter,
    send_latency: Histogram,
    limiter_wait: Histogram,
}

impl AppMetrics {
    pub(crate) fn new(family: std::sync::Arc<Metrics>, app: &str) -> Self {
        let status = |s: &str| {
            family
                .jobs
                .get_or_create(&AppStatus {
                    app: app.into(),
                    status: s.into(),
                })
                .clone()
        };
        Self {
            sent: status("sent"),
            failed: status("failed"),
            rejected: status("rejected"),
            expired: status("expired"),
            cancelled: status("cancelled"),
            suppressed: status("suppressed"),
            calls_ok: family
                .wechat_calls
                .get_or_create(&AppErrcode {
                    app: app.into(),
                    errcode: "0".into(),
                })
                .clone(),
            send_latency: family
                .send_latency
                .get_or_create(&Metrics::app(app))
                .clone(),
            limiter_wait: family
                .limiter_wait
                .get_or_create(&Metrics::app(app))
                .clone(),
            app: app.to_owned(),
            family: family.clone(),
        }
    }

    pub(crate) fn job_finished(&self, status: crate::outcome::SendStatus) {
        use crate::outcome::SendStatus::*;
        match status {
            Sent => &self.sent,
            Failed => &self.failed,
            Rejected => &self.rejected,
            Expired => &self.expired,
            Cancelled => &self.cancelled,
            Suppressed => &self.suppressed,
        }
        .inc();
    }

    /// One send call: `errcode` is WeChat's, or the transport failure's kind.
    pub(crate) fn wechat_call(&self, errcode: Result<i64, &str>, took: Duration) {
        match errcode {
            Ok(0) => {
                self.calls_ok.inc();
            }
            Ok(code) => self
                .family
                .wechat_call_counter(&self.app, &code.to_string()),
            Err(kind) => self.family.wechat_call_counter(&self.app, kind),
        }
        self.send_latency.observe(took.as_secs_f64());
    }

    pub(crate) fn limiter_waited(&self, took: Duration) {
        self.limiter_wait.observe(took.as_secs_f64());
    }
}

impl Metrics {
    /// The age of `platform`'s newest ticket, in seconds.
    pub(crate) fn set_ticket_age(&self, platform: &str, seconds: i64) {
        self.platform_ticket_age
            .get_or_create(&PlatformLabel {
                platform: platform.to_owned(),
            })
            .set(seconds);
    }

    /// How many of `platform`'s authorizers stand as `standing`.
    pub(crate) fn set_authorizers(&self, platform: &str, standing: &str, count: usize) {
        self.platform_authorizers
            .get_or_create(&PlatformStanding {
                platform: platform.to_owned(),
                standing: standing.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// One reconciliation of `platform` ended: `restored` tokens kept again when it succeeded.
    pub(crate) fn reconciled(&self, platform: &str, restored: Option<usize>) {
        let result = match restored {
            Some(_) => "ok",
            None => "failed",
        };
        self.platform_reconciliations
            .get_or_create(&PlatformResult {
                platform: platform.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        if let Some(n) = restored {
            self.platform_tokens_restored
                .get_or_create(&PlatformLabel {
                    platform: platform.to_owned(),
                })
                .inc_by(n as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_with_the_prefix_and_labels() {
        let m = std::sync::Arc::new(Metrics::new());
        let shop = AppMetrics::new(m.clone(), "shop");
        shop.job_finished(crate::outcome::SendStatus::Sent);
        shop.wechat_call(Ok(0), Duration::from_millis(12));
        m.in_flight.set(3);
        let text = m.render();
        assert!(
            text.contains("wxcourier_jobs_total{app=\"shop\",status=\"sent\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wxcourier_wechat_calls_total{app=\"shop\",errcode=\"0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wxcourier_send_latency_seconds_count{app=\"shop\"} 1"),
            "{text}"
        );
        assert!(text.contains("wxcourier_in_flight_jobs 3"), "{text}");
        assert!(
            !text.contains("wxcourier_wechat_quota_used{"),
            "unset until read"
        );
        m.set_wechat_quota("shop", "/cgi-bin/message/template/send", 100_000, 7, 99_993);
        let text = m.render();
        for line in [
            "wxcourier_wechat_quota_daily_limit{app=\"shop\",endpoint=\"/cgi-bin/message/template/send\"} 100000",
            "wxcourier_wechat_quota_used{app=\"shop\",endpoint=\"/cgi-bin/message/template/send\"} 7",
            "wxcourier_wechat_quota_remaining{app=\"shop\",endpoint=\"/cgi-bin/message/template/send\"} 99993",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
