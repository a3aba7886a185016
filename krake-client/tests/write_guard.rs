//! The write guard: a refused write never reaches the server; reads and
//! watches are not guarded; an allowed write goes out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use krake_client::{Client, DeleteParams, DynamicApi, Error, WriteGuard};
use krake_data::registry;
use serde_json::json;
use support::counting_server;

#[derive(Debug, Default)]
struct Switch {
    open: AtomicBool,
    asked: AtomicUsize,
}

impl WriteGuard for Switch {
    fn check(&self) -> Result<(), String> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        if self.open.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("lease lost".to_owned())
        }
    }
}

#[tokio::test]
async fn a_refused_write_is_never_sent_and_reads_are_not_guarded() {
    let (address, counts) = counting_server().await;
    let guard = Arc::new(Switch::default());
    let client = Client::builder(format!("http://{address}"))
        .write_guard(guard.clone())
        .build()
        .unwrap();
    let roles = DynamicApi::new(client, registry::by_plural("core", "roles").unwrap(), None);
    let role = json!({"api": "core", "kind": "Role", "metadata": {"name": "r"}, "rules": []});

    let refused = roles.create(&role).await.unwrap_err();
    assert!(
        matches!(&refused, Error::WriteRefused { reason } if reason == "lease lost"),
        "{refused:?}"
    );
    assert_eq!(refused.to_string(), "write refused: lease lost");
    assert!(!refused.is_transient());
    assert!(roles.update(&role).await.is_err());
    assert!(roles.delete("r", &DeleteParams::default()).await.is_err());
    assert_eq!(counts.writes.load(Ordering::SeqCst), 0, "nothing was sent");
    assert_eq!(guard.asked.load(Ordering::SeqCst), 3);

    roles.get("r").await.unwrap();
    roles.list(&Default::default()).await.unwrap();
    assert_eq!(counts.reads.load(Ordering::SeqCst), 2, "reads go out");
    assert_eq!(
        guard.asked.load(Ordering::SeqCst),
        3,
        "reads are not guarded"
    );

    guard.open.store(true, Ordering::SeqCst);
    roles.create(&role).await.unwrap();
    roles.update(&role).await.unwrap();
    assert_eq!(counts.writes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn with_write_guard_guards_only_the_clone() {
    let (address, counts) = counting_server().await;
    let plain = Client::new(&format!("http://{address}")).unwrap();
    let guarded = plain.with_write_guard(Arc::new(Switch::default()));
    let kind = registry::by_plural("core", "roles").unwrap();
    let role = json!({"api": "core", "kind": "Role", "metadata": {"name": "r"}, "rules": []});

    let err = DynamicApi::new(guarded, kind, None)
        .create(&role)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WriteRefused { .. }), "{err:?}");
    assert_eq!(counts.writes.load(Ordering::SeqCst), 0);
    DynamicApi::new(plain, kind, None)
        .create(&role)
        .await
        .unwrap();
    assert_eq!(counts.writes.load(Ordering::SeqCst), 1);
}
