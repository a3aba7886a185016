//! Watches that survive disconnects: list, then watch, and keep going.
//!
//! # Expected flow
//!
//! A watch stream first yields [`WatchEvent::Restarted`] with every object of
//! the collection, then one [`WatchEvent::Added`], [`WatchEvent::Modified`]
//! or [`WatchEvent::Deleted`] per change. A cache that replaces its content
//! on `Restarted` and applies the other events is always a faithful copy of
//! the server's collection, at some point of its history.
//!
//! # Guarantees
//!
//! - When the connection breaks (server restart, network failure, a silent
//!   peer detected by three missing heartbeats), the stream reconnects with
//!   exponential backoff and jitter ([`Backoff`]). A reconnection whose
//!   headers do not come within three heartbeats is abandoned and retried.
//! - Against krake-rs, which gives every object a `metadata.resource_version`,
//!   it resumes right after the last version it delivered: no change is
//!   lost, none is delivered twice.
//! - With a client of several API replicas
//!   ([`ClientBuilder::endpoints`](crate::ClientBuilder::endpoints)), a
//!   broken stream makes its endpoint rest and the watch resumes on the next
//!   one, from the same version (the replicas share one store).
//! - If the server no longer has that version (410 Gone), or the server has
//!   no resume support (Krake's own), it relists and yields a new
//!   `Restarted` with the full current set, so objects deleted meanwhile
//!   disappear from a cache and new ones appear.
//! - A relist opens the watch *before* listing, so nothing between the two
//!   is missed. Against krake-rs, events already reflected in the list
//!   (version not above the list's) are skipped; against Krake such events
//!   may arrive once more after `Restarted` (applying them is idempotent).
//!
//! # Errors
//!
//! Transport failures and 5xx answers are retried without being yielded.
//! Other errors (401, 403, 404, 400, an undecodable line) are yielded as
//! `Err` items and the stream goes on retrying after a backoff delay; drop
//! the stream to stop.
//!
//! # Caveats
//!
//! With a label selector, an object whose labels change so that it no longer
//! matches produces no event until the next relist (the server filters
//! events, it does not synthesize deletions).

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde_json::Value;

pub use crate::backoff::Backoff;
use crate::backoff::BackoffState;
use crate::client::Answer;
use crate::error::{Error, Result};
use crate::handle::{DynamicApi, ListParams};

/// One event of a resilient watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<K> {
    /// The object was created.
    Added(K),
    /// The object was changed.
    Modified(K),
    /// The object was removed from the store (its last state).
    Deleted(K),
    /// The full current collection, after the first list and after every
    /// relist: replace whatever was known before.
    Restarted(Vec<K>),
}

impl<K> WatchEvent<K> {
    /// Converts the object(s) of the event, failing if any conversion fails.
    pub fn try_map<U, E>(self, mut f: impl FnMut(K) -> Result<U, E>) -> Result<WatchEvent<U>, E> {
        Ok(match self {
            WatchEvent::Added(object) => WatchEvent::Added(f(object)?),
            WatchEvent::Modified(object) => WatchEvent::Modified(f(object)?),
            WatchEvent::Deleted(object) => WatchEvent::Deleted(f(object)?),
            WatchEvent::Restarted(objects) => {
                WatchEvent::Restarted(objects.into_iter().map(f).collect::<Result<_, E>>()?)
            }
        })
    }

    /// The wire name of the event: `ADDED`, `MODIFIED`, `DELETED`, or
    /// `RESTARTED`.
    pub fn type_name(&self) -> &'static str {
        match self {
            WatchEvent::Added(_) => "ADDED",
            WatchEvent::Modified(_) => "MODIFIED",
            WatchEvent::Deleted(_) => "DELETED",
            WatchEvent::Restarted(_) => "RESTARTED",
        }
    }
}

