//! The observer schema: default and custom schemas, the desired state
//! (last applied manifest), observation and drift.

use krake_controller::kubernetes::observer_schema::{
    CURRENT_LENGTH, Drift, MAX_LENGTH, MIN_LENGTH, ResourceId, default_schema, drift,
    fill_from_live, find, last_applied, observe, position, schemas_for,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

type Object = Map<String, Value>;

fn obj(value: Value) -> Object {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn objs(value: Value) -> Vec<Object> {
    match value {
        Value::Array(items) => items.into_iter().map(obj).collect(),
        other => panic!("not a list: {other}"),
    }
}

fn deployment() -> Object {
    obj(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "echo", "namespace": "prod", "labels": {"app.kubernetes.io/name": "echo"}},
        "spec": {
            "replicas": 3,
            "template": {"spec": {"containers": [{"name": "echo", "image": "echo:1", "args": ["-v"]}]}}
        }
    }))
}

/// `resource` as the cluster answers it: the manifest plus server fields.
fn as_live(resource: &Object) -> Value {
    let mut live = Value::Object(resource.clone());
    live["metadata"]["uid"] = json!("0b1c");
    live["metadata"]["resourceVersion"] = json!("42");
    live["spec"]["revisionHistoryLimit"] = json!(10);
    live["status"] = json!({"readyReplicas": 3});
    live
}

/// The drift of `live` against `desired` through `schema`.
fn drift_of(schema: &Object, desired: &Object, live: &Value) -> Option<String> {
    drift(schema, desired, &observe(schema, live)).map(|d| d.to_string())
}

#[test]
fn the_default_schema_observes_every_field_of_the_manifest() {
    assert_eq!(
        Value::Object(default_schema(&deployment())),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "echo", "namespace": "prod", "labels": {"app.kubernetes.io/name": null}},
            "spec": {
                "replicas": null,
                "template": {"spec": {"containers": [
                    {"name": null, "image": null, "args": [null, {MIN_LENGTH: 1, MAX_LENGTH: 1}]},
                    {MIN_LENGTH: 1, MAX_LENGTH: 1}
                ]}}
            }
        })
    );
    let without_namespace = obj(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c"}, "data": {"k": "v"}}));
    assert_eq!(
        Value::Object(default_schema(&without_namespace)),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": null}})
    );
}

#[test]
fn a_load_balancer_service_also_observes_its_ingress_as_a_list_of_any_length() {
    let service = obj(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
    );
    let schema = default_schema(&service);
    assert_eq!(
        schema["status"],
        json!({"loadBalancer": {"ingress": [{MIN_LENGTH: 0, MAX_LENGTH: 0}]}})
    );
    let node_port = obj(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort"}}),
    );
    assert!(!default_schema(&node_port).contains_key("status"));

    // Created: no address yet. Desired state completed from the answer.
    let mut desired = service.clone();
    let mut live = Value::Object(service.clone());
    live["spec"]["clusterIP"] = json!("10.0.0.1");
    live["status"] = json!({"loadBalancer": {}});
    fill_from_live(&mut desired, &schema, &live);
    assert_eq!(drift_of(&schema, &desired, &live), None);
    // The address arrives, then a second one: not drift.
    live["status"]["loadBalancer"]["ingress"] = json!([{"ip": "192.0.2.1"}]);
    assert_eq!(drift_of(&schema, &desired, &live), None);
    live["status"]["loadBalancer"]["ingress"] = json!([{"ip": "192.0.2.1"}, {"ip": "192.0.2.2"}]);
    assert_eq!(drift_of(&schema, &desired, &live), None);
    assert_eq!(
        observe(&schema, &live)["status"],
        json!({"loadBalancer": {"ingress": [{CURRENT_LENGTH: 2}]}})
    );
}

