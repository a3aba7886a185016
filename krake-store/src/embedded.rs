//! The embedded store: one crash-safe file, no server to run.
//!
//! [`EmbeddedStore`] keeps everything in a single [redb](https://docs.rs/redb)
//! file, a copy-on-write B-tree with ACID transactions. It is the default
//! store of `krake-server`.
//!
//! # Design
//!
//! The file holds three tables:
//!
//! - `kv`: key → (`create_revision`, `mod_revision`, value);
//! - `log`: revision → the change made at that revision (kind, key, value,
//!   `create_revision`, and the key's previous `mod_revision` and value), the
//!   change log that watches resume from and old snapshots are rebuilt from;
//! - `meta`: the current revision and the oldest revision still in the log.
//!
//! Every write (create, update, delete) is one write transaction that checks
//! the key, changes `kv`, appends to `log`, bumps the revision and drops the
//! log's oldest entries beyond [`EmbeddedOptions::retained_events`]. It is
//! committed with redb's default durability ([`redb::Durability::Immediate`]):
//! when a write returns, it is on disk and survives a crash or `kill -9`.
//! Writers are serialized; readers see consistent snapshots and never wait
//! for writers. redb is synchronous, so every transaction runs on tokio's
//! blocking thread pool (`spawn_blocking`).
//!
//! After each commit, the event is published on a `tokio::sync::broadcast`
//! channel. A watch subscribes to it before reading the log, replays the log
//! after its start revision, then follows the channel, skipping what it has
//! already replayed. A watcher that falls behind the channel's buffer
//! ([`EmbeddedOptions::watch_buffer`]) re-reads the missed range from the log,
//! so it never silently loses events.
//!
//! # Guarantees
//!
//! - Revisions start at 1 and increase by exactly one per successful write,
//!   across all keys; they persist across restarts.
//! - [`Store::list`] with a [`ListOptions::revision`] reads the data as it
//!   was at that revision, for any revision from the oldest retained one
//!   (see [`StoreError::Compacted`]) to the current one; pages of one list
//!   read at the same revision are a consistent snapshot. A revision newer
//!   than the current one is an [`StoreError::Internal`] error. A `limit` of
//!   `Some(0)` means no limit, as in etcd.
//! - [`Store::watch`] yields every change under the prefix after the given
//!   revision, in order, exactly once, or an [`StoreError::Compacted`] error
//!   if the log no longer holds them (then the stream ends). When the store
//!   is dropped, open watch streams yield [`StoreError::Unavailable`] and end.
//! - Lists at, and watches after, any of the last
//!   [`EmbeddedOptions::retained_events`] revisions work, even for keys whose
//!   earlier changes were compacted away (each log entry records the key's
//!   previous state).
//!
//! Only one [`EmbeddedStore`] (and its clones) may have a file open at a time;
//! a second open gives [`StoreError::Unavailable`].

mod codec;
mod watch;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use tokio::sync::broadcast;

use self::codec::{Change, ChangeView, RecordView};
use crate::{
    EventKind, EventStream, KeyValue, ListOptions, ListPage, Revision, Store, StoreError,
    StoreEvent,
};

/// key → [`codec::encode_record`].
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// revision → [`codec::encode_change`].
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
/// The counters below.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// The version of the file layout.
const META_FORMAT: &str = "format";
/// The current revision (0 in a new file).
const META_REVISION: &str = "revision";
/// The oldest revision still in `log` (1 in a new file). The state at
/// `oldest - 1` is the oldest one the store can rebuild.
const META_OLDEST: &str = "oldest";
/// The layout this code reads and writes.
const FORMAT_VERSION: i64 = 1;

/// Options of [`EmbeddedStore::open_with`].
///
/// ```
/// use krake_store::embedded::EmbeddedOptions;
///
/// let options = EmbeddedOptions {
///     retained_events: 1_000,
///     ..EmbeddedOptions::default()
/// };
/// # assert_eq!(options.watch_buffer, EmbeddedOptions::default().watch_buffer);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// How many of the latest changes the change log keeps (default 100,000;
    /// at least 1). A watch can resume, and a list can read a snapshot, from
    /// any revision in that window; older ones give
    /// [`StoreError::Compacted`]. Each entry holds the key, its new value and
    /// its previous value.
    pub retained_events: usize,
    /// How many events the in-memory channel feeding live watches buffers
    /// (default 1,024; at least 1). A watcher that falls further behind
    /// catches up from the change log, which is slower but loses nothing.
    pub watch_buffer: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            retained_events: 100_000,
            watch_buffer: 1_024,
        }
    }
}

