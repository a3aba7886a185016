//! One store watch per kind, shared by every HTTP watcher of that kind.
//!
//! The hub keeps, per store prefix (one per kind, across all namespaces), a
//! single [`Store::watch`] and fans its events out through a broadcast
//! channel. Each event is decoded and serialized once, however many clients
//! watch. A bounded buffer of recent events lets a client resume from a
//! `resource_version` without touching the store; an older version falls back
//! to a dedicated store watch (which answers 410 once the store compacted it).
//!
//! Guarantees to a subscriber: events in revision order, none twice, none
//! missing. A subscriber that falls more than the channel's capacity behind is
//! cut off ([`HubError::Lagged`]) instead of slowing the others or growing
//! memory; it can resume from the last revision it saw.
//!
//! If the store watch fails (the store is down), the hub reconnects with
//! backoff from the last revision it saw; subscribers just wait. If that
//! revision was compacted meanwhile, every subscriber is ended
//! ([`HubError::Reset`]) so clients relist.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use krake_data::WatchEventType;
use krake_data::metadata::Labels;
use krake_store::{EventKind, Revision, Store, StoreError, StoreEvent};
use serde_json::Value;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::object;
use crate::problem::ApiError;

/// One change, decoded and serialized once for every watcher.
///
/// It keeps the encoded line (shared by every stream that writes it) and
/// what watchers filter on (namespace, labels), not the decoded object: a
/// decoded `serde_json::Value` takes several times the memory of its JSON,
/// and the hub keeps thousands of recent items for resumes. Code that needs
/// the object ([`WatchItem::object`], or `item.object` through
/// [`LazyObject`]'s `Deref`) decodes it from the line on first use.
#[derive(Debug)]
pub struct WatchItem {
    /// The store revision of the change (the object's resource version).
    pub revision: Revision,
    /// ADDED, MODIFIED or DELETED.
    pub event_type: WatchEventType,
    /// The object (for DELETED, as it was just before deletion), decoded
    /// from [`line`](Self::line) when first needed.
    pub object: LazyObject,
    /// The object's namespace.
    pub namespace: Option<String>,
    /// The object's labels, for label selectors.
    pub labels: Labels,
    /// The object's store key.
    pub key: String,
    /// The watch stream line: `{"type": ..., "object": ...}` and a newline.
    pub line: Bytes,
}

impl WatchItem {
    /// Decodes a store event.
    pub fn from_store_event(event: &StoreEvent) -> Result<Self, ApiError> {
        let event_type = match event.kind {
            EventKind::Delete => WatchEventType::Deleted,
            EventKind::Put if event.is_create() => WatchEventType::Added,
            EventKind::Put => WatchEventType::Modified,
        };
        let object = object::decode(&event.kv.value, event.revision())?;
        let namespace = object::namespace(&object).map(str::to_owned);
        let labels = object::labels(&object);
        let mut line = serde_json::to_vec(&Line {
            event_type,
            object: &object,
        })
        .map_err(|err| ApiError::Internal(err.to_string()))?;
        line.push(b'\n');
        let line = Bytes::from(line);
        Ok(WatchItem {
            revision: event.revision(),
            event_type,
            object: LazyObject {
                line: line.clone(),
                decoded: OnceLock::new(),
            },
            namespace,
            labels,
            key: event.kv.key.clone(),
            line,
        })
    }

    /// The object, decoded afresh from the line (not kept in the item).
    pub fn decode_object(&self) -> Value {
        self.object.decode()
    }

    /// Roughly the memory the item holds, for the replay buffer's bound.
    fn footprint(&self) -> usize {
        let labels: usize = self
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + 64)
            .sum();
        std::mem::size_of::<Self>()
            + self.line.len()
            + self.key.len()
            + self.namespace.as_ref().map_or(0, String::len)
            + labels
    }
}

/// The serialized form of a watch line.
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    event_type: WatchEventType,
    object: &'a Value,
}

/// The object of a [`WatchItem`], decoded from its line on first access
/// and then kept (so use [`WatchItem::decode_object`] for items that stay
/// in the replay buffer and are read once).
pub struct LazyObject {
    line: Bytes,
    decoded: OnceLock<Value>,
}

