//! The metric families the worker exports, read back from its own registry (not written down
//! a second time): what `wxcourier metrics-list` prints and the deploy checks compare the
//! dashboard, the alert rules and the recorded scrape against.

use std::hash::Hash;

use prometheus_client::metrics::family::{Family, MetricConstructor};

use super::Metrics;

/// Every family the worker exports, read back from its own registry's text exposition.
pub fn families() -> Vec<FamilyInfo> {
    let m = Metrics::new();
    sample_every_family(&m);
    families_in(&m.render())
}

/// One sample in each labelled family (every label empty), so that its label names show in
/// the exposition. Taken apart whole: a family added to `Metrics` and not sampled here does
/// not compile.
fn sample_every_family(m: &Metrics) {
    fn sample<S: Clone + Hash + Eq + Default, M, C: MetricConstructor<M>>(f: &Family<S, M, C>) {
        drop(f.get_or_create(&S::default()));
    }
    let Metrics {
        registry: _,
        jobs,
        wechat_calls,
        send_latency,
        retries,
        token_refreshes,
        token_errors,
        token_fetch_failures,
        limiter_wait,
        app_paused,
        paused,
        paused_jobs,
        // Unlabelled: always in the exposition.
        in_flight: _,
        broker_reconnects: _,
        publish_failures: _,
        callback_events,
        callback_unmark_failures,
        outcomes_unrouted,
        queue_messages,
        orphan_queues: _,
        orphan_queue_messages,
        foreign_consumers,
        catalog_templates,
        quota_daily_limit,
        quota_used,
        quota_remaining,
        quiet_hours_urgent,
        quiet_hours_deferred,
        quiet_hours_dropped,
        trail_failures: _,
        platform_ticket_age,
        platform_authorizers,
        platform_reconciliations,
        platform_tokens_restored,
        trace_spans_exported: _,
        trace_spans_dropped,
    } = m;
    sample(jobs);
    sample(wechat_calls);
    sample(send_latency);
    sample(retries);
    sample(token_refreshes);
    sample(token_errors);
    sample(token_fetch_failures);
    sample(limiter_wait);
    sample(app_paused);
    sample(paused);
    sample(paused_jobs);
    sample(callback_events);
    sample(callback_unmark_failures);
    sample(outcomes_unrouted);
    sample(queue_messages);
    sample(orphan_queue_messages);
    sample(foreign_consumers);
    sample(catalog_templates);
    sample(quota_daily_limit);
    sample(quota_used);
    sample(quota_remaining);
    sample(quiet_hours_urgent);
    sample(quiet_hours_deferred);
    sample(quiet_hours_dropped);
    sample(platform_ticket_age);
    sample(platform_authorizers);
    sample(platform_reconciliations);
    sample(platform_tokens_restored);
    sample(trace_spans_dropped);
}

/// One metric family, as the registry describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FamilyInfo {
    /// With the `wxcourier_` prefix and without the suffixes its samples add (`_total`,
    /// `_bucket`, `_sum`, `_count`).
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// Its label names, in the order the samples carry them (a histogram's `le` left out).
    pub labels: Vec<String>,
    pub help: String,
}

impl FamilyInfo {
    /// `name`, `kind`, the labels joined by `,` (empty for none) and `help`, separated by tabs.
    pub fn line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}",
            self.name,
            self.kind,
            self.labels.join(","),
            self.help
        )
    }
}

/// The families of a text exposition in which every labelled family has a sample.
fn families_in(exposition: &str) -> Vec<FamilyInfo> {
    let mut found: Vec<FamilyInfo> = Vec::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            found.push(FamilyInfo {
                name: name.to_owned(),
                kind: String::new(),
                labels: Vec::new(),
                help: help.to_owned(),
            });
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let (Some(family), Some((_, kind))) = (found.last_mut(), rest.split_once(' ')) {
                family.kind = kind.to_owned();
            }
        } else if !line.starts_with('#') {
            // A sample of the family above: `name{a="",b=""} 0`. Sampled label values are empty
            // and `le` bounds are numbers, so no value holds a comma or a brace.
            let (Some(family), Some((_, labels))) = (found.last_mut(), line.split_once('{')) else {
                continue;
            };
            let labels = labels.split_once('}').map_or(labels, |(inside, _)| inside);
            for pair in labels.split(',') {
                let Some((label, _)) = pair.split_once('=') else {
                    continue;
                };
                if label != "le" && !family.labels.iter().any(|l| l == label) {
                    family.labels.push(label.to_owned());
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_families_are_read_from_the_registry_with_their_kinds_and_labels() {
        let families = families();
        let find = |name: &str| {
            families
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("{name} in {families:?}"))
        };
        let jobs = find("wxcourier_jobs");
        assert_eq!(
            (jobs.kind.as_str(), &jobs.labels[..]),
            ("counter", &["app".to_owned(), "status".to_owned()][..])
        );
        assert_eq!(jobs.help, "Jobs finished, by final status.");
        assert_eq!(
            jobs.line(),
            "wxcourier_jobs\tcounter\tapp,status\tJobs finished, by final status."
        );
        let latency = find("wxcourier_send_latency_seconds");
        assert_eq!(
            (latency.kind.as_str(), &latency.labels[..]),
            ("histogram", &["app".to_owned()][..])
        );
        let in_flight = find("wxcourier_in_flight_jobs");
        assert_eq!(
            (in_flight.kind.as_str(), in_flight.labels.len()),
            ("gauge", 0)
        );
        let quota = find("wxcourier_wechat_quota_remaining");
        assert_eq!(quota.labels, ["app", "endpoint"]);
    }

    #[test]
    fn only_sampled_families_show_so_every_labelled_one_is_listed_with_its_labels() {
        // The registry leaves a family with no sample out of its exposition altogether: what
        // an unsampled registry shows are the unlabelled metrics, and the one family whose
        // labels are set up with it.
        let unsampled: Vec<String> = families_in(&Metrics::new().render())
            .into_iter()
            .map(|f| f.name)
            .collect();
        let families = families();
        let unlabelled: Vec<&str> = families
            .iter()
            .filter(|f| f.labels.is_empty())
            .map(|f| f.name.as_str())
            .collect();
        // Labelled, yet there from the start: the span export's two drop causes.
        let mut shown = unlabelled.clone();
        shown.push("wxcourier_trace_spans_dropped");
        assert_eq!(shown, unsampled);
        let mut names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), families.len(), "each family once");
        for f in &families {
            assert!(f.name.starts_with("wxcourier_"), "{f:?}");
            assert!(!f.kind.is_empty() && !f.help.is_empty(), "{f:?}");
        }
    }
}