/// The embedded, single-file, crash-safe [`Store`] (see the [module
/// documentation](self)).
///
/// Cheap to clone: clones share the open file. The file is closed when the
/// last clone is dropped (open watch streams do not keep it open).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The file. Watch streams hold a weak reference.
    db: Arc<Database>,
    path: PathBuf,
    /// [`EmbeddedOptions::retained_events`].
    retained_events: i64,
    /// Held from the start of a write transaction until its event is
    /// published, so events reach the channel in revision order.
    write_lock: Mutex<()>,
    /// The last committed revision.
    revision: AtomicI64,
    /// Every committed change, for live watches.
    events: broadcast::Sender<Arc<StoreEvent>>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("revision", &self.inner.revision.load(Ordering::SeqCst))
            .field("retained_events", &self.inner.retained_events)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the store in the file at `path` with the default options,
    /// creating the file (and its parent folders) if needed.
    ///
    /// Blocks while it opens the file (and repairs it after a crash); call it
    /// at start-up, or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Opens the store in the file at `path` with `options`, creating the
    /// file (and its parent folders) if needed. A smaller
    /// [`EmbeddedOptions::retained_events`] than the file was used with
    /// compacts the log right away.
    ///
    /// Blocks like [`EmbeddedStore::open`].
    pub fn open_with(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let db = Database::create(&path).redb(&format!("cannot open {}", path.display()))?;
        let retained_events = i64::try_from(options.retained_events.max(1)).unwrap_or(i64::MAX);
        let revision = initialize(&db, retained_events)?;
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db: Arc::new(db),
                path,
                retained_events,
                write_lock: Mutex::new(()),
                revision: AtomicI64::new(revision),
                events,
            }),
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The oldest revision the store can still serve: [`Store::list`] at
    /// it and [`Store::watch`] after it work, anything older is
    /// [`StoreError::Compacted`].
    pub async fn oldest_revision(&self) -> Result<Revision, StoreError> {
        self.read(|txn| Ok(Counters::read_only(txn)?.oldest_servable()))
            .await
    }

    /// Runs `f` in a read transaction on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.inner.db.clone();
        blocking(move || {
            let txn = db.begin_read().redb("cannot begin a read")?;
            f(&txn)
        })
        .await
    }

    /// Runs one write on the blocking pool.
    async fn write(&self, key: &str, op: Op) -> Result<Revision, StoreError> {
        let inner = self.inner.clone();
        let key = key.to_owned();
        blocking(move || inner.write(&key, op)).await
    }
}

/// Runs `f` on tokio's blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::internal(format!("embedded store task failed: {e}")))?
}

/// Creates the tables of a new file, checks the layout of an existing one,
/// compacts the log to `retained_events`; returns the current revision.
fn initialize(db: &Database, retained_events: i64) -> Result<Revision, StoreError> {
    let txn = db.begin_write().redb("cannot begin a write")?;
    let revision = {
        let mut meta = txn.open_table(META).redb("cannot open the meta table")?;
        let kv = txn.open_table(KV).redb("cannot open the kv table")?;
        let mut log = txn.open_table(LOG).redb("cannot open the log table")?;
        match get_meta(&meta, META_FORMAT)? {
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::internal(format!(
                    "the file has layout version {other}; this build reads version {FORMAT_VERSION}"
                )));
            }
            None => {
                if !kv.is_empty().redb("cannot read the kv table")?
                    || !log.is_empty().redb("cannot read the log table")?
                {
                    return Err(StoreError::internal(
                        "the file has data but no layout version: not an embedded store",
                    ));
                }
                put_meta(&mut meta, META_FORMAT, FORMAT_VERSION)?;
                put_meta(&mut meta, META_REVISION, 0)?;
                put_meta(&mut meta, META_OLDEST, 1)?;
            }
        }
        let mut counters = Counters::read(&meta)?;
        counters.compact(&mut log, retained_events)?;
        counters.write(&mut meta)?;
        counters.revision
    };
    commit(txn)?;
    Ok(revision)
}

