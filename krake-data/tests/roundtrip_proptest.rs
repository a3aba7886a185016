//! Property tests: every generated *valid* object of every kind round-trips
//! through JSON.
//!
//! The strategies below build objects of all 15 persistent kinds and of the 5
//! request-only body kinds with every field varied (every enum variant, every
//! variant of the tagged containers, optional fields set and unset, opaque
//! JSON, constraint expressions in all their spellings) while respecting each
//! kind's validation rules. For every object the tests check that:
//!
//! 1. it validates (a rejection means the generator or the model is wrong);
//! 2. `to_value` / `from_value` give back an equal object, and serializing
//!    that again gives the same JSON value;
//! 3. the registry's type-erased `parse_object` returns exactly that value;
//! 4. the same holds through a JSON string (number formatting included);
//! 5. `KindInfo::parse` accepts it as a full body exactly when `uid`,
//!    `created` and `modified` are set (reporting the missing ones otherwise),
//!    and as a create body always, dropping the read-only metadata and
//!    resetting the status to the kind's default status.
//!
//! Bodies are checked the same way through their `BodyInfo::parse`.
//!
//! The float fields (`MetricSpec.min`/`max`, `MetricRef.weight`,
//! `StaticSpec.metrics`) get arbitrary finite values, every bit pattern
//! included: property 4 only holds because the workspace builds `serde_json`
//! with `float_roundtrip` (without it, `0.1 + 0.002` written as
//! `0.10200000000000001` reads back as `0.102`). Opaque JSON holds no floats.
//! Failing cases are not persisted to a regressions file; proptest prints the
//! minimal input instead.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Debug;
use std::ptr;

