//! Running a session as a service (issue 5): SIGHUP reloads the settings,
//! the per-session log under `GEOREP_HOME/logs/` (human and JSON, failure
//! lines naming brick, path and slave), Hybrid Crawl progress with an
//! estimate, and the Prometheus endpoint.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use georep_testkit::{find_processes, signal, wait_for};
use rustix::process::Signal;
use serde_json::Value;

use crate::common::Scenario;

const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// The session's current log file, `logs/<vol>--<slavehost>--<id>.log`.
fn log_file(s: &Scenario) -> PathBuf {
    let logs = s.home.join("logs");
    let found: Vec<PathBuf> = fs::read_dir(&logs)
        .unwrap_or_else(|e| panic!("{}: {e}", logs.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert_eq!(found.len(), 1, "one log per session: {found:?}");
    let name = found[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("{}--127.0.0.1--", s.vol)),
        "log named after volume and slave host: {name}"
    );
    found[0].clone()
}

fn wait_log(s: &Scenario, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let r = wait_for(WAIT, POLL, || {
        last = fs::read_to_string(log_file(s)).unwrap_or_default();
        pred(&last).then_some(())
    });
    if r.is_err() {
        panic!("the log never showed {what}:\n{last}");
    }
    last
}

/// The pid of the scenario's monitor, found by its command line.
fn monitor_pid(s: &Scenario) -> i32 {
    let home = s.home.to_string_lossy().into_owned();
    let pids = find_processes(|args| {
        args.iter().any(|a| a == "monitor") && args.iter().any(|a| a == &home)
    });
    assert_eq!(pids.len(), 1, "one monitor for the session: {pids:?}");
    pids[0]
}

/// A slave directory made immutable (`chattr +i`): nothing can be created
/// in it, even by root, so a file sent there fails for good. Undone on drop.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(dir: &std::path::Path) -> Immutable {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chattr +i {} (the tests run as root)", dir.display());
        Immutable(dir.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn sighup_reloads_settings_and_says_what_needs_a_restart() {
    let s = Scenario::new();
    s.create_and_start(false);
    let (vol, slave) = (s.vol.clone(), s.slave_url());
    wait_log(&s, "the monitor start", |l| l.contains("monitor starting"));
    let before = fs::read_to_string(log_file(&s)).unwrap();
    assert!(
        !before.contains("DEBUG"),
        "info by default, no debug lines:\n{before}"
    );

    let set = s
        .geo_rep(["config", &vol, &slave, "log-level", "debug"])
        .ok()
        .stdout();
    assert!(set.contains("reload"), "{set}");
    s.geo_rep(["config", &vol, &slave, "timeout", "30"]).ok();
    s.geo_rep(["config", &vol, &slave, "ignore-deletes", "true"])
        .ok();
    let pid = monitor_pid(&s);
    assert!(signal(pid, Signal::HUP));

    let log = wait_log(&s, "the reload", |l| {
        l.contains("config reload: settings in effect")
    });
    for needle in [
        r#"config reload: log-level changed from "info" to "debug": applied"#,
        r#"config reload: timeout changed from "120" to "30": needs a restart"#,
        r#"config reload: ignore-deletes changed from "false" to "true": applied"#,
    ] {
        assert!(log.contains(needle), "no {needle:?} in\n{log}");
    }
    // The debug line above proves the new level is in force; the monitor
    // lives on and keeps replicating.
    assert_eq!(monitor_pid(&s), pid);
    let t = SystemTime::now();
    fs::write(s.brick.join("after-reload"), b"x").unwrap();
    s.wait_synced_past(t);
    assert_eq!(fs::read(s.slave.join("after-reload")).unwrap(), b"x");

    // A second reload still names the change that waits for a restart.
    assert!(signal(pid, Signal::HUP));
    wait_log(&s, "the second reload", |l| {
        l.matches("timeout changed").count() == 2
    });

    // Human-readable failure lines name the brick (span), the path and the
    // slave.
    fs::create_dir(s.brick.join("locked")).unwrap();
    let t = SystemTime::now();
    s.wait_synced_past(t);
    let _locked = Immutable::set(&s.slave.join("locked"));
    fs::write(s.brick.join("locked/file"), b"cannot land").unwrap();
    let failed = s.slave.join("locked/file").display().to_string();
    let log = wait_log(&s, "the failure", |l| l.contains(&failed));
    let line = log.lines().find(|l| l.contains(&failed)).unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("brick={}", s.brick.display())) && line.contains(&slave),
        "the line names brick and slave: {line}"
    );
}

#[test]
fn json_logs_parse_and_a_failure_names_brick_path_and_slave() {
    let s = Scenario::new();
    s.create(false).ok();
    let (vol, slave) = (s.vol.clone(), s.slave_url());
    s.geo_rep(["config", &vol, &slave, "log-format", "json"])
        .ok();
    fs::create_dir(s.brick.join("locked")).unwrap();
    fs::write(s.brick.join("locked/file"), b"cannot land").unwrap();
    fs::create_dir(s.slave.join("locked")).unwrap();
    let _locked = Immutable::set(&s.slave.join("locked"));
    fs::write(s.brick.join("file"), b"data").unwrap();
    s.start().ok();
    s.wait_active();
    let fifo = s.slave.join("locked/file").display().to_string();
    let log = wait_log(&s, "the failure", |l| l.contains(&fifo));
    let mut failure = None;
    for line in log.lines().filter(|l| !l.is_empty()) {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{v}");
        assert!(v["fields"]["message"].is_string(), "{v}");
        if v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&fifo))
        {
            failure = Some(v);
        }
    }
    let v = failure.unwrap();
    assert_eq!(v["level"], "WARN", "{v}");
    assert_eq!(v["span"]["name"], "worker", "{v}");
    assert_eq!(
        v["span"]["brick"],
        s.brick.display().to_string(),
        "names the brick: {v}"
    );
    assert_eq!(v["span"]["slave"], slave, "names the slave: {v}");
    let rows = s.status_json();
    assert!(rows[0]["failures"].as_u64().unwrap() >= 1, "{rows:?}");
}

