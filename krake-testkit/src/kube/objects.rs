//! The API's write semantics over the storage: create, replace, patch,
//! apply and delete, with status kept apart from the rest, generations,
//! managed fields, finalizers, namespaces, owner references (background
//! cascading), Service IP and port allocation and CRD registration. Both
//! the HTTP handlers and [`FakeCluster`](super::FakeCluster)'s direct access
//! go through here, so both write the same way.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::apply::{self, ManagedFields, record_update, scope_config};
use super::patch::{self, PatchType};
use super::registry::{Registry, ResourceType};
use super::status::{FieldError, Status};
use super::storage::StoreInner;
use super::validation::{defaults, validate};

const CRDS: &str = "apiextensions.k8s.io/customresourcedefinitions";
const NAMESPACES: &str = "/namespaces";

/// Who writes, and how.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Write<'a> {
    /// The field manager recorded for the change.
    pub manager: &'a str,
    /// `/status` or the main resource.
    pub subresource: Option<&'a str>,
    /// `dryRun=All`: everything but storing.
    pub dry_run: bool,
}

impl<'a> Write<'a> {
    /// A write to the main resource.
    pub(crate) fn by(manager: &'a str) -> Self {
        Self {
            manager,
            subresource: None,
            dry_run: false,
        }
    }
}

/// The outcome of a delete.
#[derive(Debug)]
pub(crate) enum Deleted {
    /// Gone; the last state of the object.
    Now(Arc<Value>),
    /// Marked for deletion, waiting for finalizers.
    Pending(Arc<Value>),
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_str<'v>(object: &'v Value, field: &str) -> Option<&'v str> {
    object.get("metadata")?.get(field)?.as_str()
}

fn name_of(object: &Value) -> &str {
    meta_str(object, "name").unwrap_or_default()
}

fn ns_key(rt: &ResourceType, namespace: Option<&str>) -> String {
    if rt.namespaced {
        namespace.unwrap_or("default").to_string()
    } else {
        String::new()
    }
}

fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = json!({});
    }
    match object.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// Random lowercase suffix as `generateName` and the controllers use.
pub(crate) fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes
        .iter()
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Checks that a body is of the resource it was sent to.
fn check_type(rt: &ResourceType, body: &Value) -> Result<(), Status> {
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
        && av != rt.api_version()
    {
        return Err(Status::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && kind != rt.kind
    {
        return Err(Status::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            rt.kind
        )));
    }
    Ok(())
}

fn check_namespace(rt: &ResourceType, body: &Value, namespace: &str) -> Result<(), Status> {
    if rt.namespaced
        && let Some(ns) = meta_str(body, "namespace")
        && !ns.is_empty()
        && ns != namespace
    {
        return Err(Status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    Ok(())
}

/// Can objects be created in this namespace?
fn namespace_open(st: &StoreInner, namespace: &str) -> Result<(), Status> {
    let key: Arc<str> = Arc::from(NAMESPACES);
    match st.get(&key, "", namespace) {
        None => Err(Status::namespace_not_found(namespace)),
        Some(ns) if ns.pointer("/metadata/deletionTimestamp").is_some() => {
            Err(Status::forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )))
        }
        Some(_) => Ok(()),
    }
}

