//! The watch stream of the embedded store: change-log replay, then live
//! events from the broadcast channel, with catch-up from the log whenever the
//! channel skipped something.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use futures::StreamExt;
use redb::{Database, ReadableDatabase};
use tokio::sync::broadcast::{self, error::RecvError};

use super::{RedbResult, blocking, read_changes};
use crate::{EventStream, Revision, StoreError, StoreEvent};

/// How many revisions one catch-up read covers.
const CHUNK: Revision = 512;

/// A watch of `prefix` after revision `after`. `live` must have been
/// subscribed before `current` (the revision when the watch started) was read.
pub(super) fn stream(
    db: Weak<Database>,
    live: broadcast::Receiver<Arc<StoreEvent>>,
    prefix: String,
    after: Revision,
    current: Revision,
) -> EventStream {
    let state = Watch {
        db,
        live,
        prefix,
        last: after,
        catch_up_to: current,
        held: None,
        pending: VecDeque::new(),
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        Some((item, state))
    })
    .boxed()
}

struct Watch {
    /// The file; the stream does not keep it open.
    db: Weak<Database>,
    live: broadcast::Receiver<Arc<StoreEvent>>,
    prefix: String,
    /// Every change up to this revision has been yielded or skipped.
    last: Revision,
    /// The changes up to this revision come from the log.
    catch_up_to: Revision,
    /// A live event that revealed a gap, yielded after the catch-up.
    held: Option<Arc<StoreEvent>>,
    /// Events read from the log, not yet yielded.
    pending: VecDeque<StoreEvent>,
    /// An error ended the stream.
    done: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<StoreEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if self.last < self.catch_up_to {
                if let Err(error) = self.catch_up().await {
                    self.done = true;
                    return Some(Err(error));
                }
                continue;
            }
            let event = match self.held.take() {
                Some(event) => event,
                None => match self.live.recv().await {
                    Ok(event) => event,
                    // The next event shows the gap; it is filled from the log.
                    Err(RecvError::Lagged(skipped)) => {
                        tracing::debug!(
                            skipped,
                            after = self.last,
                            "an embedded-store watch fell behind; catching up from the change log"
                        );
                        continue;
                    }
                    Err(RecvError::Closed) => {
                        self.done = true;
                        return Some(Err(StoreError::unavailable(
                            "the embedded store was closed",
                        )));
                    }
                },
            };
            let revision = event.revision();
            if revision <= self.last {
                continue;
            }
            if revision > self.last + 1 {
                self.catch_up_to = revision - 1;
                self.held = Some(event);
                continue;
            }
            self.last = revision;
            if event.kv.key.starts_with(&self.prefix) {
                return Some(Ok(Arc::unwrap_or_clone(event)));
            }
        }
    }

    /// Reads the next chunk of `last + 1 ..= catch_up_to` from the log.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        let db = self
            .db
            .upgrade()
            .ok_or_else(|| StoreError::unavailable("the embedded store was closed"))?;
        let prefix = self.prefix.clone();
        let after = self.last;
        let to = self.catch_up_to.min(after.saturating_add(CHUNK));
        let events = blocking(move || {
            let txn = db.begin_read().redb("cannot begin a read")?;
            read_changes(&txn, &prefix, after, to)
        })
        .await?;
        self.pending.extend(events);
        self.last = to;
        Ok(())
    }
}
