//! The `shutdown` hook: an application that asks for it (`spec.hooks`
//! contains `shutdown`) is asked to shut down gracefully before it is
//! deleted or migrated, as in Krake, with Krake's caveat fixed (a graceful
//! shutdown before a *migration* is recognised, through the
//! acknowledgement).
//!
//! # Flow
//!
//! 1. The application is deleted, or must migrate (`running_on` ≠
//!    `scheduled_to`), and its state is not yet READY_FOR_ACTION: state
//!    WAITING_FOR_CLEANING and `shutdown_grace_period = now + grace` are
//!    written to its status (grace: `spec.shutdown_grace_time`, else the
//!    controller's `hooks.shutdown.timeout`, default 30 s).
//! 2. Then a plain HTTP `PUT http://<status.services["shutdown"]>/shutdown`
//!    goes to the workload (the application exposes a Service named
//!    `shutdown`), in a task of its own, after the write guard
//!    ([`Client::may_write`](krake_client::Client::may_write)) allowed it.
//!    A missing service, a refused connection or an error answer is a
//!    failed attempt, logged with the reason; the grace period runs anyway.
//! 3. No worker waits: the reconcile asks to be run again when the grace
//!    period ends ([`Action::requeue`](crate::action::Action::requeue)). The workload's acknowledgement
//!    (`PUT …/shutdown {token}` to Krake's API, which moves the application
//!    to READY_FOR_ACTION) wakes it at once through the watch.
//! 4. READY_FOR_ACTION: the deletion or the migration proceeds. After a
//!    migration the state returns to RUNNING and `shutdown_grace_period` is
//!    cleared, so the next migration asks again.
//! 5. The grace period ends without an acknowledgement: the workload is
//!    asked again, `failure_retry_count` times (`spec.shutdown_retry_count`,
//!    else the controller's, default 0) with a fresh grace period each; then
//!    the failure strategy (`spec.shutdown_failure_strategy`, else the
//!    controller's, default `delete`): `delete` writes READY_FOR_ACTION
//!    itself and runs the deletion or the migration anyway; `give_up` sets
//!    DEGRADED with a reason naming the failed shutdown
//!    ([`GAVE_UP`]). `PUT …/retry` (DEGRADED → WAITING_FOR_CLEANING, grace
//!    period cleared) starts the flow again; a late acknowledgement
//!    (DEGRADED → READY_FOR_ACTION) lets it proceed.
//!
//! # State, and a restart of the controller
//!
//! Everything but one number lives in the application's status: the state
//! (WAITING_FOR_CLEANING, READY_FOR_ACTION, DEGRADED with [`GAVE_UP`]) and
//! the end of the grace period. A restarted controller waits for the rest of
//! a running grace period and does not ask again before its end. The number
//! of attempts of the current round is kept in the controller's memory
//! ([`ShutdownHook`]): a restart during a round starts that count again (at
//! one, the attempt whose grace period is running), so the workload may be
//! asked up to `failure_retry_count` more times than configured; never
//! fewer.
//!
//! Once the deletion (state DELETING) or the migration (state MIGRATING)
//! began, it is not asked again: a deletion or migration that fails half-way
//! and is retried goes on from there. An application deleted before it ran
//! anywhere (no `running_on`) has no workload to ask and is deleted at once.
//! Giving up clears the grace period, so that a deletion after a migration
//! that gave up asks afresh.
//!
//! The decision is a pure function, [`next_step`], of the application, the
//! time, the settings and the attempts so far.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use krake_data::kinds::kubernetes::{Application, ApplicationState};
use krake_data::{Reason, ReasonCode, Timestamp};

use crate::object_key::ObjectKey;

/// The hook's name in `spec.hooks`, and the name of the Service the
/// workload exposes for it.
pub const HOOK: &str = "shutdown";

/// The start of the message of the reason a given-up shutdown leaves on a
/// DEGRADED application.
pub const GAVE_UP: &str = "shutdown hook failed";

