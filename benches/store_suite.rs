//! The embedded store under steady writes (`cargo bench -p krake-benches
//! --bench store`): the store file's size and the process's memory while a
//! writer updates 1,000 keys with 2 KB values at up to 500 writes a second
//! (about what the scheduler wrote for 1,000 unschedulable applications),
//! with the history bounded by count, bytes and age (the defaults: 100,000
//! events, 32 MiB, 10 minutes) against a baseline bounded by count only (the
//! old behaviour: the last 100,000 events, whatever their size).
//!
//! Each run takes 10 minutes (`Mode::Bench`, the duration;
//! `KRAKE_BENCH_STORE_SECONDS` sets another; a few seconds in smoke mode),
//! sampled every 10 s: writes so far, the file's size, the history's size
//! (events and bytes) and the process's RSS. Both runs share this process,
//! the bounded one first: the baseline's RSS includes what the allocator
//! kept from the first run, so its growth over its own start is reported as
//! well. Writes are durable (one fsync each), so a slow disk caps the rate
//! below 500 a second; the achieved rate is printed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use krake_store::Store;
use krake_store::embedded::{EmbeddedOptions, EmbeddedStore};

use crate::Mode;
use crate::process_stats::sample;

/// How many keys the writer updates, round robin (smoke mode: 50).
const KEYS: usize = 1_000;
/// The size of each value.
const VALUE_BYTES: usize = 2_048;
/// The target write rate.
const WRITES_PER_SECOND: u32 = 500;

/// One reading during a run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    elapsed: Duration,
    writes: u64,
    file: u64,
    history_events: u64,
    history_bytes: u64,
    rss: u64,
}

/// A run's summary.
#[derive(Debug, Clone)]
struct RunResult {
    samples: Vec<Sample>,
    rss_at_start: u64,
}

impl RunResult {
    fn last(&self) -> Option<Sample> {
        self.samples.last().copied()
    }
}

