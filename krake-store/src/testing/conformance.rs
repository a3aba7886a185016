//! The conformance suite every [`Store`] backend must pass.
//!
//! Each public `async fn` here is one test: it takes a store, drives it
//! through the [`Store`] contract and panics with a message saying what went
//! wrong. A backend's test file runs them all with one line of
//! [`store_conformance_tests!`](crate::store_conformance_tests), plus
//! [`compaction_is_reported`] with a backend-specific way to compact:
//!
//! ```ignore
//! krake_store::store_conformance_tests!(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
//!     (store, dir) // the guard (here the folder) lives until the test ends
//! });
//! ```
//!
//! The tests only assume what the [`Store`] trait promises: revisions grow
//! with every write, but not necessarily by one. Each test writes under its
//! own root (`/conformance/<test>-<nonce>/`), so the tests also pass against
//! a store that other tests (or runs) share, as long as nobody else writes
//! under `/conformance/`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;

use crate::{
    EventKind, EventStream, KeyValue, ListOptions, ListPage, Revision, Store, StoreError,
    StoreEvent,
};

/// How long a test waits for one watch event before failing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Generates one `#[tokio::test]` per function of the
/// [conformance suite](crate::testing::conformance), all but
/// [`compaction_is_reported`](crate::testing::conformance::compaction_is_reported),
/// which needs a backend-specific way to compact.
///
/// # Contract
///
/// `store_conformance_tests!(make)` where `make` is an expression (typically
/// an `async { ... }` block or a call of an `async fn`) whose value is a
/// future of `(S, G)`:
///
/// - `S` is the store under test: any type that implements
///   [`Store`](crate::Store) (it is passed on as `&dyn Store`);
/// - `G` is a guard kept alive until the test ends and dropped after the
///   store (a temporary folder, an etcd process, `()`...).
///
/// The expression is evaluated once per test, so every test gets its own
/// store. Each test runs on a multi-threaded tokio runtime (2 workers) and
/// fails if it takes longer than 2 minutes. The tests are named after the
/// conformance functions (`crud_and_revisions`, `create_of_existing_key_fails`,
/// `stale_writes_conflict`, `missing_key_is_not_found`,
/// `delete_with_expected_revision`, `list_is_ordered_and_prefix_scoped`,
/// `list_paginates`, `list_at_older_revision_is_a_snapshot`,
/// `watch_sees_put_update_delete`, `watch_replays_history_then_follows`,
/// `watch_is_prefix_scoped`, `concurrent_cas_writers`,
/// `concurrent_creates_one_wins`) and are generated in the
/// module where the macro is invoked, so invoke it once per module. The
/// calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features.
///
/// ```ignore
/// use krake_store::embedded::EmbeddedStore;
///
/// krake_store::store_conformance_tests!(async {
///     let dir = tempfile::tempdir().expect("a temporary folder");
///     let store = EmbeddedStore::open(dir.path().join("store.redb")).expect("the store opens");
///     (store, dir)
/// });
/// ```
#[macro_export]
macro_rules! store_conformance_tests {
    ($make:expr $(,)?) => {
        $crate::store_conformance_tests!(@tests ($make);
            crud_and_revisions,
            create_of_existing_key_fails,
            stale_writes_conflict,
            missing_key_is_not_found,
            delete_with_expected_revision,
            list_is_ordered_and_prefix_scoped,
            list_paginates,
            list_at_older_revision_is_a_snapshot,
            watch_sees_put_update_delete,
            watch_replays_history_then_follows,
            watch_is_prefix_scoped,
            concurrent_cas_writers,
            concurrent_creates_one_wins,
        );
    };
    (@tests ($make:expr); $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, guard) = $make.await;
                let test = $crate::testing::conformance::$name(&store);
                if ::tokio::time::timeout(::std::time::Duration::from_secs(120), test)
                    .await
                    .is_err()
                {
                    panic!("conformance test {} timed out after 2 minutes", stringify!($name));
                }
                drop(store);
                drop(guard);
            }
        )*
    };
}

/// A fresh root for one test's keys: `/conformance/<test>-<nonce>/`.
fn root(test: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("/conformance/{test}-{nanos:x}{count}/")
}

