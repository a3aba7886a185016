//! The kind registry against Krake's route table and key layout
//! (`shared/krake-api.md`, sections 1.3 and 2.1), followed by the kinds
//! beyond Krake.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use krake_data::kinds::{core, infrastructure, kubernetes, openstack};
use krake_data::registry::{
    self, HasStatus, KeyError, Resource, Scope, Subresource, SubresourceBody,
};
use serde_json::Value;

/// (api, kind, plural, scope, etcd key template, sub-operations), as Krake has them.
type Row = (
    &'static str,
    &'static str,
    &'static str,
    Scope,
    &'static str,
    &'static [&'static str],
);

const KRAKE_TABLE: &[Row] = &[
    (
        "core",
        "Role",
        "roles",
        Scope::Global,
        "/core/roles/{name}",
        &[],
    ),
    (
        "core",
        "RoleBinding",
        "rolebindings",
        Scope::Global,
        "/core/rolebindings/{name}",
        &[],
    ),
    (
        "core",
        "GlobalMetric",
        "globalmetrics",
        Scope::Global,
        "/core/globalmetrics/{name}",
        &[],
    ),
    (
        "core",
        "Metric",
        "metrics",
        Scope::Namespaced,
        "/core/metrics/{namespace}/{name}",
        &[],
    ),
    (
        "core",
        "GlobalMetricsProvider",
        "globalmetricsproviders",
        Scope::Global,
        "/core/globalmetricsproviders/{name}",
        &[],
    ),
    (
        "core",
        "MetricsProvider",
        "metricsproviders",
        Scope::Namespaced,
        "/core/metricsproviders/{namespace}/{name}",
        &[],
    ),
    (
        "kubernetes",
        "Application",
        "applications",
        Scope::Namespaced,
        "/kubernetes/applications/{namespace}/{name}",
        &["status", "binding", "complete", "shutdown", "retry"],
    ),
    (
        "kubernetes",
        "Cluster",
        "clusters",
        Scope::Namespaced,
        "/kubernetes/clusters/{namespace}/{name}",
        &["status", "binding"],
    ),
    (
        "infrastructure",
        "GlobalInfrastructureProvider",
        "globalinfrastructureproviders",
        Scope::Global,
        "/infrastructure/globalinfrastructureproviders/{name}",
        &[],
    ),
    (
        "infrastructure",
        "InfrastructureProvider",
        "infrastructureproviders",
        Scope::Namespaced,
        "/infrastructure/infrastructureproviders/{namespace}/{name}",
        &[],
    ),
    (
        "infrastructure",
        "GlobalCloud",
        "globalclouds",
        Scope::Global,
        "/infrastructure/globalclouds/{name}",
        &["status"],
    ),
    (
        "infrastructure",
        "Cloud",
        "clouds",
        Scope::Namespaced,
        "/infrastructure/clouds/{namespace}/{name}",
        &["status"],
    ),
    (
        "openstack",
        "Project",
        "projects",
        Scope::Namespaced,
        "/openstack/projects/{namespace}/{name}",
        &["status"],
    ),
    (
        "openstack",
        "MagnumCluster",
        "magnumclusters",
        Scope::Namespaced,
        "/openstack/magnumclusters/{namespace}/{name}",
        &["status", "binding"],
    ),
];

/// The kinds beyond Krake, after Krake's in the registry.
const BEYOND_KRAKE: &[Row] = &[(
    "core",
    "Lease",
    "leases",
    Scope::Namespaced,
    "/core/leases/{namespace}/{name}",
    &[],
)];

#[test]
fn registry_matches_krakes_route_table() {
    let table: Vec<&Row> = KRAKE_TABLE.iter().chain(BEYOND_KRAKE).collect();
    assert_eq!(registry::ALL.len(), table.len());
    for (info, &&(api, kind, plural, scope, key, subs)) in registry::ALL.iter().zip(&table) {
        assert_eq!(
            (
                info.api,
                info.kind,
                info.plural,
                info.scope,
                info.key_template
            ),
            (api, kind, plural, scope, key)
        );
        assert_eq!(info.list_kind, format!("{kind}List"));
        let served: Vec<_> = info
            .subresources
            .iter()
            .map(|s| s.operation.as_str())
            .collect();
        assert_eq!(served, subs, "{kind}");
        assert_eq!(info.has_status(), subs.contains(&"status"), "{kind}");
        assert_eq!(
            (info.default_status)().is_some(),
            info.has_status(),
            "{kind}"
        );
        for sub in info.subresources {
            let expected = match sub.operation {
                Subresource::Retry => format!("{plural}/status"),
                other => format!("{plural}/{other}"),
            };
            assert_eq!(sub.rbac_resource, expected);
            if sub.operation == Subresource::Status {
                assert!(matches!(sub.body, SubresourceBody::Object));
            }
        }
        assert_eq!(registry::by_plural(api, plural), Some(*info));
        assert_eq!(registry::by_kind(api, kind), Some(*info));
        assert_eq!(
            registry::by_list_kind(api, &format!("{kind}List")),
            Some(*info)
        );
        assert!(
            info.immutable_fields
                .starts_with(&["metadata.name", "metadata.namespace"])
        );
    }
    assert_eq!(registry::by_plural("kubernetes", "roles"), None);
}

