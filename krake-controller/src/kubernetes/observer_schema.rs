//! Observer schemas: which fields of an application's Kubernetes resources
//! the controller watches, what it saw, and whether the cluster drifted from
//! the desired state.
//!
//! # The model (Krake's, see `docs/user/observer-schema.rst`)
//!
//! An application carries four lists of resources, each entry identified by
//! its [`ResourceId`] (`apiVersion`, `kind`, `metadata.namespace`,
//! `metadata.name`):
//!
//! * the **manifest** (`spec.manifest`): what the user wrote;
//! * the **observer schema** (`status.mangled_observer_schema`, built by
//!   [`schemas_for`]): per resource, the observed fields. Identifying fields
//!   keep their values, every other observed leaf is `null`, and every list
//!   ends with a control dictionary
//!   `{"observer_schema_list_min_length": n, "observer_schema_list_max_length": m}`
//!   bounding the length of the live list (`m == 0`: unlimited). A list
//!   element without an element schema is not observed, only counted;
//! * the **last applied manifest** (`status.last_applied_manifest`, built by
//!   [`last_applied`] and completed by [`fill_from_live`]): the desired state,
//!   the manifest plus the values of observed fields the manifest leaves to the
//!   cluster (server defaults learned after an apply);
//! * the **last observed manifest** (`status.last_observed_manifest`, built by
//!   [`observe`]): the observed fields of the live objects, every list followed
//!   by `{"observer_schema_list_current_length": n}`.
//!
//! [`drift`] compares the last applied and the last observed entry of a
//! resource through its schema; a difference makes the controller apply the
//! resource again, which is how Krake heals changes made behind its back.
//!
//! Everything here works on raw Kubernetes JSON (camelCase keys, as the
//! cluster answers), is pure, and accepts any JSON without panicking: entries
//! that are not what a schema expects (a string where a map is observed, a
//! list without control dictionary, ...) are handled by the rules documented
//! on each function.
//!
//! # Where krake-rs differs from Krake
//!
//! * `observer_schema_list_max_length: 0` means unlimited in the diff too
//!   (Krake's diff ignores it, its bug 9).
//! * Absent, `null` and the zero values (`false`, `0`, `""`, `{}`, `[]`) are
//!   one state for [`drift`]: Kubernetes drops empty and zero fields from its
//!   answers (Go's `omitempty`), so a manifest saying `hostNetwork: false` or
//!   `args: []` would otherwise look drifted forever and be re-applied every
//!   observation. A field whose live value is removed while the desired one is
//!   a zero value therefore goes unnoticed.
//! * Numbers compare by value (`1 == 1.0`).
//! * `metadata.namespace` is skipped when it is absent or `null` on either
//!   side (Krake: only on the live side); a cluster-scoped resource has none
//!   live, and a manifest without one is placed in the cluster's default.
//! * A list's control dictionary is never compared with a list element (Krake
//!   compares the live list's control dictionary with the next desired element
//!   when the live list is shorter than the schema).
//! * An observed field missing from a live answer is left out instead of
//!   failing the whole observation (Krake raises `KeyError`).
//! * [`fill_from_live`] and [`last_applied`] also fill observed fields that
//!   are `null` in the desired state, not only absent ones: in an apply, `null`
//!   means "let the server choose", so the server's choice is the desired value.
//! * For a `LoadBalancer` Service, `status.loadBalancer.ingress` is observed as
//!   a list of any length (control dictionary `min = 0, max = 0`) instead of as
//!   a leaf: its appearance after the apply is not drift, so the controller
//!   does not re-apply the Service when the load balancer gets its address.
//!
//! # Caveats
//!
//! The default schema observes every field of the manifest, and Kubernetes
//! normalises some of them (quantities: `cpu: 0.5` comes back as `500m`;
//! injected list elements such as sidecar containers). Such a field differs
//! from the desired value after every apply; give the resource a custom
//! observer schema that leaves it out.
//!
//! [`last_applied`] and [`fill_from_live`] may put observed `status` fields
//! (such as the load balancer's) into the desired state; the apply ignores a
//! main resource's `status`, but a caller applying with server-side apply
//! should drop it so that it does not claim those fields.

use std::fmt;

use serde_json::{Map, Value};

/// A JSON object: a manifest resource, an observer schema entry, a live
/// object or an observed entry.
type Object = Map<String, Value>;