use chrono::{DateTime, FixedOffset};
use indexmap::IndexMap;
use krake_data::kinds::core::{
    GlobalMetric, GlobalMetricsProvider, InfluxSpec, KafkaSpec, Lease, LeaseSpec, Metric,
    MetricRef, MetricSpec, MetricSpecProvider, MetricsProvider, MetricsProviderSpec,
    PrometheusSpec, Role, RoleBinding, RoleRule, StaticSpec, Verb,
};
use krake_data::kinds::infrastructure::{
    CLOUD_BINDING, Cloud, CloudBinding, CloudSpec, CloudState, CloudStatus, GlobalCloud,
    GlobalInfrastructureProvider, ImSpec, InfrastructureProvider, InfrastructureProviderRef,
    InfrastructureProviderSpec, OpenstackAuthMethod, OpenstackProject, OpenstackSpec,
    OpenstackUser, PasswordAuth,
};
use krake_data::kinds::kubernetes::{
    Application, ApplicationSpec, ApplicationState, ApplicationStatus, CLUSTER_BINDING, COMPLETE,
    CloudConstraints, Cluster, ClusterBinding, ClusterCloudConstraints, ClusterConstraints,
    ClusterNode, ClusterNodeCondition, ClusterNodeMetadata, ClusterNodeStatus, ClusterSpec,
    ClusterState, ClusterStatus, Complete, Constraints, ContainerHealth, HOOKS, ManifestResource,
    SHUTDOWN, SHUTDOWN_FAILURE_STRATEGIES, Shutdown, Tosca,
};
use krake_data::kinds::openstack::{
    ApplicationCredential, AuthMethod, MAGNUM_CLUSTER_BINDING, MagnumCluster, MagnumClusterBinding,
    MagnumClusterConstraints, MagnumClusterSpec, MagnumClusterState, MagnumClusterStatus, Project,
    ProjectConstraints, ProjectPasswordAuth, ProjectReference, ProjectSpec, ProjectState,
    ProjectStatus, UserReference,
};
use krake_data::metadata::Labels;
use krake_data::registry::{self, BodyInfo, ParseMode, SubresourceBody};
use krake_data::validation::{MISSING_FIELD, Validate};
use krake_data::{
    LabelConstraint, Metadata, MetricConstraint, Reason, ReasonCode, Resource, ResourceRef,
    Timestamp,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::string::string_regex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

// ---------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------

/// Checks every property of one generated object of kind `K`.
fn check<K: Resource + PartialEq>(obj: K) {
    let info = K::INFO;
    let kind = info.kind;

    // The kind's registry entry is the one the registry lists.
    assert!(
        registry::ALL.iter().any(|k| ptr::eq(*k, info)),
        "{kind} not in registry::ALL"
    );
    assert_eq!(registry::by_kind(info.api, kind), Some(info));
    assert_eq!(
        (info.default_status)().is_some(),
        info.has_status(),
        "{kind}"
    );

    // 1. The generator only makes valid objects.
    let errors = obj.validation_errors();
    assert!(
        errors.is_empty(),
        "{kind} does not validate: {errors}\n{obj:#?}"
    );
    let metadata = obj.metadata();
    assert_eq!(
        metadata.namespace.is_some(),
        info.is_namespaced(),
        "{kind}: scope"
    );
    info.key(metadata.namespace.as_deref(), &metadata.name)
        .unwrap_or_else(|err| panic!("{kind}: no store key: {err}"));

    // 2. Through a JSON value.
    let value = serde_json::to_value(&obj).unwrap();
    assert_eq!(value["api"], info.api, "{kind}: api");
    assert_eq!(value["kind"], kind, "{kind}: kind");
    assert_eq!(
        value.get("status").is_some(),
        info.has_status(),
        "{kind}: status"
    );
    let back: K = serde_json::from_value(value.clone())
        .unwrap_or_else(|err| panic!("{kind} does not read back: {err}\n{value:#}"));
    assert_eq!(back, obj, "{kind} changed through a JSON value");
    assert_eq!(
        serde_json::to_value(&back).unwrap(),
        value,
        "{kind}: second serialization"
    );

    // 3. The registry's type-erased path normalizes nothing away.
    let erased = (info.parse_object)(value.clone())
        .unwrap_or_else(|errors| panic!("{kind}: parse_object rejects: {errors}\n{value:#}"));
    assert_eq!(erased, value, "{kind}: parse_object changed the value");

    // 4. Through a JSON string, compact and pretty.
    let text = serde_json::to_string(&obj).unwrap();
    let from_text: K = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{kind} does not read back from text: {err}\n{text}"));
    assert_eq!(
        from_text, obj,
        "{kind} changed through a JSON string: {text}"
    );
    assert_eq!(
        serde_json::to_string(&from_text).unwrap(),
        text,
        "{kind}: second text"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        value,
        "{kind}: text vs value"
    );
    let pretty = serde_json::to_string_pretty(&obj).unwrap();
    assert_eq!(
        serde_json::from_str::<K>(&pretty).unwrap(),
        obj,
        "{kind}: pretty text"
    );

    // 5a. A full (update) body needs uid, created and modified.
    let full = info.parse(value.clone(), ParseMode::Full);
    let missing: Vec<&str> = [
        ("metadata.uid", metadata.uid.is_none()),
        ("metadata.created", metadata.created.is_none()),
        ("metadata.modified", metadata.modified.is_none()),
    ]
    .into_iter()
    .filter_map(|(field, missing)| missing.then_some(field))
    .collect();
    if missing.is_empty() {
        let full = full.unwrap_or_else(|errors| panic!("{kind}: full body rejected: {errors}"));
        assert_eq!(full, value, "{kind}: ParseMode::Full changed the value");
    } else {
        let errors = full.expect_err("a full body without read-only fields must be rejected");
        assert_eq!(errors.errors().len(), missing.len(), "{kind}: {errors}");
        for field in missing {
            assert_eq!(
                errors.messages_at(field),
                vec![MISSING_FIELD],
                "{kind}: {field}"
            );
        }
    }

    // 5b. A create body: read-only metadata dropped, status reset to its default.
    let created = info
        .parse(value.clone(), ParseMode::Create)
        .unwrap_or_else(|errors| panic!("{kind}: create body rejected: {errors}\n{value:#}"));
    let mut expected = value.clone();
    let expected_metadata = expected["metadata"].as_object_mut().unwrap();
    for field in ["uid", "created", "modified", "deleted"] {
        expected_metadata.insert(field.to_owned(), Value::Null);
    }
    expected_metadata.remove("resource_version");
    if let Some(status) = (info.default_status)() {
        expected["status"] = status;
    }
    assert_eq!(created, expected, "{kind}: ParseMode::Create");
    let created: K = serde_json::from_value(created).unwrap();
    let created_metadata = created.metadata();
    assert!(created_metadata.uid.is_none());
    assert!(created_metadata.created.is_none());
    assert!(created_metadata.modified.is_none());
    assert!(created_metadata.deleted.is_none());
    assert!(created_metadata.resource_version.is_none());
    assert_eq!(created_metadata.name, metadata.name);
    assert_eq!(created_metadata.labels, metadata.labels);
}

/// Checks every property of one generated request body.
fn check_body<B>(body: B, info: &'static BodyInfo)
where
    B: Serialize + DeserializeOwned + Validate + PartialEq + Debug,
{
    let kind = info.kind;
    assert!(
        registry::BODIES.iter().any(|b| ptr::eq(*b, info)),
        "{kind} not in BODIES"
    );
    let served = registry::ALL.iter().any(|k| {
        k.subresources
            .iter()
            .any(|s| matches!(s.body, SubresourceBody::Body(b) if ptr::eq(b, info)))
    });
    assert!(served, "no sub-operation takes a {kind}");

    let errors = body.validation_errors();
    assert!(
        errors.is_empty(),
        "{kind} does not validate: {errors}\n{body:#?}"
    );

    let value = serde_json::to_value(&body).unwrap();
    assert_eq!(value["api"], info.api, "{kind}: api");
    assert_eq!(value["kind"], kind, "{kind}: kind");
    let back: B = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(back, body, "{kind} changed through a JSON value");
    assert_eq!(serde_json::to_value(&back).unwrap(), value);

    let parsed = (info.parse)(value.clone())
        .unwrap_or_else(|errors| panic!("{kind}: parse rejects: {errors}\n{value:#}"));
    assert_eq!(parsed, value, "{kind}: parse changed the value");

    let text = serde_json::to_string(&body).unwrap();
    let from_text: B = serde_json::from_str(&text).unwrap();
    assert_eq!(
        from_text, body,
        "{kind} changed through a JSON string: {text}"
    );
    assert_eq!(serde_json::to_string(&from_text).unwrap(), text);
}

// ---------------------------------------------------------------------------
// Enumerations, listed exhaustively
// ---------------------------------------------------------------------------

const REASON_CODES: [ReasonCode; 20] = [
    ReasonCode::InternalError,
    ReasonCode::InvalidResource,
    ReasonCode::UnsupportedResource,
    ReasonCode::InvalidCustomResource,
    ReasonCode::InvalidToscaManifest,
    ReasonCode::ClusterNotReachable,
    ReasonCode::NoSuitableResource,
    ReasonCode::KubernetesError,
    ReasonCode::CreateFailed,
    ReasonCode::ReconcileFailed,
    ReasonCode::ReconfigureFailed,
    ReasonCode::DeleteFailed,
    ReasonCode::RetrieveFailed,
    ReasonCode::NotFound,
    ReasonCode::OpenstackError,
    ReasonCode::InvalidClusterTemplate,
    ReasonCode::InvalidMetric,
    ReasonCode::UnreachableMetricsProvider,
    ReasonCode::UnknownMetric,
    ReasonCode::UnknownMetricsProvider,
];

const VERBS: [Verb; 6] = [
    Verb::Create,
    Verb::List,
    Verb::ListAll,
    Verb::Get,
    Verb::Update,
    Verb::Delete,
];

const MAGNUM_CLUSTER_STATES: [MagnumClusterState; 6] = [
    MagnumClusterState::Pending,
    MagnumClusterState::Creating,
    MagnumClusterState::Running,
    MagnumClusterState::Reconciling,
    MagnumClusterState::Deleting,
    MagnumClusterState::Failed,
];

/// Fails to compile when a variant is added to one of the enums above and not
/// to its list (the lists must hold every variant).
#[allow(dead_code)]
fn lists_are_exhaustive(
    code: ReasonCode,
    verb: Verb,
    magnum: MagnumClusterState,
    cloud: CloudState,
    project: ProjectState,
) {
    use ReasonCode::*;
    match code {
        InternalError
        | InvalidResource
        | UnsupportedResource
        | InvalidCustomResource
        | InvalidToscaManifest
        | ClusterNotReachable
        | NoSuitableResource
        | KubernetesError
        | CreateFailed
        | ReconcileFailed
        | ReconfigureFailed
        | DeleteFailed
        | RetrieveFailed
        | NotFound
        | OpenstackError
        | InvalidClusterTemplate
        | InvalidMetric
        | UnreachableMetricsProvider
        | UnknownMetric
        | UnknownMetricsProvider => {}
    }
    match verb {
        Verb::Create | Verb::List | Verb::ListAll | Verb::Get | Verb::Update | Verb::Delete => {}
    }
    match magnum {
        MagnumClusterState::Pending
        | MagnumClusterState::Creating
        | MagnumClusterState::Running
        | MagnumClusterState::Reconciling
        | MagnumClusterState::Deleting
        | MagnumClusterState::Failed => {}
    }
    match cloud {
        CloudState::Online | CloudState::FailingMetrics => {}
    }
    match project {
        ProjectState::Online | ProjectState::FailingMetrics => {}
    }
}

#[test]
fn enum_lists_are_complete() {
    // The codes are distinct and serialize to distinct names.
    let names: std::collections::HashSet<_> = REASON_CODES
        .iter()
        .map(|c| serde_json::to_string(c).unwrap())
        .collect();
    assert_eq!(names.len(), REASON_CODES.len());
    let numbers: std::collections::HashSet<_> = REASON_CODES.iter().map(|c| c.number()).collect();
    assert_eq!(numbers.len(), REASON_CODES.len());
    assert_eq!(MetricsProviderSpec::TYPES.len(), 4);
    assert_eq!(AuthMethod::TYPES.len(), 2);
    assert_eq!(registry::ALL.len(), 15);
    assert_eq!(registry::BODIES.len(), 5);
}

/// The smallest realistic case of a float that `serde_json` reads back wrong
/// when built without `float_roundtrip`: computed decimals with 17 significant
/// digits, in every float field of the model.
#[test]
fn computed_decimal_floats_round_trip_through_text() {
    let odd = 0.1 + 0.002;
    assert_eq!(serde_json::to_string(&odd).unwrap(), "0.10200000000000001");
    assert_eq!(
        serde_json::from_str::<f64>("0.10200000000000001").unwrap(),
        odd
    );
    let spec = MetricSpec {
        allowed_values: vec![],
        min: -odd,
        max: odd,
        provider: MetricSpecProvider {
            name: "prometheus".into(),
            metric: "load".into(),
        },
    };
    check(GlobalMetric::new(Metadata::named("load"), spec));
    let mut metrics = IndexMap::new();
    metrics.insert("load".to_owned(), odd);
    let static_spec = MetricsProviderSpec::Static(StaticSpec { metrics });
    check(MetricsProvider::new(
        Metadata::namespaced("ns", "static"),
        static_spec,
    ));
    let reference = MetricRef {
        name: "load".into(),
        weight: odd,
        namespaced: true,
    };
    let mut spec = MagnumClusterSpec::default();
    spec.metrics.push(reference);
    check(MagnumCluster::new(
        Metadata::namespaced("ns", "magnum"),
        spec,
    ));
}

// ---------------------------------------------------------------------------
// Names, labels, metadata
// ---------------------------------------------------------------------------

fn regex(pattern: &str) -> BoxedStrategy<String> {
    string_regex(pattern).unwrap().boxed()
}

/// `[A-Za-z0-9_]`, or word characters around up to `inner_max` of `inner`.
fn framed(inner: &str, inner_max: usize) -> BoxedStrategy<String> {
    regex(&format!(
        "[A-Za-z0-9_]({inner}{{0,{inner_max}}}[A-Za-z0-9_])?"
    ))
}

/// A resource name or namespace (kept short: up to 20 characters).
fn name() -> BoxedStrategy<String> {
    framed("[A-Za-z0-9_.:-]", 18)
}

/// A label key's name or prefix segment.
fn label_segment() -> BoxedStrategy<String> {
    framed("[A-Za-z0-9_.-]", 10)
}

/// A label key, with an optional `prefix/`.
fn label_key() -> BoxedStrategy<String> {
    (option::of(label_segment()), label_segment())
        .prop_map(|(prefix, name)| match prefix {
            Some(prefix) => format!("{prefix}/{name}"),
            None => name,
        })
        .boxed()
}

/// A label value: 1 to 63 characters.
fn label_value() -> BoxedStrategy<String> {
    prop_oneof![4 => framed("[A-Za-z0-9_.-]", 10), 1 => framed("[A-Za-z0-9_.-]", 61)].boxed()
}

fn labels() -> impl Strategy<Value = Labels> {
    vec((label_key(), label_value()), 0..4).prop_map(|pairs| pairs.into_iter().collect())
}

/// Free text: any characters, control characters and newlines included.
fn text() -> BoxedStrategy<String> {
    regex("(?s).{0,12}")
}

fn finalizer() -> BoxedStrategy<String> {
    prop_oneof![
        Just("cascade_deletion".to_owned()),
        Just("kubernetes_resources_deletion".to_owned()),
        Just("infrastructure_resources_deletion".to_owned()),
        Just("magnum_cluster_deletion".to_owned()),
        name(),
    ]
    .boxed()
}

fn api_group() -> BoxedStrategy<String> {
    prop_oneof![select(registry::API_GROUPS).prop_map(str::to_owned), name(),].boxed()
}

prop_compose! {
    fn resource_ref()(
        api in api_group(),
        kind in prop_oneof![
            select(registry::ALL).prop_map(|k| k.kind.to_owned()),
            name(),
        ],
        namespace in option::of(name()),
        name in name(),
    ) -> ResourceRef {
        ResourceRef::new(api, kind, namespace, name)
    }
}

prop_compose! {
    /// A timestamp from a random UNIX time in microseconds (1900 to 2100),
    /// formatted with a random offset and read back through `FromStr`.
    fn timestamp()(
        micros in -2_208_988_800_000_000_i64..4_102_444_800_000_000,
        whole_seconds in any::<bool>(),
        offset_minutes in prop_oneof![Just(0), -12 * 60..=14 * 60_i32],
        zulu in any::<bool>(),
    ) -> Timestamp {
        let micros = if whole_seconds { micros - micros.rem_euclid(1_000_000) } else { micros };
        let utc = DateTime::from_timestamp_micros(micros).unwrap();
        let offset = FixedOffset::east_opt(offset_minutes * 60).unwrap();
        let local = utc.with_timezone(&offset);
        let fraction = if whole_seconds { "" } else { "%.6f" };
        let zone = if zulu && offset_minutes == 0 { "Z" } else { "%:z" };
        let text = local.format(&format!("%Y-%m-%dT%H:%M:%S{fraction}{zone}")).to_string();
        let timestamp: Timestamp = text.parse().unwrap();
        assert_eq!(timestamp.as_datetime().timestamp_micros(), micros, "{text}");
        timestamp
    }
}

prop_compose! {
    /// Metadata of a namespaced (namespace set) or global (no namespace) object.
    fn metadata(namespaced: bool)(
        name in name(),
        namespace in if namespaced { name().prop_map(Some).boxed() } else { Just(None).boxed() },
        labels in labels(),
        inherit_labels in any::<bool>(),
        finalizers in vec(finalizer(), 0..3),
        uid in option::of(regex("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|.{0,8}")),
        (created, modified, deleted) in (
            option::of(timestamp()),
            option::of(timestamp()),
            option::of(timestamp()),
        ),
        owners in vec(resource_ref(), 0..3),
        resource_version in option::of(regex("[0-9]{1,8}")),
    ) -> Metadata {
        Metadata {
            name,
            namespace,
            labels,
            inherit_labels,
            finalizers,
            uid,
            created,
            modified,
            deleted,
            owners,
            resource_version,
        }
    }
}

prop_compose! {
    fn reason()(code in select(REASON_CODES.to_vec()), message in text()) -> Reason {
        Reason::new(code, message)
    }
}

fn metrics_reasons() -> impl Strategy<Value = IndexMap<String, Reason>> {
    vec((name(), reason()), 0..3).prop_map(|pairs| pairs.into_iter().collect())
}

// ---------------------------------------------------------------------------
// Numbers and URLs
// ---------------------------------------------------------------------------

/// Any finite float: arbitrary bit patterns (normal, subnormal, zero, either
/// sign) as well as short decimals.
fn finite_f64() -> BoxedStrategy<f64> {
    use proptest::num::f64 as float;
    prop_oneof![
        (float::NORMAL | float::SUBNORMAL | float::ZERO | float::POSITIVE | float::NEGATIVE),
        (-1_000_000_i64..1_000_000, 0_u32..4)
            .prop_map(|(n, scale)| n as f64 / 10_f64.powi(scale as i32)),
    ]
    .prop_filter("finite", |x| x.is_finite())
    .boxed()
}

/// An absolute `http(s)://host[:port][/path]` URL.
fn url() -> BoxedStrategy<String> {
    regex("https?://[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?(:[0-9]{1,5})?(/[A-Za-z0-9_.~-]{0,8}){0,3}")
}

// ---------------------------------------------------------------------------
// Constraints
// ---------------------------------------------------------------------------

/// A separator between tokens; `""` only where a symbol ends the token.
fn blank() -> BoxedStrategy<&'static str> {
    select(vec![" ", "  ", "\t", " \t "]).boxed()
}

fn maybe_blank() -> BoxedStrategy<&'static str> {
    select(vec!["", " ", "\t"]).boxed()
}

