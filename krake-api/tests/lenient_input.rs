//! Numbers, integers and booleans written as strings, as Krake's API
//! (marshmallow 3) accepts them and Krake's own krakectl sends them
//! (`krakectl core globalmetric create m --min 0 --max 1` sends
//! `"min": "0"`), over HTTP for every kind of the registry.
//!
//! The fields are not listed by hand: every kind's JSON Schema is walked
//! (through `$ref`, nullable options, arrays, maps and the variants of the
//! tagged containers) for every `number`, `integer` and `boolean` field.
//! Each is then found in valid objects of the kind (Krake's captured
//! objects, and a few written here), or added to them where its parent
//! exists, sent as a string in a create, an update and, for status fields,
//! a `/status` update, and must be stored (and answered) with its canonical
//! JSON type and value. A field of the schema that no object holds fails
//! the test, so a new field cannot go untested.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use krake_api::testing::TestServer;
use krake_data::registry::{self, KindInfo, Subresource};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

// --- the schema walk ---

/// One step from a schema to a field inside it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// A property (or a tagged container's content key).
    Key(String),
    /// Every item of an array.
    Items,
    /// Every value of a map.
    Values,
}

/// A number, integer or boolean field of a kind: where, and which type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Field {
    steps: Vec<Step>,
    /// `number`, `integer` or `boolean`.
    kind: String,
}

