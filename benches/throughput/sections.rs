//! The sections (ratio, apps, redis, policies, otlp, latency, startup, platform-startup,
//! platform-spread): each runs its measurements, prints them as they come and adds its lines
//! to the summary.

use std::time::Duration;

use lapin::Connection;

use crate::measure::{self, Figures, Latency, Shortfall};
use crate::options::{Options, Section};
use crate::report::{Row, Target};
use crate::subjects::Subject;

const WORKER: Subject = Subject::Worker {
    redis: false,
    policies: false,
};
const REDIS_WORKER: Subject = Subject::Worker {
    redis: true,
    policies: false,
};
const POLICY_WORKER: Subject = Subject::Worker {
    redis: true,
    policies: true,
};

/// What the sections produced.
#[derive(Default)]
pub struct Outcome {
    pub rows: Vec<Row>,
    /// Runs that did not get every job's outcome; their figures are left out.
    pub shortfalls: Vec<Shortfall>,
}

/// One invocation's sections, sharing the broker connection and the results so far.
struct Bench<'a> {
    conn: &'a Connection,
    o: &'a Options,
    out: Outcome,
}

/// Runs the sections `o` asks for.
pub async fn run(conn: &Connection, o: &Options) -> Outcome {
    let mut b = Bench {
        conn,
        o,
        out: Outcome::default(),
    };
    let mut worker_max = None;
    if o.wants(Section::Ratio) {
        worker_max = b.ratio().await;
    }
    if o.wants(Section::Apps) {
        b.apps(worker_max).await;
    }
    if o.wants(Section::Redis) {
        b.redis().await;
    }
    if o.wants(Section::Policies) {
        b.policies().await;
    }
    if o.wants(Section::Otlp) {
        b.otlp().await;
    }
    if o.wants(Section::Latency) {
        // The load is a share of the worker's maximum rate, so measure it if ratio did not.
        let max = match worker_max {
            Some(max) => Some(max),
            None => b.drain("max", WORKER, 1).await.map(|f| f.jobs_per_s),
        };
        match max {
            Some(max) => b.latency(max).await,
            None => println!("\n== latency: skipped, the worker's maximum rate is unknown"),
        }
    }
    if o.wants(Section::Startup) {
        b.startup().await;
    }
    if o.wants(Section::PlatformStartup) {
        b.platform_startup().await;
    }
    if o.wants(Section::PlatformSpread) {
        b.platform_spread().await;
    }
    b.out
}

