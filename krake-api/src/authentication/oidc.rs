//! Beyond Krake: OpenID Connect bearer tokens, verified locally.

use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{TokenVerifier, provider_status_error, provider_unreachable};
use crate::config::OidcConfig;
use crate::problem::{ApiError, ProblemTitle};

/// Asymmetric algorithms only: a token signed with a shared secret (HS*)
/// is never accepted, whatever its header says.
const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// An unknown key id fetches the keys again at most this often.
const REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// Verifies JWTs against the issuer's JSON Web Key Set: the signature
/// (asymmetric algorithms only), `exp`, `nbf`, `iss` and `aud`; the user is
/// the configured claim. The keys are fetched on first use and cached for
/// `jwks_ttl`; a token with an unknown key id fetches them again (rate
/// limited), so key rotation works without a restart. While the issuer is
/// unreachable, the keys already fetched keep working.
#[derive(Debug)]
pub struct Oidc {
    client: reqwest::Client,
    config: OidcConfig,
    keys: Mutex<Keys>,
}

#[derive(Debug, Default)]
struct Keys {
    set: Option<JwkSet>,
    fetched: Option<Instant>,
}

fn refused(detail: impl Into<String>) -> ApiError {
    ApiError::unauthorized(ProblemTitle::InvalidOidcToken, detail)
}

impl Oidc {
    /// A verifier for `config`'s issuer.
    pub fn new(client: reqwest::Client, config: OidcConfig) -> Self {
        Oidc {
            client,
            config,
            keys: Mutex::new(Keys::default()),
        }
    }

    async fn get_json(&self, url: &str) -> Result<Value, ApiError> {
        let response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|err| provider_unreachable("the OIDC issuer", &err))?;
        let status = response.status();
        if !status.is_success() {
            return Err(provider_status_error("the OIDC issuer", status, || {
                ApiError::Unavailable(format!("the OIDC issuer answered {status} for {url}"))
            }));
        }
        response.json().await.map_err(|err| {
            ApiError::Unavailable(format!("the OIDC issuer's {url} is not JSON: {err}"))
        })
    }

    async fn fetch(&self) -> Result<JwkSet, ApiError> {
        let url = match &self.config.jwks_url {
            Some(url) => url.clone(),
            None => {
                let discovery = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                self.get_json(&discovery)
                    .await?
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        ApiError::Unavailable(format!("{discovery} names no jwks_uri"))
                    })?
            }
        };
        serde_json::from_value(self.get_json(&url).await?)
            .map_err(|err| ApiError::Unavailable(format!("{url} is not a JWK set: {err}")))
    }

    /// The key for `kid`, fetching the set when it is missing, stale, or
    /// does not know `kid`.
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, ApiError> {
        let mut keys = self.keys.lock().await;
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let age = keys.fetched.map(|at| at.elapsed());
        let stale = age.is_none_or(|age| age >= self.config.jwks_ttl);
        let found = keys.set.as_ref().and_then(find);
        let may_refetch = age.is_none_or(|age| age >= REFETCH_INTERVAL);
        if stale || (found.is_none() && may_refetch) {
            match self.fetch().await {
                Ok(set) => {
                    keys.set = Some(set);
                    keys.fetched = Some(Instant::now());
                }
                Err(err) if keys.set.is_none() => return Err(err),
                Err(err) => {
                    tracing::warn!(error = %err, "OIDC: cannot refresh the keys; using the old ones");
                }
            }
        }
        keys.set
            .as_ref()
            .and_then(find)
            .ok_or_else(|| refused("the token's signing key is unknown"))
    }
}

#[async_trait]
impl TokenVerifier for Oidc {
    async fn verify(&self, token: &str) -> Result<String, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| refused(format!("malformed token: {err}")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(refused(format!(
                "tokens signed with {:?} are not accepted",
                header.alg
            )));
        }
        let jwk = self.key(header.kid.as_deref()).await?;
        if let Some(alg) = jwk.common.key_algorithm {
            if alg != KeyAlgorithm::from(header.alg) {
                return Err(refused("the token's algorithm does not match its key"));
            }
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|err| refused(format!("unusable signing key: {err}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|err| refused(format!("invalid token: {err}")))?;
        data.claims
            .get(&self.config.username_claim)
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                refused(format!(
                    "the token has no {:?} claim",
                    self.config.username_claim
                ))
            })
    }
}