#[test]
fn resource_ids_identify_display_and_match_with_the_default_namespace() {
    let id = ResourceId::of(&deployment()).expect("an id");
    assert_eq!(
        id,
        ResourceId {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("prod".into()),
            name: "echo".into(),
        }
    );
    assert_eq!(id.to_string(), "Deployment/prod/echo");
    let bare = ResourceId::of(&obj(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": ""}}),
    ))
    .expect("an id");
    assert_eq!(bare.namespace, None);
    assert_eq!(bare.to_string(), "ConfigMap/c");

    for invalid in [
        json!({"kind": "ConfigMap", "metadata": {"name": "c"}}),
        json!({"apiVersion": "v1", "metadata": {"name": "c"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap"}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "c"}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 1}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": 7}}),
    ] {
        assert_eq!(ResourceId::of(&obj(invalid.clone())), None, "{invalid}");
    }

    let in_default = ResourceId {
        namespace: Some("default".into()),
        ..bare.clone()
    };
    assert!(bare.matches(&in_default, "default"));
    assert!(!bare.matches(&in_default, "other"));
    let other_kind = ResourceId {
        kind: "Secret".into(),
        ..bare.clone()
    };
    assert!(!bare.matches(&other_kind, "default"));

    let list = objs(json!([
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "other"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}},
    ]));
    assert_eq!(position(&list, &bare, "default"), Some(1));
    assert_eq!(
        find(&list, &bare, "other").map(|entry| entry["metadata"]["namespace"].clone()),
        Some(json!("other"))
    );
    assert_eq!(position(&list, &other_kind, "default"), None);
}

#[test]
fn schemas_for_takes_the_custom_entry_and_the_default_for_the_rest() {
    let manifest = vec![
        deployment(),
        obj(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}}),
        ),
    ];
    // The custom entry omits the namespace, which matches like the API's
    // validation does; a second entry names a resource a hook adds.
    let custom = objs(json!([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
         "spec": {"replicas": null}},
    ]));
    let schemas = schemas_for(&manifest, &custom);
    assert_eq!(schemas.len(), 3);
    assert_eq!(schemas[0], custom[1]);
    assert_eq!(schemas[1], default_schema(&manifest[1]));
    assert_eq!(schemas[2], custom[0]);
    assert_eq!(
        schemas_for(&manifest, &[]),
        vec![default_schema(&manifest[0]), default_schema(&manifest[1])]
    );
}

#[test]
fn observe_keeps_only_observed_fields_and_counts_lists() {
    let schema = obj(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo", "namespace": "prod"},
        "spec": {
            "replicas": null,
            "paused": null,
            "template": {"spec": {"containers": [{"image": null}, {MIN_LENGTH: 1, MAX_LENGTH: 0}]}}
        }
    }));
    let live = json!({
        "metadata": {"name": "echo", "namespace": "prod", "uid": "u"},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}
        ]}}},
        "status": {"readyReplicas": 2}
    });
    assert_eq!(
        Value::Object(observe(&schema, &live)),
        json!({
            // A list answer's items carry no apiVersion and kind: the schema's.
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "echo", "namespace": "prod"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"image": "a:1"}, {CURRENT_LENGTH: 2}
            ]}}}
        })
    );
    // The live namespace is kept even where the schema does not observe it.
    let schema = obj(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
        "data": {"k": null}}),
    );
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v", "other": "x"}});
    assert_eq!(
        Value::Object(observe(&schema, &live)),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default"}, "data": {"k": "v"}})
    );
    // An empty live list is counted.
    let schema = obj(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"volumes": [{MIN_LENGTH: 0, MAX_LENGTH: 0}]}}),
    );
    let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"volumes": []}});
    assert_eq!(
        observe(&schema, &live)["spec"],
        json!({"volumes": [{CURRENT_LENGTH: 0}]})
    );
}

#[test]
fn the_manifest_as_applied_has_not_drifted() {
    let desired = deployment();
    let schema = default_schema(&desired);
    assert_eq!(drift_of(&schema, &desired, &as_live(&desired)), None);
}

