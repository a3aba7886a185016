//! Validation of an application's custom observer schema.
//!
//! An observer schema names the fields of the manifest's resources that the
//! Kubernetes controller observes: every entry identifies a resource of the
//! manifest (`apiVersion`, `kind`, `metadata.name`), every observed leaf is
//! `null`, and every list ends with a control dictionary
//! `{"observer_schema_list_min_length": n, "observer_schema_list_max_length": m}`
//! (`m == 0` means unlimited).
//!
//! Krake raises a non-marshmallow exception here, so its API answers 500;
//! krake-rs reports the same messages as a 422 at `spec.observer_schema`.

use serde_json::{Map, Value};

use super::ManifestResource;
use crate::validation::Validator;

const MIN_LENGTH: &str = "observer_schema_list_min_length";
const MAX_LENGTH: &str = "observer_schema_list_max_length";

/// Checks every entry of `observer_schema` and that it refers to a resource
/// of `manifest`, reporting Krake's messages.
pub fn validate_observer_schema(
    observer_schema: &[ManifestResource],
    manifest: &[ManifestResource],
    v: &mut Validator,
) {
    for entry in observer_schema {
        if let Err(message) = check_resource(entry) {
            v.error(message);
            continue;
        }
        if !manifest
            .iter()
            .any(|resource| same_resource(resource, entry))
        {
            v.error("Observed resource must be in manifest");
        }
    }
}

fn check_resource(entry: &Map<String, Value>) -> Result<(), String> {
    if !entry.contains_key("apiVersion") {
        return Err("apiVersion is not defined".into());
    }
    if !entry.contains_key("kind") {
        return Err("kind is not defined".into());
    }
    let Some(Value::Object(metadata)) = entry.get("metadata") else {
        return Err("metadata dictionary is not defined".into());
    };
    if !metadata.contains_key("name") {
        return Err("name is not defined in the metadata dictionary".into());
    }
    let rest_of_metadata = metadata.iter().filter(|(key, _)| key.as_str() != "name");
    check_dict(rest_of_metadata)?;
    let rest = entry
        .iter()
        .filter(|(key, _)| !matches!(key.as_str(), "apiVersion" | "kind" | "metadata"));
    check_dict(rest)
}

fn check_dict<'a>(entries: impl Iterator<Item = (&'a String, &'a Value)>) -> Result<(), String> {
    for (key, value) in entries {
        match value {
            Value::Object(map) => check_dict(map.iter())?,
            Value::Array(list) => check_list(list)?,
            Value::Null => {}
            _ => return Err(format!("Value of '{key}' is not 'None'")),
        }
    }
    Ok(())
}

fn check_list(list: &[Value]) -> Result<(), String> {
    let Some((Value::Object(control), items)) = list.split_last() else {
        return Err("Special list control dictionary not found".into());
    };
    let (Some(min), Some(max)) = (control.get(MIN_LENGTH), control.get(MAX_LENGTH)) else {
        return Err("Special list control dictionary malformed".into());
    };
    let min = min
        .as_i64()
        .ok_or_else(|| format!("{MIN_LENGTH} should be an integer"))?;
    let max = max
        .as_i64()
        .ok_or_else(|| format!("{MAX_LENGTH} should be an integer"))?;
    if min < 0 {
        return Err(format!("Invalid value for {MIN_LENGTH}"));
    }
    if max < 0 {
        return Err(format!("Invalid value for {MAX_LENGTH}"));
    }
    if max != 0 {
        if max < min {
            return Err(format!("{MAX_LENGTH} is inferior to {MIN_LENGTH}"));
        }
        if (max as u64) < items.len() as u64 {
            return Err(format!(
                "{MAX_LENGTH} is inferior to the number of observed elements"
            ));
        }
    }
    for item in items {
        match item {
            Value::Object(map) => check_dict(map.iter())?,
            Value::Array(list) => check_list(list)?,
            Value::Null => {}
            _ => return Err("Element of a list is not 'None'".into()),
        }
    }
    Ok(())
}

