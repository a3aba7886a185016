//! The endpoint pool of [`EtcdStore`](super::EtcdStore): one etcd client
//! per member, which member a request goes to, and sending it again when
//! that is safe.
//!
//! # Routing
//!
//! Every request goes to the member that is the Raft leader, as learnt from
//! the members' status (each member is probed in the background every
//! [`PROBE_INTERVAL`], every [`ELECTION_PROBE_INTERVAL`] while no leader is
//! known). The leader serves writes and linearizable reads without a
//! forward; more to the point, a follower that has not yet noticed its
//! leader died holds requests until etcd's own timeout, while the store,
//! knowing the leader is gone, holds them itself and sends them to the new
//! leader as soon as one is elected. When the leader is not among the
//! endpoints (only some members were given), requests go round-robin to the
//! members that know a leader; before the first probe, to any member.
//!
//! # Failures
//!
//! An attempt that fails without reaching etcd (no connection could be
//! made) takes its member out of the rotation until a probe succeeds, and
//! the request goes to another member. A member that answers "no leader"
//! (an election) makes the request wait for a leader. Both are safe for any
//! request, because nothing was applied. A read that failed in any other
//! transient way (a lost connection, a timeout) is sent again too; a write
//! is not: its fate is unknown, and sending it again could apply it twice
//! (a create would then report that its own key exists), so it fails with
//! [`StoreError::Unavailable`]. All of this happens within the request's
//! time ([`EtcdOptions::request_timeout`]); the wait for a leader is bounded
//! by [`EtcdOptions::retry_budget`] too. When no member can be reached at
//! all, requests fail at once instead of waiting.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::EtcdOptions;
use super::failure::{Failure, classify};
use crate::StoreError;

/// How often every member is probed while a leader is known.
pub(super) const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// How often every member is probed while no leader is known (an election,
/// or a member that was found down).
pub(super) const ELECTION_PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// The longest one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a request may be sent again after its fate became unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A read (or the set-up of a watch): always safe to send again.
    Read,
    /// A write: sent again only when it certainly was not applied.
    Write,
}

/// Why a request failed: the store's verdict, or etcd's own answer for the
/// caller to map.
#[derive(Debug)]
pub(super) enum RunError {
    /// Unavailable (or another store error) already.
    Store(StoreError),
    /// etcd answered the request with an error ([`Failure::Answer`]).
    Etcd {
        /// etcd's error.
        error: etcd_client::Error,
        /// The member that answered.
        endpoint: String,
    },
}

/// What the pool knows about one member.
#[derive(Debug, Clone, Default)]
struct MemberState {
    /// `None` before the first probe or answer; `Some(false)` while it
    /// cannot be reached.
    reachable: Option<bool>,
    /// Its Raft member id (from a probe).
    member_id: Option<u64>,
    /// The leader it knows: `Some(0)` for none (an election); `None` if
    /// not known.
    leader_id: Option<u64>,
    /// Its Raft term (to prefer the newest of two members that both claim
    /// to lead).
    raft_term: u64,
    /// Why it is unreachable.
    last_error: Option<String>,
}

