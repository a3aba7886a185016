//! Watch streams (`?watch`) and blocking requests (`?blocking=<state>`).
//!
//! A watch answers `200 application/x-ndjson` with one line per change,
//! `{"type": "ADDED"|"MODIFIED"|"DELETED", "object": {...}}`, and a bare
//! newline every `heartbeat` seconds (default 10, `0` turns it off). It starts
//! "now", as Krake's does, unless `resource_version=N` asks to resume after
//! revision N (410 if the store no longer has it). The stream ends when the
//! client goes away, when it falls too far behind, or when the server stops.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures::StreamExt;
use krake_data::{KindInfo, WatchEventType};
use krake_store::Revision;
use serde_json::Value;

use super::{Target, int_param};
use crate::auth::{Access, User};
use crate::problem::ApiError;
use crate::selector::LabelSelector;
use crate::state::ApiState;
use crate::watch_hub::{HubError, Subscription};
use krake_data::kinds::core::Verb;

/// The media type of watch streams.
pub const NDJSON: &str = "application/x-ndjson";

/// Answers a watch request on `target`'s collection.
///
/// `access` is what `user` may see now; when the authorizer's decisions
/// change (a Role or RoleBinding changed), the stream checks again, follows
/// the new access, and ends if the user may no longer watch at all.
pub async fn watch(
    state: &ApiState,
    target: &Target,
    user: &User,
    query: &HashMap<String, String>,
    selector: LabelSelector,
    access: Access,
) -> Result<Response, ApiError> {
    let heartbeat: Option<i64> = int_param(query, "heartbeat")?;
    let heartbeat = match heartbeat {
        None => Some(state.config().default_heartbeat),
        Some(0) => None,
        Some(seconds) if seconds > 0 => Some(Duration::from_secs(seconds.unsigned_abs())),
        Some(_) => {
            return Err(ApiError::http_detail(
                StatusCode::BAD_REQUEST,
                "Invalid value for query parameter 'heartbeat': must be >= 0",
            ));
        }
    };
    let after: Option<Revision> = match query.get("resource_version") {
        Some(text) if !text.is_empty() => Some(text.parse().map_err(|_| {
            ApiError::http_detail(
                StatusCode::BAD_REQUEST,
                format!("Invalid value for query parameter 'resource_version': {text:?}"),
            )
        })?),
        _ => None,
    };
    let subscription = state
        .hub()
        .subscribe(&target.kind.prefix(None), after)
        .await?;
    let namespace = target.namespace.clone();
    let guard = state.metrics().watch_opened();
    let recheck = (state.clone(), target.clone(), user.clone());
    let generation = state.authorizer().generation();
    let events = subscription
        .scan((access, generation), move |(access, generation), item| {
            let (state, target, user) = &recheck;
            let now = state.authorizer().generation();
            if now != *generation {
                *generation = now;
                match target.authorize(state, user, target.kind.plural, Verb::List) {
                    Ok(new_access) => *access = new_access,
                    Err(_) => {
                        tracing::info!(user = user.name(), "watch ended: access revoked");
                        return futures::future::ready(None);
                    }
                }
            }
            let keep = match &item {
                Ok(item) => {
                    (namespace.is_none() || item.namespace == namespace)
                        && access.allows(item.namespace.as_deref())
                        && (selector.is_empty() || selector.matches(&item.labels))
                }
                Err(_) => true,
            };
            futures::future::ready(Some(keep.then_some(item)))
        })
        .filter_map(futures::future::ready);
    let body = ndjson_body(events.boxed(), heartbeat, guard, state.metrics().clone());
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(response)
}

/// The response body of a watch: event lines and heartbeats, until the
/// subscription ends.
fn ndjson_body(
    subscription: Subscription,
    heartbeat: Option<Duration>,
    guard: crate::metrics::WatchGuard,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Body {
    // A period too long to add to the clock (a client asking for 10^18 s)
    // means no heartbeat at all.
    let ticker = heartbeat.and_then(|period| {
        let first = tokio::time::Instant::now().checked_add(period)?;
        let mut interval = tokio::time::interval_at(first, period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Some(interval)
    });
    let stream = futures::stream::unfold(
        (subscription, ticker, (guard, metrics)),
        |(mut subscription, mut ticker, (guard, metrics))| async move {
            let next = match ticker.as_mut() {
                Some(ticker) => tokio::select! {
                    item = subscription.next() => Some(item),
                    _ = ticker.tick() => None,
                },
                None => Some(subscription.next().await),
            };
            match next {
                None => Some((
                    Ok::<Bytes, std::io::Error>(Bytes::from_static(b"\n")),
                    (subscription, ticker, (guard, metrics)),
                )),
                Some(Some(Ok(item))) => Some((
                    Ok(item.line.clone()),
                    (subscription, ticker, (guard, metrics)),
                )),
                Some(Some(Err(err))) => {
                    match err {
                        HubError::Shutdown => {}
                        HubError::Lagged(behind) => {
                            metrics.slow_client_cut("watch_lagged");
                            tracing::warn!(
                                behind,
                                "watch stream cut: the client fell too many events behind \
                                 (it may resume from the last resource_version it saw)"
                            );
                        }
                        other => tracing::info!(error = %other, "watch stream ended"),
                    }
                    None
                }
                Some(None) => None,
            }
        },
    );
    Body::from_stream(stream)
}

/// The state `?blocking=<state>` asks for, on applications and clusters
/// (`None` when absent or `False`).
pub fn blocking_state(kind: &KindInfo, query: &HashMap<String, String>) -> Option<String> {
    if kind.api != "kubernetes" || !matches!(kind.kind, "Application" | "Cluster") {
        return None;
    }
    query
        .get("blocking")
        .filter(|value| value.as_str() != "False")
        .map(|value| value.to_ascii_uppercase())
}

/// Waits until the object reaches `status.state == wanted` (or, with
/// `DELETED`, disappears), watching only that object, for at most the
/// configured blocking timeout; answers with its latest version.
pub async fn wait_for(
    state: &ApiState,
    target: &Target,
    after: Revision,
    mut object: Value,
    wanted: &str,
) -> Result<Value, ApiError> {
    if crate::object::state(&object).is_some_and(|s| s.eq_ignore_ascii_case(wanted)) {
        return Ok(object);
    }
    let key = target.key()?;
    let mut subscription = state
        .hub()
        .subscribe(&target.kind.prefix(None), Some(after))
        .await?;
    let deadline = tokio::time::Instant::now() + state.config().blocking_timeout;
    loop {
        let item = match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(Ok(item))) => item,
            Ok(Some(Err(_)) | None) | Err(_) => return Ok(object),
        };
        if item.key != key {
            continue;
        }
        object = item.decode_object();
        if item.event_type == WatchEventType::Deleted {
            if wanted == "DELETED" {
                if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
                    status.insert("state".to_owned(), Value::from("DELETED"));
                }
            }
            return Ok(object);
        }
        if crate::object::state(&object).is_some_and(|s| s.eq_ignore_ascii_case(wanted)) {
            return Ok(object);
        }
    }
}
