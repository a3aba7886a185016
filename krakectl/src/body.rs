//! Request bodies from flags: the partial bodies that create and register
//! send (the server fills in defaults, as with Krake's krakectl), and the
//! changes update applies to the object it read.

use std::path::Path;

use clap::ArgMatches;
use serde_json::{Map, Value, json};

use crate::catalog::{Flags, KindCommand};
use crate::error::CliError;

/// Sets `path` (object keys) in `value` to `new`, creating objects on the way.
fn put(value: &mut Value, path: &[&str], new: Value) {
    let mut node = value;
    for key in path {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map.entry((*key).to_owned()).or_insert(Value::Null);
    }
    *node = new;
}

/// The list at `path`, created if missing (or not a list).
fn list_at<'a>(value: &'a mut Value, path: &[&str]) -> Option<&'a mut Vec<Value>> {
    let pointer: String = path.iter().map(|key| format!("/{key}")).collect();
    if !value.pointer(&pointer).is_some_and(Value::is_array) {
        put(value, path, Value::Array(Vec::new()));
    }
    value.pointer_mut(&pointer).and_then(Value::as_array_mut)
}

fn strings(m: &ArgMatches, id: &str) -> Vec<String> {
    if m.try_contains_id(id).unwrap_or(false) {
        m.get_many::<String>(id)
            .map(|values| values.cloned().collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    }
}

fn string(m: &ArgMatches, id: &str) -> Option<String> {
    if m.try_contains_id(id).unwrap_or(false) {
        m.get_one::<String>(id).cloned()
    } else {
        None
    }
}

fn flag(m: &ArgMatches, id: &str) -> bool {
    m.try_get_one::<bool>(id)
        .ok()
        .flatten()
        .copied()
        .unwrap_or(false)
}

fn number<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Option<T> {
    m.try_get_one::<T>(id).ok().flatten().cloned()
}

/// Values of a two-valued repeatable flag (`--metric NAME WEIGHT`).
fn pairs(m: &ArgMatches, id: &str) -> Vec<(String, String)> {
    let Ok(Some(occurrences)) = m.try_get_occurrences::<String>(id) else {
        return Vec::new();
    };
    occurrences
        .filter_map(|mut values| Some((values.next()?.clone(), values.next()?.clone())))
        .collect()
}

/// Reads a YAML (or JSON) file as documents.
pub fn read_documents(path: &Path) -> Result<Vec<Value>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).map_err(|err| CliError::Invalid {
            path: path.display().to_string(),
            message: err.to_string(),
        })?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

fn read_document(path: &Path) -> Result<Value, CliError> {
    let mut documents = read_documents(path)?;
    match documents.len() {
        1 => Ok(documents.remove(0)),
        n => Err(CliError::Invalid {
            path: path.display().to_string(),
            message: format!("expected one document, found {n}"),
        }),
    }
}

fn labels(m: &ArgMatches, object: &mut Value, replace: bool) -> Result<(), CliError> {
    let given = strings(m, "label");
    if given.is_empty() && !replace {
        return Ok(());
    }
    let mut map = if replace {
        Map::new()
    } else {
        object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    for label in given {
        let (key, value) = label
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("label {label:?} is not KEY=VALUE")))?;
        map.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    put(object, &["metadata", "labels"], Value::Object(map));
    Ok(())
}

/// Appends (or with `replace`, sets) the values of flag `id` to the list at `path`.
fn extend_list(m: &ArgMatches, id: &str, object: &mut Value, path: &[&str], replace: bool) {
    let values = strings(m, id);
    if values.is_empty() && !replace {
        return;
    }
    let Some(list) = list_at(object, path) else {
        return;
    };
    if replace {
        list.clear();
    }
    list.extend(values.into_iter().map(Value::String));
}

