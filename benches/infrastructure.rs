//! Benchmark entry point: see `krake_benches::infrastructure_suite`.

fn main() {
    let mode = krake_benches::Mode::from_args();
    if mode != krake_benches::Mode::List {
        krake_benches::infrastructure_suite::run(mode);
    }
}
