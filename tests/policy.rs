//! The slave policy through the real sshd (issue 15): by default a
//! setuid-root file arrives without its set-id bits, recorded; a device node
//! is not created as a device; the slave directory keeps its own mode; the
//! session stays healthy. With the opt-ins written by `create` into the
//! forced command, they are applied.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::time::SystemTime;

use georep::slave::policy::recorded_stat;

use crate::common::Scenario;

/// On the brick: `bin/su`, setuid root, and `disk`, a block device
/// (254, 0); the brick itself world-writable. Returns the scenario synced.
fn synced_with(extra: &[&str]) -> Scenario {
    let s = Scenario::new();
    fs::set_permissions(&s.slave, fs::Permissions::from_mode(0o700)).unwrap();
    s.create_and_start_with(false, extra);
    let b = &s.brick;
    fs::create_dir(b.join("bin")).unwrap();
    fs::write(b.join("bin/su"), b"#!/bin/sh\nid\n").unwrap();
    std::os::unix::fs::lchown(b.join("bin/su"), Some(0), Some(0)).unwrap();
    fs::set_permissions(b.join("bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        b.join("disk"),
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o640),
        rustix::fs::makedev(254, 0),
    )
    .unwrap();
    fs::set_permissions(b, fs::Permissions::from_mode(0o777)).unwrap();
    s.wait_synced_past(SystemTime::now());
    s
}

fn healthy(s: &Scenario) {
    for row in s.status_json() {
        assert_eq!(row["status"], "Active", "{row}");
        assert_eq!(row["failures"].as_u64(), Some(0), "{row}");
    }
}

#[test]
fn by_default_set_id_bits_and_devices_are_recorded_not_armed() {
    let s = synced_with(&[]);
    let line = s.session_key_lines().join("\n");
    assert!(!line.contains("--allow"), "{line}");

    let su = s.slave.join("bin/su");
    let md = fs::metadata(&su).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o755, "the set-id bit was armed");
    assert_eq!(fs::read(&su).unwrap(), b"#!/bin/sh\nid\n");
    let rec = recorded_stat(&su)
        .unwrap()
        .expect("su's true mode is recorded");
    assert_eq!((rec.mode, rec.uid, rec.gid), (0o104755, 0, 0));

    let disk = s.slave.join("disk");
    let md = fs::symlink_metadata(&disk).unwrap();
    assert!(!md.file_type().is_block_device(), "a device node was made");
    assert!(md.file_type().is_file());
    let rec = recorded_stat(&disk)
        .unwrap()
        .expect("the device is recorded");
    assert_eq!(rec.mode, 0o060640);
    assert_eq!(rec.rdev, rustix::fs::makedev(254, 0));

    let root = fs::metadata(&s.slave).unwrap();
    assert_eq!(
        root.mode() & 0o7777,
        0o700,
        "the slave directory was opened up"
    );
    healthy(&s);
}

#[test]
fn with_the_opt_ins_set_id_bits_and_devices_are_applied() {
    let s = synced_with(&["--allow-devices", "--allow-setid"]);
    let line = s.session_key_lines().join("\n");
    assert!(
        line.contains("--allow-devices --allow-setid\",restrict"),
        "{line}"
    );
    let md = fs::metadata(s.slave.join("bin/su")).unwrap();
    assert_eq!(md.mode() & 0o7777, 0o4755);
    assert_eq!(recorded_stat(&s.slave.join("bin/su")).unwrap(), None);
    let md = fs::symlink_metadata(s.slave.join("disk")).unwrap();
    assert!(md.file_type().is_block_device());
    assert_eq!(md.rdev(), rustix::fs::makedev(254, 0));
    healthy(&s);
}