/// Joins a key, an operator spelling and its operand, spacing words apart.
fn join_operator(key: &str, operator: &str, operand: &str, seps: [&str; 4]) -> String {
    let [lead, before, inner, after] = seps;
    let symbolic = operator.starts_with(['=', '!', '<', '>']);
    let before = if symbolic || !before.is_empty() {
        before
    } else {
        " "
    };
    let after = if symbolic || !after.is_empty() || operand.starts_with('(') {
        after
    } else {
        " "
    };
    let operator = operator.replace(' ', inner);
    format!("{lead}{key}{before}{operator}{after}{operand}{lead}")
}

prop_compose! {
    /// A valid label constraint, in every spelling of every operator.
    fn label_constraint()(
        key in label_key(),
        operator in select(vec!["=", "==", "is", "!=", "is not", "in", "not in"]),
        values in vec(label_value(), 1..4),
        trailing_commas in 0_usize..3,
        seps in [maybe_blank(), maybe_blank(), blank(), maybe_blank()],
        list_sep in maybe_blank(),
    ) -> LabelConstraint {
        let operand = if operator.ends_with("in") {
            let mut list = format!("({list_sep}{}", values.join(&format!("{list_sep},{list_sep}")));
            list.push_str(&",".repeat(trailing_commas));
            list.push_str(list_sep);
            list.push(')');
            list
        } else {
            values[0].clone()
        };
        let text = join_operator(&key, operator, &operand, seps);
        let constraint: LabelConstraint = text.parse().unwrap_or_else(|err| panic!("{text:?}: {err}"));
        assert_eq!(constraint.as_str(), text);
        constraint
    }
}

