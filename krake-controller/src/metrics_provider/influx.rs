//! The InfluxDB 2 backend.
//!
//! A metric is a measurement; its value is the `_value` of its last record
//! in the last hour, read with the Flux query
//!
//! ```text
//! POST {url}/api/v2/query?org=<org>
//! Authorization: Token <token>
//! Content-Type: application/vnd.flux
//! Accept: application/csv
//!
//! from(bucket: "<bucket>") |> range(start: -1h) |> filter(fn: (r) => r._measurement == "<metric>") |> last()
//! ```
//!
//! The bucket and the metric are Flux string literals: `\`, `"` and `${`
//! in them are escaped. InfluxDB answers annotated CSV:
//!
//! ```text
//! #datatype,string,long,dateTime:RFC3339,double,string
//! #group,false,false,false,false,true
//! #default,_result,,,,
//! ,result,table,_time,_value,_measurement
//! ,,0,2024-05-01T10:00:00Z,0.42,heat_demand_zone_1
//! ```
//!
//! Annotation rows (`#...`) and empty lines are skipped, the first other
//! row is the header, which names the `_value` column, and the value is
//! that column of the first data row. Quoted fields (`"a,""b"""`) are
//! understood. No data row, no `_value` column, or a value that is not a
//! finite number is [`ProviderError::InvalidMetric`]; see the
//! [parent module](super) for the transport errors.

use krake_data::kinds::core::InfluxSpec;
use reqwest::Client;

use super::ProviderError;
use super::http::{self, Query};

/// The Flux query reading the last value of `metric` in `bucket`.
pub fn flux_query(bucket: &str, metric: &str) -> String {
    format!(
        "from(bucket: {}) |> range(start: -1h) |> filter(fn: (r) => r._measurement == {}) |> last()",
        flux_string(bucket),
        flux_string(metric)
    )
}

/// `text` as a Flux string literal, in double quotes, with `\`, `"` and
/// `${` (Flux's interpolation) escaped.
pub fn flux_string(text: &str) -> String {
    let mut literal = String::with_capacity(text.len() + 2);
    literal.push('"');
    let mut chars = text.chars().peekable();
    while let Some(char) = chars.next() {
        match char {
            '\\' => literal.push_str("\\\\"),
            '"' => literal.push_str("\\\""),
            '$' if chars.peek() == Some(&'{') => literal.push_str("\\$"),
            other => literal.push(other),
        }
    }
    literal.push('"');
    literal
}

/// Why an annotated CSV answer has no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// There is no header row.
    #[error("the answer has no table (no header row)")]
    NoHeader,
    /// The header has no `_value` column.
    #[error("the table has no _value column (columns: {columns})")]
    NoValueColumn {
        /// The columns it has, comma-separated.
        columns: String,
    },
    /// There is a header but no data row.
    #[error("the table has no record for the metric")]
    NoRecord,
    /// The first data row is shorter than the header.
    #[error("the first record has {fields} fields, too few for _value in column {column}")]
    ShortRecord {
        /// How many fields the record has.
        fields: usize,
        /// The 0-based index of the `_value` column.
        column: usize,
    },
    /// A quoted field is not closed.
    #[error("a quoted field is not closed")]
    UnclosedQuote,
}

/// The `_value` field of the first data row of an annotated CSV answer.
pub fn first_value(csv: &str) -> Result<String, CsvError> {
    let mut records = Records { rest: csv };
    let mut column = None;
    while let Some(record) = records.next_record()? {
        if record.iter().all(String::is_empty) {
            // An empty line separates tables.
            continue;
        }
        match column {
            None => {
                if record.first().is_some_and(|first| first.starts_with('#')) {
                    continue;
                }
                let index = record.iter().position(|name| name == "_value");
                column = Some(index.ok_or_else(|| CsvError::NoValueColumn {
                    columns: record.join(","),
                })?);
            }
            Some(column) => {
                return record.get(column).cloned().ok_or(CsvError::ShortRecord {
                    fields: record.len(),
                    column,
                });
            }
        }
    }
    Err(if column.is_some() {
        CsvError::NoRecord
    } else {
        CsvError::NoHeader
    })
}

/// The records of a CSV text (RFC 4180: `,` separated, `"` quoted with
/// `""` inside, CRLF or LF line ends, line ends allowed inside quotes).
struct Records<'a> {
    rest: &'a str,
}

