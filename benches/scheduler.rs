//! Benchmark entry point: see `krake_benches::scheduler_suite`.

fn main() {
    let mode = krake_benches::Mode::from_args();
    if mode != krake_benches::Mode::List {
        krake_benches::scheduler_suite::run(mode);
    }
}