impl Bench<'_> {
    /// One drain of `o.jobs` jobs over `apps` apps, printed as `label`; a shortfall is
    /// printed, kept, and gives `None`.
    async fn drain(&mut self, label: &str, subject: Subject, apps: usize) -> Option<Figures> {
        match measure::throughput(self.conn, subject, apps, self.o.jobs).await {
            Ok(f) => {
                println!("{label}: {}", describe(subject, &f));
                Some(f)
            }
            Err(e) => {
                println!("{label}: {e}");
                self.out.shortfalls.push(e);
                None
            }
        }
    }

    /// Latency at `rate` for `o.latency_seconds`, as [`Bench::drain`] for a shortfall.
    async fn latency_of(&mut self, subject: Subject, rate: f64) -> Option<Latency> {
        match measure::latency(self.conn, subject, rate, self.o.latency_seconds).await {
            Ok(l) => Some(l),
            Err(e) => {
                println!("{e}");
                self.out.shortfalls.push(e);
                None
            }
        }
    }

    /// Worker against floor at 1 app, alternating which goes first, then the broker-only
    /// ceiling once; returns the worker's median throughput.
    async fn ratio(&mut self) -> Option<f64> {
        println!(
            "\n== ratio: 1 app, {} jobs, {} run(s)",
            self.o.jobs, self.o.runs
        );
        let mut worker = Vec::new();
        let mut floor = Vec::new();
        for run in 1..=self.o.runs {
            // Alternate the order so neither side always runs on a warmer broker.
            let order = if run % 2 == 1 {
                [WORKER, Subject::Floor]
            } else {
                [Subject::Floor, WORKER]
            };
            for subject in order {
                let f = self.drain(&format!("run {run}"), subject, 1).await;
                match subject {
                    WORKER => worker.extend(f),
                    _ => floor.extend(f),
                }
            }
        }
        let only = self.drain("once", Subject::BrokerOnly, 1).await;
        let (w, f) = (Medians::of(&worker)?, Medians::of(&floor));
        let rows = &mut self.out.rows;
        if let Some(f) = &f {
            rows.push(Row::ratio(
                "1 app: jobs/s, worker / floor".into(),
                w.jobs_per_s,
                f.jobs_per_s,
                0,
                // Issue #30's targets (#16 and #18 asked for 0.85 and 1.30).
                Some(Target::AtLeast(0.97)),
            ));
            rows.push(Row::ratio(
                "1 app: CPU µs/job, worker / floor".into(),
                w.cpu_us_per_job,
                f.cpu_us_per_job,
                1,
                Some(Target::AtMost(1.10)),
            ));
            if let Some(b) = only {
                rows.push(Row::ratio(
                    "1 app: jobs/s, floor / broker-only".into(),
                    f.jobs_per_s,
                    b.jobs_per_s,
                    0,
                    None,
                ));
            }
        }
        rows.push(Row::value(
            "1 app: worker peak RSS, MiB".into(),
            format!("{:.1}", w.peak_rss_mib),
            None,
        ));
        Some(w.jobs_per_s)
    }

    /// Worker, floor and broker-only with the jobs spread over N apps, for each N asked for.
    async fn apps(&mut self, one_app: Option<f64>) {
        for n in self.o.apps.clone() {
            // Hundreds of quorum queues created and deleted strain the broker: run those once.
            let runs = if n >= 100 { 1 } else { self.o.runs };
            println!("\n== apps: {n} apps, {} jobs, {runs} run(s)", self.o.jobs);
            let subjects = [WORKER, Subject::Floor, Subject::BrokerOnly];
            let mut figures: [Vec<Figures>; 3] = Default::default();
            for run in 0..runs {
                // Rotate the order from run to run, as the ratio section alternates.
                for k in 0..subjects.len() {
                    let i = (k + run) % subjects.len();
                    let label = format!("run {}", run + 1);
                    figures[i].extend(self.drain(&label, subjects[i], n).await);
                }
            }
            let [w, f, b] = [0, 1, 2].map(|i| Medians::of(&figures[i]));
            let rows = &mut self.out.rows;
            if let (Some(w), Some(one)) = (&w, one_app) {
                println!(
                    "worker with {n} apps: {:.3} of its 1-app median",
                    w.jobs_per_s / one
                );
            }
            if let (Some(w), Some(f)) = (&w, &f) {
                rows.push(Row::ratio(
                    format!("{n} apps: jobs/s, worker / floor"),
                    w.jobs_per_s,
                    f.jobs_per_s,
                    0,
                    Some(Target::AtLeast(0.97)),
                ));
                rows.push(Row::ratio(
                    format!("{n} apps: CPU µs/job, worker / floor"),
                    w.cpu_us_per_job,
                    f.cpu_us_per_job,
                    1,
                    None,
                ));
            }
            if let (Some(f), Some(b)) = (&f, &b) {
                rows.push(Row::ratio(
                    format!("{n} apps: jobs/s, floor / broker-only"),
                    f.jobs_per_s,
                    b.jobs_per_s,
                    0,
                    None,
                ));
            }
            if let Some(w) = &w {
                rows.push(Row::value(
                    format!("{n} apps: worker peak RSS, MiB"),
                    format!("{:.1}", w.peak_rss_mib),
                    None,
                ));
            }
        }
    }

    /// The worker with Redis state against the worker with memory state, alternating.
    async fn redis(&mut self) {
        println!(
            "\n== redis: 1 app, {} jobs, {} run(s)",
            self.o.jobs, self.o.runs
        );
        let mut memory = Vec::new();
        let mut redis = Vec::new();
        for run in 1..=self.o.runs {
            let order = if run % 2 == 1 {
                [WORKER, REDIS_WORKER]
            } else {
                [REDIS_WORKER, WORKER]
            };
            for subject in order {
                let f = self.drain(&format!("run {run}"), subject, 1).await;
                match subject {
                    WORKER => memory.extend(f),
                    _ => redis.extend(f),
                }
            }
        }
        let (Some(m), Some(r)) = (Medians::of(&memory), Medians::of(&redis)) else {
            return;
        };
        self.out.rows.push(Row::ratio(
            "Redis state: jobs/s, Redis / memory".into(),
            r.jobs_per_s,
            m.jobs_per_s,
            0,
            Some(Target::AtLeast(0.95)),
        ));
        // Lower is better for CPU: memory's over Redis's, so the target is a floor of 0.85.
        self.out.rows.push(Row::inverse_ratio(
            "Redis state: CPU µs/job, memory / Redis".into(),
            r.cpu_us_per_job,
            m.cpu_us_per_job,
            1,
            Some(Target::AtLeast(0.85)),
        ));
    }

    /// The worker with every delivery policy on against the worker without, both with Redis
    /// state (where the policies keep what they share), alternating.
    async fn policies(&mut self) {
        println!(
            "\n== policies: 1 app, {} jobs, {} run(s), Redis state",
            self.o.jobs, self.o.runs
        );
        let mut without = Vec::new();
        let mut with = Vec::new();
        for run in 1..=self.o.runs {
            let order = if run % 2 == 1 {
                [REDIS_WORKER, POLICY_WORKER]
            } else {
                [POLICY_WORKER, REDIS_WORKER]
            };
            for subject in order {
                let f = self.drain(&format!("run {run}"), subject, 1).await;
                match subject {
                    REDIS_WORKER => without.extend(f),
                    _ => with.extend(f),
                }
            }
        }
        let (Some(off), Some(on)) = (Medians::of(&without), Medians::of(&with)) else {
            return;
        };
        self.out.rows.push(Row::ratio(
            "every policy on: jobs/s, on / off".into(),
            on.jobs_per_s,
            off.jobs_per_s,
            0,
            Some(Target::AtLeast(0.9)),
        ));
        self.out.rows.push(Row::inverse_ratio(
            "every policy on: CPU µs/job, off / on".into(),
            on.cpu_us_per_job,
            off.cpu_us_per_job,
            1,
            None,
        ));
    }

    /// The worker exporting every job's spans to a collector that never answers against the
    /// worker without export, alternating: the export must cost sending nothing but its own
    /// CPU.
    async fn otlp(&mut self) {
        println!(
            "\n== otlp: 1 app, {} jobs, {} run(s), spans to a collector that never answers",
            self.o.jobs, self.o.runs
        );
        let mut without = Vec::new();
        let mut with = Vec::new();
        for run in 1..=self.o.runs {
            let order = if run % 2 == 1 {
                [WORKER, Subject::TracedWorker]
            } else {
                [Subject::TracedWorker, WORKER]
            };
            for subject in order {
                let f = self.drain(&format!("run {run}"), subject, 1).await;
                match subject {
                    WORKER => without.extend(f),
                    _ => with.extend(f),
                }
            }
        }
        let (Some(off), Some(on)) = (Medians::of(&without), Medians::of(&with)) else {
            return;
        };
        self.out.rows.push(Row::ratio(
            "OTLP to a dead collector: jobs/s, on / off".into(),
            on.jobs_per_s,
            off.jobs_per_s,
            0,
            Some(Target::AtLeast(0.95)),
        ));
        self.out.rows.push(Row::inverse_ratio(
            "OTLP to a dead collector: CPU µs/job, off / on".into(),
            on.cpu_us_per_job,
            off.cpu_us_per_job,
            1,
            None,
        ));
    }

    /// p50 and p99 at 50% and 90% of the worker's maximum rate, worker and floor in turn.
    async fn latency(&mut self, max: f64) {
        println!(
            "\n== latency: {:.1} s of load each, max rate {max:.0} jobs/s",
            self.o.latency_seconds
        );
        for share in [0.5, 0.9] {
            let rate = max * share;
            let pct = share * 100.0;
            let w = self.latency_of(WORKER, rate).await;
            let f = self.latency_of(Subject::Floor, rate).await;
            let (Some(w), Some(f)) = (w, f) else {
                continue;
            };
            println!(
                "{pct:.0}% of max ({rate:.0} jobs/s): worker {} | floor {} | p99 ratio {:.3}",
                show(w),
                show(f),
                w.p99 / f.p99
            );
            // At 90% both sides queue up: the figure is for reading, not a target.
            let target = (share == 0.5).then_some(Target::AtMost(1.2));
            self.out.rows.push(Row::ratio(
                format!("latency {pct:.0}% load: p99 ms, worker / floor"),
                w.p99,
                f.p99,
                1,
                target,
            ));
            self.out.rows.push(Row::ratio(
                format!("latency {pct:.0}% load: p50 ms, worker / floor"),
                w.p50,
                f.p50,
                1,
                None,
            ));
        }
    }

    /// Spawn → `/readyz` 200 for each number of apps asked for, and the RSS then.
    async fn startup(&mut self) {
        println!("\n== startup");
        for n in self.o.startup_apps.clone() {
            // Generous: the figure is the time; the limit only keeps a stuck worker from
            // hanging the run.
            let limit = Duration::from_secs(60) + Duration::from_millis(100) * n as u32;
            let [first, restart] = measure::startup(self.conn, n, limit).await;
            for (when, s) in [("first start", first), ("restart", restart)] {
                match s.seconds {
                    Some(secs) => println!(
                        "{n} apps, {when}: ready in {secs:.2} s ({:.2} ms per app), RSS {:.1} MiB",
                        secs * 1000.0 / n as f64,
                        s.rss_mib
                    ),
                    None => println!(
                        "{n} apps, {when}: not ready within {limit:?}, RSS {:.1} MiB",
                        s.rss_mib
                    ),
                }
                // Issue #18's target is 5 s for 2,000 apps restarting (their queues exist);
                // a first start also creates the queues, and larger counts are recorded, not
                // judged.
                let check = (n <= 2000 && when == "restart").then(|| {
                    (
                        Target::AtMost(5.0),
                        s.seconds.unwrap_or(f64::INFINITY),
                        " s",
                    )
                });
                let value = s
                    .seconds
                    .map_or("not ready".into(), |x| format!("{x:.2} s"));
                self.out.rows.push(Row::value(
                    format!("startup {n} apps, {when}: spawn to ready"),
                    value,
                    check,
                ));
                self.out.rows.push(Row::value(
                    format!("startup {n} apps, {when}: RSS when ready, MiB"),
                    format!("{:.1}", s.rss_mib),
                    None,
                ));
            }
        }
    }
}