fn metric_refs(
    m: &ArgMatches,
    object: &mut Value,
    path: &[&str],
    replace: bool,
) -> Result<(), CliError> {
    let mut refs = Vec::new();
    for (id, namespaced) in [("metric", true), ("global-metric", false)] {
        for (name, weight) in pairs(m, id) {
            let weight: f64 = weight.parse().map_err(|_| {
                CliError::Usage(format!(
                    "weight {weight:?} of metric {name:?} is not a number"
                ))
            })?;
            refs.push(json!({"name": name, "weight": weight, "namespaced": namespaced}));
        }
    }
    if refs.is_empty() && !replace {
        return Ok(());
    }
    let Some(list) = list_at(object, path) else {
        return Ok(());
    };
    if replace {
        list.clear();
    }
    list.extend(refs);
    Ok(())
}

fn backoff(m: &ArgMatches, object: &mut Value) {
    for field in ["backoff", "backoff_delay", "backoff_limit"] {
        if let Some(value) = number::<i64>(m, field) {
            put(object, &["spec", field], json!(value));
        }
    }
}

/// Replaces environment values equal to KEY with VALUE in every container.
fn inject(manifest: &mut Value, key: &str, value: &str) {
    match manifest {
        Value::Object(map) => {
            if let Some(Value::Array(env)) = map.get_mut("env") {
                for entry in env.iter_mut() {
                    if entry.get("value").and_then(Value::as_str) == Some(key) {
                        put(entry, &["value"], Value::String(value.to_owned()));
                    }
                }
            }
            for child in map.values_mut() {
                inject(child, key, value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| inject(i, key, value)),
        _ => {}
    }
}

fn application(m: &ArgMatches, object: &mut Value, update: bool) -> Result<(), CliError> {
    if let Some(file) = string(m, "file") {
        let documents = read_documents(Path::new(&file))?;
        let tosca = documents
            .first()
            .filter(|d| d.get("tosca_definitions_version").is_some())
            .cloned();
        match tosca {
            Some(template) => put(object, &["spec", "tosca"], template),
            None => put(object, &["spec", "manifest"], Value::Array(documents)),
        }
    }
    if let Some(url) = string(m, "url") {
        if url.ends_with(".zip") || url.ends_with(".csar") {
            put(object, &["spec", "csar"], Value::String(url));
        } else if url.ends_with(".yaml") || url.ends_with(".yml") {
            put(object, &["spec", "tosca"], Value::String(url));
        } else {
            return Err(CliError::Usage(format!(
                "{url:?} is neither a TOSCA template (.yaml, .yml) nor a CSAR (.zip, .csar)"
            )));
        }
    }
    if !update && object.pointer("/spec/manifest").is_none() {
        put(object, &["spec", "manifest"], json!([]));
    }
    for injection in strings(m, "inject") {
        let (key, value) = injection
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("injection {injection:?} is not KEY=VALUE")))?;
        if let Some(manifest) = object.pointer_mut("/spec/manifest") {
            inject(manifest, key, value);
        }
    }
    if let Some(file) = string(m, "observer_schema") {
        put(
            object,
            &["spec", "observer_schema"],
            Value::Array(read_documents(Path::new(&file))?),
        );
    }
    if flag(m, "enable-migration") {
        put(object, &["spec", "constraints", "migration"], json!(true));
    }
    if flag(m, "disable-migration") {
        put(object, &["spec", "constraints", "migration"], json!(false));
    }
    let cluster = ["spec", "constraints", "cluster"];
    if !update && object.pointer("/spec/constraints/cluster").is_none() {
        put(object, &cluster, json!({}));
    }
    extend_list(
        m,
        "cluster-label-constraint",
        object,
        &["spec", "constraints", "cluster", "labels"],
        flag(m, "remove-existing-label-constraints"),
    );
    extend_list(
        m,
        "cluster-resource-constraint",
        object,
        &["spec", "constraints", "cluster", "custom_resources"],
        flag(m, "remove-existing-resource-constraints"),
    );
    extend_list(
        m,
        "cluster-metric-constraint",
        object,
        &["spec", "constraints", "cluster", "metrics"],
        flag(m, "remove-existing-metric-constraints"),
    );
    labels(m, object, flag(m, "remove-existing-labels"))?;
    let mut hooks: Vec<String> = Vec::new();
    if flag(m, "hook-complete") {
        hooks.push("complete".to_owned());
    }
    if m.try_contains_id("hook-shutdown").unwrap_or(false)
        && m.value_source("hook-shutdown").is_some()
    {
        hooks.push("shutdown".to_owned());
        let values = strings(m, "hook-shutdown");
        if let Some(timeout) = values.first() {
            let timeout: i64 = timeout.parse().map_err(|_| {
                CliError::Usage(format!("shutdown timeout {timeout:?} is not a number"))
            })?;
            put(object, &["spec", "shutdown_grace_time"], json!(timeout));
        }
        if let Some(strategy) = values.get(1) {
            put(
                object,
                &["spec", "shutdown_failure_strategy"],
                json!(strategy),
            );
        }
        if let Some(retries) = values.get(2) {
            let retries: i64 = retries.parse().map_err(|_| {
                CliError::Usage(format!("shutdown retries {retries:?} is not a number"))
            })?;
            put(object, &["spec", "shutdown_retry_count"], json!(retries));
        }
    }
    if !hooks.is_empty() {
        let Some(list) = list_at(object, &["spec", "hooks"]) else {
            return Ok(());
        };
        for hook in hooks {
            if !list.iter().any(|h| h == hook.as_str()) {
                list.push(Value::String(hook));
            }
        }
    }
    backoff(m, object);
    if flag(m, "auto-cluster-create") {
        put(object, &["spec", "auto_cluster_create"], json!(true));
    }
    Ok(())
}

