//! Validation rules of every kind, with Krake's messages.
//!
//! The first tests replay the 422 responses captured from Krake (see
//! `krake-testkit/wire/exchanges/`, [`krake_testkit::wire::exchange`]) and
//! compare the exact `detail` text; the rest cover each rule with its field
//! path and message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use krake_data::registry::{self, KindInfo, ParseMode};
use krake_data::validation::ValidationErrors;
use serde_json::{Value, json};

fn kind(api: &str, plural: &str) -> &'static KindInfo {
    registry::by_plural(api, plural).unwrap()
}

fn create(api: &str, plural: &str, body: Value) -> Result<Value, ValidationErrors> {
    kind(api, plural).parse(body, ParseMode::Create)
}

fn create_err(api: &str, plural: &str, body: Value) -> ValidationErrors {
    match create(api, plural, body) {
        Ok(value) => panic!("expected a validation error, got {value}"),
        Err(errors) => errors,
    }
}

fn manifest() -> Value {
    json!([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}])
}

fn app(spec: Value) -> Value {
    json!({"metadata": {"name": "app"}, "spec": spec})
}

fn kubeconfig() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "ctx",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
    })
}

// --- The captured 422 responses, byte for byte ---

#[test]
fn krake_422_put_without_server_fields() {
    let body = json!({"metadata":{"name":"echo-demo","labels":{"tier":"web"}},"spec":{"manifest":[{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"echo-demo"},"spec":{"replicas":2}}],"constraints":{"cluster":{}}}});
    let errors = kind("kubernetes", "applications")
        .parse(body, ParseMode::Full)
        .unwrap_err();
    assert_eq!(
        errors.to_python_repr(),
        "{'metadata': {'uid': ['Missing data for required field.'], 'created': ['Missing data for \
         required field.'], 'modified': ['Missing data for required field.']}, 'status': ['Missing \
         data for required field.']}"
    );
}

#[test]
fn krake_422_bad_name_and_no_manifest() {
    let body = json!({"metadata":{"name":"bad name!"},"spec":{"manifest":[],"constraints":{"cluster":{}}}});
    assert_eq!(
        create_err("kubernetes", "applications", body).to_python_repr(),
        "{'metadata': {'name': ['Invalid character in resource name.']}, 'spec': {'_schema': ['The \
         application should be defined by a manifest file, a TOSCA template or a CSAR file.']}}"
    );
}

#[test]
fn krake_422_manifest_resource_without_fields() {
    let body = json!({"metadata":{"name":"x"},"spec":{"manifest":[{"kind":"Deployment"}],"constraints":{"cluster":{}}}});
    assert_eq!(
        create_err("kubernetes", "applications", body).to_python_repr(),
        "{'spec': {'manifest': [\"Field 'metadata.name' not found in resource at index 0\", \
         \"Field 'apiVersion' not found in resource at index 0\", \"Field 'metadata' not found in \
         resource at index 0\"]}}"
    );
}

