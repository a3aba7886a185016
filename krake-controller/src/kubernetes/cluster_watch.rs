//! One watch of a cluster kept alive: a `kube` watcher feeding a reflector
//! store until stopped, every event (errors included) handed to the caller,
//! and a failure followed by a short exponential backoff and a fresh list.
//!
//! The backoff is this module's own rather than `kube`'s `default_backoff`:
//! with that one, a watcher whose cluster refused a few connections was
//! seen not to try again at all once the cluster was back, and a cluster
//! that comes back must be seen within seconds.

use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::work_queue::BackoffPolicy;

/// The wait after consecutive failures: 250 ms doubling up to 5 s, with
/// jitter; any event resets it.
pub(crate) const WATCH_BACKOFF: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(5),
    factor: 2.0,
    jitter: true,
};

/// Keeps `writer`'s store equal to the objects of `api` until `stop` (or
/// until `on_event` answers `false`), calling `on_event` with every event
/// after the store has applied it.
///
/// After any error the watch starts over with a fresh list once the backoff
/// has passed, rather than resuming from its last resource version: a
/// resumed watch on an unchanged cluster yields nothing, so nobody would
/// learn that the cluster is back, while the list ends in `InitDone`.
pub(crate) async fn drive<K>(
    mut writer: Writer<K>,
    api: Api<K>,
    stop: CancellationToken,
    mut on_event: impl FnMut(Result<Event<K>, watcher::Error>) -> bool,
) where
    K: kube::Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let mut failures = 0u32;
    loop {
        let stream = watcher::watcher(api.clone(), watcher::Config::default());
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                () = stop.cancelled() => return,
            };
            // A watcher's stream does not end; if it did, start over.
            let Some(event) = event else { break };
            if let Ok(event) = &event {
                writer.apply_watcher_event(event);
            }
            let failed = event.is_err();
            if !on_event(event) {
                return;
            }
            if failed {
                break;
            }
            failures = 0;
        }
        failures = failures.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(WATCH_BACKOFF.delay(failures)) => {}
            () = stop.cancelled() => return,
        }
    }
}
