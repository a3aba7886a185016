//! The hooks' changes to an application's desired manifest (Krake's
//! `ApplicationMangling`): Secrets, environment variables, a volume and its
//! mounts.
//!
//! The workloads are every manifest resource with containers at
//! `spec.containers` (a Pod), `spec.template.spec.containers` (Deployment,
//! StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job) or
//! `spec.jobTemplate.spec.template.spec.containers` (CronJob); Krake only
//! mangles Pods, Deployments and ReplicationControllers. Every container
//! (not the init containers, as Krake) gets the environment variables and,
//! with TLS, the volume mount.
//!
//! The Secrets go where the workloads go: one per distinct
//! `metadata.namespace` of the workloads, and a workload without a
//! namespace gets a Secret without one, so both land in the namespace the
//! cluster client picks for such items (the kubeconfig context's; Krake
//! wrote `default` there, away from a workload in another context
//! namespace).
//!
//! Mangling is idempotent: an environment variable, volume or mount of the
//! same name is replaced, not added twice.
//!
//! Every field it adds is observed: without a custom observer schema for a
//! resource the default one observes all of the mangled resource; a custom
//! entry of a workload gets the added variables, mounts and volumes (with
//! list lengths counted), as Krake's `mangle` does.

use base64::Engine as _;
use krake_data::kinds::kubernetes::{Application, ManifestResource};
use serde_json::{Map, Value, json};

use super::{Hook, HooksConfig};
use crate::kubernetes::observer_schema::{self, MAX_LENGTH, MIN_LENGTH, ResourceId};

type Object = Map<String, Value>;

/// The Pod specs of a workload, from the resource's root.
const POD_SPEC_PATHS: [&[&str]; 3] = [
    &["spec"],
    &["spec", "template", "spec"],
    &["spec", "jobTemplate", "spec", "template", "spec"],
];

/// Why a manifest cannot be mangled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MangleError {
    /// The application asks for a hook whose token is not in its status.
    #[error("the {0} hook has no token in the application's status yet")]
    MissingToken(&'static str),
    /// The hook has TLS but no certificate in the status.
    #[error("the {0} hook has no certificate in the application's status yet")]
    MissingCert(&'static str),
    /// A list of containers, environment variables, mounts or volumes that
    /// is no list of objects.
    #[error("{resource}: {field} is not a list of objects")]
    NotAList {
        /// The resource.
        resource: String,
        /// The field.
        field: &'static str,
    },
}

/// The name of the token Secret of `hook` of the application `app`.
pub fn token_secret_name(app: &str, hook: Hook) -> String {
    format!("{app}-krake-{}-secret-token", hook.name())
}

/// The name of the certificates Secret of `hook` of the application `app`.
pub fn certs_secret_name(app: &str, hook: Hook) -> String {
    format!("{app}-krake-{}-secret-certs", hook.name())
}

/// The name of the certificates volume of `hook` of the application `app`.
pub fn volume_name(app: &str, hook: Hook) -> String {
    format!("{app}-krake-{}-volume", hook.name())
}

fn base64(text: &str) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(text))
}

fn secret(name: &str, namespace: Option<&str>, data: Object) -> ManifestResource {
    let mut metadata = Object::new();
    metadata.insert("name".into(), name.into());
    if let Some(namespace) = namespace {
        metadata.insert("namespace".into(), namespace.into());
    }
    let mut secret = Object::new();
    secret.insert("apiVersion".into(), "v1".into());
    secret.insert("kind".into(), "Secret".into());
    secret.insert("metadata".into(), Value::Object(metadata));
    secret.insert("type".into(), "Opaque".into());
    secret.insert("data".into(), Value::Object(data));
    secret
}

/// What one hook adds.
struct Additions {
    env: Vec<Object>,
    mounts: Vec<Object>,
    volumes: Vec<Object>,
}

