//! Minimal validation (422 Invalid) and defaulting, as the API server does
//! for the fields controllers most often get wrong.

use serde_json::{Value, json};

use super::registry::ResourceType;
use super::selector::LabelSelector;
use super::status::{FieldError, Status};

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Is `s` a DNS-1123 subdomain?
pub(crate) fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_label)
}

/// Validates an object about to be stored.
pub(crate) fn validate(rt: &ResourceType, object: &Value) -> Result<(), Status> {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut errors = Vec::new();
    if name.is_empty() {
        errors.push(FieldError::required(
            "metadata.name",
            Some("name or generateName is required"),
        ));
    } else if rt.kind == "Namespace" && !is_label(name) {
        errors.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            LABEL_MSG,
        ));
    } else if !is_subdomain(name) {
        errors.push(FieldError::invalid(
            "metadata.name",
            &json!(name),
            SUBDOMAIN_MSG,
        ));
    }
    if rt.group.is_empty() || rt.group == "apps" || rt.group == "batch" {
        match rt.kind.as_str() {
            "Deployment" | "StatefulSet" | "ReplicaSet" | "DaemonSet" => {
                workload(object, &mut errors)
            }
            "Job" => pod_spec(
                object.pointer("/spec/template/spec"),
                "spec.template.spec",
                &mut errors,
            ),
            "CronJob" => pod_spec(
                object.pointer("/spec/jobTemplate/spec/template/spec"),
                "spec.jobTemplate.spec.template.spec",
                &mut errors,
            ),
            "Pod" => pod_spec(object.get("spec"), "spec", &mut errors),
            "Service" => service(object, &mut errors),
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Status::invalid(rt, name, errors))
    }
}

fn workload(object: &Value, errors: &mut Vec<FieldError>) {
    let selector = object.pointer("/spec/selector");
    let labels = object
        .pointer("/spec/template/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    match selector {
        None | Some(Value::Null) => errors.push(FieldError::required("spec.selector", None)),
        Some(sel) => {
            let empty = sel
                .get("matchLabels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
                && sel
                    .get("matchExpressions")
                    .and_then(Value::as_array)
                    .is_none_or(|a| a.is_empty());
            if empty {
                errors.push(FieldError::invalid(
                    "spec.selector",
                    sel,
                    "empty selector is invalid for deployment",
                ));
            } else if !LabelSelector::from_spec(sel)
                .matches(&json!({"metadata": {"labels": labels}}))
            {
                errors.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &labels,
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    pod_spec(
        object.pointer("/spec/template/spec"),
        "spec.template.spec",
        errors,
    );
}

fn pod_spec(spec: Option<&Value>, at: &str, errors: &mut Vec<FieldError>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => errors.push(FieldError::required(format!("{at}.containers"), None)),
        Some(cs) if cs.is_empty() => {
            errors.push(FieldError::required(format!("{at}.containers"), None))
        }
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                if c.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errors.push(FieldError::required(
                        format!("{at}.containers[{i}].name"),
                        None,
                    ));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    errors.push(FieldError::required(
                        format!("{at}.containers[{i}].image"),
                        None,
                    ));
                }
            }
        }
    }
}

fn service(object: &Value, errors: &mut Vec<FieldError>) {
    let ports = object.pointer("/spec/ports").and_then(Value::as_array);
    let headless = object.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None");
    let external = object.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
    match ports {
        Some(ps) if !ps.is_empty() => {
            for (i, p) in ps.iter().enumerate() {
                match p.get("port").and_then(Value::as_u64) {
                    None | Some(0) => {
                        errors.push(FieldError::required(format!("spec.ports[{i}].port"), None))
                    }
                    Some(n) if n > 65535 => errors.push(FieldError::invalid(
                        format!("spec.ports[{i}].port"),
                        &json!(n),
                        "must be between 1 and 65535, inclusive",
                    )),
                    Some(_) => {}
                }
                if ps.len() > 1
                    && p.get("name")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                {
                    errors.push(FieldError::required(format!("spec.ports[{i}].name"), None));
                }
            }
        }
        _ if headless || external => {}
        _ => errors.push(FieldError::required("spec.ports", None)),
    }
}

/// Fills the defaults the API server sets on decode.
pub(crate) fn defaults(rt: &ResourceType, object: &mut Value) {
    match rt.kind.as_str() {
        "Deployment" | "StatefulSet" | "ReplicaSet" if rt.group == "apps" => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
                && spec.get("replicas").is_none_or(Value::is_null)
            {
                spec.insert("replicas".into(), json!(1));
            }
            default_pod_spec(object.pointer_mut("/spec/template/spec"));
        }
        "DaemonSet" | "Job" => default_pod_spec(object.pointer_mut("/spec/template/spec")),
        "CronJob" => default_pod_spec(object.pointer_mut("/spec/jobTemplate/spec/template/spec")),
        "Pod" if rt.group.is_empty() => default_pod_spec(object.get_mut("spec")),
        "Service" if rt.group.is_empty() => {
            let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
                return;
            };
            if spec.get("type").is_none_or(Value::is_null) {
                spec.insert("type".into(), json!("ClusterIP"));
            }
            if spec.get("sessionAffinity").is_none_or(Value::is_null) {
                spec.insert("sessionAffinity".into(), json!("None"));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                    if p.get("protocol").is_none_or(Value::is_null) {
                        p.insert("protocol".into(), json!("TCP"));
                    }
                    if p.get("targetPort").is_none_or(Value::is_null)
                        && let Some(port) = p.get("port").cloned()
                    {
                        p.insert("targetPort".into(), port);
                    }
                }
            }
        }
        _ => {}
    }
}

fn default_pod_spec(spec: Option<&mut Value>) {
    let Some(spec) = spec.and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("restartPolicy").is_none_or(Value::is_null) {
        spec.insert("restartPolicy".into(), json!("Always"));
    }
    for list in ["containers", "initContainers"] {
        let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in cs.iter_mut() {
            let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if p.get("protocol").is_none_or(Value::is_null) {
                    p.insert("protocol".into(), json!("TCP"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::registry::Registry;

    #[test]
    fn deployment_messages() {
        let rt = Registry::builtin()
            .by_kind("apps/v1", "Deployment")
            .expect("deployments");
        let obj = json!({"metadata": {"name": "x"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let err = validate(&rt, &obj).err().map(|e| e.message);
        assert_eq!(
            err.as_deref(),
            Some("Deployment.apps \"x\" is invalid: spec.selector: Required value")
        );
        assert!(is_subdomain("a.b-c") && !is_subdomain("A") && !is_subdomain("-a"));
    }
}
