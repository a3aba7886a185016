//! A small Keystone v3 + Magnum v1 client: what the Magnum controller asks
//! of OpenStack (Krake used `keystoneauth1` and `python-magnumclient`).
//!
//! [`OpenStack::authenticate`] gets a token from Keystone (`POST {url}/auth/tokens`,
//! the `password` method with a user id scoped to a project id, or the
//! `application_credential` method) and finds Magnum
//! (`container-infra`) in the token's catalog; the [`Magnum`] session then
//! sends `X-Auth-Token` with every request. Credentials and tokens never
//! appear in errors, logs or `Debug` output.

use std::time::Duration;

use krake_data::kinds::openstack::AuthMethod;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Why a request to Keystone or Magnum failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenStackError {
    /// No answer: connection refused, timeout, broken connection.
    #[error("{service} cannot be reached ({method} {url}): {message}")]
    Unreachable {
        /// `Keystone` or `Magnum`.
        service: &'static str,
        /// The request's method.
        method: String,
        /// The request's URL.
        url: String,
        /// The cause.
        message: String,
    },
    /// An HTTP error answer.
    #[error("{message} (HTTP {status}): {method} {url}")]
    Http {
        /// `Keystone` or `Magnum`.
        service: &'static str,
        /// The HTTP status.
        status: u16,
        /// The request's method.
        method: String,
        /// The request's URL.
        url: String,
        /// The service's message (its error body).
        message: String,
    },
    /// An answer without what it should have (no token, no Magnum in the
    /// catalog, a body that is not the expected JSON).
    #[error("{service}: {message}")]
    Invalid {
        /// `Keystone` or `Magnum`.
        service: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl OpenStackError {
    /// Worth trying again later: no answer, a 5xx, 429 or 409 (another
    /// operation runs on the cluster).
    pub fn is_transient(&self) -> bool {
        match self {
            OpenStackError::Unreachable { .. } => true,
            OpenStackError::Http { status, .. } => {
                *status >= 500 || *status == 429 || *status == 409
            }
            OpenStackError::Invalid { .. } => false,
        }
    }

    /// A 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, OpenStackError::Http { status: 404, .. })
    }
}

/// A cluster as Magnum shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// `CREATE_IN_PROGRESS`, `CREATE_COMPLETE`, `UPDATE_FAILED`, ...
    pub status: String,
    /// Why it is in that status.
    pub status_reason: Option<String>,
    /// Worker nodes.
    pub node_count: Option<i64>,
    /// The Kubernetes API's URL.
    pub api_address: Option<String>,
    /// Addresses of the masters.
    pub master_addresses: Vec<String>,
    /// Addresses of the workers.
    pub node_addresses: Vec<String>,
}

/// An HTTP client for Keystone and Magnum, with timeouts.
#[derive(Debug, Clone)]
pub struct OpenStack {
    http: reqwest::Client,
}

/// A Magnum session: its endpoint and a token.
#[derive(Clone)]
pub struct Magnum {
    http: reqwest::Client,
    /// The endpoint without its `/v1`.
    endpoint: String,
    token: String,
}

impl std::fmt::Debug for Magnum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Magnum")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// The message of an OpenStack error body: Keystone's
/// `{"error": {"message"}}`, Magnum's `{"errors": [{"detail"}]}`, else the
/// text (shortened).
fn error_message(text: &str) -> String {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let found = body["error"]["message"]
        .as_str()
        .or_else(|| body["errors"][0]["detail"].as_str())
        .or_else(|| body["errors"][0]["title"].as_str())
        .or_else(|| body["error_message"].as_str());
    match found {
        Some(message) => message.to_owned(),
        None => text.chars().take(200).collect::<String>().trim().to_owned(),
    }
}