const METRIC_OPERATORS: &[&str] = &[
    "==",
    "=",
    "is",
    "!=",
    "is not",
    ">",
    "gt",
    "greater than",
    ">=",
    "=>",
    "gte",
    "greater than or equal",
    "<",
    "lt",
    "lesser than",
    "<=",
    "=<",
    "lte",
    "lesser than or equal",
];

prop_compose! {
    /// A valid metric constraint: a label key, an operator in any spelling and
    /// a non-negative finite number (`3`, `0.5`, `1e3`, ...).
    fn metric_constraint()(
        metric in label_key(),
        operator in select(METRIC_OPERATORS),
        value in regex("[0-9]{1,4}(\\.[0-9]{1,4})?([eE][0-9]{1,2})?"),
        seps in [maybe_blank(), maybe_blank(), blank(), maybe_blank()],
    ) -> MetricConstraint {
        let text = join_operator(&metric, operator, &value, seps);
        let constraint: MetricConstraint = text.parse().unwrap_or_else(|err| panic!("{text:?}: {err}"));
        assert_eq!(constraint.as_str(), text);
        assert_eq!(constraint.value(), value.parse::<f64>().unwrap());
        constraint
    }
}

fn label_constraints() -> impl Strategy<Value = Option<Vec<LabelConstraint>>> {
    option::of(vec(label_constraint(), 0..3))
}

fn metric_constraints() -> impl Strategy<Value = Option<Vec<MetricConstraint>>> {
    option::of(vec(metric_constraint(), 0..3))
}

// ---------------------------------------------------------------------------
// Opaque JSON
// ---------------------------------------------------------------------------

fn json_key() -> BoxedStrategy<String> {
    prop_oneof![3 => regex("[A-Za-z_][A-Za-z0-9_.-]{0,8}"), 1 => text()].boxed()
}