/// True if both resources have the same apiVersion, kind, name and (where
/// both name one) namespace.
pub(crate) fn same_resource(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    let field = |r: &'_ Map<String, Value>, key: &str| r.get(key).cloned();
    let meta = |r: &'_ Map<String, Value>, key: &str| {
        r.get("metadata")
            .and_then(Value::as_object)
            .and_then(|m| m.get(key))
            .cloned()
    };
    let namespaces_agree = match (meta(a, "namespace"), meta(b, "namespace")) {
        (Some(x), Some(y)) if !x.is_null() && !y.is_null() => x == y,
        _ => true,
    };
    field(a, "apiVersion") == field(b, "apiVersion")
        && field(a, "kind") == field(b, "kind")
        && meta(a, "name") == meta(b, "name")
        && namespaces_agree
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    fn errors(schema: Value) -> Vec<String> {
        let manifest = vec![obj(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
            "spec": {"ports": [{"port": 80}]}
        }))];
        let schema: Vec<_> = match schema {
            Value::Array(items) => items.into_iter().map(obj).collect(),
            _ => panic!("not a list"),
        };
        let mut v = Validator::new();
        validate_observer_schema(&schema, &manifest, &mut v);
        v.finish()
            .errors()
            .iter()
            .map(|e| e.message.clone())
            .collect()
    }

    #[test]
    fn accepts_a_valid_schema() {
        let schema = json!([{
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
            "spec": {"type": null, "ports": [{"port": null},
                {"observer_schema_list_min_length": 1, "observer_schema_list_max_length": 1}]}
        }]);
        assert!(errors(schema).is_empty());
        let unlimited = json!([{
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
            "spec": {"ports": [{"port": null}, {"port": null},
                {"observer_schema_list_min_length": 0, "observer_schema_list_max_length": 0}]}
        }]);
        assert!(errors(unlimited).is_empty());
    }

    #[test]
    fn reports_each_rule_with_krakes_message() {
        let base = |extra: Value| {
            let mut entry =
                obj(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"}}));
            entry.extend(obj(extra));
            json!([entry])
        };
        let cases = [
            (
                json!([{"kind": "Service", "metadata": {"name": "echo"}}]),
                "apiVersion is not defined",
            ),
            (
                json!([{"apiVersion": "v1", "metadata": {"name": "echo"}}]),
                "kind is not defined",
            ),
            (
                json!([{"apiVersion": "v1", "kind": "Service"}]),
                "metadata dictionary is not defined",
            ),
            (
                json!([{"apiVersion": "v1", "kind": "Service", "metadata": {}}]),
                "name is not defined in the metadata dictionary",
            ),
            (
                base(json!({"spec": {"type": "x"}})),
                "Value of 'type' is not 'None'",
            ),
            (
                base(json!({"spec": {"ports": [null]}})),
                "Special list control dictionary not found",
            ),
            (
                base(json!({"spec": {"ports": [{"observer_schema_list_min_length": 1}]}})),
                "Special list control dictionary malformed",
            ),
            (
                base(
                    json!({"spec": {"ports": [{"observer_schema_list_min_length": "1", "observer_schema_list_max_length": 1}]}}),
                ),
                "observer_schema_list_min_length should be an integer",
            ),
            (
                base(
                    json!({"spec": {"ports": [{"observer_schema_list_min_length": -1, "observer_schema_list_max_length": 1}]}}),
                ),
                "Invalid value for observer_schema_list_min_length",
            ),
            (
                base(
                    json!({"spec": {"ports": [{"observer_schema_list_min_length": 2, "observer_schema_list_max_length": 1}]}}),
                ),
                "observer_schema_list_max_length is inferior to observer_schema_list_min_length",
            ),
            (
                base(
                    json!({"spec": {"ports": [null, null, {"observer_schema_list_min_length": 0, "observer_schema_list_max_length": 1}]}}),
                ),
                "observer_schema_list_max_length is inferior to the number of observed elements",
            ),
            (
                base(
                    json!({"spec": {"ports": [1, {"observer_schema_list_min_length": 0, "observer_schema_list_max_length": 1}]}}),
                ),
                "Element of a list is not 'None'",
            ),
            (
                json!([{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "other"}}]),
                "Observed resource must be in manifest",
            ),
        ];
        for (schema, message) in cases {
            assert_eq!(
                errors(schema.clone()),
                vec![message.to_owned()],
                "schema {schema}"
            );
        }
    }
}
