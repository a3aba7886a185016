//! The etcd backend: [`EtcdStore`], a [`Store`] over etcd v3 through
//! `etcd-client`.
//!
//! # Layout and revisions
//!
//! Keys and values are stored exactly as given: the key
//! `/kubernetes/applications/ns/web` is the etcd key of the same bytes and
//! the value is the object's JSON. That is Krake's own layout, so a krake-rs
//! server can serve the etcd of an existing Krake deployment, and both can
//! read what the other wrote. There is no key prefix or namespace.
//!
//! Revisions are etcd's: a [`KeyValue`]'s `create_revision` and
//! `mod_revision` are the etcd key's, a write returns the revision of the
//! etcd response header (the revision the write created), and
//! [`Store::revision`] is the header revision of a one-key range request.
//!
//! # Operations
//!
//! | store | etcd |
//! |---|---|
//! | [`Store::get`] | range of one key |
//! | [`Store::list`] | range `[max(prefix, start_after + "\0"), prefix + 1)` sorted by key, `limit`, `revision`; `more` is etcd's. Without a limit (or `Some(0)`), ranges of [`LIST_PAGE`] keys at the revision of the first, until etcd has no more |
//! | [`Store::create`] | txn `create_revision(key) == 0` then put; else [`StoreError::AlreadyExists`] |
//! | [`Store::update`] | txn `create_revision(key) > 0 && mod_revision(key) == expected` then put, else get: [`StoreError::NotFound`] or [`StoreError::Conflict`] with the revision found, from the same transaction |
//! | [`Store::delete`] | with `expected`: the same transaction with a delete; without: a plain delete, [`StoreError::NotFound`] if nothing was deleted |
//! | [`Store::watch`] | watch of the prefix range with `prev_kv`, start revision `after + 1` (or now) |
//! | [`Store::revision`] | header revision of a count-only range of one key |
//!
//! A watch maps etcd's `PUT` events to [`EventKind::Put`] with the new
//! key-value, and `DELETE` events to [`EventKind::Delete`] whose key-value
//! holds the value and `create_revision` of the deleted key (etcd's
//! `prev_kv`) and, as `mod_revision`, the revision of the deletion. If etcd
//! could not give the previous key-value (it was compacted away in the
//! meantime) the value is empty and the `create_revision` is 0.
//!
//! # A cluster: failover
//!
//! Give every member of the cluster. The store keeps one connection per
//! member and sends each request to the member that is the Raft leader,
//! learnt from the members' status in the background (`src/etcd/endpoints.rs`
//! states the rules):
//!
//! - a member that cannot be reached leaves the rotation at once and comes
//!   back when a background probe (every 500 ms) finds it healthy, so after
//!   a member dies the others serve every request;
//! - while the cluster elects a new leader, requests are held (up to
//!   [`EtcdOptions::retry_budget`]) and sent to the new leader, instead of
//!   failing or waiting on a follower that has not noticed its leader is
//!   gone; the pause is about etcd's election (1 to 2 s after a crash
//!   with etcd's default timing, 2.5 to 3 s for a frozen leader, which a
//!   probe notices only by its 1 s timeout; measured in
//!   `tests/etcd_cluster.rs`);
//! - a request is sent again only when that is safe: a read always, a
//!   write only when it certainly was not applied (no connection could be
//!   made, or a member refused it for want of a leader). A write whose fate
//!   is unknown (the connection broke after it was sent, or it timed out)
//!   fails with [`StoreError::Unavailable`], so a create that did happen
//!   never comes back as [`StoreError::AlreadyExists`]; such a write may
//!   have been applied (a watch sees it then).
//! - When no member can be reached at all, requests fail at once.
//!
//! `https://` endpoints use [`EtcdOptions::tls`] ([`EtcdTls`]: the CA and a
//! client certificate), over rustls with aws-lc-rs.
//!
//! # Errors and guarantees
//!
//! - Every request, including the set-up of a watch and any wait for a
//!   leader, is bounded by [`EtcdOptions::request_timeout`]; a request that
//!   does not complete in time, a refused or lost connection, and etcd's
//!   own "unavailable" answers (no leader, request timed out, too many
//!   requests) are [`StoreError::Unavailable`]. Nothing hangs.
//! - [`EtcdStore::connect`] does not talk to etcd: connections are made
//!   lazily and re-made by themselves (by `tonic`) after etcd restarts, so
//!   a server can start before etcd, answer "unavailable" meanwhile, and
//!   recover without being restarted.
//! - Reading a compacted revision ([`ListOptions::revision`], or a watch
//!   `after` older than etcd keeps) is [`StoreError::Compacted`] with the
//!   oldest revision etcd can still serve (for a list, found with one extra
//!   watch request; best effort). A watch reports it as the first item of
//!   its stream, or later if the watch fell behind a compaction.
//! - A watch stream ends after an error: once its member goes away (or
//!   loses its leader) the stream yields one [`StoreError::Unavailable`]
//!   and ends; the caller resumes with a new watch from the last revision
//!   it saw, which goes to a healthy member. HTTP/2 keep-alive pings
//!   ([`EtcdOptions::keep_alive_interval`]) detect a peer that vanished
//!   without closing the connection.
//! - Requests carry etcd's "require leader" flag, so a member cut off from
//!   its cluster refuses requests and cancels watches instead of serving
//!   stale data.
//! - No list fails for its size: etcd is read in pages, and an answer over
//!   the client's decoding limit ([`EtcdOptions::max_answer_bytes`]) is read
//!   again as a smaller page (a [`ListPage`] may then hold fewer items than
//!   the limit, with `more` set). A list without a limit still gathers every
//!   key in memory: callers that list big prefixes read pages themselves
//!   (the API streams them).
//! - Keys that are not UTF-8 (not written by Krake) are
//!   [`StoreError::Internal`].
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), krake_store::StoreError> {
//! use krake_store::{ListOptions, Store};
//! use krake_store::etcd::{EtcdOptions, EtcdStore};
//!
//! let store = EtcdStore::connect(&["http://127.0.0.1:2379".to_owned()], EtcdOptions::default())
//!     .await?;
//! let page = store.list("/kubernetes/applications/", &ListOptions::default()).await?;
//! println!("{} applications at revision {}", page.items.len(), page.revision);
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions, WatchResponse, WatchStream,
};
use futures::StreamExt;

