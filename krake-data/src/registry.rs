//! The kind registry: every persistent kind declared once, with everything
//! that the API, the client and the CLI need to handle it generically.
//!
//! A [`KindInfo`] names a kind's API group, kind, plural and scope, its
//! sub-operations, its etcd key template and its read-only, sub-resource and
//! immutable fields, and carries type-erased operations on JSON
//! ([`KindInfo::parse`], [`KindInfo::default_status`], [`KindInfo::schema`]),
//! so a server can serve every kind from one set of handlers. Typed code uses
//! the [`Resource`] trait, whose [`Resource::INFO`] points at the same entry.
//!
//! ```
//! use krake_data::registry::{self, Scope};
//!
//! let apps = registry::by_plural("kubernetes", "applications").unwrap();
//! assert_eq!(apps.kind, "Application");
//! assert_eq!(apps.scope, Scope::Namespaced);
//! assert_eq!(apps.key(Some("ns"), "web").unwrap(), "/kubernetes/applications/ns/web");
//! assert_eq!(apps.prefix(None), "/kubernetes/applications/");
//! assert_eq!(registry::ALL.len(), 15);
//! ```

use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::metadata::{Metadata, ResourceRef};
use crate::validation::{
    FieldPath, MISSING_FIELD, Validate, ValidationErrors, Validator, from_value,
};

/// Whether objects of a kind live in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Objects live in a namespace: `/<api>/namespaces/{namespace}/<plural>`.
    Namespaced,
    /// Objects are global: `/<api>/<plural>`.
    Global,
}

/// A sub-operation of a kind, served as `PUT .../{name}/<operation>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subresource {
    /// Replace the observed state (body: the whole object).
    Status,
    /// Bind to a cluster, cloud or project (body: a binding).
    Binding,
    /// The complete hook (body: [`Complete`](crate::kinds::kubernetes::Complete)).
    Complete,
    /// The shutdown hook (body: [`Shutdown`](crate::kinds::kubernetes::Shutdown)).
    Shutdown,
    /// Retry a failed migration or deletion (no body).
    Retry,
}

impl Subresource {
    /// All sub-operations.
    pub const ALL: [Subresource; 5] = [
        Subresource::Status,
        Subresource::Binding,
        Subresource::Complete,
        Subresource::Shutdown,
        Subresource::Retry,
    ];

    /// The last path segment of the operation, e.g. `binding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Binding => "binding",
            Subresource::Complete => "complete",
            Subresource::Shutdown => "shutdown",
            Subresource::Retry => "retry",
        }
    }

    /// The operation named by a path segment.
    pub fn from_segment(segment: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == segment)
    }
}

impl fmt::Display for Subresource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a sub-operation expects as its request body.
#[derive(Debug, Clone, Copy)]
pub enum SubresourceBody {
    /// The whole object of the kind itself (`/status`).
    Object,
    /// A request-only body kind such as `ClusterBinding`.
    Body(&'static BodyInfo),
    /// No body (`/retry`).
    Empty,
}

/// One sub-operation of a kind.
#[derive(Debug, Clone, Copy)]
pub struct SubresourceInfo {
    /// Which operation.
    pub operation: Subresource,
    /// The request body it takes.
    pub body: SubresourceBody,
    /// The resource name RBAC checks, e.g. `applications/binding`.
    pub rbac_resource: &'static str,
}

/// A request-only body kind (a binding, `Complete`, `Shutdown`): not stored,
/// only sent to a sub-operation.
pub struct BodyInfo {
    /// The API group.
    pub api: &'static str,
    /// The kind, e.g. `ClusterBinding`.
    pub kind: &'static str,
    /// Reads and validates a body, returning it normalized (defaults filled in).
    pub parse: fn(Value) -> Result<Value, ValidationErrors>,
    /// The JSON Schema of the body.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
}

impl fmt::Debug for BodyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BodyInfo({}/{})", self.api, self.kind)
    }
}

/// How a body is being read, which decides the treatment of server-set fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParseMode {
    /// A create request: read-only and sub-resource fields are dropped before
    /// validation (the server sets them).
    Create,
    /// An update or `/status` request: the body is a whole object as returned by
    /// a read, so `metadata.uid`, `created`, `modified` and the status must be
    /// present (their values are then ignored or merged by the server).
    Full,
}