/// Key of the control dictionary of a schema list: the live list's minimum
/// length.
pub const MIN_LENGTH: &str = "observer_schema_list_min_length";
/// Key of the control dictionary of a schema list: the live list's maximum
/// length, `0` for unlimited.
pub const MAX_LENGTH: &str = "observer_schema_list_max_length";
/// Key of the control dictionary that [`observe`] appends to every observed
/// list: the live list's length.
pub const CURRENT_LENGTH: &str = "observer_schema_list_current_length";

/// The identity of a Kubernetes resource: what Krake's `ResourceID` and
/// `get_kubernetes_resource_idx` compare.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    /// `apiVersion`, such as `apps/v1`.
    pub api_version: String,
    /// `kind`, such as `Deployment`.
    pub kind: String,
    /// `metadata.namespace`; `None` when the resource names none (an empty
    /// string counts as none).
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ResourceId {
    /// The identity of a manifest resource, schema entry, live or observed
    /// object; `None` unless `apiVersion`, `kind` and `metadata.name` are
    /// strings and `metadata.namespace` is a string, `null` or absent.
    pub fn of(resource: &Object) -> Option<ResourceId> {
        let string = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        let metadata = resource.get("metadata")?.as_object()?;
        let namespace = match metadata.get("namespace") {
            None | Some(Value::Null) => None,
            Some(Value::String(ns)) if ns.is_empty() => None,
            Some(Value::String(ns)) => Some(ns.clone()),
            Some(_) => return None,
        };
        Some(ResourceId {
            api_version: string(resource.get("apiVersion"))?,
            kind: string(resource.get("kind"))?,
            namespace,
            name: string(metadata.get("name"))?,
        })
    }

    /// True if both name the same object of a cluster whose default namespace
    /// is `default_namespace`: a missing namespace stands for it.
    ///
    /// A cluster-scoped object has no namespace on the cluster, so a manifest
    /// that wrongly gives one to, say, a `ClusterRole` matches the live object
    /// only if it names the default namespace.
    pub fn matches(&self, other: &ResourceId, default_namespace: &str) -> bool {
        let namespace = |id: &'_ ResourceId| {
            id.namespace
                .clone()
                .unwrap_or_else(|| default_namespace.into())
        };
        self.api_version == other.api_version
            && self.kind == other.kind
            && self.name == other.name
            && namespace(self) == namespace(other)
    }

    /// Krake's rule between an application's own lists (manifest, observer
    /// schema, last applied manifest), which are all written without a
    /// cluster's default: the namespaces must agree only where both name one.
    fn loosely_matches(&self, other: &ResourceId) -> bool {
        self.api_version == other.api_version
            && self.kind == other.kind
            && self.name == other.name
            && match (&self.namespace, &other.namespace) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

impl fmt::Display for ResourceId {
    /// `kind/namespace/name`, or `kind/name` without namespace.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{}/{}/{}", self.kind, namespace, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// The position in `list` of the first entry that [`ResourceId::matches`]
/// `id` in a cluster whose default namespace is `default_namespace`.
pub fn position(list: &[Object], id: &ResourceId, default_namespace: &str) -> Option<usize> {
    list.iter().position(|entry| {
        ResourceId::of(entry).is_some_and(|found| found.matches(id, default_namespace))
    })
}

/// The first entry of `list` that [`ResourceId::matches`] `id` in a cluster
/// whose default namespace is `default_namespace`.
pub fn find<'a>(
    list: &'a [Object],
    id: &ResourceId,
    default_namespace: &str,
) -> Option<&'a Object> {
    position(list, id, default_namespace).and_then(|index| list.get(index))
}

/// The entry of `list` with exactly `id`, else the first whose namespace is
/// missing on one side (Krake's matching inside an application).
fn position_loose(list: &[Object], id: &ResourceId) -> Option<usize> {
    let ids: Vec<_> = list.iter().map(ResourceId::of).collect();
    ids.iter()
        .position(|found| found.as_ref() == Some(id))
        .or_else(|| {
            ids.iter()
                .position(|found| found.as_ref().is_some_and(|f| f.loosely_matches(id)))
        })
}

