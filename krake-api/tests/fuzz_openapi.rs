//! Property-based fuzzing of the running server from its own
//! `/openapi.json` (schemathesis-style, in Rust with proptest).
//!
//! The document is read from the server; every case picks one of its
//! operations, fills the path parameters (names from a small pool, so that
//! reads and updates hit existing objects, or arbitrary text), some of its
//! query parameters (values of the parameter's type, huge, negative, or
//! arbitrary text) and, for operations with a body, a body generated from
//! the request schema with random omissions and wrong-typed values (or
//! arbitrary bytes). Every answer must be one the document lists for the
//! operation, never a 5xx, errors as Krake's problem bodies and successes
//! as JSON (or an NDJSON watch stream). At the end, every stored object
//! must still read back and parse as its kind: bad input never corrupts
//! stored data.
//!
//! The run is bounded: `FUZZ_CASES` cases (default 3,000) or 25 s,
//! whichever comes first; the count of cases run and answers by status are
//! printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use krake_api::ApiConfig;
use krake_api::testing::TestServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

/// The longest the run may take.
const BUDGET: Duration = Duration::from_secs(25);

/// One operation of the document.
#[derive(Debug, Clone)]
struct Operation {
    method: reqwest::Method,
    path: String,
    path_params: Vec<String>,
    query_params: Vec<(String, Value)>,
    body: Option<Value>,
    /// The documented answers: status and media types.
    codes: BTreeMap<u16, Vec<String>>,
}

fn operations(document: &Value) -> Vec<Operation> {
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let params = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let param_names = |location: &str| {
                params
                    .iter()
                    .filter(|p| p["in"] == location)
                    .map(|p| (p["name"].as_str().unwrap().to_owned(), p["schema"].clone()))
                    .collect::<Vec<_>>()
            };
            operations.push(Operation {
                method: method.to_uppercase().parse().unwrap(),
                path: path.clone(),
                path_params: param_names("path").into_iter().map(|(n, _)| n).collect(),
                query_params: param_names("query"),
                body: operation["requestBody"]["content"]["application/json"]["schema"]
                    .as_object()
                    .map(|schema| Value::Object(schema.clone())),
                codes: operation["responses"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(code, answer)| {
                        let media = answer["content"]
                            .as_object()
                            .map(|c| c.keys().cloned().collect())
                            .unwrap_or_default();
                        (code.parse().unwrap(), media)
                    })
                    .collect(),
            });
        }
    }
    operations
}

// --- values from schemas ---

/// Arbitrary JSON of any type, small.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Names and words the model accepts, often.
fn word() -> BoxedStrategy<String> {
    prop_oneof![
        4 => "[a-z][a-z0-9-]{0,10}",
        1 => ".{0,20}",
        1 => Just(String::new()),
        1 => "[a-z]{200,300}",
    ]
    .boxed()
}

/// Values of `schema` (resolving references in `document`), with omitted
/// fields and, sometimes, values of the wrong type.
fn from_schema(schema: &Value, document: &Value, depth: usize) -> BoxedStrategy<Value> {
    let correct = well_typed(schema, document, depth);
    prop_oneof![12 => correct, 1 => any_json()].boxed()
}

fn well_typed(schema: &Value, document: &Value, depth: usize) -> BoxedStrategy<Value> {
    if depth > 6 {
        return any_json();
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap();
        let target = &document["components"]["schemas"][name];
        return from_schema(target, document, depth + 1);
    }
    if let Some(constant) = schema.get("const") {
        return Just(constant.clone()).boxed();
    }
    if let Some(values) = schema["enum"].as_array() {
        return proptest::sample::select(values.clone()).boxed();
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(members) = schema[combinator].as_array() {
            let strategies: Vec<_> = members
                .iter()
                .map(|member| from_schema(member, document, depth + 1))
                .collect();
            if strategies.is_empty() {
                return any_json();
            }
            return proptest::strategy::Union::new(strategies).boxed();
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ if schema.get("properties").is_some() => vec!["object"],
        _ => vec![],
    };
    let nullable = schema["nullable"] == true || types.contains(&"null");
    let strategy = match types.iter().find(|t| **t != "null").copied() {
        Some("object") => object(schema, document, depth),
        Some("array") => {
            let items = from_schema(&schema["items"], document, depth + 1);
            prop::collection::vec(items, 0..3)
                .prop_map(Value::from)
                .boxed()
        }
        Some("string") => match schema["format"].as_str() {
            Some("date-time") => prop_oneof![
                Just(Value::from("2026-01-01T00:00:00Z")),
                word().prop_map(Value::from)
            ]
            .boxed(),
            _ => word().prop_map(Value::from).boxed(),
        },
        Some("integer") => prop_oneof![
            (0i64..100).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
        ]
        .boxed(),
        Some("number") => prop_oneof![
            (0.0f64..100.0).prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
        ]
        .boxed(),
        Some("boolean") => any::<bool>().prop_map(Value::from).boxed(),
        _ => any_json(),
    };
    if nullable {
        prop_oneof![4 => strategy, 1 => Just(Value::Null)].boxed()
    } else {
        strategy
    }
}

fn object(schema: &Value, document: &Value, depth: usize) -> BoxedStrategy<Value> {
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields: Vec<BoxedStrategy<Option<(String, Value)>>> = Vec::new();
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            let value = from_schema(property, document, depth + 1);
            let name = name.clone();
            let keep = if required.contains(name.as_str()) {
                0.95
            } else {
                0.5
            };
            fields.push(
                proptest::option::weighted(keep, value)
                    .prop_map(move |value| value.map(|value| (name.clone(), value)))
                    .boxed(),
            );
        }
    }
    let extra = match &schema["additionalProperties"] {
        Value::Object(values) => {
            let values = from_schema(&Value::Object(values.clone()), document, depth + 1);
            prop::collection::btree_map(word(), values, 0..3).boxed()
        }
        _ => Just(BTreeMap::new()).boxed(),
    };
    (fields, extra)
        .prop_map(|(fields, extra)| {
            let mut map: Map<String, Value> = extra.into_iter().collect();
            map.extend(fields.into_iter().flatten());
            Value::Object(map)
        })
        .boxed()
}