use crate::{
    EventKind, EventStream, KeyValue, ListOptions, ListPage, Revision, Store, StoreError,
    StoreEvent,
};

mod endpoints;
mod failure;
mod tls;

use endpoints::{Kind, Pool, RunError};
pub use tls::{EtcdTls, EtcdTlsError};

/// gRPC status codes (they are the same for every gRPC implementation).
mod grpc_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const ABORTED: i32 = 10;
    pub const OUT_OF_RANGE: i32 = 11;
    pub const UNAVAILABLE: i32 = 14;
}

/// The default of [`EtcdOptions::max_answer_bytes`].
pub const MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The keys per etcd request of a [`Store::list`] without a limit.
pub const LIST_PAGE: usize = 500;

/// The message of etcd's error for a read at a compacted revision.
const COMPACTED_MESSAGE: &str = "required revision has been compacted";
/// The message of etcd's error for a read at a revision it does not have yet.
const FUTURE_REVISION_MESSAGE: &str = "required revision is a future revision";

/// Options of [`EtcdStore::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// The longest any request may take, including the set-up of a watch
    /// (but not the life of its stream); slower requests fail with
    /// [`StoreError::Unavailable`]. Default: 5 s.
    pub request_timeout: Duration,
    /// The longest a connection attempt to etcd may take. Default: 3 s.
    pub connect_timeout: Duration,
    /// The interval of HTTP/2 keep-alive pings while a request or a watch is
    /// open, to notice a peer that went away without closing the connection.
    /// etcd refuses pings more frequent than every 5 s. Default: 10 s.
    pub keep_alive_interval: Duration,
    /// How long to wait for the answer to a keep-alive ping before the
    /// connection counts as broken. Default: 5 s.
    pub keep_alive_timeout: Duration,
    /// The largest answer of etcd to a read or a watch that the client
    /// decodes (tonic's default is 4 MiB). Watches ask etcd to split large
    /// answers. Lists are read in pages of at most
    /// [`LIST_PAGE`] keys, so this is only a safety net for pages of very
    /// large objects: a page over it is read again with fewer keys, never
    /// an error. Default: 64 MiB.
    pub max_answer_bytes: usize,
    /// How long a request may wait for etcd to elect a leader, or for the
    /// store to fail over to another member, before it fails with
    /// [`StoreError::Unavailable`]: requests that arrive during an election
    /// are held and sent to the new leader instead of failing. Bounded by
    /// [`request_timeout`](Self::request_timeout), which also bounds the
    /// whole request. Default: 4 s.
    pub retry_budget: Duration,
    /// TLS for `https://` endpoints (the CA, and a client certificate if
    /// etcd asks for one). `None`: plain `http://`. Default: `None`.
    pub tls: Option<EtcdTls>,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            max_answer_bytes: MAX_DECODING_MESSAGE_SIZE,
            retry_budget: Duration::from_secs(4),
            tls: None,
        }
    }
}