/// Everything but metadata and status: what bumps the generation.
fn spec_part(object: &Value) -> Map<String, Value> {
    object
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| {
                    !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind")
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates an object.
pub(crate) fn create(
    st: &mut StoreInner,
    rt: &Arc<ResourceType>,
    namespace: Option<&str>,
    mut body: Value,
    w: Write<'_>,
) -> Result<Arc<Value>, Status> {
    if !body.is_object() {
        return Err(Status::bad_request(
            "the body of the request is not a JSON object",
        ));
    }
    check_type(rt, &body)?;
    let ns = ns_key(rt, namespace);
    check_namespace(rt, &body, &ns)?;
    if rt.namespaced {
        namespace_open(st, &ns)?;
    }
    let meta = metadata_mut(&mut body);
    let mut name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty()
        && let Some(prefix) = meta.get("generateName").and_then(Value::as_str)
        && !prefix.is_empty()
    {
        name = format!("{prefix}{}", random_suffix(5));
        meta.insert("name".into(), json!(name));
    }
    if st.get(&rt.key, &ns, &name).is_some() {
        return Err(Status::already_exists(rt, &name));
    }
    if rt.kind != "Node" && rt.kind != "Namespace" {
        scope_config(rt, &mut body, None);
    }
    let mut object = fresh(rt, &ns, body);
    defaults(rt, &mut object);
    validate(rt, &object)?;
    prepare(st, rt, None, &mut object)?;
    record_update(rt, None, &mut object, w.manager, None);
    if w.dry_run {
        return Ok(Arc::new(object));
    }
    Ok(st.put(&rt.key, &ns, &name, object))
}

/// The object a create stores: server metadata set, in a fixed order.
fn fresh(rt: &ResourceType, ns: &str, body: Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), json!(rt.api_version()));
    out.insert("kind".into(), json!(rt.kind));
    let Value::Object(mut body) = body else {
        return Value::Object(out);
    };
    let mut meta = match body.shift_remove("metadata") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if rt.namespaced {
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.shift_remove("namespace");
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("generation".into(), json!(1));
    meta.insert("creationTimestamp".into(), json!(now()));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "managedFields",
    ] {
        meta.shift_remove(k);
    }
    out.insert("metadata".into(), Value::Object(meta));
    for (k, v) in body {
        if k != "apiVersion" && k != "kind" {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

/// Kind-specific work of the API server before a write: Service IPs and
/// ports, namespace phase, CRD registration and status.
fn prepare(
    st: &mut StoreInner,
    rt: &ResourceType,
    old: Option<&Value>,
    object: &mut Value,
) -> Result<(), Status> {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Service") => allocate_service(st, rt, old, object),
        ("", "Namespace") => {
            if object.pointer("/status/phase").is_none() {
                object["status"] = json!({"phase": "Active"});
            }
            Ok(())
        }
        ("", "Pod") if old.is_none() => {
            if object.pointer("/status/phase").is_none() {
                object["status"] = json!({"phase": "Pending"});
            }
            Ok(())
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let mut registry: Registry = st.registry.clone();
            if let Some(old) = old
                && let Some((g, p)) = Registry::crd_key(old)
                && Registry::crd_key(object) != Some((g.clone(), p.clone()))
            {
                return Err(Status::invalid(
                    rt,
                    name_of(object),
                    vec![FieldError::invalid(
                        "spec.names.plural",
                        &json!(p),
                        "field is immutable",
                    )],
                ));
            }
            registry.register_crd(object).map_err(|msg| {
                let (field, detail) = msg.split_once(": ").unwrap_or((&msg, "Required value"));
                let _ = detail;
                Status::invalid(rt, name_of(object), vec![FieldError::required(field, None)])
            })?;
            st.registry = registry;
            let names = object.pointer("/spec/names").cloned().unwrap_or(json!({}));
            let stored: Vec<Value> = object
                .pointer("/spec/versions")
                .and_then(Value::as_array)
                .map(|vs| {
                    vs.iter()
                        .filter(|v| v["storage"].as_bool() == Some(true))
                        .map(|v| v["name"].clone())
                        .collect()
                })
                .unwrap_or_default();
            let t = now();
            object["status"] = json!({
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "lastTransitionTime": t, "reason": "NoConflicts", "message": "no conflicts found"},
                    {"type": "Established", "status": "True", "lastTransitionTime": t, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
                ],
                "acceptedNames": names,
                "storedVersions": stored,
            });
            Ok(())
        }
        _ => Ok(()),
    }
}

fn node_ports_in_use(st: &StoreInner, except_uid: Option<&str>) -> Vec<u64> {
    st.list("/services", None)
        .iter()
        .filter(|s| meta_str(s, "uid") != except_uid || except_uid.is_none())
        .flat_map(|s| {
            s.pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["nodePort"].as_u64())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect()
}

fn allocate_service(
    st: &mut StoreInner,
    rt: &ResourceType,
    old: Option<&Value>,
    object: &mut Value,
) -> Result<(), Status> {
    let name = name_of(object).to_string();
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match (&old_ip, ip.as_str()) {
        (Some(o), "") => {
            spec.insert("clusterIP".into(), json!(o));
            spec.insert("clusterIPs".into(), json!([o]));
        }
        (Some(o), new) if o != new => {
            return Err(Status::invalid(
                rt,
                &name,
                vec![FieldError::invalid(
                    "spec.clusterIP",
                    &json!(new),
                    "field is immutable",
                )],
            ));
        }
        (None, "") if kind != "ExternalName" => {
            let n = st.next_cluster_ip;
            st.next_cluster_ip += 1;
            let ip = format!("10.96.{}.{}", n / 254, n % 254 + 1);
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        (None, ip) if !ip.is_empty() => {
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        _ => {}
    }
    if kind != "NodePort" && kind != "LoadBalancer" {
        return Ok(());
    }
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut used = node_ports_in_use(st, uid.as_deref());
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(ports) = object
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    for (i, p) in ports.iter_mut().enumerate() {
        if let Some(np) = p.get("nodePort").and_then(Value::as_u64) {
            if !(30000..=32767).contains(&np) {
                return Err(Status::invalid(
                    rt,
                    &name,
                    vec![FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        &json!(np),
                        "provided port is not in the valid range. The range of valid ports is 30000-32767",
                    )],
                ));
            }
            if used.contains(&np) {
                return Err(Status::invalid(
                    rt,
                    &name,
                    vec![FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        &json!(np),
                        "provided port is already allocated",
                    )],
                ));
            }
            used.push(np);
            continue;
        }
        let kept = old_ports
            .iter()
            .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"])
            .and_then(|o| o["nodePort"].as_u64());
        let np = match kept {
            Some(np) => np,
            None => {
                let start = 30000 + (uuid::Uuid::new_v4().as_u128() % 2768) as u64;
                (0..2768u64)
                    .map(|k| 30000 + (start - 30000 + k) % 2768)
                    .find(|n| !used.contains(n))
                    .ok_or_else(|| {
                        Status::internal("failed to allocate a nodePort: range is full")
                    })?
            }
        };
        used.push(np);
        p["nodePort"] = json!(np);
    }
    Ok(())
}

/// Finishes a change of an existing object: server metadata kept, status
/// kept apart, generation, validation, managed fields; a no-op stores
/// nothing; an object whose finalizers are gone after its deletion is
/// removed.
fn update_existing(
    st: &mut StoreInner,
    rt: &Arc<ResourceType>,
    old: &Arc<Value>,
    mut new: Value,
    w: Write<'_>,
    managed: bool,
) -> Result<Arc<Value>, Status> {
    let ns = meta_str(old, "namespace").unwrap_or_default().to_string();
    let name = name_of(old).to_string();
    if !new.is_object() {
        return Err(Status::bad_request(
            "the body of the request is not a JSON object",
        ));
    }
    // Server-owned metadata comes from the stored object.
    {
        let old_meta = old
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let meta = metadata_mut(&mut new);
        let server_owned = [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "managedFields",
        ];
        // An apply brings its own managed fields; other writes keep the stored ones.
        for k in server_owned
            .iter()
            .filter(|k| !(managed && **k == "managedFields"))
        {
            match old_meta.get(*k) {
                Some(v) => meta.insert(k.to_string(), v.clone()),
                None => meta.shift_remove(*k),
            };
        }
        meta.shift_remove("selfLink");
    }
    new["apiVersion"] = json!(rt.api_version());
    new["kind"] = json!(rt.kind);
    match w.subresource {
        Some("status") => {
            let status = new.get("status").cloned();
            let mut merged = (**old).clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(m) = merged.as_object_mut() {
                        m.shift_remove("status");
                    }
                }
            }
            merged["metadata"]["managedFields"] = new["metadata"]["managedFields"].clone();
            new = merged;
        }
        _ if rt.status => match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.shift_remove("status");
                }
            }
        },
        _ => {}
    }
    defaults(rt, &mut new);
    if spec_part(old) != spec_part(&new) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        new["metadata"]["generation"] = json!(generation + 1);
    }
    validate(rt, &new)?;
    if rt.kind == "Deployment" && old.pointer("/spec/selector") != new.pointer("/spec/selector") {
        let sel = new
            .pointer("/spec/selector")
            .cloned()
            .unwrap_or(Value::Null);
        return Err(Status::invalid(
            rt,
            &name,
            vec![FieldError::invalid(
                "spec.selector",
                &sel,
                "field is immutable",
            )],
        ));
    }
    prepare(st, rt, Some(old), &mut new)?;
    if !managed {
        record_update(rt, Some(old), &mut new, w.manager, w.subresource);
    }
    if new == **old {
        return Ok(old.clone());
    }
    if w.dry_run {
        return Ok(Arc::new(new));
    }
    let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    let stored = st.put(&rt.key, &ns, &name, new);
    if finalized {
        return Ok(remove(st, &rt.key, &ns, &name, true).unwrap_or(stored));
    }
    Ok(stored)
}

