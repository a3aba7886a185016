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
//! - `log_times`: a sparse index of when the log's entries were written:
//!   for each time bucket (a sixteenth of [`EmbeddedOptions::retained_age`],
//!   at most a second), the last revision written in it and its time;
//! - `meta`: the current revision, the oldest revision still in the log and
//!   the log's size in bytes.
//!
//! Every write (create, update, delete) checks the key, changes `kv`,
//! appends to `log`, bumps the revision and drops a few of the log's oldest
//! entries beyond its retention (see [History](#history)), inside a write
//! transaction committed with redb's default durability
//! ([`redb::Durability::Immediate`]): when a write returns, it is on disk and
//! survives a crash or `kill -9`. Writers are serialized, and the writes that
//! arrive while a commit is under way share the next transaction (group
//! commit, at most [`MAX_GROUP`] of them): each is checked against the state
//! the writes before it left, exactly as if it ran alone, but they pay for
//! one fsync together, so concurrent writers (the API under load, a
//! scheduler placing many applications at once) are not limited to one
//! write per fsync. Readers see consistent snapshots and never wait for
//! writers. redb is synchronous, so every transaction runs on tokio's
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
//! - Lists at, and watches after, any revision still in the log (see
//!   [History](#history) and [`EmbeddedStore::oldest_revision`]) work, even
//!   for keys whose earlier changes were compacted away (each log entry
//!   records the key's previous state). The current revision always works.
//!
//! # History
//!
//! The change log is bounded three ways: it keeps at most
//! [`EmbeddedOptions::retained_events`] entries, at most about
//! [`EmbeddedOptions::retained_bytes`] bytes of entries, and no entry older
//! than [`EmbeddedOptions::retained_age`] (whichever bound is reached first
//! drops the oldest entries). Under steady writes each write drops the
//! entries its own entry pushes out, in its own transaction (at most
//! [`WRITE_TRIM_BATCH`] of them, so that no write pays for a large
//! backlog). Everything else (a backlog after a large write, entries that age
//! out while nothing is written) is dropped by a background thread, in
//! transactions of at most [`BACKGROUND_TRIM_BATCH`] entries that take turns
//! with the writes. Writes are never refused because of the history.
//!
//! redb reuses the pages freed by dropped entries for new ones, so under
//! steady writes the file stops growing once the history reaches its
//! bounds. Opening a file compacts it ([`redb::Database::compact`]), which
//! gives back to the file system the space a larger history used. (redb
//! compacts only a database that no transaction uses, so it cannot run
//! while the store serves requests.)
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
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, WriteTransaction,
};
use tokio::sync::{broadcast, oneshot};

use self::codec::{Change, ChangeView, RecordView};
use crate::{
    EventKind, EventStream, KeyValue, ListOptions, ListPage, Revision, Store, StoreError,
    StoreEvent,
};

/// key → [`codec::encode_record`].
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// revision → [`codec::encode_change`].
const LOG: TableDefinition<i64, &[u8]> = TableDefinition::new("log");
/// revision → the time it was written (milliseconds since the Unix epoch),
/// for the last revision of each time bucket still in `log`.
const TIMES: TableDefinition<i64, i64> = TableDefinition::new("log_times");
/// The counters below.
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");

/// The version of the file layout.
const META_FORMAT: &str = "format";
/// The current revision (0 in a new file).
const META_REVISION: &str = "revision";
/// The oldest revision still in `log` (1 in a new file). The state at
/// `oldest - 1` is the oldest one the store can rebuild.
const META_OLDEST: &str = "oldest";
/// The bytes the entries in `log` take (see [`entry_cost`]).
const META_LOG_BYTES: &str = "log_bytes";
/// The layout this code reads and writes. Version 1 (no `log_times`, no
/// `log_bytes`) is upgraded when opened.
const FORMAT_VERSION: i64 = 2;

