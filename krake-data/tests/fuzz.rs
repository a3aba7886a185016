//! A time-bounded fuzz run of the parsers that read client input: the label
//! and metric constraint languages and the body decoders of every kind
//! (`KindInfo::create_object` on raw bytes, `KindInfo::parse` in both
//! modes, `BodyInfo::parse`), with proptest.
//!
//! Inputs are both arbitrary (any text, any bytes, any JSON) and structured:
//! constraint text from the languages' own alphabet and keywords, JSON
//! objects whose keys are the model's field names (taken from its JSON
//! Schemas), so that decoding goes deep. Nothing may panic; whatever parses
//! must keep its text, survive a JSON round trip and serialize.
//!
//! Case counts are bounded so that the run takes seconds (about 10-20 s in
//! a debug build); `FUZZ_SCALE=10` runs ten times as many.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::OnceLock;

use krake_data::metadata::Labels;
use krake_data::registry::{self, NewObject, ParseMode};
use krake_data::{LabelConstraint, MetricConstraint, Timestamp};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

fn cases(base: u32) -> Config {
    let scale: u32 = std::env::var("FUZZ_SCALE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Config {
        cases: base * scale,
        failure_persistence: None,
        ..Config::default()
    }
}

// --- constraints ---

/// Text from the constraint languages' own pieces, in any order.
fn constraint_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z]{1,6}",
        "[a-z0-9._/-]{1,8}",
        Just("=".to_owned()),
        Just("==".to_owned()),
        Just("!=".to_owned()),
        Just(">".to_owned()),
        Just(">=".to_owned()),
        Just("<".to_owned()),
        Just("<=".to_owned()),
        Just(" in ".to_owned()),
        Just(" not in ".to_owned()),
        Just(" is ".to_owned()),
        Just(" is not ".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(",".to_owned()),
        Just(" ".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("\\".to_owned()),
        Just("1e309".to_owned()),
        Just("-0.5".to_owned()),
        Just("NaN".to_owned()),
        Just("inf".to_owned()),
        Just("18446744073709551616".to_owned()),
        any::<f64>().prop_map(|f| f.to_string()),
        "\\PC{1,3}",
    ];
    prop_oneof![
        4 => prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat()),
        1 => any::<String>(),
        1 => "[a-z]{1,5}(=|!=| in | not in )[a-z(), ]{0,20}",
        1 => "[a-z]{1,5} *(=|==|!=|>|>=|<|<=) *-?[0-9]{1,4}(\\.[0-9]{1,3})?",
    ]
}

fn labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map("[a-z]{1,3}", "[a-z0-9]{0,3}", 0..4)
        .prop_map(|map| map.into_iter().collect())
}

proptest! {
    #![proptest_config(cases(4_000))]

    #[test]
    fn label_constraints_never_panic(text in constraint_text(), labels in labels()) {
        match LabelConstraint::parse(&text) {
            Ok(constraint) => {
                prop_assert_eq!(constraint.as_str(), text.as_str());
                let json = serde_json::to_string(&constraint).unwrap();
                let back: LabelConstraint = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&back, &constraint);
                let _ = constraint.matches(&labels);
            }
            Err(error) => {
                prop_assert!(error.to_string().starts_with("Invalid label constraint: "), "{}", error);
            }
        }
    }

    #[test]
    fn metric_constraints_never_panic(text in constraint_text(), value in any::<f64>()) {
        match MetricConstraint::parse(&text) {
            Ok(constraint) => {
                prop_assert_eq!(constraint.as_str(), text.as_str());
                prop_assert!(constraint.value().is_finite());
                let json = serde_json::to_string(&constraint).unwrap();
                let back: MetricConstraint = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&back, &constraint);
                let _ = constraint.matches_with(|_| Some(value));
            }
            Err(error) => {
                prop_assert!(error.to_string().starts_with("Invalid metric constraint: "), "{}", error);
            }
        }
    }
}

// --- body decoders ---

/// Every property name of the model's schemas.
fn field_names() -> &'static Vec<String> {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        fn walk(value: &Value, names: &mut BTreeSet<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::Object(properties)) = map.get("properties") {
                        names.extend(properties.keys().cloned());
                    }
                    map.values().for_each(|v| walk(v, names));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, names)),
                _ => {}
            }
        }
        let mut names = BTreeSet::new();
        walk(&Value::Object(registry::component_schemas()), &mut names);
        names.into_iter().collect()
    })
}

/// JSON whose keys are mostly the model's field names.
fn model_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e3f64..1e3).prop_map(Value::from),
        "[a-z][a-z0-9-]{0,8}".prop_map(Value::from),
        constraint_text().prop_map(Value::from),
        Just(Value::from("2026-01-01T00:00:00Z")),
        ".{0,10}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        8 => proptest::sample::select(field_names().clone()),
        1 => "[a-z]{1,6}",
    ];
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            1 => prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            3 => prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body: the model's shape (an object with `api`, `kind`, `metadata`,
/// `spec`, `status` drawn from the model) or anything.
fn body() -> impl Strategy<Value = Value> {
    let shaped = (
        proptest::option::of(model_json()),
        proptest::option::of(model_json()),
        proptest::option::of(model_json()),
        proptest::option::of("[a-z][a-z0-9-]{0,8}"),
    )
        .prop_map(|(metadata, spec, status, name)| {
            let mut object = Map::new();
            let mut metadata = metadata.unwrap_or_else(|| Value::Object(Map::new()));
            if let (Some(name), Some(map)) = (name, metadata.as_object_mut()) {
                map.insert("name".into(), Value::from(name));
            }
            object.insert("metadata".into(), metadata);
            if let Some(spec) = spec {
                object.insert("spec".into(), spec);
            }
            if let Some(status) = status {
                object.insert("status".into(), status);
            }
            Value::Object(object)
        });
    prop_oneof![4 => shaped, 1 => model_json()]
}

/// Raw bytes: JSON from [`body`] cut or corrupted, or noise.
fn raw_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => body().prop_map(|value| serde_json::to_vec(&value).unwrap()),
        1 => (body(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(value, at, byte)| {
            let mut bytes = serde_json::to_vec(&value).unwrap();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            bytes
        }),
        1 => (body(), any::<prop::sample::Index>()).prop_map(|(value, at)| {
            let mut bytes = serde_json::to_vec(&value).unwrap();
            let at = at.index(bytes.len());
            bytes.truncate(at);
            bytes
        }),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(cases(800))]

    #[test]
    fn kinds_decode_any_body(body in body(), raw in raw_body()) {
        let now = Timestamp::now();
        for kind in registry::ALL {
            for mode in [ParseMode::Create, ParseMode::Full] {
                if let Ok(parsed) = kind.parse(body.clone(), mode) {
                    serde_json::to_vec(&parsed).unwrap();
                }
            }
            let new = NewObject { namespace: Some("fuzz"), uid: "u", now };
            for bytes in [&raw, &serde_json::to_vec(&body).unwrap()] {
                if let Some(created) = (kind.create_object)(bytes, &new) {
                    // What the fast path stores is a valid object of the kind.
                    let stored: Value = serde_json::from_slice(&created.bytes).unwrap();
                    prop_assert!(
                        kind.parse(stored, ParseMode::Full).is_ok(),
                        "{} stored what it cannot read", kind.kind
                    );
                }
            }
        }
        for body_kind in registry::BODIES {
            if let Ok(parsed) = (body_kind.parse)(body.clone()) {
                serde_json::to_vec(&parsed).unwrap();
            }
        }
    }
}
