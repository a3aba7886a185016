//! What krakectl prints: tables with Krake's columns and rows per kind, or
//! the objects as JSON or YAML (keys sorted, as Krake's `json.dumps` and
//! `yaml.safe_dump` print them).

use serde_json::{Map, Value};

use crate::table::Table;

/// `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables at most 80 columns wide, as Krake's.
    Table,
    /// Tables with more columns and no width limit.
    Wide,
    /// JSON, indented, keys sorted.
    Json,
    /// YAML, keys sorted.
    Yaml,
}

/// The width of tables in `table` format: `$COLUMNS` if it asks for more, else Krake's 80.
fn table_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|&c| c > 80)
        .unwrap_or(80)
}

/// Sorts the keys of every object, recursively.
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for key in keys {
                out.insert(key.clone(), sorted(&map[key]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// JSON as Krake prints it: two-space indents, keys sorted.
pub fn json(value: &Value) -> String {
    serde_json::to_string_pretty(&sorted(value)).unwrap_or_default()
}

/// YAML, keys sorted.
pub fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(&sorted(value)).unwrap_or_default()
}

fn at<'a>(object: &'a Value, pointer: &str) -> &'a Value {
    object.pointer(pointer).unwrap_or(&Value::Null)
}

/// Python's `repr` of a JSON value, as Krake's tables show lists.
fn repr(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(repr).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("'{k}': {}", repr(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// A scalar as a cell: strings bare, null as `None`, lists as Python lists.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => repr(other),
    }
}

/// `2026-11-23T00:01:52.404832+00:00` as `2026-11-23 00:01:52`.
fn timestamp(value: &Value) -> String {
    match value.as_str() {
        Some(text) if text.len() >= 19 => text[..19].replacen('T', " ", 1),
        Some(text) => text.to_owned(),
        None => "None".to_owned(),
    }
}

/// A map as `key: value` lines, `None` when empty.
fn mapping(value: &Value) -> String {
    match value.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", plain(v)))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => "None".to_owned(),
    }
}

/// A list of constraints or names; `[]` for null, as Krake's `[]`.
fn list(value: &Value) -> String {
    match value {
        Value::Null => "[]".to_owned(),
        other => repr(other),
    }
}

/// A reference to another object by its name.
fn reference(value: &Value) -> String {
    match value.get("name").and_then(Value::as_str) {
        Some(name) => name.to_owned(),
        None => plain(value),
    }
}

/// Metric references as `name: weight` lines, `[]` when none.
fn metric_refs(value: &Value) -> String {
    match value.as_array() {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|m| format!("{}: {}", plain(at(m, "/name")), plain(at(m, "/weight"))))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => "[]".to_owned(),
    }
}

fn container_health(object: &Value) -> String {
    let n = |field: &str| {
        at(object, &format!("/status/container_health/{field}"))
            .as_i64()
            .unwrap_or(0)
    };
    format!(
        "{} active / {} failed / {} succeeded / {} desired",
        n("running_pods"),
        n("failed_pods"),
        n("completed_pods"),
        n("desired_pods")
    )
}

/// Nodes under a condition (`Ready` counts `True`, pressures count `True`),
/// as `matching/total`; `None` without nodes.
fn nodes(object: &Value, condition: &str) -> String {
    let Some(nodes) = at(object, "/status/nodes")
        .as_array()
        .filter(|n| !n.is_empty())
    else {
        return "None".to_owned();
    };
    let matching = nodes
        .iter()
        .filter(|node| {
            at(node, "/status/conditions")
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| at(c, "/type") == condition && at(c, "/status") == "True")
        })
        .count();
    format!("{matching}/{}", nodes.len())
}

/// The reasons of failing metrics, `None` without any.
fn failing_metrics(object: &Value) -> String {
    match at(object, "/status/metrics_reasons").as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}: {}", plain(at(v, "/code"))))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => "None".to_owned(),
    }
}

/// The type-specific part of a tagged spec (`spec.<spec.type>`).
fn tagged<'a>(object: &'a Value, field: &str) -> &'a Value {
    let kind = at(object, "/spec/type").as_str().unwrap_or_default();
    at(object, &format!("/spec/{kind}/{field}"))
}

type Cell = fn(&Value) -> String;

const BASE: &[(&str, Cell)] = &[
    ("name", |o| plain(at(o, "/metadata/name"))),
    ("namespace", |o| plain(at(o, "/metadata/namespace"))),
    ("labels", |o| mapping(at(o, "/metadata/labels"))),
    ("created", |o| timestamp(at(o, "/metadata/created"))),
    ("modified", |o| timestamp(at(o, "/metadata/modified"))),
    ("deleted", |o| timestamp(at(o, "/metadata/deleted"))),
];

fn state(o: &Value) -> String {
    plain(at(o, "/status/state"))
}

fn reason(o: &Value) -> String {
    match at(o, "/status/reason") {
        Value::Null => "None".to_owned(),
        reason => {
            let code = plain(at(reason, "/code"));
            match at(reason, "/message").as_str() {
                Some(message) => format!("{code}: {message}"),
                None => code,
            }
        }
    }
}

