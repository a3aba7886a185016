//! Krake's `keycloak` strategy.

use async_trait::async_trait;
use serde_json::Value;

use super::{TokenVerifier, provider_status_error, provider_unreachable};
use crate::problem::{ApiError, ProblemTitle};

/// Validates access tokens at Keycloak: `POST {endpoint}/auth/realms/{realm}
/// /protocol/openid-connect/userinfo` with the form `access_token=<token>`;
/// the user is `preferred_username`.
#[derive(Debug, Clone)]
pub struct Keycloak {
    client: reqwest::Client,
    url: String,
}

impl Keycloak {
    /// A verifier for `realm` at the Keycloak server `endpoint`.
    pub fn new(client: reqwest::Client, endpoint: &str, realm: &str) -> Self {
        Keycloak {
            client,
            url: format!(
                "{}/auth/realms/{realm}/protocol/openid-connect/userinfo",
                endpoint.trim_end_matches('/')
            ),
        }
    }
}

fn refused(detail: &str) -> ApiError {
    ApiError::unauthorized(ProblemTitle::InvalidKeycloakToken, detail)
}

#[async_trait]
impl TokenVerifier for Keycloak {
    async fn verify(&self, token: &str) -> Result<String, ApiError> {
        let response = self
            .client
            .post(&self.url)
            .form(&[("access_token", token)])
            .send()
            .await
            .map_err(|err| provider_unreachable("Keycloak", &err))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(provider_status_error("Keycloak", status, || {
                refused("Keycloak refused the token")
            }));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|_| refused("Keycloak's answer is not JSON"))?;
        body.get("preferred_username")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| refused("Keycloak's answer names no user"))
    }
}
