//! Server-side apply and `metadata.managedFields`.
//!
//! Follows the structured-merge-diff rules the API server uses:
//! - an applied configuration is merged into the live object (maps
//!   recursively, list-maps by key, sets by value, anything else replaced);
//! - the manager now owns exactly the fields of its configuration; a field it
//!   applied before and omits now is removed unless another manager owns it;
//! - a change to a field another manager owns is a conflict (409) unless
//!   `force`, which moves the ownership;
//! - any other write (create, update, patch) records an `Update` entry
//!   owning the fields it added or changed, taking them from other managers.

use serde_json::{Map, Value, json};

use super::fields::{FieldSet, compare, display_path, field_set, remove_path};
use super::lists::{ListType, Step, item_key, list_type};
use super::registry::ResourceType;
use super::status::Status;

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }

    /// How conflict messages name the manager.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// The managed fields of one object.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ManagedFields(Vec<Entry>);

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl ManagedFields {
    /// Reads `metadata.managedFields` of an object.
    pub(crate) fn of(object: &Value) -> Self {
        let Some(entries) = object
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
        else {
            return Self::default();
        };
        Self(
            entries
                .iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().to_string(),
                    operation: e["operation"].as_str().unwrap_or("Update").to_string(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                    time: e["time"].as_str().unwrap_or_default().to_string(),
                    subresource: e["subresource"].as_str().map(str::to_string),
                    fields: FieldSet::from_fields_v1(&e["fieldsV1"]),
                })
                .collect(),
        )
    }

    /// Writes them into `metadata.managedFields` (removed when empty).
    pub(crate) fn store(&self, object: &mut Value) {
        let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
            return;
        };
        if self.0.is_empty() {
            meta.shift_remove("managedFields");
            return;
        }
        let entries: Vec<Value> = self
            .0
            .iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation,
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": e.fields.to_fields_v1(),
                });
                if let Some(sub) = &e.subresource {
                    v["subresource"] = json!(sub);
                }
                v
            })
            .collect();
        meta.insert("managedFields".into(), Value::Array(entries));
    }

    fn others_union(&self, manager: &str, operation: &str, subresource: Option<&str>) -> FieldSet {
        let mut all = FieldSet::default();
        for e in self
            .0
            .iter()
            .filter(|e| !e.is(manager, operation, subresource))
        {
            all.union_with(&e.fields);
        }
        all
    }

    /// Sets (or, with `union`, extends) one manager's fields; the entry's
    /// time moves only when its fields change.
    fn put(
        &mut self,
        manager: &str,
        operation: &str,
        subresource: Option<&str>,
        api_version: &str,
        fields: FieldSet,
        union: bool,
    ) {
        match self
            .0
            .iter_mut()
            .find(|e| e.is(manager, operation, subresource))
        {
            Some(e) => {
                let mut new = if union {
                    e.fields.clone()
                } else {
                    FieldSet::default()
                };
                new.union_with(&fields);
                if new != e.fields || e.api_version != api_version {
                    e.fields = new;
                    e.api_version = api_version.to_string();
                    e.time = now();
                }
            }
            None => self.0.push(Entry {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version: api_version.to_string(),
                time: now(),
                subresource: subresource.map(str::to_string),
                fields,
            }),
        }
    }

    fn drop_empty(&mut self) {
        self.0.retain(|e| !e.fields.is_empty());
    }
}

/// Records a non-apply write (`Update`) by `manager`: it owns what it added
/// or changed, other managers lose those fields, and removed fields leave
/// every set.
pub(crate) fn record_update(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: Option<&str>,
) {
    let empty = json!({});
    let old = old.unwrap_or(&empty);
    let mut managed = ManagedFields::of(old);
    let (changed, removed) = compare(rt, old, new);
    for e in managed.0.iter_mut() {
        let kept = e.fields.difference(&removed);
        e.fields = if e.is(manager, "Update", subresource) {
            kept
        } else {
            kept.difference(&changed)
        };
    }
    if !changed.is_empty() {
        managed.put(
            manager,
            "Update",
            subresource,
            &rt.api_version(),
            changed,
            true,
        );
    }
    managed.drop_empty();
    managed.store(new);
}

/// Merges an applied configuration into the live object.
fn merge(rt: &ResourceType, live: &mut Value, config: &Value, steps: &mut Vec<Step>) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, cv) in c {
                if cv.is_null() {
                    continue;
                }
                steps.push(Step::Field(k.clone()));
                match l.get_mut(k) {
                    Some(lv) => merge(rt, lv, cv, steps),
                    None => {
                        l.insert(k.clone(), strip_nulls(cv));
                    }
                }
                steps.pop();
            }
        }
        (Value::Array(l), Value::Array(c)) => match list_type(rt, steps) {
            ListType::Map(keys) => {
                steps.push(Step::Item);
                for item in c {
                    let key = item_key(item, &keys);
                    match l.iter_mut().find(|x| item_key(x, &keys) == key) {
                        Some(existing) => merge(rt, existing, item, steps),
                        None => l.push(strip_nulls(item)),
                    }
                }
                steps.pop();
            }
            ListType::Set => {
                for item in c {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListType::Atomic => *l = c.clone(),
        },
        (live, config) => *live = strip_nulls(config),
    }
}