/// The longest grace period (ten years): longer ones are cut to it, so
/// that its end is a time the status can hold.
pub const MAX_GRACE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What happens when the application never acknowledges its shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailureStrategy {
    /// Delete or migrate anyway (Krake's default).
    #[default]
    Delete,
    /// DEGRADED; the user retries (`PUT …/retry`) or deletes.
    GiveUp,
}

impl FailureStrategy {
    /// Krake's spelling (`delete`, `give_up`); anything else is `None`.
    pub fn parse(text: &str) -> Option<FailureStrategy> {
        match text {
            "delete" => Some(FailureStrategy::Delete),
            "give_up" => Some(FailureStrategy::GiveUp),
            _ => None,
        }
    }

    /// Krake's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureStrategy::Delete => "delete",
            FailureStrategy::GiveUp => "give_up",
        }
    }
}

/// The controller's defaults of the hook (Krake's `hooks.shutdown` of
/// `kubernetes_application.yaml`); an application's spec overrides each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownSettings {
    /// How long the workload has to acknowledge (`timeout`, default 30 s).
    pub timeout: Duration,
    /// What happens when it never does (`failure_strategy`, default
    /// `delete`).
    pub failure_strategy: FailureStrategy,
    /// How many times it is asked again (`failure_retry_count`, default 0).
    pub failure_retry_count: u32,
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings {
            timeout: Duration::from_secs(30),
            failure_strategy: FailureStrategy::Delete,
            failure_retry_count: 0,
        }
    }
}

impl ShutdownSettings {
    /// The grace period of `app`: `spec.shutdown_grace_time` seconds (a
    /// negative value counts as 0), else the controller's timeout; at most
    /// [`MAX_GRACE`].
    pub fn grace(&self, app: &Application) -> Duration {
        let grace = match app.spec.shutdown_grace_time {
            Some(seconds) => Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
            None => self.timeout,
        };
        grace.min(MAX_GRACE)
    }

    /// The failure strategy of `app` (an unknown spelling in the spec,
    /// which the API refuses, falls back to the controller's).
    pub fn strategy(&self, app: &Application) -> FailureStrategy {
        app.spec
            .shutdown_failure_strategy
            .as_deref()
            .and_then(FailureStrategy::parse)
            .unwrap_or(self.failure_strategy)
    }

    /// How many times `app` is asked again (a negative value counts as 0).
    pub fn retries(&self, app: &Application) -> u32 {
        match app.spec.shutdown_retry_count {
            Some(count) => u32::try_from(count.max(0)).unwrap_or(u32::MAX),
            None => self.failure_retry_count,
        }
    }
}

/// Why the hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The application was deleted.
    Deletion,
    /// The application must move to another cluster.
    Migration,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Deletion => "deletion",
            Purpose::Migration => "migration",
        }
    }
}

/// What to do next; see [`next_step`].
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Go ahead with the deletion or migration: no shutdown hook, the
    /// application acknowledged (READY_FOR_ACTION), or the deletion or
    /// migration already began.
    Proceed,
    /// Ask the workload (`attempt`, from 1): write WAITING_FOR_CLEANING with
    /// this grace period, send the request, look again when it ends.
    Ask {
        /// Which attempt of the round this is, from 1.
        attempt: u32,
        /// The end of the new grace period.
        grace_period: Timestamp,
        /// Its length.
        grace: Duration,
    },
    /// Within the grace period: look again after this long (the
    /// acknowledgement wakes the application sooner).
    Wait(Duration),
    /// Out of attempts with the strategy `delete`: write READY_FOR_ACTION
    /// and go ahead.
    Force,
    /// Out of attempts with the strategy `give_up`: DEGRADED with this
    /// reason.
    GiveUp(Reason),
    /// Given up before: nothing until the user retries or the application
    /// acknowledges late.
    GivenUp,
}

/// Whether `app` asks for the shutdown hook.
pub fn enabled(app: &Application) -> bool {
    app.spec.hooks.iter().any(|hook| hook == HOOK)
}

