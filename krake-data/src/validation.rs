//! Structured validation errors and the [`Validate`] trait.
//!
//! Krake validates a body in two steps: the schema (types, required fields)
//! and the model's own rules (name regexes, "an application needs a manifest,
//! a TOSCA template or a CSAR", ...). Both end in an HTTP 422 whose `detail`
//! is marshmallow's nested error dictionary, e.g.
//! `{'metadata': {'name': ['Invalid character in resource name.']}}`.
//!
//! [`ValidationErrors`] keeps every error with its field path, and renders
//! it three ways: [`ValidationErrors::to_marshmallow`] (the nested dictionary
//! as JSON), [`ValidationErrors::to_python_repr`] (the exact text Krake puts
//! in `detail`) and its [`Display`](std::fmt::Display) (one line for logs and
//! CLIs).

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The key under which marshmallow reports errors that concern a whole object
/// rather than one of its fields.
pub const SCHEMA_KEY: &str = "_schema";

/// The message for a required field that is missing.
pub const MISSING_FIELD: &str = "Missing data for required field.";

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A key of an object.
    Key(String),
    /// An index into an array.
    Index(usize),
}

/// The location of a value in a JSON document, e.g. `spec.manifest.0`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<PathSegment>);

impl FieldPath {
    /// The empty path (the document itself).
    pub fn root() -> Self {
        Self::default()
    }

    /// Parses a dotted path; all-digit segments become indexes.
    pub fn parse(dotted: &str) -> Self {
        if dotted.is_empty() {
            return Self::root();
        }
        FieldPath(
            dotted
                .split('.')
                .map(|part| match part.parse::<usize>() {
                    Ok(index) if !part.is_empty() => PathSegment::Index(index),
                    _ => PathSegment::Key(part.to_owned()),
                })
                .collect(),
        )
    }

    /// This path extended by one object key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.0.push(PathSegment::Key(key.into()));
        self
    }

    /// This path extended by one array index.
    pub fn index(mut self, index: usize) -> Self {
        self.0.push(PathSegment::Index(index));
        self
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            match segment {
                PathSegment::Key(key) => f.write_str(key)?,
                PathSegment::Index(index) => write!(f, "{index}")?,
            }
        }
        Ok(())
    }
}

impl Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One validation failure: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field the error is about. Errors about a whole object end in
    /// [`SCHEMA_KEY`].
    pub field: FieldPath,
    /// What is wrong, in Krake's words.
    pub message: String,
    /// For errors about one entry of a mapping (a label key or value), the
    /// entry; Krake reports those as `{<entry>: <message>}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
}

/// Every validation failure of one document, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidationErrors {
    errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// No errors.
    pub fn new() -> Self {
        Self::default()
    }

    /// One error at `field`.
    pub fn single(field: FieldPath, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.push(field, message);
        errors
    }

    /// Adds an error at `field`.
    pub fn push(&mut self, field: FieldPath, message: impl Into<String>) {
        self.errors.push(FieldError {
            field,
            message: message.into(),
            entry: None,
        });
    }

    /// Adds every error of `other`.
    pub fn extend(&mut self, other: ValidationErrors) {
        self.errors.extend(other.errors);
    }

    /// True if there are no errors.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The errors in the order they were found.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// `Ok(value)` if there are no errors, else `Err(self)`.
    pub fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    /// The messages reported for `field` (a dotted path such as `metadata.name`).
    pub fn messages_at(&self, field: &str) -> Vec<&str> {
        let path = FieldPath::parse(field);
        self.errors
            .iter()
            .filter(|e| e.field == path)
            .map(|e| e.message.as_str())
            .collect()
    }

    /// marshmallow's nested error dictionary: objects down the path, a list of
    /// messages at the end. Indexes become string keys, as JSON requires.
    pub fn to_marshmallow(&self) -> Value {
        let mut root = Map::new();
        for error in &self.errors {
            let mut node = &mut root;
            let segments = &error.field.0;
            let Some((last, parents)) = segments.split_last() else {
                // An error without a path is about the document itself.
                push_message(&mut root, SCHEMA_KEY, error);
                continue;
            };
            for segment in parents {
                let key = segment_key(segment);
                let entry = node.entry(key).or_insert_with(|| Value::Object(Map::new()));
                if !entry.is_object() {
                    *entry = Value::Object(Map::new());
                }
                node = match entry {
                    Value::Object(map) => map,
                    _ => unreachable!("entry was just made an object"),
                };
            }
            push_message(node, &segment_key(last), error);
        }
        Value::Object(root)
    }

    /// The text Krake puts in the `detail` of a 422: the Python `repr` of
    /// marshmallow's error dictionary, e.g.
    /// `{'spec': {'_schema': ['The application should be defined by ...']}}`.
    pub fn to_python_repr(&self) -> String {
        let mut out = String::new();
        // Index keys are ints in marshmallow's dictionaries: remember which.
        python_repr_tree(&self.to_marshmallow(), &index_keys(self), &mut out);
        out
    }
}