/// The manifest `app` gets with its hooks, and `custom` (the custom
/// observer schema entries, `spec.observer_schema` first) with the added
/// fields of workloads that have a custom entry. A manifest without hooks
/// is left as it is.
pub fn mangle(
    config: &HooksConfig,
    app: &Application,
    manifest: &mut Vec<ManifestResource>,
    custom: &mut [ManifestResource],
) -> Result<(), MangleError> {
    let name = &app.metadata.name;
    for hook in Hook::ALL {
        if !hook.enabled(app) {
            continue;
        }
        let settings = config.hook(hook);
        let token = hook
            .token(&app.status)
            .ok_or(MangleError::MissingToken(hook.name()))?;
        let certs = match &settings.ca {
            Some(ca) => {
                let (cert, key) = hook
                    .cert(&app.status)
                    .ok_or(MangleError::MissingCert(hook.name()))?;
                Some((ca, cert, key))
            }
            None => None,
        };
        let token_secret = token_secret_name(name, hook);
        let certs_secret = certs_secret_name(name, hook);
        let volume = volume_name(name, hook);
        let token_key = settings.env_token.to_lowercase();
        let url_key = settings.env_url.to_lowercase();
        let env_from = |env: &str, key: &str| {
            json!({
                "name": env,
                "valueFrom": {"secretKeyRef": {"name": token_secret, "key": key}},
            })
        };
        let additions = Additions {
            env: [
                env_from(&settings.env_token, &token_key),
                env_from(&settings.env_url, &url_key),
            ]
            .into_iter()
            .filter_map(|v| v.as_object().cloned())
            .collect(),
            mounts: certs
                .iter()
                .filter_map(|_| {
                    json!({"name": volume, "mountPath": settings.cert_dest})
                        .as_object()
                        .cloned()
                })
                .collect(),
            volumes: certs
                .iter()
                .filter_map(|_| {
                    json!({"name": volume, "secret": {"secretName": certs_secret}})
                        .as_object()
                        .cloned()
                })
                .collect(),
        };

        // The workloads, their namespaces in manifest order.
        let mut namespaces: Vec<Option<String>> = Vec::new();
        let mut first_workload = None;
        for (position, resource) in manifest.iter_mut().enumerate() {
            let id = ResourceId::of(resource);
            let label = id
                .as_ref()
                .map_or_else(|| "a resource".to_owned(), ToString::to_string);
            if !inject(resource, &additions, &label)? {
                continue;
            }
            first_workload.get_or_insert(position);
            let Some(id) = id else { continue };
            if !namespaces.contains(&id.namespace) {
                namespaces.push(id.namespace.clone());
            }
            if let Some(index) = custom_position(custom, &id) {
                if let Some(schema) = custom.get_mut(index) {
                    inject_schema(schema, resource, &additions);
                }
            }
        }

        // The Secrets before the first workload that reads them (after a
        // Namespace of the manifest before it): applied first, deleted
        // last.
        let mut at = first_workload.unwrap_or(manifest.len());
        let mut data = Object::new();
        data.insert(token_key.clone(), base64(token));
        data.insert(url_key.clone(), base64(&config.url(hook, app)));
        for namespace in &namespaces {
            let secret = secret(&token_secret, namespace.as_deref(), data.clone());
            upsert_resource(manifest, secret, &mut at);
        }
        if let Some((ca, cert, key)) = certs {
            let mut data = Object::new();
            data.insert("ca-bundle.pem".into(), base64(ca.ca_bundle()));
            data.insert("cert.pem".into(), base64(cert));
            data.insert("key.pem".into(), base64(key));
            for namespace in &namespaces {
                let secret = secret(&certs_secret, namespace.as_deref(), data.clone());
                upsert_resource(manifest, secret, &mut at);
            }
        }
    }
    Ok(())
}

/// The Secrets of the hooks `app` no longer asks for but still has a
/// token of: to delete (404 is fine), in every namespace a workload of
/// `manifest` runs in and wherever the last applied manifest has them, so
/// that they go even when that status write was lost to a concurrent
/// update. [`forget_disabled`](super::forget_disabled) then clears the
/// tokens, which ends it.
pub fn disabled_secrets(app: &Application, manifest: &[ManifestResource]) -> Vec<ManifestResource> {
    let mut secrets = Vec::new();
    for hook in Hook::ALL {
        if hook.enabled(app) || hook.token(&app.status).is_none() {
            continue;
        }
        let names = [
            token_secret_name(&app.metadata.name, hook),
            certs_secret_name(&app.metadata.name, hook),
        ];
        let mut namespaces: Vec<Option<String>> = Vec::new();
        for resource in manifest {
            if pod_spec_path(resource).is_some() {
                let namespace = ResourceId::of(resource).and_then(|id| id.namespace);
                if !namespaces.contains(&namespace) {
                    namespaces.push(namespace);
                }
            }
        }
        for resource in &app.status.last_applied_manifest {
            if let Some(id) = ResourceId::of(resource) {
                if id.kind == "Secret"
                    && names.contains(&id.name)
                    && !namespaces.contains(&id.namespace)
                {
                    namespaces.push(id.namespace);
                }
            }
        }
        for namespace in &namespaces {
            for name in &names {
                secrets.push(secret(name, namespace.as_deref(), Object::new()));
            }
        }
    }
    secrets
}

