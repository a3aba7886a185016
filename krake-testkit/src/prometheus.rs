//! A real Prometheus for tests ([`PrometheusProcess`]), started on a free
//! loopback port with a temporary data folder and a generated
//! configuration that scrapes given targets every second, killed when
//! dropped; and an [`Exporter`] that serves gauges set at run time for it
//! to scrape.
//!
//! Prometheus must be installed: the Debian package `prometheus` (which
//! `scripts/test` installs) puts it in `/usr/bin/prometheus`;
//! `KRAKE_TEST_PROMETHEUS` names another binary. It is ready about 0.13 s
//! after starting, but a value is queryable only after the next scrape:
//! use [`PrometheusProcess::wait_for_value`] rather than sleeping.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use krake_testkit::prometheus::{Exporter, PrometheusProcess};
//!
//! let exporter = Exporter::start().await?;
//! exporter.set("heat_demand_zone_1", 0.42);
//! let prometheus = PrometheusProcess::start(&[exporter.address()]).await?;
//! prometheus.wait_for_value("heat_demand_zone_1", 0.42).await?;
//! println!("query it at {}", prometheus.url());
//! // Dropping `prometheus` kills the process and removes its data.
//! # Ok(())
//! # }
//! ```

mod exporter;

pub use exporter::Exporter;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::{self, ChildProcess, ProcessError, Program};

/// How long [`PrometheusProcess::start`] waits for Prometheus to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`PrometheusProcess::wait_for_value`] polls.
const VALUE_TIMEOUT: Duration = Duration::from_secs(20);
/// The Prometheus binary.
const PROMETHEUS: Program = Program {
    name: "prometheus",
    variable: "KRAKE_TEST_PROMETHEUS",
    package: "prometheus",
};

/// Why a Prometheus process could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusProcessError {
    /// The process could not be started, or was not ready in time.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A query did not give the expected value in time.
    #[error(
        "prometheus did not give {metric} = {expected} within {timeout:?}; last answer: {last}"
    )]
    ValueNotSeen {
        /// The metric.
        metric: String,
        /// The value waited for.
        expected: f64,
        /// How long it was waited for.
        timeout: Duration,
        /// The last answer (or error).
        last: String,
    },
}

/// A running Prometheus on a loopback port with a temporary data folder,
/// killed (and its folder removed) when dropped.
pub struct PrometheusProcess {
    port: u16,
    /// Holds `prometheus.yml`, `data/` and `prometheus.log`; removed on drop.
    dir: tempfile::TempDir,
    /// `None` once stopped.
    child: Option<ChildProcess>,
    client: reqwest::Client,
}

impl fmt::Debug for PrometheusProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusProcess")
            .field("url", &self.url())
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl PrometheusProcess {
    /// Starts Prometheus on a free loopback port, scraping `targets`
    /// (`/metrics`, every second), and waits until it is ready (at most
    /// 20 s).
    pub async fn start(
        targets: &[SocketAddr],
    ) -> Result<PrometheusProcess, PrometheusProcessError> {
        let binary = PROMETHEUS.find()?;
        let config = config(targets);
        let process = process::with_free_ports(&PROMETHEUS, |[port]| {
            let binary = binary.clone();
            let config = config.clone();
            async move {
                let io_error = |source| PROMETHEUS.io_error(source);
                let dir = tempfile::Builder::new()
                    .prefix("krake-prometheus-")
                    .tempdir()
                    .map_err(io_error)?;
                std::fs::write(dir.path().join("prometheus.yml"), config).map_err(io_error)?;
                let mut process = PrometheusProcess {
                    port,
                    dir,
                    child: None,
                    client: reqwest::Client::new(),
                };
                process.launch(&binary).await?;
                Ok(process)
            }
        })
        .await?;
        Ok(process)
    }

    /// The base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!(
            "http://{}",
            SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
        )
    }

    /// The file Prometheus logs to.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.log_file())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(ChildProcess::pid)
    }

    /// Kills Prometheus and waits for it to exit. Does nothing if it is not
    /// running.
    pub fn stop(&mut self) {
        // Dropping the child kills and reaps it.
        self.child = None;
    }

    /// Polls `GET /api/v1/query?query=<metric>` until the first series
    /// named `metric` has `value` (at most 20 s): a new value is seen only
    /// after the next scrape.
    pub async fn wait_for_value(
        &self,
        metric: &str,
        value: f64,
    ) -> Result<(), PrometheusProcessError> {
        let deadline = Instant::now() + VALUE_TIMEOUT;
        loop {
            let last = match self.value(metric).await {
                Ok(Some(current)) if current == value => return Ok(()),
                Ok(Some(current)) => format!("{metric} = {current}"),
                Ok(None) => format!("no series named {metric}"),
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                return Err(PrometheusProcessError::ValueNotSeen {
                    metric: metric.to_owned(),
                    expected: value,
                    timeout: VALUE_TIMEOUT,
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The current value of the first series named `metric`, if any.
    async fn value(&self, metric: &str) -> Result<Option<f64>, String> {
        let answer: serde_json::Value = self
            .client
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", metric)])
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|error| error.to_string())?
            .json()
            .await
            .map_err(|error| error.to_string())?;
        let series = answer
            .pointer("/data/result")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| format!("not a vector: {answer}"))?;
        let value = series
            .iter()
            .find(|series| {
                series
                    .pointer("/metric/__name__")
                    .and_then(|name| name.as_str())
                    == Some(metric)
            })
            .and_then(|series| series.pointer("/value/1")?.as_str()?.parse::<f64>().ok());
        Ok(value)
    }

    /// Starts the process and waits until `/-/ready` answers 200.
    async fn launch(&mut self, binary: &Path) -> Result<(), ProcessError> {
        let mut command = Command::new(binary);
        command
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ));
        let mut child = ChildProcess::spawn(PROMETHEUS.name, command, self.log_file())?;
        child.wait_ready(START_TIMEOUT, || self.ready()).await?;
        self.child = Some(child);
        Ok(())
    }

    /// True if `GET /-/ready` answers 200.
    async fn ready(&self) -> bool {
        let answer = self
            .client
            .get(format!("{}/-/ready", self.url()))
            .timeout(Duration::from_millis(500))
            .send()
            .await;
        matches!(answer, Ok(response) if response.status().is_success())
    }
}

/// A configuration scraping `targets` every second.
fn config(targets: &[SocketAddr]) -> String {
    let targets: Vec<String> = targets.iter().map(|target| format!("'{target}'")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: krake-test\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    )
}
