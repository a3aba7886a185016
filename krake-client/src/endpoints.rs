//! The replicas of one API a [`Client`](crate::Client) knows, and which one
//! it talks to: the current endpoint until a connection to it fails, then
//! the next one; a failed endpoint rests for a backoff delay before it is
//! tried again.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use reqwest::Url;

use crate::backoff::{Backoff, BackoffState};

/// The endpoints of a client, shared by its clones.
#[derive(Debug)]
pub(crate) struct Endpoints {
    urls: Vec<Url>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The endpoint requests go to.
    current: usize,
    /// Per endpoint: its backoff, and until when it rests after a failure.
    health: Vec<Health>,
}

#[derive(Debug)]
struct Health {
    backoff: BackoffState,
    resting_until: Option<Instant>,
}

impl Endpoints {
    /// `urls` in order of preference; the first is current. Never empty
    /// (the builder checks).
    pub(crate) fn new(urls: Vec<Url>, backoff: Backoff) -> Self {
        let health = urls
            .iter()
            .map(|_| Health {
                backoff: backoff.start(),
                resting_until: None,
            })
            .collect();
        Endpoints {
            urls,
            state: Mutex::new(State { current: 0, health }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every endpoint, in order of preference.
    pub(crate) fn urls(&self) -> &[Url] {
        &self.urls
    }

    /// How many endpoints there are.
    pub(crate) fn len(&self) -> usize {
        self.urls.len()
    }

    /// The URL of endpoint `index`.
    pub(crate) fn url(&self, index: usize) -> &Url {
        &self.urls[index.min(self.urls.len().saturating_sub(1))]
    }

    /// The index of the endpoint requests go to now.
    pub(crate) fn current(&self) -> usize {
        self.state().current
    }

    /// The endpoint for the next attempt of a request that has already
    /// tried `tried`: the current one if it was not tried and is not
    /// resting, else the next such endpoint in order (which becomes
    /// current); if all untried ones rest, the one whose rest ends first.
    /// `None` once every endpoint was tried.
    pub(crate) fn pick(&self, tried: &[usize]) -> Option<usize> {
        let now = Instant::now();
        let mut state = self.state();
        let count = self.urls.len();
        let untried = (0..count)
            .map(|offset| (state.current + offset) % count)
            .filter(|index| !tried.contains(index));
        let mut earliest: Option<(usize, Instant)> = None;
        for index in untried {
            match state.health[index].resting_until {
                Some(until) if until > now => {
                    if earliest.is_none_or(|(_, first)| until < first) {
                        earliest = Some((index, until));
                    }
                }
                _ => {
                    state.current = index;
                    return Some(index);
                }
            }
        }
        let (index, _) = earliest?;
        state.current = index;
        Some(index)
    }

    /// A connection to endpoint `index` failed: it rests, and the next
    /// endpoint becomes current if it was.
    pub(crate) fn failed(&self, index: usize) {
        let mut state = self.state();
        let Some(health) = state.health.get_mut(index) else {
            return;
        };
        let delay = health.backoff.next_delay();
        health.resting_until = Some(Instant::now() + delay);
        if state.current == index {
            state.current = (index + 1) % self.urls.len();
        }
    }

    /// Endpoint `index` answered: it is healthy again.
    pub(crate) fn succeeded(&self, index: usize) {
        let mut state = self.state();
        if let Some(health) = state.health.get_mut(index) {
            if health.resting_until.is_some() {
                health.backoff.reset();
                health.resting_until = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn endpoints(count: usize) -> Endpoints {
        let urls = (0..count)
            .map(|port| Url::parse(&format!("http://127.0.0.1:{}", 1000 + port)).unwrap())
            .collect();
        Endpoints::new(
            urls,
            Backoff {
                initial: Duration::from_secs(60),
                max: Duration::from_secs(60),
                factor: 2.0,
                jitter: false,
            },
        )
    }

    #[test]
    fn sticks_to_the_current_endpoint_and_moves_on_failure() {
        let endpoints = endpoints(3);
        assert_eq!(endpoints.pick(&[]), Some(0));
        assert_eq!(endpoints.pick(&[]), Some(0));
        endpoints.failed(0);
        assert_eq!(endpoints.current(), 1);
        assert_eq!(endpoints.pick(&[0]), Some(1));
        // A resting endpoint is skipped by later requests too.
        assert_eq!(endpoints.pick(&[]), Some(1));
        endpoints.failed(1);
        assert_eq!(endpoints.pick(&[]), Some(2));
        endpoints.failed(2);
        // All rest: the one whose rest ends first, but each once per request.
        assert_eq!(endpoints.pick(&[]), Some(0));
        assert_eq!(endpoints.pick(&[0, 1]), Some(2));
        assert_eq!(endpoints.pick(&[0, 1, 2]), None);
        endpoints.succeeded(1);
        assert_eq!(endpoints.pick(&[]), Some(1));
    }

    #[test]
    fn a_single_endpoint_is_always_used() {
        let endpoints = endpoints(1);
        endpoints.failed(0);
        assert_eq!(endpoints.pick(&[]), Some(0));
        assert_eq!(endpoints.pick(&[0]), None);
    }
}