/// Whether `app`'s DEGRADED state is a given-up shutdown.
pub fn given_up(app: &Application) -> bool {
    app.status.state == ApplicationState::Degraded
        && app
            .status
            .reason
            .as_ref()
            .is_some_and(|reason| reason.message.starts_with(GAVE_UP))
}

/// Whether the shutdown of `app` for `purpose` is over and the deletion or
/// migration may go on (or already goes on).
pub fn past(app: &Application, purpose: Purpose) -> bool {
    match app.status.state {
        ApplicationState::ReadyForAction => true,
        ApplicationState::Deleting => purpose == Purpose::Deletion,
        ApplicationState::Migrating => purpose == Purpose::Migration,
        _ => false,
    }
}

/// The next step of the hook for `app` (deleted or migrating, as `purpose`
/// says) at `now`, with the controller's `settings`, after `attempts`
/// requests of the current round (as far as this controller knows; 0 when
/// it does not).
pub fn next_step(
    app: &Application,
    purpose: Purpose,
    now: Timestamp,
    settings: &ShutdownSettings,
    attempts: u32,
) -> Step {
    if !enabled(app) || past(app, purpose) {
        return Step::Proceed;
    }
    // Deleted before it ran anywhere: no workload to ask.
    if purpose == Purpose::Deletion && app.status.running_on.is_none() {
        return Step::Proceed;
    }
    if given_up(app) {
        return Step::GivenUp;
    }
    let grace = settings.grace(app);
    let ask = |attempt| Step::Ask {
        attempt,
        grace_period: now + chrono::TimeDelta::from_std(grace).unwrap_or(chrono::TimeDelta::MAX),
        grace,
    };
    let (ApplicationState::WaitingForCleaning, Some(end)) =
        (app.status.state, app.status.shutdown_grace_period)
    else {
        // Not asked yet, or asked again by the user (`/retry` clears the
        // grace period).
        return ask(1);
    };
    if now < end {
        return Step::Wait((end - now).to_std().unwrap_or(Duration::ZERO));
    }
    // A grace period ran out: at least one attempt was made, even if this
    // controller (restarted) does not remember it.
    let made = attempts.max(1);
    if made <= settings.retries(app) {
        return ask(made + 1);
    }
    match settings.strategy(app) {
        FailureStrategy::Delete => Step::Force,
        FailureStrategy::GiveUp => Step::GiveUp(Reason::new(
            match purpose {
                Purpose::Deletion => ReasonCode::DeleteFailed,
                Purpose::Migration => ReasonCode::ReconcileFailed,
            },
            format!(
                "{GAVE_UP}: the application did not acknowledge its shutdown before its {} \
                 ({made} attempt(s), {} s each; failure strategy give_up); \
                 PUT .../retry asks again",
                purpose.as_str(),
                grace.as_secs_f64(),
            ),
        )),
    }
}

/// The hook's runtime: settings, an HTTP client for the workloads, and the
/// attempts of the current rounds (in memory; see the module docs).
#[derive(Debug)]
pub struct ShutdownHook {
    settings: ShutdownSettings,
    http: reqwest::Client,
    attempts: Mutex<HashMap<ObjectKey, u32>>,
}

impl ShutdownHook {
    /// The hook with these settings.
    pub fn new(settings: ShutdownSettings) -> ShutdownHook {
        // Like Krake's aiohttp session: no proxies from the environment.
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        ShutdownHook {
            settings,
            http,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &ShutdownSettings {
        &self.settings
    }

    /// The next step for `app` now (see [`next_step`]).
    pub fn next_step(&self, key: &ObjectKey, app: &Application, purpose: Purpose) -> Step {
        let attempts = self
            .attempts
            .lock()
            .ok()
            .and_then(|attempts| attempts.get(key).copied())
            .unwrap_or(0);
        next_step(app, purpose, Timestamp::now(), &self.settings, attempts)
    }

    /// Records that attempt `attempt` of `key`'s round was made.
    pub fn record(&self, key: &ObjectKey, attempt: u32) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.insert(key.clone(), attempt);
        }
    }