fn segment_key(segment: &PathSegment) -> String {
    match segment {
        PathSegment::Key(key) => key.clone(),
        PathSegment::Index(index) => index.to_string(),
    }
}

fn push_message(node: &mut Map<String, Value>, key: &str, error: &FieldError) {
    let message = match &error.entry {
        Some(entry) => {
            let mut map = Map::new();
            map.insert(entry.clone(), Value::String(error.message.clone()));
            Value::Object(map)
        }
        None => Value::String(error.message.clone()),
    };
    let slot = node
        .entry(key.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    match slot {
        Value::Array(list) => list.push(message),
        Value::Object(map) => {
            // Errors at a path that also has nested errors: marshmallow puts
            // them under `_schema` of that object.
            let list = map
                .entry(SCHEMA_KEY.to_owned())
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                list.push(message);
            }
        }
        other => *other = Value::Array(vec![message]),
    }
}

/// The depths at which keys are array indexes, keyed by their rendered path.
fn index_keys(errors: &ValidationErrors) -> std::collections::HashSet<String> {
    let mut keys = std::collections::HashSet::new();
    for error in &errors.errors {
        let mut prefix = String::new();
        for segment in &error.field.0 {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            let is_index = matches!(segment, PathSegment::Index(_));
            prefix.push_str(&segment_key(segment));
            if is_index {
                keys.insert(prefix.clone());
            }
        }
    }
    keys
}

fn python_repr_tree(
    value: &Value,
    index_keys: &std::collections::HashSet<String>,
    out: &mut String,
) {
    fn walk(
        value: &Value,
        path: &str,
        index_keys: &std::collections::HashSet<String>,
        out: &mut String,
    ) {
        match value {
            Value::Object(map) => {
                out.push('{');
                for (i, (key, item)) in map.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let child = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    if index_keys.contains(&child) {
                        out.push_str(key);
                    } else {
                        out.push_str(&python_str_repr(key));
                    }
                    out.push_str(": ");
                    walk(item, &child, index_keys, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    // Entries inside lists are message dictionaries: no index keys.
                    walk(item, "\u{0}", index_keys, out);
                }
                out.push(']');
            }
            Value::String(text) => out.push_str(&python_str_repr(text)),
            Value::Null => out.push_str("None"),
            Value::Bool(true) => out.push_str("True"),
            Value::Bool(false) => out.push_str("False"),
            Value::Number(number) => out.push_str(&number.to_string()),
        }
    }
    walk(value, "", index_keys, out);
}