#[test]
fn binding_bodies() {
    let body_kind =
        |info: &registry::KindInfo| match info.subresource(Subresource::Binding).unwrap().body {
            SubresourceBody::Body(body) => (body.api, body.kind),
            other => panic!("{other:?}"),
        };
    assert_eq!(
        body_kind(&kubernetes::APPLICATION),
        ("kubernetes", "ClusterBinding")
    );
    assert_eq!(
        body_kind(&kubernetes::CLUSTER),
        ("infrastructure", "CloudBinding")
    );
    assert_eq!(
        body_kind(&openstack::MAGNUM_CLUSTER),
        ("openstack", "MagnumClusterBinding")
    );
    assert!(matches!(
        kubernetes::APPLICATION
            .subresource(Subresource::Retry)
            .unwrap()
            .body,
        SubresourceBody::Empty
    ));
    assert!(
        kubernetes::CLUSTER
            .subresource(Subresource::Complete)
            .is_none()
    );
    assert_eq!(
        Subresource::from_segment("shutdown"),
        Some(Subresource::Shutdown)
    );
    assert_eq!(Subresource::from_segment("scale"), None);
}

#[test]
fn keys_prefixes_and_paths() {
    let apps = &kubernetes::APPLICATION;
    assert_eq!(
        apps.key(Some("ns"), "web").unwrap(),
        "/kubernetes/applications/ns/web"
    );
    assert_eq!(apps.prefix(Some("ns")), "/kubernetes/applications/ns/");
    assert_eq!(apps.prefix(None), "/kubernetes/applications/");
    assert_eq!(
        apps.collection_path(Some("ns")),
        "/kubernetes/namespaces/ns/applications"
    );
    assert_eq!(apps.collection_path(None), "/kubernetes/applications");
    assert_eq!(
        apps.object_path(Some("ns"), "web"),
        "/kubernetes/namespaces/ns/applications/web"
    );
    assert_eq!(
        apps.key(None, "web"),
        Err(KeyError::MissingNamespace {
            kind: "Application"
        })
    );
    assert!(matches!(
        apps.key(Some("a/b"), "web"),
        Err(KeyError::InvalidParameter {
            parameter: "namespace",
            ..
        })
    ));
    assert!(matches!(
        apps.key(Some("ns"), ""),
        Err(KeyError::InvalidParameter {
            parameter: "name",
            ..
        })
    ));

    let roles = &core::ROLE;
    assert_eq!(roles.key(None, "admin").unwrap(), "/core/roles/admin");
    assert_eq!(
        roles.key(Some("ignored"), "admin").unwrap(),
        "/core/roles/admin"
    );
    assert_eq!(roles.prefix(Some("ignored")), "/core/roles/");
    assert_eq!(roles.collection_path(Some("ignored")), "/core/roles");

    // No prefix of one kind or namespace is a prefix of another's keys.
    let metrics = core::GLOBAL_METRIC.prefix(None);
    assert!(
        !core::GLOBAL_METRICS_PROVIDER
            .key(None, "x")
            .unwrap()
            .starts_with(&metrics)
    );
    assert!(
        !apps
            .key(Some("ns2"), "x")
            .unwrap()
            .starts_with(&apps.prefix(Some("ns")))
    );
}

