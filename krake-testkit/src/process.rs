//! What the harnesses of real programs ([`etcd`](crate::etcd),
//! [`prometheus`](crate::prometheus)) share: finding the binary
//! ([`Program`]), picking free loopback ports ([`free_ports`],
//! [`with_free_ports`]), a child process that logs to a file and is killed
//! and reaped when dropped ([`ChildProcess`]), waiting until it is ready
//! ([`ChildProcess::wait_ready`]) and the end of its log for error messages
//! ([`log_tail`]).
//!
//! ```no_run
//! # async fn example() -> Result<(), krake_testkit::process::ProcessError> {
//! use std::process::Command;
//! use std::time::Duration;
//!
//! use krake_testkit::process::{ChildProcess, Program, free_ports};
//!
//! const SLEEP: Program = Program {
//!     name: "sleep",
//!     variable: "KRAKE_TEST_SLEEP",
//!     package: "coreutils",
//! };
//! let binary = SLEEP.find()?;
//! let [_port] = free_ports().map_err(|source| SLEEP.io_error(source))?;
//! let dir = tempfile::tempdir().map_err(|source| SLEEP.io_error(source))?;
//! let mut command = Command::new(binary);
//! command.arg("60");
//! let mut child = ChildProcess::spawn(SLEEP.name, command, dir.path().join("sleep.log"))?;
//! child
//!     .wait_ready(Duration::from_secs(5), || async { true })
//!     .await?;
//! assert!(child.is_running());
//! // Dropping `child` kills it and waits for it to exit.
//! # Ok(())
//! # }
//! ```
//!
//! # Ports
//!
//! A free port is found by binding port 0 and releasing it, so another
//! process may take it before the child binds it. [`with_free_ports`] tries
//! again on other ports (at most [`START_ATTEMPTS`] times) when a start
//! fails that way ([`ProcessError::is_port_taken`]).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How many times [`with_free_ports`] picks ports.
pub const START_ATTEMPTS: usize = 5;
/// How many lines of the log [`log_tail`] returns.
const TAIL_LINES: usize = 40;
/// How many bytes from the end of the log [`log_tail`] reads at most.
const TAIL_BYTES: u64 = 16 * 1024;
/// How often [`ChildProcess::wait_ready`] asks.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Why a child process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// No binary was found.
    #[error(
        "{program} is not installed (looked for {searched}); install the Debian package \
         {package} (scripts/test does it) or set {variable} to a {program} binary"
    )]
    NotInstalled {
        /// The program.
        program: String,
        /// Where it was looked for.
        searched: String,
        /// The Debian package that installs it.
        package: String,
        /// The environment variable that names another binary.
        variable: String,
    },
    /// Creating the temporary folder, a file, the log or the process failed.
    #[error("cannot start {program}: {source}")]
    Io {
        /// The program.
        program: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The process exited while starting.
    #[error("{program} exited while starting ({status}); the end of its log:\n{log_tail}")]
    Exited {
        /// The program.
        program: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// The process was not ready in time (it was killed).
    #[error("{program} was not ready within {timeout:?}; the end of its log:\n{log_tail}")]
    Timeout {
        /// The program.
        program: String,
        /// How long it was given.
        timeout: Duration,
        /// The end of its log.
        log_tail: String,
    },
}

impl ProcessError {
    /// True if the process failed because a port it was given was taken
    /// (its log says `address already in use`, in any case, as etcd and
    /// the operating system's own message spell it): other ports may work.
    pub fn is_port_taken(&self) -> bool {
        match self {
            ProcessError::Exited { log_tail, .. } | ProcessError::Timeout { log_tail, .. } => {
                log_tail
                    .to_ascii_lowercase()
                    .contains("address already in use")
            }
            ProcessError::NotInstalled { .. } | ProcessError::Io { .. } => false,
        }
    }
}

/// A program the tests run, and where to find it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The binary's name, looked for on the `PATH`, in `/usr/bin` and in
    /// `/usr/local/bin`.
    pub name: &'static str,
    /// The environment variable that names another binary (it wins when
    /// set).
    pub variable: &'static str,
    /// The Debian package that installs it (for the error message).
    pub package: &'static str,
}

impl Program {
    /// The binary: `$variable`, `name` on the `PATH`, or the usual places.
    pub fn find(&self) -> Result<PathBuf, ProcessError> {
        if let Some(binary) = std::env::var_os(self.variable) {
            let binary = PathBuf::from(binary);
            return if binary.is_file() {
                Ok(binary)
            } else {
                Err(self.not_installed(format!("{}={}", self.variable, binary.display())))
            };
        }
        let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|path| {
                std::env::split_paths(&path)
                    .map(|dir| dir.join(self.name))
                    .collect()
            })
            .unwrap_or_default();
        candidates.extend(["/usr/bin", "/usr/local/bin"].map(|dir| Path::new(dir).join(self.name)));
        candidates
            .into_iter()
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                self.not_installed(format!(
                    "{0} on the PATH, /usr/bin/{0} and /usr/local/bin/{0}",
                    self.name
                ))
            })
    }

    /// A [`ProcessError::Io`] for this program.
    pub fn io_error(&self, source: io::Error) -> ProcessError {
        ProcessError::Io {
            program: self.name.to_owned(),
            source,
        }
    }

    fn not_installed(&self, searched: String) -> ProcessError {
        ProcessError::NotInstalled {
            program: self.name.to_owned(),
            searched,
            package: self.package.to_owned(),
            variable: self.variable.to_owned(),
        }
    }
}