/// Settings of a watch.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub struct WatchConfig {
    /// Only objects whose labels match (see [`ListParams::labels`]).
    pub label_selector: Option<String>,
    /// The heartbeat the server is asked for; when nothing, not even a
    /// heartbeat, arrives for three of them, the connection is taken as dead
    /// and replaced. `None` asks for no heartbeat and never times out.
    pub heartbeat: Option<Duration>,
    /// Delays between reconnection attempts.
    pub backoff: Backoff,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            label_selector: None,
            heartbeat: Some(Duration::from_secs(10)),
            backoff: Backoff::default(),
        }
    }
}

impl WatchConfig {
    /// How long a connection may stay silent: three heartbeats (at least 3 s).
    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.heartbeat
            .map(|period| period.max(Duration::from_secs(1)) * 3)
    }

    /// Only objects whose labels match `selector`.
    pub fn labels(mut self, selector: impl Into<String>) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Ask for a heartbeat every `period` (`None`: no heartbeat, no idle timeout).
    pub fn heartbeat(mut self, period: Option<Duration>) -> Self {
        self.heartbeat = period;
        self
    }

    /// Reconnect with these delays.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The lines of one watch response.
struct Lines {
    body: ByteStream,
    /// The endpoint of the client that serves the stream.
    endpoint: usize,
    buffer: BytesMut,
    idle_timeout: Option<Duration>,
}

/// Why a watch connection ended.
enum Ended {
    /// End of stream, a transport error, or silence beyond the idle timeout.
    Disconnected(String),
}

impl Lines {
    fn new(answer: Answer, idle_timeout: Option<Duration>) -> Self {
        Lines {
            body: Box::pin(answer.response.bytes_stream()),
            endpoint: answer.endpoint,
            buffer: BytesMut::new(),
            idle_timeout,
        }
    }

    /// The next non-empty line (heartbeats are skipped).
    async fn next_line(&mut self) -> Result<Bytes, Ended> {
        loop {
            while let Some(position) = self.buffer.iter().position(|&b| b == b'\n') {
                let line = self.buffer.split_to(position + 1).freeze();
                let line = line.slice(..position);
                if line.iter().any(|b| !b.is_ascii_whitespace()) {
                    return Ok(line);
                }
            }
            let chunk = match self.idle_timeout {
                Some(timeout) => match tokio::time::timeout(timeout, self.body.next()).await {
                    Ok(chunk) => chunk,
                    Err(_) => {
                        return Err(Ended::Disconnected(format!("no data for {timeout:?}")));
                    }
                },
                None => self.body.next().await,
            };
            match chunk {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(err)) => return Err(Ended::Disconnected(err.to_string())),
                None => return Err(Ended::Disconnected("end of stream".to_owned())),
            }
        }
    }
}

enum Phase {
    /// Open a watch, list, and yield `Restarted`.
    Relist,
    /// Reopen the watch after the last version seen.
    Resume,
    /// Read events.
    Streaming(Box<Lines>),
}

/// The state of one resilient watch.
struct Watcher {
    api: DynamicApi,
    config: WatchConfig,
    phase: Phase,
    /// The last resource version delivered (or listed); `None` against a
    /// server without versions.
    last_version: Option<String>,
    /// After a relist: skip events whose version is not above this one.
    listed_version: Option<u64>,
    backoff: BackoffState,
    /// Wait before the next connection attempt.
    delay: Option<Duration>,
}

fn resource_version(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/resource_version")
        .and_then(Value::as_str)
}

impl Watcher {
    fn idle_timeout(&self) -> Option<Duration> {
        self.config.idle_timeout()
    }

    /// Takes a failure of a connection attempt: schedules a retry, and
    /// returns the error if the caller should see it.
    fn failed(&mut self, err: Error) -> Option<Error> {
        self.delay = Some(self.backoff.next_delay());
        if err.is_transient() {
            tracing::debug!(error = %err, kind = self.api.kind().kind, "watch: retrying");
            None
        } else {
            tracing::warn!(error = %err, kind = self.api.kind().kind, "watch: request failed");
            Some(err)
        }
    }

