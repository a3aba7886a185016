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

/// A stored value, read only as far as a list needs: where its metadata is
/// and, on demand, its namespace and labels. Lists copy the stored bytes
/// instead of decoding and re-encoding every object.
#[derive(Debug)]
pub struct StoredObject<'a> {
    bytes: &'a [u8],
    /// The byte range of the `metadata` object within `bytes`.
    metadata: Option<std::ops::Range<usize>>,
}

/// Reads a stored object's top-level keys only until `metadata`, which it
/// keeps; the rest of the object (usually the bulk: spec and status) is not
/// scanned. Stored values are written by the API (or Krake), so they are
/// trusted to be valid JSON after that point.
struct FindMetadata<'a, 'c> {
    found: &'c mut Option<&'a serde_json::value::RawValue>,
}

impl<'a> serde::de::Visitor<'a> for FindMetadata<'a, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "metadata" {
                *self.found = Some(map.next_value()?);
                return Ok(());
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

#[derive(serde::Deserialize, Default)]
struct Placement {
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: Option<Map<String, Value>>,
}

impl<'a> StoredObject<'a> {
    /// Finds the metadata of a stored JSON object (reading no further).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ApiError> {
        let mut found = None;
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let read = serde::Deserializer::deserialize_map(
            &mut deserializer,
            FindMetadata { found: &mut found },
        );
        // Stopping at `metadata` leaves the map unfinished, which the
        // deserializer reports: only an error before it counts.
        if let (Err(err), None) = (read, found) {
            return Err(ApiError::Internal(format!(
                "stored object is not JSON: {err}"
            )));
        }
        let metadata = found
            .map(|raw| raw.get())
            .filter(|raw| raw.starts_with('{'))
            .map(|raw| {
                // The raw value borrows from `bytes`: its offset is the
                // distance between the two slices' starts.
                let start = raw.as_ptr() as usize - bytes.as_ptr() as usize;
                start..start + raw.len()
            });
        Ok(StoredObject { bytes, metadata })
    }

    fn placement(&self) -> Placement {
        self.metadata
            .as_ref()
            .and_then(|range| serde_json::from_slice(&self.bytes[range.clone()]).ok())
            .unwrap_or_default()
    }

    /// The namespace and labels (only string label values count, as in
    /// [`labels`]).
    pub fn namespace_and_labels(&self) -> (Option<String>, krake_data::metadata::Labels) {
        let placement = self.placement();
        let labels = placement
            .labels
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| match v {
                Value::String(v) => Some((k, v)),
                _ => None,
            })
            .collect();
        (placement.namespace, labels)
    }

    /// Appends the object with `metadata.resource_version` set to
    /// `revision` (the bytes [`decode`] followed by serialization would
    /// give, up to whitespace).
    pub fn write(&self, revision: Revision, out: &mut Vec<u8>) {
        let version = format!("\"resource_version\":\"{revision}\"");
        match &self.metadata {
            Some(range) => {
                let close = range.end - 1;
                let body = &self.bytes[range.start + 1..close];
                out.extend_from_slice(&self.bytes[..close]);
                if !body.iter().all(u8::is_ascii_whitespace) {
                    out.push(b',');
                }
                out.extend_from_slice(version.as_bytes());
                out.extend_from_slice(&self.bytes[close..]);
            }
            None => {
                // No metadata object (never written by the API): decode the
                // slow way so the result is still valid.
                let object = decode(self.bytes, revision).unwrap_or(Value::Null);
                let _ = serde_json::to_writer(&mut *out, &object);
            }
        }
    }
}

#[cfg(test)]
mod stored_tests {
    use super::*;

    #[test]
    fn written_objects_equal_decoded_ones() {
        for text in [
            r#"{"api":"core","kind":"Role","metadata":{"name":"r","labels":{"a":"b"}},"rules":[]}"#,
            r#"{"metadata": {}, "spec": {"metadata": {"x": 1}}}"#,
            r#"{"spec": {"metadata": "not me"}, "metadata": { "name": "n", "namespace": "ns" }}"#,
            r#"{"kind": "NoMetadata"}"#,
        ] {
            let stored = StoredObject::parse(text.as_bytes()).unwrap();
            let mut out = Vec::new();
            stored.write(42, &mut out);
            let written: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(written, decode(text.as_bytes(), 42).unwrap(), "{text}");
        }
        let stored =
            StoredObject::parse(br#"{"metadata":{"namespace":"ns","labels":{"a":"b","n":1}}}"#)
                .unwrap();
        let (namespace, labels) = stored.namespace_and_labels();
        assert_eq!(namespace.as_deref(), Some("ns"));
        assert_eq!(labels.len(), 1);
        assert!(StoredObject::parse(b"[1, 2]").is_err());
        assert!(StoredObject::parse(b"{not json").is_err());
        // The metadata is found before the rest is read.
        let early = StoredObject::parse(br#"{"metadata":{"name":"n"},"spec":{"x":1}}"#).unwrap();
        let mut out = Vec::new();
        early.write(7, &mut out);
        assert_eq!(
            serde_json::from_slice::<Value>(&out).unwrap(),
            serde_json::json!({"metadata": {"name": "n", "resource_version": "7"}, "spec": {"x": 1}})
        );
    }
}
