//! Metrics providers end to end: a real Prometheus scraping an exporter,
//! in-process KSQL and InfluxDB fakes, static providers and the cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use krake_controller::metrics_provider::{MetricsProviders, ProviderError, ProvidersConfig};
use krake_controller::testing::Behaviour;
use krake_controller::testing::influx::FakeInflux;
use krake_controller::testing::ksql::FakeKsql;
use krake_data::kinds::core::{
    InfluxSpec, KafkaSpec, MetricsProviderSpec, PrometheusSpec, StaticSpec,
};
use krake_data::reason::ReasonCode;
use krake_testkit::prometheus::Exporter;
use krake_testkit::prometheus::PrometheusProcess;

fn providers(ttl: Duration, timeout: Duration) -> MetricsProviders {
    MetricsProviders::new(ProvidersConfig {
        timeout,
        cache_ttl: ttl,
    })
}

/// No caching, this timeout.
fn short_timeout(timeout: Duration) -> MetricsProviders {
    providers(Duration::ZERO, timeout)
}

/// No caching, the default timeout.
fn uncached() -> MetricsProviders {
    providers(Duration::ZERO, Duration::from_secs(20))
}

fn prometheus_spec(url: String) -> MetricsProviderSpec {
    MetricsProviderSpec::Prometheus(PrometheusSpec { url })
}

fn kafka_spec(ksql: &FakeKsql, table: &str) -> MetricsProviderSpec {
    MetricsProviderSpec::Kafka(KafkaSpec {
        comparison_column: "zone".to_owned(),
        value_column: "demand".to_owned(),
        table: table.to_owned(),
        url: ksql.url(),
    })
}

fn influx_spec(influx: &FakeInflux) -> MetricsProviderSpec {
    MetricsProviderSpec::Influx(InfluxSpec {
        url: influx.url(),
        token: influx.token().to_owned(),
        org: influx.org().to_owned(),
        bucket: influx.bucket().to_owned(),
    })
}

#[track_caller]
fn assert_invalid(result: Result<f64, ProviderError>, needle: &str) {
    match result {
        Err(ProviderError::InvalidMetric { message, .. }) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected InvalidMetric ({needle}), got {other:?}"),
    }
}

#[track_caller]
fn assert_unreachable(result: Result<f64, ProviderError>, needle: &str) {
    match result {
        Err(ProviderError::Unreachable { message, .. }) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
        other => panic!("expected Unreachable ({needle}), got {other:?}"),
    }
}

