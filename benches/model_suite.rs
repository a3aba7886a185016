//! The resource model's hot paths against plain serde_json baselines
//! (`cargo bench -p krake-benches --bench model`).
//!
//! - decoding an Application body into the typed model and validating it,
//!   against decoding the same bytes into an untyped `serde_json::Value`;
//! - the registry's type-erased parse (what the API does with every write),
//!   against the same untyped decode followed by a re-serialization;
//! - encoding a typed Application, against encoding the untyped value;
//! - parsing a label constraint, against splitting the text on whitespace;
//! - evaluating label and metric constraints against a cluster's labels and
//!   metrics, against the equivalent hand-written map lookups.

use std::collections::HashMap;
use std::hint::black_box;

use crate::{Mode, measure, report};
use krake_data::kinds::kubernetes::Application;
use krake_data::metadata::Labels;
use krake_data::registry::{ParseMode, Resource};
use krake_data::validation::Validate;
use krake_data::{LabelConstraint, MetricConstraint};
use serde_json::{Value, json};

fn application_body() -> Value {
    let containers: Vec<Value> = (0..4)
        .map(|i| {
            json!({"name": format!("c{i}"), "image": "registry.example/app:1.2.3",
            "ports": [{"containerPort": 8080 + i}], "env": [{"name": "MODE", "value": "prod"}]})
        })
        .collect();
    json!({
        "api": "kubernetes", "kind": "Application",
        "metadata": {"name": "shop", "namespace": "team-a", "labels": {"tier": "web", "env": "prod"},
            "inherit_labels": false, "finalizers": ["cascade_deletion"],
            "uid": "8320e0cc-1ebb-4d16-a06b-28eb02834117",
            "created": "2026-11-23T00:15:54.741882+00:00", "modified": "2026-11-23T00:15:54.741882+00:00",
            "deleted": null, "owners": []},
        "spec": {
            "manifest": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "shop"},
                 "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "shop"}},
                    "template": {"metadata": {"labels": {"app": "shop"}}, "spec": {"containers": containers}}}},
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop"},
                 "spec": {"type": "NodePort", "selector": {"app": "shop"}, "ports": [{"port": 8080}]}},
            ],
            "constraints": {"cluster": {"labels": ["location in (DE, AT, CH)", "tier is not db"],
                "custom_resources": [], "metrics": ["heat < 0.8", "load gte 0.1"]}, "migration": true},
            "hooks": ["complete"],
        },
        "status": {"state": "RUNNING"},
    })
}

/// Runs every measurement of the suite in `mode` and prints the results.
pub fn run(mode: Mode) {
    println!("krake-data model benchmarks ({mode:?} mode)");

    let body = application_body();
    let bytes = serde_json::to_vec(&body).expect("a JSON value serializes");

    let typed = measure(mode, || {
        let app: Application = serde_json::from_slice(&bytes).expect("valid body");
        assert!(app.validation_errors().is_empty());
        app
    });
    let untyped = measure(mode, || {
        serde_json::from_slice::<Value>(&bytes).expect("valid JSON")
    });
    report(
        "decode+validate Application",
        typed,
        "decode Value",
        untyped,
    );

    let registry_parse = measure(mode, || {
        let value: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        Application::INFO
            .parse(value, ParseMode::Full)
            .expect("valid body")
    });
    let untyped_round = measure(mode, || {
        let value: Value = serde_json::from_slice(&bytes).expect("valid JSON");
        serde_json::to_vec(&value).expect("serializes")
    });
    report(
        "registry parse (Full)",
        registry_parse,
        "decode+encode Value",
        untyped_round,
    );

    let app: Application = serde_json::from_slice(&bytes).expect("valid body");
    let encode_typed = measure(mode, || serde_json::to_vec(&app).expect("serializes"));
    let encode_value = measure(mode, || serde_json::to_vec(&body).expect("serializes"));
    report(
        "encode Application",
        encode_typed,
        "encode Value",
        encode_value,
    );

    let text = "location not in (DE, AT, CH, FR,)";
    let parse = measure(mode, || {
        LabelConstraint::parse(black_box(text)).expect("valid")
    });
    let split = measure(mode, || {
        black_box(text)
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    report(
        "parse label constraint",
        parse,
        "split on whitespace",
        split,
    );

    let mut labels = Labels::new();
    for (k, v) in [
        ("location", "DE"),
        ("tier", "web"),
        ("env", "prod"),
        ("zone", "a"),
    ] {
        labels.insert(k.into(), v.into());
    }
    let label_constraints: Vec<LabelConstraint> =
        ["location in (DE, AT)", "tier != db", "env is prod"]
            .iter()
            .map(|t| t.parse().expect("valid"))
            .collect();
    let matched = measure(mode, || {
        label_constraints
            .iter()
            .all(|c| c.matches(black_box(&labels)))
    });
    let by_hand = measure(mode, || {
        let l = black_box(&labels);
        l.get("location").is_some_and(|v| v == "DE" || v == "AT")
            && l.get("tier").is_some_and(|v| v != "db")
            && l.get("env").is_some_and(|v| v == "prod")
    });
    report(
        "match 3 label constraints",
        matched,
        "hand-written lookups",
        by_hand,
    );

    let metrics: HashMap<String, f64> = [("heat".to_owned(), 0.4), ("load".to_owned(), 0.3)].into();
    let metric_constraints: Vec<MetricConstraint> = ["heat < 0.8", "load gte 0.1"]
        .iter()
        .map(|t| t.parse().expect("valid"))
        .collect();
    let matched = measure(mode, || {
        metric_constraints
            .iter()
            .all(|c| c.matches(black_box(&metrics)))
    });
    let by_hand = measure(mode, || {
        let m = black_box(&metrics);
        m.get("heat").is_some_and(|v| *v < 0.8) && m.get("load").is_some_and(|v| *v >= 0.1)
    });
    report(
        "match 2 metric constraints",
        matched,
        "hand-written lookups",
        by_hand,
    );
}
