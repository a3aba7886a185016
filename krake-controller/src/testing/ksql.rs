//! [`FakeKsql`]: an in-process KSQL server (the REST `/query` endpoint) over
//! tables of values set at run time, recording the requests it gets.
//!
//! It takes `POST /query` with `Content-Type: application/vnd.ksql.v1+json`
//! (else 415) and a body `{"ksql": "SELECT <column> FROM <table> WHERE
//! <column> = '<key>';", "streamsProperties": {}}` (else 400 with a KSQL
//! `statement_error`), and answers `[{"header": ...}, {"row": {"columns":
//! [<value>]}}]` for the row of `<key>` in `<table>`, or only the header if
//! there is none. It can be told to fail, hang or answer garbage
//! ([`Behaviour`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use krake_controller::metrics_provider::{MetricsProviders, ProvidersConfig};
//! use krake_controller::testing::ksql::FakeKsql;
//! use krake_data::kinds::core::{KafkaSpec, MetricsProviderSpec};
//!
//! let ksql = FakeKsql::start().await?;
//! ksql.set("heat_demand", "zone_1", 0.42);
//! let spec = MetricsProviderSpec::Kafka(KafkaSpec {
//!     comparison_column: "zone".to_owned(),
//!     value_column: "demand".to_owned(),
//!     table: "heat_demand".to_owned(),
//!     url: ksql.url(),
//! });
//! let providers = MetricsProviders::new(ProvidersConfig::default());
//! assert_eq!(providers.query("kafka", &spec, "zone_1").await, Ok(0.42));
//! assert_eq!(
//!     ksql.requests()[0].body,
//!     r#"{"ksql":"SELECT demand FROM heat_demand WHERE zone = 'zone_1';","streamsProperties":{}}"#
//! );
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::fake_backend::{Behaviour, RecordedRequest, Recorder};
use super::server::Server;

/// The media type of KSQL's REST API.
const KSQL_MEDIA_TYPE: &str = "application/vnd.ksql.v1+json";

/// A fake KSQL server on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct FakeKsql {
    state: Arc<KsqlState>,
    server: Server,
}

/// The tables and the recorder.
#[derive(Debug)]
struct KsqlState {
    /// `(table, key)` to the value column's value.
    rows: Mutex<HashMap<(String, String), serde_json::Value>>,
    recorder: Arc<Recorder>,
}

impl FakeKsql {
    /// Starts a fake with empty tables.
    pub async fn start() -> std::io::Result<FakeKsql> {
        let recorder = Recorder::new();
        let state = Arc::new(KsqlState {
            rows: Mutex::new(HashMap::new()),
            recorder: Arc::clone(&recorder),
        });
        let router = Router::new()
            .route("/query", post(query))
            .with_state(Arc::clone(&state));
        let server = Server::start(router, recorder.shutdown.clone()).await?;
        Ok(FakeKsql { state, server })
    }

    /// The base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.address())
    }

    /// Sets the value of the row `key` of `table` (a number, or a string
    /// such as `"0.5"` or `"not a number"`).
    pub fn set(&self, table: &str, key: &str, value: impl Into<serde_json::Value>) {
        self.rows()
            .insert((table.to_owned(), key.to_owned()), value.into());
    }

    /// Removes the row `key` of `table`.
    pub fn remove(&self, table: &str, key: &str) {
        self.rows().remove(&(table.to_owned(), key.to_owned()));
    }

    /// What to do with the next requests.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.state.recorder.set_behaviour(behaviour);
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        self.state.recorder.count()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.recorder.requests()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), serde_json::Value>> {
        self.state
            .rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `POST /query`.
async fn query(
    State(state): State<Arc<KsqlState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorder = Arc::clone(&state.recorder);
    recorder
        .handle(method, uri, headers, body, |request| {
            answer(&state, request)
        })
        .await
}

/// The normal answer to `request`.
fn answer(state: &KsqlState, request: &RecordedRequest) -> Response {
    if request.header("content-type") != Some(KSQL_MEDIA_TYPE) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected Content-Type application/vnd.ksql.v1+json",
        )
            .into_response();
    }
    let statement = serde_json::from_str::<serde_json::Value>(&request.body)
        .ok()
        .and_then(|body| body.get("ksql")?.as_str().map(str::to_owned));
    let Some(statement) = statement else {
        return statement_error("the body has no \"ksql\" statement", "");
    };
    let Some(select) = parse_select(&statement) else {
        return statement_error("line 1:1: mismatched input", &statement);
    };
    let value = state
        .rows
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&(select.table, select.key))
        .cloned();
    let mut body = vec![serde_json::json!({"header": {
        "queryId": "transient_KRAKE_TEST_1",
        "schema": format!("`{}` DOUBLE", select.column.to_uppercase()),
    }})];
    if let Some(value) = value {
        body.push(serde_json::json!({"row": {"columns": [value]}}));
    }
    (
        [(header::CONTENT_TYPE, KSQL_MEDIA_TYPE)],
        serde_json::Value::Array(body).to_string(),
    )
        .into_response()
}

/// KSQL's answer to a statement it cannot run.
fn statement_error(message: &str, statement: &str) -> Response {
    let body = serde_json::json!({
        "@type": "statement_error",
        "error_code": 40001,
        "message": message,
        "statementText": statement,
        "entities": [],
    });
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, KSQL_MEDIA_TYPE)],
        body.to_string(),
    )
        .into_response()
}

/// A parsed `SELECT <column> FROM <table> WHERE <column> = '<key>';`.
struct Select {
    column: String,
    table: String,
    key: String,
}

/// Parses the one statement shape the fake understands.
fn parse_select(statement: &str) -> Option<Select> {
    let rest = statement.strip_prefix("SELECT ")?;
    let (column, rest) = identifier(rest)?;
    let rest = rest.strip_prefix(" FROM ")?;
    let (table, rest) = identifier(rest)?;
    let rest = rest.strip_prefix(" WHERE ")?;
    let (_, rest) = identifier(rest)?;
    let mut rest = rest.strip_prefix(" = '")?;
    let mut key = String::new();
    loop {
        let end = rest.find('\'')?;
        key.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('\'') {
            Some(after) => {
                key.push('\'');
                rest = after;
            }
            None => break,
        }
    }
    (rest == ";").then(|| Select {
        column: column.to_owned(),
        table: table.to_owned(),
        key,
    })
}

/// A leading `[A-Za-z0-9_]+` and what follows.
fn identifier(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|char: char| !(char.is_ascii_alphanumeric() || char == '_'))
        .unwrap_or(text.len());
    (end > 0).then(|| text.split_at(end))
}