    /// Forgets `key`'s round (it ended).
    pub fn forget(&self, key: &ObjectKey) {
        if let Ok(mut attempts) = self.attempts.lock() {
            attempts.remove(key);
        }
    }

    /// Sends `PUT http://<endpoint>/shutdown` to `app`'s workload in a task
    /// of its own (at most `grace` long, and 30 s); the outcome is logged.
    /// The caller asked the write guard first.
    pub fn request(&self, app: &Application, attempt: u32, grace: Duration) {
        let name = app.metadata.name.clone();
        let namespace = app.metadata.namespace.clone().unwrap_or_default();
        let Some(endpoint) = app.status.services.get(HOOK) else {
            tracing::warn!(
                namespace = %namespace,
                application = %name,
                attempt,
                "shutdown request not sent: the application exposes no Service named \
                 'shutdown' (status.services); a failed attempt"
            );
            return;
        };
        let url = format!("http://{endpoint}/shutdown");
        let timeout = grace.clamp(Duration::from_secs(1), Duration::from_secs(30));
        let request = self.http.put(&url).timeout(timeout);
        tracing::info!(
            namespace = %namespace,
            application = %name,
            attempt,
            url = %url,
            "asking the application to shut down"
        );
        tokio::spawn(async move {
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    tracing::debug!(
                        namespace = %namespace,
                        application = %name,
                        attempt,
                        status = %response.status(),
                        "shutdown request accepted"
                    );
                }
                Ok(response) => tracing::warn!(
                    namespace = %namespace,
                    application = %name,
                    attempt,
                    url = %url,
                    status = %response.status(),
                    "shutdown request refused by the application; a failed attempt"
                ),
                Err(err) => tracing::warn!(
                    namespace = %namespace,
                    application = %name,
                    attempt,
                    url = %url,
                    error = %err,
                    "shutdown request failed; a failed attempt"
                ),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(hooks: &[&str], state: ApplicationState) -> Application {
        let mut app: Application = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "testing"},
            "spec": {"manifest": [], "constraints": {"cluster": {}}, "hooks": hooks},
        }))
        .expect("an application");
        app.status.state = state;
        app.status.running_on = Some(krake_data::ResourceRef::new(
            "kubernetes",
            "Cluster",
            Some("testing".into()),
            "a",
        ));
        app
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_datetime(
            chrono::DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("a time"),
        )
    }

    fn waiting(grace_period: Timestamp) -> Application {
        let mut app = app(&["shutdown"], ApplicationState::WaitingForCleaning);
        app.status.shutdown_grace_period = Some(grace_period);
        app
    }

    const SETTINGS: ShutdownSettings = ShutdownSettings {
        timeout: Duration::from_secs(30),
        failure_strategy: FailureStrategy::Delete,
        failure_retry_count: 0,
    };

    #[test]
    fn without_the_hook_the_deletion_and_migration_go_ahead() {
        for hooks in [&[][..], &["complete"][..]] {
            let app = app(hooks, ApplicationState::Running);
            for purpose in [Purpose::Deletion, Purpose::Migration] {
                assert_eq!(next_step(&app, purpose, at(0), &SETTINGS, 0), Step::Proceed);
            }
        }
    }

    #[test]
    fn a_running_application_is_asked_with_the_configured_grace_period() {
        for state in [
            ApplicationState::Running,
            ApplicationState::Reconciling,
            ApplicationState::Degraded,
            ApplicationState::Pending,
        ] {
            let app = app(&["complete", "shutdown"], state);
            assert_eq!(
                next_step(&app, Purpose::Deletion, at(0), &SETTINGS, 0),
                Step::Ask {
                    attempt: 1,
                    grace_period: at(30),
                    grace: Duration::from_secs(30),
                },
                "{state:?}"
            );
        }
    }

    #[test]
    fn the_spec_grace_time_wins_over_the_configuration() {
        let mut app = app(&["shutdown"], ApplicationState::Running);
        app.spec.shutdown_grace_time = Some(5);
        assert_eq!(
            next_step(&app, Purpose::Migration, at(0), &SETTINGS, 0),
            Step::Ask {
                attempt: 1,
                grace_period: at(5),
                grace: Duration::from_secs(5),
            }
        );
    }

    #[test]
    fn an_absurd_grace_time_is_cut_to_ten_years() {
        let mut app = app(&["shutdown"], ApplicationState::Running);
        app.spec.shutdown_grace_time = Some(i64::MAX);
        let Step::Ask {
            grace_period,
            grace,
            ..
        } = next_step(&app, Purpose::Deletion, at(0), &SETTINGS, 0)
        else {
            panic!("asks");
        };
        assert_eq!(grace, MAX_GRACE);
        assert!(grace_period > at(0));
        app.spec.shutdown_grace_time = Some(-5);
        assert!(matches!(
            next_step(&app, Purpose::Deletion, at(0), &SETTINGS, 0),
            Step::Ask {
                grace: Duration::ZERO,
                ..
            }
        ));
    }

    #[test]
    fn within_the_grace_period_it_waits_for_the_rest_of_it() {
        let app = waiting(at(30));
        assert_eq!(
            next_step(&app, Purpose::Deletion, at(10), &SETTINGS, 1),
            Step::Wait(Duration::from_secs(20))
        );
        // A restarted controller (no attempts known) waits as well.
        assert_eq!(
            next_step(&app, Purpose::Deletion, at(29), &SETTINGS, 0),
            Step::Wait(Duration::from_secs(1))
        );
    }

    #[test]
    fn an_acknowledged_or_begun_deletion_or_migration_goes_ahead() {
        let ready = app(&["shutdown"], ApplicationState::ReadyForAction);
        assert_eq!(
            next_step(&ready, Purpose::Deletion, at(0), &SETTINGS, 1),
            Step::Proceed
        );
        assert_eq!(
            next_step(&ready, Purpose::Migration, at(0), &SETTINGS, 1),
            Step::Proceed
        );
        let deleting = app(&["shutdown"], ApplicationState::Deleting);
        assert_eq!(
            next_step(&deleting, Purpose::Deletion, at(0), &SETTINGS, 0),
            Step::Proceed
        );
        let migrating = app(&["shutdown"], ApplicationState::Migrating);
        assert_eq!(
            next_step(&migrating, Purpose::Migration, at(0), &SETTINGS, 0),
            Step::Proceed
        );
        // A deletion while a migration was under way asks first.
        assert!(matches!(
            next_step(&migrating, Purpose::Deletion, at(0), &SETTINGS, 0),
            Step::Ask { attempt: 1, .. }
        ));
    }

    #[test]
    fn after_the_grace_period_it_asks_again_while_retries_are_left() {
        let settings = ShutdownSettings {
            failure_retry_count: 2,
            ..SETTINGS
        };
        let app = waiting(at(30));
        assert_eq!(
            next_step(&app, Purpose::Deletion, at(30), &settings, 1),
            Step::Ask {
                attempt: 2,
                grace_period: at(60),
                grace: Duration::from_secs(30),
            }
        );
        assert!(matches!(
            next_step(&app, Purpose::Deletion, at(31), &settings, 2),
            Step::Ask { attempt: 3, .. }
        ));
        assert_eq!(
            next_step(&app, Purpose::Deletion, at(31), &settings, 3),
            Step::Force
        );
        // Unknown attempts (a restart): the running one counted.
        assert!(matches!(
            next_step(&app, Purpose::Deletion, at(31), &settings, 0),
            Step::Ask { attempt: 2, .. }
        ));
    }

    #[test]
    fn the_spec_retry_count_and_strategy_win_over_the_configuration() {
        let mut app = waiting(at(30));
        app.spec.shutdown_retry_count = Some(1);
        assert!(matches!(
            next_step(&app, Purpose::Deletion, at(40), &SETTINGS, 1),
            Step::Ask { attempt: 2, .. }
        ));
        app.spec.shutdown_failure_strategy = Some("give_up".into());
        let Step::GiveUp(reason) = next_step(&app, Purpose::Migration, at(40), &SETTINGS, 2) else {
            panic!("gives up");
        };
        assert!(reason.message.starts_with(GAVE_UP), "{}", reason.message);
        assert!(reason.message.contains("migration"), "{}", reason.message);
        assert_eq!(reason.code, ReasonCode::ReconcileFailed);
    }

    #[test]
    fn out_of_attempts_the_strategy_decides() {
        let app = waiting(at(30));
        assert_eq!(
            next_step(&app, Purpose::Deletion, at(30), &SETTINGS, 1),
            Step::Force
        );
        let give_up = ShutdownSettings {
            failure_strategy: FailureStrategy::GiveUp,
            ..SETTINGS
        };
        let Step::GiveUp(reason) = next_step(&app, Purpose::Deletion, at(30), &give_up, 1) else {
            panic!("gives up");
        };
        assert_eq!(reason.code, ReasonCode::DeleteFailed);
        assert!(reason.message.contains("deletion"), "{}", reason.message);
    }

    #[test]
    fn a_given_up_shutdown_waits_for_the_user_and_a_retry_starts_again() {
        let mut app = waiting(at(30));
        app.status.state = ApplicationState::Degraded;
        app.status.reason = Some(Reason::new(
            ReasonCode::DeleteFailed,
            format!("{GAVE_UP}: no answer"),
        ));
        assert_eq!(
            next_step(&app, Purpose::Deletion, at(100), &SETTINGS, 1),
            Step::GivenUp
        );
        // `PUT .../retry`: WAITING_FOR_CLEANING without a grace period.
        app.status.state = ApplicationState::WaitingForCleaning;
        app.status.shutdown_grace_period = None;
        assert!(matches!(
            next_step(&app, Purpose::Deletion, at(100), &SETTINGS, 1),
            Step::Ask { attempt: 1, .. }
        ));
        // A late acknowledgement: READY_FOR_ACTION.
        app.status.state = ApplicationState::ReadyForAction;
        assert_eq!(
            next_step(&app, Purpose::Deletion, at(100), &SETTINGS, 1),
            Step::Proceed
        );
    }

    #[test]
    fn a_degraded_application_for_another_reason_is_asked() {
        let mut app = app(&["shutdown"], ApplicationState::Degraded);
        app.status.reason = Some(Reason::new(
            ReasonCode::ClusterNotReachable,
            "connection refused",
        ));
        assert!(matches!(
            next_step(&app, Purpose::Migration, at(0), &SETTINGS, 0),
            Step::Ask { attempt: 1, .. }
        ));
    }

    #[test]
    fn a_stale_grace_period_outside_the_flow_starts_a_new_round() {
        // A migration that was called off left its grace period; the next
        // one asks afresh.
        let mut app = app(&["shutdown"], ApplicationState::Running);
        app.status.shutdown_grace_period = Some(at(-100));
        assert!(matches!(
            next_step(&app, Purpose::Migration, at(0), &SETTINGS, 3),
            Step::Ask { attempt: 1, .. }
        ));
    }

    #[test]
    fn failure_strategies_have_krakes_spellings() {
        for strategy in [FailureStrategy::Delete, FailureStrategy::GiveUp] {
            assert_eq!(FailureStrategy::parse(strategy.as_str()), Some(strategy));
        }
        assert_eq!(FailureStrategy::parse("never"), None);
    }

    #[test]
    fn an_application_that_never_ran_is_deleted_at_once() {
        let mut app = app(&["shutdown"], ApplicationState::WaitingForCleaning);
        app.status.running_on = None;
        assert_eq!(
            next_step(&app, Purpose::Deletion, at(0), &SETTINGS, 0),
            Step::Proceed
        );
    }
}
