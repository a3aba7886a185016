//! Fault injection ([`Faults`]) and request counting ([`RequestStats`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::storage::Store;

/// Faults to inject into a running fake, as a cluster under trouble
/// would show them. Every setting applies at once to new requests.
#[derive(Debug)]
pub struct Faults {
    refuse: watch::Sender<bool>,
    cut: watch::Sender<u64>,
    fail: Mutex<Option<u16>>,
    fail_next: Mutex<(u32, u16)>,
    slow: Mutex<Option<Duration>>,
    garbage: std::sync::atomic::AtomicBool,
    /// The store whose watch history an outage ends.
    store: std::sync::Arc<Store>,
}

impl Faults {
    pub(crate) fn new(store: std::sync::Arc<Store>) -> Self {
        Self {
            store,
            refuse: watch::channel(false).0,
            cut: watch::channel(0).0,
            fail: Mutex::new(None),
            fail_next: Mutex::new((0, 0)),
            slow: Mutex::new(None),
            garbage: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Faults {
    /// `true`: the cluster goes away: open connections (and their watches)
    /// are closed at once and new ones are accepted and closed at once
    /// (clients see a connection or TLS handshake error). `false`: it
    /// serves again, on the same port, as a restarted API server does: its
    /// watch cache starts at the current resourceVersion, so a watch
    /// resuming from an older one gets `410 Expired` and the client lists
    /// again.
    pub fn refuse_connections(&self, refuse: bool) {
        if !refuse && *self.refuse.borrow() {
            self.store.lock().compact();
        }
        self.refuse.send_replace(refuse);
    }

    /// Every request is answered with this HTTP status and a Status body
    /// (503 ServiceUnavailable, 500 InternalError, 429 TooManyRequests,
    /// ...); `None` ends it.
    pub fn fail_requests(&self, status: Option<u16>) {
        *self.fail.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// The next `n` requests are answered with `status`.
    pub fn fail_next(&self, n: u32, status: u16) {
        *self.fail_next.lock().unwrap_or_else(|p| p.into_inner()) = (n, status);
    }

    /// Every answer is delayed by this long; `None` ends it.
    pub fn slow(&self, delay: Option<Duration>) {
        *self.slow.lock().unwrap_or_else(|p| p.into_inner()) = delay;
    }

    /// `true`: every authenticated request is answered `200 OK` with
    /// `Content-Type: application/json` and a body that is not JSON, as a
    /// broken proxy in front of a cluster might answer; `false` ends it.
    pub fn answer_garbage(&self, garbage: bool) {
        self.garbage.store(garbage, Ordering::Relaxed);
    }

    /// Whether answers are garbage now.
    pub(crate) fn is_answering_garbage(&self) -> bool {
        self.garbage.load(Ordering::Relaxed)
    }

    /// Closes every open watch stream now (the clients see their watches
    /// end, as when an API server restarts its watch cache).
    pub fn cut_watches(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// The delay to add to an answer.
    pub(crate) fn delay(&self) -> Option<Duration> {
        *self.slow.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status to fail this request with, if any (counts down `fail_next`).
    pub(crate) fn failure(&self) -> Option<u16> {
        {
            let mut next = self.fail_next.lock().unwrap_or_else(|p| p.into_inner());
            if next.0 > 0 {
                next.0 -= 1;
                return Some(next.1);
            }
        }
        *self.fail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows `refuse_connections`.
    pub(crate) fn refusing(&self) -> watch::Receiver<bool> {
        self.refuse.subscribe()
    }

    /// Ends every fault: connections accepted, no failures, no delay.
    pub fn clear(&self) {
        self.refuse_connections(false);
        self.fail_requests(None);
        self.fail_next(0, 0);
        self.slow(None);
        self.answer_garbage(false);
    }

    /// Whether new connections are refused now.
    pub(crate) fn is_refusing(&self) -> bool {
        *self.refuse.borrow()
    }

    /// Follows `cut_watches`.
    pub(crate) fn cuts(&self) -> watch::Receiver<u64> {
        self.cut.subscribe()
    }
}

/// The verbs [`RequestStats`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Apply,
    Delete,
}

/// Requests a fake has answered since it started (or since the last
/// [`reset`](RequestStats::reset)), counted per verb as the API server's
/// audit log names them. Server-side apply counts as `patch` (its audit
/// verb) and also under [`apply`](RequestStats::apply).
#[derive(Debug, Default)]
pub struct RequestStats {
    total: AtomicU64,
    verbs: [AtomicU64; 8],
    open_watches: AtomicI64,
}

impl RequestStats {
    pub(crate) fn request(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self, verb: Verb) {
        self.verbs[verb as usize].fetch_add(1, Ordering::Relaxed);
        if verb == Verb::Apply {
            self.verbs[Verb::Patch as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn watch_opened(&self) {
        self.open_watches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn watch_closed(&self) {
        self.open_watches.fetch_sub(1, Ordering::Relaxed);
    }

    fn verb(&self, verb: Verb) -> u64 {
        self.verbs[verb as usize].load(Ordering::Relaxed)
    }

    /// Every request, discovery, failed and refused-by-auth ones included.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// `get` of one object (or its status).
    pub fn get(&self) -> u64 {
        self.verb(Verb::Get)
    }

    /// `list` of a collection.
    pub fn list(&self) -> u64 {
        self.verb(Verb::List)
    }

    /// `watch` requests (opened streams).
    pub fn watch(&self) -> u64 {
        self.verb(Verb::Watch)
    }

    /// `create` (POST).
    pub fn create(&self) -> u64 {
        self.verb(Verb::Create)
    }

    /// `update` (PUT).
    pub fn update(&self) -> u64 {
        self.verb(Verb::Update)
    }

    /// `patch`, server-side apply included.
    pub fn patch(&self) -> u64 {
        self.verb(Verb::Patch)
    }

    /// Server-side apply patches alone.
    pub fn apply(&self) -> u64 {
        self.verb(Verb::Apply)
    }

    /// `delete` and `deletecollection`.
    pub fn delete(&self) -> u64 {
        self.verb(Verb::Delete)
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> i64 {
        self.open_watches.load(Ordering::Relaxed)
    }

    /// Sets the counters back to zero (open watches stay counted).
    pub fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        for v in &self.verbs {
            v.store(0, Ordering::Relaxed);
        }
    }

    /// Writes together: create, update, patch (apply included) and delete.
    pub fn writes(&self) -> u64 {
        self.create() + self.update() + self.patch() + self.delete()
    }
}