impl Field {
    fn name(&self) -> String {
        self.steps
            .iter()
            .map(|step| match step {
                Step::Key(key) => key.clone(),
                Step::Items => "[]".to_owned(),
                Step::Values => "{}".to_owned(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }

    fn is_status(&self) -> bool {
        self.steps.first() == Some(&Step::Key("status".to_owned()))
    }
}

/// Every number, integer and boolean field reachable from `schema`.
fn scalar_fields(schemas: &Map<String, Value>, schema: &Value) -> Vec<Field> {
    fn walk(
        schemas: &Map<String, Value>,
        schema: &Value,
        steps: &mut Vec<Step>,
        stack: &mut Vec<String>,
        out: &mut Vec<Field>,
    ) {
        let Some(object) = schema.as_object() else {
            return;
        };
        if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap().to_owned();
            if stack.contains(&name) {
                return;
            }
            let target = schemas
                .get(&name)
                .unwrap_or_else(|| panic!("no schema {name}"));
            stack.push(name);
            walk(schemas, target, steps, stack, out);
            stack.pop();
        }
        for combinator in ["allOf", "anyOf", "oneOf"] {
            for sub in object
                .get(combinator)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                walk(schemas, sub, steps, stack, out);
            }
        }
        let types: Vec<&str> = match object.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        for t in types {
            if matches!(t, "number" | "integer" | "boolean") {
                out.push(Field {
                    steps: steps.clone(),
                    kind: t.to_owned(),
                });
            }
        }
        if let Some(properties) = object.get("properties").and_then(Value::as_object) {
            for (name, sub) in properties {
                // A tagged container's `type` is a constant string.
                if sub.get("const").is_some() {
                    continue;
                }
                steps.push(Step::Key(name.clone()));
                walk(schemas, sub, steps, stack, out);
                steps.pop();
            }
        }
        if let Some(items) = object.get("items").filter(|i| i.is_object()) {
            steps.push(Step::Items);
            walk(schemas, items, steps, stack, out);
            steps.pop();
        }
        // `additionalProperties: true` is free-form JSON: nothing typed inside.
        if let Some(values) = object.get("additionalProperties").filter(|v| v.is_object()) {
            steps.push(Step::Values);
            walk(schemas, values, steps, stack, out);
            steps.pop();
        }
    }
    let mut out = Vec::new();
    walk(schemas, schema, &mut Vec::new(), &mut Vec::new(), &mut out);
    out.sort();
    out.dedup();
    out
}

/// Where `field` is in `object`, as JSON pointers: every array item and map
/// value along the way. A missing (or null) last step whose parent object
/// exists is a place to add the field (`true`).
fn locate(object: &Value, field: &Field) -> Vec<(String, bool)> {
    fn walk(value: &Value, steps: &[Step], pointer: String, out: &mut Vec<(String, bool)>) {
        let Some((step, rest)) = steps.split_first() else {
            if !value.is_null() {
                out.push((pointer, false));
            }
            return;
        };
        match step {
            Step::Key(key) => {
                let Some(map) = value.as_object() else {
                    return;
                };
                let child = format!("{pointer}/{}", escape(key));
                match map.get(key) {
                    Some(next) if !next.is_null() => walk(next, rest, child, out),
                    _ if rest.is_empty() => out.push((child, true)),
                    _ => {}
                }
            }
            Step::Items => {
                for (index, item) in value.as_array().into_iter().flatten().enumerate() {
                    walk(item, rest, format!("{pointer}/{index}"), out);
                }
            }
            Step::Values => {
                for (key, item) in value.as_object().into_iter().flatten() {
                    walk(item, rest, format!("{pointer}/{}", escape(key)), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(object, &field.steps, String::new(), &mut out);
    out
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Sets the value at `pointer`, adding its last key to its parent object.
fn set(object: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let key = key.replace("~1", "/").replace("~0", "~");
    match object.pointer_mut(parent).unwrap() {
        Value::Object(map) => {
            map.insert(key, value);
        }
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        other => panic!("{pointer}: the parent is {other}"),
    }
}

/// The string to send for a field, and the canonical value it must be
/// stored as. `current` is the value of a valid object (or null, for a
/// field being added); `nth` picks among the accepted spellings.
fn as_string(kind: &str, current: &Value, nth: usize) -> (Value, Value) {
    match kind {
        "integer" => {
            let n = current.as_i64().unwrap_or(1);
            let text = match nth % 3 {
                0 => n.to_string(),
                1 => format!(" {n} "),
                _ if n >= 0 => format!("+{n}"),
                _ => n.to_string(),
            };
            (json!(text), json!(n))
        }
        "number" => {
            let n = current.as_f64().unwrap_or(0.5);
            let text = match nth % 2 {
                0 => n.to_string(),
                _ => format!(" {n:e} "),
            };
            (json!(text), json!(n))
        }
        "boolean" => {
            let b = current.as_bool().unwrap_or(true);
            let spellings: &[&str] = if b {
                &["true", "True", "yes", "on", "1", "Y", "t", "TRUE"]
            } else {
                &["false", "False", "no", "off", "0", "N", "f", "FALSE"]
            };
            (json!(spellings[nth % spellings.len()]), json!(b))
        }
        other => panic!("not a scalar kind: {other}"),
    }
}

/// True if `stored` is `expected` with the same JSON type: an integer for
/// an integer, a number for a number, a boolean for a boolean.
fn is_canonical(kind: &str, stored: &Value, expected: &Value) -> bool {
    match kind {
        "integer" => stored.is_i64() && stored.as_i64() == expected.as_i64(),
        "number" => stored.is_number() && stored.as_f64() == expected.as_f64(),
        "boolean" => stored.is_boolean() && stored == expected,
        _ => false,
    }
}

// --- the objects ---

/// Valid objects of every kind: Krake's captured objects, and those the
/// capture lacks.
fn seeds() -> BTreeMap<&'static str, Vec<Value>> {
    let mut seeds: BTreeMap<&'static str, Vec<Value>> = BTreeMap::new();
    for object in krake_testkit::wire::objects() {
        let (_, value) = object.unwrap();
        let (Some(api), Some(kind)) = (value["api"].as_str(), value["kind"].as_str()) else {
            continue;
        };
        if let Some(info) = registry::by_kind(api, kind) {
            seeds.entry(info.kind).or_default().push(value);
        }
    }
    // Objects whose metrics list is empty in the capture: also with one.
    for objects in seeds.values_mut() {
        let with_metrics: Vec<Value> = objects
            .iter()
            .filter(|o| o["spec"]["metrics"].as_array().is_some_and(Vec::is_empty))
            .map(|o| {
                let mut o = o.clone();
                o["spec"]["metrics"] = json!([{"name": "heat", "weight": 1.5, "namespaced": true}]);
                o
            })
            .collect();
        objects.extend(with_metrics);
    }
    // Metrics with allowed values (the captured ones have none).
    for kind in ["GlobalMetric", "Metric"] {
        seeds.entry(kind).or_default().push(json!({
            "api": "core", "kind": kind, "metadata": {"name": "m"},
            "spec": {"allowed_values": [0, 1, 2], "min": 0.0, "max": 2.0,
                     "provider": {"name": "p", "metric": "m"}},
        }));
    }
    // Beyond Krake: not in the capture.
    seeds.entry("Lease").or_default().push(json!({
        "api": "core", "kind": "Lease", "metadata": {"name": "lease"},
        "spec": {"holder": "replica-1", "lease_duration_ms": 15000, "transitions": 2},
    }));
    seeds
}

const NAMESPACE: &str = "lenient";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, body).await
    }

    async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, body).await
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }
}

fn namespace(kind: &KindInfo) -> Option<&'static str> {
    kind.is_namespaced().then_some(NAMESPACE)
}

