//! Readings of another process from /proc: CPU time and resident memory. Used for the
//! server under test; the generator reads its own threads in `fleet`.
//!
//! CPU time is each thread's run time as the scheduler accounts it
//! (`/proc/<pid>/task/<tid>/schedstat`, in nanoseconds), where the kernel has it: utime +
//! stime (`stat`) are sampled at each 10 ms clock tick, which a media server's threads,
//! running a few microseconds per wake-up, fall between or straddle at random. Without
//! schedstat, ticks.

use std::time::Duration;

use anyhow::Context;

/// CPU time and resident memory of one process at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    pub cpu: Duration,
    pub rss_bytes: u64,
}

/// Reads the threads' run time (else `/proc/<pid>/stat`) and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let cpu = match thread_cpu(pid) {
        Ok(threads) if !threads.is_empty() => threads.iter().map(|(_, t)| *t).sum(),
        _ => {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .with_context(|| format!("reading /proc/{pid}/stat"))?;
            parse_stat_cpu(&stat, clock_ticks())
                .with_context(|| format!("parsing /proc/{pid}/stat"))?
        }
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let rss_bytes = parse_status_rss(&status).unwrap_or(0);
    Ok(ProcSample { cpu, rss_bytes })
}

/// CPU time of each thread of `pid`, by thread name (`/proc/<pid>/task/*`; threads of one
/// name are added up): its schedstat run time, else its utime + stime. Threads that end
/// between the listing and the read are skipped (and so is the time of threads that ended:
/// the server's threads live as long as it does).
pub fn thread_cpu(pid: u32) -> anyhow::Result<Vec<(String, Duration)>> {
    let ticks = clock_ticks();
    let mut out: Vec<(String, Duration)> = Vec::new();
    let dir = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let path = entry?.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let ran = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| parse_schedstat(&s));
        let Some(cpu) = ran.or_else(|| {
            let stat = std::fs::read_to_string(path.join("stat")).ok()?;
            parse_stat_cpu(&stat, ticks)
        }) else {
            continue;
        };
        let name = comm.trim().to_string();
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += cpu,
            None => out.push((name, cpu)),
        }
    }
    out.sort();
    Ok(out)
}

/// Kernel clock ticks per second (USER_HZ); 100 on every Linux we run on. Asked of
/// `getconf` once: samples are taken at the edges of measured windows, where spawning a
/// process each time would weigh on what is measured.
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// utime + stime (fields 14 and 15) of a stat line; the command name may hold spaces and
/// parentheses, so fields are counted after its last ')'.
pub fn parse_stat_cpu(stat: &str, ticks_per_sec: u64) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' the first field is the state (field 3), so utime (14) is index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_nanos(
        ticks * 1_000_000_000 / ticks_per_sec.max(1),
    ))
}

/// The run time (the first field, nanoseconds) of a schedstat line.
pub fn parse_schedstat(s: &str) -> Option<Duration> {
    s.split_whitespace()
        .next()?
        .parse()
        .ok()
        .map(Duration::from_nanos)
}

/// VmRSS in bytes from a status file.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_tricky_name() {
        let stat =
            "1234 (sfu (w) 1) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat_cpu(stat, 100), Some(Duration::from_secs(3)));
        assert_eq!(parse_stat_cpu("garbage", 100), None);
        assert_eq!(parse_stat_cpu("1 (x) S 1", 100), None);
    }

    #[test]
    fn schedstat() {
        assert_eq!(
            parse_schedstat("623653794 139550437 1420\n"),
            Some(Duration::from_nanos(623_653_794))
        );
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn rss() {
        let status = "Name:\tsfumato\nVmPeak:\t  9000 kB\nVmRSS:\t  2048 kB\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name: x\n"), None);
    }

    #[test]
    fn own_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0);
        let threads = thread_cpu(std::process::id()).unwrap();
        assert!(!threads.is_empty());
    }
}
