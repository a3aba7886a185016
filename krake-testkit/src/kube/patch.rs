//! The patch formats: JSON merge patch (RFC 7386), JSON patch (RFC 6902),
//! and strategic merge patch (merge, with list-maps merged by key and the
//! `$patch: delete|replace` directive).

use serde_json::Value;

use super::lists::{ListType, Step, item_key, list_type};
use super::registry::ResourceType;
use super::status::Status;

/// The patch types of the `Content-Type` of a PATCH request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json`
    Json,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// Reads a `Content-Type`.
    pub(crate) fn of(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().map(str::trim) {
            Some("application/merge-patch+json") => Some(Self::Merge),
            Some("application/strategic-merge-patch+json") => Some(Self::Strategic),
            Some("application/json-patch+json") => Some(Self::Json),
            Some("application/apply-patch+yaml" | "application/apply-patch+json") => {
                Some(Self::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a merge, strategic merge or JSON patch to a copy of `target`.
pub(crate) fn patch(
    rt: &ResourceType,
    target: &Value,
    kind: PatchType,
    body: &Value,
) -> Result<Value, Status> {
    let mut out = target.clone();
    match kind {
        PatchType::Merge => json_patch::merge(&mut out, body),
        PatchType::Strategic => {
            if !body.is_object() {
                return Err(Status::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            strategic(rt, &mut out, body, &mut Vec::new());
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(body.clone()).map_err(|e| {
                Status::bad_request(format!(
                    "the server rejected our request due to an error in our request: {e}"
                ))
            })?;
            json_patch::patch(&mut out, &ops).map_err(|e| {
                Status::new(
                    422,
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Apply => return Err(Status::internal("apply is not a patch")),
    }
    Ok(out)
}

/// Strategic merge of `patch` into `target`.
fn strategic(rt: &ResourceType, target: &mut Value, patch: &Value, steps: &mut Vec<Step>) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch.clone();
        if let Some(m) = replaced.as_object_mut() {
            m.shift_remove("$patch");
        }
        *target = replaced;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if k.starts_with('$') || k.starts_with("$setElementOrder/") {
            continue;
        }
        if v.is_null() || v.get("$patch").and_then(Value::as_str) == Some("delete") {
            t.shift_remove(k);
            continue;
        }
        steps.push(Step::Field(k.clone()));
        match (t.get_mut(k), v) {
            (Some(tv @ Value::Object(_)), Value::Object(_)) => strategic(rt, tv, v, steps),
            (Some(Value::Array(items)), Value::Array(patch_items)) => {
                merge_list(rt, items, patch_items, steps)
            }
            _ => {
                let mut fresh = Value::Null;
                strategic_fresh(rt, &mut fresh, v, steps);
                t.insert(k.clone(), fresh);
            }
        }
        steps.pop();
    }
}

/// A patch value for a field the target lacks: directives removed.
fn strategic_fresh(rt: &ResourceType, target: &mut Value, patch: &Value, steps: &mut Vec<Step>) {
    match patch {
        Value::Object(_) => strategic(rt, target, patch, steps),
        Value::Array(items) => {
            let mut out = Vec::new();
            merge_list(rt, &mut out, items, steps);
            *target = Value::Array(out);
        }
        other => *target = other.clone(),
    }
}

fn merge_list(
    rt: &ResourceType,
    items: &mut Vec<Value>,
    patch_items: &[Value],
    steps: &mut Vec<Step>,
) {
    match list_type(rt, steps) {
        ListType::Map(keys) => {
            steps.push(Step::Item);
            for pi in patch_items {
                let key = item_key(pi, &keys);
                let pos = items.iter().position(|x| item_key(x, &keys) == key);
                let directive = pi.get("$patch").and_then(Value::as_str);
                match (pos, directive) {
                    (Some(i), Some("delete")) => {
                        items.remove(i);
                    }
                    (None, Some("delete")) => {}
                    (Some(i), _) => strategic(rt, &mut items[i], pi, steps),
                    (None, _) => {
                        let mut fresh = Value::Null;
                        strategic_fresh(rt, &mut fresh, pi, steps);
                        items.push(fresh);
                    }
                }
            }
            steps.pop();
        }
        ListType::Set => {
            for pi in patch_items {
                if !items.contains(pi) {
                    items.push(pi.clone());
                }
            }
        }
        ListType::Atomic => *items = patch_items.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kube::registry::Registry;

    #[test]
    fn strategic_merges_containers_by_name() {
        let rt = Registry::builtin()
            .by_kind("apps/v1", "Deployment")
            .expect("deployments");
        let target = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}});
        let body = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}, {"name": "a", "$patch": "delete"}]}}}});
        let out = patch(&rt, &target, PatchType::Strategic, &body).expect("patch");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "b", "image": "b:2"}, {"name": "c", "image": "c:1"}])
        );
        let merged = patch(
            &rt,
            &target,
            PatchType::Merge,
            &json!({"spec": {"template": null}}),
        )
        .expect("merge");
        assert_eq!(merged, json!({"spec": {}}));
    }
}