/// Python's `repr()` of a `str`: single quotes unless the text contains a
/// single quote and no double quote; backslashes and control characters escaped.
pub fn python_str_repr(text: &str) -> String {
    let quote = if text.contains('\'') && !text.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push(quote);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if !error.field.0.is_empty() {
                write!(f, "{}: ", error.field)?;
            }
            if let Some(entry) = &error.entry {
                write!(f, "{entry}: ")?;
            }
            f.write_str(&error.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Collects errors while a validation walks down a document.
///
/// Each model type implements [`Validate`] by checking its own fields and
/// descending into nested ones with [`Validator::field`] and
/// [`Validator::item`], so every error carries its full path.
#[derive(Debug, Default)]
pub struct Validator {
    path: Vec<PathSegment>,
    errors: ValidationErrors,
}

impl Validator {
    /// A validator at the root of a document.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `check` with the path extended by `key`.
    pub fn field(&mut self, key: &str, check: impl FnOnce(&mut Self)) {
        self.path.push(PathSegment::Key(key.to_owned()));
        check(self);
        self.path.pop();
    }

    /// Runs `check` with the path extended by `index`.
    pub fn item(&mut self, index: usize, check: impl FnOnce(&mut Self)) {
        self.path.push(PathSegment::Index(index));
        check(self);
        self.path.pop();
    }

    /// Validates a nested value under `key`.
    pub fn nested<T: Validate + ?Sized>(&mut self, key: &str, value: &T) {
        self.field(key, |v| value.validate(v));
    }

    /// Reports an error at the current path.
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors
            .push(FieldPath(self.path.clone()), message.into());
    }

    /// Reports an error about one entry (a label key or value) at the current path.
    pub fn entry_error(&mut self, entry: impl Into<String>, message: impl Into<String>) {
        self.errors.errors.push(FieldError {
            field: FieldPath(self.path.clone()),
            message: message.into(),
            entry: Some(entry.into()),
        });
    }

    /// Reports an error about the object at the current path as a whole
    /// (marshmallow's `_schema`).
    pub fn schema_error(&mut self, message: impl Into<String>) {
        self.field(SCHEMA_KEY, |v| v.error(message));
    }

    /// Everything reported so far.
    pub fn finish(self) -> ValidationErrors {
        self.errors
    }
}

/// A model type's own rules, beyond what its types already enforce.
pub trait Validate {
    /// Reports every rule this value breaks to `validator`.
    fn validate(&self, validator: &mut Validator);

    /// Runs the validation at the root and returns what it found.
    fn validation_errors(&self) -> ValidationErrors {
        let mut validator = Validator::new();
        self.validate(&mut validator);
        validator.finish()
    }
}

impl<T: Validate> Validate for Option<T> {
    fn validate(&self, validator: &mut Validator) {
        if let Some(value) = self {
            value.validate(validator);
        }
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate(&self, validator: &mut Validator) {
        for (index, item) in self.iter().enumerate() {
            validator.item(index, |v| item.validate(v));
        }
    }
}

/// Reads `T` from a JSON value and validates it, reporting errors as Krake
/// does: with the path of the field and marshmallow's wording.
///
/// A type error stops deserialization, so at most one of those is reported;
/// the model's own rules are all checked once the types are right.
pub fn from_value<T: DeserializeOwned + Validate>(value: Value) -> Result<T, ValidationErrors> {
    let parsed: T = deserialize_value(value)?;
    parsed.validation_errors().into_result(parsed)
}

/// Reads `T` from a JSON value without running its [`Validate`] rules,
/// reporting a type error with its path and marshmallow's wording.
///
/// Numbers, integers and booleans written as strings are read as Krake's
/// marshmallow schemas read them (see [`crate::lenient`]).
pub fn deserialize_value<T: DeserializeOwned>(value: Value) -> Result<T, ValidationErrors> {
    // Fast path: most bodies are valid and canonically typed, and tracking
    // the path (and coercing) costs time.
    if let Ok(parsed) = T::deserialize(&value) {
        return Ok(parsed);
    }
    serde_path_to_error::deserialize(crate::lenient::Lenient::new(&value)).map_err(|err| {
        let mut path = FieldPath::root();
        for segment in err.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => {
                    path.0.push(PathSegment::Index(*index))
                }
                serde_path_to_error::Segment::Map { key } => {
                    path.0.push(PathSegment::Key(key.clone()))
                }
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => {}
            }
        }
        let (path, message) = marshmallow_message(path, &err.into_inner().to_string());
        ValidationErrors::single(path, message)
    })
}

