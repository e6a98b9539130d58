//! The benchmark's command line: `cargo bench --bench throughput -- [OPTIONS]`.

use clap::{Parser, ValueEnum};

/// One part of the benchmark; without `--only`, all of them run in this order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Section {
    /// Worker against the floor at 1 app (and the broker-only ceiling).
    Ratio,
    /// Worker, floor and broker-only with N apps.
    Apps,
    /// Worker with Redis state against worker with memory state.
    Redis,
    /// Worker with every delivery policy on (none of them holding a job back) against the
    /// worker without, both with Redis state.
    Policies,
    /// Worker exporting its spans over OTLP to a collector that never answers against the
    /// worker without export.
    Otlp,
    /// p50/p99 at 50% and 90% of the worker's maximum rate, worker against floor.
    Latency,
    /// Time from spawning `wxcourier run` with N apps until `/readyz` answers 200.
    Startup,
    /// Time from spawning `wxcourier run` serving one platform with N authorizers until
    /// `/readyz` answers 200 and every authorizer is routed.
    PlatformStartup,
    /// A platform's worker draining jobs spread over N authorizers on its one queue, against
    /// the floor draining as many from one queue.
    PlatformSpread,
}

/// What answers as WeChat.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Wechat {
    /// `wxcourier sim`, in its own process.
    Sim,
    /// A fixed answer by path, on a thread of the benchmark (`minimal.rs`).
    Minimal,
}

#[derive(Parser, Debug)]
#[command(
    name = "throughput",
    about = "wxcourier's throughput, latency and start-up benchmark against the local RabbitMQ",
    long_about = "wxcourier's throughput, latency and start-up benchmark against the local \
        RabbitMQ. Under `cargo bench` it runs in full; without --bench (as `cargo test` runs \
        it) it runs a short smoke run with small defaults."
)]
struct Args {
    /// Jobs per throughput run [default: 20000; smoke: 300]
    #[arg(long)]
    jobs: Option<usize>,
    /// Runs of each throughput comparison; medians are compared [default: 3; smoke: 1]
    #[arg(long)]
    runs: Option<usize>,
    /// Run these sections only, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Run the soak instead: --jobs jobs through one worker with 5% injected faults.
    #[arg(long)]
    soak: bool,
    /// Seconds of load for each latency measurement [default: 15; smoke: 0.5]. Long enough
    /// that a p99 is not one broker stall: 1% of 5 s at 3,000 jobs/s is only 150 jobs
    #[arg(long)]
    latency_seconds: Option<f64>,
    /// App counts for the apps section, comma-separated [default: 10,100; smoke: 3]
    #[arg(long, value_delimiter = ',')]
    apps: Vec<usize>,
    /// App counts for the startup section, comma-separated [default: 2000; smoke: 50]
    #[arg(long, value_delimiter = ',')]
    startup_apps: Vec<usize>,
    /// Authorizer counts for the platform-startup section [default: 10000; smoke: 100]
    #[arg(long, value_delimiter = ',')]
    platform_authorizers: Vec<usize>,
    /// Authorizers the platform-spread section's jobs are spread over [default: 1000; smoke:
    /// 20]
    #[arg(long)]
    spread_authorizers: Option<usize>,
    /// Record a CPU profile of every subject with `perf record` into this directory
    /// (`scripts/profile.sh` turns them into flamegraphs). Sampling costs the subject CPU:
    /// read a profiled run's shares, not its figures.
    #[arg(long, value_name = "DIR")]
    perf: Option<std::path::PathBuf>,
    /// What answers as WeChat in the throughput, latency and startup runs: the simulator, or
    /// a minimal endpoint with fixed answers (the soak and platform-startup sections always
    /// use the simulator)
    #[arg(long, value_enum, default_value = "sim")]
    wechat: Wechat,
    #[command(flatten)]
    harness: HarnessArgs,
}

/// What cargo and test runners pass to every test or bench target; accepted and, but for
/// `--bench`, `--list` and `--ignored`, ignored, so `cargo test` with its usual arguments still
/// runs the smoke run.
#[derive(clap::Args, Debug)]
struct HarnessArgs {
    /// `cargo bench` passes it: run in full.
    #[arg(long, hide = true)]
    bench: bool,
    /// Asked for the list of tests: there are none to list.
    #[arg(long, hide = true)]
    list: bool,
    /// Asked for ignored tests only: the smoke run is not one.
    #[arg(long, hide = true)]
    ignored: bool,
    #[arg(long, hide = true)]
    include_ignored: bool,
    #[arg(long, hide = true)]
    nocapture: bool,
    #[arg(long, hide = true)]
    show_output: bool,
    #[arg(long, hide = true)]
    exact: bool,
    #[arg(short, long, hide = true)]
    quiet: bool,
    #[arg(long, hide = true)]
    test_threads: Option<String>,
    #[arg(long, hide = true)]
    color: Option<String>,
    #[arg(long, hide = true)]
    format: Option<String>,
    #[arg(long, hide = true)]
    skip: Vec<String>,
    /// A test-name filter (`cargo test NAME` passes it to every target).
    #[arg(hide = true)]
    filter: Vec<String>,
}

/// What to run, with the defaults of a full or a smoke run filled in.
#[derive(Debug)]
pub struct Options {
    /// A short run that only checks the benchmark still works (no `--bench`).
    pub smoke: bool,
    pub jobs: usize,
    pub runs: usize,
    /// The sections asked for; all when empty.
    pub only: Vec<Section>,
    pub soak: bool,
    pub latency_seconds: f64,
    pub apps: Vec<usize>,
    pub startup_apps: Vec<usize>,
    pub platform_authorizers: Vec<usize>,
    pub spread_authorizers: usize,
    /// Where every subject's `perf record` profile goes, if anywhere.
    pub perf: Option<std::path::PathBuf>,
    pub wechat: Wechat,
}

impl Options {
    /// Parses the command line; `None` when there is nothing to run (`--list`, `--ignored`).
    pub fn parse() -> Option<Self> {
        let args = Args::parse();
        if args.harness.list || args.harness.ignored {
            return None;
        }
        let smoke = !args.harness.bench;
        let pick = |full: usize, small: usize| if smoke { small } else { full };
        let counts = |given: Vec<usize>, full: Vec<usize>, small: Vec<usize>| {
            if !given.is_empty() {
                given
            } else if smoke {
                small
            } else {
                full
            }
        };
        Some(Self {
            smoke,
            jobs: args.jobs.unwrap_or(pick(20_000, 300)).max(2),
            runs: args.runs.unwrap_or(pick(3, 1)).max(1),
            only: args.only,
            soak: args.soak,
            latency_seconds: args
                .latency_seconds
                .unwrap_or(if smoke { 0.5 } else { 15.0 }),
            apps: counts(args.apps, vec![10, 100], vec![3]),
            startup_apps: counts(args.startup_apps, vec![2000], vec![50]),
            platform_authorizers: counts(args.platform_authorizers, vec![10_000], vec![100]),
            spread_authorizers: args.spread_authorizers.unwrap_or(pick(1000, 20)).max(1),
            perf: args.perf,
            wechat: args.wechat,
        })
    }

    /// Whether `section` runs in this invocation.
    pub fn wants(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }
}
