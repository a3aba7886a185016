//! The HTTP front of the fake IM: routing, IM's auth check, faults, and
//! the handlers, answering as IM's REST front (`IM/REST.py`) does.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::{AuthData, ImRequest, Infra, Phase, RequestKind, Shared, Template, World, states};

/// IM's HTML error page (`HTML_ERROR_TEMPLATE`).
const HTML_ERROR: &str = "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html>\n    <head>\n        <title>Error {code}.</title>\n    </head>\n    <body>\n        <h1>Code: {code}.</h1>\n        <h1>Message: {message}</h1>\n    </body>\n</html>\n";

const NOT_FOUND: &str = "Invalid infrastructure ID or access not granted.";
const DELETED: &str = "Deleted infrastructure.";
const NOT_GRANTED: &str = "Access to this infrastructure not granted.";
const NOT_EMULATED: &str = "not emulated by krake-testkit's fake IM";

/// Serves until the fake is dropped.
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let cancel = shared.cancel.clone();
    let router = Router::new().fallback(handle).with_state(shared);
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await;
}

/// An IM error answer: its status and message, rendered by
/// [`error`] as the request's `Accept` asks.
struct ImError {
    code: u16,
    message: String,
}

/// One request, as the handlers see it.
struct Request {
    kind: RequestKind,
    infrastructure: Option<String>,
    property: Option<String>,
    query: Vec<(String, String)>,
    accept: Vec<String>,
    content_type: Vec<String>,
    auth: Option<AuthData>,
    /// `http://host/` as IM's `url_root`.
    root: String,
    body: Bytes,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A yes/no flag as IM reads `async`, `force`, `context`.
    fn flag(&self, name: &str, default: bool) -> Result<bool, ImError> {
        match self.param(name).map(str::to_lowercase).as_deref() {
            None => Ok(default),
            Some("yes" | "true" | "1") => Ok(true),
            Some("no" | "false" | "0") => Ok(false),
            Some(_) => Err(self.error(400, &format!("Incorrect value in {name} parameter"))),
        }
    }

    fn error(&self, code: u16, message: &str) -> ImError {
        ImError {
            code,
            message: message.to_string(),
        }
    }

    fn render(&self, err: ImError) -> Response {
        error(&self.accept, err.code, &err.message)
    }

    fn is_yaml(&self) -> bool {
        self.content_type.iter().any(|t| t == "text/yaml")
    }

    /// Refuses bodies that are not TOSCA: RADL (plain or JSON) is not
    /// emulated, other types are IM's `415`.
    fn check_tosca_body(&self, prefix: &str) -> Result<(), ImError> {
        if self.is_yaml() {
            return Ok(());
        }
        let radl = self.content_type.is_empty()
            || self.content_type.iter().any(|t| {
                matches!(
                    t.as_str(),
                    "application/json" | "text/plain" | "*/*" | "text/*"
                )
            });
        if radl {
            Err(self.error(400, &format!("{prefix}: RADL is {NOT_EMULATED}")))
        } else {
            Err(self.error(
                415,
                &format!("Unsupported Media Type {}", py_list(&self.content_type)),
            ))
        }
    }

    /// IM's check on `state`, `outputs`, `tosca`: the `Accept` header must
    /// allow JSON.
    fn check_accept_json(&self) -> Result<(), ImError> {
        if !self.accept.is_empty()
            && !self
                .accept
                .iter()
                .any(|a| matches!(a.as_str(), "application/json" | "*/*" | "application/*"))
        {
            return Err(self.error(
                415,
                &format!("Unsupported Accept Media Types: {}", py_list(&self.accept)),
            ));
        }
        Ok(())
    }
}