/// The default observer schema of a manifest resource (Krake's
/// `generate_default_observer_schema_dict`): every field of the manifest is
/// observed.
///
/// * `apiVersion`, `kind`, `metadata.name` and a `metadata.namespace` string
///   keep their values; every other leaf becomes `null`;
/// * a list becomes one schema per element followed by a control dictionary
///   with minimum and maximum equal to its length;
/// * for `kind: Service` with `spec.type: LoadBalancer`,
///   `status.loadBalancer.ingress` is observed too, as a list of any length
///   (`[{min: 0, max: 0}]`): the ingress addresses are counted, not compared.
pub fn default_schema(resource: &Object) -> Object {
    let mut schema = schema_of_object(resource);
    for key in ["apiVersion", "kind"] {
        if let Some(value) = resource.get(key) {
            schema.insert(key.into(), value.clone());
        }
    }
    if let (Some(Value::Object(metadata)), Some(Value::Object(schema_metadata))) =
        (resource.get("metadata"), schema.get_mut("metadata"))
    {
        if let Some(name) = metadata.get("name") {
            schema_metadata.insert("name".into(), name.clone());
        }
        if let Some(namespace @ Value::String(_)) = metadata.get("namespace") {
            schema_metadata.insert("namespace".into(), namespace.clone());
        }
    }
    let service_type = resource
        .get("spec")
        .and_then(|spec| spec.get("type"))
        .and_then(Value::as_str);
    if resource.get("kind").and_then(Value::as_str) == Some("Service")
        && service_type == Some("LoadBalancer")
    {
        let mut status = take_object(&mut schema, "status");
        let mut load_balancer = take_object(&mut status, "loadBalancer");
        load_balancer.insert("ingress".into(), Value::Array(vec![control(0, 0)]));
        status.insert("loadBalancer".into(), Value::Object(load_balancer));
        schema.insert("status".into(), Value::Object(status));
    }
    schema
}

/// Takes `map[key]` out if it is an object (an insert of the same key then
/// keeps its place), else an empty object.
fn take_object(map: &mut Object, key: &str) -> Object {
    match map.get_mut(key) {
        Some(Value::Object(object)) => std::mem::take(object),
        _ => Object::new(),
    }
}

fn control(min: usize, max: usize) -> Value {
    let mut control = Object::new();
    control.insert(MIN_LENGTH.into(), min.into());
    control.insert(MAX_LENGTH.into(), max.into());
    Value::Object(control)
}

fn schema_of(value: &Value) -> Value {
    match value {
        Value::Object(object) => Value::Object(schema_of_object(object)),
        Value::Array(items) => {
            let mut schema: Vec<Value> = items.iter().map(schema_of).collect();
            schema.push(control(items.len(), items.len()));
            Value::Array(schema)
        }
        _ => Value::Null,
    }
}

fn schema_of_object(object: &Object) -> Object {
    object
        .iter()
        .map(|(key, value)| (key.clone(), schema_of(value)))
        .collect()
}

/// The observer schema of every manifest resource, in manifest order
/// (Krake's `generate_default_observer_schema`, whose result is the
/// application's `status.mangled_observer_schema`): the entry of `custom` (the
/// application's `spec.observer_schema`) that names the resource, else its
/// [`default_schema`]. Entries of `custom` naming no manifest resource follow,
/// as Krake keeps them. A manifest resource without identity gets the default.
///
/// A custom entry names a resource like the API's validation matches them:
/// same `apiVersion`, `kind` and name, namespaces equal where both give one.
pub fn schemas_for(manifest: &[Object], custom: &[Object]) -> Vec<Object> {
    let mut used = vec![false; custom.len()];
    let mut schemas: Vec<Object> = manifest
        .iter()
        .map(|resource| {
            let index = ResourceId::of(resource).and_then(|id| position_loose(custom, &id));
            match index.and_then(|index| Some((custom.get(index)?, used.get_mut(index)?))) {
                Some((entry, used)) => {
                    *used = true;
                    entry.clone()
                }
                None => default_schema(resource),
            }
        })
        .collect();
    schemas.extend(
        custom
            .iter()
            .zip(&used)
            .filter(|(_, used)| !**used)
            .map(|(entry, _)| entry.clone()),
    );
    schemas
}

