//! How each list of an object merges: atomic, a set, or a map keyed by some
//! of its items' fields (`x-kubernetes-list-type` and
//! `x-kubernetes-list-map-keys` in the OpenAPI schemas). Built-in kinds use
//! the rules of their Go types; custom resources read their CRD schema.

use serde_json::{Map, Value};

use super::registry::ResourceType;

/// How a list merges.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ListType {
    /// Replaced as a whole.
    Atomic,
    /// Items are scalars, merged as a set.
    Set,
    /// Items are objects, merged by these key fields.
    Map(Vec<String>),
}

/// One step of a path into an object: a field, or into the items of a list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// A field of an object.
    Field(String),
    /// An item of a list.
    Item,
}

fn names(path: &[Step]) -> Vec<&str> {
    path.iter()
        .filter_map(|s| match s {
            Step::Field(f) => Some(f.as_str()),
            Step::Item => None,
        })
        .collect()
}

/// The built-in rules, from the Go types' `+listType`/`+listMapKey` tags.
fn builtin(kind: &str, path: &[Step]) -> ListType {
    let names = names(path);
    let Some(last) = names.last().copied() else {
        return ListType::Atomic;
    };
    let keys = |ks: &[&str]| ListType::Map(ks.iter().map(|k| k.to_string()).collect());
    let parent = names.len().checked_sub(2).map(|i| names[i]);
    let in_container = matches!(
        parent,
        Some("containers" | "initContainers" | "ephemeralContainers")
    );
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => keys(&["name"]),
        "ports" if in_container => keys(&["containerPort", "protocol"]),
        "ports" if kind == "Service" && names == ["spec", "ports"] => keys(&["port", "protocol"]),
        "volumeMounts" => keys(&["mountPath"]),
        "volumeDevices" => keys(&["devicePath"]),
        "conditions" => keys(&["type"]),
        "ownerReferences" => keys(&["uid"]),
        "hostAliases" => keys(&["ip"]),
        "topologySpreadConstraints" => keys(&["topologyKey", "whenUnsatisfiable"]),
        "finalizers" if names == ["metadata", "finalizers"] => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// The schema node at a path, following `properties`, `items` and
/// `additionalProperties`.
fn schema_at<'a>(schema: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut node = schema;
    for step in path {
        node = match step {
            Step::Field(f) => node
                .get("properties")
                .and_then(|p| p.get(f))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?,
            Step::Item => node.get("items")?,
        };
    }
    Some(node)
}

/// The list type of the list at `path` in an object of this resource.
pub(crate) fn list_type(rt: &ResourceType, path: &[Step]) -> ListType {
    let in_metadata = matches!(path.first(), Some(Step::Field(f)) if f == "metadata");
    match &rt.schema {
        Some(schema) if !in_metadata => {
            let Some(node) = schema_at(schema, path) else {
                return ListType::Atomic;
            };
            match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => ListType::Set,
                Some("map") => ListType::Map(
                    node.get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|ks| {
                            ks.iter()
                                .filter_map(|k| k.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default(),
                ),
                _ => ListType::Atomic,
            }
        }
        _ => builtin(&rt.kind, path),
    }
}

/// The key of a list-map item: its key fields, with `protocol` defaulted
/// to `TCP` as the API server defaults it. Sorted by field name.
pub(crate) fn item_key(item: &Value, keys: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    for k in sorted {
        match item.get(k) {
            Some(v) if !v.is_null() => {
                out.insert(k.clone(), v.clone());
            }
            _ if k == "protocol" => {
                out.insert(k.clone(), Value::String("TCP".into()));
            }
            _ => {}
        }
    }
    out
}
