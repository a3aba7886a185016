//! Leader election for active-passive replicas of a controller, through a
//! [`Lease`] object held in the Krake API.
//!
//! Every replica runs a [`LeaderElector`] on the same lease (one namespace
//! and name per controller) under its own identity. One of them holds the
//! lease and leads; the others stand by, read the lease every
//! [`LeaseConfig::retry_every`], and take it over when it is free or has
//! expired. [`LeaderElector::is_leader`] tells the replica's controller
//! whether to work.
//!
//! # Expected flow
//!
//! 1. Build a [`LeaseConfig`] with an identity unique to the process
//!    ([`unique_identity`]) and a [`LeaderElector`].
//! 2. Take [`LeaderElector::is_leader`] receivers, then spawn
//!    [`LeaderElector::run`] with a [`CancellationToken`].
//! 3. Work only while the receiver says `true`; stop at once when it turns
//!    `false`. Write through a client fenced by the elector:
//!    `client.with_write_guard(elector.write_guard())` (see *Fencing*).
//! 4. On shutdown, stop the work first, then cancel the token and await
//!    `run`: it releases the lease (`holder = None`), so a standby takes over
//!    without waiting for the lease to expire.
//!
//! # Guarantees
//!
//! - **Never two leaders** (under the assumptions below). Every write of the
//!   lease is conditional on the `metadata.resource_version` it was computed
//!   from, so the API serializes them: of two replicas writing the same
//!   version, one gets 409. A leader whose last successful write *started* at
//!   local time `t0` considers itself leader only until
//!   `t0 + lease_duration - max_clock_skew`, and turns [`is_leader`] to
//!   `false` at that deadline even while a renewal is still in flight. A
//!   standby considers another replica's lease expired only once it has seen
//!   the same version of it for the lease's `lease_duration_ms` on its own
//!   monotonic clock (it saw that version after the write landed, so after
//!   `t0`), or once the holder's `renew_time + lease_duration +
//!   max_clock_skew` has passed on its wall clock.
//! - **Takeover.** If the leader dies without releasing, a standby takes over
//!   about `lease_duration` (plus up to one `retry_every`) after the leader's
//!   last renewal. After a release it takes over at its next read, within
//!   `retry_every`.
//! - **Stepping down.** A renewal answered 409 or 404 (someone else wrote or
//!   removed the lease) ends leadership at once; other failures (the API is
//!   down, 5xx, timeouts) are retried every `retry_every` until the deadline.
//! - Dropping the future of [`LeaderElector::run`] (aborting its task) turns
//!   [`is_leader`] to `false`, like a graceful end; it does not release the
//!   lease, which then expires.
//!
//! # Fencing
//!
//! [`is_leader`] alone is not enough against a leader that is paused
//! (`SIGSTOP`, a VM frozen, a process starved of CPU) past its deadline:
//! when it wakes, its controllers may send writes before its campaign task
//! has run and turned `is_leader` to `false`. [`LeaderElector::write_guard`]
//! closes that gap: a [`WriteGuard`] for the work's client
//! ([`Client::with_write_guard`](krake_client::Client::with_write_guard))
//! that lets a write (POST, PUT, PATCH, DELETE) go out only while this
//! replica holds the lease and the hold's deadline has not passed on its
//! own monotonic clock, checked just before the request is handed to the
//! HTTP stack. The monotonic clock keeps running while a process is
//! stopped, so a leader that wakes after its deadline has every write
//! refused ([`Error::WriteRefused`](krake_client::Error::WriteRefused),
//! never sent) from its first instruction on. The controllers' runtime
//! treats a refused write like any failed reconcile (logged, retried
//! later); by then the campaign steps down and the work stops. The
//! elector's own client must not carry the guard: it writes the lease to
//! become leader.
//!
//! # Assumptions
//!
//! - Identities are unique among the replicas: two replicas with the same
//!   identity both treat the lease as theirs.
//! - The clocks of the replicas advance at the same rate; the drift over one
//!   lease duration is well below `max_clock_skew`.
//! - Their wall clocks differ by less than `max_clock_skew` (only the
//!   wall-clock rule above, which lets a freshly started standby take over a
//!   long-dead lease without waiting a full lease duration, relies on it).
//! - With the work's writes fenced ([`LeaderElector::write_guard`]): a
//!   write that passed the guard reaches the API within `max_clock_skew`.
//!   The window that remains is between the guard's check and the request
//!   being served: a pause (GC, `SIGSTOP`, VM migration, CPU starvation) or
//!   a network delay longer than `max_clock_skew` right there lets one write
//!   per request in flight land after the lease ran out. The guard cannot
//!   close it; only the API could, by checking a fencing token with each
//!   write, which Krake's API does not have.
//! - Without the guard: a leader is never paused for longer than
//!   `max_clock_skew` between checking [`is_leader`] and acting on it.
//! - The API's store compares and swaps each key atomically (etcd and the
//!   embedded store do).
//!
//! # Caveats
//!
//! - The fence is on the sender's side only (see the assumptions): a write
//!   already on its way when leadership ends may still land. Keep
//!   reconciles idempotent and prefer writes conditional on a
//!   `resource_version`.
//! - Only writes through the fenced Krake client are fenced: a controller's
//!   writes elsewhere (to Kubernetes clusters, say) are not, and rely on
//!   [`is_leader`] alone.
//! - A late renewal may land after the leader stepped down; the lease then
//!   names this replica, which takes it back at its next attempt (a
//!   conditional write, so safe) or lets it expire.
//! - Standbys poll: `n` replicas read the lease about `n / retry_every` times
//!   a second.
//! - The lease object is created on first use and never deleted. Each
//!   replica's user needs `get`, `create` and `update` on `core/leases` in
//!   the lease's namespace.
//!
//! # Errors
//!
//! [`LeaderElector::new`] refuses an inconsistent configuration
//! ([`LeaderError`]). [`LeaderElector::run`] never fails: API errors are
//! logged (`tracing`, at `warn`) and retried.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use krake_controller::leader::{LeaderElector, LeaseConfig, unique_identity};
//! use tokio_util::sync::CancellationToken;
//!
//! let client = krake_client::Client::new("http://localhost:8080")?;
//! let config = LeaseConfig::new("system", "scheduler", unique_identity("scheduler"));
//! let elector = LeaderElector::new(client.clone(), config)?;
//! // The work writes through a fenced client; the elector's stays unguarded.
//! let work_client = client.with_write_guard(elector.write_guard());
//! # let _ = &work_client;
//! let mut leading = elector.is_leader();
//! let shutdown = CancellationToken::new();
//! let campaign = tokio::spawn(elector.run(shutdown.clone()));
//!
//! leading.wait_for(|leading| *leading).await?;
//! // ... reconcile with `work_client` while `*leading.borrow()` is true ...
//!
//! shutdown.cancel(); // after the work has stopped
//! campaign.await?; // the lease is released
//! # Ok(())
//! # }
//! ```
//!
//! [`is_leader`]: LeaderElector::is_leader

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use krake_client::{Api, Client, WriteGuard};
use krake_data::kinds::core::{Lease, LeaseSpec};
use krake_data::metadata::is_valid_resource_name;
use krake_data::{Metadata, Timestamp};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// How many times a release reads the lease again after a conflict.
const RELEASE_ATTEMPTS: usize = 3;

