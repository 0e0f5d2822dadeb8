//! Journal gaps forced for real, each healed by a Hybrid Crawl: the kernel's
//! inotify event queue overflowing, and the per-user watch limit reached.
//! (The hook not running at all is `e2e::changes_made_while_stopped_…`.)

use std::fs;
use std::time::SystemTime;

use georep_testkit::{assert_trees_equal, random_bytes, signal};
use rustix::process::Signal;

use crate::common::Scenario;

/// Resumes a stopped process when dropped, so a failing test never leaves
/// the monitor frozen.
struct Frozen(Vec<i32>);

impl Frozen {
    fn freeze(pids: Vec<i32>) -> Frozen {
        assert!(!pids.is_empty(), "no monitor process to freeze");
        for &p in &pids {
            signal(p, Signal::STOP);
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &p in &self.0 {
            signal(p, Signal::CONT);
        }
    }
}

fn status_error(s: &Scenario) -> String {
    s.status_json()[0]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn an_overflowing_event_queue_is_a_gap_healed_by_a_hybrid_crawl() {
    let s = Scenario::new();
    fs::create_dir(s.brick.join("old")).unwrap();
    for i in 0..50 {
        fs::write(s.brick.join(format!("old/f{i}")), format!("old {i}")).unwrap();
    }
    fs::create_dir(s.brick.join("burst")).unwrap();
    let t = SystemTime::now();
    s.create_and_start(false);
    s.wait_synced_past(t);

    // With the monitor (and so the hook's reader) frozen, the kernel queue
    // of the hook's inotify instance fills up: each new file is at least
    // IN_CREATE, IN_MODIFY and IN_CLOSE_WRITE.
    let limit: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let files = limit + 1000;
    {
        // (In a directory watched already: a new one would not be watched
        // before the hook reads its creation, and then it is scanned.)
        let _frozen = Frozen::freeze(s.monitor_pids());
        for i in 0..files {
            fs::write(s.brick.join(format!("burst/f{i}")), format!("{i}")).unwrap();
        }
        for i in 0..25 {
            fs::remove_file(s.brick.join(format!("old/f{i}"))).unwrap();
        }
        fs::rename(s.brick.join("old/f30"), s.brick.join("burst/moved")).unwrap();
        fs::write(s.brick.join("old/f40"), b"rewritten").unwrap();
    }
    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);
    let log = s.monitor_log();
    assert!(
        log.contains("IN_Q_OVERFLOW") && log.contains("Hybrid Crawl"),
        "the log names the overflow and the healing crawl:\n{log}"
    );
    let err = status_error(&s);
    assert!(err.contains("IN_Q_OVERFLOW"), "status shows the gap: {err}");
}

#[test]
fn directories_beyond_the_watch_limit_are_replicated_through_the_gap() {
    let s = Scenario::new();
    fs::create_dir(s.brick.join("existing")).unwrap();
    fs::write(s.brick.join("existing/f"), b"x").unwrap();
    s.create(false).ok();
    // The monitor runs in a user namespace of its own, where the watch
    // limit is lowered: only its watches count against it (the root user's
    // limit, shared by everything else on the machine, is left alone). Its
    // root is the real root, so it reads the brick as usual.
    const LIMIT: usize = 12;
    let set_limit = format!("echo {LIMIT} > /proc/sys/user/max_inotify_watches && exec \"$@\"");
    let start_limited = || {
        s.geo_rep_through(
            &[
                "unshare",
                "--user",
                "--map-root-user",
                "sh",
                "-c",
                &set_limit,
                "sh",
            ],
            ["start", &s.vol, &s.slave_url()],
        )
        .ok();
        s.wait_active();
    };
    let t = SystemTime::now();
    start_limited();
    s.wait_synced_past(t);

    // Many more directories than watches, each with a file.
    for i in 0..(3 * LIMIT) {
        let d = s.brick.join(format!("d{i:02}/sub"));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("f"), format!("{i}")).unwrap();
    }
    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);
    let log = s.monitor_log();
    assert!(
        log.contains("max_user_watches") && log.contains("Hybrid Crawl"),
        "the log names the watch limit and the healing crawl:\n{log}"
    );
    let err = status_error(&s);
    assert!(
        err.contains("max_user_watches"),
        "status shows the gap: {err}"
    );

    // Later changes inside directories that still have no watch are in no
    // record: they must arrive anyway, and stime must not pass them first.
    for i in 0..(3 * LIMIT) {
        let d = s.brick.join(format!("d{i:02}/sub"));
        fs::write(d.join("f"), format!("changed {i}")).unwrap();
        fs::write(d.join("g"), format!("new {i}")).unwrap();
    }
    fs::create_dir(s.brick.join(format!("d{:02}/sub/deeper", 3 * LIMIT - 1))).unwrap();
    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);

    // A hook that starts with more directories than watches runs too.
    s.stop().ok();
    start_limited();
    for i in 0..(3 * LIMIT) {
        fs::write(
            s.brick.join(format!("d{i:02}/sub/h")),
            format!("after restart {i}"),
        )
        .unwrap();
    }
    let t = SystemTime::now();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);
}

#[test]
fn the_hybrid_crawl_of_a_gap_sends_only_files_the_slave_lacks() {
    let s = Scenario::new();
    s.create_and_start(false);
    s.wait_active();
    // Files written just before the stop: the crawl after the restart looks
    // at them (changed within its margin before stime), and must find them
    // on the slave already instead of sending them again.
    for i in 0..20 {
        fs::write(s.brick.join(format!("f{i:02}")), random_bytes(100_000, i)).unwrap();
    }
    let t = SystemTime::now();
    s.wait_synced_past(t);
    s.stop().ok();
    fs::write(s.brick.join("f03"), random_bytes(100_000, 99)).unwrap();
    fs::write(s.brick.join("new"), random_bytes(100_000, 98)).unwrap();
    let before = s.bytes_sent();
    let t = SystemTime::now();
    s.start().ok();
    s.wait_synced_past(t);
    assert_trees_equal(&s.brick, &s.slave);
    let sent = s.bytes_sent() - before;
    assert!(
        sent < 3 * 100_000,
        "{sent} bytes sent after a restart that changed 2 files of 100000 bytes"
    );
}