/// The extra list columns of a kind (after name..deleted); `wide` adds more.
fn list_columns(kind: &str, wide: bool) -> Vec<(&'static str, Cell)> {
    let mut columns: Vec<(&'static str, Cell)> = match kind {
        "Application" | "Cluster" | "Project" | "MagnumCluster" => vec![("state", state)],
        "Metric" | "GlobalMetric" => vec![
            ("provider", |o| plain(at(o, "/spec/provider/name"))),
            ("min", |o| plain(at(o, "/spec/min"))),
            ("max", |o| plain(at(o, "/spec/max"))),
            ("allowed_values", |o| list(at(o, "/spec/allowed_values"))),
        ],
        "MetricsProvider" | "GlobalMetricsProvider" => {
            vec![("mp_type", |o| plain(at(o, "/spec/type")))]
        }
        "Cloud" | "GlobalCloud" => vec![
            ("type", |o| plain(at(o, "/spec/type"))),
            ("metrics", |o| metric_refs(tagged(o, "metrics"))),
            ("infra_provider", |o| {
                plain(at(tagged(o, "infrastructure_provider"), "/name"))
            }),
            ("state", state),
        ],
        "InfrastructureProvider" | "GlobalInfrastructureProvider" => {
            vec![("type", |o| plain(at(o, "/spec/type")))]
        }
        "Role" => vec![("rules", |o| {
            at(o, "/rules").as_array().map_or(0, Vec::len).to_string()
        })],
        "RoleBinding" => vec![
            ("users", |o| list(at(o, "/users"))),
            ("roles", |o| list(at(o, "/roles"))),
        ],
        "Lease" => vec![
            ("holder", |o| plain(at(o, "/spec/holder"))),
            ("renew_time", |o| plain(at(o, "/spec/renew_time"))),
            ("transitions", |o| plain(at(o, "/spec/transitions"))),
        ],
        _ => Vec::new(),
    };
    if wide {
        match kind {
            "Application" | "Cluster" => {
                columns.push(("scheduled_to", |o| reference(at(o, "/status/scheduled_to"))));
                columns.push(("running_on", |o| reference(at(o, "/status/running_on"))));
            }
            "Cloud" | "GlobalCloud" | "InfrastructureProvider" | "GlobalInfrastructureProvider" => {
                columns.push(("url", |o| plain(tagged(o, "url"))));
            }
            _ => {}
        }
        columns.push(("uid", |o| plain(at(o, "/metadata/uid"))));
    }
    columns
}

