//! The errors of the client: what the server answered, or why no answer came.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An RFC 7807 problem body, as Krake answers every error
/// (`application/problem+json`).
///
/// Krake's own titled problems carry `title` (the enum name, e.g.
/// `NOT_FOUND_ERROR`) and `detail`; plain HTTP errors carry only `type`,
/// `status` and `detail`. For 422, `detail` holds the validation messages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// The problem type, a URL (`about:blank` for plain HTTP errors).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<String>,
    /// The title: Krake's enum name, such as `RESOURCE_ALREADY_EXISTS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The HTTP status code.
    #[serde(default)]
    pub status: u16,
    /// What went wrong: usually a string, validation errors may be structured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
    /// The occurrence (Krake never sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Problem {
    /// The detail as text (structured details are rendered as JSON).
    pub fn detail_text(&self) -> String {
        match &self.detail {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        }
    }

    /// The problem of a response whose body is not a problem document.
    pub(crate) fn from_body(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<Problem>(body) {
            Ok(mut problem) if problem.status != 0 || problem.detail.is_some() => {
                if problem.status == 0 {
                    problem.status = status;
                }
                problem
            }
            _ => Problem {
                problem_type: None,
                title: None,
                status,
                detail: Some(Value::String(String::from_utf8_lossy(body).into_owned())),
                instance: None,
            },
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)?;
        if let Some(title) = &self.title {
            write!(f, " {title}")?;
        }
        let detail = self.detail_text();
        if !detail.is_empty() {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong talking to a Krake API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status and this problem body.
    #[error("the API answered {0}")]
    Api(Box<Problem>),
    /// The request could not be sent or its answer not be read (connection
    /// refused, reset, timed out, TLS failure).
    #[error("request to the API failed")]
    Transport(#[source] reqwest::Error),
    /// A watch request got no answer within the request timeout.
    #[error("the API did not answer in time")]
    Timeout,
    /// The answer was not the JSON expected.
    #[error("cannot decode the API's answer")]
    Decode(#[source] serde_json::Error),
    /// The object could not be serialized into a request body.
    #[error("cannot encode the request body")]
    Encode(#[source] serde_json::Error),
    /// The object cannot be sent as it is (e.g. it has no `metadata.name`).
    #[error("invalid object: {0}")]
    InvalidObject(String),
    /// The base URL is not a valid `http` or `https` URL.
    #[error("invalid API URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// A CA certificate, client certificate or key could not be used.
    #[error("invalid TLS material: {what}")]
    Tls {
        /// Which file or value.
        what: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A client certificate was given without its key, or a key without its
    /// certificate.
    #[error("a client certificate needs its key, and a key its certificate")]
    IncompleteIdentity,
    /// A TLS file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The client's [`WriteGuard`](crate::WriteGuard) refused the write; it
    /// was not sent.
    #[error("write refused: {reason}")]
    WriteRefused {
        /// Why the guard refused it.
        reason: String,
    },
    /// The token is not a valid HTTP header value.
    #[error("the token contains characters not allowed in an HTTP header")]
    InvalidToken,
    /// A namespaced kind's object operation was asked of a handle over all
    /// namespaces, and the object names none.
    #[error("{kind} is namespaced: a namespace is required")]
    NamespaceRequired {
        /// The kind.
        kind: &'static str,
    },
    /// The kind does not serve this sub-operation (e.g. `/binding` on a Role).
    #[error("{kind} has no /{operation} operation")]
    Unsupported {
        /// The kind.
        kind: &'static str,
        /// The operation.
        operation: &'static str,
    },
}

impl Error {
    /// The problem body, if the server answered with an error status.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Error::Api(problem) => Some(problem),
            _ => None,
        }
    }

    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        self.problem().map(|p| p.status)
    }

    /// True for 404.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// True for 409 (already exists, stale `resource_version`, conflict).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// True for 410 (a watch asked to resume from a compacted version).
    pub fn is_gone(&self) -> bool {
        self.status() == Some(410)
    }

    /// True if retrying the same request later may succeed: transport
    /// failures, 5xx and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(_) | Error::Timeout => true,
            Error::Api(problem) => problem.status >= 500 || problem.status == 429,
            _ => false,
        }
    }
}

/// The result of a client operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_krake_problem_bodies_and_plain_text() {
        let body = br#"{"detail": "'Application' 'nope' does not exist in namespace 'testing'", "status": 404, "title": "NOT_FOUND_ERROR", "type": "https://x#not-found-error"}"#;
        let problem = Problem::from_body(404, body);
        assert_eq!(problem.title.as_deref(), Some("NOT_FOUND_ERROR"));
        assert_eq!(
            problem.to_string(),
            "404 NOT_FOUND_ERROR: 'Application' 'nope' does not exist in namespace 'testing'"
        );
        let plain = Problem::from_body(502, b"Bad Gateway");
        assert_eq!(plain.status, 502);
        assert_eq!(plain.detail_text(), "Bad Gateway");
        assert!(Error::Api(Box::new(plain)).is_transient());
        let structured = Problem::from_body(422, br#"{"status": 422, "detail": {"a": ["b"]}}"#);
        assert_eq!(structured.detail_text(), r#"{"a":["b"]}"#);
    }
}