/// Everything about one persistent kind.
pub struct KindInfo {
    /// The API group: `core`, `kubernetes`, `infrastructure` or `openstack`.
    pub api: &'static str,
    /// The kind, e.g. `Application`.
    pub kind: &'static str,
    /// The kind of its list, e.g. `ApplicationList`.
    pub list_kind: &'static str,
    /// The plural used in URLs and RBAC rules, e.g. `applications`.
    pub plural: &'static str,
    /// Namespaced or global.
    pub scope: Scope,
    /// The sub-operations served for this kind.
    pub subresources: &'static [SubresourceInfo],
    /// The etcd key template, e.g. `/kubernetes/applications/{namespace}/{name}`.
    pub key_template: &'static str,
    /// Fields set only by the server (dotted paths).
    pub readonly_fields: &'static [&'static str],
    /// Fields changed only through sub-operations (`status`).
    pub subresource_fields: &'static [&'static str],
    /// Fields that may not change once the object exists (dotted paths).
    pub immutable_fields: &'static [&'static str],
    /// Reads and validates a whole object, returning it normalized (every
    /// default filled in, unknown keys dropped).
    pub parse_object: fn(Value) -> Result<Value, ValidationErrors>,
    /// The status a new object starts with, if the kind has one.
    pub default_status: fn() -> Option<Value>,
    /// The fast path of a create: the body parsed straight into the typed
    /// kind and serialized once, with the fields the server sets (see
    /// [`NewObject`]). `None` when the body does not parse or validate as
    /// is: the caller then takes the general path ([`KindInfo::parse`]),
    /// which reports the errors. Both give the same bytes for a valid body.
    pub create_object: fn(&[u8], &NewObject<'_>) -> Option<NewObjectBytes>,
    /// The JSON Schema of the kind.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
}

impl fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KindInfo({}/{})", self.api, self.kind)
    }
}

impl PartialEq for KindInfo {
    fn eq(&self, other: &Self) -> bool {
        self.api == other.api && self.kind == other.kind
    }
}

impl Eq for KindInfo {}

/// Fields every persistent kind's server sets itself.
pub const READONLY_FIELDS: &[&str] = &[
    "metadata.uid",
    "metadata.created",
    "metadata.modified",
    "metadata.deleted",
    "metadata.resource_version",
];

/// The read-only fields a full body must carry (those without a default).
pub const REQUIRED_READONLY_FIELDS: &[&str] =
    &["metadata.uid", "metadata.created", "metadata.modified"];

/// A name or namespace that cannot be part of a store key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A namespaced kind needs a namespace.
    #[error("{kind} is namespaced: a namespace is required")]
    MissingNamespace {
        /// The kind.
        kind: &'static str,
    },
    /// A parameter holds a character outside `[.a-zA-Z0-9_:-]`, or is empty.
    #[error("invalid {parameter} {value:?} for a store key: only [.a-zA-Z0-9_:-] are allowed")]
    InvalidParameter {
        /// `name` or `namespace`.
        parameter: &'static str,
        /// The offending value.
        value: String,
    },
}

fn check_key_parameter(parameter: &'static str, value: &str) -> Result<(), KeyError> {
    let valid = !value.is_empty()
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(KeyError::InvalidParameter {
            parameter,
            value: value.to_owned(),
        })
    }
}

impl KindInfo {
    /// True for namespaced kinds.
    pub fn is_namespaced(&self) -> bool {
        self.scope == Scope::Namespaced
    }

    /// The reference of an object of this kind with `metadata` (a global
    /// kind's reference has no namespace, whatever its metadata says).
    pub fn reference(&self, metadata: &Metadata) -> ResourceRef {
        ResourceRef {
            api: self.api.to_owned(),
            namespace: if self.is_namespaced() {
                metadata.namespace.clone()
            } else {
                None
            },
            kind: self.kind.to_owned(),
            name: metadata.name.clone(),
        }
    }

