//! `metav1.Status`: the error body of every failed request, with the
//! reasons and messages a real API server gives.

use serde_json::{Value, json};

use super::registry::ResourceType;

/// A failed request, as a Kubernetes `metav1.Status` body.
///
/// The fake answers every error with this body and the HTTP status
/// [`code`](Status::code); [`FakeCluster`](super::FakeCluster)'s direct
/// access methods return it as their error.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The HTTP status code (404, 409, 422, ...).
    pub code: u16,
    /// The machine-readable reason (`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, ...).
    pub reason: String,
    /// The human-readable message, worded as a real API server words it.
    pub message: String,
    /// `details`: name, group, kind and causes, as JSON (`None` leaves it out).
    pub details: Option<Box<Value>>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for Status {}

/// The reason a real server gives with an HTTP status code.
pub(crate) fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// One field error of an `Invalid` answer.
#[derive(Debug, Clone)]
pub(crate) struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, ...
    pub reason: &'static str,
    /// The field path, `spec.selector`.
    pub field: String,
    /// `Required value`, `Invalid value: "X": ...`.
    pub message: String,
}

impl FieldError {
    pub(crate) fn required(field: impl Into<String>, detail: Option<&str>) -> Self {
        let message = match detail {
            Some(d) => format!("Required value: {d}"),
            None => "Required value".to_string(),
        };
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, value: &Value, detail: &str) -> Self {
        let shown = match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        };
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {shown}: {detail}"),
        }
    }
}

impl Status {
    /// The HTTP status code (404, 409, 422, ...).
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The machine-readable reason (`NotFound`, `AlreadyExists`, ...).
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `details` (name, group, kind, causes), if any.
    pub fn details(&self) -> Option<&Value> {
        self.details.as_deref()
    }

    /// A Status with this code, its usual reason and a message.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason_of(code).to_string(),
            message: message.into(),
            details: None,
        }
    }

    /// The Status as its JSON body.
    pub fn to_json(&self) -> Value {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        });
        if let Some(details) = &self.details {
            body["details"] = (**details).clone();
        }
        body["code"] = json!(self.code);
        body
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    fn resource_details(rt: &ResourceType, name: &str) -> Value {
        let mut d = json!({"name": name});
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        d["kind"] = json!(rt.plural);
        d
    }

    pub(crate) fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::new(404, format!("{} {name:?} not found", rt.qualified()))
            .with_details(Self::resource_details(rt, name))
    }

    pub(crate) fn namespace_not_found(namespace: &str) -> Self {
        Self::new(404, format!("namespaces {namespace:?} not found"))
            .with_details(json!({"name": namespace, "kind": "namespaces"}))
    }

    pub(crate) fn no_such_resource() -> Self {
        Self::new(404, "the server could not find the requested resource").with_details(json!({}))
    }

    pub(crate) fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::new(409, format!("{} {name:?} already exists", rt.qualified()))
            .with_reason("AlreadyExists")
            .with_details(Self::resource_details(rt, name))
    }

    pub(crate) fn conflict(rt: &ResourceType, name: &str) -> Self {
        Self::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} {name:?}: the object has been modified; please apply your changes to the latest version and try again",
                rt.qualified()
            ),
        )
        .with_details(Self::resource_details(rt, name))
    }

    pub(crate) fn conflict_with(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::new(
            409,
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                rt.qualified()
            ),
        )
        .with_details(Self::resource_details(rt, name))
    }

    pub(crate) fn apply_conflict(
        rt: &ResourceType,
        name: &str,
        message: String,
        causes: Vec<Value>,
    ) -> Self {
        let mut d = Self::resource_details(rt, name);
        d["causes"] = Value::Array(causes);
        Self::new(409, message).with_details(d)
    }

    pub(crate) fn invalid(rt: &ResourceType, name: &str, errors: Vec<FieldError>) -> Self {
        let listed: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect();
        let summary = if listed.len() == 1 {
            listed[0].clone()
        } else {
            format!("[{}]", listed.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field}))
            .collect();
        let kind = if rt.group.is_empty() {
            rt.kind.clone()
        } else {
            format!("{}.{}", rt.kind, rt.group)
        };
        let mut d = json!({"name": name});
        if !rt.group.is_empty() {
            d["group"] = json!(rt.group);
        }
        d["kind"] = json!(rt.kind);
        d["causes"] = Value::Array(causes);
        Self::new(422, format!("{kind} {name:?} is invalid: {summary}")).with_details(d)
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized")
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, message)
    }

    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            405,
            "the server does not allow this method on the requested resource",
        )
    }

    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, message)
    }

    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            415,
            format!(
                "the body of the request was in an unknown format ({content_type}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"
            ),
        )
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }

    fn with_reason(mut self, reason: &str) -> Self {
        self.reason = reason.to_string();
        self
    }

    /// The Status a fault injection answers with (`fail_requests`, `fail_next`).
    pub(crate) fn injected(code: u16) -> Self {
        let message = match code {
            500 => "Internal error occurred: injected fault".to_string(),
            503 => "the server is currently unable to handle the request".to_string(),
            429 => "Too many requests, please try again later.".to_string(),
            504 => "the server was unable to return a response in the time allotted".to_string(),
            _ => format!("injected fault ({code})"),
        };
        Self::new(code, message)
    }
}
