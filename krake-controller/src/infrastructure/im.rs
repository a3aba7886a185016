//! The Infrastructure Manager (IM) as an [`InfrastructureProvider`]: its
//! REST API, its credential header and its states.
//!
//! | call | request |
//! |---|---|
//! | create | `POST {url}/infrastructures?async=true` (`text/yaml`); the answer is the infrastructure's URL, its id the text after `infrastructures/` |
//! | update | `POST {url}/infrastructures/{id}?async=true` (`text/yaml`) |
//! | reconfigure | `PUT {url}/infrastructures/{id}/reconfigure` |
//! | delete | `DELETE {url}/infrastructures/{id}?async=true` |
//! | state | `GET {url}/infrastructures/{id}/state` → `{"state": {"state": s, "vm_states": {..}}}` |
//! | kubeconfig | `GET {url}/infrastructures/{id}/outputs` → `{"outputs": {"kubeconfig": "<yaml>"}}` |
//!
//! Every request carries the `Authorization` header of IM's auth file: the
//! IM line and the cloud's OpenStack line, joined by the literal two
//! characters `\n` (IM's convention for a header). The OpenStack line
//! carries the user's domain (`domain`) and the project's domain
//! (`tenant_domain_id`), which Krake leaves out.
//!
//! Answers: a connection failure, a timeout or a 5xx is
//! [`ProviderError::Unavailable`]; 404 is [`ProviderError::NotFound`];
//! another 4xx is [`ProviderError::Refused`] with IM's message.
//!
//! The header holds passwords and tokens: it is never logged, and the
//! `Debug` form of [`ImProvider`] shows the URL only.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use krake_data::kinds::infrastructure::{
    CloudSpec, ImSpec, InfrastructureProviderSpec, OpenstackAuthMethod,
};
use reqwest::StatusCode;
use serde_json::Value;

use super::provider::{
    InfrastructureProvider, InfrastructureState, ProviderError, ProviderFactory, ProviderTarget,
};

/// The default time one IM request may take.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer read from IM (outputs with a kubeconfig are small).
const MAX_ANSWER: usize = 4 << 20;

/// The longest piece of an IM error message kept in a reason.
const MAX_MESSAGE: usize = 1_000;

/// An `Authorization` header value that `Debug` never shows.
#[derive(Clone)]
pub struct Credentials(String);

impl Credentials {
    /// The header value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// One `key = value` pair of an auth line, refused when the value would
/// break the line (IM's format has no quoting).
fn pair(key: &str, value: &str) -> Result<String, ProviderError> {
    if value.contains([';', '\n', '\r']) || value.contains("\\n") {
        return Err(ProviderError::Unsupported(format!(
            "the {key} of the IM credentials cannot contain ';', a line break or \\n"
        )));
    }
    Ok(format!("{key} = {value}"))
}

/// The `Authorization` header IM expects for `target`: the IM line, then
/// the OpenStack line, joined by the literal characters `\n`.
///
/// # Errors
///
/// [`ProviderError::Unsupported`] when the provider has neither a token nor
/// a username and a password, or a value contains `;` or a line break.
pub fn credentials(target: ProviderTarget<'_>) -> Result<Credentials, ProviderError> {
    let InfrastructureProviderSpec::Im(im) = target.provider;
    let mut provider = vec![
        pair("id", target.provider_name)?,
        "type = InfrastructureManager".to_owned(),
    ];
    match (&im.token, &im.username, &im.password) {
        (Some(token), _, _) => provider.push(pair("token", token)?),
        (None, Some(username), Some(password)) => {
            provider.push(pair("username", username)?);
            provider.push(pair("password", password)?);
        }
        _ => {
            return Err(ProviderError::Unsupported(format!(
                "infrastructure provider {}: a token or a username and a password are required",
                target.provider_name
            )));
        }
    }
    let CloudSpec::Openstack(cloud) = target.cloud;
    let OpenstackAuthMethod::Password(auth) = &cloud.auth;
    let auth_version = if auth.version.starts_with('2') {
        "2.0_password"
    } else {
        "3.x_password"
    };
    let openstack = [
        pair("id", target.cloud_name)?,
        "type = OpenStack".to_owned(),
        pair("host", &cloud.url)?,
        pair("username", &auth.user.username)?,
        pair("password", &auth.user.password)?,
        pair("tenant", &auth.project.name)?,
        pair("auth_version", auth_version)?,
        pair("domain", &auth.user.domain_name)?,
        pair("tenant_domain_id", &auth.project.domain_id)?,
    ];
    Ok(Credentials(format!(
        "{}\\n{}",
        provider.join("; "),
        openstack.join("; ")
    )))
}

/// IM's state name to the provider state; `None` for a name IM does not
/// use.
pub fn map_state(state: &str) -> Option<InfrastructureState> {
    Some(match state {
        "pending" => InfrastructureState::Pending,
        "running" => InfrastructureState::Creating,
        "configured" => InfrastructureState::Configured,
        "unconfigured" => InfrastructureState::Unconfigured,
        "deleting" => InfrastructureState::Deleting,
        "failed" | "unknown" | "stopped" | "off" => {
            InfrastructureState::Failed(format!("the Infrastructure Manager reports {state}"))
        }
        _ => return None,
    })
}

/// The state in IM's `/state` answer: the infrastructure's, except that one
/// unconfigured machine makes the whole of it unconfigured.
///
/// # Errors
///
/// [`ProviderError::InvalidAnswer`] for an answer without a known state.
pub fn parse_state(answer: &Value) -> Result<InfrastructureState, ProviderError> {
    let state = answer.get("state");
    let name = state
        .and_then(|s| s.get("state"))
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::InvalidAnswer("no state.state in the answer".into()))?;
    let mapped = map_state(name)
        .ok_or_else(|| ProviderError::InvalidAnswer(format!("unknown state {name:?}")))?;
    let any_unconfigured = state
        .and_then(|s| s.get("vm_states"))
        .and_then(Value::as_object)
        .is_some_and(|vms| vms.values().any(|v| v.as_str() == Some("unconfigured")));
    Ok(match mapped {
        InfrastructureState::Failed(_) | InfrastructureState::Deleting => mapped,
        _ if any_unconfigured => InfrastructureState::Unconfigured,
        _ => mapped,
    })
}

