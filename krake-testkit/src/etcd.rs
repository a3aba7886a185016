//! A real etcd process for tests: [`EtcdProcess`] starts `etcd` on free
//! loopback ports with a temporary data folder, and can stop it, start it
//! again on the same ports and data (to test an etcd that goes away and
//! comes back) and compact it.
//!
//! etcd must be installed: the Debian package `etcd-server` (which
//! `scripts/test` installs) puts it in `/usr/bin/etcd`. `KRAKE_TEST_ETCD`
//! names another binary.
//!
//! ```no_run
//! # async fn example() -> Result<(), krake_testkit::etcd::EtcdProcessError> {
//! use krake_testkit::etcd::EtcdProcess;
//!
//! let mut etcd = EtcdProcess::start().await?;
//! let mut client = etcd.client().await?;
//! client.put("/k", "v", None).await?;
//! // Give `etcd.endpoint()` to the code under test, such as
//! // `krake_store::etcd::EtcdStore::connect(&[etcd.endpoint()], ...)`.
//! etcd.restart().await?;
//! assert!(etcd.revision().await? >= 2);
//! // Dropping `etcd` kills the process and removes its data.
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The etcd client crate, in the version [`EtcdProcess::client`] returns.
pub use etcd_client;

use crate::process::{self, ChildProcess, ProcessError, Program};

/// How long [`EtcdProcess::start`] and [`EtcdProcess::start_again`] wait
/// for etcd to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);
/// The etcd binary.
const ETCD: Program = Program {
    name: "etcd",
    variable: "KRAKE_TEST_ETCD",
    package: "etcd-server",
};

/// Why an etcd process could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum EtcdProcessError {
    /// The process could not be started, or did not answer in time.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// A request to etcd failed.
    #[error("etcd request failed: {0}")]
    Client(#[from] etcd_client::Error),
}

/// A running etcd on loopback ports with a temporary data folder, killed
/// (and its folder removed) when dropped.
pub struct EtcdProcess {
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    /// Holds `data/` and `etcd.log`; removed on drop.
    dir: tempfile::TempDir,
    /// `None` while stopped.
    child: Option<ChildProcess>,
    /// For health checks.
    http: reqwest::Client,
}

impl fmt::Debug for EtcdProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdProcess")
            .field("endpoint", &self.endpoint())
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl EtcdProcess {
    /// Starts etcd on two free loopback ports (client and peer) with a new
    /// data folder, and waits until it answers (at most 20 s).
    pub async fn start() -> Result<EtcdProcess, EtcdProcessError> {
        let binary = ETCD.find()?;
        let process = process::with_free_ports(&ETCD, |[client_port, peer_port]| {
            let binary = binary.clone();
            async move {
                let dir = tempfile::Builder::new()
                    .prefix("krake-etcd-")
                    .tempdir()
                    .map_err(|source| ETCD.io_error(source))?;
                let mut process = EtcdProcess {
                    binary,
                    client_port,
                    peer_port,
                    dir,
                    child: None,
                    http: reqwest::Client::new(),
                };
                process.launch().await?;
                Ok(process)
            }
        })
        .await?;
        Ok(process)
    }

    /// The client URL, such as `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address())
    }

    /// The client address.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.client_port))
    }

    /// The data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The file etcd logs to (kept across restarts).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// The last lines of etcd's log, for error messages.
    pub fn log_tail(&self) -> String {
        process::log_tail(&self.log_file())
    }

    /// The process id while it runs (to send it signals, such as `SIGSTOP`
    /// to make etcd hang).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(ChildProcess::pid)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildProcess::is_running)
    }

    /// Kills etcd (SIGKILL: like a crash; what it acknowledged is on disk)
    /// and waits for it to exit. Does nothing if it is not running.
    pub fn stop(&mut self) {
        // Dropping the child kills and reaps it.
        self.child = None;
    }

    /// Starts etcd again (after [`stop`](Self::stop)) on the same ports and
    /// with the same data, and waits until it answers (at most 20 s). Does
    /// nothing if it runs.
    pub async fn start_again(&mut self) -> Result<(), EtcdProcessError> {
        if self.is_running() {
            return Ok(());
        }
        Ok(self.launch().await?)
    }

    /// [`stop`](Self::stop) then [`start_again`](Self::start_again).
    pub async fn restart(&mut self) -> Result<(), EtcdProcessError> {
        self.stop();
        self.start_again().await
    }

    /// A new etcd client for this process (for raw reads and writes in
    /// tests).
    pub async fn client(&self) -> Result<etcd_client::Client, EtcdProcessError> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10));
        Ok(etcd_client::Client::connect([self.endpoint()], Some(options)).await?)
    }

    /// Compacts etcd's history up to `revision` (reads at older revisions
    /// fail afterwards) and waits until the compaction is applied.
    pub async fn compact(&self, revision: i64) -> Result<(), EtcdProcessError> {
        let mut client = self.client().await?;
        client
            .compact(
                revision,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await?;
        Ok(())
    }

    /// etcd's current revision.
    pub async fn revision(&self) -> Result<i64, EtcdProcessError> {
        let mut client = self.client().await?;
        let response = client
            .get("\0", Some(etcd_client::GetOptions::new().with_count_only()))
            .await?;
        Ok(response.header().map_or(0, |header| header.revision()))
    }

    /// Starts the process on this harness's ports and data, and waits until
    /// it is healthy.
    async fn launch(&mut self) -> Result<(), ProcessError> {
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut command = Command::new(&self.binary);
        command
            .arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .arg("--initial-cluster")
            .arg(format!("default={peer_url}"))
            // A single member elects itself after one election timeout:
            // short ticks make it ready in tens of milliseconds.
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"]);
        let mut child = ChildProcess::spawn(ETCD.name, command, self.log_file())?;
        let health = format!("{client_url}/health");
        let members = format!("{client_url}/v3/cluster/member/list");
        // Healthy, and ours: another test's etcd that won the race for this
        // port answers /health too, while this one fails to bind.
        child
            .wait_ready(START_TIMEOUT, || async {
                healthy(&self.http, &health).await
                    && serves_peer(&self.http, &members, &peer_url).await
            })
            .await?;
        self.child = Some(child);
        Ok(())
    }
}

/// True if the etcd answering `members_url` (the gateway's member list) is
/// the member with `peer_url`.
async fn serves_peer(http: &reqwest::Client, members_url: &str, peer_url: &str) -> bool {
    let answer = async {
        http.post(members_url)
            .timeout(HEALTH_TIMEOUT)
            .body("{}")
            .send()
            .await?
            .json::<serde_json::Value>()
            .await
    };
    let Ok(body) = answer.await else {
        return false;
    };
    body["members"].as_array().is_some_and(|members| {
        members.iter().any(|member| {
            member["peerURLs"]
                .as_array()
                .is_some_and(|urls| urls.iter().any(|url| url == peer_url))
        })
    })
}

/// True if etcd says it is healthy at `url` (`GET /health`).
async fn healthy(http: &reqwest::Client, url: &str) -> bool {
    let answer = async {
        http.get(url)
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await?
            .json::<serde_json::Value>()
            .await
    };
    matches!(answer.await, Ok(body) if body["health"] == "true")
}