/// The single-context kubeconfig of `context` (default: the current one),
/// and the name of its cluster entry (Krake names the cluster after it).
pub fn kubeconfig(path: &Path, context: Option<&str>) -> Result<(Value, String), CliError> {
    let config = read_document(path)?;
    let invalid = |message: String| CliError::Invalid {
        path: path.display().to_string(),
        message,
    };
    let context_name = match context {
        Some(name) => name.to_owned(),
        None => config
            .get("current-context")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("no current-context; choose one with --context".to_owned()))?
            .to_owned(),
    };
    let find = |list: &str, name: &str| -> Result<Value, CliError> {
        config
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|entry| entry.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
            .ok_or_else(|| invalid(format!("no entry {name:?} in {list}")))
    };
    let context_entry = find("contexts", &context_name)?;
    let cluster_name = context_entry
        .pointer("/context/cluster")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("context {context_name:?} names no cluster")))?
        .to_owned();
    let user_name = context_entry
        .pointer("/context/user")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("context {context_name:?} names no user")))?
        .to_owned();
    let cluster = find("clusters", &cluster_name)?;
    let user = find("users", &user_name)?;
    let mut single = json!({
        "apiVersion": config.get("apiVersion").cloned().unwrap_or(json!("v1")),
        "kind": "Config",
        "clusters": [cluster],
        "contexts": [context_entry],
        "current-context": context_name,
        "users": [user],
    });
    if let Some(preferences) = config.get("preferences") {
        put(&mut single, &["preferences"], preferences.clone());
    }
    Ok((single, cluster_name))
}