/// The id in IM's answer to a create (the infrastructure's URI, as
/// `text/uri-list` or as `{"uri": ...}`): the text after
/// `infrastructures/`.
///
/// # Errors
///
/// [`ProviderError::InvalidAnswer`] when there is none.
pub fn parse_id(answer: &str) -> Result<String, ProviderError> {
    let uri = serde_json::from_str::<Value>(answer)
        .ok()
        .and_then(|v| v.get("uri").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| answer.to_owned());
    let id = uri
        .trim()
        .rsplit_once("infrastructures/")
        .map(|(_, id)| id.trim_end_matches('/'))
        .unwrap_or_default();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(ProviderError::InvalidAnswer(format!(
            "no infrastructure id in {:?}",
            shorten(answer)
        )));
    }
    Ok(id.to_owned())
}

/// The kubeconfig of IM's `/outputs` answer.
///
/// # Errors
///
/// [`ProviderError::InvalidAnswer`] when it has no `outputs.kubeconfig`
/// string.
pub fn parse_kubeconfig(answer: &Value) -> Result<String, ProviderError> {
    answer
        .get("outputs")
        .and_then(|o| o.get("kubeconfig"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| {
            ProviderError::InvalidAnswer("no kubeconfig string in the outputs".to_owned())
        })
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_MESSAGE) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// `err` with its causes on one line, without URLs.
fn error_chain(err: reqwest::Error) -> String {
    let err = err.without_url();
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// One IM endpoint with the credentials of one (provider, cloud) pair.
#[derive(Clone)]
pub struct ImProvider {
    http: reqwest::Client,
    url: String,
    credentials: Credentials,
}

impl fmt::Debug for ImProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImProvider")
            .field("url", &self.url)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// An HTTP method of the IM API.
#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl ImProvider {
    /// A client of the IM at `url` (its base URL) with `credentials`.
    pub fn new(http: reqwest::Client, url: &str, credentials: Credentials) -> Self {
        ImProvider {
            http,
            url: url.trim_end_matches('/').to_owned(),
            credentials,
        }
    }

    /// One request; the answer's body on 2xx.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<String, ProviderError> {
        let url = format!("{}/{path}", self.url);
        let request = match method {
            Method::Get => self.http.get(&url),
            Method::Post => self.http.post(&url),
            Method::Put => self.http.put(&url),
            Method::Delete => self.http.delete(&url),
        };
        let request = request
            .header("Authorization", self.credentials.expose())
            .header("Accept", "application/json");
        let request = match body {
            Some(body) => request
                .header("Content-Type", "text/yaml")
                .body(body.to_owned()),
            None => request,
        };
        let response = request
            .send()
            .await
            .map_err(|err| ProviderError::Unavailable(error_chain(err)))?;
        let status = response.status();
        if response
            .content_length()
            .is_some_and(|length| length > MAX_ANSWER as u64)
        {
            return Err(ProviderError::InvalidAnswer(format!(
                "an answer larger than {MAX_ANSWER} bytes"
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|err| ProviderError::Unavailable(error_chain(err)))?;
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ANSWER)]).into_owned();
        if status.is_success() {
            return Ok(text);
        }
        let message = format!("{status}: {}", shorten(&im_message(&text)));
        Err(if status == StatusCode::NOT_FOUND {
            ProviderError::NotFound
        } else if status.is_server_error() {
            ProviderError::Unavailable(message)
        } else {
            ProviderError::Refused(message)
        })
    }

    async fn json(&self, path: &str) -> Result<Value, ProviderError> {
        let text = self.call(Method::Get, path, None).await?;
        serde_json::from_str(&text)
            .map_err(|err| ProviderError::InvalidAnswer(format!("not JSON: {err}")))
    }
}

