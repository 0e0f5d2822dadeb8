//! The slave side as an unprivileged user who owns the slave directory:
//! no root on the disaster-recovery host, no GlusterFS-style mountbroker.

use std::fs;
use std::os::unix::fs::{chown, PermissionsExt};
use std::process::Command;
use std::time::SystemTime;

use std::os::unix::fs::FileTypeExt;

use georep::testkit::{assert_trees_equal_with, CompareOptions};

use crate::common::Scenario;

const USER: &str = "georep-it-slave";

/// A throwaway system user, removed again when dropped.
struct TestUser {
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create() -> TestUser {
        let _ = Command::new("userdel").arg(USER).status();
        // `-p '*'`: no password, but not a locked account (sshd refuses
        // locked accounts even for key logins).
        let ok = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/bin/sh", "-p", "*", USER])
            .status()
            .expect("useradd");
        assert!(ok.success(), "useradd {USER} (the tests run as root)");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, USER]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        TestUser {
            uid: id("-u"),
            gid: id("-g"),
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(USER).status();
    }
}

#[test]
fn an_unprivileged_slave_user_receives_the_replica() {
    let s = Scenario::new();
    let user = TestUser::create();
    // The slave directory belongs to the user; the paths to it, to the
    // sshd's key file and to geo-rep must be reachable by them.
    for dir in [s.path(""), s.sshd.dir().to_owned()] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let slave = s.path("dr");
    fs::create_dir(&slave).unwrap();
    chown(&slave, Some(user.uid), Some(user.gid)).unwrap();
    // sshd reads (and push-pem appends to) the key file as the user.
    chown(s.sshd.authorized_keys(), Some(user.uid), Some(user.gid)).unwrap();

    let url = format!("{USER}@127.0.0.1::{}", slave.display());
    struct Stop<'a>(&'a Scenario, String);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.geo_rep(["stop", &self.0.vol, &self.1, "force"]);
        }
    }
    s.geo_rep(s.create_args(&[&s.brick], &url, false)).ok();
    let _stop = Stop(&s, url.clone());

    fs::create_dir(s.brick.join("dir")).unwrap();
    fs::write(s.brick.join("dir/file"), b"owned by root on the master").unwrap();
    fs::set_permissions(s.brick.join("dir/file"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("dir/file", s.brick.join("link")).unwrap();
    // A FIFO any user can make; a device node only root can.
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.brick.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.brick.join("dir/device"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o600),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let t = SystemTime::now();
    s.geo_rep(["start", &s.vol, &url]).ok();
    s.wait_synced_past_of(&s.vol, &url, t);

    // Content, modes and times arrive; owners are the slave user's, since
    // only a root slave can keep numeric owners. The device node is not
    // made (the slave policy): an empty file records it, for a restore.
    let placeholder = fs::symlink_metadata(slave.join("dir/device")).unwrap();
    assert!(placeholder.file_type().is_file() && placeholder.len() == 0);
    let rec = georep::slave::policy::recorded_stat(&slave.join("dir/device"))
        .unwrap()
        .expect("the device is recorded");
    assert_eq!(rec.mode, 0o020600);
    assert_eq!(rec.rdev, rustix::fs::makedev(1, 3));
    assert_trees_equal_with(
        &s.brick,
        &slave,
        &CompareOptions::default().exclude("dir/device"),
    );
    assert!(fs::symlink_metadata(slave.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let failures: u64 = s
        .status_json_of(&s.vol, &url)
        .iter()
        .map(|r| r["failures"].as_u64().unwrap_or(u64::MAX))
        .sum();
    assert_eq!(failures, 0, "the session stays healthy");
    let md = fs::metadata(slave.join("dir/file")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.gid()), (user.uid, user.gid));
    let status = s.geo_rep(["status", &s.vol, &url, "--json"]).ok();
    assert!(
        status
            .stdout()
            .contains("\"slave_user\": \"georep-it-slave\""),
        "{}",
        status.0
    );
}
