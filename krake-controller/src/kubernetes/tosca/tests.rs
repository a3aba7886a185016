#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;

fn template(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("a template is a mapping"),
    }
}

/// A template with these node templates (and inputs).
fn nodes(nodes: Value, inputs: Value) -> Map<String, Value> {
    template(json!({
        "tosca_definitions_version": "tosca_simple_yaml_1_0",
        "imports": [{"ec3_custom_types": "https://example.invalid/custom_types.yaml"}],
        "topology_template": {"inputs": inputs, "node_templates": nodes},
    }))
}

fn kube(spec: Value) -> Value {
    json!({"type": KUBERNETES_OBJECT, "properties": {"spec": spec}})
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
";

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}},
    })
}

fn one(template: &Map<String, Value>) -> Value {
    let manifest = translate(template, &Map::new()).unwrap();
    assert_eq!(manifest.len(), 1);
    Value::Object(manifest[0].clone())
}

fn error(template: &Map<String, Value>) -> ToscaError {
    translate(template, &Map::new()).unwrap_err()
}

#[test]
fn a_spec_as_yaml_text_becomes_one_manifest_item() {
    let t = nodes(json!({"web": kube(json!(DEPLOYMENT))}), json!({}));
    assert_eq!(one(&t), deployment());
}

#[test]
fn a_spec_as_a_mapping_is_taken_as_it_is() {
    let t = nodes(json!({"web": kube(deployment())}), Value::Null);
    assert_eq!(one(&t), deployment());
}

#[test]
fn each_node_becomes_one_item_in_template_order() {
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}});
    let t = nodes(
        json!({"z-web": kube(json!(DEPLOYMENT)), "a-svc": kube(service.clone())}),
        json!({}),
    );
    let manifest = translate(&t, &Map::new()).unwrap();
    let manifest: Vec<Value> = manifest.into_iter().map(Value::Object).collect();
    assert_eq!(manifest, vec![deployment(), service]);
}