/// IM's error text: the `message` of a JSON error body, else the body.
fn im_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.to_owned())
}

fn check_id(id: &str) -> Result<&str, ProviderError> {
    if id.is_empty() || id.contains(['/', '?', '#']) {
        return Err(ProviderError::InvalidAnswer(format!(
            "not an infrastructure id: {id:?}"
        )));
    }
    Ok(id)
}

impl InfrastructureProvider for ImProvider {
    fn create<'a>(&'a self, template: &'a str) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let answer = self
                .call(Method::Post, "infrastructures?async=true", Some(template))
                .await?;
            parse_id(&answer)
        })
    }

    fn update<'a>(
        &'a self,
        id: &'a str,
        template: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let path = format!("infrastructures/{}?async=true", check_id(id)?);
            self.call(Method::Post, &path, Some(template)).await?;
            Ok(())
        })
    }

    fn reconfigure<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let path = format!("infrastructures/{}/reconfigure", check_id(id)?);
            self.call(Method::Put, &path, None).await?;
            Ok(())
        })
    }

    fn delete<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let path = format!("infrastructures/{}?async=true", check_id(id)?);
            self.call(Method::Delete, &path, None).await?;
            Ok(())
        })
    }

    fn state<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<InfrastructureState, ProviderError>> {
        Box::pin(async move {
            let answer = self
                .json(&format!("infrastructures/{}/state", check_id(id)?))
                .await?;
            parse_state(&answer)
        })
    }

    fn kubeconfig<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            let answer = self
                .json(&format!("infrastructures/{}/outputs", check_id(id)?))
                .await?;
            parse_kubeconfig(&answer)
        })
    }
}

/// Builds [`ImProvider`]s, sharing one HTTP client.
#[derive(Debug, Clone)]
pub struct ImFactory {
    http: Result<reqwest::Client, String>,
}

impl Default for ImFactory {
    fn default() -> Self {
        ImFactory::new(TIMEOUT)
    }
}

impl ImFactory {
    /// A factory whose requests take at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(error_chain);
        ImFactory { http }
    }
}