async fn send(
    service: &'static str,
    request: reqwest::RequestBuilder,
    method: &Method,
    url: &str,
) -> Result<(StatusCode, reqwest::header::HeaderMap, String), OpenStackError> {
    let unreachable = |err: reqwest::Error| OpenStackError::Unreachable {
        service,
        method: method.to_string(),
        url: url.to_owned(),
        message: err.without_url().to_string(),
    };
    let response = request.send().await.map_err(unreachable)?;
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.map_err(unreachable)?;
    if !status.is_success() {
        return Err(OpenStackError::Http {
            service,
            status: status.as_u16(),
            method: method.to_string(),
            url: url.to_owned(),
            message: error_message(&text),
        });
    }
    Ok((status, headers, text))
}

impl OpenStack {
    /// A client whose requests give up after `timeout` (connecting after
    /// at most 5 s).
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        OpenStack { http }
    }

    /// A token from Keystone at `auth_url` (Krake's `Project.spec.url`,
    /// `.../v3`) and the Magnum session of its catalog.
    pub async fn authenticate(
        &self,
        auth_url: &str,
        auth: &AuthMethod,
    ) -> Result<Magnum, OpenStackError> {
        let base = auth_url.trim_end_matches('/');
        let url = if base.ends_with("/v3") {
            format!("{base}/auth/tokens")
        } else {
            format!("{base}/v3/auth/tokens")
        };
        let body = match auth {
            AuthMethod::Password(password) => json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "id": password.user.id, "password": password.user.password}}},
                "scope": {"project": {"id": password.project.id}},
            }}),
            AuthMethod::ApplicationCredential(credential) => json!({"auth": {
                "identity": {"methods": ["application_credential"],
                    "application_credential": {"id": credential.id, "secret": credential.secret}},
            }}),
        };
        let (_, headers, text) = send(
            "Keystone",
            self.http.post(&url).json(&body),
            &Method::POST,
            &url,
        )
        .await?;
        let invalid = |message: &str| OpenStackError::Invalid {
            service: "Keystone",
            message: message.to_owned(),
        };
        let token = headers
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| invalid("no X-Subject-Token in the answer"))?
            .to_owned();
        let body: Value =
            serde_json::from_str(&text).map_err(|_| invalid("the token is not JSON"))?;
        let endpoint = magnum_endpoint(&body["token"]["catalog"])
            .ok_or_else(|| invalid("no container-infra (Magnum) endpoint in the catalog"))?;
        Ok(Magnum {
            http: self.http.clone(),
            endpoint,
            token,
        })
    }
}

/// Magnum's URL in a catalog (the public endpoint of `container-infra`,
/// else any), without a trailing `/v1`.
fn magnum_endpoint(catalog: &Value) -> Option<String> {
    let service = catalog
        .as_array()?
        .iter()
        .find(|s| s["type"] == "container-infra")?;
    let endpoints = service["endpoints"].as_array()?;
    let endpoint = endpoints
        .iter()
        .find(|e| e["interface"] == "public")
        .or_else(|| endpoints.first())?;
    let url = endpoint["url"].as_str()?.trim_end_matches('/');
    Some(url.strip_suffix("/v1").unwrap_or(url).to_owned())
}