impl Records<'_> {
    /// The next record, or `None` at the end.
    fn next_record(&mut self) -> Result<Option<Vec<String>>, CsvError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut chars = self.rest.char_indices().peekable();
        let mut quoted = false;
        let mut at_field_start = true;
        while let Some((index, char)) = chars.next() {
            if quoted {
                if char == '"' {
                    if chars.peek().is_some_and(|(_, next)| *next == '"') {
                        chars.next();
                        field.push('"');
                    } else {
                        quoted = false;
                    }
                } else {
                    field.push(char);
                }
                continue;
            }
            match char {
                '"' if at_field_start => {
                    quoted = true;
                    at_field_start = false;
                }
                ',' => {
                    fields.push(std::mem::take(&mut field));
                    at_field_start = true;
                }
                '\n' => {
                    if field.ends_with('\r') {
                        field.pop();
                    }
                    fields.push(field);
                    self.rest = &self.rest[index + 1..];
                    return Ok(Some(fields));
                }
                other => {
                    field.push(other);
                    at_field_start = false;
                }
            }
        }
        if quoted {
            return Err(CsvError::UnclosedQuote);
        }
        if field.ends_with('\r') {
            field.pop();
        }
        fields.push(field);
        self.rest = "";
        Ok(Some(fields))
    }
}

/// Asks the InfluxDB of `spec` for `metric`.
pub(crate) async fn query(
    client: &Client,
    spec: &InfluxSpec,
    provider: &str,
    metric: &str,
) -> Result<f64, ProviderError> {
    let query = Query { provider, metric };
    let endpoint = http::endpoint(query, &spec.url, &["api", "v2", "query"])?;
    let request = client
        .post(endpoint)
        .query(&[("org", spec.org.as_str())])
        .header(
            reqwest::header::AUTHORIZATION,
            format!("Token {}", spec.token),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/vnd.flux")
        .header(reqwest::header::ACCEPT, "application/csv")
        .body(flux_query(&spec.bucket, metric));
    let body = http::send(query, request).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|error| query.invalid(format!("the answer is not UTF-8: {error}")))?;
    let value = first_value(text).map_err(|error| query.invalid(error.to_string()))?;
    http::parse_value(query, &value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux_strings_escape_quotes_backslashes_and_interpolation() {
        assert_eq!(flux_string("plain"), r#""plain""#);
        assert_eq!(flux_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(flux_string("${x} $y"), r#""\${x} $y""#);
        assert_eq!(
            flux_query("metrics", "heat"),
            r#"from(bucket: "metrics") |> range(start: -1h) |> filter(fn: (r) => r._measurement == "heat") |> last()"#
        );
    }

    #[test]
    fn the_first_records_value_is_read_from_annotated_csv() {
        let csv = "#datatype,string,long,double,string\r\n\
                   #group,false,false,false,true\r\n\
                   #default,_result,,,\r\n\
                   ,result,table,_value,_measurement\r\n\
                   ,,0,0.42,heat\r\n\
                   ,,0,0.43,heat\r\n\
                   \r\n";
        assert_eq!(first_value(csv).unwrap(), "0.42");
        let plain = ",result,table,_measurement,_value\n,_result,0,\"a,\"\"b\"\"\nc\",7\n";
        assert_eq!(first_value(plain).unwrap(), "7");
        let two_tables = "\n\n,result,_value\n,,1.5";
        assert_eq!(first_value(two_tables).unwrap(), "1.5");
    }

    #[test]
    fn answers_without_a_value_are_errors() {
        assert_eq!(first_value(""), Err(CsvError::NoHeader));
        assert_eq!(
            first_value("#datatype,string\r\n\r\n"),
            Err(CsvError::NoHeader)
        );
        assert_eq!(
            first_value(",result,table,_value\r\n\r\n"),
            Err(CsvError::NoRecord)
        );
        assert_eq!(
            first_value(",result,table\r\n,,0\r\n"),
            Err(CsvError::NoValueColumn {
                columns: ",result,table".to_owned()
            })
        );
        assert_eq!(
            first_value(",result,table,_value\r\n,,0\r\n"),
            Err(CsvError::ShortRecord {
                fields: 3,
                column: 3
            })
        );
        assert_eq!(
            first_value(",_value\r\n,\"open"),
            Err(CsvError::UnclosedQuote)
        );
    }
}