/// The custom entry naming `id` (the first, as the observer schema takes).
fn custom_position(custom: &[ManifestResource], id: &ResourceId) -> Option<usize> {
    let schemas = observer_schema::schemas_for(std::slice::from_ref(&id_object(id)), custom);
    let found = schemas.first()?;
    custom.iter().position(|entry| entry == found)
}

/// A bare resource with the identity `id`.
fn id_object(id: &ResourceId) -> Object {
    let mut metadata = Object::new();
    metadata.insert("name".into(), id.name.clone().into());
    if let Some(namespace) = &id.namespace {
        metadata.insert("namespace".into(), namespace.clone().into());
    }
    let mut object = Object::new();
    object.insert("apiVersion".into(), id.api_version.clone().into());
    object.insert("kind".into(), id.kind.clone().into());
    object.insert("metadata".into(), Value::Object(metadata));
    object
}

/// Replaces the resource with the identity of `resource`, else inserts it
/// at `at` (which moves past it).
fn upsert_resource(
    manifest: &mut Vec<ManifestResource>,
    resource: ManifestResource,
    at: &mut usize,
) {
    let id = ResourceId::of(&resource);
    match manifest.iter_mut().find(|r| ResourceId::of(r) == id) {
        Some(found) => *found = resource,
        None => {
            let index = (*at).min(manifest.len());
            manifest.insert(index, resource);
            *at = index + 1;
        }
    }
}

/// The object at `path` under `value`.
fn at_mut<'a>(value: &'a mut Object, path: &[&str]) -> Option<&'a mut Object> {
    let mut current = value;
    for key in path {
        current = current.get_mut(*key)?.as_object_mut()?;
    }
    Some(current)
}

/// Whether the live workload `live` still reads a Secret of a hook `app`
/// no longer asks for (an environment variable from its token Secret, or
/// its certificate volume): it must be applied again, which removes them.
/// Judged on the object itself, so it holds even when the status that
/// recorded the last apply was lost to a concurrent update.
pub fn reads_disabled_hook(app: &Application, live: &Value) -> bool {
    let Some(object) = live.as_object() else {
        return false;
    };
    let Some(pod) = pod_spec_path(object).and_then(|path| {
        path.iter()
            .try_fold(object, |current, key| current.get(*key)?.as_object())
    }) else {
        return false;
    };
    let disabled: Vec<String> = Hook::ALL
        .into_iter()
        .filter(|hook| !hook.enabled(app))
        .flat_map(|hook| {
            [
                token_secret_name(&app.metadata.name, hook),
                certs_secret_name(&app.metadata.name, hook),
            ]
        })
        .collect();
    let named = |value: Option<&Value>| {
        value
            .and_then(Value::as_str)
            .is_some_and(|name| disabled.iter().any(|d| d == name))
    };
    let env_reads = pod
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("env").and_then(Value::as_array))
        .flatten()
        .any(|env| named(env.pointer("/valueFrom/secretKeyRef/name")));
    let volume_reads = pod
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|volume| named(volume.pointer("/secret/secretName")));
    env_reads || volume_reads
}

/// The Pod spec of `resource` (the first of [`POD_SPEC_PATHS`] with a
/// `containers` list) and its path.
fn pod_spec_path(resource: &Object) -> Option<&'static [&'static str]> {
    POD_SPEC_PATHS.into_iter().find(|path| {
        let mut current = resource;
        for key in *path {
            match current.get(*key).and_then(Value::as_object) {
                Some(next) => current = next,
                None => return false,
            }
        }
        current.get("containers").is_some_and(Value::is_array)
    })
}