/// Small JSON without floats: null, booleans, integers, strings, arrays and objects.
fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((json_key(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
    .boxed()
}

fn json_object() -> BoxedStrategy<Map<String, Value>> {
    vec((json_key(), json_value()), 0..4)
        .prop_map(|pairs| pairs.into_iter().collect())
        .boxed()
}

prop_compose! {
    /// A Kubernetes resource with apiVersion, kind and metadata.name, plus
    /// arbitrary other fields.
    fn manifest_resource()(
        extra in json_object(),
        extra_metadata in json_object(),
        api_version in prop_oneof![
            select(vec!["v1", "apps/v1", "batch/v1", "networking.k8s.io/v1"]).prop_map(str::to_owned),
            regex("[a-z]{1,6}(\\.[a-z]{1,6})?/v[0-9](alpha[0-9]|beta[0-9])?"),
        ],
        kind in regex("[A-Z][A-Za-z]{0,12}"),
        name in name(),
        namespace in option::of(name()),
    ) -> ManifestResource {
        let mut metadata = extra_metadata;
        metadata.insert("name".into(), name.into());
        if let Some(namespace) = namespace {
            metadata.insert("namespace".into(), namespace.into());
        }
        let mut resource = extra;
        resource.insert("apiVersion".into(), api_version.into());
        resource.insert("kind".into(), kind.into());
        resource.insert("metadata".into(), metadata.into());
        resource
    }
}

/// An observed field: `null` leaves, dictionaries, and lists ending with a
/// valid list control dictionary.
fn observed_value() -> BoxedStrategy<Value> {
    Just(Value::Null)
        .prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                vec((regex("[a-z][A-Za-z]{0,8}"), inner.clone()), 0..3)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
                (vec(inner, 0..3), any::<usize>(), any::<bool>(), 0_usize..3).prop_map(
                    |(mut items, min, unlimited, extra)| {
                        let min = min % (items.len() + 1);
                        let max = if unlimited { 0 } else { items.len() + extra };
                        items.push(json!({
                            "observer_schema_list_min_length": min,
                            "observer_schema_list_max_length": max,
                        }));
                        Value::Array(items)
                    }
                ),
            ]
        })
        .boxed()
}

fn observed_dict() -> BoxedStrategy<Map<String, Value>> {
    vec((regex("[a-z][A-Za-z]{0,8}"), observed_value()), 0..3)
        .prop_map(|pairs| pairs.into_iter().collect())
        .boxed()
}

/// A valid observer schema entry for `resource`.
fn observer_entry(resource: &ManifestResource) -> BoxedStrategy<ManifestResource> {
    let identity = ["apiVersion", "kind"].map(|key| resource[key].clone());
    let name = resource["metadata"]["name"].clone();
    (observed_dict(), any::<bool>(), option::of(observed_dict()))
        .prop_map(move |(observed, namespace, labels)| {
            let mut metadata = Map::new();
            metadata.insert("name".into(), name.clone());
            if namespace {
                metadata.insert("namespace".into(), Value::Null);
            }
            if let Some(labels) = labels {
                metadata.insert("labels".into(), labels.into());
            }
            let mut entry = observed;
            entry.insert("apiVersion".into(), identity[0].clone());
            entry.insert("kind".into(), identity[1].clone());
            entry.insert("metadata".into(), metadata.into());
            entry
        })
        .boxed()
}

/// A non-empty manifest and an observer schema (empty, or valid entries
/// referring to resources of the manifest).
fn manifest_and_observer_schema() -> BoxedStrategy<(Vec<ManifestResource>, Vec<ManifestResource>)> {
    vec(manifest_resource(), 1..4)
        .prop_flat_map(|manifest| {
            let entries: Vec<_> = manifest.iter().map(observer_entry).collect();
            let schema = prop_oneof![
                Just(Vec::new()).boxed(),
                vec(select(entries).prop_flat_map(|entry| entry), 1..3).boxed(),
            ];
            (Just(manifest), schema)
        })
        .boxed()
}

prop_compose! {
    /// A TOSCA template with `tosca_definitions_version` and a
    /// `topology_template` mapping (with `outputs.kubeconfig` for clusters).
    fn tosca_template(for_cluster: bool)(
        version in prop_oneof![Just("tosca_simple_yaml_1_0".to_owned()), text()],
        extra in json_object(),
        mut topology in json_object(),
        mut outputs in json_object(),
        kubeconfig in json_value(),
    ) -> Map<String, Value> {
        if for_cluster {
            outputs.insert("kubeconfig".into(), kubeconfig);
            topology.insert("outputs".into(), outputs.into());
        }
        let mut template = extra;
        template.insert("tosca_definitions_version".into(), version.into());
        template.insert("topology_template".into(), topology.into());
        template
    }
}

fn application_tosca() -> BoxedStrategy<Tosca> {
    prop_oneof![
        Just(Tosca::Template(Map::new())),
        Just(Tosca::Url(String::new())),
        tosca_template(false).prop_map(Tosca::Template),
        (url(), select(vec![".yaml", ".yml"])).prop_map(|(url, ext)| Tosca::Url(url + ext)),
    ]
    .boxed()
}

prop_compose! {
    /// A kubeconfig with exactly one context, user and cluster.
    fn kubeconfig()(
        context in name(),
        cluster in name(),
        user in name(),
        context_names_user in any::<bool>(),
        server in url(),
        user_body in json_object(),
        cluster_extra in json_object(),
        extra in json_object(),
    ) -> Map<String, Value> {
        let mut cluster_body = cluster_extra;
        cluster_body.insert("server".into(), server.into());
        let mut context_body = Map::new();
        context_body.insert("cluster".into(), cluster.clone().into());
        if context_names_user {
            context_body.insert("user".into(), user.clone().into());
        }
        let mut config = extra;
        config.insert("apiVersion".into(), "v1".into());
        config.insert("kind".into(), "Config".into());
        config.insert("current-context".into(), context.clone().into());
        config.insert("clusters".into(), json!([{"name": cluster, "cluster": cluster_body}]));
        config.insert("users".into(), json!([{"name": user, "user": user_body}]));
        config.insert("contexts".into(), json!([{"name": context, "context": context_body}]));
        config
    }
}

// ---------------------------------------------------------------------------
// core
// ---------------------------------------------------------------------------

prop_compose! {
    fn role_rule()(
        api in prop_oneof![Just(String::new()), api_group()],
        resources in vec(
            prop_oneof![
                Just(String::new()),
                select(registry::ALL).prop_map(|k| k.plural.to_owned()),
                (select(registry::ALL), select(vec!["status", "binding", "complete", "shutdown", "retry"]))
                    .prop_map(|(k, op)| format!("{}/{op}", k.plural)),
            ],
            0..4,
        ),
        namespaces in vec(prop_oneof![Just(String::new()), name()], 0..3),
        verbs in vec(select(VERBS.to_vec()), 0..7),
    ) -> RoleRule {
        RoleRule { api, resources, namespaces, verbs }
    }
}

prop_compose! {
    fn role()(metadata in metadata(false), rules in vec(role_rule(), 0..4)) -> Role {
        Role::new(metadata, rules)
    }
}

prop_compose! {
    fn role_binding()(
        metadata in metadata(false),
        users in vec(prop_oneof![name(), text()], 0..4),
        roles in vec(name(), 0..4),
    ) -> RoleBinding {
        RoleBinding::new(metadata, users, roles)
    }
}

