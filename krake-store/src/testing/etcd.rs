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
//! # async fn example() {
//! use krake_store::Store;
//! use krake_store::etcd::{EtcdOptions, EtcdStore};
//! use krake_store::testing::etcd::EtcdProcess;
//!
//! let etcd = EtcdProcess::start().await.expect("etcd starts");
//! let store = EtcdStore::connect(&[etcd.endpoint()], EtcdOptions::default())
//!     .await
//!     .expect("a store");
//! assert!(store.revision().await.expect("etcd answers") >= 1);
//! // Dropping `etcd` kills the process and removes its data.
//! # }
//! ```

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use etcd_client;

use crate::Revision;

/// How long [`EtcdProcess::start`] waits for etcd to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How many times [`EtcdProcess::start`] tries other ports when the ones it
/// picked were taken in the meantime.
const PORT_ATTEMPTS: usize = 5;
/// The environment variable naming the etcd binary to use.
const ETCD_VARIABLE: &str = "KRAKE_TEST_ETCD";

/// Why an etcd process could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum EtcdProcessError {
    /// No etcd binary was found.
    #[error(
        "etcd is not installed (looked for {searched}); install the Debian package etcd-server \
         (scripts/test does it) or set {ETCD_VARIABLE} to an etcd binary"
    )]
    NotInstalled {
        /// Where it was looked for.
        searched: String,
    },
    /// Creating the temporary folder, the log or the process failed.
    #[error("cannot start etcd: {0}")]
    Io(#[from] std::io::Error),
    /// etcd exited while starting.
    #[error("etcd exited while starting ({status}); the end of its log:\n{log_tail}")]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// etcd did not become healthy in time.
    #[error("etcd did not answer within {timeout:?}; the end of its log:\n{log_tail}")]
    Timeout {
        /// How long it was given.
        timeout: Duration,
        /// The end of its log.
        log_tail: String,
    },
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
    child: Option<Child>,
}

impl fmt::Debug for EtcdProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdProcess")
            .field("endpoint", &self.endpoint())
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl EtcdProcess {
    /// Starts etcd on two free loopback ports (client and peer) with a new
    /// data folder, and waits until it answers (at most 20 s).
    pub async fn start() -> Result<EtcdProcess, EtcdProcessError> {
        let binary = find_etcd()?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let (client_port, peer_port) = free_ports()?;
            let mut process = EtcdProcess {
                binary: binary.clone(),
                client_port,
                peer_port,
                dir: tempfile::Builder::new().prefix("krake-etcd-").tempdir()?,
                child: None,
            };
            match process.start_again().await {
                Ok(()) => return Ok(process),
                // Another process took a port between picking and binding.
                Err(error) if error.to_string().contains("address already in use") => {
                    last_error = Some(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| {
            EtcdProcessError::Io(std::io::Error::other("no free ports for etcd"))
        }))
    }

    /// The client URL, such as `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
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
        log_tail(&self.log_file())
    }

    /// The process id while it runs (to send it signals, such as `SIGSTOP`
    /// to make etcd hang).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills etcd (SIGKILL: like a crash; what it acknowledged is on disk)
    /// and waits for it to exit. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it has exited already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again (after [`stop`](Self::stop)) on the same ports and
    /// with the same data, and waits until it answers. Does nothing if it
    /// runs.
    pub async fn start_again(&mut self) -> Result<(), EtcdProcessError> {
        if self.is_running() {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
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
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"])
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
                    return Err(EtcdProcessError::Exited {
                        status,
                        log_tail: self.log_tail(),
                    });
                }
            }
            if healthy(self.address()).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(EtcdProcessError::Timeout {
                    timeout: START_TIMEOUT,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
    pub async fn compact(&self, revision: Revision) -> Result<(), EtcdProcessError> {
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
    pub async fn revision(&self) -> Result<Revision, EtcdProcessError> {
        let mut client = self.client().await?;
        let response = client
            .get("\0", Some(etcd_client::GetOptions::new().with_count_only()))
            .await?;
        Ok(response.header().map_or(0, |header| header.revision()))
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The etcd binary: `$KRAKE_TEST_ETCD`, `etcd` on the `PATH`, or the usual
/// places.
fn find_etcd() -> Result<PathBuf, EtcdProcessError> {
    if let Some(binary) = std::env::var_os(ETCD_VARIABLE) {
        let binary = PathBuf::from(binary);
        return if binary.is_file() {
            Ok(binary)
        } else {
            Err(EtcdProcessError::NotInstalled {
                searched: format!("{ETCD_VARIABLE}={}", binary.display()),
            })
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("etcd"))
                .collect()
        })
        .unwrap_or_default();
    candidates.extend(["/usr/bin/etcd", "/usr/local/bin/etcd"].map(PathBuf::from));
    candidates
        .iter()
        .find(|candidate| candidate.is_file())
        .cloned()
        .ok_or_else(|| EtcdProcessError::NotInstalled {
            searched: "etcd on the PATH, /usr/bin/etcd and /usr/local/bin/etcd".to_owned(),
        })
}

/// Two distinct free loopback ports (bound at once, then released).
fn free_ports() -> std::io::Result<(u16, u16)> {
    let first = TcpListener::bind("127.0.0.1:0")?;
    let second = TcpListener::bind("127.0.0.1:0")?;
    Ok((first.local_addr()?.port(), second.local_addr()?.port()))
}

/// True if etcd at `address` says it is healthy (`GET /health`).
async fn healthy(address: SocketAddr) -> bool {
    let check = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).contains("\"health\":\"true\""))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), check).await,
        Ok(Ok(true))
    )
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
