//! Benchmarks of krake-rs (the `krake-benches` helper package, not published).
//!
//! The benchmarks are `[[bench]]` targets with `harness = false` in this
//! folder. Each measures an operation and a baseline in the same process and
//! reports both throughputs and their ratio:
//!
//! ```text
//! cargo bench -p krake-benches               # all of them
//! cargo bench -p krake-benches --bench model # one
//! ```
//!
//! Under `cargo test` or `cargo nextest` the same binaries run every
//! measurement for a few iterations only, so the benchmarks stay compiled and
//! working without slowing the test suite down. This library holds the small
//! timing harness they share.

pub mod api_suite;
pub mod controller_suite;
pub mod infrastructure_suite;
pub mod kubernetes_suite;
pub mod model_suite;
pub mod process_stats;
pub mod scheduler_suite;
pub mod soak_suite;
pub mod store_suite;

use std::hint::black_box;
use std::time::{Duration, Instant};

/// How a benchmark binary was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `cargo bench`: measure for real.
    Bench,
    /// `cargo test`: run every measurement briefly, as a smoke test.
    Smoke,
    /// `cargo nextest` asking for the list of tests: there are none.
    List,
}

impl Mode {
    /// The mode from the command line (`--bench` is passed by `cargo bench`,
    /// `--list` by test runners enumerating tests).
    pub fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        if args.iter().any(|a| a == "--list") {
            Mode::List
        } else if args.iter().any(|a| a == "--bench") {
            Mode::Bench
        } else {
            Mode::Smoke
        }
    }

    /// How long one measurement runs in this mode.
    pub fn budget(self) -> Duration {
        match self {
            Mode::Bench => Duration::from_secs(2),
            Mode::Smoke | Mode::List => Duration::from_millis(20),
        }
    }
}

/// The result of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Operations completed.
    pub operations: u64,
    /// Time they took.
    pub elapsed: Duration,
}

impl Throughput {
    /// Operations per second.
    pub fn per_second(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Mean time of one operation, in microseconds.
    pub fn micros_per_op(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.operations.max(1) as f64
    }
}

/// Runs `operation` repeatedly for the mode's time budget (after a short
/// warm-up) and returns how many runs completed.
pub fn measure<T>(mode: Mode, mut operation: impl FnMut() -> T) -> Throughput {
    for _ in 0..10 {
        black_box(operation());
    }
    let budget = mode.budget();
    let start = Instant::now();
    let mut operations = 0u64;
    // Check the clock every few runs so that timing stays cheap.
    while start.elapsed() < budget {
        for _ in 0..16 {
            black_box(operation());
        }
        operations += 16;
    }
    Throughput {
        operations,
        elapsed: start.elapsed(),
    }
}

/// Prints one comparison: the operation, its baseline, both throughputs and
/// the ratio (operation / baseline).
pub fn report(name: &str, measured: Throughput, baseline_name: &str, baseline: Throughput) {
    println!(
        "{name}: {:.0} ops/s ({:.2} us/op) | baseline {baseline_name}: {:.0} ops/s ({:.2} us/op) | ratio {:.3}",
        measured.per_second(),
        measured.micros_per_op(),
        baseline.per_second(),
        baseline.micros_per_op(),
        measured.per_second() / baseline.per_second(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every suite runs (briefly) under the test runner, so a broken benchmark
    /// fails the tests rather than the next `cargo bench`.
    #[test]
    fn model_suite_runs() {
        model_suite::run(Mode::Smoke);
    }

    /// The API suite in smoke mode: a real etcd, embedded-store servers,
    /// a few clients and watchers; every request must succeed and every
    /// watcher must see every event.
    #[test]
    fn api_suite_runs() {
        api_suite::run(Mode::Smoke);
    }

    /// The controller suite in smoke mode: small rounds through the work
    /// queue and the runner, every count checked.
    #[test]
    fn controller_suite_runs() {
        controller_suite::run(Mode::Smoke);
    }

    /// The Kubernetes suite in smoke mode: 20 applications on 2 fake
    /// clusters deployed, healed and deleted, every outcome checked.
    #[test]
    fn kubernetes_suite_runs() {
        kubernetes_suite::run(Mode::Smoke);
    }

    /// The infrastructure suite in smoke mode: 10 clusters created through
    /// the fake IM, all ONLINE, one create and one outputs each.
    #[test]
    fn infrastructure_suite_runs() {
        infrastructure_suite::run(Mode::Smoke);
    }

    /// The scheduler suite in smoke mode: every decision checked against
    /// the constraints, and the scheduler end to end on a small namespace.
    #[test]
    fn scheduler_suite_runs() {
        scheduler_suite::run(Mode::Smoke);
    }

    /// The store suite in smoke mode: a few seconds of writes on the
    /// embedded store with a bounded and a count-only history, every key
    /// checked at the end.
    #[test]
    fn store_suite_runs() {
        store_suite::run(Mode::Smoke);
    }

    #[test]
    fn throughput_arithmetic() {
        let t = Throughput {
            operations: 1000,
            elapsed: Duration::from_millis(500),
        };
        assert!((t.per_second() - 2000.0).abs() < 1e-9);
        assert!((t.micros_per_op() - 500.0).abs() < 1e-9);
    }
}