/// The fallback handler: every request lands here.
async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query_string = uri.query().unwrap_or_default().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (kind, infrastructure, property) = classify(&method, &segments);
    let header_str = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header_str(header::AUTHORIZATION);
    let content_type = header_str(header::CONTENT_TYPE);
    let host = header_str(header::HOST).unwrap_or_else(|| shared.address.clone());
    let request = Request {
        kind,
        infrastructure: infrastructure.clone(),
        property,
        query: parse_query(&query_string),
        accept: media_types(header_str(header::ACCEPT).as_deref()),
        content_type: media_types(content_type.as_deref()),
        auth: authorization.as_deref().and_then(AuthData::parse),
        root: format!("http://{host}/"),
        body,
    };
    let response = answer(&shared, &request, &segments).await;
    shared.world().requests.push(ImRequest {
        method: method.to_string(),
        path,
        query: query_string,
        kind,
        infrastructure,
        authorization,
        auth: request.auth.clone(),
        content_type,
        status: response.status().as_u16(),
    });
    if let Some(delay) = shared.faults.delay() {
        tokio::time::sleep(delay).await;
    }
    response
}

fn classify(method: &Method, segments: &[&str]) -> (RequestKind, Option<String>, Option<String>) {
    let id = segments.get(1).map(|s| s.to_string());
    match (segments, method.as_str()) {
        (["infrastructures"], "GET") => (RequestKind::List, None, None),
        (["infrastructures"], "POST") => (RequestKind::Create, None, None),
        (["infrastructures", _], "GET") => (RequestKind::Info, id, None),
        (["infrastructures", _], "POST") => (RequestKind::Update, id, None),
        (["infrastructures", _], "DELETE") => (RequestKind::Delete, id, None),
        (["infrastructures", _, "reconfigure"], "PUT") => (RequestKind::Reconfigure, id, None),
        (["infrastructures", _, "state"], "GET") => (RequestKind::State, id, None),
        (["infrastructures", _, "outputs"], "GET") => (RequestKind::Outputs, id, None),
        (["infrastructures", _, prop], "GET") => {
            (RequestKind::Property, id, Some(prop.to_string()))
        }
        _ => (RequestKind::Other, id, None),
    }
}

/// The operation's prefix in IM's error messages.
fn prefix(kind: RequestKind) -> &'static str {
    match kind {
        RequestKind::List => "Error Getting Inf. List",
        RequestKind::Create => "Error Creating Inf.",
        RequestKind::Info => "Error Getting Inf. info",
        RequestKind::Update => "Error Adding resources",
        RequestKind::Delete => "Error Destroying Inf",
        RequestKind::State | RequestKind::Outputs | RequestKind::Property => {
            "Error Getting Inf. prop"
        }
        RequestKind::Reconfigure => "Error reconfiguring infrastructure",
        RequestKind::Other => "Error",
    }
}

async fn answer(shared: &Arc<Shared>, request: &Request, segments: &[&str]) -> Response {
    if let Some(status) = shared.faults.failure() {
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Injected failure");
        return request.render(request.error(status, reason));
    }
    if request.kind == RequestKind::Other {
        let known = matches!(segments, ["infrastructures"] | ["infrastructures", _])
            || matches!(segments, ["infrastructures", _, _]);
        return request.render(if known {
            request.error(405, "The method is not allowed for the requested URL.")
        } else {
            request.error(
                404,
                "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.",
            )
        });
    }
    let owner = match authenticate(shared, request) {
        Ok(owner) => owner,
        Err(err) => return request.render(err),
    };
    let result = match request.kind {
        RequestKind::Create => create(shared, request, owner).await,
        RequestKind::List => list(shared, request, &owner),
        RequestKind::Info => info(shared, request, &owner),
        RequestKind::Update => update(shared, request, &owner),
        RequestKind::Delete => delete(shared, request, &owner).await,
        RequestKind::State | RequestKind::Outputs | RequestKind::Property => {
            property(shared, request, &owner)
        }
        RequestKind::Reconfigure => reconfigure(shared, request, &owner),
        RequestKind::Other => unreachable!("answered above"),
    };
    result.unwrap_or_else(|err| request.render(err))
}