#[test]
fn a_changed_leaf_is_drift_with_its_path() {
    let desired = deployment();
    let schema = default_schema(&desired);
    let cases = [
        ("/spec/replicas", json!(5), "spec.replicas: 3 != 5"),
        (
            "/spec/template/spec/containers/0/image",
            json!("echo:2"),
            r#"spec.template.spec.containers[0].image: "echo:1" != "echo:2""#,
        ),
        (
            "/spec/template/spec/containers/0/args/0",
            json!("-q"),
            r#"spec.template.spec.containers[0].args[0]: "-v" != "-q""#,
        ),
        (
            "/metadata/labels/app.kubernetes.io~1name",
            json!("other"),
            r#"metadata.labels["app.kubernetes.io/name"]: "echo" != "other""#,
        ),
        (
            "/spec/template/spec/containers/0/name",
            json!({"long": "x".repeat(100)}),
            r#"spec.template.spec.containers[0].name: "echo" != {"long":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…"#,
        ),
    ];
    for (pointer, value, expected) in cases {
        let mut live = as_live(&desired);
        *live.pointer_mut(pointer).expect("the field") = value;
        assert_eq!(
            drift_of(&schema, &desired, &live).as_deref(),
            Some(expected),
            "{pointer}"
        );
    }
}

#[test]
fn numbers_compare_by_value() {
    let desired = obj(
        json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": 1, "b": 2.5, "c": {"d": [1, 2]}}}),
    );
    let custom = obj(
        json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": null, "b": null, "c": null}}),
    );
    let live = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": 1.0, "b": 2.5, "c": {"d": [1.0, 2]}}});
    assert_eq!(drift_of(&custom, &desired, &live), None);
    assert_eq!(drift_of(&default_schema(&desired), &desired, &live), None);
    let live = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": 1.5, "b": 2.5, "c": {"d": [1, 2]}}});
    assert_eq!(
        drift_of(&custom, &desired, &live).as_deref(),
        Some("spec.a: 1 != 1.5")
    );
    let big = obj(
        json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": u64::MAX}}),
    );
    let live = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": u64::MAX - 1}});
    assert!(drift_of(&default_schema(&big), &big, &live).is_some());
}

#[test]
fn a_key_on_one_side_only_is_drift_unless_the_other_is_a_zero_value() {
    let schema = obj(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"paused": null, "hostNetwork": null, "args": null, "labels": {"a": null}}}),
    );
    let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}});
    let cases = [
        (
            json!({"paused": true}),
            Some("spec.paused: true != (absent)"),
        ),
        // Kubernetes omits zero and empty fields: these are not drift.
        (json!({"hostNetwork": false}), None),
        (json!({"args": []}), None),
        (json!({"paused": null, "labels": {}}), None),
        (json!({"labels": {"a": ""}}), None),
        (
            json!({"labels": {"a": "b"}}),
            Some(r#"spec.labels.a: "b" != (absent)"#),
        ),
    ];
    for (spec, expected) in cases {
        let desired = obj(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}),
        );
        assert_eq!(
            drift_of(&schema, &desired, &live).as_deref(),
            expected,
            "{spec}"
        );
    }
    // The other way round: set live, absent desired.
    let desired = obj(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}));
    let live = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"paused": true}});
    assert_eq!(
        drift_of(&schema, &desired, &live).as_deref(),
        Some("spec.paused: (absent) != true")
    );
}