/// At most how many log entries a write drops beyond its own.
pub const WRITE_TRIM_BATCH: usize = 64;
/// At most how many waiting writes one transaction commits together.
pub const MAX_GROUP: usize = 256;
/// At most how many log entries one background transaction drops.
pub const BACKGROUND_TRIM_BATCH: usize = 1_024;
/// What an entry costs in the log beyond its encoded bytes (its key and the
/// B-tree's bookkeeping, roughly).
const ENTRY_OVERHEAD: i64 = 16;
/// redb's page size.
const PAGE: i64 = 4_096;

/// Options of [`EmbeddedStore::open_with`].
///
/// ```
/// use krake_store::embedded::EmbeddedOptions;
///
/// use std::time::Duration;
///
/// let options = EmbeddedOptions {
///     retained_events: 1_000,
///     retained_bytes: 4 << 20,
///     retained_age: Duration::from_secs(60),
///     ..EmbeddedOptions::default()
/// };
/// # assert_eq!(options.watch_buffer, EmbeddedOptions::default().watch_buffer);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// At most how many of the latest changes the change log keeps (default
    /// 100,000; at least 1). A watch can resume, and a list can read a
    /// snapshot, from any revision in the log; older ones give
    /// [`StoreError::Compacted`]. Each entry holds the key, its new value and
    /// its previous value.
    pub retained_events: usize,
    /// At most about how many bytes of the file the change log's entries
    /// take (default 32 MiB). An entry holds its key, its new and previous
    /// values and a few dozen bytes; entries of up to 2 KiB share 4 KiB
    /// pages, a larger one takes a page of its own of 4, 8, 16 KiB and so
    /// on, and that is what is counted. The file is about this size plus the
    /// current data, plus redb's free pages and the slack of its regions.
    pub retained_bytes: u64,
    /// How long the change log keeps a change (default 10 minutes); older
    /// changes are dropped within about a sixteenth of this (at most a
    /// second) plus the background thread's period (a quarter of this, at
    /// most 5 s).
    pub retained_age: Duration,
    /// How many events the in-memory channel feeding live watches buffers
    /// (default 1,024; at least 1). A watcher that falls further behind
    /// catches up from the change log, which is slower but loses nothing.
    pub watch_buffer: usize,
    /// How much memory redb may use to cache the file's pages (default
    /// 8 MiB; redb's own default is 1 GiB, which a server holding 10,000
    /// applications filled with 44 MB of recently written pages). Reads of
    /// pages not cached go to the operating system's page cache.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            retained_events: 100_000,
            retained_bytes: 32 << 20,
            retained_age: Duration::from_secs(600),
            watch_buffer: 1_024,
            cache_bytes: 8 << 20,
        }
    }
}

/// The embedded, single-file, crash-safe [`Store`] (see the [module
/// documentation](self)).
///
/// Cheap to clone: clones share the open file. The file is closed when the
/// last clone is dropped (open watch streams do not keep it open); dropping
/// the last clone also stops the background thread that trims the history,
/// waiting for its current transaction, if any.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// Stops the background thread when the last clone goes.
    _background: Arc<Background>,
}

struct Inner {
    /// The file. Watch streams hold a weak reference.
    db: Arc<Database>,
    path: PathBuf,
    /// How much history the log keeps.
    retention: Retention,
    /// Held from the start of a write transaction until its event is
    /// published, so events reach the channel in revision order; the
    /// background thread holds it for each of its transactions.
    writer: Mutex<WriterState>,
    /// Writes waiting for the next commit.
    queue: Mutex<Vec<Pending>>,
    /// The last committed revision.
    revision: AtomicI64,
    /// Every committed change, for live watches.
    events: broadcast::Sender<Arc<StoreEvent>>,
    /// Wakes the background thread.
    signal: Signal,
}

/// What the writer remembers between writes.
#[derive(Debug, Default)]
struct WriterState {
    /// The last row of `log_times`: (revision, time in ms).
    last_time_row: Option<(Revision, i64)>,
}

/// How much history the log keeps ([`EmbeddedOptions`], as stored).
#[derive(Debug, Clone, Copy)]
struct Retention {
    events: i64,
    bytes: i64,
    age_ms: i64,
    /// The width of a `log_times` bucket, in ms.
    resolution_ms: i64,
    /// The background thread's period.
    period: Duration,
}

