//! The HTTPS front of a fake: the accept loop, TLS and authentication,
//! fault injection, routing and the handlers of every verb, watch streams
//! included.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::discovery;
use super::faults::Verb;
use super::objects::{self, Deleted, Write};
use super::patch::PatchType;
use super::registry::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::status::Status;
use super::storage::{Event, EventType};

type Body = BoxBody<Bytes, Infallible>;

/// The largest request body accepted (the real default is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// Accepts connections until cancelled.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let acceptor = TlsAcceptor::from(shared.pki.server.clone());
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((socket, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.faults.is_refusing() {
            // Accept-and-close: the client sees its connection reset.
            drop(socket);
            continue;
        }
        let _ = socket.set_nodelay(true);
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut refusing = shared.faults.refusing();
            let conn = async {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let cert_ok = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let svc_shared = shared.clone();
                let service = service_fn(move |req| {
                    let shared = svc_shared.clone();
                    async move { Ok::<_, Infallible>(handle(shared, cert_ok, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            };
            tokio::select! {
                _ = conn => {}
                _ = cancel.cancelled() => {}
                _ = refusing.wait_for(|r| *r) => {}
            }
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn status_response(status: &Status) -> Response<Body> {
    json_response(status.code, &status.to_json())
}

/// Decodes `%XX` and `+` of a query string component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(query: Option<&str>) -> HashMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name)
        .is_some_and(|v| v == "true" || v == "1" || v.is_empty())
}

/// One request, from authentication to the answer.
async fn handle(shared: Arc<Shared>, cert_ok: bool, req: Request<Incoming>) -> Response<Body> {
    shared.stats.request();
    if let Some(delay) = shared.faults.delay() {
        tokio::time::sleep(delay).await;
    }
    let token_ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == shared.token);
    if !cert_ok && !token_ok {
        return status_response(&Status::unauthorized());
    }
    if let Some(code) = shared.faults.failure() {
        return status_response(&Status::injected(code));
    }
    if shared.faults.is_answering_garbage() {
        let mut resp = Response::new(full(&b"\x00\xffnot json {{{ <html>"[..]));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return resp;
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return status_response(&Status::new(
                413,
                "the request body is too large or could not be read",
            ));
        }
    };
    let q = query_params(parts.uri.query());
    match route(&shared, &parts, &q, body).await {
        Ok(resp) => resp,
        Err(status) => status_response(&status),
    }
}

/// What a path names.
enum Target {
    Collection {
        rt: Arc<ResourceType>,
        namespace: Option<String>,
    },
    Item {
        rt: Arc<ResourceType>,
        namespace: Option<String>,
        name: String,
        subresource: Option<String>,
    },
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect()
}

async fn route(
    shared: &Arc<Shared>,
    parts: &http::request::Parts,
    q: &HashMap<String, String>,
    body: Bytes,
) -> Result<Response<Body>, Status> {
    let segs = segments(parts.uri.path());
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let accept = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let get = parts.method == Method::GET;
    // Discovery.
    match segs.as_slice() {
        ["version"] if get => return Ok(json_response(200, &discovery::version())),
        ["healthz" | "livez" | "readyz"] if get => {
            let mut r = Response::new(full("ok"));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain"),
            );
            return Ok(r);
        }
        ["api"] if get => {
            return Ok(match discovery::aggregated_version(accept) {
                Some(v) => aggregated(
                    &discovery::aggregated(&shared.store.lock().registry, true, v),
                    v,
                ),
                None => json_response(200, &discovery::core_versions(&shared.address)),
            });
        }
        ["apis"] if get => {
            let st = shared.store.lock();
            return Ok(match discovery::aggregated_version(accept) {
                Some(v) => aggregated(&discovery::aggregated(&st.registry, false, v), v),
                None => json_response(200, &discovery::group_list(&st.registry)),
            });
        }
        ["api", "v1"] if get => {
            let st = shared.store.lock();
            return discovery::resource_list(&st.registry, "", "v1")
                .map(|b| json_response(200, &b))
                .ok_or_else(Status::no_such_resource);
        }
        ["apis", group] if get => {
            let st = shared.store.lock();
            return discovery::group(&st.registry, group)
                .map(|b| json_response(200, &b))
                .ok_or_else(Status::no_such_resource);
        }
        ["apis", group, version] if get => {
            let st = shared.store.lock();
            return discovery::resource_list(&st.registry, group, version)
                .map(|b| json_response(200, &b))
                .ok_or_else(Status::no_such_resource);
        }
        _ => {}
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Err(Status::no_such_resource()),
    };
    let target = {
        let st = shared.store.lock();
        let reg = &st.registry;
        match rest {
            ["namespaces", ns, plural, tail @ ..]
                if reg
                    .by_plural(group, version, plural)
                    .is_some_and(|t| t.namespaced) =>
            {
                let rt = reg
                    .by_plural(group, version, plural)
                    .ok_or_else(Status::no_such_resource)?;
                let namespace = Some(ns.to_string());
                match tail {
                    [] => Target::Collection { rt, namespace },
                    [name] => Target::Item {
                        rt,
                        namespace,
                        name: name.to_string(),
                        subresource: None,
                    },
                    [name, sub] => Target::Item {
                        rt,
                        namespace,
                        name: name.to_string(),
                        subresource: Some(sub.to_string()),
                    },
                    _ => return Err(Status::no_such_resource()),
                }
            }
            [plural, tail @ ..] => {
                let rt = reg
                    .by_plural(group, version, plural)
                    .ok_or_else(Status::no_such_resource)?;
                match tail {
                    [] => Target::Collection {
                        rt,
                        namespace: None,
                    },
                    [name] if !rt.namespaced => Target::Item {
                        rt,
                        namespace: None,
                        name: name.to_string(),
                        subresource: None,
                    },
                    [name, sub] if !rt.namespaced => Target::Item {
                        rt,
                        namespace: None,
                        name: name.to_string(),
                        subresource: Some(sub.to_string()),
                    },
                    _ => return Err(Status::no_such_resource()),
                }
            }
            [] => return Err(Status::no_such_resource()),
        }
    };
    let manager = field_manager(parts, q);
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    match target {
        Target::Collection { rt, namespace } => match parts.method {
            Method::GET if flag(q, "watch") => {
                shared.stats.count(Verb::Watch);
                watch(shared, rt, namespace, q)
            }
            Method::GET => {
                shared.stats.count(Verb::List);
                list(shared, &rt, namespace.as_deref(), q)
            }
            Method::POST if namespace.is_some() || !rt.namespaced => {
                shared.stats.count(Verb::Create);
                let body = parse_json(&body)?;
                let mut st = shared.store.lock();
                let w = Write {
                    manager: &manager,
                    subresource: None,
                    dry_run,
                };
                let created = objects::create(&mut st, &rt, namespace.as_deref(), body, w)?;
                Ok(json_response(201, &created))
            }
            Method::DELETE if namespace.is_some() || !rt.namespaced => {
                shared.stats.count(Verb::Delete);
                delete_collection(shared, &rt, namespace.as_deref(), q, &body)
            }
            _ => Err(Status::method_not_allowed()),
        },
        Target::Item {
            rt,
            namespace,
            name,
            subresource,
        } => {
            let subresource = match subresource.as_deref() {
                None => None,
                Some("status") if rt.status => Some("status"),
                Some(_) => return Err(Status::no_such_resource()),
            };
            let ns = namespace.as_deref();
            match parts.method {
                Method::GET => {
                    shared.stats.count(Verb::Get);
                    let st = shared.store.lock();
                    let key_ns = ns.unwrap_or_default();
                    let obj = st
                        .get(&rt.key, key_ns, &name)
                        .ok_or_else(|| Status::not_found(&rt, &name))?;
                    Ok(json_response(200, &obj))
                }
                Method::PUT => {
                    shared.stats.count(Verb::Update);
                    let body = parse_json(&body)?;
                    let mut st = shared.store.lock();
                    let w = Write {
                        manager: &manager,
                        subresource,
                        dry_run,
                    };
                    let obj = objects::replace(&mut st, &rt, ns, &name, body, w)?;
                    Ok(json_response(200, &obj))
                }
                Method::PATCH => {
                    let content_type = parts
                        .headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let kind = PatchType::of(content_type)
                        .ok_or_else(|| Status::unsupported_media_type(content_type))?;
                    let w = Write {
                        manager: &manager,
                        subresource,
                        dry_run,
                    };
                    if kind == PatchType::Apply {
                        shared.stats.count(Verb::Apply);
                        if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
                            return Err(Status::new(
                                422,
                                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                            ));
                        }
                        let config = parse_yaml(&body)?;
                        let mut st = shared.store.lock();
                        let (obj, created) =
                            objects::apply(&mut st, &rt, ns, &name, config, flag(q, "force"), w)?;
                        Ok(json_response(if created { 201 } else { 200 }, &obj))
                    } else {
                        shared.stats.count(Verb::Patch);
                        let patch: Value = serde_json::from_slice(&body).map_err(|e| {
                            Status::bad_request(format!("error decoding patch: {e}"))
                        })?;
                        let mut st = shared.store.lock();
                        let obj = objects::patch(&mut st, &rt, ns, &name, kind, &patch, w)?;
                        Ok(json_response(200, &obj))
                    }
                }
                Method::DELETE if subresource.is_none() => {
                    shared.stats.count(Verb::Delete);
                    let opts = if body.is_empty() {
                        json!({})
                    } else {
                        parse_json(&body)?
                    };
                    let propagation = q.get("propagationPolicy").cloned().or_else(|| {
                        opts.get("propagationPolicy")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    });
                    let uid = opts.pointer("/preconditions/uid").and_then(Value::as_str);
                    let dry = dry_run
                        || opts
                            .get("dryRun")
                            .and_then(Value::as_array)
                            .is_some_and(|a| a.iter().any(|v| v == "All"));
                    let mut st = shared.store.lock();
                    match objects::delete(
                        &mut st,
                        &rt,
                        ns,
                        &name,
                        propagation.as_deref(),
                        uid,
                        dry,
                    )? {
                        Deleted::Pending(obj) => Ok(json_response(200, &obj)),
                        Deleted::Now(obj) => Ok(json_response(200, &deleted_status(&rt, &obj))),
                    }
                }
                _ => Err(Status::method_not_allowed()),
            }
        }
    }
}

fn aggregated(body: &Value, version: &str) -> Response<Body> {
    let mut resp = json_response(200, body);
    if let Ok(v) = http::HeaderValue::from_str(&discovery::aggregated_content_type(version)) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

/// The `Success` Status of an immediate delete.
fn deleted_status(rt: &ResourceType, obj: &Value) -> Value {
    let mut details = json!({
        "name": obj.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
        "kind": rt.plural,
        "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
    });
    if !rt.group.is_empty() {
        details["group"] = json!(rt.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

/// `fieldManager`, or what a real server derives from the User-Agent.
fn field_manager(parts: &http::request::Parts, q: &HashMap<String, String>) -> String {
    if let Some(m) = q.get("fieldManager").filter(|m| !m.is_empty()) {
        return m.clone();
    }
    parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

fn parse_json(body: &[u8]) -> Result<Value, Status> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        Status::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    if !value.is_object() {
        return Err(Status::bad_request(
            "couldn't get version/kind; json parse error: the body is not a JSON object",
        ));
    }
    Ok(value)
}

fn parse_yaml(body: &[u8]) -> Result<Value, Status> {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return if v.is_object() {
            Ok(v)
        } else {
            Err(Status::bad_request("error decoding YAML: not an object"))
        };
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))?;
    let v: Value = serde_saphyr::from_str(text)
        .map_err(|e| Status::bad_request(format!("error decoding YAML: {e}")))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(Status::bad_request("error decoding YAML: not an object"))
    }
}

/// The selectors of a list or watch.
struct Filter {
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn parse(
        rt: &ResourceType,
        namespace: Option<String>,
        q: &HashMap<String, String>,
    ) -> Result<Self, Status> {
        let labels = LabelSelector::parse(
            q.get("labelSelector")
                .map(String::as_str)
                .unwrap_or_default(),
        )?;
        let fields = FieldSelector::parse(
            q.get("fieldSelector")
                .map(String::as_str)
                .unwrap_or_default(),
            &rt.kind,
        )?;
        Ok(Self {
            namespace,
            labels,
            fields,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn in_namespace(&self, ns: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == ns)
    }
}

fn list(
    shared: &Arc<Shared>,
    rt: &Arc<ResourceType>,
    namespace: Option<&str>,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, Status> {
    let filter = Filter::parse(rt, namespace.map(str::to_string), q)?;
    let st = shared.store.lock();
    let ns = if rt.namespaced { namespace } else { None };
    let items: Vec<Value> = st
        .list(&rt.key, ns)
        .iter()
        .filter(|o| filter.matches(o))
        .map(|o| (**o).clone())
        .collect();
    let body = json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": st.rv().to_string()},
        "items": items,
    });
    Ok(json_response(200, &body))
}

fn delete_collection(
    shared: &Arc<Shared>,
    rt: &Arc<ResourceType>,
    namespace: Option<&str>,
    q: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response<Body>, Status> {
    let filter = Filter::parse(rt, namespace.map(str::to_string), q)?;
    let opts = if body.is_empty() {
        json!({})
    } else {
        parse_json(body)?
    };
    let propagation = q.get("propagationPolicy").cloned().or_else(|| {
        opts.get("propagationPolicy")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let mut st = shared.store.lock();
    let ns = if rt.namespaced { namespace } else { None };
    let victims: Vec<Arc<Value>> = st
        .list(&rt.key, ns)
        .into_iter()
        .filter(|o| filter.matches(o))
        .collect();
    let mut items = Vec::new();
    for v in victims {
        let name = v
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let vns = v.pointer("/metadata/namespace").and_then(Value::as_str);
        match objects::delete(&mut st, rt, vns, name, propagation.as_deref(), None, false) {
            Ok(Deleted::Now(o) | Deleted::Pending(o)) => items.push((*o).clone()),
            Err(_) => {}
        }
    }
    let body = json!({
        "kind": format!("{}List", rt.kind),
        "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": st.rv().to_string()},
        "items": items,
    });
    Ok(json_response(200, &body))
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The watch event a stored event becomes for this filter, if any: a
/// change that moves an object into or out of the selection is seen as
/// `ADDED` or `DELETED`, as the real watch cache does.
fn translate<'e>(event: &'e Event, filter: &Filter) -> Option<(&'static str, &'e Value)> {
    if !filter.in_namespace(&event.namespace) {
        return None;
    }
    let now = filter.matches(&event.object);
    match event.kind {
        EventType::Added => now.then_some(("ADDED", &*event.object)),
        EventType::Modified => {
            let before = event.old.as_deref().is_some_and(|o| filter.matches(o));
            match (before, now) {
                (true, true) => Some(("MODIFIED", &*event.object)),
                (false, true) => Some(("ADDED", &*event.object)),
                (true, false) => Some(("DELETED", &*event.object)),
                (false, false) => None,
            }
        }
        EventType::Deleted => {
            let before = event.old.as_deref().map_or(now, |o| filter.matches(o));
            before.then_some(("DELETED", &*event.object))
        }
        EventType::Bookmark => None,
    }
}

fn watch(
    shared: &Arc<Shared>,
    rt: Arc<ResourceType>,
    namespace: Option<String>,
    q: &HashMap<String, String>,
) -> Result<Response<Body>, Status> {
    let namespace = if rt.namespaced { namespace } else { None };
    let filter = Filter::parse(&rt, namespace, q)?;
    let bookmarks = flag(q, "allowWatchBookmarks");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let mut initial: Vec<Bytes> = Vec::new();
    let events = {
        let mut st = shared.store.lock();
        match rv {
            "" | "0" => {
                for obj in st.list(&rt.key, filter.namespace.as_deref()) {
                    if filter.matches(&obj) {
                        initial.push(watch_line("ADDED", &obj));
                    }
                }
            }
            rv => {
                let Ok(from) = rv.parse::<u64>() else {
                    return Err(Status::bad_request(format!(
                        "invalid resource version: {rv}"
                    )));
                };
                match st.since(&rt.key, from) {
                    Some(evs) => {
                        for e in evs {
                            if let Some((kind, obj)) = translate(&e, &filter) {
                                initial.push(watch_line(kind, obj));
                            }
                        }
                    }
                    None => {
                        let gone = Status::expired(format!(
                            "too old resource version: {from} ({})",
                            st.compacted() + 1
                        ));
                        initial.push(watch_line("ERROR", &gone.to_json()));
                        drop(st);
                        let resp = stream_response(rx);
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            shared.stats.watch_opened();
                            for line in initial {
                                if tx.send(line).await.is_err() {
                                    break;
                                }
                            }
                            shared.stats.watch_closed();
                        });
                        return Ok(resp);
                    }
                }
            }
        }
        st.subscribe(&rt.key)
    };
    let resp = stream_response(rx);
    let shared = shared.clone();
    tokio::spawn(async move {
        shared.stats.watch_opened();
        follow(
            shared.clone(),
            rt,
            filter,
            bookmarks,
            timeout,
            initial,
            events,
            tx,
        )
        .await;
        shared.stats.watch_closed();
    });
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    shared: Arc<Shared>,
    rt: Arc<ResourceType>,
    filter: Filter,
    bookmarks: bool,
    timeout: Duration,
    initial: Vec<Bytes>,
    mut events: broadcast::Receiver<Arc<Event>>,
    tx: mpsc::Sender<Bytes>,
) {
    for line in initial {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    let mut cuts = shared.faults.cuts();
    let mut refusing = shared.faults.refusing();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let event = tokio::select! {
            _ = &mut deadline => return,
            _ = shared.cancel.cancelled() => return,
            _ = cuts.changed() => return,
            _ = refusing.wait_for(|r| *r) => return,
            _ = tx.closed() => return,
            e = events.recv() => match e {
                Ok(e) => e,
                // Fell behind, or the resource is gone: the client resumes.
                Err(_) => return,
            },
        };
        let line = if event.kind == EventType::Bookmark {
            if !bookmarks {
                continue;
            }
            let object = json!({
                "kind": rt.kind,
                "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": event.rv.to_string()},
            });
            watch_line("BOOKMARK", &object)
        } else {
            match translate(&event, &filter) {
                Some((kind, obj)) => watch_line(kind, obj),
                None => continue,
            }
        };
        if tx.send(line).await.is_err() {
            return;
        }
    }
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache, private"),
    );
    resp
}
