//! Reading what a run cost: a process's CPU time and peak RSS from /proc,
//! and how long the fake took to see a row's calls through.

use std::process::Command;
use std::time::{Duration, Instant};

use zoom_fake::{Counters, FakeHandle};

/// CPU time (user + system) and peak resident set of one process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    pub cpu: Duration,
    pub peak_rss_kib: u64,
}

impl ProcStats {
    /// Of `pid` now (`self` for the calling process); zero when unreadable.
    pub fn of(pid: &str) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name, which may hold spaces: utime and
        // stime are the 14th and 15th fields of the line.
        let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let cpu_ticks = ticks(11) + ticks(12);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let peak_rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Self {
            cpu: Duration::from_secs_f64(cpu_ticks as f64 / clock_ticks_per_second()),
            peak_rss_kib,
        }
    }

    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }
}

/// `getconf CLK_TCK`: the unit of /proc's CPU times (100 on Linux).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// When a row's calls started and when the last one it waited for came.
pub struct Span {
    pub first: Instant,
    pub last: Instant,
    pub counters: Counters,
}

impl Span {
    pub fn seconds(&self) -> f64 {
        self.last.duration_since(self.first).as_secs_f64().max(1e-3)
    }
}

/// Polls the fake until `done(counters)`; `first` is when the first call
/// was seen. Panics after `timeout` (a row that hangs is a broken run).
pub async fn watch(
    fake: &FakeHandle,
    timeout: Duration,
    started: impl Fn(&Counters) -> bool,
    done: impl Fn(&Counters) -> bool,
) -> Span {
    let deadline = Instant::now() + timeout;
    let mut first = None;
    loop {
        let counters = fake.counters();
        let now = Instant::now();
        if first.is_none() && started(&counters) {
            first = Some(now);
        }
        if done(&counters) {
            return Span {
                first: first.unwrap_or(now),
                last: now,
                counters,
            };
        }
        assert!(
            now < deadline,
            "the row did not finish within {timeout:?}: {counters:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