/// Adds `additions` to the workload `resource`; false if it is none.
fn inject(resource: &mut Object, additions: &Additions, label: &str) -> Result<bool, MangleError> {
    let Some(path) = pod_spec_path(resource) else {
        return Ok(false);
    };
    let Some(pod) = at_mut(resource, path) else {
        return Ok(false);
    };
    let not_a_list = |field| MangleError::NotAList {
        resource: label.to_owned(),
        field,
    };
    if let Some(Value::Array(containers)) = pod.get_mut("containers") {
        for container in containers.iter_mut() {
            let container = container
                .as_object_mut()
                .ok_or_else(|| not_a_list("containers"))?;
            upsert_named(container, "env", &additions.env).ok_or_else(|| not_a_list("env"))?;
            upsert_named(container, "volumeMounts", &additions.mounts)
                .ok_or_else(|| not_a_list("volumeMounts"))?;
        }
    }
    upsert_named(pod, "volumes", &additions.volumes).ok_or_else(|| not_a_list("volumes"))?;
    Ok(true)
}

/// `object[key]`, a list of named objects, with `items` in it: replacing
/// the element of the same name, else appended. `None` if it is no list.
fn upsert_named(object: &mut Object, key: &str, items: &[Object]) -> Option<()> {
    if items.is_empty() {
        return Some(());
    }
    let list = match object
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(list) => list,
        // `env: null` is an empty list.
        value @ Value::Null => {
            *value = Value::Array(Vec::new());
            value.as_array_mut()?
        }
        _ => return None,
    };
    for item in items {
        let name = item.get("name");
        match list.iter_mut().find(|e| e.get("name") == name) {
            Some(existing) => *existing = Value::Object(item.clone()),
            None => list.push(Value::Object(item.clone())),
        }
    }
    Some(())
}

fn is_control(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.contains_key(MIN_LENGTH) || o.contains_key(MAX_LENGTH))
}

fn control(min: usize, max: usize) -> Value {
    json!({MIN_LENGTH: min, MAX_LENGTH: max})
}

/// The object `schema[key]`, made if missing.
fn child<'a>(schema: &'a mut Object, key: &str) -> &'a mut Object {
    let slot = schema
        .entry(key)
        .or_insert_with(|| Value::Object(Object::new()));
    if !slot.is_object() {
        *slot = Value::Object(Object::new());
    }
    match slot {
        Value::Object(object) => object,
        _ => unreachable!("made an object above"),
    }
}

/// The schema list `schema[key]` (elements, then the control dictionary),
/// made with `[control(0, 0)]` (any length) if missing.
fn schema_list<'a>(schema: &'a mut Object, key: &str) -> &'a mut Vec<Value> {
    let slot = schema
        .entry(key)
        .or_insert_with(|| Value::Array(vec![control(0, 0)]));
    if !slot.is_array() {
        *slot = Value::Array(vec![control(0, 0)]);
    }
    let list = match slot {
        Value::Array(list) => list,
        _ => unreachable!("made a list above"),
    };
    if !list.last().is_some_and(is_control) {
        let n = list.len();
        list.push(control(n, n));
    }
    list
}

/// Observes `items` in the schema list `schema[key]`, where `current` is
/// the mangled list of the manifest: the schema is positional, so an item
/// at a position the schema does not cover yet gets its default schema
/// there (positions before it an empty one), and the list's bounds grow by
/// what was added (a maximum of 0, unlimited, stays).
fn observe_named(schema: &mut Object, key: &str, items: &[Object], current: &[Value]) {
    if items.is_empty() {
        return;
    }
    let list = schema_list(schema, key);
    let mut added = 0u64;
    for item in items {
        let Some(index) = current
            .iter()
            .position(|e| e.get("name") == item.get("name"))
        else {
            continue;
        };
        while list.len() - 1 < index {
            list.insert(list.len() - 1, Value::Object(Object::new()));
            added += 1;
        }
        if list.len() - 1 == index {
            list.insert(index, Value::Object(observer_schema::default_schema(item)));
            added += 1;
        }
    }
    if let Some(Value::Object(bounds)) = list.last_mut() {
        for bound in [MIN_LENGTH, MAX_LENGTH] {
            let value = bounds.get(bound).and_then(Value::as_u64).unwrap_or(0);
            if bound == MIN_LENGTH || value > 0 {
                bounds.insert(bound.into(), (value + added).into());
            }
        }
    }
}

