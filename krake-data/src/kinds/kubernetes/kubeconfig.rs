//! Validation of a cluster's kubeconfig.
//!
//! Krake loads the kubeconfig with the Kubernetes client's loader and then
//! requires exactly one context, one user and one cluster. The loader's checks
//! are reproduced here with its messages ("Invalid kube-config file. Expected
//! key current-context in kube-config"), so a bad kubeconfig is rejected at
//! creation with the same 422 as Krake's.

use serde_json::{Map, Value};

use crate::validation::Validator;

/// Checks `kubeconfig` the way Krake does, reporting one message on failure.
pub fn validate_kubeconfig(kubeconfig: &Map<String, Value>, v: &mut Validator) {
    if let Err(message) = check(kubeconfig) {
        v.error(message);
    }
}

fn invalid(detail: String) -> String {
    format!("Invalid kube-config file. {detail}")
}

fn key<'a>(node: &'a Map<String, Value>, key: &str, path: &str) -> Result<&'a Value, String> {
    match node.get(key) {
        Some(value) if !value.is_null() => Ok(value),
        _ => Err(invalid(format!("Expected key {key} in {path}"))),
    }
}

fn object<'a>(value: &'a Value, path: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| invalid(format!("Expected {path} to be a mapping")))
}

fn list<'a>(node: &'a Map<String, Value>, name: &str) -> Result<&'a Vec<Value>, String> {
    let path = format!("kube-config/{name}");
    key(node, name, "kube-config")?
        .as_array()
        .ok_or_else(|| invalid(format!("Expected {path} to be a list")))
}

fn with_name<'a>(
    items: &'a [Value],
    name: &str,
    list_name: &str,
) -> Result<&'a Map<String, Value>, String> {
    for item in items {
        let item = object(item, &format!("kube-config/{list_name} entries"))?;
        match item.get("name") {
            Some(Value::String(n)) if n == name => return Ok(item),
            Some(_) => {}
            None => {
                return Err(invalid(format!(
                    "Expected all values in kube-config/{list_name} list to have 'name' key"
                )));
            }
        }
    }
    Err(invalid(format!(
        "Expected object with name {name} in kube-config/{list_name} list"
    )))
}

fn check(config: &Map<String, Value>) -> Result<(), String> {
    let current = key(config, "current-context", "kube-config")?;
    let current = current
        .as_str()
        .ok_or_else(|| invalid("Expected current-context to be a string".into()))?;
    let contexts = list(config, "contexts")?;
    let context = with_name(contexts, current, "contexts")?;
    let context_path = format!("kube-config/contexts[name={current}]");
    let inner = object(key(context, "context", &context_path)?, &context_path)?;
    let inner_path = format!("{context_path}/context");
    let cluster_name = key(inner, "cluster", &inner_path)?
        .as_str()
        .ok_or_else(|| invalid(format!("Expected {inner_path}/cluster to be a string")))?;
    let clusters = list(config, "clusters")?;
    let cluster = with_name(clusters, cluster_name, "clusters")?;
    key(
        cluster,
        "cluster",
        &format!("kube-config/clusters[name={cluster_name}]"),
    )?;
    let users = list(config, "users")?;
    if let Some(Value::String(user)) = inner.get("user") {
        with_name(users, user, "users")?;
    }
    if contexts.len() != 1 {
        return Err("Only one context is allowed".into());
    }
    if users.len() != 1 {
        return Err("Only one user is allowed".into());
    }
    if clusters.len() != 1 {
        return Err("Only one cluster is allowed".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(config: Value) -> Option<String> {
        let Value::Object(config) = config else {
            panic!("not an object")
        };
        check(&config).err()
    }

    fn good() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
            "clusters": [{"name": "c", "cluster": {"server": "https://10.0.0.1:6443"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        })
    }

    #[test]
    fn accepts_one_context_user_and_cluster() {
        assert_eq!(message(good()), None);
    }

    #[test]
    fn reports_the_loaders_messages() {
        assert_eq!(
            message(json!({"foo": 1})).as_deref(),
            Some("Invalid kube-config file. Expected key current-context in kube-config")
        );
        let mut config = good();
        config["current-context"] = json!("other");
        assert_eq!(
            message(config).as_deref(),
            Some(
                "Invalid kube-config file. Expected object with name other in kube-config/contexts list"
            )
        );
        let mut config = good();
        config["contexts"][0]["context"]["cluster"] = json!("nope");
        assert_eq!(
            message(config).as_deref(),
            Some(
                "Invalid kube-config file. Expected object with name nope in kube-config/clusters list"
            )
        );
        let mut config = good();
        config.as_object_mut().unwrap().remove("users");
        assert_eq!(
            message(config).as_deref(),
            Some("Invalid kube-config file. Expected key users in kube-config")
        );
    }

    #[test]
    fn requires_exactly_one_of_each() {
        let mut config = good();
        config["contexts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "x", "context": {"cluster": "c"}}));
        assert_eq!(
            message(config).as_deref(),
            Some("Only one context is allowed")
        );
        let mut config = good();
        config["users"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "v", "user": {}}));
        assert_eq!(message(config).as_deref(), Some("Only one user is allowed"));
        let mut config = good();
        config["clusters"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "d", "cluster": {}}));
        assert_eq!(
            message(config).as_deref(),
            Some("Only one cluster is allowed")
        );
    }
}