/// Which lease a replica campaigns for, under which identity, and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The namespace of the lease.
    pub namespace: String,
    /// The name of the lease; one per controller (or per group of
    /// controllers that must lead together).
    pub name: String,
    /// This replica's identity, unique among the replicas (see
    /// [`unique_identity`]); written as the lease's holder.
    pub identity: String,
    /// How long the lease stays held after a renewal (written into the lease
    /// in whole milliseconds). Standbys take over this long after the
    /// leader's last renewal.
    pub lease_duration: Duration,
    /// How often the leader renews the lease.
    pub renew_every: Duration,
    /// How often a standby reads the lease, and how soon a failed request is
    /// tried again.
    pub retry_every: Duration,
    /// The most the replicas' wall clocks may differ, and the margin the
    /// leader keeps: it stops leading this long before its lease could
    /// expire for the others.
    pub max_clock_skew: Duration,
}

impl LeaseConfig {
    /// The lease `namespace/name` for `identity`, with a 15 s lease renewed
    /// every 5 s, standbys reading it every 2 s, and a 1 s clock skew margin.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry_every: Duration::from_secs(2),
            max_clock_skew: Duration::from_secs(1),
        }
    }

    /// Checks that the names are valid, the identity not empty, and the
    /// durations consistent: `lease_duration` more than `renew_every +
    /// max_clock_skew` (so a renewal is due before the leader's deadline) and
    /// at most `u32::MAX` milliseconds; `renew_every` and `retry_every` not
    /// zero, `retry_every` at most `lease_duration`.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let invalid = |reason: String| Err(LeaderError::InvalidConfig { reason });
        for (field, value) in [("namespace", &self.namespace), ("name", &self.name)] {
            if !is_valid_resource_name(value) {
                return invalid(format!("{field} {value:?} is not a valid resource name"));
            }
        }
        if self.identity.is_empty() {
            return invalid("the identity is empty".to_owned());
        }
        if self.renew_every.is_zero() || self.retry_every.is_zero() {
            return invalid("renew_every and retry_every must be more than zero".to_owned());
        }
        let margin = self.renew_every.checked_add(self.max_clock_skew);
        if margin.is_none_or(|margin| self.lease_duration <= margin) {
            return invalid(format!(
                "lease_duration ({:?}) must be more than renew_every ({:?}) plus max_clock_skew ({:?})",
                self.lease_duration, self.renew_every, self.max_clock_skew
            ));
        }
        if self.retry_every > self.lease_duration {
            return invalid(format!(
                "retry_every ({:?}) must be at most lease_duration ({:?})",
                self.retry_every, self.lease_duration
            ));
        }
        if u32::try_from(self.lease_duration.as_millis()).is_err() {
            return invalid(format!(
                "lease_duration ({:?}) is more than u32::MAX milliseconds",
                self.lease_duration
            ));
        }
        Ok(())
    }
}