#[test]
fn list_lengths_are_checked_against_the_control_dictionary() {
    let schema = |min: u64, max: u64| {
        obj(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": null}, {MIN_LENGTH: min, MAX_LENGTH: max}]}}),
        )
    };
    let desired = obj(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": 80}]}}),
    );
    let live = |ports: usize| {
        let ports: Vec<Value> = (0..ports).map(|i| json!({"port": 80 + i})).collect();
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": ports}})
    };
    let cases = [
        (1, 1, 1, None),
        (1, 1, 2, Some("spec.ports: length 2 not in [1, 1]")),
        (1, 3, 3, None),
        (1, 3, 4, Some("spec.ports: length 4 not in [1, 3]")),
        // max 0: unlimited (Krake's bug 9).
        (1, 0, 7, None),
        (2, 0, 1, Some("spec.ports: length 1 not in [2, unlimited]")),
        // Too short: the observed element is missing first.
        (1, 1, 0, Some("spec.ports[0]: desired but not observed")),
    ];
    for (min, max, length, expected) in cases {
        assert_eq!(
            drift_of(&schema(min, max), &desired, &live(length)).as_deref(),
            expected,
            "min {min} max {max} length {length}"
        );
    }
    // An observed element the desired state lacks.
    let empty = obj(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": []}}),
    );
    assert_eq!(
        drift_of(&schema(0, 0), &empty, &live(1)).as_deref(),
        Some("spec.ports[0]: observed but not desired")
    );
    // Elements beyond the observed ones are only counted.
    let no_elements = obj(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{MIN_LENGTH: 0, MAX_LENGTH: 0}]}}),
    );
    assert_eq!(drift_of(&no_elements, &empty, &live(3)), None);
}

#[test]
fn a_namespace_missing_on_either_side_is_not_compared() {
    let desired = obj(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "r", "namespace": "prod"}}),
    );
    let schema = default_schema(&desired);
    // Cluster-scoped: no namespace on the live object.
    let live = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "r"}});
    assert_eq!(drift_of(&schema, &desired, &live), None);
    let mut null_namespace = desired.clone();
    null_namespace["metadata"]["namespace"] = Value::Null;
    let live = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "r", "namespace": "default"}});
    assert_eq!(drift_of(&schema, &null_namespace, &live), None);
    // Both given and different: drift.
    let live = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "r", "namespace": "other"}});
    assert_eq!(
        drift_of(&schema, &desired, &live).as_deref(),
        Some(r#"metadata.namespace: "prod" != "other""#)
    );
}

#[test]
fn a_custom_schema_leaves_unobserved_fields_alone() {
    let desired = deployment();
    let custom = obj(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "echo", "namespace": "prod"}, "spec": {"replicas": null}}));
    let mut live = as_live(&desired);
    live["spec"]["template"]["spec"]["containers"][0]["image"] = json!("echo:2");
    live["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .expect("containers")
        .push(json!({"name": "sidecar"}));
    live["metadata"]["labels"] = json!({});
    assert_eq!(drift_of(&custom, &desired, &live), None);
    live["spec"]["replicas"] = json!(1);
    assert_eq!(
        drift_of(&custom, &desired, &live).as_deref(),
        Some("spec.replicas: 3 != 1")
    );
}

#[test]
fn values_of_another_type_than_the_schema_expects_compare_whole() {
    let schema = obj(
        json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": {"b": null}, "l": [null, {MIN_LENGTH: 1, MAX_LENGTH: 1}]}}),
    );
    let desired = obj(
        json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": "text", "l": [1]}}),
    );
    let live = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": "text", "l": [1]}});
    assert_eq!(drift_of(&schema, &desired, &live), None);
    let live = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": {"b": 1}, "l": [1]}});
    assert_eq!(
        drift_of(&schema, &desired, &live).as_deref(),
        Some(r#"spec.a: "text" != {"b":1}"#)
    );
    let live = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "x"},
        "spec": {"a": "text", "l": "flat"}});
    assert_eq!(
        drift_of(&schema, &desired, &live).as_deref(),
        Some(r#"spec.l: [1] != "flat""#)
    );
}

#[test]
fn drift_formats_as_path_and_difference() {
    let d = Drift {
        path: "spec.replicas".into(),
        difference: "3 != 5".into(),
    };
    assert_eq!(d.to_string(), "spec.replicas: 3 != 5");
}

