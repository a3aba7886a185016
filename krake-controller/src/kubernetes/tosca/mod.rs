//! TOSCA and CSAR applications: the translation of `spec.tosca` and
//! `spec.csar` into `spec.manifest`.
//!
//! Krake supports a small subset of TOSCA (`docs/dev/tosca.rst`), and so
//! does this module:
//!
//! - `topology_template.node_templates`, each of type
//!   `tosca.nodes.indigo.KubernetesObject`, whose property `spec` holds one
//!   Kubernetes resource as YAML text (Krake's form) or as a mapping. Each
//!   node becomes one manifest item, in the order of the template.
//! - The TOSCA functions `concat` (a list of parts joined into a string),
//!   `get_input` (an input of `topology_template.inputs`: a given value,
//!   else its `default`) and `get_property` (`[SELF | node name, property,
//!   nested keys…]`), anywhere in `spec`.
//! - `imports` and the definitions of node types are not read: the type
//!   name alone decides.
//!
//! Anything else is a [`ToscaError`] that names the problem and where it is
//! (`topology_template.node_templates.web.type: unsupported node type …`);
//! the controller shows it as FAILED with INVALID_TOSCA_MANIFEST.
//!
//! This module and [`csar`] are pure (no network, no clock); [`fetch`]
//! reads URLs and puts the pieces together for an application.
//!
//! ```
//! use krake_controller::kubernetes::tosca::{parse_template, translate};
//! use serde_json::{Map, json};
//!
//! let template = parse_template(
//!     r#"
//! tosca_definitions_version: tosca_simple_yaml_1_0
//! topology_template:
//!   inputs:
//!     replicas: {type: integer, default: 2}
//!   node_templates:
//!     web:
//!       type: tosca.nodes.indigo.KubernetesObject
//!       properties:
//!         name: web
//!         spec:
//!           concat:
//!             - "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: "
//!             - get_property: [SELF, name]
//!             - "}\nspec: {replicas: "
//!             - get_input: replicas
//!             - "}\n"
//! "#,
//! )
//! .unwrap();
//! let manifest = translate(&template, &Map::new()).unwrap();
//! assert_eq!(
//!     serde_json::Value::Object(manifest[0].clone()),
//!     json!({"apiVersion": "apps/v1", "kind": "Deployment",
//!            "metadata": {"name": "web"}, "spec": {"replicas": 2}}),
//! );
//!
//! let err = translate(
//!     &parse_template(
//!         "tosca_definitions_version: tosca_simple_yaml_1_0\n\
//!          topology_template:\n  node_templates:\n    vm: {type: tosca.nodes.Compute}\n",
//!     )
//!     .unwrap(),
//!     &Map::new(),
//! )
//! .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "topology_template.node_templates.vm.type: unsupported node type \
//!      \"tosca.nodes.Compute\"; only tosca.nodes.indigo.KubernetesObject is supported",
//! );
//! ```

pub mod csar;
pub mod fetch;

use std::cell::Cell;
use std::fmt;

use krake_data::kinds::kubernetes::{ManifestResource, tosca_template_problem, validate_manifest};
use krake_data::validation::Validator;
use serde_json::{Map, Value};

/// The only node type Krake translates.
pub const KUBERNETES_OBJECT: &str = "tosca.nodes.indigo.KubernetesObject";

/// How deep `get_property` may refer to properties that refer to
/// properties (a cycle ends here).
const MAX_REFERENCE_DEPTH: usize = 32;

/// How many `get_property` references one template may evaluate in all
/// (references that fan out would otherwise grow exponentially).
const MAX_REFERENCES: usize = 10_000;

/// The TOSCA functions of the specification; only `concat`, `get_input` and
/// `get_property` are supported, the others are reported.
const FUNCTIONS: &[&str] = &[
    "concat",
    "get_input",
    "get_property",
    "get_attribute",
    "get_operation_output",
    "get_nodes_of_type",
    "get_artifact",
    "join",
    "token",
];