/// Polls `query` until it gives `expected` (at most `within`).
async fn eventually(
    within: Duration,
    expected: f64,
    mut query: impl AsyncFnMut() -> Result<f64, ProviderError>,
) {
    let deadline = Instant::now() + within;
    loop {
        let got = query().await;
        if got == Ok(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {expected} within {within:?}; last {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A reverse proxy serving another server under a path prefix, recording
/// the paths it was asked.
struct PrefixProxy {
    address: std::net::SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PrefixProxy {
    async fn start(prefix: &'static str, upstream: String) -> PrefixProxy {
        let paths = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&paths);
        let client = reqwest::Client::new();
        let router = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let paths = Arc::clone(&recorded);
            let client = client.clone();
            let upstream = upstream.clone();
            async move {
                let path = uri.path_and_query().unwrap().to_string();
                paths.lock().unwrap().push(path.clone());
                let Some(rest) = path.strip_prefix(prefix) else {
                    return (axum::http::StatusCode::NOT_FOUND, String::new());
                };
                let answer = client
                    .get(format!("{upstream}{rest}"))
                    .send()
                    .await
                    .unwrap();
                let status = axum::http::StatusCode::from_u16(answer.status().as_u16()).unwrap();
                (status, answer.text().await.unwrap())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        PrefixProxy {
            address,
            paths,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The prefixed paths asked for.
    fn paths(&self) -> Vec<String> {
        let paths = self.paths.lock().unwrap();
        paths
            .iter()
            .filter(|path| path.starts_with("/prom"))
            .cloned()
            .collect()
    }
}

impl Drop for PrefixProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// Prometheus (the real one)

#[tokio::test]
async fn prometheus_values_are_read_and_changes_seen_after_the_ttl() {
    let exporter = Exporter::start().await.unwrap();
    exporter.set("heat_demand_zone_1", 0.42);
    exporter.set("heat_demand_zone_2", 7.0);
    let prometheus = PrometheusProcess::start(&[exporter.address()])
        .await
        .unwrap();
    prometheus
        .wait_for_value("heat_demand_zone_1", 0.42)
        .await
        .unwrap();
    let ttl = Duration::from_millis(300);
    let providers = providers(ttl, Duration::from_secs(5));
    let spec = prometheus_spec(prometheus.url());

    assert_eq!(
        providers.query("prom", &spec, "heat_demand_zone_1").await,
        Ok(0.42)
    );
    assert_eq!(
        providers.query("prom", &spec, "heat_demand_zone_2").await,
        Ok(7.0)
    );
    assert!(exporter.request_count() >= 1);

    // Behind a reverse proxy under a path prefix, with and without a
    // trailing slash; and a trailing slash on the bare URL.
    let proxy = PrefixProxy::start("/prom", prometheus.url()).await;
    for url in [
        format!("{}/", prometheus.url()),
        format!("{}/prom", proxy.url()),
        format!("{}/prom/", proxy.url()),
    ] {
        let spec = prometheus_spec(url.clone());
        assert_eq!(
            providers.query(&url, &spec, "heat_demand_zone_1").await,
            Ok(0.42),
            "{url}"
        );
    }
    assert_eq!(
        proxy.paths(),
        vec!["/prom/api/v1/query?query=heat_demand_zone_1"; 2]
    );
    // Without the prefix, the proxy has nothing: 404.
    let unprefixed = prometheus_spec(proxy.url());
    assert_invalid(
        providers
            .query("no-prefix", &unprefixed, "heat_demand_zone_1")
            .await,
        "404",
    );

    // A metric nobody exports.
    assert_invalid(
        providers.query("prom", &spec, "no_such_metric").await,
        "no series named \"no_such_metric\"",
    );
    // Not a valid PromQL expression: Prometheus answers 400.
    assert_invalid(providers.query("prom", &spec, "heat{").await, "400");

    // A new value: the cached one until the TTL, then the new one once
    // Prometheus has scraped it.
    exporter.set("heat_demand_zone_1", 0.5);
    prometheus
        .wait_for_value("heat_demand_zone_1", 0.5)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), 0.5, async || {
        providers.query("prom", &spec, "heat_demand_zone_1").await
    })
    .await;

    // Prometheus gone (killed on drop): unreachable.
    drop(prometheus);
    let uncached = uncached();
    assert_unreachable(
        uncached.query("prom", &spec, "heat_demand_zone_1").await,
        "error sending request",
    );
}

#[tokio::test]
async fn an_unreachable_prometheus_is_unreachable() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = prometheus_spec(format!("http://127.0.0.1:{port}"));
    let error = uncached().query("prom", &spec, "up").await.unwrap_err();
    assert_eq!(error.code(), ReasonCode::UnreachableMetricsProvider);
    assert!(error.to_string().contains("prom"), "{error}");
}

// KSQL

#[tokio::test]
async fn ksql_values_are_read_with_the_exact_statement_and_headers() {
    let ksql = FakeKsql::start().await.unwrap();
    ksql.set("heat_demand", "zone_1", 0.42);
    ksql.set("heat_demand", "zone_2", "1.5");
    let providers = uncached();
    let spec = kafka_spec(&ksql, "heat_demand");

    assert_eq!(providers.query("kafka", &spec, "zone_1").await, Ok(0.42));
    assert_eq!(providers.query("kafka", &spec, "zone_2").await, Ok(1.5));

    let requests = ksql.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].uri, "/query");
    assert_eq!(
        requests[0].header("content-type"),
        Some("application/vnd.ksql.v1+json")
    );
    let body: serde_json::Value = serde_json::from_str(&requests[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "ksql": "SELECT demand FROM heat_demand WHERE zone = 'zone_1';",
            "streamsProperties": {},
        })
    );
}

#[tokio::test]
async fn ksql_quotes_in_metric_names_are_doubled() {
    let ksql = FakeKsql::start().await.unwrap();
    ksql.set("t", "it's", 3.0);
    let spec = kafka_spec(&ksql, "t");
    assert_eq!(uncached().query("kafka", &spec, "it's").await, Ok(3.0));
    let body: serde_json::Value = serde_json::from_str(&ksql.requests()[0].body).unwrap();
    assert_eq!(body["ksql"], "SELECT demand FROM t WHERE zone = 'it''s';");
}

#[tokio::test]
async fn ksql_bad_identifiers_are_rejected_without_a_request() {
    let ksql = FakeKsql::start().await.unwrap();
    let providers = uncached();
    let injected = [
        ("t; DROP TABLE x", "demand", "zone"),
        ("t", "demand, secret", "zone"),
        ("t", "demand", "zone = zone OR 1"),
        ("", "demand", "zone"),
    ];
    for (table, value_column, comparison_column) in injected {
        let spec = MetricsProviderSpec::Kafka(KafkaSpec {
            comparison_column: comparison_column.to_owned(),
            value_column: value_column.to_owned(),
            table: table.to_owned(),
            url: ksql.url(),
        });
        assert_invalid(
            providers.query("kafka", &spec, "m").await,
            "not a plain identifier",
        );
    }
    assert_eq!(ksql.request_count(), 0);
}

#[tokio::test]
async fn ksql_failures_map_to_unreachable_or_invalid() {
    let ksql = FakeKsql::start().await.unwrap();
    ksql.set("t", "text", "not a number");
    let providers = uncached();
    let spec = kafka_spec(&ksql, "t");

    assert_invalid(providers.query("kafka", &spec, "missing").await, "no row");
    assert_invalid(
        providers.query("kafka", &spec, "text").await,
        "not a number",
    );

    ksql.set_behaviour(Behaviour::Fail(503));
    let error = providers.query("kafka", &spec, "text").await.unwrap_err();
    assert_eq!(error.code(), ReasonCode::UnreachableMetricsProvider);
    assert!(error.to_string().contains("503"), "{error}");

    ksql.set_behaviour(Behaviour::Raw {
        status: 200,
        content_type: "application/json".to_owned(),
        body: "[{\"header\": ".to_owned(),
    });
    assert_invalid(providers.query("kafka", &spec, "text").await, "not JSON");
    ksql.set_behaviour(Behaviour::Raw {
        status: 200,
        content_type: "application/json".to_owned(),
        body: r#"{"row": {"columns": [1]}}"#.to_owned(),
    });
    assert_invalid(
        providers.query("kafka", &spec, "text").await,
        "not a JSON array",
    );
    ksql.set_behaviour(Behaviour::Raw {
        status: 400,
        content_type: "application/json".to_owned(),
        body: r#"{"@type":"statement_error","message":"Table T does not exist"}"#.to_owned(),
    });
    assert_invalid(
        providers.query("kafka", &spec, "text").await,
        "Table T does not exist",
    );
}

#[tokio::test]
async fn ksql_hanging_is_unreachable_within_about_the_timeout() {
    let ksql = FakeKsql::start().await.unwrap();
    ksql.set_behaviour(Behaviour::Hang);
    let timeout = Duration::from_millis(300);
    let providers = providers(Duration::ZERO, timeout);
    let spec = kafka_spec(&ksql, "t");
    let started = Instant::now();
    assert_unreachable(
        providers.query("kafka", &spec, "m").await,
        "timed out after 300ms",
    );
    let took = started.elapsed();
    assert!(took >= timeout, "{took:?}");
    assert!(took < timeout + Duration::from_secs(2), "{took:?}");
    assert_eq!(ksql.request_count(), 1);
}

// InfluxDB

#[tokio::test]
async fn influx_values_are_read_with_the_exact_query_and_headers() {
    let influx = FakeInflux::start().await.unwrap();
    influx.set("heat_demand_zone_1", 0.42);
    let spec = influx_spec(&influx);
    assert_eq!(
        uncached()
            .query("influx", &spec, "heat_demand_zone_1")
            .await,
        Ok(0.42)
    );
    let requests = influx.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.uri, format!("/api/v2/query?org={}", influx.org()));
    assert_eq!(
        request.header("authorization"),
        Some(format!("Token {}", influx.token()).as_str())
    );
    assert_eq!(request.header("content-type"), Some("application/vnd.flux"));
    assert_eq!(request.header("accept"), Some("application/csv"));
    assert_eq!(
        request.body,
        format!(
            "from(bucket: \"{}\") |> range(start: -1h) |> filter(fn: (r) => r._measurement == \"heat_demand_zone_1\") |> last()",
            influx.bucket()
        )
    );
}