impl Retention {
    fn new(options: &EmbeddedOptions) -> Self {
        let age_ms = i64::try_from(options.retained_age.as_millis()).unwrap_or(i64::MAX);
        Retention {
            events: i64::try_from(options.retained_events.max(1)).unwrap_or(i64::MAX),
            bytes: i64::try_from(options.retained_bytes).unwrap_or(i64::MAX),
            age_ms,
            resolution_ms: (age_ms / 16).clamp(1, 1_000),
            period: (options.retained_age / 4)
                .clamp(Duration::from_millis(10), Duration::from_secs(5)),
        }
    }
}

/// The background thread's wake-up call.
#[derive(Debug, Default)]
struct Signal {
    state: Mutex<SignalState>,
    wake: Condvar,
}

#[derive(Debug, Default)]
struct SignalState {
    /// The store is closing.
    stop: bool,
    /// A write left entries to drop.
    backlog: bool,
}

impl Signal {
    fn lock(&self) -> MutexGuard<'_, SignalState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the background thread to drop a backlog now.
    fn backlog(&self) {
        self.lock().backlog = true;
        self.wake.notify_one();
    }

    /// Waits for a backlog, a stop or `period`; false when stopping.
    fn wait(&self, period: Duration) -> bool {
        let mut state = self.lock();
        if !state.stop && !state.backlog {
            state = self
                .wake
                .wait_timeout(state, period)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.backlog = false;
        !state.stop
    }
}

/// The background thread that trims the history, stopped (and joined) when
/// the last [`EmbeddedStore`] clone is dropped.
struct Background {
    inner: Arc<Inner>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        self.inner.signal.lock().stop = true;
        self.inner.signal.wake.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the embedded store's background thread panicked");
        }
    }
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .field("revision", &self.inner.revision.load(Ordering::SeqCst))
            .field("retention", &self.inner.retention)
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
    /// file (and its parent folders) if needed. A smaller history than the
    /// file was used with is trimmed right away, and the file compacted (see
    /// [History](self#history)). Starts the background thread that trims
    /// the history.
    ///
    /// Blocks like [`EmbeddedStore::open`].
    pub fn open_with(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .create(&path)
            .redb(&format!("cannot open {}", path.display()))?;
        let retention = Retention::new(&options);
        let (revision, last_time_row) = initialize(&db, &retention)?;
        // Gives back the space a larger history (or an older build) used.
        db.compact()
            .redb(&format!("cannot compact {}", path.display()))?;
        let (events, _) = broadcast::channel(options.watch_buffer.max(1));
        let inner = Arc::new(Inner {
            db: Arc::new(db),
            path,
            retention,
            writer: Mutex::new(WriterState { last_time_row }),
            queue: Mutex::new(Vec::new()),
            revision: AtomicI64::new(revision),
            events,
            signal: Signal::default(),
        });
        let thread = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("krake-store-history".to_owned())
                .spawn(move || inner.background())
                .map_err(|e| {
                    StoreError::internal(format!(
                        "cannot start the embedded store's background thread: {e}"
                    ))
                })?
        };
        Ok(EmbeddedStore {
            _background: Arc::new(Background {
                inner: inner.clone(),
                thread: Some(thread),
            }),
            inner,
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

    /// The change log's size: how many entries it holds and about how many
    /// bytes they take (see [`EmbeddedOptions::retained_bytes`]).
    pub async fn history_size(&self) -> Result<HistorySize, StoreError> {
        self.read(|txn| {
            let counters = Counters::read_only(txn)?;
            Ok(HistorySize {
                events: u64::try_from(counters.revision + 1 - counters.oldest).unwrap_or(0),
                bytes: u64::try_from(counters.log_bytes).unwrap_or(0),
            })
        })
        .await
    }

    /// Drops every log entry beyond the retention now, in one transaction,
    /// rather than waiting for the background thread. Tests and tools use it.
    pub async fn trim_history(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.trim_batch(usize::MAX).map(|_| ())).await
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

    /// Queues one write and has the blocking pool commit the queue: writes
    /// that arrive while a commit is under way share the next one (group
    /// commit, see [Design](self#design)).
    async fn write(&self, key: &str, op: Op) -> Result<Revision, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Pending {
                key: key.to_owned(),
                op,
                reply,
            });
        // This commit, or one that started before it, takes the write.
        let inner = self.inner.clone();
        blocking(move || {
            inner.write_group();
            Ok(())
        })
        .await?;
        answer
            .await
            .map_err(|_| StoreError::internal("the embedded store dropped a write"))?
    }
}