#[test]
fn krake_422_unknown_keys_are_dropped_not_reported() {
    let body = json!({"metadata":{"name":"x"},"spec":{"manifest":[],"constraints":{"cluster":{}}},"bogus":1});
    assert_eq!(
        create_err("kubernetes", "applications", body).to_python_repr(),
        "{'spec': {'_schema': ['The application should be defined by a manifest file, a TOSCA \
         template or a CSAR file.']}}"
    );
    let ok = json!({"metadata":{"name":"unk"},"spec":{"manifest":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"}}],"constraints":{"cluster":{}},"whatever":true},"bogus":1});
    let value = create("kubernetes", "applications", ok).unwrap();
    assert!(value.get("bogus").is_none());
    assert!(value["spec"].get("whatever").is_none());
}

#[test]
fn krake_422_kubeconfig_and_missing_cluster_definition() {
    let body = json!({"metadata":{"name":"c2"},"spec":{"kubeconfig":{"foo":1},"constraints":{"cloud":{}}}});
    assert_eq!(
        create_err("kubernetes", "clusters", body).to_python_repr(),
        "{'spec': {'kubeconfig': ['Invalid kube-config file. Expected key current-context in \
         kube-config']}}"
    );
    let body = json!({"metadata":{"name":"c3"},"spec":{"constraints":{"cloud":{}}}});
    assert_eq!(
        create_err("kubernetes", "clusters", body).to_python_repr(),
        "{'spec': {'_schema': ['The cluster should be defined by a kubeconfig file or a TOSCA \
         template.']}}"
    );
}

#[test]
fn create_fills_krakes_defaults_like_the_captured_response() {
    let body = json!({"metadata":{"name":"c1"},"spec":{"kubeconfig": kubeconfig(),"constraints":{"cloud":{}}}});
    let value = create("kubernetes", "clusters", body).unwrap();
    assert_eq!(
        value["spec"],
        json!({"kubeconfig": kubeconfig(), "tosca": {}, "custom_resources": [],
            "constraints": {"cloud": {"labels": null, "metrics": null}}, "metrics": [],
            "inherit_metrics": false, "backoff": 1, "backoff_delay": 1, "backoff_limit": -1,
            "auto_generated": false})
    );
    assert_eq!(
        value["metadata"],
        json!({"name": "c1", "namespace": null, "labels": {}, "inherit_labels": false,
            "finalizers": [], "uid": null, "created": null, "modified": null, "deleted": null,
            "owners": []})
    );
}

// --- Rules, each with its path and message ---

#[test]
fn create_drops_server_fields_and_status() {
    let body = json!({
        "metadata": {"name": "app", "uid": "forged", "created": "2020-01-01T00:00:00+00:00",
            "deleted": "2020-01-01T00:00:00+00:00", "resource_version": "7"},
        "spec": {"manifest": manifest(), "constraints": {"cluster": {}}},
        "status": {"state": "RUNNING"},
    });
    let value = create("kubernetes", "applications", body).unwrap();
    assert_eq!(value["metadata"]["uid"], Value::Null);
    assert_eq!(value["metadata"]["deleted"], Value::Null);
    assert!(value["metadata"].get("resource_version").is_none());
    assert_eq!(value["status"]["state"], "PENDING");
}

#[test]
fn required_fields_are_reported_with_their_path() {
    let errors = create_err(
        "kubernetes",
        "applications",
        json!({"metadata": {"name": "a"}, "spec": {"manifest": []}}),
    );
    assert_eq!(
        errors.messages_at("spec.constraints"),
        vec!["Missing data for required field."]
    );
    let errors = create_err("kubernetes", "applications", json!({}));
    assert_eq!(
        errors.messages_at("metadata"),
        vec!["Missing data for required field."]
    );
    let errors = create_err(
        "core",
        "globalmetrics",
        json!({"metadata": {"name": "m"}, "spec": {"min": 0, "max": 1}}),
    );
    assert_eq!(
        errors.messages_at("spec.provider"),
        vec!["Missing data for required field."]
    );
}

/// Krake 1.0.1 as published on PyPI (what `pip install krake==1.0.1` gives,
/// and what scripts/compat runs) has `MetricSpec {min, max, provider}`
/// without `allowed_values`: its client and krakectl never send the field,
/// so it must be optional (stored as `[]`) or they cannot create metrics.
#[test]
fn metric_allowed_values_is_optional() {
    for plural in ["globalmetrics", "metrics"] {
        let value = create(
            "core",
            plural,
            json!({"metadata": {"name": "m"}, "spec": {"min": 0, "max": 1, "provider": {"name": "p", "metric": "m"}}}),
        )
        .unwrap();
        assert_eq!(value["spec"]["allowed_values"], json!([]), "{plural}");
    }
}

#[test]
fn type_errors_use_marshmallow_words() {
    let errors = create_err(
        "kubernetes",
        "applications",
        app(json!({"manifest": manifest(), "constraints": {"cluster": {}}, "backoff": "x"})),
    );
    assert_eq!(
        errors.messages_at("spec.backoff"),
        vec!["Not a valid integer."]
    );
    let errors = create_err(
        "core",
        "roles",
        json!({"metadata": {"name": "r"}, "rules": [{"api": "", "resources": [], "namespaces": [], "verbs": ["fly"]}]}),
    );
    assert_eq!(
        errors.messages_at("rules.0.verbs.0"),
        vec!["Must be one of: create, list, list_all, get, update, delete."]
    );
    let errors = create_err(
        "kubernetes",
        "applications",
        json!({"metadata": {"name": 5}, "spec": {}}),
    );
    assert_eq!(
        errors.messages_at("metadata.name"),
        vec!["Not a valid string."]
    );
}

#[test]
fn api_and_kind_must_match_when_given() {
    let errors = create_err(
        "kubernetes",
        "applications",
        json!({"api": "core", "kind": "Role", "metadata": {"name": "a"}, "spec": {"manifest": manifest(), "constraints": {"cluster": {}}}}),
    );
    assert_eq!(
        errors.messages_at("api"),
        vec!["Must be equal to kubernetes."]
    );
    assert_eq!(
        errors.messages_at("kind"),
        vec!["Must be equal to Application."]
    );
}

#[test]
fn namespace_and_label_rules() {
    let body = json!({"metadata": {"name": "a", "namespace": "-ns", "labels": {"$$": "ok", "good": "-1"}}, "spec": {"manifest": manifest(), "constraints": {"cluster": {}}}});
    let errors = create_err("kubernetes", "applications", body);
    assert_eq!(
        errors.messages_at("metadata.namespace"),
        vec!["Invalid character in resource namespace."]
    );
    let repr = errors.to_python_repr();
    assert!(
        repr.contains("'labels': [{'$$': \"Label key '$$' does not match the regex"),
        "{repr}"
    );
    assert!(
        repr.contains("{'-1': \"Label value '-1' does not match the regex"),
        "{repr}"
    );
}

#[test]
fn application_rules() {
    // A TOSCA template or CSAR alone is enough.
    create(
        "kubernetes",
        "applications",
        app(json!({"manifest": [], "tosca": "http://x/t.yaml", "constraints": {"cluster": {}}})),
    )
    .unwrap();
    create(
        "kubernetes",
        "applications",
        app(json!({"manifest": [], "csar": "http://x/a.csar", "constraints": {"cluster": {}}})),
    )
    .unwrap();
    let tosca = json!({"tosca_definitions_version": "tosca_simple_yaml_1_0", "topology_template": {"node_templates": {}}});
    create(
        "kubernetes",
        "applications",
        app(json!({"manifest": [], "tosca": tosca, "constraints": {"cluster": {}}})),
    )
    .unwrap();

    let cases = [
        (
            json!({"manifest": [], "tosca": "http://x/t.json", "constraints": {"cluster": {}}}),
            "spec.tosca",
            "Invalid TOSCA template URL.",
        ),
        (
            json!({"manifest": [], "csar": "http://x/a.tar", "constraints": {"cluster": {}}}),
            "spec.csar",
            "Invalid CSAR archive URL.",
        ),
        (
            json!({"manifest": [], "tosca": {"node_templates": {}}, "constraints": {"cluster": {}}}),
            "spec.tosca",
            "Invalid TOSCA template content: tosca_definitions_version is required.",
        ),
        (
            json!({"manifest": manifest(), "hooks": ["complete", "reboot"], "constraints": {"cluster": {}}}),
            "spec.hooks",
            "Unknown hook 'reboot'. Must be one of: complete, shutdown.",
        ),
        (
            json!({"manifest": manifest(), "shutdown_failure_strategy": "panic", "constraints": {"cluster": {}}}),
            "spec.shutdown_failure_strategy",
            "Must be one of: give_up, delete.",
        ),
        (
            json!({"manifest": manifest(), "observer_schema": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "other"}}], "constraints": {"cluster": {}}}),
            "spec.observer_schema",
            "Observed resource must be in manifest",
        ),
        (
            json!({"manifest": manifest(), "observer_schema": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": 1}}], "constraints": {"cluster": {}}}),
            "spec.observer_schema",
            "Value of 'a' is not 'None'",
        ),
    ];
    for (spec, field, message) in cases {
        let errors = create_err("kubernetes", "applications", app(spec.clone()));
        assert_eq!(
            errors.messages_at(field),
            vec![message],
            "spec {spec}: {errors}"
        );
    }
}

#[test]
fn constraint_errors_point_at_the_constraint() {
    let spec = json!({"manifest": manifest(), "constraints": {"cluster": {"labels": ["location is DE", "location in ("], "metrics": ["load > 0.5"]}}});
    let errors = create_err("kubernetes", "applications", app(spec));
    let messages = errors.messages_at("spec.constraints.cluster.labels.1");
    assert_eq!(messages.len(), 1, "{errors}");
    assert!(
        messages[0].starts_with("Invalid label constraint"),
        "{}",
        messages[0]
    );

    let spec = json!({"manifest": manifest(), "constraints": {"cluster": {"metrics": ["load is greater than 5"]}}});
    let errors = create_err("kubernetes", "applications", app(spec));
    let messages = errors.messages_at("spec.constraints.cluster.metrics.0");
    assert!(
        messages[0].starts_with("Invalid metric constraint"),
        "{errors}"
    );
}

#[test]
fn cluster_rules() {
    let mut two_contexts = kubeconfig();
    two_contexts["contexts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "x", "context": {"cluster": "c"}}));
    let errors = create_err(
        "kubernetes",
        "clusters",
        json!({"metadata": {"name": "c"}, "spec": {"kubeconfig": two_contexts, "constraints": {"cloud": {}}}}),
    );
    assert_eq!(
        errors.messages_at("spec.kubeconfig"),
        vec!["Only one context is allowed"]
    );

    let tosca = json!({"tosca_definitions_version": "tosca_simple_yaml_1_0", "topology_template": {"outputs": {}}});
    let errors = create_err(
        "kubernetes",
        "clusters",
        json!({"metadata": {"name": "c"}, "spec": {"tosca": tosca, "constraints": {"cloud": {}}}}),
    );
    assert_eq!(
        errors.messages_at("spec.tosca"),
        vec!["Invalid TOSCA template content: topology_template.outputs.kubeconfig is required."]
    );
    let tosca = json!({"tosca_definitions_version": "tosca_simple_yaml_1_0", "topology_template": {"outputs": {"kubeconfig": {"value": "x"}}}});
    create(
        "kubernetes",
        "clusters",
        json!({"metadata": {"name": "c"}, "spec": {"tosca": tosca, "constraints": {"cloud": {}}}}),
    )
    .unwrap();
}

fn cloud_spec(provider_namespaced: bool, metric_namespaced: bool) -> Value {
    json!({"type": "openstack", "openstack": {
        "url": "http://127.0.0.1:5000/v3",
        "auth": {"type": "password", "password": {"user": {"username": "u", "password": "p"}, "project": {"name": "p"}}},
        "metrics": [{"name": "heat", "weight": 1.0, "namespaced": metric_namespaced}],
        "infrastructure_provider": {"name": "im", "namespaced": provider_namespaced},
    }})
}

#[test]
fn global_cloud_may_not_reference_namespaced_things() {
    let ok = create(
        "infrastructure",
        "globalclouds",
        json!({"metadata": {"name": "g"}, "spec": cloud_spec(false, false)}),
    )
    .unwrap();
    // Defaults of the password method are filled in as Krake does.
    assert_eq!(ok["spec"]["openstack"]["auth"]["password"]["version"], "3");
    assert_eq!(
        ok["spec"]["openstack"]["auth"]["password"]["user"]["domain_name"],
        "Default"
    );
    assert_eq!(
        ok["status"],
        json!({"state": "ONLINE", "metrics_reasons": {}})
    );

    let errors = create_err(
        "infrastructure",
        "globalclouds",
        json!({"metadata": {"name": "g"}, "spec": cloud_spec(true, true)}),
    );
    assert_eq!(
        errors.messages_at("spec._schema"),
        vec![
            "A GlobalCloud cannot reference a namespaced infrastructure provider.",
            "A GlobalCloud cannot reference a namespaced metric.",
        ]
    );
    // The namespaced Cloud may.
    create(
        "infrastructure",
        "clouds",
        json!({"metadata": {"name": "c"}, "spec": cloud_spec(true, true)}),
    )
    .unwrap();
}

#[test]
fn tagged_containers() {
    let errors = create_err(
        "core",
        "globalmetricsproviders",
        json!({"metadata": {"name": "p"}, "spec": {"type": "graphite", "graphite": {}}}),
    );
    assert_eq!(
        errors.messages_at("spec.type"),
        vec!["Unknown type \"graphite\". Must be one of: prometheus, influx, kafka, static."]
    );
    let errors = create_err(
        "core",
        "globalmetricsproviders",
        json!({"metadata": {"name": "p"}, "spec": {"type": "prometheus"}}),
    );
    assert_eq!(
        errors.messages_at("spec.prometheus"),
        vec!["Missing data for required field."]
    );
    let errors = create_err(
        "core",
        "globalmetricsproviders",
        json!({"metadata": {"name": "p"}, "spec": {"type": "kafka", "kafka": {"table": "t", "url": "http://k"}}}),
    );
    assert_eq!(
        errors.messages_at("spec.kafka.comparison_column"),
        vec!["Missing data for required field."]
    );
    let errors = create_err(
        "core",
        "globalmetricsproviders",
        json!({"metadata": {"name": "p"}, "spec": {"prometheus": {"url": "http://p"}}}),
    );
    assert_eq!(
        errors.messages_at("spec.type"),
        vec!["Missing data for required field."]
    );
    let errors = create_err(
        "core",
        "metricsproviders",
        json!({"metadata": {"name": "p"}, "spec": {"type": "prometheus", "prometheus": {"url": "localhost:9090"}}}),
    );
    assert_eq!(
        errors.messages_at("spec.prometheus.url"),
        vec!["Not a valid URL."]
    );
    // Nested tagged containers keep their path too.
    let mut spec = cloud_spec(false, false);
    spec["openstack"]["auth"] = json!({"type": "password", "password": {"user": {"username": "u"}, "project": {"name": "p"}}});
    let errors = create_err(
        "infrastructure",
        "clouds",
        json!({"metadata": {"name": "c"}, "spec": spec}),
    );
    assert_eq!(
        errors.messages_at("spec.openstack.auth.password.user.password"),
        vec!["Missing data for required field."]
    );
}

#[test]
fn infrastructure_provider_needs_credentials() {
    let errors = create_err(
        "infrastructure",
        "globalinfrastructureproviders",
        json!({"metadata": {"name": "im"}, "spec": {"type": "im", "im": {"url": "http://im", "username": "u"}}}),
    );
    assert_eq!(
        errors.messages_at("spec.im._schema"),
        vec!["Either a token or a username and a password are required."]
    );
    create("infrastructure", "infrastructureproviders", json!({"metadata": {"name": "im"}, "spec": {"type": "im", "im": {"url": "http://im", "token": "t"}}})).unwrap();
}

#[test]
fn metric_range_must_be_ordered() {
    let body = |min: f64, max: f64| json!({"metadata": {"name": "m"}, "spec": {"allowed_values": [], "min": min, "max": max, "provider": {"name": "p", "metric": "m"}}});
    let errors = create_err("core", "metrics", body(1.0, 1.0));
    assert_eq!(
        errors.messages_at("spec._schema"),
        vec!["max must be greater than min."]
    );
    // An integer where a float is expected is accepted and written as a float.
    let value = create("core", "metrics", json!({"metadata": {"name": "m"}, "spec": {"allowed_values": [1], "min": 0, "max": 10, "provider": {"name": "p", "metric": "m"}}})).unwrap();
    assert_eq!(
        serde_json::to_string(&value["spec"]["max"]).unwrap(),
        "10.0"
    );
}

#[test]
fn magnum_rules_and_bodies() {
    let errors = create_err(
        "openstack",
        "magnumclusters",
        json!({"metadata": {"name": "m"}, "spec": {"master_count": 0}}),
    );
    assert_eq!(
        errors.messages_at("spec.master_count"),
        vec!["Must be greater than or equal to 1."]
    );
    let value = create(
        "openstack",
        "magnumclusters",
        json!({"metadata": {"name": "m"}, "spec": {}}),
    )
    .unwrap();
    assert_eq!(value["spec"]["constraints"], Value::Null);
    assert_eq!(value["status"]["state"], "PENDING");

    for body in registry::BODIES {
        let errors = (body.parse)(json!({"api": "nope"})).unwrap_err();
        assert!(!errors.is_empty(), "{body:?} accepted a wrong body");
    }
    let binding = (krake_data::kinds::kubernetes::CLUSTER_BINDING.parse)(json!({"cluster": {"api": "kubernetes", "kind": "Cluster", "namespace": "ns", "name": "c"}})).unwrap();
    assert_eq!(binding["kind"], "ClusterBinding");
    let errors =
        (krake_data::kinds::kubernetes::COMPLETE.parse)(json!({"kind": "Shutdown", "token": "t"}))
            .unwrap_err();
    assert_eq!(
        errors.messages_at("kind"),
        vec!["Must be equal to Complete."]
    );
}

#[test]
fn immutable_fields_are_detected() {
    let info = kind("openstack", "magnumclusters");
    let old = json!({"metadata": {"name": "m", "namespace": "a"}, "spec": {"master_count": 1}, "status": {"template": "t1"}});
    let mut new = old.clone();
    assert!(info.changed_immutable_fields(&old, &new).is_empty());
    new["spec"]["master_count"] = json!(3);
    new["status"]["template"] = json!("t2");
    new["metadata"]["namespace"] = json!("b");
    assert_eq!(
        info.changed_immutable_fields(&old, &new),
        vec!["metadata.namespace", "spec.master_count", "status.template"]
    );
}

#[test]
fn non_object_bodies_are_rejected() {
    for body in [json!([]), json!("x"), json!(null), json!(1)] {
        let errors = create_err("core", "roles", body.clone());
        assert!(!errors.is_empty(), "{body} accepted");
    }
}

#[test]
fn custom_resource_names_are_checked_and_matched() {
    let spec = json!({"manifest": manifest(), "constraints": {"cluster": {"custom_resources": ["crontabs.stable.example.com", "crontab"]}}});
    let errors = create_err("kubernetes", "applications", app(spec));
    let messages = errors.messages_at("spec.constraints.cluster.custom_resources.1");
    assert_eq!(messages.len(), 1, "{errors}");
    assert!(
        messages[0].starts_with("Invalid custom resource 'crontab'"),
        "{}",
        messages[0]
    );

    let body = json!({"metadata": {"name": "c"}, "spec": {"kubeconfig": kubeconfig(), "custom_resources": ["Bad"], "constraints": {"cloud": {}}}});
    let errors = create_err("kubernetes", "clusters", body);
    assert_eq!(
        errors.messages_at("spec.custom_resources.0").len(),
        1,
        "{errors}"
    );

    // Evaluation of all three constraint kinds together.
    let constraints: krake_data::kinds::kubernetes::ClusterConstraints =
        serde_json::from_value(json!({
            "labels": ["location in (DE, AT)"], "metrics": ["load < 0.5"],
            "custom_resources": ["crontabs.stable.example.com"],
        }))
        .unwrap();
    let mut labels = krake_data::metadata::Labels::new();
    labels.insert("location".into(), "AT".into());
    let crds = vec!["crontabs.stable.example.com".to_owned()];
    let load = |value: f64| move |name: &str| (name == "load").then_some(value);
    assert!(constraints.matches(&labels, load(0.2), &crds));
    assert!(!constraints.matches(&labels, load(0.7), &crds));
    assert!(!constraints.matches(&labels, |_| None, &crds));
    assert!(!constraints.matches(&labels, load(0.2), &[]));
    assert!(!constraints.matches(&krake_data::metadata::Labels::new(), load(0.2), &crds));
    // No constraints match everything.
    let none = krake_data::kinds::kubernetes::ClusterConstraints::default();
    assert!(none.matches(&krake_data::metadata::Labels::new(), |_| None, &[]));
}
