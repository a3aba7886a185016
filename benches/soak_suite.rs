//! The soak: a real `krake-server` under a steady mixed load for a given
//! time (`scripts/soak [DURATION]`, default 30 minutes; `scripts/test` runs
//! it for 2 minutes).
//!
//! What runs:
//!
//! - **The server**: the `krake-server` binary named by `--server PATH` (or
//!   [`SERVER_VARIABLE`]), in a child process, on the embedded store in a
//!   temporary folder, with all its in-process controllers: scheduler,
//!   garbage collector, Kubernetes application and cluster controllers.
//! - **The clusters**: [`CLUSTERS`] fake Kubernetes API servers
//!   (`krake_testkit::kube::FakeCluster`, in this process), registered as
//!   Krake Clusters from their kubeconfigs.
//! - **The load**, over HTTP as any client: about [`DEFAULT_RATE`] requests
//!   per second ([`RATE_VARIABLE`] sets another rate), mixed: application
//!   creates (a Deployment and a NodePort Service each, so the controllers
//!   deploy them on a fake), updates (a GET, then a PUT with the
//!   `resource_version` read and a new label and replica count, so the
//!   controllers apply again), deletes (the controllers remove the objects
//!   from the fake, the garbage collector the finalizer), GETs and lists;
//!   the applications alive wander around [`POPULATION`]. At most
//!   [`IN_FLIGHT`] requests at once: a slow server lowers the rate rather
//!   than piling requests up.
//! - **Watches**: [`PERSISTENT_WATCHERS`] streams on the applications that
//!   stay open, and [`RECONNECTING_WATCHERS`] that hang up every 5 to 20 s
//!   and come back, mostly resuming after the last revision they saw
//!   (`resource_version=N`), sometimes afresh. At the end every stretch of
//!   every watcher is checked against the events all watchers saw: a resumed
//!   watch must not miss an event nor get one twice.
//!
//! Every interval (10 s; 5 s for runs of 5 minutes or less) one line:
//! elapsed time, requests by kind, errors (the first distinct messages of the
//! run are kept), p50/p99 latency of the interval's requests, watch events
//! received, the server's RSS and CPU, the store's size on disk, the
//! applications in the API (RUNNING, being deleted) and the Deployments on
//! the fake clusters (stray: those of applications the API no longer has).
//!
//! After the load stops, the soak waits (at most [`CONVERGE_WITHIN`]) until
//! the controllers caught up: every application the load created and did not
//! delete is in the API, RUNNING, with its Deployment and Service on a fake;
//! nothing deleted is left in the API or on a fake. Then a summary: requests
//! and latency by kind over the whole run, errors, the RSS trend (after a
//! warm-up of a minute, a quarter of shorter runs: the average of the first
//! third of the samples against the last third), CPU, store size.
//!
//! It fails (exit status 1) when a request failed unexpectedly (5xx, a
//! connection error, a timeout, a 4xx other than the races a mixed load
//! brings: 404 of an update, GET or delete of an application deleted
//! meanwhile, 409 of an update or delete, 410 of a resumed watch whose
//! revision is compacted), when a watch missed an event or
//! got one twice, when the server's RSS in the last third exceeds the first
//! third by more than half plus [`RSS_SLACK_MIB`] MiB, when the controllers
//! do not converge, or when the server exits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use krake_testkit::kube::FakeCluster;
use krake_testkit::process::{ChildProcess, ProcessError, Program, with_free_ports};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Mode;
use crate::process_stats::{self, ProcessSample, mib, quantile};

/// The `krake-server` binary to soak (or `--server PATH`).
pub const SERVER_VARIABLE: &str = "KRAKE_SOAK_SERVER";
/// Requests per second of the load (default [`DEFAULT_RATE`]).
pub const RATE_VARIABLE: &str = "KRAKE_SOAK_RATE";
/// Requests per second by default: modest, for a two-core machine that
/// also runs the server, its controllers and the fake clusters.
pub const DEFAULT_RATE: f64 = 10.0;
/// How long a soak runs without a duration argument.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30 * 60);
/// Fake Kubernetes clusters.
pub const CLUSTERS: usize = 2;
/// Applications alive the load wanders around (between half and one and a
/// half times this).
pub const POPULATION: usize = 40;
/// Requests in flight at most.
pub const IN_FLIGHT: usize = 16;
/// Watch streams that stay open.
pub const PERSISTENT_WATCHERS: usize = 3;
/// Watch streams that hang up and come back.
pub const RECONNECTING_WATCHERS: usize = 3;
/// How long the controllers may take to catch up after the load stops.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(90);
/// RSS growth allowed beyond half of the first third's average.
pub const RSS_SLACK_MIB: u64 = 16;

/// The namespace of the soak's Krake objects.
const NS: &str = "soak";
/// Where the applications' objects land on the clusters.
const CLUSTER_NS: &str = "default";
/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the server may take to start and the clusters to come online.
const START_WITHIN: Duration = Duration::from_secs(60);
/// Distinct error messages kept for the report.
const KEPT_ERRORS: usize = 5;

const KRAKE_SERVER: Program = Program {
    name: "krake-server",
    variable: SERVER_VARIABLE,
    package: "(built by scripts/soak)",
};

/// What one soak run does.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long the load runs.
    pub duration: Duration,
    /// Time between two report lines.
    pub interval: Duration,
    /// Requests per second.
    pub rate: f64,
    /// The `krake-server` binary.
    pub server: PathBuf,
}

impl Settings {
    /// The settings from the command line (`[--server PATH] [DURATION]`;
    /// other `--flags`, such as cargo's `--bench`, are ignored) and the
    /// environment. `Ok(None)` when no server binary is named: the soak does
    /// not guess one, since a stale binary would be soaked.
    pub fn from_args(args: &[String]) -> Result<Option<Settings>, String> {
        let mut server = std::env::var_os(SERVER_VARIABLE).map(PathBuf::from);
        let mut duration = DEFAULT_DURATION;
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            if arg == "--server" {
                let path = args.get(i + 1).ok_or("--server needs a path")?;
                server = Some(PathBuf::from(path));
                i += 1;
            } else if let Some(path) = arg.strip_prefix("--server=") {
                server = Some(PathBuf::from(path));
            } else if !arg.starts_with('-') {
                duration = parse_duration(arg)?;
            }
            i += 1;
        }
        let rate = match std::env::var(RATE_VARIABLE) {
            Ok(text) => text
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(|| format!("{RATE_VARIABLE}={text:?} is not a positive number"))?,
            Err(_) => DEFAULT_RATE,
        };
        Ok(server.map(|server| Settings {
            duration,
            interval: interval_for(duration),
            rate,
            server,
        }))
    }
}

