//! Field sets in the `FieldsV1` form of `metadata.managedFields`
//! (`f:` fields, `k:` list-map items, `v:` set items, `.` for an item that
//! is itself a member), and the walk that lists an object's fields.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::lists::{ListType, Step, item_key, list_type};
use super::registry::ResourceType;

/// Metadata fields the server owns; no manager ever owns them.
const SERVER_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "creationTimestamp",
    "selfLink",
    "resourceVersion",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// A set of field paths, as a tree keyed by encoded path elements.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSet {
    /// This path itself is in the set (`.` in FieldsV1 when it has children).
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// Reads a `fieldsV1` value.
    pub(crate) fn from_fields_v1(v: &Value) -> Self {
        let mut set = Self::default();
        if let Some(map) = v.as_object() {
            if map.is_empty() {
                set.member = true;
            }
            for (k, child) in map {
                if k == "." {
                    set.member = true;
                } else {
                    set.children.insert(k.clone(), Self::from_fields_v1(child));
                }
            }
        }
        set
    }

    /// Writes the `fieldsV1` value of a set's root.
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (k, child) in &self.children {
            map.insert(k.clone(), child.to_fields_v1());
        }
        Value::Object(map)
    }

    /// Adds one path.
    pub(crate) fn insert(&mut self, path: &[String]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Has no member at all.
    pub(crate) fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds every member of `other`.
    pub(crate) fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union_with(c);
        }
    }

    /// The members of `self` that are not in `other`.
    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            let d = match other.children.get(k) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !d.is_empty() {
                out.children.insert(k.clone(), d);
            }
        }
        out
    }

    /// The members in both.
    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (k, c) in &self.children {
            if let Some(o) = other.children.get(k) {
                let i = c.intersection(o);
                if !i.is_empty() {
                    out.children.insert(k.clone(), i);
                }
            }
        }
        out
    }

    /// Does the set hold a member strictly below `path`?
    pub(crate) fn has_within(&self, path: &[String]) -> bool {
        let mut node = self;
        for element in path {
            match node.children.get(element) {
                Some(child) => node = child,
                None => return false,
            }
        }
        node.children.values().any(|c| !c.is_empty())
    }

    /// Every member path, parents before children.
    pub(crate) fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }
}

/// `.spec.containers[name="web"].image`: a path as conflict messages show it.
pub(crate) fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for element in path {
        if let Some(f) = element.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = element.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = element.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        } else if let Some(i) = element.strip_prefix("i:") {
            out.push_str(&format!("[{i}]"));
        }
    }
    out
}

/// One member of an object: its path, and its value when it is a leaf.
pub(crate) type Member<'a> = (Vec<String>, Option<&'a Value>);

/// Every member of an object except the server-owned ones: leaves (scalars,
/// atomic lists, empty maps) with their value, list-map and set items.
pub(crate) fn members<'a>(rt: &ResourceType, object: &'a Value) -> Vec<Member<'a>> {
    let mut out = Vec::new();
    if let Some(map) = object.as_object() {
        for (k, v) in map {
            if k == "apiVersion" || k == "kind" {
                continue;
            }
            if k == "metadata" {
                if let Some(meta) = v.as_object() {
                    let mut steps = vec![Step::Field("metadata".into())];
                    let mut path = vec!["f:metadata".to_string()];
                    for (mk, mv) in meta {
                        if SERVER_METADATA.contains(&mk.as_str()) {
                            continue;
                        }
                        walk_field(rt, mk, mv, &mut steps, &mut path, &mut out);
                    }
                }
                continue;
            }
            walk_field(rt, k, v, &mut Vec::new(), &mut Vec::new(), &mut out);
        }
    }
    out
}

fn walk_field<'a>(
    rt: &ResourceType,
    name: &str,
    value: &'a Value,
    steps: &mut Vec<Step>,
    path: &mut Vec<String>,
    out: &mut Vec<Member<'a>>,
) {
    if value.is_null() {
        return;
    }
    steps.push(Step::Field(name.to_string()));
    path.push(format!("f:{name}"));
    walk_value(rt, value, steps, path, out);
    path.pop();
    steps.pop();
}

