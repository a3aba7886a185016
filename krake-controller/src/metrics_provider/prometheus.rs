//! The Prometheus backend.
//!
//! A metric is read with an instant query, `GET {url}/api/v1/query?query=<metric>`.
//! Prometheus answers
//!
//! ```json
//! {"status": "success", "data": {"resultType": "vector", "result": [
//!     {"metric": {"__name__": "heat_demand_zone_1", "job": "j"}, "value": [1700000000.1, "0.42"]}
//! ]}}
//! ```
//!
//! and, as in Krake, the value is `value[1]` of the first result whose
//! `metric.__name__` is the metric's name. An answer with
//! `"status": "error"`, another result type, no such series, or a value
//! that is not a finite number is [`ProviderError::InvalidMetric`]; see the
//! [parent module](super) for the transport errors.

use reqwest::Client;
use serde::Deserialize;

use super::ProviderError;
use super::http::{self, Query};

/// Asks the Prometheus at `url` for `metric`.
pub(crate) async fn query(
    client: &Client,
    url: &str,
    provider: &str,
    metric: &str,
) -> Result<f64, ProviderError> {
    let query = Query { provider, metric };
    let endpoint = http::endpoint(query, url, &["api", "v1", "query"])?;
    let request = client
        .get(endpoint)
        .query(&[("query", metric)])
        .header(reqwest::header::ACCEPT, "application/json");
    let body = http::send(query, request).await?;
    parse(query, &body)
}

/// An answer of `/api/v1/query`.
#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// Its `data`.
#[derive(Debug, Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// One series of a vector result.
#[derive(Debug, Deserialize)]
struct Series {
    #[serde(default)]
    metric: serde_json::Map<String, serde_json::Value>,
    value: (serde_json::Value, serde_json::Value),
}

/// The metric's value in a `/api/v1/query` answer.
fn parse(query: Query<'_>, body: &[u8]) -> Result<f64, ProviderError> {
    let answer: Answer = serde_json::from_slice(body).map_err(|error| {
        query.invalid(format!(
            "the answer is not a Prometheus query result ({error}): {}",
            http::snippet(body)
        ))
    })?;
    if answer.status != "success" {
        return Err(query.invalid(format!(
            "Prometheus answered status {:?} ({}): {}",
            answer.status,
            answer.error_type.as_deref().unwrap_or("no error type"),
            answer.error.as_deref().unwrap_or("no error message"),
        )));
    }
    let data = answer
        .data
        .ok_or_else(|| query.invalid("the answer has no data"))?;
    if data.result_type != "vector" {
        return Err(query.invalid(format!(
            "the result is a {}, not a vector",
            data.result_type
        )));
    }
    let series: Vec<Series> = serde_json::from_value(data.result)
        .map_err(|error| query.invalid(format!("the result is not a vector: {error}")))?;
    let found = series
        .iter()
        .find(|series| {
            series.metric.get("__name__").and_then(|name| name.as_str()) == Some(query.metric)
        })
        .ok_or_else(|| {
            query.invalid(format!(
                "no series named {:?} (the query gave {} series)",
                query.metric,
                series.len()
            ))
        })?;
    match &found.value.1 {
        serde_json::Value::String(text) => http::parse_value(query, text),
        other => Err(query.invalid(format!("the value {other} is not a number in a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: Query<'static> = Query {
        provider: "prom",
        metric: "heat",
    };

    fn invalid(body: &str) -> String {
        match parse(QUERY, body.as_bytes()) {
            Err(ProviderError::InvalidMetric { message, .. }) => message,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn the_first_series_with_the_metrics_name_gives_the_value() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job":"no name"},"value":[1.5,"7"]},
            {"metric":{"__name__":"other"},"value":[1.5,"8"]},
            {"metric":{"__name__":"heat","zone":"1"},"value":[1.5,"0.42"]},
            {"metric":{"__name__":"heat","zone":"2"},"value":[1.5,"0.99"]}]}}"#;
        assert_eq!(parse(QUERY, body.as_bytes()).unwrap(), 0.42);
    }

    #[test]
    fn bad_answers_are_invalid_metrics() {
        assert!(invalid("not json").contains("not a Prometheus query result"));
        assert!(
            invalid(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#)
                .contains("parse error")
        );
        assert!(
            invalid(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#)
                .contains("no series named \"heat\"")
        );
        assert!(
            invalid(r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#)
                .contains("scalar")
        );
        for value in [r#""NaN""#, r#""+Inf""#, r#""x""#, "3"] {
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"vector","result":[
                {{"metric":{{"__name__":"heat"}},"value":[1,{value}]}}]}}}}"#
            );
            invalid(&body);
        }
    }
}