// --- requests ---

/// A request to send.
#[derive(Debug, Clone)]
struct Case {
    operation: usize,
    path_values: Vec<String>,
    query: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

/// Text for a path segment: often an existing namespace or name. Never
/// `.` or `..` (even percent-encoded, `%2e`): URLs resolve those dot
/// segments before a request is sent (RFC 3986, section 5.2.4), so no
/// client can send them as a parameter; the request would go to another
/// path, whose 404 is right but not the operation's.
fn path_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => proptest::sample::select(vec!["testing", "fuzz-a", "fuzz-b", "default"])
            .prop_map(str::to_owned),
        2 => "[a-z][a-z0-9-]{0,10}",
        1 => ".{1,16}",
        1 => "[a-z.]{250,300}",
    ]
    .prop_filter("a dot segment is not a parameter", |value| {
        value != "." && value != ".."
    })
    .boxed()
}

/// Text for a query parameter of `schema`.
fn query_value(schema: &Value) -> BoxedStrategy<String> {
    let typed = match schema["type"].as_str() {
        Some("integer") => prop_oneof![
            (0i64..50).prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("99999999999999999999999999".to_owned()),
            Just("1e3".to_owned()),
        ]
        .boxed(),
        _ => prop_oneof![
            Just(String::new()),
            word(),
            Just("True".to_owned()),
            Just("env=prod,zone in (a,b)".to_owned()),
            Just("k in (".to_owned()),
        ]
        .boxed(),
    };
    prop_oneof![4 => typed, 1 => ".{0,16}"].boxed()
}

fn case_strategy(operations: &[Operation], document: &Value) -> BoxedStrategy<Case> {
    let per_operation: Vec<BoxedStrategy<Case>> = operations
        .iter()
        .enumerate()
        .map(|(index, operation)| {
            let path_values = prop::collection::vec(path_value(), operation.path_params.len());
            let query: Vec<BoxedStrategy<Option<(String, String)>>> = operation
                .query_params
                .iter()
                .map(|(name, schema)| {
                    let name = name.clone();
                    // Watches only with a short heartbeat and never resumed
                    // from far away: the answer head is all that is read.
                    proptest::option::weighted(0.3, query_value(schema))
                        .prop_map(move |value| value.map(|value| (name.clone(), value)))
                        .boxed()
                })
                .collect();
            let body = match &operation.body {
                Some(schema) => prop_oneof![
                    8 => from_schema(schema, document, 0)
                        .prop_map(|value| Some(serde_json::to_vec(&value).unwrap())),
                    1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Some),
                    1 => Just(Some(Vec::new())),
                ]
                .boxed(),
                None => Just(None).boxed(),
            };
            (path_values, query, body)
                .prop_map(move |(path_values, query, body)| Case {
                    operation: index,
                    path_values,
                    query: query.into_iter().flatten().collect(),
                    body,
                })
                .boxed()
        })
        .collect();
    proptest::strategy::Union::new(per_operation).boxed()
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The outcome of one case, for the tally; an error if the answer does not
/// match the document.
async fn run_case(
    http: &reqwest::Client,
    base: &str,
    operation: &Operation,
    case: &Case,
) -> Result<u16, String> {
    let mut path = operation.path.clone();
    for (name, value) in operation.path_params.iter().zip(&case.path_values) {
        path = path.replace(&format!("{{{name}}}"), &encode(value));
    }
    let mut query: Vec<String> = case
        .query
        .iter()
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    let watch = case.query.iter().any(|(name, _)| name == "watch");
    if watch {
        query.push("heartbeat=1".to_owned());
    }
    let url = if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{}", query.join("&"))
    };
    let mut request = http.request(operation.method.clone(), &url);
    if let Some(body) = &case.body {
        request = request
            .header("content-type", "application/json")
            .body(body.clone());
    }
    let what = format!(
        "{} {url} with {}",
        operation.method,
        case.body
            .as_ref()
            .map_or("no body".to_owned(), |b| String::from_utf8_lossy(b)
                .into_owned())
    );
    let response = request
        .send()
        .await
        .map_err(|err| format!("{what}: no answer: {err}"))?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if status >= 500 {
        let body = response.text().await.unwrap_or_default();
        return Err(format!("{what}: {status} {body}"));
    }
    let Some(media) = operation.codes.get(&status) else {
        let body = response.text().await.unwrap_or_default();
        return Err(format!(
            "{what}: {status} is not among the documented {:?}: {body}",
            operation.codes.keys()
        ));
    };
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !media.iter().any(|m| m == essence) {
        return Err(format!(
            "{what}: {status} as {content_type:?}, documented {media:?}"
        ));
    }
    if status >= 400 {
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let problem: Value = serde_json::from_slice(&body)
            .map_err(|err| format!("{what}: the problem is not JSON: {err}"))?;
        if problem["status"] != status
            || !problem["type"].is_string()
            || !problem["detail"].is_string()
        {
            return Err(format!("{what}: not a problem body: {problem}"));
        }
        return Ok(status);
    }
    if essence != "application/json" {
        // A watch stream (its head is the answer), or metrics.
        return Ok(status);
    }
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    serde_json::from_slice::<Value>(&body)
        .map_err(|err| format!("{what}: {status} with a body that is not JSON: {err}"))?;
    Ok(status)
}

