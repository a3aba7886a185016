//! Golden tests against traffic captured from a running Krake 1.0.1.
//!
//! Every JSON file of the captured objects ([`krake_testkit::wire::objects`])
//! is read into its kind through the registry and written back; the result
//! must equal the input as a JSON value. New files are picked up without
//! code changes. The captured watch streams
//! ([`krake_testkit::wire::watch_stream`]) are checked the same way, line by
//! line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use krake_data::registry::{self, ParseMode};
use krake_data::{WatchEvent, WatchEventType};
use krake_testkit::wire;
use serde_json::Value;

/// The kinds of the registry that Krake does not have (so no captured traffic).
const BEYOND_KRAKE: &[&str] = &["Lease"];

/// Reads an object through its kind's registry entry and checks it comes back equal.
fn round_trip_object(object: &Value, origin: &str) {
    let api = object["api"].as_str().expect("object without api");
    let kind = object["kind"].as_str().expect("object without kind");
    let info = registry::by_kind(api, kind)
        .unwrap_or_else(|| panic!("{origin}: no kind {api}/{kind} in the registry"));
    let normalized = (info.parse_object)(object.clone())
        .unwrap_or_else(|errors| panic!("{origin}: {kind} does not validate: {errors}"));
    assert_eq!(
        &normalized, object,
        "{origin}: {kind} changed in a round trip"
    );
    // A stored object is also a valid full (update) body.
    info.parse(object.clone(), ParseMode::Full)
        .unwrap_or_else(|errors| panic!("{origin}: {kind} is not a valid full body: {errors}"));
}

#[test]
fn every_captured_object_round_trips() {
    let objects: Vec<_> = wire::objects().collect::<Result<_, _>>().unwrap();
    assert!(
        !objects.is_empty(),
        "no JSON files in {}",
        wire::dir().display()
    );

    let mut kinds_seen = std::collections::BTreeSet::new();
    for (path, value) in objects {
        let origin = path.file_name().unwrap().to_string_lossy().into_owned();
        let kind = value["kind"].as_str().unwrap().to_owned();
        let api = value["api"].as_str().unwrap().to_owned();
        // The file name starts with the kind it holds.
        let stem = origin.trim_end_matches(".json");
        let named_kind = stem.split('-').next().unwrap();
        assert_eq!(named_kind, kind, "{origin} holds a {kind}");

        if let Some(info) = registry::by_list_kind(&api, &kind) {
            let list: krake_data::ResourceList<Value> = serde_json::from_value(value.clone())
                .unwrap_or_else(|err| panic!("{origin}: not a list: {err}"));
            assert_eq!(serde_json::to_value(&list).unwrap(), value, "{origin}");
            assert!(
                !list.items.is_empty(),
                "{origin}: an empty list proves nothing"
            );
            for (index, item) in list.items.iter().enumerate() {
                assert_eq!(item["kind"], info.kind, "{origin} item {index}");
                round_trip_object(item, &format!("{origin} item {index}"));
            }
            kinds_seen.insert(info.kind);
        } else {
            round_trip_object(&value, &origin);
            kinds_seen.insert(registry::by_kind(&api, &kind).unwrap().kind);
        }
    }
    // Every kind of the registry has at least one captured body, except the
    // kinds beyond Krake, which Krake never sent.
    let all: std::collections::BTreeSet<_> = registry::ALL
        .iter()
        .map(|k| k.kind)
        .filter(|kind| !BEYOND_KRAKE.contains(kind))
        .collect();
    let missing: Vec<_> = all.difference(&kinds_seen).collect();
    assert!(missing.is_empty(), "no captured body for {missing:?}");
}

#[test]
fn captured_watch_streams_parse_and_round_trip() {
    for name in ["watch-ns", "watch-all"] {
        let text = wire::watch_stream(name).unwrap();
        let mut events = 0;
        let mut heartbeats = 0;
        for (number, line) in text.split('\n').enumerate() {
            if line.trim().is_empty() {
                heartbeats += 1;
                continue;
            }
            let raw: Value = serde_json::from_str(line).unwrap();
            let event: WatchEvent = serde_json::from_value(raw.clone())
                .unwrap_or_else(|err| panic!("{name}:{}: {err}", number + 1));
            assert_eq!(serde_json::to_value(&event).unwrap(), raw);
            round_trip_object(&event.object, &format!("{name}:{}", number + 1));
            events += 1;
            if event.event_type == WatchEventType::Deleted {
                assert!(
                    event.object["metadata"]["deleted"].is_string()
                        || event.object["metadata"]["deleted"].is_null()
                );
            }
        }
        assert!(events > 0, "{name} has no events");
        assert!(heartbeats > 0, "{name} has no heartbeats");
    }
}