impl Magnum {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, OpenStackError> {
        let url = format!("{}/v1{path}", self.endpoint);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "container-infra latest")
            .header("Accept", "application/json");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (_, _, text) = send("Magnum", request, &method, &url).await?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|_| OpenStackError::Invalid {
            service: "Magnum",
            message: format!("the answer to {method} {url} is not JSON"),
        })
    }

    fn field(value: &Value, key: &str) -> Result<String, OpenStackError> {
        value[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| OpenStackError::Invalid {
                service: "Magnum",
                message: format!("no {key} in the answer"),
            })
    }

    /// The COE (`kubernetes`, `swarm`, ...) of a cluster template.
    pub async fn template_coe(&self, template: &str) -> Result<String, OpenStackError> {
        let value = self
            .call(Method::GET, &format!("/clustertemplates/{template}"), None)
            .await?;
        Self::field(&value, "coe")
    }

    /// Creates a cluster; its uuid.
    pub async fn create_cluster(
        &self,
        name: &str,
        template: &str,
        master_count: Option<i64>,
        node_count: Option<i64>,
    ) -> Result<String, OpenStackError> {
        let mut body = json!({
            "name": name,
            "cluster_template_id": template,
            "create_timeout": 60,
        });
        if let Some(count) = master_count {
            body["master_count"] = json!(count);
        }
        if let Some(count) = node_count {
            body["node_count"] = json!(count);
        }
        let value = self.call(Method::POST, "/clusters", Some(body)).await?;
        Self::field(&value, "uuid")
    }

    /// A cluster.
    pub async fn cluster(&self, id: &str) -> Result<ClusterInfo, OpenStackError> {
        let value = self
            .call(Method::GET, &format!("/clusters/{id}"), None)
            .await?;
        let strings = |key: &str| -> Vec<String> {
            value[key]
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(ClusterInfo {
            status: Self::field(&value, "status")?,
            status_reason: value["status_reason"].as_str().map(str::to_owned),
            node_count: value["node_count"].as_i64(),
            api_address: value["api_address"].as_str().map(str::to_owned),
            master_addresses: strings("master_addresses"),
            node_addresses: strings("node_addresses"),
        })
    }

    /// Resizes a cluster to `node_count` workers
    /// (`POST /v1/clusters/{id}/actions/resize`).
    pub async fn resize(&self, id: &str, node_count: i64) -> Result<(), OpenStackError> {
        self.call(
            Method::POST,
            &format!("/clusters/{id}/actions/resize"),
            Some(json!({"node_count": node_count})),
        )
        .await
        .map(drop)
    }

    /// Deletes a cluster.
    pub async fn delete(&self, id: &str) -> Result<(), OpenStackError> {
        self.call(Method::DELETE, &format!("/clusters/{id}"), None)
            .await
            .map(drop)
    }

    /// The CA of a cluster (PEM).
    pub async fn ca(&self, id: &str) -> Result<String, OpenStackError> {
        let value = self
            .call(Method::GET, &format!("/certificates/{id}"), None)
            .await?;
        Self::field(&value, "pem")
    }

    /// `csr` (PEM) signed by the cluster's CA (PEM).
    pub async fn sign(&self, id: &str, csr: &str) -> Result<String, OpenStackError> {
        let value = self
            .call(
                Method::POST,
                "/certificates",
                Some(json!({"cluster_uuid": id, "csr": csr})),
            )
            .await?;
        Self::field(&value, "pem")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnum_is_found_in_the_catalog_without_its_version() {
        let catalog = json!([
            {"type": "identity", "endpoints": [{"interface": "public", "url": "http://k/v3"}]},
            {"type": "container-infra", "endpoints": [
                {"interface": "internal", "url": "http://internal:9511/v1"},
                {"interface": "public", "url": "http://public:9511/v1/"},
            ]},
        ]);
        assert_eq!(
            magnum_endpoint(&catalog).as_deref(),
            Some("http://public:9511")
        );
        assert_eq!(magnum_endpoint(&json!([{"type": "identity"}])), None);
    }

    #[test]
    fn error_messages_come_from_either_body() {
        assert_eq!(
            error_message(r#"{"error": {"code": 401, "message": "requires authentication"}}"#),
            "requires authentication"
        );
        assert_eq!(
            error_message(
                r#"{"errors": [{"status": 404, "detail": "Cluster x could not be found."}]}"#
            ),
            "Cluster x could not be found."
        );
        assert_eq!(error_message("plain"), "plain");
        let transient = |status| OpenStackError::Http {
            service: "Magnum",
            status,
            method: "GET".into(),
            url: "u".into(),
            message: "m".into(),
        };
        assert!(transient(503).is_transient());
        assert!(transient(409).is_transient());
        assert!(!transient(400).is_transient());
        assert!(transient(404).is_not_found());
    }
}
