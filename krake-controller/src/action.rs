//! What a reconcile asks for next.

use std::time::Duration;

/// The outcome of a successful reconcile: when to look at the object again
/// if nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `after`, even if nothing changes (a change
    /// triggers it sooner).
    pub fn requeue(after: Duration) -> Self {
        Action {
            requeue_after: Some(after),
        }
    }

    /// Reconcile again only when the object (or something it depends on)
    /// changes, or at the next resync.
    pub fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }

    /// The requeue delay, if any.
    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}
