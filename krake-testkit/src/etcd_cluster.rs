//! A real etcd cluster for tests: [`EtcdCluster`] starts N members of the
//! `etcd` binary (Debian's `etcd-server`) on free loopback ports, each with
//! its own data folder, and controls them one by one: kill (SIGKILL, a
//! crash), stop (SIGTERM), restart on the same ports and data, pause
//! (SIGSTOP) and resume. [`EtcdCluster::leader`] finds the member that is
//! the Raft leader now.
//!
//! The members keep etcd's default timing (heartbeat 100 ms, election
//! timeout 1 s), so a failover in a test takes as long as in production.
//!
//! With [`EtcdCluster::start_tls`] the members serve clients over HTTPS
//! only and require a client certificate signed by a CA generated for the
//! cluster ([`ClusterTls`]); peers talk plain HTTP on loopback. Health checks
//! use each member's plain-HTTP metrics port, so they work either way.
//!
//! ```no_run
//! # async fn example() -> Result<(), krake_testkit::etcd::EtcdProcessError> {
//! use krake_testkit::etcd_cluster::EtcdCluster;
//!
//! let mut cluster = EtcdCluster::start(3).await?;
//! // Give `cluster.endpoints()` to the code under test.
//! let leader = cluster.wait_leader().await?;
//! cluster.kill(leader);
//! let next = cluster.wait_leader().await?;
//! assert_ne!(leader, next);
//! cluster.restart(leader).await?;
//! cluster.wait_healthy().await?;
//! // Dropping `cluster` kills every member and removes the data.
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::etcd::EtcdProcessError;
use crate::etcd::etcd_client;
use crate::process::{ChildProcess, ProcessError, Program, START_ATTEMPTS};

/// How long a start or restart waits for members to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`EtcdCluster::wait_leader`] and [`EtcdCluster::wait_healthy`]
/// wait.
const WAIT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one health check or status request may take.
const CHECK_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the waits ask.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The etcd binary.
const ETCD: Program = Program {
    name: "etcd",
    variable: "KRAKE_TEST_ETCD",
    package: "etcd-server",
};

/// The certificates of a TLS cluster ([`EtcdCluster::start_tls`]), as PEM
/// text and as files in the cluster's folder.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The CA that signed the members' and the client's certificates.
    pub ca_pem: String,
    /// A certificate the members accept (CN `krake-rs`, signed by the CA).
    pub client_cert_pem: String,
    /// The key of [`client_cert_pem`](Self::client_cert_pem) (PKCS#8).
    pub client_key_pem: String,
    /// [`ca_pem`](Self::ca_pem) as a file.
    pub ca_file: PathBuf,
    /// [`client_cert_pem`](Self::client_cert_pem) as a file.
    pub client_cert_file: PathBuf,
    /// [`client_key_pem`](Self::client_key_pem) as a file.
    pub client_key_file: PathBuf,
    /// The members' server certificate (for `127.0.0.1` and `localhost`).
    server_cert_file: PathBuf,
    /// Its key.
    server_key_file: PathBuf,
}

/// One member: its ports and process.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    metrics_port: u16,
    /// `None` while down.
    child: Option<ChildProcess>,
}

/// A running etcd cluster on loopback; every member is killed and the data
/// removed when dropped.
pub struct EtcdCluster {
    binary: PathBuf,
    members: Vec<Member>,
    /// `member-N/data` and `member-N.log` of every member, and the
    /// certificates of a TLS cluster.
    dir: tempfile::TempDir,
    tls: Option<ClusterTls>,
    http: reqwest::Client,
}