/// A [`Store`] in etcd v3 (see the [module documentation](self) for the
/// mapping and its guarantees).
///
/// Cloning is cheap and shares the connections.
#[derive(Clone)]
pub struct EtcdStore {
    pool: Arc<Pool>,
    endpoints: Vec<String>,
    options: EtcdOptions,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// A store on the etcd cluster at `endpoints` (URLs such as
    /// `http://127.0.0.1:2379`, or `https://` with [`EtcdOptions::tls`];
    /// without a scheme, `https://` with TLS settings and `http://`
    /// without). Give every member of the cluster: the store fails over
    /// between them.
    ///
    /// Does not contact etcd: this succeeds while etcd is down, requests
    /// then fail with [`StoreError::Unavailable`] until it is up. Fails
    /// with [`StoreError::Internal`] if there is no endpoint, one is not a
    /// valid URL, or its scheme does not match the TLS settings. Must be
    /// called within a Tokio runtime (it starts the task that probes the
    /// members).
    pub async fn connect(endpoints: &[String], options: EtcdOptions) -> Result<Self, StoreError> {
        if endpoints.is_empty() {
            return Err(StoreError::internal("no etcd endpoint given"));
        }
        let pool = Pool::connect(endpoints, &options).await?;
        Ok(EtcdStore {
            pool,
            endpoints: endpoints.to_vec(),
            options,
        })
    }

