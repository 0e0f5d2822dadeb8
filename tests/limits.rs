//! File descriptors (issue 15, finding 6): the master's monitor started
//! under a soft limit of 128 open files raises it to the hard limit, and a
//! first sync of 1,500 directories goes through. (The slave under a low
//! limit, soft and hard, is in `hostile`.)

use std::fs;
use std::time::SystemTime;

use georep_testkit::{assert_trees_equal_with, CompareOptions};

use crate::common::Scenario;

#[test]
fn the_monitor_raises_a_low_soft_fd_limit_and_syncs_fifteen_hundred_directories() {
    let s = Scenario::new();
    for i in 0..1500 {
        let d = s.brick.join(format!("d{i:04}"));
        fs::create_dir(&d).unwrap();
        fs::write(d.join("f"), format!("{i}")).unwrap();
    }
    s.create(false).ok();
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .map_or("unlimited".to_owned(), |h| h.to_string());
    let limit = format!("--nofile=128:{hard}");
    let t = SystemTime::now();
    s.geo_rep_through(
        &["prlimit", &limit, "--"],
        ["start", &s.vol, &s.slave_url()],
    )
    .ok();
    s.wait_synced_past(t);
    assert_trees_equal_with(&s.brick, &s.slave, &CompareOptions::default());
    for row in s.status_json() {
        assert_eq!(row["status"], "Active", "{row}");
        assert_eq!(row["failures"].as_u64(), Some(0), "{row}");
    }
    let pids = s.monitor_pids();
    assert!(!pids.is_empty(), "{}", s.diagnostics());
    for pid in pids {
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let soft = line.split_whitespace().nth(3).unwrap();
        assert_eq!(soft, hard, "the monitor kept a low soft limit: {line}");
    }
}
