//! The OpenAPI 3 document of the API, generated from the kind registry and
//! the JSON Schemas of the model.

use std::sync::OnceLock;

use krake_data::registry::{self, KindInfo, SubresourceBody};
use serde_json::{Map, Value, json};

/// The document (built once).
pub fn document() -> Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build).clone()
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_response(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": schema_ref("Problem")}}})
}

fn errors(codes: &[(u16, &str)]) -> Map<String, Value> {
    codes
        .iter()
        .map(|(code, text)| (code.to_string(), problem(text)))
        .collect()
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn operation(
    kind: &KindInfo,
    id: &str,
    summary: String,
    params: Vec<Value>,
    body: Option<Value>,
    ok: Value,
    codes: &[(u16, &str)],
) -> Value {
    let mut responses = errors(codes);
    responses.insert("200".to_owned(), ok);
    // What any request with parameters or a body may get.
    if !params.is_empty() {
        responses
            .entry("400")
            .or_insert_with(|| problem("Malformed path or query"));
    }
    if body.is_some() {
        responses
            .entry("413")
            .or_insert_with(|| problem("Body too large"));
        responses
            .entry("415")
            .or_insert_with(|| problem("Not JSON"));
    }
    let mut op = json!({
        "operationId": format!("{id}{}", kind.kind),
        "tags": [kind.api],
        "summary": summary,
        "parameters": params,
        "responses": responses,
    });
    if let Some(body) = body {
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": body}}});
    }
    op
}

const COMMON: &[(u16, &str)] = &[
    (401, "Not authenticated"),
    (403, "Not allowed"),
    (503, "The store is unavailable"),
];

fn build() -> Value {
    let mut paths = Map::new();
    for &kind in registry::ALL {
        let object = schema_ref(kind.kind);
        let list_params = vec![
            query_param(
                "watch",
                "Stream changes as application/x-ndjson instead of listing",
                json!({"type": "string"}),
            ),
            query_param(
                "heartbeat",
                "Seconds between heartbeat newlines of a watch (0: none)",
                json!({"type": "integer", "minimum": 0}),
            ),
            query_param(
                "resource_version",
                "Resume a watch after this revision (410 if too old)",
                json!({"type": "string"}),
            ),
            query_param(
                "label_selector",
                "Comma-separated label constraints, e.g. env=prod,zone in (a,b)",
                json!({"type": "string"}),
            ),
            query_param(
                "limit",
                "Page size of a list",
                json!({"type": "integer", "minimum": 1}),
            ),
            query_param(
                "continue",
                "Token of the next page",
                json!({"type": "string"}),
            ),
        ];
        let mut scope_params = Vec::new();
        let collection = if kind.is_namespaced() {
            scope_params.push(path_param("namespace"));
            kind.collection_path(Some("{namespace}"))
        } else {
            kind.collection_path(None)
        };
        let mut list_ok =
            json_response("The objects, or a watch stream", schema_ref(kind.list_kind));
        list_ok["content"]["application/x-ndjson"] = json!({"schema": {
            "type": "string",
            "description": "With `watch`: one `{\"type\": ..., \"object\": ...}` line per change, empty lines as heartbeats",
        }});
        let mut collection_ops = Map::new();
        collection_ops.insert(
            "get".into(),
            operation(
                kind,
                "list",
                format!("List or watch {}", kind.plural),
                [scope_params.clone(), list_params.clone()].concat(),
                None,
                list_ok.clone(),
                &[
                    &[(400, "Bad query"), (410, "resource_version too old")],
                    COMMON,
                ]
                .concat(),
            ),
        );
        let mut create_params = scope_params.clone();
        create_params.push(query_param(
            "blocking",
            "Wait until status.state reaches this value",
            json!({"type": "string"}),
        ));
        collection_ops.insert(
            "post".into(),
            operation(
                kind,
                "create",
                format!("Create a {}", kind.kind),
                create_params,
                Some(object.clone()),
                json_response("The created object", object.clone()),
                &[
                    &[(409, "Already exists"), (415, "Not JSON"), (422, "Invalid")],
                    COMMON,
                ]
                .concat(),
            ),
        );
        paths.insert(collection.clone(), Value::Object(collection_ops));
        if kind.is_namespaced() {
            paths.insert(
                kind.collection_path(None),
                json!({"get": operation(kind, "listAll", format!("List or watch {} in all namespaces", kind.plural), list_params, None, list_ok, &[&[(400, "Bad query"), (410, "resource_version too old")], COMMON].concat())}),
            );
        }
        let object_path = format!("{collection}/{{name}}");
        let mut object_params = scope_params.clone();
        object_params.push(path_param("name"));
        let mut delete_params = object_params.clone();
        delete_params.push(query_param(
            "force",
            "`True`: remove applications and clusters at once",
            json!({"type": "string"}),
        ));
        delete_params.push(query_param(
            "blocking",
            "Wait for this state (`deleted`: until removed)",
            json!({"type": "string"}),
        ));
        let found = json_response("The object", object.clone());
        paths.insert(
            object_path.clone(),
            json!({
                "get": operation(kind, "read", format!("Read a {}", kind.kind), object_params.clone(), None, found.clone(), &[&[(404, "Not found")], COMMON].concat()),
                "put": operation(kind, "update", format!("Update a {}", kind.kind), object_params.clone(), Some(object.clone()), found.clone(), &[&[(400, "No change or immutable field"), (404, "Not found"), (409, "Conflict"), (415, "Not JSON"), (422, "Invalid")], COMMON].concat()),
                "delete": operation(kind, "delete", format!("Delete a {}", kind.kind), delete_params, None, found.clone(), &[&[(404, "Not found")], COMMON].concat()),
            }),
        );
        for sub in kind.subresources {
            let body = match sub.body {
                SubresourceBody::Object => Some(object.clone()),
                SubresourceBody::Body(body) => Some(schema_ref(body.kind)),
                SubresourceBody::Empty => None,
            };
            let id = format!("update{}", capitalize(sub.operation.as_str()));
            paths.insert(
                format!("{object_path}/{}", sub.operation),
                json!({"put": operation(kind, &id, format!("{} of a {}", sub.operation, kind.kind), object_params.clone(), body, found.clone(), &[&[(400, "Not possible now"), (404, "Not found"), (409, "Conflict"), (422, "Invalid")], COMMON].concat())}),
            );
        }
    }
    let plain = |description: &str| json!({"description": description, "content": {"application/json": {"schema": {"type": "object"}}}});
    paths.insert(
        "/".into(),
        json!({"get": {"operationId": "version", "responses": {"200": plain("The API version")}}}),
    );
    paths.insert("/me".into(), json!({"get": {"operationId": "me", "responses": {"200": plain("The user and its roles")}}}));
    paths.insert("/release".into(), json!({"get": {"operationId": "release", "responses": {"202": plain("You released the Krake.")}}}));
    paths.insert(
        "/healthz".into(),
        json!({"get": {"operationId": "healthz", "responses": {"200": plain("Alive")}}}),
    );
    paths.insert("/readyz".into(), json!({"get": {"operationId": "readyz", "responses": {"200": plain("The store answers"), "503": problem("The store does not answer")}}}));
    paths.insert("/metrics".into(), json!({"get": {"operationId": "metrics", "responses": {"200": {"description": "Prometheus metrics", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}}}}}}));

    let mut schemas = registry::component_schemas();
    schemas.insert(
        "Problem".into(),
        json!({
            "type": "object",
            "description": "An RFC 7807 problem, as Krake writes it",
            "required": ["type", "status"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object"}},
            },
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Krake API (krake-rs)",
            "version": crate::handlers::meta::KRAKE_API_VERSION,
            "description": "Krake's REST API, wire-compatible with Krake 1.0.1, with krake-rs additions (resource_version, watch resume, label selectors, pagination).",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