/// A template that cannot be translated: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ToscaError {
    /// Where: a dotted path in the template
    /// (`topology_template.node_templates.web.type`), a file of a CSAR
    /// archive, or a URL; empty for the document as a whole.
    pub location: String,
    /// What.
    pub problem: Problem,
}

impl fmt::Display for ToscaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "{}: {}", self.location, self.problem)
        }
    }
}

impl ToscaError {
    /// `problem` at `location`.
    pub fn new(location: impl Into<String>, problem: Problem) -> Self {
        ToscaError {
            location: location.into(),
            problem,
        }
    }

    /// The same error, its location below `outer` (`spec.tosca`, a URL).
    #[must_use]
    pub fn within(mut self, outer: &str) -> Self {
        self.location = match (outer.is_empty(), self.location.is_empty()) {
            (true, _) => self.location,
            (false, true) => outer.to_owned(),
            (false, false) => format!("{outer}: {}", self.location),
        };
        self
    }
}

/// What is wrong with a template, an archive or a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The text is not YAML (or not one document).
    #[error("not a valid YAML document: {0}")]
    Yaml(String),
    /// A value has the wrong type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What was expected.
        expected: &'static str,
        /// What was there.
        found: &'static str,
    },
    /// A required field is missing.
    #[error("missing")]
    Missing,
    /// The template's structure is wrong (the API's own check).
    #[error("{0}")]
    Template(&'static str),
    /// `node_templates` is empty.
    #[error("no node templates: nothing to deploy")]
    NoNodes,
    /// A node of another type than [`KUBERNETES_OBJECT`].
    #[error("unsupported node type {0:?}; only {KUBERNETES_OBJECT} is supported")]
    UnsupportedNodeType(String),
    /// A TOSCA function other than `concat`, `get_input`, `get_property`.
    #[error(
        "unsupported TOSCA function {0}; only concat, get_input and get_property are supported"
    )]
    UnsupportedFunction(String),
    /// A function with wrong arguments.
    #[error("{function}: {message}")]
    BadArguments {
        /// The function.
        function: &'static str,
        /// What is wrong with its arguments.
        message: String,
    },
    /// `get_input` of an input the template does not declare.
    #[error("unknown input {0:?} (not in topology_template.inputs)")]
    UnknownInput(String),
    /// `get_input` of a declared input with neither a value nor a default.
    #[error("input {0:?} has no value and no default")]
    MissingInput(String),
    /// `get_property` of a node that does not exist.
    #[error("unknown node template {0:?}")]
    UnknownNode(String),
    /// `get_property` of a property the node does not have.
    #[error("node template {node:?} has no property {property:?}")]
    UnknownProperty {
        /// The node.
        node: String,
        /// The property (with its nested keys).
        property: String,
    },
    /// `get_property` references that go round in a cycle.
    #[error("get_property references nested more than {MAX_REFERENCE_DEPTH} deep (a cycle?)")]
    TooDeep,
    /// Too many `get_property` references evaluated in all.
    #[error("more than {MAX_REFERENCES} get_property references evaluated")]
    TooManyReferences,
    /// The resource a node produced is not a valid manifest item.
    #[error("not a Kubernetes resource: {0}")]
    InvalidResource(String),
    /// The archive is not a ZIP file, or one of its files cannot be read.
    #[error("{0}")]
    Archive(String),
    /// A file is missing from the archive.
    #[error("missing from the CSAR archive")]
    MissingFile,
    /// `TOSCA.meta` names an entry that is not in the archive.
    #[error("Entry-Definitions names {0:?}, which is not in the CSAR archive")]
    MissingEntry(String),
    /// A URL that cannot be read.
    #[error("cannot be read: {0}")]
    Unreadable(String),
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn wrong_type(at: &str, expected: &'static str, found: &Value) -> ToscaError {
    ToscaError::new(
        at,
        Problem::WrongType {
            expected,
            found: kind_of(found),
        },
    )
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Parses YAML text into a value (one document).
fn parse_yaml(text: &str) -> Result<Value, Problem> {
    serde_saphyr::from_str::<Value>(text)
        .map_err(|err| Problem::Yaml(yaml_message(&err.to_string())))
}

/// The parser's message on one line, without its drawing of the text
/// (`line 1 column 20: unclosed bracket '['`).
fn yaml_message(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let first = first.split(" --> ").next().unwrap_or(first);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    one_line(first)
}

/// Parses a TOSCA document (YAML text) into its top-level mapping.
///
/// # Errors
///
/// Text that is not one YAML document, or whose top level is not a mapping.
pub fn parse_template(text: &str) -> Result<Map<String, Value>, ToscaError> {
    match parse_yaml(text).map_err(|problem| ToscaError::new("", problem))? {
        Value::Object(map) => Ok(map),
        other => Err(wrong_type("", "a mapping", &other)),
    }
}

/// Translates a TOSCA template into a manifest: one item per node template.
/// `inputs` are given values of the template's inputs (they take the place
/// of the defaults; Krake gives none).
///
/// # Errors
///
/// The first problem found, with its location in the template.
pub fn translate(
    template: &Map<String, Value>,
    inputs: &Map<String, Value>,
) -> Result<Vec<ManifestResource>, ToscaError> {
    if let Some(problem) = tosca_template_problem(template) {
        let at = if template.contains_key("tosca_definitions_version") {
            "topology_template"
        } else {
            "tosca_definitions_version"
        };
        return Err(ToscaError::new(at, Problem::Template(problem)));
    }
    let topology = match template.get("topology_template") {
        Some(Value::Object(topology)) => topology,
        Some(other) => return Err(wrong_type("topology_template", "a mapping", other)),
        None => return Err(ToscaError::new("topology_template", Problem::Missing)),
    };
    let declared = match topology.get("inputs") {
        None | Some(Value::Null) => None,
        Some(Value::Object(declared)) => Some(declared),
        Some(other) => {
            return Err(wrong_type("topology_template.inputs", "a mapping", other));
        }
    };
    let nodes_at = "topology_template.node_templates";
    let nodes = match topology.get("node_templates") {
        Some(Value::Object(nodes)) => nodes,
        Some(other) => return Err(wrong_type(nodes_at, "a mapping", other)),
        None => return Err(ToscaError::new(nodes_at, Problem::Missing)),
    };
    if nodes.is_empty() {
        return Err(ToscaError::new(nodes_at, Problem::NoNodes));
    }
    let scope = Scope {
        nodes,
        declared,
        inputs,
        references: Cell::new(0),
    };
    let mut manifest = Vec::with_capacity(nodes.len());
    for (name, node) in nodes {
        let at = join(nodes_at, name);
        let node = match node {
            Value::Object(node) => node,
            other => return Err(wrong_type(&at, "a mapping", other)),
        };
        let type_at = join(&at, "type");
        match node.get("type") {
            Some(Value::String(kind)) if kind == KUBERNETES_OBJECT => {}
            Some(Value::String(kind)) => {
                return Err(ToscaError::new(
                    type_at,
                    Problem::UnsupportedNodeType(kind.clone()),
                ));
            }
            Some(other) => return Err(wrong_type(&type_at, "a string", other)),
            None => return Err(ToscaError::new(type_at, Problem::Missing)),
        }
        let properties_at = join(&at, "properties");
        let spec_at = join(&properties_at, "spec");
        let spec = match node.get("properties") {
            Some(Value::Object(properties)) => properties.get("spec"),
            None | Some(Value::Null) => None,
            Some(other) => return Err(wrong_type(&properties_at, "a mapping", other)),
        };
        let Some(spec) = spec else {
            return Err(ToscaError::new(spec_at, Problem::Missing));
        };
        let spec = scope.evaluate(spec, name, &spec_at, 0)?;
        manifest.push(resource(spec, &spec_at)?);
    }
    Ok(manifest)
}

/// The manifest item of a node's evaluated `spec`: YAML text or a mapping,
/// with `apiVersion`, `kind` and `metadata.name` (the API's rule).
fn resource(spec: Value, at: &str) -> Result<ManifestResource, ToscaError> {
    let value = match spec {
        Value::String(text) => parse_yaml(&text).map_err(|problem| ToscaError::new(at, problem))?,
        other => other,
    };
    let resource = match value {
        Value::Object(resource) => resource,
        other => {
            return Err(wrong_type(
                at,
                "a Kubernetes resource (YAML text or a mapping)",
                &other,
            ));
        }
    };
    let mut v = Validator::new();
    validate_manifest(std::slice::from_ref(&resource), &mut v);
    let errors = v.finish();
    if let Some(first) = errors.errors().first() {
        let message = first.message.replace(" in resource at index 0", "");
        return Err(ToscaError::new(at, Problem::InvalidResource(message)));
    }
    Ok(resource)
}

/// What the functions see.
struct Scope<'a> {
    nodes: &'a Map<String, Value>,
    declared: Option<&'a Map<String, Value>>,
    inputs: &'a Map<String, Value>,
    /// `get_property` references evaluated so far.
    references: Cell<usize>,
}