/// The report interval: 10 s, or 5 s for runs of 5 minutes or less.
pub fn interval_for(duration: Duration) -> Duration {
    if duration <= Duration::from_secs(300) {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(10)
    }
}

/// Parses `90s`, `2m`, `1h30m`, `45` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration (such as 90s, 2m, 1h30m or 45)");
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(invalid()),
        };
        let value: u64 = number.parse().map_err(|_| invalid())?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
        number.clear();
    }
    if !number.is_empty() {
        let value: u64 = number.parse().map_err(|_| invalid())?;
        total = total.checked_add(value).ok_or_else(invalid)?;
    }
    if total == 0 {
        return Err(invalid());
    }
    Ok(Duration::from_secs(total))
}

/// The soak binary's `main`: nothing when a test runner lists tests, a hint
/// when no server is named, else the soak.
pub fn main() -> ExitCode {
    if Mode::from_args() == Mode::List {
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match Settings::from_args(&args) {
        Ok(Some(settings)) => run(settings),
        Ok(None) => {
            println!(
                "soak: no krake-server named (--server PATH or {SERVER_VARIABLE}); \
                 run scripts/soak [DURATION]"
            );
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("soak: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs the soak and prints its report; the exit status says whether it
/// passed.
pub fn run(settings: Settings) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("soak: no tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(soak(settings)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("soak: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

// --- the run ---

/// The soak; `Ok(passed)` once it ran to the end, `Err` when it could not
/// (the server did not start or died).
async fn soak(settings: Settings) -> Result<bool, String> {
    let started = Instant::now();
    let dir = ScratchDir::new()?;
    println!(
        "soak: {} of mixed load at {} requests/s on {} ({} fake clusters, {} + {} watchers, \
         about {POPULATION} applications); a line every {} s; folder {}",
        human(settings.duration),
        settings.rate,
        settings.server.display(),
        CLUSTERS,
        PERSISTENT_WATCHERS,
        RECONNECTING_WATCHERS,
        settings.interval.as_secs(),
        dir.path.display(),
    );
    let fakes: Vec<FakeCluster> =
        futures::future::join_all((0..CLUSTERS).map(|_| FakeCluster::start()))
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("a fake cluster did not start: {e}"))?;
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let streaming = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("no HTTP client: {e}"))?;
    let mut server = Server::start(&settings.server, &dir.path, &http).await?;
    let base = server.url.clone();
    println!(
        "soak: server ready after {:.1} s (pid {})",
        started.elapsed().as_secs_f64(),
        server.process.pid().unwrap_or_default()
    );
    register_clusters(&http, &base, &fakes, &mut server).await?;

    let shared = Arc::new(Shared::default());
    let stop = CancellationToken::new();
    let mut watchers = Vec::new();
    for index in 0..PERSISTENT_WATCHERS + RECONNECTING_WATCHERS {
        watchers.push(tokio::spawn(watch(
            streaming.clone(),
            base.clone(),
            index >= PERSISTENT_WATCHERS,
            seed(index as u64 + 1),
            shared.clone(),
            stop.clone(),
        )));
    }
    let load = tokio::spawn(generate_load(
        http.clone(),
        base.clone(),
        settings.rate,
        shared.clone(),
        stop.clone(),
    ));

    // The report lines, until the time is up.
    let first = server.sample().ok_or("cannot read the server's /proc")?;
    let mut samples = vec![(Instant::now(), first)];
    let mut rss = Vec::new();
    let load_started = Instant::now();
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.interval,
        settings.interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failure = None;
    let store_at_start = dir_size(&dir.path.join("data"));
    while load_started.elapsed() < settings.duration {
        ticker.tick().await;
        if !server.process.is_running() {
            failure = Some(format!(
                "krake-server exited during the soak; the end of its log:\n{}",
                server.process.log_tail()
            ));
            break;
        }
        let Some(sample) = server.sample() else {
            continue;
        };
        let previous = samples.last().copied().unwrap_or((Instant::now(), sample));
        samples.push((Instant::now(), sample));
        rss.push(sample.rss);
        let tally = shared.take_interval();
        let view = ApiView::read(&http, &base).await;
        let on_fakes = deployments_on(&fakes);
        // Deployments of applications the API no longer has: the
        // controllers' deletion lags or missed them.
        let stray = match view.error {
            None => on_fakes
                .iter()
                .filter(|name| !view.apps.contains_key(*name))
                .count(),
            Some(_) => 0,
        };
        println!(
            "{}",
            interval_line(
                load_started.elapsed(),
                &tally,
                &Usage::between(previous, (Instant::now(), sample)),
                dir_size(&dir.path.join("data")),
                &view,
                (on_fakes.len(), stray),
            )
        );
    }
    stop.cancel();
    let _ = load.await;
    let mut logs = Vec::new();
    for watcher in watchers {
        if let Ok(log) = watcher.await {
            logs.push(log);
        }
    }
    let ran = load_started.elapsed();
    if let Some(failure) = failure {
        dir.keep();
        return Err(failure);
    }

    // The controllers catch up.
    let expected = shared.population().alive.clone();
    let deleted = shared.population().deleted.clone();
    let converge_started = Instant::now();
    let convergence = converge(&http, &base, &fakes, &expected, &deleted).await;
    let converged_after = converge_started.elapsed();
    let store_at_end = dir_size(&dir.path.join("data"));

    let passed = Summary {
        ran,
        overall: started.elapsed(),
        interval: settings.interval,
        total: shared.total(),
        gaps: watch_gaps(&logs),
        rss,
        usage: Usage::between_samples(samples.first().copied(), samples.last().copied()),
        store: (store_at_start, store_at_end),
        convergence: convergence.map(|()| converged_after),
        alive: expected.len(),
        deleted: deleted.len(),
    }
    .print(&shared.population());
    if passed {
        println!("soak: PASSED");
    } else {
        println!(
            "soak: FAILED; the end of krake-server's log:\n{}",
            server.process.log_tail()
        );
        dir.keep();
    }
    Ok(passed)
}

/// What a run measured, for its summary.
#[derive(Debug)]
struct Summary {
    /// How long the load ran.
    ran: Duration,
    /// The whole run, start-up and final check included.
    overall: Duration,
    interval: Duration,
    total: Tally,
    gaps: Gaps,
    /// The server's RSS at every interval.
    rss: Vec<u64>,
    /// The server's CPU share and CPU time over the load.
    usage: Option<(Usage, Duration)>,
    /// The store's size at the start and the end.
    store: (u64, u64),
    /// How long the controllers took to catch up, or what they did not do.
    convergence: Result<Duration, Difference>,
    alive: usize,
    deleted: usize,
}

impl Summary {
    /// Prints the summary; true when the run passed.
    fn print(self, population: &Population) -> bool {
        let Summary {
            ran,
            overall,
            interval,
            total,
            gaps,
            rss,
            usage,
            store: (store_at_start, store_at_end),
            convergence,
            alive,
            deleted,
        } = self;
        println!(
            "soak summary: {} of load ({} in all with start-up and the final check)",
            human(ran),
            human(overall)
        );
        for op in Op::ALL {
            let mut latencies = total.latencies.get(&op).cloned().unwrap_or_default();
            let count = total.requests.get(&op).copied().unwrap_or(0);
            println!(
                "  {:<7} {count:>7} requests, {:>6.2}/s; latency p50 {}, p99 {}, max {}",
                op.name(),
                count as f64 / ran.as_secs_f64().max(1e-9),
                millis(quantile(&mut latencies, 0.5)),
                millis(quantile(&mut latencies, 0.99)),
                millis(quantile(&mut latencies, 1.0)),
            );
        }
        let mut all: Vec<Duration> = total.latencies.values().flatten().copied().collect();
        println!(
            "  all     {:>7} requests; latency p50 {}, p99 {}, max {}; {} watch events received, \
             {} watch reconnects ({} resumed, {} afresh, {} after 410)",
            all.len(),
            millis(quantile(&mut all, 0.5)),
            millis(quantile(&mut all, 0.99)),
            millis(quantile(&mut all, 1.0)),
            total.events,
            total.reconnects.resumed + total.reconnects.fresh + total.reconnects.gone,
            total.reconnects.resumed,
            total.reconnects.fresh,
            total.reconnects.gone,
        );
        let expected_errors: u64 = total.expected.values().sum();
        println!(
            "  errors: {} unexpected{}; {} expected races ({})",
            total.unexpected,
            if total.messages.is_empty() {
                String::new()
            } else {
                format!(", first: {}", total.messages.join(" | "))
            },
            expected_errors,
            if total.expected.is_empty() {
                "none".to_owned()
            } else {
                total
                    .expected
                    .iter()
                    .map(|(what, n)| format!("{what} x{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        println!(
            "  watches: {} stretches checked against {} distinct events: {} missed, {} duplicated",
            gaps.stretches, gaps.events, gaps.missed, gaps.duplicated
        );
        // The first minute (a quarter of shorter runs) is warm-up: caches fill.
        let warm_up = interval.as_secs_f64().max(1.0);
        let skipped = ((ran.as_secs_f64().min(240.0) / 4.0) / warm_up) as usize;
        let trend = RssTrend::of(rss.get(skipped..).unwrap_or(&[]));
        println!(
            "  server RSS after {} of warm-up: first third {:.1} MiB, last third {:.1} MiB \
             ({:+.1} MiB, {:+.0}%): {}; peak {:.1} MiB; bound {:.1} MiB -> {}",
            human(interval * skipped as u32),
            mib(trend.first),
            mib(trend.last),
            (trend.last as f64 - trend.first as f64) / (1024.0 * 1024.0),
            trend.growth_percent(),
            if trend.is_flat() { "flat" } else { "growing" },
            mib(trend.peak),
            mib(trend.bound()),
            if trend.within_bound() {
                "ok"
            } else {
                "EXCEEDED"
            },
        );
        if let Some((usage, cpu)) = usage {
            println!(
                "  server CPU: {:.1}% of one core on average ({:.1} s in {})",
                usage.cpu_percent,
                cpu.as_secs_f64(),
                human(ran),
            );
        }
        println!(
            "  store on disk: {:.1} MiB at the start of the load, {:.1} MiB at the end",
            mib(store_at_start),
            mib(store_at_end)
        );
        match &convergence {
            Ok(converged_after) => println!(
                "  controllers converged {:.1} s after the load stopped: {} applications RUNNING \
                 with their objects on the fakes, {} deleted ones gone",
                converged_after.as_secs_f64(),
                alive,
                deleted
            ),
            Err(why) => {
                println!(
                    "  controllers did NOT converge within {} s: {why}",
                    CONVERGE_WITHIN.as_secs()
                );
                for name in why.names.iter().take(KEPT_ERRORS) {
                    println!("    {}", population.describe(name));
                }
            }
        }
        total.unexpected == 0
            && gaps.missed == 0
            && gaps.duplicated == 0
            && trend.within_bound()
            && convergence.is_ok()
    }
}

/// The `krake-server` child process and its URL.
struct Server {
    process: ChildProcess,
    url: String,
}

/// The server's configuration: short timeouts towards the clusters (the
/// fakes answer at once).
const CONFIG: &str = "\
controllers:
  kubernetes_application:
    connect_timeout: 2
    request_timeout: 5
    list_timeout: 3
  kubernetes_cluster:
    connect_timeout: 2
    request_timeout: 5
";

impl Server {
    async fn start(binary: &Path, dir: &Path, http: &reqwest::Client) -> Result<Server, String> {
        // The child runs in `dir`: a relative path would not name the binary.
        let binary = std::fs::canonicalize(binary)
            .map_err(|e| format!("krake-server binary {}: {e}", binary.display()))?;
        let binary = binary.as_path();
        let config = dir.join("api.yaml");
        std::fs::write(&config, CONFIG).map_err(|e| format!("write {}: {e}", config.display()))?;
        let started = with_free_ports(&KRAKE_SERVER, |[port]| {
            let mut command = Command::new(binary);
            command
                .current_dir(dir)
                .arg("--config")
                .arg(&config)
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["--port", &port.to_string()])
                .env("KRAKE_LOG_LEVEL", "warn")
                .env_remove("RUST_LOG");
            let log = dir.join("krake-server.log");
            async move {
                let mut process = ChildProcess::spawn(KRAKE_SERVER.name, command, log)?;
                let url = format!("http://127.0.0.1:{port}");
                let ready = format!("{url}/readyz");
                process
                    .wait_ready(START_WITHIN, || async {
                        http.get(&ready)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success())
                    })
                    .await?;
                Ok::<_, ProcessError>(Server { process, url })
            }
        })
        .await;
        started.map_err(|e| e.to_string())
    }

    fn sample(&self) -> Option<ProcessSample> {
        process_stats::sample(Some(self.process.pid()?))
    }
}

/// Registers every fake as a Cluster and waits until all are ONLINE.
async fn register_clusters(
    http: &reqwest::Client,
    base: &str,
    fakes: &[FakeCluster],
    server: &mut Server,
) -> Result<(), String> {
    let url = format!("{base}/kubernetes/namespaces/{NS}/clusters");
    for (i, fake) in fakes.iter().enumerate() {
        let cluster = json!({
            "api": "kubernetes", "kind": "Cluster",
            "metadata": {"name": format!("c-{i}"), "namespace": NS},
            "spec": {"kubeconfig": fake.kubeconfig(), "constraints": {"cloud": {}}},
        });
        let response = http
            .post(&url)
            .json(&cluster)
            .send()
            .await
            .map_err(|e| format!("register cluster c-{i}: {e}"))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(format!("register cluster c-{i}: {status}: {body}"));
        }
    }
    let deadline = Instant::now() + START_WITHIN;
    loop {
        let online = match get_json(http, &url).await {
            Ok(list) => items(&list)
                .iter()
                .filter(|c| c.pointer("/status/state").and_then(Value::as_str) == Some("ONLINE"))
                .count(),
            Err(_) => 0,
        };
        if online == fakes.len() {
            return Ok(());
        }
        if !server.process.is_running() || Instant::now() > deadline {
            return Err(format!(
                "{online} of {} clusters ONLINE after {} s; the end of krake-server's log:\n{}",
                fakes.len(),
                START_WITHIN.as_secs(),
                server.process.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// --- the load ---

/// A kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Op {
    Create,
    Update,
    Delete,
    Get,
    List,
    /// Opening a watch stream (until its answer's head arrived).
    Watch,
}

impl Op {
    const ALL: [Op; 6] = [
        Op::Create,
        Op::Update,
        Op::Delete,
        Op::Get,
        Op::List,
        Op::Watch,
    ];

    fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
            Op::Get => "get",
            Op::List => "list",
            Op::Watch => "watch",
        }
    }

    /// One letter, for the interval lines.
    fn letter(self) -> char {
        match self {
            Op::Create => 'c',
            Op::Update => 'u',
            Op::Delete => 'd',
            Op::Get => 'g',
            Op::List => 'l',
            Op::Watch => 'w',
        }
    }
}

/// How an answer counts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Success,
    /// A race the mixed load brings (the text names it).
    Expected(String),
    /// A failure.
    Unexpected(String),
}

/// Classifies an answer's status: 404 of an update, GET or delete (the
/// application was deleted meanwhile) and 409 of an update or delete are
/// races of the load; a 410 of a resumed watch is a compacted history (the
/// watcher starts afresh). Anything else not 2xx is a failure.
fn classify(op: Op, status: StatusCode) -> Outcome {
    if status.is_success() {
        return Outcome::Success;
    }
    let code = status.as_u16();
    match (op, code) {
        (Op::Update | Op::Get | Op::Delete, 404) | (Op::Update | Op::Delete, 409) => {
            Outcome::Expected(format!("{} {code}", op.name()))
        }
        (Op::Watch, 410) => Outcome::Expected("watch 410".to_owned()),
        _ => Outcome::Unexpected(format!("{} answered {status}", op.name())),
    }
}

/// Counts of one interval, or of the whole run.
#[derive(Debug, Default, Clone)]
struct Tally {
    requests: BTreeMap<Op, u64>,
    latencies: BTreeMap<Op, Vec<Duration>>,
    /// Expected races by name.
    expected: BTreeMap<String, u64>,
    unexpected: u64,
    /// The first distinct messages of unexpected failures.
    messages: Vec<String>,
    events: u64,
    reconnects: Reconnects,
}

/// Watch reconnections by how they went.
#[derive(Debug, Default, Clone, Copy)]
struct Reconnects {
    resumed: u64,
    fresh: u64,
    gone: u64,
}

impl Tally {
    fn record(&mut self, op: Op, latency: Duration, outcome: &Outcome) {
        *self.requests.entry(op).or_default() += 1;
        self.latencies.entry(op).or_default().push(latency);
        self.note(outcome);
    }

    fn note(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Success => {}
            Outcome::Expected(what) => *self.expected.entry(what.clone()).or_default() += 1,
            Outcome::Unexpected(message) => {
                self.unexpected += 1;
                if self.messages.len() < KEPT_ERRORS && !self.messages.contains(message) {
                    self.messages.push(message.clone());
                }
            }
        }
    }
}

/// The applications the load created and not deleted, and those it deleted.
#[derive(Debug, Default)]
struct Population {
    alive: BTreeSet<String>,
    deleted: BTreeSet<String>,
    next: u64,
    /// When each application's create and delete were acknowledged, for
    /// the report of what did not converge.
    life: BTreeMap<String, Life>,
}

/// Times of an application's acknowledged create and delete, from the
/// start of the load.
#[derive(Debug, Default, Clone, Copy)]
struct Life {
    created: Option<Duration>,
    deleted: Option<Duration>,
}

impl Population {
    /// `name (created at 12.3 s, deleted at 14.0 s)`.
    fn describe(&self, name: &str) -> String {
        let life = self.life.get(name).copied().unwrap_or_default();
        let at =
            |t: Option<Duration>| t.map_or("-".to_owned(), |t| format!("{:.1} s", t.as_secs_f64()));
        format!(
            "{name} (create acknowledged at {}, delete at {})",
            at(life.created),
            at(life.deleted)
        )
    }
}

/// What the load's tasks share.
#[derive(Debug, Default)]
struct Shared {
    interval: Mutex<Tally>,
    total: Mutex<Tally>,
    population: Mutex<Population>,
}

/// Locks `mutex`, also after a panic of another holder (the counts stay
/// usable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn with(&self, update: impl Fn(&mut Tally)) {
        update(&mut lock(&self.interval));
        update(&mut lock(&self.total));
    }

    fn record(&self, op: Op, latency: Duration, outcome: &Outcome) {
        self.with(|tally| tally.record(op, latency, outcome));
    }

    fn take_interval(&self) -> Tally {
        std::mem::take(&mut *lock(&self.interval))
    }

    fn total(&self) -> Tally {
        lock(&self.total).clone()
    }

    fn population(&self) -> MutexGuard<'_, Population> {
        lock(&self.population)
    }
}

/// Sends requests at `rate` per second until `stop`, then waits for those in
/// flight.
async fn generate_load(
    http: reqwest::Client,
    base: String,
    rate: f64,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let collection = Arc::new(format!("{base}/kubernetes/namespaces/{NS}/applications"));
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let started = Instant::now();
    let mut rng = Rng(seed(0));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (op, name, version) = {
            let mut population = shared.population();
            let op = pick(&mut rng, population.alive.len());
            let version = population.next;
            population.next += 1;
            let name = match op {
                Op::Create => format!("soak-{version:06}"),
                _ => {
                    let index = rng.below(population.alive.len() as u64) as usize;
                    let name = population
                        .alive
                        .iter()
                        .nth(index)
                        .cloned()
                        .unwrap_or_default();
                    if op == Op::Delete {
                        population.alive.remove(&name);
                        population.deleted.insert(name.clone());
                    }
                    name
                }
            };
            (op, name, version)
        };
        let http = http.clone();
        let url = match op {
            Op::Create | Op::List | Op::Watch => collection.as_str().to_owned(),
            Op::Update | Op::Delete | Op::Get => format!("{collection}/{name}"),
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let outcome = match op {
                Op::Create => answer(op, http.post(&url).json(&application(&name, version))).await,
                Op::Update => update(&http, &url, version).await,
                Op::Delete => answer(op, http.delete(&url)).await,
                Op::Get | Op::List | Op::Watch => answer(op, http.get(&url)).await,
            };
            let latency = sent.elapsed();
            if outcome == Outcome::Success {
                let mut population = shared.population();
                let life = population.life.entry(name.clone()).or_default();
                match op {
                    Op::Create => life.created = Some(started.elapsed()),
                    Op::Delete => life.deleted = Some(started.elapsed()),
                    _ => {}
                }
                if op == Op::Create {
                    population.alive.insert(name);
                }
            }
            shared.record(op, latency, &outcome);
            drop(permit);
        });
    }
    // Wait for the requests in flight.
    let _ = permits.acquire_many(IN_FLIGHT as u32).await;
}

