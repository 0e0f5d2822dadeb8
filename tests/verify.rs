//! `geo-rep verify` (issue 18): a synced pair is equal; writes made on the
//! slave behind georep's back are caught, content included; a writer busy
//! on the master raises no false alarm.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use georep::slave::policy::recorded_stat;
use georep_testkit::{sample_tree, set_mtime, SampleTree};
use serde_json::Value;

use crate::common::{Run, Scenario};

/// A started session whose slave holds a copy of a small tree, synced past
/// the margin within which verify counts a master change as in flight.
/// The tree holds a setuid file and a block device, which the default slave
/// policy records instead of applying: not differences.
fn synced() -> Scenario {
    let s = Scenario::new();
    sample_tree(
        &s.brick,
        &SampleTree {
            files: 60,
            dirs: 8,
            symlinks: 6,
            max_file_size: 32 * 1024,
            seed: 18,
        },
    )
    .unwrap();
    fs::create_dir_all(s.brick.join("d")).unwrap();
    for name in ["tampered", "doomed", "chmodded"] {
        fs::write(s.brick.join("d").join(name), format!("content of {name}\n")).unwrap();
    }
    fs::write(s.brick.join("d/linked"), b"one file, two names\n").unwrap();
    fs::hard_link(s.brick.join("d/linked"), s.brick.join("d/linked-too")).unwrap();
    fs::write(s.brick.join("su"), b"#!/bin/sh\nid\n").unwrap();
    fs::set_permissions(s.brick.join("su"), fs::Permissions::from_mode(0o4755)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.brick.join("disk"),
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o640),
        rustix::fs::makedev(254, 0),
    )
    .unwrap();
    s.create_and_start(false);
    s.wait_synced_past(SystemTime::now() + Duration::from_secs(3));
    // The policy did record them (else this test proves nothing about it).
    assert!(recorded_stat(&s.slave.join("su")).unwrap().is_some());
    assert!(recorded_stat(&s.slave.join("disk")).unwrap().is_some());
    s
}

fn verify(s: &Scenario, extra: &[&str]) -> Run {
    let url = s.slave_url();
    let mut args = vec!["verify", &s.vol, &url];
    args.extend_from_slice(extra);
    s.geo_rep(args)
}

#[test]
fn a_synced_pair_is_equal() {
    let s = synced();
    let run = verify(&s, &[]).ok();
    assert!(
        run.stdout().contains(": 0 differences"),
        "summary should say 0 differences\n{}",
        run.0
    );
    let run = verify(&s, &["--json"]).ok();
    let doc: Value = serde_json::from_str(&run.stdout()).expect("one JSON document");
    assert_eq!(doc["equal"], true, "{doc}");
    assert!(doc["counts"]["entries"].as_u64().unwrap() > 60, "{doc}");
}

#[test]
fn what_the_session_excludes_is_no_difference_on_either_side() {
    let s = synced();
    s.geo_rep(["config", &s.vol, &s.slave_url(), "exclude", "*.key"])
        .ok();
    fs::write(s.brick.join("d/master.key"), b"never leaves the master").unwrap();
    s.wait_synced_past(SystemTime::now() + Duration::from_secs(3));
    assert!(!s.slave.join("d/master.key").exists());
    let d = s.slave.join("d");
    let mtime = fs::metadata(&d).unwrap().modified().unwrap();
    fs::write(d.join("slave.key"), b"left there by hand").unwrap();
    set_mtime(&d, mtime, false).unwrap();
    let run = verify(&s, &[]).ok();
    assert!(run.stdout().contains(": 0 differences"), "{}", run.0);
}