    /// True if objects of this kind carry a `status` sub-resource.
    pub fn has_status(&self) -> bool {
        !self.subresource_fields.is_empty()
    }

    /// The sub-operation `operation`, if this kind serves it.
    pub fn subresource(&self, operation: Subresource) -> Option<&'static SubresourceInfo> {
        self.subresources.iter().find(|s| s.operation == operation)
    }

    /// The store key of one object. Global kinds ignore `namespace`.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> Result<String, KeyError> {
        check_key_parameter("name", name)?;
        let mut key = self.key_template.replace("{name}", name);
        if self.is_namespaced() {
            let namespace = namespace.ok_or(KeyError::MissingNamespace { kind: self.kind })?;
            check_key_parameter("namespace", namespace)?;
            key = key.replace("{namespace}", namespace);
        }
        Ok(key)
    }

    /// The store key prefix of all objects in `namespace` (or of all objects
    /// of the kind with `None`), ending in `/` so that no other kind or
    /// namespace shares it.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let base = self
            .key_template
            .split("{")
            .next()
            .unwrap_or(self.key_template);
        match (self.is_namespaced(), namespace) {
            (true, Some(namespace)) => format!("{base}{namespace}/"),
            _ => base.to_owned(),
        }
    }

    /// The URL path of the collection: `/<api>/namespaces/{ns}/<plural>` or
    /// `/<api>/<plural>` (global kinds, and namespaced kinds across all
    /// namespaces with `None`).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match (self.is_namespaced(), namespace) {
            (true, Some(ns)) => format!("/{}/namespaces/{}/{}", self.api, ns, self.plural),
            _ => format!("/{}/{}", self.api, self.plural),
        }
    }

    /// The URL path of one object.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{}", self.collection_path(namespace), name)
    }

    /// Reads and validates a request body for this kind.
    ///
    /// With [`ParseMode::Create`] the read-only and sub-resource fields are
    /// dropped first; with [`ParseMode::Full`] the required read-only fields
    /// and the status must be present. Either way `api` and `kind` must match
    /// (or be absent), every model rule is checked, and the object comes back
    /// normalized.
    pub fn parse(&self, mut body: Value, mode: ParseMode) -> Result<Value, ValidationErrors> {
        let mut missing = ValidationErrors::new();
        match mode {
            ParseMode::Create => {
                for field in self.readonly_fields.iter().chain(self.subresource_fields) {
                    remove_path(&mut body, field);
                }
            }
            ParseMode::Full => {
                let required = REQUIRED_READONLY_FIELDS
                    .iter()
                    .chain(self.subresource_fields);
                for field in required {
                    if is_missing(&body, field) {
                        missing.push(FieldPath::parse(field), MISSING_FIELD);
                    }
                }
            }
        }
        if !body.is_object() {
            missing.push(FieldPath::parse("_schema"), "Invalid input type.");
            return Err(missing);
        }
        match (self.parse_object)(body) {
            Ok(value) if missing.is_empty() => Ok(value),
            Ok(_) => Err(missing),
            Err(errors) => {
                missing.extend(errors);
                Err(missing)
            }
        }
    }

    /// The names of the kind's fields that a `PUT` may not change, which are
    /// different in `old` and `new`.
    pub fn changed_immutable_fields(&self, old: &Value, new: &Value) -> Vec<&'static str> {
        self.immutable_fields
            .iter()
            .copied()
            .filter(|field| lookup(old, field) != lookup(new, field))
            .collect()
    }
}

/// The value at a dotted path, if any.
pub fn lookup<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted
        .split('.')
        .try_fold(value, |node, key| node.as_object()?.get(key))
}

fn is_missing(value: &Value, dotted: &str) -> bool {
    matches!(lookup(value, dotted), None | Some(Value::Null))
}