/// Sends `request` and reads the whole answer (part of the request's time);
/// a failure's message has the beginning of the answer's body.
async fn answer(op: Op, request: reqwest::RequestBuilder) -> Outcome {
    answer_with_body(op, request).await.0
}

/// [`answer`], and the body of a successful answer.
async fn answer_with_body(op: Op, request: reqwest::RequestBuilder) -> (Outcome, Vec<u8>) {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            return (
                Outcome::Unexpected(format!("{}: {}", op.name(), chain(&e))),
                Vec::new(),
            );
        }
    };
    let outcome = classify(op, response.status());
    match (response.bytes().await, outcome) {
        (Err(e), _) => (
            Outcome::Unexpected(format!("{} body: {}", op.name(), chain(&e))),
            Vec::new(),
        ),
        (Ok(body), Outcome::Unexpected(message)) => {
            let text = String::from_utf8_lossy(&body);
            let cut: String = text.chars().take(200).collect();
            (Outcome::Unexpected(format!("{message}: {cut}")), Vec::new())
        }
        (Ok(body), outcome) => (outcome, body.to_vec()),
    }
}

/// An update as a client makes one: GET the application, change its label
/// and replicas, PUT it back with the `resource_version` read (a controller
/// writing in between makes it a 409, a race of the load). Its time is
/// both requests'.
async fn update(http: &reqwest::Client, url: &str, version: u64) -> Outcome {
    let (outcome, body) = answer_with_body(Op::Update, http.get(url)).await;
    if outcome != Outcome::Success {
        return outcome;
    }
    let mut object: Value = match serde_json::from_slice(&body) {
        Ok(object) => object,
        Err(e) => return Outcome::Unexpected(format!("update: the GET's body: {e}")),
    };
    if let Some(labels) = object
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.insert("soak-version".to_owned(), json!(version.to_string()));
    }
    if let Some(replicas) = object.pointer_mut("/spec/manifest/0/spec/replicas") {
        *replicas = json!(1 + version % 3);
    }
    answer(Op::Update, http.put(url).json(&object)).await
}