impl LazyObject {
    fn decode(&self) -> Value {
        #[derive(serde::Deserialize)]
        struct Object {
            object: Value,
        }
        // The line was serialized from a Value by the hub: it always parses.
        serde_json::from_slice::<Object>(&self.line)
            .map(|line| line.object)
            .unwrap_or(Value::Null)
    }
}

impl std::ops::Deref for LazyObject {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.decoded.get_or_init(|| self.decode())
    }
}

impl std::fmt::Debug for LazyObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyObject")
            .field("bytes", &self.line.len())
            .field("decoded", &self.decoded.get().is_some())
            .finish()
    }
}

impl std::fmt::Display for LazyObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&**self, f)
    }
}

/// Why a subscription ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The subscriber fell too far behind.
    #[error("watcher fell {0} events behind and was cut off")]
    Lagged(u64),
    /// The store's history was compacted while the hub was disconnected.
    #[error("the store history was compacted; relist")]
    Reset,
    /// The store failed for a dedicated (resume) watch.
    #[error("store watch failed: {0}")]
    Store(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Shutdown,
}

/// A stream of changes for one subscriber.
pub type Subscription = BoxStream<'static, Result<Arc<WatchItem>, HubError>>;

#[derive(Clone, Debug)]
enum Message {
    Event(Arc<WatchItem>),
    Reset,
}

#[derive(Debug)]
struct EntryState {
    /// Recent events, oldest first.
    buffer: VecDeque<Arc<WatchItem>>,
    /// The sum of their footprints.
    buffer_bytes: usize,
    /// Every event with a revision greater than this is in `buffer` or still to come.
    covered_after: Revision,
    /// The last revision the hub saw (or started from).
    last_revision: Revision,
}

#[derive(Debug)]
struct Entry {
    sender: broadcast::Sender<Message>,
    state: Mutex<EntryState>,
}

/// Settings of the hub.
#[derive(Debug, Clone, Copy)]
pub struct HubConfig {
    /// Recent events kept per prefix for resume (at most).
    pub replay_buffer: usize,
    /// The most memory, in bytes, those events may take per prefix (their
    /// encoded lines and what watchers filter on); the oldest go first.
    pub replay_buffer_bytes: usize,
    /// How far a subscriber may fall behind.
    pub channel_capacity: usize,
}

/// The shared watches of one API server.
#[derive(Debug, Clone)]
pub struct WatchHub {
    store: Arc<dyn Store>,
    entries: Arc<tokio::sync::Mutex<HashMap<String, Arc<Entry>>>>,
    config: HubConfig,
    shutdown: CancellationToken,
}

impl WatchHub {
    /// A hub over `store`; its watches stop when `shutdown` is cancelled.
    pub fn new(store: Arc<dyn Store>, config: HubConfig, shutdown: CancellationToken) -> Self {
        WatchHub {
            store,
            entries: Arc::default(),
            config,
            shutdown,
        }
    }