fn cluster(m: &ArgMatches, object: &mut Value, update: bool) -> Result<(), CliError> {
    if let Some(path) = string(m, "kubeconfig") {
        let (config, _) = kubeconfig(Path::new(&path), string(m, "context").as_deref())?;
        put(object, &["spec", "kubeconfig"], config);
    }
    if let Some(file) = string(m, "file") {
        put(object, &["spec", "tosca"], read_document(Path::new(&file))?);
    }
    if !update && object.pointer("/spec/constraints").is_none() {
        put(object, &["spec", "constraints"], json!({"cloud": {}}));
    }
    extend_list(
        m,
        "custom-resource",
        object,
        &["spec", "custom_resources"],
        false,
    );
    metric_refs(
        m,
        object,
        &["spec", "metrics"],
        flag(m, "remove-existing-metrics"),
    )?;
    labels(m, object, flag(m, "remove-existing-labels"))?;
    if flag(m, "inherit-labels") {
        put(object, &["metadata", "inherit_labels"], json!(true));
    }
    if flag(m, "inherit-metrics") {
        put(object, &["spec", "inherit_metrics"], json!(true));
    }
    extend_list(
        m,
        "cloud-label-constraint",
        object,
        &["spec", "constraints", "cloud", "labels"],
        flag(m, "remove-existing-cloud-label-constraints"),
    );
    extend_list(
        m,
        "cloud-metric-constraint",
        object,
        &["spec", "constraints", "cloud", "metrics"],
        flag(m, "remove-existing-cloud-metric-constraints"),
    );
    backoff(m, object);
    Ok(())
}

fn set_string(m: &ArgMatches, id: &str, object: &mut Value, path: &[&str]) {
    if let Some(value) = string(m, id) {
        put(object, path, Value::String(value));
    }
}

fn infrastructure_provider(m: &ArgMatches, object: &mut Value) -> Result<(), CliError> {
    set_string(m, "type", object, &["spec", "type"]);
    set_string(m, "url", object, &["spec", "im", "url"]);
    set_string(m, "username", object, &["spec", "im", "username"]);
    set_string(m, "password", object, &["spec", "im", "password"]);
    set_string(m, "token", object, &["spec", "im", "token"]);
    labels(m, object, false)
}

/// Krake's `getpass`: asks for a password on the terminal without echoing
/// it (through `stty`), or reads a line of the standard input when it is not
/// a terminal.
fn ask_password(prompt: &str) -> Result<String, CliError> {
    use std::io::{BufRead, IsTerminal, Write};
    use std::process::{Command, Stdio};
    let stdin = std::io::stdin();
    let stty = |setting: &str| {
        Command::new("stty")
            .arg(setting)
            .stdin(Stdio::inherit())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let terminal = stdin.is_terminal();
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let silenced = terminal && stty("-echo");
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if silenced {
        stty("echo");
    }
    if terminal {
        eprintln!();
    }
    match read {
        Ok(0) => Err(CliError::Usage(
            "no password: give --password (the standard input is empty)".to_owned(),
        )),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_owned()),
        Err(err) => Err(CliError::Usage(format!("cannot read the password: {err}"))),
    }
}

fn cloud(m: &ArgMatches, object: &mut Value, update: bool) -> Result<(), CliError> {
    if !update {
        put(object, &["spec", "type"], json!("openstack"));
    }
    let os = ["spec", "openstack"];
    set_string(m, "url", object, &["spec", "openstack", "url"]);
    if !update {
        put(
            object,
            &["spec", "openstack", "auth", "type"],
            json!("password"),
        );
    }
    let password = ["spec", "openstack", "auth", "password"];
    set_string(
        m,
        "username",
        object,
        &[&password[..], &["user", "username"]].concat(),
    );
    let password_path = [&password[..], &["user", "password"]].concat();
    match string(m, "password") {
        Some(value) => put(object, &password_path, Value::String(value)),
        // Krake asks for it (getpass) when it is missing.
        None if !update => put(
            object,
            &password_path,
            Value::String(ask_password("Please enter your Cloud password: ")?),
        ),
        None => {}
    }
    set_string(
        m,
        "domain-name",
        object,
        &[&password[..], &["user", "domain_name"]].concat(),
    );
    set_string(
        m,
        "project",
        object,
        &[&password[..], &["project", "name"]].concat(),
    );
    set_string(
        m,
        "domain-id",
        object,
        &[&password[..], &["project", "domain_id"]].concat(),
    );
    if let Some(name) = string(m, "infra-provider") {
        put(
            object,
            &[&os[..], &["infrastructure_provider"]].concat(),
            json!({"name": name, "namespaced": true}),
        );
    }
    if let Some(name) = string(m, "global-infra-provider") {
        put(
            object,
            &[&os[..], &["infrastructure_provider"]].concat(),
            json!({"name": name, "namespaced": false}),
        );
    }
    if !update
        && object
            .pointer("/spec/openstack/infrastructure_provider")
            .is_none()
    {
        return Err(CliError::Usage(
            "one of --infra-provider and --global-infra-provider is required".to_owned(),
        ));
    }
    metric_refs(
        m,
        object,
        &["spec", "openstack", "metrics"],
        flag(m, "remove-existing-metrics"),
    )?;
    labels(m, object, flag(m, "remove-existing-labels"))
}

