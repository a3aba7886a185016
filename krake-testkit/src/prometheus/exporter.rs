//! [`Exporter`]: a small Prometheus exporter for tests, serving `/metrics`
//! in Prometheus' text format with gauges set at run time, for a real
//! Prometheus ([`PrometheusProcess`](super::PrometheusProcess)) to scrape.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::task::JoinHandle;

/// An exporter on a free loopback port, stopped when dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use krake_testkit::prometheus::Exporter;
///
/// let exporter = Exporter::start().await?;
/// exporter.set("heat_demand_zone_1", 0.42);
/// let text = reqwest::get(format!("{}/metrics", exporter.url()))
///     .await
///     .and_then(|response| response.error_for_status())
///     .map_err(std::io::Error::other)?
///     .text()
///     .await
///     .map_err(std::io::Error::other)?;
/// assert!(text.contains("heat_demand_zone_1 0.42\n"));
/// assert_eq!(exporter.request_count(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Exporter {
    state: Arc<ExporterState>,
    address: SocketAddr,
    /// Serves until aborted (on drop).
    task: JoinHandle<()>,
}

/// The gauges and the request counter.
#[derive(Debug, Default)]
struct ExporterState {
    gauges: Mutex<BTreeMap<String, f64>>,
    requests: AtomicUsize,
}

impl Exporter {
    /// Starts an exporter with no gauges on `127.0.0.1:<free port>`.
    pub async fn start() -> std::io::Result<Exporter> {
        let state = Arc::new(ExporterState::default());
        let router = Router::new()
            .route("/metrics", get(metrics))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // It serves until the task is aborted; an error ends it early,
            // which the test sees as failed scrapes.
            let _ = axum::serve(listener, router).await;
        });
        Ok(Exporter {
            state,
            address,
            task,
        })
    }

    /// The address, the target to scrape.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The base URL, such as `http://127.0.0.1:40123` (the metrics are at
    /// `/metrics`).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sets the gauge `name` (a Prometheus metric name,
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`) to `value`.
    pub fn set(&self, name: &str, value: f64) {
        self.gauges().insert(name.to_owned(), value);
    }

    /// Stops exporting the gauge `name`.
    pub fn remove(&self, name: &str) {
        self.gauges().remove(name);
    }

    /// How many times `/metrics` was asked for.
    pub fn request_count(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn gauges(&self) -> MutexGuard<'_, BTreeMap<String, f64>> {
        self.state
            .gauges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Aborting also drops open connections, which a graceful shutdown
        // would wait for.
        self.task.abort();
    }
}

/// `GET /metrics`.
async fn metrics(State(state): State<Arc<ExporterState>>) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let gauges = state
        .gauges
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut text = String::new();
    for (name, value) in gauges {
        let _ = writeln!(text, "# TYPE {name} gauge");
        let _ = writeln!(text, "{name} {}", format_value(value));
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// A sample value in the text format (`NaN`, `+Inf`, `-Inf` or the
/// shortest decimal that reads back as `value`).
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_in_the_text_format() {
        assert_eq!(format_value(0.42), "0.42");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }
}