#[test]
fn fill_from_live_completes_unset_observed_fields_only() {
    let schema = obj(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
        "spec": {
            "replicas": null, "paused": null, "strategy": {"type": null},
            "template": {"spec": {"containers": [
                {"name": null, "imagePullPolicy": null}, {"name": null},
                {MIN_LENGTH: 1, MAX_LENGTH: 3}
            ]}}
        }
    }));
    let mut desired = obj(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
        "spec": {"replicas": null, "paused": false,
            "template": {"spec": {"containers": [{"name": "a", "image": "a:1"}]}}}
    }));
    let live = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "echo", "uid": "u"},
        "spec": {
            "replicas": 1, "paused": true, "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {"spec": {"containers": [
                {"name": "a", "image": "a:1", "imagePullPolicy": "IfNotPresent"},
                {"name": "b", "image": "b:1"},
                {"name": "c"}
            ]}}
        }
    });
    fill_from_live(&mut desired, &schema, &live);
    assert_eq!(
        Value::Object(desired.clone()),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
            "spec": {
                // null is unset: the server's choice is taken.
                "replicas": 1,
                // set: kept, though the live value differs.
                "paused": false,
                "template": {"spec": {"containers": [
                    {"name": "a", "image": "a:1", "imagePullPolicy": "IfNotPresent"},
                    {"name": "b"}
                ]}},
                "strategy": {"type": "RollingUpdate"}
            }
        })
    );
    // The paused difference is drift; the rest agrees.
    assert_eq!(
        drift_of(&schema, &desired, &live).as_deref(),
        Some("spec.paused: false != true")
    );
    // A live answer that is not an object changes nothing.
    let before = desired.clone();
    fill_from_live(&mut desired, &schema, &json!("oops"));
    assert_eq!(desired, before);
    // An observed field the answer lacks stays unset.
    let mut bare =
        obj(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"}}));
    fill_from_live(&mut bare, &schema, &json!({"spec": {"replicas": 2}}));
    assert_eq!(bare["spec"], json!({"replicas": 2}));
}

#[test]
fn last_applied_keeps_values_learned_from_the_cluster() {
    let manifest = objs(json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
         "spec": {"replicas": null, "template": {"spec": {"containers": [{"name": "a", "image": "a:2"}]}}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}, "data": {"k": "v"}},
    ]));
    let custom = objs(json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
         "spec": {"replicas": null, "template": {"spec": {"containers": [
             {"image": null, "imagePullPolicy": null}, {MIN_LENGTH: 1, MAX_LENGTH: 1}
         ]}}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"}, "data": {"token": null}},
    ]));
    let schemas = schemas_for(&manifest, &custom);
    let previous = objs(json!([
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
         "spec": {"replicas": 1, "minReadySeconds": 5,
             "template": {"spec": {"containers": [
                 {"name": "a", "image": "a:1", "imagePullPolicy": "Always"}
             ]}}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"}, "data": {"token": "t"}, "type": "Opaque"},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "removed"}, "data": {"k": "v"}},
    ]));
    assert_eq!(
        Value::Array(
            last_applied(&manifest, &schemas, &previous)
                .into_iter()
                .map(Value::Object)
                .collect()
        ),
        json!([
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "echo"},
             // replicas learned before and unset now: kept; minReadySeconds is
             // not observed: dropped; the manifest's image wins.
             "spec": {"replicas": 1, "template": {"spec": {"containers": [
                 {"name": "a", "image": "a:2", "imagePullPolicy": "Always"}
             ]}}}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new"}, "data": {"k": "v"}},
            // Observed and recorded but not in the manifest (a hook's): its
            // observed fields are kept.
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"}, "data": {"token": "t"}},
        ])
    );
    // Without a previous state, the manifest as it is.
    assert_eq!(last_applied(&manifest, &schemas, &[]), manifest);
    // Only observed fields are kept: a field removed from the manifest does
    // not come back with its parent.
    let manifest = objs(json!([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}]));
    let schemas = objs(
        json!([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"restartPolicy": null, "containers": [{"image": null}, {MIN_LENGTH: 1, MAX_LENGTH: 1}]}}]),
    );
    let previous = objs(
        json!([{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"restartPolicy": "Always", "hostNetwork": true,
            "containers": [{"name": "a", "image": "a:1"}]}}]),
    );
    assert_eq!(
        Value::Object(last_applied(&manifest, &schemas, &previous).remove(0)),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"restartPolicy": "Always", "containers": [{"image": "a:1"}]}})
    );
}