/// A small JSON value.
fn json(n: u64) -> Bytes {
    Bytes::from(format!("{{\"n\":{n}}}"))
}

/// The `n` of a [`json`] value.
#[track_caller]
fn n_of(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.strip_prefix("{\"n\":"))
        .and_then(|s| s.strip_suffix('}'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected value {:?}", String::from_utf8_lossy(value)))
}

#[track_caller]
fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => panic!("{what}: unexpected error: {error:?}"),
    }
}

async fn get(store: &dyn Store, key: &str) -> Option<KeyValue> {
    ok(store.get(key).await, &format!("get {key}"))
}

async fn create(store: &dyn Store, key: &str, value: Bytes) -> Revision {
    ok(store.create(key, value).await, &format!("create {key}"))
}

async fn update(store: &dyn Store, key: &str, value: Bytes, expected: Revision) -> Revision {
    ok(
        store.update(key, value, expected).await,
        &format!("update {key} at revision {expected}"),
    )
}

async fn list(store: &dyn Store, prefix: &str, options: ListOptions) -> ListPage {
    ok(
        store.list(prefix, &options).await,
        &format!("list {prefix} with {options:?}"),
    )
}

async fn watch(store: &dyn Store, prefix: &str, after: Option<Revision>) -> EventStream {
    ok(
        store.watch(prefix, after).await,
        &format!("watch {prefix} after {after:?}"),
    )
}

async fn revision(store: &dyn Store) -> Revision {
    ok(store.revision().await, "revision")
}

/// The next event of a watch; panics on an error, the end of the stream or
/// after [`EVENT_TIMEOUT`].
async fn next_event(stream: &mut EventStream, what: &str) -> StoreEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Err(_) => panic!("{what}: no watch event within {EVENT_TIMEOUT:?}"),
        Ok(None) => panic!("{what}: the watch stream ended"),
        Ok(Some(Err(error))) => panic!("{what}: the watch stream failed: {error:?}"),
        Ok(Some(Ok(event))) => event,
    }
}

fn key_value(
    key: &str,
    value: &Bytes,
    create_revision: Revision,
    mod_revision: Revision,
) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.clone(),
        create_revision,
        mod_revision,
    }
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

/// Create, get, update, delete and create again, with growing revisions and
/// the right create and mod revisions.
pub async fn crud_and_revisions(store: &dyn Store) {
    let key = format!("{}thing", root("crud"));
    let start = revision(store).await;
    assert_eq!(get(store, &key).await, None, "get of a key never written");

    let created = create(store, &key, json(1)).await;
    assert!(
        created > start,
        "create gave revision {created}, not above the store's revision {start} before it"
    );
    assert_eq!(
        get(store, &key).await,
        Some(key_value(&key, &json(1), created, created)),
        "get after create"
    );
    assert!(
        revision(store).await >= created,
        "the store's revision is behind the create's"
    );

    let updated = update(store, &key, json(2), created).await;
    assert!(
        updated > created,
        "update gave revision {updated}, not above the create's {created}"
    );
    assert_eq!(
        get(store, &key).await,
        Some(key_value(&key, &json(2), created, updated)),
        "get after update (create_revision must stay, mod_revision must move)"
    );

    let deleted = ok(store.delete(&key, None).await, "delete");
    assert!(
        deleted > updated,
        "delete gave revision {deleted}, not above the update's {updated}"
    );
    assert_eq!(get(store, &key).await, None, "get after delete");
    assert!(
        revision(store).await >= deleted,
        "the store's revision is behind the delete's"
    );

    let recreated = create(store, &key, json(3)).await;
    assert!(
        recreated > deleted,
        "create after delete gave revision {recreated}, not above the delete's {deleted}"
    );
    assert_eq!(
        get(store, &key).await,
        Some(key_value(&key, &json(3), recreated, recreated)),
        "a re-created key has a new create_revision"
    );
}

