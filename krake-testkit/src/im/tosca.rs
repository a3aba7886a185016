//! Just enough TOSCA for the fake: is the body a TOSCA document, how many
//! instances of each node template does it ask for, which outputs does it
//! declare.

use std::collections::BTreeMap;

use serde_json::Value;

/// What the fake reads from a TOSCA template.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Template {
    /// The document as received.
    pub text: String,
    /// The document parsed.
    pub document: Value,
    /// Instances per node template: the `count` property of the
    /// `scalable` capability (a number, a numeric string or a
    /// `get_input` resolved to the input's `default`); 1 for a Compute
    /// node without it. Only node templates that are Compute nodes or have
    /// a `scalable` count are listed.
    pub counts: BTreeMap<String, u64>,
    /// The Compute node templates (the ones that become virtual machines).
    pub computes: Vec<String>,
    /// The `default` of every input.
    pub inputs: BTreeMap<String, Value>,
    /// The names of `topology_template.outputs`.
    pub outputs: Vec<String>,
}

impl Template {
    /// Parses a TOSCA YAML document; the error is the message IM's answer
    /// carries.
    pub fn parse(text: &str) -> Result<Template, String> {
        let document: Value = serde_saphyr::from_str(text)
            .map_err(|err| format!("Error parsing YAML: {}", one_line(&err.to_string())))?;
        if !document.is_object() {
            return Err("Error parsing YAML: the TOSCA document is not a mapping".into());
        }
        if document.get("tosca_definitions_version").is_none() {
            return Err(
                "Template is missing required field \"tosca_definitions_version\".".to_string(),
            );
        }
        let topology = document.get("topology_template");
        let inputs: BTreeMap<String, Value> = topology
            .and_then(|t| t.get("inputs"))
            .and_then(Value::as_object)
            .map(|inputs| {
                inputs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.get("default").cloned().unwrap_or(Value::Null)))
                    .collect()
            })
            .unwrap_or_default();
        let mut counts = BTreeMap::new();
        let mut computes = Vec::new();
        if let Some(nodes) = topology
            .and_then(|t| t.get("node_templates"))
            .and_then(Value::as_object)
        {
            for (name, node) in nodes {
                let compute = node
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with("Compute"));
                let count = node
                    .pointer("/capabilities/scalable/properties/count")
                    .map(|c| resolve_count(c, &inputs))
                    .transpose()
                    .map_err(|err| format!("node template {name}: {err}"))?;
                if compute {
                    computes.push(name.clone());
                }
                match (count, compute) {
                    (Some(n), _) => {
                        counts.insert(name.clone(), n);
                    }
                    (None, true) => {
                        counts.insert(name.clone(), 1);
                    }
                    (None, false) => {}
                }
            }
        }
        let outputs = topology
            .and_then(|t| t.get("outputs"))
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        Ok(Template {
            text: text.to_string(),
            document,
            counts,
            computes,
            inputs,
            outputs,
        })
    }

    /// How many virtual machines the template asks for: the instances of
    /// its Compute nodes.
    pub fn vm_count(&self) -> usize {
        self.computes
            .iter()
            .map(|c| self.counts.get(c).copied().unwrap_or(1) as usize)
            .sum()
    }
}

fn resolve_count(count: &Value, inputs: &BTreeMap<String, Value>) -> Result<u64, String> {
    match count {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("invalid scalable count {n}")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("invalid scalable count {s:?}")),
        Value::Object(o) if o.contains_key("get_input") => {
            let name = o["get_input"].as_str().unwrap_or_default();
            match inputs.get(name) {
                Some(v) if !v.is_null() => resolve_count(v, inputs),
                _ => Err(format!("input {name:?} has no default")),
            }
        }
        other => Err(format!("invalid scalable count {other}")),
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOSCA: &str = r#"
tosca_definitions_version: tosca_simple_yaml_1_0
imports:
  - indigo_custom_types: https://example.org/custom_types.yaml
topology_template:
  inputs:
    wn_num:
      type: integer
      default: 3
  node_templates:
    front:
      type: tosca.nodes.indigo.Compute
    wn:
      type: tosca.nodes.indigo.Compute
      capabilities:
        scalable:
          properties:
            count: { get_input: wn_num }
    lrms_wn:
      type: tosca.nodes.indigo.LRMS.WorkerNode.Kubernetes
  outputs:
    kubeconfig:
      value: { get_attribute: [ front, kubeconfig ] }
"#;

    #[test]
    fn counts_resolve_inputs_and_default_to_one() {
        let t = Template::parse(TOSCA).unwrap();
        assert_eq!(t.counts.get("wn"), Some(&3));
        assert_eq!(t.counts.get("front"), Some(&1));
        assert_eq!(t.counts.get("lrms_wn"), None);
        assert_eq!(t.vm_count(), 4);
        assert_eq!(t.outputs, vec!["kubeconfig".to_string()]);
        assert_eq!(t.inputs["wn_num"], 3);
    }

    #[test]
    fn literal_counts() {
        let t = Template::parse(&TOSCA.replace("{ get_input: wn_num }", "5")).unwrap();
        assert_eq!(t.counts.get("wn"), Some(&5));
        assert_eq!(t.vm_count(), 6);
    }

    #[test]
    fn refusals() {
        assert!(Template::parse("a: [").is_err());
        assert!(Template::parse("- 1").is_err());
        assert!(
            Template::parse("topology_template: {}")
                .unwrap_err()
                .contains("tosca_definitions_version")
        );
        assert!(Template::parse(&TOSCA.replace("{ get_input: wn_num }", "many")).is_err());
    }
}
