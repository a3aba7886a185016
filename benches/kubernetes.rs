//! Benchmark entry point: see `krake_benches::kubernetes_suite`. Started
//! again by itself with `KRAKE_BENCH_KUBERNETES_CONTROLLERS` set, it is the
//! process that runs the controllers.

fn main() {
    if let Ok(url) = std::env::var(krake_benches::kubernetes_suite::CONTROLLERS_VARIABLE) {
        krake_benches::kubernetes_suite::run_controllers(&url);
        return;
    }
    let mode = krake_benches::Mode::from_args();
    if mode != krake_benches::Mode::List {
        krake_benches::kubernetes_suite::run(mode);
    }
}
