//! Krake's application hooks (`spec.hooks`): `complete` (the workload says
//! it is done, and the application is removed) and `shutdown` (the workload
//! is asked to shut down gracefully before a deletion or migration; see
//! [`shutdown`]).
//!
//! What both hooks stand on:
//!
//! 1. **Secrets in the status** ([`prepare_status`]): per application and
//!    hook, a random token (`status.complete_token`, `shutdown_token`) and,
//!    with an intermediate CA configured, a client certificate and its key
//!    (`*_cert`, `*_key`; [`certs`]). Each is made once and written before
//!    any manifest that uses it is applied; they are never made again while
//!    the status has them.
//! 2. **Mangling** ([`mangle`]): the desired manifest gets, per hook, a
//!    Secret `<app>-krake-<hook>-secret-token` (keys `krake_<hook>_token`
//!    and `krake_<hook>_url`, the environment variable names lowercased) in
//!    every namespace a workload of the application runs in, environment
//!    variables from it (`valueFrom.secretKeyRef`) in every container of
//!    every Pod and Pod template, and with TLS a Secret
//!    `<app>-krake-<hook>-secret-certs` (`ca-bundle.pem`, `cert.pem`,
//!    `key.pem`) mounted as volume `<app>-krake-<hook>-volume` at
//!    `cert_dest`. They are applied, observed and healed like the rest of
//!    the manifest, and deleted with it.
//! 3. **The URL**: `external_endpoint`, else the API endpoint of the
//!    controller, with the path
//!    `/kubernetes/namespaces/{namespace}/applications/{name}/<hook>`.
//!
//! The complete flow then needs nothing more from the controller: the
//! workload calls `PUT …/complete {"token": …}`, the API marks the
//! application deleted (READY_FOR_ACTION), and the deletion removes every
//! resource of the last applied manifest, the hook Secrets included.

pub mod certs;
pub mod mangle;
pub mod shutdown;

use std::sync::Arc;

use krake_data::kinds::kubernetes::{Application, ApplicationStatus};

use self::certs::{CertError, HookCa};
use self::shutdown::ShutdownSettings;

/// One of Krake's two hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `complete`: the workload reports that it finished.
    Complete,
    /// `shutdown`: the workload acknowledges a graceful shutdown.
    Shutdown,
}

impl Hook {
    /// Both, in the order they are mangled.
    pub const ALL: [Hook; 2] = [Hook::Complete, Hook::Shutdown];

    /// The name in `spec.hooks`, in Secret names and in the URL.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Complete => "complete",
            Hook::Shutdown => "shutdown",
        }
    }

    /// True if `app` asks for this hook.
    pub fn enabled(self, app: &Application) -> bool {
        app.spec.hooks.iter().any(|hook| hook == self.name())
    }

    /// The token of this hook in `status`.
    pub fn token(self, status: &ApplicationStatus) -> Option<&str> {
        match self {
            Hook::Complete => status.complete_token.as_deref(),
            Hook::Shutdown => status.shutdown_token.as_deref(),
        }
    }

    /// The certificate and key of this hook in `status`.
    pub fn cert(self, status: &ApplicationStatus) -> Option<(&str, &str)> {
        let (cert, key) = match self {
            Hook::Complete => (&status.complete_cert, &status.complete_key),
            Hook::Shutdown => (&status.shutdown_cert, &status.shutdown_key),
        };
        Some((cert.as_deref()?, key.as_deref()?))
    }

    fn token_mut(self, status: &mut ApplicationStatus) -> &mut Option<String> {
        match self {
            Hook::Complete => &mut status.complete_token,
            Hook::Shutdown => &mut status.shutdown_token,
        }
    }

    fn cert_mut(
        self,
        status: &mut ApplicationStatus,
    ) -> (&mut Option<String>, &mut Option<String>) {
        match self {
            Hook::Complete => (&mut status.complete_cert, &mut status.complete_key),
            Hook::Shutdown => (&mut status.shutdown_cert, &mut status.shutdown_key),
        }
    }
}

/// The settings of one hook (Krake's `hooks.complete` or `hooks.shutdown`
/// of `kubernetes_application.yaml`).
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The common name of the hook's certificates (`hook_user`, default
    /// `system:complete-hook`, `system:shutdown-hook`).
    pub hook_user: String,
    /// Where the certificates Secret is mounted in the containers
    /// (`cert_dest`, default `/etc/krake_complete_certs/`,
    /// `/etc/krake_shutdown_certs/`).
    pub cert_dest: String,
    /// The environment variable of the token (`env_token`, default
    /// `KRAKE_COMPLETE_TOKEN`, `KRAKE_SHUTDOWN_TOKEN`).
    pub env_token: String,
    /// The environment variable of the URL (`env_url`, default
    /// `KRAKE_COMPLETE_URL`, `KRAKE_SHUTDOWN_URL`).
    pub env_url: String,
    /// The API as the workloads reach it (`external_endpoint`; default: the
    /// [`HooksConfig::api_endpoint`]).
    pub external_endpoint: Option<String>,
    /// The intermediate CA of the certificates (`intermediate_src`,
    /// `intermediate_key_src`); without it no certificates are made.
    pub ca: Option<Arc<HookCa>>,
}

impl HookConfig {
    /// Krake's defaults of `hook`, without certificates.
    pub fn defaults(hook: Hook) -> HookConfig {
        let name = hook.name();
        let upper = name.to_uppercase();
        HookConfig {
            hook_user: format!("system:{name}-hook"),
            cert_dest: format!("/etc/krake_{name}_certs/"),
            env_token: format!("KRAKE_{upper}_TOKEN"),
            env_url: format!("KRAKE_{upper}_URL"),
            external_endpoint: None,
            ca: None,
        }
    }
}

