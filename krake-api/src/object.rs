//! Helpers on objects as JSON values: store encoding, metadata access and
//! the `resource_version` the API adds to every object it returns.

use bytes::Bytes;
use krake_data::Timestamp;
use krake_store::{KeyValue, Revision};
use serde_json::{Map, Value};

use crate::problem::ApiError;

/// Decodes a stored value and sets `metadata.resource_version` to `revision`.
pub fn decode(value: &[u8], revision: Revision) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(value)
        .map_err(|err| ApiError::Internal(format!("stored object is not JSON: {err}")))?;
    set_resource_version(&mut object, revision);
    Ok(object)
}

/// Decodes a key-value (see [`decode`]).
pub fn decode_kv(kv: &KeyValue) -> Result<Value, ApiError> {
    decode(&kv.value, kv.mod_revision)
}

/// Encodes an object for the store, without `resource_version` (which is the
/// store's revision, not part of the value), so Krake reads the same bytes.
pub fn encode(object: &Value) -> Result<Bytes, ApiError> {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resource_version");
    }
    serde_json::to_vec(&object)
        .map(Bytes::from)
        .map_err(|err| ApiError::Internal(err.to_string()))
}

/// The object's metadata map (created if missing).
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"] = Value::Object(Map::new());
    }
    match object.get_mut("metadata") {
        Some(Value::Object(map)) => map,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// Sets `metadata.resource_version`.
pub fn set_resource_version(object: &mut Value, revision: Revision) {
    if object.is_object() {
        metadata_mut(object).insert(
            "resource_version".to_owned(),
            Value::String(revision.to_string()),
        );
    }
}

/// The `metadata.resource_version` of a request body, if it carries one.
pub fn resource_version(object: &Value) -> Result<Option<Revision>, ApiError> {
    match object.pointer("/metadata/resource_version") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => text.parse().map(Some).map_err(|_| {
            ApiError::Invalid(krake_data::validation::ValidationErrors::single(
                krake_data::validation::FieldPath::parse("metadata.resource_version"),
                "Not a valid resource version.",
            ))
        }),
        Some(_) => Err(ApiError::Invalid(
            krake_data::validation::ValidationErrors::single(
                krake_data::validation::FieldPath::parse("metadata.resource_version"),
                "Not a valid string.",
            ),
        )),
    }
}

/// A timestamp as JSON.
pub fn timestamp(time: Timestamp) -> Value {
    Value::String(time.to_string())
}

/// True if `metadata.deleted` is set.
pub fn is_deleted(object: &Value) -> bool {
    object
        .pointer("/metadata/deleted")
        .is_some_and(|deleted| !deleted.is_null())
}

/// The finalizers of an object.
pub fn finalizers(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The labels of an object.
pub fn labels(object: &Value) -> krake_data::metadata::Labels {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The namespace of an object, if any.
pub fn namespace(object: &Value) -> Option<&str> {
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
}

/// The `status.state` of an object, if any.
pub fn state(object: &Value) -> Option<&str> {
    object.pointer("/status/state").and_then(Value::as_str)
}

/// Appends `reference` to `metadata.owners` unless it is there already.
pub fn add_owner(object: &mut Value, reference: &Value) {
    let metadata = metadata_mut(object);
    let owners = metadata
        .entry("owners")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = owners {
        if !list.contains(reference) {
            list.push(reference.clone());
        }
    } else {
        *owners = Value::Array(vec![reference.clone()]);
    }
}