/// The new desired state of an application (Krake's
/// `update_last_applied_manifest_from_spec`): a copy of `manifest` in which
/// every observed field (per `schemas`) that the manifest does not set (absent
/// or `null`) keeps the value `previous_last_applied` records for it, such as
/// a server default that [`fill_from_live`] learned after an earlier apply.
///
/// A resource that a schema names and `previous_last_applied` holds but the
/// manifest lacks (one added by a hook) is appended with its observed fields.
pub fn last_applied(
    manifest: &[Object],
    schemas: &[Object],
    previous_last_applied: &[Object],
) -> Vec<Object> {
    let mut desired = manifest.to_vec();
    for schema in schemas {
        let Some(id) = ResourceId::of(schema) else {
            continue;
        };
        let Some(old) = position_loose(previous_last_applied, &id)
            .and_then(|index| previous_last_applied.get(index))
        else {
            continue;
        };
        let index = match position_loose(&desired, &id) {
            Some(index) => index,
            None => {
                desired.push(Object::new());
                desired.len() - 1
            }
        };
        if let Some(new) = desired.get_mut(index) {
            keep_object(new, old, schema);
        }
    }
    desired
}

fn unset(value: Option<&Value>) -> bool {
    matches!(value, None | Some(Value::Null))
}

/// Copies into `new` the observed fields of `old` that `new` does not set.
fn keep_object(new: &mut Object, old: &Object, schema: &Object) {
    for (key, observed) in schema {
        let Some(old_value) = old.get(key) else {
            continue;
        };
        if unset(new.get(key)) {
            new.insert(key.clone(), empty_like(observed, old_value));
        }
        match (observed, new.get_mut(key), old_value) {
            (Value::Object(schema), Some(Value::Object(new)), Value::Object(old)) => {
                keep_object(new, old, schema)
            }
            (Value::Array(schema), Some(Value::Array(new)), Value::Array(old)) => {
                keep_list(new, old, element_schemas(schema))
            }
            _ => {}
        }
    }
}

fn keep_list(new: &mut Vec<Value>, old: &[Value], schemas: &[Value]) {
    for (index, (schema, old_value)) in schemas.iter().zip(old).enumerate() {
        match new.get_mut(index) {
            None => new.push(empty_like(schema, old_value)),
            Some(slot) if slot.is_null() => *slot = empty_like(schema, old_value),
            Some(_) => {}
        }
        match new.get_mut(index) {
            Some(Value::Object(new)) => {
                if let (Value::Object(schema), Value::Object(old)) = (schema, old_value) {
                    keep_object(new, old, schema)
                }
            }
            Some(Value::Array(new)) => {
                if let (Value::Array(schema), Value::Array(old)) = (schema, old_value) {
                    keep_list(new, old, element_schemas(schema))
                }
            }
            _ => {}
        }
    }
}

/// What an unset field becomes before the observed parts of `value` are
/// copied into it: an empty map or list where `schema` observes inside
/// `value`, else `value` itself. Only observed fields are copied, so a field
/// the user removed from the manifest does not come back.
fn empty_like(schema: &Value, value: &Value) -> Value {
    match (schema, value) {
        (Value::Object(_), Value::Object(_)) => Value::Object(Object::new()),
        (Value::Array(_), Value::Array(_)) => Value::Array(Vec::new()),
        _ => value.clone(),
    }
}

/// Completes a desired entry after an apply or create (Krake's
/// `update_last_applied_manifest_from_resp`): every observed field (per
/// `schema`) that `last_applied` does not set (absent or `null`) takes the
/// value of the `live` object, recursively; lists element by element, as far
/// as both the schema and the live list go. Fields set in `last_applied`
/// stay; fields the live object lacks stay unset. Nothing happens unless
/// `live` is an object.
pub fn fill_from_live(last_applied: &mut Object, schema: &Object, live: &Value) {
    if let Value::Object(live) = live {
        fill_object(last_applied, schema, live);
    }
}

fn fill_object(desired: &mut Object, schema: &Object, live: &Object) {
    for (key, observed) in schema {
        let Some(live_value) = live.get(key) else {
            continue;
        };
        if unset(desired.get(key)) {
            desired.insert(key.clone(), empty_like(observed, live_value));
        }
        match (observed, desired.get_mut(key), live_value) {
            (Value::Object(schema), Some(Value::Object(desired)), Value::Object(live)) => {
                fill_object(desired, schema, live)
            }
            (Value::Array(schema), Some(Value::Array(desired)), Value::Array(live)) => {
                fill_list(desired, element_schemas(schema), live)
            }
            _ => {}
        }
    }
}