fn metrics_provider(m: &ArgMatches, object: &mut Value, update: bool) -> Result<(), CliError> {
    let kind = match string(m, "type") {
        Some(kind) => {
            put(object, &["spec", "type"], Value::String(kind.clone()));
            kind
        }
        None => object
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    let fields: &[(&str, &str)] = match kind.as_str() {
        "prometheus" => &[("url", "url")],
        "kafka" => &[
            ("url", "url"),
            ("table", "table"),
            ("comparison-column", "comparison_column"),
            ("value-column", "value_column"),
        ],
        "influx" => &[
            ("url", "url"),
            ("token", "token"),
            ("org", "org"),
            ("bucket", "bucket"),
        ],
        _ => &[],
    };
    for (id, field) in fields {
        set_string(m, id, object, &["spec", &kind, field]);
    }
    if kind == "static" {
        let metrics = pairs(m, "metric");
        if !metrics.is_empty() || !update {
            let mut map = Map::new();
            for (name, value) in metrics {
                let value: f64 = value.parse().map_err(|_| {
                    CliError::Usage(format!(
                        "value {value:?} of metric {name:?} is not a number"
                    ))
                })?;
                map.insert(name, json!(value));
            }
            put(object, &["spec", "static", "metrics"], Value::Object(map));
        }
    }
    labels(m, object, false)
}

fn metric(m: &ArgMatches, object: &mut Value, name: &str, update: bool) -> Result<(), CliError> {
    set_string(m, "mp-name", object, &["spec", "provider", "name"]);
    match string(m, "metric-name") {
        Some(metric) => put(
            object,
            &["spec", "provider", "metric"],
            Value::String(metric),
        ),
        None if !update => put(
            object,
            &["spec", "provider", "metric"],
            Value::String(name.to_owned()),
        ),
        None => {}
    }
    for field in ["min", "max"] {
        if let Some(value) = number::<f64>(m, field) {
            put(object, &["spec", field], json!(value));
        }
    }
    // `--allowed-values` without values changes nothing (Krake's nargs='*').
    let allowed: Option<Vec<i64>> = m
        .try_get_many::<i64>("allowed-values")
        .ok()
        .flatten()
        .map(|values| values.copied().collect())
        .filter(|values: &Vec<i64>| !values.is_empty());
    if let Some(values) = allowed {
        put(object, &["spec", "allowed_values"], json!(values));
    } else if !update {
        put(object, &["spec", "allowed_values"], json!([]));
    }
    labels(m, object, false)
}

fn from_file(m: &ArgMatches, object: &mut Value) -> Result<(), CliError> {
    if let Some(file) = string(m, "file") {
        let document = read_document(Path::new(&file))?;
        let Value::Object(fields) = document else {
            return Err(CliError::Invalid {
                path: file,
                message: "expected a mapping".to_owned(),
            });
        };
        for (key, value) in fields {
            if key == "metadata" {
                if let Some(labels) = value.get("labels") {
                    put(object, &["metadata", "labels"], labels.clone());
                }
            } else if key != "api" && key != "kind" {
                put(object, &[&key], value);
            }
        }
    }
    Ok(())
}

fn role(m: &ArgMatches, object: &mut Value, update: bool) -> Result<(), CliError> {
    from_file(m, object)?;
    let split = |text: &str| -> Vec<Value> {
        text.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_owned()))
            .collect()
    };
    let rules = strings(m, "rule");
    if !rules.is_empty() || (!update && object.get("rules").is_none()) {
        let Some(list) = list_at(object, &["rules"]) else {
            return Ok(());
        };
        for rule in rules {
            let parts: Vec<&str> = rule.split(':').collect();
            let [api, resources, namespaces, verbs] = parts[..] else {
                return Err(CliError::Usage(format!(
                    "rule {rule:?} is not API:RESOURCES:NAMESPACES:VERBS"
                )));
            };
            list.push(json!({
                "api": api,
                "resources": split(resources),
                "namespaces": split(namespaces),
                "verbs": split(verbs),
            }));
        }
    }
    labels(m, object, false)
}