/// The list `object[key]`, empty if missing.
fn list_of<'a>(object: &'a Object, key: &str) -> &'a [Value] {
    object
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Adds the hook's fields to the custom schema entry of the workload
/// `resource` (already mangled).
fn inject_schema(schema: &mut Object, resource: &Object, additions: &Additions) {
    let Some(path) = pod_spec_path(resource) else {
        return;
    };
    let mut pod_spec = resource;
    for key in path {
        pod_spec = match pod_spec.get(*key).and_then(Value::as_object) {
            Some(next) => next,
            None => return,
        };
    }
    let mut pod = schema;
    for key in path {
        pod = child(pod, key);
    }
    observe_named(
        pod,
        "volumes",
        &additions.volumes,
        list_of(pod_spec, "volumes"),
    );
    let containers = schema_list(pod, "containers");
    for (index, live) in list_of(pod_spec, "containers").iter().enumerate() {
        let Some(live) = live.as_object() else {
            continue;
        };
        let elements = containers.len() - 1;
        if index >= elements {
            containers.insert(elements, Value::Object(Object::new()));
        }
        let Some(Value::Object(container)) = containers.get_mut(index) else {
            continue;
        };
        observe_named(container, "env", &additions.env, list_of(live, "env"));
        observe_named(
            container,
            "volumeMounts",
            &additions.mounts,
            list_of(live, "volumeMounts"),
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    use super::*;

    #[test]
    fn a_workload_reading_a_disabled_hook_is_found_on_the_live_object() {
        let app = |hooks: &[&str]| -> Application {
            serde_json::from_value(json!({
                "api": "kubernetes", "kind": "Application",
                "metadata": {"name": "web", "namespace": "testing"},
                "spec": {"manifest": [], "constraints": {"cluster": {}}, "hooks": hooks},
            }))
            .unwrap()
        };
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{
                "name": "c",
                "env": [{"name": "KRAKE_SHUTDOWN_TOKEN", "valueFrom": {"secretKeyRef": {
                    "name": "web-krake-shutdown-secret-token", "key": "krake_shutdown_token"}}}],
            }]}}},
        });
        assert!(!reads_disabled_hook(&app(&["shutdown"]), &live));
        assert!(reads_disabled_hook(&app(&[]), &live));
        assert!(reads_disabled_hook(&app(&["complete"]), &live));
        let certs = json!({
            "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}], "volumes": [
                {"name": "v", "secret": {"secretName": "web-krake-complete-secret-certs"}}]},
        });
        assert!(reads_disabled_hook(&app(&[]), &certs));
        assert!(!reads_disabled_hook(&app(&["complete"]), &certs));
        assert!(!reads_disabled_hook(
            &app(&[]),
            &json!({"kind": "ConfigMap"})
        ));
    }
    use crate::kubernetes::hooks::certs::HookCa;
    use crate::kubernetes::hooks::prepare_status;

    fn object(value: Value) -> Object {
        value.as_object().unwrap().clone()
    }

    fn deployment(namespace: Option<&str>) -> Object {
        let mut d = object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "a", "image": "nginx", "env": [{"name": "KEEP", "value": "1"}]},
                {"name": "b", "image": "nginx"},
            ]}}},
        }));
        if let Some(ns) = namespace {
            d["metadata"]["namespace"] = ns.into();
        }
        d
    }

    fn pod() -> Object {
        object(json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "other"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                     "initContainers": [{"name": "i", "image": "busybox"}]},
        }))
    }

    fn job() -> Object {
        object(json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}},
        }))
    }

    fn cronjob() -> Object {
        object(json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}},
        }))
    }

    fn service() -> Object {
        object(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}]},
        }))
    }

    fn app(hooks: &[&str], manifest: Vec<Object>, config: &HooksConfig) -> Application {
        let mut app: Application = serde_json::from_value(json!({
            "api": "kubernetes", "kind": "Application",
            "metadata": {"name": "app", "namespace": "testing"},
            "spec": {"manifest": manifest, "constraints": {"cluster": {}}, "hooks": hooks},
        }))
        .unwrap();
        if let Some(status) = prepare_status(config, &app).unwrap() {
            app.status = status;
        }
        app
    }

    fn mangled(config: &HooksConfig, app: &Application) -> (Vec<Object>, Vec<Object>) {
        let mut manifest = app.spec.manifest.clone();
        let mut custom = app.spec.observer_schema.clone();
        mangle(config, app, &mut manifest, &mut custom).unwrap();
        (manifest, custom)
    }

    /// The resource of `kind` called `name`.
    fn get<'a>(manifest: &'a [Object], kind: &str, name: &str) -> &'a Object {
        manifest
            .iter()
            .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
            .unwrap()
    }

    fn env_of(container: &Value) -> Vec<String> {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    }

    fn secret_ref(container: &Value, env: &str) -> Value {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == env)
            .unwrap()["valueFrom"]["secretKeyRef"]
            .clone()
    }

    fn decoded(secret: &Object, key: &str) -> String {
        let data = secret["data"][key].as_str().unwrap();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn env_goes_into_every_container_of_every_workload() {
        let config = HooksConfig::default();
        let app = app(
            &["complete"],
            vec![deployment(None), pod(), job(), cronjob(), service()],
            &config,
        );
        let (manifest, _) = mangled(&config, &app);
        let token_ref =
            json!({"name": "app-krake-complete-secret-token", "key": "krake_complete_token"});
        let url_ref =
            json!({"name": "app-krake-complete-secret-token", "key": "krake_complete_url"});
        // Deployment: both containers; the variable already there stays.
        let containers =
            &get(&manifest, "Deployment", "web")["spec"]["template"]["spec"]["containers"];
        assert_eq!(
            env_of(&containers[0]),
            ["KEEP", "KRAKE_COMPLETE_TOKEN", "KRAKE_COMPLETE_URL"]
        );
        assert_eq!(
            env_of(&containers[1]),
            ["KRAKE_COMPLETE_TOKEN", "KRAKE_COMPLETE_URL"]
        );
        assert_eq!(
            secret_ref(&containers[1], "KRAKE_COMPLETE_TOKEN"),
            token_ref
        );
        assert_eq!(secret_ref(&containers[1], "KRAKE_COMPLETE_URL"), url_ref);
        // Pod: its containers, not the init containers.
        let spec = &get(&manifest, "Pod", "p")["spec"];
        assert_eq!(
            env_of(&spec["containers"][0]),
            ["KRAKE_COMPLETE_TOKEN", "KRAKE_COMPLETE_URL"]
        );
        assert!(spec["initContainers"][0].get("env").is_none());
        // Job and CronJob.
        let job = &get(&manifest, "Job", "j")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(secret_ref(job, "KRAKE_COMPLETE_TOKEN"), token_ref);
        let cron = &get(&manifest, "CronJob", "cj")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            ["containers"][0];
        assert_eq!(secret_ref(cron, "KRAKE_COMPLETE_URL"), url_ref);
        // The Service is left alone; no volumes without TLS.
        assert_eq!(get(&manifest, "Service", "s"), &service());
        assert!(containers[0].get("volumes").is_none());
        // The Secrets come before the first workload, which reads them.
        let kinds: Vec<&str> = manifest
            .iter()
            .map(|r| r["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Secret",
                "Secret",
                "Deployment",
                "Pod",
                "Job",
                "CronJob",
                "Service"
            ]
        );
        assert!(containers[0].get("volumeMounts").is_none());
    }

    #[test]
    fn one_token_secret_per_namespace_of_the_workloads() {
        let config = HooksConfig::default();
        let app = app(
            &["complete", "shutdown"],
            vec![deployment(None), pod(), job(), service()],
            &config,
        );
        let (manifest, _) = mangled(&config, &app);
        let secrets: Vec<(String, Option<String>)> = manifest
            .iter()
            .filter(|r| r["kind"] == "Secret")
            .map(|r| {
                let id = ResourceId::of(r).unwrap();
                (id.name, id.namespace)
            })
            .collect();
        assert_eq!(
            secrets,
            [
                ("app-krake-complete-secret-token".to_owned(), None),
                (
                    "app-krake-complete-secret-token".to_owned(),
                    Some("other".to_owned())
                ),
                ("app-krake-shutdown-secret-token".to_owned(), None),
                (
                    "app-krake-shutdown-secret-token".to_owned(),
                    Some("other".to_owned())
                ),
            ]
        );
        let complete = manifest
            .iter()
            .find(|r| r["metadata"]["name"] == "app-krake-complete-secret-token")
            .unwrap();
        assert_eq!(complete["type"], "Opaque");
        assert_eq!(
            decoded(complete, "krake_complete_token"),
            app.status.complete_token.clone().unwrap()
        );
        assert_eq!(
            decoded(complete, "krake_complete_url"),
            "http://localhost:8080/kubernetes/namespaces/testing/applications/app/complete"
        );
        let shutdown = manifest
            .iter()
            .find(|r| r["metadata"]["name"] == "app-krake-shutdown-secret-token")
            .unwrap();
        assert_eq!(
            decoded(shutdown, "krake_shutdown_token"),
            app.status.shutdown_token.clone().unwrap()
        );
        // Both hooks' variables in the containers.
        let container =
            &get(&manifest, "Deployment", "web")["spec"]["template"]["spec"]["containers"][1];
        assert_eq!(
            env_of(container),
            [
                "KRAKE_COMPLETE_TOKEN",
                "KRAKE_COMPLETE_URL",
                "KRAKE_SHUTDOWN_TOKEN",
                "KRAKE_SHUTDOWN_URL"
            ]
        );
    }

    #[test]
    fn configured_names_and_no_hooks() {
        let mut config = HooksConfig::default();
        config.complete.env_token = "MY_TOKEN".into();
        config.complete.env_url = "MY_URL".into();
        let app = app(&["complete"], vec![job()], &config);
        let (manifest, _) = mangled(&config, &app);
        let container = &get(&manifest, "Job", "j")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(secret_ref(container, "MY_TOKEN")["key"], "my_token");
        assert!(manifest[0]["data"].get("my_url").is_some());

        let plain = super::tests::app(&[], vec![job()], &config);
        let (manifest, _) = mangled(&config, &plain);
        assert_eq!(manifest, vec![job()]);
    }

    #[test]
    fn mangling_twice_gives_the_same_manifest() {
        let config = tls_config();
        let app = app(
            &["complete", "shutdown"],
            vec![deployment(Some("testing")), pod(), cronjob()],
            &config,
        );
        let (once, custom_once) = mangled(&config, &app);
        let mut twice = once.clone();
        let mut custom_twice = custom_once.clone();
        mangle(&config, &app, &mut twice, &mut custom_twice).unwrap();
        assert_eq!(once, twice);
        assert_eq!(custom_once, custom_twice);
    }

    #[test]
    fn a_missing_token_is_an_error_not_a_silent_manifest() {
        let config = HooksConfig::default();
        let mut app = app(&["complete"], vec![job()], &config);
        app.status.complete_token = None;
        let mut manifest = app.spec.manifest.clone();
        assert_eq!(
            mangle(&config, &app, &mut manifest, &mut []),
            Err(MangleError::MissingToken("complete"))
        );
        let mut broken = job();
        broken["spec"]["template"]["spec"]["containers"][0]["env"] = json!("x");
        let app = super::tests::app(&["complete"], vec![broken], &config);
        let mut manifest = app.spec.manifest.clone();
        assert!(matches!(
            mangle(&config, &app, &mut manifest, &mut []),
            Err(MangleError::NotAList { field: "env", .. })
        ));
    }

    #[test]
    fn a_hook_no_longer_asked_for_leaves_its_secrets_to_delete() {
        let config = HooksConfig::default();
        let mut app = app(
            &["complete", "shutdown"],
            vec![deployment(None), pod()],
            &config,
        );
        assert!(disabled_secrets(&app, &app.spec.manifest).is_empty());
        app.spec.hooks = vec!["shutdown".into()];
        let names: Vec<String> = disabled_secrets(&app, &app.spec.manifest)
            .iter()
            .map(|r| ResourceId::of(r).unwrap().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "Secret/app-krake-complete-secret-token",
                "Secret/app-krake-complete-secret-certs",
                "Secret/other/app-krake-complete-secret-token",
                "Secret/other/app-krake-complete-secret-certs",
            ]
        );
        let mut status = app.status.clone();
        crate::kubernetes::hooks::forget_disabled(&app, &mut status);
        assert!(status.complete_token.is_none());
        assert!(status.shutdown_token.is_some());
        app.status = status;
        assert!(disabled_secrets(&app, &app.spec.manifest).is_empty());
    }

    fn tls_config() -> HooksConfig {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "hooks");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca = Arc::new(HookCa::from_pem(&cert.pem(), &key.serialize_pem(), None).unwrap());
        let mut config = HooksConfig::default();
        config.complete.ca = Some(ca.clone());
        config.shutdown.ca = Some(ca);
        config
    }

    #[test]
    fn tls_mounts_the_certificates_secret() {
        let config = tls_config();
        let app = app(&["complete"], vec![deployment(None), job()], &config);
        let (manifest, _) = mangled(&config, &app);
        let spec = &get(&manifest, "Deployment", "web")["spec"]["template"]["spec"];
        assert_eq!(
            spec["volumes"],
            json!([{"name": "app-krake-complete-volume",
                    "secret": {"secretName": "app-krake-complete-secret-certs"}}])
        );
        for container in spec["containers"].as_array().unwrap() {
            assert_eq!(
                container["volumeMounts"],
                json!([{"name": "app-krake-complete-volume",
                        "mountPath": "/etc/krake_complete_certs/"}])
            );
        }
        let certs = manifest
            .iter()
            .find(|r| r["metadata"]["name"] == "app-krake-complete-secret-certs")
            .unwrap();
        assert_eq!(
            decoded(certs, "cert.pem"),
            app.status.complete_cert.clone().unwrap()
        );
        assert_eq!(
            decoded(certs, "key.pem"),
            app.status.complete_key.clone().unwrap()
        );
        assert!(decoded(certs, "ca-bundle.pem").contains("BEGIN CERTIFICATE"));
        assert_eq!(
            manifest.iter().filter(|r| r["kind"] == "Secret").count(),
            2,
            "one namespace: a token and a certificates Secret"
        );
    }

    /// A workload with a custom observer schema gets the added fields
    /// observed; one without keeps the default (everything).
    #[test]
    fn custom_schemas_observe_the_added_fields() {
        let config = tls_config();
        let mut app = app(&["complete"], vec![deployment(None), job()], &config);
        app.spec.observer_schema = vec![object(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": null, "template": {"spec": {"containers": [
                {"name": null, "env": [{"name": null, "value": null},
                                       {MIN_LENGTH: 1, MAX_LENGTH: 1}]},
                {MIN_LENGTH: 1, MAX_LENGTH: 2},
            ]}}},
        }))];
        let (manifest, custom) = mangled(&config, &app);
        assert_eq!(custom.len(), 1);
        let pod = &custom[0]["spec"]["template"]["spec"];
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 3, "two containers and the bounds");
        assert_eq!(containers[2], json!({MIN_LENGTH: 1, MAX_LENGTH: 2}));
        let env = containers[0]["env"].as_array().unwrap();
        assert_eq!(env.len(), 4);
        assert_eq!(
            env[1],
            json!({"name": null,
                   "valueFrom": {"secretKeyRef": {"name": null, "key": null}}})
        );
        assert_eq!(env[3], json!({MIN_LENGTH: 3, MAX_LENGTH: 3}));
        assert_eq!(
            containers[1]["env"].as_array().unwrap().last().unwrap(),
            &json!({MIN_LENGTH: 2, MAX_LENGTH: 0}),
            "a list not observed before: any length beyond the hook's"
        );
        assert_eq!(containers[1]["volumeMounts"].as_array().unwrap().len(), 2);
        assert_eq!(pod["volumes"].as_array().unwrap().len(), 2);
        // The schemas of the whole manifest: the custom one for the
        // Deployment, defaults (everything) for the Job and the Secrets.
        let schemas = observer_schema::schemas_for(&manifest, &custom);
        assert_eq!(schemas.len(), manifest.len());
        let job = manifest.iter().position(|r| r["kind"] == "Job").unwrap();
        assert_eq!(
            schemas[job],
            observer_schema::default_schema(&manifest[job])
        );
        assert!(
            schemas[job]["spec"]["template"]["spec"]["containers"][0]["env"]
                .as_array()
                .is_some_and(|env| env.len() == 3)
        );
    }
}