/// IM's credential check; the owner key of the infrastructures.
fn authenticate(shared: &Shared, request: &Request) -> Result<String, ImError> {
    let Some(auth) = &request.auth else {
        return Err(request.error(401, "No authentication data provided"));
    };
    let config = &shared.config;
    let invalid = || {
        request.error(
            401,
            &format!(
                "{}: Invalid InfrastructureManager credentials",
                prefix(request.kind)
            ),
        )
    };
    let Some(im) = auth.im() else {
        return Err(invalid());
    };
    if let Some(token) = im.get("token") {
        return match &config.token {
            Some(expected) if expected == token => Ok(format!("token:{token}")),
            _ => Err(invalid()),
        };
    }
    match (im.get("username"), im.get("password")) {
        (Some(u), Some(p)) if *u == config.username && *p == config.password => {
            Ok(format!("user:{u}"))
        }
        _ => Err(invalid()),
    }
}

/// The infrastructure `id` of `owner`, or IM's error.
fn lookup<'w>(
    world: &'w mut World,
    request: &Request,
    owner: &str,
) -> Result<&'w mut Infra, ImError> {
    let p = prefix(request.kind);
    let id = request.infrastructure.as_deref().unwrap_or_default();
    let Some(infra) = world.infras.get_mut(id) else {
        return Err(request.error(404, &format!("{p}: {NOT_FOUND}")));
    };
    if infra.deleted {
        return Err(request.error(404, &format!("{p}: {DELETED}")));
    }
    if infra.owner != owner {
        return Err(request.error(403, &format!("{p}: {NOT_GRANTED}")));
    }
    Ok(infra)
}

fn parse_template(shared: &Shared, request: &Request) -> Result<Template, ImError> {
    let p = prefix(request.kind);
    request.check_tosca_body(p)?;
    let text = String::from_utf8_lossy(&request.body);
    let template = Template::parse(&text).map_err(|m| request.error(400, &format!("{p}: {m}")))?;
    if let Some(message) = shared.faults.refusal() {
        return Err(request.error(400, &format!("{p}: {message}")));
    }
    Ok(template)
}

async fn create(
    shared: &Arc<Shared>,
    request: &Request,
    owner: String,
) -> Result<Response, ImError> {
    let async_call = request.flag("async", false)?;
    request.flag("dry_run", false)?;
    let template = parse_template(shared, request)?;
    let auth = request.auth.clone().unwrap_or_default();
    let cloud_refused = shared
        .config
        .openstack
        .as_ref()
        .is_some_and(|os| !auth.of_type("OpenStack").any(|l| os.matches(l)));
    let id = uuid::Uuid::new_v4().to_string();
    let pending = {
        let mut w = shared.world();
        let vms = template.vm_count();
        w.infras.insert(
            id.clone(),
            Infra {
                id: id.clone(),
                owner,
                auth,
                template,
                templates: 1,
                reconfigures: 0,
                vms,
                phase: Phase::Creating,
                since: Instant::now(),
                cloud_refused,
                configured_once: false,
                forced: None,
                forced_vms: Default::default(),
                outputs: Default::default(),
                deleting: None,
                deleted: false,
            },
        );
        w.order.push(id.clone());
        w.durations.pending
    };
    if !async_call {
        // IM answers a synchronous create once the VMs exist.
        tokio::time::sleep(pending).await;
        if cloud_refused {
            return Err(request.error(
                400,
                &format!(
                    "{}: Error launching the VMs: the cloud refused the credentials",
                    prefix(request.kind)
                ),
            ));
        }
    }
    let uri = format!("{}infrastructures/{id}", request.root);
    let mut response = format_output(
        &request.accept,
        Out::Text(uri),
        "text/uri-list",
        Some("uri"),
        None,
    );
    if response.status().is_success() {
        response
            .headers_mut()
            .insert("InfID", id.parse().expect("a UUID is a header value"));
    }
    Ok(response)
}

fn list(shared: &Shared, request: &Request, owner: &str) -> Result<Response, ImError> {
    let w = shared.world();
    let uris = w
        .order
        .iter()
        .filter_map(|id| w.infras.get(id))
        .filter(|i| i.owner == owner && !i.deleted)
        .map(|i| format!("{}infrastructures/{}", request.root, i.id))
        .collect();
    Ok(format_output(
        &request.accept,
        Out::List(uris),
        "text/uri-list",
        Some("uri-list"),
        Some("uri"),
    ))
}

