//! Krake's `keystone` strategy.

use async_trait::async_trait;
use serde_json::Value;

use super::{TokenVerifier, provider_status_error, provider_unreachable};
use crate::problem::{ApiError, ProblemTitle};

/// Validates tokens at Keystone: `GET {endpoint}/auth/tokens` with the token
/// in `X-Auth-Token` and `X-Subject-Token`; the user is `token.user.name`.
#[derive(Debug, Clone)]
pub struct Keystone {
    client: reqwest::Client,
    url: String,
}

impl Keystone {
    /// A verifier for the Keystone v3 API at `endpoint`
    /// (e.g. `http://localhost:5000/v3`).
    pub fn new(client: reqwest::Client, endpoint: &str) -> Self {
        Keystone {
            client,
            url: format!("{}/auth/tokens", endpoint.trim_end_matches('/')),
        }
    }
}

fn refused(detail: &str) -> ApiError {
    ApiError::unauthorized(ProblemTitle::InvalidKeystoneToken, detail)
}

#[async_trait]
impl TokenVerifier for Keystone {
    async fn verify(&self, token: &str) -> Result<String, ApiError> {
        self.verify_until(token).await.map(|(user, _)| user)
    }

    /// The user and `token.expires_at`; a token Keystone reports as already
    /// expired is refused.
    async fn verify_until(
        &self,
        token: &str,
    ) -> Result<(String, Option<std::time::SystemTime>), ApiError> {
        let response = self
            .client
            .get(&self.url)
            .header("X-Auth-Token", token)
            .header("X-Subject-Token", token)
            .send()
            .await
            .map_err(|err| provider_unreachable("Keystone", &err))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(provider_status_error("Keystone", status, || {
                refused("Keystone refused the token")
            }));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|_| refused("Keystone's answer is not JSON"))?;
        let user = body
            .pointer("/token/user/name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| refused("Keystone's answer names no user"))?;
        let expires = body
            .pointer("/token/expires_at")
            .and_then(Value::as_str)
            .and_then(|text| text.parse::<krake_data::Timestamp>().ok())
            .map(|at| std::time::SystemTime::from(*at.as_datetime()));
        if expires.is_some_and(|at| at <= std::time::SystemTime::now()) {
            return Err(refused("The Keystone token has expired"));
        }
        Ok((user, expires))
    }
}
