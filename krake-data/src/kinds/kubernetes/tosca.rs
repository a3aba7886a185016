//! Structural checks of TOSCA templates and CSAR URLs.
//!
//! Krake runs the full `toscaparser` validation on inline templates; no TOSCA
//! parser exists in Rust, so krake-rs checks the structure the controllers
//! rely on (a `tosca_definitions_version` and a `topology_template` mapping,
//! and for clusters the `kubeconfig` output) and the URL suffixes, with
//! Krake's messages. Deeper errors surface when the template is translated.

use serde_json::{Map, Value};

use super::Tosca;
use crate::validation::Validator;

/// What is wrong with the structure of a TOSCA template, if anything: a
/// `tosca_definitions_version` string and a `topology_template` mapping are
/// required (the API's check of `spec.tosca`, also used by the controller
/// on templates it fetches).
pub fn template_problem(template: &Map<String, Value>) -> Option<&'static str> {
    match template.get("tosca_definitions_version") {
        Some(Value::String(_)) => {}
        _ => return Some("tosca_definitions_version is required"),
    }
    match template.get("topology_template") {
        Some(Value::Object(_)) => None,
        _ => Some("topology_template is required"),
    }
}

/// Checks an application's `spec.tosca`: an inline template's structure, or a
/// URL ending in `.yaml`/`.yml`.
pub(super) fn validate_application_tosca(tosca: &Tosca, v: &mut Validator) {
    match tosca {
        Tosca::Template(template) if template.is_empty() => {}
        Tosca::Template(template) => {
            if let Some(problem) = template_problem(template) {
                v.error(format!("Invalid TOSCA template content: {problem}."));
            }
        }
        Tosca::Url(url) if url.is_empty() => {}
        Tosca::Url(url) => {
            if !(url.ends_with(".yaml") || url.ends_with(".yml")) {
                v.error("Invalid TOSCA template URL.");
            }
        }
    }
}

/// Checks a cluster's `spec.tosca`: a template whose outputs include `kubeconfig`.
pub(super) fn validate_cluster_tosca(template: &Map<String, Value>, v: &mut Validator) {
    if let Some(problem) = template_problem(template) {
        v.error(format!("Invalid TOSCA template content: {problem}."));
        return;
    }
    let has_kubeconfig = template
        .get("topology_template")
        .and_then(|t| t.get("outputs"))
        .and_then(|o| o.get("kubeconfig"))
        .is_some();
    if !has_kubeconfig {
        v.error(
            "Invalid TOSCA template content: topology_template.outputs.kubeconfig is required.",
        );
    }
}