fn role_binding(m: &ArgMatches, object: &mut Value, update: bool) -> Result<(), CliError> {
    from_file(m, object)?;
    for (id, field) in [("user", "users"), ("role", "roles")] {
        let values = strings(m, id);
        if !values.is_empty() || (!update && object.get(field).is_none()) {
            let Some(list) = list_at(object, &[field]) else {
                continue;
            };
            for value in values {
                if !list.iter().any(|v| v == value.as_str()) {
                    list.push(Value::String(value));
                }
            }
        }
    }
    labels(m, object, false)
}

/// A flag's value, or (on create) Krake's fallback to an `OS_*` variable.
fn string_or_env(m: &ArgMatches, id: &str, variable: &str, update: bool) -> Option<String> {
    string(m, id).or_else(|| (!update).then(|| std::env::var(variable).ok()).flatten())
}

fn project(m: &ArgMatches, object: &mut Value, update: bool) -> Result<(), CliError> {
    match string_or_env(m, "auth-url", "OS_AUTH_URL", update) {
        Some(url) => put(object, &["spec", "url"], Value::String(url)),
        None if update => {}
        None => {
            return Err(CliError::Usage(
                "give --auth-url (or set OS_AUTH_URL)".to_owned(),
            ));
        }
    }
    set_string(m, "template", object, &["spec", "template"]);
    if let Ok(Some(mut credential)) = m.try_get_many::<String>("application-credential") {
        let id = credential.next().cloned().unwrap_or_default();
        let secret = credential.next().cloned().unwrap_or_default();
        put(
            object,
            &["spec", "auth"],
            json!({"type": "application_credential", "application_credential": {"id": id, "secret": secret}}),
        );
    } else {
        let user = string_or_env(m, "user-id", "OS_USER_ID", update);
        let password = string_or_env(m, "password", "OS_PASSWORD", update);
        let project = string_or_env(m, "project-id", "OS_PROJECT_ID", update);
        match (user, password, project) {
            (Some(user), Some(password), Some(project)) => put(
                object,
                &["spec", "auth"],
                json!({"type": "password", "password": {"user": {"id": user, "password": password}, "project": {"id": project}}}),
            ),
            (None, None, None) if update => {}
            _ => {
                return Err(CliError::Usage(
                    "give --user-id, --password and --project-id (or set OS_USER_ID, OS_PASSWORD and OS_PROJECT_ID), or --application-credential ID SECRET".to_owned(),
                ));
            }
        }
    }
    metric_refs(m, object, &["spec", "metrics"], false)?;
    labels(m, object, false)
}

fn magnum_cluster(m: &ArgMatches, object: &mut Value, update: bool) -> Result<(), CliError> {
    for (id, field) in [
        ("master-count", "master_count"),
        ("node-count", "node_count"),
    ] {
        if let Some(value) = number::<i64>(m, id) {
            put(object, &["spec", field], json!(value));
        }
    }
    // On update, as Krake's: given constraints or metrics replace the old.
    let constraints = strings(m, "project-label-constraint");
    extend_list(
        m,
        "project-label-constraint",
        object,
        &["spec", "constraints", "project", "labels"],
        update && !constraints.is_empty(),
    );
    let metrics_given = !pairs(m, "metric").is_empty() || !pairs(m, "global-metric").is_empty();
    metric_refs(m, object, &["spec", "metrics"], update && metrics_given)?;
    if !update {
        labels(m, object, false)?;
    }
    Ok(())
}