fn commit(txn: WriteTransaction) -> Result<(), StoreError> {
    txn.commit().redb("cannot commit")
}

/// One write.
#[derive(Debug)]
enum Op {
    Create(Bytes),
    Update(Bytes, Revision),
    Delete(Option<Revision>),
}

impl Inner {
    /// Applies `op` to `key` in one write transaction, then publishes the
    /// event. Blocking.
    fn write(&self, key: &str, op: Op) -> Result<Revision, StoreError> {
        let _writer = self
            .write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let txn = self.db.begin_write().redb("cannot begin a write")?;
        let event = {
            let mut meta = txn.open_table(META).redb("cannot open the meta table")?;
            let mut kv = txn.open_table(KV).redb("cannot open the kv table")?;
            let mut log = txn.open_table(LOG).redb("cannot open the log table")?;
            let mut counters = Counters::read(&meta)?;
            let revision = counters.revision + 1;
            let existing = match kv.get(key).redb("cannot read a key")? {
                Some(guard) => Some(RecordView::decode(guard.value())?.to_key_value(key)),
                None => None,
            };
            let (event, change) = match (&op, &existing) {
                (Op::Create(_), Some(_)) => {
                    return Err(StoreError::AlreadyExists {
                        key: key.to_owned(),
                    });
                }
                (Op::Update(..) | Op::Delete(_), None) => {
                    return Err(StoreError::NotFound {
                        key: key.to_owned(),
                    });
                }
                (Op::Update(_, expected) | Op::Delete(Some(expected)), Some(old))
                    if old.mod_revision != *expected =>
                {
                    return Err(StoreError::Conflict {
                        key: key.to_owned(),
                        expected: *expected,
                        actual: old.mod_revision,
                    });
                }
                (Op::Create(value), None) => (
                    put_event(key, value, revision, revision),
                    Change::Create { value },
                ),
                (Op::Update(value, _), Some(old)) => (
                    put_event(key, value, old.create_revision, revision),
                    Change::Update {
                        value,
                        previous_mod_revision: old.mod_revision,
                        previous_value: &old.value,
                    },
                ),
                (Op::Delete(_), Some(old)) => (
                    StoreEvent {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            mod_revision: revision,
                            ..old.clone()
                        },
                    },
                    Change::Delete {
                        value: &old.value,
                        previous_mod_revision: old.mod_revision,
                    },
                ),
            };
            match event.kind {
                EventKind::Put => {
                    let record =
                        codec::encode_record(event.kv.create_revision, revision, &event.kv.value);
                    kv.insert(key, record.as_slice())
                        .redb("cannot write a key")?;
                }
                EventKind::Delete => {
                    kv.remove(key).redb("cannot delete a key")?;
                }
            }
            let entry = codec::encode_change(key, event.kv.create_revision, change)?;
            log.insert(revision, entry.as_slice())
                .redb("cannot write the change log")?;
            counters.revision = revision;
            counters.compact(&mut log, self.retained_events)?;
            counters.write(&mut meta)?;
            event
        };
        commit(txn)?;
        let revision = event.kv.mod_revision;
        self.revision.store(revision, Ordering::SeqCst);
        // No receiver (no live watch) is not an error.
        let _ = self.events.send(Arc::new(event));
        Ok(revision)
    }
}

fn put_event(
    key: &str,
    value: &Bytes,
    create_revision: Revision,
    revision: Revision,
) -> StoreEvent {
    StoreEvent {
        kind: EventKind::Put,
        kv: KeyValue {
            key: key.to_owned(),
            value: value.clone(),
            create_revision,
            mod_revision: revision,
        },
    }
}

/// The counters of the `meta` table.
#[derive(Debug, Clone, Copy)]
struct Counters {
    /// The current revision.
    revision: Revision,
    /// The oldest revision in the log.
    oldest: Revision,
}