/// The settings of the hooks (Krake's `hooks` of
/// `kubernetes_application.yaml`).
#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// The API endpoint of the controller, the hooks' URL unless a hook has
    /// an `external_endpoint` (default `http://localhost:8080`, Krake's
    /// `api_endpoint`).
    pub api_endpoint: String,
    /// `hooks.complete`.
    pub complete: HookConfig,
    /// `hooks.shutdown`.
    pub shutdown: HookConfig,
    /// `hooks.shutdown`'s `timeout`, `failure_strategy` and
    /// `failure_retry_count`: the shutdown flow.
    pub shutdown_settings: ShutdownSettings,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            api_endpoint: "http://localhost:8080".to_owned(),
            complete: HookConfig::defaults(Hook::Complete),
            shutdown: HookConfig::defaults(Hook::Shutdown),
            shutdown_settings: ShutdownSettings::default(),
        }
    }
}

impl HooksConfig {
    /// The settings of `hook`.
    pub fn hook(&self, hook: Hook) -> &HookConfig {
        match hook {
            Hook::Complete => &self.complete,
            Hook::Shutdown => &self.shutdown,
        }
    }

    /// The URL `app`'s workloads call for `hook`: the endpoint's scheme and
    /// authority with the hook's path (a path of the endpoint is replaced,
    /// as Krake does).
    pub fn url(&self, hook: Hook, app: &Application) -> String {
        let endpoint = self
            .hook(hook)
            .external_endpoint
            .as_deref()
            .unwrap_or(&self.api_endpoint);
        let authority_start = endpoint.find("://").map_or(0, |at| at + 3);
        let base = match endpoint[authority_start..].find(['/', '?', '#']) {
            Some(end) => &endpoint[..authority_start + end],
            None => endpoint,
        };
        format!(
            "{base}/kubernetes/namespaces/{}/applications/{}/{}",
            app.metadata.namespace.as_deref().unwrap_or_default(),
            app.metadata.name,
            hook.name()
        )
    }
}

/// Why the hooks' secrets could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The operating system's random generator failed.
    #[error("no random token: {0}")]
    Random(String),
    /// A certificate could not be made.
    #[error(transparent)]
    Cert(#[from] CertError),
}

/// A fresh token: 32 random bytes from the operating system, URL-safe
/// base64 without padding (43 characters, like Python's
/// `secrets.token_urlsafe()`).
pub fn new_token() -> Result<String, HookError> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| HookError::Random(err.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The status `app` needs before its manifest is applied: a token for every
/// hook it asks for that has none yet, and a certificate for every such
/// hook with an intermediate CA that has none yet. `None` when nothing is
/// missing (nothing is ever made again, nor removed).
pub fn prepare_status(
    config: &HooksConfig,
    app: &Application,
) -> Result<Option<ApplicationStatus>, HookError> {
    let mut status = app.status.clone();
    let mut changed = false;
    for hook in Hook::ALL {
        if !hook.enabled(app) {
            continue;
        }
        let token = hook.token_mut(&mut status);
        if token.is_none() {
            *token = Some(new_token()?);
            changed = true;
        }
        if let Some(ca) = &config.hook(hook).ca {
            let (cert, key) = hook.cert_mut(&mut status);
            if cert.is_none() || key.is_none() {
                let issued = ca.issue(&config.hook(hook).hook_user)?;
                *cert = Some(issued.cert_pem);
                *key = Some(issued.key_pem);
                changed = true;
            }
        }
    }
    Ok(changed.then_some(status))
}

/// Clears the token and certificate of every hook `app` no longer asks
/// for from `status` (once its Secrets are deleted; see
/// [`mangle::disabled_secrets`]): asking for it again makes new ones.
pub fn forget_disabled(app: &Application, status: &mut ApplicationStatus) {
    for hook in Hook::ALL {
        if !hook.enabled(app) {
            *hook.token_mut(status) = None;
            let (cert, key) = hook.cert_mut(status);
            *cert = None;
            *key = None;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn app(hooks: &[&str]) -> Application {
        serde_json::from_value(json!({
            "api": "kubernetes",
            "kind": "Application",
            "metadata": {"name": "job", "namespace": "testing"},
            "spec": {"manifest": [], "constraints": {"cluster": {}}, "hooks": hooks},
        }))
        .unwrap()
    }

    #[test]
    fn tokens_are_made_once_per_hook() {
        let config = HooksConfig::default();
        assert!(prepare_status(&config, &app(&[])).unwrap().is_none());
        let mut app = app(&["complete"]);
        let status = prepare_status(&config, &app).unwrap().unwrap();
        let token = status.complete_token.clone().unwrap();
        assert_eq!(token.len(), 43);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert!(status.shutdown_token.is_none());
        assert!(status.complete_cert.is_none(), "no CA, no certificate");
        app.status = status;
        assert!(prepare_status(&config, &app).unwrap().is_none(), "kept");
        app.spec.hooks.push("shutdown".into());
        let status = prepare_status(&config, &app).unwrap().unwrap();
        assert_eq!(status.complete_token.as_deref(), Some(token.as_str()));
        assert_ne!(status.shutdown_token.as_deref(), Some(token.as_str()));
    }

    #[test]
    fn urls_replace_the_endpoints_path() {
        let mut config = HooksConfig::default();
        let app = app(&["complete"]);
        assert_eq!(
            config.url(Hook::Complete, &app),
            "http://localhost:8080/kubernetes/namespaces/testing/applications/job/complete"
        );
        config.shutdown.external_endpoint = Some("https://krake.example:8443/api/".into());
        assert_eq!(
            config.url(Hook::Shutdown, &app),
            "https://krake.example:8443/kubernetes/namespaces/testing/applications/job/shutdown"
        );
    }
}