fn info(shared: &Shared, request: &Request, owner: &str) -> Result<Response, ImError> {
    let mut w = shared.world();
    let infra = lookup(&mut w, request, owner)?;
    let uris = (0..infra.vms)
        .map(|vm| format!("{}infrastructures/{}/vms/{vm}", request.root, infra.id))
        .collect();
    Ok(format_output(
        &request.accept,
        Out::List(uris),
        "text/uri-list",
        Some("uri-list"),
        Some("uri"),
    ))
}

fn update(shared: &Shared, request: &Request, owner: &str) -> Result<Response, ImError> {
    let context = request.flag("context", true)?;
    let template = parse_template(shared, request)?;
    let mut w = shared.world();
    let infra = lookup(&mut w, request, owner)?;
    let old = infra.vms;
    let new = template.vm_count();
    infra.vms = new;
    infra.forced_vms.retain(|vm, state| {
        vm.parse::<usize>().is_ok_and(|i| i < new) && state != states::UNCONFIGURED
    });
    if infra.forced.as_deref() == Some(states::UNCONFIGURED) {
        infra.forced = None;
    }
    infra.template = template;
    infra.templates += 1;
    infra.phase = Phase::Updating {
        old_vms: old.min(new),
    };
    infra.since = Instant::now();
    let uris = (old..new)
        .map(|vm| format!("{}infrastructures/{}/vms/{vm}", request.root, infra.id))
        .collect();
    let id = infra.id.clone();
    let mut response = format_output(
        &request.accept,
        Out::List(uris),
        "text/uri-list",
        Some("uri-list"),
        Some("uri"),
    );
    if context && response.status().is_success() {
        response
            .headers_mut()
            .insert("InfID", id.parse().expect("a UUID is a header value"));
    }
    Ok(response)
}

fn reconfigure(shared: &Shared, request: &Request, owner: &str) -> Result<Response, ImError> {
    if let Some(list) = request.param("vm_list")
        && list.split(',').any(|v| v.trim().parse::<i64>().is_err())
    {
        return Err(request.error(400, "Incorrect vm_list format."));
    }
    let mut w = shared.world();
    let infra = lookup(&mut w, request, owner)?;
    infra.reconfigures += 1;
    infra.phase = Phase::Reconfiguring;
    infra.since = Instant::now();
    if infra.forced.as_deref() == Some(states::UNCONFIGURED) {
        infra.forced = None;
    }
    infra.forced_vms.retain(|_, s| s != states::UNCONFIGURED);
    let id = infra.id.clone();
    let mut response = plain(StatusCode::OK, "text/plain", String::new());
    response
        .headers_mut()
        .insert("InfID", id.parse().expect("a UUID is a header value"));
    Ok(response)
}

async fn delete(shared: &Arc<Shared>, request: &Request, owner: &str) -> Result<Response, ImError> {
    request.flag("force", false)?;
    let async_call = request.flag("async", false)?;
    let deleting = {
        let mut w = shared.world();
        let deleting = w.durations.deleting;
        let infra = lookup(&mut w, request, owner)?;
        if infra.deleting.is_none() {
            infra.deleting = Some(Instant::now());
        }
        deleting
    };
    if !async_call {
        tokio::time::sleep(deleting).await;
    }
    Ok(plain(StatusCode::OK, "text/plain", String::new()))
}

fn property(shared: &Shared, request: &Request, owner: &str) -> Result<Response, ImError> {
    let prop = match request.kind {
        RequestKind::State => "state",
        RequestKind::Outputs => "outputs",
        _ => request.property.as_deref().unwrap_or_default(),
    };
    let p = prefix(request.kind);
    match prop {
        "state" | "outputs" | "tosca" => request.check_accept_json()?,
        "contmsg" | "radl" | "data" | "authorization" => {}
        _ => return Err(request.error(404, "Incorrect infrastructure property")),
    }
    let mut w = shared.world();
    let now = Instant::now();
    let durations = w.durations;
    let global = w.outputs.clone();
    let infra = lookup(&mut w, request, owner)?;
    match prop {
        "state" => {
            let (state, vm_states) = infra.aggregate(now, &durations);
            let value = json!({"state": state, "vm_states": vm_states});
            Ok(format_output(
                &request.accept,
                Out::Json(value),
                "application/json",
                Some("state"),
                None,
            ))
        }
        "outputs" => {
            let outputs = Value::Object(infra.outputs(&global));
            Ok(format_output(
                &request.accept,
                Out::Json(outputs),
                "application/json",
                Some("outputs"),
                None,
            ))
        }
        "tosca" => Ok(format_output(
            &request.accept,
            Out::Text(infra.template.text.clone()),
            "text/plain",
            Some("tosca"),
            None,
        )),
        other => Err(request.error(400, &format!("{p}: '{other}' is {NOT_EMULATED}"))),
    }
}

