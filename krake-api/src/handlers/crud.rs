//! Create, read, list, update and delete, for every kind.

use std::collections::HashMap;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{StreamExt as _, TryStreamExt as _};
use krake_data::Timestamp;
use krake_data::kinds::core::Verb;
use krake_data::metadata::CASCADE_DELETION_FINALIZER;
use krake_data::registry::{ParseMode, READONLY_FIELDS};
use krake_store::{ListOptions, StoreError};
use serde_json::{Map, Value};

use super::transaction::{Change, read_modify_write};
use super::{KindRef, Target, flag, int_param, parse_json, watch};
use crate::auth::{Access, User};
use crate::object;
use crate::pagination::{ContinueToken, next_page_size};
use crate::problem::ApiError;
use crate::selector::LabelSelector;
use crate::state::ApiState;

type Params = Path<HashMap<String, String>>;
type QueryMap = Query<HashMap<String, String>>;

/// `POST` a new object.
pub async fn create(
    State(state): State<ApiState>,
    Extension(KindRef(kind)): Extension<KindRef>,
    Extension(user): Extension<User>,
    Path(params): Params,
    Query(query): QueryMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::new(kind, &params);
    target.authorize(&state, &user, kind.plural, Verb::Create)?;
    let uid = uuid::Uuid::new_v4().to_string();
    let now = Timestamp::now();
    // Fast path: a valid body goes straight into the typed kind and is
    // serialized once. Anything else takes the general path below, which
    // gives the same bytes for a valid body and Krake's errors otherwise.
    let fast = (kind.create_object)(
        &body,
        &krake_data::registry::NewObject {
            namespace: target.namespace.as_deref(),
            uid: &uid,
            now,
        },
    );
    let (name, encoded) = match fast {
        Some(created) => (created.name, Bytes::from(created.bytes)),
        None => create_body(kind, &target, &body, &uid, now)?,
    };
    let target = Target {
        name: Some(name),
        ..target
    };
    let key = target.key()?;
    let revision = match state.store().create(&key, encoded.clone()).await {
        Ok(revision) => revision,
        Err(StoreError::AlreadyExists { .. }) => {
            return Err(ApiError::already_exists(
                kind.kind,
                target.ns(),
                target.name(),
            ));
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(wanted) = watch::blocking_state(kind, &query) {
        let object = object::decode(&encoded, revision)?;
        let object = watch::wait_for(&state, &target, revision, object, &wanted).await?;
        return Ok(Json(object).into_response());
    }
    // The answer is the stored bytes with the revision, not a second
    // serialization of the object.
    stored_response(&encoded, revision)
}

/// The general path of a create: the body parsed as JSON, stripped of the
/// fields the server sets, parsed and validated as the kind (Krake's
/// errors), then given its namespace, uid and times. Returns the name and
/// the bytes to store.
fn create_body(
    kind: &'static krake_data::KindInfo,
    target: &Target,
    body: &[u8],
    uid: &str,
    now: Timestamp,
) -> Result<(String, Bytes), ApiError> {
    let body = parse_json(body)?;
    let mut object = kind.parse(body, ParseMode::Create)?;
    let now = object::timestamp(now);
    let metadata = object::metadata_mut(&mut object);
    if kind.is_namespaced() {
        metadata.insert(
            "namespace".to_owned(),
            target
                .namespace
                .clone()
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
    }
    metadata.insert("uid".to_owned(), Value::String(uid.to_owned()));
    metadata.insert("created".to_owned(), now.clone());
    metadata.insert("modified".to_owned(), now);
    let name = metadata
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok((name, object::encode(&object)?))
}

/// An answer of one object: its stored bytes with `resource_version` set.
fn stored_response(bytes: &[u8], revision: krake_store::Revision) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(bytes.len() + 32);
    object::StoredObject::parse(bytes)?.write(revision, &mut body);
    Ok(json_response(body))
}

/// A `200 application/json` answer of `body`.
fn json_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// `GET` one object.
pub async fn read(
    State(state): State<ApiState>,
    Extension(KindRef(kind)): Extension<KindRef>,
    Extension(user): Extension<User>,
    Path(params): Params,
) -> Result<Response, ApiError> {
    let target = Target::new(kind, &params);
    target.authorize(&state, &user, kind.plural, Verb::Get)?;
    let kv = state
        .store()
        .get(&target.key()?)
        .await?
        .ok_or_else(|| target.not_found())?;
    stored_response(&kv.value, kv.mod_revision)
}

/// `GET` a collection: a list, or a watch with `?watch`.
///
/// The store is read in pages (of about a megabyte, see
/// [`crate::pagination::PAGE_BYTES`]), all at the revision
/// of the first page (one consistent snapshot). A list that fits in one page
/// is answered at once, with a `Content-Length`. A longer one is streamed: the
/// head and each page are written as they are read, so the server holds one
/// page at a time whatever the size of the list; the bytes are the same as
/// those of a list answered at once. An error before the first byte is
/// Krake's error answer; a store error after it (etcd gone, or the snapshot
/// compacted while a slow client reads) ends the body early, which the client
/// sees as a broken answer, never as a shorter list.
///
/// With `?limit=N` the answer is one page of `N` objects with a continue
/// token in its metadata, which precedes the items: that page is gathered
/// before it is written (its size is the client's choice).
pub async fn list(
    State(state): State<ApiState>,
    Extension(KindRef(kind)): Extension<KindRef>,
    Extension(user): Extension<User>,
    Path(params): Params,
    Query(query): QueryMap,
) -> Result<Response, ApiError> {
    let target = Target::new(kind, &params);
    let access = target.authorize(&state, &user, kind.plural, Verb::List)?;
    let selector = match query.get("label_selector") {
        Some(text) => LabelSelector::parse(text)
            .map_err(|err| ApiError::http_detail(StatusCode::BAD_REQUEST, err))?,
        None => LabelSelector::default(),
    };
    if flag(&query, "watch") {
        return watch::watch(&state, &target, &user, &query, selector, access).await;
    }
    let limit: Option<usize> = int_param(&query, "limit")?;
    let limit = limit.filter(|&l| l > 0);
    let token = match query.get("continue") {
        Some(text) => Some(ContinueToken::decode(text).ok_or_else(|| {
            ApiError::http_detail(StatusCode::BAD_REQUEST, "Invalid continue token.")
        })?),
        None => None,
    };
    let store = state.store().clone();
    if let Some(token) = &token {
        // A token names a revision the store has served; one from the future
        // (forged or garbled) is the client's error, not the store's.
        if token.revision < 0 || token.revision > store.revision().await? {
            return Err(ApiError::http_detail(
                StatusCode::BAD_REQUEST,
                "Invalid continue token.",
            ));
        }
    }
    let prefix = kind.prefix(target.ns());
    let first_page = next_page_size(0, 0);
    let options = ListOptions {
        start_after: token.as_ref().map(|t| t.last_key.clone()),
        limit: Some(limit.map_or(first_page, |limit| limit.min(first_page))),
        revision: token.as_ref().map(|t| t.revision),
    };
    let page = store.list(&prefix, &options).await?;
    let mut items = ListItems::new(selector, access);
    let revision = page.revision;
    let mut body = Vec::new();
    // An empty page has nothing to go on from (no store gives one with
    // more to come).
    let mut more = page.more && !page.items.is_empty();
    let mut last_key = page.items.last().map(|kv| kv.key.clone());
    items.write(&page.items, &mut body)?;
    drop(page);
    let Some(limit) = limit else {
        if !more {
            let mut answer = list_head(kind, revision, None)?;
            answer.extend_from_slice(&body);
            answer.extend_from_slice(b"]}");
            return Ok(json_response(answer));
        }
        let mut first = list_head(kind, revision, None)?;
        first.extend_from_slice(&body);
        let next = NextPage {
            store,
            prefix,
            revision,
            // Set: the page was not empty.
            after: last_key.unwrap_or_default(),
            items,
        };
        let rest = futures::stream::try_unfold(Some(next), |next| async move {
            match next {
                None => Ok(None),
                Some(next) => next.read().await.map(Some),
            }
        });
        let stream = futures::stream::once(async move { Ok(Bytes::from(first)) }).chain(rest);
        let stream = stream.inspect_err(|error: &ApiError| {
            tracing::warn!(%error, "a streamed list ended early");
        });
        let mut response = Response::new(axum::body::Body::from_stream(stream));
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        return Ok(response);
    };
    let mut count = items.read;
    while more && count < limit {
        let options = ListOptions {
            start_after: last_key.clone(),
            limit: Some((limit - count).min(items.next_page_size())),
            revision: Some(revision),
        };
        let page = store.list(&prefix, &options).await?;
        more = page.more;
        if let Some(last) = page.items.last() {
            last_key = Some(last.key.clone());
        } else {
            more = false;
        }
        items.write(&page.items, &mut body)?;
        count = items.read;
    }
    let token = match (more, last_key) {
        (true, Some(last_key)) => Some(ContinueToken { revision, last_key }),
        _ => None,
    };
    let mut answer = list_head(kind, revision, token.as_ref())?;
    answer.extend_from_slice(&body);
    answer.extend_from_slice(b"]}");
    Ok(json_response(answer))
}

/// A list's answer up to and including `"items":[`.
fn list_head(
    kind: &'static krake_data::KindInfo,
    revision: krake_store::Revision,
    token: Option<&ContinueToken>,
) -> Result<Vec<u8>, ApiError> {
    let mut metadata = Map::new();
    metadata.insert(
        "resource_version".to_owned(),
        Value::String(revision.to_string()),
    );
    if let Some(token) = token {
        metadata.insert("continue".to_owned(), Value::String(token.encode()));
    }
    let head = serde_json::to_vec(&serde_json::json!({
        "api": kind.api,
        "kind": kind.list_kind,
        "metadata": metadata,
    }))
    .map_err(|err| ApiError::Internal(err.to_string()))?;
    let mut out = Vec::with_capacity(head.len() + 16);
    // `{...}` without its closing brace, then the items.
    out.extend_from_slice(head.strip_suffix(b"}").unwrap_or(&head));
    out.extend_from_slice(b",\"items\":[");
    Ok(out)
}

/// Writes the items of a list: the stored bytes with their revision, not a
/// decoding and encoding again (a list of thousands of objects costs a scan),
/// filtered by label selector and by the namespaces the user may see.
struct ListItems {
    selector: LabelSelector,
    access: Access,
    /// No item written yet (no comma before the next).
    first: bool,
    /// The store items seen, written or filtered out.
    read: usize,
    /// Their stored bytes.
    bytes: usize,
}

impl ListItems {
    fn new(selector: LabelSelector, access: Access) -> Self {
        ListItems {
            selector,
            access,
            first: true,
            read: 0,
            bytes: 0,
        }
    }

    /// The objects of the next store read, sized from those seen so far.
    fn next_page_size(&self) -> usize {
        next_page_size(self.read, self.bytes)
    }

    /// Appends the items of `page` that pass the filters to `out`.
    fn write(&mut self, page: &[krake_store::KeyValue], out: &mut Vec<u8>) -> Result<(), ApiError> {
        let filtered = !self.selector.is_empty() || self.access != Access::All;
        out.reserve(page.iter().map(|kv| kv.value.len() + 32).sum());
        for kv in page {
            self.read += 1;
            self.bytes += kv.value.len();
            let stored = object::StoredObject::parse(&kv.value)?;
            if filtered {
                let (namespace, labels) = stored.namespace_and_labels();
                if !self.access.allows(namespace.as_deref())
                    || !(self.selector.is_empty() || self.selector.matches(&labels))
                {
                    continue;
                }
            }
            if !self.first {
                out.push(b',');
            }
            self.first = false;
            stored.write(kv.mod_revision, out);
        }
        Ok(())
    }
}

/// The rest of a streamed list: the page after `after` at `revision`.
struct NextPage {
    store: std::sync::Arc<dyn krake_store::Store>,
    prefix: String,
    revision: krake_store::Revision,
    after: String,
    items: ListItems,
}

impl NextPage {
    /// The bytes of the next page, and what follows it (`None`: the list
    /// is complete; its last bytes close it).
    async fn read(mut self) -> Result<(Bytes, Option<NextPage>), ApiError> {
        let options = ListOptions {
            start_after: Some(self.after.clone()),
            limit: Some(self.items.next_page_size()),
            revision: Some(self.revision),
        };
        let page = self.store.list(&self.prefix, &options).await?;
        let mut out = Vec::new();
        self.items.write(&page.items, &mut out)?;
        match page.items.last() {
            Some(last) if page.more => {
                self.after = last.key.clone();
                Ok((Bytes::from(out), Some(self)))
            }
            _ => {
                out.extend_from_slice(b"]}");
                Ok((Bytes::from(out), None))
            }
        }
    }
}

/// Copies the fields a `PUT` may change from `body` onto `current`: every
/// top-level field but `api`, `kind` and `status`, and every metadata field
/// but the read-only ones. Lists and maps are replaced, not merged.
fn merge_update(current: &Value, body: &Value) -> Value {
    let mut merged = current.clone();
    let Some(body) = body.as_object() else {
        return merged;
    };
    for (key, value) in body {
        match key.as_str() {
            "api" | "kind" | "status" => {}
            "metadata" => {
                let Some(metadata) = value.as_object() else {
                    continue;
                };
                let target = object::metadata_mut(&mut merged);
                for (field, value) in metadata {
                    let path = format!("metadata.{field}");
                    if !READONLY_FIELDS.contains(&path.as_str()) {
                        target.insert(field.clone(), value.clone());
                    }
                }
            }
            _ => {
                if let Some(map) = merged.as_object_mut() {
                    map.insert(key.clone(), value.clone());
                }
            }
        }
    }
    merged
}

/// Krake's 400 for a changed immutable field, named by its last segment.
pub(crate) fn immutable_error(field: &str) -> ApiError {
    let name = field.rsplit('.').next().unwrap_or(field);
    ApiError::update_error(
        StatusCode::BAD_REQUEST,
        format!("Trying to update an immutable field: {name}"),
    )
}

/// `PUT` an object: spec and metadata.
pub async fn update(
    State(state): State<ApiState>,
    Extension(KindRef(kind)): Extension<KindRef>,
    Extension(user): Extension<User>,
    Path(params): Params,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Target::new(kind, &params);
    target.authorize(&state, &user, kind.plural, Verb::Update)?;
    let raw = parse_json(&body)?;
    let precondition = object::resource_version(&raw)?;
    let mut body = kind.parse(raw, ParseMode::Full)?;
    // A body without a namespace means the one of the URL.
    if let Some(namespace) = &target.namespace {
        let metadata = object::metadata_mut(&mut body);
        if metadata.get("namespace").is_none_or(Value::is_null) {
            metadata.insert("namespace".to_owned(), Value::String(namespace.clone()));
        }
    }
    let body_finalizers = object::finalizers(&body);
    let outcome = read_modify_write(&state, &target, precondition, |current| {
        let mut merged = merge_update(&current, &body);
        if let Some(field) = kind
            .changed_immutable_fields(&current, &merged)
            .into_iter()
            .find(|f| !f.starts_with("status."))
        {
            return Err(immutable_error(field));
        }
        if object::is_deleted(&current) {
            let existing = object::finalizers(&current);
            if !body_finalizers.iter().all(|f| existing.contains(f)) {
                return Err(ApiError::update_error(
                    StatusCode::CONFLICT,
                    "Finalizers can only be removed if a deletion is in progress.",
                ));
            }
        }
        if merged == current {
            return Err(ApiError::update_error(
                StatusCode::BAD_REQUEST,
                "The body contained no update.",
            ));
        }
        object::metadata_mut(&mut merged)
            .insert("modified".to_owned(), object::timestamp(Timestamp::now()));
        if object::is_deleted(&merged) && object::finalizers(&merged).is_empty() {
            Ok(Change::Remove(merged))
        } else {
            Ok(Change::Write(merged))
        }
    })
    .await?;
    Ok(Json(outcome.object).into_response())
}

/// `DELETE` an object: marks it deleted and appends `cascade_deletion`
/// (`?force=True` removes applications and clusters at once).
pub async fn delete(
    State(state): State<ApiState>,
    Extension(KindRef(kind)): Extension<KindRef>,
    Extension(user): Extension<User>,
    Path(params): Params,
    Query(query): QueryMap,
) -> Result<Response, ApiError> {
    let target = Target::new(kind, &params);
    target.authorize(&state, &user, kind.plural, Verb::Delete)?;
    let forceable = kind.api == "kubernetes" && matches!(kind.kind, "Application" | "Cluster");
    if forceable && query.get("force").map(String::as_str) == Some("True") {
        return force_delete(&state, &target).await;
    }
    let outcome = read_modify_write(&state, &target, None, |mut current| {
        if object::is_deleted(&current) {
            return Ok(Change::Keep(current));
        }
        let metadata = object::metadata_mut(&mut current);
        metadata.insert("deleted".to_owned(), object::timestamp(Timestamp::now()));
        let finalizers = metadata
            .entry("finalizers")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = finalizers {
            list.push(Value::String(CASCADE_DELETION_FINALIZER.to_owned()));
        }
        let has_shutdown_hook = current
            .pointer("/spec/hooks")
            .and_then(Value::as_array)
            .is_some_and(|hooks| hooks.iter().any(|h| h == "shutdown"));
        if kind.kind == "Application" && has_shutdown_hook {
            if let Some(status) = current.get_mut("status").and_then(Value::as_object_mut) {
                status.insert(
                    "state".to_owned(),
                    Value::String("WAITING_FOR_CLEANING".to_owned()),
                );
            }
        }
        Ok(Change::Write(current))
    })
    .await?;
    if let Some(wanted) = watch::blocking_state(kind, &query) {
        let object =
            watch::wait_for(&state, &target, outcome.revision, outcome.object, &wanted).await?;
        return Ok(Json(object).into_response());
    }
    Ok(Json(outcome.object).into_response())
}

async fn force_delete(state: &ApiState, target: &Target) -> Result<Response, ApiError> {
    let key = target.key()?;
    let store = state.store();
    for _ in 0..=state.config().transaction_retries {
        let kv = store.get(&key).await?.ok_or_else(|| target.not_found())?;
        let mut current = object::decode_kv(&kv)?;
        match store.delete(&key, Some(kv.mod_revision)).await {
            Ok(revision) => {
                if !object::is_deleted(&current) {
                    object::metadata_mut(&mut current)
                        .insert("deleted".to_owned(), object::timestamp(Timestamp::now()));
                }
                object::set_resource_version(&mut current, revision);
                return Ok(Json(current).into_response());
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::transaction("Concurrent writes to database"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// For every stored object of Krake's captured traffic (every kind), the
    /// fast path of a create stores exactly the bytes the general path
    /// stores, in a namespace and, for global kinds, without one. Bodies that
    /// do not validate take the general path.
    #[test]
    fn the_fast_create_path_stores_what_the_general_path_stores() {
        let mut compared = 0;
        for object in krake_testkit::wire::objects() {
            let (path, value) = object.unwrap();
            // The file's own bytes, as a client would send them.
            let body = std::fs::read(&path).unwrap();
            let (Some(api), Some(kind)) = (value["api"].as_str(), value["kind"].as_str()) else {
                continue;
            };
            let Some(info) = krake_data::registry::by_kind(api, kind) else {
                continue;
            };
            for namespace in [Some("team-a"), None] {
                let target = Target {
                    kind: info,
                    namespace: namespace.map(str::to_owned),
                    name: None,
                };
                let uid = "2b9e0a47-4b8f-4f0e-9c43-0c5b8f4f8f61";
                let now = Timestamp::now();
                let fast = (info.create_object)(
                    &body,
                    &krake_data::registry::NewObject {
                        namespace,
                        uid,
                        now,
                    },
                )
                .unwrap_or_else(|| panic!("{} takes the fast path", path.display()));
                let (name, general) = create_body(info, &target, &body, uid, now).unwrap();
                assert_eq!(fast.name, name);
                assert_eq!(
                    String::from_utf8(fast.bytes).unwrap(),
                    String::from_utf8(general.to_vec()).unwrap(),
                    "{}",
                    path.display()
                );
                compared += 1;
            }
        }
        assert!(compared >= 30, "only {compared} objects compared");

        // An invalid body is left to the general path (and its errors).
        let info = krake_data::registry::by_kind("kubernetes", "Application").unwrap();
        let new = krake_data::registry::NewObject {
            namespace: Some("team-a"),
            uid: "u",
            now: Timestamp::now(),
        };
        for bad in [
            &br#"{"metadata": {"name": "x"}, "spec": {"manifest": []}}"#[..],
            br#"{"metadata": {"name": "Bad Name"}, "spec": {"manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}], "constraints": {"cluster": {}}}}"#,
            b"not json",
            b"[]",
        ] {
            assert!((info.create_object)(bad, &new).is_none());
        }
    }
}
