//! CPU time of the fleet's own threads, read from `/proc`, so every run can report how much
//! headroom the load generator had left.

use std::time::Duration;

use serde::Serialize;

/// The calling thread's kernel thread id (Linux), from the `/proc/thread-self` link.
pub(crate) fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// CPU time (user + system) a thread of this process has used so far.
pub(crate) fn thread_cpu_time(tid: u32) -> Option<Duration> {
    // schedstat: nanoseconds on CPU, exact. stat: clock ticks (USER_HZ = 100 on Linux).
    if let Ok(s) = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")) {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse().ok()) {
            return Some(Duration::from_nanos(ns));
        }
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name may contain spaces: fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3 of stat(5), so utime (14) and stime (15) are at 11 and 12.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time of each fleet thread at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FleetCpu {
    /// Per thread, in thread order.
    pub per_thread: Vec<Duration>,
}

impl FleetCpu {
    /// Sum over threads.
    pub fn total(&self) -> Duration {
        self.per_thread.iter().sum()
    }

    /// The busiest thread's share of `wall` spent on CPU since `earlier` (0.0..=1.0 for a
    /// thread that never waits): `1 − this` is the generator's headroom.
    pub fn busiest_since(&self, earlier: &FleetCpu, wall: Duration) -> f64 {
        if wall.is_zero() {
            return 0.0;
        }
        self.per_thread
            .iter()
            .zip(
                earlier
                    .per_thread
                    .iter()
                    .chain(std::iter::repeat(&Duration::ZERO)),
            )
            .map(|(now, before)| now.saturating_sub(*before).as_secs_f64() / wall.as_secs_f64())
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_threads_cpu_time() {
        let tid = current_tid().expect("linux /proc");
        let before = thread_cpu_time(tid).expect("cpu time");
        // Burn a little CPU.
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = thread_cpu_time(tid).expect("cpu time");
        assert!(after > before, "{before:?} -> {after:?}");
    }

    #[test]
    fn busiest_thread_share() {
        let a = FleetCpu {
            per_thread: vec![Duration::from_millis(100), Duration::from_millis(100)],
        };
        let b = FleetCpu {
            per_thread: vec![Duration::from_millis(300), Duration::from_millis(700)],
        };
        let busy = b.busiest_since(&a, Duration::from_secs(1));
        assert!((busy - 0.6).abs() < 1e-9);
        assert_eq!(b.total(), Duration::from_secs(1));
    }
}