fn remove_path(value: &mut Value, dotted: &str) {
    let (parents, last) = match dotted.rsplit_once('.') {
        Some((parents, last)) => (Some(parents), last),
        None => (None, dotted),
    };
    let mut node = value;
    if let Some(parents) = parents {
        for key in parents.split('.') {
            match node.as_object_mut().and_then(|map| map.get_mut(key)) {
                Some(child) => node = child,
                None => return,
            }
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

/// A persistent kind, with typed access to its metadata.
pub trait Resource:
    Serialize + DeserializeOwned + JsonSchema + Validate + Clone + fmt::Debug + Send + Sync + 'static
{
    /// The kind's registry entry.
    const INFO: &'static KindInfo;

    /// The object's metadata.
    fn metadata(&self) -> &Metadata;

    /// The object's metadata, mutable.
    fn metadata_mut(&mut self) -> &mut Metadata;
}

/// A kind with a `status` sub-resource.
pub trait HasStatus: Resource {
    /// The status type.
    type Status: Serialize + DeserializeOwned + Default + Clone + fmt::Debug;

    /// The observed state.
    fn status(&self) -> &Self::Status;

    /// The observed state, mutable.
    fn status_mut(&mut self) -> &mut Self::Status;
}

/// What the server sets on an object it creates.
#[derive(Debug, Clone, Copy)]
pub struct NewObject<'a> {
    /// The namespace to store a namespaced object in (`None`: `null`);
    /// ignored for global kinds, which keep what the body says.
    pub namespace: Option<&'a str>,
    /// The new object's uid.
    pub uid: &'a str,
    /// Its creation (and modification) time.
    pub now: crate::timestamp::Timestamp,
}

/// A new object as [`KindInfo::create_object`] makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObjectBytes {
    /// The object's name.
    pub name: String,
    /// The object, serialized.
    pub bytes: Vec<u8>,
}

/// The type-erased `create_object` of a kind; `reset_status` gives the
/// status its default (kinds with a status) or does nothing.
#[doc(hidden)]
pub fn create_erased<T: Resource>(
    body: &[u8],
    new: &NewObject<'_>,
    reset_status: fn(&mut T),
) -> Option<NewObjectBytes> {
    let mut object: T = serde_json::from_slice(body).ok()?;
    // As the general path: read-only and sub-resource fields are dropped
    // from the body, then the object is validated, then the server's
    // fields are set.
    let metadata = object.metadata_mut();
    metadata.uid = None;
    metadata.created = None;
    metadata.modified = None;
    metadata.deleted = None;
    metadata.resource_version = None;
    reset_status(&mut object);
    if !object.validation_errors().is_empty() {
        return None;
    }
    let scope = T::INFO.scope;
    let metadata = object.metadata_mut();
    if scope == Scope::Namespaced {
        metadata.namespace = new.namespace.map(str::to_owned);
    }
    metadata.uid = Some(new.uid.to_owned());
    metadata.created = Some(new.now);
    metadata.modified = Some(new.now);
    let bytes = serde_json::to_vec(&object).ok()?;
    Some(NewObjectBytes {
        name: object.metadata().name.clone(),
        bytes,
    })
}

/// `reset_status` of a kind with a status.
#[doc(hidden)]
pub fn default_status_of<T: HasStatus>(object: &mut T) {
    *object.status_mut() = T::Status::default();
}

/// `reset_status` of a kind without one.
#[doc(hidden)]
pub fn no_status_of<T>(_: &mut T) {}

/// Reads, validates and re-serializes a `T`; the type-erased `parse_object`.
#[doc(hidden)]
pub fn parse_erased<T: serde::de::DeserializeOwned + Validate + Serialize>(
    value: Value,
) -> Result<Value, ValidationErrors> {
    let parsed: T = from_value(value)?;
    serde_json::to_value(&parsed)
        .map_err(|err| ValidationErrors::single(FieldPath::root(), err.to_string()))
}

/// The default status of a kind with one; the type-erased `default_status`.
#[doc(hidden)]
pub fn default_status_erased<T: HasStatus>() -> Option<Value> {
    serde_json::to_value(T::Status::default()).ok()
}

/// No status; the type-erased `default_status` of kinds without one.
#[doc(hidden)]
pub fn no_status() -> Option<Value> {
    None
}

/// The JSON Schema of `T`; the type-erased `schema`.
#[doc(hidden)]
pub fn schema_erased<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// Checks the `api` and `kind` fields of a body against their only allowed values.
pub fn validate_type_meta(
    api: &str,
    kind: &str,
    expected_api: &str,
    expected_kind: &str,
    v: &mut Validator,
) {
    if api != expected_api {
        v.field("api", |v| {
            v.error(format!("Must be equal to {expected_api}."))
        });
    }
    if kind != expected_kind {
        v.field("kind", |v| {
            v.error(format!("Must be equal to {expected_kind}."))
        });
    }
}

/// Every persistent kind: Krake's 14 in Krake's order, then the kinds
/// beyond Krake (`core/Lease`).
pub static ALL: &[&KindInfo] = &[
    &crate::kinds::core::ROLE,
    &crate::kinds::core::ROLE_BINDING,
    &crate::kinds::core::GLOBAL_METRIC,
    &crate::kinds::core::METRIC,
    &crate::kinds::core::GLOBAL_METRICS_PROVIDER,
    &crate::kinds::core::METRICS_PROVIDER,
    &crate::kinds::kubernetes::APPLICATION,
    &crate::kinds::kubernetes::CLUSTER,
    &crate::kinds::infrastructure::GLOBAL_INFRASTRUCTURE_PROVIDER,
    &crate::kinds::infrastructure::INFRASTRUCTURE_PROVIDER,
    &crate::kinds::infrastructure::GLOBAL_CLOUD,
    &crate::kinds::infrastructure::CLOUD,
    &crate::kinds::openstack::PROJECT,
    &crate::kinds::openstack::MAGNUM_CLUSTER,
    // Beyond Krake.
    &crate::kinds::core::LEASE,
];

/// Every request-only body kind.
pub static BODIES: &[&BodyInfo] = &[
    &crate::kinds::kubernetes::CLUSTER_BINDING,
    &crate::kinds::kubernetes::COMPLETE,
    &crate::kinds::kubernetes::SHUTDOWN,
    &crate::kinds::infrastructure::CLOUD_BINDING,
    &crate::kinds::openstack::MAGNUM_CLUSTER_BINDING,
];

/// The kind with this API group and plural (as in URLs).
pub fn by_plural(api: &str, plural: &str) -> Option<&'static KindInfo> {
    ALL.iter()
        .copied()
        .find(|k| k.api == api && k.plural == plural)
}