    /// The endpoints this store talks to.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The options this store was made with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// Runs one etcd request through the endpoint pool (failing over and
    /// holding during elections, see `endpoints`): etcd's answer and the
    /// endpoint that gave it.
    async fn request<T, F, Fut>(
        &self,
        kind: Kind,
        what: &(dyn Fn() -> String + Sync),
        attempt: F,
    ) -> Result<(T, &str), StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        match self.pool.run(kind, what, attempt).await {
            Ok((answer, index)) => Ok((answer, self.pool.url(index))),
            Err(RunError::Store(error)) => Err(error),
            Err(RunError::Etcd { error, endpoint }) => Err(map_error(
                error,
                &format!("{} on etcd at {endpoint}", what()),
            )),
        }
    }

    /// Runs `then` (a put or delete of `key`) in one transaction if `key`
    /// exists at mod revision `expected`, else reads `key` in the same
    /// transaction: the revision of the write, or why it did not happen
    /// ([`StoreError::NotFound`] or [`StoreError::Conflict`]).
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        then: TxnOp,
        what: &str,
    ) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when([
                Compare::create_revision(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected),
            ])
            .and_then([then])
            .or_else([TxnOp::get(key, None)]);
        let (response, _) = self
            .request(Kind::Write, &|| format!("{what} of {key}"), |client| {
                let txn = txn.clone();
                async move { client.kv_client().txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            return txn_revision(&response);
        }
        let found = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Get(get) => Some(get.kvs().first().map(|kv| kv.mod_revision())),
                _ => None,
            })
            .ok_or_else(|| {
                StoreError::internal(format!(
                    "etcd answered a failed {what} transaction of {key} without the get"
                ))
            })?;
        Err(match found {
            None => StoreError::NotFound {
                key: key.to_owned(),
            },
            Some(actual) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual,
            },
        })
    }

    /// The revision etcd was last compacted at (the oldest it can serve),
    /// learnt from a watch from revision 1, which etcd cancels with the
    /// compaction revision. `None` if that fails.
    async fn compaction_revision(&self) -> Option<Revision> {
        let mut watch = self.pool.preferred_client().watch_client();
        let probe = async {
            let options = WatchOptions::new().with_start_revision(1);
            let mut stream = watch
                .watch("\0krake-rs/compaction-probe", Some(options))
                .await?;
            while let Some(response) = stream.message().await? {
                if response.compact_revision() > 0 {
                    return Ok(Some(response.compact_revision()));
                }
                if response.canceled() {
                    return Ok(None);
                }
            }
            Ok::<_, etcd_client::Error>(None)
        };
        let wait = self.options.request_timeout.min(Duration::from_secs(2));
        match tokio::time::timeout(wait, probe).await {
            Ok(Ok(found)) => found,
            _ => None,
        }
    }

    /// At most `limit` keys of `[start, end)` at `revision` (`None`: now).
    ///
    /// An answer larger than [`EtcdOptions::max_answer_bytes`] is not an error:
    /// the page is read again with fewer keys (in proportion to the size etcd
    /// reported), and `more` tells the caller to go on. A single key larger
    /// than that (etcd's own request limit makes it unlikely) is read with no
    /// size limit.
    async fn list_page(
        &self,
        prefix: &str,
        start: Vec<u8>,
        end: &[u8],
        limit: usize,
        revision: Option<Revision>,
    ) -> Result<ListPage, StoreError> {
        let mut limit = limit.max(1);
        let max_bytes = self.options.max_answer_bytes.max(1);
        let mut max_answer = Some(max_bytes);
        loop {
            match self
                .range(prefix, start.clone(), end, limit, revision, max_answer)
                .await?
            {
                Range::Page(page) => return Ok(page),
                Range::TooLarge { found } if limit > 1 => {
                    let fitting =
                        (limit as u128).saturating_mul(max_bytes as u128) / (found.max(1) as u128);
                    // A margin for keys larger than the average, and always
                    // smaller than the page that did not fit.
                    let fitting = usize::try_from(fitting / 2).unwrap_or(limit / 2);
                    limit = fitting.clamp(1, limit / 2);
                    tracing::debug!(
                        prefix,
                        found,
                        limit,
                        "an etcd list page exceeded the answer size limit; reading fewer keys"
                    );
                }
                Range::TooLarge { found } => {
                    if max_answer.is_none() {
                        return Err(StoreError::internal(format!(
                            "etcd answered one key of {prefix} with {found} bytes, over any limit"
                        )));
                    }
                    max_answer = None;
                }
            }
        }
    }

    /// One etcd range request of at most `limit` keys: a page, or the size
    /// of an answer over `max_answer`.
    async fn range(
        &self,
        prefix: &str,
        start: Vec<u8>,
        end: &[u8],
        limit: usize,
        revision: Option<Revision>,
        max_answer: Option<usize>,
    ) -> Result<Range, StoreError> {
        let mut get_options = GetOptions::new()
            .with_range(end.to_vec())
            .with_sort(SortTarget::Key, SortOrder::Ascend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        if let Some(revision) = revision {
            get_options = get_options.with_revision(revision);
        }
        let max_answer = max_answer.unwrap_or(usize::MAX);
        let result = self
            .pool
            .run(Kind::Read, &|| format!("a list of {prefix}"), |client| {
                let (start, get_options) = (start.clone(), get_options.clone());
                async move {
                    client
                        .kv_client()
                        .max_decoding_message_size(max_answer)
                        .get(start, Some(get_options))
                        .await
                }
            })
            .await;
        let mut response = match result {
            Ok((response, _)) => response,
            Err(RunError::Etcd {
                error: etcd_client::Error::GRpcStatus(status),
                endpoint,
            }) if i32::from(status.code()) == grpc_code::OUT_OF_RANGE => {
                let requested = revision.unwrap_or_default();
                if let Some(found) = answer_too_large(status.message()) {
                    return Ok(Range::TooLarge { found });
                }
                if status.message().contains(COMPACTED_MESSAGE) {
                    let oldest = self
                        .compaction_revision()
                        .await
                        .unwrap_or(requested.saturating_add(1));
                    return Err(StoreError::Compacted { requested, oldest });
                }
                if status.message().contains(FUTURE_REVISION_MESSAGE) {
                    return Err(StoreError::internal(format!(
                        "revision {requested} is in the future of etcd at {endpoint}"
                    )));
                }
                return Err(StoreError::internal(format!(
                    "etcd at {endpoint} refused the list of {prefix}: {}",
                    status.message()
                )));
            }
            Err(RunError::Etcd { error, endpoint }) => {
                return Err(map_error(
                    error,
                    &format!("a list of {prefix} on etcd at {endpoint}"),
                ));
            }
            Err(RunError::Store(error)) => return Err(error),
        };
        let revision = match revision {
            Some(revision) => revision,
            None => header_revision(response.header())?,
        };
        let more = response.more();
        let items = response
            .take_kvs()
            .into_iter()
            .map(convert_kv)
            .collect::<Result<_, _>>()?;
        Ok(Range::Page(ListPage {
            items,
            revision,
            more,
        }))
    }
}