/// One member: its URL and client.
struct Member {
    url: String,
    client: Client,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Where a request goes now.
#[derive(Debug)]
enum Route {
    /// To this member.
    To(usize),
    /// Wait: members are up but none knows a leader reachable from here.
    Hold(String),
    /// No member can be reached.
    Down,
}

/// The members, what is known of them, and the background prober.
#[derive(Debug)]
pub(super) struct Pool {
    members: Vec<Member>,
    states: Mutex<Vec<MemberState>>,
    /// Bumped on every change of `states`, for requests that wait.
    changed: watch::Sender<u64>,
    /// Wakes the prober early (a member was found down).
    wake: Arc<Notify>,
    /// The round-robin position.
    next: AtomicUsize,
    request_timeout: Duration,
    retry_budget: Duration,
}

impl Pool {
    /// One client per endpoint (no connection yet), and a prober task that
    /// lives as long as the pool.
    pub(super) async fn connect(
        endpoints: &[String],
        options: &EtcdOptions,
    ) -> Result<Arc<Pool>, StoreError> {
        let mut connect_options = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_keep_alive(options.keep_alive_interval, options.keep_alive_timeout)
            // etcd closes connections that ping while no stream is open.
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        if let Some(tls) = &options.tls {
            connect_options = connect_options.with_tls(tls.client_options());
        }
        let mut members = Vec::with_capacity(endpoints.len());
        for url in endpoints {
            let https = url.starts_with("https://");
            if https && options.tls.is_none() {
                return Err(StoreError::internal(format!(
                    "the etcd endpoint {url} is https: TLS settings (a CA certificate) are needed"
                )));
            }
            if url.starts_with("http://") && options.tls.is_some() {
                return Err(StoreError::internal(format!(
                    "TLS to etcd is configured but the endpoint {url} is not https://"
                )));
            }
            let connecting = Client::connect([url], Some(connect_options.clone()));
            let client = match tokio::time::timeout(options.request_timeout, connecting).await {
                Ok(Ok(client)) => client,
                Ok(Err(
                    error @ (etcd_client::Error::InvalidArgs(_)
                    | etcd_client::Error::InvalidUri(_)
                    | etcd_client::Error::TransportError(_)),
                )) => {
                    return Err(StoreError::internal(format!(
                        "invalid etcd endpoint {url:?}: {error}"
                    )));
                }
                Ok(Err(error)) => {
                    return Err(StoreError::unavailable(format!(
                        "connecting to etcd at {url} failed: {error}"
                    )));
                }
                Err(_) => {
                    return Err(StoreError::unavailable(format!(
                        "connecting to etcd at {url} took longer than {:?}",
                        options.request_timeout
                    )));
                }
            };
            members.push(Member {
                url: url.clone(),
                client,
            });
        }
        let pool = Arc::new(Pool {
            states: Mutex::new(vec![MemberState::default(); members.len()]),
            members,
            changed: watch::channel(0).0,
            wake: Arc::new(Notify::new()),
            next: AtomicUsize::new(0),
            request_timeout: options.request_timeout,
            retry_budget: options.retry_budget.min(options.request_timeout),
        });
        tokio::spawn(probe_loop(Arc::downgrade(&pool), pool.wake.clone()));
        Ok(pool)
    }