fn fill_list(desired: &mut Vec<Value>, schemas: &[Value], live: &[Value]) {
    for (index, (schema, live_value)) in schemas.iter().zip(live).enumerate() {
        match desired.get_mut(index) {
            None => desired.push(empty_like(schema, live_value)),
            Some(slot) if slot.is_null() => *slot = empty_like(schema, live_value),
            Some(_) => {}
        }
        match desired.get_mut(index) {
            Some(Value::Object(desired)) => {
                if let (Value::Object(schema), Value::Object(live)) = (schema, live_value) {
                    fill_object(desired, schema, live)
                }
            }
            Some(Value::Array(desired)) => {
                if let (Value::Array(schema), Value::Array(live)) = (schema, live_value) {
                    fill_list(desired, element_schemas(schema), live)
                }
            }
            _ => {}
        }
    }
}

/// The observed part of a live object (an entry of Krake's
/// `last_observed_manifest`): only the fields `schema` observes, recursively;
/// every observed list holds its observed elements (as far as both the schema
/// and the live list go) followed by `{"observer_schema_list_current_length": n}`,
/// `n` the live list's length. Observed fields the live object lacks are
/// absent; a live value of another type than the schema expects is taken
/// whole.
///
/// The identifying fields (`apiVersion`, `kind`, `metadata.name`,
/// `metadata.namespace`) are always there: the live object's values, or the
/// schema's where the live object lacks them (items of a list answer carry no
/// `apiVersion` and `kind`).
pub fn observe(schema: &Object, live: &Value) -> Object {
    let mut observed = match live {
        Value::Object(live) => observe_object(schema, live),
        _ => Object::new(),
    };
    let live_metadata = live.get("metadata").and_then(Value::as_object);
    for key in ["apiVersion", "kind"] {
        let value = live
            .get(key)
            .filter(|v| v.is_string())
            .or_else(|| schema.get(key));
        if let (false, Some(value)) = (observed.contains_key(key), value) {
            observed.insert(key.into(), value.clone());
        }
    }
    let schema_metadata = schema.get("metadata").and_then(Value::as_object);
    let mut metadata = match observed.get("metadata") {
        None | Some(Value::Object(_)) => take_object(&mut observed, "metadata"),
        // A live `metadata` that is not an object stays as it is.
        Some(_) => return observed,
    };
    for key in ["name", "namespace"] {
        let live = live_metadata
            .and_then(|m| m.get(key))
            .filter(|v| v.is_string());
        let schema = schema_metadata
            .and_then(|m| m.get(key))
            .filter(|v| v.is_string());
        if let (false, Some(value)) = (metadata.contains_key(key), live.or(schema)) {
            metadata.insert(key.into(), value.clone());
        }
    }
    observed.insert("metadata".into(), Value::Object(metadata));
    observed
}

fn observe_value(schema: &Value, live: &Value) -> Value {
    match (schema, live) {
        (Value::Object(schema), Value::Object(live)) => Value::Object(observe_object(schema, live)),
        (Value::Array(schema), Value::Array(live)) => {
            let mut observed: Vec<Value> = element_schemas(schema)
                .iter()
                .zip(live)
                .map(|(schema, live)| observe_value(schema, live))
                .collect();
            let mut control = Object::new();
            control.insert(CURRENT_LENGTH.into(), live.len().into());
            observed.push(Value::Object(control));
            Value::Array(observed)
        }
        _ => live.clone(),
    }
}

fn observe_object(schema: &Object, live: &Object) -> Object {
    schema
        .iter()
        .filter_map(|(key, schema)| {
            let live = live.get(key)?;
            Some((key.clone(), observe_value(schema, live)))
        })
        .collect()
}

/// The element schemas of a schema list: all but its control dictionary.
fn element_schemas(schema: &[Value]) -> &[Value] {
    match schema.split_last() {
        Some((last, elements)) if list_bounds(last).is_some() => elements,
        _ => schema,
    }
}