/// The outcome of one etcd range request.
enum Range {
    /// The keys.
    Page(ListPage),
    /// The answer had `found` bytes, more than the client accepts.
    TooLarge {
        /// The size of etcd's answer.
        found: usize,
    },
}

/// The size of the answer if `message` is the gRPC client's refusal of an
/// answer over its size limit ("decoded message length too large: found N
/// bytes, the limit is: M bytes").
fn answer_too_large(message: &str) -> Option<usize> {
    let (_, rest) = message.split_once("decoded message length too large: found ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The smallest key after `key`.
fn key_after(key: &str) -> Vec<u8> {
    let mut next = key.as_bytes().to_vec();
    next.push(0);
    next
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let (mut response, _) = self
            .request(
                Kind::Read,
                &|| format!("a get of {key}"),
                |client| async move { client.kv_client().get(key, None).await },
            )
            .await?;
        response
            .take_kvs()
            .into_iter()
            .next()
            .map(convert_kv)
            .transpose()
    }

    async fn list(&self, prefix: &str, options: &ListOptions) -> Result<ListPage, StoreError> {
        let (mut start, end) = prefix_range(prefix);
        if let Some(after) = &options.start_after {
            let next = key_after(after);
            if next > start {
                start = next;
            }
        }
        // A start past the end is an empty range for etcd: no special case.
        if let Some(limit) = options.limit.filter(|&limit| limit > 0) {
            return self
                .list_page(prefix, start, &end, limit, options.revision)
                .await;
        }
        // No limit: every key, read in pages at the revision of the first,
        // so that no etcd answer grows with the size of the list.
        let mut page = self
            .list_page(prefix, start, &end, LIST_PAGE, options.revision)
            .await?;
        while page.more {
            let Some(last) = page.items.last() else {
                return Err(StoreError::internal(format!(
                    "etcd answered an empty page of {prefix} with more to come"
                )));
            };
            let next = self
                .list_page(
                    prefix,
                    key_after(&last.key),
                    &end,
                    LIST_PAGE,
                    Some(page.revision),
                )
                .await?;
            page.items.extend(next.items);
            page.more = next.more;
        }
        Ok(page)
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, Vec::from(value), None)]);
        let (response, _) = self
            .request(Kind::Write, &|| format!("a create of {key}"), |client| {
                let txn = txn.clone();
                async move { client.kv_client().txn(txn).await }
            })
            .await?;
        if response.succeeded() {
            txn_revision(&response)
        } else {
            Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            })
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        let put = TxnOp::put(key, Vec::from(value), None);
        self.compare_and_swap(key, expected, put, "an update").await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        if let Some(expected) = expected {
            return self
                .compare_and_swap(key, expected, TxnOp::delete(key, None), "a delete")
                .await;
        }
        let (response, _) = self
            .request(
                Kind::Write,
                &|| format!("a delete of {key}"),
                |client| async move { client.kv_client().delete(key, None).await },
            )
            .await?;
        if response.deleted() == 0 {
            return Err(StoreError::NotFound {
                key: key.to_owned(),
            });
        }
        header_revision(response.header())
    }

    async fn watch(
        &self,
        prefix: &str,
        after: Option<Revision>,
    ) -> Result<EventStream, StoreError> {
        let (key, end) = prefix_range(prefix);
        // Fragments: etcd splits an answer over its request size limit
        // (replaying up to 1,000 revisions at a time), so that no answer
        // grows with the history replayed; each fragment's events are
        // handed out as they come.
        let mut options = WatchOptions::new()
            .with_range(end)
            .with_prev_key()
            .with_fragment();
        if let Some(after) = after {
            options = options.with_start_revision(after.saturating_add(1));
        }
        let max_answer = self.options.max_answer_bytes.max(1);
        let ((stream, created), endpoint) = self
            .request(Kind::Read, &|| format!("a watch of {prefix}"), |client| {
                let (key, options) = (key.clone(), options.clone());
                async move {
                    let mut watch = client.watch_client().max_decoding_message_size(max_answer);
                    let mut stream = watch.watch(key, Some(options)).await?;
                    // The first answer says whether etcd created the watch.
                    let created = stream.message().await?;
                    Ok((stream, created))
                }
            })
            .await?;
        let mut state = WatchState {
            stream: Some(stream),
            pending: VecDeque::new(),
            prefix: prefix.to_owned(),
            last: after,
            endpoint: endpoint.to_owned(),
        };
        match created {
            None => {
                return Err(StoreError::unavailable(format!(
                    "etcd at {endpoint} closed the watch of {prefix} at once"
                )));
            }
            Some(response) => {
                state.handle(response);
                // A watch etcd refused at once is the call's error.
                if state.stream.is_none() && state.pending.len() == 1 {
                    if let Some(Err(error)) = state.pending.pop_front() {
                        return Err(error);
                    }
                }
            }
        }
        Ok(futures::stream::unfold(state, WatchState::next).boxed())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        let options = GetOptions::new().with_count_only();
        let (response, _) = self
            .request(Kind::Read, &|| "a revision request".to_owned(), |client| {
                let options = options.clone();
                async move { client.kv_client().get("\0", Some(options)).await }
            })
            .await?;
        header_revision(response.header())
    }
}

