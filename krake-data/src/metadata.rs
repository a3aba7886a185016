//! Object metadata, references between objects, and Krake's naming rules.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::timestamp::Timestamp;
use crate::validation::{Validate, Validator, python_str_repr};

/// The labels of an object: an ordered map of label keys to label values.
pub type Labels = IndexMap<String, String>;

/// The finalizer that `DELETE` appends; the garbage collector removes it once
/// an object's dependents are gone.
pub const CASCADE_DELETION_FINALIZER: &str = "cascade_deletion";

/// Metadata of every persistent object.
///
/// `uid`, `created`, `modified` and `deleted` are set by the server (read-only);
/// `name` and `namespace` cannot change once the object exists (immutable).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Metadata {
    /// The object's name, unique per kind and namespace.
    pub name: String,
    /// The namespace of a namespaced object; `null` for global kinds.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Key/value labels, matched by label constraints.
    #[serde(default)]
    pub labels: Labels,
    /// Clusters only: inherit the labels of the cloud the cluster is bound to.
    #[serde(default)]
    pub inherit_labels: bool,
    /// The finalizer stack, processed from its tail.
    #[serde(default)]
    pub finalizers: Vec<String>,
    /// Unique id, set by the server at creation (read-only).
    #[serde(default)]
    pub uid: Option<String>,
    /// Creation time (read-only).
    #[serde(default)]
    pub created: Option<Timestamp>,
    /// Time of the last change of spec or metadata (read-only).
    #[serde(default)]
    pub modified: Option<Timestamp>,
    /// Set when deletion was requested; cannot be undone (read-only).
    #[serde(default)]
    pub deleted: Option<Timestamp>,
    /// The objects this one depends on; the garbage collector deletes it when
    /// one of them is deleted.
    #[serde(default)]
    pub owners: Vec<ResourceRef>,
    /// Beyond Krake: the store revision of this version of the object (read-only).
    /// Krake clients ignore it; krake-rs clients send it back for conditional
    /// updates and resume watches from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl Metadata {
    /// Metadata with a name and nothing else.
    pub fn named(name: impl Into<String>) -> Self {
        Metadata {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Metadata with a name and a namespace.
    pub fn namespaced(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Metadata {
            name: name.into(),
            namespace: Some(namespace.into()),
            ..Default::default()
        }
    }

    /// True once deletion was requested.
    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }

    /// The finalizer at the tail of the stack, the one to be handled next.
    pub fn tail_finalizer(&self) -> Option<&str> {
        self.finalizers.last().map(String::as_str)
    }
}

impl Validate for Metadata {
    fn validate(&self, v: &mut Validator) {
        v.field("name", |v| {
            if !is_valid_resource_name(&self.name) {
                v.error("Invalid character in resource name.");
            }
        });
        if let Some(namespace) = &self.namespace {
            v.field("namespace", |v| {
                if !is_valid_resource_name(namespace) {
                    v.error("Invalid character in resource namespace.");
                }
            });
        }
        v.field("labels", |v| validate_labels(&self.labels, v));
    }
}

/// Checks every label key and value, reporting each bad one as Krake does:
/// one `{<key or value>: <message>}` entry per problem.
pub fn validate_labels(labels: &Labels, v: &mut Validator) {
    for (key, value) in labels {
        if let Err(message) = validate_label_key(key) {
            v.entry_error(key.clone(), message);
        }
        if let Err(message) = validate_label_value(value) {
            v.entry_error(value.clone(), message);
        }
    }
}

/// A reference to another object, by api, kind, namespace and name.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct ResourceRef {
    /// The API group (`kubernetes`, `infrastructure`, ...).
    pub api: String,
    /// The namespace; `null` for global kinds.
    #[serde(default)]
    pub namespace: Option<String>,
    /// The kind (`Cluster`, `Cloud`, ...).
    pub kind: String,
    /// The name.
    pub name: String,
}

impl ResourceRef {
    /// A reference from its four parts.
    pub fn new(
        api: impl Into<String>,
        kind: impl Into<String>,
        namespace: Option<String>,
        name: impl Into<String>,
    ) -> Self {
        ResourceRef {
            api: api.into(),
            namespace,
            kind: kind.into(),
            name: name.into(),
        }
    }
}

impl ResourceRef {
    /// The reference of `object` ([`KindInfo::reference`](crate::KindInfo::reference)).
    pub fn of<K: crate::Resource>(object: &K) -> Self {
        K::INFO.reference(object.metadata())
    }
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{} {}/{}", self.api, self.kind, ns, self.name),
            None => write!(f, "{}/{} {}", self.api, self.kind, self.name),
        }
    }
}

/// The metadata of a list response. Krake's is always `{}`; krake-rs adds
/// optional fields that Krake clients ignore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ListMetadata {
    /// Beyond Krake: the store revision the list was read at; a watch started
    /// from it misses nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Beyond Krake: the token that fetches the next page, when the list was
    /// paginated and more items remain.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// The regular expression (Python syntax, ASCII mode) that label keys must match.