/// The `(min, max)` of a control dictionary, `max` `None` for unlimited.
/// Missing or invalid numbers count as `0`.
fn list_bounds(control: &Value) -> Option<(u64, Option<u64>)> {
    let control = control.as_object()?;
    if !control.contains_key(MIN_LENGTH) && !control.contains_key(MAX_LENGTH) {
        return None;
    }
    let bound = |key| control.get(key).and_then(Value::as_u64).unwrap_or(0);
    let max = bound(MAX_LENGTH);
    Some((bound(MIN_LENGTH), (max != 0).then_some(max)))
}

/// The elements and live length of an observed list (its control dictionary
/// removed); without one, all of it.
fn observed_elements(observed: &[Value]) -> (&[Value], u64) {
    if let Some((Value::Object(last), elements)) = observed.split_last() {
        if let Some(length) = last.get(CURRENT_LENGTH).and_then(Value::as_u64) {
            return (elements, length);
        }
    }
    (observed, observed.len() as u64)
}

/// A difference between the desired and the observed state of a resource,
/// found by [`drift`]: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The field, such as `spec.template.spec.containers[0].image` (keys that
    /// are not plain names are quoted: `metadata.labels["app.kubernetes.io/name"]`).
    pub path: String,
    /// What differs, such as `3 != 5` (desired, then observed) or
    /// `length 3 not in [1, 1]`.
    pub difference: String,
}

impl fmt::Display for Drift {
    /// `path: difference`, such as `spec.replicas: 3 != 5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.difference)
    }
}

/// Whether the live state of a resource drifted from its desired state in an
/// observed field (Krake's `ResourceDelta._calculate_modified_dict`), and the
/// first difference found; `None` if they agree.
///
/// `schema` is the resource's observer schema, `desired` its last applied
/// entry, `observed` its [`observe`]d entry. For every field the schema
/// observes:
///
/// * a map is compared key by key (a missing map counts as empty);
/// * a list element by element, for the elements the schema observes: one
///   present on one side only is a difference; then the live length (from the
///   control dictionary) must lie within the schema's `[min, max]`, `max = 0`
///   meaning unlimited (a schema list without control dictionary accepts any
///   length);
/// * a leaf by value: numbers by numeric value, everything else as JSON,
///   where absent, `null`, `false`, `0`, `""`, `{}` and `[]` are all equal
///   (Kubernetes omits such fields); a value of another type than the schema
///   expects is compared as a leaf;
/// * `metadata.namespace` only if both sides give one.
pub fn drift(schema: &Object, desired: &Object, observed: &Object) -> Option<Drift> {
    let mut path = Vec::new();
    drift_object(schema, desired, observed, &mut path, true)
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn render(path: &[Segment<'_>]) -> String {
    let mut rendered = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) => {
                let plain = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if plain {
                    if !rendered.is_empty() {
                        rendered.push('.');
                    }
                    rendered.push_str(key);
                } else {
                    rendered.push('[');
                    rendered.push_str(&Value::String((*key).into()).to_string());
                    rendered.push(']');
                }
            }
            Segment::Index(index) => rendered.push_str(&format!("[{index}]")),
        }
    }
    rendered
}

fn found<'a>(path: &[Segment<'a>], difference: String) -> Option<Drift> {
    Some(Drift {
        path: render(path),
        difference,
    })
}

fn drift_object<'a>(
    schema: &'a Object,
    desired: &Object,
    observed: &Object,
    path: &mut Vec<Segment<'a>>,
    top: bool,
) -> Option<Drift> {
    for (key, observed_schema) in schema {
        path.push(Segment::Key(key));
        let (d, o) = (desired.get(key), observed.get(key));
        let difference = if top && key == "metadata" {
            drift_metadata(observed_schema, d, o, path)
        } else {
            drift_value(observed_schema, d, o, path)
        };
        if difference.is_some() {
            return difference;
        }
        path.pop();
    }
    None
}

/// `metadata`, where a namespace missing on either side is not compared.
fn drift_metadata<'a>(
    schema: &'a Value,
    desired: Option<&Value>,
    observed: Option<&Value>,
    path: &mut Vec<Segment<'a>>,
) -> Option<Drift> {
    let without_namespace = |value: Option<&Value>| match value {
        Some(Value::Object(metadata)) => {
            let mut metadata = metadata.clone();
            metadata.remove("namespace");
            Some(Value::Object(metadata))
        }
        other => other.cloned(),
    };
    let namespace = |value: Option<&Value>| {
        value
            .and_then(|metadata| metadata.get("namespace"))
            .is_some_and(|namespace| !namespace.is_null())
    };
    match (namespace(desired), namespace(observed)) {
        (true, true) => drift_value(schema, desired, observed, path),
        _ => drift_value(
            schema,
            without_namespace(desired).as_ref(),
            without_namespace(observed).as_ref(),
            path,
        ),
    }
}