/// What an answer carries, before `format_output` picks its type.
enum Out {
    Text(String),
    List(Vec<String>),
    Json(Value),
}

fn format_json(res: Out, field: Option<&str>, list_field: Option<&str>) -> String {
    let value = match res {
        Out::Text(s) => Value::String(s),
        Out::Json(v) => v,
        Out::List(items) => match list_field {
            Some(lf) => Value::Array(items.into_iter().map(|e| json!({lf: e})).collect()),
            None => json!(items),
        },
    };
    match field {
        Some(f) => json!({f: value}).to_string(),
        None => value.to_string(),
    }
}

/// IM's `format_output`: the first `Accept` item it can serve decides.
fn format_output(
    accept: &[String],
    res: Out,
    default_type: &str,
    field: Option<&str>,
    list_field: Option<&str>,
) -> Response {
    let defaults = [default_type.to_string()];
    let accept = if accept.is_empty() {
        &defaults[..]
    } else {
        accept
    };
    for item in accept {
        if matches!(item.as_str(), "application/json" | "application/*") {
            return plain(
                StatusCode::OK,
                "application/json",
                format_json(res, field, list_field),
            );
        }
        if item == default_type || item == "*/*" || item == "text/*" {
            let body = if default_type == "application/json" {
                format_json(res, field, list_field)
            } else {
                match res {
                    Out::List(items) => items.join("\n"),
                    Out::Text(s) => s,
                    Out::Json(v) => v.to_string(),
                }
            };
            return plain(StatusCode::OK, default_type, body);
        }
    }
    error(
        accept,
        415,
        &format!("Unsupported Accept Media Types: {}", accept.join(",")),
    )
}

/// IM's `return_error`.
fn error(accept: &[String], code: u16, message: &str) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if accept.iter().any(|a| a == "application/json") {
        plain(
            status,
            "application/json",
            json!({"message": message, "code": code}).to_string(),
        )
    } else if accept.iter().any(|a| a == "text/html") {
        let page = HTML_ERROR
            .replace("{code}", &code.to_string())
            .replace("{message}", message);
        plain(status, "text/html", page)
    } else {
        plain(status, "text/plain", message.to_string())
    }
}

fn plain(status: StatusCode, content_type: &str, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("a valid response")
}

/// IM's `get_media_type`: the types of a header, parameters dropped, the
/// YAML types as `text/yaml`.
fn media_types(value: Option<&str>) -> Vec<String> {
    let Some(value) = value else {
        return Vec::new();
    };
    value
        .split(',')
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .filter(|t| !t.is_empty())
        .map(|t| match t {
            "text/yaml" | "text/x-yaml" | "application/yaml" => "text/yaml".to_string(),
            t => t.to_string(),
        })
        .collect()
}

/// A list as Python prints it (IM's messages do).
fn py_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("[{}]", quoted.join(", "))
}

fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_drop_parameters_and_fold_yaml() {
        assert_eq!(
            media_types(Some("application/yaml; charset=utf-8, text/plain")),
            vec!["text/yaml".to_string(), "text/plain".to_string()]
        );
        assert!(media_types(None).is_empty());
    }

    #[test]
    fn queries_decode() {
        assert_eq!(
            parse_query("async=true&vm_list=1%2C2"),
            vec![
                ("async".to_string(), "true".to_string()),
                ("vm_list".to_string(), "1,2".to_string())
            ]
        );
    }
}