    fn disconnected(&mut self, why: &str) {
        tracing::debug!(
            reason = why,
            kind = self.api.kind().kind,
            "watch: reconnecting"
        );
        self.phase = if self.last_version.is_some() {
            Phase::Resume
        } else {
            Phase::Relist
        };
        self.delay = Some(self.backoff.next_delay());
    }

    async fn next(&mut self) -> Result<WatchEvent<Value>> {
        loop {
            if let Some(delay) = self.delay.take() {
                tokio::time::sleep(delay).await;
            }
            match &mut self.phase {
                Phase::Relist => {
                    let response = match self.api.open_watch(&self.config, None).await {
                        Ok(response) => response,
                        Err(err) => match self.failed(err) {
                            Some(err) => return Err(err),
                            None => continue,
                        },
                    };
                    let params = ListParams {
                        label_selector: self.config.label_selector.clone(),
                        ..ListParams::default()
                    };
                    let list = match self.api.list(&params).await {
                        Ok(list) => list,
                        Err(err) => match self.failed(err) {
                            Some(err) => return Err(err),
                            None => continue,
                        },
                    };
                    let version = list.metadata.resource_version.clone();
                    self.listed_version = version.as_deref().and_then(|v| v.parse().ok());
                    self.last_version = version;
                    self.phase =
                        Phase::Streaming(Box::new(Lines::new(response, self.idle_timeout())));
                    self.backoff.reset();
                    return Ok(WatchEvent::Restarted(list.items));
                }
                Phase::Resume => {
                    let version = self.last_version.clone();
                    match self.api.open_watch(&self.config, version.as_deref()).await {
                        Ok(response) => {
                            self.listed_version = None;
                            self.phase = Phase::Streaming(Box::new(Lines::new(
                                response,
                                self.idle_timeout(),
                            )));
                        }
                        Err(err) if err.is_gone() => {
                            tracing::debug!(
                                kind = self.api.kind().kind,
                                "watch: version too old, relisting"
                            );
                            self.phase = Phase::Relist;
                        }
                        Err(err) => {
                            if let Some(err) = self.failed(err) {
                                return Err(err);
                            }
                        }
                    }
                }
                Phase::Streaming(lines) => {
                    let line = match lines.next_line().await {
                        Ok(line) => line,
                        Err(Ended::Disconnected(why)) => {
                            self.api.client().stream_broke(lines.endpoint);
                            self.disconnected(&why);
                            continue;
                        }
                    };
                    self.backoff.reset();
                    let event: krake_data::WatchEvent = match serde_json::from_slice(&line) {
                        Ok(event) => event,
                        Err(err) => return Err(Error::Decode(err)),
                    };
                    let version = resource_version(&event.object).map(str::to_owned);
                    if let (Some(listed), Some(version)) = (
                        self.listed_version,
                        version.as_deref().and_then(|v| v.parse::<u64>().ok()),
                    ) {
                        if version <= listed {
                            continue;
                        }
                    }
                    if version.is_some() {
                        self.last_version = version;
                    }
                    use krake_data::WatchEventType as Type;
                    return Ok(match event.event_type {
                        Type::Added => WatchEvent::Added(event.object),
                        Type::Modified => WatchEvent::Modified(event.object),
                        Type::Deleted => WatchEvent::Deleted(event.object),
                    });
                }
            }
        }
    }
}

/// The resilient watch of a handle's collection, as JSON values.
pub(crate) fn watch_values(
    api: DynamicApi,
    config: WatchConfig,
) -> impl Stream<Item = Result<WatchEvent<Value>>> + Send + 'static {
    let backoff = config.backoff.start();
    let watcher = Watcher {
        api,
        config,
        phase: Phase::Relist,
        last_version: None,
        listed_version: None,
        backoff,
        delay: None,
    };
    futures::stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next().await;
        Some((item, watcher))
    })
}