/// `prefix`, a dash and 16 random hex digits: an identity unique to this
/// process (a restarted replica is a new candidate, not the old holder).
pub fn unique_identity(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

/// Why a [`LeaderElector`] cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaderError {
    /// The [`LeaseConfig`] is inconsistent.
    #[error("invalid lease configuration: {reason}")]
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
}

/// Campaigns for one lease on behalf of one replica; see the
/// [module documentation](self) for the contract.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// `config.lease_duration` in whole milliseconds, as written.
    duration_ms: u32,
    leader: watch::Sender<bool>,
    fence: Arc<Fence>,
}

/// Until when (local monotonic clock) this replica may write as leader:
/// the deadline of its hold while it leads, `None` otherwise. Shared by
/// the elector and its [`LeaseGuard`]s.
#[derive(Debug, Default)]
struct Fence {
    until: Mutex<Option<Instant>>,
}

impl Fence {
    fn set(&self, until: Option<Instant>) {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner) = until;
    }

    fn until(&self) -> Option<Instant> {
        *self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The fence of one [`LeaderElector`], for the controllers' client (see
/// [`LeaderElector::write_guard`]): a write passes only while the elector
/// holds the lease by its own monotonic clock.
#[derive(Debug)]
pub struct LeaseGuard {
    fence: Arc<Fence>,
    /// `namespace/name (identity)`, for the reason of a refusal.
    lease: String,
}

impl LeaseGuard {
    /// Whether a write may be sent now: while the lease is held and its
    /// deadline (`start of the last successful lease write + lease_duration
    /// - max_clock_skew`) has not passed on this process's monotonic clock.
    pub fn allows(&self) -> bool {
        self.fence
            .until()
            .is_some_and(|until| Instant::now() < until)
    }
}

impl WriteGuard for LeaseGuard {
    fn check(&self) -> Result<(), String> {
        let now = Instant::now();
        match self.fence.until() {
            Some(until) if now < until => Ok(()),
            Some(until) => Err(format!(
                "the lease {} ran out {:?} ago by this replica's clock; not the leader any more",
                self.lease,
                now.saturating_duration_since(until)
            )),
            None => Err(format!(
                "the lease {} is not held: not the leader",
                self.lease
            )),
        }
    }
}

/// The last version of the lease a standby read, and since when (local
/// clock, after the read answered) it has seen that version.
#[derive(Debug)]
struct Observed {
    lease: Lease,
    since: Instant,
}

/// The lease as this replica holds it.
#[derive(Debug)]
struct Held {
    /// The version this replica wrote last.
    lease: Lease,
    /// When the next renewal is due.
    next_attempt: Instant,
    /// When this replica stops leading unless it renews:
    /// `start of the last successful write + lease duration - max clock skew`.
    deadline: Instant,
}

/// Where a campaign is.
#[derive(Debug)]
enum State {
    /// Not leading.
    Standby {
        /// The lease as last read, if it is known.
        observed: Option<Observed>,
        /// A write naming this replica was interrupted and may have landed.
        maybe_ours: bool,
    },
    /// Leading.
    Leading(Held),
}

impl State {
    fn fresh() -> Self {
        State::Standby {
            observed: None,
            maybe_ours: false,
        }
    }
}

/// What a request raced against a deadline and the shutdown gave.
#[derive(Debug)]
enum Outcome<T> {
    /// The API answered.
    Done(krake_client::Result<T>),
    /// The deadline passed first.
    Deadline,
    /// Shutdown was requested first.
    Shutdown,
}

/// What a replica makes of a lease it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Nobody holds it.
    Free,
    /// It names this replica.
    Ours,
    /// Another replica held it and its hold has expired.
    Expired,
    /// Another replica holds it, until this local time at the earliest.
    Held {
        /// When it expires unless it is renewed.
        until: Instant,
    },
}

/// Judges a lease read at `now` (local) and `wall_now` (wall clock), whose
/// version this replica has seen since `seen_since`.
fn judge(
    spec: &LeaseSpec,
    identity: &str,
    seen_since: Instant,
    now: Instant,
    wall_now: Timestamp,
    max_clock_skew: Duration,
) -> Verdict {
    let Some(holder) = spec.holder.as_deref() else {
        return Verdict::Free;
    };
    if holder == identity {
        return Verdict::Ours;
    }
    let duration = Duration::from_millis(u64::from(spec.lease_duration_ms));
    let mut until = seen_since.checked_add(duration).unwrap_or(now);
    if let Some(renewed) = spec.renew_time {
        // A renew time ahead of this clock counts as just now.
        let elapsed = (wall_now - renewed).to_std().unwrap_or(Duration::ZERO);
        let remaining = (duration + max_clock_skew).saturating_sub(elapsed);
        until = until.min(now.checked_add(remaining).unwrap_or(until));
    }
    if until <= now {
        Verdict::Expired
    } else {
        Verdict::Held { until }
    }
}

/// The spec with which `identity` takes over `current`.
fn acquired(current: &LeaseSpec, identity: &str, wall: Timestamp, duration_ms: u32) -> LeaseSpec {
    let ours = current.holder.as_deref() == Some(identity);
    LeaseSpec {
        holder: Some(identity.to_owned()),
        acquire_time: if ours {
            current.acquire_time.or(Some(wall))
        } else {
            Some(wall)
        },
        renew_time: Some(wall),
        lease_duration_ms: duration_ms,
        transitions: if ours {
            current.transitions
        } else {
            current.transitions.saturating_add(1)
        },
    }
}