    /// Changes under `prefix` with a revision greater than `after` (`None`:
    /// from now on).
    pub async fn subscribe(
        &self,
        prefix: &str,
        after: Option<Revision>,
    ) -> Result<Subscription, ApiError> {
        let entry = self.entry(prefix).await?;
        enum Start {
            Shared(broadcast::Receiver<Message>, Vec<Arc<WatchItem>>, Revision),
            Dedicated,
        }
        let start = {
            let state = entry
                .state
                .lock()
                .map_err(|_| ApiError::Internal("watch hub lock poisoned".into()))?;
            match after {
                None => Start::Shared(entry.sender.subscribe(), Vec::new(), state.last_revision),
                Some(after) if after >= state.covered_after => {
                    let replay: Vec<_> = state
                        .buffer
                        .iter()
                        .filter(|item| item.revision > after)
                        .cloned()
                        .collect();
                    Start::Shared(
                        entry.sender.subscribe(),
                        replay,
                        after.max(state.last_revision),
                    )
                }
                Some(_) => Start::Dedicated,
            }
        };
        let (receiver, replay, from) = match (start, after) {
            (Start::Shared(receiver, replay, from), _) => (receiver, replay, from),
            (Start::Dedicated, Some(after)) => return self.dedicated(prefix, after).await,
            (Start::Dedicated, None) => unreachable!("a watch from now is always shared"),
        };
        let live = futures::stream::unfold(
            (receiver, from, false),
            |(mut receiver, mut last, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match receiver.recv().await {
                        Ok(Message::Event(item)) if item.revision <= last => continue,
                        Ok(Message::Event(item)) => {
                            last = item.revision;
                            return Some((Ok(item), (receiver, last, false)));
                        }
                        Ok(Message::Reset) => {
                            return Some((Err(HubError::Reset), (receiver, last, true)));
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            return Some((Err(HubError::Lagged(n)), (receiver, last, true)));
                        }
                        Err(broadcast::error::RecvError::Closed) => {
                            return Some((Err(HubError::Shutdown), (receiver, last, true)));
                        }
                    }
                }
            },
        );
        let stream = futures::stream::iter(replay.into_iter().map(Ok)).chain(live);
        Ok(self.until_shutdown(stream.boxed()))
    }

    fn until_shutdown(&self, stream: Subscription) -> Subscription {
        let shutdown = self.shutdown.clone();
        stream
            .take_until(async move { shutdown.cancelled_owned().await })
            .boxed()
    }

    /// A watch of its own for a resume older than the hub's buffer.
    async fn dedicated(&self, prefix: &str, after: Revision) -> Result<Subscription, ApiError> {
        let mut stream = self.store.watch(prefix, Some(after)).await?;
        // Some stores (etcd) report a compacted start as the first item: peek
        // at it, so that the client gets 410 rather than an empty stream.
        let first = match tokio::time::timeout(Duration::from_millis(250), stream.next()).await {
            Ok(Some(Err(StoreError::Compacted { requested, oldest }))) => {
                return Err(ApiError::Gone { requested, oldest });
            }
            Ok(Some(Err(err))) => return Err(err.into()),
            Ok(Some(Ok(event))) => Some(Ok(event)),
            Ok(None) => None,
            Err(_) => None,
        };
        let stream = futures::stream::iter(first).chain(stream);
        let stream = stream.map(|event| match event {
            Ok(event) => WatchItem::from_store_event(&event)
                .map(Arc::new)
                .map_err(|err| HubError::Store(err.to_string())),
            Err(StoreError::Compacted { .. }) => Err(HubError::Reset),
            Err(err) => Err(HubError::Store(err.to_string())),
        });
        // End the stream after its first error.
        let stream = stream.scan(false, |failed, item| {
            if *failed {
                return futures::future::ready(None);
            }
            *failed = item.is_err();
            futures::future::ready(Some(item))
        });
        Ok(self.until_shutdown(stream.boxed()))
    }

    async fn entry(&self, prefix: &str) -> Result<Arc<Entry>, ApiError> {
        let mut entries = self.entries.lock().await;
        if let Some(entry) = entries.get(prefix) {
            return Ok(entry.clone());
        }
        let start = self.store.revision().await?;
        let (sender, _) = broadcast::channel(self.config.channel_capacity.max(1));
        let entry = Arc::new(Entry {
            sender,
            state: Mutex::new(EntryState {
                buffer: VecDeque::new(),
                buffer_bytes: 0,
                covered_after: start,
                last_revision: start,
            }),
        });
        entries.insert(prefix.to_owned(), entry.clone());
        tokio::spawn(run_entry(
            self.store.clone(),
            prefix.to_owned(),
            entry.clone(),
            self.config,
            self.shutdown.clone(),
        ));
        Ok(entry)
    }
}