/// Runs the suite in `mode` and prints the results.
///
/// # Panics
///
/// If the store cannot be opened or a write fails (a benchmark, not a
/// library).
pub fn run(mode: Mode) {
    let (duration, every, keys) = match mode {
        Mode::Bench => {
            let seconds = std::env::var("KRAKE_BENCH_STORE_SECONDS")
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|s| *s > 0)
                .unwrap_or(600);
            (Duration::from_secs(seconds), Duration::from_secs(10), KEYS)
        }
        Mode::Smoke | Mode::List => (Duration::from_secs(3), Duration::from_secs(1), 50),
    };
    println!(
        "krake-store embedded history under {WRITES_PER_SECOND} writes/s of {VALUE_BYTES} B on {keys} keys, {}s per run ({mode:?} mode)",
        duration.as_secs()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let bounded = runtime.block_on(write_loop(
        "bounded (count, bytes, age: defaults)",
        EmbeddedOptions::default(),
        duration,
        every,
        keys,
    ));
    let baseline = runtime.block_on(write_loop(
        "baseline (count only: 100,000 events)",
        EmbeddedOptions {
            retained_bytes: u64::MAX,
            retained_age: Duration::from_secs(100 * 365 * 24 * 3600),
            ..EmbeddedOptions::default()
        },
        duration,
        every,
        keys,
    ));
    if let (Some(b), Some(c)) = (bounded.last(), baseline.last()) {
        println!(
            "store history after {:.0}s: file {:.1} MiB, RSS {:.1} MiB (+{:.1}) | baseline count only: file {:.1} MiB, RSS {:.1} MiB (+{:.1}) | file ratio {:.3}",
            b.elapsed.as_secs_f64(),
            mib(b.file),
            mib(b.rss),
            mib(b.rss.saturating_sub(bounded.rss_at_start)),
            mib(c.file),
            mib(c.rss),
            mib(c.rss.saturating_sub(baseline.rss_at_start)),
            b.file as f64 / c.file.max(1) as f64,
        );
        // In smoke mode the history never reaches its bounds: only the runs'
        // completion is checked. Measured for real, the bounded file must
        // not keep growing over the second half.
        if mode == Mode::Bench {
            let half = bounded.samples[bounded.samples.len() / 2];
            if b.file > half.file + (8 << 20) {
                println!(
                    "WARNING: the bounded file grew from {:.1} to {:.1} MiB in the second half",
                    mib(half.file),
                    mib(b.file)
                );
            }
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 20)
}

/// A `VALUE_BYTES` JSON value for write `n`.
fn value(n: u64) -> Bytes {
    let head = format!("{{\"status\":{{\"n\":{n},\"reason\":\"");
    let pad = VALUE_BYTES.saturating_sub(head.len() + 3);
    Bytes::from(format!("{head}{}\"}}}}", "x".repeat(pad)))
}

/// A fresh folder for one run, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "krake-store-bench-{}-{name}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("a scratch folder");
        Scratch(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes at up to `WRITES_PER_SECOND` for `duration` on a fresh store with
/// `options`, sampling every `every`; prints each sample.
async fn write_loop(
    name: &str,
    options: EmbeddedOptions,
    duration: Duration,
    every: Duration,
    keys: usize,
) -> RunResult {
    let scratch = Scratch::new(if options.retained_bytes == u64::MAX {
        "count"
    } else {
        "bounded"
    });
    let store = EmbeddedStore::open_with(scratch.path().join("store.redb"), options).expect("open");
    let rss_at_start = sample(None).map_or(0, |s| s.rss);
    println!("{name}:");
    let mut revisions = Vec::with_capacity(keys);
    for k in 0..keys {
        revisions.push(
            store
                .create(&format!("/bench/{k:04}"), value(k as u64))
                .await
                .expect("create"),
        );
    }
    let interval = Duration::from_secs(1) / WRITES_PER_SECOND;
    let started = Instant::now();
    let mut next_sample = every;
    let mut samples = Vec::new();
    let mut writes = 0u64;
    while started.elapsed() < duration {
        let due = started + interval * u32::try_from(writes).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let k = (writes as usize) % keys;
        revisions[k] = store
            .update(&format!("/bench/{k:04}"), value(writes), revisions[k])
            .await
            .expect("update");
        writes += 1;
        if started.elapsed() >= next_sample {
            next_sample += every;
            let s = take_sample(&store, started.elapsed(), writes).await;
            println!(
                "  {:>5.0}s: {:>7} writes ({:>4.0}/s) | file {:>7.1} MiB | history {:>6} events, {:>7.1} MiB | RSS {:>6.1} MiB",
                s.elapsed.as_secs_f64(),
                s.writes,
                s.writes as f64 / s.elapsed.as_secs_f64(),
                mib(s.file),
                s.history_events,
                mib(s.history_bytes),
                mib(s.rss)
            );
            samples.push(s);
        }
    }
    if samples.is_empty() {
        samples.push(take_sample(&store, started.elapsed(), writes).await);
    }
    // Every key holds its last value.
    let page = store
        .list("/bench/", &krake_store::ListOptions::default())
        .await
        .expect("list");
    assert_eq!(page.items.len(), keys, "{name}: every key is there");
    for (k, kv) in page.items.iter().enumerate() {
        assert_eq!(kv.mod_revision, revisions[k], "{name}: key {k}");
    }
    drop(store);
    RunResult {
        samples,
        rss_at_start,
    }
}

async fn take_sample(store: &EmbeddedStore, elapsed: Duration, writes: u64) -> Sample {
    let history = store.history_size().await.expect("history size");
    Sample {
        elapsed,
        writes,
        file: std::fs::metadata(store.path()).map_or(0, |m| m.len()),
        history_events: history.events,
        history_bytes: history.bytes,
        rss: sample(None).map_or(0, |s| s.rss),
    }
}