pub const LABEL_KEY_PATTERN: &str = r"^((\w|(\w[\w\-_.]{0,251}\w))\/)?(\w|(\w[\w\-_.]{0,61}\w))$";

/// The regular expression (Python syntax, ASCII mode) that label values must match.
pub const LABEL_VALUE_PATTERN: &str = r"\w|(\w[\w\-_.]{0,61}\w)";

/// The regular expression (Python syntax, ASCII mode) that names and
/// namespaces must match.
pub const RESOURCE_NAME_PATTERN: &str = r"\w|(\w[\w\-_.:]{0,253}\w)";

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Word characters at both ends, `inner` characters between, 1 to `max` long.
fn is_framed(text: &str, max: usize, inner: impl Fn(u8) -> bool) -> bool {
    let bytes = text.as_bytes();
    match bytes {
        [] => false,
        [only] => is_word(*only),
        [first, middle @ .., last] => {
            bytes.len() <= max
                && is_word(*first)
                && is_word(*last)
                && middle.iter().all(|&c| inner(c))
        }
    }
}

/// True if `name` is a valid object name or namespace: 1 to 255 characters of
/// `[A-Za-z0-9_.:-]`, starting and ending with `[A-Za-z0-9_]`.
pub fn is_valid_resource_name(name: &str) -> bool {
    is_framed(name, 255, |c| is_word(c) || matches!(c, b'-' | b'.' | b':'))
}

fn is_label_segment(text: &str, max: usize) -> bool {
    is_framed(text, max, |c| is_word(c) || matches!(c, b'-' | b'.'))
}

/// Checks a label key: an optional prefix of up to 253 characters and a `/`,
/// then a name of up to 63 characters; both of `[A-Za-z0-9_.-]`, framed by
/// `[A-Za-z0-9_]`. The error is Krake's message.
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_label_segment(prefix, 253) && is_label_segment(name, 63),
        None => is_label_segment(key, 63),
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "Label key {} does not match the regex {}.",
            python_str_repr(key),
            python_str_repr(LABEL_KEY_PATTERN)
        ))
    }
}

/// Checks a label value: 1 to 63 characters of `[A-Za-z0-9_.-]`, framed by
/// `[A-Za-z0-9_]`. The error is Krake's message.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if is_label_segment(value, 63) {
        Ok(())
    } else {
        Err(format!(
            "Label value {} does not match the regex {}.",
            python_str_repr(value),
            python_str_repr(LABEL_VALUE_PATTERN)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        for good in ["a", "_", "a-b", "a.b:c_d", "9", &"x".repeat(255)] {
            assert!(is_valid_resource_name(good), "{good:?} should be valid");
        }
        for bad in ["", "-a", "a-", "a b", "ä", "a/b", ".", &"x".repeat(256)] {
            assert!(!is_valid_resource_name(bad), "{bad:?} should be invalid");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for good in ["a", "app", "example.com/app", "a_b-c.d", &"k".repeat(63)] {
            assert!(validate_label_key(good).is_ok(), "{good:?}");
        }
        let long_prefix = format!("{}/k", "p".repeat(253));
        assert!(validate_label_key(&long_prefix).is_ok());
        let too_long_prefix = format!("{}/k", "p".repeat(254));
        for bad in [
            "",
            "-a",
            "a/",
            "/a",
            "a/b/c",
            "a:b",
            &"k".repeat(64),
            &too_long_prefix,
        ] {
            assert!(validate_label_key(bad).is_err(), "{bad:?}");
        }
        for good in ["DE", "0.5", "1e-3", "a_b"] {
            assert!(validate_label_value(good).is_ok(), "{good:?}");
        }
        for bad in ["", "-1", "a/b", "x y", &"v".repeat(64)] {
            assert!(validate_label_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn label_messages_are_krakes() {
        assert_eq!(
            validate_label_key("$$").unwrap_err(),
            "Label key '$$' does not match the regex \
             '^((\\\\w|(\\\\w[\\\\w\\\\-_.]{0,251}\\\\w))\\\\/)?(\\\\w|(\\\\w[\\\\w\\\\-_.]{0,61}\\\\w))$'."
        );
        assert_eq!(
            validate_label_value("-1").unwrap_err(),
            "Label value '-1' does not match the regex '\\\\w|(\\\\w[\\\\w\\\\-_.]{0,61}\\\\w)'."
        );
    }

    #[test]
    fn metadata_validation_reports_paths() {
        let mut metadata = Metadata::namespaced("bad ns", "bad name");
        metadata.labels.insert("$$".into(), "ok".into());
        metadata.labels.insert("ok".into(), "-bad".into());
        let errors = metadata.validation_errors();
        assert_eq!(
            errors.messages_at("name"),
            vec!["Invalid character in resource name."]
        );
        assert_eq!(
            errors.messages_at("namespace"),
            vec!["Invalid character in resource namespace."]
        );
        assert_eq!(errors.messages_at("labels").len(), 2);
    }

    #[test]
    fn list_metadata_is_empty_object_by_default() {
        assert_eq!(
            serde_json::to_value(ListMetadata::default()).unwrap(),
            serde_json::json!({})
        );
    }
}
