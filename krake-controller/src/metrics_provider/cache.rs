//! The answer cache of [`MetricsProviders`](super::MetricsProviders):
//! single flight plus a short TTL.
//!
//! - A key is a provider's name, a hash of its spec and a metric
//!   ([`CacheKey`]); the value is the answer, a value or a failure, with
//!   the time it arrived.
//! - An answer is reused until it is `ttl` old; then the next query asks
//!   the backend again.
//! - Concurrent queries of one key while no fresh answer is there share
//!   one backend request: the first one fetches, the others wait for its
//!   answer (a [`tokio::sync::OnceCell`] per key). If the fetching query is
//!   cancelled, one of the waiting ones fetches instead.
//! - Expired answers are evicted at most once per `ttl`, so the cache
//!   holds the keys asked for within about the last two TTLs.
//! - A `ttl` of zero turns the cache off: every query fetches.
//!
//! The lock is held only to look up or insert a key, never across a fetch.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use krake_data::kinds::core::MetricsProviderSpec;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::ProviderError;

/// What an answer is cached under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The provider's name.
    pub provider: String,
    /// A hash of the provider's spec ([`spec_hash`]).
    pub spec: u64,
    /// The metric's name at the backend.
    pub metric: String,
}

impl CacheKey {
    /// The key of `metric` at the provider `provider` with `spec`.
    pub fn new(provider: &str, spec: &MetricsProviderSpec, metric: &str) -> Self {
        CacheKey {
            provider: provider.to_owned(),
            spec: spec_hash(spec),
            metric: metric.to_owned(),
        }
    }
}

/// A hash of everything in `spec` (URL, token, table, ...), so a changed
/// provider does not get the answers of its old version.
pub fn spec_hash(spec: &MetricsProviderSpec) -> u64 {
    let mut hasher = DefaultHasher::new();
    // Debug shows every field (and the variant), deterministically.
    format!("{spec:?}").hash(&mut hasher);
    hasher.finish()
}

/// One answer with the time it arrived.
#[derive(Debug, Clone)]
struct Answer {
    at: Instant,
    result: Result<f64, ProviderError>,
}

/// The entries and when expired ones were last evicted.
#[derive(Debug)]
struct Entries {
    map: HashMap<CacheKey, Arc<OnceCell<Answer>>>,
    last_eviction: Instant,
}

/// Answers by key, with single flight and a TTL. Cheap to share in an
/// [`Arc`].
#[derive(Debug)]
pub struct AnswerCache {
    ttl: Duration,
    entries: Mutex<Entries>,
}

impl AnswerCache {
    /// A cache keeping answers for `ttl` (zero: no caching).
    pub fn new(ttl: Duration) -> Self {
        AnswerCache {
            ttl,
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                last_eviction: Instant::now(),
            }),
        }
    }

    /// How long answers are kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How many keys are held (answered or being fetched), expired ones
    /// not evicted yet included.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True if no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The fresh answer for `key`, or the answer of a fetch already running
    /// for it, or else the answer of `fetch` (which is then kept).
    pub async fn get_or_fetch<F>(&self, key: CacheKey, fetch: F) -> Result<f64, ProviderError>
    where
        F: Future<Output = Result<f64, ProviderError>>,
    {
        if self.ttl.is_zero() {
            return fetch.await;
        }
        let cell = self.cell(key);
        let answer = cell
            .get_or_init(|| async {
                let result = fetch.await;
                Answer {
                    at: Instant::now(),
                    result,
                }
            })
            .await;
        answer.result.clone()
    }

    /// The cell for `key`: the one there if it is being fetched or fresh,
    /// else a new one.
    fn cell(&self, key: CacheKey) -> Arc<OnceCell<Answer>> {
        let now = Instant::now();
        let mut entries = self.lock();
        if now.duration_since(entries.last_eviction) >= self.ttl {
            let ttl = self.ttl;
            entries
                .map
                .retain(|_, cell| cell.get().is_none_or(|answer| !expired(answer, now, ttl)));
            entries.last_eviction = now;
        }
        let fresh = entries.map.get(&key).filter(|cell| {
            cell.get()
                .is_none_or(|answer| !expired(answer, now, self.ttl))
        });
        if let Some(cell) = fresh {
            return Arc::clone(cell);
        }
        let cell = Arc::new(OnceCell::new());
        entries.map.insert(key, Arc::clone(&cell));
        cell
    }

    /// The entries (a panic elsewhere cannot leave them inconsistent: each
    /// change is one map operation).
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// True if `answer` is `ttl` old at `now`.
fn expired(answer: &Answer, now: Instant, ttl: Duration) -> bool {
    now.duration_since(answer.at) >= ttl
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use krake_data::kinds::core::PrometheusSpec;

    use super::*;

    fn key(metric: &str) -> CacheKey {
        let spec = MetricsProviderSpec::Prometheus(PrometheusSpec {
            url: "http://p".to_owned(),
        });
        CacheKey::new("p", &spec, metric)
    }

    async fn counted(calls: &AtomicUsize, value: f64) -> Result<f64, ProviderError> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(value)
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_reused_for_the_ttl_then_fetched_again() {
        let cache = AnswerCache::new(Duration::from_secs(5));
        let calls = AtomicUsize::new(0);
        assert_eq!(
            cache.get_or_fetch(key("m"), counted(&calls, 1.0)).await,
            Ok(1.0)
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            cache.get_or_fetch(key("m"), counted(&calls, 2.0)).await,
            Ok(1.0)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            cache.get_or_fetch(key("m"), counted(&calls, 3.0)).await,
            Ok(3.0)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_evicted() {
        let cache = AnswerCache::new(Duration::from_secs(1));
        let calls = AtomicUsize::new(0);
        for index in 0..100 {
            let metric = format!("m{index}");
            cache
                .get_or_fetch(key(&metric), counted(&calls, 1.0))
                .await
                .unwrap();
        }
        assert_eq!(cache.len(), 100);
        tokio::time::advance(Duration::from_secs(2)).await;
        cache
            .get_or_fetch(key("other"), counted(&calls, 1.0))
            .await
            .unwrap();
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_fetch_is_taken_over_by_a_waiting_query() {
        let cache = Arc::new(AnswerCache::new(Duration::from_secs(5)));
        let slow = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.get_or_fetch(key("m"), std::future::pending()).await })
        };
        tokio::task::yield_now().await;
        let calls = AtomicUsize::new(0);
        let waiting = cache.get_or_fetch(key("m"), counted(&calls, 7.0));
        slow.abort();
        assert_eq!(waiting.await, Ok(7.0));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn spec_hashes_differ_with_the_spec() {
        let a = MetricsProviderSpec::Prometheus(PrometheusSpec {
            url: "http://a".to_owned(),
        });
        let b = MetricsProviderSpec::Prometheus(PrometheusSpec {
            url: "http://b".to_owned(),
        });
        assert_eq!(spec_hash(&a), spec_hash(&a.clone()));
        assert_ne!(spec_hash(&a), spec_hash(&b));
    }
}
