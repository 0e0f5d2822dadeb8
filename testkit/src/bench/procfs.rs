//! What the benchmark reads from `/proc`: finding georep's processes by
//! their command line, their peak RSS and their CPU time.

use std::fs;
use std::path::Path;

/// Linux reports utime/stime in `USER_HZ` ticks, which is 100 everywhere.
const TICKS_PER_SEC: f64 = 100.0;

/// The command line of `pid` as separate arguments (lossy UTF-8).
pub fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Pids of live processes whose argument list satisfies `pred`.
pub fn find_pids(pred: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| cmdline(pid).is_some_and(|a| pred(&a)))
        .collect()
}

/// The georep monitor of the session whose home is `home`
/// (`geo-rep --home HOME monitor VOL SLAVE`).
pub fn monitor_pid(home: &Path) -> Option<u32> {
    let home = home.to_string_lossy().into_owned();
    find_pids(|a| {
        a.iter().any(|x| x == "monitor") && a.windows(2).any(|w| w[0] == "--home" && w[1] == home)
    })
    .into_iter()
    .next()
}

/// The `geo-rep slave --root DIR` process serving `slave_dir` (the
/// long-lived one of a running session; the newest if there are several).
pub fn slave_pid(slave_dir: &Path) -> Option<u32> {
    let dir = slave_dir.to_string_lossy().into_owned();
    find_pids(|a| {
        a.iter().any(|x| x == "slave")
            && a.iter().any(|x| x == "--root")
            && a.iter().any(|x| x.trim_matches('\'') == dir)
            && !a.iter().any(|x| x == "-c")
    })
    .into_iter()
    .max()
}

fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size (`VmHWM`) in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Resets `VmHWM` to the current RSS (`echo 5 > /proc/PID/clear_refs`), so a
/// later reading is the peak of what happened since. Needs to own the
/// process or be root; ignored when refused.
pub fn reset_peak_rss(pid: u32) {
    let _ = fs::write(format!("/proc/{pid}/clear_refs"), b"5");
}

/// User + system CPU seconds used so far by `pid` (threads included).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it are plain.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(peak_rss_kib(me).unwrap() > 0);
        assert!(cpu_secs(me).is_some());
        assert!(!cmdline(me).unwrap().is_empty());
    }
}