impl ProviderFactory for ImFactory {
    fn provider(
        &self,
        target: ProviderTarget<'_>,
    ) -> Result<Arc<dyn InfrastructureProvider>, ProviderError> {
        let http = self
            .http
            .as_ref()
            .map_err(|err| ProviderError::Unavailable(err.clone()))?;
        let InfrastructureProviderSpec::Im(ImSpec { url, .. }) = target.provider;
        Ok(Arc::new(ImProvider::new(
            http.clone(),
            url,
            credentials(target)?,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krake_data::kinds::infrastructure::{
        InfrastructureProviderRef, OpenstackProject, OpenstackSpec, OpenstackUser, PasswordAuth,
    };
    use serde_json::json;

    fn openstack() -> CloudSpec {
        CloudSpec::Openstack(OpenstackSpec {
            url: "https://keystone:5000/v3".into(),
            auth: OpenstackAuthMethod::Password(PasswordAuth {
                version: "3".into(),
                user: OpenstackUser {
                    username: "alice".into(),
                    password: "s3cret".into(),
                    domain_name: "Users".into(),
                    comment: None,
                },
                project: OpenstackProject {
                    name: "proj".into(),
                    domain_id: "d0m41n".into(),
                    comment: None,
                },
            }),
            metrics: Vec::new(),
            infrastructure_provider: InfrastructureProviderRef {
                name: "im".into(),
                namespaced: false,
            },
        })
    }

    fn im(token: Option<&str>, user: Option<(&str, &str)>) -> InfrastructureProviderSpec {
        InfrastructureProviderSpec::Im(ImSpec {
            url: "http://im:8800".into(),
            username: user.map(|u| u.0.to_owned()),
            password: user.map(|u| u.1.to_owned()),
            token: token.map(str::to_owned),
        })
    }

    fn target<'a>(
        provider: &'a InfrastructureProviderSpec,
        cloud: &'a CloudSpec,
    ) -> ProviderTarget<'a> {
        ProviderTarget {
            provider_name: "im",
            provider,
            cloud_name: "os",
            cloud,
        }
    }

    #[test]
    fn the_header_has_two_lines_joined_by_a_literal_backslash_n() {
        let (provider, cloud) = (im(None, Some(("bob", "pw"))), openstack());
        let header = credentials(target(&provider, &cloud)).unwrap();
        assert_eq!(
            header.expose(),
            "id = im; type = InfrastructureManager; username = bob; password = pw\\n\
             id = os; type = OpenStack; host = https://keystone:5000/v3; username = alice; \
             password = s3cret; tenant = proj; auth_version = 3.x_password; domain = Users; \
             tenant_domain_id = d0m41n"
        );
        assert!(!header.expose().contains('\n'));
        let (provider, cloud) = (im(Some("tok"), None), openstack());
        let header = credentials(target(&provider, &cloud)).unwrap();
        assert!(
            header
                .expose()
                .starts_with("id = im; type = InfrastructureManager; token = tok\\n")
        );
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let (provider, cloud) = (im(Some("tok3n"), None), openstack());
        let factory = ImFactory::default();
        let built = factory.provider(target(&provider, &cloud)).unwrap();
        let text = format!("{built:?} {:?}", target(&provider, &cloud));
        for secret in ["tok3n", "s3cret"] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(text.contains("http://im:8800"), "{text}");
    }

    #[test]
    fn broken_credentials_are_refused() {
        let (provider, cloud) = (im(None, Some(("bob", "a;b"))), openstack());
        assert!(matches!(
            credentials(target(&provider, &cloud)),
            Err(ProviderError::Unsupported(_))
        ));
        let (provider, cloud) = (im(None, Some(("bob", "a\\nid = x"))), openstack());
        assert!(credentials(target(&provider, &cloud)).is_err());
        let (provider, cloud) = (im(None, None), openstack());
        assert!(credentials(target(&provider, &cloud)).is_err());
    }

    #[test]
    fn states_map_as_krake_maps_them() {
        for (im, state) in [
            ("pending", InfrastructureState::Pending),
            ("running", InfrastructureState::Creating),
            ("configured", InfrastructureState::Configured),
            ("unconfigured", InfrastructureState::Unconfigured),
            ("deleting", InfrastructureState::Deleting),
        ] {
            assert_eq!(map_state(im), Some(state));
        }
        for failed in ["failed", "unknown", "stopped", "off"] {
            assert!(matches!(
                map_state(failed),
                Some(InfrastructureState::Failed(_))
            ));
        }
        assert_eq!(map_state("weird"), None);
        let answer = json!({"state": {"state": "configured", "vm_states": {"0": "configured", "1": "unconfigured"}}});
        assert_eq!(
            parse_state(&answer).unwrap(),
            InfrastructureState::Unconfigured
        );
        let answer = json!({"state": {"state": "running", "vm_states": {}}});
        assert_eq!(parse_state(&answer).unwrap(), InfrastructureState::Creating);
        assert!(parse_state(&json!({"state": "x"})).is_err());
    }

    #[test]
    fn ids_and_outputs_are_read() {
        assert_eq!(
            parse_id("http://im:8800/infrastructures/abc-123\n").unwrap(),
            "abc-123"
        );
        assert_eq!(
            parse_id(r#"{"uri": "http://im:8800/infrastructures/abc-123"}"#).unwrap(),
            "abc-123"
        );
        assert!(parse_id("http://im:8800/").is_err());
        assert!(parse_id("").is_err());
        let outputs = json!({"outputs": {"kubeconfig": "apiVersion: v1\n"}});
        assert_eq!(parse_kubeconfig(&outputs).unwrap(), "apiVersion: v1\n");
        assert!(parse_kubeconfig(&json!({"outputs": {}})).is_err());
        assert!(check_id("a/b").is_err());
    }
}