prop_compose! {
    /// A metric spec with `min < max`, both finite.
    fn metric_spec()(
        allowed_values in vec(any::<i64>(), 0..4),
        bounds in (finite_f64(), finite_f64()).prop_filter("min < max", |(a, b)| a != b),
        provider in name(),
        metric in prop_oneof![name(), text()],
    ) -> MetricSpec {
        let (a, b) = bounds;
        MetricSpec {
            allowed_values,
            min: a.min(b),
            max: a.max(b),
            provider: MetricSpecProvider { name: provider, metric },
        }
    }
}

fn metrics_provider_spec() -> BoxedStrategy<MetricsProviderSpec> {
    prop_oneof![
        url().prop_map(|url| MetricsProviderSpec::Prometheus(PrometheusSpec { url })),
        (url(), text(), text(), text()).prop_map(|(url, token, org, bucket)| {
            MetricsProviderSpec::Influx(InfluxSpec {
                url,
                token,
                org,
                bucket,
            })
        }),
        (text(), text(), name(), url()).prop_map(
            |(comparison_column, value_column, table, url)| {
                MetricsProviderSpec::Kafka(KafkaSpec {
                    comparison_column,
                    value_column,
                    table,
                    url,
                })
            }
        ),
        vec((name(), finite_f64()), 0..4).prop_map(|pairs| {
            MetricsProviderSpec::Static(StaticSpec {
                metrics: pairs.into_iter().collect(),
            })
        }),
    ]
    .boxed()
}

prop_compose! {
    /// A reference to a metric; global referrers may not use namespaced metrics.
    fn metric_ref(allow_namespaced: bool)(
        name in name(),
        weight in finite_f64(),
        namespaced in if allow_namespaced { any::<bool>().boxed() } else { Just(false).boxed() },
    ) -> MetricRef {
        MetricRef { name, weight, namespaced }
    }
}

// ---------------------------------------------------------------------------
// kubernetes
// ---------------------------------------------------------------------------

prop_compose! {
    fn application_spec_parts()(
        (manifest, observer_schema) in prop_oneof![
            3 => manifest_and_observer_schema(),
            1 => Just((Vec::new(), Vec::new())),
        ],
        tosca in application_tosca(),
        csar in option::of(
            (url(), select(vec![".csar", ".zip"])).prop_map(|(url, ext)| url + ext),
        ),
    ) -> (Vec<ManifestResource>, Vec<ManifestResource>, Tosca, Option<String>) {
        (manifest, observer_schema, tosca, csar)
    }
}

prop_compose! {
    fn application_spec()(
        (manifest, observer_schema, tosca, csar) in application_spec_parts().prop_filter(
            "an application needs a manifest, a TOSCA template or a CSAR",
            |(manifest, _, tosca, csar)| !manifest.is_empty() || !tosca.is_empty() || csar.is_some(),
        ),
        constraints in (label_constraints(), vec(regex("[a-z]{1,8}\\.[a-z]{1,8}(\\.[a-z]{1,4})?"), 0..3), metric_constraints(), any::<bool>())
            .prop_map(|(labels, custom_resources, metrics, migration)| Constraints {
                cluster: ClusterConstraints { labels, custom_resources, metrics },
                migration,
            }),
        hooks in vec(select(HOOKS).prop_map(str::to_owned), 0..3),
        shutdown_grace_time in option::of(any::<i64>()),
        shutdown_failure_strategy in option::of(select(SHUTDOWN_FAILURE_STRATEGIES).prop_map(str::to_owned)),
        shutdown_retry_count in option::of(any::<i64>()),
        (backoff, backoff_delay, backoff_limit) in (any::<i64>(), any::<i64>(), any::<i64>()),
        storage_migration in prop_oneof![Just("none".to_owned()), text()],
        auto_cluster_create in any::<bool>(),
    ) -> ApplicationSpec {
        ApplicationSpec {
            manifest,
            tosca,
            csar,
            observer_schema,
            constraints,
            hooks,
            shutdown_grace_time,
            shutdown_failure_strategy,
            shutdown_retry_count,
            backoff,
            backoff_delay,
            backoff_limit,
            storage_migration,
            auto_cluster_create,
        }
    }
}

fn hook_secret() -> impl Strategy<Value = Option<String>> {
    option::of(prop_oneof![regex("[A-Za-z0-9+/=\\n-]{0,40}"), text()])
}

prop_compose! {
    fn application_status()(
        (reason, state, container_health) in (
            option::of(reason()),
            select(ApplicationState::ALL.to_vec()),
            (any::<i64>(), any::<i64>(), any::<i64>(), any::<i64>()).prop_map(
                |(desired_pods, running_pods, completed_pods, failed_pods)| ContainerHealth {
                    desired_pods, running_pods, completed_pods, failed_pods,
                },
            ),
        ),
        (kube_controller_triggered, scheduled, scheduled_retry, shutdown_grace_period) in (
            option::of(timestamp()),
            option::of(timestamp()),
            option::of(timestamp()),
            option::of(timestamp()),
        ),
        (scheduled_to, running_on, retries) in (
            option::of(resource_ref()),
            option::of(resource_ref()),
            option::of(any::<i64>()),
        ),
        services in vec((name(), regex("[a-z0-9.-]{1,12}:[0-9]{1,5}")), 0..3)
            .prop_map(|pairs| pairs.into_iter().collect::<IndexMap<_, _>>()),
        (mangled_observer_schema, last_observed_manifest, last_applied_manifest) in (
            vec(json_object(), 0..3),
            vec(json_object(), 0..3),
            vec(manifest_resource(), 0..3),
        ),
        (complete_token, complete_cert, complete_key) in (hook_secret(), hook_secret(), hook_secret()),
        (shutdown_token, shutdown_cert, shutdown_key) in (hook_secret(), hook_secret(), hook_secret()),
        auto_cluster_create_started in option::of(name()),
        (migration_retries, migration_timeout) in (any::<i64>(), any::<i64>()),
    ) -> ApplicationStatus {
        ApplicationStatus {
            reason,
            state,
            container_health,
            kube_controller_triggered,
            scheduled,
            scheduled_to,
            running_on,
            retries,
            scheduled_retry,
            services,
            mangled_observer_schema,
            last_observed_manifest,
            last_applied_manifest,
            complete_token,
            complete_cert,
            complete_key,
            shutdown_token,
            shutdown_cert,
            shutdown_key,
            shutdown_grace_period,
            auto_cluster_create_started,
            migration_retries,
            migration_timeout,
        }
    }
}

prop_compose! {
    fn application()(
        metadata in metadata(true),
        spec in application_spec(),
        status in application_status(),
    ) -> Application {
        Application { status, ..Application::new(metadata, spec) }
    }
}