impl Counters {
    fn read(meta: &impl ReadableTable<&'static str, i64>) -> Result<Self, StoreError> {
        let missing = |name| StoreError::internal(format!("the meta table has no {name}"));
        Ok(Counters {
            revision: get_meta(meta, META_REVISION)?.ok_or_else(|| missing(META_REVISION))?,
            oldest: get_meta(meta, META_OLDEST)?.ok_or_else(|| missing(META_OLDEST))?,
        })
    }

    fn read_only(txn: &ReadTransaction) -> Result<Self, StoreError> {
        let meta = txn.open_table(META).redb("cannot open the meta table")?;
        Self::read(&meta)
    }

    fn write(self, meta: &mut Table<&'static str, i64>) -> Result<(), StoreError> {
        put_meta(meta, META_REVISION, self.revision)?;
        put_meta(meta, META_OLDEST, self.oldest)
    }

    /// The oldest revision whose state can be rebuilt (and watched after).
    fn oldest_servable(self) -> Revision {
        self.oldest - 1
    }

    /// `Compacted` if `requested` is older than the store can serve.
    fn check(self, requested: Revision) -> Result<(), StoreError> {
        if requested < self.oldest_servable() {
            Err(StoreError::Compacted {
                requested,
                oldest: self.oldest_servable(),
            })
        } else {
            Ok(())
        }
    }

    /// Drops the log entries beyond the latest `retained_events`.
    fn compact(
        &mut self,
        log: &mut Table<i64, &[u8]>,
        retained_events: i64,
    ) -> Result<(), StoreError> {
        let keep_from = self.revision.saturating_sub(retained_events) + 1;
        while self.oldest < keep_from {
            log.remove(self.oldest)
                .redb("cannot compact the change log")?;
            self.oldest += 1;
        }
        Ok(())
    }
}

fn get_meta(
    meta: &impl ReadableTable<&'static str, i64>,
    name: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(meta
        .get(name)
        .redb("cannot read the meta table")?
        .map(|guard| guard.value()))
}

fn put_meta(meta: &mut Table<&'static str, i64>, name: &str, value: i64) -> Result<(), StoreError> {
    meta.insert(name, value)
        .redb("cannot write the meta table")?;
    Ok(())
}

/// Reads `prefix` at the current revision or an older one. Blocking.
fn list(
    txn: &ReadTransaction,
    prefix: &str,
    options: &ListOptions,
) -> Result<ListPage, StoreError> {
    let counters = Counters::read_only(txn)?;
    let revision = match options.revision {
        None => counters.revision,
        Some(requested) if requested > counters.revision => {
            return Err(StoreError::internal(format!(
                "revision {requested} is in the future; the current revision is {}",
                counters.revision
            )));
        }
        Some(requested) => {
            counters.check(requested)?;
            requested
        }
    };
    let start_after = options.start_after.as_deref();
    let after_start = |key: &str| start_after.is_none_or(|start| key > start);

    // The state at `revision` of each key under the prefix changed since:
    // its state just before its first change after `revision`.
    let mut then: BTreeMap<String, Option<KeyValue>> = BTreeMap::new();
    if revision < counters.revision {
        let log = txn.open_table(LOG).redb("cannot open the log table")?;
        for entry in log
            .range(revision + 1..=counters.revision)
            .redb("cannot read the change log")?
        {
            let (_, entry) = entry.redb("cannot read the change log")?;
            let change = ChangeView::decode(entry.value())?;
            if change.key.starts_with(prefix)
                && after_start(change.key)
                && !then.contains_key(change.key)
            {
                then.insert(change.key.to_owned(), change.state_before());
            }
        }
    }

    let kv = txn.open_table(KV).redb("cannot open the kv table")?;
    let lower = match start_after {
        Some(start) if start >= prefix => Bound::Excluded(start),
        _ => Bound::Included(prefix),
    };
    let mut now = kv
        .range::<&str>((lower, Bound::Unbounded))
        .redb("cannot read the kv table")?;
    let mut now_head = next_unchanged(&mut now, prefix, &then)?;
    let mut then_items = then.values().flatten().peekable();
    let limit = match options.limit {
        None | Some(0) => usize::MAX,
        Some(limit) => limit,
    };
    let mut items = Vec::new();
    let mut more = false;
    loop {
        // Merge the unchanged keys with the rebuilt ones, in key order (the
        // two never share a key).
        let take_now = match (&now_head, then_items.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(now), Some(then)) => now.key < then.key,
        };
        if items.len() == limit {
            more = true;
            break;
        }
        if take_now {
            items.extend(now_head.take());
            now_head = next_unchanged(&mut now, prefix, &then)?;
        } else {
            items.extend(then_items.next().cloned());
        }
    }
    Ok(ListPage {
        items,
        revision,
        more,
    })
}