/// `N` distinct free loopback ports (all bound at once, then released).
pub fn free_ports<const N: usize>() -> io::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Calls `start` with `N` free loopback ports, and again with others while
/// it fails because one was taken in the meantime
/// ([`ProcessError::is_port_taken`]), at most [`START_ATTEMPTS`] times.
pub async fn with_free_ports<const N: usize, T, F, Fut>(
    program: &Program,
    mut start: F,
) -> Result<T, ProcessError>
where
    F: FnMut([u16; N]) -> Fut,
    Fut: Future<Output = Result<T, ProcessError>>,
{
    let mut attempt = 1;
    loop {
        let ports = free_ports().map_err(|source| program.io_error(source))?;
        match start(ports).await {
            Err(error) if error.is_port_taken() && attempt < START_ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

/// A running child process whose output goes to a log file; killed (and
/// reaped) when dropped.
pub struct ChildProcess {
    program: String,
    child: Option<Child>,
    log_file: PathBuf,
}

impl fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildProcess")
            .field("program", &self.program)
            .field("pid", &self.pid())
            .field("log_file", &self.log_file)
            .finish()
    }
}

impl ChildProcess {
    /// Spawns `command` with no input and its output (standard output and
    /// error) appended to `log_file`; `program` names it in errors.
    pub fn spawn(
        program: &str,
        mut command: Command,
        log_file: impl Into<PathBuf>,
    ) -> Result<ChildProcess, ProcessError> {
        let log_file = log_file.into();
        let io_error = |source| ProcessError::Io {
            program: program.to_owned(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_file)
            .map_err(io_error)?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io_error)?)
            .stderr(log)
            .spawn()
            .map_err(io_error)?;
        Ok(ChildProcess {
            program: program.to_owned(),
            child: Some(child),
            log_file,
        })
    }

    /// Polls `ready` (every 20 ms) until it says true. Fails if the process
    /// exits first, or, after killing it, if `timeout` passes.
    pub async fn wait_ready<F, Fut>(
        &mut self,
        timeout: Duration,
        mut ready: F,
    ) -> Result<(), ProcessError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = &mut self.child {
                let exited = child.try_wait().map_err(|source| ProcessError::Io {
                    program: self.program.clone(),
                    source,
                })?;
                if let Some(status) = exited {
                    self.child = None;
                    return Err(ProcessError::Exited {
                        program: self.program.clone(),
                        status,
                        log_tail: self.log_tail(),
                    });
                }
            }
            if ready().await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(ProcessError::Timeout {
                    program: self.program.clone(),
                    timeout,
                    log_tail: self.log_tail(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The process id while it runs (to send it signals, such as `SIGSTOP`
    /// to make it hang).
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

    /// Kills the process (SIGKILL) and waits for it to exit. Does nothing if
    /// it has been killed already.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Errors mean it has exited already.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The file the process logs to.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The last lines of its log ([`log_tail`]).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_file)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last 40 lines of the log at `path`, or a line saying why it cannot
/// be read (for error messages, so it does not fail).
pub fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n"))
    };
    read().unwrap_or_else(|error| format!("(no log at {}: {error})", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SH: Program = Program {
        name: "sh",
        variable: "KRAKE_TEST_SH_UNUSED",
        package: "dash",
    };

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().unwrap();
        assert!(a != b && b != c && a != c, "{a} {b} {c}");
        assert!(a > 0 && b > 0 && c > 0);
    }

    #[test]
    fn a_missing_program_says_how_to_install_it() {
        let missing = Program {
            name: "krake-no-such-program",
            variable: "KRAKE_TEST_NO_SUCH_PROGRAM",
            package: "krake-nothing",
        };
        let error = missing.find().unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("the Debian package krake-nothing")
                && message.contains("KRAKE_TEST_NO_SUCH_PROGRAM"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn an_exit_while_starting_reports_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(SH.find().unwrap());
        command.args(["-c", "echo listen: address already in use; exit 3"]);
        let mut child = ChildProcess::spawn("sh", command, dir.path().join("sh.log")).unwrap();
        let error = child
            .wait_ready(Duration::from_secs(10), || async { false })
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ProcessError::Exited { status, .. } if status.code() == Some(3)),
            "{error}"
        );
        assert!(error.is_port_taken(), "{error}");
        assert!(!child.is_running());
    }

    #[tokio::test]
    async fn a_timeout_kills_and_drop_reaps() {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(SH.find().unwrap());
        command.args(["-c", "echo started; sleep 60"]);
        let mut child = ChildProcess::spawn("sh", command, dir.path().join("sh.log")).unwrap();
        assert!(child.is_running());
        let error = child
            .wait_ready(Duration::from_millis(200), || async { false })
            .await
            .unwrap_err();
        assert!(matches!(error, ProcessError::Timeout { .. }), "{error}");
        assert!(error.to_string().contains("started"), "{error}");
        assert!(!error.is_port_taken());
        assert!(!child.is_running());
        assert_eq!(child.pid(), None);
    }

    #[tokio::test]
    async fn with_free_ports_tries_other_ports_when_one_is_taken() {
        let mut seen = Vec::new();
        let result = with_free_ports(&SH, |[port]| {
            seen.push(port);
            let attempt = seen.len();
            async move {
                if attempt < 3 {
                    Err(ProcessError::Exited {
                        program: "sh".to_owned(),
                        status: ExitStatus::default(),
                        log_tail: "bind: address already in use".to_owned(),
                    })
                } else {
                    Ok(port)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(seen.len(), 3);
        assert_eq!(Some(&result), seen.last());
    }
}