impl Scope<'_> {
    /// `value` with every function call replaced by its result; `node` is
    /// the node `SELF` means, `depth` the `get_property` nesting.
    fn evaluate(
        &self,
        value: &Value,
        node: &str,
        at: &str,
        depth: usize,
    ) -> Result<Value, ToscaError> {
        match value {
            Value::Object(map) => {
                if map.len() == 1
                    && let Some((name, arguments)) = map.iter().next()
                    && FUNCTIONS.contains(&name.as_str())
                {
                    let at = join(at, name);
                    return match name.as_str() {
                        "concat" => self.concat(arguments, node, &at, depth),
                        "get_input" => self.get_input(arguments, &at),
                        "get_property" => self.get_property(arguments, node, &at, depth),
                        other => Err(ToscaError::new(
                            at,
                            Problem::UnsupportedFunction(other.to_owned()),
                        )),
                    };
                }
                let mut evaluated = Map::with_capacity(map.len());
                for (key, item) in map {
                    let item = self.evaluate(item, node, &join(at, key), depth)?;
                    evaluated.insert(key.clone(), item);
                }
                Ok(Value::Object(evaluated))
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(index, item)| self.evaluate(item, node, &format!("{at}[{index}]"), depth))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            scalar => Ok(scalar.clone()),
        }
    }

    fn concat(
        &self,
        arguments: &Value,
        node: &str,
        at: &str,
        depth: usize,
    ) -> Result<Value, ToscaError> {
        let Value::Array(parts) = arguments else {
            return Err(bad(at, "concat", "expects a list of parts"));
        };
        let mut text = String::new();
        for (index, part) in parts.iter().enumerate() {
            let part_at = format!("{at}[{index}]");
            match self.evaluate(part, node, &part_at, depth)? {
                Value::String(part) => text.push_str(&part),
                Value::Number(number) => text.push_str(&number.to_string()),
                Value::Bool(flag) => text.push_str(if flag { "true" } else { "false" }),
                other => {
                    return Err(bad(
                        &part_at,
                        "concat",
                        &format!(
                            "a part is {}; only strings, numbers and booleans can be joined",
                            kind_of(&other)
                        ),
                    ));
                }
            }
        }
        Ok(Value::String(text))
    }

    fn get_input(&self, arguments: &Value, at: &str) -> Result<Value, ToscaError> {
        let (name, path) = match arguments {
            Value::String(name) => (name.as_str(), &[][..]),
            Value::Array(items) => match items.split_first() {
                Some((Value::String(name), path)) => (name.as_str(), path),
                _ => {
                    return Err(bad(
                        at,
                        "get_input",
                        "expects an input name, or a list starting with one",
                    ));
                }
            },
            _ => {
                return Err(bad(
                    at,
                    "get_input",
                    "expects an input name, or a list starting with one",
                ));
            }
        };
        let Some(declaration) = self.declared.and_then(|declared| declared.get(name)) else {
            return Err(ToscaError::new(at, Problem::UnknownInput(name.to_owned())));
        };
        let value = match self.inputs.get(name) {
            Some(value) => value,
            None => match declaration {
                Value::Object(declaration) => match declaration.get("default") {
                    Some(default) => default,
                    None => {
                        return Err(ToscaError::new(at, Problem::MissingInput(name.to_owned())));
                    }
                },
                other => {
                    return Err(wrong_type(
                        &format!("topology_template.inputs.{name}"),
                        "a mapping",
                        other,
                    ));
                }
            },
        };
        descend(value, path).ok_or_else(|| {
            bad(
                at,
                "get_input",
                &format!("input {name:?} has nothing at {}", path_text(path)),
            )
        })
    }

    fn get_property(
        &self,
        arguments: &Value,
        node: &str,
        at: &str,
        depth: usize,
    ) -> Result<Value, ToscaError> {
        let usage = "expects a list [SELF or a node template name, property, nested keys...]";
        let Value::Array(items) = arguments else {
            return Err(bad(at, "get_property", usage));
        };
        let (Some(Value::String(entity)), Some(Value::String(property))) =
            (items.first(), items.get(1))
        else {
            return Err(bad(at, "get_property", usage));
        };
        let path = items.get(2..).unwrap_or_default();
        let target = match entity.as_str() {
            "SELF" => node,
            "SOURCE" | "TARGET" | "HOST" => {
                return Err(bad(
                    at,
                    "get_property",
                    &format!("{entity} is not supported; use SELF or a node template name"),
                ));
            }
            name => name,
        };
        let Some(target_node) = self.nodes.get(target) else {
            return Err(ToscaError::new(at, Problem::UnknownNode(target.to_owned())));
        };
        let unknown = || {
            let mut property = property.clone();
            if !path.is_empty() {
                property.push_str(&path_text(path));
            }
            ToscaError::new(
                at,
                Problem::UnknownProperty {
                    node: target.to_owned(),
                    property,
                },
            )
        };
        let Some(value) = target_node
            .get("properties")
            .and_then(Value::as_object)
            .and_then(|properties| properties.get(property))
        else {
            return Err(unknown());
        };
        if depth >= MAX_REFERENCE_DEPTH {
            return Err(ToscaError::new(at, Problem::TooDeep));
        }
        let references = self.references.get() + 1;
        if references > MAX_REFERENCES {
            return Err(ToscaError::new(at, Problem::TooManyReferences));
        }
        self.references.set(references);
        let value_at = format!("topology_template.node_templates.{target}.properties.{property}");
        let value = self.evaluate(value, target, &value_at, depth + 1)?;
        descend(&value, path).ok_or_else(unknown)
    }
}

fn bad(at: &str, function: &'static str, message: &str) -> ToscaError {
    ToscaError::new(
        at,
        Problem::BadArguments {
            function,
            message: message.to_owned(),
        },
    )
}

/// `value` at the nested keys (strings, into mappings) or indices (numbers,
/// into lists) of `path`.
fn descend(value: &Value, path: &[Value]) -> Option<Value> {
    let mut current = value;
    for step in path {
        current = match (current, step) {
            (Value::Object(map), Value::String(key)) => map.get(key)?,
            (Value::Array(items), Value::Number(index)) => {
                items.get(usize::try_from(index.as_u64()?).ok()?)?
            }
            _ => return None,
        };
    }
    Some(current.clone())
}

fn path_text(path: &[Value]) -> String {
    path.iter()
        .map(|step| match step {
            Value::String(key) => format!(".{key}"),
            other => format!("[{other}]"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