fn drift_value<'a>(
    schema: &'a Value,
    desired: Option<&Value>,
    observed: Option<&Value>,
    path: &mut Vec<Segment<'a>>,
) -> Option<Drift> {
    let desired = desired.filter(|value| !value.is_null());
    let observed = observed.filter(|value| !value.is_null());
    let empty_object = Object::new();
    match schema {
        Value::Object(schema) => {
            let d = match desired {
                None => Some(&empty_object),
                Some(Value::Object(object)) => Some(object),
                Some(_) => None,
            };
            let o = match observed {
                None => Some(&empty_object),
                Some(Value::Object(object)) => Some(object),
                Some(_) => None,
            };
            // Both sides maps (or missing): compare key by key.
            if let (Some(d), Some(o)) = (d, o) {
                return drift_object(schema, d, o, path, false);
            }
        }
        Value::Array(schema) => {
            if let (Some(d), Some(o)) = (as_list(desired), as_list(observed)) {
                return drift_list(schema, d, o, path);
            }
        }
        _ => {}
    }
    if leaves_equal(desired, observed) {
        None
    } else {
        found(path, format!("{} != {}", short(desired), short(observed)))
    }
}

fn drift_list<'a>(
    schema: &'a [Value],
    desired: &[Value],
    observed: &[Value],
    path: &mut Vec<Segment<'a>>,
) -> Option<Drift> {
    let elements = element_schemas(schema);
    let (observed, length) = observed_elements(observed);
    for (index, element_schema) in elements.iter().enumerate() {
        path.push(Segment::Index(index));
        let (d, o) = (desired.get(index), observed.get(index));
        let difference = match (d, o) {
            (None, None) => None,
            (Some(_), None) => found(path, "desired but not observed".into()),
            (None, Some(_)) => found(path, "observed but not desired".into()),
            (Some(_), Some(_)) => drift_value(element_schema, d, o, path),
        };
        if difference.is_some() {
            return difference;
        }
        path.pop();
    }
    let bounds = schema.last().and_then(list_bounds);
    if let Some((min, max)) = bounds {
        if length < min || max.is_some_and(|max| length > max) {
            let max = max.map_or_else(|| "unlimited".into(), |max| max.to_string());
            return found(path, format!("length {length} not in [{min}, {max}]"));
        }
    }
    None
}

/// A list, or an empty one for a missing value; `None` for other values.
fn as_list(value: Option<&Value>) -> Option<&[Value]> {
    match value {
        None => Some(&[]),
        Some(Value::Array(items)) => Some(items),
        Some(_) => None,
    }
}

/// Absent (or `null`) on one side equals a zero value on the other; present
/// values compare as JSON with numbers by value.
fn leaves_equal(desired: Option<&Value>, observed: Option<&Value>) -> bool {
    match (desired, observed) {
        (None, None) => true,
        (None, Some(value)) | (Some(value), None) => is_zero(value),
        (Some(a), Some(b)) => json_equal(a, b),
    }
}

fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(object) => object.is_empty(),
    }
}

/// JSON equality where numbers compare by value: `1 == 1.0`.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => {
            if let (Some(a), Some(b)) = (a.as_i64(), b.as_i64()) {
                a == b
            } else if let (Some(a), Some(b)) = (a.as_u64(), b.as_u64()) {
                a == b
            } else {
                a.as_f64() == b.as_f64()
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, a)| b.get(key).is_some_and(|b| json_equal(a, b)))
        }
        _ => a == b,
    }
}

/// A value for a log line: compact JSON of at most about 60 characters.
fn short(value: Option<&Value>) -> String {
    const LIMIT: usize = 60;
    let text = value.map_or_else(|| "(absent)".into(), Value::to_string);
    if text.chars().count() <= LIMIT {
        return text;
    }
    let mut cut: String = text.chars().take(LIMIT).collect();
    cut.push('…');
    cut
}