/// The next request for a population of `alive` applications: 2 creates, 3
/// updates, 2 deletes, 2 GETs and 1 list in 10, with the population kept
/// between half and one and a half times [`POPULATION`].
fn pick(rng: &mut Rng, alive: usize) -> Op {
    let op = match rng.below(10) {
        0 | 1 => Op::Create,
        2..=4 => Op::Update,
        5 | 6 => Op::Delete,
        7 | 8 => Op::Get,
        _ => Op::List,
    };
    match op {
        Op::Delete if alive < POPULATION / 2 => Op::Create,
        Op::Create if alive > POPULATION * 3 / 2 => Op::Delete,
        Op::Update | Op::Get | Op::Delete if alive == 0 => Op::Create,
        op => op,
    }
}

/// An application as the load creates it: a Deployment and a NodePort
/// Service named after it; `version` sets a label and the replicas (as
/// [`update`] does later).
fn application(name: &str, version: u64) -> Value {
    json!({
        "api": "kubernetes", "kind": "Application",
        "metadata": {"name": name, "namespace": NS, "labels": {"soak-version": version.to_string()}},
        "spec": {
            "manifest": [
                {"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": name, "labels": {"app": name}},
                 "spec": {"replicas": 1 + version % 3, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                        {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}}},
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                 "spec": {"type": "NodePort", "selector": {"app": name},
                          "ports": [{"port": 80, "targetPort": 80}]}},
            ],
            "constraints": {"cluster": {}},
        },
    })
}