impl fmt::Debug for EtcdCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdCluster")
            .field("endpoints", &self.endpoints())
            .field("dir", &self.dir.path())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdCluster {
    /// Starts a cluster of `members` members (1 or more; 3 for a real
    /// cluster) and waits until every one is healthy (at most 20 s).
    pub async fn start(members: usize) -> Result<EtcdCluster, EtcdProcessError> {
        Self::start_with(members, false).await
    }

    /// Like [`start`](Self::start), with clients served over HTTPS only and
    /// client certificates required ([`tls`](Self::tls) has them).
    pub async fn start_tls(members: usize) -> Result<EtcdCluster, EtcdProcessError> {
        Self::start_with(members, true).await
    }

    async fn start_with(members: usize, tls: bool) -> Result<EtcdCluster, EtcdProcessError> {
        let binary = ETCD.find()?;
        let members = members.max(1);
        let mut attempt = 1;
        loop {
            let ports = free_ports(members * 3).map_err(|source| ETCD.io_error(source))?;
            let dir = tempfile::Builder::new()
                .prefix("krake-etcd-cluster-")
                .tempdir()
                .map_err(|source| ETCD.io_error(source))?;
            let tls = if tls {
                Some(ClusterTls::generate(dir.path())?)
            } else {
                None
            };
            let mut cluster = EtcdCluster {
                binary: binary.clone(),
                members: ports
                    .chunks(3)
                    .enumerate()
                    .map(|(index, ports)| Member {
                        name: format!("member-{index}"),
                        client_port: ports[0],
                        peer_port: ports[1],
                        metrics_port: ports[2],
                        child: None,
                    })
                    .collect(),
                dir,
                tls,
                http: reqwest::Client::new(),
            };
            match cluster.launch_all().await {
                Ok(()) => return Ok(cluster),
                Err(error) if error.is_port_taken() && attempt < START_ATTEMPTS => attempt += 1,
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if the cluster has no member (never: it has at least one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The client URLs of every member, in member order (`https://` for a
    /// TLS cluster).
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len())
            .map(|index| self.endpoint(index))
            .collect()
    }

    /// The client URL of member `index`.
    ///
    /// # Panics
    ///
    /// If there is no such member.
    pub fn endpoint(&self, index: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[index].client_port)
    }

    /// The certificates of a TLS cluster.
    pub fn tls(&self) -> Option<&ClusterTls> {
        self.tls.as_ref()
    }

    /// The process id of member `index` while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members[index]
            .child
            .as_ref()
            .and_then(ChildProcess::pid)
    }

    /// True while member `index` runs (also while it is paused).
    pub fn is_running(&mut self, index: usize) -> bool {
        self.members[index]
            .child
            .as_mut()
            .is_some_and(ChildProcess::is_running)
    }

    /// The last lines of member `index`'s log, for error messages.
    pub fn log_tail(&self, index: usize) -> String {
        crate::process::log_tail(&self.log_file(index))
    }

    /// Kills member `index` with SIGKILL (a crash) and waits for it to
    /// exit. Does nothing if it is down.
    pub fn kill(&mut self, index: usize) {
        // Dropping the child kills and reaps it.
        self.members[index].child = None;
    }

    /// Stops member `index` with SIGTERM (a clean shutdown; SIGKILL after
    /// 10 s) and waits for it to exit. Does nothing if it is down.
    pub async fn stop(&mut self, index: usize) {
        if let Some(pid) = self.pid(index) {
            signal("-TERM", pid);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.is_running(index) && Instant::now() < deadline {
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        }
        self.kill(index);
    }

    /// Starts member `index` again (after [`kill`](Self::kill) or
    /// [`stop`](Self::stop)) on the same ports and data, and waits until
    /// it is healthy (it needs a quorum of running members for that; at
    /// most 20 s). Does nothing if it runs.
    pub async fn restart(&mut self, index: usize) -> Result<(), EtcdProcessError> {
        if self.is_running(index) {
            return Ok(());
        }
        self.spawn(index)?;
        Ok(self.wait_member_healthy(index, START_TIMEOUT).await?)
    }

    /// Starts several members again at once (members that are down, such
    /// as two of three, which need each other for a quorum), and waits
    /// until all are healthy (at most 20 s).
    pub async fn restart_many(&mut self, indices: &[usize]) -> Result<(), EtcdProcessError> {
        for &index in indices {
            if !self.is_running(index) {
                self.spawn(index)?;
            }
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for &index in indices {
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_member_healthy(index, left).await?;
        }
        Ok(())
    }

    /// Freezes member `index` (SIGSTOP): it keeps its connections open and
    /// answers nothing, like a hung machine.
    pub fn pause(&self, index: usize) {
        if let Some(pid) = self.pid(index) {
            signal("-STOP", pid);
        }
    }

    /// Lets a paused member go on (SIGCONT).
    pub fn resume(&self, index: usize) {
        if let Some(pid) = self.pid(index) {
            signal("-CONT", pid);
        }
    }

    /// A new etcd client for member `index` alone (with the client
    /// certificate of a TLS cluster).
    pub async fn client(&self, index: usize) -> Result<etcd_client::Client, EtcdProcessError> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(CHECK_TIMEOUT)
            .with_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            options = options.with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem))
                    .identity(etcd_client::Identity::from_pem(
                        &tls.client_cert_pem,
                        &tls.client_key_pem,
                    )),
            );
        }
        Ok(etcd_client::Client::connect([self.endpoint(index)], Some(options)).await?)
    }

    /// The index of the member that is the Raft leader now, by asking every
    /// running member for its status: the one whose own id is the leader
    /// it reports. `None` during an election, or if no member answers.
    pub async fn leader(&self) -> Option<usize> {
        for index in 0..self.members.len() {
            if self.members[index].child.is_none() {
                continue;
            }
            let status = async {
                let mut client = self.client(index).await?;
                let status = client.status().await?;
                Ok::<_, EtcdProcessError>(status)
            };
            if let Ok(Ok(status)) = tokio::time::timeout(CHECK_TIMEOUT, status).await {
                let own = status.header().map(|header| header.member_id());
                if own.is_some() && own == Some(status.leader()) {
                    return Some(index);
                }
            }
        }
        None
    }

    /// Waits (at most 20 s) until a running member is the leader, and
    /// returns its index.
    pub async fn wait_leader(&self) -> Result<usize, EtcdProcessError> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(ProcessError::Timeout {
                    program: "etcd cluster (waiting for a leader)".to_owned(),
                    timeout: WAIT_TIMEOUT,
                    log_tail: self.log_tails(),
                }
                .into());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits (at most 20 s) until every running member says it is healthy
    /// (it has a leader).
    pub async fn wait_healthy(&mut self) -> Result<(), EtcdProcessError> {
        let deadline = Instant::now() + WAIT_TIMEOUT;
        for index in 0..self.members.len() {
            if self.members[index].child.is_none() {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.wait_member_healthy(index, left).await?;
        }
        Ok(())
    }

    /// Starts every member, then waits until each is healthy.
    async fn launch_all(&mut self) -> Result<(), ProcessError> {
        for index in 0..self.members.len() {
            self.spawn(index)?;
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for index in 0..self.members.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(error) = self.wait_member_healthy(index, left).await {
                for member in &mut self.members {
                    member.child = None;
                }
                return Err(error);
            }
        }
        Ok(())
    }

    /// Spawns member `index` (not waiting for it).
    fn spawn(&mut self, index: usize) -> Result<(), ProcessError> {
        let initial_cluster = self
            .members
            .iter()
            .map(|member| format!("{}=http://127.0.0.1:{}", member.name, member.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let client_url = self.endpoint(index);
        let member = &self.members[index];
        let peer_url = format!("http://127.0.0.1:{}", member.peer_port);
        let metrics_url = format!("http://127.0.0.1:{}", member.metrics_port);
        let mut command = Command::new(&self.binary);
        command
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(self.dir.path().join(&member.name).join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--listen-metrics-urls", &metrics_url])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "krake-testkit"]);
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert_file)
                .arg("--key-file")
                .arg(&tls.server_key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth");
        }
        let child = ChildProcess::spawn(ETCD.name, command, self.log_file(index))?;
        self.members[index].child = Some(child);
        Ok(())
    }

    /// Waits until member `index` answers healthy on its metrics port.
    async fn wait_member_healthy(
        &mut self,
        index: usize,
        timeout: Duration,
    ) -> Result<(), ProcessError> {
        let health = format!(
            "http://127.0.0.1:{}/health",
            self.members[index].metrics_port
        );
        let http = self.http.clone();
        let Some(child) = self.members[index].child.as_mut() else {
            return Ok(());
        };
        let result = child.wait_ready(timeout, || healthy(&http, &health)).await;
        if matches!(result, Err(ProcessError::Exited { .. })) {
            self.members[index].child = None;
        }
        result
    }

    /// The log file of member `index` (kept across restarts).
    fn log_file(&self, index: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[index].name))
    }

    /// The ends of every member's log.
    fn log_tails(&self) -> String {
        (0..self.members.len())
            .map(|index| format!("--- member {index}:\n{}", self.log_tail(index)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl ClusterTls {
    /// A CA, a server certificate for `127.0.0.1`/`localhost` and a client
    /// certificate, written to `dir`.
    fn generate(dir: &Path) -> Result<ClusterTls, ProcessError> {
        let error = |message: String| ETCD.io_error(std::io::Error::other(message));
        let rcgen_error = |e: rcgen::Error| error(format!("generating certificates: {e}"));

        let ca_key = KeyPair::generate().map_err(rcgen_error)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "krake-testkit-etcd-ca");
        ca_params.distinguished_name = name;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(rcgen_error)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(rcgen_error)?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(rcgen_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "etcd");
        server_params.distinguished_name = name;
        server_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(rcgen_error)?;

        let client_key = KeyPair::generate().map_err(rcgen_error)?;
        let mut client_params =
            CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "krake-rs");
        client_params.distinguished_name = name;
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &issuer)
            .map_err(rcgen_error)?;

        let tls = ClusterTls {
            ca_pem: ca_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            ca_file: dir.join("ca.pem"),
            client_cert_file: dir.join("client.pem"),
            client_key_file: dir.join("client-key.pem"),
            server_cert_file: dir.join("server.pem"),
            server_key_file: dir.join("server-key.pem"),
        };
        for (path, text) in [
            (&tls.ca_file, tls.ca_pem.clone()),
            (&tls.client_cert_file, tls.client_cert_pem.clone()),
            (&tls.client_key_file, tls.client_key_pem.clone()),
            (&tls.server_cert_file, server_cert.pem()),
            (&tls.server_key_file, server_key.serialize_pem()),
        ] {
            std::fs::write(path, text).map_err(|source| ETCD.io_error(source))?;
        }
        Ok(tls)
    }
}

/// `count` distinct free loopback ports (all bound at once, then released).
fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<std::io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// Sends `signal` (such as `-STOP`) to process `pid` with `kill`.
fn signal(signal: &str, pid: u32) {
    // A failure means the process is gone already: nothing to do.
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

/// True if etcd says it is healthy at `url` (`GET /health`).
async fn healthy(http: &reqwest::Client, url: &str) -> bool {
    let answer = async {
        http.get(url)
            .timeout(CHECK_TIMEOUT)
            .send()
            .await?
            .json::<serde_json::Value>()
            .await
    };
    matches!(answer.await, Ok(body) if body["health"] == "true")
}