/// The next key of `range` under `prefix` that is not in `changed`.
fn next_unchanged(
    range: &mut redb::Range<'_, &'static str, &'static [u8]>,
    prefix: &str,
    changed: &BTreeMap<String, Option<KeyValue>>,
) -> Result<Option<KeyValue>, StoreError> {
    for entry in range {
        let (key, record) = entry.redb("cannot read the kv table")?;
        let key = key.value();
        if !key.starts_with(prefix) {
            return Ok(None);
        }
        if !changed.contains_key(key) {
            return Ok(Some(RecordView::decode(record.value())?.to_key_value(key)));
        }
    }
    Ok(None)
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.read(move |txn| {
            let kv = txn.open_table(KV).redb("cannot open the kv table")?;
            match kv.get(key.as_str()).redb("cannot read a key")? {
                Some(record) => Ok(Some(RecordView::decode(record.value())?.to_key_value(&key))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str, options: &ListOptions) -> Result<ListPage, StoreError> {
        let prefix = prefix.to_owned();
        let options = options.clone();
        self.read(move |txn| list(txn, &prefix, &options)).await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        self.write(key, Op::Create(value)).await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        self.write(key, Op::Update(value, expected)).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.write(key, Op::Delete(expected)).await
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Option<Revision>,
    ) -> Result<EventStream, StoreError> {
        // Subscribe first: every commit the log read below misses is then
        // on the channel.
        let live = self.inner.events.subscribe();
        let (after, current) = self
            .read(move |txn| {
                let counters = Counters::read_only(txn)?;
                let after = after.unwrap_or(counters.revision);
                counters.check(after)?;
                Ok((after, counters.revision))
            })
            .await?;
        Ok(watch::stream(
            Arc::downgrade(&self.inner.db),
            live,
            prefix.to_owned(),
            after,
            current,
        ))
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        Ok(self.inner.revision.load(Ordering::SeqCst))
    }
}

/// Reads the changes under `prefix` at revisions `after + 1 ..= to`, or
/// `Compacted` if the log no longer holds them all. Blocking.
fn read_changes(
    txn: &ReadTransaction,
    prefix: &str,
    after: Revision,
    to: Revision,
) -> Result<Vec<StoreEvent>, StoreError> {
    Counters::read_only(txn)?.check(after)?;
    let log = txn.open_table(LOG).redb("cannot open the log table")?;
    let mut events = Vec::new();
    let mut expected = after + 1;
    for entry in log
        .range(after + 1..=to)
        .redb("cannot read the change log")?
    {
        let (revision, entry) = entry.redb("cannot read the change log")?;
        let revision = revision.value();
        if revision != expected {
            return Err(StoreError::internal(format!(
                "the change log misses revision {expected}"
            )));
        }
        expected += 1;
        let change = ChangeView::decode(entry.value())?;
        if change.key.starts_with(prefix) {
            events.push(change.to_event(revision));
        }
    }
    if expected != to + 1 {
        return Err(StoreError::internal(format!(
            "the change log misses revision {expected}"
        )));
    }
    Ok(events)
}

/// Maps redb's errors: I/O failures are [`StoreError::Unavailable`],
/// everything else [`StoreError::Internal`].
trait RedbResult<T> {
    fn redb(self, what: &str) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> RedbResult<T> for Result<T, E> {
    fn redb(self, what: &str) -> Result<T, StoreError> {
        self.map_err(|error| {
            let error: redb::Error = error.into();
            let message = format!("embedded store: {what}: {error}");
            match error {
                redb::Error::Io(_)
                | redb::Error::PreviousIo
                | redb::Error::DatabaseAlreadyOpen
                | redb::Error::DatabaseClosed => StoreError::Unavailable { message },
                _ => StoreError::Internal { message },
            }
        })
    }
}