    /// Runs a request: `attempt` with the client of the member the request
    /// goes to, again on failures that allow it (see the module
    /// documentation), within the request timeout. `what` names the
    /// request for errors.
    pub(super) async fn run<T, F, Fut>(
        &self,
        kind: Kind,
        what: &(dyn Fn() -> String + Sync),
        mut attempt: F,
    ) -> Result<(T, usize), RunError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let started = Instant::now();
        let deadline = started + self.request_timeout;
        let hold_until = started + self.retry_budget;
        let mut changed = self.changed.subscribe();
        // Members tried while none was reachable, and the last failure.
        let mut tried = vec![false; self.members.len()];
        let mut last_failure: Option<String> = None;
        loop {
            let index = match self.route() {
                Route::To(index) => index,
                Route::Down => {
                    // Each member once: one may be back before a probe
                    // noticed.
                    let start = self.next.fetch_add(1, Ordering::Relaxed);
                    let untried = (0..self.members.len())
                        .map(|offset| (start + offset) % self.members.len())
                        .find(|&index| !tried[index]);
                    match untried {
                        Some(index) => index,
                        None => {
                            return Err(RunError::Store(StoreError::unavailable(format!(
                                "{} failed: no etcd member can be reached ({})",
                                what(),
                                last_failure.unwrap_or_else(|| self.describe_down())
                            ))));
                        }
                    }
                }
                Route::Hold(why) => {
                    let now = Instant::now();
                    if now >= hold_until {
                        return Err(RunError::Store(StoreError::unavailable(format!(
                            "{} failed: no etcd leader within {:?} ({why})",
                            what(),
                            self.retry_budget
                        ))));
                    }
                    // Wait for news from the prober (or a short while).
                    let wait = (hold_until - now).min(ELECTION_PROBE_INTERVAL);
                    let _ = tokio::time::timeout(wait, changed.changed()).await;
                    continue;
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(RunError::Store(self.timed_out(what, None)));
            }
            tried[index] = true;
            let client = self.members[index].client.clone();
            match tokio::time::timeout(deadline - now, attempt(client)).await {
                Ok(Ok(answer)) => {
                    self.mark_reachable(index);
                    return Ok((answer, index));
                }
                Err(_) => {
                    // A member that does not answer within the request
                    // timeout is as good as down until a probe says not.
                    self.mark_down(index, "did not answer in time".to_owned());
                    return Err(RunError::Store(self.timed_out(what, Some(index))));
                }
                Ok(Err(error)) => {
                    let failure = classify(&error);
                    let url = &self.members[index].url;
                    tracing::debug!(endpoint = %url, ?failure, %error, "an etcd request failed");
                    if failure.member_down() {
                        self.mark_down(index, error.to_string());
                    }
                    match failure {
                        Failure::NotSent => {}
                        Failure::NoLeader => self.mark_no_leader(index),
                        Failure::LeaderChanged | Failure::Lost if kind == Kind::Read => {
                            if failure == Failure::LeaderChanged {
                                self.mark_no_leader(index);
                            }
                        }
                        Failure::LeaderChanged | Failure::Lost => {
                            return Err(RunError::Store(StoreError::unavailable(format!(
                                "{} on etcd at {url} failed, and may or may not have been \
                                 applied: {error}",
                                what()
                            ))));
                        }
                        Failure::Answer => {
                            return Err(RunError::Etcd {
                                error,
                                endpoint: url.clone(),
                            });
                        }
                    }
                    last_failure = Some(format!("{url}: {error}"));
                }
            }
        }
    }

    /// The URL of member `index`.
    pub(super) fn url(&self, index: usize) -> &str {
        &self.members[index].url
    }