#[tokio::test]
async fn influx_quotes_and_backslashes_in_names_are_escaped() {
    let influx = FakeInflux::start_with("t0k", "my org", "b\"ucket")
        .await
        .unwrap();
    let metric = r#"say "hi" \ ${there}"#;
    influx.set(metric, -2.5);
    let spec = influx_spec(&influx);
    assert_eq!(uncached().query("influx", &spec, metric).await, Ok(-2.5));
    let request = &influx.requests()[0];
    assert_eq!(request.uri, "/api/v2/query?org=my+org");
    assert_eq!(
        request.body,
        r#"from(bucket: "b\"ucket") |> range(start: -1h) |> filter(fn: (r) => r._measurement == "say \"hi\" \\ \${there}") |> last()"#
    );
}

#[tokio::test]
async fn influx_failures_map_to_unreachable_or_invalid() {
    let influx = FakeInflux::start().await.unwrap();
    influx.set_text("text", "abc");
    let providers = uncached();
    let spec = influx_spec(&influx);

    assert_invalid(
        providers.query("influx", &spec, "missing").await,
        "no table",
    );
    assert_invalid(
        providers.query("influx", &spec, "text").await,
        "not a number",
    );
    // A wrong token: 401.
    let MetricsProviderSpec::Influx(mut wrong) = spec.clone() else {
        unreachable!()
    };
    wrong.token = "wrong".to_owned();
    assert_invalid(
        providers
            .query("influx", &MetricsProviderSpec::Influx(wrong), "text")
            .await,
        "401",
    );

    influx.set_behaviour(Behaviour::Fail(500));
    assert_unreachable(providers.query("influx", &spec, "text").await, "500");

    influx.set_behaviour(Behaviour::Raw {
        status: 200,
        content_type: "text/csv".to_owned(),
        body: ",result,table,_time\r\n,,0,2024\r\n".to_owned(),
    });
    assert_invalid(
        providers.query("influx", &spec, "text").await,
        "no _value column",
    );

    influx.set_behaviour(Behaviour::Hang);
    let short = short_timeout(Duration::from_millis(200));
    let started = Instant::now();
    assert_unreachable(short.query("influx", &spec, "text").await, "timed out");
    assert!(started.elapsed() < Duration::from_secs(2));
}

