//! CPU time and RSS of node processes, from /proc.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// user + system CPU seconds so far.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(Sample {
        cpu_seconds: ticks / 100.0,
        rss_bytes: rss_kb * 1024,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub pid: u32,
    /// Average CPU use over the window, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    pub rss_mib: f64,
}

pub fn usage(pids: &[u32], before: &[Option<Sample>], seconds: f64) -> Vec<Usage> {
    pids.iter()
        .zip(before)
        .filter_map(|(pid, before)| {
            let (before, after) = ((*before)?, sample(*pid)?);
            Some(Usage {
                pid: *pid,
                cpu_cores: (after.cpu_seconds - before.cpu_seconds) / seconds.max(0.001),
                rss_mib: after.rss_bytes as f64 / 1048576.0,
            })
        })
        .collect()
}