#[test]
fn a_first_sync_shows_hybrid_crawl_totals_and_estimate() {
    let s = Scenario::new();
    for i in 0..30 {
        fs::write(s.brick.join(format!("f{i}")), vec![b'x'; 100 + i]).unwrap();
    }
    fs::create_dir(s.brick.join("d")).unwrap();
    fs::write(s.brick.join("d/g"), b"g").unwrap();
    let t = SystemTime::now();
    s.create(false).ok();
    s.start().ok();
    s.wait_synced_past(t);
    let rows = s.wait_status("the crawl total", |rows| {
        rows[0]["crawl_progress"]["total_files"].is_u64()
    });
    let p = &rows[0]["crawl_progress"];
    assert_eq!(p["total_files"], 31, "{p}");
    let bytes: u64 = (0..30).map(|i| 100 + i).sum::<u64>() + 1;
    assert_eq!(p["total_bytes"], bytes, "{p}");
    assert_eq!(p["files_synced"], 31, "{p}");
    assert_eq!(p["running"], false, "{p}");
    assert_eq!(p["percent"], 100.0, "{p}");
    assert_eq!(p["eta_seconds"], 0.0, "{p}");
    assert!(p["files_per_second"].as_f64().unwrap() > 0.0, "{p}");
    let summary = p["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("31 of 31 files (100%)") && summary.contains("finished in"),
        "{summary}"
    );
}

/// `name{labels} value` lines of a Prometheus text body.
fn samples(body: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').expect("closing brace")),
            None => (series, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once("=\"").expect("label");
                (k.to_owned(), v.trim_end_matches('"').to_owned())
            })
            .collect();
        out.push((name.to_owned(), labels, value.parse().expect("number")));
    }
    out
}

fn http_get(addr: &str, path: &str) -> std::io::Result<(String, String)> {
    let mut c = TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(c, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut resp = String::new();
    c.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    Ok((head.to_owned(), body.to_owned()))
}

#[test]
fn metrics_endpoint_serves_per_brick_gauges() {
    let s = Scenario::new();
    s.create(false).ok();
    let (vol, slave) = (s.vol.clone(), s.slave_url());
    let port = crate::common::closed_port();
    let addr = format!("127.0.0.1:{port}");
    s.geo_rep(["config", &vol, &slave, "metrics-addr", &addr])
        .ok();
    s.geo_rep(["config", &vol, &slave, "metrics-addr", "nonsense"])
        .fails_with(2);
    s.start().ok();
    s.wait_active();
    let t = SystemTime::now();
    for i in 0..5 {
        fs::write(s.brick.join(format!("m{i}")), b"metrics").unwrap();
    }
    s.wait_synced_past(t);

    let (head, body) = wait_for(WAIT, POLL, || http_get(&addr, "/metrics").ok())
        .unwrap_or_else(|e| panic!("no answer at {addr}: {e}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        // Header names are case-insensitive.
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    let got = samples(&body);
    let brick = s.brick.display().to_string();
    let one = |name: &str, extra: &[(&str, &str)]| -> f64 {
        let hits: Vec<f64> = got
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && l.get("brick") == Some(&brick)
                    && l.get("vol") == Some(&vol)
                    && l.get("slave") == Some(&slave)
                    && extra
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(hits.len(), 1, "{name} {extra:?}:\n{body}");
        hits[0]
    };
    assert!(one("georep_files_shipped_total", &[]) >= 5.0, "{body}");
    assert!(one("georep_bytes_sent_total", &[]) > 0.0, "{body}");
    assert_eq!(one("georep_failures_total", &[]), 0.0, "{body}");
    let lag = one("georep_stime_lag_seconds", &[]);
    assert!(lag >= 0.0, "{body}");
    assert!(one("georep_stime_seconds", &[]) > 1e9, "{body}");
    for kind in ["entry", "data", "meta"] {
        assert!(one("georep_pending", &[("kind", kind)]) >= 0.0);
    }
    assert_eq!(one("georep_worker_status", &[("status", "Active")]), 1.0);
    assert_eq!(one("georep_worker_status", &[("status", "Faulty")]), 0.0);
    let crawls: f64 = ["Hybrid Crawl", "History Crawl", "Changelog Crawl", "N/A"]
        .iter()
        .map(|c| one("georep_crawl_status", &[("crawl", c)]))
        .sum();
    assert_eq!(crawls, 1.0, "exactly one crawl status is set:\n{body}");
    // Every family has HELP and TYPE (a counter's without `_total`).
    for (name, _, _) in &got {
        let family = name.strip_suffix("_total").unwrap_or(name);
        let has = |what: &str| {
            [name.as_str(), family]
                .iter()
                .any(|n| body.contains(&format!("# {what} {n} ")))
        };
        assert!(has("TYPE") && has("HELP"), "{name}");
    }

    let (head, _) = http_get(&addr, "/other").unwrap();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // The endpoint goes away with the monitor.
    s.stop().ok();
    assert!(TcpStream::connect(&addr).is_err());
}
