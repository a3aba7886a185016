//! The finalizer helper against the fake API: two controllers share
//! Krake's finalizer stack and clean up in the right order.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use krake_client::{Api, DeleteParams};
use krake_controller::Action;
use krake_controller::finalizer::{Event, FinalizerError, finalizer};
use krake_controller::testing::FakeApi;
use krake_data::kinds::core::Role;
use krake_data::metadata::Metadata;

#[derive(Debug, thiserror::Error)]
#[error("cleanup refused")]
struct Refused;

/// Runs one controller's finalizer step on the current object; records
/// what it was asked to do.
async fn step(
    roles: &Api<Role>,
    controller: &'static str,
    log: &Arc<Mutex<Vec<String>>>,
    fail_cleanup: bool,
) -> Result<Action, FinalizerError<Refused>> {
    let current = Arc::new(roles.get("r").await.unwrap());
    let log = log.clone();
    finalizer(roles, controller, current, move |event| async move {
        match event {
            Event::Apply(_) => {
                log.lock().unwrap().push(format!("{controller}: apply"));
                Ok(Action::await_change())
            }
            Event::Cleanup(_) if fail_cleanup => Err(Refused),
            Event::Cleanup(_) => {
                log.lock().unwrap().push(format!("{controller}: cleanup"));
                Ok(Action::await_change())
            }
        }
    })
    .await
}

#[tokio::test]
async fn two_controllers_share_the_stack_in_order() {
    let api = FakeApi::start().await;
    let roles: Api<Role> = Api::all(api.client().unwrap());
    roles
        .create(&Role::new(Metadata::named("r"), vec![]))
        .await
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));

    assert_eq!(
        step(&roles, "x", &log, false).await.unwrap(),
        Action::await_change()
    );
    assert_eq!(
        step(&roles, "y", &log, false).await.unwrap(),
        Action::await_change()
    );
    // Rerunning adds nothing twice.
    assert_eq!(
        step(&roles, "x", &log, false).await.unwrap(),
        Action::await_change()
    );
    assert_eq!(
        roles.get("r").await.unwrap().metadata.finalizers,
        ["x", "y"]
    );

    roles.delete("r", &DeleteParams::default()).await.unwrap();
    let deleted = roles.get("r").await.unwrap();
    assert_eq!(deleted.metadata.finalizers, ["x", "y", "cascade_deletion"]);
    // The garbage collector's turn first: neither cleans up.
    assert_eq!(
        step(&roles, "x", &log, false).await.unwrap(),
        Action::await_change()
    );
    assert_eq!(
        step(&roles, "y", &log, false).await.unwrap(),
        Action::await_change()
    );
    let mut gc_done = roles.get("r").await.unwrap();
    gc_done.metadata.finalizers.pop();
    roles.update(&gc_done).await.unwrap();

    // x is not at the tail: it waits; y's cleanup fails and keeps y.
    assert_eq!(
        step(&roles, "x", &log, false).await.unwrap(),
        Action::await_change()
    );
    let err = step(&roles, "y", &log, true).await.unwrap_err();
    assert!(matches!(err, FinalizerError::Cleanup(Refused)), "{err}");
    assert_eq!(
        roles.get("r").await.unwrap().metadata.finalizers,
        ["x", "y"]
    );
    // Then y cleans up and pops, then x, and the object is gone.
    assert_eq!(
        step(&roles, "y", &log, false).await.unwrap(),
        Action::await_change()
    );
    assert_eq!(
        step(&roles, "x", &log, false).await.unwrap(),
        Action::await_change()
    );
    let gone = roles.get("r").await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");

    assert_eq!(
        *log.lock().unwrap(),
        [
            "x: apply",
            "y: apply",
            "x: apply",
            "y: cleanup",
            "x: cleanup"
        ]
    );
}

#[tokio::test]
async fn a_stale_object_is_refused_not_overwritten() {
    let api = FakeApi::start().await;
    let roles: Api<Role> = Api::all(api.client().unwrap());
    let created = roles
        .create(&Role::new(Metadata::named("r"), vec![]))
        .await
        .unwrap();
    // Someone changes the object after we read it.
    let mut changed = created.clone();
    changed.metadata.labels.insert("k".into(), "v".into());
    roles.update(&changed).await.unwrap();
    let err = finalizer(&roles, "x", Arc::new(created), |_| async {
        Ok::<_, Refused>(Action::await_change())
    })
    .await
    .unwrap_err();
    match err {
        FinalizerError::AddFinalizer(err) => assert!(err.is_conflict(), "{err}"),
        other => panic!("{other}"),
    }
    let current = roles.get("r").await.unwrap();
    assert!(current.metadata.finalizers.is_empty());
    assert_eq!(current.metadata.labels["k"], "v");
}