/// A value without its null fields (they mean "not set" in a configuration).
pub(crate) fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// The result of an apply: the new object with its managed fields.
pub(crate) fn apply(
    rt: &ResourceType,
    live: &Value,
    config: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
) -> Result<Value, Status> {
    let name = live
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut managed = ManagedFields::of(live);
    let config_set = field_set(rt, config);
    let last_set = managed
        .0
        .iter()
        .find(|e| e.is(manager, "Apply", subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();

    let mut merged = live.clone();
    merge(rt, &mut merged, config, &mut Vec::new());

    // Fields this manager applied before and omits now, that no one else owns.
    let others = managed.others_union(manager, "Apply", subresource);
    let dropped = last_set.difference(&config_set).difference(&others);
    // Parents first: a removed list item or map takes its fields along
    // (its key fields gone, a list-map item could no longer be found).
    let mut paths = dropped.paths();
    paths.sort_by_key(Vec::len);
    let mut kept = others.clone();
    kept.union_with(&config_set);
    let mut gone: Vec<Vec<String>> = Vec::new();
    for path in paths {
        if gone.iter().any(|g| path.starts_with(g)) {
            continue;
        }
        // A field that still holds fields someone owns stays.
        if !kept.has_within(&path) && remove_path(&mut merged, &path) {
            gone.push(path);
        }
    }

    let (changed, removed) = compare(rt, live, &merged);
    let mut conflicts: Vec<(String, Vec<String>)> = Vec::new();
    for e in managed
        .0
        .iter()
        .filter(|e| !e.is(manager, "Apply", subresource))
    {
        for path in e.fields.intersection(&changed).paths() {
            conflicts.push((e.describe(), path));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_status(rt, &name, &conflicts));
    }
    for e in managed.0.iter_mut() {
        e.fields = e.fields.difference(&removed);
        if !e.is(manager, "Apply", subresource) {
            e.fields = e.fields.difference(&changed.intersection(&e.fields));
        }
    }
    managed.put(
        manager,
        "Apply",
        subresource,
        &rt.api_version(),
        config_set,
        false,
    );
    managed.drop_empty();
    managed.store(&mut merged);
    Ok(merged)
}

fn conflict_status(rt: &ResourceType, name: &str, conflicts: &[(String, Vec<String>)]) -> Status {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {m}"), "field": display_path(p)}))
        .collect();
    let message = if let [(m, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {m}: {}",
            display_path(p)
        )
    } else {
        let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
        for (m, p) in conflicts {
            match by_manager.iter_mut().find(|(x, _)| x == m) {
                Some((_, ps)) => ps.push(display_path(p)),
                None => by_manager.push((m.clone(), vec![display_path(p)])),
            }
        }
        by_manager.sort();
        let lines: Vec<String> = by_manager
            .iter()
            .flat_map(|(m, ps)| {
                std::iter::once(format!("conflicts with {m}:"))
                    .chain(ps.iter().map(|p| format!("- {p}")))
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    Status::apply_conflict(rt, name, message, causes)
}

/// Keeps only what a write to `subresource` may change in a configuration
/// or body: `status` for `/status`; everything but `status` for the main
/// resource of a kind with a status subresource.
pub(crate) fn scope_config(rt: &ResourceType, config: &mut Value, subresource: Option<&str>) {
    let Some(map) = config.as_object_mut() else {
        return;
    };
    match subresource {
        Some("status") => {
            let keep: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "apiVersion" | "kind" | "status"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let meta = map.get("metadata").cloned();
            *map = keep;
            if let Some(Value::Object(meta)) = meta {
                let ids: Map<String, Value> = meta
                    .into_iter()
                    .filter(|(k, _)| {
                        matches!(k.as_str(), "name" | "namespace" | "resourceVersion" | "uid")
                    })
                    .collect();
                map.insert("metadata".into(), Value::Object(ids));
            }
        }
        _ if rt.status => {
            map.shift_remove("status");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::registry::Registry;

    fn rt() -> std::sync::Arc<ResourceType> {
        Registry::builtin()
            .by_kind("v1", "ConfigMap")
            .expect("configmaps")
    }

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": data})
    }

    #[test]
    fn omitted_field_is_removed_unless_shared() {
        let rt = rt();
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}});
        let a1 = apply(
            &rt,
            &live,
            &cm(json!({"x": "1", "y": "2"})),
            "a",
            false,
            None,
        )
        .expect("apply");
        let b = apply(&rt, &a1, &cm(json!({"y": "2"})), "b", false, None).expect("shared");
        let a2 = apply(&rt, &b, &cm(json!({})), "a", false, None).expect("reapply");
        assert_eq!(a2["data"], json!({"y": "2"}));
        let err = apply(&rt, &a2, &cm(json!({"y": "3"})), "a", false, None).err();
        assert_eq!(
            err.map(|e| e.message),
            Some("Apply failed with 1 conflict: conflict with \"b\": .data.y".into())
        );
        let forced = apply(&rt, &a2, &cm(json!({"y": "3"})), "a", true, None).expect("force");
        assert_eq!(forced["data"], json!({"y": "3"}));
        assert_eq!(ManagedFields::of(&forced).0.len(), 1);
    }
}