/// The kind with this API group and kind name.
pub fn by_kind(api: &str, kind: &str) -> Option<&'static KindInfo> {
    ALL.iter().copied().find(|k| k.api == api && k.kind == kind)
}

/// The kind whose list kind is `list_kind` (e.g. `ApplicationList`).
pub fn by_list_kind(api: &str, list_kind: &str) -> Option<&'static KindInfo> {
    ALL.iter()
        .copied()
        .find(|k| k.api == api && k.list_kind == list_kind)
}

/// The API groups, in Krake's order.
pub const API_GROUPS: &[&str] = &["core", "kubernetes", "infrastructure", "openstack"];

/// JSON Schemas of every kind, list kind and body kind, keyed by kind name,
/// with the shared definitions they refer to (`#/components/schemas/...`),
/// ready for an OpenAPI document's `components.schemas`.
pub fn component_schemas() -> Map<String, Value> {
    let mut settings = schemars::generate::SchemaSettings::openapi3();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    let mut schemas = Map::new();
    for kind in ALL {
        let schema = (kind.schema)(&mut generator);
        schemas.insert(kind.kind.to_owned(), schema.to_value());
        schemas.insert(
            kind.list_kind.to_owned(),
            serde_json::json!({
                "type": "object",
                "required": ["items"],
                "properties": {
                    "api": {"type": "string", "const": kind.api},
                    "kind": {"type": "string", "const": kind.list_kind},
                    "metadata": {"type": "object"},
                    "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{}", kind.kind)}},
                },
            }),
        );
    }
    for body in BODIES {
        let schema = (body.schema)(&mut generator);
        schemas.insert(body.kind.to_owned(), schema.to_value());
    }
    // A kind's own entry is a reference to its definition of the same name:
    // the definition replaces it.
    for (name, schema) in generator.take_definitions(true) {
        schemas.insert(name, schema);
    }
    schemas
}
