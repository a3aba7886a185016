//! What the HTTP backends share: building endpoint URLs from a provider's
//! base URL, sending a request, mapping transport errors and statuses to
//! [`ProviderError`]s, and reading a bounded body.
//!
//! The mapping: a request that cannot be sent or whose answer cannot be
//! read, and any 5xx, is [`ProviderError::Unreachable`]; any other
//! non-success status (4xx) is [`ProviderError::InvalidMetric`], with the
//! start of the body in the message (backends explain there what was
//! wrong with the query).

use reqwest::{RequestBuilder, Url};

use super::ProviderError;

/// The largest body read from a backend (a metric's answer is tiny; this
/// only stops a broken backend from filling memory).
pub(crate) const MAX_BODY: usize = 4 * 1024 * 1024;

/// How much of a body goes into an error message.
const SNIPPET: usize = 300;

/// The provider and metric a request is for, to build errors.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a> {
    /// The provider's name.
    pub(crate) provider: &'a str,
    /// The metric's name at the backend.
    pub(crate) metric: &'a str,
}

impl Query<'_> {
    /// An [`ProviderError::Unreachable`] for this query.
    pub(crate) fn unreachable(&self, message: impl Into<String>) -> ProviderError {
        ProviderError::Unreachable {
            provider: self.provider.to_owned(),
            message: message.into(),
        }
    }

    /// An [`ProviderError::InvalidMetric`] for this query.
    pub(crate) fn invalid(&self, message: impl Into<String>) -> ProviderError {
        ProviderError::InvalidMetric {
            provider: self.provider.to_owned(),
            metric: self.metric.to_owned(),
            message: message.into(),
        }
    }
}

/// `base` with the path `segments` appended: `http://h/p/` and `http://h/p`
/// both become `http://h/p/api/v1/query` for `["api", "v1", "query"]`. A
/// query string or fragment of `base` is dropped.
pub(crate) fn endpoint(
    query: Query<'_>,
    base: &str,
    segments: &[&str],
) -> Result<Url, ProviderError> {
    let mut url = Url::parse(base.trim())
        .map_err(|error| query.unreachable(format!("invalid URL {base:?}: {error}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(query.unreachable(format!("invalid URL {base:?}: not http or https")));
    }
    url.set_query(None);
    url.set_fragment(None);
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| query.unreachable(format!("invalid URL {base:?}: it has no path")))?;
        path.pop_if_empty();
        path.extend(segments);
    }
    Ok(url)
}

/// Sends `request` and returns the body of a successful answer.
pub(crate) async fn send(
    query: Query<'_>,
    request: RequestBuilder,
) -> Result<Vec<u8>, ProviderError> {
    let mut response = request
        .send()
        .await
        .map_err(|error| query.unreachable(describe(&error)))?;
    let status = response.status();
    let mut body = Vec::new();
    let mut too_large = false;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| query.unreachable(format!("reading the answer: {}", describe(&error))))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            too_large = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_server_error() {
        return Err(query.unreachable(format!("answered {status}: {}", snippet(&body))));
    }
    if !status.is_success() {
        return Err(query.invalid(format!("answered {status}: {}", snippet(&body))));
    }
    if too_large {
        return Err(query.invalid(format!("the answer is larger than {MAX_BODY} bytes")));
    }
    Ok(body)
}

/// The start of `body` as text, for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(SNIPPET) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// A transport error with its causes (reqwest's own message is only the
/// outermost one, such as "error sending request").
fn describe(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// Parses a metric's value: a finite number, from text.
pub(crate) fn parse_value(query: Query<'_>, text: &str) -> Result<f64, ProviderError> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| query.invalid(format!("the value {text:?} is not a number")))?;
    finite(query, value)
}

/// `value` if it is finite.
pub(crate) fn finite(query: Query<'_>, value: f64) -> Result<f64, ProviderError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(query.invalid(format!("the value {value} is not a finite number")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: Query<'static> = Query {
        provider: "p",
        metric: "m",
    };

    #[test]
    fn endpoints_join_base_urls_with_and_without_slashes_and_prefixes() {
        let cases = [
            ("http://host:9090", "http://host:9090/api/v1/query"),
            ("http://host:9090/", "http://host:9090/api/v1/query"),
            ("http://host/prom", "http://host/prom/api/v1/query"),
            ("http://host/prom/", "http://host/prom/api/v1/query"),
            ("https://host/a/b/?x=1#f", "https://host/a/b/api/v1/query"),
        ];
        for (base, expected) in cases {
            let url = endpoint(QUERY, base, &["api", "v1", "query"]).unwrap();
            assert_eq!(url.as_str(), expected, "{base}");
        }
    }

    #[test]
    fn bad_base_urls_are_unreachable_errors() {
        for base in ["", "not a url", "ftp://host/", "mailto:a@b"] {
            let error = endpoint(QUERY, base, &["query"]).unwrap_err();
            assert!(
                matches!(error, ProviderError::Unreachable { .. }),
                "{base}: {error:?}"
            );
        }
    }

    #[test]
    fn values_must_be_finite_numbers() {
        assert_eq!(parse_value(QUERY, " 0.25 ").unwrap(), 0.25);
        assert_eq!(parse_value(QUERY, "-3e2").unwrap(), -300.0);
        for text in ["NaN", "+Inf", "-Inf", "abc", ""] {
            let error = parse_value(QUERY, text).unwrap_err();
            assert!(
                matches!(error, ProviderError::InvalidMetric { .. }),
                "{text}: {error:?}"
            );
        }
    }

    #[test]
    fn snippets_are_bounded() {
        assert_eq!(snippet(b"  "), "(empty body)");
        assert_eq!(snippet(b"short"), "short");
        let long = "x".repeat(1000);
        assert_eq!(snippet(long.as_bytes()).len(), SNIPPET + 3);
    }
}