/// Creating a key that exists fails with `AlreadyExists` and changes nothing.
pub async fn create_of_existing_key_fails(store: &dyn Store) {
    let key = format!("{}thing", root("create-twice"));
    let created = create(store, &key, json(1)).await;
    match store.create(&key, json(2)).await {
        Err(StoreError::AlreadyExists { key: reported }) => {
            assert_eq!(reported, key, "AlreadyExists names the key")
        }
        other => panic!("second create of {key}: expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        get(store, &key).await,
        Some(key_value(&key, &json(1), created, created)),
        "a failed create changes nothing"
    );
}

/// Updates and deletes against a stale revision fail with `Conflict`
/// carrying the expected and the actual revision, and change nothing.
pub async fn stale_writes_conflict(store: &dyn Store) {
    let key = format!("{}thing", root("conflict"));
    let created = create(store, &key, json(1)).await;
    let updated = update(store, &key, json(2), created).await;

    match store.update(&key, json(3), created).await {
        Err(StoreError::Conflict {
            key: reported,
            expected,
            actual,
        }) => {
            assert_eq!(
                (reported.as_str(), expected, actual),
                (key.as_str(), created, updated),
                "Conflict of a stale update: (key, expected, actual)"
            );
        }
        other => {
            panic!("update of {key} at stale revision {created}: expected Conflict, got {other:?}")
        }
    }
    match store.delete(&key, Some(created)).await {
        Err(StoreError::Conflict {
            key: reported,
            expected,
            actual,
        }) => {
            assert_eq!(
                (reported.as_str(), expected, actual),
                (key.as_str(), created, updated),
                "Conflict of a stale delete: (key, expected, actual)"
            );
        }
        other => {
            panic!("delete of {key} at stale revision {created}: expected Conflict, got {other:?}")
        }
    }
    assert_eq!(
        get(store, &key).await,
        Some(key_value(&key, &json(2), created, updated)),
        "failed writes change nothing"
    );
    // The right revision still works.
    update(store, &key, json(4), updated).await;
}

/// Updating or deleting a key that does not exist fails with `NotFound`,
/// also with a revision the key had before it was deleted.
pub async fn missing_key_is_not_found(store: &dyn Store) {
    let key = format!("{}thing", root("not-found"));
    let not_found = |result: Result<Revision, StoreError>, what: &str| match result {
        Err(StoreError::NotFound { key: reported }) => {
            assert_eq!(reported, key, "{what}: NotFound names the key")
        }
        other => panic!("{what}: expected NotFound, got {other:?}"),
    };
    not_found(
        store.update(&key, json(1), 1).await,
        "update of a missing key",
    );
    not_found(store.delete(&key, None).await, "delete of a missing key");
    not_found(
        store.delete(&key, Some(1)).await,
        "delete of a missing key with a revision",
    );

    let created = create(store, &key, json(1)).await;
    ok(store.delete(&key, None).await, "delete");
    not_found(
        store.update(&key, json(2), created).await,
        "update of a deleted key",
    );
    not_found(
        store.delete(&key, Some(created)).await,
        "delete of a deleted key",
    );
    not_found(store.delete(&key, None).await, "second delete");
    assert_eq!(get(store, &key).await, None, "nothing re-created the key");
}

/// A delete with the key's current revision succeeds.
pub async fn delete_with_expected_revision(store: &dyn Store) {
    let root = root("delete-expected");
    let key = format!("{root}thing");
    let created = create(store, &key, json(1)).await;
    let updated = update(store, &key, json(2), created).await;
    let deleted = ok(
        store.delete(&key, Some(updated)).await,
        "delete at the current revision",
    );
    assert!(
        deleted > updated,
        "delete gave revision {deleted}, not above the update's {updated}"
    );
    assert_eq!(get(store, &key).await, None, "get after delete");
    let page = list(store, &root, ListOptions::default()).await;
    assert!(page.items.is_empty(), "list after delete: {:?}", page.items);
    assert!(
        page.revision >= deleted,
        "list revision {} is behind the delete's {deleted}",
        page.revision
    );
}

/// Lists are in key order and only hold keys with the prefix (a string
/// prefix: `/a/b/` does not match `/a/bc/x` nor `/a/b`).
pub async fn list_is_ordered_and_prefix_scoped(store: &dyn Store) {
    let root = root("list");
    let names = [
        "a/b/2",
        "a/bc/x",
        "a/b/10",
        "a/b",
        "b/1",
        "a/b/1",
        "a/a",
        "a/b/1/deeper",
    ];
    let mut written = Vec::new();
    for (n, name) in names.iter().enumerate() {
        let key = format!("{root}{name}");
        let value = json(n as u64);
        let revision = create(store, &key, value.clone()).await;
        written.push(key_value(&key, &value, revision, revision));
    }
    let last = written
        .iter()
        .map(|kv| kv.mod_revision)
        .max()
        .unwrap_or_default();
    let expect = |names: &[&str]| -> Vec<KeyValue> {
        names
            .iter()
            .map(|name| {
                let key = format!("{root}{name}");
                written
                    .iter()
                    .find(|kv| kv.key == key)
                    .cloned()
                    .unwrap_or_else(|| panic!("{key} was written"))
            })
            .collect()
    };

    let page = list(store, &format!("{root}a/b/"), ListOptions::default()).await;
    assert_eq!(
        keys(&page.items),
        keys(&expect(&["a/b/1", "a/b/1/deeper", "a/b/10", "a/b/2"])),
        "list {root}a/b/: keys in order, none of a/b or a/bc/x"
    );
    assert_eq!(
        page.items,
        expect(&["a/b/1", "a/b/1/deeper", "a/b/10", "a/b/2"]),
        "list {root}a/b/: values and revisions"
    );
    assert!(!page.more, "a list without limit has no more");
    assert!(
        page.revision >= last,
        "list revision {} is behind the last write's {last}",
        page.revision
    );

    let page = list(store, &format!("{root}a/"), ListOptions::default()).await;
    assert_eq!(
        keys(&page.items),
        keys(&expect(&[
            "a/a",
            "a/b",
            "a/b/1",
            "a/b/1/deeper",
            "a/b/10",
            "a/b/2",
            "a/bc/x"
        ])),
        "list {root}a/"
    );

    let page = list(store, &root, ListOptions::default()).await;
    assert_eq!(
        page.items.len(),
        names.len(),
        "list of the whole root: {:?}",
        keys(&page.items)
    );
    assert!(
        page.items.windows(2).all(|w| w[0].key < w[1].key),
        "list of the whole root is in key order: {:?}",
        keys(&page.items)
    );

    let page = list(store, &format!("{root}zzz/"), ListOptions::default()).await;
    assert_eq!(page.items, vec![], "list of an empty prefix");
    assert!(!page.more, "an empty list has no more");
    assert!(
        page.revision >= last,
        "an empty list still gives the store's revision ({} < {last})",
        page.revision
    );
}

/// Pages of a list with `start_after` and `limit` cover every key once, with
/// `more` set right, at one revision.
pub async fn list_paginates(store: &dyn Store) {
    let root = root("paginate");
    let prefix = format!("{root}p/");
    let mut all = Vec::new();
    for n in 0..25u64 {
        let key = format!("{prefix}k{n:02}");
        let revision = create(store, &key, json(n)).await;
        all.push(key_value(&key, &json(n), revision, revision));
    }
    // Neighbours that must not show up or count for `more`.
    create(store, &format!("{root}o"), json(100)).await;
    create(store, &format!("{root}q"), json(101)).await;
    create(store, &format!("{root}p0"), json(102)).await;

    let mut pages = Vec::new();
    let mut start_after = None;
    let mut at = None;
    loop {
        let page = list(
            store,
            &prefix,
            ListOptions {
                start_after: start_after.clone(),
                limit: Some(10),
                revision: at,
            },
        )
        .await;
        assert!(
            page.items.len() <= 10,
            "a page with limit 10 has {} items",
            page.items.len()
        );
        if let Some(at) = at {
            assert_eq!(
                page.revision, at,
                "a page read at revision {at} reports revision {}",
                page.revision
            );
        }
        at = Some(page.revision);
        start_after = page.items.last().map(|kv| kv.key.clone());
        let more = page.more;
        pages.push(page);
        if !more {
            break;
        }
        assert!(pages.len() < 10, "pagination does not end");
    }
    let sizes: Vec<(usize, bool)> = pages.iter().map(|p| (p.items.len(), p.more)).collect();
    assert_eq!(
        sizes,
        vec![(10, true), (10, true), (5, false)],
        "pages of 25 keys by 10: (items, more)"
    );
    let listed: Vec<KeyValue> = pages.into_iter().flat_map(|p| p.items).collect();
    assert_eq!(
        listed, all,
        "the pages together hold every key once, in order"
    );

    let page = list(
        store,
        &prefix,
        ListOptions {
            limit: Some(25),
            ..ListOptions::default()
        },
    )
    .await;
    assert_eq!(
        (page.items.len(), page.more),
        (25, false),
        "limit equal to the number of keys: (items, more)"
    );
    let page = list(
        store,
        &prefix,
        ListOptions {
            limit: Some(24),
            ..ListOptions::default()
        },
    )
    .await;
    assert_eq!(
        (page.items.len(), page.more),
        (24, true),
        "limit one below the number of keys: (items, more)"
    );
    let page = list(
        store,
        &prefix,
        ListOptions {
            start_after: Some(all[23].key.clone()),
            limit: Some(1),
            ..ListOptions::default()
        },
    )
    .await;
    assert_eq!(
        (keys(&page.items), page.more),
        (vec![all[24].key.as_str()], false),
        "the last page of one item: (keys, more)"
    );
    let page = list(
        store,
        &prefix,
        ListOptions {
            start_after: Some(all[24].key.clone()),
            limit: Some(5),
            ..ListOptions::default()
        },
    )
    .await;
    assert_eq!(
        (page.items.len(), page.more),
        (0, false),
        "start_after the last key: (items, more)"
    );

    let between = format!("{prefix}k05a");
    let page = list(
        store,
        &prefix,
        ListOptions {
            start_after: Some(between),
            limit: Some(2),
            ..ListOptions::default()
        },
    )
    .await;
    assert_eq!(
        keys(&page.items),
        vec![all[6].key.as_str(), all[7].key.as_str()],
        "start_after a key that does not exist"
    );
    let before = format!("{root}a");
    let page = list(
        store,
        &prefix,
        ListOptions {
            start_after: Some(before),
            limit: Some(3),
            ..ListOptions::default()
        },
    )
    .await;
    assert_eq!(
        keys(&page.items),
        keys(&all[..3]),
        "start_after a key before the prefix"
    );
}

/// A list at an older revision shows the data as it was then: page 2 of a
/// list read at page 1's revision does not see later writes.
pub async fn list_at_older_revision_is_a_snapshot(store: &dyn Store) {
    let root = root("snapshot");
    let mut before = Vec::new();
    for n in 0..5u64 {
        let key = format!("{root}a{n}");
        let revision = create(store, &key, json(n)).await;
        before.push(key_value(&key, &json(n), revision, revision));
    }

    let first = list(
        store,
        &root,
        ListOptions {
            limit: Some(2),
            ..ListOptions::default()
        },
    )
    .await;
    assert_eq!(
        (first.items.as_slice(), first.more),
        (&before[..2], true),
        "page 1: (items, more)"
    );
    let at = first.revision;

    // Change every kind of thing after page 1.
    update(store, &before[3].key, json(33), before[3].mod_revision).await;
    ok(store.delete(&before[4].key, None).await, "delete");
    create(store, &format!("{root}a2x"), json(22)).await;
    update(store, &before[0].key, json(10), before[0].mod_revision).await;
    let page = list(store, &root, ListOptions::default()).await;
    assert!(
        page.revision > at,
        "the store's revision did not move after four writes"
    );

    let second = list(
        store,
        &root,
        ListOptions {
            start_after: Some(before[1].key.clone()),
            limit: Some(10),
            revision: Some(at),
        },
    )
    .await;
    assert_eq!(
        second.revision, at,
        "page 2 read at revision {at} reports revision {}",
        second.revision
    );
    assert_eq!(
        second.items.as_slice(),
        &before[2..],
        "page 2 at page 1's revision shows the data as it was then"
    );
    assert!(!second.more, "page 2 holds the rest");

    let whole = list(
        store,
        &root,
        ListOptions {
            revision: Some(at),
            ..ListOptions::default()
        },
    )
    .await;
    assert_eq!(whole.items, before, "the whole list at revision {at}");
    let paged = list(
        store,
        &root,
        ListOptions {
            start_after: Some(before[2].key.clone()),
            limit: Some(1),
            revision: Some(at),
        },
    )
    .await;
    assert_eq!(
        (paged.items.as_slice(), paged.more),
        (&before[3..4], true),
        "a page at revision {at} counts the key deleted since for `more`"
    );

    let now = list(store, &root, ListOptions::default()).await;
    let now: Vec<(String, u64)> = now
        .items
        .iter()
        .map(|kv| (kv.key.trim_start_matches(&root).to_owned(), n_of(&kv.value)))
        .collect();
    let expected: Vec<(String, u64)> = [("a0", 10), ("a1", 1), ("a2", 2), ("a2x", 22), ("a3", 33)]
        .iter()
        .map(|(k, n)| ((*k).to_owned(), *n))
        .collect();
    assert_eq!(now, expected, "the current list");
}

/// A watch from now sees a create (`is_create`), an update and a delete (with
/// the value before the deletion), in order.
pub async fn watch_sees_put_update_delete(store: &dyn Store) {
    let root = root("watch");
    let key = format!("{root}thing");
    let mut events = watch(store, &root, None).await;
    let created = create(store, &key, json(1)).await;
    let updated = update(store, &key, json(2), created).await;
    let deleted = ok(store.delete(&key, Some(updated)).await, "delete");

    let event = next_event(&mut events, "the create").await;
    assert_eq!(
        event,
        StoreEvent {
            kind: EventKind::Put,
            kv: key_value(&key, &json(1), created, created)
        },
        "the create's event"
    );
    assert!(event.is_create(), "a create's event is_create");
    assert_eq!(event.revision(), created);

    let event = next_event(&mut events, "the update").await;
    assert_eq!(
        event,
        StoreEvent {
            kind: EventKind::Put,
            kv: key_value(&key, &json(2), created, updated)
        },
        "the update's event"
    );
    assert!(!event.is_create(), "an update's event is not is_create");

    let event = next_event(&mut events, "the delete").await;
    assert_eq!(
        event,
        StoreEvent {
            kind: EventKind::Delete,
            kv: key_value(&key, &json(2), created, deleted)
        },
        "the delete's event: the value before deletion, mod_revision = the deletion's revision"
    );
    assert!(!event.is_create());
}

/// A watch after an older revision replays the history after it exactly once,
/// then follows live changes.
pub async fn watch_replays_history_then_follows(store: &dyn Store) {
    let root = root("replay");
    let a = format!("{root}a");
    let b = format!("{root}b");
    let start = revision(store).await;
    let r1 = create(store, &a, json(1)).await;
    let r2 = update(store, &a, json(2), r1).await;
    let r3 = create(store, &b, json(3)).await;
    let r4 = ok(store.delete(&a, None).await, "delete");
    let history = [
        StoreEvent {
            kind: EventKind::Put,
            kv: key_value(&a, &json(1), r1, r1),
        },
        StoreEvent {
            kind: EventKind::Put,
            kv: key_value(&a, &json(2), r1, r2),
        },
        StoreEvent {
            kind: EventKind::Put,
            kv: key_value(&b, &json(3), r3, r3),
        },
        StoreEvent {
            kind: EventKind::Delete,
            kv: key_value(&a, &json(2), r1, r4),
        },
    ];

    let mut from_start = watch(store, &root, Some(start)).await;
    let mut from_r1 = watch(store, &root, Some(r1)).await;
    let mut from_r4 = watch(store, &root, Some(r4)).await;
    for (i, expected) in history.iter().enumerate() {
        let event = next_event(&mut from_start, &format!("replay event {i} after {start}")).await;
        assert_eq!(
            &event, expected,
            "replay event {i} of a watch after revision {start}"
        );
    }
    for (i, expected) in history[1..].iter().enumerate() {
        let event = next_event(&mut from_r1, &format!("replay event {i} after {r1}")).await;
        assert_eq!(
            &event, expected,
            "replay event {i} of a watch after revision {r1}"
        );
    }

    let r5 = create(store, &format!("{root}c"), json(5)).await;
    let r6 = create(store, &format!("{root}d"), json(6)).await;
    for (name, stream) in [
        ("start", &mut from_start),
        ("r1", &mut from_r1),
        ("r4", &mut from_r4),
    ] {
        let event = next_event(
            stream,
            &format!("the first live event of the watch after {name}"),
        )
        .await;
        assert_eq!(
            event.revision(),
            r5,
            "the first live event of the watch after {name} (no duplicate, no gap): {event:?}"
        );
        let event = next_event(
            stream,
            &format!("the second live event of the watch after {name}"),
        )
        .await;
        assert_eq!(
            event.revision(),
            r6,
            "the second live event of the watch after {name}: {event:?}"
        );
    }
}

/// A watch only sees keys with its prefix, live and in a replay.
pub async fn watch_is_prefix_scoped(store: &dyn Store) {
    let root = root("watch-prefix");
    let prefix = format!("{root}a/b/");
    let start = revision(store).await;
    let mut live = watch(store, &prefix, None).await;
    for other in ["a/bc/x", "a/b", "a/", "other/a/b/x"] {
        create(store, &format!("{root}{other}"), json(0)).await;
    }
    let inside = format!("{prefix}x");
    let revision = create(store, &inside, json(1)).await;
    let event = next_event(&mut live, "the live event under the prefix").await;
    assert_eq!(
        (event.kv.key.as_str(), event.revision()),
        (inside.as_str(), revision),
        "the first event of a watch of {prefix} (writes outside it must not show)"
    );

    let mut replay = watch(store, &prefix, Some(start)).await;
    let event = next_event(&mut replay, "the replayed event under the prefix").await;
    assert_eq!(
        (event.kv.key.as_str(), event.revision()),
        (inside.as_str(), revision),
        "the first event of a replaying watch of {prefix}"
    );
}

/// 8 writers × 25 compare-and-swap increments of one counter with retries:
/// the counter ends at 200, and a watch sees every increment exactly once, in
/// order.
pub async fn concurrent_cas_writers(store: &dyn Store) {
    const WRITERS: u64 = 8;
    const INCREMENTS: u64 = 25;
    let key = format!("{}counter", root("cas"));
    let created = create(store, &key, json(0)).await;
    let mut events = watch(store, &key, Some(created)).await;

    let writer = |id: u64| {
        let key = key.clone();
        async move {
            let mut revisions = Vec::new();
            let mut conflicts = 0u64;
            while (revisions.len() as u64) < INCREMENTS {
                let current = get(store, &key)
                    .await
                    .unwrap_or_else(|| panic!("writer {id}: the counter vanished"));
                let next = n_of(&current.value) + 1;
                match store.update(&key, json(next), current.mod_revision).await {
                    Ok(revision) => revisions.push(revision),
                    Err(StoreError::Conflict {
                        expected, actual, ..
                    }) => {
                        assert_eq!(
                            expected, current.mod_revision,
                            "writer {id}: Conflict reports the expected revision"
                        );
                        assert!(
                            actual > expected,
                            "writer {id}: Conflict's actual revision {actual} is not above the expected {expected}"
                        );
                        conflicts += 1;
                    }
                    Err(error) => panic!("writer {id}: update failed: {error:?}"),
                }
            }
            (revisions, conflicts)
        }
    };
    let results = futures::future::join_all((0..WRITERS).map(writer)).await;
    let mut revisions: Vec<Revision> = results
        .iter()
        .flat_map(|(r, _)| r.iter().copied())
        .collect();
    revisions.sort_unstable();
    let total = WRITERS * INCREMENTS;
    assert_eq!(revisions.len() as u64, total);
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "two successful updates got the same revision"
    );

    let last = get(store, &key)
        .await
        .unwrap_or_else(|| panic!("the counter vanished"));
    assert_eq!(
        n_of(&last.value),
        total,
        "the counter after {total} successful increments"
    );
    assert_eq!(
        last.mod_revision,
        revisions[revisions.len() - 1],
        "the counter's mod_revision is the last update's"
    );
    assert_eq!(last.create_revision, created);

    for (i, expected) in revisions.iter().enumerate() {
        let event = next_event(&mut events, &format!("increment {}", i + 1)).await;
        assert_eq!(
            (event.kind, event.revision(), n_of(&event.kv.value)),
            (EventKind::Put, *expected, i as u64 + 1),
            "watch event {i} of the counter: (kind, revision, value)"
        );
    }
    let end = update(store, &key, json(0), last.mod_revision).await;
    let event = next_event(&mut events, "the final reset").await;
    assert_eq!(
        event.revision(),
        end,
        "after every increment, the watch sees the next write (no duplicates): {event:?}"
    );
}