/// A seed as a create body named `name`.
fn create_body(seed: &Value, name: &str) -> Value {
    let mut body = seed.clone();
    body["metadata"]["name"] = json!(name);
    if let Some(metadata) = body["metadata"].as_object_mut() {
        metadata.remove("namespace");
    }
    body
}

/// What was checked, for the counts at the end.
#[derive(Default)]
struct Tally {
    /// Field name to the number of checks, per kind.
    checked: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Tally {
    fn add(&mut self, kind: &str, field: &Field) {
        *self
            .checked
            .entry(kind.to_owned())
            .or_default()
            .entry(field.name())
            .or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_number_integer_and_boolean_field_accepts_a_string() {
    let server = TestServer::embedded().await;
    let api = Api {
        base: server.url(),
        http: reqwest::Client::new(),
    };
    let schemas = registry::component_schemas();
    let seeds = seeds();
    let mut tally = Tally::default();
    let mut counter = 0usize;
    let mut found_per_kind = BTreeMap::new();

    for kind in registry::ALL {
        let fields = scalar_fields(&schemas, &schemas[kind.kind]);
        found_per_kind.insert(kind.kind, fields.len());
        let kind_seeds = seeds
            .get(kind.kind)
            .unwrap_or_else(|| panic!("no valid object of {}", kind.kind));
        let collection = kind.collection_path(namespace(kind));
        for seed in kind_seeds {
            // The seed itself is valid.
            counter += 1;
            let name = format!("seed-{counter}");
            let (status, answer) = api.post(&collection, &create_body(seed, &name)).await;
            assert_eq!(status, StatusCode::OK, "{} seed: {answer}", kind.kind);

            for field in &fields {
                if field.is_status() {
                    continue;
                }
                for (nth, (pointer, added)) in locate(seed, field).into_iter().enumerate() {
                    counter += 1;
                    let name = format!("field-{counter}");
                    let mut body = create_body(seed, &name);
                    let current = if added {
                        Value::Null
                    } else {
                        seed.pointer(&pointer).unwrap().clone()
                    };
                    let (sent, expected) = as_string(&field.kind, &current, counter + nth);
                    set(&mut body, &pointer, sent.clone());
                    let what = format!("{} {} = {sent}", kind.kind, pointer);

                    // Create.
                    let (status, created) = api.post(&collection, &body).await;
                    assert_eq!(status, StatusCode::OK, "create {what}: {created}");
                    let path = kind.object_path(namespace(kind), &name);
                    for (source, object) in
                        [("answer", &created), ("stored", &api.get(&path).await)]
                    {
                        let stored = object.pointer(&pointer).unwrap_or(&Value::Null);
                        assert!(
                            is_canonical(&field.kind, stored, &expected),
                            "create {what}: {source} {stored}, expected {expected}"
                        );
                    }

                    // Update: the stored object with the field as a string
                    // (and a new label, so that something changes).
                    let mut update = api.get(&path).await;
                    set(&mut update, &pointer, sent.clone());
                    update["metadata"]["labels"]["lenient"] = json!("update");
                    let (status, updated) = api.put(&path, &update).await;
                    assert_eq!(status, StatusCode::OK, "update {what}: {updated}");
                    let stored = api.get(&path).await;
                    assert_eq!(stored["metadata"]["labels"]["lenient"], "update");
                    let value = stored.pointer(&pointer).unwrap_or(&Value::Null);
                    assert!(
                        is_canonical(&field.kind, value, &expected),
                        "update {what}: stored {value}, expected {expected}"
                    );
                    tally.add(kind.kind, field);
                }
            }

            // Status fields, through /status, on the stored object (with the
            // seed's status where it has one).
            if kind.subresource(Subresource::Status).is_none() {
                continue;
            }
            let path = kind.object_path(namespace(kind), &name);
            let mut stored = api.get(&path).await;
            if seed.get("status").is_some_and(Value::is_object) {
                stored["status"] = seed["status"].clone();
            }
            // Each status update changes the version: send none.
            if let Some(metadata) = stored["metadata"].as_object_mut() {
                metadata.remove("resource_version");
            }
            for field in fields.iter().filter(|f| f.is_status()) {
                for (nth, (pointer, added)) in locate(&stored, field).into_iter().enumerate() {
                    counter += 1;
                    let mut body = stored.clone();
                    let current = if added {
                        Value::Null
                    } else {
                        stored.pointer(&pointer).unwrap().clone()
                    };
                    let (sent, expected) = as_string(&field.kind, &current, counter + nth);
                    set(&mut body, &pointer, sent.clone());
                    let what = format!("{} {} = {sent}", kind.kind, pointer);
                    let (status, answer) = api.put(&format!("{path}/status"), &body).await;
                    assert_eq!(status, StatusCode::OK, "status {what}: {answer}");
                    for (source, object) in [("answer", &answer), ("stored", &api.get(&path).await)]
                    {
                        let value = object.pointer(&pointer).unwrap_or(&Value::Null);
                        assert!(
                            is_canonical(&field.kind, value, &expected),
                            "status {what}: {source} {value}, expected {expected}"
                        );
                    }
                    tally.add(kind.kind, field);
                }
            }
        }

        // Every field of the schema was sent as a string at least once.
        let checked = tally.checked.get(kind.kind).cloned().unwrap_or_default();
        for field in &fields {
            assert!(
                checked.contains_key(&field.name()),
                "{}.{} ({}) is in no object of this test: add one that has it",
                kind.kind,
                field.name(),
                field.kind
            );
        }
    }

    // Not vacuous: the walk finds the fields we know of.
    assert_eq!(found_per_kind["GlobalMetric"], 4, "{found_per_kind:?}");
    assert!(found_per_kind["Application"] >= 15, "{found_per_kind:?}");
    assert!(found_per_kind["Cluster"] >= 9, "{found_per_kind:?}");
    for field in ["spec.min", "spec.max", "spec.allowed_values.[]"] {
        assert!(tally.checked["GlobalMetric"].contains_key(field), "{field}");
    }
    assert!(tally.checked["GlobalMetricsProvider"].contains_key("spec.static.metrics.{}"));
    assert!(tally.checked["MagnumCluster"].contains_key("status.node_count"));
    let total: usize = tally.checked.values().flat_map(|f| f.values()).sum();
    assert!(total >= 100, "only {total} checks");
    println!("checked {total} field occurrences: {:?}", tally.checked);

    // The request-only bodies have no such field; if one gains one, it
    // needs a case here.
    for body in registry::BODIES {
        let fields = scalar_fields(&schemas, &schemas[body.kind]);
        assert!(
            fields.is_empty(),
            "{} has number or boolean fields, add a case: {fields:?}",
            body.kind
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_values_get_krakes_422_and_change_nothing() {
    let server = TestServer::embedded().await;
    let api = Api {
        base: server.url(),
        http: reqwest::Client::new(),
    };
    let metric = json!({"metadata": {"name": "heat"}, "spec": {
        "min": "0", "max": "1", "provider": {"name": "p", "metric": "heat"}}});
    let (status, created) = api.post("/core/globalmetrics", &metric).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(
        serde_json::to_string(&created["spec"]).unwrap(),
        r#"{"allowed_values":[],"min":0.0,"max":1.0,"provider":{"name":"p","metric":"heat"}}"#
    );
    let before = api.get("/core/globalmetrics/heat").await;

    let refused = |status: StatusCode, problem: &Value, detail: &str, field: &str| {
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["detail"], detail, "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    };

    // Create: a number, a special number, an integer, a boolean, and one in
    // a tagged container, each with Krake's detail and path.
    let mut bad = metric.clone();
    bad["metadata"]["name"] = json!("other");
    bad["spec"]["min"] = json!("abc");
    let (status, problem) = api.post("/core/globalmetrics", &bad).await;
    refused(
        status,
        &problem,
        "{'spec': {'min': ['Not a valid number.']}}",
        "spec.min",
    );
    bad["spec"]["min"] = json!("nan");
    let (status, problem) = api.post("/core/globalmetrics", &bad).await;
    refused(
        status,
        &problem,
        "{'spec': {'min': ['Special numeric values (nan or infinity) are not permitted.']}}",
        "spec.min",
    );
    bad["spec"]["min"] = json!(true);
    let (status, problem) = api.post("/core/globalmetrics", &bad).await;
    refused(
        status,
        &problem,
        "{'spec': {'min': ['Not a valid number.']}}",
        "spec.min",
    );
    bad["spec"]["min"] = json!("0");
    bad["spec"]["allowed_values"] = json!([1, "1.5"]);
    let (status, problem) = api.post("/core/globalmetrics", &bad).await;
    refused(
        status,
        &problem,
        "{'spec': {'allowed_values': {1: ['Not a valid integer.']}}}",
        "spec.allowed_values.1",
    );
    let (status, _) = api.get_status("/core/globalmetrics/other").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused create stores nothing"
    );

    let app = json!({"metadata": {"name": "app"}, "spec": {
        "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}}],
        "constraints": {"cluster": {}, "migration": "maybe"}}});
    let apps = "/kubernetes/namespaces/lenient/applications";
    let (status, problem) = api.post(apps, &app).await;
    refused(
        status,
        &problem,
        "{'spec': {'constraints': {'migration': ['Not a valid boolean.']}}}",
        "spec.constraints.migration",
    );

    let provider = json!({"metadata": {"name": "static"}, "spec": {
        "type": "static", "static": {"metrics": {"heat": "hot"}}}});
    let (status, problem) = api.post("/core/globalmetricsproviders", &provider).await;
    refused(
        status,
        &problem,
        "{'spec': {'static': {'metrics': {'heat': ['Not a valid number.']}}}}",
        "spec.static.metrics.heat",
    );

    // Update: refused, and the stored object is unchanged.
    let mut update = before.clone();
    update["spec"]["max"] = json!("lots");
    update["metadata"]["labels"] = json!({"changed": "yes"});
    let (status, problem) = api.put("/core/globalmetrics/heat", &update).await;
    refused(
        status,
        &problem,
        "{'spec': {'max': ['Not a valid number.']}}",
        "spec.max",
    );
    assert_eq!(api.get("/core/globalmetrics/heat").await, before);

    // /status: refused, and the stored object is unchanged.
    let cluster = krake_testkit::wire::object("Cluster").unwrap();
    let clusters = "/kubernetes/namespaces/lenient/clusters";
    let (status, created) = api.post(clusters, &create_body(&cluster, "c")).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let before = api.get(&format!("{clusters}/c")).await;
    let mut body = before.clone();
    body["status"]["retries"] = json!("1.5");
    let (status, problem) = api.put(&format!("{clusters}/c/status"), &body).await;
    refused(
        status,
        &problem,
        "{'status': {'retries': ['Not a valid integer.']}}",
        "status.retries",
    );
    let mut body = before.clone();
    body["spec"]["metrics"][0]["namespaced"] = json!("nope");
    let (status, problem) = api.put(&format!("{clusters}/c"), &body).await;
    refused(
        status,
        &problem,
        "{'spec': {'metrics': {0: {'namespaced': ['Not a valid boolean.']}}}}",
        "spec.metrics.0.namespaced",
    );
    assert_eq!(api.get(&format!("{clusters}/c")).await, before);

    // Free-form JSON is stored as sent: a string in a manifest stays one.
    let app = json!({"metadata": {"name": "free"}, "spec": {
        "manifest": [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                      "spec": {"replicas": "2", "paused": "false"}}],
        "constraints": {"cluster": {}, "migration": "no"}, "backoff": " 3 "}});
    let (status, created) = api.post(apps, &app).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let stored = api.get(&format!("{apps}/free")).await;
    assert_eq!(
        stored["spec"]["manifest"][0]["spec"],
        json!({"replicas": "2", "paused": "false"})
    );
    assert_eq!(stored["spec"]["constraints"]["migration"], json!(false));
    assert_eq!(stored["spec"]["backoff"], json!(3));
}

impl Api {
    async fn get_status(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}