    /// Every endpoint.
    pub(super) fn urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.url.clone())
            .collect()
    }

    /// The client of the member requests go to now (the first if none),
    /// for best-effort requests.
    pub(super) fn preferred_client(&self) -> Client {
        let index = match self.route() {
            Route::To(index) => index,
            Route::Hold(_) | Route::Down => 0,
        };
        self.members[index].client.clone()
    }

    /// The error of a request that ran out of time.
    fn timed_out(&self, what: &(dyn Fn() -> String + Sync), index: Option<usize>) -> StoreError {
        let at = match index {
            Some(index) => self.members[index].url.clone(),
            None => format!("{:?}", self.urls()),
        };
        StoreError::unavailable(format!(
            "etcd at {at} did not answer {} within {:?}",
            what(),
            self.request_timeout
        ))
    }

    /// Where a request goes now (see the module documentation).
    fn route(&self) -> Route {
        let states = self.states();
        let up: Vec<usize> = (0..states.len())
            .filter(|&index| states[index].reachable != Some(false))
            .collect();
        if up.is_empty() {
            return Route::Down;
        }
        // A member that says it leads (the newest term if several do).
        let leader = up
            .iter()
            .copied()
            .filter(|&index| {
                let state = &states[index];
                state.reachable == Some(true)
                    && state.member_id.is_some()
                    && state.member_id == state.leader_id
            })
            .max_by_key(|&index| states[index].raft_term);
        if let Some(index) = leader {
            return Route::To(index);
        }
        // Members that know a leader this pool has no endpoint of, or were
        // not probed yet: they forward.
        let known: Vec<u64> = states.iter().filter_map(|state| state.member_id).collect();
        let forwarders: Vec<usize> = up
            .iter()
            .copied()
            .filter(|&index| match states[index].leader_id {
                None => true,
                Some(0) => false,
                Some(leader) => !known.contains(&leader),
            })
            .collect();
        if !forwarders.is_empty() {
            let turn = self.next.fetch_add(1, Ordering::Relaxed);
            return Route::To(forwarders[turn % forwarders.len()]);
        }
        Route::Hold(format!(
            "{} member(s) up, none with a reachable leader; {}",
            up.len(),
            describe_down(&self.members, &states)
        ))
    }

    /// Why members are down, for errors.
    fn describe_down(&self) -> String {
        describe_down(&self.members, &self.states())
    }

    fn states(&self) -> MutexGuard<'_, Vec<MemberState>> {
        // A panic while holding the lock leaves consistent data (every
        // change is one assignment): go on with it.
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `change` to member `index`'s state and tells waiters.
    fn update(&self, index: usize, change: impl FnOnce(&mut MemberState)) {
        change(&mut self.states()[index]);
        self.changed.send_modify(|generation| *generation += 1);
    }

    fn mark_reachable(&self, index: usize) {
        if self.states()[index].reachable != Some(true) {
            self.update(index, |state| {
                state.reachable = Some(true);
                state.last_error = None;
            });
        }
    }

    fn mark_down(&self, index: usize, error: String) {
        self.update(index, |state| {
            state.reachable = Some(false);
            state.last_error = Some(error);
        });
        self.wake.notify_one();
    }

    fn mark_no_leader(&self, index: usize) {
        self.update(index, |state| {
            state.reachable = Some(true);
            state.leader_id = Some(0);
        });
        self.wake.notify_one();
    }

    /// True if requests go to a leader now (so probing can slow down).
    fn has_leader_route(&self) -> bool {
        let states = self.states();
        states.iter().all(|state| state.reachable == Some(true))
            && states
                .iter()
                .any(|state| state.member_id.is_some() && state.member_id == state.leader_id)
    }

    /// Probes every member at once and records what they say.
    async fn probe_all(&self) {
        let probes = (0..self.members.len()).map(|index| async move {
            let mut client = self.members[index].client.clone();
            let result = tokio::time::timeout(PROBE_TIMEOUT, client.status()).await;
            (index, result)
        });
        for (index, result) in futures::future::join_all(probes).await {
            match result {
                Ok(Ok(status)) => self.update(index, |state| {
                    state.reachable = Some(true);
                    state.last_error = None;
                    state.member_id = status.header().map(|header| header.member_id());
                    state.leader_id = Some(status.leader());
                    state.raft_term = status.raft_term();
                }),
                Ok(Err(error)) => match classify(&error) {
                    Failure::NoLeader | Failure::LeaderChanged => self.update(index, |state| {
                        state.reachable = Some(true);
                        state.last_error = None;
                        state.leader_id = Some(0);
                    }),
                    Failure::NotSent | Failure::Lost => self.update(index, |state| {
                        state.reachable = Some(false);
                        state.last_error = Some(error.to_string());
                    }),
                    // Answers (such as a denied status): up, leader unknown.
                    Failure::Answer => self.update(index, |state| {
                        state.reachable = Some(true);
                        state.last_error = None;
                        state.leader_id = None;
                    }),
                },
                Err(_) => self.update(index, |state| {
                    state.reachable = Some(false);
                    state.last_error = Some(format!("no status within {PROBE_TIMEOUT:?}"));
                }),
            }
        }
    }
}

/// "a: why; b: why" for the members that are down.
fn describe_down(members: &[Member], states: &[MemberState]) -> String {
    let down: Vec<String> = members
        .iter()
        .zip(states)
        .filter(|(_, state)| state.reachable == Some(false))
        .map(|(member, state)| {
            format!(
                "{} down: {}",
                member.url,
                state.last_error.as_deref().unwrap_or("unreachable")
            )
        })
        .collect();
    if down.is_empty() {
        "no member is down".to_owned()
    } else {
        down.join("; ")
    }
}