// Static

#[tokio::test]
async fn static_values_are_read_from_the_spec() {
    let spec = MetricsProviderSpec::Static(StaticSpec {
        metrics: IndexMap::from([("heat".to_owned(), 0.25), ("cold".to_owned(), -1.0)]),
    });
    let providers = providers(Duration::from_secs(5), Duration::from_secs(1));
    assert_eq!(providers.query("static", &spec, "heat").await, Ok(0.25));
    assert_eq!(providers.query("static", &spec, "cold").await, Ok(-1.0));
    let error = providers.query("static", &spec, "warm").await.unwrap_err();
    assert_eq!(
        error,
        ProviderError::InvalidMetric {
            provider: "static".to_owned(),
            metric: "warm".to_owned(),
            message: "no such metric in the static provider".to_owned(),
        }
    );
    assert_eq!(error.code(), ReasonCode::InvalidMetric);
}

// The cache

#[tokio::test]
async fn concurrent_queries_share_one_request_and_the_ttl_bounds_reuse() {
    let ksql = FakeKsql::start().await.unwrap();
    ksql.set("t", "m", 1.0);
    // The request stays in flight while all queries arrive.
    ksql.set_behaviour(Behaviour::Delay(Duration::from_millis(200)));
    // Long enough that even a slow machine spawns all queries within it.
    let ttl = Duration::from_millis(1500);
    let providers = providers(ttl, Duration::from_secs(10));
    let spec = kafka_spec(&ksql, "t");

    let queries: Vec<_> = (0..1000)
        .map(|_| {
            let providers = providers.clone();
            let spec = spec.clone();
            tokio::spawn(async move { providers.query("kafka", &spec, "m").await })
        })
        .collect();
    let answered_at = Instant::now();
    for query in queries {
        assert_eq!(query.await.unwrap(), Ok(1.0));
    }
    assert_eq!(ksql.request_count(), 1);

    // Fresh: still cached, even though the value changed.
    ksql.set_behaviour(Behaviour::Answer);
    ksql.set("t", "m", 2.0);
    let cached = providers.query("kafka", &spec, "m").await;
    if answered_at.elapsed() < ttl {
        assert_eq!(cached, Ok(1.0));
        assert_eq!(ksql.request_count(), 1);
    }
    // After the TTL: one more request, the new value.
    tokio::time::sleep(ttl).await;
    assert_eq!(providers.query("kafka", &spec, "m").await, Ok(2.0));
    assert_eq!(ksql.request_count(), 2);
}