/// The spec of a released lease: no holder, the transition count kept.
fn released(current: &LeaseSpec) -> LeaseSpec {
    LeaseSpec {
        holder: None,
        acquire_time: None,
        renew_time: None,
        ..current.clone()
    }
}

/// Turns leadership off (and closes the fence) when the campaign ends,
/// however it ends.
struct StepDownOnDrop<'a>(&'a watch::Sender<bool>, &'a Fence);

impl Drop for StepDownOnDrop<'_> {
    fn drop(&mut self) {
        self.1.set(None);
        self.0.send_replace(false);
    }
}

impl LeaderElector {
    /// An elector for `config` (checked with [`LeaseConfig::validate`]),
    /// talking to the API through `client`. Does no I/O.
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self, LeaderError> {
        config.validate()?;
        let duration_ms = u32::try_from(config.lease_duration.as_millis()).map_err(|_| {
            LeaderError::InvalidConfig {
                reason: "lease_duration is more than u32::MAX milliseconds".to_owned(),
            }
        })?;
        let (leader, _) = watch::channel(false);
        Ok(LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            duration_ms,
            leader,
            fence: Arc::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Whether this replica leads now (`false` until [`run`](Self::run)
    /// acquires the lease, and again once it ends); await
    /// [`changed`](watch::Receiver::changed) or
    /// [`wait_for`](watch::Receiver::wait_for) for transitions. Take it
    /// before calling `run`.
    pub fn is_leader(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// A fence for the controllers' client
    /// ([`Client::with_write_guard`](krake_client::Client::with_write_guard)):
    /// it refuses every write (POST, PUT, PATCH, DELETE; the client answers
    /// [`Error::WriteRefused`](krake_client::Error::WriteRefused) without
    /// sending it) unless this replica holds the lease at that instant by
    /// its own monotonic clock, so a leader that was paused past its
    /// deadline cannot write before its campaign even notices. Give it only
    /// to the client of the work: the elector's own client must stay
    /// unguarded (it writes the lease to become leader).
    pub fn write_guard(&self) -> Arc<dyn WriteGuard> {
        Arc::new(self.lease_guard())
    }

    /// [`write_guard`](Self::write_guard) as its concrete type.
    pub fn lease_guard(&self) -> LeaseGuard {
        LeaseGuard {
            fence: self.fence.clone(),
            lease: format!(
                "{}/{} ({})",
                self.config.namespace, self.config.name, self.config.identity
            ),
        }
    }

    /// Campaigns until `shutdown` is cancelled: acquires the lease when it
    /// is free or expired (judged on this process's clocks with the
    /// `max_clock_skew` margin), renews it every `renew_every`, steps down as
    /// soon as a renewal is refused or the deadline passes without one
    /// (before the lease could expire for the others), and on shutdown
    /// steps down and releases it (`holder = None`, bounded by
    /// `lease_duration`).
    pub async fn run(self, shutdown: CancellationToken) {
        let _step_down = StepDownOnDrop(&self.leader, &self.fence);
        let mut state = State::fresh();
        loop {
            if shutdown.is_cancelled() {
                self.finish(state).await;
                return;
            }
            state = match state {
                State::Standby { observed, .. } => self.stand_by(observed, &shutdown).await,
                State::Leading(held) => self.lead(held, &shutdown).await,
            };
        }
    }

    /// Steps down and releases what may be ours.
    async fn finish(&self, state: State) {
        match state {
            State::Leading(held) => {
                self.step_down("shutting down");
                self.release(Some(held.lease)).await;
            }
            State::Standby {
                observed,
                maybe_ours,
            } => {
                let ours = observed
                    .map(|observed| observed.lease)
                    .filter(|lease| self.names_us(lease));
                if ours.is_some() || maybe_ours {
                    self.release(ours).await;
                }
            }
        }
    }

    fn names_us(&self, lease: &Lease) -> bool {
        lease.spec.holder.as_deref() == Some(self.config.identity.as_str())
    }

    fn lease_duration(&self) -> Duration {
        Duration::from_millis(u64::from(self.duration_ms))
    }

    /// The deadline of a hold whose write started at `started`.
    fn deadline_after(&self, started: Instant) -> Instant {
        let valid = self
            .lease_duration()
            .saturating_sub(self.config.max_clock_skew);
        started.checked_add(valid).unwrap_or(started)
    }

    fn hold(&self, lease: Lease, started: Instant) -> Held {
        Held {
            lease,
            next_attempt: started
                .checked_add(self.config.renew_every)
                .unwrap_or(started),
            deadline: self.deadline_after(started),
        }
    }

    fn become_leader(&self, lease: Lease, started: Instant) -> State {
        let held = self.hold(lease, started);
        if Instant::now() >= held.deadline {
            // Too slow an answer: the lease names us, the next attempt renews it.
            return State::Standby {
                observed: None,
                maybe_ours: true,
            };
        }
        // The fence opens before the work is told to start.
        self.fence.set(Some(held.deadline));
        if !self.leader.send_replace(true) {
            tracing::info!(
                identity = %self.config.identity,
                lease = %self.config.name,
                namespace = %self.config.namespace,
                transitions = held.lease.spec.transitions,
                "became leader"
            );
        }
        State::Leading(held)
    }

    fn step_down(&self, why: &str) {
        // The fence closes before the work is told to stop.
        self.fence.set(None);
        if self.leader.send_replace(false) {
            tracing::info!(
                identity = %self.config.identity,
                lease = %self.config.name,
                namespace = %self.config.namespace,
                "stepped down: {why}"
            );
        }
    }

    fn warn(&self, what: &str, err: &dyn std::error::Error) {
        tracing::warn!(
            identity = %self.config.identity,
            lease = %self.config.name,
            namespace = %self.config.namespace,
            error = %err,
            "{what}"
        );
    }

    /// Waits until `at` or shutdown; false on shutdown.
    async fn wait_until(&self, at: Instant, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep_until(at) => true,
        }
    }

    /// Waits `retry_every` (or until shutdown), then goes on with `state`.
    async fn retry_later(&self, state: State, shutdown: &CancellationToken) -> State {
        let at = Instant::now() + self.config.retry_every;
        self.wait_until(at, shutdown).await;
        state
    }

    /// Runs a request until it answers, `deadline` passes or shutdown.
    async fn call<T>(
        &self,
        deadline: Instant,
        shutdown: &CancellationToken,
        request: impl Future<Output = krake_client::Result<T>>,
    ) -> Outcome<T> {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => Outcome::Shutdown,
            answer = tokio::time::timeout_at(deadline, request) => match answer {
                Ok(answer) => Outcome::Done(answer),
                Err(_) => Outcome::Deadline,
            },
        }
    }

    /// One step of a standby: read the lease, then acquire it or wait.
    async fn stand_by(&self, observed: Option<Observed>, shutdown: &CancellationToken) -> State {
        let deadline = Instant::now() + self.lease_duration();
        let lease = match self
            .call(deadline, shutdown, self.api.get(&self.config.name))
            .await
        {
            Outcome::Done(Ok(lease)) => lease,
            Outcome::Done(Err(err)) if err.is_not_found() => return self.create(shutdown).await,
            Outcome::Done(Err(err)) => {
                self.warn("cannot read the lease", &err);
                let state = State::Standby {
                    observed,
                    maybe_ours: false,
                };
                return self.retry_later(state, shutdown).await;
            }
            Outcome::Deadline => {
                tracing::warn!(identity = %self.config.identity, "reading the lease timed out");
                let state = State::Standby {
                    observed,
                    maybe_ours: false,
                };
                return self.retry_later(state, shutdown).await;
            }
            Outcome::Shutdown => {
                return State::Standby {
                    observed,
                    maybe_ours: false,
                };
            }
        };
        let now = Instant::now();
        let since = match observed {
            Some(observed)
                if observed.lease.metadata.resource_version == lease.metadata.resource_version =>
            {
                observed.since
            }
            _ => now,
        };
        let verdict = judge(
            &lease.spec,
            &self.config.identity,
            since,
            now,
            Timestamp::now(),
            self.config.max_clock_skew,
        );
        match verdict {
            Verdict::Held { until } => {
                let wake = until.min(now + self.config.retry_every);
                self.wait_until(wake, shutdown).await;
                State::Standby {
                    observed: Some(Observed { lease, since }),
                    maybe_ours: false,
                }
            }
            Verdict::Free | Verdict::Ours | Verdict::Expired => self.acquire(lease, shutdown).await,
        }
    }

    /// Creates the lease, held by this replica.
    async fn create(&self, shutdown: &CancellationToken) -> State {
        let started = Instant::now();
        let wall = Timestamp::now();
        let spec = acquired(
            &LeaseSpec::free(self.duration_ms),
            &self.config.identity,
            wall,
            self.duration_ms,
        );
        let spec = LeaseSpec {
            transitions: 0,
            ..spec
        };
        let metadata = Metadata::namespaced(&self.config.namespace, &self.config.name);
        let lease = Lease::new(metadata, spec);
        let deadline = self.deadline_after(started);
        match self.call(deadline, shutdown, self.api.create(&lease)).await {
            Outcome::Done(Ok(created)) => self.become_leader(created, started),
            // Created by another replica meanwhile: read it.
            Outcome::Done(Err(err)) if err.is_conflict() => State::fresh(),
            Outcome::Done(Err(err)) => {
                self.warn("cannot create the lease", &err);
                self.retry_later(State::fresh(), shutdown).await
            }
            Outcome::Deadline | Outcome::Shutdown => State::Standby {
                observed: None,
                maybe_ours: true,
            },
        }
    }

    /// Takes over `current` (free, expired, or naming this replica).
    async fn acquire(&self, current: Lease, shutdown: &CancellationToken) -> State {
        let started = Instant::now();
        let wall = Timestamp::now();
        let mut lease = current;
        lease.spec = acquired(&lease.spec, &self.config.identity, wall, self.duration_ms);
        let deadline = self.deadline_after(started);
        match self.call(deadline, shutdown, self.api.update(&lease)).await {
            Outcome::Done(Ok(updated)) => self.become_leader(updated, started),
            // Written or removed by another replica meanwhile: read it again.
            Outcome::Done(Err(err)) if err.is_conflict() || err.is_not_found() => State::fresh(),
            Outcome::Done(Err(err)) => {
                self.warn("cannot acquire the lease", &err);
                self.retry_later(State::fresh(), shutdown).await
            }
            Outcome::Deadline | Outcome::Shutdown => State::Standby {
                observed: None,
                maybe_ours: true,
            },
        }
    }

    /// One step of the leader: wait for the next renewal, then renew.
    async fn lead(&self, held: Held, shutdown: &CancellationToken) -> State {
        if !self
            .wait_until(held.next_attempt.min(held.deadline), shutdown)
            .await
        {
            return State::Leading(held);
        }
        if Instant::now() >= held.deadline {
            self.step_down("no renewal before the deadline");
            return State::Standby {
                observed: None,
                maybe_ours: true,
            };
        }
        let started = Instant::now();
        let mut lease = held.lease.clone();
        lease.spec.holder = Some(self.config.identity.clone());
        lease.spec.renew_time = Some(Timestamp::now());
        lease.spec.lease_duration_ms = self.duration_ms;
        match self
            .call(held.deadline, shutdown, self.api.update(&lease))
            .await
        {
            Outcome::Done(Ok(renewed)) => {
                let held = self.hold(renewed, started);
                self.fence.set(Some(held.deadline));
                State::Leading(held)
            }
            Outcome::Done(Err(err)) if err.is_conflict() || err.is_not_found() => {
                self.step_down("the lease was taken or removed");
                State::fresh()
            }
            Outcome::Done(Err(err)) => {
                self.warn("cannot renew the lease; retrying until the deadline", &err);
                let next_attempt = Instant::now() + self.config.retry_every;
                State::Leading(Held {
                    next_attempt,
                    ..held
                })
            }
            Outcome::Deadline => {
                self.step_down("no renewal before the deadline");
                State::Standby {
                    observed: None,
                    maybe_ours: true,
                }
            }
            // The loop steps down and releases (re-reading if this renewal landed).
            Outcome::Shutdown => State::Leading(held),
        }
    }

    /// Releases the lease if it names this replica: from `known` (a version
    /// believed current), else from a fresh read; re-reads after a
    /// conflict. Bounded by the lease duration, after which it would have
    /// expired anyway.
    async fn release(&self, known: Option<Lease>) {
        let attempts = async {
            let mut known = known;
            for _ in 0..RELEASE_ATTEMPTS {
                let lease = match known.take() {
                    Some(lease) => lease,
                    None => match self.api.get(&self.config.name).await {
                        Ok(lease) => lease,
                        Err(err) if err.is_not_found() => return,
                        Err(err) => {
                            self.warn("cannot read the lease to release it", &err);
                            return;
                        }
                    },
                };
                if !self.names_us(&lease) {
                    return;
                }
                let mut free = lease;
                free.spec = released(&free.spec);
                match self.api.update(&free).await {
                    Ok(_) => {
                        tracing::info!(
                            identity = %self.config.identity,
                            lease = %self.config.name,
                            namespace = %self.config.namespace,
                            "released the lease"
                        );
                        return;
                    }
                    Err(err) if err.is_conflict() => continue,
                    Err(err) if err.is_not_found() => return,
                    Err(err) => {
                        self.warn("cannot release the lease", &err);
                        return;
                    }
                }
            }
        };
        if tokio::time::timeout(self.lease_duration(), attempts)
            .await
            .is_err()
        {
            tracing::warn!(
                identity = %self.config.identity,
                "releasing the lease timed out; it will expire"
            );
        }
    }
}

/// Runs `term` once per term of leadership, recorded in `metrics` as
/// `name`: without `leader` once, at once; with it each time the replica
/// starts to lead, with a token cancelled when it stops leading (or on
/// shutdown). Returns on shutdown, when the leadership channel closes, when
/// there is no `leader` and the term ended, or when `term` answers false
/// (it cannot go on, for instance because the reflectors stopped).
pub(crate) async fn each_term<F, Fut>(
    leader: Option<watch::Receiver<bool>>,
    shutdown: &CancellationToken,
    metrics: &Metrics,
    name: &str,
    mut term: F,
) where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut leader = leader;
    loop {
        if let Some(leader) = &mut leader {
            metrics.set_leader(name, false);
            tokio::select! {
                changed = leader.wait_for(|&leads| leads) => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = shutdown.cancelled() => return,
            }
        }
        metrics.set_leader(name, true);
        let token = shutdown.child_token();
        if let Some(leader) = leader.clone() {
            let token = token.clone();
            tokio::spawn(async move {
                let mut leader = leader;
                tokio::select! {
                    _ = leader.wait_for(|&leads| !leads) => token.cancel(),
                    () = token.cancelled() => {}
                }
            });
        }
        let go_on = term(token.clone()).await;
        token.cancel();
        metrics.set_leader(name, false);
        if shutdown.is_cancelled() || leader.is_none() || !go_on {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SKEW: Duration = Duration::from_millis(100);

    fn spec(holder: Option<&str>, renew_time: Option<Timestamp>) -> LeaseSpec {
        LeaseSpec {
            holder: holder.map(str::to_owned),
            acquire_time: renew_time,
            renew_time,
            lease_duration_ms: 1_000,
            transitions: 4,
        }
    }

    fn ms(millis: i64) -> chrono::TimeDelta {
        chrono::TimeDelta::milliseconds(millis)
    }

    fn config() -> LeaseConfig {
        LeaseConfig {
            lease_duration: Duration::from_millis(1_000),
            renew_every: Duration::from_millis(200),
            retry_every: Duration::from_millis(50),
            max_clock_skew: SKEW,
            ..LeaseConfig::new("system", "scheduler", "a")
        }
    }

    #[test]
    fn a_lease_without_holder_is_free_and_ours_is_ours() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let long_ago = wall + ms(-3_600_000);
        assert_eq!(
            judge(&spec(None, Some(wall)), "a", now, now, wall, SKEW),
            Verdict::Free
        );
        // Ours even when it expired long ago.
        assert_eq!(
            judge(&spec(Some("a"), Some(long_ago)), "a", now, now, wall, SKEW),
            Verdict::Ours
        );
    }

    #[test]
    fn a_fresh_lease_of_another_is_held_for_its_duration_from_the_first_sight() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let until = now + Duration::from_millis(1_000);
        assert_eq!(
            judge(&spec(Some("b"), Some(wall)), "a", now, now, wall, SKEW),
            Verdict::Held { until }
        );
        // Seen 600 ms ago, unchanged: 400 ms left on the local clock, though the
        // holder's renew time says it was renewed just now.
        let seen = now.checked_sub(Duration::from_millis(600)).unwrap();
        assert_eq!(
            judge(&spec(Some("b"), Some(wall)), "a", seen, now, wall, SKEW),
            Verdict::Held {
                until: seen + Duration::from_millis(1_000)
            }
        );
        // A renew time ahead of this clock does not extend the hold.
        let ahead = wall + ms(10_000);
        assert_eq!(
            judge(&spec(Some("b"), Some(ahead)), "a", now, now, wall, SKEW),
            Verdict::Held { until }
        );
    }

    #[test]
    fn a_version_seen_unchanged_for_the_duration_has_expired() {
        let now = Instant::now();
        let wall = Timestamp::now();
        let seen = now.checked_sub(Duration::from_millis(1_000)).unwrap();
        for renew_time in [None, Some(wall), Some(wall + ms(5_000))] {
            assert_eq!(
                judge(&spec(Some("b"), renew_time), "a", seen, now, wall, SKEW),
                Verdict::Expired,
                "{renew_time:?}"
            );
        }
        // No renew time: only the local clock counts.
        let recent = now.checked_sub(Duration::from_millis(999)).unwrap();
        assert_eq!(
            judge(&spec(Some("b"), None), "a", recent, now, wall, SKEW),
            Verdict::Held {
                until: recent + Duration::from_millis(1_000)
            }
        );
    }

    #[test]
    fn an_old_renew_time_expires_after_the_duration_plus_the_skew_margin() {
        let now = Instant::now();
        let wall = Timestamp::now();
        // First sight now, renewed 1.1 s ago by the holder's clock: expired.
        let old = spec(Some("b"), Some(wall + ms(-1_100)));
        assert_eq!(judge(&old, "a", now, now, wall, SKEW), Verdict::Expired);
        // Renewed 1.05 s ago: 50 ms of margin left.
        let recent = spec(Some("b"), Some(wall + ms(-1_050)));
        assert_eq!(
            judge(&recent, "a", now, now, wall, SKEW),
            Verdict::Held {
                until: now + Duration::from_millis(50)
            }
        );
        // Without the margin it would have expired.
        assert_eq!(
            judge(&recent, "a", now, now, wall, Duration::ZERO),
            Verdict::Expired
        );
    }

    #[test]
    fn taking_over_counts_transitions_and_keeps_our_acquire_time() {
        let wall = Timestamp::now();
        let before = wall + ms(-5_000);
        let from_other = acquired(&spec(Some("b"), Some(before)), "a", wall, 300);
        assert_eq!(
            from_other,
            LeaseSpec {
                holder: Some("a".into()),
                acquire_time: Some(wall),
                renew_time: Some(wall),
                lease_duration_ms: 300,
                transitions: 5,
            }
        );
        let from_free = acquired(&spec(None, None), "a", wall, 300);
        assert_eq!(from_free.transitions, 5);
        assert_eq!(from_free.acquire_time, Some(wall));
        let from_us = acquired(&spec(Some("a"), Some(before)), "a", wall, 300);
        assert_eq!(from_us.transitions, 4);
        assert_eq!(from_us.acquire_time, Some(before));
        assert_eq!(from_us.renew_time, Some(wall));
        let saturated = LeaseSpec {
            transitions: u32::MAX,
            ..spec(Some("b"), None)
        };
        assert_eq!(acquired(&saturated, "a", wall, 300).transitions, u32::MAX);
    }

    #[test]
    fn releasing_clears_the_holder_and_keeps_the_count() {
        let wall = Timestamp::now();
        assert_eq!(
            released(&spec(Some("a"), Some(wall))),
            LeaseSpec {
                holder: None,
                acquire_time: None,
                renew_time: None,
                lease_duration_ms: 1_000,
                transitions: 4,
            }
        );
    }

    #[test]
    fn inconsistent_configurations_are_refused() {
        assert_eq!(
            LeaseConfig::new("system", "scheduler", "a").validate(),
            Ok(())
        );
        assert_eq!(config().validate(), Ok(()));
        let refused = |config: LeaseConfig| match config.validate() {
            Err(LeaderError::InvalidConfig { reason }) => reason,
            Ok(()) => panic!("accepted {config:?}"),
        };
        let reason = refused(LeaseConfig {
            renew_every: Duration::from_millis(900),
            ..config()
        });
        assert!(reason.contains("must be more than renew_every"), "{reason}");
        refused(LeaseConfig {
            renew_every: Duration::ZERO,
            ..config()
        });
        refused(LeaseConfig {
            retry_every: Duration::ZERO,
            ..config()
        });
        refused(LeaseConfig {
            identity: String::new(),
            ..config()
        });
        refused(LeaseConfig {
            max_clock_skew: Duration::MAX,
            ..config()
        });
        let reason = refused(LeaseConfig {
            retry_every: Duration::from_millis(1_001),
            ..config()
        });
        assert!(reason.starts_with("retry_every"), "{reason}");
        let reason = refused(LeaseConfig {
            name: "a/b".into(),
            ..config()
        });
        assert!(reason.starts_with("name \"a/b\""), "{reason}");
        refused(LeaseConfig {
            namespace: String::new(),
            ..config()
        });
        refused(LeaseConfig {
            lease_duration: Duration::from_millis(u64::from(u32::MAX) + 1),
            ..config()
        });
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let err = LeaderElector::new(
            client,
            LeaseConfig {
                identity: String::new(),
                ..config()
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid lease configuration: the identity is empty"
        );
    }

    #[test]
    fn unique_identities_differ_and_keep_the_prefix() {
        let a = unique_identity("scheduler");
        let b = unique_identity("scheduler");
        assert_ne!(a, b);
        assert!(
            a.starts_with("scheduler-") && a.len() == "scheduler-".len() + 16,
            "{a}"
        );
    }

    #[tokio::test]
    async fn a_hold_ends_the_skew_margin_before_the_lease_and_starts_as_standby() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let elector = LeaderElector::new(client, config()).unwrap();
        assert!(!*elector.is_leader().borrow());
        let started = Instant::now();
        let lease = Lease::new(
            Metadata::namespaced("system", "scheduler"),
            LeaseSpec::free(1_000),
        );
        let held = elector.hold(lease, started);
        assert_eq!(held.deadline, started + Duration::from_millis(900));
        assert_eq!(held.next_attempt, started + Duration::from_millis(200));
        assert_eq!(elector.config().identity, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn the_guard_lets_writes_out_only_while_the_hold_lasts_on_this_clock() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let elector = LeaderElector::new(client, config()).unwrap();
        let guard = elector.lease_guard();
        let dyn_guard = elector.write_guard();
        let reason = guard.check().unwrap_err();
        assert_eq!(
            reason,
            "the lease system/scheduler (a) is not held: not the leader"
        );
        assert!(dyn_guard.check().is_err());

        let started = Instant::now();
        let lease = Lease::new(
            Metadata::namespaced("system", "scheduler"),
            LeaseSpec::free(1_000),
        );
        assert!(matches!(
            elector.become_leader(lease, started),
            State::Leading(_)
        ));
        assert!(*elector.is_leader().borrow());
        assert_eq!(guard.check(), Ok(()));
        assert_eq!(dyn_guard.check(), Ok(()));
        // The deadline is the lease duration less the skew margin.
        tokio::time::advance(Duration::from_millis(899)).await;
        assert!(guard.allows());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!guard.allows());
        // The campaign has not run since (a paused process): it still says
        // leader, and only the guard stops the write.
        assert!(*elector.is_leader().borrow());
        tokio::time::advance(Duration::from_millis(250)).await;
        let reason = dyn_guard.check().unwrap_err();
        assert_eq!(
            reason,
            "the lease system/scheduler (a) ran out 250ms ago by this replica's clock; not the leader any more"
        );

        // Stepping down closes the fence before the flag turns.
        let lease = Lease::new(
            Metadata::namespaced("system", "scheduler"),
            LeaseSpec::free(1_000),
        );
        elector.become_leader(lease, Instant::now());
        assert!(guard.allows());
        elector.step_down("a test");
        assert!(!guard.allows());
        assert!(!*elector.is_leader().borrow());
    }

    #[tokio::test(start_paused = true)]
    async fn ending_the_campaign_closes_the_fence() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let elector = LeaderElector::new(client, config()).unwrap();
        let guard = elector.lease_guard();
        let lease = Lease::new(
            Metadata::namespaced("system", "scheduler"),
            LeaseSpec::free(1_000),
        );
        elector.become_leader(lease, Instant::now());
        assert!(guard.allows());
        let shutdown = CancellationToken::new();
        let campaign = tokio::spawn(elector.run(shutdown.clone()));
        tokio::task::yield_now().await;
        campaign.abort();
        let _ = campaign.await;
        assert!(!guard.allows());
    }
}
