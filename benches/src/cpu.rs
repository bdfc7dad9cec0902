//! CPU time a process has used, from `/proc/<pid>/stat` (Linux).
//!
//! `utime + stime` count every thread of the process, including threads that have exited, in
//! clock ticks (`getconf CLK_TCK`, 100 on Linux); the resolution is one tick (10 ms), so measure
//! over seconds, not single calls.

use std::{io, process::Command, time::Duration};

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 if that cannot be run).
pub fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// Parses the text of `/proc/<pid>/stat` into `(utime, stime)` in clock ticks.
pub fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    // Field 2 is `(comm)` and comm may hold spaces and parentheses: start after the last `)`.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_ascii_whitespace();
    // After comm: state (field 3) ... utime is field 14, stime field 15.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// A reader of one process's CPU time.
#[derive(Debug, Clone)]
pub struct CpuClock {
    path: String,
    ticks_per_second: u64,
}

impl CpuClock {
    /// A clock for process `pid`.
    pub fn for_pid(pid: u32) -> Self {
        Self {
            path: format!("/proc/{pid}/stat"),
            ticks_per_second: clock_ticks_per_second(),
        }
    }

    /// A clock for the calling process.
    pub fn for_self() -> Self {
        Self::for_pid(std::process::id())
    }

    /// The process's user + system CPU time so far.
    pub fn read(&self) -> io::Result<Duration> {
        let text = std::fs::read_to_string(&self.path)?;
        let (utime, stime) = parse_stat(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: unexpected format", self.path),
            )
        })?;
        let ticks = utime.saturating_add(stime);
        Ok(Duration::from_secs(ticks / self.ticks_per_second)
            + Duration::from_nanos(
                (ticks % self.ticks_per_second) * 1_000_000_000 / self.ticks_per_second,
            ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_comm_has_spaces_and_parens() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    517 83 0 0 20 0 9 0 12345 100000 200 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((517, 83)));
    }

    #[test]
    fn rejects_a_truncated_line() {
        assert_eq!(parse_stat("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("no parens at all"), None);
    }

    #[test]
    fn own_cpu_time_grows_with_work() {
        let clock = CpuClock::for_self();
        let before = clock.read().unwrap();
        // Spin until the clock moves (one tick of CPU); the wall-clock cap only bounds the loop.
        let cap = std::time::Instant::now() + Duration::from_secs(60);
        let mut x = 0u64;
        let mut after = before;
        while after == before && std::time::Instant::now() < cap {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            after = clock.read().unwrap();
        }
        assert!(after > before, "{before:?} -> {after:?}");
    }
}