impl Bench<'_> {
    /// Spawn → `/readyz` 200 and → every authorizer routed, for each number of authorizers
    /// asked for, with the RSS at each.
    async fn platform_startup(&mut self) {
        println!("\n== platform startup");
        let mut unrouted = Vec::new();
        for n in self.o.platform_authorizers.clone() {
            let limit = Duration::from_secs(60) + Duration::from_millis(20) * n as u32;
            let starts = crate::platform_startup::measure(self.conn, n, limit).await;
            let restarts = [
                ("first start", starts[0]),
                ("restart", starts[1]),
                ("restart, no management API", starts[2]),
            ];
            for (when, s) in restarts {
                let secs = |x: Option<f64>| {
                    x.map_or("not within the limit".into(), |x| format!("{x:.2} s"))
                };
                println!(
                    "{n} authorizers, {when}: ready in {}, all routed in {}, RSS {:.1} MiB ready, {:.1} MiB routed, CPU {:.2} s until 10 s after ready",
                    secs(s.ready),
                    secs(s.routed),
                    s.rss_ready_mib,
                    s.rss_routed_mib,
                    s.cpu_settled_s
                );
                // Issue #26's targets: a restart with 10,000 authorizers ready in under 5 s,
                // under 100 MiB; a first start also binds them all, and is recorded.
                let judged = when == "restart";
                self.out.rows.push(Row::value(
                    format!("platform {n} authorizers, {when}: spawn to ready"),
                    secs(s.ready),
                    judged.then(|| (Target::AtMost(5.0), s.ready.unwrap_or(f64::INFINITY), " s")),
                ));
                self.out.rows.push(Row::value(
                    format!("platform {n} authorizers, {when}: spawn to all routed"),
                    secs(s.routed),
                    None,
                ));
                self.out.rows.push(Row::value(
                    format!("platform {n} authorizers, {when}: worker CPU until 10 s after ready"),
                    format!("{:.2} s", s.cpu_settled_s),
                    None,
                ));
                self.out.rows.push(Row::value(
                    format!("platform {n} authorizers, {when}: RSS when routed, MiB"),
                    format!("{:.1}", s.rss_routed_mib),
                    judged.then_some((Target::AtMost(100.0), s.rss_routed_mib, " MiB")),
                ));
                if s.routed.is_none() {
                    unrouted.push(format!("{n} authorizers, {when}"));
                }
            }
        }
        // Like a run that lost outcomes, a platform whose authorizers are not all routed
        // fails the benchmark (and CI's smoke run).
        assert!(
            unrouted.is_empty(),
            "not every authorizer was routed within the limit: {unrouted:?}"
        );
    }
}