prop_compose! {
    fn cluster_spec()(
        (kubeconfig, tosca) in (
            prop_oneof![Just(Map::new()).boxed(), kubeconfig().boxed()],
            prop_oneof![Just(Map::new()).boxed(), tosca_template(true).boxed()],
        ).prop_filter(
            "a cluster needs a kubeconfig or a TOSCA template",
            |(kubeconfig, tosca)| !kubeconfig.is_empty() || !tosca.is_empty(),
        ),
        custom_resources in vec(regex("[a-z]{1,8}\\.[a-z]{1,8}(\\.[a-z]{1,4})?"), 0..3),
        (labels, metrics) in (label_constraints(), metric_constraints()),
        metric_refs in vec(metric_ref(true), 0..3),
        inherit_metrics in any::<bool>(),
        (backoff, backoff_delay, backoff_limit) in (any::<i64>(), any::<i64>(), any::<i64>()),
        auto_generated in any::<bool>(),
    ) -> ClusterSpec {
        ClusterSpec {
            kubeconfig,
            tosca,
            custom_resources,
            constraints: ClusterCloudConstraints { cloud: CloudConstraints { labels, metrics } },
            metrics: metric_refs,
            inherit_metrics,
            backoff,
            backoff_delay,
            backoff_limit,
            auto_generated,
        }
    }
}

prop_compose! {
    fn cluster_node()(
        name in name(),
        conditions in option::of(vec(
            (text(), text(), select(vec!["True", "False", "Unknown"]), select(vec!["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"]))
                .prop_map(|(message, reason, status, condition_type)| ClusterNodeCondition {
                    message,
                    reason,
                    status: status.to_owned(),
                    condition_type: condition_type.to_owned(),
                }),
            0..3,
        )),
    ) -> ClusterNode {
        ClusterNode {
            api: "kubernetes".to_owned(),
            kind: "ClusterNode".to_owned(),
            metadata: ClusterNodeMetadata { name },
            status: conditions.map(|conditions| ClusterNodeStatus { conditions }),
        }
    }
}

prop_compose! {
    fn cluster_status()(
        (reason, kube_controller_triggered, state) in (
            option::of(reason()),
            option::of(timestamp()),
            select(ClusterState::ALL.to_vec()),
        ),
        metrics_reasons in metrics_reasons(),
        last_applied_tosca in prop_oneof![Just(Map::new()).boxed(), tosca_template(true).boxed(), json_object()],
        nodes in vec(cluster_node(), 0..3),
        cluster_id in option::of(prop_oneof![regex("[0-9a-f-]{8,36}"), text()]),
        (scheduled, scheduled_to, running_on) in (
            option::of(timestamp()),
            option::of(resource_ref()),
            option::of(resource_ref()),
        ),
        retries in any::<i64>(),
    ) -> ClusterStatus {
        ClusterStatus {
            reason,
            kube_controller_triggered,
            state,
            metrics_reasons,
            last_applied_tosca,
            nodes,
            cluster_id,
            scheduled,
            scheduled_to,
            running_on,
            retries,
        }
    }
}

prop_compose! {
    fn cluster()(
        metadata in metadata(true),
        spec in cluster_spec(),
        status in cluster_status(),
    ) -> Cluster {
        Cluster { status, ..Cluster::new(metadata, spec) }
    }
}

// ---------------------------------------------------------------------------
// infrastructure
// ---------------------------------------------------------------------------

prop_compose! {
    /// An IM endpoint with a token, or a username and a password (or all three).
    fn infrastructure_provider_spec()(
        url in url(),
        (token, username, password) in prop_oneof![
            (text(), option::of(text()), option::of(text()))
                .prop_map(|(token, username, password)| (Some(token), username, password)),
            (text(), text()).prop_map(|(username, password)| (None, Some(username), Some(password))),
        ],
    ) -> InfrastructureProviderSpec {
        InfrastructureProviderSpec::Im(ImSpec { url, username, password, token })
    }
}

prop_compose! {
    /// An OpenStack cloud; a global cloud references only global objects.
    fn cloud_spec(global: bool)(
        url in url(),
        (username, password, domain_name, user_comment) in (
            text(),
            text(),
            prop_oneof![Just("Default".to_owned()), text()],
            option::of(text()),
        ),
        (project_name, domain_id, project_comment) in (
            text(),
            prop_oneof![Just("default".to_owned()), text()],
            option::of(text()),
        ),
        version in prop_oneof![Just("3".to_owned()), text()],
        metrics in vec(metric_ref(!global), 0..3),
        provider in name(),
        namespaced in if global { Just(false).boxed() } else { any::<bool>().boxed() },
    ) -> CloudSpec {
        CloudSpec::Openstack(OpenstackSpec {
            url,
            auth: OpenstackAuthMethod::Password(PasswordAuth {
                version,
                user: OpenstackUser { username, password, domain_name, comment: user_comment },
                project: OpenstackProject {
                    name: project_name,
                    domain_id,
                    comment: project_comment,
                },
            }),
            metrics,
            infrastructure_provider: InfrastructureProviderRef { name: provider, namespaced },
        })
    }
}

prop_compose! {
    fn cloud_status()(
        state in select(vec![CloudState::Online, CloudState::FailingMetrics]),
        metrics_reasons in metrics_reasons(),
    ) -> CloudStatus {
        CloudStatus { state, metrics_reasons }
    }
}

prop_compose! {
    fn global_infrastructure_provider()(
        metadata in metadata(false),
        spec in infrastructure_provider_spec(),
    ) -> GlobalInfrastructureProvider {
        GlobalInfrastructureProvider::new(metadata, spec)
    }
}

prop_compose! {
    fn infrastructure_provider()(
        metadata in metadata(true),
        spec in infrastructure_provider_spec(),
    ) -> InfrastructureProvider {
        InfrastructureProvider::new(metadata, spec)
    }
}

prop_compose! {
    fn global_cloud()(
        metadata in metadata(false),
        spec in cloud_spec(true),
        status in cloud_status(),
    ) -> GlobalCloud {
        GlobalCloud { status, ..GlobalCloud::new(metadata, spec) }
    }
}

prop_compose! {
    fn cloud()(
        metadata in metadata(true),
        spec in cloud_spec(false),
        status in cloud_status(),
    ) -> Cloud {
        Cloud { status, ..Cloud::new(metadata, spec) }
    }
}

// ---------------------------------------------------------------------------
// openstack
// ---------------------------------------------------------------------------