/// Every stored object of every kind lists, reads back and parses as its
/// kind.
async fn check_stored(http: &reqwest::Client, base: &str) -> usize {
    let mut objects = 0;
    for kind in krake_data::registry::ALL {
        let list: Value = http
            .get(format!("{base}{}", kind.collection_path(None)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for item in list["items"].as_array().unwrap() {
            objects += 1;
            let name = item["metadata"]["name"].as_str().unwrap();
            let namespace = item["metadata"]["namespace"].as_str();
            let path = format!("{}/{}", kind.collection_path(namespace), encode(name));
            let response = http.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let read: Value = response.json().await.unwrap();
            assert_eq!(&read, item, "{path} reads as it lists");
            kind.parse(read, krake_data::registry::ParseMode::Full)
                .unwrap_or_else(|err| panic!("{path} no longer parses: {err:?}\n{item}"));
        }
    }
    objects
}

#[test]
fn every_answer_matches_the_openapi_document() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ApiConfig {
        blocking_timeout: Duration::from_millis(100),
        ..ApiConfig::default()
    };
    let server = runtime.block_on(TestServer::embedded_with(config));
    let base = server.url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let document: Value = runtime.block_on(async {
        http.get(format!("{base}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let operations = operations(&document);
    println!("{} operations in /openapi.json", operations.len());
    // A few objects to read, update and delete.
    runtime.block_on(async {
        for name in ["fuzz-a", "fuzz-b"] {
            let response = http
                .post(format!("{base}/kubernetes/namespaces/testing/applications"))
                .json(&json!({
                    "metadata": {"name": name},
                    "spec": {
                        "manifest": [{"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}}],
                        "constraints": {"cluster": {}},
                    },
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
    });

    let cases: u32 = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    });
    let strategy = case_strategy(&operations, &document);
    let tally: Arc<Mutex<BTreeMap<u16, usize>>> = Arc::default();
    let started = Instant::now();
    let ran = Arc::new(Mutex::new(0usize));
    let result = runner.run(&strategy, |case| {
        if started.elapsed() > BUDGET {
            return Ok(());
        }
        let operation = &operations[case.operation];
        let outcome = runtime.block_on(run_case(&http, &base, operation, &case));
        *ran.lock().unwrap() += 1;
        match outcome {
            Ok(status) => {
                *tally.lock().unwrap().entry(status).or_default() += 1;
                Ok(())
            }
            Err(message) => Err(TestCaseError::fail(message)),
        }
    });
    let elapsed = started.elapsed();
    println!(
        "{} cases in {elapsed:.1?}; answers by status: {:?}",
        ran.lock().unwrap(),
        tally.lock().unwrap()
    );
    if let Err(error) = result {
        panic!("{error}");
    }
    let objects = runtime.block_on(check_stored(&http, &base));
    println!("{objects} stored objects read back and parse as their kind");
    // The server still answers normally.
    let status = runtime.block_on(async {
        http.get(format!(
            "{base}/kubernetes/namespaces/testing/applications/fuzz-a"
        ))
        .send()
        .await
        .unwrap()
        .status()
    });
    assert!(status == 200 || status == 404, "{status}");
    drop(server);
}
