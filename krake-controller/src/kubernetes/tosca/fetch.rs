//! The network part of TOSCA and CSAR applications: templates and archives
//! read from their URLs (with a timeout and a size cap), and the whole
//! translation of an application's spec ([`translate_spec`]).

use std::time::Duration;

use krake_data::kinds::kubernetes::{ApplicationSpec, ManifestResource, Tosca};
use serde_json::Map;

use super::{Problem, ToscaError, csar, parse_template, translate};

/// The default cap on what one URL may deliver (and on each file of a CSAR
/// once unpacked): 16 MiB.
pub const MAX_BYTES: usize = 16 << 20;

/// The default time one URL may take, connection to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Reads TOSCA templates and CSAR archives from their URLs.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: Result<reqwest::Client, String>,
    timeout: Duration,
    max_bytes: usize,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher::new(TIMEOUT, MAX_BYTES)
    }
}

impl Fetcher {
    /// A fetcher whose requests take at most `timeout` and deliver at most
    /// `max_bytes`.
    pub fn new(timeout: Duration, max_bytes: usize) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|err| error_chain(&err));
        Fetcher {
            client,
            timeout,
            max_bytes,
        }
    }

    /// The cap on what one URL may deliver.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The body of `url` (a 2xx answer, at most the cap).
    ///
    /// # Errors
    ///
    /// [`Problem::Unreadable`] at `url`: no connection, a timeout, an answer
    /// other than 2xx, a body larger than the cap.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, ToscaError> {
        let unreadable = |message: String| ToscaError::new(url, Problem::Unreadable(message));
        let client = self
            .client
            .as_ref()
            .map_err(|err| unreadable(err.clone()))?;
        let too_large = || unreadable(format!("larger than {} bytes", self.max_bytes));
        let failed = |err: reqwest::Error| {
            if err.is_timeout() {
                unreadable(format!("no complete answer within {:?}", self.timeout))
            } else {
                unreadable(error_chain(&err.without_url()))
            }
        };
        let mut response = client.get(url).send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            return Err(unreadable(format!("the server answered {status}")));
        }
        if response
            .content_length()
            .is_some_and(|length| length > u64::try_from(self.max_bytes).unwrap_or(u64::MAX))
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The error and its causes on one line (reqwest's own message alone says
/// little: "error sending request").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// Whether `spec` is to be translated: no manifest, and a TOSCA template or
/// a CSAR archive (Krake's rule; a manifest wins).
pub fn needs_translation(spec: &ApplicationSpec) -> bool {
    spec.manifest.is_empty()
        && (!spec.tosca.is_empty() || spec.csar.as_deref().is_some_and(|c| !c.is_empty()))
}

/// The manifest of a TOSCA or CSAR application: `spec.tosca` (inline, or
/// read from its URL) first, else the entry template of the `spec.csar`
/// archive; `None` when neither is set. Errors name their place: a path
/// under `spec.tosca`, or the URL (and the file of the archive) followed by
/// the path in the template.
///
/// # Errors
///
/// What [`Fetcher::get`], [`csar::entry_definitions`], [`parse_template`]
/// and [`translate`] find.
pub async fn translate_spec(
    spec: &ApplicationSpec,
    fetcher: &Fetcher,
) -> Result<Option<Vec<ManifestResource>>, ToscaError> {
    let inputs = Map::new();
    match &spec.tosca {
        Tosca::Template(template) if !template.is_empty() => {
            return translate(template, &inputs).map(Some).map_err(inline);
        }
        Tosca::Url(url) if !url.is_empty() => {
            let bytes = fetcher.get(url).await?;
            let text = String::from_utf8(bytes).map_err(|_| {
                ToscaError::new(url.as_str(), Problem::Yaml("not UTF-8 text".to_owned()))
            })?;
            return parse_template(&text)
                .and_then(|template| translate(&template, &inputs))
                .map(Some)
                .map_err(|err| err.within(url));
        }
        _ => {}
    }
    let Some(url) = spec.csar.as_deref().filter(|url| !url.is_empty()) else {
        return Ok(None);
    };
    let bytes = fetcher.get(url).await?;
    let entry =
        csar::entry_definitions(&bytes, fetcher.max_bytes()).map_err(|err| err.within(url))?;
    parse_template(&entry.text)
        .and_then(|template| translate(&template, &inputs))
        .map(Some)
        .map_err(|err| err.within(&format!("{url} ({})", entry.path)))
}

/// An error of an inline template: its location below `spec.tosca`.
fn inline(mut err: ToscaError) -> ToscaError {
    err.location = if err.location.is_empty() {
        "spec.tosca".to_owned()
    } else {
        format!("spec.tosca.{}", err.location)
    };
    err
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;
    use std::net::SocketAddr;

    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use serde_json::{Value, json};

    use super::*;

    const TEMPLATE: &str = "\
tosca_definitions_version: tosca_simple_yaml_1_0
topology_template:
  node_templates:
    cm:
      type: tosca.nodes.indigo.KubernetesObject
      properties:
        spec: \"apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: cm}\\n\"
";

    fn csar(entry: &str, files: &[(&str, &str)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file(csar::META, options).unwrap();
        write!(
            zip,
            "TOSCA-Meta-File-Version: 1.0\nEntry-Definitions: {entry}\n"
        )
        .unwrap();
        for (name, content) in files {
            zip.start_file(*name, options).unwrap();
            zip.write_all(content.as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    /// A server on loopback: a template, a CSAR, a 404, a stalled answer,
    /// bodies too large with and without a length.
    async fn serve() -> SocketAddr {
        let archive = csar("app.yaml", &[("app.yaml", TEMPLATE)]);
        let app = Router::new()
            .route("/app.yaml", get(|| async { TEMPLATE }))
            .route("/app.csar", get(move || async move { archive }))
            .route(
                "/slow.yaml",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    TEMPLATE
                }),
            )
            .route("/big.yaml", get(|| async { vec![b'#'; 4096] }))
            .route(
                "/stream.yaml",
                get(|| async {
                    let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(vec![b'#'; 1024]));
                    Body::from_stream(futures::stream::iter(chunks))
                }),
            )
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such file") });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    fn fetcher() -> Fetcher {
        Fetcher::new(Duration::from_millis(500), 2048)
    }

    fn spec(extra: Value) -> ApplicationSpec {
        let mut spec = json!({"manifest": [], "constraints": {"cluster": {}}});
        if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
            spec.extend(extra);
        }
        serde_json::from_value(spec).unwrap()
    }

    #[tokio::test]
    async fn a_url_is_read() {
        let addr = serve().await;
        let body = fetcher()
            .get(&format!("http://{addr}/app.yaml"))
            .await
            .unwrap();
        assert_eq!(body, TEMPLATE.as_bytes());
    }

    #[tokio::test]
    async fn an_answer_other_than_2xx_is_refused() {
        let addr = serve().await;
        let url = format!("http://{addr}/nothing.yaml");
        let err = fetcher().get(&url).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{url}: cannot be read: the server answered 404 Not Found")
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://{addr}/app.yaml");
        let err = fetcher().get(&url).await.unwrap_err();
        assert_eq!(err.location, url);
        assert!(matches!(err.problem, Problem::Unreadable(_)), "{err}");
        assert!(err.to_string().to_lowercase().contains("connect"), "{err}");
    }

    #[tokio::test]
    async fn a_stalled_answer_times_out() {
        let addr = serve().await;
        let url = format!("http://{addr}/slow.yaml");
        let started = std::time::Instant::now();
        let err = fetcher().get(&url).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            err.to_string(),
            format!("{url}: cannot be read: no complete answer within 500ms")
        );
    }

    #[tokio::test]
    async fn a_body_over_the_cap_is_refused_with_or_without_a_length() {
        let addr = serve().await;
        for path in ["big.yaml", "stream.yaml"] {
            let url = format!("http://{addr}/{path}");
            let err = fetcher().get(&url).await.unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{url}: cannot be read: larger than 2048 bytes")
            );
        }
    }

    #[tokio::test]
    async fn a_url_that_is_no_http_url_is_refused() {
        let err = fetcher().get("file:///etc/passwd.yaml").await.unwrap_err();
        assert_eq!(err.location, "file:///etc/passwd.yaml");
        assert!(matches!(err.problem, Problem::Unreadable(_)), "{err}");
    }

    #[test]
    fn translation_is_needed_without_a_manifest_only() {
        assert!(needs_translation(&spec(
            json!({"tosca": "http://x/t.yaml"})
        )));
        assert!(needs_translation(&spec(json!({"csar": "http://x/t.csar"}))));
        assert!(needs_translation(&spec(json!({"tosca": {"a": 1}}))));
        assert!(!needs_translation(&spec(json!({"csar": ""}))));
        assert!(!needs_translation(&spec(json!({}))));
        assert!(!needs_translation(&spec(json!({
            "tosca": "http://x/t.yaml",
            "manifest": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}],
        }))));
    }

    fn config_map(name: &str) -> ManifestResource {
        serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn inline_url_and_csar_templates_are_translated() {
        let addr = serve().await;
        let inline: Value = serde_saphyr::from_str(TEMPLATE).unwrap();
        for extra in [
            json!({"tosca": inline}),
            json!({"tosca": format!("http://{addr}/app.yaml")}),
            json!({"csar": format!("http://{addr}/app.csar")}),
            // The template wins over the archive, as in Krake.
            json!({"tosca": format!("http://{addr}/app.yaml"), "csar": format!("http://{addr}/x.csar")}),
        ] {
            let manifest = translate_spec(&spec(extra.clone()), &Fetcher::default())
                .await
                .unwrap();
            assert_eq!(manifest, Some(vec![config_map("cm")]), "{extra}");
        }
        assert_eq!(
            translate_spec(&spec(json!({})), &fetcher()).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn errors_name_their_place() {
        let addr = serve().await;
        let err = translate_spec(
            &spec(json!({"tosca": {"tosca_definitions_version": "v", "topology_template": {"node_templates": {"vm": {"type": "tosca.nodes.Compute"}}}}})),
            &fetcher(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.tosca.topology_template.node_templates.vm.type: unsupported node type \
             \"tosca.nodes.Compute\"; only tosca.nodes.indigo.KubernetesObject is supported"
        );
        let url = format!("http://{addr}/big.yaml");
        let err = translate_spec(&spec(json!({"tosca": url})), &Fetcher::default())
            .await
            .unwrap_err();
        // '#' lines are YAML comments: an empty document.
        assert_eq!(
            err.to_string(),
            format!("{url}: expected a mapping, found null")
        );
        let url = format!("http://{addr}/app.yaml");
        let err = translate_spec(&spec(json!({"csar": url})), &fetcher())
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{url}: not a CSAR (ZIP) archive")),
            "{err}"
        );
    }
}