/// Writes on the slave behind georep's back, one of each kind.
fn tamper_with_the_slave(s: &Scenario) {
    let d = s.slave.join("d");
    // One byte changed, with size and mtime as they were.
    let tampered = d.join("tampered");
    let mtime = fs::metadata(&tampered).unwrap().modified().unwrap();
    let mut bytes = fs::read(&tampered).unwrap();
    bytes[0] ^= 0x20;
    fs::write(&tampered, &bytes).unwrap();
    set_mtime(&tampered, mtime, false).unwrap();
    fs::write(d.join("intruder"), b"written on the slave").unwrap();
    fs::remove_file(d.join("doomed")).unwrap();
    fs::set_permissions(d.join("chmodded"), fs::Permissions::from_mode(0o600)).unwrap();
    // A name split from its hard-link group, all else kept.
    let split = d.join("linked-too");
    let md = fs::metadata(&split).unwrap();
    fs::remove_file(&split).unwrap();
    fs::write(&split, fs::read(d.join("linked")).unwrap()).unwrap();
    fs::set_permissions(&split, md.permissions()).unwrap();
    set_mtime(&split, md.modified().unwrap(), false).unwrap();
}

/// `run` printed each of `lines`, and nothing in flight.
pub(crate) fn assert_prints_each(run: &Run, lines: &[&str]) {
    let out = run.stdout();
    let unseen: Vec<&&str> = lines
        .iter()
        .filter(|line| !out.lines().any(|l| l == **line))
        .collect();
    assert!(
        unseen.is_empty(),
        "expected the lines {unseen:?}\n{}",
        run.0
    );
    assert!(!out.contains("in flight:"), "{}", run.0);
}

#[test]
fn writes_behind_georeps_back_on_the_slave_are_each_caught() {
    let s = synced();
    tamper_with_the_slave(&s);

    let run = verify(&s, &[]).fails_with(1);
    assert_prints_each(
        &run,
        &[
            "differs content d/tampered",
            "extra on slave d/intruder",
            "missing on slave d/doomed",
            "mode 0644 vs 0600 d/chmodded",
            "hard-link group d/linked-too",
        ],
    );

    // Metadata only: the tampered content goes unseen, the rest not.
    let run = verify(&s, &["--quick"]).fails_with(1);
    assert!(!run.stdout().contains("d/tampered"), "{}", run.0);
    assert!(
        run.stdout().contains("missing on slave d/doomed"),
        "{}",
        run.0
    );

    let run = verify(&s, &["--json"]).fails_with(1);
    let doc: Value = serde_json::from_str(&run.stdout()).expect("one JSON document");
    assert_eq!(doc["equal"], false, "{doc}");
    let kinds: Vec<(&str, &str)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), f["kind"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("d/tampered", "content")), "{doc}");
}

#[test]
fn a_writer_on_the_master_raises_no_false_alarm() {
    let s = synced();
    let stop = Arc::new(AtomicBool::new(false));
    let brick = s.brick.clone();
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let dir = brick.join("busy");
            fs::create_dir_all(&dir).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fs::write(
                    dir.join(format!("f{}", i % 50)),
                    vec![i as u8; 4096 + i as usize],
                )
                .unwrap();
                let _ = fs::remove_file(dir.join(format!("f{}", (i + 25) % 50)));
                fs::write(brick.join("d/tampered"), format!("version {i}\n")).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            i
        })
    };
    let mut in_flight_seen = false;
    for _ in 0..3 {
        let run = verify(&s, &[]);
        assert_eq!(run.code(), Some(0), "a false alarm\n{}", run.0);
        in_flight_seen |= run.stdout().contains("in flight:");
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
    assert!(
        in_flight_seen,
        "the writer's changes should show as in flight"
    );
}

#[test]
fn repair_resends_what_differs_and_the_pair_is_equal_again() {
    let s = synced();
    // Beside running workers it is refused.
    verify(&s, &["--repair"])
        .usage_error()
        .stderr_mentions("pause or stop");
    s.stop().ok();
    tamper_with_the_slave(&s);
    let run = verify(&s, &["--repair"]).ok();
    assert!(run.stdout().contains("repair: resent"), "{}", run.0);
    assert!(!run.stdout().contains("after repair:"), "{}", run.0);
    let run = verify(&s, &[]).ok();
    assert!(run.stdout().contains(": 0 differences"), "{}", run.0);
    assert_eq!(
        fs::read(s.slave.join("d/tampered")).unwrap(),
        fs::read(s.brick.join("d/tampered")).unwrap()
    );
    assert!(!s.slave.join("d/intruder").exists());
}