/// Applies the per-kind flags to `object` (a new body, or the object read for an update).
pub fn apply(
    kind: &KindCommand,
    m: &ArgMatches,
    object: &mut Value,
    name: &str,
    update: bool,
) -> Result<(), CliError> {
    match kind.flags {
        Flags::Application => application(m, object, update),
        Flags::Cluster => cluster(m, object, update),
        Flags::InfrastructureProvider => infrastructure_provider(m, object),
        Flags::Cloud => cloud(m, object, update),
        Flags::MetricsProvider => metrics_provider(m, object, update),
        Flags::Metric | Flags::GlobalMetric => metric(m, object, name, update),
        Flags::Role => role(m, object, update),
        Flags::Lease => {
            from_file(m, object)?;
            labels(m, object, false)
        }
        Flags::RoleBinding => role_binding(m, object, update),
        Flags::Project => project(m, object, update),
        Flags::MagnumCluster => magnum_cluster(m, object, update),
    }
}

/// Kinds whose state is lost when an application migrates without a
/// graceful shutdown.
const STATEFUL_KINDS: &[&str] = &["StatefulSet", "PersistentVolumeClaim", "PersistentVolume"];

/// Krake's warning for an application that may migrate, holds stateful
/// resources and has no shutdown hook.
pub fn migration_warning(object: &Value) -> Option<String> {
    let manifest = object.pointer("/spec/manifest")?.as_array()?;
    let migration = object
        .pointer("/spec/constraints/migration")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let has_shutdown = object
        .pointer("/spec/hooks")
        .and_then(Value::as_array)
        .is_some_and(|hooks| hooks.iter().any(|h| h == "shutdown"));
    let stateful: Vec<&str> = manifest
        .iter()
        .filter_map(|r| r.get("kind").and_then(Value::as_str))
        .filter(|k| STATEFUL_KINDS.contains(k))
        .collect();
    (migration && !has_shutdown && !stateful.is_empty()).then(|| {
        format!(
            "warning: migration is enabled and the application holds stateful resources ({}) \
             without a shutdown hook: their state may be lost when it migrates \
             (use --hook-shutdown or --disable-migration)",
            stateful.join(", ")
        )
    })
}

/// The partial body of a create: `api`, `kind`, `metadata.name`, and the flags.
pub fn create(kind: &KindCommand, m: &ArgMatches, name: &str) -> Result<Value, CliError> {
    let mut object = json!({
        "api": kind.info.api,
        "kind": kind.info.kind,
        "metadata": {"name": name},
    });
    apply(kind, m, &mut object, name, false)?;
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_about_stateful_applications_that_may_migrate() {
        let mut app = json!({"spec": {"manifest": [{"kind": "StatefulSet"}, {"kind": "Service"}]}});
        assert!(migration_warning(&app).unwrap().contains("(StatefulSet)"));
        put(&mut app, &["spec", "hooks"], json!(["shutdown"]));
        assert_eq!(migration_warning(&app), None);
        let stateless = json!({"spec": {"manifest": [{"kind": "Deployment"}]}});
        assert_eq!(migration_warning(&stateless), None);
    }

    #[test]
    fn puts_and_lists_create_their_path() {
        let mut value = json!({});
        put(&mut value, &["a", "b"], json!(1));
        list_at(&mut value, &["a", "c"]).unwrap().push(json!("x"));
        assert_eq!(value, json!({"a": {"b": 1, "c": ["x"]}}));
        let mut manifest =
            json!([{"spec": {"containers": [{"env": [{"name": "X", "value": "KEY"}]}]}}]);
        inject(&mut manifest, "KEY", "v");
        assert_eq!(manifest[0]["spec"]["containers"][0]["env"][0]["value"], "v");
    }
}