/// A running watch: the etcd stream (kept alive as long as this lives;
/// dropping it cancels the watch), and the items not handed out yet.
struct WatchState {
    /// `None` once the watch ended: only `pending` is left.
    stream: Option<WatchStream>,
    pending: VecDeque<Result<StoreEvent, StoreError>>,
    prefix: String,
    /// The last revision handed out (or the `after` the watch started from).
    last: Option<Revision>,
    /// The member the watch runs on.
    endpoint: String,
}

impl WatchState {
    /// The next item of the stream.
    async fn next(mut self) -> Option<(Result<StoreEvent, StoreError>, Self)> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                if let Ok(event) = &item {
                    self.last = Some(event.revision());
                }
                return Some((item, self));
            }
            let stream = self.stream.as_mut()?;
            match stream.message().await {
                Ok(Some(response)) => self.handle(response),
                Ok(None) => {
                    self.stop(StoreError::unavailable(format!(
                        "etcd at {} closed the watch of {}",
                        self.endpoint, self.prefix
                    )));
                }
                Err(error) => {
                    self.stop(StoreError::unavailable(format!(
                        "the watch of {} on etcd at {} failed: {error}",
                        self.prefix, self.endpoint
                    )));
                }
            }
        }
    }

    /// Queues the events of one answer of etcd, or the end of the watch.
    fn handle(&mut self, response: WatchResponse) {
        if response.compact_revision() > 0 {
            let requested = match self.pending.back() {
                Some(Ok(event)) => event.revision(),
                _ => self.last.unwrap_or_default(),
            };
            self.stop(StoreError::Compacted {
                requested,
                oldest: response.compact_revision(),
            });
            return;
        }
        for event in response.events() {
            match convert_event(event) {
                Ok(event) => self.pending.push_back(Ok(event)),
                Err(error) => {
                    self.stop(error);
                    return;
                }
            }
        }
        if response.canceled() {
            self.stop(StoreError::unavailable(format!(
                "etcd at {} cancelled the watch of {}: {}",
                self.endpoint,
                self.prefix,
                response.cancel_reason()
            )));
        }
    }

    /// Ends the watch with `error` as its last item.
    fn stop(&mut self, error: StoreError) {
        self.stream = None;
        self.pending.push_back(Err(error));
    }
}