fn existing(
    st: &StoreInner,
    rt: &ResourceType,
    namespace: Option<&str>,
    name: &str,
) -> Result<Arc<Value>, Status> {
    st.get(&rt.key, &ns_key(rt, namespace), name)
        .ok_or_else(|| Status::not_found(rt, name))
}

/// Replaces an object (PUT), with optimistic concurrency on
/// `metadata.resourceVersion`.
pub(crate) fn replace(
    st: &mut StoreInner,
    rt: &Arc<ResourceType>,
    namespace: Option<&str>,
    name: &str,
    body: Value,
    w: Write<'_>,
) -> Result<Arc<Value>, Status> {
    check_type(rt, &body)?;
    if let Some(n) = meta_str(&body, "name")
        && n != name
    {
        return Err(Status::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        )));
    }
    check_namespace(rt, &body, &ns_key(rt, namespace))?;
    let old = existing(st, rt, namespace, name)?;
    if let Some(rv) = meta_str(&body, "resourceVersion")
        && !rv.is_empty()
        && Some(rv) != meta_str(&old, "resourceVersion")
    {
        return Err(Status::conflict(rt, name));
    }
    update_existing(st, rt, &old, body, w, false)
}

/// Patches an object with a merge, strategic merge or JSON patch.
pub(crate) fn patch(
    st: &mut StoreInner,
    rt: &Arc<ResourceType>,
    namespace: Option<&str>,
    name: &str,
    kind: PatchType,
    body: &Value,
    w: Write<'_>,
) -> Result<Arc<Value>, Status> {
    if kind == PatchType::Strategic && rt.schema.is_some() {
        return Err(Status::unsupported_media_type(
            "application/strategic-merge-patch+json",
        ));
    }
    let old = existing(st, rt, namespace, name)?;
    let new = patch::patch(rt, &old, kind, body)?;
    if meta_str(&new, "resourceVersion") != meta_str(&old, "resourceVersion") {
        return Err(Status::conflict(rt, name));
    }
    if meta_str(&new, "name") != Some(name) {
        return Err(Status::bad_request(
            "metadata.name: Invalid value: the name of a patched object cannot change",
        ));
    }
    update_existing(st, rt, &old, new, w, false)
}