fn walk_value<'a>(
    rt: &ResourceType,
    value: &'a Value,
    steps: &mut Vec<Step>,
    path: &mut Vec<String>,
    out: &mut Vec<Member<'a>>,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                walk_field(rt, k, v, steps, path, out);
            }
        }
        Value::Array(items) if !items.is_empty() => match list_type(rt, steps) {
            ListType::Map(keys) => {
                steps.push(Step::Item);
                for item in items {
                    let key = serde_json::to_string(&item_key(item, &keys)).unwrap_or_default();
                    path.push(format!("k:{key}"));
                    out.push((path.clone(), None));
                    walk_value(rt, item, steps, path, out);
                    path.pop();
                }
                steps.pop();
            }
            ListType::Set => {
                for item in items {
                    path.push(format!(
                        "v:{}",
                        serde_json::to_string(item).unwrap_or_default()
                    ));
                    out.push((path.clone(), Some(item)));
                    path.pop();
                }
            }
            ListType::Atomic => out.push((path.clone(), Some(value))),
        },
        _ => out.push((path.clone(), Some(value))),
    }
}

/// The field set of an object.
pub(crate) fn field_set(rt: &ResourceType, object: &Value) -> FieldSet {
    let mut set = FieldSet::default();
    for (path, _) in members(rt, object) {
        set.insert(&path);
    }
    set
}

/// What changed from `old` to `new`: (added or modified, removed).
pub(crate) fn compare(rt: &ResourceType, old: &Value, new: &Value) -> (FieldSet, FieldSet) {
    let old_members: HashMap<Vec<String>, Option<&Value>> = members(rt, old).into_iter().collect();
    let new_members = members(rt, new);
    let mut changed = FieldSet::default();
    let mut seen = std::collections::HashSet::new();
    for (path, value) in &new_members {
        match old_members.get(path) {
            None => changed.insert(path),
            Some(old_value) if old_value != value => changed.insert(path),
            Some(_) => {}
        }
        seen.insert(path.clone());
    }
    let mut removed = FieldSet::default();
    for path in old_members.keys() {
        if !seen.contains(path) {
            removed.insert(path);
        }
    }
    (changed, removed)
}

/// Finds the index of the list item an encoded `k:`/`v:` element names.
fn find_item(items: &[Value], element: &str) -> Option<usize> {
    if let Some(k) = element.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(k).ok()?;
        let names: Vec<String> = key.keys().cloned().collect();
        items.iter().position(|item| item_key(item, &names) == key)
    } else if let Some(v) = element.strip_prefix("v:") {
        let value: Value = serde_json::from_str(v).ok()?;
        items.iter().position(|item| *item == value)
    } else {
        None
    }
}

/// Removes the member at `path` from an object; a map or list that this
/// leaves empty is removed too. Returns whether anything was removed.
pub(crate) fn remove_path(object: &mut Value, path: &[String]) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    match object {
        Value::Object(map) => {
            let Some(name) = first.strip_prefix("f:") else {
                return false;
            };
            if rest.is_empty() {
                return map.shift_remove(name).is_some();
            }
            let Some(child) = map.get_mut(name) else {
                return false;
            };
            let removed = remove_path(child, rest);
            if removed && is_empty_container(child) {
                map.shift_remove(name);
            }
            removed
        }
        Value::Array(items) => {
            let Some(i) = find_item(items, first) else {
                return false;
            };
            if rest.is_empty() {
                items.remove(i);
                return true;
            }
            remove_path(&mut items[i], rest)
        }
        _ => false,
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kube::registry::Registry;

    fn deployments() -> std::sync::Arc<ResourceType> {
        Registry::builtin()
            .by_kind("apps/v1", "Deployment")
            .expect("deployments")
    }

    #[test]
    fn fields_v1_of_containers() {
        let rt = deployments();
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]}}}});
        let set = field_set(&rt, &obj).to_fields_v1();
        assert_eq!(
            set,
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&set), field_set(&rt, &obj));
    }

    #[test]
    fn remove_item_and_empty_parents() {
        let mut obj =
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}]}});
        let path: Vec<String> = [
            "f:spec",
            "f:containers",
            "k:{\"name\":\"a\"}",
            "f:env",
            "k:{\"name\":\"X\"}",
        ]
        .map(String::from)
        .to_vec();
        assert!(remove_path(&mut obj, &path));
        assert_eq!(obj, json!({"spec": {"containers": [{"name": "a"}]}}));
        assert_eq!(
            display_path(&path),
            ".spec.containers[name=\"a\"].env[name=\"X\"]"
        );
    }
}