#[test]
fn parse_template_reads_yaml_and_refuses_what_is_not_a_mapping() {
    let parsed = parse_template("tosca_definitions_version: x\ntopology_template: {}\n").unwrap();
    assert_eq!(parsed["tosca_definitions_version"], "x");
    let err = parse_template("- a\n- b\n").unwrap_err();
    assert_eq!(err.to_string(), "expected a mapping, found a list");
    let err = parse_template("a: [unclosed\n").unwrap_err();
    assert!(matches!(err.problem, Problem::Yaml(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "not a valid YAML document: line 1 column 4: unclosed bracket '['"
    );
}

#[test]
fn yaml_messages_keep_their_first_line_without_the_drawing() {
    assert_eq!(
        yaml_message("error: line 1 column 20: unclosed bracket '['\n --> <input>:1:20\n  |\n"),
        "line 1 column 20: unclosed bracket '['"
    );
    assert_eq!(yaml_message("plain  message"), "plain message");
    assert_eq!(yaml_message(""), "");
}

#[test]
fn concat_joins_strings_numbers_and_booleans() {
    let t = nodes(
        json!({"web": kube(json!({"concat": [
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {a: \"",
            1, "-", true, "-", 2.5, "\"}\n",
        ]}))}),
        json!({}),
    );
    assert_eq!(one(&t)["data"]["a"], "1-true-2.5");
}

#[test]
fn concat_of_a_mapping_is_refused() {
    let t = nodes(
        json!({"web": kube(json!({"concat": ["a", {"b": 1}]}))}),
        json!({}),
    );
    assert_eq!(
        error(&t).to_string(),
        "topology_template.node_templates.web.properties.spec.concat[1]: concat: a part is a \
         mapping; only strings, numbers and booleans can be joined"
    );
    let t = nodes(json!({"web": kube(json!({"concat": "a"}))}), json!({}));
    assert_eq!(
        error(&t).to_string(),
        "topology_template.node_templates.web.properties.spec.concat: concat: expects a list of parts"
    );
}

#[test]
fn get_input_takes_the_default_or_a_given_value() {
    let t = nodes(
        json!({"web": kube(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": {"get_input": "name"}},
            "data": {"port": {"get_input": ["ports", "http"]}},
        }))}),
        json!({"name": {"type": "string", "default": "cm"}, "ports": {"type": "map", "default": {"http": 80}}}),
    );
    let value = one(&t);
    assert_eq!(value["metadata"]["name"], "cm");
    assert_eq!(value["data"]["port"], 80);
    let given = template(json!({"name": "other"}));
    let manifest = translate(&t, &given).unwrap();
    assert_eq!(manifest[0]["metadata"]["name"], "other");
}

#[test]
fn get_input_of_an_unknown_or_valueless_input_is_refused() {
    let spec = json!({"concat": ["apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ", {"get_input": "name"}, "}"]});
    let t = nodes(json!({"web": kube(spec.clone())}), json!({}));
    assert_eq!(
        error(&t).to_string(),
        "topology_template.node_templates.web.properties.spec.concat[1].get_input: unknown input \
         \"name\" (not in topology_template.inputs)"
    );
    let t = nodes(
        json!({"web": kube(spec)}),
        json!({"name": {"type": "string"}}),
    );
    let err = error(&t);
    assert_eq!(err.problem, Problem::MissingInput("name".into()));
    assert_eq!(
        err.to_string(),
        "topology_template.node_templates.web.properties.spec.concat[1].get_input: input \"name\" \
         has no value and no default"
    );
    let t = nodes(json!({"web": kube(json!({"get_input": 3}))}), json!({}));
    assert!(matches!(
        error(&t).problem,
        Problem::BadArguments {
            function: "get_input",
            ..
        }
    ));
}

#[test]
fn get_property_reads_self_and_other_nodes_with_nested_keys() {
    let t = nodes(
        json!({
            "config": {"type": KUBERNETES_OBJECT, "properties": {
                "labels": {"tier": "front"},
                "name": {"concat": ["c", {"get_input": "suffix"}]},
                "spec": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": {"get_property": ["SELF", "name"]}}},
            }},
            "web": {"type": KUBERNETES_OBJECT, "properties": {
                "spec": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
                    "name": {"concat": [{"get_property": ["config", "name"]}, "-web"]},
                    "labels": {"tier": {"get_property": ["config", "labels", "tier"]}},
                }},
            }},
        }),
        json!({"suffix": {"default": "m"}}),
    );
    let manifest = translate(&t, &Map::new()).unwrap();
    assert_eq!(manifest[0]["metadata"]["name"], "cm");
    assert_eq!(manifest[1]["metadata"]["name"], "cm-web");
    assert_eq!(manifest[1]["metadata"]["labels"]["tier"], "front");
}

#[test]
fn get_property_of_an_unknown_node_or_property_is_refused() {
    let spec = |args: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": {"get_property": args}}});
    let t = nodes(json!({"web": kube(spec(json!(["db", "name"])))}), json!({}));
    assert_eq!(
        error(&t).to_string(),
        "topology_template.node_templates.web.properties.spec.metadata.name.get_property: unknown \
         node template \"db\""
    );
    let t = nodes(
        json!({"web": kube(spec(json!(["SELF", "name", "x"])))}),
        json!({}),
    );
    assert_eq!(
        error(&t).problem,
        Problem::UnknownProperty {
            node: "web".into(),
            property: "name.x".into()
        }
    );
    let t = nodes(
        json!({"web": kube(spec(json!(["HOST", "name"])))}),
        json!({}),
    );
    assert!(error(&t).to_string().contains("HOST is not supported"));
    let t = nodes(json!({"web": kube(spec(json!("SELF")))}), json!({}));
    assert!(matches!(
        error(&t).problem,
        Problem::BadArguments {
            function: "get_property",
            ..
        }
    ));
}

#[test]
fn get_property_cycles_end() {
    let t = nodes(
        json!({"web": {"type": KUBERNETES_OBJECT, "properties": {
            "a": {"get_property": ["SELF", "b"]},
            "b": {"get_property": ["SELF", "a"]},
            "spec": {"get_property": ["SELF", "a"]},
        }}}),
        json!({}),
    );
    assert_eq!(error(&t).problem, Problem::TooDeep);
}