/// Concurrent creates of one key: exactly one succeeds, the others get
/// `AlreadyExists`, and the winner's value is stored.
pub async fn concurrent_creates_one_wins(store: &dyn Store) {
    let root = root("create-race");
    for round in 0..5u64 {
        let key = format!("{root}k{round}");
        let attempts = (0..8u64).map(|n| {
            let key = key.clone();
            async move { (n, store.create(&key, json(n)).await) }
        });
        let results = futures::future::join_all(attempts).await;
        let mut winners = Vec::new();
        for (n, result) in results {
            match result {
                Ok(revision) => winners.push((n, revision)),
                Err(StoreError::AlreadyExists { .. }) => {}
                Err(error) => {
                    panic!("round {round}: create {n} failed with {error:?}, not AlreadyExists")
                }
            }
        }
        let [(n, revision)] = winners[..] else {
            panic!(
                "round {round}: {} creates of one key succeeded: {winners:?}",
                winners.len()
            );
        };
        assert_eq!(
            get(store, &key).await,
            Some(key_value(&key, &json(n), revision, revision)),
            "round {round}: the key holds the winner's value"
        );
    }
}

/// Revisions older than what the store keeps are reported as
/// [`StoreError::Compacted`], by lists and watches, and the store keeps
/// working.
///
/// `compact(revision)` must make the store forget every revision older than
/// `revision`, so that neither a list at an older revision nor a watch after
/// one works any more: etcd's compaction at `revision`, or, for a store that
/// compacts by itself, enough writes elsewhere (it may write, but not under
/// `/conformance/`).
pub async fn compaction_is_reported<F, Fut>(store: &dyn Store, compact: F)
where
    F: FnOnce(Revision) -> Fut,
    Fut: Future<Output = ()>,
{
    let root = root("compaction");
    let key = format!("{root}thing");
    let first = create(store, &key, json(0)).await;
    let mut last = first;
    for n in 1..5 {
        last = update(store, &key, json(n), last).await;
    }
    compact(last).await;

    match store
        .list(
            &root,
            &ListOptions {
                revision: Some(first),
                ..ListOptions::default()
            },
        )
        .await
    {
        Err(StoreError::Compacted { oldest, .. }) => assert!(
            oldest > first,
            "Compacted of a list at {first}: the oldest revision {oldest} is not above it"
        ),
        other => panic!("list at compacted revision {first}: expected Compacted, got {other:?}"),
    }
    match store.watch(&root, Some(first)).await {
        Err(StoreError::Compacted { oldest, .. }) => assert!(
            oldest > first,
            "Compacted of a watch after {first}: the oldest revision {oldest} is not above it"
        ),
        Err(error) => {
            panic!("watch after compacted revision {first}: expected Compacted, got {error:?}")
        }
        Ok(mut stream) => match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
            Ok(Some(Err(StoreError::Compacted { oldest, .. }))) => assert!(
                oldest > first,
                "Compacted of a watch after {first}: the oldest revision {oldest} is not above it"
            ),
            Ok(other) => panic!(
                "watch after compacted revision {first}: expected Compacted as the first item, got {other:?}"
            ),
            Err(_) => panic!(
                "watch after compacted revision {first}: nothing within {EVENT_TIMEOUT:?}, expected Compacted"
            ),
        },
    }

    // The store still works at and after the compaction point.
    let current = get(store, &key)
        .await
        .unwrap_or_else(|| panic!("{key} vanished in the compaction"));
    assert_eq!(
        (current.mod_revision, n_of(&current.value)),
        (last, 4),
        "the key after the compaction: (mod_revision, value)"
    );
    let page = list(store, &root, ListOptions::default()).await;
    assert_eq!(
        page.items,
        vec![current.clone()],
        "list after the compaction"
    );
    let page = list(
        store,
        &root,
        ListOptions {
            revision: Some(page.revision),
            ..ListOptions::default()
        },
    )
    .await;
    assert_eq!(
        page.items,
        vec![current.clone()],
        "list at the current revision after the compaction"
    );
    let mut events = watch(store, &root, Some(page.revision)).await;
    let updated = update(store, &key, json(5), last).await;
    let event = next_event(&mut events, "a write after the compaction").await;
    assert_eq!(
        event.revision(),
        updated,
        "a watch from the current revision after the compaction"
    );
}