/// Server-side apply: creates the object if it is missing.
pub(crate) fn apply(
    st: &mut StoreInner,
    rt: &Arc<ResourceType>,
    namespace: Option<&str>,
    name: &str,
    mut config: Value,
    force: bool,
    w: Write<'_>,
) -> Result<(Arc<Value>, bool), Status> {
    if !config.is_object() {
        return Err(Status::bad_request(
            "the body of the request is not a JSON or YAML object",
        ));
    }
    if config.get("apiVersion").and_then(Value::as_str).is_none()
        || config.get("kind").and_then(Value::as_str).is_none()
    {
        return Err(Status::bad_request(
            "invalid object type: /, Kind=: apiVersion and kind must be set in an apply configuration",
        ));
    }
    check_type(rt, &config)?;
    match meta_str(&config, "name") {
        Some(n) if n == name => {}
        Some(n) => {
            return Err(Status::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        None => {
            return Err(Status::bad_request(
                "metadata.name: Required value: name is required",
            ));
        }
    }
    let ns = ns_key(rt, namespace);
    check_namespace(rt, &config, &ns)?;
    let old = st.get(&rt.key, &ns, name);
    if let Some(rv) = meta_str(&config, "resourceVersion")
        && !rv.is_empty()
        && old.as_ref().and_then(|o| meta_str(o, "resourceVersion")) != Some(rv)
    {
        return Err(Status::conflict(rt, name));
    }
    if let Some(meta) = config.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.shift_remove("resourceVersion");
        meta.shift_remove("managedFields");
    }
    let keep_status = rt.kind == "Node" || rt.kind == "Namespace";
    match old {
        None => {
            if w.subresource.is_some() {
                return Err(Status::not_found(rt, name));
            }
            if rt.namespaced {
                namespace_open(st, &ns)?;
            }
            if !keep_status {
                scope_config(rt, &mut config, None);
            }
            let live = json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": {"name": name}});
            let merged = apply::apply(rt, &live, &config, w.manager, force, None)?;
            let managed = ManagedFields::of(&merged);
            let mut object = fresh(rt, &ns, merged);
            defaults(rt, &mut object);
            validate(rt, &object)?;
            prepare(st, rt, None, &mut object)?;
            managed.store(&mut object);
            if w.dry_run {
                return Ok((Arc::new(object), true));
            }
            Ok((st.put(&rt.key, &ns, name, object), true))
        }
        Some(old) => {
            scope_config(rt, &mut config, w.subresource);
            let merged = apply::apply(rt, &old, &config, w.manager, force, w.subresource)?;
            Ok((update_existing(st, rt, &old, merged, w, true)?, false))
        }
    }
}

/// Deletes an object: at once, or marked with a deletionTimestamp while
/// finalizers remain. Dependents (ownerReferences) are deleted in the
/// background unless `propagation` is `Orphan`.
pub(crate) fn delete(
    st: &mut StoreInner,
    rt: &Arc<ResourceType>,
    namespace: Option<&str>,
    name: &str,
    propagation: Option<&str>,
    precondition_uid: Option<&str>,
    dry_run: bool,
) -> Result<Deleted, Status> {
    let ns = ns_key(rt, namespace);
    let old = existing(st, rt, namespace, name)?;
    if let Some(uid) = precondition_uid
        && meta_str(&old, "uid") != Some(uid)
    {
        return Err(Status::conflict_with(
            rt,
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta_str(&old, "uid").unwrap_or_default()
            ),
        ));
    }
    if dry_run {
        return Ok(Deleted::Now(old));
    }
    if propagation == Some("Orphan") {
        orphan(st, &old);
    }
    let has_finalizers = old
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let is_namespace = rt.kind == "Namespace" && rt.group.is_empty();
    if has_finalizers || is_namespace {
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            return Ok(Deleted::Pending(old));
        }
        let mut marked = (*old).clone();
        let generation = marked
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let meta = metadata_mut(&mut marked);
        meta.insert("deletionTimestamp".into(), json!(now()));
        meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        meta.insert("generation".into(), json!(generation + 1));
        if is_namespace {
            marked["status"] = json!({"phase": "Terminating"});
        }
        let marked = st.put(&rt.key, &ns, name, marked);
        if is_namespace {
            empty_namespace(st, name);
            let _ = finish_namespace(st, name);
            return Ok(match st.get(&rt.key, &ns, name) {
                Some(current) => Deleted::Pending(current),
                None => Deleted::Now(marked),
            });
        }
        return Ok(Deleted::Pending(marked));
    }
    let gone = remove(st, &rt.key, &ns, name, propagation != Some("Orphan"))
        .ok_or_else(|| Status::not_found(rt, name))?;
    Ok(Deleted::Now(gone))
}

