//! Exponential backoff with jitter, for reconnecting watches.

use std::time::Duration;

/// How long to wait between reconnection attempts: `initial`, then
/// multiplied by `factor` after each failure up to `max`, each delay drawn
/// at random from its upper half (so many clients do not reconnect in step).
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
    /// The growth per failure.
    pub factor: f64,
    /// Draw each delay from `[delay / 2, delay]` instead of using it as is.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            factor: 2.0,
            jitter: true,
        }
    }
}

impl Backoff {
    /// A fresh sequence of delays.
    pub(crate) fn start(self) -> BackoffState {
        BackoffState {
            settings: self,
            next: self.initial,
        }
    }
}

/// The delays of one [`Backoff`]; reset after a success.
#[derive(Debug, Clone)]
pub(crate) struct BackoffState {
    settings: Backoff,
    next: Duration,
}

impl BackoffState {
    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let base = self.next.min(self.settings.max);
        let grown = base.as_secs_f64() * self.settings.factor.max(1.0);
        self.next = Duration::try_from_secs_f64(grown)
            .unwrap_or(self.settings.max)
            .min(self.settings.max);
        if self.settings.jitter {
            let half = base / 2;
            half + base.saturating_sub(half).mul_f64(fastrand::f64())
        } else {
            base
        }
    }

    /// Back to the first delay.
    pub(crate) fn reset(&mut self) {
        self.next = self.settings.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_in_the_upper_half_and_resets() {
        let mut state = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            factor: 2.0,
            jitter: false,
        }
        .start();
        let delays: Vec<u128> = (0..6).map(|_| state.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        state.reset();
        assert_eq!(state.next_delay().as_millis(), 100);

        let mut jittered = Backoff::default().start();
        for _ in 0..50 {
            jittered.reset();
            let delay = jittered.next_delay();
            assert!(delay >= Duration::from_millis(100) && delay <= Duration::from_millis(200));
        }
    }
}