#[tokio::test]
async fn failures_are_cached_for_the_ttl_then_a_recovery_is_seen() {
    let influx = FakeInflux::start().await.unwrap();
    influx.set("m", 4.0);
    influx.set_behaviour(Behaviour::Fail(503));
    let ttl = Duration::from_millis(400);
    let providers = providers(ttl, Duration::from_secs(5));
    let spec = influx_spec(&influx);

    let started = Instant::now();
    assert_unreachable(providers.query("influx", &spec, "m").await, "503");
    influx.set_behaviour(Behaviour::Answer);
    let again = providers.query("influx", &spec, "m").await;
    if started.elapsed() < ttl {
        assert_unreachable(again, "503");
        assert_eq!(influx.request_count(), 1);
    }
    eventually(Duration::from_secs(3), 4.0, async || {
        providers.query("influx", &spec, "m").await
    })
    .await;
    // One request for the failure, at most one more before it expired,
    // and one for the recovery: not one per poll.
    assert!(influx.request_count() <= 3, "{}", influx.request_count());
}

#[tokio::test]
async fn different_metrics_providers_and_specs_are_not_mixed_up() {
    let ksql = FakeKsql::start().await.unwrap();
    ksql.set("a", "m", 1.0);
    ksql.set("a", "n", 2.0);
    ksql.set("b", "m", 3.0);
    let providers = providers(Duration::from_secs(60), Duration::from_secs(5));
    let a = kafka_spec(&ksql, "a");
    let b = kafka_spec(&ksql, "b");

    let answers = futures::future::join_all([
        providers.query("one", &a, "m"),
        providers.query("one", &a, "n"),
        providers.query("one", &b, "m"),
        providers.query("two", &a, "m"),
    ])
    .await;
    assert_eq!(answers, vec![Ok(1.0), Ok(2.0), Ok(3.0), Ok(1.0)]);
    assert_eq!(ksql.request_count(), 4);
    // All cached now.
    assert_eq!(providers.query("one", &b, "m").await, Ok(3.0));
    assert_eq!(providers.query("two", &a, "m").await, Ok(1.0));
    assert_eq!(ksql.request_count(), 4);
    assert_eq!(providers.cache().len(), 4);
}

#[tokio::test]
async fn a_zero_ttl_sends_every_query_to_the_backend() {
    let influx = FakeInflux::start().await.unwrap();
    influx.set("m", 1.0);
    let providers = uncached();
    let spec = influx_spec(&influx);
    for round in 1..=5 {
        assert_eq!(providers.query("influx", &spec, "m").await, Ok(1.0));
        assert_eq!(influx.request_count(), round);
    }
    let concurrent =
        futures::future::join_all((0..20).map(|_| providers.query("influx", &spec, "m"))).await;
    assert!(concurrent.iter().all(|answer| *answer == Ok(1.0)));
    assert_eq!(influx.request_count(), 25);
    assert!(providers.cache().is_empty());
}

#[test]
fn error_codes_are_krakes() {
    let unreachable = ProviderError::Unreachable {
        provider: "p".to_owned(),
        message: "m".to_owned(),
    };
    let invalid = ProviderError::InvalidMetric {
        provider: "p".to_owned(),
        metric: "x".to_owned(),
        message: "m".to_owned(),
    };
    assert_eq!(unreachable.code(), ReasonCode::UnreachableMetricsProvider);
    assert_eq!(unreachable.code().number(), 92);
    assert_eq!(invalid.code(), ReasonCode::InvalidMetric);
    assert_eq!(invalid.code().number(), 91);
}
