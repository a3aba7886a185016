//! [`PrometheusProcess`]: a real Prometheus for tests, started on a free
//! loopback port with a temporary data folder and a generated
//! configuration that scrapes given targets every second, killed when
//! dropped.
//!
//! Prometheus must be installed: the Debian package `prometheus` (which
//! `scripts/test` installs) puts it in `/usr/bin/prometheus`;
//! `KRAKE_TEST_PROMETHEUS` names another binary. It is ready about 0.13 s
//! after starting, but a value is queryable only after the next scrape:
//! use [`PrometheusProcess::wait_for_value`] rather than sleeping.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use krake_controller::testing::exporter::Exporter;
//! use krake_controller::testing::prometheus::PrometheusProcess;
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

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long [`PrometheusProcess::start`] waits for Prometheus to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`PrometheusProcess::wait_for_value`] polls.
const VALUE_TIMEOUT: Duration = Duration::from_secs(20);
/// How many times [`PrometheusProcess::start`] tries another port when the
/// one it picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;
/// The environment variable naming the Prometheus binary to use.
const PROMETHEUS_VARIABLE: &str = "KRAKE_TEST_PROMETHEUS";

/// Why a Prometheus process could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum PrometheusProcessError {
    /// No Prometheus binary was found.
    #[error(
        "prometheus is not installed (looked for {searched}); install the Debian package \
         prometheus (scripts/test does it) or set {PROMETHEUS_VARIABLE} to a prometheus binary"
    )]
    NotInstalled {
        /// Where it was looked for.
        searched: String,
    },
    /// Creating the temporary folder, the configuration, the log or the
    /// process failed.
    #[error("cannot start prometheus: {0}")]
    Io(#[from] std::io::Error),
    /// Prometheus exited while starting.
    #[error("prometheus exited while starting ({status}); the end of its log:\n{log_tail}")]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// Prometheus did not become ready in time.
    #[error("prometheus was not ready within {timeout:?}; the end of its log:\n{log_tail}")]
    Timeout {
        /// How long it was given.
        timeout: Duration,
        /// The end of its log.
        log_tail: String,
    },
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
    child: Option<Child>,
    client: reqwest::Client,
}

impl fmt::Debug for PrometheusProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusProcess")
            .field("url", &self.url())
            .field("pid", &self.child.as_ref().map(Child::id))
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
        let binary = find_prometheus()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let dir = tempfile::Builder::new()
                .prefix("krake-prometheus-")
                .tempdir()?;
            std::fs::write(dir.path().join("prometheus.yml"), config(targets))?;
            let mut process = PrometheusProcess {
                port,
                dir,
                child: None,
                client: reqwest::Client::new(),
            };
            match process.spawn(&binary).await {
                Ok(()) => return Ok(process),
                // Another process took the port between picking and binding.
                Err(error) if error.to_string().contains("address already in use") => {
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            PrometheusProcessError::Io(std::io::Error::other("no free port for prometheus"))
        }))
    }

    /// The base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The file Prometheus logs to.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_file())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills Prometheus and waits for it to exit. Does nothing if it is not
    /// running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it has exited already.
            let _ = child.kill();
            let _ = child.wait();
        }
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
    async fn spawn(&mut self, binary: &Path) -> Result<(), PrometheusProcessError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())?;
        let child = Command::new(binary)
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(PrometheusProcessError::Exited {
                        status,
                        log_tail: self.log_tail(),
                    });
                }
            }
            if self.ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(PrometheusProcessError::Timeout {
                    timeout: START_TIMEOUT,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        self.stop();
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

/// The Prometheus binary: `$KRAKE_TEST_PROMETHEUS`, `prometheus` on the
/// `PATH`, or the usual places.
fn find_prometheus() -> Result<PathBuf, PrometheusProcessError> {
    if let Some(binary) = std::env::var_os(PROMETHEUS_VARIABLE) {
        let binary = PathBuf::from(binary);
        return if binary.is_file() {
            Ok(binary)
        } else {
            Err(PrometheusProcessError::NotInstalled {
                searched: format!("{PROMETHEUS_VARIABLE}={}", binary.display()),
            })
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("prometheus"))
                .collect()
        })
        .unwrap_or_default();
    candidates.extend(["/usr/bin/prometheus", "/usr/local/bin/prometheus"].map(PathBuf::from));
    candidates
        .iter()
        .find(|candidate| candidate.is_file())
        .cloned()
        .ok_or_else(|| PrometheusProcessError::NotInstalled {
            searched: "prometheus on the PATH, /usr/bin/prometheus and /usr/local/bin/prometheus"
                .to_owned(),
        })
}

/// A free loopback port (bound, then released).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last 40 lines of the log at `path`.
fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(16 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines[lines.len().saturating_sub(40)..].join("\n"))
    };
    read().unwrap_or_else(|error| format!("(no log at {}: {error})", path.display()))
}