fn auth_method() -> BoxedStrategy<AuthMethod> {
    prop_oneof![
        (
            text(),
            text(),
            option::of(text()),
            text(),
            option::of(text())
        )
            .prop_map(
                |(user_id, password, user_comment, project_id, project_comment)| {
                    AuthMethod::Password(ProjectPasswordAuth {
                        user: UserReference {
                            id: user_id,
                            password,
                            comment: user_comment,
                        },
                        project: ProjectReference {
                            id: project_id,
                            comment: project_comment,
                        },
                    })
                }
            ),
        (text(), text()).prop_map(|(id, secret)| {
            AuthMethod::ApplicationCredential(ApplicationCredential { id, secret })
        }),
    ]
    .boxed()
}

prop_compose! {
    fn project()(
        metadata in metadata(true),
        url in url(),
        auth in auth_method(),
        template in prop_oneof![regex("[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), text()],
        metrics in vec(metric_ref(true), 0..3),
        state in select(vec![ProjectState::Online, ProjectState::FailingMetrics]),
        metrics_reasons in metrics_reasons(),
    ) -> Project {
        let spec = ProjectSpec { url, auth, template, metrics };
        Project { status: ProjectStatus { state, metrics_reasons }, ..Project::new(metadata, spec) }
    }
}

fn addresses() -> impl Strategy<Value = Option<Vec<String>>> {
    option::of(vec(regex("[0-9]{1,3}(\\.[0-9]{1,3}){3}"), 0..3))
}

prop_compose! {
    fn magnum_cluster_status()(
        (reason, state, project, template) in (
            option::of(reason()),
            select(MAGNUM_CLUSTER_STATES.to_vec()),
            option::of(resource_ref()),
            option::of(text()),
        ),
        (cluster_id, node_count, api_address) in (
            option::of(text()),
            option::of(any::<i64>()),
            option::of(url()),
        ),
        (master_addresses, node_addresses, cluster) in (
            addresses(),
            addresses(),
            option::of(resource_ref()),
        ),
    ) -> MagnumClusterStatus {
        MagnumClusterStatus {
            reason,
            state,
            project,
            template,
            cluster_id,
            node_count,
            api_address,
            master_addresses,
            node_addresses,
            cluster,
        }
    }
}

prop_compose! {
    fn magnum_cluster()(
        metadata in metadata(true),
        master_count in option::of(1..=i64::MAX),
        node_count in option::of(1..=i64::MAX),
        metrics in vec(metric_ref(true), 0..3),
        constraints in option::of(option::of(label_constraints()).prop_map(|project| {
            MagnumClusterConstraints { project: project.map(|labels| ProjectConstraints { labels }) }
        })),
        status in magnum_cluster_status(),
    ) -> MagnumCluster {
        let spec = MagnumClusterSpec { master_count, node_count, metrics, constraints };
        MagnumCluster { status, ..MagnumCluster::new(metadata, spec) }
    }
}

prop_compose! {
    fn lease()(
        metadata in metadata(true),
        holder in option::of(prop_oneof![name(), regex("(?s).{1,12}")]),
        acquire_time in option::of(timestamp()),
        renew_time in option::of(timestamp()),
        lease_duration_ms in 1..=u32::MAX,
        transitions in any::<u32>(),
    ) -> Lease {
        let spec = LeaseSpec { holder, acquire_time, renew_time, lease_duration_ms, transitions };
        Lease::new(metadata, spec)
    }
}

// ---------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------

prop_compose! {
    fn cluster_binding()(cluster in resource_ref()) -> ClusterBinding {
        ClusterBinding::new(cluster)
    }
}

prop_compose! {
    fn complete()(token in option::of(prop_oneof![regex("[A-Za-z0-9_-]{1,32}"), text()])) -> Complete {
        Complete { token, ..Complete::new("") }
    }
}

prop_compose! {
    fn shutdown()(token in option::of(prop_oneof![regex("[A-Za-z0-9_-]{1,32}"), text()])) -> Shutdown {
        Shutdown { token, ..Shutdown::new("") }
    }
}

prop_compose! {
    fn cloud_binding()(cloud in resource_ref()) -> CloudBinding {
        CloudBinding::new(cloud)
    }
}

prop_compose! {
    fn magnum_cluster_binding()(
        project in resource_ref(),
        template in prop_oneof![name(), text()],
    ) -> MagnumClusterBinding {
        MagnumClusterBinding::new(project, template)
    }
}

// ---------------------------------------------------------------------------
// One test per kind and per body
// ---------------------------------------------------------------------------

macro_rules! round_trip_tests {
    (
        kinds { $($kind_test:ident: $kind_strategy:expr;)* }
        bodies { $($body_test:ident: $body_strategy:expr => $info:expr;)* }
    ) => {
        proptest! {
            #![proptest_config(ProptestConfig {
                failure_persistence: None,
                ..ProptestConfig::with_cases(64)
            })]

            $(
                #[test]
                fn $kind_test(obj in $kind_strategy) {
                    check(obj);
                }
            )*

            $(
                #[test]
                fn $body_test(body in $body_strategy) {
                    check_body(body, &$info);
                }
            )*
        }
    };
}

round_trip_tests! {
    kinds {
        role_round_trips: role();
        role_binding_round_trips: role_binding();
        global_metric_round_trips:
            (metadata(false), metric_spec()).prop_map(|(m, s)| GlobalMetric::new(m, s));
        metric_round_trips: (metadata(true), metric_spec()).prop_map(|(m, s)| Metric::new(m, s));
        global_metrics_provider_round_trips: (metadata(false), metrics_provider_spec())
            .prop_map(|(m, s)| GlobalMetricsProvider::new(m, s));
        metrics_provider_round_trips: (metadata(true), metrics_provider_spec())
            .prop_map(|(m, s)| MetricsProvider::new(m, s));
        application_round_trips: application();
        cluster_round_trips: cluster();
        global_infrastructure_provider_round_trips: global_infrastructure_provider();
        infrastructure_provider_round_trips: infrastructure_provider();
        global_cloud_round_trips: global_cloud();
        cloud_round_trips: cloud();
        project_round_trips: project();
        magnum_cluster_round_trips: magnum_cluster();
        lease_round_trips: lease();
    }
    bodies {
        cluster_binding_round_trips: cluster_binding() => CLUSTER_BINDING;
        complete_round_trips: complete() => COMPLETE;
        shutdown_round_trips: shutdown() => SHUTDOWN;
        cloud_binding_round_trips: cloud_binding() => CLOUD_BINDING;
        magnum_cluster_binding_round_trips: magnum_cluster_binding() => MAGNUM_CLUSTER_BINDING;
    }
}