#[test]
fn get_property_fan_out_is_bounded() {
    // p0 = "x", p(n+1) = concat(pn, pn): 2^30 references without a bound.
    let mut properties = Map::new();
    properties.insert("p0".into(), json!("x"));
    for n in 0..30 {
        let previous = format!("p{n}");
        properties.insert(
            format!("p{}", n + 1),
            json!({"concat": [{"get_property": ["SELF", previous]}, {"get_property": ["SELF", previous]}]}),
        );
    }
    properties.insert("spec".into(), json!({"get_property": ["SELF", "p30"]}));
    let t = nodes(
        json!({"web": {"type": KUBERNETES_OBJECT, "properties": properties}}),
        json!({}),
    );
    assert_eq!(error(&t).problem, Problem::TooManyReferences);
}

#[test]
fn other_tosca_functions_are_refused() {
    let t = nodes(
        json!({"web": kube(json!({"get_attribute": ["SELF", "ip"]}))}),
        json!({}),
    );
    assert_eq!(
        error(&t).to_string(),
        "topology_template.node_templates.web.properties.spec.get_attribute: unsupported TOSCA \
         function get_attribute; only concat, get_input and get_property are supported"
    );
}

#[test]
fn an_unsupported_node_type_is_refused() {
    let t = nodes(
        json!({"web": kube(json!(DEPLOYMENT)), "vm": {"type": "tosca.nodes.Compute"}}),
        json!({}),
    );
    let err = error(&t);
    assert_eq!(
        err.problem,
        Problem::UnsupportedNodeType("tosca.nodes.Compute".into())
    );
    assert_eq!(
        err.to_string(),
        "topology_template.node_templates.vm.type: unsupported node type \
         \"tosca.nodes.Compute\"; only tosca.nodes.indigo.KubernetesObject is supported"
    );
    let t = nodes(json!({"vm": {"properties": {}}}), json!({}));
    assert_eq!(
        error(&t).to_string(),
        "topology_template.node_templates.vm.type: missing"
    );
    let t = nodes(json!({"vm": {"type": 1}}), json!({}));
    assert_eq!(
        error(&t).to_string(),
        "topology_template.node_templates.vm.type: expected a string, found a number"
    );
}

#[test]
fn a_node_without_spec_is_refused() {
    for node in [
        json!({"type": KUBERNETES_OBJECT}),
        json!({"type": KUBERNETES_OBJECT, "properties": {"name": "x"}}),
    ] {
        let t = nodes(json!({"web": node}), json!({}));
        assert_eq!(
            error(&t).to_string(),
            "topology_template.node_templates.web.properties.spec: missing"
        );
    }
    let t = nodes(
        json!({"web": {"type": KUBERNETES_OBJECT, "properties": [1]}}),
        json!({}),
    );
    assert_eq!(
        error(&t).to_string(),
        "topology_template.node_templates.web.properties: expected a mapping, found a list"
    );
}

#[test]
fn a_spec_that_is_no_resource_is_refused() {
    let at = "topology_template.node_templates.web.properties.spec";
    let t = nodes(json!({"web": kube(json!("kind: [unclosed"))}), json!({}));
    let err = error(&t);
    assert_eq!(err.location, at);
    assert!(matches!(err.problem, Problem::Yaml(_)), "{err}");
    let t = nodes(json!({"web": kube(json!(42))}), json!({}));
    assert_eq!(
        error(&t).to_string(),
        format!("{at}: expected a Kubernetes resource (YAML text or a mapping), found a number")
    );
    let t = nodes(
        json!({"web": kube(json!("apiVersion: v1\nmetadata: {name: x}\n"))}),
        json!({}),
    );
    assert_eq!(
        error(&t).to_string(),
        format!("{at}: not a Kubernetes resource: Field 'kind' not found (metadata.name: 'x')")
    );
    let t = nodes(
        json!({"web": kube(json!("apiVersion: v1\nkind: ConfigMap\n"))}),
        json!({}),
    );
    assert_eq!(
        error(&t).to_string(),
        format!("{at}: not a Kubernetes resource: Field 'metadata.name' not found")
    );
}