/// Probes the pool's members until the pool is dropped: every
/// [`PROBE_INTERVAL`] while requests go to a leader, every
/// [`ELECTION_PROBE_INTERVAL`] otherwise, and at once when woken.
async fn probe_loop(pool: Weak<Pool>, wake: Arc<Notify>) {
    loop {
        let interval = {
            let Some(pool) = pool.upgrade() else {
                return;
            };
            pool.probe_all().await;
            if pool.has_leader_route() {
                PROBE_INTERVAL
            } else {
                ELECTION_PROBE_INTERVAL
            }
        };
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A pool of `n` members on ports nobody listens on (no connection is
    /// made until a request), with the prober's findings set by hand.
    async fn pool(n: usize) -> Arc<Pool> {
        let endpoints: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 9 + i))
            .collect();
        Pool::connect(&endpoints, &EtcdOptions::default())
            .await
            .unwrap()
    }

    /// Reachable, member id, leader id, Raft term.
    type Finding = (Option<bool>, Option<u64>, Option<u64>, u64);

    fn set(pool: &Pool, states: &[Finding]) {
        let mut current = pool.states();
        for (state, &(reachable, member_id, leader_id, raft_term)) in current.iter_mut().zip(states)
        {
            *state = MemberState {
                reachable,
                member_id,
                leader_id,
                raft_term,
                last_error: None,
            };
        }
    }

    fn target(pool: &Pool) -> Option<usize> {
        match pool.route() {
            Route::To(index) => Some(index),
            Route::Hold(_) | Route::Down => None,
        }
    }

    #[tokio::test]
    async fn requests_go_to_the_leader() {
        let pool = pool(3).await;
        // Before any probe: any member.
        set(&pool, &[(None, None, None, 0); 3]);
        assert!(target(&pool).is_some());
        // Member 1 leads.
        set(
            &pool,
            &[
                (Some(true), Some(10), Some(11), 2),
                (Some(true), Some(11), Some(11), 2),
                (Some(true), Some(12), Some(11), 2),
            ],
        );
        for _ in 0..5 {
            assert_eq!(target(&pool), Some(1));
        }
        // Two claim to lead (one was cut off): the newer term wins.
        set(
            &pool,
            &[
                (Some(true), Some(10), Some(10), 2),
                (Some(true), Some(11), Some(11), 3),
                (Some(true), Some(12), Some(11), 3),
            ],
        );
        assert_eq!(target(&pool), Some(1));
    }

    #[tokio::test]
    async fn an_election_holds_and_a_dead_cluster_is_down() {
        let pool = pool(3).await;
        // The leader (11) is down; the others still name it, or none.
        set(
            &pool,
            &[
                (Some(true), Some(10), Some(11), 2),
                (Some(false), Some(11), Some(11), 2),
                (Some(true), Some(12), Some(0), 3),
            ],
        );
        assert!(matches!(pool.route(), Route::Hold(_)), "{:?}", pool.route());
        set(&pool, &[(Some(false), None, None, 0); 3]);
        assert!(matches!(pool.route(), Route::Down));
    }

    #[tokio::test]
    async fn a_leader_without_an_endpoint_is_reached_through_the_others() {
        let pool = pool(2).await;
        // Leader 99 is a member this pool was not given.
        set(
            &pool,
            &[
                (Some(true), Some(10), Some(99), 2),
                (Some(true), Some(11), Some(99), 2),
            ],
        );
        let targets: std::collections::HashSet<_> = (0..4).map(|_| target(&pool)).collect();
        assert_eq!(targets.len(), 2, "round-robin over both: {targets:?}");
    }

    #[tokio::test]
    async fn all_down_tries_each_member_once_then_fails_at_once() {
        let pool = pool(2).await;
        let started = std::time::Instant::now();
        let result = pool
            .run(
                Kind::Write,
                &|| "a test".to_owned(),
                |mut client| async move { client.put("k", "v", None).await },
            )
            .await;
        let Err(RunError::Store(StoreError::Unavailable { message })) = result else {
            panic!("{result:?}");
        };
        assert!(
            message.contains("no etcd member can be reached"),
            "{message}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