#[test]
fn an_application_cycle_applies_observes_and_heals() {
    let manifest = vec![deployment()];
    let schemas = schemas_for(&manifest, &[]);
    let mut desired = last_applied(&manifest, &schemas, &[]);
    // Apply: the answer completes the desired state.
    let live = as_live(&manifest[0]);
    fill_from_live(&mut desired[0], &schemas[0], &live);
    let observed = vec![observe(&schemas[0], &live)];
    let id = ResourceId::of(&desired[0]).expect("an id");
    let current = find(&observed, &id, "default").expect("observed");
    assert_eq!(drift(&schemas[0], &desired[0], current), None);
    // Someone scales it down: drift; the controller applies `desired` again.
    let mut changed = live.clone();
    changed["spec"]["replicas"] = json!(1);
    let observed = observe(&schemas[0], &changed);
    assert_eq!(
        drift(&schemas[0], &desired[0], &observed).map(|d| d.path),
        Some("spec.replicas".to_owned())
    );
    // The next reconciliation keeps the desired state.
    let again = last_applied(&manifest, &schemas, &desired);
    assert_eq!(again, desired);
}

// Generated JSON.

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1.0e9..1.0e9f64).prop_map(Value::from),
        "[a-z0-9 ]{0,6}".prop_map(Value::String),
    ]
}

/// JSON with plain keys, as manifests have.
fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-f]{1,3}", inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// A manifest resource: an identity and arbitrary other fields.
fn resource() -> impl Strategy<Value = Object> {
    (
        prop::sample::select(vec!["v1", "apps/v1", "batch/v1"]),
        prop::sample::select(vec!["ConfigMap", "Deployment", "Service", "Widget"]),
        prop::option::of("[a-z]{1,5}"),
        "[a-z]{1,8}",
        prop::collection::btree_map("[a-f]{1,3}", json_value(), 0..4),
        json_value(),
    )
        .prop_map(|(api_version, kind, namespace, name, labels, spec)| {
            let mut resource = json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": {"name": name, "labels": labels},
                "spec": spec,
            });
            if let Some(namespace) = namespace {
                resource["metadata"]["namespace"] = json!(namespace);
            }
            obj(resource)
        })
}

/// `value` with a server field added to every object and a status.
fn with_server_fields(value: &Value) -> Value {
    fn add(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.values_mut().for_each(add);
                map.insert("zzServerDefault".into(), json!(1));
            }
            Value::Array(items) => items.iter_mut().for_each(add),
            _ => {}
        }
    }
    let mut live = value.clone();
    add(&mut live);
    live["metadata"]["uid"] = json!("3f0c");
    live["status"] = json!({"observedGeneration": 1});
    live
}