/// Removes the owner references to `owner` from its dependents.
fn orphan(st: &mut StoreInner, owner: &Value) {
    let Some(uid) = meta_str(owner, "uid") else {
        return;
    };
    for (key, obj) in st.all_objects() {
        let Some(refs) = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
        else {
            continue;
        };
        if !refs.iter().any(|r| r["uid"] == uid) {
            continue;
        }
        let kept: Vec<Value> = refs.iter().filter(|r| r["uid"] != uid).cloned().collect();
        let mut new = (*obj).clone();
        new["metadata"]["ownerReferences"] = Value::Array(kept);
        let ns = meta_str(&obj, "namespace").unwrap_or_default().to_string();
        st.put(&key, &ns, name_of(&obj), new);
    }
}

/// Removes a stored object now, then what follows: dependents deleted
/// (when `cascade`), a CRD's resources unregistered, a terminating
/// namespace finished.
fn remove(
    st: &mut StoreInner,
    key: &Arc<str>,
    ns: &str,
    name: &str,
    cascade: bool,
) -> Option<Arc<Value>> {
    let gone = st.remove(key, ns, name)?;
    if &**key == CRDS
        && let Some((group, plural)) = Registry::crd_key(&gone)
    {
        let resource = super::registry::storage_key(&group, &plural);
        for obj in st.list(&resource, None) {
            let ons = meta_str(&obj, "namespace").unwrap_or_default().to_string();
            st.remove(&resource, &ons, name_of(&obj));
        }
        st.drop_resource(&resource);
        st.registry.unregister(&group, &plural);
    }
    if cascade && let Some(uid) = meta_str(&gone, "uid") {
        let dependents: Vec<(Arc<str>, Arc<Value>)> = st
            .all_objects()
            .into_iter()
            .filter(|(_, o)| {
                o.pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .collect();
        for (dkey, dep) in dependents {
            delete_stored(st, &dkey, &dep);
        }
    }
    if !ns.is_empty() {
        finish_namespace(st, ns);
    }
    Some(gone)
}

/// Deletes one stored object as a background delete would.
fn delete_stored(st: &mut StoreInner, key: &Arc<str>, obj: &Value) {
    let ns = meta_str(obj, "namespace").unwrap_or_default().to_string();
    let name = name_of(obj).to_string();
    let has_finalizers = obj
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            let mut marked = obj.clone();
            metadata_mut(&mut marked).insert("deletionTimestamp".into(), json!(now()));
            st.put(key, &ns, &name, marked);
        }
    } else {
        remove(st, key, &ns, &name, true);
    }
}

/// Deletes every object of a namespace (the namespace controller's work).
fn empty_namespace(st: &mut StoreInner, namespace: &str) {
    let contents: Vec<(Arc<str>, Arc<Value>)> = st
        .all_objects()
        .into_iter()
        .filter(|(_, o)| meta_str(o, "namespace") == Some(namespace))
        .collect();
    for (key, obj) in contents {
        if st.get(&key, namespace, name_of(&obj)).is_some() {
            delete_stored(st, &key, &obj);
        }
    }
}

/// Removes a terminating namespace once it holds nothing.
fn finish_namespace(st: &mut StoreInner, namespace: &str) -> Option<Arc<Value>> {
    let key: Arc<str> = Arc::from(NAMESPACES);
    let ns = st.get(&key, "", namespace)?;
    ns.pointer("/metadata/deletionTimestamp")?;
    if ns
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
    {
        return None;
    }
    let occupied = st
        .all_objects()
        .iter()
        .any(|(_, o)| meta_str(o, "namespace") == Some(namespace));
    if occupied {
        return None;
    }
    st.remove(&key, "", namespace)
}
