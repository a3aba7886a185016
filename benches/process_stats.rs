//! CPU time and memory of a process, read from Linux's `/proc`, for the
//! benchmarks that report what a component costs next to how fast it is.

use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (`USER_HZ`,
/// 100 on every Linux architecture krake-rs runs on).
const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time used so far.
    pub cpu: Duration,
    /// Resident memory now, in bytes.
    pub rss: u64,
}

/// Reads `pid` (`None`: this process); `None` where `/proc` is missing or
/// the process is gone.
pub fn sample(pid: Option<u32>) -> Option<ProcessSample> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields after its closing
    // parenthesis start at field 3 (state); utime and stime are 14 and 15.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(ProcessSample {
        cpu: Duration::from_secs_f64((utime + stime) / TICKS_PER_SECOND),
        rss: rss_kib * 1024,
    })
}

/// Mebibytes, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The `q` quantile (0..=1) of `values` (sorted here), nearest rank.
pub fn quantile(values: &mut [Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let before = sample(None).expect("/proc/self");
        assert!(before.rss > 1024 * 1024, "{before:?}");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = sample(None).expect("/proc/self");
        assert!(after.cpu > before.cpu, "{before:?} {after:?}");
        assert_eq!(sample(Some(u32::MAX)), None);
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut values: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut values, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&mut values, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&mut values, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&mut [], 0.5), Duration::ZERO);
    }
}