// --- watches ---

/// What one watcher saw: its stretches, each a run of events without a gap
/// (the stream, and the streams that resumed it), as (revision, name) pairs.
#[derive(Debug, Default)]
struct WatchLog {
    stretches: Vec<Vec<(i64, String)>>,
}

/// One watcher on the applications until `stop`; a reconnecting one hangs
/// up every 5 to 20 s and resumes after the last revision it saw (three
/// times in four) or starts afresh.
async fn watch(
    http: reqwest::Client,
    base: String,
    reconnecting: bool,
    seed: u64,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> WatchLog {
    let url = format!("{base}/kubernetes/namespaces/{NS}/applications?watch&heartbeat=5");
    let mut rng = Rng(seed);
    let mut log = WatchLog {
        stretches: vec![Vec::new()],
    };
    let mut resume: Option<i64> = None;
    while !stop.is_cancelled() {
        let request = match resume {
            Some(revision) => http.get(format!("{url}&resource_version={revision}")),
            None => http.get(&url),
        };
        let sent = Instant::now();
        let response = tokio::select! {
            _ = stop.cancelled() => break,
            response = request.send() => response,
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                let outcome = Outcome::Unexpected(format!("watch: {}", chain(&e)));
                shared.record(Op::Watch, sent.elapsed(), &outcome);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let outcome = classify(Op::Watch, response.status());
        shared.record(Op::Watch, sent.elapsed(), &outcome);
        match outcome {
            Outcome::Success => {}
            Outcome::Expected(_) => {
                // Compacted: start afresh, a new stretch.
                shared.with(|t| t.reconnects.gone += 1);
                resume = None;
                log.stretches.push(Vec::new());
                continue;
            }
            Outcome::Unexpected(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let hang_up = if reconnecting {
            Duration::from_millis(5_000 + rng.below(15_000))
        } else {
            // Never, in effect.
            Duration::from_secs(365 * 24 * 3600)
        };
        let until = tokio::time::sleep(hang_up);
        tokio::pin!(until);
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        let ended = loop {
            let chunk = tokio::select! {
                _ = stop.cancelled() => break None,
                _ = &mut until => break None,
                chunk = body.next() => chunk,
            };
            match chunk {
                Some(Ok(bytes)) => {
                    buffer.extend_from_slice(&bytes);
                    while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buffer.drain(..=end).collect();
                        if let Some(event) = event_of(&line) {
                            resume = Some(event.0);
                            if let Some(stretch) = log.stretches.last_mut() {
                                stretch.push(event);
                            }
                            shared.with(|t| t.events += 1);
                        }
                    }
                }
                Some(Err(e)) => break Some(format!("watch stream broke: {}", chain(&e))),
                None => break Some("watch stream ended by the server".to_owned()),
            }
        };
        if stop.is_cancelled() {
            break;
        }
        if let Some(message) = ended {
            // The server hung up on a watcher that reads: a failure. Resume.
            shared.with(|t| t.note(&Outcome::Unexpected(message.clone())));
        } else if rng.below(4) == 0 {
            shared.with(|t| t.reconnects.fresh += 1);
            resume = None;
            log.stretches.push(Vec::new());
        } else {
            shared.with(|t| t.reconnects.resumed += 1);
        }
    }
    log
}

/// The (revision, name) of a watch line; `None` for heartbeats and lines
/// that are not events.
fn event_of(line: &[u8]) -> Option<(i64, String)> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return None;
    }
    let value: Value = serde_json::from_slice(line).ok()?;
    let metadata = value.pointer("/object/metadata")?;
    let revision = match metadata.get("resource_version")? {
        Value::String(text) => text.parse().ok()?,
        Value::Number(number) => number.as_i64()?,
        _ => return None,
    };
    let name = metadata.get("name")?.as_str()?.to_owned();
    Some((revision, name))
}

/// What [`watch_gaps`] found.
#[derive(Debug, Default, PartialEq, Eq)]
struct Gaps {
    /// Stretches checked.
    stretches: usize,
    /// Distinct events seen by all watchers together.
    events: usize,
    /// Events a stretch should have had (seen by another watcher, between
    /// the stretch's first and last revision) and did not.
    missed: usize,
    /// Events a stretch got more than once.
    duplicated: usize,
}

/// Checks every stretch of every watcher against the events all of them saw.
fn watch_gaps(logs: &[WatchLog]) -> Gaps {
    let all: BTreeSet<&(i64, String)> = logs
        .iter()
        .flat_map(|log| log.stretches.iter().flatten())
        .collect();
    let mut gaps = Gaps {
        events: all.len(),
        ..Gaps::default()
    };
    for stretch in logs.iter().flat_map(|log| &log.stretches) {
        let (Some(first), Some(last)) = (stretch.first(), stretch.last()) else {
            continue;
        };
        gaps.stretches += 1;
        let seen: BTreeSet<&(i64, String)> = stretch.iter().collect();
        gaps.duplicated += stretch.len() - seen.len();
        gaps.missed += all
            .iter()
            .filter(|event| event.0 >= first.0 && event.0 <= last.0 && !seen.contains(*event))
            .count();
    }
    gaps
}

// --- what the API and the fakes hold ---

/// The applications in the API, by name: (state, being deleted).
#[derive(Debug, Default)]
struct ApiView {
    apps: BTreeMap<String, (String, bool)>,
    error: Option<String>,
}

impl ApiView {
    async fn read(http: &reqwest::Client, base: &str) -> ApiView {
        let url = format!("{base}/kubernetes/namespaces/{NS}/applications");
        match get_json(http, &url).await {
            Ok(list) => ApiView {
                apps: items(&list)
                    .iter()
                    .filter_map(|app| {
                        let name = app.pointer("/metadata/name")?.as_str()?.to_owned();
                        let state = app
                            .pointer("/status/state")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                        let deleting = app
                            .pointer("/metadata/deleted")
                            .is_some_and(|d| !d.is_null());
                        Some((name, (state, deleting)))
                    })
                    .collect(),
                error: None,
            },
            Err(e) => ApiView {
                error: Some(e),
                ..ApiView::default()
            },
        }
    }

    fn running(&self) -> usize {
        self.apps
            .values()
            .filter(|(state, deleting)| state == "RUNNING" && !deleting)
            .count()
    }

    fn deleting(&self) -> usize {
        self.apps.values().filter(|(_, deleting)| *deleting).count()
    }
}

/// The names of the Deployments on all fakes.
fn deployments_on(fakes: &[FakeCluster]) -> BTreeSet<String> {
    names_on(fakes, "apps/v1", "Deployment")
}

fn names_on(fakes: &[FakeCluster], api_version: &str, kind: &str) -> BTreeSet<String> {
    fakes
        .iter()
        .flat_map(|fake| fake.list(api_version, kind, Some(CLUSTER_NS)))
        .filter_map(|object| {
            object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .filter(|name| name.starts_with("soak-"))
                .map(str::to_owned)
        })
        .collect()
}

/// Waits until the API holds exactly `expected`, all RUNNING, and the fakes
/// hold a Deployment and a Service for each and nothing else; `Err` with
/// the last difference after [`CONVERGE_WITHIN`].
async fn converge(
    http: &reqwest::Client,
    base: &str,
    fakes: &[FakeCluster],
    expected: &BTreeSet<String>,
    deleted: &BTreeSet<String>,
) -> Result<(), Difference> {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    loop {
        let view = ApiView::read(http, base).await;
        let difference = difference(
            &view,
            expected,
            deleted,
            &deployments_on(fakes),
            &names_on(fakes, "v1", "Service"),
        );
        match difference {
            None => return Ok(()),
            Some(difference) if Instant::now() > deadline => return Err(difference),
            Some(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// What is not as it should be: in words, and the applications concerned.
#[derive(Debug, Default, PartialEq, Eq)]
struct Difference {
    problems: Vec<String>,
    names: BTreeSet<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems.join("; "))
    }
}

/// What is not yet as it should be, if anything.
fn difference(
    view: &ApiView,
    expected: &BTreeSet<String>,
    deleted: &BTreeSet<String>,
    deployments: &BTreeSet<String>,
    services: &BTreeSet<String>,
) -> Option<Difference> {
    if let Some(error) = &view.error {
        return Some(Difference {
            problems: vec![format!("the list failed: {error}")],
            names: BTreeSet::new(),
        });
    }
    let mut problems = Vec::new();
    let mut concerned = BTreeSet::new();
    let mut names = |set: Vec<&String>| {
        concerned.extend(set.iter().map(|s| s.to_string()));
        let count = set.len();
        let shown: Vec<&str> = set.iter().take(5).map(|s| s.as_str()).collect();
        format!("{count} ({})", shown.join(", "))
    };
    let lost: Vec<&String> = expected
        .iter()
        .filter(|n| !view.apps.contains_key(*n))
        .collect();
    if !lost.is_empty() {
        problems.push(format!("created and missing from the API: {}", names(lost)));
    }
    let left: Vec<&String> = view
        .apps
        .keys()
        .filter(|n| deleted.contains(*n) || !expected.contains(*n))
        .collect();
    if !left.is_empty() {
        problems.push(format!(
            "in the API though deleted (or never acknowledged): {}",
            names(left)
        ));
    }
    let not_running: Vec<&String> = expected
        .iter()
        .filter(|n| {
            view.apps
                .get(*n)
                .is_some_and(|(state, _)| state != "RUNNING")
        })
        .collect();
    if !not_running.is_empty() {
        problems.push(format!("not RUNNING: {}", names(not_running)));
    }
    for (kind, on) in [("Deployment", deployments), ("Service", services)] {
        let missing: Vec<&String> = expected.iter().filter(|n| !on.contains(*n)).collect();
        if !missing.is_empty() {
            problems.push(format!("{kind} missing on the fakes: {}", names(missing)));
        }
        let stale: Vec<&String> = on.iter().filter(|n| !expected.contains(*n)).collect();
        if !stale.is_empty() {
            problems.push(format!("{kind} left on the fakes: {}", names(stale)));
        }
    }
    (!problems.is_empty()).then_some(Difference {
        problems,
        names: concerned,
    })
}

// --- reporting ---

/// The server's CPU share over an interval, and its RSS at the end.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu_percent: f64,
    rss: u64,
}

impl Usage {
    /// Between two timed samples.
    fn between(
        (before_at, before): (Instant, ProcessSample),
        (after_at, after): (Instant, ProcessSample),
    ) -> Usage {
        let wall = after_at.saturating_duration_since(before_at);
        Usage {
            cpu_percent: after.cpu.saturating_sub(before.cpu).as_secs_f64()
                / wall.as_secs_f64().max(1e-9)
                * 100.0,
            rss: after.rss,
        }
    }

    /// Over the run, from its first and last sample.
    fn between_samples(
        first: Option<(Instant, ProcessSample)>,
        last: Option<(Instant, ProcessSample)>,
    ) -> Option<(Usage, Duration)> {
        let (first, last) = (first?, last?);
        Some((
            Usage::between(first, last),
            last.1.cpu.saturating_sub(first.1.cpu),
        ))
    }
}

/// One interval's line.
fn interval_line(
    elapsed: Duration,
    tally: &Tally,
    usage: &Usage,
    store: u64,
    view: &ApiView,
    (on_fakes, stray): (usize, usize),
) -> String {
    let requests: u64 = tally.requests.values().sum();
    let by_kind: Vec<String> = Op::ALL
        .iter()
        .map(|op| {
            format!(
                "{}{}",
                op.letter(),
                tally.requests.get(op).copied().unwrap_or(0)
            )
        })
        .collect();
    let mut latencies: Vec<Duration> = tally.latencies.values().flatten().copied().collect();
    let expected: u64 = tally.expected.values().sum();
    let apps = match &view.error {
        None => format!(
            "apps {} (running {}, deleting {})",
            view.apps.len(),
            view.running(),
            view.deleting()
        ),
        Some(_) => "apps ? (the list failed)".to_owned(),
    };
    let mut line = format!(
        "{:>6} | req {requests:>4} ({}) | err {} (races {expected}) | p50 {} p99 {} | events {} | \
         server RSS {:.1} MiB CPU {:.0}% | store {:.1} MiB | {apps} | on fakes {on_fakes} (stray {stray})",
        human(elapsed),
        by_kind.join(" "),
        tally.unexpected,
        millis(quantile(&mut latencies, 0.5)),
        millis(quantile(&mut latencies, 0.99)),
        tally.events,
        mib(usage.rss),
        usage.cpu_percent,
        mib(store),
    );
    if let Some(first) = tally.messages.first() {
        line.push_str(&format!(" | first error: {first}"));
    }
    line
}

/// The server's RSS over the run: the average of the first and the last
/// third of the samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct RssTrend {
    first: u64,
    last: u64,
    peak: u64,
}

impl RssTrend {
    fn of(samples: &[u64]) -> RssTrend {
        let third = (samples.len() / 3).max(1);
        let average = |part: &[u64]| {
            if part.is_empty() {
                0
            } else {
                part.iter().sum::<u64>() / part.len() as u64
            }
        };
        RssTrend {
            first: average(&samples[..third.min(samples.len())]),
            last: average(&samples[samples.len().saturating_sub(third)..]),
            peak: samples.iter().copied().max().unwrap_or(0),
        }
    }

    fn growth_percent(&self) -> f64 {
        (self.last as f64 - self.first as f64) / (self.first.max(1) as f64) * 100.0
    }

    /// Flat: the last third within 10% (or 4 MiB) of the first.
    fn is_flat(&self) -> bool {
        self.last <= self.first + (self.first / 10).max(4 * 1024 * 1024)
    }

    /// The most the last third may average: the first third's average, half
    /// again, and [`RSS_SLACK_MIB`].
    fn bound(&self) -> u64 {
        self.first + self.first / 2 + RSS_SLACK_MIB * 1024 * 1024
    }

    fn within_bound(&self) -> bool {
        self.last <= self.bound()
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1e3)
}

/// `1h02m03s`, `2m05s`, `45s`.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}s")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// An error with its sources (reqwest's own message is often just "error
/// sending request").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

// --- small helpers ---

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let response = http.get(url).send().await.map_err(|e| chain(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{status}"));
    }
    response.json().await.map_err(|e| chain(&e))
}

fn items(list: &Value) -> &[Value] {
    list.get("items")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The size of the files under `path`, in bytes.
fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A seed from the clock, different for each `salt`.
fn seed(salt: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// A small xorshift generator: the load's choices need no better.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// The soak's temporary folder: removed at the end unless kept (after a
/// failure, for its log and store).
#[derive(Debug)]
struct ScratchDir {
    path: PathBuf,
    keep: std::cell::Cell<bool>,
}

impl ScratchDir {
    fn new() -> Result<ScratchDir, String> {
        let path = std::env::temp_dir().join(format!(
            "krake-soak-{}-{}",
            std::process::id(),
            seed(0) % 1_000_000
        ));
        std::fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(ScratchDir {
            path,
            keep: std::cell::Cell::new(false),
        })
    }

    fn keep(&self) {
        self.keep.set(true);
        println!("soak: the server's folder is kept: {}", self.path.display());
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep.get() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("2x").is_err());
        assert!(parse_duration("m").is_err());
        assert_eq!(
            interval_for(Duration::from_secs(120)),
            Duration::from_secs(5)
        );
        assert_eq!(
            interval_for(Duration::from_secs(1800)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn races_are_expected_and_the_rest_fails() {
        let expected = |op, code| {
            matches!(
                classify(op, StatusCode::from_u16(code).unwrap()),
                Outcome::Expected(_)
            )
        };
        assert_eq!(classify(Op::Create, StatusCode::OK), Outcome::Success);
        assert!(expected(Op::Delete, 404));
        assert!(expected(Op::Update, 409));
        assert!(expected(Op::Get, 404));
        assert!(expected(Op::Watch, 410));
        assert!(!expected(Op::Create, 409));
        assert!(!expected(Op::List, 404));
        assert!(!expected(Op::Update, 500));
        assert!(!expected(Op::Get, 503));
        assert!(!expected(Op::Update, 400));
    }

    #[test]
    fn the_population_stays_in_its_band() {
        let mut rng = Rng(seed(7));
        for _ in 0..1000 {
            // Nothing to update, GET or delete: a create (or a list).
            assert!(matches!(pick(&mut rng, 0), Op::Create | Op::List));
            assert_ne!(pick(&mut rng, POPULATION / 2 - 1), Op::Delete);
            assert_ne!(pick(&mut rng, POPULATION * 3 / 2 + 1), Op::Create);
        }
    }

    #[test]
    fn watch_gaps_find_missed_and_duplicated_events() {
        let e = |r: i64| (r, format!("soak-{r}"));
        let full = WatchLog {
            stretches: vec![(1..=10).map(e).collect()],
        };
        let resumed = WatchLog {
            stretches: vec![vec![e(3), e(4)], vec![e(7), e(8), e(8)]],
        };
        let gapped = WatchLog {
            stretches: vec![vec![e(2), e(3), e(5)]],
        };
        let gaps = watch_gaps(&[full, resumed, gapped]);
        assert_eq!(
            gaps,
            Gaps {
                stretches: 4,
                events: 10,
                missed: 1,
                duplicated: 1
            }
        );
    }

    #[test]
    fn events_are_read_from_watch_lines() {
        let line = br#"{"type":"MODIFIED","object":{"metadata":{"name":"soak-1","resource_version":"42"}}}"#;
        assert_eq!(event_of(line), Some((42, "soak-1".to_owned())));
        assert_eq!(event_of(b"\n"), None);
        assert_eq!(event_of(b"not json"), None);
    }

    #[test]
    fn rss_trend() {
        let mib = 1024 * 1024;
        let flat = RssTrend::of(&[40 * mib, 41 * mib, 40 * mib, 41 * mib, 40 * mib, 41 * mib]);
        assert!(flat.is_flat() && flat.within_bound());
        let leak: Vec<u64> = (0..9).map(|i| (40 + 10 * i) * mib).collect();
        let leak = RssTrend::of(&leak);
        assert!(!leak.is_flat());
        assert!(!leak.within_bound(), "{leak:?}");
        assert_eq!(RssTrend::of(&[]).peak, 0);
        assert_eq!(RssTrend::of(&[5]).first, 5);
    }

    #[test]
    fn the_api_and_the_fakes_agree_or_say_why_not() {
        let set = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
        let view = ApiView {
            apps: [("soak-1".to_owned(), ("RUNNING".to_owned(), false))].into(),
            error: None,
        };
        let expected = set(&["soak-1"]);
        let on = set(&["soak-1"]);
        assert_eq!(
            difference(&view, &expected, &set(&["soak-2"]), &on, &on),
            None
        );
        let stale = set(&["soak-1", "soak-2"]);
        let found = difference(&view, &expected, &set(&["soak-2"]), &stale, &on);
        let found = found.expect("a difference");
        assert!(found.to_string().contains("Deployment left on the fakes"));
        assert!(found.names.contains("soak-2"));
    }
}