/// Feeds one entry from its store watch until shutdown, reconnecting as needed.
async fn run_entry(
    store: Arc<dyn Store>,
    prefix: String,
    entry: Arc<Entry>,
    config: HubConfig,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let after = match entry.state.lock() {
            Ok(state) => state.last_revision,
            Err(_) => return,
        };
        let watch = tokio::select! {
            _ = shutdown.cancelled() => return,
            watch = store.watch(&prefix, Some(after)) => watch,
        };
        let mut stream = match watch {
            Ok(stream) => stream,
            Err(err) => {
                if handle_failure(&store, &entry, &prefix, err).await.is_err() {
                    return;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = stream.next() => next,
            };
            match next {
                Some(Ok(event)) => {
                    backoff = Duration::from_millis(100);
                    match WatchItem::from_store_event(&event) {
                        Ok(item) => publish(&entry, Arc::new(item), &config),
                        Err(err) => {
                            tracing::error!(%prefix, revision = event.revision(), error = %err, "undecodable object in the store");
                            if let Ok(mut state) = entry.state.lock() {
                                state.last_revision = state.last_revision.max(event.revision());
                            }
                        }
                    }
                }
                Some(Err(err)) => {
                    if handle_failure(&store, &entry, &prefix, err).await.is_err() {
                        return;
                    }
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Logs a store watch failure; on compaction, resets the entry and ends every
/// subscriber. `Err` only when the entry's lock is poisoned.
async fn handle_failure(
    store: &Arc<dyn Store>,
    entry: &Entry,
    prefix: &str,
    err: StoreError,
) -> Result<(), ()> {
    match err {
        StoreError::Compacted { .. } => {
            tracing::warn!(%prefix, "store history compacted under the watch hub; subscribers must relist");
            let current = store.revision().await.ok();
            let mut state = entry.state.lock().map_err(|_| ())?;
            if let Some(current) = current {
                state.last_revision = current;
                state.covered_after = current;
            }
            state.buffer.clear();
            state.buffer_bytes = 0;
            let _ = entry.sender.send(Message::Reset);
        }
        other => tracing::warn!(%prefix, error = %other, "store watch failed; reconnecting"),
    }
    Ok(())
}

fn publish(entry: &Entry, item: Arc<WatchItem>, config: &HubConfig) {
    let Ok(mut state) = entry.state.lock() else {
        return;
    };
    if item.revision <= state.last_revision {
        return;
    }
    state.last_revision = item.revision;
    state.buffer_bytes += item.footprint();
    state.buffer.push_back(item.clone());
    // Keep at least the newest item, whatever its size.
    while state.buffer.len() > config.replay_buffer.max(1)
        || (state.buffer_bytes > config.replay_buffer_bytes && state.buffer.len() > 1)
    {
        if let Some(dropped) = state.buffer.pop_front() {
            state.covered_after = dropped.revision;
            state.buffer_bytes = state.buffer_bytes.saturating_sub(dropped.footprint());
        }
    }
    // Sent under the lock, so a new subscriber sees each event exactly once:
    // either in the buffer it copies or on the channel it just joined.
    let _ = entry.sender.send(Message::Event(item));
}

#[cfg(test)]
mod tests {
    use super::*;
    use krake_store::embedded::EmbeddedStore;

    async fn hub(capacity: usize, buffer: usize) -> (WatchHub, Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path().join("s.redb")).unwrap());
        let hub = WatchHub::new(
            store.clone(),
            HubConfig {
                replay_buffer: buffer,
                replay_buffer_bytes: usize::MAX,
                channel_capacity: capacity,
            },
            CancellationToken::new(),
        );
        (hub, store, dir)
    }

    fn object(name: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"metadata": {{"name": "{name}", "namespace": "ns"}}}}"#
        ))
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_cut_off_and_others_are_not() {
        let (hub, store, _dir) = hub(4, 100).await;
        let mut slow = hub.subscribe("/k/", None).await.unwrap();
        let mut fast = hub.subscribe("/k/", None).await.unwrap();
        let mut seen = 0;
        for i in 0..20 {
            store
                .create(&format!("/k/ns/o{i}"), object(&format!("o{i}")))
                .await
                .unwrap();
            let item = tokio::time::timeout(Duration::from_secs(5), fast.next())
                .await
                .unwrap();
            assert!(item.unwrap().is_ok());
            seen += 1;
        }
        assert_eq!(seen, 20);
        // The slow one gets what fits, then a clear end.
        let mut results = Vec::new();
        while let Some(item) = tokio::time::timeout(Duration::from_secs(5), slow.next())
            .await
            .unwrap()
        {
            results.push(item);
        }
        assert!(
            matches!(results.last(), Some(Err(HubError::Lagged(_)))),
            "{results:?}"
        );
        assert!(results.len() < 20);
    }

    #[tokio::test]
    async fn resume_replays_from_the_buffer_without_gaps() {
        let (hub, store, _dir) = hub(64, 100).await;
        // Start the hub's store watch.
        let _live = hub.subscribe("/k/", None).await.unwrap();
        let mut revisions = Vec::new();
        for i in 0..10 {
            revisions.push(
                store
                    .create(&format!("/k/ns/o{i}"), object("x"))
                    .await
                    .unwrap(),
            );
        }
        // Wait until the hub saw them all.
        let mut probe = hub.subscribe("/k/", Some(revisions[0])).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 9 {
            let item = tokio::time::timeout(Duration::from_secs(5), probe.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got.push(item.revision);
        }
        assert_eq!(got, revisions[1..].to_vec());
        // Another resume: exactly once each, then live events.
        let mut resumed = hub.subscribe("/k/", Some(revisions[4])).await.unwrap();
        let extra = store.create("/k/ns/late", object("late")).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 6 {
            let item = tokio::time::timeout(Duration::from_secs(5), resumed.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got.push(item.revision);
        }
        let mut expected = revisions[5..].to_vec();
        expected.push(extra);
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn the_replay_buffer_is_bounded_by_bytes_and_older_resumes_use_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path().join("s.redb")).unwrap());
        let hub = WatchHub::new(
            store.clone(),
            HubConfig {
                replay_buffer: 1000,
                // Room for about two items.
                replay_buffer_bytes: 2 * (std::mem::size_of::<WatchItem>() + 200),
                channel_capacity: 64,
            },
            CancellationToken::new(),
        );
        let mut live = hub.subscribe("/k/", None).await.unwrap();
        let mut revisions = Vec::new();
        for i in 0..10 {
            revisions.push(
                store
                    .create(&format!("/k/ns/o{i}"), object(&format!("o{i}")))
                    .await
                    .unwrap(),
            );
        }
        for _ in 0..10 {
            tokio::time::timeout(Duration::from_secs(5), live.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
        let entry = hub.entry("/k/").await.unwrap();
        let (len, bytes) = {
            let state = entry.state.lock().unwrap();
            (state.buffer.len(), state.buffer_bytes)
        };
        assert!((1..=2).contains(&len), "{len} items kept");
        assert!(bytes <= 2 * (std::mem::size_of::<WatchItem>() + 200));
        // A resume from before the buffer is served by the store, in full.
        let mut resumed = hub.subscribe("/k/", Some(revisions[0])).await.unwrap();
        let mut got = Vec::new();
        while got.len() < 9 {
            let item = tokio::time::timeout(Duration::from_secs(5), resumed.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            got.push(item.revision);
        }
        assert_eq!(got, revisions[1..].to_vec());
    }

    #[tokio::test]
    async fn items_keep_the_line_and_decode_the_object_on_demand() {
        let (hub, store, _dir) = hub(8, 8).await;
        let mut live = hub.subscribe("/k/", None).await.unwrap();
        let value = Bytes::from_static(
            br#"{"metadata": {"name": "a", "namespace": "ns", "labels": {"tier": "web"}}}"#,
        );
        let revision = store.create("/k/ns/a", value).await.unwrap();
        let item = tokio::time::timeout(Duration::from_secs(5), live.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(item.namespace.as_deref(), Some("ns"));
        assert_eq!(item.labels.get("tier").map(String::as_str), Some("web"));
        assert_eq!(item.event_type, WatchEventType::Added);
        let line: Value = serde_json::from_slice(&item.line).unwrap();
        assert_eq!(line["type"], "ADDED");
        assert_eq!(item.decode_object(), line["object"]);
        assert_eq!(*item.object, line["object"]);
        assert_eq!(
            object::resource_version(&item.object).unwrap(),
            Some(revision)
        );
    }

    #[tokio::test]
    async fn shutdown_ends_subscriptions() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(dir.path().join("s.redb")).unwrap());
        let token = CancellationToken::new();
        let hub = WatchHub::new(
            store,
            HubConfig {
                replay_buffer: 8,
                replay_buffer_bytes: usize::MAX,
                channel_capacity: 8,
            },
            token.clone(),
        );
        let mut subscription = hub.subscribe("/k/", None).await.unwrap();
        token.cancel();
        let next = tokio::time::timeout(Duration::from_secs(5), subscription.next())
            .await
            .unwrap();
        assert!(next.is_none());
    }
}