/// The key and range end of every key that starts with `prefix` (all keys
/// for the empty prefix).
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (prefix.as_bytes().to_vec(), end);
        }
    }
    // The empty prefix (or only 0xff bytes, impossible in UTF-8): etcd
    // reads the key "\0" and the end "\0" as "every key".
    let key = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    };
    (key, vec![0])
}

/// The revision in an etcd response header.
fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header
        .map(|header| header.revision())
        .ok_or_else(|| StoreError::internal("etcd answered without a response header"))
}

/// The revision of a transaction's writes.
fn txn_revision(response: &TxnResponse) -> Result<Revision, StoreError> {
    header_revision(response.header())
}

/// A store key-value from an etcd one.
fn convert_kv(kv: etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let create_revision = kv.create_revision();
    let mod_revision = kv.mod_revision();
    let (key, value) = kv.into_key_value();
    Ok(KeyValue {
        key: key_string(key)?,
        value: Bytes::from(value),
        create_revision,
        mod_revision,
    })
}

/// A store key from etcd key bytes.
fn key_string(key: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(key).map_err(|error| {
        StoreError::internal(format!(
            "etcd key {:?} is not UTF-8",
            String::from_utf8_lossy(error.as_bytes())
        ))
    })
}

/// A store event from an etcd watch event.
fn convert_event(event: &etcd_client::Event) -> Result<StoreEvent, StoreError> {
    let kv = event
        .kv()
        .ok_or_else(|| StoreError::internal("etcd sent a watch event without a key"))?;
    match event.event_type() {
        EventType::Put => Ok(StoreEvent {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key_string(kv.key().to_vec())?,
                value: Bytes::copy_from_slice(kv.value()),
                create_revision: kv.create_revision(),
                mod_revision: kv.mod_revision(),
            },
        }),
        EventType::Delete => {
            let (value, create_revision) = match event.prev_kv() {
                Some(prev) => (Bytes::copy_from_slice(prev.value()), prev.create_revision()),
                None => (Bytes::new(), 0),
            };
            Ok(StoreEvent {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: key_string(kv.key().to_vec())?,
                    value,
                    create_revision,
                    mod_revision: kv.mod_revision(),
                },
            })
        }
    }
}

/// A store error from an etcd-client error of `what`.
fn map_error(error: etcd_client::Error, what: &str) -> StoreError {
    use etcd_client::Error as E;
    let unavailable = match &error {
        E::GRpcStatus(status) => matches!(
            i32::from(status.code()),
            grpc_code::UNAVAILABLE
                | grpc_code::DEADLINE_EXCEEDED
                | grpc_code::CANCELLED
                | grpc_code::ABORTED
                | grpc_code::UNKNOWN
                | grpc_code::RESOURCE_EXHAUSTED
        ),
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) | E::EndpointError(_) => true,
        _ => false,
    };
    let message = format!("{what} failed: {error}");
    if unavailable {
        StoreError::Unavailable { message }
    } else {
        StoreError::Internal { message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges() {
        assert_eq!(prefix_range("/a/"), (b"/a/".to_vec(), b"/a0".to_vec()));
        assert_eq!(prefix_range(""), (vec![0], vec![0]));
        assert_eq!(prefix_range("a"), (b"a".to_vec(), b"b".to_vec()));
    }
}
