//! [`FakeInflux`]: an in-process InfluxDB 2 (the `/api/v2/query` endpoint)
//! over measurements whose last values are set at run time, recording the
//! requests it gets.
//!
//! It takes `POST /api/v2/query?org=<org>` with `Authorization: Token
//! <token>` (else 401), the configured org (else 404) and a Flux body
//! naming the configured bucket in `from(bucket: "...")` (else 404) and a
//! measurement in `r._measurement == "..."` (else 400), and answers
//! annotated CSV (CRLF line ends, as InfluxDB does) with one record holding
//! the measurement's value, or an empty table if it has none. It can be
//! told to fail, hang or answer garbage ([`Behaviour`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use krake_controller::metrics_provider::{MetricsProviders, ProvidersConfig};
//! use krake_controller::testing::influx::FakeInflux;
//! use krake_data::kinds::core::{InfluxSpec, MetricsProviderSpec};
//!
//! let influx = FakeInflux::start().await?;
//! influx.set("heat_demand_zone_1", 0.42);
//! let spec = MetricsProviderSpec::Influx(InfluxSpec {
//!     url: influx.url(),
//!     token: influx.token().to_owned(),
//!     org: influx.org().to_owned(),
//!     bucket: influx.bucket().to_owned(),
//! });
//! let providers = MetricsProviders::new(ProvidersConfig::default());
//! assert_eq!(providers.query("influx", &spec, "heat_demand_zone_1").await, Ok(0.42));
//! assert_eq!(influx.request_count(), 1);
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

/// The token [`FakeInflux::start`] accepts.
pub const TOKEN: &str = "krake-test-token";
/// The organization of [`FakeInflux::start`].
pub const ORG: &str = "krake";
/// The bucket of [`FakeInflux::start`].
pub const BUCKET: &str = "metrics";

/// A fake InfluxDB 2 on a free loopback port, stopped when dropped.
#[derive(Debug)]
pub struct FakeInflux {
    state: Arc<InfluxState>,
    server: Server,
}

/// The measurements, the credentials and the recorder.
#[derive(Debug)]
struct InfluxState {
    /// Measurement to the text of its last `_value`.
    values: Mutex<HashMap<String, String>>,
    token: String,
    org: String,
    bucket: String,
    recorder: Arc<Recorder>,
}

impl FakeInflux {
    /// Starts a fake accepting [`TOKEN`], [`ORG`] and [`BUCKET`], with no
    /// measurements.
    pub async fn start() -> std::io::Result<FakeInflux> {
        Self::start_with(TOKEN, ORG, BUCKET).await
    }

    /// Starts a fake accepting these credentials.
    pub async fn start_with(token: &str, org: &str, bucket: &str) -> std::io::Result<FakeInflux> {
        let recorder = Recorder::new();
        let state = Arc::new(InfluxState {
            values: Mutex::new(HashMap::new()),
            token: token.to_owned(),
            org: org.to_owned(),
            bucket: bucket.to_owned(),
            recorder: Arc::clone(&recorder),
        });
        let router = Router::new()
            .route("/api/v2/query", post(query))
            .with_state(Arc::clone(&state));
        let server = Server::start(router, recorder.shutdown.clone()).await?;
        Ok(FakeInflux { state, server })
    }

    /// The base URL, such as `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.address())
    }

    /// The token it accepts.
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// Its organization.
    pub fn org(&self) -> &str {
        &self.state.org
    }

    /// Its bucket.
    pub fn bucket(&self) -> &str {
        &self.state.bucket
    }

    /// Sets the last value of `measurement`.
    pub fn set(&self, measurement: &str, value: f64) {
        self.set_text(measurement, &value.to_string());
    }

    /// Sets the last value of `measurement` to any text (such as `abc`, to
    /// test values that are not numbers).
    pub fn set_text(&self, measurement: &str, value: &str) {
        self.values()
            .insert(measurement.to_owned(), value.to_owned());
    }

    /// Removes `measurement`.
    pub fn remove(&self, measurement: &str) {
        self.values().remove(measurement);
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

    fn values(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.state
            .values
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// `POST /api/v2/query`.
async fn query(
    State(state): State<Arc<InfluxState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorder = Arc::clone(&state.recorder);
    let org = query_param(&uri, "org");
    recorder
        .handle(method, uri, headers, body, |request| {
            answer(&state, org.as_deref(), request)
        })
        .await
}

/// The normal answer to `request`.
fn answer(state: &InfluxState, org: Option<&str>, request: &RecordedRequest) -> Response {
    if request.header("authorization") != Some(&format!("Token {}", state.token)) {
        return influx_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unauthorized access",
        );
    }
    if org != Some(state.org.as_str()) {
        return influx_error(
            StatusCode::NOT_FOUND,
            "not found",
            &format!("organization name {:?} not found", org.unwrap_or("")),
        );
    }
    let bucket = literal_after(&request.body, "from(bucket: ");
    if bucket.as_deref() != Some(state.bucket.as_str()) {
        return influx_error(
            StatusCode::NOT_FOUND,
            "not found",
            &format!("failed to initialize execute state: could not find bucket {bucket:?}"),
        );
    }
    let Some(measurement) = literal_after(&request.body, "r._measurement == ") else {
        return influx_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            "compilation failed: no measurement filter",
        );
    };
    let value = state
        .values
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&measurement)
        .cloned();
    let body = match value {
        // InfluxDB answers a blank line for no tables.
        None => "\r\n".to_owned(),
        Some(value) => format!(
            "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,double,string,string\r\n\
             #group,false,false,true,true,false,false,true,true\r\n\
             #default,_result,,,,,,,\r\n\
             ,result,table,_start,_stop,_time,_value,_field,_measurement\r\n\
             ,,0,2024-05-01T09:00:00Z,2024-05-01T10:00:00Z,2024-05-01T09:59:59Z,{},value,{}\r\n\
             \r\n",
            csv_field(&value),
            csv_field(&measurement)
        ),
    };
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// InfluxDB's JSON error body.
fn influx_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message });
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

/// The value of the query parameter `name`, percent-decoded.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).ok()?;
    pairs
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// The Flux string literal right after `prefix` in `flux`, unescaped.
fn literal_after(flux: &str, prefix: &str) -> Option<String> {
    let start = flux.find(prefix)? + prefix.len();
    let mut chars = flux[start..].chars();
    if chars.next()? != '"' {
        return None;
    }
    let mut text = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(text),
            '\\' => match chars.next()? {
                'n' => text.push('\n'),
                'r' => text.push('\r'),
                't' => text.push('\t'),
                other => text.push(other),
            },
            other => text.push(other),
        }
    }
}

/// `field` as a CSV field, quoted if it needs to be.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}
