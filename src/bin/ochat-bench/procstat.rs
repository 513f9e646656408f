//! CPU time and RSS of processes, from /proc. A process's CPU includes its
//! descendants', live or exited: PostgreSQL's work is done by the
//! postmaster's children, one per connection.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Sample {
    /// user + system CPU seconds so far.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// `(pid, parent, CPU ticks)` of every process, from `/proc/*/stat`.
fn processes() -> Vec<(u32, u32, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name (which may hold spaces) start after ')'.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let parent = fields.get(1)?.parse().ok()?;
            // utime, stime, and the same of children it has reaped (a
            // PostgreSQL backend that exited is counted in the postmaster).
            let mut ticks = 0.0;
            for field in 11..=14 {
                ticks += fields.get(field)?.parse::<f64>().ok()?;
            }
            Some((pid, parent, ticks))
        })
        .collect()
}

pub fn sample(pid: u32) -> Option<Sample> {
    let all = processes();
    all.iter().find(|p| p.0 == pid)?;
    let mut tree = vec![pid];
    let mut ticks = 0.0;
    while let Some(at) = tree.pop() {
        for &(child, parent, t) in &all {
            if child == at {
                ticks += t;
            }
            if parent == at {
                tree.push(child);
            }
        }
    }
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