/// The size of the change log ([`EmbeddedStore::history_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistorySize {
    /// How many changes it holds.
    pub events: u64,
    /// About how many bytes they take.
    pub bytes: u64,
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

/// Now, in milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What an entry of `len` encoded bytes costs in the file, roughly: entries
/// of up to half a page share redb's 4 KiB leaf pages; a larger entry has a
/// page of its own, of a power-of-two number of 4 KiB pages (a 4.1 KB entry,
/// two 2 KB values, takes 8 KiB).
fn entry_cost(len: usize) -> i64 {
    let size = i64::try_from(len)
        .unwrap_or(i64::MAX)
        .saturating_add(ENTRY_OVERHEAD);
    if size <= PAGE / 2 {
        size
    } else {
        u64::try_from(size)
            .ok()
            .and_then(u64::checked_next_power_of_two)
            .and_then(|pages| i64::try_from(pages).ok())
            .map_or(i64::MAX, |pages| pages.max(PAGE))
    }
}

/// Creates the tables of a new file, checks the layout of an existing one
/// (upgrading version 1), trims the log to `retention`; returns the current
/// revision and the last row of `log_times`.
fn initialize(
    db: &Database,
    retention: &Retention,
) -> Result<(Revision, Option<(Revision, i64)>), StoreError> {
    let txn = db.begin_write().redb("cannot begin a write")?;
    let result = {
        let mut meta = txn.open_table(META).redb("cannot open the meta table")?;
        let kv = txn.open_table(KV).redb("cannot open the kv table")?;
        let mut log = txn.open_table(LOG).redb("cannot open the log table")?;
        let mut times = txn.open_table(TIMES).redb("cannot open the times table")?;
        match get_meta(&meta, META_FORMAT)? {
            Some(FORMAT_VERSION) => {}
            Some(1) => {
                // Version 1 kept no size and no times: count the bytes, and
                // date the whole log to now.
                let mut bytes = 0i64;
                for entry in log.iter().redb("cannot read the change log")? {
                    let (_, entry) = entry.redb("cannot read the change log")?;
                    bytes = bytes.saturating_add(entry_cost(entry.value().len()));
                }
                put_meta(&mut meta, META_LOG_BYTES, bytes)?;
                let revision =
                    get_meta(&meta, META_REVISION)?.ok_or_else(|| missing(META_REVISION))?;
                if revision > 0 {
                    times
                        .insert(revision, now_ms())
                        .redb("cannot write the times table")?;
                }
                put_meta(&mut meta, META_FORMAT, FORMAT_VERSION)?;
            }
            Some(other) => {
                return Err(StoreError::internal(format!(
                    "the file has layout version {other}; this build reads versions 1 and {FORMAT_VERSION}"
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
                put_meta(&mut meta, META_LOG_BYTES, 0)?;
            }
        }
        let mut counters = Counters::read(&meta)?;
        counters.trim(&mut log, &mut times, retention, now_ms(), usize::MAX)?;
        counters.write(&mut meta)?;
        let last_time_row = times
            .last()
            .redb("cannot read the times table")?
            .map(|(revision, time)| (revision.value(), time.value()));
        (counters.revision, last_time_row)
    };
    commit(txn)?;
    Ok(result)
}

fn commit(txn: WriteTransaction) -> Result<(), StoreError> {
    txn.commit().redb("cannot commit")
}

/// A write waiting for the next commit.
struct Pending {
    key: String,
    op: Op,
    reply: oneshot::Sender<Result<Revision, StoreError>>,
}

/// One write.
#[derive(Debug)]
enum Op {
    Create(Bytes),
    Update(Bytes, Revision),
    Delete(Option<Revision>),
}

impl Inner {
    fn lock_writer(&self) -> MutexGuard<'_, WriterState> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The background thread: trims the history every period, or right
    /// away when a write left a backlog, until the store closes.
    fn background(&self) {
        while self.signal.wait(self.retention.period) {
            loop {
                match self.trim_batch(BACKGROUND_TRIM_BATCH) {
                    Ok(true) => {
                        if self.signal.lock().stop {
                            return;
                        }
                    }
                    Ok(false) => break,
                    Err(error) => {
                        tracing::warn!(%error, "the embedded store could not trim its history");
                        break;
                    }
                }
            }
        }
    }

    /// Drops up to `batch` log entries beyond the retention in one write
    /// transaction (committed only if it dropped any); true if more remain.
    /// Blocking.
    fn trim_batch(&self, batch: usize) -> Result<bool, StoreError> {
        let _writer = self.lock_writer();
        let txn = self.db.begin_write().redb("cannot begin a write")?;
        let (dropped, more) = {
            let mut meta = txn.open_table(META).redb("cannot open the meta table")?;
            let mut log = txn.open_table(LOG).redb("cannot open the log table")?;
            let mut times = txn.open_table(TIMES).redb("cannot open the times table")?;
            let mut counters = Counters::read(&meta)?;
            let oldest = counters.oldest;
            let more = counters.trim(&mut log, &mut times, &self.retention, now_ms(), batch)?;
            counters.write(&mut meta)?;
            (counters.oldest > oldest, more)
        };
        if dropped {
            commit(txn)?;
        } else {
            txn.abort().redb("cannot abort a write")?;
        }
        Ok(more)
    }

    /// Applies the writes waiting in the queue (at most [`MAX_GROUP`] of
    /// them) in one write transaction, then publishes their events and
    /// answers each; does nothing if another call took them first.
    /// Blocking.
    ///
    /// Every write is checked against the state the writes before it in the
    /// group left, so a group gives the same results as the same writes one
    /// by one; only the commit (one fsync) is shared. A write refused by its
    /// precondition changes nothing and does not affect the others; a
    /// failure of the file fails the whole group (none of it is applied).
    fn write_group(&self) {
        let mut writer = self.lock_writer();
        let group: Vec<Pending> = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let take = queue.len().min(MAX_GROUP);
            queue.drain(..take).collect()
        };
        if group.is_empty() {
            return;
        }
        let (ops, replies): (Vec<(String, Op)>, Vec<_>) = group
            .into_iter()
            .map(|pending| ((pending.key, pending.op), pending.reply))
            .unzip();
        match self.apply_group(&mut writer, &ops) {
            Ok(results) => {
                // The current revision first (as one write at a time did):
                // whoever sees an event also sees a revision that covers it.
                let last = results
                    .iter()
                    .filter_map(|result| result.as_ref().ok())
                    .map(|event| event.kv.mod_revision)
                    .max();
                if let Some(revision) = last {
                    self.revision.store(revision, Ordering::SeqCst);
                }
                for (result, reply) in results.into_iter().zip(replies) {
                    let answer = result.map(|event| {
                        let revision = event.kv.mod_revision;
                        // No receiver (no live watch) is not an error.
                        let _ = self.events.send(Arc::new(event));
                        revision
                    });
                    // A caller that went away does not need its answer.
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    /// Applies `ops` in one write transaction and commits it if any of them
    /// changed something: each op's event, or the error that refused it.
    /// The outer error is a failure of the file (nothing was applied).
    fn apply_group(
        &self,
        writer: &mut WriterState,
        ops: &[(String, Op)],
    ) -> Result<Vec<Result<StoreEvent, StoreError>>, StoreError> {
        let now = now_ms();
        let txn = self.db.begin_write().redb("cannot begin a write")?;
        let (results, backlog, time_row) = {
            let mut meta = txn.open_table(META).redb("cannot open the meta table")?;
            let mut kv = txn.open_table(KV).redb("cannot open the kv table")?;
            let mut log = txn.open_table(LOG).redb("cannot open the log table")?;
            let mut times = txn.open_table(TIMES).redb("cannot open the times table")?;
            let mut counters = Counters::read(&meta)?;
            let first = counters.revision;
            let mut results = Vec::with_capacity(ops.len());
            for (key, op) in ops {
                results.push(apply(&mut kv, &mut log, &mut counters, key, op)?);
            }
            if counters.revision == first {
                (results, false, None)
            } else {
                // One `log_times` row per bucket: the bucket's last revision.
                let resolution = self.retention.resolution_ms;
                if let Some((previous, time)) = writer.last_time_row
                    && time.div_euclid(resolution) == now.div_euclid(resolution)
                {
                    times
                        .remove(previous)
                        .redb("cannot write the times table")?;
                }
                times
                    .insert(counters.revision, now)
                    .redb("cannot write the times table")?;
                let written = usize::try_from(counters.revision - first).unwrap_or(usize::MAX);
                let backlog = counters.trim(
                    &mut log,
                    &mut times,
                    &self.retention,
                    now,
                    WRITE_TRIM_BATCH.saturating_add(written),
                )?;
                counters.write(&mut meta)?;
                (results, backlog, Some((counters.revision, now)))
            }
        };
        match time_row {
            Some(time_row) => {
                commit(txn)?;
                writer.last_time_row = Some(time_row);
            }
            None => txn.abort().redb("cannot abort a write")?,
        }
        if backlog {
            self.signal.backlog();
        }
        Ok(results)
    }
}

/// Applies `op` to `key` inside a write transaction: its event, or (the
/// inner error) the precondition that refused it, with nothing changed.
/// The outer error is a failure of the file.
fn apply(
    kv: &mut Table<&str, &[u8]>,
    log: &mut Table<i64, &[u8]>,
    counters: &mut Counters,
    key: &str,
    op: &Op,
) -> Result<Result<StoreEvent, StoreError>, StoreError> {
    let revision = counters.revision + 1;
    let existing = match kv.get(key).redb("cannot read a key")? {
        Some(guard) => Some(RecordView::decode(guard.value())?.to_key_value(key)),
        None => None,
    };
    let (event, change) = match (op, &existing) {
        (Op::Create(_), Some(_)) => {
            return Ok(Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            }));
        }
        (Op::Update(..) | Op::Delete(_), None) => {
            return Ok(Err(StoreError::NotFound {
                key: key.to_owned(),
            }));
        }
        (Op::Update(_, expected) | Op::Delete(Some(expected)), Some(old))
            if old.mod_revision != *expected =>
        {
            return Ok(Err(StoreError::Conflict {
                key: key.to_owned(),
                expected: *expected,
                actual: old.mod_revision,
            }));
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
            let record = codec::encode_record(event.kv.create_revision, revision, &event.kv.value);
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
    counters.log_bytes = counters.log_bytes.saturating_add(entry_cost(entry.len()));
    counters.revision = revision;
    Ok(Ok(event))
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
    /// The bytes the log's entries take (see [`entry_cost`]).
    log_bytes: i64,
}

fn missing(name: &str) -> StoreError {
    StoreError::internal(format!("the meta table has no {name}"))
}

impl Counters {
    fn read(meta: &impl ReadableTable<&'static str, i64>) -> Result<Self, StoreError> {
        Ok(Counters {
            revision: get_meta(meta, META_REVISION)?.ok_or_else(|| missing(META_REVISION))?,
            oldest: get_meta(meta, META_OLDEST)?.ok_or_else(|| missing(META_OLDEST))?,
            log_bytes: get_meta(meta, META_LOG_BYTES)?.ok_or_else(|| missing(META_LOG_BYTES))?,
        })
    }

    fn read_only(txn: &ReadTransaction) -> Result<Self, StoreError> {
        let meta = txn.open_table(META).redb("cannot open the meta table")?;
        Self::read(&meta)
    }

    fn write(self, meta: &mut Table<&'static str, i64>) -> Result<(), StoreError> {
        put_meta(meta, META_REVISION, self.revision)?;
        put_meta(meta, META_OLDEST, self.oldest)?;
        put_meta(meta, META_LOG_BYTES, self.log_bytes)
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

    /// Drops up to `batch` of the log's oldest entries beyond `retention`
    /// (at `now`, in ms), with their `log_times` rows; true if more remain
    /// to be dropped.
    fn trim(
        &mut self,
        log: &mut Table<i64, &[u8]>,
        times: &mut Table<i64, i64>,
        retention: &Retention,
        now: i64,
        batch: usize,
    ) -> Result<bool, StoreError> {
        let by_count = self.revision.saturating_sub(retention.events) + 1;
        // Every revision up to a row's is at most as old as the row.
        let cutoff = now.saturating_sub(retention.age_ms);
        let mut by_age = 0;
        for row in times.iter().redb("cannot read the times table")? {
            let (revision, time) = row.redb("cannot read the times table")?;
            if time.value() > cutoff {
                break;
            }
            by_age = revision.value() + 1;
        }
        let keep_from = by_count.max(by_age);
        let mut dropped = 0usize;
        let more = loop {
            if self.oldest > self.revision
                || (self.oldest >= keep_from && self.log_bytes <= retention.bytes)
            {
                break false;
            }
            if dropped == batch {
                break true;
            }
            let cost = log
                .remove(self.oldest)
                .redb("cannot compact the change log")?
                .map_or(0, |entry| entry_cost(entry.value().len()));
            self.log_bytes = self.log_bytes.saturating_sub(cost).max(0);
            self.oldest += 1;
            dropped += 1;
        };
        if dropped > 0 {
            times
                .retain_in(..self.oldest, |_, _| false)
                .redb("cannot compact the times table")?;
        }
        Ok(more)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn entries_cost_their_pages() {
        assert_eq!(entry_cost(0), ENTRY_OVERHEAD);
        assert_eq!(entry_cost(100), 116);
        assert_eq!(entry_cost(2_032), 2_048);
        assert_eq!(entry_cost(2_033), 4_096);
        assert_eq!(entry_cost(4_080), 4_096);
        assert_eq!(entry_cost(4_200), 8_192);
        assert_eq!(entry_cost(usize::MAX), i64::MAX);
    }

    /// A file of layout version 1 (no `log_times`, no `log_bytes`) opens:
    /// its log is counted and dated to the upgrade, and it is trimmed from
    /// then on.
    #[tokio::test]
    async fn a_version_1_file_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let expected_bytes = {
            let store = EmbeddedStore::open(&path).unwrap();
            let revision = store.create("/a", Bytes::from_static(b"1")).await.unwrap();
            store
                .update("/a", Bytes::from_static(b"22"), revision)
                .await
                .unwrap();
            store
                .create("/b", Bytes::from_static(b"333"))
                .await
                .unwrap();
            store.history_size().await.unwrap().bytes
        };
        // Back to version 1.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert(META_FORMAT, 1).unwrap();
                meta.remove(META_LOG_BYTES).unwrap();
            }
            txn.delete_table(TIMES).unwrap();
            txn.commit().unwrap();
        }
        let store = EmbeddedStore::open_with(
            &path,
            EmbeddedOptions {
                retained_age: Duration::from_millis(200),
                ..EmbeddedOptions::default()
            },
        )
        .unwrap();
        assert_eq!(
            store.history_size().await.unwrap(),
            HistorySize {
                events: 3,
                bytes: expected_bytes
            }
        );
        assert_eq!(store.oldest_revision().await.unwrap(), 0);
        let value = store.get("/a").await.unwrap().unwrap();
        assert_eq!((&value.value[..], value.mod_revision), (&b"22"[..], 2));
        // The upgrade dated the log: it ages out.
        tokio::time::sleep(Duration::from_millis(400)).await;
        store.trim_history().await.unwrap();
        assert_eq!(store.history_size().await.unwrap().events, 0);
        assert_eq!(store.oldest_revision().await.unwrap(), 3);
        drop(store);
        // A later layout is refused.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_FORMAT, FORMAT_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        assert!(matches!(
            EmbeddedStore::open(&path),
            Err(StoreError::Internal { .. })
        ));
    }
}
