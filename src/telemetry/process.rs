//! The process metrics every Prometheus exporter has, read from `/proc/self` at scrape time.

use nix::unistd::{sysconf, SysconfVar};

#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: u64,
    pub cpu_seconds: f64,
    pub open_fds: u64,
    pub start_time_seconds: f64,
}

/// `None` off Linux or when `/proc` is not mounted: the process metrics then keep their last
/// values (zero) rather than failing the scrape.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
    let ticks = sysconf(SysconfVar::CLK_TCK).ok()??.max(1) as f64;
    let page = sysconf(SysconfVar::PAGE_SIZE).ok()??.max(1) as u64;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    // The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime, start) = (field(14)?, field(15)?, field(22)?);
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(ProcessStats {
        resident_bytes: resident_pages * page,
        cpu_seconds: (utime + stime) as f64 / ticks,
        open_fds,
        start_time_seconds: boot_time as f64 + start as f64 / ticks,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_memory_fds_and_started_after_the_machine() {
        let p = super::read().expect("/proc is mounted where the tests run");
        assert!(p.resident_bytes > 1024 * 1024, "{p:?}");
        assert!(p.open_fds >= 3, "{p:?}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_time_seconds > 1.6e9 && p.start_time_seconds <= now + 1.0,
            "{p:?}"
        );
        assert!(p.cpu_seconds >= 0.0, "{p:?}");
    }
}