impl Bench<'_> {
    /// A platform's worker (Redis state, as a platform needs) draining jobs spread over its
    /// authorizers against the floor draining as many from one queue, and against the worker
    /// with one app on Redis state, in turn. A platform's jobs share one queue whatever their
    /// authorizer, so the floor's one queue is the same shape; what the spread adds is each
    /// authorizer's own token, rate bucket and pipeline state, built the first time its job
    /// comes, which the one-app worker shows apart from the cost of Redis state.
    async fn platform_spread(&mut self) {
        let n = self.o.spread_authorizers;
        println!(
            "\n== platform spread: {n} authorizers, {} jobs, {} run(s)",
            self.o.jobs, self.o.runs
        );
        let platform = crate::platform_spread::SpreadPlatform::authorize(n).await;
        let (mut floor, mut one_app, mut spread) = (Vec::new(), Vec::new(), Vec::new());
        for run in 1..=self.o.runs {
            // Each subject first in one run of three.
            for turn in 0..3 {
                match (run + turn) % 3 {
                    0 => match platform.drain(self.conn, self.o.jobs).await {
                        Ok(f) => {
                            println!("run {run}: {}", describe(Subject::Platform, &f));
                            spread.push(f);
                        }
                        Err(e) => {
                            println!("run {run}: {e}");
                            self.out.shortfalls.push(e);
                        }
                    },
                    1 => floor.extend(self.drain(&format!("run {run}"), Subject::Floor, 1).await),
                    _ => one_app.extend(self.drain(&format!("run {run}"), REDIS_WORKER, 1).await),
                }
            }
        }
        platform.remove(self.conn).await;
        let (Some(floor), Some(spread)) = (Medians::of(&floor), Medians::of(&spread)) else {
            return;
        };
        if let Some(one_app) = Medians::of(&one_app) {
            self.out.rows.push(Row::ratio(
                format!("platform, jobs over {n} authorizers: jobs/s, against one app (Redis)"),
                spread.jobs_per_s,
                one_app.jobs_per_s,
                0,
                None,
            ));
        }
        self.out.rows.push(Row::ratio(
            format!("platform, jobs over {n} authorizers: jobs/s, against the floor"),
            spread.jobs_per_s,
            floor.jobs_per_s,
            0,
            None,
        ));
        self.out.rows.push(Row::inverse_ratio(
            format!("platform, jobs over {n} authorizers: CPU µs/job, floor / worker"),
            spread.cpu_us_per_job,
            floor.cpu_us_per_job,
            1,
            None,
        ));
        self.out.rows.push(Row::value(
            format!("platform, jobs over {n} authorizers: worker peak RSS, MiB"),
            format!("{:.1}", spread.peak_rss_mib),
            None,
        ));
    }
}

/// One drain's figures on a line.
fn describe(subject: Subject, f: &Figures) -> String {
    format!(
        "{:<14} {:>7.0} jobs/s, {:>6.1} µs CPU/job, {:>5.1} MiB peak, broker {} µs CPU/job",
        subject.label(),
        f.jobs_per_s,
        f.cpu_us_per_job,
        f.peak_rss_mib,
        f.broker_cpu_us_per_job
            .map_or("n/a".into(), |b| format!("{b:.1}"))
    )
}

fn show(l: Latency) -> String {
    format!("p50 {:.1} ms, p99 {:.1} ms", l.p50, l.p99)
}

/// The median of each figure over a section's runs.
struct Medians {
    jobs_per_s: f64,
    cpu_us_per_job: f64,
    peak_rss_mib: f64,
}

impl Medians {
    /// `None` when no run of the subject completed.
    fn of(runs: &[Figures]) -> Option<Self> {
        if runs.is_empty() {
            return None;
        }
        let median = |pick: fn(&Figures) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(pick).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        Some(Self {
            jobs_per_s: median(|f| f.jobs_per_s),
            cpu_us_per_job: median(|f| f.cpu_us_per_job),
            peak_rss_mib: median(|f| f.peak_rss_mib),
        })
    }
}