/// Turns a serde error message into marshmallow's wording, adjusting the path
/// where the message names a field (missing fields) or a nested path.
fn marshmallow_message(mut path: FieldPath, message: &str) -> (FieldPath, String) {
    let mut message = message.to_owned();
    // Errors from inside tagged containers carry their nested path: "at a.b: ...".
    while let Some(rest) = message.strip_prefix("at ") {
        let Some((nested, inner)) = rest.split_once(": ") else {
            break;
        };
        path.0.extend(FieldPath::parse(nested).0);
        message = inner.to_owned();
    }
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        return (path.key(field), MISSING_FIELD.to_owned());
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let expected = rest
            .split_once("expected ")
            .map(|(_, e)| e.replace('`', "").replace("one of ", ""))
            .unwrap_or_default();
        return (path, format!("Must be one of: {expected}."));
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let text = if found == "null" {
            "Field may not be null."
        } else if expected.contains("string") || expected.contains("datetime") {
            "Not a valid string."
        } else if expected.starts_with("i") || expected.starts_with("u") {
            "Not a valid integer."
        } else if expected.starts_with("f") {
            "Not a valid number."
        } else if expected.contains("bool") {
            "Not a valid boolean."
        } else if expected.contains("sequence") {
            "Not a valid list."
        } else if expected.contains("map") {
            "Not a valid mapping type."
        } else {
            "Invalid input type."
        };
        return (path, text.to_owned());
    }
    if message.starts_with("invalid value: ") && message.contains("expected i") {
        return (path, "Not a valid integer.".to_owned());
    }
    (path, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_repr_matches_krake_detail() {
        let mut errors = ValidationErrors::new();
        errors.push(
            FieldPath::parse("metadata.name"),
            "Invalid character in resource name.",
        );
        errors.push(
            FieldPath::parse("spec._schema"),
            "The application should be defined by a manifest file, a TOSCA template or a CSAR file.",
        );
        assert_eq!(
            errors.to_python_repr(),
            "{'metadata': {'name': ['Invalid character in resource name.']}, 'spec': {'_schema': \
             ['The application should be defined by a manifest file, a TOSCA template or a CSAR file.']}}"
        );
    }

    #[test]
    fn python_repr_quotes_like_python() {
        assert_eq!(python_str_repr("plain"), "'plain'");
        assert_eq!(python_str_repr("it's"), "\"it's\"");
        assert_eq!(python_str_repr("both ' and \""), "'both \\' and \"'");
        assert_eq!(python_str_repr("a\\w"), "'a\\\\w'");
        let errors = ValidationErrors::single(
            FieldPath::parse("spec.manifest"),
            "Field 'metadata.name' not found in resource at index 0",
        );
        assert_eq!(
            errors.to_python_repr(),
            "{'spec': {'manifest': [\"Field 'metadata.name' not found in resource at index 0\"]}}"
        );
    }

    #[test]
    fn index_keys_render_as_ints() {
        let errors = ValidationErrors::single(FieldPath::parse("items.3.name"), "bad");
        assert_eq!(errors.to_python_repr(), "{'items': {3: {'name': ['bad']}}}");
        assert_eq!(
            errors.to_marshmallow(),
            serde_json::json!({"items": {"3": {"name": ["bad"]}}})
        );
    }

    #[test]
    fn entry_errors_render_as_dicts() {
        let mut v = Validator::new();
        v.field("metadata", |v| {
            v.field("labels", |v| v.entry_error("$$", "Label key '$$' is bad."))
        });
        let errors = v.finish();
        assert_eq!(
            errors.to_python_repr(),
            "{'metadata': {'labels': [{'$$': \"Label key '$$' is bad.\"}]}}"
        );
        assert_eq!(
            errors.to_string(),
            "metadata.labels: $$: Label key '$$' is bad."
        );
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: i64,
        name: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        inner: Vec<Inner>,
    }

    #[test]
    fn type_errors_get_paths_and_marshmallow_words() {
        let err =
            deserialize_value::<Outer>(serde_json::json!({"inner": [{"count": 1}]})).unwrap_err();
        assert_eq!(err.messages_at("inner.0.name"), vec![MISSING_FIELD]);

        let err =
            deserialize_value::<Outer>(serde_json::json!({"inner": [{"count": "x", "name": "n"}]}))
                .unwrap_err();
        assert_eq!(
            err.messages_at("inner.0.count"),
            vec!["Not a valid integer."]
        );

        let err =
            deserialize_value::<Outer>(serde_json::json!({"inner": [{"count": 1, "name": null}]}))
                .unwrap_err();
        assert_eq!(
            err.messages_at("inner.0.name"),
            vec!["Field may not be null."]
        );

        let err = deserialize_value::<Outer>(serde_json::json!({})).unwrap_err();
        assert_eq!(err.messages_at("inner"), vec![MISSING_FIELD]);
    }
}
