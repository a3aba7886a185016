//! The reflector stage: a watch stream that keeps a [`Store`] up to date
//! on its way through.
//!
//! # Expected flow
//!
//! ```no_run
//! # async fn example(client: krake_client::Client) {
//! use futures::StreamExt;
//! use krake_client::{Api, WatchConfig};
//! use krake_controller::reflector::reflector;
//! use krake_controller::store::Writer;
//! use krake_data::kinds::kubernetes::Application;
//!
//! let apps: Api<Application> = Api::namespaced(client, "testing");
//! let writer = Writer::new().with_index("cluster", |app: &Application| {
//!     app.status.scheduled_to.iter().map(|c| c.name.clone()).collect()
//! });
//! let store = writer.reader();
//! let events = reflector(writer, apps.watch(WatchConfig::default()));
//! tokio::spawn(events.for_each(|_| async {}));
//! store.wait_ready().await.unwrap();
//! println!("{} applications on c1", store.index("cluster", "c1").len());
//! # }
//! ```
//!
//! # Guarantees
//!
//! - Each event is applied to the store *before* it is passed on, so a
//!   consumer reacting to an event finds the store already reflecting it.
//! - Errors pass through untouched (the client's watch keeps retrying after
//!   them); they change nothing in the store.
//! - The store is as fresh as the stream is polled: poll it continuously
//!   (for example in its own task) or it falls behind.
//!
//! [`Store`]: crate::store::Store

use futures::{Stream, TryStreamExt};
use krake_client::WatchEvent;
use krake_data::Resource;

use crate::store::Writer;

/// Applies every event of `events` to `writer`, then passes it on.
pub fn reflector<K, E, S>(
    mut writer: Writer<K>,
    events: S,
) -> impl Stream<Item = Result<WatchEvent<K>, E>>
where
    K: Resource,
    S: Stream<Item = Result<WatchEvent<K>, E>>,
{
    events.inspect_ok(move |event| writer.apply(event))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use futures::StreamExt;
    use krake_data::Metadata;
    use krake_data::kinds::core::Role;

    use super::*;

    fn role(name: &str) -> Role {
        Role {
            api: "core".into(),
            kind: "Role".into(),
            metadata: Metadata::named(name),
            rules: vec![],
        }
    }

    fn names(store: &crate::store::Store<Role>) -> Vec<String> {
        store
            .list()
            .iter()
            .map(|r| r.metadata.name.clone())
            .collect()
    }

    #[tokio::test]
    async fn events_are_applied_before_they_are_passed_on() {
        let events: Vec<Result<WatchEvent<Role>, &str>> = vec![
            Ok(WatchEvent::Restarted(vec![role("a"), role("b")])),
            Ok(WatchEvent::Added(role("c"))),
            Err("a watch error"),
            Ok(WatchEvent::Deleted(role("a"))),
            Ok(WatchEvent::Restarted(vec![role("d")])),
        ];
        let writer = Writer::new();
        let store = writer.reader();
        let mut stream = std::pin::pin!(reflector(writer, futures::stream::iter(events)));
        let mut seen = Vec::new();
        while let Some(item) = stream.next().await {
            seen.push((
                item.as_ref().map(WatchEvent::type_name).map_err(|e| *e),
                names(&store),
            ));
        }
        let expected: Vec<(Result<&str, &str>, Vec<&str>)> = vec![
            (Ok("RESTARTED"), vec!["a", "b"]),
            (Ok("ADDED"), vec!["a", "b", "c"]),
            (Err("a watch error"), vec!["a", "b", "c"]),
            (Ok("DELETED"), vec!["b", "c"]),
            (Ok("RESTARTED"), vec!["d"]),
        ];
        let expected: Vec<(Result<&str, &str>, Vec<String>)> = expected
            .into_iter()
            .map(|(t, n)| (t, n.into_iter().map(str::to_owned).collect()))
            .collect();
        assert_eq!(seen, expected);
        assert!(store.is_ready());
    }

    #[tokio::test]
    async fn errors_before_the_first_list_leave_it_unready() {
        let events: Vec<Result<WatchEvent<Role>, &str>> = vec![Err("401"), Err("401")];
        let writer = Writer::new();
        let store = writer.reader();
        let passed: Vec<_> = reflector(writer, futures::stream::iter(events))
            .collect()
            .await;
        assert_eq!(passed.len(), 2);
        assert!(!store.is_ready());
        // The stream (and with it the writer) is gone: waiting fails.
        assert!(store.wait_ready().await.is_err());
    }
}