#[test]
fn the_template_structure_is_checked() {
    let err = error(&template(json!({"topology_template": {}})));
    assert_eq!(
        err.to_string(),
        "tosca_definitions_version: tosca_definitions_version is required"
    );
    let err = error(&template(json!({"tosca_definitions_version": "v"})));
    assert_eq!(
        err.to_string(),
        "topology_template: topology_template is required"
    );
    let err = error(&template(
        json!({"tosca_definitions_version": "v", "topology_template": {}}),
    ));
    assert_eq!(err.to_string(), "topology_template.node_templates: missing");
    let err = error(&nodes(json!({}), json!({})));
    assert_eq!(
        err.to_string(),
        "topology_template.node_templates: no node templates: nothing to deploy"
    );
    let err = error(&nodes(json!([]), json!({})));
    assert_eq!(
        err.to_string(),
        "topology_template.node_templates: expected a mapping, found a list"
    );
    let err = error(&nodes(json!({"web": kube(json!(DEPLOYMENT))}), json!([])));
    assert_eq!(
        err.to_string(),
        "topology_template.inputs: expected a mapping, found a list"
    );
    let err = error(&nodes(json!({"web": "x"}), json!({})));
    assert_eq!(
        err.to_string(),
        "topology_template.node_templates.web: expected a mapping, found a string"
    );
}

#[test]
fn errors_can_be_placed_within_an_outer_location() {
    let err = ToscaError::new("a.b", Problem::Missing);
    assert_eq!(err.clone().within("").to_string(), "a.b: missing");
    assert_eq!(
        err.within("http://x/t.yaml").to_string(),
        "http://x/t.yaml: a.b: missing"
    );
    let err = ToscaError::new("", Problem::NoNodes);
    assert_eq!(
        err.within("u").to_string(),
        "u: no node templates: nothing to deploy"
    );
}

/// Arbitrary JSON-like values (YAML's data model, less tags and anchors).
fn arbitrary_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop_oneof![
            Just("SELF".to_owned()),
            Just(KUBERNETES_OBJECT.to_owned()),
            Just("spec".to_owned()),
            Just("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("type".to_owned()),
        Just("properties".to_owned()),
        Just("spec".to_owned()),
        Just("concat".to_owned()),
        Just("get_input".to_owned()),
        Just("get_property".to_owned()),
        Just("default".to_owned()),
        Just("a".to_owned()),
        "[a-z_]{1,8}",
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary values in the places the translator reads, rendered to
    /// YAML and parsed back: an error or a manifest, never a panic.
    #[test]
    fn arbitrary_templates_never_panic(
        node_templates in arbitrary_value(),
        inputs in arbitrary_value(),
        node in arbitrary_value(),
        properties in arbitrary_value(),
    ) {
        let candidates = [
            json!({"tosca_definitions_version": "v", "topology_template": {"inputs": inputs.clone(), "node_templates": node_templates}}),
            json!({"tosca_definitions_version": "v", "topology_template": {"inputs": inputs, "node_templates": {"n": node, "m": {"type": KUBERNETES_OBJECT, "properties": properties}}}}),
        ];
        for candidate in candidates {
            let text = serde_saphyr::to_string(&candidate).unwrap();
            if let Ok(parsed) = parse_template(&text) {
                let _ = translate(&parsed, &Map::new());
            }
            if let Value::Object(map) = candidate {
                let _ = translate(&map, &Map::new());
            }
        }
    }

    /// Arbitrary text: an error or a template, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        if let Ok(parsed) = parse_template(&text) {
            let _ = translate(&parsed, &Map::new());
        }
    }

    /// Arbitrary YAML-looking text (the characters YAML gives meaning to).
    #[test]
    fn arbitrary_yaml_like_text_never_panics(text in "[-:{}\\[\\]&*!|>'\"#%@` ,?a-z0-9\n]{0,200}") {
        if let Ok(parsed) = parse_template(&text) {
            let _ = translate(&parsed, &Map::new());
        }
    }
}
