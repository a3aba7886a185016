//! Remembering tokens an identity provider accepted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use async_trait::async_trait;

use super::TokenVerifier;
use crate::problem::ApiError;

/// At most this many tokens are remembered.
const CAPACITY: usize = 10_000;

/// Wraps a verifier and trusts each token it accepted for `ttl` without
/// asking again, never past the token's own expiry when the verifier
/// reports one ([`TokenVerifier::verify_until`]). Refusals are not remembered (a token may become valid, and
/// a provider outage must not stick).
#[derive(Debug)]
pub struct TokenCache {
    inner: Arc<dyn TokenVerifier>,
    ttl: Duration,
    accepted: Mutex<HashMap<String, (String, Instant)>>,
}

impl TokenCache {
    /// A cache of `ttl` over `inner`.
    pub fn new(inner: Arc<dyn TokenVerifier>, ttl: Duration) -> Self {
        TokenCache {
            inner,
            ttl,
            accepted: Mutex::new(HashMap::new()),
        }
    }

    fn lookup(&self, token: &str) -> Option<String> {
        let accepted = self.accepted.lock().ok()?;
        let (user, until) = accepted.get(token)?;
        (Instant::now() < *until).then(|| user.clone())
    }

    fn remember(&self, token: &str, user: &str, expires: Option<SystemTime>) {
        let now = Instant::now();
        let mut until = now + self.ttl;
        if let Some(expires) = expires {
            // A token that expires sooner is trusted only until then.
            let left = expires
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            until = until.min(now + left);
        }
        if until <= now {
            return;
        }
        let Ok(mut accepted) = self.accepted.lock() else {
            return;
        };
        if accepted.len() >= CAPACITY {
            accepted.retain(|_, (_, until)| *until > now);
            if accepted.len() >= CAPACITY {
                accepted.clear();
            }
        }
        accepted.insert(token.to_owned(), (user.to_owned(), until));
    }
}

#[async_trait]
impl TokenVerifier for TokenCache {
    async fn verify(&self, token: &str) -> Result<String, ApiError> {
        if let Some(user) = self.lookup(token) {
            return Ok(user);
        }
        let (user, expires) = self.inner.verify_until(token).await?;
        self.remember(token, &user, expires);
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::StatusCode;

    use super::*;

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl TokenVerifier for Counting {
        async fn verify(&self, token: &str) -> Result<String, ApiError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            match token {
                "good" => Ok("alice".into()),
                _ => Err(ApiError::http(StatusCode::UNAUTHORIZED)),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn accepted_tokens_are_remembered_for_the_ttl() {
        let inner = Arc::new(Counting::default());
        let cache = TokenCache::new(inner.clone(), Duration::from_secs(30));
        assert_eq!(cache.verify("good").await.unwrap(), "alice");
        assert_eq!(cache.verify("good").await.unwrap(), "alice");
        assert_eq!(inner.0.load(Ordering::SeqCst), 1);
        assert!(cache.verify("bad").await.is_err());
        assert!(cache.verify("bad").await.is_err());
        assert_eq!(inner.0.load(Ordering::SeqCst), 3, "refusals are not cached");
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(cache.verify("good").await.unwrap(), "alice");
        assert_eq!(
            inner.0.load(Ordering::SeqCst),
            4,
            "expired entries ask again"
        );
    }
}