/// The rows of a kind's detail table; `full` is `get`'s longer cluster view.
fn detail_rows(kind: &str, full: bool) -> Vec<(&'static str, Cell)> {
    let backoff: [(&'static str, Cell); 3] = [
        ("backoff", |o| plain(at(o, "/spec/backoff"))),
        ("backoff_delay", |o| plain(at(o, "/spec/backoff_delay"))),
        ("backoff_limit", |o| plain(at(o, "/spec/backoff_limit"))),
    ];
    let scheduling: [(&'static str, Cell); 3] = [
        ("scheduled_to", |o| reference(at(o, "/status/scheduled_to"))),
        ("scheduled", |o| timestamp(at(o, "/status/scheduled"))),
        ("running_on", |o| reference(at(o, "/status/running_on"))),
    ];
    let mut rows: Vec<(&'static str, Cell)> = Vec::new();
    match kind {
        "Application" => {
            rows.extend([
                ("state", state as Cell),
                ("reason", reason),
                ("container_health", container_health),
                ("services", |o| mapping(at(o, "/status/services"))),
                ("allow migration", |o| {
                    plain(at(o, "/spec/constraints/migration"))
                }),
                ("label constraints", |o| {
                    list(at(o, "/spec/constraints/cluster/labels"))
                }),
                ("resources constraints", |o| {
                    list(at(o, "/spec/constraints/cluster/custom_resources"))
                }),
                ("metric constraints", |o| {
                    list(at(o, "/spec/constraints/cluster/metrics"))
                }),
                ("hooks", |o| list(at(o, "/spec/hooks"))),
            ]);
            rows.extend(scheduling);
            rows.extend(backoff);
        }
        "Cluster" => {
            rows.extend([
                ("state", state as Cell),
                ("reason", reason),
                ("custom_resources", |o| {
                    list(at(o, "/spec/custom_resources"))
                }),
                ("metrics", |o| list(at(o, "/spec/metrics"))),
                ("failing_metrics", failing_metrics),
                ("label constraints", |o| {
                    list(at(o, "/spec/constraints/cloud/labels"))
                }),
                ("metric constraints", |o| {
                    list(at(o, "/spec/constraints/cloud/metrics"))
                }),
            ]);
            rows.extend(scheduling);
            if full {
                rows.extend([
                    ("nodes", (|o| nodes(o, "Ready")) as Cell),
                    ("nodes_pid_pressure", |o| nodes(o, "PIDPressure")),
                    ("nodes_memory_pressure", |o| nodes(o, "MemoryPressure")),
                    ("nodes_disk_pressure", |o| nodes(o, "DiskPressure")),
                ]);
                rows.extend(backoff);
            }
        }
        "Metric" | "GlobalMetric" => rows.extend(list_columns(kind, false)),
        "MetricsProvider" | "GlobalMetricsProvider" => {
            rows.push(("mp_type", |o| plain(at(o, "/spec/type"))));
            rows.push(("url", |o| plain(tagged(o, "url"))));
            rows.push(("metrics", |o| mapping(tagged(o, "metrics"))));
        }
        "InfrastructureProvider" | "GlobalInfrastructureProvider" => {
            rows.push(("type", |o| plain(at(o, "/spec/type"))));
            rows.push(("url", |o| plain(tagged(o, "url"))));
        }
        "Cloud" | "GlobalCloud" => {
            rows.extend(list_columns(kind, false));
            rows.push(("reason", reason));
            rows.push(("url", |o| plain(tagged(o, "url"))));
        }
        "Role" => rows.push(("rules", |o| {
            at(o, "/rules")
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    format!(
                        "{} {} {} {}",
                        plain(at(r, "/api")),
                        list(at(r, "/resources")),
                        list(at(r, "/namespaces")),
                        list(at(r, "/verbs"))
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        })),
        "RoleBinding" => rows.extend(list_columns(kind, false)),
        "Project" => {
            rows.extend([
                ("state", state as Cell),
                ("reason", reason),
                ("url", |o| plain(at(o, "/spec/url"))),
                ("template", |o| plain(at(o, "/spec/template"))),
            ]);
        }
        "MagnumCluster" => {
            rows.extend([
                ("state", state as Cell),
                ("reason", reason),
                ("master_count", |o| plain(at(o, "/spec/master_count"))),
                ("node_count", |o| plain(at(o, "/spec/node_count"))),
                ("project", |o| reference(at(o, "/status/project"))),
            ]);
        }
        _ => {}
    }
    rows
}

/// How one object is shown in table format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// After create, update and delete (Krake's shorter cluster view).
    Short,
    /// `get`.
    Full,
}

/// One object: a key/value table, or JSON/YAML.
pub fn object(kind: &str, object: &Value, format: Format, detail: Detail) -> String {
    match format {
        Format::Json => json(object) + "\n",
        Format::Yaml => yaml(object),
        Format::Table | Format::Wide => {
            let mut table = Table::without_header();
            let full = detail == Detail::Full || format == Format::Wide;
            for (name, cell) in BASE.iter().copied().chain(detail_rows(kind, full)) {
                table.push(vec![name.to_owned(), cell(object)]);
            }
            let width = (format == Format::Table).then(table_width);
            table.render(width)
        }
    }
}

/// A list of objects: a table with a header, or a JSON/YAML list.
pub fn objects(kind: &str, items: &[Value], format: Format) -> String {
    match format {
        Format::Json => json(&Value::Array(items.to_vec())) + "\n",
        Format::Yaml => yaml(&Value::Array(items.to_vec())),
        Format::Table | Format::Wide => {
            let columns: Vec<(&str, Cell)> = BASE
                .iter()
                .copied()
                .chain(list_columns(kind, format == Format::Wide))
                .collect();
            let mut table =
                Table::with_header(columns.iter().map(|(name, _)| (*name).to_owned()).collect());
            for item in items {
                table.push(columns.iter().map(|(_, cell)| cell(item)).collect());
            }
            let width = (format == Format::Table).then(table_width);
            table.render(width)
        }
    }
}

/// One line of `watch` output in table format.
pub fn event_line(event_type: &str, object: &Value) -> String {
    let name = plain(at(object, "/metadata/name"));
    let who = match at(object, "/metadata/namespace").as_str() {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name,
    };
    let state = match at(object, "/status/state") {
        Value::Null => String::new(),
        state => plain(state),
    };
    format!("{event_type:<9} {who:<40} {state}")
        .trim_end()
        .to_owned()
}

/// The current `status.state` of an object, if it has one.
pub fn current_state(object: &Value) -> Option<&str> {
    at(object, "/status/state").as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_look_like_krakes() {
        assert_eq!(repr(&serde_json::json!(["location=DE"])), "['location=DE']");
        assert_eq!(list(&Value::Null), "[]");
        assert_eq!(
            timestamp(&serde_json::json!("2026-11-23T00:01:52.404832+00:00")),
            "2026-11-23 00:01:52"
        );
        assert_eq!(mapping(&serde_json::json!({"env": "prod"})), "env: prod");
        assert_eq!(mapping(&serde_json::json!({})), "None");
        assert_eq!(
            json(&serde_json::json!({"b": 1, "a": {"d": 2, "c": 3}})),
            "{\n  \"a\": {\n    \"c\": 3,\n    \"d\": 2\n  },\n  \"b\": 1\n}"
        );
    }
}