/// The JSON pointers of every scalar in `value`.
fn leaves(value: &Value, at: String, out: &mut Vec<String>) {
    let escape = |key: &str| key.replace('~', "~0").replace('/', "~1");
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                leaves(value, format!("{at}/{}", escape(key)), out);
            }
        }
        Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                leaves(value, format!("{at}/{index}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// A value that differs from `value` under every drift rule.
fn changed(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(format!("{s}~")),
        _ => json!("~"),
    }
}

/// Any JSON, with keys the functions look for.
fn hostile_value() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "namespace",
        "spec",
        "status",
        "type",
        "ports",
        "port",
        "nodePort",
        "loadBalancer",
        "ingress",
        "ip",
        "replicas",
        "readyReplicas",
        "containerStatuses",
        "state",
        "terminated",
        "waiting",
        "reason",
        MIN_LENGTH,
        MAX_LENGTH,
        CURRENT_LENGTH,
        "a",
    ])
    .prop_map(str::to_owned);
    let leaf = prop_oneof![
        leaf(),
        prop::sample::select(vec![
            "Pod",
            "Service",
            "LoadBalancer",
            "NodePort",
            "v1",
            "Job"
        ])
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn as_object(value: Value) -> Object {
    match value {
        Value::Object(map) => map,
        other => [("spec".to_owned(), other)].into_iter().collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_resource_as_applied_never_drifts(resource in resource()) {
        let schema = default_schema(&resource);
        let live = with_server_fields(&Value::Object(resource.clone()));
        let observed = observe(&schema, &live);
        prop_assert_eq!(drift(&schema, &resource, &observed), None);
        // After the apply the desired state learns nothing it does not have.
        let mut desired = resource.clone();
        fill_from_live(&mut desired, &schema, &live);
        prop_assert_eq!(drift(&schema, &desired, &observed), None);
    }

    #[test]
    fn a_changed_observed_leaf_drifts(resource in resource(), pick in any::<prop::sample::Index>()) {
        let schema = default_schema(&resource);
        let mut pointers = Vec::new();
        leaves(&Value::Object(resource.clone()), String::new(), &mut pointers);
        let pointer = pick.get(&pointers);
        let mut live = with_server_fields(&Value::Object(resource.clone()));
        let slot = live.pointer_mut(pointer).expect("the leaf is live too");
        *slot = changed(slot);
        let difference = drift(&schema, &resource, &observe(&schema, &live));
        prop_assert!(difference.is_some(), "{} changed, no drift", pointer);
    }

    #[test]
    fn an_unobserved_field_never_drifts(
        resource in resource(),
        hidden in json_value(),
        replacement in json_value(),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut resource = resource;
        resource.insert("hidden".into(), hidden);
        let mut schema = default_schema(&resource);
        schema.remove("hidden");
        let mut live = with_server_fields(&Value::Object(resource.clone()));
        let mut pointers = Vec::new();
        leaves(&resource["hidden"], "/hidden".into(), &mut pointers);
        if !pointers.is_empty() {
            let slot = live.pointer_mut(pick.get(&pointers).as_str()).expect("the leaf is live too");
            *slot = changed(slot);
            prop_assert_eq!(drift(&schema, &resource, &observe(&schema, &live)), None);
        }
        live["hidden"] = replacement;
        prop_assert_eq!(drift(&schema, &resource, &observe(&schema, &live)), None);
    }

    #[test]
    fn no_function_panics_on_any_json(
        manifest in prop::collection::vec(hostile_value(), 0..3),
        custom in prop::collection::vec(hostile_value(), 0..3),
        previous in prop::collection::vec(hostile_value(), 0..3),
        live in hostile_value(),
    ) {
        let manifest: Vec<Object> = manifest.into_iter().map(as_object).collect();
        let custom: Vec<Object> = custom.into_iter().map(as_object).collect();
        let previous: Vec<Object> = previous.into_iter().map(as_object).collect();
        let schemas = schemas_for(&manifest, &custom);
        let mut desired = last_applied(&manifest, &schemas, &previous);
        for (schema, desired) in schemas.iter().chain(&custom).zip(desired.iter_mut()) {
            fill_from_live(desired, schema, &live);
            let observed = observe(schema, &live);
            let _ = drift(schema, desired, &observed);
            let _ = drift(schema, desired, &as_object(live.clone()));
            let _ = drift(&as_object(live.clone()), desired, schema);
        }
        for entry in manifest.iter().chain(&custom) {
            let _ = default_schema(entry);
            if let Some(id) = ResourceId::of(entry) {
                let _ = find(&previous, &id, "default");
                let _ = id.to_string();
            }
        }
    }
}
