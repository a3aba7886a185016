//! The Kafka backend: a KSQL server's REST API.
//!
//! A metric is one row of a KSQL table. It is read with
//!
//! ```text
//! POST {url}/query
//! Content-Type: application/vnd.ksql.v1+json
//!
//! {"ksql": "SELECT <value_column> FROM <table> WHERE <comparison_column> = '<metric>';",
//!  "streamsProperties": {}}
//! ```
//!
//! and KSQL answers a JSON array, a header then the rows:
//! `[{"header": {...}}, {"row": {"columns": [0.42]}}]`. As in Krake, the
//! value is `body[1].row.columns[0]`, a number or a numeric string.
//!
//! The metric's name is a string literal: a `'` in it is doubled. The
//! table and columns are identifiers and cannot be quoted safely, so they
//! must be plain `[A-Za-z0-9_]+`; anything else is
//! [`ProviderError::InvalidMetric`] and nothing is sent. An answer
//! without a row, or whose value is not a finite number, is
//! [`ProviderError::InvalidMetric`] too; see the [parent module](super) for
//! the transport errors.

use krake_data::kinds::core::KafkaSpec;
use reqwest::Client;

use super::ProviderError;
use super::http::{self, Query};

/// The media type of KSQL's REST API.
pub const KSQL_MEDIA_TYPE: &str = "application/vnd.ksql.v1+json";

/// Why a KSQL statement could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// A table or column name is not a plain identifier.
    #[error("the {role} {name:?} is not a plain identifier ([A-Za-z0-9_]+)")]
    BadIdentifier {
        /// Which one: `table`, `value_column` or `comparison_column`.
        role: &'static str,
        /// The name.
        name: String,
    },
}

/// The KSQL statement reading `metric` from the table of `spec`:
/// `SELECT <value_column> FROM <table> WHERE <comparison_column> = '<metric>';`.
pub fn statement(spec: &KafkaSpec, metric: &str) -> Result<String, StatementError> {
    let value_column = identifier("value_column", &spec.value_column)?;
    let table = identifier("table", &spec.table)?;
    let comparison_column = identifier("comparison_column", &spec.comparison_column)?;
    Ok(format!(
        "SELECT {value_column} FROM {table} WHERE {comparison_column} = '{}';",
        metric.replace('\'', "''")
    ))
}

/// `name` if it is a plain identifier.
fn identifier<'a>(role: &'static str, name: &'a str) -> Result<&'a str, StatementError> {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if plain {
        Ok(name)
    } else {
        Err(StatementError::BadIdentifier {
            role,
            name: name.to_owned(),
        })
    }
}

/// Asks the KSQL server of `spec` for `metric`.
pub(crate) async fn query(
    client: &Client,
    spec: &KafkaSpec,
    provider: &str,
    metric: &str,
) -> Result<f64, ProviderError> {
    let query = Query { provider, metric };
    let ksql = statement(spec, metric).map_err(|error| query.invalid(error.to_string()))?;
    let endpoint = http::endpoint(query, &spec.url, &["query"])?;
    let body = serde_json::json!({ "ksql": ksql, "streamsProperties": {} });
    let request = client
        .post(endpoint)
        .header(reqwest::header::CONTENT_TYPE, KSQL_MEDIA_TYPE)
        .header(reqwest::header::ACCEPT, KSQL_MEDIA_TYPE)
        .body(body.to_string());
    let answer = http::send(query, request).await?;
    parse(query, &answer)
}

/// The value in a `/query` answer: `body[1].row.columns[0]`.
fn parse(query: Query<'_>, body: &[u8]) -> Result<f64, ProviderError> {
    let answer: serde_json::Value = serde_json::from_slice(body).map_err(|error| {
        query.invalid(format!(
            "the answer is not JSON ({error}): {}",
            http::snippet(body)
        ))
    })?;
    let rows = answer.as_array().ok_or_else(|| {
        query.invalid(format!(
            "the answer is not a JSON array: {}",
            http::snippet(body)
        ))
    })?;
    let row = rows
        .get(1)
        .ok_or_else(|| query.invalid("the table has no row for the metric"))?;
    let value = row
        .pointer("/row/columns/0")
        .ok_or_else(|| query.invalid(format!("the answer's row has no columns: {row}")))?;
    match value {
        serde_json::Value::Number(number) => match number.as_f64() {
            Some(value) => http::finite(query, value),
            None => Err(query.invalid(format!("the value {number} is not a float"))),
        },
        serde_json::Value::String(text) => http::parse_value(query, text),
        other => Err(query.invalid(format!("the value {other} is not a number"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: Query<'static> = Query {
        provider: "ksql",
        metric: "heat",
    };

    fn spec(value: &str, table: &str, comparison: &str) -> KafkaSpec {
        KafkaSpec {
            comparison_column: comparison.to_owned(),
            value_column: value.to_owned(),
            table: table.to_owned(),
            url: "http://ksql".to_owned(),
        }
    }

    #[test]
    fn statements_quote_the_metric() {
        assert_eq!(
            statement(&spec("value", "heat_demand", "zone"), "it's").unwrap(),
            "SELECT value FROM heat_demand WHERE zone = 'it''s';"
        );
        assert_eq!(
            statement(&spec("v", "t", "c"), "''").unwrap(),
            "SELECT v FROM t WHERE c = '''''';"
        );
    }

    #[test]
    fn statements_reject_identifiers_that_are_not_plain() {
        let bad = ["", "a b", "t; DROP TABLE x", "t--", "`t`", "é"];
        for name in bad {
            assert_eq!(
                statement(&spec(name, "t", "c"), "m"),
                Err(StatementError::BadIdentifier {
                    role: "value_column",
                    name: name.to_owned()
                })
            );
            assert!(statement(&spec("v", name, "c"), "m").is_err(), "{name}");
            assert!(statement(&spec("v", "t", name), "m").is_err(), "{name}");
        }
    }

    #[test]
    fn the_value_is_the_first_column_of_the_first_row() {
        let header = r#"{"header":{"queryId":"q","schema":"`VALUE` DOUBLE"}}"#;
        let number = format!(r#"[{header},{{"row":{{"columns":[0.5,"x"]}}}}]"#);
        assert_eq!(parse(QUERY, number.as_bytes()).unwrap(), 0.5);
        let text = format!(r#"[{header},{{"row":{{"columns":["1.25"]}}}}]"#);
        assert_eq!(parse(QUERY, text.as_bytes()).unwrap(), 1.25);
        for bad in [
            "{}".to_owned(),
            "nope".to_owned(),
            format!("[{header}]"),
            format!(r#"[{header},{{"row":{{"columns":[]}}}}]"#),
            format!(r#"[{header},{{"row":{{"columns":[null]}}}}]"#),
            format!(r#"[{header},{{"row":{{"columns":["NaN"]}}}}]"#),
        ] {
            let error = parse(QUERY, bad.as_bytes()).unwrap_err();
            assert!(
                matches!(error, ProviderError::InvalidMetric { .. }),
                "{bad}: {error:?}"
            );
        }
    }
}