#[test]
fn typed_kinds_point_at_their_entries() {
    fn check<K: Resource>(api: &str, kind: &str) {
        assert_eq!((K::INFO.api, K::INFO.kind), (api, kind));
    }
    check::<core::Role>("core", "Role");
    check::<core::RoleBinding>("core", "RoleBinding");
    check::<core::GlobalMetric>("core", "GlobalMetric");
    check::<core::Metric>("core", "Metric");
    check::<core::GlobalMetricsProvider>("core", "GlobalMetricsProvider");
    check::<core::MetricsProvider>("core", "MetricsProvider");
    check::<kubernetes::Application>("kubernetes", "Application");
    check::<kubernetes::Cluster>("kubernetes", "Cluster");
    check::<infrastructure::GlobalInfrastructureProvider>(
        "infrastructure",
        "GlobalInfrastructureProvider",
    );
    check::<infrastructure::InfrastructureProvider>("infrastructure", "InfrastructureProvider");
    check::<infrastructure::GlobalCloud>("infrastructure", "GlobalCloud");
    check::<infrastructure::Cloud>("infrastructure", "Cloud");
    check::<openstack::Project>("openstack", "Project");
    check::<openstack::MagnumCluster>("openstack", "MagnumCluster");
    check::<core::Lease>("core", "Lease");

    let mut app = kubernetes::Application::new(
        krake_data::Metadata::namespaced("ns", "a"),
        kubernetes::ApplicationSpec::from_manifest(vec![]),
    );
    app.status_mut().state = kubernetes::ApplicationState::Running;
    app.metadata_mut().finalizers.push("x".into());
    assert_eq!(app.metadata().tail_finalizer(), Some("x"));
    let value = serde_json::to_value(&app).unwrap();
    assert_eq!(value["api"], "kubernetes");
    assert_eq!(value["status"]["state"], "RUNNING");
}

#[test]
fn every_kind_has_a_json_schema_with_its_fields() {
    let schemas = registry::component_schemas();
    for info in registry::ALL {
        let schema = &schemas[info.kind];
        let properties = schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{}: {schema}", info.kind));
        for field in ["api", "kind", "metadata"] {
            assert!(
                properties.contains_key(field),
                "{} lacks {field}",
                info.kind
            );
        }
        assert_eq!(
            properties.contains_key("status"),
            info.has_status(),
            "{}",
            info.kind
        );
        let list = &schemas[info.list_kind];
        assert_eq!(
            list["properties"]["items"]["items"]["$ref"],
            format!("#/components/schemas/{}", info.kind)
        );
    }
    for body in registry::BODIES {
        assert!(
            schemas[body.kind]["properties"].is_object(),
            "{}",
            body.kind
        );
    }
    // Every reference resolves inside the document.
    let document = Value::Object(schemas.clone());
    let text = document.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(schemas.contains_key(name), "dangling reference to {name}");
    }
    // Enums are spelled by name; tagged containers list every variant.
    let states = schemas["ApplicationState"].to_string();
    assert!(states.contains("WAITING_FOR_CLUSTER_CREATION"), "{states}");
    assert!(schemas["ClusterState"].to_string().contains("\"NOTREADY\""));
    let providers = schemas["MetricsProviderSpec"]["oneOf"].as_array().unwrap();
    assert_eq!(providers.len(), 4);
    assert!(schemas["LabelConstraint"]["type"] == "string");
}

#[test]
fn lease_validation_and_defaults() {
    let lease = core::Lease::new(
        krake_data::Metadata::namespaced("ns", "controller"),
        core::LeaseSpec::free(400),
    );
    let value = serde_json::to_value(&lease).unwrap();
    assert_eq!(
        value["spec"],
        serde_json::json!({
            "holder": null,
            "acquire_time": null,
            "renew_time": null,
            "lease_duration_ms": 400,
            "transitions": 0,
        })
    );
    let created = core::LEASE
        .parse(
            serde_json::json!({
                "metadata": {"name": "controller", "namespace": "ns"},
                "spec": {"lease_duration_ms": 400},
            }),
            registry::ParseMode::Create,
        )
        .unwrap();
    assert_eq!(created["api"], "core");
    assert_eq!(created["kind"], "Lease");
    assert_eq!(created["spec"], value["spec"]);

    let errors = core::LEASE
        .parse(
            serde_json::json!({
                "metadata": {"name": "controller", "namespace": "ns"},
                "spec": {"lease_duration_ms": 0, "holder": ""},
            }),
            registry::ParseMode::Create,
        )
        .unwrap_err();
    assert_eq!(
        errors.messages_at("spec.lease_duration_ms"),
        ["Must be greater than or equal to 1."]
    );
    assert_eq!(
        errors.messages_at("spec.holder"),
        ["Shorter than minimum length 1."]
    );
    let errors = core::LEASE
        .parse(
            serde_json::json!({"metadata": {"name": "controller", "namespace": "ns"}, "spec": {}}),
            registry::ParseMode::Create,
        )
        .unwrap_err();
    assert!(
        !errors.messages_at("spec.lease_duration_ms").is_empty(),
        "{errors}"
    );
}
